//! Parity of the batched RIM cell (`host::rim_batch`) with the core's per-sample cell
//! (`rim_sequence_forward` / `rim_sequence_backward`, i.e. `rim_step_forward` /
//! `rim_step_backward` looped over the steps and summed over the batch): states, selections,
//! initial-state gradients and every parameter gradient, for random weights and inputs.

use host::rim_batch::{grads_view, param_offsets, weights_view, RimBatch, Scalar};
use metarim_core::nn::dims::{CellKind, RimDims, PAPER};
use metarim_core::nn::rim::{
    rim_sequence_backward, rim_sequence_forward, sequence_scratch_len, state_len, step_cache_len,
    CommGrad,
};
use metarim_core::rng::Pcg32;

/// Small dimensions that exercise several input heads and widths that are not multiples of 8.
const SMALL: RimDims = RimDims {
    n_modules: 5,
    k_active: 3,
    hidden: 9,
    input: 13,
    d_k: 6,
    d_v: 11,
    in_heads: 2,
    c_heads: 3,
    c_k: 5,
    cell: CellKind::Gru,
    communication: true,
};

fn uniform<S: Scalar>(rng: &mut Pcg32, n: usize, scale: f64) -> Vec<S> {
    (0..n)
        .map(|_| S::from_f64((rng.gen_f32() as f64 * 2.0 - 1.0) * scale))
        .collect()
}

/// `max |a - b| / max |b|` over a tensor (normwise relative error), and `max |b|`.
fn rel_err<S: Scalar>(a: &[S], b: &[S]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.to_f64().abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x.to_f64() - y.to_f64()).abs()));
    (if scale > 0.0 { err / scale } else { err }, scale)
}

const NAMES: [&str; 9] = [
    "w_k", "w_v", "w_q", "rnn", "c_q", "c_k", "c_v", "c_g", "c_o",
];

/// Runs both paths and compares them; returns the flat gradient of the batched path.
fn check<S: Scalar>(
    d: &RimDims,
    batch: usize,
    steps: usize,
    mode: CommGrad,
    seed: u64,
    tol: f64,
) -> Vec<S> {
    let mut rng = Pcg32::new(seed);
    let nh = state_len(d);
    let (offs, total) = param_offsets(d);
    // Weights scaled so that attention scores spread (varied selections per sample and step).
    let params: Vec<S> = uniform(&mut rng, total, 0.4);
    let xs: Vec<S> = uniform(&mut rng, steps * batch * d.input, 1.0);
    let h0: Vec<S> = uniform(&mut rng, batch * nh, 1.0);
    let dhs: Vec<S> = uniform(&mut rng, steps * batch * nh, 1.0);
    let w = weights_view(d, &params).unwrap();

    // Core, one sample at a time, gradients summed over the batch.
    let mut g_core = vec![S::ZERO; total];
    let mut hs_core = vec![S::ZERO; steps * batch * nh];
    let mut act_core = vec![false; steps * batch * d.n_modules];
    let mut dh0_core = vec![S::ZERO; batch * nh];
    let cl = step_cache_len(d);
    let mut caches = vec![S::ZERO; steps * cl];
    let mut scratch = vec![S::ZERO; sequence_scratch_len(d)];
    for b in 0..batch {
        let mut xb = Vec::new();
        let mut dhb = Vec::new();
        for t in 0..steps {
            let r = t * batch + b;
            xb.extend_from_slice(&xs[r * d.input..][..d.input]);
            dhb.extend_from_slice(&dhs[r * nh..][..nh]);
        }
        let mut hb = vec![S::ZERO; steps * nh];
        let mut ab = vec![false; steps * d.n_modules];
        let h0b = &h0[b * nh..][..nh];
        rim_sequence_forward(
            &w,
            d,
            steps,
            &xb,
            h0b,
            &[],
            &mut hb,
            &mut [],
            &mut ab,
            &mut caches,
        )
        .unwrap();
        let mut g = grads_view(d, &mut g_core).unwrap();
        rim_sequence_backward(
            &w,
            d,
            mode,
            steps,
            &xb,
            h0b,
            &[],
            &hb,
            &[],
            &caches,
            &dhb,
            &[],
            None,
            &mut dh0_core[b * nh..][..nh],
            &mut [],
            &mut g,
            &mut scratch,
        )
        .unwrap();
        for t in 0..steps {
            let r = t * batch + b;
            hs_core[r * nh..][..nh].copy_from_slice(&hb[t * nh..][..nh]);
            act_core[r * d.n_modules..][..d.n_modules]
                .copy_from_slice(&ab[t * d.n_modules..][..d.n_modules]);
        }
    }

    // Batched.
    let mut rb = RimBatch::<S>::new(d, batch, steps).unwrap();
    rb.forward(&w, &xs, &h0).unwrap();
    let mut g_batch = vec![S::ZERO; total];
    let mut dh0 = vec![S::ZERO; batch * nh];
    {
        let mut g = grads_view(d, &mut g_batch).unwrap();
        rb.backward(&w, mode, &dhs, &mut dh0, &mut g).unwrap();
    }

    let ctx = format!("B={batch} T={steps} comm={} {mode:?}", d.communication);
    assert_eq!(rb.actives(), &act_core[..], "{ctx}: selections differ");
    // The selection must actually vary (else the masked paths are not exercised).
    let n_on = act_core.iter().filter(|a| **a).count();
    assert_eq!(n_on, steps * batch * d.k_active, "{ctx}: k per step");
    if batch >= 3 {
        let first = &act_core[..d.n_modules];
        assert!(
            act_core.chunks(d.n_modules).any(|c| c != first),
            "{ctx}: every sample and step selected the same modules"
        );
    }
    let (e, s) = rel_err(rb.hs(), &hs_core);
    assert!(s > 0.0 && e <= tol, "{ctx}: states rel err {e:e}");
    let (e, s) = rel_err(&dh0, &dh0_core);
    assert!(s > 0.0 && e <= tol, "{ctx}: dh0 rel err {e:e}");
    for (i, name) in NAMES.iter().enumerate() {
        let end = offs.get(i + 1).copied().unwrap_or(total);
        let r = offs[i]..end;
        if r.is_empty() {
            assert!(!d.communication && i >= 4, "{ctx}: {name} empty");
            continue;
        }
        let (e, s) = rel_err(&g_batch[r.clone()], &g_core[r]);
        assert!(s > 0.0, "{ctx}: gradient of {name} is identically zero");
        assert!(
            e <= tol,
            "{ctx}: gradient of {name} rel err {e:e} (scale {s:e})"
        );
    }
    g_batch
}

fn no_comm(d: &RimDims) -> RimDims {
    RimDims {
        communication: false,
        ..*d
    }
}

#[test]
fn batched_matches_core_f64() {
    for (k, batch) in [1usize, 3, 8].into_iter().enumerate() {
        let seed = 10 + k as u64;
        check::<f64>(&SMALL, batch, 5, CommGrad::Blocked, seed, 1e-10);
        check::<f64>(&no_comm(&SMALL), batch, 5, CommGrad::Blocked, seed, 1e-10);
        check::<f64>(&SMALL, batch, 5, CommGrad::Full, seed, 1e-10);
    }
}

#[test]
fn batched_matches_core_f32() {
    for (k, batch) in [1usize, 3, 8].into_iter().enumerate() {
        let seed = 20 + k as u64;
        check::<f32>(&SMALL, batch, 5, CommGrad::Blocked, seed, 1e-4);
        check::<f32>(&no_comm(&SMALL), batch, 5, CommGrad::Blocked, seed, 1e-4);
    }
}

#[test]
fn batched_matches_core_paper_dims() {
    // The benchmark's dimensions (6 x 64, d_v 256, 4 comm heads x 32), both scalar types.
    check::<f32>(&PAPER.rim, 3, 5, CommGrad::Blocked, 31, 1e-4);
    check::<f64>(&PAPER.rim, 8, 5, CommGrad::Blocked, 32, 1e-10);
    check::<f64>(&no_comm(&PAPER.rim), 1, 5, CommGrad::Blocked, 33, 1e-10);
}

#[test]
fn blocked_and_full_differ_with_communication() {
    // Guards the comparison above: the two modes must give different RNN gradients when
    // inactive modules' h~ are read as keys/values, else the Blocked test proves nothing.
    let blocked = check::<f64>(&SMALL, 3, 5, CommGrad::Blocked, 40, 1e-10);
    let full = check::<f64>(&SMALL, 3, 5, CommGrad::Full, 40, 1e-10);
    let (offs, _) = param_offsets(&SMALL);
    let rnn = offs[3]..offs[4];
    let diff = blocked[rnn.clone()]
        .iter()
        .zip(&full[rnn])
        .any(|(a, b)| (a - b).abs() > 1e-9);
    assert!(diff, "Blocked and Full gave the same RNN gradients");
}

#[test]
fn bad_dims_are_errors() {
    let lstm = RimDims {
        cell: CellKind::Lstm,
        ..SMALL
    };
    assert!(RimBatch::<f32>::new(&lstm, 2, 2).is_err());
    assert!(RimBatch::<f32>::new(&SMALL, 0, 2).is_err());
    let bad_k = RimDims {
        k_active: 6,
        ..SMALL
    };
    assert!(RimBatch::<f32>::new(&bad_k, 2, 2).is_err());
    let mut rb = RimBatch::<f32>::new(&SMALL, 2, 2).unwrap();
    let (_, total) = param_offsets(&SMALL);
    let p = vec![0.0f32; total];
    let w = weights_view(&SMALL, &p).unwrap();
    assert!(rb.forward(&w, &[0.0; 3], &[0.0; 90]).is_err());
    assert!(weights_view(&SMALL, &p[1..]).is_err());
}
