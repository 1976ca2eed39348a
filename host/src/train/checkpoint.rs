//! Checkpoints in safetensors: parameters named by group (`fast.*`, `slow.*`, `other.*`, then
//! the layout's tensor name), Adam moments (`optim.m.<group>`, `optim.v.<group>`) and the
//! memory state of every env (`rollout.state`), with one metadata entry, `metarim`, holding
//! JSON: the config (TOML), frame and update counts, Adam step counts, the trainer's and every
//! env's generator, the env episodes (level, seed, actions so far), the curriculum state, the
//! rolling statistics window, and a CRC32 of everything else (format 2: the tensor bytes in
//! name order, then the metadata's JSON with `crc32 = 0`; format 1 covered the tensors only).
//!
//! Invariants:
//! - Writing is atomic (temp file in the same directory, fsync, rename): an interrupted write
//!   never replaces a good checkpoint.
//! - Every value written is finite: a state holding NaN or infinity is refused, naming the
//!   tensor, so a diverged run never replaces its last good checkpoint.
//! - The bytes are a deterministic function of the training state (one metadata key, since
//!   safetensors writes its metadata map in hash order; tensors sorted by the format).
//! - Loading checks everything (format, CRC over tensors and metadata, every tensor's presence,
//!   dtype, shape against the layout the saved config describes and finiteness, the counters'
//!   consistency) and names what is wrong.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use metarim_core::nn::params::{Group, Layout};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::rollout::EnvSnapshot;
use super::tasks::TasksState;
use super::update::Optim;
use super::{GroupVecs, Model, TrainConfig};

/// Version of the checkpoint layout (metadata fields, tensor names, what the CRC covers).
/// Version 1 (the CRC covered the tensors only) is still read, with a warning.
pub const FORMAT_VERSION: u32 = 2;

/// A finished episode in the statistics window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedEpisode {
    /// Level index.
    pub level: usize,
    /// Return (f64 bits).
    pub ret_bits: u64,
    /// Length.
    pub len: u32,
    /// Success.
    pub success: bool,
}

/// Everything in the `metarim` metadata entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The run's configuration as TOML.
    pub config: String,
    /// Frames trained on.
    pub frames: u64,
    /// Updates done.
    pub updates: u64,
    /// Fast Adam step count.
    pub adam_fast_t: u64,
    /// Slow Adam step count.
    pub adam_slow_t: u64,
    /// Trainer generator (minibatch order) `(state, inc)`.
    pub trainer_rng: (u64, u64),
    /// Curriculum state.
    pub tasks: TasksState,
    /// Every env's episode and generator.
    pub envs: Vec<EnvSnapshot>,
    /// The rolling statistics window, oldest first.
    pub recent: Vec<SavedEpisode>,
    /// CRC32 of the tensor bytes (tensors in name order) followed by this metadata's JSON
    /// with `crc32` set to 0 (format 1: of the tensor bytes only).
    pub crc32: u32,
}

/// A training state as saved.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: CheckpointMeta,
    /// The parsed config.
    pub config: TrainConfig,
    /// The model.
    pub model: Model,
    /// Optimiser state (moments; step counts from `meta`).
    pub optim: Optim,
    /// Memory state of every env, `state_len` each.
    pub env_states: Vec<f32>,
}

/// safetensors views of named little-endian f32 tensors `(name, shape, bytes)`; an error names
/// a tensor whose bytes do not fit its shape. Shared by checkpoints and `export --format torch`.
pub fn f32_views(named: &[(String, Vec<usize>, Vec<u8>)]) -> Result<Vec<(String, TensorView<'_>)>> {
    named
        .iter()
        .map(|(n, shape, d)| {
            TensorView::new(Dtype::F32, shape.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow!("tensor {n}: {e}"))
        })
        .collect()
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An error naming `tensor` when `v` holds a NaN or an infinity.
fn check_finite(tensor: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => bail!(
            "tensor {tensor} holds a non-finite value ({} at index {i} of {}, {} non-finite in \
             all)",
            v[i],
            v.len(),
            v.iter().filter(|x| !x.is_finite()).count()
        ),
    }
}

/// The metadata's contribution to the CRC: its JSON with `crc32` set to 0.
fn meta_crc_bytes(meta: &CheckpointMeta) -> Result<Vec<u8>> {
    let canonical = CheckpointMeta {
        crc32: 0,
        ..meta.clone()
    };
    serde_json::to_vec(&canonical).context("checkpoint metadata")
}

fn group_prefix(g: Group) -> &'static str {
    g.name()
}

/// Serialise a checkpoint to bytes.
pub fn to_bytes_checkpoint(
    meta: &CheckpointMeta,
    model: &Model,
    optim: &Optim,
    env_states: &[f32],
    procs: usize,
) -> Result<Vec<u8>> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for e in model.layout.entries() {
        let buf = model.params.group(e.group);
        let data = buf
            .get(e.range())
            .ok_or_else(|| anyhow!("tensor {} outside its group buffer", e.name))?;
        let name = format!("{}.{}", group_prefix(e.group), e.name);
        check_finite(&name, data).context("refusing to write the checkpoint")?;
        named.push((name, e.dims().to_vec(), to_bytes(data)));
    }
    for g in Group::ALL {
        for (which, v) in [("m", &optim.m), ("v", &optim.v)] {
            let data = v.group(g);
            check_finite(&format!("optim.{which}.{}", g.name()), data)
                .context("refusing to write the checkpoint")?;
            if !data.is_empty() {
                named.push((
                    format!("optim.{which}.{}", g.name()),
                    vec![data.len()],
                    to_bytes(data),
                ));
            }
        }
    }
    check_finite("rollout.state", env_states).context("refusing to write the checkpoint")?;
    let sl = env_states.len() / procs.max(1);
    named.push((
        "rollout.state".into(),
        vec![procs, sl],
        to_bytes(env_states),
    ));
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut crc = crc32fast::Hasher::new();
    for (_, _, d) in &named {
        crc.update(d);
    }
    let mut meta = CheckpointMeta {
        format_version: FORMAT_VERSION,
        ..meta.clone()
    };
    crc.update(&meta_crc_bytes(&meta)?);
    meta.crc32 = crc.finalize();
    let views = f32_views(&named)?;
    let mut info = HashMap::new();
    info.insert(
        "metarim".to_string(),
        serde_json::to_string(&meta).context("checkpoint metadata")?,
    );
    safetensors::serialize(views, Some(info)).map_err(|e| anyhow!("safetensors: {e}"))
}

/// Write `bytes` to `path` atomically (temp file in the same directory, fsync, rename): see
/// [`crate::fsutil::write_atomic`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes)
}

fn read_f32(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("tensor {name} is missing"))?;
    if t.dtype() != Dtype::F32 {
        bail!("tensor {name} has dtype {:?}, expected F32", t.dtype());
    }
    if t.shape() != shape {
        bail!(
            "tensor {name} has shape {:?}, the model needs {:?}",
            t.shape(),
            shape
        );
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    check_finite(name, &v)?;
    Ok(v)
}

/// A safetensors file's tensors and its metadata entry `key` (the error `missing` when it has
/// none); an error too when the bytes are not a safetensors file.
pub fn with_metadata<'a>(
    bytes: &'a [u8],
    key: &str,
    missing: &str,
) -> Result<(SafeTensors<'a>, String)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("not a valid safetensors file ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("not a valid safetensors file ({e})"))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key))
        .ok_or_else(|| anyhow!("{missing}"))?;
    Ok((st, text.clone()))
}

/// Parse and check a checkpoint.
pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
    let (st, text) = with_metadata(
        bytes,
        "metarim",
        "no `metarim` metadata: not a metarim checkpoint",
    )?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| anyhow!("bad checkpoint metadata: {e}"))?;
    if !(1..=FORMAT_VERSION).contains(&meta.format_version) {
        bail!(
            "checkpoint format version {} is not supported (this build reads 1 to {FORMAT_VERSION})",
            meta.format_version
        );
    }
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut crc = crc32fast::Hasher::new();
    for n in &names {
        let t = st.tensor(n).map_err(|e| anyhow!("tensor {n}: {e}"))?;
        crc.update(t.data());
    }
    if meta.format_version >= 2 {
        crc.update(&meta_crc_bytes(&meta)?);
        if crc.finalize() != meta.crc32 {
            bail!("checkpoint is corrupt: CRC32 mismatch over its tensors and metadata");
        }
    } else {
        if crc.finalize() != meta.crc32 {
            bail!("checkpoint is corrupt: tensor data CRC32 mismatch");
        }
        eprintln!(
            "warning: checkpoint format 1: its CRC covers the tensors but not the metadata \
             (counters, generators, episodes); a --resume rewrites it as format {FORMAT_VERSION}"
        );
    }
    let config = TrainConfig::from_saved_toml(&meta.config).context("the checkpoint's config")?;
    config
        .validate()
        .context("the checkpoint's config does not validate")?;
    let layout = Layout::new(&config.dims()?, config.mode)
        .map_err(|e| anyhow!("checkpoint model dims: {e}"))?;
    let mut params = GroupVecs::zeros(&layout);
    for e in layout.entries() {
        let v = read_f32(
            &st,
            &format!("{}.{}", group_prefix(e.group), e.name),
            e.dims(),
        )?;
        params.group_mut(e.group)[e.range()].copy_from_slice(&v);
    }
    let mut optim = Optim::new(&layout, &config);
    optim.fast.t = meta.adam_fast_t;
    optim.slow.t = meta.adam_slow_t;
    for g in Group::ALL {
        let n = layout.group_len(g);
        if n == 0 {
            continue;
        }
        *optim.m.group_mut(g) = read_f32(&st, &format!("optim.m.{}", g.name()), &[n])?;
        *optim.v.group_mut(g) = read_f32(&st, &format!("optim.v.{}", g.name()), &[n])?;
    }
    let sl = metarim_core::nn::policy::state_len(layout.dims());
    let env_states = read_f32(&st, "rollout.state", &[config.procs, sl])?;
    if meta.envs.len() != config.procs {
        bail!(
            "checkpoint has {} env snapshots for {} procs",
            meta.envs.len(),
            config.procs
        );
    }
    check_counters(&meta, &config)?;
    Ok(Checkpoint {
        meta,
        config,
        model: Model { layout, params },
        optim,
        env_states,
    })
}

/// The counters must be those of a run of `config`: every update adds `frames_per_update`
/// frames and at most the schedule's optimiser steps, so a counter near `u64::MAX` (which would
/// wrap) or out of step with the others is corruption or a hand edit, not a training state.
fn check_counters(meta: &CheckpointMeta, config: &TrainConfig) -> Result<()> {
    let fpu = config.frames_per_update() as u64;
    let expected_frames = meta.updates.checked_mul(fpu);
    if expected_frames != Some(meta.frames) || meta.updates > super::config::MAX_U64_FIELD {
        bail!(
            "checkpoint metadata is inconsistent: updates = {} and frames = {} (each update is \
             {fpu} frames)",
            meta.updates,
            meta.frames
        );
    }
    let chunks = (config.frames_per_update() / config.recurrence.max(1)) as u64;
    let steps_per_update = chunks
        .saturating_mul(config.epochs as u64)
        .saturating_add((config.inner_steps + config.outer_steps) as u64);
    let max_t = meta.updates.saturating_mul(steps_per_update);
    for (t, name) in [
        (meta.adam_fast_t, "adam_fast_t"),
        (meta.adam_slow_t, "adam_slow_t"),
    ] {
        if t > max_t {
            bail!(
                "checkpoint metadata is inconsistent: {name} = {t} Adam steps after {} updates \
                 (at most {max_t})",
                meta.updates
            );
        }
    }
    if meta.recent.len() > config.stats_window {
        bail!(
            "checkpoint metadata is inconsistent: {} episodes in a statistics window of {}",
            meta.recent.len(),
            config.stats_window
        );
    }
    Ok(())
}

/// Read and check a checkpoint file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("checkpoint {}", path.display()))
}
