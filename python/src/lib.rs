//! `metarim._metarim`: the Rust half of the `metarim` Python package.
//!
//! Invariants:
//! - An environment here is core's [`Env`] driven exactly as minigrid 3.2.0 drives its own: a
//!   seeded reset starts numpy's generator from that seed ([`NumpyGenerator::new`]), a reset
//!   without one continues the generator, and rewards are minigrid's `_reward()` computed in
//!   f64 as Python does (core computes them in f32 for training).
//! - Observations leave as bytes in numpy's layout: the image as `(7, 7, 3)` uint8 indexed
//!   `[i, j]` (view column, view row) as minigrid's `Grid.encode` gives it; batches stack them.
//! - Nothing here panics on input: bad level ids, actions and seeds are `ValueError`s naming
//!   the value, and a level that fails to generate is a `RuntimeError`.
//! - `VecEnv::step` releases the GIL and, with `threads > 1`, steps contiguous blocks of
//!   environments on scoped threads; the results do not depend on the thread count.
//!
//! The gymnasium classes, spaces and registration are Python (`python/metarim/`).

#![deny(missing_docs)]

mod policy;

use host::render::{render_frame, Frame, RenderOptions};
use host::train::config::{MAX_PROCS, MAX_THREADS};
use metarim_core::env::{Action, Env, StepOutcome, VIEW_CELLS, VIEW_SIZE};
use metarim_core::grid::Pos;
use metarim_core::levels::Level;
use metarim_core::mission::vocab::{self, MAX_TOKENS};
use metarim_core::rng::numpy::NumpyGenerator;
use metarim_core::world::encode_cell;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bytes of one observation image: 7 x 7 cells x (type, colour, state).
const IMAGE_BYTES: usize = VIEW_CELLS * 3;

/// One environment: its level, its world and the generator of its levels.
struct Slot {
    level: Level,
    env: Box<Env>,
    /// numpy's generator as minigrid's `np_random`: `None` until the first seeded reset.
    rng: Option<NumpyGenerator>,
}

impl Slot {
    /// A slot of `level_id`, under BabyAI's done-action rules if `done_actions`.
    fn new(level_id: &str, done_actions: bool) -> PyResult<Slot> {
        let level = Level::from_id(level_id).map_err(|_| {
            PyValueError::new_err(format!(
                "unknown level id {level_id:?} (metarim.level_ids() lists the {} registered ones)",
                Level::all().len()
            ))
        })?;
        let mut env = Box::new(Env::EMPTY);
        env.done_actions = done_actions;
        Ok(Slot {
            level,
            env,
            rng: None,
        })
    }

    /// minigrid's `reset(seed=seed)`: a seed restarts numpy's generator, none continues it.
    fn reset(&mut self, seed: Option<u64>) -> Result<(), String> {
        if let Some(s) = seed {
            self.rng = Some(NumpyGenerator::new(s));
        }
        let Some(rng) = self.rng.as_mut() else {
            return Err("reset: the first reset of an environment needs a seed".into());
        };
        self.level.generate(rng, &mut self.env).map_err(|e| {
            format!(
                "generating {} failed: {e:?} (please report this level and seed)",
                self.level.id()
            )
        })
    }

    /// One step; the reward as minigrid computes it (f64).
    fn step(&mut self, action: Action) -> (f64, bool, bool) {
        let StepOutcome {
            reward,
            terminated,
            truncated,
        } = self.env.step(action);
        let r = if reward > 0.0 && self.env.max_steps > 0 {
            1.0 - 0.9 * (self.env.step_count as f64 / self.env.max_steps as f64)
        } else {
            0.0
        };
        (r, terminated, truncated)
    }

    /// The image in numpy's `(7, 7, 3)` order into `out` (`IMAGE_BYTES` long).
    fn write_image(&self, out: &mut [u8]) {
        let obs = self.env.observation();
        for (k, cell) in out.chunks_exact_mut(3).enumerate() {
            // numpy index [i, j] (k = i * 7 + j) is view cell (i, j): core's index j * 7 + i.
            let (i, j) = (k / VIEW_SIZE, k % VIEW_SIZE);
            if let Some(code) = obs.get(j * VIEW_SIZE + i) {
                cell.copy_from_slice(code);
            }
        }
    }

    fn mission(&self) -> String {
        self.env.mission.as_str().to_owned()
    }

    /// Token ids of the mission (`MAX_TOKENS`, padded with 0) into `out`.
    fn write_tokens(&self, out: &mut [u16]) {
        // A mission longer than MAX_TOKENS is cut: no registered level has one.
        if vocab::tokenize(self.env.mission.as_str(), out).is_err() {
            let mut all = [0u16; 2 * MAX_TOKENS];
            let _ = vocab::tokenize(self.env.mission.as_str(), &mut all);
            out.copy_from_slice(&all[..out.len()]);
        }
    }
}

fn parse_action(a: i64) -> PyResult<Action> {
    Action::from_index(a).map_err(|_| {
        PyValueError::new_err(format!(
            "action {a} is not one of minigrid's 7 actions (0 left, 1 right, 2 forward, 3 pickup, 4 drop, 5 toggle, 6 done)"
        ))
    })
}

/// The agent's 7x7 view as a world of its own, as minigrid's `gen_obs_grid` builds it: the
/// cells in front of the agent (walls beyond the grid), the agent at the bottom middle facing
/// up, its cell holding what it carries.
fn pov_env(env: &Env) -> Result<Env, String> {
    let mut v = Env::new(VIEW_SIZE, VIEW_SIZE).map_err(|e| format!("{e:?}"))?;
    for i in 0..VIEW_SIZE {
        for j in 0..VIEW_SIZE {
            let obj = env.grid.get_or_wall(env.view_to_world(i, j));
            v.grid
                .set(Pos::new(i as i32, j as i32), obj)
                .map_err(|e| format!("{e:?}"))?;
        }
    }
    let me = Pos::new((VIEW_SIZE / 2) as i32, VIEW_SIZE as i32 - 1);
    v.grid.set(me, env.carrying).map_err(|e| format!("{e:?}"))?;
    v.agent_pos = me;
    v.agent_dir = 3;
    v.carrying = env.carrying;
    Ok(v)
}

fn frame_bytes<'py>(py: Python<'py>, f: &Frame) -> (Bound<'py, PyBytes>, u32, u32) {
    (PyBytes::new(py, &f.rgb), f.height, f.width)
}

fn render(env: &Env, tile_size: u32, highlight: bool, agent_pov: bool) -> Result<Frame, String> {
    let opts = RenderOptions {
        tile_size,
        highlight,
        annotation: None,
    };
    if agent_pov {
        Ok(render_frame(&pov_env(env)?, &opts))
    } else {
        Ok(render_frame(env, &opts))
    }
}

/// One minigrid-exact environment (the `metarim.MetarimEnv` gymnasium class wraps it).
#[pyclass(module = "metarim._metarim", name = "Env")]
struct PyEnv {
    slot: Slot,
}

#[pymethods]
impl PyEnv {
    /// An environment of the level `level_id` (minigrid's id, e.g. "BabyAI-GoToLocal-v0").
    #[new]
    #[pyo3(signature = (level_id, done_actions=false))]
    fn new(level_id: &str, done_actions: bool) -> PyResult<Self> {
        Ok(PyEnv {
            slot: Slot::new(level_id, done_actions)?,
        })
    }

    /// Whether BabyAI's done-action rules apply (minigrid's `BABYAI_DONE_ACTIONS`).
    #[getter]
    fn done_actions(&self) -> bool {
        self.slot.env.done_actions
    }

    /// Reset (a seed restarts the level generator; `None` continues it) and return
    /// `(image bytes (7, 7, 3), direction, mission)`.
    #[pyo3(signature = (seed=None))]
    fn reset<'py>(
        &mut self,
        py: Python<'py>,
        seed: Option<u64>,
    ) -> PyResult<(Bound<'py, PyBytes>, u8, String)> {
        self.slot.reset(seed).map_err(PyRuntimeError::new_err)?;
        Ok(self.observation(py))
    }

    /// Step and return `(image, direction, mission, reward, terminated, truncated)`.
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        action: i64,
    ) -> PyResult<(Bound<'py, PyBytes>, u8, String, f64, bool, bool)> {
        let action = parse_action(action)?;
        if self.slot.rng.is_none() {
            return Err(PyRuntimeError::new_err("step before the first reset"));
        }
        let (r, term, trunc) = self.slot.step(action);
        let (img, dir, mission) = self.observation(py);
        Ok((img, dir, mission, r, term, trunc))
    }

    /// The current observation `(image, direction, mission)`.
    fn observation<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, u8, String) {
        let mut img = [0u8; IMAGE_BYTES];
        self.slot.write_image(&mut img);
        (
            PyBytes::new(py, &img),
            self.slot.env.agent_dir,
            self.slot.mission(),
        )
    }

    /// An RGB frame `(bytes, height, width)`: the whole grid, or with `agent_pov` the agent's
    /// 7x7 view (minigrid's `get_frame`).
    #[pyo3(signature = (tile_size=32, highlight=true, agent_pov=false))]
    fn render<'py>(
        &self,
        py: Python<'py>,
        tile_size: u32,
        highlight: bool,
        agent_pov: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, u32, u32)> {
        let f = render(&self.slot.env, tile_size, highlight, agent_pov)
            .map_err(PyRuntimeError::new_err)?;
        Ok(frame_bytes(py, &f))
    }

    /// The mission's token ids (the policy's vocabulary, `MAX_TOKENS` long, 0-padded).
    fn mission_tokens(&self) -> Vec<u16> {
        let mut t = [0u16; MAX_TOKENS];
        self.slot.write_tokens(&mut t);
        t.to_vec()
    }

    /// The level id.
    #[getter]
    fn level_id(&self) -> &'static str {
        self.slot.level.id()
    }

    /// Grid width in cells (the level's, before the first reset, as minigrid sets it in its
    /// constructor: wrappers size their observation spaces from it).
    #[getter]
    fn width(&self) -> i32 {
        match self.slot.rng {
            None => self.slot.level.grid_size().0 as i32,
            Some(_) => self.slot.env.grid.width(),
        }
    }

    /// Grid height in cells (see `width`).
    #[getter]
    fn height(&self) -> i32 {
        match self.slot.rng {
            None => self.slot.level.grid_size().1 as i32,
            Some(_) => self.slot.env.grid.height(),
        }
    }

    /// Step budget of the episode.
    #[getter]
    fn max_steps(&self) -> u32 {
        self.slot.env.max_steps
    }

    /// Steps taken in the episode.
    #[getter]
    fn step_count(&self) -> u32 {
        self.slot.env.step_count
    }

    /// Agent position `(x, y)`.
    #[getter]
    fn agent_pos(&self) -> (i32, i32) {
        (self.slot.env.agent_pos.x, self.slot.env.agent_pos.y)
    }

    /// Agent direction (0 right, 1 down, 2 left, 3 up).
    #[getter]
    fn agent_dir(&self) -> u8 {
        self.slot.env.agent_dir
    }

    /// The mission text.
    #[getter]
    fn mission(&self) -> String {
        self.slot.mission()
    }

    /// The whole grid encoded as minigrid's `Grid.encode()` (every cell visible): bytes of a
    /// `(width, height, 3)` uint8 array indexed `[x, y]`, empty cells `(1, 0, 0)`. The agent is
    /// not in it (minigrid's grid does not hold the agent either).
    fn grid_encoding<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let g = &self.slot.env.grid;
        let (w, h) = (g.width().max(0), g.height().max(0));
        let mut out = Vec::with_capacity(w as usize * h as usize * 3);
        for x in 0..w {
            for y in 0..h {
                out.extend_from_slice(&encode_cell(g.get(Pos::new(x, y))));
            }
        }
        PyBytes::new(py, &out)
    }

    /// The grid as ASCII (core's `write_ascii`), for debugging.
    fn ascii(&self) -> String {
        let mut s = String::new();
        let _ = self.slot.env.write_ascii(&mut s);
        s
    }
}

/// Batched outputs of a [`VecEnv`], preallocated.
struct Batch {
    images: Vec<u8>,
    directions: Vec<u8>,
    rewards: Vec<f64>,
    terminated: Vec<u8>,
    truncated: Vec<u8>,
    tokens: Vec<u16>,
}

/// `num_envs` environments stepped together in Rust with gymnasium 1.x's next-step autoreset
/// (`metarim.make_vec` wraps it in a `gymnasium.vector.VectorEnv`).
#[pyclass(module = "metarim._metarim", name = "VecEnv")]
struct VecEnv {
    slots: Vec<Slot>,
    /// The env ended at the last step: the next step resets it instead (NEXT_STEP).
    autoreset: Vec<bool>,
    threads: usize,
    batch: Batch,
}

/// What one step of one env produces, written into that env's part of the batch.
struct Out<'a> {
    image: &'a mut [u8],
    direction: &'a mut u8,
    reward: &'a mut f64,
    terminated: &'a mut u8,
    truncated: &'a mut u8,
    tokens: &'a mut [u16],
}

fn step_one(slot: &mut Slot, autoreset: &mut bool, action: Action, out: Out) -> Result<(), String> {
    if *autoreset {
        slot.reset(None)?;
        // Token ids change only with the mission, at a reset.
        slot.write_tokens(out.tokens);
        *out.reward = 0.0;
        *out.terminated = 0;
        *out.truncated = 0;
        *autoreset = false;
    } else {
        let (r, term, trunc) = slot.step(action);
        *out.reward = r;
        *out.terminated = term as u8;
        *out.truncated = trunc as u8;
        *autoreset = term || trunc;
    }
    slot.write_image(out.image);
    *out.direction = slot.env.agent_dir;
    Ok(())
}

#[pymethods]
impl VecEnv {
    /// `num_envs` environments of `level_id`; `threads` (>= 1) steps them in parallel;
    /// `done_actions`: BabyAI's done-action rules (minigrid's `BABYAI_DONE_ACTIONS`).
    #[new]
    #[pyo3(signature = (level_id, num_envs, threads=1, done_actions=false))]
    fn new(level_id: &str, num_envs: usize, threads: usize, done_actions: bool) -> PyResult<Self> {
        // The trainer's bounds (one home): each env holds a whole world, so an absurd count
        // would abort the interpreter on allocation instead of raising.
        if !(1..=MAX_PROCS).contains(&num_envs) {
            return Err(PyValueError::new_err(format!(
                "num_envs must be 1 to {MAX_PROCS}, got {num_envs}"
            )));
        }
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(PyValueError::new_err(format!(
                "threads must be 1 to {MAX_THREADS}, got {threads}"
            )));
        }
        let slots = (0..num_envs)
            .map(|_| Slot::new(level_id, done_actions))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(VecEnv {
            autoreset: vec![false; num_envs],
            threads: threads.min(num_envs),
            batch: Batch {
                images: vec![0; num_envs * IMAGE_BYTES],
                directions: vec![0; num_envs],
                rewards: vec![0.0; num_envs],
                terminated: vec![0; num_envs],
                truncated: vec![0; num_envs],
                tokens: vec![0; num_envs * MAX_TOKENS],
            },
            slots,
        })
    }

    /// Number of environments.
    #[getter]
    fn num_envs(&self) -> usize {
        self.slots.len()
    }

    /// Reset every env (seeds: one per env, `None` continues that env's generator); returns
    /// `(packed, missions, tokens)`: the batch packed as [`VecEnv::packed`] describes (rewards
    /// and flags zero), the missions, and their token ids (u16, `num_envs x MAX_TOKENS`).
    #[allow(clippy::type_complexity)]
    fn reset<'py>(
        &mut self,
        py: Python<'py>,
        seeds: Vec<Option<u64>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<String>, Bound<'py, PyBytes>)> {
        if seeds.len() != self.slots.len() {
            return Err(PyValueError::new_err(format!(
                "reset: {} seeds for {} environments",
                seeds.len(),
                self.slots.len()
            )));
        }
        for (i, (slot, seed)) in self.slots.iter_mut().zip(&seeds).enumerate() {
            slot.reset(*seed)
                .map_err(|e| PyRuntimeError::new_err(format!("environment {i}: {e}")))?;
            slot.write_image(&mut self.batch.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]);
            self.batch.directions[i] = slot.env.agent_dir;
            slot.write_tokens(&mut self.batch.tokens[i * MAX_TOKENS..(i + 1) * MAX_TOKENS]);
        }
        self.autoreset.iter_mut().for_each(|a| *a = false);
        self.batch.rewards.iter_mut().for_each(|r| *r = 0.0);
        self.batch.terminated.iter_mut().for_each(|f| *f = 0);
        self.batch.truncated.iter_mut().for_each(|f| *f = 0);
        Ok((
            PyBytes::new(py, &self.packed()),
            self.slots.iter().map(Slot::mission).collect(),
            PyBytes::new(py, u16_bytes(&self.batch.tokens).as_slice()),
        ))
    }

    /// Step every env with `actions` (little-endian int64 bytes, one per env); returns
    /// `(packed, new_missions)`: the batch packed as [`VecEnv::packed`] describes, and
    /// `(env index, mission, token ids)` of the envs that were reset by this step (missions
    /// change only then, so the caller keeps the rest).
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<(usize, String, Vec<u16>)>)> {
        let n = self.slots.len();
        if actions.len() != 8 * n {
            return Err(PyValueError::new_err(format!(
                "step: {} bytes of actions for {n} environments (expected {} int64)",
                actions.len(),
                n
            )));
        }
        if self.slots.iter().any(|s| s.rng.is_none()) {
            return Err(PyRuntimeError::new_err("step before the first reset"));
        }
        let mut parsed = Vec::with_capacity(n);
        for (i, a) in actions.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(a);
            let a = i64::from_le_bytes(b);
            parsed.push(
                parse_action(a)
                    .map_err(|e| PyValueError::new_err(format!("environment {i}: {e}")))?,
            );
        }
        // The envs this step resets (flagged by the previous step): their missions change.
        let resetting: Vec<usize> = (0..n).filter(|&i| self.autoreset[i]).collect();
        let threads = self.threads;
        let VecEnv {
            slots,
            autoreset,
            batch,
            ..
        } = self;
        let result: Result<(), String> = py.allow_threads(|| {
            let per = n.div_ceil(threads);
            let work = |slots: &mut [Slot],
                        autoreset: &mut [bool],
                        actions: &[Action],
                        images: &mut [u8],
                        dirs: &mut [u8],
                        rewards: &mut [f64],
                        terms: &mut [u8],
                        truncs: &mut [u8],
                        tokens: &mut [u16]|
             -> Result<(), String> {
                for (k, (slot, auto)) in slots.iter_mut().zip(autoreset.iter_mut()).enumerate() {
                    let out = Out {
                        image: &mut images[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES],
                        direction: &mut dirs[k],
                        reward: &mut rewards[k],
                        terminated: &mut terms[k],
                        truncated: &mut truncs[k],
                        tokens: &mut tokens[k * MAX_TOKENS..(k + 1) * MAX_TOKENS],
                    };
                    step_one(slot, auto, actions[k], out)?;
                }
                Ok(())
            };
            if threads <= 1 {
                return work(
                    slots,
                    autoreset,
                    &parsed,
                    &mut batch.images,
                    &mut batch.directions,
                    &mut batch.rewards,
                    &mut batch.terminated,
                    &mut batch.truncated,
                    &mut batch.tokens,
                );
            }
            std::thread::scope(|s| {
                let handles: Vec<_> = slots
                    .chunks_mut(per)
                    .zip(autoreset.chunks_mut(per))
                    .zip(parsed.chunks(per))
                    .zip(batch.images.chunks_mut(per * IMAGE_BYTES))
                    .zip(batch.directions.chunks_mut(per))
                    .zip(batch.rewards.chunks_mut(per))
                    .zip(batch.terminated.chunks_mut(per))
                    .zip(batch.truncated.chunks_mut(per))
                    .zip(batch.tokens.chunks_mut(per * MAX_TOKENS))
                    .map(|((((((((sl, au), ac), im), di), re), te), tr), to)| {
                        s.spawn(move || work(sl, au, ac, im, di, re, te, tr, to))
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join()
                        .map_err(|_| "a stepping thread panicked".to_string())?
                })
            })
        });
        result.map_err(PyRuntimeError::new_err)?;
        let new_missions = resetting
            .into_iter()
            .map(|i| {
                let tokens = self.batch.tokens[i * MAX_TOKENS..(i + 1) * MAX_TOKENS].to_vec();
                (i, self.slots[i].mission(), tokens)
            })
            .collect();
        Ok((PyBytes::new(py, &self.packed()), new_missions))
    }

    /// An RGB frame `(bytes, height, width)` of environment `index` (see `Env.render`).
    #[pyo3(signature = (index, tile_size=32, highlight=true, agent_pov=false))]
    fn render<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        tile_size: u32,
        highlight: bool,
        agent_pov: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, u32, u32)> {
        let slot = self.slots.get(index).ok_or_else(|| {
            PyValueError::new_err(format!(
                "render: environment {index} of {}",
                self.slots.len()
            ))
        })?;
        let f =
            render(&slot.env, tile_size, highlight, agent_pov).map_err(PyRuntimeError::new_err)?;
        Ok(frame_bytes(py, &f))
    }
}

impl VecEnv {
    /// The batch in one buffer, so Python makes one copy and takes views of it: rewards (f64),
    /// directions (i64), images (`num_envs x 7 x 7 x 3` u8), terminated and truncated (u8 0/1),
    /// all little-endian, in that order (the 8-byte fields first, so their views are aligned).
    fn packed(&self) -> Vec<u8> {
        let n = self.slots.len();
        let mut out = Vec::with_capacity(n * (8 + 8 + IMAGE_BYTES + 2));
        for r in &self.batch.rewards {
            out.extend_from_slice(&r.to_le_bytes());
        }
        for d in &self.batch.directions {
            out.extend_from_slice(&i64::from(*d).to_le_bytes());
        }
        out.extend_from_slice(&self.batch.images);
        out.extend_from_slice(&self.batch.terminated);
        out.extend_from_slice(&self.batch.truncated);
        out
    }
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every registered level id (minigrid's ids), in registration order.
#[pyfunction]
fn level_ids() -> Vec<&'static str> {
    Level::all().iter().map(|l| l.id()).collect()
}

/// The policy's vocabulary: token id `i + 2` is `words()[i]` (0 pads, 1 is unknown).
#[pyfunction]
fn words() -> Vec<&'static str> {
    vocab::WORDS.to_vec()
}

/// The Python module.
#[pymodule]
fn _metarim(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEnv>()?;
    m.add_class::<VecEnv>()?;
    m.add_function(wrap_pyfunction!(level_ids, m)?)?;
    m.add_function(wrap_pyfunction!(words, m)?)?;
    m.add_function(wrap_pyfunction!(policy::load_weights, m)?)?;
    m.add_function(wrap_pyfunction!(policy::create_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(policy::rollout, m)?)?;
    m.add_function(wrap_pyfunction!(policy::ppo_gradient, m)?)?;
    m.add_function(wrap_pyfunction!(policy::export_torch, m)?)?;
    m.add_function(wrap_pyfunction!(policy::evaluate, m)?)?;
    m.add("MAX_TOKENS", MAX_TOKENS)?;
    m.add("VIEW_SIZE", VIEW_SIZE)?;
    Ok(())
}
