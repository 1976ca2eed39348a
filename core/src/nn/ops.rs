//! Dense building blocks with hand-written backward passes: linear layers, softmax, GRU and LSTM
//! cells.
//!
//! Conventions (PyTorch's, so weights port both ways):
//! - A weight is row-major `[out x in]`: `y[o] = b[o] + sum_i w[o * in + i] * x[i]`.
//! - Backward functions *accumulate* into gradient buffers (`+=`), so a caller sums over time
//!   steps and batch elements by calling them repeatedly; input gradients are accumulated too.
//! - Functions never panic: they walk slices with iterators, so a buffer shorter than its layout
//!   says truncates the computation instead of indexing out of bounds. The layout code
//!   ([`crate::nn::params`]) checks every length once, up front, and returns an error.

use crate::nn::scalar::Real;

/// Accumulator lanes of [`dot`].
pub const DOT_LANES: usize = 8;

/// `sum_i a[i] * b[i]` over the common length, in [`DOT_LANES`] interleaved partial sums
/// (element `i` goes to lane `i % 8`, the tail past the last full group of 8 to a ninth sum)
/// combined in a fixed tree. Why: a single running sum is one long dependency chain that the
/// compiler may not reorder (float addition is not associative), which leaves SIMD units idle;
/// eight independent sums vectorise. The order is fixed, so results stay deterministic, and
/// they differ from the sequential sum only by rounding.
#[inline]
pub fn dot<S: Real>(a: &[S], b: &[S]) -> S {
    let n = a.len().min(b.len());
    let (a, b) = (a.get(..n).unwrap_or(&[]), b.get(..n).unwrap_or(&[]));
    let mut acc = [S::ZERO; DOT_LANES];
    let ca = a.chunks_exact(DOT_LANES);
    let cb = b.chunks_exact(DOT_LANES);
    let mut tail = S::ZERO;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += *x * *y;
    }
    for (x, y) in ca.zip(cb) {
        for ((l, xi), yi) in acc.iter_mut().zip(x).zip(y) {
            *l += *xi * *yi;
        }
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)) + tail
}

/// `y = W x (+ b)`, `W` row-major `[y.len() x x.len()]`.
#[inline]
pub fn linear<S: Real>(w: &[S], b: Option<&[S]>, x: &[S], y: &mut [S]) {
    let n_in = x.len();
    if n_in == 0 {
        y.iter_mut().for_each(|v| *v = S::ZERO);
        return;
    }
    for (o, (yo, row)) in y.iter_mut().zip(w.chunks_exact(n_in)).enumerate() {
        let bias = match b {
            Some(b) => b.get(o).copied().unwrap_or(S::ZERO),
            None => S::ZERO,
        };
        *yo = bias + dot(row, x);
    }
}

/// `y += W x`, `W` row-major `[y.len() x x.len()]`.
#[inline]
pub fn linear_acc<S: Real>(w: &[S], x: &[S], y: &mut [S]) {
    let n_in = x.len();
    if n_in == 0 {
        return;
    }
    for (yo, row) in y.iter_mut().zip(w.chunks_exact(n_in)) {
        *yo += dot(row, x);
    }
}

/// Backward of [`linear`]: `dW += dy x^T`, `db += dy`, `dx += W^T dy` (each when given).
#[inline]
pub fn linear_backward<S: Real>(
    w: &[S],
    x: &[S],
    dy: &[S],
    dx: Option<&mut [S]>,
    dw: Option<&mut [S]>,
    db: Option<&mut [S]>,
) {
    if let Some(db) = db {
        for (g, d) in db.iter_mut().zip(dy) {
            *g += *d;
        }
    }
    let n_in = x.len();
    if n_in == 0 {
        return;
    }
    if let Some(dw) = dw {
        for (grow, d) in dw.chunks_exact_mut(n_in).zip(dy) {
            if *d == S::ZERO {
                continue;
            }
            for (g, xi) in grow.iter_mut().zip(x) {
                *g += *d * *xi;
            }
        }
    }
    if let Some(dx) = dx {
        for (row, d) in w.chunks_exact(n_in).zip(dy) {
            if *d == S::ZERO {
                continue;
            }
            for (g, wi) in dx.iter_mut().zip(row) {
                *g += *d * *wi;
            }
        }
    }
}

/// Softmax of `x` into `y` (max-subtracted for stability).
#[inline]
pub fn softmax<S: Real>(x: &[S], y: &mut [S]) {
    let m = x.iter().copied().fold(None, |m: Option<S>, v| match m {
        Some(m) => Some(m.max(v)),
        None => Some(v),
    });
    let Some(m) = m else { return };
    let mut sum = S::ZERO;
    for (yo, xi) in y.iter_mut().zip(x) {
        *yo = (*xi - m).exp();
        sum += *yo;
    }
    for yo in y.iter_mut() {
        *yo = *yo / sum;
    }
}

/// Backward of [`softmax`] given its output `y`: `dx += y * (dy - <dy, y>)`.
#[inline]
pub fn softmax_backward<S: Real>(y: &[S], dy: &[S], dx: &mut [S]) {
    let mut dot = S::ZERO;
    for (a, b) in y.iter().zip(dy) {
        dot += *a * *b;
    }
    for ((g, yi), di) in dx.iter_mut().zip(y).zip(dy) {
        *g += *yi * (*di - dot);
    }
}

/// The `eps` of [`layer_norm`] (PyTorch's default): keeps an all-equal input (all-zero
/// features after a ReLU, say) finite, mapped to zeros.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Mean and `1 / sqrt(var + eps)` of `x` (population variance; `(0, 1/sqrt(eps))` when empty).
#[inline]
pub fn layer_norm_stats<S: Real>(x: &[S]) -> (S, S) {
    let n = S::from_f64(x.len().max(1) as f64);
    let mean = x.iter().fold(S::ZERO, |a, v| a + *v) / n;
    let var = x.iter().fold(S::ZERO, |a, v| a + (*v - mean) * (*v - mean)) / n;
    (mean, S::ONE / (var + S::from_f64(LAYER_NORM_EPS)).sqrt())
}

/// Layer normalisation in place, without a learned scale or shift:
/// `x = (x - mean(x)) / sqrt(var(x) + eps)`.
#[inline]
pub fn layer_norm<S: Real>(x: &mut [S]) {
    let (mean, inv) = layer_norm_stats(x);
    for v in x.iter_mut() {
        *v = (*v - mean) * inv;
    }
}

/// Backward of [`layer_norm`] given its *input* `x` and `dy = dL/dy`: writes (not accumulates)
/// `dx = inv * (dy - mean(dy) - y * mean(dy * y))` with `y` the normalised `x`, over the common
/// length of the three slices.
#[inline]
pub fn layer_norm_backward<S: Real>(x: &[S], dy: &[S], dx: &mut [S]) {
    let (mean, inv) = layer_norm_stats(x);
    let n = S::from_f64(x.len().max(1) as f64);
    let (mut m1, mut m2) = (S::ZERO, S::ZERO);
    for (xi, di) in x.iter().zip(dy) {
        m1 += *di;
        m2 += *di * (*xi - mean) * inv;
    }
    let (m1, m2) = (m1 / n, m2 / n);
    for ((g, xi), di) in dx.iter_mut().zip(x).zip(dy) {
        *g = inv * (*di - m1 - (*xi - mean) * inv * m2);
    }
}

/// Log-softmax of `x` into `y`.
#[inline]
pub fn log_softmax<S: Real>(x: &[S], y: &mut [S]) {
    let m = x.iter().copied().fold(None, |m: Option<S>, v| match m {
        Some(m) => Some(m.max(v)),
        None => Some(v),
    });
    let Some(m) = m else { return };
    let mut sum = S::ZERO;
    for xi in x {
        sum += (*xi - m).exp();
    }
    let lse = m + sum.ln();
    for (yo, xi) in y.iter_mut().zip(x) {
        *yo = *xi - lse;
    }
}

param_views! {
    /// Weights of a recurrent cell in PyTorch's layout: `G` gates of `H` units each, stacked
    /// (a GRU: `G = 3`, gate order r, z, n; an LSTM: `G = 4`, order i, f, g, o).
    weights CellWeights;
    /// Gradients of a recurrent cell, laid out like [`CellWeights`].
    grads CellGrads;
    {
        /// `[G*H x I]`.
        w_ih,
        /// `[G*H x H]`.
        w_hh,
        /// `[G*H]`.
        b_ih,
        /// `[G*H]`.
        b_hh,
    }
}

/// Weights of a GRU cell (PyTorch layout, gate order r, z, n: `[3H x I]`, `[3H x H]`, `[3H]`,
/// `[3H]`).
pub type GruWeights<'a, S> = CellWeights<'a, S>;
/// Gradients of a GRU cell, laid out like [`GruWeights`].
pub type GruGrads<'a, S> = CellGrads<'a, S>;

/// Values a GRU step keeps for its backward pass, per hidden unit: `r`, `z`, `n`, `W_hn h + b_hn`.
pub const GRU_CACHE_PER_UNIT: usize = 4;

/// One GRU step: `h_out = (1 - z) * n + z * h` with
/// `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(W_iz x + b_iz + W_hz h + b_hz)`,
/// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`.
/// `cache` (length `4H`) receives `[r | z | n | hn]` for [`gru_backward`].
pub fn gru_forward<S: Real>(
    p: &GruWeights<'_, S>,
    x: &[S],
    h: &[S],
    h_out: &mut [S],
    cache: &mut [S],
) {
    let hid = h.len();
    if cache.len() < 4 * hid
        || h_out.len() < hid
        || p.w_hh.len() < 3 * hid * hid
        || p.b_hh.len() < 3 * hid
        || p.b_ih.len() < 3 * hid
    {
        return;
    }
    // The r, z, n slots first hold the input side W_i x + b_i.
    let (gx, hn) = cache.split_at_mut(3 * hid);
    if x.is_empty() {
        gx.copy_from_slice(&p.b_ih[..3 * hid]);
    } else {
        linear(p.w_ih, Some(p.b_ih), x, gx);
    }
    let row = |j: usize| &p.w_hh[j * hid..(j + 1) * hid];
    let dot_h = |w: &[S]| dot(w, h);
    for u in 0..hid {
        let r = (gx[u] + dot_h(row(u)) + p.b_hh[u]).sigmoid();
        let z = (gx[hid + u] + dot_h(row(hid + u)) + p.b_hh[hid + u]).sigmoid();
        let hn_u = dot_h(row(2 * hid + u)) + p.b_hh[2 * hid + u];
        let n = (gx[2 * hid + u] + r * hn_u).tanh();
        gx[u] = r;
        gx[hid + u] = z;
        gx[2 * hid + u] = n;
        hn[u] = hn_u;
        h_out[u] = (S::ONE - z) * n + z * h[u];
    }
}

/// Backward of [`gru_forward`]: given `dh_out`, accumulate weight gradients into `g`, the input
/// gradient into `dx` (if given) and the previous-state gradient into `dh`.
/// `scratch` needs `6H` elements (pre-activation gradients of both sides).
#[allow(clippy::too_many_arguments)]
pub fn gru_backward<S: Real>(
    p: &GruWeights<'_, S>,
    x: &[S],
    h: &[S],
    cache: &[S],
    dh_out: &[S],
    dx: Option<&mut [S]>,
    dh: &mut [S],
    g: &mut GruGrads<'_, S>,
    scratch: &mut [S],
) {
    let hid = h.len();
    let three = 3 * hid;
    if scratch.len() < 2 * three {
        return;
    }
    let (gi, rest) = scratch.split_at_mut(three);
    let gh = &mut rest[..three];
    gru_gate_grads(cache, h, dh_out, gi, gh, dh);
    linear_backward(p.w_ih, x, gi, dx, Some(g.w_ih), Some(g.b_ih));
    linear_backward(p.w_hh, h, gh, Some(dh), Some(g.w_hh), Some(g.b_hh));
}

/// The pointwise part of [`gru_backward`], shared with batched implementations: from a step's
/// `cache` (`[r | z | n | hn]`, [`GRU_CACHE_PER_UNIT`] per unit), its previous state `h` and the
/// output gradient `dh_out`, write the gradients of the gate pre-activations on the input side
/// (`gi = [da_r | da_z | da_n]`) and the hidden side (`gh = [da_r | da_z | r * da_n]`), each `3H`,
/// and accumulate the direct path `z * dh_out` into `dh`. Nothing is written if a buffer is short.
#[inline]
pub fn gru_gate_grads<S: Real>(
    cache: &[S],
    h: &[S],
    dh_out: &[S],
    gi: &mut [S],
    gh: &mut [S],
    dh: &mut [S],
) {
    let hid = h.len();
    if cache.len() < 4 * hid || gi.len() < 3 * hid || gh.len() < 3 * hid || dh.len() < hid {
        return;
    }
    let (r, rest) = cache.split_at(hid);
    let (z, rest) = rest.split_at(hid);
    let (n, hn) = rest.split_at(hid);
    for u in 0..hid {
        let d = dh_out.get(u).copied().unwrap_or(S::ZERO);
        let (ru, zu, nu, hnu, hu) = (r[u], z[u], n[u], hn[u], h[u]);
        let dn = d * (S::ONE - zu);
        let dz = d * (hu - nu);
        let da_n = dn * (S::ONE - nu * nu);
        let dr = da_n * hnu;
        let da_z = dz * zu * (S::ONE - zu);
        let da_r = dr * ru * (S::ONE - ru);
        gi[u] = da_r;
        gi[hid + u] = da_z;
        gi[2 * hid + u] = da_n;
        gh[u] = da_r;
        gh[hid + u] = da_z;
        gh[2 * hid + u] = da_n * ru;
        dh[u] += d * zu;
    }
}

/// Weights of an LSTM cell (PyTorch layout, gate order i, f, g, o: `[4H x I]`, `[4H x H]`,
/// `[4H]`, `[4H]`).
pub type LstmWeights<'a, S> = CellWeights<'a, S>;
/// Gradients of an LSTM cell, laid out like [`LstmWeights`].
pub type LstmGrads<'a, S> = CellGrads<'a, S>;

/// Values an LSTM step keeps for its backward pass, per unit: `i`, `f`, `g`, `o`, `tanh(c')`.
pub const LSTM_CACHE_PER_UNIT: usize = 5;

/// One LSTM step: gates `[i f g o] = W_ih x + b_ih + W_hh h + b_hh`,
/// `c' = σ(f) c + σ(i) tanh(g)`, `h' = σ(o) tanh(c')`. `cache` (length `5H`) receives
/// `[i | f | g | o | tanh(c')]` after their nonlinearities.
#[allow(clippy::too_many_arguments)]
pub fn lstm_forward<S: Real>(
    p: &LstmWeights<'_, S>,
    x: &[S],
    h: &[S],
    c: &[S],
    h_out: &mut [S],
    c_out: &mut [S],
    cache: &mut [S],
) {
    let hid = h.len();
    if cache.len() < 5 * hid {
        return;
    }
    let (gates, tc) = cache.split_at_mut(4 * hid);
    linear(p.w_ih, Some(p.b_ih), x, gates);
    if x.is_empty() {
        for (v, b) in gates.iter_mut().zip(p.b_ih) {
            *v = *b;
        }
    }
    linear_acc(p.w_hh, h, gates);
    for (v, b) in gates.iter_mut().zip(p.b_hh) {
        *v += *b;
    }
    // An index loop: walking `tc` with `iter_mut().enumerate().take(hid)` costs the firmware
    // 192 B of flash (docs/BENCHMARKS.md).
    #[allow(clippy::needless_range_loop)]
    for u in 0..hid {
        let c_prev = c.get(u).copied().unwrap_or(S::ZERO);
        let (cu, t, hu) = lstm_unit_forward(gates, hid, u, c_prev, S::sigmoid, S::tanh);
        tc[u] = t;
        if let Some(v) = c_out.get_mut(u) {
            *v = cu;
        }
        if let Some(v) = h_out.get_mut(u) {
            *v = hu;
        }
    }
}

/// The pointwise part of [`lstm_forward`] for unit `u` (`u < hid`, `gates.len() >= 4 * hid`):
/// replaces the unit's four gate pre-activations (`[i f g o]`, `hid` apart) by their
/// nonlinearities, as the backward pass reads them, and returns `(c', tanh(c'), h')`. Outside
/// those bounds it writes nothing and returns zeros, as this module's functions do with short
/// buffers (never a panic). The nonlinearities are parameters so that the batched host path,
/// which uses fast approximations in f32, computes the same cell with them (the kernels'
/// counterpart is `lstm_unit_forward` in `kernels/common.cuh`).
#[inline(always)]
pub fn lstm_unit_forward<S: Real>(
    gates: &mut [S],
    hid: usize,
    u: usize,
    c_prev: S,
    sigmoid: impl Fn(S) -> S,
    tanh: impl Fn(S) -> S,
) -> (S, S, S) {
    if u >= hid || gates.len() < hid.saturating_mul(4) {
        return (S::ZERO, S::ZERO, S::ZERO);
    }
    let i = sigmoid(gates[u]);
    let f = sigmoid(gates[hid + u]);
    let gg = tanh(gates[2 * hid + u]);
    let o = sigmoid(gates[3 * hid + u]);
    gates[u] = i;
    gates[hid + u] = f;
    gates[2 * hid + u] = gg;
    gates[3 * hid + u] = o;
    let cu = f * c_prev + i * gg;
    let t = tanh(cu);
    (cu, t, o * t)
}

/// The pointwise part of [`lstm_backward`] for `hid` units: from the cache
/// `[i | f | g | o | tanh(c')]` (`5H`), the incoming cell state `c` and the gradients of the
/// outgoing `h'` (`dh_out`) and `c'` (`dc_out`), writes the gate pre-activation gradients `da`
/// (`4H`; the input and hidden sides share them, as their pre-activations are summed) and
/// accumulates the incoming cell state's gradient into `dc`. The batched RIM's LSTM modules
/// call it too, so both paths compute the same expressions in the same order. Missing
/// gradient or state entries count as zero; a short `cache` or `da` computes nothing.
#[inline]
pub fn lstm_gate_grads<S: Real>(
    hid: usize,
    cache: &[S],
    c: &[S],
    dh_out: &[S],
    dc_out: &[S],
    da: &mut [S],
    dc: &mut [S],
) {
    if cache.len() < 5 * hid || da.len() < 4 * hid {
        return;
    }
    let (gates, tc) = cache.split_at(4 * hid);
    for u in 0..hid {
        let (i, f, gg, o, t) = (
            gates[u],
            gates[hid + u],
            gates[2 * hid + u],
            gates[3 * hid + u],
            tc[u],
        );
        let dho = dh_out.get(u).copied().unwrap_or(S::ZERO);
        let dct = dc_out.get(u).copied().unwrap_or(S::ZERO) + dho * o * (S::ONE - t * t);
        let cu = c.get(u).copied().unwrap_or(S::ZERO);
        da[u] = dct * gg * i * (S::ONE - i);
        da[hid + u] = dct * cu * f * (S::ONE - f);
        da[2 * hid + u] = dct * i * (S::ONE - gg * gg);
        da[3 * hid + u] = dho * t * o * (S::ONE - o);
        if let Some(v) = dc.get_mut(u) {
            *v += dct * f;
        }
    }
}

/// Backward of [`lstm_forward`]: given `dh_out` and `dc_out`, accumulate weight gradients, the
/// input gradient (if `dx` given) and the previous state's gradients `dh`, `dc`.
/// `scratch` needs `4H` elements.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward<S: Real>(
    p: &LstmWeights<'_, S>,
    x: &[S],
    h: &[S],
    c: &[S],
    cache: &[S],
    dh_out: &[S],
    dc_out: &[S],
    dx: Option<&mut [S]>,
    dh: &mut [S],
    dc: &mut [S],
    g: &mut LstmGrads<'_, S>,
    scratch: &mut [S],
) {
    let hid = h.len();
    if cache.len() < 5 * hid || scratch.len() < 4 * hid {
        return;
    }
    let da = &mut scratch[..4 * hid];
    lstm_gate_grads(hid, cache, c, dh_out, dc_out, da, dc);
    linear_backward(p.w_ih, x, da, dx, Some(g.w_ih), Some(g.b_ih));
    linear_backward(p.w_hh, h, da, Some(dh), Some(g.w_hh), Some(g.b_hh));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{max_rel_error, uniform_vec, GRAD_TOL};
    use crate::rng::Pcg32;

    /// Random loss weights: the scalar loss is `sum_k c_k * out_k`.
    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn linear_gradients() {
        let mut rng = Pcg32::new(1);
        for &(ni, no) in &[(5usize, 3usize), (1, 7), (9, 1)] {
            let (w, b, x, c) = (
                uniform_vec(&mut rng, ni * no, 1.0),
                uniform_vec(&mut rng, no, 1.0),
                uniform_vec(&mut rng, ni, 1.0),
                uniform_vec(&mut rng, no, 1.0),
            );
            let (mut dw, mut db, mut dx) = (vec![0.0; ni * no], vec![0.0; no], vec![0.0; ni]);
            linear_backward(&w, &x, &c, Some(&mut dx), Some(&mut dw), Some(&mut db));
            let loss = |w: &[f64], b: &[f64], x: &[f64]| {
                let mut y = vec![0.0; no];
                linear(w, Some(b), x, &mut y);
                dot(&y, &c)
            };
            assert!(max_rel_error(|v| loss(v, &b, &x), &w, &dw, 1e-5, 1e-4).0 < GRAD_TOL);
            assert!(max_rel_error(|v| loss(&w, v, &x), &b, &db, 1e-5, 1e-4).0 < GRAD_TOL);
            assert!(max_rel_error(|v| loss(&w, &b, v), &x, &dx, 1e-5, 1e-4).0 < GRAD_TOL);
        }
    }

    #[test]
    fn softmax_gradients() {
        let mut rng = Pcg32::new(2);
        let x = uniform_vec(&mut rng, 6, 3.0);
        let c = uniform_vec(&mut rng, 6, 1.0);
        let mut y = vec![0.0; 6];
        softmax(&x, &mut y);
        assert!((y.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let mut dx = vec![0.0; 6];
        softmax_backward(&y, &c, &mut dx);
        let loss = |x: &[f64]| {
            let mut y = vec![0.0; 6];
            softmax(x, &mut y);
            dot(&y, &c)
        };
        assert!(max_rel_error(loss, &x, &dx, 1e-5, 1e-4).0 < GRAD_TOL);
        let mut ls = vec![0.0; 6];
        log_softmax(&x, &mut ls);
        for (a, b) in ls.iter().zip(&y) {
            assert!((a.exp() - b).abs() < 1e-12);
        }
    }

    /// A recurrent cell's random tensors `[w_ih, w_hh, b_ih, b_hh]` for `gates` gates of `nh`
    /// units on `ni` inputs (weights in +-0.8, biases in +-0.5, drawn in that order).
    fn random_cell(rng: &mut Pcg32, gates: usize, ni: usize, nh: usize) -> [Vec<f64>; 4] {
        [
            uniform_vec(rng, gates * nh * ni, 0.8),
            uniform_vec(rng, gates * nh * nh, 0.8),
            uniform_vec(rng, gates * nh, 0.5),
            uniform_vec(rng, gates * nh, 0.5),
        ]
    }

    #[test]
    fn gru_gradients() {
        let mut rng = Pcg32::new(3);
        let (ni, nh) = (4usize, 3usize);
        let [w_ih, w_hh, b_ih, b_hh] = random_cell(&mut rng, 3, ni, nh);
        let x = uniform_vec(&mut rng, ni, 1.0);
        let h = uniform_vec(&mut rng, nh, 1.0);
        let c = uniform_vec(&mut rng, nh, 1.0);
        let run = |w_ih: &[f64], w_hh: &[f64], b_ih: &[f64], b_hh: &[f64], x: &[f64], h: &[f64]| {
            let p = GruWeights::from_parts([w_ih, w_hh, b_ih, b_hh]);
            let mut out = vec![0.0; nh];
            let mut cache = vec![0.0; 4 * nh];
            gru_forward(&p, x, h, &mut out, &mut cache);
            (dot(&out, &c), cache)
        };
        let (_, cache) = run(&w_ih, &w_hh, &b_ih, &b_hh, &x, &h);
        let mut g = (
            vec![0.0; w_ih.len()],
            vec![0.0; w_hh.len()],
            vec![0.0; b_ih.len()],
            vec![0.0; b_hh.len()],
        );
        let (mut dx, mut dh, mut scratch) = (vec![0.0; ni], vec![0.0; nh], vec![0.0; 6 * nh]);
        let p = GruWeights::from_parts([&w_ih, &w_hh, &b_ih, &b_hh]);
        let mut grads = GruGrads::from_parts([&mut g.0, &mut g.1, &mut g.2, &mut g.3]);
        gru_backward(
            &p,
            &x,
            &h,
            &cache,
            &c,
            Some(&mut dx),
            &mut dh,
            &mut grads,
            &mut scratch,
        );
        let e = |v: f64| assert!(v < GRAD_TOL, "rel error {v}");
        e(max_rel_error(
            |v| run(v, &w_hh, &b_ih, &b_hh, &x, &h).0,
            &w_ih,
            &g.0,
            1e-5,
            1e-4,
        )
        .0);
        e(max_rel_error(
            |v| run(&w_ih, v, &b_ih, &b_hh, &x, &h).0,
            &w_hh,
            &g.1,
            1e-5,
            1e-4,
        )
        .0);
        e(max_rel_error(
            |v| run(&w_ih, &w_hh, v, &b_hh, &x, &h).0,
            &b_ih,
            &g.2,
            1e-5,
            1e-4,
        )
        .0);
        e(max_rel_error(
            |v| run(&w_ih, &w_hh, &b_ih, v, &x, &h).0,
            &b_hh,
            &g.3,
            1e-5,
            1e-4,
        )
        .0);
        e(max_rel_error(
            |v| run(&w_ih, &w_hh, &b_ih, &b_hh, v, &h).0,
            &x,
            &dx,
            1e-5,
            1e-4,
        )
        .0);
        e(max_rel_error(
            |v| run(&w_ih, &w_hh, &b_ih, &b_hh, &x, v).0,
            &h,
            &dh,
            1e-5,
            1e-4,
        )
        .0);
    }

    /// Out of its bounds (a unit past `hid`, gates shorter than `4 hid`, a `hid` whose `4 hid`
    /// overflows) the LSTM unit step writes nothing and returns zeros instead of panicking.
    #[test]
    fn lstm_unit_forward_outside_its_bounds_is_a_no_op() {
        let (sig, tanh) = (|v: f64| v.sigmoid(), |v: f64| v.tanh());
        let mut gates = [0.5f64; 8];
        for (hid, u) in [(2usize, 2usize), (3, 0), (usize::MAX, 0)] {
            let out = lstm_unit_forward(&mut gates, hid, u, 1.0, sig, tanh);
            assert_eq!(out, (0.0, 0.0, 0.0), "hid {hid} u {u}");
            assert_eq!(gates, [0.5; 8], "hid {hid} u {u}");
        }
        // In bounds it applies the nonlinearities: c' = sig(f) c + sig(i) tanh(g).
        let (c, t, h) = lstm_unit_forward(&mut gates, 2, 1, 1.0, sig, tanh);
        let (s, g) = (0.5f64.sigmoid(), 0.5f64.tanh());
        assert_eq!(c, s * 1.0 + s * g);
        assert_eq!((t, h), (c.tanh(), s * c.tanh()));
        assert_eq!(gates, [0.5, s, 0.5, s, 0.5, g, 0.5, s]);
    }

    #[test]
    fn lstm_gradients() {
        let mut rng = Pcg32::new(4);
        let (ni, nh) = (3usize, 4usize);
        let [w_ih, w_hh, b_ih, b_hh] = random_cell(&mut rng, 4, ni, nh);
        let x = uniform_vec(&mut rng, ni, 1.0);
        let h = uniform_vec(&mut rng, nh, 1.0);
        let c0 = uniform_vec(&mut rng, nh, 1.0);
        let (ch, cc) = (
            uniform_vec(&mut rng, nh, 1.0),
            uniform_vec(&mut rng, nh, 1.0),
        );
        #[allow(clippy::type_complexity)]
        let run = |w_ih: &[f64],
                   w_hh: &[f64],
                   b_ih: &[f64],
                   b_hh: &[f64],
                   x: &[f64],
                   h: &[f64],
                   c: &[f64]| {
            let p = LstmWeights::from_parts([w_ih, w_hh, b_ih, b_hh]);
            let (mut ho, mut co, mut cache) = (vec![0.0; nh], vec![0.0; nh], vec![0.0; 5 * nh]);
            lstm_forward(&p, x, h, c, &mut ho, &mut co, &mut cache);
            (dot(&ho, &ch) + dot(&co, &cc), cache)
        };
        let (_, cache) = run(&w_ih, &w_hh, &b_ih, &b_hh, &x, &h, &c0);
        let mut g = (
            vec![0.0; w_ih.len()],
            vec![0.0; w_hh.len()],
            vec![0.0; b_ih.len()],
            vec![0.0; b_hh.len()],
        );
        let (mut dx, mut dh, mut dc, mut scratch) = (
            vec![0.0; ni],
            vec![0.0; nh],
            vec![0.0; nh],
            vec![0.0; 4 * nh],
        );
        let p = LstmWeights::from_parts([&w_ih, &w_hh, &b_ih, &b_hh]);
        let mut grads = LstmGrads::from_parts([&mut g.0, &mut g.1, &mut g.2, &mut g.3]);
        lstm_backward(
            &p,
            &x,
            &h,
            &c0,
            &cache,
            &ch,
            &cc,
            Some(&mut dx),
            &mut dh,
            &mut dc,
            &mut grads,
            &mut scratch,
        );
        let e = |what: &str, v: f64| assert!(v < GRAD_TOL, "{what}: rel error {v}");
        let f = |w_ih: &[f64],
                 w_hh: &[f64],
                 b_ih: &[f64],
                 b_hh: &[f64],
                 x: &[f64],
                 h: &[f64],
                 c: &[f64]| { run(w_ih, w_hh, b_ih, b_hh, x, h, c).0 };
        e(
            "w_ih",
            max_rel_error(
                |v| f(v, &w_hh, &b_ih, &b_hh, &x, &h, &c0),
                &w_ih,
                &g.0,
                1e-5,
                1e-4,
            )
            .0,
        );
        e(
            "w_hh",
            max_rel_error(
                |v| f(&w_ih, v, &b_ih, &b_hh, &x, &h, &c0),
                &w_hh,
                &g.1,
                1e-5,
                1e-4,
            )
            .0,
        );
        e(
            "b_ih",
            max_rel_error(
                |v| f(&w_ih, &w_hh, v, &b_hh, &x, &h, &c0),
                &b_ih,
                &g.2,
                1e-5,
                1e-4,
            )
            .0,
        );
        e(
            "b_hh",
            max_rel_error(
                |v| f(&w_ih, &w_hh, &b_ih, v, &x, &h, &c0),
                &b_hh,
                &g.3,
                1e-5,
                1e-4,
            )
            .0,
        );
        e(
            "x",
            max_rel_error(
                |v| f(&w_ih, &w_hh, &b_ih, &b_hh, v, &h, &c0),
                &x,
                &dx,
                1e-5,
                1e-4,
            )
            .0,
        );
        e(
            "h",
            max_rel_error(
                |v| f(&w_ih, &w_hh, &b_ih, &b_hh, &x, v, &c0),
                &h,
                &dh,
                1e-5,
                1e-4,
            )
            .0,
        );
        e(
            "c",
            max_rel_error(
                |v| f(&w_ih, &w_hh, &b_ih, &b_hh, &x, &h, v),
                &c0,
                &dc,
                1e-5,
                1e-4,
            )
            .0,
        );
    }
}
