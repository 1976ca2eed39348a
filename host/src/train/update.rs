//! Gradients over chunks of the rollout and the optimiser steps: PPO epochs for `joint` and
//! `lstm`, the inner (fast) and outer (slow) loops for `meta-rim` and `reversed`.
//!
//! Invariants:
//! - Gradients do not depend on the thread count. The default batched path ([`super::batched`])
//!   is independent of it by construction; on the `per-chunk` path a minibatch's chunks are
//!   split into `grad_shards` contiguous shards, each shard sums its chunks' gradients in order
//!   into its own buffer, and the shards are added in index order, so threads only decide
//!   which shards run where.
//! - The optimiser step itself ([`clip_adam_step`]) and which groups each phase trains live in
//!   the core ([`metarim_core::nn::split`]), shared with the CUDA backend's CPU reference.
//! - Each optimiser step touches only its groups; the fast group's step touches only the blocks
//!   of modules active somewhere in the minibatch ([`Layout::fast_ranges`]), so modules that
//!   never ran keep their parameters and Adam moments bit-exactly.

use std::collections::BTreeMap;

use anyhow::{anyhow, ensure, Result};
use metarim_core::nn::loss::{PpoCoefs, PpoSample, PpoTerms};
use metarim_core::nn::optim::Adam;
use metarim_core::nn::params::{Group, Layout, Mode, Role};
use metarim_core::nn::policy::{chunk_work_len, ChunkStats, ChunkStep, MAX_MODULES};
use metarim_core::nn::rim::CommGrad;
use metarim_core::nn::split::{clip_adam_step, StepBuffers};
use metarim_core::rng::Pcg32;
use metarim_core::Error;

use super::batched::{BatchedGrads, PassOptions, Seq};
use super::config::{GradPath, MetaSchedule, OtherGroup};
use super::guard::DivergenceGuard;
use super::rollout::EnvSlot;
use super::{GroupVecs, Model, TrainConfig};
use crate::threads::join_all;

/// A run of consecutive steps of one env's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Env index.
    pub proc: usize,
    /// First step.
    pub start: usize,
    /// Steps.
    pub len: usize,
}

impl Chunk {
    /// The chunk's steps as the gradient passes read them (from its env's buffer in `slots`),
    /// and the memory state at its first step.
    pub fn view<'a>(
        &self,
        slots: &'a [EnvSlot],
    ) -> Result<(impl Iterator<Item = ChunkStep<'a, f32>> + 'a, &'a [f32])> {
        let slot = slots
            .get(self.proc)
            .ok_or_else(|| anyhow!("chunk of env {} out of range", self.proc))?;
        let (b, sl) = (&slot.buf, slot.state.len());
        let init = b
            .states
            .get(self.start * sl..(self.start + 1) * sl)
            .ok_or_else(|| anyhow!("chunk at step {} past its env's buffer", self.start))?;
        let steps = (self.start..self.start + self.len).map(move |t| ChunkStep {
            obs: &b.obs[t],
            tokens: &b.tokens[t],
            episode_start: b.episode_start[t],
            sample: PpoSample {
                action: usize::from(b.action[t]),
                old_logprob: b.logprob[t],
                old_value: b.value[t],
                advantage: b.advantage[t],
                ret: b.ret[t],
            },
        });
        Ok((steps, init))
    }
}

/// Every env's buffer cut into chunks of `len` steps (`frames` a multiple of `len`).
pub fn chunks(procs: usize, frames: usize, len: usize) -> Vec<Chunk> {
    let len = len.max(1);
    (0..procs)
        .flat_map(|proc| {
            (0..frames / len).map(move |i| Chunk {
                proc,
                start: i * len,
                len,
            })
        })
        .collect()
}

/// Fisher-Yates shuffle with the trainer's generator.
pub fn shuffle<T>(items: &mut [T], rng: &mut Pcg32) {
    for i in (1..items.len()).rev() {
        let j = rng.below((i + 1) as u32) as usize;
        items.swap(i, j);
    }
}

/// Sums of the loss terms over the gradient passes of one update.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateStats {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Steps (frames) the terms were summed over.
    pub frames: usize,
    /// Sum of the entropies.
    pub entropy: f64,
    /// Sum of the policy losses.
    pub policy_loss: f64,
    /// Sum of the value losses.
    pub value_loss: f64,
    /// Sum of the approximate KLs.
    pub approx_kl: f64,
    /// Sum of the clipped indicators.
    pub clipped: f64,
    /// Sum of the pre-clip gradient norms of each optimiser step.
    pub grad_norm: f64,
    /// Per [`ROLE_COLUMNS`] entry: the sum of that role's gradient norms over the gradient
    /// passes that computed it, and how many did (the CPU trainer; the GPU path leaves them 0).
    pub role_norms: [(f64, usize); ROLE_COLUMNS.len()],
    /// Optimiser steps skipped because their loss or gradient was not finite (not in `steps`
    /// nor in the sums above).
    pub skipped: usize,
}

impl UpdateStats {
    fn add_terms(&mut self, t: &PpoTerms<f32>, frames: usize) {
        self.frames += frames;
        self.entropy += f64::from(t.entropy);
        self.policy_loss += f64::from(t.policy_loss);
        self.value_loss += f64::from(t.value_loss);
        self.approx_kl += f64::from(t.approx_kl);
        self.clipped += f64::from(t.clipped);
    }

    /// Mean of a sum over frames.
    pub fn per_frame(&self, sum: f64) -> f64 {
        if self.frames == 0 {
            0.0
        } else {
            sum / self.frames as f64
        }
    }

    /// Mean gradient norm over the optimiser steps.
    pub fn mean_grad_norm(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.grad_norm / self.steps as f64
        }
    }

    /// Adds the norm of each role's part of `grads` (one pass's gradient, before clipping),
    /// counting only the groups the pass `computed`.
    fn add_role_norms(&mut self, layout: &Layout, grads: &GroupVecs, computed: [bool; 3]) {
        let mut sq = [None::<f64>; ROLE_COLUMNS.len()];
        let bufs = grads.bufs();
        for e in layout.entries() {
            let Some(i) = ROLE_COLUMNS.iter().position(|(r, _)| *r == e.role) else {
                continue;
            };
            if !computed[e.group as usize] {
                continue;
            }
            let part = bufs.group(e.group).get(e.range()).unwrap_or_default();
            let s: f64 = part.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
            *sq[i].get_or_insert(0.0) += s;
        }
        for (acc, s) in self.role_norms.iter_mut().zip(sq) {
            if let Some(s) = s {
                acc.0 += s.sqrt();
                acc.1 += 1;
            }
        }
    }

    /// Mean pre-clip gradient norm of each role of `layout` over the passes that computed it,
    /// by column name ([`ROLE_COLUMNS`]); NaN for a role no pass computed (the GPU path).
    pub fn mean_role_norms(&self, layout: &Layout) -> BTreeMap<&'static str, f64> {
        ROLE_COLUMNS
            .iter()
            .zip(&self.role_norms)
            .filter(|((role, _), _)| layout.role_len(*role) > 0)
            .map(|((_, name), (sum, n))| {
                let mean = if *n > 0 { sum / *n as f64 } else { f64::NAN };
                (*name, mean)
            })
            .collect()
    }
}

/// The names of `layout`'s roles in [`ROLE_COLUMNS`] order: the log's gradient-norm columns.
pub fn logged_roles(layout: &Layout) -> Vec<&'static str> {
    ROLE_COLUMNS
        .iter()
        .filter(|(role, _)| layout.role_len(*role) > 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The parameter roles whose gradient norms the training log reports (`grad_norm_by_role/NAME`),
/// in column order: where a growing or spiking `grad_norm` comes from.
pub const ROLE_COLUMNS: [(Role, &str); 7] = [
    (Role::Encoder, "encoder"),
    (Role::Instruction, "instruction"),
    (Role::InputAttention, "input_attention"),
    (Role::ModuleRnn, "modules"),
    (Role::Communication, "communication"),
    (Role::MemoryLstm, "lstm"),
    (Role::Heads, "heads"),
];

/// Gradient buffers: the batched pass's work space, or one accumulator per shard for the
/// per-chunk path; and the total.
pub struct Grads {
    shards: Vec<GroupVecs>,
    batched: Option<BatchedGrads<f32>>,
    /// The summed gradient of the last [`compute_grads`].
    pub total: GroupVecs,
    /// The `accumulate` schedule's running sum of the outer groups' gradients (empty
    /// buffers otherwise).
    pub slow_sum: GroupVecs,
}

impl Grads {
    /// Buffers for `cfg`'s minibatches of `layout`'s model on `threads` threads: the batched
    /// path (every memory: the LSTM, RIMs with GRU or LSTM cells) unless `cfg.gradients` asks
    /// for the per-chunk one.
    pub fn new(layout: &Layout, cfg: &TrainConfig, threads: usize) -> Result<Grads> {
        let batched = cfg.gradients == GradPath::Batched;
        let per = |len: usize| (cfg.batch_size / len).max(1) * len;
        let rows = per(cfg.recurrence)
            .max(per(cfg.slow_horizon()))
            .min(cfg.frames_per_update().max(1));
        Ok(Grads {
            shards: if batched {
                Vec::new()
            } else {
                vec![GroupVecs::zeros(layout); cfg.grad_shards.max(1)]
            },
            batched: if batched {
                Some(BatchedGrads::new(layout, rows, threads)?)
            } else {
                None
            },
            total: GroupVecs::zeros(layout),
            slow_sum: if layout.mode().is_meta() && cfg.meta_schedule == MetaSchedule::Accumulate {
                GroupVecs::zeros(layout)
            } else {
                GroupVecs::default()
            },
        })
    }

    /// Whether gradients run on the batched path.
    pub fn is_batched(&self) -> bool {
        self.batched.is_some()
    }
}

/// Adds `groups` of `grad` to `sum`; false, adding nothing, when any of them is not finite (one
/// bad pass must not poison the sum). The one rule both backends use for the `accumulate`
/// schedule's sum.
pub fn add_groups(sum: &mut GroupVecs, grad: &GroupVecs, groups: &[Group]) -> bool {
    if !groups
        .iter()
        .all(|g| grad.group(*g).iter().all(|v| v.is_finite()))
    {
        return false;
    }
    for g in groups {
        for (s, v) in sum.group_mut(*g).iter_mut().zip(grad.group(*g)) {
            *s += *v;
        }
    }
    true
}

/// `groups` of `sum` divided by `passes` (the mean of an `accumulate` sum).
pub fn scale_groups(sum: &mut GroupVecs, groups: &[Group], passes: usize) {
    let k = 1.0 / passes.max(1) as f32;
    for g in groups {
        for s in sum.group_mut(*g) {
            *s *= k;
        }
    }
}

/// What one gradient pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassWants {
    /// Groups whose gradients are needed (fast, slow, other); the per-chunk path computes all.
    pub groups: [bool; 3],
    /// The encoders' parameters are the rollout's, so its stored memory inputs are valid.
    pub inputs_fresh: bool,
}

/// The mean PPO loss gradient over `chunks` (each step weighted `1 / total steps`) into
/// `grads.total`; returns the summed terms and which modules were active.
pub fn compute_grads(
    model: &Model,
    slots: &[EnvSlot],
    chunks: &[Chunk],
    coefs: &PpoCoefs<f32>,
    threads: usize,
    grads: &mut Grads,
    wants: PassWants,
) -> Result<ChunkStats<f32>> {
    let total_steps: usize = chunks.iter().map(|c| c.len).sum();
    let scale = 1.0 / total_steps.max(1) as f32;
    if let Some(bg) = grads.batched.as_mut() {
        let layout = &model.layout;
        let sl = slots.first().map_or(0, |s| s.state.len());
        let inp = layout.dims().memory_input();
        let seqs = chunks
            .iter()
            .map(|c| {
                let b = &slots
                    .get(c.proc)
                    .ok_or_else(|| anyhow!("chunk of env {} out of range", c.proc))?
                    .buf;
                let r = c.start..c.start + c.len;
                ensure!(
                    r.end <= b.len(),
                    "chunk past the end of env {}'s buffer",
                    c.proc
                );
                Ok(Seq {
                    obs: &b.obs[r.clone()],
                    tokens: &b.tokens[r.clone()],
                    episode_start: &b.episode_start[r.clone()],
                    samples: &b.samples[r.clone()],
                    init_state: &b.states[c.start * sl..(c.start + 1) * sl],
                    x: Some(&b.x[c.start * inp..r.end * inp]),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let opts = PassOptions {
            coefs: *coefs,
            scale,
            comm: CommGrad::Blocked,
            groups: wants.groups,
            reuse_x: wants.inputs_fresh,
        };
        grads.total.clear();
        return bg.pass(
            layout,
            model.params.bufs(),
            &seqs,
            &opts,
            grads.total.bufs_mut(),
        );
    }
    let n_shards = grads.shards.len().min(chunks.len()).max(1);
    let max_len = chunks.iter().map(|c| c.len).max().unwrap_or(1);
    let shard_chunks: Vec<&[Chunk]> = (0..n_shards)
        .map(|s| &chunks[s * chunks.len() / n_shards..(s + 1) * chunks.len() / n_shards])
        .collect();
    let per = n_shards.div_ceil(threads.max(1)).max(1);
    let results: Vec<Vec<ChunkStats<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = grads.shards[..n_shards]
            .chunks_mut(per)
            .zip(shard_chunks.chunks(per))
            .map(|(bufs, work)| {
                s.spawn(move || -> Result<Vec<ChunkStats<f32>>> {
                    let policy = model.policy()?;
                    let d = model.layout.dims();
                    let mut buf = vec![0.0f32; chunk_work_len(d, max_len)];
                    let mut steps: Vec<ChunkStep<'_, f32>> = Vec::with_capacity(max_len);
                    let mut out = Vec::with_capacity(bufs.len());
                    for (g, list) in bufs.iter_mut().zip(work) {
                        g.clear();
                        let mut acc = ChunkStats::over(0);
                        for c in list.iter() {
                            let st = shard_chunk(
                                &policy, slots, c, coefs, scale, g, &mut buf, &mut steps,
                            )?;
                            acc.accumulate(&st);
                        }
                        out.push(acc);
                    }
                    Ok(out)
                })
            })
            .collect();
        join_all(handles, "gradient")
    })?;
    let mut stats = ChunkStats::over(0);
    for r in results {
        for st in r {
            stats.accumulate(&st);
        }
    }
    grads.total.clear();
    for g in &grads.shards[..n_shards] {
        grads.total.add_assign(g);
    }
    Ok(stats)
}

#[allow(clippy::too_many_arguments)]
fn shard_chunk<'a>(
    policy: &metarim_core::nn::policy::Policy<'_, f32>,
    slots: &'a [EnvSlot],
    c: &Chunk,
    coefs: &PpoCoefs<f32>,
    scale: f32,
    g: &mut GroupVecs,
    work: &mut [f32],
    steps: &mut Vec<ChunkStep<'a, f32>>,
) -> Result<ChunkStats<f32>> {
    let (chunk_steps, init) = c.view(slots)?;
    steps.clear();
    steps.extend(chunk_steps);
    let d = policy.dims();
    let need = chunk_work_len(d, c.len);
    let work = work
        .get_mut(..need)
        .ok_or_else(|| anyhow!("chunk work buffer too small"))?;
    policy
        .chunk_backward(
            steps,
            init,
            coefs,
            scale,
            CommGrad::Blocked,
            g.bufs_mut(),
            work,
        )
        .map_err(|e| anyhow!("backward over a chunk: {e}"))
}

/// Which parameters an optimiser step updates (the split's rules: [`metarim_core::nn::split`]).
pub use metarim_core::nn::split::Phase;

/// Two Adam optimisers (fast and slow learning rates, separate step counts) and the moments
/// of every group.
#[derive(Clone, Debug, PartialEq)]
pub struct Optim {
    /// The fast group's optimiser (inner loop).
    pub fast: Adam,
    /// The slow group's optimiser (outer loop; every group in plain PPO).
    pub slow: Adam,
    /// First moments.
    pub m: GroupVecs,
    /// Second moments.
    pub v: GroupVecs,
}

impl Optim {
    /// Fresh optimisers for `cfg`.
    pub fn new(layout: &Layout, cfg: &TrainConfig) -> Optim {
        let adam = |lr| Adam::new(lr, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps);
        Optim {
            fast: adam(cfg.fast_lr),
            slow: adam(cfg.lr),
            m: GroupVecs::zeros(layout),
            v: GroupVecs::zeros(layout),
        }
    }

    /// One step of `phase` ([`clip_adam_step`]): clip the gradient of its groups to
    /// `max_norm` (global norm over those groups), then Adam with the phase's optimiser.
    /// Returns the pre-clip norm, or `None` when that norm is not finite: then the step is
    /// skipped and nothing (parameters, moments, step count) changes.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        layout: &Layout,
        params: &mut GroupVecs,
        grads: &mut GroupVecs,
        phase: Phase,
        other: OtherGroup,
        active: &[bool],
        max_norm: f32,
    ) -> Result<Option<f32>> {
        let (opt, which) = if phase == Phase::Inner {
            (&mut self.fast, "fast")
        } else {
            (&mut self.slow, "slow")
        };
        let t = opt.t;
        let bufs = StepBuffers {
            params: params.bufs_mut(),
            grads: grads.bufs_mut(),
            m: self.m.bufs_mut(),
            v: self.v.bufs_mut(),
        };
        clip_adam_step(layout, bufs, opt, phase, other, active, max_norm).map_err(|e| match e {
            Error::StepCountOverflow => {
                anyhow!("the {which} optimiser's Adam step count overflowed (it is {t})")
            }
            e => anyhow!("{phase:?} optimiser step: {e}"),
        })
    }
}

/// Active-module flags from a chunk-stats activity count.
pub fn active_flags(stats: &ChunkStats<f32>, n: usize) -> Vec<bool> {
    stats.active_steps[..n.min(MAX_MODULES)]
        .iter()
        .map(|c| *c > 0)
        .collect()
}

/// Walks shuffled minibatches of a chunk list, reshuffling at the start of every pass.
#[derive(Default)]
struct Cursor {
    next: Option<usize>,
}

impl Cursor {
    fn next_batch(&mut self, items: &mut [Chunk], per: usize, rng: &mut Pcg32) -> Vec<Chunk> {
        let start = match self.next {
            Some(n) if n < items.len() => n,
            _ => {
                shuffle(items, rng);
                0
            }
        };
        let end = (start + per).min(items.len());
        self.next = Some(end);
        items[start..end].to_vec()
    }
}

/// What the gradient of one pass of the schedule is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPlan {
    /// One optimiser step of this phase (the pass computes that phase's groups only).
    Single(Phase),
    /// The `accumulate` schedule: the pass computes every group; the inner step on its
    /// gradient now, the outer groups' gradient added to the running sum, and when `flush`
    /// the outer step on the mean of the sum (which then restarts).
    InnerThenAccumulate {
        /// Take the outer step after this pass.
        flush: bool,
    },
}

/// The minibatches of one update, in order, with what each pass's gradient is for. Plain modes
/// and the meta modes' `accumulate` schedule: `epochs` PPO epochs over shuffled minibatches of
/// `recurrence`-step chunks, the meta modes flushing the slow sum every `slowness` passes and
/// after the last. `phases`: `inner_steps` fast steps on such minibatches, cycling through the
/// rollout, then `outer_steps` slow steps on minibatches of `recurrence x slowness`-step chunks.
/// Both meta schedules are first-order: no step is differentiated through another. Every
/// backend follows this, so all draw the same shuffles.
pub fn schedule(
    cfg: &TrainConfig,
    mode: Mode,
    procs: usize,
    rng: &mut Pcg32,
) -> Vec<(Vec<Chunk>, StepPlan)> {
    let frames = cfg.frames_per_proc;
    let per_batch = (cfg.batch_size / cfg.recurrence).max(1);
    let mut short = chunks(procs, frames, cfg.recurrence);
    let mut out = Vec::new();
    let phases = mode.is_meta() && cfg.meta_schedule == MetaSchedule::Phases;
    if !phases {
        for _ in 0..cfg.epochs {
            shuffle(&mut short, rng);
            for batch in short.chunks(per_batch) {
                let plan = if mode.is_meta() {
                    StepPlan::InnerThenAccumulate { flush: false }
                } else {
                    StepPlan::Single(Phase::All)
                };
                out.push((batch.to_vec(), plan));
            }
        }
        let every = cfg.slowness.max(1);
        let n = out.len();
        for (i, (_, plan)) in out.iter_mut().enumerate() {
            if let StepPlan::InnerThenAccumulate { flush } = plan {
                *flush = (i + 1) % every == 0 || i + 1 == n;
            }
        }
        return out;
    }
    let mut cursor = Cursor::default();
    for _ in 0..cfg.inner_steps {
        out.push((
            cursor.next_batch(&mut short, per_batch, rng),
            StepPlan::Single(Phase::Inner),
        ));
    }
    let mut long = chunks(procs, frames, cfg.slow_horizon());
    let per_long = (cfg.batch_size / cfg.slow_horizon()).max(1);
    let mut cursor = Cursor::default();
    for _ in 0..cfg.outer_steps {
        out.push((
            cursor.next_batch(&mut long, per_long, rng),
            StepPlan::Single(Phase::Outer),
        ));
    }
    out
}

/// Everything one training update does after the rollout: PPO epochs (plain modes) or the
/// inner and outer loops (meta modes). Returns the statistics of its gradient passes. A step
/// whose loss or gradient is not finite is skipped and reported to `guard`, which ends the
/// update with an error after too many in a row.
#[allow(clippy::too_many_arguments)]
pub fn train_on_rollout(
    cfg: &TrainConfig,
    model: &mut Model,
    optim: &mut Optim,
    slots: &[EnvSlot],
    rng: &mut Pcg32,
    threads: usize,
    grads: &mut Grads,
    guard: &mut DivergenceGuard,
) -> Result<UpdateStats> {
    let mode = model.layout.mode();
    let coefs = cfg.ppo_coefs();
    let n_modules = model.layout.dims().rim.n_modules;
    let other = cfg.other_group;
    let max_norm = cfg.max_grad_norm as f32;
    let mut stats = UpdateStats::default();
    // The encoders (the `Other` group) keep the rollout's parameters until a step updates them.
    let mut inputs_fresh = true;
    // Passes summed into `grads.slow_sum` since the last outer step (`accumulate`).
    let mut summed = 0usize;
    let outer_groups = mode.phase_groups(Phase::Outer, other);
    for (batch, plan) in schedule(cfg, mode, slots.len(), rng) {
        let (phase, accumulate, flush) = match plan {
            StepPlan::Single(p) => (p, false, false),
            StepPlan::InnerThenAccumulate { flush } => (Phase::Inner, true, flush),
        };
        let groups = mode.phase_groups(phase, other);
        let mut want = [false; 3];
        for g in &groups {
            want[*g as usize] = true;
        }
        if accumulate {
            for g in &outer_groups {
                want[*g as usize] = true;
            }
        }
        let wants = PassWants {
            groups: want,
            inputs_fresh,
        };
        let st = compute_grads(model, slots, &batch, &coefs, threads, grads, wants)?;
        let active = active_flags(&st, n_modules);
        if st.sum.loss.is_finite() {
            stats.add_role_norms(&model.layout, &grads.total, want);
            // Summed before the inner step, which clips its own groups in place.
            if accumulate && add_groups(&mut grads.slow_sum, &grads.total, &outer_groups) {
                summed += 1;
            }
            let step = optim.step(
                &model.layout,
                &mut model.params,
                &mut grads.total,
                phase,
                other,
                &active,
                max_norm,
            )?;
            if let Some(norm) = step {
                guard.step_taken();
                if groups.contains(&Group::Other) {
                    inputs_fresh = false;
                }
                stats.add_terms(&st.sum, st.steps);
                stats.steps += 1;
                stats.grad_norm += f64::from(norm);
            } else {
                stats.skipped += 1;
                guard.skip(1, &format!("{phase:?} step: non-finite gradient"))?;
            }
        } else {
            stats.skipped += 1;
            guard.skip(1, &format!("{phase:?} step: loss {}", st.sum.loss))?;
        }
        if flush && summed > 0 {
            scale_groups(&mut grads.slow_sum, &outer_groups, summed);
            summed = 0;
            let step = optim.step(
                &model.layout,
                &mut model.params,
                &mut grads.slow_sum,
                Phase::Outer,
                other,
                &active,
                max_norm,
            )?;
            grads.slow_sum.clear();
            if let Some(norm) = step {
                guard.step_taken();
                if outer_groups.contains(&Group::Other) {
                    inputs_fresh = false;
                }
                stats.steps += 1;
                stats.grad_norm += f64::from(norm);
            } else {
                stats.skipped += 1;
                guard.skip(1, "Outer step: non-finite mean gradient")?;
            }
        }
    }
    Ok(stats)
}

/// Fraction of the rollout's steps in which each module was active.
pub fn module_activity(slots: &[EnvSlot], n: usize) -> Vec<f64> {
    let mut counts = vec![0u64; n];
    let mut total = 0u64;
    for s in slots {
        for m in &s.buf.active {
            total += 1;
            for (i, c) in counts.iter_mut().enumerate() {
                *c += u64::from((m >> i) & 1);
            }
        }
    }
    counts
        .iter()
        .map(|c| *c as f64 / total.max(1) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rollout of `model` over `tasks` on `threads` threads, rewards scaled by 20.
    fn rollout_inputs<'a>(
        model: &'a super::super::Model,
        tasks: &'a super::super::tasks::Tasks,
        threads: usize,
    ) -> super::super::rollout::RolloutInputs<'a> {
        super::super::rollout::RolloutInputs {
            model,
            tasks,
            reward_scale: 20.0,
            threads,
        }
    }

    #[test]
    fn chunks_cover_every_step_once() {
        let c = chunks(3, 40, 20);
        assert_eq!(c.len(), 6);
        assert_eq!(
            c[1],
            Chunk {
                proc: 0,
                start: 20,
                len: 20
            }
        );
        assert_eq!(
            c[5],
            Chunk {
                proc: 2,
                start: 20,
                len: 20
            }
        );
    }

    fn tiny_model_and_optim() -> (Model, Optim) {
        let cfg = TrainConfig::device();
        let layout = Layout::new(&cfg.dims().unwrap(), cfg.mode).unwrap();
        let model = Model::init(layout, 7).unwrap();
        let optim = Optim::new(&model.layout, &cfg);
        (model, optim)
    }

    /// One optimiser step of `phase` on `grads` with every module active.
    fn step(
        model: &mut Model,
        optim: &mut Optim,
        grads: &mut GroupVecs,
        phase: Phase,
    ) -> Result<Option<f32>> {
        let active = vec![true; model.layout.dims().rim.n_modules];
        optim.step(
            &model.layout,
            &mut model.params,
            grads,
            phase,
            OtherGroup::Slow,
            &active,
            0.5,
        )
    }

    #[test]
    fn a_non_finite_gradient_skips_the_step_and_changes_nothing() {
        let (mut model, mut optim) = tiny_model_and_optim();
        let mut grads = GroupVecs::zeros(&model.layout);
        for g in Group::ALL {
            grads.group_mut(g).fill(0.01);
        }
        grads.slow[5] = f32::NAN;
        let (params, before) = (model.params.clone(), optim.clone());
        let norm = step(&mut model, &mut optim, &mut grads, Phase::Outer).unwrap();
        assert_eq!(norm, None);
        assert_eq!(model.params, params);
        assert_eq!(optim, before);
        // A finite gradient goes through.
        grads.slow[5] = 0.01;
        let norm = step(&mut model, &mut optim, &mut grads, Phase::Outer).unwrap();
        assert!(norm.is_some_and(f32::is_finite));
        assert_eq!(optim.slow.t, 1);
        assert_ne!(model.params, params);
    }

    #[test]
    fn an_overflowing_adam_step_count_is_named() {
        let (mut model, mut optim) = tiny_model_and_optim();
        let mut grads = GroupVecs::zeros(&model.layout);
        optim.fast.t = u64::MAX;
        let e = step(&mut model, &mut optim, &mut grads, Phase::Inner)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fast") && e.contains("step count overflowed"),
            "{e}"
        );
    }

    #[test]
    fn the_accumulate_schedule_flushes_every_slowness_passes_and_at_the_end() {
        let cfg = TrainConfig {
            procs: 5,
            frames_per_proc: 8,
            recurrence: 4,
            batch_size: 16,
            epochs: 3,
            slowness: 4,
            meta_schedule: MetaSchedule::Accumulate,
            ..TrainConfig::device()
        };
        cfg.validate().unwrap();
        let plan = schedule(&cfg, Mode::MetaRim, cfg.procs, &mut Pcg32::new(1));
        // 10 chunks of 4 steps, 4 per minibatch: 3 minibatches per epoch, 9 passes.
        assert_eq!(plan.len(), 9);
        let flushes: Vec<usize> = plan
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| *p == StepPlan::InnerThenAccumulate { flush: true })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(flushes, [3, 7, 8]);
        // Each epoch covers every chunk once, as in `joint`, and draws the same shuffles.
        let joint = schedule(&cfg, Mode::Joint, cfg.procs, &mut Pcg32::new(1));
        for ((a, pa), (b, pb)) in plan.iter().zip(&joint) {
            assert_eq!(a, b);
            assert_eq!(*pb, StepPlan::Single(Phase::All));
            assert!(matches!(pa, StepPlan::InnerThenAccumulate { .. }));
        }
        for epoch in plan.chunks(3) {
            let mut seen: Vec<Chunk> = epoch.iter().flat_map(|(b, _)| b.clone()).collect();
            seen.sort_by_key(|c| (c.proc, c.start));
            assert_eq!(seen, chunks(cfg.procs, 8, 4));
        }
        // The phases schedule is unchanged by it.
        let phases = TrainConfig {
            meta_schedule: MetaSchedule::Phases,
            slowness: 2,
            ..cfg.clone()
        };
        let plan = schedule(&phases, Mode::MetaRim, cfg.procs, &mut Pcg32::new(1));
        assert_eq!(plan.len(), phases.inner_steps + phases.outer_steps);
        assert!(plan[..phases.inner_steps]
            .iter()
            .all(|(b, p)| *p == StepPlan::Single(Phase::Inner) && b[0].len == 4));
        assert!(plan[phases.inner_steps..]
            .iter()
            .all(|(b, p)| *p == StepPlan::Single(Phase::Outer) && b[0].len == 8));
    }

    #[test]
    fn an_accumulate_update_steps_fast_every_pass_and_slow_on_the_mean() {
        use super::super::rollout::{collect, gae};
        use super::super::tasks::Tasks;
        for (mode, other) in [
            ("meta-rim", OtherGroup::Fast),
            ("meta-rim", OtherGroup::Slow),
            ("reversed", OtherGroup::Fast),
        ] {
            let cfg = TrainConfig {
                mode: metarim_core::nn::params::Mode::from_name(mode).expect("a mode name"),
                other_group: other,
                meta_schedule: MetaSchedule::Accumulate,
                procs: 4,
                frames_per_proc: 8,
                recurrence: 4,
                batch_size: 8,
                epochs: 2,
                slowness: 3,
                ..TrainConfig::device()
            };
            cfg.validate().unwrap();
            let model = super::super::run::initial_model(&cfg).unwrap();
            let tasks = Tasks::new(&cfg).unwrap();
            let mut slots: Vec<EnvSlot> = (0..cfg.procs)
                .map(|i| EnvSlot::new(i, 3, &model, &tasks, cfg.frames_per_proc).unwrap())
                .collect();
            collect(&mut slots, &rollout_inputs(&model, &tasks, 1)).unwrap();
            for s in &mut slots {
                gae(&mut s.buf, 0.99, 0.99);
            }
            let mut grads = Grads::new(&model.layout, &cfg, 1).unwrap();
            // One update from `model` with a fresh optimiser and the same draws each time.
            let update = |grads: &mut Grads| {
                let (mut m, mut optim) = (model.clone(), Optim::new(&model.layout, &cfg));
                let mut guard = DivergenceGuard::new();
                let mut rng = Pcg32::new(2);
                let st = train_on_rollout(
                    &cfg, &mut m, &mut optim, &slots, &mut rng, 1, grads, &mut guard,
                );
                (m, optim, st.unwrap())
            };
            let (after, optim, st) = update(&mut grads);
            // 8 chunks, 2 per minibatch: 4 passes per epoch, 8 in all; the slow sum is
            // flushed after passes 3, 6 and 8.
            assert_eq!((optim.fast.t, optim.slow.t), (8, 3), "{mode} {other:?}");
            assert_eq!(st.steps, 11);
            assert_eq!(st.frames, 2 * cfg.frames_per_update());
            for g in Group::ALL {
                assert_ne!(
                    after.params.group(g),
                    model.params.group(g),
                    "{mode} {other:?}: group {} did not learn",
                    g.name()
                );
            }
            assert!(grads.slow_sum.slow.iter().all(|v| *v == 0.0));
            // Bit-identical when repeated.
            let (again, _, _) = update(&mut grads);
            assert_eq!(again.params, after.params);
        }
    }

    #[test]
    fn a_non_finite_gradient_is_left_out_of_the_slow_sum() {
        let (model, _) = tiny_model_and_optim();
        let mut sum = GroupVecs::zeros(&model.layout);
        let mut g = GroupVecs::zeros(&model.layout);
        g.slow.fill(2.0);
        g.other.fill(4.0);
        let groups = [Group::Slow, Group::Other];
        assert!(add_groups(&mut sum, &g, &groups));
        g.other[3] = f32::INFINITY;
        assert!(!add_groups(&mut sum, &g, &groups));
        g.other[3] = 4.0;
        g.fast.fill(f32::NAN); // not a summed group: ignored
        assert!(add_groups(&mut sum, &g, &groups));
        scale_groups(&mut sum, &groups, 2);
        assert!(sum.slow.iter().all(|v| *v == 2.0));
        assert!(sum.other.iter().all(|v| *v == 4.0));
        assert!(sum.fast.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn rims_with_lstm_cells_take_the_batched_path_and_match_per_chunk() {
        use super::super::rollout::{collect, gae};
        use super::super::tasks::Tasks;
        use metarim_core::nn::dims::{CellKind, TINY};
        let d = TINY.with_cell(CellKind::Lstm);
        let model = Model::init(Layout::new(&d, Mode::MetaRim).unwrap(), 5).unwrap();
        let (procs, frames, len) = (4, 40, 10);
        let cfg = TrainConfig {
            procs,
            frames_per_proc: frames,
            recurrence: len,
            batch_size: procs * frames,
            ..TrainConfig::device()
        };
        let tasks = Tasks::new(&cfg).unwrap();
        let mut slots: Vec<EnvSlot> = (0..procs)
            .map(|i| EnvSlot::new(i, 3, &model, &tasks, frames).unwrap())
            .collect();
        // Two rollouts: the second's chunks start mid-episode from stored `[h | c]` states.
        for _ in 0..2 {
            collect(&mut slots, &rollout_inputs(&model, &tasks, 2)).unwrap();
        }
        for s in &mut slots {
            gae(&mut s.buf, 0.99, 0.95);
        }
        let coefs = PpoCoefs {
            clip_eps: 0.2,
            value_coef: 0.5,
            entropy_coef: 0.01,
            clip_value: true,
        };
        let wants = PassWants {
            groups: [true; 3],
            inputs_fresh: false,
        };
        let cs = chunks(procs, frames, len);
        let mut batched = Grads::new(&model.layout, &cfg, 2).unwrap();
        assert!(batched.is_batched());
        let per_cfg = TrainConfig {
            gradients: GradPath::PerChunk,
            ..cfg.clone()
        };
        let mut per = Grads::new(&model.layout, &per_cfg, 2).unwrap();
        assert!(!per.is_batched());
        compute_grads(&model, &slots, &cs, &coefs, 2, &mut batched, wants).unwrap();
        compute_grads(&model, &slots, &cs, &coefs, 2, &mut per, wants).unwrap();
        for g in Group::ALL {
            let (a, b) = (batched.total.group(g), per.total.group(g));
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(scale > 0.0 && err <= 1e-4 * scale, "{}: {err:e}", g.name());
        }
    }
}
