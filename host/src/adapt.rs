//! `metarim adapt`: the host twin of the firmware's on-device adaptation. It runs the same
//! `metarim_core::adapt` code on a checkpoint's Tiny policy: evaluate, adapt the fast group on
//! a level's episodes, evaluate again. Same blob values, seeds and code as the device, so the
//! figures match the firmware's bit for bit.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use metarim_core::adapt::{play_episodes, AdaptConfig, EpisodeStats, Session, TinyAdapter};
use metarim_core::env::Env;
use metarim_core::nn::dims::TINY;
use metarim_core::nn::params::Mode;
use metarim_core::nn::presets::{TinyActor, TINY_FAST};

use crate::train::checkpoint;

/// Steps in the adaptation window (the firmware uses the same).
pub const WINDOW: usize = 16;

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
    /// RAM of the adapter (window, gradient, work).
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
    let mut fast = [0.0f32; TINY_FAST];
    fast.copy_from_slice(&ck.model.params.fast);
    let mut env = Box::new(Env::EMPTY);
    let mut actor = Box::<TinyActor>::default();
    let mut s = Session {
        layout,
        fast: &mut fast,
        slow: &ck.model.params.slow,
        other: &ck.model.params.other,
        env: &mut env,
        actor: &mut actor,
    };
    let err = |e| anyhow!("adaptation: {e}");
    let none: Option<(&mut TinyAdapter<WINDOW>, &AdaptConfig)> = None;
    let before =
        play_episodes(&mut s, &level, o.seed, 0, o.eval_episodes, false, none).map_err(err)?;
    let (during, bytes) = adapt(&mut s, &level, o)?;
    let none: Option<(&mut TinyAdapter<WINDOW>, &AdaptConfig)> = None;
    let after =
        play_episodes(&mut s, &level, o.seed, 0, o.eval_episodes, false, none).map_err(err)?;
    Ok(AdaptResult {
        before,
        during,
        after,
        adapter_bytes: bytes,
    })
}

/// The adaptation episodes (seed `o.seed + 1`) with a fresh adapter; returns their totals and
/// the adapter's RAM.
fn adapt(
    s: &mut Session<'_>,
    level: &metarim_core::levels::Level,
    o: &AdaptOptions,
) -> Result<(EpisodeStats, usize)> {
    let mut ad = Box::new(TinyAdapter::<WINDOW>::new());
    let st = play_episodes(
        s,
        level,
        o.seed.wrapping_add(1),
        0,
        o.episodes,
        false,
        Some((&mut *ad, &o.cfg)),
    )
    .map_err(|e| anyhow!("adaptation: {e}"))?;
    Ok((st, TinyAdapter::<WINDOW>::RAM_BYTES))
}
