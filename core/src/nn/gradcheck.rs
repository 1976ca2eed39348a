//! Finite differences for gradient checks (f64), used by the tests of every block, with the
//! tolerance they share and their random inputs.

use crate::rng::Pcg32;

/// The largest relative error a block's f64 gradient check accepts.
pub const GRAD_TOL: f64 = 1e-6;

/// `n` values uniform in `[-scale, scale)`: random parameters, inputs and loss weights for the
/// gradient checks.
pub fn uniform_vec(rng: &mut Pcg32, n: usize, scale: f64) -> std::vec::Vec<f64> {
    (0..n)
        .map(|_| (rng.gen_f64() * 2.0 - 1.0) * scale)
        .collect()
}

/// Largest relative error between `analytic` and the difference quotient of `f` at `x`, and
/// the index where it occurs, over every coordinate of `x`. Errors are relative to
/// `max(|a|, |n|, floor)`, so near-zero gradients compare absolutely at `floor`.
fn worst_error(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    h: f64,
    floor: f64,
    richardson: bool,
) -> (f64, usize) {
    checked_error(f, x, analytic, h, floor, richardson, false).unwrap_or((f64::INFINITY, 0))
}

/// [`worst_error`], and with `smooth_only` `None` when some coordinate's two difference
/// quotients (steps `h` and `h / 2`) disagree by more than a relative 1e-3: the loss jumps
/// within `h` of the point there (a discrete choice such as a top-k selection flipped), so no
/// difference quotient measures its gradient.
fn checked_error(
    mut f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    h: f64,
    floor: f64,
    richardson: bool,
    smooth_only: bool,
) -> Option<(f64, usize)> {
    assert_eq!(
        analytic.len(),
        x.len(),
        "one analytic gradient per coordinate"
    );
    let mut xs = x.to_vec();
    let mut worst = (0.0f64, 0usize);
    for i in 0..xs.len() {
        let orig = xs[i];
        let mut central = |step: f64| {
            xs[i] = orig + step;
            let fp = f(&xs);
            xs[i] = orig - step;
            let fm = f(&xs);
            xs[i] = orig;
            (fp - fm) / (2.0 * step)
        };
        let num = if richardson {
            let d1 = central(h);
            let d2 = central(h / 2.0);
            if smooth_only && (d1 - d2).abs() > 1e-3 * d1.abs().max(d2.abs()).max(floor) {
                return None;
            }
            (4.0 * d2 - d1) / 3.0
        } else {
            central(h)
        };
        let a = analytic[i];
        let err = (a - num).abs() / a.abs().max(num.abs()).max(floor);
        if err > worst.0 {
            worst = (err, i);
        }
    }
    Some(worst)
}

/// Largest relative error between `analytic` and the central-difference gradient of `f` at `x`
/// with step `h` (see [`worst_error`] for the relative measure), and its index.
pub fn max_rel_error(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    h: f64,
    floor: f64,
) -> (f64, usize) {
    worst_error(f, x, analytic, h, floor, false)
}

/// Like [`max_rel_error`], with the difference quotient Richardson-extrapolated,
/// `(4 D(h/2) - D(h)) / 3` where `D(h)` is the central difference: truncation error O(h^4), so a
/// step large enough to keep rounding noise far below the tolerance stays accurate. Callers must
/// keep every kink farther than about `h` times the input scale from the point.
///
/// `None` when the loss is not smooth within `h` of the
/// point along some coordinate (its difference quotients at `h` and `h / 2` disagree by more
/// than a relative 1e-3): a kink that a caller's margin check missed. The caller then takes
/// another point; a wrong analytic gradient does not change that test, so it still fails on
/// the smooth points.
pub fn max_rel_error_richardson_smooth(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    h: f64,
    floor: f64,
) -> Option<(f64, usize)> {
    checked_error(f, x, analytic, h, floor, true, true)
}
