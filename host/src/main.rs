//! `metarim`: the command line of metarim (Meta-RIMs in Rust).
#![forbid(unsafe_code)]

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use host::train::{self, TrainConfig};
use host::{bench, dump, model, play, rim_bench, trace};

/// metarim: Meta-RIMs (fast and slow learning of Recurrent Independent Mechanisms) on BabyAI.
#[derive(Parser, Debug)]
#[command(name = "metarim", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The gridworld environment: replay traces, play, dump states, benchmark.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Model presets: parameter layout, counts and memory per group.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Network benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Meta-train an agent (PPO with recurrence; fast/slow split in the meta modes) on the CPU
    /// or, with --backend auto|cuda, a CUDA GPU.
    Train(TrainArgs),
    /// Evaluate a checkpoint (or, with --scripted-reader, an agent that reads `go to` missions
    /// perfectly): success rate, mean return and length with 95% intervals, and the grounding
    /// check.
    Eval(EvalArgs),
    /// Watch a checkpoint's agent play an episode (terminal, or a GIF with --gif).
    Play(AgentPlayArgs),
    /// Pack a checkpoint as a device blob for the firmware (header, frozen slow+other groups,
    /// fast group, CRC32).
    Export(ExportArgs),
    /// Host twin of the firmware's on-device adaptation: evaluate a Tiny checkpoint on a level,
    /// adapt only its fast group (module RNNs) over episodes there, evaluate again.
    Adapt(AdaptArgs),
    /// Run a declared suite of training runs (experiments/SUITE.toml): seeds per arm in
    /// parallel, resumable; writes OUT/results.md and OUT/*.png.
    Experiment(ExperimentArgs),
    /// Compare training runs: their rolling training success against frames on one chart
    /// (PNG), and a Markdown table of frames to success thresholds and success at frame counts.
    Curves(CurvesArgs),
}

#[derive(Args, Debug)]
struct CurvesArgs {
    /// Run directories (each with its `train.jsonl`, or an archived run's `train.jsonl.gz`),
    /// as `DIR` or `DIR=LABEL` (the label defaults to the directory's name).
    #[arg(required = true)]
    runs: Vec<String>,
    /// Chart to write (PNG); without it only the table is printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The chart's title.
    #[arg(long, default_value = "rolling training success")]
    title: String,
    /// Success thresholds: the table gives the frames at which each run first reached each.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.7,0.9")]
    thresholds: Vec<f64>,
    /// Updates before this many frames do not count towards a threshold (the rolling window
    /// holds few episodes there), as `min_frames` in the experiment suites.
    #[arg(long, default_value_t = 50_000)]
    min_frames: u64,
    /// Frame counts at which the table gives each run's rolling success (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000000,4000000,6000000,8000000"
    )]
    at: Vec<u64>,
    /// Only the updates trained on this level (one level of a curriculum run): its curve, and
    /// thresholds counted from `--min-frames` after the switch onto it; frames stay the run's
    /// own. A run that never trained on it is an error.
    #[arg(long)]
    level: Option<String>,
}

#[derive(Args, Debug)]
struct AdaptArgs {
    /// Checkpoint (Tiny preset, meta-rim split).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Level to adapt on.
    #[arg(long)]
    level: String,
    /// Adaptation episodes.
    #[arg(long, default_value_t = 200)]
    episodes: u64,
    /// Evaluation episodes before and after (the same episodes).
    #[arg(long, default_value_t = 200)]
    eval_episodes: u64,
    /// Seed (evaluation episodes; adaptation episodes use seed + 1).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Learning rate (default: `AdaptConfig::default()`'s, the firmware's: 1e-2).
    #[arg(long)]
    lr: Option<f32>,
    /// Windows whose gradients are accumulated before one optimiser step, at least 1
    /// (default 4).
    #[arg(long)]
    windows_per_step: Option<u32>,
    /// Entropy bonus weight (default 0.01).
    #[arg(long)]
    entropy_coef: Option<f32>,
    /// Global gradient-norm clip (default 0.5).
    #[arg(long)]
    max_grad_norm: Option<f32>,
    /// No guard: every adaptation episode learns and the adapted weights are kept whatever
    /// happened (the learner before the guard).
    #[arg(long, conflicts_with_all = ["probe_episodes", "trail_episodes", "keep_z", "revert_z", "stop_success", "max_reverts"])]
    no_guard: bool,
    /// Guard: episodes played first with the starting weights, no learning (their success is
    /// the baseline; default 50, 0 = no guard).
    #[arg(long)]
    probe_episodes: Option<u32>,
    /// Guard: recent adaptation episodes compared with the baseline, 1..=128 (default 50).
    #[arg(long)]
    trail_episodes: Option<u32>,
    /// Guard: keep the adapted weights at the end only if the trailing success beats the
    /// baseline by this many standard errors (default 1).
    #[arg(long, allow_negative_numbers = true)]
    keep_z: Option<f32>,
    /// Guard: restore the starting weights when the trailing success falls this many standard
    /// errors below the baseline (default 2).
    #[arg(long, allow_negative_numbers = true)]
    revert_z: Option<f32>,
    /// Guard: stop learning once the trailing success reaches this and passes the keep test;
    /// never start when the baseline reaches it (default 0.9; above 1: never).
    #[arg(long)]
    stop_success: Option<f32>,
    /// Guard: restarts from the starting weights allowed (default 1).
    #[arg(long)]
    max_reverts: Option<u32>,
    /// Host only: adapt these parameters with the full gradient instead of running the
    /// device's learner: `fast` (active modules' RNNs, the device's choice), `attention` (the
    /// slow group: the reversed split), `all` (every parameter: an upper bound) or
    /// `fast-critic` (the fast group and the critic head). Same episodes, window, loss, SGD
    /// and guard.
    #[arg(long)]
    groups: Option<String>,
    /// Host-only learners (`--groups`): weight of the value loss (default 0, the device's:
    /// the critic stays as trained); with `all` or `fast-critic` the critic learns the new
    /// level's values.
    #[arg(long, requires = "groups", default_value_t = 0.0)]
    value_coef: f32,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// What to write: `blob` (the firmware's device blob, the default) or `torch` (a
    /// weights-only safetensors file in PyTorch's names and layouts, any preset and mode, for
    /// `metarim.torch.load_policy` or your own `torch.nn.Module`).
    #[arg(long, default_value = "blob")]
    format: String,
    /// Blob only: the preset compiled into the firmware: Tiny, the only one (the checkpoint
    /// must be a Tiny meta-rim checkpoint without dims overrides; anything else is refused).
    #[arg(long, default_value = "Tiny")]
    preset: String,
    /// Output file (the blob, or the `.safetensors` file with `--format torch`).
    #[arg(long)]
    out: PathBuf,
    /// Blob only: element type of the read-only slow and other groups: f32, or f16 (half the
    /// flash; weights beyond f16's range, 65504, are refused; the QEMU firmware reads f32 in
    /// place).
    #[arg(long, default_value = "f32")]
    slow_dtype: String,
}

#[derive(Args, Debug)]
struct ExperimentArgs {
    /// Suite: a name in experiments/ (sample-efficiency, curriculum, zero-shot, grounding,
    /// ablations) or a path to a suite file; `paper` runs sample-efficiency, curriculum and
    /// zero-shot into OUT/SUITE and writes the paper's four claims, judged, to OUT/claims.md.
    suite: String,
    /// Seeds per arm, 0..K (default: the suite's).
    #[arg(long)]
    seeds: Option<usize>,
    /// Output directory (default: runs/experiments/SUITE).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Backend: cpu (parallel runs share the machine; the CUDA backend is for single runs:
    /// `metarim train --backend cuda`).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Multiply every budget (frames, curriculum frame budgets, min_frames, evaluation
    /// episodes) by this; e.g. 0.001 for a smoke run.
    #[arg(long, default_value_t = 1.0)]
    budget_scale: f64,
    /// Replace every arm's model preset (Paper, Small or Tiny).
    #[arg(long)]
    preset: Option<String>,
    /// Training and evaluation threads per run; results do not depend on it.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Runs in parallel (default: available cores / --threads, at least 1).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Any config field for every arm, `KEY=VALUE` (repeatable), applied after the arm's own.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Only the summary: a line per finished run and the results (no progress lines, no
    /// per-run notes).
    #[arg(long)]
    quiet: bool,
    /// Seconds between progress lines (each running run's frames, fps, success and ETA, and
    /// the suite's ETA); 0: none.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = non_negative_secs)]
    progress_every: f64,
    /// Runs write no TensorBoard event files.
    #[arg(long)]
    no_tensorboard: bool,
    /// One more directory to find suites in (searched first; then $METARIM_SUITES,
    /// ./experiments and the experiments/ of the repository metarim was built from).
    #[arg(long, value_name = "DIR")]
    suites: Option<PathBuf>,
    /// Train nothing: write OUT/results.md and the plots from the runs finished earlier (every
    /// run of the plan must have finished: use --seeds K for a suite stopped part way).
    #[arg(long)]
    report_only: bool,
    /// Train nothing: copy every finished run of OUT into DIR, keeping result.json,
    /// config.toml and the gzipped log (no checkpoint), and write DIR's report for the seeds
    /// that have all finished. DIR is then a suite directory whose runs count as finished
    /// (experiments/README.md, "Archived runs").
    #[arg(long, value_name = "DIR", conflicts_with = "report_only")]
    archive: Option<PathBuf>,
    /// While training: after each run finishes, archive the suite's finished runs into DIR as
    /// --archive does, so that losing OUT (a scratch disk, a lent machine) loses only the
    /// runs in progress; continue later with `cp -r DIR/. OUT` and the same command. With
    /// `paper`, each suite goes to DIR/SUITE; with `--run-index`, after that run finishes.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["report_only", "archive", "slurm", "status"]
    )]
    archive_each: Option<PathBuf>,
    /// Submit the suite to Slurm instead of running it here: a job array with one task per
    /// run (each `--run-index I` on the shared OUT) and a report job that runs after all of
    /// them (`--report-only`). The scripts go to OUT/slurm/ (docs/SCALING.md).
    #[arg(long, conflicts_with_all = ["report_only", "archive", "run_index", "status"])]
    slurm: bool,
    /// With --slurm: the partition (default: the cluster's).
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// With --slurm: time limit per task, as sbatch takes it (e.g. 04:00:00); a task told its
    /// limit is near checkpoints and requeues itself.
    #[arg(long, requires = "slurm")]
    time: Option<String>,
    /// With --slurm: CPUs per task (default: --threads).
    #[arg(long, requires = "slurm")]
    cpus_per_task: Option<usize>,
    /// With --slurm: generic resources per task, e.g. gpu:1 (with --backend cuda).
    #[arg(long, requires = "slurm")]
    gres: Option<String>,
    /// With --slurm: one more #SBATCH option for both jobs, e.g. --sbatch-option=--mem=8G
    /// (repeatable).
    #[arg(
        long = "sbatch-option",
        value_name = "OPT",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    sbatch_option: Vec<String>,
    /// With --slurm: write and print the scripts, submit nothing.
    #[arg(long, requires = "slurm")]
    dry_run: bool,
    /// Train and evaluate only run I of the plan (0-based; runs are ordered seed by seed, arm by
    /// arm), resuming it; what each Slurm array task runs. On SIGTERM or SIGUSR1 it saves a
    /// checkpoint and exits with status 75 (after SIGUSR1 inside a Slurm job, it first
    /// requeues itself).
    #[arg(long, value_name = "I", conflicts_with_all = ["report_only", "archive", "status"])]
    run_index: Option<usize>,
    /// Train nothing: print each planned run's state (done, running, stopped, trained,
    /// failed, missing), read from OUT's run directories.
    #[arg(long, conflicts_with_all = ["report_only", "archive"])]
    status: bool,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// TOML config file (fields as printed by --print-config); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Level id to train on (see `metarim env dump --list`).
    #[arg(long)]
    level: Option<String>,
    /// Several levels, comma-separated: a mixture, or a curriculum with --curriculum.
    #[arg(long, value_delimiter = ',')]
    levels: Option<Vec<String>>,
    /// Treat --levels as an ordered curriculum.
    #[arg(long)]
    curriculum: bool,
    /// meta-rim, reversed, joint or lstm.
    #[arg(long)]
    mode: Option<String>,
    /// Model preset: Paper, Small or Tiny.
    #[arg(long)]
    preset: Option<String>,
    /// Frames to train for (at most 2^63 - 1: configs and checkpoints are TOML).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    frames: Option<u64>,
    /// Seed (at most 2^63 - 1: configs and checkpoints are TOML).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    seed: Option<u64>,
    /// Worker threads (0: all cores); results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Any config field, `KEY=VALUE` (repeatable), e.g. `--set lr=3e-4 --set inner_steps=8`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Output directory (default: runs/LEVEL-MODE-seedSEED).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the checkpoint in the output directory.
    #[arg(long)]
    resume: bool,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// No progress bar or progress lines.
    #[arg(long)]
    quiet: bool,
    /// Write no TensorBoard event files (by default `events.out.tfevents.*` beside
    /// train.jsonl: `tensorboard --logdir runs`).
    #[arg(long)]
    no_tensorboard: bool,
    /// Stop (after saving a checkpoint) after this many updates in this process.
    #[arg(long, hide = true)]
    stop_after_updates: Option<u64>,
    /// Where the policy runs: auto (the GPU when a CUDA device works, else the CPU, with the
    /// reason printed), cpu, or cuda (an error without a usable GPU).
    #[arg(long)]
    backend: Option<String>,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Checkpoint (checkpoint.safetensors in a run's output directory).
    #[arg(long, required_unless_present = "scripted_reader")]
    checkpoint: Option<PathBuf>,
    /// Evaluate the scripted agent that reads `go to` missions perfectly instead of a
    /// checkpoint (needs --level): the yardstick of the grounding check, what its swapped-mission
    /// success is for an agent that does exactly what it is shown (see --reader-idle).
    #[arg(long, conflicts_with = "checkpoint", requires = "level")]
    scripted_reader: bool,
    /// What the scripted reader does once it has nothing left to do: stay, or wander at random
    /// (as a policy never taught what to do then).
    #[arg(long, requires = "scripted_reader", default_value = "stay")]
    reader_idle: train::reader::Idle,
    /// Level id (default: the checkpoint's current level).
    #[arg(long)]
    level: Option<String>,
    /// Episodes.
    #[arg(long, default_value_t = 1000)]
    episodes: usize,
    /// Seed of the evaluation episodes.
    #[arg(long, default_value_t = 1_000_003)]
    seed: u64,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Take the most likely action instead of sampling.
    #[arg(long)]
    argmax: bool,
    /// Judge by BabyAI's done-action rules (minigrid's BABYAI_DONE_ACTIONS): success only by
    /// `done` right after the step that completes the mission, failure on any other `done`
    /// (default: the checkpoint's training setting; off for --scripted-reader).
    #[arg(long, value_name = "BOOL")]
    done_actions: Option<bool>,
    /// Skip the grounding check (by default the same episodes run a second time, each showing
    /// the policy another episode's mission, and both success rates are printed side by side).
    #[arg(long)]
    own_only: bool,
    /// Older spelling of the grounding check, which now always runs (see --own-only).
    #[arg(long, hide = true)]
    swap_missions: bool,
    /// Print one JSON object instead of the text lines: the checkpoint, the settings, the
    /// binary's commit, and every figure of the text (`own`, `swapped`: success, its 95%
    /// interval, return, length, and the grounding counts; `yardstick`: a perfect reader's
    /// swapped results, `stay` and `wander`, on `go to` levels, else null).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct AgentPlayArgs {
    /// Checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Level id (default: the checkpoint's current level).
    #[arg(long)]
    level: Option<String>,
    /// Episode seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the episode as an animated GIF here instead of drawing it in the terminal.
    #[arg(long)]
    gif: Option<PathBuf>,
    /// Take the most likely action instead of sampling.
    #[arg(long)]
    argmax: bool,
    /// Pause between terminal frames, in milliseconds (default: 150 on a terminal, else 0).
    #[arg(long)]
    delay_ms: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// RIM cell training throughput on the CPU: forward over T steps for a batch, BPTT of
    /// sum_t mean(h_t^2), one Adam step (the batched cell; compare scripts/bench-rim-vs-torch.sh).
    Rim(RimBenchArgs),
    /// End-to-end training throughput on the CPU: full updates (env stepping, forward, every
    /// PPO / inner / outer gradient pass, Adam) from a fresh state; median frames/s.
    Train(TrainBenchArgs),
}

#[derive(Args, Debug)]
struct TrainBenchArgs {
    /// Preset: Paper, Small or Tiny.
    #[arg(long, default_value = "Paper")]
    preset: String,
    /// Mode: meta-rim, reversed, joint or lstm.
    #[arg(long, default_value = "meta-rim")]
    mode: String,
    /// Level id.
    #[arg(long, default_value = "BabyAI-GoToLocal-v0")]
    level: String,
    /// Timed updates.
    #[arg(long, default_value_t = 5)]
    updates: usize,
    /// Untimed warm-up updates.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Backend: cpu, cuda (an error without a usable GPU) or auto.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Any config field, `KEY=VALUE` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args, Debug)]
struct RimBenchArgs {
    /// Preset whose RIM dimensions to use: Paper, Small or Tiny.
    #[arg(long, default_value = "Paper")]
    preset: String,
    /// Sequences per iteration.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Steps per sequence (BPTT length).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Timed iterations.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Worker threads (the batch is split over them); default: available parallelism.
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Print every tensor (name, group, shape) and the totals per group.
    Info(ModelInfoArgs),
}

#[derive(Args, Debug)]
struct ModelInfoArgs {
    /// Preset: Paper, Small or Tiny.
    #[arg(long, default_value = "Paper")]
    preset: String,
    /// Mode: meta-rim, reversed, joint or lstm.
    #[arg(long, default_value = "meta-rim")]
    mode: String,
    /// Steps of the on-device adaptation window used for the memory estimate.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Model overrides as in `train`, `KEY=VALUE` (repeatable), e.g. `--set film=true --set
    /// encoder=bow`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum EnvCommand {
    /// Replay recorded episodes (JSON lines, optionally gzip) and compare every step.
    Replay(ReplayArgs),
    /// Play an episode in the terminal (keys from stdin, or random actions).
    Play(PlayArgs),
    /// Write freshly generated initial states in the trace format, or list the level ids.
    Dump(DumpArgs),
    /// Measure environment steps per second (random actions, observation every step).
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Trace file: one episode per line, JSON, optionally gzip-compressed.
    file: PathBuf,
}

#[derive(Args, Debug)]
struct PlayArgs {
    /// Level id (see `metarim env dump --list`).
    #[arg(long)]
    level: String,
    /// Seed given to the level generator (and to the random actions).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Take seeded random actions instead of reading keys from stdin.
    #[arg(long)]
    random: bool,
    /// Stop after this many actions (default: at the end of the episode).
    #[arg(long)]
    steps: Option<u64>,
    /// Pause between frames with --random, in milliseconds (default: 100 on a terminal, else 0).
    #[arg(long)]
    delay_ms: Option<u64>,
    /// BabyAI's done-action rules (minigrid's BABYAI_DONE_ACTIONS): a mission succeeds only by
    /// `done` (key n) right after the step that completes it; any other `done` fails.
    #[arg(long)]
    done_actions: bool,
}

#[derive(Args, Debug)]
struct DumpArgs {
    /// Level id.
    #[arg(long, required_unless_present = "list")]
    level: Option<String>,
    /// Number of initial states.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Seed of the first state; state i uses seed + i (wrapping): minigrid's
    /// `env.reset(seed=...)` level for that seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The states are instead the levels minigrid generates after one `reset(seed=SEED)` and
    /// then unseeded `reset()`s (one generator, continued).
    #[arg(long = "continue")]
    continued: bool,
    /// Output file (gzip-compressed when it ends in .gz); stdout when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print every registered level id, one per line, and exit.
    #[arg(long, conflicts_with_all = ["level", "out"])]
    list: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Level id.
    #[arg(long)]
    level: String,
    /// Duration of the measurement in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Threads, one environment each.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Base seed for levels and actions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                // The reader went away (`| head`): not an error of ours.
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether `e` comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .map(|io| io.kind())
            .or_else(|| {
                c.downcast_ref::<serde_json::Error>()
                    .and_then(|j| j.io_error_kind())
            })
            == Some(io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cmd = match cli.command {
        Command::Env(cmd) => cmd,
        Command::Train(a) => return cmd_train(a),
        Command::Eval(a) => return cmd_eval(a),
        Command::Play(a) => return cmd_play(a),
        Command::Adapt(a) => return cmd_adapt(a),
        Command::Export(a) if a.format == "torch" => {
            if a.slow_dtype != "f32" {
                anyhow::bail!(
                    "--slow-dtype {} applies to the device blob only; --format torch writes f32",
                    a.slow_dtype
                );
            }
            let s = host::export::export_torch(&a.checkpoint, &a.out)?;
            println!(
                "export: out={} format=torch bytes={} tensors={} params={}",
                a.out.display(),
                s.bytes,
                s.tensors,
                s.params
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Export(a) => {
            if a.format != "blob" {
                anyhow::bail!("unknown --format {:?} (blob or torch)", a.format);
            }
            let dtype = host::export::parse_dtype(&a.slow_dtype)?;
            let s = host::export::export(&a.checkpoint, &a.preset, dtype, &a.out)?;
            println!(
                "export: out={} bytes={} fast={} slow={} other={} slow_dtype={}",
                a.out.display(),
                s.bytes,
                s.groups[0],
                s.groups[1],
                s.groups[2],
                a.slow_dtype
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Experiment(a) => return cmd_experiment(a),
        Command::Curves(a) => return cmd_curves(&a),
        Command::Bench(BenchCommand::Train(a)) => {
            bench_train(&a)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Bench(BenchCommand::Rim(a)) => {
            bench_rim(&a)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Model(ModelCommand::Info(a)) => {
            let mut cfg = train::TrainConfig {
                preset: train::config::Preset::from_name(&a.preset)?,
                mode: model::mode(&a.mode)?,
                ..Default::default()
            };
            for kv in &a.set {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
                cfg.set(k, v)?;
            }
            let dims = cfg.dims()?;
            let mode = cfg.mode;
            print!("{}", model::info(&a.preset, &dims, mode, a.window)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let stdout = io::stdout();
    match cmd {
        EnvCommand::Replay(a) => {
            let mut out = stdout.lock();
            let mut write_err = None;
            let summary = trace::replay_file(&a.file, |f| {
                if let Err(e) = writeln!(out, "{f}") {
                    write_err.get_or_insert(e);
                }
            })?;
            if let Some(e) = write_err {
                return Err(e.into());
            }
            if summary.total == 0 {
                anyhow::bail!("{} holds no episodes", a.file.display());
            }
            writeln!(out, "{summary}")?;
            out.flush()?;
            Ok(if summary.matched == summary.total {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        EnvCommand::Play(a) => {
            let tty = play::stdout_is_terminal();
            let opts = play::PlayOptions {
                level: a.level,
                seed: a.seed,
                random: a.random,
                steps: a.steps,
                delay_ms: a.delay_ms.unwrap_or(if tty { 100 } else { 0 }),
                clear: tty,
                done_actions: a.done_actions,
            };
            let stdin = io::stdin();
            play::play(&opts, stdin.lock(), &mut stdout.lock())?;
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Dump(a) => {
            if a.list {
                dump::list(&mut stdout.lock())?;
                return Ok(ExitCode::SUCCESS);
            }
            let level = a.level.context("--level is required")?;
            host::levels::lookup(&level)?;
            match a.out {
                None => dump::dump(
                    &mut BufWriter::new(stdout.lock()),
                    &level,
                    a.count,
                    a.seed,
                    a.continued,
                )?,
                Some(path) => dump::dump_to_file(&path, &level, a.count, a.seed, a.continued)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Bench(a) => {
            let r = bench::run(&a.level, a.seconds, a.threads, a.seed)?;
            let mut out = stdout.lock();
            for (i, t) in r.threads.iter().enumerate() {
                writeln!(
                    out,
                    "thread {i}: steps={} resets={} seconds={:.3}",
                    t.steps,
                    t.resets,
                    t.elapsed.as_secs_f64()
                )?;
            }
            writeln!(
                out,
                "env-bench: {} steps_per_sec={:.0} threads={}",
                a.level,
                r.steps_per_sec(),
                a.threads
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `metarim curves`: load every run (all errors before any output), print the table, draw the
/// chart.
fn cmd_curves(a: &CurvesArgs) -> Result<ExitCode> {
    use host::curves;
    curves::check_thresholds(&a.thresholds)?;
    let mut runs = Vec::with_capacity(a.runs.len());
    for arg in &a.runs {
        let (dir, label) = curves::parse_run_arg(arg)?;
        let run = curves::load(&dir, &label)?;
        runs.push(match &a.level {
            Some(level) => curves::only_level(run, level)?,
            None => run,
        });
    }
    print!(
        "{}",
        curves::table(&runs, &a.thresholds, a.min_frames, &a.at)
    );
    if let Some(out) = &a.out {
        curves::write_figure(out, &a.title, &runs)?;
        println!("curves: wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `metarim bench rim`: details first, the `bench-rim:` summary line last.
fn bench_rim(a: &RimBenchArgs) -> Result<()> {
    let preset = train::config::Preset::from_name(&a.preset)?;
    let dims = preset.dims();
    let threads = match a.threads {
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let opts = rim_bench::RimBenchOptions {
        dims: dims.rim,
        batch: a.batch,
        steps: a.steps,
        iters: a.iters,
        warmup: a.warmup,
        threads,
        seed: a.seed,
    };
    let r = rim_bench::run(&opts)?;
    let d = &dims.rim;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "rim {preset}: {} modules x {} hidden, k={}, input {}, d_k {}, d_v {}, {} comm heads x {}, \
         {} params, f32",
        d.n_modules,
        d.hidden,
        d.k_active,
        d.input,
        d.d_k,
        d.d_v,
        if d.communication { d.c_heads } else { 0 },
        d.c_k,
        r.params
    )?;
    writeln!(
        out,
        "iteration = forward {} steps x batch {} + BPTT of sum_t mean(h_t^2) + Adam; \
         {} warm-up + {} timed iterations; threads requested {threads}, used {}",
        a.steps, a.batch, a.warmup, a.iters, r.threads
    )?;
    writeln!(
        out,
        "timed {:.3} s, {} frames, {:.3} ms/iteration, last loss {:.6e}, dense work {:.2} MFLOP/frame \
         -> {:.2} GFLOP/s",
        r.elapsed.as_secs_f64(),
        r.frames,
        r.elapsed.as_secs_f64() * 1e3 / a.iters as f64,
        r.loss,
        r.flops_per_frame * 1e-6,
        r.gflops()
    )?;
    writeln!(
        out,
        "bench-rim: preset={preset} batch={} steps={} threads={} frames_per_sec={:.0}",
        a.batch,
        a.steps,
        r.threads,
        r.frames_per_sec()
    )?;
    out.flush()?;
    Ok(())
}

/// The effective config of `train`: defaults, then --config, then the flags, then --set.
fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(l) = &a.level {
        cfg.level = l.clone();
        cfg.levels.clear();
    }
    if let Some(l) = &a.levels {
        cfg.levels = l.clone();
    }
    if a.curriculum {
        cfg.curriculum = true;
    }
    if let Some(m) = &a.mode {
        cfg.mode = model::mode(m)?;
    }
    if let Some(p) = &a.preset {
        cfg.preset = train::config::Preset::from_name(p)?;
    }
    if let Some(f) = a.frames {
        cfg.frames = f;
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(t) = a.threads {
        cfg.threads = t;
    }
    if let Some(b) = &a.backend {
        cfg.backend = train::backend::BackendChoice::from_name(b)?;
    }
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
        cfg.set(k, v).with_context(|| format!("--set {kv}"))?;
    }
    Ok(cfg)
}

fn cmd_train(a: TrainArgs) -> Result<ExitCode> {
    let cfg = train_config(&a)?;
    if a.print_config {
        cfg.validate()?;
        print!("{}", cfg.to_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    cfg.validate()?;
    let out = a.out.clone().unwrap_or_else(|| {
        let level = match cfg.level_ids().as_slice() {
            [one] => one.clone(),
            many => format!("{}-levels", many.len()),
        };
        PathBuf::from("runs").join(format!("{level}-{}-seed{}", cfg.mode.name(), cfg.seed))
    });
    let opts = train::run::RunOptions {
        out: out.clone(),
        resume: a.resume,
        progress: !a.quiet,
        stop_after_updates: a.stop_after_updates,
        tensorboard: !a.no_tensorboard,
        notes: true,
        on_update: None,
        // Ctrl-C or SIGTERM: a checkpoint after the current update, then exit (a second
        // signal exits at once).
        stop: Some(host::experiment::slurm::StopSignals::install_with_interrupt()?.stop),
    };
    eprintln!(
        "train: {}{} preset={} mode={} frames={} procs={} threads={} memory~{:.0}MiB out={}",
        cfg.level_ids().join(","),
        if cfg.done_actions {
            " (BabyAI's done-action rules)"
        } else {
            ""
        },
        cfg.preset,
        cfg.mode.name(),
        cfg.frames,
        cfg.procs,
        train::thread_count(cfg.threads, cfg.procs.max(cfg.grad_shards)),
        train::budget::estimate_bytes(&cfg)? as f64 / f64::from(1u32 << 20),
        out.display()
    );
    let s = train::run::train(&cfg, &opts)?;
    if s.stopped {
        eprintln!(
            "train: stopped by signal at {} of {} frames; checkpoint {} saved (`--resume` with \
             the same --out goes on from it)",
            s.frames,
            cfg.frames,
            s.checkpoint.display()
        );
        return Ok(ExitCode::from(host::experiment::slurm::STOPPED_EXIT_CODE));
    }
    println!("checkpoint: {}", s.checkpoint.display());
    println!(
        "train: level={} frames={} success={:.3} fps={:.0}",
        s.level, s.frames, s.success, s.fps
    );
    Ok(ExitCode::SUCCESS)
}

/// A finite, non-negative number of seconds (`--progress-every`).
fn non_negative_secs(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("expected seconds >= 0, got {s:?}")),
    }
}

fn cmd_experiment(a: ExperimentArgs) -> Result<ExitCode> {
    // Parallel runs in one process share the machine: the CPU. One run per process (a Slurm
    // task, `--run-index`) may use a GPU of its own.
    let one_run_per_process =
        a.slurm || a.run_index.is_some() || a.status || a.report_only || a.archive.is_some();
    if a.backend != "cpu" && !one_run_per_process {
        anyhow::bail!(
            "--backend {}: experiments run on the cpu backend (train single runs with `metarim train --backend cuda`, or a suite's runs one per Slurm task with --slurm)",
            a.backend
        );
    }
    if a.cpus_per_task == Some(0) {
        anyhow::bail!("--cpus-per-task must be > 0");
    }
    if a.threads == 0 {
        anyhow::bail!("--threads must be > 0 (threads per run)");
    }
    let suite_dirs = host::experiment::suite_dirs(a.suites.as_deref());
    let paper = a.suite.trim_end_matches('/') == "paper";
    let suite = if paper {
        // Each suite is resolved in turn by `run_paper`.
        PathBuf::new()
    } else {
        host::experiment::find_suite(&a.suite, &suite_dirs)?
    };
    let mut set = Vec::with_capacity(a.set.len());
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
        set.push((k.to_string(), v.to_string()));
    }
    // Runs of a suite share the machine: they train on the CPU (not the config's `auto`).
    set.push(("backend".to_string(), a.backend.clone()));
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = suite
            .file_stem()
            .map_or_else(|| a.suite.clone(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join("experiments").join(stem)
    });
    let command = host::provenance::command_line();
    let opts = host::experiment::ExperimentOptions {
        suite,
        seeds: a.seeds,
        out,
        overrides: host::experiment::Overrides {
            budget_scale: a.budget_scale,
            preset: a.preset.clone(),
            set,
            threads: a.threads,
        },
        jobs: a.jobs,
        command,
        progress: true,
        status_every: (!a.quiet && a.progress_every > 0.0)
            .then(|| std::time::Duration::from_secs_f64(a.progress_every)),
        run_notes: !a.quiet,
        tensorboard: !a.no_tensorboard,
        report_only: a.report_only,
        archive_each: a.archive_each.clone(),
        stop: None,
    };
    if let Some(dest) = &a.archive {
        if paper {
            anyhow::bail!("--archive: archive one suite at a time (not `paper`)");
        }
        return experiment_archive(&opts, dest);
    }
    if paper && (a.slurm || a.run_index.is_some() || a.status) {
        anyhow::bail!(
            "--slurm, --run-index and --status take one suite at a time (not `paper`): \
             submit sample-efficiency, curriculum and zero-shot each with its own --out"
        );
    }
    if a.status {
        return experiment_status(&opts);
    }
    if let Some(index) = a.run_index {
        return experiment_run_index(&opts, index);
    }
    if a.slurm {
        return experiment_slurm(&a, &opts);
    }
    // Ctrl-C or SIGTERM: each running run saves a checkpoint after its current update, no
    // other starts, and the same command goes on later (a second signal exits at once).
    let stop = host::experiment::slurm::StopSignals::install_with_interrupt()?.stop;
    let opts = host::experiment::ExperimentOptions {
        stop: Some(stop),
        ..opts
    };
    let stopped = |e: &anyhow::Error| {
        e.downcast_ref::<host::experiment::Stopped>().is_some()
            || e.downcast_ref::<host::experiment::StoppedBetweenRuns>()
                .is_some()
    };
    if paper {
        let claims = match host::experiment::run_paper(&opts, &suite_dirs) {
            Err(e) if stopped(&e) => return Ok(experiment_stopped(&e)),
            r => r?,
        };
        println!("claims: {}", claims.display());
        return Ok(ExitCode::SUCCESS);
    }
    let s = match host::experiment::run(&opts) {
        Err(e) if stopped(&e) => return Ok(experiment_stopped(&e)),
        r => r?,
    };
    println!(
        "results: {} (trained {}, finished earlier {})",
        s.results.display(),
        s.trained,
        s.skipped
    );
    println!(
        "experiment: suite={} runs={} finished={} out={}",
        s.suite,
        s.runs,
        s.finished,
        s.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A suite stopped by a signal: what was saved, and the exit status of a stopped run.
fn experiment_stopped(e: &anyhow::Error) -> ExitCode {
    eprintln!(
        "experiment: {e:#}\nexperiment: stopped; every run's checkpoint is saved, and running \
         the same command again goes on"
    );
    ExitCode::from(host::experiment::slurm::STOPPED_EXIT_CODE)
}

/// `metarim experiment SUITE --archive DIR`: the finished runs of `opts.out` into `dest`.
fn experiment_archive(
    opts: &host::experiment::ExperimentOptions,
    dest: &std::path::Path,
) -> Result<ExitCode> {
    let s = host::experiment::archive(opts, dest)?;
    match &s.results {
        Some(r) => println!(
            "archive: {} finished runs into {} ({} not finished, left out); report on seeds 0..{}: {}",
            s.archived,
            dest.display(),
            s.unfinished,
            s.complete_seeds,
            r.display()
        ),
        None => println!(
            "archive: {} finished runs into {} ({} not finished, left out); no seed has finished in every arm yet: no report",
            s.archived,
            dest.display(),
            s.unfinished
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `metarim experiment SUITE --slurm`: the suite as a Slurm job array and a report job (or,
/// with `--dry-run`, their scripts printed).
fn experiment_slurm(
    a: &ExperimentArgs,
    opts: &host::experiment::ExperimentOptions,
) -> Result<ExitCode> {
    let mut extra = vec!["--backend".to_string(), a.backend.clone()];
    if a.quiet {
        extra.push("--quiet".into());
    }
    if a.no_tensorboard {
        extra.push("--no-tensorboard".into());
    }
    extra.extend(["--progress-every".into(), a.progress_every.to_string()]);
    let slurm = host::experiment::slurm::SlurmOptions {
        partition: a.partition.clone(),
        time: a.time.clone(),
        cpus_per_task: a.cpus_per_task,
        gres: a.gres.clone(),
        extra: a.sbatch_option.clone(),
        dry_run: a.dry_run,
    };
    let sub = host::experiment::slurm::submit(opts, &slurm, &extra)?;
    if a.dry_run {
        for p in [&sub.array_script, &sub.report_script] {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            println!("# {}\n{text}", p.display());
        }
        println!(
            "dry run: would submit `sbatch --parsable {}`, then `sbatch --parsable \
             --dependency=afterok:<array job> {}`",
            sub.array_script.display(),
            sub.report_script.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (array, report) = (
        sub.array_job.unwrap_or_default(),
        sub.report_job.unwrap_or_default(),
    );
    println!(
        "slurm: array job {array} ({} tasks), report job {report} (after all of them); \
         scripts and task output in {}",
        sub.tasks,
        sub.array_script
            .parent()
            .map_or_else(String::new, |d| d.display().to_string())
    );
    println!("slurm: array={array} report={report} tasks={}", sub.tasks);
    Ok(ExitCode::SUCCESS)
}

/// `metarim experiment --run-index I`: one run, stopped cleanly by SIGTERM or SIGUSR1.
fn experiment_run_index(
    opts: &host::experiment::ExperimentOptions,
    index: usize,
) -> Result<ExitCode> {
    use host::experiment::slurm::{requeue_self, StopSignals, STOPPED_EXIT_CODE};
    let signals = StopSignals::install()?;
    match host::experiment::run_one(opts, index, Some(std::sync::Arc::clone(&signals.stop))) {
        Ok(o) => {
            println!(
                "experiment: run {}/{} {} {} frames={} success={:.3}",
                index + 1,
                o.of,
                o.name,
                if o.skipped {
                    "finished earlier"
                } else {
                    "done"
                },
                o.result.frames,
                o.result.final_success
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.downcast_ref::<host::experiment::Stopped>().is_some() => {
            eprintln!("experiment: {e:#}");
            // SIGUSR1 is Slurm's warning that the time limit is near: the task asks to be run
            // again. SIGTERM (scancel, or a preemption that requeues by itself) does not.
            if signals.got_usr1() {
                match requeue_self() {
                    Ok(Some(job)) => eprintln!("experiment: requeued Slurm job {job}"),
                    Ok(None) => {}
                    Err(e) => eprintln!("experiment: warning: {e:#}"),
                }
            }
            Ok(ExitCode::from(STOPPED_EXIT_CODE))
        }
        Err(e) => Err(e),
    }
}

/// `metarim experiment --status`: a line per planned run and the counts.
fn experiment_status(opts: &host::experiment::ExperimentOptions) -> Result<ExitCode> {
    let rows = host::experiment::status(opts)?;
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(3).max(3);
    println!(
        "{:>5}  {:<width$}  {:<8}  {:>23}  detail",
        "index", "run", "state", "frames"
    );
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in &rows {
        let detail = match &r.state {
            host::experiment::RunState::Running(d) | host::experiment::RunState::Failed(d) => {
                d.clone()
            }
            _ => String::new(),
        };
        println!(
            "{:>5}  {:<width$}  {:<8}  {:>23}  {detail}",
            r.index,
            r.name,
            r.state.word(),
            format!("{}/{}", r.frames, r.budget),
        );
        match counts.iter_mut().find(|(w, _)| *w == r.state.word()) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.state.word(), 1)),
        }
    }
    let summary: Vec<String> = ["done", "running", "stopped", "trained", "failed", "missing"]
        .iter()
        .map(|w| {
            let n = counts.iter().find(|(c, _)| c == w).map_or(0, |(_, n)| *n);
            format!("{w} {n}")
        })
        .collect();
    println!("{} runs: {}", rows.len(), summary.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// The level to evaluate or play: the flag, else the checkpoint's current level.
fn checkpoint_level(ck: &train::checkpoint::Checkpoint, flag: &Option<String>) -> Result<String> {
    if let Some(l) = flag {
        host::levels::lookup(l)?;
        return Ok(l.clone());
    }
    let ids = ck.config.level_ids();
    Ok(ids
        .get(ck.meta.tasks.current)
        .or(ids.first())
        .cloned()
        .unwrap_or_default())
}

fn cmd_eval(a: EvalArgs) -> Result<ExitCode> {
    if a.episodes == 0 {
        anyhow::bail!("--episodes must be > 0");
    }
    if a.own_only && a.swap_missions {
        anyhow::bail!("--swap-missions asks for the grounding check that --own-only skips");
    }
    let ck = a
        .checkpoint
        .as_ref()
        .map(|p| train::checkpoint::load(p))
        .transpose()?;
    let (agent, id) = match &ck {
        Some(ck) => (
            train::eval::Agent::Policy(&ck.model),
            checkpoint_level(ck, &a.level)?,
        ),
        // clap requires --level with --scripted-reader.
        None => (
            train::eval::Agent::ScriptedReader(a.reader_idle),
            a.level.clone().unwrap_or_default(),
        ),
    };
    let level = host::levels::lookup(&id)?;
    let opts = train::eval::EvalOptions {
        episodes: a.episodes,
        seed: a.seed,
        threads: a.threads,
        argmax: a.argmax,
        swap_missions: false,
        done_actions: a
            .done_actions
            .unwrap_or(ck.as_ref().is_some_and(|ck| ck.config.done_actions)),
    };
    let mut out = io::stdout().lock();
    if !a.json {
        let rules = if opts.done_actions {
            ", judged by BabyAI's done-action rules"
        } else {
            ""
        };
        match (&ck, &a.checkpoint) {
            (Some(ck), Some(path)) => writeln!(
                out,
                "checkpoint {} ({} frames, mode {}, preset {}){}",
                path.display(),
                ck.meta.frames,
                ck.config.mode.name(),
                ck.config.preset,
                rules
            )?,
            _ => writeln!(
                out,
                "scripted reader (reads `go to` missions perfectly; once it has done what it was \
                 shown or seen everything: {}){}",
                match a.reader_idle {
                    train::reader::Idle::Stay => "stays",
                    train::reader::Idle::Wander => "wanders at random",
                },
                rules
            )?,
        }
    }
    let (r, swapped) = if a.own_only {
        (train::eval::evaluate_of(agent, &level, &opts)?, None)
    } else {
        let g = train::eval::grounding_of(agent, &level, &opts)?;
        (g.own.clone(), Some(g))
    };
    // A checkpoint's grounding check comes with what a perfect reader scores on its episodes
    // (on `go to` levels; a fraction of a second).
    let yardstick = match (&ck, &swapped) {
        (Some(_), Some(_)) => train::eval::yardstick(&level, &opts)?,
        _ => None,
    };
    if a.json {
        let v = serde_json::json!({
            "checkpoint": a.checkpoint.as_ref().map(|p| p.display().to_string()),
            "agent": match (&ck, a.reader_idle) {
                (Some(_), _) => "checkpoint",
                (None, train::reader::Idle::Stay) => "scripted-reader",
                (None, train::reader::Idle::Wander) => "scripted-reader-wander",
            },
            "frames": ck.as_ref().map(|ck| ck.meta.frames),
            "mode": ck.as_ref().map(|ck| ck.config.mode.name()),
            "preset": ck.as_ref().map(|ck| ck.config.preset.to_string()),
            "level": r.level,
            "episodes": a.episodes,
            "seed": a.seed,
            "argmax": a.argmax,
            "done_actions": opts.done_actions,
            "commit": host::provenance::BUILD_COMMIT,
            "own": &r,
            "swapped": swapped.as_ref().map(|g| &g.swapped),
            "yardstick": &yardstick,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "success {:.4} (95% CI {:.4}-{:.4}), return {:.4} +- {:.4}, length {:.1}",
        r.success, r.success_ci.0, r.success_ci.1, r.mean_return, r.return_ci, r.mean_len
    )?;
    writeln!(out, "{}", r.endings_line(opts.done_actions))?;
    if let Some(g) = &swapped {
        writeln!(out, "{}", g.line())?;
    }
    if let Some(y) = &yardstick {
        writeln!(out, "{}", y.line())?;
    }
    writeln!(
        out,
        "eval: level={} success={:.4} swapped_success={} return={:.4} episodes={}",
        r.level,
        r.success,
        swapped
            .as_ref()
            .map_or("-".to_string(), |g| format!("{:.4}", g.swapped.success)),
        r.mean_return,
        r.episodes
    )?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_play(a: AgentPlayArgs) -> Result<ExitCode> {
    use host::render::{caption, render_frame, GifWriter, RenderOptions};
    let ck = train::checkpoint::load(&a.checkpoint)?;
    let id = checkpoint_level(&ck, &a.level)?;
    let level = host::levels::lookup(&id)?;
    let tty = play::stdout_is_terminal();
    let delay = a
        .delay_ms
        .unwrap_or(if tty && a.gif.is_none() { 150 } else { 0 });
    let mut out = io::stdout().lock();
    let mut gif: Option<GifWriter<'static>> = None;
    let mut total = 0.0f64;
    let mut failure: Option<anyhow::Error> = None;
    let n_modules = ck.model.layout.dims().rim.n_modules;
    let is_rim = ck.model.layout.mode() != metarim_core::nn::params::Mode::Lstm;
    let mut on_step = |env: &metarim_core::env::Env, step: &train::eval::StepInfo| {
        if failure.is_some() {
            return;
        }
        total += f64::from(step.reward);
        let active: &[bool] = if is_rim {
            &step.active[..n_modules]
        } else {
            &[]
        };
        let cap = caption(env.step_count, step.action, step.reward);
        let res: Result<()> = match &a.gif {
            Some(path) => {
                let opts = RenderOptions::annotated(env.mission.as_str(), active, &cap);
                let frame = render_frame(env, &opts);
                (|| {
                    if gif.is_none() {
                        gif = Some(GifWriter::create(path, frame.width, frame.height, 30)?);
                    }
                    match gif.as_mut() {
                        Some(g) => g.add(&frame),
                        None => Ok(()),
                    }
                })()
            }
            None => {
                let mut s = String::new();
                if tty {
                    s.push_str("\x1b[2J\x1b[H");
                }
                s.push_str(&play::render(env, &id, a.seed, total, None));
                let marks: String = active.iter().map(|m| if *m { '#' } else { '.' }).collect();
                s.push_str(&format!("{cap}  active modules: [{marks}]\n"));
                if delay > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(delay));
                }
                out.write_all(s.as_bytes()).map_err(Into::into)
            }
        };
        if let Err(e) = res {
            failure = Some(e);
        }
    };
    // Episode 0 of the evaluation seeded `a.seed`, under the checkpoint's rules.
    let opts = train::eval::EvalOptions {
        episodes: 1,
        seed: a.seed,
        threads: 1,
        argmax: a.argmax,
        swap_missions: false,
        done_actions: ck.config.done_actions,
    };
    let r = train::eval::run_episode(&ck.model, &level, &opts, 0, &mut on_step)?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let (Some(g), Some(path)) = (gif, &a.gif) {
        g.finish()?;
        writeln!(out, "wrote {}", path.display())?;
    }
    writeln!(
        out,
        "play: level={id} seed={} steps={} success={} return={:.4}",
        a.seed, r.len, r.success, r.ret
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `metarim bench train`: per-update figures, then the `bench-train:` summary line.
fn bench_train(a: &TrainBenchArgs) -> Result<()> {
    if a.updates == 0 {
        anyhow::bail!("--updates must be > 0");
    }
    let mut cfg = TrainConfig {
        preset: train::config::Preset::from_name(&a.preset)?,
        mode: model::mode(&a.mode)?,
        level: a.level.clone(),
        threads: a.threads,
        backend: train::backend::BackendChoice::from_name(&a.backend)?,
        ..TrainConfig::default()
    };
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
        cfg.set(k, v).with_context(|| format!("--set {kv}"))?;
    }
    let r = train::run::bench(&cfg, a.warmup, a.updates)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "train bench: preset={} mode={} level={} procs={} frames_per_proc={} batch={} \
         recurrence={} epochs={} meta_schedule={} other_group={} inner_steps={} outer_steps={} \
         slowness={}",
        cfg.preset,
        cfg.mode.name(),
        cfg.level,
        cfg.procs,
        cfg.frames_per_proc,
        cfg.batch_size,
        cfg.recurrence,
        cfg.epochs,
        match cfg.meta_schedule {
            train::config::MetaSchedule::Accumulate => "accumulate",
            train::config::MetaSchedule::Phases => "phases",
        },
        match cfg.other_group {
            train::config::OtherGroup::Fast => "fast",
            train::config::OtherGroup::Slow => "slow",
        },
        cfg.inner_steps,
        cfg.outer_steps,
        cfg.slowness
    )?;
    let fps: Vec<String> = r.update_fps.iter().map(|f| format!("{f:.0}")).collect();
    writeln!(
        out,
        "{} warm-up + {} timed updates of {} frames; per-update frames/s: {}; \
         rollout {:.1}% / learning {:.1}% of the time",
        a.warmup,
        a.updates,
        cfg.frames_per_update(),
        fps.join(", "),
        100.0 * r.rollout_s / (r.rollout_s + r.learn_s).max(1e-9),
        100.0 * r.learn_s / (r.rollout_s + r.learn_s).max(1e-9)
    )?;
    writeln!(
        out,
        "bench-train: preset={} mode={} backend={} threads={} frames_per_sec={:.0}",
        cfg.preset,
        cfg.mode.name(),
        r.backend,
        r.threads,
        r.median_fps()
    )?;
    Ok(())
}

fn cmd_adapt(a: AdaptArgs) -> Result<ExitCode> {
    // Unset flags keep the firmware's configuration.
    let d = metarim_core::adapt::AdaptConfig::default();
    let cfg = metarim_core::adapt::AdaptConfig {
        lr: a.lr.unwrap_or(d.lr),
        windows_per_step: a.windows_per_step.unwrap_or(d.windows_per_step),
        entropy_coef: a.entropy_coef.unwrap_or(d.entropy_coef),
        max_grad_norm: a.max_grad_norm.unwrap_or(d.max_grad_norm),
        guard: if a.no_guard {
            metarim_core::adapt::GuardConfig::OFF
        } else {
            metarim_core::adapt::GuardConfig {
                probe_episodes: a.probe_episodes.unwrap_or(d.guard.probe_episodes),
                trail_episodes: a.trail_episodes.unwrap_or(d.guard.trail_episodes),
                keep_z: a.keep_z.unwrap_or(d.guard.keep_z),
                revert_z: a.revert_z.unwrap_or(d.guard.revert_z),
                stop_success: a.stop_success.unwrap_or(d.guard.stop_success),
                max_reverts: a.max_reverts.unwrap_or(d.guard.max_reverts),
            }
        },
        ..d
    };
    for (v, name) in [(cfg.lr, "--lr"), (cfg.max_grad_norm, "--max-grad-norm")] {
        if !(v.is_finite() && v > 0.0) {
            anyhow::bail!("{name} must be a positive number");
        }
    }
    if !(cfg.entropy_coef.is_finite() && cfg.entropy_coef >= 0.0) {
        anyhow::bail!("--entropy-coef must be a finite number >= 0");
    }
    if !(a.value_coef.is_finite() && a.value_coef >= 0.0) {
        anyhow::bail!("--value-coef must be a finite number >= 0");
    }
    if cfg.windows_per_step == 0 {
        anyhow::bail!("--windows-per-step must be >= 1 (windows per optimiser step), got 0");
    }
    let t = cfg.guard.trail_episodes;
    if !(1..=metarim_core::adapt::guard::MAX_TRAIL).contains(&t) {
        anyhow::bail!("--trail-episodes must be in 1..=128, got {t}");
    }
    let o = host::adapt::AdaptOptions {
        level: a.level.clone(),
        episodes: a.episodes,
        eval_episodes: a.eval_episodes,
        seed: a.seed,
        cfg,
        groups: a
            .groups
            .as_deref()
            .map(host::adapt::Groups::parse)
            .transpose()?,
        value_coef: a.value_coef,
    };
    let r = host::adapt::run(&a.checkpoint, &o)?;
    // One line per evaluation: successes, rate, Wilson interval, mean return.
    let evaluation =
        |out: &mut io::StdoutLock, label: &str, s: &metarim_core::adapt::EpisodeStats| {
            let (lo, hi) = train::eval::wilson(s.successes as usize, s.episodes as usize);
            writeln!(
                out,
                "{label}: success {}/{} ({:.4}, 95% CI {lo:.4}-{hi:.4}) mean return {:.4}",
                s.successes,
                s.episodes,
                s.success_rate(),
                s.return_sum / s.episodes.max(1) as f32
            )
        };
    let mut out = io::stdout().lock();
    evaluation(&mut out, "before", &r.before)?;
    writeln!(
        out,
        "adapting: {} episodes, {} steps, {} windows, {} fast updates (mean grad norm {:.4}, \
         clipped {:.3}; mean advantage {:.4}, entropy {:.4}), success {:.4}; adapter RAM {} B",
        r.during.episodes,
        r.during.steps,
        r.during.updates,
        r.during.optimizer_steps,
        r.during.mean_grad_norm,
        r.during.clip_fraction,
        r.during.mean_advantage,
        r.during.mean_entropy,
        r.during.success_rate(),
        r.adapter_bytes
    )?;
    let g = &r.during.guard;
    if g.enabled {
        let stopped = match g.stopped_after {
            0 => String::from("never stopped"),
            n => format!("stopped learning after {n} episodes"),
        };
        writeln!(
            out,
            "guard: baseline {}/{} in the probe, trailing {}/{} at the end (z {:.2}), {} \
             restore(s), {stopped}; {}",
            g.probe_successes,
            g.probe_episodes,
            g.trail_successes,
            g.trail_episodes,
            g.final_z,
            g.reverts,
            if g.kept {
                "kept the adapted weights"
            } else {
                "left the starting weights"
            }
        )?;
    }
    evaluation(&mut out, "after", &r.after)?;
    writeln!(
        out,
        "adapt: level={} before={:.4} after={:.4} episodes={}",
        a.level,
        r.before.success_rate(),
        r.after.success_rate(),
        a.episodes
    )?;
    Ok(ExitCode::SUCCESS)
}
