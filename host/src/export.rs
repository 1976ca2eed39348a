//! `metarim export`: a checkpoint's parameters packed as a device blob ([`metarim_core::blob`])
//! for the firmware.
//!
//! What the firmware runs, and therefore the only thing exported: the `Tiny` preset
//! (`firmware/src/model.rs` compiles `TINY` and fixed-size `TINY_FAST` buffers) in the
//! meta-rim split (it adapts the fast group, the module RNNs), without overrides of the
//! preset's dims (`n_modules`, `k_active`, `communication`, `encoder`). Anything else is
//! refused with an error saying what differs. The frozen (slow and other) groups may be f32 or
//! f16 (the QEMU firmware build reads f32 in place from flash; an f16 blob is refused there at
//! start-up, since it would need a RAM copy).
//!
//! Every value written is finite: a non-finite parameter, or one that f16 cannot hold (above
//! 65504 in magnitude), is refused naming the tensor and the count.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use metarim_core::blob::{self, Blob, FrozenDtype};
use metarim_core::nn::dims::{ModelDims, TINY};
use metarim_core::nn::params::{Group, Layout, Mode};

use crate::fsutil;
use crate::train::checkpoint;
use crate::train::config::Preset;

/// The only preset the firmware compiles.
pub const FIRMWARE_PRESET: &str = "Tiny";
/// The only parameter split the firmware runs.
pub const FIRMWARE_MODE: Mode = Mode::MetaRim;

/// The smallest f32 magnitude that f16 rounds to infinity: its largest finite value is 65504,
/// the next step would be 65536, and round-to-nearest-even sends the midpoint 65520 up.
pub const F16_ROUNDS_TO_INFINITY: f32 = 65520.0;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSummary {
    /// Blob length in bytes.
    pub bytes: usize,
    /// Parameters per group (fast, slow, other).
    pub groups: [usize; 3],
    /// Frozen-section dtype.
    pub dtype: FrozenDtype,
}

/// Parse `f16` / `f32`.
pub fn parse_dtype(s: &str) -> Result<FrozenDtype> {
    match s {
        "f32" => Ok(FrozenDtype::F32),
        "f16" => Ok(FrozenDtype::F16),
        _ => bail!("unknown --slow-dtype {s:?} (f16 or f32)"),
    }
}

/// Export the checkpoint at `ckpt` for `preset` into `out` (atomically), then parse the written
/// bytes back as the device would.
pub fn export(ckpt: &Path, preset: &str, dtype: FrozenDtype, out: &Path) -> Result<ExportSummary> {
    let ck = checkpoint::load(ckpt)?;
    export_checkpoint(&ck, preset, dtype, out)
}

/// [`export`] of a loaded checkpoint: refuses what the firmware cannot run (see the module
/// docs) before anything is written.
pub fn export_checkpoint(
    ck: &checkpoint::Checkpoint,
    preset: &str,
    dtype: FrozenDtype,
    out: &Path,
) -> Result<ExportSummary> {
    let want = Preset::from_name(preset)?.dims();
    if want != TINY {
        bail!(
            "--preset {preset}: the firmware compiles only the {FIRMWARE_PRESET} preset \
             (firmware/src/model.rs); export a {FIRMWARE_PRESET} checkpoint with --preset \
             {FIRMWARE_PRESET}"
        );
    }
    let layout = &ck.model.layout;
    if layout.mode() != FIRMWARE_MODE {
        bail!(
            "the checkpoint was trained in {} mode, but the firmware runs the {} split only \
             (it adapts a fast group of {} module-RNN parameters; this checkpoint's fast group \
             has {}); train with --mode {}",
            layout.mode().name(),
            FIRMWARE_MODE.name(),
            Layout::new(&want, FIRMWARE_MODE)
                .map(|l| l.group_len(Group::Fast))
                .unwrap_or(0),
            layout.group_len(Group::Fast),
            FIRMWARE_MODE.name()
        );
    }
    let have = *layout.dims();
    if have != want {
        bail!(
            "the checkpoint's model ({} preset) differs from the {FIRMWARE_PRESET} preset \
             compiled into the firmware: {}",
            ck.config.preset,
            dims_diff(&have, &want)
        );
    }
    let p = &ck.model.params;
    let groups = [&p.fast[..], &p.slow[..], &p.other[..]];
    check_values(layout, groups, dtype)?;
    let mut bytes = vec![0u8; blob::blob_len(layout, dtype)];
    let n = blob::write(layout, dtype, groups[0], groups[1], groups[2], &mut bytes)
        .map_err(|e| anyhow!("packing the blob: {e}"))?;
    // Check the bytes the way the device will (from a 4-aligned copy).
    let words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect();
    let aligned: &[u8] = &bytemuck::cast_slice::<u32, u8>(&words)[..n];
    Blob::parse(aligned, &want, FIRMWARE_MODE)
        .map_err(|e| anyhow!("the written blob does not parse: {e}"))?;
    fsutil::write_atomic(out, &bytes[..n])?;
    Ok(ExportSummary {
        bytes: n,
        groups: [
            layout.group_len(Group::Fast),
            layout.group_len(Group::Slow),
            layout.group_len(Group::Other),
        ],
        dtype,
    })
}

/// The dims that differ, as `name checkpoint vs preset`, for the error message.
fn dims_diff(have: &ModelDims, want: &ModelDims) -> String {
    let (h, w) = (&have.rim, &want.rim);
    let mut diffs = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{name} {a} (firmware: {b})"));
        }
    };
    cmp(
        "n_modules",
        h.n_modules.to_string(),
        w.n_modules.to_string(),
    );
    cmp("k_active", h.k_active.to_string(), w.k_active.to_string());
    cmp(
        "communication",
        h.communication.to_string(),
        w.communication.to_string(),
    );
    cmp(
        "encoder",
        format!("{:?}", have.encoder),
        format!("{:?}", want.encoder),
    );
    if diffs.is_empty() {
        diffs.push(format!("dims {have:?} (firmware: {want:?})"));
    }
    diffs.join(", ")
}

/// Refuse non-finite parameters, and frozen ones beyond f16's range when exporting f16, naming
/// every offending tensor with its count.
fn check_values(layout: &Layout, groups: [&[f32]; 3], dtype: FrozenDtype) -> Result<()> {
    let mut non_finite = Vec::new();
    let mut overflow = Vec::new();
    for e in layout.entries() {
        let Some(v) = groups[e.group as usize].get(e.range()) else {
            bail!(
                "tensor {}.{} lies outside its group",
                e.group.name(),
                e.name
            );
        };
        let name = format!("{}.{}", e.group.name(), e.name);
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            non_finite.push(format!("{name}: {bad} of {}", v.len()));
        }
        if dtype == FrozenDtype::F16 && e.group != Group::Fast {
            let over: Vec<f32> = v
                .iter()
                .copied()
                .filter(|x| x.is_finite() && x.abs() >= F16_ROUNDS_TO_INFINITY)
                .collect();
            if let Some(max) = over.iter().map(|x| x.abs()).reduce(f32::max) {
                overflow.push(format!(
                    "{name}: {} of {} (largest magnitude {max})",
                    over.len(),
                    v.len()
                ));
            }
        }
    }
    if !non_finite.is_empty() {
        bail!(
            "refusing to export non-finite parameters (NaN or infinity): {}",
            non_finite.join("; ")
        );
    }
    if !overflow.is_empty() {
        bail!(
            "--slow-dtype f16 cannot hold these frozen weights (f16's largest finite value is \
             65504; they would become infinity on the device): {}; export with --slow-dtype f32",
            overflow.join("; ")
        );
    }
    Ok(())
}
