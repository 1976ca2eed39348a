//! Owning a run directory: an exclusive lock for the life of a training process, and the
//! clean-up of temporary files that a killed process left behind.
//!
//! Invariants:
//! - At most one process trains into a directory at a time: [`RunDirLock::acquire`] takes an
//!   advisory exclusive lock (`flock`) on `DIR/.lock` without waiting, and a second process
//!   gets an error naming the holder. The kernel drops the lock when its process dies, however
//!   it dies, so a crashed run never blocks the next one.
//! - A clean exit empties the lock file before releasing it, so a non-empty lock file found by
//!   the next holder means the previous one was killed or crashed; that is reported.
//! - The lock file is never deleted (deleting it would let two processes hold locks on two
//!   different files of the same name).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Name of the lock file inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a run directory, held until dropped.
#[derive(Debug)]
pub struct RunDirLock {
    file: File,
    path: PathBuf,
    /// What the lock file said when the lock was taken, when a previous holder left it
    /// without a clean exit (its pid, host and start time).
    pub stale: Option<String>,
}

impl RunDirLock {
    /// Lock `dir` (which must exist) for this process, or fail naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<RunDirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the run lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                bail!(
                    "{} is in use by another metarim process ({}); wait for it to finish or \
                     choose another --out",
                    dir.display(),
                    if holder.is_empty() {
                        "it has not written its pid yet".to_string()
                    } else {
                        holder
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        let previous = read_holder(&mut file);
        let stale = (!previous.is_empty()).then_some(previous);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let me = format!(
            "pid {} on {}, started at unix time {started}",
            std::process::id(),
            hostname()
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(me.as_bytes()))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(RunDirLock { file, path, stale })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        // Empty means "released cleanly"; the lock itself goes when the file is closed.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
    }
}

/// What a run directory's lock file says about its owner, seen from outside ([`probe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No lock file: no process has trained here.
    Absent,
    /// A live process holds the lock (its pid, host and start time, as it wrote them).
    Held(String),
    /// Nobody holds it and the last holder released it cleanly.
    Released,
    /// Nobody holds it but the last holder did not release it: it was killed or crashed
    /// (what it wrote about itself).
    Stale(String),
}

/// The state of `dir`'s lock, without taking it and without writing to the lock file: a
/// shared lock is tried (and dropped at once), which fails exactly while a training process
/// holds its exclusive one. On a shared filesystem this sees holders on other machines where
/// the filesystem forwards `flock` (NFSv4, Lustre and GPFS do).
pub fn probe(dir: &Path) -> Result<LockState> {
    let path = dir.join(LOCK_FILE);
    let mut file = match OpenOptions::new().read(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Absent),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let holder = read_holder(&mut file);
            // Closing the file drops the shared lock.
            Ok(if holder.is_empty() {
                LockState::Released
            } else {
                LockState::Stale(holder)
            })
        }
        Err(TryLockError::WouldBlock) => Ok(LockState::Held(read_holder(&mut file))),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.take(4096).read_to_string(&mut text);
    text.trim().to_string()
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".into())
}

/// Remove the temporary files (`.NAME.tmp-PID` or `.NAME.tmp-PID-N`, from
/// [`crate::fsutil::write_atomic`] and earlier versions of it) in
/// `dir` whose writer is gone: another pid than ours that is no longer running (on systems
/// without `/proc`, any other pid: call this only while holding the directory's lock). Returns
/// the removed paths.
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let me = std::process::id();
    let proc_fs = Path::new("/proc/self").exists();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = crate::fsutil::temp_file_writer_pid(name) else {
            continue;
        };
        if pid == me || (proc_fs && Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        let path = entry.path();
        fs::remove_file(&path)
            .with_context(|| format!("removing the stale temporary file {}", path.display()))?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunDirLock::acquire(dir.path()).unwrap();
        assert!(first.stale.is_none());
        let e = RunDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        drop(first);
        let again = RunDirLock::acquire(dir.path()).unwrap();
        assert!(again.stale.is_none(), "a clean release is not stale");
    }

    #[test]
    fn probe_tells_held_released_stale_and_absent_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe(dir.path()).unwrap(), LockState::Absent);
        let lock = RunDirLock::acquire(dir.path()).unwrap();
        match probe(dir.path()).unwrap() {
            LockState::Held(h) => assert!(h.contains(&std::process::id().to_string()), "{h}"),
            other => panic!("{other:?}"),
        }
        drop(lock);
        assert_eq!(probe(dir.path()).unwrap(), LockState::Released);
        fs::write(dir.path().join(LOCK_FILE), "pid 4194304 on elsewhere").unwrap();
        assert_eq!(
            probe(dir.path()).unwrap(),
            LockState::Stale("pid 4194304 on elsewhere".into())
        );
        // Probing takes nothing: the directory can still be locked.
        RunDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_reported_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "pid 4194304 on elsewhere").unwrap();
        let lock = RunDirLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.stale.as_deref(), Some("pid 4194304 on elsewhere"));
    }

    #[test]
    fn stale_temp_files_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".checkpoint.safetensors.tmp-4194304");
        let dead_numbered = dir.path().join(".train.jsonl.tmp-4194304-3");
        let mine = dir
            .path()
            .join(format!(".train.csv.tmp-{}", std::process::id()));
        let other = dir.path().join("notes.tmp-12");
        for p in [&dead, &dead_numbered, &mine, &other] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(
            remove_stale_temp_files(dir.path()).unwrap(),
            vec![dead.clone(), dead_numbered.clone()]
        );
        assert!(!dead.exists() && !dead_numbered.exists());
        assert!(mine.exists() && other.exists());
    }
}
