//! Host tests of the C API: memory and pointer checks, blob regions (erased, zeroed, corrupt,
//! foreign), the episode scheme against a direct core implementation of the Rust firmware's
//! (`firmware/app/src/episodes.rs`, `lib.rs` `adapt()`), and the header's numbers.

use super::*;
use core::ffi::CStr;
use metarim_core::blob::{blob_len, write as write_blob, FrozenDtype};
use metarim_core::nn::params::{Group, GroupBufsMut};
use metarim_core::nn::policy::init_params;
use metarim_core::rng::split_mix64;

const LEVEL: &CStr = c"BabyAI-GoToObj-v0";

/// A flash region holding a Tiny blob of `mode` and `dtype` (initialised from `seed`), erased
/// (0xFF) after it, 4-byte aligned; and the blob's length.
fn region(seed: u64, mode: Mode, dtype: FrozenDtype) -> (Vec<u32>, usize) {
    let layout = Layout::new(&TINY, mode).unwrap();
    let mut g =
        [Group::Fast, Group::Slow, Group::Other].map(|grp| vec![0.0f32; layout.group_len(grp)]);
    let [f, s, o] = &mut g;
    init_params(
        &layout,
        &Default::default(),
        seed,
        GroupBufsMut {
            fast: f,
            slow: s,
            other: o,
        },
    )
    .unwrap();
    let n = blob_len(&layout, dtype);
    let mut words = vec![0xFFFF_FFFFu32; n.div_ceil(4) + 4096];
    let bytes: &mut [u8] = bytemuck_bytes_mut(&mut words);
    assert_eq!(
        write_blob(&layout, dtype, &g[0], &g[1], &g[2], &mut bytes[..n]).unwrap(),
        n
    );
    (words, n)
}

fn bytemuck_bytes_mut(w: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 has no padding and every byte pattern is a valid u8; the length is exact and
    // the borrow of `w` covers the returned slice's life.
    unsafe { core::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), w.len() * 4) }
}

fn bytes(w: &[u32]) -> &[u8] {
    // SAFETY: as `bytemuck_bytes_mut`, shared.
    unsafe { core::slice::from_raw_parts(w.as_ptr().cast::<u8>(), w.len() * 4) }
}

/// Device memory: 8-aligned, room for one device plus 16 bytes.
fn memory() -> Vec<u64> {
    vec![0u64; METARIM_DEVICE_BYTES / 8 + 2]
}

fn init(mem: &mut [u64], region: &[u8]) -> (Status, *mut Device) {
    let mut dev: *mut Device = ptr::null_mut();
    // SAFETY: mem and region are live slices of the lengths given; dev is a local.
    let st = unsafe {
        metarim_device_init(
            mem.as_mut_ptr().cast(),
            mem.len() * 8,
            region.as_ptr(),
            region.len(),
            &mut dev,
        )
    };
    (st, dev)
}

/// The device's last error message starts with `prefix`.
fn assert_message_starts(dev: *const Device, prefix: &str) {
    let m = message(dev);
    assert!(m.starts_with(prefix), "{m}");
}

fn message(dev: *const Device) -> String {
    let mut buf = [0 as c_char; 256];
    // SAFETY: dev is null or a live device; buf is a local of the length given.
    let n = unsafe { metarim_last_error(dev, buf.as_mut_ptr(), buf.len()) };
    // SAFETY: metarim_last_error NUL-terminates within buf.
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(n, s.len(), "full length returned for a message that fits");
    s
}

#[test]
fn header_numbers_are_the_real_ones() {
    assert_eq!(size_of::<Device>(), METARIM_DEVICE_BYTES);
    assert_eq!(align_of::<Device>(), METARIM_DEVICE_ALIGN);
    assert_eq!(METARIM_OBS_BYTES, 3 * VIEW_CELLS);
    assert_eq!(METARIM_N_ACTIONS, TINY.n_actions);
    // The generated header carries the same numbers (both pointer widths).
    let h = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/metarim.h"))
        .expect("include/metarim.h (written by build.rs)");
    let defines = |name: &str| -> Vec<usize> {
        h.lines()
            .filter_map(|l| l.strip_prefix("#define "))
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    let bytes = defines("METARIM_DEVICE_BYTES ");
    assert_eq!(
        bytes.len(),
        2,
        "one METARIM_DEVICE_BYTES per pointer width: {bytes:?}"
    );
    assert!(bytes.contains(&size_of::<Device>()), "{bytes:?}");
    assert_eq!(defines("METARIM_DEVICE_ALIGN "), [align_of::<Device>()]);
    assert_eq!(defines("METARIM_OBS_BYTES "), [METARIM_OBS_BYTES]);
    assert_eq!(defines("METARIM_N_ACTIONS "), [METARIM_N_ACTIONS]);
    assert!(h.contains("METARIM_STATUS_BAD_BLOB = 4"));
    // The 64-bit value sits under METARIM_PTR64 (this test runs on a 64-bit host).
    let at64 = h.find("#if defined(METARIM_PTR64)").expect("PTR64 block");
    let after = &h[at64..];
    let line = after
        .lines()
        .find(|l| l.starts_with("#define METARIM_DEVICE_BYTES"))
        .unwrap();
    assert!(
        line.ends_with(&format!(" {}", size_of::<Device>())),
        "{line}"
    );
}

#[test]
fn memory_and_pointer_checks() {
    let (words, _) = region(3, Mode::MetaRim, FrozenDtype::F32);
    let r = bytes(&words);
    let mut mem = memory();
    let mut dev: *mut Device = ptr::dangling_mut::<Device>(); // overwritten with NULL on failure
    let call = |mem: *mut c_void, len: usize, reg: *const u8, out: *mut *mut Device| {
        // SAFETY: every non-null pointer is a live buffer of at least the length given.
        unsafe { metarim_device_init(mem, len, reg, r.len(), out) }
    };
    assert_eq!(
        call(
            mem.as_mut_ptr().cast(),
            mem.len() * 8,
            r.as_ptr(),
            ptr::null_mut()
        ),
        Status::NullPointer
    );
    assert_eq!(
        call(ptr::null_mut(), mem.len() * 8, r.as_ptr(), &mut dev),
        Status::NullPointer
    );
    assert!(dev.is_null());
    // One byte short.
    dev = ptr::dangling_mut::<Device>();
    assert_eq!(
        call(
            mem.as_mut_ptr().cast(),
            METARIM_DEVICE_BYTES - 1,
            r.as_ptr(),
            &mut dev
        ),
        Status::MemoryTooSmall
    );
    assert!(dev.is_null());
    assert_eq!(
        call(mem.as_mut_ptr().cast(), 0, r.as_ptr(), &mut dev),
        Status::MemoryTooSmall
    );
    // Misaligned by 4 (enough bytes behind it).
    let base = mem.as_mut_ptr().cast::<u8>();
    // SAFETY: base + 4 stays inside mem, which has 16 bytes beyond one device.
    let odd = unsafe { base.add(4) };
    assert_eq!(
        call(odd.cast(), METARIM_DEVICE_BYTES, r.as_ptr(), &mut dev),
        Status::Misaligned
    );
    assert!(dev.is_null());
    // A misaligned out-pointer.
    let mut slots = [0u64; 3];
    // SAFETY: stays inside `slots`.
    let bad_out = unsafe { slots.as_mut_ptr().cast::<u8>().add(1) }.cast::<*mut Device>();
    assert_eq!(
        call(base.cast(), METARIM_DEVICE_BYTES, r.as_ptr(), bad_out),
        Status::Misaligned
    );
    // A null region: the device exists, not ready, with a message.
    assert_eq!(
        call(base.cast(), METARIM_DEVICE_BYTES, ptr::null(), &mut dev),
        Status::NullPointer
    );
    assert!(!dev.is_null());
    assert_eq!(message(dev), "the blob region pointer is null");
    // Exactly METARIM_DEVICE_BYTES, aligned: fine.
    let (st, dev) = init(&mut mem, r);
    assert_eq!(st, Status::Ok, "{}", message(dev));
    assert_eq!(message(dev), "");
    assert_eq!(message(ptr::null()), "no device (null pointer)");
    // Calls on a null device.
    let mut a = 0u8;
    // SAFETY: null device; a is a local.
    unsafe {
        assert_eq!(
            metarim_act(ptr::null_mut(), false, &mut a),
            Status::NullPointer
        );
        assert_eq!(
            metarim_episode_begin(ptr::null_mut(), LEVEL.as_ptr(), 1, 0),
            Status::NullPointer
        );
        assert_eq!(metarim_reset_fast(ptr::null_mut()), Status::NullPointer);
    }
}

#[test]
fn the_region_may_not_overlap_the_device() {
    let (words, n) = region(3, Mode::MetaRim, FrozenDtype::F32);
    let mut mem = vec![0u64; (METARIM_DEVICE_BYTES + n) / 8 + 8];
    let base = mem.as_mut_ptr().cast::<u8>();
    // SAFETY: the blob bytes go after the device's bytes, inside `mem`.
    unsafe { ptr::copy_nonoverlapping(bytes(&words).as_ptr(), base.add(METARIM_DEVICE_BYTES), n) };
    let mut dev = ptr::null_mut();
    // The region starts inside the device's bytes: refused.
    // SAFETY: every pointer lies inside `mem` with the lengths given.
    let st =
        unsafe { metarim_device_init(base.cast(), METARIM_DEVICE_BYTES, base.add(8), n, &mut dev) };
    assert_eq!(st, Status::BadArgument);
    assert!(message(dev).contains("overlaps"));
    // Right after it: fine.
    // SAFETY: as above.
    let st = unsafe {
        metarim_device_init(
            base.cast(),
            METARIM_DEVICE_BYTES,
            base.add(METARIM_DEVICE_BYTES),
            n,
            &mut dev,
        )
    };
    assert_eq!(st, Status::Ok, "{}", message(dev));
}

#[test]
fn bad_blob_regions_are_named() {
    let mut mem = memory();
    let check = |mem: &mut Vec<u64>, r: &[u8], want: Status, text: &str| {
        let (st, dev) = init(mem, r);
        assert_eq!(st, want, "{}", message(dev));
        let m = message(dev);
        assert!(m.contains(text), "{m:?} should contain {text:?}");
        // A device that failed to load refuses everything, keeping its message.
        let mut a = 0u8;
        // SAFETY: dev is the live device in `mem`; a is a local.
        unsafe {
            assert_eq!(
                metarim_episode_begin(dev, LEVEL.as_ptr(), 1, 0),
                Status::NotReady
            );
            assert_eq!(metarim_act(dev, true, &mut a), Status::NotReady);
            assert_eq!(
                metarim_adapt(dev, LEVEL.as_ptr(), 2, 1, ptr::null_mut()),
                Status::NotReady
            );
        }
        assert_eq!(message(dev), m);
    };
    let erased = vec![0xFFu8; 4096];
    check(
        &mut mem,
        &erased,
        Status::BadBlob,
        "bad model blob: no model blob in its flash region (erased: 0xFF)",
    );
    // QEMU's RAM-backed flash with no loader: zeros.
    check(
        &mut mem,
        &[0u8; 4096],
        Status::BadBlob,
        "bad model blob: no model blob in its region (all zero)",
    );
    check(
        &mut mem,
        b"\x7fELF and more bytes here",
        Status::BadBlob,
        "wrong magic",
    );
    check(&mut mem, &[], Status::BadBlob, "smaller than a blob header");
    // A flipped payload bit.
    let (mut words, n) = region(3, Mode::MetaRim, FrozenDtype::F32);
    bytemuck_bytes_mut(&mut words)[n / 2] ^= 0x10;
    check(&mut mem, bytes(&words), Status::BadBlob, "CRC32 mismatch");
    // Cut short.
    let (words, n) = region(3, Mode::MetaRim, FrozenDtype::F32);
    check(
        &mut mem,
        &bytes(&words)[..n - 1],
        Status::BadBlob,
        "longer than its region",
    );
    // Misaligned in memory (the f32 views cannot be made).
    let mut shifted = vec![0u32; words.len() + 1];
    let sb = bytemuck_bytes_mut(&mut shifted);
    sb[1..1 + n].copy_from_slice(&bytes(&words)[..n]);
    check(
        &mut mem,
        &sb[1..1 + n],
        Status::BadBlob,
        "not 4-byte aligned",
    );
    // Another split, and f16 frozen groups (this build reads f32 in place).
    let (w, _) = region(3, Mode::Joint, FrozenDtype::F32);
    check(
        &mut mem,
        bytes(&w),
        Status::BadBlob,
        "exported in joint mode",
    );
    let (w, _) = region(3, Mode::MetaRim, FrozenDtype::F16);
    check(
        &mut mem,
        bytes(&w),
        Status::BadBlob,
        "frozen section is f16",
    );
    // And the same memory then loads a good blob.
    let (st, dev) = init(&mut mem, bytes(&words));
    assert_eq!(st, Status::Ok, "{}", message(dev));
}

#[test]
fn messages_are_cut_like_snprintf() {
    let mut mem = memory();
    let (_, dev) = init(&mut mem, &[0xFF; 64]);
    let full = message(dev);
    let mut small = [0x55 as c_char; 8];
    // SAFETY: dev is live; small is a local of the length given.
    let n = unsafe { metarim_last_error(dev, small.as_mut_ptr(), small.len()) };
    assert_eq!(n, full.len());
    // SAFETY: NUL-terminated within small.
    let cut = unsafe { CStr::from_ptr(small.as_ptr()) }.to_str().unwrap();
    assert_eq!(cut, &full[..7]);
    // Length only.
    // SAFETY: a null buffer of length 0.
    let n = unsafe { metarim_last_error(dev, ptr::null_mut(), 0) };
    assert_eq!(n, full.len());
    let s = |c| {
        // SAFETY: metarim_status_str returns static NUL-terminated strings.
        unsafe { CStr::from_ptr(metarim_status_str(c)) }
            .to_str()
            .unwrap()
    };
    assert_eq!(s(0), "ok");
    assert_eq!(s(4), "bad model blob");
    assert_eq!(s(-1), "unknown status");
    assert_eq!(s(99), "unknown status");
}

/// The Rust firmware's scheme, written directly on core (firmware/app/src/episodes.rs `run` with
/// no repeats, firmware/app/src/lib.rs `adapt`): the actions of every evaluation step.
struct Reference {
    layout: Layout,
    fast: Box<[f32; TINY_FAST]>,
    initial_fast: Vec<f32>,
    slow: Vec<f32>,
    other: Vec<f32>,
    env: Box<Env>,
    actor: Box<TinyActor>,
}

impl Reference {
    fn new(region: &[u8]) -> Reference {
        let (blob, _) = Blob::parse_region(region, &TINY, Mode::MetaRim).unwrap();
        let (slow, other) = blob.split_frozen(blob.frozen_f32().unwrap()).unwrap();
        let mut fast = Box::new([0.0f32; TINY_FAST]);
        blob.fast_into(&mut fast[..]).unwrap();
        Reference {
            layout: tiny_layout().unwrap(),
            fast,
            initial_fast: blob.fast_f32().unwrap().to_vec(),
            slow: slow.to_vec(),
            other: other.to_vec(),
            env: Box::new(Env::EMPTY),
            actor: Box::default(),
        }
    }

    /// The episodes played by the core's own actor on the reference's weights.
    fn evaluate(&mut self, level: &Level, seed: u64, episodes: u32, argmax: bool) -> Played {
        let mut played = Played::default();
        let mut tokens = [0u16; MAX_TOKENS];
        let mut obs: Observation = [[0u8; 3]; VIEW_CELLS];
        for i in 0..episodes {
            let mut rng = Pcg32::with_stream(split_mix64(seed), u64::from(i));
            let episode_seed = rng.next_u64();
            level.reset(&mut self.env, episode_seed).unwrap();
            tokens.fill(0);
            tokenize(self.env.mission.as_str(), &mut tokens).unwrap();
            let bufs = GroupBufs {
                fast: &self.fast[..],
                slow: &self.slow,
                other: &self.other,
            };
            self.actor.start_with(&self.layout, bufs, &tokens).unwrap();
            loop {
                self.env.observe(&mut obs);
                let bufs = GroupBufs {
                    fast: &self.fast[..],
                    slow: &self.slow,
                    other: &self.other,
                };
                self.actor.step_with(&self.layout, bufs, &obs).unwrap();
                let (a, _) = if argmax {
                    argmax_action(&self.actor.logits)
                } else {
                    sample_action(&self.actor.logits, &mut rng)
                };
                played.actions.push(a as u8);
                let out = self.env.step(Action::from_index(a as i64).unwrap());
                if out.terminated || out.truncated {
                    played.successes += u32::from(out.reward > 0.0);
                    break;
                }
            }
        }
        played
    }

    fn adapt(&mut self, level: &Level, seed: u64, episodes: u32) -> EpisodeStats {
        let mut adapter = Box::new(TinyAdapter::<16>::new());
        let mut s = Session {
            layout: &self.layout,
            fast: &mut self.fast,
            slow: &self.slow,
            other: &self.other,
            env: &mut self.env,
            actor: &mut self.actor,
        };
        adapt_session(
            &mut s,
            &mut adapter,
            &self.initial_fast,
            level,
            seed,
            episodes,
        )
        .unwrap()
    }
}

/// Episodes played, to compare the C API's loop with the core's: every action taken, in order,
/// and the number of successful episodes.
#[derive(Debug, Default, PartialEq)]
struct Played {
    actions: Vec<u8>,
    successes: u32,
}

/// The C API's side: the loop a C caller writes.
fn api_evaluate(dev: *mut Device, level: &CStr, seed: u64, episodes: u32, argmax: bool) -> Played {
    let mut played = Played::default();
    for i in 0..episodes {
        // SAFETY: dev is a live device; the strings and out-values are locals.
        unsafe {
            assert_eq!(
                metarim_episode_begin(dev, level.as_ptr(), seed, i),
                Status::Ok,
                "{}",
                message(dev)
            );
            loop {
                let mut a = 0xFFu8;
                assert_eq!(
                    metarim_act(dev, argmax, &mut a),
                    Status::Ok,
                    "{}",
                    message(dev)
                );
                played.actions.push(a);
                let mut r = StepResult::default();
                assert_eq!(
                    metarim_env_step(dev, a, &mut r),
                    Status::Ok,
                    "{}",
                    message(dev)
                );
                if r.terminated || r.truncated {
                    played.successes += u32::from(r.success);
                    assert_eq!(r.success, r.reward > 0.0);
                    // The episode is over: acting again is an error.
                    assert_eq!(metarim_act(dev, argmax, &mut a), Status::NoEpisode);
                    assert_eq!(metarim_env_step(dev, 0, &mut r), Status::NoEpisode);
                    break;
                }
            }
        }
    }
    played
}

/// Runs `f` on a device initialised in its own memory from the Tiny meta-rim region of `seed`
/// (failing with the device's message when it does not start), the Rust reference on the same
/// region, and the level both run (`LEVEL`).
fn with_device_and_reference(seed: u64, f: impl FnOnce(*mut Device, &mut Reference, &Level)) {
    let (words, _) = region(seed, Mode::MetaRim, FrozenDtype::F32);
    let r = bytes(&words);
    let mut mem = memory();
    let (st, dev) = init(&mut mem, r);
    assert_eq!(st, Status::Ok, "{}", message(dev));
    let level = Level::from_id("BabyAI-GoToObj-v0").unwrap();
    f(dev, &mut Reference::new(r), &level);
}

#[test]
fn episodes_match_the_firmware_scheme_action_for_action() {
    with_device_and_reference(11, |dev, reference, level| {
        for (seed, argmax) in [(1u64, false), (7, true), (u64::MAX, false)] {
            let want = reference.evaluate(level, seed, 12, argmax);
            let got = api_evaluate(dev, LEVEL, seed, 12, argmax);
            assert!(want.actions.len() > 12, "episodes of more than one step");
            assert_eq!(got, want, "seed {seed} argmax {argmax}");
        }
        // An alias names the same level.
        let want = reference.evaluate(level, 3, 4, false);
        assert_eq!(api_evaluate(dev, c"GoToObj", 3, 4, false), want);
    });
}

#[test]
fn adaptation_matches_the_firmware() {
    with_device_and_reference(5, |dev, reference, level| {
        // Evaluate, adapt (past the guard's 50-episode probe, so it learns), evaluate again.
        let before = reference.evaluate(level, 1, 6, false);
        let stats = reference.adapt(level, 2, 70);
        let after = reference.evaluate(level, 1, 6, false);
        assert!(stats.updates > 0 && stats.optimizer_steps > 0, "{stats:?}");

        assert_eq!(api_evaluate(dev, LEVEL, 1, 6, false), before);
        let mut got = AdaptStats::default();
        // SAFETY: dev is live; got is a local.
        let st = unsafe { metarim_adapt(dev, LEVEL.as_ptr(), 2, 70, &mut got) };
        assert_eq!(st, Status::Ok, "{}", message(dev));
        assert_eq!(got, AdaptStats::from(&stats));
        assert_eq!(got.windows, stats.updates);
        // SAFETY: dev is live and not borrowed elsewhere.
        let d = unsafe { &*dev };
        assert_eq!(
            d.fast[..],
            reference.fast[..],
            "the fast group, bit for bit"
        );
        assert_eq!(api_evaluate(dev, LEVEL, 1, 6, false), after);
        // Acting after adaptation needs a new episode.
        let mut a = 0u8;
        // SAFETY: as above.
        unsafe {
            assert_eq!(metarim_act(dev, false, &mut a), Status::NoEpisode);
            // A second call starts from a fresh adapter: the same as the reference's second.
            let stats2 = reference.adapt(level, 3, 55);
            let st = metarim_adapt(dev, c"GoToObj".as_ptr(), 3, 55, &mut got);
            assert_eq!(st, Status::Ok);
            assert_eq!(got, AdaptStats::from(&stats2));
            // The blob's fast group back.
            assert_eq!(metarim_reset_fast(dev), Status::Ok);
            assert_eq!(api_evaluate(dev, LEVEL, 1, 6, false), before);
            // NULL stats are allowed.
            assert_eq!(
                metarim_adapt(dev, LEVEL.as_ptr(), 2, 2, ptr::null_mut()),
                Status::Ok
            );
        }
    });
}

#[test]
fn own_observations_give_the_episode_logits() {
    let (words, _) = region(4, Mode::MetaRim, FrozenDtype::F32);
    let r = bytes(&words);
    let mut mem = memory();
    let (_, dev) = init(&mut mem, r);
    let mut mem2 = memory();
    let (_, dev2) = init(&mut mem2, r);
    let mut logits = [0.0f32; 8];
    let mut obs = [0u8; METARIM_OBS_BYTES];
    // SAFETY: both devices are live in their own memory; buffers are locals.
    unsafe {
        assert_eq!(
            metarim_policy_step(dev2, obs.as_ptr(), logits.as_mut_ptr(), 7),
            Status::NoEpisode
        );
        assert_eq!(metarim_episode_begin(dev, LEVEL.as_ptr(), 9, 2), Status::Ok);
        // The mission the level generated, as C sees it through the same tokeniser.
        let mission = std::ffi::CString::new((*dev).env.mission.as_str()).unwrap();
        assert_eq!(metarim_policy_reset(dev2, mission.as_ptr()), Status::Ok);
        for _ in 0..10 {
            assert_eq!(
                metarim_observe(dev, obs.as_mut_ptr(), obs.len()),
                Status::Ok
            );
            let mut a = 0u8;
            assert_eq!(metarim_act(dev, true, &mut a), Status::Ok);
            assert_eq!(
                metarim_policy_step(dev2, obs.as_ptr(), logits.as_mut_ptr(), 8),
                Status::Ok
            );
            assert_eq!(logits[..7], (&(*dev).actor.logits)[..]);
            assert_eq!(usize::from(a), argmax_action(&logits[..7]).0);
            let mut st = StepResult::default();
            assert_eq!(metarim_env_step(dev, a, &mut st), Status::Ok);
            if st.terminated || st.truncated {
                break;
            }
        }
        // Buffers and arguments.
        assert_eq!(
            metarim_policy_step(dev2, obs.as_ptr(), logits.as_mut_ptr(), 6),
            Status::BufferTooSmall
        );
        assert_eq!(
            metarim_policy_step(dev2, ptr::null(), logits.as_mut_ptr(), 7),
            Status::NullPointer
        );
        let odd = logits.as_mut_ptr().cast::<u8>().add(1).cast::<f32>();
        assert_eq!(
            metarim_policy_step(dev2, obs.as_ptr(), odd, 7),
            Status::Misaligned
        );
        assert_eq!(
            metarim_observe(dev, obs.as_mut_ptr(), 146),
            Status::BufferTooSmall
        );
        // A policy episode of the caller's ends the level episode's acting.
        let mut a = 0u8;
        assert_eq!(metarim_episode_begin(dev, LEVEL.as_ptr(), 9, 3), Status::Ok);
        assert_eq!(
            metarim_policy_reset(dev, c"go to the red ball".as_ptr()),
            Status::Ok
        );
        assert_eq!(metarim_act(dev, true, &mut a), Status::NoEpisode);
        // Missions: unknown words are fine, too many are not, nor non-UTF-8.
        assert_eq!(
            metarim_policy_reset(dev2, c"fly to the moon".as_ptr()),
            Status::Ok
        );
        let long = std::ffi::CString::new("go ".repeat(49)).unwrap();
        assert_eq!(
            metarim_policy_reset(dev2, long.as_ptr()),
            Status::BadMission
        );
        assert_message_starts(dev2, "buffer too small");
        assert_eq!(
            metarim_policy_reset(dev2, c"go to \xff".as_ptr()),
            Status::BadMission
        );
        let huge = std::ffi::CString::new("a".repeat(METARIM_MAX_MISSION + 1)).unwrap();
        assert_eq!(
            metarim_policy_reset(dev2, huge.as_ptr()),
            Status::BadMission
        );
        assert_eq!(metarim_policy_reset(dev2, ptr::null()), Status::NullPointer);
        // After a failed reset the caller's policy episode is gone.
        assert_eq!(
            metarim_policy_step(dev2, obs.as_ptr(), logits.as_mut_ptr(), 7),
            Status::NoEpisode
        );
    }
}

#[test]
fn bad_levels_actions_and_pointers() {
    let (words, _) = region(4, Mode::MetaRim, FrozenDtype::F32);
    let mut mem = memory();
    let (_, dev) = init(&mut mem, bytes(&words));
    let mut r = StepResult::default();
    let mut a = 0u8;
    // SAFETY: dev is live; buffers are locals.
    unsafe {
        assert_eq!(metarim_env_step(dev, 0, &mut r), Status::NoEpisode);
        assert_eq!(metarim_act(dev, false, &mut a), Status::NoEpisode);
        let mut obs = [0u8; METARIM_OBS_BYTES];
        assert_eq!(
            metarim_observe(dev, obs.as_mut_ptr(), obs.len()),
            Status::NoEpisode
        );
        assert_eq!(
            metarim_episode_begin(dev, c"BabyAI-Nope-v0".as_ptr(), 1, 0),
            Status::BadLevel
        );
        assert_eq!(message(dev), "unknown level id");
        // A 19x19 level does not fit this build's 16x16 grids.
        assert_eq!(
            metarim_episode_begin(dev, c"MiniGrid-FourRooms-v0".as_ptr(), 1, 0),
            Status::BadLevel
        );
        assert_message_starts(dev, "grid size 19x19 unsupported");
        assert_eq!(
            metarim_episode_begin(dev, ptr::null(), 1, 0),
            Status::NullPointer
        );
        let long = std::ffi::CString::new("x".repeat(200)).unwrap();
        assert_eq!(
            metarim_episode_begin(dev, long.as_ptr(), 1, 0),
            Status::BadLevel
        );
        assert_eq!(
            metarim_adapt(dev, c"nope".as_ptr(), 1, 1, ptr::null_mut()),
            Status::BadLevel
        );
        // Actions: 0..6 only.
        assert_eq!(metarim_episode_begin(dev, LEVEL.as_ptr(), 1, 0), Status::Ok);
        assert_eq!(metarim_env_step(dev, 7, &mut r), Status::BadArgument);
        assert_eq!(message(dev), "action 7 not in 0..7");
        assert_eq!(metarim_env_step(dev, 255, &mut r), Status::BadArgument);
        assert_eq!(
            metarim_env_step(dev, 0, ptr::null_mut()),
            Status::NullPointer
        );
        assert_eq!(
            metarim_act(dev, false, ptr::null_mut()),
            Status::NullPointer
        );
        // The episode survived the refused calls.
        assert_eq!(metarim_act(dev, false, &mut a), Status::Ok);
        assert_eq!(metarim_env_step(dev, a, &mut r), Status::Ok);
        assert_eq!(r.steps, 1);
        let odd = (&mut r as *mut StepResult)
            .cast::<u8>()
            .add(1)
            .cast::<StepResult>();
        assert_eq!(metarim_env_step(dev, 0, odd), Status::Misaligned);
        // A failed begin leaves no episode.
        assert_eq!(
            metarim_episode_begin(dev, c"nope".as_ptr(), 1, 0),
            Status::BadLevel
        );
        assert_eq!(metarim_act(dev, false, &mut a), Status::NoEpisode);
    }
}

/// FNV-1a 64 over one byte per action (the C example's digest).
fn fnv1a(actions: &[u8]) -> u64 {
    actions.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, a| {
        (h ^ u64::from(*a)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The host twin of the C example (firmware/c-example/main.c): with `METARIM_TWIN_MODEL` set
/// to a blob file, prints the example's "firmware: " lines for the `FW_LEVEL`, `FW_EPISODES`,
/// `FW_SEED`, `FW_ADAPT_EPISODES` and `FW_ARGMAX` in the environment, through this API on the
/// host; scripts/run-c-example.sh compares them with the Cortex-M4F run's.
#[test]
#[ignore = "run by scripts/run-c-example.sh with METARIM_TWIN_MODEL=model.bin"]
fn host_twin_of_the_c_example() {
    let Some(model) = std::env::var_os("METARIM_TWIN_MODEL") else {
        return;
    };
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let level = std::ffi::CString::new(var("FW_LEVEL", "BabyAI-GoToObj-v0")).unwrap();
    let episodes: u32 = var("FW_EPISODES", "20").parse().unwrap();
    let seed: u64 = var("FW_SEED", "1").parse().unwrap();
    let adapt_episodes: u32 = var("FW_ADAPT_EPISODES", "200").parse().unwrap();
    let argmax = var("FW_ARGMAX", "0") != "0";
    let file = std::fs::read(&model).unwrap();
    // The region as the board has it: 4-byte aligned, 256 KiB.
    let mut words = vec![0u32; 256 * 1024 / 4];
    bytemuck_bytes_mut(&mut words)[..file.len()].copy_from_slice(&file);
    let mut mem = memory();
    let (st, dev) = init(&mut mem, bytes(&words));
    if st != Status::Ok {
        println!("firmware: error: {}", message(dev));
        return;
    }
    let phase = |name: &str| {
        let Played { actions, successes } = api_evaluate(dev, &level, seed, episodes, argmax);
        println!("firmware: {name}: episodes={episodes} success={successes}/{episodes}");
        fnv1a(&actions)
    };
    let before = phase("before");
    let mut a = AdaptStats::default();
    // SAFETY: dev is live; level and a are locals.
    let st = unsafe {
        metarim_adapt(
            dev,
            level.as_ptr(),
            seed.wrapping_add(1),
            adapt_episodes,
            &mut a,
        )
    };
    assert_eq!(st, Status::Ok, "{}", message(dev));
    println!(
        "firmware: adapted: episodes={} steps={} windows={} sgd_steps={} success={}/{}",
        a.episodes, a.steps, a.windows, a.optimizer_steps, a.successes, a.episodes
    );
    let after = phase("after");
    println!("firmware: actions: before={before:#018x} after={after:#018x}");
}
