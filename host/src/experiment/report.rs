//! `results.md` and the plots of a suite: tables of medians and 95% intervals over seeds, the
//! exact command, commit, wall time and hardware; success curves with bands across seeds and
//! module-activation heatmaps.
//!
//! Invariants: tables and plots are a function of the runs' logs and results (aggregated in
//! arm and seed order), except the header's wall time, commit and hardware lines (the
//! reporting invocation's; the "trained on" line names the machines and commits that trained
//! the runs, from their `provenance.jsonl`); every file is written atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use metarim_core::nn::params::Mode;

use super::metrics::{
    bootstrap_interval, compare, curriculum_segments, frames_to_threshold, iqm, read_log,
    success_auc, summarize, training_seconds, LogPoint, Stat, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED,
};
use super::spec::{short_level, MetricKind, Overrides, Suite};
use super::{run_dir_name, LevelEval, PlannedRun, RunResult};
use crate::plot::{
    write_banded_curves, write_heatmaps, BandPoint, BandSeries, HeatAxis, HeatLabels, HeatPanel,
};
use crate::train::checkpoint::write_atomic;
use crate::train::config::TrainConfig;
use crate::train::eval::{yardstick, EvalOptions};

/// Time bins (columns) of the module-activity-over-time heatmaps.
pub const HEAT_TIME_BINS: usize = 60;

/// Everything the report needs.
#[derive(Clone, Copy, Debug)]
pub struct ReportContext<'a> {
    /// The suite.
    pub suite: &'a Suite,
    /// Seeds per arm.
    pub seeds: usize,
    /// The runs, in arm then seed order.
    pub plan: &'a [PlannedRun],
    /// Their results, in the same order.
    pub results: &'a [RunResult],
    /// The command line.
    pub command: &'a str,
    /// Wall time of this invocation, seconds.
    pub wall_s: f64,
    /// Runs found finished and not rerun.
    pub skipped: usize,
    /// Parallel runs.
    pub jobs: usize,
    /// The command line's overrides.
    pub overrides: &'a Overrides,
}

/// One group of arms in the report: the tables of a group read these.
struct Group<'a> {
    /// The report's context (the suite, its runs and results).
    ctx: &'a ReportContext<'a>,
    /// The group's name (the arms' `group`).
    name: &'a str,
    /// The group's arms, indices into the suite's.
    arms: &'a [usize],
    /// The finished runs of every arm of the suite, by arm index.
    by_arm: &'a [Vec<&'a RunData<'a>>],
}

impl Group<'_> {
    /// The heading of one of the group's sections: `## GROUP: TITLE`.
    fn section(&self, md: &mut String, title: &str) {
        let _ = writeln!(md, "## {}: {title}\n", self.name);
    }
}

/// A run with its log and metrics.
pub(super) struct RunData<'a> {
    pub(super) run: &'a PlannedRun,
    pub(super) result: &'a RunResult,
    pub(super) log: Vec<LogPoint>,
    /// Frames to the suite's threshold (infinite: not reached).
    pub(super) to_threshold: f64,
    /// Area under the success curve over the budget.
    pub(super) auc: f64,
}

/// Each planned run with its log (within its budget) and metrics, in plan order.
pub(super) fn run_data<'a>(
    suite: &Suite,
    plan: &'a [PlannedRun],
    results: &'a [RunResult],
) -> Result<Vec<RunData<'a>>> {
    let mut data = Vec::with_capacity(plan.len());
    for (run, result) in plan.iter().zip(results) {
        let budget = run.config.frames;
        let log = within_budget(read_log(&run.dir.join("train.jsonl"))?, budget);
        let to_threshold = frames_to_threshold(&log, suite.threshold, suite.min_frames)
            .map_or(f64::INFINITY, |f| f as f64);
        let auc = success_auc(&log, budget);
        data.push(RunData {
            run,
            result,
            log,
            to_threshold,
            auc,
        });
    }
    Ok(data)
}

/// The updates of `log` that started within `budget` frames (a run first trained to a larger
/// budget keeps its longer log; the metrics of this budget ignore the rest).
fn within_budget(log: Vec<LogPoint>, budget: u64) -> Vec<LogPoint> {
    let mut prev = 0u64;
    log.into_iter()
        .take_while(|p| {
            let keep = prev < budget;
            prev = p.frames;
            keep
        })
        .collect()
}

/// `1,234,567`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A frame count, or "not reached" for infinity.
fn frames_cell(v: f64) -> String {
    if v.is_finite() {
        thousands(v.round().max(0.0) as u64)
    } else {
        "not reached".into()
    }
}

fn interval_cell(s: &Stat, f: impl Fn(f64) -> String) -> String {
    format!("[{}, {}]", f(s.lo), f(s.hi))
}

fn rate(v: f64) -> String {
    format!("{v:.3}")
}

/// The commit the binary was built from ([`crate::provenance::BUILD_COMMIT`]), or "unknown".
pub fn git_commit() -> String {
    crate::provenance::BUILD_COMMIT.to_string()
}

/// `N cores, CPU MODEL` from the available parallelism and `/proc/cpuinfo`.
pub fn hardware() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores (available parallelism), {model}")
}

/// A file-name-safe version of a group name.
fn file_part(group: &str) -> String {
    group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Groups in order of first appearance, each with its arm indices.
pub(super) fn groups(suite: &Suite) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, arm) in suite.arms.iter().enumerate() {
        match out.iter_mut().find(|(g, _)| *g == arm.group) {
            Some((_, v)) => v.push(i),
            None => out.push((arm.group.clone(), vec![i])),
        }
    }
    out
}

/// Write `out/results.md` and the plots; returns their paths.
pub fn write(ctx: &ReportContext, out: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let suite = ctx.suite;
    let data = run_data(suite, ctx.plan, ctx.results)?;
    let by_arm: Vec<Vec<&RunData>> = (0..suite.arms.len())
        .map(|a| data.iter().filter(|d| d.run.arm == a).collect())
        .collect();
    let mut plots = Vec::new();
    let mut md = header(ctx, &data);
    for (group, arms) in groups(suite) {
        let part = file_part(&group);
        let curve = out.join(format!("success-{part}.png"));
        let series: Vec<BandSeries> = arms
            .iter()
            .map(|&a| BandSeries {
                label: suite.arms[a].label.clone(),
                points: band(&by_arm[a]),
            })
            .collect();
        let title = format!(
            "{}: {group}: success (IQM, 95% interval over {} seeds)",
            suite.name, ctx.seeds
        );
        let band_desc = format!(
            "lines: IQM over the {} seeds of each arm; bands: bootstrap 95% interval of the \
             IQM ({BOOTSTRAP_RESAMPLES} resamples of the seeds, as in the tables)",
            ctx.seeds
        );
        let y_desc = success_axis(arms.iter().map(|&a| &suite.arms[a].config));
        write_banded_curves(&curve, &title, &y_desc, &band_desc, &series)?;
        plots.push(curve);
        let heat = out.join(format!("modules-{part}.png"));
        let panels: Vec<HeatPanel> = arms
            .iter()
            .filter_map(|&a| activity_over_time(&suite.arms[a].label, &by_arm[a]))
            .collect();
        let title = format!("{}: {group}: module activity (mean over seeds)", suite.name);
        write_heatmaps(&heat, &title, &activity_labels("frames"), &panels)?;
        plots.push(heat);
        let g = Group {
            ctx,
            name: &group,
            arms: &arms,
            by_arm: &by_arm,
        };
        match suite.metric {
            MetricKind::SampleEfficiency | MetricKind::Ablation => {
                sample_efficiency_table(&mut md, &g);
            }
            MetricKind::Curriculum => curriculum_tables(&mut md, &g),
            MetricKind::ZeroShot => zero_shot_table(&mut md, &g),
        }
        let _ = writeln!(
            md,
            "![{group}: success vs frames](success-{part}.png)\n\n\
             ![{group}: module activity](modules-{part}.png)\n"
        );
    }
    if suite.metric == MetricKind::Curriculum {
        let heat = out.join("modules-by-level.png");
        let panels: Vec<HeatPanel> = (0..suite.arms.len())
            .filter_map(|a| activity_by_level(&suite.arms[a].label, &by_arm[a]))
            .collect();
        let title = format!(
            "{}: module activity per level (mean over seeds)",
            suite.name
        );
        write_heatmaps(&heat, &title, &activity_labels("level"), &panels)?;
        let _ = writeln!(md, "![module activity per level](modules-by-level.png)\n");
        plots.push(heat);
    }
    runs_table(&mut md, ctx, &data);
    let path = out.join("results.md");
    let json = results_json(&md, ctx, &data)?;
    write_atomic(&out.join(RESULTS_JSON), json.as_bytes()).context("writing results.json")?;
    write_atomic(&path, md.as_bytes()).context("writing results.md")?;
    Ok((path, plots))
}

/// The machine-readable twin of `results.md`, beside it.
pub const RESULTS_JSON: &str = "results.json";

/// `results.json`: every figure of `results.md` and the runs behind them.
///
/// - `header`: the `- key: value` lines under the title (command, commit, hardware, ...);
/// - `sections`: per `##` heading, its blocks in order: `{"text": paragraph}` or
///   `{"columns": [...], "rows": [[cell, ...], ...]}` with each cell
///   `{"text": as shown, "value": ...}` where `value` is the number shown, `[lo, hi]` for an
///   interval, `{"count": k, "of": n}` for `k/n`, `null` for "not reached" or "-", and absent
///   for other text;
/// - `runs`: per run its arm, seed, directory, frames to the threshold (`null`: not reached),
///   AUC, training seconds and its full `result.json`.
///
/// The tables are read back from the markdown itself, so the two files cannot disagree.
fn results_json(md: &str, ctx: &ReportContext, data: &[RunData]) -> Result<String> {
    use serde_json::{json, Map, Value};
    let mut header = Map::new();
    let mut sections: Vec<Value> = Vec::new();
    let mut heading = String::new();
    let mut blocks: Vec<Value> = Vec::new();
    let mut lines = md.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("## ") {
            if !blocks.is_empty() || !heading.is_empty() {
                sections.push(json!({"heading": heading, "blocks": blocks}));
            }
            heading = h.trim().to_string();
            blocks = Vec::new();
        } else if line.starts_with('#') {
            continue;
        } else if let Some(item) = line.strip_prefix("- ").filter(|_| heading.is_empty()) {
            if let Some((k, v)) = item.split_once(": ") {
                header.insert(k.to_string(), Value::String(v.to_string()));
            }
        } else if line.starts_with('|') {
            let columns = table_cells(line);
            let mut rows = Vec::new();
            while let Some(next) = lines.peek().filter(|l| l.starts_with('|')) {
                let cells = table_cells(next);
                lines.next();
                if cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
                    continue;
                }
                rows.push(Value::Array(cells.iter().map(|c| cell_json(c)).collect()));
            }
            blocks.push(json!({"columns": columns, "rows": rows}));
        } else if !line.trim().is_empty() && !line.starts_with("![") {
            blocks.push(json!({"text": line.trim()}));
        }
    }
    if !blocks.is_empty() || !heading.is_empty() {
        sections.push(json!({"heading": heading, "blocks": blocks}));
    }
    let runs: Vec<Value> = data
        .iter()
        .map(|d| {
            Ok(json!({
                "arm": ctx.suite.arms[d.run.arm].name,
                "seed": d.run.seed,
                "dir": d.run.dir.display().to_string(),
                "frames_to_threshold": d.to_threshold.is_finite().then_some(d.to_threshold),
                "auc": d.auc,
                "training_seconds": training_seconds(&d.log),
                "result": serde_json::to_value(d.result)?,
            }))
        })
        .collect::<Result<_>>()?;
    let doc = json!({
        "suite": ctx.suite.name,
        "metric": ctx.suite.metric.name(),
        "threshold": ctx.suite.threshold,
        "seeds": ctx.seeds,
        "commit": git_commit(),
        "header": header,
        "sections": sections,
        "runs": runs,
    });
    serde_json::to_string_pretty(&doc).context("serialising results.json")
}

/// The cells of a markdown table row, trimmed (`| a | b |` gives `["a", "b"]`).
fn table_cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// A cell as JSON: its text and, where it shows one, its value (see [`results_json`]).
fn cell_json(text: &str) -> serde_json::Value {
    use serde_json::{json, Value};
    fn number(t: &str) -> Option<Value> {
        match t.trim() {
            "not reached" | "-" => Some(Value::Null),
            t => {
                let plain = t.replace(',', "");
                let x: f64 = plain.parse().ok()?;
                serde_json::Number::from_f64(x).map(Value::Number)
            }
        }
    }
    let value = if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        inner
            .split_once(", ")
            .and_then(|(a, b)| Some(Value::Array(vec![number(a)?, number(b)?])))
    } else if let Some((k, n)) = text.split_once('/') {
        match (k.trim().parse::<u64>(), n.trim().parse::<u64>()) {
            (Ok(k), Ok(n)) => Some(json!({"count": k, "of": n})),
            _ => None,
        }
    } else {
        number(text)
    };
    match value {
        Some(v) => json!({"text": text, "value": v}),
        None => json!({"text": text}),
    }
}

/// The frame budget of the planned runs (after any budget scale) and the frames the reported
/// runs trained: `6,000,000 frames per run, 120,000,000 in all (20 runs); 120,012,800 trained`.
fn budget_line(plan: &[PlannedRun], data: &[RunData]) -> String {
    let budgets = plan.iter().map(|r| r.config.frames);
    let (lo, hi) = (budgets.clone().min(), budgets.clone().max());
    let per_run = match (lo, hi) {
        (Some(lo), Some(hi)) if lo == hi => format!("{} frames per run", thousands(lo)),
        (Some(lo), Some(hi)) => format!("{} to {} frames per run", thousands(lo), thousands(hi)),
        _ => "no runs".to_string(),
    };
    let trained: u64 = data.iter().map(|d| d.result.frames).sum();
    format!(
        "{per_run}, {} in all ({} runs); {} trained by the {} runs reported",
        thousands(budgets.sum()),
        plan.len(),
        thousands(trained),
        data.len()
    )
}

/// Which machines and commits trained the reported runs, from their `provenance.jsonl`
/// (every invocation, a resumed run counted under each of its machines): `2 cores (available
/// parallelism), AMD EPYC at 0a4b7b9: 20 runs`, pairs in order of first appearance; runs
/// without a record (archived before archives kept it) are counted as such.
fn trained_on_line(data: &[RunData]) -> String {
    let mut pairs: Vec<((String, String), usize)> = Vec::new();
    let (mut unrecorded, mut unreadable) = (0, 0);
    for d in data {
        let Ok(invocations) = crate::provenance::read(&d.run.dir) else {
            unreadable += 1;
            continue;
        };
        if invocations.is_empty() {
            unrecorded += 1;
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for inv in invocations {
            let key = (inv.hardware, inv.commit);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key.clone());
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => pairs.push((key, 1)),
            }
        }
    }
    let runs = |n: usize| {
        if n == 1 {
            "1 run".to_string()
        } else {
            format!("{n} runs")
        }
    };
    let mut parts: Vec<String> = pairs
        .into_iter()
        .map(|((hw, commit), n)| format!("{hw} at {commit}: {}", runs(n)))
        .collect();
    if unrecorded > 0 {
        parts.push(format!(
            "{} without a record (archived before archives kept provenance.jsonl)",
            runs(unrecorded)
        ));
    }
    if unreadable > 0 {
        parts.push(format!(
            "{} with an unreadable provenance.jsonl",
            runs(unreadable)
        ));
    }
    if parts.is_empty() {
        "no runs".into()
    } else {
        parts.join("; ")
    }
}

fn header(ctx: &ReportContext, data: &[RunData]) -> String {
    let s = ctx.suite;
    let o = ctx.overrides;
    let mut md = String::new();
    let _ = writeln!(md, "# Experiment `{}`\n", s.name);
    if !s.description.is_empty() {
        let _ = writeln!(md, "{}\n", s.description.trim());
    }
    let _ = writeln!(md, "- command: `{}`", ctx.command);
    let _ = writeln!(md, "- commit: {}", git_commit());
    let _ = writeln!(
        md,
        "- wall time: {:.1} s for this invocation ({} of {} runs were finished earlier and not rerun)",
        ctx.wall_s,
        ctx.skipped,
        ctx.plan.len()
    );
    // The training time of the runs themselves (their logs), whichever invocation trained them:
    // an archived or resumed suite reports it as well as a fresh one.
    let mut secs: Vec<f64> = data.iter().map(|d| training_seconds(&d.log)).collect();
    secs.sort_by(f64::total_cmp);
    let total: f64 = secs.iter().sum();
    let _ = writeln!(
        md,
        "- training time of the runs (from their logs; evaluations not included): {:.1} h in \
         all, {:.1} min per run (median)",
        total / 3600.0,
        secs.get(secs.len() / 2).copied().unwrap_or(0.0) / 60.0
    );
    let _ = writeln!(md, "- hardware: {}", hardware());
    let _ = writeln!(md, "- trained on: {}", trained_on_line(data));
    let _ = writeln!(
        md,
        "- suite file: `{}`; metric: {}; {} arms x {} seeds (0..{}); {} parallel runs x {} threads",
        s.path.display(),
        s.metric.name(),
        s.arms.len(),
        ctx.seeds,
        ctx.seeds.saturating_sub(1),
        ctx.jobs,
        o.threads
    );
    let _ = writeln!(md, "- budget: {}", budget_line(ctx.plan, data));
    let mut changes = format!("budget scale {}", o.budget_scale);
    if let Some(p) = &o.preset {
        let _ = write!(changes, ", preset {p}");
    }
    for (k, v) in &o.set {
        let _ = write!(changes, ", {k}={v}");
    }
    let _ = writeln!(md, "- command-line changes to every arm: {changes}");
    let _ = writeln!(
        md,
        "- threshold: rolling training success >= {}, counted from {} frames into a run (or \
         after a curriculum switch); evaluations: {} episodes per level, seed {}, {} actions\n",
        s.threshold,
        thousands(s.min_frames),
        s.eval.episodes,
        s.eval.seed,
        if s.eval.argmax { "greedy" } else { "sampled" }
    );
    let _ = writeln!(
        md,
        "Each cell is the median over seeds with a 95% bootstrap percentile interval of the \
         median, or the interquartile mean (IQM: the mean of the middle half of the seeds, a \
         quarter of them cut from each end, as rliable reports) with its own \
         ({BOOTSTRAP_RESAMPLES} resamples of the seeds with replacement, drawn from a \
         fixed-seed PCG32; nearest-rank 2.5th and 97.5th percentiles). A run that never reaches \
         the threshold counts as infinitely slow, so a median or bound reads \"not reached\" \
         when that many seeds did not reach it. The area under the curve (AUC) is the rolling \
         training success integrated over the frame budget and divided by it (1 = solved from \
         the first frame). Plots: `success-GROUP.png` draws the IQM of the rolling training \
         success over seeds with its 95% bootstrap interval (computed as the tables' IQM \
         intervals; with 3 or 4 seeds it is the seeds' range, which a percentile bootstrap \
         cannot narrow with so few) as a band, each arm with its own colour, marker and dash; \
         `modules-GROUP.png` the fraction of steps each RIM module was active (white 0 to dark \
         blue 1, colour bar beside it; mean over seeds and time bins; the LSTM has no \
         modules).\n"
    );
    md
}

fn stat_cells(values: &[f64], f: impl Fn(f64) -> String + Copy) -> (String, String) {
    match summarize(values) {
        Some(s) => (f(s.median), interval_cell(&s, f)),
        None => ("-".into(), "-".into()),
    }
}

fn sample_efficiency_table(md: &mut String, g: &Group) {
    g.section(md, "sample efficiency");
    let (s, arms, by_arm) = (g.ctx.suite, g.arms, g.by_arm);
    let _ = writeln!(
        md,
        "| arm | seeds | frames to {t} (median) | 95% interval | reached {t} | AUC (median) | AUC 95% interval | final success (median) | frames to {t} (IQM) | 95% interval | AUC (IQM) | 95% interval |",
        t = s.threshold
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let frames_of = |a: usize| -> Vec<f64> { by_arm[a].iter().map(|d| d.to_threshold).collect() };
    let aucs_of = |a: usize| -> Vec<f64> { by_arm[a].iter().map(|d| d.auc).collect() };
    for &a in arms {
        let runs = &by_arm[a];
        let (frames, aucs) = (frames_of(a), aucs_of(a));
        let finals: Vec<f64> = runs.iter().map(|d| d.result.final_success).collect();
        let (fm, fi) = stat_cells(&frames, frames_cell);
        let (am, ai) = stat_cells(&aucs, rate);
        let (sm, _) = stat_cells(&finals, rate);
        let (fq, fqi) = iqm_cells(&frames, frames_cell);
        let (aq, aqi) = iqm_cells(&aucs, rate);
        let reached = frames.iter().filter(|f| f.is_finite()).count();
        let _ = writeln!(
            md,
            "| {} | {} | {fm} | {fi} | {reached}/{} | {am} | {ai} | {sm} | {fq} | {fqi} | {aq} | {aqi} |",
            s.arms[a].name,
            runs.len(),
            runs.len()
        );
    }
    md.push('\n');
    let sooner = format!("reaches {} sooner", s.threshold);
    comparison_table(
        md,
        g,
        |reference| {
            format!(
                "{reference} against each other arm, seed by seed: P(better) is the probability \
                 that a random seed of {reference} does better than a random seed of the other \
                 arm (ties half; Mann-Whitney U / (n m); 0.5 = no difference), p the two-sided \
                 p-value of the exact permutation test of it (every split of the pooled seeds; \
                 a run that never reached the threshold counts as the slowest)."
            )
        },
        &[
            (sooner.as_str(), true, &frames_of),
            ("has the higher AUC", false, &aucs_of),
        ],
    );
    eval_table(md, g, "evaluation of the final checkpoints");
}

/// Meta-RIM (the group's first `meta-rim` arm) against every other arm of `arms`, one row per
/// arm, after the paragraph `intro(reference)`: for each quantity `(what, lower_is_better,
/// per-seed values of an arm)`, the probability that a Meta-RIM seed does better and the
/// exact permutation test's p-value ([`compare`]). Nothing without a `meta-rim` arm.
#[allow(clippy::type_complexity)]
fn comparison_table(
    md: &mut String,
    g: &Group,
    intro: impl Fn(&str) -> String,
    quantities: &[(&str, bool, &dyn Fn(usize) -> Vec<f64>)],
) {
    let (s, arms, by_arm) = (g.ctx.suite, g.arms, g.by_arm);
    let Some(&r) = arms
        .iter()
        .find(|&&a| s.arms[a].config.mode == Mode::MetaRim)
    else {
        return;
    };
    let reference = &s.arms[r].name;
    let _ = writeln!(md, "{}\n", intro(reference));
    let titles: Vec<String> = quantities
        .iter()
        .map(|(what, _, _)| format!(" P({reference} {what}) | p |"))
        .collect();
    let _ = writeln!(md, "| arm | seeds ({reference}, arm) |{}", titles.concat());
    let _ = writeln!(md, "|---|---|{}", "---|---|".repeat(quantities.len()));
    for &a in arms.iter().filter(|&&a| a != r) {
        let cells: Vec<String> = quantities
            .iter()
            .map(
                |(_, lower, values)| match compare(&values(r), &values(a), *lower) {
                    Some(c) => format!(" {:.3} | {:.4} |", c.prob_better, c.p_value),
                    None => " - | - |".into(),
                },
            )
            .collect();
        let _ = writeln!(
            md,
            "| {} | {}, {} |{}",
            s.arms[a].name,
            by_arm[r].len(),
            by_arm[a].len(),
            cells.concat()
        );
    }
    md.push('\n');
}

fn iqm_cells(values: &[f64], f: impl Fn(f64) -> String + Copy) -> (String, String) {
    match summarize(values) {
        Some(s) => (f(s.iqm), format!("[{}, {}]", f(s.iqm_ci.0), f(s.iqm_ci.1))),
        None => ("-".into(), "-".into()),
    }
}

fn eval_table(md: &mut String, g: &Group, what: &str) {
    let (ctx, arms, by_arm) = (g.ctx, g.arms, g.by_arm);
    let s = ctx.suite;
    if arms.iter().all(|&a| s.arms[a].eval_levels.is_empty()) {
        return;
    }
    let grounding = s.eval.grounding;
    let _ = writeln!(md, "Success rate, {what}:\n");
    if grounding {
        let _ = writeln!(
            md,
            "With another episode's mission shown to the policy (the grounding check): a policy \
             that reads its instruction loses success there, one that ignores it does not. \
             \"Carried out the shown mission\": of the swapped episodes whose shown mission \
             could be carried out (its objects are in the episode's world), the fraction in which \
             the agent did so (before the episode ended). A swapped episode goes on until its own \
             mission succeeds or time runs out, so a reading agent can still succeed there: after \
             carrying out the shown mission, or where the shown mission names an object absent \
             from the world; the runs table counts both (results recorded since they are kept).\n"
        );
        let _ = writeln!(
            md,
            "| arm | level | seeds | success (median) | 95% interval | another's mission (median) | 95% interval | carried out the shown mission (median) | 95% interval |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    } else {
        let _ = writeln!(
            md,
            "| arm | level | seeds | success (median) | 95% interval |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
    }
    for &a in arms {
        for (li, level) in s.arms[a].eval_levels.iter().enumerate() {
            let evals: Vec<&LevelEval> = by_arm[a]
                .iter()
                .filter_map(|d| d.result.evals.get(li))
                .collect();
            let vals: Vec<f64> = evals.iter().map(|e| e.success).collect();
            let (m, i) = stat_cells(&vals, rate);
            let trained =
                s.metric == MetricKind::ZeroShot && s.arms[a].config.level_ids().contains(level);
            let _ = write!(
                md,
                "| {} | {}{} | {} | {m} | {i} |",
                s.arms[a].name,
                short_level(level),
                if trained { " *" } else { "" },
                vals.len()
            );
            if grounding {
                let swapped: Vec<f64> = evals
                    .iter()
                    .filter_map(|e| e.swapped.map(|(v, _)| v))
                    .collect();
                let (sm, si) = stat_cells(&swapped, rate);
                let followed: Vec<f64> = evals
                    .iter()
                    .filter_map(|e| e.followed_shown.map(|(v, _)| v))
                    .collect();
                let (fm, fi) = stat_cells(&followed, rate);
                let _ = write!(md, " {sm} | {si} | {fm} | {fi} |");
            }
            md.push('\n');
        }
    }
    md.push('\n');
    if grounding {
        yardstick_lines(md, g);
    }
}

/// Under a grounding table: per `go to` level evaluated, what an agent that reads perfectly
/// (the scripted reader) scores with the same swapped missions, staying once done and
/// wandering then. Computed here from the suite's evaluation seed and episodes (a fraction of a
/// second per level), so archived suites get it too.
fn yardstick_lines(md: &mut String, g: &Group) {
    let s = g.ctx.suite;
    let mut levels: Vec<&String> = g
        .arms
        .iter()
        .flat_map(|&a| &s.arms[a].eval_levels)
        .collect();
    levels.sort();
    levels.dedup();
    let opts = EvalOptions {
        episodes: s.eval.episodes,
        seed: s.eval.seed,
        threads: 0,
        argmax: s.eval.argmax,
        swap_missions: true,
        // The group's rules; a group mixing both is measured under minigrid's default.
        done_actions: !g.arms.is_empty() && g.arms.iter().all(|&a| s.arms[a].config.done_actions),
    };
    for id in levels {
        let Ok(level) = crate::levels::lookup(id) else {
            continue;
        };
        // A level the reader cannot follow, or one that fails to generate, gets no line.
        if let Ok(Some(y)) = yardstick(&level, &opts) {
            let _ = writeln!(
                md,
                "Yardstick, {}: on the same evaluation episodes an agent that reads perfectly \
                 (`metarim eval --scripted-reader`) scores {:.3} ({:.3}-{:.3}) with another \
                 episode's mission if it stays once done, {:.3} ({:.3}-{:.3}) if it then wanders, \
                 as a policy never taught what to do then would (docs/RESULTS.md, \"What a \
                 perfect reader scores\").\n",
                short_level(id),
                y.stay.success,
                y.stay.success_ci.0,
                y.stay.success_ci.1,
                y.wander.success,
                y.wander.success_ci.0,
                y.wander.success_ci.1
            );
        }
    }
}

fn curriculum_tables(md: &mut String, g: &Group) {
    g.section(md, "curriculum adaptation");
    let (s, arms, by_arm) = (g.ctx.suite, g.arms, g.by_arm);
    let _ = writeln!(
        md,
        "Frames after the switch to each level until the rolling success on it reaches {} \
         (the first level: from the start). \"seeds on level\" counts the seeds whose \
         curriculum got to the level within the budget.\n",
        s.threshold
    );
    let _ = writeln!(
        md,
        "| arm | level | seeds on level | frames to {t} (median) | 95% interval | reached {t} |",
        t = s.threshold
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for &a in arms {
        let arm = &s.arms[a];
        let segs: Vec<_> = by_arm[a]
            .iter()
            .map(|d| curriculum_segments(&d.log, s.threshold, s.min_frames))
            .collect();
        for level in arm.config.level_ids() {
            let vals: Vec<f64> = segs
                .iter()
                .filter_map(|ss| ss.iter().find(|g| g.level == level))
                .map(|g| g.frames_to_threshold.map_or(f64::INFINITY, |f| f as f64))
                .collect();
            let (m, i) = stat_cells(&vals, frames_cell);
            let reached = vals.iter().filter(|v| v.is_finite()).count();
            let _ = writeln!(
                md,
                "| {} | {} | {}/{} | {m} | {i} | {reached}/{} |",
                arm.name,
                short_level(&level),
                vals.len(),
                segs.len(),
                vals.len()
            );
        }
    }
    md.push('\n');
    forgetting_tables(md, g);
    eval_table(
        md,
        g,
        "the final checkpoint on every curriculum level (forgetting: earlier levels after \
         training moved on)",
    );
}

/// A run's forgetting of each level it moved on from: success of the policy as that level
/// ended (its stage checkpoint) minus the final checkpoint's, on that level; `(level, drop)`.
pub(super) fn forgetting_of(d: &RunData) -> Vec<(String, f64)> {
    d.result
        .stages
        .iter()
        .filter_map(|st| {
            let at_end = st.evals.iter().find(|e| e.level == st.level)?.success;
            let last = d.result.evals.iter().find(|e| e.level == st.level)?.success;
            Some((st.level.clone(), at_end - last))
        })
        .collect()
}

/// Forgetting per level and arm, the success matrix of each arm (median over seeds), and
/// Meta-RIM against the other arms on each seed's mean forgetting.
fn forgetting_tables(md: &mut String, g: &Group) {
    let (ctx, group, arms, by_arm) = (g.ctx, g.name, g.arms, g.by_arm);
    let s = ctx.suite;
    if arms
        .iter()
        .all(|&a| by_arm[a].iter().all(|d| d.result.stages.is_empty()))
    {
        return;
    }
    let _ = writeln!(
        md,
        "## {group}: forgetting
"
    );
    let _ = writeln!(
        md,
        "Forgetting of a level: success on it of the policy as the curriculum moved on from it \
         (the stage checkpoint) minus the final policy's ({} episodes each; positive = \
         forgotten). Seeds whose curriculum never moved on from a level have no value there.\n",
        s.eval.episodes
    );
    let _ = writeln!(
        md,
        "| arm | level | seeds | success as it ended (median) | final success (median) | forgetting (median) | 95% interval | forgetting (IQM) | 95% interval |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    let mean_forgetting = |a: usize| -> Vec<f64> {
        by_arm[a]
            .iter()
            .map(|d| {
                let f = forgetting_of(d);
                if f.is_empty() {
                    f64::NAN
                } else {
                    f.iter().map(|(_, v)| v).sum::<f64>() / f.len() as f64
                }
            })
            .collect()
    };
    for &a in arms {
        let arm = &s.arms[a];
        for level in arm.config.level_ids() {
            let (mut ended, mut last, mut drop) = (Vec::new(), Vec::new(), Vec::new());
            for d in &by_arm[a] {
                let Some(st) = d.result.stages.iter().find(|st| st.level == level) else {
                    continue;
                };
                let at_end = st.evals.iter().find(|e| e.level == level);
                let fin = d.result.evals.iter().find(|e| e.level == level);
                if let (Some(e), Some(f)) = (at_end, fin) {
                    ended.push(e.success);
                    last.push(f.success);
                    drop.push(e.success - f.success);
                }
            }
            if drop.is_empty() {
                continue;
            }
            let (em, _) = stat_cells(&ended, rate);
            let (lm, _) = stat_cells(&last, rate);
            let (dm, di) = stat_cells(&drop, rate);
            let (dq, dqi) = iqm_cells(&drop, rate);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {em} | {lm} | {dm} | {di} | {dq} | {dqi} |",
                arm.name,
                short_level(&level),
                drop.len()
            );
        }
    }
    md.push('\n');
    comparison_table(
        md,
        g,
        |reference| {
            format!(
                "{reference} against each other arm on each seed's mean forgetting over the \
                 levels it moved on from (P(better): the probability that a random seed of \
                 {reference} forgot less; p: exact permutation test, as above)."
            )
        },
        &[("forgets less", true, &mean_forgetting)],
    );
    // The success matrix: rows the policy as each level ended, then the final one.
    for &a in arms {
        let arm = &s.arms[a];
        let ids = arm.config.level_ids();
        let _ = writeln!(
            md,
            "Success matrix of {} (median over seeds; row: the policy as that level ended; \
             column: the level evaluated):\n",
            arm.name
        );
        let head: Vec<String> = ids.iter().map(|l| short_level(l)).collect();
        let _ = writeln!(md, "| policy | {} |", head.join(" | "));
        let _ = writeln!(md, "|---|{}", "---|".repeat(ids.len()));
        let cell = |vals: Vec<f64>| stat_cells(&vals, rate).0;
        for (i, id) in ids.iter().enumerate().take(ids.len().saturating_sub(1)) {
            let cells: Vec<String> = ids
                .iter()
                .enumerate()
                .map(|(j, col)| {
                    if j > i {
                        return String::new();
                    }
                    cell(
                        by_arm[a]
                            .iter()
                            .filter_map(|d| d.result.stages.iter().find(|st| &st.level == id))
                            .filter_map(|st| st.evals.iter().find(|e| &e.level == col))
                            .map(|e| e.success)
                            .collect(),
                    )
                })
                .collect();
            let _ = writeln!(md, "| end of {} | {} |", short_level(id), cells.join(" | "));
        }
        let finals: Vec<String> = ids
            .iter()
            .map(|col| {
                cell(
                    by_arm[a]
                        .iter()
                        .filter_map(|d| d.result.evals.iter().find(|e| &e.level == col))
                        .map(|e| e.success)
                        .collect(),
                )
            })
            .collect();
        let _ = writeln!(md, "| final | {} |\n", finals.join(" | "));
    }
}

fn zero_shot_table(md: &mut String, g: &Group) {
    g.section(md, "zero-shot transfer");
    let (s, arms, by_arm) = (g.ctx.suite, g.arms, g.by_arm);
    let _ = writeln!(
        md,
        "| arm | trained on | seeds | final training success (median) | 95% interval |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for &a in arms {
        let arm = &s.arms[a];
        let finals: Vec<f64> = by_arm[a].iter().map(|d| d.result.final_success).collect();
        let (m, i) = stat_cells(&finals, rate);
        let trained: Vec<String> = arm
            .config
            .level_ids()
            .iter()
            .map(|l| short_level(l))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {m} | {i} |",
            arm.name,
            trained.join(", "),
            finals.len()
        );
    }
    md.push('\n');
    eval_table(
        md,
        g,
        "the final checkpoint without further training (* marks the level trained on, the \
         in-distribution reference; the others were never seen in training)",
    );
}

fn runs_table(md: &mut String, ctx: &ReportContext, data: &[RunData]) {
    let s = ctx.suite;
    let _ = writeln!(md, "## Runs\n");
    let _ = writeln!(
        md,
        "| run | frames | final training success | frames to {} | AUC | evaluations |",
        s.threshold
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for d in data {
        let evals: Vec<String> = d.result.evals.iter().map(run_eval_cell).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {} | {:.3} | {} |",
            run_dir_name(&s.arms[d.run.arm].name, d.run.seed),
            thousands(d.result.frames),
            d.result.final_success,
            frames_cell(d.to_threshold),
            d.auc,
            if evals.is_empty() {
                "-".into()
            } else {
                evals.join(", ")
            }
        );
    }
    md.push('\n');
}

/// One evaluation in the runs table: own success, and with the grounding check the swapped
/// figure, how often the shown mission was carried out, and where the swapped successes came
/// from (where the results kept those counts).
fn run_eval_cell(e: &LevelEval) -> String {
    let mut cell = format!("{} {:.3}", short_level(&e.level), e.success);
    let Some((w, _)) = e.swapped else {
        return cell;
    };
    let _ = write!(cell, " (another's mission {w:.3}");
    if let Some((f, _)) = e.followed_shown {
        let _ = write!(cell, ", carried it out {f:.3}");
    }
    if let Some(c) = e.swap_counts {
        let (own, of) = c.infeasible();
        let _ = write!(
            cell,
            "; own success where the shown mission was impossible {own} of {of}, after carrying \
             out the shown one {} of {}",
            c.followed_then_own, c.shown_feasible
        );
    }
    cell.push(')');
    cell
}

/// The success curve of an arm over its seeds: at each update all seeds logged, the frames
/// (equal across seeds: the same frames per update), the IQM over seeds and its 95% bootstrap
/// interval (as rliable draws sample-efficiency curves).
fn band(runs: &[&RunData]) -> Vec<BandPoint> {
    let logs: Vec<&[LogPoint]> = runs.iter().map(|d| d.log.as_slice()).collect();
    band_points(&logs)
}

/// The success curve of an arm over its seeds' `logs`, update by update (as far as the shortest
/// log goes): the IQM of the seeds' rolling success and, as its band, the same 95% bootstrap
/// interval of the IQM that the tables give ([`bootstrap_interval`] with the tables' resamples
/// and seed).
fn band_points(logs: &[&[LogPoint]]) -> Vec<BandPoint> {
    let len = logs.iter().map(|l| l.len()).min().unwrap_or(0);
    (0..len)
        .map(|i| {
            let vals: Vec<f64> = logs.iter().map(|l| l[i].success).collect();
            // Only the IQM and its interval: no median bootstrap per point of the curve.
            let (lo, hi) = bootstrap_interval(&vals, iqm, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
                .unwrap_or((f64::NAN, f64::NAN));
            BandPoint {
                frames: logs[0][i].frames,
                mid: iqm(&vals).unwrap_or(f64::NAN),
                lo,
                hi,
            }
        })
        .collect()
}

/// The y-axis name of a success plot of runs with `configs`: the rolling window they report
/// their success over (`stats_window` episodes), or "per arm" when they differ.
fn success_axis<'a>(configs: impl Iterator<Item = &'a TrainConfig>) -> String {
    let mut windows: Vec<usize> = configs.map(|c| c.stats_window).collect();
    windows.sort_unstable();
    windows.dedup();
    match windows.as_slice() {
        [n] => format!("rolling success rate (last {n} episodes)"),
        [] => "rolling success rate".into(),
        _ => "rolling success rate (window per arm)".into(),
    }
}

/// The names on a module-activity heatmap whose columns are `x` (frames or levels).
fn activity_labels(x: &str) -> HeatLabels<'_> {
    HeatLabels {
        x,
        y: "module",
        scale: "fraction of steps active",
    }
}

fn module_labels(n: usize) -> Vec<String> {
    (0..n).map(|m| format!("m{m}")).collect()
}

/// The most modules any logged update of `runs` reports activity for (the rows of an activity
/// heatmap); `None` when none does (arms without modules, such as LSTM).
fn module_count(runs: &[&RunData]) -> Option<usize> {
    runs.iter()
        .flat_map(|d| d.log.iter().map(|p| p.activity.len()))
        .max()
        .filter(|n| *n > 0)
}

/// Module activity over time (mean over seeds and the updates in each time bin); `None` for
/// arms without modules (LSTM).
fn activity_over_time(label: &str, runs: &[&RunData]) -> Option<HeatPanel> {
    let n = module_count(runs)?;
    let max_frames = runs
        .iter()
        .flat_map(|d| d.log.iter().map(|p| p.frames))
        .max()
        .unwrap_or(1)
        .max(1);
    let updates = runs.iter().map(|d| d.log.len()).max().unwrap_or(1);
    let bins = HEAT_TIME_BINS.min(updates).max(1);
    let edges: Vec<u64> = (0..=bins)
        .map(|b| (max_frames as u128 * b as u128 / bins as u128) as u64)
        .collect();
    let mut sum = vec![0.0; n * bins];
    let mut count = vec![0usize; n * bins];
    for d in runs {
        for p in &d.log {
            // Update i covers frames (prev, p.frames]: bin of its last frame.
            let b = ((p.frames.saturating_sub(1) as u128 * bins as u128) / max_frames as u128)
                .min(bins as u128 - 1) as usize;
            for (m, a) in p.activity.iter().enumerate().take(n) {
                if a.is_finite() {
                    sum[m * bins + b] += a;
                    count[m * bins + b] += 1;
                }
            }
        }
    }
    let values = sum
        .iter()
        .zip(&count)
        .map(|(s, c)| if *c > 0 { s / *c as f64 } else { f64::NAN })
        .collect();
    Some(HeatPanel {
        title: label.to_string(),
        row_labels: module_labels(n),
        axis: HeatAxis::Frames(edges),
        values,
    })
}

/// Module activity per level (mean over seeds and the updates on each level, in first-seen
/// order); `None` for arms without modules.
fn activity_by_level(label: &str, runs: &[&RunData]) -> Option<HeatPanel> {
    let n = module_count(runs)?;
    let mut levels: Vec<String> = Vec::new();
    let mut acc: BTreeMap<(usize, usize), (f64, usize)> = BTreeMap::new();
    for d in runs {
        for p in &d.log {
            let li = match levels.iter().position(|l| *l == p.level) {
                Some(i) => i,
                None => {
                    levels.push(p.level.clone());
                    levels.len() - 1
                }
            };
            for (m, a) in p.activity.iter().enumerate().take(n) {
                if a.is_finite() {
                    let e = acc.entry((m, li)).or_insert((0.0, 0));
                    e.0 += a;
                    e.1 += 1;
                }
            }
        }
    }
    let cols = levels.len();
    let mut values = vec![f64::NAN; n * cols];
    for ((m, li), (s, c)) in acc {
        values[m * cols + li] = s / c as f64;
    }
    Some(HeatPanel {
        title: label.to_string(),
        row_labels: module_labels(n),
        axis: HeatAxis::Labels(levels.iter().map(|l| short_level(l)).collect()),
        values,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn table_cells_read_back_as_the_values_shown() {
        let cases = [
            ("0.983", serde_json::json!(0.983)),
            ("3,920,640", serde_json::json!(3920640.0)),
            ("[0.442, 0.583]", serde_json::json!([0.442, 0.583])),
            (
                "[3,432,960, not reached]",
                serde_json::json!([3432960.0, null]),
            ),
            ("not reached", serde_json::Value::Null),
            ("2/3", serde_json::json!({"count": 2, "of": 3})),
        ];
        for (text, want) in cases {
            assert_eq!(cell_json(text)["value"], want, "{text}");
            assert_eq!(cell_json(text)["text"], text);
        }
        assert!(cell_json("meta-rim").get("value").is_none());
        assert_eq!(table_cells("| a | b c |  |"), vec!["a", "b c", ""]);
    }

    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(frames_cell(f64::INFINITY), "not reached");
        assert_eq!(frames_cell(2560.0), "2,560");
        assert_eq!(file_part("k of N"), "k_of_N");
    }

    #[test]
    fn curve_bands_are_the_tables_bootstrap_interval_of_the_iqm() {
        let p = |frames, success| LogPoint {
            update: frames / 10,
            frames,
            level: "L".into(),
            episodes: 1,
            success,
            activity: Vec::new(),
            fps: 0.0,
        };
        // Eight seeds, one of them with a shorter log: with this many seeds the interval is
        // narrower than the seeds' range (with 3 or 4 it is their range: the percentile
        // bootstrap cannot do better with so few).
        let seeds: Vec<Vec<LogPoint>> = (0..8u32)
            .map(|s| {
                let f = f64::from(s);
                let n = if s == 5 { 2 } else { 3 };
                (0..n)
                    .map(|i| p(10 * (i + 1), (0.05 * f + 0.1 * i as f64).min(1.0)))
                    .collect()
            })
            .collect();
        let a = &seeds[0];
        let logs: Vec<&[LogPoint]> = seeds.iter().map(Vec::as_slice).collect();
        let band = band_points(&logs);
        // As far as the shortest log goes.
        assert_eq!(band.len(), 2);
        for (i, bp) in band.iter().enumerate() {
            let vals: Vec<f64> = logs.iter().map(|l| l[i].success).collect();
            // The tables' IQM cell and its interval, from the same function and resamples.
            let stat = summarize(&vals).unwrap();
            assert_eq!(bp.frames, a[i].frames);
            assert_eq!(bp.mid, stat.iqm);
            assert_eq!((bp.lo, bp.hi), stat.iqm_ci);
            // Not the min-max range of the seeds.
            assert!(bp.lo <= bp.mid && bp.mid <= bp.hi);
        }
        let range = |i: usize| {
            let v: Vec<f64> = logs.iter().map(|l| l[i].success).collect();
            (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        assert!(band
            .iter()
            .enumerate()
            .any(|(i, bp)| (bp.lo, bp.hi) != range(i)));
        assert!(band_points(&[]).is_empty());
    }

    #[test]
    fn success_axes_name_the_rolling_window() {
        let a = TrainConfig {
            stats_window: 500,
            ..TrainConfig::default()
        };
        let mut b = a.clone();
        assert_eq!(
            success_axis([&a, &b].into_iter()),
            "rolling success rate (last 500 episodes)"
        );
        b.stats_window = 100;
        assert_eq!(
            success_axis([&a, &b].into_iter()),
            "rolling success rate (window per arm)"
        );
    }

    #[test]
    fn logs_are_cut_at_the_budget() {
        let p = |frames| LogPoint {
            update: frames / 10,
            frames,
            level: "L".into(),
            episodes: 1,
            success: 1.0,
            activity: Vec::new(),
            fps: 0.0,
        };
        let log = vec![p(10), p(20), p(30), p(40)];
        let frames = |v: Vec<LogPoint>| v.iter().map(|p| p.frames).collect::<Vec<_>>();
        assert_eq!(frames(within_budget(log.clone(), 25)), [10, 20, 30]);
        assert_eq!(frames(within_budget(log.clone(), 20)), [10, 20]);
        assert_eq!(frames(within_budget(log, 100)), [10, 20, 30, 40]);
    }
}
