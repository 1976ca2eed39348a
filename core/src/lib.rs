//! `metarim-core`: the heap-free, `no_std` core of metarim.
//!
//! Invariants, for every module:
//! - no allocation (`alloc` is not linked), capacities are in the types;
//! - no `unsafe` (`forbid(unsafe_code)`);
//! - no panic reachable from any input: fallible operations return [`Error`].
//!
//! The same code is the CPU reference on the host and what runs on a Cortex-M4.
//!
//! ```
//! use metarim_core::{env::Action, levels::Level};
//! let level = Level::from_id("BabyAI-GoToLocal-v0").unwrap();
//! let mut env = metarim_core::env::Env::new(8, 8).unwrap();
//! level.reset(&mut env, 7).unwrap();
//! let obs = env.observation();
//! assert_eq!(obs.len(), 49);
//! let out = env.step(Action::Forward);
//! assert!(out.reward >= 0.0);
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// Declares a fieldless `repr(u8)` enum whose discriminants are minigrid's indices, listed in
/// index order, with `ALL` (every variant in index order) generated from the same list and
/// checked at compile time; with names (`Red = 0 => "red"`), also `name` and `from_name`;
/// declared `pub enum Color: cell "color"`, also `from_index` for a cell code, whose error
/// names that field. The one place a variant, its index and its mission word are written.
macro_rules! indexed_enum {
    (
        $(#[$doc:meta])* pub enum $name:ident $(: cell $field:literal)? {
            $( $(#[$vdoc:meta])* $variant:ident = $index:literal $(=> $word:literal)?, )*
        }
    ) => {
        $(#[$doc])*
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vdoc])* $variant = $index, )*
        }

        impl $name {
            /// Every variant, in index order (`ALL[i]` has index `i`).
            pub const ALL: [$name; [$($index),*].len()] = [$($name::$variant),*];
        }

        // `ALL[i]` has index `i`: a list written out of order fails to compile.
        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                assert!($name::ALL[i] as usize == i, "indices must run 0, 1, 2, ...");
                i += 1;
            }
        };

        $(
            impl $name {
                /// The variant with minigrid index `idx`.
                pub fn from_index(idx: u8) -> Result<Self, $crate::Error> {
                    Self::ALL
                        .get(usize::from(idx))
                        .copied()
                        .ok_or($crate::Error::BadCellCode {
                            field: $field,
                            value: idx,
                        })
                }
            }
        )?

        indexed_enum!(@names $name { $( $variant $(=> $word)?, )* });
    };
    (@names $name:ident { $( $variant:ident => $word:literal, )* }) => {
        impl $name {
            /// The mission word for this variant (`"red"`, `"ball"`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )*
                }
            }

            /// The variant named `name` in a mission, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };
    (@names $name:ident { $( $variant:ident, )* }) => {};
}

pub mod adapt;
pub mod blob;
pub mod crc;
pub mod env;
pub mod error;
pub mod grid;
pub mod layout;
pub mod levels;
pub mod mission;
pub mod nn;
pub mod rng;
pub mod state;
pub mod world;

pub use error::Error;
