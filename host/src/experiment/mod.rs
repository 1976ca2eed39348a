//! Experiments: declared suites of training runs (`experiments/*.toml`), run resumably and in
//! parallel, measured, and reported (`metarim experiment`).
//!
//! - [`spec`]: the suite file format and its resolution into arms with effective configs;
//! - [`metrics`]: frames to a success threshold, area under the success curve, curriculum
//!   adaptation, medians and bootstrap intervals over seeds;
//! - [`report`]: `results.md` and the plots.
//!
//! Layout of an output directory: `DIR/runs/<arm>-seed<k>/` holds one run (the trainer's
//! checkpoint and logs, and `result.json` with its evaluations); `DIR/results.md` and
//! `DIR/*.png` summarise the suite.
//!
//! Invariants:
//! - A run is finished when its `result.json` records the current budget and evaluation spec
//!   and its checkpoint has at least the budget's frames; finished runs are never rerun.
//!   Anything else is (re)started with `resume`, so an interrupted run continues bit-exactly
//!   from its last checkpoint (the trainer's guarantee).
//! - Results do not depend on `--jobs` or `--threads`: each run is a function of its config
//!   and seed, and aggregation goes in arm and seed order.
//! - Every file is written atomically.

pub mod claims;
pub mod metrics;
pub mod report;
pub mod slurm;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::train::checkpoint::{self, write_atomic};
use crate::train::eval::{evaluate, EvalOptions};
use crate::train::run::{
    computation_differences, format_eta, train, RunOptions, UpdateHook, CHECKPOINT_FILE,
    CONFIG_FILE,
};
use crate::train::TrainConfig;

pub use spec::{Arm, MetricKind, Overrides, Suite};

/// File name of a run's result inside its directory.
pub const RESULT_FILE: &str = "result.json";

/// Where suites live, relative to the working directory.
pub const SUITES_DIR: &str = "experiments";

/// Environment variable naming one more directory of suites ([`suite_dirs`]).
pub const SUITES_ENV: &str = "METARIM_SUITES";

/// The directories a suite name is looked up in, in order: `flag` (`--suites DIR`), the
/// directory in [`SUITES_ENV`], [`SUITES_DIR`] under the working directory, and the
/// `experiments/` of the repository this binary was built from (when it still exists), so
/// `metarim experiment zero-shot` works from anywhere on the machine that built it.
pub fn suite_dirs(flag: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add = |d: PathBuf| {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    };
    if let Some(d) = flag {
        add(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os(SUITES_ENV).filter(|d| !d.is_empty()) {
        add(PathBuf::from(d));
    }
    add(PathBuf::from(SUITES_DIR));
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(SUITES_DIR);
    if built.is_dir() {
        add(built.canonicalize().unwrap_or(built));
    }
    dirs
}

/// [`resolve_suite`] over several directories ([`suite_dirs`]): `name` itself if it is a
/// file, else the first `DIR/name.toml`; the error of the first directory otherwise, naming
/// every directory searched.
pub fn find_suite(name: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    let first = dirs.first().map_or(Path::new(SUITES_DIR), PathBuf::as_path);
    let mut first_error = None;
    for d in dirs {
        match resolve_suite(name, d) {
            Ok(p) => return Ok(p),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let e = first_error.unwrap_or_else(|| anyhow!("no suite directory to look in"));
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(e.context(format!(
        "suite {name:?} not found in {} (searched: {}; add one with --suites DIR or {SUITES_ENV})",
        first.display(),
        searched.join(", ")
    )))
}

/// The suites of `metarim experiment paper`, in the order it runs them: claims 1 and 2
/// (`sample-efficiency`), claim 3 (`curriculum`), claim 4 (`zero-shot`).
pub const PAPER_SUITES: [&str; 3] = ["sample-efficiency", "curriculum", "zero-shot"];

/// File of `metarim experiment paper`'s verdicts, in its output directory.
pub const CLAIMS_FILE: &str = "claims.md";

/// How to run a suite.
#[derive(Clone, Debug)]
pub struct ExperimentOptions {
    /// The suite file.
    pub suite: PathBuf,
    /// Seeds per arm (`0..seeds`); `None`: the suite's own count.
    pub seeds: Option<usize>,
    /// Output directory.
    pub out: PathBuf,
    /// Budget scale, preset, per-arm overrides and threads per run.
    pub overrides: Overrides,
    /// Runs in parallel (0: available cores / threads per run, at least 1).
    pub jobs: usize,
    /// The command line, recorded in `results.md`.
    pub command: String,
    /// A line on stderr per finished run (`[i/N] ...`), and the suite's first line.
    pub progress: bool,
    /// Every this often, a line per running run (frames, fps, success, ETA) and one for the
    /// suite (runs done, ETA); `None`: none.
    pub status_every: Option<Duration>,
    /// The runs' own notes on stderr (a fresh start, the backend); warnings always show.
    pub run_notes: bool,
    /// Runs write TensorBoard event files ([`crate::tensorboard`]).
    pub tensorboard: bool,
    /// Train nothing: write the report from runs finished earlier (an unfinished run of the
    /// plan is an error naming it).
    pub report_only: bool,
    /// While training: after each run this call trains finishes, the suite's finished runs
    /// are archived into this directory ([`archive`]: result, config and gzipped log of each,
    /// the report for the seeds every arm has finished), so that losing `out` (a scratch disk,
    /// a machine given back) loses only the runs in progress. A failed archive is a warning,
    /// not an error: the runs stay in `out`. [`run_paper`] archives each suite into its own
    /// subdirectory of it, named like the suite's output.
    pub archive_each: Option<PathBuf>,
    /// Raised (by a signal handler): every running run saves a checkpoint after its current
    /// update and stops, no further run starts, and [`run`] returns a [`Stopped`] error; the
    /// same command resumes the suite.
    pub stop: Option<Arc<AtomicBool>>,
}

impl ExperimentOptions {
    /// The suite file `suite` into `out` with every other option at its quiet default: the
    /// suite's seeds, no overrides, as many parallel runs as cores, no progress lines or run
    /// notes, TensorBoard files, training (not a report alone), no archive, no stop flag.
    pub fn new(suite: PathBuf, out: PathBuf) -> Self {
        ExperimentOptions {
            suite,
            seeds: None,
            out,
            overrides: Overrides::default(),
            jobs: 0,
            command: String::new(),
            progress: false,
            status_every: None,
            run_notes: false,
            tensorboard: true,
            report_only: false,
            archive_each: None,
            stop: None,
        }
    }
}

/// What [`run`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSummary {
    /// Suite name.
    pub suite: String,
    /// Runs in the suite (arms x seeds).
    pub runs: usize,
    /// Runs finished at the end (all of them when this returns).
    pub finished: usize,
    /// Runs found finished and not rerun.
    pub skipped: usize,
    /// Runs trained (or resumed) and evaluated by this call.
    pub trained: usize,
    /// Output directory.
    pub out: PathBuf,
    /// `results.md`.
    pub results: PathBuf,
    /// The plots written.
    pub plots: Vec<PathBuf>,
}

/// One evaluation of a final checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelEval {
    /// Level id.
    pub level: String,
    /// Episodes.
    pub episodes: usize,
    /// Success rate.
    pub success: f64,
    /// 95% Wilson interval of the success rate.
    pub success_ci: (f64, f64),
    /// Mean return.
    pub mean_return: f64,
    /// With `[eval] grounding`: the success rate of the same episodes with another episode's
    /// mission shown to the policy, and its 95% Wilson interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapped: Option<(f64, (f64, f64))>,
    /// With `[eval] grounding`, on levels whose missions are instructions: of the swapped
    /// episodes whose shown mission could be carried out (its objects are in the episode's
    /// world), the fraction in which the agent carried it out, and its 95% Wilson interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed_shown: Option<(f64, (f64, f64))>,
    /// With `[eval] grounding`: where the swapped episodes' successes come from (absent in
    /// results recorded before these counts were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_counts: Option<SwapCounts>,
}

/// The counts behind a grounding check's swapped figure. A swapped episode goes on until its
/// own mission succeeds or time runs out, so its own-mission success can come from an agent
/// that reads: after it has carried out the shown mission, or where the shown mission names an
/// object that is not in the episode's world and so cannot be carried out at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapCounts {
    /// Episodes shown another episode's mission.
    pub swapped: usize,
    /// Of those, the episodes that succeeded at their own mission.
    pub successes: usize,
    /// Swapped episodes whose shown mission could be carried out in the episode's world.
    pub shown_feasible: usize,
    /// Of those, the episodes in which the agent carried out the shown mission.
    pub followed_shown: usize,
    /// Of those `shown_feasible`, the episodes that succeeded at their own mission.
    pub feasible_successes: usize,
    /// Of those, the ones whose own success came after (or with) carrying out the shown one.
    pub followed_then_own: usize,
}

impl SwapCounts {
    /// The counts of the swapped evaluation `w`.
    pub fn of(w: &crate::train::eval::EvalResult) -> SwapCounts {
        SwapCounts {
            swapped: w.missions_swapped,
            successes: w.swapped_successes,
            shown_feasible: w.shown_feasible,
            followed_shown: w.followed_shown,
            feasible_successes: w.feasible_successes,
            followed_then_own: w.followed_then_own,
        }
    }

    /// Own-mission successes in the episodes whose shown mission could not be carried out, and
    /// how many such episodes there were.
    pub fn infeasible(&self) -> (usize, usize) {
        (
            self.successes.saturating_sub(self.feasible_successes),
            self.swapped.saturating_sub(self.shown_feasible),
        )
    }
}

impl LevelEval {
    /// The evaluation `r` on the level `id`, with the episodes' own missions only.
    pub fn own(id: &str, r: &crate::train::eval::EvalResult) -> LevelEval {
        LevelEval {
            level: id.to_string(),
            episodes: r.episodes,
            success: r.success,
            success_ci: r.success_ci,
            mean_return: r.mean_return,
            swapped: None,
            followed_shown: None,
            swap_counts: None,
        }
    }
}

/// What a finished run records in its `result.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// The frame budget it was run to.
    pub budget: u64,
    /// Frames in its final checkpoint.
    pub frames: u64,
    /// Rolling training success at the end.
    pub final_success: f64,
    /// The evaluation spec its evaluations used (episodes, seed, argmax).
    pub eval_episodes: usize,
    /// Seed of the evaluation episodes.
    pub eval_seed: u64,
    /// Greedy evaluation.
    pub eval_argmax: bool,
    /// Whether the evaluations include the grounding check (absent in results written
    /// before the option existed: false).
    #[serde(default)]
    pub eval_grounding: bool,
    /// One per evaluation level, in the arm's order.
    pub evals: Vec<LevelEval>,
    /// Curriculum runs: the policy as each level ended (its stage checkpoint,
    /// [`crate::train::run::stage_checkpoint_file`]), evaluated on that level and every earlier
    /// one; in curriculum order, one per level the run moved on from. With the final
    /// checkpoint's `evals`, the success matrix of forgetting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageEval>,
}

/// A curriculum run's policy as one of its levels ended, evaluated on the levels so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageEval {
    /// The level the curriculum moved on from.
    pub level: String,
    /// Frames at the switch.
    pub frames: u64,
    /// Success on each curriculum level up to and including `level`, in curriculum order.
    pub evals: Vec<LevelEval>,
}

/// One run of the plan.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Index of its arm in the suite.
    pub arm: usize,
    /// Seed.
    pub seed: u64,
    /// Its directory.
    pub dir: PathBuf,
    /// Its config (the arm's, with the seed).
    pub config: TrainConfig,
}

/// A run's directory name: `<arm>-seed<k>`.
pub fn run_dir_name(arm: &str, seed: u64) -> String {
    format!("{arm}-seed{seed}")
}

/// The suite file for `name`: `name` itself if it is an existing file, else
/// `dir/name.toml`. Trailing slashes are ignored (`sample-efficiency/` from tab completion,
/// `experiments/x.toml/`). A directory, or a name that is neither, is an error saying what a
/// suite argument may be and listing the suites in `dir` (or in the directory given).
pub fn resolve_suite(name: &str, dir: &Path) -> Result<PathBuf> {
    let trimmed = name.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { name } else { trimmed };
    let direct = PathBuf::from(trimmed);
    if direct.is_file() {
        return Ok(direct);
    }
    let file = dir.join(format!("{trimmed}.toml"));
    if !trimmed.is_empty() && file.is_file() {
        return Ok(file);
    }
    let what = format!(
        "a suite is a name in {d} (the file {d}/NAME.toml) or the path of a suite file (.toml)",
        d = dir.display()
    );
    if direct.is_dir() {
        let here = suite_names(&direct);
        let listed = if here.is_empty() {
            format!(
                "it holds no .toml files; suites in {}: {}",
                dir.display(),
                {
                    let known = suite_names(dir);
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                }
            )
        } else {
            format!(
                "suite files in it: {}",
                here.iter()
                    .map(|n| format!("{n}.toml"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let output_hint = if direct.join("runs").is_dir() || direct.join("results.md").is_file() {
            "; it looks like an experiment's output directory: to resume it, name its suite \
             and pass the directory with --out"
        } else {
            ""
        };
        bail!("suite {name:?} is a directory: {what}; {listed}{output_hint}");
    }
    let known = suite_names(dir);
    bail!(
        "unknown suite {name:?}: no file {} or {} ({what}; suites in {}: {})",
        direct.display(),
        file.display(),
        dir.display(),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// The stems of the `.toml` files in `dir`, sorted (empty when it cannot be read).
fn suite_names(dir: &Path) -> Vec<String> {
    let mut known: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    if p.extension()? != "toml" || !p.is_file() {
                        return None;
                    }
                    Some(p.file_stem()?.to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    known
}

/// The runs of `suite` with `seeds` seeds each, in seed then arm order: a suite stopped part
/// way (suites run for hours, over several sittings) has about as many seeds of every arm, so
/// its partial report already compares the arms.
pub fn plan(suite: &Suite, seeds: usize, out: &Path) -> Vec<PlannedRun> {
    let mut runs = Vec::with_capacity(suite.arms.len() * seeds);
    for seed in 0..seeds as u64 {
        for (i, arm) in suite.arms.iter().enumerate() {
            runs.push(PlannedRun {
                arm: i,
                seed,
                dir: out.join("runs").join(run_dir_name(&arm.name, seed)),
                config: TrainConfig {
                    seed,
                    ..arm.config.clone()
                },
            });
        }
    }
    runs
}

/// The result of a finished run in `dir` for this budget and evaluation spec, if any.
pub fn finished_result(run: &PlannedRun, arm: &Arm, suite: &Suite) -> Option<RunResult> {
    let text = std::fs::read_to_string(run.dir.join(RESULT_FILE)).ok()?;
    let r: RunResult = serde_json::from_str(&text).ok()?;
    let levels: Vec<&str> = r.evals.iter().map(|e| e.level.as_str()).collect();
    let want: Vec<&str> = arm.eval_levels.iter().map(String::as_str).collect();
    let same = r.arm == arm.name
        && r.seed == run.seed
        && r.budget == run.config.frames
        && r.frames >= run.config.frames
        && r.eval_episodes == suite.eval.episodes
        && r.eval_seed == suite.eval.seed
        && r.eval_argmax == suite.eval.argmax
        && r.eval_grounding == suite.eval.grounding
        && levels == want;
    if !same {
        return None;
    }
    // An archived run keeps its `result.json`, `config.toml` and log but not its checkpoint
    // (experiments/README.md, "Archived runs"): its result stands if it computed what the plan
    // asks for. Where a checkpoint is present it must be of this computation and have reached
    // the budget (a run resumed towards a larger budget and stopped part way is not finished).
    let ck_path = run.dir.join(CHECKPOINT_FILE);
    let (config, frames) = if ck_path.exists() {
        let ck = checkpoint::load(&ck_path).ok()?;
        (ck.config, ck.meta.frames)
    } else {
        let text = std::fs::read_to_string(run.dir.join(CONFIG_FILE)).ok()?;
        (TrainConfig::from_saved_toml(&text).ok()?, r.frames)
    };
    let same_computation = computation_differences(&config, &run.config)
        .ok()?
        .is_empty();
    (same_computation && frames >= run.config.frames).then_some(r)
}

/// Train (or resume) one run to its budget, evaluate its final checkpoint and write its
/// `result.json`. `notes`, `tensorboard` and `stop` as in [`RunOptions`]; `hook` sees every
/// log line. A run stopped through `stop` is an error of type [`Stopped`] (its checkpoint is
/// saved; running it again resumes).
pub fn execute(
    run: &PlannedRun,
    arm: &Arm,
    suite: &Suite,
    notes: bool,
    tensorboard: bool,
    hook: Option<UpdateHook>,
    stop: Option<Arc<AtomicBool>>,
) -> Result<RunResult> {
    let opts = RunOptions {
        resume: true,
        notes,
        tensorboard,
        on_update: hook,
        stop,
        ..RunOptions::new(&run.dir)
    };
    let summary = train(&run.config, &opts)?;
    if summary.stopped {
        return Err(Stopped {
            frames: summary.frames,
            budget: run.config.frames,
        }
        .into());
    }
    let ck = checkpoint::load(&summary.checkpoint)?;
    let eval_opts = EvalOptions {
        episodes: suite.eval.episodes,
        seed: suite.eval.seed,
        threads: run.config.threads,
        argmax: suite.eval.argmax,
        swap_missions: false,
        done_actions: run.config.done_actions,
    };
    let mut evals = Vec::with_capacity(arm.eval_levels.len());
    for id in &arm.eval_levels {
        let level = crate::levels::lookup(id)?;
        let r = evaluate(&ck.model, &level, &eval_opts)
            .with_context(|| format!("evaluating on {id}"))?;
        if suite.eval.grounding {
            evals.push(grounded_eval(&ck.model, &level, id, r, &eval_opts)?);
            continue;
        }
        evals.push(LevelEval::own(id, &r));
    }
    let stages = if run.config.curriculum {
        stage_evals(run, &eval_opts)?
    } else {
        Vec::new()
    };
    let result = RunResult {
        arm: arm.name.clone(),
        seed: run.seed,
        budget: run.config.frames,
        frames: ck.meta.frames,
        final_success: summary.success,
        eval_episodes: suite.eval.episodes,
        eval_seed: suite.eval.seed,
        eval_argmax: suite.eval.argmax,
        eval_grounding: suite.eval.grounding,
        evals,
        stages,
    };
    let json = serde_json::to_string_pretty(&result).context("serialising the run result")?;
    write_atomic(&run.dir.join(RESULT_FILE), json.as_bytes())?;
    Ok(result)
}

/// Every stage checkpoint of a curriculum run ([`StageEval`]), in curriculum order; the levels
/// it never moved on from have none.
fn stage_evals(run: &PlannedRun, eval_opts: &EvalOptions) -> Result<Vec<StageEval>> {
    let ids = run.config.level_ids();
    let mut stages = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let path = run.dir.join(crate::train::run::stage_checkpoint_file(i));
        if !path.exists() {
            continue;
        }
        let ck = checkpoint::load(&path)?;
        let mut evals = Vec::with_capacity(i + 1);
        for earlier in &ids[..=i] {
            let level = crate::levels::lookup(earlier)?;
            let r = evaluate(&ck.model, &level, eval_opts).with_context(|| {
                format!("evaluating the checkpoint from the end of {id} on {earlier}")
            })?;
            evals.push(LevelEval::own(earlier, &r));
        }
        stages.push(StageEval {
            level: id.clone(),
            frames: ck.meta.frames,
            evals,
        });
    }
    Ok(stages)
}

/// `r` (the evaluation of `model` on `level` with its own missions) with the grounding check
/// beside it: the same episodes with swapped missions.
fn grounded_eval(
    model: &crate::train::Model,
    level: &metarim_core::levels::Level,
    id: &str,
    r: crate::train::eval::EvalResult,
    eval_opts: &EvalOptions,
) -> Result<LevelEval> {
    let opts = EvalOptions {
        swap_missions: true,
        ..eval_opts.clone()
    };
    let w = evaluate(model, level, &opts)
        .with_context(|| format!("evaluating on {id} with swapped missions"))?;
    let followed_shown = (w.shown_feasible > 0).then(|| {
        (
            w.followed_shown as f64 / w.shown_feasible as f64,
            crate::train::eval::wilson(w.followed_shown, w.shown_feasible),
        )
    });
    Ok(LevelEval {
        swapped: Some((w.success, w.success_ci)),
        followed_shown,
        swap_counts: (w.missions_swapped > 0).then(|| SwapCounts::of(&w)),
        ..LevelEval::own(id, &r)
    })
}

/// Live progress of a suite's runs, fed by the trainer's [`UpdateHook`] and printed by the
/// status thread of [`run`]: per running run its frames, throughput in this process, rolling
/// success and ETA; for the suite, the runs done and an ETA of the training left.
struct Status {
    /// Per planned run: its name and budget, and what training has reported so far.
    runs: Vec<(String, u64, Arc<Mutex<RunStatus>>)>,
}

/// What one run has reported.
#[derive(Clone, Debug, Default)]
struct RunStatus {
    /// Training (or resumed) in this process; false before it starts and after it ends.
    running: bool,
    /// Finished (trained and evaluated, or found finished).
    finished: bool,
    /// Frames of its last log line.
    frames: u64,
    /// Frames and time of its first log line in this process (throughput is measured from it).
    first: Option<(u64, Instant)>,
    /// Rolling success of its last log line.
    success: f64,
}

impl Status {
    fn new(plan: &[PlannedRun], suite: &Suite) -> Status {
        Status {
            runs: plan
                .iter()
                .map(|r| {
                    (
                        run_dir_name(&suite.arms[r.arm].name, r.seed),
                        r.config.frames,
                        Arc::new(Mutex::new(RunStatus::default())),
                    )
                })
                .collect(),
        }
    }

    /// The hook that feeds run `i`'s status.
    fn hook(&self, i: usize) -> UpdateHook {
        let cell = Arc::clone(&self.runs[i].2);
        UpdateHook(Arc::new(move |line| {
            if let Ok(mut st) = cell.lock() {
                st.running = true;
                st.frames = line.frames;
                st.success = line.success_rate;
                st.first.get_or_insert((line.frames, Instant::now()));
            }
        }))
    }

    /// Run `i` has finished (or failed): it no longer counts as running.
    fn finish(&self, i: usize) {
        if let Ok(mut st) = self.runs[i].2.lock() {
            st.running = false;
            st.finished = true;
        }
    }

    /// A line per running run and one for the suite, on stderr.
    fn print(&self, done: usize) {
        let (mut rate, mut left, mut running) = (0.0f64, 0u64, 0usize);
        for (name, budget, cell) in &self.runs {
            let Ok(st) = cell.lock().map(|s| s.clone()) else {
                continue;
            };
            if st.finished {
                continue;
            }
            left += budget.saturating_sub(st.frames);
            if !st.running {
                continue;
            }
            running += 1;
            let fps = st.first.map_or(f64::NAN, |(f0, t0)| {
                (st.frames - f0.min(st.frames)) as f64 / t0.elapsed().as_secs_f64()
            });
            if fps.is_finite() {
                rate += fps;
            }
            eprintln!(
                "experiment: {name}: {}/{} frames ({:.0}%), {} fps, success {:.3}, ETA {}",
                report::thousands(st.frames),
                report::thousands(*budget),
                100.0 * st.frames as f64 / (*budget).max(1) as f64,
                if fps.is_finite() {
                    format!("{fps:.0}")
                } else {
                    "?".into()
                },
                st.success,
                format_eta(budget.saturating_sub(st.frames) as f64 / fps)
            );
        }
        let eta = if rate > 0.0 {
            format!(
                "ETA {} at the current {} fps",
                format_eta(left as f64 / rate),
                report::thousands(rate.round() as u64)
            )
        } else {
            "ETA not known yet (no running run has logged an update)".into()
        };
        eprintln!(
            "experiment: {done}/{} runs finished, {running} running; training left: {} frames, \
             {eta} (evaluations not included)",
            self.runs.len(),
            report::thousands(left),
        );
    }
}

/// Parallel runs for `jobs` (0: available cores / threads per run, at least 1), at most
/// `runs`.
pub fn job_count(jobs: usize, threads_per_run: usize, runs: usize) -> usize {
    let avail = std::thread::available_parallelism().map_or(1, |n| n.get());
    let j = if jobs == 0 {
        avail / threads_per_run.max(1)
    } else {
        jobs
    };
    j.clamp(1, runs.max(1))
}

/// Run a suite: every run not yet finished (in parallel), then `results.md` and the plots.
pub fn run(opts: &ExperimentOptions) -> Result<ExperimentSummary> {
    let started = Instant::now();
    let suite = Suite::load(&opts.suite, &opts.overrides)?;
    // The suite file's own count was checked by `Suite::load`.
    if opts.seeds == Some(0) {
        bail!("--seeds must be > 0");
    }
    let seeds = opts.seeds.unwrap_or(suite.seeds);
    std::fs::create_dir_all(opts.out.join("runs"))
        .with_context(|| format!("creating output directory {}", opts.out.display()))?;
    let plan = plan(&suite, seeds, &opts.out);
    let jobs = job_count(opts.jobs, opts.overrides.threads, plan.len());
    if opts.progress {
        eprintln!(
            "experiment: suite={} arms={} seeds={seeds} runs={} jobs={jobs} threads/run={} out={}",
            suite.name,
            suite.arms.len(),
            plan.len(),
            opts.overrides.threads,
            opts.out.display()
        );
    }
    let known = if opts.report_only {
        Some(results_for_report(&plan, &suite)?)
    } else {
        None
    };
    let (finished, skipped) = run_plan(opts, &suite, &plan, jobs, known.as_deref())?;
    let ctx = report::ReportContext {
        suite: &suite,
        seeds,
        plan: &plan,
        results: &finished,
        command: &opts.command,
        wall_s: started.elapsed().as_secs_f64(),
        skipped,
        jobs,
        overrides: &opts.overrides,
    };
    let (results_path, plots) = report::write(&ctx, &opts.out)?;
    Ok(ExperimentSummary {
        suite: suite.name.clone(),
        runs: plan.len(),
        finished: finished.len(),
        skipped,
        trained: finished.len() - skipped,
        out: opts.out.clone(),
        results: results_path,
        plots,
    })
}

/// `--report-only`: every run's result, looked up in plan order, so an error names the same
/// first unfinished run whatever the workers' timing and counts the others; the workers then
/// take the results found (no checkpoint is loaded twice).
fn results_for_report(plan: &[PlannedRun], suite: &Suite) -> Result<Vec<RunResult>> {
    let found: Vec<Option<RunResult>> = plan
        .iter()
        .map(|r| finished_result(r, &suite.arms[r.arm], suite))
        .collect();
    let unfinished: Vec<&PlannedRun> = plan
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(r, _)| r)
        .collect();
    if let Some(first) = unfinished.first() {
        let name = |r: &PlannedRun| run_dir_name(&suite.arms[r.arm].name, r.seed);
        bail!(
            "run {} ({}): it has not finished (no result.json of this plan's budget and \
             config); --report-only trains nothing: pass --seeds K for the seeds that have \
             finished ({} of {} runs unfinished: {})",
            name(first),
            first.dir.display(),
            unfinished.len(),
            plan.len(),
            unfinished
                .iter()
                .map(|r| name(r))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(found.into_iter().flatten().collect())
}

/// The shared state of [`run_plan`]'s workers: the next run to take, the results by plan
/// index (with whether the run had finished earlier), and the first failure.
struct Workers {
    results: Vec<Mutex<Option<(RunResult, bool)>>>,
    next: AtomicUsize,
    done: AtomicUsize,
    left: AtomicUsize,
    failed: AtomicBool,
    first_error: Mutex<Option<anyhow::Error>>,
    /// Held while archiving ([`ExperimentOptions::archive_each`]): one archive at a time.
    archiving: Mutex<()>,
}

/// Every run of `plan` on `jobs` worker threads (each takes the next run not taken, skips it
/// if it finished earlier, or trains and evaluates it), with the status printer beside them;
/// the results in plan order and how many had finished earlier. The first failure stops the
/// workers from taking more runs and is returned.
fn run_plan(
    opts: &ExperimentOptions,
    suite: &Suite,
    plan: &[PlannedRun],
    jobs: usize,
    known: Option<&[RunResult]>,
) -> Result<(Vec<RunResult>, usize)> {
    let w = Workers {
        results: plan.iter().map(|_| Mutex::new(None)).collect(),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        left: AtomicUsize::new(jobs),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
        archiving: Mutex::new(()),
    };
    let status = Status::new(plan, suite);
    std::thread::scope(|s| {
        if let Some(every) = opts.status_every {
            let (status, w) = (&status, &w);
            s.spawn(move || {
                let mut last = Instant::now();
                while w.left.load(Ordering::SeqCst) > 0 {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= every {
                        status.print(w.done.load(Ordering::SeqCst));
                        last = Instant::now();
                    }
                }
            });
        }
        for _ in 0..jobs {
            s.spawn(|| {
                worker(opts, suite, plan, known, &status, &w);
                w.left.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    if let Some(e) = w
        .first_error
        .into_inner()
        .map_err(|_| anyhow!("a run thread panicked"))?
    {
        return Err(e);
    }
    let mut finished = Vec::with_capacity(plan.len());
    let mut skipped = 0;
    for (slot, run) in w.results.into_iter().zip(plan) {
        let (r, was_skipped) = slot
            .into_inner()
            .map_err(|_| anyhow!("a run thread panicked"))?
            .ok_or_else(|| anyhow!("run {} did not finish", run.dir.display()))?;
        skipped += usize::from(was_skipped);
        finished.push(r);
    }
    Ok((finished, skipped))
}

/// One worker of [`run_plan`]: takes runs in plan order until none is left or one failed.
fn worker(
    opts: &ExperimentOptions,
    suite: &Suite,
    plan: &[PlannedRun],
    known: Option<&[RunResult]>,
    status: &Status,
    w: &Workers,
) {
    let stopped = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    loop {
        if w.failed.load(Ordering::SeqCst) {
            break;
        }
        if stopped() {
            // Between runs: the run not started is reported like a run stopped at once.
            w.failed.store(true, Ordering::SeqCst);
            if let Ok(mut slot) = w.first_error.lock() {
                slot.get_or_insert(anyhow::Error::new(StoppedBetweenRuns));
            }
            break;
        }
        let i = w.next.fetch_add(1, Ordering::SeqCst);
        let Some(run) = plan.get(i) else { break };
        let arm = &suite.arms[run.arm];
        let t0 = Instant::now();
        let found = match known {
            Some(results) => results.get(i).cloned(),
            None => finished_result(run, arm, suite),
        };
        let outcome = match found {
            Some(r) => Ok((r, true)),
            None => {
                let hook = opts.status_every.map(|_| status.hook(i));
                let r = execute(
                    run,
                    arm,
                    suite,
                    opts.run_notes,
                    opts.tensorboard,
                    hook,
                    opts.stop.clone(),
                );
                r.map(|r| (r, false))
            }
        };
        status.finish(i);
        match outcome {
            Ok((r, skipped)) => {
                let n = w.done.fetch_add(1, Ordering::SeqCst) + 1;
                if opts.progress {
                    eprintln!(
                        "experiment: [{n}/{}] {} {} frames={} success={:.3} ({:.1} s)",
                        plan.len(),
                        run_dir_name(&arm.name, run.seed),
                        if skipped { "finished earlier" } else { "done" },
                        r.frames,
                        r.final_success,
                        t0.elapsed().as_secs_f64()
                    );
                }
                if let Ok(mut slot) = w.results[i].lock() {
                    *slot = Some((r, skipped));
                }
                if let (false, Some(dest)) = (skipped, &opts.archive_each) {
                    archive_finished(opts, dest, &w.archiving);
                }
            }
            Err(e) => {
                w.failed.store(true, Ordering::SeqCst);
                let e = e.context(format!(
                    "run {} ({})",
                    run_dir_name(&arm.name, run.seed),
                    run.dir.display()
                ));
                if let Ok(mut slot) = w.first_error.lock() {
                    slot.get_or_insert(e);
                }
                break;
            }
        }
    }
}

/// The log of a run, gzipped, in an archive (read back by [`metrics::read_log`]).
pub const ARCHIVED_LOG_FILE: &str = "train.jsonl.gz";

/// What [`archive`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveSummary {
    /// Finished runs copied into the archive (every finished run of the plan).
    pub archived: usize,
    /// Runs of the plan not finished (left out).
    pub unfinished: usize,
    /// Seeds `0..K` whose runs had all finished: the archive's report covers them (0: no
    /// report was written).
    pub complete_seeds: usize,
    /// The archive's `results.md`, when one was written.
    pub results: Option<PathBuf>,
}

/// Copy the finished runs of the suite `opts` describes (in `opts.out`) into `dest`, keeping of
/// each only what its report needs and what shows what it computed: `result.json`,
/// `config.toml`, its log, gzipped (a few hundred kB per run instead of the checkpoint's), and
/// its `provenance.jsonl` without the command lines (the commit and machine of each
/// invocation that trained it).
/// `dest` is then a suite directory like any other: `metarim experiment SUITE --out DEST`
/// counts its runs as finished and trains only the others, and its report is regenerated
/// here for the seeds `0..K` that have all finished. Trains nothing.
pub fn archive(opts: &ExperimentOptions, dest: &Path) -> Result<ArchiveSummary> {
    use std::io::Write;
    let suite = Suite::load(&opts.suite, &opts.overrides)?;
    let seeds = opts.seeds.unwrap_or(suite.seeds);
    let plan = plan(&suite, seeds, &opts.out);
    let mut finished_seeds = vec![0usize; seeds];
    let (mut archived, mut unfinished) = (0, 0);
    for run in &plan {
        let arm = &suite.arms[run.arm];
        if finished_result(run, arm, &suite).is_none() {
            unfinished += 1;
            continue;
        }
        let name = run_dir_name(&arm.name, run.seed);
        let to = dest.join("runs").join(&name);
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for file in [RESULT_FILE, CONFIG_FILE] {
            let bytes = std::fs::read(run.dir.join(file))
                .with_context(|| format!("reading {}", run.dir.join(file).display()))?;
            write_atomic(&to.join(file), &bytes)?;
        }
        // Which commit and machine trained it, without the command lines (scratch paths).
        let invocations = crate::provenance::read(&run.dir)?;
        if !invocations.is_empty() {
            let text = crate::provenance::archived_text(&invocations)?;
            write_atomic(
                &to.join(crate::provenance::PROVENANCE_FILE),
                text.as_bytes(),
            )?;
        }
        let log = run.dir.join("train.jsonl");
        let text = match std::fs::read(&log) {
            Ok(t) => t,
            // Archiving an archive: its log is already gzipped.
            Err(_) if run.dir.join(ARCHIVED_LOG_FILE).exists() => {
                let bytes = std::fs::read(run.dir.join(ARCHIVED_LOG_FILE))?;
                write_atomic(&to.join(ARCHIVED_LOG_FILE), &bytes)?;
                archived += 1;
                finished_seeds[run.seed as usize] += 1;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", log.display())),
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&text).context("compressing the log")?;
        let gz = gz.finish().context("compressing the log")?;
        write_atomic(&to.join(ARCHIVED_LOG_FILE), &gz)?;
        archived += 1;
        finished_seeds[run.seed as usize] += 1;
    }
    let complete_seeds = finished_seeds
        .iter()
        .take_while(|&&n| n == suite.arms.len())
        .count();
    let results = if complete_seeds > 0 {
        let o = ExperimentOptions {
            seeds: Some(complete_seeds),
            out: dest.to_path_buf(),
            report_only: true,
            progress: false,
            status_every: None,
            ..opts.clone()
        };
        Some(run(&o)?.results)
    } else {
        None
    };
    Ok(ArchiveSummary {
        archived,
        unfinished,
        complete_seeds,
        results,
    })
}

/// [`ExperimentOptions::archive_each`] after a run finished: the finished runs of `opts.out`
/// into `dest`, one archive at a time (`lock`), a failure only a warning.
fn archive_finished(opts: &ExperimentOptions, dest: &Path, lock: &Mutex<()>) {
    let _one_at_a_time = lock.lock();
    let o = ExperimentOptions {
        archive_each: None,
        progress: false,
        status_every: None,
        ..opts.clone()
    };
    match archive(&o, dest) {
        Ok(a) if opts.progress => eprintln!(
            "experiment: {} finished runs archived into {} (report on {} complete seeds)",
            a.archived,
            dest.display(),
            a.complete_seeds
        ),
        Ok(_) => {}
        Err(e) => eprintln!(
            "experiment: warning: archiving into {} failed: {e:#} (the runs stay in {})",
            dest.display(),
            opts.out.display()
        ),
    }
}

/// The finished runs of the suite `opts` describes (every run's `result.json`), for reports
/// that span suites.
pub fn load_finished(opts: &ExperimentOptions) -> Result<claims::SuiteRuns> {
    let suite = Suite::load(&opts.suite, &opts.overrides)?;
    let seeds = opts.seeds.unwrap_or(suite.seeds);
    let plan = plan(&suite, seeds, &opts.out);
    let mut results = Vec::with_capacity(plan.len());
    for run in &plan {
        let path = run.dir.join(RESULT_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (has the run finished?)", path.display()))?;
        let r: RunResult =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        results.push(r);
    }
    Ok(claims::SuiteRuns {
        suite,
        plan,
        results,
    })
}

/// `metarim experiment paper`: every suite of [`PAPER_SUITES`] (found in `suite_dirs`) into
/// `opts.out/SUITE` (each resumable, with `opts`' seeds and overrides), then the four claims'
/// verdicts and evidence into `opts.out/claims.md`. Returns that file. With `report_only`,
/// trains nothing and judges the suites whose runs have all finished; the others are named in
/// claims.md and their claims read inconclusive.
pub fn run_paper(opts: &ExperimentOptions, suite_dirs: &[PathBuf]) -> Result<PathBuf> {
    let started = Instant::now();
    let mut finished = Vec::with_capacity(PAPER_SUITES.len());
    let mut unfinished_notes = Vec::new();
    for name in PAPER_SUITES {
        let o = ExperimentOptions {
            suite: find_suite(name, suite_dirs)?,
            out: opts.out.join(name),
            // Each suite's archive in its own directory, as its runs are under OUT/SUITE.
            archive_each: opts.archive_each.as_ref().map(|d| d.join(name)),
            ..opts.clone()
        };
        if opts.report_only {
            // Judge what has finished: a suite with unfinished runs is left out (its claims
            // read inconclusive), and claims.md says so.
            let suite = Suite::load(&o.suite, &o.overrides)?;
            let planned = plan(&suite, o.seeds.unwrap_or(suite.seeds), &o.out);
            let done = planned
                .iter()
                .filter(|r| finished_result(r, &suite.arms[r.arm], &suite).is_some())
                .count();
            if done < planned.len() {
                unfinished_notes.push(format!(
                    "- suite `{name}`: {done} of {} runs finished in {}: left out, the claims \
                     that need it are inconclusive\n",
                    planned.len(),
                    o.out.display()
                ));
                finished.push(None);
                continue;
            }
        }
        let s = run(&o).with_context(|| format!("suite {name}"))?;
        if opts.progress {
            eprintln!("experiment paper: {name}: {}", s.results.display());
        }
        finished.push(Some(load_finished(&o)?));
    }
    let get = |i: usize| finished.get(i).and_then(Option::as_ref);
    let verdicts = claims::claims(get(0), get(1), get(2))?;
    let mut md = String::from("# The paper's claims\n\n");
    md.push_str(&format!(
        "- command: `{}`\n- commit: {}\n- machine: {}\n- wall time of this invocation: {:.0} s\n- suites: {}\n\n",
        opts.command,
        report::git_commit(),
        report::hardware(),
        started.elapsed().as_secs_f64(),
        PAPER_SUITES
            .iter()
            .zip(&finished)
            // A suite left out has no report to link to.
            .map(|(s, f)| match f {
                Some(_) => format!("[{s}]({s}/results.md)"),
                None => format!("{s} (left out)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !unfinished_notes.is_empty() {
        md.push_str("Not judged (--report-only on suites still running):\n\n");
        md.push_str(&unfinished_notes.concat());
        md.push('\n');
    }
    md.push_str(&claims::markdown(&verdicts));
    let path = opts.out.join(CLAIMS_FILE);
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// A run stopped before its budget by [`RunOptions::stop`] (a signal), its progress saved in
/// its checkpoint: not a failure, but not finished either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Frames in the checkpoint it saved.
    pub frames: u64,
    /// Its budget.
    pub budget: u64,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by signal at {} of {} frames (checkpoint saved; running it again resumes)",
            self.frames, self.budget
        )
    }
}

impl std::error::Error for Stopped {}

/// [`run`] stopped by [`ExperimentOptions::stop`] before a run began (every run started
/// earlier stopped with a [`Stopped`] error or finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoppedBetweenRuns;

impl std::fmt::Display for StoppedBetweenRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by signal between runs (running the same command again goes on)"
        )
    }
}

impl std::error::Error for StoppedBetweenRuns {}

/// What [`run_one`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOneOutcome {
    /// The run's directory name (`<arm>-seed<k>`).
    pub name: String,
    /// Runs in the plan.
    pub of: usize,
    /// It had finished earlier and was not rerun.
    pub skipped: bool,
    /// Its result.
    pub result: RunResult,
}

/// Train (or resume) and evaluate only run `index` (0-based, in [`plan`] order) of the suite
/// `opts` describes: one task of a cluster job array ([`slurm`]). A finished run is not
/// rerun. `stop` as in [`RunOptions::stop`]: once raised, the run saves its checkpoint and this
/// returns a [`Stopped`] error. Progress lines go to stderr every `opts.status_every`. With
/// `opts.archive_each`, the finished suite runs are archived there ([`archive`]) once this
/// run has finished.
pub fn run_one(
    opts: &ExperimentOptions,
    index: usize,
    stop: Option<Arc<AtomicBool>>,
) -> Result<RunOneOutcome> {
    let suite = Suite::load(&opts.suite, &opts.overrides)?;
    if opts.seeds == Some(0) {
        bail!("--seeds must be > 0");
    }
    let seeds = opts.seeds.unwrap_or(suite.seeds);
    let plan = plan(&suite, seeds, &opts.out);
    let Some(run) = plan.get(index) else {
        bail!(
            "--run-index {index}: the suite {} with {seeds} seeds plans {} runs (indices 0..{})",
            suite.name,
            plan.len(),
            plan.len().saturating_sub(1)
        );
    };
    let arm = &suite.arms[run.arm];
    let name = run_dir_name(&arm.name, run.seed);
    if let Some(result) = finished_result(run, arm, &suite) {
        return Ok(RunOneOutcome {
            name,
            of: plan.len(),
            skipped: true,
            result,
        });
    }
    std::fs::create_dir_all(&run.dir)
        .with_context(|| format!("creating run directory {}", run.dir.display()))?;
    if opts.progress {
        eprintln!(
            "experiment: suite={} run {}/{} {name} threads={} out={}",
            suite.name,
            index + 1,
            plan.len(),
            opts.overrides.threads,
            run.dir.display()
        );
    }
    let hook = opts.status_every.map(|every| {
        let budget = run.config.frames;
        let last = Arc::new(Mutex::new(None::<Instant>));
        let name = name.clone();
        UpdateHook(Arc::new(move |line| {
            let Ok(mut last) = last.lock() else { return };
            if last.is_some_and(|t| t.elapsed() < every) {
                return;
            }
            *last = Some(Instant::now());
            eprintln!(
                "experiment: {name}: {}/{} frames, {:.0} fps, success {:.3}",
                report::thousands(line.frames),
                report::thousands(budget),
                line.fps,
                line.success_rate
            );
        }))
    });
    let result = execute(
        run,
        arm,
        &suite,
        opts.run_notes,
        opts.tensorboard,
        hook,
        stop,
    )
    .with_context(|| format!("run {name} ({})", run.dir.display()))?;
    if let Some(dest) = &opts.archive_each {
        // One run per process here: concurrent `--run-index` processes archiving into one DIR
        // each write whole files atomically; the report is the last writer's.
        archive_finished(opts, dest, &Mutex::new(()));
    }
    Ok(RunOneOutcome {
        name,
        of: plan.len(),
        skipped: false,
        result,
    })
}

/// Where a planned run stands, from its directory alone ([`status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Finished: its `result.json` is of this plan ([`finished_result`]).
    Done,
    /// A process holds its lock (what it wrote about itself: pid, host, start time).
    Running(String),
    /// Stopped cleanly before its budget (a signal, or a stop): its checkpoint resumes.
    Stopped,
    /// Trained to its budget but without a `result.json` of this plan: being evaluated now, or
    /// its evaluation did not finish (running it again evaluates it).
    Trained,
    /// Its last process died without releasing the lock (killed, crashed, or a node lost),
    /// or it stopped with an error (what the lock or the directory says).
    Failed(String),
    /// Not started: no directory, or one with nothing trained in it.
    Missing,
}

impl RunState {
    /// One word for a table: done, running, stopped, trained, failed, missing.
    pub fn word(&self) -> &'static str {
        match self {
            RunState::Done => "done",
            RunState::Running(_) => "running",
            RunState::Stopped => "stopped",
            RunState::Trained => "trained",
            RunState::Failed(_) => "failed",
            RunState::Missing => "missing",
        }
    }
}

/// One row of [`status`].
#[derive(Clone, Debug, PartialEq)]
pub struct RunStatusRow {
    /// Index in the plan (`--run-index`).
    pub index: usize,
    /// `<arm>-seed<k>`.
    pub name: String,
    /// Its state.
    pub state: RunState,
    /// Frames in its checkpoint, or in its `result.json` when it is done and has no
    /// checkpoint (an archived run); 0 otherwise.
    pub frames: u64,
    /// Its budget.
    pub budget: u64,
}

/// The state of every planned run of the suite `opts` describes, in plan order, read from the
/// run directories alone (so it works from any machine that sees the output directory, while
/// the runs go on elsewhere). Reads only: no lock is taken.
pub fn status(opts: &ExperimentOptions) -> Result<Vec<RunStatusRow>> {
    use crate::train::rundir::{probe, LockState};
    let suite = Suite::load(&opts.suite, &opts.overrides)?;
    if opts.seeds == Some(0) {
        bail!("--seeds must be > 0");
    }
    let seeds = opts.seeds.unwrap_or(suite.seeds);
    let plan = plan(&suite, seeds, &opts.out);
    let mut rows = Vec::with_capacity(plan.len());
    for (index, run) in plan.iter().enumerate() {
        let arm = &suite.arms[run.arm];
        let ck = run.dir.join(CHECKPOINT_FILE);
        // The frame count is in the checkpoint's header; a checkpoint being replaced right now
        // is read whole or not at all (atomic writes), and an unreadable one counts as 0.
        let mut frames = checkpoint::load(&ck).map_or(0, |c| c.meta.frames);
        let state = if !run.dir.is_dir() {
            RunState::Missing
        } else {
            let finished = finished_result(run, arm, &suite);
            match probe(&run.dir)? {
                LockState::Held(holder) => RunState::Running(holder),
                _ if finished.is_some() => {
                    // An archived run keeps its result but no checkpoint: its frames are there.
                    if let (Some(r), false) = (&finished, ck.exists()) {
                        frames = r.frames;
                    }
                    RunState::Done
                }
                LockState::Stale(holder) => {
                    RunState::Failed(format!("its process died while training ({holder})"))
                }
                LockState::Released if frames >= run.config.frames && ck.exists() => {
                    RunState::Trained
                }
                LockState::Released if ck.exists() => RunState::Stopped,
                LockState::Released | LockState::Absent => RunState::Missing,
            }
        };
        rows.push(RunStatusRow {
            index,
            name: run_dir_name(&arm.name, run.seed),
            state,
            frames,
            budget: run.config.frames,
        });
    }
    Ok(rows)
}
