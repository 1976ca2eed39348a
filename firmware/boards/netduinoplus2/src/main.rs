//! metarim firmware for QEMU's netduinoplus2 (STM32F405RG: Cortex-M4F, 1 MiB flash, 128 KiB SRAM): a real STM32 memory map and boot; output by semihosting.
//! The program is `metarim-firmware`; this crate gives the memory map (`memory.x`) and the
//! clock. Run it with `MODEL=model.bin cargo run --release -p metarim-firmware-netduinoplus2` from `firmware/`
//! (`qemu-run.sh` loads the blob into its region), or `scripts/run-firmware.sh` with
//! `FW_BOARD=netduinoplus2`.

#![no_std]
#![no_main]

use metarim_firmware::Board;

/// Nothing to set up under QEMU: its STM32F405 model runs at a fixed clock (the reset HSI,
/// 16 MHz, as reported) and needs no flash wait states.
fn init() -> u32 {
    16_000_000
}

/// This board.
static BOARD: Board = Board {
    name: "netduinoplus2",
    chip: "STM32F405RG, QEMU netduinoplus2",
    ram_bytes: 128 * 1024,
    flash_bytes: 1024 * 1024,
    init,
};

metarim_firmware::firmware_main!(BOARD);
