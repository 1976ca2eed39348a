//! BabyAI levels (minigrid 3.2.0's `envs/babyai`): each draws a RoomGrid, objects and an
//! instruction, then is validated, rendered and verified the way `RoomGridLevel` does.
//!
//! Invariants:
//! - One attempt = `RoomGrid._gen_grid` + the level's `gen_mission` + `validate_instrs`; an attempt
//!   that fails ([`Error::GenerationFailed`], minigrid's `RecursionError` / `RejectSampling`) is
//!   started over, at most [`super::roomgrid::LEVEL_ATTEMPTS`] times.
//! - The verifier is built at the agent's start pose, and the mission's articles come from the
//!   same match counts ("the" iff exactly one object matched), as minigrid's `surface` and
//!   `reset_verifier` see the same world.
//! - `max_steps = num_navs * room_size^2 * num_rows * num_cols` (none of the registered BabyAI
//!   levels fixes it).

use crate::env::{Env, Task};
use crate::error::Error;
use crate::layout::RoomLayout;
use crate::mission::instr::{write_surface, Action, Clause, Instr, Loc, ObjDesc, MAX_MISSION_LEN};
use crate::mission::verify::{DescState, Verifier};
use crate::rng::numpy::NumpyGenerator;
use crate::world::{Color, ObjectKind};

use super::roomgrid::{rand_elem, rand_subset, retry, Placed, RoomGen};

fn rejected(what: &'static str) -> Error {
    Error::GenerationFailed { what }
}

/// A description naming `p` by type and colour.
fn desc_of(p: &Placed) -> ObjDesc {
    ObjDesc::new(Some(p.obj.kind), Some(p.obj.color))
}

/// `RoomGridLevel.validate_instrs`: PutNext must not name the same object on both sides nor
/// start with the objects already next to each other; with `unblocking`, no key whose colour
/// opens a locked door may be named. Descriptions are resolved at the current (start) pose.
fn validate(g: &RoomGen<'_>, instr: &Instr, unblocking: bool) -> Result<(), Error> {
    let world = g.env.world_view();
    let grid = &g.env.grid;
    let locked_colors = if unblocking {
        g.locked_door_colors()
    } else {
        0
    };
    let (actions, n) = instr.actions();
    for action in actions.iter().take(n).flatten() {
        if let Action::PutNext(a, b) = action {
            let moved = DescState::find(a, &world)?;
            let fixed = DescState::find(b, &world)?;
            for p in moved.positions(grid) {
                if fixed.at(grid, p) {
                    return Err(rejected("PutNext: an object matches both sides"));
                }
                if fixed.next_to(grid, p) {
                    return Err(rejected("PutNext: objects already next to each other"));
                }
            }
        }
        if unblocking {
            let (a, b) = action.descs();
            for d in [Some(a), b].into_iter().flatten() {
                let opens_lock = d.color.is_some_and(|c| locked_colors & (1 << c as u8) != 0);
                if d.kind == Some(ObjectKind::Key) && opens_lock {
                    return Err(rejected("instruction names a key of a locked door"));
                }
            }
        }
    }
    Ok(())
}

/// Verifier (at the start pose), mission text and step budget once an attempt was accepted.
fn finish(env: &mut Env, layout: RoomLayout, instr: &Instr) -> Result<(), Error> {
    env.layout = Some(layout);
    env.task = Task::Instr(Verifier::new(instr, &env.world_view())?);
    let Task::Instr(verifier) = &env.task else {
        return Err(Error::NoMatchingObject);
    };
    let (counts, n) = verifier.match_counts();
    if counts.iter().take(n).any(|&c| c == 0) {
        return Err(Error::NoMatchingObject);
    }
    env.mission.clear();
    write_surface(
        instr,
        |i| counts.get(i).copied().unwrap_or(0),
        &mut env.mission,
    )
    .map_err(|_| Error::MissionTooLong {
        capacity: MAX_MISSION_LEN,
    })?;
    let nav_time_maze = layout.room_size * layout.room_size * layout.num_rows * layout.num_cols;
    env.max_steps = instr.num_navs().saturating_mul(nav_time_maze as u32);
    Ok(())
}

/// `RoomGridLevel._gen_grid` + `reset`: retry `gen_mission` (and validation) until accepted.
fn run_level(
    layout: RoomLayout,
    unblocking: bool,
    rng: &mut NumpyGenerator,
    env: &mut Env,
    mut gen_mission: impl FnMut(&mut RoomGen<'_>) -> Result<Instr, Error>,
) -> Result<(), Error> {
    let instr = retry(|| {
        let mut g = RoomGen::begin(env, rng, layout)?;
        let instr = gen_mission(&mut g)?;
        validate(&g, &instr, unblocking)?;
        Ok(instr)
    })?;
    finish(env, layout, &instr)
}

fn require_reachable(g: &RoomGen<'_>) -> Result<(), Error> {
    if g.objs_reachable() {
        Ok(())
    } else {
        Err(rejected("unreachable object"))
    }
}

const fn single_room(room_size: i32) -> RoomLayout {
    RoomLayout {
        room_size,
        num_rows: 1,
        num_cols: 1,
    }
}

/// `GoToRedBall` (`grey = false`) and `GoToRedBallGrey`: a red ball and 7 distractors (all grey
/// in the Grey variant) in one 8x8 room; "go to the red ball".
pub(crate) fn go_to_red_ball(
    grey: bool,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    run_level(single_room(8), false, rng, env, |g| {
        g.place_agent(None, None)?;
        let ball = g.add_object(0, 0, Some(ObjectKind::Ball), Some(Color::Red))?;
        let dists = g.add_distractors(None, None, 7, false)?;
        if grey {
            for d in &dists {
                g.env.grid.update(d.pos, |o| o.color = Color::Grey);
            }
        }
        require_reachable(g)?;
        Ok(Instr::action(Action::GoTo(desc_of(&ball))))
    })
}

/// `GoToObj`: one object in one 8x8 room; "go to the {color} {type}".
pub(crate) fn go_to_obj(rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    run_level(single_room(8), false, rng, env, |g| {
        g.place_agent(None, None)?;
        let objs = g.add_distractors(None, None, 1, true)?;
        let obj = objs.first().ok_or(rejected("no object"))?;
        Ok(Instr::action(Action::GoTo(desc_of(obj))))
    })
}

/// `GoToLocal` (`GoToLocalS{room_size}N{num_dists}`): go to one of `num_dists` objects in one
/// room, all reachable.
pub(crate) fn go_to_local(
    room_size: i32,
    num_dists: usize,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    run_level(single_room(room_size), false, rng, env, |g| {
        g.place_agent(None, None)?;
        let objs = g.add_distractors(None, None, num_dists, false)?;
        require_reachable(g)?;
        let obj = rand_elem(g.rng, &objs)?;
        Ok(Instr::action(Action::GoTo(desc_of(&obj))))
    })
}

/// `PutNextLocal` (`PutNextLocalS{room_size}N{num_objs}`): `num_objs` distinct objects in one
/// room; "put the A next to the B" for two of them, not already adjacent.
pub(crate) fn put_next_local(
    room_size: i32,
    num_objs: usize,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    run_level(single_room(room_size), false, rng, env, |g| {
        g.place_agent(None, None)?;
        let objs = g.add_distractors(None, None, num_objs, true)?;
        require_reachable(g)?;
        let [a, b] = rand_subset::<2>(g.rng, objs.len())?;
        let (o1, o2) = match (objs.get(a), objs.get(b)) {
            (Some(o1), Some(o2)) => (o1, o2),
            _ => return Err(rejected("PutNextLocal: too few objects")),
        };
        Ok(Instr::action(Action::PutNext(desc_of(o1), desc_of(o2))))
    })
}

/// `GoTo` (and the `GoToObjMaze*` registrations): a maze of `num_rows x num_cols` rooms joined by
/// `connect_all`, `num_dists` objects, all reachable; go to one of them.
pub(crate) fn go_to(
    layout: RoomLayout,
    num_dists: usize,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    run_level(layout, false, rng, env, |g| {
        g.place_agent(None, None)?;
        g.connect_all(&Color::SORTED_NAMES)?;
        let objs = g.add_distractors(None, None, num_dists, false)?;
        require_reachable(g)?;
        let obj = rand_elem(g.rng, &objs)?;
        Ok(Instr::action(Action::GoTo(desc_of(&obj))))
    })
}

/// Layout of `OpenDoor` and `UnlockLocal` (RoomGrid defaults).
pub(crate) const DEFAULT_LAYOUT: RoomLayout = RoomLayout {
    room_size: 8,
    num_rows: 3,
    num_cols: 3,
};

/// `OpenDoor`: four closed doors of distinct colours around the middle room; open the one named
/// by colour or by location relative to the agent.
pub(crate) fn open_door(rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    run_level(DEFAULT_LAYOUT, false, rng, env, |g| {
        let picked = rand_subset::<4>(g.rng, Color::SORTED_NAMES.len())?;
        let mut first = None;
        for (k, &ci) in picked.iter().enumerate() {
            let color = *Color::SORTED_NAMES
                .get(ci)
                .ok_or(rejected("colour index"))?;
            let (door, _) = g.add_door(1, 1, Some(k), Some(color), Some(false))?;
            first.get_or_insert(door);
        }
        let first = first.ok_or(rejected("no door"))?;
        let desc = if g.rng.below(2) == 0 {
            ObjDesc::new(Some(ObjectKind::Door), Some(first.color))
        } else {
            let loc = rand_elem(g.rng, &Loc::ALL)?;
            ObjDesc::new(Some(ObjectKind::Door), None).at(Some(loc))
        };
        g.place_agent(Some(1), Some(1))?;
        Ok(Instr::action(Action::Open(desc)))
    })
}

/// Layout of `OpenRedDoor`.
pub(crate) const OPEN_RED_DOOR_LAYOUT: RoomLayout = RoomLayout {
    room_size: 5,
    num_rows: 1,
    num_cols: 2,
};

/// `OpenRedDoor`: two 5x5 rooms joined by a closed red door; "open the red door".
pub(crate) fn open_red_door(rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    run_level(OPEN_RED_DOOR_LAYOUT, false, rng, env, |g| {
        g.add_door(0, 0, Some(0), Some(Color::Red), Some(false))?;
        g.place_agent(Some(0), Some(0))?;
        Ok(Instr::action(Action::Open(ObjDesc::new(
            Some(ObjectKind::Door),
            Some(Color::Red),
        ))))
    })
}

/// `UnlockLocal`: a locked door of the middle room and its key in that room; "open the door".
pub(crate) fn unlock_local(rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    run_level(DEFAULT_LAYOUT, false, rng, env, |g| {
        let (door, _) = g.add_door(1, 1, None, None, Some(true))?;
        g.add_object(1, 1, Some(ObjectKind::Key), Some(door.color))?;
        g.place_agent(Some(1), Some(1))?;
        Ok(Instr::action(Action::Open(ObjDesc::new(
            Some(ObjectKind::Door),
            None,
        ))))
    })
}

/// Layout of `PickupDist`.
pub(crate) const PICKUP_DIST_LAYOUT: RoomLayout = single_room(7);

/// `PickupDist`: five distinct objects in one 7x7 room; pick up one named by type, colour, or
/// both.
pub(crate) fn pickup_dist(rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    run_level(PICKUP_DIST_LAYOUT, false, rng, env, |g| {
        let objs = g.add_distractors(None, None, 5, true)?;
        g.place_agent(Some(0), Some(0))?;
        let obj = rand_elem(g.rng, &objs)?;
        let (kind, color) = (Some(obj.obj.kind), Some(obj.obj.color));
        let desc = match g.rng.below(3) {
            0 => ObjDesc::new(kind, None),
            1 => ObjDesc::new(None, color),
            _ => ObjDesc::new(kind, color),
        };
        Ok(Instr::action(Action::Pickup(desc)))
    })
}

/// Action kinds `LevelGen` may draw (the registered levels use a subset; tests use them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum ActKind {
    /// "go to".
    GoTo,
    /// "pick up".
    Pickup,
    /// "open".
    Open,
    /// "put ... next to".
    PutNext,
}

/// Instruction shapes `LevelGen` may draw (the registered levels use a subset; tests use them
/// all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum InstrKind {
    /// One action.
    Action,
    /// "A and B".
    And,
    /// "A, then B" / "A after you B", each side an action or a conjunction.
    Seq,
}

/// `LevelGen`'s parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LevelGenCfg {
    /// Rooms.
    pub layout: RoomLayout,
    /// Random objects added (`num_dists`).
    pub num_dists: usize,
    /// Probability of a locked room.
    pub locked_room_prob: f64,
    /// Whether descriptions may use locations.
    pub locations: bool,
    /// Whether objects may block the way (else every object must be reachable).
    pub unblocking: bool,
    /// Whether a named object may sit only in the locked room.
    pub implicit_unlock: bool,
    /// Action kinds drawn.
    pub action_kinds: &'static [ActKind],
    /// Instruction shapes drawn.
    pub instr_kinds: &'static [InstrKind],
}

/// `PickupLoc`: `LevelGen` in one 8x8 room with 8 objects, pickup actions only, locations on.
pub(crate) const PICKUP_LOC: LevelGenCfg = LevelGenCfg {
    layout: single_room(8),
    num_dists: 8,
    locked_room_prob: 0.0,
    locations: true,
    unblocking: false,
    implicit_unlock: true,
    action_kinds: &[ActKind::Pickup],
    instr_kinds: &[InstrKind::Action],
};

/// babyai's `OBJ_TYPES`.
const OBJ_TYPES: [ObjectKind; 4] = [
    ObjectKind::Box,
    ObjectKind::Ball,
    ObjectKind::Key,
    ObjectKind::Door,
];
/// babyai's `OBJ_TYPES_NOT_DOOR`.
const OBJ_TYPES_NOT_DOOR: [ObjectKind; 3] = [ObjectKind::Box, ObjectKind::Ball, ObjectKind::Key];
/// `[None, *COLOR_NAMES]`.
const ANY_COLOR: [Option<Color>; 7] = [
    None,
    Some(Color::Blue),
    Some(Color::Green),
    Some(Color::Grey),
    Some(Color::Purple),
    Some(Color::Red),
    Some(Color::Yellow),
];
/// `rand_obj`'s `max_tries`.
const RAND_OBJ_TRIES: u32 = 100;
/// Bound on `LevelGen`'s unbounded loops.
const LOOP_TRIES: u32 = 1000;

struct LevelGen<'c> {
    cfg: &'c LevelGenCfg,
    locked_room: Option<(i32, i32)>,
}

impl LevelGen<'_> {
    fn gen_mission(&mut self, g: &mut RoomGen<'_>) -> Result<Instr, Error> {
        self.locked_room = None;
        if g.rng.gen_f64() < self.cfg.locked_room_prob {
            self.add_locked_room(g)?;
        }
        g.connect_all(&Color::SORTED_NAMES)?;
        g.add_distractors(None, None, self.cfg.num_dists, false)?;
        let mut placed = false;
        for _ in 0..LOOP_TRIES {
            g.place_agent(None, None)?;
            if self.locked_room.is_none() || g.agent_room() != self.locked_room {
                placed = true;
                break;
            }
        }
        if !placed {
            return Err(rejected("LevelGen: agent always in the locked room"));
        }
        if !self.cfg.unblocking {
            require_reachable(g)?;
        }
        self.rand_instr(g)
    }

    fn add_locked_room(&mut self, g: &mut RoomGen<'_>) -> Result<(), Error> {
        let mut door = None;
        for _ in 0..LOOP_TRIES {
            let i = g.rand_int(0, g.layout.num_cols);
            let j = g.rand_int(0, g.layout.num_rows);
            let k = g.rng.below(4) as usize;
            self.locked_room = Some((i, j));
            if g.neighbor(i, j, k).is_none() {
                continue;
            }
            door = Some(g.add_door(i, j, Some(k), None, Some(true))?.0);
            break;
        }
        let door = door.ok_or(rejected("LevelGen: no wall for a locked door"))?;
        for _ in 0..LOOP_TRIES {
            let i = g.rand_int(0, g.layout.num_cols);
            let j = g.rand_int(0, g.layout.num_rows);
            if Some((i, j)) == self.locked_room {
                continue;
            }
            g.add_object(i, j, Some(ObjectKind::Key), Some(door.color))?;
            return Ok(());
        }
        Err(rejected("LevelGen: no room for the key"))
    }

    fn rand_obj(&self, g: &mut RoomGen<'_>, types: &[ObjectKind]) -> Result<ObjDesc, Error> {
        for _ in 0..=RAND_OBJ_TRIES {
            let color = rand_elem(g.rng, &ANY_COLOR)?;
            let kind = rand_elem(g.rng, types)?;
            let loc = if self.cfg.locations && g.rng.gen_bool() {
                Some(rand_elem(g.rng, &Loc::ALL)?)
            } else {
                None
            };
            let desc = ObjDesc::new(Some(kind), color).at(loc);
            let found = DescState::find(&desc, &g.env.world_view())?;
            if found.count() == 0 {
                continue;
            }
            if let (false, Some((li, lj))) = (self.cfg.implicit_unlock, self.locked_room) {
                let layout = g.layout;
                if found
                    .positions(&g.env.grid)
                    .all(|p| layout.pos_inside(li, lj, p))
                {
                    continue;
                }
            }
            return Ok(desc);
        }
        Err(rejected("rand_obj: no suitable object"))
    }

    fn rand_action(&self, g: &mut RoomGen<'_>) -> Result<Action, Error> {
        Ok(match rand_elem(g.rng, self.cfg.action_kinds)? {
            ActKind::GoTo => Action::GoTo(self.rand_obj(g, &OBJ_TYPES)?),
            ActKind::Pickup => Action::Pickup(self.rand_obj(g, &OBJ_TYPES_NOT_DOOR)?),
            ActKind::Open => Action::Open(self.rand_obj(g, &[ObjectKind::Door])?),
            ActKind::PutNext => {
                let moved = self.rand_obj(g, &OBJ_TYPES_NOT_DOOR)?;
                let fixed = self.rand_obj(g, &OBJ_TYPES)?;
                Action::PutNext(moved, fixed)
            }
        })
    }

    fn rand_clause(&self, g: &mut RoomGen<'_>, kinds: &[InstrKind]) -> Result<Clause, Error> {
        match rand_elem(g.rng, kinds)? {
            InstrKind::Action => Ok(Clause::Action(self.rand_action(g)?)),
            InstrKind::And => {
                let a = self.rand_action(g)?;
                let b = self.rand_action(g)?;
                Ok(Clause::And(a, b))
            }
            InstrKind::Seq => Err(Error::BadLevelParam {
                name: "nested sequence",
            }),
        }
    }

    fn rand_instr(&self, g: &mut RoomGen<'_>) -> Result<Instr, Error> {
        const SIDES: [InstrKind; 2] = [InstrKind::Action, InstrKind::And];
        match rand_elem(g.rng, self.cfg.instr_kinds)? {
            InstrKind::Seq => {
                let a = self.rand_clause(g, &SIDES)?;
                let b = self.rand_clause(g, &SIDES)?;
                Ok(if g.rng.below(2) == 0 {
                    Instr::Before(a, b)
                } else {
                    Instr::After(a, b)
                })
            }
            kind => Ok(Instr::Clause(self.rand_clause(g, &[kind])?)),
        }
    }
}

/// babyai's `LevelGen` with `cfg`.
pub(crate) fn level_gen(
    cfg: &LevelGenCfg,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    let mut lg = LevelGen {
        cfg,
        locked_room: None,
    };
    run_level(cfg.layout, cfg.unblocking, rng, env, |g| lg.gen_mission(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mission::instr::Clause;

    /// babyai's `BossLevel` parameters (`LevelGen` defaults): every action and shape, a locked
    /// room half of the time, locations, unblocking.
    const BOSS: LevelGenCfg = LevelGenCfg {
        layout: DEFAULT_LAYOUT,
        num_dists: 18,
        locked_room_prob: 0.5,
        locations: true,
        unblocking: true,
        implicit_unlock: true,
        action_kinds: &[
            ActKind::GoTo,
            ActKind::Pickup,
            ActKind::Open,
            ActKind::PutNext,
        ],
        instr_kinds: &[InstrKind::Action, InstrKind::And, InstrKind::Seq],
    };

    /// `SynthLoc`-like: no unblocking (all reachable), no implicit unlocking.
    const STRICT: LevelGenCfg = LevelGenCfg {
        unblocking: false,
        implicit_unlock: false,
        ..BOSS
    };

    fn check(cfg: &LevelGenCfg) {
        let mut env = Env::new(8, 8).unwrap();
        let mut shapes = [0usize; 3];
        for seed in 0..40u64 {
            let mut rng = NumpyGenerator::new(seed);
            level_gen(cfg, &mut rng, &mut env).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let Task::Instr(v) = &env.task else {
                panic!("seed {seed}: no instruction")
            };
            let instr = Instr::parse(&env.mission).unwrap();
            assert_eq!(&instr, v.instr(), "{}", env.mission);
            assert_eq!(
                env.max_steps,
                instr.num_navs() * 8 * 8 * 9,
                "{}",
                env.mission
            );
            shapes[match instr {
                Instr::Clause(Clause::Action(_)) => 0,
                Instr::Clause(Clause::And(..)) => 1,
                _ => 2,
            }] += 1;
            if !cfg.unblocking {
                assert!(super::super::roomgrid::objs_reachable(&env), "seed {seed}");
            }
            let (actions, n) = instr.actions();
            for (a, av) in actions.iter().take(n).flatten().zip(v.actions()) {
                if let Action::PutNext(..) = a {
                    let (moved, fixed) = av.descs();
                    for p in moved.positions(&env.grid) {
                        assert!(!fixed.at(&env.grid, p), "{}", env.mission);
                        assert!(!fixed.next_to(&env.grid, p), "{}", env.mission);
                    }
                }
            }
        }
        assert!(shapes.iter().all(|&s| s > 0), "{shapes:?}");
    }

    #[test]
    fn level_gen_full_grammar() {
        check(&BOSS);
        check(&STRICT);
    }

    #[test]
    fn rand_subset_is_distinct_and_bounded() {
        let mut rng = NumpyGenerator::new(1);
        for _ in 0..100 {
            let s = rand_subset::<4>(&mut rng, 6).unwrap();
            for (i, a) in s.iter().enumerate() {
                assert!(*a < 6);
                assert!(!s[i + 1..].contains(a));
            }
        }
        assert!(rand_subset::<3>(&mut rng, 2).is_err());
        assert!(rand_subset::<1>(&mut rng, 65).is_err());
    }
}
