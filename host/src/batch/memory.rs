//! The model's memory block, batched: the RIM cell ([`super::rim`]) or the LSTM baseline's memory
//! ([`super::lstm`]), whichever the model's dims name, with one scratch per thread. The gradient
//! pass (`crate::train::batched`) and acting (`crate::train::rollout`) both hold a
//! [`MemoryBatch`], so the choice between the two cells is made here and nowhere else.
//!
//! Invariants: a [`MemoryBatch`] holds as many scratch buffers as the threads it was made for,
//! each sized for `capacity` sequences; [`MemoryBatch::shards`] pairs the i-th shard with the
//! i-th scratch, so at most that many shards can run at once.

use anyhow::{anyhow, Result};
use metarim_core::nn::dims::{MemoryKind, ModelDims};
use metarim_core::nn::ops::{LstmGrads, LstmWeights};
use metarim_core::nn::params::{GroupBufs, Layout};
use metarim_core::nn::rim::{CommGrad, RimGrads, RimWeights};

use super::gemm::Scalar;
use super::lstm::{LstmBatch, LstmScratch, LstmShard};
use super::rim::{RimBatch, RimScratch, RimShard};

/// The memory's weights as views into a model's parameters (the other cell's views are empty).
pub struct MemoryWeights<'a, S> {
    /// The RIM cell's tensors.
    pub rim: RimWeights<'a, S>,
    /// The LSTM baseline's tensors.
    pub lstm: LstmWeights<'a, S>,
}

impl<'a, S> MemoryWeights<'a, S> {
    /// Both cells' weight views in `p`, a model of `layout`.
    pub fn new(layout: &Layout, p: &GroupBufs<'a, S>) -> Self {
        MemoryWeights {
            rim: super::rim::weights(layout, p),
            lstm: super::lstm::weights(layout, p),
        }
    }
}

/// Buffers of batched passes of a model's memory over up to `capacity` rows (sequences x steps).
pub enum MemoryBatch<S> {
    /// A RIM cell (GRU or LSTM modules).
    Rim {
        /// The cell's row buffers.
        rb: Box<RimBatch<S>>,
        /// One scratch per thread.
        scratch: Vec<RimScratch<S>>,
    },
    /// The LSTM baseline.
    Lstm {
        /// The cell's row buffers.
        lb: Box<LstmBatch<S>>,
        /// One scratch per thread.
        scratch: Vec<LstmScratch<S>>,
    },
}

/// One thread's share of a [`MemoryBatch`] pass: its rows and its scratch.
// Short-lived (one per thread and pass), so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum MemoryShard<'a, S> {
    /// A RIM cell's shard.
    Rim(RimShard<'a, S>, &'a mut RimScratch<S>),
    /// The LSTM baseline's shard.
    Lstm(LstmShard<'a, S>, &'a mut LstmScratch<S>),
}

/// Each of `shards` paired with one of `scratch`, in order, as a [`MemoryShard`] by `wrap`.
fn pair_with_scratch<'a, T, U: 'a, M>(
    shards: Vec<T>,
    scratch: &'a mut [U],
    wrap: impl Fn(T, &'a mut U) -> M,
) -> Vec<M> {
    let pairs = shards.into_iter().zip(scratch.iter_mut());
    pairs.map(|(s, sc)| wrap(s, sc)).collect()
}

impl<S: Scalar> MemoryBatch<S> {
    /// Buffers for passes of up to `capacity` rows of `d`'s memory, with scratch for `threads`
    /// shards; without `backward`, forward passes only (acting).
    pub fn new(d: &ModelDims, capacity: usize, threads: usize, backward: bool) -> Result<Self> {
        let threads = threads.max(1);
        Ok(match d.memory {
            MemoryKind::Rim => MemoryBatch::Rim {
                rb: Box::new(RimBatch::new(&d.rim, capacity, backward)?),
                scratch: (0..threads)
                    .map(|_| RimScratch::new(&d.rim, capacity))
                    .collect(),
            },
            MemoryKind::Lstm => {
                let (input, width) = (d.memory_input(), d.memory_width());
                MemoryBatch::Lstm {
                    lb: Box::new(LstmBatch::new(input, width, capacity, backward)?),
                    scratch: (0..threads)
                        .map(|_| LstmScratch::new(width, capacity))
                        .collect(),
                }
            }
        })
    }

    /// The inputs of the next pass's first `rows` rows (`[rows x input]`, row `b*T + t`), to
    /// fill before [`MemoryBatch::shards`].
    pub fn inputs_mut(&mut self, rows: usize) -> Result<&mut [S]> {
        match self {
            MemoryBatch::Rim { rb, .. } => rb.inputs_mut(rows),
            MemoryBatch::Lstm { lb, .. } => lb.inputs_mut(rows),
        }
    }

    /// Starts a pass of `seqs` sequences of `steps` steps and hands out one shard per sequence
    /// range `bounds[i]..bounds[i + 1]`, each with its own scratch (at most one per thread the
    /// buffers were made for).
    pub fn shards(
        &mut self,
        seqs: usize,
        steps: usize,
        bounds: &[usize],
    ) -> Result<Vec<MemoryShard<'_, S>>> {
        let (cap, n) = (self.threads(), bounds.len().saturating_sub(1));
        if n > cap {
            return Err(anyhow!(
                "batched memory: {n} shards, scratch for {cap} threads"
            ));
        }
        Ok(match self {
            MemoryBatch::Rim { rb, scratch } => {
                pair_with_scratch(rb.shards(seqs, steps, bounds)?, scratch, MemoryShard::Rim)
            }
            MemoryBatch::Lstm { lb, scratch } => {
                pair_with_scratch(lb.shards(seqs, steps, bounds)?, scratch, MemoryShard::Lstm)
            }
        })
    }

    /// Shards that can run at once (the scratch buffers held).
    pub fn threads(&self) -> usize {
        match self {
            MemoryBatch::Rim { scratch, .. } => scratch.len(),
            MemoryBatch::Lstm { scratch, .. } => scratch.len(),
        }
    }

    /// Accumulates the weight gradients of the last backward pass into `rim` or `lstm`
    /// (whichever cell this is; see [`RimBatch::weight_grads`], [`LstmBatch::weight_grads`]) on
    /// up to [`MemoryBatch::threads`] threads; with a RIM, also adds to `active_steps[i]` the
    /// rows in which module `i` was active.
    pub fn weight_grads(
        &self,
        rim: &mut RimGrads<'_, S>,
        lstm: &mut LstmGrads<'_, S>,
        active_steps: &mut [u32],
    ) -> Result<()> {
        let threads = self.threads();
        match self {
            MemoryBatch::Rim { rb, .. } => {
                rb.weight_grads(rim, threads)?;
                let n = rb.dims().n_modules;
                for m in rb.masks().chunks_exact(n) {
                    for (c, v) in active_steps.iter_mut().zip(m) {
                        if *v != S::ZERO {
                            *c += 1;
                        }
                    }
                }
                Ok(())
            }
            MemoryBatch::Lstm { lb, .. } => lb.weight_grads(lstm, threads),
        }
    }

    /// The outgoing `h` of every row of the last pass, `[rows x memory_width]`.
    pub fn h_out(&self) -> &[S] {
        match self {
            MemoryBatch::Rim { rb, .. } => rb.h_out(),
            MemoryBatch::Lstm { lb, .. } => lb.h_out(),
        }
    }

    /// Input gradients of the last backward pass, `[rows x input]` (if it asked for them).
    pub fn dx(&self) -> &[S] {
        match self {
            MemoryBatch::Rim { rb, .. } => rb.dx(),
            MemoryBatch::Lstm { lb, .. } => lb.dx(),
        }
    }
}

impl<S: Scalar> MemoryShard<'_, S> {
    /// The shard's inputs to fill before [`MemoryShard::forward`], `[seqs*T x input]`.
    pub fn x_mut(&mut self) -> &mut [S] {
        match self {
            MemoryShard::Rim(s, _) => s.x_mut(),
            MemoryShard::Lstm(s, _) => s.x_mut(),
        }
    }

    /// Runs the steps from `state0` (`[seqs x state_len]`); `reset` (`[seqs x T]`) marks episode
    /// starts, whose incoming state is zeros.
    pub fn forward(
        &mut self,
        w: &MemoryWeights<'_, S>,
        state0: &[S],
        reset: &[bool],
    ) -> Result<()> {
        match self {
            MemoryShard::Rim(s, sc) => s.forward(&w.rim, state0, reset, sc),
            MemoryShard::Lstm(s, sc) => s.forward(&w.lstm, state0, reset, sc),
        }
    }

    /// Outgoing `h`, `[seqs*T x memory_width]`.
    pub fn h_out(&self) -> &[S] {
        match self {
            MemoryShard::Rim(s, _) => s.h_out(),
            MemoryShard::Lstm(s, _) => s.h_out(),
        }
    }

    /// Outgoing cell states `c`, `[seqs*T x memory_width]` (empty for a RIM of GRU modules).
    pub fn c_out(&self) -> &[S] {
        match self {
            MemoryShard::Rim(s, _) => s.c_out(),
            MemoryShard::Lstm(s, _) => s.c_out(),
        }
    }

    /// A RIM's selection masks, `[seqs*T x N]` (1 active, 0 not); `None` for the LSTM baseline.
    pub fn masks(&self) -> Option<&[S]> {
        match self {
            MemoryShard::Rim(s, _) => Some(s.masks()),
            MemoryShard::Lstm(..) => None,
        }
    }

    /// The loss gradient of every outgoing `h`, to fill before [`MemoryShard::backward`].
    pub fn dh_mut(&mut self) -> &mut [S] {
        match self {
            MemoryShard::Rim(s, _) => s.dh_mut(),
            MemoryShard::Lstm(s, _) => s.dh_mut(),
        }
    }

    /// BPTT over the last forward (see [`RimShard::backward`] and [`LstmShard::backward`]):
    /// `comm` and `want_dv` concern a RIM only; `want_dx` asks for the input gradients.
    pub fn backward(
        &mut self,
        w: &MemoryWeights<'_, S>,
        comm: CommGrad,
        reset: &[bool],
        want_dx: bool,
        want_dv: bool,
    ) -> Result<()> {
        match self {
            MemoryShard::Rim(s, sc) => s.backward(&w.rim, comm, reset, want_dx, want_dv, sc),
            MemoryShard::Lstm(s, sc) => s.backward(&w.lstm, reset, want_dx, sc),
        }
    }
}
