//! Memory accounting: static RAM and flash from cortex-m-rt's linker symbols, and the stack's
//! high-water mark by painting.
//!
//! Invariants: [`paint_stack`] runs once, first thing in `main`, and fills every word between the
//! end of static RAM (`__sheap`) and [`PAINT_MARGIN`] bytes below the stack pointer it reads with
//! [`PAINT`]; nothing runs below that point before (no interrupts are enabled). The margin exists
//! because the compiler may read SP before the function's own prologue pushes its frame (it
//! does: shrink-wrapping), so the words just below SP are live; it adds at most
//! [`PAINT_MARGIN`] bytes to the measured high-water mark, only if the run never went deeper. [`stack_high_water`] then finds the lowest
//! word no longer equal to [`PAINT`]: everything above it was used as stack at some point
//! (a word written with exactly the pattern would be missed; the figure is a lower bound only in
//! that case, which the pattern makes unlikely).

use core::ptr::{addr_of, read_volatile, write_volatile};

/// The paint pattern.
pub const PAINT: u32 = 0x5EED_C0DE;
/// Bytes left unpainted below the stack pointer [`paint_stack`] reads (its own frame).
pub const PAINT_MARGIN: usize = 256;

extern "C" {
    // Symbols from cortex-m-rt's link.x; only their addresses are used.
    static __vector_table: u32;
    static __stext: u32;
    static __etext: u32;
    static __srodata: u32;
    static __erodata: u32;
    static __sdata: u32;
    static __edata: u32;
    static __sidata: u32;
    static __sbss: u32;
    static __ebss: u32;
    static __suninit: u32;
    static __euninit: u32;
    static __sheap: u32;
    static _stack_start: u32;
}

/// Addresses of the linker's section boundaries.
#[derive(Clone, Copy, Debug)]
pub struct Sections {
    flash_start: usize,
    text: (usize, usize),
    rodata: (usize, usize),
    data: (usize, usize),
    data_load: usize,
    bss: (usize, usize),
    uninit: (usize, usize),
    /// End of static RAM, where the stack's region ends.
    pub stack_bottom: usize,
    /// Initial stack pointer.
    pub stack_top: usize,
}

impl Sections {
    /// Read the linker symbols.
    pub fn get() -> Sections {
        // Taking the address of an extern static reads nothing.
        let a = |p: *const u32| p as usize;
        Sections {
            flash_start: a(addr_of!(__vector_table)),
            text: (a(addr_of!(__stext)), a(addr_of!(__etext))),
            rodata: (a(addr_of!(__srodata)), a(addr_of!(__erodata))),
            data: (a(addr_of!(__sdata)), a(addr_of!(__edata))),
            data_load: a(addr_of!(__sidata)),
            bss: (a(addr_of!(__sbss)), a(addr_of!(__ebss))),
            uninit: (a(addr_of!(__suninit)), a(addr_of!(__euninit))),
            stack_bottom: a(addr_of!(__sheap)),
            stack_top: a(addr_of!(_stack_start)) & !7,
        }
    }

    /// `.text` bytes (code, from the end of the vector table).
    pub fn text(&self) -> usize {
        self.text.1 - self.text.0
    }
    /// `.rodata` bytes.
    pub fn rodata(&self) -> usize {
        self.rodata.1 - self.rodata.0
    }
    /// `.data` bytes (in RAM, and its initial image in flash).
    pub fn data(&self) -> usize {
        self.data.1 - self.data.0
    }
    /// `.bss` bytes.
    pub fn bss(&self) -> usize {
        self.bss.1 - self.bss.0
    }
    /// `.uninit` bytes.
    pub fn uninit(&self) -> usize {
        self.uninit.1 - self.uninit.0
    }
    /// Static RAM: `.data + .bss + .uninit`.
    pub fn static_ram(&self) -> usize {
        self.data() + self.bss() + self.uninit()
    }
    /// Program flash: everything loaded from the start of the FLASH region (vector table,
    /// `.text`, `.rodata`) up to the end of `.data`'s initial image (the model blob, in its own
    /// region, is not included).
    pub fn flash(&self) -> usize {
        self.data_load + self.data() - self.flash_start
    }
}

/// Paint the free stack region below the current stack pointer; returns the painted bytes.
#[inline(never)]
pub fn paint_stack(s: &Sections) -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = (s.stack_bottom + 3) & !3;
    let end = sp.saturating_sub(PAINT_MARGIN) & !3;
    let start = p;
    while p < end {
        // SAFETY: [stack_bottom, sp - PAINT_MARGIN) is RAM that belongs to the stack and lies
        // below every live frame (this function's own frame, pushed after SP was read, takes
        // far less than the margin; no interrupt is enabled), so writing it changes no live
        // value; the address is 4-aligned.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    end.saturating_sub(start)
}

/// Bytes of stack used at the deepest point since [`paint_stack`].
#[inline(never)]
pub fn stack_high_water(s: &Sections) -> usize {
    let mut p = (s.stack_bottom + 3) & !3;
    while p < s.stack_top {
        // SAFETY: p is a 4-aligned address inside the RAM region reserved for the stack, which
        // is always readable; volatile because the compiler cannot know the stack writes.
        let w = unsafe { read_volatile(p as *const u32) };
        if w != PAINT {
            break;
        }
        p += 4;
    }
    s.stack_top - p
}
