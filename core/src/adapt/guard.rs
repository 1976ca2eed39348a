//! The guard of on-device adaptation: it measures the starting policy first, keeps adapted
//! weights only when the adaptation episodes show they are better, restores the starting
//! weights when learning goes wrong, and stops learning once the job is done (confirming the
//! stopped weights on fresh episodes before it trusts them).
//!
//! Why: fast-only learning can make a good policy worse (the frozen critic reads the hidden
//! state the fast weights change, and top-k module selection depends on it too), and a device
//! has no evaluation set to notice. The guard decides from the outcomes of the adaptation
//! episodes themselves (success or not), which the device sees anyway.
//!
//! Invariants:
//! - Decisions use only the adaptation episodes' outcomes, never evaluation episodes.
//! - At most [`MAX_TRAIL`] outcomes are held, as bits of one `u128`; the guard is a few words
//!   of RAM. Restoring the starting weights copies them from where they already live (the
//!   model blob in flash on the device, the checkpoint on the host), so it costs no RAM.
//! - With `probe_episodes == 0` the guard is off: every episode learns and nothing is ever
//!   restored, which is bit for bit the learner without a guard.
//!
//! The tests compare a proportion with a baseline proportion by a z statistic,
//! `(trail - base) / sqrt(b(1-b)/n_base + t(1-t)/n_trail)`, where `b` and `t` are the
//! proportions with half a success added (so that 0/n and n/n do not give a zero variance).

use crate::error::Error;

/// Most outcomes the trailing window can hold (the bits of a `u128`).
pub const MAX_TRAIL: u32 = 128;

/// Settings of the guard (part of [`super::AdaptConfig`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardConfig {
    /// Episodes played first with the starting weights and no learning; their success rate is
    /// the baseline every decision compares with. 0 turns the guard off.
    pub probe_episodes: u32,
    /// The most recent episodes whose success rate is compared with the baseline
    /// (1..=[`MAX_TRAIL`]).
    pub trail_episodes: u32,
    /// At the end, the adapted weights are kept only if the trailing success exceeds the
    /// baseline by at least this many standard errors; otherwise the starting weights are
    /// restored. The same test, with a full trailing window, stops learning early once the
    /// trailing success reaches [`GuardConfig::stop_success`]; the frozen weights must then
    /// pass it again on `trail_episodes` fresh episodes (stopping when a noisy estimate first
    /// crosses a line overstates it), or they are restored like a collapse.
    pub keep_z: f32,
    /// During adaptation, with a full trailing window, the starting weights are restored when
    /// the trailing success falls below the baseline by at least this many standard errors;
    /// learning then starts again from them at half the learning rate.
    pub revert_z: f32,
    /// Learning stops (the weights stay as they are) once the trailing success reaches this
    /// and passes the keep test; and it never starts when the baseline already reaches it
    /// (nothing to gain, something to lose). Above 1: never.
    pub stop_success: f32,
    /// Restarts allowed; one more failure leaves the starting weights in place for good.
    pub max_reverts: u32,
}

impl GuardConfig {
    /// The device's default: a 50-episode probe, a 50-episode trailing window, keep at z >= 1,
    /// restore at z <= -2 (one restart), stop at 0.9 trailing success (docs/RESULTS.md,
    /// "On-device adaptation that reliably helps").
    pub const DEFAULT: GuardConfig = GuardConfig {
        probe_episodes: 50,
        trail_episodes: 50,
        keep_z: 1.0,
        revert_z: 2.0,
        stop_success: 0.9,
        max_reverts: 1,
    };

    /// No guard: learn from the first episode to the last, keep whatever results.
    pub const OFF: GuardConfig = GuardConfig {
        probe_episodes: 0,
        trail_episodes: 1,
        keep_z: 0.0,
        revert_z: 0.0,
        stop_success: 2.0,
        max_reverts: 0,
    };

    /// Check the settings: a trailing window of 1..=[`MAX_TRAIL`] episodes, finite
    /// thresholds.
    pub fn validate(&self) -> Result<(), Error> {
        if self.trail_episodes == 0 || self.trail_episodes > MAX_TRAIL {
            return Err(Error::BadConfig {
                what: "adaptation guard: trail_episodes must be in 1..=128",
            });
        }
        if !(self.keep_z.is_finite() && self.revert_z.is_finite() && !self.stop_success.is_nan()) {
            return Err(Error::BadConfig {
                what: "adaptation guard: keep_z, revert_z and stop_success must be numbers",
            });
        }
        Ok(())
    }
}

/// Where the guard stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardPhase {
    /// The guard is off: learning throughout.
    Off,
    /// Measuring the starting weights (no learning).
    Probe,
    /// Learning.
    Learn,
    /// Learning stopped on success; the frozen weights are measured on fresh episodes.
    Confirm,
    /// Learning has stopped; the weights stay as they are.
    Stopped,
}

/// What the episode loop must do after an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardAction {
    /// Go on.
    Continue,
    /// Restore the starting weights and drop any accumulated gradient.
    Restore,
    /// Stop learning and drop any accumulated gradient (the weights stay).
    Stop,
}

/// What the guard did, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GuardReport {
    /// Whether the guard was on.
    pub enabled: bool,
    /// Probe episodes and their successes (the baseline).
    pub probe_episodes: u32,
    /// Successes in the probe.
    pub probe_successes: u32,
    /// Episodes and successes in the trailing window at the end.
    pub trail_episodes: u32,
    /// Successes in that window.
    pub trail_successes: u32,
    /// Times the starting weights were restored during adaptation.
    pub reverts: u32,
    /// Adaptation episodes played before learning stopped (0: it never stopped early).
    pub stopped_after: u32,
    /// Whether the adapted weights were kept at the end (false: the starting weights are in
    /// place, because learning was never worth it or never happened).
    pub kept: bool,
    /// The z statistic of the final keep test (trailing against baseline).
    pub final_z: f32,
}

/// The guard's state: a few counters and the trailing outcomes.
#[derive(Clone, Copy, Debug)]
pub struct Guard {
    cfg: GuardConfig,
    phase: GuardPhase,
    episodes: u32,
    probe_n: u32,
    probe_s: u32,
    trail_bits: u128,
    trail_n: u32,
    lr_scale: f32,
    reverts: u32,
    stopped_after: u32,
    learned: bool,
}

impl Guard {
    /// A guard at the start of adaptation.
    pub fn new(cfg: &GuardConfig) -> Result<Self, Error> {
        cfg.validate()?;
        Ok(Guard {
            cfg: *cfg,
            phase: if cfg.probe_episodes == 0 {
                GuardPhase::Off
            } else {
                GuardPhase::Probe
            },
            episodes: 0,
            probe_n: 0,
            probe_s: 0,
            trail_bits: 0,
            trail_n: 0,
            lr_scale: 1.0,
            reverts: 0,
            stopped_after: 0,
            learned: false,
        })
    }

    /// Where the guard stands.
    pub fn phase(&self) -> GuardPhase {
        self.phase
    }

    /// Whether the next episode learns (records steps and updates the fast group).
    pub fn learning(&self) -> bool {
        matches!(self.phase, GuardPhase::Off | GuardPhase::Learn)
    }

    /// The factor on the learning rate (halved after each restore).
    pub fn lr_scale(&self) -> f32 {
        self.lr_scale
    }

    /// Record the outcome of an episode and say what to do next.
    pub fn end_episode(&mut self, success: bool) -> GuardAction {
        self.episodes = self.episodes.saturating_add(1);
        match self.phase {
            GuardPhase::Off | GuardPhase::Stopped => GuardAction::Continue,
            GuardPhase::Probe => {
                self.probe_n += 1;
                self.probe_s += u32::from(success);
                if self.probe_n >= self.cfg.probe_episodes {
                    if self.baseline() >= self.cfg.stop_success {
                        self.phase = GuardPhase::Stopped;
                        self.stopped_after = self.episodes;
                    } else {
                        self.phase = GuardPhase::Learn;
                    }
                }
                GuardAction::Continue
            }
            GuardPhase::Learn => {
                self.learned = true;
                self.push(success);
                if self.trail_n < self.cfg.trail_episodes {
                    return GuardAction::Continue;
                }
                let z = self.z();
                if z >= self.cfg.keep_z && self.trailing() >= self.cfg.stop_success {
                    self.phase = GuardPhase::Confirm;
                    self.stopped_after = self.episodes;
                    self.clear_trail();
                    GuardAction::Stop
                } else if z <= -self.cfg.revert_z {
                    self.restore()
                } else {
                    GuardAction::Continue
                }
            }
            GuardPhase::Confirm => {
                self.push(success);
                if self.trail_n < self.cfg.trail_episodes {
                    GuardAction::Continue
                } else if self.z() >= self.cfg.keep_z {
                    self.phase = GuardPhase::Stopped;
                    GuardAction::Continue
                } else {
                    self.stopped_after = 0;
                    self.restore()
                }
            }
        }
    }

    /// Back to the starting weights: learn again at half the rate, or stop for good after
    /// the last restart.
    fn restore(&mut self) -> GuardAction {
        self.reverts += 1;
        self.clear_trail();
        self.learned = false;
        if self.reverts > self.cfg.max_reverts {
            self.phase = GuardPhase::Stopped;
            self.stopped_after = self.episodes;
        } else {
            self.phase = GuardPhase::Learn;
            self.lr_scale *= 0.5;
        }
        GuardAction::Restore
    }

    fn clear_trail(&mut self) {
        self.trail_bits = 0;
        self.trail_n = 0;
    }

    /// The decision at the end: whether the weights in place should be kept (false: restore
    /// the starting weights). Adapted weights are kept only when the guard is off, or when
    /// they passed the confirmation after learning stopped on success, or when a full
    /// trailing window passes the keep test.
    pub fn keep_at_end(&self) -> bool {
        match self.phase {
            GuardPhase::Off => true,
            // Confirmed after a stop on success keeps the adapted weights; stopped by the
            // baseline or after the last restore leaves the starting weights, which are in
            // place already.
            GuardPhase::Stopped => self.learned,
            GuardPhase::Probe => true,
            // The budget ended before the confirmation did: not confirmed, not kept.
            GuardPhase::Confirm => false,
            GuardPhase::Learn => {
                self.learned
                    && self.trail_n >= self.cfg.trail_episodes
                    && self.z() >= self.cfg.keep_z
            }
        }
    }

    /// The report (call after the last episode).
    pub fn report(&self) -> GuardReport {
        GuardReport {
            enabled: self.phase != GuardPhase::Off,
            probe_episodes: self.probe_n,
            probe_successes: self.probe_s,
            trail_episodes: self.trail_n,
            trail_successes: self.trail_bits.count_ones(),
            reverts: self.reverts,
            stopped_after: self.stopped_after,
            kept: self.phase != GuardPhase::Off && self.learned && self.keep_at_end(),
            final_z: if self.trail_n > 0 && self.probe_n > 0 {
                self.z()
            } else {
                0.0
            },
        }
    }

    fn push(&mut self, success: bool) {
        let cap = self.cfg.trail_episodes.min(MAX_TRAIL);
        let mask = if cap >= 128 {
            u128::MAX
        } else {
            (1u128 << cap) - 1
        };
        self.trail_bits = ((self.trail_bits << 1) | u128::from(success)) & mask;
        self.trail_n = (self.trail_n + 1).min(cap);
    }

    fn baseline(&self) -> f32 {
        self.probe_s as f32 / self.probe_n.max(1) as f32
    }

    fn trailing(&self) -> f32 {
        self.trail_bits.count_ones() as f32 / self.trail_n.max(1) as f32
    }

    /// Trailing success against the baseline, in standard errors of the difference.
    fn z(&self) -> f32 {
        let (nb, nt) = (self.probe_n.max(1) as f32, self.trail_n.max(1) as f32);
        let b = (self.probe_s as f32 + 0.5) / (nb + 1.0);
        let t = (self.trail_bits.count_ones() as f32 + 0.5) / (nt + 1.0);
        let se = libm::sqrtf(b * (1.0 - b) / nb + t * (1.0 - t) / nt);
        (self.trailing() - self.baseline()) / se
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuardConfig {
        GuardConfig {
            probe_episodes: 10,
            trail_episodes: 10,
            keep_z: 1.0,
            revert_z: 2.0,
            stop_success: 0.95,
            max_reverts: 1,
        }
    }

    fn play(g: &mut Guard, outcomes: &[bool]) -> [u32; 3] {
        let mut n = [0u32; 3];
        for &s in outcomes {
            match g.end_episode(s) {
                GuardAction::Continue => n[0] += 1,
                GuardAction::Restore => n[1] += 1,
                GuardAction::Stop => n[2] += 1,
            }
        }
        n
    }

    #[test]
    fn off_learns_throughout_and_keeps() {
        let mut g = Guard::new(&GuardConfig::OFF).unwrap();
        assert!(g.learning());
        play(&mut g, &[false; 300]);
        assert!(g.learning() && g.keep_at_end() && !g.report().enabled);
    }

    #[test]
    fn probe_then_learn_then_keep_only_when_better() {
        let mut g = Guard::new(&cfg()).unwrap();
        // Baseline 3/10.
        let probe = [
            true, false, false, true, false, false, true, false, false, false,
        ];
        play(&mut g, &probe);
        assert_eq!(g.phase(), GuardPhase::Learn);
        // Trailing 9/10: z well above 1 but below the stop level -> keep at the end.
        play(
            &mut g,
            &[true, true, true, true, false, true, true, true, true, true],
        );
        assert!(g.keep_at_end(), "{:?}", g.report());
        // Then 4/10: no better than the baseline -> restore at the end.
        play(
            &mut g,
            &[
                true, false, false, true, false, true, false, true, false, false,
            ],
        );
        assert!(!g.keep_at_end());
        assert_eq!(g.report().reverts, 0);
    }

    #[test]
    fn a_collapse_restores_halves_the_rate_and_gives_up_after_the_last_restart() {
        let mut g = Guard::new(&cfg()).unwrap();
        play(&mut g, &[true; 8]);
        play(&mut g, &[false; 2]); // baseline 0.8
        assert_eq!(play(&mut g, &[false; 10]), [9, 1, 0]);
        assert_eq!((g.lr_scale(), g.phase()), (0.5, GuardPhase::Learn));
        assert_eq!(play(&mut g, &[false; 10]), [9, 1, 0]);
        assert_eq!(g.phase(), GuardPhase::Stopped);
        assert!(!g.learning() && !g.keep_at_end() && !g.report().kept);
        assert_eq!(g.report().reverts, 2);
    }

    #[test]
    fn stops_on_success_confirms_on_fresh_episodes_and_never_learns_from_a_good_baseline() {
        let mut g = Guard::new(&cfg()).unwrap();
        play(&mut g, &[false; 10]);
        assert_eq!(play(&mut g, &[true; 10]), [9, 0, 1]);
        assert_eq!(g.phase(), GuardPhase::Confirm);
        // Not confirmed yet: the end would restore.
        assert!(!g.learning() && !g.keep_at_end());
        play(&mut g, &[true; 10]);
        assert_eq!(g.phase(), GuardPhase::Stopped);
        assert!(!g.learning() && g.keep_at_end() && g.report().kept);
        assert_eq!(g.report().stopped_after, 20);
        // A stop whose fresh episodes do not confirm it counts as a collapse.
        let mut c = Guard::new(&cfg()).unwrap();
        play(&mut c, &[false; 10]);
        play(&mut c, &[true; 10]);
        assert_eq!(play(&mut c, &[false; 10]), [9, 1, 0]);
        assert_eq!(
            (c.phase(), c.lr_scale(), c.report().reverts),
            (GuardPhase::Learn, 0.5, 1)
        );
        assert!(c.learning() && !c.keep_at_end());
        let mut good = Guard::new(&cfg()).unwrap();
        play(&mut good, &[true; 10]);
        assert_eq!(good.phase(), GuardPhase::Stopped);
        assert!(!good.report().kept);
    }

    #[test]
    fn bad_settings_are_refused() {
        for t in [0, 129] {
            let c = GuardConfig {
                trail_episodes: t,
                ..cfg()
            };
            assert!(Guard::new(&c).is_err());
        }
        let c = GuardConfig {
            keep_z: f32::NAN,
            ..cfg()
        };
        assert!(Guard::new(&c).is_err());
    }
}
