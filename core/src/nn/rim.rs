//! The RIM cell (Recurrent Independent Mechanisms; docs/DESIGN.md, "The RIM cell"): input
//! attention, top-k selection, per-module GRU/LSTM dynamics, communication attention and the
//! masked update, with a hand-written backward pass through one step (BPTT = the caller loops
//! backward over stored steps; [`rim_sequence_forward`] / [`rim_sequence_backward`] do that for
//! whole sequences).
//!
//! # Math of one step (N modules, k active, hidden `H` per module)
//! 1. **Input attention.** Rows `X = [0 ; x_t]` (a null row first). Shared keys/values
//!    `K = X W_k^T`, `V = X W_v^T` (`W_k: [in_heads*d_k x input]`, `W_v: [in_heads*d_v x input]`,
//!    no bias, so the null row's key and value are 0 and its score is 0). Per-module query
//!    `q_i = W_q,i h_i` (`[in_heads*d_k x H]` per module). Per head `j`: scores
//!    `[0, s_ij]` with `s_ij = q_ij . k_x,j / sqrt(d_k)`, `a_ij = softmax([0, s_ij])`, i.e. the
//!    input row gets `sigmoid(s_ij)` and the null row `sigmoid(-s_ij)`. Module input
//!    `u_i = concat_j(a_ij,x * v_x,j)` (`in_heads*d_v` wide; the null row's value is 0).
//! 2. **Selection.** The null-row attention averaged over heads, `null_i = mean_j a_ij,null`;
//!    the k modules with the LEAST null attention are active (hard top-k). Ties: the lower module
//!    index wins (a NaN counts as larger than every number). The mask is a constant for the
//!    backward pass (no gradient through selection, no straight-through).
//! 3. **Dynamics.** Separate GRU/LSTM weights per module: `h~_i = GRU_i(u_i, h_i)` (LSTM:
//!    `(h~_i, c~_i) = LSTM_i(u_i, (h_i, c_i))`), via [`ops::gru_forward`] / [`ops::lstm_forward`].
//!    Without communication an inactive module's RNN is not evaluated (its output is unused).
//! 4. **Communication** (if `RimDims::communication`). Per-module `Q/K/V` projections
//!    (`[c_heads*c_k x H]` each per module, no bias) of the candidate states `h~`; for each
//!    active module `i` and head `j`: `p_ij = softmax_m(q_ij . k_mj / sqrt(c_k))` over ALL `N`
//!    modules `m` (keys and values from every module's `h~`, inactive ones included),
//!    `o_ij = sum_m p_ijm v_mj`, `o_i = concat_j o_ij` (`c_heads*c_k`). Gated residual as in the
//!    official code: `h'_i = h~_i + sigmoid(W_g,i o_i) * tanh(W_o,i o_i)` with per-module
//!    `W_g, W_o: [H x c_heads*c_k]`, **no biases** (CHOICE). Without communication `h'_i = h~_i`.
//!    With [`CommUpdate::Interpolate`] instead `h'_i = h~_i + g_i * (tanh(W_o,i o_i) - h~_i)`
//!    (`g_i = sigmoid(W_g,i o_i)`): a convex blend that keeps a GRU module's state in [-1, 1].
//! 5. **Masked update.** `h_t,i = h'_i` if active else `h_{t-1,i}` (LSTM: `c_t,i = c~_i` if
//!    active else `c_{t-1,i}`); inactive modules keep their state bit-exactly.
//!
//! # No dropout
//! The reference code applies dropout (0.1) to the attention outputs; RL runs without it
//! (docs/DESIGN.md, "The RIM cell", CHOICE). The optional dropout entry points that no trainer
//! reached were removed (docs/RESULTS.md, "Removed code").
//!
//! # Gradients of inactive modules ([`CommGrad`])
//! An inactive module's state passes through unchanged, so its incoming state gradient flows
//! through the identity into `h_{t-1}` (and `c_{t-1}`). Its RNN, query and input receive no
//! gradient through its (discarded) update. With communication on, its `h~` is still read as a
//! key/value by the active modules; [`CommGrad::Blocked`] (default, the official code's
//! `blocked_grad`) stops that gradient, so only active modules' RNN/query weights ever receive
//! gradient (the Meta-RIMs fast/slow split relies on it); [`CommGrad::Full`] propagates it (the
//! exact derivative of the forward function). The comm K/V projection weights get their
//! gradient in both modes.
//!
//! # Parameter layout
//! Every tensor is row-major `[out x in]` (PyTorch's convention, like [`ops`]); per-module
//! tensors are one contiguous slice, module-major (module `i`'s block is the `i`-th stride):
//! - `w_k: [in_heads*d_k x input]`, `w_v: [in_heads*d_v x input]` (shared, slow);
//! - `w_q: N x [in_heads*d_k x H]` (slow);
//! - `rnn: N x [w_ih (G*H x U) | w_hh (G*H x H) | b_ih (G*H) | b_hh (G*H)]` with `G = 3` (GRU,
//!   gates r, z, n) or `4` (LSTM, gates i, f, g, o) and `U = in_heads*d_v`: one contiguous range
//!   per module ([`rnn_module_range`]) so a fast-only optimiser can update just active modules;
//! - `c_q, c_k, c_v: N x [c_heads*c_k x H]`, `c_g, c_o: N x [H x c_heads*c_k]` (slow; empty when
//!   communication is off).
//!
//! States are `N*H` slices, module-major (`h[i*H..(i+1)*H]` is module `i`); the LSTM cell state
//! likewise, and an empty slice for a GRU.
//!
//! # Invariants
//! No heap, no panic: every entry point checks the dimensions ([`Error::BadDims`]) and every
//! buffer length ([`Error::BufferTooSmall`]) once, up front; slices longer than needed are
//! accepted and only their first elements are used. Size functions saturate instead of
//! overflowing, so absurd dimensions end in an error, never in a panic. Backward functions
//! ACCUMULATE into gradient buffers and input gradients (`+=`), like [`ops`].

use crate::error::{check_len, Error};
use crate::nn::cut::{take, Cut};
use crate::nn::dims::{CellKind, CommUpdate, RimDims};
use crate::nn::ops::{self, GruGrads, GruWeights, LstmGrads, LstmWeights};
use crate::nn::scalar::Real;
use core::ops::Range;

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// Sizes.

const fn mul(a: usize, b: usize) -> usize {
    a.saturating_mul(b)
}

const fn add(a: usize, b: usize) -> usize {
    a.saturating_add(b)
}

/// Gates of the module RNN: 3 for a GRU, 4 for an LSTM.
pub const fn rnn_gates(d: &RimDims) -> usize {
    match d.cell {
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    }
}

/// Width of a module's input `u_i`: `in_heads * d_v`.
pub const fn module_input(d: &RimDims) -> usize {
    mul(d.in_heads, d.d_v)
}

/// Width of a module's input-attention query: `in_heads * d_k`.
pub const fn query_width(d: &RimDims) -> usize {
    mul(d.in_heads, d.d_k)
}

/// Width of a module's communication query/key/value and output `o_i`: `c_heads * c_k`
/// (0 without communication).
pub const fn comm_width(d: &RimDims) -> usize {
    if d.communication {
        mul(d.c_heads, d.c_k)
    } else {
        0
    }
}

/// Length of the hidden state of all modules, `N * H`.
pub const fn state_len(d: &RimDims) -> usize {
    mul(d.n_modules, d.hidden)
}

/// Length of the LSTM cell state, `N * H` (0 for a GRU: pass empty slices).
pub const fn cell_state_len(d: &RimDims) -> usize {
    match d.cell {
        CellKind::Gru => 0,
        CellKind::Lstm => state_len(d),
    }
}

/// Parameters of one module's RNN: `w_ih`, `w_hh`, `b_ih`, `b_hh` (see the module docs).
pub const fn rnn_module_len(d: &RimDims) -> usize {
    let gh = mul(rnn_gates(d), d.hidden);
    add(add(mul(gh, module_input(d)), mul(gh, d.hidden)), mul(2, gh))
}

/// The range of module `i`'s RNN parameters inside `RimWeights::rnn` (and `RimGrads::rnn`).
pub const fn rnn_module_range(d: &RimDims, i: usize) -> Range<usize> {
    let len = rnn_module_len(d);
    mul(i, len)..mul(add(i, 1), len)
}

/// Sizes of every parameter tensor of a RIM cell (elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RimParamCounts {
    /// Shared input-attention key projection `[in_heads*d_k x input]`.
    pub w_k: usize,
    /// Shared input-attention value projection `[in_heads*d_v x input]`.
    pub w_v: usize,
    /// Per-module queries, `N x [in_heads*d_k x H]`.
    pub w_q: usize,
    /// One module's RNN parameters ([`rnn_module_len`]).
    pub rnn_per_module: usize,
    /// All modules' RNN parameters, `N * rnn_per_module`.
    pub rnn: usize,
    /// Communication queries, `N x [c_heads*c_k x H]` (0 without communication).
    pub c_q: usize,
    /// Communication keys, `N x [c_heads*c_k x H]`.
    pub c_k: usize,
    /// Communication values, `N x [c_heads*c_k x H]`.
    pub c_v: usize,
    /// Communication output gates, `N x [H x c_heads*c_k]`.
    pub c_g: usize,
    /// Communication outputs, `N x [H x c_heads*c_k]`.
    pub c_o: usize,
}

impl RimParamCounts {
    /// Fast parameters (Meta-RIMs): the module RNNs.
    pub const fn fast(&self) -> usize {
        self.rnn
    }

    /// Slow parameters (Meta-RIMs): input and communication attention.
    pub const fn slow(&self) -> usize {
        add(
            add(add(self.w_k, self.w_v), add(self.w_q, self.c_q)),
            add(add(self.c_k, self.c_v), add(self.c_g, self.c_o)),
        )
    }

    /// All parameters.
    pub const fn total(&self) -> usize {
        add(self.fast(), self.slow())
    }
}

/// Sizes of every parameter tensor of the RIM cell `d`.
pub const fn rim_param_counts(d: &RimDims) -> RimParamCounts {
    let n = d.n_modules;
    let cw = comm_width(d);
    let proj = mul(n, mul(cw, d.hidden));
    RimParamCounts {
        w_k: mul(query_width(d), d.input),
        w_v: mul(module_input(d), d.input),
        w_q: mul(n, mul(query_width(d), d.hidden)),
        rnn_per_module: rnn_module_len(d),
        rnn: mul(n, rnn_module_len(d)),
        c_q: proj,
        c_k: proj,
        c_v: proj,
        c_g: proj,
        c_o: proj,
    }
}

/// RNN cache per module (what [`ops::gru_forward`] / [`ops::lstm_forward`] keep).
const fn rnn_cache_len(d: &RimDims) -> usize {
    match d.cell {
        CellKind::Gru => mul(ops::GRU_CACHE_PER_UNIT, d.hidden),
        CellKind::Lstm => mul(ops::LSTM_CACHE_PER_UNIT, d.hidden),
    }
}

buffer_parts! {
    /// The parts of a step cache in storage order: their lengths (`CacheParts<usize>`, the
    /// layout) or the cache cut into them, read by the backward pass ([`Cache`]) and written by
    /// the forward pass ([`CacheMut`]).
    struct CacheParts;
    /// The lengths of a step cache's parts for `d`.
    const fn cache_layout(d: &RimDims) {
        let n = d.n_modules;
        let comm = d.communication;
        let cw = comm_width(d);
        let nh = state_len(d);
    }
    {
        /// Selection mask as 0/1, `N`.
        mask: n,
        /// Null-row attention averaged over heads, `N`.
        null: n,
        /// Input key `W_k x`, `in_heads*d_k`.
        kx: query_width(d),
        /// Input value `W_v x`, `in_heads*d_v`.
        vx: module_input(d),
        /// Queries, `N * in_heads*d_k`.
        q: mul(n, query_width(d)),
        /// Attention on the input row per module and head, `N * in_heads`.
        ax: mul(n, d.in_heads),
        /// Module inputs, `N * in_heads*d_v`.
        u: mul(n, module_input(d)),
        /// RNN caches, `N * rnn_cache_len`.
        rnn: mul(n, rnn_cache_len(d)),
        /// Candidate states `h~`, `N*H` (communication only).
        ht: if comm { nh } else { 0 },
        /// Communication queries (`c_q` times `h~`), `N * c_heads*c_k`.
        cq: mul(n, cw),
        /// Communication keys (`c_k` times `h~`), `N * c_heads*c_k`.
        ck: mul(n, cw),
        /// Communication values (`c_v` times `h~`), `N * c_heads*c_k`.
        cv: mul(n, cw),
        /// Communication attention, `N (query) x c_heads x N (key)`.
        p: if comm { mul(n, mul(d.c_heads, n)) } else { 0 },
        /// Communication outputs `o`, `N * c_heads*c_k`.
        o: mul(n, cw),
        /// Output gates `sigmoid(W_g o)`, `N*H`.
        gate: if comm { nh } else { 0 },
        /// Output updates `tanh(W_o o)`, `N*H`.
        tanh: if comm { nh } else { 0 },
    }
}

/// Activations one step stores for its backward pass (elements of `S`).
pub const fn step_cache_len(d: &RimDims) -> usize {
    cache_layout(d).total()
}

/// RNN backward scratch per module.
const fn rnn_scratch_len(d: &RimDims) -> usize {
    match d.cell {
        CellKind::Gru => mul(6, d.hidden),
        CellKind::Lstm => mul(4, d.hidden),
    }
}

buffer_parts! {
    /// The parts of the backward scratch in storage order: their lengths
    /// (`ScratchParts<usize>`, the layout) or the scratch cut into them ([`Scratch`]).
    struct ScratchParts;
    /// The lengths of the backward scratch's parts for `d`.
    const fn scratch_layout(d: &RimDims) {
        let comm = d.communication;
        let n = d.n_modules;
        let cw = comm_width(d);
    }
    {
        dkx: query_width(d),
        dvx: module_input(d),
        dht: state_len(d),
        dct: d.hidden,
        du: module_input(d),
        dq: query_width(d),
        rnn: rnn_scratch_len(d),
        dck: mul(n, cw),
        dcv: mul(n, cw),
        dcq: cw,
        dout: cw,
        dpg: if comm { d.hidden } else { 0 },
        dpo: if comm { d.hidden } else { 0 },
        dp: if comm { n } else { 0 },
        ds: if comm { n } else { 0 },
    }
}

/// Scratch [`rim_step_backward`] needs (elements of `S`).
pub const fn scratch_len(d: &RimDims) -> usize {
    scratch_layout(d).total()
}

/// Scratch [`rim_sequence_backward`] needs: [`scratch_len`] plus two running state gradients
/// (four for an LSTM).
pub const fn sequence_scratch_len(d: &RimDims) -> usize {
    add(
        scratch_len(d),
        add(mul(2, state_len(d)), mul(2, cell_state_len(d))),
    )
}

// ---------------------------------------------------------------------------------------------
// Weights, gradients, options.

param_views! {
    /// Weights of a RIM cell, laid out as in the module docs.
    weights RimWeights;
    /// Gradients of a RIM cell, laid out like [`RimWeights`]; backward passes accumulate into
    /// them.
    grads RimGrads;
    {
        /// Shared input-attention keys `[in_heads*d_k x input]`.
        w_k,
        /// Shared input-attention values `[in_heads*d_v x input]`.
        w_v,
        /// Per-module queries `N x [in_heads*d_k x H]`.
        w_q,
        /// Per-module RNNs `N x [w_ih | w_hh | b_ih | b_hh]` ([`rnn_module_range`]).
        rnn,
        /// Communication queries `N x [c_heads*c_k x H]` (empty without communication).
        c_q,
        /// Communication keys `N x [c_heads*c_k x H]`.
        c_k,
        /// Communication values `N x [c_heads*c_k x H]`.
        c_v,
        /// Communication output gates `N x [H x c_heads*c_k]`.
        c_g,
        /// Communication outputs `N x [H x c_heads*c_k]`.
        c_o,
    }
}

/// How the backward pass treats the communication attention's reads of inactive modules'
/// candidate states `h~` (see the module docs). Without communication both modes agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CommGrad {
    /// The official code's `blocked_grad`: no gradient reaches an inactive module's `h~` (hence
    /// its RNN, query and input) through the communication keys/values. Only active modules'
    /// RNN weights ever receive gradient. This is not the exact derivative of the forward pass.
    #[default]
    Blocked,
    /// The exact derivative of the forward pass: inactive modules' `h~` get the gradient of
    /// their use as keys/values.
    Full,
}

/// Null-row attention (averaged over heads) of each module, as stored in a step cache by
/// [`rim_step_forward`]: the selection score (lower = more likely active). `None` if `cache` is
/// shorter than `N` values past the mask.
pub fn cache_null_attention<'c, S: Real>(d: &RimDims, cache: &'c [S]) -> Option<&'c [S]> {
    let n = d.n_modules;
    cache.get(n..mul(2, n))
}

// ---------------------------------------------------------------------------------------------
// Validation and slicing helpers (all panic-free).

/// Whether `d` is a RIM the cell can run: 1 <= k <= N, every width and head count at least 1
/// (communication's only with communication on). Every entry point and `Layout::new` check it.
pub fn check_dims(d: &RimDims) -> Result<(), Error> {
    let bad = |what| Err(Error::BadDims { what });
    if d.n_modules == 0 {
        return bad("rim: n_modules must be at least 1");
    }
    if d.k_active == 0 || d.k_active > d.n_modules {
        return bad("rim: k_active must be in 1..=n_modules");
    }
    if d.hidden == 0 || d.input == 0 {
        return bad("rim: hidden and input must be at least 1");
    }
    if d.d_k == 0 || d.d_v == 0 || d.in_heads == 0 {
        return bad("rim: d_k, d_v and in_heads must be at least 1");
    }
    if d.communication && (d.c_heads == 0 || d.c_k == 0) {
        return bad("rim: c_heads and c_k must be at least 1 with communication");
    }
    Ok(())
}

fn check_params(lens: [usize; 9], c: &RimParamCounts) -> Result<(), Error> {
    let needed = [
        c.w_k, c.w_v, c.w_q, c.rnn, c.c_q, c.c_k, c.c_v, c.c_g, c.c_o,
    ];
    for (got, needed) in lens.iter().zip(needed.iter()) {
        check_len(*got, *needed)?;
    }
    Ok(())
}

/// Gradient buffers: each full-length, or empty to skip that tensor's weight gradient (only
/// the module RNNs' must be present). Safe because every weight gradient is accumulated by its
/// own `linear_backward`/cell call whose input-gradient path does not read it (an empty slice
/// makes the accumulation a no-op); fast-only adaptation uses it to skip the slow tensors.
fn check_grads(lens: [usize; 9], c: &RimParamCounts) -> Result<(), Error> {
    let needed = [
        c.w_k, c.w_v, c.w_q, c.rnn, c.c_q, c.c_k, c.c_v, c.c_g, c.c_o,
    ];
    for (i, (got, needed)) in lens.iter().zip(needed.iter()).enumerate() {
        if !(i != 3 && *got == 0) {
            check_len(*got, *needed)?;
        }
    }
    Ok(())
}

/// The `i`-th chunk of width `w` (empty if out of range).
#[inline]
fn chunk<S>(s: &[S], i: usize, w: usize) -> &[S] {
    s.get(mul(i, w)..mul(add(i, 1), w)).unwrap_or(&[])
}

/// The `i`-th chunk of width `w`, mutably (empty if out of range).
#[inline]
fn chunk_mut<S>(s: &mut [S], i: usize, w: usize) -> &mut [S] {
    s.get_mut(mul(i, w)..mul(add(i, 1), w)).unwrap_or(&mut [])
}

/// `dst = src` over their common length.
#[inline]
fn copy<S: Copy>(dst: &mut [S], src: &[S]) {
    for (o, i) in dst.iter_mut().zip(src) {
        *o = *i;
    }
}

#[inline]
fn dot<S: Real>(a: &[S], b: &[S]) -> S {
    crate::nn::ops::dot(a, b)
}

/// `y += alpha * x`.
#[inline]
fn axpy<S: Real>(alpha: S, x: &[S], y: &mut [S]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * *xi;
    }
}

/// `v = softmax(v)` in place (max-subtracted; an empty slice is left alone).
pub fn softmax_in_place<S: Real>(v: &mut [S]) {
    let Some(mut m) = v.first().copied() else {
        return;
    };
    for x in v.iter() {
        m = m.max(*x);
    }
    let mut sum = S::ZERO;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x = *x / sum;
    }
}

/// `1 / sqrt(n)` in `S`.
fn inv_sqrt<S: Real>(n: usize) -> S {
    S::ONE / S::from_f64(n as f64).sqrt()
}

/// Selection order: `a` ranks before `b` (less null attention); NaN ranks after every number.
#[inline]
fn ranks_before<S: Real>(a: S, b: S) -> bool {
    let (a_nan, b_nan) = (a.partial_cmp(&a).is_none(), b.partial_cmp(&b).is_none());
    match (a_nan, b_nan) {
        (false, false) => a < b,
        (false, true) => true,
        _ => false,
    }
}

/// Hard top-k on the LEAST null attention; ties go to the lower module index (a NaN ranks after
/// every number). Writes the mask both as bools and as 0/1 in `S` (an empty `active` writes
/// only the mask).
pub fn select_top_k<S: Real>(null: &[S], k: usize, mask: &mut [S], active: &mut [bool]) {
    for (i, (m, vi)) in mask.iter_mut().zip(null).enumerate() {
        // rank = number of modules that beat module i: strictly less null attention, or equal
        // (neither ranks before the other) with a lower index.
        let rank = null
            .iter()
            .enumerate()
            .filter(|&(j, vj)| ranks_before(*vj, *vi) || (j < i && !ranks_before(*vi, *vj)))
            .count();
        let on = rank < k;
        if let Some(a) = active.get_mut(i) {
            *a = on;
        }
        *m = if on { S::ONE } else { S::ZERO };
    }
}

/// One module's RNN weights (or gradients) out of its `rnn` block: `[w_ih, w_hh, b_ih, b_hh]`.
fn rnn_view<T: Cut>(block: T, d: &RimDims) -> [T; 4] {
    let gh = mul(rnn_gates(d), d.hidden);
    let mut b = block;
    let w_ih = take(&mut b, mul(gh, module_input(d)));
    let w_hh = take(&mut b, mul(gh, d.hidden));
    let b_ih = take(&mut b, gh);
    let b_hh = take(&mut b, gh);
    [w_ih, w_hh, b_ih, b_hh]
}

/// A step cache's parts, read (the backward pass).
type Cache<'a, S> = CacheParts<&'a [S]>;
/// A step cache's parts, written (the forward pass).
type CacheMut<'a, S> = CacheParts<&'a mut [S]>;

fn split_cache<T: Cut>(d: &RimDims, cache: T) -> CacheParts<T> {
    cache_layout(d).split(cache)
}

/// The backward scratch cut into its parts.
type Scratch<'a, S> = ScratchParts<&'a mut [S]>;

fn split_scratch<'a, S>(d: &RimDims, scratch: &'a mut [S]) -> Scratch<'a, S> {
    scratch_layout(d).split(scratch)
}

// ---------------------------------------------------------------------------------------------
// Forward.

/// One RIM step: from `x` (`input`), `h_prev` (`N*H`) and, for an LSTM, `c_prev` (`N*H`; empty
/// for a GRU), write `h_out`, `c_out` (LSTM only), the selection `active_out` (`N`) and the
/// activations the backward pass needs into `cache` ([`step_cache_len`]). The phases are the
/// module docs' steps, one function each.
///
/// Errors: [`Error::BadDims`] for unusable dimensions, [`Error::BufferTooSmall`] for any short
/// buffer; nothing is written before the checks pass.
///
/// The phase functions (here and in [`rim_step_backward`]) are `#[inline(always)]`: each step
/// compiles to one function as before the split; left to the compiler, the split grew the
/// Cortex-M4F firmware's flash by 7.3 KB (docs/BENCHMARKS.md, "Firmware").
#[allow(clippy::too_many_arguments)]
pub fn rim_step_forward<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    x: &[S],
    h_prev: &[S],
    c_prev: &[S],
    h_out: &mut [S],
    c_out: &mut [S],
    active_out: &mut [bool],
    cache: &mut [S],
) -> Result<(), Error> {
    check_dims(d)?;
    let counts = rim_param_counts(d);
    check_params(w.lens(), &counts)?;
    let nh = state_len(d);
    let ncl = cell_state_len(d);
    check_len(x.len(), d.input)?;
    check_len(h_prev.len(), nh)?;
    check_len(h_out.len(), nh)?;
    check_len(c_prev.len(), ncl)?;
    check_len(c_out.len(), ncl)?;
    check_len(active_out.len(), d.n_modules)?;
    check_len(cache.len(), step_cache_len(d))?;

    let x = x.get(..d.input).unwrap_or(x);
    let active = active_out.get_mut(..d.n_modules).unwrap_or(&mut []);
    let mut c = split_cache(d, cache);
    input_attention(w, d, x, h_prev, &mut c);
    select_top_k(c.null, d.k_active, c.mask, active);
    module_dynamics(w, d, h_prev, c_prev, h_out, c_out, active, &mut c);
    if d.communication {
        communicate(w, d, h_out, active, &mut c);
    }
    masked_update(d, h_prev, c_prev, h_out, c_out, active);
    Ok(())
}

/// Step 1, input attention: the shared key/value of `x`, each module's query, its attention to
/// the input row (`ax`), its null attention (`null`, the selection score) and its input `u_i`.
/// The null row's key and value are 0, so its score is 0 and it adds nothing to `u`; only the
/// input row's key/value are computed.
#[inline(always)]
fn input_attention<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    x: &[S],
    h_prev: &[S],
    c: &mut CacheMut<'_, S>,
) {
    let (aw, uw, hid) = (query_width(d), module_input(d), d.hidden);
    ops::linear(w.w_k, None, x, c.kx);
    ops::linear(w.w_v, None, x, c.vx);
    let inv_dk: S = inv_sqrt(d.d_k);
    let inv_heads: S = S::ONE / S::from_f64(d.in_heads as f64);
    for i in 0..d.n_modules {
        let q = chunk_mut(c.q, i, aw);
        ops::linear(
            chunk(w.w_q, i, mul(aw, hid)),
            None,
            chunk(h_prev, i, hid),
            q,
        );
        let mut null_sum = S::ZERO;
        let ax = chunk_mut(c.ax, i, d.in_heads);
        for ((qh, kh), a) in q
            .chunks_exact(d.d_k)
            .zip(c.kx.chunks_exact(d.d_k))
            .zip(ax.iter_mut())
        {
            // softmax([0, s]) = [sigmoid(-s), sigmoid(s)].
            let s = dot(qh, kh) * inv_dk;
            *a = s.sigmoid();
            null_sum += (-s).sigmoid();
        }
        if let Some(v) = c.null.get_mut(i) {
            *v = null_sum * inv_heads;
        }
        let u = chunk_mut(c.u, i, uw);
        for ((uh, vh), a) in u
            .chunks_exact_mut(d.d_v)
            .zip(c.vx.chunks_exact(d.d_v))
            .zip(ax.iter())
        {
            for (o, v) in uh.iter_mut().zip(vh) {
                *o = *a * *v;
            }
        }
    }
}

/// Step 3, per-module dynamics: each module's RNN on its input `u_i`. With communication the
/// candidate state goes to the cache (`ht`), to be read by every module; without, straight to
/// `h_out`, and an inactive module's RNN is not evaluated (its cache part is zeroed).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn module_dynamics<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    h_prev: &[S],
    c_prev: &[S],
    h_out: &mut [S],
    c_out: &mut [S],
    active: &[bool],
    c: &mut CacheMut<'_, S>,
) {
    let (uw, hid, comm) = (module_input(d), d.hidden, d.communication);
    let rcl = rnn_cache_len(d);
    let rml = rnn_module_len(d);
    for i in 0..d.n_modules {
        let on = active.get(i).copied().unwrap_or(false);
        let rc = chunk_mut(c.rnn, i, rcl);
        if !(on || comm) {
            rc.fill(S::ZERO);
            continue;
        }
        let u = chunk(c.u, i, uw);
        let hp = chunk(h_prev, i, hid);
        let dest = if comm {
            chunk_mut(c.ht, i, hid)
        } else {
            chunk_mut(h_out, i, hid)
        };
        let [w_ih, w_hh, b_ih, b_hh] = rnn_view(chunk(w.rnn, i, rml), d);
        if d.cell == CellKind::Lstm {
            let p = LstmWeights {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            };
            let co = chunk_mut(c_out, i, hid);
            ops::lstm_forward(&p, u, hp, chunk(c_prev, i, hid), dest, co, rc);
        } else {
            let p = GruWeights {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            };
            ops::gru_forward(&p, u, hp, dest, rc);
        }
    }
}

/// The communication step's sizes (forward and backward): `n` modules of `hid` units, `cw`-wide
/// queries/keys/values and outputs (`ch` heads of `ckw`), `pw = cw * hid` per projection, and
/// the attention's scale `1/sqrt(ckw)`.
struct CommSizes<S> {
    n: usize,
    hid: usize,
    cw: usize,
    pw: usize,
    ch: usize,
    ckw: usize,
    inv_ck: S,
}

impl<S: Real> CommSizes<S> {
    fn new(d: &RimDims) -> Self {
        let cw = comm_width(d);
        CommSizes {
            n: d.n_modules,
            hid: d.hidden,
            cw,
            pw: mul(cw, d.hidden),
            ch: d.c_heads,
            ckw: d.c_k,
            inv_ck: inv_sqrt(d.c_k),
        }
    }
}

/// Step 4, communication among modules: keys/values from every module's `h~`, attention and
/// the gated update (residual `h' = h~ + sigmoid(W_g o) * tanh(W_o o)`, or the interpolation
/// `h' = h~ + sigmoid(W_g o) * (tanh(W_o o) - h~)`; [`CommUpdate`]) into `h_out` for active modules
/// only (an inactive module's output would be discarded by the masked update; its cache parts
/// are zeroed).
#[inline(always)]
fn communicate<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    h_out: &mut [S],
    active: &[bool],
    c: &mut CacheMut<'_, S>,
) {
    let CommSizes {
        n,
        hid,
        cw,
        pw,
        ch,
        ckw,
        inv_ck,
    } = CommSizes::new(d);
    for m in 0..n {
        let ht = chunk(c.ht, m, hid);
        ops::linear(chunk(w.c_k, m, pw), None, ht, chunk_mut(c.ck, m, cw));
        ops::linear(chunk(w.c_v, m, pw), None, ht, chunk_mut(c.cv, m, cw));
        let cq = chunk_mut(c.cq, m, cw);
        if active.get(m).copied().unwrap_or(false) {
            ops::linear(chunk(w.c_q, m, pw), None, ht, cq);
        } else {
            cq.fill(S::ZERO);
        }
    }
    for i in 0..n {
        let on = active.get(i).copied().unwrap_or(false);
        let p_i = chunk_mut(c.p, i, mul(ch, n));
        let o_i = chunk_mut(c.o, i, cw);
        let gate = chunk_mut(c.gate, i, hid);
        let tanh = chunk_mut(c.tanh, i, hid);
        if !on {
            p_i.fill(S::ZERO);
            o_i.fill(S::ZERO);
            gate.fill(S::ZERO);
            tanh.fill(S::ZERO);
            continue;
        }
        let q_i = chunk(c.cq, i, cw);
        for j in 0..ch {
            let qj = chunk(q_i, j, ckw);
            let pj = chunk_mut(p_i, j, n);
            for (m, s) in pj.iter_mut().enumerate() {
                *s = dot(qj, chunk(chunk(c.ck, m, cw), j, ckw)) * inv_ck;
            }
            softmax_in_place(pj);
            let oj = chunk_mut(o_i, j, ckw);
            oj.fill(S::ZERO);
            for (m, pm) in pj.iter().enumerate() {
                axpy(*pm, chunk(chunk(c.cv, m, cw), j, ckw), oj);
            }
        }
        ops::linear(chunk(w.c_g, i, pw), None, o_i, gate);
        gate.iter_mut().for_each(|v| *v = v.sigmoid());
        ops::linear(chunk(w.c_o, i, pw), None, o_i, tanh);
        tanh.iter_mut().for_each(|v| *v = v.tanh());
        let ho = chunk_mut(h_out, i, hid);
        let interpolate = d.comm_update == CommUpdate::Interpolate;
        for (((o, t), g), th) in ho
            .iter_mut()
            .zip(chunk(c.ht, i, hid))
            .zip(gate.iter())
            .zip(tanh.iter())
        {
            *o = if interpolate {
                *t + *g * (*th - *t)
            } else {
                *t + *g * *th
            };
        }
    }
}

/// Step 5, the masked update: an inactive module keeps its previous state bit-exactly (h and
/// c). Active modules already hold `h'` in `h_out` (and `c~` in `c_out` for an LSTM).
#[inline(always)]
fn masked_update<S: Real>(
    d: &RimDims,
    h_prev: &[S],
    c_prev: &[S],
    h_out: &mut [S],
    c_out: &mut [S],
    active: &[bool],
) {
    let hid = d.hidden;
    for i in 0..d.n_modules {
        if active.get(i).copied().unwrap_or(false) {
            continue;
        }
        copy(chunk_mut(h_out, i, hid), chunk(h_prev, i, hid));
        if d.cell == CellKind::Lstm {
            copy(chunk_mut(c_out, i, hid), chunk(c_prev, i, hid));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward.

/// Backward of one [`rim_step_forward`] call. Given the step's inputs (`x`, `h_prev`, `c_prev`),
/// its `cache` and the gradients of the loss w.r.t. its outputs (`dh_out`: `N*H`; `dc_out`:
/// `N*H` for an LSTM, else empty), ACCUMULATE the parameter gradients into `g`, the input
/// gradient into `dx` (if given, `input` long) and the previous-state gradients into `dh_prev`
/// (and `dc_prev` for an LSTM). `scratch` needs [`scratch_len`] elements; its contents on entry
/// do not matter. The selection stored in `cache` is treated as a constant. The phases run the
/// module docs' steps in reverse, one function each.
///
/// Errors: as [`rim_step_forward`]; nothing is written before the checks pass.
#[allow(clippy::too_many_arguments)]
pub fn rim_step_backward<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    mode: CommGrad,
    x: &[S],
    h_prev: &[S],
    c_prev: &[S],
    cache: &[S],
    dh_out: &[S],
    dc_out: &[S],
    mut dx: Option<&mut [S]>,
    dh_prev: &mut [S],
    dc_prev: &mut [S],
    g: &mut RimGrads<'_, S>,
    scratch: &mut [S],
) -> Result<(), Error> {
    check_dims(d)?;
    let counts = rim_param_counts(d);
    check_params(w.lens(), &counts)?;
    check_grads(g.lens(), &counts)?;
    let nh = state_len(d);
    let ncl = cell_state_len(d);
    check_len(x.len(), d.input)?;
    check_len(h_prev.len(), nh)?;
    check_len(c_prev.len(), ncl)?;
    check_len(cache.len(), step_cache_len(d))?;
    check_len(dh_out.len(), nh)?;
    check_len(dc_out.len(), ncl)?;
    if let Some(dx) = dx.as_deref() {
        check_len(dx.len(), d.input)?;
    }
    check_len(dh_prev.len(), nh)?;
    check_len(dc_prev.len(), ncl)?;
    check_len(scratch.len(), scratch_len(d))?;

    let x = x.get(..d.input).unwrap_or(x);
    let c = split_cache(d, cache);
    let mut s = split_scratch(d, scratch);
    s.dkx.fill(S::ZERO);
    s.dvx.fill(S::ZERO);
    s.dht.fill(S::ZERO);
    s.dck.fill(S::ZERO);
    s.dcv.fill(S::ZERO);
    masked_update_backward(d, &c, dh_out, dc_out, s.dht, dh_prev, dc_prev);
    if d.communication {
        communicate_backward(w, d, mode, &c, dh_out, &mut s, g);
    }
    for m in 0..d.n_modules {
        // Only modules whose h~ got gradient: active ones, and inactive ones for
        // CommGrad::Full with communication (their h~ was read as key/value). Otherwise an
        // inactive module's RNN, query and input get nothing.
        if c.active(m) || (d.communication && mode == CommGrad::Full) {
            module_backward(
                w, d, m, &c, h_prev, c_prev, dc_out, &mut s, dh_prev, dc_prev, g,
            );
            input_attention_backward(w, d, m, &c, h_prev, &mut s, dh_prev, g);
        }
    }
    // Step 1's shared key/value projections of x.
    ops::linear_backward(w.w_k, x, s.dkx, dx.as_deref_mut(), Some(g.w_k), None);
    ops::linear_backward(w.w_v, x, s.dvx, dx, Some(g.w_v), None);
    Ok(())
}

impl<S: Real> CacheParts<&[S]> {
    /// Whether module `i` was selected at this step.
    fn active(&self, i: usize) -> bool {
        self.mask.get(i).is_some_and(|m| *m > S::ZERO)
    }
}

/// Backward of step 5, the masked update. Active: `h_t = h'` (the gradient goes to `dht`, the
/// gradient of `h'`, and on to `h~`). Inactive: `h_t = h_{t-1}`, so the gradient passes
/// through the identity into `dh_prev` (and `dc_prev`); nothing reaches the inactive module's
/// RNN through its discarded update.
#[inline(always)]
fn masked_update_backward<S: Real>(
    d: &RimDims,
    c: &Cache<'_, S>,
    dh_out: &[S],
    dc_out: &[S],
    dht: &mut [S],
    dh_prev: &mut [S],
    dc_prev: &mut [S],
) {
    let hid = d.hidden;
    for i in 0..d.n_modules {
        let dho = chunk(dh_out, i, hid);
        if c.active(i) {
            axpy(S::ONE, dho, chunk_mut(dht, i, hid));
        } else {
            axpy(S::ONE, dho, chunk_mut(dh_prev, i, hid));
            if d.cell == CellKind::Lstm {
                axpy(S::ONE, chunk(dc_out, i, hid), chunk_mut(dc_prev, i, hid));
            }
        }
    }
}

/// Backward of step 4, communication: the gated residual and the attention of each active
/// module, into `dht` (the gradient of `h~`) and the communication weights' gradients.
#[inline(always)]
fn communicate_backward<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    mode: CommGrad,
    c: &Cache<'_, S>,
    dh_out: &[S],
    s: &mut Scratch<'_, S>,
    g: &mut RimGrads<'_, S>,
) {
    let CommSizes {
        n,
        hid,
        cw,
        pw,
        ch,
        ckw,
        inv_ck,
    } = CommSizes::new(d);
    for i in 0..n {
        if !c.active(i) {
            continue;
        }
        let dho = chunk(dh_out, i, hid);
        let o_i = chunk(c.o, i, cw);
        // Residual: h' = h~ + g * u; interpolate: h' = h~ + g * (u - h~), with g = sigmoid(a_g),
        // u = tanh(a_o), a_g = W_g o, a_o = W_o o. The identity part of dh'/dh~ is already in
        // `dht` (the masked update's backward); interpolation takes `g * dh'` back out of it.
        let interpolate = d.comm_update == CommUpdate::Interpolate;
        for (((((pg, po), dy), gt), th), (dt, t)) in s
            .dpg
            .iter_mut()
            .zip(s.dpo.iter_mut())
            .zip(dho)
            .zip(chunk(c.gate, i, hid))
            .zip(chunk(c.tanh, i, hid))
            .zip(chunk_mut(s.dht, i, hid).iter_mut().zip(chunk(c.ht, i, hid)))
        {
            let lift = if interpolate { *th - *t } else { *th };
            *pg = *dy * lift * *gt * (S::ONE - *gt);
            *po = *dy * *gt * (S::ONE - *th * *th);
            if interpolate {
                *dt -= *dy * *gt;
            }
        }
        s.dout.fill(S::ZERO);
        ops::linear_backward(
            chunk(w.c_g, i, pw),
            o_i,
            s.dpg,
            Some(&mut *s.dout),
            Some(chunk_mut(g.c_g, i, pw)),
            None,
        );
        ops::linear_backward(
            chunk(w.c_o, i, pw),
            o_i,
            s.dpo,
            Some(&mut *s.dout),
            Some(chunk_mut(g.c_o, i, pw)),
            None,
        );
        // o_ij = sum_m p_ijm v_mj, p_ij = softmax_m(q_ij . k_mj / sqrt(c_k)).
        s.dcq.fill(S::ZERO);
        let q_i = chunk(c.cq, i, cw);
        let p_i = chunk(c.p, i, mul(ch, n));
        for j in 0..ch {
            let doj = chunk(s.dout, j, ckw);
            let pj = chunk(p_i, j, n);
            for (m, (dpm, pm)) in s.dp.iter_mut().zip(pj).enumerate() {
                *dpm = dot(doj, chunk(chunk(c.cv, m, cw), j, ckw));
                axpy(*pm, doj, chunk_mut(chunk_mut(s.dcv, m, cw), j, ckw));
            }
            s.ds.fill(S::ZERO);
            ops::softmax_backward(pj, s.dp, s.ds);
            let qj = chunk(q_i, j, ckw);
            for (m, dsm) in s.ds.iter().enumerate() {
                let dsm = *dsm * inv_ck;
                axpy(
                    dsm,
                    chunk(chunk(c.ck, m, cw), j, ckw),
                    chunk_mut(s.dcq, j, ckw),
                );
                axpy(dsm, qj, chunk_mut(chunk_mut(s.dck, m, cw), j, ckw));
            }
        }
        ops::linear_backward(
            chunk(w.c_q, i, pw),
            chunk(c.ht, i, hid),
            s.dcq,
            Some(chunk_mut(s.dht, i, hid)),
            Some(chunk_mut(g.c_q, i, pw)),
            None,
        );
    }
    for m in 0..n {
        let ht = chunk(c.ht, m, hid);
        // Keys/values were read from every module's h~. The projection weights always get
        // their gradient; an inactive module's h~ only in CommGrad::Full (Blocked: the
        // official blocked_grad, which keeps gradient away from inactive modules; the RNN
        // loop skips them as well, so this only saves work).
        let pass = c.active(m) || mode == CommGrad::Full;
        for (wt, gt, dy) in [(w.c_k, &mut *g.c_k, &*s.dck), (w.c_v, &mut *g.c_v, &*s.dcv)] {
            let dht = if pass {
                Some(chunk_mut(s.dht, m, hid))
            } else {
                None
            };
            ops::linear_backward(
                chunk(wt, m, pw),
                ht,
                chunk(dy, m, cw),
                dht,
                Some(chunk_mut(gt, m, pw)),
                None,
            );
        }
    }
}

/// Backward of step 3 for module `m`: its RNN, from the gradient of `h~` (`dht`) and, for an
/// active LSTM module, of `c~`, into `du` (the gradient of its input), `dh_prev`, `dc_prev` and
/// the RNN's weight gradients.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn module_backward<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    m: usize,
    c: &Cache<'_, S>,
    h_prev: &[S],
    c_prev: &[S],
    dc_out: &[S],
    s: &mut Scratch<'_, S>,
    dh_prev: &mut [S],
    dc_prev: &mut [S],
    g: &mut RimGrads<'_, S>,
) {
    let (hid, rml) = (d.hidden, rnn_module_len(d));
    let u = chunk(c.u, m, module_input(d));
    let hp = chunk(h_prev, m, hid);
    let dht = chunk(s.dht, m, hid);
    let rc = chunk(c.rnn, m, rnn_cache_len(d));
    s.du.fill(S::ZERO);
    let [w_ih, w_hh, b_ih, b_hh] = rnn_view(chunk(w.rnn, m, rml), d);
    let [gw_ih, gw_hh, gb_ih, gb_hh] = rnn_view(chunk_mut(g.rnn, m, rml), d);
    if d.cell == CellKind::Lstm {
        // An inactive module's c~ is never read (communication reads h~ only): zero grad.
        if c.active(m) {
            copy(s.dct, chunk(dc_out, m, hid));
        } else {
            s.dct.fill(S::ZERO);
        }
        let p = LstmWeights {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        };
        let mut gl = LstmGrads {
            w_ih: gw_ih,
            w_hh: gw_hh,
            b_ih: gb_ih,
            b_hh: gb_hh,
        };
        ops::lstm_backward(
            &p,
            u,
            hp,
            chunk(c_prev, m, hid),
            rc,
            dht,
            s.dct,
            Some(&mut *s.du),
            chunk_mut(dh_prev, m, hid),
            chunk_mut(dc_prev, m, hid),
            &mut gl,
            s.rnn,
        );
    } else {
        let p = GruWeights {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        };
        let mut gg = GruGrads {
            w_ih: gw_ih,
            w_hh: gw_hh,
            b_ih: gb_ih,
            b_hh: gb_hh,
        };
        ops::gru_backward(
            &p,
            u,
            hp,
            rc,
            dht,
            Some(&mut *s.du),
            chunk_mut(dh_prev, m, hid),
            &mut gg,
            s.rnn,
        );
    }
}

/// Backward of step 1 for module `m`, from the gradient of its input (`du`): into its query
/// weights and `dh_prev`, and the shared key/value gradients `dkx` / `dvx`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_attention_backward<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    m: usize,
    c: &Cache<'_, S>,
    h_prev: &[S],
    s: &mut Scratch<'_, S>,
    dh_prev: &mut [S],
    g: &mut RimGrads<'_, S>,
) {
    let (aw, hid) = (query_width(d), d.hidden);
    let inv_dk: S = inv_sqrt(d.d_k);
    // u_mj = a_mj * v_x,j with a_mj = sigmoid(s_mj), s_mj = q_mj . k_x,j / sqrt(d_k).
    s.dq.fill(S::ZERO);
    let q = chunk(c.q, m, aw);
    let ax = chunk(c.ax, m, d.in_heads);
    for (j, a) in ax.iter().enumerate() {
        let duj = chunk(s.du, j, d.d_v);
        let da = dot(duj, chunk(c.vx, j, d.d_v));
        axpy(*a, duj, chunk_mut(s.dvx, j, d.d_v));
        let dsc = da * *a * (S::ONE - *a) * inv_dk;
        axpy(dsc, chunk(c.kx, j, d.d_k), chunk_mut(s.dq, j, d.d_k));
        axpy(dsc, chunk(q, j, d.d_k), chunk_mut(s.dkx, j, d.d_k));
    }
    ops::linear_backward(
        chunk(w.w_q, m, mul(aw, hid)),
        chunk(h_prev, m, hid),
        s.dq,
        Some(chunk_mut(dh_prev, m, hid)),
        Some(chunk_mut(g.w_q, m, mul(aw, hid))),
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Sequences.

/// `steps` RIM steps from `h0` (and `c0` for an LSTM; empty for a GRU) over `xs`
/// (`steps * input`, step-major). Writes every step's state into `hs` (`steps * N*H`), `cs`
/// (LSTM: `steps * N*H`, else may be empty), selection into `actives` (`steps * N`) and caches
/// into `caches` (`steps * step_cache_len`).
#[allow(clippy::too_many_arguments)]
pub fn rim_sequence_forward<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    steps: usize,
    xs: &[S],
    h0: &[S],
    c0: &[S],
    hs: &mut [S],
    cs: &mut [S],
    actives: &mut [bool],
    caches: &mut [S],
) -> Result<(), Error> {
    check_dims(d)?;
    let nh = state_len(d);
    let ncl = cell_state_len(d);
    let cl = step_cache_len(d);
    check_len(xs.len(), mul(steps, d.input))?;
    check_len(h0.len(), nh)?;
    check_len(c0.len(), ncl)?;
    check_len(hs.len(), mul(steps, nh))?;
    check_len(cs.len(), mul(steps, ncl))?;
    check_len(actives.len(), mul(steps, d.n_modules))?;
    check_len(caches.len(), mul(steps, cl))?;
    for t in 0..steps {
        let (h_done, h_rest) = hs.split_at_mut(mul(t, nh).min(hs.len()));
        let (c_done, c_rest) = cs.split_at_mut(mul(t, ncl).min(cs.len()));
        let h_prev = if t == 0 { h0 } else { chunk(h_done, t - 1, nh) };
        let c_prev = if t == 0 {
            c0
        } else {
            chunk(c_done, t - 1, ncl)
        };
        rim_step_forward(
            w,
            d,
            chunk(xs, t, d.input),
            h_prev,
            c_prev,
            chunk_mut(h_rest, 0, nh),
            chunk_mut(c_rest, 0, ncl),
            chunk_mut(actives, t, d.n_modules),
            chunk_mut(caches, t, cl),
        )?;
    }
    Ok(())
}

/// Backpropagation through time over a [`rim_sequence_forward`] run: given the loss gradients
/// w.r.t. every step's state, `dhs` (`steps * N*H`) and `dcs` (LSTM: `steps * N*H`, or empty for
/// no loss on the cell state; ignored for a GRU), ACCUMULATE parameter gradients into `g`, input
/// gradients into `dxs` (if given, `steps * input`) and the initial-state gradients into `dh0`
/// (and `dc0` for an LSTM). `scratch` needs [`sequence_scratch_len`] elements.
#[allow(clippy::too_many_arguments)]
pub fn rim_sequence_backward<S: Real>(
    w: &RimWeights<'_, S>,
    d: &RimDims,
    mode: CommGrad,
    steps: usize,
    xs: &[S],
    h0: &[S],
    c0: &[S],
    hs: &[S],
    cs: &[S],
    caches: &[S],
    dhs: &[S],
    dcs: &[S],
    mut dxs: Option<&mut [S]>,
    dh0: &mut [S],
    dc0: &mut [S],
    g: &mut RimGrads<'_, S>,
    scratch: &mut [S],
) -> Result<(), Error> {
    check_dims(d)?;
    let nh = state_len(d);
    let ncl = cell_state_len(d);
    let cl = step_cache_len(d);
    check_len(xs.len(), mul(steps, d.input))?;
    check_len(h0.len(), nh)?;
    check_len(c0.len(), ncl)?;
    check_len(hs.len(), mul(steps, nh))?;
    check_len(cs.len(), mul(steps, ncl))?;
    check_len(caches.len(), mul(steps, cl))?;
    check_len(dhs.len(), mul(steps, nh))?;
    let c_loss = !dcs.is_empty();
    if c_loss {
        check_len(dcs.len(), mul(steps, ncl))?;
    }
    if let Some(dxs) = dxs.as_deref() {
        check_len(dxs.len(), mul(steps, d.input))?;
    }
    check_len(dh0.len(), nh)?;
    check_len(dc0.len(), ncl)?;
    check_len(scratch.len(), sequence_scratch_len(d))?;

    let mut b = scratch;
    let gh = take(&mut b, nh); // dL/dh_t (loss + carried from step t+1)
    let carry_h = take(&mut b, nh); // dL/dh_{t-1} accumulated by step t
    let gc = take(&mut b, ncl);
    let carry_c = take(&mut b, ncl);
    let step_scratch = b;
    carry_h.fill(S::ZERO);
    carry_c.fill(S::ZERO);
    for t in (0..steps).rev() {
        for ((o, l), cy) in gh.iter_mut().zip(chunk(dhs, t, nh)).zip(carry_h.iter()) {
            *o = *l + *cy;
        }
        copy(gc, carry_c);
        if c_loss {
            axpy(S::ONE, chunk(dcs, t, ncl), gc);
        }
        carry_h.fill(S::ZERO);
        carry_c.fill(S::ZERO);
        let h_prev = if t == 0 { h0 } else { chunk(hs, t - 1, nh) };
        let c_prev = if t == 0 { c0 } else { chunk(cs, t - 1, ncl) };
        let dx = dxs.as_deref_mut().map(|v| chunk_mut(v, t, d.input));
        rim_step_backward(
            w,
            d,
            mode,
            chunk(xs, t, d.input),
            h_prev,
            c_prev,
            chunk(caches, t, cl),
            gh,
            gc,
            dx,
            carry_h,
            carry_c,
            g,
            step_scratch,
        )?;
    }
    axpy(S::ONE, carry_h, dh0);
    axpy(S::ONE, carry_c, dc0);
    Ok(())
}
