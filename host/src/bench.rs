//! `metarim env bench`: environment throughput with random actions.
//!
//! Each thread owns one [`Env`] and one observation buffer, takes uniformly random actions
//! from its own [`Pcg32`], computes the observation after every step, and resets the level
//! (seed derived from the thread and episode number) when an episode terminates or is
//! truncated; resets are counted in the time. Nothing is allocated inside the loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use metarim_core::env::{Action, Env, Observation, VIEW_CELLS};
use metarim_core::levels::Level;
use metarim_core::rng::{split_mix64, Pcg32};

/// Steps between clock reads.
const CHUNK: u64 = 4096;

/// What one thread measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreadResult {
    /// Steps taken (each with its observation).
    pub steps: u64,
    /// Episodes started after the first (resets).
    pub resets: u64,
    /// Wall time of the loop.
    pub elapsed: Duration,
}

/// What the whole benchmark measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchResult {
    /// Per-thread results.
    pub threads: Vec<ThreadResult>,
}

impl BenchResult {
    /// Steps of all threads.
    pub fn steps(&self) -> u64 {
        self.threads.iter().map(|t| t.steps).sum()
    }

    /// Resets of all threads.
    pub fn resets(&self) -> u64 {
        self.threads.iter().map(|t| t.resets).sum()
    }

    /// Aggregate throughput: each thread's rate, summed.
    pub fn steps_per_sec(&self) -> f64 {
        self.threads
            .iter()
            .map(|t| t.steps as f64 / t.elapsed.as_secs_f64().max(1e-9))
            .sum()
    }
}

/// Seed of episode `episode` of thread `thread` under base seed `seed`.
pub fn episode_seed(seed: u64, thread: u64, episode: u64) -> u64 {
    split_mix64(
        split_mix64(seed ^ thread.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(episode),
    )
}

/// Run one thread's loop on `level` for about `duration` (at least one chunk of steps).
pub fn run_thread(
    level: Level,
    seed: u64,
    thread: u64,
    duration: Duration,
) -> Result<ThreadResult> {
    let reset = |env: &mut Env, episode: u64| {
        let s = episode_seed(seed, thread, episode);
        level
            .reset(env, s)
            .map_err(|e| anyhow!("level failed to generate for seed {s}: {e}"))
    };
    let mut env = Env::new(8, 8).map_err(|e| anyhow!("creating the environment: {e}"))?;
    let mut episode = 0;
    reset(&mut env, episode)?;
    let mut rng = Pcg32::with_stream(seed, thread);
    let mut obs: Observation = [[0; 3]; VIEW_CELLS];
    let mut result = ThreadResult::default();
    let start = Instant::now();
    loop {
        for _ in 0..CHUNK {
            let a = Action::ALL[rng.below(Action::ALL.len() as u32) as usize];
            let out = env.step(a);
            env.observe(&mut obs);
            black_box(&obs);
            if out.terminated || out.truncated {
                episode += 1;
                reset(&mut env, episode)?;
            }
        }
        result.steps += CHUNK;
        if start.elapsed() >= duration {
            break;
        }
    }
    result.elapsed = start.elapsed();
    result.resets = episode;
    Ok(result)
}

/// Run `threads` threads (one [`Env`] each) on `level_id` for about `seconds`.
pub fn run(level_id: &str, seconds: f64, threads: usize, seed: u64) -> Result<BenchResult> {
    let level = crate::levels::lookup(level_id)?;
    let duration = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero() && d.as_secs() <= 1_000_000)
        .ok_or_else(|| anyhow!("--seconds must be in (0, 1e6], got {seconds}"))?;
    if !(1..=1024).contains(&threads) {
        return Err(anyhow!("--threads must be in 1..=1024, got {threads}"));
    }
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| s.spawn(move || run_thread(level, seed, t, duration)))
            .collect();
        crate::threads::join_all(handles, "benchmark")
    })?;
    Ok(BenchResult { threads: results })
}
