//! Level generators and the level registry (minigrid 3.2.0 ids and short aliases).
//! STUB: filled in by the levels work.

use crate::env::Env;
use crate::error::Error;
use crate::layout::RoomLayout;
use crate::rng::Pcg32;

/// How a level decides success (used when replaying recorded states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// Goal and lava squares only.
    Goal,
    /// A BabyAI instruction parsed from the mission text.
    Instr,
    /// "pick up the {color} {type}": picking up that (unique) object succeeds.
    PickupNamed,
}

/// A registered level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    layout: Option<RoomLayout>,
    task: TaskKind,
}

impl Level {
    /// Look up a level by minigrid id or alias.
    pub fn from_id(_id: &str) -> Result<Level, Error> {
        Err(Error::UnknownLevel)
    }
    /// Room layout, for RoomGrid levels.
    pub fn layout(&self) -> Option<RoomLayout> {
        self.layout
    }
    /// Success rule.
    pub fn task_kind(&self) -> TaskKind {
        self.task
    }
    /// Generate the level for `seed` into `env`.
    pub fn reset(&self, env: &mut Env, seed: u64) -> Result<(), Error> {
        let mut rng = Pcg32::new(seed);
        self.generate(&mut rng, env)
    }
    /// Generate with `rng` into `env`.
    pub fn generate(&self, _rng: &mut Pcg32, _env: &mut Env) -> Result<(), Error> {
        Err(Error::UnknownLevel)
    }
}
