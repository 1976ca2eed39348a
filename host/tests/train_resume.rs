//! Checkpoints and determinism of training: the same seed gives the same checkpoint bytes on
//! any thread count; a run stopped (cleanly, or by `kill -9`) and resumed ends with the same
//! checkpoint as an uninterrupted run; a corrupt or mismatched checkpoint is refused with a
//! clear error.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{opts, tiny_config, tiny_train_args, tmpdir};
use host::train::checkpoint;
use host::train::run::{train, RunOptions, CHECKPOINT_FILE};
use host::train::TrainConfig;

/// A small, fast config (Tiny preset, few envs and frames) in a given mode.
fn tiny(mode: &str, frames: u64) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        grad_shards: 3,
        ..tiny_config(mode, frames)
    }
}

fn ckpt(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap()
}

#[test]
fn same_seed_same_checkpoint_on_any_thread_count() {
    for mode in ["meta-rim", "lstm"] {
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let dir = tmpdir(&format!("threads-{mode}-{threads}"));
            let cfg = TrainConfig {
                threads,
                ..tiny(mode, 360)
            };
            train(&cfg, &opts(&dir)).unwrap();
            outs.push(ckpt(&dir));
        }
        assert!(outs[0] == outs[1] && outs[1] == outs[2], "{mode}");
        // And the seed matters.
        let dir = tmpdir(&format!("threads-{mode}-seed"));
        let cfg = TrainConfig {
            seed: 2,
            ..tiny(mode, 360)
        };
        train(&cfg, &opts(&dir)).unwrap();
        assert!(ckpt(&dir) != outs[0]);
    }
}

#[test]
fn stop_and_resume_matches_an_uninterrupted_run() {
    for mode in ["meta-rim", "reversed", "joint", "lstm"] {
        let full = tmpdir(&format!("full-{mode}"));
        let cfg = tiny(mode, 600);
        let s = train(&cfg, &opts(&full)).unwrap();
        assert_eq!(s.frames, 600);
        let part = tmpdir(&format!("part-{mode}"));
        let o = RunOptions {
            stop_after_updates: Some(2),
            ..opts(&part)
        };
        let s = train(&cfg, &o).unwrap();
        assert_eq!(s.updates, 2);
        // Without --resume an existing checkpoint is never overwritten.
        let e = train(&cfg, &opts(&part)).unwrap_err().to_string();
        assert!(e.contains("--resume"), "{e}");
        let o = RunOptions {
            resume: true,
            ..opts(&part)
        };
        let s = train(&cfg, &o).unwrap();
        assert_eq!(s.frames, 600);
        assert!(
            ckpt(&full) == ckpt(&part),
            "{mode}: resumed checkpoint differs"
        );
        let lines = |d: &Path| {
            std::fs::read_to_string(d.join("train.jsonl"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(lines(&full), lines(&part));
    }
}

/// Learning-rate annealing is a function of the frames done, so a resumed run matches an
/// uninterrupted one; it changes training (the checkpoint differs from a constant rate). With
/// the FiLM encoder, which trains end to end on the same path.
#[test]
fn annealed_film_run_resumes_bit_identically() {
    let cfg = TrainConfig {
        lr_anneal: true,
        film: Some(true),
        encoder: Some(metarim_core::nn::dims::EncoderKind::Bow),
        ..tiny("meta-rim", 480)
    };
    let full = tmpdir("anneal-full");
    train(&cfg, &opts(&full)).unwrap();
    let part = tmpdir("anneal-part");
    let o = RunOptions {
        stop_after_updates: Some(2),
        ..opts(&part)
    };
    train(&cfg, &o).unwrap();
    let o = RunOptions {
        resume: true,
        ..opts(&part)
    };
    train(&cfg, &o).unwrap();
    assert!(ckpt(&full) == ckpt(&part), "resumed annealed run differs");
    let flat = tmpdir("anneal-flat");
    let constant = TrainConfig {
        lr_anneal: false,
        ..cfg
    };
    train(&constant, &opts(&flat)).unwrap();
    assert!(ckpt(&flat) != ckpt(&full), "annealing changed nothing");
}

#[test]
fn resume_refuses_a_changed_config_but_accepts_more_frames() {
    let dir = tmpdir("changed");
    let cfg = tiny("meta-rim", 240);
    train(&cfg, &opts(&dir)).unwrap();
    let o = RunOptions {
        resume: true,
        ..opts(&dir)
    };
    let changed = TrainConfig {
        lr: 0.5,
        ..cfg.clone()
    };
    let e = format!("{:#}", train(&changed, &o).unwrap_err());
    assert!(e.contains("lr"), "{e}");
    let longer = TrainConfig { frames: 360, ..cfg };
    assert_eq!(train(&longer, &o).unwrap().frames, 360);
}

#[test]
fn kill_9_then_resume_matches_an_uninterrupted_run() {
    let bin = env!("CARGO_BIN_EXE_metarim");
    let args = |out: &Path| tiny_train_args(out, 4800, &["--seed", "5"]);
    let full = tmpdir("kill-full");
    let st = Command::new(bin)
        .args(args(&full))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let killed = tmpdir("kill-part");
    let mut child = Command::new(bin)
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a few updates are logged (the run is then somewhere in the middle).
    let log = killed.join("train.jsonl");
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 8 || t0.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let _ = child.wait();
    let ck = checkpoint::load(&killed.join(CHECKPOINT_FILE)).unwrap();
    assert!(ck.meta.frames < 4800, "killed too late to test anything");
    let mut a = args(&killed);
    a.push("--resume".into());
    let st = Command::new(bin)
        .args(a)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        ckpt(&full) == ckpt(&killed),
        "checkpoint after kill -9 and --resume differs"
    );
}

#[test]
fn corrupt_and_mismatched_checkpoints_are_refused() {
    let dir = tmpdir("corrupt");
    train(&tiny("meta-rim", 120), &opts(&dir)).unwrap();
    let good = ckpt(&dir);
    assert!(checkpoint::from_bytes(&good).is_ok());
    let err = |b: &[u8]| format!("{:#}", checkpoint::from_bytes(b).unwrap_err());
    // A flipped bit in the tensor data.
    let mut b = good.clone();
    let n = b.len();
    b[n - 5] ^= 0x10;
    assert!(err(&b).contains("CRC32"), "{}", err(&b));
    // Truncated.
    assert!(
        err(&good[..n / 2]).contains("safetensors"),
        "{}",
        err(&good[..n / 2])
    );
    // Not a checkpoint at all.
    assert!(err(b"hello").contains("safetensors"));
    // A valid safetensors file without our metadata.
    let plain = safetensors::serialize(
        [(
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 0, 0])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    assert!(err(&plain).contains("metarim"), "{}", err(&plain));
    // Loading a missing file names it.
    let e = format!(
        "{:#}",
        checkpoint::load(&dir.join("nope.safetensors")).unwrap_err()
    );
    assert!(e.contains("nope.safetensors"), "{e}");
}

#[test]
fn curriculum_advances_on_its_frame_budget_and_resumes_exactly() {
    let cfg = TrainConfig {
        levels: vec![
            "BabyAI-GoToObj-v0".into(),
            "BabyAI-GoToLocalS5N2-v0".into(),
            "BabyAI-PickupLoc-v0".into(),
        ],
        curriculum: true,
        curriculum_level_frames: 240,
        ..tiny("meta-rim", 840)
    };
    let full = tmpdir("curr-full");
    let s = train(&cfg, &opts(&full)).unwrap();
    assert_eq!(s.level, "BabyAI-PickupLoc-v0");
    let log = std::fs::read_to_string(full.join("train.jsonl")).unwrap();
    let levels: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["level"].to_string())
        .collect();
    assert!(levels.first().unwrap().contains("GoToObj"), "{levels:?}");
    assert!(
        levels.iter().any(|l| l.contains("GoToLocalS5N2")),
        "{levels:?}"
    );
    let part = tmpdir("curr-part");
    train(
        &cfg,
        &RunOptions {
            stop_after_updates: Some(3),
            ..opts(&part)
        },
    )
    .unwrap();
    train(
        &cfg,
        &RunOptions {
            resume: true,
            ..opts(&part)
        },
    )
    .unwrap();
    assert!(ckpt(&full) == ckpt(&part), "curriculum resume differs");
}

/// The log line of the update that passes a curriculum level describes that level: its success
/// window is read before the switch clears it (it used to read the new level's empty window, a
/// success rate and episode length of 0 on the line that passed the level).
#[test]
fn the_update_that_passes_a_level_logs_that_levels_window() {
    // Threshold 0 over a window of 1: the first finished episode passes the level
    // (GoToLocalS5N2 episodes last at most 25 steps; an update is 20 steps per env).
    let cfg = TrainConfig {
        levels: vec!["BabyAI-GoToLocalS5N2-v0".into(), "BabyAI-GoToObj-v0".into()],
        curriculum: true,
        curriculum_threshold: 0.0,
        curriculum_window: 1,
        ..tiny("meta-rim", 720)
    };
    let dir = tmpdir("curr-switch-line");
    train(&cfg, &opts(&dir)).unwrap();
    let log = std::fs::read_to_string(dir.join("train.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let switch = rows
        .windows(2)
        .position(|w| w[0]["level"] != w[1]["level"])
        .unwrap_or_else(|| panic!("no curriculum switch in {log}"));
    let line = &rows[switch];
    assert_eq!(line["level"], "BabyAI-GoToLocalS5N2-v0", "{log}");
    assert_eq!(rows[switch + 1]["level"], "BabyAI-GoToObj-v0", "{log}");
    let finished: u64 = rows[..=switch]
        .iter()
        .map(|r| r["episodes"].as_u64().unwrap())
        .sum();
    assert!(
        finished > 0,
        "the level passed with no finished episode: {log}"
    );
    let len = line["episode_len"].as_f64().unwrap();
    assert!(
        len > 0.0,
        "the passing update's line reads an empty window: {line}"
    );
}
