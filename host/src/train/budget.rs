//! What one training update costs, checked before a run starts: an estimate of the memory the
//! rollout buffers and the gradient pass's work space take, against the memory this machine has
//! available, and a warning when one update collects more frames than the whole run's budget.
//!
//! Invariant: [`check`] runs before any file is written or any buffer sized by the config is
//! allocated, so a config that cannot fit fails in milliseconds with the estimate in its error
//! instead of aborting on a failed allocation minutes later.

use anyhow::{bail, Result};
use metarim_core::env::Observation;
use metarim_core::mission::vocab::MAX_TOKENS;
use metarim_core::nn::loss::PpoSample;
use metarim_core::nn::policy::state_len;

use super::rollout::EnvSlot;
use super::TrainConfig;

/// Bytes a run needs beyond the per-frame and per-row buffers: the program, the model, Adam's
/// moments and the envs (measured: under 64 MiB for either preset).
const BASE_BYTES: u64 = 64 << 20;

/// Work space of the batched gradient pass per minibatch row, in units of the memory state's
/// width (activations of the encoder, the memory's gates and attention, the heads, and their
/// gradients; measured with `/usr/bin/time -v` on Tiny and Paper, rounded up).
const ROW_FLOATS_PER_STATE_FLOAT: u64 = 64;

/// The estimate, in bytes, of what a run of `cfg` holds in memory at once.
pub fn estimate_bytes(cfg: &TrainConfig) -> Result<u64> {
    let dims = cfg.dims()?;
    let sl = state_len(&dims) as u64;
    let f32s = 4u64;
    // One rollout step: the observation, the mission tokens, the memory state and memory
    // input read there, the PPO sample and the scalars beside them.
    // Twice the sum of those buffers: measured peak RSS per rollout frame is 1.4 KiB (Tiny)
    // and 4.2 KiB (Paper), 1.5-2x the sum (acting copies, advantages, allocator slack).
    let per_frame = 2
        * (std::mem::size_of::<Observation>() as u64
            + 2 * MAX_TOKENS as u64
            + f32s * (sl + dims.memory_input() as u64)
            + std::mem::size_of::<PpoSample<f32>>() as u64
            + 32);
    // One env: its world, generator and episode (inline in the slot), its memory state and
    // instruction embedding, twice for allocator slack and the acting batch's copies.
    let per_env = 2 * (std::mem::size_of::<EnvSlot>() as u64 + f32s * (2 * sl + 256));
    let frames = (cfg.procs as u64).saturating_mul(cfg.frames_per_proc as u64);
    let rows = cfg
        .batch_size
        .max(cfg.slow_horizon())
        .min(cfg.frames_per_update()) as u64;
    let per_row = f32s * ROW_FLOATS_PER_STATE_FLOAT * (sl + dims.memory_input() as u64);
    Ok(BASE_BYTES
        .saturating_add((cfg.procs as u64).saturating_mul(per_env))
        .saturating_add(frames.saturating_mul(per_frame))
        .saturating_add(rows.saturating_mul(per_row)))
}

/// Memory this machine can give a new process (`MemAvailable` in `/proc/meminfo`), when known.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Refuse a config whose estimate exceeds the available memory; warn when one update collects
/// more frames than `frames`.
pub fn check(cfg: &TrainConfig) -> Result<()> {
    let need = estimate_bytes(cfg)?;
    if let Some(have) = available_bytes() {
        if need > have {
            bail!(
                "this config needs about {} of memory (procs {} x frames_per_proc {} rollout \
                 frames, minibatches of {} frames, {} preset) but this machine has {} \
                 available; lower procs, frames_per_proc or batch_size",
                gib(need),
                cfg.procs,
                cfg.frames_per_proc,
                cfg.batch_size,
                cfg.preset,
                gib(have)
            );
        }
    }
    let per_update = cfg.frames_per_update() as u64;
    if per_update > cfg.frames {
        eprintln!(
            "train: warning: one update collects {per_update} frames (procs {} x \
             frames_per_proc {}), more than the run's budget of {} frames: the run will train \
             on {per_update}",
            cfg.procs, cfg.frames_per_proc, cfg.frames
        );
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}
