//! `host`: the std side of metarim — the `metarim` command line and what it is built from.
//!
//! - [`trace`]: the conformance trace format (JSON lines, optionally gzip-compressed) and its
//!   replay against `metarim-core`'s environment;
//! - [`levels`]: level look-up with readable errors;
//! - [`dump`]: freshly generated initial states written in the trace format;
//! - [`play`]: a terminal player (keyboard lines or seeded random actions);
//! - [`bench`](mod@bench): the multi-threaded environment throughput benchmark;
//! - [`model`]: model presets, parameter layouts and their sizes (`metarim model info`);
//! - [`rim_batch`]: a batched RIM cell (forward and BPTT over a batch, GEMMs via
//!   `matrixmultiply`) sharing the core's parameter layout;
//! - [`rim_bench`]: the RIM training-step benchmark (`metarim bench rim`);
//! - [`train`]: meta-training on the CPU (`metarim train`, `eval`, `bench train`);
//! - [`render`]: gridworld frames as images, animated GIFs (`metarim play --gif`);
//! - [`plot`]: learning curves (`curve.png`), banded curves and heatmaps;
//! - [`export`]: checkpoints packed as device blobs (`metarim export`);
//! - [`adapt`]: the host twin of on-device fast adaptation (`metarim adapt`);
//! - [`experiment`]: declared suites of runs (`metarim experiment`), resumable and parallel,
//!   with `results.md` and plots.
//!
//! Every bad input is reported as an [`anyhow::Error`] naming what is wrong; nothing here
//! panics on input.
#![forbid(unsafe_code)]

pub mod adapt;
pub mod bench;
pub mod dump;
pub mod experiment;
pub mod export;
pub mod levels;
pub mod model;
pub mod play;
pub mod plot;
pub mod render;
pub mod rim_batch;
pub mod rim_bench;
pub mod trace;
pub mod train;
