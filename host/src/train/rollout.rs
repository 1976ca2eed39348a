//! Vectorised environments and the rollout buffers: every env owns its generator, its
//! episode and a preallocated buffer of `frames_per_proc` steps; threads step disjoint sets of
//! envs for a whole rollout (the policy is fixed during it), so the result does not depend on
//! how envs are split across threads.
//!
//! Invariants:
//! - Buffers are allocated once ([`EnvSlot::new`]) and overwritten every rollout.
//! - `states[t]` is the memory state the policy read at step `t` (zeros at an episode start),
//!   so any chunk can be replayed from its first step's stored state.
//! - An env's episode is reproducible from `(level, episode_seed, actions)`, which is what a
//!   checkpoint stores (see [`EnvSnapshot`]).

use anyhow::{anyhow, bail, Context, Result};
use metarim_core::env::{Action, Env, Observation, VIEW_CELLS};
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::dims::{MemoryKind, ModelDims};
use metarim_core::nn::loss::PpoSample;
use metarim_core::nn::params::Role;
use metarim_core::nn::policy::{scratch_len, state_len};
use metarim_core::rng::{split_mix64, Pcg32};
use serde::{Deserialize, Serialize};

use super::tasks::Tasks;
use super::{sample_action, Model};
use crate::batch::encoder::EncoderBatch;
use crate::batch::memory::{MemoryBatch, MemoryWeights};
use crate::threads::for_each_part;

/// One finished episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeRecord {
    /// Level index (in the run's level list).
    pub level: usize,
    /// Undiscounted return (the env's reward, not scaled).
    pub ret: f64,
    /// Steps.
    pub len: u32,
    /// Reached its goal (reward > 0).
    pub success: bool,
}

/// The steps one env collected in the current rollout.
#[derive(Clone, Debug)]
pub struct ProcRollout {
    /// Observations.
    pub obs: Vec<Observation>,
    /// Mission tokens of each step's episode.
    pub tokens: Vec<[u16; MAX_TOKENS]>,
    /// First step of an episode.
    pub episode_start: Vec<bool>,
    /// Actions taken.
    pub action: Vec<u8>,
    /// Their log-probabilities under the acting policy.
    pub logprob: Vec<f32>,
    /// Values predicted while acting.
    pub value: Vec<f32>,
    /// Rewards, scaled by `reward_scale`.
    pub reward: Vec<f32>,
    /// The episode ended with this step.
    pub done: Vec<bool>,
    /// Memory state read at each step, `state_len` per step.
    pub states: Vec<f32>,
    /// Active RIM modules per step (bit i: module i).
    pub active: Vec<u16>,
    /// GAE advantages.
    pub advantage: Vec<f32>,
    /// Return targets (`value + advantage`).
    pub ret: Vec<f32>,
    /// Value of the state after the last step (bootstrap).
    pub next_value: f32,
    /// Memory input of each step as the acting policy computed it (encoder output ++
    /// instruction embedding), `memory_input` per step: gradient passes reuse it while the
    /// encoders' parameters are unchanged.
    pub x: Vec<f32>,
    /// PPO targets of each step (after [`gae`]).
    pub samples: Vec<PpoSample<f32>>,
}

impl ProcRollout {
    fn new(frames: usize, state_len: usize, input: usize) -> ProcRollout {
        ProcRollout {
            obs: vec![[[0; 3]; VIEW_CELLS]; frames],
            tokens: vec![[0; MAX_TOKENS]; frames],
            episode_start: vec![false; frames],
            action: vec![0; frames],
            logprob: vec![0.0; frames],
            value: vec![0.0; frames],
            reward: vec![0.0; frames],
            done: vec![false; frames],
            states: vec![0.0; frames * state_len],
            active: vec![0; frames],
            advantage: vec![0.0; frames],
            ret: vec![0.0; frames],
            next_value: 0.0,
            x: vec![0.0; frames * input],
            samples: vec![
                PpoSample {
                    action: 0,
                    old_logprob: 0.0,
                    old_value: 0.0,
                    advantage: 0.0,
                    ret: 0.0,
                };
                frames
            ],
        }
    }

    /// Steps in the buffer.
    pub fn len(&self) -> usize {
        self.action.len()
    }

    /// Whether the buffer holds no steps.
    pub fn is_empty(&self) -> bool {
        self.action.is_empty()
    }
}

/// What a checkpoint stores of one env to rebuild it exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvSnapshot {
    /// Generator state `(state, inc)`.
    pub rng: (u64, u64),
    /// Level of the current episode.
    pub level: usize,
    /// Seed the current episode was generated from.
    pub episode_seed: u64,
    /// Actions taken so far in the current episode.
    pub actions: Vec<u8>,
    /// The next step starts an episode.
    pub episode_start: bool,
    /// Return so far in the current episode (f64 bits, exact).
    pub ep_return_bits: u64,
}

/// One environment with its episode, generator and rollout buffer.
#[derive(Clone, Debug)]
pub struct EnvSlot {
    /// The environment.
    pub env: Env,
    /// Draws levels, episode seeds and actions.
    pub rng: Pcg32,
    /// Level index of the current episode.
    pub level: usize,
    /// Seed of the current episode.
    pub episode_seed: u64,
    /// Mission tokens of the current episode.
    pub tokens: [u16; MAX_TOKENS],
    /// Instruction embedding of the current episode under the current parameters.
    pub instr: Vec<f32>,
    /// Memory state.
    pub state: Vec<f32>,
    /// The next step starts an episode.
    pub episode_start: bool,
    /// Return so far.
    pub ep_return: f64,
    /// Actions of the current episode (to rebuild it on resume).
    pub actions: Vec<u8>,
    /// This rollout's steps.
    pub buf: ProcRollout,
    /// Episodes that finished during this rollout, in order.
    pub finished: Vec<EpisodeRecord>,
}

impl EnvSlot {
    /// Env `index` of a run seeded `seed`, with its first episode started.
    pub fn new(
        index: usize,
        seed: u64,
        model: &Model,
        tasks: &Tasks,
        frames: usize,
    ) -> Result<EnvSlot> {
        let d = *model.layout.dims();
        let sl = state_len(&d);
        let mut env = Env::new(8, 8).map_err(|e| anyhow!("creating an env: {e}"))?;
        // The run's rules, kept by every level reset after this.
        env.done_actions = tasks.done_actions;
        let mut slot = EnvSlot {
            env,
            rng: Pcg32::with_stream(split_mix64(seed), 0x0e4f_0000 + index as u64),
            level: 0,
            episode_seed: 0,
            tokens: [0; MAX_TOKENS],
            instr: vec![0.0; d.instr_hidden],
            state: vec![0.0; sl],
            episode_start: true,
            ep_return: 0.0,
            actions: Vec::new(),
            buf: ProcRollout::new(frames, sl, d.memory_input()),
            finished: Vec::new(),
        };
        slot.start_episode(tasks)?;
        Ok(slot)
    }

    /// Draw and generate the next episode.
    pub(crate) fn start_episode(&mut self, tasks: &Tasks) -> Result<()> {
        self.level = tasks.pick(&mut self.rng);
        self.episode_seed = self.rng.next_u64();
        self.generate(tasks)?;
        self.state.fill(0.0);
        self.episode_start = true;
        self.ep_return = 0.0;
        self.actions.clear();
        Ok(())
    }

    /// Step `t` of a rollout, once the policy has run: sample an action from `logits` with the
    /// slot's generator, step the env, and record the action, its log-probability, `value`, the
    /// reward times `reward_scale` and whether the episode ended; at an episode's end, record it
    /// and start the next. Returns whether a new episode started (its mission is new, so the
    /// caller re-encodes it). The CPU rollout and the GPU backend both act through this, so
    /// they draw and record alike.
    pub(crate) fn act(
        &mut self,
        t: usize,
        logits: &[f32],
        value: f32,
        tasks: &Tasks,
        reward_scale: f32,
    ) -> Result<bool> {
        let (a, logprob) = sample_action(logits, &mut self.rng);
        let out = self.env.step(Action::ALL[a]);
        self.actions.push(a as u8);
        self.ep_return += f64::from(out.reward);
        let b = &mut self.buf;
        b.action[t] = a as u8;
        b.logprob[t] = logprob;
        b.value[t] = value;
        b.reward[t] = out.reward * reward_scale;
        let done = out.terminated || out.truncated;
        b.done[t] = done;
        self.episode_start = false;
        if done {
            self.finished.push(EpisodeRecord {
                level: self.level,
                ret: self.ep_return,
                len: self.actions.len() as u32,
                success: out.reward > 0.0,
            });
            self.start_episode(tasks)
                .context("starting the next episode")?;
        }
        Ok(done)
    }

    fn generate(&mut self, tasks: &Tasks) -> Result<()> {
        let level = tasks
            .levels
            .get(self.level)
            .ok_or_else(|| anyhow!("level index {} out of range", self.level))?;
        level.reset(&mut self.env, self.episode_seed).map_err(|e| {
            anyhow!(
                "level {} failed to generate for seed {}: {e}",
                level.id(),
                self.episode_seed
            )
        })?;
        self.tokens = [0; MAX_TOKENS];
        tokenize(self.env.mission.as_str(), &mut self.tokens).map_err(|e| {
            anyhow!(
                "mission {:?} does not tokenise: {e}",
                self.env.mission.as_str()
            )
        })?;
        Ok(())
    }

    /// The snapshot a checkpoint stores.
    pub fn snapshot(&self) -> EnvSnapshot {
        EnvSnapshot {
            rng: self.rng.to_parts(),
            level: self.level,
            episode_seed: self.episode_seed,
            actions: self.actions.clone(),
            episode_start: self.episode_start,
            ep_return_bits: self.ep_return.to_bits(),
        }
    }

    /// Rebuild from a snapshot and a saved memory state: regenerate the episode and replay its
    /// actions (the env is deterministic), checking that the replay stays inside the episode.
    pub fn restore(&mut self, s: &EnvSnapshot, state: &[f32], tasks: &Tasks) -> Result<()> {
        if state.len() != self.state.len() {
            bail!(
                "saved memory state has {} values, the model needs {}",
                state.len(),
                self.state.len()
            );
        }
        self.rng = Pcg32::from_parts(s.rng.0, s.rng.1);
        self.level = s.level;
        self.episode_seed = s.episode_seed;
        self.generate(tasks)?;
        for (i, a) in s.actions.iter().enumerate() {
            let action = Action::from_index(i64::from(*a))
                .map_err(|_| anyhow!("saved action {a} is not an action"))?;
            let out = self.env.step(action);
            if out.terminated || out.truncated {
                bail!(
                    "saved episode ends at its action {i} of {}",
                    s.actions.len()
                );
            }
        }
        self.actions = s.actions.clone();
        self.episode_start = s.episode_start;
        self.ep_return = f64::from_bits(s.ep_return_bits);
        self.state.copy_from_slice(state);
        Ok(())
    }
}

/// One thread's batched acting step over its envs: the memory as a forward-only batched pass
/// of one step per env ([`crate::batch::rim`] / [`crate::batch::lstm`]), the encoder and the heads
/// as GEMMs over the envs. Each env's row is computed the same way whatever the split of
/// envs over threads (row-invariant products).
struct Actor {
    d: ModelDims,
    mem: MemoryBatch<f32>,
    x: Vec<f32>,
    h0: Vec<f32>,
    reset: Vec<bool>,
    hid: Vec<f32>,
    logits: Vec<f32>,
    value: Vec<f32>,
    masks: Vec<f32>,
    next: Vec<f32>,
    enc: EncoderBatch<f32>,
    scratch: Vec<f32>,
}

impl Actor {
    fn new(model: &Model, envs: usize) -> Result<Actor> {
        let d = *model.layout.dims();
        let e = envs.max(1);
        Ok(Actor {
            mem: MemoryBatch::new(&d, e, 1, false)?,
            x: vec![0.0; e * d.memory_input()],
            h0: vec![0.0; e * state_len(&d)],
            reset: vec![false; e],
            hid: vec![0.0; e * 2 * d.head_hidden],
            logits: vec![0.0; e * d.n_actions],
            value: vec![0.0; e],
            masks: vec![0.0; e * d.rim.n_modules],
            next: vec![0.0; e * state_len(&d)],
            enc: EncoderBatch::new(&d, e, false)?,
            scratch: vec![0.0; scratch_len(&d)],
            d,
        })
    }

    /// One step of every env in `slots` from its current observation (`obs`), instruction
    /// embedding and memory state: fills `x`, `logits`, `value`, `next` (outgoing states) and
    /// `masks`.
    fn step(&mut self, model: &Model, slots: &[EnvSlot], obs: &[&Observation]) -> Result<()> {
        let d = self.d;
        let e = slots.len();
        let (inp, feat, sl) = (d.memory_input(), d.obs_features(), state_len(&d));
        let p = model.params.bufs();
        let encoder = model.layout.block(&p, Role::Encoder);
        if d.film {
            let hi = d.instr_hidden;
            let e = self.enc.instr_mut(slots.len())?;
            for (er, slot) in e.chunks_exact_mut(hi).zip(slots) {
                er.copy_from_slice(&slot.instr[..hi]);
            }
        }
        self.enc.forward(encoder, obs, &mut self.x, inp, 0)?;
        for (i, slot) in slots.iter().enumerate() {
            let xr = &mut self.x[i * inp..(i + 1) * inp];
            xr[feat..].copy_from_slice(&slot.instr[..d.instr_hidden]);
            self.h0[i * sl..(i + 1) * sl].copy_from_slice(&slot.state);
        }
        let mem_w = MemoryWeights::new(&model.layout, &p);
        let mut shards = self.mem.shards(e, 1, &[0, e])?;
        let sh = shards
            .first_mut()
            .ok_or_else(|| anyhow!("acting: no shard"))?;
        sh.x_mut().copy_from_slice(&self.x[..e * inp]);
        sh.forward(&mem_w, &self.h0[..e * sl], &self.reset[..e])?;
        // The outgoing state `[h | c]` per env (`c` with LSTM cells, where `sl > hw`).
        let (hw, h, c) = (d.memory_width(), sh.h_out(), sh.c_out());
        for i in 0..e {
            let next = &mut self.next[i * sl..(i + 1) * sl];
            next[..hw].copy_from_slice(&h[i * hw..][..hw]);
            if sl > hw {
                next[hw..].copy_from_slice(&c[i * hw..][..hw]);
            }
        }
        if let Some(masks) = sh.masks() {
            self.masks[..e * d.rim.n_modules].copy_from_slice(masks);
        }
        drop(shards);
        let h_out = self.mem.h_out();
        let heads = model.layout.block(&p, Role::Heads);
        // The heads read `h` (`[e x W]` in both branches).
        crate::batch::heads::forward_rows(
            &d,
            heads,
            e,
            h_out,
            &mut self.hid,
            &mut self.logits,
            &mut self.value,
        )
    }
}

/// What a rollout reads besides the envs it steps: the same for the CPU collector
/// ([`collect`]) and the CUDA backend's.
#[derive(Clone, Copy)]
pub struct RolloutInputs<'a> {
    /// The model that acts.
    pub model: &'a Model,
    /// The levels an env draws its next episode from.
    pub tasks: &'a Tasks,
    /// The factor on every reward stored for training (`TrainConfig::reward_scale`).
    pub reward_scale: f32,
    /// Threads stepping the envs.
    pub threads: usize,
}

/// Collect one rollout of `frames_per_proc` steps in every env, on `inputs.threads` threads.
pub fn collect(slots: &mut [EnvSlot], inputs: &RolloutInputs<'_>) -> Result<()> {
    for_each_part(slots, inputs.threads, "rollout", |_, part| {
        collect_part(part, inputs)
    })
}

fn collect_part(slots: &mut [EnvSlot], inputs: &RolloutInputs<'_>) -> Result<()> {
    let (model, tasks, reward_scale) = (inputs.model, inputs.tasks, inputs.reward_scale);
    let policy = model.policy()?;
    let d = *model.layout.dims();
    let (sl, inp, na, nm) = (
        state_len(&d),
        d.memory_input(),
        d.n_actions,
        d.rim.n_modules,
    );
    let is_rim = d.memory == MemoryKind::Rim;
    let mut actor = Actor::new(model, slots.len())?;
    let err = |e| anyhow!("policy step: {e}");
    for slot in slots.iter_mut() {
        slot.finished.clear();
        policy
            .encode_instruction(&slot.tokens, &mut slot.instr, &mut actor.scratch)
            .map_err(err)?;
    }
    let frames = slots.first().map_or(0, |s| s.buf.len());
    let mut obs = vec![[[0u8; 3]; VIEW_CELLS]; slots.len()];
    for t in 0..frames {
        for (slot, o) in slots.iter_mut().zip(obs.iter_mut()) {
            let b = &mut slot.buf;
            slot.env.observe(o);
            b.obs[t] = *o;
            b.tokens[t] = slot.tokens;
            b.episode_start[t] = slot.episode_start;
            b.states[t * sl..(t + 1) * sl].copy_from_slice(&slot.state);
        }
        let refs: Vec<&Observation> = obs.iter().collect();
        actor.step(model, slots, &refs)?;
        for (i, slot) in slots.iter_mut().enumerate() {
            let b = &mut slot.buf;
            b.x[t * inp..(t + 1) * inp].copy_from_slice(&actor.x[i * inp..(i + 1) * inp]);
            b.active[t] = if is_rim {
                actor.masks[i * nm..(i + 1) * nm]
                    .iter()
                    .enumerate()
                    .fold(0u16, |m, (k, a)| m | (u16::from(*a != 0.0) << k))
            } else {
                0
            };
            // The state after the step; a new episode (in `act`) zeroes it again.
            slot.state
                .copy_from_slice(&actor.next[i * sl..(i + 1) * sl]);
            let logits = &actor.logits[i * na..(i + 1) * na];
            if slot.act(t, logits, actor.value[i], tasks, reward_scale)? {
                policy
                    .encode_instruction(&slot.tokens, &mut slot.instr, &mut actor.scratch)
                    .map_err(err)?;
            }
        }
    }
    // Bootstrap values of the states after the rollout.
    for (slot, o) in slots.iter().zip(obs.iter_mut()) {
        slot.env.observe(o);
    }
    let refs: Vec<&Observation> = obs.iter().collect();
    actor.step(model, slots, &refs)?;
    for (i, slot) in slots.iter_mut().enumerate() {
        slot.buf.next_value = actor.value[i];
    }
    Ok(())
}

/// Generalised advantage estimation over one env's buffer (episodes end at `done`, where
/// nothing is bootstrapped; the rollout's end bootstraps from `next_value`).
pub fn gae(b: &mut ProcRollout, gamma: f32, lambda: f32) {
    let n = b.len();
    metarim_core::nn::loss::gae(
        &b.value,
        &b.reward,
        &b.done,
        b.next_value,
        (gamma, lambda),
        &mut b.advantage,
    );
    for t in 0..n {
        b.ret[t] = b.value[t] + b.advantage[t];
        b.samples[t] = PpoSample {
            action: usize::from(b.action[t]),
            old_logprob: b.logprob[t],
            old_value: b.value[t],
            advantage: b.advantage[t],
            ret: b.ret[t],
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_matches_a_hand_computation_and_stops_at_episode_ends() {
        let mut b = ProcRollout::new(3, 1, 1);
        b.value = vec![1.0, 2.0, 3.0];
        b.reward = vec![0.0, 5.0, 0.0];
        b.done = vec![false, true, false];
        b.next_value = 4.0;
        gae(&mut b, 0.5, 0.5);
        // t=2: delta = 0 + 0.5*4 - 3 = -1
        // t=1: done, delta = 5 - 2 = 3, adv = 3
        // t=0: delta = 0 + 0.5*2 - 1 = 0, adv = 0 + 0.25*3 = 0.75
        assert_eq!(b.advantage, vec![0.75, 3.0, -1.0]);
        assert_eq!(b.ret, vec![1.75, 5.0, 2.0]);
    }

    /// `max |a - b| / max |b|`.
    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        crate::batch::normwise_rel_error(a, b).0
    }

    use metarim_core::nn::dims::{CellKind, ModelDims, SMALL, TINY};
    use metarim_core::nn::params::{Layout, Mode};

    /// `done_actions` in the config reaches every env of a rollout: under BabyAI's done-action
    /// rules only `done` earns a reward, without them facing the object does.
    #[test]
    fn done_action_rules_reach_the_rollout_envs() {
        let rewarded_actions = |done_actions: bool| {
            let cfg = crate::train::TrainConfig {
                level: "BabyAI-GoToObj-v0".into(),
                done_actions,
                ..crate::train::TrainConfig::device()
            };
            let model = crate::train::run::initial_model(&cfg).unwrap();
            let tasks = Tasks::new(&cfg).unwrap();
            let mut slots: Vec<EnvSlot> = (0..4)
                .map(|i| EnvSlot::new(i, 3, &model, &tasks, 400).unwrap())
                .collect();
            let inputs = RolloutInputs {
                model: &model,
                tasks: &tasks,
                reward_scale: 1.0,
                threads: 1,
            };
            collect(&mut slots, &inputs).unwrap();
            assert!(slots.iter().all(|s| s.env.done_actions == done_actions));
            let mut rewarded = Vec::new();
            for b in slots.iter().map(|s| &s.buf) {
                for (a, r) in b.action.iter().zip(&b.reward) {
                    if *r > 0.0 {
                        rewarded.push(*a);
                    }
                }
            }
            rewarded
        };
        let done = Action::Done as u8;
        let with = rewarded_actions(true);
        assert!(
            !with.is_empty() && with.iter().all(|a| *a == done),
            "{with:?}"
        );
        let without = rewarded_actions(false);
        assert!(without.iter().any(|a| *a != done), "{without:?}");
    }

    /// Acting in rollouts (the batched path, 1 and 2 threads) step for step against the core's
    /// per-sample `Policy::step` from the stored states: values, active modules, next states.
    fn batched_acting_matches_the_core_policy(dims: ModelDims, mode: Mode) {
        use metarim_core::nn::dims::MemoryKind;
        let model = Model::init(Layout::new(&dims, mode).unwrap(), 4).unwrap();
        let d = *model.layout.dims();
        let cfg = crate::train::TrainConfig::device();
        let tasks = Tasks::new(&cfg).unwrap();
        let frames = 90;
        let mut slots: Vec<EnvSlot> = (0..4)
            .map(|i| EnvSlot::new(i, 11, &model, &tasks, frames).unwrap())
            .collect();
        let mut two = slots.clone();
        let inputs = |threads| RolloutInputs {
            model: &model,
            tasks: &tasks,
            reward_scale: 20.0,
            threads,
        };
        collect(&mut slots, &inputs(1)).unwrap();
        collect(&mut two, &inputs(2)).unwrap();
        // Replay every env's steps with the core's per-sample policy from the stored states.
        let policy = model.policy().unwrap();
        let (sl, w) = (state_len(&d), d.memory_width());
        // LSTM cells (RIM modules or the LSTM memory) carry `[h | c]`, GRU modules `h` only.
        let carries_c = d.memory == MemoryKind::Lstm || d.rim.cell == CellKind::Lstm;
        assert_eq!(sl, if carries_c { 2 * w } else { w });
        let is_rim = d.memory == MemoryKind::Rim;
        let mut work = crate::model::StepWork::new(&d);
        let mut instr = vec![0.0; d.instr_hidden];
        let (mut starts, mut cells) = (0, 0);
        for (slot, other) in slots.iter().zip(&two) {
            let b = &slot.buf;
            assert_eq!(
                b.states, other.buf.states,
                "thread count changed the states"
            );
            assert_eq!(b.value, other.buf.value, "thread count changed the values");
            for t in 0..frames {
                let state = &b.states[t * sl..][..sl];
                if b.episode_start[t] {
                    assert!(state.iter().all(|v| *v == 0.0), "step {t}: state not reset");
                    starts += 1;
                } else if state[w..].iter().any(|v| *v != 0.0) {
                    cells += 1;
                }
                work.encode_instruction(&policy, &b.tokens[t], &mut instr)
                    .unwrap();
                let value = work.step(&policy, &b.obs[t], &instr, state).unwrap();
                assert!((value - b.value[t]).abs() <= 1e-4, "step {t}: value");
                if is_rim {
                    let active = policy.active_in_cache(&work.cache);
                    for (k, a) in active.iter().take(d.rim.n_modules).enumerate() {
                        assert_eq!(*a, b.active[t] & (1 << k) != 0, "step {t}: module {k}");
                    }
                }
                let stored = if t + 1 < frames {
                    &b.states[(t + 1) * sl..][..sl]
                } else {
                    &slot.state[..]
                };
                if t + 1 == frames || !b.episode_start[t + 1] {
                    assert!(
                        rel_err(&work.next[..w], &stored[..w]) <= 1e-4,
                        "step {t}: h"
                    );
                    assert!(
                        rel_err(&work.next[w..], &stored[w..]) <= 1e-4,
                        "step {t}: c"
                    );
                }
            }
        }
        // Episodes also start mid-rollout (from zeros again), and `c` is carried.
        assert!(starts > 4, "starts {starts}");
        assert!(!carries_c || cells > 4, "carried cells {cells}");
    }

    #[test]
    fn batched_acting_matches_the_core_policy_with_gru_modules() {
        batched_acting_matches_the_core_policy(TINY, Mode::MetaRim);
    }

    /// A RIM with LSTM modules: the acting step's outgoing state is `[h | c]` per env.
    #[test]
    fn batched_acting_matches_the_core_policy_with_lstm_modules() {
        batched_acting_matches_the_core_policy(TINY.with_cell(CellKind::Lstm), Mode::MetaRim);
    }

    #[test]
    fn batched_acting_matches_the_core_policy_with_the_lstm_memory() {
        batched_acting_matches_the_core_policy(TINY, Mode::Lstm);
    }

    /// The main job's model: the bag-of-words encoder FiLM-conditioned on the instruction.
    #[test]
    fn batched_acting_matches_the_core_policy_with_bow_and_film() {
        batched_acting_matches_the_core_policy(SMALL, Mode::MetaRim);
    }
}
