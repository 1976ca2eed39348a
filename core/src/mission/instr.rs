//! BabyAI instructions: object descriptions, action clauses and sequences, parsed from and
//! rendered to mission text.
//!
//! Grammar (babyai's `verifier.py`, the subset minigrid 3.2.0 levels generate):
//! ```text
//! instr  := clause ", then " clause | clause " after you " clause | clause
//! clause := action " and " action | action
//! action := "go to " desc | "pick up " desc | "open " desc | "put " desc " next to " desc
//! desc   := ("the" | "a") [color] (type | "object") [loc]
//! loc    := "in front of you" | "behind you" | "on your left" | "on your right"
//! ```
//! The article is not part of the meaning: it is "the" when exactly one object matched at the
//! start of the episode, "a" otherwise.

use core::fmt::Write;

use crate::error::Error;
use crate::world::{Color, ObjectKind};

/// Capacity of a mission text in bytes (the longest BabyAI sequences are under 200).
pub const MAX_MISSION_LEN: usize = 256;

/// Mission text with fixed capacity.
pub type MissionText = heapless::String<MAX_MISSION_LEN>;

/// A location relative to the agent's start (minigrid's `LOC_NAMES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loc {
    /// Negative dot product with the agent's right vector.
    Left,
    /// Positive dot product with the agent's right vector.
    Right,
    /// Positive dot product with the agent's direction.
    Front,
    /// Negative dot product with the agent's direction.
    Behind,
}

impl Loc {
    /// All locations in minigrid's order.
    pub const ALL: [Loc; 4] = [Loc::Left, Loc::Right, Loc::Front, Loc::Behind];

    /// The phrase that follows the object name.
    pub fn phrase(self) -> &'static str {
        match self {
            Loc::Left => "on your left",
            Loc::Right => "on your right",
            Loc::Front => "in front of you",
            Loc::Behind => "behind you",
        }
    }
}

/// A description of a set of objects: optional type (`None` renders "object"), colour, location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjDesc {
    /// Object type, `None` for any ("object").
    pub kind: Option<ObjectKind>,
    /// Colour, `None` for any.
    pub color: Option<Color>,
    /// Location relative to the agent's start, `None` for anywhere.
    pub loc: Option<Loc>,
}

impl ObjDesc {
    /// A description by type and colour, anywhere.
    pub const fn new(kind: Option<ObjectKind>, color: Option<Color>) -> Self {
        ObjDesc {
            kind,
            color,
            loc: None,
        }
    }

    /// This description restricted to `loc`.
    pub const fn at(mut self, loc: Option<Loc>) -> Self {
        self.loc = loc;
        self
    }

    /// Write the description without its article (`"red ball on your left"`).
    pub fn write_body<W: Write>(&self, out: &mut W) -> core::fmt::Result {
        if let Some(c) = self.color {
            out.write_str(c.name())?;
            out.write_char(' ')?;
        }
        out.write_str(self.kind.map(ObjectKind::name).unwrap_or("object"))?;
        if let Some(l) = self.loc {
            out.write_char(' ')?;
            out.write_str(l.phrase())?;
        }
        Ok(())
    }
}

/// One action clause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Stand facing a matching object.
    GoTo(ObjDesc),
    /// Pick up a matching object.
    Pickup(ObjDesc),
    /// Open a matching door.
    Open(ObjDesc),
    /// Drop a matching object (first) next to a matching object (second).
    PutNext(ObjDesc, ObjDesc),
}

impl Action {
    /// Navigations this clause needs (minigrid's `num_navs_needed`: 2 for PutNext, else 1).
    pub fn num_navs(&self) -> u32 {
        match self {
            Action::PutNext(..) => 2,
            _ => 1,
        }
    }

    /// The descriptions this clause names, in surface order.
    pub fn descs(&self) -> (ObjDesc, Option<ObjDesc>) {
        match *self {
            Action::GoTo(d) | Action::Pickup(d) | Action::Open(d) => (d, None),
            Action::PutNext(a, b) => (a, Some(b)),
        }
    }
}

/// An action or a conjunction of two actions (the operands of a sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Clause {
    /// One action.
    Action(Action),
    /// Both actions, in any order.
    And(Action, Action),
}

impl Clause {
    /// Navigations needed.
    pub fn num_navs(&self) -> u32 {
        match self {
            Clause::Action(a) => a.num_navs(),
            Clause::And(a, b) => a.num_navs() + b.num_navs(),
        }
    }
}

/// A complete BabyAI instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instr {
    /// A single clause (action or conjunction).
    Clause(Clause),
    /// First clause, then the second (`"A, then B"`).
    Before(Clause, Clause),
    /// First clause after the second (`"A after you B"`: B must be done first).
    After(Clause, Clause),
}

impl Instr {
    /// A single action.
    pub const fn action(a: Action) -> Self {
        Instr::Clause(Clause::Action(a))
    }

    /// Navigations needed (minigrid's `num_navs_needed`), which sets `max_steps`.
    pub fn num_navs(&self) -> u32 {
        match self {
            Instr::Clause(c) => c.num_navs(),
            Instr::Before(a, b) | Instr::After(a, b) => a.num_navs() + b.num_navs(),
        }
    }

    /// The actions in surface order (at most four), as a fixed array and a count.
    pub fn actions(&self) -> ([Option<Action>; 4], usize) {
        let mut out = [None; 4];
        let mut n = 0;
        let push_clause = |c: &Clause, out: &mut [Option<Action>; 4], n: &mut usize| match *c {
            Clause::Action(a) => {
                out[*n] = Some(a);
                *n += 1;
            }
            Clause::And(a, b) => {
                out[*n] = Some(a);
                out[*n + 1] = Some(b);
                *n += 2;
            }
        };
        match self {
            Instr::Clause(c) => push_clause(c, &mut out, &mut n),
            Instr::Before(a, b) | Instr::After(a, b) => {
                push_clause(a, &mut out, &mut n);
                push_clause(b, &mut out, &mut n);
            }
        }
        (out, n)
    }

    /// Parse BabyAI mission text (see the module docs for the grammar).
    pub fn parse(text: &str) -> Result<Instr, Error> {
        let mut p = Parser::new(text)?;
        let instr = p.instr()?;
        if p.peek().is_some() {
            return Err(p.err("end of mission"));
        }
        Ok(instr)
    }
}

/// Word-level recursive-descent parser; `", then"` is split into `","` and `"then"`.
struct Parser<'a> {
    words: [&'a str; 64],
    len: usize,
    pos: usize,
}

impl<'a> Parser<'a> {
    /// Split into words; errors when there are more than the parser's capacity.
    fn new(text: &'a str) -> Result<Self, Error> {
        let mut words = [""; 64];
        let mut len = 0;
        for raw in text.split_ascii_whitespace() {
            // A trailing comma is its own token.
            let (w, comma) = match raw.strip_suffix(',') {
                Some(w) => (w, true),
                None => (raw, false),
            };
            for tok in [w, if comma { "," } else { "" }] {
                if tok.is_empty() {
                    continue;
                }
                let slot = words.get_mut(len).ok_or(Error::BadMission {
                    word: len,
                    expected: "a shorter mission (64 words at most)",
                })?;
                *slot = tok;
                len += 1;
            }
        }
        Ok(Parser { words, len, pos: 0 })
    }

    fn peek(&self) -> Option<&'a str> {
        if self.pos < self.len {
            self.words.get(self.pos).copied()
        } else {
            None
        }
    }

    fn err(&self, expected: &'static str) -> Error {
        Error::BadMission {
            word: self.pos,
            expected,
        }
    }

    fn expect(&mut self, word: &'static str) -> Result<(), Error> {
        if self.peek() == Some(word) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(word))
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek() == Some(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn instr(&mut self) -> Result<Instr, Error> {
        let a = self.clause()?;
        if self.eat(",") {
            self.expect("then")?;
            let b = self.clause()?;
            return Ok(Instr::Before(a, b));
        }
        if self.eat("after") {
            self.expect("you")?;
            let b = self.clause()?;
            return Ok(Instr::After(a, b));
        }
        Ok(Instr::Clause(a))
    }

    fn clause(&mut self) -> Result<Clause, Error> {
        let a = self.action()?;
        if self.eat("and") {
            let b = self.action()?;
            return Ok(Clause::And(a, b));
        }
        Ok(Clause::Action(a))
    }

    fn action(&mut self) -> Result<Action, Error> {
        match self.peek() {
            Some("go") => {
                self.pos += 1;
                self.expect("to")?;
                Ok(Action::GoTo(self.desc()?))
            }
            Some("pick") => {
                self.pos += 1;
                self.expect("up")?;
                let d = self.desc()?;
                if d.kind == Some(ObjectKind::Door) {
                    return Err(self.err("an object that can be picked up"));
                }
                Ok(Action::Pickup(d))
            }
            Some("open") => {
                self.pos += 1;
                let d = self.desc()?;
                if d.kind != Some(ObjectKind::Door) {
                    return Err(self.err("a door"));
                }
                Ok(Action::Open(d))
            }
            Some("put") => {
                self.pos += 1;
                let a = self.desc()?;
                if a.kind == Some(ObjectKind::Door) {
                    return Err(self.err("an object that can be moved"));
                }
                self.expect("next")?;
                self.expect("to")?;
                let b = self.desc()?;
                Ok(Action::PutNext(a, b))
            }
            _ => Err(self.err("go to / pick up / open / put")),
        }
    }

    fn desc(&mut self) -> Result<ObjDesc, Error> {
        if !(self.eat("the") || self.eat("a")) {
            return Err(self.err("the / a"));
        }
        let color = self.peek().and_then(Color::from_name);
        if color.is_some() {
            self.pos += 1;
        }
        let kind = match self.peek() {
            Some("object") => None,
            Some(w) => match ObjectKind::from_name(w) {
                Some(
                    k @ (ObjectKind::Door | ObjectKind::Key | ObjectKind::Ball | ObjectKind::Box),
                ) => Some(k),
                _ => return Err(self.err("door / key / ball / box / object")),
            },
            None => return Err(self.err("an object type")),
        };
        self.pos += 1;
        let loc = if self.eat("in") {
            self.expect("front")?;
            self.expect("of")?;
            self.expect("you")?;
            Some(Loc::Front)
        } else if self.peek() == Some("behind") && self.words.get(self.pos + 1) == Some(&"you") {
            self.pos += 2;
            Some(Loc::Behind)
        } else if self.eat("on") {
            self.expect("your")?;
            if self.eat("left") {
                Some(Loc::Left)
            } else if self.eat("right") {
                Some(Loc::Right)
            } else {
                return Err(self.err("left / right"));
            }
        } else {
            None
        };
        Ok(ObjDesc { kind, color, loc })
    }
}

/// `a`, `sep`, `b`, each part written by `part`: every binary node of the grammar ("A and B",
/// "A, then B", "A after you B", "put A next to B") has this shape. Always inlined: left to
/// the inliner, the firmware's level generator called it out of line (+11 instructions per
/// level reset, +8 B of stack; docs/BENCHMARKS.md, "this stop's consolidation of core").
#[inline(always)]
fn write_pair<T, W: Write>(
    a: &T,
    sep: &str,
    b: &T,
    out: &mut W,
    part: &mut impl FnMut(&T, &mut W) -> core::fmt::Result,
) -> core::fmt::Result {
    part(a, out)?;
    out.write_str(sep)?;
    part(b, out)
}

/// Write `instr` as mission text; `count(desc_index)` gives how many objects the i-th description
/// (in surface order) matched, which picks "the" (exactly one) or "a".
pub fn write_surface<W: Write>(
    instr: &Instr,
    mut count: impl FnMut(usize) -> usize,
    out: &mut W,
) -> core::fmt::Result {
    let mut next_desc = 0usize;
    let mut desc = |d: &ObjDesc, out: &mut W| -> core::fmt::Result {
        let n = count(next_desc);
        next_desc += 1;
        out.write_str(if n == 1 { "the " } else { "a " })?;
        d.write_body(out)
    };
    let mut action = |a: &Action, out: &mut W| -> core::fmt::Result {
        match a {
            Action::GoTo(d) => {
                out.write_str("go to ")?;
                desc(d, out)
            }
            Action::Pickup(d) => {
                out.write_str("pick up ")?;
                desc(d, out)
            }
            Action::Open(d) => {
                out.write_str("open ")?;
                desc(d, out)
            }
            Action::PutNext(a, b) => {
                out.write_str("put ")?;
                write_pair(a, " next to ", b, out, &mut desc)
            }
        }
    };
    let mut clause = |c: &Clause, out: &mut W| -> core::fmt::Result {
        match c {
            Clause::Action(a) => action(a, out),
            Clause::And(a, b) => write_pair(a, " and ", b, out, &mut action),
        }
    };
    match instr {
        Instr::Clause(c) => clause(c, out),
        Instr::Before(a, b) => write_pair(a, ", then ", b, out, &mut clause),
        Instr::After(a, b) => write_pair(a, " after you ", b, out, &mut clause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) {
        let instr = Instr::parse(text).unwrap();
        let mut s = MissionText::new();
        let articles: heapless::Vec<bool, 16> = text
            .split_ascii_whitespace()
            .filter(|w| *w == "the" || *w == "a")
            .map(|w| w == "the")
            .collect();
        write_surface(&instr, |i| if articles[i] { 1 } else { 2 }, &mut s).unwrap();
        assert_eq!(s.as_str(), text);
    }

    #[test]
    fn parses_and_renders_babyai_missions() {
        for m in [
            "go to the red ball",
            "go to a ball",
            "pick up the purple box on your left",
            "pick up a key behind you",
            "open the yellow door in front of you",
            "put the red ball next to a blue key",
            "go to the grey object on your right",
            "open a door and pick up the green key",
            "go to the red ball, then pick up a box and open the blue door",
            "pick up a ball after you put the key next to the box",
        ] {
            round_trip(m);
        }
    }

    #[test]
    fn rejects_bad_missions_with_the_word() {
        assert_eq!(
            Instr::parse("go to the red dragon"),
            Err(Error::BadMission {
                word: 4,
                expected: "door / key / ball / box / object"
            })
        );
        assert!(Instr::parse("").is_err());
        assert!(Instr::parse("open the red ball").is_err());
        assert!(Instr::parse("pick up the door").is_err());
        assert!(Instr::parse("go to the ball please").is_err());
        assert!(Instr::parse("go to the ball,").is_err());
        assert!(Instr::parse("get to the green goal square").is_err());
        let mut long = MissionText::new();
        long.push_str("go to the red ball").unwrap();
        for _ in 0..60 {
            long.push_str(" a").unwrap();
        }
        assert!(Instr::parse(&long).is_err());
    }

    #[test]
    fn num_navs() {
        assert_eq!(
            Instr::parse("put the red ball next to a blue key")
                .unwrap()
                .num_navs(),
            2
        );
        assert_eq!(
            Instr::parse("go to a ball, then put a key next to the box")
                .unwrap()
                .num_navs(),
            3
        );
    }
}
