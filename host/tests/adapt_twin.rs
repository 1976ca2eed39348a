//! `metarim adapt` (the host twin of on-device adaptation): deterministic, adapts only the
//! fast group, refuses checkpoints that are not Tiny / meta-rim; the guard; the host-only
//! learners of other parameter groups move exactly their groups, and the fast one agrees with
//! the device learner.

mod common;

use common::{opts, small_config};
use host::adapt::groups::play_adapting;
use host::adapt::{run, AdaptOptions, Groups};
use host::train::checkpoint;
use host::train::run::train;
use metarim_core::adapt::{
    play_episodes, AdaptConfig, Adaptation, GuardConfig, Session, TinyAdapter,
};
use metarim_core::env::Env;
use metarim_core::levels::Level;
use metarim_core::nn::params::TensorKind;
use metarim_core::nn::presets::{TinyActor, TINY_FAST};

fn unguarded() -> AdaptConfig {
    AdaptConfig {
        guard: GuardConfig::OFF,
        ..AdaptConfig::default()
    }
}

/// 12 adaptation and 10 evaluation episodes of GoToLocalS6N3, seed 3, the device's learner.
fn gotolocal(cfg: AdaptConfig) -> AdaptOptions {
    AdaptOptions {
        level: "BabyAI-GoToLocalS6N3-v0".into(),
        episodes: 12,
        eval_episodes: 10,
        seed: 3,
        cfg,
        groups: None,
        value_coef: 0.0,
    }
}

fn trained(name: &str, mode: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("metarim-adapt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    train(&small_config(mode, 4, 320), &opts(&dir))
        .unwrap()
        .checkpoint
}

/// A trained meta-rim checkpoint, loaded, and the small GoToLocal level the host learners
/// adapt on.
fn trained_on_local(name: &str) -> (checkpoint::Checkpoint, Level) {
    let ck = checkpoint::load(&trained(name, "meta-rim")).unwrap();
    (ck, Level::from_id("BabyAI-GoToLocalS6N3-v0").unwrap())
}

#[test]
fn the_twin_is_deterministic_and_updates_fast_weights() {
    let ck = trained("ok", "meta-rim");
    let o = gotolocal(unguarded());
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

#[test]
fn the_default_guard_probes_first_and_leaves_the_weights_when_nothing_was_learned() {
    let ck = trained("guard", "meta-rim");
    let o = gotolocal(AdaptConfig::default());
    // 12 episodes are all inside the 50-episode probe: no update, the same policy after.
    let r = run(&ck, &o).unwrap();
    assert_eq!((r.during.updates, r.during.guard.probe_episodes), (0, 12));
    assert_eq!(r.before, r.after);
}

#[test]
fn host_learners_move_exactly_their_groups() {
    let (ck, level) = trained_on_local("groups");
    let initial = &ck.model.params;
    // Six episodes of seed 4 moving the groups `g`, with a value loss (the critic learns
    // where `g` includes it).
    let adapt = |g: Groups| {
        let mut p = initial.clone();
        let st = play_adapting(
            &ck.model.layout,
            &mut p,
            initial,
            g,
            &level,
            4,
            6,
            16,
            &unguarded(),
            0.5,
        )
        .unwrap();
        (p, st)
    };
    for g in Groups::ALL {
        let (p, st) = adapt(g);
        assert!(st.optimizer_steps > 0, "{g:?}");
        let moved = [
            p.fast != initial.fast,
            p.slow != initial.slow,
            p.other != initial.other,
        ];
        let want = match g {
            Groups::Fast => [true, false, false],
            Groups::Attention => [false, true, false],
            Groups::All | Groups::FastCritic => [true, g == Groups::All, true],
        };
        assert_eq!(moved, want, "{g:?}");
        if g == Groups::FastCritic {
            // Of the other group, only the critic moved.
            let critic = ck.model.layout.entry(TensorKind::Critic).unwrap().range();
            for (i, (a, b)) in p.other.iter().zip(&initial.other).enumerate() {
                assert!(a == b || critic.contains(&i), "other[{i}] moved");
            }
        }
        let (again, _) = adapt(g);
        assert_eq!(again, p, "{g:?} is deterministic");
    }
}

#[test]
fn the_full_gradient_fast_learner_takes_the_device_learners_first_step() {
    // One episode, one SGD step per window: the device learner (fast-only backward from
    // stored memory inputs) and the host learner (full backward from observations) start from
    // the same weights on the same episode and draw the same actions, so their updates agree
    // up to rounding (which could only flip an action sampled right at a boundary).
    let (ck, level) = trained_on_local("parity");
    let initial = &ck.model.params;
    let cfg = AdaptConfig {
        windows_per_step: 1,
        lr: 1e-3,
        ..unguarded()
    };
    let mut host_p = initial.clone();
    let hs = play_adapting(
        &ck.model.layout,
        &mut host_p,
        initial,
        Groups::Fast,
        &level,
        9,
        1,
        16,
        &cfg,
        0.0,
    )
    .unwrap();
    let mut fast = [0.0f32; TINY_FAST];
    fast.copy_from_slice(&initial.fast);
    let mut env = Box::new(Env::EMPTY);
    let mut actor = Box::<TinyActor>::default();
    let mut ad = Box::new(TinyAdapter::<16>::new());
    let mut s = Session {
        layout: &ck.model.layout,
        fast: &mut fast,
        slow: &initial.slow,
        other: &initial.other,
        env: &mut env,
        actor: &mut actor,
    };
    let ds = play_episodes(
        &mut s,
        &level,
        9,
        0,
        1,
        false,
        Some(Adaptation {
            adapter: &mut *ad,
            cfg: &cfg,
            initial_fast: &initial.fast,
        }),
    )
    .unwrap();
    assert!(ds.optimizer_steps >= 1);
    assert_eq!(ds.optimizer_steps, hs.optimizer_steps);
    let dev: Vec<f32> = fast.iter().zip(&initial.fast).map(|(a, b)| a - b).collect();
    let hst: Vec<f32> = host_p
        .fast
        .iter()
        .zip(&initial.fast)
        .map(|(a, b)| a - b)
        .collect();
    let num: f32 = dev
        .iter()
        .zip(&hst)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    let den: f32 = dev.iter().map(|a| a * a).sum::<f32>().sqrt();
    assert!(den > 0.0);
    assert!(num / den < 1e-3, "relative difference {}", num / den);
}
