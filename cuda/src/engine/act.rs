//! The acting path: per-environment instruction embeddings and memory states on the device, and
//! batched acting steps in two slots ([`CudaPolicy::act_submit`] / [`CudaPolicy::act_finish`]),
//! each submitted in phases: checks and host staging, the missions encoded at episode starts,
//! the forward pass (instruction embeddings gathered, encoder, memory step, heads), the outputs'
//! copies queued.

use std::sync::Arc;

use metarim_core::nn::dims::{EncoderKind, MemoryKind};

use super::launch::{InstrBufs, MemoryStep};
use super::{bad, linear_cfg, pack_tokens, push_obs, u32_of, ActInput, ActOut, CudaPolicy};
use crate::args::ScatterRows;
use crate::exec::{DevBuf, Exec, Ptr, Ticket};
use crate::layout::ModelLayout;
use crate::Result;

/// One acting slot's buffers.
#[derive(Debug)]
struct ActSlot {
    n: usize,
    obs: DevBuf<u8>,
    reset: DevBuf<u8>,
    x: DevBuf<f32>,
    enc_cache: DevBuf<f32>,
    mem_cache: DevBuf<f32>,
    state_read: DevBuf<f32>,
    state_tmp: DevBuf<f32>,
    logits: DevBuf<f32>,
    values: DevBuf<f32>,
    heads_cache: DevBuf<f32>,
    active: DevBuf<u32>,
    /// The missions encoded this step (their embeddings scattered into [`Actor`]'s store).
    instr: InstrBufs,
    seg_idx: DevBuf<u32>,
    /// The queued copies of the outputs (logits, values, active, state read) of the step in
    /// flight.
    pending: Option<[Ticket; 4]>,
}

/// Per-environment state of the acting path.
#[derive(Debug)]
pub(super) struct Actor {
    n_envs: usize,
    instr: DevBuf<f32>,
    state: DevBuf<f32>,
    iota: DevBuf<u32>,
    slots: [ActSlot; 2],
}

impl ActSlot {
    fn new(exec: &Arc<dyn Exec>, ml: &ModelLayout, n: usize) -> Result<ActSlot> {
        let d = &ml.dims;
        let sl = ml.state_len();
        let mc = match d.memory {
            MemoryKind::Rim => ml.rim.rim_cache,
            MemoryKind::Lstm => ml.lstm.lstm_cache,
        };
        let f = |k: usize| DevBuf::<f32>::zeros(exec, k);
        Ok(ActSlot {
            n,
            obs: DevBuf::zeros(exec, n * 147)?,
            reset: DevBuf::zeros(exec, n)?,
            x: f(n * ml.input)?,
            enc_cache: f(n * ml.enc.enc_cache)?,
            mem_cache: f(n * mc)?,
            state_read: f(n * sl)?,
            state_tmp: f(n * sl)?,
            logits: f(n * d.n_actions)?,
            values: f(n)?,
            heads_cache: f(n * ml.heads.heads_cache)?,
            active: DevBuf::zeros(exec, n)?,
            instr: InstrBufs::new(exec, ml, n)?,
            seg_idx: DevBuf::zeros(exec, n)?,
            pending: None,
        })
    }
}

/// One acting step staged on the host.
#[derive(Debug, Default)]
struct ActHost {
    /// Observations, 147 codes each.
    obs: Vec<u8>,
    /// Episode starts.
    reset: Vec<u8>,
    /// Packed tokens of the missions to encode, `max_tokens` each.
    tokens: Vec<u16>,
    /// The environment of each mission to encode.
    envs: Vec<u32>,
}

impl CudaPolicy {
    // ---- acting ----------------------------------------------------------------------------

    /// Prepare acting for `n_envs` environments (memory states zero).
    pub fn actor_init(&mut self, n_envs: usize) -> Result<()> {
        if n_envs == 0 {
            return Err(bad("acting needs at least one environment"));
        }
        let iota: Vec<u32> = (0..u32_of(n_envs, "environments")?).collect();
        let d = self.layout.dims();
        self.actor = None;
        self.actor = Some(Actor {
            n_envs,
            instr: DevBuf::zeros(&self.exec, n_envs * d.instr_hidden)?,
            state: DevBuf::zeros(&self.exec, n_envs * self.ml.state_len())?,
            iota: DevBuf::from_host(&self.exec, &iota)?,
            slots: [
                ActSlot::new(&self.exec, &self.ml, n_envs)?,
                ActSlot::new(&self.exec, &self.ml, n_envs)?,
            ],
        });
        Ok(())
    }

    fn actor(&self) -> Result<&Actor> {
        self.actor
            .as_ref()
            .ok_or_else(|| bad("actor_init was not called"))
    }

    /// Overwrite the memory states of environments `first..` with `states` (`state_len` each).
    pub fn set_states(&mut self, first: usize, states: &[f32]) -> Result<()> {
        let sl = self.ml.state_len();
        if !states.len().is_multiple_of(sl) {
            return Err(bad("states must be whole states"));
        }
        self.actor()?.state.upload_at(first * sl, states)
    }

    /// Every environment's memory state.
    pub fn states(&self) -> Result<Vec<f32>> {
        self.actor()?.state.download()
    }

    /// Queue one acting step for environments `first..first + inp.obs.len()` in `slot` (0 or
    /// 1); [`CudaPolicy::act_finish`] returns its outputs. Between the two the host may step
    /// other environments while the device works.
    pub fn act_submit(&mut self, slot: usize, first: usize, inp: &ActInput<'_>) -> Result<()> {
        let n = self.check_act(slot, first, inp)?;
        let host = self.stage_act(first, inp)?;
        self.act_encode_missions(slot, &host)?;
        self.act_forward(slot, first, n, inp.commit, &host)?;
        let tickets = self.act_queue_outputs(slot, n)?;
        if let Some(a) = self.actor.as_mut() {
            a.slots[slot].pending = Some(tickets);
            a.slots[slot].n = n;
        }
        Ok(())
    }

    /// The number of environments of an acting step, after checking the slot, the range of
    /// environments and the input lengths.
    fn check_act(&self, slot: usize, first: usize, inp: &ActInput<'_>) -> Result<usize> {
        let n = inp.obs.len();
        let a = self.actor()?;
        if slot > 1 {
            return Err(bad("acting slots are 0 and 1"));
        }
        if n == 0 || first + n > a.n_envs {
            return Err(bad(format!(
                "environments {first}..{} outside 0..{}",
                first + n,
                a.n_envs
            )));
        }
        if inp.tokens.len() != n || inp.encode.len() != n || inp.reset.len() != n {
            return Err(bad(
                "tokens, encode and reset need one entry per environment",
            ));
        }
        if a.slots[slot].pending.is_some() {
            return Err(bad(format!(
                "acting slot {slot} already has a step in flight"
            )));
        }
        Ok(n)
    }

    /// The step's observations, episode starts and the missions to encode, on the host
    /// (checking cell codes and token ids).
    fn stage_act(&self, first: usize, inp: &ActInput<'_>) -> Result<ActHost> {
        let d = self.layout.dims();
        let bow = d.encoder == EncoderKind::Bow;
        let mut host = ActHost {
            obs: Vec::with_capacity(inp.obs.len() * 147),
            ..ActHost::default()
        };
        for o in inp.obs {
            push_obs(o, bow, &mut host.obs)?;
        }
        for (i, (tk, enc)) in inp.tokens.iter().zip(inp.encode).enumerate() {
            if *enc {
                pack_tokens(tk, d.max_tokens, &mut host.tokens)?;
                host.envs.push(u32_of(first + i, "environment")?);
            }
        }
        host.reset = inp.reset.iter().map(|r| u8::from(*r)).collect();
        Ok(host)
    }

    /// The missions to encode into their environments' instruction embeddings.
    fn act_encode_missions(&self, slot: usize, host: &ActHost) -> Result<()> {
        let k = host.envs.len();
        if k == 0 {
            return Ok(());
        }
        let hi = self.ml.dims.instr_hidden;
        let a = self.actor()?;
        let sb = &a.slots[slot];
        sb.instr.tokens.upload_async_at(0, &host.tokens)?;
        sb.seg_idx.upload_async_at(0, &host.envs)?;
        self.instr_fwd(&sb.instr, k)?;
        let args = ScatterRows {
            dst: a.instr.ptr(),
            src: sb.instr.out.at(0, k * hi)?,
            idx: sb.seg_idx.at(0, k)?,
            width: hi,
            samples: k,
        };
        self.run(linear_cfg(k * hi), args)
    }

    /// The forward pass of environments `first..first + n`: instruction embeddings gathered,
    /// encoder (FiLM reads the embeddings), one memory step (the new states kept when
    /// `commit`, else into the slot's scratch), the heads on the new states.
    fn act_forward(
        &self,
        slot: usize,
        first: usize,
        n: usize,
        commit: bool,
        host: &ActHost,
    ) -> Result<()> {
        let ml = &self.ml;
        let (sl, hi) = (ml.state_len(), ml.dims.instr_hidden);
        let a = self.actor()?;
        let sb = &a.slots[slot];
        sb.obs.upload_async_at(0, &host.obs)?;
        sb.reset.upload_async_at(0, &host.reset)?;
        let x = sb.x.at(0, n * ml.input)?;
        // The instruction embeddings first: with FiLM the encoder reads them from `x`.
        self.gather_instr(x, a.instr.at(first * hi, n * hi)?, a.iota.at(0, n)?, n)?;
        self.encoder_fwd(
            sb.obs.at(0, n * 147)?,
            self.film_instr(&sb.x, n)?,
            x,
            sb.enc_cache.at(0, n * ml.enc.enc_cache)?,
            n,
        )?;
        let h_src = a.state.at(first * sl, n * sl)?;
        let h_out = if commit {
            h_src
        } else {
            sb.state_tmp.at(0, n * sl)?
        };
        let (cache_len, active_bits) = match ml.dims.memory {
            MemoryKind::Rim => (ml.rim.rim_cache, sb.active.at(0, n)?),
            MemoryKind::Lstm => {
                sb.active.zero_range(0, n)?;
                (ml.lstm.lstm_cache, Ptr::NULL)
            }
        };
        self.memory_fwd(MemoryStep {
            x,
            h_src,
            reset: sb.reset.at(0, n)?,
            state_in: sb.state_read.at(0, n * sl)?,
            h_out,
            cache: sb.mem_cache.at(0, n * cache_len)?,
            active_bits,
            batch: n,
        })?;
        self.heads_fwd(
            h_out,
            sb.logits.at(0, n * ml.dims.n_actions)?,
            sb.values.at(0, n)?,
            sb.heads_cache.at(0, n * ml.heads.heads_cache)?,
            n,
        )
    }

    /// The outputs' copies (logits, values, active, states read), queued now, behind this
    /// step's kernels only: finishing this slot waits for them, not for work queued later
    /// (the other slot's step).
    fn act_queue_outputs(&self, slot: usize, n: usize) -> Result<[Ticket; 4]> {
        let sl = self.ml.state_len();
        let sb = &self.actor()?.slots[slot];
        Ok([
            sb.logits.download_async(0, n * self.ml.dims.n_actions)?,
            sb.values.download_async(0, n)?,
            sb.active.download_async(0, n)?,
            sb.state_read.download_async(0, n * sl)?,
        ])
    }

    /// The outputs of the step queued in `slot` (waits for the device).
    pub fn act_finish(&mut self, slot: usize) -> Result<ActOut> {
        let d = *self.layout.dims();
        let sl = self.ml.state_len();
        let a = self
            .actor
            .as_mut()
            .ok_or_else(|| bad("actor_init was not called"))?;
        let sb = a
            .slots
            .get_mut(slot)
            .ok_or_else(|| bad("acting slots are 0 and 1"))?;
        let Some([t_logits, t_values, t_active, t_state]) = sb.pending.take() else {
            return Err(bad(format!("acting slot {slot} has no step in flight")));
        };
        let n = sb.n;
        let mut out = ActOut {
            logits: vec![0.0; n * d.n_actions],
            values: vec![0.0; n],
            active: vec![0; n],
            state_in: vec![0.0; n * sl],
        };
        sb.logits.wait_into(t_logits, &mut out.logits)?;
        sb.values.wait_into(t_values, &mut out.values)?;
        sb.active.wait_into(t_active, &mut out.active)?;
        sb.state_read.wait_into(t_state, &mut out.state_in)?;
        Ok(out)
    }
}
