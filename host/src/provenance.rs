//! Where a result came from: the commit the binary was built from (embedded by `host/build.rs`,
//! right wherever the binary runs), the command line and the machine, appended to a run
//! directory's `provenance.jsonl` once per invocation that trains in it (a resumed run keeps
//! the history of every invocation).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// The short commit the binary was built from, or `unknown` (not built from a git checkout).
pub const BUILD_COMMIT: &str = env!("METARIM_BUILD_COMMIT");

/// File of the invocations that trained in a run directory, one JSON object per line.
pub const PROVENANCE_FILE: &str = "provenance.jsonl";

/// The command line as typed (arguments with spaces or quotes quoted for a POSIX shell).
pub fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', "'\\''"))
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Append this invocation to `dir/provenance.jsonl`: commit, command line, machine, the Unix
/// time it started and the frames the run had when it did (0 for a new run).
pub fn record(dir: &Path, frames_at_start: u64) -> Result<()> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let line = serde_json::json!({
        "commit": BUILD_COMMIT,
        "command": command_line(),
        "hardware": crate::experiment::report::hardware(),
        "started_unix_s": started,
        "frames_at_start": frames_at_start,
    });
    let path = dir.join(PROVENANCE_FILE);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

/// One invocation of a `provenance.jsonl` line as archives keep it: the commit, the machine,
/// when it started and from which frame; not the command line (it names scratch paths).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Invocation {
    /// The short commit the training binary was built from.
    pub commit: String,
    /// The machine ([`crate::experiment::report::hardware`] where it trained).
    pub hardware: String,
    /// Unix time it started.
    pub started_unix_s: f64,
    /// The run's frames when it started (0: a new run).
    pub frames_at_start: u64,
}

/// The invocations recorded in `dir/provenance.jsonl`, in order; an empty list where the file
/// is missing. A line that does not parse is an error naming the file and line.
pub fn read(dir: &Path) -> Result<Vec<Invocation>> {
    let path = dir.join(PROVENANCE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!("{} line {}: not a provenance record", path.display(), i + 1)
            })
        })
        .collect()
}

/// `invocations` as `provenance.jsonl` text without command lines (what an archive keeps).
pub fn archived_text(invocations: &[Invocation]) -> Result<String> {
    let mut text = String::new();
    for inv in invocations {
        text.push_str(&serde_json::to_string(inv).context("writing a provenance record")?);
        text.push('\n');
    }
    Ok(text)
}
