//! Parity of the trainer's batched gradient pass (`host::train::batched`) with the core's
//! per-chunk `Policy::chunk_backward`, summed over the chunks: every parameter gradient and the
//! summed loss terms, for the four modes, both encoders, RIMs with GRU and with LSTM cells,
//! random parameters, initial states, observations, missions, episode starts and PPO targets;
//! plus the options (only some groups, stored memory inputs) and independence from the thread
//! count (bit for bit).

mod common;

use common::rel_err;
use host::batch::gemm::Scalar;
use host::train::batched::{BatchedGrads, PassOptions, Seq};
use host::train::GroupVecs;
use metarim_core::env::{Observation, VIEW_CELLS};
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS};
use metarim_core::nn::dims::{CellKind, CommUpdate, EncoderKind, ModelDims, RimDims, PAPER, TINY};
use metarim_core::nn::init::InitConfig;
use metarim_core::nn::loss::{PpoCoefs, PpoSample};
use metarim_core::nn::params::{Group, Layout, Mode};
use metarim_core::nn::policy::{chunk_work_len, init_params, state_len, ChunkStep, Policy};
use metarim_core::nn::rim::CommGrad;
use metarim_core::rng::Pcg32;

const MISSIONS: [&str; 4] = [
    "go to the red ball",
    "pick up a blue key",
    "open the door on your left",
    "put the grey box next to a green ball",
];

/// A minibatch of random chunks.
struct Batch<S> {
    obs: Vec<Vec<Observation>>,
    tokens: Vec<Vec<[u16; MAX_TOKENS]>>,
    starts: Vec<Vec<bool>>,
    samples: Vec<Vec<PpoSample<S>>>,
    init: Vec<Vec<S>>,
}

fn batch<S: Scalar>(d: &ModelDims, chunks: usize, steps: usize, seed: u64) -> Batch<S> {
    let mut rng = Pcg32::new(seed);
    let sl = state_len(d);
    let mut out = Batch {
        obs: vec![],
        tokens: vec![],
        starts: vec![],
        samples: vec![],
        init: vec![],
    };
    for _ in 0..chunks {
        let mut mission = [0u16; MAX_TOKENS];
        let mut obs = vec![];
        let mut tokens = vec![];
        let mut starts = vec![];
        let mut samples = vec![];
        for t in 0..steps {
            let start = rng.below(5) == 0;
            if t == 0 || start {
                mission = [0; MAX_TOKENS];
                tokenize(MISSIONS[rng.below(4) as usize], &mut mission).unwrap();
            }
            let mut o = [[0u8; 3]; VIEW_CELLS];
            for c in o.iter_mut() {
                *c = [rng.below(11) as u8, rng.below(6) as u8, rng.below(3) as u8];
            }
            obs.push(o);
            tokens.push(mission);
            starts.push(start);
            samples.push(PpoSample {
                action: rng.below(d.n_actions as u32) as usize,
                old_logprob: S::from_f64(-1.0 - rng.gen_f64()),
                old_value: S::from_f64(rng.gen_f64() * 2.0 - 1.0),
                advantage: S::from_f64(rng.gen_f64() * 4.0 - 2.0),
                ret: S::from_f64(rng.gen_f64() * 2.0 - 1.0),
            });
        }
        out.obs.push(obs);
        out.tokens.push(tokens);
        out.starts.push(starts);
        out.samples.push(samples);
        out.init
            .push((0..sl).map(|_| S::from_f64(rng.gen_f64() - 0.5)).collect());
    }
    out
}

fn coefs<S: Scalar>() -> PpoCoefs<S> {
    PpoCoefs {
        clip_eps: S::from_f64(0.2),
        value_coef: S::from_f64(0.5),
        entropy_coef: S::from_f64(0.01),
        clip_value: true,
    }
}

/// The core's gradient and loss sum over the chunks.
fn core_grads<S: Scalar>(
    l: &Layout,
    p: &GroupVecs<S>,
    b: &Batch<S>,
    scale: S,
) -> (GroupVecs<S>, f64) {
    let policy = Policy::new(l, p.bufs()).unwrap();
    let mut g = GroupVecs::zeros(l);
    let steps = b.samples[0].len();
    let mut work = vec![S::ZERO; chunk_work_len(l.dims(), steps)];
    let mut loss = 0.0;
    for c in 0..b.obs.len() {
        let st: Vec<ChunkStep<'_, S>> = (0..steps)
            .map(|t| ChunkStep {
                obs: &b.obs[c][t],
                tokens: &b.tokens[c][t],
                episode_start: b.starts[c][t],
                sample: b.samples[c][t],
            })
            .collect();
        let s = policy
            .chunk_backward(
                &st,
                &b.init[c],
                &coefs(),
                scale,
                CommGrad::Blocked,
                g.bufs_mut(),
                &mut work,
            )
            .unwrap();
        loss += s.sum.loss.to_f64();
    }
    (g, loss)
}

fn seqs<'a, S: Scalar>(b: &'a Batch<S>, xs: Option<&'a [Vec<S>]>) -> Vec<Seq<'a, S>> {
    (0..b.obs.len())
        .map(|c| Seq {
            obs: &b.obs[c],
            tokens: &b.tokens[c],
            episode_start: &b.starts[c],
            samples: &b.samples[c],
            init_state: &b.init[c],
            x: xs.map(|x| &x[c][..]),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn batched_grads<S: Scalar>(
    l: &Layout,
    p: &GroupVecs<S>,
    b: &Batch<S>,
    scale: S,
    threads: usize,
    groups: [bool; 3],
    xs: Option<&[Vec<S>]>,
) -> (GroupVecs<S>, f64) {
    let steps = b.samples[0].len();
    let mut bg = BatchedGrads::<S>::new(l, b.obs.len() * steps, threads).unwrap();
    let mut g = GroupVecs::zeros(l);
    let opts = PassOptions {
        coefs: coefs(),
        scale,
        comm: CommGrad::Blocked,
        groups,
        reuse_x: xs.is_some(),
    };
    let s = bg
        .pass(l, p.bufs(), &seqs(b, xs), &opts, g.bufs_mut())
        .unwrap();
    (g, s.sum.loss.to_f64())
}

/// Compares the batched pass with the core's; returns the largest relative error of a
/// parameter tensor's gradient.
fn check<S: Scalar>(
    d: &ModelDims,
    mode: Mode,
    chunks: usize,
    steps: usize,
    seed: u64,
    tol: f64,
) -> f64 {
    let l = Layout::new(d, mode).unwrap();
    let mut p = GroupVecs::<S>::zeros(&l);
    init_params(&l, &InitConfig::BABYAI, seed, p.bufs_mut()).unwrap();
    // FiLM starts as the identity: give it weights, so its instruction path is compared too.
    let mut rng = Pcg32::new(seed ^ 0xf1);
    for e in l.entries().iter().filter(|e| e.name.contains(".film.")) {
        assert_eq!(e.group, Group::Other);
        for v in &mut p.other[e.range()] {
            *v = S::from_f64((rng.gen_f64() - 0.5) * 0.4);
        }
    }
    let b = batch::<S>(l.dims(), chunks, steps, seed + 1);
    let scale = S::ONE / S::from_f64((chunks * steps) as f64);
    let (gc, lc) = core_grads(&l, &p, &b, scale);
    let all = [true; 3];
    let ctx = format!(
        "{:?} film={} {} B={chunks} T={steps}",
        d.encoder,
        d.film,
        mode.name()
    );
    let (g1, l1) = batched_grads(&l, &p, &b, scale, 1, all, None);
    assert!(
        (l1 - lc).abs() <= tol * lc.abs().max(1.0),
        "{ctx}: loss {l1} vs {lc}"
    );
    let mut worst = 0.0f64;
    for e in l.entries() {
        let (a, c) = (&g1.group(e.group)[e.range()], &gc.group(e.group)[e.range()]);
        let (err, s) = rel_err(a, c);
        assert!(
            err <= tol,
            "{ctx}: {} rel err {err:e} (scale {s:e})",
            e.name
        );
        worst = worst.max(err);
    }
    // Any thread count: the same bits.
    for threads in [2usize, 3, 5] {
        let (g, lt) = batched_grads(&l, &p, &b, scale, threads, all, None);
        assert_eq!(
            lt.to_bits(),
            l1.to_bits(),
            "{ctx}: loss with {threads} threads"
        );
        for grp in Group::ALL {
            let same = g
                .group(grp)
                .iter()
                .zip(g1.group(grp))
                .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
            assert!(
                same,
                "{ctx}: {} group differs with {threads} threads",
                grp.name()
            );
        }
    }
    // Only some groups: exactly those, the others untouched (zero).
    for want in [
        [true, false, false],
        [false, true, true],
        [false, true, false],
    ] {
        let (g, _) = batched_grads(&l, &p, &b, scale, 2, want, None);
        for grp in Group::ALL {
            let on = want[grp as usize];
            let same = g
                .group(grp)
                .iter()
                .zip(g1.group(grp))
                .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
            if on {
                assert!(same, "{ctx}: {} group with {want:?}", grp.name());
            } else {
                assert!(
                    g.group(grp).iter().all(|v| *v == S::ZERO),
                    "{ctx}: {} group written though not asked for",
                    grp.name()
                );
            }
        }
    }
    worst
}

/// The worst f64 error of [`check`] over the RIM modes (`meta-rim`, `reversed`, `joint`) for
/// each case `(dims, chunks, steps, seed)`; mode `k` adds `k` to the case's seed.
fn worst_over_rim_modes(cases: &[(&ModelDims, usize, usize, u64)]) -> f64 {
    let mut worst = 0.0f64;
    for (k, mode) in [Mode::MetaRim, Mode::Reversed, Mode::Joint]
        .into_iter()
        .enumerate()
    {
        for &(d, chunks, steps, seed) in cases {
            worst = worst.max(check::<f64>(d, mode, chunks, steps, seed + k as u64, 1e-10));
        }
    }
    worst
}

/// `d` with LSTM modules in its RIM (memory state `[h | c]`).
fn lstm_cells(d: &ModelDims) -> ModelDims {
    d.with_cell(CellKind::Lstm)
}

#[test]
fn batched_pass_matches_core_lstm_cells_f64() {
    // The chunks start from random `[h | c]` states and about one step in five starts an
    // episode (the incoming `h` and `c` zeroed), so a mishandled cell state shows.
    let tiny = lstm_cells(&TINY);
    let bow = lstm_cells(&ModelDims {
        encoder: EncoderKind::Bow,
        ..TINY
    });
    let mut worst = worst_over_rim_modes(&[(&tiny, 6, 7, 700), (&bow, 9, 5, 710)]);
    let no_comm = ModelDims {
        rim: RimDims {
            communication: false,
            ..tiny.rim
        },
        ..tiny
    };
    worst = worst.max(check::<f64>(&no_comm, Mode::MetaRim, 5, 6, 720, 1e-10));
    let film = ModelDims { film: true, ..tiny };
    worst = worst.max(check::<f64>(&film, Mode::Joint, 6, 7, 721, 1e-10));
    eprintln!("LSTM cells, f64: worst rel err {worst:e}");
}

/// The whole policy's pass with the gated interpolation in the communication
/// (`comm_update = "interpolate"`), GRU and LSTM cells, every RIM mode.
#[test]
fn batched_pass_matches_core_with_interpolating_communication_f64() {
    let interpolating = |d: ModelDims| ModelDims {
        rim: RimDims {
            comm_update: CommUpdate::Interpolate,
            ..d.rim
        },
        ..d
    };
    let bow = interpolating(ModelDims {
        encoder: EncoderKind::Bow,
        film: true,
        ..TINY
    });
    let lstm = lstm_cells(&bow);
    let worst = worst_over_rim_modes(&[(&bow, 6, 7, 740), (&lstm, 5, 6, 750)]);
    eprintln!("interpolating communication, f64: worst rel err {worst:e}");
}

/// The whole policy's pass with the encoder's layer-normalised features (`feature_norm`), with
/// FiLM, every mode (the LSTM memory reads the same features).
#[test]
fn batched_pass_matches_core_with_feature_norm_f64() {
    let normed = ModelDims {
        encoder: EncoderKind::Bow,
        film: true,
        feature_norm: true,
        ..TINY
    };
    let mut worst = worst_over_rim_modes(&[(&normed, 6, 7, 760)]);
    worst = worst.max(check::<f64>(&normed, Mode::Lstm, 6, 7, 761, 1e-10));
    eprintln!("feature normalisation, f64: worst rel err {worst:e}");
}

#[test]
fn batched_pass_matches_core_lstm_cells_paper_f32() {
    let err = check::<f32>(&lstm_cells(&PAPER), Mode::MetaRim, 5, 8, 730, 2e-4);
    eprintln!("LSTM cells, Paper f32: worst rel err {err:e}");
}

#[test]
fn batched_pass_matches_core_f64() {
    let bow = ModelDims {
        encoder: EncoderKind::Bow,
        ..TINY
    };
    for (k, mode) in [Mode::MetaRim, Mode::Reversed, Mode::Joint, Mode::Lstm]
        .into_iter()
        .enumerate()
    {
        check::<f64>(&TINY, mode, 6, 7, 100 + k as u64, 1e-10);
        check::<f64>(&bow, mode, 9, 5, 200 + k as u64, 1e-10);
    }
    let no_comm = ModelDims {
        rim: metarim_core::nn::dims::RimDims {
            communication: false,
            ..TINY.rim
        },
        ..TINY
    };
    check::<f64>(&no_comm, Mode::MetaRim, 5, 6, 300, 1e-10);
    for (k, mode) in [Mode::MetaRim, Mode::Reversed, Mode::Joint, Mode::Lstm]
        .into_iter()
        .enumerate()
    {
        let film = ModelDims { film: true, ..TINY };
        check::<f64>(&film, mode, 6, 7, 500 + k as u64, 1e-10);
        check::<f64>(
            &ModelDims { film: true, ..bow },
            mode,
            5,
            6,
            600 + k as u64,
            1e-10,
        );
    }
}

#[test]
fn batched_pass_matches_core_paper_f32() {
    check::<f32>(&PAPER, Mode::MetaRim, 5, 8, 400, 2e-4);
    check::<f32>(&PAPER, Mode::Lstm, 3, 6, 401, 2e-4);
    let film = ModelDims {
        film: true,
        ..PAPER
    };
    check::<f32>(&film, Mode::MetaRim, 5, 8, 402, 2e-4);
}

#[test]
fn stored_memory_inputs_give_the_same_gradient_when_the_encoders_are_frozen() {
    let l = Layout::new(&TINY, Mode::MetaRim).unwrap();
    let mut p = GroupVecs::<f64>::zeros(&l);
    init_params(&l, &InitConfig::BABYAI, 5, p.bufs_mut()).unwrap();
    let (chunks, steps) = (5, 6);
    let b = batch::<f64>(&TINY, chunks, steps, 6);
    // The memory inputs as the acting policy computes them (encoder ++ instruction).
    let policy = Policy::new(&l, p.bufs()).unwrap();
    let d = *l.dims();
    let mut work = host::model::StepWork::new(&d);
    let xs: Vec<Vec<f64>> = (0..chunks)
        .map(|c| {
            let mut x = vec![];
            let mut instr = vec![0.0; d.instr_hidden];
            let mut state = b.init[c].clone();
            for t in 0..steps {
                if t == 0 || b.starts[c][t] {
                    work.encode_instruction(&policy, &b.tokens[c][t], &mut instr)
                        .unwrap();
                }
                work.step(&policy, &b.obs[c][t], &instr, &state).unwrap();
                x.extend_from_slice(&work.cache[..d.memory_input()]);
                state.copy_from_slice(&work.next);
            }
            x
        })
        .collect();
    let fast_only = [true, false, false];
    let scale = 1.0 / (chunks * steps) as f64;
    let (a, _) = batched_grads(&l, &p, &b, scale, 2, fast_only, None);
    let (r, _) = batched_grads(&l, &p, &b, scale, 2, fast_only, Some(&xs));
    assert!(a.fast.iter().any(|v| *v != 0.0));
    // The stored inputs come from the acting path (the core's per-episode instruction
    // encoder), the recomputed ones from the batched one: equal up to rounding.
    let (err, _) = rel_err(&r.fast, &a.fast);
    assert!(
        err <= 1e-10,
        "stored inputs changed the fast gradient: {err:e}"
    );
    // With the encoders trained, stored inputs are ignored (their caches are needed).
    let (full, _) = batched_grads(&l, &p, &b, scale, 2, [true; 3], Some(&xs));
    let (full_ref, _) = batched_grads(&l, &p, &b, scale, 2, [true; 3], None);
    assert_eq!(full.other, full_ref.other);
}

#[test]
fn bad_minibatches_are_errors() {
    let l = Layout::new(&TINY, Mode::MetaRim).unwrap();
    let p = GroupVecs::<f32>::zeros(&l);
    let b = batch::<f32>(&TINY, 3, 4, 1);
    let mut bg = BatchedGrads::<f32>::new(&l, 8, 2).unwrap();
    let mut g = GroupVecs::zeros(&l);
    let opts = PassOptions {
        coefs: coefs(),
        scale: 1.0,
        comm: CommGrad::Blocked,
        groups: [true; 3],
        reuse_x: false,
    };
    let err = bg
        .pass(&l, p.bufs(), &seqs(&b, None), &opts, g.bufs_mut())
        .unwrap_err();
    assert!(err.to_string().contains("capacity"), "{err}");
    let mut ragged = seqs(&b, None);
    ragged[1].samples = &b.samples[1][..3];
    let mut bg = BatchedGrads::<f32>::new(&l, 64, 2).unwrap();
    assert!(bg.pass(&l, p.bufs(), &ragged, &opts, g.bufs_mut()).is_err());
    let reuse = PassOptions {
        reuse_x: true,
        groups: [true, false, false],
        ..opts
    };
    assert!(bg
        .pass(&l, p.bufs(), &seqs(&b, None), &reuse, g.bufs_mut())
        .is_err());
    let other = Layout::new(&TINY, Mode::Lstm).unwrap();
    assert!(bg
        .pass(&other, p.bufs(), &seqs(&b, None), &opts, g.bufs_mut())
        .is_err());
}
