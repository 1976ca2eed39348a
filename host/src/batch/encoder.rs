//! The observation encoder (`metarim_core::nn::encoder`: conv 2x2 -> ReLU -> maxpool 2x2 ->
//! conv 2x2 -> ReLU -> conv 2x2 -> ReLU, on the raw codes or on bag-of-words cell embeddings)
//! batched over many frames: each convolution is one GEMM over the frames' patches (im2col), in
//! the core's parameter layout and with its semantics (ReLU's derivative 0 at 0; maxpool ties to
//! the first maximum of the post-ReLU values in row-major window order, and no gradient through
//! a window whose maximum is not positive).
//!
//! Layouts, per frame `r`: the input map `[49 positions x Cin]` (position `h*7 + w`, with the
//! core's mapping `x[c][h][w] = obs[w*7 + h][c]`); conv patches with columns `ci*4 + kh*2 + kw`,
//! which is the row layout of the core's `[C_out][C_in][2][2]` weights, so a convolution is
//! `patches x W^T`.
//!
//! FiLM ([`ModelDims::film`]): the caller writes each frame's instruction embedding into
//! [`EncoderBatch::instr_mut`] before [`EncoderBatch::forward`]; the coefficients of all frames
//! are one GEMM (`[n x hi] x [hi x 2(C0+C1+C2)]`), each conv's pre-activations are modulated
//! per frame and channel (`z (1 + gamma) + beta`, the unmodulated values kept for the
//! backward), and after [`EncoderBatch::backward`] [`EncoderBatch::d_instr`] holds each frame's
//! instruction gradient.
//!
//! Threads ([`EncoderBatch::with_threads`]): the forward runs contiguous parts of the frames on
//! their own threads, and each convolution's weight gradient splits its output channels over
//! them. Neither changes a single rounding: every per-frame step reads and writes its own frames'
//! rows only, and [`gemm`] computes an element the same way whatever the row count (its row
//! invariance), so the forward's parts and a weight gradient's channel blocks are each computed
//! exactly as in one piece.
//!
//! Invariants: every weight gradient sums over all frames in frame order (one GEMM, split by
//! output channel only) and every scatter runs in frame order, single-threaded, so the result
//! depends only on the frames, never on the thread count. Buffers are allocated once for a
//! capacity of frames.

use anyhow::{anyhow, ensure, Result};
use metarim_core::env::Observation;
use metarim_core::nn::dims::ModelDims;
use metarim_core::nn::encoder::{
    encoder_param_len, encoder_sizes, split_encoder, EncoderParts, EncoderSizes, A_C1, A_C2, A_IN,
    A_P, BOW_MAX_VALUE, KA, S_C1, S_IN, S_P,
};
use metarim_core::nn::ops::{layer_norm, layer_norm_backward};

use crate::batch::gemm::{even_bounds, gemm, rm, row_fields, split_rows, tr, RowBuffers, Scalar};
use crate::threads::join_all;

row_fields! {
    /// Per-frame fields of an encoder pass.
    Fields {
        /// Input map.
        x,
        /// conv1 patches, pre-activations.
        p1,
        z1,
        /// Pooled map and the position of each window's maximum (as a number).
        pool,
        arg,
        /// conv2 patches, pre-activations.
        p2,
        z2,
        /// conv3 patch (post-ReLU conv2 map), pre-activations.
        p3,
        z3,
        /// FiLM: instruction embedding, coefficients, unmodulated pre-activations.
        e,
        gb,
        r1,
        r2,
        r3,
        /// Backward: gradients of the pre-activations and patches.
        dz3,
        dp3,
        dz2,
        dp2,
        dpool,
        dz1,
        dp1,
        dx,
        /// Backward, FiLM: gradients of the coefficients and of the instruction embedding.
        dgb,
        de,
    }
}

/// Buffers of batched encoder passes over up to `capacity` frames.
#[derive(Clone, Debug)]
pub struct EncoderBatch<S> {
    d: ModelDims,
    /// The core encoder's sizes for `d` (channels, FiLM widths).
    s: EncoderSizes,
    capacity: usize,
    w: Fields<usize>,
    f: Fields<Vec<S>>,
    frames: usize,
    threads: usize,
}

/// The encoder's parameters split into tensors.
type Parts<'a, S> = EncoderParts<&'a [S]>;

/// The encoder's parameters `p` split into tensors (an error when too short).
fn split<'a, S>(d: &ModelDims, p: &'a [S]) -> Result<Parts<'a, S>> {
    split_encoder(d, p).map_err(|e| anyhow!("encoder parameters: {e}"))
}

fn relu<S: Scalar>(v: S) -> S {
    if v > S::ZERO {
        v
    } else {
        S::ZERO
    }
}

impl<S: Scalar> EncoderBatch<S> {
    /// Buffers for up to `capacity` frames of `d`'s encoder; without `backward`, forward only.
    pub fn new(d: &ModelDims, capacity: usize, backward: bool) -> Result<Self> {
        let s = encoder_sizes(d);
        let (bow, cin, hi, nf) = (s.bow, s.cin, s.hi, s.nf);
        let [c0, c1, c2] = d.conv_channels;
        ensure!(
            cin >= 1 && c0 >= 1 && c1 >= 1 && c2 >= 1 && capacity >= 1,
            "batched encoder: channels and capacity must be at least 1"
        );
        let b = |v: usize| if backward { v } else { 0 };
        let film = |v: usize| if d.film { v } else { 0 };
        let w = Fields {
            x: A_IN * cin,
            p1: A_C1 * cin * KA,
            z1: A_C1 * c0,
            pool: A_P * c0,
            arg: A_P * c0,
            p2: A_C2 * c0 * KA,
            z2: A_C2 * c1,
            p3: c1 * KA,
            z3: c2,
            e: hi,
            gb: nf,
            r1: film(A_C1 * c0),
            r2: film(A_C2 * c1),
            r3: film(c2),
            dz3: b(c2),
            dp3: b(c1 * KA),
            dz2: b(A_C2 * c1),
            dp2: b(A_C2 * c0 * KA),
            dpool: b(A_P * c0),
            dz1: b(A_C1 * c0),
            dp1: b(if bow { A_C1 * cin * KA } else { 0 }),
            dx: b(if bow { A_IN * cin } else { 0 }),
            dgb: b(nf),
            de: b(hi),
        };
        super::check_capacity("encoder", capacity, w.total())?;
        Ok(EncoderBatch {
            d: *d,
            s,
            capacity,
            f: Fields::alloc(&w, capacity),
            w,
            frames: 0,
            threads: 1,
        })
    }

    /// Lets passes use up to `threads` threads (at least 1; the default is 1). Results are
    /// bit-identical on any count (module docs).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The widths of a pass over `n` frames.
    fn geom(&self, n: usize) -> Geom {
        Geom { n, s: self.s }
    }

    /// FiLM's input: the instruction embeddings of the next forward's first `n` frames
    /// (`[n x instr_hidden]`, frame-major), for the caller to fill. Empty without FiLM.
    pub fn instr_mut(&mut self, n: usize) -> Result<&mut [S]> {
        ensure!(
            n <= self.capacity,
            "batched encoder: {n} frames exceed the capacity {}",
            self.capacity
        );
        Ok(&mut self.f.e[..n * self.s.hi])
    }

    /// After [`Self::backward`] with FiLM: each frame's instruction gradient
    /// (`[frames x instr_hidden]`); empty without FiLM.
    pub fn d_instr(&self) -> &[S] {
        &self.f.de[..(self.frames * self.s.hi).min(self.f.de.len())]
    }

    /// Encodes `obs` (one frame each), writing frame `r`'s `C2` features to
    /// `out[r * stride + off..][..C2]`. Errors for a bag-of-words code without a table row.
    pub fn forward(
        &mut self,
        params: &[S],
        obs: &[&Observation],
        out: &mut [S],
        stride: usize,
        off: usize,
    ) -> Result<()> {
        let p = split(&self.d, params)?;
        let c2 = self.d.conv_channels[2];
        let n = obs.len();
        ensure!(
            n <= self.capacity,
            "batched encoder: {n} frames exceed the capacity {}",
            self.capacity
        );
        ensure!(
            n == 0 || out.len() >= (n - 1) * stride + off + c2,
            "batched encoder: output too short"
        );
        self.frames = n;
        let outs = split_rows(out, stride, &self.frame_bounds());
        self.in_frame_parts(outs, |g, first, f, out| {
            let obs = &obs[first..first + g.n];
            forward_frames(g, &p, (obs, first), f, (out, stride, off))
        })
    }

    /// Backward of the last forward over the same `obs`, given the features' gradients
    /// `d_out[r * stride + off..][..C2]`: ACCUMULATES into `grads` (the encoder's layout).
    pub fn backward(
        &mut self,
        params: &[S],
        obs: &[&Observation],
        d_out: &[S],
        stride: usize,
        off: usize,
        grads: &mut [S],
    ) -> Result<()> {
        let (bow, cin, threads) = (self.s.bow, self.s.cin, self.threads);
        let p = split(&self.d, params)?;
        let [c0, c1, c2] = self.d.conv_channels;
        let n = self.frames;
        ensure!(
            self.w.dz1 > 0,
            "batched encoder: buffers were made without backward"
        );
        ensure!(
            obs.len() == n,
            "batched encoder: backward over other frames"
        );
        ensure!(
            n == 0 || d_out.len() >= (n - 1) * stride + off + c2,
            "batched encoder: output gradients too short"
        );
        ensure!(
            grads.len() >= encoder_param_len(&self.d),
            "encoder gradient buffer too short"
        );
        if n == 0 {
            return Ok(());
        }
        let mut gr =
            split_encoder(&self.d, grads).map_err(|e| anyhow!("encoder gradients: {e}"))?;
        let (k1, k2, k3) = (cin * KA, c0 * KA, c1 * KA);
        let units = vec![(); self.frame_bounds().len() - 1];
        // Per-frame steps run on the frames' parts, each weight gradient (a sum over all
        // frames) after them on the channel blocks: layer by layer, top down.
        self.in_frame_parts(units.clone(), |g, first, f, ()| {
            conv3_delta(g, f, &d_out[first * stride..], stride, off);
            Ok(())
        })?;
        let f = self.all_frames()?;
        conv_param_grads((n, k3, c2), f.dz3, f.p3, threads, gr.w3, gr.b3)?;
        self.in_frame_parts(units.clone(), |g, _, f, ()| {
            patch_grads(g.n, c2, k3, f.dz3, p.w3, f.dp3)?;
            conv2_delta(g, f);
            Ok(())
        })?;
        let f = self.all_frames()?;
        conv_param_grads((n * A_C2, k2, c1), f.dz2, f.p2, threads, gr.w2, gr.b2)?;
        self.in_frame_parts(units.clone(), |g, _, f, ()| {
            patch_grads(g.n * A_C2, c1, k2, f.dz2, p.w2, f.dp2)?;
            pool_backward(g, f);
            modulate_backward(g, 0, A_C1, f.gb, f.r1, f.dz1, f.dgb);
            Ok(())
        })?;
        let f = self.all_frames()?;
        conv_param_grads((n * A_C1, k1, c0), f.dz1, f.p1, threads, gr.w1, gr.b1)?;
        if bow {
            self.in_frame_parts(units, |g, _, f, ()| {
                patch_grads(g.n * A_C1, c0, k1, f.dz1, p.w1, f.dp1)?;
                col2im(g.n, S_IN, cin, f.dp1, f.dx);
                Ok(())
            })?;
            bow_scatter(self.geom(n), obs, &self.all_frames()?, gr.emb);
        }
        let g = self.geom(n);
        film_coefs_backward(g, &p, &mut self.all_frames()?, &mut gr)
    }

    /// The frame bounds of the last pass's parts: `threads` (at most one per frame) contiguous
    /// parts of about equal size; they depend only on the frame count and `threads`.
    fn frame_bounds(&self) -> Vec<usize> {
        even_bounds(self.frames, self.threads)
    }

    /// Runs `work(g, first, f, item)` on each part of the last pass's frames
    /// ([`Self::frame_bounds`]), each on its own thread (one part: on this one), with the part's
    /// geometry, first frame, views and its item of `items` (one per part).
    fn in_frame_parts<T: Send>(
        &mut self,
        items: Vec<T>,
        work: impl Fn(Geom, usize, &mut Views<'_, S>, T) -> Result<()> + Sync,
    ) -> Result<()> {
        let bounds = self.frame_bounds();
        ensure!(
            items.len() == bounds.len() - 1,
            "batched encoder: {} items for {} parts",
            items.len(),
            bounds.len() - 1
        );
        let s = self.s;
        let views = self.f.split(&self.w, &bounds);
        let mut jobs = views.into_iter().zip(items).zip(bounds.windows(2));
        let run = |((mut f, item), b): ((Views<'_, S>, T), &[usize])| {
            work(Geom { n: b[1] - b[0], s }, b[0], &mut f, item)
        };
        if bounds.len() == 2 {
            return jobs.try_for_each(run);
        }
        let run = &run;
        std::thread::scope(|sc| {
            let handles = jobs.map(|job| sc.spawn(move || run(job))).collect();
            join_all(handles, "batched encoder").map(|_| ())
        })
    }

    /// The views of all the last pass's frames.
    fn all_frames(&mut self) -> Result<Views<'_, S>> {
        let n = self.frames;
        self.f
            .split(&self.w, &[0, n])
            .pop()
            .ok_or_else(|| anyhow!("batched encoder: split failed"))
    }
}

/// The forward over `obs`, frames `first..` of the pass, in their views `f`; frame `r`'s
/// features into `out[r * stride + off..]` (`r` counted from the part's first frame).
fn forward_frames<S: Scalar>(
    g: Geom,
    p: &Parts<'_, S>,
    (obs, first): (&[&Observation], usize),
    f: &mut Views<'_, S>,
    (out, stride, off): (&mut [S], usize, usize),
) -> Result<()> {
    let (n, cin, c0, c1) = (g.n, g.s.cin, g.s.c0, g.s.c1);
    input_maps(g, p, obs, first, f)?;
    film_coefs(g, p, f)?;
    im2col(n, S_IN, cin, f.x, f.p1);
    conv_product(n * A_C1, cin * KA, c0, f.p1, p.w1, p.b1, f.z1)?;
    modulate(g, 0, A_C1, f.gb, f.z1, f.r1);
    relu_maxpool(g, f);
    im2col(n, S_P, c0, f.pool, f.p2);
    conv_product(n * A_C2, c0 * KA, c1, f.p2, p.w2, p.b2, f.z2)?;
    modulate(g, 1, A_C2, f.gb, f.z2, f.r2);
    conv3_forward(g, p, f, out, stride, off)
}

/// FiLM coefficients of every frame, `gb = e fw^T + fb` (one GEMM); nothing without FiLM.
fn film_coefs<S: Scalar>(g: Geom, p: &Parts<'_, S>, f: &mut Views<'_, S>) -> Result<()> {
    let (n, hi, nf) = (g.n, g.s.hi, g.s.nf);
    if nf == 0 {
        return Ok(());
    }
    gemm(
        n,
        hi,
        nf,
        S::ONE,
        f.e,
        rm(0, hi),
        p.fw,
        tr(0, hi),
        S::ZERO,
        f.gb,
        rm(0, nf),
    )?;
    for row in f.gb[..n * nf].chunks_exact_mut(nf) {
        for (v, b) in row.iter_mut().zip(p.fb) {
            *v = *b + *v;
        }
    }
    Ok(())
}

/// Where conv `layer`'s `(gamma, beta)` start in a frame's coefficients, and its channels.
fn film_offsets(g: Geom, layer: usize) -> (usize, usize) {
    match layer {
        0 => (0, g.s.c0),
        1 => (2 * g.s.c0, g.s.c1),
        _ => (2 * (g.s.c0 + g.s.c1), g.s.c2),
    }
}

/// FiLM on conv `layer`'s pre-activations `z` (`[n x area x C]`): keeps them in `raw`, then
/// `z = z (1 + gamma) + beta` per frame and channel; nothing without FiLM.
fn modulate<S: Scalar>(g: Geom, layer: usize, area: usize, gb: &[S], z: &mut [S], raw: &mut [S]) {
    if g.s.nf == 0 {
        return;
    }
    let (start, c) = film_offsets(g, layer);
    raw[..g.n * area * c].copy_from_slice(&z[..g.n * area * c]);
    for (r, zr) in z[..g.n * area * c].chunks_exact_mut(area * c).enumerate() {
        let coefs = &gb[r * g.s.nf + start..][..2 * c];
        let (gamma, beta) = coefs.split_at(c);
        for pos in zr.chunks_exact_mut(c) {
            for ((v, gm), b) in pos.iter_mut().zip(gamma).zip(beta) {
                *v = *v * (S::ONE + *gm) + *b;
            }
        }
    }
}

/// Backward of [`modulate`]: from `dz = dL/d(modulated z)` accumulates the coefficients'
/// gradients into `dgb` and turns `dz` into `dL/d(raw z)`; nothing without FiLM.
fn modulate_backward<S: Scalar>(
    g: Geom,
    layer: usize,
    area: usize,
    gb: &[S],
    raw: &[S],
    dz: &mut [S],
    dgb: &mut [S],
) {
    if g.s.nf == 0 {
        return;
    }
    let (start, c) = film_offsets(g, layer);
    let rows = dz[..g.n * area * c]
        .chunks_exact_mut(area * c)
        .zip(raw.chunks_exact(area * c));
    for (r, (dzr, rr)) in rows.enumerate() {
        let gamma = &gb[r * g.s.nf + start..][..c];
        let (dgamma, dbeta) = dgb[r * g.s.nf + start..][..2 * c].split_at_mut(c);
        for (dpos, rpos) in dzr.chunks_exact_mut(c).zip(rr.chunks_exact(c)) {
            for ((((v, rv), gm), dg), db) in dpos
                .iter_mut()
                .zip(rpos)
                .zip(gamma)
                .zip(dgamma.iter_mut())
                .zip(dbeta.iter_mut())
            {
                *dg += *v * *rv;
                *db += *v;
                *v *= S::ONE + *gm;
            }
        }
    }
}

/// Backward of [`film_coefs`]: the generator's gradients (`dfw += dgb^T e`, `dfb +=` row sums,
/// both over all frames) and each frame's instruction gradient `de = dgb fw`.
fn film_coefs_backward<S: Scalar>(
    g: Geom,
    p: &Parts<'_, S>,
    f: &mut Views<'_, S>,
    gr: &mut GradParts<'_, S>,
) -> Result<()> {
    let (n, hi, nf) = (g.n, g.s.hi, g.s.nf);
    if nf == 0 {
        return Ok(());
    }
    for row in f.dgb[..n * nf].chunks_exact(nf) {
        for (o, v) in gr.fb.iter_mut().zip(row) {
            *o += *v;
        }
    }
    let one = S::ONE;
    gemm(
        nf,
        n,
        hi,
        one,
        f.dgb,
        tr(0, nf),
        f.e,
        rm(0, hi),
        one,
        gr.fw,
        rm(0, hi),
    )?;
    gemm(
        n,
        nf,
        hi,
        one,
        f.dgb,
        rm(0, nf),
        p.fw,
        rm(0, hi),
        S::ZERO,
        f.de,
        rm(0, hi),
    )
}

/// The frame count and widths of a pass.
#[derive(Clone, Copy, Debug)]
struct Geom {
    /// Frames.
    n: usize,
    /// The encoder's widths.
    s: EncoderSizes,
}

/// A pass's views of the per-frame fields.
type Views<'v, S> = Fields<&'v mut [S]>;

/// The encoder's gradient buffer split like its parameters ([`Parts`]).
type GradParts<'a, S> = EncoderParts<&'a mut [S]>;

/// The input maps `x` of the frames: the raw codes, or the sum of each cell's three
/// bag-of-words table rows (an error for a code without a row, naming the frame as `first`
/// plus its index in `obs`).
fn input_maps<S: Scalar>(
    g: Geom,
    p: &Parts<'_, S>,
    obs: &[&Observation],
    first: usize,
    f: &mut Views<'_, S>,
) -> Result<()> {
    let (bow, cin, zero) = (g.s.bow, g.s.cin, S::ZERO);
    for (r, o) in obs.iter().enumerate() {
        let x = &mut f.x[r * A_IN * cin..][..A_IN * cin];
        for (k, cell) in o.iter().enumerate() {
            let (j, i) = (k / S_IN, k % S_IN);
            let dst = &mut x[(i * S_IN + j) * cin..][..cin];
            if bow {
                dst.fill(zero);
                for (a, &code) in cell.iter().enumerate() {
                    ensure!(
                        usize::from(code) < BOW_MAX_VALUE,
                        "frame {}: cell code out of range ({code})",
                        first + r
                    );
                    let row = a * BOW_MAX_VALUE + usize::from(code);
                    for (v, e) in dst.iter_mut().zip(&p.emb[row * cin..][..cin]) {
                        *v += *e;
                    }
                }
            } else {
                for (v, c) in dst.iter_mut().zip(cell) {
                    *v = S::from_f64(f64::from(*c));
                }
            }
        }
    }
    Ok(())
}

/// The 2x2 patches (im2col) of `n` frames' `side x side` maps of `c` channels (`map`, position
/// `h*side + w`) into `patches`, one row per output position of the `(side-1) x (side-1)`
/// result, columns `ci*4 + kh*2 + kw`.
fn im2col<S: Copy>(n: usize, side: usize, c: usize, map: &[S], patches: &mut [S]) {
    let (so, k) = (side - 1, c * KA);
    for r in 0..n {
        for oh in 0..so {
            for ow in 0..so {
                let row = &mut patches[(r * so * so + oh * so + ow) * k..][..k];
                for (kk, (kh, kw)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let src = &map[(r * side * side + (oh + kh) * side + ow + kw) * c..][..c];
                    for (ci, v) in src.iter().enumerate() {
                        row[ci * KA + kk] = *v;
                    }
                }
            }
        }
    }
}

/// The transpose of [`im2col`]: the map gradient `map` (zeroed first) as the sum of the patch
/// gradients `patches` over every place each position was copied to (in frame, patch and
/// kernel-position order).
fn col2im<S: Scalar>(n: usize, side: usize, c: usize, patches: &[S], map: &mut [S]) {
    let (so, k) = (side - 1, c * KA);
    map[..n * side * side * c].fill(S::ZERO);
    for r in 0..n {
        for oh in 0..so {
            for ow in 0..so {
                let row = &patches[(r * so * so + oh * so + ow) * k..][..k];
                for (kk, (kh, kw)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let dst = &mut map[(r * side * side + (oh + kh) * side + ow + kw) * c..][..c];
                    for (ci, v) in dst.iter_mut().enumerate() {
                        *v += row[ci * KA + kk];
                    }
                }
            }
        }
    }
}

/// A convolution as one GEMM over `rows` patch rows of width `k`: `z = patches W^T + b`
/// (`W` is `[c_out x k]`, the core's layout).
fn conv_product<S: Scalar>(
    rows: usize,
    k: usize,
    c_out: usize,
    patches: &[S],
    w: &[S],
    b: &[S],
    z: &mut [S],
) -> Result<()> {
    gemm(
        rows,
        k,
        c_out,
        S::ONE,
        patches,
        rm(0, k),
        w,
        tr(0, k),
        S::ZERO,
        z,
        rm(0, c_out),
    )?;
    for row in z[..rows * c_out].chunks_exact_mut(c_out) {
        for (v, b) in row.iter_mut().zip(b) {
            *v = *b + *v;
        }
    }
    Ok(())
}

/// A convolution's parameter gradients from its pre-activation gradients `dz`
/// (`[rows x c_out]`, `(rows, k, c_out)` = `dims`): ACCUMULATES the bias's (row sums, in row
/// order) into `gb` and the weights' (`dz^T patches`) into `gw`, whose output channels are
/// split into contiguous blocks over up to `threads` threads (each block's GEMM computes its
/// elements exactly as the whole product would: [`gemm`]'s row invariance).
fn conv_param_grads<S: Scalar>(
    (rows, k, c_out): (usize, usize, usize),
    dz: &[S],
    patches: &[S],
    threads: usize,
    gw: &mut [S],
    gb: &mut [S],
) -> Result<()> {
    ensure!(
        gw.len() >= c_out * k,
        "batched encoder: weight gradient buffer too short"
    );
    for row in dz[..rows * c_out].chunks_exact(c_out) {
        for (o, v) in gb.iter_mut().zip(row) {
            *o += *v;
        }
    }
    let one = S::ONE;
    let block = |o0: usize, gw: &mut [S]| {
        let m = gw.len() / k;
        gemm(
            m,
            rows,
            k,
            one,
            dz,
            tr(o0, c_out),
            patches,
            rm(0, k),
            one,
            gw,
            rm(0, k),
        )
    };
    let bounds = even_bounds(c_out, threads);
    if bounds.len() == 2 {
        return block(0, &mut gw[..c_out * k]);
    }
    let blocks = split_rows(&mut gw[..c_out * k], k, &bounds);
    let block = &block;
    std::thread::scope(|sc| {
        let handles = blocks
            .into_iter()
            .zip(&bounds)
            .map(|(gw, &o0)| sc.spawn(move || block(o0, gw)))
            .collect();
        join_all(handles, "encoder weight gradient").map(|_| ())
    })
}

/// A convolution's patch gradients `dp = dz W` over `rows` rows.
fn patch_grads<S: Scalar>(
    rows: usize,
    c_out: usize,
    k: usize,
    dz: &[S],
    w: &[S],
    dp: &mut [S],
) -> Result<()> {
    gemm(
        rows,
        c_out,
        k,
        S::ONE,
        dz,
        rm(0, c_out),
        w,
        rm(0, k),
        S::ZERO,
        dp,
        rm(0, k),
    )
}

/// ReLU + maxpool of `z1` into `pool`, with each window's argmax in `arg` (ties: the first
/// maximum of the post-ReLU values).
fn relu_maxpool<S: Scalar>(g: Geom, f: &mut Views<'_, S>) {
    let (n, c0) = (g.n, g.s.c0);
    for r in 0..n {
        for ph in 0..S_P {
            for pw in 0..S_P {
                let base = 2 * ph * S_C1 + 2 * pw;
                let win = [base, base + 1, base + S_C1, base + S_C1 + 1];
                let at = (r * A_P + ph * S_P + pw) * c0;
                for c in 0..c0 {
                    let z = |t: usize| relu(f.z1[(r * A_C1 + t) * c0 + c]);
                    let (mut best, mut best_v) = (win[0], z(win[0]));
                    for &t in &win[1..] {
                        let v = z(t);
                        if v > best_v {
                            best = t;
                            best_v = v;
                        }
                    }
                    f.pool[at + c] = best_v;
                    f.arg[at + c] = S::from_f64(best as f64);
                }
            }
        }
    }
}

/// conv3 over the whole 2x2 map (its patch `p3` is the post-ReLU conv2 map) into `z3`, and
/// the features `relu(z3)` into `out[r * stride + off..]`.
fn conv3_forward<S: Scalar>(
    g: Geom,
    p: &Parts<'_, S>,
    f: &mut Views<'_, S>,
    out: &mut [S],
    stride: usize,
    off: usize,
) -> Result<()> {
    let (n, c1, c2) = (g.n, g.s.c1, g.s.c2);
    let k3 = c1 * KA;
    for r in 0..n {
        for pos in 0..A_C2 {
            for ci in 0..c1 {
                f.p3[r * k3 + ci * KA + pos] = relu(f.z2[(r * A_C2 + pos) * c1 + ci]);
            }
        }
    }
    conv_product(n, k3, c2, f.p3, p.w3, p.b3, f.z3)?;
    modulate(g, 2, 1, f.gb, f.z3, f.r3);
    for r in 0..n {
        let z = &f.z3[r * c2..][..c2];
        let o = &mut out[r * stride + off..][..c2];
        for (zv, ov) in z.iter().zip(o.iter_mut()) {
            *ov = relu(*zv);
        }
        if g.s.norm {
            layer_norm(o);
        }
    }
    Ok(())
}

/// Backward of the features' normalisation (when on), ReLU and conv3's FiLM for the frames of
/// `f`: `dz3` from the features' gradients `d_out[r * stride + off..]` (frame `r` of the part),
/// FiLM's conv3 coefficient gradients into `dgb` (zeroed first, as this is the backward's first
/// step).
fn conv3_delta<S: Scalar>(g: Geom, f: &mut Views<'_, S>, d_out: &[S], stride: usize, off: usize) {
    let (n, c2, zero) = (g.n, g.s.c2, S::ZERO);
    f.dgb[..n * g.s.nf].fill(zero);
    // With normalisation: the un-normalised features (relu of z3) and their gradient.
    let (mut features, mut d_features) = if g.s.norm {
        (vec![zero; c2], vec![zero; c2])
    } else {
        (Vec::new(), Vec::new())
    };
    for r in 0..n {
        let z = &f.z3[r * c2..][..c2];
        let mut d = &d_out[r * stride + off..][..c2];
        if g.s.norm {
            for (fv, zv) in features.iter_mut().zip(z) {
                *fv = relu(*zv);
            }
            layer_norm_backward(&features, d, &mut d_features);
            d = &d_features;
        }
        for ((dz, zv), dv) in f.dz3[r * c2..][..c2].iter_mut().zip(z).zip(d) {
            *dz = if *zv > zero { *dv } else { zero };
        }
    }
    modulate_backward(g, 2, 1, f.gb, f.r3, f.dz3, f.dgb);
}

/// Back from conv3's patch gradient `dp3` (the post-ReLU conv2 map's) through conv2's ReLU and
/// FiLM to `dz2`, for the frames of `f`.
fn conv2_delta<S: Scalar>(g: Geom, f: &mut Views<'_, S>) {
    let (n, c1, zero) = (g.n, g.s.c1, S::ZERO);
    let k3 = c1 * KA;
    for r in 0..n {
        for pos in 0..A_C2 {
            for ci in 0..c1 {
                let at = (r * A_C2 + pos) * c1 + ci;
                let dz = if f.z2[at] > zero {
                    f.dp3[r * k3 + ci * KA + pos]
                } else {
                    zero
                };
                f.dz2[at] = dz;
            }
        }
    }
    modulate_backward(g, 1, A_C2, f.gb, f.r2, f.dz2, f.dgb);
}

/// Back through conv2's patches to the pooled map (`dpool`), then through the maxpool and
/// conv1's ReLU to `dz1` (only the window's argmax, and only where it is positive).
fn pool_backward<S: Scalar>(g: Geom, f: &mut Views<'_, S>) {
    let (n, c0) = (g.n, g.s.c0);
    let zero = S::ZERO;
    col2im(n, S_P, c0, f.dp2, f.dpool);
    let rows1 = n * A_C1;
    f.dz1[..rows1 * c0].fill(zero);
    for r in 0..n {
        for win in 0..A_P {
            for c in 0..c0 {
                let at = (r * A_P + win) * c0 + c;
                let t = f.arg[at].to_f64() as usize;
                let zi = (r * A_C1 + t) * c0 + c;
                if f.z1[zi] > zero {
                    f.dz1[zi] = f.dpool[at];
                }
            }
        }
    }
}

/// Bag of words: each frame's input-map gradient `dx` into its cells' three table rows of
/// `g_emb`, in frame order.
fn bow_scatter<S: Scalar>(g: Geom, obs: &[&Observation], f: &Views<'_, S>, g_emb: &mut [S]) {
    let cin = g.s.cin;
    for (r, o) in obs.iter().enumerate() {
        for (k, cell) in o.iter().enumerate() {
            let (j, i) = (k / S_IN, k % S_IN);
            let src = &f.dx[(r * A_IN + i * S_IN + j) * cin..][..cin];
            for (a, &code) in cell.iter().enumerate() {
                let row = a * BOW_MAX_VALUE + usize::from(code).min(BOW_MAX_VALUE - 1);
                for (e, v) in g_emb[row * cin..][..cin].iter_mut().zip(src) {
                    *e += *v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarim_core::env::VIEW_CELLS;
    use metarim_core::nn::dims::{EncoderKind, PAPER, TINY};
    use metarim_core::nn::encoder::{
        encode_backward, encode_forward, encoder_cache_len, encoder_scratch_len,
    };
    use metarim_core::rng::Pcg32;

    fn frames(n: usize, rng: &mut Pcg32) -> Vec<Observation> {
        (0..n)
            .map(|_| {
                let mut o = [[0u8; 3]; VIEW_CELLS];
                for c in o.iter_mut() {
                    *c = [rng.below(11) as u8, rng.below(6) as u8, rng.below(3) as u8];
                }
                o
            })
            .collect()
    }

    /// Features, every parameter gradient and (FiLM) every frame's instruction gradient equal
    /// the core's per-frame encoder summed over the frames, for both encoders, with and
    /// without FiLM, and with feature normalisation.
    #[test]
    fn matches_the_core_encoder() {
        let bow = ModelDims {
            encoder: EncoderKind::Bow,
            ..TINY
        };
        for (k, d) in [
            TINY,
            bow,
            PAPER,
            ModelDims { film: true, ..TINY },
            ModelDims { film: true, ..bow },
            ModelDims {
                film: true,
                ..PAPER
            },
            ModelDims {
                feature_norm: true,
                ..bow
            },
            ModelDims {
                film: true,
                feature_norm: true,
                encoder: EncoderKind::Bow,
                ..PAPER
            },
        ]
        .into_iter()
        .enumerate()
        {
            let mut rng = Pcg32::new(40 + k as u64);
            let np = encoder_param_len(&d);
            let params: Vec<f64> = (0..np).map(|_| rng.gen_f64() - 0.45).collect();
            let obs = frames(9, &mut rng);
            let refs: Vec<&Observation> = obs.iter().collect();
            let c2 = d.conv_channels[2];
            let hi = if d.film { d.instr_hidden } else { 0 };
            let instr: Vec<f64> = (0..9 * hi).map(|_| rng.gen_f64() - 0.5).collect();
            let d_out: Vec<f64> = (0..9 * c2).map(|_| rng.gen_f64() - 0.5).collect();
            let mut want_out = vec![0.0; 9 * c2];
            let mut want_g = vec![0.0; np];
            let mut want_de = vec![0.0; 9 * hi];
            let mut cache = vec![0.0; encoder_cache_len(&d)];
            let mut scratch = vec![0.0; encoder_scratch_len(&d)];
            for (r, o) in obs.iter().enumerate() {
                let out = &mut want_out[r * c2..(r + 1) * c2];
                let e = &instr[r * hi..(r + 1) * hi];
                encode_forward(&d, &params, o, e, out, &mut cache).unwrap();
                let dy = &d_out[r * c2..(r + 1) * c2];
                let de = &mut want_de[r * hi..(r + 1) * hi];
                encode_backward(&d, &params, o, e, &cache, dy, &mut want_g, de, &mut scratch)
                    .unwrap();
            }
            let mut eb = EncoderBatch::<f64>::new(&d, 16, true).unwrap();
            let mut out = vec![0.0; 9 * (c2 + 3)];
            eb.instr_mut(9).unwrap().copy_from_slice(&instr);
            eb.forward(&params, &refs, &mut out, c2 + 3, 2).unwrap();
            let mut g = vec![0.0; np];
            let mut dy = vec![0.0; 9 * (c2 + 3)];
            for r in 0..9 {
                dy[r * (c2 + 3) + 2..][..c2].copy_from_slice(&d_out[r * c2..(r + 1) * c2]);
            }
            eb.backward(&params, &refs, &dy, c2 + 3, 2, &mut g).unwrap();
            for r in 0..9 {
                for c in 0..c2 {
                    let (a, b) = (out[r * (c2 + 3) + 2 + c], want_out[r * c2 + c]);
                    assert!(
                        (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                        "{k}: feature {r}/{c}"
                    );
                }
            }
            let scale = want_g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 0.0);
            for (i, (a, b)) in g.iter().zip(&want_g).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-10 * scale,
                    "{k}: gradient {i}: {a} vs {b}"
                );
            }
            assert_eq!(eb.d_instr().len(), want_de.len());
            if d.film {
                assert!(want_de.iter().any(|v| *v != 0.0), "{k}: weak test");
            }
            for (i, (a, b)) in eb.d_instr().iter().zip(&want_de).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-10 * scale,
                    "{k}: instruction gradient {i}: {a} vs {b}"
                );
            }
        }
    }

    /// One forward and backward of `d`'s encoder over `frames` on `threads` threads: the
    /// features (stride `c2 + 3`, offset 2), the parameter gradients and the instruction
    /// gradients.
    fn pass_f32(d: &ModelDims, frames: &[Observation], threads: usize) -> [Vec<f32>; 3] {
        let mut rng = Pcg32::new(7);
        let np = encoder_param_len(d);
        let params: Vec<f32> = (0..np).map(|_| rng.gen_f64() as f32 - 0.45).collect();
        let n = frames.len();
        let (c2, hi) = (d.conv_channels[2], encoder_sizes(d).hi);
        let refs: Vec<&Observation> = frames.iter().collect();
        let mut eb = EncoderBatch::<f32>::new(d, n, true)
            .unwrap()
            .with_threads(threads);
        let instr: Vec<f32> = (0..n * hi).map(|_| rng.gen_f64() as f32 - 0.5).collect();
        eb.instr_mut(n).unwrap().copy_from_slice(&instr);
        let mut out = vec![0.0; n * (c2 + 3)];
        eb.forward(&params, &refs, &mut out, c2 + 3, 2).unwrap();
        let dy: Vec<f32> = (0..out.len()).map(|_| rng.gen_f64() as f32 - 0.5).collect();
        let mut g = vec![0.0; np];
        eb.backward(&params, &refs, &dy, c2 + 3, 2, &mut g).unwrap();
        [out, g, eb.d_instr().to_vec()]
    }

    /// Threads change no bit: features and every gradient equal the one-thread pass's, for
    /// thread counts that split the frames and the channels evenly and unevenly (and more
    /// threads than channels), in f32, where any change of summation order would show.
    #[test]
    fn threads_change_no_bit() {
        let mut rng = Pcg32::new(3);
        let obs = frames(23, &mut rng);
        let bow = ModelDims {
            encoder: EncoderKind::Bow,
            film: true,
            ..TINY
        };
        for d in [
            TINY,
            bow,
            ModelDims {
                film: true,
                ..PAPER
            },
        ] {
            let one = pass_f32(&d, &obs, 1);
            assert!(one[1].iter().any(|v| *v != 0.0), "weak test");
            for threads in [2, 3, 7, 40] {
                let got = pass_f32(&d, &obs, threads);
                for (what, (a, b)) in ["features", "gradients", "instruction gradients"]
                    .iter()
                    .zip(got.iter().zip(&one))
                {
                    let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same && a.len() == b.len(),
                        "{threads} threads: {what} differ"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let d = ModelDims {
            encoder: EncoderKind::Bow,
            ..TINY
        };
        let params = vec![0.1f32; encoder_param_len(&d)];
        let mut eb = EncoderBatch::<f32>::new(&d, 2, false).unwrap();
        let mut o = [[1u8, 1, 1]; VIEW_CELLS];
        o[3][1] = 16;
        let mut out = vec![0.0; 64];
        assert!(eb.forward(&params, &[&o], &mut out, 16, 0).is_err());
        let ok = [[1u8, 1, 1]; VIEW_CELLS];
        assert!(
            eb.forward(&params, &[&ok, &ok, &ok], &mut out, 16, 0)
                .is_err(),
            "capacity"
        );
        assert!(
            eb.forward(&params, &[&ok], &mut out[..3], 16, 0).is_err(),
            "short output"
        );
        assert!(
            eb.forward(&params[1..], &[&ok], &mut out, 16, 0).is_err(),
            "short params"
        );
        eb.forward(&params, &[&ok], &mut out, 16, 0).unwrap();
        let mut g = vec![0.0; encoder_param_len(&d)];
        assert!(
            eb.backward(&params, &[&ok], &out, 16, 0, &mut g).is_err(),
            "no backward"
        );
        // A bad code is named by its frame's index in the whole pass, whichever part of the
        // frames (thread) holds it.
        let mut frames = vec![&ok; 6];
        frames[4] = &o;
        let mut out = vec![0.0; 6 * 16];
        for threads in [1, 2, 3] {
            let mut eb = EncoderBatch::<f32>::new(&d, 6, false)
                .unwrap()
                .with_threads(threads);
            let err = eb.forward(&params, &frames, &mut out, 16, 0).unwrap_err();
            assert!(err.to_string().contains("frame 4:"), "{threads}: {err}");
        }
    }
}
