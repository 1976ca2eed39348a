//! On-device fast adaptation (`metarim_core::adapt`): the adapter (`TinyAdapter::record`,
//! `update`, `clear`), its settings (`AdaptConfig`) and the guard (`Guard`), on a Tiny
//! meta-rim policy, driven by arbitrary settings, acted steps and episode outcomes.
//!
//! Input: byte 0 picks the window length class and the parameters (initialised from a seed or
//! any f32 bit patterns); then the settings (each float a sane value or any bit pattern, the
//! window count and the guard's counts small or huge); then a list of operations, one byte
//! each plus their operands: record a step (lengths exact or off by one, any action, rewards,
//! values and log-probabilities), update (any bootstrap value), clear, or end an episode in
//! the guard.
//!
//! Checks, for any input: nothing panics; `AdaptConfig::validate` and `Guard::new` refuse
//! exactly the settings outside their documented ranges (no windows per step; a trailing
//! window outside 1..=128; a non-finite z or a NaN stop level); recording fails exactly when
//! the window is full, a length is wrong or the action does not fit a byte, and a failed
//! record leaves the window as it was; an update refuses invalid settings and otherwise never
//! fails on a window of recorded steps whose actions are valid, empties the window and takes
//! an optimiser step every `windows_per_step` windows; a second adapter fed the same input
//! ends with the same fast weights, bit for bit (the device and its host twin agree); the
//! guard probes no more episodes than it was told, restarts at most `max_reverts + 1` times
//! and, once stopped, stays stopped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metarim_core::adapt::guard::MAX_TRAIL;
use metarim_core::adapt::{
    ActedStep, AdaptConfig, Guard, GuardConfig, GuardPhase, TinyAdapter, TINY_X,
};
use metarim_core::nn::dims::TINY;
use metarim_core::nn::init::InitConfig;
use metarim_core::nn::params::{Group, GroupBufsMut, Layout, Mode};
use metarim_core::nn::policy::init_params;
use metarim_core::nn::presets::{TINY_FAST, TINY_STATE};
use metarim_core::Error;

/// The window length of the firmware's adapter, and a short one that fills often.
const LONG: usize = 16;
const SHORT: usize = 3;
/// Most operations one input runs (each update is a backward pass over the window).
const MAX_OPS: usize = 48;

#[path = "common/choices.rs"]
mod choices;
use choices::Choices;

/// This target's kinds of choice.
impl Choices<'_> {
    /// A float: a small value from a table (usually), or any bit pattern.
    fn float(&mut self, sane: [f32; 4]) -> f32 {
        let b = self.byte();
        if b < 0xF0 {
            sane[usize::from(b & 3)]
        } else {
            f32::from_bits(self.u32())
        }
    }

    /// A count: small (usually) or any `u32`.
    fn count(&mut self, small: u32) -> u32 {
        let b = self.byte();
        if b < 0xF0 {
            u32::from(b) % small
        } else {
            self.u32()
        }
    }
}

fn settings(c: &mut Choices) -> AdaptConfig {
    AdaptConfig {
        gamma: c.float([0.99, 0.9, 1.0, 0.0]),
        lambda: c.float([0.95, 1.0, 0.5, 0.0]),
        lr: c.float([1e-2, 0.1, 0.0, 1.0]),
        entropy_coef: c.float([0.01, 0.0, 0.1, 1.0]),
        max_grad_norm: c.float([0.5, 1.0, 0.0, 1e-3]),
        reward_scale: c.float([20.0, 1.0, 0.0, 100.0]),
        clip_eps: c.float([0.2, 0.1, 0.0, 1.0]),
        windows_per_step: c.count(5),
        guard: GuardConfig {
            probe_episodes: c.count(4),
            trail_episodes: c.count(MAX_TRAIL + 3),
            keep_z: c.float([1.0, 0.0, -1.0, 3.0]),
            revert_z: c.float([2.0, 0.0, 1.0, 5.0]),
            stop_success: c.float([0.9, 2.0, 0.5, 0.0]),
            max_reverts: c.count(3),
        },
    }
}

/// One input's run on a fresh adapter: the fast weights at the end, and what was checked.
fn run<const W: usize>(
    data: &[u8],
    layout: &Layout,
    fast0: &[f32; TINY_FAST],
    (slow, other): (&[f32], &[f32]),
) -> [f32; TINY_FAST] {
    let mut c = Choices(data);
    let cfg = settings(&mut c);
    let g = cfg.guard;
    let valid_guard = (1..=MAX_TRAIL).contains(&g.trail_episodes)
        && g.keep_z.is_finite()
        && g.revert_z.is_finite()
        && !g.stop_success.is_nan();
    let valid_cfg = cfg.windows_per_step >= 1 && valid_guard;
    assert_eq!(cfg.validate().is_ok(), valid_cfg, "validate on {cfg:?}");
    let mut guard = Guard::new(&g);
    assert_eq!(guard.is_ok(), valid_guard, "Guard::new on {g:?}");

    let mut fast = *fast0;
    let mut adapter = TinyAdapter::<W>::new();
    let mut x = [0.0f32; TINY_X + 1];
    let mut state = [0.0f32; TINY_STATE + 1];
    let mut valid_actions = true;
    let mut windows = 0u32;
    for _ in 0..MAX_OPS {
        if c.0.is_empty() {
            break;
        }
        match c.byte() % 8 {
            0..=4 => {
                let (lx, ls) = match c.byte() {
                    0xFE => (TINY_X - 1, TINY_STATE),
                    0xFF => (TINY_X, TINY_STATE + 1),
                    _ => (TINY_X, TINY_STATE),
                };
                for v in x.iter_mut().chain(state.iter_mut()) {
                    *v = f32::from(c.byte() as i8) / 32.0;
                }
                let action = match c.byte() {
                    0xFF => c.u32() as usize,
                    b => usize::from(b % 8),
                };
                let step = ActedStep {
                    x: &x[..lx],
                    state_in: &state[..ls],
                    episode_start: c.bit(),
                    action,
                    logprob: c.float([-1.9, -0.1, 0.0, -20.0]),
                    value: c.float([0.0, 0.5, -0.5, 10.0]),
                    reward: c.float([0.0, 0.0, 18.0, 1.0]),
                    done: c.bit(),
                };
                let before = adapter.len();
                let full = adapter.is_full();
                let r = adapter.record(&step);
                let ok = !full && lx == TINY_X && ls == TINY_STATE && action <= 255;
                assert_eq!(r.is_ok(), ok, "record: {r:?}");
                assert_eq!(adapter.len(), before + usize::from(ok));
                if ok && action >= TINY.n_actions {
                    valid_actions = false;
                }
            }
            5 => {
                let bootstrap = c.float([0.0, 1.0, -1.0, 5.0]);
                let had = adapter.len();
                let r = adapter.update(layout, &mut fast, slow, other, bootstrap, &cfg);
                match r {
                    Ok(report) => {
                        assert!(valid_cfg, "update accepted invalid settings {cfg:?}");
                        assert_eq!(report.steps, had);
                        assert!(adapter.is_empty(), "an update leaves the window empty");
                        if had > 0 {
                            windows += 1;
                            let stepped = windows.is_multiple_of(cfg.windows_per_step);
                            assert_eq!(report.optimizer_steps, u32::from(stepped));
                        }
                    }
                    Err(Error::BadConfig { .. }) => assert!(!valid_cfg),
                    Err(e) => {
                        assert!(valid_cfg && !valid_actions, "update failed: {e:?}");
                        adapter.clear();
                        windows = 0;
                        valid_actions = true;
                    }
                }
                if adapter.is_empty() {
                    valid_actions = true;
                }
            }
            6 => {
                adapter.clear();
                windows = 0;
                valid_actions = true;
                assert!(adapter.is_empty());
            }
            _ => {
                if let Ok(g) = guard.as_mut() {
                    let was = g.phase();
                    g.end_episode(c.bit());
                    let report = g.report();
                    assert!(report.probe_episodes <= cfg.guard.probe_episodes);
                    assert!(report.reverts <= cfg.guard.max_reverts.saturating_add(1));
                    if was == GuardPhase::Stopped {
                        assert_eq!(g.phase(), GuardPhase::Stopped, "a stopped guard restarted");
                    }
                    let _ = (g.learning(), g.lr_scale(), g.keep_at_end());
                }
            }
        }
    }
    fast
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, data)) = data.split_first() else {
        return;
    };
    let layout = Layout::new(&TINY, Mode::MetaRim).expect("the Tiny meta-rim layout");
    let mut groups: [Vec<f32>; 3] = Group::ALL.map(|g| vec![0.0; layout.group_len(g)]);
    {
        let [f, s, o] = &mut groups;
        let bufs = GroupBufsMut {
            fast: f,
            slow: s,
            other: o,
        };
        init_params(&layout, &InitConfig::default(), u64::from(head >> 2), bufs)
            .expect("init on exact buffers");
    }
    if head & 2 != 0 {
        // Any bit patterns in the fast group (a blob from a broken export, say).
        for (v, b) in groups[0].iter_mut().zip(data.chunks(4).cycle()) {
            let mut w = [0u8; 4];
            w[..b.len()].copy_from_slice(b);
            *v = f32::from_bits(u32::from_le_bytes(w));
        }
    }
    let fast0: [f32; TINY_FAST] = groups[0].as_slice().try_into().expect("TINY_FAST values");
    let frozen = (&groups[1][..], &groups[2][..]);
    let (a, b) = if head & 1 == 0 {
        (
            run::<LONG>(data, &layout, &fast0, frozen),
            run::<LONG>(data, &layout, &fast0, frozen),
        )
    } else {
        (
            run::<SHORT>(data, &layout, &fast0, frozen),
            run::<SHORT>(data, &layout, &fast0, frozen),
        )
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "the same input adapted differently");
});
