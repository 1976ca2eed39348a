//! Cycle counts on a board: the DWT cycle counter (CYCCNT, 32 bits) extended to 64 bits by the
//! SysTick exception, which fires every 2^24 cycles (well inside one 2^32 wrap) and counts the
//! wraps it sees, so a phase of minutes at 80 MHz (2^32 cycles is 54 s) is measured whole.
//! QEMU models no DWT, so the QEMU builds count instructions with the insn-count plugin
//! instead (scripts/run-firmware.sh) and every reading here is 0.

#[cfg(feature = "rtt")]
mod imp {
    use core::sync::atomic::{AtomicU32, Ordering};

    use cortex_m::peripheral::syst::SystClkSource;
    use cortex_m_rt::exception;

    /// DWT_CTRL (bit 0 CYCCNTENA), DWT_CYCCNT, DEMCR (bit 24 TRCENA).
    const DWT_CTRL: *mut u32 = 0xE000_1000 as *mut u32;
    const DWT_CYCCNT: *mut u32 = 0xE000_1004 as *mut u32;
    const DEMCR: *mut u32 = 0xE000_EDFC as *mut u32;

    /// Wraps of CYCCNT seen by SysTick, and its reading then.
    static WRAPS: AtomicU32 = AtomicU32::new(0);
    static LAST: AtomicU32 = AtomicU32::new(0);

    fn cyccnt() -> u32 {
        // SAFETY: a volatile read of DWT_CYCCNT (an architectural ARMv7-M debug register,
        // enabled in `enable`) has no side effect.
        unsafe { DWT_CYCCNT.read_volatile() }
    }

    /// Start the cycle counter and the SysTick that extends it (once, at start-up, after the
    /// stack is painted).
    pub fn enable() {
        // SAFETY: DEMCR, DWT_CTRL and DWT_CYCCNT are architectural ARMv7-M debug registers,
        // present on the Cortex-M4 of every board with this feature; setting TRCENA and
        // CYCCNTENA only starts the counter, and nothing else in the program uses the DWT.
        unsafe {
            DEMCR.write_volatile(DEMCR.read_volatile() | (1 << 24));
            DWT_CYCCNT.write_volatile(0);
            DWT_CTRL.write_volatile(DWT_CTRL.read_volatile() | 1);
        }
        // SysTick is owned here alone; `steal` because the program takes no other peripheral.
        // SAFETY: nothing else in the firmware touches SysTick.
        let mut syst = unsafe { cortex_m::Peripherals::steal() }.SYST;
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload((1 << 24) - 1);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
    }

    /// Cycles since `enable`, 64 bits.
    pub fn now() -> u64 {
        loop {
            let wraps = WRAPS.load(Ordering::Acquire);
            let last = LAST.load(Ordering::Acquire);
            let c = cyccnt();
            if WRAPS.load(Ordering::Acquire) == wraps {
                // A wrap after SysTick's last reading that it has not seen yet.
                let w = wraps + u32::from(c < last);
                return (u64::from(w) << 32) | u64::from(c);
            }
        }
    }

    #[exception]
    fn SysTick() {
        let c = cyccnt();
        if c < LAST.load(Ordering::Relaxed) {
            WRAPS.fetch_add(1, Ordering::Release);
        }
        LAST.store(c, Ordering::Release);
    }
}

#[cfg(not(feature = "rtt"))]
mod imp {
    /// No cycle counter under QEMU.
    pub fn enable() {}
    /// Always 0 under QEMU.
    pub fn now() -> u64 {
        0
    }
}

pub use imp::{enable, now};

/// Whether this build counts cycles.
pub const AVAILABLE: bool = cfg!(feature = "rtt");
