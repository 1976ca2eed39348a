//! The training loop: rollout, GAE, the update, logs (JSONL and CSV per update), progress,
//! periodic atomic checkpoints, the learning curve and the summary line.
//!
//! Invariants: the checkpoint holds the whole training state at an update boundary, so a run
//! resumed from it continues exactly as the uninterrupted run would have (logs are cut back to
//! the checkpoint's update); timings appear only in logs, never in checkpoints.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use metarim_core::nn::params::Layout;
use metarim_core::nn::policy::state_len;
use metarim_core::rng::{split_mix64, Pcg32};
use serde::Serialize;

use super::backend;
use super::checkpoint::{self, CheckpointMeta, SavedEpisode, FORMAT_VERSION};
use super::guard::{self, DivergenceGuard};
use super::rollout::{self, EnvSlot, EpisodeRecord};
use super::rundir;
use super::tasks::Tasks;
use super::update::{self, Grads, Optim};
use super::{thread_count, Model, TrainConfig};

/// File name of the checkpoint inside the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The effective config a run wrote beside its checkpoint (TOML).
pub const CONFIG_FILE: &str = "config.toml";

/// The checkpoint a curriculum run saves beside [`CHECKPOINT_FILE`] when it moves on from its
/// level `index` (0-based): the policy as that level ended, so how much of it survives the
/// later levels can be measured (forgetting).
pub fn stage_checkpoint_file(index: usize) -> String {
    format!("level-{index}.safetensors")
}

/// How to run (not part of the training state).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output directory (checkpoint, logs, curve, config).
    pub out: PathBuf,
    /// Continue from `out/checkpoint.safetensors` if present.
    pub resume: bool,
    /// Progress display: a bar on a terminal, a line every few seconds otherwise; off when
    /// false.
    pub progress: bool,
    /// Stop (after saving) once this many updates have run in this process (tests of resume).
    pub stop_after_updates: Option<u64>,
    /// Write TensorBoard event files beside `train.jsonl` ([`crate::tensorboard`]).
    pub tensorboard: bool,
    /// Print the run's notes to stderr (a fresh start under `resume`, the backend chosen);
    /// warnings and errors are printed regardless.
    pub notes: bool,
    /// Called with every log line as it is written (e.g. `metarim experiment`'s progress).
    pub on_update: Option<UpdateHook>,
    /// Checked after every update: once it reads true, training saves a checkpoint and returns
    /// early with [`RunSummary::stopped`] set (a signal handler raises it, so a preempted or
    /// time-limited cluster job keeps its progress; [`crate::experiment::slurm`]).
    pub stop: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    /// Options for an uninterrupted run into `out`: no resume, no progress display, event
    /// files and notes on, no hook.
    pub fn new(out: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            out: out.into(),
            resume: false,
            progress: false,
            stop_after_updates: None,
            tensorboard: true,
            notes: true,
            on_update: None,
            stop: None,
        }
    }
}

/// A callback given each [`LogLine`] as training writes it.
#[derive(Clone)]
pub struct UpdateHook(pub std::sync::Arc<dyn Fn(&LogLine) + Send + Sync>);

impl std::fmt::Debug for UpdateHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpdateHook(..)")
    }
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Current level id (the curriculum's, or the single level; "mixture of N").
    pub level: String,
    /// Frames trained on.
    pub frames: u64,
    /// Updates done.
    pub updates: u64,
    /// Success rate over the statistics window.
    pub success: f64,
    /// Mean return over the statistics window.
    pub mean_return: f64,
    /// Frames per second of this process's updates.
    pub fps: f64,
    /// The final checkpoint.
    pub checkpoint: PathBuf,
    /// Training stopped before the budget because [`RunOptions::stop`] was raised (the
    /// checkpoint holds the progress so far; a resume continues from it).
    pub stopped: bool,
}

/// One line of the per-update log.
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    /// Update index (1-based).
    pub update: u64,
    /// Frames so far.
    pub frames: u64,
    /// Frames per second of this update.
    pub fps: f64,
    /// Seconds of training of this run so far: since this process started training, plus the
    /// `wall_s` of the run's log before a resume (time between invocations not counted).
    pub wall_s: f64,
    /// Current level.
    pub level: String,
    /// Episodes finished in this update.
    pub episodes: usize,
    /// Mean return over the statistics window.
    pub return_mean: f64,
    /// Standard deviation of the returns over the statistics window (population; 0 for one
    /// episode or none).
    pub return_std: f64,
    /// Success rate over the statistics window.
    pub success_rate: f64,
    /// Mean episode length over the statistics window.
    pub episode_len: f64,
    /// Mean policy entropy.
    pub entropy: f64,
    /// Mean policy loss.
    pub policy_loss: f64,
    /// Mean value loss.
    pub value_loss: f64,
    /// Mean approximate KL.
    pub approx_kl: f64,
    /// Fraction of clipped ratios.
    pub clip_frac: f64,
    /// Mean pre-clip gradient norm.
    pub grad_norm: f64,
    /// Root mean square of the memory states the rollout's steps started from (every env and
    /// step; RIM modules' `h`, and `c` with LSTM cells or the LSTM memory).
    pub memory_rms: f64,
    /// Largest magnitude among those states.
    pub memory_max: f64,
    /// Mean pre-clip gradient norm of each parameter role of the model
    /// ([`update::ROLE_COLUMNS`]: `encoder`, `instruction`, `input_attention`, `modules`,
    /// `communication`, `lstm`, `heads`) over the update's gradient passes; the CSV's
    /// `grad_norm_by_role/NAME` columns. NaN (`null`, an empty cell) on the GPU backend.
    pub grad_norm_by_role: BTreeMap<&'static str, f64>,
    /// How much of the return targets' variance the acting policy's values explained, over
    /// the update's rollout, before learning (CleanRL's `explained_variance`:
    /// `1 - Var(ret - value) / Var(ret)`; 1 is perfect, 0 no better than a constant,
    /// NaN (`null` in JSON, empty in the CSV) when every target is equal).
    pub explained_variance: f64,
    /// Learning rate of the slow parameters (config `lr`) this update used (after annealing).
    pub lr: f64,
    /// Learning rate of the fast parameters (config `fast_lr`) this update used.
    pub fast_lr: f64,
    /// Optimiser steps of this update skipped or undone because a loss, gradient or parameter
    /// was not finite (0 in a healthy run).
    pub skipped_steps: usize,
    /// Fraction of the rollout's steps each module was active (empty for the LSTM); the CSV
    /// has one column per module, `module_activity/I`.
    pub module_activity: Vec<f64>,
    /// Unix time (seconds) when the line was written: the TensorBoard events' wall time.
    pub unix_s: f64,
}

/// The CSV's columns before the per-role and per-module ones.
pub const CSV_COLUMNS: &str = "update,frames,fps,wall_s,level,episodes,return_mean,return_std,success_rate,episode_len,entropy,policy_loss,value_loss,approx_kl,clip_frac,grad_norm,explained_variance,lr,fast_lr,skipped_steps,memory_rms,memory_max";

/// The CSV header of a model with parameter roles `roles` ([`update::logged_roles`]) and
/// `n_modules` RIM modules (0 for the LSTM): [`CSV_COLUMNS`], `grad_norm_by_role/ROLE` for each
/// role, then `module_activity/0` .. `module_activity/{n-1}` (the TensorBoard tags' names).
pub fn csv_header(roles: &[&str], n_modules: usize) -> String {
    let mut h = CSV_COLUMNS.to_string();
    for r in roles {
        h.push_str(&format!(",grad_norm_by_role/{r}"));
    }
    for i in 0..n_modules {
        h.push_str(&format!(",module_activity/{i}"));
    }
    h
}

/// A float CSV cell with `decimals` decimals; empty when not finite.
fn cell(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        String::new()
    }
}

impl LogLine {
    /// The line's CSV row (columns of [`csv_header`]).
    fn csv(&self) -> String {
        let mut row = vec![
            self.update.to_string(),
            self.frames.to_string(),
            cell(self.fps, 1),
            cell(self.wall_s, 2),
            self.level.clone(),
            self.episodes.to_string(),
            cell(self.return_mean, 5),
            cell(self.return_std, 5),
            cell(self.success_rate, 5),
            cell(self.episode_len, 2),
            cell(self.entropy, 5),
            cell(self.policy_loss, 5),
            cell(self.value_loss, 5),
            cell(self.approx_kl, 6),
            cell(self.clip_frac, 5),
            cell(self.grad_norm, 5),
            cell(self.explained_variance, 5),
            format!("{:e}", self.lr),
            format!("{:e}", self.fast_lr),
            self.skipped_steps.to_string(),
            cell(self.memory_rms, 5),
            cell(self.memory_max, 5),
        ];
        // The map holds exactly the layout's roles, so this follows the header's order.
        row.extend(
            update::ROLE_COLUMNS
                .iter()
                .filter_map(|(_, name)| self.grad_norm_by_role.get(name))
                .map(|n| cell(*n, 5)),
        );
        row.extend(self.module_activity.iter().map(|a| cell(*a, 4)));
        row.join(",")
    }
}

/// The mutable state of a run.
struct State {
    model: Model,
    optim: Optim,
    tasks: Tasks,
    slots: Vec<EnvSlot>,
    rng: Pcg32,
    frames: u64,
    updates: u64,
    recent: VecDeque<EpisodeRecord>,
    /// The CUDA backend when it runs the policy (`None`: the CPU).
    gpu: Option<backend::Gpu>,
}

/// The model a fresh run of `cfg` starts from: a fresh initialisation, or the parameters of
/// the `init_from` checkpoint (whose layout must be the one `cfg` describes).
pub fn initial_model(cfg: &TrainConfig) -> Result<Model> {
    let layout = Layout::new(&cfg.dims()?, cfg.mode).map_err(|e| anyhow!("model: {e}"))?;
    let Some(path) = &cfg.init_from else {
        return Model::init(layout, split_mix64(cfg.seed ^ 0x1a17_0000));
    };
    let ck = checkpoint::load(Path::new(path))
        .with_context(|| format!("config field `init_from` ({path})"))?;
    if ck.model.layout != layout {
        bail!(
            "config field `init_from`: {path} holds a {} / {} model, not the {} / {} this run \
             trains",
            ck.config.preset,
            ck.config.mode.name(),
            cfg.preset,
            cfg.mode.name()
        );
    }
    Ok(ck.model)
}

fn fresh_state(cfg: &TrainConfig) -> Result<State> {
    let model = initial_model(cfg)?;
    let optim = Optim::new(&model.layout, cfg);
    let tasks = Tasks::new(cfg)?;
    let slots = (0..cfg.procs)
        .map(|i| EnvSlot::new(i, cfg.seed, &model, &tasks, cfg.frames_per_proc))
        .collect::<Result<Vec<_>>>()?;
    Ok(State {
        model,
        optim,
        tasks,
        slots,
        rng: Pcg32::with_stream(split_mix64(cfg.seed), 0x7a1e),
        frames: 0,
        updates: 0,
        recent: VecDeque::new(),
        gpu: None,
    })
}

/// Fields a resumed run may change: how long and how fast it runs, not what it computes.
const RESUMABLE_OVERRIDES: [&str; 4] = ["frames", "threads", "save_interval", "backend"];

/// The fields (sorted) in which `a` and `b` describe different computations: every field
/// but the resumable overrides (frames, threads, save_interval, backend), the model compared
/// pinned (a field left to the preset equals the preset's value written out). Empty: a run of
/// `a` may be resumed, or stand for a run of `b`.
pub fn computation_differences(a: &TrainConfig, b: &TrainConfig) -> Result<Vec<String>> {
    let (a, b) = (
        toml::Table::try_from(a.pinned()).context("config")?,
        toml::Table::try_from(b.pinned()).context("config")?,
    );
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| !RESUMABLE_OVERRIDES.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

fn resume_state(cfg: &TrainConfig, path: &Path) -> Result<(TrainConfig, State)> {
    let ck = checkpoint::load(path)?;
    let mut saved = ck.config.clone();
    let differing = computation_differences(&saved, cfg)?;
    if !differing.is_empty() {
        bail!(
            "--resume: the config differs from the checkpoint's in {} (only frames, threads and \
             save_interval may change; use another --out for a new run)",
            differing.join(", ")
        );
    }
    saved.frames = cfg.frames;
    saved.threads = cfg.threads;
    saved.save_interval = cfg.save_interval;
    saved.backend = cfg.backend;
    let mut tasks = Tasks::new(&saved)?;
    tasks.restore(&ck.meta.tasks)?;
    let model = ck.model;
    let sl = state_len(model.layout.dims());
    let mut slots = Vec::with_capacity(saved.procs);
    for (i, snap) in ck.meta.envs.iter().enumerate() {
        let mut slot = EnvSlot::new(i, saved.seed, &model, &tasks, saved.frames_per_proc)?;
        slot.restore(snap, &ck.env_states[i * sl..(i + 1) * sl], &tasks)
            .with_context(|| format!("restoring env {i}"))?;
        slots.push(slot);
    }
    let recent = ck
        .meta
        .recent
        .iter()
        .map(|e| EpisodeRecord {
            level: e.level,
            ret: f64::from_bits(e.ret_bits),
            len: e.len,
            success: e.success,
        })
        .collect();
    let state = State {
        model,
        optim: ck.optim,
        tasks,
        slots,
        rng: Pcg32::from_parts(ck.meta.trainer_rng.0, ck.meta.trainer_rng.1),
        frames: ck.meta.frames,
        updates: ck.meta.updates,
        recent,
        gpu: None,
    };
    Ok((saved, state))
}

fn save(cfg: &TrainConfig, st: &State, path: &Path) -> Result<()> {
    // The thread count is how the run was computed, not what: leave it out of the checkpoint
    // so checkpoints are byte-identical across machines.
    let saved = TrainConfig {
        threads: 0,
        ..cfg.clone()
    };
    let meta = CheckpointMeta {
        format_version: FORMAT_VERSION,
        config: saved.to_saved_toml()?,
        frames: st.frames,
        updates: st.updates,
        adam_fast_t: st.optim.fast.t,
        adam_slow_t: st.optim.slow.t,
        trainer_rng: st.rng.to_parts(),
        tasks: st.tasks.state(),
        envs: st.slots.iter().map(EnvSlot::snapshot).collect(),
        recent: st
            .recent
            .iter()
            .map(|e| SavedEpisode {
                level: e.level,
                ret_bits: e.ret.to_bits(),
                len: e.len,
                success: e.success,
            })
            .collect(),
        crc32: 0,
    };
    let states: Vec<f32> = st.slots.iter().flat_map(|s| s.state.clone()).collect();
    let bytes = checkpoint::to_bytes_checkpoint(&meta, &st.model, &st.optim, &states, cfg.procs)?;
    checkpoint::write_atomic(path, &bytes)
}

/// Success rate, mean return and mean length of the episodes in the statistics window.
fn window_stats(recent: &VecDeque<EpisodeRecord>) -> (f64, f64, f64) {
    if recent.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = recent.len() as f64;
    let succ = recent.iter().filter(|e| e.success).count() as f64 / n;
    let ret = recent.iter().map(|e| e.ret).sum::<f64>() / n;
    let len = recent.iter().map(|e| f64::from(e.len)).sum::<f64>() / n;
    (succ, ret, len)
}

/// Population standard deviation of the returns in the statistics window (0 when empty).
fn window_return_std(recent: &VecDeque<EpisodeRecord>) -> f64 {
    if recent.is_empty() {
        return 0.0;
    }
    let n = recent.len() as f64;
    let mean = recent.iter().map(|e| e.ret).sum::<f64>() / n;
    (recent.iter().map(|e| (e.ret - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Root mean square and largest magnitude of the memory states the rollout started its steps
/// from (every env, every step; RIM modules' `h`, plus `c` for LSTM cells and the LSTM): a
/// state that grows without bound shows here before its gradients explode.
fn memory_state_size(slots: &[EnvSlot]) -> (f64, f64) {
    let (mut sq, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
    for x in slots.iter().flat_map(|s| &s.buf.states) {
        let x = f64::from(*x);
        sq += x * x;
        max = max.max(x.abs());
        n += 1;
    }
    if n == 0 {
        (f64::NAN, f64::NAN)
    } else {
        ((sq / n as f64).sqrt(), max)
    }
}

/// CleanRL's explained variance of the rollout's return targets by the acting policy's
/// values: `1 - Var(ret - value) / Var(ret)` over every step of every env (NaN when the
/// targets do not vary). Computed in f64, in slot order: deterministic.
fn explained_variance(slots: &[EnvSlot]) -> f64 {
    let pairs = || {
        slots.iter().flat_map(|s| {
            s.buf
                .value
                .iter()
                .zip(&s.buf.ret)
                .map(|(&v, &r)| (f64::from(r), f64::from(r) - f64::from(v)))
        })
    };
    let n = pairs().count() as f64;
    if n == 0.0 {
        return f64::NAN;
    }
    let (mean_y, mean_d) = pairs().fold((0.0, 0.0), |(a, b), (y, d)| (a + y / n, b + d / n));
    let (var_y, var_d) = pairs().fold((0.0, 0.0), |(a, b), (y, d)| {
        (a + (y - mean_y).powi(2) / n, b + (d - mean_d).powi(2) / n)
    });
    if var_y == 0.0 {
        return f64::NAN;
    }
    1.0 - var_d / var_y
}

/// One rollout in every env, then GAE over each env's buffer.
fn collect_rollout(cfg: &TrainConfig, st: &mut State, threads: usize) -> Result<()> {
    let inputs = rollout::RolloutInputs {
        model: &st.model,
        tasks: &st.tasks,
        reward_scale: cfg.reward_scale as f32,
        threads,
    };
    match st.gpu.as_mut() {
        Some(gpu) => gpu.collect(&mut st.slots, &inputs)?,
        None => rollout::collect(&mut st.slots, &inputs)?,
    }
    for slot in &mut st.slots {
        rollout::gae(&mut slot.buf, cfg.gamma as f32, cfg.gae_lambda as f32);
    }
    Ok(())
}

/// Every gradient pass and optimiser step of one update, on the collected rollout. Steps with a
/// non-finite loss or gradient are skipped (CPU backend); an update that leaves a non-finite
/// parameter or Adam moment behind (either backend) is undone. Both count against `guard`.
fn learn(
    cfg: &TrainConfig,
    st: &mut State,
    threads: usize,
    grads: &mut Grads,
    guard: &mut DivergenceGuard,
) -> Result<update::UpdateStats> {
    if cfg.lr_anneal {
        let frac = 1.0 - (st.frames as f64 / cfg.frames.max(1) as f64).min(1.0);
        st.optim.slow.lr = cfg.lr * frac;
        st.optim.fast.lr = cfg.fast_lr * frac;
    }
    let before = (st.model.params.clone(), st.optim.clone());
    let us = match st.gpu.as_mut() {
        Some(gpu) => gpu.learn(cfg, &mut st.model, &mut st.optim, &st.slots, &mut st.rng)?,
        None => update::train_on_rollout(
            cfg,
            &mut st.model,
            &mut st.optim,
            &st.slots,
            &mut st.rng,
            threads,
            grads,
            guard,
        )?,
    };
    let bad = [
        ("parameter", &st.model.params),
        ("Adam first moment", &st.optim.m),
        ("Adam second moment", &st.optim.v),
    ]
    .into_iter()
    .find_map(|(what, v)| guard::first_non_finite(v).map(|(g, i)| (what, g, i)));
    if let Some((what, g, i)) = bad {
        (st.model.params, st.optim) = before;
        guard.skip(
            us.steps.max(1),
            &format!(
                "update {} left {what} {i} of the {} group non-finite; update undone",
                st.updates + 1,
                g.name()
            ),
        )?;
        return Ok(update::UpdateStats {
            skipped: us.steps + us.skipped,
            ..update::UpdateStats::default()
        });
    }
    Ok(us)
}

/// The `wall_s` of the last log line that has one (0 when none does).
fn last_wall_s(log: &[serde_json::Value]) -> f64 {
    log.iter()
        .rev()
        .find_map(|v| {
            v.get("wall_s")?
                .as_f64()
                .filter(|w| w.is_finite() && *w >= 0.0)
        })
        .unwrap_or(0.0)
}

/// Keep the log lines of updates `<= updates` (a resumed run rewrites what follows). Lines that
/// are not valid UTF-8 or not a log line (a torn last line after a crash, a hand edit) are
/// never dropped silently: they are appended to `PATH.rejected` and reported with their line
/// numbers; every valid line up to the checkpoint is kept. A CSV (`header` given) whose header
/// is another version's is moved aside whole and started again.
fn cut_log(path: &Path, updates: u64, header: Option<&str>) -> Result<()> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Some(h) = header {
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        if first.starts_with(b"update,") && first != h.as_bytes() {
            // A CSV of another version's columns: kept whole beside the new one, which starts
            // with this version's header (train.jsonl keeps every line in either case).
            let aside = aside_path(path, "old-columns");
            fs::rename(path, &aside)
                .with_context(|| format!("moving {} to {}", path.display(), aside.display()))?;
            eprintln!(
                "train: note: {} has the columns of another metarim version; moved to {} (the \
                 new CSV starts at this resume; train.jsonl has every update)",
                path.display(),
                aside.display()
            );
            return checkpoint::write_atomic(path, format!("{h}\n").as_bytes());
        }
    }
    let mut out = String::new();
    let mut rejected: Vec<u8> = Vec::new();
    let mut bad_lines: Vec<usize> = Vec::new();
    let mut later = 0usize;
    let lines = bytes.split(|b| *b == b'\n');
    for (i, raw) in lines.enumerate() {
        if raw.is_empty() {
            continue;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            bad_lines.push(i + 1);
            rejected.extend_from_slice(raw);
            rejected.push(b'\n');
            continue;
        };
        if i == 0 && header == Some(line) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let update = if header.is_some() {
            line.split(',').next().and_then(|u| u.parse::<u64>().ok())
        } else {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("update").and_then(|u| u.as_u64()))
        };
        match update {
            Some(u) if u <= updates => {
                out.push_str(line);
                out.push('\n');
            }
            Some(_) => later += 1,
            None => {
                bad_lines.push(i + 1);
                rejected.extend_from_slice(raw);
                rejected.push(b'\n');
            }
        }
    }
    if let Some(h) = header {
        if !out.starts_with(h) {
            out.insert_str(0, &format!("{h}\n"));
        }
    }
    if !bad_lines.is_empty() {
        let aside = rejected_path(path);
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&aside)
            .with_context(|| format!("opening {}", aside.display()))?;
        f.write_all(&rejected)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", aside.display()))?;
        let shown: Vec<String> = bad_lines.iter().take(10).map(|n| n.to_string()).collect();
        eprintln!(
            "train: warning: {} line{} of {} {} not a log line (invalid UTF-8 or unparseable: \
             line {}{}); kept aside in {}",
            bad_lines.len(),
            if bad_lines.len() == 1 { "" } else { "s" },
            path.display(),
            if bad_lines.len() == 1 { "is" } else { "are" },
            shown.join(", "),
            if bad_lines.len() > 10 { ", ..." } else { "" },
            aside.display()
        );
    }
    if later > 0 {
        eprintln!(
            "train: resume: {later} line{} of {} after update {updates} (past the checkpoint) \
             will be computed again",
            if later == 1 { "" } else { "s" },
            path.display()
        );
    }
    checkpoint::write_atomic(path, out.as_bytes())
}

/// Where [`cut_log`] keeps the lines it could not read: `PATH.rejected`.
fn rejected_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rejected");
    PathBuf::from(name)
}

/// `PATH.WHAT`, or `PATH.WHAT-2`, `-3`, ... when taken: a name that keeps what is there.
fn aside_path(path: &Path, what: &str) -> PathBuf {
    (1..)
        .map(|k| {
            let mut name = path.as_os_str().to_owned();
            name.push(if k == 1 {
                format!(".{what}")
            } else {
                format!(".{what}-{k}")
            });
            PathBuf::from(name)
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.with_extension(what))
}

/// The run directory made ready: created and locked, temporary files of a killed process
/// removed, and the run resumed from its checkpoint (logs cut back to it) or started fresh
/// (empty logs); the effective config written to `config.toml`, the TensorBoard event file
/// rebuilt from the log (when asked for). The log is read once, here, after it was cut.
fn open_run(cfg: &TrainConfig, opts: &RunOptions) -> Result<OpenRun> {
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating output directory {}", opts.out.display()))?;
    let lock = rundir::RunDirLock::acquire(&opts.out)?;
    if let Some(previous) = &lock.stale {
        eprintln!(
            "train: note: the previous run in {} ({previous}) ended without releasing its lock \
             (killed or crashed); continuing from what it saved",
            opts.out.display()
        );
    }
    for p in rundir::remove_stale_temp_files(&opts.out)? {
        eprintln!(
            "train: removed {}, a temporary file left by a killed process",
            p.display()
        );
    }
    let ck_path = opts.out.join(CHECKPOINT_FILE);
    let jsonl_path = opts.out.join("train.jsonl");
    let csv_path = opts.out.join("train.csv");
    let (cfg, st) = if ck_path.exists() {
        if !opts.resume {
            bail!(
                "{} already holds a checkpoint; pass --resume to continue it or choose another --out",
                opts.out.display()
            );
        }
        let (cfg, st) = resume_state(cfg, &ck_path)?;
        cut_log(&jsonl_path, st.updates, None)?;
        cut_log(&csv_path, st.updates, Some(&csv_columns(&cfg, &st)))?;
        (cfg, st)
    } else {
        if opts.resume && opts.notes {
            eprintln!(
                "train: no checkpoint in {}; starting a new run",
                opts.out.display()
            );
        }
        let st = fresh_state(cfg)?;
        checkpoint::write_atomic(&jsonl_path, b"")?;
        let header = csv_columns(cfg, &st);
        checkpoint::write_atomic(&csv_path, format!("{header}\n").as_bytes())?;
        (cfg.clone(), st)
    };
    checkpoint::write_atomic(&opts.out.join(CONFIG_FILE), cfg.to_saved_toml()?.as_bytes())?;
    crate::provenance::record(&opts.out, st.frames)?;
    let log = log_values(&jsonl_path)?;
    // The event file is rebuilt from the (cut) log: after a kill, steps past the checkpoint
    // are gone from both, so TensorBoard never shows an update twice or misses one.
    let events = if opts.tensorboard {
        Some(crate::tensorboard::EventWriter::rebuild(
            &opts.out,
            &log,
            unix_now(),
        )?)
    } else {
        None
    };
    Ok(OpenRun {
        lock,
        cfg,
        st,
        log,
        events,
    })
}

/// A run directory made ready by [`open_run`].
struct OpenRun {
    /// Held for the whole run: no other process trains into the directory.
    lock: rundir::RunDirLock,
    /// The config the run continues with.
    cfg: TrainConfig,
    /// Its state.
    st: State,
    /// The lines of `train.jsonl` kept up to the checkpoint, parsed (empty on a fresh run).
    log: Vec<serde_json::Value>,
    /// The TensorBoard event file, when asked for.
    events: Option<crate::tensorboard::EventWriter>,
}

/// The CSV header of `st`'s model trained as `cfg` says (module activity for the RIM's
/// modules, none for the LSTM).
fn csv_columns(cfg: &TrainConfig, st: &State) -> String {
    let modules = if cfg.mode == metarim_core::nn::params::Mode::Lstm {
        0
    } else {
        st.model.layout.dims().rim.n_modules
    };
    csv_header(&update::logged_roles(&st.model.layout), modules)
}

/// Seconds since the Unix epoch (0 on a clock before it).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The lines of a `train.jsonl` (cut by [`cut_log`]: every line parses), as JSON values.
fn log_values(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Counts the episodes the last rollout finished into the task schedule and the rolling
/// window (on a curriculum, only the current level's); returns how many there were.
fn record_episodes(cfg: &TrainConfig, st: &mut State) -> usize {
    let mut episodes = 0;
    for slot in &st.slots {
        for e in &slot.finished {
            episodes += 1;
            st.tasks.record(e.level, e.success);
            if st.tasks.schedule != super::tasks::Schedule::Curriculum
                || e.level == st.tasks.current()
            {
                st.recent.push_back(*e);
            }
            while st.recent.len() > cfg.stats_window {
                st.recent.pop_front();
            }
        }
    }
    episodes
}

/// Train with `cfg`, writing into `opts.out`.
pub fn train(cfg: &TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    cfg.validate()?;
    super::budget::check(cfg)?;
    // The lock is held until this function returns: no other process trains into `out`.
    let OpenRun {
        lock: _lock,
        cfg,
        mut st,
        log,
        events,
    } = open_run(cfg, opts)?;
    let ck_path = opts.out.join(CHECKPOINT_FILE);
    st.gpu = backend::select(&cfg, &st.model, cfg.procs, opts.notes)?;
    let threads = thread_count(cfg.threads, cfg.procs.max(cfg.grad_shards));
    let mut grads = Grads::new(&st.model.layout, &cfg, threads)?;
    let mut sinks = LogSinks::open(&opts.out, events)?;
    let bar = progress_bar(opts.progress, cfg.frames, st.frames);
    let started = Instant::now();
    let start_frames = st.frames;
    let mut last_note = Instant::now();
    let mut updates_here = 0u64;
    let n_modules = st.model.layout.dims().rim.n_modules;
    let is_rim = cfg.mode != metarim_core::nn::params::Mode::Lstm;
    let mut curve = curve_points(&log);
    // A resumed run's clock goes on from its log's last line (the log was cut back to the
    // checkpoint), so `wall_s` is the run's training time across invocations.
    let wall_before = if st.frames > 0 {
        last_wall_s(&log)
    } else {
        0.0
    };
    drop(log);
    let mut guard = DivergenceGuard::new();
    let mut stopped = false;
    while st.frames < cfg.frames {
        // 1. Act, 2. learn (the update), 3. the curriculum, 4. the log line, 5. checkpoint.
        let t0 = Instant::now();
        collect_rollout(&cfg, &mut st, threads)?;
        let episodes = record_episodes(&cfg, &mut st);
        let activity = if is_rim {
            update::module_activity(&st.slots, n_modules)
        } else {
            Vec::new()
        };
        let explained = explained_variance(&st.slots);
        let (memory_rms, memory_max) = memory_state_size(&st.slots);
        let us = learn(&cfg, &mut st, threads, &mut grads, &mut guard)?;
        let fpu = cfg.frames_per_update() as u64;
        st.frames += fpu;
        st.updates += 1;
        updates_here += 1;
        // The line describes the level this update trained on: its window is read before a
        // curriculum switch clears it.
        let level_before = st.tasks.current_name();
        let (success, ret, len) = window_stats(&st.recent);
        let return_std = window_return_std(&st.recent);
        end_curriculum_update(&cfg, &mut st, &ck_path, fpu, bar.as_ref())?;
        let dt = t0.elapsed().as_secs_f64().max(1e-9);
        let line = LogLine {
            update: st.updates,
            frames: st.frames,
            fps: fpu as f64 / dt,
            wall_s: wall_before + started.elapsed().as_secs_f64(),
            level: level_before,
            episodes,
            return_mean: ret,
            return_std,
            success_rate: success,
            episode_len: len,
            entropy: us.per_frame(us.entropy),
            policy_loss: us.per_frame(us.policy_loss),
            value_loss: us.per_frame(us.value_loss),
            approx_kl: us.per_frame(us.approx_kl),
            clip_frac: us.per_frame(us.clipped),
            grad_norm: us.mean_grad_norm(),
            grad_norm_by_role: us.mean_role_norms(&st.model.layout),
            memory_rms,
            memory_max,
            explained_variance: explained,
            lr: st.optim.slow.lr,
            fast_lr: st.optim.fast.lr,
            skipped_steps: us.skipped,
            module_activity: activity,
            unix_s: unix_now(),
        };
        sinks.write(&line)?;
        if let Some(hook) = &opts.on_update {
            (hook.0)(&line);
        }
        curve.push((line.frames, line.success_rate, line.return_mean));
        let msg = format!(
            "fps={:.0} return={:.3} success={:.3} level={}",
            line.fps, ret, success, line.level
        );
        if let Some(b) = &bar {
            b.set_position(st.frames.min(cfg.frames));
            b.set_message(msg);
        } else if opts.progress && last_note.elapsed() > Duration::from_secs(10) {
            let rate = (st.frames - start_frames) as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "train: frames {}/{} update {} {msg} ETA {}",
                st.frames,
                cfg.frames,
                st.updates,
                format_eta(cfg.frames.saturating_sub(st.frames) as f64 / rate)
            );
            last_note = Instant::now();
        }
        stopped =
            opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) && st.frames < cfg.frames;
        let stop_here = opts.stop_after_updates.is_some_and(|n| updates_here >= n) || stopped;
        if st.updates % cfg.save_interval as u64 == 0 || st.frames >= cfg.frames || stop_here {
            save(&cfg, &st, &ck_path)?;
        }
        if stop_here {
            break;
        }
    }
    if st.updates == 0 {
        save(&cfg, &st, &ck_path)?;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    sinks.flush()?;
    let (success, mean_return, _) = window_stats(&st.recent);
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let summary = RunSummary {
        level: st.tasks.current_name(),
        frames: st.frames,
        updates: st.updates,
        success,
        mean_return,
        fps: (st.frames - start_frames) as f64 / secs,
        checkpoint: ck_path,
        stopped,
    };
    write_curve(&opts.out, &cfg, &summary.level, &curve)?;
    Ok(summary)
}

/// The curriculum's end of an update of `frames` frames: when the level is passed, the policy
/// as that level ended is saved beside the checkpoint (rewritten, identically, if a resumed
/// run passes the same switch again), the success window starts afresh and a note says so.
fn end_curriculum_update(
    cfg: &TrainConfig,
    st: &mut State,
    ck_path: &Path,
    frames: u64,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<()> {
    let level_before = st.tasks.current_name();
    let index_before = st.tasks.current();
    if let Some(next) = st.tasks.end_update(frames) {
        save(
            cfg,
            st,
            &ck_path.with_file_name(stage_checkpoint_file(index_before)),
        )?;
        st.recent.clear();
        let msg = format!(
            "train: curriculum: {level_before} passed at {} frames; now {}",
            st.frames, st.tasks.ids[next]
        );
        bar.map_or_else(|| eprintln!("{msg}"), |b| b.println(&msg));
    }
    Ok(())
}

/// Where each update's [`LogLine`] goes: `train.jsonl` (the line in the struct's field
/// order), `train.csv` and, when asked for, the TensorBoard event file (the same values).
struct LogSinks {
    jsonl: fs::File,
    csv: fs::File,
    events: Option<crate::tensorboard::EventWriter>,
}

impl LogSinks {
    /// Opens the run's logs (created, or cut back to the checkpoint, by [`open_run`]) for
    /// appending.
    fn open(out: &Path, events: Option<crate::tensorboard::EventWriter>) -> Result<Self> {
        let append = |name: &str| {
            let path = out.join(name);
            fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        };
        Ok(Self {
            jsonl: append("train.jsonl")?,
            csv: append("train.csv")?,
            events,
        })
    }

    /// One update's line into every log.
    fn write(&mut self, line: &LogLine) -> Result<()> {
        writeln!(self.jsonl, "{}", serde_json::to_string(line)?)?;
        writeln!(self.csv, "{}", line.csv())?;
        if let Some(ev) = self.events.as_mut() {
            ev.append(&serde_json::to_value(line)?)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.jsonl.flush()?;
        self.csv.flush()?;
        Ok(())
    }
}

/// The `(frames, success, return)` points of the log lines already written (lines that do
/// not parse were set aside by [`cut_log`]).
fn curve_points(log: &[serde_json::Value]) -> Vec<(u64, f64, f64)> {
    log.iter()
        .filter_map(|v| {
            Some((
                v.get("frames")?.as_u64()?,
                v.get("success_rate")?.as_f64()?,
                v.get("return_mean")?.as_f64()?,
            ))
        })
        .collect()
}

/// The title of a run's `curve.png`: what was trained (`level`, the level the run ends on, or
/// the mixture or curriculum it belongs to), the mode, the seed and the model preset.
pub fn curve_title(cfg: &TrainConfig, level: &str) -> String {
    let what = match (cfg.levels.len(), cfg.curriculum) {
        (0, _) => level.to_string(),
        (n, true) => format!("curriculum of {n} levels, at {level}"),
        (n, false) => format!("mixture of {n} levels"),
    };
    format!(
        "{what} | {} | seed {} | {} preset",
        cfg.mode.name(),
        cfg.seed,
        cfg.preset
    )
}

/// Write `curve.png` (success and return vs frames, over the rolling window of
/// `cfg.stats_window` episodes) under [`curve_title`].
fn write_curve(
    out: &Path,
    cfg: &TrainConfig,
    level: &str,
    points: &[(u64, f64, f64)],
) -> Result<()> {
    let pts: Vec<crate::plot::CurvePoint> = points
        .iter()
        .map(|(f, s, r)| crate::plot::CurvePoint {
            frames: *f,
            success: *s,
            mean_return: *r,
        })
        .collect();
    crate::plot::write_curve(
        &out.join("curve.png"),
        &curve_title(cfg, level),
        Some(cfg.stats_window),
        &pts,
    )
}

/// A duration for a person: `42s`, `17m05s`, `3h12m`, `2d04h`; `?` when not finite.
pub fn format_eta(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn progress_bar(on: bool, total: u64, pos: u64) -> Option<indicatif::ProgressBar> {
    if !on || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} frames, ETA {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(pos);
    Some(bar)
}

/// Throughput of full training updates (rollout + GAE + every gradient pass and optimiser
/// step), without logs or checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainBench {
    /// Frames per second of each timed update.
    pub update_fps: Vec<f64>,
    /// Seconds spent collecting rollouts (timed updates).
    pub rollout_s: f64,
    /// Seconds spent in gradient passes and optimiser steps (timed updates).
    pub learn_s: f64,
    /// Threads used.
    pub threads: usize,
    /// The backend that ran the policy (`cpu`, or `cuda` and the device).
    pub backend: String,
}

impl TrainBench {
    /// Median frames per second over the timed updates.
    pub fn median_fps(&self) -> f64 {
        let mut v = self.update_fps.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
        }
    }
}

/// Run `warmup` untimed and `updates` timed training updates of `cfg` from a fresh state.
pub fn bench(cfg: &TrainConfig, warmup: usize, updates: usize) -> Result<TrainBench> {
    cfg.validate()?;
    super::budget::check(cfg)?;
    let mut st = fresh_state(cfg)?;
    st.gpu = backend::select(cfg, &st.model, cfg.procs, true)?;
    let threads = thread_count(cfg.threads, cfg.procs.max(cfg.grad_shards));
    let mut grads = Grads::new(&st.model.layout, cfg, threads)?;
    let mut guard = DivergenceGuard::new();
    let mut out = TrainBench {
        update_fps: Vec::with_capacity(updates),
        rollout_s: 0.0,
        learn_s: 0.0,
        threads,
        backend: st
            .gpu
            .as_ref()
            .map_or_else(|| "cpu".to_string(), |g| format!("cuda ({})", g.device)),
    };
    for i in 0..warmup + updates {
        let t0 = Instant::now();
        collect_rollout(cfg, &mut st, threads)?;
        let t1 = Instant::now();
        learn(cfg, &mut st, threads, &mut grads, &mut guard)?;
        let t2 = Instant::now();
        if i >= warmup {
            let total = (t2 - t0).as_secs_f64().max(1e-9);
            out.update_fps.push(cfg.frames_per_update() as f64 / total);
            out.rollout_s += (t1 - t0).as_secs_f64();
            out.learn_s += (t2 - t1).as_secs_f64();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TrainConfig {
        TrainConfig {
            level: "BabyAI-GoToLocalS5N2-v0".into(),
            procs: 4,
            frames_per_proc: 20,
            recurrence: 10,
            batch_size: 20,
            inner_steps: 4,
            outer_steps: 4,
            epochs: 4,
            threads: 1,
            ..TrainConfig::device()
        }
    }

    #[test]
    fn a_poisoned_update_skips_its_steps_then_stops_the_run() {
        for mode in ["meta-rim", "joint"] {
            let cfg = TrainConfig {
                mode: metarim_core::nn::params::Mode::from_name(mode).expect("a mode name"),
                ..small()
            };
            let mut st = fresh_state(&cfg).unwrap();
            let mut grads = Grads::new(&st.model.layout, &cfg, 1).unwrap();
            collect_rollout(&cfg, &mut st, 1).unwrap();
            // A NaN in a head weight after the rollout: every gradient is NaN from here on.
            let n = st.model.params.other.len();
            st.model.params.other[n - 1] = f32::NAN;
            let (params, optim) = (st.model.params.clone(), st.optim.clone());
            let mut guard = DivergenceGuard::silent();
            let e = learn(&cfg, &mut st, 1, &mut grads, &mut guard)
                .unwrap_err()
                .to_string();
            assert!(e.contains("diverged"), "{mode}: {e}");
            assert_eq!(guard.consecutive(), guard::MAX_CONSECUTIVE_SKIPS);
            // Nothing moved: no parameter, moment or step count.
            assert_eq!(st.optim, optim, "{mode}");
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same(&st.model.params.fast, &params.fast), "{mode}");
            assert!(same(&st.model.params.slow, &params.slow), "{mode}");
        }
    }

    #[test]
    fn a_healthy_update_skips_nothing() {
        let cfg = small();
        let mut st = fresh_state(&cfg).unwrap();
        let mut grads = Grads::new(&st.model.layout, &cfg, 1).unwrap();
        collect_rollout(&cfg, &mut st, 1).unwrap();
        let mut guard = DivergenceGuard::new();
        let us = learn(&cfg, &mut st, 1, &mut grads, &mut guard).unwrap();
        assert_eq!((us.skipped, guard.skipped_total), (0, 0));
        assert_eq!(us.steps, cfg.inner_steps + cfg.outer_steps);
    }
}
