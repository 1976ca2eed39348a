//! Instruction encoder: word embedding + GRU over the mission's tokens (BabyAI's `instr_arch =
//! "gru"`); its output is the GRU's final hidden state.
//!
//! Parameter layout (one flat slice, PyTorch shapes, row-major):
//! `[embedding VOCAB_SIZE x word_dim | w_ih 3Hi x word_dim | w_hh 3Hi x Hi | b_ih 3Hi | b_hh 3Hi]`
//! with `Hi = instr_hidden`, GRU gate order r, z, n.
//!
//! Invariants:
//! - The sequence is the mission's non-[`PAD`] tokens in order; for [`tokenize`]'s output (padding
//!   only at the end) that is its first `n` tokens, and the result equals BabyAI's
//!   `out[range(B), lengths - 1]`. An empty mission encodes to zeros.
//! - The mission is constant during an episode, so the encoder runs once per episode
//!   ([`instr_forward`]) and its output is reused at every step; the caller sums the gradient of
//!   the output over the episode's steps and calls [`instr_backward`] once.
//! - Token ids `>= VOCAB_SIZE` and missions longer than `max_tokens` non-PAD tokens are errors;
//!   every buffer length is checked up front, nothing panics.
//!
//! [`tokenize`]: crate::mission::vocab::tokenize

use crate::error::{check_len, Error};
use crate::mission::vocab::{PAD, VOCAB_SIZE};
use crate::nn::dims::ModelDims;
use crate::nn::init::{init_bias, init_gate_weight, init_weight, InitConfig};
use crate::nn::ops::{gru_backward, gru_forward, GruGrads, GruWeights, GRU_CACHE_PER_UNIT};
use crate::nn::scalar::Real;
use crate::rng::Pcg32;

/// Length of the embedding table `VOCAB_SIZE * word_dim`.
pub const fn instr_embedding_len(d: &ModelDims) -> usize {
    VOCAB_SIZE.saturating_mul(d.word_dim)
}

/// Number of instruction-encoder parameters.
pub const fn instr_param_len(d: &ModelDims) -> usize {
    let h = d.instr_hidden;
    let three = h.saturating_mul(3);
    instr_embedding_len(d)
        .saturating_add(three.saturating_mul(d.word_dim))
        .saturating_add(three.saturating_mul(h))
        .saturating_add(three.saturating_mul(2))
}

/// Length of the forward cache: `(max_tokens + 1) * Hi` hidden states (`h_0 = 0` first), then
/// `max_tokens * 4Hi` GRU gate caches.
pub const fn instr_cache_len(d: &ModelDims) -> usize {
    let h = d.instr_hidden;
    states_len(d).saturating_add(
        d.max_tokens
            .saturating_mul(h.saturating_mul(GRU_CACHE_PER_UNIT)),
    )
}

/// Length of the hidden-state part of the cache, `(max_tokens + 1) * Hi`.
const fn states_len(d: &ModelDims) -> usize {
    d.max_tokens
        .saturating_add(1)
        .saturating_mul(d.instr_hidden)
}

/// Scratch needed by [`instr_backward`]: `8 Hi` (two state gradients and the GRU's `6 Hi`).
pub const fn instr_scratch_len(d: &ModelDims) -> usize {
    d.instr_hidden.saturating_mul(8)
}

/// Validate the tokens, returning the number of non-PAD tokens.
fn count_tokens(d: &ModelDims, tokens: &[u16]) -> Result<usize, Error> {
    let mut n = 0usize;
    for (i, &t) in tokens.iter().enumerate() {
        if t as usize >= VOCAB_SIZE {
            return Err(Error::BadMission {
                word: i,
                expected: "a token id below VOCAB_SIZE",
            });
        }
        if t != PAD {
            n += 1;
        }
    }
    if n > d.max_tokens {
        return Err(Error::BufferTooSmall {
            needed: n,
            got: d.max_tokens,
        });
    }
    Ok(n)
}

/// The parameter slices: (embedding, GRU weights).
fn split_params<'a, S>(d: &ModelDims, p: &'a [S]) -> (&'a [S], GruWeights<'a, S>) {
    let h = d.instr_hidden;
    let (emb, rest) = p.split_at(instr_embedding_len(d));
    let (w_ih, rest) = rest.split_at(3 * h * d.word_dim);
    let (w_hh, rest) = rest.split_at(3 * h * h);
    let (b_ih, rest) = rest.split_at(3 * h);
    let b_hh = &rest[..3 * h];
    (
        emb,
        GruWeights {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        },
    )
}

/// Run the encoder over `tokens`, writing the final hidden state to `out[..Hi]` and what the
/// backward pass needs to `cache` ([`instr_cache_len`]).
pub fn instr_forward<S: Real>(
    d: &ModelDims,
    params: &[S],
    tokens: &[u16],
    out: &mut [S],
    cache: &mut [S],
) -> Result<(), Error> {
    check_len(params.len(), instr_param_len(d))?;
    check_len(cache.len(), instr_cache_len(d))?;
    let h = d.instr_hidden;
    check_len(out.len(), h)?;
    let n = count_tokens(d, tokens)?;
    let wd = d.word_dim;
    let (emb, p) = split_params(d, params);
    let (hs, gates) = cache.split_at_mut(states_len(d));
    hs[..h].iter_mut().for_each(|v| *v = S::ZERO);
    let seq = tokens.iter().filter(|&&t| t != PAD).take(n);
    for (t, &tok) in seq.enumerate() {
        let tok = tok as usize;
        let x = &emb[tok * wd..(tok + 1) * wd];
        let (prev, next) = hs.split_at_mut((t + 1) * h);
        let h_prev = &prev[t * h..];
        let g = &mut gates[t * GRU_CACHE_PER_UNIT * h..(t + 1) * GRU_CACHE_PER_UNIT * h];
        gru_forward(&p, x, h_prev, &mut next[..h], g);
    }
    out[..h].copy_from_slice(&hs[n * h..(n + 1) * h]);
    Ok(())
}

/// Scratch needed by [`instr_encode`]: `5 Hi` (previous state and one step's gate cache).
pub const fn instr_encode_scratch_len(d: &ModelDims) -> usize {
    d.instr_hidden.saturating_mul(1 + GRU_CACHE_PER_UNIT)
}

/// Inference-only [`instr_forward`] (bit-identical output) that keeps no per-token cache: for
/// acting and for on-device adaptation, which never backpropagates into the instruction encoder.
/// `scratch` needs [`instr_encode_scratch_len`] elements.
pub fn instr_encode<S: Real>(
    d: &ModelDims,
    params: &[S],
    tokens: &[u16],
    out: &mut [S],
    scratch: &mut [S],
) -> Result<(), Error> {
    check_len(params.len(), instr_param_len(d))?;
    check_len(scratch.len(), instr_encode_scratch_len(d))?;
    let h = d.instr_hidden;
    check_len(out.len(), h)?;
    count_tokens(d, tokens)?;
    let wd = d.word_dim;
    let (emb, p) = split_params(d, params);
    let (h_prev, rest) = scratch.split_at_mut(h);
    let gates = &mut rest[..GRU_CACHE_PER_UNIT * h];
    let out = &mut out[..h];
    out.iter_mut().for_each(|v| *v = S::ZERO);
    for &tok in tokens.iter().filter(|&&t| t != PAD) {
        let tok = tok as usize;
        h_prev.copy_from_slice(out);
        gru_forward(&p, &emb[tok * wd..(tok + 1) * wd], h_prev, out, gates);
    }
    Ok(())
}

/// Backward of [`instr_forward`] with the same `params`, `tokens` and its `cache`: given
/// `d_out` (the gradient w.r.t. the output, summed by the caller over the episode's steps),
/// accumulate into `grads` (laid out like `params`): the GRU weights and the embedding rows of
/// the tokens used. `scratch` needs [`instr_scratch_len`] elements.
#[allow(clippy::too_many_arguments)]
pub fn instr_backward<S: Real>(
    d: &ModelDims,
    params: &[S],
    tokens: &[u16],
    cache: &[S],
    d_out: &[S],
    grads: &mut [S],
    scratch: &mut [S],
) -> Result<(), Error> {
    let plen = instr_param_len(d);
    check_len(params.len(), plen)?;
    check_len(grads.len(), plen)?;
    check_len(cache.len(), instr_cache_len(d))?;
    check_len(scratch.len(), instr_scratch_len(d))?;
    let h = d.instr_hidden;
    check_len(d_out.len(), h)?;
    let n = count_tokens(d, tokens)?;
    if n == 0 {
        return Ok(());
    }
    let wd = d.word_dim;
    let (emb, p) = split_params(d, params);
    let (g_emb, rest) = grads.split_at_mut(instr_embedding_len(d));
    let (gw_ih, rest) = rest.split_at_mut(3 * h * wd);
    let (gw_hh, rest) = rest.split_at_mut(3 * h * h);
    let (gb_ih, rest) = rest.split_at_mut(3 * h);
    let mut g = GruGrads {
        w_ih: gw_ih,
        w_hh: gw_hh,
        b_ih: gb_ih,
        b_hh: &mut rest[..3 * h],
    };
    let (hs, gates) = cache.split_at(states_len(d));
    let (mut dh, rest) = scratch.split_at_mut(h);
    let (mut dh_prev, rest) = rest.split_at_mut(h);
    let gru_scratch = &mut rest[..6 * h];
    dh.copy_from_slice(&d_out[..h]);
    let seq = tokens.iter().rev().filter(|&&t| t != PAD);
    for (i, &tok) in seq.enumerate() {
        let t = n - 1 - i;
        let tok = tok as usize;
        let x = &emb[tok * wd..(tok + 1) * wd];
        let dx = &mut g_emb[tok * wd..(tok + 1) * wd];
        let h_prev = &hs[t * h..(t + 1) * h];
        let c = &gates[t * GRU_CACHE_PER_UNIT * h..(t + 1) * GRU_CACHE_PER_UNIT * h];
        dh_prev.iter_mut().for_each(|v| *v = S::ZERO);
        gru_backward(&p, x, h_prev, c, dh, Some(dx), dh_prev, &mut g, gru_scratch);
        core::mem::swap(&mut dh, &mut dh_prev);
    }
    Ok(())
}

/// Initialise the encoder's parameters: the embedding with `cfg.embedding` (fan `word_dim`), the
/// GRU weights with `cfg.recurrent` ([`init_gate_weight`], 3 gates) and its biases with
/// [`init_bias`] (fan `Hi`), in layout order.
pub fn instr_init<S: Real>(
    d: &ModelDims,
    cfg: &InitConfig,
    rng: &mut Pcg32,
    params: &mut [S],
) -> Result<(), Error> {
    check_len(params.len(), instr_param_len(d))?;
    let (h, wd) = (d.instr_hidden, d.word_dim);
    let (emb, rest) = params.split_at_mut(instr_embedding_len(d));
    init_weight(cfg.embedding, VOCAB_SIZE, wd, wd, rng, emb)?;
    let (w_ih, rest) = rest.split_at_mut(3 * h * wd);
    init_gate_weight(cfg.recurrent, 3, h, wd, rng, w_ih)?;
    let (w_hh, rest) = rest.split_at_mut(3 * h * h);
    init_gate_weight(cfg.recurrent, 3, h, h, rng, w_hh)?;
    let (b_ih, rest) = rest.split_at_mut(3 * h);
    init_bias(cfg.recurrent, h, rng, b_ih);
    init_bias(cfg.recurrent, h, rng, &mut rest[..3 * h]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mission::vocab::{tokenize, MAX_TOKENS};
    use crate::nn::dims::{PAPER, TINY};
    use crate::nn::gradcheck::{max_rel_error, uniform_vec, GRAD_TOL};

    fn dims() -> ModelDims {
        ModelDims {
            word_dim: 3,
            instr_hidden: 4,
            max_tokens: 6,
            ..TINY
        }
    }

    fn forward(d: &ModelDims, p: &[f64], tokens: &[u16]) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0.0; d.instr_hidden];
        let mut cache = vec![0.0; instr_cache_len(d)];
        instr_forward(d, p, tokens, &mut out, &mut cache).unwrap();
        (out, cache)
    }

    fn analytic(d: &ModelDims, p: &[f64], tokens: &[u16], c: &[f64]) -> Vec<f64> {
        let (_, cache) = forward(d, p, tokens);
        let mut g = vec![0.0; p.len()];
        let mut scratch = vec![0.0; instr_scratch_len(d)];
        instr_backward(d, p, tokens, &cache, c, &mut g, &mut scratch).unwrap();
        g
    }

    #[test]
    fn sizes_of_presets() {
        // PAPER: 57*128 + 3*128*128 + 3*128*128 + 6*128.
        assert_eq!(
            instr_param_len(&PAPER),
            57 * 128 + 2 * 3 * 128 * 128 + 6 * 128
        );
        assert_eq!(instr_cache_len(&PAPER), 128 * (5 * MAX_TOKENS + 1));
        assert_eq!(instr_param_len(&TINY), 57 * 16 + 2 * 3 * 16 * 16 + 6 * 16);
        assert_eq!(instr_cache_len(&TINY), 16 * (5 * MAX_TOKENS + 1));
    }

    #[test]
    fn gradients_of_all_params() {
        let d = dims();
        let mut rng = Pcg32::new(21);
        let p = uniform_vec(&mut rng, instr_param_len(&d), 0.7);
        let c = uniform_vec(&mut rng, d.instr_hidden, 1.0);
        // Repeated token (row used twice), padding in the middle and at the end.
        for tokens in [
            &[5u16, 9, 5, 0, 12, 0, 0][..],
            &[2u16][..],
            &[3u16, 4, 5, 6, 7, 8][..],
        ] {
            let g = analytic(&d, &p, tokens, &c);
            let f = |v: &[f64]| {
                let (o, _) = forward(&d, v, tokens);
                o.iter().zip(&c).map(|(a, b)| a * b).sum::<f64>()
            };
            let (e, i) = max_rel_error(f, &p, &g, 1e-5, 1e-4);
            assert!(e < GRAD_TOL, "tokens {tokens:?}: rel error {e} at {i}");
            // Embedding rows of unused tokens get no gradient.
            let wd = d.word_dim;
            assert!(g[..wd].iter().all(|v| *v == 0.0));
            assert!(g[wd..2 * wd].iter().all(|v| *v == 0.0));
            // A perturbed gradient fails the check.
            let mut bad = g.clone();
            bad[instr_embedding_len(&d) + 1] += 1e-3;
            assert!(max_rel_error(f, &p, &bad, 1e-5, 1e-4).0 > GRAD_TOL);
            let mut bad = g.clone();
            bad[tokens[0] as usize * wd] += 1e-3;
            assert!(max_rel_error(f, &p, &bad, 1e-5, 1e-4).0 > GRAD_TOL);
        }
    }

    #[test]
    fn encode_matches_forward() {
        let d = PAPER;
        let mut p = vec![0.0f32; instr_param_len(&d)];
        instr_init(&d, &InitConfig::ORTHOGONAL_RNN, &mut Pcg32::new(2), &mut p).unwrap();
        let mut s = vec![0.0f32; instr_encode_scratch_len(&d)];
        let mut cache = vec![0.0f32; instr_cache_len(&d)];
        for tokens in [&[7u16, 9, 2, 7, 0, 0][..], &[][..], &[0u16, 0][..]] {
            let mut a = vec![1.0f32; d.instr_hidden];
            let mut b = vec![2.0f32; d.instr_hidden];
            instr_forward(&d, &p, tokens, &mut a, &mut cache).unwrap();
            instr_encode(&d, &p, tokens, &mut b, &mut s).unwrap();
            assert_eq!(a, b);
        }
        assert!(instr_encode(&d, &p, &[3], &mut [0.0; 128], &mut s[1..]).is_err());
    }

    #[test]
    fn padding_is_skipped_and_empty_is_zero() {
        let d = dims();
        let mut rng = Pcg32::new(22);
        let p = uniform_vec(&mut rng, instr_param_len(&d), 0.7);
        let (a, _) = forward(&d, &p, &[4, 7, 9]);
        let (b, _) = forward(&d, &p, &[4, 7, 9, 0, 0, 0, 0, 0, 0, 0]);
        let (c, _) = forward(&d, &p, &[0, 4, 0, 7, 9]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        let (z, _) = forward(&d, &p, &[0, 0, 0]);
        assert!(z.iter().all(|v| *v == 0.0));
        let (z, _) = forward(&d, &p, &[]);
        assert!(z.iter().all(|v| *v == 0.0));
        let g = analytic(&d, &p, &[], &[1.0; 4]);
        assert!(g.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn real_mission_on_paper_dims_f32() {
        let mut tokens = [0u16; MAX_TOKENS];
        tokenize("go to the red ball, then open a door", &mut tokens).unwrap();
        let d = PAPER;
        let mut p = vec![0.0f32; instr_param_len(&d)];
        instr_init(&d, &InitConfig::BABYAI, &mut Pcg32::new(1), &mut p).unwrap();
        let mut out = vec![0.0f32; d.instr_hidden];
        let mut cache = vec![0.0f32; instr_cache_len(&d)];
        instr_forward(&d, &p, &tokens, &mut out, &mut cache).unwrap();
        assert!(out.iter().all(|v| v.is_finite() && v.abs() < 1.0));
        assert!(out.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn errors_instead_of_panics() {
        let d = dims();
        let p = vec![0.1f64; instr_param_len(&d)];
        let mut out = vec![0.0; 4];
        let mut cache = vec![0.0; instr_cache_len(&d)];
        let bad_tok = [3u16, VOCAB_SIZE as u16];
        assert!(matches!(
            instr_forward(&d, &p, &bad_tok, &mut out, &mut cache),
            Err(Error::BadMission { word: 1, .. })
        ));
        let long = [3u16; 7];
        assert!(instr_forward(&d, &p, &long, &mut out, &mut cache).is_err());
        assert!(instr_forward(&d, &p[1..], &[3], &mut out, &mut cache).is_err());
        assert!(instr_forward(&d, &p, &[3], &mut out[..3], &mut cache).is_err());
        assert!(instr_forward(&d, &p, &[3], &mut out, &mut cache[1..]).is_err());
        let mut g = vec![0.0; p.len()];
        let mut s = vec![0.0; instr_scratch_len(&d) - 1];
        assert!(instr_backward(&d, &p, &[3], &cache, &out, &mut g, &mut s).is_err());
        // Absurd dims: saturated lengths, an error rather than an overflow.
        let huge = ModelDims {
            word_dim: usize::MAX / 2,
            ..d
        };
        assert!(instr_forward(&huge, &p, &[3], &mut out, &mut cache).is_err());
        // Zero-width encoder (instruction ablation) runs.
        let zero = ModelDims {
            instr_hidden: 0,
            word_dim: 0,
            ..d
        };
        let mut c0 = vec![0.0f64; instr_cache_len(&zero)];
        instr_forward(&zero, &[], &[3, 4], &mut [], &mut c0).unwrap();
        instr_backward(&zero, &[], &[3, 4], &c0, &[], &mut [], &mut []).unwrap();
    }
}
