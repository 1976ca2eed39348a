//! World objects, colours and minigrid's integer encodings.
//!
//! Invariants:
//! - Encodings are minigrid 3.2.0's: types unseen 0, empty 1, wall 2, floor 3, door 4, key 5,
//!   ball 6, box 7, goal 8, lava 9, agent 10; colours red 0, green 1, blue 2, purple 3, yellow 4,
//!   grey 5; door state open 0, closed 1, locked 2.
//! - An [`Object`] is a small `Copy` value. Objects that can be carried or named by a mission carry
//!   an [`ObjectId`] that stays with them when they move, so verifiers can track *that* ball
//!   the way minigrid tracks Python object identity.

use crate::error::Error;

indexed_enum! {
    /// Object type, with minigrid's `OBJECT_TO_IDX` as discriminant.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum ObjectKind: cell "type" {
        /// Not visible (observation only).
        Unseen = 0 => "unseen",
        /// Nothing there (encoding only; an empty cell is `None`).
        Empty = 1 => "empty",
        /// Wall: blocks movement and sight.
        Wall = 2 => "wall",
        /// Coloured floor: the agent can walk on it.
        Floor = 3 => "floor",
        /// Door: open, closed or locked.
        Door = 4 => "door",
        /// Key: can be picked up; opens the locked door of its colour.
        Key = 5 => "key",
        /// Ball: can be picked up.
        Ball = 6 => "ball",
        /// Box: can be picked up; toggling it replaces it with its contents.
        Box = 7 => "box",
        /// Goal square: stepping on it ends the episode with success.
        Goal = 8 => "goal",
        /// Lava: stepping on it ends the episode with no reward.
        Lava = 9 => "lava",
        /// The agent (encoding only; never stored in a grid).
        Agent = 10 => "agent",
    }
}

impl ObjectKind {
    /// Whether an object of this kind can be picked up (key, ball, box).
    pub fn can_pickup(self) -> bool {
        matches!(self, ObjectKind::Key | ObjectKind::Ball | ObjectKind::Box)
    }
}

indexed_enum! {
    /// Colour, with minigrid's `COLOR_TO_IDX` as discriminant.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Color: cell "color" {
        /// Index 0.
        Red = 0 => "red",
        /// Index 1.
        Green = 1 => "green",
        /// Index 2.
        Blue = 2 => "blue",
        /// Index 3.
        Purple = 3 => "purple",
        /// Index 4.
        Yellow = 4 => "yellow",
        /// Index 5.
        Grey = 5 => "grey",
    }
}

impl Color {
    /// minigrid's `COLOR_NAMES` (sorted alphabetically): the order random colour choices use.
    pub const SORTED_NAMES: [Color; 6] = [
        Color::Blue,
        Color::Green,
        Color::Grey,
        Color::Purple,
        Color::Red,
        Color::Yellow,
    ];
}

indexed_enum! {
    /// Door state, with minigrid's `STATE_TO_IDX` as discriminant. Other objects encode state 0.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum DoorState: cell "state" {
        /// Index 0: the agent can walk through and see through it.
        Open = 0,
        /// Index 1: toggling opens it.
        Closed = 1,
        /// Index 2: only toggling while carrying a key of the same colour opens it.
        Locked = 2,
    }
}

/// Identity of an object across moves (pickup, drop). `ObjectId::NONE` for walls and the like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub u16);

impl ObjectId {
    /// The id of objects whose identity never matters (walls, floor, lava).
    pub const NONE: ObjectId = ObjectId(0);
}

/// What a box holds (one level deep: a box inside a box is held without contents).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Contents {
    /// Kind of the held object.
    pub kind: ObjectKind,
    /// Colour of the held object.
    pub color: Color,
    /// Identity the held object gets when the box is opened.
    pub id: ObjectId,
}

/// One world object. An empty cell is `None` in a grid, never an `Object` of kind `Empty`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Object {
    /// The object's type.
    pub kind: ObjectKind,
    /// The object's colour.
    pub color: Color,
    /// Door state (meaningful for doors only; `Open` otherwise, which encodes as 0).
    pub door: DoorState,
    /// Identity (see [`ObjectId`]).
    pub id: ObjectId,
    /// Contents of a box.
    pub contents: Option<Contents>,
}

impl Object {
    /// A new object with no identity, no contents and state 0.
    pub const fn new(kind: ObjectKind, color: Color) -> Self {
        Object {
            kind,
            color,
            door: DoorState::Open,
            id: ObjectId::NONE,
            contents: None,
        }
    }

    /// A grey wall.
    pub const fn wall() -> Self {
        Object::new(ObjectKind::Wall, Color::Grey)
    }

    /// A door of `color` in `state`.
    pub const fn door(color: Color, state: DoorState) -> Self {
        Object {
            kind: ObjectKind::Door,
            color,
            door: state,
            id: ObjectId::NONE,
            contents: None,
        }
    }

    /// A green goal square.
    pub const fn goal() -> Self {
        Object::new(ObjectKind::Goal, Color::Green)
    }

    /// A (red) lava cell.
    pub const fn lava() -> Self {
        Object::new(ObjectKind::Lava, Color::Red)
    }

    /// This object with identity `id`.
    pub const fn with_id(mut self, id: ObjectId) -> Self {
        self.id = id;
        self
    }

    /// minigrid's `encode()`: `[type, color, state]`.
    #[inline]
    pub const fn encode(&self) -> [u8; 3] {
        let state = match self.kind {
            ObjectKind::Door => self.door as u8,
            _ => 0,
        };
        [self.kind as u8, self.color as u8, state]
    }

    /// minigrid's `WorldObj.decode`: `Ok(None)` for empty/unseen/agent, an error for bad codes.
    ///
    /// Like minigrid, goal and lava keep their fixed colours (green, red) whatever the code says,
    /// and a door's state is decoded from the state field.
    pub fn decode(code: [u8; 3]) -> Result<Option<Object>, Error> {
        let kind = ObjectKind::from_index(code[0])?;
        let color = Color::from_index(code[1])?;
        if code[2] > 2 {
            return Err(Error::BadCellCode {
                field: "state",
                value: code[2],
            });
        }
        Ok(match kind {
            ObjectKind::Empty | ObjectKind::Unseen | ObjectKind::Agent => None,
            ObjectKind::Door => Some(Object::door(color, DoorState::from_index(code[2])?)),
            ObjectKind::Goal => Some(Object::goal()),
            ObjectKind::Lava => Some(Object::lava()),
            k => Some(Object::new(k, color)),
        })
    }

    /// Whether the agent can stand on this object (open door, goal, floor, lava).
    #[inline]
    pub fn can_overlap(&self) -> bool {
        match self.kind {
            ObjectKind::Door => self.door == DoorState::Open,
            ObjectKind::Goal | ObjectKind::Floor | ObjectKind::Lava => true,
            _ => false,
        }
    }

    /// Whether the agent can pick this object up.
    #[inline]
    pub fn can_pickup(&self) -> bool {
        self.kind.can_pickup()
    }

    /// Whether the agent sees past this object (walls and non-open doors block sight).
    #[inline]
    pub const fn see_behind(&self) -> bool {
        match self.kind {
            ObjectKind::Wall => false,
            ObjectKind::Door => matches!(self.door, DoorState::Open),
            _ => true,
        }
    }
}

/// Encoding of an optional cell: `[1, 0, 0]` for an empty cell.
#[inline]
pub const fn encode_cell(cell: Option<&Object>) -> [u8; 3] {
    match cell {
        Some(o) => o.encode(),
        None => [ObjectKind::Empty as u8, 0, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        for t in 2..=9u8 {
            for c in 0..6u8 {
                let s = if t == 4 { 2 } else { 0 };
                let o = Object::decode([t, c, s]).unwrap().unwrap();
                if t != 8 && t != 9 {
                    assert_eq!(o.encode(), [t, c, s]);
                }
            }
        }
        assert!(Object::decode([11, 0, 0]).is_err());
        assert!(Object::decode([2, 6, 0]).is_err());
        assert!(Object::decode([4, 0, 3]).is_err());
        assert_eq!(Object::decode([1, 0, 0]).unwrap(), None);
        assert_eq!(encode_cell(None), [1, 0, 0]);
    }

    #[test]
    fn door_semantics() {
        let open = Object::door(Color::Red, DoorState::Open);
        let closed = Object::door(Color::Red, DoorState::Closed);
        assert!(open.can_overlap() && open.see_behind());
        assert!(!closed.can_overlap() && !closed.see_behind());
        assert!(!Object::wall().see_behind());
        assert!(Object::lava().can_overlap());
    }
}
