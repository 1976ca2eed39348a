//! Central finite differences for gradient checks (f64), used by the tests of every block.

/// Largest relative error between `analytic` and the central-difference gradient of `f` at `x`,
/// with step `h`; relative to `max(|a|, |n|, floor)` so that near-zero gradients compare
/// absolutely at `floor`.
pub fn max_rel_error(
    mut f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    h: f64,
    floor: f64,
) -> (f64, usize) {
    let mut xs = [0.0f64; 4096];
    let n = x.len().min(xs.len());
    xs[..n].copy_from_slice(&x[..n]);
    let mut worst = (0.0f64, 0usize);
    for i in 0..n {
        let orig = xs[i];
        xs[i] = orig + h;
        let fp = f(&xs[..n]);
        xs[i] = orig - h;
        let fm = f(&xs[..n]);
        xs[i] = orig;
        let num = (fp - fm) / (2.0 * h);
        let a = analytic.get(i).copied().unwrap_or(0.0);
        let denom = a.abs().max(num.abs()).max(floor);
        let err = (a - num).abs() / denom;
        if err > worst.0 {
            worst = (err, i);
        }
    }
    worst
}

/// Like [`max_rel_error`], with the difference quotient Richardson-extrapolated,
/// `(4 D(h/2) - D(h)) / 3` where `D(h)` is the central difference: truncation error O(h^4), so a
/// step large enough to keep rounding noise far below the tolerance stays accurate. Callers must
/// keep every kink farther than about `h` times the input scale from the point.
pub fn max_rel_error_richardson(
    mut f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    h: f64,
    floor: f64,
) -> (f64, usize) {
    let mut xs = [0.0f64; 4096];
    let n = x.len().min(xs.len());
    xs[..n].copy_from_slice(&x[..n]);
    let mut worst = (0.0f64, 0usize);
    for i in 0..n {
        let orig = xs[i];
        let mut central = |step: f64, xs: &mut [f64; 4096]| {
            xs[i] = orig + step;
            let fp = f(&xs[..n]);
            xs[i] = orig - step;
            let fm = f(&xs[..n]);
            xs[i] = orig;
            (fp - fm) / (2.0 * step)
        };
        let d1 = central(h, &mut xs);
        let d2 = central(h / 2.0, &mut xs);
        let num = (4.0 * d2 - d1) / 3.0;
        let a = analytic.get(i).copied().unwrap_or(0.0);
        let denom = a.abs().max(num.abs()).max(floor);
        let err = (a - num).abs() / denom;
        if err > worst.0 {
            worst = (err, i);
        }
    }
    worst
}
