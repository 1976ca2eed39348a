//! `metarim adapt` (the host twin of on-device adaptation): deterministic, adapts only the
//! fast group, refuses checkpoints that are not Tiny / meta-rim.

mod common;

use common::{opts, small_config};
use host::adapt::{run, AdaptOptions};
use host::train::run::train;
use metarim_core::adapt::AdaptConfig;

fn trained(name: &str, mode: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("metarim-adapt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    train(&small_config(mode, 4, 320), &opts(&dir))
        .unwrap()
        .checkpoint
}

#[test]
fn the_twin_is_deterministic_and_updates_fast_weights() {
    let ck = trained("ok", "meta-rim");
    let o = AdaptOptions {
        level: "BabyAI-GoToLocalS6N3-v0".into(),
        episodes: 12,
        eval_episodes: 10,
        seed: 3,
        cfg: AdaptConfig::default(),
    };
    let a = run(&ck, &o).unwrap();
    let b = run(&ck, &o).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.before.episodes, 10);
    assert_eq!(a.after.episodes, 10);
    assert_eq!(a.during.episodes, 12);
    assert!(a.during.updates >= 12, "at least one update per episode");
    let e = format!("{:#}", run(&trained("lstm", "lstm"), &o).unwrap_err());
    assert!(e.contains("meta-rim"), "{e}");
    let bad = AdaptOptions {
        level: "Nope".into(),
        ..o
    };
    assert!(run(&ck, &bad).is_err());
}
