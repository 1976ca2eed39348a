//! metarim firmware for QEMU's mps2-an386 (Arm MPS2 FPGA board with AN386: Cortex-M4F, 4 MiB of each memory); output by semihosting.
//! The program is `metarim-firmware`; this crate gives the memory map (`memory.x`) and the
//! clock. Run it with `MODEL=model.bin cargo run --release -p metarim-firmware-mps2-an386` from `firmware/`
//! (`qemu-run.sh` loads the blob into its region), or `scripts/run-firmware.sh` with
//! `FW_BOARD=mps2-an386`.

#![no_std]
#![no_main]

use metarim_firmware::Board;

/// Nothing to set up: QEMU's clock is a fixed 25 MHz and -icount makes it deterministic.
fn init() -> u32 {
    25_000_000
}

/// This board.
static BOARD: Board = Board {
    name: "mps2-an386",
    chip: "Cortex-M4F, QEMU mps2-an386",
    ram_bytes: 4 * 1024 * 1024,
    flash_bytes: 4 * 1024 * 1024,
    init,
};

metarim_firmware::firmware_main!(BOARD);
