//! Cutting a buffer into named parts, for shared and mutable borrows alike, so that one
//! function per layout splits parameters, gradients, caches or scratch however they are
//! borrowed (instead of a `split_x` and a `split_x_mut` that differ only in `mut`).
//!
//! Invariants: nothing here panics or allocates; [`cut`] reports a short buffer as
//! [`Error::BufferTooSmall`], [`take`] clamps to what is there.

use crate::error::Error;

/// A slice borrow that can be cut in two: `&[S]` and `&mut [S]`.
pub trait Cut: Sized + Default {
    /// Number of elements.
    fn count(&self) -> usize;
    /// The first `n` elements and the rest; `None` when there are fewer than `n`.
    fn cut_at(self, n: usize) -> Option<(Self, Self)>;
}

impl<S> Cut for &[S] {
    fn count(&self) -> usize {
        self.len()
    }
    fn cut_at(self, n: usize) -> Option<(Self, Self)> {
        self.split_at_checked(n)
    }
}

impl<S> Cut for &mut [S] {
    fn count(&self) -> usize {
        self.len()
    }
    fn cut_at(self, n: usize) -> Option<(Self, Self)> {
        self.split_at_mut_checked(n)
    }
}

/// The first `n` elements of `buf` and the rest, or [`Error::BufferTooSmall`] naming `needed`
/// (the whole layout's length) when `buf` is shorter than `n`.
pub fn cut<T: Cut>(buf: T, n: usize, needed: usize) -> Result<(T, T), Error> {
    let got = buf.count();
    buf.cut_at(n).ok_or(Error::BufferTooSmall { needed, got })
}

/// Cuts the first `n` elements (or all, if fewer) off the front of `buf`.
pub fn take<T: Cut>(buf: &mut T, n: usize) -> T {
    let b = core::mem::take(buf);
    let at = n.min(b.count());
    match b.cut_at(at) {
        Some((head, tail)) => {
            *buf = tail;
            head
        }
        // Unreachable (`at` is at most the length); an empty part keeps it panic-free.
        None => T::default(),
    }
}
