//! Helpers shared by the training integration tests.

use std::path::{Path, PathBuf};

use host::train::run::RunOptions;

/// A fresh, empty directory under the system's temp dir, unique to this test process.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metarim-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run options for a quiet, uninterrupted run into `out`.
pub fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        resume: false,
        progress: false,
        stop_after_updates: None,
    }
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
