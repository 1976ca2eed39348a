//! Shared by the parity tests on the CPU emulator (`emu.rs`) and on a GPU (`parity.rs`): random
//! models and minibatches from real episodes, the CPU reference of a gradient pass and of one
//! PPO update (the host trainer's `compute_grads` written out on the core, and the core's
//! optimiser step, `metarim_core::nn::split::clip_adam_step`, which the trainer runs), and the
//! comparisons.
#![allow(dead_code)]

use std::sync::Arc;

use metarim_core::env::{Action, Env, Observation};
use metarim_core::levels::Level;
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::dims::{
    CellKind, EncoderKind, MemoryKind, ModelDims, RimDims, PAPER, SMALL, TINY,
};
use metarim_core::nn::init::InitConfig;
use metarim_core::nn::loss::{PpoCoefs, PpoSample};
use metarim_core::nn::optim::{Adam, Range};
use metarim_core::nn::params::{Group, Layout, Mode};
use metarim_core::nn::policy::{
    chunk_work_len, init_params, state_len, ChunkStats, ChunkStep, Policy,
};
use metarim_core::nn::rim::CommGrad;
use metarim_core::nn::split::{clip_adam_step, OtherGroup, Phase, StepBuffers};
use metarim_core::rng::Pcg32;
use metarim_cuda::engine::{ActInput, CudaPolicy, PassChunk};
use metarim_cuda::exec::Exec;
use metarim_cuda::optim::AdamGroup;

/// Relative tolerance of every parity check (f32).
pub const TOL: f64 = 1e-4;

/// `#[test]` functions that each run one shared check on an executor: `name => check(args);`
/// is the test `name`, which takes the executor from `$exec()` (returning when that is `None`:
/// no device or no emulator, after it printed why) and calls `check(&exec, args)`. The config
/// families' tests (gradient pass, one PPO update per mode, acting; for the plain, FiLM and
/// LSTM-cell configs) are written with it in `parity.rs` (GPU) and `emu.rs` (emulator), one
/// line each, so a family is its configs and modes and the skip is written once.
macro_rules! exec_tests {
    ($exec:ident; $($(#[$attr:meta])* $name:ident => $check:ident($($arg:expr),* $(,)?);)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                let Some(exec) = $exec() else { return };
                $check(&exec, $($arg),*);
            }
        )+
    };
}
pub(crate) use exec_tests;

pub use metarim_cuda::groups::GroupVecs;

/// A small model exercising the kernels' other branches: two input heads, the bag-of-words
/// encoder, odd sizes.
pub fn small_dims(bow: bool, comm: bool) -> ModelDims {
    ModelDims {
        encoder: if bow {
            EncoderKind::Bow
        } else {
            EncoderKind::Conv
        },
        conv_channels: [4, 6, 8],
        bow_dim: 3,
        film: false,
        feature_norm: false,
        word_dim: 6,
        instr_hidden: 5,
        max_tokens: MAX_TOKENS,
        memory: MemoryKind::Rim,
        rim: RimDims {
            n_modules: 5,
            k_active: 3,
            hidden: 6,
            input: 8 + 5,
            d_k: 4,
            d_v: 5,
            in_heads: 2,
            c_heads: 2,
            c_k: 3,
            cell: CellKind::Gru,
            communication: comm,
            comm_update: metarim_core::nn::dims::CommUpdate::Residual,
        },
        head_hidden: 7,
        n_actions: 7,
    }
}

/// Every (name, dims) the parity tests run.
pub fn configs(include_paper: bool) -> Vec<(&'static str, ModelDims)> {
    let mut v = vec![
        ("Tiny", TINY),
        ("small+bow", small_dims(true, true)),
        ("small-comm", small_dims(false, false)),
    ];
    if include_paper {
        v.push(("Paper", PAPER));
    }
    v
}

/// The FiLM-conditioned encoder's (name, dims): Tiny with the bag of words (the GoToLocal
/// FiLM configuration), the small model with the plain conv input (odd sizes, FiLM without
/// the embedding rows), and Tiny with the bag of words, FiLM and the feature normalisation (the
/// grounding suites' encoder); with `include_small` also the Small preset (bag of words and
/// FiLM, the main job's model).
pub fn film_configs(include_small: bool) -> Vec<(&'static str, ModelDims)> {
    let mut v = vec![
        (
            "Tiny bow+FiLM",
            ModelDims {
                encoder: EncoderKind::Bow,
                film: true,
                ..TINY
            },
        ),
        (
            "small conv+FiLM",
            ModelDims {
                film: true,
                ..small_dims(false, true)
            },
        ),
        (
            "Tiny bow+FiLM+norm",
            ModelDims {
                encoder: EncoderKind::Bow,
                film: true,
                feature_norm: true,
                ..TINY
            },
        ),
    ];
    if include_small {
        v.push(("Small", SMALL));
    }
    v
}

/// RIM modules with LSTM cells (the state `[h | c]`): Tiny (communication), the small model
/// without communication (inactive modules' cells not computed) and Tiny with bag of words +
/// FiLM; with `include_small` also the Small preset with LSTM cells.
pub fn lstm_cell_configs(include_small: bool) -> Vec<(&'static str, ModelDims)> {
    let lstm = |d: ModelDims| d.with_cell(CellKind::Lstm);
    let mut v = vec![
        ("Tiny lstm-cells", lstm(TINY)),
        ("small-comm lstm-cells", lstm(small_dims(false, false))),
        (
            "Tiny bow+FiLM lstm-cells",
            lstm(ModelDims {
                encoder: EncoderKind::Bow,
                film: true,
                ..TINY
            }),
        ),
    ];
    if include_small {
        v.push(("Small lstm-cells", lstm(SMALL)));
    }
    v
}

/// The modes that use a RIM.
pub const RIM_MODES: [Mode; 3] = [Mode::MetaRim, Mode::Reversed, Mode::Joint];

pub const MODES: [Mode; 4] = [Mode::MetaRim, Mode::Reversed, Mode::Joint, Mode::Lstm];

/// One PPO update in each of `modes` for every model of `configs`, against the host trainer's
/// arithmetic ([`ppo_update_parity`]).
pub fn ppo_updates_match(exec: &Arc<dyn Exec>, configs: &[(&str, ModelDims)], modes: &[Mode]) {
    for (name, dims) in configs {
        for mode in modes {
            ppo_update_parity(exec, name, dims, *mode);
        }
    }
}

/// Acting in each of `modes` for every model of `configs` against `Policy::step`
/// ([`act_parity`] over `envs` environments and `steps` steps), printing each worst error.
pub fn acting_matches(
    exec: &Arc<dyn Exec>,
    configs: &[(&str, ModelDims)],
    modes: &[Mode],
    envs: usize,
    steps: usize,
) {
    for (name, dims) in configs {
        for mode in modes {
            let e = act_parity(exec, dims, *mode, envs, steps);
            println!("{name} {}: acting max rel {e:.2e}", mode.name());
        }
    }
}

/// A freshly initialised model (BabyAI's schemes), with the other group perturbed so biases
/// are not all zero.
pub fn model(dims: &ModelDims, mode: Mode, seed: u64) -> (Layout, GroupVecs) {
    let layout = Layout::new(dims, mode).expect("layout");
    let mut p = GroupVecs::zeros(&layout);
    init_params(&layout, &InitConfig::BABYAI, seed, p.bufs_mut()).expect("init");
    let mut rng = Pcg32::new(seed ^ 0xb1a5);
    for g in [Group::Fast, Group::Slow, Group::Other] {
        for v in p.group_mut(g).iter_mut() {
            *v += (rng.gen_f32() - 0.5) * 0.02;
        }
    }
    // FiLM starts as the identity (its generator is zero): give it values that modulate
    // visibly (gamma, beta of order 0.1 to 0.5), so the parity covers the modulation.
    for e in layout
        .entries()
        .iter()
        .filter(|e| e.name.contains(".film."))
    {
        for v in &mut p.group_mut(e.group)[e.range()] {
            *v += (rng.gen_f32() - 0.5) * 0.3;
        }
    }
    (layout, p)
}

/// One chunk of recorded steps.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub obs: Vec<Observation>,
    pub tokens: Vec<[u16; MAX_TOKENS]>,
    pub starts: Vec<bool>,
    pub samples: Vec<PpoSample<f32>>,
    pub init: Vec<f32>,
}

impl Chunk {
    pub fn steps(&self) -> Vec<ChunkStep<'_, f32>> {
        (0..self.obs.len())
            .map(|t| ChunkStep {
                obs: &self.obs[t],
                tokens: &self.tokens[t],
                episode_start: self.starts[t],
                sample: self.samples[t],
            })
            .collect()
    }
}

fn new_episode(env: &mut Env, rng: &mut Pcg32, tokens: &mut [u16; MAX_TOKENS]) {
    let level = Level::from_id("BabyAI-GoToLocal-v0").expect("level");
    level.reset(env, rng.next_u64()).expect("reset");
    *tokens = [0; MAX_TOKENS];
    tokenize(env.mission.as_str(), tokens).expect("tokenize");
}

/// `chunks` chunks of `len` steps from random-action episodes on GoToLocal, with episodes
/// starting inside chunks (probability `p_start` per step, and at step 0 of some chunks), PPO
/// targets spread around the current policy so clipping engages on both sides.
pub fn minibatch(
    dims: &ModelDims,
    chunks: usize,
    len: usize,
    p_start: f64,
    seed: u64,
) -> Vec<Chunk> {
    let mut rng = Pcg32::new(seed);
    let mut env = Env::new(8, 8).expect("env");
    let sl = state_len(dims);
    let mut out = Vec::new();
    for c in 0..chunks {
        let mut tokens = [0u16; MAX_TOKENS];
        new_episode(&mut env, &mut rng, &mut tokens);
        let mut ch = Chunk {
            obs: Vec::new(),
            tokens: Vec::new(),
            starts: Vec::new(),
            samples: Vec::new(),
            init: (0..sl).map(|_| (rng.gen_f32() - 0.5) * 0.8).collect(),
        };
        for t in 0..len {
            let start = (t == 0 && c % 3 == 1) || (t > 0 && rng.gen_f64() < p_start);
            if start && t > 0 {
                new_episode(&mut env, &mut rng, &mut tokens);
            }
            ch.obs.push(env.observation());
            ch.tokens.push(tokens);
            ch.starts.push(start);
            let action = rng.below(dims.n_actions as u32) as usize;
            ch.samples.push(PpoSample {
                action,
                old_logprob: -(dims.n_actions as f32).ln() + (rng.gen_f32() - 0.5) * 0.6,
                old_value: (rng.gen_f32() - 0.5) * 0.5,
                advantage: (rng.gen_f32() - 0.5) * 2.0,
                ret: (rng.gen_f32() - 0.5) * 2.0,
            });
            let out = env.step(Action::ALL[action]);
            if out.terminated || out.truncated {
                new_episode(&mut env, &mut rng, &mut tokens);
            }
        }
        out.push(ch);
    }
    out
}

pub fn coefs() -> PpoCoefs<f32> {
    PpoCoefs::babyai()
}

/// The CPU reference of one gradient pass (the host trainer's compute_grads): the mean loss
/// gradient over every step of every chunk, chunk by chunk.
pub fn cpu_grads(
    layout: &Layout,
    params: &GroupVecs,
    chunks: &[Chunk],
) -> (GroupVecs, ChunkStats<f32>) {
    let policy = Policy::new(layout, params.bufs()).expect("policy");
    let total: usize = chunks.iter().map(|c| c.obs.len()).sum();
    let scale = 1.0 / total as f32;
    let mut g = GroupVecs::zeros(layout);
    let mut stats = ChunkStats::over(0);
    for c in chunks {
        let steps = c.steps();
        let mut work = vec![0.0f32; chunk_work_len(layout.dims(), steps.len())];
        let st = policy
            .chunk_backward(
                &steps,
                &c.init,
                &coefs(),
                scale,
                CommGrad::Blocked,
                g.bufs_mut(),
                &mut work,
            )
            .expect("chunk_backward");
        stats.accumulate(&st);
    }
    (g, stats)
}

/// The same pass on `exec`; returns the gradients and the device's statistics.
pub fn device_grads(
    exec: &Arc<dyn Exec>,
    layout: &Layout,
    params: &GroupVecs,
    chunks: &[Chunk],
) -> (GroupVecs, metarim_cuda::engine::PassStats, Vec<u32>) {
    let mut p =
        CudaPolicy::new(exec.clone(), layout, params.bufs()).unwrap_or_else(|e| panic!("{e}"));
    let steps: Vec<Vec<ChunkStep<'_, f32>>> = chunks.iter().map(Chunk::steps).collect();
    let pass = pass_chunks(&steps, chunks);
    let total: usize = chunks.iter().map(|c| c.obs.len()).sum();
    p.grad_pass(&pass, &coefs(), 1.0 / total as f32)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = GroupVecs::zeros(layout);
    p.download_grads(g.bufs_mut())
        .unwrap_or_else(|e| panic!("{e}"));
    let counts = p.active_counts().unwrap_or_else(|e| panic!("{e}"));
    let stats = p.take_stats().unwrap_or_else(|e| panic!("{e}"));
    (g, stats, counts)
}

/// Largest error of `got` against `want` relative to max(|want_i|, 1e-2 * max_j |want_j|)
/// (elements a hundred times smaller than the tensor's largest are compared at that scale, so
/// cancellation in near-zero gradients does not count as a relative error). Also the number of
/// elements that differ in any bit.
pub fn rel_error(got: &[f32], want: &[f32]) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let floor = (1e-2 * scale).max(1e-30);
    let mut worst = 0.0f64;
    let mut differ = 0;
    for (a, b) in got.iter().zip(want) {
        if a.to_bits() != b.to_bits() {
            differ += 1;
        }
        let (a, b) = (f64::from(*a), f64::from(*b));
        let e = if a.is_nan() || b.is_nan() {
            if a.is_nan() && b.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (a - b).abs() / b.abs().max(floor)
        };
        worst = worst.max(e);
    }
    (worst, differ)
}

/// Compare every tensor of two group sets; panics naming the worst tensor beyond `tol`.
pub fn compare_tensors(
    what: &str,
    layout: &Layout,
    got: &GroupVecs,
    want: &GroupVecs,
    tol: f64,
) -> f64 {
    let mut worst = 0.0f64;
    for e in layout.entries() {
        let r = e.range();
        let (err, differ) = rel_error(&got.group(e.group)[r.clone()], &want.group(e.group)[r]);
        if err > tol || std::env::var_os("METARIM_PARITY_VERBOSE").is_some() {
            println!(
                "  {what} {}: max rel {err:.2e}, {differ} of {} differ",
                e.name, e.len
            );
        }
        assert!(
            err <= tol,
            "{what} {}: relative error {err:e} > {tol:e}",
            e.name
        );
        worst = worst.max(err);
    }
    worst
}

/// Relative error of two scalars (at scale max(|b|, 1)).
pub fn scalar_rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

/// The CPU reference of one optimiser step: the core's [`clip_adam_step`] (what the host
/// trainer runs), with the `other` group slow. Returns the pre-clip norm.
#[allow(clippy::too_many_arguments)]
pub fn cpu_adam_step(
    layout: &Layout,
    params: &mut GroupVecs,
    grads: &mut GroupVecs,
    m: &mut GroupVecs,
    v: &mut GroupVecs,
    phase: Phase,
    active: &[bool],
    adam: &mut Adam,
    max_norm: f32,
) -> f32 {
    let bufs = StepBuffers {
        params: params.bufs_mut(),
        grads: grads.bufs_mut(),
        m: m.bufs_mut(),
        v: v.bufs_mut(),
    };
    clip_adam_step(
        layout,
        bufs,
        adam,
        phase,
        OtherGroup::Slow,
        active,
        max_norm,
    )
    .expect("optimiser step")
    .expect("a finite gradient norm")
}

/// Acting parity: `steps` batched steps of `n` environments on the device against
/// `Policy::step` per environment (instruction encoded at episode starts), comparing logits,
/// values, activity and the states read. Returns the worst relative error.
pub fn act_parity(
    exec: &Arc<dyn Exec>,
    dims: &ModelDims,
    mode: Mode,
    n: usize,
    steps: usize,
) -> f64 {
    let (layout, params) = model(dims, mode, 11);
    let policy = Policy::new(&layout, params.bufs()).expect("policy");
    let d = *layout.dims();
    let sl = state_len(&d);
    let mut dev =
        CudaPolicy::new(exec.clone(), &layout, params.bufs()).unwrap_or_else(|e| panic!("{e}"));
    dev.actor_init(n).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Pcg32::new(5);
    let mut envs: Vec<Env> = (0..n).map(|_| Env::new(8, 8).expect("env")).collect();
    let mut tokens = vec![[0u16; MAX_TOKENS]; n];
    for (e, t) in envs.iter_mut().zip(tokens.iter_mut()) {
        new_episode(e, &mut rng, t);
    }
    let mut states = vec![0.0f32; n * sl];
    let mut instr = vec![0.0f32; n * d.instr_hidden];
    let mut starts = vec![true; n];
    let mut scratch = vec![0.0f32; metarim_core::nn::policy::scratch_len(&d)];
    let mut cache = vec![0.0f32; metarim_core::nn::policy::step_cache_len(&d)];
    let (mut next, mut logits) = (vec![0.0f32; sl], vec![0.0f32; d.n_actions]);
    let mut worst = 0.0f64;
    for step in 0..steps {
        let obs: Vec<Observation> = envs.iter().map(Env::observation).collect();
        let encode: Vec<bool> = (0..n).map(|i| starts[i] || step == 0).collect();
        // The device computes both halves in its two slots.
        let half = n / 2;
        let toks: Vec<&[u16]> = tokens.iter().map(|t| &t[..]).collect();
        let mut outs = Vec::new();
        for (slot, (a, b)) in [(0, half), (half, n)].into_iter().enumerate() {
            if a == b {
                continue;
            }
            let inp = ActInput {
                obs: &obs[a..b],
                tokens: &toks[a..b],
                encode: &encode[a..b],
                reset: &starts[a..b],
                commit: true,
            };
            dev.act_submit(slot, a, &inp)
                .unwrap_or_else(|e| panic!("{e}"));
            outs.push((slot, a, b));
        }
        let mut got_logits = vec![0.0f32; n * d.n_actions];
        let mut got_values = vec![0.0f32; n];
        let mut got_active = vec![0u32; n];
        let mut got_state_in = vec![0.0f32; n * sl];
        for (slot, a, b) in outs {
            let o = dev.act_finish(slot).unwrap_or_else(|e| panic!("{e}"));
            got_logits[a * d.n_actions..b * d.n_actions].copy_from_slice(&o.logits);
            got_values[a..b].copy_from_slice(&o.values);
            got_active[a..b].copy_from_slice(&o.active);
            got_state_in[a * sl..b * sl].copy_from_slice(&o.state_in);
        }
        let mut want_logits = vec![0.0f32; n * d.n_actions];
        let mut want_values = vec![0.0f32; n];
        let mut want_active = vec![0u32; n];
        let mut want_state_in = vec![0.0f32; n * sl];
        for i in 0..n {
            if encode[i] {
                policy
                    .encode_instruction(
                        &tokens[i],
                        &mut instr[i * d.instr_hidden..(i + 1) * d.instr_hidden],
                        &mut scratch,
                    )
                    .expect("instr");
            }
            if starts[i] {
                states[i * sl..(i + 1) * sl].fill(0.0);
            }
            want_state_in[i * sl..(i + 1) * sl].copy_from_slice(&states[i * sl..(i + 1) * sl]);
            let v = policy
                .step(
                    &obs[i],
                    &instr[i * d.instr_hidden..(i + 1) * d.instr_hidden],
                    &states[i * sl..(i + 1) * sl],
                    &mut next,
                    &mut logits,
                    &mut cache,
                    &mut scratch,
                )
                .expect("step");
            want_values[i] = v;
            want_logits[i * d.n_actions..(i + 1) * d.n_actions].copy_from_slice(&logits);
            if d.memory == MemoryKind::Rim {
                let act = policy.active_in_cache(&cache);
                want_active[i] = act
                    .iter()
                    .enumerate()
                    .fold(0, |m, (k, a)| m | (u32::from(*a) << k));
            }
            states[i * sl..(i + 1) * sl].copy_from_slice(&next);
        }
        for (what, g, w) in [
            ("logits", &got_logits, &want_logits),
            ("values", &got_values, &want_values),
            ("state read", &got_state_in, &want_state_in),
        ] {
            let (e, _) = rel_error(g, w);
            assert!(e <= TOL, "step {step} {what}: relative error {e:e}");
            worst = worst.max(e);
        }
        assert_eq!(got_active, want_active, "step {step}: active modules");
        // Random actions; episodes restart at random (as at episode ends).
        for i in 0..n {
            let a = rng.below(d.n_actions as u32) as usize;
            envs[i].step(Action::ALL[a]);
            starts[i] = rng.gen_f64() < 0.15;
            if starts[i] {
                new_episode(&mut envs[i], &mut rng, &mut tokens[i]);
            }
        }
    }
    // The device's states match the CPU's after the last step.
    let dev_states = dev.states().unwrap_or_else(|e| panic!("{e}"));
    let (e, _) = rel_error(&dev_states, &states);
    assert!(e <= TOL, "final states: relative error {e:e}");
    worst.max(e)
}

/// One PPO update: plain PPO (two steps on every group) for joint and lstm, two inner (fast,
/// active modules only) and one outer (slow + other) step for the meta modes, each on its own
/// gradient pass and minibatch, on `exec` against the host trainer's arithmetic on the core:
/// parameters and both moments within [`TOL`], the gradient norms too, and everything the CPU
/// left untouched bit-identical.
pub fn ppo_update_parity(
    exec: &Arc<dyn Exec>,
    name: &str,
    dims: &metarim_core::nn::dims::ModelDims,
    mode: Mode,
) {
    let (layout, params) = model(dims, mode, 21);
    let phases = if mode.is_meta() {
        vec![(Phase::Inner, 2), (Phase::Outer, 1)]
    } else {
        vec![(Phase::All, 1), (Phase::All, 2)]
    };
    let mut fast = Adam::new(3e-3, 0.9, 0.999, 1e-5);
    let mut slow = Adam::new(1e-3, 0.9, 0.999, 1e-5);
    // A small max_norm so clipping engages.
    let max_norm = 0.05f32;
    let mut cpu = params.clone();
    let (mut m, mut v) = (GroupVecs::zeros(&layout), GroupVecs::zeros(&layout));
    let mut dev =
        CudaPolicy::new(exec.clone(), &layout, params.bufs()).unwrap_or_else(|e| panic!("{e}"));
    for (k, (phase, len)) in phases.iter().enumerate() {
        let chunks = minibatch(layout.dims(), 3, 3 * len, 0.2, 40 + k as u64);
        let (mut g, st) = cpu_grads(&layout, &cpu, &chunks);
        let n = layout.dims().rim.n_modules;
        let active: Vec<bool> = st.active_steps[..n].iter().map(|c| *c > 0).collect();
        let groups = mode.phase_groups(*phase, OtherGroup::Slow).to_vec();
        let opt = if *phase == Phase::Inner {
            &mut fast
        } else {
            &mut slow
        };
        let norm = cpu_adam_step(
            &layout, &mut cpu, &mut g, &mut m, &mut v, *phase, &active, opt, max_norm,
        );
        let (opt, t) = (*opt, opt.t);
        let steps: Vec<Vec<_>> = chunks.iter().map(Chunk::steps).collect();
        let pass: Vec<PassChunk<'_, '_>> = steps
            .iter()
            .zip(&chunks)
            .map(|(s, c)| PassChunk {
                steps: s,
                init_state: &c.init,
            })
            .collect();
        let total: usize = chunks.iter().map(|c| c.obs.len()).sum();
        dev.grad_pass(&pass, &coefs(), 1.0 / total as f32)
            .unwrap_or_else(|e| panic!("{e}"));
        dev.adam_step(&groups, *phase != Phase::All, &opt, t, max_norm)
            .unwrap_or_else(|e| panic!("{e}"));
        let stats = dev.take_stats().unwrap_or_else(|e| panic!("{e}"));
        let ne = scalar_rel(f64::from(stats.norms[0]), f64::from(norm));
        assert!(
            ne <= TOL,
            "{name} {}: gradient norm {} vs {norm}",
            mode.name(),
            stats.norms[0]
        );
    }
    let mut got = GroupVecs::zeros(&layout);
    dev.download_params(got.bufs_mut())
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut gm, mut gv) = (GroupVecs::zeros(&layout), GroupVecs::zeros(&layout));
    dev.download_moments(gm.bufs_mut(), gv.bufs_mut())
        .unwrap_or_else(|e| panic!("{e}"));
    let what = format!("{name} {} update", mode.name());
    let wp = compare_tensors(&format!("{what} params"), &layout, &got, &cpu, TOL);
    let wm = compare_tensors(&format!("{what} m"), &layout, &gm, &m, TOL);
    let wv = compare_tensors(&format!("{what} v"), &layout, &gv, &v, TOL);
    // What the steps did not touch stays bit-identical (inactive modules, untouched groups).
    // "Untouched" is an element whose CPU moments are still zero: it never received a gradient.
    // An element that did receive one may still end bit-unchanged on the CPU when its step is
    // under half an ulp; the device's gradient differs in the last bits, so there it may round
    // one ulp the other way (seen on an H200: Paper meta-rim, rim.input.w_q). Those elements
    // are held to TOL above, like every other updated element.
    for e in layout.entries() {
        let r = e.range();
        let g = e.group;
        for i in 0..r.len() {
            let k = r.start + i;
            if m.group(g)[k] != 0.0 || v.group(g)[k] != 0.0 {
                continue;
            }
            let p0 = params.group(g)[k];
            assert_eq!(
                cpu.group(g)[k].to_bits(),
                p0.to_bits(),
                "{what}: {} [{i}] moved on the CPU without a gradient",
                e.name
            );
            assert_eq!(
                got.group(g)[k].to_bits(),
                p0.to_bits(),
                "{what}: {} [{i}] moved on the device only",
                e.name
            );
            assert!(
                gm.group(g)[k] == 0.0 && gv.group(g)[k] == 0.0,
                "{what}: {} [{i}] has moments on the device only",
                e.name
            );
        }
    }
    println!("{what}: params {wp:.2e}, m {wm:.2e}, v {wv:.2e}");
}

/// A parameter group's four buffers on the host (the optimiser kernel tests).
pub type HostGroup = AdamGroup<Vec<f32>>;

/// `n` random parameters, gradients and moments (second moments non-negative).
pub fn random_group(rng: &mut Pcg32, n: usize) -> HostGroup {
    let mut rnd =
        |s: f32| -> Vec<f32> { (0..n).map(|_| (rng.gen_f32() * 2.0 - 1.0) * s).collect() };
    let (params, grads, m) = (rnd(1.0), rnd(0.1), rnd(0.01));
    let v = rnd(0.01).iter().map(|x| x * x).collect();
    HostGroup {
        params,
        grads,
        m,
        v,
    }
}

/// Step `t` of `adam` with the training path's kernel `adam_masked` on the elements of `group`
/// in `ranges` (range `r` tagged with module `modules[r]`, skipped where `counts` is zero;
/// `counts` `None`: nothing skipped), no clipping; the group after the step.
pub fn adam_masked_on_device(
    exec: &Arc<dyn Exec>,
    adam: &Adam,
    t: u64,
    group: &HostGroup,
    ranges: &[Range],
    modules: &[i32],
    counts: Option<&[u32]>,
) -> HostGroup {
    use metarim_cuda::args::AdamMasked;
    use metarim_cuda::exec::{launch_typed, DevBuf, KernelArgs, Ptr};
    use metarim_cuda::optim::{range_config, AdamScalars, RangeTable};
    let ok = |e: metarim_cuda::Error| -> ! { panic!("{e}") };
    let funcs = exec
        .load(metarim_cuda::Kernel::Optim, &[])
        .unwrap_or_else(|e| ok(e));
    let f = funcs
        .iter()
        .find(|f| f.entry.name == AdamMasked::ENTRY.name)
        .expect("optim.cu has adam_masked");
    let dev = group
        .try_map(|b| DevBuf::from_host(exec, b))
        .unwrap_or_else(|e| ok(e));
    let table = RangeTable::new(group.params.len(), ranges).unwrap_or_else(|e| ok(e));
    let off = DevBuf::from_host(exec, &table.offsets).unwrap_or_else(|e| ok(e));
    let prefix = DevBuf::from_host(exec, &table.prefix).unwrap_or_else(|e| ok(e));
    let module = DevBuf::from_host(exec, modules).unwrap_or_else(|e| ok(e));
    let counts_buf = counts.map(|c| DevBuf::from_host(exec, c).unwrap_or_else(|e| ok(e)));
    let s = AdamScalars::new(adam, t).unwrap_or_else(|e| ok(e));
    let args = AdamMasked {
        params: dev.params.ptr(),
        grads: dev.grads.ptr(),
        m: dev.m.ptr(),
        v: dev.v.ptr(),
        range_off: off.ptr(),
        range_prefix: prefix.ptr(),
        range_module: module.ptr(),
        counts: counts_buf.as_ref().map_or(Ptr::NULL, |c| c.ptr()),
        nranges: ranges.len() as u32,
        coef: Ptr::NULL,
        neg_step: s.neg_step,
        bc2_sqrt: s.bc2_sqrt,
        w1: s.w1,
        b2: s.b2,
        w2: s.w2,
        eps: s.eps,
    };
    launch_typed(&**exec, f, &range_config(table.total()), &args).unwrap_or_else(|e| ok(e));
    dev.try_map(DevBuf::download).unwrap_or_else(|e| ok(e))
}

/// The encoder's three kernels (`encoder_fwd`, `encoder_bwd`, `encoder_wgrad`) launched on
/// their own, as the engine launches them (the instruction embedding read from the memory
/// inputs' last columns, dL/de added into the input gradients' last columns), against the
/// core's `encode_forward` / `encode_backward` per sample: features, every cache value
/// (with FiLM: the modulated and unmodulated pre-activations and the coefficients), every
/// parameter gradient summed over the samples, and each sample's instruction gradient (the
/// memory's part plus FiLM's). Random parameters (FiLM far from the identity), observations
/// from real episodes, random embeddings and gradients. Returns the worst relative error, the
/// number of values that differ from the core's in any bit, and the bits of everything the
/// device produced (for thread-order invariance).
pub fn encoder_kernels_parity(
    exec: &Arc<dyn Exec>,
    name: &str,
    dims: &ModelDims,
    samples: usize,
    seed: u64,
) -> (f64, usize, Vec<u32>) {
    use metarim_core::nn::encoder::{
        encode_backward, encode_forward, encoder_cache_len, encoder_param_len, encoder_scratch_len,
        encoder_tensors,
    };
    use metarim_cuda::args::{EncoderBwd, EncoderFwd, EncoderWgrad};
    use metarim_cuda::exec::{DevBuf, LaunchCfg};
    use metarim_cuda::layout::ModelLayout;
    let ok = |e: metarim_cuda::Error| -> ! { panic!("{e}") };
    let d = *dims;
    let ml = ModelLayout::new(&d).unwrap_or_else(|e| ok(e));
    let (feat, hi, input) = (d.obs_features(), d.instr_hidden, d.memory_input());
    let (np, nc) = (encoder_param_len(&d), encoder_cache_len(&d));
    assert_eq!(
        (ml.enc.enc_params, ml.enc.enc_cache),
        (np, nc),
        "{name}: layout"
    );
    let mut rng = Pcg32::new(seed);
    let mut rnd = |s: f32| (rng.gen_f32() - 0.5) * 2.0 * s;
    let params: Vec<f32> = (0..np).map(|_| rnd(0.4)).collect();
    // Observations from real episodes (what the encoder sees).
    let obs: Vec<Observation> = minibatch(&d, 1, samples, 0.3, seed).remove(0).obs;
    // Memory inputs with the embeddings in their last columns (features filled by the kernel);
    // input gradients: the features' and the memory's part of the instruction gradient.
    let mut x = vec![0.0f32; samples * input];
    let mut dx = vec![0.0f32; samples * input];
    for s in 0..samples {
        for j in 0..hi {
            x[s * input + feat + j] = rnd(0.9);
        }
        for v in &mut dx[s * input..(s + 1) * input] {
            *v = rnd(0.5);
        }
    }
    // A few features' gradients zero, as after a ReLU mask upstream.
    for s in 0..samples {
        dx[s * input + s % feat] = 0.0;
    }
    // The core, sample by sample (gradients summed in sample order).
    let mut want_out = vec![0.0f32; samples * feat];
    let mut want_cache = vec![0.0f32; samples * nc];
    let mut want_grads = vec![0.0f32; np];
    let mut want_dinstr = vec![0.0f32; samples * hi];
    let mut scratch = vec![0.0f32; encoder_scratch_len(&d)];
    for s in 0..samples {
        let e = &x[s * input + feat..(s + 1) * input];
        let cache = &mut want_cache[s * nc..(s + 1) * nc];
        encode_forward(
            &d,
            &params,
            &obs[s],
            e,
            &mut want_out[s * feat..(s + 1) * feat],
            cache,
        )
        .expect("encode_forward");
        let de = &mut want_dinstr[s * hi..(s + 1) * hi];
        de.copy_from_slice(&dx[s * input + feat..(s + 1) * input]);
        let d_instr: &mut [f32] = if d.film { de } else { &mut [] };
        let instr: &[f32] = if d.film { e } else { &[] };
        encode_backward(
            &d,
            &params,
            &obs[s],
            instr,
            &want_cache[s * nc..(s + 1) * nc],
            &dx[s * input..s * input + feat],
            &mut want_grads,
            d_instr,
            &mut scratch,
        )
        .expect("encode_backward");
    }
    // The device.
    let funcs = exec
        .load(metarim_cuda::Kernel::Encoder, &ml.defines())
        .unwrap_or_else(|e| ok(e));
    let mut packed = Vec::with_capacity(samples * 147);
    for o in &obs {
        packed.extend(o.iter().flatten());
    }
    let up = |v: &[f32]| DevBuf::from_host(exec, v).unwrap_or_else(|e| ok(e));
    let (p_dev, x_dev, dx_dev) = (up(&params), up(&x), up(&dx));
    let obs_dev = DevBuf::from_host(exec, &packed).unwrap_or_else(|e| ok(e));
    let zeros = |n: usize| DevBuf::<f32>::zeros(exec, n).unwrap_or_else(|e| ok(e));
    let (cache_dev, delta_dev, grads_dev) = (
        zeros(samples * ml.enc.enc_cache),
        zeros(samples * ml.enc.enc_delta),
        zeros(np),
    );
    let instr_of = |b: &DevBuf<f32>| {
        if d.film {
            b.at(feat, samples * input - feat).unwrap_or_else(|e| ok(e))
        } else {
            metarim_cuda::exec::Ptr::NULL
        }
    };
    let per_sample = |floats: usize| LaunchCfg::linear(samples as u32, 128, (floats * 4) as u32);
    let args = EncoderFwd {
        p: p_dev.ptr(),
        obs: obs_dev.ptr(),
        instr: instr_of(&x_dev),
        instr_ld: input,
        x: x_dev.ptr(),
        ld: input,
        cache: cache_dev.ptr(),
        samples,
    };
    launch_named(exec, &funcs, &per_sample(ml.smem.enc_fwd_smem), &args);
    let args = EncoderBwd {
        p: p_dev.ptr(),
        obs: obs_dev.ptr(),
        cache: cache_dev.ptr(),
        d_out: dx_dev.ptr(),
        ld: input,
        d_instr: instr_of(&dx_dev),
        instr_ld: input,
        delta: delta_dev.ptr(),
        samples,
    };
    launch_named(exec, &funcs, &per_sample(ml.smem.enc_bwd_smem), &args);
    let args = EncoderWgrad {
        p: p_dev.ptr(),
        obs: obs_dev.ptr(),
        cache: cache_dev.ptr(),
        delta: delta_dev.ptr(),
        instr: instr_of(&x_dev),
        instr_ld: input,
        grads: grads_dev.ptr(),
        samples,
    };
    // Fewer threads than parameters: the grid-stride loop covers the rest.
    launch_named(exec, &funcs, &LaunchCfg::linear(3, 64, 0), &args);
    let down = |b: &DevBuf<f32>| b.download().unwrap_or_else(|e| ok(e));
    let (got_x, got_cache, got_dx, got_grads) = (
        down(&x_dev),
        down(&cache_dev),
        down(&dx_dev),
        down(&grads_dev),
    );
    // Compare.
    let (mut worst, mut differ_all) = (0.0f64, 0);
    let mut check = |what: &str, got: &[f32], want: &[f32]| {
        let (e, differ) = rel_error(got, want);
        differ_all += differ;
        println!(
            "  {name} {what}: max rel {e:.2e}, {differ} of {} differ",
            got.len()
        );
        assert!(e <= TOL, "{name} {what}: relative error {e:e} > {TOL:e}");
        worst = worst.max(e);
    };
    let got_out: Vec<f32> = (0..samples)
        .flat_map(|s| got_x[s * input..s * input + feat].to_vec())
        .collect();
    check("features", &got_out, &want_out);
    // The forward writes the features only, the backward the instruction columns only.
    let cols = |v: &[f32], instr: bool| -> Vec<u32> {
        v.iter()
            .enumerate()
            .filter(|(i, _)| (i % input >= feat) == instr)
            .map(|(_, f)| f.to_bits())
            .collect()
    };
    assert_eq!(
        cols(&got_x, true),
        cols(&x, true),
        "{name}: forward wrote e"
    );
    check("cache", &got_cache, &want_cache);
    for t in encoder_tensors(&d).as_slice() {
        let r = t.offset..t.offset + t.len();
        check(
            &format!("d {}", t.name),
            &got_grads[r.clone()],
            &want_grads[r],
        );
    }
    let got_dinstr: Vec<f32> = (0..samples)
        .flat_map(|s| got_dx[s * input + feat..(s + 1) * input].to_vec())
        .collect();
    check("instruction gradient", &got_dinstr, &want_dinstr);
    assert_eq!(
        cols(&got_dx, false),
        cols(&dx, false),
        "{name}: backward wrote the features' gradients"
    );
    let bits = [&got_x, &got_cache, &got_dx, &got_grads, &down(&delta_dev)]
        .iter()
        .flat_map(|v| v.iter().map(|f| f.to_bits()))
        .collect();
    (worst, differ_all, bits)
}

/// The RIM step kernels on their own (`rim_fwd_step`, then `rim_bwd_step` with a carried state
/// gradient) against the core's `rim_step_forward` / `rim_step_backward` (`CommGrad::Blocked`)
/// per sample, for `samples` samples with random weights, inputs, states `[h | c]` and
/// gradients, some samples starting an episode: the states read and written, the whole step
/// cache, the carried gradient `[dh | dc]` of the previous state, the input gradient, and the
/// module RNNs' weight gradients reduced on the host from the kernel's deltas (sample order, as
/// the core accumulates them). Returns the worst relative error, how many values differ from
/// the core's in any bit, and the bits of everything the kernels wrote (for thread-order
/// comparisons).
pub fn rim_step_kernels_parity(
    exec: &Arc<dyn Exec>,
    name: &str,
    dims: &ModelDims,
    samples: usize,
    seed: u64,
) -> (f64, usize, Vec<u32>) {
    use metarim_core::nn::rim::{
        cell_state_len, rim_param_counts, rim_step_backward, rim_step_forward, scratch_len,
        step_cache_len, RimGrads, RimWeights,
    };
    use metarim_cuda::args::{MemoryBwd, RimBwdStep, RimFwdStep, RimWeights as RimWeightArgs};
    use metarim_cuda::exec::{DevBuf, LaunchCfg};
    use metarim_cuda::layout::ModelLayout;
    let ok = |e: metarim_cuda::Error| -> ! { panic!("{e}") };
    let d = *dims;
    let r = d.rim;
    let ml = ModelLayout::new(&d).unwrap_or_else(|e| ok(e));
    let (nh, ncl, input) = (r.n_modules * r.hidden, cell_state_len(&r), r.input);
    let sl = nh + ncl;
    assert_eq!(sl, ml.state_len(), "{name}: state width");
    let nc = step_cache_len(&r);
    assert_eq!(nc, ml.rim.rim_cache, "{name}: cache");
    let counts = rim_param_counts(&r);
    let mut rng = Pcg32::new(seed);
    let mut rnd = |s: f32| (rng.gen_f32() - 0.5) * 2.0 * s;
    let lens = [
        counts.w_k, counts.w_v, counts.w_q, counts.rnn, counts.c_q, counts.c_k, counts.c_v,
        counts.c_g, counts.c_o,
    ];
    let tensors: Vec<Vec<f32>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| rnd(0.5)).collect())
        .collect();
    let w = RimWeights::from_parts(std::array::from_fn(|i| &tensors[i][..]));
    let x: Vec<f32> = (0..samples * input).map(|_| rnd(1.0)).collect();
    let state: Vec<f32> = (0..samples * sl).map(|_| rnd(0.8)).collect();
    let dh_loss: Vec<f32> = (0..samples * nh).map(|_| rnd(0.5)).collect();
    let carry: Vec<f32> = (0..samples * sl).map(|_| rnd(0.5)).collect();
    let reset: Vec<u8> = (0..samples).map(|s| u8::from(s % 3 == 1)).collect();
    // The core, sample by sample.
    let mut want_in = vec![0.0f32; samples * sl];
    let mut want_out = vec![0.0f32; samples * sl];
    let mut want_cache = vec![0.0f32; samples * nc];
    let mut want_carry = vec![0.0f32; samples * sl];
    let mut want_dx = vec![0.0f32; samples * input];
    let mut g: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0f32; n]).collect();
    let mut scratch = vec![0.0f32; scratch_len(&r)];
    let mut active = vec![false; r.n_modules];
    for s in 0..samples {
        let st = s * sl..(s + 1) * sl;
        if reset[s] == 0 {
            want_in[st.clone()].copy_from_slice(&state[st.clone()]);
        }
        let (h_prev, c_prev) = want_in[st.clone()].split_at(nh);
        let (h_out, c_out) = want_out[st.clone()].split_at_mut(nh);
        let xs = &x[s * input..(s + 1) * input];
        let cache = &mut want_cache[s * nc..(s + 1) * nc];
        rim_step_forward(&w, &r, xs, h_prev, c_prev, h_out, c_out, &mut active, cache)
            .expect("rim_step_forward");
        let mut d_out = carry[st.clone()].to_vec();
        for (o, l) in d_out.iter_mut().zip(&dh_loss[s * nh..(s + 1) * nh]) {
            *o += *l; // dh_loss + carry, as the kernel (addition commutes exactly)
        }
        let (dh_out, dc_out) = d_out.split_at(nh);
        let mut d_prev = vec![0.0f32; sl];
        let (dh_prev, dc_prev) = d_prev.split_at_mut(nh);
        let Ok(parts) =
            <[&mut [f32]; 9]>::try_from(g.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>())
        else {
            unreachable!("nine gradient tensors")
        };
        let mut grads = RimGrads::from_parts(parts);
        rim_step_backward(
            &w,
            &r,
            CommGrad::Blocked,
            xs,
            h_prev,
            c_prev,
            &want_cache[s * nc..(s + 1) * nc],
            dh_out,
            dc_out,
            Some(&mut want_dx[s * input..(s + 1) * input]),
            dh_prev,
            dc_prev,
            &mut grads,
            &mut scratch,
        )
        .expect("rim_step_backward");
        if reset[s] == 0 {
            want_carry[st].copy_from_slice(&d_prev);
        }
    }
    // The device: the forward writes its new states over the old ones (as acting does).
    let load = |k: metarim_cuda::Kernel| exec.load(k, &ml.defines()).unwrap_or_else(|e| ok(e));
    let (fwd, bwd) = (
        load(metarim_cuda::Kernel::RimFwd),
        load(metarim_cuda::Kernel::RimBwd),
    );
    let up = |v: &[f32]| DevBuf::from_host(exec, v).unwrap_or_else(|e| ok(e));
    let zeros = |n: usize| DevBuf::<f32>::zeros(exec, n).unwrap_or_else(|e| ok(e));
    let wd: Vec<DevBuf<f32>> = tensors.iter().map(|t| up(t)).collect();
    let (x_dev, h_dev, dh_dev, carry_dev) = (up(&x), up(&state), up(&dh_loss), up(&carry));
    let reset_dev = DevBuf::from_host(exec, &reset).unwrap_or_else(|e| ok(e));
    let (in_dev, cache_dev, dx_dev, delta_dev) = (
        zeros(samples * sl),
        zeros(samples * nc),
        zeros(samples * input),
        zeros(samples * ml.rim.rim_delta),
    );
    let bits_dev = DevBuf::<u32>::zeros(exec, samples).unwrap_or_else(|e| ok(e));
    let cfg = |floats: usize| {
        let blocks = samples.div_ceil(ml.smem.spb_rim) as u32;
        LaunchCfg::linear(blocks, 64, (ml.smem.spb_rim * floats * 4) as u32)
    };
    let w = RimWeightArgs {
        w_k: wd[0].ptr(),
        w_v: wd[1].ptr(),
        w_q: wd[2].ptr(),
        rnn: wd[3].ptr(),
        c_q: wd[4].ptr(),
        c_k: wd[5].ptr(),
        c_v: wd[6].ptr(),
        c_g: wd[7].ptr(),
        c_o: wd[8].ptr(),
    };
    let args = RimFwdStep {
        w,
        x: x_dev.ptr(),
        h_src: h_dev.ptr(),
        reset: reset_dev.ptr(),
        state_in: in_dev.ptr(),
        h_out: h_dev.ptr(),
        cache: cache_dev.ptr(),
        active_bits: bits_dev.ptr(),
        batch: samples,
    };
    launch_named(exec, &fwd, &cfg(ml.smem.rf_smem), &args);
    let args = RimBwdStep {
        w,
        step: MemoryBwd {
            state_in: in_dev.ptr(),
            cache: cache_dev.ptr(),
            dh_loss: dh_dev.ptr(),
            carry: carry_dev.ptr(),
            reset: reset_dev.ptr(),
            carry_out: carry_dev.ptr(),
            dx: dx_dev.ptr(),
            delta: delta_dev.ptr(),
            batch: samples,
        },
    };
    launch_named(exec, &bwd, &cfg(ml.smem.rb_smem), &args);
    let down = |b: &DevBuf<f32>| b.download().unwrap_or_else(|e| ok(e));
    let (got_in, got_out, got_cache) = (down(&in_dev), down(&h_dev), down(&cache_dev));
    let (got_carry, got_dx, delta) = (down(&carry_dev), down(&dx_dev), down(&delta_dev));
    // The module RNNs' weight gradients from the deltas, summed over samples in order and
    // skipping zero deltas, as the core's linear_backward.
    let (gh, uw, hid, rl) = (ml.rim.rgh, ml.uw, ml.hid, ml.rim.rnn_len);
    let mut got_rnn = vec![0.0f32; counts.rnn];
    for s in 0..samples {
        let dl = &delta[s * ml.rim.rim_delta..(s + 1) * ml.rim.rim_delta];
        let cache = &got_cache[s * nc..(s + 1) * nc];
        let h = &got_in[s * sl..s * sl + nh];
        for m in 0..r.n_modules {
            let gm = &mut got_rnn[m * rl..(m + 1) * rl];
            let gi = &dl[ml.rim.rd_gi + m * gh..ml.rim.rd_gi + (m + 1) * gh];
            let ghh = &dl[ml.rim.rd_gh + m * gh..ml.rim.rd_gh + (m + 1) * gh];
            let u = &cache[ml.rim.rc_u + m * uw..ml.rim.rc_u + (m + 1) * uw];
            let hm = &h[m * hid..(m + 1) * hid];
            for row in 0..gh {
                gm[ml.rim.rnn_b_ih + row] += gi[row];
                gm[ml.rim.rnn_b_hh + row] += ghh[row];
                if gi[row] != 0.0 {
                    for (c, xv) in u.iter().enumerate() {
                        gm[row * uw + c] += gi[row] * *xv;
                    }
                }
                if ghh[row] != 0.0 {
                    for (c, hv) in hm.iter().enumerate() {
                        gm[ml.rim.rnn_w_hh + row * hid + c] += ghh[row] * *hv;
                    }
                }
            }
        }
    }
    let (mut worst, mut differ_all) = (0.0f64, 0);
    let mut check = |what: &str, got: &[f32], want: &[f32]| {
        let (e, differ) = rel_error(got, want);
        differ_all += differ;
        println!(
            "  {name} {what}: max rel {e:.2e}, {differ} of {} differ",
            got.len()
        );
        assert!(e <= TOL, "{name} {what}: relative error {e:e} > {TOL:e}");
        worst = worst.max(e);
    };
    check("state read", &got_in, &want_in);
    check("state written [h | c]", &got_out, &want_out);
    check("step cache", &got_cache, &want_cache);
    check("carried gradient [dh | dc]", &got_carry, &want_carry);
    check("input gradient", &got_dx, &want_dx);
    check("module RNN gradients", &got_rnn, &g[3]);
    let got_bits = bits_dev.download().unwrap_or_else(|e| ok(e));
    for (s, b) in got_bits.iter().enumerate() {
        let want = (0..r.n_modules).fold(0u32, |m, i| {
            m | (u32::from(want_cache[s * nc + i] > 0.0) << i)
        });
        assert_eq!(*b, want, "{name}: sample {s} active modules");
    }
    let bits = [&got_in, &got_out, &got_cache, &got_carry, &got_dx, &delta]
        .iter()
        .flat_map(|v| v.iter().map(|f| f.to_bits()))
        .collect();
    (worst, differ_all, bits)
}

/// Launches the entry point of `A` found in `funcs` (a loaded module's functions) with `cfg`;
/// a missing entry or a failed launch fails the test.
pub fn launch_named<A: metarim_cuda::exec::KernelArgs>(
    exec: &Arc<dyn Exec>,
    funcs: &[metarim_cuda::exec::Func],
    cfg: &metarim_cuda::exec::LaunchCfg,
    args: &A,
) {
    let name = A::ENTRY.name;
    let f = funcs
        .iter()
        .find(|f| f.entry.name == name)
        .unwrap_or_else(|| panic!("the module has no {name}"));
    metarim_cuda::exec::launch_typed(&**exec, f, cfg, args).unwrap_or_else(|e| panic!("{e}"));
}

/// The device pass's view of `chunks`, whose steps are `steps` (`Chunk::steps` of each).
pub fn pass_chunks<'s, 'a>(
    steps: &'s [Vec<ChunkStep<'a, f32>>],
    chunks: &'s [Chunk],
) -> Vec<PassChunk<'a, 's>> {
    steps
        .iter()
        .zip(chunks)
        .map(|(s, c)| PassChunk {
            steps: s,
            init_state: &c.init,
        })
        .collect()
}
