//! Action selection from the actor's logits: one rule for every place that acts (the host's
//! rollout and evaluation, the CUDA backend's rollout, on-device adaptation and the firmware),
//! so the same logits and generator state give the same action everywhere.
//!
//! Invariants: no heap, no panic (empty logits give action 0 with log-probability 0, or the
//! last index on an exhausted draw). The cumulative sum runs in f64 in index order, so a draw
//! is a deterministic function of the logits and the generator; `exp` and `log` are libm's,
//! the same on the host and on a microcontroller.

use crate::rng::Pcg32;

/// Sample an action from `logits` with `rng` by inverting the CDF of the softmax at one
/// uniform draw: (action, log-probability).
pub fn sample_action(logits: &[f32], rng: &mut Pcg32) -> (usize, f32) {
    let lse = log_sum_exp(logits);
    let u = rng.gen_f64();
    let mut acc = 0.0f64;
    let mut pick = logits.len().saturating_sub(1);
    for (i, l) in logits.iter().enumerate() {
        acc += exp_out_of_line(f64::from(*l - lse));
        if u < acc {
            pick = i;
            break;
        }
    }
    (pick, logits.get(pick).map_or(0.0, |l| *l - lse))
}

/// `libm::exp`, called rather than inlined. On a microcontroller without a double-precision
/// unit it is soft-float code, and inlined into the draw loop (which LLVM unrolls for the
/// device's seven actions) it was copied six times: 4,832 B more firmware flash than this one
/// call (docs/BENCHMARKS.md). The same function either way, so the draws are bit-identical;
/// the call costs a few instructions per action drawn, outside the policy step.
#[inline(never)]
fn exp_out_of_line(x: f64) -> f64 {
    libm::exp(x)
}

/// The most likely action (the first on ties) and its log-probability.
pub fn argmax_action(logits: &[f32]) -> (usize, f32) {
    let lse = log_sum_exp(logits);
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if logits.get(best).is_some_and(|b| *l > *b) {
            best = i;
        }
    }
    (best, logits.get(best).map_or(0.0, |l| *l - lse))
}

/// `log(sum(exp(logits)))`, stable (shifted by the maximum); a non-finite maximum (empty
/// logits: negative infinity) is returned as is.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        return m;
    }
    let mut s = 0.0f32;
    for l in logits {
        s += libm::expf(*l - m);
    }
    m + libm::logf(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_softmax_and_log_probs_are_consistent() {
        let logits = [0.0f32, 1.0, -1.0, 2.0];
        let lse = log_sum_exp(&logits);
        let mut rng = Pcg32::new(7);
        let mut counts = [0usize; 4];
        let n = 20_000;
        for _ in 0..n {
            let (a, lp) = sample_action(&logits, &mut rng);
            assert!((lp - (logits[a] - lse)).abs() < 1e-6);
            counts[a] += 1;
        }
        for (i, c) in counts.iter().enumerate() {
            let p = libm::exp(f64::from(logits[i] - lse));
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                ((*c as f64 / n as f64) - p).abs() < 5.0 * se,
                "action {i}: {c} of {n}"
            );
        }
        assert_eq!(argmax_action(&logits).0, 3);
        assert_eq!(argmax_action(&[1.0, 1.0]).0, 0);
    }

    #[test]
    fn degenerate_logits_do_not_panic() {
        let mut rng = Pcg32::new(1);
        assert_eq!(sample_action(&[], &mut rng), (0, 0.0));
        assert_eq!(argmax_action(&[]), (0, 0.0));
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
        let (a, _) = sample_action(&[f32::NAN, 0.0], &mut rng);
        assert!(a < 2);
    }
}
