//! Optimisers over flat parameter slices: Adam (as `torch.optim.Adam`), plain SGD, their masked
//! variants that update only given `(offset, len)` ranges, and global gradient-norm clipping (as
//! `torch.nn.utils.clip_grad_norm_`).
//!
//! Masked updates are how the device adapts only the fast parameters of the RIM modules that
//! were active in a chunk: elements outside the ranges (parameters and optimiser state alike) are
//! not touched, so they stay bit-identical.
//!
//! Invariants: no heap; every length and range is checked before anything is written (an error
//! leaves all buffers and the step count unchanged); overlapping ranges are an error (an element
//! would otherwise be updated twice); nothing panics.

use crate::error::{check_len, Error};
use crate::nn::scalar::Real;

/// A parameter range `(offset, len)` into a flat buffer.
pub type Range = (usize, usize);

/// Check that every range lies inside `n` elements and that no two overlap.
pub fn check_ranges(n: usize, ranges: &[Range]) -> Result<(), Error> {
    for (i, &(off, len)) in ranges.iter().enumerate() {
        let end = off.checked_add(len).ok_or(Error::BadDims {
            what: "optimizer range end overflows",
        })?;
        check_len(n, end)?;
        for &(o2, l2) in ranges.iter().skip(i + 1) {
            // Both ends are checked (or about to be); saturating keeps this panic-free.
            let e2 = o2.saturating_add(l2);
            if len > 0 && l2 > 0 && off < e2 && o2 < end {
                return Err(Error::BadDims {
                    what: "optimizer ranges overlap",
                });
            }
        }
    }
    Ok(())
}

/// Adam with PyTorch's update (`torch.optim.Adam`, no weight decay, no AMSGrad, the
/// single-tensor path of torch 2.x):
///
/// ```text
/// t += 1
/// m = lerp(m, g, 1 - beta1)            = m + (1 - beta1) (g - m)
/// v = beta2 v + (1 - beta2) g^2
/// step_size = lr / (1 - beta1^t)                  (in f64, like Python floats)
/// denom     = sqrt(v) / sqrt(1 - beta2^t) + eps
/// p = p - step_size * m / denom
/// ```
///
/// The first and second moments `m`, `v` are caller-owned buffers parallel to the parameters
/// (zero-initialised).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Steps taken so far (the next [`Adam::step_ranges`] uses `t + 1`).
    pub t: u64,
}

impl Adam {
    /// A fresh optimiser (`t = 0`).
    pub const fn new(lr: f64, beta1: f64, beta2: f64, eps: f64) -> Self {
        Adam {
            lr,
            beta1,
            beta2,
            eps,
            t: 0,
        }
    }

    /// BabyAI 1.0's settings: lr 1e-4, betas (0.9, 0.999), eps 1e-5.
    pub const fn babyai() -> Self {
        Adam::new(1e-4, 0.9, 0.999, 1e-5)
    }

    /// One step on the elements in `ranges` only (step count `t + 1`, shared by all ranges);
    /// everything else in `params`, `m` and `v` stays bit-identical. `&[(0, params.len())]`
    /// steps every parameter.
    pub fn step_ranges<S: Real>(
        &mut self,
        params: &mut [S],
        grads: &[S],
        m: &mut [S],
        v: &mut [S],
        ranges: &[Range],
    ) -> Result<(), Error> {
        let t = self.t.checked_add(1).ok_or(Error::BadDims {
            what: "adam step count overflows",
        })?;
        self.update_ranges_at(t, params, grads, m, v, ranges)?;
        self.t = t;
        Ok(())
    }

    /// The update of step `t` (>= 1) on the elements in `ranges`, without touching `self.t`: for
    /// callers that keep a step count per range (e.g. one per RIM module, counting only the
    /// chunks in which it was active, like PyTorch's per-parameter `step` when inactive
    /// parameters have no gradient).
    pub fn update_ranges_at<S: Real>(
        &self,
        t: u64,
        params: &mut [S],
        grads: &[S],
        m: &mut [S],
        v: &mut [S],
        ranges: &[Range],
    ) -> Result<(), Error> {
        if t == 0 {
            return Err(Error::BadDims {
                what: "adam step count must be >= 1",
            });
        }
        let n = params.len();
        check_len(grads.len(), n)?;
        check_len(m.len(), n)?;
        check_len(v.len(), n)?;
        check_ranges(n, ranges)?;
        let tf = t as f64;
        let bc1 = 1.0 - libm::pow(self.beta1, tf);
        let bc2 = 1.0 - libm::pow(self.beta2, tf);
        let neg_step = S::from_f64(-(self.lr / bc1));
        let bc2_sqrt = S::from_f64(libm::sqrt(bc2));
        let w1 = S::from_f64(1.0 - self.beta1);
        let b2 = S::from_f64(self.beta2);
        let w2 = S::from_f64(1.0 - self.beta2);
        let eps = S::from_f64(self.eps);
        for &(off, len) in ranges {
            let r = off..off + len;
            let it = params[r.clone()]
                .iter_mut()
                .zip(&grads[r.clone()])
                .zip(m[r.clone()].iter_mut().zip(v[r].iter_mut()));
            for ((p, g), (mi, vi)) in it {
                let g = *g;
                *mi += w1 * (g - *mi);
                *vi = b2 * *vi + w2 * g * g;
                let denom = vi.sqrt() / bc2_sqrt + eps;
                *p += neg_step * *mi / denom;
            }
        }
        Ok(())
    }
}

/// Plain SGD (`torch.optim.SGD` without momentum): `p = p - lr * g`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
}

impl Sgd {
    /// One step on all of `params`.
    pub fn step<S: Real>(&self, params: &mut [S], grads: &[S]) -> Result<(), Error> {
        let n = params.len();
        self.step_ranges(params, grads, &[(0, n)])
    }

    /// One step on the elements in `ranges` only; everything else stays bit-identical.
    pub fn step_ranges<S: Real>(
        &self,
        params: &mut [S],
        grads: &[S],
        ranges: &[Range],
    ) -> Result<(), Error> {
        let n = params.len();
        check_len(grads.len(), n)?;
        check_ranges(n, ranges)?;
        let neg_lr = S::from_f64(-self.lr);
        for &(off, len) in ranges {
            let r = off..off + len;
            for (p, g) in params[r.clone()].iter_mut().zip(&grads[r]) {
                *p += neg_lr * *g;
            }
        }
        Ok(())
    }
}

/// Global L2 norm over several gradient slices: `sqrt(sum of squares)` (accumulated in `S`).
pub fn grad_norm<S: Real>(grads: &[&[S]]) -> S {
    let mut ss = S::ZERO;
    for g in grads {
        for x in g.iter() {
            ss += *x * *x;
        }
    }
    ss.sqrt()
}

/// `clip_grad_norm_`'s scale factor: `min(1, max_norm / (total_norm + 1e-6))`.
pub fn clip_coef<S: Real>(total_norm: S, max_norm: S) -> S {
    let c = max_norm / (total_norm + S::from_f64(1e-6));
    c.min(S::ONE)
}

/// `torch.nn.utils.clip_grad_norm_` over several slices: when the global norm exceeds
/// `max_norm`, scale every gradient by [`clip_coef`] (the result's norm is then just below
/// `max_norm`). Returns the norm before clipping. A non-finite norm propagates into the
/// gradients as it does in PyTorch (no error is raised).
pub fn clip_grad_norm<S: Real>(grads: &mut [&mut [S]], max_norm: S) -> S {
    let mut ss = S::ZERO;
    for g in grads.iter() {
        for x in g.iter() {
            ss += *x * *x;
        }
    }
    let total = ss.sqrt();
    let c = clip_coef(total, max_norm);
    // A coefficient of exactly 1 leaves the gradients unchanged; skip the multiply.
    if c != S::ONE {
        for g in grads.iter_mut() {
            g.iter_mut().for_each(|x| *x *= c);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Pcg32;
    use proptest::prelude::*;

    #[test]
    fn adam_matches_torch_two_steps() {
        // Hand-computed with torch.optim.Adam's formula (lr 0.1, betas (0.9, 0.999), eps 1e-8),
        // p0 = 1, g1 = 0.5, g2 = -0.25:
        // step 1: m = 0.05, v = 0.00025, step_size = 0.1 / 0.1 = 1,
        //         denom = sqrt(0.00025) / sqrt(0.001) + 1e-8 = 0.5 + 1e-8, p = 1 - 0.05 / denom.
        // step 2: m = 0.02, v = 0.00031225, step_size = 0.1 / 0.19,
        //         denom = sqrt(0.00031225) / sqrt(0.001999) + 1e-8.
        let mut adam = Adam::new(0.1, 0.9, 0.999, 1e-8);
        let mut p = [1.0f64, 2.0];
        let (mut m, mut v) = ([0.0; 2], [0.0; 2]);
        adam.step_ranges(&mut p, &[0.5, 0.0], &mut m, &mut v, &[(0, 2)])
            .unwrap();
        let p1 = 1.0 - 0.05 / (0.5 + 1e-8);
        assert!((p[0] - p1).abs() < 1e-14);
        assert!((p[0] - 0.900000002).abs() < 1e-14);
        assert!((m[0] - 0.05).abs() < 1e-16 && (v[0] - 0.00025).abs() < 1e-18);
        assert_eq!(p[1], 2.0); // zero gradient, zero moments: no move
        adam.step_ranges(&mut p, &[-0.25, 0.0], &mut m, &mut v, &[(0, 2)])
            .unwrap();
        let denom = (0.00031225f64).sqrt() / (0.001999f64).sqrt() + 1e-8;
        let p2 = p1 - (0.1 / 0.19) * 0.02 / denom;
        assert!((p[0] - p2).abs() < 1e-12, "{} vs {}", p[0], p2);
        assert!((p[0] - 0.8733662987078463).abs() < 1e-12);
        assert!((m[0] - 0.02).abs() < 1e-15 && (v[0] - 0.00031225).abs() < 1e-17);
        assert_eq!(adam.t, 2);
    }

    #[test]
    fn masked_adam_leaves_other_ranges_bit_identical() {
        let mut rng = Pcg32::new(77);
        let n = 40;
        let rnd =
            |rng: &mut Pcg32| -> Vec<f32> { (0..n).map(|_| rng.gen_f32() * 2.0 - 1.0).collect() };
        let (p0, g, m0) = (rnd(&mut rng), rnd(&mut rng), rnd(&mut rng));
        let v0: Vec<f32> = rnd(&mut rng).iter().map(|x| x.abs()).collect();
        let ranges = [(3usize, 5usize), (20, 7), (39, 1), (10, 0)];
        let inside = |i: usize| ranges.iter().any(|&(o, l)| i >= o && i < o + l);
        let mut a = Adam::babyai();
        a.t = 5;
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        a.step_ranges(&mut p, &g, &mut m, &mut v, &ranges).unwrap();
        // The unmasked update, for comparison inside the ranges.
        let mut full = Adam::babyai();
        full.t = 5;
        let (mut pf, mut mf, mut vf) = (p0.clone(), m0.clone(), v0.clone());
        full.step_ranges(&mut pf, &g, &mut mf, &mut vf, &[(0, 40)])
            .unwrap();
        for i in 0..n {
            if inside(i) {
                assert_eq!(p[i].to_bits(), pf[i].to_bits());
                assert_eq!(m[i].to_bits(), mf[i].to_bits());
                assert_ne!(p[i], p0[i]);
            } else {
                assert_eq!(p[i].to_bits(), p0[i].to_bits());
                assert_eq!(m[i].to_bits(), m0[i].to_bits());
                assert_eq!(v[i].to_bits(), v0[i].to_bits());
            }
        }
        // SGD likewise.
        let mut ps = p0.clone();
        Sgd { lr: 0.5 }.step_ranges(&mut ps, &g, &ranges).unwrap();
        for i in 0..n {
            if inside(i) {
                assert_eq!(ps[i], p0[i] - 0.5 * g[i]);
            } else {
                assert_eq!(ps[i].to_bits(), p0[i].to_bits());
            }
        }
    }

    #[test]
    fn bad_ranges_and_lengths_change_nothing() {
        let mut a = Adam::babyai();
        let mut p = [1.0f64; 8];
        let (mut m, mut v) = ([0.0; 8], [0.0; 8]);
        let g = [1.0; 8];
        for bad in [
            &[(6usize, 3usize)][..],
            &[(0, 4), (3, 2)][..],
            &[(usize::MAX, 2)][..],
        ] {
            assert!(a.step_ranges(&mut p, &g, &mut m, &mut v, bad).is_err());
            assert!(Sgd { lr: 1.0 }.step_ranges(&mut p, &g, bad).is_err());
        }
        assert!(a.step_ranges(&mut p, &g[..7], &mut m, &mut v, &[]).is_err());
        assert!(a.step_ranges(&mut p, &g, &mut m[..7], &mut v, &[]).is_err());
        assert!(a
            .update_ranges_at(0, &mut p, &g, &mut m, &mut v, &[])
            .is_err());
        assert_eq!(a.t, 0);
        assert_eq!(p, [1.0; 8]);
        assert_eq!(m, [0.0; 8]);
        // Adjacent ranges are fine.
        a.step_ranges(&mut p, &g, &mut m, &mut v, &[(0, 4), (4, 4)])
            .unwrap();
        assert_eq!(a.t, 1);
    }

    #[test]
    fn clip_matches_torch_formula() {
        let mut a = [3.0f64, 0.0];
        let mut b = [4.0f64];
        let total = clip_grad_norm(&mut [&mut a[..], &mut b[..]], 1.0);
        assert_eq!(total, 5.0);
        let c = 1.0 / (5.0 + 1e-6);
        assert_eq!(a, [3.0 * c, 0.0]);
        assert_eq!(b, [4.0 * c]);
        // Below the threshold: untouched.
        let mut a = [0.3f64, 0.4];
        assert_eq!(clip_grad_norm(&mut [&mut a[..]], 1.0), 0.5);
        assert_eq!(a, [0.3, 0.4]);
        assert_eq!(grad_norm::<f32>(&[]), 0.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn clipped_norm_is_at_most_max(
            a in proptest::collection::vec(-100.0f64..100.0, 0..20),
            b in proptest::collection::vec(-100.0f64..100.0, 0..20),
            c in proptest::collection::vec(-1.0f64..1.0, 0..5),
            max_norm in 0.01f64..50.0,
        ) {
            let (mut a, mut b, mut c) = (a, b, c);
            let before = grad_norm(&[&a[..], &b[..], &c[..]]);
            let total = clip_grad_norm(&mut [&mut a[..], &mut b[..], &mut c[..]], max_norm);
            prop_assert_eq!(before, total);
            let after = grad_norm(&[&a[..], &b[..], &c[..]]);
            prop_assert!(after <= max_norm, "{} > {}", after, max_norm);
            if before <= max_norm {
                prop_assert!((after - before).abs() <= 1e-6 * before.max(1.0));
            }
        }

        #[test]
        fn masked_sgd_random_ranges(
            n in 1usize..30,
            cuts in proptest::collection::vec(0usize..30, 0..6),
        ) {
            // Disjoint ranges from sorted cut points: [c0, c1), [c2, c3), ...
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (n + 1)).collect();
            cuts.sort_unstable();
            let ranges: Vec<Range> = cuts.chunks_exact(2).map(|w| (w[0], w[1] - w[0])).collect();
            let p0: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let g = vec![1.0f64; n];
            let mut p = p0.clone();
            Sgd { lr: 0.25 }.step_ranges(&mut p, &g, &ranges).unwrap();
            for i in 0..n {
                let inside = ranges.iter().any(|&(o, l)| i >= o && i < o + l);
                prop_assert_eq!(p[i], if inside { p0[i] - 0.25 } else { p0[i] });
            }
        }
    }
}
