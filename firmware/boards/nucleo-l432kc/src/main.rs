//! metarim firmware for the Nucleo-L432KC (STM32L432KC: Cortex-M4F, 64 KB SRAM, 256 KB flash).
//! The program is `metarim-firmware`; this crate gives the memory map (`memory.x`, with the
//! model blob's own flash region) and the clock: the PLL at 80 MHz from the 4 MHz MSI the chip
//! resets to. Flash and run with `cargo run --release` from this directory (`probe-rs run`,
//! defmt over RTT); see docs/EMBEDDED.md.
//!
//! With `--no-default-features --features qemu` the same memory map runs under QEMU's
//! netduinoplus2 (semihosting output, no clock set-up: QEMU's STM32F405 has another RCC).

#![no_std]
#![no_main]

use metarim_firmware::Board;

/// The clock after reset: MSI range 6.
#[cfg(not(feature = "qemu"))]
const MSI_HZ: u32 = 4_000_000;
/// The clock `init` sets: MSI / M(1) * N(40) / R(2).
#[cfg(not(feature = "qemu"))]
const PLL_HZ: u32 = 80_000_000;

#[cfg(not(feature = "qemu"))]
mod clock {
    use core::ptr::{read_volatile, write_volatile};

    /// RM0394 register addresses.
    const FLASH_ACR: *mut u32 = 0x4002_2000 as *mut u32;
    const RCC_CR: *mut u32 = 0x4002_1000 as *mut u32;
    const RCC_CFGR: *mut u32 = 0x4002_1008 as *mut u32;
    const RCC_PLLCFGR: *mut u32 = 0x4002_100C as *mut u32;
    /// Polls before a set-up step is given up (each poll is a few cycles at 4 MHz; the PLL
    /// locks in well under a millisecond).
    const POLLS: u32 = 200_000;

    fn wait(reg: *mut u32, mask: u32, want: u32) -> bool {
        (0..POLLS).any(|_| {
            // SAFETY: `reg` is one of the RCC/FLASH registers above, always mapped on the
            // STM32L432; a volatile read of them has no side effect.
            (unsafe { read_volatile(reg) } & mask) == want
        })
    }

    /// PLL on at 80 MHz (voltage range 1, the reset default); flash latency 4 wait states,
    /// prefetch and caches on. Returns false (and leaves the chip on the MSI) if a step does
    /// not complete, never hangs.
    pub fn pll_80mhz() -> bool {
        // SAFETY: the writes follow RM0394's sequence (raise the flash latency first, then
        // configure, enable and select the PLL), touch only FLASH_ACR and the RCC clock
        // registers, and run once at start-up before anything depends on the clock.
        unsafe {
            // LATENCY = 4, PRFTEN (8), ICEN (9), DCEN (10).
            write_volatile(
                FLASH_ACR,
                (read_volatile(FLASH_ACR) & !0x7) | 4 | (0b111 << 8),
            );
            if !wait(FLASH_ACR, 0x7, 4) {
                return false;
            }
            // PLLSRC = MSI (01), PLLM = 1 (000), PLLN = 40, PLLR = 2 (00), PLLREN.
            write_volatile(RCC_PLLCFGR, 0b01 | (40 << 8) | (1 << 24));
            write_volatile(RCC_CR, read_volatile(RCC_CR) | (1 << 24)); // PLLON
            if !wait(RCC_CR, 1 << 25, 1 << 25) {
                return false; // PLLRDY never came
            }
            write_volatile(RCC_CFGR, (read_volatile(RCC_CFGR) & !0b11) | 0b11); // SW = PLL
            wait(RCC_CFGR, 0b11 << 2, 0b11 << 2) // SWS = PLL
        }
    }
}

/// Clock set-up: the PLL at 80 MHz on the board; nothing under QEMU.
fn init() -> u32 {
    #[cfg(not(feature = "qemu"))]
    {
        if clock::pll_80mhz() {
            PLL_HZ
        } else {
            MSI_HZ
        }
    }
    #[cfg(feature = "qemu")]
    {
        16_000_000
    }
}

/// This board.
static BOARD: Board = Board {
    name: "nucleo-l432kc",
    chip: "STM32L432KC",
    ram_bytes: 64 * 1024,
    flash_bytes: 256 * 1024,
    init,
};

metarim_firmware::firmware_main!(BOARD);
