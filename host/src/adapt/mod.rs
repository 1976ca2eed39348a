//! `metarim adapt`: the host twin of the firmware's on-device adaptation. It runs the same
//! `metarim_core::adapt` code on a checkpoint's Tiny policy: evaluate, adapt the fast group on
//! a level's episodes, evaluate again. Same blob values, seeds and code as the device, so the
//! figures match the firmware's bit for bit.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use metarim_core::adapt::{
    play_episodes, AdaptConfig, Adaptation, EpisodeStats, Session, TinyAdapter,
};
use metarim_core::env::Env;
use metarim_core::nn::dims::TINY;
use metarim_core::nn::params::Mode;
use metarim_core::nn::presets::{TinyActor, TINY_FAST};

use crate::train::checkpoint;

/// Steps in the adaptation window (the firmware uses the same).
pub const WINDOW: usize = 16;

pub mod groups;

pub use groups::Groups;

/// What to run.
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// Level id to adapt on.
    pub level: String,
    /// Adaptation episodes.
    pub episodes: u64,
    /// Evaluation episodes before and after.
    pub eval_episodes: u64,
    /// Seed: evaluation episodes use it, adaptation episodes use `seed + 1`.
    pub seed: u64,
    /// Hyper-parameters.
    pub cfg: AdaptConfig,
    /// `None`: the device's learner (`metarim_core::adapt`, what the firmware runs). `Some`:
    /// the host-only learner of [`groups`] moving those parameters (the comparison of
    /// issue 22).
    pub groups: Option<Groups>,
    /// Host-only learners: weight of the value loss (0: the critic gets no gradient, as on
    /// the device; it moves only where the groups include it).
    pub value_coef: f32,
}

/// Results of a twin run.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptResult {
    /// Evaluation before adaptation.
    pub before: EpisodeStats,
    /// The adaptation episodes themselves.
    pub during: EpisodeStats,
    /// Evaluation after adaptation (the same episodes as `before`).
    pub after: EpisodeStats,
    /// RAM of the device adapter (window, gradient, work); 0 for the host-only learners.
    pub adapter_bytes: usize,
}

/// Run the twin on the checkpoint at `ckpt`.
pub fn run(ckpt: &Path, o: &AdaptOptions) -> Result<AdaptResult> {
    o.cfg.validate().map_err(|e| anyhow!("{e}"))?;
    let ck = checkpoint::load(ckpt)?;
    let layout = &ck.model.layout;
    let mut have = *layout.dims();
    have.memory = TINY.memory;
    if have != TINY || layout.mode() != Mode::MetaRim {
        bail!(
            "adaptation runs the Tiny preset in the meta-rim split; the checkpoint is {} / {}",
            ck.config.preset,
            ck.config.mode.name()
        );
    }
    let level = crate::levels::lookup(&o.level)?;
    let initial = &ck.model.params;
    let before = evaluate(layout, initial, &level, o)?;
    let mut adapted = initial.clone();
    let (during, adapter_bytes) = match o.groups {
        None => {
            let (r, fast) =
                on_device_session(layout, initial, |s| adapt(s, &level, o, &initial.fast))?;
            adapted.fast.copy_from_slice(&fast);
            r
        }
        Some(g) => {
            let st = groups::play_adapting(
                layout,
                &mut adapted,
                initial,
                g,
                &level,
                o.seed.wrapping_add(1),
                o.episodes,
                WINDOW,
                &o.cfg,
                o.value_coef,
            )?;
            (st, 0)
        }
    };
    let after = evaluate(layout, &adapted, &level, o)?;
    Ok(AdaptResult {
        before,
        during,
        after,
        adapter_bytes,
    })
}

/// The evaluation episodes (seed `o.seed`, sampled actions) with `params`.
fn evaluate(
    layout: &metarim_core::nn::params::Layout,
    params: &crate::train::GroupVecs,
    level: &metarim_core::levels::Level,
    o: &AdaptOptions,
) -> Result<EpisodeStats> {
    let none: Option<Adaptation<'_, WINDOW>> = None;
    let (st, _) = on_device_session(layout, params, |s| {
        play_episodes(s, level, o.seed, 0, o.eval_episodes, false, none)
            .map_err(|e| anyhow!("evaluation: {e}"))
    })?;
    Ok(st)
}

/// Run `f` on a device [`Session`] over `params` (as the firmware holds them: the fast group
/// in a RAM copy, the slow and other groups read-only, a fresh environment and actor); returns
/// what `f` returned and the fast group as `f` left it.
fn on_device_session<R>(
    layout: &metarim_core::nn::params::Layout,
    params: &crate::train::GroupVecs,
    f: impl FnOnce(&mut Session<'_>) -> Result<R>,
) -> Result<(R, [f32; TINY_FAST])> {
    let mut fast = [0.0f32; TINY_FAST];
    if params.fast.len() != TINY_FAST {
        bail!(
            "adaptation: the fast group has {} values, the Tiny preset {TINY_FAST}",
            params.fast.len()
        );
    }
    fast.copy_from_slice(&params.fast);
    let mut env = Box::new(Env::EMPTY);
    let mut actor = Box::<TinyActor>::default();
    let mut s = Session {
        layout,
        fast: &mut fast,
        slow: &params.slow,
        other: &params.other,
        env: &mut env,
        actor: &mut actor,
    };
    let r = f(&mut s)?;
    Ok((r, fast))
}

/// The adaptation episodes (seed `o.seed + 1`) with a fresh adapter, `initial` the fast group
/// the guard restores (the checkpoint's); returns their totals and the adapter's RAM.
fn adapt(
    s: &mut Session<'_>,
    level: &metarim_core::levels::Level,
    o: &AdaptOptions,
    initial: &[f32],
) -> Result<(EpisodeStats, usize)> {
    let mut ad = Box::new(TinyAdapter::<WINDOW>::new());
    let st = play_episodes(
        s,
        level,
        o.seed.wrapping_add(1),
        0,
        o.episodes,
        false,
        Some(Adaptation {
            adapter: &mut *ad,
            cfg: &o.cfg,
            initial_fast: initial,
        }),
    )
    .map_err(|e| anyhow!("adaptation: {e}"))?;
    Ok((st, TinyAdapter::<WINDOW>::RAM_BYTES))
}
