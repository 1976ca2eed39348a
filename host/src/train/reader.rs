//! A scripted agent that reads its mission perfectly: the yardstick of the grounding check.
//!
//! `eval`'s grounding check shows a policy another episode's mission and counts how often the
//! episode's own mission still succeeds. What that figure should be for an agent that reads
//! perfectly depends on what such an agent does when the shown mission names an object that is
//! not there, and after it has carried the shown mission out (the episode goes on, since the
//! level judges its own mission). This agent answers both the way a reader would, so its
//! swapped-mission success is what reading alone leaves.
//!
//! Invariants:
//! - It acts only on what it has seen: its own pose (as odometry would give it) and the cells
//!   of its 7x7 views so far, never the hidden grid.
//! - It follows `go to` missions (BabyAI's GoTo family, no location words). Goal: stand facing
//!   an object that matches the description (type and colour, either may be "any"), then stay
//!   there (`done`, which changes nothing), as an agent that believes its task complete.
//! - With no matching object seen, it goes to the nearest pose whose view would show a cell it
//!   has never had in view; when there is none, to the nearest pose facing a cell it has only
//!   seen hidden (behind a wall or a closed door: in another room, through a doorway); once
//!   there is none left either, it stays.
//! - It walks through cells seen to be free and opens closed doors on its way (toggle, then
//!   forward); it never fetches keys, so a target behind a locked door stays out of reach.
//! - What it does when it has nothing left to do is a choice ([`Idle`]): stay, as above, or
//!   wander at random, as a policy never taught what to do then would. Under BabyAI's
//!   done-action rules ([`Env::done_actions`]) facing a match is not yet success: it says
//!   `done` there in either case, and its idle choice applies only when nothing is left to see.
//! - Paths are shortest over poses (cell and direction; left, right and forward each cost one
//!   step; opening a door is not counted); ties go to left, then right, then forward, so an
//!   episode is the same every time.

use anyhow::{bail, Result};
use metarim_core::env::{Action, Env, Observation, VIEW_SIZE};
use metarim_core::grid::Pos;
use metarim_core::mission::instr::{write_surface, Action as InstrAction, Clause, Instr, ObjDesc};
use metarim_core::mission::verify::DIR_TO_VEC;
use metarim_core::rng::Pcg32;
use metarim_core::world::{DoorState, Object, ObjectKind};
use std::collections::VecDeque;

/// The reader's refusal of a mission it cannot follow (anything but a single `go to` without
/// location words); a type of its own, so that callers can tell it from other errors.
#[derive(Debug)]
pub struct CannotFollow {
    /// The mission, as text.
    pub mission: String,
}

impl std::fmt::Display for CannotFollow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the scripted reader follows `go to` missions without location words only \
             (BabyAI's GoTo levels such as BabyAI-GoToLocal-v0), not {:?}",
            self.mission
        )
    }
}

impl std::error::Error for CannotFollow {}

/// What the reader knows of one cell.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Known {
    /// Never inside its view.
    Never,
    /// Inside its view but hidden (behind a wall or a closed door).
    Hidden,
    /// Seen: empty (`None`) or this object, as last seen.
    Seen(Option<Object>),
}

/// What the reader does once it has nothing left to do (it has done what it was shown, or
/// seen every cell it can without finding it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Idle {
    /// Stay (`done`, which changes nothing): what an agent that knows it is finished does.
    #[default]
    Stay,
    /// Walk at random (left, right or forward, uniformly, from the episode's action
    /// generator): an agent that was never taught what to do then, as a policy trained only
    /// on episodes that end at their goal.
    Wander,
}

impl std::str::FromStr for Idle {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stay" => Ok(Idle::Stay),
            "wander" => Ok(Idle::Wander),
            _ => bail!("unknown idle behaviour {s:?} (stay or wander)"),
        }
    }
}

/// The scripted reader of one episode.
#[derive(Clone, Debug)]
pub struct ScriptedReader {
    desc: ObjDesc,
    idle: Idle,
    /// Nothing left to do: from now on it acts as `idle` says.
    finished: bool,
    width: i32,
    height: i32,
    known: Vec<Known>,
}

/// A pose: cell and direction (minigrid's 0 east, 1 south, 2 west, 3 north).
type Pose = (i32, i32, u8);

impl ScriptedReader {
    /// A reader of `instr` in `env`'s world (its size) that acts as `idle` says once it has
    /// nothing left to do; errors on anything but a single `go to` without location words.
    pub fn new(instr: &Instr, env: &Env, idle: Idle) -> Result<Self> {
        let desc = match instr {
            Instr::Clause(Clause::Action(InstrAction::GoTo(d))) if d.loc.is_none() => *d,
            _ => {
                let mut mission = String::new();
                write_surface(instr, |_| 1, &mut mission)?;
                return Err(CannotFollow { mission }.into());
            }
        };
        let (width, height) = (env.grid.width(), env.grid.height());
        Ok(ScriptedReader {
            desc,
            idle,
            finished: false,
            width,
            height,
            known: vec![Known::Never; (width * height) as usize],
        })
    }

    fn index(&self, x: i32, y: i32) -> Option<usize> {
        ((0..self.width).contains(&x) && (0..self.height).contains(&y))
            .then(|| (y * self.width + x) as usize)
    }

    fn known(&self, x: i32, y: i32) -> Option<Known> {
        self.index(x, y).and_then(|i| self.known.get(i).copied())
    }

    /// Take in the view `obs` from the agent's pose in `env`.
    fn look(&mut self, env: &Env, obs: &Observation) {
        for j in 0..VIEW_SIZE {
            for i in 0..VIEW_SIZE {
                let p = env.view_to_world(i, j);
                let Some(k) = self.index(p.x, p.y) else {
                    continue;
                };
                let code = obs[j * VIEW_SIZE + i];
                let seen = if code[0] == ObjectKind::Unseen as u8 {
                    // Hidden now; a cell seen before keeps what was seen.
                    match self.known[k] {
                        Known::Seen(o) => Known::Seen(o),
                        _ => Known::Hidden,
                    }
                } else if code[0] == ObjectKind::Agent as u8 {
                    Known::Seen(None)
                } else {
                    // A code the env wrote is valid; a bad one reads as a wall (impassable).
                    Known::Seen(Object::decode(code).unwrap_or(Some(Object::wall())))
                };
                self.known[k] = seen;
            }
        }
    }

    fn matches(&self, x: i32, y: i32) -> bool {
        let d = &self.desc;
        matches!(self.known(x, y), Some(Known::Seen(Some(o)))
            if d.kind.is_none_or(|k| o.kind == k) && d.color.is_none_or(|c| o.color == c))
    }

    fn free(&self, x: i32, y: i32) -> bool {
        match self.known(x, y) {
            Some(Known::Seen(None)) => true,
            // Open doors and floor; not lava (it ends the episode).
            Some(Known::Seen(Some(o))) => o.can_overlap() && o.kind != ObjectKind::Lava,
            _ => false,
        }
    }

    /// Whether the agent can get onto the cell: free, or a closed door it can open (the path
    /// toggles it first). Locked doors need a key, which the reader never fetches.
    fn passable(&self, x: i32, y: i32) -> bool {
        self.free(x, y) || self.closed_door(x, y)
    }

    fn closed_door(&self, x: i32, y: i32) -> bool {
        matches!(self.known(x, y), Some(Known::Seen(Some(o)))
            if o.kind == ObjectKind::Door && o.door == DoorState::Closed)
    }

    /// Whether the cell in front of `pose` was never seen (out of view or hidden so far).
    fn faces_unknown(&self, (x, y, d): Pose) -> bool {
        let (dx, dy) = DIR_TO_VEC[usize::from(d & 3)];
        matches!(
            self.known(x + dx, y + dy),
            Some(Known::Never | Known::Hidden)
        )
    }

    /// Whether the view from `pose` would take in a cell never in view.
    fn reveals(&self, (x, y, d): Pose) -> bool {
        let (dx, dy) = DIR_TO_VEC[usize::from(d & 3)];
        let (rx, ry) = (-dy, dx);
        let half = (VIEW_SIZE / 2) as i32;
        (0..VIEW_SIZE as i32).any(|f| {
            (-half..=half)
                .any(|r| self.known(x + dx * f + rx * r, y + dy * f + ry * r) == Some(Known::Never))
        })
    }

    /// The first action of a shortest path from `start` to a pose where `goal` holds.
    fn first_step(&self, start: Pose, goal: impl Fn(Pose) -> bool) -> Option<Action> {
        let n = self.known.len() * 4;
        let slot = |(x, y, d): Pose| self.index(x, y).map(|i| i * 4 + usize::from(d));
        let mut first: Vec<Option<Action>> = vec![None; n];
        let mut visited = vec![false; n];
        let mut queue = VecDeque::new();
        visited[slot(start)?] = true;
        queue.push_back(start);
        while let Some(pose @ (x, y, d)) = queue.pop_front() {
            let here = slot(pose)?;
            if pose != start && goal(pose) {
                return first[here];
            }
            let (dx, dy) = DIR_TO_VEC[usize::from(d & 3)];
            let moves = [
                (Action::Left, (x, y, (d + 3) % 4)),
                (Action::Right, (x, y, (d + 1) % 4)),
                (Action::Forward, (x + dx, y + dy, d)),
            ];
            for (action, next) in moves {
                if action == Action::Forward && !self.passable(next.0, next.1) {
                    continue;
                }
                let Some(s) = slot(next) else { continue };
                if !visited[s] {
                    visited[s] = true;
                    first[s] = if pose == start {
                        Some(action)
                    } else {
                        first[here]
                    };
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// The action for this step, from the view `obs` at `env`'s agent pose (only the pose is
    /// read from `env`); `rng` draws the wandering steps of [`Idle::Wander`].
    pub fn act(&mut self, env: &Env, obs: &Observation, rng: &mut Pcg32) -> Action {
        if !self.finished {
            if let Some(a) = self.next_action(env, obs) {
                return a;
            }
            self.finished = true;
            // Under BabyAI's done-action rules the mission is carried out only by saying so:
            // `done` as it faces a match, whatever it would do once idle.
            let front = env.front_pos();
            if env.done_actions && self.matches(front.x, front.y) {
                return Action::Done;
            }
        }
        match self.idle {
            Idle::Stay => Action::Done,
            Idle::Wander => {
                [Action::Left, Action::Right, Action::Forward][rng.next_u32() as usize % 3]
            }
        }
    }

    /// The next step towards facing a match, or towards seeing more; `None` when facing one
    /// already or when there is nothing left to see.
    fn next_action(&mut self, env: &Env, obs: &Observation) -> Option<Action> {
        self.look(env, obs);
        let pos: Pos = env.agent_pos;
        let pose = (pos.x, pos.y, env.agent_dir & 3);
        let front = |(x, y, d): Pose| {
            let (dx, dy) = DIR_TO_VEC[usize::from(d)];
            (x + dx, y + dy)
        };
        let (fx, fy) = front(pose);
        if self.matches(fx, fy) {
            return None;
        }
        let step = self
            .first_step(pose, |p| {
                let (fx, fy) = front(p);
                self.matches(fx, fy)
            })
            // The view just taken leaves nothing unseen from here, so the search starts one
            // step away.
            .or_else(|| self.first_step(pose, |p| self.reveals(p)))
            // Cells seen only as hidden (behind walls and closed doors, in other rooms): stand
            // next to one, facing it, which a doorway allows.
            .or_else(|| self.first_step(pose, |p| self.faces_unknown(p)))?;
        Some(if step == Action::Forward && self.closed_door(fx, fy) {
            Action::Toggle
        } else {
            step
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarim_core::env::{Task, VIEW_CELLS};
    use metarim_core::levels::Level;

    fn own_instr(env: &Env) -> Instr {
        match &env.task {
            Task::Instr(v) => *v.instr(),
            _ => panic!("not a BabyAI level"),
        }
    }

    /// With its own mission the reader carries it out in every episode, in one room and
    /// through the doors of a 3 x 3 maze: if it did not, it would not be the yardstick it
    /// claims to be.
    #[test]
    fn reads_its_own_mission_in_a_room_and_a_maze() {
        reads_its_own_mission("BabyAI-GoToLocal-v0", 200);
        reads_its_own_mission("BabyAI-GoTo-v0", 40);
    }

    fn reads_its_own_mission(id: &str, n: u64) {
        let level = Level::from_id(id).unwrap();
        let mut env = Env::new(8, 8).unwrap();
        let mut obs = [[0u8; 3]; VIEW_CELLS];
        let mut wins = 0;
        for seed in 0..n {
            level.reset(&mut env, seed).unwrap();
            let mut reader = ScriptedReader::new(&own_instr(&env), &env, Idle::Stay).unwrap();
            let mut rng = Pcg32::new(seed);
            loop {
                env.observe(&mut obs);
                let out = env.step(reader.act(&env, &obs, &mut rng));
                if out.terminated || out.truncated {
                    wins += usize::from(out.reward > 0.0);
                    break;
                }
            }
        }
        assert_eq!(wins, n as usize, "{id}");
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        let level = Level::from_id("BabyAI-PickupLoc-v0").unwrap();
        let mut env = Env::new(8, 8).unwrap();
        level.reset(&mut env, 1).unwrap();
        let err = ScriptedReader::new(&own_instr(&env), &env, Idle::Stay).unwrap_err();
        assert!(err.to_string().contains("`go to` missions"), "{err}");
        assert!("sit".parse::<Idle>().is_err());
    }
}
