//! Ending a run: semihosting `SYS_EXIT_EXTENDED`, so QEMU's exit status is the firmware's, and
//! the panic and HardFault handlers, which report and exit non-zero.

use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::hprintln;

/// Exit status of a run that finished.
pub const OK: u32 = 0;
/// Exit status when core returned an error.
pub const CORE_ERROR: u32 = 2;
/// Exit status after a HardFault.
pub const HARD_FAULT: u32 = 3;
/// Exit status after a panic.
pub const PANIC: u32 = 101;

/// Semihosting `SYS_EXIT_EXTENDED`.
const SYS_EXIT_EXTENDED: usize = 0x20;
/// `ADP_Stopped_ApplicationExit`: the application exited with the status that follows.
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;

/// Stop the machine with exit status `code` (plain `SYS_EXIT` gives only 0 or 1 on 32-bit Arm).
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
    // SAFETY: a semihosting call with a pointer to a two-word parameter block that lives across
    // the call, as SYS_EXIT_EXTENDED specifies; under a debugger or QEMU it does not return.
    unsafe {
        cortex_m_semihosting::syscall(SYS_EXIT_EXTENDED, &block);
    }
    // Only reached when no host handles semihosting: stop here.
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("firmware: PANIC: {}", info);
    exit(PANIC)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("firmware: HARDFAULT at pc={:#010x}", frame.pc());
    exit(HARD_FAULT)
}
