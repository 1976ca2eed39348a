//! The launches both paths share: the typed launch, the parameter and gradient pointers of a
//! tensor or a block, the forward kernels (observation encoder, instruction encoder, the
//! gather of instruction embeddings into the memory input, one memory step, the heads), used by
//! acting and by the gradient pass alike, and the weight-gradient reduction.

use std::sync::Arc;

use metarim_core::nn::dims::MemoryKind;
use metarim_core::nn::params::{Role, TensorKind};

use super::{bad, blocks, group_index, linear_cfg, u32_of, CudaPolicy, SMALL_THREADS, THREADS};
use crate::args::{
    EncoderFwd, GatherRows, HeadsFwd, InstrFwd, LstmFwdStep, RimFwdStep, RimWeights, Wgrad,
};
use crate::exec::{self, DevBuf, Exec, Func, KernelArgs, LaunchCfg, Ptr};
use crate::layout::ModelLayout;
use crate::Result;

/// The operands of one memory step forward over `batch` samples.
#[derive(Clone, Copy, Debug)]
pub(super) struct MemoryStep {
    /// Memory inputs, `input` floats each.
    pub x: Ptr<f32>,
    /// The states before the step.
    pub h_src: Ptr<f32>,
    /// Episode starts (the memory reads zeros).
    pub reset: Ptr<u8>,
    /// Out: the states read (zeros at an episode start).
    pub state_in: Ptr<f32>,
    /// Out: the states after the step (may equal `h_src`).
    pub h_out: Ptr<f32>,
    /// Out: the step cache.
    pub cache: Ptr<f32>,
    /// Out: the active-module masks (RIM only; may be null).
    pub active_bits: Ptr<u32>,
    /// Samples.
    pub batch: usize,
}

/// The instruction encoder's device buffers for up to a number of missions (acting's slots and
/// the gradient pass's work buffers hold one each): the packed tokens (`max_tokens` each), the
/// embeddings, the caches and the embedded tokens, sized per mission here once.
#[derive(Debug)]
pub(super) struct InstrBufs {
    /// Packed tokens.
    pub tokens: DevBuf<u16>,
    /// The embeddings (`instr_hidden` each).
    pub out: DevBuf<f32>,
    /// The encoder's caches.
    pub cache: DevBuf<f32>,
    /// The embedded tokens the encoder read.
    pub xs: DevBuf<f32>,
}

impl InstrBufs {
    /// Zeroed buffers for `segments` missions.
    pub fn new(exec: &Arc<dyn Exec>, ml: &ModelLayout, segments: usize) -> Result<InstrBufs> {
        let d = &ml.dims;
        let f = |n: usize| DevBuf::<f32>::zeros(exec, n);
        Ok(InstrBufs {
            tokens: DevBuf::zeros(exec, segments * d.max_tokens)?,
            out: f(segments * d.instr_hidden)?,
            cache: f(segments * ml.instr.instr_cache)?,
            xs: f(segments * d.max_tokens * d.word_dim)?,
        })
    }
}

/// One operand `x` of a weight-gradient reduction: sample `s`'s vector starts at
/// `base + (s / sub) * outer + (s % sub) * inner`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Operand {
    pub base: Ptr<f32>,
    pub outer: usize,
    pub inner: usize,
    pub sub: usize,
}

impl Operand {
    /// One vector per sample, `stride` floats apart.
    pub fn rows(base: Ptr<f32>, stride: usize) -> Operand {
        Operand {
            base,
            outer: stride,
            inner: 0,
            sub: 1,
        }
    }
}

/// One weight-gradient reduction: for each of `mats` matrices,
/// `dw[mat] (rows x cols) += sum_s dy(s, mat) x(s, mat)^T` with `dy(s, mat)` at
/// `dy + s * dy_outer + mat * dy_mat` and `x` advanced by `x_mat` per matrix; without `x`, a
/// bias (`cols` 1, `x` = 1).
#[derive(Clone, Copy, Debug)]
pub(super) struct WeightGrad {
    pub dw: Ptr<f32>,
    pub dy: Ptr<f32>,
    pub dy_outer: usize,
    pub x: Option<Operand>,
    pub rows: usize,
    pub cols: usize,
    pub mats: usize,
    pub dw_mat: usize,
    pub dy_mat: usize,
    pub x_mat: usize,
}

impl WeightGrad {
    /// The gradient of one `rows x cols` weight matrix.
    pub fn weight(
        dw: Ptr<f32>,
        (dy, dy_outer): (Ptr<f32>, usize),
        x: Operand,
        rows: usize,
        cols: usize,
    ) -> WeightGrad {
        WeightGrad {
            dw,
            dy,
            dy_outer,
            x: Some(x),
            rows,
            cols,
            mats: 1,
            dw_mat: 0,
            dy_mat: 0,
            x_mat: 0,
        }
    }

    /// The gradient of one bias of `rows` elements.
    pub fn bias(dw: Ptr<f32>, (dy, dy_outer): (Ptr<f32>, usize), rows: usize) -> WeightGrad {
        WeightGrad {
            x: None,
            cols: 1,
            ..WeightGrad::weight(dw, (dy, dy_outer), Operand::rows(Ptr::NULL, 0), rows, 1)
        }
    }

    /// `mats` per-module matrices: the gradient, `dy` and `x` advance by `dw_mat`, `dy_mat` and
    /// `x_mat` floats per module.
    pub fn per_module(self, mats: usize, dw_mat: usize, dy_mat: usize, x_mat: usize) -> WeightGrad {
        WeightGrad {
            mats,
            dw_mat,
            dy_mat,
            x_mat,
            ..self
        }
    }
}

impl CudaPolicy {
    fn func(&self, name: &str) -> Result<&Func> {
        self.funcs
            .get(name)
            .ok_or_else(|| bad(format!("kernel entry {name} is not loaded")))
    }

    /// Launch the entry point of the typed argument list `args`.
    pub(super) fn run<A: KernelArgs>(&self, cfg: LaunchCfg, args: A) -> Result<()> {
        exec::launch_typed(&*self.exec, self.func(A::ENTRY.name)?, &cfg, &args)
    }

    /// A per-sample kernel over `n` samples, `spb` per block, `floats` of shared memory each.
    pub(super) fn sample_cfg(n: usize, spb: usize, floats: usize) -> LaunchCfg {
        LaunchCfg::linear(blocks(n, spb), THREADS, (spb * floats * 4) as u32)
    }

    /// One block of [`SMALL_THREADS`] per item (sample or segment), `floats` of shared memory.
    pub(super) fn block_per_item(n: usize, floats: usize, what: &str) -> Result<LaunchCfg> {
        Ok(LaunchCfg::linear(
            u32_of(n, what)?,
            SMALL_THREADS,
            (floats * 4) as u32,
        ))
    }

    /// (group, offset, length) of tensor `kind`.
    fn entry(&self, kind: TensorKind) -> Result<(usize, usize, usize)> {
        let e = self
            .layout
            .entry(kind)
            .ok_or_else(|| bad(format!("the layout has no tensor {kind:?}")))?;
        Ok((group_index(e.group), e.offset, e.len))
    }

    /// (group, offset, length) of the parameter block of `role`.
    fn block_of(&self, role: Role) -> Result<(usize, usize, usize)> {
        let first = self
            .layout
            .entries()
            .iter()
            .find(|e| e.role == role)
            .ok_or_else(|| bad(format!("the layout has no {role:?} block")))?;
        Ok((
            group_index(first.group),
            first.offset,
            self.layout.role_len(role),
        ))
    }

    /// Parameters (`grad` false) or gradients of tensor `kind` from element `off` on.
    pub(super) fn tensor(&self, kind: TensorKind, grad: bool, off: usize) -> Result<Ptr<f32>> {
        let (g, o, len) = self.entry(kind)?;
        let dg = &self.groups[g];
        let b = if grad { &dg.grads } else { &dg.params };
        b.at(o + off, len.saturating_sub(off))
    }

    /// Parameters (`grad` false) or gradients of the block of `role` from element `off` on.
    pub(super) fn block(&self, role: Role, grad: bool, off: usize) -> Result<Ptr<f32>> {
        let (g, o, len) = self.block_of(role)?;
        let dg = &self.groups[g];
        let b = if grad { &dg.grads } else { &dg.params };
        b.at(o + off, len.saturating_sub(off))
    }

    /// The nine RIM tensors' parameters.
    pub(super) fn rim_weights(&self) -> Result<RimWeights> {
        let w_k = self.tensor(TensorKind::RimKey, false, 0)?;
        let comm = |k: TensorKind| {
            if self.ml.cw > 0 {
                self.tensor(k, false, 0)
            } else {
                Ok(w_k)
            }
        };
        Ok(RimWeights {
            w_k,
            w_v: self.tensor(TensorKind::RimValue, false, 0)?,
            w_q: self.tensor(TensorKind::RimQuery, false, 0)?,
            rnn: self.tensor(TensorKind::RimRnn, false, 0)?,
            c_q: comm(TensorKind::CommQuery)?,
            c_k: comm(TensorKind::CommKey)?,
            c_v: comm(TensorKind::CommValue)?,
            c_g: comm(TensorKind::CommGate)?,
            c_o: comm(TensorKind::CommOut)?,
        })
    }

    /// The LSTM memory's four tensors (`w_ih`, `w_hh`, `b_ih`, `b_hh`).
    pub(super) fn lstm_weights(&self) -> Result<[Ptr<f32>; 4]> {
        Ok([
            self.tensor(TensorKind::Lstm(0), false, 0)?,
            self.tensor(TensorKind::Lstm(1), false, 0)?,
            self.tensor(TensorKind::Lstm(2), false, 0)?,
            self.tensor(TensorKind::Lstm(3), false, 0)?,
        ])
    }

    // ---- the forward kernels ---------------------------------------------------------------

    /// The instruction part of the first `n` rows of a memory-input-shaped buffer (the memory
    /// inputs `x`, or their gradients): FiLM's operand, each row's `instr_hidden` columns after
    /// the features, row stride `input`; null without FiLM (the kernels do not read it then).
    pub(super) fn film_instr(&self, rows: &DevBuf<f32>, n: usize) -> Result<Ptr<f32>> {
        let ml = &self.ml;
        if !ml.dims.film {
            return Ok(Ptr::NULL);
        }
        let feat = ml.dims.obs_features();
        rows.at(feat, (n * ml.input).saturating_sub(feat))
    }

    /// The observation encoder over `n` samples: `obs` (147 codes each) into the first
    /// columns of the memory inputs `x`, the caches into `cache`. With FiLM it reads each
    /// sample's instruction embedding from `instr` (row stride `input`: the instruction
    /// columns of `x`, gathered before this runs; see [`CudaPolicy::film_instr`]).
    pub(super) fn encoder_fwd(
        &self,
        obs: Ptr<u8>,
        instr: Ptr<f32>,
        x: Ptr<f32>,
        cache: Ptr<f32>,
        n: usize,
    ) -> Result<()> {
        let args = EncoderFwd {
            p: self.block(Role::Encoder, false, 0)?,
            obs,
            instr,
            instr_ld: self.ml.input,
            x,
            ld: self.ml.input,
            cache,
            samples: n,
        };
        self.run(
            Self::block_per_item(n, self.ml.smem.enc_fwd_smem, "samples")?,
            args,
        )
    }

    /// The instruction encoder over the first `segments` missions of `b.tokens`: the
    /// embeddings into `b.out`, the caches into `b.cache` and `b.xs`.
    pub(super) fn instr_fwd(&self, b: &InstrBufs, segments: usize) -> Result<()> {
        let (ml, d) = (&self.ml, &self.ml.dims);
        let args = InstrFwd {
            p: self.block(Role::Instruction, false, 0)?,
            tokens: b.tokens.at(0, segments * d.max_tokens)?,
            out: b.out.at(0, segments * d.instr_hidden)?,
            cache: b.cache.at(0, segments * ml.instr.instr_cache)?,
            xs: b.xs.at(0, segments * d.max_tokens * d.word_dim)?,
            segments,
        };
        self.run(
            Self::block_per_item(segments, self.ml.smem.instr_fwd_smem, "segments")?,
            args,
        )
    }

    /// Sample `s`'s instruction embedding `instr[idx[s]]` into the last columns of its memory
    /// input `x`, for `n` samples.
    pub(super) fn gather_instr(
        &self,
        x: Ptr<f32>,
        instr: Ptr<f32>,
        idx: Ptr<u32>,
        n: usize,
    ) -> Result<()> {
        let hi = self.ml.dims.instr_hidden;
        let args = GatherRows {
            dst: x,
            dst_ld: self.ml.input,
            col: self.ml.dims.obs_features(),
            src: instr,
            idx,
            width: hi,
            samples: n,
        };
        self.run(linear_cfg(n * hi), args)
    }

    /// One step of the memory (RIM or LSTM) over a batch.
    pub(super) fn memory_fwd(&self, op: MemoryStep) -> Result<()> {
        let ml = &self.ml;
        match ml.dims.memory {
            MemoryKind::Rim => {
                let args = RimFwdStep {
                    w: self.rim_weights()?,
                    x: op.x,
                    h_src: op.h_src,
                    reset: op.reset,
                    state_in: op.state_in,
                    h_out: op.h_out,
                    cache: op.cache,
                    active_bits: op.active_bits,
                    batch: op.batch,
                };
                self.run(
                    Self::sample_cfg(op.batch, ml.smem.spb_rim, ml.smem.rf_smem),
                    args,
                )
            }
            MemoryKind::Lstm => {
                let [w_ih, w_hh, b_ih, b_hh] = self.lstm_weights()?;
                let args = LstmFwdStep {
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                    x: op.x,
                    h_src: op.h_src,
                    reset: op.reset,
                    state_in: op.state_in,
                    state_out: op.h_out,
                    cache: op.cache,
                    batch: op.batch,
                };
                self.run(
                    Self::sample_cfg(op.batch, ml.smem.spb_lstm, ml.smem.lf_smem),
                    args,
                )
            }
        }
    }

    /// Actor and critic on the `n` memory states `h` (`state_len` apart).
    pub(super) fn heads_fwd(
        &self,
        h: Ptr<f32>,
        logits: Ptr<f32>,
        values: Ptr<f32>,
        cache: Ptr<f32>,
        n: usize,
    ) -> Result<()> {
        let ml = &self.ml;
        let args = HeadsFwd {
            p: self.block(Role::Heads, false, 0)?,
            h,
            ld: ml.state_len(),
            logits,
            values,
            cache,
            samples: n,
        };
        self.run(
            Self::sample_cfg(n, ml.smem.spb_heads, ml.smem.hf_smem),
            args,
        )
    }

    // ---- weight gradients ------------------------------------------------------------------

    /// One weight-gradient reduction over `samples` samples (reduce.cu `wgrad`).
    pub(super) fn weight_grad(&self, wg: WeightGrad, samples: usize) -> Result<()> {
        let x = wg.x.unwrap_or(Operand::rows(Ptr::NULL, 0));
        let cfg = LaunchCfg {
            grid: (
                blocks(wg.cols, 16),
                blocks(wg.rows, 16),
                wg.mats.max(1) as u32,
            ),
            block: (16, 16, 1),
            smem: 2 * 16 * 16 * 4,
        };
        let args = Wgrad {
            dw: wg.dw,
            dw_mat: wg.dw_mat,
            dy: wg.dy,
            dy_outer: wg.dy_outer,
            dy_mat: wg.dy_mat,
            x: x.base,
            x_outer: x.outer,
            x_inner: x.inner,
            x_sub: x.sub,
            x_mat: wg.x_mat,
            rows: wg.rows,
            cols: wg.cols,
            samples,
        };
        self.run(cfg, args)
    }
}
