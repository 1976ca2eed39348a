//! minigrid's `RoomGrid`: a lattice of square rooms sharing their walls, with the helpers level
//! generators build on (doors, objects, agent placement, connectivity, distractors), and the two
//! MiniGrid environments built on it (`UnlockPickup`, `KeyCorridor`).
//!
//! Invariants:
//! - [`RoomGen::begin`] clears the environment in place and redraws everything a RoomGrid
//!   `_gen_grid` draws (room walls, one door position per shared wall, agent in the middle facing
//!   right), so a rejected attempt can simply start over.
//! - Every rejection-sampling loop is bounded: running out of tries is
//!   [`Error::GenerationFailed`], which the level-level retry loop treats like minigrid's
//!   `RecursionError` / `RejectSampling` (start the level again).
//! - Objects that can be picked up get a fresh identity ([`crate::grid::Grid::identify`]) when
//!   they are placed; walls and doors keep `ObjectId::NONE`.

use core::fmt::Write;

use crate::env::{Env, Task};
use crate::error::Error;
use crate::grid::{Pos, MAX_GRID_SIZE};
use crate::layout::RoomLayout;
use crate::mission::instr::MAX_MISSION_LEN;
use crate::rng::numpy::NumpyGenerator;
use crate::world::{Color, DoorState, Object, ObjectKind};

/// Most rooms a layout may have.
pub(crate) const MAX_ROOMS: usize = 16;
/// Most objects one `add_distractors` call may return.
pub(crate) const MAX_PLACED: usize = 32;
/// `max_tries` of `place_in_room` and `place_agent` (minigrid uses 1000 for both).
const PLACE_TRIES: u32 = 1000;
/// Bound on loops that minigrid runs without one (`while True`).
const LOOP_TRIES: u32 = 1000;
/// minigrid's `connect_all` default `max_itrs`.
const CONNECT_ITRS: u32 = 5000;
/// How many times a whole level is regenerated before giving up.
pub(crate) const LEVEL_ATTEMPTS: u32 = 1000;

/// The kinds `add_object` draws from, in minigrid's order.
pub(crate) const PICKABLE: [ObjectKind; 3] = [ObjectKind::Key, ObjectKind::Ball, ObjectKind::Box];

/// What a room has on one of its four walls (right, down, left, up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Link {
    /// Plain wall (minigrid's `None`).
    #[default]
    Wall,
    /// A door (minigrid keeps the `Door` object).
    Door {
        /// Door colour.
        color: Color,
        /// Created locked.
        locked: bool,
    },
    /// The wall was removed (minigrid's `True`).
    Opening,
}

impl Link {
    fn connects(self) -> bool {
        self != Link::Wall
    }
}

/// minigrid's `Room`, minus what the grid already knows (walls, objects).
#[derive(Clone, Copy, Debug, Default)]
struct Room {
    door_pos: [Option<Pos>; 4],
    links: [Link; 4],
    locked: bool,
}

/// An object placed by a generator: where, and what (with its identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Cell it was put in.
    pub pos: Pos,
    /// The object as placed.
    pub obj: Object,
}

/// Objects returned by `add_distractors`.
pub(crate) type PlacedList = heapless::Vec<Placed, MAX_PLACED>;

fn failed(what: &'static str) -> Error {
    Error::GenerationFailed { what }
}

/// Bit of `(kind, color)` in the set of object kinds/colours already in the rooms.
fn kind_color_bit(kind: ObjectKind, color: Color) -> u32 {
    let k = match kind {
        ObjectKind::Key => 0,
        ObjectKind::Ball => 1,
        _ => 2,
    };
    1 << (k * 6 + color as u32)
}

/// A uniformly chosen element of a non-empty slice (minigrid's `_rand_elem`).
pub(crate) fn rand_elem<T: Copy>(rng: &mut NumpyGenerator, items: &[T]) -> Result<T, Error> {
    rng.choose(items).copied().ok_or(Error::BadLevelParam {
        name: "empty choice",
    })
}

/// minigrid's `_rand_subset` on `0..len`: `K` distinct indices, drawn one at a time from the
/// shrinking list (as `list.remove` does), in draw order.
pub(crate) fn rand_subset<const K: usize>(
    rng: &mut NumpyGenerator,
    len: usize,
) -> Result<[usize; K], Error> {
    const MAX: usize = 64;
    let too_many = Error::BadLevelParam {
        name: "subset size",
    };
    if K > len || len > MAX {
        return Err(too_many);
    }
    let mut pool = [0usize; MAX];
    for (k, slot) in pool.iter_mut().enumerate() {
        *slot = k;
    }
    let mut left = len;
    let mut out = [0usize; K];
    for slot in out.iter_mut() {
        let idx = rng.below(left as u32) as usize;
        let rest = pool.get_mut(idx..left).ok_or(too_many)?;
        *slot = *rest.first().ok_or(too_many)?;
        rest.rotate_left(1);
        left -= 1;
    }
    Ok(out)
}

/// One RoomGrid generation attempt in progress.
pub(crate) struct RoomGen<'a> {
    /// The environment being generated.
    pub env: &'a mut Env,
    /// The level's random stream.
    pub rng: &'a mut NumpyGenerator,
    /// Room structure.
    pub layout: RoomLayout,
    rooms: [Room; MAX_ROOMS],
    /// `(kind, color)` of every object put in a room so far (minigrid's `room.objs`).
    kinds_present: u32,
}

impl<'a> RoomGen<'a> {
    /// minigrid's `RoomGrid._gen_grid`: clear `env` to the layout's size, draw the room walls and
    /// the door position of every shared wall, and put the agent in the middle facing right.
    pub fn begin(
        env: &'a mut Env,
        rng: &'a mut NumpyGenerator,
        layout: RoomLayout,
    ) -> Result<RoomGen<'a>, Error> {
        let (rs, rows, cols) = (layout.room_size, layout.num_rows, layout.num_cols);
        let side = 3..=MAX_GRID_SIZE as i32;
        let count = 1..=MAX_GRID_SIZE as i32;
        if !side.contains(&rs)
            || !count.contains(&rows)
            || !count.contains(&cols)
            || (rows * cols) as usize > MAX_ROOMS
        {
            return Err(Error::BadLevelParam {
                name: "room layout",
            });
        }
        env.clear(layout.width() as usize, layout.height() as usize)?;
        env.layout = Some(layout);
        let mut g = RoomGen {
            env,
            rng,
            layout,
            rooms: [Room::default(); MAX_ROOMS],
            kinds_present: 0,
        };
        for j in 0..rows {
            for i in 0..cols {
                let top = layout.room_top(i, j);
                g.env.grid.wall_rect(top.x, top.y, rs, rs);
            }
        }
        for j in 0..rows {
            for i in 0..cols {
                let top = layout.room_top(i, j);
                let (x_l, y_l) = (top.x + 1, top.y + 1);
                let (x_m, y_m) = (top.x + rs - 1, top.y + rs - 1);
                let mut dp = [None; 4];
                if i < cols - 1 {
                    dp[0] = Some(Pos::new(x_m, g.rng.gen_range(y_l, y_m)));
                }
                if j < rows - 1 {
                    dp[1] = Some(Pos::new(g.rng.gen_range(x_l, x_m), y_m));
                }
                if i > 0 {
                    dp[2] = g.room(i - 1, j)?.door_pos[0];
                }
                if j > 0 {
                    dp[3] = g.room(i, j - 1)?.door_pos[1];
                }
                g.room_mut(i, j)?.door_pos = dp;
            }
        }
        g.env.agent_pos = Pos::new(
            (cols / 2) * (rs - 1) + rs / 2,
            (rows / 2) * (rs - 1) + rs / 2,
        );
        g.env.agent_dir = 0;
        Ok(g)
    }

    fn room_index(&self, i: i32, j: i32) -> Result<usize, Error> {
        if (0..self.layout.num_cols).contains(&i) && (0..self.layout.num_rows).contains(&j) {
            Ok((j * self.layout.num_cols + i) as usize)
        } else {
            Err(Error::BadLevelParam { name: "room index" })
        }
    }

    fn room(&self, i: i32, j: i32) -> Result<&Room, Error> {
        let k = self.room_index(i, j)?;
        self.rooms
            .get(k)
            .ok_or(Error::BadLevelParam { name: "room index" })
    }

    fn room_mut(&mut self, i: i32, j: i32) -> Result<&mut Room, Error> {
        let k = self.room_index(i, j)?;
        self.rooms
            .get_mut(k)
            .ok_or(Error::BadLevelParam { name: "room index" })
    }

    /// The room across wall `k` (right, down, left, up) of room `(i, j)`, if any.
    pub fn neighbor(&self, i: i32, j: i32, k: usize) -> Option<(i32, i32)> {
        let (ni, nj) = match k {
            0 => (i + 1, j),
            1 => (i, j + 1),
            2 => (i - 1, j),
            3 => (i, j - 1),
            _ => return None,
        };
        let inside = (0..self.layout.num_cols).contains(&ni)
            && (0..self.layout.num_rows).contains(&nj)
            && (0..self.layout.num_cols).contains(&i)
            && (0..self.layout.num_rows).contains(&j);
        inside.then_some((ni, nj))
    }

    /// Room `(i, j)` holding the agent.
    pub fn agent_room(&self) -> Option<(i32, i32)> {
        self.layout.room_of(self.env.agent_pos)
    }

    /// minigrid's `_rand_int(lo, hi)`.
    pub fn rand_int(&mut self, lo: i32, hi: i32) -> i32 {
        self.rng.gen_range(lo, hi)
    }

    /// minigrid's `_rand_color` (alphabetical colour list).
    pub fn rand_color(&mut self) -> Color {
        rand_elem(self.rng, &Color::SORTED_NAMES).unwrap_or(Color::Red)
    }

    /// minigrid's `MiniGridEnv.place_obj`: a random empty cell of the rectangle at `top` of
    /// `size`, not the agent's cell, and (with `reject_near_agent`) not within Manhattan distance
    /// 1 of the agent (`reject_next_to`); at most `max_tries + 1` draws. `obj = None` only finds
    /// the cell.
    pub fn place_obj(
        &mut self,
        obj: Option<Object>,
        top: Pos,
        size: (i32, i32),
        reject_near_agent: bool,
        max_tries: u32,
    ) -> Result<Pos, Error> {
        let top = Pos::new(top.x.max(0), top.y.max(0));
        let x_hi = (top.x + size.0).min(self.env.grid.width());
        let y_hi = (top.y + size.1).min(self.env.grid.height());
        let agent = self.env.agent_pos;
        for _ in 0..=max_tries {
            let p = Pos::new(
                self.rng.gen_range(top.x, x_hi),
                self.rng.gen_range(top.y, y_hi),
            );
            if !self.env.grid.in_bounds(p) || self.env.grid.get(p).is_some() || p == agent {
                continue;
            }
            if reject_near_agent && p.manhattan(agent) < 2 {
                continue;
            }
            if obj.is_some() {
                self.env.grid.set(p, obj)?;
            }
            return Ok(p);
        }
        Err(failed("place_obj: rejection sampling failed"))
    }

    /// minigrid's `place_in_room`: put `obj` (identified if it can be picked up) in room `(i, j)`,
    /// away from the agent.
    pub fn place_in_room(&mut self, i: i32, j: i32, obj: Object) -> Result<Placed, Error> {
        self.room_index(i, j)?;
        let obj = if obj.can_pickup() {
            self.env.grid.identify(obj)
        } else {
            obj
        };
        let top = self.layout.room_top(i, j);
        let rs = self.layout.room_size;
        let pos = self.place_obj(Some(obj), top, (rs, rs), true, PLACE_TRIES)?;
        self.kinds_present |= kind_color_bit(obj.kind, obj.color);
        Ok(Placed { pos, obj })
    }

    /// minigrid's `add_object`: a key, ball or box (random kind and colour where not given) in
    /// room `(i, j)`.
    pub fn add_object(
        &mut self,
        i: i32,
        j: i32,
        kind: Option<ObjectKind>,
        color: Option<Color>,
    ) -> Result<Placed, Error> {
        let kind = match kind {
            Some(k) => k,
            None => rand_elem(self.rng, &PICKABLE)?,
        };
        if !kind.can_pickup() {
            return Err(Error::BadLevelParam {
                name: "add_object kind",
            });
        }
        let color = match color {
            Some(c) => c,
            None => self.rand_color(),
        };
        self.place_in_room(i, j, Object::new(kind, color))
    }

    /// minigrid's `add_door`: a door on wall `door_idx` of room `(i, j)` (a random wall with a
    /// neighbour and no door yet when `None`), random colour and lock state where not given.
    pub fn add_door(
        &mut self,
        i: i32,
        j: i32,
        door_idx: Option<usize>,
        color: Option<Color>,
        locked: Option<bool>,
    ) -> Result<(Object, Pos), Error> {
        let k = match door_idx {
            Some(k) => k,
            None => {
                let mut found = None;
                for _ in 0..LOOP_TRIES {
                    let k = self.rng.below(4) as usize;
                    let free = self
                        .room(i, j)?
                        .links
                        .get(k)
                        .is_some_and(|l| *l == Link::Wall);
                    if self.neighbor(i, j, k).is_some() && free {
                        found = Some(k);
                        break;
                    }
                }
                found.ok_or(failed("add_door: no free wall"))?
            }
        };
        let color = match color {
            Some(c) => c,
            None => self.rand_color(),
        };
        let locked = match locked {
            Some(l) => l,
            None => self.rng.gen_bool(),
        };
        let bad = Error::BadLevelParam { name: "door wall" };
        let (ni, nj) = self.neighbor(i, j, k).ok_or(bad)?;
        let room = self.room_mut(i, j)?;
        let link = room.links.get_mut(k).ok_or(bad)?;
        if *link != Link::Wall {
            return Err(bad);
        }
        let new_link = Link::Door { color, locked };
        *link = new_link;
        room.locked = locked;
        let pos = room.door_pos.get(k).copied().flatten().ok_or(bad)?;
        let back = self
            .room_mut(ni, nj)?
            .links
            .get_mut((k + 2) % 4)
            .ok_or(bad)?;
        *back = new_link;
        let state = if locked {
            DoorState::Locked
        } else {
            DoorState::Closed
        };
        let door = Object::door(color, state);
        self.env.grid.set(pos, Some(door))?;
        Ok((door, pos))
    }

    /// minigrid's `remove_wall`: open wall `k` of room `(i, j)` (corners stay).
    pub fn remove_wall(&mut self, i: i32, j: i32, k: usize) -> Result<(), Error> {
        let bad = Error::BadLevelParam {
            name: "remove_wall",
        };
        let (ni, nj) = self.neighbor(i, j, k).ok_or(bad)?;
        if self.room(i, j)?.links.get(k) != Some(&Link::Wall) {
            return Err(bad);
        }
        let top = self.layout.room_top(i, j);
        let s = self.layout.room_size;
        for t in 1..s - 1 {
            let p = match k {
                0 => Pos::new(top.x + s - 1, top.y + t),
                1 => Pos::new(top.x + t, top.y + s - 1),
                2 => Pos::new(top.x, top.y + t),
                _ => Pos::new(top.x + t, top.y),
            };
            self.env.grid.set(p, None)?;
        }
        if let Some(l) = self.room_mut(i, j)?.links.get_mut(k) {
            *l = Link::Opening;
        }
        if let Some(l) = self.room_mut(ni, nj)?.links.get_mut((k + 2) % 4) {
            *l = Link::Opening;
        }
        Ok(())
    }

    /// Room `(i, j)`, each coordinate drawn (column first, then row, as RoomGrid's
    /// `place_agent` and `add_distractors` draw them) where it is not given.
    fn room_or_random(&mut self, i: Option<i32>, j: Option<i32>) -> (i32, i32) {
        let i = match i {
            Some(i) => i,
            None => self.rand_int(0, self.layout.num_cols),
        };
        let j = match j {
            Some(j) => j,
            None => self.rand_int(0, self.layout.num_rows),
        };
        (i, j)
    }

    /// RoomGrid's `place_agent`: a random cell of room `(i, j)` (random room where not given),
    /// random direction, redrawn until the cell in front is empty or a wall.
    pub fn place_agent(&mut self, i: Option<i32>, j: Option<i32>) -> Result<Pos, Error> {
        let (i, j) = self.room_or_random(i, j);
        self.room_index(i, j)?;
        let top = self.layout.room_top(i, j);
        let rs = self.layout.room_size;
        for _ in 0..LOOP_TRIES {
            // MiniGridEnv.place_agent: the agent is nowhere while its cell is drawn.
            self.env.agent_pos = Pos::new(-1, -1);
            let pos = self.place_obj(None, top, (rs, rs), false, PLACE_TRIES)?;
            self.env.agent_pos = pos;
            self.env.agent_dir = self.rng.below(4) as u8;
            match self.env.grid.get(self.env.front_pos()) {
                None => return Ok(pos),
                Some(o) if o.kind == ObjectKind::Wall => return Ok(pos),
                Some(_) => {}
            }
        }
        Err(failed("place_agent: every cell faces an object"))
    }

    /// Rooms reachable from room `start` through doors and openings, as a bit set.
    fn reach(&self, start: usize) -> u32 {
        let cols = self.layout.num_cols as usize;
        let n = self.layout.num_rows as usize * cols;
        let mut reach = 0u32;
        let mut todo = 1u32 << (start & 31);
        while todo != 0 {
            let r = todo.trailing_zeros() as usize;
            todo &= todo - 1;
            reach |= 1 << r;
            let Some(room) = self.rooms.get(r) else {
                continue;
            };
            // Links only connect to rooms that exist: right, down, left, up.
            let nbs = [r + 1, r + cols, r.wrapping_sub(1), r.wrapping_sub(cols)];
            for (link, nb) in room.links.iter().zip(nbs) {
                if link.connects() && nb < n && reach & (1 << nb) == 0 {
                    todo |= 1 << nb;
                }
            }
        }
        reach
    }

    /// minigrid's `connect_all`: add unlocked doors (colours from `colors`) on random walls
    /// until every room is reachable from the agent's room.
    pub fn connect_all(&mut self, colors: &[Color]) -> Result<(), Error> {
        let (ai, aj) = self
            .agent_room()
            .ok_or(failed("connect_all: agent outside the rooms"))?;
        let start = self.room_index(ai, aj)?;
        let n_rooms = (self.layout.num_rows * self.layout.num_cols) as u32;
        // The reachable set only changes when a door is added.
        let mut reached = self.reach(start).count_ones();
        for _ in 0..=CONNECT_ITRS {
            if reached == n_rooms {
                return Ok(());
            }
            let i = self.rand_int(0, self.layout.num_cols);
            let j = self.rand_int(0, self.layout.num_rows);
            let k = self.rng.below(4) as usize;
            let room = *self.room(i, j)?;
            let has_pos = room.door_pos.get(k).copied().flatten().is_some();
            if !has_pos || room.links.get(k).is_some_and(|l| l.connects()) {
                continue;
            }
            let Some((ni, nj)) = self.neighbor(i, j, k) else {
                continue;
            };
            if room.locked || self.room(ni, nj)?.locked {
                continue;
            }
            let color = rand_elem(self.rng, colors)?;
            self.add_door(i, j, Some(k), Some(color), Some(false))?;
            reached = self.reach(start).count_ones();
        }
        Err(failed("connect_all failed"))
    }

    /// minigrid's `add_distractors`: `n` random keys/balls/boxes in room `(i, j)` (random rooms
    /// where not given); with `all_unique`, no `(kind, colour)` already in a room.
    pub fn add_distractors(
        &mut self,
        i: Option<i32>,
        j: Option<i32>,
        n: usize,
        all_unique: bool,
    ) -> Result<PlacedList, Error> {
        let mut dists = PlacedList::new();
        let mut draws = 0u32;
        while dists.len() < n {
            draws += 1;
            if draws > LOOP_TRIES * 10 {
                return Err(failed("add_distractors: no unique object left"));
            }
            let color = self.rand_color();
            let kind = rand_elem(self.rng, &PICKABLE)?;
            if all_unique && self.kinds_present & kind_color_bit(kind, color) != 0 {
                continue;
            }
            let (ri, rj) = self.room_or_random(i, j);
            let placed = self.add_object(ri, rj, Some(kind), Some(color))?;
            dists.push(placed).map_err(|_| Error::BadLevelParam {
                name: "too many distractors",
            })?;
        }
        Ok(dists)
    }

    /// BabyAI's `check_objs_reachable`: every non-wall object can be reached from the agent
    /// through empty cells and doors (any state), without moving anything.
    pub fn objs_reachable(&self) -> bool {
        objs_reachable(self.env)
    }

    /// Colours of the locked doors in the rooms (BabyAI's `colors_of_locked_doors`).
    pub fn locked_door_colors(&self) -> u8 {
        let n = (self.layout.num_rows * self.layout.num_cols) as usize;
        let mut mask = 0u8;
        for room in self.rooms.iter().take(n) {
            for l in room.links {
                if let Link::Door {
                    color,
                    locked: true,
                } = l
                {
                    mask |= 1 << color as u8;
                }
            }
        }
        mask
    }
}

/// Row index into a `[_; MAX_GRID_SIZE]` array that can never be out of bounds.
#[inline]
fn row(y: usize) -> usize {
    const _: () = assert!(MAX_GRID_SIZE.is_power_of_two() && MAX_GRID_SIZE <= 32);
    y & (MAX_GRID_SIZE - 1)
}

/// The runs of `pass` (bit masks of one row) that contain a bit of `seeds`.
#[inline]
fn fill_runs(seeds: u32, pass: u32) -> u32 {
    let (mut up, mut p) = (seeds, pass);
    up |= p & (up << 1);
    p &= p << 1;
    up |= p & (up << 2);
    p &= p << 2;
    up |= p & (up << 4);
    p &= p << 4;
    up |= p & (up << 8);
    p &= p << 8;
    up |= p & (up << 16);
    let (mut down, mut p) = (seeds, pass);
    down |= p & (down >> 1);
    p &= p >> 1;
    down |= p & (down >> 2);
    p &= p >> 2;
    down |= p & (down >> 4);
    p &= p >> 4;
    down |= p & (down >> 8);
    p &= p >> 8;
    down |= p & (down >> 16);
    up | down
}

/// Flood fill from the agent through empty cells and doors; true when every object other than a
/// wall is reached (BabyAI's `check_objs_reachable`: a cell is reached when next to a reached
/// empty or door cell, and only those are left). Rows are bit masks (grids are at most 32 wide);
/// sweeps down and up the rows repeat until nothing changes.
pub(crate) fn objs_reachable(env: &Env) -> bool {
    let grid = &env.grid;
    let w = grid.width().max(1) as usize;
    let h = (grid.height().max(0) as usize).min(MAX_GRID_SIZE);
    let width_mask: u32 = if w >= 32 { u32::MAX } else { (1u32 << w) - 1 };
    // pass: cells the fill may leave (empty, door); targets: objects that must be reached.
    let mut pass = [0u32; MAX_GRID_SIZE];
    let mut targets = [0u32; MAX_GRID_SIZE];
    for (y, cells) in grid.cells().chunks(w).enumerate().take(h) {
        let (mut p, mut t) = (0u32, 0u32);
        for (x, c) in cells.iter().enumerate().take(32) {
            match c {
                None => p |= 1 << x,
                Some(o) => match o.kind {
                    ObjectKind::Wall => {}
                    ObjectKind::Door => {
                        p |= 1 << x;
                        t |= 1 << x;
                    }
                    _ => t |= 1 << x,
                },
            }
        }
        pass[row(y)] = p;
        targets[row(y)] = t;
    }
    let start = env.agent_pos;
    if !grid.in_bounds(start) {
        return false;
    }
    let mut reached = [0u32; MAX_GRID_SIZE];
    reached[row(start.y as usize)] = 1 << (start.x & 31);
    // Reach the horizontal runs of passable reached cells, and the cells at their ends.
    let close_row = |reached: &mut [u32; MAX_GRID_SIZE], y: usize| {
        let p = pass[row(y)];
        let seeds = reached[row(y)] & p;
        if seeds == 0 {
            return;
        }
        let fill = fill_runs(seeds, p);
        reached[row(y)] |= (fill | (fill << 1) | (fill >> 1)) & width_mask;
    };
    loop {
        let before = reached;
        close_row(&mut reached, 0);
        for y in 1..h {
            reached[row(y)] |= reached[row(y - 1)] & pass[row(y - 1)];
            close_row(&mut reached, y);
        }
        for y in (0..h.saturating_sub(1)).rev() {
            reached[row(y)] |= reached[row(y + 1)] & pass[row(y + 1)];
            close_row(&mut reached, y);
        }
        if reached == before {
            break;
        }
    }
    (0..h).all(|y| targets[row(y)] & !reached[row(y)] == 0)
}

/// Retry `attempt` (one whole generation) while it fails with [`Error::GenerationFailed`].
pub(crate) fn retry<T>(mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    for _ in 0..LEVEL_ATTEMPTS {
        match attempt() {
            Err(Error::GenerationFailed { .. }) => continue,
            other => return other,
        }
    }
    Err(failed("level: too many rejected samples"))
}

/// Write "pick up the {color} {kind}" and make picking that object up the task.
fn pickup_named_task(env: &mut Env, target: &Placed) -> Result<(), Error> {
    env.mission.clear();
    write!(
        env.mission,
        "pick up the {} {}",
        target.obj.color.name(),
        target.obj.kind.name()
    )
    .map_err(|_| Error::MissionTooLong {
        capacity: MAX_MISSION_LEN,
    })?;
    env.task = Task::PickupObject(target.obj.id);
    Ok(())
}

/// Layout of MiniGrid's `UnlockPickup`.
pub(crate) const UNLOCK_PICKUP_LAYOUT: RoomLayout = RoomLayout {
    room_size: 6,
    num_rows: 1,
    num_cols: 2,
};

/// MiniGrid's `UnlockPickupEnv`: a box behind a locked door, its key in the agent's room;
/// "pick up the {color} box"; `max_steps = 8 * room_size^2`.
pub(crate) fn unlock_pickup(rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    let layout = UNLOCK_PICKUP_LAYOUT;
    retry(|| {
        let mut g = RoomGen::begin(env, rng, layout)?;
        let target = g.add_object(1, 0, Some(ObjectKind::Box), None)?;
        let (door, _) = g.add_door(0, 0, Some(0), None, Some(true))?;
        g.add_object(0, 0, Some(ObjectKind::Key), Some(door.color))?;
        g.place_agent(Some(0), Some(0))?;
        pickup_named_task(env, &target)?;
        env.max_steps = (8 * layout.room_size * layout.room_size) as u32;
        Ok(())
    })
}

/// Layout of MiniGrid's `KeyCorridor` with rooms of `room_size` and `num_rows` rows.
pub(crate) const fn key_corridor_layout(room_size: i32, num_rows: i32) -> RoomLayout {
    RoomLayout {
        room_size,
        num_rows,
        num_cols: 3,
    }
}

/// MiniGrid's `KeyCorridorEnv`: a hallway of middle rooms, a ball behind a locked door on the
/// right, the key in a room on the left; "pick up the {color} ball";
/// `max_steps = 30 * room_size^2`.
pub(crate) fn key_corridor(
    room_size: i32,
    num_rows: i32,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    let layout = key_corridor_layout(room_size, num_rows);
    retry(|| {
        let mut g = RoomGen::begin(env, rng, layout)?;
        for j in 1..num_rows {
            g.remove_wall(1, j, 3)?;
        }
        let room_idx = g.rand_int(0, num_rows);
        let (door, _) = g.add_door(2, room_idx, Some(2), None, Some(true))?;
        let target = g.add_object(2, room_idx, Some(ObjectKind::Ball), None)?;
        let key_row = g.rand_int(0, num_rows);
        g.add_object(0, key_row, Some(ObjectKind::Key), Some(door.color))?;
        g.place_agent(Some(1), Some(num_rows / 2))?;
        g.connect_all(&Color::SORTED_NAMES)?;
        pickup_named_task(env, &target)?;
        env.max_steps = (30 * room_size * room_size) as u32;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// BabyAI's `check_objs_reachable`, transliterated (set + stack).
    fn reachable_reference(env: &Env) -> bool {
        let g = &env.grid;
        let mut reach = HashSet::new();
        let mut stack = vec![env.agent_pos];
        while let Some(p) = stack.pop() {
            if !g.in_bounds(p) || !reach.insert(p) {
                continue;
            }
            if g.get(p).is_some_and(|o| o.kind != ObjectKind::Door) {
                continue;
            }
            for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                stack.push(p.offset(dx, dy));
            }
        }
        g.objects()
            .all(|(p, o)| o.kind == ObjectKind::Wall || reach.contains(&p))
    }

    #[test]
    fn bitmask_fill_matches_reference() {
        let mut rng = NumpyGenerator::new(5);
        let mut env = Env::new(8, 8).unwrap();
        let mut outcomes = [0usize; 2];
        for case in 0..3000 {
            let w = rng.gen_range(3, 33);
            let h = rng.gen_range(3, 33);
            env.clear(w as usize, h as usize).unwrap();
            let density = rng.below(60);
            for y in 0..h {
                for x in 0..w {
                    let r = rng.below(100);
                    let obj = if r < density {
                        Some(Object::wall())
                    } else if r < density + 4 {
                        Some(Object::door(Color::Red, DoorState::Locked))
                    } else if r < density + 8 {
                        Some(Object::new(ObjectKind::Ball, Color::Blue))
                    } else {
                        None
                    };
                    env.grid.set(Pos::new(x, y), obj).unwrap();
                }
            }
            env.agent_pos = Pos::new(rng.gen_range(0, w), rng.gen_range(0, h));
            if case % 2 == 0 {
                env.grid.set(env.agent_pos, None).unwrap();
            }
            let expected = reachable_reference(&env);
            assert_eq!(objs_reachable(&env), expected, "case {case}");
            outcomes[expected as usize] += 1;
        }
        assert!(outcomes.iter().all(|&n| n > 100), "{outcomes:?}");
    }

    #[test]
    fn room_grid_basics() {
        let mut env = Env::new(8, 8).unwrap();
        let mut rng = NumpyGenerator::new(3);
        let layout = RoomLayout {
            room_size: 6,
            num_rows: 2,
            num_cols: 3,
        };
        let mut g = RoomGen::begin(&mut env, &mut rng, layout).unwrap();
        assert_eq!(
            (g.env.grid.width(), g.env.grid.height()),
            (layout.width(), layout.height())
        );
        // Agent in the middle room, facing right (RoomGrid._gen_grid).
        assert_eq!(g.env.agent_pos, Pos::new(5 + 3, 5 + 3));
        assert_eq!(g.env.agent_dir, 0);
        assert_eq!(g.neighbor(0, 0, 2), None);
        assert_eq!(g.neighbor(0, 0, 0), Some((1, 0)));
        assert_eq!(g.neighbor(2, 1, 1), None);
        // Doors sit on the shared wall, at the drawn position; a second door there is an error.
        let (door, pos) = g.add_door(0, 0, Some(0), None, Some(true)).unwrap();
        assert_eq!(door.door, DoorState::Locked);
        assert_eq!(pos.x, 5);
        assert!((1..5).contains(&pos.y));
        assert_eq!(g.env.grid.get(pos), Some(&door));
        assert!(g.add_door(1, 0, Some(2), None, None).is_err());
        assert_eq!(g.locked_door_colors(), 1 << door.color as u8);
        // Objects get identities and stay away from the agent.
        for _ in 0..10 {
            let p = g.add_object(1, 1, None, None).unwrap();
            assert!(p.obj.can_pickup() && p.obj.id != crate::world::ObjectId::NONE);
            assert!(p.pos.manhattan(g.env.agent_pos) >= 2);
            assert!(layout.pos_inside(1, 1, p.pos));
        }
        assert!(g.add_object(1, 1, Some(ObjectKind::Door), None).is_err());
        assert!(g.add_object(3, 0, None, None).is_err());
        // Removing a wall opens the inner cells of the shared wall, not the corners.
        g.remove_wall(1, 0, 1).unwrap();
        assert!(g.env.grid.get(Pos::new(5, 5)).is_some());
        for x in 6..10 {
            assert!(g.env.grid.get(Pos::new(x, 5)).is_none());
        }
        assert!(g.remove_wall(1, 0, 1).is_err());
        g.place_agent(Some(0), Some(1)).unwrap();
        g.connect_all(&Color::SORTED_NAMES).unwrap();
        let start = g.room_index(0, 1).unwrap();
        assert_eq!(g.reach(start).count_ones(), 6);
        // Unique distractors: all 18 kinds/colours, then none left.
        let mut env = Env::new(8, 8).unwrap();
        let mut g = RoomGen::begin(&mut env, &mut rng, layout).unwrap();
        let d = g.add_distractors(None, None, 18, true).unwrap();
        let kinds: HashSet<_> = d.iter().map(|p| (p.obj.kind, p.obj.color)).collect();
        assert_eq!(kinds.len(), 18);
        assert!(matches!(
            g.add_distractors(None, None, 1, true),
            Err(Error::GenerationFailed { .. })
        ));
        assert!(matches!(
            RoomGen::begin(
                &mut env,
                &mut rng,
                RoomLayout {
                    room_size: 2,
                    num_rows: 1,
                    num_cols: 1
                }
            ),
            Err(Error::BadLevelParam { .. })
        ));
    }
}
