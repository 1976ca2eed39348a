//! The network batched over frames and sequences for the CPU trainer, one module per block of
//! `metarim_core::nn` (same parameter layouts; the parity tests compare them with the core):
//!
//! - [`encoder`]: the observation encoder (convolutions as GEMMs, FiLM);
//! - [`instr`]: the instruction encoder over a minibatch's episode segments;
//! - [`rim`]: the RIM cell (forward and BPTT over sequences with episode starts, input
//!   gradients), GRU or LSTM modules;
//! - [`lstm`]: the LSTM baseline's memory;
//! - [`memory`]: whichever of the two the model has, behind one type (the gradient pass and
//!   acting hold it);
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
pub mod memory;
pub mod rim;

/// The checks that start every batched pass over `seqs` sequences of `steps` steps split into
/// shards at `bounds`: at least one step, `seqs x steps` rows within the buffers' `capacity`,
/// and `bounds` ascending from 0 to `seqs`. `what` names the block in errors.
pub(crate) fn check_pass(
    what: &str,
    (seqs, steps): (usize, usize),
    capacity: usize,
    bounds: &[usize],
) -> anyhow::Result<()> {
    anyhow::ensure!(steps >= 1, "batched {what}: a pass needs at least one step");
    anyhow::ensure!(
        seqs.checked_mul(steps).is_some_and(|r| r <= capacity),
        "batched {what}: {seqs} x {steps} rows exceed the capacity {capacity}"
    );
    anyhow::ensure!(
        bounds.first() == Some(&0) && bounds.last() == Some(&seqs),
        "shard bounds must run from 0 to {seqs}"
    );
    anyhow::ensure!(
        bounds.windows(2).all(|w| w[0] <= w[1]),
        "shard bounds must be ascending"
    );
    Ok(())
}

/// The checks that start every shard's pass over `rows` sequences of `steps` steps: `reset`
/// holds `rows x steps` flags and the scratch, made for `capacity` sequences, holds `rows`.
pub(crate) fn check_shard(
    what: &str,
    capacity: usize,
    (rows, steps): (usize, usize),
    reset: &[bool],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        reset.len() >= rows * steps,
        "batched {what}: reset flags too short"
    );
    anyhow::ensure!(
        capacity >= rows,
        "batched {what}: scratch too small for the shard"
    );
    Ok(())
}

/// Normwise relative error `max_i |a_i - b_i| / max_i |b_i|` over the common length (the
/// absolute error where `b` is all zero), and `max_i |b_i|`: how the parity tests compare a
/// tensor computed two ways (batched against the core's per-sample path).
pub fn normwise_rel_error<S: gemm::Scalar>(a: &[S], b: &[S]) -> (f64, f64) {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.to_f64().abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x.to_f64() - y.to_f64()).abs()));
    (if scale > 0.0 { err / scale } else { err }, scale)
}

/// Largest number of scalars one block's batch buffers may hold (2^40: far past any memory,
/// low enough that index arithmetic cannot overflow).
const MAX_BUFFER_SCALARS: usize = 1 << 40;

/// Checks that `capacity` rows of `row_width` scalars stay below [`MAX_BUFFER_SCALARS`], so a
/// config cannot make a block allocate without bound; the error names `block`.
fn check_capacity(block: &str, capacity: usize, row_width: usize) -> anyhow::Result<()> {
    capacity
        .checked_mul(row_width)
        .filter(|v| *v < MAX_BUFFER_SCALARS)
        .map(|_| ())
        .ok_or_else(|| anyhow::anyhow!("batched {block}: capacity too large"))
}
