//! `metarim env dump`: freshly generated initial states in the trace format.
//!
//! Seed scheme: episode `i` (0-based) of a dump with `--seed S` is `level.reset(env, S + i)`
//! (wrapping on overflow), minigrid's `env.reset(seed=S+i)`, and its record carries that seed,
//! so any single state can be regenerated on its own with `--seed S+i --count 1`. With
//! `--continue`, episode `i` is instead the level minigrid generates at its `i`-th unseeded
//! `reset()` after one `reset(seed=S)` (one generator, continued); every record carries `S`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use flate2::write::GzEncoder;
use metarim_core::env::Env;
use metarim_core::rng::numpy::NumpyGenerator;

use crate::fsutil;
use crate::trace::{episode_from_env, write_episode, Episode};

/// The initial state of `level_id` for `seed`, as a trace episode with no steps.
pub fn generate(level_id: &str, seed: u64, env: &mut Env) -> Result<Episode> {
    let level = crate::levels::lookup(level_id)?;
    level
        .reset(env, seed)
        .map_err(|e| anyhow::anyhow!("level {level_id} failed to generate for seed {seed}: {e}"))?;
    Ok(episode_from_env(level.id(), seed, env))
}

/// Write `count` initial states of `level_id` as JSON lines: seeds `seed, seed + 1, ...`, or
/// with `continued` the levels of one generator seeded with `seed` (see the module docs).
pub fn dump<W: Write>(
    out: &mut W,
    level_id: &str,
    count: u64,
    seed: u64,
    continued: bool,
) -> Result<()> {
    let level = crate::levels::lookup(level_id)?;
    let mut env = Env::new(8, 8).map_err(|e| anyhow::anyhow!("creating the environment: {e}"))?;
    let mut rng = NumpyGenerator::new(seed);
    for i in 0..count {
        let ep = if continued {
            level.generate(&mut rng, &mut env).map_err(|e| {
                anyhow::anyhow!("level {level_id} failed to generate (seed {seed}, reset {i}): {e}")
            })?;
            episode_from_env(level.id(), seed, &env)
        } else {
            generate(level_id, seed.wrapping_add(i), &mut env)?
        };
        write_episode(out, &ep)?;
    }
    out.flush()?;
    Ok(())
}

/// [`dump`] into the file at `path`, gzip-compressed when its name ends in `.gz`, written
/// atomically: on any error (a level that fails to generate, a full disk) the file that was
/// at `path` is left as it was.
pub fn dump_to_file(
    path: &Path,
    level_id: &str,
    count: u64,
    seed: u64,
    continued: bool,
) -> Result<()> {
    crate::levels::lookup(level_id)?;
    fsutil::write_atomic_with(path, |file| {
        if path.extension().is_some_and(|e| e == "gz") {
            let mut gz = GzEncoder::new(file, flate2::Compression::default());
            dump(&mut gz, level_id, count, seed, continued)?;
            gz.finish()?.flush()?;
            Ok(())
        } else {
            dump(file, level_id, count, seed, continued)
        }
    })
}

/// Write every registered level id, one per line.
pub fn list<W: Write>(out: &mut W) -> Result<()> {
    for id in crate::levels::all_ids() {
        writeln!(out, "{id}")?;
    }
    out.flush()?;
    Ok(())
}
