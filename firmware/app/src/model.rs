//! The policy's parameters: the device blob (`metarim export`), in its own flash region, the
//! `BLOB` region of the board's `memory.x` (`__metarim_blob_start`, `__metarim_blob_end`), not
//! part of the program. `probe-rs download --binary-format bin --base-address <start>` (a board)
//! or QEMU's `-device loader,file=model.bin,addr=<start>` puts it there, so a new model needs no
//! rebuild. At start-up `metarim_core::blob::Blob::parse_region` finds it and checks magic,
//! version, dims against the compiled Tiny preset, the meta-rim split this build adapts, group
//! sizes, vocabulary, length and CRC32; erased flash, a foreign image or a corrupt blob is an
//! error naming what is wrong, and the firmware halts without acting.
//!
//! Only the fast group is copied to RAM (the part on-device adaptation writes); the slow and
//! other groups are read in place from flash, which needs an f32 frozen section (an f16 blob
//! would need a RAM copy of the dequantised groups, which this build does not make).

use core::ptr::addr_of;

use metarim_core::blob::Blob;
use metarim_core::nn::dims::TINY;
use metarim_core::nn::params::Mode;
use metarim_core::nn::presets::TINY_FAST;
use metarim_core::Error;

extern "C" {
    // From the board's memory.x: the BLOB region's bounds; only their addresses are used.
    static __metarim_blob_start: u8;
    static __metarim_blob_end: u8;
}

/// The blob region: its start address and length in bytes.
pub fn region_bounds() -> (usize, usize) {
    let start = addr_of!(__metarim_blob_start) as usize;
    let end = addr_of!(__metarim_blob_end) as usize;
    (start, end.saturating_sub(start))
}

/// The blob region as bytes.
fn region() -> &'static [u8] {
    let (start, len) = region_bounds();
    // SAFETY: [start, start + len) is the BLOB region that the board's memory.x declares inside
    // the chip's flash (or QEMU's memory): always mapped and readable, 4-byte aligned (memory.x
    // places it on a flash page boundary), and never written while the program runs (nothing
    // is linked into it and the firmware has no flash driver), so a shared 'static view is
    // sound.
    unsafe { core::slice::from_raw_parts(start as *const u8, len) }
}

/// The parameters: the fast group in RAM (adapted on the device), the frozen slow and other
/// groups read in place from flash.
pub struct Params {
    /// Fast group.
    pub fast: &'static mut [f32; TINY_FAST],
    /// The fast group as exported (flash): what the adaptation guard restores.
    pub initial_fast: &'static [f32],
    /// Slow group (flash).
    pub slow: &'static [f32],
    /// Other group (flash).
    pub other: &'static [f32],
    /// Length of the blob found in the region, in bytes.
    pub blob_bytes: usize,
}

/// Find and check the blob in its region and copy its fast group into `fast`.
pub fn load(fast: &'static mut [f32; TINY_FAST]) -> Result<Params, Error> {
    let (blob, blob_bytes) = Blob::parse_region(region(), &TINY, Mode::MetaRim)?;
    let (slow, other) = blob.split_frozen(blob.frozen_f32()?)?;
    // Checked copy: a length mismatch is an error, not a panic.
    blob.fast_into(&mut fast[..])?;
    Ok(Params {
        fast,
        initial_fast: blob.fast_f32()?,
        slow,
        other,
        blob_bytes,
    })
}
