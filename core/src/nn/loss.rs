//! Per-step PPO loss and its gradient w.r.t. the action logits and the value, with exactly the
//! formulas of BabyAI's / rl-starter-files' `PPOAlgo.update_parameters`:
//!
//! ```text
//! logp      = log_softmax(logits)[action]
//! entropy   = -sum_i p_i logp_i
//! ratio     = exp(logp - old_logp)
//! surr1     = ratio * A
//! surr2     = clamp(ratio, 1 - eps, 1 + eps) * A
//! policy    = -min(surr1, surr2)
//! v_clipped = old_v + clamp(v - old_v, -eps, eps)
//! value     = max((v - R)^2, (v_clipped - R)^2)      ((v - R)^2 with value clipping off)
//! loss      = policy - entropy_coef * entropy + value_coef * value
//! ```
//!
//! Those codebases average each term over the batch (and divide by the recurrence); here one
//! step is evaluated and its gradient is multiplied by the caller's `scale` (e.g.
//! `1 / (batch * recurrence)`) before being accumulated.
//!
//! Subgradients at the kinks are PyTorch's autograd ones (`tools/autograd/derivatives.yaml`):
//! - `clamp(x, lo, hi)` passes the gradient when `lo <= x <= hi` (bounds inclusive), else 0;
//! - `minimum(a, b)` / `maximum(a, b)` send the whole gradient to the selected operand and split
//!   it half and half on a tie (`a == b`).
//!
//! Diagnostics (not differentiated): `approx_kl = (ratio - 1) - ln(ratio)` (the non-negative,
//! unbiased "k3" estimator of KL(old || new), per step), `logprob_diff = old_logp - logp` (whose
//! batch mean is the other common estimate), and `clipped = 1` when `|ratio - 1| > eps` (its batch
//! mean is the clip fraction).
//!
//! Invariants: no buffer, no heap (softmax terms are recomputed on the fly); an action outside
//! the logits or a short gradient buffer is an [`Error`], never a panic.

use crate::error::Error;
use crate::nn::scalar::Real;

/// PPO coefficients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoCoefs<S> {
    /// Clipping epsilon (0.2), used for both the ratio and the value.
    pub clip_eps: S,
    /// Weight of the value loss (0.5).
    pub value_coef: S,
    /// Weight of the entropy bonus (0.01).
    pub entropy_coef: S,
    /// Clipped value loss (BabyAI: on).
    pub clip_value: bool,
}

impl<S: Real> PpoCoefs<S> {
    /// BabyAI 1.0 defaults: clip 0.2, value 0.5, entropy 0.01, value clipping on.
    pub fn babyai() -> Self {
        PpoCoefs {
            clip_eps: S::from_f64(0.2),
            value_coef: S::from_f64(0.5),
            entropy_coef: S::from_f64(0.01),
            clip_value: true,
        }
    }
}

/// What the rollout recorded for one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoSample<S> {
    /// Action taken.
    pub action: usize,
    /// Log-probability of the action under the acting policy.
    pub old_logprob: S,
    /// Value predicted while acting.
    pub old_value: S,
    /// Advantage (GAE).
    pub advantage: S,
    /// Return target (`old_value + advantage` in BabyAI).
    pub ret: S,
}

/// The loss terms of one step.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PpoTerms<S> {
    /// `policy - entropy_coef * entropy + value_coef * value`.
    pub loss: S,
    /// `-min(surr1, surr2)`.
    pub policy_loss: S,
    /// `max((v - R)^2, (v_clipped - R)^2)` (or `(v - R)^2`).
    pub value_loss: S,
    /// Entropy of the action distribution.
    pub entropy: S,
    /// Log-probability of the action under the current logits.
    pub logprob: S,
    /// `exp(logprob - old_logprob)`.
    pub ratio: S,
    /// `(ratio - 1) - ln(ratio)`.
    pub approx_kl: S,
    /// `old_logprob - logprob`.
    pub logprob_diff: S,
    /// 1 when `|ratio - 1| > clip_eps`, else 0.
    pub clipped: S,
}

impl<S: Real> PpoTerms<S> {
    /// Adds `t` term by term (sums over steps).
    pub fn accumulate(&mut self, t: &PpoTerms<S>) {
        self.loss += t.loss;
        self.policy_loss += t.policy_loss;
        self.value_loss += t.value_loss;
        self.entropy += t.entropy;
        self.logprob += t.logprob;
        self.ratio += t.ratio;
        self.approx_kl += t.approx_kl;
        self.logprob_diff += t.logprob_diff;
        self.clipped += t.clipped;
    }
}

/// Max and log-sum-exp of `logits` (non-empty).
fn lse<S: Real>(logits: &[S]) -> S {
    let mut m = logits.first().copied().unwrap_or(S::ZERO);
    for v in logits {
        m = m.max(*v);
    }
    let mut sum = S::ZERO;
    for v in logits {
        sum += (*v - m).exp();
    }
    m + sum.ln()
}

/// PyTorch's `clamp` gradient mask: 1 when `lo <= x <= hi`.
#[inline]
fn clamp_pass<S: Real>(x: S, lo: S, hi: S) -> S {
    if x >= lo && x <= hi {
        S::ONE
    } else {
        S::ZERO
    }
}

/// Gradient shares `(to a, to b)` of `minimum(a, b)` (PyTorch: split on a tie).
#[inline]
fn min_shares<S: Real>(a: S, b: S) -> (S, S) {
    let half = S::from_f64(0.5);
    if a < b {
        (S::ONE, S::ZERO)
    } else if b < a {
        (S::ZERO, S::ONE)
    } else {
        (half, half)
    }
}

/// The loss terms of one step, without gradients.
pub fn ppo_terms<S: Real>(
    logits: &[S],
    value: S,
    s: &PpoSample<S>,
    c: &PpoCoefs<S>,
) -> Result<PpoTerms<S>, Error> {
    if logits.is_empty() {
        return Err(Error::BadDims {
            what: "no action logits",
        });
    }
    let lp_a = match logits.get(s.action) {
        Some(l) => *l,
        None => return Err(Error::BadAction(s.action as i64)),
    };
    let lse = lse(logits);
    let logprob = lp_a - lse;
    let mut entropy = S::ZERO;
    for l in logits {
        let lp = *l - lse;
        entropy -= lp.exp() * lp;
    }
    let eps = c.clip_eps;
    let (lo, hi) = (S::ONE - eps, S::ONE + eps);
    let log_ratio = logprob - s.old_logprob;
    let ratio = log_ratio.exp();
    let surr1 = ratio * s.advantage;
    let surr2 = ratio.max(lo).min(hi) * s.advantage;
    let policy_loss = -surr1.min(surr2);
    let d = value - s.ret;
    let value_loss = if c.clip_value {
        let vc = s.old_value + (value - s.old_value).max(-eps).min(eps);
        let dc = vc - s.ret;
        (d * d).max(dc * dc)
    } else {
        d * d
    };
    let loss = policy_loss - c.entropy_coef * entropy + c.value_coef * value_loss;
    Ok(PpoTerms {
        loss,
        policy_loss,
        value_loss,
        entropy,
        logprob,
        ratio,
        approx_kl: (ratio - S::ONE) - log_ratio,
        logprob_diff: -log_ratio,
        clipped: if (ratio - S::ONE).abs() > eps {
            S::ONE
        } else {
            S::ZERO
        },
    })
}

/// The loss terms of one step, accumulating `scale * d loss / d logits` into
/// `d_logits[..logits.len()]` and `scale * d loss / d value` into `d_value`.
pub fn ppo_loss<S: Real>(
    logits: &[S],
    value: S,
    s: &PpoSample<S>,
    c: &PpoCoefs<S>,
    scale: S,
    d_logits: &mut [S],
    d_value: &mut S,
) -> Result<PpoTerms<S>, Error> {
    if d_logits.len() < logits.len() {
        return Err(Error::BufferTooSmall {
            needed: logits.len(),
            got: d_logits.len(),
        });
    }
    let t = ppo_terms(logits, value, s, c)?;
    let eps = c.clip_eps;
    let adv = s.advantage;

    // Policy: d(-min(surr1, surr2)) / d logprob.
    let surr1 = t.ratio * adv;
    let surr2 = t.ratio.max(S::ONE - eps).min(S::ONE + eps) * adv;
    let (g1, g2) = min_shares(surr1, surr2);
    let d_ratio = -(g1 * adv + g2 * adv * clamp_pass(t.ratio, S::ONE - eps, S::ONE + eps));
    let d_logprob = d_ratio * t.ratio;

    // logits: d logp_a / d l_i = [i == a] - p_i; d H / d l_i = -p_i (logp_i + H).
    let lse = lse(logits);
    let ent_c = c.entropy_coef;
    for (i, (g, l)) in d_logits.iter_mut().zip(logits).enumerate() {
        let lp = *l - lse;
        let p = lp.exp();
        let ind = if i == s.action { S::ONE } else { S::ZERO };
        let d_h = -p * (lp + t.entropy);
        *g += scale * (d_logprob * (ind - p) - ent_c * d_h);
    }

    // Value.
    let d = value - s.ret;
    let dv = if c.clip_value {
        let diff = value - s.old_value;
        let vc = s.old_value + diff.max(-eps).min(eps);
        let dc = vc - s.ret;
        // maximum(a, b)'s shares (to a, to b) are minimum(b, a)'s: the larger operand gets it.
        let (g1, g2) = min_shares(dc * dc, d * d);
        let two = S::from_f64(2.0);
        g1 * two * d + g2 * two * dc * clamp_pass(diff, -eps, eps)
    } else {
        S::from_f64(2.0) * d
    };
    *d_value += scale * c.value_coef * dv;
    Ok(t)
}

/// Generalised advantage estimation (Schulman et al. 2016, as BabyAI's and rl-starter-files'
/// `BaseAlgo.collect_experiences`): `values` from the critic while acting, `rewards`, `dones`
/// where episodes ended (nothing is bootstrapped across them), `bootstrap` the critic's value
/// after the last step. Writes the advantages into `adv`; over the shortest of the four slices
/// (extra elements are ignored). The trainer's rollouts and the device's adaptation windows
/// both use it.
pub fn gae(
    values: &[f32],
    rewards: &[f32],
    dones: &[bool],
    bootstrap: f32,
    (gamma, lambda): (f32, f32),
    adv: &mut [f32],
) {
    let n = values
        .len()
        .min(rewards.len())
        .min(dones.len())
        .min(adv.len());
    let mut last = 0.0f32;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { bootstrap };
        let nonterminal = if dones[t] { 0.0 } else { 1.0 };
        let delta = rewards[t] + gamma * next_value * nonterminal - values[t];
        last = delta + gamma * lambda * nonterminal * last;
        adv[t] = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{max_rel_error, GRAD_TOL};
    use proptest::prelude::*;

    /// Loss as a function of `[logits..., value]`.
    fn total(x: &[f64], s: &PpoSample<f64>, c: &PpoCoefs<f64>) -> f64 {
        let n = x.len() - 1;
        ppo_terms(&x[..n], x[n], s, c).unwrap().loss
    }

    /// Analytic gradient `[d_logits..., d_value]` with scale 1.
    fn grad(x: &[f64], s: &PpoSample<f64>, c: &PpoCoefs<f64>) -> Vec<f64> {
        let n = x.len() - 1;
        let mut g = vec![0.0; n + 1];
        let mut dv = 0.0;
        ppo_loss(&x[..n], x[n], s, c, 1.0, &mut g[..n], &mut dv).unwrap();
        g[n] = dv;
        g
    }

    /// True when the point is within `m` of a kink (clamp bounds, min/max switch).
    fn near_kink(x: &[f64], s: &PpoSample<f64>, c: &PpoCoefs<f64>, m: f64) -> bool {
        let n = x.len() - 1;
        let t = ppo_terms(&x[..n], x[n], s, c).unwrap();
        let eps = c.clip_eps;
        let r = t.ratio;
        if (r - (1.0 - eps)).abs() < m * r.max(1.0) || (r - (1.0 + eps)).abs() < m * r.max(1.0) {
            return true;
        }
        if c.clip_value {
            let diff = x[n] - s.old_value;
            if (diff - eps).abs() < m || (diff + eps).abs() < m {
                return true;
            }
            let vc = s.old_value + diff.clamp(-eps, eps);
            let (a, b) = ((x[n] - s.ret).powi(2), (vc - s.ret).powi(2));
            if diff.abs() > eps && (a - b).abs() < m * a.max(b).max(1.0) * 10.0 {
                return true;
            }
        }
        false
    }

    fn coefs(clip_value: bool) -> PpoCoefs<f64> {
        PpoCoefs {
            clip_value,
            ..PpoCoefs::babyai()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn gradients_match_finite_differences(
            logits in proptest::collection::vec(-3.0f64..3.0, 2..8),
            action_pick in 0usize..8,
            shift in -0.5f64..0.5,
            value in -2.0f64..2.0,
            old_value in -2.0f64..2.0,
            adv in -2.0f64..2.0,
            ret in -2.0f64..2.0,
            clip_value in any::<bool>(),
        ) {
            let n = logits.len();
            let action = action_pick % n;
            let c = coefs(clip_value);
            let mut x = logits.clone();
            x.push(value);
            let logp = ppo_terms(&logits, value, &PpoSample {
                action, old_logprob: 0.0, old_value, advantage: adv, ret }, &c).unwrap().logprob;
            // Ratio exp(-shift) spans both clip bounds.
            let s = PpoSample { action, old_logprob: logp + shift, old_value, advantage: adv, ret };
            prop_assume!(!near_kink(&x, &s, &c, 1e-4));
            let g = grad(&x, &s, &c);
            let (e, i) = max_rel_error(|v| total(v, &s, &c), &x, &g, 1e-5, 1e-4);
            prop_assert!(e < GRAD_TOL, "rel error {} at {}", e, i);
        }
    }

    #[test]
    fn checks_can_fail_and_scale_accumulates() {
        let c = coefs(true);
        let x = [0.3, -1.2, 0.8, 0.1, 0.5];
        let s = PpoSample {
            action: 2,
            old_logprob: -1.0,
            old_value: 0.2,
            advantage: 0.7,
            ret: 1.1,
        };
        assert!(!near_kink(&x, &s, &c, 1e-4));
        let g = grad(&x, &s, &c);
        assert!(max_rel_error(|v| total(v, &s, &c), &x, &g, 1e-5, 1e-4).0 < GRAD_TOL);
        for i in 0..x.len() {
            let mut bad = g.clone();
            bad[i] += 1e-3;
            assert!(max_rel_error(|v| total(v, &s, &c), &x, &bad, 1e-5, 1e-4).0 > GRAD_TOL);
        }
        // scale multiplies, and calls accumulate.
        let mut dl = [1.0; 4];
        let mut dv = 1.0;
        ppo_loss(&x[..4], x[4], &s, &c, 0.25, &mut dl, &mut dv).unwrap();
        for i in 0..4 {
            assert!((dl[i] - (1.0 + 0.25 * g[i])).abs() < 1e-15);
        }
        assert!((dv - (1.0 + 0.25 * g[4])).abs() < 1e-15);
    }

    #[test]
    fn matches_hand_computed_terms() {
        // Two actions, logits equal: p = 1/2, entropy ln 2, logp = -ln 2.
        let c = coefs(true);
        let s = PpoSample {
            action: 0,
            old_logprob: -core::f64::consts::LN_2 - 0.5, // ratio = e^0.5 > 1.2
            old_value: 0.0,
            advantage: 2.0,
            ret: 1.0,
        };
        let t = ppo_terms(&[0.0, 0.0], 0.5, &s, &c).unwrap();
        assert!((t.entropy - core::f64::consts::LN_2).abs() < 1e-15);
        let r = 0.5f64.exp();
        assert!((t.ratio - r).abs() < 1e-14);
        assert!((t.policy_loss + 1.2 * 2.0).abs() < 1e-14); // min(r A, 1.2 A) = 1.2 A
                                                            // v - old = 0.5 > 0.2 -> v_clipped = 0.2; max((0.5-1)^2, (0.2-1)^2) = 0.64.
        assert!((t.value_loss - 0.64).abs() < 1e-14);
        assert!((t.loss - (-2.4 - 0.01 * core::f64::consts::LN_2 + 0.5 * 0.64)).abs() < 1e-14);
        assert_eq!(t.clipped, 1.0);
        assert!((t.approx_kl - ((r - 1.0) - 0.5)).abs() < 1e-14);
        assert!((t.logprob_diff + 0.5).abs() < 1e-15);
        // Clipped ratio and clipped value: the policy gradient is zero (only entropy remains),
        // the value gradient flows through neither branch (clamped branch selected).
        let mut dl = [0.0; 2];
        let mut dv = 0.0;
        ppo_loss(&[0.0, 0.0], 0.5, &s, &c, 1.0, &mut dl, &mut dv).unwrap();
        assert_eq!(dv, 0.0);
        // Equal logits: entropy is at its maximum, its gradient is zero too.
        assert!(dl.iter().all(|g| g.abs() < 1e-15));
        // Value clipping off: 2 (v - R) * value_coef.
        let mut dv = 0.0;
        ppo_loss(&[0.0, 0.0], 0.5, &s, &coefs(false), 1.0, &mut dl, &mut dv).unwrap();
        assert!((dv - 0.5 * 2.0 * (0.5 - 1.0)).abs() < 1e-15);
    }

    /// A sample of `action` with old log-probability and value 0, advantage and return 1.
    fn unit_sample(action: usize) -> PpoSample<f64> {
        PpoSample {
            action,
            old_logprob: 0.0,
            old_value: 0.0,
            advantage: 1.0,
            ret: 1.0,
        }
    }

    #[test]
    fn kinks_follow_pytorch() {
        let c = coefs(true);
        // Value exactly on the clamp bound (diff == eps): clamp passes the gradient, surr1 and
        // surr2 tie, so d/dv = value_coef * 2 (v - R).
        let s = unit_sample(0);
        let mut dl = [0.0; 3];
        let mut dv = 0.0;
        ppo_loss(&[0.1, 0.2, 0.3], 0.2, &s, &c, 1.0, &mut dl, &mut dv).unwrap();
        assert!((dv - 0.5 * 2.0 * (0.2 - 1.0)).abs() < 1e-15);
        // Ratio exactly 1 (logp == old_logp): in range, d policy / d logp = -A.
        let logits = [0.1, 0.2, 0.3];
        let logp = ppo_terms(&logits, 0.0, &s, &c).unwrap().logprob;
        let s1 = PpoSample {
            old_logprob: logp,
            ..s
        };
        let c0 = PpoCoefs {
            entropy_coef: 0.0,
            ..c
        };
        let mut dl = [0.0; 3];
        let mut dv = 0.0;
        let t = ppo_loss(&logits, 1.0, &s1, &c0, 1.0, &mut dl, &mut dv).unwrap();
        assert_eq!(t.ratio, 1.0);
        assert_eq!(t.clipped, 0.0);
        let mut ls = [0.0; 3];
        crate::nn::ops::log_softmax(&logits, &mut ls);
        for i in 0..3 {
            let ind = if i == 0 { 1.0 } else { 0.0 };
            assert!((dl[i] + (ind - ls[i].exp())).abs() < 1e-15);
        }
    }

    #[test]
    fn errors_instead_of_panics() {
        let c = coefs(true);
        let s = unit_sample(3);
        assert_eq!(
            ppo_terms(&[0.0, 1.0, 2.0], 0.0, &s, &c),
            Err(Error::BadAction(3))
        );
        assert!(ppo_terms::<f64>(&[], 0.0, &s, &c).is_err());
        let mut dl = [0.0; 3];
        let mut dv = 0.0;
        let s0 = PpoSample { action: 0, ..s };
        assert!(ppo_loss(&[0.0; 4], 0.0, &s0, &c, 1.0, &mut dl, &mut dv).is_err());
        // f32 works and stays finite for large logits.
        let c32 = PpoCoefs::<f32>::babyai();
        let s32 = PpoSample {
            action: 1,
            old_logprob: -0.5f32,
            old_value: 0.0,
            advantage: 1.0,
            ret: 0.5,
        };
        let mut dl = [0.0f32; 3];
        let mut dv = 0.0f32;
        let t = ppo_loss(
            &[80.0f32, -80.0, 0.0],
            0.3,
            &s32,
            &c32,
            1.0,
            &mut dl,
            &mut dv,
        )
        .unwrap();
        assert!(t.loss.is_finite() && dl.iter().all(|g| g.is_finite()) && dv.is_finite());
    }
}
