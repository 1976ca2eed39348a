//! The presets as concrete types: fixed-size parameter, state and activation storage for the
//! `Paper` and `Tiny` models in the Meta-RIMs split, sized at compile time (no heap), and
//! non-generic f32 entry points so the device build compiles the whole policy for its target.
//!
//! Invariants: the `*_FAST`/`*_SLOW`/`*_OTHER` constants equal what [`Layout::new`] computes
//! for the preset in [`Mode::MetaRim`] (checked by a test), so a [`PresetParams`] is always a
//! valid buffer set for [`Policy::new`].

use crate::env::Observation;
use crate::error::Error;
use crate::mission::vocab::{tokenize, MAX_TOKENS};
use crate::nn::dims::{ModelDims, PAPER, TINY};
use crate::nn::encoder::encoder_param_len;
use crate::nn::heads::heads_param_len;
use crate::nn::instr::instr_param_len;
use crate::nn::params::{GroupBufs, Layout, Mode};
use crate::nn::policy::{scratch_len, state_len, step_cache_len, Policy};
use crate::nn::rim::rim_param_counts;
use crate::nn::scalar::Real;

const fn other_len(d: &ModelDims) -> usize {
    encoder_param_len(d) + instr_param_len(d) + heads_param_len(d)
}

/// Fast parameters of `Paper` (module RNNs).
pub const PAPER_FAST: usize = rim_param_counts(&PAPER.rim).fast();
/// Slow parameters of `Paper` (input and communication attention).
pub const PAPER_SLOW: usize = rim_param_counts(&PAPER.rim).slow();
/// Other parameters of `Paper` (encoders and heads).
pub const PAPER_OTHER: usize = other_len(&PAPER);
/// Fast parameters of `Tiny`.
pub const TINY_FAST: usize = rim_param_counts(&TINY.rim).fast();
/// Slow parameters of `Tiny`.
pub const TINY_SLOW: usize = rim_param_counts(&TINY.rim).slow();
/// Other parameters of `Tiny`.
pub const TINY_OTHER: usize = other_len(&TINY);
/// Memory state of `Tiny`.
pub const TINY_STATE: usize = state_len(&TINY);
/// One step's activations of `Tiny`.
pub const TINY_STEP_CACHE: usize = step_cache_len(&TINY);
/// Scratch of `Tiny`.
pub const TINY_SCRATCH: usize = scratch_len(&TINY);

/// One fixed array per parameter group.
#[derive(Clone, Debug, PartialEq)]
pub struct PresetParams<S, const FAST: usize, const SLOW: usize, const OTHER: usize> {
    /// Fast group.
    pub fast: [S; FAST],
    /// Slow group.
    pub slow: [S; SLOW],
    /// Other group.
    pub other: [S; OTHER],
}

impl<S: Real, const F: usize, const SL: usize, const O: usize> PresetParams<S, F, SL, O> {
    /// All zeros.
    pub fn zeros() -> Self {
        PresetParams {
            fast: [S::ZERO; F],
            slow: [S::ZERO; SL],
            other: [S::ZERO; O],
        }
    }

    /// Borrow as group buffers.
    pub fn bufs(&self) -> GroupBufs<'_, S> {
        GroupBufs {
            fast: &self.fast,
            slow: &self.slow,
            other: &self.other,
        }
    }
}

/// `Paper` parameters (Meta-RIMs split).
pub type PaperParams<S> = PresetParams<S, PAPER_FAST, PAPER_SLOW, PAPER_OTHER>;
/// `Tiny` parameters (Meta-RIMs split).
pub type TinyParams<S> = PresetParams<S, TINY_FAST, TINY_SLOW, TINY_OTHER>;

/// Working storage for acting with `Tiny` (state, next state, activations, scratch, logits).
#[derive(Clone, Debug)]
pub struct TinyActor {
    /// Memory state.
    pub state: [f32; TINY_STATE],
    next: [f32; TINY_STATE],
    cache: [f32; TINY_STEP_CACHE],
    scratch: [f32; TINY_SCRATCH],
    /// Instruction embedding of the current episode.
    pub instr: [f32; TINY.instr_hidden],
    /// Logits of the last step.
    pub logits: [f32; TINY.n_actions],
}

impl Default for TinyActor {
    fn default() -> Self {
        TinyActor {
            state: [0.0; TINY_STATE],
            next: [0.0; TINY_STATE],
            cache: [0.0; TINY_STEP_CACHE],
            scratch: [0.0; TINY_SCRATCH],
            instr: [0.0; TINY.instr_hidden],
            logits: [0.0; TINY.n_actions],
        }
    }
}

impl TinyActor {
    /// Start an episode with `tokens`: zero the memory and encode the mission.
    pub fn start(
        &mut self,
        layout: &Layout,
        params: &TinyParams<f32>,
        tokens: &[u16],
    ) -> Result<(), Error> {
        self.start_with(layout, params.bufs(), tokens)
    }

    /// [`TinyActor::start`] with parameters in any buffers (e.g. the frozen groups read in
    /// place from a device blob in flash and the fast group in RAM).
    pub fn start_with(
        &mut self,
        layout: &Layout,
        params: GroupBufs<'_, f32>,
        tokens: &[u16],
    ) -> Result<(), Error> {
        let policy = Policy::new(layout, params)?;
        self.state = [0.0; TINY_STATE];
        policy.encode_instruction(tokens, &mut self.instr, &mut self.scratch)
    }

    /// [`TinyActor::start_with`] on a mission's text: tokenised with the shared vocabulary
    /// (an error for an unknown word or more than [`MAX_TOKENS`] tokens, never a panic).
    pub fn start_mission(
        &mut self,
        layout: &Layout,
        params: GroupBufs<'_, f32>,
        mission: &str,
    ) -> Result<(), Error> {
        let mut tokens = [0u16; MAX_TOKENS];
        tokenize(mission, &mut tokens)?;
        self.start_with(layout, params, &tokens)
    }

    /// One step on `obs`: updates the memory, fills [`TinyActor::logits`], returns the value.
    pub fn step(
        &mut self,
        layout: &Layout,
        params: &TinyParams<f32>,
        obs: &Observation,
    ) -> Result<f32, Error> {
        self.step_with(layout, params.bufs(), obs)
    }

    /// The memory input of the last step (encoder output ++ instruction embedding), what an
    /// adaptation window stores per step (see [`crate::adapt`]).
    pub fn memory_input(&self) -> &[f32] {
        &self.cache[..TINY.memory_input()]
    }

    /// [`TinyActor::step`] with parameters in any buffers.
    pub fn step_with(
        &mut self,
        layout: &Layout,
        params: GroupBufs<'_, f32>,
        obs: &Observation,
    ) -> Result<f32, Error> {
        let policy = Policy::new(layout, params)?;
        let v = policy.step(
            obs,
            &self.instr,
            &self.state,
            &mut self.next,
            &mut self.logits,
            &mut self.cache,
            &mut self.scratch,
        )?;
        self.state = self.next;
        Ok(v)
    }
}

/// The `Tiny` layout in the Meta-RIMs split.
pub fn tiny_layout() -> Result<Layout, Error> {
    Layout::new(&TINY, Mode::MetaRim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::Group;

    #[test]
    fn constants_match_the_layouts() {
        for (d, f, s, o) in [
            (PAPER, PAPER_FAST, PAPER_SLOW, PAPER_OTHER),
            (TINY, TINY_FAST, TINY_SLOW, TINY_OTHER),
        ] {
            let l = Layout::new(&d, Mode::MetaRim).unwrap();
            assert_eq!(l.group_len(Group::Fast), f);
            assert_eq!(l.group_len(Group::Slow), s);
            assert_eq!(l.group_len(Group::Other), o);
        }
        assert_eq!(TINY.instr_hidden, 16);
        assert_eq!(TINY.n_actions, 7);
    }

    #[test]
    fn tiny_actor_runs_a_level() {
        use crate::env::{Action, Env};
        use crate::levels::Level;
        use crate::mission::vocab::{tokenize, MAX_TOKENS};
        let layout = tiny_layout().unwrap();
        let mut p = TinyParams::<f32>::zeros();
        {
            let bufs = crate::nn::params::GroupBufsMut {
                fast: &mut p.fast,
                slow: &mut p.slow,
                other: &mut p.other,
            };
            crate::nn::policy::init_params(&layout, &Default::default(), 1, bufs).unwrap();
        }
        let mut env = Env::new(8, 8).unwrap();
        Level::from_id("GoToLocal")
            .unwrap()
            .reset(&mut env, 0)
            .unwrap();
        let mut tokens = [0u16; MAX_TOKENS];
        tokenize(&env.mission, &mut tokens).unwrap();
        let mut actor = TinyActor::default();
        actor.start(&layout, &p, &tokens).unwrap();
        for _ in 0..10 {
            let v = actor.step(&layout, &p, &env.observation()).unwrap();
            assert!(v.is_finite());
            let a = (0..7)
                .max_by(|&i, &j| actor.logits[i].total_cmp(&actor.logits[j]))
                .unwrap();
            env.step(Action::ALL[a]);
        }
    }
}
