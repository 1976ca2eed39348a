//! metarim on a Cortex-M4F: the `Tiny` policy from `metarim-core` acting in the core's
//! gridworld, with every buffer in static memory, on-device adaptation of the fast modules, and
//! a report of results, memory and time. Board-independent: a board crate
//! (`firmware/boards/<name>`) gives the memory map (`memory.x`, with the model blob's own flash
//! region), the clock set-up ([`Board`]) and the output (feature `semihosting` for QEMU, `rtt`
//! for defmt over RTT on hardware), and expands [`firmware_main!`].
//!
//! Invariants:
//! - No heap: the environment, the acting state, the layout, the fast parameters and the
//!   adapter are `static` (cortex-m-rt turns `static mut` items of the entry function into
//!   `&'static mut` references without `unsafe`); everything else is on the stack, whose
//!   high-water mark is measured.
//! - The model is never linked in: it is found in the `BLOB` flash region and checked at start
//!   ([`model::load`]); without a usable blob the firmware prints why and halts (exit status
//!   [`exit::BAD_BLOB`]) before any action is taken.
//! - The run ends through [`exit::exit`]: status 0 when it finished, non-zero on a bad blob, a
//!   core error, a panic or a HardFault.
//! - The last line printed is `firmware: before=X after=Y ram_bytes=R flash_bytes=F
//!   insns_per_step=0`: the firmware cannot count its own instructions, so
//!   `scripts/run-firmware.sh` replaces the 0 with the figure from QEMU's insn-count plugin.
//!   `flash_bytes` is the program plus the blob it found.
//!
//! Phases, as issue 6 lays them out: (a) evaluate the model as flashed ([`episodes::run`]),
//! (b) adapt its fast modules on-device (`core::adapt`), (c) evaluate again.

#![no_std]

pub mod board;
pub mod config;
pub mod cycles;
pub mod episodes;
pub mod exit;
pub mod mem;
pub mod model;
pub mod out;

use core::mem::{size_of, MaybeUninit};

// The RTT transport defmt's lines go out through (a global logger; nothing to call).
#[cfg(feature = "rtt")]
use defmt_rtt as _;

use metarim_core::adapt::{
    play_episodes, AdaptConfig, Adaptation, EpisodeStats, Session, TinyAdapter,
};
use metarim_core::env::Env;
use metarim_core::levels::Level;
use metarim_core::nn::params::Layout;
use metarim_core::nn::presets::{tiny_layout, TinyActor, TINY_FAST, TINY_OTHER, TINY_SLOW};
use metarim_core::Error;

pub use crate::board::Board;
use crate::episodes::{Ctx, Stats};
use crate::mem::Sections;

/// Re-exports for [`firmware_main!`] (not a public API).
#[doc(hidden)]
pub mod __private {
    pub use core::mem::MaybeUninit;
    pub use cortex_m_rt::entry;
    pub use metarim_core::env::Env;
    pub use metarim_core::nn::params::Layout;
    pub use metarim_core::nn::presets::{TinyActor, TINY_FAST};
}

/// The RAM budget of issue 6 (Tiny preset: static + stack): the STM32L432KC's 64 KB.
const RAM_BUDGET: usize = 64 * 1024;
/// The flash budget of issue 6 (program + blob): the STM32L432KC's 256 KB.
const FLASH_BUDGET: usize = 256 * 1024;

/// The program's entry point for a board crate: `metarim_firmware::firmware_main!(BOARD);`
/// with `BOARD: metarim_firmware::Board`. Declares the static memory (const-initialised, so the
/// 22 KB world is never built on the stack) and runs [`run`].
#[macro_export]
macro_rules! firmware_main {
    ($board:expr) => {
        #[$crate::__private::entry]
        fn main() -> ! {
            // cortex-m-rt turns these leading `static mut`s into `&'static mut` references.
            static mut ENV: $crate::__private::Env = $crate::__private::Env::EMPTY;
            static mut ACTOR: $crate::__private::MaybeUninit<$crate::__private::TinyActor> =
                $crate::__private::MaybeUninit::uninit();
            static mut LAYOUT: $crate::__private::MaybeUninit<$crate::__private::Layout> =
                $crate::__private::MaybeUninit::uninit();
            static mut FAST: [f32; $crate::__private::TINY_FAST] =
                [0.0; $crate::__private::TINY_FAST];
            // The adaptation window, gradient and work buffer (SGD: no moments).
            static mut ADAPTER: $crate::Adapter = $crate::Adapter::new();
            $crate::run(
                &$board,
                $crate::Slots {
                    env: ENV,
                    actor: ACTOR,
                    layout: LAYOUT,
                    fast: FAST,
                },
                ADAPTER,
            )
        }
    };
}

/// Bring the board up, run the three phases and end with [`exit::exit`].
pub fn run(board: &Board, slots: Slots, adapter: &'static mut Adapter) -> ! {
    let sections = Sections::get();
    let painted = mem::paint_stack(&sections);
    let hz = (board.init)();
    cycles::enable();
    match run_phases(board, hz, slots, adapter, &sections, painted) {
        Ok(()) => exit::exit(exit::OK),
        Err(Failure::Blob(e)) => {
            let (start, len) = model::region_bounds();
            say!("firmware: error: {}", e);
            say!(
                "firmware: no usable model in the blob region at {:#010x} ({} B): flash one with `metarim export --preset Tiny --out model.bin` and `probe-rs download --chip <chip> --binary-format bin --base-address {:#010x} model.bin` (QEMU: -device loader,file=model.bin,addr={:#010x},force-raw=on); halting without acting",
                start,
                len,
                start,
                start
            );
            exit::exit(exit::BAD_BLOB)
        }
        Err(Failure::Core(e)) => {
            say!("firmware: error: {}", e);
            exit::exit(exit::CORE_ERROR)
        }
    }
}

/// Why a run stopped early.
enum Failure {
    /// The blob region holds no usable blob.
    Blob(Error),
    /// Any other error from core.
    Core(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Core(e)
    }
}

/// Steps in the on-device adaptation window (the host twin `metarim adapt` uses the same).
const ADAPT_WINDOW: usize = 16;

/// The on-device adapter: Tiny, a window of [`ADAPT_WINDOW`] steps, plain SGD.
pub type Adapter = TinyAdapter<ADAPT_WINDOW>;

/// (b) of the run: `config::ADAPT_EPISODES` episodes of fast-only adaptation with core's loop
/// (the host twin's), sampling actions, on seed `config::SEED + 1`.
#[inline(never)]
fn adapt(ctx: &mut Ctx<'_>, level: &Level, adapter: &mut Adapter) -> Result<EpisodeStats, Error> {
    let cfg = AdaptConfig::default();
    play_episodes(
        &mut ctx.session,
        level,
        config::SEED.wrapping_add(1),
        0,
        u64::from(config::ADAPT_EPISODES),
        false,
        Some(Adaptation {
            adapter,
            cfg: &cfg,
            initial_fast: ctx.initial_fast,
        }),
    )
}

/// The static storage, handed to [`run`] once (by [`firmware_main!`]).
pub struct Slots {
    /// The gridworld.
    pub env: &'static mut Env,
    /// Acting state.
    pub actor: &'static mut MaybeUninit<TinyActor>,
    /// The parameter layout.
    pub layout: &'static mut MaybeUninit<Layout>,
    /// The fast group (copied from the blob, adapted on the device).
    pub fast: &'static mut [f32; TINY_FAST],
}

/// Build the layout, parameters, environment and acting state in their static slots. Each
/// object is built by its own non-inlined function, so the temporaries (core's constructors
/// return by value) live only in frames that end before the episodes start.
/// Returns the context and the blob's length in bytes; a blob that cannot be used is
/// [`Failure::Blob`].
#[inline(never)]
fn setup(slots: Slots, level: &Level) -> Result<(Ctx<'static>, usize), Failure> {
    let layout: &'static Layout = init_layout(slots.layout)?;
    let params = model::load(slots.fast).map_err(Failure::Blob)?;
    let (w, h) = level.grid_size();
    let env = init_env(slots.env, w, h)?;
    let actor = init_actor(slots.actor);
    let ctx = Ctx {
        session: Session {
            layout,
            fast: params.fast,
            slow: params.slow,
            other: params.other,
            env,
            actor,
        },
        initial_fast: params.initial_fast,
    };
    Ok((ctx, params.blob_bytes))
}

#[inline(never)]
fn init_layout(slot: &'static mut MaybeUninit<Layout>) -> Result<&'static Layout, Error> {
    Ok(slot.write(tiny_layout()?))
}

#[inline(never)]
fn init_env(slot: &'static mut Env, w: usize, h: usize) -> Result<&'static mut Env, Error> {
    slot.clear(w, h)?;
    Ok(slot)
}

#[inline(never)]
fn init_actor(slot: &'static mut MaybeUninit<TinyActor>) -> &'static mut TinyActor {
    slot.write(TinyActor::default())
}

#[inline(never)]
fn run_phases(
    board: &Board,
    hz: u32,
    slots: Slots,
    adapter: &'static mut Adapter,
    sections: &Sections,
    painted: usize,
) -> Result<(), Failure> {
    let level = Level::from_id(config::LEVEL)?;
    announce(board, hz, &level);
    let (mut ctx, blob_bytes) = setup(slots, &level)?;
    // The set-up's stack peak, then paint again for the episodes' own.
    let stack_setup = mem::stack_high_water(sections);
    mem::paint_stack(sections);
    let repeat = cmdline_count("policy-repeat=");
    let reset_repeat = cmdline_count("reset-repeat=");
    say!("firmware: params: blob of {} B, CRC32 checked", blob_bytes);
    say!(
        "firmware: episodes={} seed={} actions={} policy_repeat={} reset_repeat={}",
        config::EPISODES,
        config::SEED,
        if config::ARGMAX { "argmax" } else { "sample" },
        repeat,
        reset_repeat
    );

    // The evaluation run before and after adaptation: the same episodes each time.
    let evaluate = |ctx: &mut Ctx<'_>| {
        episodes::run(
            ctx,
            &level,
            config::SEED,
            config::EPISODES,
            config::ARGMAX,
            repeat,
            reset_repeat,
        )
    };
    // (a) The model as loaded.
    let before = evaluate(&mut ctx)?;
    report("before", &before);
    // (b) On-device adaptation of the fast group (module RNNs) on the same level's episodes
    // (seed + 1: other episodes than the evaluation's), with core's adaptation loop.
    let adapt_start = cycles::now();
    let during = adapt(&mut ctx, &level, adapter)?;
    let adapt_cycles = cycles::now().wrapping_sub(adapt_start);
    report_adaptation(&during);
    // (c) The same evaluation episodes again.
    let after = evaluate(&mut ctx)?;
    report("after", &after);

    let footprint = Footprint {
        stack_setup,
        stack_run: mem::stack_high_water(sections),
        painted,
        blob_bytes,
    };
    let (ram, flash) = report_footprint(board, sections, &footprint);
    if cycles::AVAILABLE {
        report_cycles(&before, &after, &during, adapt_cycles, hz);
    }
    report_summary(&before, &after, ram, flash);
    Ok(())
}

/// The run's first lines: what runs where, and where the model blob is looked for.
fn announce(board: &Board, hz: u32, level: &Level) {
    say!(
        "firmware: metarim-core Tiny policy on {} ({}, board {}, core clock {} Hz)",
        level.id(),
        board.chip,
        board.name,
        hz
    );
    let (start, len) = model::region_bounds();
    say!(
        "firmware: model blob region {:#010x}..{:#010x} ({} B)",
        start,
        start + len,
        len
    );
}

/// What the adaptation phase did, and what its guard decided.
fn report_adaptation(during: &EpisodeStats) {
    say!(
        "firmware: adapted: episodes={} steps={} windows={} sgd_steps={} success={}/{} (SGD, window {}, {} windows per step, adapter RAM {} B)",
        during.episodes,
        during.steps,
        during.updates,
        during.optimizer_steps,
        during.successes,
        during.episodes,
        ADAPT_WINDOW,
        AdaptConfig::default().windows_per_step,
        Adapter::RAM_BYTES
    );
    let g = during.guard;
    say!(
        "firmware: guard: probe={}/{} trailing={}/{} restores={} stopped_after={} kept={}",
        g.probe_successes,
        g.probe_episodes,
        g.trail_successes,
        g.trail_episodes,
        g.reverts,
        g.stopped_after,
        g.kept
    );
}

/// The stack marks and the model's size, for [`report_footprint`].
struct Footprint {
    /// Stack high-water mark of the set-up (B).
    stack_setup: usize,
    /// Stack high-water mark of the episodes and the adaptation (B).
    stack_run: usize,
    /// Bytes of stack painted for the marks.
    painted: usize,
    /// The model blob found in its region (B).
    blob_bytes: usize,
}

/// RAM (static + stack high-water), flash (program + blob) and both against the chip:
/// printed, and returned as `(ram, flash)` for the summary line.
fn report_footprint(board: &Board, sections: &Sections, f: &Footprint) -> (usize, usize) {
    let stack = f.stack_setup.max(f.stack_run);
    let ram = sections.static_ram() + stack;
    let program = sections.flash();
    let flash = program + f.blob_bytes;
    let (_, region) = model::region_bounds();
    say!(
        "firmware: stack high-water: set-up {} B, episodes {} B (of {} B painted)",
        f.stack_setup,
        f.stack_run,
        f.painted
    );
    say!(
        "firmware: ram: static {} B (.data {} .bss {} .uninit {}) + stack high-water {} B = {} B",
        sections.static_ram(),
        sections.data(),
        sections.bss(),
        sections.uninit(),
        stack,
        ram
    );
    say!(
        "firmware: ram by object: Env {} B, TinyActor {} B, fast params {} B ({} floats; slow {} and other {} floats stay in flash), Layout {} B; model blob {} B in its flash region",
        size_of::<Env>(),
        size_of::<TinyActor>(),
        4 * TINY_FAST,
        TINY_FAST,
        TINY_SLOW,
        TINY_OTHER,
        size_of::<Layout>(),
        f.blob_bytes
    );
    say!(
        "firmware: flash: {} B = program {} B (vector table {} .text {} .rodata {} .data image {}) + blob {} B",
        flash,
        program,
        program - sections.text() - sections.rodata() - sections.data(),
        sections.text(),
        sections.rodata(),
        sections.data(),
        f.blob_bytes
    );
    say!(
        "firmware: chip: ram {} B {} {} B, flash {} B {} {} B ({})",
        ram,
        if ram <= board.ram_bytes {
            "<="
        } else {
            "> (OVER)"
        },
        board.ram_bytes,
        program + region,
        if program + region <= board.flash_bytes {
            "<="
        } else {
            "> (OVER)"
        },
        board.flash_bytes,
        "program + the whole blob region"
    );
    (ram, flash)
}

/// Cycles per policy step, per environment step and per adaptation window (hardware builds:
/// the DWT counter).
fn report_cycles(before: &Stats, after: &Stats, during: &EpisodeStats, adapt_cycles: u64, hz: u32) {
    let per = |c: u64, n: u64| c.checked_div(n).unwrap_or(0);
    say!(
        "firmware: cycles: policy step {} (evaluation: {} steps), env step all-in {}, adaptation window all-in {} ({} windows: {} steps of acting, the gradient and the SGD step), at {} Hz",
        per(before.policy_cycles + after.policy_cycles, before.steps + after.steps),
        before.steps + after.steps,
        per(before.cycles + after.cycles, before.steps + after.steps),
        per(adapt_cycles, u64::from(during.updates)),
        during.updates,
        ADAPT_WINDOW,
        hz
    );
}

/// The action digests, the budget check and the summary line `scripts/run-firmware.sh`
/// reads (always the last line).
fn report_summary(before: &Stats, after: &Stats, ram: usize, flash: usize) {
    say!(
        "firmware: actions: before={:#018x} after={:#018x}",
        before.actions_fnv,
        after.actions_fnv
    );
    say!(
        "firmware: budget: ram {} B {} 64 KiB, flash {} B {} 256 KiB",
        ram,
        if ram <= RAM_BUDGET { "<=" } else { "> (OVER)" },
        flash,
        if flash <= FLASH_BUDGET {
            "<="
        } else {
            "> (OVER)"
        }
    );
    say!(
        "firmware: policy_steps={}",
        before.steps + after_steps(after)
    );
    // Level generations that `reset-repeat=2` repeats: one per evaluation episode.
    say!("firmware: eval_resets={}", before.episodes + after.episodes);
    say!(
        "firmware: before={} after={} ram_bytes={} flash_bytes={} insns_per_step=0",
        Fixed::<4>(before.success_rate()),
        Fixed::<4>(after.success_rate()),
        ram,
        flash
    );
}

/// Policy steps of the evaluation after adaptation: it also repeats its policy steps under `policy-repeat=2`, so
/// it counts towards the steps the instruction difference is divided by.
fn after_steps(after: &Stats) -> u64 {
    after.steps
}

fn report(phase: &str, s: &Stats) {
    say!(
        "firmware: {}: episodes={} success={}/{} ({}) mean_return={} steps={} mean_len={}",
        phase,
        s.episodes,
        s.successes,
        s.episodes,
        Fixed::<4>(s.success_rate()),
        Fixed::<4>(s.mean_return()),
        s.steps,
        Fixed::<2>(if s.episodes == 0 {
            0.0
        } else {
            s.steps as f64 / f64::from(s.episodes)
        })
    );
}

/// A number printed with `D` decimals by integer arithmetic (rounded half away from zero), so
/// the firmware links no float formatting (about 15 KB of flash).
struct Fixed<const D: u32>(f64);

impl<const D: u32> core::fmt::Display for Fixed<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let scale = 10u64.pow(D);
        let neg = self.0 < 0.0;
        let mag = if neg { -self.0 } else { self.0 };
        // Saturating float-to-int cast: NaN prints 0, huge values the largest u64.
        let scaled = (mag * scale as f64 + 0.5) as u64;
        let (int, frac) = (scaled / scale, scaled % scale);
        if neg && scaled != 0 {
            f.write_str("-")?;
        }
        write!(f, "{int}.{frac:0width$}", width = D as usize)
    }
}

/// `KEY=N` from the semihosting command line (QEMU `-semihosting-config arg=...`), 1 when
/// absent, at most 16: `policy-repeat=N` computes each policy step N times, `reset-repeat=N`
/// generates each evaluation level N times; the run's results are the same, only its
/// instruction count grows (what `scripts/run-firmware.sh` measures them by).
fn cmdline_count(key: &str) -> u32 {
    // On a board nothing answers semihosting without a debugger: no command line there.
    if cfg!(feature = "rtt") {
        return 1;
    }
    let mut buf = [0u8; 128];
    let mut block = [buf.as_mut_ptr() as usize, buf.len() - 1];
    // SAFETY: SYS_GET_CMDLINE writes at most block[1] bytes into buf and the length into
    // block[1]; both live across the call and are only read after it.
    let status = unsafe {
        cortex_m_semihosting::syscall1(
            cortex_m_semihosting::nr::GET_CMDLINE,
            block.as_mut_ptr() as usize,
        )
    };
    if status != 0 {
        return 1;
    }
    let len = block[1].min(buf.len());
    let text = core::str::from_utf8(buf.get(..len).unwrap_or(&[])).unwrap_or("");
    text.split_ascii_whitespace()
        .find_map(|t| t.strip_prefix(key))
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(1, |n| n.clamp(1, 16))
}
