//! Adapting other parameter groups than the device's, on the host only: the baselines the
//! device learner is compared with (issue 22). The same episodes, sampling, window, PPO loss,
//! critic, gradient accumulation, clip, plain SGD and guard as the device's learner
//! (`metarim_core::adapt`), but the gradient is the full one of [`Policy::chunk_backward`]
//! (recomputed from each window's observations), and the step moves the chosen groups:
//!
//! - [`Groups::Fast`]: the module RNNs of the modules active in the window (the device's
//!   choice, the paper's fast/slow split), through the full backward: a check that the two
//!   gradients agree in effect;
//! - [`Groups::Attention`]: the slow group, the input and communication attention (the
//!   reversed split: fast attention, slow modules);
//! - [`Groups::All`]: every parameter (encoders, attention, modules, heads): an upper bound
//!   no device could run (it would need every group in RAM, plus the observations);
//! - [`Groups::FastCritic`]: the fast group and the critic head, for measuring a critic that
//!   learns the new level (with `value_coef` > 0; docs/RESULTS.md, "A critic that learns the
//!   new level": it adapts worse than the frozen critic).
//!
//! The critic stays frozen (value loss weight 0, as on the device) unless `value_coef` > 0
//! and the groups include it (`All`, `FastCritic`).
//!
//! Invariant: the episode loop draws exactly what `metarim_core::adapt::play_episodes` draws
//! (episode `i` of seed `S` from `Pcg32::with_stream(split_mix64(S), i)`), so a run here and a
//! device-learner run see the same levels.

use anyhow::{anyhow, Result};
use metarim_core::adapt::{
    window_advantages, AdaptConfig, EpisodeStats, Guard, GuardAction, LearnTotals,
};
use metarim_core::env::{Action, Env, Observation, VIEW_CELLS};
use metarim_core::levels::Level;
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::loss::{PpoCoefs, PpoSample};
use metarim_core::nn::optim::{clip_coef, Range, Sgd};
use metarim_core::nn::params::{Layout, TensorKind, FAST_RANGES};
use metarim_core::nn::policy::{chunk_work_len, ChunkStep, Policy, MAX_MODULES};
use metarim_core::nn::presets::TinyActor;
use metarim_core::nn::rim::CommGrad;
use metarim_core::nn::sample::sample_action;
use metarim_core::rng::episode_stream;

use crate::train::GroupVecs;

/// Which parameters adaptation may move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Groups {
    /// The device's: active modules' RNN weights (the fast group).
    Fast,
    /// The attention (the slow group): the reversed split.
    Attention,
    /// Every parameter: the host-only upper bound.
    All,
    /// The fast group and the critic head: the device's choice with a critic that learns the
    /// new level's values (with a value loss, `value_coef` > 0; the frozen critic is the
    /// baseline of every advantage).
    FastCritic,
}

impl Groups {
    /// Every choice, in the order the comparison table lists them.
    pub const ALL: [Groups; 4] = [
        Groups::Fast,
        Groups::Attention,
        Groups::All,
        Groups::FastCritic,
    ];

    /// The name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Groups::Fast => "fast",
            Groups::Attention => "attention",
            Groups::All => "all",
            Groups::FastCritic => "fast-critic",
        }
    }

    /// Parse a [`Groups::name`].
    pub fn parse(s: &str) -> Result<Groups> {
        Groups::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| {
                anyhow!("unknown parameter groups {s:?} (fast, attention, all or fast-critic)")
            })
    }
}

/// One acted step, as the full backward needs it.
#[derive(Clone)]
struct Recorded {
    obs: Observation,
    tokens: [u16; MAX_TOKENS],
    start: bool,
    action: usize,
    logprob: f32,
    value: f32,
    reward: f32,
    done: bool,
}

/// The window, the accumulated gradient and the running statistics.
struct Learner<'a> {
    layout: &'a Layout,
    groups: Groups,
    window: usize,
    steps: Vec<Recorded>,
    init_state: Vec<f32>,
    grads: GroupVecs,
    work: Vec<f32>,
    adv: Vec<f32>,
    acc_windows: u32,
    acc_steps: usize,
    acc_active: [bool; MAX_MODULES],
    stats: EpisodeStats,
    totals: LearnTotals,
    value_coef: f32,
}

impl<'a> Learner<'a> {
    fn new(layout: &'a Layout, groups: Groups, window: usize, value_coef: f32) -> Learner<'a> {
        Learner {
            layout,
            groups,
            window,
            steps: Vec::with_capacity(window),
            init_state: Vec::new(),
            grads: GroupVecs::zeros(layout),
            work: vec![0.0; chunk_work_len(layout.dims(), window)],
            adv: vec![0.0; window],
            acc_windows: 0,
            acc_steps: 0,
            acc_active: [false; MAX_MODULES],
            stats: EpisodeStats::default(),
            totals: LearnTotals::ZERO,
            value_coef,
        }
    }

    fn clear(&mut self) {
        self.steps.clear();
        self.acc_windows = 0;
        self.acc_steps = 0;
    }

    /// Learn from the window (as `TinyAdapter::update`): add its gradient, step every
    /// `windows_per_step` windows.
    fn update(&mut self, params: &mut GroupVecs, bootstrap: f32, cfg: &AdaptConfig) -> Result<()> {
        let n = self.steps.len();
        if n == 0 {
            return Ok(());
        }
        let values: Vec<f32> = self.steps.iter().map(|s| s.value).collect();
        let rewards: Vec<f32> = self.steps.iter().map(|s| s.reward).collect();
        let dones: Vec<bool> = self.steps.iter().map(|s| s.done).collect();
        window_advantages(
            &values,
            &rewards,
            &dones,
            bootstrap,
            cfg,
            &mut self.adv[..n],
        );
        let chunk: Vec<ChunkStep<'_, f32>> = self
            .steps
            .iter()
            .zip(&self.adv)
            .map(|(s, &a)| ChunkStep {
                obs: &s.obs,
                tokens: &s.tokens,
                episode_start: s.start,
                sample: PpoSample {
                    action: s.action,
                    old_logprob: s.logprob,
                    old_value: s.value,
                    advantage: a,
                    ret: s.value + a,
                },
            })
            .collect();
        if self.acc_windows == 0 {
            self.grads.fast.fill(0.0);
            self.grads.slow.fill(0.0);
            self.grads.other.fill(0.0);
            self.acc_steps = 0;
            self.acc_active = [false; MAX_MODULES];
        }
        let err = |e| anyhow!("adaptation ({}): {e}", self.groups.name());
        let stats = {
            let policy = Policy::new(self.layout, params.bufs()).map_err(err)?;
            policy
                .chunk_backward(
                    &chunk,
                    &self.init_state,
                    &PpoCoefs {
                        value_coef: self.value_coef,
                        ..cfg.ppo_coefs()
                    },
                    1.0,
                    CommGrad::Blocked,
                    self.grads.bufs_mut(),
                    &mut self.work[..chunk_work_len(self.layout.dims(), n)],
                )
                .map_err(err)?
        };
        self.totals
            .add_window(n, self.adv[..n].iter().sum::<f32>(), stats.sum.entropy);
        for (a, c) in self.acc_active.iter_mut().zip(stats.active_steps.iter()) {
            *a |= *c > 0;
        }
        self.acc_steps += n;
        self.acc_windows += 1;
        self.steps.clear();
        if self.acc_windows >= cfg.windows_per_step {
            self.step(params, cfg)?;
        }
        Ok(())
    }

    /// One SGD step on the mean accumulated gradient of the chosen groups, clipped globally.
    fn step(&mut self, params: &mut GroupVecs, cfg: &AdaptConfig) -> Result<()> {
        let nm = self.layout.dims().rim.n_modules.min(MAX_MODULES);
        let mut fast_ranges = heapless::Vec::<Range, FAST_RANGES>::new();
        let (fast, slow, other) = match self.groups {
            Groups::Fast | Groups::FastCritic => (true, false, false),
            Groups::Attention => (false, true, false),
            Groups::All => (true, true, true),
        };
        if fast {
            let active = &self.acc_active[..nm];
            self.layout
                .fast_ranges(active, &mut fast_ranges)
                .map_err(|e| anyhow!("{e}"))?;
        }
        let whole = |on: bool, len: usize| if on { vec![(0, len)] } else { vec![] };
        let (slow_ranges, mut other_ranges) = (
            whole(slow, self.grads.slow.len()),
            whole(other, self.grads.other.len()),
        );
        if self.groups == Groups::FastCritic {
            let critic = self
                .layout
                .entry(TensorKind::Critic)
                .ok_or_else(|| anyhow!("the layout has no critic"))?
                .range();
            other_ranges.push((critic.start, critic.len()));
        }
        let plan: [(&mut Vec<f32>, &mut Vec<f32>, Vec<Range>); 3] = [
            (&mut params.fast, &mut self.grads.fast, fast_ranges.to_vec()),
            (&mut params.slow, &mut self.grads.slow, slow_ranges),
            (&mut params.other, &mut self.grads.other, other_ranges),
        ];
        let inv = 1.0 / self.acc_steps.max(1) as f32;
        let mut sq = 0.0f32;
        for (_, g, ranges) in &plan {
            for &(off, len) in ranges {
                sq += g[off..off + len]
                    .iter()
                    .map(|x| (x * inv) * (x * inv))
                    .sum::<f32>();
            }
        }
        let norm = sq.sqrt();
        let scale = inv * clip_coef(norm, cfg.max_grad_norm);
        for (p, g, ranges) in plan {
            for &(off, len) in &ranges {
                g[off..off + len].iter_mut().for_each(|x| *x *= scale);
            }
            Sgd {
                lr: f64::from(cfg.lr),
            }
            .step_ranges(&mut p[..], &g[..], &ranges)
            .map_err(|e| anyhow!("{e}"))?;
        }
        self.acc_windows = 0;
        self.totals.add_step(norm, cfg.max_grad_norm);
        Ok(())
    }
}

/// Episodes `0..count` of `level` under `seed` (the device learner's adaptation episodes when
/// `seed` is its seed + 1), adapting `groups` of `params` with the settings and guard of `cfg`;
/// `initial` is what the guard restores. `window` steps per window (the device's 16).
#[allow(clippy::too_many_arguments)]
pub fn play_adapting(
    layout: &Layout,
    params: &mut GroupVecs,
    initial: &GroupVecs,
    groups: Groups,
    level: &Level,
    seed: u64,
    count: u64,
    window: usize,
    cfg: &AdaptConfig,
    value_coef: f32,
) -> Result<EpisodeStats> {
    cfg.validate().map_err(|e| anyhow!("{e}"))?;
    let mut guard = Guard::new(&cfg.guard).map_err(|e| anyhow!("{e}"))?;
    let mut learner = Learner::new(layout, groups, window.max(1), value_coef);
    let mut env = Box::new(Env::EMPTY);
    let mut actor = Box::<TinyActor>::default();
    let mut tokens = [0u16; MAX_TOKENS];
    let mut obs: Observation = [[0u8; 3]; VIEW_CELLS];
    let err = |e| anyhow!("adaptation: {e}");
    for i in 0..count {
        let (mut rng, level_seed) = episode_stream(seed, i);
        level.reset(&mut env, level_seed).map_err(err)?;
        // Tokenised here, not by `start_mission`: the full-gradient learner keeps the tokens.
        tokens.fill(0);
        tokenize(env.mission.as_str(), &mut tokens).map_err(err)?;
        actor
            .start_with(layout, params.bufs(), &tokens)
            .map_err(err)?;
        let learning = guard.learning();
        let mut step_cfg = *cfg;
        step_cfg.lr *= guard.lr_scale();
        let mut start = true;
        let mut ret = 0.0f32;
        loop {
            env.observe(&mut obs);
            let state_in = actor.state;
            let value = actor.step_with(layout, params.bufs(), &obs).map_err(err)?;
            if learning && learner.steps.len() >= learner.window {
                learner.update(params, value, &step_cfg)?;
            }
            let (a, logprob) = sample_action(&actor.logits, &mut rng);
            let action = Action::ALL
                .get(a)
                .copied()
                .ok_or_else(|| anyhow!("bad action {a}"))?;
            let out = env.step(action);
            ret += out.reward;
            learner.stats.steps += 1;
            let done = out.terminated || out.truncated;
            if learning {
                if learner.steps.is_empty() {
                    learner.init_state = state_in.to_vec();
                }
                learner.steps.push(Recorded {
                    obs,
                    tokens,
                    start,
                    action: a,
                    logprob,
                    value,
                    reward: out.reward * cfg.reward_scale,
                    done,
                });
                if done {
                    learner.update(params, 0.0, &step_cfg)?;
                }
            }
            start = false;
            if done {
                let success = out.reward > 0.0;
                learner.stats.episodes += 1;
                learner.stats.successes += u32::from(success);
                learner.stats.return_sum += ret;
                match guard.end_episode(success) {
                    GuardAction::Continue => {}
                    GuardAction::Stop => learner.clear(),
                    GuardAction::Restore => {
                        learner.clear();
                        params.clone_from(initial);
                    }
                }
                break;
            }
        }
    }
    if !guard.keep_at_end() {
        params.clone_from(initial);
    }
    let mut st = learner.stats;
    learner.totals.report_into(&mut st);
    st.guard = guard.report();
    Ok(st)
}
