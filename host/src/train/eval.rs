//! Evaluation of a policy: episodes on a level with seeded generators, split across threads,
//! with 95% intervals (Wilson for the success rate, normal for the mean return).
//!
//! Invariant: episode `i` of a seed is the same episode (same level seed, same action draws)
//! whatever the thread count, so results are reproducible.

use anyhow::{anyhow, Result};
use metarim_core::env::{Action, Env, Observation, Task, VIEW_CELLS};
use metarim_core::levels::Level;
use metarim_core::mission::instr::{Action as InstrAction, Clause, Instr, ObjDesc};
use metarim_core::mission::verify::{Status, Verifier};
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::policy::{state_len, Policy, MAX_MODULES};
use metarim_core::rng::{episode_stream, split_mix64, Pcg32};
use metarim_core::world::{Object, ObjectKind};

use super::reader::{CannotFollow, Idle, ScriptedReader};
use super::{argmax_action, sample_action, thread_count, Model};
use crate::model::StepWork;
use crate::threads::join_all;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Episodes.
    pub episodes: usize,
    /// Seed of the episodes.
    pub seed: u64,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Take the most likely action instead of sampling.
    pub argmax: bool,
    /// Grounding check: show the policy the mission of another episode of the same level (a
    /// different string) while success is still judged by the episode's own mission. A policy
    /// that reads its instruction drops towards chance; one that ignores it does not.
    pub swap_missions: bool,
    /// Judge by BabyAI's done-action rules ([`TrainConfig::done_actions`]): what a checkpoint
    /// trained under them is evaluated with.
    ///
    /// [`TrainConfig::done_actions`]: crate::train::TrainConfig::done_actions
    pub done_actions: bool,
}

/// Who acts in an evaluated episode.
#[derive(Clone, Copy, Debug)]
pub enum Agent<'a> {
    /// A trained policy.
    Policy(&'a Model),
    /// The scripted reader of [`super::reader`], which reads `go to` missions perfectly: the
    /// yardstick of the grounding check; what it does once it has nothing left to do.
    ScriptedReader(Idle),
}

/// One evaluated episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeResult {
    /// Reached the goal.
    pub success: bool,
    /// Return.
    pub ret: f64,
    /// Steps.
    pub len: u32,
    /// The policy was shown another episode's mission (only with `swap_missions`, and only
    /// where the level has another mission to show).
    pub mission_swapped: bool,
    /// In a swapped episode whose shown mission could be carried out here (every object it
    /// names is in this episode's world): whether the agent carried it out at some step,
    /// judged by the shown mission's own verifier alongside the episode's. `None` otherwise.
    pub followed_shown: Option<bool>,
    /// How it ended.
    pub ending: Ending,
    /// The agent completed its own mission at some step by the default rules' check (for a
    /// `go to`, it faced the object): the same as `success` under the default rules; under the
    /// done-action rules, whether it got there, whatever it did next.
    pub reached_own: bool,
}

/// How an evaluated episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The mission succeeded.
    Success,
    /// The episode ran out of steps.
    TimedOut,
    /// Under the done-action rules: a `done` that did not follow the step completing the
    /// mission, said facing an object a mission can name (key, ball, box, door); on a single
    /// `go to` mission, how that object differs from the description (facing a described one,
    /// any step completes a `go to`, so there it is never the described object).
    DoneAtObject(Option<Mismatch>),
    /// Under the done-action rules: such a `done` said facing a wall or an empty cell.
    DoneElsewhere,
    /// Any other failure (a failed mission, lava).
    Failed,
}

/// How the object an agent said `done` at differs from its `go to` mission's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The described type in another colour.
    Colour,
    /// The described colour (or any colour, where the mission names none) but another type.
    Kind,
    /// Neither type nor colour described.
    Both,
}

impl Mismatch {
    /// How `obj` differs from `desc`: `None` where type and colour both fit (the description's
    /// location, if it has one, is what rules it out).
    fn of(desc: &ObjDesc, obj: &Object) -> Option<Mismatch> {
        let kind_fits = desc.kind.is_none_or(|k| k == obj.kind);
        let colour_fits = desc.color.is_none_or(|c| c == obj.color);
        match (kind_fits, colour_fits) {
            (true, true) => None,
            (true, false) => Some(Mismatch::Colour),
            (false, true) => Some(Mismatch::Kind),
            (false, false) => Some(Mismatch::Both),
        }
    }
}

/// Aggregate results.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalResult {
    /// Level id.
    pub level: String,
    /// Episodes run.
    pub episodes: usize,
    /// Success rate.
    pub success: f64,
    /// 95% Wilson interval of the success rate.
    pub success_ci: (f64, f64),
    /// Mean return.
    pub mean_return: f64,
    /// Half-width of the 95% normal interval of the mean return.
    pub return_ci: f64,
    /// Mean episode length.
    pub mean_len: f64,
    /// Episodes whose policy was shown another episode's mission (0 without `swap_missions`,
    /// and on levels with a single mission).
    pub missions_swapped: usize,
    /// Of those, the episodes that succeeded at their own mission.
    pub swapped_successes: usize,
    /// Swapped episodes whose shown mission could be carried out in the episode's world.
    pub shown_feasible: usize,
    /// Of those, the episodes in which the agent carried out the shown mission.
    pub followed_shown: usize,
    /// Of those, the episodes that still succeeded at their own mission.
    pub feasible_successes: usize,
    /// Of those, the ones that had carried out the shown mission first (or at the same step):
    /// the episode goes on after the shown mission is done, so these own-mission successes
    /// came after the agent had done what it was shown.
    pub followed_then_own: usize,
    /// Episodes that ran out of steps.
    pub timed_out: usize,
    /// Episodes ended by a `done` that did not follow the step completing the mission, facing
    /// a key, ball, box or door (done-action rules only).
    pub done_at_object: usize,
    /// Of those, on single `go to` missions: the object was of the type the episode's own
    /// mission describes in another colour, of its colour and another type, or neither.
    pub done_wrong_colour: usize,
    /// See [`Self::done_wrong_colour`].
    pub done_wrong_type: usize,
    /// See [`Self::done_wrong_colour`].
    pub done_wrong_both: usize,
    /// Episodes ended by such a `done` facing a wall or an empty cell.
    pub done_elsewhere: usize,
    /// Episodes that failed in any other way (a failed mission, lava).
    pub failed_other: usize,
    /// Failed episodes (timed out or early) in which the agent had completed its own mission
    /// at some step by the default rules' check: under the done-action rules, it got there and
    /// did not say `done` right after (always 0 under the default rules, where that is success).
    pub reached_then_failed: usize,
}

impl EvalResult {
    /// How the episodes ended: successes, running out of steps, (under the done-action rules)
    /// a `done` at the wrong moment and where, other failures; and, under the done-action
    /// rules, how many failures had reached the goal on the way.
    pub fn endings_line(&self, done_actions: bool) -> String {
        let failed = self.timed_out + self.done_at_object + self.done_elsewhere + self.failed_other;
        let succeeded = self.episodes - failed;
        let wrong = self.done_wrong_colour + self.done_wrong_type + self.done_wrong_both;
        let which = if wrong > 0 {
            format!(
                ": {} of the described type in another colour, {} of the described colour and \
                 another type, {} neither",
                self.done_wrong_colour, self.done_wrong_type, self.done_wrong_both
            )
        } else {
            String::new()
        };
        let (done, reached) = if done_actions {
            (
                format!(
                    ", {} said `done` without completing the mission ({} facing an object{which}; \
                     {} facing none)",
                    self.done_at_object + self.done_elsewhere,
                    self.done_at_object,
                    self.done_elsewhere
                ),
                format!(
                    "; in {} of the {failed} failures it had completed its mission at some step \
                     and not said `done` right after",
                    self.reached_then_failed
                ),
            )
        } else {
            (String::new(), String::new())
        };
        format!(
            "endings: {succeeded} succeeded, {} ran out of steps{done}, {} failed otherwise{reached}",
            self.timed_out, self.failed_other
        )
    }
}

/// Success with the episodes' own missions and, on the same episodes and action draws, with
/// swapped missions: how much of the success comes from reading the instruction.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Grounding {
    /// The normal evaluation.
    pub own: EvalResult,
    /// The same episodes, each shown another episode's mission.
    pub swapped: EvalResult,
}

impl Grounding {
    /// The one-line report: both success rates with their 95% intervals, side by side.
    pub fn line(&self) -> String {
        let (o, s) = (&self.own, &self.swapped);
        let note = if s.missions_swapped == 0 {
            " (this level has one mission: swapping shows the same one, so the two agree)"
                .to_string()
        } else if s.missions_swapped < s.episodes {
            format!(
                " ({} of {} episodes had another mission to show)",
                s.missions_swapped, s.episodes
            )
        } else {
            String::new()
        };
        let followed = if s.shown_feasible > 0 {
            let (lo, hi) = wilson(s.followed_shown, s.shown_feasible);
            let (slo, shi) = wilson(s.feasible_successes, s.shown_feasible);
            format!(
                "; in the {} swapped episodes whose shown mission could be carried out, it \
                 carried that out in {} ({:.4}, 95% CI {lo:.4}-{hi:.4}) and succeeded at its \
                 own in {} ({:.4}, 95% CI {slo:.4}-{shi:.4}; {} of them after carrying out the \
                 shown one)",
                s.shown_feasible,
                s.followed_shown,
                s.followed_shown as f64 / s.shown_feasible as f64,
                s.feasible_successes,
                s.feasible_successes as f64 / s.shown_feasible as f64,
                s.followed_then_own
            )
        } else {
            String::new()
        };
        format!(
            "grounding: success {:.4} (95% CI {:.4}-{:.4}) with its own mission, {:.4} (95% CI \
             {:.4}-{:.4}) with another episode's{note}{followed}",
            o.success, o.success_ci.0, o.success_ci.1, s.success, s.success_ci.0, s.success_ci.1
        )
    }
}

/// [`evaluate`] twice on the same episodes: with their own missions, then swapped.
pub fn grounding(model: &Model, level: &Level, opts: &EvalOptions) -> Result<Grounding> {
    grounding_of(Agent::Policy(model), level, opts)
}

/// [`grounding`] for any [`Agent`].
pub fn grounding_of(agent: Agent<'_>, level: &Level, opts: &EvalOptions) -> Result<Grounding> {
    let own = evaluate_of(
        agent,
        level,
        &EvalOptions {
            swap_missions: false,
            ..opts.clone()
        },
    )?;
    let swapped = evaluate_of(
        agent,
        level,
        &EvalOptions {
            swap_missions: true,
            ..opts.clone()
        },
    )?;
    Ok(Grounding { own, swapped })
}

/// What the grounding check gives on the same episodes for an agent that reads perfectly (the
/// scripted reader): its swapped-mission results if it stays once it is done, and if it then
/// wanders. Tells a reading policy's swapped figure from its idle behaviour.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Yardstick {
    /// The reader that stays ([`Idle::Stay`]).
    pub stay: EvalResult,
    /// The reader that wanders ([`Idle::Wander`]).
    pub wander: EvalResult,
}

impl Yardstick {
    /// The one-line report.
    pub fn line(&self) -> String {
        let (s, w) = (&self.stay, &self.wander);
        format!(
            "yardstick: on these episodes an agent that reads perfectly scores {:.4} (95% CI \
             {:.4}-{:.4}) with another episode's mission if it stays once done, {:.4} (95% CI \
             {:.4}-{:.4}) if it then wanders",
            s.success, s.success_ci.0, s.success_ci.1, w.success, w.success_ci.0, w.success_ci.1
        )
    }
}

/// The [`Yardstick`] of `level`'s episodes under `opts`, or `None` where the scripted reader
/// cannot follow the level's missions (anything but `go to`, in any episode or shown mission).
pub fn yardstick(level: &Level, opts: &EvalOptions) -> Result<Option<Yardstick>> {
    let o = EvalOptions {
        swap_missions: true,
        ..opts.clone()
    };
    // The reader refuses a mission it cannot follow with its own error type, which the
    // evaluation's threads pass on: that, and only that, means "no yardstick here".
    let swapped = |idle| match evaluate_of(Agent::ScriptedReader(idle), level, &o) {
        Err(e) if e.downcast_ref::<CannotFollow>().is_some() => Ok(None),
        r => r.map(Some),
    };
    let Some(stay) = swapped(Idle::Stay)? else {
        return Ok(None);
    };
    Ok(swapped(Idle::Wander)?.map(|wander| Yardstick { stay, wander }))
}

/// The 95% Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n = n as f64;
    let p = k as f64 / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// What [`run_episode`] reports to its observer: the initial state (no action yet), then each
/// step.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// The action just taken (`None` for the initial state).
    pub action: Option<Action>,
    /// Its reward.
    pub reward: f32,
    /// Modules active in the step (all false for the initial state and the LSTM).
    pub active: [bool; MAX_MODULES],
}

/// Run episode `i` of `opts.seed` on `level` under `opts`' rules (its `episodes` and `threads`
/// do not matter here); `on_step` sees the initial state, then the env after each step.
pub fn run_episode(
    model: &Model,
    level: &Level,
    opts: &EvalOptions,
    i: u64,
    on_step: impl FnMut(&Env, &StepInfo),
) -> Result<EpisodeResult> {
    run_agent_episode(Agent::Policy(model), level, opts, i, on_step)
}

/// Tries at finding another episode whose mission differs, for [`EvalOptions::swap_missions`].
const SWAP_TRIES: usize = 64;

/// Another episode's mission, shown to the policy in a swapped episode.
struct Shown {
    /// Another mission was found (levels with a single mission fall back to their own).
    swapped: bool,
    /// Its instruction, on BabyAI levels (MiniGrid levels' tasks are not instructions).
    instr: Option<Instr>,
}

/// The mission the policy is shown in a swapped episode: that of the first later episode seed
/// (drawn from the episode's own generator, after its level seed) whose mission differs from
/// `own`, tokenised into `tokens`. Levels with a single mission fall back to `own`.
fn swapped_mission(level: &Level, rng: &mut Pcg32, own: &str, tokens: &mut [u16]) -> Result<Shown> {
    let mut other = Env::new(8, 8).map_err(|e| anyhow!("creating an env: {e}"))?;
    let mut found = false;
    for _ in 0..SWAP_TRIES {
        let s = rng.next_u64();
        level
            .reset(&mut other, s)
            .map_err(|e| anyhow!("level {} failed for seed {s}: {e}", level.id()))?;
        if other.mission.as_str() != own {
            found = true;
            break;
        }
    }
    let shown = if found { other.mission.as_str() } else { own };
    tokenize(shown, tokens).map_err(|e| anyhow!("mission: {e}"))?;
    let instr = match &other.task {
        Task::Instr(v) if found => Some(*v.instr()),
        _ => None,
    };
    Ok(Shown {
        swapped: found,
        instr,
    })
}

/// The shown mission's verifier on this episode's world at its start, when every object the
/// mission names is there (otherwise it cannot be carried out, and nothing is tracked).
fn shown_verifier(env: &Env, instr: &Instr) -> Option<Verifier> {
    let v = Verifier::new(instr, &env.world_view()).ok()?;
    let (counts, n) = v.match_counts();
    counts.get(..n)?.iter().all(|c| *c > 0).then_some(v)
}

/// A mission's verifier run beside the episode's own: its verdict so far, updated after each
/// step until it succeeds or fails (positions refreshed after a drop, as the env does).
struct MissionTracker {
    verifier: Verifier,
    status: Status,
    done_actions: bool,
}

impl MissionTracker {
    fn new(verifier: Verifier, done_actions: bool) -> Self {
        MissionTracker {
            verifier,
            status: Status::Continue,
            done_actions,
        }
    }

    /// Judge `action`, just applied to `env`.
    fn after_step(&mut self, action: Action, env: &Env) {
        if self.status != Status::Continue {
            return;
        }
        if action == Action::Drop {
            self.verifier.refresh_positions(&env.grid);
        }
        self.status = self
            .verifier
            .verify(action as u8, &env.world_view(), self.done_actions);
    }

    fn succeeded(&self) -> bool {
        self.status == Status::Success
    }
}

/// What acts in one episode: a policy with its buffers, or the scripted reader.
enum Actor<'a> {
    Policy {
        policy: Policy<'a, f32>,
        work: StepWork<f32>,
        instr: Vec<f32>,
        state: Vec<f32>,
        argmax: bool,
    },
    Reader(ScriptedReader),
}

impl<'a> Actor<'a> {
    /// Ready to act on the mission `tokens` (its instruction `instr`, where the level has one)
    /// in `env`'s world.
    fn new(
        agent: Agent<'a>,
        env: &Env,
        tokens: &[u16; MAX_TOKENS],
        instr: Option<&Instr>,
        argmax: bool,
    ) -> Result<Self> {
        match agent {
            Agent::Policy(model) => {
                let policy = model.policy()?;
                let d = model.layout.dims();
                let mut work = StepWork::new(d);
                let mut embedding = vec![0.0f32; d.instr_hidden];
                work.encode_instruction(&policy, tokens, &mut embedding)
                    .map_err(|e| anyhow!("policy: {e}"))?;
                Ok(Actor::Policy {
                    policy,
                    work,
                    instr: embedding,
                    state: vec![0.0f32; state_len(d)],
                    argmax,
                })
            }
            Agent::ScriptedReader(idle) => match instr {
                Some(instr) => Ok(Actor::Reader(ScriptedReader::new(instr, env, idle)?)),
                // A MiniGrid task is no instruction.
                None => Err(CannotFollow {
                    mission: env.mission.as_str().to_string(),
                }
                .into()),
            },
        }
    }

    /// The action for this step, and the modules active in it.
    fn act(
        &mut self,
        env: &Env,
        obs: &Observation,
        rng: &mut Pcg32,
    ) -> Result<(usize, [bool; MAX_MODULES])> {
        match self {
            Actor::Policy {
                policy,
                work,
                instr,
                state,
                argmax,
            } => {
                work.step(policy, obs, instr, state)
                    .map_err(|e| anyhow!("policy: {e}"))?;
                let active = policy.active_in_cache(&work.cache);
                let (a, _) = if *argmax {
                    argmax_action(&work.logits)
                } else {
                    sample_action(&work.logits, rng)
                };
                std::mem::swap(state, &mut work.next);
                Ok((a, active))
            }
            Actor::Reader(r) => Ok((r.act(env, obs, rng) as usize, [false; MAX_MODULES])),
        }
    }
}

/// [`run_episode`] for any [`Agent`], showing it another episode's mission with
/// `opts.swap_missions`.
pub fn run_agent_episode(
    agent: Agent<'_>,
    level: &Level,
    opts: &EvalOptions,
    i: u64,
    mut on_step: impl FnMut(&Env, &StepInfo),
) -> Result<EpisodeResult> {
    let (argmax, swap_mission) = (opts.argmax, opts.swap_missions);
    let (mut rng, episode_seed) = episode_stream(opts.seed, i);
    let mut env = Env::new(8, 8).map_err(|e| anyhow!("creating an env: {e}"))?;
    env.done_actions = opts.done_actions;
    level
        .reset(&mut env, episode_seed)
        .map_err(|e| anyhow!("level {} failed for seed {episode_seed}: {e}", level.id()))?;
    let mut tokens = [0u16; MAX_TOKENS];
    let mut mission_swapped = false;
    // The shown mission's verdict so far (swapped episodes only), under the episode's rules.
    let mut shown: Option<MissionTracker> = None;
    let own_instr = match &env.task {
        Task::Instr(v) => Some(*v.instr()),
        _ => None,
    };
    // Under the done-action rules, whether the agent gets to its own goal at all: the
    // episode's verifier judged by the default rules.
    let mut own_reached = match &env.task {
        Task::Instr(v) if env.done_actions => Some(MissionTracker::new(v.clone(), false)),
        _ => None,
    };
    let shown_instr = if swap_mission {
        // A separate generator, so the action draws stay those of the unswapped episode.
        let mut swap_rng = Pcg32::with_stream(split_mix64(episode_seed), u64::MAX);
        let s = swapped_mission(level, &mut swap_rng, env.mission.as_str(), &mut tokens)?;
        mission_swapped = s.swapped;
        shown = s
            .instr
            .and_then(|i| shown_verifier(&env, &i))
            .map(|v| MissionTracker::new(v, env.done_actions));
        if s.swapped {
            s.instr
        } else {
            own_instr
        }
    } else {
        tokenize(env.mission.as_str(), &mut tokens).map_err(|e| anyhow!("mission: {e}"))?;
        own_instr
    };
    let mut actor = Actor::new(agent, &env, &tokens, shown_instr.as_ref(), argmax)?;
    let mut obs = [[0u8; 3]; VIEW_CELLS];
    let mut ret = 0.0f64;
    on_step(
        &env,
        &StepInfo {
            action: None,
            reward: 0.0,
            active: [false; MAX_MODULES],
        },
    );
    loop {
        env.observe(&mut obs);
        let (a, active) = actor.act(&env, &obs, &mut rng)?;
        let out = env.step(Action::ALL[a]);
        for tracker in [shown.as_mut(), own_reached.as_mut()].into_iter().flatten() {
            tracker.after_step(Action::ALL[a], &env);
        }
        ret += f64::from(out.reward);
        on_step(
            &env,
            &StepInfo {
                action: Some(Action::ALL[a]),
                reward: out.reward,
                active,
            },
        );
        if out.terminated || out.truncated {
            let success = out.reward > 0.0;
            let ending = if success {
                Ending::Success
            } else if !out.terminated {
                Ending::TimedOut
            } else if env.done_actions && Action::ALL[a] == Action::Done {
                match env.grid.get(env.front_pos()) {
                    Some(o) if o.kind.can_pickup() || o.kind == ObjectKind::Door => {
                        let go_to = match own_instr {
                            Some(Instr::Clause(Clause::Action(InstrAction::GoTo(d)))) => Some(d),
                            _ => None,
                        };
                        Ending::DoneAtObject(go_to.and_then(|d| Mismatch::of(&d, o)))
                    }
                    _ => Ending::DoneElsewhere,
                }
            } else {
                Ending::Failed
            };
            return Ok(EpisodeResult {
                success,
                ret,
                len: env.step_count,
                mission_swapped,
                followed_shown: shown.map(|t| t.succeeded()),
                ending,
                reached_own: own_reached.map_or(success, |t| t.succeeded()),
            });
        }
    }
}

/// Evaluate `model` on `level`.
pub fn evaluate(model: &Model, level: &Level, opts: &EvalOptions) -> Result<EvalResult> {
    evaluate_of(Agent::Policy(model), level, opts)
}

/// [`evaluate`] for any [`Agent`].
pub fn evaluate_of(agent: Agent<'_>, level: &Level, opts: &EvalOptions) -> Result<EvalResult> {
    let n = opts.episodes;
    let threads = thread_count(opts.threads, n);
    let per = n.div_ceil(threads).max(1);
    let idx: Vec<u64> = (0..n as u64).collect();
    let results: Vec<EpisodeResult> = std::thread::scope(|s| {
        let handles: Vec<_> = idx
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|i| run_agent_episode(agent, level, opts, *i, |_, _| {}))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        join_all(handles, "eval")
    })?
    .into_iter()
    .flatten()
    .collect();
    let k = results.iter().filter(|r| r.success).count();
    let count = |e: Ending| results.iter().filter(|r| r.ending == e).count();
    let nf = n.max(1) as f64;
    let mean = results.iter().map(|r| r.ret).sum::<f64>() / nf;
    let var = if n > 1 {
        results.iter().map(|r| (r.ret - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)
    } else {
        0.0
    };
    Ok(EvalResult {
        level: level.id().to_string(),
        episodes: n,
        success: k as f64 / nf,
        success_ci: wilson(k, n),
        mean_return: mean,
        return_ci: 1.959_963_984_540_054 * (var / nf).sqrt(),
        mean_len: results.iter().map(|r| f64::from(r.len)).sum::<f64>() / nf,
        missions_swapped: results.iter().filter(|r| r.mission_swapped).count(),
        swapped_successes: results
            .iter()
            .filter(|r| r.mission_swapped && r.success)
            .count(),
        shown_feasible: results
            .iter()
            .filter(|r| r.followed_shown.is_some())
            .count(),
        followed_shown: results
            .iter()
            .filter(|r| r.followed_shown == Some(true))
            .count(),
        feasible_successes: results
            .iter()
            .filter(|r| r.followed_shown.is_some() && r.success)
            .count(),
        followed_then_own: results
            .iter()
            .filter(|r| r.followed_shown == Some(true) && r.success)
            .count(),
        timed_out: count(Ending::TimedOut),
        done_at_object: results
            .iter()
            .filter(|r| matches!(r.ending, Ending::DoneAtObject(_)))
            .count(),
        done_wrong_colour: count(Ending::DoneAtObject(Some(Mismatch::Colour))),
        done_wrong_type: count(Ending::DoneAtObject(Some(Mismatch::Kind))),
        done_wrong_both: count(Ending::DoneAtObject(Some(Mismatch::Both))),
        done_elsewhere: count(Ending::DoneElsewhere),
        failed_other: count(Ending::Failed),
        reached_then_failed: results
            .iter()
            .filter(|r| !r.success && r.reached_own)
            .count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_brackets_the_rate() {
        let (lo, hi) = wilson(80, 100);
        assert!(lo < 0.8 && 0.8 < hi, "{lo} {hi}");
        assert!(
            (lo - 0.7112).abs() < 1e-3 && (hi - 0.8666).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, _) = wilson(0, 10);
        assert_eq!(lo, 0.0);
    }

    fn tiny_model(level: &str) -> Model {
        let cfg = crate::train::TrainConfig {
            preset: crate::train::config::Preset::Tiny,
            level: level.into(),
            ..crate::train::TrainConfig::device()
        };
        crate::train::run::initial_model(&cfg).unwrap()
    }

    fn opts(swap_missions: bool) -> EvalOptions {
        EvalOptions {
            episodes: 40,
            seed: 5,
            threads: 2,
            argmax: false,
            swap_missions,
            done_actions: false,
        }
    }

    #[test]
    fn swapped_mission_differs_where_missions_vary() {
        let level = crate::levels::lookup("BabyAI-GoToLocal-v0").unwrap();
        let mut env = Env::new(8, 8).unwrap();
        let mut own = [0u16; MAX_TOKENS];
        let mut shown = [0u16; MAX_TOKENS];
        for seed in 0..50u64 {
            level.reset(&mut env, seed).unwrap();
            tokenize(env.mission.as_str(), &mut own).unwrap();
            let mut rng = Pcg32::with_stream(seed, 3);
            swapped_mission(&level, &mut rng, env.mission.as_str(), &mut shown).unwrap();
            assert_ne!(own, shown, "seed {seed}: {:?}", env.mission.as_str());
        }
    }

    #[test]
    fn the_shown_mission_is_tracked_only_where_it_can_be_carried_out() {
        use metarim_core::mission::instr::{Action as Do, ObjDesc};
        use metarim_core::world::{Color, ObjectKind};
        let level = crate::levels::lookup("BabyAI-GoToLocal-v0").unwrap();
        let mut env = Env::new(8, 8).unwrap();
        for seed in 0..20u64 {
            level.reset(&mut env, seed).unwrap();
            let Task::Instr(own) = &env.task else {
                panic!("GoToLocal's task is an instruction")
            };
            // The episode's own mission names objects of its world.
            assert!(shown_verifier(&env, own.instr()).is_some(), "seed {seed}");
            // A kind and colour with no object in this world cannot be carried out.
            let absent = [ObjectKind::Key, ObjectKind::Ball, ObjectKind::Box]
                .into_iter()
                .flat_map(|k| Color::ALL.into_iter().map(move |c| (k, c)))
                .find(|&(k, c)| !env.grid.objects().any(|(_, o)| o.kind == k && o.color == c))
                .expect("8 objects leave some of 18 kinds and colours absent");
            let go = Instr::action(Do::GoTo(ObjDesc::new(Some(absent.0), Some(absent.1))));
            assert!(shown_verifier(&env, &go).is_none(), "seed {seed}");
        }
    }

    #[test]
    fn swapping_a_single_mission_level_changes_nothing() {
        // GoToRedBallGrey's mission is always "go to the red ball": the swap falls back to it,
        // and the action draws are those of the normal eval, so every episode is the same.
        let id = "BabyAI-GoToRedBallGrey-v0";
        let model = tiny_model(id);
        let level = crate::levels::lookup(id).unwrap();
        let g = grounding(&model, &level, &opts(true)).unwrap();
        assert_eq!(g.own, g.swapped);
        assert_eq!(g.swapped.missions_swapped, 0);
        assert!(g.line().contains("one mission"), "{}", g.line());
    }

    #[test]
    fn swapping_changes_what_the_policy_sees_where_missions_vary() {
        let id = "BabyAI-GoToLocal-v0";
        let model = tiny_model(id);
        let level = crate::levels::lookup(id).unwrap();
        let Grounding {
            own: plain,
            swapped,
        } = grounding(&model, &level, &opts(false)).unwrap();
        // Same episodes and action draws, another instruction embedding: the sampled
        // trajectories, hence the mean length, differ.
        assert_ne!(plain.mean_len, swapped.mean_len);
        assert_eq!((plain.missions_swapped, swapped.missions_swapped), (0, 40));
        // The shown mission is tracked in the swapped episodes whose world has its object.
        assert_eq!(
            (
                plain.shown_feasible,
                plain.followed_shown,
                plain.feasible_successes
            ),
            (0, 0, 0)
        );
        assert!(swapped.shown_feasible > 0 && swapped.shown_feasible <= 40);
        assert!(swapped.followed_shown <= swapped.shown_feasible);
        assert!(swapped.feasible_successes <= swapped.shown_feasible);
        assert_eq!(plain.followed_then_own, 0);
        assert!(
            swapped.followed_then_own <= swapped.followed_shown.min(swapped.feasible_successes)
        );
        let line = Grounding {
            own: plain.clone(),
            swapped,
        }
        .line();
        assert!(
            line.contains(&format!("success {:.4}", plain.success))
                && line.contains("with another episode's")
                && !line.contains("one mission"),
            "{line}"
        );
    }

    /// The scripted reader is the yardstick the grounding check is read against: it carries out
    /// every mission it is shown that can be carried out, unless its own succeeds first; it
    /// always succeeds with its own; and the swapped-mission success it leaves depends on what
    /// it does once it has nothing left to do.
    #[test]
    fn the_scripted_reader_does_what_it_is_shown() {
        let level = Level::from_id("BabyAI-GoToLocal-v0").unwrap();
        let o = EvalOptions {
            episodes: 300,
            ..opts(false)
        };
        let stay = grounding_of(Agent::ScriptedReader(Idle::Stay), &level, &o).unwrap();
        assert_eq!(stay.own.success, 1.0, "{}", stay.line());
        let s = &stay.swapped;
        assert!(s.shown_feasible > 50, "{}", stay.line());
        let own_first = s.feasible_successes - s.followed_then_own;
        assert_eq!(
            s.followed_shown + own_first,
            s.shown_feasible,
            "{}",
            stay.line()
        );
        let wander = grounding_of(Agent::ScriptedReader(Idle::Wander), &level, &o).unwrap();
        assert_eq!(wander.swapped.followed_shown, s.followed_shown);
        assert!(
            s.success < 0.35 && wander.swapped.success > s.success + 0.15,
            "stay: {}\nwander: {}",
            stay.line(),
            wander.line()
        );
    }

    /// Under BabyAI's done-action rules the reader says `done` where it faces what it was
    /// shown, so its own missions still all succeed, every shown mission that can be carried
    /// out is (nothing else ends an episode early), and another episode's mission succeeds
    /// only where its object also fits the episode's own, whatever it does once idle.
    #[test]
    fn under_done_action_rules_the_reader_says_done_and_idling_no_longer_succeeds() {
        let level = Level::from_id("BabyAI-GoToLocal-v0").unwrap();
        let o = EvalOptions {
            episodes: 300,
            done_actions: true,
            ..opts(false)
        };
        let plain = EvalOptions {
            done_actions: false,
            ..o.clone()
        };
        for idle in [Idle::Stay, Idle::Wander] {
            let g = grounding_of(Agent::ScriptedReader(idle), &level, &o).unwrap();
            assert_eq!(g.own.success, 1.0, "{idle:?}: {}", g.line());
            let s = &g.swapped;
            assert_eq!(s.followed_shown, s.shown_feasible, "{idle:?}: {}", g.line());
            // Own missions end one `done` later than without the rules.
            let without = grounding_of(Agent::ScriptedReader(idle), &level, &plain).unwrap();
            assert!((g.own.mean_len - without.own.mean_len - 1.0).abs() < 1e-9);
            assert!(
                s.success < 0.1 && s.success < without.swapped.success,
                "{idle:?}: {}\nwithout the rules: {}",
                g.line(),
                without.line()
            );
        }
    }

    /// The endings add up to the episodes and name what ended each: under the default rules
    /// only successes and timeouts on a `go to` level; under the done-action rules a reader
    /// shown another mission fails by its `done`s, at the shown object or where it stays, and
    /// an untrained policy's random `done`s land mostly on nothing.
    #[test]
    fn endings_name_what_ended_each_episode() {
        let level = Level::from_id("BabyAI-GoToLocal-v0").unwrap();
        let total = |r: &EvalResult| {
            let failed = r.timed_out + r.done_at_object + r.done_elsewhere + r.failed_other;
            assert_eq!(
                r.episodes - failed,
                (r.success * r.episodes as f64).round() as usize
            );
            assert!(r.reached_then_failed <= failed, "{r:?}");
            failed
        };
        let done_rules = EvalOptions {
            episodes: 200,
            done_actions: true,
            ..opts(false)
        };
        let g = grounding_of(Agent::ScriptedReader(Idle::Stay), &level, &done_rules).unwrap();
        assert_eq!(total(&g.own), 0, "{:?}", g.own);
        let s = &g.swapped;
        total(s);
        // Every shown mission it carried out ended in its `done` there (the own mission
        // succeeded instead where the shown object fits it too); with nothing left to see it
        // stays, which under these rules is a `done` wherever it is.
        assert!(
            s.done_at_object >= s.followed_shown - s.followed_then_own,
            "{s:?}"
        );
        assert!(s.done_elsewhere > 0 && s.failed_other == 0, "{s:?}");
        assert!(s.endings_line(true).contains("facing an object"));

        let model = tiny_model("BabyAI-GoToLocal-v0");
        let untrained = evaluate(&model, &level, &done_rules).unwrap();
        total(&untrained);
        assert!(
            untrained.done_elsewhere > untrained.done_at_object,
            "{untrained:?}"
        );
        // GoToLocal's missions are single `go to`s without a location: every `done` at an
        // object that failed was at one whose type or colour does not fit.
        let u = &untrained;
        assert!(u.done_at_object > 0, "{u:?}");
        assert_eq!(
            u.done_wrong_colour + u.done_wrong_type + u.done_wrong_both,
            u.done_at_object,
            "{u:?}"
        );
        let plain = evaluate(&model, &level, &opts(false)).unwrap();
        let failed = total(&plain);
        assert_eq!(plain.timed_out, failed, "{plain:?}");
        assert_eq!(plain.reached_then_failed, 0, "{plain:?}");
        assert!(!plain.endings_line(false).contains("done"));
    }

    #[test]
    fn a_mismatch_names_what_does_not_fit_the_description() {
        use metarim_core::world::Color;
        let red_ball = ObjDesc::new(Some(ObjectKind::Ball), Some(Color::Red));
        let any_key = ObjDesc::new(Some(ObjectKind::Key), None);
        let obj = |k, c| Object::new(k, c);
        let cases = [
            (red_ball, obj(ObjectKind::Ball, Color::Red), None),
            (
                red_ball,
                obj(ObjectKind::Ball, Color::Blue),
                Some(Mismatch::Colour),
            ),
            (
                red_ball,
                obj(ObjectKind::Box, Color::Red),
                Some(Mismatch::Kind),
            ),
            (
                red_ball,
                obj(ObjectKind::Key, Color::Green),
                Some(Mismatch::Both),
            ),
            (any_key, obj(ObjectKind::Key, Color::Grey), None),
            (
                any_key,
                obj(ObjectKind::Ball, Color::Grey),
                Some(Mismatch::Kind),
            ),
        ];
        for (desc, o, want) in cases {
            assert_eq!(Mismatch::of(&desc, &o), want, "{desc:?} {o:?}");
        }
    }

    #[test]
    fn the_yardstick_is_given_where_the_reader_can_follow() {
        let o = opts(false);
        let go_to = Level::from_id("BabyAI-GoToLocal-v0").unwrap();
        let y = yardstick(&go_to, &o).unwrap().expect("a go-to level");
        assert_eq!(y.stay.episodes, o.episodes);
        assert!(y.stay.missions_swapped > 0 && y.stay.success <= y.wander.success);
        assert!(y.line().starts_with("yardstick: on these episodes"));
        for id in ["BabyAI-PickupLoc-v0", "MiniGrid-Empty-5x5-v0"] {
            let level = Level::from_id(id).unwrap();
            assert_eq!(yardstick(&level, &o).unwrap(), None, "{id}");
        }
        // The reader's refusal keeps its type through the evaluation's threads, so a level
        // that mixes `go to` with other missions gets no yardstick instead of an error.
        let pickup = Level::from_id("BabyAI-PickupLoc-v0").unwrap();
        let err = evaluate_of(Agent::ScriptedReader(Idle::Stay), &pickup, &o).unwrap_err();
        assert!(err.downcast_ref::<CannotFollow>().is_some(), "{err:#}");
    }
}
