//! Suites on a Slurm cluster (`metarim experiment SUITE --slurm`): one array task per planned
//! run, and a report job that waits for the whole array.
//!
//! Nothing here schedules anything: Slurm does. This module writes two batch scripts into
//! `OUT/slurm/` and hands them to `sbatch`:
//!
//! - `array.sbatch`: `#SBATCH --array=0-(N-1)`, one task per run of [`super::plan`] (plan
//!   order), each running `metarim experiment SUITE --run-index $SLURM_ARRAY_TASK_ID` with the
//!   same suite, output directory, seeds and overrides. Every path is absolute (the binary is
//!   this one, [`std::env::current_exe`]), so tasks find everything on a shared filesystem
//!   from any node and any working directory.
//! - `report.sbatch`: `metarim experiment SUITE --report-only` with the same options, submitted
//!   with `--dependency=afterok:<array job>`, so it runs once every task has succeeded and
//!   writes `results.md`, `results.json` and the plots.
//!
//! Preemption and time limits: the tasks are `--requeue`able and ask for `SIGUSR1` two
//! minutes before their time limit (`--signal=B:USR1@120`; `B:` signals the batch shell, which
//! `exec`s metarim, so metarim gets it). On `SIGUSR1` or `SIGTERM` ([`StopSignals`]) the
//! trainer finishes its current update, saves a checkpoint and returns; the task then exits
//! with [`STOPPED_EXIT_CODE`]. After `SIGUSR1` (the time limit is near) it first asks Slurm to
//! requeue it (`scontrol requeue $SLURM_JOB_ID`); after `SIGTERM` (scancel, or preemption,
//! where Slurm requeues by itself) it does not. A requeued task resumes from the checkpoint,
//! bit-exactly (the trainer's guarantee), so results do not depend on how often a task was
//! interrupted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::{plan, ExperimentOptions, Suite};
use crate::fsutil::write_atomic;

/// Exit status of a `--run-index` task stopped by a signal after saving its checkpoint (75:
/// `EX_TEMPFAIL`, "try again later"): the run is not finished, and resumes when run again.
pub const STOPPED_EXIT_CODE: u8 = 75;

/// Directory of the scripts and the tasks' output files, inside the suite's output directory.
pub const SLURM_DIR: &str = "slurm";

/// File name of the job array's script in [`SLURM_DIR`].
pub const ARRAY_SCRIPT: &str = "array.sbatch";

/// File name of the report job's script in [`SLURM_DIR`].
pub const REPORT_SCRIPT: &str = "report.sbatch";

/// Seconds before the time limit at which a task is told to checkpoint and requeue itself.
pub const SIGNAL_LEAD_S: u32 = 120;

/// What to ask Slurm for, beyond one task per run.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// `--partition` (none: the cluster's default).
    pub partition: Option<String>,
    /// `--time` per task, in any format sbatch takes (none: the partition's default).
    pub time: Option<String>,
    /// `--cpus-per-task` (none: the threads per run).
    pub cpus_per_task: Option<usize>,
    /// `--gres` per task, e.g. `gpu:1` (none: no generic resources).
    pub gres: Option<String>,
    /// More `#SBATCH` options for both jobs, each as sbatch takes it (`--account=X`,
    /// `--mem=8G`, `--qos=Y`).
    pub extra: Vec<String>,
    /// Write and print the scripts, submit nothing.
    pub dry_run: bool,
}

/// What [`submit`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    /// Tasks in the array (the runs of the plan).
    pub tasks: usize,
    /// The array's script.
    pub array_script: PathBuf,
    /// The report job's script.
    pub report_script: PathBuf,
    /// The array's job id (`None` with `dry_run`).
    pub array_job: Option<String>,
    /// The report job's id (`None` with `dry_run`).
    pub report_job: Option<String>,
}

/// `s` quoted for a POSIX shell: as it is when it needs no quoting, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `metarim experiment` arguments (after the binary) that reproduce `opts` for a task or
/// the report job: the suite and output directory (absolute), the seeds (resolved, so a
/// change to the suite file's count after submission cannot reshape the array), the budget
/// scale, preset, every `--set` and the threads, then `extra` (flags with no field in
/// [`ExperimentOptions`], such as `--backend`).
pub fn forwarded_args(opts: &ExperimentOptions, seeds: usize, extra: &[String]) -> Vec<String> {
    let mut a = vec![
        "experiment".to_string(),
        opts.suite.display().to_string(),
        "--out".into(),
        opts.out.display().to_string(),
        "--seeds".into(),
        seeds.to_string(),
        "--budget-scale".into(),
        // `{:?}` prints an f64 so that it parses back to the same value.
        format!("{:?}", opts.overrides.budget_scale),
        "--threads".into(),
        opts.overrides.threads.to_string(),
    ];
    if let Some(p) = &opts.overrides.preset {
        a.extend(["--preset".into(), p.clone()]);
    }
    for (k, v) in &opts.overrides.set {
        a.extend(["--set".into(), format!("{k}={v}")]);
    }
    a.extend(extra.iter().cloned());
    a
}

/// An absolute, normalised form of `p` (relative to the working directory), which need not
/// exist yet.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("making {} absolute", p.display()))?;
    // `absolute` keeps `..`; resolve it through the existing part of the path.
    Ok(abs.canonicalize().unwrap_or(abs))
}

/// Refuse what a `#SBATCH` line or sbatch's filename patterns cannot carry.
fn check_sbatch_path(what: &str, p: &Path) -> Result<()> {
    let s = p.to_string_lossy();
    if s.chars()
        .any(|c| c.is_whitespace() || c == '%' || c == '\'' || c == '"')
    {
        bail!(
            "{what} {s:?} contains whitespace, a quote or '%', which #SBATCH lines and sbatch's \
             output-file patterns cannot hold; choose a --out without them"
        );
    }
    Ok(())
}

/// The two scripts for `opts` (whose suite and output directory must be absolute) with
/// `tasks` runs: the array's and the report job's. `binary` is the metarim to run and `args`
/// the arguments from [`forwarded_args`].
pub fn scripts(
    suite_name: &str,
    tasks: usize,
    out: &Path,
    binary: &Path,
    args: &[String],
    threads: usize,
    slurm: &SlurmOptions,
) -> Result<(String, String)> {
    if tasks == 0 {
        bail!("the suite plans no runs: nothing to submit");
    }
    check_sbatch_path("the output directory", out)?;
    let values = [&slurm.partition, &slurm.time, &slurm.gres];
    for v in values.into_iter().flatten().chain(&slurm.extra) {
        if v.contains(['\n', '\r']) {
            bail!("Slurm option {v:?} contains a line break: each must fit on one #SBATCH line");
        }
    }
    let logs = out.join(SLURM_DIR);
    let common = |job: &str, out_pattern: &str| {
        let mut s = String::from("#!/bin/bash\n");
        s.push_str(&format!("#SBATCH --job-name=metarim-{suite_name}-{job}\n"));
        s.push_str(&format!(
            "#SBATCH --output={}\n",
            logs.join(out_pattern).display()
        ));
        s.push_str("#SBATCH --ntasks=1\n");
        if let Some(p) = &slurm.partition {
            s.push_str(&format!("#SBATCH --partition={p}\n"));
        }
        if let Some(t) = &slurm.time {
            s.push_str(&format!("#SBATCH --time={t}\n"));
        }
        for e in &slurm.extra {
            s.push_str(&format!("#SBATCH {e}\n"));
        }
        s
    };
    let command = |extra: &[&str]| {
        let mut words = vec![shell_quote(&binary.display().to_string())];
        words.extend(args.iter().map(|a| shell_quote(a)));
        words.extend(extra.iter().map(|a| a.to_string()));
        words.join(" ")
    };
    let mut array = common("run", "run-%A_%a.out");
    array.push_str(&format!("#SBATCH --array=0-{}\n", tasks - 1));
    array.push_str(&format!(
        "#SBATCH --cpus-per-task={}\n",
        slurm.cpus_per_task.unwrap_or(threads).max(1)
    ));
    if let Some(g) = &slurm.gres {
        array.push_str(&format!("#SBATCH --gres={g}\n"));
    }
    array.push_str("#SBATCH --requeue\n");
    // Requeued tasks append to their output file instead of truncating it.
    array.push_str("#SBATCH --open-mode=append\n");
    array.push_str(&format!("#SBATCH --signal=B:USR1@{SIGNAL_LEAD_S}\n"));
    array.push_str(
        "# One task per planned run (plan order); `exec` so that metarim itself receives\n\
         # SIGUSR1/SIGTERM, checkpoints and (on SIGUSR1) requeues the task.\n",
    );
    array.push_str("echo \"metarim task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID on $(hostname), restart ${SLURM_RESTART_COUNT:-0}\"\n");
    array.push_str(&format!(
        "exec {}\n",
        command(&["--run-index", "\"$SLURM_ARRAY_TASK_ID\""])
    ));
    let mut report = common("report", "report-%j.out");
    report.push_str("#SBATCH --cpus-per-task=1\n");
    report.push_str(
        "# Submitted with --dependency=afterok:<array job>: runs once every run has finished.\n",
    );
    report.push_str(&format!("exec {}\n", command(&["--report-only"])));
    Ok((array, report))
}

/// Write the scripts for the suite `opts` describes into `OUT/slurm/` and, unless
/// `slurm.dry_run`, submit the array with `sbatch --parsable` and then the report job with
/// `--dependency=afterok:<array>`. `extra` as in [`forwarded_args`].
pub fn submit(
    opts: &ExperimentOptions,
    slurm: &SlurmOptions,
    extra: &[String],
) -> Result<Submission> {
    let suite = Suite::load(&opts.suite, &opts.overrides)?;
    if opts.seeds == Some(0) {
        bail!("--seeds must be > 0");
    }
    let seeds = opts.seeds.unwrap_or(suite.seeds);
    let abs = ExperimentOptions {
        suite: absolute(&opts.suite)?,
        out: absolute(&opts.out)?,
        ..opts.clone()
    };
    check_sbatch_path("the suite file", &abs.suite)?;
    let tasks = plan(&suite, seeds, &abs.out).len();
    let binary = std::env::current_exe().context("finding the metarim binary to submit")?;
    let args = forwarded_args(&abs, seeds, extra);
    let (array, report) = scripts(
        &suite.name,
        tasks,
        &abs.out,
        &binary,
        &args,
        opts.overrides.threads,
        slurm,
    )?;
    let dir = abs.out.join(SLURM_DIR);
    std::fs::create_dir_all(abs.out.join("runs"))
        .and_then(|()| std::fs::create_dir_all(&dir))
        .with_context(|| format!("creating {}", dir.display()))?;
    let array_script = dir.join(ARRAY_SCRIPT);
    let report_script = dir.join(REPORT_SCRIPT);
    write_atomic(&array_script, array.as_bytes())?;
    write_atomic(&report_script, report.as_bytes())?;
    let mut sub = Submission {
        tasks,
        array_script,
        report_script,
        array_job: None,
        report_job: None,
    };
    if slurm.dry_run {
        return Ok(sub);
    }
    let array_job = sbatch(&[], &sub.array_script)?;
    let dependency = format!("--dependency=afterok:{array_job}");
    let report_job = sbatch(&[&dependency], &sub.report_script).with_context(|| {
        format!(
            "the array was submitted as job {array_job}, but not its report job; once it has \
             finished, write the report with `metarim experiment ... --report-only`, or cancel \
             it with `scancel {array_job}`"
        )
    })?;
    sub.array_job = Some(array_job);
    sub.report_job = Some(report_job);
    Ok(sub)
}

/// `sbatch --parsable ARGS SCRIPT`, returning the job id (what `--parsable` prints before an
/// optional `;cluster`).
fn sbatch(args: &[&str], script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "sbatch is not on PATH: submit from a Slurm login node (or start a local \
                     Slurm with scripts/slurm-local.sh up); --dry-run writes the scripts \
                     without submitting"
                )
            } else {
                anyhow::Error::new(e).context("running sbatch")
            }
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            script.display(),
            out.status,
            stderr.trim()
        );
    }
    let id = stdout.trim().split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!(
            "sbatch {} printed no job id (stdout {:?}, stderr {:?})",
            script.display(),
            stdout.trim(),
            stderr.trim()
        );
    }
    Ok(id.to_string())
}

/// The flags raised by `SIGTERM` and `SIGUSR1` once [`StopSignals::install`] has run: training
/// checks [`StopSignals::stop`] after every update ([`crate::train::run::RunOptions::stop`]).
#[derive(Clone, Debug)]
pub struct StopSignals {
    /// Raised by either signal.
    pub stop: Arc<AtomicBool>,
    /// Raised by `SIGUSR1` (Slurm's warning before the time limit).
    pub usr1: Arc<AtomicBool>,
}

impl StopSignals {
    /// Replace the default action of `SIGTERM` and `SIGUSR1` (terminate) with raising the
    /// flags. Only for processes that check them: a process that never does would ignore
    /// those signals.
    pub fn install() -> Result<StopSignals> {
        StopSignals::install_on(Arc::new(AtomicBool::new(false)))
    }

    /// [`Self::install`] raising `stop`.
    fn install_on(stop: Arc<AtomicBool>) -> Result<StopSignals> {
        use signal_hook::consts::{SIGTERM, SIGUSR1};
        let s = StopSignals {
            stop,
            usr1: Arc::new(AtomicBool::new(false)),
        };
        for sig in [SIGTERM, SIGUSR1] {
            signal_hook::flag::register(sig, Arc::clone(&s.stop))
                .with_context(|| format!("installing a handler for signal {sig}"))?;
        }
        signal_hook::flag::register(SIGUSR1, Arc::clone(&s.usr1))
            .context("installing a handler for SIGUSR1")?;
        Ok(s)
    }

    /// For commands run by hand (`metarim train`, `metarim experiment`): [`Self::install`],
    /// and `SIGINT` (Ctrl-C) raises the stop flag too; a second `SIGTERM` or `SIGINT` while
    /// the flag is up terminates at once (for a stop that takes too long).
    pub fn install_with_interrupt() -> Result<StopSignals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let stop = Arc::new(AtomicBool::new(false));
        // The shutdown goes first: it acts only once the flag is already up.
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
                .with_context(|| format!("installing a handler for signal {sig}"))?;
        }
        let s = StopSignals::install_on(stop)?;
        signal_hook::flag::register(SIGINT, Arc::clone(&s.stop))
            .context("installing a handler for SIGINT")?;
        Ok(s)
    }

    /// Whether `SIGUSR1` has arrived.
    pub fn got_usr1(&self) -> bool {
        self.usr1.load(Ordering::SeqCst)
    }
}

/// Ask Slurm to requeue the job this process runs in (`scontrol requeue $SLURM_JOB_ID`).
/// Returns the job id, or `None` outside a Slurm job.
pub fn requeue_self() -> Result<Option<String>> {
    let Some(job) = std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()) else {
        return Ok(None);
    };
    let out = Command::new("scontrol")
        .args(["requeue", &job])
        .output()
        .context("running scontrol requeue")?;
    if !out.status.success() {
        bail!(
            "scontrol requeue {job} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Some(job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(shell_quote("procs=8"), "procs=8");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn the_array_has_a_task_per_run_and_the_report_waits_for_it() {
        let slurm = SlurmOptions {
            partition: Some("gpu".into()),
            time: Some("04:00:00".into()),
            gres: Some("gpu:1".into()),
            extra: vec!["--account=rl".into()],
            ..SlurmOptions::default()
        };
        let args = vec!["experiment".to_string(), "/s/x.toml".into()];
        let (array, report) = scripts(
            "x",
            6,
            Path::new("/o"),
            Path::new("/bin/metarim"),
            &args,
            2,
            &slurm,
        )
        .unwrap();
        for line in [
            "#SBATCH --array=0-5",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:USR1@120",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=04:00:00",
            "#SBATCH --account=rl",
            "#SBATCH --output=/o/slurm/run-%A_%a.out",
            "exec /bin/metarim experiment /s/x.toml --run-index \"$SLURM_ARRAY_TASK_ID\"",
        ] {
            assert!(array.lines().any(|l| l == line), "{line:?} not in\n{array}");
        }
        assert!(report.contains("exec /bin/metarim experiment /s/x.toml --report-only"));
        assert!(!report.contains("--array") && !report.contains("--gres"));
        assert!(scripts("x", 0, Path::new("/o"), Path::new("/m"), &args, 1, &slurm).is_err());
        let e = scripts(
            "x",
            1,
            Path::new("/my out"),
            Path::new("/m"),
            &args,
            1,
            &slurm,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("whitespace"), "{e}");
    }
}
