//! The GPU backend of the trainer: a policy whose parameters, gradients and Adam moments live on
//! the device, one buffer set per group (fast, slow, other), with
//! - batched acting ([`CudaPolicy::act_submit`] / [`CudaPolicy::act_finish`]): encoder,
//!   instruction encoder (at episode starts), one memory step and the heads for a range of
//!   environments, the instruction embeddings and memory states kept on the device; two slots,
//!   so one half of the environments can step on the CPU while the other half's forward runs
//!   (observations up and outputs down through pinned memory, asynchronously, each slot's
//!   outputs waited for on their own);
//! - a gradient pass over a minibatch of equal-length chunks ([`CudaPolicy::grad_pass`]):
//!   exactly [`Policy::chunk_backward`](metarim_core::nn::policy::Policy::chunk_backward)'s
//!   math for every chunk (episode-start masking, one instruction encoding per segment, the PPO
//!   loss scaled by `scale`, `CommGrad::Blocked`), the gradients summed into the device
//!   gradient buffers;
//! - optimiser steps ([`CudaPolicy::adam_step`]): the global gradient norm of the updated
//!   groups, clipping and Adam, the fast group restricted to the modules active somewhere in the
//!   last pass (as `Layout::fast_ranges`), all on the device (no host round trip).
//!
//! Invariants:
//! - The layout is the core's ([`Layout`]): group buffers are the host's `GroupVecs`, element
//!   for element, so parameters move between backends unchanged.
//! - Every kernel launch is checked against its declared parameter list; every buffer extent
//!   against its allocation; every host input (tokens, cell codes, actions, lengths) is
//!   validated before anything is launched, with an error naming what is wrong.
//! - The same code runs on a CUDA device and on the CPU emulator ([`crate::emu`]).

use std::collections::HashMap;
use std::sync::Arc;

use metarim_core::env::Observation;
use metarim_core::mission::vocab::VOCAB_SIZE;
use metarim_core::nn::dims::{EncoderKind, MemoryKind};
use metarim_core::nn::loss::PpoCoefs;
use metarim_core::nn::optim::Adam;
use metarim_core::nn::params::{Group, GroupBufs, GroupBufsMut, Layout, Role, TensorKind};
use metarim_core::nn::policy::ChunkStep;

use crate::exec::{self, Arg, DevBuf, Elem, Exec, Func, LaunchCfg, Ticket};
use crate::kernel::Kernel;
use crate::layout::{ModelLayout, N_TERMS};
use crate::optim::{AdamScalars, DeviceGroup, RangeTable};
use crate::{Error, Result};

/// Threads per block of the per-sample kernels.
const THREADS: u32 = 256;
/// Threads per block of the encoder and instruction kernels.
const SMALL_THREADS: u32 = 128;
/// Blocks of the gradient-norm reduction (per group).
const NORM_BLOCKS: u32 = 32;
/// Optimiser steps whose gradient norms are kept between [`CudaPolicy::take_stats`] calls.
const NORM_LOG: usize = 4096;

/// One chunk of a minibatch for [`CudaPolicy::grad_pass`]: its steps and the memory state
/// stored at its first step (as for `Policy::chunk_backward`).
#[derive(Clone, Copy, Debug)]
pub struct PassChunk<'a, 'b> {
    /// The steps, in order.
    pub steps: &'b [ChunkStep<'a, f32>],
    /// The state at the chunk's first step (`state_len` values).
    pub init_state: &'b [f32],
}

/// What the gradient passes and optimiser steps since the last [`CudaPolicy::take_stats`]
/// summed up.
#[derive(Clone, Debug, PartialEq)]
pub struct PassStats {
    /// Sums of the PPO terms over every step of every pass, in `PpoTerms` field order (loss,
    /// policy, value, entropy, logprob, ratio, approx_kl, logprob_diff, clipped), in f64.
    pub terms: [f64; N_TERMS],
    /// Steps those sums are over.
    pub frames: usize,
    /// The pre-clip gradient norm of every optimiser step, in order.
    pub norms: Vec<f32>,
}

/// The inputs of one batched acting step for the environments `first..first + obs.len()`.
#[derive(Clone, Copy, Debug)]
pub struct ActInput<'a> {
    /// Each environment's observation.
    pub obs: &'a [Observation],
    /// Each environment's mission tokens (read where `encode` is set).
    pub tokens: &'a [&'a [u16]],
    /// Encode the mission into the environment's instruction embedding first (episode starts,
    /// and every environment at the start of a rollout, since the parameters changed).
    pub encode: &'a [bool],
    /// The step starts an episode: the memory reads zeros.
    pub reset: &'a [bool],
    /// Keep the new memory states (false: a bootstrap value, the states stay as they were).
    pub commit: bool,
}

/// The outputs of one batched acting step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActOut {
    /// Action logits, `n_actions` per environment.
    pub logits: Vec<f32>,
    /// Values.
    pub values: Vec<f32>,
    /// Active modules (bit i: module i; 0 for the LSTM memory).
    pub active: Vec<u32>,
    /// The memory state each environment read (zeros at an episode start), `state_len` each.
    pub state_in: Vec<f32>,
}

/// A range table of one group on the device: offsets, prefix sums and each range's module
/// (-1: shared).
#[derive(Debug)]
struct GroupTable {
    off: DevBuf<u64>,
    prefix: DevBuf<u64>,
    module: DevBuf<i32>,
    nranges: u32,
    total: u64,
}

impl GroupTable {
    fn new(exec: &Arc<dyn Exec>, n: usize, ranges: &[(usize, usize, i32)]) -> Result<GroupTable> {
        let plain: Vec<(usize, usize)> = ranges.iter().map(|r| (r.0, r.1)).collect();
        let t = RangeTable::new(n, &plain)?;
        let modules: Vec<i32> = ranges.iter().map(|r| r.2).collect();
        Ok(GroupTable {
            off: DevBuf::from_host(exec, &t.offsets)?,
            prefix: DevBuf::from_host(exec, &t.prefix)?,
            module: DevBuf::from_host(exec, &modules)?,
            nranges: ranges.len() as u32,
            total: t.total(),
        })
    }
}

/// Minibatch buffers (grown on demand).
#[derive(Debug)]
struct Work {
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
    seg_tokens: DevBuf<u16>,
    seg_of: DevBuf<u32>,
    seg_chunk: DevBuf<u32>,
    seg_t0: DevBuf<u32>,
    seg_t1: DevBuf<u32>,
    instr_out: DevBuf<f32>,
    instr_cache: DevBuf<f32>,
    instr_xs: DevBuf<f32>,
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
struct Staging {
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
    seg_tokens: DevBuf<u16>,
    seg_idx: DevBuf<u32>,
    instr_tmp: DevBuf<f32>,
    instr_cache: DevBuf<f32>,
    instr_xs: DevBuf<f32>,
    /// The queued copies of the outputs (logits, values, active, state read) of the step in
    /// flight.
    pending: Option<[Ticket; 4]>,
}

/// Per-environment state of the acting path.
#[derive(Debug)]
struct Actor {
    n_envs: usize,
    instr: DevBuf<f32>,
    state: DevBuf<f32>,
    iota: DevBuf<u32>,
    slots: [ActSlot; 2],
}

/// A policy on a device (see the module docs).
#[derive(Debug)]
pub struct CudaPolicy {
    exec: Arc<dyn Exec>,
    funcs: HashMap<&'static str, Func>,
    layout: Layout,
    ml: ModelLayout,
    groups: [DeviceGroup; 3],
    /// Per group: the whole group, and (fast group) the module-tagged ranges.
    tables: [[GroupTable; 2]; 3],
    counts: DevBuf<u32>,
    terms_acc: DevBuf<f64>,
    frames: usize,
    norms: DevBuf<f32>,
    n_norms: usize,
    coef: DevBuf<f32>,
    partial: DevBuf<f64>,
    work: Option<Work>,
    staging: Staging,
    actor: Option<Actor>,
}

/// The `x` operand of a `wgrad` reduction: base, outer stride, inner stride, inner count
/// (samples per outer row) and per-matrix stride.
type XOperand = (Arg, usize, usize, usize, usize);

fn bad(what: impl Into<String>) -> Error {
    Error::BadInput { what: what.into() }
}

fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| bad(format!("{what} ({n}) does not fit in 32 bits")))
}

/// `ceil(n / per)` blocks (at least one).
fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per.max(1)).max(1) as u32
}

/// A grid-stride 1-D launch over `n` elements.
fn linear_cfg(n: usize) -> LaunchCfg {
    LaunchCfg::linear(blocks(n, THREADS as usize).min(8192), THREADS, 0)
}

fn group_index(g: Group) -> usize {
    match g {
        Group::Fast => 0,
        Group::Slow => 1,
        Group::Other => 2,
    }
}

/// The buffer of `g` in a host group set.
fn host_group<'a>(b: &GroupBufs<'a, f32>, g: Group) -> &'a [f32] {
    b.group(g)
}

fn host_group_mut<'a, 'b>(b: &'b mut GroupBufsMut<'a, f32>, g: Group) -> &'b mut [f32] {
    match g {
        Group::Fast => b.fast,
        Group::Slow => b.slow,
        Group::Other => b.other,
    }
}

/// The rest of a buffer from `off` as an argument.
fn tail<T: Elem>(b: &DevBuf<T>, off: usize) -> Result<Arg> {
    b.slice(off, b.len().saturating_sub(off))
}

impl Work {
    fn new(exec: &Arc<dyn Exec>, ml: &ModelLayout, s: usize, b: usize) -> Result<Work> {
        let d = &ml.dims;
        let sl = ml.state_len();
        let (mc, md) = match d.memory {
            MemoryKind::Rim => (ml.rim_cache, ml.rim_delta),
            MemoryKind::Lstm => (ml.lstm_cache, ml.lstm_delta),
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
            enc_cache: f(s * ml.enc_cache)?,
            enc_delta: f(s * ml.enc_delta)?,
            seg_tokens: DevBuf::zeros(exec, g * mt)?,
            seg_of: DevBuf::zeros(exec, s)?,
            seg_chunk: DevBuf::zeros(exec, g)?,
            seg_t0: DevBuf::zeros(exec, g)?,
            seg_t1: DevBuf::zeros(exec, g)?,
            instr_out: f(g * d.instr_hidden)?,
            instr_cache: f(g * ml.instr_cache)?,
            instr_xs: f(g * mt * d.word_dim)?,
            instr_delta: f(g * mt * ml.instr_delta)?,
            d_instr: f(g * d.instr_hidden)?,
            states: f((s + b) * sl)?,
            state_in: f(s * sl)?,
            mem_cache: f(s * mc)?,
            mem_delta: f(s * md)?,
            logits: f(s * d.n_actions)?,
            values: f(s)?,
            heads_cache: f(s * ml.heads_cache)?,
            dh: f(s * ml.mw)?,
            terms: f(s * N_TERMS)?,
            heads_delta: f(s * ml.heads_delta)?,
            carry: f(b * sl)?,
            dx: f(s * ml.input)?,
        })
    }
}

impl ActSlot {
    fn new(exec: &Arc<dyn Exec>, ml: &ModelLayout, n: usize) -> Result<ActSlot> {
        let d = &ml.dims;
        let sl = ml.state_len();
        let mc = match d.memory {
            MemoryKind::Rim => ml.rim_cache,
            MemoryKind::Lstm => ml.lstm_cache,
        };
        let f = |k: usize| DevBuf::<f32>::zeros(exec, k);
        Ok(ActSlot {
            n,
            obs: DevBuf::zeros(exec, n * 147)?,
            reset: DevBuf::zeros(exec, n)?,
            x: f(n * ml.input)?,
            enc_cache: f(n * ml.enc_cache)?,
            mem_cache: f(n * mc)?,
            state_read: f(n * sl)?,
            state_tmp: f(n * sl)?,
            logits: f(n * d.n_actions)?,
            values: f(n)?,
            heads_cache: f(n * ml.heads_cache)?,
            active: DevBuf::zeros(exec, n)?,
            seg_tokens: DevBuf::zeros(exec, n * d.max_tokens)?,
            seg_idx: DevBuf::zeros(exec, n)?,
            instr_tmp: f(n * d.instr_hidden)?,
            instr_cache: f(n * ml.instr_cache)?,
            instr_xs: f(n * d.max_tokens * d.word_dim)?,
            pending: None,
        })
    }
}

/// Compact `tokens` (non-PAD in order) into `out` (`max_tokens` slots), checking ids and count.
fn pack_tokens(tokens: &[u16], max_tokens: usize, out: &mut Vec<u16>) -> Result<()> {
    let start = out.len();
    for &t in tokens.iter().filter(|t| **t != 0) {
        if usize::from(t) >= VOCAB_SIZE {
            return Err(bad(format!(
                "token id {t} is not below the vocabulary size {VOCAB_SIZE}"
            )));
        }
        if out.len() - start == max_tokens {
            return Err(bad(format!("a mission has more than {max_tokens} tokens")));
        }
        out.push(t);
    }
    out.resize(start + max_tokens, 0);
    Ok(())
}

/// Append an observation's 147 codes, checking the bag-of-words encoder's table bound.
fn push_obs(obs: &Observation, bow: bool, out: &mut Vec<u8>) -> Result<()> {
    for cell in obs.iter() {
        for &v in cell {
            if bow && usize::from(v) >= 16 {
                return Err(bad(format!(
                    "cell code {v} has no row in the bag-of-words table (codes must be < 16)"
                )));
            }
            out.push(v);
        }
    }
    Ok(())
}

impl CudaPolicy {
    /// Load every kernel for `layout`'s model on `exec`, check the compiled layout against the
    /// host's, and upload `params` (Adam moments start at zero).
    pub fn new(exec: Arc<dyn Exec>, layout: &Layout, params: GroupBufs<'_, f32>) -> Result<Self> {
        layout.check_bufs(&params)?;
        let ml = ModelLayout::new(layout.dims())?;
        let defines = ml.defines();
        let mut funcs = HashMap::new();
        for k in Kernel::ALL {
            let defs = if k.needs_model() { &defines[..] } else { &[] };
            for f in exec.load(k, defs)? {
                funcs.insert(f.entry.name, f);
            }
        }
        let mk = |g: Group| DeviceGroup::zeros(&exec, layout.group_len(g));
        let groups = [mk(Group::Fast)?, mk(Group::Slow)?, mk(Group::Other)?];
        let whole =
            |g: Group| GroupTable::new(&exec, layout.group_len(g), &[(0, layout.group_len(g), -1)]);
        let n = layout.dims().rim.n_modules;
        let mut fast_ranges = Vec::new();
        for e in layout.entries().iter().filter(|e| e.group == Group::Fast) {
            let per_module = matches!(
                e.kind,
                TensorKind::RimQuery
                    | TensorKind::RimRnn
                    | TensorKind::CommQuery
                    | TensorKind::CommKey
                    | TensorKind::CommValue
                    | TensorKind::CommGate
                    | TensorKind::CommOut
            );
            if per_module && n > 0 {
                let block = e.len / n;
                for i in 0..n {
                    fast_ranges.push((e.offset + i * block, block, i as i32));
                }
            } else {
                fast_ranges.push((e.offset, e.len, -1));
            }
        }
        if fast_ranges.is_empty() {
            fast_ranges.push((0, 0, -1));
        }
        let tables = [
            [
                whole(Group::Fast)?,
                GroupTable::new(&exec, layout.group_len(Group::Fast), &fast_ranges)?,
            ],
            [whole(Group::Slow)?, whole(Group::Slow)?],
            [whole(Group::Other)?, whole(Group::Other)?],
        ];
        let mut p = CudaPolicy {
            counts: DevBuf::zeros(&exec, n.max(1))?,
            terms_acc: DevBuf::zeros(&exec, N_TERMS)?,
            frames: 0,
            norms: DevBuf::zeros(&exec, NORM_LOG)?,
            n_norms: 0,
            coef: DevBuf::zeros(&exec, 1)?,
            partial: DevBuf::zeros(&exec, 3 * NORM_BLOCKS as usize)?,
            exec,
            funcs,
            layout: layout.clone(),
            ml,
            groups,
            tables,
            work: None,
            staging: Staging::default(),
            actor: None,
        };
        p.check_layout()?;
        p.upload_params(params)?;
        Ok(p)
    }

    /// The backend this policy runs on.
    pub fn exec(&self) -> &Arc<dyn Exec> {
        &self.exec
    }

    /// The parameter layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The kernels' layout constants for this model.
    pub fn model_layout(&self) -> &ModelLayout {
        &self.ml
    }

    fn func(&self, name: &str) -> Result<&Func> {
        self.funcs
            .get(name)
            .ok_or_else(|| bad(format!("kernel entry {name} is not loaded")))
    }

    fn launch(&self, name: &str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        exec::launch(&*self.exec, self.func(name)?, &cfg, args)
    }

    /// A per-sample kernel over `n` samples, `spb` per block, `floats` of shared memory each.
    fn sample_cfg(n: usize, spb: usize, floats: usize) -> LaunchCfg {
        LaunchCfg::linear(blocks(n, spb), THREADS, (spb * floats * 4) as u32)
    }

    fn check_layout(&self) -> Result<()> {
        let out = DevBuf::<u32>::zeros(&self.exec, 25)?;
        self.launch("layout_info", LaunchCfg::linear(1, 32, 0), &[out.arg()])?;
        let got = out.download()?;
        let want = self.ml.expected_info();
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            if g != w {
                return Err(bad(format!(
                    "compiled kernels report {} = {g}, the host expects {w}",
                    crate::layout::LAYOUT_FIELDS[i]
                )));
            }
        }
        Ok(())
    }

    // ---- parameters ------------------------------------------------------------------------

    /// Overwrite the device parameters with `params`.
    pub fn upload_params(&mut self, params: GroupBufs<'_, f32>) -> Result<()> {
        self.layout.check_bufs(&params)?;
        for g in Group::ALL {
            self.groups[group_index(g)]
                .params
                .upload(host_group(&params, g))?;
        }
        Ok(())
    }

    /// The device parameters into `out`.
    pub fn download_params(&self, mut out: GroupBufsMut<'_, f32>) -> Result<()> {
        self.layout.check_bufs(&out.as_ref())?;
        for g in Group::ALL {
            self.groups[group_index(g)]
                .params
                .download_into(0, host_group_mut(&mut out, g))?;
        }
        Ok(())
    }

    /// The gradients of the last pass into `out`.
    pub fn download_grads(&self, mut out: GroupBufsMut<'_, f32>) -> Result<()> {
        self.layout.check_bufs(&out.as_ref())?;
        for g in Group::ALL {
            self.groups[group_index(g)]
                .grads
                .download_into(0, host_group_mut(&mut out, g))?;
        }
        Ok(())
    }

    /// Overwrite Adam's moments.
    pub fn upload_moments(&mut self, m: GroupBufs<'_, f32>, v: GroupBufs<'_, f32>) -> Result<()> {
        self.layout.check_bufs(&m)?;
        self.layout.check_bufs(&v)?;
        for g in Group::ALL {
            let dg = &self.groups[group_index(g)];
            dg.m.upload(host_group(&m, g))?;
            dg.v.upload(host_group(&v, g))?;
        }
        Ok(())
    }

    /// Adam's moments into `m` and `v`.
    pub fn download_moments(
        &self,
        mut m: GroupBufsMut<'_, f32>,
        mut v: GroupBufsMut<'_, f32>,
    ) -> Result<()> {
        self.layout.check_bufs(&m.as_ref())?;
        self.layout.check_bufs(&v.as_ref())?;
        for g in Group::ALL {
            let dg = &self.groups[group_index(g)];
            dg.m.download_into(0, host_group_mut(&mut m, g))?;
            dg.v.download_into(0, host_group_mut(&mut v, g))?;
        }
        Ok(())
    }

    fn entry(&self, kind: TensorKind) -> Result<(usize, usize, usize)> {
        let e = self
            .layout
            .entry(kind)
            .ok_or_else(|| bad(format!("the layout has no tensor {kind:?}")))?;
        Ok((group_index(e.group), e.offset, e.len))
    }

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
    fn tensor_arg(&self, kind: TensorKind, grad: bool, off: usize) -> Result<Arg> {
        let (g, o, len) = self.entry(kind)?;
        let dg = &self.groups[g];
        let b = if grad { &dg.grads } else { &dg.params };
        b.slice(o + off, len.saturating_sub(off))
    }

    fn block_arg(&self, role: Role, grad: bool, off: usize) -> Result<Arg> {
        let (g, o, len) = self.block_of(role)?;
        let dg = &self.groups[g];
        let b = if grad { &dg.grads } else { &dg.params };
        b.slice(o + off, len.saturating_sub(off))
    }

    /// The nine RIM tensors' parameters (without communication the five comm arguments repeat
    /// the key projection; the kernels do not read them).
    fn rim_weights(&self) -> Result<Vec<Arg>> {
        let wk = self.tensor_arg(TensorKind::RimKey, false, 0)?;
        let mut v = vec![
            wk,
            self.tensor_arg(TensorKind::RimValue, false, 0)?,
            self.tensor_arg(TensorKind::RimQuery, false, 0)?,
            self.tensor_arg(TensorKind::RimRnn, false, 0)?,
        ];
        for k in [
            TensorKind::CommQuery,
            TensorKind::CommKey,
            TensorKind::CommValue,
            TensorKind::CommGate,
            TensorKind::CommOut,
        ] {
            v.push(if self.ml.cw > 0 {
                self.tensor_arg(k, false, 0)?
            } else {
                wk
            });
        }
        Ok(v)
    }

    fn lstm_weights(&self) -> Result<[Arg; 4]> {
        Ok([
            self.tensor_arg(TensorKind::Lstm(0), false, 0)?,
            self.tensor_arg(TensorKind::Lstm(1), false, 0)?,
            self.tensor_arg(TensorKind::Lstm(2), false, 0)?,
            self.tensor_arg(TensorKind::Lstm(3), false, 0)?,
        ])
    }

    /// `dw[mat][r][c] += sum_s dy(s, mat)[r] x(s, mat)[c]` (reduce.cu `wgrad`).
    #[allow(clippy::too_many_arguments)]
    fn wgrad(
        &self,
        dw: Arg,
        dw_mat: usize,
        dy: Arg,
        dy_outer: usize,
        dy_mat: usize,
        x: Option<XOperand>,
        rows: usize,
        cols: usize,
        mats: usize,
        samples: usize,
    ) -> Result<()> {
        let (xa, x_outer, x_inner, x_sub, x_mat) = x.unwrap_or((Arg::null::<f32>(), 0, 0, 1, 0));
        let cfg = LaunchCfg {
            grid: (blocks(cols, 16), blocks(rows, 16), mats.max(1) as u32),
            block: (16, 16, 1),
            smem: 2 * 16 * 16 * 4,
        };
        let u = |n: usize| -> Result<Arg> { Ok(Arg::U32(u32_of(n, "a wgrad size")?)) };
        self.launch(
            "wgrad",
            cfg,
            &[
                dw,
                u(dw_mat)?,
                dy,
                u(dy_outer)?,
                u(dy_mat)?,
                xa,
                u(x_outer)?,
                u(x_inner)?,
                u(x_sub)?,
                u(x_mat)?,
                u(rows)?,
                u(cols)?,
                u(samples)?,
            ],
        )
    }

    // ---- the gradient pass -----------------------------------------------------------------

    fn stage(&mut self, chunks: &[PassChunk<'_, '_>]) -> Result<(usize, usize, usize)> {
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
        let d = *self.layout.dims();
        let sl = self.ml.state_len();
        let bow = d.encoder == EncoderKind::Bow;
        let st = &mut self.staging;
        st.obs.clear();
        st.reset.clear();
        st.action.clear();
        st.old_lp.clear();
        st.old_v.clear();
        st.adv.clear();
        st.ret.clear();
        st.init.clear();
        st.seg_tokens.clear();
        st.seg_of.clear();
        st.seg_chunk.clear();
        st.seg_t0.clear();
        st.seg_t1.clear();
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
        // Segments: a chunk's first step and every episode start begin one.
        st.seg_of.resize(t_len * b, 0);
        for (ci, c) in chunks.iter().enumerate() {
            for (t, step) in c.steps.iter().enumerate() {
                if t == 0 || step.episode_start {
                    if let Some(last) = st.seg_t1.last_mut() {
                        if t > 0 {
                            *last = (t - 1) as u32;
                        }
                    }
                    pack_tokens(step.tokens, d.max_tokens, &mut st.seg_tokens)?;
                    st.seg_chunk.push(ci as u32);
                    st.seg_t0.push(t as u32);
                    st.seg_t1.push((t_len - 1) as u32);
                }
                st.seg_of[t * b + ci] = (st.seg_chunk.len() - 1) as u32;
            }
        }
        let s = t_len * b;
        let g = st.seg_chunk.len();
        let need_new = match &self.work {
            Some(w) => w.s_cap < s || w.b_cap < b,
            None => true,
        };
        if need_new {
            self.work = None;
            self.work = Some(Work::new(&self.exec, &self.ml, s, b)?);
        }
        let w = self.work.as_ref().ok_or_else(|| bad("no work buffers"))?;
        let st = &self.staging;
        w.obs.upload_at(0, &st.obs)?;
        w.reset.upload_at(0, &st.reset)?;
        w.action.upload_at(0, &st.action)?;
        w.old_lp.upload_at(0, &st.old_lp)?;
        w.old_v.upload_at(0, &st.old_v)?;
        w.adv.upload_at(0, &st.adv)?;
        w.ret.upload_at(0, &st.ret)?;
        w.states.upload_at(0, &st.init)?;
        w.seg_tokens.upload_at(0, &st.seg_tokens)?;
        w.seg_of.upload_at(0, &st.seg_of)?;
        w.seg_chunk.upload_at(0, &st.seg_chunk)?;
        w.seg_t0.upload_at(0, &st.seg_t0)?;
        w.seg_t1.upload_at(0, &st.seg_t1)?;
        Ok((t_len, b, g))
    }

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
        let (t_len, b, g) = self.stage(chunks)?;
        let ml = self.ml;
        let d = ml.dims;
        let s = t_len * b;
        let sl = ml.state_len();
        let rim = d.memory == MemoryKind::Rim;
        let (mc, md) = if rim {
            (ml.rim_cache, ml.rim_delta)
        } else {
            (ml.lstm_cache, ml.lstm_delta)
        };
        let (hi, wd, mt, na) = (d.instr_hidden, d.word_dim, d.max_tokens, d.n_actions);
        let c2 = d.obs_features();
        let u = |n: usize, what: &str| -> Result<Arg> { Ok(Arg::U32(u32_of(n, what)?)) };
        for dg in &self.groups {
            dg.grads.fill_zero()?;
        }
        self.counts.fill_zero()?;
        let w = self.work.as_ref().ok_or_else(|| bad("no work buffers"))?;

        // Encoder over every step, instruction encoder over every segment.
        self.launch(
            "encoder_fwd",
            LaunchCfg::linear(
                u32_of(s, "samples")?,
                SMALL_THREADS,
                (ml.enc_fwd_smem * 4) as u32,
            ),
            &[
                self.block_arg(Role::Encoder, false, 0)?,
                w.obs.slice(0, s * 147)?,
                w.x.slice(0, s * ml.input)?,
                u(ml.input, "input")?,
                w.enc_cache.slice(0, s * ml.enc_cache)?,
                u(s, "samples")?,
            ],
        )?;
        self.launch(
            "instr_fwd",
            LaunchCfg::linear(
                u32_of(g, "segments")?,
                SMALL_THREADS,
                (ml.instr_fwd_smem * 4) as u32,
            ),
            &[
                self.block_arg(Role::Instruction, false, 0)?,
                w.seg_tokens.slice(0, g * mt)?,
                w.instr_out.slice(0, g * hi)?,
                w.instr_cache.slice(0, g * ml.instr_cache)?,
                w.instr_xs.slice(0, g * mt * wd)?,
                u(g, "segments")?,
            ],
        )?;
        self.launch(
            "gather_rows",
            linear_cfg(s * hi),
            &[
                w.x.slice(0, s * ml.input)?,
                u(ml.input, "input")?,
                u(c2, "features")?,
                w.instr_out.slice(0, g * hi)?,
                w.seg_of.slice(0, s)?,
                u(hi, "instr")?,
                u(s, "samples")?,
            ],
        )?;

        // The memory, step by step.
        for t in 0..t_len {
            let xt = w.x.slice(t * b * ml.input, b * ml.input)?;
            let src = w.states.slice(t * b * sl, b * sl)?;
            let dst = w.states.slice((t + 1) * b * sl, b * sl)?;
            let reset = w.reset.slice(t * b, b)?;
            let sin = w.state_in.slice(t * b * sl, b * sl)?;
            let cache = w.mem_cache.slice(t * b * mc, b * mc)?;
            if rim {
                let mut args = self.rim_weights()?;
                args.extend([
                    xt,
                    src,
                    reset,
                    sin,
                    dst,
                    cache,
                    Arg::null::<u32>(),
                    u(b, "batch")?,
                ]);
                self.launch(
                    "rim_fwd_step",
                    Self::sample_cfg(b, ml.spb_rim, ml.rf_smem),
                    &args,
                )?;
            } else {
                let mut args = self.lstm_weights()?.to_vec();
                args.extend([xt, src, reset, sin, dst, cache, u(b, "batch")?]);
                self.launch(
                    "lstm_fwd_step",
                    Self::sample_cfg(b, ml.spb_lstm, ml.lf_smem),
                    &args,
                )?;
            }
        }

        // Heads over every step; the loss and its gradient through the heads.
        let h_all = w.states.slice(b * sl, s * sl)?;
        self.launch(
            "heads_fwd",
            Self::sample_cfg(s, ml.spb_heads, ml.hf_smem),
            &[
                self.block_arg(Role::Heads, false, 0)?,
                h_all,
                u(sl, "state")?,
                w.logits.slice(0, s * na)?,
                w.values.slice(0, s)?,
                w.heads_cache.slice(0, s * ml.heads_cache)?,
                u(s, "samples")?,
            ],
        )?;
        self.launch(
            "ppo_heads_bwd",
            Self::sample_cfg(s, ml.spb_heads, ml.hb_smem),
            &[
                self.block_arg(Role::Heads, false, 0)?,
                w.heads_cache.slice(0, s * ml.heads_cache)?,
                w.logits.slice(0, s * na)?,
                w.values.slice(0, s)?,
                w.action.slice(0, s)?,
                w.old_lp.slice(0, s)?,
                w.old_v.slice(0, s)?,
                w.adv.slice(0, s)?,
                w.ret.slice(0, s)?,
                Arg::F32(coefs.clip_eps),
                Arg::F32(coefs.value_coef),
                Arg::F32(coefs.entropy_coef),
                Arg::U32(u32::from(coefs.clip_value)),
                Arg::F32(scale),
                w.dh.slice(0, s * ml.mw)?,
                w.terms.slice(0, s * N_TERMS)?,
                w.heads_delta.slice(0, s * ml.heads_delta)?,
                u(s, "samples")?,
            ],
        )?;

        // Backward through time.
        w.carry.zero_range(0, b * sl)?;
        for t in (0..t_len).rev() {
            let sin = w.state_in.slice(t * b * sl, b * sl)?;
            let cache = w.mem_cache.slice(t * b * mc, b * mc)?;
            let dh = w.dh.slice(t * b * ml.mw, b * ml.mw)?;
            let carry = w.carry.slice(0, b * sl)?;
            let reset = w.reset.slice(t * b, b)?;
            let dx = w.dx.slice(t * b * ml.input, b * ml.input)?;
            let delta = w.mem_delta.slice(t * b * md, b * md)?;
            if rim {
                let mut args = self.rim_weights()?;
                args.extend([
                    sin,
                    cache,
                    dh,
                    carry,
                    reset,
                    carry,
                    dx,
                    delta,
                    u(b, "batch")?,
                ]);
                self.launch(
                    "rim_bwd_step",
                    Self::sample_cfg(b, ml.spb_rim, ml.rb_smem),
                    &args,
                )?;
            } else {
                let lw = self.lstm_weights()?;
                self.launch(
                    "lstm_bwd_step",
                    Self::sample_cfg(b, ml.spb_lstm, ml.lb_smem),
                    &[
                        lw[0],
                        lw[1],
                        sin,
                        cache,
                        dh,
                        carry,
                        reset,
                        carry,
                        dx,
                        delta,
                        u(b, "batch")?,
                    ],
                )?;
            }
        }

        // Weight gradients of the memory.
        let x_in = |off: usize, mat: usize| -> Result<Option<XOperand>> {
            Ok(Some((tail(&w.x, off)?, ml.input, 0, 1, mat)))
        };
        let st_in = |mat: usize| -> Result<Option<XOperand>> {
            Ok(Some((tail(&w.state_in, 0)?, sl, 0, 1, mat)))
        };
        let cache_at = |off: usize, mat: usize| -> Result<Option<XOperand>> {
            Ok(Some((tail(&w.mem_cache, off)?, mc, 0, 1, mat)))
        };
        let dl = |off: usize| tail(&w.mem_delta, off);
        let (n, h, qw, uw, cw, g3h) = (ml.n, ml.hid, ml.qw, ml.uw, ml.cw, ml.g3h);
        if rim {
            let gt = |k: TensorKind, off: usize| self.tensor_arg(k, true, off);
            self.wgrad(
                gt(TensorKind::RimKey, 0)?,
                0,
                dl(ml.rd_dkx)?,
                md,
                0,
                x_in(0, 0)?,
                qw,
                ml.input,
                1,
                s,
            )?;
            self.wgrad(
                gt(TensorKind::RimValue, 0)?,
                0,
                dl(ml.rd_dvx)?,
                md,
                0,
                x_in(0, 0)?,
                uw,
                ml.input,
                1,
                s,
            )?;
            self.wgrad(
                gt(TensorKind::RimQuery, 0)?,
                qw * h,
                dl(ml.rd_dq)?,
                md,
                qw,
                st_in(h)?,
                qw,
                h,
                n,
                s,
            )?;
            let rl = ml.rnn_len;
            self.wgrad(
                gt(TensorKind::RimRnn, 0)?,
                rl,
                dl(ml.rd_gi)?,
                md,
                g3h,
                cache_at(ml.rc_u, uw)?,
                g3h,
                uw,
                n,
                s,
            )?;
            self.wgrad(
                gt(TensorKind::RimRnn, ml.rnn_w_hh)?,
                rl,
                dl(ml.rd_gh)?,
                md,
                g3h,
                st_in(h)?,
                g3h,
                h,
                n,
                s,
            )?;
            self.wgrad(
                gt(TensorKind::RimRnn, ml.rnn_b_ih)?,
                rl,
                dl(ml.rd_gi)?,
                md,
                g3h,
                None,
                g3h,
                1,
                n,
                s,
            )?;
            self.wgrad(
                gt(TensorKind::RimRnn, ml.rnn_b_hh)?,
                rl,
                dl(ml.rd_gh)?,
                md,
                g3h,
                None,
                g3h,
                1,
                n,
                s,
            )?;
            if cw > 0 {
                for (k, off) in [
                    (TensorKind::CommQuery, ml.rd_dcq),
                    (TensorKind::CommKey, ml.rd_dck),
                    (TensorKind::CommValue, ml.rd_dcv),
                ] {
                    self.wgrad(
                        gt(k, 0)?,
                        cw * h,
                        dl(off)?,
                        md,
                        cw,
                        cache_at(ml.rc_ht, h)?,
                        cw,
                        h,
                        n,
                        s,
                    )?;
                }
                for (k, off) in [
                    (TensorKind::CommGate, ml.rd_dpg),
                    (TensorKind::CommOut, ml.rd_dpo),
                ] {
                    self.wgrad(
                        gt(k, 0)?,
                        h * cw,
                        dl(off)?,
                        md,
                        h,
                        cache_at(ml.rc_o, cw)?,
                        h,
                        cw,
                        n,
                        s,
                    )?;
                }
            }
        } else {
            let gt = |i: u8| self.tensor_arg(TensorKind::Lstm(i), true, 0);
            let r4 = 4 * ml.mw;
            self.wgrad(gt(0)?, 0, dl(0)?, md, 0, x_in(0, 0)?, r4, ml.input, 1, s)?;
            self.wgrad(gt(1)?, 0, dl(0)?, md, 0, st_in(0)?, r4, ml.mw, 1, s)?;
            self.wgrad(gt(2)?, 0, dl(0)?, md, 0, None, r4, 1, 1, s)?;
            self.wgrad(gt(3)?, 0, dl(0)?, md, 0, None, r4, 1, 1, s)?;
        }

        // Weight gradients of the heads.
        let hg = |off: usize| self.block_arg(Role::Heads, true, off);
        let hd = |off: usize| tail(&w.heads_delta, off);
        let hdl = ml.heads_delta;
        let h_x = Some((tail(&w.states, b * sl)?, sl, 0, 1, 0));
        let hc = |off: usize| -> Result<Option<XOperand>> {
            Ok(Some((tail(&w.heads_cache, off)?, ml.heads_cache, 0, 1, 0)))
        };
        let hh = d.head_hidden;
        self.wgrad(hg(0)?, 0, hd(ml.hd_da)?, hdl, 0, h_x, hh, ml.mw, 1, s)?;
        self.wgrad(hg(ml.hp_a_b1)?, 0, hd(ml.hd_da)?, hdl, 0, None, hh, 1, 1, s)?;
        self.wgrad(hg(ml.hp_a_w2)?, 0, hd(0)?, hdl, 0, hc(0)?, na, hh, 1, s)?;
        self.wgrad(hg(ml.hp_a_b2)?, 0, hd(0)?, hdl, 0, None, na, 1, 1, s)?;
        self.wgrad(
            hg(ml.hp_c_w1)?,
            0,
            hd(ml.hd_dc)?,
            hdl,
            0,
            h_x,
            hh,
            ml.mw,
            1,
            s,
        )?;
        self.wgrad(hg(ml.hp_c_b1)?, 0, hd(ml.hd_dc)?, hdl, 0, None, hh, 1, 1, s)?;
        self.wgrad(
            hg(ml.hp_c_w2)?,
            0,
            hd(ml.hd_dv)?,
            hdl,
            0,
            hc(hh)?,
            1,
            hh,
            1,
            s,
        )?;
        self.wgrad(hg(ml.hp_c_b2)?, 0, hd(ml.hd_dv)?, hdl, 0, None, 1, 1, 1, s)?;

        // Encoder.
        self.launch(
            "encoder_bwd",
            LaunchCfg::linear(
                u32_of(s, "samples")?,
                SMALL_THREADS,
                (ml.enc_bwd_smem * 4) as u32,
            ),
            &[
                self.block_arg(Role::Encoder, false, 0)?,
                w.obs.slice(0, s * 147)?,
                w.enc_cache.slice(0, s * ml.enc_cache)?,
                w.dx.slice(0, s * ml.input)?,
                u(ml.input, "input")?,
                w.enc_delta.slice(0, s * ml.enc_delta)?,
                u(s, "samples")?,
            ],
        )?;
        self.launch(
            "encoder_wgrad",
            linear_cfg(ml.enc_params),
            &[
                self.block_arg(Role::Encoder, false, 0)?,
                w.obs.slice(0, s * 147)?,
                w.enc_cache.slice(0, s * ml.enc_cache)?,
                w.enc_delta.slice(0, s * ml.enc_delta)?,
                self.block_arg(Role::Encoder, true, 0)?,
                u(s, "samples")?,
            ],
        )?;

        // Instruction encoder: the per-segment sums of the instruction gradient, BPTT over the
        // tokens, weight and embedding gradients.
        self.launch(
            "instr_dsum",
            linear_cfg(g * hi),
            &[
                w.dx.slice(0, s * ml.input)?,
                u(ml.input, "input")?,
                u(c2, "features")?,
                w.seg_chunk.slice(0, g)?,
                w.seg_t0.slice(0, g)?,
                w.seg_t1.slice(0, g)?,
                u(b, "chunks")?,
                w.d_instr.slice(0, g * hi)?,
                u(g, "segments")?,
            ],
        )?;
        self.launch(
            "instr_bwd",
            LaunchCfg::linear(
                u32_of(g, "segments")?,
                SMALL_THREADS,
                (ml.instr_bwd_smem * 4) as u32,
            ),
            &[
                self.block_arg(Role::Instruction, false, 0)?,
                w.seg_tokens.slice(0, g * mt)?,
                w.instr_cache.slice(0, g * ml.instr_cache)?,
                w.d_instr.slice(0, g * hi)?,
                w.instr_delta.slice(0, g * mt * ml.instr_delta)?,
                u(g, "segments")?,
            ],
        )?;
        let ig = |off: usize| self.block_arg(Role::Instruction, true, off);
        let idl = ml.instr_delta;
        let ids = |off: usize| tail(&w.instr_delta, off);
        let gs = g * mt;
        let ig3 = ml.ig3;
        self.wgrad(
            ig(ml.ip_w_ih)?,
            0,
            ids(0)?,
            idl,
            0,
            Some((tail(&w.instr_xs, 0)?, wd, 0, 1, 0)),
            ig3,
            wd,
            1,
            gs,
        )?;
        self.wgrad(ig(ml.ip_b_ih)?, 0, ids(0)?, idl, 0, None, ig3, 1, 1, gs)?;
        let hs = Some((tail(&w.instr_cache, 0)?, ml.instr_cache, hi, mt, 0));
        self.wgrad(
            ig(ml.ip_w_hh)?,
            0,
            ids(ml.id_gh)?,
            idl,
            0,
            hs,
            ig3,
            hi,
            1,
            gs,
        )?;
        self.wgrad(
            ig(ml.ip_b_hh)?,
            0,
            ids(ml.id_gh)?,
            idl,
            0,
            None,
            ig3,
            1,
            1,
            gs,
        )?;
        self.launch(
            "instr_emb_grad",
            linear_cfg(VOCAB_SIZE * wd),
            &[
                w.seg_tokens.slice(0, g * mt)?,
                w.instr_delta.slice(0, g * mt * ml.instr_delta)?,
                ig(0)?,
                u(g, "segments")?,
            ],
        )?;

        // Statistics.
        self.launch(
            "sum_terms",
            LaunchCfg::linear(1, 32, 0),
            &[
                w.terms.slice(0, s * N_TERMS)?,
                self.terms_acc.arg(),
                u(s, "samples")?,
            ],
        )?;
        if rim {
            self.launch(
                "count_active",
                LaunchCfg::linear(1, 32, 0),
                &[
                    w.mem_cache.slice(0, s * mc)?,
                    u(mc, "cache")?,
                    self.counts.arg(),
                    u(s, "samples")?,
                ],
            )?;
        }
        self.frames += s;
        Ok(())
    }

    /// Steps each module was active in the last gradient pass (empty for the LSTM memory).
    pub fn active_counts(&self) -> Result<Vec<u32>> {
        if self.layout.dims().memory != MemoryKind::Rim {
            return Ok(Vec::new());
        }
        let mut v = self.counts.download()?;
        v.truncate(self.ml.n);
        Ok(v)
    }

    /// One optimiser step on `groups`: the global L2 norm of their gradients (the fast group
    /// restricted to the modules active in the last pass when `mask_fast`), clipping to
    /// `max_norm`, then step `t` of `adam` (its learning rate, betas and eps; `adam.t` is not
    /// used). As `Optim::step` of the host trainer, entirely on the device; the norm is kept
    /// for [`CudaPolicy::take_stats`].
    pub fn adam_step(
        &mut self,
        groups: &[Group],
        mask_fast: bool,
        adam: &Adam,
        t: u64,
        max_norm: f32,
    ) -> Result<()> {
        if groups.is_empty() || groups.len() > 3 {
            return Err(bad("an optimiser step needs one to three groups"));
        }
        if self.n_norms >= NORM_LOG {
            return Err(bad(format!(
                "more than {NORM_LOG} optimiser steps without take_stats"
            )));
        }
        let sc = AdamScalars::new(adam, t)?;
        let counts_arg = |g: Group, masked: bool| {
            if masked && g == Group::Fast && self.layout.dims().memory == MemoryKind::Rim {
                self.counts.arg()
            } else {
                Arg::null::<u32>()
            }
        };
        let cfg_norm = LaunchCfg::linear(NORM_BLOCKS, THREADS, THREADS * 8);
        for (slot, &g) in groups.iter().enumerate() {
            let gi = group_index(g);
            let masked = mask_fast && g == Group::Fast;
            let tb = &self.tables[gi][usize::from(masked)];
            self.launch(
                "sumsq_masked",
                cfg_norm,
                &[
                    self.groups[gi].grads.arg(),
                    tb.off.arg(),
                    tb.prefix.arg(),
                    tb.module.arg(),
                    counts_arg(g, masked),
                    Arg::U32(tb.nranges),
                    self.partial.arg(),
                    Arg::U32(slot as u32 * NORM_BLOCKS),
                ],
            )?;
        }
        self.launch(
            "clip_finish",
            LaunchCfg::linear(1, 1, 0),
            &[
                self.partial.arg(),
                Arg::U32(groups.len() as u32 * NORM_BLOCKS),
                Arg::F32(max_norm),
                self.norms.arg(),
                Arg::U32(self.n_norms as u32),
                self.coef.arg(),
            ],
        )?;
        self.n_norms += 1;
        for &g in groups {
            let gi = group_index(g);
            let masked = mask_fast && g == Group::Fast;
            let tb = &self.tables[gi][usize::from(masked)];
            let dg = &self.groups[gi];
            self.launch(
                "adam_masked",
                crate::optim::range_config(tb.total),
                &[
                    dg.params.arg(),
                    dg.grads.arg(),
                    dg.m.arg(),
                    dg.v.arg(),
                    tb.off.arg(),
                    tb.prefix.arg(),
                    tb.module.arg(),
                    counts_arg(g, masked),
                    Arg::U32(tb.nranges),
                    self.coef.arg(),
                    Arg::F32(sc.neg_step),
                    Arg::F32(sc.bc2_sqrt),
                    Arg::F32(sc.w1),
                    Arg::F32(sc.b2),
                    Arg::F32(sc.w2),
                    Arg::F32(sc.eps),
                ],
            )?;
        }
        Ok(())
    }

    /// The statistics since the last call (waits for the device), and reset them.
    pub fn take_stats(&mut self) -> Result<PassStats> {
        let acc = self.terms_acc.download()?;
        let mut terms = [0.0f64; N_TERMS];
        terms.copy_from_slice(&acc[..N_TERMS]);
        let mut norms = vec![0.0f32; self.n_norms];
        self.norms.download_into(0, &mut norms)?;
        let out = PassStats {
            terms,
            frames: self.frames,
            norms,
        };
        self.terms_acc.fill_zero()?;
        self.frames = 0;
        self.n_norms = 0;
        Ok(out)
    }

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
        let d = *self.layout.dims();
        let ml = self.ml;
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
        let sl = ml.state_len();
        let (hi, mt, na) = (d.instr_hidden, d.max_tokens, d.n_actions);
        let bow = d.encoder == EncoderKind::Bow;
        let mut obs = Vec::with_capacity(n * 147);
        for o in inp.obs {
            push_obs(o, bow, &mut obs)?;
        }
        let mut toks = Vec::new();
        let mut idx = Vec::new();
        for (i, (tk, enc)) in inp.tokens.iter().zip(inp.encode).enumerate() {
            if *enc {
                pack_tokens(tk, mt, &mut toks)?;
                idx.push(u32_of(first + i, "environment")?);
            }
        }
        let reset: Vec<u8> = inp.reset.iter().map(|r| u8::from(*r)).collect();
        let rim = d.memory == MemoryKind::Rim;
        let u = |v: usize| -> Result<Arg> { Ok(Arg::U32(u32_of(v, "a size")?)) };
        let a = self.actor()?;
        let sb = &a.slots[slot];
        let k = idx.len();
        if k > 0 {
            sb.seg_tokens.upload_async_at(0, &toks)?;
            sb.seg_idx.upload_async_at(0, &idx)?;
            self.launch(
                "instr_fwd",
                LaunchCfg::linear(
                    u32_of(k, "segments")?,
                    SMALL_THREADS,
                    (ml.instr_fwd_smem * 4) as u32,
                ),
                &[
                    self.block_arg(Role::Instruction, false, 0)?,
                    sb.seg_tokens.slice(0, k * mt)?,
                    sb.instr_tmp.slice(0, k * hi)?,
                    sb.instr_cache.slice(0, k * ml.instr_cache)?,
                    sb.instr_xs.slice(0, k * mt * d.word_dim)?,
                    u(k)?,
                ],
            )?;
            self.launch(
                "scatter_rows",
                linear_cfg(k * hi),
                &[
                    a.instr.arg(),
                    sb.instr_tmp.slice(0, k * hi)?,
                    sb.seg_idx.slice(0, k)?,
                    u(hi)?,
                    u(k)?,
                ],
            )?;
        }
        sb.obs.upload_async_at(0, &obs)?;
        sb.reset.upload_async_at(0, &reset)?;
        self.launch(
            "encoder_fwd",
            LaunchCfg::linear(
                u32_of(n, "environments")?,
                SMALL_THREADS,
                (ml.enc_fwd_smem * 4) as u32,
            ),
            &[
                self.block_arg(Role::Encoder, false, 0)?,
                sb.obs.slice(0, n * 147)?,
                sb.x.slice(0, n * ml.input)?,
                u(ml.input)?,
                sb.enc_cache.slice(0, n * ml.enc_cache)?,
                u(n)?,
            ],
        )?;
        self.launch(
            "gather_rows",
            linear_cfg(n * hi),
            &[
                sb.x.slice(0, n * ml.input)?,
                u(ml.input)?,
                u(d.obs_features())?,
                a.instr.slice(first * hi, n * hi)?,
                a.iota.slice(0, n)?,
                u(hi)?,
                u(n)?,
            ],
        )?;
        let src = a.state.slice(first * sl, n * sl)?;
        let dst = if inp.commit {
            src
        } else {
            sb.state_tmp.slice(0, n * sl)?
        };
        let x = sb.x.slice(0, n * ml.input)?;
        let reset_arg = sb.reset.slice(0, n)?;
        let read = sb.state_read.slice(0, n * sl)?;
        if rim {
            let mut args = self.rim_weights()?;
            args.extend([
                x,
                src,
                reset_arg,
                read,
                dst,
                sb.mem_cache.slice(0, n * ml.rim_cache)?,
                sb.active.slice(0, n)?,
                u(n)?,
            ]);
            self.launch(
                "rim_fwd_step",
                Self::sample_cfg(n, ml.spb_rim, ml.rf_smem),
                &args,
            )?;
        } else {
            sb.active.zero_range(0, n)?;
            let mut args = self.lstm_weights()?.to_vec();
            args.extend([
                x,
                src,
                reset_arg,
                read,
                dst,
                sb.mem_cache.slice(0, n * ml.lstm_cache)?,
                u(n)?,
            ]);
            self.launch(
                "lstm_fwd_step",
                Self::sample_cfg(n, ml.spb_lstm, ml.lf_smem),
                &args,
            )?;
        }
        self.launch(
            "heads_fwd",
            Self::sample_cfg(n, ml.spb_heads, ml.hf_smem),
            &[
                self.block_arg(Role::Heads, false, 0)?,
                dst,
                u(sl)?,
                sb.logits.slice(0, n * na)?,
                sb.values.slice(0, n)?,
                sb.heads_cache.slice(0, n * ml.heads_cache)?,
                u(n)?,
            ],
        )?;
        // The outputs' copies are queued now, behind this step's kernels only: finishing this
        // slot waits for them, not for work queued later (the other slot's step).
        let tickets = [
            sb.logits.download_async(0, n * na)?,
            sb.values.download_async(0, n)?,
            sb.active.download_async(0, n)?,
            sb.state_read.download_async(0, n * sl)?,
        ];
        if let Some(a) = self.actor.as_mut() {
            a.slots[slot].pending = Some(tickets);
            a.slots[slot].n = n;
        }
        Ok(())
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
