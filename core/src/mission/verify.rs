//! Verifiers: decide after every step whether a BabyAI instruction succeeded, failed, or goes on.
//!
//! This follows babyai's `verifier.py` (minigrid 3.2.0) step for step, quirks included:
//! - The objects a description names are fixed at the episode's start (locations relative to the
//!   agent's *start* pose); their positions (`obj_poss`) are refreshed only after a `drop`.
//! - `GoTo` succeeds after any action that leaves a remembered position in front of the agent.
//! - `Pickup` and `PutNext` remember what was carried when they were last asked.
//! - In a sequence, the second part is only asked once the first succeeded, and is then asked about
//!   the very action that completed the first.
//!
//! Object identity: objects that can move (key, ball, box) carry an [`ObjectId`]; everything else
//! (walls, doors, goal, ...) never moves, so it is tracked by its position.

use crate::error::Error;
use crate::grid::{Grid, Pos, MAX_CELLS};
use crate::layout::RoomLayout;
use crate::mission::instr::{Action as InstrAction, Clause, Instr, Loc, ObjDesc};
use crate::world::{Object, ObjectId};

/// Direction vectors, minigrid's `DIR_TO_VEC`.
pub const DIR_TO_VEC: [(i32, i32); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];

/// Capacity of identities a verifier can track (ids must be below this).
pub const MAX_TRACKED_IDS: usize = 2048;

/// A fixed-capacity bit set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitSet<const WORDS: usize> {
    words: [u64; WORDS],
}

impl<const WORDS: usize> Default for BitSet<WORDS> {
    fn default() -> Self {
        BitSet { words: [0; WORDS] }
    }
}

impl<const WORDS: usize> BitSet<WORDS> {
    /// Set bit `i`; returns false when `i` is beyond capacity.
    #[inline]
    pub fn insert(&mut self, i: usize) -> bool {
        match self.words.get_mut(i / 64) {
            Some(w) => {
                *w |= 1 << (i % 64);
                true
            }
            None => false,
        }
    }

    /// Whether bit `i` is set (false beyond capacity).
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .map(|w| w & (1 << (i % 64)) != 0)
            .unwrap_or(false)
    }

    /// Clear every bit.
    #[inline]
    pub fn clear(&mut self) {
        self.words = [0; WORDS];
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Iterate set bits in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut bits = w;
            core::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// Set of grid cells.
pub type CellSet = BitSet<{ MAX_CELLS / 64 }>;
/// Set of object identities.
pub type IdSet = BitSet<{ MAX_TRACKED_IDS / 64 }>;

/// What a verifier sees of the world.
#[derive(Clone, Copy, Debug)]
pub struct WorldView<'a> {
    /// The grid.
    pub grid: &'a Grid,
    /// The agent's position.
    pub agent_pos: Pos,
    /// The agent's direction (0..4).
    pub agent_dir: u8,
    /// What the agent carries.
    pub carrying: Option<&'a Object>,
    /// Room layout (location descriptors use the agent's room); `None`: the whole grid is a room.
    pub layout: Option<&'a RoomLayout>,
}

impl WorldView<'_> {
    /// The cell in front of the agent.
    pub fn front_pos(&self) -> Pos {
        let (dx, dy) = DIR_TO_VEC[(self.agent_dir & 3) as usize];
        self.agent_pos.offset(dx, dy)
    }

    fn carrying_id(&self) -> Option<ObjectId> {
        self.carrying.map(|o| o.id)
    }
}

/// The objects a description matched at the start, and their current positions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescState {
    /// Matched movable objects, by identity.
    ids: IdSet,
    /// Matched immovable objects, by position.
    fixed: CellSet,
    /// Number of matched objects (`len(obj_set)`).
    count: usize,
    /// Current positions of matched objects in the grid (`obj_poss`).
    poss: CellSet,
}

fn cell_index(grid: &Grid, p: Pos) -> usize {
    (p.y * grid.width() + p.x) as usize
}

impl DescState {
    /// babyai's `find_matching_objs(env, use_location=True)`: match objects at the current pose.
    pub fn find(desc: &ObjDesc, world: &WorldView<'_>) -> Result<DescState, Error> {
        let mut st = DescState::default();
        let room = world
            .layout
            .and_then(|l| l.room_of(world.agent_pos).map(|r| (l, r)));
        let (dx, dy) = DIR_TO_VEC[(world.agent_dir & 3) as usize];
        let (rx, ry) = (-dy, dx);
        for (p, obj) in world.grid.objects() {
            if desc.kind.is_some_and(|k| obj.kind != k)
                || desc.color.is_some_and(|c| obj.color != c)
            {
                continue;
            }
            if let Some(loc) = desc.loc {
                if let Some((l, (i, j))) = room {
                    if !l.pos_inside(i, j, p) {
                        continue;
                    }
                }
                let (vx, vy) = (p.x - world.agent_pos.x, p.y - world.agent_pos.y);
                let along = vx * dx + vy * dy;
                let across = vx * rx + vy * ry;
                let ok = match loc {
                    Loc::Left => across < 0,
                    Loc::Right => across > 0,
                    Loc::Front => along > 0,
                    Loc::Behind => along < 0,
                };
                if !ok {
                    continue;
                }
            }
            if obj.id == ObjectId::NONE {
                st.fixed.insert(cell_index(world.grid, p));
            } else if !st.ids.insert(obj.id.0 as usize) {
                return Err(Error::TooManyMatches {
                    capacity: MAX_TRACKED_IDS,
                });
            }
            st.poss.insert(cell_index(world.grid, p));
            st.count += 1;
        }
        Ok(st)
    }

    /// babyai's `find_matching_objs(env, use_location=False)`: refresh positions of the tracked
    /// objects (a carried object has none).
    pub fn refresh(&mut self, grid: &Grid) {
        self.poss.clear();
        for (p, obj) in grid.objects() {
            let i = cell_index(grid, p);
            let tracked = if obj.id == ObjectId::NONE {
                self.fixed.contains(i)
            } else {
                self.ids.contains(obj.id.0 as usize)
            };
            if tracked {
                self.poss.insert(i);
            }
        }
    }

    /// Number of objects matched at the start.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether the object with identity `id` was matched.
    pub fn tracks(&self, id: ObjectId) -> bool {
        id != ObjectId::NONE && self.ids.contains(id.0 as usize)
    }

    /// Whether a current position equals `p`.
    pub fn at(&self, grid: &Grid, p: Pos) -> bool {
        grid.in_bounds(p) && self.poss.contains(cell_index(grid, p))
    }

    /// Whether a current position is next to (Manhattan distance 1) `p`.
    pub fn next_to(&self, grid: &Grid, p: Pos) -> bool {
        [(1, 0), (-1, 0), (0, 1), (0, -1)]
            .iter()
            .any(|&(dx, dy)| self.at(grid, p.offset(dx, dy)))
    }

    /// Current positions, row-major.
    pub fn positions<'a>(&'a self, grid: &'a Grid) -> impl Iterator<Item = Pos> + 'a {
        let w = grid.width() as usize;
        self.poss
            .iter()
            .map(move |i| Pos::new((i % w) as i32, (i / w) as i32))
    }
}

/// Result of verifying one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Keep going.
    Continue,
    /// The instruction is complete.
    Success,
    /// The episode fails: a `done` that did not follow a completing step (done-action rules
    /// only).
    Failure,
}

/// Per-action verifier state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionVerifier {
    action: InstrAction,
    desc_a: DescState,
    desc_b: DescState,
    pre_carrying: Option<ObjectId>,
    /// Done-action rules: whether the last step (not a `done`) completed the action.
    last_step_match: bool,
}

impl ActionVerifier {
    fn new(action: InstrAction, world: &WorldView<'_>) -> Result<Self, Error> {
        let (a, b) = action.descs();
        Ok(ActionVerifier {
            action,
            desc_a: DescState::find(&a, world)?,
            desc_b: match b {
                Some(b) => DescState::find(&b, world)?,
                None => DescState::default(),
            },
            pre_carrying: None,
            last_step_match: false,
        })
    }

    /// The description states (second is empty except for PutNext).
    pub fn descs(&self) -> (&DescState, &DescState) {
        (&self.desc_a, &self.desc_b)
    }

    fn refresh(&mut self, grid: &Grid) {
        self.desc_a.refresh(grid);
        if matches!(self.action, InstrAction::PutNext(..)) {
            self.desc_b.refresh(grid);
        }
    }

    /// babyai's `ActionInstr.verify`. With `done_actions` (minigrid's `BABYAI_DONE_ACTIONS`)
    /// a `done` succeeds if the step before it completed the action and fails otherwise; any
    /// other action only records whether it completed the action (Python returns `None`,
    /// which every caller treats as "continue").
    fn verify(&mut self, action: u8, world: &WorldView<'_>, done_actions: bool) -> Status {
        const DONE: u8 = 6;
        if !done_actions {
            return self.verify_action(action, world);
        }
        if action == DONE {
            return if self.last_step_match {
                Status::Success
            } else {
                Status::Failure
            };
        }
        self.last_step_match = self.verify_action(action, world) == Status::Success;
        Status::Continue
    }

    /// babyai's `verify_action`: whether `action`, just applied, completed the action.
    fn verify_action(&mut self, action: u8, world: &WorldView<'_>) -> Status {
        const PICKUP: u8 = 3;
        const DROP: u8 = 4;
        const TOGGLE: u8 = 5;
        match self.action {
            InstrAction::GoTo(_) => {
                if self.desc_a.at(world.grid, world.front_pos()) {
                    Status::Success
                } else {
                    Status::Continue
                }
            }
            InstrAction::Open(_) => {
                if action != TOGGLE {
                    return Status::Continue;
                }
                let front = world.front_pos();
                match world.grid.get(front) {
                    Some(o)
                        if o.kind == crate::world::ObjectKind::Door
                            && o.door == crate::world::DoorState::Open
                            && self.desc_a.at(world.grid, front) =>
                    {
                        Status::Success
                    }
                    _ => Status::Continue,
                }
            }
            InstrAction::Pickup(_) => {
                let pre = self.pre_carrying;
                self.pre_carrying = world.carrying_id();
                if action != PICKUP {
                    return Status::Continue;
                }
                if pre.is_none() && world.carrying_id().is_some_and(|id| self.desc_a.tracks(id)) {
                    return Status::Success;
                }
                Status::Continue
            }
            InstrAction::PutNext(..) => {
                let pre = self.pre_carrying;
                self.pre_carrying = world.carrying_id();
                if action != DROP {
                    return Status::Continue;
                }
                let Some(pre) = pre else {
                    return Status::Continue;
                };
                if !self.desc_a.tracks(pre) {
                    return Status::Continue;
                }
                // The moved object's current position: in the grid, or nowhere if still carried.
                match world.grid.find(pre) {
                    Some(p) if self.desc_b.next_to(world.grid, p) => Status::Success,
                    _ => Status::Continue,
                }
            }
        }
    }
}

/// Progress of one operand of a sequence: babyai stores `False` before the first check, then
/// the last status string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Done {
    NotYet,
    Is(Status),
}

impl Done {
    fn success(self) -> bool {
        self == Done::Is(Status::Success)
    }
}

/// Verifier of a clause (action or conjunction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClauseVerifier {
    a: ActionVerifier,
    b: Option<ActionVerifier>,
    a_done: Done,
    b_done: Done,
}

impl ClauseVerifier {
    fn new(c: &Clause, world: &WorldView<'_>) -> Result<Self, Error> {
        Ok(match *c {
            Clause::Action(a) => ClauseVerifier {
                a: ActionVerifier::new(a, world)?,
                b: None,
                a_done: Done::NotYet,
                b_done: Done::NotYet,
            },
            Clause::And(a, b) => ClauseVerifier {
                a: ActionVerifier::new(a, world)?,
                b: Some(ActionVerifier::new(b, world)?),
                a_done: Done::NotYet,
                b_done: Done::NotYet,
            },
        })
    }

    fn refresh(&mut self, grid: &Grid) {
        self.a.refresh(grid);
        if let Some(b) = self.b.as_mut() {
            b.refresh(grid);
        }
    }

    /// babyai's `AndInstr.verify` (or the action's own for a single action). Under done-action
    /// rules minigrid fails a conjunction whose two parts both fail only when the action is
    /// the `Actions.done` member itself (`is`), never for an integer action as gymnasium
    /// passes them; this follows the integer case.
    fn verify(&mut self, action: u8, world: &WorldView<'_>, done_actions: bool) -> Status {
        let Some(b) = self.b.as_mut() else {
            return self.a.verify(action, world, done_actions);
        };
        if !self.a_done.success() {
            self.a_done = Done::Is(self.a.verify(action, world, done_actions));
        }
        if !self.b_done.success() {
            self.b_done = Done::Is(b.verify(action, world, done_actions));
        }
        if self.a_done.success() && self.b_done.success() {
            Status::Success
        } else {
            Status::Continue
        }
    }

    /// The action verifiers of this clause, in surface order.
    pub fn actions(&self) -> impl Iterator<Item = &ActionVerifier> {
        core::iter::once(&self.a).chain(self.b.as_ref())
    }
}

/// Verifier of a whole instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    instr: Instr,
    first: ClauseVerifier,
    second: Option<ClauseVerifier>,
    first_done: Done,
    second_done: Done,
}

impl Verifier {
    /// babyai's `reset_verifier`: resolve every description against the world as it is now (the
    /// agent's start pose).
    pub fn new(instr: &Instr, world: &WorldView<'_>) -> Result<Self, Error> {
        let (first, second) = match instr {
            Instr::Clause(c) => (ClauseVerifier::new(c, world)?, None),
            Instr::Before(a, b) | Instr::After(a, b) => (
                ClauseVerifier::new(a, world)?,
                Some(ClauseVerifier::new(b, world)?),
            ),
        };
        Ok(Verifier {
            instr: *instr,
            first,
            second,
            first_done: Done::NotYet,
            second_done: Done::NotYet,
        })
    }

    /// The instruction being verified.
    pub fn instr(&self) -> &Instr {
        &self.instr
    }

    /// Number of objects each description matched at the start, in surface order (for "the"/"a").
    pub fn match_counts(&self) -> ([usize; 8], usize) {
        let mut out = [0; 8];
        let mut n = 0;
        let clauses = core::iter::once(&self.first).chain(self.second.as_ref());
        for c in clauses {
            for a in c.actions() {
                out[n] = a.desc_a.count();
                n += 1;
                if matches!(a.action, InstrAction::PutNext(..)) {
                    out[n] = a.desc_b.count();
                    n += 1;
                }
            }
        }
        (out, n)
    }

    /// Every action verifier, in surface order.
    pub fn actions(&self) -> impl Iterator<Item = &ActionVerifier> {
        self.first
            .actions()
            .chain(self.second.iter().flat_map(|c| c.actions()))
    }

    /// babyai's `update_objs_poss`, called after every `drop`.
    pub fn refresh_positions(&mut self, grid: &Grid) {
        self.first.refresh(grid);
        if let Some(s) = self.second.as_mut() {
            s.refresh(grid);
        }
    }

    /// babyai's `verify(action)`, called after the environment applied `action`;
    /// `done_actions` selects BabyAI's done-action rules (minigrid's `BABYAI_DONE_ACTIONS`,
    /// [`crate::env::Env::done_actions`]).
    pub fn verify(&mut self, action: u8, world: &WorldView<'_>, done_actions: bool) -> Status {
        match (self.instr, self.second.as_mut()) {
            (Instr::Before(..), Some(second)) => {
                // Python recursion: once the first part succeeds, the same action is checked
                // against the second part.
                if !self.first_done.success() {
                    let s = self.first.verify(action, world, done_actions);
                    self.first_done = Done::Is(s);
                    match s {
                        Status::Failure => return Status::Failure,
                        Status::Success => {}
                        Status::Continue => return Status::Continue,
                    }
                }
                let s = second.verify(action, world, done_actions);
                self.second_done = Done::Is(s);
                s
            }
            (Instr::After(..), Some(second)) => {
                if !self.second_done.success() {
                    let s = second.verify(action, world, done_actions);
                    self.second_done = Done::Is(s);
                    match s {
                        Status::Failure => return Status::Failure,
                        Status::Success => {}
                        Status::Continue => return Status::Continue,
                    }
                }
                let s = self.first.verify(action, world, done_actions);
                self.first_done = Done::Is(s);
                s
            }
            _ => self.first.verify(action, world, done_actions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Action, Env, Task};
    use crate::world::{Color, ObjectKind};

    /// A 7x7 walled room, agent at (3, 3) facing right, a red ball at (5, 3) and a blue key at
    /// (3, 5), with `mission` verified.
    fn room(mission: &str) -> Env {
        let mut env = Env::new(7, 7).unwrap();
        env.grid.wall_rect(0, 0, 7, 7);
        let ball = env.grid.identify(Object::new(ObjectKind::Ball, Color::Red));
        let key = env.grid.identify(Object::new(ObjectKind::Key, Color::Blue));
        env.grid.set(Pos::new(5, 3), Some(ball)).unwrap();
        env.grid.set(Pos::new(3, 5), Some(key)).unwrap();
        env.agent_pos = Pos::new(3, 3);
        env.agent_dir = 0;
        env.layout = Some(RoomLayout {
            room_size: 7,
            num_rows: 1,
            num_cols: 1,
        });
        env.max_steps = 100;
        let instr = Instr::parse(mission).unwrap();
        env.task = Task::Instr(Verifier::new(&instr, &env.world_view()).unwrap());
        env
    }

    #[test]
    fn before_checks_the_second_part_on_the_completing_action() {
        // Facing the ball after one step satisfies both GoTo clauses at once.
        let mut env = room("go to the red ball, then go to a ball");
        let out = env.step(Action::Forward);
        assert!(out.terminated);
        assert!((out.reward - (1.0 - 0.9 / 100.0)).abs() < 1e-6);
    }

    #[test]
    fn after_requires_the_second_clause_first() {
        let mut env = room("go to the red ball after you pick up the blue key");
        let mut step = |a| env.step(a).terminated;
        assert!(!step(Action::Forward)); // (4, 3) facing the ball: too early
        assert!(!step(Action::Right)); // facing down
        assert!(!step(Action::Forward)); // (4, 4)
        assert!(!step(Action::Forward)); // (4, 5)
        assert!(!step(Action::Right)); // facing left: the key at (3, 5)
        assert!(!step(Action::Pickup)); // second clause done; the ball is not in front
        assert!(!step(Action::Right)); // facing up
        assert!(!step(Action::Forward)); // (4, 4)
        assert!(!step(Action::Forward)); // (4, 3)
        assert!(
            step(Action::Right),
            "facing the ball after the key was picked up"
        );
    }

    #[test]
    fn put_next_and_locations() {
        let mut env = room("put the blue key next to the red ball");
        // Key is behind-right of the agent facing right: (3,5) has dot(v, right=(0,1)) > 0.
        let Task::Instr(v) = &env.task else {
            unreachable!()
        };
        assert_eq!(v.match_counts().0[..2], [1, 1]);
        let loc = room("pick up a key on your right");
        let Task::Instr(v) = &loc.task else {
            unreachable!()
        };
        assert_eq!(v.match_counts().0[0], 1);
        let left = room("pick up a key on your left");
        let Task::Instr(v) = &left.task else {
            unreachable!()
        };
        assert_eq!(v.match_counts().0[0], 0);
        // Turn to face the key: right (down), forward to (3, 4), pick it up.
        env.step(Action::Right);
        env.step(Action::Forward);
        env.step(Action::Pickup);
        // Turn left (facing right), drop at (4, 4): not next to the ball at (5, 3).
        env.step(Action::Left);
        assert!(!env.step(Action::Drop).terminated);
        env.step(Action::Pickup);
        env.step(Action::Left); // facing up: (3, 3) empty
        env.step(Action::Forward); // at (3, 3)
        env.step(Action::Right); // facing right: (4, 3) is next to the ball at (5, 3)
        let out = env.step(Action::Drop);
        assert!(out.terminated && out.reward > 0.0);
    }

    /// `room(mission)` under BabyAI's done-action rules.
    fn done_room(mission: &str) -> Env {
        let mut env = room(mission);
        env.done_actions = true;
        env
    }

    #[test]
    fn done_actions_succeed_only_by_done_after_the_completing_step() {
        let mut env = done_room("go to the red ball");
        // Facing the ball completes the action but does not end the episode...
        assert!(!env.step(Action::Forward).terminated);
        // ... the `done` right after it does, with the reward of step 2.
        let out = env.step(Action::Done);
        assert!(out.terminated);
        assert!((out.reward - (1.0 - 0.9 * 2.0 / 100.0)).abs() < 1e-6);

        // Without the rules, facing it is enough.
        let mut env = room("go to the red ball");
        assert!(env.step(Action::Forward).terminated);
    }

    #[test]
    fn done_actions_fail_on_any_other_done() {
        // `done` before reaching the ball.
        let mut env = done_room("go to the red ball");
        let out = env.step(Action::Done);
        assert!(out.terminated && out.reward == 0.0);
        // `done` one step late: the step before it (turning away) did not complete the action.
        let mut env = done_room("go to the red ball");
        env.step(Action::Forward);
        env.step(Action::Left);
        let out = env.step(Action::Done);
        assert!(out.terminated && out.reward == 0.0);
        // Turning back completes it again, and `done` then succeeds.
        let mut env = done_room("go to the red ball");
        env.step(Action::Forward);
        env.step(Action::Left);
        env.step(Action::Right);
        let out = env.step(Action::Done);
        assert!(out.terminated && out.reward > 0.0);
    }

    #[test]
    fn done_actions_in_conjunctions_and_sequences_follow_minigrid() {
        // "and": one `done` after a step that completes both parts succeeds.
        let mut env = done_room("go to the red ball and go to a ball");
        env.step(Action::Forward);
        let out = env.step(Action::Done);
        assert!(out.terminated && out.reward > 0.0);
        // "and" with both parts failing on `done` goes on (minigrid fails it only for the enum
        // member itself, never for an integer action).
        let mut env = done_room("go to the red ball and go to the blue key");
        let out = env.step(Action::Done);
        assert!(!out.terminated);
        // "then": the `done` that completes the first part is checked against the second,
        // which no step has completed yet, so it fails, as in minigrid.
        let mut env = done_room("go to the red ball, then go to a ball");
        env.step(Action::Forward);
        let out = env.step(Action::Done);
        assert!(out.terminated && out.reward == 0.0);
    }

    #[test]
    fn done_actions_survive_a_level_reset() {
        let level = crate::levels::Level::from_id("BabyAI-GoToLocal-v0").unwrap();
        let mut env = Env::new(8, 8).unwrap();
        env.done_actions = true;
        level.reset(&mut env, 3).unwrap();
        assert!(env.done_actions);
    }
}
