//! Loading a state recorded elsewhere (the conformance trace format) into an [`Env`].
//!
//! Invariants: every field is validated (cell codes, grid size, cell count, agent pose, view
//! size, mission grammar) and a bad one is reported as an [`Error`]; nothing here panics.
//! Objects that can move get fresh identities in row-major order, so verifiers can track them.

use core::fmt::Write;

use crate::env::{Env, Task, VIEW_SIZE};
use crate::error::Error;
use crate::grid::Pos;
use crate::layout::RoomLayout;
use crate::levels::TaskKind;
use crate::mission::instr::{Instr, MAX_MISSION_LEN};
use crate::mission::verify::Verifier;
use crate::world::{Color, Object, ObjectKind};

/// A recorded initial state, borrowed from wherever it was parsed.
#[derive(Clone, Copy, Debug)]
pub struct StateSpec<'a> {
    /// Grid width.
    pub width: usize,
    /// Grid height.
    pub height: usize,
    /// `width * height` cells, row-major, each `[type, color, state]`.
    pub cells: &'a [[u8; 3]],
    /// Agent position `[x, y]`.
    pub agent_pos: [i64; 2],
    /// Agent direction, 0..4.
    pub agent_dir: i64,
    /// What the agent carries, if anything.
    pub carrying: Option<[u8; 3]>,
    /// Mission text.
    pub mission: &'a str,
    /// Step budget.
    pub max_steps: u32,
    /// Steps already taken.
    pub step_count: u32,
    /// View size (only 7 is supported).
    pub view_size: i64,
    /// See through walls.
    pub see_through_walls: bool,
    /// How success is decided.
    pub task: TaskKind,
    /// Room layout for location descriptors.
    pub layout: Option<RoomLayout>,
}

impl Env {
    /// Build an environment from a recorded state; the mission's verifier (if any) is reset at
    /// the recorded agent pose, as minigrid does at the start of an episode.
    pub fn from_state(spec: &StateSpec<'_>) -> Result<Env, Error> {
        let mut env = Env::new(spec.width, spec.height)?;
        env.load_state(spec)?;
        Ok(env)
    }

    /// In-place form of [`Env::from_state`].
    pub fn load_state(&mut self, spec: &StateSpec<'_>) -> Result<(), Error> {
        if spec.view_size != VIEW_SIZE as i64 {
            return Err(Error::ViewSize(spec.view_size));
        }
        self.clear(spec.width, spec.height)?;
        let expected = spec.width * spec.height;
        if spec.cells.len() != expected {
            return Err(Error::CellCount {
                expected,
                got: spec.cells.len(),
            });
        }
        let w = spec.width as i32;
        for (k, code) in spec.cells.iter().enumerate() {
            let obj = Object::decode(*code)?.map(|o| self.identify(o));
            self.grid.set(Pos::new(k as i32 % w, k as i32 / w), obj)?;
        }
        if !(0..4).contains(&spec.agent_dir) {
            return Err(Error::BadDirection(spec.agent_dir));
        }
        let [x, y] = spec.agent_pos;
        let bad_pos = Error::BadAgentPos { x, y };
        let pos = Pos::new(
            i32::try_from(x).map_err(|_| bad_pos)?,
            i32::try_from(y).map_err(|_| bad_pos)?,
        );
        if !self.grid.in_bounds(pos) || self.grid.get(pos).is_some_and(|o| !o.can_overlap()) {
            return Err(bad_pos);
        }
        self.agent_pos = pos;
        self.agent_dir = spec.agent_dir as u8;
        self.carrying = match spec.carrying {
            Some(code) => match Object::decode(code)? {
                Some(o) if o.can_pickup() => Some(self.identify(o)),
                _ => return Err(Error::NotCarriable(code[0])),
            },
            None => None,
        };
        self.max_steps = spec.max_steps;
        self.step_count = spec.step_count;
        self.see_through_walls = spec.see_through_walls;
        self.layout = spec.layout;
        self.mission.clear();
        self.mission
            .push_str(spec.mission)
            .map_err(|_| Error::MissionTooLong {
                capacity: MAX_MISSION_LEN,
            })?;
        self.task = match spec.task {
            TaskKind::Goal => Task::Goal,
            TaskKind::Instr => {
                let instr = Instr::parse(spec.mission)?;
                Task::Instr(Verifier::new(&instr, &self.world_view())?)
            }
            TaskKind::PickupNamed => Task::PickupObject(self.find_named(spec.mission)?),
        };
        Ok(())
    }

    fn identify(&mut self, o: Object) -> Object {
        if o.can_pickup() {
            self.grid.identify(o)
        } else {
            o
        }
    }

    /// The identity of the object a "pick up the {color} {type}" mission names.
    fn find_named(&self, mission: &str) -> Result<crate::world::ObjectId, Error> {
        let mut words = mission.split_ascii_whitespace();
        let mut expect = |w: &'static str, i: usize| match words.next() {
            Some(x) if x == w => Ok(()),
            _ => Err(Error::BadMission {
                word: i,
                expected: w,
            }),
        };
        expect("pick", 0)?;
        expect("up", 1)?;
        expect("the", 2)?;
        let color = words
            .next()
            .and_then(Color::from_name)
            .ok_or(Error::BadMission {
                word: 3,
                expected: "a colour",
            })?;
        let kind = words
            .next()
            .and_then(ObjectKind::from_name)
            .filter(|k| k.can_pickup())
            .ok_or(Error::BadMission {
                word: 4,
                expected: "key / ball / box",
            })?;
        if words.next().is_some() {
            return Err(Error::BadMission {
                word: 5,
                expected: "end of mission",
            });
        }
        self.grid
            .objects()
            .find(|(_, o)| o.kind == kind && o.color == color)
            .map(|(_, o)| o.id)
            .ok_or(Error::NoMatchingObject)
    }

    /// Write the grid as minigrid's `pprint_grid` would, for terminal rendering.
    pub fn write_ascii<W: Write>(&self, out: &mut W) -> core::fmt::Result {
        const ARROWS: [&str; 4] = [">>", "VV", "<<", "^^"];
        for y in 0..self.grid.height() {
            for x in 0..self.grid.width() {
                let p = Pos::new(x, y);
                if p == self.agent_pos {
                    out.write_str(ARROWS[(self.agent_dir & 3) as usize])?;
                    continue;
                }
                match self.grid.get(p) {
                    None => out.write_str("  ")?,
                    Some(o) => {
                        let c = o.color.name().bytes().next().unwrap_or(b'?');
                        let c = c.to_ascii_uppercase() as char;
                        let t = match o.kind {
                            ObjectKind::Door => match o.door {
                                crate::world::DoorState::Open => {
                                    out.write_str("__")?;
                                    continue;
                                }
                                crate::world::DoorState::Locked => 'L',
                                crate::world::DoorState::Closed => 'D',
                            },
                            ObjectKind::Wall => 'W',
                            ObjectKind::Floor => 'F',
                            ObjectKind::Key => 'K',
                            ObjectKind::Ball => 'A',
                            ObjectKind::Box => 'B',
                            ObjectKind::Goal => 'G',
                            ObjectKind::Lava => 'V',
                            _ => '?',
                        };
                        out.write_char(t)?;
                        out.write_char(c)?;
                    }
                }
            }
            out.write_char('\n')?;
        }
        Ok(())
    }
}
