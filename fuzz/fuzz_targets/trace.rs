//! Trace loader and replay (`host::trace`: `parse_episode`, `load_env`, `replay_reader`, what
//! `metarim env replay` runs on every line of a trace file; the initial state goes through
//! `metarim_core::state`'s `Env::from_state`).
//!
//! Checks, for any input: reading and replaying never panics and every non-empty line is
//! counted once (matched + reported failures = total); each line that parses as an episode
//! writes back (`write_episode`) to a line that parses to the same episode (rewards within
//! 1 ulp: the JSON float parser need not be correctly rounded) and replays with the same
//! verdict; an episode whose state loads is dumped by `episode_from_env` with the same size,
//! pose and mission, and that dump loads and dumps to itself.
#![no_main]

use std::io::Cursor;

use host::trace::{self, Episode};
use libfuzzer_sys::fuzz_target;

/// `a` and `b` are the same episode, rewards compared to within one ulp.
fn same_episode(a: &Episode, b: &Episode) -> bool {
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs());
    let mut b2 = b.clone();
    for (s, t) in b2.steps.iter_mut().zip(&a.steps) {
        if close(s.reward, t.reward) {
            s.reward = t.reward;
        }
    }
    *a == b2
}

fn check_line(line: &str) {
    let Ok(ep) = trace::parse_episode(line) else {
        return;
    };
    let mut out = Vec::new();
    trace::write_episode(&mut out, &ep).expect("writing to a Vec");
    let text = std::str::from_utf8(&out).expect("JSON is UTF-8");
    assert!(text.ends_with('\n') && !text[..text.len() - 1].contains('\n'));
    let back = trace::parse_episode(text.trim_end()).expect("a written episode parses");
    assert!(same_episode(&ep, &back), "{ep:?}\n{back:?}");
    let verdict = trace::replay_episode(0, &ep);
    assert_eq!(
        verdict.is_ok(),
        trace::replay_episode(0, &back).is_ok(),
        "replay verdict changed by a write/parse round trip"
    );
    if let Ok(env) = trace::load_env(&ep) {
        let dumped = trace::episode_from_env(&ep.env_id, ep.seed, &env);
        assert_eq!(
            (
                dumped.width,
                dumped.height,
                dumped.agent_pos,
                dumped.agent_dir
            ),
            (ep.width, ep.height, ep.agent_pos, ep.agent_dir)
        );
        assert_eq!(dumped.mission, ep.mission);
        // Decoding normalises cells (an empty cell's colour, a key's state); the dump is a
        // fixed point: it loads, and dumps to itself.
        let env2 = trace::load_env(&dumped).expect("a dumped state loads");
        let again = trace::episode_from_env(&ep.env_id, ep.seed, &env2);
        assert_eq!(again, dumped);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut failures = 0usize;
    let summary = trace::replay_reader(Cursor::new(data), "fuzz input", |_| failures += 1);
    match summary {
        Ok(s) => assert_eq!(s.matched + failures, s.total),
        // Only an I/O error stops a replay: here, a line that is not UTF-8.
        Err(e) => assert!(std::str::from_utf8(data).is_err(), "{e:#}"),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            check_line(line);
        }
    }
});
