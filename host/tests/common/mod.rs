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
