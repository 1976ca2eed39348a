//! Writing output files so that a failure never destroys what was there.
//!
//! Invariants:
//! - A regular file (or a new path) is written under a temporary name in its directory
//!   (`.NAME.tmp-PID-N`), flushed, synced and renamed onto the target only when everything
//!   was written: a full disk, a killed process or an error part-way leaves the old file as
//!   it was, and an uncommitted temporary file is removed when dropped.
//! - A link to a regular file keeps being a link: the file it names is replaced (with the old
//!   file's permissions).
//! - A target that exists and is not a regular file (a device such as `/dev/null` or
//!   `/dev/stdout`, a FIFO) is written in place: renaming over it would replace the device
//!   node with a file. Such writes are not atomic, and their errors are reported as they come.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

/// The pid of the process that wrote a temporary file named as [`AtomicFile`] names them
/// (`.NAME.tmp-PID-N`, or `.NAME.tmp-PID` from earlier versions), or `None` for any other name.
pub fn temp_file_writer_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let pid = match tail.split_once('-') {
        Some((pid, n)) if n.chars().all(|c| c.is_ascii_digit()) => pid,
        Some(_) => return None,
        None => tail,
    };
    pid.parse().ok()
}

/// A file being written: under a temporary name in its target's directory, renamed onto the
/// target by [`AtomicFile::commit`] (or written in place when the target is not a regular
/// file; see the module docs). Dropped uncommitted, the temporary file is removed.
pub struct AtomicFile {
    /// The path as given (for messages).
    path: PathBuf,
    /// Where the rename goes (the path, or the file a link names).
    target: PathBuf,
    /// The temporary file; `None` when writing in place or once renamed.
    tmp: Option<PathBuf>,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Start writing `path`: nothing changes at `path` until [`commit`](Self::commit) (unless
    /// it is a device or FIFO, written in place). Errors name `path`: a directory, a
    /// directory that cannot be written, no file name.
    pub fn create(path: &Path) -> Result<AtomicFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let existing = match fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        };
        if let Some(m) = &existing {
            if m.is_dir() {
                bail!("cannot write {}: it is a directory", path.display());
            }
            if !m.is_file() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("cannot open {} for writing", path.display()))?;
                return Ok(AtomicFile {
                    path: path.to_path_buf(),
                    target: path.to_path_buf(),
                    tmp: None,
                    out: Some(BufWriter::new(file)),
                });
            }
        }
        // A link to a file: replace the file, keep the link.
        let target = match existing {
            Some(_) => fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            None => path.to_path_buf(),
        };
        let name = target
            .file_name()
            .with_context(|| format!("{} does not name a file", path.display()))?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| {
                format!(
                    "cannot write {}: creating temporary file {} failed",
                    path.display(),
                    tmp.display()
                )
            })?;
        let out = AtomicFile {
            path: path.to_path_buf(),
            target,
            tmp: Some(tmp),
            out: Some(BufWriter::new(file)),
        };
        if let (Some(m), Some(tmp)) = (&existing, &out.tmp) {
            // Best effort: the replacement keeps the old file's permissions.
            let _ = fs::set_permissions(tmp, m.permissions());
        }
        Ok(out)
    }

    /// The path being written, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush, sync and rename onto the target (in place: flush).
    pub fn commit(mut self) -> Result<()> {
        let path = self.path.clone();
        let out = self
            .out
            .take()
            .with_context(|| format!("{}: already committed", path.display()))?;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {} failed", path.display()))?;
        let Some(tmp) = self.tmp.clone() else {
            return Ok(());
        };
        file.sync_all()
            .with_context(|| format!("syncing {} failed", path.display()))?;
        drop(file);
        fs::rename(&tmp, &self.target).with_context(|| {
            format!(
                "renaming {} onto {} failed",
                tmp.display(),
                self.target.display()
            )
        })?;
        // Renamed: nothing left to clean up.
        self.tmp = None;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.as_mut() {
            Some(o) => o.write(buf),
            None => Err(std::io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.out = None;
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Write `bytes` to `path` through an [`AtomicFile`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)
        .with_context(|| format!("writing {} failed", path.display()))?;
    f.commit()
}

/// Write `path` through an [`AtomicFile`] with `write`, committing only when it succeeds
/// (its error gets the path as context).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut AtomicFile) -> Result<()>,
) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    write(&mut f).with_context(|| format!("writing {} failed", path.display()))?;
    f.commit()
}

/// The names of the entries of `dir`, sorted (decoded lossily): what a directory holds after a
/// write, for checking that it left exactly the files it should and no temporary ones.
pub fn sorted_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("metarim-fsutil-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = scratch("fail");
        let p = dir.join("out.txt");
        fs::write(&p, "old").unwrap();
        let e = write_atomic_with(&p, |f| {
            f.write_all(b"half of the new")?;
            bail!("generation failed")
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("out.txt"), "{e:#}");
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(sorted_names(&dir).unwrap(), ["out.txt"]);
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(sorted_names(&dir).unwrap(), ["out.txt"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn links_are_kept_and_devices_written_in_place() {
        let dir = scratch("links");
        let real = dir.join("real.txt");
        fs::write(&real, "old").unwrap();
        let link = dir.join("link.txt");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        let null = dir.join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        write_atomic(&null, b"gone").unwrap();
        assert!(fs::symlink_metadata(&null).unwrap().is_symlink());
        assert_eq!(
            sorted_names(&dir).unwrap(),
            ["link.txt", "null", "real.txt"]
        );
        let e = write_atomic(&dir, b"x").unwrap_err();
        assert!(format!("{e:#}").contains("is a directory"), "{e:#}");
        let _ = fs::remove_dir_all(&dir);
    }
}
