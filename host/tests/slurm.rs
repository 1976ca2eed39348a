//! `metarim experiment --slurm` against a real Slurm (`bash scripts/slurm-local.sh up`): a
//! small suite (Tiny preset, 2 modes x 2 seeds) submitted as a job array plus a report job
//! gives the same `results.md` tables, `results.json` rows, run results and checkpoints, byte
//! for byte, as a local `metarim experiment` of the same suite; and still does when one task is
//! cancelled mid-run (it checkpoints on SIGTERM) and requeued. The `--dry-run` scripts pass
//! `sbatch --test-only`. Without a Slurm to submit to (no `sbatch` on PATH, or no controller
//! answering `scontrol ping`) the test is skipped, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The suite, its training budget (`FRAMES`) filled in by [`suite_frames`].
const SUITE: &str = r#"name = "slurm-smoke"
description = "metarim experiment --slurm against a local run"
metric = "sample-efficiency"
seeds = 2
threshold = 0.9
min_frames = 0

[base]
preset = "Tiny"
frames = FRAMES
procs = 6
frames_per_proc = 20
recurrence = 10
batch_size = 40
save_interval = 1

[[matrix]]
levels = ["BabyAI-GoToLocalS5N2-v0"]
modes = ["meta-rim", "joint"]

[eval]
episodes = 10
seed = 1
"#;

/// Frames per run: enough that a task is still training when it is interrupted, which takes a
/// few seconds after it starts. The debug build `.ci/run` tests with trains 19,200 frames of
/// Tiny in several seconds; an optimised build in about one, so it gets ten times as many.
fn suite_frames() -> u64 {
    if cfg!(debug_assertions) {
        19_200
    } else {
        192_000
    }
}

/// How long the array and the report job may take, all told.
const TIMEOUT: Duration = Duration::from_secs(900);

fn metarim(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args)
        .output()
        .expect("running metarim");
    assert!(
        out.status.success(),
        "metarim {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a Slurm client command; its stdout, or a panic with its stderr.
fn slurm(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `scancel ARGS`, given five seconds. slurmctld (22.05) may deliver a signal to an array task
/// and still answer "Job can not be altered now, try again later", after which scancel retries
/// for minutes; whether the signal arrived is checked in the task's output instead.
fn signal(args: &[&str]) {
    let mut child = Command::new("scancel")
        .args(args)
        .spawn()
        .expect("running scancel");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if child.try_wait().expect("waiting for scancel").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("slurm test: scancel {args:?} still retrying after 5 s; stopped it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Why there is no Slurm to submit to, if there is none: `sbatch` missing, or installed with no
/// controller running (a machine with the client packages but without `scripts/slurm-local.sh
/// up`), which would otherwise fail the test at its first `sbatch`.
fn no_slurm() -> Option<&'static str> {
    if Command::new("sbatch").arg("--version").output().is_err() {
        return Some("sbatch is not on PATH");
    }
    match Command::new("scontrol").arg("ping").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("no Slurm controller answers `scontrol ping`"),
    }
}

/// The states squeue shows for `jobs` (one per line; empty once they are gone or finished).
fn states(jobs: &str) -> Vec<String> {
    // squeue fails on job ids the controller has forgotten: nothing is queued then.
    let out = Command::new("squeue")
        .args(["-h", "-j", jobs, "-t", "all", "-o", "%i %T"])
        .output()
        .expect("running squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Everything Slurm wrote for the suite's jobs, for a failure message.
fn slurm_logs(out: &Path) -> String {
    let mut s = String::new();
    if let Ok(rd) = std::fs::read_dir(out.join("slurm")) {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "out"))
        {
            s.push_str(&format!(
                "--- {}\n{}\n",
                p.display(),
                std::fs::read_to_string(p).unwrap_or_default()
            ));
        }
    }
    s
}

/// Lines of `train.jsonl` in `run` so far.
fn logged_updates(run: &Path) -> usize {
    std::fs::read_to_string(run.join("train.jsonl")).map_or(0, |t| t.lines().count())
}

/// `results.md` without its header (command, commit, wall time, hardware, parallelism: the
/// lines before the first table's heading).
fn tables(md: &Path) -> String {
    let text = std::fs::read_to_string(md).unwrap_or_else(|e| panic!("{}: {e}", md.display()));
    let start = text.find("\n## ").expect("results.md has a table heading");
    text[start..].to_string()
}

/// `results.json` without its header and, per run, its directory and training time.
fn rows(json: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(json).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let obj = v.as_object_mut().expect("results.json is an object");
    obj.remove("header");
    for run in obj
        .get_mut("runs")
        .and_then(|r| r.as_array_mut())
        .expect("results.json has runs")
    {
        let run = run.as_object_mut().expect("a run is an object");
        run.remove("dir");
        run.remove("training_seconds");
    }
    v
}

#[test]
fn a_suite_on_slurm_matches_the_same_suite_run_locally() {
    if let Some(why) = no_slurm() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but {why}: run `bash scripts/slurm-local.sh up` first");
        }
        eprintln!("skipped: no Slurm, {why} (run scripts/slurm-local.sh up)");
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("metarim-slurm-")
        .tempdir()
        .unwrap();
    let suite = tmp.path().join("suite.toml");
    std::fs::write(&suite, SUITE.replace("FRAMES", &suite_frames().to_string())).unwrap();
    let suite_arg = suite.to_str().unwrap();
    let dir = |name: &str| tmp.path().join(name).display().to_string();
    let common = ["--threads", "1", "--progress-every", "1"];

    // --dry-run: the scripts, printed and written, and sbatch accepts them.
    let dry = dir("dry");
    let mut args = vec![
        "experiment",
        suite_arg,
        "--out",
        &dry,
        "--slurm",
        "--dry-run",
    ];
    args.extend(["--time", "10:00", "--partition", "debug"]);
    args.extend(common);
    let printed = String::from_utf8_lossy(&metarim(&args).stdout).into_owned();
    for want in [
        "#SBATCH --array=0-3",
        "--run-index \"$SLURM_ARRAY_TASK_ID\"",
        "--report-only",
    ] {
        assert!(
            printed.contains(want),
            "{want:?} not in the dry run:\n{printed}"
        );
    }
    for script in ["array.sbatch", "report.sbatch"] {
        let path = Path::new(&dry).join("slurm").join(script);
        slurm("sbatch", &["--test-only", path.to_str().unwrap()]);
    }
    assert!(!Path::new(&dry)
        .join("runs")
        .join("GoToLocalS5N2-joint-seed0")
        .exists());

    // Submit, then cancel task 0 part way through its training and requeue it.
    let on_slurm = dir("slurm");
    let mut args = vec!["experiment", suite_arg, "--out", &on_slurm, "--slurm"];
    args.extend(["--time", "30:00"]);
    args.extend(common);
    let submitted = String::from_utf8_lossy(&metarim(&args).stdout).into_owned();
    let line = submitted
        .lines()
        .find_map(|l| l.strip_prefix("slurm: array="))
        .unwrap_or_else(|| panic!("no job ids in:\n{submitted}"));
    let (array, rest) = line.split_once(" report=").unwrap();
    let report = rest.split_whitespace().next().unwrap();
    let (array, report) = (array.to_string(), report.to_string());
    let both = format!("{array},{report}");
    eprintln!("slurm test: array job {array}, report job {report}");

    // Two tasks interrupted part way through training, the two ways Slurm interrupts one:
    // - task 0 gets SIGUSR1, as `--signal=B:USR1@120` sends it before the time limit: it
    //   checkpoints and requeues itself (the report job's afterok dependency stays valid);
    // - task 1 is cancelled (SIGTERM: it checkpoints) and then requeued by hand, after which
    //   the report job's dependency on the whole array, marked never satisfied by the
    //   cancellation, is reset to the tasks themselves (docs/SCALING.md).
    let runs = Path::new(&on_slurm).join("runs");
    let run_dirs = [
        runs.join("GoToLocalS5N2-meta-rim-seed0"),
        runs.join("GoToLocalS5N2-joint-seed0"),
    ];
    let (task0, task1) = (format!("{array}_0"), format!("{array}_1"));
    let t0 = Instant::now();
    // Signalled only once running for two seconds (slurmctld refuses to signal a job it is
    // still launching: "Job can not be altered now") and some updates into training.
    let mut running_since = None;
    loop {
        let st = states(&format!("{task0},{task1}"));
        let running = st.iter().filter(|s| s.ends_with(" RUNNING")).count() == 2;
        if !running {
            running_since = None;
        } else if running_since.is_none() {
            running_since = Some(Instant::now());
        }
        if running_since.is_some_and(|t: Instant| t.elapsed() > Duration::from_secs(2))
            && run_dirs.iter().all(|d| logged_updates(d) >= 5)
        {
            break;
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "tasks 0 and 1 logged no updates: {st:?}\n{}",
            slurm_logs(Path::new(&on_slurm))
        );
        // A task that finished before it could be interrupted cannot be caught any more: say so
        // at once instead of waiting out the timeout.
        assert!(
            !st.iter().any(|s| s.ends_with(" COMPLETED")),
            "a task finished before it could be interrupted ({st:?}): its training ({} frames, \
             `suite_frames`) is too quick to catch on this machine",
            suite_frames()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Task 1 first: a plain cancel returns at once, while scancel --signal on an array task
    // may keep retrying for seconds after delivering the signal (see `signal`), long enough
    // for a run of `suite_frames` to finish before it could be cancelled.
    signal(&[&task1]);
    signal(&["--batch", "--signal=USR1", &task0]);
    let t0 = Instant::now();
    loop {
        let st = states(&format!("{task0},{task1}"));
        if !st
            .iter()
            .any(|s| s.contains("RUNNING") || s.contains("COMPLETING"))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "still running: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = String::from_utf8_lossy(
        &metarim(&["experiment", suite_arg, "--out", &on_slurm, "--status"]).stdout,
    )
    .into_owned();
    slurm("scontrol", &["requeue", &task1]);
    slurm(
        "scontrol",
        &[
            "update",
            &format!("JobId={report}"),
            &format!("Dependency=afterok:{array}_0:{array}_1:{array}_2:{array}_3"),
        ],
    );
    // A requeued job waits about two minutes before it may start again (Slurm's default
    // begin-time delay); let them start now.
    for task in [&task0, &task1] {
        slurm(
            "scontrol",
            &["update", &format!("JobId={task}"), "StartTime=now"],
        );
    }

    // Meanwhile, the same suite here.
    let local = dir("local");
    let mut args = vec!["experiment", suite_arg, "--out", &local, "--quiet"];
    args.extend(common);
    metarim(&args);

    let t0 = Instant::now();
    loop {
        let st = states(&both);
        if st.iter().all(|s| {
            ![
                "PENDING",
                "RUNNING",
                "COMPLETING",
                "REQUEUED",
                "CONFIGURING",
            ]
            .iter()
            .any(|w| s.contains(w))
        }) {
            break;
        }
        if st
            .iter()
            .any(|s| s.contains(&report) && s.contains("PENDING"))
            && st
                .iter()
                .all(|s| s.contains(&report) || s.contains("COMPLETED"))
            && t0.elapsed() > Duration::from_secs(120)
        {
            panic!(
                "the report job waits although every task completed: {st:?}\n{}",
                slurm_logs(Path::new(&on_slurm))
            );
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "the jobs did not finish in {TIMEOUT:?}: {st:?}\n{}",
            slurm_logs(Path::new(&on_slurm))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = slurm_logs(Path::new(&on_slurm));
    let on_slurm = PathBuf::from(on_slurm);
    let local = PathBuf::from(local);
    assert!(
        on_slurm.join("results.md").is_file(),
        "the report job wrote no results.md: {:?}\n{logs}",
        states(&both)
    );
    // Both tasks were caught part way and stopped cleanly: they saved a checkpoint and said
    // so, --status saw them stopped (not failed), and they ran again.
    for (task, name) in [
        (0, "GoToLocalS5N2-meta-rim-seed0"),
        (1, "GoToLocalS5N2-joint-seed0"),
    ] {
        let log = std::fs::read_to_string(
            on_slurm
                .join("slurm")
                .join(format!("run-{array}_{task}.out")),
        )
        .unwrap_or_default();
        assert!(
            log.contains("stopped by signal") && log.contains("restart 1"),
            "task {task} was not stopped mid-run and run again:\n{logs}"
        );
        let row = status
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_default();
        assert!(row.contains("stopped"), "status of {name}: {row}\n{status}");
    }
    assert!(
        logs.contains("requeued Slurm job"),
        "task 0 did not requeue itself:\n{logs}"
    );

    assert_eq!(
        tables(&local.join("results.md")),
        tables(&on_slurm.join("results.md"))
    );
    assert_eq!(
        rows(&local.join("results.json")),
        rows(&on_slurm.join("results.json"))
    );
    let mut runs: Vec<PathBuf> = std::fs::read_dir(local.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 4);
    for run in &runs {
        let name = run.file_name().unwrap();
        for file in ["checkpoint.safetensors", "result.json"] {
            let a = std::fs::read(run.join(file)).unwrap();
            let b = std::fs::read(on_slurm.join("runs").join(name).join(file))
                .unwrap_or_else(|e| panic!("{name:?}/{file} on slurm: {e}\n{logs}"));
            assert!(
                a == b,
                "{name:?}/{file} differs between the local and the Slurm run"
            );
        }
    }
    let status = String::from_utf8_lossy(
        &metarim(&[
            "experiment",
            suite_arg,
            "--out",
            on_slurm.to_str().unwrap(),
            "--status",
        ])
        .stdout,
    )
    .into_owned();
    assert!(status.contains("4 runs: done 4,"), "{status}");
    eprintln!(
        "slurm test: passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
