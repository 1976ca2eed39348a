//! Shared helpers of metarim's integration and property tests (the tests live in `tests/tests`).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use host::trace::{episode_from_env, Cell, Episode, TraceStep};
use metarim_core::env::{Action, Env};
use metarim_core::levels::Level;
use metarim_core::world::ObjectKind;

/// The vendored conformance traces recorded from minigrid 3.2.0.
pub fn trace_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/minigrid-3.2.0-traces.jsonl.gz")
}

/// Record an episode of `level` from `seed` with our own environment, in the trace format:
/// the actions are applied until the episode ends (or run out). Replaying the result through
/// `host::trace` checks that a state loaded from its record behaves like the generated one.
pub fn record_episode(level: &Level, seed: u64, actions: &[Action]) -> Result<Episode> {
    let mut env = Env::new(8, 8).map_err(|e| anyhow!("{e}"))?;
    level
        .reset(&mut env, seed)
        .map_err(|e| anyhow!("{} failed to generate for seed {seed}: {e}", level.id()))?;
    let mut ep = episode_from_env(level.id(), seed, &env);
    for &a in actions {
        let out = env.step(a);
        let code = |c: [u8; 3]| -> Cell { c.map(i64::from) };
        ep.steps.push(TraceStep {
            action: a as i64,
            obs: env.observation().iter().map(|c| code(*c)).collect(),
            dir: i64::from(env.agent_dir),
            pos: [i64::from(env.agent_pos.x), i64::from(env.agent_pos.y)],
            reward: f64::from(out.reward),
            terminated: out.terminated,
            truncated: out.truncated,
            carrying: env.carrying.map(|o| code(o.encode())),
        });
        if out.terminated || out.truncated {
            break;
        }
    }
    ep.final_grid = episode_from_env(level.id(), seed, &env).grid;
    Ok(ep)
}

/// One movable object: `(kind, color, identity)`.
pub type Movable = (u8, u8, u16);

/// The sorted multiset of objects that can be picked up, in the grid and carried.
pub fn movables(env: &Env) -> Vec<Movable> {
    let mut v: Vec<Movable> = env
        .grid
        .objects()
        .map(|(_, o)| o)
        .chain(env.carrying.as_ref())
        .filter(|o| o.can_pickup())
        .map(|o| (o.kind as u8, o.color as u8, o.id.0))
        .collect();
    v.sort_unstable();
    v
}

/// `movables(env)` after toggling box `bx`: the box replaced by its contents, if any.
pub fn movables_after_box_toggle(
    before: &[Movable],
    bx: &metarim_core::world::Object,
) -> Vec<Movable> {
    let mut v = before.to_vec();
    if let Some(i) = v
        .iter()
        .position(|m| *m == (ObjectKind::Box as u8, bx.color as u8, bx.id.0))
    {
        v.remove(i);
    }
    if let Some(c) = bx.contents {
        if c.kind.can_pickup() {
            v.push((c.kind as u8, c.color as u8, c.id.0));
        }
    }
    v.sort_unstable();
    v
}
