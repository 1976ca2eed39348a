//! What a board crate tells the program: its name, the chip's memory (for the budget line), how
//! to bring the clocks up, and whether it runs under QEMU.
//!
//! Invariants: `init` runs once, first thing, before anything is printed; it returns the core
//! clock in Hz it achieved (the reset clock when a set-up step timed out, never a hang).

/// A board the firmware runs on.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// Board name, as in `firmware/boards/<name>`.
    pub name: &'static str,
    /// The chip, in words (printed in the first line).
    pub chip: &'static str,
    /// The chip's SRAM in bytes (the RAM budget line compares with it).
    pub ram_bytes: usize,
    /// The chip's flash in bytes (program and blob region together).
    pub flash_bytes: usize,
    /// Clock set-up; returns the core clock in Hz.
    pub init: fn() -> u32,
}
