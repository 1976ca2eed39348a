//! Checkpoints in safetensors: parameters named by group (`fast.*`, `slow.*`, `other.*`, then
//! the layout's tensor name), Adam moments (`optim.m.<group>`, `optim.v.<group>`) and the
//! memory state of every env (`rollout.state`), with one metadata entry, `metarim`, holding
//! JSON: the config (TOML), frame and update counts, Adam step counts, the trainer's and every
//! env's generator, the env episodes (level, seed, actions so far), the curriculum state, the
//! rolling statistics window, and a CRC32 of the tensor bytes.
//!
//! Invariants:
//! - Writing is atomic (temp file in the same directory, fsync, rename): an interrupted write
//!   never replaces a good checkpoint.
//! - The bytes are a deterministic function of the training state (one metadata key, since
//!   safetensors writes its metadata map in hash order; tensors sorted by the format).
//! - Loading checks everything (format, CRC, every tensor's presence, dtype and shape against
//!   the layout the saved config describes) and names what is wrong.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use metarim_core::nn::params::{Group, Layout};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::rollout::EnvSnapshot;
use super::tasks::TasksState;
use super::update::Optim;
use super::{GroupVecs, Model, TrainConfig};

/// Version of the checkpoint layout (metadata fields and tensor names).
pub const FORMAT_VERSION: u32 = 1;

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
    /// CRC32 of the tensor bytes, tensors in name order.
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

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
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
        named.push((
            format!("{}.{}", group_prefix(e.group), e.name),
            e.dims().to_vec(),
            to_bytes(data),
        ));
    }
    for g in Group::ALL {
        for (which, v) in [("m", &optim.m), ("v", &optim.v)] {
            let data = v.group(g);
            if !data.is_empty() {
                named.push((
                    format!("optim.{which}.{}", g.name()),
                    vec![data.len()],
                    to_bytes(data),
                ));
            }
        }
    }
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
    let mut meta = meta.clone();
    meta.crc32 = crc.finalize();
    let views = named
        .iter()
        .map(|(n, shape, d)| {
            TensorView::new(Dtype::F32, shape.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow!("tensor {n}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert(
        "metarim".to_string(),
        serde_json::to_string(&meta).context("checkpoint metadata")?,
    );
    safetensors::serialize(views, Some(info)).map_err(|e| anyhow!("safetensors: {e}"))
}

/// Write `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Parse and check a checkpoint.
pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("not a valid safetensors file ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("not a valid safetensors file ({e})"))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("metarim"))
        .ok_or_else(|| anyhow!("no `metarim` metadata: not a metarim checkpoint"))?;
    let meta: CheckpointMeta =
        serde_json::from_str(text).map_err(|e| anyhow!("bad checkpoint metadata: {e}"))?;
    if meta.format_version != FORMAT_VERSION {
        bail!(
            "checkpoint format version {} is not supported (this build reads {FORMAT_VERSION})",
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
    if crc.finalize() != meta.crc32 {
        bail!("checkpoint is corrupt: tensor data CRC32 mismatch");
    }
    let config = TrainConfig::from_toml(&meta.config).context("the checkpoint's config")?;
    config
        .validate()
        .context("the checkpoint's config does not validate")?;
    let layout = Layout::new(&config.dims()?, config.mode()?)
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
    Ok(Checkpoint {
        meta,
        config,
        model: Model { layout, params },
        optim,
        env_states,
    })
}

/// Read and check a checkpoint file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("checkpoint {}", path.display()))
}
