//! The environment: agent, grid, actions, step semantics and the egocentric observation, as in
//! minigrid 3.2.0's `MiniGridEnv` (plus BabyAI's verifier hook from `RoomGridLevel.step`).
//!
//! Invariants:
//! - `step` never panics: positions outside the grid behave like walls.
//! - The agent never stands on a cell it cannot overlap (walls, closed doors, objects).
//! - The observation is the 7x7 view in front of the agent, agent at `(3, 6)` facing up,
//!   row-major `obs[j * 7 + i]`, invisible cells `[0, 0, 0]`, the agent's cell showing what it
//!   carries.

use crate::error::Error;
use crate::grid::{Grid, Pos, CODE_PAD, CODE_STRIDE, WALL_CODE};
use crate::layout::RoomLayout;
use crate::mission::instr::MissionText;
use crate::mission::verify::{Status, Verifier, WorldView, DIR_TO_VEC};
use crate::world::{encode_cell, DoorState, Object, ObjectId, ObjectKind};

/// Side of the agent's view.
pub const VIEW_SIZE: usize = 7;
/// Cells in the agent's view.
pub const VIEW_CELLS: usize = VIEW_SIZE * VIEW_SIZE;
/// One observation: `[type, color, state]` per view cell, row-major.
pub type Observation = [[u8; 3]; VIEW_CELLS];

/// For each direction, the code-plane offset of every view cell `(i, j)` (row-major) from the
/// agent's cell: `f * dir + r * right` with `f = 6 - j` cells ahead and `r = i - 3` to the right.
const VIEW_OFFSETS: [[i32; VIEW_CELLS]; 4] = view_offsets();

const fn view_offsets() -> [[i32; VIEW_CELLS]; 4] {
    let stride = CODE_STRIDE as i32;
    let mut out = [[0i32; VIEW_CELLS]; 4];
    let mut d = 0;
    while d < 4 {
        let (dx, dy) = DIR_TO_VEC[d];
        let (rx, ry) = (-dy, dx);
        let mut k = 0;
        while k < VIEW_CELLS {
            let (i, j) = ((k % VIEW_SIZE) as i32, (k / VIEW_SIZE) as i32);
            let f = VIEW_SIZE as i32 - 1 - j;
            let r = i - (VIEW_SIZE / 2) as i32;
            out[d][k] = (dx * f + rx * r) + (dy * f + ry * r) * stride;
            k += 1;
        }
        d += 1;
    }
    out
}

indexed_enum! {
    /// The seven actions, with minigrid's indices.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Action {
        /// Turn left.
        Left = 0,
        /// Turn right.
        Right = 1,
        /// Move forward.
        Forward = 2,
        /// Pick up the object in front.
        Pickup = 3,
        /// Drop the carried object in front.
        Drop = 4,
        /// Toggle (open/close/unlock a door, open a box).
        Toggle = 5,
        /// Done (no effect on the world).
        Done = 6,
    }
}

impl Action {
    /// The action with index `i`.
    pub fn from_index(i: i64) -> Result<Action, Error> {
        usize::try_from(i)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or(Error::BadAction(i))
    }
}

/// What decides success beyond minigrid's own goal and lava squares.
// No heap in core, so the verifier (a few KB of fixed-capacity sets) lives inline.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Only the grid decides: reaching a goal square succeeds, lava ends the episode.
    Goal,
    /// A BabyAI instruction and its verifier.
    Instr(Verifier),
    /// Picking up this particular object succeeds (UnlockPickup, KeyCorridor).
    PickupObject(ObjectId),
}

/// The result of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// Reward: `1 - 0.9 * step_count / max_steps` on success, else 0.
    pub reward: f32,
    /// The episode ended (success, failure, lava).
    pub terminated: bool,
    /// The step budget ran out.
    pub truncated: bool,
}

/// One gridworld episode's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Env {
    /// The world.
    pub grid: Grid,
    /// Agent position.
    pub agent_pos: Pos,
    /// Agent direction: 0 +x, 1 +y, 2 -x, 3 -y.
    pub agent_dir: u8,
    /// What the agent carries.
    pub carrying: Option<Object>,
    /// Steps taken this episode.
    pub step_count: u32,
    /// Step budget (truncation).
    pub max_steps: u32,
    /// See through walls (off in every BabyAI level).
    pub see_through_walls: bool,
    /// Room layout of RoomGrid levels (location descriptors need it).
    pub layout: Option<RoomLayout>,
    /// The mission text.
    pub mission: MissionText,
    /// The success condition.
    pub task: Task,
    /// BabyAI's done-action rules (minigrid's `BABYAI_DONE_ACTIONS` environment variable): a
    /// BabyAI instruction succeeds only on a `done` right after the step that completed it, and
    /// a `done` at any other time ends the episode with no reward. Off by default, as in
    /// minigrid; levels without an instruction ignore it. A setting of the environment, not of
    /// one episode: [`Env::clear`] and level resets keep it.
    pub done_actions: bool,
}

impl Env {
    /// The empty 3x3 world as a constant (equal to `Env::new(3, 3)`): a `static` can start from
    /// it with no stack copy (the struct is over 20 KB), then [`Env::clear`] or a level's
    /// `reset` rebuilds it in place.
    pub const EMPTY: Env = Env {
        grid: Grid::EMPTY,
        agent_pos: Pos::new(1, 1),
        agent_dir: 0,
        carrying: None,
        step_count: 0,
        max_steps: 100,
        see_through_walls: false,
        layout: None,
        mission: MissionText::new(),
        task: Task::Goal,
        done_actions: false,
    };

    /// An empty `width x height` world with the agent at (1, 1) facing right, no mission.
    pub fn new(width: usize, height: usize) -> Result<Env, Error> {
        Ok(Env {
            grid: Grid::new(width, height)?,
            ..Env::EMPTY
        })
    }

    /// Clear to an empty `width x height` world in place, keeping the allocation-free buffers
    /// and the rules ([`Env::done_actions`]).
    pub fn clear(&mut self, width: usize, height: usize) -> Result<(), Error> {
        self.grid.reset(width, height)?;
        self.agent_pos = Pos::new(1, 1);
        self.agent_dir = 0;
        self.carrying = None;
        self.step_count = 0;
        self.max_steps = 100;
        self.see_through_walls = false;
        self.layout = None;
        self.mission.clear();
        self.task = Task::Goal;
        Ok(())
    }

    /// Direction vector of the agent.
    #[inline]
    pub fn dir_vec(&self) -> (i32, i32) {
        DIR_TO_VEC[(self.agent_dir & 3) as usize]
    }

    /// The cell in front of the agent.
    #[inline]
    pub fn front_pos(&self) -> Pos {
        let (dx, dy) = self.dir_vec();
        self.agent_pos.offset(dx, dy)
    }

    /// What a verifier sees.
    pub fn world_view(&self) -> WorldView<'_> {
        WorldView {
            grid: &self.grid,
            agent_pos: self.agent_pos,
            agent_dir: self.agent_dir,
            carrying: self.carrying.as_ref(),
            layout: self.layout.as_ref(),
        }
    }

    /// minigrid's `_reward()` at the current step count.
    #[inline]
    pub fn success_reward(&self) -> f32 {
        if self.max_steps == 0 {
            return 0.0;
        }
        (1.0 - 0.9 * (self.step_count as f64 / self.max_steps as f64)) as f32
    }

    /// Apply `action` (minigrid's `step`, then BabyAI's or the level's success check).
    pub fn step(&mut self, action: Action) -> StepOutcome {
        self.step_count = self.step_count.saturating_add(1);
        let mut reward = 0.0f32;
        let mut terminated = false;
        let fwd = self.front_pos();
        // Outside the grid behaves like a wall.
        let fwd_cell = self.grid.get_or_wall(fwd);
        match action {
            Action::Left => self.agent_dir = (self.agent_dir + 3) & 3,
            Action::Right => self.agent_dir = (self.agent_dir + 1) & 3,
            Action::Forward => match fwd_cell {
                None => self.agent_pos = fwd,
                Some(o) => {
                    if o.can_overlap() {
                        self.agent_pos = fwd;
                    }
                    if o.kind == ObjectKind::Goal {
                        terminated = true;
                        reward = self.success_reward();
                    } else if o.kind == ObjectKind::Lava {
                        terminated = true;
                    }
                }
            },
            Action::Pickup => {
                if let Some(o) = fwd_cell {
                    if o.can_pickup() && self.carrying.is_none() {
                        self.carrying = Some(o);
                        let _ = self.grid.set(fwd, None);
                    }
                }
            }
            Action::Drop => {
                if fwd_cell.is_none() && self.carrying.is_some() {
                    let _ = self.grid.set(fwd, self.carrying.take());
                }
            }
            Action::Toggle => self.toggle(fwd),
            Action::Done => {}
        }
        let truncated = self.step_count >= self.max_steps;
        match &mut self.task {
            Task::Goal => {}
            Task::PickupObject(id) => {
                if action == Action::Pickup && self.carrying.is_some_and(|c| c.id == *id) {
                    terminated = true;
                    reward = self.success_reward();
                }
            }
            Task::Instr(_) => {
                if let Some(s) = self.verify(action) {
                    match s {
                        Status::Success => {
                            terminated = true;
                            reward = self.success_reward();
                        }
                        Status::Failure => {
                            terminated = true;
                            reward = 0.0;
                        }
                        Status::Continue => {}
                    }
                }
            }
        }
        StepOutcome {
            reward,
            terminated,
            truncated,
        }
    }

    fn verify(&mut self, action: Action) -> Option<Status> {
        // Split borrows: the verifier is mutated while it reads the rest of the world.
        let Env {
            grid,
            agent_pos,
            agent_dir,
            carrying,
            layout,
            task,
            done_actions,
            ..
        } = self;
        let Task::Instr(v) = task else { return None };
        if action == Action::Drop {
            v.refresh_positions(grid);
        }
        let world = WorldView {
            grid,
            agent_pos: *agent_pos,
            agent_dir: *agent_dir,
            carrying: carrying.as_ref(),
            layout: layout.as_ref(),
        };
        Some(v.verify(action as u8, &world, *done_actions))
    }

    fn toggle(&mut self, fwd: Pos) {
        let Some(&obj) = self.grid.get(fwd) else {
            return;
        };
        match obj.kind {
            ObjectKind::Door => {
                let carrying = self.carrying;
                let opens_lock =
                    carrying.is_some_and(|c| c.kind == ObjectKind::Key && c.color == obj.color);
                self.grid.update(fwd, |o| {
                    o.door = match o.door {
                        DoorState::Locked if opens_lock => DoorState::Open,
                        DoorState::Locked => DoorState::Locked,
                        DoorState::Open => DoorState::Closed,
                        DoorState::Closed => DoorState::Open,
                    }
                });
            }
            ObjectKind::Box => {
                let contents = obj
                    .contents
                    .map(|c| Object::new(c.kind, c.color).with_id(c.id));
                let _ = self.grid.set(fwd, contents);
            }
            _ => {}
        }
    }

    /// World position of view cell `(i, j)` (agent at `(3, 6)` facing up).
    #[inline]
    pub fn view_to_world(&self, i: usize, j: usize) -> Pos {
        let (dx, dy) = self.dir_vec();
        let (rx, ry) = (-dy, dx);
        let f = (VIEW_SIZE - 1 - j) as i32;
        let r = i as i32 - (VIEW_SIZE / 2) as i32;
        Pos::new(
            self.agent_pos.x + dx * f + rx * r,
            self.agent_pos.y + dy * f + ry * r,
        )
    }

    /// minigrid's `gen_obs()["image"]`, written into `out`.
    ///
    /// Hot path (every env step): one pass gathers the encoded cells and a bit mask of the
    /// cells that block sight, then the visibility sweep runs on bit masks.
    pub fn observe(&self, out: &mut Observation) {
        let codes = self.grid.codes();
        let offsets = &VIEW_OFFSETS[(self.agent_dir & 3) as usize];
        // The agent is inside the grid and the view reaches at most CODE_PAD cells out, so
        // every index lands in the padded plane; `get` only guards against a corrupt pose.
        let base = (self.agent_pos.y + CODE_PAD as i32) * CODE_STRIDE as i32
            + (self.agent_pos.x + CODE_PAD as i32);
        let mut opaque: u64 = 0;
        for (k, (slot, off)) in out.iter_mut().zip(offsets.iter()).enumerate() {
            let code = codes
                .get((base + off) as usize)
                .copied()
                .unwrap_or(WALL_CODE);
            let [t, c, s, blocks] = code.to_le_bytes();
            *slot = [t, c, s];
            opaque |= (blocks as u64) << k;
        }
        let visible = if self.see_through_walls {
            u64::MAX
        } else {
            process_vis(opaque)
        };
        for (k, slot) in out.iter_mut().enumerate() {
            if visible & (1 << k) == 0 {
                *slot = [0, 0, 0];
            }
        }
        // The agent's own cell shows what it carries (always visible).
        if let Some(slot) = out.get_mut((VIEW_CELLS - 1) - VIEW_SIZE / 2) {
            *slot = encode_cell(self.carrying.as_ref());
        }
    }

    /// The observation as a fresh value.
    pub fn observation(&self) -> Observation {
        let mut o = [[0; 3]; VIEW_CELLS];
        self.observe(&mut o);
        o
    }
}

/// minigrid's `Grid.process_vis` on the 7x7 view (agent at `(3, 6)`) on bit masks: bit
/// `j * 7 + i` is view cell `(i, j)`; returns the visible cells.
///
/// minigrid sweeps each row from the bottom up, first left to right (a visible cell that does
/// not block sight lights its right neighbour and the two cells above it, at `i` and `i + 1`),
/// then right to left (symmetrically). Within a row each sweep only propagates one way, and a
/// cell is lit before the sweep reaches it, so each sweep is the closure of "lit and
/// transparent lights the next cell", computed here as a fixed point of shifts on the row's
/// 7 bits; the cells lit above are those that were lit and transparent after the sweep.
fn process_vis(opaque: u64) -> u64 {
    const V: usize = VIEW_SIZE;
    const ROW: u64 = (1 << V) - 1;
    const NOT_LAST: u64 = ROW >> 1; // i in 0..V-1
    const NOT_FIRST: u64 = ROW & !1; // i in 1..V
    let mut mask: u64 = 1 << ((V - 1) * V + V / 2);
    for j in (0..V).rev() {
        let shift = j * V;
        let t = !(opaque >> shift) & ROW;
        let mut r = (mask >> shift) & ROW;
        loop {
            let next = r | ((r & t & NOT_LAST) << 1);
            if next == r {
                break;
            }
            r = next;
        }
        let lit = r & t & NOT_LAST;
        let mut up = lit | (lit << 1);
        loop {
            let next = r | ((r & t & NOT_FIRST) >> 1);
            if next == r {
                break;
            }
            r = next;
        }
        let lit = r & t & NOT_FIRST;
        up |= lit | (lit >> 1);
        mask |= r << shift;
        if j > 0 {
            mask |= up << (shift - V);
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_constant_is_a_new_3x3_env() {
        let e = Env::EMPTY;
        assert_eq!(e, Env::new(3, 3).unwrap());
        assert_eq!(e.grid.codes(), Env::new(3, 3).unwrap().grid.codes());
        let mut g = Env::EMPTY;
        g.clear(8, 8).unwrap();
        assert_eq!(g, Env::new(8, 8).unwrap());
        assert_eq!(g.grid.codes(), Env::new(8, 8).unwrap().grid.codes());
    }

    /// The cell-by-cell sweep exactly as minigrid writes it, to check the bit-parallel one.
    fn process_vis_reference(opaque: u64) -> u64 {
        const V: usize = VIEW_SIZE;
        let mut m = [false; VIEW_CELLS];
        m[(V - 1) * V + V / 2] = true;
        let blocks = |k: usize| opaque & (1 << k) != 0;
        for j in (0..V).rev() {
            for i in 0..V - 1 {
                let k = j * V + i;
                if !m[k] || blocks(k) {
                    continue;
                }
                m[k + 1] = true;
                if j > 0 {
                    m[k + 1 - V] = true;
                    m[k - V] = true;
                }
            }
            for i in (1..V).rev() {
                let k = j * V + i;
                if !m[k] || blocks(k) {
                    continue;
                }
                m[k - 1] = true;
                if j > 0 {
                    m[k - 1 - V] = true;
                    m[k - V] = true;
                }
            }
        }
        m.iter()
            .enumerate()
            .fold(0, |acc, (k, &v)| acc | ((v as u64) << k))
    }

    #[test]
    fn bit_parallel_visibility_matches_the_sweep() {
        let mut rng = crate::rng::Pcg32::new(11);
        for n in 0..200_000 {
            // Vary the density of blockers from none to most cells.
            let density = n % 8;
            let mut opaque = 0u64;
            for k in 0..VIEW_CELLS {
                if rng.below(8) < density {
                    opaque |= 1 << k;
                }
            }
            assert_eq!(
                process_vis(opaque),
                process_vis_reference(opaque),
                "opaque={opaque:#x}"
            );
        }
    }
}
