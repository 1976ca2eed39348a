//! Dense products for the batched CPU paths ([`crate::batch::rim`], [`crate::batch::lstm`],
//! [`crate::train::batched`]): `C = alpha A B + beta C` on strided views inside slices, through
//! `matrixmultiply`'s sgemm/dgemm (via `ndarray::linalg::general_mat_mul`), or a vectorisable
//! dot/axpy loop when the inner dimension is tiny.
//!
//! Invariant (row invariance): which code computes an element depends only on the inner
//! dimension `k` and the column count `n`, never on the number of rows `m`, and every kernel
//! computes each output element from its own row of `A` in a fixed order. So splitting the rows of
//! a product across threads, in any way, gives bit-identical results; the trainer relies on this
//! to be independent of the thread count.

use anyhow::{bail, Result};
use metarim_core::nn::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

/// Below this inner dimension a product is computed with dot/axpy loops instead of a packed GEMM
/// (packing costs more than such a product).
pub const SMALL: usize = 4;

/// Scalars the batched paths run on: `f32` and `f64` (core's [`Real`] plus `ndarray`'s GEMM),
/// with the activations those paths use: [`crate::batch::fastmath`]'s for `f32`, libm's for `f64`.
pub trait Scalar: Real + ndarray::LinalgScalar + Send + Sync {
    /// `1 / (1 + e^-x)`.
    fn act_sigmoid(self) -> Self;
    /// `tanh(x)`.
    fn act_tanh(self) -> Self;
}

impl Scalar for f32 {
    #[inline(always)]
    fn act_sigmoid(self) -> f32 {
        crate::batch::fastmath::sigmoid_f32(self)
    }
    #[inline(always)]
    fn act_tanh(self) -> f32 {
        crate::batch::fastmath::tanh_f32(self)
    }
}

impl Scalar for f64 {
    #[inline]
    fn act_sigmoid(self) -> f64 {
        self.sigmoid()
    }
    #[inline]
    fn act_tanh(self) -> f64 {
        Real::tanh(self)
    }
}

/// A strided matrix inside a slice: element `(r, c)` is at `off + r * rs + c * cs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mat {
    /// Offset of element `(0, 0)`.
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// A strided view.
pub const fn mat(off: usize, rs: usize, cs: usize) -> Mat {
    Mat { off, rs, cs }
}

/// Row-major `[rows x cols]` block at `off` (row stride `cols`).
pub const fn rm(off: usize, cols: usize) -> Mat {
    mat(off, cols, 1)
}

/// The transpose of a row-major block with `cols` columns at `off`.
pub const fn tr(off: usize, cols: usize) -> Mat {
    mat(off, 1, cols)
}

/// `C = alpha A B + beta C` with `A: [m x k]`, `B: [k x n]`, `C: [m x n]` strided views.
/// Errors when a view reaches outside its slice.
#[allow(clippy::too_many_arguments)]
pub fn gemm<S: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: S,
    a: &[S],
    am: Mat,
    b: &[S],
    bm: Mat,
    beta: S,
    c: &mut [S],
    cm: Mat,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let last = |x: Mat, r: usize, cols: usize| {
        x.off + r.saturating_sub(1) * x.rs + cols.saturating_sub(1) * x.cs + 1
    };
    if c.len() < last(cm, m, n) || (k > 0 && (a.len() < last(am, m, k) || b.len() < last(bm, k, n)))
    {
        bail!("gemm: a view reaches outside its buffer ({m}x{k}x{n})");
    }
    if k < SMALL {
        if k == 0 {
            scale_rows(m, n, beta, c, cm);
            return Ok(());
        }
        // A plain loop: packing would cost more than such a product (see `SMALL`).
        for i in 0..m {
            for j in 0..n {
                let mut s = S::ZERO;
                for p in 0..k {
                    s += a[am.off + i * am.rs + p * am.cs] * b[bm.off + p * bm.rs + j * bm.cs];
                }
                let o = &mut c[cm.off + i * cm.rs + j * cm.cs];
                let v = alpha * s;
                *o = if beta == S::ZERO { v } else { beta * *o + v };
            }
        }
        return Ok(());
    }
    let av = ArrayView2::from_shape((m, k).strides((am.rs, am.cs)), &a[am.off..])?;
    let bv = ArrayView2::from_shape((k, n).strides((bm.rs, bm.cs)), &b[bm.off..])?;
    let mut cv = ArrayViewMut2::from_shape((m, n).strides((cm.rs, cm.cs)), &mut c[cm.off..])?;
    general_mat_mul(alpha, &av, &bv, beta, &mut cv);
    Ok(())
}

fn scale_rows<S: Scalar>(m: usize, n: usize, beta: S, c: &mut [S], cm: Mat) {
    for i in 0..m {
        for j in 0..n {
            let o = &mut c[cm.off + i * cm.rs + j * cm.cs];
            *o = if beta == S::ZERO { S::ZERO } else { beta * *o };
        }
    }
}

/// Dot product with eight independent accumulators (so LLVM vectorises it), combined in a fixed
/// order.
#[inline]
pub fn dot<S: Scalar>(a: &[S], b: &[S]) -> S {
    let mut acc = [S::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = S::ZERO;
    for (x, y) in ra.iter().zip(rb) {
        s += *x * *y;
    }
    let a4 = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    s + (a4[0] + a4[2]) + (a4[1] + a4[3])
}

/// `y += alpha * x`.
#[inline]
pub fn axpy<S: Scalar>(alpha: S, x: &[S], y: &mut [S]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * *xi;
    }
}

/// Contiguous bounds for splitting `rows` rows (sequences, frames, channels) into `parts`
/// ranges whose sizes differ by at most one (at least 1 and at most `rows` ranges).
pub fn even_bounds(rows: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, rows.max(1));
    (0..=parts).map(|k| k * rows / parts).collect()
}

/// Splits `buf` into consecutive row blocks: block `i` holds rows `bounds[i]..bounds[i + 1]` of
/// `width` elements each (`bounds` ascending, starting at 0). Rows past the buffer give empty
/// blocks.
pub fn split_rows<'a, S>(buf: &'a mut [S], width: usize, bounds: &[usize]) -> Vec<&'a mut [S]> {
    let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
    let mut rest = buf;
    for w in bounds.windows(2) {
        let len = (w[1].saturating_sub(w[0]) * width).min(rest.len());
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        out.push(head);
        rest = tail;
    }
    out
}

/// Buffers of per-row fields made by [`row_fields!`] (the `Vec<S>` instance), as generic code
/// such as [`crate::batch::PassBuffers`] reaches them: allocation and splitting by row ranges.
pub(crate) trait RowBuffers: Sized {
    /// The scalars the buffers hold.
    type Elem;
    /// The same fields as widths (scalars per row).
    type Widths;
    /// The same fields as views of one row range.
    type Rows<'a>
    where
        Self: 'a;

    /// Every field sized for `rows` rows of its width.
    fn alloc(w: &Self::Widths, rows: usize) -> Self;

    /// Views of the rows `bounds[i]..bounds[i + 1]` of every field, one per range.
    fn split<'a>(&'a mut self, w: &Self::Widths, bounds: &[usize]) -> Vec<Self::Rows<'a>>;

    /// Scalars per row over all fields of `w`.
    fn row_width(w: &Self::Widths) -> usize;
}

/// Declares a struct of per-row fields (`B` = `usize` widths, `Vec<S>` buffers, or `&mut [S]`
/// views of a row range) with allocation and splitting by row ranges ([`RowBuffers`]). Written
/// `pass Name { .. }`, the fields include a pass's inputs `x` and input gradients `dx`, and the
/// struct is also a [`crate::batch::PassFields`] (what [`crate::batch::PassBuffers`] needs).
macro_rules! row_fields {
    ($(#[$m:meta])* pass $name:ident { $($body:tt)* }) => {
        $crate::batch::gemm::row_fields! { $(#[$m])* $name { $($body)* } }

        impl<B> $crate::batch::PassFields<B> for $name<B> {
            fn x(&self) -> &B {
                &self.x
            }

            fn x_mut(&mut self) -> &mut B {
                &mut self.x
            }

            fn dx(&self) -> &B {
                &self.dx
            }
        }
    };
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default)]
        pub(crate) struct $name<B> {
            $($(#[$fm])* pub(crate) $f: B,)*
        }

        impl $name<usize> {
            /// Floats per row over all fields.
            fn total(&self) -> usize {
                0 $(+ self.$f)*
            }
        }

        impl<S: Copy + Default> $crate::batch::gemm::RowBuffers for $name<Vec<S>> {
            type Elem = S;
            type Widths = $name<usize>;
            type Rows<'a> = $name<&'a mut [S]> where Self: 'a;

            fn alloc(w: &$name<usize>, rows: usize) -> Self {
                $name { $($f: vec![S::default(); w.$f * rows],)* }
            }

            fn split<'a>(&'a mut self, w: &$name<usize>, bounds: &[usize]) -> Vec<$name<&'a mut [S]>> {
                $(let mut $f = $crate::batch::gemm::split_rows(&mut self.$f, w.$f, bounds).into_iter();)*
                (0..bounds.len().saturating_sub(1))
                    .map(|_| $name { $($f: $f.next().unwrap_or_default(),)* })
                    .collect()
            }

            fn row_width(w: &$name<usize>) -> usize {
                w.total()
            }
        }
    };
}

pub(crate) use row_fields;

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    /// The invariant the trainer's thread-count independence rests on: any split of the rows
    /// of a product gives the same bits as the whole product.
    #[test]
    fn rows_split_anywhere_give_identical_bits() {
        for &(m, k, n) in &[
            (64usize, 256usize, 192usize),
            (37, 64, 7),
            (13, 3, 5),
            (9, 130, 1),
        ] {
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let c0 = fill(m * n, 3);
            // `rows` rows of A from row `first` on, into `c`.
            let product = |first: usize, rows: usize, c: &mut [f32]| {
                gemm(
                    rows,
                    k,
                    n,
                    0.5,
                    &a,
                    rm(first * k, k),
                    &b,
                    rm(0, n),
                    1.0,
                    c,
                    rm(0, n),
                )
            };
            let mut whole = c0.clone();
            product(0, m, &mut whole).unwrap();
            for split in [1usize, 2, 3, 8, m / 2, m - 1] {
                let mut parts = c0.clone();
                let (top, bottom) = parts.split_at_mut(split * n);
                product(0, split, top).unwrap();
                product(split, m - split, bottom).unwrap();
                let same = whole
                    .iter()
                    .zip(&parts)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}x{k}x{n} split at {split} differs");
            }
        }
    }

    #[test]
    fn views_outside_their_buffers_are_errors() {
        let a = vec![0.0f32; 10];
        let mut c = vec![0.0f32; 4];
        // A 2x5 times 5xn product with A's view at `a_view`, into `c`.
        let product = |a_view: Mat, n: usize, c: &mut [f32]| {
            gemm(2, 5, n, 1.0, &a, a_view, &a, rm(0, n), 0.0, c, rm(0, n))
        };
        assert!(product(rm(0, 5), 2, &mut c).is_ok());
        assert!(product(rm(1, 5), 2, &mut c).is_err());
        assert!(product(rm(0, 5), 3, &mut c).is_err());
        assert!(product(rm(0, 5), 2, &mut c[..3]).is_err());
    }
}
