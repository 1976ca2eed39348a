//! A fixed-capacity 2-D grid of optional world objects.
//!
//! Invariants:
//! - `3 <= width, height <= MAX_GRID_SIZE` (minigrid asserts at least 3), capacity is fixed in
//!   the type, no allocation.
//! - Cells are stored row-major: `cells[y * width + x]`.
//! - Reads outside the grid return `None` ([`Grid::get`]) or a wall ([`Grid::get_or_wall`], which
//!   is what minigrid's `slice` shows beyond the border); writes outside return an error.

use crate::error::Error;
use crate::world::{Object, ObjectId};

/// Largest supported width and height: 32, enough for every registered level (16 with the
/// `small-grid` feature).
#[cfg(not(feature = "small-grid"))]
pub const MAX_GRID_SIZE: usize = 32;
/// Largest supported width and height.
///
/// With the `small-grid` feature (device builds), 16: about 12 KB less per [`Grid`]; levels
/// larger than 16x16 (the multi-room and maze levels) then fail with [`Error::GridSize`].
#[cfg(feature = "small-grid")]
pub const MAX_GRID_SIZE: usize = 16;
/// Cell capacity of a grid.
pub const MAX_CELLS: usize = MAX_GRID_SIZE * MAX_GRID_SIZE;
/// Border of the code plane: how far outside the grid a view can reach (view size - 1).
pub const CODE_PAD: usize = 6;
/// Row stride of the code plane.
pub const CODE_STRIDE: usize = MAX_GRID_SIZE + 2 * CODE_PAD;
/// Cells of the code plane.
pub const CODE_CELLS: usize = CODE_STRIDE * CODE_STRIDE;
/// Code of a cell outside the grid (a grey wall, which blocks sight): see [`pack_code`].
pub const WALL_CODE: u32 = pack_code(Some(&Object::wall()));
/// Code of an empty cell.
pub const EMPTY_CODE: u32 = pack_code(None);

/// A cell's observation code: little-endian bytes `[type, color, state, blocks sight]`, so the
/// observation copies the first three bytes; [`unpack_code`] splits it.
pub const fn pack_code(cell: Option<&Object>) -> u32 {
    let [t, c, st] = crate::world::encode_cell(cell);
    let blocks = match cell {
        Some(o) => !o.see_behind(),
        None => false,
    };
    u32::from_le_bytes([t, c, st, blocks as u8])
}

/// `([type, color, state], blocks sight)` of a [`pack_code`] code.
#[inline]
pub const fn unpack_code(code: u32) -> ([u8; 3], bool) {
    let [t, c, s, b] = code.to_le_bytes();
    ([t, c, s], b != 0)
}

/// A position in grid coordinates (x to the right, y down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Pos {
    /// Column.
    pub x: i32,
    /// Row.
    pub y: i32,
}

impl Pos {
    /// `Pos { x, y }`.
    #[inline]
    pub const fn new(x: i32, y: i32) -> Self {
        Pos { x, y }
    }

    /// Manhattan distance.
    #[inline]
    pub fn manhattan(self, other: Pos) -> i32 {
        (self.x - other.x).abs() + (self.y - other.y).abs()
    }

    /// `self + d * (dx, dy)`.
    #[inline]
    pub fn offset(self, dx: i32, dy: i32) -> Pos {
        Pos::new(self.x + dx, self.y + dy)
    }
}

/// A `width x height` grid of optional objects, with an allocator of object identities.
///
/// Equality compares the size, the identity allocator and the `width * height` live cells, not
/// stale cells beyond them left by a larger level generated earlier in the same buffer.
#[derive(Clone, Debug)]
pub struct Grid {
    width: u8,
    height: u8,
    next_id: u16,
    cells: [Option<Object>; MAX_CELLS],
    codes: [u32; CODE_CELLS],
}

impl PartialEq for Grid {
    fn eq(&self, other: &Self) -> bool {
        self.width == other.width
            && self.height == other.height
            && self.next_id == other.next_id
            && self.cells() == other.cells()
    }
}

impl Eq for Grid {}

impl Grid {
    /// The empty 3x3 grid as a constant (what `Grid::new(3, 3)` returns), so a grid can live in
    /// a `static` without being built on the stack first (a microcontroller's RAM budget);
    /// [`Grid::reset`] then resizes it in place.
    pub const EMPTY: Grid = {
        let mut codes = [WALL_CODE; CODE_CELLS];
        let mut y = 0;
        while y < 3 {
            let mut x = 0;
            while x < 3 {
                codes[(y + CODE_PAD) * CODE_STRIDE + x + CODE_PAD] = EMPTY_CODE;
                x += 1;
            }
            y += 1;
        }
        Grid {
            width: 3,
            height: 3,
            next_id: 1,
            cells: [None; MAX_CELLS],
            codes,
        }
    };

    /// An empty grid; errors when a side is below 3 or above [`MAX_GRID_SIZE`].
    pub fn new(width: usize, height: usize) -> Result<Self, Error> {
        let mut g = Grid {
            width: 3,
            height: 3,
            next_id: 1,
            cells: [None; MAX_CELLS],
            codes: [WALL_CODE; CODE_CELLS],
        };
        g.reset(width, height)?;
        Ok(g)
    }

    /// Clear to an empty `width x height` grid in place (no 12 KB move), restarting identities.
    pub fn reset(&mut self, width: usize, height: usize) -> Result<(), Error> {
        if !(3..=MAX_GRID_SIZE).contains(&width) || !(3..=MAX_GRID_SIZE).contains(&height) {
            return Err(Error::GridSize { width, height });
        }
        // The code plane outside the old and new live areas (plus border) is already walls:
        // rewrite only the rectangle they span.
        let span_w = (self.width as usize).max(width) + 2 * CODE_PAD;
        let span_h = (self.height as usize).max(height) + 2 * CODE_PAD;
        self.width = width as u8;
        self.height = height as u8;
        self.next_id = 1;
        self.cells[..width * height].fill(None);
        for y in 0..span_h {
            let row = y * CODE_STRIDE;
            if let Some(r) = self.codes.get_mut(row..row + span_w) {
                r.fill(WALL_CODE);
            }
        }
        for y in 0..height {
            let row = (y + CODE_PAD) * CODE_STRIDE + CODE_PAD;
            if let Some(r) = self.codes.get_mut(row..row + width) {
                r.fill(EMPTY_CODE);
            }
        }
        Ok(())
    }

    /// Index of `p` in the code plane; `None` beyond the padded border.
    #[inline]
    pub fn code_index(p: Pos) -> Option<usize> {
        let (x, y) = (p.x + CODE_PAD as i32, p.y + CODE_PAD as i32);
        if x >= 0 && y >= 0 && (x as usize) < CODE_STRIDE && (y as usize) < CODE_STRIDE {
            Some(y as usize * CODE_STRIDE + x as usize)
        } else {
            None
        }
    }

    /// The code plane ([`pack_code`] of every cell, walls in the border), row stride
    /// [`CODE_STRIDE`], cell `(x, y)` at `(y + CODE_PAD) * CODE_STRIDE + x + CODE_PAD`.
    #[inline]
    pub fn codes(&self) -> &[u32; CODE_CELLS] {
        &self.codes
    }

    /// Width in cells.
    #[inline]
    pub fn width(&self) -> i32 {
        self.width as i32
    }

    /// Height in cells.
    #[inline]
    pub fn height(&self) -> i32 {
        self.height as i32
    }

    /// Whether `p` lies inside the grid.
    #[inline]
    pub fn in_bounds(&self, p: Pos) -> bool {
        p.x >= 0 && p.y >= 0 && p.x < self.width as i32 && p.y < self.height as i32
    }

    #[inline]
    fn index(&self, p: Pos) -> Option<usize> {
        if self.in_bounds(p) {
            Some(p.y as usize * self.width as usize + p.x as usize)
        } else {
            None
        }
    }

    /// The object at `p`; `None` when empty or outside.
    #[inline]
    pub fn get(&self, p: Pos) -> Option<&Object> {
        self.index(p).and_then(|i| self.cells[i].as_ref())
    }

    /// Change the object at `p` in place (no effect on an empty or outside cell); returns
    /// whether there was an object. Keeps the code plane in step.
    #[inline]
    pub fn update(&mut self, p: Pos, f: impl FnOnce(&mut Object)) -> bool {
        let Some(i) = self.index(p) else { return false };
        let Some(o) = self.cells[i].as_mut() else {
            return false;
        };
        f(o);
        let code = pack_code(Some(o));
        if let Some(c) = Self::code_index(p).and_then(|k| self.codes.get_mut(k)) {
            *c = code;
        }
        true
    }

    /// The object at `p`, a wall when outside (minigrid's `slice` semantics).
    #[inline]
    pub fn get_or_wall(&self, p: Pos) -> Option<Object> {
        match self.index(p) {
            Some(i) => self.cells[i],
            None => Some(Object::wall()),
        }
    }

    /// Put `obj` (or clear, with `None`) at `p`.
    #[inline]
    pub fn set(&mut self, p: Pos, obj: Option<Object>) -> Result<(), Error> {
        match self.index(p) {
            Some(i) => {
                if let Some(c) = Self::code_index(p).and_then(|k| self.codes.get_mut(k)) {
                    *c = pack_code(obj.as_ref());
                }
                self.cells[i] = obj;
                Ok(())
            }
            None => Err(Error::OutOfGrid { x: p.x, y: p.y }),
        }
    }

    /// A fresh identity for a new trackable object.
    pub fn alloc_id(&mut self) -> ObjectId {
        let id = ObjectId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// `obj` with a fresh identity (and fresh identities for box contents).
    pub fn identify(&mut self, mut obj: Object) -> Object {
        obj.id = self.alloc_id();
        if let Some(c) = obj.contents.as_mut() {
            c.id = self.alloc_id();
        }
        obj
    }

    /// A horizontal run of `len` walls from `(x, y)` (clipped to the grid).
    pub fn horz_wall(&mut self, x: i32, y: i32, len: i32) {
        for i in 0..len {
            let _ = self.set(Pos::new(x + i, y), Some(Object::wall()));
        }
    }

    /// A vertical run of `len` walls from `(x, y)` (clipped to the grid).
    pub fn vert_wall(&mut self, x: i32, y: i32, len: i32) {
        for j in 0..len {
            let _ = self.set(Pos::new(x, y + j), Some(Object::wall()));
        }
    }

    /// The outline of the `w x h` rectangle at `(x, y)` in walls.
    pub fn wall_rect(&mut self, x: i32, y: i32, w: i32, h: i32) {
        self.horz_wall(x, y, w);
        self.horz_wall(x, y + h - 1, w);
        self.vert_wall(x, y, h);
        self.vert_wall(x + w - 1, y, h);
    }

    /// Cells in row-major order.
    pub fn cells(&self) -> &[Option<Object>] {
        &self.cells[..self.width as usize * self.height as usize]
    }

    /// Every position with an object, row-major, with the object.
    pub fn objects(&self) -> impl Iterator<Item = (Pos, &Object)> + '_ {
        let w = self.width as i32;
        self.cells().iter().enumerate().filter_map(move |(i, c)| {
            c.as_ref()
                .map(|o| (Pos::new(i as i32 % w, i as i32 / w), o))
        })
    }

    /// The position of the object with identity `id`, if it is in the grid.
    pub fn find(&self, id: ObjectId) -> Option<Pos> {
        if id == ObjectId::NONE {
            return None;
        }
        self.objects().find(|(_, o)| o.id == id).map(|(p, _)| p)
    }

    /// minigrid's `grid.encode()`, row-major into `out` (`width * height` cells); returns the
    /// number written, or an error when `out` is too small.
    pub fn encode_into(&self, out: &mut [[u8; 3]]) -> Result<usize, Error> {
        let n = self.cells().len();
        let got = out.len();
        let dst = out
            .get_mut(..n)
            .ok_or(Error::BufferTooSmall { needed: n, got })?;
        for (d, c) in dst.iter_mut().zip(self.cells()) {
            *d = crate::world::encode_cell(c.as_ref());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_sizes() {
        assert!(Grid::new(2, 5).is_err());
        assert!(Grid::new(33, 5).is_err());
        let mut g = Grid::new(32, 32).unwrap();
        assert!(g.set(Pos::new(32, 0), None).is_err());
        assert!(g.set(Pos::new(-1, 0), None).is_err());
        assert_eq!(g.get_or_wall(Pos::new(-1, 3)), Some(Object::wall()));
        g.wall_rect(0, 0, 32, 32);
        assert_eq!(g.objects().count(), 4 * 31);
        let mut buf = [[0u8; 3]; 10];
        assert!(g.encode_into(&mut buf).is_err());
        // Equality ignores stale cells outside the live area.
        let mut small = Grid::new(5, 5).unwrap();
        g.reset(5, 5).unwrap();
        assert_eq!(g, small);
        small.wall_rect(0, 0, 5, 5);
        assert_ne!(g, small);
    }

    #[test]
    fn code_plane_follows_every_write() {
        use crate::world::{Color, DoorState, ObjectKind};
        let mut g = Grid::new(9, 7).unwrap();
        let check = |g: &Grid| {
            for y in -(CODE_PAD as i32)..(g.height() + CODE_PAD as i32) {
                for x in -(CODE_PAD as i32)..(g.width() + CODE_PAD as i32) {
                    let p = Pos::new(x, y);
                    let want = if g.in_bounds(p) {
                        pack_code(g.get(p))
                    } else {
                        WALL_CODE
                    };
                    assert_eq!(g.codes()[Grid::code_index(p).unwrap()], want, "{p:?}");
                }
            }
        };
        check(&g);
        g.wall_rect(0, 0, 9, 7);
        g.set(
            Pos::new(3, 3),
            Some(Object::door(Color::Red, DoorState::Locked)),
        )
        .unwrap();
        g.set(
            Pos::new(4, 4),
            Some(Object::new(ObjectKind::Ball, Color::Blue)),
        )
        .unwrap();
        check(&g);
        assert!(g.update(Pos::new(3, 3), |o| o.door = DoorState::Open));
        assert!(!g.update(Pos::new(5, 5), |o| o.door = DoorState::Open));
        check(&g);
        assert!(!unpack_code(g.codes()[Grid::code_index(Pos::new(3, 3)).unwrap()]).1);
        // Every object round-trips through the code: its encoding and whether it blocks sight.
        for t in 0..=10u8 {
            for c in 0..6u8 {
                for st in 0..3u8 {
                    if let Ok(Some(o)) = Object::decode([t, c, st]) {
                        assert_eq!(
                            unpack_code(pack_code(Some(&o))),
                            (o.encode(), !o.see_behind())
                        );
                    }
                }
            }
        }
        // A smaller level in the same buffer: stale codes beyond it read as walls.
        g.reset(5, 5).unwrap();
        check(&g);
        assert_eq!(pack_code(None), 1);
        assert_eq!(unpack_code(WALL_CODE), ([2, 5, 0], true));
    }
}
