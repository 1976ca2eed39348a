//! A batched RIM cell for the CPU: the same math as `metarim_core::nn::rim` (see its module docs:
//! null-row input attention, hard top-k on the least null attention with lower-index ties,
//! per-module GRU, communication attention with a gated residual and no biases, masked update,
//! [`CommGrad`] gradients), run over a batch of `B` sequences of `T` steps at once, with every
//! dense product a GEMM (`matrixmultiply`'s sgemm/dgemm through `ndarray::linalg`, or a
//! vectorisable dot/axpy loop when one side of the product has fewer than [`SMALL`] rows).
//!
//! Layout: every activation is batch-major, `[T x B x width]` (step `t`, sample `b`); a state is
//! `N*H` wide, module-major, as in the core. Parameters and gradients use the core's
//! [`RimWeights`] / [`RimGrads`] slices, so the batched and the per-sample paths share them.
//! [`RimBatch::new`] allocates every buffer once; [`RimBatch::forward`] and
//! [`RimBatch::backward`] allocate nothing.
//!
//! The backward pass runs BPTT over the steps computing only the input/state gradients (the
//! sequential part) and the pre-activation gradients of every weight; the weight gradients are
//! then one GEMM per tensor with the inner dimension `T*B` (all steps and samples at once).
//!
//! Scope: GRU modules only (the Paper and Tiny presets); an LSTM cell is reported as an error.

use anyhow::{bail, ensure, Result};
use metarim_core::nn::dims::{CellKind, RimDims};
use metarim_core::nn::ops::gru_gate_grads;
use metarim_core::nn::rim::{
    comm_width, module_input, query_width, rim_param_counts, rnn_module_len, state_len, CommGrad,
    RimGrads, RimWeights,
};
use metarim_core::nn::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

/// Below this many rows (or this inner dimension) a product is computed with dot/axpy loops
/// instead of a packed GEMM (packing a weight matrix for one row costs as much as the product).
pub const SMALL: usize = 4;

/// Scalars the batched cell runs on: `f32` and `f64` (core's [`Real`] plus `ndarray`'s GEMM).
pub trait Scalar: Real + ndarray::LinalgScalar {}
impl Scalar for f32 {}
impl Scalar for f64 {}

/// A strided matrix inside a slice: element `(r, c)` is at `off + r * rs + c * cs`.
#[derive(Clone, Copy, Debug)]
struct Mat {
    off: usize,
    rs: usize,
    cs: usize,
}

const fn mat(off: usize, rs: usize, cs: usize) -> Mat {
    Mat { off, rs, cs }
}

/// Row-major `[rows x cols]` block at `off` (row stride `cols`).
const fn rm(off: usize, cols: usize) -> Mat {
    mat(off, cols, 1)
}

/// The transpose of a row-major block with `cols` columns at `off`.
const fn tr(off: usize, cols: usize) -> Mat {
    mat(off, 1, cols)
}

/// `C = alpha A B + beta C` with `A: [m x k]`, `B: [k x n]`, `C: [m x n]` strided views.
#[allow(clippy::too_many_arguments)]
fn gemm<S: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: S,
    a: &[S],
    am: Mat,
    b: &[S],
    bm: Mat,
    beta: S,
    c: &mut [S],
    cm: Mat,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if m < SMALL || k < SMALL {
        if am.cs == 1 && bm.rs == 1 && small_dot(m, k, n, alpha, a, am, b, bm, beta, c, cm) {
            return Ok(());
        }
        if bm.cs == 1 && cm.cs == 1 && small_axpy(m, k, n, alpha, a, am, b, bm, beta, c, cm) {
            return Ok(());
        }
    }
    let (Some(a), Some(b)) = (a.get(am.off..), b.get(bm.off..)) else {
        bail!("gemm: operand offset out of range");
    };
    let Some(c) = c.get_mut(cm.off..) else {
        bail!("gemm: output offset out of range");
    };
    let av = ArrayView2::from_shape((m, k).strides((am.rs, am.cs)), a)?;
    let bv = ArrayView2::from_shape((k, n).strides((bm.rs, bm.cs)), b)?;
    let mut cv = ArrayViewMut2::from_shape((m, n).strides((cm.rs, cm.cs)), c)?;
    general_mat_mul(alpha, &av, &bv, beta, &mut cv);
    Ok(())
}

/// Dot form of a small product (`A` rows and `B` columns contiguous). `false` if a slice is
/// too short (then nothing was written).
#[allow(clippy::too_many_arguments)]
fn small_dot<S: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: S,
    a: &[S],
    am: Mat,
    b: &[S],
    bm: Mat,
    beta: S,
    c: &mut [S],
    cm: Mat,
) -> bool {
    let last = |x: Mat, r: usize, cols: usize| x.off + (r - 1) * x.rs + (cols - 1) * x.cs + 1;
    if k == 0 || a.len() < last(am, m, k) || b.len() < last(bm, k, n) || c.len() < last(cm, m, n) {
        return false;
    }
    for i in 0..m {
        let ar = &a[am.off + i * am.rs..][..k];
        for j in 0..n {
            let bc = &b[bm.off + j * bm.cs..][..k];
            let o = &mut c[cm.off + i * cm.rs + j * cm.cs];
            let v = alpha * dot(ar, bc);
            *o = if beta == S::ZERO { v } else { beta * *o + v };
        }
    }
    true
}

/// Axpy form of a small product (`B` and `C` rows contiguous). `false` if a slice is too short.
#[allow(clippy::too_many_arguments)]
fn small_axpy<S: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: S,
    a: &[S],
    am: Mat,
    b: &[S],
    bm: Mat,
    beta: S,
    c: &mut [S],
    cm: Mat,
) -> bool {
    let last = |x: Mat, r: usize, cols: usize| x.off + (r - 1) * x.rs + (cols - 1) * x.cs + 1;
    if k == 0 || a.len() < last(am, m, k) || b.len() < last(bm, k, n) || c.len() < last(cm, m, n) {
        return false;
    }
    for i in 0..m {
        let cr = &mut c[cm.off + i * cm.rs..][..n];
        if beta == S::ZERO {
            cr.fill(S::ZERO);
        } else if beta != S::ONE {
            cr.iter_mut().for_each(|v| *v *= beta);
        }
        for p in 0..k {
            let s = alpha * a[am.off + i * am.rs + p * am.cs];
            if s == S::ZERO {
                continue;
            }
            axpy(s, &b[bm.off + p * bm.rs..][..n], cr);
        }
    }
    true
}

/// Dot product with eight independent accumulators (so LLVM vectorises it).
#[inline]
fn dot<S: Scalar>(a: &[S], b: &[S]) -> S {
    let mut acc = [S::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = S::ZERO;
    for (x, y) in ra.iter().zip(rb) {
        s += *x * *y;
    }
    let a4 = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    s + (a4[0] + a4[2]) + (a4[1] + a4[3])
}

/// `y += alpha * x`.
#[inline]
fn axpy<S: Scalar>(alpha: S, x: &[S], y: &mut [S]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * *xi;
    }
}

/// Offsets of the nine tensors in a flat parameter buffer (order `w_k, w_v, w_q, rnn, c_q, c_k,
/// c_v, c_g, c_o`) and its total length.
pub fn param_offsets(d: &RimDims) -> ([usize; 9], usize) {
    let c = rim_param_counts(d);
    let lens = [
        c.w_k, c.w_v, c.w_q, c.rnn, c.c_q, c.c_k, c.c_v, c.c_g, c.c_o,
    ];
    let mut offs = [0; 9];
    let mut at = 0;
    for (o, l) in offs.iter_mut().zip(lens) {
        *o = at;
        at += l;
    }
    (offs, at)
}

/// Views the flat parameter buffer `p` ([`param_offsets`] order) as core's [`RimWeights`].
pub fn weights_view<'a, S>(d: &RimDims, p: &'a [S]) -> Result<RimWeights<'a, S>> {
    let (offs, total) = param_offsets(d);
    ensure!(
        p.len() >= total,
        "parameter buffer too short: {} < {total}",
        p.len()
    );
    let mut rest = &p[..total];
    let mut parts: [&[S]; 9] = [&[]; 9];
    for (i, part) in parts.iter_mut().enumerate() {
        let end = offs.get(i + 1).copied().unwrap_or(total) - offs[i];
        let (head, tail) = rest.split_at(end);
        *part = head;
        rest = tail;
    }
    let [w_k, w_v, w_q, rnn, c_q, c_k, c_v, c_g, c_o] = parts;
    Ok(RimWeights {
        w_k,
        w_v,
        w_q,
        rnn,
        c_q,
        c_k,
        c_v,
        c_g,
        c_o,
    })
}

/// Views the flat gradient buffer `g` ([`param_offsets`] order) as core's [`RimGrads`].
pub fn grads_view<'a, S>(d: &RimDims, g: &'a mut [S]) -> Result<RimGrads<'a, S>> {
    let (offs, total) = param_offsets(d);
    ensure!(
        g.len() >= total,
        "gradient buffer too short: {} < {total}",
        g.len()
    );
    let mut rest = &mut g[..total];
    let mut parts: [&mut [S]; 9] = Default::default();
    for (i, part) in parts.iter_mut().enumerate() {
        let end = offs.get(i + 1).copied().unwrap_or(total) - offs[i];
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(end);
        *part = head;
        rest = tail;
    }
    let [w_k, w_v, w_q, rnn, c_q, c_k, c_v, c_g, c_o] = parts;
    Ok(RimGrads {
        w_k,
        w_v,
        w_q,
        rnn,
        c_q,
        c_k,
        c_v,
        c_g,
        c_o,
    })
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

/// Hard top-k on the least null attention, lower index wins ties (as the core).
fn select_top_k<S: Real>(null: &[S], k: usize, mask: &mut [S], active: &mut [bool]) {
    for (i, ((m, a), vi)) in mask.iter_mut().zip(active.iter_mut()).zip(null).enumerate() {
        let rank = null
            .iter()
            .enumerate()
            .filter(|&(j, vj)| ranks_before(*vj, *vi) || (j < i && !ranks_before(*vi, *vj)))
            .count();
        let on = rank < k;
        *a = on;
        *m = if on { S::ONE } else { S::ZERO };
    }
}

/// Buffers of a batched RIM run over `B` samples and `T` steps (see the module docs).
#[derive(Clone, Debug)]
pub struct RimBatch<S> {
    d: RimDims,
    batch: usize,
    steps: usize,
    // Forward activations, [T x B x width] (hs: [(T+1) x B x N*H], slot 0 = h0).
    x: Vec<S>,
    hs: Vec<S>,
    kx: Vec<S>,
    vx: Vec<S>,
    q: Vec<S>,
    ax: Vec<S>,
    mask: Vec<S>,
    active: Vec<bool>,
    u: Vec<S>,
    gates: Vec<S>,
    ht: Vec<S>,
    cq: Vec<S>,
    ck: Vec<S>,
    cv: Vec<S>,
    p: Vec<S>,
    o: Vec<S>,
    gate: Vec<S>,
    tanh: Vec<S>,
    // Forward scratch, [B x width].
    gx: Vec<S>,
    gh: Vec<S>,
    null: Vec<S>,
    // Pre-activation gradients of every weight, [T x B x width].
    dkx: Vec<S>,
    dvx: Vec<S>,
    dq: Vec<S>,
    dgi: Vec<S>,
    dgh: Vec<S>,
    dpg: Vec<S>,
    dpo: Vec<S>,
    dcq: Vec<S>,
    dck: Vec<S>,
    dcv: Vec<S>,
    // Backward scratch, [B x width].
    carry: Vec<S>,
    carry_new: Vec<S>,
    dht: Vec<S>,
    dout: Vec<S>,
    du: Vec<S>,
    tmp: Vec<S>,
    dp: Vec<S>,
    ds: Vec<S>,
}

impl<S: Scalar> RimBatch<S> {
    /// Buffers for `batch` samples and `steps` steps of the cell `d` (GRU modules only).
    pub fn new(d: &RimDims, batch: usize, steps: usize) -> Result<Self> {
        ensure!(
            d.cell == CellKind::Gru,
            "the batched RIM cell supports GRU modules only"
        );
        ensure!(d.n_modules >= 1, "rim: n_modules must be at least 1");
        ensure!(
            d.k_active >= 1 && d.k_active <= d.n_modules,
            "rim: k_active must be in 1..=n_modules"
        );
        ensure!(
            d.hidden >= 1 && d.input >= 1,
            "rim: hidden and input must be at least 1"
        );
        ensure!(
            d.d_k >= 1 && d.d_v >= 1 && d.in_heads >= 1,
            "rim: d_k, d_v and in_heads must be at least 1"
        );
        ensure!(
            !d.communication || (d.c_heads >= 1 && d.c_k >= 1),
            "rim: c_heads and c_k must be at least 1 with communication"
        );
        ensure!(
            batch >= 1 && steps >= 1,
            "batch and steps must be at least 1"
        );
        let (n, h) = (d.n_modules, d.hidden);
        let nh = state_len(d);
        let tb = batch
            .checked_mul(steps)
            .filter(|v| v.checked_mul(nh * 8 + d.input * 2).is_some())
            .ok_or_else(|| anyhow::anyhow!("batch * steps too large"))?;
        let (aw, uw, cw) = (query_width(d), module_input(d), comm_width(d));
        let z = |len: usize| vec![S::ZERO; len];
        let comm = |len: usize| if d.communication { z(len) } else { Vec::new() };
        Ok(RimBatch {
            d: *d,
            batch,
            steps,
            x: z(tb * d.input),
            hs: z((tb + batch) * nh),
            kx: z(tb * aw),
            vx: z(tb * uw),
            q: z(tb * n * aw),
            ax: z(tb * n * d.in_heads),
            mask: z(tb * n),
            active: vec![false; tb * n],
            u: z(tb * n * uw),
            gates: z(tb * n * 4 * h),
            ht: z(tb * nh),
            cq: comm(tb * n * cw),
            ck: comm(tb * n * cw),
            cv: comm(tb * n * cw),
            p: comm(tb * n * d.c_heads * n),
            o: comm(tb * n * cw),
            gate: comm(tb * nh),
            tanh: comm(tb * nh),
            gx: z(batch * n * 3 * h),
            gh: z(batch * n * 3 * h),
            null: z(batch * n),
            dkx: z(tb * aw),
            dvx: z(tb * uw),
            dq: z(tb * n * aw),
            dgi: z(tb * n * 3 * h),
            dgh: z(tb * n * 3 * h),
            dpg: comm(tb * nh),
            dpo: comm(tb * nh),
            dcq: comm(tb * n * cw),
            dck: comm(tb * n * cw),
            dcv: comm(tb * n * cw),
            carry: z(batch * nh),
            carry_new: z(batch * nh),
            dht: z(batch * nh),
            dout: comm(batch * n * cw),
            du: z(batch * n * uw),
            tmp: comm(batch * h),
            dp: z(n),
            ds: z(n),
        })
    }

    /// Samples per step.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Steps per sequence.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// States after every step, `[T x B x N*H]`.
    pub fn hs(&self) -> &[S] {
        let nh = state_len(&self.d);
        &self.hs[self.batch * nh..]
    }

    /// Selection of every step, `[T x B x N]`.
    pub fn actives(&self) -> &[bool] {
        &self.active
    }

    /// Runs `T` steps over `xs` (`[T x B x input]`) from `h0` (`[B x N*H]`), keeping what the
    /// backward pass needs.
    pub fn forward(&mut self, w: &RimWeights<'_, S>, xs: &[S], h0: &[S]) -> Result<()> {
        let d = self.d;
        let (bsz, steps) = (self.batch, self.steps);
        let (n, hid, inp) = (d.n_modules, d.hidden, d.input);
        let nh = state_len(&d);
        let (aw, uw, cw) = (query_width(&d), module_input(&d), comm_width(&d));
        let (ih, dk, dv) = (d.in_heads, d.d_k, d.d_v);
        let g3 = 3 * hid;
        let rml = rnn_module_len(&d);
        check_weights(&d, w)?;
        ensure!(xs.len() >= steps * bsz * inp, "xs too short");
        ensure!(h0.len() >= bsz * nh, "h0 too short");
        self.x.copy_from_slice(&xs[..steps * bsz * inp]);
        self.hs[..bsz * nh].copy_from_slice(&h0[..bsz * nh]);
        let inv_dk = S::ONE / S::from_f64(dk as f64).sqrt();
        let inv_heads = S::ONE / S::from_f64(ih as f64);
        let (one, zero) = (S::ONE, S::ZERO);
        for t in 0..steps {
            let r0 = t * bsz; // first row of this step in [T*B x width] buffers
            let hp = r0 * nh; // h_prev offset in hs (slot t)
            let ho = (r0 + bsz) * nh; // h_out offset (slot t + 1)
                                      // 1. Input attention: shared keys/values of x, per-module queries of h_prev.
            let xo = r0 * inp;
            gemm(
                bsz,
                inp,
                aw,
                one,
                &self.x,
                rm(xo, inp),
                w.w_k,
                tr(0, inp),
                zero,
                &mut self.kx,
                rm(r0 * aw, aw),
            )?;
            gemm(
                bsz,
                inp,
                uw,
                one,
                &self.x,
                rm(xo, inp),
                w.w_v,
                tr(0, inp),
                zero,
                &mut self.vx,
                rm(r0 * uw, uw),
            )?;
            for i in 0..n {
                gemm(
                    bsz,
                    hid,
                    aw,
                    one,
                    &self.hs,
                    rm(hp + i * hid, nh),
                    w.w_q,
                    tr(i * aw * hid, hid),
                    zero,
                    &mut self.q,
                    rm(r0 * n * aw + i * aw, n * aw),
                )?;
            }
            for b in 0..bsz {
                let r = r0 + b;
                let kx = &self.kx[r * aw..][..aw];
                let vx = &self.vx[r * uw..][..uw];
                for i in 0..n {
                    let q = &self.q[(r * n + i) * aw..][..aw];
                    let ax = &mut self.ax[(r * n + i) * ih..][..ih];
                    let mut null_sum = zero;
                    for ((qh, kh), a) in q
                        .chunks_exact(dk)
                        .zip(kx.chunks_exact(dk))
                        .zip(ax.iter_mut())
                    {
                        let s = dot(qh, kh) * inv_dk;
                        *a = s.sigmoid();
                        null_sum += (-s).sigmoid();
                    }
                    self.null[b * n + i] = null_sum * inv_heads;
                    let u = &mut self.u[(r * n + i) * uw..][..uw];
                    for ((uh, vh), a) in u
                        .chunks_exact_mut(dv)
                        .zip(vx.chunks_exact(dv))
                        .zip(ax.iter())
                    {
                        for (o, v) in uh.iter_mut().zip(vh) {
                            *o = *a * *v;
                        }
                    }
                }
                // 2. Selection.
                select_top_k(
                    &self.null[b * n..][..n],
                    d.k_active,
                    &mut self.mask[r * n..][..n],
                    &mut self.active[r * n..][..n],
                );
            }
            // 3. Per-module GRUs, evaluated densely (inactive results are discarded below).
            for i in 0..n {
                let base = i * rml;
                let (w_ih, w_hh) = (base, base + g3 * uw);
                let (b_ih, b_hh) = (w_hh + g3 * hid, w_hh + g3 * hid + g3);
                gemm(
                    bsz,
                    uw,
                    g3,
                    one,
                    &self.u,
                    rm(r0 * n * uw + i * uw, n * uw),
                    w.rnn,
                    tr(w_ih, uw),
                    zero,
                    &mut self.gx,
                    rm(i * g3, n * g3),
                )?;
                gemm(
                    bsz,
                    hid,
                    g3,
                    one,
                    &self.hs,
                    rm(hp + i * hid, nh),
                    w.rnn,
                    tr(w_hh, hid),
                    zero,
                    &mut self.gh,
                    rm(i * g3, n * g3),
                )?;
                let bi = &w.rnn[b_ih..][..g3];
                let bh = &w.rnn[b_hh..][..g3];
                for b in 0..bsz {
                    let r = r0 + b;
                    let gx = &self.gx[(b * n + i) * g3..][..g3];
                    let gh = &self.gh[(b * n + i) * g3..][..g3];
                    let cache = &mut self.gates[(r * n + i) * 4 * hid..][..4 * hid];
                    let hprev = &self.hs[hp + b * nh + i * hid..][..hid];
                    let ht = &mut self.ht[r * nh + i * hid..][..hid];
                    for u in 0..hid {
                        let rg = (gx[u] + bi[u] + (gh[u] + bh[u])).sigmoid();
                        let zg =
                            (gx[hid + u] + bi[hid + u] + (gh[hid + u] + bh[hid + u])).sigmoid();
                        let hn = gh[2 * hid + u] + bh[2 * hid + u];
                        let ng = (gx[2 * hid + u] + bi[2 * hid + u] + rg * hn).tanh();
                        cache[u] = rg;
                        cache[hid + u] = zg;
                        cache[2 * hid + u] = ng;
                        cache[3 * hid + u] = hn;
                        ht[u] = (one - zg) * ng + zg * hprev[u];
                    }
                }
            }
            // 4. Communication.
            if d.communication {
                let pw = cw * hid;
                let (ch, ckw) = (d.c_heads, d.c_k);
                let inv_ck = S::ONE / S::from_f64(ckw as f64).sqrt();
                for i in 0..n {
                    let a = rm(r0 * nh + i * hid, nh);
                    let out = rm(r0 * n * cw + i * cw, n * cw);
                    gemm(
                        bsz,
                        hid,
                        cw,
                        one,
                        &self.ht,
                        a,
                        w.c_q,
                        tr(i * pw, hid),
                        zero,
                        &mut self.cq,
                        out,
                    )?;
                    gemm(
                        bsz,
                        hid,
                        cw,
                        one,
                        &self.ht,
                        a,
                        w.c_k,
                        tr(i * pw, hid),
                        zero,
                        &mut self.ck,
                        out,
                    )?;
                    gemm(
                        bsz,
                        hid,
                        cw,
                        one,
                        &self.ht,
                        a,
                        w.c_v,
                        tr(i * pw, hid),
                        zero,
                        &mut self.cv,
                        out,
                    )?;
                }
                for b in 0..bsz {
                    let r = r0 + b;
                    let ck = &self.ck[r * n * cw..][..n * cw];
                    let cv = &self.cv[r * n * cw..][..n * cw];
                    for i in 0..n {
                        let p_i = &mut self.p[(r * n + i) * ch * n..][..ch * n];
                        let o_i = &mut self.o[(r * n + i) * cw..][..cw];
                        if !self.active[r * n + i] {
                            p_i.fill(zero);
                            o_i.fill(zero);
                            continue;
                        }
                        let q_i = &self.cq[(r * n + i) * cw..][..cw];
                        for j in 0..ch {
                            let qj = &q_i[j * ckw..][..ckw];
                            let pj = &mut p_i[j * n..][..n];
                            for (m, s) in pj.iter_mut().enumerate() {
                                *s = dot(qj, &ck[m * cw + j * ckw..][..ckw]) * inv_ck;
                            }
                            softmax_in_place(pj);
                            let oj = &mut o_i[j * ckw..][..ckw];
                            oj.fill(zero);
                            for (m, pm) in pj.iter().enumerate() {
                                axpy(*pm, &cv[m * cw + j * ckw..][..ckw], oj);
                            }
                        }
                    }
                }
                for i in 0..n {
                    let a = rm(r0 * n * cw + i * cw, n * cw);
                    let out = rm(r0 * nh + i * hid, nh);
                    gemm(
                        bsz,
                        cw,
                        hid,
                        one,
                        &self.o,
                        a,
                        w.c_g,
                        tr(i * pw, cw),
                        zero,
                        &mut self.gate,
                        out,
                    )?;
                    gemm(
                        bsz,
                        cw,
                        hid,
                        one,
                        &self.o,
                        a,
                        w.c_o,
                        tr(i * pw, cw),
                        zero,
                        &mut self.tanh,
                        out,
                    )?;
                }
                let rows = r0 * nh..(r0 + bsz) * nh;
                self.gate[rows.clone()]
                    .iter_mut()
                    .for_each(|v| *v = v.sigmoid());
                self.tanh[rows].iter_mut().for_each(|v| *v = v.tanh());
            }
            // 5. Masked update.
            let (prev, next) = self.hs.split_at_mut(ho);
            let prev = &prev[hp..][..bsz * nh];
            let next = &mut next[..bsz * nh];
            for b in 0..bsz {
                let r = r0 + b;
                for i in 0..n {
                    let o = b * nh + i * hid;
                    let dst = &mut next[o..][..hid];
                    if !self.active[r * n + i] {
                        dst.copy_from_slice(&prev[o..][..hid]);
                        continue;
                    }
                    let at = r * nh + i * hid;
                    let ht = &self.ht[at..][..hid];
                    if d.communication {
                        let (g, th) = (&self.gate[at..][..hid], &self.tanh[at..][..hid]);
                        for (((o, t), g), th) in dst.iter_mut().zip(ht).zip(g).zip(th) {
                            *o = *t + *g * *th;
                        }
                    } else {
                        dst.copy_from_slice(ht);
                    }
                }
            }
        }
        Ok(())
    }

    /// BPTT over the last [`RimBatch::forward`]: given `dhs` (`[T x B x N*H]`, the loss
    /// gradient w.r.t. every step's state), ACCUMULATE the parameter gradients (summed over the
    /// batch) into `g` and the initial-state gradients into `dh0` (`[B x N*H]`).
    pub fn backward(
        &mut self,
        w: &RimWeights<'_, S>,
        mode: CommGrad,
        dhs: &[S],
        dh0: &mut [S],
        g: &mut RimGrads<'_, S>,
    ) -> Result<()> {
        let d = self.d;
        let (bsz, steps) = (self.batch, self.steps);
        let (n, hid, inp) = (d.n_modules, d.hidden, d.input);
        let nh = state_len(&d);
        let (aw, uw, cw) = (query_width(&d), module_input(&d), comm_width(&d));
        let (ih, dk, dv) = (d.in_heads, d.d_k, d.d_v);
        let g3 = 3 * hid;
        let rml = rnn_module_len(&d);
        let comm = d.communication;
        check_weights(&d, w)?;
        check_grads(&d, g)?;
        ensure!(dhs.len() >= steps * bsz * nh, "dhs too short");
        ensure!(dh0.len() >= bsz * nh, "dh0 too short");
        let inv_dk = S::ONE / S::from_f64(dk as f64).sqrt();
        let (one, zero) = (S::ONE, S::ZERO);
        let pw = cw * hid;
        self.carry.fill(zero);
        for t in (0..steps).rev() {
            let r0 = t * bsz;
            let hp = r0 * nh;
            // 5. Masked update: dh = loss + carried; active -> h~ (and comm), inactive -> h_prev.
            for b in 0..bsz {
                let r = r0 + b;
                for i in 0..n {
                    let o = b * nh + i * hid;
                    let src = &dhs[r * nh + i * hid..][..hid];
                    let carry = &self.carry[o..][..hid];
                    let on = self.active[r * n + i];
                    let (dst_on, dst_off) = if on {
                        (&mut self.dht[o..][..hid], &mut self.carry_new[o..][..hid])
                    } else {
                        (&mut self.carry_new[o..][..hid], &mut self.dht[o..][..hid])
                    };
                    for ((a, z), (s, c)) in dst_on
                        .iter_mut()
                        .zip(dst_off.iter_mut())
                        .zip(src.iter().zip(carry))
                    {
                        *a = *s + *c;
                        *z = zero;
                    }
                }
            }
            // 4. Communication.
            if comm {
                let (ch, ckw) = (d.c_heads, d.c_k);
                let inv_ck = S::ONE / S::from_f64(ckw as f64).sqrt();
                let rows = r0 * nh..(r0 + bsz) * nh;
                for ((((pg, po), dy), gt), th) in self.dpg[rows.clone()]
                    .iter_mut()
                    .zip(self.dpo[rows.clone()].iter_mut())
                    .zip(self.dht.iter())
                    .zip(self.gate[rows.clone()].iter())
                    .zip(self.tanh[rows].iter())
                {
                    *pg = *dy * *th * *gt * (one - *gt);
                    *po = *dy * *gt * (one - *th * *th);
                }
                for i in 0..n {
                    let a = rm(r0 * nh + i * hid, nh);
                    let out = rm(i * cw, n * cw);
                    gemm(
                        bsz,
                        hid,
                        cw,
                        one,
                        &self.dpg,
                        a,
                        w.c_g,
                        rm(i * pw, cw),
                        zero,
                        &mut self.dout,
                        out,
                    )?;
                    gemm(
                        bsz,
                        hid,
                        cw,
                        one,
                        &self.dpo,
                        a,
                        w.c_o,
                        rm(i * pw, cw),
                        one,
                        &mut self.dout,
                        out,
                    )?;
                }
                let crow = r0 * n * cw..(r0 + bsz) * n * cw;
                self.dcq[crow.clone()].fill(zero);
                self.dck[crow.clone()].fill(zero);
                self.dcv[crow].fill(zero);
                for b in 0..bsz {
                    let r = r0 + b;
                    for i in 0..n {
                        if !self.active[r * n + i] {
                            continue;
                        }
                        let p_i = &self.p[(r * n + i) * ch * n..][..ch * n];
                        let q_i = &self.cq[(r * n + i) * cw..][..cw];
                        for j in 0..ch {
                            let doj = &self.dout[(b * n + i) * cw + j * ckw..][..ckw];
                            let pj = &p_i[j * n..][..n];
                            for (m, (dpm, pm)) in self.dp.iter_mut().zip(pj).enumerate() {
                                let at = (r * n + m) * cw + j * ckw;
                                *dpm = dot(doj, &self.cv[at..][..ckw]);
                                axpy(*pm, doj, &mut self.dcv[at..][..ckw]);
                            }
                            // softmax backward: ds = p * (dp - <dp, p>).
                            let mut s = zero;
                            for (a, b) in pj.iter().zip(self.dp.iter()) {
                                s += *a * *b;
                            }
                            for ((dsm, pm), dpm) in self.ds.iter_mut().zip(pj).zip(self.dp.iter()) {
                                *dsm = *pm * (*dpm - s);
                            }
                            let qj = &q_i[j * ckw..][..ckw];
                            for (m, dsm) in self.ds.iter().enumerate() {
                                let dsm = *dsm * inv_ck;
                                let at = (r * n + m) * cw + j * ckw;
                                axpy(
                                    dsm,
                                    &self.ck[at..][..ckw],
                                    &mut self.dcq[(r * n + i) * cw + j * ckw..][..ckw],
                                );
                                axpy(dsm, qj, &mut self.dck[at..][..ckw]);
                            }
                        }
                    }
                }
                for i in 0..n {
                    let a = rm(r0 * n * cw + i * cw, n * cw);
                    let out = rm(i * hid, nh);
                    gemm(
                        bsz,
                        cw,
                        hid,
                        one,
                        &self.dcq,
                        a,
                        w.c_q,
                        rm(i * pw, hid),
                        one,
                        &mut self.dht,
                        out,
                    )?;
                    let tmp = rm(0, hid);
                    gemm(
                        bsz,
                        cw,
                        hid,
                        one,
                        &self.dck,
                        a,
                        w.c_k,
                        rm(i * pw, hid),
                        zero,
                        &mut self.tmp,
                        tmp,
                    )?;
                    gemm(
                        bsz,
                        cw,
                        hid,
                        one,
                        &self.dcv,
                        a,
                        w.c_v,
                        rm(i * pw, hid),
                        one,
                        &mut self.tmp,
                        tmp,
                    )?;
                    for b in 0..bsz {
                        if mode == CommGrad::Blocked && !self.active[(r0 + b) * n + i] {
                            continue;
                        }
                        let dst = &mut self.dht[b * nh + i * hid..][..hid];
                        axpy(one, &self.tmp[b * hid..][..hid], dst);
                    }
                }
            }
            // 3. GRUs (dense: a module whose h~ got no gradient gets exact zeros).
            for b in 0..bsz {
                let r = r0 + b;
                for i in 0..n {
                    let cache = &self.gates[(r * n + i) * 4 * hid..][..4 * hid];
                    let hprev = &self.hs[hp + b * nh + i * hid..][..hid];
                    let dy = &self.dht[b * nh + i * hid..][..hid];
                    let gi = &mut self.dgi[(r * n + i) * g3..][..g3];
                    let gh = &mut self.dgh[(r * n + i) * g3..][..g3];
                    let carry = &mut self.carry_new[b * nh + i * hid..][..hid];
                    gru_gate_grads(cache, hprev, dy, gi, gh, carry);
                }
            }
            for i in 0..n {
                let base = i * rml;
                let (w_ih, w_hh) = (base, base + g3 * uw);
                let a = rm(r0 * n * g3 + i * g3, n * g3);
                gemm(
                    bsz,
                    g3,
                    uw,
                    one,
                    &self.dgi,
                    a,
                    w.rnn,
                    rm(w_ih, uw),
                    zero,
                    &mut self.du,
                    rm(i * uw, n * uw),
                )?;
                gemm(
                    bsz,
                    g3,
                    hid,
                    one,
                    &self.dgh,
                    a,
                    w.rnn,
                    rm(w_hh, hid),
                    one,
                    &mut self.carry_new,
                    rm(i * hid, nh),
                )?;
            }
            // 1. Input attention: u_ij = a_ij v_x,j, a_ij = sigmoid(q_ij . k_x,j / sqrt(d_k)).
            let krow = r0 * aw..(r0 + bsz) * aw;
            let vrow = r0 * uw..(r0 + bsz) * uw;
            self.dkx[krow].fill(zero);
            self.dvx[vrow].fill(zero);
            for b in 0..bsz {
                let r = r0 + b;
                let kx = &self.kx[r * aw..][..aw];
                let vx = &self.vx[r * uw..][..uw];
                for i in 0..n {
                    let q = &self.q[(r * n + i) * aw..][..aw];
                    let ax = &self.ax[(r * n + i) * ih..][..ih];
                    let du = &self.du[(b * n + i) * uw..][..uw];
                    let dq = &mut self.dq[(r * n + i) * aw..][..aw];
                    for (j, a) in ax.iter().enumerate() {
                        let duj = &du[j * dv..][..dv];
                        let da = dot(duj, &vx[j * dv..][..dv]);
                        axpy(*a, duj, &mut self.dvx[r * uw + j * dv..][..dv]);
                        let dsc = da * *a * (one - *a) * inv_dk;
                        for (o, k) in dq[j * dk..][..dk].iter_mut().zip(&kx[j * dk..][..dk]) {
                            *o = dsc * *k;
                        }
                        axpy(
                            dsc,
                            &q[j * dk..][..dk],
                            &mut self.dkx[r * aw + j * dk..][..dk],
                        );
                    }
                }
            }
            for i in 0..n {
                gemm(
                    bsz,
                    aw,
                    hid,
                    one,
                    &self.dq,
                    rm(r0 * n * aw + i * aw, n * aw),
                    w.w_q,
                    rm(i * aw * hid, hid),
                    one,
                    &mut self.carry_new,
                    rm(i * hid, nh),
                )?;
            }
            std::mem::swap(&mut self.carry, &mut self.carry_new);
        }
        axpy(one, &self.carry, &mut dh0[..bsz * nh]);

        // Weight gradients: one GEMM per tensor over all T*B rows.
        let tb = steps * bsz;
        gemm(
            aw,
            tb,
            inp,
            one,
            &self.dkx,
            tr(0, aw),
            &self.x,
            rm(0, inp),
            one,
            g.w_k,
            rm(0, inp),
        )?;
        gemm(
            uw,
            tb,
            inp,
            one,
            &self.dvx,
            tr(0, uw),
            &self.x,
            rm(0, inp),
            one,
            g.w_v,
            rm(0, inp),
        )?;
        for i in 0..n {
            let hprev = rm(i * hid, nh);
            gemm(
                aw,
                tb,
                hid,
                one,
                &self.dq,
                tr(i * aw, n * aw),
                &self.hs,
                hprev,
                one,
                g.w_q,
                rm(i * aw * hid, hid),
            )?;
            let base = i * rml;
            let (w_ih, w_hh) = (base, base + g3 * uw);
            let (b_ih, b_hh) = (w_hh + g3 * hid, w_hh + g3 * hid + g3);
            let a = tr(i * g3, n * g3);
            gemm(
                g3,
                tb,
                uw,
                one,
                &self.dgi,
                a,
                &self.u,
                rm(i * uw, n * uw),
                one,
                g.rnn,
                rm(w_ih, uw),
            )?;
            gemm(
                g3,
                tb,
                hid,
                one,
                &self.dgh,
                a,
                &self.hs,
                hprev,
                one,
                g.rnn,
                rm(w_hh, hid),
            )?;
            for r in 0..tb {
                let at = (r * n + i) * g3;
                axpy(one, &self.dgi[at..][..g3], &mut g.rnn[b_ih..][..g3]);
                axpy(one, &self.dgh[at..][..g3], &mut g.rnn[b_hh..][..g3]);
            }
            if comm {
                let pw = cw * hid;
                let hrow = rm(i * hid, nh);
                let crow = rm(i * cw, n * cw);
                gemm(
                    hid,
                    tb,
                    cw,
                    one,
                    &self.dpg,
                    tr(i * hid, nh),
                    &self.o,
                    crow,
                    one,
                    g.c_g,
                    rm(i * pw, cw),
                )?;
                gemm(
                    hid,
                    tb,
                    cw,
                    one,
                    &self.dpo,
                    tr(i * hid, nh),
                    &self.o,
                    crow,
                    one,
                    g.c_o,
                    rm(i * pw, cw),
                )?;
                let a = tr(i * cw, n * cw);
                gemm(
                    cw,
                    tb,
                    hid,
                    one,
                    &self.dcq,
                    a,
                    &self.ht,
                    hrow,
                    one,
                    g.c_q,
                    rm(i * pw, hid),
                )?;
                gemm(
                    cw,
                    tb,
                    hid,
                    one,
                    &self.dck,
                    a,
                    &self.ht,
                    hrow,
                    one,
                    g.c_k,
                    rm(i * pw, hid),
                )?;
                gemm(
                    cw,
                    tb,
                    hid,
                    one,
                    &self.dcv,
                    a,
                    &self.ht,
                    hrow,
                    one,
                    g.c_v,
                    rm(i * pw, hid),
                )?;
            }
        }
        Ok(())
    }
}

fn softmax_in_place<S: Real>(v: &mut [S]) {
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

fn check_lens(d: &RimDims, lens: [usize; 9], what: &str) -> Result<()> {
    let c = rim_param_counts(d);
    let need = [
        c.w_k, c.w_v, c.w_q, c.rnn, c.c_q, c.c_k, c.c_v, c.c_g, c.c_o,
    ];
    for (got, need) in lens.iter().zip(need) {
        ensure!(*got >= need, "{what} buffer too short: {got} < {need}");
    }
    Ok(())
}

fn check_weights<S>(d: &RimDims, w: &RimWeights<'_, S>) -> Result<()> {
    let lens = [
        w.w_k.len(),
        w.w_v.len(),
        w.w_q.len(),
        w.rnn.len(),
        w.c_q.len(),
        w.c_k.len(),
        w.c_v.len(),
        w.c_g.len(),
        w.c_o.len(),
    ];
    check_lens(d, lens, "weight")
}

fn check_grads<S>(d: &RimDims, g: &RimGrads<'_, S>) -> Result<()> {
    let lens = [
        g.w_k.len(),
        g.w_v.len(),
        g.w_q.len(),
        g.rnn.len(),
        g.c_q.len(),
        g.c_k.len(),
        g.c_v.len(),
        g.c_g.len(),
        g.c_o.len(),
    ];
    check_lens(d, lens, "gradient")
}
