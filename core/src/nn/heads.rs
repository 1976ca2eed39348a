//! Actor and critic heads (BabyAI): actor `Linear(H, head_hidden) - tanh - Linear(head_hidden,
//! n_actions)` giving action logits, critic `Linear(H, head_hidden) - tanh - Linear(head_hidden,
//! 1)` giving the value; `H` is the memory's output width ([`ModelDims::memory_width`]).
//!
//! Parameter layout (one flat slice, PyTorch shapes, row-major), actor then critic:
//! `[a.w1 hh x H | a.b1 hh | a.w2 A x hh | a.b2 A | c.w1 hh x H | c.b1 hh | c.w2 1 x hh | c.b2 1]`.
//! Cache: `[actor tanh activations hh | critic tanh activations hh]`.
//!
//! Invariants: every buffer length is checked up front (an [`Error`], never a panic); zero
//! widths are rejected as [`Error::BadDims`]; backward passes accumulate (`+=`) into gradients.

use crate::error::{check_len, Error};
use crate::nn::dims::ModelDims;
use crate::nn::init::{init_bias, init_weight, InitConfig};
use crate::nn::ops::{linear, linear_backward};
use crate::nn::scalar::Real;
use crate::rng::Pcg32;

/// The memory output width `n_modules * hidden` (saturating, so absurd dims give an error).
const fn mem_width(d: &ModelDims) -> usize {
    d.rim.n_modules.saturating_mul(d.rim.hidden)
}

const fn mlp_param_len(n_in: usize, hid: usize, n_out: usize) -> usize {
    hid.saturating_mul(n_in)
        .saturating_add(hid)
        .saturating_add(n_out.saturating_mul(hid))
        .saturating_add(n_out)
}

/// Number of actor parameters.
pub const fn actor_param_len(d: &ModelDims) -> usize {
    mlp_param_len(mem_width(d), d.head_hidden, d.n_actions)
}

/// Number of critic parameters.
pub const fn critic_param_len(d: &ModelDims) -> usize {
    mlp_param_len(mem_width(d), d.head_hidden, 1)
}

/// Number of parameters of both heads (actor first).
pub const fn heads_param_len(d: &ModelDims) -> usize {
    actor_param_len(d).saturating_add(critic_param_len(d))
}

/// Length of the forward cache of [`heads_forward`]: `2 * head_hidden`.
pub const fn heads_cache_len(d: &ModelDims) -> usize {
    d.head_hidden.saturating_mul(2)
}

pub(crate) fn check_dims(d: &ModelDims) -> Result<(), Error> {
    if mem_width(d) == 0 || d.head_hidden == 0 || d.n_actions == 0 {
        return Err(Error::BadDims {
            what: "heads need memory width, head_hidden and n_actions > 0",
        });
    }
    Ok(())
}

/// A two-layer tanh MLP's shapes.
#[derive(Clone, Copy)]
struct Mlp {
    n_in: usize,
    hid: usize,
    n_out: usize,
}

impl Mlp {
    /// Parameter slices `(w1, b1, w2, b2)`; `p` must hold [`mlp_param_len`] elements.
    fn split<'a, S>(&self, p: &'a [S]) -> (&'a [S], &'a [S], &'a [S], &'a [S]) {
        let (w1, rest) = p.split_at(self.hid * self.n_in);
        let (b1, rest) = rest.split_at(self.hid);
        let (w2, rest) = rest.split_at(self.n_out * self.hid);
        (w1, b1, w2, &rest[..self.n_out])
    }

    /// Forward: `hidden = tanh(W1 x + b1)`, `out = W2 hidden + b2`. Lengths checked by callers.
    fn forward<S: Real>(&self, p: &[S], x: &[S], out: &mut [S], hidden: &mut [S]) {
        let (w1, b1, w2, b2) = self.split(p);
        let hidden = &mut hidden[..self.hid];
        linear(w1, Some(b1), &x[..self.n_in], hidden);
        hidden.iter_mut().for_each(|v| *v = v.tanh());
        linear(w2, Some(b2), hidden, &mut out[..self.n_out]);
    }

    /// Backward given the cached `hidden` and `d_out`: accumulate into `g` (laid out like `p`)
    /// and, if given, into `dx`. An empty `g` skips the weight gradients (input gradient only,
    /// e.g. for fast-only adaptation, where the heads are frozen).
    fn backward<S: Real>(
        &self,
        p: &[S],
        x: &[S],
        hidden: &[S],
        d_out: &[S],
        g: &mut [S],
        mut dx: Option<&mut [S]>,
    ) {
        let (w1, _, w2, _) = self.split(p);
        let (hid, n_in) = (self.hid, self.n_in);
        let x = &x[..n_in];
        let hidden = &hidden[..hid];
        let d_out = &d_out[..self.n_out];
        let want_g = !g.is_empty();
        let (gw1, rest) = g.split_at_mut(if want_g { hid * n_in } else { 0 });
        let (gb1, rest) = rest.split_at_mut(if want_g { hid } else { 0 });
        let (gw2, rest) = rest.split_at_mut(if want_g { self.n_out * hid } else { 0 });
        let gb2 = &mut rest[..if want_g { self.n_out } else { 0 }];
        if want_g {
            linear_backward(w2, hidden, d_out, None, Some(gw2), Some(gb2));
        }
        // Through tanh and the first layer, one hidden unit at a time (no scratch buffer).
        for (j, (t, w1_row)) in hidden.iter().zip(w1.chunks_exact(n_in)).enumerate() {
            let mut dh = S::ZERO;
            for (o, dy) in d_out.iter().enumerate() {
                dh += w2[o * hid + j] * *dy;
            }
            let da = dh * (S::ONE - *t * *t);
            if let Some(gb) = gb1.get_mut(j) {
                *gb += da;
            }
            if let Some(gw1_row) = gw1.get_mut(j * n_in..(j + 1) * n_in) {
                for (gw, xi) in gw1_row.iter_mut().zip(x) {
                    *gw += da * *xi;
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                for (gx, w) in dx.iter_mut().zip(w1_row) {
                    *gx += da * *w;
                }
            }
        }
    }
}

fn actor_mlp(d: &ModelDims) -> Mlp {
    Mlp {
        n_in: mem_width(d),
        hid: d.head_hidden,
        n_out: d.n_actions,
    }
}

fn critic_mlp(d: &ModelDims) -> Mlp {
    Mlp {
        n_in: mem_width(d),
        hid: d.head_hidden,
        n_out: 1,
    }
}

/// Actor alone (acting without the critic): `logits[..n_actions]` from `x[..H]`;
/// `hidden` (`head_hidden` long) receives the tanh activations.
pub fn actor_forward<S: Real>(
    d: &ModelDims,
    actor_params: &[S],
    x: &[S],
    logits: &mut [S],
    hidden: &mut [S],
) -> Result<(), Error> {
    check_dims(d)?;
    check_len(actor_params.len(), actor_param_len(d))?;
    check_len(x.len(), mem_width(d))?;
    check_len(logits.len(), d.n_actions)?;
    check_len(hidden.len(), d.head_hidden)?;
    actor_mlp(d).forward(actor_params, x, logits, hidden);
    Ok(())
}

/// Critic alone: the value of `x[..H]`; `hidden` (`head_hidden` long) receives the tanh
/// activations.
pub fn critic_forward<S: Real>(
    d: &ModelDims,
    critic_params: &[S],
    x: &[S],
    hidden: &mut [S],
) -> Result<S, Error> {
    check_dims(d)?;
    check_len(critic_params.len(), critic_param_len(d))?;
    check_len(x.len(), mem_width(d))?;
    check_len(hidden.len(), d.head_hidden)?;
    let mut v = [S::ZERO];
    critic_mlp(d).forward(critic_params, x, &mut v, hidden);
    Ok(v[0])
}

/// Both heads on the memory output `x[..H]`: writes `logits[..n_actions]`, returns the value,
/// and fills `cache` ([`heads_cache_len`]) for [`heads_backward`].
pub fn heads_forward<S: Real>(
    d: &ModelDims,
    params: &[S],
    x: &[S],
    logits: &mut [S],
    cache: &mut [S],
) -> Result<S, Error> {
    check_dims(d)?;
    check_len(params.len(), heads_param_len(d))?;
    check_len(cache.len(), heads_cache_len(d))?;
    let (pa, pc) = params.split_at(actor_param_len(d));
    let (ca, cc) = cache.split_at_mut(d.head_hidden);
    actor_forward(d, pa, x, logits, ca)?;
    critic_forward(d, pc, x, cc)
}

/// Backward of [`heads_forward`] (same `params`, `x` and its `cache`): given the loss gradient
/// w.r.t. the logits and the value, accumulate parameter gradients into `grads` (laid out like
/// `params`) and, if given, the gradient w.r.t. the memory output into `dx[..H]`.
#[allow(clippy::too_many_arguments)]
pub fn heads_backward<S: Real>(
    d: &ModelDims,
    params: &[S],
    x: &[S],
    cache: &[S],
    d_logits: &[S],
    d_value: S,
    grads: &mut [S],
    mut dx: Option<&mut [S]>,
) -> Result<(), Error> {
    check_dims(d)?;
    let plen = heads_param_len(d);
    check_len(params.len(), plen)?;
    // An empty `grads` asks for the input gradient only (no weight gradients).
    if !grads.is_empty() {
        check_len(grads.len(), plen)?;
    }
    check_len(cache.len(), heads_cache_len(d))?;
    check_len(x.len(), mem_width(d))?;
    check_len(d_logits.len(), d.n_actions)?;
    if let Some(dx) = dx.as_deref() {
        check_len(dx.len(), mem_width(d))?;
    }
    let na = actor_param_len(d);
    let (pa, pc) = params.split_at(na);
    let (ga, gc) = grads.split_at_mut(if grads.is_empty() { 0 } else { na });
    let (ca, cc) = cache.split_at(d.head_hidden);
    actor_mlp(d).backward(pa, x, ca, d_logits, ga, dx.as_deref_mut());
    critic_mlp(d).backward(pc, x, cc, &[d_value], gc, dx);
    Ok(())
}

/// Initialise both heads: weights with `cfg.linear`, biases with [`init_bias`] (PyTorch fan =
/// in-features), in layout order.
pub fn heads_init<S: Real>(
    d: &ModelDims,
    cfg: &InitConfig,
    rng: &mut Pcg32,
    params: &mut [S],
) -> Result<(), Error> {
    check_dims(d)?;
    check_len(params.len(), heads_param_len(d))?;
    let mut rest = &mut params[..heads_param_len(d)];
    for m in [actor_mlp(d), critic_mlp(d)] {
        let (w1, r) = rest.split_at_mut(m.hid * m.n_in);
        init_weight(cfg.linear, m.hid, m.n_in, m.n_in, rng, w1)?;
        let (b1, r) = r.split_at_mut(m.hid);
        init_bias(cfg.linear, m.n_in, rng, b1);
        let (w2, r) = r.split_at_mut(m.n_out * m.hid);
        init_weight(cfg.linear, m.n_out, m.hid, m.hid, rng, w2)?;
        let (b2, r) = r.split_at_mut(m.n_out);
        init_bias(cfg.linear, m.hid, rng, b2);
        rest = r;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::dims::{RimDims, PAPER, TINY};
    use crate::nn::gradcheck::{max_rel_error, uniform_vec, GRAD_TOL};

    fn dims() -> ModelDims {
        ModelDims {
            rim: RimDims {
                n_modules: 2,
                hidden: 3,
                ..TINY.rim
            },
            head_hidden: 5,
            n_actions: 7,
            ..TINY
        }
    }

    #[test]
    fn sizes_of_presets() {
        // PAPER: H = 384, hh = 64, A = 7.
        assert_eq!(actor_param_len(&PAPER), 64 * 384 + 64 + 7 * 64 + 7);
        assert_eq!(critic_param_len(&PAPER), 64 * 384 + 64 + 64 + 1);
        assert_eq!(heads_param_len(&PAPER), 49_800);
        assert_eq!(heads_cache_len(&PAPER), 128);
        // TINY: H = 32, hh = 16.
        assert_eq!(
            heads_param_len(&TINY),
            (16 * 32 + 16 + 7 * 16 + 7) + (16 * 32 + 16 + 17)
        );
        assert_eq!(heads_cache_len(&TINY), 32);
    }

    #[test]
    fn gradients_params_and_input() {
        let d = dims();
        let h = d.memory_width();
        let mut rng = Pcg32::new(31);
        let p = uniform_vec(&mut rng, heads_param_len(&d), 0.8);
        let x = uniform_vec(&mut rng, h, 1.0);
        let cl = uniform_vec(&mut rng, d.n_actions, 1.0);
        let cv = 0.7;
        let loss = |p: &[f64], x: &[f64]| {
            let mut logits = vec![0.0; d.n_actions];
            let mut cache = vec![0.0; heads_cache_len(&d)];
            let v = heads_forward(&d, p, x, &mut logits, &mut cache).unwrap();
            logits.iter().zip(&cl).map(|(a, b)| a * b).sum::<f64>() + cv * v
        };
        let mut logits = vec![0.0; d.n_actions];
        let mut cache = vec![0.0; heads_cache_len(&d)];
        heads_forward(&d, &p, &x, &mut logits, &mut cache).unwrap();
        let mut g = vec![0.0; p.len()];
        let mut dx = vec![0.0; h];
        heads_backward(&d, &p, &x, &cache, &cl, cv, &mut g, Some(&mut dx)).unwrap();
        let (e, i) = max_rel_error(|v| loss(v, &x), &p, &g, 1e-5, 1e-4);
        assert!(e < GRAD_TOL, "params: {e} at {i}");
        let (e, i) = max_rel_error(|v| loss(&p, v), &x, &dx, 1e-5, 1e-4);
        assert!(e < GRAD_TOL, "input: {e} at {i}");
        // Checks can fail.
        for idx in [0, actor_param_len(&d) - 1, p.len() - 1] {
            let mut bad = g.clone();
            bad[idx] += 1e-3;
            assert!(max_rel_error(|v| loss(v, &x), &p, &bad, 1e-5, 1e-4).0 > GRAD_TOL);
        }
        let mut bad = dx.clone();
        bad[2] *= 1.001;
        assert!(max_rel_error(|v| loss(&p, v), &x, &bad, 1e-5, 1e-4).0 > GRAD_TOL);
        // Backward accumulates: a second call doubles the gradients.
        let mut g2 = g.clone();
        heads_backward(&d, &p, &x, &cache, &cl, cv, &mut g2, None).unwrap();
        for (a, b) in g2.iter().zip(&g) {
            assert!((a - 2.0 * b).abs() <= 1e-12 * b.abs().max(1.0));
        }
    }

    #[test]
    fn split_heads_match_combined_and_init() {
        let d = PAPER;
        let mut p = vec![0.0f32; heads_param_len(&d)];
        heads_init(&d, &InitConfig::BABYAI, &mut Pcg32::new(4), &mut p).unwrap();
        // Unit-norm rows, zero biases.
        let row = &p[..d.memory_width()];
        let n: f32 = row.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-5);
        assert!(p[64 * 384..64 * 384 + 64].iter().all(|v| *v == 0.0));
        let x: Vec<f32> = (0..d.memory_width())
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let mut logits = [0.0f32; 7];
        let mut cache = vec![0.0f32; heads_cache_len(&d)];
        let v = heads_forward(&d, &p, &x, &mut logits, &mut cache).unwrap();
        let (pa, pc) = p.split_at(actor_param_len(&d));
        let mut l2 = [0.0f32; 7];
        let mut hid = [0.0f32; 64];
        actor_forward(&d, pa, &x, &mut l2, &mut hid).unwrap();
        assert_eq!(logits, l2);
        assert_eq!(critic_forward(&d, pc, &x, &mut hid).unwrap(), v);
    }

    #[test]
    fn errors_instead_of_panics() {
        let d = dims();
        let p = vec![0.0f64; heads_param_len(&d)];
        let x = vec![0.0f64; d.memory_width()];
        let mut logits = vec![0.0; 7];
        let mut cache = vec![0.0; heads_cache_len(&d)];
        assert!(heads_forward(&d, &p[1..], &x, &mut logits, &mut cache).is_err());
        assert!(heads_forward(&d, &p, &x[1..], &mut logits, &mut cache).is_err());
        assert!(heads_forward(&d, &p, &x, &mut logits[1..], &mut cache).is_err());
        assert!(heads_forward(&d, &p, &x, &mut logits, &mut cache[1..]).is_err());
        let mut g = vec![0.0; p.len()];
        let mut dx = vec![0.0; 2];
        assert!(heads_backward(&d, &p, &x, &cache, &logits, 1.0, &mut g, Some(&mut dx)).is_err());
        assert!(heads_backward(&d, &p, &x, &cache, &logits[1..], 1.0, &mut g, None).is_err());
        let zero = ModelDims {
            head_hidden: 0,
            ..d
        };
        assert!(heads_forward(&zero, &p, &x, &mut logits, &mut cache).is_err());
        let huge = ModelDims {
            head_hidden: usize::MAX / 3,
            ..d
        };
        assert!(heads_forward(&huge, &p, &x, &mut logits, &mut cache).is_err());
    }
}
