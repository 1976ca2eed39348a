//! Suite files (`experiments/*.toml`): what to train, how many seeds, what to measure.
//!
//! A suite has a name, a metric kind, a base [`TrainConfig`] (`[base]`, any of its fields),
//! arms (`[[arms]]`, each with `TrainConfig` overrides, and `[[matrix]]` blocks that expand
//! into one arm per level x mode) and an evaluation spec (`[eval]`). See
//! `experiments/README.md` for the format.
//!
//! Invariants: [`Suite::load`] is the only gate. Every arm's config passed
//! [`TrainConfig::validate`] and every evaluation level exists, so errors name the suite file
//! and the arm or field before anything runs. Budget scaling changes budgets only (frames,
//! curriculum frame budgets, `min_frames`, evaluation episodes), never the protocol.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::train::TrainConfig;

/// Evaluation episodes never scale below this (or below the suite's own count, if smaller).
pub const MIN_EVAL_EPISODES: usize = 10;

/// What a suite measures, which decides its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricKind {
    /// Frames to reach the threshold and the area under the success curve, per arm.
    SampleEfficiency,
    /// Per level of a curriculum: frames after the switch to reach the threshold, and the
    /// final checkpoint's success on every level (forgetting).
    Curriculum,
    /// The final checkpoint's success on levels never trained on.
    ZeroShot,
    /// The sample-efficiency metrics per variant.
    Ablation,
}

impl MetricKind {
    /// The name used in suite files.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::SampleEfficiency => "sample-efficiency",
            MetricKind::Curriculum => "curriculum",
            MetricKind::ZeroShot => "zero-shot",
            MetricKind::Ablation => "ablation",
        }
    }
}

/// A suite file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// Suite name (used in file names and the summary line).
    pub name: String,
    /// One or two sentences for results.md.
    #[serde(default)]
    pub description: String,
    /// What is measured.
    pub metric: MetricKind,
    /// Seeds per arm (0..seeds) unless `--seeds` says otherwise.
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// Success threshold of "frames to reach".
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Frames-to-threshold counts only updates at least this many frames into a run (or after
    /// a curriculum switch), so the rolling success window holds enough episodes. Scaled with
    /// the budget.
    #[serde(default)]
    pub min_frames: u64,
    /// The config every arm starts from (any `TrainConfig` field; the rest default).
    #[serde(default)]
    pub base: TrainConfig,
    /// Blocks expanding into one arm per level x mode.
    #[serde(default)]
    pub matrix: Vec<MatrixSpec>,
    /// Explicit arms.
    #[serde(default)]
    pub arms: Vec<ArmSpec>,
    /// Evaluation of the final checkpoints.
    #[serde(default)]
    pub eval: EvalSpec,
}

fn default_seeds() -> usize {
    5
}

fn default_threshold() -> f64 {
    0.9
}

/// `[[matrix]]`: one arm per level x mode, named `SHORT-MODE` (the level id without `BabyAI-`
/// and `-v0`), grouped by level.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    /// Levels trained on (one arm group each).
    pub levels: Vec<String>,
    /// Modes (one arm each per level).
    pub modes: Vec<String>,
    /// Further overrides for these arms (`key = value` as in the config).
    #[serde(default)]
    pub set: toml::Table,
    /// Levels the final checkpoints are evaluated on (default: the suite's `eval.levels`).
    #[serde(default)]
    pub eval_levels: Vec<String>,
}

/// `[[arms]]`: one arm.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    /// Arm name (letters, digits, `.`, `_`, `-`; names the run directories).
    pub name: String,
    /// Group: arms of a group share a plot and a table (default: `all`).
    #[serde(default)]
    pub group: Option<String>,
    /// Label in plots and tables (default: the name).
    #[serde(default)]
    pub label: Option<String>,
    /// Overrides of the base config (`key = value` as in the config).
    #[serde(default)]
    pub set: toml::Table,
    /// Levels the final checkpoints are evaluated on (default: the suite's `eval.levels`).
    #[serde(default)]
    pub eval_levels: Vec<String>,
}

/// `[eval]`: how final checkpoints are evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// Episodes per level (scaled with the budget, at least [`MIN_EVAL_EPISODES`]).
    pub episodes: usize,
    /// Seed of the evaluation episodes.
    pub seed: u64,
    /// Default evaluation levels of every arm.
    pub levels: Vec<String>,
    /// Take the most likely action instead of sampling.
    pub argmax: bool,
    /// Also run each evaluation with every episode showing the policy another episode's
    /// mission (`metarim eval`'s grounding check) and report both success rates: a policy
    /// that ignores its instruction scores the same on both. Doubles the evaluation's cost.
    pub grounding: bool,
}

impl Default for EvalSpec {
    fn default() -> Self {
        EvalSpec {
            episodes: 200,
            seed: 1_000_003,
            levels: Vec::new(),
            argmax: false,
            grounding: false,
        }
    }
}

/// Changes the command line makes to every arm.
#[derive(Clone, Debug, PartialEq)]
pub struct Overrides {
    /// Multiplies every budget (frames, curriculum frame budgets, `min_frames`, evaluation
    /// episodes); 1 runs the suite as declared.
    pub budget_scale: f64,
    /// Replace every arm's preset (`Tiny` for smoke runs).
    pub preset: Option<String>,
    /// `key=value` overrides applied to every arm after its own.
    pub set: Vec<(String, String)>,
    /// Training and evaluation threads per run.
    pub threads: usize,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            budget_scale: 1.0,
            preset: None,
            set: Vec::new(),
            threads: 1,
        }
    }
}

/// One arm, resolved: its config (seed still to be set per run) and evaluation levels.
#[derive(Clone, Debug, PartialEq)]
pub struct Arm {
    /// Arm name (unique in the suite).
    pub name: String,
    /// Group (plot and table).
    pub group: String,
    /// Label in plots and tables.
    pub label: String,
    /// The effective config, budgets scaled.
    pub config: TrainConfig,
    /// Levels its final checkpoints are evaluated on.
    pub eval_levels: Vec<String>,
}

/// A suite ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    /// The file it was read from.
    pub path: PathBuf,
    /// Suite name.
    pub name: String,
    /// Description.
    pub description: String,
    /// What is measured.
    pub metric: MetricKind,
    /// Seeds per arm (the file's; the caller may override).
    pub seeds: usize,
    /// Success threshold.
    pub threshold: f64,
    /// Minimum frames before frames-to-threshold counts (scaled).
    pub min_frames: u64,
    /// Evaluation spec (episodes scaled).
    pub eval: EvalSpec,
    /// Arms, in file order (matrix blocks first).
    pub arms: Vec<Arm>,
}

/// `BabyAI-GoToLocal-v0` -> `GoToLocal`.
pub fn short_level(id: &str) -> String {
    let s = id.strip_prefix("BabyAI-").unwrap_or(id);
    s.strip_suffix("-v0").unwrap_or(s).to_string()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.')
}

/// The largest budget a scaled field may reach: configs and checkpoints are TOML, whose
/// integers are signed 64-bit.
pub const MAX_BUDGET: u64 = i64::MAX as u64;

/// `round(v * x)`, at least `floor`; an error naming `field` when the result is above
/// [`MAX_BUDGET`] (it used to saturate and fail later, after the run had started).
fn scale(v: u64, x: f64, floor: u64, field: &str) -> Result<u64> {
    let scaled = (v as f64 * x).round();
    // `MAX_BUDGET as f64` rounds up to 2^63, which does not fit: compare strictly.
    if scaled.is_nan() || scaled >= MAX_BUDGET as f64 {
        bail!(
            "budget scale {x:?} makes field `{field}` {v} x {x:?} = {scaled:e}, above the largest \
             budget {MAX_BUDGET} (TOML integers are signed 64-bit)"
        );
    }
    Ok((scaled as u64).max(floor))
}

impl Suite {
    /// Read, resolve and check the suite file at `path` with `over` applied; errors name the
    /// file and what is wrong in it.
    pub fn load(path: &Path, over: &Overrides) -> Result<Suite> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading suite file {}", path.display()))?;
        Suite::parse(&text, path, over).with_context(|| format!("in suite file {}", path.display()))
    }

    /// [`Suite::load`] on `text` (`path` is recorded, not read).
    pub fn parse(text: &str, path: &Path, over: &Overrides) -> Result<Suite> {
        let file: SuiteFile = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if !valid_name(&file.name) {
            bail!(
                "field `name` {:?}: use letters, digits, '.', '_' and '-'",
                file.name
            );
        }
        if !(over.budget_scale.is_finite() && over.budget_scale > 0.0) {
            bail!(
                "budget scale must be a positive number, got {}",
                over.budget_scale
            );
        }
        if !(0.0..=1.0).contains(&file.threshold) {
            bail!(
                "field `threshold` must be in [0, 1], got {}",
                file.threshold
            );
        }
        if file.seeds == 0 {
            bail!("field `seeds` must be > 0 (runs per arm, seeds 0..seeds)");
        }
        if file.eval.episodes == 0 {
            bail!("field `eval.episodes` must be > 0");
        }
        let mut specs: Vec<ArmSpec> = Vec::new();
        for (i, m) in file.matrix.iter().enumerate() {
            if m.levels.is_empty() || m.modes.is_empty() {
                bail!(
                    "[[matrix]] block {}: `levels` and `modes` must not be empty",
                    i + 1
                );
            }
            for level in &m.levels {
                for mode in &m.modes {
                    let mut set = m.set.clone();
                    set.insert("level".into(), toml::Value::String(level.clone()));
                    set.insert("levels".into(), toml::Value::Array(Vec::new()));
                    set.insert("mode".into(), toml::Value::String(mode.clone()));
                    specs.push(ArmSpec {
                        name: format!("{}-{mode}", short_level(level)),
                        group: Some(short_level(level)),
                        label: Some(mode.clone()),
                        set,
                        eval_levels: m.eval_levels.clone(),
                    });
                }
            }
        }
        specs.extend(file.arms.iter().cloned());
        if specs.is_empty() {
            bail!("the suite declares no arms (add [[arms]] or [[matrix]] blocks)");
        }
        let mut names = BTreeSet::new();
        let mut arms = Vec::with_capacity(specs.len());
        for spec in &specs {
            let arm =
                resolve_arm(&file, spec, over).with_context(|| format!("arm {:?}", spec.name))?;
            if !names.insert(arm.name.clone()) {
                bail!("arm name {:?} appears twice", arm.name);
            }
            arms.push(arm);
        }
        let x = over.budget_scale;
        let mut eval = file.eval.clone();
        eval.episodes = usize::try_from(scale(
            eval.episodes as u64,
            x,
            (MIN_EVAL_EPISODES as u64).min(eval.episodes as u64),
            "eval.episodes",
        )?)
        .context("field `eval.episodes` scaled beyond this machine's usize")?;
        let min_frames = scale(file.min_frames, x, 0, "min_frames")?;
        Ok(Suite {
            path: path.to_path_buf(),
            name: file.name,
            description: file.description,
            metric: file.metric,
            seeds: file.seeds,
            threshold: file.threshold,
            min_frames,
            eval,
            arms,
        })
    }
}

fn resolve_arm(file: &SuiteFile, spec: &ArmSpec, over: &Overrides) -> Result<Arm> {
    if !valid_name(&spec.name) {
        bail!(
            "arm name {:?}: use letters, digits, '.', '_' and '-'",
            spec.name
        );
    }
    let mut cfg = file.base.clone();
    for (k, v) in &spec.set {
        cfg.set(k, &v.to_string())
            .with_context(|| format!("field `set.{k}`"))?;
    }
    if let Some(p) = &over.preset {
        cfg.preset = crate::train::config::Preset::from_name(p)?;
    }
    for (k, v) in &over.set {
        cfg.set(k, v).with_context(|| format!("--set {k}={v}"))?;
    }
    let x = over.budget_scale;
    // Saturated for configs that validation will refuse (`procs`, `frames_per_proc` too big),
    // so that the error names those fields rather than the floored `frames`.
    let fpu = (cfg.frames_per_update() as u64).min(MAX_BUDGET);
    cfg.frames = scale(cfg.frames, x, fpu.max(1), "frames")?;
    if cfg.curriculum_level_frames > 0 {
        cfg.curriculum_level_frames = scale(
            cfg.curriculum_level_frames,
            x,
            fpu.max(1),
            "curriculum_level_frames",
        )?;
    }
    cfg.threads = over.threads;
    cfg.validate()?;
    let eval_levels = if !spec.eval_levels.is_empty() {
        spec.eval_levels.clone()
    } else if !file.eval.levels.is_empty() {
        file.eval.levels.clone()
    } else if file.metric == MetricKind::Curriculum {
        cfg.level_ids()
    } else {
        Vec::new()
    };
    if file.metric == MetricKind::ZeroShot && eval_levels.is_empty() {
        bail!("a zero-shot arm needs evaluation levels (`eval_levels` or `eval.levels`)");
    }
    for id in &eval_levels {
        crate::levels::lookup(id).context("in the evaluation levels")?;
    }
    Ok(Arm {
        name: spec.name.clone(),
        group: spec.group.clone().unwrap_or_else(|| "all".into()),
        label: spec.label.clone().unwrap_or_else(|| spec.name.clone()),
        config: cfg,
        eval_levels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = r#"
name = "t"
metric = "sample-efficiency"
seeds = 3
min_frames = 1000
[base]
frames = 100000
procs = 4
batch_size = 160
[[matrix]]
levels = ["BabyAI-GoToObj-v0", "BabyAI-GoToLocal-v0"]
modes = ["meta-rim", "lstm"]
[[arms]]
name = "k2"
group = "kn"
set = { n_modules = 6, k_active = 2 }
[eval]
episodes = 100
"#;

    #[test]
    fn matrix_and_arms_resolve_with_scaled_budgets() {
        let over = Overrides {
            budget_scale: 0.1,
            ..Overrides::default()
        };
        let s = Suite::parse(SUITE, Path::new("t.toml"), &over).unwrap();
        let names: Vec<&str> = s.arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "GoToObj-meta-rim",
                "GoToObj-lstm",
                "GoToLocal-meta-rim",
                "GoToLocal-lstm",
                "k2"
            ]
        );
        assert_eq!(s.arms[2].config.level, "BabyAI-GoToLocal-v0");
        assert_eq!(s.arms[3].config.mode.name(), "lstm");
        assert_eq!(s.arms[3].group, "GoToLocal");
        assert_eq!(s.arms[4].config.k_active, Some(2));
        assert_eq!(s.arms[4].config.frames, 10_000);
        assert_eq!((s.min_frames, s.eval.episodes, s.seeds), (100, 10, 3));
        // Tiny scales keep at least one update and the minimum of evaluation episodes.
        let over = Overrides {
            budget_scale: 1e-9,
            ..Overrides::default()
        };
        let s = Suite::parse(SUITE, Path::new("t.toml"), &over).unwrap();
        assert_eq!(s.arms[0].config.frames, 160);
        assert_eq!(s.eval.episodes, MIN_EVAL_EPISODES);
    }

    #[test]
    fn bad_suites_name_what_is_wrong() {
        let bad = |text: &str, what: &str| {
            let e = format!(
                "{:#}",
                Suite::parse(text, Path::new("t.toml"), &Overrides::default()).unwrap_err()
            );
            assert!(e.contains(what), "{e} should mention {what}");
        };
        bad(&SUITE.replace("seeds = 3", "sedes = 3"), "sedes");
        bad(&SUITE.replace("procs = 4", "prcs = 4"), "prcs");
        bad(
            &SUITE.replace("GoToObj-v0", "GoToNowhere-v0"),
            "GoToNowhere",
        );
        bad(&SUITE.replace("\"lstm\"", "\"gru\""), "gru");
        bad(&SUITE.replace("k_active = 2", "k_activ = 2"), "k_activ");
        bad(
            &SUITE.replace("metric = \"sample-efficiency\"", "metric = \"speed\""),
            "speed",
        );
        bad(
            &SUITE.replace("name = \"k2\"", "name = \"GoToObj-lstm\""),
            "twice",
        );
        bad(&SUITE.replace("name = \"k2\"", "name = \"a/b\""), "a/b");
        bad(
            &SUITE.replace("metric = \"sample-efficiency\"", "metric = \"zero-shot\""),
            "evaluation levels",
        );
        bad(&format!("{SUITE}levels = [\"BabyAI-Nope-v0\"]\n"), "Nope");
    }

    /// Found while writing `fuzz/fuzz_targets/suite.rs` (its binary panicked on this suite):
    /// budget scaling asked for the frames per update (`procs * frames_per_proc`) before
    /// validation had bounded them, which overflowed (a panic under overflow checks, a wrapped
    /// floor otherwise). Now it saturates and validation names `procs`.
    #[test]
    fn huge_procs_are_an_error_not_an_overflow() {
        let text = SUITE.replace("procs = 4", "procs = 9223372036854775807");
        let e = format!(
            "{:#}",
            Suite::parse(&text, Path::new("t.toml"), &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("procs"), "{e} should mention procs");
    }
}
