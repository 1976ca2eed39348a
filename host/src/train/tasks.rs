//! Which level each episode runs: one level, a mixture (each env draws a level per episode), or
//! an ordered curriculum that advances on a rolling success rate or a frame budget.
//!
//! Invariants: the curriculum only moves between updates ([`Tasks::end_update`]), and episodes
//! are recorded in env order, so the schedule is a deterministic function of the seed.

use std::collections::VecDeque;

use anyhow::Result;
use metarim_core::levels::Level;
use metarim_core::rng::Pcg32;
use serde::{Deserialize, Serialize};

use super::TrainConfig;

/// How levels are scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// One level.
    Single,
    /// Each episode draws a level uniformly.
    Mixture,
    /// Levels in order; advance on success or frame budget.
    Curriculum,
}

/// The curriculum's mutable state (saved in checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TasksState {
    /// Index of the curriculum's current level.
    pub current: usize,
    /// Frames collected since the current level started.
    pub frames_on_level: u64,
    /// Success (1) or failure (0) of the latest episodes on the current level, oldest first.
    pub window: Vec<u8>,
}

/// The level schedule of a run.
#[derive(Clone, Debug)]
pub struct Tasks {
    /// The levels, in config order.
    pub levels: Vec<Level>,
    /// Their ids as given.
    pub ids: Vec<String>,
    /// How they are scheduled.
    pub schedule: Schedule,
    /// BabyAI's done-action rules for every episode ([`TrainConfig::done_actions`]).
    pub done_actions: bool,
    threshold: f64,
    window_len: usize,
    level_frames: u64,
    current: usize,
    frames_on_level: u64,
    window: VecDeque<bool>,
}

impl Tasks {
    /// The schedule `cfg` describes (levels already validated by the config).
    pub fn new(cfg: &TrainConfig) -> Result<Tasks> {
        let ids = cfg.level_ids();
        let levels = ids
            .iter()
            .map(|id| crate::levels::lookup(id))
            .collect::<Result<Vec<_>>>()?;
        let schedule = match (levels.len(), cfg.curriculum) {
            (1, _) => Schedule::Single,
            (_, false) => Schedule::Mixture,
            (_, true) => Schedule::Curriculum,
        };
        Ok(Tasks {
            levels,
            ids,
            schedule,
            done_actions: cfg.done_actions,
            threshold: cfg.curriculum_threshold,
            window_len: cfg.curriculum_window,
            level_frames: cfg.curriculum_level_frames,
            current: 0,
            frames_on_level: 0,
            window: VecDeque::new(),
        })
    }

    /// The level index a new episode runs (draws from `rng` only for a mixture).
    pub fn pick(&self, rng: &mut Pcg32) -> usize {
        match self.schedule {
            Schedule::Single => 0,
            Schedule::Mixture => rng.below(self.levels.len() as u32) as usize,
            Schedule::Curriculum => self.current,
        }
    }

    /// The curriculum's current level (the only one for a single level; 0 for a mixture).
    pub fn current(&self) -> usize {
        self.current
    }

    /// What the progress display calls the current task.
    pub fn current_name(&self) -> String {
        match self.schedule {
            Schedule::Mixture => format!("mixture of {}", self.levels.len()),
            _ => self.ids[self.current].clone(),
        }
    }

    /// Record a finished episode on level `level`.
    pub fn record(&mut self, level: usize, success: bool) {
        if self.schedule == Schedule::Curriculum && level == self.current {
            self.window.push_back(success);
            while self.window.len() > self.window_len {
                self.window.pop_front();
            }
        }
    }

    /// Rolling success rate on the curriculum's current level (None until the window fills).
    pub fn window_success(&self) -> Option<f64> {
        (self.window.len() >= self.window_len)
            .then(|| self.window.iter().filter(|s| **s).count() as f64 / self.window.len() as f64)
    }

    /// Account for `frames` collected and advance the curriculum if due; returns the new level
    /// index when it moved.
    pub fn end_update(&mut self, frames: u64) -> Option<usize> {
        if self.schedule != Schedule::Curriculum {
            return None;
        }
        self.frames_on_level += frames;
        let passed = self.window_success().is_some_and(|s| s >= self.threshold);
        let out_of_budget = self.level_frames > 0 && self.frames_on_level >= self.level_frames;
        if (passed || out_of_budget) && self.current + 1 < self.levels.len() {
            self.current += 1;
            self.frames_on_level = 0;
            self.window.clear();
            return Some(self.current);
        }
        None
    }

    /// The state to checkpoint.
    pub fn state(&self) -> TasksState {
        TasksState {
            current: self.current,
            frames_on_level: self.frames_on_level,
            window: self.window.iter().map(|s| u8::from(*s)).collect(),
        }
    }

    /// Restore a checkpointed state.
    pub fn restore(&mut self, s: &TasksState) -> Result<()> {
        if s.current >= self.levels.len() {
            anyhow::bail!(
                "checkpoint's curriculum position {} is outside the {} configured levels",
                s.current,
                self.levels.len()
            );
        }
        self.current = s.current;
        self.frames_on_level = s.frames_on_level;
        self.window = s.window.iter().map(|b| *b != 0).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(levels: &[&str], curriculum: bool) -> TrainConfig {
        TrainConfig {
            levels: levels.iter().map(|s| s.to_string()).collect(),
            curriculum,
            curriculum_window: 4,
            curriculum_threshold: 0.75,
            ..TrainConfig::device()
        }
    }

    #[test]
    fn curriculum_advances_on_success_and_stops_at_the_end() {
        let mut t = Tasks::new(&cfg(&["GoToObj", "GoToLocal"], true)).unwrap();
        assert_eq!(t.schedule, Schedule::Curriculum);
        for s in [true, false, true] {
            t.record(0, s);
        }
        assert_eq!(t.end_update(100), None, "window not full yet");
        t.record(1, true); // another level's episode does not count
        t.record(0, true);
        assert_eq!(t.window_success(), Some(0.75));
        assert_eq!(t.end_update(100), Some(1));
        for _ in 0..4 {
            t.record(1, true);
        }
        assert_eq!(t.end_update(100), None, "no level after the last");
        let mut rng = Pcg32::new(1);
        assert_eq!(t.pick(&mut rng), 1);
    }

    #[test]
    fn curriculum_frame_budget_and_state_round_trip() {
        let mut c = cfg(&["GoToObj", "GoToLocal", "PickupLoc"], true);
        c.curriculum_level_frames = 250;
        let mut t = Tasks::new(&c).unwrap();
        assert_eq!(t.end_update(200), None);
        assert_eq!(t.end_update(100), Some(1));
        t.record(1, true);
        let s = t.state();
        let mut u = Tasks::new(&c).unwrap();
        u.restore(&s).unwrap();
        assert_eq!(u.state(), s);
        assert!(u.restore(&TasksState { current: 9, ..s }).is_err());
    }

    #[test]
    fn mixture_draws_every_level() {
        let t = Tasks::new(&cfg(&["GoToObj", "GoToLocal", "PickupLoc"], false)).unwrap();
        assert_eq!(t.schedule, Schedule::Mixture);
        let mut rng = Pcg32::new(3);
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[t.pick(&mut rng)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
