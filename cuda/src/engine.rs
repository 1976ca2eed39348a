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
//! The work is split by idea: `launch` holds the launches shared by both paths (the forward
//! kernels, the weight-gradient reduction) over typed argument lists ([`crate::args`]); `pass`
//! the gradient pass in its phases; `act` the acting path; this file the buffers, parameters,
//! optimiser step and statistics.
//!
//! Invariants:
//! - The layout is the core's ([`Layout`]): group buffers are [`crate::groups::GroupVecs`],
//!   element for element, so parameters move between backends unchanged.
//! - Every kernel launch is checked against its declared parameter list; every buffer extent
//!   against its allocation; every host input (tokens, cell codes, actions, lengths) is
//!   validated before anything is launched, with an error naming what is wrong.
//! - The same code runs on a CUDA device and on the CPU emulator ([`crate::emu`]).

mod act;
mod launch;
mod pass;

use std::collections::HashMap;
use std::sync::Arc;

use metarim_core::env::Observation;
use metarim_core::mission::vocab::VOCAB_SIZE;
use metarim_core::nn::dims::MemoryKind;
use metarim_core::nn::optim::Adam;
use metarim_core::nn::params::{Group, GroupBufs, GroupBufsMut, Layout};
use metarim_core::nn::policy::ChunkStep;

use crate::args::{AdamMasked, ClipFinish, LayoutInfo, SumsqMasked};
use crate::exec::{DevBuf, Exec, Func, LaunchCfg, Ptr};
use crate::kernel::Kernel;
use crate::layout::{ModelLayout, N_TERMS};
use crate::optim::{AdamScalars, DeviceGroup, RangeTable};
use crate::{Error, Result};

use act::Actor;
use pass::{Staging, Work};

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

/// The fast group's ranges tagged with their module (-1: shared), as `Layout::fast_ranges`
/// selects them: every per-module tensor split into one range per module.
fn fast_module_ranges(layout: &Layout) -> Vec<(usize, usize, i32)> {
    let n = layout.dims().rim.n_modules;
    let mut fast_ranges = Vec::new();
    for e in layout.entries().iter().filter(|e| e.group == Group::Fast) {
        if e.kind.is_per_module() && n > 0 {
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
    fast_ranges
}

impl CudaPolicy {
    /// Load every kernel for `layout`'s model on `exec`, check the compiled layout against the
    /// host's, and upload `params` (Adam moments start at zero).
    pub fn new(exec: Arc<dyn Exec>, layout: &Layout, params: GroupBufs<'_, f32>) -> Result<Self> {
        layout.check_bufs(&params)?;
        let ml = ModelLayout::new(layout.dims())?;
        let funcs = Self::load_kernels(&exec, &ml)?;
        let mk = |g: Group| DeviceGroup::zeros(&exec, layout.group_len(g));
        let groups = [mk(Group::Fast)?, mk(Group::Slow)?, mk(Group::Other)?];
        let whole =
            |g: Group| GroupTable::new(&exec, layout.group_len(g), &[(0, layout.group_len(g), -1)]);
        let fast_len = layout.group_len(Group::Fast);
        let tables = [
            [
                whole(Group::Fast)?,
                GroupTable::new(&exec, fast_len, &fast_module_ranges(layout))?,
            ],
            [whole(Group::Slow)?, whole(Group::Slow)?],
            [whole(Group::Other)?, whole(Group::Other)?],
        ];
        let n = layout.dims().rim.n_modules;
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

    /// Compile and load every kernel file for the model `ml`, by entry-point name.
    fn load_kernels(exec: &Arc<dyn Exec>, ml: &ModelLayout) -> Result<HashMap<&'static str, Func>> {
        let defines = ml.defines();
        let mut funcs = HashMap::new();
        for k in Kernel::ALL {
            let defs = if k.needs_model() { &defines[..] } else { &[] };
            for f in exec.load(k, defs)? {
                funcs.insert(f.entry.name, f);
            }
        }
        Ok(funcs)
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

    /// The compiled kernels' layout constants (`layout_info`) against the host's.
    fn check_layout(&self) -> Result<()> {
        let out = DevBuf::<u32>::zeros(&self.exec, crate::layout::LAYOUT_LEN)?;
        self.run(LaunchCfg::linear(1, 32, 0), LayoutInfo { out: out.ptr() })?;
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

    /// `bufs` (checked against the layout) into the device buffer that `which` picks in every
    /// group: the one copy the parameter and gradient uploads share.
    fn upload_groups(
        &self,
        bufs: GroupBufs<'_, f32>,
        which: fn(&DeviceGroup) -> &DevBuf<f32>,
    ) -> Result<()> {
        self.layout.check_bufs(&bufs)?;
        for g in Group::ALL {
            which(&self.groups[group_index(g)]).upload(host_group(&bufs, g))?;
        }
        Ok(())
    }

    /// The device buffer that `which` picks in every group into `out` (checked against the
    /// layout): the one copy the parameter and gradient downloads share.
    fn download_groups(
        &self,
        mut out: GroupBufsMut<'_, f32>,
        which: fn(&DeviceGroup) -> &DevBuf<f32>,
    ) -> Result<()> {
        self.layout.check_bufs(&out.as_ref())?;
        for g in Group::ALL {
            which(&self.groups[group_index(g)]).download_into(0, host_group_mut(&mut out, g))?;
        }
        Ok(())
    }

    /// Overwrite the device parameters with `params`.
    pub fn upload_params(&mut self, params: GroupBufs<'_, f32>) -> Result<()> {
        self.upload_groups(params, |d| &d.params)
    }

    /// The device parameters into `out`.
    pub fn download_params(&self, out: GroupBufsMut<'_, f32>) -> Result<()> {
        self.download_groups(out, |d| &d.params)
    }

    /// The gradients of the last pass into `out`.
    pub fn download_grads(&self, out: GroupBufsMut<'_, f32>) -> Result<()> {
        self.download_groups(out, |d| &d.grads)
    }

    /// Overwrite the gradients with `grads` (the trainer steps on a mean it summed itself).
    pub fn upload_grads(&mut self, grads: GroupBufs<'_, f32>) -> Result<()> {
        self.upload_groups(grads, |d| &d.grads)
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

    /// Steps each module was active in the last gradient pass (empty for the LSTM memory).
    pub fn active_counts(&self) -> Result<Vec<u32>> {
        if self.layout.dims().memory != MemoryKind::Rim {
            return Ok(Vec::new());
        }
        let mut v = self.counts.download()?;
        v.truncate(self.ml.n);
        Ok(v)
    }

    // ---- the optimiser step ----------------------------------------------------------------

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
        self.clip_gradients(groups, mask_fast, max_norm)?;
        self.n_norms += 1;
        for &g in groups {
            self.adam_update(g, mask_fast, &sc)?;
        }
        Ok(())
    }

    /// The range table of group `g` in an optimiser step, and the activity counts that mask it
    /// (null unless it is the fast group of a RIM model, masked).
    fn step_table(&self, g: Group, mask_fast: bool) -> (&GroupTable, Ptr<u32>) {
        let masked = mask_fast && g == Group::Fast;
        let tb = &self.tables[group_index(g)][usize::from(masked)];
        let counts = if masked && self.layout.dims().memory == MemoryKind::Rim {
            self.counts.ptr()
        } else {
            Ptr::NULL
        };
        (tb, counts)
    }

    /// The global gradient norm of `groups` (each group's partial sums of squares, then their
    /// total) into the norm log, and the clip coefficient for `max_norm` into `coef`.
    fn clip_gradients(&self, groups: &[Group], mask_fast: bool, max_norm: f32) -> Result<()> {
        let cfg_norm = LaunchCfg::linear(NORM_BLOCKS, THREADS, THREADS * 8);
        for (slot, &g) in groups.iter().enumerate() {
            let (tb, counts) = self.step_table(g, mask_fast);
            let args = SumsqMasked {
                grads: self.groups[group_index(g)].grads.ptr(),
                range_off: tb.off.ptr(),
                range_prefix: tb.prefix.ptr(),
                range_module: tb.module.ptr(),
                counts,
                nranges: tb.nranges,
                partial: self.partial.ptr(),
                slot: slot * NORM_BLOCKS as usize,
            };
            self.run(cfg_norm, args)?;
        }
        let args = ClipFinish {
            partial: self.partial.ptr(),
            n: groups.len() * NORM_BLOCKS as usize,
            max_norm,
            norm_log: self.norms.ptr(),
            k: self.n_norms,
            coef: self.coef.ptr(),
        };
        self.run(LaunchCfg::linear(1, 1, 0), args)
    }

    /// Adam with the scalars `sc` on group `g`'s (possibly masked) ranges, the gradients times
    /// the clip coefficient.
    fn adam_update(&self, g: Group, mask_fast: bool, sc: &AdamScalars) -> Result<()> {
        let (tb, counts) = self.step_table(g, mask_fast);
        let dg = &self.groups[group_index(g)];
        let args = AdamMasked {
            params: dg.params.ptr(),
            grads: dg.grads.ptr(),
            m: dg.m.ptr(),
            v: dg.v.ptr(),
            range_off: tb.off.ptr(),
            range_prefix: tb.prefix.ptr(),
            range_module: tb.module.ptr(),
            counts,
            nranges: tb.nranges,
            coef: self.coef.ptr(),
            neg_step: sc.neg_step,
            bc2_sqrt: sc.bc2_sqrt,
            w1: sc.w1,
            b2: sc.b2,
            w2: sc.w2,
            eps: sc.eps,
        };
        self.run(crate::optim::range_config(tb.total), args)
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
}
