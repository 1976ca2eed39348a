//! `metarim export`: a trained checkpoint packs into a blob that the core parses back to the
//! same parameters (f32 bit-exact, f16 within half precision); mismatched presets and bad
//! paths are clear errors, and nothing is left behind on failure.

mod common;

use common::{opts, small_config};
use host::export::{export, parse_dtype};
use host::train::checkpoint;
use host::train::run::train;
use metarim_core::blob::{Blob, FrozenDtype};
use metarim_core::nn::dims::TINY;
use metarim_core::nn::params::Mode;

#[test]
fn export_round_trips_through_the_core_parser() {
    let dir = std::env::temp_dir().join(format!("metarim-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = train(&small_config("meta-rim", 4, 160), &opts(&dir)).unwrap();
    let ck = checkpoint::load(&s.checkpoint).unwrap();
    for (name, dtype) in [("f32", FrozenDtype::F32), ("f16", FrozenDtype::F16)] {
        assert_eq!(parse_dtype(name).unwrap(), dtype);
        let out = dir.join(format!("model-{name}.bin"));
        let sum = export(&s.checkpoint, "Tiny", dtype, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len(), sum.bytes);
        // The device reads the blob from 4-aligned flash: copy into u32 words.
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        let aligned = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
        let b = Blob::parse(aligned, &TINY, Mode::MetaRim).unwrap();
        assert_eq!(b.fast_f32().unwrap(), &ck.model.params.fast[..]);
        let mut frozen = vec![0.0f32; b.slow_len + b.other_len];
        b.frozen_into(&mut frozen).unwrap();
        let (slow, other) = b.split_frozen(&frozen).unwrap();
        let want = ck.model.params.slow.iter().chain(&ck.model.params.other);
        for (got, want) in slow.iter().chain(other).zip(want) {
            if dtype == FrozenDtype::F32 {
                assert_eq!(got.to_bits(), want.to_bits());
            } else {
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs().max(1e-3),
                    "{got} vs {want}"
                );
            }
        }
    }
    assert!(parse_dtype("f8").is_err());
    let e = format!(
        "{:#}",
        export(&s.checkpoint, "Paper", FrozenDtype::F32, &dir.join("p.bin")).unwrap_err()
    );
    assert!(e.contains("Paper"), "{e}");
    assert!(!dir.join("p.bin").exists());
    assert!(export(
        &s.checkpoint,
        "Tiny",
        FrozenDtype::F32,
        &dir.join("no/such/dir.bin")
    )
    .is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
