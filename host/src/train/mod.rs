//! Meta-training on the CPU: PPO with recurrence (BabyAI 1.0) and the Meta-RIMs fast/slow split.
//!
//! - [`config`]: the typed configuration ([`TrainConfig`]), TOML and `key=value` overrides;
//! - [`tasks`]: which level each episode runs (single, mixture, curriculum);
//! - [`rollout`]: vectorised environments stepped across threads into preallocated buffers,
//!   and GAE;
//! - [`batched`]: the batched gradient pass (memory and heads as GEMMs over a minibatch);
//! - [`update`]: gradients over chunks in fixed-order shards, PPO epochs, the inner (fast) and
//!   outer (slow) loops, Adam per group;
//! - [`checkpoint`]: safetensors checkpoints with everything a bit-exact `--resume` needs;
//! - [`run`]: the training loop, its logs, progress and summary;
//! - [`eval`]: evaluation of a checkpoint with confidence intervals;
//! - [`backend`]: `auto | cpu | cuda`, and the CUDA backend's rollout and update.
//!
//! Invariants: everything random is drawn from seeded [`Pcg32`](metarim_core::rng::Pcg32) streams owned by one env or by
//! the trainer, and gradient sums run in an order fixed by the config (not by the thread
//! count), so a seed gives bit-identical checkpoints on any number of threads.

pub mod backend;
pub mod batched;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod guard;
pub mod reader;
pub mod rollout;
pub mod run;
pub mod rundir;
pub mod tasks;
pub mod update;

pub use config::TrainConfig;

use anyhow::{anyhow, Result};
use metarim_core::nn::init::InitConfig;
use metarim_core::nn::params::Layout;
use metarim_core::nn::policy::{init_params, Policy};

pub use metarim_cuda::groups::GroupVecs;

/// A model: its layout and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Tensor layout (dims, mode, groups).
    pub layout: Layout,
    /// Parameters.
    pub params: GroupVecs,
}

impl Model {
    /// A freshly initialised model (BabyAI's init schemes, `InitConfig::BABYAI`).
    pub fn init(layout: Layout, seed: u64) -> Result<Model> {
        let mut params = GroupVecs::zeros(&layout);
        init_params(&layout, &InitConfig::BABYAI, seed, params.bufs_mut())
            .map_err(|e| anyhow!("initialising parameters: {e}"))?;
        Ok(Model { layout, params })
    }

    /// The policy view of the parameters.
    pub fn policy(&self) -> Result<Policy<'_, f32>> {
        Policy::new(&self.layout, self.params.bufs()).map_err(|e| anyhow!("policy: {e}"))
    }
}

pub use metarim_core::nn::sample::{argmax_action, log_sum_exp, sample_action};

/// Worker threads to use for `requested` (0: all available cores), at most `work_items`.
pub fn thread_count(requested: usize, work_items: usize) -> usize {
    let avail = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = if requested == 0 { avail } else { requested };
    t.clamp(1, work_items.max(1))
}
