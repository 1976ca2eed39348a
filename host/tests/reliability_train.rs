//! Reliability of training runs against careless or hostile input (issue "Reliability"): no
//! checkpoint with a NaN is written or loaded, the checkpoint CRC covers the metadata, two
//! processes never train into one directory, a resumed run keeps every readable log line,
//! stale temporary files are cleaned, and out-of-range values fail before any file is written.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_mentions, opts, tiny_config, tiny_train_args, tmpdir, Scratch};
use host::train::checkpoint::{self, FORMAT_VERSION};
use host::train::run::{train, RunOptions, RunSummary, CHECKPOINT_FILE};
use host::train::TrainConfig;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

fn tiny(frames: u64) -> TrainConfig {
    TrainConfig {
        threads: 1,
        ..tiny_config("meta-rim", frames)
    }
}

/// Trains `cfg` into `dir` and stops after `updates` updates, leaving a run to resume.
fn train_stopping_after(cfg: &TrainConfig, dir: &Path, updates: u64) {
    let stop = RunOptions {
        stop_after_updates: Some(updates),
        ..opts(dir)
    };
    train(cfg, &stop).unwrap();
}

/// A fresh tiny run of 720 frames in `tmpdir(name)`, stopped after `updates` updates: the
/// starting point of the tests that damage a run's logs and then resume it.
fn stopped_run(name: &str, updates: u64) -> (Scratch, TrainConfig) {
    let dir = tmpdir(name);
    let cfg = tiny(720);
    train_stopping_after(&cfg, &dir, updates);
    (dir, cfg)
}

/// The value of `key` in each line of the JSONL log `text`, in line order.
fn jsonl_field(text: &str, key: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[key].take())
        .collect()
}

/// Resumes the run in `dir` with `cfg`.
fn resume(cfg: &TrainConfig, dir: &Path) -> anyhow::Result<RunSummary> {
    let again = RunOptions {
        resume: true,
        ..opts(dir)
    };
    train(cfg, &again)
}

/// A trained checkpoint's bytes (2 updates of the tiny config).
fn trained(name: &str) -> (Scratch, Vec<u8>) {
    let dir = tmpdir(name);
    train(&tiny(240), &opts(&dir)).unwrap();
    let bytes = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    (dir, bytes)
}

fn metarim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `metarim train` arguments of a tiny run with a budget it never reaches in a test (2M
/// frames, one thread), then `extra`: a process to kill or to compete with.
fn long_run_args(dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--threads", "1"];
    a.extend_from_slice(extra);
    tiny_train_args(dir, 2_000_000, &a)
}

/// `metarim ARGS` started in the background, its output discarded.
fn spawn_quiet(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Poll `done` every few milliseconds until it holds or `limit` has passed (the caller's
/// assertions then say what did not happen).
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Rebuild checkpoint `bytes` with tensor `name`'s first element replaced by `value` and a
/// CRC that matches (format 2: tensor bytes in name order, then the metadata JSON with
/// `crc32 = 0`): what a writer without the finiteness check would have produced.
fn with_value(bytes: &[u8], name: &str, value: f32) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let mut meta: checkpoint::CheckpointMeta =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["metarim"]).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            (n.clone(), t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    let (_, _, d) = data.iter_mut().find(|(n, _, _)| n == name).unwrap();
    d[..4].copy_from_slice(&value.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    for (_, _, d) in &data {
        crc.update(d);
    }
    meta.crc32 = 0;
    crc.update(serde_json::to_string(&meta).unwrap().as_bytes());
    meta.crc32 = crc.finalize();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let info = [("metarim".to_string(), serde_json::to_string(&meta).unwrap())].into();
    safetensors::serialize(views, Some(info)).unwrap()
}

#[test]
fn a_diverging_config_is_refused_before_anything_is_written() {
    let root = tmpdir("diverging");
    for (set, field) in [
        ("adam_beta2=1", "adam_beta2"),
        ("adam_beta1=1", "adam_beta1"),
        ("lr=1e30", "lr"),
        ("fast_lr=nan", "fast_lr"),
        ("adam_eps=inf", "adam_eps"),
    ] {
        let out = root.join(field);
        let o = metarim(&[
            "train",
            "--frames",
            "2560",
            "--threads",
            "1",
            "--quiet",
            "--set",
            "procs=8",
            "--set",
            "batch_size=160",
            "--set",
            set,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{set} was accepted");
        assert!(stderr(&o).contains(field), "{set}: {}", stderr(&o));
        assert!(!out.exists(), "{set}: the output folder was created");
    }
}

#[test]
fn checkpoints_with_non_finite_values_are_never_written_nor_loaded() {
    let (dir, good) = trained("nan");
    let ck = checkpoint::from_bytes(&good).unwrap();
    // Writing: the serialiser refuses, naming the tensor.
    let mut model = ck.model.clone();
    model.params.slow[3] = f32::NAN;
    let e = format!(
        "{:#}",
        checkpoint::to_bytes_checkpoint(&ck.meta, &model, &ck.optim, &ck.env_states, 6)
            .unwrap_err()
    );
    assert_mentions(&e, &["non-finite", "slow."]);
    let mut optim = ck.optim.clone();
    optim.v.fast[0] = f32::INFINITY;
    let e = format!(
        "{:#}",
        checkpoint::to_bytes_checkpoint(&ck.meta, &ck.model, &optim, &ck.env_states, 6)
            .unwrap_err()
    );
    assert!(e.contains("optim.v.fast"), "{e}");
    // Loading: a checkpoint holding a NaN (with a matching CRC) is an error naming the tensor,
    // in the library and in every command that reads checkpoints.
    let st = SafeTensors::deserialize(&good).unwrap();
    let victim = st
        .names()
        .into_iter()
        .find(|n| n.starts_with("fast."))
        .unwrap()
        .to_string();
    let bad = with_value(&good, &victim, f32::NAN);
    let e = format!("{:#}", checkpoint::from_bytes(&bad).unwrap_err());
    assert_mentions(&e, &[&victim, "non-finite"]);
    let path = dir.join("nan.safetensors");
    std::fs::write(&path, &bad).unwrap();
    let p = path.to_str().unwrap();
    let exported = dir.join("model.bin");
    for args in [
        vec!["eval", "--checkpoint", p, "--episodes", "2"],
        vec!["play", "--checkpoint", p, "--gif", "/dev/null"],
        vec![
            "export",
            "--checkpoint",
            p,
            "--out",
            exported.to_str().unwrap(),
        ],
        vec![
            "adapt",
            "--checkpoint",
            p,
            "--level",
            "BabyAI-GoToLocalS5N2-v0",
            "--episodes",
            "2",
        ],
    ] {
        let o = metarim(&args);
        assert!(!o.status.success(), "{} accepted a NaN checkpoint", args[0]);
        assert!(stderr(&o).contains(&victim), "{}: {}", args[0], stderr(&o));
    }
    // Resuming from it.
    std::fs::write(dir.join(CHECKPOINT_FILE), &bad).unwrap();
    let e = format!("{:#}", resume(&tiny(480), &dir).unwrap_err());
    assert!(e.contains(&victim), "{e}");
    // The same bytes with a finite value load (the rebuild itself is faithful).
    assert!(checkpoint::from_bytes(&with_value(&good, &victim, 0.25)).is_ok());
}

#[test]
fn the_crc_covers_the_metadata() {
    let (_, good) = trained("meta-crc");
    assert_eq!(
        checkpoint::from_bytes(&good).unwrap().meta.format_version,
        FORMAT_VERSION
    );
    // Change one digit of an env's episode seed (the metadata is JSON inside the header's
    // JSON, so the key is followed by an escaped quote): still valid, another seed.
    let key = b"episode_seed";
    let at = good.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let at = at + good[at..].iter().position(u8::is_ascii_digit).unwrap();
    let last = at + good[at..].iter().position(|c| !c.is_ascii_digit()).unwrap() - 1;
    let mut b = good.clone();
    b[last] ^= 1; // one bit: '0' <-> '1', ..., '8' <-> '9'
    assert!(b[last].is_ascii_digit());
    let e = format!("{:#}", checkpoint::from_bytes(&b).unwrap_err());
    assert_mentions(&e, &["CRC32", "metadata"]);
}

#[test]
fn counters_that_would_wrap_are_refused_even_with_a_good_crc() {
    let (_, good) = trained("counters");
    let ck = checkpoint::from_bytes(&good).unwrap();
    type Edit = fn(&mut checkpoint::CheckpointMeta);
    let edits: [(&str, Edit); 4] = [
        ("updates", |m| m.updates = u64::MAX),
        ("frames", |m| m.frames += 1),
        ("adam_fast_t", |m| m.adam_fast_t = u64::MAX),
        ("adam_slow_t", |m| m.adam_slow_t = u64::MAX),
    ];
    for (what, edit) in edits {
        let mut meta = ck.meta.clone();
        edit(&mut meta);
        let bytes = checkpoint::to_bytes_checkpoint(&meta, &ck.model, &ck.optim, &ck.env_states, 6)
            .unwrap();
        let e = format!("{:#}", checkpoint::from_bytes(&bytes).unwrap_err());
        assert!(
            e.contains("inconsistent") && e.contains(what),
            "{what}: {e}"
        );
    }
}

#[test]
fn two_processes_never_train_into_one_directory() {
    let dir = tmpdir("lock");
    let args = |extra: &[&str]| long_run_args(&dir, extra);
    let mut first = spawn_quiet(&args(&[]));
    wait_until(Duration::from_secs(120), || {
        dir.join(CHECKPOINT_FILE).exists()
    });
    for extra in [&[][..], &["--resume"][..]] {
        let o = Command::new(env!("CARGO_BIN_EXE_metarim"))
            .args(args(extra))
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(!o.status.success(), "a second run {extra:?} was let in");
        assert_mentions(
            &e,
            &["in use by another metarim process", &first.id().to_string()],
        );
    }
    first.kill().unwrap(); // SIGKILL: the lock goes with the process
    let _ = first.wait();
    // The next run takes over, reporting that the previous one did not exit cleanly.
    let o = Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args(&["--resume", "--set", "frames=0"]))
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("without releasing its lock"), "{e}");
}

/// Ctrl-C (`SIGINT`) or `SIGTERM` stops `metarim train` cleanly: a checkpoint after the current
/// update, the lock released, exit status 75, and `--resume` goes on from there.
#[test]
fn a_signal_stops_train_with_a_checkpoint_and_resume_goes_on() {
    for sig in ["-INT", "-TERM"] {
        let dir = tmpdir(&format!("signal{sig}"));
        let first = Command::new(env!("CARGO_BIN_EXE_metarim"))
            .args(long_run_args(&dir, &[]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signal only once training is under way (its first checkpoint saved).
        wait_until(Duration::from_secs(120), || {
            dir.join(CHECKPOINT_FILE).exists()
        });
        let killed = Command::new("kill")
            .args([sig, &first.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let o = first.wait_with_output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(75), "{sig}: {e}");
        assert!(e.contains("stopped by signal at "), "{sig}: {e}");
        let ck = checkpoint::load(&dir.join(CHECKPOINT_FILE)).unwrap();
        assert!(ck.meta.frames > 0 && ck.meta.frames < 2_000_000, "{sig}");
        let o = Command::new(env!("CARGO_BIN_EXE_metarim"))
            .args(long_run_args(&dir, &["--resume", "--set", "frames=0"]))
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(o.status.success(), "{sig}: {e}");
        assert!(!e.contains("without releasing its lock"), "{sig}: {e}");
    }
}

#[test]
fn resume_keeps_every_readable_log_line_and_sets_bad_ones_aside() {
    let (dir, cfg) = stopped_run("log", 4);
    let jsonl = dir.join("train.jsonl");
    let csv = dir.join("train.csv");
    // One invalid UTF-8 byte in the second line of each log.
    let mut damaged = Vec::new();
    for p in [&jsonl, &csv] {
        let mut b = std::fs::read(p).unwrap();
        let second_line = b.iter().position(|c| *c == b'\n').unwrap() + 1;
        b.insert(second_line + 3, 0xff);
        let end = second_line + b[second_line..].iter().position(|c| *c == b'\n').unwrap();
        damaged.push(b[second_line..=end].to_vec());
        std::fs::write(p, b).unwrap();
    }
    resume(&cfg, &dir).unwrap();
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let updates: Vec<u64> = jsonl_field(&text, "update")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // Updates 1..=6, less the one whose line was damaged (update 2), which is set aside.
    assert_eq!(updates, vec![1, 3, 4, 5, 6]);
    // The run's clock goes on across the resume: wall_s never goes back.
    let walls: Vec<f64> = jsonl_field(&text, "wall_s")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        walls.windows(2).all(|w| w[1] > w[0]),
        "wall_s not increasing across the resume: {walls:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("train.jsonl.rejected")).unwrap(),
        damaged[0]
    );
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(csv_text.starts_with("update,frames"));
    assert_eq!(csv_text.lines().count(), 1 + 5, "{csv_text}");
    // The CSV's second line is its first update (the header comes first).
    assert_eq!(
        std::fs::read(dir.join("train.csv.rejected")).unwrap(),
        damaged[1]
    );
}

#[test]
fn stale_temporary_files_are_removed_on_the_next_start() {
    let dir = tmpdir("tmpfiles");
    // 4194304 is above Linux's largest pid: no live process owns these.
    let stale = [
        dir.join(".checkpoint.safetensors.tmp-4194304"),
        dir.join(".train.jsonl.tmp-4194304"),
    ];
    for p in &stale {
        std::fs::write(p, vec![0u8; 1 << 16]).unwrap();
    }
    train(&tiny(120), &opts(&dir)).unwrap();
    for p in &stale {
        assert!(!p.exists(), "{} is still there", p.display());
    }
}

#[test]
fn values_out_of_range_fail_before_any_file_is_written() {
    let root = tmpdir("ranges");
    let out = root.join("run");
    let out_arg = out.to_str().unwrap();
    // `train` with these arguments must fail naming every one of the words, and write nothing.
    let refused = |args: &[&str], words: &[&str]| {
        let o = metarim(&[&["train"], args, &["--out", out_arg]].concat());
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(words.iter().all(|w| e.contains(w)), "{args:?}: {e}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    };
    refused(
        &["--seed", "9223372036854775808", "--set", "frames=100"],
        &["--seed", "9223372036854775807"],
    );
    refused(
        &["--set", "seed=18446744073709551615"],
        &["seed", "out of range"],
    );
    // A config far beyond any machine's memory.
    refused(
        &[
            "--set",
            "procs=65536",
            "--set",
            "frames_per_proc=65520",
            "--set",
            "recurrence=20",
        ],
        &["memory", "procs"],
    );
    // Upper bounds on the per-update work.
    for set in [
        "procs=100000",
        "inner_steps=100000",
        "frames_per_proc=10000000",
    ] {
        let field = set.split('=').next().unwrap();
        refused(&["--set", set], &[field, "at most"]);
    }
}

#[test]
fn an_update_larger_than_the_frame_budget_is_announced() {
    let dir = tmpdir("budget");
    let o = metarim(&[
        "train",
        "--frames",
        "100",
        "--threads",
        "1",
        "--quiet",
        "--level",
        "BabyAI-GoToLocalS5N2-v0",
        "--set",
        "procs=8",
        "--set",
        "batch_size=160",
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert_mentions(&e, &["one update collects 320 frames", "budget of 100"]);
}

/// A run killed with SIGKILL mid-training and resumed: `wall_s` never goes back, and the
/// TensorBoard event file holds every update exactly once (the steps are the log's frame
/// counts, in order), with the same scalars as train.jsonl (as f32) and train.csv (to the
/// CSV's printed precision), read back with an independent decoder of the record format.
#[test]
fn tensorboard_events_survive_kill_and_resume_without_duplicates_or_gaps() {
    use host::tensorboard::{event_files, read_events, FILE_VERSION};
    let dir = tmpdir("tb-kill");
    let args = |extra: &[&str]| long_run_args(&dir, extra);
    let mut first = spawn_quiet(&args(&[]));
    let jsonl = dir.join("train.jsonl");
    let lines_of = || {
        std::fs::read_to_string(&jsonl)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(300), || lines_of() >= 5);
    first.kill().unwrap();
    let _ = first.wait();
    let before = lines_of();
    assert!(before >= 5, "the first process logged {before} lines");
    let o = Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args(&["--resume", "--stop-after-updates", "4"]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let updates: Vec<u64> = log.iter().map(|v| v["update"].as_u64().unwrap()).collect();
    assert_eq!(updates, (1..=updates.len() as u64).collect::<Vec<_>>());
    let walls: Vec<f64> = log.iter().map(|v| v["wall_s"].as_f64().unwrap()).collect();
    assert!(
        walls.windows(2).all(|w| w[1] > w[0]),
        "wall_s not increasing across the kill and resume: {walls:?}"
    );
    let files = event_files(&dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let events = read_events(&files[0]).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    let steps: Vec<i64> = events[1..].iter().map(|e| e.step).collect();
    let frames: Vec<i64> = log.iter().map(|v| v["frames"].as_i64().unwrap()).collect();
    assert_eq!(steps, frames, "event steps differ from the log's frames");
    let csv = std::fs::read_to_string(dir.join("train.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), log.len());
    for ((e, line), row) in events[1..].iter().zip(&log).zip(&rows) {
        let tags: Vec<&str> = e.scalars.iter().map(|(t, _)| t.as_str()).collect();
        // Every numeric CSV column but frames (the step) is a scalar of the event, and back.
        let numeric: Vec<&str> = header
            .iter()
            .zip(row)
            .filter(|(h, c)| **h != "frames" && **h != "level" && !c.is_empty())
            .map(|(h, _)| *h)
            .collect();
        let mut sorted_tags = tags.clone();
        sorted_tags.sort_unstable();
        let mut sorted_numeric = numeric.clone();
        sorted_numeric.sort_unstable();
        assert_eq!(sorted_tags, sorted_numeric);
        for (tag, x) in &e.scalars {
            let col = header.iter().position(|h| h == tag).unwrap();
            let shown: f64 = row[col].parse().unwrap();
            let decimals = row[col]
                .split_once('.')
                .map_or(0, |(_, d)| d.split(['e', 'E']).next().unwrap_or("").len());
            let tol = if row[col].contains(['e', 'E']) {
                shown.abs() * 1e-6
            } else {
                0.5 * 10f64.powi(-(decimals as i32)) + 1e-9
            } + f64::from(*x).abs() * 1e-6;
            assert!(
                (f64::from(*x) - shown).abs() <= tol,
                "{tag}: event {x} vs csv {}",
                row[col]
            );
            // `NAME/i` is a list's element (`module_activity`), `NAME/KEY` an object's field
            // (`grad_norm_by_role`).
            let from_json = match tag.split_once('/') {
                Some((k, i)) => match i.parse::<usize>() {
                    Ok(i) => line[k][i].as_f64().unwrap(),
                    Err(_) => line[k][i].as_f64().unwrap(),
                },
                None => line[tag].as_f64().unwrap(),
            };
            assert_eq!(*x, from_json as f32, "{tag}");
        }
    }
}

/// A CSV written with another version's columns is never mixed with this version's rows: it
/// is moved aside whole on resume, and the new CSV starts with this version's header.
#[test]
fn a_csv_of_other_columns_is_kept_aside_on_resume() {
    let (dir, cfg) = stopped_run("old-columns", 2);
    let csv = dir.join("train.csv");
    let old = "update,frames,fps,module_activity\n1,120,10.0,0.5;0.5\n2,240,10.0,0.5;0.5\n";
    std::fs::write(&csv, old).unwrap();
    resume(&cfg, &dir).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("train.csv.old-columns")).unwrap(),
        old
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("update,frames,fps,wall_s,level"),
        "{header}"
    );
    let updates: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(updates, vec!["3", "4", "5", "6"]);
    assert!(text
        .lines()
        .all(|l| l.split(',').count() == header.split(',').count()));
}
