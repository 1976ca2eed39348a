//! Helpers shared by the integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use host::batch::gemm::Scalar;
use host::batch::normwise_rel_error;
use host::train::run::RunOptions;
use host::train::TrainConfig;
use metarim_core::nn::params::Mode;

/// A test's scratch directory under the system's temp dir, `PREFIX-PID-NAME`: fresh and empty
/// when made, removed when dropped, so that test runs do not pile up checkpoints in the temp
/// dir; a failing test (a panicking thread) keeps it for inspection and names it on stderr.
/// Dereferences to its path.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Make (or empty) `PREFIX-PID-NAME` under the temp dir.
    pub fn new(prefix: &str, name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the failing test's directory {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh, empty scratch directory `metarim-test-PID-NAME`, unique to this test process and
/// removed when the test passes ([`Scratch`]).
pub fn tmpdir(name: &str) -> Scratch {
    Scratch::new("metarim-test", name)
}

/// Run options for a quiet, uninterrupted run into `out`.
pub fn opts(out: &Path) -> RunOptions {
    RunOptions::new(out)
}

/// `metarim train` arguments of a small, fast run (Tiny preset, 6 envs x 20 frames, 10-step
/// chunks, a checkpoint every update) on GoToLocalS5N2 into `out`, then `extra`.
pub fn tiny_train_args(out: &Path, frames: u64, extra: &[&str]) -> Vec<String> {
    let frames = frames.to_string();
    let out = out.display().to_string();
    [
        "train",
        "--level",
        "BabyAI-GoToLocalS5N2-v0",
        "--frames",
        &frames,
        "--quiet",
        "--set",
        "procs=6",
        "--set",
        "frames_per_proc=20",
        "--set",
        "recurrence=10",
        "--set",
        "batch_size=40",
        "--set",
        "save_interval=1",
        "--out",
        &out,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// A small config on the device defaults ([`TrainConfig::device`]: Tiny preset, its level):
/// `mode` (a `--mode` name), `procs` envs x 20 frames, 10-step chunks, minibatches of 40,
/// `frames` in all.
pub fn small_config(mode: &str, procs: usize, frames: u64) -> TrainConfig {
    TrainConfig {
        mode: Mode::from_name(mode).expect("a mode name"),
        procs,
        frames_per_proc: 20,
        recurrence: 10,
        batch_size: 40,
        frames,
        ..TrainConfig::device()
    }
}

/// The config of [`tiny_train_args`] for in-process runs: [`small_config`] with 6 envs on
/// GoToLocalS5N2, 2 fast and 2 slow steps, slowness 2, a checkpoint every update.
pub fn tiny_config(mode: &str, frames: u64) -> TrainConfig {
    TrainConfig {
        level: "BabyAI-GoToLocalS5N2-v0".into(),
        slowness: 2,
        inner_steps: 2,
        outer_steps: 2,
        save_interval: 1,
        ..small_config(mode, 6, frames)
    }
}

/// `max |a - b| / max |b|` over a tensor (normwise relative error), and `max |b|`; the two
/// must have the same length.
pub fn rel_err<S: Scalar>(a: &[S], b: &[S]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    normwise_rel_error(a, b)
}

/// Assert that `text` (an error message, a log) mentions every one of `parts`; the failure
/// names the missing part and prints the whole text.
pub fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected {part:?} in:\n{text}");
    }
}
