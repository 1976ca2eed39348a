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

pub mod adapt;
pub mod blob;
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
