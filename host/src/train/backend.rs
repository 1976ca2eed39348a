//! Which backend trains (`backend = "auto" | "cpu" | "cuda"`), and the CUDA backend's rollout
//! and update, which drive `metarim_cuda::engine::CudaPolicy` with the same schedule as the
//! CPU path ([`super::rollout::collect`], [`super::update::train_on_rollout`]).
//!
//! Resolution ([`select`]):
//! - `cpu`: the CPU backend.
//! - `cuda`: a CUDA device must be detected, the kernels must compile and load for it, and a
//!   self-check (one gradient pass on a small minibatch of real episodes against the CPU
//!   reference, within 1e-3 relative) must pass; otherwise an error saying which step failed.
//! - `auto`: `cuda` when all of that works, else the CPU with the reason printed.
//!
//! Invariants of the CUDA path:
//! - Environments stay on the CPU. Each rollout step runs in two halves: while the device
//!   computes one half's forward pass, the CPU samples actions for and steps the other half
//!   (double buffering through the policy's two acting slots).
//! - The rollout buffers, the minibatch schedule (shuffles drawn from the trainer's generator
//!   in the CPU path's order), the optimiser step counts and the learning rates are the CPU
//!   path's; parameters and Adam moments are copied back to the host `Model` / `Optim` after
//!   each update, so checkpoints, evaluation and export work unchanged.
//! - Results are not bit-identical to the CPU backend's (other summation orders, CUDA's math
//!   library); the parity tests bound the difference (docs/GPU.md).

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use metarim_core::env::{Action, Env, Observation, VIEW_CELLS};
use metarim_core::levels::Level;
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::loss::{PpoCoefs, PpoSample};
use metarim_core::nn::params::Group;
use metarim_core::nn::policy::{chunk_work_len, ChunkStep};
use metarim_core::nn::rim::CommGrad;
use metarim_core::rng::Pcg32;
use metarim_cuda::cuda_exec::CudaExec;
use metarim_cuda::engine::{ActInput, CudaPolicy, PassChunk};
use metarim_cuda::exec::Exec;

use super::rollout::{EnvSlot, RolloutInputs};
use super::tasks::Tasks;
use super::update::{
    add_groups, scale_groups, schedule, Chunk, Optim, Phase, StepPlan, UpdateStats,
};
use super::{GroupVecs, Model, TrainConfig};
use crate::threads::for_each_part;

/// Where the policy runs (config field `backend`; in TOML and on the command line by
/// [`BackendChoice::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// The GPU when a CUDA device works, else the CPU, with the reason printed.
    Auto,
    /// The CPU (bit-for-bit deterministic).
    Cpu,
    /// A CUDA GPU; an error when none works.
    Cuda,
}

impl BackendChoice {
    /// Every choice, in the order the help lists them.
    pub const ALL: [BackendChoice; 3] =
        [BackendChoice::Auto, BackendChoice::Cpu, BackendChoice::Cuda];

    /// The choice's name (`auto`, `cpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
        }
    }

    /// The choice named `name`, or an error listing the names.
    pub fn from_name(name: &str) -> Result<BackendChoice> {
        BackendChoice::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| anyhow!("unknown backend {name:?} (auto, cpu or cuda)"))
    }
}

/// Tolerance of the start-up self-check (relative, per tensor, as the parity tests measure it).
const SELF_CHECK_TOL: f64 = 1e-3;

/// The CUDA trainer: the device policy and what the rollout needs.
#[derive(Debug)]
pub struct Gpu {
    policy: CudaPolicy,
    /// The device, for messages.
    pub device: String,
}

/// The chosen backend: `None` for the CPU. With `notes`, prints the choice and its reason to
/// stderr.
pub fn select(cfg: &TrainConfig, model: &Model, n_envs: usize, notes: bool) -> Result<Option<Gpu>> {
    if cfg.backend == BackendChoice::Cpu {
        if notes {
            eprintln!("train: backend cpu (as configured)");
        }
        return Ok(None);
    }
    match open(model, n_envs) {
        Ok(gpu) => {
            if notes {
                eprintln!(
                    "train: backend cuda on {} (kernels compiled, self-check passed)",
                    gpu.device
                );
            }
            Ok(Some(gpu))
        }
        Err(reason) if cfg.backend == BackendChoice::Auto => {
            if notes {
                eprintln!("train: backend cpu (auto: {reason:#})");
            }
            Ok(None)
        }
        Err(reason) => Err(reason.context("backend cuda")),
    }
}

/// Detect a device, load the kernels for `model`, run the self-check, prepare acting.
fn open(model: &Model, n_envs: usize) -> Result<Gpu> {
    let dev = match metarim_cuda::detect(0) {
        metarim_cuda::Backend::Cuda(dev) => dev,
        metarim_cuda::Backend::Unavailable(reason) => bail!("no usable CUDA device: {reason}"),
    };
    let exec: Arc<dyn Exec> =
        Arc::new(CudaExec::new(&dev).map_err(|e| anyhow!("CUDA device {}: {e}", dev.name))?);
    Gpu::with_exec(exec, model, n_envs)
}

impl Gpu {
    /// The GPU backend on any [`Exec`] (a CUDA device, or the CPU emulator in tests): load the
    /// kernels for `model`, run the self-check, prepare acting for `n_envs` environments.
    pub fn with_exec(exec: Arc<dyn Exec>, model: &Model, n_envs: usize) -> Result<Gpu> {
        let device = exec.describe();
        let mut policy = CudaPolicy::new(exec, &model.layout, model.params.bufs())
            .map_err(|e| anyhow!("GPU kernels unavailable on {device}: {e}"))?;
        self_check(&mut policy, model).map_err(|e| anyhow!("{device}: {e:#}"))?;
        policy
            .actor_init(n_envs)
            .map_err(|e| anyhow!("preparing {n_envs} environments on {device}: {e}"))?;
        Ok(Gpu { policy, device })
    }
}

/// Largest error of `got` against `want` relative to max(|want_i|, 1e-2 max |want|).
fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let floor = (1e-2 * scale).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(a, b)| {
            let (a, b) = (f64::from(*a), f64::from(*b));
            if a.is_finite() && b.is_finite() {
                (a - b).abs() / b.abs().max(floor)
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

/// One gradient pass on the device against `Policy::chunk_backward` on 2 chunks of 6 steps of
/// random-action GoToLocal episodes (an episode starting inside one of them).
fn self_check(policy: &mut CudaPolicy, model: &Model) -> Result<()> {
    let layout = &model.layout;
    let d = *layout.dims();
    let sl = metarim_core::nn::policy::state_len(&d);
    let mut rng = Pcg32::new(0x5e1f);
    let level = Level::from_id("BabyAI-GoToLocal-v0").map_err(|e| anyhow!("{e}"))?;
    let mut env = Env::new(8, 8).map_err(|e| anyhow!("{e}"))?;
    let mut obs: Vec<Vec<Observation>> = Vec::new();
    let mut toks: Vec<Vec<[u16; MAX_TOKENS]>> = Vec::new();
    let mut starts: Vec<Vec<bool>> = Vec::new();
    let mut samples: Vec<Vec<PpoSample<f32>>> = Vec::new();
    for c in 0..2 {
        let (mut o, mut tk, mut st, mut sa) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut tokens = [0u16; MAX_TOKENS];
        for t in 0..6 {
            let start = t == 0 || (c == 1 && t == 3);
            if start {
                level
                    .reset(&mut env, rng.next_u64())
                    .map_err(|e| anyhow!("{e}"))?;
                tokens = [0; MAX_TOKENS];
                tokenize(env.mission.as_str(), &mut tokens).map_err(|e| anyhow!("{e}"))?;
            }
            o.push(env.observation());
            tk.push(tokens);
            st.push(start && t > 0);
            let action = rng.below(d.n_actions as u32) as usize;
            sa.push(PpoSample {
                action,
                old_logprob: -1.9 + (rng.gen_f32() - 0.5) * 0.4,
                old_value: rng.gen_f32() - 0.5,
                advantage: rng.gen_f32() * 2.0 - 1.0,
                ret: rng.gen_f32() * 2.0 - 1.0,
            });
            env.step(Action::ALL[action]);
        }
        obs.push(o);
        toks.push(tk);
        starts.push(st);
        samples.push(sa);
    }
    let init: Vec<Vec<f32>> = (0..2)
        .map(|_| (0..sl).map(|_| rng.gen_f32() - 0.5).collect())
        .collect();
    let steps: Vec<Vec<ChunkStep<'_, f32>>> = (0..2)
        .map(|c| {
            (0..6)
                .map(|t| ChunkStep {
                    obs: &obs[c][t],
                    tokens: &toks[c][t],
                    episode_start: starts[c][t],
                    sample: samples[c][t],
                })
                .collect()
        })
        .collect();
    let coefs = PpoCoefs::babyai();
    let scale = 1.0 / 12.0;
    let cpu = model.policy()?;
    let mut want = GroupVecs::zeros(layout);
    for c in 0..2 {
        let mut work = vec![0.0f32; chunk_work_len(&d, 6)];
        cpu.chunk_backward(
            &steps[c],
            &init[c],
            &coefs,
            scale,
            CommGrad::Blocked,
            want.bufs_mut(),
            &mut work,
        )
        .map_err(|e| anyhow!("CPU reference: {e}"))?;
    }
    let pass: Vec<PassChunk<'_, '_>> = (0..2)
        .map(|c| PassChunk {
            steps: &steps[c],
            init_state: &init[c],
        })
        .collect();
    policy
        .grad_pass(&pass, &coefs, scale)
        .map_err(|e| anyhow!("gradient pass: {e}"))?;
    let mut got = GroupVecs::zeros(layout);
    policy
        .download_grads(got.bufs_mut())
        .map_err(|e| anyhow!("reading gradients: {e}"))?;
    policy
        .take_stats()
        .map_err(|e| anyhow!("reading statistics: {e}"))?;
    for e in layout.entries() {
        let r = e.range();
        let err = rel_error(&got.group(e.group)[r.clone()], &want.group(e.group)[r]);
        if err > SELF_CHECK_TOL {
            bail!(
                "self-check failed: the GPU gradient of {} differs from the CPU reference by \
                 {err:.1e} (relative, tolerance {SELF_CHECK_TOL:.0e})",
                e.name
            );
        }
    }
    Ok(())
}

/// Observations, tokens and flags of one half of the environments for one acting step.
struct HalfInput {
    obs: Vec<Observation>,
    tokens: Vec<[u16; MAX_TOKENS]>,
    encode: Vec<bool>,
    reset: Vec<bool>,
}

impl Gpu {
    /// Queue the forward pass of environments `range` (recording their step `t` in the rollout
    /// buffers when `t` is given).
    fn submit(
        &mut self,
        slot: usize,
        slots: &mut [EnvSlot],
        range: (usize, usize),
        t: Option<usize>,
        encode_all: bool,
    ) -> Result<()> {
        let (a, b) = range;
        let mut inp = HalfInput {
            obs: vec![[[0u8; 3]; VIEW_CELLS]; b - a],
            tokens: Vec::with_capacity(b - a),
            encode: Vec::with_capacity(b - a),
            reset: Vec::with_capacity(b - a),
        };
        for (i, s) in slots[a..b].iter_mut().enumerate() {
            s.env.observe(&mut inp.obs[i]);
            inp.tokens.push(s.tokens);
            inp.encode.push(encode_all || s.episode_start);
            inp.reset.push(s.episode_start);
            if let Some(t) = t {
                s.buf.obs[t] = inp.obs[i];
                s.buf.tokens[t] = s.tokens;
                s.buf.episode_start[t] = s.episode_start;
            }
        }
        let toks: Vec<&[u16]> = inp.tokens.iter().map(|x| &x[..]).collect();
        self.policy
            .act_submit(
                slot,
                a,
                &ActInput {
                    obs: &inp.obs,
                    tokens: &toks,
                    encode: &inp.encode,
                    reset: &inp.reset,
                    commit: t.is_some(),
                },
            )
            .map_err(|e| anyhow!("acting on the GPU: {e}"))
    }

    /// One rollout of `frames_per_proc` steps in every env (see the module docs), then the
    /// bootstrap values; leaves each env's memory state in `slot.state`.
    pub fn collect(&mut self, slots: &mut [EnvSlot], inputs: &RolloutInputs<'_>) -> Result<()> {
        let RolloutInputs {
            model,
            tasks,
            reward_scale,
            threads,
        } = *inputs;
        let n = slots.len();
        let sl = slots.first().map_or(0, |s| s.state.len());
        let na = model.layout.dims().n_actions;
        self.policy
            .upload_params(model.params.bufs())
            .map_err(|e| anyhow!("uploading parameters: {e}"))?;
        let states: Vec<f32> = slots.iter().flat_map(|s| s.state.iter().copied()).collect();
        self.policy
            .set_states(0, &states)
            .map_err(|e| anyhow!("uploading memory states: {e}"))?;
        for s in slots.iter_mut() {
            s.finished.clear();
        }
        let half = n.div_ceil(2);
        let halves: Vec<(usize, usize)> = [(0, half), (half, n)]
            .into_iter()
            .filter(|(a, b)| a < b)
            .collect();
        let frames = slots.first().map_or(0, |s| s.buf.len());
        let per = threads.max(1);
        if frames > 0 {
            self.submit(0, slots, halves[0], Some(0), true)?;
        }
        for t in 0..frames {
            if let Some(&h1) = halves.get(1) {
                self.submit(1, slots, h1, Some(t), t == 0)?;
            }
            for (k, &(a, b)) in halves.iter().enumerate() {
                let out = self
                    .policy
                    .act_finish(k)
                    .map_err(|e| anyhow!("acting on the GPU: {e}"))?;
                step_half(&mut slots[a..b], &out, t, sl, na, tasks, reward_scale, per)?;
                if k == 0 && t + 1 < frames {
                    self.submit(0, slots, halves[0], Some(t + 1), false)?;
                }
            }
        }
        // Bootstrap values of the states after the rollout (the states are not kept).
        for (k, &(a, b)) in halves.iter().enumerate() {
            self.submit(k, slots, (a, b), None, false)?;
        }
        for (k, &(a, b)) in halves.iter().enumerate() {
            let out = self
                .policy
                .act_finish(k)
                .map_err(|e| anyhow!("bootstrap values on the GPU: {e}"))?;
            for (s, v) in slots[a..b].iter_mut().zip(&out.values) {
                s.buf.next_value = *v;
            }
        }
        let states = self
            .policy
            .states()
            .map_err(|e| anyhow!("reading memory states: {e}"))?;
        for (s, st) in slots.iter_mut().zip(states.chunks_exact(sl.max(1))) {
            if s.episode_start {
                // A new episode reads zeros (the device resets it at its first step).
                s.state.fill(0.0);
            } else {
                s.state.copy_from_slice(st);
            }
        }
        Ok(())
    }

    /// Every gradient pass and optimiser step of one update on the device (the CPU path's
    /// schedule); copies the parameters and Adam moments back into `model` and `optim`.
    pub fn learn(
        &mut self,
        cfg: &TrainConfig,
        model: &mut Model,
        optim: &mut Optim,
        slots: &[EnvSlot],
        rng: &mut Pcg32,
    ) -> Result<UpdateStats> {
        let mode = model.layout.mode();
        let coefs = cfg.ppo_coefs();
        self.policy
            .upload_params(model.params.bufs())
            .map_err(|e| anyhow!("uploading parameters: {e}"))?;
        self.policy
            .upload_moments(optim.m.bufs(), optim.v.bufs())
            .map_err(|e| anyhow!("uploading Adam moments: {e}"))?;
        let mut steps = 0usize;
        // The `accumulate` schedule sums the outer groups' gradients on the host, with the
        // CPU path's rules (`update::add_groups`, `update::scale_groups`).
        let outer_groups = mode.phase_groups(Phase::Outer, cfg.other_group);
        let (mut grad, mut sum) =
            if mode.is_meta() && cfg.meta_schedule == super::config::MetaSchedule::Accumulate {
                let zeros = GroupVecs::zeros(&model.layout);
                (zeros.clone(), zeros)
            } else {
                (GroupVecs::default(), GroupVecs::default())
            };
        let mut summed = 0usize;
        for (batch, plan) in schedule(cfg, mode, slots.len(), rng) {
            self.pass(slots, &batch, &coefs)?;
            let flush = match plan {
                StepPlan::Single(phase) => {
                    self.step(cfg, optim, phase)?;
                    steps += 1;
                    continue;
                }
                StepPlan::InnerThenAccumulate { flush } => flush,
            };
            self.policy
                .download_grads(grad.bufs_mut())
                .map_err(|e| anyhow!("reading gradients: {e}"))?;
            if add_groups(&mut sum, &grad, &outer_groups) {
                summed += 1;
            }
            self.step(cfg, optim, Phase::Inner)?;
            steps += 1;
            if flush && summed > 0 {
                scale_groups(&mut sum, &outer_groups, summed);
                summed = 0;
                self.policy
                    .upload_grads(sum.bufs())
                    .map_err(|e| anyhow!("writing the mean slow gradient: {e}"))?;
                sum.clear();
                self.step(cfg, optim, Phase::Outer)?;
                steps += 1;
            }
        }
        let st = self
            .policy
            .take_stats()
            .map_err(|e| anyhow!("reading statistics: {e}"))?;
        self.policy
            .download_params(model.params.bufs_mut())
            .map_err(|e| anyhow!("reading parameters: {e}"))?;
        self.policy
            .download_moments(optim.m.bufs_mut(), optim.v.bufs_mut())
            .map_err(|e| anyhow!("reading Adam moments: {e}"))?;
        Ok(UpdateStats {
            steps,
            frames: st.frames,
            entropy: st.terms[3],
            policy_loss: st.terms[1],
            value_loss: st.terms[2],
            approx_kl: st.terms[6],
            clipped: st.terms[8],
            grad_norm: st.norms.iter().map(|x| f64::from(*x)).sum(),
            // The kernels report one norm per step, not per role: the log's role columns stay empty.
            role_norms: Default::default(),
            skipped: 0,
        })
    }

    /// One gradient pass over `batch` (every group's gradient, on the device).
    fn pass(&mut self, slots: &[EnvSlot], batch: &[Chunk], coefs: &PpoCoefs<f32>) -> Result<()> {
        let total: usize = batch.iter().map(|c| c.len).sum();
        let mut all_steps: Vec<Vec<ChunkStep<'_, f32>>> = Vec::with_capacity(batch.len());
        let mut inits: Vec<&[f32]> = Vec::with_capacity(batch.len());
        for c in batch {
            let (steps, init) = c.view(slots)?;
            all_steps.push(steps.collect());
            inits.push(init);
        }
        let pass: Vec<PassChunk<'_, '_>> = all_steps
            .iter()
            .zip(&inits)
            .map(|(s, i)| PassChunk {
                steps: s,
                init_state: i,
            })
            .collect();
        self.policy
            .grad_pass(&pass, coefs, 1.0 / total.max(1) as f32)
            .map_err(|e| anyhow!("gradient pass on the GPU: {e}"))
    }

    /// The optimiser step of `phase` on the device gradients.
    fn step(&mut self, cfg: &TrainConfig, optim: &mut Optim, phase: Phase) -> Result<()> {
        let groups: Vec<Group> = model_mode(&self.policy)
            .phase_groups(phase, cfg.other_group)
            .to_vec();
        let opt = if phase == Phase::Inner {
            &mut optim.fast
        } else {
            &mut optim.slow
        };
        opt.t += 1;
        let (adam, t) = (*opt, opt.t);
        self.policy
            .adam_step(
                &groups,
                phase != Phase::All,
                &adam,
                t,
                cfg.max_grad_norm as f32,
            )
            .map_err(|e| anyhow!("optimiser step on the GPU: {e}"))
    }
}

fn model_mode(p: &CudaPolicy) -> metarim_core::nn::params::Mode {
    p.layout().mode()
}

/// Sample actions for a half's envs from the device outputs and step them (on up to `threads`
/// threads, disjoint envs each), recording step `t` as the CPU rollout does.
#[allow(clippy::too_many_arguments)]
fn step_half(
    slots: &mut [EnvSlot],
    out: &metarim_cuda::engine::ActOut,
    t: usize,
    sl: usize,
    na: usize,
    tasks: &Tasks,
    reward_scale: f32,
    threads: usize,
) -> Result<()> {
    for_each_part(slots, threads, "rollout", |first, part| {
        for (j, slot) in part.iter_mut().enumerate() {
            let i = first + j;
            let b = &mut slot.buf;
            b.states[t * sl..(t + 1) * sl].copy_from_slice(&out.state_in[i * sl..(i + 1) * sl]);
            b.active[t] = out.active[i] as u16;
            let logits = &out.logits[i * na..(i + 1) * na];
            slot.act(t, logits, out.values[i], tasks, reward_scale)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_checked() {
        for b in BackendChoice::ALL {
            assert_eq!(BackendChoice::from_name(b.name()).unwrap(), b);
        }
        let e = BackendChoice::from_name("gpu").unwrap_err().to_string();
        assert!(e.contains("gpu") && e.contains("auto, cpu or cuda"), "{e}");
    }

    /// A rollout and an update through the CUDA backend's host code, with the kernels on the
    /// CPU emulator, against the CPU backend from the same state: the same actions and
    /// episodes, values and log-probabilities within 1e-4, parameters after the update within
    /// 1e-4 (relative to max(|p|, 1e-2 max |p|) per tensor). Also with the bag-of-words encoder
    /// FiLM-conditioned on the instruction (its generator moved off the identity first, so the
    /// rollout is modulated), against the CPU's batched FiLM path; and with LSTM-cell RIM
    /// modules (the state `[h | c]` per environment and step), plain and with bow+FiLM.
    #[test]
    fn gpu_rollout_and_update_match_the_cpu_backend_on_the_emulator() {
        use super::super::rollout;
        use super::super::update::{train_on_rollout, Grads};
        let exec: Arc<dyn Exec> = match metarim_cuda::emu::EmuExec::new() {
            Ok(e) => Arc::new(e),
            Err(e) if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0") => {
                panic!("CI is set but the kernel emulator is unavailable: {e}")
            }
            Err(e) => {
                println!("skipped: {e}");
                return;
            }
        };
        use super::super::config::{MetaSchedule, OtherGroup};
        let (ph, acc) = (MetaSchedule::Phases, MetaSchedule::Accumulate);
        for (mode, film, lstm_cells, meta_schedule, other_group) in [
            ("meta-rim", false, false, ph, OtherGroup::Slow),
            ("lstm", false, false, ph, OtherGroup::Slow),
            ("meta-rim", true, false, ph, OtherGroup::Slow),
            ("joint", true, false, ph, OtherGroup::Slow),
            ("meta-rim", false, true, ph, OtherGroup::Slow),
            ("reversed", true, true, ph, OtherGroup::Slow),
            // The accumulate schedule: the slow sum is kept on the host for both.
            ("meta-rim", true, false, acc, OtherGroup::Fast),
            ("reversed", false, true, acc, OtherGroup::Slow),
        ] {
            let cfg = TrainConfig {
                mode: metarim_core::nn::params::Mode::from_name(mode).expect("a mode name"),
                meta_schedule,
                other_group,
                encoder: film.then_some(metarim_core::nn::dims::EncoderKind::Bow),
                film: film.then_some(true),
                cell: lstm_cells.then_some(metarim_core::nn::dims::CellKind::Lstm),
                procs: 5,
                frames_per_proc: 8,
                recurrence: 4,
                batch_size: 16,
                epochs: 1,
                inner_steps: 2,
                outer_steps: 2,
                slowness: 2,
                grad_shards: 2,
                backend: BackendChoice::Cpu,
                ..TrainConfig::device()
            };
            cfg.validate().unwrap();
            let mut model = super::super::run::initial_model(&cfg).unwrap();
            assert_eq!(model.layout.dims().film, film);
            let mut rng = Pcg32::new(0xf11);
            for e in model
                .layout
                .entries()
                .iter()
                .filter(|e| e.name.contains(".film."))
            {
                for v in &mut model.params.group_mut(e.group)[e.range()] {
                    *v = (rng.gen_f32() - 0.5) * 0.3;
                }
            }
            assert_eq!(
                model.layout.dims().rim.cell == metarim_core::nn::dims::CellKind::Lstm,
                lstm_cells
            );
            let mode = format!(
                "{mode}{}{} {meta_schedule:?} other {other_group:?}",
                if film { " bow+FiLM" } else { "" },
                if lstm_cells { " lstm-cells" } else { "" }
            );
            let tasks = Tasks::new(&cfg).unwrap();
            let slots: Vec<EnvSlot> = (0..cfg.procs)
                .map(|i| EnvSlot::new(i, cfg.seed, &model, &tasks, cfg.frames_per_proc).unwrap())
                .collect();
            let mut gpu = Gpu::with_exec(exec.clone(), &model, cfg.procs).unwrap();
            // Two rollouts each (the second starts mid-episode from the first's states).
            let (mut cpu_slots, mut gpu_slots) = (slots.clone(), slots);
            let (cpu_tasks, gpu_tasks) = (tasks.clone(), tasks);
            for _ in 0..2 {
                let inputs = |tasks| RolloutInputs {
                    model: &model,
                    tasks,
                    reward_scale: 20.0,
                    threads: 2,
                };
                rollout::collect(&mut cpu_slots, &inputs(&cpu_tasks)).unwrap();
                gpu.collect(&mut gpu_slots, &inputs(&gpu_tasks)).unwrap();
                for (c, g) in cpu_slots.iter().zip(&gpu_slots) {
                    assert_eq!(c.buf.action, g.buf.action, "{mode}: actions");
                    assert_eq!(c.buf.episode_start, g.buf.episode_start, "{mode}: starts");
                    assert_eq!(c.buf.active, g.buf.active, "{mode}: active modules");
                    assert_eq!(c.actions, g.actions, "{mode}: episodes");
                    for (what, a, b) in [
                        ("values", &g.buf.value, &c.buf.value),
                        ("logprobs", &g.buf.logprob, &c.buf.logprob),
                        ("states", &g.buf.states, &c.buf.states),
                        ("state", &g.state, &c.state),
                        (
                            "bootstrap",
                            &vec![g.buf.next_value],
                            &vec![c.buf.next_value],
                        ),
                    ] {
                        // Normwise (largest difference over the largest value): an untrained
                        // critic's values are ~0.005 and some sit near 0, where f32 rounding of
                        // the O(1) terms they come from (~4e-8) is a large share of the value.
                        let (e, _) = crate::batch::normwise_rel_error(a, b);
                        assert!(e <= 1e-4, "{mode}: {what} differ by {e:e}");
                    }
                }
            }
            for s in cpu_slots.iter_mut().chain(gpu_slots.iter_mut()) {
                rollout::gae(&mut s.buf, cfg.gamma as f32, cfg.gae_lambda as f32);
            }
            let (mut cpu_model, mut gpu_model) = (model.clone(), model.clone());
            let mut cpu_opt = Optim::new(&model.layout, &cfg);
            let mut gpu_opt = cpu_opt.clone();
            let (mut r1, mut r2) = (Pcg32::new(9), Pcg32::new(9));
            let mut grads = Grads::new(&model.layout, &cfg, 1).unwrap();
            let us_cpu = train_on_rollout(
                &cfg,
                &mut cpu_model,
                &mut cpu_opt,
                &cpu_slots,
                &mut r1,
                1,
                &mut grads,
                &mut crate::train::guard::DivergenceGuard::new(),
            )
            .unwrap();
            let us_gpu = gpu
                .learn(&cfg, &mut gpu_model, &mut gpu_opt, &gpu_slots, &mut r2)
                .unwrap();
            assert_eq!(us_cpu.steps, us_gpu.steps);
            assert_eq!(us_cpu.frames, us_gpu.frames);
            assert_eq!(
                (cpu_opt.fast.t, cpu_opt.slow.t),
                (gpu_opt.fast.t, gpu_opt.slow.t)
            );
            let ge = (us_gpu.grad_norm - us_cpu.grad_norm).abs() / us_cpu.grad_norm.max(1e-12);
            assert!(
                ge <= 1e-4,
                "{mode}: gradient norms {} vs {}",
                us_gpu.grad_norm,
                us_cpu.grad_norm
            );
            for e in model.layout.entries() {
                let r = e.range();
                let err = rel_error(
                    &gpu_model.params.group(e.group)[r.clone()],
                    &cpu_model.params.group(e.group)[r],
                );
                assert!(
                    err <= 1e-4,
                    "{mode}: {} after the update differs by {err:e}",
                    e.name
                );
            }
        }
    }

    #[test]
    fn cuda_without_a_device_is_a_clear_error_and_auto_falls_back() {
        if matches!(metarim_cuda::detect(0), metarim_cuda::Backend::Cuda(_)) {
            println!("skipped: a CUDA device is present");
            return;
        }
        let cfg = TrainConfig {
            backend: BackendChoice::Cuda,
            ..TrainConfig::device()
        };
        let model = super::super::run::initial_model(&cfg).unwrap();
        let e = format!("{:#}", select(&cfg, &model, 2, true).unwrap_err());
        assert!(
            e.contains("backend cuda") && e.contains("no usable CUDA device"),
            "{e}"
        );
        let auto = TrainConfig {
            backend: BackendChoice::Auto,
            ..cfg
        };
        assert!(select(&auto, &model, 2, true).unwrap().is_none());
    }
}
