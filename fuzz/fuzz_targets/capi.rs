//! The C API of the device side (`metarim-capi`, firmware/capi): what a C firmware can hand it.
//! Built in its own workspace (fuzz/capi/), since the library uses core's `small-grid` feature
//! and the other targets must not.
//!
//! Input: byte 0 picks the blob region (a valid Tiny meta-rim blob as `metarim export` writes
//! it, that blob with bytes changed, cut short, shifted off its alignment, any bytes, or null)
//! and byte 1 the device memory (exact, short, misaligned, null, or more than needed); then a
//! list of calls, one byte each plus their arguments: begin an episode (known, unknown,
//! oversized, over-long or non-UTF-8 level ids, null), observe, act, step the environment (any
//! action byte), start and step the policy on the caller's observations (any mission bytes, any
//! observation bytes, logits buffers short, misaligned or null), adapt (a few episodes), reset
//! the fast group, read the last error (any buffer length) and describe any status code.
//!
//! Checks, for any input: nothing panics (the library's panic handler would hang a device);
//! every status is one of the header's; `metarim_device_init` succeeds on a valid blob and
//! sound memory, and a device whose blob failed answers `NOT_READY` to every call; each call's
//! "no episode" answer is exactly what the documented episode rules say; actions are below 7,
//! a step's reward is in [0, 1] and positive exactly on success, logits of the valid blob are
//! finite; error messages are NUL-terminated within the buffer and `metarim_last_error`
//! returns their full length; and the whole input run again on a second device, built in
//! memory full of other bytes, gives the same statuses and outputs bit for bit (a device
//! depends on nothing but its calls).
#![no_main]

use std::ffi::{c_char, CStr};
use std::ptr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metarim_capi::{
    metarim_act, metarim_adapt, metarim_device_init, metarim_env_step, metarim_episode_begin,
    metarim_last_error, metarim_observe, metarim_policy_reset, metarim_policy_step,
    metarim_reset_fast, metarim_status_str, AdaptStats, Device, Status, StepResult,
    METARIM_DEVICE_ALIGN, METARIM_DEVICE_BYTES, METARIM_N_ACTIONS, METARIM_OBS_BYTES,
};
use metarim_core::blob::{blob_len, write as write_blob, FrozenDtype};
use metarim_core::nn::dims::TINY;
use metarim_core::nn::params::{Group, GroupBufsMut, Layout, Mode};
use metarim_core::nn::policy::init_params;

#[path = "common/choices.rs"]
mod choices;
use choices::Choices;

/// Most calls one input makes.
const MAX_CALLS: usize = 24;

/// A valid Tiny meta-rim blob followed by erased flash (0xFF), in 4-byte words; its length.
fn valid_region() -> &'static (Vec<u32>, usize) {
    static REGION: OnceLock<(Vec<u32>, usize)> = OnceLock::new();
    REGION.get_or_init(|| {
        let layout = Layout::new(&TINY, Mode::MetaRim).expect("Tiny layout");
        let mut g =
            [Group::Fast, Group::Slow, Group::Other].map(|grp| vec![0.0f32; layout.group_len(grp)]);
        let [f, s, o] = &mut g;
        let bufs = GroupBufsMut {
            fast: f,
            slow: s,
            other: o,
        };
        init_params(&layout, &Default::default(), 7, bufs).expect("init");
        let n = blob_len(&layout, FrozenDtype::F32);
        let mut words = vec![u32::MAX; n.div_ceil(4) + 64];
        let bytes = words_as_bytes_mut(&mut words);
        let written = write_blob(
            &layout,
            FrozenDtype::F32,
            &g[0],
            &g[1],
            &g[2],
            &mut bytes[..n],
        );
        assert_eq!(written.expect("blob"), n);
        (words, n)
    })
}

fn words_as_bytes_mut(w: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 has no padding and every byte pattern is a valid u8; the slice covers exactly
    // the words' bytes for the borrow's life.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), w.len() * 4) }
}

/// The blob region the input asks for: words (4-aligned storage), the byte offset of the
/// region in them, and its length; `None` for a null region.
fn region(c: &mut Choices) -> (Option<Vec<u32>>, usize, usize, bool) {
    let (valid, n) = valid_region();
    let mut words = valid.clone();
    let total = words.len() * 4;
    match c.byte() % 6 {
        0 => (Some(words), 0, total, true),
        1 => {
            let bytes = words_as_bytes_mut(&mut words);
            for _ in 0..1 + c.byte() % 4 {
                let at = c.u32() as usize % n;
                bytes[at] ^= c.byte() | 1;
            }
            (Some(words), 0, total, false)
        }
        2 => (Some(words), 0, c.u32() as usize % (n + 1), false),
        3 => {
            // The blob moved by 1-3 bytes: misaligned for its f32 groups.
            let shift = 1 + usize::from(c.byte() % 3);
            let mut moved = vec![u32::MAX; words.len() + 1];
            let src = words_as_bytes_mut(&mut words).to_vec();
            words_as_bytes_mut(&mut moved)[shift..shift + total].copy_from_slice(&src);
            (Some(moved), shift, total, false)
        }
        4 => {
            let len = usize::from(c.byte()) * 8;
            let mut any = vec![0u32; len.div_ceil(4)];
            for b in &mut words_as_bytes_mut(&mut any)[..len] {
                *b = c.byte();
            }
            (Some(any), 0, len, false)
        }
        _ => (None, 0, 0, false),
    }
}

/// The device memory the input asks for: (offset in bytes into an 8-aligned buffer, length
/// passed, whether the memory is sound), `None` for null.
fn memory_choice(c: &mut Choices) -> Option<(usize, usize, bool)> {
    match c.byte() % 5 {
        0 => Some((0, METARIM_DEVICE_BYTES, true)),
        1 => Some((0, METARIM_DEVICE_BYTES - 1 - usize::from(c.byte()), false)),
        2 => Some((
            1 + usize::from(c.byte()) % (METARIM_DEVICE_ALIGN - 1),
            METARIM_DEVICE_BYTES,
            false,
        )),
        3 => None,
        _ => Some((0, METARIM_DEVICE_BYTES + 64, true)),
    }
}

/// One call's record: what must come out the same on a second device.
#[derive(Debug, PartialEq)]
enum Out {
    Status(i32),
    Bytes(Vec<u8>),
    Bits(Vec<u32>),
}

/// The episode rules the header documents, to check each call's `NO_EPISODE` against.
#[derive(Clone, Copy, PartialEq)]
enum Episode {
    None,
    Running,
    Ended,
}

/// Level ids a caller might pass: known single-room ones, a grid too large for the build,
/// unknown, empty, non-UTF-8, over-long, null.
fn level_id(c: &mut Choices, store: &mut Vec<u8>) -> *const c_char {
    store.clear();
    match c.byte() % 9 {
        0 => store.extend_from_slice(b"BabyAI-GoToObj-v0"),
        1 => store.extend_from_slice(b"BabyAI-GoToLocal-v0"),
        2 => store.extend_from_slice(b"MiniGrid-Empty-5x5-v0"),
        3 => store.extend_from_slice(b"BabyAI-GoTo-v0"),
        4 => store.extend_from_slice(b"BabyAI-Nope-v0"),
        5 => {}
        6 => store.extend_from_slice(&[0xFF, 0xFE, b'x']),
        7 => store.resize(200, b'a'),
        _ => return ptr::null(),
    }
    store.push(0);
    store.as_ptr().cast()
}

/// A mission a caller might pass: valid, unknown words, any bytes (NUL-free), too many words,
/// over-long, null.
fn mission(c: &mut Choices, store: &mut Vec<u8>) -> *const c_char {
    store.clear();
    match c.byte() % 6 {
        0 => store.extend_from_slice(b"go to the red ball"),
        1 => store.extend_from_slice(b"fetch a purple unicorn"),
        2 => {
            for _ in 0..c.byte() {
                store.push(c.byte().max(1));
            }
        }
        3 => {
            for _ in 0..40 {
                store.extend_from_slice(b"go ");
            }
        }
        4 => store.resize(600, b'a'),
        _ => return ptr::null(),
    }
    store.push(0);
    store.as_ptr().cast()
}

fn known(st: Status) -> i32 {
    let code = st as i32;
    assert!((0..=11).contains(&code), "unknown status {code}");
    code
}

/// `metarim_last_error` into a buffer of the input's length: NUL-terminated within it, the
/// returned length the full message's.
fn last_error(dev: *const Device, len: usize) -> Out {
    let mut buf = vec![0x55u8; len.max(1)];
    let p = if len == 0 {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast::<c_char>()
    };
    // SAFETY: dev is null or a device of this run; buf is writable for len bytes (or null, 0).
    let full = unsafe { metarim_last_error(dev, p, len) };
    let mut whole = vec![0u8; full + 1];
    // SAFETY: as above, with a buffer that holds the whole message.
    let again = unsafe { metarim_last_error(dev, whole.as_mut_ptr().cast(), whole.len()) };
    assert_eq!(again, full);
    assert_eq!(whole[full], 0, "message not NUL-terminated at its length");
    if len > 0 {
        let nul = buf
            .iter()
            .position(|b| *b == 0)
            .expect("cut message not NUL-terminated");
        assert_eq!(nul, full.min(len - 1));
        assert_eq!(buf[..nul], whole[..nul]);
    }
    Out::Bytes(whole)
}

/// A device under test, what the documented episode rules say of it, and the record of its
/// calls.
struct Run<'a> {
    c: Choices<'a>,
    dev: *mut Device,
    /// The blob loaded (every call but the error ones answers `NOT_READY` otherwise).
    ready: bool,
    /// The blob is the valid one, unchanged (its logits are finite).
    valid: bool,
    episode: Episode,
    /// The running episode is `metarim_episode_begin`'s (`metarim_act` may act in it).
    own_episode: bool,
    /// `metarim_policy_reset` started a policy episode on the caller's observations.
    caller: bool,
    text: Vec<u8>,
    log: Vec<Out>,
}

impl Run<'_> {
    /// Clear every episode, as `metarim_adapt` and `metarim_reset_fast` do.
    fn end_all(&mut self) {
        self.episode = Episode::None;
        self.own_episode = false;
        self.caller = false;
    }

    fn begin(&mut self) -> (Status, bool) {
        let id = level_id(&mut self.c, &mut self.text);
        let (seed, index) = (u64::from(self.c.u32()), self.c.u32() % 8);
        // SAFETY: dev is this run's device; id is null or NUL-terminated.
        let st = unsafe { metarim_episode_begin(self.dev, id, seed, index) };
        self.end_all();
        if st == Status::Ok {
            (self.episode, self.own_episode) = (Episode::Running, true);
        }
        (st, true)
    }

    fn observe(&mut self) -> (Status, bool) {
        let len = [METARIM_OBS_BYTES, METARIM_OBS_BYTES - 1, 0][usize::from(self.c.byte() % 3)];
        let mut obs = vec![0u8; METARIM_OBS_BYTES];
        let p = if len == 0 {
            ptr::null_mut()
        } else {
            obs.as_mut_ptr()
        };
        // SAFETY: p is null or writable for len bytes.
        let st = unsafe { metarim_observe(self.dev, p, len) };
        self.log.push(Out::Bytes(obs));
        (st, self.episode != Episode::None)
    }

    fn act(&mut self) -> (Status, bool) {
        let mut a = 0xEEu8;
        let argmax = self.c.bit();
        let p = if self.c.byte().is_multiple_of(8) {
            ptr::null_mut()
        } else {
            &mut a as *mut u8
        };
        // SAFETY: p is null or a local byte.
        let st = unsafe { metarim_act(self.dev, argmax, p) };
        if st == Status::Ok {
            assert!(usize::from(a) < METARIM_N_ACTIONS, "action {a}");
        }
        self.log.push(Out::Bytes(vec![a]));
        (st, self.episode == Episode::Running && self.own_episode)
    }

    fn step(&mut self) -> (Status, bool) {
        let action = if self.c.byte().is_multiple_of(4) {
            self.c.byte()
        } else {
            self.c.byte() % 7
        };
        let mut r = StepResult::default();
        let p = if self.c.byte().is_multiple_of(8) {
            ptr::null_mut()
        } else {
            &mut r as *mut StepResult
        };
        // SAFETY: p is null or a local result.
        let st = unsafe { metarim_env_step(self.dev, action, p) };
        let running = self.episode == Episode::Running;
        if st == Status::Ok {
            assert!((0.0..=1.0).contains(&r.reward), "reward {}", r.reward);
            assert_eq!(r.success, r.reward > 0.0, "{r:?}");
            if r.terminated || r.truncated {
                self.episode = Episode::Ended;
            }
        } else if running && action < 7 && !p.is_null() {
            panic!("a valid step refused: {st:?}");
        }
        let flags = [r.terminated, r.truncated, r.success].map(u32::from);
        self.log.push(Out::Bits(
            [[r.reward.to_bits(), r.steps].as_slice(), &flags].concat(),
        ));
        (st, running)
    }

    fn policy_reset(&mut self) -> (Status, bool) {
        let m = mission(&mut self.c, &mut self.text);
        // SAFETY: m is null or NUL-terminated.
        let st = unsafe { metarim_policy_reset(self.dev, m) };
        self.own_episode = false;
        self.caller = st == Status::Ok;
        (st, true)
    }

    fn policy_step(&mut self) -> (Status, bool) {
        let mut obs = [0u8; METARIM_OBS_BYTES];
        for b in &mut obs {
            *b = self.c.byte();
        }
        let mut logits = [f32::NAN; METARIM_N_ACTIONS + 2];
        let kind = self.c.byte() % 6;
        let (p, n) = match kind {
            0 => (ptr::null_mut(), METARIM_N_ACTIONS),
            // One byte in: misaligned for f32.
            1 => (
                logits.as_mut_ptr().cast::<u8>().wrapping_add(1).cast(),
                METARIM_N_ACTIONS,
            ),
            2 => (logits.as_mut_ptr(), METARIM_N_ACTIONS - 1),
            3 => (logits.as_mut_ptr(), METARIM_N_ACTIONS + 1),
            _ => (logits.as_mut_ptr(), METARIM_N_ACTIONS),
        };
        let obs_p = if self.c.byte().is_multiple_of(16) {
            ptr::null()
        } else {
            obs.as_ptr()
        };
        // SAFETY: obs_p is null or 147 readable bytes; p is null, or (kind 1) misaligned and
        // never written (refused), or writable for n floats (n <= the array's 9).
        let st = unsafe { metarim_policy_step(self.dev, obs_p, p, n) };
        if st == Status::Ok {
            for l in &logits[..METARIM_N_ACTIONS] {
                assert!(!self.valid || l.is_finite(), "logit {l}");
            }
        } else if self.ready && self.caller && kind >= 3 && !obs_p.is_null() {
            panic!("a valid policy step refused: {st:?}");
        }
        self.log
            .push(Out::Bits(logits.iter().map(|l| l.to_bits()).collect()));
        (st, self.caller)
    }

    fn adapt(&mut self) -> (Status, bool) {
        let id = level_id(&mut self.c, &mut self.text);
        let (seed, episodes) = (u64::from(self.c.u32()), u32::from(self.c.byte() % 3));
        let mut s = AdaptStats::default();
        let p = if self.c.bit() {
            ptr::null_mut()
        } else {
            &mut s as *mut AdaptStats
        };
        // SAFETY: id is null or NUL-terminated; p is null or a local.
        let st = unsafe { metarim_adapt(self.dev, id, seed, episodes, p) };
        if st == Status::Ok {
            assert!(s.episodes <= episodes && s.successes <= s.episodes, "{s:?}");
        }
        self.end_all();
        self.log.push(Out::Bytes(format!("{s:?}").into_bytes()));
        (st, true)
    }

    fn reset_fast(&mut self) -> (Status, bool) {
        // SAFETY: dev is this run's device.
        let st = unsafe { metarim_reset_fast(self.dev) };
        self.end_all();
        (st, true)
    }

    /// The next call the input asks for; false once the input is used up.
    fn call(&mut self) -> bool {
        if self.c.0.is_empty() {
            return false;
        }
        let op = self.c.byte() % 10;
        // The status, and whether the call's episode rule holds (NO_EPISODE exactly when not).
        let (st, rule_holds) = match op {
            0 => self.begin(),
            1 => self.observe(),
            2 => self.act(),
            3 => self.step(),
            4 => self.policy_reset(),
            5 => self.policy_step(),
            6 => self.adapt(),
            7 => self.reset_fast(),
            8 => {
                let len = [0, 1, 2, 16, 300][usize::from(self.c.byte() % 5)];
                self.log.push(last_error(self.dev, len));
                return true;
            }
            _ => {
                let code = self.c.u32() as i32;
                // SAFETY: the returned pointer is a static NUL-terminated string.
                let s = unsafe { CStr::from_ptr(metarim_status_str(code)) };
                self.log.push(Out::Bytes(s.to_bytes().to_vec()));
                return true;
            }
        };
        self.log.push(Out::Status(known(st)));
        if !self.ready {
            assert_eq!(
                st,
                Status::NotReady,
                "call {op} on a device that is not ready"
            );
        } else {
            assert_eq!(st == Status::NoEpisode, !rule_holds, "call {op}: {st:?}");
        }
        true
    }
}

/// Run the input on a device built in memory filled with `fill`; the record of every call.
fn run(data: &[u8], fill: u8) -> Vec<Out> {
    let mut c = Choices(data);
    let (region_words, shift, region_len, valid) = region(&mut c);
    let region_ptr = region_words
        .as_ref()
        .map_or(ptr::null(), |w| w.as_ptr().cast::<u8>().wrapping_add(shift));
    let mem_choice = memory_choice(&mut c);
    let mut mem = vec![u64::from_le_bytes([fill; 8]); METARIM_DEVICE_BYTES / 8 + 10];
    let (mem_ptr, mem_len, mem_sound) = match mem_choice {
        Some((off, len, sound)) => (mem.as_mut_ptr().cast::<u8>().wrapping_add(off), len, sound),
        None => (ptr::null_mut(), METARIM_DEVICE_BYTES, false),
    };
    let mut dev: *mut Device = ptr::null_mut();
    // SAFETY: mem_ptr is null or inside `mem` with at least mem_len bytes after it (the buffer
    // has 80 spare bytes beyond the device size, the offset is below 8 and mem_len at most the
    // size + 64); region_ptr is null or inside its words with region_len readable bytes.
    let st =
        unsafe { metarim_device_init(mem_ptr.cast(), mem_len, region_ptr, region_len, &mut dev) };
    let mut log = vec![Out::Status(known(st))];
    if !mem_sound {
        assert_ne!(st, Status::Ok);
        assert!(dev.is_null(), "a device handed out in unsound memory");
        log.push(last_error(dev, 64));
        return log;
    }
    assert!(!dev.is_null(), "no device handle from sound memory");
    if valid {
        assert_eq!(
            st,
            Status::Ok,
            "a valid blob refused: {:?}",
            last_error(dev, 256)
        );
    }
    let mut r = Run {
        c,
        dev,
        ready: st == Status::Ok,
        valid,
        episode: Episode::None,
        own_episode: false,
        caller: false,
        text: Vec::new(),
        log,
    };
    for _ in 0..MAX_CALLS {
        if !r.call() {
            break;
        }
    }
    r.log.push(last_error(dev, 300));
    r.log
}

fuzz_target!(|data: &[u8]| {
    let first = run(data, 0x00);
    let second = run(data, 0xA5);
    assert_eq!(
        first, second,
        "the same calls gave other results on a second device"
    );
});
