//! Device blob parser (`metarim_core::blob::Blob::parse`), against a micro preset (see
//! [`MICRO`]: the same code as for Tiny, on 1-2 KB blobs).
//!
//! Checks, for any input:
//! - parsing (for the split the blob names at byte 52) never panics, whether the bytes are
//!   4-byte aligned or not; a blob accepted when aligned is rejected one byte further on (the
//!   views would be unaligned) and by a caller running any other split (`Error::BlobMode`),
//!   and a small input rejected when aligned gets the same error at an odd address;
//! - an accepted blob's accessors all succeed, and writing its values back (`blob::write`)
//!   gives a blob that parses to the same values, bit for bit (f16 frozen values compared as
//!   f16 bits, NaNs as NaNs), and rewrites to the same bytes;
//! - finding a blob in a region (`Blob::parse_region`) never panics or reads past the input; what
//!   it finds is a prefix that `Blob::parse` accepts, and a whole input `Blob::parse` accepts is
//!   found with its full length;
//! - inputs starting with `W` instead drive the writer: byte 1 picks the mode, byte 2 the
//!   frozen dtype (bit 0), the rest is repeated as the parameter values (any f32 bit pattern:
//!   NaN, infinities, subnormals); the written blob must parse back to exactly those values.
#![no_main]

use half::f16;
use libfuzzer_sys::fuzz_target;
use metarim_core::blob::{self, Blob, FrozenDtype};
use metarim_core::nn::dims::{
    CellKind, CommUpdate, EncoderKind, MemoryKind, ModelDims, RimDims, TINY,
};
use metarim_core::nn::params::{Group, Layout, Mode};
use metarim_core::Error;

const MODES: [Mode; 4] = [Mode::MetaRim, Mode::Reversed, Mode::Joint, Mode::Lstm];

/// A valid model of the smallest sizes: its blobs are 1.1-1.8 KB instead of Tiny's 22-37 KB.
/// The parser takes the expected dims as an argument and runs the same code for any; against
/// Tiny, the bitwise CRC over whole blobs took most of the time (3,300 exec/s instead of tens
/// of thousands). Real Tiny blobs are covered by `core/src/blob.rs`'s tests and
/// `host/tests/export.rs`.
const MICRO: ModelDims = ModelDims {
    encoder: EncoderKind::Conv,
    conv_channels: [1, 1, 2],
    bow_dim: 1,
    film: false,
    feature_norm: false,
    word_dim: 2,
    instr_hidden: 2,
    max_tokens: TINY.max_tokens,
    memory: MemoryKind::Rim,
    rim: RimDims {
        n_modules: 2,
        k_active: 1,
        hidden: 2,
        input: 4,
        d_k: 2,
        d_v: 2,
        in_heads: 1,
        c_heads: 1,
        c_k: 2,
        cell: CellKind::Gru,
        communication: true,
        comm_update: CommUpdate::Residual,
    },
    head_hidden: 2,
    n_actions: 7,
};

/// `bytes` copied to the start of a 4-byte aligned buffer, and at offset 1 of another.
struct Copies {
    aligned: Vec<u32>,
    shifted: Vec<u32>,
}

impl Copies {
    fn new(bytes: &[u8]) -> Copies {
        let words = bytes.len().div_ceil(4) + 1;
        let mut c = Copies {
            aligned: vec![0; words],
            shifted: vec![0; words],
        };
        bytemuck::cast_slice_mut::<u32, u8>(&mut c.aligned)[..bytes.len()].copy_from_slice(bytes);
        bytemuck::cast_slice_mut::<u32, u8>(&mut c.shifted)[1..1 + bytes.len()]
            .copy_from_slice(bytes);
        c
    }
}

/// Same value, or both NaN, compared at f16 precision.
fn same_f16(a: f16, b: f16) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The blob's groups as f32 (fast, slow, other).
fn groups(b: &Blob<'_>) -> [Vec<f32>; 3] {
    let mut fast = vec![0.0f32; b.fast_f32().expect("accepted blob: fast view").len()];
    b.fast_into(&mut fast)
        .expect("accepted blob: fast_into with the right length");
    let mut frozen = vec![0.0f32; b.slow_len + b.other_len];
    b.frozen_into(&mut frozen)
        .expect("accepted blob: frozen_into with the right length");
    let (slow, other) = b
        .split_frozen(&frozen)
        .expect("accepted blob: split_frozen with the right length");
    [fast, slow.to_vec(), other.to_vec()]
}

/// Write `g` as a blob of `layout`/`dtype` into an aligned buffer; returns (buffer, length).
fn write(layout: &Layout, dtype: FrozenDtype, g: &[Vec<f32>; 3]) -> (Vec<u32>, usize) {
    let n = blob::blob_len(layout, dtype);
    let mut out = vec![0u32; n.div_ceil(4)];
    let written = blob::write(
        layout,
        dtype,
        &g[0],
        &g[1],
        &g[2],
        bytemuck::cast_slice_mut(&mut out),
    )
    .expect("writing groups that match the layout");
    assert_eq!(written, n, "write returns blob_len");
    (out, n)
}

/// `b` and `c` hold the same parameters (bitwise; the frozen section at its dtype's precision).
fn assert_same_values(b: &Blob<'_>, c: &Blob<'_>) {
    assert_eq!((b.mode, b.dtype, b.dims), (c.mode, c.dtype, c.dims));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(b.fast_f32().unwrap()), bits(c.fast_f32().unwrap()));
    match b.dtype {
        FrozenDtype::F32 => {
            assert_eq!(bits(b.frozen_f32().unwrap()), bits(c.frozen_f32().unwrap()))
        }
        FrozenDtype::F16 => {
            let (x, y) = (b.frozen_f16().unwrap(), c.frozen_f16().unwrap());
            assert_eq!(x.len(), y.len());
            assert!(x.iter().zip(y).all(|(a, b)| same_f16(*a, *b)));
        }
    }
}

/// Raw input: parse, and round-trip what was accepted.
fn parse_raw(data: &[u8]) {
    let copies = Copies::new(data);
    let aligned = &bytemuck::cast_slice::<u32, u8>(&copies.aligned)[..data.len()];
    let shifted = &bytemuck::cast_slice::<u32, u8>(&copies.shifted)[1..1 + data.len()];
    // The caller's split: the one the blob names (byte 52) when that is a mode.
    let dims = &MICRO;
    let mode = MODES[data.get(52).map_or(0, |&m| usize::from(m) % MODES.len())];
    let parsed = Blob::parse(aligned, dims, mode);
    match Blob::parse_region(aligned, dims, mode) {
        Ok((_, len)) => {
            assert!(
                len <= data.len(),
                "found {len} bytes in a region of {}",
                data.len()
            );
            Blob::parse(&aligned[..len], dims, mode).expect("a found blob parses on its own");
        }
        Err(_) => assert!(
            parsed.is_err(),
            "a blob that parses whole is found in its region"
        ),
    }
    if parsed.is_ok() {
        let (_, len) = Blob::parse_region(aligned, dims, mode).expect("found");
        assert_eq!(len, data.len(), "a whole blob is found with its own length");
    }
    match &parsed {
        Ok(_) => {
            let e =
                Blob::parse(shifted, dims, mode).expect_err("a misaligned blob must be rejected");
            assert!(format!("{e}").contains("aligned"), "{e}");
            for other in MODES.into_iter().filter(|m| *m != mode) {
                match Blob::parse(aligned, dims, other) {
                    Err(Error::BlobMode { .. }) => {}
                    r => panic!("a {mode:?} blob read as {other:?}: {r:?}"),
                }
            }
        }
        // The CRC makes parsing linear in the input; only small inputs are parsed twice.
        Err(e) if data.len() <= 1024 => {
            let e2 = Blob::parse(shifted, dims, mode).expect_err("rejected when aligned");
            assert_eq!(format!("{e}"), format!("{e2}"));
            return;
        }
        Err(_) => return,
    }
    let Ok(b) = parsed else { return };
    let g = groups(&b);
    let layout = Layout::new(&b.dims, b.mode).expect("an accepted blob's layout");
    let (out, n) = write(&layout, b.dtype, &g);
    let bytes = &bytemuck::cast_slice::<u32, u8>(&out)[..n];
    assert_eq!(n, data.len(), "an accepted blob has blob_len bytes");
    let c = Blob::parse(bytes, dims, b.mode).expect("a rewritten blob parses");
    assert_same_values(&b, &c);
    let (again, m) = write(&layout, c.dtype, &groups(&c));
    assert_eq!(
        &bytemuck::cast_slice::<u32, u8>(&again)[..m],
        bytes,
        "rewriting is idempotent"
    );
}

/// `W` input: write arbitrary values, parse them back.
fn write_mode(data: &[u8]) {
    let (Some(&m), Some(&d)) = (data.get(1), data.get(2)) else {
        return;
    };
    let mode = MODES[usize::from(m) % MODES.len()];
    let dims = &MICRO;
    let dtype = if d & 1 == 0 {
        FrozenDtype::F32
    } else {
        FrozenDtype::F16
    };
    let pattern: Vec<f32> = data[3..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let layout = Layout::new(dims, mode).expect("both presets have a layout in every mode");
    let mut k = 0usize;
    let mut fill = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                k += 1;
                pattern
                    .get(k % pattern.len().max(1))
                    .copied()
                    .unwrap_or(0.0)
            })
            .collect()
    };
    let g = [
        fill(layout.group_len(Group::Fast)),
        fill(layout.group_len(Group::Slow)),
        fill(layout.group_len(Group::Other)),
    ];
    let (out, n) = write(&layout, dtype, &g);
    let bytes = &bytemuck::cast_slice::<u32, u8>(&out)[..n];
    let b = Blob::parse(bytes, dims, mode).expect("a written blob parses");
    assert_eq!((b.mode, b.dtype), (mode, dtype));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(b.fast_f32().unwrap()), bits(&g[0]));
    let frozen: Vec<f32> = g[1].iter().chain(&g[2]).copied().collect();
    match dtype {
        FrozenDtype::F32 => assert_eq!(bits(b.frozen_f32().unwrap()), bits(&frozen)),
        FrozenDtype::F16 => {
            let h = b.frozen_f16().unwrap();
            assert_eq!(h.len(), frozen.len());
            assert!(h
                .iter()
                .zip(&frozen)
                .all(|(h, v)| same_f16(*h, f16::from_f32(*v))));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'W') {
        write_mode(data);
    } else {
        parse_raw(data);
    }
});
