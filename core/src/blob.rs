//! The versioned device blob: a trained policy packed for a microcontroller, parsed zero-copy
//! from `&[u8]` (a flash region of its own on a device: [`Blob::parse_region`]).
//!
//! Invariants:
//! - Every field is little-endian; sections start on 4-byte boundaries inside the blob, so a
//!   blob stored 4-byte aligned gives `&[f32]` / `&[f16]` views without copying (a misaligned
//!   blob is an [`Error::BadBlob`], never a panic or an unaligned read).
//! - [`Blob::parse`] checks everything before handing out a view: magic, version, header size,
//!   dims against the compiled preset, the mode (the parameter split, byte 52) against the one
//!   the caller runs, dtype, group sizes against the layout of that preset and mode, the
//!   vocabulary against [`crate::mission::vocab::WORDS`], total length and the CRC32. A blob
//!   that parses therefore has exactly the group sizes the caller's fixed buffers hold.
//! - Copies out of a blob ([`Blob::fast_into`], [`Blob::frozen_into`]) check the destination's
//!   length and return an error instead of panicking.
//!
//! Layout (byte offsets):
//! ```text
//! 0   magic  b"MRIM"
//! 4   format version (u16) = 1
//! 6   header length in bytes (u16, multiple of 4)
//! 8   dims: 22 x u16 (see `DIM_FIELDS`; the first is the encoder: 0 conv, 1 bag-of-words,
//!     + 2 with FiLM conditioning, + 4 with feature normalisation)
//! 52  mode (u8: 0 meta-rim, 1 reversed, 2 joint, 3 lstm), frozen dtype (u8: 0 f32, 1 f16), 0u16
//! 56  fast, slow, other group lengths (3 x u32, elements)
//! 68  vocabulary: word count (u16), byte length (u16), then the words joined by '\n',
//!     zero-padded to a multiple of 4 (the header ends here)
//! H   frozen section: the slow group then the other group, in the frozen dtype, zero-padded
//!     to a multiple of 4
//!     fast section: the fast group's initial values, f32
//! end CRC32 (IEEE, u32) of every byte before it
//! ```
//! The slow and other groups are read-only on the device ("frozen"); only the fast group is
//! copied to RAM and adapted.

use half::f16;

use crate::crc::crc32;
use crate::error::Error;
use crate::mission::vocab::WORDS;
use crate::nn::dims::{CellKind, CommUpdate, EncoderKind, MemoryKind, ModelDims};
use crate::nn::params::{Group, Layout, Mode};

/// Magic bytes at the start of every blob.
pub const MAGIC: [u8; 4] = *b"MRIM";
/// Format version this build reads and writes.
pub const VERSION: u16 = 1;
/// Number of u16 dimension fields in the header.
pub const DIM_FIELDS: usize = 22;
/// Byte offset of the vocabulary record.
const VOCAB_AT: usize = 68;

/// Element type of the frozen (slow + other) section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrozenDtype {
    /// 32-bit floats (used directly as the policy's weights).
    F32,
    /// IEEE half floats (half the flash; dequantised into RAM before use).
    F16,
}

impl FrozenDtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            FrozenDtype::F32 => 4,
            FrozenDtype::F16 => 2,
        }
    }

    fn code(self) -> u8 {
        match self {
            FrozenDtype::F32 => 0,
            FrozenDtype::F16 => 1,
        }
    }
}

fn mode_code(m: Mode) -> u8 {
    match m {
        Mode::MetaRim => 0,
        Mode::Reversed => 1,
        Mode::Joint => 2,
        Mode::Lstm => 3,
    }
}

fn mode_from(c: u8) -> Option<Mode> {
    [Mode::MetaRim, Mode::Reversed, Mode::Joint, Mode::Lstm]
        .into_iter()
        .find(|m| mode_code(*m) == c)
}

/// The dims as the header's u16 fields (values above `u16::MAX` saturate, and then fail the
/// comparison with the compiled preset).
pub fn dim_fields(d: &ModelDims) -> [u16; DIM_FIELDS] {
    let c = |v: usize| u16::try_from(v).unwrap_or(u16::MAX);
    let r = &d.rim;
    [
        match d.encoder {
            EncoderKind::Conv => 0,
            EncoderKind::Bow => 1,
        } + 2 * u16::from(d.film)
            + 4 * u16::from(d.feature_norm),
        c(d.conv_channels[0]),
        c(d.conv_channels[1]),
        c(d.conv_channels[2]),
        c(d.bow_dim),
        c(d.word_dim),
        c(d.instr_hidden),
        c(d.max_tokens),
        match d.memory {
            MemoryKind::Rim => 0,
            MemoryKind::Lstm => 1,
        },
        c(r.n_modules),
        c(r.k_active),
        c(r.hidden),
        c(r.input),
        c(r.d_k),
        c(r.d_v),
        c(r.in_heads),
        c(r.c_heads),
        c(r.c_k),
        match r.cell {
            CellKind::Gru => 0,
            CellKind::Lstm => 1,
        },
        // 0: no communication; 1: the gated residual (every blob before `comm_update`);
        // 2: the gated interpolation.
        match (r.communication, r.comm_update) {
            (false, _) => 0,
            (true, CommUpdate::Residual) => 1,
            (true, CommUpdate::Interpolate) => 2,
        },
        c(d.head_hidden),
        c(d.n_actions),
    ]
}

fn bad(what: &'static str) -> Error {
    Error::BadBlob { what }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, Error> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_le_bytes([s[0], s[1]])),
        None => Err(bad("truncated header")),
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, Error> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        None => Err(bad("truncated header")),
    }
}

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytes of the vocabulary record's text: the words joined by '\n'.
fn vocab_text_len() -> usize {
    let mut n = 0;
    for (i, w) in WORDS.iter().enumerate() {
        n += w.len() + usize::from(i > 0);
    }
    n
}

/// Header length of a blob (vocabulary included, padded).
pub fn header_len() -> usize {
    pad4(VOCAB_AT + 4 + vocab_text_len())
}

/// Total blob length for `layout` with frozen `dtype`.
pub fn blob_len(layout: &Layout, dtype: FrozenDtype) -> usize {
    let frozen = layout.group_len(Group::Slow) + layout.group_len(Group::Other);
    header_len() + pad4(frozen * dtype.size()) + 4 * layout.group_len(Group::Fast) + 4
}

/// A parsed blob: checked header fields and zero-copy sections.
#[derive(Clone, Copy, Debug)]
pub struct Blob<'a> {
    /// Model dims (equal to the expected preset's).
    pub dims: ModelDims,
    /// Parameter split.
    pub mode: Mode,
    /// Element type of the frozen section.
    pub dtype: FrozenDtype,
    /// Slow group length (elements).
    pub slow_len: usize,
    /// Other group length (elements).
    pub other_len: usize,
    frozen: &'a [u8],
    fast: &'a [u8],
}

impl<'a> Blob<'a> {
    /// Parse and check `bytes` against the compiled `expected` dims and the parameter split
    /// `mode` the caller runs (a blob of another mode is [`Error::BlobMode`]; the dims'
    /// `memory` field is set from the mode, as [`Layout::new`] does).
    pub fn parse(bytes: &'a [u8], expected: &ModelDims, mode: Mode) -> Result<Blob<'a>, Error> {
        if cfg!(target_endian = "big") {
            return Err(bad(
                "big-endian targets cannot view the little-endian sections",
            ));
        }
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(bad("wrong magic (not a metarim device blob)"));
        }
        if u16_at(bytes, 4)? != VERSION {
            return Err(bad("unsupported format version"));
        }
        let hlen = usize::from(u16_at(bytes, 6)?);
        if hlen != header_len() {
            return Err(bad("header length does not match this build's vocabulary"));
        }
        if bytes.len() < hlen + 4 {
            return Err(bad("truncated"));
        }
        let crc_at = bytes.len() - 4;
        if crc32(&bytes[..crc_at]) != u32_at(bytes, crc_at)? {
            return Err(bad("CRC32 mismatch (corrupt or truncated)"));
        }
        let found = mode_from(bytes[52]).ok_or(bad("unknown mode"))?;
        if found != mode {
            return Err(Error::BlobMode {
                found: found.name(),
                expected: mode.name(),
            });
        }
        let dtype = match bytes[53] {
            0 => FrozenDtype::F32,
            1 => FrozenDtype::F16,
            _ => return Err(bad("unknown frozen dtype")),
        };
        let mut want = *expected;
        want.memory = mode.memory();
        let fields = dim_fields(&want);
        for (i, f) in fields.iter().enumerate() {
            if u16_at(bytes, 8 + 2 * i)? != *f {
                return Err(bad("model dims do not match the compiled preset"));
            }
        }
        let layout = Layout::new(&want, mode)?;
        let lens = [
            u32_at(bytes, 56)? as usize,
            u32_at(bytes, 60)? as usize,
            u32_at(bytes, 64)? as usize,
        ];
        let expect = [
            layout.group_len(Group::Fast),
            layout.group_len(Group::Slow),
            layout.group_len(Group::Other),
        ];
        if lens != expect {
            return Err(bad("group sizes do not match the layout"));
        }
        let n_words = usize::from(u16_at(bytes, VOCAB_AT)?);
        let text_len = usize::from(u16_at(bytes, VOCAB_AT + 2)?);
        let text = bytes
            .get(VOCAB_AT + 4..VOCAB_AT + 4 + text_len)
            .ok_or(bad("truncated vocabulary"))?;
        if n_words != WORDS.len() || text_len != vocab_text_len() {
            return Err(bad("vocabulary differs from this build's"));
        }
        for (w, want) in text.split(|c| *c == b'\n').zip(WORDS.iter()) {
            if w != want.as_bytes() {
                return Err(bad("vocabulary differs from this build's"));
            }
        }
        if bytes.len() != blob_len(&layout, dtype) {
            return Err(bad(
                "length does not match the header (truncated or padded)",
            ));
        }
        let frozen_len = (expect[1] + expect[2]) * dtype.size();
        let frozen = &bytes[hlen..hlen + frozen_len];
        let fast_at = hlen + pad4(frozen_len);
        let fast = &bytes[fast_at..fast_at + 4 * expect[0]];
        let blob = Blob {
            dims: want,
            mode,
            dtype,
            slow_len: expect[1],
            other_len: expect[2],
            frozen,
            fast,
        };
        // Check the views once, so the accessors below cannot fail on alignment later.
        blob.fast_f32()?;
        match dtype {
            FrozenDtype::F32 => blob.frozen_f32().map(|_| ())?,
            FrozenDtype::F16 => blob.frozen_f16().map(|_| ())?,
        }
        Ok(blob)
    }

    /// Find and parse the blob at the start of a flash `region` that may be longer than the
    /// blob (a linker-reserved area that `probe-rs download` or a QEMU loader fills): the
    /// length comes from the header's group sizes and dtype, then [`Blob::parse`] checks
    /// everything on exactly that prefix (CRC included). Erased flash (`0xFF`) and zeroed memory
    /// are named as such, and a header that claims more bytes than the region holds is an
    /// error, never an out-of-bounds read. Returns the blob and its length in bytes.
    pub fn parse_region(
        region: &'a [u8],
        expected: &ModelDims,
        mode: Mode,
    ) -> Result<(Blob<'a>, usize), Error> {
        match region.get(..4) {
            None => return Err(bad("region is smaller than a blob header")),
            Some([0xFF, 0xFF, 0xFF, 0xFF]) => {
                return Err(bad("no model blob in its flash region (erased: 0xFF)"))
            }
            Some([0, 0, 0, 0]) => return Err(bad("no model blob in its region (all zero)")),
            Some(m) if m != MAGIC => {
                return Err(bad(
                    "wrong magic in the blob region (not a metarim device blob)",
                ))
            }
            Some(_) => {}
        }
        let dtype = match region.get(53) {
            Some(0) => FrozenDtype::F32,
            Some(1) => FrozenDtype::F16,
            Some(_) => return Err(bad("unknown frozen dtype")),
            None => return Err(bad("truncated header")),
        };
        let hlen = usize::from(u16_at(region, 6)?);
        let lens = [
            u32_at(region, 56)? as usize,
            u32_at(region, 60)? as usize,
            u32_at(region, 64)? as usize,
        ];
        let len = lens[1]
            .checked_add(lens[2])
            .and_then(|n| n.checked_mul(dtype.size()))
            .and_then(|n| n.checked_add(3))
            .map(|n| n & !3)
            .and_then(|n| lens[0].checked_mul(4).and_then(|f| f.checked_add(n)))
            .and_then(|n| n.checked_add(hlen + 4))
            .ok_or(bad("group sizes in the header overflow"))?;
        let bytes = region.get(..len).ok_or(bad(
            "blob is longer than its region (truncated or corrupt header)",
        ))?;
        Ok((Blob::parse(bytes, expected, mode)?, len))
    }

    /// Copy the fast group's initial values into `out`, which must hold exactly the fast
    /// group (an error, not a panic, otherwise).
    pub fn fast_into(&self, out: &mut [f32]) -> Result<(), Error> {
        let fast = self.fast_f32()?;
        if out.len() != fast.len() {
            return Err(bad("fast group size differs from the destination buffer"));
        }
        for (o, v) in out.iter_mut().zip(fast) {
            *o = *v;
        }
        Ok(())
    }

    /// The fast group's initial values.
    pub fn fast_f32(&self) -> Result<&'a [f32], Error> {
        bytemuck::try_cast_slice(self.fast).map_err(|_| bad("blob is not 4-byte aligned"))
    }

    /// The frozen section (slow then other) as f32 (only for [`FrozenDtype::F32`]).
    pub fn frozen_f32(&self) -> Result<&'a [f32], Error> {
        if self.dtype != FrozenDtype::F32 {
            return Err(bad("frozen section is f16; dequantise it with frozen_into"));
        }
        bytemuck::try_cast_slice(self.frozen).map_err(|_| bad("blob is not 4-byte aligned"))
    }

    /// The frozen section as f16 (only for [`FrozenDtype::F16`]).
    pub fn frozen_f16(&self) -> Result<&'a [f16], Error> {
        if self.dtype != FrozenDtype::F16 {
            return Err(bad("frozen section is f32"));
        }
        bytemuck::try_cast_slice(self.frozen).map_err(|_| bad("blob is not 2-byte aligned"))
    }

    /// Split a frozen f32 view into (slow, other).
    pub fn split_frozen<'b>(&self, frozen: &'b [f32]) -> Result<(&'b [f32], &'b [f32]), Error> {
        if frozen.len() != self.slow_len + self.other_len {
            return Err(bad("frozen buffer has the wrong length"));
        }
        Ok(frozen.split_at(self.slow_len))
    }

    /// Write the frozen section as f32 into `out` (`slow_len + other_len` elements), from
    /// either dtype.
    pub fn frozen_into(&self, out: &mut [f32]) -> Result<(), Error> {
        if out.len() != self.slow_len + self.other_len {
            return Err(bad("output buffer has the wrong length"));
        }
        match self.dtype {
            FrozenDtype::F32 => out.copy_from_slice(self.frozen_f32()?),
            FrozenDtype::F16 => {
                for (o, h) in out.iter_mut().zip(self.frozen_f16()?) {
                    *o = h.to_f32();
                }
            }
        }
        Ok(())
    }
}

/// Write a blob for `layout` with parameter groups `fast`, `slow`, `other` into `out`
/// ([`blob_len`] bytes); returns the length written.
pub fn write(
    layout: &Layout,
    dtype: FrozenDtype,
    fast: &[f32],
    slow: &[f32],
    other: &[f32],
    out: &mut [u8],
) -> Result<usize, Error> {
    let n = blob_len(layout, dtype);
    if fast.len() != layout.group_len(Group::Fast)
        || slow.len() != layout.group_len(Group::Slow)
        || other.len() != layout.group_len(Group::Other)
    {
        return Err(bad("parameter groups do not match the layout"));
    }
    let got = out.len();
    let out = out
        .get_mut(..n)
        .ok_or(Error::BufferTooSmall { needed: n, got })?;
    out.fill(0);
    let hlen = header_len();
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_le_bytes());
    out[6..8].copy_from_slice(&(hlen as u16).to_le_bytes());
    for (i, f) in dim_fields(layout.dims()).iter().enumerate() {
        out[8 + 2 * i..10 + 2 * i].copy_from_slice(&f.to_le_bytes());
    }
    out[52] = mode_code(layout.mode());
    out[53] = dtype.code();
    for (i, len) in [fast.len(), slow.len(), other.len()].iter().enumerate() {
        out[56 + 4 * i..60 + 4 * i].copy_from_slice(&(*len as u32).to_le_bytes());
    }
    out[VOCAB_AT..VOCAB_AT + 2].copy_from_slice(&(WORDS.len() as u16).to_le_bytes());
    out[VOCAB_AT + 2..VOCAB_AT + 4].copy_from_slice(&(vocab_text_len() as u16).to_le_bytes());
    let mut at = VOCAB_AT + 4;
    for (i, w) in WORDS.iter().enumerate() {
        if i > 0 {
            out[at] = b'\n';
            at += 1;
        }
        out[at..at + w.len()].copy_from_slice(w.as_bytes());
        at += w.len();
    }
    let mut at = hlen;
    for v in slow.iter().chain(other) {
        match dtype {
            FrozenDtype::F32 => out[at..at + 4].copy_from_slice(&v.to_le_bytes()),
            FrozenDtype::F16 => out[at..at + 2].copy_from_slice(&f16::from_f32(*v).to_le_bytes()),
        }
        at += dtype.size();
    }
    let mut at = pad4(at);
    for v in fast {
        out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        at += 4;
    }
    let crc = crc32(&out[..at]);
    out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::dims::TINY;
    use crate::nn::params::GroupBufsMut;
    use crate::nn::policy::init_params;

    extern crate std;
    use std::vec;
    use std::vec::Vec;

    /// A Tiny model's groups and its blob (in a Vec<u32> so the bytes are 4-aligned).
    fn tiny_blob(dtype: FrozenDtype) -> (Layout, [Vec<f32>; 3], Vec<u32>, usize) {
        let layout = Layout::new(&TINY, Mode::MetaRim).unwrap();
        let mut g = [
            vec![0.0f32; layout.group_len(Group::Fast)],
            vec![0.0f32; layout.group_len(Group::Slow)],
            vec![0.0f32; layout.group_len(Group::Other)],
        ];
        let [f, s, o] = &mut g;
        init_params(
            &layout,
            &Default::default(),
            3,
            GroupBufsMut {
                fast: f,
                slow: s,
                other: o,
            },
        )
        .unwrap();
        let n = blob_len(&layout, dtype);
        let mut words = vec![0u32; n.div_ceil(4) + 1];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        assert_eq!(
            write(&layout, dtype, &g[0], &g[1], &g[2], bytes).unwrap(),
            n
        );
        (layout, g, words, n)
    }

    /// A valid blob of every other split (whose fast group is empty or of another size) is
    /// refused by a caller running the meta-rim split, naming both modes; the copy out of a
    /// blob checks the destination instead of panicking.
    #[test]
    fn blobs_of_another_split_are_refused() {
        for mode in [Mode::Reversed, Mode::Joint, Mode::Lstm] {
            let layout = Layout::new(&TINY, mode).unwrap();
            let g = [Group::Fast, Group::Slow, Group::Other]
                .map(|grp| vec![0.25f32; layout.group_len(grp)]);
            let n = blob_len(&layout, FrozenDtype::F32);
            let mut words = vec![0u32; n.div_ceil(4)];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
            write(&layout, FrozenDtype::F32, &g[0], &g[1], &g[2], bytes).unwrap();
            let bytes: &[u8] = &bytemuck::cast_slice(&words)[..n];
            match Blob::parse(bytes, &TINY, Mode::MetaRim) {
                Err(e @ Error::BlobMode { found, expected }) => {
                    assert_eq!((found, expected), (mode.name(), "meta-rim"));
                    let text = std::format!("{e}");
                    assert!(text.contains(mode.name()), "{text}");
                }
                other => panic!("{mode:?}: expected BlobMode, got {other:?}"),
            }
            // The blob is fine for a caller that runs its split.
            let b = Blob::parse(bytes, &TINY, mode).unwrap();
            assert_eq!(b.mode, mode);
            assert_eq!(b.fast_f32().unwrap().len(), layout.group_len(Group::Fast));
        }
        let (_, g, words, n) = tiny_blob(FrozenDtype::F32);
        let b = Blob::parse(&bytemuck::cast_slice(&words)[..n], &TINY, Mode::MetaRim).unwrap();
        let mut fast = vec![0.0f32; g[0].len()];
        b.fast_into(&mut fast).unwrap();
        assert_eq!(fast, g[0]);
        for len in [0, g[0].len() - 1, g[0].len() + 1, 2048] {
            let mut wrong = vec![0.0f32; len];
            assert!(matches!(
                b.fast_into(&mut wrong),
                Err(Error::BadBlob { .. })
            ));
        }
    }

    #[test]
    fn round_trip_f32_and_f16() {
        for dtype in [FrozenDtype::F32, FrozenDtype::F16] {
            let (_, g, words, n) = tiny_blob(dtype);
            let bytes: &[u8] = &bytemuck::cast_slice(&words)[..n];
            let b = Blob::parse(bytes, &TINY, Mode::MetaRim).unwrap();
            assert_eq!(b.mode, Mode::MetaRim);
            assert_eq!(b.fast_f32().unwrap(), &g[0][..]);
            let mut frozen = vec![0.0f32; b.slow_len + b.other_len];
            b.frozen_into(&mut frozen).unwrap();
            let (s, o) = b.split_frozen(&frozen).unwrap();
            for (got, want) in s.iter().chain(o).zip(g[1].iter().chain(&g[2])) {
                match dtype {
                    FrozenDtype::F32 => assert_eq!(got, want),
                    FrozenDtype::F16 => assert!((got - want).abs() <= 1e-3 * want.abs().max(1e-2)),
                }
            }
            if dtype == FrozenDtype::F32 {
                assert_eq!(b.frozen_f32().unwrap(), &frozen[..]);
            }
        }
    }

    #[test]
    fn every_malformation_is_an_error() {
        let (_, _, words, n) = tiny_blob(FrozenDtype::F32);
        let good: &[u8] = &bytemuck::cast_slice(&words)[..n];
        let err = |b: &[u8]| match Blob::parse(b, &TINY, Mode::MetaRim) {
            Err(Error::BadBlob { what }) => what,
            Err(Error::BlobMode { found, .. }) => found,
            other => panic!("expected BadBlob, got {other:?}"),
        };
        // Truncated at every length, and every single-bit flip in the header.
        for len in (0..n).step_by(7) {
            let _ = err(&good[..len]);
        }
        let mut buf = words.clone();
        for i in 0..header_len() {
            for bit in [0u8, 3, 7] {
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
                bytes[i] ^= 1 << bit;
                let _ = err(&bytes[..n]);
                bytes[i] ^= 1 << bit;
            }
        }
        assert!(err(b"NOPE").contains("magic"));
        // A valid blob for other dims.
        let mut other = TINY;
        other.rim.k_active = 3;
        assert!(Blob::parse(good, &other, Mode::MetaRim).is_err());
        // Misaligned: the same bytes one byte further on.
        let mut shifted = vec![0u32; words.len() + 1];
        let sb: &mut [u8] = bytemuck::cast_slice_mut(&mut shifted);
        sb[1..1 + n].copy_from_slice(good);
        assert!(err(&sb[1..1 + n]).contains("aligned"));
        // Wrong group sizes for the writer.
        let layout = Layout::new(&TINY, Mode::MetaRim).unwrap();
        let mut out = vec![0u8; n];
        assert!(write(&layout, FrozenDtype::F32, &[], &[], &[], &mut out).is_err());
        assert!(matches!(
            write(
                &layout,
                FrozenDtype::F32,
                &[0.0; 1728],
                &[0.0; 2048],
                &[0.0; 5408],
                &mut out[..10]
            ),
            Err(Error::BufferTooSmall { .. })
        ));
    }

    /// A blob at the start of a larger flash region (erased 0xFF after it) is found with its
    /// own length; an erased, zeroed, foreign or cut region is a named error; a header whose
    /// group sizes claim more than the region holds, or overflow, never reads past it.
    #[test]
    fn blobs_are_found_in_a_flash_region() {
        for dtype in [FrozenDtype::F32, FrozenDtype::F16] {
            let (_, g, words, n) = tiny_blob(dtype);
            let good: &[u8] = &bytemuck::cast_slice(&words)[..n];
            let mut region = vec![0xFFFF_FFFFu32; n.div_ceil(4) + 1024];
            let rb: &mut [u8] = bytemuck::cast_slice_mut(&mut region);
            rb[..n].copy_from_slice(good);
            let (b, len) = Blob::parse_region(rb, &TINY, Mode::MetaRim).unwrap();
            assert_eq!(len, n);
            assert_eq!(b.fast_f32().unwrap(), &g[0][..]);
            // Exactly the blob's length is enough; one byte less is not.
            assert!(Blob::parse_region(&rb[..n], &TINY, Mode::MetaRim).is_ok());
            assert!(Blob::parse_region(&rb[..n - 1], &TINY, Mode::MetaRim).is_err());
        }
        let err = |b: &[u8]| match Blob::parse_region(b, &TINY, Mode::MetaRim) {
            Err(Error::BadBlob { what }) => what,
            other => panic!("expected BadBlob, got {other:?}"),
        };
        let erased = vec![0xFFu8; 4096];
        assert!(err(&erased).contains("erased"));
        assert!(err(&[0u8; 4096]).contains("all zero"));
        assert!(err(b"ELF\x7f and then some more bytes").contains("magic"));
        assert!(err(&[]).contains("smaller"));
        // A flipped payload bit: the CRC catches it through parse.
        let (_, _, mut words, n) = tiny_blob(FrozenDtype::F32);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        bytes[n / 2] ^= 0x10;
        assert!(err(&bytes[..n]).contains("CRC"));
        bytes[n / 2] ^= 0x10;
        // Group sizes that claim the whole address space, or overflow.
        for lens in [[u32::MAX; 3], [0x4000_0000, 0, 0], [0, u32::MAX, u32::MAX]] {
            let mut w = words.clone();
            let b: &mut [u8] = bytemuck::cast_slice_mut(&mut w);
            for (i, l) in lens.iter().enumerate() {
                b[56 + 4 * i..60 + 4 * i].copy_from_slice(&l.to_le_bytes());
            }
            let what = err(&b[..n]);
            assert!(
                what.contains("region") || what.contains("overflow"),
                "{what}"
            );
        }
    }
}
