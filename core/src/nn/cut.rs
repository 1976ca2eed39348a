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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_splits_or_names_the_shortfall() {
        let buf = [1.0f32, 2.0, 3.0];
        let (head, rest) = cut(&buf[..], 2, 9).unwrap();
        assert_eq!((head, rest), (&[1.0, 2.0][..], &[3.0][..]));
        assert_eq!(
            cut(&buf[..], 4, 9),
            Err(Error::BufferTooSmall { needed: 9, got: 3 })
        );
        let mut owned = [0.0f32; 3];
        let (head, rest) = cut(&mut owned[..], 3, 3).unwrap();
        head[0] = 5.0;
        assert!(rest.is_empty());
        assert_eq!(
            cut(&mut owned[..], 7, 7).err(),
            Some(Error::BufferTooSmall { needed: 7, got: 3 })
        );
    }

    #[test]
    fn take_cuts_from_the_front_and_clamps_to_what_is_left() {
        let mut owned = [0u8, 1, 2, 3, 4];
        let mut rest = &mut owned[..];
        assert_eq!(take(&mut rest, 2), &mut [0, 1][..]);
        assert_eq!(take(&mut rest, 0), &mut [][..]);
        take(&mut rest, 1)[0] = 9;
        assert_eq!(
            take(&mut rest, 5),
            &mut [3, 4][..],
            "fewer than asked: all of it"
        );
        assert!(rest.is_empty());
        assert!(take(&mut rest, 1).is_empty());
        assert_eq!(owned, [0, 1, 9, 3, 4]);
        let shared = [7u8, 8];
        let mut rest = &shared[..];
        assert_eq!(take(&mut rest, 3), &[7, 8][..]);
        assert!(rest.is_empty());
    }
}
