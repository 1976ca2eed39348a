//! The gradient pass over a minibatch of equal-length chunks, in phases: staging and upload of
//! the minibatch, the input encoders, the memory forward over the steps, the heads and the PPO
//! loss, the memory backward through time, the weight-gradient reductions (memory, heads,
//! encoder, instruction encoder) and the statistics.

use std::sync::Arc;

use metarim_core::mission::vocab::VOCAB_SIZE;
use metarim_core::nn::dims::{EncoderKind, MemoryKind};
use metarim_core::nn::loss::PpoCoefs;
use metarim_core::nn::params::{Role, TensorKind};

use super::launch::{InstrBufs, MemoryStep, Operand, WeightGrad};
use super::{bad, linear_cfg, pack_tokens, push_obs, CudaPolicy, PassChunk};
use crate::args::{
    CountActive, EncoderBwd, EncoderWgrad, InstrBwd, InstrDsum, InstrEmbGrad, LstmBwdStep,
    MemoryBwd, PpoHeadsBwd, RimBwdStep, SumTerms,
};
use crate::exec::{DevBuf, Exec, LaunchCfg, Ptr};
use crate::layout::{ModelLayout, N_TERMS};
use crate::Result;

/// Minibatch buffers (grown on demand).
#[derive(Debug)]
pub(super) struct Work {
    s_cap: usize,
    b_cap: usize,
    obs: DevBuf<u8>,
    reset: DevBuf<u8>,
    action: DevBuf<i32>,
    old_lp: DevBuf<f32>,
    old_v: DevBuf<f32>,
    adv: DevBuf<f32>,
    ret: DevBuf<f32>,
    x: DevBuf<f32>,
    enc_cache: DevBuf<f32>,
    enc_delta: DevBuf<f32>,
    instr: InstrBufs,
    seg_of: DevBuf<u32>,
    seg_chunk: DevBuf<u32>,
    seg_t0: DevBuf<u32>,
    seg_t1: DevBuf<u32>,
    instr_delta: DevBuf<f32>,
    d_instr: DevBuf<f32>,
    states: DevBuf<f32>,
    state_in: DevBuf<f32>,
    mem_cache: DevBuf<f32>,
    mem_delta: DevBuf<f32>,
    logits: DevBuf<f32>,
    values: DevBuf<f32>,
    heads_cache: DevBuf<f32>,
    dh: DevBuf<f32>,
    terms: DevBuf<f32>,
    heads_delta: DevBuf<f32>,
    carry: DevBuf<f32>,
    dx: DevBuf<f32>,
}

/// Host staging of a minibatch (reused).
#[derive(Debug, Default)]
pub(super) struct Staging {
    obs: Vec<u8>,
    reset: Vec<u8>,
    action: Vec<i32>,
    old_lp: Vec<f32>,
    old_v: Vec<f32>,
    adv: Vec<f32>,
    ret: Vec<f32>,
    init: Vec<f32>,
    seg_tokens: Vec<u16>,
    seg_of: Vec<u32>,
    seg_chunk: Vec<u32>,
    seg_t0: Vec<u32>,
    seg_t1: Vec<u32>,
}

impl Staging {
    /// Empty every vector, keeping its allocation (the staging is reused pass after pass).
    fn clear(&mut self) {
        let Staging {
            obs,
            reset,
            action,
            old_lp,
            old_v,
            adv,
            ret,
            init,
            seg_tokens,
            seg_of,
            seg_chunk,
            seg_t0,
            seg_t1,
        } = self;
        // Naming every field above makes a new one a compile error until it is cleared here.
        obs.clear();
        reset.clear();
        action.clear();
        old_lp.clear();
        old_v.clear();
        adv.clear();
        ret.clear();
        init.clear();
        seg_tokens.clear();
        seg_of.clear();
        seg_chunk.clear();
        seg_t0.clear();
        seg_t1.clear();
    }
}

/// The shape of a staged minibatch: `t_len` steps of `b` chunks (`s = t_len * b` samples, step
/// major), and `g` instruction segments.
#[derive(Clone, Copy, Debug)]
struct Shape {
    t_len: usize,
    b: usize,
    s: usize,
    g: usize,
}

impl Work {
    fn new(exec: &Arc<dyn Exec>, ml: &ModelLayout, s: usize, b: usize) -> Result<Work> {
        let d = &ml.dims;
        let sl = ml.state_len();
        let (mc, md) = match d.memory {
            MemoryKind::Rim => (ml.rim.rim_cache, ml.rim.rim_delta),
            MemoryKind::Lstm => (ml.lstm.lstm_cache, ml.lstm.lstm_delta),
        };
        let mt = d.max_tokens;
        let g = s; // at most one segment per step
        let f = |n: usize| DevBuf::<f32>::zeros(exec, n);
        Ok(Work {
            s_cap: s,
            b_cap: b,
            obs: DevBuf::zeros(exec, s * 147)?,
            reset: DevBuf::zeros(exec, s)?,
            action: DevBuf::zeros(exec, s)?,
            old_lp: f(s)?,
            old_v: f(s)?,
            adv: f(s)?,
            ret: f(s)?,
            x: f(s * ml.input)?,
            enc_cache: f(s * ml.enc.enc_cache)?,
            enc_delta: f(s * ml.enc.enc_delta)?,
            instr: InstrBufs::new(exec, ml, g)?,
            seg_of: DevBuf::zeros(exec, s)?,
            seg_chunk: DevBuf::zeros(exec, g)?,
            seg_t0: DevBuf::zeros(exec, g)?,
            seg_t1: DevBuf::zeros(exec, g)?,
            instr_delta: f(g * mt * ml.instr.instr_delta)?,
            d_instr: f(g * d.instr_hidden)?,
            states: f((s + b) * sl)?,
            state_in: f(s * sl)?,
            mem_cache: f(s * mc)?,
            mem_delta: f(s * md)?,
            logits: f(s * d.n_actions)?,
            values: f(s)?,
            heads_cache: f(s * ml.heads.heads_cache)?,
            dh: f(s * ml.mw)?,
            terms: f(s * N_TERMS)?,
            heads_delta: f(s * ml.heads.heads_delta)?,
            carry: f(b * sl)?,
            dx: f(s * ml.input)?,
        })
    }
}

impl CudaPolicy {
    // ---- staging ---------------------------------------------------------------------------

    /// Validate the chunks, stage the minibatch on the host (step major) and upload it into
    /// the work buffers (grown when needed).
    fn stage(&mut self, chunks: &[PassChunk<'_, '_>]) -> Result<Shape> {
        let b = chunks.len();
        if b == 0 {
            return Err(bad("a gradient pass needs at least one chunk"));
        }
        let t_len = chunks[0].steps.len();
        if t_len == 0 || chunks.iter().any(|c| c.steps.len() != t_len) {
            return Err(bad(
                "the chunks of a gradient pass must be non-empty and of equal length",
            ));
        }
        self.staging.clear();
        self.stage_steps(chunks, t_len)?;
        self.stage_segments(chunks, t_len)?;
        let s = t_len * b;
        let shape = Shape {
            t_len,
            b,
            s,
            g: self.staging.seg_chunk.len(),
        };
        let need_new = match &self.work {
            Some(w) => w.s_cap < s || w.b_cap < b,
            None => true,
        };
        if need_new {
            self.work = None;
            self.work = Some(Work::new(&self.exec, &self.ml, s, b)?);
        }
        self.upload_staged()?;
        Ok(shape)
    }

    /// The chunks' initial states and every step's observation, episode start and PPO sample
    /// into the staging vectors (emptied by `stage`), step major; checks state lengths, cell
    /// codes and actions.
    fn stage_steps(&mut self, chunks: &[PassChunk<'_, '_>], t_len: usize) -> Result<()> {
        let d = *self.layout.dims();
        let sl = self.ml.state_len();
        let bow = d.encoder == EncoderKind::Bow;
        let st = &mut self.staging;
        for c in chunks {
            if c.init_state.len() != sl {
                return Err(bad(format!(
                    "a chunk's initial state has {} values, the model's state has {sl}",
                    c.init_state.len()
                )));
            }
            st.init.extend_from_slice(c.init_state);
        }
        for t in 0..t_len {
            for c in chunks {
                let step = &c.steps[t];
                push_obs(step.obs, bow, &mut st.obs)?;
                st.reset.push(u8::from(step.episode_start));
                let a = step.sample.action;
                if a >= d.n_actions {
                    return Err(bad(format!(
                        "action {a} is not below the number of actions {}",
                        d.n_actions
                    )));
                }
                st.action.push(a as i32);
                st.old_lp.push(step.sample.old_logprob);
                st.old_v.push(step.sample.old_value);
                st.adv.push(step.sample.advantage);
                st.ret.push(step.sample.ret);
            }
        }
        Ok(())
    }

    /// The instruction segments: a chunk's first step and every episode start begin one (its
    /// packed tokens, chunk and step range); each sample's segment. The staging vectors are
    /// emptied by `stage`.
    fn stage_segments(&mut self, chunks: &[PassChunk<'_, '_>], t_len: usize) -> Result<()> {
        let max_tokens = self.layout.dims().max_tokens;
        let b = chunks.len();
        let st = &mut self.staging;
        st.seg_of.resize(t_len * b, 0);
        for (ci, c) in chunks.iter().enumerate() {
            for (t, step) in c.steps.iter().enumerate() {
                if t == 0 || step.episode_start {
                    if let Some(last) = st.seg_t1.last_mut() {
                        if t > 0 {
                            *last = (t - 1) as u32;
                        }
                    }
                    pack_tokens(step.tokens, max_tokens, &mut st.seg_tokens)?;
                    st.seg_chunk.push(ci as u32);
                    st.seg_t0.push(t as u32);
                    st.seg_t1.push((t_len - 1) as u32);
                }
                st.seg_of[t * b + ci] = (st.seg_chunk.len() - 1) as u32;
            }
        }
        Ok(())
    }

    /// The staged minibatch into the work buffers (synchronous copies).
    fn upload_staged(&self) -> Result<()> {
        let w = self.work()?;
        let st = &self.staging;
        w.obs.upload_at(0, &st.obs)?;
        w.reset.upload_at(0, &st.reset)?;
        w.action.upload_at(0, &st.action)?;
        w.old_lp.upload_at(0, &st.old_lp)?;
        w.old_v.upload_at(0, &st.old_v)?;
        w.adv.upload_at(0, &st.adv)?;
        w.ret.upload_at(0, &st.ret)?;
        w.states.upload_at(0, &st.init)?;
        w.instr.tokens.upload_at(0, &st.seg_tokens)?;
        w.seg_of.upload_at(0, &st.seg_of)?;
        w.seg_chunk.upload_at(0, &st.seg_chunk)?;
        w.seg_t0.upload_at(0, &st.seg_t0)?;
        w.seg_t1.upload_at(0, &st.seg_t1)?;
        Ok(())
    }

    fn work(&self) -> Result<&Work> {
        self.work.as_ref().ok_or_else(|| bad("no work buffers"))
    }

    /// The step cache and delta widths of the memory.
    fn memory_widths(&self) -> (usize, usize) {
        let ml = &self.ml;
        match ml.dims.memory {
            MemoryKind::Rim => (ml.rim.rim_cache, ml.rim.rim_delta),
            MemoryKind::Lstm => (ml.lstm.lstm_cache, ml.lstm.lstm_delta),
        }
    }

    // ---- the pass --------------------------------------------------------------------------

    /// Forward over the chunks of a minibatch and backward through time of the summed PPO
    /// loss (each step's times `scale`), exactly as `Policy::chunk_backward` for every chunk
    /// with `CommGrad::Blocked`; the gradients (zeroed first) end in the device gradient
    /// buffers, the loss terms and the modules' activity in the device statistics. All chunks
    /// must have the same length.
    pub fn grad_pass(
        &mut self,
        chunks: &[PassChunk<'_, '_>],
        coefs: &PpoCoefs<f32>,
        scale: f32,
    ) -> Result<()> {
        let sh = self.stage(chunks)?;
        for dg in &self.groups {
            dg.grads.fill_zero()?;
        }
        self.counts.fill_zero()?;
        let w = self.work()?;
        self.pass_inputs(w, sh)?;
        self.pass_memory_fwd(w, sh)?;
        self.pass_heads(w, sh, coefs, scale)?;
        self.pass_memory_bwd(w, sh)?;
        match self.ml.dims.memory {
            MemoryKind::Rim => self.pass_rim_wgrads(w, sh)?,
            MemoryKind::Lstm => self.pass_lstm_wgrads(w, sh)?,
        }
        self.pass_heads_wgrads(w, sh)?;
        self.pass_encoder_bwd(w, sh)?;
        self.pass_instr_bwd(w, sh)?;
        self.pass_stats(w, sh)?;
        self.frames += sh.s;
        Ok(())
    }

    /// The instruction encoder over every segment, each sample's instruction embedding into
    /// its memory input, then the encoder over every step (after the gather: with FiLM it
    /// reads the embeddings there).
    fn pass_inputs(&self, w: &Work, sh: Shape) -> Result<()> {
        let ml = &self.ml;
        let (s, g) = (sh.s, sh.g);
        let hi = ml.dims.instr_hidden;
        self.instr_fwd(&w.instr, g)?;
        self.gather_instr(
            w.x.at(0, s * ml.input)?,
            w.instr.out.at(0, g * hi)?,
            w.seg_of.at(0, s)?,
            s,
        )?;
        self.encoder_fwd(
            w.obs.at(0, s * 147)?,
            self.film_instr(&w.x, s)?,
            w.x.at(0, s * ml.input)?,
            w.enc_cache.at(0, s * ml.enc.enc_cache)?,
            s,
        )
    }

    /// The memory, step by step: states `t` to `t + 1`, the states read and step caches kept.
    fn pass_memory_fwd(&self, w: &Work, sh: Shape) -> Result<()> {
        let (b, input, sl) = (sh.b, self.ml.input, self.ml.state_len());
        let (mc, _) = self.memory_widths();
        for t in 0..sh.t_len {
            self.memory_fwd(MemoryStep {
                x: w.x.at(t * b * input, b * input)?,
                h_src: w.states.at(t * b * sl, b * sl)?,
                reset: w.reset.at(t * b, b)?,
                state_in: w.state_in.at(t * b * sl, b * sl)?,
                h_out: w.states.at((t + 1) * b * sl, b * sl)?,
                cache: w.mem_cache.at(t * b * mc, b * mc)?,
                active_bits: Ptr::NULL,
                batch: b,
            })?;
        }
        Ok(())
    }

    /// The heads over every step, then the PPO loss terms and their gradient through the heads
    /// (the gradient into the memory states in `dh`).
    fn pass_heads(&self, w: &Work, sh: Shape, coefs: &PpoCoefs<f32>, scale: f32) -> Result<()> {
        let ml = &self.ml;
        let (s, sl, na) = (sh.s, ml.state_len(), ml.dims.n_actions);
        self.heads_fwd(
            w.states.at(sh.b * sl, s * sl)?,
            w.logits.at(0, s * na)?,
            w.values.at(0, s)?,
            w.heads_cache.at(0, s * ml.heads.heads_cache)?,
            s,
        )?;
        let args = PpoHeadsBwd {
            p: self.block(Role::Heads, false, 0)?,
            cache: w.heads_cache.at(0, s * ml.heads.heads_cache)?,
            logits: w.logits.at(0, s * na)?,
            values: w.values.at(0, s)?,
            action: w.action.at(0, s)?,
            old_logprob: w.old_lp.at(0, s)?,
            old_value: w.old_v.at(0, s)?,
            advantage: w.adv.at(0, s)?,
            ret: w.ret.at(0, s)?,
            clip_eps: coefs.clip_eps,
            value_coef: coefs.value_coef,
            entropy_coef: coefs.entropy_coef,
            clip_value: u32::from(coefs.clip_value),
            scale,
            dh: w.dh.at(0, s * ml.mw)?,
            terms: w.terms.at(0, s * N_TERMS)?,
            delta: w.heads_delta.at(0, s * ml.heads.heads_delta)?,
            samples: s,
        };
        self.run(
            Self::sample_cfg(s, ml.smem.spb_heads, ml.smem.hb_smem),
            args,
        )
    }

    /// Backward through time over the steps, last first: the state gradient carried in
    /// `carry`, the input gradients into `dx`, every weight's deltas into `mem_delta`.
    fn pass_memory_bwd(&self, w: &Work, sh: Shape) -> Result<()> {
        let ml = &self.ml;
        let (b, sl) = (sh.b, ml.state_len());
        let (mc, md) = self.memory_widths();
        w.carry.zero_range(0, b * sl)?;
        for t in (0..sh.t_len).rev() {
            let carry = w.carry.at(0, b * sl)?;
            let step = MemoryBwd {
                state_in: w.state_in.at(t * b * sl, b * sl)?,
                cache: w.mem_cache.at(t * b * mc, b * mc)?,
                dh_loss: w.dh.at(t * b * ml.mw, b * ml.mw)?,
                carry,
                reset: w.reset.at(t * b, b)?,
                carry_out: carry,
                dx: w.dx.at(t * b * ml.input, b * ml.input)?,
                delta: w.mem_delta.at(t * b * md, b * md)?,
                batch: b,
            };
            match ml.dims.memory {
                MemoryKind::Rim => {
                    let args = RimBwdStep {
                        w: self.rim_weights()?,
                        step,
                    };
                    self.run(Self::sample_cfg(b, ml.smem.spb_rim, ml.smem.rb_smem), args)?;
                }
                MemoryKind::Lstm => {
                    let [w_ih, w_hh, _, _] = self.lstm_weights()?;
                    let args = LstmBwdStep { w_ih, w_hh, step };
                    self.run(Self::sample_cfg(b, ml.smem.spb_lstm, ml.smem.lb_smem), args)?;
                }
            }
        }
        Ok(())
    }

    /// The RIM's weight gradients from the deltas: input keys/values, queries and module cells
    /// (GRU or LSTM) per module, and (with communication) the communication attention per
    /// module.
    fn pass_rim_wgrads(&self, w: &Work, sh: Shape) -> Result<()> {
        let ml = &self.ml;
        let (mc, md) = self.memory_widths();
        let (n, h, qw, uw, cw, rgh, rl) = (
            ml.n,
            ml.hid,
            ml.qw,
            ml.uw,
            ml.cw,
            ml.rim.rgh,
            ml.rim.rnn_len,
        );
        // One gradient per tensor region: `weight(tensor, offset in it, delta offset, input,
        // rows, cols)` is `d(rows x cols) += delta^T x`; `bias` sums the delta.
        let weight = |k, off, delta, x, rows, cols| -> Result<WeightGrad> {
            let (dw, dy) = (self.tensor(k, true, off)?, (w.mem_delta.rest(delta)?, md));
            Ok(WeightGrad::weight(dw, dy, x, rows, cols))
        };
        let bias = |off, delta| -> Result<WeightGrad> {
            let dw = self.tensor(TensorKind::RimRnn, true, off)?;
            let dy = (w.mem_delta.rest(delta)?, md);
            Ok(WeightGrad::bias(dw, dy, rgh).per_module(n, rl, rgh, 0))
        };
        let x_in = Operand::rows(w.x.rest(0)?, ml.input);
        let st_in = Operand::rows(w.state_in.rest(0)?, ml.state_len());
        let cache_at =
            |off: usize| -> Result<Operand> { Ok(Operand::rows(w.mem_cache.rest(off)?, mc)) };
        let (r, u) = (&ml.rim, cache_at(ml.rim.rc_u)?);
        let mut grads = vec![
            weight(TensorKind::RimKey, 0, r.rd_dkx, x_in, qw, ml.input)?,
            weight(TensorKind::RimValue, 0, r.rd_dvx, x_in, uw, ml.input)?,
            weight(TensorKind::RimQuery, 0, r.rd_dq, st_in, qw, h)?.per_module(n, qw * h, qw, h),
            weight(TensorKind::RimRnn, 0, r.rd_gi, u, rgh, uw)?.per_module(n, rl, rgh, uw),
            weight(TensorKind::RimRnn, r.rnn_w_hh, r.rd_gh, st_in, rgh, h)?
                .per_module(n, rl, rgh, h),
            bias(r.rnn_b_ih, r.rd_gi)?,
            bias(r.rnn_b_hh, r.rd_gh)?,
        ];
        if cw > 0 {
            for (k, off) in [
                (TensorKind::CommQuery, r.rd_dcq),
                (TensorKind::CommKey, r.rd_dck),
                (TensorKind::CommValue, r.rd_dcv),
            ] {
                let ht = cache_at(r.rc_ht)?;
                grads.push(weight(k, 0, off, ht, cw, h)?.per_module(n, cw * h, cw, h));
            }
            for (k, off) in [
                (TensorKind::CommGate, r.rd_dpg),
                (TensorKind::CommOut, r.rd_dpo),
            ] {
                let o = cache_at(r.rc_o)?;
                grads.push(weight(k, 0, off, o, h, cw)?.per_module(n, h * cw, h, cw));
            }
        }
        for wg in grads {
            self.weight_grad(wg, sh.s)?;
        }
        Ok(())
    }

    /// The LSTM memory's weight gradients from the gate deltas.
    fn pass_lstm_wgrads(&self, w: &Work, sh: Shape) -> Result<()> {
        let ml = &self.ml;
        let (_, md) = self.memory_widths();
        let gt = |i: u8| self.tensor(TensorKind::Lstm(i), true, 0);
        let dy = (w.mem_delta.rest(0)?, md);
        let r4 = 4 * ml.mw;
        let x_in = Operand::rows(w.x.rest(0)?, ml.input);
        let st_in = Operand::rows(w.state_in.rest(0)?, ml.state_len());
        for wg in [
            WeightGrad::weight(gt(0)?, dy, x_in, r4, ml.input),
            WeightGrad::weight(gt(1)?, dy, st_in, r4, ml.mw),
            WeightGrad::bias(gt(2)?, dy, r4),
            WeightGrad::bias(gt(3)?, dy, r4),
        ] {
            self.weight_grad(wg, sh.s)?;
        }
        Ok(())
    }

    /// The heads' weight gradients (actor, then critic) from their deltas.
    fn pass_heads_wgrads(&self, w: &Work, sh: Shape) -> Result<()> {
        let ml = &self.ml;
        let (hh, na, mw) = (ml.dims.head_hidden, ml.dims.n_actions, ml.mw);
        let hg = |off: usize| self.block(Role::Heads, true, off);
        let hd = |off: usize| -> Result<(Ptr<f32>, usize)> {
            Ok((w.heads_delta.rest(off)?, ml.heads.heads_delta))
        };
        let h_x = Operand::rows(w.states.rest(sh.b * ml.state_len())?, ml.state_len());
        let hc = |off: usize| -> Result<Operand> {
            Ok(Operand::rows(
                w.heads_cache.rest(off)?,
                ml.heads.heads_cache,
            ))
        };
        for wg in [
            WeightGrad::weight(hg(0)?, hd(ml.heads.hd_da)?, h_x, hh, mw),
            WeightGrad::bias(hg(ml.heads.hp_a_b1)?, hd(ml.heads.hd_da)?, hh),
            WeightGrad::weight(hg(ml.heads.hp_a_w2)?, hd(0)?, hc(0)?, na, hh),
            WeightGrad::bias(hg(ml.heads.hp_a_b2)?, hd(0)?, na),
            WeightGrad::weight(hg(ml.heads.hp_c_w1)?, hd(ml.heads.hd_dc)?, h_x, hh, mw),
            WeightGrad::bias(hg(ml.heads.hp_c_b1)?, hd(ml.heads.hd_dc)?, hh),
            WeightGrad::weight(hg(ml.heads.hp_c_w2)?, hd(ml.heads.hd_dv)?, hc(hh)?, 1, hh),
            WeightGrad::bias(hg(ml.heads.hp_c_b2)?, hd(ml.heads.hd_dv)?, 1),
        ] {
            self.weight_grad(wg, sh.s)?;
        }
        Ok(())
    }

    /// The encoder backward from the input gradients `dx`: per-sample deltas (with FiLM also
    /// dL/de added into `dx`'s instruction columns, which the instruction backward then sums per
    /// segment: it must run after this), then its weight gradients over all samples.
    fn pass_encoder_bwd(&self, w: &Work, sh: Shape) -> Result<()> {
        let ml = &self.ml;
        let s = sh.s;
        let args = EncoderBwd {
            p: self.block(Role::Encoder, false, 0)?,
            obs: w.obs.at(0, s * 147)?,
            cache: w.enc_cache.at(0, s * ml.enc.enc_cache)?,
            d_out: w.dx.at(0, s * ml.input)?,
            ld: ml.input,
            d_instr: self.film_instr(&w.dx, s)?,
            instr_ld: ml.input,
            delta: w.enc_delta.at(0, s * ml.enc.enc_delta)?,
            samples: s,
        };
        self.run(
            Self::block_per_item(s, ml.smem.enc_bwd_smem, "samples")?,
            args,
        )?;
        let args = EncoderWgrad {
            p: self.block(Role::Encoder, false, 0)?,
            obs: w.obs.at(0, s * 147)?,
            cache: w.enc_cache.at(0, s * ml.enc.enc_cache)?,
            delta: w.enc_delta.at(0, s * ml.enc.enc_delta)?,
            instr: self.film_instr(&w.x, s)?,
            instr_ld: ml.input,
            grads: self.block(Role::Encoder, true, 0)?,
            samples: s,
        };
        self.run(linear_cfg(ml.enc.enc_params), args)
    }

    /// The instruction encoder backward: the per-segment sums of the instruction gradient,
    /// BPTT over the tokens, then the GRU's weight and the embedding's row gradients.
    fn pass_instr_bwd(&self, w: &Work, sh: Shape) -> Result<()> {
        let (ml, d) = (&self.ml, &self.ml.dims);
        let (s, g) = (sh.s, sh.g);
        let (hi, wd, mt) = (d.instr_hidden, d.word_dim, d.max_tokens);
        let args = InstrDsum {
            dx: w.dx.at(0, s * ml.input)?,
            ld: ml.input,
            col: d.obs_features(),
            seg_chunk: w.seg_chunk.at(0, g)?,
            seg_t0: w.seg_t0.at(0, g)?,
            seg_t1: w.seg_t1.at(0, g)?,
            chunks: sh.b,
            d_instr: w.d_instr.at(0, g * hi)?,
            segments: g,
        };
        self.run(linear_cfg(g * hi), args)?;
        let args = InstrBwd {
            p: self.block(Role::Instruction, false, 0)?,
            tokens: w.instr.tokens.at(0, g * mt)?,
            cache: w.instr.cache.at(0, g * ml.instr.instr_cache)?,
            d_out: w.d_instr.at(0, g * hi)?,
            delta: w.instr_delta.at(0, g * mt * ml.instr.instr_delta)?,
            segments: g,
        };
        self.run(
            Self::block_per_item(g, ml.smem.instr_bwd_smem, "segments")?,
            args,
        )?;
        let ig = |off: usize| self.block(Role::Instruction, true, off);
        let ids = |off: usize| -> Result<(Ptr<f32>, usize)> {
            Ok((w.instr_delta.rest(off)?, ml.instr.instr_delta))
        };
        let xs = Operand::rows(w.instr.xs.rest(0)?, wd);
        // The hidden state before each token: segments x token slots.
        let hs = Operand {
            base: w.instr.cache.rest(0)?,
            outer: ml.instr.instr_cache,
            inner: hi,
            sub: mt,
        };
        for wg in [
            WeightGrad::weight(ig(ml.instr.ip_w_ih)?, ids(0)?, xs, ml.instr.ig3, wd),
            WeightGrad::bias(ig(ml.instr.ip_b_ih)?, ids(0)?, ml.instr.ig3),
            WeightGrad::weight(
                ig(ml.instr.ip_w_hh)?,
                ids(ml.instr.id_gh)?,
                hs,
                ml.instr.ig3,
                hi,
            ),
            WeightGrad::bias(ig(ml.instr.ip_b_hh)?, ids(ml.instr.id_gh)?, ml.instr.ig3),
        ] {
            self.weight_grad(wg, g * mt)?;
        }
        let args = InstrEmbGrad {
            tokens: w.instr.tokens.at(0, g * mt)?,
            delta: w.instr_delta.at(0, g * mt * ml.instr.instr_delta)?,
            grads: ig(0)?,
            segments: g,
        };
        self.run(linear_cfg(VOCAB_SIZE * wd), args)
    }

    /// The loss terms summed into the statistics, and (RIM) each module's activity counted.
    fn pass_stats(&self, w: &Work, sh: Shape) -> Result<()> {
        let s = sh.s;
        let args = SumTerms {
            terms: w.terms.at(0, s * N_TERMS)?,
            acc: self.terms_acc.ptr(),
            samples: s,
        };
        self.run(LaunchCfg::linear(1, 32, 0), args)?;
        if self.ml.dims.memory == MemoryKind::Rim {
            let (mc, _) = self.memory_widths();
            let args = CountActive {
                cache: w.mem_cache.at(0, s * mc)?,
                stride: mc,
                counts: self.counts.ptr(),
                samples: s,
            };
            self.run(LaunchCfg::linear(1, 32, 0), args)?;
        }
        Ok(())
    }
}
