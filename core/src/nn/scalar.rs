//! The scalar abstraction: every network computation is generic over [`Real`] (f32 or f64), so
//! the same code runs in f32 on the device and in f64 for gradient checks.
//!
//! Invariants: transcendental functions come from `libm`, so results are identical on every
//! platform for the same scalar type (no platform `libm`, no fused multiply-add reordering).

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point scalar: `f32` or `f64`.
pub trait Real:
    Copy
    + Default
    + PartialOrd
    + Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Send
    + Sync
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Conversion from f64 (rounding for f32).
    fn from_f64(x: f64) -> Self;
    /// Conversion to f64 (exact).
    fn to_f64(self) -> f64;
    /// e^x.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Larger of two (NaN-propagating like `f32::max` is not needed: inputs are finite).
    #[inline]
    fn max(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }
    /// Smaller of two.
    #[inline]
    fn min(self, other: Self) -> Self {
        if other < self {
            other
        } else {
            self
        }
    }
    /// Logistic sigmoid, computed without overflow for large |x|.
    #[inline]
    fn sigmoid(self) -> Self {
        if self >= Self::ZERO {
            Self::ONE / (Self::ONE + (-self).exp())
        } else {
            let e = self.exp();
            e / (Self::ONE + e)
        }
    }
}

/// Implements [`Real`] for one float width with that width's `libm` functions: f32 and f64 are
/// written once, so they cannot drift apart (which `libm` function each method uses is the
/// only difference, listed at the two invocations).
macro_rules! impl_real {
    ($t:ty: $($method:ident => $libm:ident),+) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            #[allow(clippy::unnecessary_cast)] // the identity cast of the f64 instance
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
            $(
                #[inline]
                fn $method(self) -> Self {
                    libm::$libm(self)
                }
            )+
        }
    };
}

impl_real!(f32: exp => expf, ln => logf, tanh => tanhf, sqrt => sqrtf, abs => fabsf);
impl_real!(f64: exp => exp, ln => log, tanh => tanh, sqrt => sqrt, abs => fabs);
