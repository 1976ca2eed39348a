//! `metarim model info`: parameter counts and memory per group of a preset, in every mode; and
//! [`StepWork`], the buffers of stepping a core policy one observation at a time.

use std::fmt::Write;

use anyhow::Result;
use metarim_core::env::Observation;
use metarim_core::nn::dims::ModelDims;
use metarim_core::nn::params::{Group, Layout, Mode};
use metarim_core::nn::policy::{
    chunk_work_len, fast_work_len, scratch_len, state_len, step_cache_len, Policy,
};
use metarim_core::nn::scalar::Real;

/// The mode named `name` (`meta-rim`, `reversed`, `joint`, `lstm`).
pub fn mode(name: &str) -> Result<Mode> {
    Mode::from_name(name).ok_or_else(|| {
        anyhow::anyhow!("unknown mode {name:?} (expected meta-rim, reversed, joint or lstm)")
    })
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// A readable report of the layout of `dims` in `mode`: one line per tensor, then per-group
/// totals and the memory of acting and of on-device fast adaptation over a `window`-step chunk.
pub fn info(name: &str, dims: &ModelDims, mode: Mode, window: usize) -> Result<String> {
    let layout = Layout::new(dims, mode)?;
    let d = layout.dims();
    let mut s = String::new();
    let r = &d.rim;
    writeln!(
        s,
        "preset {name}, mode {}: memory {:?}, {} modules x {} hidden, k={}, cell {:?}, input {} \
         (encoder {:?}{}{} {:?} + instruction {}), d_k {}, d_v {}, {} comm heads x {}",
        mode.name(),
        d.memory,
        r.n_modules,
        r.hidden,
        r.k_active,
        r.cell,
        r.input,
        d.encoder,
        if d.film { "+FiLM" } else { "" },
        if d.feature_norm { "+norm" } else { "" },
        d.conv_channels,
        d.instr_hidden,
        r.d_k,
        r.d_v,
        if r.communication { r.c_heads } else { 0 },
        r.c_k
    )?;
    writeln!(
        s,
        "{:<8} {:<28} {:>18} {:>10}",
        "group", "tensor", "shape", "params"
    )?;
    for e in layout.entries() {
        let shape = e
            .dims()
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("x");
        writeln!(
            s,
            "{:<8} {:<28} {:>18} {:>10}",
            e.group.name(),
            e.name,
            shape,
            e.len
        )?;
    }
    let total = layout.total_len();
    for g in Group::ALL {
        let n = layout.group_len(g);
        writeln!(
            s,
            "group {:<5}: {:>9} params, {} as f32, {} as f16",
            g.name(),
            n,
            kib(4 * n),
            kib(2 * n)
        )?;
    }
    writeln!(
        s,
        "total       : {:>9} params, {} as f32",
        total,
        kib(4 * total)
    )?;
    let fast = layout.group_len(Group::Fast);
    let state = state_len(d);
    let step = step_cache_len(d);
    writeln!(
        s,
        "acting      : state {} + step activations {} + scratch {} (f32)",
        kib(4 * state),
        kib(4 * step),
        kib(4 * scratch_len(d))
    )?;
    // On the device (core::adapt): the window keeps each step's memory input and state (plus
    // a few scalars of targets) and the fast-only backward recomputes the rest.
    let window_bytes = window * (4 * (d.memory_input() + state) + 20);
    let lean = 4 * (2 * fast + fast_work_len(d)) + window_bytes;
    writeln!(
        s,
        "fast adaptation over {window} steps (f32, core::adapt, SGD): fast params + grads {} + window {} + work {} = {}",
        kib(8 * fast),
        kib(window_bytes),
        kib(4 * fast_work_len(d)),
        kib(lean)
    )?;
    writeln!(
        s,
        "  (the trainer's full-policy BPTT over {window} steps would need {} of work)",
        kib(4 * chunk_work_len(d, window))
    )?;
    Ok(s)
}

/// The buffers of stepping a core [`Policy`] one observation at a time, as evaluation, replay
/// and the parity tests do: sized once for a model's dims and reused every step, so each call
/// site names only what differs (observation, instruction embedding, incoming state).
#[derive(Clone, Debug)]
pub struct StepWork<S> {
    /// The outgoing memory state of the last [`StepWork::step`] (`state_len` long).
    pub next: Vec<S>,
    /// The action logits of the last step (`n_actions` long).
    pub logits: Vec<S>,
    /// The last step's activations ([`step_cache_len`]; which modules were active is read with
    /// [`Policy::active_in_cache`]).
    pub cache: Vec<S>,
    scratch: Vec<S>,
}

impl<S: Real> StepWork<S> {
    /// Zeroed buffers for a model of dims `d`.
    pub fn new(d: &ModelDims) -> Self {
        Self {
            next: vec![S::ZERO; state_len(d)],
            logits: vec![S::ZERO; d.n_actions],
            cache: vec![S::ZERO; step_cache_len(d)],
            scratch: vec![S::ZERO; scratch_len(d)],
        }
    }

    /// [`Policy::encode_instruction`] of `tokens` into `out` (`instr_hidden` long).
    pub fn encode_instruction(
        &mut self,
        policy: &Policy<'_, S>,
        tokens: &[u16],
        out: &mut [S],
    ) -> Result<(), metarim_core::Error> {
        policy.encode_instruction(tokens, out, &mut self.scratch)
    }

    /// [`Policy::step`] from `obs`, the instruction embedding `instr` and the incoming `state`:
    /// the outgoing state goes to [`StepWork::next`], the logits and cache to theirs; returns the
    /// value.
    pub fn step(
        &mut self,
        policy: &Policy<'_, S>,
        obs: &Observation,
        instr: &[S],
        state: &[S],
    ) -> Result<S, metarim_core::Error> {
        policy.step(
            obs,
            instr,
            state,
            &mut self.next,
            &mut self.logits,
            &mut self.cache,
            &mut self.scratch,
        )
    }
}
