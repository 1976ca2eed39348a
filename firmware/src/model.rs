//! The policy's parameters: the device blob `model.bin` (made by `metarim export`), embedded in
//! flash at build time from the path in `FW_MODEL`, parsed zero-copy by `metarim_core::blob`
//! (magic, version, dims against the compiled Tiny preset, the meta-rim split this build
//! adapts, group sizes, vocabulary, length, CRC32). A blob of any other preset or split is
//! refused with an error at start-up, never copied into the fixed-size fast buffer.
//!
//! Only the fast group is copied to RAM (the part on-device adaptation writes); the slow and
//! other groups are read in place from flash, which needs an f32 frozen section (an f16 blob
//! would need a RAM copy of the dequantised groups, which this build does not make).

use metarim_core::blob::Blob;
use metarim_core::nn::dims::TINY;
use metarim_core::nn::params::Mode;
use metarim_core::nn::presets::TINY_FAST;
use metarim_core::Error;

/// 4-byte alignment for the embedded bytes, so the f32 sections can be viewed in place.
#[repr(C, align(4))]
struct Aligned<T: ?Sized>(T);

/// The blob, from `FW_MODEL` (see build.rs).
static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("FW_MODEL_PATH")));

/// Where the parameters came from, for the report.
pub const SOURCE: &str = env!("FW_MODEL_PATH");

/// Size of the embedded blob in bytes.
pub fn blob_bytes() -> usize {
    MODEL.0.len()
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
}

/// Parse the embedded blob and copy its fast group into `fast`.
pub fn load(fast: &'static mut [f32; TINY_FAST]) -> Result<Params, Error> {
    let blob = Blob::parse(&MODEL.0, &TINY, Mode::MetaRim)?;
    let (slow, other) = blob.split_frozen(blob.frozen_f32()?)?;
    // Checked copy: a length mismatch is an error, not a panic.
    blob.fast_into(&mut fast[..])?;
    Ok(Params {
        fast,
        initial_fast: blob.fast_f32()?,
        slow,
        other,
    })
}
