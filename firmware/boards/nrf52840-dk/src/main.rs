//! metarim firmware for the nRF52840-DK (nRF52840: Cortex-M4F, 256 KB SRAM, 1 MB flash).
//! The program is `metarim-firmware`; this crate gives the memory map (`memory.x`, with the
//! model blob's own flash region). No clock set-up: the CPU runs at 64 MHz from reset (the
//! crystal oscillator only makes the clock more accurate, which nothing here needs). Flash and
//! run with `cargo run --release` from this directory (`probe-rs run`, defmt over RTT); see
//! docs/EMBEDDED.md.
//!
//! With `--no-default-features --features qemu` the same memory map runs under QEMU's
//! mps2-an386 (semihosting output).

#![no_std]
#![no_main]

use metarim_firmware::Board;

/// The CPU clock from reset (the QEMU build reports its machine's 25 MHz).
fn init() -> u32 {
    if cfg!(feature = "qemu") {
        25_000_000
    } else {
        64_000_000
    }
}

/// This board.
static BOARD: Board = Board {
    name: "nrf52840-dk",
    chip: "nRF52840",
    ram_bytes: 256 * 1024,
    flash_bytes: 1024 * 1024,
    init,
};

metarim_firmware::firmware_main!(BOARD);
