//! The actor and critic heads batched over rows (`metarim_core::nn::heads` block for block):
//! each a two-layer MLP with `tanh` on the memory's output, as GEMMs over all rows of a
//! minibatch (the gradient pass) or of a batch of environments (acting).
//!
//! Invariants: the products are row-invariant ([`super::gemm`]), so a row's result does not
//! depend on how many rows are computed with it; short parameter buffers are errors.

use anyhow::{anyhow, Result};
use metarim_core::nn::dims::ModelDims;
use metarim_core::nn::heads::actor_param_len;

use super::gemm::{gemm, rm, tr, Scalar};

/// The heads' weights as `(w1, b1, w2, b2)` for the actor (`n_out = n_actions`) or the critic.
#[allow(clippy::type_complexity)]
fn mlp_parts<'a, S>(
    heads: &'a [S],
    d: &ModelDims,
    critic: bool,
) -> Option<(&'a [S], &'a [S], &'a [S], &'a [S])> {
    let (n_in, hid) = (d.memory_width(), d.head_hidden);
    let n_out = if critic { 1 } else { d.n_actions };
    let p = if critic {
        heads.get(actor_param_len(d)..)?
    } else {
        heads
    };
    let (w1, p) = p.split_at_checked(hid * n_in)?;
    let (b1, p) = p.split_at_checked(hid)?;
    let (w2, p) = p.split_at_checked(n_out * hid)?;
    Some((w1, b1, w2, p.get(..n_out)?))
}

/// Heads forward over `rows` rows of `h` (`[rows x W]`, `W` the memory's width): the hidden
/// layers into `hid` (`[rows x 2*head_hidden]`, actor's then critic's), `logits`
/// (`[rows x n_actions]`) and `value` (`rows`).
pub fn forward_rows<S: Scalar>(
    d: &ModelDims,
    heads: &[S],
    rows: usize,
    h: &[S],
    hid: &mut [S],
    logits: &mut [S],
    value: &mut [S],
) -> Result<()> {
    let (w, hh, na) = (d.memory_width(), d.head_hidden, d.n_actions);
    for (critic, c0) in [(false, 0usize), (true, hh)] {
        let (w1, b1, w2, b2) =
            mlp_parts(heads, d, critic).ok_or_else(|| anyhow!("heads parameters too short"))?;
        let (one, zero) = (S::ONE, S::ZERO);
        gemm(
            rows,
            w,
            hh,
            one,
            h,
            rm(0, w),
            w1,
            tr(0, w),
            zero,
            hid,
            rm(c0, 2 * hh),
        )?;
        for r in 0..rows {
            for (v, b) in hid[r * 2 * hh + c0..][..hh].iter_mut().zip(b1) {
                *v = (*b + *v).act_tanh();
            }
        }
        let (out, n_out) = if critic {
            (&mut *value, 1)
        } else {
            (&mut *logits, na)
        };
        gemm(
            rows,
            hh,
            n_out,
            one,
            hid,
            rm(c0, 2 * hh),
            w2,
            tr(0, hh),
            zero,
            out,
            rm(0, n_out),
        )?;
        for r in 0..rows {
            for (v, b) in out[r * n_out..][..n_out].iter_mut().zip(b2) {
                *v = *b + *v;
            }
        }
    }
    Ok(())
}

/// Heads backward over `rows` rows: from the gradients of the logits and values, the hidden
/// layers' gradients into `dhid` (through `tanh`, from the forward's `hid`) and the memory
/// output's gradient into `dh` (overwritten: the actor's part, then the critic's added).
#[allow(clippy::too_many_arguments)]
pub fn backward_rows<S: Scalar>(
    d: &ModelDims,
    heads: &[S],
    rows: usize,
    dlogits: &[S],
    dvalue: &[S],
    hid: &[S],
    dhid: &mut [S],
    dh: &mut [S],
) -> Result<()> {
    let (w, hh, na) = (d.memory_width(), d.head_hidden, d.n_actions);
    let (one, zero) = (S::ONE, S::ZERO);
    for (critic, c0, dout, n_out) in [(false, 0usize, dlogits, na), (true, hh, dvalue, 1)] {
        let (w1, _, w2, _) =
            mlp_parts(heads, d, critic).ok_or_else(|| anyhow!("heads parameters too short"))?;
        gemm(
            rows,
            n_out,
            hh,
            one,
            dout,
            rm(0, n_out),
            w2,
            rm(0, hh),
            zero,
            dhid,
            rm(c0, 2 * hh),
        )?;
        for r in 0..rows {
            let at = r * 2 * hh + c0;
            for (g, t) in dhid[at..][..hh].iter_mut().zip(&hid[at..][..hh]) {
                *g *= one - *t * *t;
            }
        }
        let beta = if critic { one } else { zero };
        gemm(
            rows,
            hh,
            w,
            one,
            dhid,
            rm(c0, 2 * hh),
            w1,
            rm(0, w),
            beta,
            dh,
            rm(0, w),
        )?;
    }
    Ok(())
}

/// Heads weight gradients over all `rows` rows, accumulated (`+=`) into `g` (the heads'
/// block): from the memory output `h`, the hidden layers `hid` and their gradients `dhid`
/// ([`backward_rows`]), and the gradients of the logits and values.
#[allow(clippy::too_many_arguments)]
pub fn weight_grads<S: Scalar>(
    d: &ModelDims,
    rows: usize,
    h: &[S],
    hid: &[S],
    dhid: &[S],
    dlogits: &[S],
    dvalue: &[S],
    g: &mut [S],
) -> Result<()> {
    let (w, hh, na) = (d.memory_width(), d.head_hidden, d.n_actions);
    let one = S::ONE;
    let (ga, gc) = g
        .split_at_mut_checked(actor_param_len(d))
        .ok_or_else(|| anyhow!("heads gradient too short"))?;
    for (gm, c0, dout, n_out) in [(ga, 0usize, dlogits, na), (gc, hh, dvalue, 1)] {
        let (gw1, rest) = gm.split_at_mut(hh * w);
        let (gb1, rest) = rest.split_at_mut(hh);
        let (gw2, gb2) = rest.split_at_mut(n_out * hh);
        gemm(
            n_out,
            rows,
            hh,
            one,
            dout,
            tr(0, n_out),
            hid,
            rm(c0, 2 * hh),
            one,
            gw2,
            rm(0, hh),
        )?;
        gemm(
            hh,
            rows,
            w,
            one,
            dhid,
            tr(c0, 2 * hh),
            h,
            rm(0, w),
            one,
            gw1,
            rm(0, w),
        )?;
        for r in 0..rows {
            for (o, v) in gb2.iter_mut().zip(&dout[r * n_out..][..n_out]) {
                *o += *v;
            }
            for (o, v) in gb1.iter_mut().zip(&dhid[r * 2 * hh + c0..][..hh]) {
                *o += *v;
            }
        }
    }
    Ok(())
}
