//! Parity of the batched RIM cell (`host::batch::rim`) with the core's per-sample cell
//! (`rim_step_forward` / `rim_step_backward` looped over each sequence's steps, the incoming state
//! zeroed and no gradient carried at episode starts, gradients summed over the batch): states,
//! selections, input gradients and every parameter gradient, for random weights, inputs and
//! episode starts, with the sequences split into shards in several ways.

mod common;

use common::rel_err;
use host::batch::rim::{
    even_bounds, grads_view, param_offsets, parity_cases, weights_view, RimBatch, RimScratch,
    Scalar,
};
use metarim_core::nn::dims::{CellKind, CommUpdate, RimDims, PAPER, RIM_ODD_WIDTHS};
use metarim_core::nn::rim::{
    rim_step_backward, rim_step_forward, scratch_len, state_len, step_cache_len, CommGrad,
};
use metarim_core::rng::Pcg32;

/// Core's parity sizes: several input heads, widths that are not multiples of 8.
const SMALL: RimDims = RIM_ODD_WIDTHS;

fn uniform<S: Scalar>(rng: &mut Pcg32, n: usize, scale: f64) -> Vec<S> {
    (0..n)
        .map(|_| S::from_f64((rng.gen_f32() as f64 * 2.0 - 1.0) * scale))
        .collect()
}

const NAMES: [&str; 9] = [
    "w_k", "w_v", "w_q", "rnn", "c_q", "c_k", "c_v", "c_g", "c_o",
];

/// The batched pass over `batch` sequences in `parts` shards: states, masks, dx, gradients.
fn batched<S: Scalar>(
    d: &RimDims,
    w: &metarim_core::nn::rim::RimWeights<'_, S>,
    (batch, steps, parts): (usize, usize, usize),
    (xs, h0, reset, dhs): (&[S], &[S], &[bool], &[S]),
    mode: CommGrad,
    total: usize,
) -> (Vec<S>, Vec<S>, Vec<S>, Vec<S>) {
    let nh = state_len(d);
    let bounds = even_bounds(batch, parts);
    let mut rb = RimBatch::<S>::new(d, batch * steps + 3, true).unwrap();
    let mut scratch: Vec<RimScratch<S>> = bounds
        .windows(2)
        .map(|b| RimScratch::new(d, b[1] - b[0]))
        .collect();
    {
        let shards = rb.shards(batch, steps, &bounds).unwrap();
        for ((mut sh, sc), b) in shards.into_iter().zip(&mut scratch).zip(bounds.windows(2)) {
            let (r0, r1) = (b[0] * steps, b[1] * steps);
            sh.x_mut().copy_from_slice(&xs[r0 * d.input..r1 * d.input]);
            sh.forward(w, &h0[b[0] * nh..b[1] * nh], &reset[r0..r1], sc)
                .unwrap();
            sh.dh_mut().copy_from_slice(&dhs[r0 * nh..r1 * nh]);
            sh.backward(w, mode, &reset[r0..r1], true, true, sc)
                .unwrap();
        }
    }
    let mut g = vec![S::ZERO; total];
    rb.weight_grads(&mut grads_view(d, &mut g).unwrap(), parts)
        .unwrap();
    (
        rb.h_out().to_vec(),
        rb.masks().to_vec(),
        rb.dx().to_vec(),
        g,
    )
}

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
    let n = d.n_modules;
    let (offs, total) = param_offsets(d);
    // Weights scaled so that attention scores spread (varied selections per sample and step).
    let params: Vec<S> = uniform(&mut rng, total, 0.4);
    let rows = batch * steps;
    let xs: Vec<S> = uniform(&mut rng, rows * d.input, 1.0);
    let h0: Vec<S> = uniform(&mut rng, batch * nh, 1.0);
    let dhs: Vec<S> = uniform(&mut rng, rows * nh, 1.0);
    // Episode starts: about one step in four, anywhere, step 0 included.
    let reset: Vec<bool> = (0..rows).map(|_| rng.below(4) == 0).collect();
    let w = weights_view(d, &params).unwrap();

    // Core, one sequence at a time, gradients summed over the batch.
    let mut g_core = vec![S::ZERO; total];
    let mut hs_core = vec![S::ZERO; rows * nh];
    let mut mask_core = vec![S::ZERO; rows * n];
    let mut dx_core = vec![S::ZERO; rows * d.input];
    let cl = step_cache_len(d);
    let mut caches = vec![S::ZERO; steps * cl];
    let mut hins = vec![S::ZERO; steps * nh];
    let mut scratch = vec![S::ZERO; scratch_len(d)];
    let mut active = vec![false; n];
    for b in 0..batch {
        for t in 0..steps {
            let r = b * steps + t;
            let (done, cur) = hins.split_at_mut(t * nh);
            let h_in = &mut cur[..nh];
            if reset[r] {
                h_in.fill(S::ZERO);
            } else if t == 0 {
                h_in.copy_from_slice(&h0[b * nh..][..nh]);
            } else {
                h_in.copy_from_slice(&hs_core[(r - 1) * nh..][..nh]);
            }
            let _ = done;
            rim_step_forward(
                &w,
                d,
                &xs[r * d.input..][..d.input],
                h_in,
                &[],
                &mut hs_core[r * nh..][..nh],
                &mut [],
                &mut active,
                &mut caches[t * cl..][..cl],
            )
            .unwrap();
            for (m, a) in mask_core[r * n..][..n].iter_mut().zip(&active) {
                *m = if *a { S::ONE } else { S::ZERO };
            }
        }
        let mut carry = vec![S::ZERO; nh];
        for t in (0..steps).rev() {
            let r = b * steps + t;
            let dh: Vec<S> = dhs[r * nh..][..nh]
                .iter()
                .zip(&carry)
                .map(|(a, c)| *a + *c)
                .collect();
            let mut dprev = vec![S::ZERO; nh];
            let mut g = grads_view(d, &mut g_core).unwrap();
            rim_step_backward(
                &w,
                d,
                mode,
                &xs[r * d.input..][..d.input],
                &hins[t * nh..][..nh],
                &[],
                &caches[t * cl..][..cl],
                &dh,
                &[],
                Some(&mut dx_core[r * d.input..][..d.input]),
                &mut dprev,
                &mut [],
                &mut g,
                &mut scratch,
            )
            .unwrap();
            carry = if reset[r] { vec![S::ZERO; nh] } else { dprev };
        }
    }

    let ctx = format!("B={batch} T={steps} comm={} {mode:?}", d.communication);
    // The selection must actually vary (else the masked paths are not exercised).
    let n_on = mask_core.iter().filter(|a| **a != S::ZERO).count();
    assert_eq!(n_on, rows * d.k_active, "{ctx}: k per step");
    if batch >= 3 {
        let first = &mask_core[..n];
        assert!(
            mask_core.chunks(n).any(|c| c != first),
            "{ctx}: every sample and step selected the same modules"
        );
    }
    let mut first: Option<Vec<S>> = None;
    for parts in [1usize, 2, batch] {
        let (hs, masks, dx, g_batch) = batched(
            d,
            &w,
            (batch, steps, parts),
            (&xs, &h0, &reset, &dhs),
            mode,
            total,
        );
        let ctx = format!("{ctx} shards={parts}");
        assert_eq!(masks, mask_core, "{ctx}: selections differ");
        let (e, s) = rel_err(&hs, &hs_core);
        assert!(s > 0.0 && e <= tol, "{ctx}: states rel err {e:e}");
        let (e, s) = rel_err(&dx, &dx_core);
        assert!(s > 0.0 && e <= tol, "{ctx}: dx rel err {e:e}");
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
        // Any split gives the same bits (the trainer's thread-count independence).
        let bits: Vec<S> = hs.iter().chain(&dx).chain(&g_batch).copied().collect();
        match &first {
            None => first = Some(bits),
            Some(f) => assert!(
                f.iter()
                    .zip(&bits)
                    .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits()),
                "{ctx}: results depend on the shard split"
            ),
        }
    }
    let (_, _, _, g) = batched(
        d,
        &w,
        (batch, steps, 1),
        (&xs, &h0, &reset, &dhs),
        mode,
        total,
    );
    g
}

fn no_comm(d: &RimDims) -> RimDims {
    RimDims {
        communication: false,
        ..*d
    }
}

/// [`check`] over `cases` (dims and communication gradient) at each batch size of `batches`
/// (the `k`-th with seed `seed0 + k`), 5 steps each.
fn check_all<S: Scalar>(cases: &[(RimDims, CommGrad)], batches: &[usize], seed0: u64, tol: f64) {
    for (k, &batch) in batches.iter().enumerate() {
        for (d, mode) in cases {
            check::<S>(d, batch, 5, *mode, seed0 + k as u64, tol);
        }
    }
}

#[test]
fn batched_matches_core_f64() {
    check_all::<f64>(&parity_cases(&SMALL), &[1, 3, 8], 10, 1e-10);
}

#[test]
fn batched_matches_core_f32() {
    check_all::<f32>(&parity_cases(&SMALL)[..2], &[1, 3, 8], 20, 1e-4);
}

fn interpolating(d: &RimDims) -> RimDims {
    RimDims {
        comm_update: CommUpdate::Interpolate,
        ..*d
    }
}

/// The gated interpolation (`comm_update = "interpolate"`), both gradient modes, both scalar
/// types (GRU cells; LSTM cells with it: `batched_parity.rs`).
#[test]
fn batched_matches_core_with_interpolating_communication() {
    for (k, batch) in [1usize, 3, 8].into_iter().enumerate() {
        let seed = 40 + k as u64;
        let d = interpolating(&SMALL);
        check::<f64>(&d, batch, 5, CommGrad::Blocked, seed, 1e-10);
        check::<f64>(&d, batch, 5, CommGrad::Full, seed, 1e-10);
        check::<f32>(&d, batch, 5, CommGrad::Blocked, seed, 1e-4);
    }
    check::<f64>(
        &interpolating(&PAPER.rim),
        3,
        5,
        CommGrad::Blocked,
        43,
        1e-10,
    );
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
    // LSTM cells are supported (their parity: host/tests/batched_parity.rs and the unit tests
    // of host/src/rim_batch.rs).
    let lstm = RimDims {
        cell: CellKind::Lstm,
        ..SMALL
    };
    assert!(RimBatch::<f32>::new(&lstm, 4, true).is_ok());
    assert!(RimBatch::<f32>::new(&SMALL, 0, true).is_err());
    let bad_k = RimDims {
        k_active: 6,
        ..SMALL
    };
    assert!(RimBatch::<f32>::new(&bad_k, 4, true).is_err());
    let (_, total) = param_offsets(&SMALL);
    let p = vec![0.0f32; total];
    let w = weights_view(&SMALL, &p).unwrap();
    let mut sc = RimScratch::new(&SMALL, 2);
    let mut rb = RimBatch::<f32>::new(&SMALL, 4, true).unwrap();
    let mut shards = rb.shards(2, 2, &[0, 2]).unwrap();
    let nh = state_len(&SMALL);
    assert!(
        shards[0]
            .forward(&w, &[0.0; 3], &[false; 4], &mut sc)
            .is_err(),
        "short h0"
    );
    assert!(
        shards[0]
            .forward(&w, &vec![0.0; 2 * nh], &[false; 3], &mut sc)
            .is_err(),
        "short resets"
    );
    let mut small = RimScratch::new(&SMALL, 1);
    assert!(
        shards[0]
            .forward(&w, &vec![0.0; 2 * nh], &[false; 4], &mut small)
            .is_err(),
        "scratch"
    );
    drop(shards);
    let mut fwd_only = RimBatch::<f32>::new(&SMALL, 4, false).unwrap();
    let mut shards = fwd_only.shards(2, 2, &[0, 2]).unwrap();
    shards[0]
        .forward(&w, &vec![0.0; 2 * nh], &[false; 4], &mut sc)
        .unwrap();
    assert!(shards[0]
        .backward(&w, CommGrad::Blocked, &[false; 4], false, true, &mut sc)
        .is_err());
    assert!(weights_view(&SMALL, &p[1..]).is_err());
}
