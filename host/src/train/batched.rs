//! The CPU trainer's batched gradient pass (the default `gradients = "batched"` path of
//! [`super::update::compute_grads`]): the PPO loss gradient over a minibatch of `B` chunks of
//! `T` steps, the same loss and gradient as `metarim_core::nn::policy::Policy::chunk_backward`
//! summed over the chunks (what the `per-chunk` path computes; `host/tests/batched_parity.rs`
//! checks the two against each other), with every block batched over the minibatch: the
//! observation encoder over all `B*T` frames ([`crate::batch::encoder`], convolutions as
//! GEMMs), the instruction encoder over all episode segments ([`crate::batch::instr`]), the
//! memory over all chunks ([`crate::batch::rim`] or [`crate::batch::lstm`]) and the heads as
//! GEMMs over rows ([`crate::batch::heads`]); the batched acting step of [`super::rollout`]
//! uses the same blocks.
//!
//! A pass ([`BatchedGrads::pass`]):
//! 1. Memory inputs for all `B*T` rows: the rollout's stored ones (`Seq::x`) when
//!    `PassOptions::reuse_x` says the encoders' parameters are still the rollout's and the
//!    `Other` group's gradient is not requested; otherwise the observation encoder over every
//!    frame and the instruction encoder once per episode segment (a segment starts at a
//!    chunk's first step and at every episode start in it), its output copied to each row of
//!    the segment.
//! 2. The chunks are split into contiguous thread shards; each thread runs, for its chunks, the
//!    memory forward from the stored initial states (`state_len` values per chunk: `h`, then `c`
//!    for the LSTM memory and for RIMs with LSTM cells; an episode start zeroes the incoming
//!    state, `c` included), the heads (which read `h`), the PPO loss per row, the heads' backward
//!    and the memory's BPTT (`c`'s gradient carried beside `h`'s; no gradient crosses an episode
//!    start or reaches the initial states).
//! 3. Over all `B*T` rows: one GEMM per memory weight tensor (tensors spread over the
//!    threads, each summed by one thread in row order), the heads' weight gradients, and the
//!    modules' activity counts (`ChunkStats::active_steps`, from which the fast step's module
//!    ranges are derived).
//! 4. When the `Other` group is requested: the observation encoder's backward over all frames
//!    and the instruction encoder's over all segments (row gradients summed per segment).
//!
//! Invariants:
//! - Bit-identical results for any thread count: the products are row-invariant
//!   ([`crate::batch::gemm`]) and everything else in a shard is per row; every weight gradient is
//!   summed over all rows in row order by one thread; the encoders run over all rows at once,
//!   single-threaded.
//! - Only the requested groups' gradients are computed (`PassOptions::groups`) and accumulated
//!   (`+=`) into `grads`; the rest of `grads` is left untouched. Without the `Other` group,
//!   nothing is backpropagated into the encoders.
//! - Buffers are allocated once ([`BatchedGrads::new`]) for a capacity of rows.
//! - Scope: the LSTM memory and RIMs with GRU or LSTM modules.

use anyhow::{anyhow, bail, ensure, Result};
use metarim_core::env::Observation;
use metarim_core::nn::dims::ModelDims;

use metarim_core::nn::loss::{ppo_loss, PpoCoefs, PpoSample, PpoTerms};
use metarim_core::nn::ops::LstmGrads;
use metarim_core::nn::params::{Group, GroupBufs, GroupBufsMut, Layout, Role, TensorKind};
use metarim_core::nn::policy::{state_len, ChunkStats};
use metarim_core::nn::rim::{CommGrad, RimGrads};

use crate::batch::encoder::EncoderBatch;
use crate::batch::gemm::{even_bounds, row_fields, split_rows, RowBuffers, Scalar};
use crate::batch::heads;
use crate::batch::instr::InstrBatch;
use crate::batch::memory::{MemoryBatch, MemoryShard, MemoryWeights};
use crate::threads::join_all;

/// One chunk of a minibatch.
#[derive(Clone, Copy, Debug)]
pub struct Seq<'a, S> {
    /// Its steps' observations.
    pub obs: &'a [Observation],
    /// Mission tokens of each step (`MAX_TOKENS` each).
    pub tokens: &'a [[u16; metarim_core::mission::vocab::MAX_TOKENS]],
    /// Episode starts.
    pub episode_start: &'a [bool],
    /// PPO targets of each step.
    pub samples: &'a [PpoSample<S>],
    /// The memory state before the first step.
    pub init_state: &'a [S],
    /// The memory inputs the rollout computed (`[T x input]`), usable while the encoder and
    /// instruction parameters are the rollout's.
    pub x: Option<&'a [S]>,
}

impl<S> Seq<'_, S> {
    fn len(&self) -> usize {
        self.samples.len()
    }
}

/// What a pass computes.
#[derive(Clone, Copy, Debug)]
pub struct PassOptions<S> {
    /// PPO coefficients.
    pub coefs: PpoCoefs<S>,
    /// Each step's loss is multiplied by this (1 / steps in the minibatch).
    pub scale: S,
    /// Gradient through inactive modules' keys/values.
    pub comm: CommGrad,
    /// Which groups' gradients to compute (fast, slow, other).
    pub groups: [bool; 3],
    /// Use the chunks' precomputed memory inputs (`Seq::x`) instead of running the encoders.
    pub reuse_x: bool,
}

row_fields! {
    /// Per-row fields of the heads.
    RowFields {
        /// Heads' tanh hidden layers `[actor | critic]`.
        hid,
        /// Actor logits.
        logits,
        /// Critic value.
        value,
        /// Loss gradients of the logits and the value.
        dlogits,
        dvalue,
        /// Gradients of the heads' hidden pre-activations.
        dhid,
    }
}

/// Buffers of batched gradient passes for one model shape.
pub struct BatchedGrads<S> {
    d: ModelDims,
    capacity: usize,
    threads: usize,
    mem: MemoryBatch<S>,
    widths: RowFields<usize>,
    rows: RowFields<Vec<S>>,
    /// Every chunk's initial memory state, `state_len` each (`[h | c]` where the memory has a
    /// cell state).
    state0: Vec<S>,
    reset: Vec<bool>,
    terms: Vec<PpoTerms<S>>,
    enc: EncoderBatch<S>,
    instr: InstrBatch<S>,
    /// Episode segment of every row.
    seg_of_row: Vec<usize>,
    /// First row of every segment.
    seg_start: Vec<usize>,
    /// Instruction-embedding gradient of every segment.
    d_seg: Vec<S>,
}

/// Mutable gradient slices of a pass (empty: not requested).
struct GradParts<'a, S> {
    encoder: &'a mut [S],
    instr: &'a mut [S],
    heads: &'a mut [S],
    rim: RimGrads<'a, S>,
    lstm: LstmGrads<'a, S>,
}

/// Splits `bufs` by `layout`: whole blocks for the encoders and heads, one slice per memory
/// tensor; tensors of groups not in `want` get empty slices.
fn split_grads<'a, S>(
    layout: &Layout,
    bufs: GroupBufsMut<'a, S>,
    want: [bool; 3],
) -> Result<GradParts<'a, S>> {
    let (mut encoder, mut instr, mut heads): (&mut [S], &mut [S], &mut [S]) =
        (&mut [], &mut [], &mut []);
    let mut rim: [&mut [S]; 9] = Default::default();
    let mut lstm: [&mut [S]; 4] = Default::default();
    let parts = layout
        .split_mut(bufs)
        .map_err(|e| anyhow!("gradient buffers: {e}"))?;
    for p in parts.into_iter().filter(|p| want[p.group as usize]) {
        let head = p.data;
        let at = |kinds: &[TensorKind]| kinds.iter().position(|k| *k == p.kind);
        match (p.role, at(&TensorKind::RIM), at(&TensorKind::LSTM)) {
            (Role::Encoder, ..) => encoder = head,
            (Role::Instruction, ..) => instr = head,
            (Role::Heads, ..) => heads = head,
            (_, Some(i), _) => rim[i] = head,
            (_, _, Some(i)) => lstm[i] = head,
            _ => bail!("unexpected tensor {:?} in the memory", p.kind),
        }
    }
    Ok(GradParts {
        encoder,
        instr,
        heads,
        rim: RimGrads::from_parts(rim),
        lstm: LstmGrads::from_parts(lstm),
    })
}

impl<S: Scalar> BatchedGrads<S> {
    /// Buffers for passes of up to `capacity` rows (chunks x steps) of `layout`'s model on
    /// `threads` threads. Errors for memory dimensions the batched cells reject.
    pub fn new(layout: &Layout, capacity: usize, threads: usize) -> Result<Self> {
        let d = *layout.dims();
        let threads = threads.max(1);
        ensure!(
            capacity >= 1,
            "batched gradients: capacity must be at least 1"
        );
        let mem = MemoryBatch::new(&d, capacity, threads, true)?;
        let widths = RowFields {
            hid: 2 * d.head_hidden,
            logits: d.n_actions,
            value: 1,
            dlogits: d.n_actions,
            dvalue: 1,
            dhid: 2 * d.head_hidden,
        };
        Ok(BatchedGrads {
            d,
            capacity,
            threads,
            mem,
            rows: RowFields::alloc(&widths, capacity),
            widths,
            state0: vec![S::ZERO; capacity * state_len(&d)],
            reset: vec![false; capacity],
            terms: vec![PpoTerms::default(); capacity],
            enc: EncoderBatch::new(&d, capacity, true)?.with_threads(threads),
            instr: InstrBatch::new(),
            seg_of_row: vec![0; capacity],
            seg_start: Vec::with_capacity(capacity),
            d_seg: Vec::new(),
        })
    }

    /// Rows the buffers hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The mean-scaled PPO loss gradient over `seqs` (all of one length), ACCUMULATED into the
    /// requested groups of `grads`; returns the summed loss terms and module activity.
    pub fn pass(
        &mut self,
        layout: &Layout,
        params: GroupBufs<'_, S>,
        seqs: &[Seq<'_, S>],
        opts: &PassOptions<S>,
        grads: GroupBufsMut<'_, S>,
    ) -> Result<ChunkStats<S>> {
        let d = self.d;
        ensure!(
            *layout.dims() == d,
            "batched gradients: the layout's dims differ from the buffers'"
        );
        layout
            .check_bufs(&params)
            .map_err(|e| anyhow!("parameters: {e}"))?;
        let b_seqs = seqs.len();
        let steps = seqs.first().map_or(0, |s| s.len());
        let mut stats = ChunkStats::over(b_seqs * steps);
        if b_seqs == 0 || steps == 0 {
            return Ok(stats);
        }
        let rows = b_seqs * steps;
        ensure!(
            rows <= self.capacity,
            "batched gradients: {b_seqs} chunks x {steps} steps exceed the capacity {}",
            self.capacity
        );
        let want_other = opts.groups[Group::Other as usize];
        // The encoders' backward needs their activations, so stored inputs serve only passes
        // that do not train the encoders.
        let reuse_x = opts.reuse_x && !want_other;
        self.load_chunks(seqs, steps, reuse_x)?;
        let mut g = split_grads(layout, grads, opts.groups)?;
        let encoder = layout.block(&params, Role::Encoder);
        let instr_p = layout.block(&params, Role::Instruction);
        let heads = layout.block(&params, Role::Heads);
        self.find_segments(seqs, steps);
        let obs: Vec<&Observation> = seqs.iter().flat_map(|s| s.obs.iter()).collect();
        // 1. Memory inputs, for all rows: stored, or the encoders now.
        self.memory_inputs(seqs, steps, reuse_x, encoder, instr_p, &obs)?;
        // 2. Memory and heads, per thread shard.
        let mem_w = MemoryWeights::new(layout, &params);
        let shard_job = ShardJob {
            d: &d,
            heads,
            mem_w: &mem_w,
            opts,
            want_other,
            want_dv: !g.rim.w_v.is_empty(),
            steps,
        };
        self.run_shards(&shard_job, seqs)?;
        // 3. Weight gradients over all rows.
        self.weight_grads(&mut g, rows, &mut stats)?;
        // 4. The encoders' backward.
        if want_other {
            self.encoders_backward(encoder, instr_p, &obs, &mut g)?;
        }
        for t in &self.terms[..rows] {
            stats.sum.accumulate(t);
        }
        Ok(stats)
    }

    /// Checks that every chunk is `steps` steps long (with a long enough initial state, and
    /// stored memory inputs when `reuse_x`), and copies the initial states into `state0` and the
    /// episode starts into `reset`.
    fn load_chunks(&mut self, seqs: &[Seq<'_, S>], steps: usize, reuse_x: bool) -> Result<()> {
        let sl = state_len(&self.d);
        let inp = self.d.memory_input();
        for (b, s) in seqs.iter().enumerate() {
            ensure!(
                s.len() == steps
                    && s.obs.len() == steps
                    && s.tokens.len() == steps
                    && s.episode_start.len() == steps,
                "batched gradients: chunk {b} is not {steps} steps long"
            );
            ensure!(
                s.init_state.len() >= sl,
                "chunk {b}: initial state too short"
            );
            if reuse_x {
                ensure!(
                    s.x.is_some_and(|x| x.len() >= steps * inp),
                    "chunk {b}: no stored memory inputs to reuse"
                );
            }
            self.state0[b * sl..(b + 1) * sl].copy_from_slice(&s.init_state[..sl]);
            self.reset[b * steps..(b + 1) * steps].copy_from_slice(s.episode_start);
        }
        Ok(())
    }

    /// The episode segments, in row order: a segment starts at a chunk's first step and at
    /// every episode start in it (`seg_start`), and `seg_of_row` maps each row to its segment.
    fn find_segments(&mut self, seqs: &[Seq<'_, S>], steps: usize) {
        self.seg_start.clear();
        for (b, sq) in seqs.iter().enumerate() {
            for t in 0..steps {
                if t == 0 || sq.episode_start[t] {
                    self.seg_start.push(b * steps + t);
                }
                self.seg_of_row[b * steps + t] = self.seg_start.len() - 1;
            }
        }
    }

    /// Phase 1: the memory inputs of all rows, into the memory's buffers: the chunks' stored
    /// ones when `reuse_x`, else the observation encoder over every frame followed by the
    /// instruction encoder's output of the row's segment.
    fn memory_inputs(
        &mut self,
        seqs: &[Seq<'_, S>],
        steps: usize,
        reuse_x: bool,
        encoder: &[S],
        instr_p: &[S],
        obs: &[&Observation],
    ) -> Result<()> {
        let d = self.d;
        let rows = seqs.len() * steps;
        let (inp, feat, hi) = (d.memory_input(), d.obs_features(), d.instr_hidden);
        let x = self.mem.inputs_mut(rows)?;
        if reuse_x {
            for (b, sq) in seqs.iter().enumerate() {
                let src = sq.x.ok_or_else(|| anyhow!("chunk {b}: no stored inputs"))?;
                x[b * steps * inp..(b + 1) * steps * inp].copy_from_slice(&src[..steps * inp]);
            }
        } else {
            // The instruction first: a FiLM encoder reads it.
            let missions: Vec<&[u16]> = self
                .seg_start
                .iter()
                .map(|&r| &seqs[r / steps].tokens[r % steps][..])
                .collect();
            self.instr.forward(&d, instr_p, &missions)?;
            let emb = self.instr.out();
            if d.film {
                let e = self.enc.instr_mut(rows)?;
                for (r, er) in e.chunks_exact_mut(hi).enumerate() {
                    let seg = self.seg_of_row[r];
                    er.copy_from_slice(&emb[seg * hi..(seg + 1) * hi]);
                }
            }
            self.enc.forward(encoder, obs, x, inp, 0)?;
            for (r, xr) in x.chunks_exact_mut(inp).enumerate() {
                let seg = self.seg_of_row[r];
                xr[feat..].copy_from_slice(&emb[seg * hi..(seg + 1) * hi]);
            }
        }
        Ok(())
    }

    /// Phase 2: splits the chunks into contiguous thread shards and runs `job` on each, on its
    /// own thread (memory forward, heads, loss, heads backward, memory BPTT).
    fn run_shards(&mut self, job: &ShardJob<'_, S>, seqs: &[Seq<'_, S>]) -> Result<()> {
        let (b_seqs, steps) = (seqs.len(), job.steps);
        let sl = state_len(&self.d);
        let seq_bounds = even_bounds(b_seqs, self.threads);
        let row_bounds: Vec<usize> = seq_bounds.iter().map(|b| b * steps).collect();
        let mem_shards = self.mem.shards(b_seqs, steps, &seq_bounds)?;
        let row_views = self.rows.split(&self.widths, &row_bounds);
        let terms = split_rows(&mut self.terms, 1, &row_bounds);
        let (state0, reset) = (&self.state0[..], &self.reset[..]);
        std::thread::scope(|s| {
            let handles: Vec<_> = mem_shards
                .into_iter()
                .zip(row_views)
                .zip(terms)
                .zip(seq_bounds.windows(2))
                .map(|(((mem, rows), terms), sb)| {
                    let seqs = &seqs[sb[0]..sb[1]];
                    let state0 = &state0[sb[0] * sl..sb[1] * sl];
                    let reset = &reset[sb[0] * steps..sb[1] * steps];
                    s.spawn(move || job.run(seqs, state0, reset, mem, rows, terms))
                })
                .collect();
            join_all(handles, "gradient")
        })?;
        Ok(())
    }

    /// Phase 3: the memory's weight gradients over all `rows` rows (with a RIM, also the
    /// modules' activity counts into `stats`), then the heads'.
    fn weight_grads(
        &self,
        g: &mut GradParts<'_, S>,
        rows: usize,
        stats: &mut ChunkStats<S>,
    ) -> Result<()> {
        let active = &mut stats.active_steps;
        self.mem.weight_grads(&mut g.rim, &mut g.lstm, active)?;
        let h = self.mem.h_out();
        if !g.heads.is_empty() {
            heads::weight_grads(
                &self.d,
                rows,
                h,
                &self.rows.hid,
                &self.rows.dhid,
                &self.rows.dlogits,
                &self.rows.dvalue,
                g.heads,
            )?;
        }
        Ok(())
    }

    /// Phase 4: the encoders' backward from the memory's input gradients: the observation
    /// encoder over all frames, and the instruction encoder over the segments (each segment's
    /// gradient the sum of its rows').
    fn encoders_backward(
        &mut self,
        encoder: &[S],
        instr_p: &[S],
        obs: &[&Observation],
        g: &mut GradParts<'_, S>,
    ) -> Result<()> {
        let d = self.d;
        let (inp, feat, hi) = (d.memory_input(), d.obs_features(), d.instr_hidden);
        let n_segs = self.seg_start.len();
        let dx = self.mem.dx();
        self.enc.backward(encoder, obs, dx, inp, 0, g.encoder)?;
        if self.d_seg.len() < n_segs * hi {
            self.d_seg.resize(n_segs * hi, S::ZERO);
        }
        let d_seg = &mut self.d_seg[..n_segs * hi];
        d_seg.fill(S::ZERO);
        for (r, dxr) in dx.chunks_exact(inp).enumerate() {
            let seg = self.seg_of_row[r];
            for (a, v) in d_seg[seg * hi..(seg + 1) * hi].iter_mut().zip(&dxr[feat..]) {
                *a += *v;
            }
        }
        // A FiLM encoder's instruction gradients, per row, into the same segment sums.
        for (r, der) in self.enc.d_instr().chunks_exact(hi.max(1)).enumerate() {
            let seg = self.seg_of_row[r];
            for (a, v) in d_seg[seg * hi..(seg + 1) * hi].iter_mut().zip(der) {
                *a += *v;
            }
        }
        self.instr.backward(&d, instr_p, d_seg, g.instr)
    }
}

/// What every shard thread shares.
struct ShardJob<'a, S> {
    d: &'a ModelDims,
    heads: &'a [S],
    mem_w: &'a MemoryWeights<'a, S>,
    opts: &'a PassOptions<S>,
    want_other: bool,
    want_dv: bool,
    steps: usize,
}

impl<S: Scalar> ShardJob<'_, S> {
    /// Memory forward, heads, loss, heads backward and memory backward for a shard's chunks
    /// (their inputs already in the memory's buffers).
    fn run(
        &self,
        seqs: &[Seq<'_, S>],
        state0: &[S],
        reset: &[bool],
        mut mem: MemoryShard<'_, S>,
        f: RowFields<&mut [S]>,
        terms: &mut [PpoTerms<S>],
    ) -> Result<()> {
        let d = self.d;
        let steps = self.steps;
        let rows = seqs.len() * steps;
        let na = d.n_actions;
        mem.forward(self.mem_w, state0, reset)?;
        heads::forward_rows(d, self.heads, rows, mem.h_out(), f.hid, f.logits, f.value)?;
        for (b, sq) in seqs.iter().enumerate() {
            for t in 0..steps {
                let r = b * steps + t;
                let dl = &mut f.dlogits[r * na..][..na];
                dl.fill(S::ZERO);
                let mut dv = S::ZERO;
                terms[r] = ppo_loss(
                    &f.logits[r * na..][..na],
                    f.value[r],
                    &sq.samples[t],
                    &self.opts.coefs,
                    self.opts.scale,
                    dl,
                    &mut dv,
                )
                .map_err(|e| anyhow!("PPO loss: {e}"))?;
                f.dvalue[r] = dv;
            }
        }
        let dh = mem.dh_mut();
        heads::backward_rows(d, self.heads, rows, f.dlogits, f.dvalue, f.hid, f.dhid, dh)?;
        let (comm, want_dx, want_dv) = (self.opts.comm, self.want_other, self.want_dv);
        mem.backward(self.mem_w, comm, reset, want_dx, want_dv)
    }
}
