//! Parameters, gradients or Adam moments of a model as one owned buffer per group (fast, slow,
//! other): the host-side counterpart of the core's borrowed [`GroupBufs`]. The trainer, the
//! CUDA backend and the CUDA parity tests all use this one type.

use core::ops::AddAssign;

use metarim_core::nn::params::{Group, GroupBufs, GroupBufsMut, Layout};

/// Parameters (or gradients, or Adam moments) of a model: one buffer per group. `f32` for
/// training; the parity tests also use `f64`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupVecs<S = f32> {
    /// The fast group.
    pub fast: Vec<S>,
    /// The slow group.
    pub slow: Vec<S>,
    /// The other group (encoder, instruction encoder, heads).
    pub other: Vec<S>,
}

impl<S: Copy + Default> GroupVecs<S> {
    /// Zeros shaped like `layout`'s groups.
    pub fn zeros(layout: &Layout) -> Self {
        GroupVecs {
            fast: vec![S::default(); layout.group_len(Group::Fast)],
            slow: vec![S::default(); layout.group_len(Group::Slow)],
            other: vec![S::default(); layout.group_len(Group::Other)],
        }
    }

    /// Borrow as the core's group buffers.
    pub fn bufs(&self) -> GroupBufs<'_, S> {
        GroupBufs {
            fast: &self.fast,
            slow: &self.slow,
            other: &self.other,
        }
    }

    /// Borrow mutably as the core's group buffers.
    pub fn bufs_mut(&mut self) -> GroupBufsMut<'_, S> {
        GroupBufsMut {
            fast: &mut self.fast,
            slow: &mut self.slow,
            other: &mut self.other,
        }
    }

    /// The buffer of group `g`.
    pub fn group(&self, g: Group) -> &[S] {
        match g {
            Group::Fast => &self.fast,
            Group::Slow => &self.slow,
            Group::Other => &self.other,
        }
    }

    /// The buffer of group `g`, mutably.
    pub fn group_mut(&mut self, g: Group) -> &mut Vec<S> {
        match g {
            Group::Fast => &mut self.fast,
            Group::Slow => &mut self.slow,
            Group::Other => &mut self.other,
        }
    }

    /// Every element converted by `f`, group by group (e.g. `f32` parameters widened to `f64`).
    pub fn map<T>(&self, f: impl Fn(S) -> T) -> GroupVecs<T> {
        let conv = |v: &[S]| v.iter().map(|&x| f(x)).collect();
        GroupVecs {
            fast: conv(&self.fast),
            slow: conv(&self.slow),
            other: conv(&self.other),
        }
    }

    /// Set every element to zero.
    pub fn clear(&mut self) {
        for g in Group::ALL {
            self.group_mut(g).fill(S::default());
        }
    }
}

impl<S: Copy + Default + AddAssign> GroupVecs<S> {
    /// `self += other`, element by element (same shapes).
    pub fn add_assign(&mut self, other: &GroupVecs<S>) {
        for g in Group::ALL {
            for (a, b) in self.group_mut(g).iter_mut().zip(other.group(g)) {
                *a += *b;
            }
        }
    }
}
