//! On-device fast-only adaptation of the `Tiny` policy (Meta-RIMs split): the module RNN
//! weights (the fast group) learn from a short window of the agent's own experience; the slow
//! attention, encoder, instruction encoder, actor and critic stay frozen (they may live in
//! flash).
//!
//! Invariants:
//! - No heap, fixed sizes: [`TinyAdapter`] holds the window (`W` steps of memory input, memory
//!   state and targets), the fast gradient and one work buffer (the optimiser is plain SGD, which
//!   keeps no state); `size_of::<TinyAdapter<W>>()` is its whole RAM.
//! - The loss is PPO's on the window with the frozen critic as baseline (GAE), value weight 0;
//!   the gradient is exact BPTT over the window for the fast group only
//!   ([`crate::nn::policy::Policy::fast_window_backward`], which recomputes each step from its
//!   stored input). Gradients of [`AdaptConfig::windows_per_step`] windows are summed in the
//!   one gradient buffer before an optimiser step on their per-step mean (a longer batch at no
//!   RAM cost).
//! - A step touches only the blocks of modules that were active in its windows (top-k makes
//!   it sparse, [`Layout::fast_ranges`]); slow and other parameters are never written.
//! - [`play_episodes`] is the one episode loop of the host twin (`metarim adapt`) and the
//!   firmware, so both compute bit-identical results from the same blob and seed.

use crate::env::{Action, Env, VIEW_CELLS};
use crate::error::Error;
use crate::levels::Level;
use crate::nn::dims::TINY;
use crate::nn::loss::{PpoCoefs, PpoSample};
use crate::nn::optim::{clip_coef, Range, Sgd};
use crate::nn::params::{Group, GroupBufs, Layout, Mode, TensorKind, FAST_RANGES};
use crate::nn::policy::{fast_work_len, FastStep, MAX_MODULES};
use crate::nn::presets::{TinyActor, TINY_FAST, TINY_STATE};
use crate::nn::rim::CommGrad;
use crate::nn::sample::{argmax_action, sample_action};
use crate::rng::{episode_stream, Pcg32};

pub mod guard;

pub use guard::{Guard, GuardAction, GuardConfig, GuardPhase, GuardReport};

/// Width of the Tiny memory input (encoder output ++ instruction embedding).
pub const TINY_X: usize = TINY.memory_input();
/// Work buffer of the fast-only backward for Tiny.
pub const TINY_FAST_WORK: usize = fast_work_len(&TINY);

/// Hyper-parameters of on-device adaptation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptConfig {
    /// Discount.
    pub gamma: f32,
    /// GAE lambda.
    pub lambda: f32,
    /// Learning rate.
    pub lr: f32,
    /// Entropy bonus weight.
    pub entropy_coef: f32,
    /// Global gradient-norm clip.
    pub max_grad_norm: f32,
    /// Reward scale the critic was trained with (the trainer's `reward_scale`, 20).
    pub reward_scale: f32,
    /// PPO clip (the ratio moves off 1 after the first pass over a window, or for a step
    /// acted under older parameters).
    pub clip_eps: f32,
    /// Windows whose gradients are summed before one optimiser step (the step uses their
    /// mean over all their steps, and updates the modules active in any of them): a longer
    /// effective batch at no RAM cost, since the gradient buffer is the accumulator. At least
    /// 1. A partial accumulation left when the episodes end is dropped.
    pub windows_per_step: u32,
    /// The guard: probe the starting weights, keep adapted weights only when the adaptation
    /// episodes show they are better, restore the starting weights when learning goes wrong,
    /// stop once done ([`GuardConfig::OFF`]: none).
    pub guard: GuardConfig,
}

impl Default for AdaptConfig {
    /// gamma 0.99, lambda 0.95, lr 1e-2, entropy 0.01, grad clip 0.5, reward scale 20, clip 0.2,
    /// one pass per window, one SGD step per 4 windows (chosen on MiniGrid-Empty-5x5 ->
    /// Empty-8x8 over training seeds 1-7, docs/RESULTS.md "On-device fast adaptation"), and
    /// [`GuardConfig::DEFAULT`].
    fn default() -> Self {
        AdaptConfig {
            gamma: 0.99,
            lambda: 0.95,
            lr: 1e-2,
            entropy_coef: 0.01,
            max_grad_norm: 0.5,
            reward_scale: 20.0,
            clip_eps: 0.2,
            windows_per_step: 4,
            guard: GuardConfig::DEFAULT,
        }
    }
}

impl AdaptConfig {
    /// The PPO coefficients of a fast step: the policy terms only (the value head is not in
    /// the fast group, so no value loss and no value clipping).
    pub fn ppo_coefs(&self) -> PpoCoefs<f32> {
        PpoCoefs {
            clip_eps: self.clip_eps,
            value_coef: 0.0,
            entropy_coef: self.entropy_coef,
            clip_value: false,
        }
    }

    /// Check the settings that have no meaning outside a range: `windows_per_step` at least 1
    /// (0 used to be read as 1 silently).
    pub fn validate(&self) -> Result<(), Error> {
        if self.windows_per_step == 0 {
            return Err(Error::BadConfig {
                what: "adaptation: windows_per_step must be >= 1 (windows per optimiser step)",
            });
        }
        self.guard.validate()
    }
}

/// Running totals of a learner over its windows and optimiser steps: what [`EpisodeStats`]
/// reports about learning (the device adapter's and the host-only learners').
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LearnTotals {
    /// Windows learned from (updates on a non-empty window).
    pub updates: u32,
    /// Optimiser steps taken.
    pub optimizer_steps: u32,
    /// Sum of the pre-clip gradient norms of those steps.
    pub grad_norm_sum: f32,
    /// Steps whose gradient was clipped.
    pub clipped_steps: u32,
    /// Steps learned from (each window's steps, once per window).
    pub learned_steps: u32,
    /// Sum of their GAE advantages (scaled rewards; a critic biased for this level shows
    /// here).
    pub advantage_sum: f32,
    /// Sum of the policy's entropies at those steps.
    pub entropy_sum: f32,
}

impl LearnTotals {
    /// All zero (a `const`, for `const fn` constructors).
    pub const ZERO: LearnTotals = LearnTotals {
        updates: 0,
        optimizer_steps: 0,
        grad_norm_sum: 0.0,
        clipped_steps: 0,
        learned_steps: 0,
        advantage_sum: 0.0,
        entropy_sum: 0.0,
    };

    /// Count a window of `steps` steps with these sums of advantages and entropies.
    pub fn add_window(&mut self, steps: usize, advantage_sum: f32, entropy_sum: f32) {
        self.updates = self.updates.saturating_add(1);
        self.learned_steps = self
            .learned_steps
            .saturating_add(u32::try_from(steps).unwrap_or(u32::MAX));
        self.advantage_sum += advantage_sum;
        self.entropy_sum += entropy_sum;
    }

    /// Count an optimiser step whose gradient norm before clipping at `max_norm` was `norm`.
    pub fn add_step(&mut self, norm: f32, max_norm: f32) {
        self.optimizer_steps = self.optimizer_steps.saturating_add(1);
        self.grad_norm_sum += norm;
        self.clipped_steps += u32::from(norm > max_norm);
    }

    /// Write the totals and their means into `st`.
    pub fn report_into(&self, st: &mut EpisodeStats) {
        st.updates = self.updates;
        st.optimizer_steps = self.optimizer_steps;
        let n = self.optimizer_steps.max(1) as f32;
        st.mean_grad_norm = self.grad_norm_sum / n;
        st.clip_fraction = self.clipped_steps as f32 / n;
        let l = self.learned_steps.max(1) as f32;
        st.mean_advantage = self.advantage_sum / l;
        st.mean_entropy = self.entropy_sum / l;
    }
}

/// What one update did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateReport {
    /// Steps in the window.
    pub steps: usize,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Modules updated (active somewhere in the accumulated windows; 0 when no step was
    /// taken).
    pub modules_updated: usize,
    /// Optimiser steps taken (0 while gradients are still being accumulated).
    pub optimizer_steps: u32,
}

/// The steps of one adaptation window as they were acted (`len <= W` of them), and their
/// advantages once [`Window::advantages`] has run: what the fast backward learns from.
#[derive(Clone, Debug)]
struct Window<const W: usize> {
    xs: [[f32; TINY_X]; W],
    states: [[f32; TINY_STATE]; W],
    actions: [u8; W],
    logprobs: [f32; W],
    values: [f32; W],
    rewards: [f32; W],
    dones: [bool; W],
    starts: [bool; W],
    adv: [f32; W],
    len: usize,
}

impl<const W: usize> Window<W> {
    const fn new() -> Self {
        Window {
            xs: [[0.0; TINY_X]; W],
            states: [[0.0; TINY_STATE]; W],
            actions: [0; W],
            logprobs: [0.0; W],
            values: [0.0; W],
            rewards: [0.0; W],
            dones: [false; W],
            starts: [false; W],
            adv: [0.0; W],
            len: 0,
        }
    }

    /// GAE with the frozen critic into `adv`.
    fn advantages(&mut self, bootstrap: f32, cfg: &AdaptConfig) {
        let n = self.len.min(W);
        window_advantages(
            &self.values[..n],
            &self.rewards[..n],
            &self.dones[..n],
            bootstrap,
            cfg,
            &mut self.adv[..n],
        );
    }

    /// Step `t` as the fast backward reads it: the stored memory input and state, and the PPO
    /// sample (the return is value plus advantage, as GAE defines it). Valid after
    /// [`Self::advantages`]; `t < W`.
    fn fast_step(&self, t: usize) -> FastStep<'_, f32> {
        FastStep {
            x: &self.xs[t],
            state_in: &self.states[t],
            episode_start: self.starts[t],
            sample: PpoSample {
                action: usize::from(self.actions[t]),
                old_logprob: self.logprobs[t],
                old_value: self.values[t],
                advantage: self.adv[t],
                ret: self.values[t] + self.adv[t],
            },
        }
    }
}

/// One acted step as the adapter learns from it: what the policy read and did, and what the
/// environment answered. Named fields, since three of them are `f32`s a positional list could
/// swap.
#[derive(Clone, Copy, Debug)]
pub struct ActedStep<'a> {
    /// The memory input the policy read (encoder output ++ instruction embedding, [`TINY_X`]).
    pub x: &'a [f32],
    /// The memory state before the step ([`TINY_STATE`]).
    pub state_in: &'a [f32],
    /// Whether the step started an episode (the memory was reset before it).
    pub episode_start: bool,
    /// The action taken.
    pub action: usize,
    /// Its log-probability under the acting policy.
    pub logprob: f32,
    /// The critic's value of the state.
    pub value: f32,
    /// The reward, scaled as in training ([`AdaptConfig::reward_scale`]).
    pub reward: f32,
    /// Whether the episode ended with this step.
    pub done: bool,
}

/// The window, gradient and work buffer of fast adaptation for `Tiny`: `W` steps.
#[derive(Clone, Debug)]
pub struct TinyAdapter<const W: usize> {
    window: Window<W>,
    grads: [f32; TINY_FAST],
    work: [f32; TINY_FAST_WORK],
    acc_windows: u32,
    acc_steps: usize,
    acc_active: [bool; MAX_MODULES],
    /// Running totals (what [`EpisodeStats`] reports).
    pub totals: LearnTotals,
}

impl<const W: usize> Default for TinyAdapter<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> TinyAdapter<W> {
    /// Bytes of RAM this adapter takes (window, gradient, work).
    pub const RAM_BYTES: usize = core::mem::size_of::<Self>();

    /// An empty adapter (a `const fn`, so it can initialise a `static`).
    pub const fn new() -> Self {
        TinyAdapter {
            window: Window::new(),
            grads: [0.0; TINY_FAST],
            work: [0.0; TINY_FAST_WORK],
            acc_windows: 0,
            acc_steps: 0,
            acc_active: [false; MAX_MODULES],
            totals: LearnTotals::ZERO,
        }
    }

    /// Steps held.
    pub fn len(&self) -> usize {
        self.window.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.window.len == 0
    }

    /// Whether the window is full.
    pub fn is_full(&self) -> bool {
        self.window.len >= W
    }

    /// Drop the window and any gradient accumulated towards the next step (the guard calls
    /// this when it restores the starting weights or stops learning). The running statistics
    /// stay.
    pub fn clear(&mut self) {
        self.window.len = 0;
        self.acc_windows = 0;
        self.acc_steps = 0;
    }

    /// Append one acted step ([`ActedStep`]). Errors when full or on wrong lengths.
    pub fn record(&mut self, step: &ActedStep<'_>) -> Result<(), Error> {
        let ActedStep {
            x,
            state_in,
            episode_start,
            action,
            logprob,
            value,
            reward,
            done,
        } = *step;
        let i = self.window.len;
        let (Some(xs), Some(st)) = (self.window.xs.get_mut(i), self.window.states.get_mut(i))
        else {
            return Err(Error::BufferTooSmall {
                needed: i + 1,
                got: W,
            });
        };
        if x.len() != TINY_X || state_in.len() != TINY_STATE {
            return Err(Error::BadDims {
                what: "adaptation step: memory input or state has the wrong length",
            });
        }
        xs.copy_from_slice(x);
        st.copy_from_slice(state_in);
        self.window.actions[i] =
            u8::try_from(action).map_err(|_| Error::BadAction(action as i64))?;
        self.window.logprobs[i] = logprob;
        self.window.values[i] = value;
        self.window.rewards[i] = reward;
        self.window.dones[i] = done;
        self.window.starts[i] = episode_start;
        self.window.len = i + 1;
        Ok(())
    }

    /// Learn from the window, then empty it: its PPO gradient (exact BPTT over the window,
    /// fast group only) is added to the accumulated gradient, and every
    /// `cfg.windows_per_step` windows one SGD step is taken on their mean. `bootstrap` is the
    /// critic's
    /// value of the state after the last step (ignored when that step ended its episode).
    /// `fast` is the fast group (RAM); `slow`, `other` the frozen groups.
    pub fn update(
        &mut self,
        layout: &Layout,
        fast: &mut [f32; TINY_FAST],
        slow: &[f32],
        other: &[f32],
        bootstrap: f32,
        cfg: &AdaptConfig,
    ) -> Result<UpdateReport, Error> {
        check_layout(layout)?;
        cfg.validate()?;
        let per_step = cfg.windows_per_step;
        let n = self.window.len;
        if n == 0 {
            return Ok(UpdateReport::default());
        }
        self.window.advantages(bootstrap, cfg);
        let coefs = cfg.ppo_coefs();
        let window = &self.window;
        let steps: [FastStep<'_, f32>; W] = core::array::from_fn(|t| window.fast_step(t));
        let nm = layout.dims().rim.n_modules.min(MAX_MODULES);
        let mut report = UpdateReport {
            steps: n,
            ..UpdateReport::default()
        };
        if self.acc_windows == 0 {
            self.grads.fill(0.0);
            self.acc_steps = 0;
            self.acc_active = [false; MAX_MODULES];
        }
        // The summed (unscaled) loss gradient accumulates; the step divides by the steps.
        let stats = {
            let policy = crate::nn::policy::Policy::new(
                layout,
                GroupBufs {
                    fast: &fast[..],
                    slow,
                    other,
                },
            )?;
            policy.fast_window_backward(
                &steps[..n],
                &coefs,
                1.0,
                CommGrad::Blocked,
                &mut self.grads,
                &mut self.work,
            )?
        };
        self.totals.add_window(
            n,
            self.window.adv[..n].iter().sum::<f32>(),
            stats.sum.entropy,
        );
        for (a, c) in self.acc_active.iter_mut().zip(stats.active_steps.iter()) {
            *a |= *c > 0;
        }
        self.acc_steps += n;
        self.acc_windows += 1;
        if self.acc_windows >= per_step {
            self.step(layout, fast, cfg, nm, &mut report)?;
        }
        self.window.len = 0;
        Ok(report)
    }

    /// One SGD step on the accumulated windows (their mean gradient), recorded in `report`
    /// and the running statistics; the accumulation starts again.
    fn step(
        &mut self,
        layout: &Layout,
        fast: &mut [f32; TINY_FAST],
        cfg: &AdaptConfig,
        nm: usize,
        report: &mut UpdateReport,
    ) -> Result<(), Error> {
        let active = &self.acc_active[..nm];
        let (norm, modules) =
            fast_step(layout, fast, &mut self.grads, active, self.acc_steps, cfg)?;
        self.acc_windows = 0;
        self.totals.add_step(norm, cfg.max_grad_norm);
        report.grad_norm = norm;
        report.modules_updated = report.modules_updated.max(modules);
        report.optimizer_steps += 1;
        Ok(())
    }
}

/// GAE over one adaptation window (the learner's targets): `values` from the critic while
/// acting, `rewards` already scaled, `dones` where episodes ended (no bootstrap across them),
/// `bootstrap` the critic's value after the last step. Writes `adv` (as long as `values`;
/// extra elements of the shorter slices are ignored).
pub fn window_advantages(
    values: &[f32],
    rewards: &[f32],
    dones: &[bool],
    bootstrap: f32,
    cfg: &AdaptConfig,
    adv: &mut [f32],
) {
    crate::nn::loss::gae(
        values,
        rewards,
        dones,
        bootstrap,
        (cfg.gamma, cfg.lambda),
        adv,
    );
}

/// One SGD step on the accumulated gradient `grads` (its mean over the accumulated `steps`,
/// clipped), on the blocks of the modules `active` in the accumulated windows. Returns the
/// pre-clip norm and the modules updated.
fn fast_step(
    layout: &Layout,
    fast: &mut [f32; TINY_FAST],
    grads: &mut [f32; TINY_FAST],
    active: &[bool],
    steps: usize,
    cfg: &AdaptConfig,
) -> Result<(f32, usize), Error> {
    let mut ranges = heapless::Vec::<Range, FAST_RANGES>::new();
    layout.fast_ranges(active, &mut ranges)?;
    let inv = 1.0 / steps.max(1) as f32;
    let mut sq = 0.0f32;
    for &(off, len) in ranges.iter() {
        for g in grads.get_mut(off..off + len).unwrap_or(&mut []) {
            *g *= inv;
            sq += *g * *g;
        }
    }
    let norm = libm::sqrtf(sq);
    let coef = clip_coef(norm, cfg.max_grad_norm);
    for &(off, len) in ranges.iter() {
        for g in grads.get_mut(off..off + len).unwrap_or(&mut []) {
            *g *= coef;
        }
    }
    Sgd {
        lr: f64::from(cfg.lr),
    }
    .step_ranges(&mut fast[..], &grads[..], &ranges)?;
    Ok((norm, active.iter().filter(|a| **a).count()))
}

/// The layout must be Tiny's meta-rim split, whose fast group is exactly the module RNNs.
fn check_layout(layout: &Layout) -> Result<(), Error> {
    let ok = layout.mode() == Mode::MetaRim
        && layout
            .entry(TensorKind::RimRnn)
            .is_some_and(|e| e.group == Group::Fast && e.offset == 0 && e.len == TINY_FAST)
        && layout.group_len(Group::Fast) == TINY_FAST;
    if ok {
        Ok(())
    } else {
        Err(Error::BadDims {
            what: "adaptation needs the Tiny preset in the meta-rim split",
        })
    }
}

/// Episode totals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpisodeStats {
    /// Episodes run.
    pub episodes: u32,
    /// Episodes that reached their goal.
    pub successes: u32,
    /// Sum of returns.
    pub return_sum: f32,
    /// Steps taken.
    pub steps: u32,
    /// Windows learned from.
    pub updates: u32,
    /// Optimiser steps taken on the fast group.
    pub optimizer_steps: u32,
    /// Mean pre-clip gradient norm of those steps.
    pub mean_grad_norm: f32,
    /// Fraction of those steps whose gradient was clipped.
    pub clip_fraction: f32,
    /// Mean GAE advantage of the steps learned from.
    pub mean_advantage: f32,
    /// Mean policy entropy at the steps learned from.
    pub mean_entropy: f32,
    /// What the adaptation guard did (default when not adapting).
    pub guard: GuardReport,
}

impl EpisodeStats {
    /// Success rate (0 with no episodes).
    pub fn success_rate(&self) -> f32 {
        if self.episodes == 0 {
            0.0
        } else {
            self.successes as f32 / self.episodes as f32
        }
    }
}

/// Where [`play_episodes`] runs and what it may adapt.
pub struct Session<'a> {
    /// Tiny meta-rim layout.
    pub layout: &'a Layout,
    /// Fast group (adapted in place when adapting).
    pub fast: &'a mut [f32; TINY_FAST],
    /// Frozen slow group.
    pub slow: &'a [f32],
    /// Frozen other group.
    pub other: &'a [f32],
    /// The environment.
    pub env: &'a mut Env,
    /// Acting state.
    pub actor: &'a mut TinyActor,
}

impl Session<'_> {
    /// Start episode `index` of seed `seed` on `level` ([`episode_stream`]: the level generated
    /// from the stream's first draw, the actor started on its mission). Returns the episode's
    /// generator, from which its actions are drawn, and the level seed. Always inlined: as a
    /// frame of its own it added 272 B to the firmware's deepest stack (the level generator
    /// runs below it).
    #[inline(always)]
    pub fn begin_episode(
        &mut self,
        level: &Level,
        seed: u64,
        index: u64,
    ) -> Result<(Pcg32, u64), Error> {
        let (rng, level_seed) = episode_stream(seed, index);
        level.reset(self.env, level_seed)?;
        let bufs = GroupBufs {
            fast: &self.fast[..],
            slow: self.slow,
            other: self.other,
        };
        self.actor
            .start_mission(self.layout, bufs, self.env.mission.as_str())?;
        Ok((rng, level_seed))
    }
}

/// What [`play_episodes`] needs to adapt: the adapter's buffers, the settings, and the
/// starting fast weights the guard restores (the blob in flash on the device: no RAM).
pub struct Adaptation<'a, const W: usize> {
    /// Window, gradient and work buffer.
    pub adapter: &'a mut TinyAdapter<W>,
    /// Hyper-parameters, the guard's included.
    pub cfg: &'a AdaptConfig,
    /// The fast group as adaptation found it ([`TINY_FAST`] values).
    pub initial_fast: &'a [f32],
}

/// Run episodes `first..first + count` of `level` (episode `i`: generator
/// `Pcg32::with_stream(split_mix64(seed), i)`, whose first draw seeds the level, the rest the
/// actions). Without an adapter the policy acts (argmax or sampled). With one it samples, and
/// in the episodes its guard lets learn ([`Guard`]) it records every step and updates the fast
/// group whenever the window fills (bootstrapping from the next step's value) and at every
/// episode end; after each episode the guard may restore the starting weights or stop
/// learning, and after the last it restores them unless the adapted weights earned their
/// place.
#[allow(clippy::too_many_arguments)]
pub fn play_episodes<const W: usize>(
    s: &mut Session<'_>,
    level: &Level,
    seed: u64,
    first: u64,
    count: u64,
    argmax: bool,
    mut adapt: Option<Adaptation<'_, W>>,
) -> Result<EpisodeStats, Error> {
    let mut guard = Guard::new(&GuardConfig::OFF)?;
    if let Some(a) = &adapt {
        a.cfg.validate()?;
        if a.initial_fast.len() != TINY_FAST {
            return Err(Error::BadDims {
                what: "adaptation: the starting fast weights have the wrong length",
            });
        }
        guard = Guard::new(&a.cfg.guard)?;
    }
    // Adapting always samples (the learner needs the log-probabilities of sampled actions).
    let act_argmax = argmax && adapt.is_none();
    let mut stats = EpisodeStats::default();
    let mut obs = [[0u8; 3]; VIEW_CELLS];
    let mut state_in = [0.0f32; TINY_STATE];
    for i in first..first.saturating_add(count) {
        let (mut rng, _) = s.begin_episode(level, seed, i)?;
        // This episode's learner: the adapter with the learning rate the guard allows, or
        // none while the guard probes or after it stopped learning.
        let mut learner = match adapt.as_mut() {
            Some(a) if guard.learning() => {
                let mut cfg = *a.cfg;
                cfg.lr *= guard.lr_scale();
                Some((&mut *a.adapter, cfg))
            }
            _ => None,
        };
        let mut ret = 0.0f32;
        let mut start = true;
        loop {
            s.env.observe(&mut obs);
            state_in.copy_from_slice(&s.actor.state);
            let bufs = GroupBufs {
                fast: &s.fast[..],
                slow: s.slow,
                other: s.other,
            };
            let value = s.actor.step_with(s.layout, bufs, &obs)?;
            // A full window waits for this step's value to bootstrap from, then updates.
            if let Some((ad, cfg)) = learner.as_mut() {
                if ad.is_full() {
                    ad.update(s.layout, s.fast, s.slow, s.other, value, cfg)?;
                }
            }
            let (a, logprob) = if act_argmax {
                argmax_action(&s.actor.logits)
            } else {
                sample_action(&s.actor.logits, &mut rng)
            };
            let action = Action::ALL
                .get(a)
                .copied()
                .ok_or(Error::BadAction(a as i64))?;
            let out = s.env.step(action);
            ret += out.reward;
            stats.steps += 1;
            let done = out.terminated || out.truncated;
            if let Some((ad, cfg)) = learner.as_mut() {
                ad.record(&ActedStep {
                    x: s.actor.memory_input(),
                    state_in: &state_in,
                    episode_start: start,
                    action: a,
                    logprob,
                    value,
                    reward: out.reward * cfg.reward_scale,
                    done,
                })?;
                if done {
                    ad.update(s.layout, s.fast, s.slow, s.other, 0.0, cfg)?;
                }
            }
            start = false;
            if done {
                stats.episodes += 1;
                let success = out.reward > 0.0;
                stats.successes += u32::from(success);
                stats.return_sum += ret;
                if let Some(a) = adapt.as_mut() {
                    match guard.end_episode(success) {
                        GuardAction::Continue => {}
                        GuardAction::Stop => a.adapter.clear(),
                        GuardAction::Restore => {
                            a.adapter.clear();
                            s.fast.copy_from_slice(a.initial_fast);
                        }
                    }
                }
                break;
            }
        }
    }
    if let Some(a) = adapt {
        if !guard.keep_at_end() {
            s.fast.copy_from_slice(a.initial_fast);
        }
        a.adapter.totals.report_into(&mut stats);
        stats.guard = guard.report();
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mission::vocab::{tokenize, MAX_TOKENS};

    /// A step with memory input `x`, a zero state and zero log-probability, value and reward.
    fn zero_step(x: &[f32], episode_start: bool, action: usize, done: bool) -> ActedStep<'_> {
        ActedStep {
            x,
            state_in: &[0.0; TINY_STATE],
            episode_start,
            action,
            logprob: 0.0,
            value: 0.0,
            reward: 0.0,
            done,
        }
    }
    use crate::nn::params::GroupBufsMut;
    use crate::nn::policy::init_params;
    use crate::nn::presets::{tiny_layout, TinyParams};
    extern crate std;
    use std::boxed::Box;

    fn model(seed: u64) -> (Layout, Box<TinyParams<f32>>) {
        let layout = tiny_layout().unwrap();
        let mut p = Box::new(TinyParams::<f32>::zeros());
        let bufs = GroupBufsMut {
            fast: &mut p.fast,
            slow: &mut p.slow,
            other: &mut p.other,
        };
        init_params(&layout, &Default::default(), seed, bufs).unwrap();
        (layout, p)
    }

    fn run(
        layout: &Layout,
        p: &mut TinyParams<f32>,
        cfg: Option<&AdaptConfig>,
        episodes: u64,
    ) -> (EpisodeStats, u32) {
        let level = Level::from_id("BabyAI-GoToLocalS6N3-v0").unwrap();
        let mut env = Box::new(Env::EMPTY);
        let mut actor = Box::<TinyActor>::default();
        let mut ad = Box::new(TinyAdapter::<8>::new());
        let (slow, other, initial) = (p.slow, p.other, p.fast);
        let mut s = Session {
            layout,
            fast: &mut p.fast,
            slow: &slow,
            other: &other,
            env: &mut env,
            actor: &mut actor,
        };
        let a = cfg.map(|cfg| Adaptation {
            adapter: &mut *ad,
            cfg,
            initial_fast: &initial,
        });
        let st = play_episodes(&mut s, &level, 7, 0, episodes, false, a).unwrap();
        (st, ad.totals.updates)
    }

    /// The learner without its guard (every episode learns, nothing is restored).
    fn unguarded() -> AdaptConfig {
        AdaptConfig {
            guard: GuardConfig::OFF,
            ..AdaptConfig::default()
        }
    }

    fn guarded(probe: u32, trail: u32, keep_z: f32, revert_z: f32, reverts: u32) -> AdaptConfig {
        AdaptConfig {
            guard: GuardConfig {
                probe_episodes: probe,
                trail_episodes: trail,
                keep_z,
                revert_z,
                stop_success: 2.0,
                max_reverts: reverts,
            },
            ..AdaptConfig::default()
        }
    }

    #[test]
    fn window_advantages_match_a_hand_computation_and_stop_at_episode_ends() {
        let cfg = AdaptConfig {
            gamma: 0.5,
            lambda: 0.5,
            ..AdaptConfig::default()
        };
        // Steps 0, 1 end an episode at 1 (reward 4); step 2 starts the next, bootstrap 2.
        let values = [1.0, 2.0, 3.0];
        let rewards = [0.0, 4.0, 1.0];
        let dones = [false, true, false];
        let mut adv = [0.0f32; 3];
        window_advantages(&values, &rewards, &dones, 2.0, &cfg, &mut adv);
        // t2: 1 + 0.5 * 2 - 3 = -1; t1: 4 - 2 = 2 (terminal); t0: 0 + 0.5 * 2 - 1 + 0.25 * 2 = 0.5.
        assert_eq!(adv, [0.5, 2.0, -1.0]);
    }

    #[test]
    fn the_guard_probes_restores_and_keeps_in_the_episode_loop() {
        let (layout, p0) = model(3);
        // Probe covers every episode: nothing learns, nothing changes.
        let mut p = p0.clone();
        let (st, updates) = run(&layout, &mut p, Some(&guarded(6, 2, 1.0, 2.0, 1)), 6);
        assert_eq!((updates, st.guard.probe_episodes), (0, 6));
        assert_eq!(p.fast, p0.fast);
        // A revert threshold every trailing window passes: learning restarts from the
        // starting weights, then gives up there.
        let mut p = p0.clone();
        let (st, updates) = run(&layout, &mut p, Some(&guarded(1, 2, 1.0, -1e9, 0)), 6);
        assert!(updates > 0);
        assert_eq!((st.guard.reverts, st.guard.stopped_after), (1, 3));
        assert_eq!(p.fast, p0.fast);
        assert!(!st.guard.kept);
        // A keep threshold every window passes: the adapted weights stay, and they are the
        // unguarded learner's after the same learning episodes.
        let mut p = p0.clone();
        let (st, _) = run(&layout, &mut p, Some(&guarded(1, 2, -1e9, 1e9, 0)), 6);
        assert!(st.guard.kept && p.fast != p0.fast);
        // The same keep threshold never met: the starting weights come back at the end.
        let mut p = p0.clone();
        let (st, _) = run(&layout, &mut p, Some(&guarded(1, 2, 1e9, 1e9, 0)), 6);
        assert!(!st.guard.kept);
        assert_eq!(p.fast, p0.fast);
    }

    #[test]
    fn adaptation_is_deterministic_and_writes_only_active_fast_blocks() {
        let (layout, p0) = model(3);
        let mut p1 = p0.clone();
        let mut p2 = p0.clone();
        let (s1, u1) = run(&layout, &mut p1, Some(&unguarded()), 6);
        let (s2, u2) = run(&layout, &mut p2, Some(&unguarded()), 6);
        assert_eq!((s1, u1), (s2, u2));
        assert_eq!(p1.fast, p2.fast);
        assert!(u1 > 0 && s1.steps > 0);
        assert!(p1.fast != p0.fast, "adaptation changed nothing");
        // Frozen groups are passed by shared reference; check they are untouched anyway.
        assert_eq!(p1.slow, p0.slow);
        assert_eq!(p1.other, p0.other);
        // Without an adapter nothing changes.
        let mut p3 = p0.clone();
        let _ = run(&layout, &mut p3, None, 3);
        assert_eq!(p3.fast, p0.fast);
    }

    #[test]
    fn an_update_only_moves_modules_active_in_the_window() {
        let (layout, mut p) = model(5);
        let mut ad = Box::new(TinyAdapter::<4>::new());
        fill_window(&layout, &p, &mut ad, 1, 1.0);
        let mut active_any = [false; 4];
        // Which modules were active: recompute through the window's stored inputs.
        let policy = crate::nn::policy::Policy::new(&layout, p.bufs()).unwrap();
        let mut cache = std::vec![0.0f32; crate::nn::policy::step_cache_len(&TINY)];
        let mut out = [0.0f32; TINY_STATE];
        let mut logits = [0.0f32; 7];
        for t in 0..4 {
            policy
                .step_from_input(
                    &ad.window.xs[t],
                    &ad.window.states[t],
                    &mut out,
                    &mut logits,
                    &mut cache,
                )
                .unwrap();
            for (a, f) in active_any.iter_mut().zip(policy.active_in_cache(&cache)) {
                *a |= f;
            }
        }
        assert!(ad.is_full());
        assert!(ad
            .record(&zero_step(&[0.0; TINY_X], false, 0, false))
            .is_err());
        let before = p.fast;
        let (slow, other) = (p.slow, p.other);
        let cfg = AdaptConfig {
            windows_per_step: 1,
            ..AdaptConfig::default()
        };
        let r = ad
            .update(&layout, &mut p.fast, &slow, &other, 0.0, &cfg)
            .unwrap();
        assert_eq!(r.steps, 4);
        assert_eq!(r.modules_updated, active_any.iter().filter(|a| **a).count());
        let per = TINY_FAST / 4;
        for m in 0..4 {
            let moved = before[m * per..(m + 1) * per] != p.fast[m * per..(m + 1) * per];
            assert_eq!(moved, active_any[m], "module {m}");
        }
        assert!(ad.is_empty());
    }

    #[test]
    fn zero_windows_per_step_is_an_error() {
        let d = AdaptConfig::default();
        d.validate().unwrap();
        let cfg = AdaptConfig {
            windows_per_step: 0,
            ..d
        };
        match cfg.validate() {
            Err(Error::BadConfig { what }) => assert!(what.contains("windows_per_step"), "{what}"),
            other => panic!("{cfg:?}: {other:?}"),
        }
        let (layout, mut p) = model(2);
        let mut ad = Box::new(TinyAdapter::<4>::new());
        fill_window(&layout, &p, &mut ad, 3, 0.0);
        let before = p.fast;
        let (slow, other) = (p.slow, p.other);
        let cfg = AdaptConfig {
            windows_per_step: 0,
            ..d
        };
        let e = ad.update(&layout, &mut p.fast, &slow, &other, 0.0, &cfg);
        assert!(matches!(e, Err(Error::BadConfig { .. })), "{e:?}");
        assert_eq!(p.fast, before, "nothing learned from a refused config");
    }

    #[test]
    fn wrong_layouts_and_lengths_are_errors() {
        let layout = Layout::new(&TINY, Mode::Joint).unwrap();
        let (_, mut p) = model(1);
        let mut ad = TinyAdapter::<2>::new();
        ad.record(&zero_step(&[0.0; TINY_X], true, 1, true))
            .unwrap();
        let (slow, other) = (p.slow, p.other);
        let cfg = AdaptConfig::default();
        assert!(ad
            .update(&layout, &mut p.fast, &slow, &other, 0.0, &cfg)
            .is_err());
        assert!(ad.record(&zero_step(&[0.0; 3], false, 0, false)).is_err());
        assert!(ad
            .record(&zero_step(&[0.0; TINY_X], false, 300, false))
            .is_err());
    }

    /// A window of `n` steps of the policy acting (argmax) in `level`'s episode `seed`,
    /// rewarding every step with `reward`.
    fn fill_window<const W: usize>(
        layout: &Layout,
        p: &TinyParams<f32>,
        ad: &mut TinyAdapter<W>,
        seed: u64,
        reward: f32,
    ) {
        let level = Level::from_id("BabyAI-GoToObj-v0").unwrap();
        let mut env = Box::new(Env::EMPTY);
        level.reset(&mut env, seed).unwrap();
        let mut tokens = [0u16; MAX_TOKENS];
        tokenize(env.mission.as_str(), &mut tokens).unwrap();
        let mut actor = Box::<TinyActor>::default();
        actor.start(layout, p, &tokens).unwrap();
        let mut obs = [[0u8; 3]; VIEW_CELLS];
        for t in 0..W {
            env.observe(&mut obs);
            let state_in = actor.state;
            let v = actor.step(layout, p, &obs).unwrap();
            let (a, lp) = argmax_action(&actor.logits);
            env.step(Action::ALL[a]);
            ad.record(&ActedStep {
                x: actor.memory_input(),
                state_in: &state_in,
                episode_start: t == 0,
                action: a,
                logprob: lp,
                value: v,
                reward,
                done: false,
            })
            .unwrap();
        }
    }

    #[test]
    fn accumulated_windows_take_one_step_on_their_mean_gradient() {
        let (layout, p0) = model(6);
        // No clipping, so the check sees the gradient's scale as well as its direction.
        let cfg = AdaptConfig {
            windows_per_step: 3,
            max_grad_norm: 1e9,
            ..AdaptConfig::default()
        };
        let mut p = p0.clone();
        let (slow, other) = (p.slow, p.other);
        let mut ad = Box::new(TinyAdapter::<4>::new());
        for w in 0..3u64 {
            fill_window(&layout, &p, &mut ad, 10 + w, 1.0);
            let r = ad
                .update(&layout, &mut p.fast, &slow, &other, 0.5, &cfg)
                .unwrap();
            let last = w == 2;
            assert_eq!(r.optimizer_steps, u32::from(last), "window {w}");
            assert_eq!(p.fast == p0.fast, !last, "window {w}");
        }
        assert_eq!((ad.totals.updates, ad.totals.optimizer_steps), (3, 1));
        // The same step from the mean of the three windows' gradients, computed directly.
        let policy = crate::nn::policy::Policy::new(&layout, p0.bufs()).unwrap();
        let mut grads = std::vec![0.0f32; TINY_FAST];
        let mut work = std::vec![0.0f32; TINY_FAST_WORK];
        let mut one = Box::new(TinyAdapter::<4>::new());
        let mut active = [false; 4];
        for w in 0..3u64 {
            fill_window(&layout, &p0, &mut one, 10 + w, 1.0);
            one.window.advantages(0.5, &cfg);
            let steps: std::vec::Vec<FastStep<'_, f32>> =
                (0..4).map(|t| one.window.fast_step(t)).collect();
            let coefs = cfg.ppo_coefs();
            let st = policy
                .fast_window_backward(
                    &steps,
                    &coefs,
                    1.0 / 12.0,
                    CommGrad::Blocked,
                    &mut grads,
                    &mut work,
                )
                .unwrap();
            for (a, c) in active.iter_mut().zip(st.active_steps) {
                *a |= c > 0;
            }
            one.window.len = 0;
        }
        let norm = libm::sqrtf(grads.iter().map(|g| g * g).sum());
        let coef = clip_coef(norm, cfg.max_grad_norm);
        let per = TINY_FAST / 4;
        for (i, (w, w0)) in p.fast.iter().zip(p0.fast.iter()).enumerate() {
            let expect = if active[i / per] {
                w0 - cfg.lr * coef * grads[i]
            } else {
                *w0
            };
            assert!(
                (w - expect).abs() <= 1e-6 * (1.0 + expect.abs()),
                "weight {i}: {w} vs {expect}"
            );
        }
    }
}
