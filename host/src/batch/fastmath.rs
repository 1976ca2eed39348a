//! Branch-free `exp`, `sigmoid` and `tanh` for the batched CPU paths' `f32` activations.
//!
//! libm's scalar functions cost a call and a few branches per element; the batched paths apply
//! activations to whole rows, where these straight-line versions inline and vectorise. They are
//! plain `f32` arithmetic in a fixed order (no FMA contraction, no lookup tables), so every
//! machine computes the same bits. Accuracy (checked below against `f64`): `exp` within 2 ulp on
//! its range, `sigmoid` and `tanh` within 3e-7 absolute and 1e-6 relative away from 0.
//! `f64` keeps libm's functions (the parity tests compare in `f64`).

/// `e^x` for `x` in `[-87.3, 88.3]` (clamped outside: no infinities, no denormals).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer (ties to even).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor to r^7 on |r| <= ln2 / 2 (truncation below 2e-9 relative).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n without a float-to-int conversion (which does not vectorise): in `n + 2^23 + 127`
    // the low mantissa bits hold the biased exponent n + 127, in [1, 254].
    let biased = (n + 8_388_735.0).to_bits().wrapping_sub(0x4B00_0000);
    let bits = biased << 23;
    p * f32::from_bits(bits)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh(x)`: an odd polynomial near 0, `(1 - e) / (1 + e)` with `e = e^(-2|x|)` elsewhere.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let e = exp_f32(-2.0 * a);
    let far = (1.0 - e) / (1.0 + e);
    let x2 = x * x;
    // tanh x = x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - ..., |x| < 0.25.
    let near = x
        * (1.0
            + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    if a < 0.25 {
        near
    } else {
        far.copysign(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 4.4e-4)
    }

    #[test]
    fn exp_is_within_two_ulp() {
        for x in grid()
            .filter(|x| (-87.3..=88.3).contains(x))
            .chain([-87.0, 88.0, 0.0, 1e-30])
        {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let ulp = (want as f32).abs() * f32::EPSILON;
            assert!(
                (got - want).abs() <= 2.0 * ulp as f64,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(1000.0).is_finite());
    }

    #[test]
    fn sigmoid_and_tanh_are_accurate() {
        for x in grid() {
            let xd = x as f64;
            let s = 1.0 / (1.0 + (-xd).exp());
            let t = xd.tanh();
            let (gs, gt) = (sigmoid_f32(x) as f64, tanh_f32(x) as f64);
            assert!(
                (gs - s).abs() <= 3e-7 && (gs - s).abs() <= 1e-6 * s.abs().max(1e-30) + 3e-8,
                "sigmoid({x}) = {gs}, want {s}"
            );
            assert!(
                (gt - t).abs() <= 3e-7 && (gt - t).abs() <= 1e-6 * t.abs() + 1e-12,
                "tanh({x}) = {gt}, want {t}"
            );
        }
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!(tanh_f32(-50.0), -1.0);
        assert_eq!(sigmoid_f32(-200.0).max(0.0), sigmoid_f32(-200.0));
    }
}
