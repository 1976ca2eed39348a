//! The network batched over frames and sequences for the CPU trainer, one module per block of
//! `metarim_core::nn` (same parameter layouts; the parity tests compare them with the core):
//!
//! - [`encoder`]: the observation encoder (convolutions as GEMMs, FiLM);
//! - [`instr`]: the instruction encoder over a minibatch's episode segments;
//! - [`rim`]: the RIM cell (forward and BPTT over sequences with episode starts, input
//!   gradients), GRU or LSTM modules;
//! - [`lstm`]: the LSTM baseline's memory;
//! - [`heads`]: the actor and critic heads;
//! - [`gemm`]: row-invariant dense products (`matrixmultiply`) the blocks share;
//! - [`fastmath`]: branch-free `f32` exp, sigmoid and tanh.
//!
//! The gradient pass that chains the blocks with the PPO loss is `crate::train::batched`;
//! acting (`crate::train::rollout`) uses the same blocks.

pub mod encoder;
pub mod fastmath;
pub mod gemm;
pub mod heads;
pub mod instr;
pub mod lstm;
pub mod rim;
