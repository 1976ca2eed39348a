//! Room layout of RoomGrid levels: rooms of `room_size` cells sharing their walls.
//!
//! Invariants: the grid is `(room_size - 1) * num_cols + 1` wide and
//! `(room_size - 1) * num_rows + 1` high; room `(i, j)` has its top-left wall corner at
//! `(i * (room_size - 1), j * (room_size - 1))` and is `room_size` cells on each side, walls
//! included, so neighbouring rooms share a wall line.

use crate::grid::Pos;

/// The room structure of a RoomGrid level (minigrid's `RoomGrid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomLayout {
    /// Side of one room, walls included (at least 3).
    pub room_size: i32,
    /// Rooms per column.
    pub num_rows: i32,
    /// Rooms per row.
    pub num_cols: i32,
}

impl RoomLayout {
    /// Grid width this layout needs.
    pub fn width(&self) -> i32 {
        (self.room_size - 1) * self.num_cols + 1
    }

    /// Grid height this layout needs.
    pub fn height(&self) -> i32 {
        (self.room_size - 1) * self.num_rows + 1
    }

    /// Indices `(i, j)` (column, row) of the room containing `p` (minigrid's `room_from_pos`),
    /// `None` outside the layout.
    pub fn room_of(&self, p: Pos) -> Option<(i32, i32)> {
        if p.x < 0 || p.y < 0 || self.room_size < 3 {
            return None;
        }
        let i = p.x / (self.room_size - 1);
        let j = p.y / (self.room_size - 1);
        if i < self.num_cols && j < self.num_rows {
            Some((i, j))
        } else {
            None
        }
    }

    /// Top-left corner of room `(i, j)`.
    pub fn room_top(&self, i: i32, j: i32) -> Pos {
        Pos::new(i * (self.room_size - 1), j * (self.room_size - 1))
    }

    /// Whether `p` lies in room `(i, j)`, walls included (minigrid's `Room.pos_inside`).
    pub fn pos_inside(&self, i: i32, j: i32, p: Pos) -> bool {
        let top = self.room_top(i, j);
        p.x >= top.x && p.y >= top.y && p.x < top.x + self.room_size && p.y < top.y + self.room_size
    }
}
