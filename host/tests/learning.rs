//! The agent learns: on BabyAI-GoToObj-v0 with the Tiny preset, a fixed seed and a fixed frame
//! budget, the evaluated success rate rises from the untrained policy's to at least 0.8, for
//! the Meta-RIMs split and for the LSTM baseline. (Evaluation episodes are separate from the
//! training episodes: another seed, 300 episodes, actions sampled from the policy.)

use host::train::eval::{evaluate, EvalOptions};
use host::train::run::{initial_model, train, RunOptions};
use host::train::{checkpoint, TrainConfig};

fn learns(mode: &str) {
    let cfg = TrainConfig {
        mode: metarim_core::nn::params::Mode::from_name(mode).expect("a mode name"),
        frames: 400_000,
        seed: 1,
        stats_window: 200,
        ..TrainConfig::device()
    };
    let level = host::levels::lookup(&cfg.level).unwrap();
    let eval = EvalOptions {
        episodes: 300,
        seed: 77,
        threads: 0,
        argmax: false,
        swap_missions: false,
        done_actions: cfg.done_actions,
    };
    let before = evaluate(&initial_model(&cfg).unwrap(), &level, &eval).unwrap();
    let out = std::env::temp_dir().join(format!("metarim-learn-{}-{mode}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let s = train(&cfg, &RunOptions::new(&out)).unwrap();
    let ck = checkpoint::load(&s.checkpoint).unwrap();
    let after = evaluate(&ck.model, &level, &eval).unwrap();
    println!(
        "{mode}: success {:.3} -> {:.3} (training window {:.3}) in {} frames",
        before.success, after.success, s.success, s.frames
    );
    assert!(
        before.success < 0.5,
        "untrained policy already succeeds: {before:?}"
    );
    assert!(after.success >= 0.8, "{mode} did not learn: {after:?}");
    assert!(out.join("train.csv").exists() && out.join("curve.png").exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn meta_rim_learns_go_to_obj() {
    learns("meta-rim");
}

#[test]
fn lstm_learns_go_to_obj() {
    learns("lstm");
}
