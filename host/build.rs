//! Embeds the commit the binary is built from (`METARIM_BUILD_COMMIT`), so run directories and
//! reports name it wherever the binary runs (outside the repository too). `unknown` where the
//! source is not a git checkout or git is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=METARIM_BUILD_COMMIT={commit}");
    // Rebuild when HEAD moves: the HEAD file, the branch it names and the packed refs.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = PathBuf::from(dir);
        let head = dir.join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let Ok(text) = std::fs::read_to_string(&head) {
            if let Some(r) = text.trim().strip_prefix("ref: ") {
                let common = git(&["rev-parse", "--git-common-dir"])
                    .map(PathBuf::from)
                    .unwrap_or_else(|| dir.clone());
                for base in [&dir, &common] {
                    let p = Path::new(base).join(r);
                    if p.exists() {
                        println!("cargo:rerun-if-changed={}", p.display());
                    }
                }
                println!(
                    "cargo:rerun-if-changed={}",
                    common.join("packed-refs").display()
                );
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
