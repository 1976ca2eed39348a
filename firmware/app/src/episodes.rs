//! Running the policy over episodes (evaluation), with the seed scheme of the host evaluator and
//! of `metarim_core::adapt::play_episodes`
//! (`host/src/train/eval.rs`): episode `i` of seed `S` draws its level seed and its actions from
//! core's `episode_stream(S, i)`, so the same seed gives the same episodes on the host.

use metarim_core::adapt::Session;
use metarim_core::env::{Action, Observation, VIEW_CELLS};
use metarim_core::levels::Level;
use metarim_core::nn::params::GroupBufs;
use metarim_core::nn::sample::{argmax_action, sample_action};
use metarim_core::Error;

use crate::cycles;

/// Everything a policy run touches, all of it in static memory: core's acting session (layout,
/// parameters, environment, actor) and the fast group as exported, which the adaptation guard
/// restores.
pub struct Ctx<'a> {
    /// Layout, the fast group (RAM; adapted on the device), the frozen slow and other groups
    /// (flash), the gridworld and the acting state.
    pub session: Session<'a>,
    /// The fast group as exported (flash), restored by the adaptation guard.
    pub initial_fast: &'a [f32],
}

/// Totals over a set of episodes.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Episodes run.
    pub episodes: u32,
    /// Episodes that succeeded (positive reward).
    pub successes: u32,
    /// Sum of the returns.
    pub return_sum: f64,
    /// Environment steps (one policy step each).
    pub steps: u64,
    /// FNV-1a 64 over the actions taken, one byte (the action index) per step, in order:
    /// the C example (`firmware/c-example`) prints the same digest for the same blob.
    pub actions_fnv: u64,
    /// Cycles spent in policy steps (0 where no cycle counter: QEMU).
    pub policy_cycles: u64,
    /// Cycles of the whole phase, environment included (0 under QEMU).
    pub cycles: u64,
}

/// FNV-1a 64 offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            episodes: 0,
            successes: 0,
            return_sum: 0.0,
            steps: 0,
            actions_fnv: FNV_OFFSET,
            policy_cycles: 0,
            cycles: 0,
        }
    }
}

impl Stats {
    /// Success rate in [0, 1].
    pub fn success_rate(&self) -> f64 {
        if self.episodes == 0 {
            0.0
        } else {
            f64::from(self.successes) / f64::from(self.episodes)
        }
    }
    /// Mean return.
    pub fn mean_return(&self) -> f64 {
        if self.episodes == 0 {
            0.0
        } else {
            self.return_sum / f64::from(self.episodes)
        }
    }
}

/// Run `episodes` episodes of `level` from `seed`. Each environment step evaluates the policy
/// `repeat` times from the same state, and each level is generated `reset_repeat` times
/// (identical results; values above 1 only serve to measure the instructions of a policy step
/// and of a level generation by difference).
pub fn run(
    ctx: &mut Ctx<'_>,
    level: &Level,
    seed: u64,
    episodes: u32,
    argmax: bool,
    repeat: u32,
    reset_repeat: u32,
) -> Result<Stats, Error> {
    let mut stats = Stats::default();
    let phase_start = cycles::now();
    let mut obs: Observation = [[0u8; 3]; VIEW_CELLS];
    let s = &mut ctx.session;
    for i in 0..episodes {
        let (mut rng, level_seed) = s.begin_episode(level, seed, u64::from(i))?;
        // `reset-repeat`: the same level generated again (identically: the same seed), only to
        // count its instructions.
        for _ in 1..reset_repeat.max(1) {
            level.reset(s.env, level_seed)?;
        }
        let mut ret = 0.0f64;
        loop {
            s.env.observe(&mut obs);
            let saved = s.actor.state;
            let t = cycles::now();
            for r in 0..repeat.max(1) {
                if r > 0 {
                    s.actor.state = saved;
                }
                let params = GroupBufs {
                    fast: &s.fast[..],
                    slow: s.slow,
                    other: s.other,
                };
                s.actor.step_with(s.layout, params, &obs)?;
            }
            stats.policy_cycles += cycles::now().wrapping_sub(t);
            let (a, _) = if argmax {
                argmax_action(&s.actor.logits)
            } else {
                sample_action(&s.actor.logits, &mut rng)
            };
            stats.actions_fnv = (stats.actions_fnv ^ u64::from(a as u8)).wrapping_mul(FNV_PRIME);
            let out = s.env.step(Action::from_index(a as i64)?);
            ret += f64::from(out.reward);
            stats.steps += 1;
            if out.terminated || out.truncated {
                stats.episodes += 1;
                stats.successes += u32::from(out.reward > 0.0);
                stats.return_sum += ret;
                break;
            }
        }
    }
    stats.cycles = cycles::now().wrapping_sub(phase_start);
    Ok(stats)
}
