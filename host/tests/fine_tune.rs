//! Fine-tuning from a checkpoint (`init_from`): the run starts from the checkpoint's
//! parameters; with `outer_steps = 0` in the meta-rim split only the fast group moves (the
//! host-trainer upper bound of on-device adaptation); bad `init_from` values are refused.

mod common;
use common::assert_mentions;

use std::path::{Path, PathBuf};

use host::train::checkpoint;
use host::train::run::{train, RunOptions};
use host::train::TrainConfig;

fn tiny(mode: &str, level: &str) -> TrainConfig {
    TrainConfig {
        mode: metarim_core::nn::params::Mode::from_name(mode).expect("a mode name"),
        level: level.into(),
        procs: 4,
        frames_per_proc: 20,
        recurrence: 10,
        batch_size: 40,
        inner_steps: 2,
        outer_steps: 2,
        frames: 320,
        ..TrainConfig::device()
    }
}

fn run(cfg: &TrainConfig, name: &str) -> anyhow::Result<PathBuf> {
    let out = std::env::temp_dir().join(format!("metarim-ft-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    Ok(train(cfg, &RunOptions::new(out))?.checkpoint)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn a_fast_only_fine_tune_moves_only_the_fast_group() {
    let a = run(&tiny("meta-rim", "BabyAI-GoToObj-v0"), "a").unwrap();
    let ft = TrainConfig {
        init_from: Some(s(&a)),
        outer_steps: 0,
        value_coef: 0.0,
        seed: 7,
        ..tiny("meta-rim", "BabyAI-GoToLocalS6N3-v0")
    };
    let b = run(&ft, "b").unwrap();
    let (ca, cb) = (checkpoint::load(&a).unwrap(), checkpoint::load(&b).unwrap());
    assert_eq!(ca.model.params.slow, cb.model.params.slow);
    assert_eq!(ca.model.params.other, cb.model.params.other);
    assert_ne!(ca.model.params.fast, cb.model.params.fast);
    // A fresh run with the same seed starts elsewhere: init_from really replaced the init.
    let fresh = run(
        &TrainConfig {
            init_from: None,
            ..ft.clone()
        },
        "fresh",
    )
    .unwrap();
    let cf = checkpoint::load(&fresh).unwrap();
    assert_ne!(cf.model.params.slow, cb.model.params.slow);
}

#[test]
fn bad_init_from_is_refused_naming_the_field() {
    let e = format!(
        "{:#}",
        run(
            &TrainConfig {
                init_from: Some("/nonexistent/checkpoint.safetensors".into()),
                ..tiny("meta-rim", "BabyAI-GoToObj-v0")
            },
            "missing"
        )
        .unwrap_err()
    );
    assert!(e.contains("init_from"), "{e}");
    let lstm = run(&tiny("lstm", "BabyAI-GoToObj-v0"), "lstm").unwrap();
    let e = format!(
        "{:#}",
        run(
            &TrainConfig {
                init_from: Some(s(&lstm)),
                ..tiny("meta-rim", "BabyAI-GoToObj-v0")
            },
            "mismatch"
        )
        .unwrap_err()
    );
    assert_mentions(&e, &["init_from", "lstm"]);
}
