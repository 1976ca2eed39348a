//! `metarim export`: a checkpoint's parameters packed as a device blob ([`metarim_core::blob`])
//! for a preset compiled into the firmware.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use metarim_core::blob::{self, Blob, FrozenDtype};
use metarim_core::nn::params::Group;

use crate::train::checkpoint;
use crate::train::config::preset_dims;

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
    let want = preset_dims(preset)?;
    let mut have = *ck.model.layout.dims();
    have.memory = want.memory;
    if have != want {
        bail!(
            "the checkpoint's model ({} preset with its overrides) does not match the {preset} \
             preset compiled into the firmware",
            ck.config.preset
        );
    }
    let layout = &ck.model.layout;
    let p = &ck.model.params;
    let mut bytes = vec![0u8; blob::blob_len(layout, dtype)];
    let n = blob::write(layout, dtype, &p.fast, &p.slow, &p.other, &mut bytes)
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
    Blob::parse(aligned, &want).map_err(|e| anyhow!("the written blob does not parse: {e}"))?;
    checkpoint::write_atomic(out, &bytes[..n])?;
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
