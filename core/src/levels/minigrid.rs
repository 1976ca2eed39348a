//! MiniGrid level generators, ported from Farama minigrid 3.2.0 (`envs/empty.py`, `doorkey.py`,
//! `crossing.py`, `multiroom.py`, `fourrooms.py`, and `MiniGridEnv.place_obj` / `place_agent`).
//!
//! Invariants:
//! - Each generator fully (re)initialises `env` in place with [`Env::clear`], never building a new
//!   grid, and sets grid, agent, direction, `max_steps`, mission, `Task::Goal`, no layout.
//! - The algorithms, sizes, step budgets and missions are minigrid's, and so is every random
//!   draw, in minigrid's order, from [`NumpyGenerator`] (numpy's generator bit for bit): the same
//!   seed gives minigrid's level (`scripts/minigrid-levels.py` checks it live).
//! - Rejection sampling is bounded: a generator that cannot place something returns
//!   [`Error::GenerationFailed`] instead of looping forever (minigrid loops without bound).
//! - Keys get an identity from [`Grid::identify`](crate::grid::Grid::identify); doors, walls, goal
//!   and lava keep `ObjectId::NONE`.

use crate::env::{Env, Task};
use crate::error::Error;
use crate::grid::{Pos, MAX_GRID_SIZE};
use crate::mission::instr::MAX_MISSION_LEN;
use crate::rng::numpy::NumpyGenerator;
use crate::world::{Color, DoorState, Object, ObjectKind};

/// Tries of one rejection-sampled placement before giving up (minigrid: unbounded).
const MAX_PLACE_TRIES: u32 = 10_000;
/// Attempts at a room chain of the requested length in [`multi_room`] (minigrid: unbounded).
const MAX_ROOM_CHAIN_TRIES: u32 = 10_000;
/// Largest supported `max_rooms` of [`multi_room`] (minigrid's registered levels use up to 6).
pub const MAX_MULTI_ROOMS: usize = 8;
/// Side of the MultiRoom grid (minigrid's default `width = height = 25`).
const MULTI_ROOM_GRID: i32 = 25;
/// Side of the FourRooms grid.
const FOUR_ROOMS_SIZE: usize = 19;

fn set_mission(env: &mut Env, text: &str) -> Result<(), Error> {
    env.mission.clear();
    env.mission
        .push_str(text)
        .map_err(|_| Error::MissionTooLong {
            capacity: MAX_MISSION_LEN,
        })
}

fn check_size(size: usize) -> Result<i32, Error> {
    if !(3..=MAX_GRID_SIZE).contains(&size) {
        return Err(Error::GridSize {
            width: size,
            height: size,
        });
    }
    Ok(size as i32)
}

fn steps(factor: usize, size: usize) -> u32 {
    u32::try_from(factor.saturating_mul(size).saturating_mul(size)).unwrap_or(u32::MAX)
}

/// minigrid's `place_obj`: a uniformly random empty cell of the rectangle at `top` of `size`
/// (clipped to the grid), not at `agent`; puts `obj` there (nothing for `None`).
fn place_obj(
    env: &mut Env,
    rng: &mut NumpyGenerator,
    obj: Option<Object>,
    top: (i32, i32),
    size: (i32, i32),
    agent: Option<Pos>,
) -> Result<Pos, Error> {
    let top = (top.0.max(0), top.1.max(0));
    let x_hi = top.0.saturating_add(size.0).min(env.grid.width());
    let y_hi = top.1.saturating_add(size.1).min(env.grid.height());
    if x_hi <= top.0 || y_hi <= top.1 {
        return Err(Error::GenerationFailed {
            what: "place_obj: empty rectangle",
        });
    }
    for _ in 0..MAX_PLACE_TRIES {
        let pos = Pos::new(rng.gen_range(top.0, x_hi), rng.gen_range(top.1, y_hi));
        if env.grid.get(pos).is_some() {
            continue;
        }
        if agent == Some(pos) {
            continue;
        }
        env.grid.set(pos, obj)?;
        return Ok(pos);
    }
    Err(Error::GenerationFailed {
        what: "place_obj: no empty cell found",
    })
}

/// minigrid's `place_agent` (with `rand_dir=True`): an empty cell of the rectangle, random
/// direction.
fn place_agent(
    env: &mut Env,
    rng: &mut NumpyGenerator,
    top: (i32, i32),
    size: (i32, i32),
) -> Result<(), Error> {
    let pos = place_obj(env, rng, None, top, size, None)?;
    env.agent_pos = pos;
    env.agent_dir = rng.gen_range(0, 4) as u8;
    Ok(())
}

fn finish(
    env: &mut Env,
    max_steps: u32,
    mission: &str,
    see_through_walls: bool,
) -> Result<(), Error> {
    env.max_steps = max_steps;
    env.see_through_walls = see_through_walls;
    env.task = Task::Goal;
    env.layout = None;
    env.carrying = None;
    env.step_count = 0;
    set_mission(env, mission)
}

/// `MiniGrid-Empty-{size}x{size}-v0`: a walled room, the goal in the bottom-right corner, the
/// agent at (1, 1) facing right; `max_steps = 4 * size^2`. Like minigrid, `see_through_walls` is
/// on for this level.
pub fn empty(size: usize, rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    let _ = rng; // the registered Empty levels use no randomness (fixed start)
    let s = check_size(size)?;
    env.clear(size, size)?;
    env.grid.wall_rect(0, 0, s, s);
    env.grid.set(Pos::new(s - 2, s - 2), Some(Object::goal()))?;
    env.agent_pos = Pos::new(1, 1);
    env.agent_dir = 0;
    finish(env, steps(4, size), "get to the green goal square", true)
}

/// `MiniGrid-DoorKey-{size}x{size}-v0`: a vertical wall splits the room, a locked yellow door in
/// it, the agent and a yellow key on the left, the goal in the bottom-right corner;
/// `max_steps = 10 * size^2`.
pub fn door_key(size: usize, rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    let s = check_size(size)?;
    if s < 5 {
        return Err(Error::BadLevelParam { name: "size" });
    }
    env.clear(size, size)?;
    env.grid.wall_rect(0, 0, s, s);
    env.grid.set(Pos::new(s - 2, s - 2), Some(Object::goal()))?;
    let split = rng.gen_range(2, s - 2);
    env.grid.vert_wall(split, 0, s);
    place_agent(env, rng, (0, 0), (split, s))?;
    let door_y = rng.gen_range(1, s - 2);
    env.grid.set(
        Pos::new(split, door_y),
        Some(Object::door(Color::Yellow, DoorState::Locked)),
    )?;
    let key = env
        .grid
        .identify(Object::new(ObjectKind::Key, Color::Yellow));
    let agent = Some(env.agent_pos);
    place_obj(env, rng, Some(key), (0, 0), (split, s), agent)?;
    finish(
        env,
        steps(10, size),
        "use the key to open the door and then get to the goal",
        false,
    )
}

/// numpy's `Generator.shuffle` (minigrid's `self.np_random.shuffle`).
fn shuffle<T>(rng: &mut NumpyGenerator, items: &mut [T]) {
    rng.shuffle(items);
}

/// `MiniGrid-LavaCrossingS{size}N{num_crossings}-v0` (minigrid's `CrossingEnv` with lava): rivers
/// of lava across the room, each with one gap, the agent at (1, 1) facing right, the goal in the
/// bottom-right corner; `max_steps = 4 * size^2`. `size` must be odd.
pub fn lava_crossing(
    size: usize,
    num_crossings: usize,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    let s = check_size(size)?;
    if s % 2 == 0 {
        return Err(Error::BadLevelParam { name: "size" });
    }
    env.clear(size, size)?;
    env.grid.wall_rect(0, 0, s, s);
    env.agent_pos = Pos::new(1, 1);
    env.agent_dir = 0;
    env.grid.set(Pos::new(s - 2, s - 2), Some(Object::goal()))?;

    // (vertical?, position): vertical rivers at columns 2, 4, .. < height - 2, horizontal ones at
    // rows 2, 4, .. < width - 2 (minigrid's `rivers` list, in its order).
    let mut rivers = [(false, 0i32); MAX_GRID_SIZE];
    let mut n = 0usize;
    for i in (2..s - 2).step_by(2) {
        if let Some(r) = rivers.get_mut(n) {
            *r = (true, i);
            n += 1;
        }
    }
    for j in (2..s - 2).step_by(2) {
        if let Some(r) = rivers.get_mut(n) {
            *r = (false, j);
            n += 1;
        }
    }
    let all = rivers
        .get_mut(..n)
        .ok_or(Error::BadLevelParam { name: "size" })?;
    shuffle(rng, all);
    let chosen = all.get(..num_crossings.min(n)).unwrap_or(&[]);

    // Sorted positions of the chosen vertical and horizontal rivers, with the outer walls as
    // limits: limits_v = [0] + rivers_v + [height - 1], limits_h = [0] + rivers_h + [width - 1].
    let mut limits_v = [0i32; MAX_GRID_SIZE + 2];
    let mut limits_h = [0i32; MAX_GRID_SIZE + 2];
    let (mut nv, mut nh) = (0usize, 0usize);
    for &(vertical, p) in chosen {
        let (arr, k) = if vertical {
            (&mut limits_v, &mut nv)
        } else {
            (&mut limits_h, &mut nh)
        };
        *k += 1;
        if let Some(slot) = arr.get_mut(*k) {
            *slot = p;
        }
    }
    limits_v
        .get_mut(1..=nv)
        .ok_or(Error::BadLevelParam { name: "size" })?
        .sort_unstable();
    limits_h
        .get_mut(1..=nh)
        .ok_or(Error::BadLevelParam { name: "size" })?
        .sort_unstable();
    *limits_v
        .get_mut(nv + 1)
        .ok_or(Error::BadLevelParam { name: "size" })? = s - 1;
    *limits_h
        .get_mut(nh + 1)
        .ok_or(Error::BadLevelParam { name: "size" })? = s - 1;

    // Lava: horizontal rivers span the row, vertical rivers the column.
    for &j in limits_h.get(1..=nh).unwrap_or(&[]) {
        for i in 1..s - 1 {
            env.grid.set(Pos::new(i, j), Some(Object::lava()))?;
        }
    }
    for &i in limits_v.get(1..=nv).unwrap_or(&[]) {
        for j in 1..s - 1 {
            env.grid.set(Pos::new(i, j), Some(Object::lava()))?;
        }
    }

    // The path through the rivers: one "cross a vertical river" (h) step per vertical river, one
    // "cross a horizontal river" (v) step per horizontal river, in random order.
    let mut path = [false; MAX_GRID_SIZE]; // true: h (move right through a vertical river)
    let np = nv + nh;
    for (k, p) in path.iter_mut().enumerate().take(np) {
        *p = k < nv;
    }
    let path = path
        .get_mut(..np)
        .ok_or(Error::BadLevelParam { name: "size" })?;
    shuffle(rng, path);
    let (mut room_i, mut room_j) = (0usize, 0usize);
    let lim = |a: &[i32; MAX_GRID_SIZE + 2], k: usize| -> Result<i32, Error> {
        a.get(k).copied().ok_or(Error::GenerationFailed {
            what: "lava crossing path",
        })
    };
    for &h in path.iter() {
        let (i, j) = if h {
            let i = lim(&limits_v, room_i + 1)?;
            let j = rng.gen_range(lim(&limits_h, room_j)? + 1, lim(&limits_h, room_j + 1)?);
            room_i += 1;
            (i, j)
        } else {
            let i = rng.gen_range(lim(&limits_v, room_i)? + 1, lim(&limits_v, room_i + 1)?);
            let j = lim(&limits_h, room_j + 1)?;
            room_j += 1;
            (i, j)
        };
        env.grid.set(Pos::new(i, j), None)?;
    }
    finish(
        env,
        steps(4, size),
        "avoid the lava and get to the green goal square",
        false,
    )
}

#[derive(Clone, Copy, Debug, Default)]
struct Room {
    top: (i32, i32),
    size: (i32, i32),
    entry_door: (i32, i32),
}

struct RoomList {
    rooms: [Room; MAX_MULTI_ROOMS],
    len: usize,
}

impl RoomList {
    fn new() -> Self {
        RoomList {
            rooms: [Room::default(); MAX_MULTI_ROOMS],
            len: 0,
        }
    }
    fn as_slice(&self) -> &[Room] {
        self.rooms.get(..self.len).unwrap_or(&[])
    }
    fn push(&mut self, r: Room) -> bool {
        match self.rooms.get_mut(self.len) {
            Some(slot) => {
                *slot = r;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

/// minigrid's `MultiRoomEnv._placeRoom`: place a room whose entry door is `entry_door` on its
/// wall `entry_wall` (0 right, 1 bottom, 2 left, 3 top), then recursively the next ones.
#[allow(clippy::too_many_arguments)]
fn place_room(
    rng: &mut NumpyGenerator,
    num_left: usize,
    rooms: &mut RoomList,
    min_sz: i32,
    max_sz: i32,
    entry_wall: u8,
    entry_door: (i32, i32),
    grid_size: (i32, i32),
) -> bool {
    let size_x = rng.gen_range(min_sz, max_sz + 1);
    let size_y = rng.gen_range(min_sz, max_sz + 1);
    let (top_x, top_y) = if rooms.len == 0 {
        entry_door
    } else {
        match entry_wall {
            0 => {
                let y = entry_door.1;
                (entry_door.0 - size_x + 1, rng.gen_range(y - size_y + 2, y))
            }
            1 => {
                let x = entry_door.0;
                (rng.gen_range(x - size_x + 2, x), entry_door.1 - size_y + 1)
            }
            2 => {
                let y = entry_door.1;
                (entry_door.0, rng.gen_range(y - size_y + 2, y))
            }
            _ => {
                let x = entry_door.0;
                (rng.gen_range(x - size_x + 2, x), entry_door.1)
            }
        }
    };
    if top_x < 0 || top_y < 0 {
        return false;
    }
    // minigrid's bounds check (note the asymmetric `>=` on y).
    if top_x + size_x > grid_size.0 || top_y + size_y >= grid_size.1 {
        return false;
    }
    let earlier = rooms.len.saturating_sub(1);
    for room in rooms.as_slice().iter().take(earlier) {
        let non_overlap = top_x + size_x < room.top.0
            || room.top.0 + room.size.0 <= top_x
            || top_y + size_y < room.top.1
            || room.top.1 + room.size.1 <= top_y;
        if !non_overlap {
            return false;
        }
    }
    if !rooms.push(Room {
        top: (top_x, top_y),
        size: (size_x, size_y),
        entry_door,
    }) {
        return false;
    }
    if num_left <= 1 {
        return true;
    }
    for _ in 0..8 {
        // A random wall other than the entry wall (sorted order, as minigrid).
        let k = rng.gen_range(0, 3) as u8;
        let exit_wall = if k >= entry_wall { k + 1 } else { k };
        let next_entry = (exit_wall + 2) % 4;
        let exit_door = match exit_wall {
            0 => (top_x + size_x - 1, top_y + rng.gen_range(1, size_y - 1)),
            1 => (top_x + rng.gen_range(1, size_x - 1), top_y + size_y - 1),
            2 => (top_x, top_y + rng.gen_range(1, size_y - 1)),
            _ => (top_x + rng.gen_range(1, size_x - 1), top_y),
        };
        if place_room(
            rng,
            num_left - 1,
            rooms,
            min_sz,
            max_sz,
            next_entry,
            exit_door,
            grid_size,
        ) {
            break;
        }
    }
    true
}

/// `MiniGrid-MultiRoom-N{..}-S{..}-v0`: a chain of `min_rooms..=max_rooms` rooms (sides
/// `4..=max_room_size`) joined by closed doors of random colours (no two consecutive doors the
/// same colour) on a 25x25 grid; the agent in the first room, the goal in the last;
/// `max_steps = 20 * max_rooms`.
pub fn multi_room(
    min_rooms: usize,
    max_rooms: usize,
    max_room_size: usize,
    rng: &mut NumpyGenerator,
    env: &mut Env,
) -> Result<(), Error> {
    if min_rooms == 0 || max_rooms < min_rooms || max_rooms > MAX_MULTI_ROOMS {
        return Err(Error::BadLevelParam { name: "num_rooms" });
    }
    if !(4..=MULTI_ROOM_GRID as usize).contains(&max_room_size) {
        return Err(Error::BadLevelParam {
            name: "max_room_size",
        });
    }
    let (w, h) = (MULTI_ROOM_GRID, MULTI_ROOM_GRID);
    let num_rooms = rng.gen_range(min_rooms as i32, max_rooms as i32 + 1) as usize;
    let mut best = RoomList::new();
    let mut tries = 0u32;
    while best.len < num_rooms {
        if tries >= MAX_ROOM_CHAIN_TRIES {
            return Err(Error::GenerationFailed {
                what: "multi_room: room chain",
            });
        }
        tries += 1;
        let mut cur = RoomList::new();
        // minigrid draws both coordinates with `width - 2` (the grid is square).
        let entry = (rng.gen_range(0, w - 2), rng.gen_range(0, w - 2));
        place_room(
            rng,
            num_rooms,
            &mut cur,
            4,
            max_room_size as i32,
            2,
            entry,
            (w, h),
        );
        if cur.len > best.len {
            best = cur;
        }
    }

    env.clear(w as usize, h as usize)?;
    let mut prev_color: Option<Color> = None;
    for (idx, room) in best.as_slice().iter().enumerate() {
        let (tx, ty) = room.top;
        let (sx, sy) = room.size;
        env.grid.horz_wall(tx, ty, sx);
        env.grid.horz_wall(tx, ty + sy - 1, sx);
        env.grid.vert_wall(tx, ty, sy);
        env.grid.vert_wall(tx + sx - 1, ty, sy);
        if idx > 0 {
            // `sorted(set(COLOR_NAMES) - {prev})`, uniformly.
            let mut colors = [Color::Red; 6];
            let mut n = 0usize;
            for c in Color::SORTED_NAMES {
                if Some(c) != prev_color {
                    if let Some(slot) = colors.get_mut(n) {
                        *slot = c;
                        n += 1;
                    }
                }
            }
            let color = rng.choose(colors.get(..n).unwrap_or(&[])).copied().ok_or(
                Error::GenerationFailed {
                    what: "multi_room: door colour",
                },
            )?;
            env.grid.set(
                Pos::new(room.entry_door.0, room.entry_door.1),
                Some(Object::door(color, DoorState::Closed)),
            )?;
            prev_color = Some(color);
        }
    }
    let first = *best.as_slice().first().ok_or(Error::GenerationFailed {
        what: "multi_room: no room",
    })?;
    let last = *best.as_slice().last().ok_or(Error::GenerationFailed {
        what: "multi_room: no room",
    })?;
    place_agent(env, rng, first.top, first.size)?;
    let agent = Some(env.agent_pos);
    place_obj(env, rng, Some(Object::goal()), last.top, last.size, agent)?;
    finish(
        env,
        u32::try_from(max_rooms.saturating_mul(20)).unwrap_or(u32::MAX),
        "traverse the rooms to get to the goal",
        false,
    )
}

/// `MiniGrid-FourRooms-v0`: a 19x19 grid of four rooms joined by one-cell gaps at random places;
/// the agent (random direction) and the goal at random empty cells; `max_steps = 100`.
pub fn four_rooms(rng: &mut NumpyGenerator, env: &mut Env) -> Result<(), Error> {
    let size = FOUR_ROOMS_SIZE as i32;
    env.clear(FOUR_ROOMS_SIZE, FOUR_ROOMS_SIZE)?;
    let (w, h) = (size, size);
    env.grid.horz_wall(0, 0, w);
    env.grid.horz_wall(0, h - 1, w);
    env.grid.vert_wall(0, 0, h);
    env.grid.vert_wall(w - 1, 0, h);
    let room_w = w / 2;
    let room_h = h / 2;
    for j in 0..2 {
        for i in 0..2 {
            let x_l = i * room_w;
            let y_t = j * room_h;
            let x_r = x_l + room_w;
            let y_b = y_t + room_h;
            if i + 1 < 2 {
                env.grid.vert_wall(x_r, y_t, room_h);
                let y = rng.gen_range(y_t + 1, y_b);
                env.grid.set(Pos::new(x_r, y), None)?;
            }
            if j + 1 < 2 {
                env.grid.horz_wall(x_l, y_b, room_w);
                let x = rng.gen_range(x_l + 1, x_r);
                env.grid.set(Pos::new(x, y_b), None)?;
            }
        }
    }
    place_agent(env, rng, (0, 0), (w, h))?;
    let agent = Some(env.agent_pos);
    place_obj(env, rng, Some(Object::goal()), (0, 0), (w, h), agent)?;
    finish(env, 100, "reach the goal", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    type Gen = fn(&mut NumpyGenerator, &mut Env) -> Result<(), Error>;

    #[rustfmt::skip] // a table: one level per line
    fn gens() -> Vec<(&'static str, Gen, usize, usize, u32, &'static str)> {
        // (name, generator, width, height, max_steps, mission)
        const GOAL: &str = "get to the green goal square";
        const DOOR_KEY: &str = "use the key to open the door and then get to the goal";
        const LAVA: &str = "avoid the lava and get to the green goal square";
        const ROOMS: &str = "traverse the rooms to get to the goal";
        const REACH: &str = "reach the goal";
        vec![
            ("Empty-5x5", |r, e| empty(5, r, e), 5, 5, 100, GOAL),
            ("Empty-8x8", |r, e| empty(8, r, e), 8, 8, 256, GOAL),
            ("Empty-16x16", |r, e| empty(16, r, e), 16, 16, 1024, GOAL),
            ("DoorKey-5x5", |r, e| door_key(5, r, e), 5, 5, 250, DOOR_KEY),
            ("DoorKey-8x8", |r, e| door_key(8, r, e), 8, 8, 640, DOOR_KEY),
            ("DoorKey-16x16", |r, e| door_key(16, r, e), 16, 16, 2560, DOOR_KEY),
            ("LavaCrossingS9N1", |r, e| lava_crossing(9, 1, r, e), 9, 9, 324, LAVA),
            ("LavaCrossingS11N5", |r, e| lava_crossing(11, 5, r, e), 11, 11, 484, LAVA),
            ("MultiRoom-N2-S4", |r, e| multi_room(2, 2, 4, r, e), 25, 25, 40, ROOMS),
            ("MultiRoom-N6", |r, e| multi_room(6, 6, 10, r, e), 25, 25, 120, ROOMS),
            ("FourRooms", |r, e| four_rooms(r, e), 19, 19, 100, REACH),
        ]
    }

    /// The objects of `kind` on the grid, with their positions.
    fn of_kind(env: &Env, kind: ObjectKind) -> Vec<(Pos, Object)> {
        env.grid
            .objects()
            .filter(|(_, o)| o.kind == kind)
            .map(|(p, o)| (p, *o))
            .collect()
    }

    fn goals(env: &Env) -> Vec<Pos> {
        of_kind(env, ObjectKind::Goal)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    /// Flood fill from the agent through every non-wall cell (doors and lava included).
    fn reachable(env: &Env, target: Pos) -> bool {
        let (w, h) = (env.grid.width(), env.grid.height());
        let mut seen = vec![false; (w * h) as usize];
        let mut q = VecDeque::new();
        q.push_back(env.agent_pos);
        seen[(env.agent_pos.y * w + env.agent_pos.x) as usize] = true;
        while let Some(p) = q.pop_front() {
            if p == target {
                return true;
            }
            for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                let n = p.offset(dx, dy);
                if !env.grid.in_bounds(n) || seen[(n.y * w + n.x) as usize] {
                    continue;
                }
                if env.grid.get(n).is_some_and(|o| o.kind == ObjectKind::Wall) {
                    continue;
                }
                seen[(n.y * w + n.x) as usize] = true;
                q.push_back(n);
            }
        }
        false
    }

    /// Flood fill avoiding lava too (LavaCrossing guarantees a lava-free path).
    fn reachable_without_lava(env: &Env, target: Pos) -> bool {
        let mut e = env.clone();
        let lava: Vec<Pos> = e
            .grid
            .objects()
            .filter(|(_, o)| o.kind == ObjectKind::Lava)
            .map(|(p, _)| p)
            .collect();
        for p in lava {
            e.grid.set(p, Some(Object::wall())).unwrap();
        }
        reachable(&e, target)
    }

    #[test]
    fn generators_succeed_with_minigrid_sizes_and_reachable_goal() {
        let mut env = Env::new(8, 8).unwrap();
        for (name, gen, w, h, max_steps, mission) in gens() {
            for seed in 0..100u64 {
                let mut rng = NumpyGenerator::new(seed);
                gen(&mut rng, &mut env).unwrap_or_else(|e| panic!("{name} seed {seed}: {e}"));
                assert_eq!(env.grid.width() as usize, w, "{name}");
                assert_eq!(env.grid.height() as usize, h, "{name}");
                assert_eq!(env.max_steps, max_steps, "{name}");
                assert_eq!(env.mission.as_str(), mission, "{name}");
                assert_eq!(env.task, Task::Goal);
                assert!(env.layout.is_none());
                assert!(env.agent_dir < 4);
                assert_eq!(env.see_through_walls, name.starts_with("Empty"), "{name}");
                let cell = env.grid.get(env.agent_pos);
                assert!(env.grid.in_bounds(env.agent_pos), "{name} seed {seed}");
                assert!(
                    !matches!(cell, Some(o) if !o.can_overlap()),
                    "{name} seed {seed}: agent on {cell:?}"
                );
                let g = goals(&env);
                assert_eq!(g.len(), 1, "{name} seed {seed}");
                assert!(
                    reachable(&env, g[0]),
                    "{name} seed {seed}: goal unreachable"
                );
                if name.starts_with("Lava") {
                    assert!(reachable_without_lava(&env, g[0]), "{name} seed {seed}");
                }
                // Determinism.
                let mut env2 = Env::new(5, 5).unwrap();
                gen(&mut NumpyGenerator::new(seed), &mut env2).unwrap();
                assert!(env == env2, "{name} seed {seed}: not deterministic");
            }
        }
    }

    #[test]
    fn empty_is_fixed() {
        let mut env = Env::new(8, 8).unwrap();
        empty(8, &mut NumpyGenerator::new(3), &mut env).unwrap();
        assert_eq!(env.agent_pos, Pos::new(1, 1));
        assert_eq!(env.agent_dir, 0);
        assert_eq!(env.grid.get(Pos::new(6, 6)), Some(&Object::goal()));
        assert_eq!(env.grid.objects().count(), 28 + 1);
    }

    #[test]
    fn door_key_structure() {
        let mut env = Env::new(8, 8).unwrap();
        let mut splits = std::collections::BTreeSet::new();
        for seed in 0..200 {
            door_key(8, &mut NumpyGenerator::new(seed), &mut env).unwrap();
            let doors: Vec<_> = of_kind(&env, ObjectKind::Door);
            assert_eq!(doors.len(), 1);
            let (dp, door) = doors[0];
            assert_eq!(door.color, Color::Yellow);
            assert_eq!(door.door, DoorState::Locked);
            assert_eq!(door.id, crate::world::ObjectId::NONE);
            assert!((2..6).contains(&dp.x) && (1..6).contains(&dp.y));
            splits.insert(dp.x);
            let keys: Vec<_> = of_kind(&env, ObjectKind::Key);
            assert_eq!(keys.len(), 1);
            assert!(keys[0].0.x < dp.x && keys[0].0 != env.agent_pos);
            assert_ne!(keys[0].1.id, crate::world::ObjectId::NONE);
            assert!(env.agent_pos.x < dp.x);
        }
        assert_eq!(splits.len(), 4);
    }

    #[test]
    fn lava_crossing_structure() {
        let mut env = Env::new(8, 8).unwrap();
        for seed in 0..100 {
            lava_crossing(9, 1, &mut NumpyGenerator::new(seed), &mut env).unwrap();
            let lava = of_kind(&env, ObjectKind::Lava).len();
            assert_eq!(lava, 6, "one river of 7 with one gap");
            assert_eq!(env.agent_pos, Pos::new(1, 1));
            assert_eq!(env.agent_dir, 0);
        }
        assert!(lava_crossing(8, 1, &mut NumpyGenerator::new(0), &mut env).is_err());
    }

    #[test]
    fn multi_room_structure() {
        let mut env = Env::new(8, 8).unwrap();
        for seed in 0..100 {
            multi_room(2, 2, 4, &mut NumpyGenerator::new(seed), &mut env).unwrap();
            let doors: Vec<_> = of_kind(&env, ObjectKind::Door)
                .into_iter()
                .map(|(_, o)| o)
                .collect();
            assert_eq!(doors.len(), 1);
            assert_eq!(doors[0].door, DoorState::Closed);
        }
        for seed in 0..30 {
            multi_room(6, 6, 10, &mut NumpyGenerator::new(seed), &mut env).unwrap();
            let doors: Vec<_> = of_kind(&env, ObjectKind::Door);
            assert_eq!(doors.len(), 5);
        }
        assert!(multi_room(0, 2, 4, &mut NumpyGenerator::new(0), &mut env).is_err());
        assert!(multi_room(3, 2, 4, &mut NumpyGenerator::new(0), &mut env).is_err());
        assert!(multi_room(2, 2, 3, &mut NumpyGenerator::new(0), &mut env).is_err());
        assert!(multi_room(2, 99, 4, &mut NumpyGenerator::new(0), &mut env).is_err());
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        let mut env = Env::new(8, 8).unwrap();
        let mut rng = NumpyGenerator::new(1);
        for s in [0usize, 1, 2, 33, 1000, usize::MAX] {
            assert!(empty(s, &mut rng, &mut env).is_err());
            assert!(door_key(s, &mut rng, &mut env).is_err());
            assert!(lava_crossing(s, 1, &mut rng, &mut env).is_err());
        }
        assert!(door_key(4, &mut rng, &mut env).is_err());
        for s in [3usize, 5, 31] {
            for n in [0usize, 1, 100, usize::MAX] {
                lava_crossing(s, n, &mut rng, &mut env).unwrap();
            }
        }
        for s in 5..=32 {
            door_key(s, &mut rng, &mut env).unwrap();
            empty(s, &mut rng, &mut env).unwrap();
        }
        for max in 4..=25 {
            for n in 1..=MAX_MULTI_ROOMS {
                let _ = multi_room(1, n, max, &mut rng, &mut env);
            }
        }
    }
}
