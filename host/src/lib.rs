//! `host`: the std side of metarim — the `metarim` command line and what it is built from.
//!
//! - [`trace`]: the conformance trace format (JSON lines, optionally gzip-compressed) and its
//!   replay against `metarim-core`'s environment;
//! - [`levels`]: level look-up with readable errors;
//! - [`dump`]: freshly generated initial states written in the trace format;
//! - [`fsutil`]: output files written atomically (temp file + rename; devices in place);
//! - [`play`]: a terminal player (keyboard lines or seeded random actions);
//! - [`bench`](mod@bench): the multi-threaded environment throughput benchmark;
//! - [`model`]: model presets, parameter layouts and their sizes (`metarim model info`);
//! - [`batch`]: the network batched over frames and sequences for the CPU trainer, block for
//!   block as `metarim_core::nn` (encoder, instruction encoder, RIM cell, LSTM), with the
//!   GEMMs and fast math they share;
//! - [`rim_bench`]: the RIM training-step benchmark (`metarim bench rim`);
//! - [`train`]: meta-training on the CPU (`metarim train`, `eval`, `bench train`);
//! - [`render`]: gridworld frames as images, animated GIFs (`metarim play --gif`);
//! - [`plot`]: learning curves (`curve.png`), banded curves and heatmaps;
//! - [`curves`]: training runs compared side by side (`metarim curves`);
//! - [`export`]: checkpoints packed as device blobs (`metarim export`);
//! - [`adapt`]: the host twin of on-device fast adaptation (`metarim adapt`);
//! - [`tensorboard`]: TensorBoard event files of the training logs (written and read);
//! - [`experiment`]: declared suites of runs (`metarim experiment`), resumable and parallel,
//!   with `results.md` and plots.
//!
//! Every bad input is reported as an [`anyhow::Error`] naming what is wrong; nothing here
//! panics on input.
#![forbid(unsafe_code)]

pub mod adapt;
pub mod batch;
pub mod bench;
pub mod curves;
pub mod dump;
pub mod experiment;
pub mod export;
pub mod fsutil;
pub mod levels;
pub mod model;
pub mod play;
pub mod plot;
pub mod provenance;
pub mod render;
pub mod rim_bench;
pub mod tensorboard;
pub mod threads;
pub mod trace;
pub mod train;
