//! A batched RIM cell for the CPU: the same math as `metarim_core::nn::rim` (see its module docs:
//! null-row input attention, hard top-k on the least null attention with lower-index ties,
//! per-module GRU or LSTM cells, communication attention with a gated residual and no biases,
//! masked update, [`CommGrad`] gradients), run over `B` sequences of `T` steps at once, with every
//! dense product a GEMM ([`crate::batch::gemm`]).
//!
//! Layout: activations are *field-major and sequence-major*: each quantity (a "field", e.g. the
//! module inputs `u`) is one buffer of `B*T` rows, row `b*T + t` for step `t` of sequence `b`. So
//! a step's rows are a strided view (stride `T` rows), a sequence range is one contiguous block
//! (what [`RimBatch::shards`] hands to a thread), and a weight gradient is one GEMM whose inner
//! dimension is all `B*T` rows ([`RimBatch::weight_grads`]). States are `N*H` wide, module-major,
//! as in the core; with LSTM cells a sequence's state is `[h | c]` ([`state_width`], the layout of
//! `metarim_core::nn::policy::state_len`), and the outgoing `h` and `c` are separate fields
//! ([`RimBatch::h_out`], [`RimBatch::c_out`]). Parameters and gradients are the core's
//! [`RimWeights`] / [`RimGrads`].
//!
//! A pass: split into shards (disjoint sequence ranges), and per shard [`RimShard::forward`]
//! (from initial states, with episode starts `reset` that zero the incoming state), then
//! [`RimShard::backward`] given the loss gradient of every step's output state (BPTT computing
//! the input/state gradients and every weight's pre-activation gradient, plus optionally the
//! input gradients `dx`); then [`RimBatch::weight_grads`] once over all rows. No gradient crosses
//! an episode start, and none reaches the initial states (they are stored constants). The loss
//! reads `h` only (the heads do), so an LSTM's `c` gets its gradient through `h` alone, carried
//! back through time beside `h`'s.
//!
//! Invariants: every buffer is allocated by [`RimBatch::new`] for a capacity of rows; passes
//! allocate nothing but the shard views. Results do not depend on how sequences are split into
//! shards (the products are row-invariant, see [`crate::batch::gemm`]; everything else is per row), so
//! the trainer is independent of its thread count.
//!
//! Cells: GRU modules (the Paper and Tiny presets) and LSTM modules (PyTorch gate order i, f, g,
//! o, as the core's `metarim_core::nn::ops::lstm_forward`). Both are evaluated densely, every
//! module every step, and the masked update keeps inactive modules' `h` (and `c`) bit for bit.

use anyhow::{anyhow, ensure, Result};
use metarim_core::nn::dims::{CellKind, CommUpdate, RimDims};
use metarim_core::nn::ops::{
    gru_gate_grads, lstm_gate_grads, GRU_CACHE_PER_UNIT, LSTM_CACHE_PER_UNIT,
};
use metarim_core::nn::params::{GroupBufs, Layout, TensorKind};
use metarim_core::nn::rim::{
    cell_state_len, comm_width, module_input, query_width, rim_param_counts, rnn_gates,
    rnn_module_len, select_top_k, softmax_in_place, state_len, CommGrad, RimGrads, RimParamCounts,
    RimWeights,
};

pub use crate::batch::gemm::even_bounds;
pub use crate::batch::gemm::Scalar;
use crate::batch::gemm::{axpy, dot, gemm, mat, rm, row_fields, tr, Mat};
use crate::batch::{PassBuffers, ShardScratch};

row_fields! {
    /// Per-row fields of a pass (widths in floats, or the buffers, or a shard's views).
    pass Fields {
        /// Input `x_t`.
        x,
        /// Incoming state (zeros at an episode start).
        hin,
        /// Outgoing state.
        hout,
        /// Incoming LSTM cell state (zeros at an episode start; no width for a GRU).
        cin,
        /// Outgoing LSTM cell state (the candidate `c~` of every module until the masked
        /// update restores inactive modules' `cin`).
        cout,
        /// Input keys `k_x`.
        kx,
        /// Input values `v_x`.
        vx,
        /// Per-module queries.
        q,
        /// Input-row attention per module and head.
        ax,
        /// Selection mask (1 active, 0 not).
        mask,
        /// Cell input projections of every module and head, `W_ih,i[:, head j] v_x,j`
        /// (module `i`'s input `u_i = concat_j a_ij v_x,j` enters its cell as
        /// `W_ih,i u_i = sum_j a_ij (W_ih,i[:, j] v_x,j)`, so they are computed for all rows
        /// before the recurrence).
        g,
        /// Cell cache per module: GRU `[r | z | n | hn]`, LSTM `[i | f | g | o | tanh(c~)]`.
        gates,
        /// Candidate states `h~`.
        ht,
        /// Communication queries, keys, values.
        cq,
        ck,
        cv,
        /// Communication attention per module, head, source.
        p,
        /// Communication outputs.
        o,
        /// Gate `sigmoid(W_g o)` and `tanh(W_o o)`.
        gate,
        tanh,
        /// Loss gradient w.r.t. the outgoing state (input of the backward pass).
        dh,
        /// Pre-activation gradients (`adgi`: the cell's input-side gate gradients scaled by
        /// each head's attention, `a_ij * dgi_i`, for `W_ih` and `v_x`).
        adgi,
        dkx,
        dvx,
        dq,
        /// Gate pre-activation gradients of the input side (an LSTM's both sides: its gates
        /// add the two).
        dgi,
        /// Gate pre-activation gradients of a GRU's hidden side (no width for an LSTM).
        dgh,
        dpg,
        dpo,
        dcq,
        dck,
        dcv,
        /// Input gradient.
        dx,
    }
}

row_fields! {
    /// Per-sequence scratch of one step (a shard's rows; widths in floats).
    StepScratch {
        gh,
        null,
        carry,
        carry_new,
        dht,
        dout,
        tmp,
        /// An LSTM's carried cell-state gradient (of step `t`'s outgoing `c`, and the one
        /// being accumulated for its incoming `c`), and the gradient of the candidate `c~`
        /// (no width for a GRU).
        carry_c,
        carry_c_new,
        dct,
    }
}

/// Width of one sequence's state: `h` (`N*H`), followed by `c` (`N*H`) with LSTM cells; the
/// memory state of `metarim_core::nn::policy::state_len`.
pub fn state_width(d: &RimDims) -> usize {
    state_len(d) + cell_state_len(d)
}

/// Gate width of a module's cell, `G*H` (`G` = 3 for a GRU, 4 for an LSTM).
fn gate_width(d: &RimDims) -> usize {
    rnn_gates(d) * d.hidden
}

/// Cache width of a module's cell per step.
fn cell_cache_width(d: &RimDims) -> usize {
    let per_unit = match d.cell {
        CellKind::Gru => GRU_CACHE_PER_UNIT,
        CellKind::Lstm => LSTM_CACHE_PER_UNIT,
    };
    per_unit * d.hidden
}

fn field_widths(d: &RimDims, backward: bool) -> Fields<usize> {
    let (n, inp) = (d.n_modules, d.input);
    let nh = state_len(d);
    let ncl = cell_state_len(d);
    let gs = gate_width(d);
    let gru = d.cell == CellKind::Gru;
    let (aw, uw, cw) = (query_width(d), module_input(d), comm_width(d));
    let c = |w: usize| if d.communication { w } else { 0 };
    let b = |w: usize| if backward { w } else { 0 };
    Fields {
        x: inp,
        hin: nh,
        hout: nh,
        cin: ncl,
        cout: ncl,
        kx: aw,
        vx: uw,
        q: n * aw,
        ax: n * d.in_heads,
        mask: n,
        g: n * d.in_heads * gs,
        gates: n * cell_cache_width(d),
        ht: nh,
        cq: c(n * cw),
        ck: c(n * cw),
        cv: c(n * cw),
        p: c(n * d.c_heads * n),
        o: c(n * cw),
        gate: c(nh),
        tanh: c(nh),
        dh: b(nh),
        adgi: b(n * d.in_heads * gs),
        dkx: b(aw),
        dvx: b(uw),
        dq: b(n * aw),
        dgi: b(n * gs),
        dgh: b(if gru { n * gs } else { 0 }),
        dpg: b(c(nh)),
        dpo: b(c(nh)),
        dcq: b(c(n * cw)),
        dck: b(c(n * cw)),
        dcv: b(c(n * cw)),
        dx: b(inp),
    }
}

fn scratch_widths(d: &RimDims) -> StepScratch<usize> {
    let (n, hid) = (d.n_modules, d.hidden);
    let nh = state_len(d);
    let ncl = cell_state_len(d);
    StepScratch {
        gh: n * gate_width(d),
        null: n,
        carry: nh,
        carry_new: nh,
        dht: nh,
        dout: n * comm_width(d),
        tmp: hid,
        carry_c: ncl,
        carry_c_new: ncl,
        dct: ncl,
    }
}

/// Buffers of batched RIM passes over up to `capacity` rows (sequences x steps).
#[derive(Clone, Debug)]
pub struct RimBatch<S> {
    d: RimDims,
    pass: PassBuffers<Fields<usize>, Fields<Vec<S>>>,
}

/// Per-thread scratch of a shard's steps (sized for a number of sequences).
#[derive(Clone, Debug)]
pub struct RimScratch<S> {
    step: ShardScratch<StepScratch<usize>, StepScratch<Vec<S>>>,
    dp: Vec<S>,
    ds: Vec<S>,
}

impl<S: Scalar> RimScratch<S> {
    /// Scratch for shards of up to `seqs` sequences of the cell `d`.
    pub fn new(d: &RimDims, seqs: usize) -> RimScratch<S> {
        RimScratch {
            step: ShardScratch::new(scratch_widths(d), seqs),
            dp: vec![S::ZERO; d.n_modules],
            ds: vec![S::ZERO; d.n_modules],
        }
    }
}

/// The rows of a sequence range of a [`RimBatch`] pass (one thread's share).
#[derive(Debug)]
pub struct RimShard<'a, S> {
    d: RimDims,
    seqs: usize,
    steps: usize,
    f: Fields<&'a mut [S]>,
}

impl<S: Scalar> RimBatch<S> {
    /// Buffers for passes of up to `capacity` rows of the cell `d` (GRU or LSTM modules);
    /// without `backward`, forward passes only (acting).
    pub fn new(d: &RimDims, capacity: usize, backward: bool) -> Result<Self> {
        // The core's own checks: the batched path runs the same cells.
        metarim_core::nn::rim::check_dims(d)?;
        ensure!(capacity >= 1, "batched RIM: capacity must be at least 1");
        Ok(RimBatch {
            d: *d,
            pass: PassBuffers::new("RIM", field_widths(d, backward), capacity)?,
        })
    }

    /// The cell's dimensions.
    pub fn dims(&self) -> &RimDims {
        &self.d
    }

    /// Rows the buffers hold.
    pub fn capacity(&self) -> usize {
        self.pass.capacity
    }

    /// The inputs of the next pass's first `rows` rows (`[rows x input]`, row `b*T + t`), to
    /// fill before [`RimBatch::shards`] (which leaves them as they are).
    pub fn inputs_mut(&mut self, rows: usize) -> Result<&mut [S]> {
        self.pass.inputs_mut("RIM", rows)
    }

    /// Starts a pass of `seqs` sequences of `steps` steps and hands out one view per sequence
    /// range `bounds[i]..bounds[i + 1]` (`bounds` ascending from 0 to `seqs`).
    pub fn shards(
        &mut self,
        seqs: usize,
        steps: usize,
        bounds: &[usize],
    ) -> Result<Vec<RimShard<'_, S>>> {
        let d = self.d;
        self.pass
            .shards("RIM", (seqs, steps), bounds, |f, seqs| RimShard {
                d,
                seqs,
                steps,
                f,
            })
    }

    /// Outgoing states of the last pass, `[B*T x N*H]` (row `b*T + t`).
    pub fn h_out(&self) -> &[S] {
        &self.pass.f.hout[..self.pass.rows() * self.pass.widths.hout]
    }

    /// Outgoing LSTM cell states of the last pass, `[B*T x N*H]` (row `b*T + t`; empty for
    /// GRU modules).
    pub fn c_out(&self) -> &[S] {
        &self.pass.f.cout[..self.pass.rows() * self.pass.widths.cout]
    }

    /// Selection masks of the last pass, `[B*T x N]` (1 active, 0 not).
    pub fn masks(&self) -> &[S] {
        &self.pass.f.mask[..self.pass.rows() * self.pass.widths.mask]
    }

    /// Input gradients of the last backward pass, `[B*T x input]` (if it asked for them).
    pub fn dx(&self) -> &[S] {
        self.pass.dx()
    }

    /// Accumulates the weight gradients of the last backward pass into `g`, one GEMM per tensor
    /// over all rows; an empty slice in `g` skips that tensor (`w_v` needs a backward pass with
    /// `want_dv` or `want_dx`). Modules are spread over up to
    /// `threads` threads (each tensor's sum runs on one, in row order, so the result does not
    /// depend on `threads`).
    pub fn weight_grads(&self, g: &mut RimGrads<'_, S>, threads: usize) -> Result<()> {
        let d = self.d;
        ensure!(
            self.pass.widths.dh > 0,
            "batched RIM: buffers were made without backward"
        );
        let rows = self.pass.rows();
        if rows == 0 {
            return Ok(());
        }
        let c = rim_param_counts(&d);
        let sums = WeightSums {
            p: PassDims::new(&d, self.pass.seqs, self.pass.steps),
            f: &self.pass.f,
            rows,
        };
        sums.input_projections(g, &c)?;
        let mut jobs = module_jobs(&d, g, &c)?;
        sums.modules(&mut jobs, threads)
    }
}

/// One module's blocks of the per-module gradient tensors (`w_q, rnn, c_q, c_k, c_v, c_g, c_o`).
type ModuleJob<'a, S> = [Option<&'a mut [S]>; 7];

/// Whether the gradient buffer `s` of the tensor `what` (`len` floats) is requested: empty
/// means no; a requested one shorter than `len` is an error.
fn wanted<S>(s: &[S], len: usize, what: &str) -> Result<bool> {
    if s.is_empty() {
        return Ok(false);
    }
    ensure!(
        s.len() >= len,
        "batched RIM: {what} gradient buffer too short"
    );
    Ok(true)
}

/// One job per module, holding that module's blocks of every requested per-module tensor of
/// `g` (the communication's only with communication).
fn module_jobs<'g, S>(
    d: &RimDims,
    g: &'g mut RimGrads<'_, S>,
    c: &RimParamCounts,
) -> Result<Vec<ModuleJob<'g, S>>> {
    let (n, hid) = (d.n_modules, d.hidden);
    let (aw, cw) = (query_width(d), comm_width(d));
    let wq = wanted(g.w_q, c.w_q, "w_q")?;
    let rnn = wanted(g.rnn, c.rnn, "rnn")?;
    let comm = d.communication;
    let cq = comm && wanted(g.c_q, c.c_q, "c_q")?;
    let ck = comm && wanted(g.c_k, c.c_k, "c_k")?;
    let cv = comm && wanted(g.c_v, c.c_v, "c_v")?;
    let cg = comm && wanted(g.c_g, c.c_g, "c_g")?;
    let co = comm && wanted(g.c_o, c.c_o, "c_o")?;
    let rml = rnn_module_len(d);
    let pw = cw * hid;
    let per = per_module::<S>;
    let mut jobs: Vec<ModuleJob<'g, S>> = Vec::with_capacity(n);
    let mut q = per(&mut *g.w_q, wq, n, aw * hid).into_iter();
    let mut r = per(&mut *g.rnn, rnn, n, rml).into_iter();
    let mut a = per(&mut *g.c_q, cq, n, pw).into_iter();
    let mut b = per(&mut *g.c_k, ck, n, pw).into_iter();
    let mut v = per(&mut *g.c_v, cv, n, pw).into_iter();
    let mut gg = per(&mut *g.c_g, cg, n, pw).into_iter();
    let mut o = per(&mut *g.c_o, co, n, pw).into_iter();
    for _ in 0..n {
        jobs.push([
            q.next().flatten(),
            r.next().flatten(),
            a.next().flatten(),
            b.next().flatten(),
            v.next().flatten(),
            gg.next().flatten(),
            o.next().flatten(),
        ]);
    }
    Ok(jobs)
}

/// The weight-gradient sums of [`RimBatch::weight_grads`]: each a GEMM over all `rows` rows of
/// the pass's stored fields, accumulated into the gradient.
struct WeightSums<'f, S> {
    p: PassDims,
    f: &'f Fields<Vec<S>>,
    rows: usize,
}

impl<S: Scalar> WeightSums<'_, S> {
    /// The shared input projections: `w_k += dkx^T x` and `w_v += dvx^T x`, each when
    /// requested.
    fn input_projections(&self, g: &mut RimGrads<'_, S>, c: &RimParamCounts) -> Result<()> {
        let (f, rows, one) = (self.f, self.rows, S::ONE);
        let PassDims { inp, aw, uw, .. } = self.p;
        if wanted(g.w_k, c.w_k, "w_k")? {
            gemm(
                aw,
                rows,
                inp,
                one,
                &f.dkx,
                tr(0, aw),
                &f.x,
                rm(0, inp),
                one,
                g.w_k,
                rm(0, inp),
            )?;
        }
        if wanted(g.w_v, c.w_v, "w_v")? {
            gemm(
                uw,
                rows,
                inp,
                one,
                &f.dvx,
                tr(0, uw),
                &f.x,
                rm(0, inp),
                one,
                g.w_v,
                rm(0, inp),
            )?;
        }
        Ok(())
    }

    /// Runs every module's job ([`WeightSums::module`]) on up to `threads` threads, module `i`
    /// on thread `i % threads`.
    fn modules(&self, jobs: &mut [ModuleJob<'_, S>], threads: usize) -> Result<()> {
        let threads = threads.clamp(1, self.p.n);
        if threads == 1 {
            for (i, job) in jobs.iter_mut().enumerate() {
                self.module(i, job)?;
            }
            return Ok(());
        }
        std::thread::scope(|s| -> Result<()> {
            let mut parts: Vec<Vec<(usize, &mut ModuleJob<'_, S>)>> =
                (0..threads).map(|_| Vec::new()).collect();
            for (i, job) in jobs.iter_mut().enumerate() {
                parts[i % threads].push((i, job));
            }
            let handles: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    s.spawn(move || -> Result<()> {
                        for (i, job) in part {
                            self.module(i, job)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a weight-gradient thread panicked"))??;
            }
            Ok(())
        })
    }

    /// Module `i`'s blocks of the per-module tensors in `job`: the query `w_q += dq_i^T hin_i`,
    /// the cell ([`WeightSums::rnn`]), the communication's gate and output (`dpg_i^T o_i`,
    /// `dpo_i^T o_i`) and its query, key and value projections (`dc*_i^T h~_i`).
    fn module(&self, i: usize, job: &mut ModuleJob<'_, S>) -> Result<()> {
        let (f, rows, one) = (self.f, self.rows, S::ONE);
        let PassDims {
            n, hid, nh, aw, cw, ..
        } = self.p;
        let hprev = rm(i * hid, nh);
        let [q, r, a, b, v, gg, o] = job;
        if let Some(gq) = q {
            gemm(
                aw,
                rows,
                hid,
                one,
                &f.dq,
                tr(i * aw, n * aw),
                &f.hin,
                hprev,
                one,
                gq,
                rm(0, hid),
            )?;
        }
        if let Some(gr) = r {
            self.rnn(i, gr)?;
        }
        let hrow = rm(i * hid, nh);
        let crow = rm(i * cw, n * cw);
        if let Some(gg) = gg {
            gemm(
                hid,
                rows,
                cw,
                one,
                &f.dpg,
                tr(i * hid, nh),
                &f.o,
                crow,
                one,
                gg,
                rm(0, cw),
            )?;
        }
        if let Some(go) = o {
            gemm(
                hid,
                rows,
                cw,
                one,
                &f.dpo,
                tr(i * hid, nh),
                &f.o,
                crow,
                one,
                go,
                rm(0, cw),
            )?;
        }
        let ta = tr(i * cw, n * cw);
        for (dst, src) in [(a, &f.dcq), (b, &f.dck), (v, &f.dcv)] {
            if let Some(gc) = dst {
                gemm(
                    cw,
                    rows,
                    hid,
                    one,
                    src,
                    ta,
                    &f.ht,
                    hrow,
                    one,
                    gc,
                    rm(0, hid),
                )?;
            }
        }
        Ok(())
    }

    /// Module `i`'s cell block `gr`: `W_ih` per input head from `adgi` and the values, `W_hh`
    /// from the hidden side's gate gradients (a GRU's `dgh`, an LSTM's `dgi`) and `hin`, then
    /// the biases as row sums of `dgi` and the hidden side's in row order.
    fn rnn(&self, i: usize, gr: &mut [S]) -> Result<()> {
        let (f, rows, one) = (self.f, self.rows, S::ONE);
        let PassDims {
            n,
            hid,
            nh,
            uw,
            ih,
            dv,
            gs,
            gw,
            ..
        } = self.p;
        let dgh: &[S] = if self.p.lstm { &f.dgi } else { &f.dgh };
        let hprev = rm(i * hid, nh);
        let ta = tr(i * gs, n * gs);
        for j in 0..ih {
            let a = tr((i * ih + j) * gs, gw);
            gemm(
                gs,
                rows,
                dv,
                one,
                &f.adgi,
                a,
                &f.vx,
                rm(j * dv, uw),
                one,
                gr,
                rm(j * dv, uw),
            )?;
        }
        let hh = gs * uw;
        gemm(
            gs,
            rows,
            hid,
            one,
            dgh,
            ta,
            &f.hin,
            hprev,
            one,
            &mut gr[hh..],
            rm(0, hid),
        )?;
        let (bi, bh) = gr[hh + gs * hid..].split_at_mut(gs);
        for row in 0..rows {
            let at = (row * n + i) * gs;
            axpy(one, &f.dgi[at..][..gs], bi);
            axpy(one, &dgh[at..][..gs], &mut bh[..gs]);
        }
        Ok(())
    }
}

/// `n` blocks of `len` of `s` when `on` (else `n` empty jobs).
fn per_module<S>(s: &mut [S], on: bool, n: usize, len: usize) -> Vec<Option<&mut [S]>> {
    match s.get_mut(..n * len) {
        Some(s) if on && len > 0 => s.chunks_mut(len).map(Some).collect(),
        _ => (0..n).map(|_| None).collect(),
    }
}

fn check_lens(d: &RimDims, lens: [usize; 9], what: &str) -> Result<()> {
    let c = rim_param_counts(d);
    let need = [
        c.w_k, c.w_v, c.w_q, c.rnn, c.c_q, c.c_k, c.c_v, c.c_g, c.c_o,
    ];
    for (got, need) in lens.iter().zip(need) {
        ensure!(*got >= need, "{what} buffer too short: {got} < {need}");
    }
    Ok(())
}

fn check_weights<S>(d: &RimDims, w: &RimWeights<'_, S>) -> Result<()> {
    let lens = [
        w.w_k.len(),
        w.w_v.len(),
        w.w_q.len(),
        w.rnn.len(),
        w.c_q.len(),
        w.c_k.len(),
        w.c_v.len(),
        w.c_g.len(),
        w.c_o.len(),
    ];
    check_lens(d, lens, "weight")
}

impl<'a, S: Scalar> RimShard<'a, S> {
    /// Sequences in this shard.
    pub fn seqs(&self) -> usize {
        self.seqs
    }

    /// Steps per sequence.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The inputs to fill before [`RimShard::forward`], `[seqs*T x input]` (row `b*T + t`).
    pub fn x_mut(&mut self) -> &mut [S] {
        let len = self.seqs * self.steps * self.d.input;
        &mut self.f.x[..len]
    }

    /// The inputs.
    pub fn x(&self) -> &[S] {
        &self.f.x[..self.seqs * self.steps * self.d.input]
    }

    /// Outgoing states, `[seqs*T x N*H]`.
    pub fn h_out(&self) -> &[S] {
        &self.f.hout[..self.seqs * self.steps * state_len(&self.d)]
    }

    /// Outgoing LSTM cell states, `[seqs*T x N*H]` (empty for GRU modules).
    pub fn c_out(&self) -> &[S] {
        &self.f.cout[..self.seqs * self.steps * cell_state_len(&self.d)]
    }

    /// Selection masks, `[seqs*T x N]` (1 active, 0 not).
    pub fn masks(&self) -> &[S] {
        &self.f.mask[..self.seqs * self.steps * self.d.n_modules]
    }

    /// The loss gradient of every outgoing state to fill before [`RimShard::backward`],
    /// `[seqs*T x N*H]`.
    pub fn dh_mut(&mut self) -> &mut [S] {
        let len = (self.seqs * self.steps * state_len(&self.d)).min(self.f.dh.len());
        &mut self.f.dh[..len]
    }

    /// Input gradients of the last backward with `want_dx`, `[seqs*T x input]`.
    pub fn dx(&self) -> &[S] {
        let len = self.seqs * self.steps * self.d.input;
        &self.f.dx[..len.min(self.f.dx.len())]
    }

    /// Runs the steps over the inputs ([`RimShard::x_mut`]) from `state0` (`[seqs x
    /// state_width]`, the state before each sequence's first step: `h`, then `c` with LSTM
    /// cells, see [`state_width`]); `reset` (`[seqs x T]`) marks episode starts, whose incoming
    /// state (`h` and `c`) is zeros instead.
    pub fn forward(
        &mut self,
        w: &RimWeights<'_, S>,
        state0: &[S],
        reset: &[bool],
        sc: &mut RimScratch<S>,
    ) -> Result<()> {
        let d = self.d;
        let (bs, steps) = (self.seqs, self.steps);
        check_weights(&d, w)?;
        ensure!(
            state0.len() >= bs * state_width(&d),
            "batched RIM: initial states too short"
        );
        let mut s = sc.step.rows("RIM", (bs, steps), reset)?;
        let mut pass = ShardPass {
            p: PassDims::new(&d, bs, steps),
            w,
            f: &mut self.f,
            s: &mut s,
        };
        pass.input_projections()?;
        for t in 0..steps {
            pass.incoming_states(state0, reset, t);
            pass.input_attention(t)?;
            match d.cell {
                CellKind::Gru => pass.module_grus(t)?,
                CellKind::Lstm => pass.module_lstms(t)?,
            }
            if d.communication {
                pass.comm_attention(t)?;
                pass.comm_gates(t)?;
            }
            pass.masked_update(t);
        }
        Ok(())
    }

    /// BPTT over the last [`RimShard::forward`] given the loss gradients of the outgoing states
    /// ([`RimShard::dh_mut`]; with LSTM cells the loss has no direct `c` term, and `c`'s
    /// gradient is carried back beside `h`'s): computes every weight's pre-activation gradients
    /// (for [`RimBatch::weight_grads`]; the value projection's only with `want_dv` or
    /// `want_dx`) and, with `want_dx`, the input gradients ([`RimShard::dx`]). No gradient
    /// crosses a `reset` step or reaches the initial states.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        w: &RimWeights<'_, S>,
        mode: CommGrad,
        reset: &[bool],
        want_dx: bool,
        want_dv: bool,
        sc: &mut RimScratch<S>,
    ) -> Result<()> {
        let d = self.d;
        let (bs, steps) = (self.seqs, self.steps);
        let nh = state_len(&d);
        check_weights(&d, w)?;
        ensure!(
            self.f.dh.len() >= bs * steps * nh,
            "batched RIM: buffers were made without backward"
        );
        let mut s = sc.step.rows("RIM", (bs, steps), reset)?;
        let (dp, ds) = (&mut sc.dp, &mut sc.ds);
        let mut pass = ShardPass {
            p: PassDims::new(&d, bs, steps),
            w,
            f: &mut self.f,
            s: &mut s,
        };
        pass.s.carry.fill(S::ZERO);
        pass.s.carry_c.fill(S::ZERO);
        for t in (0..steps).rev() {
            pass.masked_update_backward(t);
            if d.communication {
                pass.comm_gates_backward(t)?;
                pass.comm_attention_backward(dp, ds, t);
                pass.comm_projections_backward(mode, t)?;
            }
            pass.cell_attention_backward(t);
            pass.recurrent_backward(t)?;
            pass.carry_to_previous_step(reset, t);
        }
        pass.input_backward(want_dx, want_dv)
    }
}

/// A shard's views of the per-row fields.
type Rows<'r, S> = Fields<&'r mut [S]>;

/// A shard's views of the per-step scratch.
type Scratch<'r, S> = StepScratch<&'r mut [S]>;

/// The widths of one pass over `bs` sequences of `steps` steps, derived once from the cell's
/// dimensions (for [`ShardPass`] and [`WeightSums`]).
#[derive(Clone, Copy, Debug)]
struct PassDims {
    d: RimDims,
    bs: usize,
    steps: usize,
    n: usize,
    hid: usize,
    inp: usize,
    nh: usize,
    aw: usize,
    uw: usize,
    cw: usize,
    ih: usize,
    dk: usize,
    dv: usize,
    /// Gate width of a module's cell, `G*H` (`3H` GRU, `4H` LSTM).
    gs: usize,
    rml: usize,
    /// Width of the cell input projections of one row (`N * heads * G*H`).
    gw: usize,
    /// Length of one module's block of a communication weight.
    pw: usize,
    /// LSTM cells (else GRU).
    lstm: bool,
    /// Width of the cell states (`N*H` with LSTM cells, else 0).
    ncl: usize,
}

impl PassDims {
    fn new(d: &RimDims, bs: usize, steps: usize) -> PassDims {
        let (n, hid) = (d.n_modules, d.hidden);
        let (ih, gs, cw) = (d.in_heads, gate_width(d), comm_width(d));
        PassDims {
            d: *d,
            bs,
            steps,
            n,
            hid,
            inp: d.input,
            nh: state_len(d),
            aw: query_width(d),
            uw: module_input(d),
            cw,
            ih,
            dk: d.d_k,
            dv: d.d_v,
            gs,
            rml: rnn_module_len(d),
            gw: n * ih * gs,
            pw: cw * hid,
            lstm: d.cell == CellKind::Lstm,
            ncl: cell_state_len(d),
        }
    }

    /// The rows of step `t` of field width `wd`, from column `c0`.
    fn st(&self, t: usize, wd: usize, c0: usize) -> Mat {
        mat(t * wd + c0, self.steps * wd, 1)
    }

    /// Every module slot of step `t` as `(b, r, i)`: sequence `b`, its row `r = b*steps + t`
    /// and module `i`, sequence-major (the order of the per-module loops of the masked update
    /// and its backward, written once here).
    fn slots(&self, t: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (steps, n) = (self.steps, self.n);
        (0..self.bs).flat_map(move |b| (0..n).map(move |i| (b, b * steps + t, i)))
    }
}

/// One shard's pass: its widths, the weights and its views of the per-row fields and the step
/// scratch. Its methods are the phases of [`RimShard::forward`] and [`RimShard::backward`] (the
/// numbers in their docs are those of the core's step: (1) input attention, (2) selection, (3)
/// the modules' cells, (4) communication, (5) masked update).
struct ShardPass<'p, 'a, 'b, S> {
    p: PassDims,
    w: &'p RimWeights<'p, S>,
    f: &'p mut Rows<'a, S>,
    s: &'p mut Scratch<'b, S>,
}

impl<'p, S: Scalar> ShardPass<'p, '_, '_, S> {
    /// (3) Module `i`'s recurrent product of step `t`, `h_{t-1} W_hh^T` over the shard's
    /// chunks into the scratch `gh` (`[bs x N*gs]`, module-major; GRU and LSTM cells alike),
    /// and the module's input and recurrent biases (`gs` each).
    fn recurrent_product(&mut self, t: usize, i: usize) -> Result<(&'p [S], &'p [S])> {
        let (p, w) = (self.p, self.w);
        let (hid, gs) = (p.hid, p.gs);
        let w_hh = i * p.rml + gs * p.uw;
        let (b_ih, b_hh) = (w_hh + gs * hid, w_hh + gs * hid + gs);
        gemm(
            p.bs,
            hid,
            gs,
            S::ONE,
            self.f.hin,
            p.st(t, p.nh, i * hid),
            w.rnn,
            tr(w_hh, hid),
            S::ZERO,
            self.s.gh,
            rm(i * gs, p.n * gs),
        )?;
        Ok((&w.rnn[b_ih..][..gs], &w.rnn[b_hh..][..gs]))
    }
}

impl<S: Scalar> ShardPass<'_, '_, '_, S> {
    /// Everything that depends on the inputs alone, for all rows at once: keys `kx`, values
    /// `vx` and the cells' input projections `g`.
    fn input_projections(&mut self) -> Result<()> {
        let (p, w, f) = (self.p, self.w, &mut *self.f);
        let (n, inp, aw, uw, ih, dv, gs, rml, gw) =
            (p.n, p.inp, p.aw, p.uw, p.ih, p.dv, p.gs, p.rml, p.gw);
        let (one, zero) = (S::ONE, S::ZERO);
        let rows = p.bs * p.steps;
        gemm(
            rows,
            inp,
            aw,
            one,
            f.x,
            rm(0, inp),
            w.w_k,
            tr(0, inp),
            zero,
            f.kx,
            rm(0, aw),
        )?;
        gemm(
            rows,
            inp,
            uw,
            one,
            f.x,
            rm(0, inp),
            w.w_v,
            tr(0, inp),
            zero,
            f.vx,
            rm(0, uw),
        )?;
        for i in 0..n {
            for j in 0..ih {
                gemm(
                    rows,
                    dv,
                    gs,
                    one,
                    f.vx,
                    rm(j * dv, uw),
                    w.rnn,
                    tr(i * rml + j * dv, uw),
                    zero,
                    f.g,
                    rm((i * ih + j) * gs, gw),
                )?;
            }
        }
        Ok(())
    }

    /// The incoming states `hin` (and an LSTM's `cin`) of step `t`: zeros at an episode start,
    /// else `state0` at the first step (`[h | c]` per sequence), else the previous step's
    /// outgoing state.
    fn incoming_states(&mut self, state0: &[S], reset: &[bool], t: usize) {
        let (p, f) = (self.p, &mut *self.f);
        let (steps, nh, ncl) = (p.steps, p.nh, p.ncl);
        let sw = nh + ncl;
        for b in 0..p.bs {
            let r = b * steps + t;
            let dst = &mut f.hin[r * nh..][..nh];
            let cdst = &mut f.cin[r * ncl..][..ncl];
            if reset[b * steps + t] {
                dst.fill(S::ZERO);
                cdst.fill(S::ZERO);
            } else if t == 0 {
                dst.copy_from_slice(&state0[b * sw..][..nh]);
                cdst.copy_from_slice(&state0[b * sw + nh..][..ncl]);
            } else {
                dst.copy_from_slice(&f.hout[(r - 1) * nh..][..nh]);
                cdst.copy_from_slice(&f.cout[(r - 1) * ncl..][..ncl]);
            }
        }
    }

    /// (1) Input attention of step `t` (per-module queries `q` of `hin` against the keys of
    /// `x`, the attention `ax` and each module's null attention) and (2) the selection `mask`.
    fn input_attention(&mut self, t: usize) -> Result<()> {
        let (p, w, f, s) = (self.p, self.w, &mut *self.f, &mut *self.s);
        let (bs, steps, n, hid, nh, aw, ih, dk) =
            (p.bs, p.steps, p.n, p.hid, p.nh, p.aw, p.ih, p.dk);
        let inv_dk = S::ONE / S::from_f64(dk as f64).sqrt();
        let inv_heads = S::ONE / S::from_f64(ih as f64);
        let (one, zero) = (S::ONE, S::ZERO);
        for i in 0..n {
            gemm(
                bs,
                hid,
                aw,
                one,
                f.hin,
                p.st(t, nh, i * hid),
                w.w_q,
                tr(i * aw * hid, hid),
                zero,
                f.q,
                p.st(t, n * aw, i * aw),
            )?;
        }
        for b in 0..bs {
            let r = b * steps + t;
            let kx = &f.kx[r * aw..][..aw];
            for i in 0..n {
                let q = &f.q[(r * n + i) * aw..][..aw];
                let ax = &mut f.ax[(r * n + i) * ih..][..ih];
                let mut null_sum = zero;
                for ((qh, kh), a) in q
                    .chunks_exact(dk)
                    .zip(kx.chunks_exact(dk))
                    .zip(ax.iter_mut())
                {
                    let sc = dot(qh, kh) * inv_dk;
                    *a = sc.act_sigmoid();
                    null_sum += (-sc).act_sigmoid();
                }
                s.null[b * n + i] = null_sum * inv_heads;
            }
            // 2. Selection.
            select_top_k(
                &s.null[b * n..][..n],
                p.d.k_active,
                &mut f.mask[r * n..][..n],
                &mut [],
            );
        }
        Ok(())
    }

    /// (3) The per-module GRUs of step `t`, evaluated densely (inactive results are discarded
    /// by the masked update, but their `h~` are the keys and values of the communication):
    /// the gate cache `gates` and the candidate states `ht`.
    fn module_grus(&mut self, t: usize) -> Result<()> {
        let p = self.p;
        let (bs, steps, n, hid, nh, ih, g3, gw) =
            (p.bs, p.steps, p.n, p.hid, p.nh, p.ih, p.gs, p.gw);
        let one = S::ONE;
        for i in 0..n {
            let (bi, bh) = self.recurrent_product(t, i)?;
            let (f, s) = (&mut *self.f, &*self.s);
            for b in 0..bs {
                let r = b * steps + t;
                let gproj = &f.g[r * gw + i * ih * g3..][..ih * g3];
                let ax = &f.ax[(r * n + i) * ih..][..ih];
                let gh = &s.gh[(b * n + i) * g3..][..g3];
                let cache = &mut f.gates[(r * n + i) * 4 * hid..][..4 * hid];
                let hprev = &f.hin[r * nh + i * hid..][..hid];
                let ht = &mut f.ht[r * nh + i * hid..][..hid];
                // Written as whole-slice loops so that they vectorise. The cache is
                // [r | z | n | hn]; the r and z slots first hold the input side.
                let (rz, rest) = cache.split_at_mut(2 * hid);
                let (ng, hn) = rest.split_at_mut(hid);
                for (o, (b1, (g, b2))) in rz.iter_mut().zip(bi.iter().zip(gh.iter().zip(bh))) {
                    *o = *b1 + (*g + *b2);
                }
                for (u, o) in hn.iter_mut().enumerate() {
                    *o = gh[2 * hid + u] + bh[2 * hid + u];
                }
                ng.copy_from_slice(&bi[2 * hid..3 * hid]);
                for (j, a) in ax.iter().enumerate() {
                    let gj = &gproj[j * g3..(j + 1) * g3];
                    for (o, g) in rz.iter_mut().zip(&gj[..2 * hid]) {
                        *o += *a * *g;
                    }
                    for (o, g) in ng.iter_mut().zip(&gj[2 * hid..]) {
                        *o += *a * *g;
                    }
                }
                for o in rz.iter_mut() {
                    *o = o.act_sigmoid();
                }
                for (o, (r, h)) in ng.iter_mut().zip(rz.iter().zip(hn.iter())) {
                    *o = (*o + *r * *h).act_tanh();
                }
                let z = &rz[hid..];
                for (u, o) in ht.iter_mut().enumerate() {
                    *o = (one - z[u]) * ng[u] + z[u] * hprev[u];
                }
            }
        }
        Ok(())
    }

    /// (3) The per-module LSTMs of step `t` (gate order i, f, g, o), evaluated densely like the
    /// GRUs: the cache `gates` (`[i | f | g | o | tanh(c~)]`, after the nonlinearities), the
    /// candidate states `ht` and the candidate cell states `c~` in `cout` (the masked update
    /// puts inactive modules' `cin` back).
    fn module_lstms(&mut self, t: usize) -> Result<()> {
        let p = self.p;
        let (bs, steps, n, hid, nh, ih, gs, gw) =
            (p.bs, p.steps, p.n, p.hid, p.nh, p.ih, p.gs, p.gw);
        let cache_w = LSTM_CACHE_PER_UNIT * hid;
        for i in 0..n {
            let (bi, bh) = self.recurrent_product(t, i)?;
            let (f, s) = (&mut *self.f, &*self.s);
            for b in 0..bs {
                let r = b * steps + t;
                let at = r * nh + i * hid;
                let gproj = &f.g[r * gw + i * ih * gs..][..ih * gs];
                let ax = &f.ax[(r * n + i) * ih..][..ih];
                let gh = &s.gh[(b * n + i) * gs..][..gs];
                let cache = &mut f.gates[(r * n + i) * cache_w..][..cache_w];
                // Pre-activations `b_ih + (W_hh h + b_hh) + sum_j a_ij (W_ih,i[:, j] v_x,j)`.
                let (pre, tc) = cache.split_at_mut(gs);
                for (o, (b1, (g, b2))) in pre.iter_mut().zip(bi.iter().zip(gh.iter().zip(bh))) {
                    *o = *b1 + (*g + *b2);
                }
                for (j, a) in ax.iter().enumerate() {
                    for (o, g) in pre.iter_mut().zip(&gproj[j * gs..(j + 1) * gs]) {
                        *o += *a * *g;
                    }
                }
                let (ig, rest) = pre.split_at_mut(hid);
                let (fg, rest) = rest.split_at_mut(hid);
                let (gg, og) = rest.split_at_mut(hid);
                for v in ig.iter_mut().chain(fg.iter_mut()).chain(og.iter_mut()) {
                    *v = v.act_sigmoid();
                }
                for v in gg.iter_mut() {
                    *v = v.act_tanh();
                }
                let cin = &f.cin[at..][..hid];
                let cout = &mut f.cout[at..][..hid];
                let ht = &mut f.ht[at..][..hid];
                for u in 0..hid {
                    let c = fg[u] * cin[u] + ig[u] * gg[u];
                    let th = c.act_tanh();
                    tc[u] = th;
                    cout[u] = c;
                    ht[u] = og[u] * th;
                }
            }
        }
        Ok(())
    }

    /// (4) Communication of step `t`, first half: the queries, keys and values `cq, ck, cv` of
    /// every module's `h~`, and each active module's attention `p` over all modules and its
    /// output `o` (zeros for inactive modules).
    fn comm_attention(&mut self, t: usize) -> Result<()> {
        let (p, w, f) = (self.p, self.w, &mut *self.f);
        let (bs, steps, n, hid, nh, cw, pw) = (p.bs, p.steps, p.n, p.hid, p.nh, p.cw, p.pw);
        let (ch, ckw) = (p.d.c_heads, p.d.c_k);
        let inv_ck = S::ONE / S::from_f64(ckw as f64).sqrt();
        let (one, zero) = (S::ONE, S::ZERO);
        for i in 0..n {
            let a = p.st(t, nh, i * hid);
            let out = p.st(t, n * cw, i * cw);
            let wt = tr(i * pw, hid);
            gemm(bs, hid, cw, one, f.ht, a, w.c_q, wt, zero, f.cq, out)?;
            gemm(bs, hid, cw, one, f.ht, a, w.c_k, wt, zero, f.ck, out)?;
            gemm(bs, hid, cw, one, f.ht, a, w.c_v, wt, zero, f.cv, out)?;
        }
        for b in 0..bs {
            let r = b * steps + t;
            let ck = &f.ck[r * n * cw..][..n * cw];
            let cv = &f.cv[r * n * cw..][..n * cw];
            for i in 0..n {
                let p_i = &mut f.p[(r * n + i) * ch * n..][..ch * n];
                let o_i = &mut f.o[(r * n + i) * cw..][..cw];
                if f.mask[r * n + i] == zero {
                    p_i.fill(zero);
                    o_i.fill(zero);
                    continue;
                }
                let q_i = &f.cq[(r * n + i) * cw..][..cw];
                for j in 0..ch {
                    let qj = &q_i[j * ckw..][..ckw];
                    let pj = &mut p_i[j * n..][..n];
                    for (m, sv) in pj.iter_mut().enumerate() {
                        *sv = dot(qj, &ck[m * cw + j * ckw..][..ckw]) * inv_ck;
                    }
                    softmax_in_place(pj);
                    let oj = &mut o_i[j * ckw..][..ckw];
                    oj.fill(zero);
                    for (m, pm) in pj.iter().enumerate() {
                        axpy(*pm, &cv[m * cw + j * ckw..][..ckw], oj);
                    }
                }
            }
        }
        Ok(())
    }

    /// (4) Communication of step `t`, second half: the gated residual's `gate = sigmoid(W_g o)`
    /// and `tanh = tanh(W_o o)`.
    fn comm_gates(&mut self, t: usize) -> Result<()> {
        let (p, w, f) = (self.p, self.w, &mut *self.f);
        let (bs, steps, n, hid, nh, cw, pw) = (p.bs, p.steps, p.n, p.hid, p.nh, p.cw, p.pw);
        let (one, zero) = (S::ONE, S::ZERO);
        for i in 0..n {
            let a = p.st(t, n * cw, i * cw);
            let out = p.st(t, nh, i * hid);
            let wt = tr(i * pw, cw);
            gemm(bs, cw, hid, one, f.o, a, w.c_g, wt, zero, f.gate, out)?;
            gemm(bs, cw, hid, one, f.o, a, w.c_o, wt, zero, f.tanh, out)?;
        }
        for b in 0..bs {
            let rows = (b * steps + t) * nh..(b * steps + t + 1) * nh;
            f.gate[rows.clone()]
                .iter_mut()
                .for_each(|v| *v = v.act_sigmoid());
            f.tanh[rows].iter_mut().for_each(|v| *v = v.act_tanh());
        }
        Ok(())
    }

    /// (5) The masked update of step `t`: active modules take `h~` (plus the gated
    /// communication) and an LSTM's `c~` (already in `cout`), inactive ones keep `hin` (and
    /// `cin`).
    fn masked_update(&mut self, t: usize) {
        let (p, f) = (self.p, &mut *self.f);
        let (n, hid, nh) = (p.n, p.hid, p.nh);
        let zero = S::ZERO;
        for (_, r, i) in p.slots(t) {
            let at = r * nh + i * hid;
            let dst = &mut f.hout[at..][..hid];
            if f.mask[r * n + i] == zero {
                dst.copy_from_slice(&f.hin[at..][..hid]);
                if p.lstm {
                    f.cout[at..][..hid].copy_from_slice(&f.cin[at..][..hid]);
                }
                continue;
            }
            let ht = &f.ht[at..][..hid];
            if p.d.communication {
                let (g, th) = (&f.gate[at..][..hid], &f.tanh[at..][..hid]);
                let interpolate = p.d.comm_update == CommUpdate::Interpolate;
                for (((o, t), g), th) in dst.iter_mut().zip(ht).zip(g).zip(th) {
                    *o = if interpolate {
                        *t + *g * (*th - *t)
                    } else {
                        *t + *g * *th
                    };
                }
            } else {
                dst.copy_from_slice(ht);
            }
        }
    }

    /// Backward of 5., the masked update of step `t`: the state gradient (loss `dh` plus the
    /// carried gradient) goes to `dht` for active modules and to `carry_new` (the incoming
    /// state) for inactive ones; the other receives zeros. An LSTM's carried cell-state
    /// gradient likewise goes to `dct` (active) or `carry_c_new` (inactive).
    fn masked_update_backward(&mut self, t: usize) {
        if self.p.lstm {
            self.masked_cell_update_backward(t);
        }
        let (p, f, s) = (self.p, &mut *self.f, &mut *self.s);
        let (n, hid, nh) = (p.n, p.hid, p.nh);
        let zero = S::ZERO;
        for (b, r, i) in p.slots(t) {
            let o = b * nh + i * hid;
            let src = &f.dh[r * nh + i * hid..][..hid];
            let carry = &s.carry[o..][..hid];
            let on = f.mask[r * n + i] != zero;
            let (dst_on, dst_off) = if on {
                (&mut s.dht[o..][..hid], &mut s.carry_new[o..][..hid])
            } else {
                (&mut s.carry_new[o..][..hid], &mut s.dht[o..][..hid])
            };
            for ((a, z), (sv, c)) in dst_on
                .iter_mut()
                .zip(dst_off.iter_mut())
                .zip(src.iter().zip(carry))
            {
                *a = *sv + *c;
                *z = zero;
            }
        }
    }

    /// The cell-state part of [`ShardPass::masked_update_backward`]: `c_t = c~` for an active
    /// module and `c_{t-1}` for an inactive one, and the loss has no direct `c` term, so the
    /// carried gradient alone is routed.
    fn masked_cell_update_backward(&mut self, t: usize) {
        let (p, f, s) = (self.p, &*self.f, &mut *self.s);
        let (n, hid, nh) = (p.n, p.hid, p.nh);
        let zero = S::ZERO;
        for (b, r, i) in p.slots(t) {
            let o = b * nh + i * hid;
            let carry = &s.carry_c[o..][..hid];
            let (dst_on, dst_off) = if f.mask[r * n + i] != zero {
                (&mut s.dct[o..][..hid], &mut s.carry_c_new[o..][..hid])
            } else {
                (&mut s.carry_c_new[o..][..hid], &mut s.dct[o..][..hid])
            };
            dst_on.copy_from_slice(carry);
            dst_off.fill(zero);
        }
    }

    /// Backward of (4)'s gated residual at step `t`: the pre-activation gradients `dpg, dpo` of
    /// the gate and the tanh, and from them the communication outputs' gradient `dout`.
    fn comm_gates_backward(&mut self, t: usize) -> Result<()> {
        let (p, w, f, s) = (self.p, self.w, &mut *self.f, &mut *self.s);
        let (bs, steps, n, hid, nh, cw, pw) = (p.bs, p.steps, p.n, p.hid, p.nh, p.cw, p.pw);
        let (one, zero) = (S::ONE, S::ZERO);
        // `dht` holds dh' here; interpolation (h' = h~ + g (u - h~)) leaves (1 - g) dh' of it
        // for h~, the residual all of it.
        let interpolate = p.d.comm_update == CommUpdate::Interpolate;
        for b in 0..bs {
            let rows = (b * steps + t) * nh..(b * steps + t + 1) * nh;
            for (((((pg, po), dy), gt), th), ht) in f.dpg[rows.clone()]
                .iter_mut()
                .zip(f.dpo[rows.clone()].iter_mut())
                .zip(s.dht[b * nh..][..nh].iter_mut())
                .zip(f.gate[rows.clone()].iter())
                .zip(f.tanh[rows.clone()].iter())
                .zip(f.ht[rows].iter())
            {
                let lift = if interpolate { *th - *ht } else { *th };
                *pg = *dy * lift * *gt * (one - *gt);
                *po = *dy * *gt * (one - *th * *th);
                if interpolate {
                    *dy *= one - *gt;
                }
            }
        }
        for i in 0..n {
            let a = p.st(t, nh, i * hid);
            let out = rm(i * cw, n * cw);
            gemm(
                bs,
                hid,
                cw,
                one,
                f.dpg,
                a,
                w.c_g,
                rm(i * pw, cw),
                zero,
                s.dout,
                out,
            )?;
            gemm(
                bs,
                hid,
                cw,
                one,
                f.dpo,
                a,
                w.c_o,
                rm(i * pw, cw),
                one,
                s.dout,
                out,
            )?;
        }
        Ok(())
    }

    /// Backward of (4)'s attention at step `t`: from `dout`, the gradients `dcq, dck, dcv` of
    /// the communication queries, keys and values (through each active module's softmax;
    /// `dp`, `ds` are `N`-long scratch).
    fn comm_attention_backward(&mut self, dp: &mut [S], ds: &mut [S], t: usize) {
        let (p, f, s) = (self.p, &mut *self.f, &mut *self.s);
        let (bs, steps, n, cw) = (p.bs, p.steps, p.n, p.cw);
        let (ch, ckw) = (p.d.c_heads, p.d.c_k);
        let inv_ck = S::ONE / S::from_f64(ckw as f64).sqrt();
        let zero = S::ZERO;
        for b in 0..bs {
            let r = b * steps + t;
            let crow = r * n * cw..(r + 1) * n * cw;
            f.dcq[crow.clone()].fill(zero);
            f.dck[crow.clone()].fill(zero);
            f.dcv[crow].fill(zero);
            for i in 0..n {
                if f.mask[r * n + i] == zero {
                    continue;
                }
                let p_i = &f.p[(r * n + i) * ch * n..][..ch * n];
                let q_i = &f.cq[(r * n + i) * cw..][..cw];
                for j in 0..ch {
                    let doj = &s.dout[(b * n + i) * cw + j * ckw..][..ckw];
                    let pj = &p_i[j * n..][..n];
                    for (m, (dpm, pm)) in dp.iter_mut().zip(pj).enumerate() {
                        let at = (r * n + m) * cw + j * ckw;
                        *dpm = dot(doj, &f.cv[at..][..ckw]);
                        axpy(*pm, doj, &mut f.dcv[at..][..ckw]);
                    }
                    // softmax backward: ds = p * (dp - <dp, p>).
                    let mut sum = zero;
                    for (a, b) in pj.iter().zip(dp.iter()) {
                        sum += *a * *b;
                    }
                    for ((dsm, pm), dpm) in ds.iter_mut().zip(pj).zip(dp.iter()) {
                        *dsm = *pm * (*dpm - sum);
                    }
                    let qj = &q_i[j * ckw..][..ckw];
                    for (m, dsm) in ds.iter().enumerate() {
                        let dsm = *dsm * inv_ck;
                        let at = (r * n + m) * cw + j * ckw;
                        axpy(
                            dsm,
                            &f.ck[at..][..ckw],
                            &mut f.dcq[(r * n + i) * cw + j * ckw..][..ckw],
                        );
                        axpy(dsm, qj, &mut f.dck[at..][..ckw]);
                    }
                }
            }
        }
    }

    /// Backward of (4)'s projections at step `t`: adds to `dht` the gradient of `h~` through
    /// the communication queries, and through the keys and values (the latter only for
    /// active modules under [`CommGrad::Blocked`]).
    fn comm_projections_backward(&mut self, mode: CommGrad, t: usize) -> Result<()> {
        let (p, w, f, s) = (self.p, self.w, &mut *self.f, &mut *self.s);
        let (bs, steps, n, hid, nh, cw, pw) = (p.bs, p.steps, p.n, p.hid, p.nh, p.cw, p.pw);
        let (one, zero) = (S::ONE, S::ZERO);
        for i in 0..n {
            let a = p.st(t, n * cw, i * cw);
            gemm(
                bs,
                cw,
                hid,
                one,
                f.dcq,
                a,
                w.c_q,
                rm(i * pw, hid),
                one,
                s.dht,
                rm(i * hid, nh),
            )?;
            let tmp = rm(0, hid);
            gemm(
                bs,
                cw,
                hid,
                one,
                f.dck,
                a,
                w.c_k,
                rm(i * pw, hid),
                zero,
                s.tmp,
                tmp,
            )?;
            gemm(
                bs,
                cw,
                hid,
                one,
                f.dcv,
                a,
                w.c_v,
                rm(i * pw, hid),
                one,
                s.tmp,
                tmp,
            )?;
            for b in 0..bs {
                let r = b * steps + t;
                if mode == CommGrad::Blocked && f.mask[r * n + i] == zero {
                    continue;
                }
                let dst = &mut s.dht[b * nh + i * hid..][..hid];
                axpy(one, &s.tmp[b * hid..][..hid], dst);
            }
        }
        Ok(())
    }

    /// Backward of (3) and (1) at step `t`, per row: the cell's gate gradients (dense: a
    /// module whose `h~` and `c~` got no gradient gets exact zeros): a GRU's `dgi, dgh` and
    /// the incoming state's direct share in `carry_new`, an LSTM's `dgi` (both sides) and the
    /// incoming cell state's gradient in `carry_c_new`; then the input attention:
    /// `u_ij = a_ij v_x,j` with `a_ij = sigmoid(q_ij . k_x,j / sqrt(d_k))`, so
    /// `dL/da_ij = dgi_i . (W_ih,i[:, j] v_x,j)`, the stored projection, giving `adgi`, `dq` and
    /// `dkx`.
    fn cell_attention_backward(&mut self, t: usize) {
        let (p, f, s) = (self.p, &mut *self.f, &mut *self.s);
        let (bs, steps, n, hid, nh, aw, ih, dk, gs, gw) = (
            p.bs, p.steps, p.n, p.hid, p.nh, p.aw, p.ih, p.dk, p.gs, p.gw,
        );
        let inv_dk = S::ONE / S::from_f64(dk as f64).sqrt();
        let (one, zero) = (S::ONE, S::ZERO);
        for b in 0..bs {
            let r = b * steps + t;
            f.dkx[r * aw..(r + 1) * aw].fill(zero);
            let kx = &f.kx[r * aw..][..aw];
            for i in 0..n {
                let (at, o) = (r * nh + i * hid, b * nh + i * hid);
                let dy = &s.dht[o..][..hid];
                let gi = &mut f.dgi[(r * n + i) * gs..][..gs];
                if p.lstm {
                    let cw = LSTM_CACHE_PER_UNIT * hid;
                    let cache = &f.gates[(r * n + i) * cw..][..cw];
                    let (cin, dct) = (&f.cin[at..][..hid], &s.dct[o..][..hid]);
                    let dcp = &mut s.carry_c_new[o..][..hid];
                    lstm_gate_grads(hid, cache, cin, dy, dct, gi, dcp);
                } else {
                    let cache = &f.gates[(r * n + i) * 4 * hid..][..4 * hid];
                    let hprev = &f.hin[at..][..hid];
                    let gh = &mut f.dgh[(r * n + i) * gs..][..gs];
                    let carry = &mut s.carry_new[o..][..hid];
                    gru_gate_grads(cache, hprev, dy, gi, gh, carry);
                }
                let gi = &f.dgi[(r * n + i) * gs..][..gs];
                let q = &f.q[(r * n + i) * aw..][..aw];
                let ax = &f.ax[(r * n + i) * ih..][..ih];
                let dq = &mut f.dq[(r * n + i) * aw..][..aw];
                for (j, a) in ax.iter().enumerate() {
                    let at = r * gw + (i * ih + j) * gs;
                    let da = dot(gi, &f.g[at..][..gs]);
                    for (o, v) in f.adgi[at..][..gs].iter_mut().zip(gi) {
                        *o = *a * *v;
                    }
                    let dsc = da * *a * (one - *a) * inv_dk;
                    for (o, k) in dq[j * dk..][..dk].iter_mut().zip(&kx[j * dk..][..dk]) {
                        *o = dsc * *k;
                    }
                    axpy(dsc, &q[j * dk..][..dk], &mut f.dkx[r * aw + j * dk..][..dk]);
                }
            }
        }
    }

    /// The incoming state's gradient at step `t` through the recurrent products: adds
    /// `dgh W_hh` (an LSTM's `dgi W_hh`) and `dq W_q` of every module to `carry_new`.
    fn recurrent_backward(&mut self, t: usize) -> Result<()> {
        let (p, w, f, s) = (self.p, self.w, &mut *self.f, &mut *self.s);
        let (bs, n, hid, nh, aw, uw, gs, rml) = (p.bs, p.n, p.hid, p.nh, p.aw, p.uw, p.gs, p.rml);
        let one = S::ONE;
        let dgh: &[S] = if p.lstm { f.dgi } else { f.dgh };
        for i in 0..n {
            let w_hh = i * rml + gs * uw;
            gemm(
                bs,
                gs,
                hid,
                one,
                dgh,
                p.st(t, n * gs, i * gs),
                w.rnn,
                rm(w_hh, hid),
                one,
                s.carry_new,
                rm(i * hid, nh),
            )?;
        }
        for i in 0..n {
            gemm(
                bs,
                aw,
                hid,
                one,
                f.dq,
                p.st(t, n * aw, i * aw),
                w.w_q,
                rm(i * aw * hid, hid),
                one,
                s.carry_new,
                rm(i * hid, nh),
            )?;
        }
        Ok(())
    }

    /// Ends backward step `t`: the incoming state's gradient `carry_new` (and an LSTM's
    /// `carry_c_new`) becomes the carried gradient of step `t - 1`, zeroed where step `t`
    /// starts an episode (no gradient into the step before an episode start).
    fn carry_to_previous_step(&mut self, reset: &[bool], t: usize) {
        let (p, s) = (self.p, &mut *self.s);
        let (steps, nh, ncl) = (p.steps, p.nh, p.ncl);
        for b in 0..p.bs {
            if reset[b * steps + t] {
                s.carry_new[b * nh..][..nh].fill(S::ZERO);
                s.carry_c_new[b * ncl..][..ncl].fill(S::ZERO);
            }
        }
        std::mem::swap(&mut s.carry, &mut s.carry_new);
        std::mem::swap(&mut s.carry_c, &mut s.carry_c_new);
    }

    /// After the steps, for all rows at once: the values' gradient `dvx` (with `want_dx` or
    /// `want_dv`) and the input gradient `dx` (with `want_dx`).
    fn input_backward(&mut self, want_dx: bool, want_dv: bool) -> Result<()> {
        let (p, w, f) = (self.p, self.w, &mut *self.f);
        let (n, inp, aw, uw, ih, dv, gs, rml, gw) =
            (p.n, p.inp, p.aw, p.uw, p.ih, p.dv, p.gs, p.rml, p.gw);
        let (one, zero) = (S::ONE, S::ZERO);
        let rows = p.bs * p.steps;
        if want_dx || want_dv {
            // dL/dv_x,j = sum_i a_ij dgi_i W_ih,i[:, j], for all rows at once.
            for i in 0..n {
                let beta = if i == 0 { zero } else { one };
                for j in 0..ih {
                    gemm(
                        rows,
                        gs,
                        dv,
                        one,
                        f.adgi,
                        rm((i * ih + j) * gs, gw),
                        w.rnn,
                        rm(i * rml + j * dv, uw),
                        beta,
                        f.dvx,
                        rm(j * dv, uw),
                    )?;
                }
            }
        }
        if want_dx {
            ensure!(
                f.dx.len() >= rows * inp,
                "batched RIM: buffers were made without backward"
            );
            gemm(
                rows,
                aw,
                inp,
                one,
                f.dkx,
                rm(0, aw),
                w.w_k,
                rm(0, inp),
                zero,
                f.dx,
                rm(0, inp),
            )?;
            gemm(
                rows,
                uw,
                inp,
                one,
                f.dvx,
                rm(0, uw),
                w.w_v,
                rm(0, inp),
                one,
                f.dx,
                rm(0, inp),
            )?;
        }
        Ok(())
    }
}

/// Offsets of the nine tensors in a flat parameter buffer (order `w_k, w_v, w_q, rnn, c_q, c_k,
/// c_v, c_g, c_o`) and its total length.
pub fn param_offsets(d: &RimDims) -> ([usize; 9], usize) {
    let c = rim_param_counts(d);
    let lens = [
        c.w_k, c.w_v, c.w_q, c.rnn, c.c_q, c.c_k, c.c_v, c.c_g, c.c_o,
    ];
    let mut offs = [0; 9];
    let mut at = 0;
    for (o, l) in offs.iter_mut().zip(lens) {
        *o = at;
        at += l;
    }
    (offs, at)
}

/// Views the flat parameter buffer `p` ([`param_offsets`] order) as core's [`RimWeights`].
pub fn weights_view<'a, S>(d: &RimDims, p: &'a [S]) -> Result<RimWeights<'a, S>> {
    let (offs, total) = param_offsets(d);
    ensure!(
        p.len() >= total,
        "parameter buffer too short: {} < {total}",
        p.len()
    );
    let mut rest = &p[..total];
    let mut parts: [&[S]; 9] = [&[]; 9];
    for (i, part) in parts.iter_mut().enumerate() {
        let end = offs.get(i + 1).copied().unwrap_or(total) - offs[i];
        let (head, tail) = rest.split_at(end);
        *part = head;
        rest = tail;
    }
    Ok(RimWeights::from_parts(parts))
}

/// Views the flat gradient buffer `g` ([`param_offsets`] order) as core's [`RimGrads`].
pub fn grads_view<'a, S>(d: &RimDims, g: &'a mut [S]) -> Result<RimGrads<'a, S>> {
    let (offs, total) = param_offsets(d);
    ensure!(
        g.len() >= total,
        "gradient buffer too short: {} < {total}",
        g.len()
    );
    let mut rest = &mut g[..total];
    let mut parts: [&mut [S]; 9] = Default::default();
    for (i, part) in parts.iter_mut().enumerate() {
        let end = offs.get(i + 1).copied().unwrap_or(total) - offs[i];
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(end);
        *part = head;
        rest = tail;
    }
    Ok(RimGrads::from_parts(parts))
}

/// The RIM cell's weights in the parameter buffers `p` of a model with `layout`.
pub fn weights<'a, S>(layout: &Layout, p: &GroupBufs<'a, S>) -> RimWeights<'a, S> {
    RimWeights::from_parts(TensorKind::RIM.map(|k| layout.slice(p, k)))
}

/// The cases every parity check of the batched cell runs for the cell `d` against the core
/// (the LSTM-cell unit tests here and the GRU-cell tests in `host/tests/rim_batch_parity.rs`),
/// written once so both cell kinds keep the same list: `d` with the blocked communication
/// gradient, `d` without communication, and `d` with the full communication gradient, in that
/// order (the checks seed by position). The `f32` checks run the first two.
pub fn parity_cases(d: &RimDims) -> [(RimDims, CommGrad); 3] {
    let no_comm = RimDims {
        communication: false,
        ..*d
    };
    [
        (*d, CommGrad::Blocked),
        (no_comm, CommGrad::Blocked),
        (*d, CommGrad::Full),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_shard_bounds_are_errors() {
        let d = metarim_core::nn::dims::TINY.rim;
        let mut rb = RimBatch::<f32>::new(&d, 8, true).unwrap();
        assert!(rb.shards(4, 2, &[0, 2, 4]).is_ok());
        assert!(rb.shards(4, 2, &[0, 3]).is_err());
        assert!(rb.shards(4, 2, &[0, 3, 2, 4]).is_err());
        assert!(rb.shards(5, 2, &[0, 5]).is_err(), "over capacity");
        assert!(rb.shards(4, 0, &[0, 4]).is_err());
    }

    #[test]
    fn even_bounds_cover_every_sequence() {
        assert_eq!(even_bounds(10, 3), vec![0, 3, 6, 10]);
        assert_eq!(even_bounds(2, 5), vec![0, 1, 2]);
        assert_eq!(even_bounds(0, 2), vec![0, 0]);
    }

    // LSTM cells against the core's per-sample step (`rim_step_forward` / `rim_step_backward`,
    // the incoming `[h | c]` zeroed and no gradient carried at episode starts). The GRU path's
    // parity is `host/tests/rim_batch_parity.rs`.

    use metarim_core::nn::dims::RIM_ODD_WIDTHS;
    use metarim_core::nn::rim::{rim_step_backward, rim_step_forward, scratch_len, step_cache_len};
    use metarim_core::rng::Pcg32;

    /// Core's odd-width parity sizes with LSTM-cell modules.
    const LSTM_SMALL: RimDims = RimDims {
        cell: CellKind::Lstm,
        ..RIM_ODD_WIDTHS
    };

    fn no_comm(d: &RimDims) -> RimDims {
        RimDims {
            communication: false,
            ..*d
        }
    }

    /// A random pass: parameters, inputs, initial states `[h | c]`, loss gradients of every
    /// outgoing `h` and episode starts (about one step in four, step 0 included).
    struct Problem<S> {
        d: RimDims,
        batch: usize,
        steps: usize,
        params: Vec<S>,
        xs: Vec<S>,
        state0: Vec<S>,
        dhs: Vec<S>,
        reset: Vec<bool>,
    }

    fn uniform<S: Scalar>(rng: &mut Pcg32, n: usize, scale: f64) -> Vec<S> {
        (0..n)
            .map(|_| S::from_f64((rng.gen_f32() as f64 * 2.0 - 1.0) * scale))
            .collect()
    }

    fn problem<S: Scalar>(d: &RimDims, batch: usize, steps: usize, seed: u64) -> Problem<S> {
        let mut rng = Pcg32::new(seed);
        let rows = batch * steps;
        // Weights scaled so that attention scores spread (varied selections).
        let params = uniform(&mut rng, param_offsets(d).1, 0.4);
        let xs = uniform(&mut rng, rows * d.input, 1.0);
        let state0 = uniform(&mut rng, batch * state_width(d), 1.0);
        let dhs = uniform(&mut rng, rows * state_len(d), 1.0);
        let reset = (0..rows).map(|_| rng.below(4) == 0).collect();
        Problem {
            d: *d,
            batch,
            steps,
            params,
            xs,
            state0,
            dhs,
            reset,
        }
    }

    /// What a pass gives: outgoing `h` and `c`, masks, input and parameter gradients.
    struct Out<S> {
        h: Vec<S>,
        c: Vec<S>,
        mask: Vec<S>,
        dx: Vec<S>,
        g: Vec<S>,
    }

    /// Deliberate mistakes in the reference, to show that the parity checks would see them.
    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        None,
        /// The cell state's gradient is not carried to the previous step.
        NoCellCarry,
        /// The cell state is not zeroed at an episode start.
        CellSurvivesReset,
    }

    /// The core's step functions, one sequence at a time, gradients summed over the batch.
    fn core_pass<S: Scalar>(p: &Problem<S>, mode: CommGrad, fault: Fault) -> Out<S> {
        let (d, steps) = (&p.d, p.steps);
        let (nh, n, inp, sw) = (state_len(d), d.n_modules, d.input, state_width(d));
        let rows = p.batch * steps;
        let w = weights_view(d, &p.params).unwrap();
        let cl = step_cache_len(d);
        let mut o = Out {
            h: vec![S::ZERO; rows * nh],
            c: vec![S::ZERO; rows * nh],
            mask: vec![S::ZERO; rows * n],
            dx: vec![S::ZERO; rows * inp],
            g: vec![S::ZERO; p.params.len()],
        };
        let (mut hin, mut cin) = (vec![S::ZERO; rows * nh], vec![S::ZERO; rows * nh]);
        let mut caches = vec![S::ZERO; rows * cl];
        let mut scratch = vec![S::ZERO; scratch_len(d)];
        let mut active = vec![false; n];
        for r in 0..rows {
            let (b, t) = (r / steps, r % steps);
            let (h_in, c_in) = (&mut hin[r * nh..][..nh], &mut cin[r * nh..][..nh]);
            if p.reset[r] {
                h_in.fill(S::ZERO);
            } else if t == 0 {
                h_in.copy_from_slice(&p.state0[b * sw..][..nh]);
            } else {
                h_in.copy_from_slice(&o.h[(r - 1) * nh..][..nh]);
            }
            if p.reset[r] && fault != Fault::CellSurvivesReset {
                c_in.fill(S::ZERO);
            } else if t == 0 {
                c_in.copy_from_slice(&p.state0[b * sw + nh..][..nh]);
            } else {
                c_in.copy_from_slice(&o.c[(r - 1) * nh..][..nh]);
            }
            let (h_out, c_out) = (&mut o.h[r * nh..][..nh], &mut o.c[r * nh..][..nh]);
            let (x, cache) = (&p.xs[r * inp..][..inp], &mut caches[r * cl..][..cl]);
            rim_step_forward(&w, d, x, h_in, c_in, h_out, c_out, &mut active, cache).unwrap();
            for (m, a) in o.mask[r * n..][..n].iter_mut().zip(&active) {
                *m = if *a { S::ONE } else { S::ZERO };
            }
        }
        for b in 0..p.batch {
            let (mut carry_h, mut carry_c) = (vec![S::ZERO; nh], vec![S::ZERO; nh]);
            for t in (0..steps).rev() {
                let r = b * steps + t;
                let dh: Vec<S> = p.dhs[r * nh..][..nh]
                    .iter()
                    .zip(&carry_h)
                    .map(|(a, c)| *a + *c)
                    .collect();
                if fault == Fault::NoCellCarry {
                    carry_c.fill(S::ZERO);
                }
                let (mut dh_prev, mut dc_prev) = (vec![S::ZERO; nh], vec![S::ZERO; nh]);
                rim_step_backward(
                    &w,
                    d,
                    mode,
                    &p.xs[r * inp..][..inp],
                    &hin[r * nh..][..nh],
                    &cin[r * nh..][..nh],
                    &caches[r * cl..][..cl],
                    &dh,
                    &carry_c,
                    Some(&mut o.dx[r * inp..][..inp]),
                    &mut dh_prev,
                    &mut dc_prev,
                    &mut grads_view(d, &mut o.g).unwrap(),
                    &mut scratch,
                )
                .unwrap();
                if p.reset[r] {
                    dh_prev.fill(S::ZERO);
                    dc_prev.fill(S::ZERO);
                }
                (carry_h, carry_c) = (dh_prev, dc_prev);
            }
        }
        o
    }

    /// The batched pass with the sequences in `parts` shards and the weight gradients on
    /// `threads` threads.
    fn batched_pass<S: Scalar>(
        p: &Problem<S>,
        mode: CommGrad,
        parts: usize,
        threads: usize,
    ) -> Out<S> {
        let (d, steps) = (&p.d, p.steps);
        let (inp, sw) = (d.input, state_width(d));
        let w = weights_view(d, &p.params).unwrap();
        let bounds = even_bounds(p.batch, parts);
        let mut rb = RimBatch::<S>::new(d, p.batch * steps + 2, true).unwrap();
        let mut scratch: Vec<RimScratch<S>> = bounds
            .windows(2)
            .map(|b| RimScratch::new(d, b[1] - b[0]))
            .collect();
        let nh = state_len(d);
        let shards = rb.shards(p.batch, steps, &bounds).unwrap();
        for ((mut sh, sc), b) in shards.into_iter().zip(&mut scratch).zip(bounds.windows(2)) {
            let (r0, r1) = (b[0] * steps, b[1] * steps);
            sh.x_mut().copy_from_slice(&p.xs[r0 * inp..r1 * inp]);
            let reset = &p.reset[r0..r1];
            sh.forward(&w, &p.state0[b[0] * sw..b[1] * sw], reset, sc)
                .unwrap();
            sh.dh_mut().copy_from_slice(&p.dhs[r0 * nh..r1 * nh]);
            sh.backward(&w, mode, reset, true, true, sc).unwrap();
        }
        let mut g = vec![S::ZERO; p.params.len()];
        rb.weight_grads(&mut grads_view(d, &mut g).unwrap(), threads)
            .unwrap();
        Out {
            h: rb.h_out().to_vec(),
            c: rb.c_out().to_vec(),
            mask: rb.masks().to_vec(),
            dx: rb.dx().to_vec(),
            g,
        }
    }

    /// `max |a - b| / max |b|`.
    fn rel_err<S: Scalar>(a: &[S], b: &[S]) -> f64 {
        assert_eq!(a.len(), b.len());
        let (err, scale) = crate::batch::normwise_rel_error(a, b);
        assert!(scale > 0.0, "a compared quantity is identically zero");
        err
    }

    /// The largest relative error of `a` against `b` over the states, the input gradient and
    /// each parameter tensor (the masks must agree exactly).
    fn max_err<S: Scalar>(d: &RimDims, a: &Out<S>, b: &Out<S>) -> f64 {
        assert_eq!(a.mask, b.mask, "selections differ");
        let (offs, total) = param_offsets(d);
        let mut e = rel_err(&a.h, &b.h)
            .max(rel_err(&a.c, &b.c))
            .max(rel_err(&a.dx, &b.dx));
        for (i, o) in offs.iter().enumerate() {
            let r = *o..offs.get(i + 1).copied().unwrap_or(total);
            if !r.is_empty() {
                e = e.max(rel_err(&a.g[r.clone()], &b.g[r]));
            }
        }
        e
    }

    fn bits<S: Scalar>(o: &Out<S>) -> Vec<u64> {
        [&o.h, &o.c, &o.dx, &o.g]
            .iter()
            .flat_map(|v| v.iter().map(|x| x.to_f64().to_bits()))
            .collect()
    }

    /// Compares the batched pass with the core for several shard splits and thread counts
    /// (bit-identical among themselves); returns the largest relative error.
    fn check<S: Scalar>(d: &RimDims, batch: usize, mode: CommGrad, seed: u64, tol: f64) -> f64 {
        let p = problem::<S>(d, batch, 6, seed);
        let core = core_pass(&p, mode, Fault::None);
        let ctx = format!("B={batch} comm={} {mode:?}", d.communication);
        let first = &core.mask[..d.n_modules];
        assert!(
            batch < 3 || core.mask.chunks(d.n_modules).any(|c| c != first),
            "{ctx}: every step selected the same modules"
        );
        let one = batched_pass(&p, mode, 1, 1);
        let err = max_err(d, &one, &core);
        assert!(err <= tol, "{ctx}: rel err {err:e}");
        for (parts, threads) in [(2usize, 3usize), (batch, 2), (3, d.n_modules)] {
            let other = batched_pass(&p, mode, parts, threads);
            assert!(
                bits(&other) == bits(&one),
                "{ctx}: {parts} shards, {threads} threads change the bits"
            );
        }
        err
    }

    /// The worst relative error of [`check`] over `cases` (dims and communication gradient)
    /// at each batch size of `batches` (the `k`-th batch size with seed `seed0 + k`).
    fn worst_of<S: Scalar>(
        cases: &[(RimDims, CommGrad)],
        batches: &[usize],
        seed0: u64,
        tol: f64,
    ) -> f64 {
        let mut worst = 0.0f64;
        for (k, &batch) in batches.iter().enumerate() {
            for (d, mode) in cases {
                worst = worst.max(check::<S>(d, batch, *mode, seed0 + k as u64, tol));
            }
        }
        worst
    }

    #[test]
    fn lstm_cells_match_the_core_f64() {
        let cases = parity_cases(&LSTM_SMALL);
        let paper = RimDims {
            cell: CellKind::Lstm,
            ..metarim_core::nn::dims::PAPER.rim
        };
        let small = worst_of::<f64>(&cases, &[1, 3, 7], 50, 1e-10);
        let worst = small.max(worst_of::<f64>(
            &[(paper, CommGrad::Blocked)],
            &[4],
            60,
            1e-10,
        ));
        eprintln!("LSTM cells vs the core, f64: worst rel err {worst:e}");
    }

    #[test]
    fn lstm_cells_match_the_core_f32() {
        let cases = parity_cases(&LSTM_SMALL);
        let worst = worst_of::<f32>(&cases[..2], &[1, 4], 70, 1e-4);
        eprintln!("LSTM cells vs the core, f32: worst rel err {worst:e}");
    }

    #[test]
    fn the_parity_checks_see_cell_state_mistakes() {
        // A reference that drops the cell state's gradient carry, or lets `c` survive an
        // episode start, must be far outside the tolerance of the checks above; otherwise they
        // would not notice a batched pass making the same mistake.
        for d in [LSTM_SMALL, no_comm(&LSTM_SMALL)] {
            let p = problem::<f64>(&d, 4, 6, 80);
            assert!(p.reset.iter().enumerate().any(|(r, s)| *s && r % 6 > 0));
            let core = core_pass(&p, CommGrad::Blocked, Fault::None);
            for fault in [Fault::NoCellCarry, Fault::CellSurvivesReset] {
                let wrong = core_pass(&p, CommGrad::Blocked, fault);
                let same_masks = wrong.mask == core.mask;
                let err = if same_masks {
                    max_err(&d, &wrong, &core)
                } else {
                    f64::INFINITY
                };
                assert!(err > 1e-4, "the mistake changed little: {err:e}");
            }
        }
    }

    #[test]
    fn lstm_cell_states_are_kept_by_inactive_modules_and_zeroed_at_episode_starts() {
        let d = LSTM_SMALL;
        let (steps, nh, hid, n) = (6, state_len(&d), d.hidden, d.n_modules);
        let p = problem::<f64>(&d, 5, steps, 90);
        let o = batched_pass(&p, CommGrad::Blocked, 2, 2);
        let sw = state_width(&d);
        let mut kept = 0;
        for r in 0..p.batch * steps {
            let (b, t) = (r / steps, r % steps);
            let c_in: Vec<f64> = if p.reset[r] {
                vec![0.0; nh]
            } else if t == 0 {
                p.state0[b * sw + nh..][..nh].to_vec()
            } else {
                o.c[(r - 1) * nh..][..nh].to_vec()
            };
            for i in 0..n {
                let c_out = &o.c[r * nh + i * hid..][..hid];
                if o.mask[r * n + i] == 0.0 {
                    assert_eq!(c_out, &c_in[i * hid..][..hid], "row {r} module {i}");
                    kept += 1;
                } else {
                    assert_ne!(c_out, &c_in[i * hid..][..hid], "row {r} module {i}");
                }
            }
        }
        assert_eq!(kept, p.batch * steps * (n - d.k_active));
        // The initial cell states are read, except where step 0 starts an episode.
        let mut q = problem::<f64>(&d, 5, steps, 90);
        for v in q.state0.chunks_mut(sw) {
            v[nh..].iter_mut().for_each(|c| *c += 0.5);
        }
        let o2 = batched_pass(&q, CommGrad::Blocked, 1, 1);
        for b in 0..p.batch {
            let rows = b * steps * nh..(b + 1) * steps * nh;
            let same = o2.c[rows.clone()] == o.c[rows];
            assert_eq!(same, p.reset[b * steps], "sequence {b}");
        }
    }
}
