//! The training configuration: one typed struct with documented defaults, loadable from TOML,
//! every field overridable from the command line (`--set key=value` or the named flags).
//!
//! Invariants: [`TrainConfig::validate`] is the only gate; a config that passes it describes a
//! run the trainer can do (known levels, preset and mode, consistent batch sizes), so later
//! code reports no configuration errors mid-run.

pub use super::backend::BackendChoice;
use anyhow::{anyhow, bail, Context, Result};
use metarim_core::nn::dims::{CellKind, CommUpdate, EncoderKind, ModelDims, PAPER, SMALL, TINY};
use metarim_core::nn::loss::PpoCoefs;
use metarim_core::nn::params::Mode;
use serde::{Deserialize, Serialize};

/// Which loop updates the encoder, instruction encoder and heads in the meta modes (the
/// config's `other_group`: `slow` or `fast`); the split's rules live in
/// [`metarim_core::nn::split`].
pub use metarim_core::nn::split::OtherGroup;

/// Everything a training run needs. Defaults: the main job (`metarim train` with no
/// arguments): BabyAI 1.0's PPO (docs/DESIGN.md, "BabyAI agent and PPO defaults") training the
/// Small preset (bag-of-words encoder FiLM-conditioned on the instruction) as a Meta-RIM (fast
/// modules, encoder and heads; slow attention; the `accumulate` schedule) on
/// BabyAI-GoToLocal-v0, where a mission-blind policy fails about half the time, sized to finish
/// on a 2-core machine in minutes (docs/RESULTS.md, "The main job"). [`TrainConfig::device`] is
/// the microcontroller agent's run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Level trained on when `levels` is empty.
    pub level: String,
    /// Several levels: a mixture (each env draws a level per episode) or, with `curriculum`,
    /// an ordered curriculum. Empty: train on `level` alone.
    pub levels: Vec<String>,
    /// Treat `levels` as an ordered curriculum instead of a mixture.
    pub curriculum: bool,
    /// Curriculum: advance when the success rate over the last `curriculum_window` episodes
    /// of the current level reaches this.
    pub curriculum_threshold: f64,
    /// Curriculum: episodes in the rolling success window (the window must be full to advance).
    pub curriculum_window: usize,
    /// Curriculum: also advance after this many frames on one level (0: no frame budget).
    pub curriculum_level_frames: u64,
    /// BabyAI's done-action rules (minigrid's `BABYAI_DONE_ACTIONS`): an instruction succeeds
    /// only on a `done` right after the step that completed it, and a `done` at any other time
    /// ends the episode with no reward; `eval` uses the checkpoint's setting. Off by default, as
    /// in minigrid.
    pub done_actions: bool,
    /// Model preset: `Paper`, `Small` or `Tiny`.
    pub preset: Preset,
    /// `meta-rim` (fast modules, slow attention), `reversed`, `joint` (plain RIM, PPO) or
    /// `lstm` (LSTM memory, PPO); in TOML by these names.
    pub mode: Mode,
    /// Which loop updates the encoder, instruction encoder and heads in the meta modes.
    pub other_group: OtherGroup,
    /// How the meta modes schedule their fast and slow steps: `accumulate` (the default: the
    /// PPO epochs of `joint`, the fast group stepping on every minibatch, the slow group once
    /// per `slowness` minibatches on their mean gradient) or `phases` (`inner_steps` fast
    /// steps, then `outer_steps` slow steps on longer chunks). docs/RESULTS.md, "A fast/slow
    /// schedule", has the measurements behind the default.
    pub meta_schedule: MetaSchedule,
    /// Override the preset's number of RIM modules (ablations).
    pub n_modules: Option<usize>,
    /// Override the preset's active modules per step k (ablations).
    pub k_active: Option<usize>,
    /// Override the preset's communication attention (the "no communication" ablation).
    pub communication: Option<bool>,
    /// Override how communication updates a module's state: `residual` (the official RIMs
    /// code's `h~ + g * u`, unbounded) or `interpolate` (`(1 - g) * h~ + g * u`, bounded;
    /// `metarim_core::nn::dims::CommUpdate`).
    pub comm_update: Option<CommUpdate>,
    /// Override the preset's observation encoder (`conv` or `bow`).
    pub encoder: Option<EncoderKind>,
    /// Override the preset's RIM module cell (`gru` or `lstm`).
    pub cell: Option<CellKind>,
    /// Override the preset's FiLM conditioning of the encoder on the instruction
    /// (`metarim_core::nn::encoder`, "FiLM").
    pub film: Option<bool>,
    /// Override the preset's layer normalisation of the encoder's output features
    /// (`metarim_core::nn::encoder`, "Feature normalisation").
    pub feature_norm: Option<bool>,
    /// Override the preset's RIM module width (units per module; the LSTM of `lstm` mode has
    /// `n_modules x rim_hidden` units).
    pub rim_hidden: Option<usize>,
    /// Override the preset's conv channels `[C0, C1, C2]` (`C2` is the observation feature
    /// width).
    pub conv_channels: Option<[usize; 3]>,
    /// Override the preset's per-cell embedding width of the bag-of-words encoder.
    pub bow_dim: Option<usize>,
    /// Override the preset's instruction word-embedding width.
    pub word_dim: Option<usize>,
    /// Override the preset's instruction GRU width (the instruction embedding).
    pub instr_hidden: Option<usize>,
    /// Override the preset's actor and critic hidden width.
    pub head_hidden: Option<usize>,
    /// Frames (environment steps, all envs together) to train for.
    pub frames: u64,
    /// Seed of everything: initial parameters, levels, action sampling, minibatch order.
    pub seed: u64,
    /// Worker threads for env stepping and gradients (0: all available cores). Results do not
    /// depend on it.
    pub threads: usize,
    /// Parallel environments.
    pub procs: usize,
    /// Frames collected per environment per update.
    pub frames_per_proc: usize,
    /// BPTT chunk length (steps) of the PPO updates and of the inner loop.
    pub recurrence: usize,
    /// PPO epochs per update (every mode but the meta modes' `phases` schedule).
    pub epochs: usize,
    /// Frames per minibatch (a multiple of `recurrence`).
    pub batch_size: usize,
    /// Adam learning rate of the slow group (and of everything in `joint` / `lstm`).
    pub lr: f64,
    /// Adam learning rate of the fast group (inner loop).
    pub fast_lr: f64,
    /// Adam beta1.
    pub adam_beta1: f64,
    /// Adam beta2.
    pub adam_beta2: f64,
    /// Adam epsilon.
    pub adam_eps: f64,
    /// Discount.
    pub gamma: f64,
    /// GAE lambda.
    pub gae_lambda: f64,
    /// PPO clip epsilon (ratio and value).
    pub clip_eps: f64,
    /// Entropy bonus weight.
    pub entropy_coef: f64,
    /// Value loss weight.
    pub value_coef: f64,
    /// Global gradient-norm clip of each optimiser step.
    pub max_grad_norm: f64,
    /// Anneal both learning rates linearly towards 0 over the run (CleanRL's `anneal_lr`): the
    /// update that starts at frame `f` uses `lr * (1 - f / frames)`. A pure function of the
    /// frames done, so `--resume` stays bit-identical (resuming with a larger `frames`
    /// stretches the rest of the schedule).
    pub lr_anneal: bool,
    /// Rewards are multiplied by this before GAE (BabyAI: 20).
    pub reward_scale: f64,
    /// Meta modes, `phases` schedule: fast-group updates per training update (inner loop),
    /// each on one minibatch of `recurrence`-step chunks.
    pub inner_steps: usize,
    /// Meta modes: how much slower the slow group learns. `accumulate`: it steps once per
    /// `slowness` minibatches, on their mean gradient. `phases`: the outer (slow) update's
    /// chunks are `recurrence * slowness` steps long, spanning several concatenated episodes.
    pub slowness: usize,
    /// Meta modes, `phases` schedule: slow-group updates per training update (outer loop),
    /// each on one minibatch of `recurrence * slowness`-step chunks.
    pub outer_steps: usize,
    /// Gradient computation: `batched` (default) or `per-chunk` (the reference path).
    pub gradients: GradPath,
    /// `per-chunk` gradients: independent accumulators; chunks are summed in a fixed order per
    /// shard and the shards in index order, which keeps results independent of the thread count.
    /// (The batched path is independent of the thread count by construction.)
    pub grad_shards: usize,
    /// Write a checkpoint every this many updates (and at the end).
    pub save_interval: usize,
    /// Episodes in the rolling window of the reported success rate and return.
    pub stats_window: usize,
    /// Where the policy runs: `auto` (the GPU when a CUDA device works, its kernels compile
    /// and a start-up self-check against the CPU passes; else the CPU, with the reason
    /// printed), `cpu`, or `cuda` (an error when no usable GPU). Environments always step on
    /// the CPU. Only the CPU backend is bit-for-bit deterministic.
    pub backend: BackendChoice,
    /// Start from this checkpoint's parameters instead of a fresh initialisation (a fine-tune:
    /// same preset and mode; optimiser state, envs and statistics start fresh). With
    /// `outer_steps = 0` in a meta mode only the fast group learns.
    pub init_from: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            level: "BabyAI-GoToLocal-v0".into(),
            levels: Vec::new(),
            curriculum: false,
            curriculum_threshold: 0.9,
            curriculum_window: 1000,
            curriculum_level_frames: 0,
            done_actions: false,
            preset: Preset::Small,
            mode: Mode::MetaRim,
            other_group: OtherGroup::Fast,
            meta_schedule: MetaSchedule::Accumulate,
            n_modules: None,
            k_active: None,
            communication: None,
            comm_update: None,
            encoder: None,
            cell: None,
            film: None,
            feature_norm: None,
            rim_hidden: None,
            conv_channels: None,
            bow_dim: None,
            word_dim: None,
            instr_hidden: None,
            head_hidden: None,
            frames: 6_000_000,
            seed: 1,
            threads: 0,
            procs: 64,
            frames_per_proc: 40,
            recurrence: 20,
            epochs: 4,
            batch_size: 1280,
            lr: 1e-3,
            fast_lr: 1e-3,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-5,
            gamma: 0.99,
            gae_lambda: 0.99,
            clip_eps: 0.2,
            entropy_coef: 0.01,
            value_coef: 0.5,
            max_grad_norm: 0.5,
            lr_anneal: false,
            reward_scale: 20.0,
            inner_steps: 4,
            slowness: 2,
            outer_steps: 8,
            gradients: GradPath::Batched,
            grad_shards: 16,
            save_interval: 10,
            stats_window: 500,
            backend: BackendChoice::Auto,
            init_from: None,
        }
    }
}

/// How the CPU trainer computes gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradPath {
    /// The memory and heads as GEMMs over the whole minibatch ([`super::batched`]); the
    /// default, for every memory (the LSTM, RIMs with GRU or LSTM cells).
    Batched,
    /// The core's per-sample `Policy::chunk_backward`, one chunk at a time in
    /// `grad_shards` fixed-order shards (the reference the batched path is tested against).
    PerChunk,
}

/// How the meta modes (`meta-rim`, `reversed`) schedule their fast and slow optimiser steps
/// (`meta_schedule`; the rules in `super::update::schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetaSchedule {
    /// `epochs` PPO epochs over minibatches of `recurrence`-step chunks, as in `joint`. Each
    /// minibatch's one gradient pass steps the fast group (and `Other` when it is fast) at
    /// once; the slow group's gradients are summed and it steps once per `slowness`
    /// minibatches (and at the end of the update) on their mean. Slow parameters take fewer
    /// steps, each over more of the rollout; no gradient pass is spent twice.
    Accumulate,
    /// The schedule before 2026-12-03: `inner_steps` fast steps on minibatches of
    /// `recurrence`-step chunks, then `outer_steps` slow steps on minibatches of
    /// `recurrence * slowness`-step chunks (the microcontroller agent was trained with it).
    Phases,
}

/// A model preset (config field `preset`): written as [`Preset::name`] spells it, read in any
/// case (TOML and the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// The paper-sized agent (`metarim_core::nn::dims::PAPER`).
    Paper,
    /// The main job's agent (`SMALL`).
    Small,
    /// The microcontroller agent (`TINY`).
    Tiny,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 3] = [Preset::Paper, Preset::Small, Preset::Tiny];

    /// The preset's name (`Paper`, `Small`, `Tiny`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "Paper",
            Preset::Small => "Small",
            Preset::Tiny => "Tiny",
        }
    }

    /// The preset named `name` in any case, or an error listing the names.
    pub fn from_name(name: &str) -> Result<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| anyhow!("unknown preset {name:?} (Paper, Small or Tiny)"))
    }

    /// The preset's model dimensions.
    pub fn dims(self) -> ModelDims {
        match self {
            Preset::Paper => PAPER,
            Preset::Small => SMALL,
            Preset::Tiny => TINY,
        }
    }

    /// The preset's model dimensions as they were before saved configs pinned the model
    /// ([`TrainConfig::to_saved_toml`]): what a model field missing from an older saved config
    /// meant. Only the Paper preset has changed since: its encoder was the plain CNN, without
    /// FiLM or the feature normalisation (the mission-blind agent of docs/RESULTS.md, "Paper
    /// preset on GoToLocal").
    pub fn dims_before_pinning(self) -> ModelDims {
        match self {
            Preset::Paper => ModelDims {
                encoder: EncoderKind::Conv,
                film: false,
                feature_norm: false,
                ..PAPER
            },
            p => p.dims(),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Preset {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Preset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Preset::from_name(&name).map_err(serde::de::Error::custom)
    }
}

impl TrainConfig {
    /// The microcontroller agent's run (what `scripts/run-firmware.sh` trains and exports;
    /// `configs/device-tiny.toml` spells it out): the Tiny preset with its plain encoder,
    /// `meta-rim` with the fast/slow schedule the firmware was measured with, on
    /// BabyAI-GoToObj-v0 for 1.5M frames. Tests start from it: it is the cheapest model, and
    /// every backend and the firmware run it.
    pub fn device() -> TrainConfig {
        TrainConfig {
            level: "BabyAI-GoToObj-v0".into(),
            preset: Preset::Tiny,
            mode: Mode::MetaRim,
            frames: 1_500_000,
            slowness: 2,
            other_group: OtherGroup::Slow,
            meta_schedule: MetaSchedule::Phases,
            ..TrainConfig::default()
        }
    }

    /// Parse TOML (unknown keys are errors naming the key).
    pub fn from_toml(text: &str) -> Result<TrainConfig> {
        toml::from_str(text).map_err(|e| anyhow!("{e}"))
    }

    /// Parse the config a run saved (a checkpoint's): a field added since then takes the
    /// value that reproduces what the run did, not today's default. `meta_schedule` missing
    /// means `phases`, the only schedule before the field existed, so older runs resume
    /// bit-identically; a model field missing (configs saved before [`Self::to_saved_toml`]
    /// pinned them) means the preset's value of that time ([`Preset::dims_before_pinning`]),
    /// so an older checkpoint keeps its model whatever the presets become.
    pub fn from_saved_toml(text: &str) -> Result<TrainConfig> {
        let mut c = Self::from_toml(text)?;
        let table: toml::Table = text.parse().map_err(|e| anyhow!("{e}"))?;
        if !table.contains_key("meta_schedule") {
            c.meta_schedule = MetaSchedule::Phases;
        }
        let before = c.preset.dims_before_pinning();
        Ok(c.with_model_from(&before))
    }

    /// These settings with every model field the config leaves to the preset (`None`) set to
    /// its value in `d`; fields already set are kept.
    fn with_model_from(mut self, d: &ModelDims) -> TrainConfig {
        fn pin<T: Copy>(slot: &mut Option<T>, value: T) {
            slot.get_or_insert(value);
        }
        pin(&mut self.n_modules, d.rim.n_modules);
        pin(&mut self.k_active, d.rim.k_active);
        pin(&mut self.communication, d.rim.communication);
        pin(&mut self.comm_update, d.rim.comm_update);
        pin(&mut self.encoder, d.encoder);
        pin(&mut self.cell, d.rim.cell);
        pin(&mut self.film, d.film);
        pin(&mut self.feature_norm, d.feature_norm);
        pin(&mut self.rim_hidden, d.rim.hidden);
        pin(&mut self.conv_channels, d.conv_channels);
        pin(&mut self.bow_dim, d.bow_dim);
        pin(&mut self.word_dim, d.word_dim);
        pin(&mut self.instr_hidden, d.instr_hidden);
        pin(&mut self.head_hidden, d.head_hidden);
        self
    }

    /// These settings with the model pinned: every model field the config leaves to the
    /// preset set to today's preset value. [`Self::dims`] gives the same model for both; the
    /// pinned config keeps giving it if a preset changes.
    pub fn pinned(&self) -> TrainConfig {
        self.clone().with_model_from(&self.preset.dims())
    }

    /// Load a TOML file.
    pub fn load(path: &std::path::Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// The effective configuration as TOML (model fields left to the preset stay unwritten:
    /// what `--print-config` shows and a user edits).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).context("serialising the config")
    }

    /// The configuration as a run saves it (checkpoints, a run's `config.toml`, exports): the
    /// model pinned ([`Self::pinned`]), so that [`Self::from_saved_toml`] gives back the same
    /// model after any change to the presets.
    pub fn to_saved_toml(&self) -> Result<String> {
        self.pinned().to_toml()
    }

    /// Set one field from `key=value` text (`value` in TOML syntax; bare words are taken as
    /// strings, comma lists as string arrays for `levels`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim().replace('-', "_");
        let value = value.trim();
        let mut table = toml::Table::try_from(&*self).context("config as a table")?;
        if !table.contains_key(&key) && !OPTIONAL_KEYS.contains(&key.as_str()) {
            bail!("unknown config key {key:?} (see `metarim train --print-config`)");
        }
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.into())),
            Err(_) if key == "levels" => toml::Value::Array(
                value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| toml::Value::String(s.trim().into()))
                    .collect(),
            ),
            Err(_) if looks_like_integer(value) => bail!(
                "bad value {value} for {key}: out of range (config integers are at most \
                 {MAX_U64_FIELD}, TOML's signed 64-bit range)"
            ),
            Err(_) => toml::Value::String(value.into()),
        };
        table.insert(key.clone(), parsed);
        *self = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow!("bad value {value:?} for {key}: {e}"))?;
        Ok(())
    }

    /// The PPO coefficients of the trainer's loss (value clipping on, as in PPO's reference
    /// implementations).
    pub fn ppo_coefs(&self) -> PpoCoefs<f32> {
        PpoCoefs {
            clip_eps: self.clip_eps as f32,
            value_coef: self.value_coef as f32,
            entropy_coef: self.entropy_coef as f32,
            clip_value: true,
        }
    }

    /// Model dimensions: the preset with the ablation overrides applied.
    pub fn dims(&self) -> Result<ModelDims> {
        let mut d = self.preset.dims();
        fn apply<T: Copy>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        apply(&mut d.rim.n_modules, self.n_modules);
        apply(&mut d.rim.k_active, self.k_active);
        apply(&mut d.rim.communication, self.communication);
        apply(&mut d.rim.comm_update, self.comm_update);
        apply(&mut d.encoder, self.encoder);
        apply(&mut d.rim.cell, self.cell);
        apply(&mut d.film, self.film);
        apply(&mut d.feature_norm, self.feature_norm);
        apply(&mut d.rim.hidden, self.rim_hidden);
        apply(&mut d.conv_channels, self.conv_channels);
        apply(&mut d.bow_dim, self.bow_dim);
        apply(&mut d.word_dim, self.word_dim);
        apply(&mut d.instr_hidden, self.instr_hidden);
        apply(&mut d.head_hidden, self.head_hidden);
        // The memory reads the encoded observation beside the instruction embedding.
        d.rim.input = d.memory_input();
        Ok(d)
    }

    /// The levels of the run, in order (one for a single-level run).
    pub fn level_ids(&self) -> Vec<String> {
        if self.levels.is_empty() {
            vec![self.level.clone()]
        } else {
            self.levels.clone()
        }
    }

    /// The length of the slow steps' chunks: `recurrence * slowness` for the `phases`
    /// schedule, `recurrence` for `accumulate` (and outside the meta modes).
    pub fn slow_horizon(&self) -> usize {
        match self.meta_schedule {
            MetaSchedule::Phases => self.recurrence * self.slowness.max(1),
            MetaSchedule::Accumulate => self.recurrence,
        }
    }

    /// Frames per update (all envs). Saturates: callers may ask before [`Self::validate`] has
    /// bounded `procs` and `frames_per_proc` (suite budget scaling does; found by fuzzing).
    pub fn frames_per_update(&self) -> usize {
        self.procs.saturating_mul(self.frames_per_proc)
    }

    /// Check everything up front, with errors naming the field.
    pub fn validate(&self) -> Result<()> {
        self.validate_model()?;
        self.validate_counts()?;
        self.validate_batching()?;
        self.validate_numbers()?;
        self.validate_run()
    }

    /// Levels, backend, mode and the model's widths.
    fn validate_model(&self) -> Result<()> {
        for id in self.level_ids() {
            crate::levels::lookup(&id).with_context(|| "in config field `level`/`levels`")?;
        }
        let mode = self.mode;
        let widths = [
            (self.rim_hidden, "rim_hidden"),
            (self.bow_dim, "bow_dim"),
            (self.word_dim, "word_dim"),
            (self.instr_hidden, "instr_hidden"),
            (self.head_hidden, "head_hidden"),
        ];
        let channels = self
            .conv_channels
            .iter()
            .flatten()
            .map(|c| (Some(*c), "conv_channels"));
        for (v, name) in widths.into_iter().chain(channels) {
            match v {
                Some(0) => bail!("config field `{name}` must be > 0"),
                Some(w) if w > MAX_WIDTH => {
                    bail!("config field `{name}` must be at most {MAX_WIDTH}, got {w}")
                }
                _ => {}
            }
        }
        let dims = self.dims()?;
        metarim_core::nn::params::Layout::new(&dims, mode)
            .map_err(|e| anyhow!("model dimensions: {e}"))?;
        Ok(())
    }

    /// Counts: positive where zero means nothing, bounded where a large value would exhaust
    /// memory or time, and every `u64` within TOML's signed 64-bit integers.
    fn validate_counts(&self) -> Result<()> {
        positive(self.procs, "procs")?;
        positive(self.frames_per_proc, "frames_per_proc")?;
        positive(self.recurrence, "recurrence")?;
        positive(self.epochs, "epochs")?;
        positive(self.batch_size, "batch_size")?;
        positive(self.grad_shards, "grad_shards")?;
        positive(self.save_interval, "save_interval")?;
        positive(self.stats_window, "stats_window")?;
        positive(self.curriculum_window, "curriculum_window")?;
        // Checkpoints and configs are TOML, whose integers are signed 64-bit.
        for (v, name) in [
            (self.frames, "frames"),
            (self.seed, "seed"),
            (self.curriculum_level_frames, "curriculum_level_frames"),
        ] {
            if v > MAX_U64_FIELD {
                bail!("config field `{name}` must be at most {MAX_U64_FIELD} (TOML integers are signed 64-bit), got {v}");
            }
        }
        for (v, max, name) in [
            (self.procs, MAX_PROCS, "procs"),
            (self.frames_per_proc, MAX_FRAMES_PER_PROC, "frames_per_proc"),
            (self.recurrence, MAX_FRAMES_PER_PROC, "recurrence"),
            (self.epochs, MAX_STEPS_PER_UPDATE, "epochs"),
            (self.inner_steps, MAX_STEPS_PER_UPDATE, "inner_steps"),
            (self.outer_steps, MAX_STEPS_PER_UPDATE, "outer_steps"),
            (self.slowness, MAX_FRAMES_PER_PROC, "slowness"),
            (self.grad_shards, MAX_GRAD_SHARDS, "grad_shards"),
            (self.threads, MAX_THREADS, "threads"),
            (self.stats_window, MAX_WINDOW, "stats_window"),
            (self.curriculum_window, MAX_WINDOW, "curriculum_window"),
            (self.save_interval, MAX_WINDOW, "save_interval"),
        ] {
            if v > max {
                bail!("config field `{name}` must be at most {max}, got {v}");
            }
        }
        Ok(())
    }

    /// How the rollout is cut into chunks and minibatches.
    fn validate_batching(&self) -> Result<()> {
        if !self.frames_per_proc.is_multiple_of(self.recurrence) {
            bail!(
                "frames_per_proc ({}) must be a multiple of recurrence ({})",
                self.frames_per_proc,
                self.recurrence
            );
        }
        if !self.batch_size.is_multiple_of(self.recurrence) {
            bail!(
                "batch_size ({}) must be a multiple of recurrence ({})",
                self.batch_size,
                self.recurrence
            );
        }
        if self.batch_size > self.frames_per_update() {
            bail!(
                "batch_size ({}) exceeds the frames per update (procs {} x frames_per_proc {})",
                self.batch_size,
                self.procs,
                self.frames_per_proc
            );
        }
        if self.mode.is_meta() {
            positive(self.slowness, "slowness")?;
            if !self.frames_per_proc.is_multiple_of(self.slow_horizon()) {
                bail!(
                    "frames_per_proc ({}) must be a multiple of recurrence x slowness ({})",
                    self.frames_per_proc,
                    self.slow_horizon()
                );
            }
        }
        Ok(())
    }

    /// Learning rates, Adam's constants, discounting and the loss coefficients.
    fn validate_numbers(&self) -> Result<()> {
        // Learning rates are Adam step sizes (each parameter moves by about `lr` per step):
        // above 1 no network here trains, and 1e30 turns every parameter into inf.
        for (v, name) in [(self.lr, "lr"), (self.fast_lr, "fast_lr")] {
            if !(v.is_finite() && v > 0.0 && v <= MAX_LR) {
                bail!("config field `{name}` must be a number in (0, {MAX_LR}], got {v}");
            }
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
            bail!(
                "config field `adam_eps` must be a finite number > 0, got {}",
                self.adam_eps
            );
        }
        // Adam divides by 1 - beta^t: a beta of 1 divides by zero on the first step.
        for (v, name) in [
            (self.adam_beta1, "adam_beta1"),
            (self.adam_beta2, "adam_beta2"),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("config field `{name}` must be in [0, 1), got {v}");
            }
        }
        for (v, name) in [
            (self.gamma, "gamma"),
            (self.gae_lambda, "gae_lambda"),
            (self.curriculum_threshold, "curriculum_threshold"),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("config field `{name}` must be in [0, 1], got {v}");
            }
        }
        for (v, name) in [
            (self.clip_eps, "clip_eps"),
            (self.entropy_coef, "entropy_coef"),
            (self.value_coef, "value_coef"),
            (self.max_grad_norm, "max_grad_norm"),
            (self.reward_scale, "reward_scale"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("config field `{name}` must be a finite number >= 0, got {v}");
            }
        }
        Ok(())
    }

    /// The curriculum's levels and the checkpoint to start from.
    fn validate_run(&self) -> Result<()> {
        if self.curriculum && self.levels.is_empty() {
            bail!(
                "config field `curriculum` is true but `levels` is empty: a curriculum needs its \
                 levels in order (levels = [\"A\", \"B\", ...])"
            );
        }
        if let Some(p) = &self.init_from {
            if !std::path::Path::new(p).is_file() {
                bail!("config field `init_from`: no checkpoint file at {p:?}");
            }
        }
        Ok(())
    }
}

/// An error naming `name` when `v` is zero.
fn positive(v: usize, name: &str) -> Result<()> {
    if v == 0 {
        bail!("config field `{name}` must be > 0");
    }
    Ok(())
}

/// Largest value of a `u64` field (`frames`, `seed`, ...): TOML integers are signed 64-bit.
pub const MAX_U64_FIELD: u64 = i64::MAX as u64;
/// Largest learning rate (`lr`, `fast_lr`): an Adam step moves each parameter by about `lr`.
pub const MAX_LR: f64 = 1.0;
/// Most parallel environments.
pub const MAX_PROCS: usize = 65_536;
/// Most frames per environment per update (also bounds `recurrence` and `slowness`).
pub const MAX_FRAMES_PER_PROC: usize = 65_536;
/// Most optimiser passes of one kind per update (`epochs`, `inner_steps`, `outer_steps`).
pub const MAX_STEPS_PER_UPDATE: usize = 1_000;
/// Most gradient shards of the per-chunk path.
pub const MAX_GRAD_SHARDS: usize = 4_096;
/// Most worker threads.
pub const MAX_THREADS: usize = 4_096;
/// Largest statistics, curriculum and save windows.
pub const MAX_WINDOW: usize = 100_000_000;

/// Widest layer a width override may ask for (the Paper preset's widest is 128): the core's
/// bound on every model dimension, which also bounds the memory a config can make the trainer
/// allocate.
pub const MAX_WIDTH: usize = metarim_core::nn::dims::MAX_DIM;

/// Optional fields (absent from the serialised table when unset) that `set` still accepts.
const OPTIONAL_KEYS: [&str; 15] = [
    "n_modules",
    "k_active",
    "communication",
    "comm_update",
    "encoder",
    "cell",
    "film",
    "feature_norm",
    "rim_hidden",
    "conv_channels",
    "bow_dim",
    "word_dim",
    "instr_hidden",
    "head_hidden",
    "init_from",
];

/// Whether `text` is an integer literal (digits with an optional sign and `_` separators), so
/// that an out-of-range number is reported as such rather than taken for a string.
fn looks_like_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
        && digits.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_toml() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        let text = c.to_toml().unwrap();
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), c);
    }

    #[test]
    fn set_overrides_fields_and_names_unknown_keys() {
        let mut c = TrainConfig::default();
        c.set("frames", "1000").unwrap();
        c.set("mode", "lstm").unwrap();
        c.set("levels", "BabyAI-GoToObj-v0,BabyAI-GoToLocal-v0")
            .unwrap();
        c.set("k-active", "2").unwrap();
        c.set("lr", "3e-4").unwrap();
        assert_eq!(c.frames, 1000);
        assert_eq!(c.mode, Mode::Lstm);
        assert_eq!(c.levels.len(), 2);
        assert_eq!(c.k_active, Some(2));
        assert_eq!(c.lr, 3e-4);
        let e = c.set("preset", "Huge").unwrap_err().to_string();
        assert!(e.contains("preset") && e.contains("Huge"), "{e}");
        c.set("preset", "paper").unwrap();
        assert_eq!(c.preset, Preset::Paper);
        let e = c.set("backend", "gpu").unwrap_err().to_string();
        assert!(e.contains("backend") && e.contains("gpu"), "{e}");
        let e = c.set("mode", "fastest").unwrap_err().to_string();
        assert!(e.contains("mode") && e.contains("fastest"), "{e}");
        let e = c.set("fram", "3").unwrap_err().to_string();
        assert!(e.contains("fram"), "{e}");
        let e = c.set("frames", "lots").unwrap_err().to_string();
        assert!(e.contains("frames"), "{e}");
        // A number too large for TOML is reported as out of range, not as a string.
        let e = c
            .set("seed", "18446744073709551615")
            .unwrap_err()
            .to_string();
        assert!(e.contains("seed") && e.contains("out of range"), "{e}");
    }

    #[test]
    fn width_overrides_resize_the_model_and_keep_the_memory_input_consistent() {
        let mut c = TrainConfig::default();
        c.set("conv_channels", "[8, 16, 24]").unwrap();
        c.set("instr_hidden", "32").unwrap();
        c.set("rim_hidden", "16").unwrap();
        c.set("head_hidden", "32").unwrap();
        c.validate().unwrap();
        let d = c.dims().unwrap();
        assert_eq!(d.conv_channels, [8, 16, 24]);
        assert_eq!((d.instr_hidden, d.rim.hidden, d.head_hidden), (32, 16, 32));
        assert_eq!(d.rim.input, 24 + 32);
        let text = c.to_toml().unwrap();
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), c);
        // Without overrides the presets are unchanged.
        assert_eq!(TrainConfig::default().dims().unwrap(), SMALL);
        assert_eq!(TrainConfig::device().dims().unwrap(), TINY);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let bad = |f: &dyn Fn(&mut TrainConfig), what: &str| {
            let mut c = TrainConfig::default();
            f(&mut c);
            let e = format!("{:#}", c.validate().unwrap_err());
            assert!(e.contains(what), "{e} should mention {what}");
        };
        bad(&|c| c.level = "BabyAI-Nope-v0".into(), "Nope");
        bad(&|c| c.recurrence = 7, "recurrence");
        bad(&|c| c.batch_size = 999_999_980, "batch_size");
        bad(&|c| c.k_active = Some(9), "k_active");
        bad(&|c| c.n_modules = Some(17), "n_modules must be 1 to 16");
        bad(&|c| c.rim_hidden = Some(0), "rim_hidden");
        bad(&|c| c.conv_channels = Some([8, 0, 16]), "conv_channels");
        bad(&|c| c.head_hidden = Some(MAX_WIDTH + 1), "head_hidden");
        bad(&|c| c.gamma = 1.5, "gamma");
        bad(&|c| c.lr = -1.0, "lr");
        // Domains: Adam's betas in [0, 1), learning rates in (0, 1], finite everything.
        bad(&|c| c.adam_beta1 = 1.0, "adam_beta1");
        bad(&|c| c.adam_beta2 = 1.0, "adam_beta2");
        bad(&|c| c.adam_beta2 = f64::NAN, "adam_beta2");
        bad(&|c| c.lr = 1e30, "lr");
        bad(&|c| c.fast_lr = f64::NAN, "fast_lr");
        bad(&|c| c.adam_eps = f64::INFINITY, "adam_eps");
        bad(&|c| c.gamma = f64::NAN, "gamma");
        bad(&|c| c.curriculum = true, "levels");
        // Integers: TOML's signed 64-bit range and the per-update work bounds.
        bad(&|c| c.seed = 1 << 63, "seed");
        bad(&|c| c.frames = u64::MAX, "frames");
        bad(&|c| c.procs = MAX_PROCS + 1, "procs");
        bad(&|c| c.inner_steps = 100_000, "inner_steps");
        bad(&|c| c.outer_steps = 100_000, "outer_steps");
        bad(&|c| c.epochs = 100_000, "epochs");
        bad(&|c| c.frames_per_proc = 10_000_000, "frames_per_proc");
        let e = TrainConfig::from_toml("framez = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("framez"), "{e}");
        let e = TrainConfig::from_toml("meta_schedule = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("accumulate") && e.contains("phases"), "{e}");
    }

    #[test]
    fn a_saved_config_from_before_meta_schedule_keeps_the_phases_schedule() {
        let mut c = TrainConfig {
            mode: Mode::MetaRim,
            ..TrainConfig::default()
        };
        let text = c.to_saved_toml().unwrap();
        assert_eq!(TrainConfig::from_saved_toml(&text).unwrap(), c.pinned());
        let old: String = text
            .lines()
            .filter(|l| !l.starts_with("meta_schedule"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(old, text);
        c.meta_schedule = MetaSchedule::Phases;
        assert_eq!(TrainConfig::from_saved_toml(&old).unwrap(), c.pinned());
        // A new config without the field takes today's default.
        assert_eq!(
            TrainConfig::from_toml(&old).unwrap().meta_schedule,
            MetaSchedule::Accumulate
        );
    }

    /// A saved config names its whole model, so a checkpoint keeps its model when a preset
    /// changes; one saved before that (no model fields) gets the preset of its time.
    #[test]
    fn saved_configs_pin_the_model_and_older_ones_keep_the_presets_of_their_time() {
        for preset in Preset::ALL {
            let c = TrainConfig {
                preset,
                k_active: Some(2),
                ..TrainConfig::default()
            };
            let saved = c.to_saved_toml().unwrap();
            for key in [
                "encoder",
                "film",
                "feature_norm",
                "n_modules",
                "conv_channels",
            ] {
                assert!(
                    saved.lines().any(|l| l.starts_with(&format!("{key} ="))),
                    "{key} not pinned:\n{saved}"
                );
            }
            let back = TrainConfig::from_saved_toml(&saved).unwrap();
            assert_eq!(back.dims().unwrap(), c.dims().unwrap());
            assert_eq!(back.k_active, Some(2), "a set field is kept");
            assert_eq!(back, c.pinned());
            assert_eq!(back.pinned(), back, "pinning twice changes nothing");
            // `--print-config` leaves the preset's fields to the preset.
            assert!(!c.to_toml().unwrap().contains("film ="));
        }
        // The Paper preset reads its mission today (bag of words, FiLM, normalised features);
        // a Paper config saved before the pinning was the plain CNN, and loads as one.
        let paper = TrainConfig {
            preset: Preset::Paper,
            ..TrainConfig::default()
        };
        let now = paper.dims().unwrap();
        assert_eq!(
            (now.encoder, now.film, now.feature_norm),
            (EncoderKind::Bow, true, true)
        );
        let old = TrainConfig::from_saved_toml(&paper.to_toml().unwrap()).unwrap();
        let then = old.dims().unwrap();
        assert_eq!(
            (then.encoder, then.film, then.feature_norm),
            (EncoderKind::Conv, false, false)
        );
        assert_eq!(then, Preset::Paper.dims_before_pinning());
        let explicit = TrainConfig::from_saved_toml("preset = \"Paper\"\nfilm = true\n").unwrap();
        assert!(explicit.dims().unwrap().film, "a field it set is kept");
        assert_eq!(explicit.dims().unwrap().encoder, EncoderKind::Conv);
    }
}
