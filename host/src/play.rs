//! `metarim env play`: an episode rendered in the terminal, driven by keys read line by line
//! from stdin or by seeded random actions.
//!
//! Keys (any number per line, whitespace ignored): `a` left, `d` right, `w` forward,
//! `p` pickup, `o` drop, `t` toggle, `n` done, or the action indices `0`-`6`; `q` quits.
//! Without a terminal on stdin the same keys are read from whatever is piped in, so
//! `echo wwdw | metarim env play --level ...` works; end of input ends the episode.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, Result};
use metarim_core::env::{Action, Env, StepOutcome};
use metarim_core::rng::{split_mix64, Pcg32};

/// What `play` was asked to do.
#[derive(Clone, Debug)]
pub struct PlayOptions {
    /// Level id.
    pub level: String,
    /// Seed given to the level's `reset`.
    pub seed: u64,
    /// Take seeded random actions instead of reading keys.
    pub random: bool,
    /// Stop after this many actions (default: when the episode ends).
    pub steps: Option<u64>,
    /// Pause between frames in random mode, in milliseconds.
    pub delay_ms: u64,
    /// Clear the screen between frames (ANSI), when stdout is a terminal.
    pub clear: bool,
    /// BabyAI's done-action rules ([`Env::done_actions`]).
    pub done_actions: bool,
}

/// How an episode of `play` ended.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlaySummary {
    /// Actions taken.
    pub steps: u64,
    /// Sum of rewards.
    pub total_reward: f64,
    /// The episode terminated (success or failure).
    pub terminated: bool,
    /// The step budget ran out.
    pub truncated: bool,
}

/// The action a key stands for; `None` for keys with no action.
pub fn key_action(c: char) -> Option<Action> {
    let i = match c.to_ascii_lowercase() {
        'a' => 0,
        'd' => 1,
        'w' => 2,
        'p' => 3,
        'o' => 4,
        't' => 5,
        'n' => 6,
        d @ '0'..='6' => d as i64 - '0' as i64,
        _ => return None,
    };
    Action::from_index(i).ok()
}

/// One frame: header, mission, grid (agent drawn as an arrow), carried object.
pub fn render(
    env: &Env,
    level: &str,
    seed: u64,
    total_reward: f64,
    last: Option<(Action, StepOutcome)>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{level}  seed={seed}  step {}/{}  return={total_reward:.4}",
        env.step_count, env.max_steps
    );
    let _ = writeln!(s, "mission: {}", env.mission.as_str());
    let _ = env.write_ascii(&mut s);
    let carrying = env.carrying.map_or_else(
        || "nothing".to_string(),
        |o| format!("{} {}", o.color.name(), o.kind.name()),
    );
    let _ = write!(s, "carrying: {carrying}");
    if let Some((a, out)) = last {
        let _ = write!(
            s,
            "  last: {} reward={:.4}",
            crate::render::action_name(a),
            out.reward
        );
        if out.terminated {
            s.push_str(" terminated");
        }
        if out.truncated {
            s.push_str(" truncated");
        }
    }
    s.push('\n');
    s
}

/// Play one episode, reading keys from `input` unless `opts.random`, writing frames to `out`.
pub fn play<R: BufRead, W: Write>(
    opts: &PlayOptions,
    input: R,
    out: &mut W,
) -> Result<PlaySummary> {
    let level = crate::levels::lookup(&opts.level)?;
    let mut env = Env::new(8, 8).map_err(|e| anyhow!("creating the environment: {e}"))?;
    env.done_actions = opts.done_actions;
    level.reset(&mut env, opts.seed).map_err(|e| {
        anyhow!(
            "level {} failed to generate for seed {}: {e}",
            opts.level,
            opts.seed
        )
    })?;
    let mut rng = Pcg32::new(split_mix64(opts.seed));
    let mut summary = PlaySummary::default();
    let limit = opts.steps.unwrap_or(u64::MAX);
    let frame = |out: &mut W, env: &Env, total: f64, last| -> Result<()> {
        if opts.clear {
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(render(env, &opts.level, opts.seed, total, last).as_bytes())?;
        if !opts.random {
            out.write_all(b"keys: a left, d right, w forward, p pickup, o drop, t toggle, n done, 0-6, q quit\n")?;
        }
        out.flush()?;
        Ok(())
    };
    frame(out, &env, 0.0, None)?;
    let apply =
        |a: Action, env: &mut Env, out: &mut W, summary: &mut PlaySummary| -> Result<bool> {
            let o = env.step(a);
            summary.steps += 1;
            summary.total_reward += f64::from(o.reward);
            summary.terminated = o.terminated;
            summary.truncated = o.truncated;
            frame(out, env, summary.total_reward, Some((a, o)))?;
            Ok(o.terminated || o.truncated || summary.steps >= limit)
        };
    if opts.random {
        while summary.steps < limit {
            let a = Action::ALL[rng.below(Action::ALL.len() as u32) as usize];
            if apply(a, &mut env, out, &mut summary)? {
                break;
            }
            if opts.delay_ms > 0 {
                std::thread::sleep(Duration::from_millis(opts.delay_ms));
            }
        }
    } else if limit > 0 {
        'lines: for line in input.lines() {
            let line = line.map_err(|e| anyhow!("reading keys from stdin: {e}"))?;
            for c in line.chars().filter(|c| !c.is_whitespace()) {
                if c.eq_ignore_ascii_case(&'q') {
                    break 'lines;
                }
                match key_action(c) {
                    Some(a) => {
                        if apply(a, &mut env, out, &mut summary)? {
                            break 'lines;
                        }
                    }
                    None => writeln!(out, "unknown key {c:?} (a/d/w/p/o/t/n, 0-6, q)")?,
                }
            }
        }
    }
    writeln!(
        out,
        "play: {} seed={} steps={} return={:.4} terminated={} truncated={}",
        opts.level,
        opts.seed,
        summary.steps,
        summary.total_reward,
        summary.terminated,
        summary.truncated
    )?;
    out.flush()?;
    Ok(summary)
}

/// Whether stdout is a terminal (frames are then drawn in place).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
