//! Training runs compared side by side (`metarim curves`): every run's rolling training
//! success against frames on one chart, and a Markdown table of when each first reached given
//! success thresholds and where it stood at given frame counts.
//!
//! It reads any run directories, not only a suite's (`metarim experiment` draws its own arms'
//! curves with bands over seeds): runs trained by hand with different `--set` options, seeds
//! or binaries, as docs/RESULTS.md compares them.
//!
//! Invariants:
//! - Only each run's `train.jsonl` is read (or, where it is absent, the `train.jsonl.gz` of an
//!   archived run: experiments/README.md, "Archived runs"); nothing is written into a run.
//! - "Frames to a threshold" is [`frames_to_threshold`], the definition the suite reports use:
//!   the first update at least `min_frames` into the run whose rolling success reaches it.
//! - The success "at" a frame count is the rolling success of the first update at or past it;
//!   a run that stopped before it shows `-`, as does a threshold never reached.
//! - A curriculum run's rolling success is of the level it is on at each update (the trainer's
//!   window restarts at every switch), so its line and thresholds mix levels unless
//!   [`only_level`] (`--level`) keeps one level's updates; frames stay the run's own (every
//!   level's frames count), and `min_frames` then counts from the switch onto that level, as
//!   `metarim experiment` counts it per curriculum level.
//! - Bad input (a missing or empty log, a threshold outside `[0, 1]`, a label with `|`, a
//!   `--level` the run never trained on) is an error naming the run or the value; nothing here
//!   panics on input.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::experiment::metrics::{frames_to_threshold, read_log, LogPoint};
use crate::plot::{write_curves, CurvePoint};

/// One run's training log under the label it is shown with.
#[derive(Clone, Debug)]
pub struct RunCurve {
    /// Label in the chart's legend and the table's first column.
    pub label: String,
    /// Every update of its `train.jsonl`, in order (with [`only_level`], that level's).
    pub points: Vec<LogPoint>,
    /// Frames into the run at which the rolling window of `points` began: 0, or the
    /// curriculum's switch onto the level [`only_level`] kept. Thresholds count updates from
    /// `window_start + min_frames` on.
    pub window_start: u64,
}

/// A run argument as given on the command line: `DIR` or `DIR=LABEL` (the label defaults to
/// the directory's last component).
pub fn parse_run_arg(arg: &str) -> Result<(PathBuf, String)> {
    let (dir, label) = match arg.split_once('=') {
        Some((dir, label)) => (PathBuf::from(dir), label.to_string()),
        None => {
            let dir = PathBuf::from(arg);
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| arg.to_string());
            (dir, name)
        }
    };
    if dir.as_os_str().is_empty() {
        bail!("run {arg:?}: no directory before `=`");
    }
    if label.trim().is_empty() {
        bail!("run {arg:?}: empty label after `=`");
    }
    if label.contains('|') || label.contains('\n') {
        bail!("run {arg:?}: a label may not contain `|` or a line break (it is a table cell)");
    }
    Ok((dir, label))
}

/// Read the training log of the run in `dir` (`train.jsonl`, or the gzip an archived run
/// keeps); a log without a single update is an error.
pub fn load(dir: &Path, label: &str) -> Result<RunCurve> {
    if !dir.is_dir() {
        bail!("run {label:?}: {} is not a directory", dir.display());
    }
    let points = read_log(&dir.join("train.jsonl"))
        .with_context(|| format!("run {label:?} ({})", dir.display()))?;
    if points.is_empty() {
        bail!(
            "run {label:?}: {} has no update logged yet",
            dir.join("train.jsonl").display()
        );
    }
    Ok(RunCurve {
        label: label.to_string(),
        points,
        window_start: 0,
    })
}

/// Keep only the updates a run trained on `level` (the first stretch of consecutive updates on
/// it: a curriculum visits each level once), with `window_start` at the switch onto it. A run
/// that never trained on `level` is an error naming the run and the levels it did train on.
pub fn only_level(run: RunCurve, level: &str) -> Result<RunCurve> {
    let Some(first) = run.points.iter().position(|p| p.level == level) else {
        let mut seen: Vec<&str> = Vec::new();
        for p in &run.points {
            if !seen.contains(&p.level.as_str()) {
                seen.push(&p.level);
            }
        }
        bail!(
            "run {:?} has no update on level {level:?} (its log names: {})",
            run.label,
            seen.join(", ")
        );
    };
    let len = run.points[first..]
        .iter()
        .take_while(|p| p.level == level)
        .count();
    let window_start = match first {
        0 => 0,
        i => run.points[i - 1].frames,
    };
    Ok(RunCurve {
        label: run.label,
        points: run.points[first..first + len].to_vec(),
        window_start,
    })
}

/// Check that every threshold is a success rate in `[0, 1]`.
pub fn check_thresholds(thresholds: &[f64]) -> Result<()> {
    for &t in thresholds {
        if !(0.0..=1.0).contains(&t) {
            bail!("threshold {t} is not a success rate in [0, 1]");
        }
    }
    Ok(())
}

/// `frames` in millions with two decimals (`4.18M`).
fn millions(frames: u64) -> String {
    format!("{:.2}M", frames as f64 / 1e6)
}

/// A frame count as a column heading: whole millions without decimals (`2M`), anything else
/// as [`millions`].
fn milestone_heading(frames: u64) -> String {
    if frames.is_multiple_of(1_000_000) {
        format!("{}M", frames / 1_000_000)
    } else {
        millions(frames)
    }
}

/// The rolling success of the first update at or past `frames`, if the run got that far.
pub fn success_at(points: &[LogPoint], frames: u64) -> Option<f64> {
    points
        .iter()
        .find(|p| p.frames >= frames)
        .map(|p| p.success)
}

/// The Markdown table: per run, the frames to each of `thresholds` (counting updates at least
/// `min_frames` past the run's `window_start`), the rolling success at each of `milestones`,
/// and its last update's frames and rolling success.
pub fn table(runs: &[RunCurve], thresholds: &[f64], min_frames: u64, milestones: &[u64]) -> String {
    let mut head = String::from("| run |");
    let mut rule = String::from("|---|");
    for t in thresholds {
        let _ = write!(head, " frames to {t} |");
        rule.push_str("---|");
    }
    for &m in milestones {
        let _ = write!(head, " at {} |", milestone_heading(m));
        rule.push_str("---|");
    }
    head.push_str(" last update: frames, success |");
    rule.push_str("---|");
    let mut out = format!("{head}\n{rule}\n");
    for run in runs {
        let mut row = format!("| {} |", run.label);
        for &t in thresholds {
            let from = run.window_start.saturating_add(min_frames);
            let cell =
                frames_to_threshold(&run.points, t, from).map_or_else(|| "-".to_string(), millions);
            let _ = write!(row, " {cell} |");
        }
        for &m in milestones {
            let cell =
                success_at(&run.points, m).map_or_else(|| "-".to_string(), |s| format!("{s:.2}"));
            let _ = write!(row, " {cell} |");
        }
        if let Some(last) = run.points.last() {
            let _ = write!(row, " {}, {:.3} |", millions(last.frames), last.success);
        }
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// Draw every run's rolling training success against frames on one chart at `path` (PNG).
pub fn write_figure(path: &Path, title: &str, runs: &[RunCurve]) -> Result<()> {
    let curves: Vec<Vec<CurvePoint>> = runs
        .iter()
        .map(|r| {
            r.points
                .iter()
                .map(|p| CurvePoint {
                    frames: p.frames,
                    success: p.success,
                    // The chart shows success only; the compact log point has no return.
                    mean_return: f64::NAN,
                })
                .collect()
        })
        .collect();
    let series: Vec<(&str, &[CurvePoint])> = runs
        .iter()
        .zip(&curves)
        .map(|(r, c)| (r.label.as_str(), c.as_slice()))
        .collect();
    // `write_curves`' errors name the path already.
    write_curves(path, title, &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(frames: u64, success: f64) -> LogPoint {
        point_on("BabyAI-GoToLocal-v0", frames, success)
    }

    fn point_on(level: &str, frames: u64, success: f64) -> LogPoint {
        LogPoint {
            update: frames / 1000,
            frames,
            level: level.into(),
            episodes: 10,
            success,
            activity: Vec::new(),
            fps: 1000.0,
        }
    }

    fn run(label: &str, points: &[(u64, f64)]) -> RunCurve {
        RunCurve {
            label: label.into(),
            points: points.iter().map(|&(f, s)| point(f, s)).collect(),
            window_start: 0,
        }
    }

    #[test]
    fn one_level_of_a_curriculum_counts_from_its_switch() {
        let curriculum = RunCurve {
            label: "curr".into(),
            points: vec![
                point_on("Obj", 100_000, 0.5),
                point_on("Obj", 300_000, 0.95),
                point_on("Local", 320_000, 0.92),
                point_on("Local", 340_000, 0.2),
                point_on("Local", 900_000, 0.6),
                point_on("Local", 2_000_000, 0.91),
            ],
            window_start: 0,
        };
        // Unfiltered, the 0.9 of the first level counts.
        let t = table(std::slice::from_ref(&curriculum), &[0.9], 50_000, &[]);
        assert_eq!(t.lines().nth(2), Some("| curr | 0.30M | 2.00M, 0.910 |"));
        let local = only_level(curriculum.clone(), "Local").unwrap();
        assert_eq!(local.window_start, 300_000);
        assert_eq!(local.points.len(), 4);
        // 0.92 at 320k is 20k frames after the switch, before `min_frames`: not counted; the
        // frames reported are the run's own.
        let t = table(&[local], &[0.5, 0.9], 50_000, &[1_000_000]);
        assert_eq!(
            t.lines().nth(2),
            Some("| curr | 0.90M | 2.00M | 0.91 | 2.00M, 0.910 |")
        );
        let obj = only_level(curriculum.clone(), "Obj").unwrap();
        assert_eq!((obj.window_start, obj.points.len()), (0, 2));
        let e = only_level(curriculum, "Maze").unwrap_err().to_string();
        assert!(
            e.contains("\"curr\"") && e.contains("Maze") && e.contains("Obj, Local"),
            "{e}"
        );
    }

    #[test]
    fn the_table_gives_first_crossings_past_min_frames_and_milestones() {
        let a = run(
            "a",
            &[
                (10_000, 0.9),
                (1_000_000, 0.2),
                (2_000_000, 0.55),
                (3_500_000, 0.71),
                (4_000_000, 0.6),
            ],
        );
        let b = run("b", &[(1_000_000, 0.1), (1_500_000, 0.35)]);
        let t = table(&[a, b], &[0.5, 0.7, 0.9], 50_000, &[2_000_000, 4_000_000]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| run | frames to 0.5 | frames to 0.7 | frames to 0.9 | at 2M | at 4M | last update: frames, success |"
        );
        // 0.9 at 10k frames is before `min_frames`: not counted.
        assert_eq!(
            lines[2],
            "| a | 2.00M | 3.50M | - | 0.55 | 0.60 | 4.00M, 0.600 |"
        );
        // Run b stopped before 2M: no milestone value.
        assert_eq!(lines[3], "| b | - | - | - | - | - | 1.50M, 0.350 |");
    }

    #[test]
    fn run_arguments_take_an_optional_label() {
        let (dir, label) = parse_run_arg("runs/x/meta-rim-s1").unwrap();
        assert_eq!(dir, PathBuf::from("runs/x/meta-rim-s1"));
        assert_eq!(label, "meta-rim-s1");
        let (dir, label) = parse_run_arg("runs/y=meta-rim, seed 2").unwrap();
        assert_eq!(dir, PathBuf::from("runs/y"));
        assert_eq!(label, "meta-rim, seed 2");
        assert!(parse_run_arg("=label").is_err());
        assert!(parse_run_arg("runs/y=").is_err());
        assert!(parse_run_arg("runs/y=a|b").is_err());
    }

    #[test]
    fn thresholds_must_be_success_rates() {
        assert!(check_thresholds(&[0.0, 0.5, 1.0]).is_ok());
        let e = check_thresholds(&[0.5, 1.5]).unwrap_err().to_string();
        assert!(e.contains("1.5"), "{e}");
        assert!(check_thresholds(&[f64::NAN]).is_err());
    }

    #[test]
    fn a_missing_or_empty_log_is_an_error_naming_the_run() {
        let dir = std::env::temp_dir().join(format!("metarim-curves-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let e = format!("{:#}", load(&dir, "lost").unwrap_err());
        assert!(e.contains("\"lost\""), "{e}");
        std::fs::write(dir.join("train.jsonl"), "").unwrap();
        let e = format!("{:#}", load(&dir, "empty").unwrap_err());
        assert!(e.contains("no update"), "{e}");
        let e = format!("{:#}", load(&dir.join("absent"), "gone").unwrap_err());
        assert!(e.contains("not a directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
