//! `cargo bench -p host --bench env`: environment step+observe and reset times on
//! BabyAI-GoToLocal-v0 (plain harness: median of several timed samples, no dependencies).
//!
//! Options (after `--`): `--level ID` (default BabyAI-GoToLocal-v0), `--samples N` (default 11).
//! `cargo bench` passes `--bench`, which is accepted and ignored.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use metarim_core::env::{Action, Env, Observation, VIEW_CELLS};
use metarim_core::levels::Level;
use metarim_core::rng::Pcg32;

/// Median of `samples` timings of `iters` calls of `f`, in nanoseconds per call.
fn median_ns(samples: usize, iters: u64, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / iters as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> ExitCode {
    let mut level_id = "BabyAI-GoToLocal-v0".to_string();
    let mut samples = 11usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--level" => level_id = args.next().unwrap_or_default(),
            "--samples" => {
                samples = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(11)
                    .max(1)
            }
            _ => {} // --bench and filters from cargo
        }
    }
    let Ok(level) = Level::from_id(&level_id) else {
        eprintln!("error: unknown level id {level_id:?}");
        return ExitCode::FAILURE;
    };
    let mut env = match Env::new(8, 8) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = level.reset(&mut env, 0) {
        eprintln!("error: {level_id} failed to generate: {e}");
        return ExitCode::FAILURE;
    }

    // step + observe, resetting at the end of each episode (as in `metarim env bench`).
    let mut rng = Pcg32::new(1);
    let mut obs: Observation = [[0; 3]; VIEW_CELLS];
    let mut seed = 1u64;
    let step = median_ns(samples, 200_000, || {
        let a = Action::ALL[rng.below(7) as usize];
        let out = env.step(a);
        env.observe(&mut obs);
        black_box(&obs);
        if out.terminated || out.truncated {
            seed += 1;
            let _ = level.reset(&mut env, seed);
        }
    });
    // observe alone, on the state the loop above left.
    let observe = median_ns(samples, 200_000, || {
        env.observe(&mut obs);
        black_box(&obs);
    });
    let reset = median_ns(samples, 20_000, || {
        seed += 1;
        let _ = black_box(level.reset(&mut env, seed));
    });
    println!(
        "{level_id}: step+observe (incl. resets) {step:.1} ns/step ({:.0} steps/s)",
        1e9 / step
    );
    println!("{level_id}: observe {observe:.1} ns");
    println!(
        "{level_id}: reset {reset:.1} ns ({:.0} resets/s)",
        1e9 / reset
    );
    ExitCode::SUCCESS
}
