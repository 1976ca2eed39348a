//! The fast/slow split in one place: which modes have two loops, which parameter groups each
//! phase of an update trains, and one optimiser step of a phase (global-norm clip, then Adam
//! over exactly the elements the phase owns), without allocation.
//!
//! Invariants:
//! - A phase's groups come in buffer order ([`Group::ALL`]), and the gradient norm is summed in
//!   f64 over them in that order, range by range, so every caller (the host trainer, the CUDA
//!   backend's CPU reference) gets the same bits.
//! - The fast group's step in a meta loop touches only the blocks of modules active in the
//!   minibatch ([`Layout::fast_ranges`]): modules that never ran keep their parameters and
//!   Adam moments exactly.
//! - A step whose gradient norm is not finite changes nothing (parameters, moments, step
//!   count) and reports `None`: the caller decides what a skipped step means.

use crate::error::Error;
use crate::nn::optim::{clip_coef, Adam, Range};
use crate::nn::params::{Group, GroupBufsMut, Layout, Mode, FAST_RANGES};

/// Which parameters an optimiser step updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Everything, with the slow optimiser (plain PPO: `joint`, `lstm`).
    All,
    /// The inner loop: the fast group (and `Other` when it is fast).
    Inner,
    /// The outer loop: the slow group (and `Other` when it is slow).
    Outer,
}

config_enum! {
    /// Which loop updates the `Other` group (encoder, instruction encoder, heads) in the meta
    /// modes.
    pub enum OtherGroup (serde case "lowercase") {
        /// With the slow group: updated in the outer loop (the device agent's setting,
        /// `TrainConfig::device()`).
        Slow,
        /// With the fast group: updated in the inner loop (the trainer's default since the
        /// `accumulate` schedule; docs/RESULTS.md, "A fast/slow schedule").
        Fast,
    }
}

impl Mode {
    /// Whether the mode splits its parameters into a fast inner and a slow outer loop.
    pub fn is_meta(self) -> bool {
        matches!(self, Mode::MetaRim | Mode::Reversed)
    }

    /// The groups a step of `phase` updates, in buffer order.
    pub fn phase_groups(self, phase: Phase, other: OtherGroup) -> heapless::Vec<Group, 3> {
        let groups: &[Group] = match (self.is_meta(), phase, other) {
            (false, _, _) | (true, Phase::All, _) => &Group::ALL,
            (true, Phase::Inner, OtherGroup::Fast) => &[Group::Fast, Group::Other],
            (true, Phase::Inner, OtherGroup::Slow) => &[Group::Fast],
            (true, Phase::Outer, OtherGroup::Slow) => &[Group::Slow, Group::Other],
            (true, Phase::Outer, OtherGroup::Fast) => &[Group::Slow],
        };
        groups.iter().copied().collect()
    }
}

/// The ranges of group `g` (of `len` elements) a step of `phase` touches: the active modules'
/// blocks (`fast_ranges`) for the fast group outside [`Phase::All`], the whole buffer otherwise.
fn ranges_of<'a>(
    g: Group,
    len: usize,
    phase: Phase,
    fast_ranges: &'a [Range],
    whole: &'a mut [Range; 1],
) -> &'a [Range] {
    if g == Group::Fast && phase != Phase::All {
        fast_ranges
    } else {
        whole[0] = (0, len);
        &whole[..]
    }
}

/// The groups' buffers a step reads and writes.
pub struct StepBuffers<'a> {
    /// Parameters (updated).
    pub params: GroupBufsMut<'a, f32>,
    /// Gradients (scaled in place by the clip coefficient).
    pub grads: GroupBufsMut<'a, f32>,
    /// Adam first moments.
    pub m: GroupBufsMut<'a, f32>,
    /// Adam second moments.
    pub v: GroupBufsMut<'a, f32>,
}

/// One optimiser step of `phase` with `opt`: the global gradient norm over the phase's
/// elements; `None` (and nothing changed) when it is not finite; otherwise clip the gradient to
/// `max_norm`, advance `opt.t` (an error, not a wrap, at `u64::MAX`) and take the Adam step on
/// those elements. Returns the pre-clip norm.
pub fn clip_adam_step(
    layout: &Layout,
    bufs: StepBuffers<'_>,
    opt: &mut Adam,
    phase: Phase,
    other: OtherGroup,
    active: &[bool],
    max_norm: f32,
) -> Result<Option<f32>, Error> {
    let StepBuffers {
        mut params,
        mut grads,
        mut m,
        mut v,
    } = bufs;
    let groups = layout.mode().phase_groups(phase, other);
    let mut fast_ranges = heapless::Vec::<Range, FAST_RANGES>::new();
    layout.fast_ranges(active, &mut fast_ranges)?;
    let mut whole = [(0, 0)];
    // Global norm over the updated elements, summed in f64 in a fixed order.
    let mut sq = 0.0f64;
    for &g in &groups {
        let buf = grads.group(g);
        for &(off, len) in ranges_of(g, buf.len(), phase, &fast_ranges, &mut whole) {
            let part = buf.get(off..off + len).ok_or(Error::BufferTooSmall {
                needed: off + len,
                got: buf.len(),
            })?;
            sq += part
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>();
        }
    }
    let norm = libm::sqrt(sq) as f32;
    if !norm.is_finite() {
        return Ok(None);
    }
    let coef = clip_coef(norm, max_norm);
    opt.t = opt.t.checked_add(1).ok_or(Error::StepCountOverflow)?;
    for &g in &groups {
        let n = params.group(g).len();
        let ranges = ranges_of(g, n, phase, &fast_ranges, &mut whole);
        let grad = grads.group_mut(g);
        if coef != 1.0 {
            for &(off, len) in ranges {
                for x in grad.get_mut(off..off + len).into_iter().flatten() {
                    *x *= coef;
                }
            }
        }
        opt.update_ranges_at(
            opt.t,
            params.group_mut(g),
            grads.group(g),
            m.group_mut(g),
            v.group_mut(g),
            ranges,
        )?;
    }
    Ok(Some(norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::dims::TINY;

    #[test]
    fn groups_per_phase_follow_the_split() {
        use OtherGroup::*;
        let g = |m: Mode, p, o| m.phase_groups(p, o).to_vec();
        assert_eq!(g(Mode::Joint, Phase::Inner, Slow), Group::ALL.to_vec());
        assert_eq!(g(Mode::Lstm, Phase::Outer, Fast), Group::ALL.to_vec());
        assert_eq!(g(Mode::MetaRim, Phase::All, Slow), Group::ALL.to_vec());
        assert_eq!(g(Mode::MetaRim, Phase::Inner, Slow), [Group::Fast]);
        assert_eq!(
            g(Mode::MetaRim, Phase::Outer, Slow),
            [Group::Slow, Group::Other]
        );
        assert_eq!(
            g(Mode::Reversed, Phase::Inner, Fast),
            [Group::Fast, Group::Other]
        );
        assert_eq!(g(Mode::Reversed, Phase::Outer, Fast), [Group::Slow]);
        assert!(Mode::MetaRim.is_meta() && Mode::Reversed.is_meta());
        assert!(!Mode::Joint.is_meta() && !Mode::Lstm.is_meta());
    }

    /// Buffers of `layout`'s group sizes filled with `x`.
    fn filled(layout: &Layout, x: f32) -> [std::vec::Vec<f32>; 3] {
        Group::ALL.map(|g| std::vec![x; layout.group_len(g)])
    }

    fn bufs(v: &mut [std::vec::Vec<f32>; 3]) -> GroupBufsMut<'_, f32> {
        let [fast, slow, other] = v;
        GroupBufsMut { fast, slow, other }
    }

    #[test]
    fn an_inner_step_moves_only_active_fast_blocks_and_a_nan_step_nothing() {
        let layout = Layout::new(&TINY, Mode::MetaRim).unwrap();
        let (mut p, mut g) = (filled(&layout, 0.5), filled(&layout, 0.01));
        let (mut m, mut v) = (filled(&layout, 0.0), filled(&layout, 0.0));
        let mut active = std::vec![false; layout.dims().rim.n_modules];
        active[0] = true;
        let mut opt = Adam::new(1e-3, 0.9, 0.999, 1e-5);
        let step = |p: &mut _, g: &mut _, m: &mut _, v: &mut _, opt: &mut Adam| {
            let b = StepBuffers {
                params: bufs(p),
                grads: bufs(g),
                m: bufs(m),
                v: bufs(v),
            };
            clip_adam_step(
                &layout,
                b,
                opt,
                Phase::Inner,
                OtherGroup::Slow,
                &active,
                0.5,
            )
        };
        let norm = step(&mut p, &mut g, &mut m, &mut v, &mut opt).unwrap();
        assert!(norm.is_some_and(|n| n > 0.0));
        assert_eq!(opt.t, 1);
        let mut ranges = heapless::Vec::<Range, FAST_RANGES>::new();
        layout.fast_ranges(&active, &mut ranges).unwrap();
        let inside = |i: usize| ranges.iter().any(|&(o, l)| (o..o + l).contains(&i));
        for (i, x) in p[0].iter().enumerate() {
            assert_eq!(*x != 0.5, inside(i), "fast element {i}");
        }
        assert!(p[1].iter().chain(&p[2]).all(|x| *x == 0.5));
        // A NaN gradient: nothing changes, not even the step count.
        g[0][0] = f32::NAN;
        let before = (p.clone(), m.clone(), v.clone());
        assert_eq!(
            step(&mut p, &mut g, &mut m, &mut v, &mut opt).unwrap(),
            None
        );
        assert_eq!((p, m, v), before);
        assert_eq!(opt.t, 1);
        // An overflowing step count is an error, not a wrap.
        g[0][0] = 0.01;
        opt.t = u64::MAX;
        let (mut p2, mut m2, mut v2) = (
            filled(&layout, 0.5),
            filled(&layout, 0.0),
            filled(&layout, 0.0),
        );
        assert_eq!(
            step(&mut p2, &mut g, &mut m2, &mut v2, &mut opt),
            Err(Error::StepCountOverflow)
        );
    }
}
