//! `metarim`: the command line of metarim (Meta-RIMs in Rust).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use flate2::write::GzEncoder;

use host::{bench, dump, model, play, trace};

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
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Print every tensor (name, group, shape) and the totals per group.
    Info(ModelInfoArgs),
}

#[derive(Args, Debug)]
struct ModelInfoArgs {
    /// Preset: Paper or Tiny.
    #[arg(long, default_value = "Paper")]
    preset: String,
    /// Mode: meta-rim, reversed, joint or lstm.
    #[arg(long, default_value = "meta-rim")]
    mode: String,
    /// Steps of the on-device adaptation window used for the memory estimate.
    #[arg(long, default_value_t = 16)]
    window: usize,
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
}

#[derive(Args, Debug)]
struct DumpArgs {
    /// Level id.
    #[arg(long, required_unless_present = "list")]
    level: Option<String>,
    /// Number of initial states.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Seed of the first state; state i uses seed + i (wrapping).
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
        Command::Model(ModelCommand::Info(a)) => {
            let dims = model::preset(&a.preset)?;
            let mode = model::mode(&a.mode)?;
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
                None => dump::dump(&mut BufWriter::new(stdout.lock()), &level, a.count, a.seed)?,
                Some(path) => {
                    let file = File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let file = BufWriter::new(file);
                    let res = if path.extension().is_some_and(|e| e == "gz") {
                        let mut gz = GzEncoder::new(file, flate2::Compression::default());
                        dump::dump(&mut gz, &level, a.count, a.seed)
                            .and_then(|()| Ok(gz.finish()?.flush()?))
                    } else {
                        let mut file = file;
                        dump::dump(&mut file, &level, a.count, a.seed)
                    };
                    res.with_context(|| format!("writing {}", path.display()))?;
                }
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
