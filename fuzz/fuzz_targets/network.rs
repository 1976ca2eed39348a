//! The core's network API (`metarim_core::nn`) on arbitrary model sizes, buffer lengths,
//! parameters and inputs: what a library user (or a firmware with another preset) can hand it.
//!
//! Checks, for any input:
//! - `Layout::new` on any `ModelDims` (every width from 0 to `usize::MAX`, any mode) returns a
//!   layout or an error, never panics; for a layout it accepts, the buffer sizes the core
//!   exports (`state_len`, `step_cache_len`, `scratch_len`, `chunk_work_len`, `fast_work_len`)
//!   are computed without overflow;
//! - on an accepted layout (groups up to [`MAX_PARAMS`] values), `init_params`, `Policy::new`,
//!   `encode_instruction`, `step`, `chunk_backward` and `fast_window_backward` never panic,
//!   whatever the parameter values (any f32 bit pattern: NaN, infinities, subnormals), tokens
//!   (any `u16`), observation bytes, actions, coefficients, window lengths and buffer lengths
//!   (each buffer exact, one short or one long, chosen by the input);
//! - with exact buffers, initialised parameters and in-range tokens and actions, every call
//!   succeeds, a step is deterministic (the same outputs, bit for bit, when repeated) and
//!   writes finite logits and value;
//! - f32 and f64 (the input's first byte picks) run the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metarim_core::env::Observation;
use metarim_core::mission::vocab::VOCAB_SIZE;
use metarim_core::nn::dims::{
    CellKind, CommUpdate, EncoderKind, MemoryKind, ModelDims, RimDims, TINY,
};
use metarim_core::nn::init::InitConfig;
use metarim_core::nn::loss::{PpoCoefs, PpoSample};
use metarim_core::nn::params::{Group, GroupBufs, GroupBufsMut, Layout, Mode};
use metarim_core::nn::policy::{
    chunk_work_len, fast_work_len, init_params, scratch_len, state_len, step_cache_len, ChunkStep,
    FastStep, Policy,
};
use metarim_core::nn::rim::CommGrad;
use metarim_core::nn::Real;

/// Largest parameter group the target allocates (larger accepted layouts are only sized).
const MAX_PARAMS: usize = 1 << 16;
/// Longest chunk or adaptation window it runs.
const MAX_STEPS: usize = 4;

const MODES: [Mode; 4] = [Mode::MetaRim, Mode::Reversed, Mode::Joint, Mode::Lstm];

#[path = "common/choices.rs"]
mod choices;
use choices::Choices;

/// This target's kinds of choice.
impl Choices<'_> {
    /// A width: mostly small (0-8), sometimes huge (overflow bait).
    fn width(&mut self) -> usize {
        const HUGE: [usize; 8] = [
            16,
            100,
            4096,
            65_537,
            1 << 31,
            usize::MAX / 3,
            usize::MAX - 1,
            usize::MAX,
        ];
        let b = self.byte();
        if b < 0xF0 {
            usize::from(b % 9)
        } else {
            HUGE[usize::from(b & 7)]
        }
    }

    /// A buffer length around `exact`: mostly exact, else one short or one long.
    fn len_near(&mut self, exact: usize) -> usize {
        match self.byte() {
            0xFE => exact.saturating_sub(1),
            0xFF => exact + 1,
            _ => exact,
        }
    }
}

fn dims_from(c: &mut Choices) -> ModelDims {
    let mut d = ModelDims {
        encoder: if c.bit() {
            EncoderKind::Bow
        } else {
            EncoderKind::Conv
        },
        conv_channels: [c.width(), c.width(), c.width()],
        bow_dim: c.width(),
        film: c.bit(),
        feature_norm: c.bit(),
        word_dim: c.width(),
        instr_hidden: c.width(),
        max_tokens: if c.bit() { TINY.max_tokens } else { c.width() },
        memory: MemoryKind::Rim,
        rim: RimDims {
            n_modules: c.width(),
            k_active: c.width(),
            hidden: c.width(),
            input: 0,
            d_k: c.width(),
            d_v: c.width(),
            in_heads: c.width(),
            c_heads: c.width(),
            c_k: c.width(),
            cell: if c.bit() {
                CellKind::Lstm
            } else {
                CellKind::Gru
            },
            communication: c.bit(),
            comm_update: if c.bit() {
                CommUpdate::Interpolate
            } else {
                CommUpdate::Residual
            },
        },
        head_hidden: c.width(),
        n_actions: if c.bit() { TINY.n_actions } else { c.width() },
    };
    // Mostly the consistent memory input (else Layout::new stops at its first check).
    d.rim.input = if c.byte() < 0xF0 {
        d.conv_channels[2].wrapping_add(d.instr_hidden)
    } else {
        c.width()
    };
    d
}

/// Every size the core exports for a layout it accepted (these must not overflow).
fn sizes(d: &ModelDims) -> [usize; 5] {
    [
        state_len(d),
        step_cache_len(d),
        scratch_len(d),
        chunk_work_len(d, MAX_STEPS),
        fast_work_len(d),
    ]
}

fn value<S: Real>(c: &mut Choices, raw: bool) -> S {
    if raw {
        S::from_f64(f64::from(f32::from_bits(c.u32())))
    } else {
        S::from_f64(f64::from(c.byte() as i8) / 64.0)
    }
}

fn fill<S: Real>(c: &mut Choices, raw: bool, out: &mut [S]) {
    for v in out {
        *v = value(c, raw);
    }
}

/// The parameter groups: initialised (a trainer's) or any bit patterns (a corrupt or hostile
/// blob), each exact, one short or one long. Also says whether they are raw and all exact.
fn params<S: Real>(c: &mut Choices, layout: &Layout) -> ([Vec<S>; 3], bool, bool) {
    let raw = c.bit();
    let mut groups: [Vec<S>; 3] = Group::ALL.map(|g| vec![S::ZERO; layout.group_len(g)]);
    {
        let [f, s, o] = &mut groups;
        let bufs = GroupBufsMut {
            fast: f,
            slow: s,
            other: o,
        };
        let seed = u64::from(c.u32());
        init_params(layout, &InitConfig::default(), seed, bufs).expect("init on exact buffers");
    }
    if raw {
        for g in &mut groups {
            fill(c, true, g);
        }
    }
    let mut exact = true;
    for g in &mut groups {
        let len = c.len_near(g.len());
        exact &= len == g.len();
        g.resize(len, S::ZERO);
    }
    (groups, raw, exact)
}

/// What a step reads: the mission's tokens (in the vocabulary and not too many when `good`)
/// and an observation (valid codes when `good`, any bytes otherwise).
fn inputs(c: &mut Choices, d: &ModelDims, good: bool) -> (Vec<u16>, Observation) {
    // More tokens than `max_tokens` is an error (a mission too long for the model).
    let n_tokens = usize::from(c.byte()) % (d.max_tokens.min(64) + if good { 1 } else { 3 });
    let tokens: Vec<u16> = (0..n_tokens)
        .map(|_| {
            let t = u16::from_le_bytes([c.byte(), c.byte()]);
            if good {
                t % VOCAB_SIZE as u16
            } else {
                t
            }
        })
        .collect();
    let mut obs: Observation = [[0u8; 3]; metarim_core::env::VIEW_CELLS];
    for cell in obs.iter_mut() {
        for v in cell.iter_mut() {
            *v = if good { c.byte() % 6 } else { c.byte() };
        }
    }
    (tokens, obs)
}

/// A buffer length: exact when `good`, else exact, one short or one long.
fn len_for(c: &mut Choices, good: bool, n: usize) -> usize {
    if good {
        n
    } else {
        c.len_near(n)
    }
}

/// The instruction, then one step twice: the same outputs bit for bit (or the same error),
/// finite and successful with good inputs. Returns the incoming state it used.
fn check_step<S: Real>(
    c: &mut Choices,
    policy: &Policy<'_, S>,
    good: bool,
    tokens: &[u16],
    obs: &Observation,
) -> Vec<S> {
    let d = *policy.dims();
    let [sl, cl, scl, _, _] = sizes(&d);
    let mut instr = vec![S::ZERO; len_for(c, good, d.instr_hidden)];
    let mut scratch = vec![S::ZERO; len_for(c, good, scl)];
    let enc = policy.encode_instruction(tokens, &mut instr, &mut scratch);
    let mut state_in = vec![S::ZERO; len_for(c, good, sl)];
    fill(c, !good, &mut state_in);
    let mut state_out = vec![S::ZERO; len_for(c, good, sl)];
    let mut logits = vec![S::ZERO; len_for(c, good, d.n_actions)];
    let mut cache = vec![S::ZERO; len_for(c, good, cl)];
    let mut step = |state_out: &mut [S], logits: &mut [S], cache: &mut [S]| {
        let r = policy.step(
            obs,
            &instr,
            &state_in,
            state_out,
            logits,
            cache,
            &mut scratch,
        );
        (r, state_out.to_vec(), logits.to_vec(), cache.to_vec())
    };
    let first = step(&mut state_out, &mut logits, &mut cache);
    let again = step(&mut state_out, &mut logits, &mut cache);
    let bits = |v: &[S]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
    match (&first.0, &again.0) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                a.to_f64().to_bits(),
                b.to_f64().to_bits(),
                "step value differs"
            );
            assert_eq!(bits(&first.1), bits(&again.1), "step state differs");
            assert_eq!(bits(&first.2), bits(&again.2), "step logits differ");
            assert_eq!(bits(&first.3), bits(&again.3), "step cache differs");
            if good {
                assert!(a.to_f64().is_finite(), "non-finite value");
                let finite = first.2.iter().all(|l| l.to_f64().is_finite());
                assert!(finite, "non-finite logits");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "step errors differ"),
        (a, b) => panic!("a repeated step changed from {a:?} to {b:?}"),
    }
    if good {
        enc.expect("encode_instruction on exact buffers");
        first.0.expect("step on exact buffers");
    }
    state_in
}

/// A chunk's backward pass and an adaptation window over `1..=MAX_STEPS` steps of the same
/// observation and mission: successful with good inputs (and a RIM memory for the window).
fn check_backward<S: Real>(
    c: &mut Choices,
    policy: &Policy<'_, S>,
    good: bool,
    (tokens, obs): (&[u16], &Observation),
    state_in: &[S],
) {
    let layout = policy.layout();
    let d = *policy.dims();
    let t = 1 + usize::from(c.byte()) % MAX_STEPS;
    let coefs = PpoCoefs {
        clip_eps: value(c, !good),
        value_coef: value(c, !good),
        entropy_coef: value(c, !good),
        clip_value: c.bit(),
    };
    let samples: Vec<PpoSample<S>> = (0..t)
        .map(|_| PpoSample {
            action: if good {
                usize::from(c.byte()) % d.n_actions.max(1)
            } else {
                c.width()
            },
            old_logprob: value(c, !good),
            old_value: value(c, !good),
            advantage: value(c, !good),
            ret: value(c, !good),
        })
        .collect();
    let starts: Vec<bool> = (0..t).map(|i| i == 0 || c.bit()).collect();
    let steps: Vec<ChunkStep<'_, S>> = (0..t)
        .map(|i| ChunkStep {
            obs,
            tokens,
            episode_start: starts[i],
            sample: samples[i],
        })
        .collect();
    let comm = if c.bit() {
        CommGrad::Full
    } else {
        CommGrad::Blocked
    };
    let mut grads: [Vec<S>; 3] = Group::ALL.map(|g| vec![S::ZERO; layout.group_len(g)]);
    let mut work = vec![S::ZERO; len_for(c, good, chunk_work_len(&d, t))];
    let chunk = {
        let [f, s, o] = &mut grads;
        let g = GroupBufsMut {
            fast: f,
            slow: s,
            other: o,
        };
        policy.chunk_backward(&steps, state_in, &coefs, S::ONE, comm, g, &mut work)
    };
    if good {
        chunk.expect("chunk_backward on exact buffers");
    }

    let x = vec![S::ZERO; len_for(c, good, d.memory_input())];
    let fast: Vec<FastStep<'_, S>> = (0..t)
        .map(|i| FastStep {
            x: &x,
            state_in,
            episode_start: starts[i],
            sample: samples[i],
        })
        .collect();
    let rnn_len = layout
        .entries()
        .iter()
        .find(|e| e.name == "rim.modules.rnn")
        .map_or(0, |e| e.len);
    let mut rnn_grads = vec![S::ZERO; len_for(c, good, rnn_len)];
    let mut fast_work = vec![S::ZERO; len_for(c, good, fast_work_len(&d))];
    let window =
        policy.fast_window_backward(&fast, &coefs, S::ONE, comm, &mut rnn_grads, &mut fast_work);
    if good && d.memory == MemoryKind::Rim {
        window.expect("fast_window_backward on exact buffers");
    }
}

fn run<S: Real>(c: &mut Choices, layout: &Layout) {
    let d = *layout.dims();
    let [_, cl, scl, _, fwl] = sizes(&d);
    if Group::ALL.iter().any(|g| layout.group_len(*g) > MAX_PARAMS)
        || cl.max(scl).max(fwl) > 8 * MAX_PARAMS
    {
        return;
    }
    let (groups, raw, exact) = params::<S>(c, layout);
    let bufs = GroupBufs {
        fast: &groups[0],
        slow: &groups[1],
        other: &groups[2],
    };
    let policy = match Policy::new(layout, bufs) {
        Ok(p) => p,
        Err(e) => {
            assert!(!exact, "Policy::new refused exact buffers: {e:?}");
            return;
        }
    };
    let good = !raw && c.byte() < 0xC0;
    let (tokens, obs) = inputs(c, &d, good);
    let state_in = check_step(c, &policy, good, &tokens, &obs);
    check_backward(c, &policy, good, (&tokens, &obs), &state_in);
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices(data);
    let f64_run = c.bit();
    let mode = MODES[usize::from(c.byte()) % MODES.len()];
    let dims = dims_from(&mut c);
    let Ok(layout) = Layout::new(&dims, mode) else {
        return;
    };
    if f64_run {
        run::<f64>(&mut c, &layout);
    } else {
        run::<f32>(&mut c, &layout);
    }
});
