//! The trained policy from Python: its weights in PyTorch's names and layouts, and the Rust
//! references `python/metarim/torch.py` is checked against (python/tests/test_torch.py).
//!
//! - [`load_weights`]: a training checkpoint or a `metarim export --format torch` file as
//!   dims, mode, config, PPO coefficients and `[(name, shape, f32 bytes)]`, unpacked by
//!   `host::export::torch_tensors` (names and layouts: `host::export::torch_specs`).
//! - [`create_checkpoint`]: a checkpoint of a freshly initialised model for any config, written
//!   by the trainer itself (`host::train::run::train` with `frames = 0`), optionally with
//!   every parameter perturbed so that tensors initialised to zero (FiLM, biases) matter.
//! - [`rollout`]: the policy acting in environments through the core's per-sample
//!   `Policy::step` (f32, what `metarim eval` and `play` run), sampled actions, recorded.
//! - [`ppo_gradient`]: the PPO loss gradient of recorded chunks through the core's
//!   hand-written BPTT (`Policy::chunk_backward`, f64 or f32) or the trainer's batched pass
//!   (`BatchedGrads::pass`), in the PyTorch names and layouts.
//! - [`evaluate`]: the same policy over given observations (those of `metarim.make_vec`, say).
//! - [`export_torch`]: `metarim export --format torch` from Python.
//!
//! Invariants: arrays cross as little-endian bytes in numpy's C order, time-major (`(T, B,
//! ...)`); every size is checked and a mismatch is a `ValueError` naming the argument; nothing
//! here panics on input.

use std::path::{Path, PathBuf};

use host::export::{dims_json, read_torch, torch_tensors, TorchTensor};
use host::model::StepWork;
use host::train::batched::{BatchedGrads, PassOptions, Seq};
use host::train::run::{train, RunOptions};
use host::train::{checkpoint, GroupVecs, Model, TrainConfig};
use metarim_core::env::{Action, Env, Observation, VIEW_CELLS, VIEW_SIZE};
use metarim_core::levels::Level;
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::loss::{PpoCoefs, PpoSample};
use metarim_core::nn::policy::{chunk_work_len, state_len, ChunkStep, Policy};
use metarim_core::nn::rim::CommGrad;
use metarim_core::nn::sample::sample_action;
use metarim_core::nn::scalar::Real;
use metarim_core::rng::{split_mix64, Pcg32};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// A `ValueError` with `e`'s whole chain of causes.
fn value_err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The config and model of a training checkpoint or a PyTorch export at `path`.
fn load_model(path: &Path) -> PyResult<(TrainConfig, Model)> {
    let bytes =
        std::fs::read(path).map_err(|e| value_err(format!("reading {}: {e}", path.display())))?;
    match checkpoint::from_bytes(&bytes) {
        Ok(ck) => Ok((ck.config, ck.model)),
        Err(ck_err) => read_torch(&bytes).map_err(|torch_err| {
            value_err(format!(
                "{} is neither a metarim training checkpoint ({ck_err:#}) nor a `metarim export \
                 --format torch` file ({torch_err:#})",
                path.display()
            ))
        }),
    }
}

/// A tensor as Python sees it: `(name, shape, little-endian bytes)`.
type PyTensor<'py> = (String, Vec<usize>, Bound<'py, PyBytes>);

/// Tensors as Python tuples `(name, shape, little-endian bytes)`.
fn tensor_tuples<'py, S: Copy>(
    py: Python<'py>,
    tensors: Vec<TorchTensor<S>>,
    to_bytes: impl Fn(S) -> Vec<u8>,
) -> Vec<PyTensor<'py>> {
    tensors
        .into_iter()
        .map(|t| {
            let b: Vec<u8> = t.data.iter().flat_map(|x| to_bytes(*x)).collect();
            (t.name, t.shape, PyBytes::new(py, &b))
        })
        .collect()
}

/// `load_weights(path)`: a training checkpoint or a `metarim export --format torch` file as a
/// dict: `dims` (JSON text, `host::export::dims_json`), `mode` (`meta-rim`, ...), `config` (the
/// training config as TOML), `ppo` (`(clip_eps, value_coef, entropy_coef)` of the config, as the
/// trainer uses them) and `tensors`, a list of `(name, shape, bytes)` with little-endian f32 data
/// in PyTorch's names and layouts.
#[pyfunction]
pub fn load_weights(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let (config, model) = load_model(&path)?;
    let tensors = torch_tensors(&model.layout, model.params.bufs()).map_err(value_err)?;
    let c = config.ppo_coefs();
    let out = PyDict::new(py);
    out.set_item("dims", dims_json(model.layout.dims()).to_string())?;
    out.set_item("mode", model.layout.mode().name())?;
    out.set_item("config", config.to_toml().map_err(value_err)?)?;
    out.set_item(
        "ppo",
        (
            f64::from(c.clip_eps),
            f64::from(c.value_coef),
            f64::from(c.entropy_coef),
        ),
    )?;
    out.set_item(
        "tensors",
        tensor_tuples(py, tensors, |x: f32| x.to_le_bytes().to_vec()),
    )?;
    Ok(out)
}

/// `create_checkpoint(out_dir, settings=(), perturb=0.0)`: trains nothing (`frames = 0`) with
/// the default config changed by `settings` (`"key=value"` strings, as `metarim train --set`),
/// which writes a checkpoint of the freshly initialised model into `out_dir` (with the run's
/// other files); returns the checkpoint's path. With `perturb > 0` every parameter then gets
/// `perturb * u`, `u` uniform in `[-1, 1)` (seeded by the config's `seed`), and the checkpoint is
/// rewritten: tensors that start at zero (the FiLM generator, biases) then matter.
#[pyfunction]
#[pyo3(signature = (out_dir, settings=Vec::new(), perturb=0.0))]
pub fn create_checkpoint(
    py: Python<'_>,
    out_dir: PathBuf,
    settings: Vec<String>,
    perturb: f64,
) -> PyResult<String> {
    if !(perturb.is_finite() && perturb >= 0.0) {
        return Err(value_err(format!(
            "perturb must be a finite number >= 0, got {perturb}"
        )));
    }
    let mut cfg = TrainConfig::default();
    for s in &settings {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| value_err(format!("setting {s:?} is not key=value")))?;
        cfg.set(k, v)
            .map_err(|e| value_err(format!("setting {s:?}: {e:#}")))?;
    }
    cfg.frames = 0;
    cfg.threads = 1;
    cfg.backend = host::train::config::BackendChoice::Cpu;
    let opts = RunOptions::new(out_dir);
    py.allow_threads(|| -> Result<String, String> {
        let summary = train(&cfg, &opts).map_err(|e| format!("{e:#}"))?;
        let path = summary.checkpoint;
        if perturb > 0.0 {
            let mut ck = checkpoint::load(&path).map_err(|e| format!("{e:#}"))?;
            let mut rng = Pcg32::with_stream(split_mix64(cfg.seed), 0x7e57);
            for g in metarim_core::nn::params::Group::ALL {
                for p in ck.model.params.group_mut(g).iter_mut() {
                    let u = rng.gen_f64() * 2.0 - 1.0;
                    *p = (f64::from(*p) + perturb * u) as f32;
                }
            }
            let bytes = checkpoint::to_bytes_checkpoint(
                &ck.meta,
                &ck.model,
                &ck.optim,
                &ck.env_states,
                ck.config.procs,
            )
            .map_err(|e| format!("{e:#}"))?;
            checkpoint::write_atomic(&path, &bytes).map_err(|e| format!("{e:#}"))?;
        }
        Ok(path.display().to_string())
    })
    .map_err(PyRuntimeError::new_err)
}

/// The view in numpy's `(7, 7, 3)` order (`[i, j]`: view column, view row) from core's
/// observation (`obs[j * 7 + i]`).
fn numpy_image(obs: &Observation, out: &mut Vec<u8>) {
    for i in 0..VIEW_SIZE {
        for j in 0..VIEW_SIZE {
            out.extend_from_slice(&obs[j * VIEW_SIZE + i]);
        }
    }
}

/// Core's observation from numpy's `(7, 7, 3)` bytes (the inverse of [`numpy_image`]).
fn core_obs(image: &[u8]) -> Observation {
    let mut obs = [[0u8; 3]; VIEW_CELLS];
    for (k, cell) in image.chunks_exact(3).enumerate().take(VIEW_CELLS) {
        let (i, j) = (k / VIEW_SIZE, k % VIEW_SIZE);
        obs[j * VIEW_SIZE + i].copy_from_slice(cell);
    }
    obs
}

/// One env of a [`rollout`].
struct RollEnv {
    env: Env,
    rng: Pcg32,
    tokens: [u16; MAX_TOKENS],
    instr: Vec<f32>,
    state: Vec<f32>,
    start: bool,
    len: u32,
}

/// `rollout(path, level, num_envs, steps, seed=0, max_episode_steps=None)`: the checkpoint's
/// policy (core `Policy::step`, f32) acting in `num_envs` environments of `level` for `steps`
/// steps each, actions sampled from its logits. Env `b` draws its episodes' seeds and its
/// actions from `Pcg32::with_stream(split_mix64(seed), b)`; an episode ends when the env
/// terminates or truncates, or after `max_episode_steps` steps when given (to have episode
/// starts inside short recordings), and the next step starts a new one (memory reset). The
/// envs follow the checkpoint's rules (`done_actions`, BabyAI's done-action rules).
///
/// Returns a dict of bytes, time-major: `image` (T, B, 7, 7, 3) u8 in numpy's layout,
/// `direction` (T, B) u8, `mission_tokens` (T, B, MAX_TOKENS) u16, `episode_start` (T, B) u8,
/// `actions` (T, B) u8, `logprobs` (T, B) f32, `logits` (T, B, A) f32, `values` (T, B) f32,
/// `active` (T, B, N) u8 (the RIM modules each step selected; zeros for the LSTM), and the
/// ints `steps`, `num_envs`, `n_actions`, `n_modules`, `state_len`.
#[pyfunction]
#[pyo3(signature = (path, level, num_envs, steps, seed=0, max_episode_steps=None))]
pub fn rollout<'py>(
    py: Python<'py>,
    path: PathBuf,
    level: &str,
    num_envs: usize,
    steps: usize,
    seed: u64,
    max_episode_steps: Option<u32>,
) -> PyResult<Bound<'py, PyDict>> {
    if num_envs == 0 || steps == 0 || num_envs > 4096 || steps > 1 << 16 {
        return Err(value_err(format!(
            "num_envs ({num_envs}) must be in 1..=4096 and steps ({steps}) in 1..=65536"
        )));
    }
    let lvl = Level::from_id(level).map_err(|_| {
        value_err(format!(
            "unknown level id {level:?} (metarim.level_ids() lists them)"
        ))
    })?;
    let (cfg, model) = load_model(&path)?;
    let rules = cfg.done_actions;
    let rec = py
        .allow_threads(|| {
            roll(
                &model,
                &lvl,
                rules,
                num_envs,
                steps,
                seed,
                max_episode_steps,
            )
        })
        .map_err(PyRuntimeError::new_err)?;
    let d = model.layout.dims();
    let out = PyDict::new(py);
    let f32b = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    out.set_item("image", PyBytes::new(py, &rec.image))?;
    out.set_item("direction", PyBytes::new(py, &rec.direction))?;
    let tok: Vec<u8> = rec.tokens.iter().flat_map(|x| x.to_le_bytes()).collect();
    out.set_item("mission_tokens", PyBytes::new(py, &tok))?;
    out.set_item("episode_start", PyBytes::new(py, &rec.start))?;
    out.set_item("actions", PyBytes::new(py, &rec.actions))?;
    out.set_item("logprobs", PyBytes::new(py, &f32b(&rec.logprobs)))?;
    out.set_item("logits", PyBytes::new(py, &f32b(&rec.logits)))?;
    out.set_item("values", PyBytes::new(py, &f32b(&rec.values)))?;
    out.set_item("active", PyBytes::new(py, &rec.active))?;
    out.set_item("steps", steps)?;
    out.set_item("num_envs", num_envs)?;
    out.set_item("n_actions", d.n_actions)?;
    out.set_item("n_modules", d.rim.n_modules)?;
    out.set_item("state_len", state_len(d))?;
    Ok(out)
}

/// What [`roll`] records, time-major.
#[derive(Default)]
struct Recording {
    image: Vec<u8>,
    direction: Vec<u8>,
    tokens: Vec<u16>,
    start: Vec<u8>,
    actions: Vec<u8>,
    logprobs: Vec<f32>,
    logits: Vec<f32>,
    values: Vec<f32>,
    active: Vec<u8>,
}

impl Recording {
    /// One step's active modules as bytes, one per RIM module (all zero for the LSTM memory).
    fn push_active(&mut self, policy: &Policy<'_, f32>, cache: &[f32]) {
        let d = policy.dims();
        let rim = d.memory == metarim_core::nn::dims::MemoryKind::Rim;
        let active = policy.active_in_cache(cache);
        self.active.extend(
            active
                .iter()
                .take(d.rim.n_modules)
                .map(|a| u8::from(*a && rim)),
        );
    }
}

fn roll(
    model: &Model,
    level: &Level,
    done_actions: bool,
    num_envs: usize,
    steps: usize,
    seed: u64,
    max_episode_steps: Option<u32>,
) -> Result<Recording, String> {
    let policy = model.policy().map_err(|e| format!("{e:#}"))?;
    let d = model.layout.dims();
    let sl = state_len(d);
    let mut work = StepWork::new(d);
    let mut envs = Vec::with_capacity(num_envs);
    for b in 0..num_envs {
        let mut env = Env::new(8, 8).map_err(|e| format!("creating an env: {e:?}"))?;
        env.done_actions = done_actions;
        envs.push(RollEnv {
            env,
            rng: Pcg32::with_stream(split_mix64(seed), b as u64),
            tokens: [0; MAX_TOKENS],
            instr: vec![0.0; d.instr_hidden],
            state: vec![0.0; sl],
            start: true,
            len: 0,
        });
    }
    let mut rec = Recording::default();
    let mut obs = [[0u8; 3]; VIEW_CELLS];
    for _ in 0..steps {
        for e in envs.iter_mut() {
            if e.start {
                let s = e.rng.next_u64();
                level
                    .reset(&mut e.env, s)
                    .map_err(|err| format!("level {} seed {s}: {err:?}", level.id()))?;
                e.tokens = [0; MAX_TOKENS];
                tokenize(e.env.mission.as_str(), &mut e.tokens)
                    .map_err(|err| format!("mission {:?}: {err:?}", e.env.mission.as_str()))?;
                work.encode_instruction(&policy, &e.tokens, &mut e.instr)
                    .map_err(|err| format!("policy: {err}"))?;
                e.state.fill(0.0);
                e.len = 0;
            }
            e.env.observe(&mut obs);
            numpy_image(&obs, &mut rec.image);
            rec.direction.push(e.env.agent_dir);
            rec.tokens.extend_from_slice(&e.tokens);
            rec.start.push(u8::from(e.start));
            let value = work
                .step(&policy, &obs, &e.instr, &e.state)
                .map_err(|err| format!("policy: {err}"))?;
            rec.push_active(&policy, &work.cache);
            let (a, lp) = sample_action(&work.logits, &mut e.rng);
            rec.actions.push(a as u8);
            rec.logprobs.push(lp);
            rec.logits.extend_from_slice(&work.logits);
            rec.values.push(value);
            std::mem::swap(&mut e.state, &mut work.next);
            let out = e.env.step(Action::ALL[a]);
            e.len += 1;
            e.start =
                out.terminated || out.truncated || max_episode_steps.is_some_and(|m| e.len >= m);
        }
    }
    Ok(rec)
}

/// The `n` recorded observations of [`rollout`]'s layout: images (numpy's layout) as core's
/// observations, token ids, episode-start flags.
#[allow(clippy::type_complexity)]
fn read_observations(
    image: &[u8],
    mission_tokens: &[u8],
    episode_start: &[u8],
    n: usize,
) -> PyResult<(Vec<Observation>, Vec<[u16; MAX_TOKENS]>, Vec<bool>)> {
    let images = read_le(image, n, "image", 3 * VIEW_CELLS, core_obs)?;
    let tokens = read_le(mission_tokens, n, "mission_tokens", 2 * MAX_TOKENS, |c| {
        let mut t = [0u16; MAX_TOKENS];
        for (o, w) in t.iter_mut().zip(c.chunks_exact(2)) {
            *o = u16::from_le_bytes([w[0], w[1]]);
        }
        t
    })?;
    let start = read_le(episode_start, n, "episode_start", 1, |c| c[0] != 0)?;
    Ok((images, tokens, start))
}

/// Reads `n` little-endian values of `width` bytes from `b`, or a `ValueError` naming `what`.
fn read_le<T>(
    b: &[u8],
    n: usize,
    what: &str,
    width: usize,
    f: impl Fn(&[u8]) -> T,
) -> PyResult<Vec<T>> {
    if n.checked_mul(width) != Some(b.len()) {
        return Err(value_err(format!(
            "{what}: {} bytes, expected {n} values of {width} bytes",
            b.len()
        )));
    }
    Ok(b.chunks_exact(width).map(f).collect())
}

fn f64s(b: &[u8], n: usize, what: &str) -> PyResult<Vec<f64>> {
    read_le(b, n, what, 8, |c| {
        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
    })
}

/// One recorded chunk per env, in the core's types.
struct Chunks {
    /// Steps per chunk.
    steps: usize,
    /// Chunks (one per env), each `steps` long, one after the other.
    num_envs: usize,
    obs: Vec<Observation>,
    tokens: Vec<[u16; MAX_TOKENS]>,
    start: Vec<bool>,
    actions: Vec<usize>,
    targets: [Vec<f64>; 4],
    init: Vec<f64>,
}

/// `ppo_gradient(path, image, mission_tokens, episode_start, actions, old_logprobs,
/// old_values, advantages, returns, init_state, steps, num_envs, dtype="f64", path_kind="core")`:
/// the gradient of the PPO loss (the trainer's: `host::train::TrainConfig::ppo_coefs` of the
/// checkpoint's config, value clipping on, communication gradient `CommGrad::Blocked`) averaged
/// over the `steps x num_envs` steps of `num_envs` chunks, chunk `b` being column `b` of the
/// time-major arrays: `image` (T, B, 7, 7, 3) u8, `mission_tokens` (T, B, MAX_TOKENS) u16,
/// `episode_start` (T, B) u8, `actions` (T, B) u8, the four targets (T, B) f64 and `init_state`
/// (B, state_len) f64, the memory state before each chunk's first step.
///
/// `path_kind = "core"` runs the core's per-sample BPTT (`Policy::chunk_backward`) in `dtype`
/// (`"f64"`, the parameters widened exactly, or `"f32"`); `"batched"` runs the trainer's
/// batched pass (`BatchedGrads::pass`, f32 only, encoders recomputed). Returns `(loss,
/// tensors)`: the mean loss and the gradient as `(name, shape, f64 bytes)` in PyTorch's names
/// and layouts.
#[pyfunction]
#[pyo3(signature = (path, image, mission_tokens, episode_start, actions, old_logprobs, old_values, advantages, returns, init_state, steps, num_envs, dtype="f64", path_kind="core"))]
#[allow(clippy::too_many_arguments)]
pub fn ppo_gradient<'py>(
    py: Python<'py>,
    path: PathBuf,
    image: &[u8],
    mission_tokens: &[u8],
    episode_start: &[u8],
    actions: &[u8],
    old_logprobs: &[u8],
    old_values: &[u8],
    advantages: &[u8],
    returns: &[u8],
    init_state: &[u8],
    steps: usize,
    num_envs: usize,
    dtype: &str,
    path_kind: &str,
) -> PyResult<(f64, Vec<PyTensor<'py>>)> {
    let (cfg, model) = load_model(&path)?;
    let d = *model.layout.dims();
    let n = steps
        .checked_mul(num_envs)
        .filter(|n| *n > 0)
        .ok_or_else(|| value_err("steps and num_envs must be > 0"))?;
    let sl = state_len(&d);
    let (images, tokens, start) = read_observations(image, mission_tokens, episode_start, n)?;
    let acts = read_le(actions, n, "actions", 1, |c| usize::from(c[0]))?;
    if let Some(a) = acts.iter().find(|a| **a >= d.n_actions) {
        return Err(value_err(format!(
            "actions: {a} is not below n_actions {}",
            d.n_actions
        )));
    }
    let targets = [
        f64s(old_logprobs, n, "old_logprobs")?,
        f64s(old_values, n, "old_values")?,
        f64s(advantages, n, "advantages")?,
        f64s(returns, n, "returns")?,
    ];
    let init_len = num_envs
        .checked_mul(sl)
        .ok_or_else(|| value_err("num_envs is too large"))?;
    let init = f64s(init_state, init_len, "init_state")?;
    // Column b of the (T, B) arrays, made contiguous per chunk.
    let col = |t: usize, b: usize| t * num_envs + b;
    let mut ch = Chunks {
        steps,
        num_envs,
        obs: Vec::with_capacity(n),
        tokens: Vec::with_capacity(n),
        start: Vec::with_capacity(n),
        actions: Vec::with_capacity(n),
        targets: Default::default(),
        init,
    };
    for b in 0..num_envs {
        for t in 0..steps {
            let i = col(t, b);
            ch.obs.push(images[i]);
            ch.tokens.push(tokens[i]);
            ch.start.push(start[i]);
            ch.actions.push(acts[i]);
            for (dst, src) in ch.targets.iter_mut().zip(&targets) {
                dst.push(src[i]);
            }
        }
    }
    let coefs = cfg.ppo_coefs();
    let result = py.allow_threads(|| match (path_kind, dtype) {
        ("core", "f64") => core_grad::<f64>(&model, &ch, &coefs),
        ("core", "f32") => core_grad::<f32>(&model, &ch, &coefs),
        ("batched", "f32") => batched_grad(&model, &ch, &coefs),
        _ => Err(format!(
            "unsupported path_kind {path_kind:?} with dtype {dtype:?} (core with f64 or f32, \
             batched with f32)"
        )),
    });
    let (loss, grads) = result.map_err(value_err)?;
    let tensors = torch_tensors(&model.layout, grads.bufs()).map_err(value_err)?;
    Ok((
        loss,
        tensor_tuples(py, tensors, |x: f64| x.to_le_bytes().to_vec()),
    ))
}

/// The PPO targets of step `i` of `ch` in `S`.
fn sample<S: Real>(ch: &Chunks, i: usize) -> PpoSample<S> {
    let [lp, v, adv, ret] = &ch.targets;
    PpoSample {
        action: ch.actions[i],
        old_logprob: S::from_f64(lp[i]),
        old_value: S::from_f64(v[i]),
        advantage: S::from_f64(adv[i]),
        ret: S::from_f64(ret[i]),
    }
}

fn coefs_in<S: Real>(c: &PpoCoefs<f32>) -> PpoCoefs<S> {
    PpoCoefs {
        clip_eps: S::from_f64(f64::from(c.clip_eps)),
        value_coef: S::from_f64(f64::from(c.value_coef)),
        entropy_coef: S::from_f64(f64::from(c.entropy_coef)),
        clip_value: c.clip_value,
    }
}

/// The core's `Policy::chunk_backward` in `S` over every chunk (scale `1 / all steps`).
fn core_grad<S: Real>(
    model: &Model,
    ch: &Chunks,
    coefs: &PpoCoefs<f32>,
) -> Result<(f64, GroupVecs<f64>), String> {
    let params = model.params.map(|x| S::from_f64(f64::from(x)));
    let (steps, num_envs) = (ch.steps, ch.num_envs);
    let layout = &model.layout;
    let d = layout.dims();
    let sl = state_len(d);
    let policy = Policy::new(layout, params.bufs()).map_err(|e| format!("policy: {e}"))?;
    let mut grads = GroupVecs::<S>::zeros(layout);
    let mut work = vec![S::ZERO; chunk_work_len(d, steps)];
    let scale = S::from_f64(1.0 / (steps * num_envs) as f64);
    let coefs = coefs_in::<S>(coefs);
    let mut loss = 0.0f64;
    for b in 0..num_envs {
        let chunk: Vec<ChunkStep<'_, S>> = (b * steps..(b + 1) * steps)
            .map(|i| ChunkStep {
                obs: &ch.obs[i],
                tokens: &ch.tokens[i],
                episode_start: ch.start[i],
                sample: sample::<S>(ch, i),
            })
            .collect();
        let init: Vec<S> = ch.init[b * sl..(b + 1) * sl]
            .iter()
            .map(|x| S::from_f64(*x))
            .collect();
        let stats = policy
            .chunk_backward(
                &chunk,
                &init,
                &coefs,
                scale,
                CommGrad::Blocked,
                grads.bufs_mut(),
                &mut work,
            )
            .map_err(|e| format!("chunk_backward of chunk {b}: {e}"))?;
        loss += stats.sum.loss.to_f64();
    }
    Ok((loss / (steps * num_envs) as f64, grads.map(|x| x.to_f64())))
}

/// The trainer's batched pass (`BatchedGrads::pass`, f32) over every chunk, every group.
fn batched_grad(
    model: &Model,
    ch: &Chunks,
    coefs: &PpoCoefs<f32>,
) -> Result<(f64, GroupVecs<f64>), String> {
    let (steps, num_envs) = (ch.steps, ch.num_envs);
    let layout = &model.layout;
    let sl = state_len(layout.dims());
    let n = steps * num_envs;
    let mut bg = BatchedGrads::<f32>::new(layout, n, 1).map_err(|e| format!("{e:#}"))?;
    let samples: Vec<PpoSample<f32>> = (0..n).map(|i| sample::<f32>(ch, i)).collect();
    let init: Vec<f32> = ch.init.iter().map(|x| *x as f32).collect();
    let seqs: Vec<Seq<'_, f32>> = (0..num_envs)
        .map(|b| {
            let r = b * steps..(b + 1) * steps;
            Seq {
                obs: &ch.obs[r.clone()],
                tokens: &ch.tokens[r.clone()],
                episode_start: &ch.start[r.clone()],
                samples: &samples[r],
                init_state: &init[b * sl..(b + 1) * sl],
                x: None,
            }
        })
        .collect();
    let opts = PassOptions {
        coefs: *coefs,
        scale: 1.0 / n as f32,
        comm: CommGrad::Blocked,
        groups: [true; 3],
        reuse_x: false,
    };
    let mut grads = GroupVecs::<f32>::zeros(layout);
    let stats = bg
        .pass(layout, model.params.bufs(), &seqs, &opts, grads.bufs_mut())
        .map_err(|e| format!("batched pass: {e:#}"))?;
    Ok((f64::from(stats.sum.loss) / n as f64, grads.map(f64::from)))
}

/// `export_torch(checkpoint, out)`: `metarim export --format torch` (the same function,
/// `host::export::export_torch`): the checkpoint's weights in PyTorch's names and layouts as a
/// safetensors file, written atomically. Returns `(bytes, tensors, params)` written.
#[pyfunction]
pub fn export_torch(
    py: Python<'_>,
    checkpoint: PathBuf,
    out: PathBuf,
) -> PyResult<(usize, usize, usize)> {
    let s = py
        .allow_threads(|| host::export::export_torch(&checkpoint, &out))
        .map_err(|e| value_err(format!("{e:#}")))?;
    Ok((s.bytes, s.tensors, s.params))
}

/// `evaluate(path, image, mission_tokens, episode_start, steps, num_envs)`: the Rust policy
/// (core `Policy::step`, f32) over given observations, time-major as [`rollout`] records them
/// (`image` (T, B, 7, 7, 3) u8 in numpy's layout, `mission_tokens` (T, B, MAX_TOKENS) u16,
/// `episode_start` (T, B) u8), each env's memory starting from zeros and reset at its episode
/// starts, the instruction encoded at each env's first step and episode starts. Returns a
/// dict of bytes: `logits` (T, B, A) f32, `values` (T, B) f32, `active` (T, B, N) u8.
#[pyfunction]
pub fn evaluate<'py>(
    py: Python<'py>,
    path: PathBuf,
    image: &[u8],
    mission_tokens: &[u8],
    episode_start: &[u8],
    steps: usize,
    num_envs: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let (_, model) = load_model(&path)?;
    let n = steps
        .checked_mul(num_envs)
        .filter(|n| *n > 0)
        .ok_or_else(|| value_err("steps and num_envs must be > 0"))?;
    let (images, tokens, start) = read_observations(image, mission_tokens, episode_start, n)?;
    let d = *model.layout.dims();
    let run = || -> Result<Recording, String> {
        let policy = model.policy().map_err(|e| format!("{e:#}"))?;
        let sl = state_len(&d);
        let mut work = StepWork::new(&d);
        let mut states = vec![vec![0.0f32; sl]; num_envs];
        let mut instrs = vec![vec![0.0f32; d.instr_hidden]; num_envs];
        let mut rec = Recording::default();
        for t in 0..steps {
            for (b, (state, instr)) in states.iter_mut().zip(instrs.iter_mut()).enumerate() {
                let i = t * num_envs + b;
                if start[i] {
                    state.fill(0.0);
                }
                if t == 0 || start[i] {
                    work.encode_instruction(&policy, &tokens[i], instr)
                        .map_err(|e| format!("step {t}, env {b}: {e}"))?;
                }
                let v = work
                    .step(&policy, &images[i], instr, state)
                    .map_err(|e| format!("step {t}, env {b}: {e}"))?;
                std::mem::swap(state, &mut work.next);
                rec.logits.extend_from_slice(&work.logits);
                rec.values.push(v);
                rec.push_active(&policy, &work.cache);
            }
        }
        Ok(rec)
    };
    let rec = py.allow_threads(run).map_err(value_err)?;
    let f32b = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let out = PyDict::new(py);
    out.set_item("logits", PyBytes::new(py, &f32b(&rec.logits)))?;
    out.set_item("values", PyBytes::new(py, &f32b(&rec.values)))?;
    out.set_item("active", PyBytes::new(py, &rec.active))?;
    Ok(out)
}
