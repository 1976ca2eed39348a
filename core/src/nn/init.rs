//! Deterministic parameter initialisation from a seed ([`Pcg32`]).
//!
//! Invariants:
//! - Every sampler is a pure function of the generator's state: the same seed gives bit-identical
//!   parameters on every platform (uniforms from [`Pcg32::gen_f64`], transcendental functions from
//!   `libm`, arithmetic in f64, one rounding to `S` at the end).
//! - No heap: the orthogonal initialiser works in place in its output buffer.
//! - Nothing panics: buffer sizes are checked up front and reported as [`Error`].
//!
//! Schemes ([`WeightInit`]) and which layer uses which by default ([`InitConfig::BABYAI`]):
//! - Linear layers (actor, critic, and any dense layer of the encoder): [`WeightInit::UnitRows`],
//!   biases zero: BabyAI's and rl-starter-files' `init_params` (`weight.normal_(0, 1)`, then every
//!   row divided by its L2 norm; `bias.fill_(0)`).
//! - Recurrent weights (instruction GRU, RIM module cells): [`WeightInit::TorchDefault`], i.e. what
//!   those codebases get by leaving `nn.GRU` untouched: every weight and bias
//!   `U(-1/sqrt(H), 1/sqrt(H))`. [`WeightInit::Orthogonal`] is the common alternative; for
//!   recurrent matrices it is applied per gate block (see [`init_gate_weight`]), biases zero.
//! - Word embedding: [`WeightInit::StdNormal`] (PyTorch's `nn.Embedding` default `N(0, 1)`).
//!
//! Layer init functions ([`crate::nn::instr::instr_init`], [`crate::nn::heads::heads_init`]) draw
//! from the generator in parameter-layout order, each weight fully (row-major) then its bias.

use crate::error::Error;
use crate::nn::scalar::Real;
use crate::rng::Pcg32;

/// A weight-initialisation scheme.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightInit {
    /// `N(0, 1)` samples, then every row scaled to unit L2 norm (BabyAI / rl-starter-files Linear
    /// init). Biases zero.
    UnitRows,
    /// PyTorch's default for the layer: `U(-1/sqrt(fan), 1/sqrt(fan))` for weights and biases,
    /// where `fan` is the layer's PyTorch fan (in-features for `nn.Linear`, hidden size for
    /// `nn.GRU` / `nn.LSTM`).
    TorchDefault,
    /// `torch.nn.init.orthogonal_` with the given gain (per gate block for recurrent matrices).
    /// Biases zero.
    Orthogonal {
        /// Multiplies the orthogonal matrix.
        gain: f64,
    },
    /// `N(0, 1/fan)` (LeCun normal). Biases zero.
    ScaledNormal,
    /// `N(0, 1)` (PyTorch's `nn.Embedding` default). Biases zero.
    StdNormal,
    /// All zeros (weights and biases).
    Zeros,
}

/// Which scheme each kind of layer uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InitConfig {
    /// Dense layers (actor, critic, ...).
    pub linear: WeightInit,
    /// Recurrent cells (instruction GRU, RIM modules, LSTM baseline).
    pub recurrent: WeightInit,
    /// Word embedding table.
    pub embedding: WeightInit,
}

impl InitConfig {
    /// BabyAI / rl-starter-files: unit-norm rows for Linear, PyTorch defaults elsewhere.
    pub const BABYAI: InitConfig = InitConfig {
        linear: WeightInit::UnitRows,
        recurrent: WeightInit::TorchDefault,
        embedding: WeightInit::StdNormal,
    };
    /// Orthogonal recurrent weights (gain 1) with BabyAI's Linear init.
    pub const ORTHOGONAL_RNN: InitConfig = InitConfig {
        linear: WeightInit::UnitRows,
        recurrent: WeightInit::Orthogonal { gain: 1.0 },
        embedding: WeightInit::StdNormal,
    };
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig::BABYAI
    }
}

const TWO_PI: f64 = 2.0 * core::f64::consts::PI;

/// Box–Muller pair from two uniforms: `u1` in `(0, 1]`, `u2` in `[0, 1)`.
#[inline]
fn box_muller(rng: &mut Pcg32) -> (f64, f64) {
    let u1 = 1.0 - rng.gen_f64();
    let u2 = rng.gen_f64();
    let r = libm::sqrt(-2.0 * libm::log(u1));
    let a = TWO_PI * u2;
    (r * libm::cos(a), r * libm::sin(a))
}

/// One standard normal sample (Box–Muller, cosine branch; consumes two `gen_f64` draws).
#[inline]
pub fn normal(rng: &mut Pcg32) -> f64 {
    box_muller(rng).0
}

/// Fill `out` with `N(mean, std^2)` samples; both Box–Muller outputs are used, in order
/// (cosine then sine), a trailing odd element uses the cosine branch of a fresh pair.
pub fn fill_normal<S: Real>(rng: &mut Pcg32, mean: f64, std: f64, out: &mut [S]) {
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let (a, b) = box_muller(rng);
        if let [x, y] = pair {
            *x = S::from_f64(mean + std * a);
            *y = S::from_f64(mean + std * b);
        }
    }
    for x in pairs.into_remainder() {
        *x = S::from_f64(mean + std * normal(rng));
    }
}

/// Fill `out` with `U(lo, hi)` samples.
pub fn fill_uniform<S: Real>(rng: &mut Pcg32, lo: f64, hi: f64, out: &mut [S]) {
    for x in out.iter_mut() {
        *x = S::from_f64(lo + (hi - lo) * rng.gen_f64());
    }
}

/// Set `out` to zero.
pub fn zeros<S: Real>(out: &mut [S]) {
    out.iter_mut().for_each(|x| *x = S::ZERO);
}

/// Fill `out` with `N(0, 1/fan_in)` samples (LeCun normal; `fan_in` 0 is treated as 1).
pub fn scaled_normal<S: Real>(fan_in: usize, rng: &mut Pcg32, out: &mut [S]) {
    let std = 1.0 / libm::sqrt(fan_in.max(1) as f64);
    fill_normal(rng, 0.0, std, out);
}

/// `out[..rows * cols]` filled with `N(0, 1)` samples (the start of every matrix init here), or an
/// error when `rows * cols` overflows or exceeds `out.len()`.
fn gaussian_matrix<'a, S: Real>(
    rows: usize,
    cols: usize,
    rng: &mut Pcg32,
    out: &'a mut [S],
) -> Result<&'a mut [S], Error> {
    let n = check_matrix(rows, cols, out.len())?;
    let m = &mut out[..n];
    fill_normal(rng, 0.0, 1.0, m);
    Ok(m)
}

/// `rows * cols`, or an error when it overflows or exceeds `out_len`.
fn check_matrix(rows: usize, cols: usize, out_len: usize) -> Result<usize, Error> {
    let n = rows.checked_mul(cols).ok_or(Error::BadDims {
        what: "matrix size overflows",
    })?;
    if out_len < n {
        return Err(Error::BufferTooSmall {
            needed: n,
            got: out_len,
        });
    }
    Ok(n)
}

/// BabyAI's Linear init on a row-major `[rows x cols]` matrix in `out[..rows * cols]`:
/// `N(0, 1)` samples, each row divided by its L2 norm (a zero row stays zero).
pub fn normal_unit_rows<S: Real>(
    rows: usize,
    cols: usize,
    rng: &mut Pcg32,
    out: &mut [S],
) -> Result<(), Error> {
    let m = gaussian_matrix(rows, cols, rng, out)?;
    if cols == 0 {
        return Ok(());
    }
    for row in m.chunks_exact_mut(cols) {
        let mut ss = S::ZERO;
        for x in row.iter() {
            ss += *x * *x;
        }
        let norm = ss.sqrt();
        if norm > S::ZERO {
            for x in row.iter_mut() {
                *x = *x / norm;
            }
        }
    }
    Ok(())
}

/// `torch.nn.init.orthogonal_` on a row-major `[rows x cols]` matrix in `out[..rows * cols]`:
/// fill with `N(0, 1)`, orthonormalise the columns when `rows >= cols` (so `W^T W = I`) or the
/// rows when `rows < cols` (so `W W^T = I`), multiply by `gain`.
///
/// Orthonormalisation is modified Gram–Schmidt with one re-orthogonalisation pass ("twice is
/// enough"), in place. Gram–Schmidt yields the QR factor `Q` whose `R` has a positive diagonal,
/// which is exactly the sign correction `orthogonal_` applies (`q *= sign(diag(r))`), so the
/// result is the same function of the Gaussian sample as PyTorch's (not the same samples: the
/// generator differs). A vector that vanishes numerically (probability zero) is left zero.
pub fn orthogonal<S: Real>(
    rows: usize,
    cols: usize,
    gain: f64,
    rng: &mut Pcg32,
    out: &mut [S],
) -> Result<(), Error> {
    let m = gaussian_matrix(rows, cols, rng, out)?;
    // Vectors to orthonormalise: `count` of them, `len` long; element `e` of vector `v` is at
    // `v * vs + e * es`.
    let by_cols = rows >= cols;
    let (count, len, vs, es) = if by_cols {
        (cols, rows, 1, cols)
    } else {
        (rows, cols, cols, 1)
    };
    let at = |v: usize, e: usize| v * vs + e * es;
    for j in 0..count {
        for _pass in 0..2 {
            for k in 0..j {
                let mut dot = S::ZERO;
                for e in 0..len {
                    dot += m[at(j, e)] * m[at(k, e)];
                }
                for e in 0..len {
                    let q = m[at(k, e)];
                    m[at(j, e)] -= dot * q;
                }
            }
        }
        let mut ss = S::ZERO;
        for e in 0..len {
            ss += m[at(j, e)] * m[at(j, e)];
        }
        let norm = ss.sqrt();
        let tiny = S::from_f64(1e-30);
        for e in 0..len {
            let x = &mut m[at(j, e)];
            *x = if norm > tiny { *x / norm } else { S::ZERO };
        }
    }
    if gain != 1.0 {
        let g = S::from_f64(gain);
        m.iter_mut().for_each(|x| *x *= g);
    }
    Ok(())
}

/// Initialise a row-major `[rows x cols]` weight in `out[..rows * cols]` with `scheme`; `fan` is
/// the layer's PyTorch fan (used by [`WeightInit::TorchDefault`] and
/// [`WeightInit::ScaledNormal`]).
pub fn init_weight<S: Real>(
    scheme: WeightInit,
    rows: usize,
    cols: usize,
    fan: usize,
    rng: &mut Pcg32,
    out: &mut [S],
) -> Result<(), Error> {
    let n = check_matrix(rows, cols, out.len())?;
    let m = &mut out[..n];
    match scheme {
        WeightInit::UnitRows => normal_unit_rows(rows, cols, rng, m),
        WeightInit::TorchDefault => {
            let b = 1.0 / libm::sqrt(fan.max(1) as f64);
            fill_uniform(rng, -b, b, m);
            Ok(())
        }
        WeightInit::Orthogonal { gain } => orthogonal(rows, cols, gain, rng, m),
        WeightInit::ScaledNormal => {
            scaled_normal(fan, rng, m);
            Ok(())
        }
        WeightInit::StdNormal => {
            fill_normal(rng, 0.0, 1.0, m);
            Ok(())
        }
        WeightInit::Zeros => {
            zeros(m);
            Ok(())
        }
    }
}

/// Initialise a recurrent weight `[gates * hidden x cols]` (PyTorch GRU/LSTM layout): the
/// orthogonal scheme is applied to each `[hidden x cols]` gate block separately, every other
/// scheme to the whole matrix (identical to [`init_weight`] with `fan = hidden`).
pub fn init_gate_weight<S: Real>(
    scheme: WeightInit,
    gates: usize,
    hidden: usize,
    cols: usize,
    rng: &mut Pcg32,
    out: &mut [S],
) -> Result<(), Error> {
    let rows = gates.checked_mul(hidden).ok_or(Error::BadDims {
        what: "matrix size overflows",
    })?;
    let n = check_matrix(rows, cols, out.len())?;
    match scheme {
        WeightInit::Orthogonal { gain } => {
            let block = hidden.checked_mul(cols).ok_or(Error::BadDims {
                what: "matrix size overflows",
            })?;
            if block == 0 {
                return Ok(());
            }
            for b in out[..n].chunks_exact_mut(block) {
                orthogonal(hidden, cols, gain, rng, b)?;
            }
            Ok(())
        }
        _ => init_weight(scheme, rows, cols, hidden, rng, out),
    }
}

/// Initialise a bias: `U(-1/sqrt(fan), 1/sqrt(fan))` under [`WeightInit::TorchDefault`], zeros
/// under every other scheme.
pub fn init_bias<S: Real>(scheme: WeightInit, fan: usize, rng: &mut Pcg32, out: &mut [S]) {
    match scheme {
        WeightInit::TorchDefault => {
            let b = 1.0 / libm::sqrt(fan.max(1) as f64);
            fill_uniform(rng, -b, b, out);
        }
        _ => zeros(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// max |(W W^T or W^T W) - gain^2 I|.
    fn ortho_error(rows: usize, cols: usize, gain: f64, w: &[f64]) -> f64 {
        let mut worst = 0.0f64;
        let g2 = gain * gain;
        if rows >= cols {
            for a in 0..cols {
                for b in 0..cols {
                    let s: f64 = (0..rows).map(|i| w[i * cols + a] * w[i * cols + b]).sum();
                    let want = if a == b { g2 } else { 0.0 };
                    worst = worst.max((s - want).abs());
                }
            }
        } else {
            for a in 0..rows {
                for b in 0..rows {
                    let s: f64 = (0..cols).map(|i| w[a * cols + i] * w[b * cols + i]).sum();
                    let want = if a == b { g2 } else { 0.0 };
                    worst = worst.max((s - want).abs());
                }
            }
        }
        worst
    }

    #[test]
    fn orthogonal_is_orthogonal_for_all_shapes() {
        for &(r, c) in &[
            (1usize, 1usize),
            (5, 5),
            (64, 64),
            (192, 64),
            (64, 256),
            (3, 17),
            (17, 3),
        ] {
            let mut rng = Pcg32::new(11);
            let mut w = vec![0.0f64; r * c];
            orthogonal(r, c, 1.0, &mut rng, &mut w).unwrap();
            let e = ortho_error(r, c, 1.0, &w);
            assert!(e < 1e-10, "{r}x{c}: {e}");
        }
        let mut rng = Pcg32::new(12);
        let mut w = vec![0.0f64; 8 * 6];
        orthogonal(8, 6, 1.7, &mut rng, &mut w).unwrap();
        assert!(ortho_error(8, 6, 1.7, &w) < 1e-10);
    }

    #[test]
    fn orthogonal_sign_convention_positive_r_diagonal() {
        // Q^T A = R must have a positive diagonal (torch's sign correction): regenerate A with the
        // same seed and check <q_j, a_j> > 0.
        let (r, c) = (7usize, 4usize);
        let mut w = vec![0.0f64; r * c];
        orthogonal(r, c, 1.0, &mut Pcg32::new(5), &mut w).unwrap();
        let mut a = vec![0.0f64; r * c];
        fill_normal(&mut Pcg32::new(5), 0.0, 1.0, &mut a);
        for j in 0..c {
            let d: f64 = (0..r).map(|i| w[i * c + j] * a[i * c + j]).sum();
            assert!(d > 0.0);
            // And R is upper triangular: <q_j, a_k> = 0 for k < j.
            for k in 0..j {
                let d: f64 = (0..r).map(|i| w[i * c + j] * a[i * c + k]).sum();
                assert!(d.abs() < 1e-10);
            }
        }
    }

    #[test]
    fn orthogonal_f32_and_errors() {
        let mut w = vec![0.0f32; 32 * 32];
        orthogonal(32, 32, 1.0, &mut Pcg32::new(1), &mut w).unwrap();
        let wd: Vec<f64> = w.iter().map(|x| *x as f64).collect();
        assert!(ortho_error(32, 32, 1.0, &wd) < 1e-5);
        let mut small = [0.0f64; 5];
        assert!(orthogonal(2, 3, 1.0, &mut Pcg32::new(1), &mut small).is_err());
        assert!(orthogonal(usize::MAX, 3, 1.0, &mut Pcg32::new(1), &mut small).is_err());
        // Empty shapes are fine.
        orthogonal::<f64>(0, 3, 1.0, &mut Pcg32::new(1), &mut []).unwrap();
    }

    #[test]
    fn deterministic_per_seed() {
        let run = |seed: u64| {
            let mut rng = Pcg32::new(seed);
            let mut w = vec![0.0f64; 12 * 5];
            orthogonal(12, 5, 1.0, &mut rng, &mut w).unwrap();
            let mut u = vec![0.0f32; 9];
            normal_unit_rows(3, 3, &mut rng, &mut u).unwrap();
            (w, u)
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).0, run(4).0);
    }

    #[test]
    fn unit_rows_and_moments() {
        let mut w = vec![0.0f64; 6 * 10];
        normal_unit_rows(6, 10, &mut Pcg32::new(9), &mut w).unwrap();
        for row in w.chunks(10) {
            let n: f64 = row.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-12);
        }
        let mut s = vec![0.0f64; 20001];
        fill_normal(&mut Pcg32::new(2), 1.0, 2.0, &mut s);
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        let var = s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / s.len() as f64;
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        assert!((var - 4.0).abs() < 0.15, "{var}");
        let mut u = vec![0.0f64; 1000];
        init_weight(
            WeightInit::TorchDefault,
            10,
            100,
            16,
            &mut Pcg32::new(1),
            &mut u,
        )
        .unwrap();
        assert!(u.iter().all(|x| x.abs() <= 0.25));
        let mut b = vec![1.0f64; 4];
        init_bias(WeightInit::UnitRows, 4, &mut Pcg32::new(1), &mut b);
        assert!(b.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn gate_blocks_are_each_orthogonal() {
        let (h, c) = (4usize, 6usize);
        let mut w = vec![0.0f64; 3 * h * c];
        init_gate_weight(
            WeightInit::Orthogonal { gain: 1.0 },
            3,
            h,
            c,
            &mut Pcg32::new(8),
            &mut w,
        )
        .unwrap();
        for b in w.chunks(h * c) {
            assert!(ortho_error(h, c, 1.0, b) < 1e-10);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn orthogonal_random_shapes(r in 1usize..24, c in 1usize..24, seed in any::<u64>()) {
            let mut w = vec![0.0f64; r * c];
            orthogonal(r, c, 1.0, &mut Pcg32::new(seed), &mut w).unwrap();
            prop_assert!(ortho_error(r, c, 1.0, &w) < 1e-10);
        }
    }
}
