//! The policy: `encoder(obs) ++ instruction(mission) -> memory (RIM or LSTM) -> actor, critic`,
//! one step forward, and backward through time over a chunk of steps with the PPO loss.
//!
//! Invariants:
//! - The memory state is one flat slice `[h (W) | c (W, LSTM cells only)]`, `W` the memory width;
//!   [`state_len`] gives its length. At an episode start the incoming state is zeroed (masking),
//!   and no gradient crosses the boundary.
//! - The instruction embedding is computed once per episode segment (the mission is constant
//!   within an episode) and reused at each of its steps; its gradient is the sum over the
//!   segment's steps, backpropagated once (the segment's encoder pass is recomputed then, so a
//!   chunk keeps one instruction cache, not one per segment).
//! - Gradients come back in the parameters' own layout ([`Layout`], one buffer per group).
//! - Every buffer length is checked up front; nothing allocates or panics.

use crate::env::Observation;
use crate::error::{check_len, Error};
use crate::nn::dims::{CellKind, MemoryKind, ModelDims};
use crate::nn::encoder::{encode_backward, encode_forward, encoder_cache_len, encoder_scratch_len};
use crate::nn::heads::heads_init;
use crate::nn::heads::{heads_backward, heads_cache_len, heads_forward};
use crate::nn::init::{init_bias, init_gate_weight, init_weight, InitConfig, WeightInit};
use crate::nn::instr::instr_init;
use crate::nn::instr::{
    instr_backward, instr_cache_len, instr_encode, instr_encode_scratch_len, instr_forward,
    instr_scratch_len,
};
use crate::nn::loss::{ppo_loss, PpoCoefs, PpoSample, PpoTerms};
use crate::nn::ops::{lstm_backward, lstm_forward, LstmGrads, LstmWeights, LSTM_CACHE_PER_UNIT};
use crate::nn::params::{GroupBufs, GroupBufsMut, Layout, Role, TensorKind, MAX_TENSORS};
use crate::nn::rim::rnn_module_len;
use crate::nn::rim::{
    rim_step_backward, rim_step_forward, scratch_len as rim_scratch_len,
    step_cache_len as rim_cache_len, CommGrad, RimGrads, RimWeights,
};
use crate::nn::scalar::Real;
use crate::rng::Pcg32;

pub use crate::nn::dims::MAX_MODULES;

/// Length of the memory state `[h | c]`.
pub const fn state_len(d: &ModelDims) -> usize {
    let w = d.memory_width();
    match (d.memory, d.rim.cell) {
        (MemoryKind::Lstm, _) | (MemoryKind::Rim, CellKind::Lstm) => 2 * w,
        (MemoryKind::Rim, CellKind::Gru) => w,
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

const fn memory_cache_len(d: &ModelDims) -> usize {
    match d.memory {
        MemoryKind::Rim => rim_cache_len(&d.rim),
        MemoryKind::Lstm => LSTM_CACHE_PER_UNIT * d.memory_width(),
    }
}

/// Layout of one step's cache: `[x | enc cache | mem cache | h_out | heads cache | logits | value
/// | active flags (as S)]`.
const fn offsets(d: &ModelDims) -> [usize; 9] {
    let x = 0;
    let enc = x + d.memory_input();
    let mem = enc + encoder_cache_len(d);
    let h = mem + memory_cache_len(d);
    let heads = h + d.memory_width();
    let logits = heads + heads_cache_len(d);
    let value = logits + d.n_actions;
    let active = value + 1;
    let end = active + d.rim.n_modules;
    [x, enc, mem, h, heads, logits, value, active, end]
}

/// Activations one step keeps for the backward pass.
pub const fn step_cache_len(d: &ModelDims) -> usize {
    offsets(d)[8]
}

/// Scratch needed by [`Policy::step`] and the backward passes.
pub const fn scratch_len(d: &ModelDims) -> usize {
    let w = d.memory_width();
    let a = max(encoder_scratch_len(d), instr_encode_scratch_len(d));
    let b = max(rim_scratch_len(&d.rim), 4 * w);
    let c = max(instr_scratch_len(d), a);
    max(b, c)
}

/// Work buffer for [`Policy::chunk_backward`] over `t` steps: per step its cache, its incoming
/// state and its instruction embedding, plus state gradients, one instruction cache and scratch.
pub const fn chunk_work_len(d: &ModelDims, t: usize) -> usize {
    let per_step = step_cache_len(d) + state_len(d) + d.instr_hidden;
    t * per_step
        + 3 * state_len(d)
        + 2 * d.instr_hidden
        + d.memory_input()
        + instr_cache_len(d)
        + scratch_len(d)
        + 2 * d.n_actions
}

/// One step of a chunk as the trainer stored it.
#[derive(Clone, Copy, Debug)]
pub struct ChunkStep<'a, S> {
    /// Observation.
    pub obs: &'a Observation,
    /// Mission tokens (see [`crate::mission::vocab::tokenize`]).
    pub tokens: &'a [u16],
    /// First step of an episode: the memory restarts from zeros and the mission may change.
    pub episode_start: bool,
    /// PPO targets for this step.
    pub sample: PpoSample<S>,
}

/// Sums over a chunk's steps of the PPO loss terms, and which modules were ever active.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkStats<S> {
    /// Sum of the terms over the steps (divide by `steps` for means).
    pub sum: PpoTerms<S>,
    /// Number of steps.
    pub steps: usize,
    /// Steps each module was active.
    pub active_steps: [u32; MAX_MODULES],
}

impl<S: Real> ChunkStats<S> {
    /// No terms yet, over `steps` steps (0 for an accumulator).
    pub fn over(steps: usize) -> Self {
        ChunkStats {
            sum: PpoTerms::default(),
            steps,
            active_steps: [0; MAX_MODULES],
        }
    }

    /// Adds `other`'s sums, steps and module counts (the statistics of several chunks).
    pub fn accumulate(&mut self, other: &ChunkStats<S>) {
        self.sum.accumulate(&other.sum);
        self.steps += other.steps;
        for (a, b) in self.active_steps.iter_mut().zip(other.active_steps) {
            *a += b;
        }
    }
}

/// A policy: a layout and its parameters.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a, S> {
    layout: &'a Layout,
    params: GroupBufs<'a, S>,
}

struct MemWeights<'a, S> {
    rim: RimWeights<'a, S>,
    lstm: LstmWeights<'a, S>,
}

/// The work buffers [`Policy::chunk_forward`] fills (slices of `chunk_backward`'s `work`).
struct ChunkForward<'a, S> {
    caches: &'a mut [S],
    states: &'a mut [S],
    instrs: &'a mut [S],
    state_out: &'a mut [S],
    instr_tmp: &'a mut [S],
    logits: &'a mut [S],
    scratch: &'a mut [S],
}

/// The memory's backward for one step (RIM or LSTM, by `d.memory`), its states laid out
/// `[h | c]`: from the step's input `x`, incoming state, cache and the gradient `d_state`
/// arriving at its outgoing state, the weight gradients are added to `grads`, the input
/// gradient written to `dx` and the incoming state's to `d_prev`.
#[allow(clippy::too_many_arguments)]
fn memory_backward<S: Real>(
    d: &ModelDims,
    mw: &MemWeights<'_, S>,
    comm: CommGrad,
    x: &[S],
    state_in: &[S],
    cache: &[S],
    d_state: &[S],
    dx: &mut [S],
    d_prev: &mut [S],
    grads: (&mut RimGrads<'_, S>, &mut LstmGrads<'_, S>),
    scratch: &mut [S],
) -> Result<(), Error> {
    let w = d.memory_width();
    let (h_in, c_in) = state_in.split_at(w);
    let (dh, dc) = d_state.split_at(w);
    let (dhp, dcp) = d_prev.split_at_mut(w);
    match d.memory {
        MemoryKind::Rim => rim_step_backward(
            &mw.rim,
            &d.rim,
            comm,
            x,
            h_in,
            c_in,
            cache,
            dh,
            dc,
            Some(dx),
            dhp,
            dcp,
            grads.0,
            scratch,
        ),
        MemoryKind::Lstm => {
            lstm_backward(
                &mw.lstm,
                x,
                h_in,
                c_in,
                cache,
                dh,
                dc,
                Some(dx),
                dhp,
                dcp,
                grads.1,
                scratch,
            );
            Ok(())
        }
    }
}

/// Mutable per-block gradient slices, split out of the group buffers.
struct GradSlices<'a, S> {
    encoder: &'a mut [S],
    instr: &'a mut [S],
    heads: &'a mut [S],
    mem: heapless::Vec<(TensorKind, &'a mut [S]), MAX_TENSORS>,
}

impl<'a, S> GradSlices<'a, S> {
    fn take(&mut self, kind: TensorKind) -> &'a mut [S] {
        match self.mem.iter().position(|(k, _)| *k == kind) {
            Some(i) => self.mem.swap_remove(i).1,
            None => &mut [],
        }
    }

    /// The memory's gradient slices, taken out: the RIM's and the LSTM's (the ones this model
    /// does not have are empty).
    fn memory(&mut self) -> (RimGrads<'a, S>, LstmGrads<'a, S>) {
        let rim = RimGrads::from_parts(TensorKind::RIM.map(|k| self.take(k)));
        let lstm = LstmGrads::from_parts(TensorKind::LSTM.map(|k| self.take(k)));
        (rim, lstm)
    }
}

/// Split `bufs` into disjoint mutable slices: whole blocks for the encoder, instruction encoder
/// and heads, one slice per memory tensor.
fn split_grads<'a, S>(
    layout: &Layout,
    bufs: GroupBufsMut<'a, S>,
) -> Result<GradSlices<'a, S>, Error> {
    let mut out = GradSlices {
        encoder: &mut [],
        instr: &mut [],
        heads: &mut [],
        mem: heapless::Vec::new(),
    };
    for p in layout.split_mut(bufs).map_err(|_| Error::BadDims {
        what: "gradient buffers do not match the layout",
    })? {
        match p.role {
            Role::Encoder => out.encoder = p.data,
            Role::Instruction => out.instr = p.data,
            Role::Heads => out.heads = p.data,
            _ => out.mem.push((p.kind, p.data)).map_err(|_| Error::BadDims {
                what: "too many memory tensors",
            })?,
        }
    }
    Ok(out)
}

impl<'a, S: Real> Policy<'a, S> {
    /// A policy over `params`, which must match `layout`'s group sizes.
    pub fn new(layout: &'a Layout, params: GroupBufs<'a, S>) -> Result<Self, Error> {
        // At most MAX_MODULES modules: `Layout::new` refused any more.
        layout.check_bufs(&params)?;
        Ok(Policy { layout, params })
    }

    /// The layout.
    pub fn layout(&self) -> &'a Layout {
        self.layout
    }

    /// The model dimensions.
    pub fn dims(&self) -> &'a ModelDims {
        self.layout.dims()
    }

    fn mem_weights(&self) -> MemWeights<'a, S> {
        let l = self.layout;
        let p = &self.params;
        // One lookup per tensor written out: `TensorKind::RIM.map(|k| l.slice(p, k))` costs the
        // device 321 more instructions per policy step (docs/BENCHMARKS.md, "2026-12-04").
        let [k, v, q, rnn, cq, ck, cv, cg, co] = TensorKind::RIM;
        let [ih, hh, bih, bhh] = TensorKind::LSTM;
        MemWeights {
            rim: RimWeights::from_parts([
                l.slice(p, k),
                l.slice(p, v),
                l.slice(p, q),
                l.slice(p, rnn),
                l.slice(p, cq),
                l.slice(p, ck),
                l.slice(p, cv),
                l.slice(p, cg),
                l.slice(p, co),
            ]),
            lstm: LstmWeights::from_parts([
                l.slice(p, ih),
                l.slice(p, hh),
                l.slice(p, bih),
                l.slice(p, bhh),
            ]),
        }
    }

    /// The instruction embedding of `tokens` (once per episode). `out` needs `instr_hidden`,
    /// `scratch` [`scratch_len`].
    pub fn encode_instruction(
        &self,
        tokens: &[u16],
        out: &mut [S],
        scratch: &mut [S],
    ) -> Result<(), Error> {
        let instr = self.layout.block(&self.params, Role::Instruction);
        instr_encode(self.dims(), instr, tokens, out, scratch)
    }

    /// One step: from the observation, the episode's instruction embedding and the incoming
    /// memory state, write the outgoing state, the action logits, and the activations into
    /// `cache` ([`step_cache_len`]); returns the value. Which modules were active is stored in
    /// the cache ([`Policy::active_in_cache`]).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        obs: &Observation,
        instr: &[S],
        state_in: &[S],
        state_out: &mut [S],
        logits: &mut [S],
        cache: &mut [S],
        scratch: &mut [S],
    ) -> Result<S, Error> {
        let d = self.dims();
        let o = offsets(d);
        let sl = state_len(d);
        check_len(instr.len(), d.instr_hidden)?;
        check_len(state_in.len(), sl)?;
        check_len(state_out.len(), sl)?;
        check_len(logits.len(), d.n_actions)?;
        check_len(cache.len(), o[8])?;
        check_len(scratch.len(), scratch_len(d))?;
        let feat = d.obs_features();
        let encoder = self.layout.block(&self.params, Role::Encoder);
        {
            let (x, rest) = cache.split_at_mut(o[1]);
            let enc_cache = &mut rest[..o[2] - o[1]];
            encode_forward(d, encoder, obs, instr, &mut x[..feat], enc_cache)?;
            x[feat..].copy_from_slice(&instr[..d.instr_hidden]);
        }
        self.forward_tail(state_in, state_out, logits, cache)
    }

    /// Memory and heads only, from a precomputed memory input `x` (the encoder output followed
    /// by the instruction embedding, as [`Policy::step`] builds it): the same outputs and cache
    /// as [`Policy::step`] except the encoder's part of the cache, which is left untouched.
    /// Lets a device keep only `x` and the incoming state per step and recompute the rest.
    pub fn step_from_input(
        &self,
        x: &[S],
        state_in: &[S],
        state_out: &mut [S],
        logits: &mut [S],
        cache: &mut [S],
    ) -> Result<S, Error> {
        let d = self.dims();
        let o = offsets(d);
        let sl = state_len(d);
        check_len(x.len(), d.memory_input())?;
        check_len(state_in.len(), sl)?;
        check_len(state_out.len(), sl)?;
        check_len(logits.len(), d.n_actions)?;
        check_len(cache.len(), o[8])?;
        cache[o[0]..o[1]].copy_from_slice(&x[..d.memory_input()]);
        self.forward_tail(state_in, state_out, logits, cache)
    }

    /// Everything after the memory input: memory step, heads, cache bookkeeping (lengths
    /// checked by the callers).
    fn forward_tail(
        &self,
        state_in: &[S],
        state_out: &mut [S],
        logits: &mut [S],
        cache: &mut [S],
    ) -> Result<S, Error> {
        let d = self.dims();
        let o = offsets(d);
        let sl = state_len(d);
        let w = d.memory_width();
        let (x, rest) = cache.split_at_mut(o[1]);
        let (_enc_cache, rest) = rest.split_at_mut(o[2] - o[1]);
        let (mem_cache, rest) = rest.split_at_mut(o[3] - o[2]);
        let (h_out, rest) = rest.split_at_mut(o[4] - o[3]);
        let (heads_cache, rest) = rest.split_at_mut(o[5] - o[4]);
        let (lg, rest) = rest.split_at_mut(o[6] - o[5]);
        let (value_slot, active_slot) = rest.split_at_mut(1);
        let (h_in, c_in) = state_in[..sl].split_at(w);
        let (h_o, c_o) = state_out[..sl].split_at_mut(w);
        let mw = self.mem_weights();
        let mut active = [false; MAX_MODULES];
        match d.memory {
            MemoryKind::Rim => {
                let n = d.rim.n_modules;
                rim_step_forward(
                    &mw.rim,
                    &d.rim,
                    x,
                    h_in,
                    c_in,
                    h_o,
                    c_o,
                    &mut active[..n],
                    mem_cache,
                )?;
            }
            MemoryKind::Lstm => {
                lstm_forward(&mw.lstm, x, h_in, c_in, h_o, c_o, mem_cache);
            }
        }
        h_out.copy_from_slice(h_o);
        let heads = self.layout.block(&self.params, Role::Heads);
        let value = heads_forward(d, heads, h_o, lg, heads_cache)?;
        logits[..d.n_actions].copy_from_slice(lg);
        value_slot[0] = value;
        for (slot, a) in active_slot.iter_mut().zip(active.iter()) {
            *slot = if *a { S::ONE } else { S::ZERO };
        }
        Ok(value)
    }

    /// Which modules a step (its cache from [`Policy::step`]) activated.
    pub fn active_in_cache(&self, cache: &[S]) -> [bool; MAX_MODULES] {
        let d = self.dims();
        let o = offsets(d);
        let mut out = [false; MAX_MODULES];
        if let Some(flags) = cache.get(o[7]..o[8]) {
            for (a, f) in out.iter_mut().zip(flags) {
                *a = *f != S::ZERO;
            }
        }
        out
    }

    /// Backpropagates a segment's summed instruction-embedding gradient `d_instr` through the
    /// instruction encoder (re-run on `tokens` to rebuild its cache) into `g_instr`, then clears
    /// `d_instr`. `bufs`: the embedding, the encoder's cache, scratch.
    fn instruction_backward(
        &self,
        tokens: &[u16],
        d_instr: &mut [S],
        g_instr: &mut [S],
        bufs: (&mut [S], &mut [S], &mut [S]),
    ) -> Result<(), Error> {
        let d = self.dims();
        let instr_p = self.layout.block(&self.params, Role::Instruction);
        let (embedding, cache, scratch) = bufs;
        instr_forward(d, instr_p, tokens, embedding, cache)?;
        instr_backward(d, instr_p, tokens, cache, d_instr, g_instr, scratch)?;
        d_instr.fill(S::ZERO);
        Ok(())
    }

    /// The forward half of [`Self::chunk_backward`]: every step's incoming state, instruction
    /// embedding and cache into `bufs` (the instruction re-encoded at the chunk's first step and
    /// at each episode start), and the steps each module was active added to `active_steps`.
    fn chunk_forward(
        &self,
        steps: &[ChunkStep<'_, S>],
        init_state: &[S],
        bufs: ChunkForward<'_, S>,
        active_steps: &mut [u32; MAX_MODULES],
    ) -> Result<(), Error> {
        let d = self.dims();
        let (sl, cl, hi) = (state_len(d), step_cache_len(d), d.instr_hidden);
        let ChunkForward {
            caches,
            states,
            instrs,
            state_out,
            instr_tmp,
            logits,
            scratch,
        } = bufs;
        for (t, st) in steps.iter().enumerate() {
            let state_in = &mut states[t * sl..(t + 1) * sl];
            if st.episode_start {
                state_in.fill(S::ZERO);
            } else if t == 0 {
                state_in.copy_from_slice(&init_state[..sl]);
            } else {
                state_in.copy_from_slice(state_out);
            }
            if t == 0 || st.episode_start {
                self.encode_instruction(st.tokens, instr_tmp, scratch)?;
            }
            instrs[t * hi..(t + 1) * hi].copy_from_slice(instr_tmp);
            let cache = &mut caches[t * cl..(t + 1) * cl];
            self.step(
                st.obs, instr_tmp, state_in, state_out, logits, cache, scratch,
            )?;
            for (n, a) in self.active_in_cache(cache).iter().enumerate() {
                if *a {
                    active_steps[n] += 1;
                }
            }
        }
        Ok(())
    }

    /// Forward over a chunk of `steps` from `init_state` (the state stored at the chunk start),
    /// then backward through time of the summed PPO loss (each step's loss scaled by `scale`),
    /// accumulating parameter gradients into `grads` (same layout as the parameters).
    /// `work` needs [`chunk_work_len`]`(dims, steps.len())` elements.
    #[allow(clippy::too_many_arguments)]
    pub fn chunk_backward(
        &self,
        steps: &[ChunkStep<'_, S>],
        init_state: &[S],
        coefs: &PpoCoefs<S>,
        scale: S,
        comm: CommGrad,
        grads: GroupBufsMut<'_, S>,
        work: &mut [S],
    ) -> Result<ChunkStats<S>, Error> {
        let d = self.dims();
        let t_len = steps.len();
        let sl = state_len(d);
        let cl = step_cache_len(d);
        let hi = d.instr_hidden;
        let w = d.memory_width();
        check_len(init_state.len(), sl)?;
        check_len(work.len(), chunk_work_len(d, t_len))?;
        self.layout.check_bufs(&grads.as_ref())?;
        let mut g = split_grads(self.layout, grads)?;
        let (caches, rest) = work.split_at_mut(t_len * cl);
        let (states, rest) = rest.split_at_mut(t_len * sl);
        let (instrs, rest) = rest.split_at_mut(t_len * hi);
        let (state_out, rest) = rest.split_at_mut(sl);
        let (d_state, rest) = rest.split_at_mut(sl);
        let (d_prev, rest) = rest.split_at_mut(sl);
        let (d_instr, rest) = rest.split_at_mut(hi);
        let (instr_tmp, rest) = rest.split_at_mut(hi);
        let (dx, rest) = rest.split_at_mut(d.memory_input());
        let (instr_cache, rest) = rest.split_at_mut(instr_cache_len(d));
        let (scratch, rest) = rest.split_at_mut(scratch_len(d));
        let (logits, rest) = rest.split_at_mut(d.n_actions);
        let d_logits = &mut rest[..d.n_actions];

        let mut stats = ChunkStats::over(t_len);
        self.chunk_forward(
            steps,
            init_state,
            ChunkForward {
                caches,
                states,
                instrs,
                state_out,
                instr_tmp,
                logits,
                scratch,
            },
            &mut stats.active_steps,
        )?;

        // Backward through time.
        let o = offsets(d);
        let mw = self.mem_weights();
        let encoder = self.layout.block(&self.params, Role::Encoder);
        let heads = self.layout.block(&self.params, Role::Heads);
        let (mut rim_g, mut lstm_g) = g.memory();
        d_state.fill(S::ZERO);
        d_instr.fill(S::ZERO);
        for t in (0..t_len).rev() {
            let st = &steps[t];
            let cache = &caches[t * cl..(t + 1) * cl];
            let state_in = &states[t * sl..(t + 1) * sl];
            let x = &cache[o[0]..o[1]];
            let enc_cache = &cache[o[1]..o[2]];
            let mem_cache = &cache[o[2]..o[3]];
            let h_out = &cache[o[3]..o[4]];
            let heads_cache = &cache[o[4]..o[5]];
            let lg = &cache[o[5]..o[6]];
            let value = cache[o[6]];
            d_logits.fill(S::ZERO);
            let mut d_value = S::ZERO;
            let terms = ppo_loss(lg, value, &st.sample, coefs, scale, d_logits, &mut d_value)?;
            stats.sum.accumulate(&terms);
            // Heads: the loss gradient joins the gradient arriving from step t + 1.
            heads_backward(
                d,
                heads,
                h_out,
                heads_cache,
                d_logits,
                d_value,
                g.heads,
                Some(&mut d_state[..w]),
            )?;
            // Memory.
            dx.fill(S::ZERO);
            d_prev.fill(S::ZERO);
            let grads = (&mut rim_g, &mut lstm_g);
            memory_backward(
                d, &mw, comm, x, state_in, mem_cache, d_state, dx, d_prev, grads, scratch,
            )?;
            // Encoder and instruction embedding.
            let feat = d.obs_features();
            // With FiLM the encoder adds its instruction gradient into `d_instr` too.
            encode_backward(
                d,
                encoder,
                st.obs,
                &instrs[t * hi..(t + 1) * hi],
                enc_cache,
                &dx[..feat],
                g.encoder,
                d_instr,
                scratch,
            )?;
            for (a, b) in d_instr.iter_mut().zip(&dx[feat..]) {
                *a += *b;
            }
            // At a segment's first step, backpropagate its summed instruction gradient.
            if t == 0 || st.episode_start {
                let bufs = (&mut *instr_tmp, &mut *instr_cache, &mut *scratch);
                self.instruction_backward(st.tokens, d_instr, g.instr, bufs)?;
            }
            // The state gradient flows to step t - 1 unless this step started an episode (its
            // incoming state was zeros, not the previous step's output).
            if st.episode_start {
                d_state.fill(S::ZERO);
            } else {
                d_state.copy_from_slice(d_prev);
            }
        }
        Ok(stats)
    }

    /// Backward through time over an adaptation window for the module RNN weights only (the
    /// Meta-RIMs fast group), everything else held constant: memory input, attention, heads
    /// and critic. Memory-lean: the caller keeps only each step's memory input and incoming
    /// state ([`FastStep`]); each step's forward is recomputed from them during the backward
    /// sweep (two forward passes in all, one step's activations alive at a time). Gradients of
    /// the summed PPO loss (each step's times `scale`) accumulate into `rnn_grads`, laid out
    /// like the `RimRnn` tensor (module-major). `work` needs [`fast_work_len`] elements.
    ///
    /// Errors: an LSTM-memory policy (it has no module RNNs), or short buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn fast_window_backward(
        &self,
        steps: &[FastStep<'_, S>],
        coefs: &PpoCoefs<S>,
        scale: S,
        comm: CommGrad,
        rnn_grads: &mut [S],
        work: &mut [S],
    ) -> Result<ChunkStats<S>, Error> {
        let d = self.dims();
        if d.memory != MemoryKind::Rim {
            return Err(Error::BadDims {
                what: "fast-only adaptation needs a RIM memory (module RNNs)",
            });
        }
        let sl = state_len(d);
        let w = d.memory_width();
        check_len(
            rnn_grads.len(),
            self.layout.slice(&self.params, TensorKind::RimRnn).len(),
        )?;
        check_len(work.len(), fast_work_len(d))?;
        let (cache, rest) = work.split_at_mut(step_cache_len(d));
        let (state_out, rest) = rest.split_at_mut(sl);
        let (d_state, rest) = rest.split_at_mut(sl);
        let (d_prev, rest) = rest.split_at_mut(sl);
        let (scratch, rest) = rest.split_at_mut(scratch_len(d));
        let (logits, rest) = rest.split_at_mut(d.n_actions);
        let d_logits = &mut rest[..d.n_actions];
        let o = offsets(d);
        let mw = self.mem_weights();
        let heads = self.layout.block(&self.params, Role::Heads);
        let mut stats = ChunkStats::over(steps.len());
        // Only the module RNNs get gradient; empty slices skip every other weight gradient.
        let mut rim_g = RimGrads {
            rnn: rnn_grads,
            ..RimGrads::empty()
        };
        d_state.fill(S::ZERO);
        for st in steps.iter().rev() {
            check_len(st.state_in.len(), sl)?;
            let value = self.step_from_input(st.x, st.state_in, state_out, logits, cache)?;
            for (n, a) in self.active_in_cache(cache).iter().enumerate() {
                if *a {
                    stats.active_steps[n] += 1;
                }
            }
            d_logits.fill(S::ZERO);
            let mut d_value = S::ZERO;
            let terms = ppo_loss(
                logits,
                value,
                &st.sample,
                coefs,
                scale,
                d_logits,
                &mut d_value,
            )?;
            stats.sum.accumulate(&terms);
            let h_out = &cache[o[3]..o[4]];
            let heads_cache = &cache[o[4]..o[5]];
            let (dh, dc) = d_state.split_at_mut(w);
            heads_backward(
                d,
                heads,
                h_out,
                heads_cache,
                d_logits,
                d_value,
                &mut [],
                Some(dh),
            )?;
            d_prev.fill(S::ZERO);
            let (h_in, c_in) = st.state_in[..sl].split_at(w);
            let (dhp, dcp) = d_prev.split_at_mut(w);
            rim_step_backward(
                &mw.rim,
                &d.rim,
                comm,
                &cache[o[0]..o[1]],
                h_in,
                c_in,
                &cache[o[2]..o[3]],
                dh,
                dc,
                None,
                dhp,
                dcp,
                &mut rim_g,
                scratch,
            )?;
            if st.episode_start {
                d_state.fill(S::ZERO);
            } else {
                d_state.copy_from_slice(d_prev);
            }
        }
        Ok(stats)
    }
}

/// One step of an adaptation window for [`Policy::fast_window_backward`].
#[derive(Clone, Copy, Debug)]
pub struct FastStep<'a, S> {
    /// The memory input the policy read (encoder output ++ instruction embedding).
    pub x: &'a [S],
    /// The memory state it read (zeros at an episode start).
    pub state_in: &'a [S],
    /// First step of an episode: no gradient flows into the previous step.
    pub episode_start: bool,
    /// Loss targets.
    pub sample: PpoSample<S>,
}

/// Work buffer of [`Policy::fast_window_backward`] (independent of the window length): one
/// step's cache, three states, scratch and two logit vectors.
pub const fn fast_work_len(d: &ModelDims) -> usize {
    step_cache_len(d) + 3 * state_len(d) + scratch_len(d) + 2 * d.n_actions
}

/// Deterministic initialisation of every parameter from `seed` (docs/DESIGN.md,
/// "Initialisation"; see [`InitConfig`]): convolutions PyTorch's default (uniform
/// ±1/sqrt(fan_in), weights and biases), the bag-of-words and word embeddings
/// `cfg.embedding`, dense layers (attention projections, heads) `cfg.linear` with zero biases,
/// recurrent cells `cfg.recurrent` per gate block. Each block draws from its own stream, so
/// changing one block's size leaves the others' values unchanged.
pub fn init_params<S: Real>(
    layout: &Layout,
    cfg: &InitConfig,
    seed: u64,
    bufs: GroupBufsMut<'_, S>,
) -> Result<(), Error> {
    let d = *layout.dims();
    let mut s = split_grads(layout, bufs)?;
    let stream = |i: u64| Pcg32::with_stream(seed, 0x5eed_0000 + i);
    // Encoder: tensor by tensor, in its layout order.
    let mut rng = stream(0);
    let mut rest = core::mem::take(&mut s.encoder);
    for e in layout.entries().iter().filter(|e| e.role == Role::Encoder) {
        let n = e.len.min(rest.len());
        let (t, r) = core::mem::take(&mut rest).split_at_mut(n);
        rest = r;
        let dims = e.dims();
        if e.name.contains(".film.") {
            // FiLM starts as the identity (gamma = beta = 0 for every instruction), so a FiLM
            // encoder starts as the plain one; it draws nothing, leaving the others' values.
            t.fill(S::ZERO);
        } else if e.name.ends_with("embedding.weight") {
            init_weight(cfg.embedding, dims[0], dims[1], dims[1], &mut rng, t)?;
        } else if dims.len() == 4 {
            let fan = dims[1] * dims[2] * dims[3];
            init_weight(WeightInit::TorchDefault, dims[0], fan, fan, &mut rng, t)?;
        } else {
            // A conv bias: its fan is the previous weight's.
            let fan = layout
                .entries()
                .iter()
                .rev()
                .find(|w| w.role == Role::Encoder && w.offset < e.offset && w.rank == 4)
                .map(|w| w.len / w.shape[0].max(1))
                .unwrap_or(1);
            init_bias(WeightInit::TorchDefault, fan, &mut rng, t);
        }
    }
    instr_init(&d, cfg, &mut stream(1), s.instr)?;
    heads_init(&d, cfg, &mut stream(2), s.heads)?;
    let r = d.rim;
    let mut rng = stream(3);
    let n = r.n_modules.max(1);
    // The module RNNs are initialised per module below.
    for kind in TensorKind::RIM
        .into_iter()
        .filter(|k| *k != TensorKind::RimRnn)
    {
        let Some(e) = layout.entry(kind) else {
            continue;
        };
        let t = s.take(kind);
        let dims = e.dims();
        // Per-module tensors [N, rows, cols] get one matrix per module.
        let (rows, cols) = match dims {
            [_, a, b] => (*a, *b),
            [a, b] => (*a, *b),
            _ => (e.len, 1),
        };
        for m in t.chunks_exact_mut((rows * cols).max(1)) {
            init_weight(cfg.linear, rows, cols, cols, &mut rng, m)?;
        }
    }
    if let Some(_e) = layout.entry(TensorKind::RimRnn) {
        let t = s.take(TensorKind::RimRnn);
        let gates = match r.cell {
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
        };
        let (h, u) = (r.hidden, r.in_heads * r.d_v);
        for m in t.chunks_exact_mut(rnn_module_len(&r).max(1)).take(n) {
            let (w_ih, m) = m.split_at_mut(gates * h * u);
            let (w_hh, m) = m.split_at_mut(gates * h * h);
            init_gate_weight(cfg.recurrent, gates, h, u, &mut rng, w_ih)?;
            init_gate_weight(cfg.recurrent, gates, h, h, &mut rng, w_hh)?;
            init_bias(cfg.recurrent, h, &mut rng, m);
        }
    }
    if layout.entry(TensorKind::Lstm(0)).is_some() {
        let w = d.memory_width();
        let w_ih = s.take(TensorKind::Lstm(0));
        init_gate_weight(cfg.recurrent, 4, w, d.memory_input(), &mut rng, w_ih)?;
        let w_hh = s.take(TensorKind::Lstm(1));
        init_gate_weight(cfg.recurrent, 4, w, w, &mut rng, w_hh)?;
        init_bias(cfg.recurrent, w, &mut rng, s.take(TensorKind::Lstm(2)));
        init_bias(cfg.recurrent, w, &mut rng, s.take(TensorKind::Lstm(3)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;
    use crate::levels::Level;
    use crate::mission::vocab::{tokenize, MAX_TOKENS};
    use crate::nn::dims::{EncoderKind, RimDims, PAPER, TINY};
    use crate::nn::encoder::encoder_cache_layout;
    use crate::nn::gradcheck::{max_rel_error, max_rel_error_richardson_smooth};
    use crate::nn::params::{Group, Mode};
    use crate::nn::rim::cache_null_attention;
    use std::vec;
    use std::vec::Vec;

    /// Small dims so a full finite-difference sweep over every parameter stays quick.
    fn small(cell: CellKind, encoder: EncoderKind, communication: bool) -> ModelDims {
        ModelDims {
            encoder,
            conv_channels: [2, 3, 4],
            bow_dim: 2,
            film: false,
            feature_norm: false,
            word_dim: 3,
            instr_hidden: 3,
            max_tokens: MAX_TOKENS,
            memory: MemoryKind::Rim,
            rim: RimDims {
                n_modules: 3,
                k_active: 2,
                hidden: 3,
                input: 4 + 3,
                d_k: 2,
                d_v: 3,
                in_heads: 1,
                c_heads: 2,
                c_k: 2,
                cell,
                communication,
                comm_update: crate::nn::dims::CommUpdate::Residual,
            },
            head_hidden: 4,
            n_actions: 7,
        }
    }

    struct Model {
        layout: Layout,
        fast: Vec<f64>,
        slow: Vec<f64>,
        other: Vec<f64>,
    }

    impl Model {
        fn new(dims: &ModelDims, mode: Mode, seed: u64) -> Model {
            let layout = Layout::new(dims, mode).unwrap();
            let mut m = Model {
                fast: vec![0.0; layout.group_len(Group::Fast)],
                slow: vec![0.0; layout.group_len(Group::Slow)],
                other: vec![0.0; layout.group_len(Group::Other)],
                layout,
            };
            let bufs = GroupBufsMut {
                fast: &mut m.fast,
                slow: &mut m.slow,
                other: &mut m.other,
            };
            init_params(&m.layout, &InitConfig::BABYAI, seed, bufs).unwrap();
            // Larger recurrent/attention weights than init, so selection and gates vary.
            let mut rng = Pcg32::new(seed ^ 0xabc);
            for v in m.fast.iter_mut().chain(m.slow.iter_mut()) {
                *v += (rng.gen_f64() - 0.5) * 0.6;
            }
            // FiLM starts as the identity; make it modulate, so its instruction path is tested.
            let film: Vec<(usize, usize)> = m
                .layout
                .entries()
                .iter()
                .filter(|e| e.name.contains(".film.") && e.group == Group::Other)
                .map(|e| (e.offset, e.len))
                .collect();
            for (offset, len) in film {
                for v in &mut m.other[offset..offset + len] {
                    *v = (rng.gen_f64() - 0.5) * 0.6;
                }
            }
            m
        }

        fn policy(&self) -> Policy<'_, f64> {
            let p = GroupBufs {
                fast: &self.fast,
                slow: &self.slow,
                other: &self.other,
            };
            Policy::new(&self.layout, p).unwrap()
        }
    }

    /// A chunk of real observations from two episodes of two levels (random actions).
    fn episodes(seed: u64, t_len: usize) -> (Vec<Observation>, Vec<[u16; MAX_TOKENS]>, Vec<bool>) {
        let mut env = Env::new(8, 8).unwrap();
        let levels = [
            Level::from_id("BabyAI-GoToLocal-v0").unwrap(),
            Level::from_id("BabyAI-PickupLoc-v0").unwrap(),
        ];
        let mut rng = Pcg32::new(seed);
        let (mut obs, mut toks, mut starts) = (vec![], vec![], vec![]);
        // The episode boundary moves with the seed (1..t_len), so masks vary across cases.
        let switch = 1 + (seed as usize) % (t_len - 1).max(1);
        for t in 0..t_len {
            if t == 0 || t == switch {
                levels[usize::from(t == switch)]
                    .reset(&mut env, seed + t as u64)
                    .unwrap();
            } else {
                let a = crate::env::Action::ALL[rng.below(7) as usize];
                env.step(a);
            }
            obs.push(env.observation());
            let mut tk = [0u16; MAX_TOKENS];
            tokenize(&env.mission, &mut tk).unwrap();
            toks.push(tk);
            starts.push(t == switch);
        }
        (obs, toks, starts)
    }

    /// Run `pol` over the chunk from a zero state (memory and instruction reset at episode
    /// starts) and hand each step's index, cache, value and logits to `visit`.
    fn rollout<S: Real>(
        pol: &Policy<'_, S>,
        obs: &[Observation],
        toks: &[[u16; MAX_TOKENS]],
        starts: &[bool],
        mut visit: impl FnMut(usize, &[S], S, &[S]),
    ) {
        let zero = vec![S::ZERO; state_len(pol.dims())];
        rollout_from(pol, obs, toks, starts, &zero, |t, cache, v, logits, _| {
            visit(t, cache, v, logits)
        });
    }

    /// [`rollout`] from the memory state `init`, also handing `visit` the state each step read.
    fn rollout_from<S: Real>(
        pol: &Policy<'_, S>,
        obs: &[Observation],
        toks: &[[u16; MAX_TOKENS]],
        starts: &[bool],
        init: &[S],
        mut visit: impl FnMut(usize, &[S], S, &[S], &[S]),
    ) {
        let d = *pol.dims();
        let sl = state_len(&d);
        let (mut state, mut next) = (init.to_vec(), vec![S::ZERO; sl]);
        let mut instr = vec![S::ZERO; d.instr_hidden];
        let mut logits = vec![S::ZERO; d.n_actions];
        let mut cache = vec![S::ZERO; step_cache_len(&d)];
        let mut scratch = vec![S::ZERO; scratch_len(&d)];
        for t in 0..obs.len() {
            if starts[t] {
                state.fill(S::ZERO);
            }
            if t == 0 || starts[t] {
                pol.encode_instruction(&toks[t], &mut instr, &mut scratch)
                    .unwrap();
            }
            let v = pol
                .step(
                    &obs[t],
                    &instr,
                    &state,
                    &mut next,
                    &mut logits,
                    &mut cache,
                    &mut scratch,
                )
                .unwrap();
            visit(t, &cache, v, &logits, &state);
            std::mem::swap(&mut state, &mut next);
        }
    }

    /// Smallest distance of any kink (ReLU input, maxpool runner-up, top-k boundary) from the
    /// forward pass of `steps`; finite differences are only valid away from kinks.
    fn kink_margin(
        m: &Model,
        obs: &[Observation],
        toks: &[[u16; MAX_TOKENS]],
        starts: &[bool],
    ) -> f64 {
        let p = m.policy();
        let d = *p.dims();
        let o = offsets(&d);
        let el = encoder_cache_layout(&d);
        let mut margin = f64::INFINITY;
        rollout(&p, obs, toks, starts, |_, cache, _, _| {
            let enc = &cache[o[1]..o[2]];
            for z in enc[el.conv1..el.pool].iter().chain(&enc[el.conv2..el.len]) {
                margin = margin.min(z.abs());
            }
            // Maxpool: gap between the two largest positive inputs of each window.
            for c in 0..d.conv_channels[0] {
                for (pi, pj) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                    let mut w: Vec<f64> = (0..4)
                        .map(|q| {
                            enc[el.conv1 + c * 36 + (2 * pi + q / 2) * 6 + 2 * pj + q % 2].max(0.0)
                        })
                        .collect();
                    w.sort_by(|a, b| b.total_cmp(a));
                    // An exact tie comes from identical input patches (walls, empty floor):
                    // both sides are the same function of the weights, so there is no kink.
                    let gap = w[0] - w[1];
                    if w[0] > 0.0 && gap > 0.0 {
                        margin = margin.min(gap);
                    }
                }
            }
            if d.memory == MemoryKind::Rim {
                let mut null: Vec<f64> = cache_null_attention(&d.rim, &cache[o[2]..o[3]])
                    .unwrap()
                    .to_vec();
                null.sort_by(f64::total_cmp);
                let k = d.rim.k_active;
                // An exact tie (e.g. every module at a zero state after an episode start
                // scores 0) holds for all weights, so it is not a kink of the loss in them.
                if k < null.len() && null[k] > null[k - 1] {
                    margin = margin.min(null[k] - null[k - 1]);
                }
            }
        });
        margin
    }

    /// PPO targets placed well away from the clip boundaries: ratios of e^{±0.05} (inside) and
    /// e^{±0.5} (clipped), value offsets ±0.05 / ±0.5 against eps = 0.2.
    fn samples(
        m: &Model,
        obs: &[Observation],
        toks: &[[u16; MAX_TOKENS]],
        starts: &[bool],
        seed: u64,
    ) -> Vec<PpoSample<f64>> {
        let mut rng = Pcg32::new(seed);
        let offs = [-0.5, -0.05, 0.05, 0.5];
        let mut out = vec![];
        rollout(&m.policy(), obs, toks, starts, |_, _, v, logits| {
            let action = rng.below(7) as usize;
            let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
            let logp = logits[action] - lse;
            out.push(PpoSample {
                action,
                old_logprob: logp + offs[rng.below(4) as usize],
                old_value: v + offs[rng.below(4) as usize],
                advantage: rng.gen_f64() * 2.0 - 1.0,
                ret: v + rng.gen_f64() * 2.0 - 1.0,
            });
        });
        out
    }

    fn loss_and_grads(
        m: &Model,
        obs: &[Observation],
        toks: &[[u16; MAX_TOKENS]],
        starts: &[bool],
        samples: &[PpoSample<f64>],
        init: &[f64],
        comm: CommGrad,
    ) -> (f64, [Vec<f64>; 3], ChunkStats<f64>) {
        let p = m.policy();
        let d = *p.dims();
        let steps: Vec<ChunkStep<'_, f64>> = (0..obs.len())
            .map(|t| ChunkStep {
                obs: &obs[t],
                tokens: &toks[t],
                episode_start: starts[t],
                sample: samples[t],
            })
            .collect();
        let mut g = [
            vec![0.0; m.fast.len()],
            vec![0.0; m.slow.len()],
            vec![0.0; m.other.len()],
        ];
        let mut work = vec![0.0; chunk_work_len(&d, obs.len())];
        let [gf, gs, go] = &mut g;
        let bufs = GroupBufsMut {
            fast: gf,
            slow: gs,
            other: go,
        };
        let coefs = PpoCoefs::babyai();
        let stats = p
            .chunk_backward(&steps, init, &coefs, 1.0, comm, bufs, &mut work)
            .unwrap();
        (stats.sum.loss, g, stats)
    }

    /// Whole-policy gradient check: every parameter of every group, through BPTT over two
    /// episodes (memory reset and mission change in the middle), against central differences.
    fn gradcheck(dims: &ModelDims, mode: Mode, seed: u64) -> bool {
        let t_len = 5 + (seed as usize / 7) % 3;
        let (obs, toks, starts) = episodes(seed, t_len);
        let mut m = Model::new(dims, mode, seed);
        let margin = kink_margin(&m, &obs, &toks, &starts);
        if margin < 2e-3 {
            return false;
        }
        let smp = samples(&m, &obs, &toks, &starts, seed);
        let sl = state_len(m.layout.dims());
        let mut rng = Pcg32::new(seed + 7);
        let init: Vec<f64> = (0..sl).map(|_| rng.gen_f64() - 0.5).collect();
        let (_, g, _) = loss_and_grads(&m, &obs, &toks, &starts, &smp, &init, CommGrad::Full);
        for (gi, grad) in g.iter().enumerate() {
            let x0 = match gi {
                0 => m.fast.clone(),
                1 => m.slow.clone(),
                _ => m.other.clone(),
            };
            // A point where a discrete choice flips within the step (the margin check above
            // bounds it in activation units, not in each parameter's) is not kink-free.
            let Some((err, at)) = max_rel_error_richardson_smooth(
                |x| {
                    match gi {
                        0 => m.fast.copy_from_slice(x),
                        1 => m.slow.copy_from_slice(x),
                        _ => m.other.copy_from_slice(x),
                    }
                    loss_and_grads(&m, &obs, &toks, &starts, &smp, &init, CommGrad::Full).0
                },
                &x0,
                grad,
                1e-4,
                1e-4,
            ) else {
                return false;
            };
            match gi {
                0 => m.fast.copy_from_slice(&x0),
                1 => m.slow.copy_from_slice(&x0),
                _ => m.other.copy_from_slice(&x0),
            }
            assert!(
                err < 1e-6,
                "mode {mode:?} group {gi} param {at}: relative error {err} (seed {seed})"
            );
        }
        true
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2,
            failure_persistence: None,
            ..Default::default()
        })]

        /// For a random base seed (so random weights, observations, PPO targets, chunk length
        /// 5..8 and episode-boundary position), each configuration (GRU/LSTM cells, conv/BoW
        /// encoders, with/without communication, all four modes) is checked on its first
        /// kink-free case; FiLM with the bag-of-words and the conv encoder.
        #[test]
        fn whole_policy_gradients_match_finite_differences(base in 0u64..1_000_000) {
            for (i, (cell, enc, comm, mode, film)) in [
                (CellKind::Gru, EncoderKind::Conv, true, Mode::MetaRim, false),
                (CellKind::Lstm, EncoderKind::Bow, true, Mode::Reversed, false),
                (CellKind::Gru, EncoderKind::Bow, false, Mode::Joint, false),
                (CellKind::Gru, EncoderKind::Conv, true, Mode::Lstm, false),
                (CellKind::Gru, EncoderKind::Bow, true, Mode::MetaRim, true),
                (CellKind::Lstm, EncoderKind::Conv, true, Mode::Lstm, true),
            ]
            .into_iter()
            .enumerate()
            {
                let dims = ModelDims { film, ..small(cell, enc, comm) };
                let found = (0..40u64)
                    .any(|s| gradcheck(&dims, mode, base.wrapping_mul(4) + 1000 * i as u64 + s));
                proptest::prop_assert!(found, "no kink-free case for {:?}", mode);
            }
        }
    }

    /// The memory-lean fast-only backward (inputs and states kept, each step recomputed)
    /// gives exactly the module-RNN gradient of the full chunk backward, with and without
    /// communication, GRU and LSTM cells, across an episode boundary and from a non-zero
    /// initial state; the PPO terms and activity counts agree too.
    #[test]
    fn fast_window_backward_matches_the_full_backward() {
        for (cell, comm) in [
            (CellKind::Gru, true),
            (CellKind::Gru, false),
            (CellKind::Lstm, true),
        ] {
            let dims = small(cell, EncoderKind::Conv, comm);
            for seed in 0..6u64 {
                let (obs, toks, starts) = episodes(seed + 3, 7);
                let m = Model::new(&dims, Mode::MetaRim, seed);
                let smp = samples(&m, &obs, &toks, &starts, seed);
                let d = *m.layout.dims();
                let sl = state_len(&d);
                let init: Vec<f64> = (0..sl).map(|i| 0.05 * (i as f64 - 2.0)).collect();
                let (_, g, full_stats) =
                    loss_and_grads(&m, &obs, &toks, &starts, &smp, &init, CommGrad::Blocked);
                // Act as the device does, keeping each step's memory input and state.
                let p = m.policy();
                let o = offsets(&d);
                let (mut xs, mut states) = (vec![], vec![]);
                rollout_from(&p, &obs, &toks, &starts, &init, |_, cache, _, _, state| {
                    xs.push(cache[o[0]..o[1]].to_vec());
                    states.push(state.to_vec());
                });
                let steps: Vec<FastStep<'_, f64>> = (0..obs.len())
                    .map(|t| FastStep {
                        x: &xs[t],
                        state_in: &states[t],
                        episode_start: starts[t],
                        sample: smp[t],
                    })
                    .collect();
                let mut rnn = vec![0.0; m.fast.len()];
                let mut work = vec![0.0; fast_work_len(&d)];
                let coefs = PpoCoefs::babyai();
                let st = p
                    .fast_window_backward(
                        &steps,
                        &coefs,
                        1.0,
                        CommGrad::Blocked,
                        &mut rnn,
                        &mut work,
                    )
                    .unwrap();
                assert_eq!(st.active_steps, full_stats.active_steps);
                assert!(
                    (st.sum.loss - full_stats.sum.loss).abs()
                        <= 1e-12 * full_stats.sum.loss.abs().max(1.0)
                );
                for (a, b) in rnn.iter().zip(&g[0]) {
                    assert!(
                        (a - b).abs() <= 1e-12 * b.abs().max(1e-9),
                        "{cell:?} comm={comm} seed {seed}: {a} vs {b}"
                    );
                }
                assert!(g[0].iter().any(|v| *v != 0.0));
            }
        }
        // An LSTM memory has no module RNNs.
        let m = Model::new(
            &small(CellKind::Gru, EncoderKind::Conv, true),
            Mode::Lstm,
            1,
        );
        let d = *m.layout.dims();
        let mut work = vec![0.0; fast_work_len(&d)];
        assert!(m
            .policy()
            .fast_window_backward(
                &[],
                &PpoCoefs::babyai(),
                1.0,
                CommGrad::Blocked,
                &mut [],
                &mut work
            )
            .is_err());
    }

    #[test]
    fn gradcheck_catches_a_wrong_gradient() {
        let dims = small(CellKind::Gru, EncoderKind::Conv, true);
        let (obs, toks, starts) = episodes(5, 6);
        let mut m = Model::new(&dims, Mode::MetaRim, 5);
        let smp = samples(&m, &obs, &toks, &starts, 5);
        let init = vec![0.1; state_len(m.layout.dims())];
        let (_, g, _) = loss_and_grads(&m, &obs, &toks, &starts, &smp, &init, CommGrad::Full);
        let mut wrong = g[0].clone();
        let i = wrong
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap()
            .0;
        wrong[i] *= 1.0 + 1e-4;
        let x0 = m.fast.clone();
        let (err, _) = max_rel_error(
            |x| {
                m.fast.copy_from_slice(x);
                loss_and_grads(&m, &obs, &toks, &starts, &smp, &init, CommGrad::Full).0
            },
            &x0,
            &wrong,
            1e-5,
            1e-4,
        );
        assert!(err > 1e-6, "a 1e-4 relative error went unnoticed ({err})");
    }

    #[test]
    fn fast_gradient_is_zero_for_modules_never_active() {
        let dims = small(CellKind::Gru, EncoderKind::Conv, true);
        let (obs, toks, starts) = episodes(9, 6);
        for seed in 0..20 {
            let m = Model::new(&dims, Mode::MetaRim, seed);
            let smp = samples(&m, &obs, &toks, &starts, seed);
            let init = vec![0.0; state_len(m.layout.dims())];
            let (_, g, stats) =
                loss_and_grads(&m, &obs, &toks, &starts, &smp, &init, CommGrad::Blocked);
            let per = rnn_module_len(&dims.rim);
            for n in 0..dims.rim.n_modules {
                let block = &g[0][n * per..(n + 1) * per];
                let any = block.iter().any(|v| *v != 0.0);
                assert_eq!(any, stats.active_steps[n] > 0, "module {n}, seed {seed}");
            }
        }
    }

    /// The device's update: Adam over the fast group, on the blocks of the modules that were
    /// active in the chunk only; every other parameter stays bit-identical.
    #[test]
    fn fast_only_update_touches_only_active_modules() {
        use crate::nn::optim::Adam;
        let dims = small(CellKind::Gru, EncoderKind::Conv, true);
        let (obs, toks, starts) = episodes(4, 3);
        let mut found_inactive = false;
        for seed in 0..30 {
            let mut m = Model::new(&dims, Mode::MetaRim, seed);
            let smp = samples(&m, &obs, &toks, &starts, seed);
            let init = vec![0.0; state_len(m.layout.dims())];
            let (_, g, stats) =
                loss_and_grads(&m, &obs, &toks, &starts, &smp, &init, CommGrad::Blocked);
            let n = dims.rim.n_modules;
            let active: Vec<bool> = (0..n).map(|i| stats.active_steps[i] > 0).collect();
            let mut ranges = heapless::Vec::new();
            m.layout.fast_ranges(&active, &mut ranges).unwrap();
            let before = (m.fast.clone(), m.slow.clone(), m.other.clone());
            let (mut mm, mut vv) = (vec![0.0; m.fast.len()], vec![0.0; m.fast.len()]);
            let mut adam = Adam::new(1e-2, 0.9, 0.999, 1e-8);
            adam.step_ranges(&mut m.fast, &g[0], &mut mm, &mut vv, &ranges)
                .unwrap();
            assert_eq!(before.1, m.slow);
            assert_eq!(before.2, m.other);
            let per = rnn_module_len(&dims.rim);
            for (i, &on) in active.iter().enumerate() {
                let (a, b) = (
                    &before.0[i * per..(i + 1) * per],
                    &m.fast[i * per..(i + 1) * per],
                );
                assert_eq!(a == b, !on, "module {i}");
                found_inactive |= !on;
            }
        }
        assert!(found_inactive, "no chunk left a module inactive");
    }

    #[test]
    fn f32_and_f64_forward_agree() {
        for dims in [PAPER, TINY] {
            let layout = Layout::new(&dims, Mode::MetaRim).unwrap();
            let lens = [Group::Fast, Group::Slow, Group::Other].map(|g| layout.group_len(g));
            let mut p64: [Vec<f64>; 3] = lens.map(|n| vec![0.0; n]);
            {
                let [a, b, c] = &mut p64;
                let bufs = GroupBufsMut {
                    fast: a,
                    slow: b,
                    other: c,
                };
                init_params(&layout, &InitConfig::BABYAI, 3, bufs).unwrap();
            }
            let p32: [Vec<f32>; 3] = p64.clone().map(|v| v.iter().map(|x| *x as f32).collect());
            let (obs, toks, starts) = episodes(3, 8);
            let run64 = run_forward(&layout, &p64, &obs, &toks, &starts);
            let run32 = run_forward(&layout, &p32, &obs, &toks, &starts);
            // Normwise: f32's rounding is relative to the size of the terms a value is summed
            // from, so an output that cancels to near zero carries an absolute error of the
            // scale of the others (an elementwise bound failed on a value of -0.0036 whose
            // error, 5e-8, is f32 rounding of O(1) terms).
            let scale = run64.iter().fold(0.0f64, |m, a| m.max(a.abs()));
            let worst = run64
                .iter()
                .zip(&run32)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst / scale < 1e-5, "f32 vs f64: {worst} of {scale}");
        }
    }

    fn run_forward<S: Real>(
        layout: &Layout,
        p: &[Vec<S>; 3],
        obs: &[Observation],
        toks: &[[u16; MAX_TOKENS]],
        starts: &[bool],
    ) -> Vec<f64> {
        let bufs = GroupBufs {
            fast: &p[0],
            slow: &p[1],
            other: &p[2],
        };
        let pol = Policy::new(layout, bufs).unwrap();
        let mut out = vec![];
        rollout(&pol, obs, toks, starts, |_, _, v, logits| {
            out.push(v.to_f64());
            out.extend(logits.iter().map(|l| l.to_f64()));
        });
        out
    }

    #[test]
    fn init_is_deterministic_and_buffers_are_checked() {
        let layout = Layout::new(&TINY, Mode::MetaRim).unwrap();
        let make = |seed| {
            let mut b =
                [Group::Fast, Group::Slow, Group::Other].map(|g| vec![0.0f32; layout.group_len(g)]);
            let [x, y, z] = &mut b;
            init_params(
                &layout,
                &InitConfig::BABYAI,
                seed,
                GroupBufsMut {
                    fast: x,
                    slow: y,
                    other: z,
                },
            )
            .unwrap();
            b
        };
        assert_eq!(make(1), make(1));
        assert_ne!(make(1), make(2));
        let short = [0.0f32; 3];
        let bad = GroupBufs {
            fast: &short[..],
            slow: &short[..],
            other: &short[..],
        };
        assert!(Policy::new(&layout, bad).is_err());
    }
}
