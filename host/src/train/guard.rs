//! The divergence guard: an optimiser step whose loss or gradient is not finite is skipped (its
//! parameters, Adam moments and step count stay as they were) with a warning, an update that
//! leaves a non-finite parameter or moment behind is rolled back, and a run whose steps keep
//! failing stops with an error instead of training on (and saving) NaN.
//!
//! Invariants: a skipped step changes nothing but the guard's counters, so a run whose steps
//! are all finite computes exactly what it would without the guard; after
//! [`MAX_CONSECUTIVE_SKIPS`] skipped steps in a row [`DivergenceGuard::skip`] returns an error,
//! and the run ends before its next checkpoint (the last one on disk is finite).

use anyhow::{bail, Result};
use metarim_core::nn::params::Group;

use super::GroupVecs;

/// Skipped optimiser steps in a row after which the run stops with an error. A step is skipped
/// only when its loss or gradient is NaN or infinite; a healthy run skips none, and a run that
/// skips this many in a row has diverged (its learning rate or gradient clip is usually too
/// large), so training on would only waste the budget.
pub const MAX_CONSECUTIVE_SKIPS: usize = 5;

/// Counts skipped optimiser steps (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DivergenceGuard {
    consecutive: usize,
    /// Steps skipped since the guard was made.
    pub skipped_total: u64,
    /// Whether warnings go to stderr (off in benchmarks and tests that count skips).
    pub quiet: bool,
}

impl DivergenceGuard {
    /// A guard with no skips, printing warnings.
    pub fn new() -> DivergenceGuard {
        DivergenceGuard::default()
    }

    /// A guard that counts without printing (benchmarks, tests).
    pub fn silent() -> DivergenceGuard {
        DivergenceGuard {
            quiet: true,
            ..DivergenceGuard::default()
        }
    }

    /// An optimiser step went through: the run of skips (if any) is over.
    pub fn step_taken(&mut self) {
        self.consecutive = 0;
    }

    /// `n` optimiser steps were skipped (or rolled back) because of `why`; an error once
    /// [`MAX_CONSECUTIVE_SKIPS`] steps in a row have been skipped.
    pub fn skip(&mut self, n: usize, why: &str) -> Result<()> {
        self.consecutive += n;
        self.skipped_total += n as u64;
        if !self.quiet {
            eprintln!(
                "train: warning: skipped {n} optimiser step{} ({why}); {} in a row",
                if n == 1 { "" } else { "s" },
                self.consecutive
            );
        }
        if self.consecutive >= MAX_CONSECUTIVE_SKIPS {
            bail!(
                "training diverged: {} optimiser steps in a row were skipped (last: {why}); \
                 stopping without saving, so the last checkpoint is the last finite state. \
                 Lower `lr` / `fast_lr` or `max_grad_norm`, or resume from that checkpoint",
                self.consecutive
            );
        }
        Ok(())
    }

    /// Skipped steps in the current run of skips.
    pub fn consecutive(&self) -> usize {
        self.consecutive
    }
}

/// The first non-finite element of `v`: its group and index.
pub fn first_non_finite(v: &GroupVecs) -> Option<(Group, usize)> {
    Group::ALL.into_iter().find_map(|g| {
        v.group(g)
            .iter()
            .position(|x| !x.is_finite())
            .map(|i| (g, i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_the_limit_of_consecutive_skips_only() {
        let mut g = DivergenceGuard {
            quiet: true,
            ..DivergenceGuard::new()
        };
        for _ in 0..3 {
            for _ in 0..MAX_CONSECUTIVE_SKIPS - 1 {
                g.skip(1, "test").unwrap();
            }
            g.step_taken();
        }
        assert_eq!(g.skipped_total, 3 * (MAX_CONSECUTIVE_SKIPS as u64 - 1));
        for _ in 0..MAX_CONSECUTIVE_SKIPS - 1 {
            g.skip(1, "test").unwrap();
        }
        let e = g.skip(1, "nan loss").unwrap_err().to_string();
        assert!(e.contains("diverged") && e.contains("nan loss"), "{e}");
    }
}
