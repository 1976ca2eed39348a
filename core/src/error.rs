//! The one error type of `metarim-core`: every fallible operation returns it instead of panicking.

use core::fmt;

/// Everything that can go wrong in the core, each variant naming what was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A cell code field (`type`, `color` or `state`) outside minigrid's tables.
    BadCellCode {
        /// Which field of `[type, color, state]`.
        field: &'static str,
        /// The offending value.
        value: u8,
    },
    /// A grid side below 3 or above the capacity.
    GridSize {
        /// Requested width.
        width: usize,
        /// Requested height.
        height: usize,
    },
    /// A write outside the grid.
    OutOfGrid {
        /// Column.
        x: i32,
        /// Row.
        y: i32,
    },
    /// An output buffer too small for the result.
    BufferTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        got: usize,
    },
    /// A state whose cell count is not `width * height`.
    CellCount {
        /// Expected `width * height`.
        expected: usize,
        /// Cells given.
        got: usize,
    },
    /// An agent direction outside `0..4`.
    BadDirection(i64),
    /// An agent position outside the grid or on a cell it cannot stand on.
    BadAgentPos {
        /// Column.
        x: i64,
        /// Row.
        y: i64,
    },
    /// A carried object of a kind that cannot be picked up (minigrid type index).
    NotCarriable(u8),
    /// An action index outside `0..7`.
    BadAction(i64),
    /// A view size other than the supported 7.
    ViewSize(i64),
    /// A level id that is not registered.
    UnknownLevel,
    /// A mission that does not follow the BabyAI grammar; `word` is the 0-based index of the word
    /// where parsing failed.
    BadMission {
        /// Index of the first word that could not be parsed.
        word: usize,
        /// What was expected there.
        expected: &'static str,
    },
    /// A mission longer than the fixed capacity.
    MissionTooLong {
        /// Capacity in bytes.
        capacity: usize,
    },
    /// More matching objects than a verifier can track.
    TooManyMatches {
        /// Capacity per description.
        capacity: usize,
    },
    /// A mission that names no object present in the level.
    NoMatchingObject,
    /// A level generator that gave up after too many rejected samples.
    GenerationFailed {
        /// What was being placed or checked.
        what: &'static str,
    },
    /// A parameter of a level out of its supported range.
    BadLevelParam {
        /// Parameter name.
        name: &'static str,
    },
    /// Model dimensions that a network block cannot run with (a zero size, `k > N`, ...).
    BadDims {
        /// Which dimension, or which relation between dimensions, is wrong.
        what: &'static str,
    },
    /// A device blob that cannot be used (see [`crate::blob`]).
    BadBlob {
        /// What is wrong with it.
        what: &'static str,
    },
    /// A device blob exported for another parameter split than the one this build runs (its
    /// groups have other sizes and meanings).
    BlobMode {
        /// The blob's mode (`meta-rim`, `reversed`, `joint`, `lstm`).
        found: &'static str,
        /// The mode this build runs.
        expected: &'static str,
    },
    /// An optimiser's step count at `u64::MAX`: one more step would wrap it to 0.
    StepCountOverflow,
    /// A configuration that cannot run (a value out of range, or two settings that exclude
    /// each other).
    BadConfig {
        /// Which setting, and what is wrong with it.
        what: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadCellCode { field, value } => {
                write!(f, "cell code out of range: {field}={value}")
            }
            Error::GridSize { width, height } => write!(
                f,
                "grid size {width}x{height} unsupported (3..={} per side)",
                crate::grid::MAX_GRID_SIZE
            ),
            Error::OutOfGrid { x, y } => write!(f, "position ({x}, {y}) is outside the grid"),
            Error::BufferTooSmall { needed, got } => {
                write!(f, "buffer too small: need {needed}, got {got}")
            }
            Error::CellCount { expected, got } => {
                write!(
                    f,
                    "grid has {got} cells, expected width*height = {expected}"
                )
            }
            Error::BadDirection(d) => write!(f, "agent direction {d} not in 0..4"),
            Error::BadAgentPos { x, y } => {
                write!(
                    f,
                    "agent position ({x}, {y}) is outside the grid or blocked"
                )
            }
            Error::NotCarriable(k) => {
                write!(
                    f,
                    "the agent cannot carry an object of type {k} (only key, ball, box)"
                )
            }
            Error::BadAction(a) => write!(f, "action {a} not in 0..7"),
            Error::ViewSize(v) => write!(f, "agent view size {v} unsupported (only 7)"),
            Error::UnknownLevel => write!(f, "unknown level id"),
            Error::BadMission { word, expected } => {
                write!(f, "unparsable mission: at word {word}, expected {expected}")
            }
            Error::MissionTooLong { capacity } => {
                write!(f, "mission longer than {capacity} bytes")
            }
            Error::TooManyMatches { capacity } => write!(
                f,
                "mission matches more than {capacity} objects (verifier capacity)"
            ),
            Error::NoMatchingObject => write!(f, "mission names no object present in the level"),
            Error::GenerationFailed { what } => {
                write!(f, "level generation gave up: {what}")
            }
            Error::BadLevelParam { name } => write!(f, "level parameter out of range: {name}"),
            Error::BadBlob { what } => write!(f, "bad model blob: {what}"),
            Error::BlobMode { found, expected } => write!(
                f,
                "bad model blob: exported in {found} mode, this build runs {expected} mode \
                 (export a checkpoint trained with --mode {expected})"
            ),
            Error::StepCountOverflow => write!(f, "the optimiser's step count overflowed"),
            Error::BadConfig { what } => write!(f, "bad configuration: {what}"),
            Error::BadDims { what } => write!(f, "unsupported model dimensions: {what}"),
        }
    }
}

impl core::error::Error for Error {}

/// `Ok` when a buffer of `got` elements holds the `needed` ones, else
/// [`Error::BufferTooSmall`]: the length check every block of the network makes on its inputs,
/// outputs and scratch before writing anything.
pub(crate) fn check_len(got: usize, needed: usize) -> Result<(), Error> {
    if got < needed {
        Err(Error::BufferTooSmall { needed, got })
    } else {
        Ok(())
    }
}
