//! `metarim-capi`: a C API for the device side of metarim. The `Tiny` policy of
//! `metarim-core` (meta-rim split) acting in core's gridworld levels, and its fast-only
//! on-device adaptation, behind an opaque `metarim_device` that lives in memory the caller
//! provides. Built as a static library (`libmetarim_capi.a`) with a header written by cbindgen
//! (`include/metarim.h`, see build.rs).
//!
//! Invariants:
//! - No heap, no global state: everything a device needs is inside the caller's
//!   [`METARIM_DEVICE_BYTES`] bytes (aligned to [`METARIM_DEVICE_ALIGN`]), except the model
//!   blob, whose frozen groups are read in place from the caller's blob region (flash) for the
//!   device's whole life; only the fast group is copied into the device.
//! - Every entry point checks its pointers (null, alignment), lengths and strings, and returns
//!   a [`Status`]; no input reaches a panic (the panic handler of the static library only
//!   loops, and nothing calls it). The message of the last failure of a device is kept for
//!   [`metarim_last_error`]: for errors from the core it is exactly core's `Display` of
//!   [`metarim_core::Error`], the text the Rust firmware prints.
//! - Episodes follow the Rust firmware (`firmware/app/src/episodes.rs`) action for action:
//!   episode `i` of seed `S` draws its level seed and then its sampled actions from
//!   `Pcg32::with_stream(split_mix64(S), i)`. Adaptation is core's `play_episodes` with
//!   `AdaptConfig::default()` and a `TinyAdapter<16>`, as the firmware's `adapt()`.
//! - A device is used by one thread at a time (the C caller's duty); the library itself keeps
//!   no state between calls outside the device.
//!
//! Construction is in place: the 22 KB environment is written from the `Env::EMPTY` constant
//! and the acting state and adapter from zero-filled constructors, each by a non-inlined
//! function, so no large temporary sits on the caller's stack.
// Built with std for its tests and for fuzzing (`--cfg fuzzing`, fuzz/capi/), where a panic
// must reach libFuzzer instead of the device's looping handler.
#![cfg_attr(not(any(test, fuzzing)), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

use core::ffi::{c_char, c_void};
use core::fmt::{self, Write as _};
use core::mem::{align_of, size_of};
use core::ptr::{self, addr_of_mut, NonNull};

use metarim_core::adapt::{
    play_episodes, AdaptConfig, Adaptation, EpisodeStats, LearnTotals, Session, TinyAdapter,
};
use metarim_core::blob::Blob;
use metarim_core::env::{Action, Env, Observation, VIEW_CELLS};
use metarim_core::levels::Level;
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::dims::TINY;
use metarim_core::nn::params::{GroupBufs, Layout, Mode};
use metarim_core::nn::presets::{tiny_layout, TinyActor, TINY_FAST};
use metarim_core::nn::sample::{argmax_action, sample_action};
use metarim_core::rng::Pcg32;
use metarim_core::Error;

/// Size in bytes of the memory a device needs (`metarim_device_init`'s `mem_len` at least):
/// the size of the device on a 32-bit target (Cortex-M).
#[cfg(target_pointer_width = "32")]
pub const METARIM_DEVICE_BYTES: usize = 39248;
/// Size in bytes of the memory a device needs (`metarim_device_init`'s `mem_len` at least):
/// the size of the device on a 64-bit target (host).
#[cfg(target_pointer_width = "64")]
pub const METARIM_DEVICE_BYTES: usize = 40680;
/// Alignment in bytes the device memory must have.
pub const METARIM_DEVICE_ALIGN: usize = 8;
/// Cells of an observation (the agent's 7x7 view).
pub const METARIM_VIEW_CELLS: usize = 49;
/// Bytes of an observation: `[type, color, state]` per cell, cell `j * 7 + i` is view column
/// `i`, row `j` (minigrid's `obs["image"]` transposed, as `metarim_core::env::Env::observe`).
pub const METARIM_OBS_BYTES: usize = 147;
/// Actions (minigrid's: left, right, forward, pickup, drop, toggle, done).
pub const METARIM_N_ACTIONS: usize = 7;
/// Steps in the adaptation window (the Rust firmware's and the host twin's).
pub const METARIM_ADAPT_WINDOW: usize = 16;
/// Longest level id accepted, in bytes before its NUL.
pub const METARIM_MAX_LEVEL_ID: usize = 127;
/// Longest mission accepted by `metarim_policy_reset`, in bytes before its NUL.
pub const METARIM_MAX_MISSION: usize = 511;

// The header's numbers are the real ones on every target this builds for.
const _: () = assert!(size_of::<Device>() == METARIM_DEVICE_BYTES);
const _: () = assert!(align_of::<Device>() == METARIM_DEVICE_ALIGN);
const _: () = assert!(METARIM_VIEW_CELLS == VIEW_CELLS);
const _: () = assert!(METARIM_OBS_BYTES == 3 * VIEW_CELLS);
const _: () = assert!(METARIM_N_ACTIONS == TINY.n_actions);
const _: () = assert!(METARIM_N_ACTIONS == Action::ALL.len());

/// The adapter: Tiny, a window of [`METARIM_ADAPT_WINDOW`] steps, plain SGD.
type Adapter = TinyAdapter<METARIM_ADAPT_WINDOW>;

/// What a call returns: `METARIM_STATUS_OK` (0) or why it failed. `metarim_last_error` gives
/// the message of a device's last failure.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be null was null.
    NullPointer = 1,
    /// `mem_len` is below `METARIM_DEVICE_BYTES`.
    MemoryTooSmall = 2,
    /// A pointer is not aligned for its type (device memory: `METARIM_DEVICE_ALIGN`).
    Misaligned = 3,
    /// The blob region holds no usable model blob (erased, zeroed, corrupt, another preset or
    /// split, f16 frozen groups).
    BadBlob = 4,
    /// Unknown level id, or a level this build cannot hold (grids above 16x16).
    BadLevel = 5,
    /// A mission that cannot be tokenised (too many words, not UTF-8, too long).
    BadMission = 6,
    /// Any other error from metarim-core (the message names it).
    CoreError = 7,
    /// An argument out of range (an action index above 6, overlapping buffers, a length).
    BadArgument = 8,
    /// An output buffer too small (`metarim_policy_step`'s logits, `metarim_observe`'s obs).
    BufferTooSmall = 9,
    /// No episode to act or step in (none begun, it ended, or adaptation or
    /// `metarim_policy_reset` replaced it), or `metarim_policy_step` without
    /// `metarim_policy_reset`.
    NoEpisode = 10,
    /// The device's initialisation failed (its message stays in `metarim_last_error`).
    NotReady = 11,
}

/// The result of one environment step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepResult {
    /// Reward: `1 - 0.9 * steps / max_steps` on success, else 0.
    pub reward: f32,
    /// Steps taken in this episode, this one included.
    pub steps: u32,
    /// The episode ended (success or failure).
    pub terminated: bool,
    /// The step budget ran out.
    pub truncated: bool,
    /// The episode ended with a positive reward (what the firmware counts as a success).
    pub success: bool,
}

/// Totals of `metarim_adapt`: core's `EpisodeStats`, flattened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AdaptStats {
    /// Episodes played.
    pub episodes: u32,
    /// Episodes that reached their goal.
    pub successes: u32,
    /// Environment steps.
    pub steps: u32,
    /// Windows learned from (core's `updates`).
    pub windows: u32,
    /// SGD steps taken on the fast group.
    pub optimizer_steps: u32,
    /// Guard: probe episodes (the baseline).
    pub guard_probe_episodes: u32,
    /// Guard: successes in the probe.
    pub guard_probe_successes: u32,
    /// Guard: episodes in the trailing window at the end.
    pub guard_trail_episodes: u32,
    /// Guard: successes in that window.
    pub guard_trail_successes: u32,
    /// Guard: times the starting weights were restored.
    pub guard_reverts: u32,
    /// Guard: episodes played before learning stopped (0: it never stopped early).
    pub guard_stopped_after: u32,
    /// Sum of the returns.
    pub return_sum: f32,
    /// Mean pre-clip gradient norm of the SGD steps.
    pub mean_grad_norm: f32,
    /// Fraction of the SGD steps whose gradient was clipped.
    pub clip_fraction: f32,
    /// Mean GAE advantage of the steps learned from.
    pub mean_advantage: f32,
    /// Mean policy entropy at the steps learned from.
    pub mean_entropy: f32,
    /// Guard: z statistic of the final keep test.
    pub guard_final_z: f32,
    /// Guard: whether it was on.
    pub guard_enabled: bool,
    /// Guard: whether the adapted weights were kept (false: the blob's fast group is back).
    pub guard_kept: bool,
}

impl From<&EpisodeStats> for AdaptStats {
    fn from(s: &EpisodeStats) -> Self {
        let g = &s.guard;
        AdaptStats {
            episodes: s.episodes,
            successes: s.successes,
            steps: s.steps,
            windows: s.updates,
            optimizer_steps: s.optimizer_steps,
            guard_probe_episodes: g.probe_episodes,
            guard_probe_successes: g.probe_successes,
            guard_trail_episodes: g.trail_episodes,
            guard_trail_successes: g.trail_successes,
            guard_reverts: g.reverts,
            guard_stopped_after: g.stopped_after,
            return_sum: s.return_sum,
            mean_grad_norm: s.mean_grad_norm,
            clip_fraction: s.clip_fraction,
            mean_advantage: s.mean_advantage,
            mean_entropy: s.mean_entropy,
            guard_final_z: g.final_z,
            guard_enabled: g.enabled,
            guard_kept: g.kept,
        }
    }
}

/// The message of a failure.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Msg {
    /// No failure yet.
    None,
    /// An error from metarim-core: its `Display`.
    Core(Error),
    /// An error of this API.
    Api(&'static str),
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::None => Ok(()),
            Msg::Core(e) => write!(f, "{e}"),
            Msg::Api(s) => f.write_str(s),
        }
    }
}

/// A failed call: its status and message.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fail {
    status: Status,
    msg: Msg,
}

/// `Err` of an API failure (`status`, message `what`) when `failed` holds.
fn fail_if(failed: bool, status: Status, what: &'static str) -> Result<(), Fail> {
    if failed {
        Err(Fail::api(status, what))
    } else {
        Ok(())
    }
}

impl Fail {
    const fn api(status: Status, what: &'static str) -> Fail {
        Fail {
            status,
            msg: Msg::Api(what),
        }
    }
    /// A core error under a status chosen by the caller (where the error's kind alone does not
    /// say which argument was wrong).
    const fn core_as(status: Status, e: Error) -> Fail {
        Fail {
            status,
            msg: Msg::Core(e),
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let status = match e {
            Error::BadBlob { .. } | Error::BlobMode { .. } => Status::BadBlob,
            Error::UnknownLevel
            | Error::GridSize { .. }
            | Error::BadLevelParam { .. }
            | Error::GenerationFailed { .. } => Status::BadLevel,
            Error::BadMission { .. } | Error::MissionTooLong { .. } => Status::BadMission,
            _ => Status::CoreError,
        };
        Fail::core_as(status, e)
    }
}

/// Where the environment's episode stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Episode {
    /// None begun (or replaced by adaptation).
    None,
    /// Begun and not ended: `metarim_act` and `metarim_env_step` work.
    Running,
    /// Ended (terminated or truncated): only `metarim_observe` works.
    Ended,
}

/// Who started the acting state's current episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// Nobody (fresh, or after adaptation).
    None,
    /// `metarim_episode_begin`: `metarim_act` steps it.
    Episode,
    /// `metarim_policy_reset`: `metarim_policy_step` steps it.
    Caller,
}

/// The frozen groups and the blob's fast group, read in place from the caller's blob region.
#[derive(Clone, Copy, Debug)]
struct Frozen {
    initial_fast: NonNull<f32>,
    fast_len: usize,
    slow: NonNull<f32>,
    slow_len: usize,
    other: NonNull<f32>,
    other_len: usize,
}

impl Frozen {
    const EMPTY: Frozen = Frozen {
        initial_fast: NonNull::dangling(),
        fast_len: 0,
        slow: NonNull::dangling(),
        slow_len: 0,
        other: NonNull::dangling(),
        other_len: 0,
    };

    /// Remember the views of a parsed blob.
    fn new(initial_fast: &[f32], slow: &[f32], other: &[f32]) -> Frozen {
        Frozen {
            initial_fast: NonNull::from(initial_fast).cast(),
            fast_len: initial_fast.len(),
            slow: NonNull::from(slow).cast(),
            slow_len: slow.len(),
            other: NonNull::from(other).cast(),
            other_len: other.len(),
        }
    }

    /// The views again: (initial fast, slow, other).
    ///
    /// # Safety
    /// The blob region they came from must still be readable and unchanged for `'r` (the
    /// contract of `metarim_device_init`), or `self` is [`Frozen::EMPTY`].
    unsafe fn views<'r>(&self) -> (&'r [f32], &'r [f32], &'r [f32]) {
        // SAFETY: each pointer and length came from a slice of the caller's blob region (or is
        // dangling with length 0, always valid); f32-aligned and initialised because they were
        // `&[f32]` views checked by `Blob::parse`; the caller guarantees the region outlives
        // `'r` unchanged and nothing writes it through us (these are shared views).
        unsafe {
            (
                core::slice::from_raw_parts(self.initial_fast.as_ptr(), self.fast_len),
                core::slice::from_raw_parts(self.slow.as_ptr(), self.slow_len),
                core::slice::from_raw_parts(self.other.as_ptr(), self.other_len),
            )
        }
    }
}

/// An opaque device (`metarim_device` in C): the environment, the acting state, the adapter,
/// the layout, the fast group, the episode's generator and the last failure. It lives in the
/// caller's memory ([`metarim_device_init`]); C never looks inside.
pub struct Device {
    env: Env,
    actor: TinyActor,
    adapter: Adapter,
    layout: Option<Layout>,
    fast: [f32; TINY_FAST],
    frozen: Frozen,
    rng: Pcg32,
    episode: Episode,
    owner: Owner,
    ready: bool,
    last: Msg,
}

/// The device's parts, borrowed apart (only on a ready device).
struct Parts<'a> {
    layout: &'a Layout,
    fast: &'a mut [f32; TINY_FAST],
    initial_fast: &'a [f32],
    slow: &'a [f32],
    other: &'a [f32],
    env: &'a mut Env,
    actor: &'a mut TinyActor,
    adapter: &'a mut Adapter,
    rng: &'a mut Pcg32,
    episode: &'a mut Episode,
    owner: &'a mut Owner,
}

impl Device {
    fn parts(&mut self) -> Result<Parts<'_>, Fail> {
        let Device {
            env,
            actor,
            adapter,
            layout: Some(layout),
            fast,
            frozen,
            rng,
            episode,
            owner,
            ready: true,
            ..
        } = self
        else {
            return Err(NOT_READY);
        };
        // SAFETY: the device is ready, so `frozen` holds views of the blob region that
        // `metarim_device_init` parsed, which the caller keeps readable and unchanged while the
        // device is in use (its contract); the views are used only within this borrow.
        let (initial_fast, slow, other) = unsafe { frozen.views() };
        Ok(Parts {
            layout,
            fast,
            initial_fast,
            slow,
            other,
            env,
            actor,
            adapter,
            rng,
            episode,
            owner,
        })
    }
}

/// The failure of a call on a device whose initialisation failed (its own message is kept).
const NOT_READY: Fail = Fail::api(
    Status::NotReady,
    "the device is not ready (its initialisation failed)",
);

/// Run `f` on the device behind `dev`: its status, with the failure's message kept in the
/// device (a call on a device that is not ready keeps the initialisation's message).
///
/// # Safety
/// `dev` is null or a device from `metarim_device_init` whose memory is live and used by no
/// one else during the call.
unsafe fn with_device(dev: *mut Device, f: impl FnOnce(&mut Device) -> Result<(), Fail>) -> Status {
    if !dev.is_aligned() {
        return Status::Misaligned;
    }
    // SAFETY: dev is aligned, and null or (the caller's contract) a device that
    // `metarim_device_init` wrote in full, live and not otherwise borrowed during this call.
    let Some(d) = (unsafe { dev.as_mut() }) else {
        return Status::NullPointer;
    };
    match f(d) {
        Ok(()) => Status::Ok,
        Err(e) => {
            if e.status != Status::NotReady {
                d.last = e.msg;
            }
            e.status
        }
    }
}

/// Write `v` through the caller's out-pointer `p` after checking it.
///
/// # Safety
/// `p` is null or points to writable memory for a `T` (the caller's contract).
unsafe fn put<T>(p: *mut T, v: T) -> Result<(), Fail> {
    fail_if(
        p.is_null(),
        Status::NullPointer,
        "an output pointer is null",
    )?;
    fail_if(
        !p.is_aligned(),
        Status::Misaligned,
        "an output pointer is misaligned for its type",
    )?;
    // SAFETY: p is non-null and aligned, and the caller guarantees it is writable for a T;
    // `write` does not read or drop the old (possibly uninitialised) contents.
    unsafe { p.write(v) };
    Ok(())
}

/// The NUL-terminated string at `p`, at most `max` bytes before its NUL, as UTF-8.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string (bytes are read up to its NUL, and never
/// past `max` bytes).
unsafe fn c_str<'a>(p: *const c_char, max: usize, status: Status) -> Result<&'a str, Fail> {
    fail_if(
        p.is_null(),
        Status::NullPointer,
        "a string argument is null",
    )?;
    let mut n = 0usize;
    loop {
        fail_if(
            n > max,
            status,
            "string argument too long or not NUL-terminated",
        )?;
        // SAFETY: p is non-null and the caller's string is NUL-terminated; we read byte n only
        // when no NUL came before it, so n is within the string or at its NUL.
        if unsafe { p.cast::<u8>().add(n).read() } == 0 {
            break;
        }
        n = n.saturating_add(1);
    }
    // SAFETY: the n bytes before the NUL were just read as part of the caller's string, which
    // stays alive and unchanged during this call.
    let bytes = unsafe { core::slice::from_raw_parts(p.cast::<u8>(), n) };
    core::str::from_utf8(bytes).map_err(|_| Fail::api(status, "string argument is not UTF-8"))
}

/// The level named by the caller's `level_id` (minigrid id or alias).
///
/// # Safety
/// As [`c_str`].
unsafe fn level_arg(level_id: *const c_char) -> Result<Level, Fail> {
    // SAFETY: forwarded contract of this function.
    let id = unsafe { c_str(level_id, METARIM_MAX_LEVEL_ID, Status::BadLevel) }?;
    Ok(Level::from_id(id)?)
}

// ---------------------------------------------------------------------------------------------
// Initialisation

/// Build a device in the caller's memory `mem` (`mem_len` bytes, at least
/// `METARIM_DEVICE_BYTES`, aligned to `METARIM_DEVICE_ALIGN`) from the model blob at the start
/// of the flash region `blob_region` (`region_len` bytes; the blob is found in it with
/// `Blob::parse_region`, checked in full, CRC included). The blob's frozen groups are read in
/// place from the region from then on; its fast group is copied into the device.
///
/// `*out` is set to NULL when `out`, `mem`, `mem_len` or the alignment are wrong (nothing was
/// written to `mem`); otherwise to the device, even when loading the blob fails (as
/// `sqlite3_open` hands out its handle): then the call returns the error, every later call on
/// the device returns `METARIM_STATUS_NOT_READY`, and `metarim_last_error` gives the message
/// (e.g. "bad model blob: no model blob in its flash region (erased: 0xFF)").
///
/// # Safety
/// `out` is null or writable for a pointer. `mem` is null or writable for `mem_len` bytes, and
/// those bytes belong to the device until the caller stops using it (no other access, no
/// overlap with the blob region). `blob_region` is null or readable for `region_len` bytes,
/// which stay readable and unchanged while the device is used.
#[no_mangle]
pub unsafe extern "C" fn metarim_device_init(
    mem: *mut c_void,
    mem_len: usize,
    blob_region: *const u8,
    region_len: usize,
    out: *mut *mut Device,
) -> Status {
    if out.is_null() {
        return Status::NullPointer;
    }
    if !out.is_aligned() {
        return Status::Misaligned;
    }
    // SAFETY: out is non-null, aligned, and writable for a pointer (the caller's contract).
    unsafe { out.write(ptr::null_mut()) };
    if mem.is_null() {
        return Status::NullPointer;
    }
    if mem_len < size_of::<Device>() {
        return Status::MemoryTooSmall;
    }
    let dev = mem.cast::<Device>();
    if !dev.is_aligned() {
        return Status::Misaligned;
    }
    // SAFETY: dev is non-null, aligned for a Device, and the caller's mem_len >= size_of
    // bytes behind it are writable and ours (its contract); `init_in_place` writes every field.
    unsafe { init_in_place(dev) };
    // SAFETY: out checked above.
    unsafe { out.write(dev) };
    let call = |d: &mut Device| {
        // SAFETY: the region contract of this function, forwarded.
        unsafe { load(d, blob_region, region_len) }
    };
    // SAFETY: dev was fully initialised just above and the caller gives it to no one else
    // during this call.
    unsafe { with_device(dev, call) }
}

/// Write every field of a fresh, not-ready device at `dev`, each big part by its own
/// non-inlined function (no large temporary on the stack).
///
/// # Safety
/// `dev` is non-null, aligned, and writable for a `Device`.
unsafe fn init_in_place(dev: *mut Device) {
    // SAFETY: `addr_of_mut!` takes the field's address inside the caller's writable, aligned
    // `Device`-sized memory without creating a reference to uninitialised data; the field is
    // written once with a valid value (so for every block below).
    unsafe { write_env(addr_of_mut!((*dev).env)) };
    // SAFETY: as above.
    unsafe { write_actor(addr_of_mut!((*dev).actor)) };
    // SAFETY: as above.
    unsafe { write_adapter(addr_of_mut!((*dev).adapter)) };
    // SAFETY: as above.
    unsafe {
        addr_of_mut!((*dev).layout).write(None);
        addr_of_mut!((*dev).fast).write_bytes(0, 1);
        addr_of_mut!((*dev).frozen).write(Frozen::EMPTY);
        addr_of_mut!((*dev).rng).write(Pcg32::from_parts(0, 1));
        addr_of_mut!((*dev).episode).write(Episode::None);
        addr_of_mut!((*dev).owner).write(Owner::None);
        addr_of_mut!((*dev).ready).write(false);
        addr_of_mut!((*dev).last).write(Msg::None);
    }
}

/// # Safety
/// `p` is aligned and writable for an `Env`.
#[inline(never)]
unsafe fn write_env(p: *mut Env) {
    // SAFETY: the caller's contract; `Env::EMPTY` is a constant, copied into place.
    unsafe { p.write(Env::EMPTY) };
}

/// # Safety
/// `p` is aligned and writable for a `TinyActor`.
#[inline(never)]
unsafe fn write_actor(p: *mut TinyActor) {
    // SAFETY: the caller's contract.
    unsafe { p.write(TinyActor::default()) };
}

/// # Safety
/// `p` is aligned and writable for an `Adapter`.
#[inline(never)]
unsafe fn write_adapter(p: *mut Adapter) {
    // SAFETY: the caller's contract; `new` is a `const fn` of zeros.
    unsafe { p.write(Adapter::new()) };
}

/// Parse the blob in the caller's region and make the device ready.
///
/// # Safety
/// `region` is null or readable for `len` bytes that stay unchanged while the device is used.
#[inline(never)]
unsafe fn load(d: &mut Device, region: *const u8, len: usize) -> Result<(), Fail> {
    fail_if(
        region.is_null(),
        Status::NullPointer,
        "the blob region pointer is null",
    )?;
    fail_if(
        isize::try_from(len).is_err(),
        Status::BadArgument,
        "region_len is too large",
    )?;
    let dev_start = ptr::from_mut(d) as usize;
    let dev_end = dev_start.saturating_add(size_of::<Device>());
    let region_end = (region as usize).saturating_add(len);
    fail_if(
        (region as usize) < dev_end && dev_start < region_end,
        Status::BadArgument,
        "the blob region overlaps the device memory",
    )?;
    // SAFETY: region is non-null, len <= isize::MAX, and the caller guarantees the bytes are
    // readable and unchanged while the device is used; they do not overlap the device (checked).
    let bytes: &[u8] = unsafe { core::slice::from_raw_parts(region, len) };
    let (blob, _len) = Blob::parse_region(bytes, &TINY, Mode::MetaRim)?;
    let (slow, other) = blob.split_frozen(blob.frozen_f32()?)?;
    // Checked copy: a length mismatch is an error, not a panic.
    blob.fast_into(&mut d.fast[..])?;
    let initial_fast = blob.fast_f32()?;
    fail_if(
        initial_fast.len() != TINY_FAST,
        Status::BadBlob,
        "the blob's fast group has the wrong length",
    )?;
    d.layout = Some(tiny_layout()?);
    d.frozen = Frozen::new(initial_fast, slow, other);
    d.ready = true;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Write the message of the device's last failure into `buf` (`len` bytes, always
/// NUL-terminated when `len > 0`, cut to fit) and return its full length in bytes (without the
/// NUL), as `snprintf` does: a return value `>= len` means it was cut. Errors from the core give
/// core's `Display` text (what the Rust firmware prints after "firmware: error: "); a device with
/// no failure gives "". With `dev` NULL the message is "no device (null pointer)"; `buf` may be
/// NULL when `len` is 0 (to ask for the length).
///
/// # Safety
/// `dev` is null or a device from `metarim_device_init` (live, not used by another thread
/// during the call); `buf` is null or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn metarim_last_error(
    dev: *const Device,
    buf: *mut c_char,
    len: usize,
) -> usize {
    let msg = if dev.is_null() || !dev.is_aligned() {
        Msg::Api("no device (null pointer)")
    } else {
        // SAFETY: dev is non-null and aligned, and (the caller's contract) a device written in
        // full by `metarim_device_init`, not mutated during this call; `last` is plain data.
        unsafe { (*dev).last }
    };
    let out: &mut [u8] = if buf.is_null() || len == 0 || isize::try_from(len).is_err() {
        &mut []
    } else {
        // SAFETY: buf is non-null, len is non-zero and <= isize::MAX, and the caller
        // guarantees buf is writable for len bytes (any bit pattern is a valid u8).
        unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    };
    write_c_message(&msg, out)
}

/// Write `msg` into `out` NUL-terminated (cut to fit); its full length.
fn write_c_message(msg: &dyn fmt::Display, out: &mut [u8]) -> usize {
    let mut w = CBuf {
        buf: out,
        at: 0,
        total: 0,
    };
    // CBuf never fails; a Display impl that does only shortens the message.
    let _ = write!(w, "{msg}");
    let at = w.at;
    if let Some(nul) = w.buf.get_mut(at) {
        *nul = 0;
    }
    w.total
}

/// A `fmt::Write` into a C buffer that keeps one byte for the NUL and counts every byte.
struct CBuf<'a> {
    buf: &'a mut [u8],
    at: usize,
    total: usize,
}

impl fmt::Write for CBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if self.at.saturating_add(1) < self.buf.len() {
                if let Some(slot) = self.buf.get_mut(self.at) {
                    *slot = b;
                    self.at = self.at.saturating_add(1);
                }
            }
            self.total = self.total.saturating_add(1);
        }
        Ok(())
    }
}

/// A static, NUL-terminated description of a status code (any `int32_t`: unknown codes give
/// "unknown status").
#[no_mangle]
pub extern "C" fn metarim_status_str(status: i32) -> *const c_char {
    let s: &'static core::ffi::CStr = match status {
        0 => c"ok",
        1 => c"null pointer",
        2 => c"memory too small for the device (see METARIM_DEVICE_BYTES)",
        3 => c"misaligned pointer (device memory: see METARIM_DEVICE_ALIGN)",
        4 => c"bad model blob",
        5 => c"bad level",
        6 => c"bad mission",
        7 => c"metarim-core error",
        8 => c"bad argument",
        9 => c"buffer too small",
        10 => c"no episode",
        11 => c"device not ready (its initialisation failed)",
        _ => c"unknown status",
    };
    s.as_ptr()
}

// ---------------------------------------------------------------------------------------------
// Episodes on core's levels

/// Begin episode `index` of seed `seed` on level `level_id` (minigrid id or alias), exactly as
/// the Rust firmware: the episode's generator is `Pcg32::with_stream(split_mix64(seed),
/// index)`, its first `next_u64` seeds the level, the rest sample the actions of
/// `metarim_act`; the mission is tokenised and the policy's memory reset. Fails with
/// `METARIM_STATUS_BAD_LEVEL` for an unknown level or one whose grid exceeds this build's
/// 16x16.
///
/// # Safety
/// `dev` is null or a device from `metarim_device_init`, used by no one else during the call;
/// `level_id` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn metarim_episode_begin(
    dev: *mut Device,
    level_id: *const c_char,
    seed: u64,
    index: u32,
) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        *p.episode = Episode::None;
        *p.owner = Owner::None;
        // SAFETY: level_id's contract, forwarded.
        let level = unsafe { level_arg(level_id) }?;
        let mut session = Session {
            layout: p.layout,
            fast: p.fast,
            slow: p.slow,
            other: p.other,
            env: p.env,
            actor: p.actor,
        };
        let (rng, _) = session.begin_episode(&level, seed, u64::from(index))?;
        *p.rng = rng;
        *p.episode = Episode::Running;
        *p.owner = Owner::Episode;
        Ok(())
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

/// Copy the current observation of the episode's environment into `obs_out` (`len` bytes, at
/// least `METARIM_OBS_BYTES`; cell `j * 7 + i` is `[type, color, state]` of view column `i`,
/// row `j`). Works on a running or ended episode.
///
/// # Safety
/// `dev` as for `metarim_episode_begin`; `obs_out` is null or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn metarim_observe(dev: *mut Device, obs_out: *mut u8, len: usize) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        fail_if(
            *p.episode == Episode::None,
            Status::NoEpisode,
            "no episode begun",
        )?;
        fail_if(obs_out.is_null(), Status::NullPointer, "obs_out is null")?;
        fail_if(
            len < METARIM_OBS_BYTES,
            Status::BufferTooSmall,
            "obs_out holds fewer than METARIM_OBS_BYTES bytes",
        )?;
        let mut obs: Observation = [[0u8; 3]; VIEW_CELLS];
        p.env.observe(&mut obs);
        // SAFETY: obs_out is non-null and writable for len >= METARIM_OBS_BYTES bytes (the
        // caller's contract, length checked); any bytes are valid u8.
        let out = unsafe { core::slice::from_raw_parts_mut(obs_out, METARIM_OBS_BYTES) };
        for (dst, cell) in out.chunks_exact_mut(3).zip(obs.iter()) {
            dst.copy_from_slice(cell);
        }
        Ok(())
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

/// One policy step on the running episode's current observation, then the action: the most
/// likely one (`argmax`, first on ties) or one sampled with the episode's generator (what the
/// Rust firmware does by default). Writes the action index (0..6) to `*action_out`; the caller
/// then passes it to `metarim_env_step`.
///
/// # Safety
/// `dev` as for `metarim_episode_begin`; `action_out` is null or writable for a byte.
#[no_mangle]
pub unsafe extern "C" fn metarim_act(
    dev: *mut Device,
    argmax: bool,
    action_out: *mut u8,
) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        fail_if(
            *p.episode != Episode::Running || *p.owner != Owner::Episode,
            Status::NoEpisode,
            "no running episode to act in (metarim_episode_begin first)",
        )?;
        fail_if(
            action_out.is_null(),
            Status::NullPointer,
            "action_out is null",
        )?;
        let mut obs: Observation = [[0u8; 3]; VIEW_CELLS];
        p.env.observe(&mut obs);
        let bufs = GroupBufs {
            fast: &p.fast[..],
            slow: p.slow,
            other: p.other,
        };
        p.actor.step_with(p.layout, bufs, &obs)?;
        let (a, _) = if argmax {
            argmax_action(&p.actor.logits)
        } else {
            sample_action(&p.actor.logits, p.rng)
        };
        let a = u8::try_from(a).map_err(|_| Error::BadAction(a as i64))?;
        // SAFETY: action_out's contract.
        unsafe { put(action_out, a) }
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

/// Apply `action` (0..6) to the running episode's environment and write the outcome to
/// `*out`. When the episode ends (terminated or truncated), `metarim_act` and
/// `metarim_env_step` return `METARIM_STATUS_NO_EPISODE` until the next
/// `metarim_episode_begin`.
///
/// # Safety
/// `dev` as for `metarim_episode_begin`; `out` is null or writable for a
/// `metarim_step_result`.
#[no_mangle]
pub unsafe extern "C" fn metarim_env_step(
    dev: *mut Device,
    action: u8,
    out: *mut StepResult,
) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        fail_if(
            *p.episode != Episode::Running,
            Status::NoEpisode,
            "no running episode to step (metarim_episode_begin first)",
        )?;
        fail_if(out.is_null(), Status::NullPointer, "out is null")?;
        let action = Action::from_index(i64::from(action))
            .map_err(|e| Fail::core_as(Status::BadArgument, e))?;
        let o = p.env.step(action);
        if o.terminated || o.truncated {
            *p.episode = Episode::Ended;
        }
        let r = StepResult {
            reward: o.reward,
            steps: p.env.step_count,
            terminated: o.terminated,
            truncated: o.truncated,
            success: (o.terminated || o.truncated) && o.reward > 0.0,
        };
        // SAFETY: out's contract.
        unsafe { put(out, r) }
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

// ---------------------------------------------------------------------------------------------
// The policy on the caller's own observations

/// Start a policy episode on the caller's own observations: tokenise `mission` (BabyAI
/// grammar words; unknown words are allowed) and reset the policy's memory. Ends any episode
/// of `metarim_episode_begin` for acting (`metarim_act` needs a new one).
///
/// # Safety
/// `dev` as for `metarim_episode_begin`; `mission` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn metarim_policy_reset(dev: *mut Device, mission: *const c_char) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        *p.owner = Owner::None;
        // SAFETY: mission's contract, forwarded.
        let text = unsafe { c_str(mission, METARIM_MAX_MISSION, Status::BadMission) }?;
        let mut tokens = [0u16; MAX_TOKENS];
        tokenize(text, &mut tokens).map_err(|e| Fail::core_as(Status::BadMission, e))?;
        let bufs = GroupBufs {
            fast: &p.fast[..],
            slow: p.slow,
            other: p.other,
        };
        p.actor.start_with(p.layout, bufs, &tokens)?;
        *p.owner = Owner::Caller;
        Ok(())
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

/// One policy step on the caller's observation `obs` (`METARIM_OBS_BYTES` bytes, laid out as
/// `metarim_observe` writes them); writes the `METARIM_N_ACTIONS` logits to `logits_out`,
/// which holds `n >= METARIM_N_ACTIONS` floats. Needs `metarim_policy_reset` first.
///
/// # Safety
/// `dev` as for `metarim_episode_begin`; `obs` is null or readable for `METARIM_OBS_BYTES`
/// bytes; `logits_out` is null or writable for `n` floats.
#[no_mangle]
pub unsafe extern "C" fn metarim_policy_step(
    dev: *mut Device,
    obs: *const u8,
    logits_out: *mut f32,
    n: usize,
) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        fail_if(
            *p.owner != Owner::Caller,
            Status::NoEpisode,
            "no policy episode (metarim_policy_reset first)",
        )?;
        fail_if(
            obs.is_null() || logits_out.is_null(),
            Status::NullPointer,
            "obs or logits_out is null",
        )?;
        fail_if(
            !logits_out.is_aligned(),
            Status::Misaligned,
            "logits_out is misaligned",
        )?;
        fail_if(
            n < METARIM_N_ACTIONS,
            Status::BufferTooSmall,
            "logits_out holds fewer than METARIM_N_ACTIONS floats",
        )?;
        // SAFETY: obs is non-null and (the caller's contract) readable for
        // METARIM_OBS_BYTES bytes, unchanged during the call.
        let src = unsafe { core::slice::from_raw_parts(obs, METARIM_OBS_BYTES) };
        let mut o: Observation = [[0u8; 3]; VIEW_CELLS];
        for (cell, c) in o.iter_mut().zip(src.chunks_exact(3)) {
            cell.copy_from_slice(c);
        }
        let bufs = GroupBufs {
            fast: &p.fast[..],
            slow: p.slow,
            other: p.other,
        };
        p.actor.step_with(p.layout, bufs, &o)?;
        // SAFETY: logits_out is non-null, f32-aligned, and writable for n >=
        // METARIM_N_ACTIONS floats (the caller's contract, length checked).
        let out = unsafe { core::slice::from_raw_parts_mut(logits_out, METARIM_N_ACTIONS) };
        out.copy_from_slice(&p.actor.logits);
        Ok(())
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

// ---------------------------------------------------------------------------------------------
// Adaptation

/// Fast-only adaptation: `episodes` episodes (indices `0..episodes`) of `level_id` on seed
/// `seed` with core's `play_episodes`, `AdaptConfig::default()` (its guard included) and an
/// adapter of `METARIM_ADAPT_WINDOW` steps, sampling actions, as the Rust firmware's
/// `adapt()` (which passes its evaluation seed + 1). The fast group in the device is updated in
/// place (or restored to the blob's by the guard); the guard restores the blob's fast group,
/// and each call starts from an empty adapter. Ends any episode. `out` may be NULL.
///
/// # Safety
/// `dev` as for `metarim_episode_begin`; `level_id` is null or a NUL-terminated string; `out`
/// is null or writable for a `metarim_adapt_stats`.
#[no_mangle]
pub unsafe extern "C" fn metarim_adapt(
    dev: *mut Device,
    level_id: *const c_char,
    seed: u64,
    episodes: u32,
    out: *mut AdaptStats,
) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        *p.episode = Episode::None;
        *p.owner = Owner::None;
        // SAFETY: level_id's contract, forwarded.
        let level = unsafe { level_arg(level_id) }?;
        fail_if(
            !out.is_null() && !out.is_aligned(),
            Status::Misaligned,
            "out is misaligned",
        )?;
        let stats = adapt(p, &level, seed, episodes)?;
        if !out.is_null() {
            // SAFETY: out's contract (null handled above).
            unsafe { put(out, AdaptStats::from(&stats)) }?;
        }
        Ok(())
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

#[inline(never)]
fn adapt(p: Parts<'_>, level: &Level, seed: u64, episodes: u32) -> Result<EpisodeStats, Fail> {
    // A fresh adapter, without a large temporary: `clear` drops the window and the
    // accumulated gradient (zeroed again when the next window starts), the totals restart.
    p.adapter.clear();
    p.adapter.totals = LearnTotals::ZERO;
    let mut s = Session {
        layout: p.layout,
        fast: p.fast,
        slow: p.slow,
        other: p.other,
        env: p.env,
        actor: p.actor,
    };
    Ok(adapt_session(
        &mut s,
        p.adapter,
        p.initial_fast,
        level,
        seed,
        episodes,
    )?)
}

/// `episodes` episodes of `level` from `seed`, learning the fast group of `s` as they are played
/// (the firmware's settings: `AdaptConfig::default()`, sampled actions); `initial_fast` is what
/// the guard restores. The C API's `metarim_adapt` and the tests' Rust reference both run this.
fn adapt_session(
    s: &mut Session<'_>,
    adapter: &mut TinyAdapter<16>,
    initial_fast: &[f32],
    level: &Level,
    seed: u64,
    episodes: u32,
) -> Result<EpisodeStats, metarim_core::Error> {
    let cfg = AdaptConfig::default();
    let adaptation = Adaptation {
        adapter,
        cfg: &cfg,
        initial_fast,
    };
    play_episodes(
        s,
        level,
        seed,
        0,
        u64::from(episodes),
        false,
        Some(adaptation),
    )
}

/// Put the blob's fast group back (undo adaptation). Ends any episode.
///
/// # Safety
/// `dev` as for `metarim_episode_begin`.
#[no_mangle]
pub unsafe extern "C" fn metarim_reset_fast(dev: *mut Device) -> Status {
    let call = |d: &mut Device| -> Result<(), Fail> {
        let p = d.parts()?;
        *p.episode = Episode::None;
        *p.owner = Owner::None;
        fail_if(
            p.initial_fast.len() != TINY_FAST,
            Status::NotReady,
            "no blob fast group",
        )?;
        p.fast.copy_from_slice(p.initial_fast);
        Ok(())
    };
    // SAFETY: the contract of this function, forwarded.
    unsafe { with_device(dev, call) }
}

#[cfg(not(any(test, fuzzing)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Unreachable from any input (every entry point returns a status); stop here if it ever is.
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests;
