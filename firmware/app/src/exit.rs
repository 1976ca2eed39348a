//! Ending a run, and the panic and HardFault handlers, which report and end non-zero.
//!
//! - QEMU (`semihosting`): `SYS_EXIT_EXTENDED`, so QEMU's exit status is the firmware's.
//! - A board (`rtt`): with a debugger attached (`DHCSR.C_DEBUGEN`, as under `probe-rs run`) the
//!   same semihosting call, which probe-rs turns into its own exit status; without one a
//!   semihosting call would fault, so the core sleeps in `wfi` forever: a safe halt that never
//!   resets into a loop and never acts on garbage.

use cortex_m_rt::{exception, ExceptionFrame};

/// Exit status of a run that finished.
pub const OK: u32 = 0;
/// Exit status when core returned an error.
pub const CORE_ERROR: u32 = 2;
/// Exit status after a HardFault.
pub const HARD_FAULT: u32 = 3;
/// Exit status when the model blob region holds no usable blob.
pub const BAD_BLOB: u32 = 4;
/// Exit status after a panic.
pub const PANIC: u32 = 101;

/// Semihosting `SYS_EXIT_EXTENDED`.
const SYS_EXIT_EXTENDED: usize = 0x20;
/// `ADP_Stopped_ApplicationExit`: the application exited with the status that follows.
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;

/// Stop the machine with exit status `code` (plain `SYS_EXIT` gives only 0 or 1 on 32-bit Arm).
pub fn exit(code: u32) -> ! {
    if host_attached() {
        let block = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
        // SAFETY: a semihosting call with a pointer to a two-word parameter block that lives
        // across the call, as SYS_EXIT_EXTENDED specifies; it is made only when a host handles
        // semihosting (QEMU, or a debugger attached), and there it does not return.
        unsafe {
            cortex_m_semihosting::syscall(SYS_EXIT_EXTENDED, &block);
        }
    }
    // No host, or it returned: halt here, with interrupts off so nothing runs again.
    cortex_m::interrupt::disable();
    loop {
        cortex_m::asm::wfi();
    }
}

/// Whether a semihosting call will be answered: always under QEMU; on a board only with a
/// debugger attached (a semihosting `bkpt` without one escalates to a HardFault).
fn host_attached() -> bool {
    #[cfg(feature = "semihosting")]
    {
        true
    }
    #[cfg(not(feature = "semihosting"))]
    {
        /// Debug Halting Control and Status Register; bit 0 is C_DEBUGEN.
        const DHCSR: *const u32 = 0xE000_EDF0 as *const u32;
        // SAFETY: DHCSR is an always-present, always-readable System Control Space register
        // of every ARMv7-M core; a volatile read has no side effect.
        let dhcsr = unsafe { core::ptr::read_volatile(DHCSR) };
        dhcsr & 1 != 0
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::say!("firmware: PANIC: {}", info);
    exit(PANIC)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    crate::say!("firmware: HARDFAULT at pc={:#010x}", frame.pc());
    exit(HARD_FAULT)
}
