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

/// Per-row fields of a pass that include its inputs `x` and input gradients `dx` (declared
/// with `row_fields! { pass .. }`), for [`PassBuffers`].
pub(crate) trait PassFields<B> {
    /// The inputs' field.
    fn x(&self) -> &B;
    /// The inputs' field, to fill.
    fn x_mut(&mut self) -> &mut B;
    /// The input gradients' field.
    fn dx(&self) -> &B;
}

/// The row buffers of a block that runs passes over `seqs` sequences of `steps` steps (row
/// `b*T + t`) split into shards by sequence ranges: the RIM cell ([`rim::RimBatch`]) and the
/// LSTM baseline ([`lstm::LstmBatch`]). Both hold the same things (every per-row field for
/// `capacity` rows and the shape of the last pass) and treat them the same way (the inputs to
/// fill, the start of a pass with its checks and its split into shard views, the input
/// gradients), so that lives here once; each block keeps its dimensions and step arithmetic.
/// `W` is the block's fields as widths, `F` as buffers (the two instances of its
/// `row_fields!` struct).
#[derive(Clone, Debug)]
pub(crate) struct PassBuffers<W, F> {
    /// Rows the buffers hold.
    pub(crate) capacity: usize,
    /// Scalars per row of each field (a forward-only block's gradient fields are 0 wide).
    pub(crate) widths: W,
    /// The fields' buffers.
    pub(crate) f: F,
    /// Sequences of the last pass.
    pub(crate) seqs: usize,
    /// Steps per sequence of the last pass.
    pub(crate) steps: usize,
}

impl<W, F> PassBuffers<W, F>
where
    W: PassFields<usize>,
    F: gemm::RowBuffers<Widths = W> + PassFields<Vec<F::Elem>>,
{
    /// Buffers of `widths` for `capacity` rows, once [`check_capacity`] passes; `what` names
    /// the block in errors.
    pub(crate) fn new(what: &str, widths: W, capacity: usize) -> anyhow::Result<Self> {
        check_capacity(what, capacity, F::row_width(&widths))?;
        Ok(PassBuffers {
            capacity,
            f: F::alloc(&widths, capacity),
            widths,
            seqs: 0,
            steps: 0,
        })
    }

    /// Rows of the last pass (`seqs x steps`).
    pub(crate) fn rows(&self) -> usize {
        self.seqs * self.steps
    }

    /// The inputs of the next pass's first `rows` rows (`[rows x input]`); more rows than the
    /// capacity are an error naming `what`.
    pub(crate) fn inputs_mut(&mut self, what: &str, rows: usize) -> anyhow::Result<&mut [F::Elem]> {
        anyhow::ensure!(
            rows <= self.capacity,
            "batched {what}: {rows} rows exceed the capacity {}",
            self.capacity
        );
        let input = *self.widths.x();
        Ok(&mut self.f.x_mut()[..rows * input])
    }

    /// Starts a pass of `seqs` sequences of `steps` steps after [`check_pass`]: one shard per
    /// sequence range `bounds[i]..bounds[i + 1]`, made by `shard` from the range's views and
    /// its number of sequences.
    pub(crate) fn shards<'a, T>(
        &'a mut self,
        what: &str,
        (seqs, steps): (usize, usize),
        bounds: &[usize],
        shard: impl Fn(F::Rows<'a>, usize) -> T,
    ) -> anyhow::Result<Vec<T>> {
        check_pass(what, (seqs, steps), self.capacity, bounds)?;
        self.seqs = seqs;
        self.steps = steps;
        let rows: Vec<usize> = bounds.iter().map(|b| b * steps).collect();
        let views = self.f.split(&self.widths, &rows).into_iter();
        Ok(views
            .zip(bounds.windows(2))
            .map(|(f, w)| shard(f, w[1] - w[0]))
            .collect())
    }

    /// Input gradients of the last pass, `[seqs*T x input]` (empty for forward-only buffers).
    pub(crate) fn dx(&self) -> &[F::Elem] {
        &self.f.dx()[..self.rows() * *self.widths.dx()]
    }
}

/// One thread's scratch for the shards of a [`PassBuffers`] block: per-sequence fields of one
/// step (`W` as widths, `F` as buffers) for shards of up to `seqs` sequences. The RIM cell's and
/// the LSTM baseline's scratch both hold one, so its checks and its split live here once.
#[derive(Clone, Debug)]
pub(crate) struct ShardScratch<W, F> {
    widths: W,
    s: F,
    seqs: usize,
}

impl<W, F: gemm::RowBuffers<Widths = W>> ShardScratch<W, F> {
    /// Scratch of `widths` per sequence for shards of up to `seqs` sequences.
    pub(crate) fn new(widths: W, seqs: usize) -> Self {
        ShardScratch {
            s: F::alloc(&widths, seqs),
            widths,
            seqs,
        }
    }

    /// The checks that start every shard's pass over `rows` sequences of `steps` steps: `reset`
    /// holds `rows x steps` flags and this scratch holds `rows` sequences. `what` names the
    /// block in errors.
    pub(crate) fn check(
        &self,
        what: &str,
        (rows, steps): (usize, usize),
        reset: &[bool],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            reset.len() >= rows * steps,
            "batched {what}: reset flags too short"
        );
        anyhow::ensure!(
            self.seqs >= rows,
            "batched {what}: scratch too small for the shard"
        );
        Ok(())
    }

    /// Rows `0..rows` of every field for a shard's pass, after [`ShardScratch::check`].
    pub(crate) fn rows(
        &mut self,
        what: &str,
        (rows, steps): (usize, usize),
        reset: &[bool],
    ) -> anyhow::Result<F::Rows<'_>> {
        self.check(what, (rows, steps), reset)?;
        self.s
            .split(&self.widths, &[0, rows])
            .pop()
            .ok_or_else(|| anyhow::anyhow!("batched {what}: scratch split failed"))
    }
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
