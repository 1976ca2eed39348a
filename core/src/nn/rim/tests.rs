//! Tests of the RIM cell: finite-difference gradient checks (production forward, and a
//! stop-gradient reference for `CommGrad::Blocked`), an independent reference forward,
//! structural properties, f32/f64 agreement, a parity example computed in plain Python, and
//! panic-freedom on arbitrary dimensions and buffer lengths.

use super::*;
use crate::nn::dims::{PAPER, TINY};
use crate::nn::gradcheck::{max_rel_error, uniform_vec, GRAD_TOL};
use crate::rng::Pcg32;
use proptest::prelude::*;
use std::vec::Vec;

/// Finite differences: `gradcheck::max_rel_error` with floor 1e-4 and tolerance 1e-6, as in
/// `ops`, but on a Richardson-extrapolated loss (see [`fd_errors`]) with step 5e-4. Measured: over
/// a 5-step recurrence a plain 1e-5 central difference is noisy at ~1e-10 absolute (the loss's
/// own roundoff; the same entry moved by ±1e-10 between h = 1e-5 .. 2e-6 while h = 3e-4 .. 1e-3
/// agreed with the analytic gradient to 1e-12), i.e. 1e-6 of the floor, and a plain 1e-4 step has
/// truncation errors up to ~6e-6 relative. Richardson removes the O(h^2) term, so a large step
/// (small roundoff) is accurate to O(h^4). Worst error seen over all gradient cases: ~1.1e-7
/// (3.3e-7 with step 2e-4, noise-dominated).
const FD_H: f64 = 5e-4;
const FD_FLOOR: f64 = 1e-4;
/// Points whose top-k null-attention margin is below this at any step are skipped: selection is
/// piecewise constant, and a finite-difference step (5e-4 on one entry) must not cross a boundary
/// (the brief asked for 1e-7, too close for any useful step; so the margin is wider and the loss
/// closures also assert that the selection did not change under each step).
const MARGIN: f64 = 1e-3;

fn dims(cell: CellKind, communication: bool, in_heads: usize) -> RimDims {
    RimDims {
        n_modules: 4,
        k_active: 2,
        hidden: 3,
        input: 4,
        d_k: 3,
        d_v: 2,
        in_heads,
        c_heads: 2,
        c_k: 2,
        cell,
        communication,
        comm_update: CommUpdate::Residual,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum P {
    Wk,
    Wv,
    Wq,
    Rnn,
    Cq,
    Ck,
    Cv,
    Cg,
    Co,
}

const PARAMS: [P; 9] = [
    P::Wk,
    P::Wv,
    P::Wq,
    P::Rnn,
    P::Cq,
    P::Ck,
    P::Cv,
    P::Cg,
    P::Co,
];

#[derive(Clone, Debug, PartialEq)]
struct Model<S> {
    t: [Vec<S>; 9],
}

impl<S: Real> Model<S> {
    fn zeros(d: &RimDims) -> Self {
        let c = rim_param_counts(d);
        let lens = [
            c.w_k, c.w_v, c.w_q, c.rnn, c.c_q, c.c_k, c.c_v, c.c_g, c.c_o,
        ];
        Model {
            t: lens.map(|n| std::vec![S::ZERO; n]),
        }
    }

    fn get(&self, p: P) -> &Vec<S> {
        &self.t[p as usize]
    }

    fn get_mut(&mut self, p: P) -> &mut Vec<S> {
        &mut self.t[p as usize]
    }

    fn weights(&self) -> RimWeights<'_, S> {
        RimWeights::from_parts(self.t.each_ref().map(Vec::as_slice))
    }

    fn grads(&mut self) -> RimGrads<'_, S> {
        RimGrads::from_parts(self.t.each_mut().map(Vec::as_mut_slice))
    }
}

impl Model<f64> {
    fn random(d: &RimDims, rng: &mut Pcg32, scale: f64) -> Self {
        let mut m = Self::zeros(d);
        for t in m.t.iter_mut() {
            *t = uniform_vec(rng, t.len(), scale);
        }
        m
    }

    fn to_f32(&self) -> Model<f32> {
        Model {
            t: self
                .t
                .clone()
                .map(|v| v.iter().map(|x| *x as f32).collect()),
        }
    }
}

fn dotv(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Inputs of a sequence and the loss coefficients: loss = sum_t <lh_t, h_t> + <lc_t, c_t>.
#[derive(Clone, Debug)]
struct Data {
    steps: usize,
    xs: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
    lh: Vec<f64>,
    lc: Vec<f64>,
}

impl Data {
    fn random(d: &RimDims, steps: usize, rng: &mut Pcg32) -> Self {
        Data {
            steps,
            xs: uniform_vec(rng, steps * d.input, 1.0),
            h0: uniform_vec(rng, state_len(d), 1.0),
            c0: uniform_vec(rng, cell_state_len(d), 1.0),
            lh: uniform_vec(rng, steps * state_len(d), 1.0),
            lc: uniform_vec(rng, steps * cell_state_len(d), 1.0),
        }
    }
}

struct Run<S> {
    hs: Vec<S>,
    cs: Vec<S>,
    actives: Vec<bool>,
    caches: Vec<S>,
}

fn run_fwd<S: Real>(
    m: &Model<S>,
    d: &RimDims,
    steps: usize,
    xs: &[S],
    h0: &[S],
    c0: &[S],
) -> Run<S> {
    let mut r = Run {
        hs: std::vec![S::ZERO; steps * state_len(d)],
        cs: std::vec![S::ZERO; steps * cell_state_len(d)],
        actives: std::vec![false; steps * d.n_modules],
        caches: std::vec![S::ZERO; steps * step_cache_len(d)],
    };
    rim_sequence_forward(
        &m.weights(),
        d,
        steps,
        xs,
        h0,
        c0,
        &mut r.hs,
        &mut r.cs,
        &mut r.actives,
        &mut r.caches,
    )
    .unwrap();
    r
}

fn run_data(m: &Model<f64>, d: &RimDims, data: &Data) -> Run<f64> {
    run_fwd(m, d, data.steps, &data.xs, &data.h0, &data.c0)
}

fn loss_of(run: &Run<f64>, data: &Data) -> f64 {
    dotv(&run.hs, &data.lh) + dotv(&run.cs, &data.lc)
}

struct Grads {
    model: Model<f64>,
    xs: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
}

fn run_bwd(m: &Model<f64>, d: &RimDims, mode: CommGrad, data: &Data, run: &Run<f64>) -> Grads {
    let mut g = Grads {
        model: Model::zeros(d),
        xs: std::vec![0.0; data.xs.len()],
        h0: std::vec![0.0; data.h0.len()],
        c0: std::vec![0.0; data.c0.len()],
    };
    let mut scratch = std::vec![f64::NAN; sequence_scratch_len(d)];
    rim_sequence_backward(
        &m.weights(),
        d,
        mode,
        data.steps,
        &data.xs,
        &data.h0,
        &data.c0,
        &run.hs,
        &run.cs,
        &run.caches,
        &data.lh,
        &data.lc,
        Some(&mut g.xs),
        &mut g.h0,
        &mut g.c0,
        &mut g.model.grads(),
        &mut scratch,
    )
    .unwrap();
    g
}

/// Smallest gap between the k-th and (k+1)-th smallest null attention over all steps.
fn min_margin<S: Real>(d: &RimDims, caches: &[S], steps: usize) -> f64 {
    if d.k_active >= d.n_modules {
        return f64::INFINITY;
    }
    let cl = step_cache_len(d);
    (0..steps)
        .map(|t| {
            let c = &caches[t * cl..(t + 1) * cl];
            let mut v: Vec<f64> = cache_null_attention(d, c)
                .unwrap()
                .iter()
                .map(|x| x.to_f64())
                .collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[d.k_active] - v[d.k_active - 1]
        })
        .fold(f64::INFINITY, f64::min)
}

// ---------------------------------------------------------------------------------------------
// An independent reference forward: explicit loops, exp-based softmaxes, sort-based selection,
// the module RNNs through ops::gru_forward / ops::lstm_forward. `detach` (the candidate states
// of a base run, `steps * N*H`) replaces inactive modules' h~ where communication reads them as
// keys/values: a stop-gradient, so finite differences of it give CommGrad::Blocked gradients.

struct RefOut {
    hs: Vec<f64>,
    cs: Vec<f64>,
    actives: Vec<bool>,
    hts: Vec<f64>,
}

fn mv(w: &[f64], rows: usize, cols: usize, v: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|r| (0..cols).map(|c| w[r * cols + c] * v[c]).sum())
        .collect()
}

fn sig(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

#[allow(clippy::needless_range_loop)] // index-style on purpose: an independent spelling
fn reference(m: &Model<f64>, d: &RimDims, data: &Data, detach: Option<&[f64]>) -> RefOut {
    let (n, hid, inp) = (d.n_modules, d.hidden, d.input);
    let (nh, dk, dv) = (d.in_heads, d.d_k, d.d_v);
    let (ch, ck) = (d.c_heads, d.c_k);
    let cw = ch * ck;
    let uw = nh * dv;
    let lstm = d.cell == CellKind::Lstm;
    let gates = if lstm { 4 } else { 3 };
    let per = rnn_module_len(d);
    let mut out = RefOut {
        hs: Vec::new(),
        cs: Vec::new(),
        actives: Vec::new(),
        hts: Vec::new(),
    };
    let mut h = data.h0.clone();
    let mut c = data.c0.clone();
    for t in 0..data.steps {
        let x = &data.xs[t * inp..(t + 1) * inp];
        let kx = mv(m.get(P::Wk), nh * dk, inp, x);
        let vx = mv(m.get(P::Wv), uw, inp, x);
        let mut null = std::vec![0.0; n];
        let mut us = Vec::new();
        for i in 0..n {
            let q = mv(
                &m.get(P::Wq)[i * nh * dk * hid..],
                nh * dk,
                hid,
                &h[i * hid..(i + 1) * hid],
            );
            let mut u = Vec::new();
            for j in 0..nh {
                let s: f64 = (0..dk).map(|e| q[j * dk + e] * kx[j * dk + e]).sum::<f64>()
                    / (dk as f64).sqrt();
                let z = 0f64.exp() + s.exp();
                let (p_null, p_x) = (0f64.exp() / z, s.exp() / z);
                null[i] += p_null / nh as f64;
                // The null row's value is 0.
                u.extend((0..dv).map(|e| p_x * vx[j * dv + e] + p_null * 0.0));
            }
            us.push(u);
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| null[*a].partial_cmp(&null[*b]).unwrap().then(a.cmp(b)));
        let mut act = std::vec![false; n];
        for i in &order[..d.k_active] {
            act[*i] = true;
        }
        let mut ht = std::vec![0.0; n * hid];
        let mut ct = std::vec![0.0; n * hid];
        for i in 0..n {
            let b = &m.get(P::Rnn)[i * per..(i + 1) * per];
            let gh = gates * hid;
            let (w_ih, rest) = b.split_at(gh * uw);
            let (w_hh, rest) = rest.split_at(gh * hid);
            let (b_ih, b_hh) = rest.split_at(gh);
            let hp = &h[i * hid..(i + 1) * hid];
            let p = ops::CellWeights::from_parts([w_ih, w_hh, b_ih, b_hh]);
            if lstm {
                let mut cache = std::vec![0.0; 5 * hid];
                ops::lstm_forward(
                    &p,
                    &us[i],
                    hp,
                    &c[i * hid..(i + 1) * hid],
                    &mut ht[i * hid..(i + 1) * hid],
                    &mut ct[i * hid..(i + 1) * hid],
                    &mut cache,
                );
            } else {
                let mut cache = std::vec![0.0; 4 * hid];
                ops::gru_forward(&p, &us[i], hp, &mut ht[i * hid..(i + 1) * hid], &mut cache);
            }
        }
        let mut h_new = std::vec![0.0; n * hid];
        let mut c_new = c.clone();
        let kv_src: Vec<f64> = (0..n * hid)
            .map(|e| match detach {
                Some(dt) if !act[e / hid] => dt[t * n * hid + e],
                _ => ht[e],
            })
            .collect();
        for i in 0..n {
            let hs = i * hid..(i + 1) * hid;
            if !act[i] {
                h_new[hs.clone()].copy_from_slice(&h[hs.clone()]);
                continue;
            }
            let mut hp: Vec<f64> = ht[hs.clone()].to_vec();
            if d.communication {
                let q = mv(&m.get(P::Cq)[i * cw * hid..], cw, hid, &ht[hs.clone()]);
                // Every module's communication keys or values (`which`) of its state.
                let per_module = |which: P| -> Vec<Vec<f64>> {
                    (0..n)
                        .map(|j| {
                            let w = &m.get(which)[j * cw * hid..];
                            mv(w, cw, hid, &kv_src[j * hid..(j + 1) * hid])
                        })
                        .collect()
                };
                let (ks, vs) = (per_module(P::Ck), per_module(P::Cv));
                let mut o = Vec::new();
                for hd in 0..ch {
                    let sc: Vec<f64> = (0..n)
                        .map(|j| {
                            (0..ck)
                                .map(|e| q[hd * ck + e] * ks[j][hd * ck + e])
                                .sum::<f64>()
                                / (ck as f64).sqrt()
                        })
                        .collect();
                    let z: f64 = sc.iter().map(|v| v.exp()).sum();
                    for e in 0..ck {
                        o.push((0..n).map(|j| sc[j].exp() / z * vs[j][hd * ck + e]).sum());
                    }
                }
                let g = mv(&m.get(P::Cg)[i * hid * cw..], hid, cw, &o);
                let th = mv(&m.get(P::Co)[i * hid * cw..], hid, cw, &o);
                for u in 0..hid {
                    let (gate, up) = (sig(g[u]), th[u].tanh());
                    hp[u] = match d.comm_update {
                        CommUpdate::Residual => hp[u] + gate * up,
                        CommUpdate::Interpolate => (1.0 - gate) * hp[u] + gate * up,
                    };
                }
            }
            h_new[hs.clone()].copy_from_slice(&hp);
            if lstm {
                c_new[hs.clone()].copy_from_slice(&ct[hs]);
            }
        }
        h = h_new;
        c = c_new;
        out.hs.extend_from_slice(&h);
        out.cs.extend_from_slice(&c);
        out.actives.extend_from_slice(&act);
        out.hts.extend_from_slice(&ht);
    }
    out
}

fn ref_loss(out: &RefOut, data: &Data) -> f64 {
    dotv(&out.hs, &data.lh) + dotv(&out.cs, &data.lc)
}

// ---------------------------------------------------------------------------------------------
// Gradient checks.

/// What a gradient check compares, per tensor: (name, value, analytic gradient).
type Checked = Vec<(String, Vec<f64>, Vec<f64>)>;

/// Sets up a random problem; `None` if a top-k margin is below [`MARGIN`].
struct Problem {
    d: RimDims,
    m: Model<f64>,
    data: Data,
    run: Run<f64>,
}

impl Problem {
    /// The production backward's gradients of the problem's loss under `mode`.
    fn grads(&self, mode: CommGrad) -> Grads {
        run_bwd(&self.m, &self.d, mode, &self.data, &self.run)
    }
}

fn problem(d: RimDims, steps: usize, seed: u64, scale: f64) -> Option<Problem> {
    let mut rng = Pcg32::new(seed);
    let m = Model::random(&d, &mut rng, scale);
    let data = Data::random(&d, steps, &mut rng);
    let run = run_data(&m, &d, &data);
    if min_margin(&d, &run.caches, steps) < MARGIN {
        return None;
    }
    Some(Problem { d, m, data, run })
}

/// The loss as a function of every checked input, with the selection asserted unchanged.
/// `detach`: use the stop-gradient reference (CommGrad::Blocked semantics).
fn loss_fn<'a>(pb: &'a Problem, detach: Option<&[f64]>) -> impl Fn(&Model<f64>, &Data) -> f64 + 'a {
    let detach = detach.map(|v| v.to_vec());
    move |m, data| match &detach {
        Some(dt) => {
            let out = reference(m, &pb.d, data, Some(dt));
            assert_eq!(
                out.actives, pb.run.actives,
                "selection flipped under a FD step"
            );
            ref_loss(&out, data)
        }
        None => {
            let run = run_data(m, &pb.d, data);
            assert_eq!(
                run.actives, pb.run.actives,
                "selection flipped under a FD step"
            );
            loss_of(&run, data)
        }
    }
}

/// Worst relative error per tensor between the analytic gradients `g` and (Richardson-extrapolated)
/// finite differences of `f`.
fn fd_errors(pb: &Problem, f: &dyn Fn(&Model<f64>, &Data) -> f64, g: &Grads) -> Vec<(String, f64)> {
    let mut checked: Checked = Vec::new();
    for p in PARAMS {
        checked.push((
            format!("{p:?}"),
            pb.m.get(p).clone(),
            g.model.get(p).clone(),
        ));
    }
    checked.push(("xs".into(), pb.data.xs.clone(), g.xs.clone()));
    checked.push(("h0".into(), pb.data.h0.clone(), g.h0.clone()));
    checked.push(("c0".into(), pb.data.c0.clone(), g.c0.clone()));
    let mut errs = Vec::new();
    for (k, (name, value, grad)) in checked.iter().enumerate() {
        assert!(value.len() <= 4096, "gradcheck buffer too small for {name}");
        assert_eq!(value.len(), grad.len());
        let eval = |v: &[f64]| {
            let mut m = pb.m.clone();
            let mut data = pb.data.clone();
            match k {
                0..=8 => *m.get_mut(PARAMS[k]) = v.to_vec(),
                9 => data.xs = v.to_vec(),
                10 => data.h0 = v.to_vec(),
                _ => data.c0 = v.to_vec(),
            }
            f(&m, &data)
        };
        // F(v) = (8 f(x0 + (v - x0) / 2) - f(v)) / 3: the central difference of F with step h is
        // (4 C_f(h/2) - C_f(h)) / 3, Richardson's extrapolation of f's central differences.
        let err = max_rel_error(
            |v| {
                let half: Vec<f64> = v
                    .iter()
                    .zip(value)
                    .map(|(a, b)| b + (a - b) / 2.0)
                    .collect();
                (8.0 * eval(&half) - eval(v)) / 3.0
            },
            value,
            grad,
            FD_H,
            FD_FLOOR,
        )
        .0;
        errs.push((name.clone(), err));
    }
    errs
}

/// Full gradient check of one random problem in one mode.
fn check_gradients(d: RimDims, mode: CommGrad, seed: u64) -> Result<(), TestCaseError> {
    let Some(pb) = problem(d, 5, seed, 0.9) else {
        return Err(TestCaseError::reject("near a top-k tie"));
    };
    check_problem(&pb, mode)
}

/// Gradient check of one problem in one mode.
fn check_problem(pb: &Problem, mode: CommGrad) -> Result<(), TestCaseError> {
    let d = pb.d;
    // The production forward agrees with the independent reference.
    let r = reference(&pb.m, &pb.d, &pb.data, None);
    prop_assert_eq!(&r.actives, &pb.run.actives);
    prop_assert!(max_abs_diff(&r.hs, &pb.run.hs) < 1e-12);
    prop_assert!(max_abs_diff(&r.cs, &pb.run.cs) < 1e-12);
    let g = pb.grads(mode);
    let detach = (mode == CommGrad::Blocked && d.communication).then_some(&r.hts[..]);
    let f = loss_fn(pb, detach);
    for (name, err) in fd_errors(pb, &f, &g) {
        prop_assert!(
            err < GRAD_TOL,
            "{:?} {:?}: {} rel error {}",
            d,
            mode,
            name,
            err
        );
    }
    Ok(())
}

/// Both gradient modes (one without communication, where they coincide) for one problem.
fn check_all(
    cell: CellKind,
    comm: bool,
    comm_update: CommUpdate,
    in_heads: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let modes: &[CommGrad] = if comm {
        &[CommGrad::Blocked, CommGrad::Full]
    } else {
        &[CommGrad::Blocked]
    };
    for &mode in modes {
        let d = RimDims {
            comm_update,
            ..dims(cell, comm, in_heads)
        };
        check_gradients(d, mode, seed)?;
    }
    Ok(())
}

/// One property test per cell and communication setting: 32 cases each; `in_heads` is drawn
/// from {1, 2} per case (both are drawn with probability 1 - 2^-31), the communication modes
/// are looped over.
macro_rules! gradient_properties {
    ($($name:ident: $cell:expr, $comm:expr, $update:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(seed in any::<u64>(), heads in 1usize..3) {
                    check_all($cell, $comm, $update, heads, seed)?;
                }
            )*
        }
    };
}

gradient_properties! {
    gradients_gru_no_comm: CellKind::Gru, false, CommUpdate::Residual;
    gradients_gru_comm: CellKind::Gru, true, CommUpdate::Residual;
    gradients_gru_comm_interpolate: CellKind::Gru, true, CommUpdate::Interpolate;
    gradients_lstm_no_comm: CellKind::Lstm, false, CommUpdate::Residual;
    gradients_lstm_comm: CellKind::Lstm, true, CommUpdate::Residual;
    gradients_lstm_comm_interpolate: CellKind::Lstm, true, CommUpdate::Interpolate;
}

/// First seed at or after `seed` whose problem is away from ties.
fn clean_problem(d: RimDims, steps: usize, mut seed: u64, scale: f64) -> Problem {
    loop {
        if let Some(pb) = problem(d, steps, seed, scale) {
            return pb;
        }
        seed += 1;
    }
}

/// A clean 5-step problem (two input heads, scale 0.9) for each cell kind, GRU then LSTM, with or
/// without communication: the cases of the tests that hold for every cell.
fn clean_problem_per_cell(communication: bool, seed: u64) -> [Problem; 2] {
    [CellKind::Gru, CellKind::Lstm]
        .map(|cell| clean_problem(dims(cell, communication, 2), 5, seed, 0.9))
}

/// The gradient check is not vacuous: corrupting one entry of any gradient (parameters and
/// inputs) by a small relative amount makes it fail, and CommGrad::Blocked gradients (not the
/// exact derivative) fail the check against the plain forward.
#[test]
fn gradient_check_catches_wrong_gradients() {
    for pb in clean_problem_per_cell(true, 100) {
        let g = pb.grads(CommGrad::Full);
        let f = loss_fn(&pb, None);
        let base = fd_errors(&pb, &f, &g);
        assert!(base.iter().all(|(_, e)| *e < GRAD_TOL), "{base:?}");
        for k in 0..12 {
            let mut bad = Grads {
                model: g.model.clone(),
                xs: g.xs.clone(),
                h0: g.h0.clone(),
                c0: g.c0.clone(),
            };
            let v = match k {
                0..=8 => bad.model.get_mut(PARAMS[k]),
                9 => &mut bad.xs,
                10 => &mut bad.h0,
                _ => &mut bad.c0,
            };
            if v.is_empty() {
                continue;
            }
            let i = (k * 7) % v.len();
            v[i] += 1e-3 * v[i].abs().max(1e-2);
            let errs = fd_errors(&pb, &f, &bad);
            assert!(
                errs[k].1 > GRAD_TOL,
                "corrupted {} not caught: {errs:?}",
                errs[k].0
            );
        }
        // Blocked gradients differ from the exact ones (inactive modules' h~ are read as keys).
        let gb = pb.grads(CommGrad::Blocked);
        let errs = fd_errors(&pb, &f, &gb);
        let rnn = errs.iter().find(|(n, _)| n == "Rnn").unwrap().1;
        assert!(
            rnn > GRAD_TOL,
            "Blocked should not match the exact derivative: {errs:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Structural properties.

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Inactive modules keep h (and c) bit-exactly; exactly k modules are active each step.
    #[test]
    fn inactive_modules_keep_state_bit_exactly(seed in any::<u64>(), lstm in any::<bool>(),
                                               comm in any::<bool>(), heads in 1usize..3) {
        let cell = if lstm { CellKind::Lstm } else { CellKind::Gru };
        let d = dims(cell, comm, heads);
        let mut rng = Pcg32::new(seed);
        let m = Model::random(&d, &mut rng, 1.5);
        let data = Data::random(&d, 6, &mut rng);
        let run = run_data(&m, &d, &data);
        let (n, hid) = (d.n_modules, d.hidden);
        for t in 0..data.steps {
            let act = &run.actives[t * n..(t + 1) * n];
            prop_assert_eq!(act.iter().filter(|a| **a).count(), d.k_active);
            for i in (0..n).filter(|i| !act[*i]) {
                let now = (t * n + i) * hid..(t * n + i + 1) * hid;
                let (hp, cp) = if t == 0 {
                    (&data.h0[i * hid..(i + 1) * hid], data.c0.get(i * hid..(i + 1) * hid))
                } else {
                    let prev = ((t - 1) * n + i) * hid..((t - 1) * n + i + 1) * hid;
                    (&run.hs[prev.clone()], run.cs.get(prev))
                };
                for (a, b) in run.hs[now.clone()].iter().zip(hp) {
                    prop_assert_eq!(a.to_bits(), b.to_bits());
                }
                if lstm {
                    for (a, b) in run.cs[now].iter().zip(cp.unwrap()) {
                        prop_assert_eq!(a.to_bits(), b.to_bits());
                    }
                }
            }
        }
    }

    /// With k = N every module is active and the RIM is N independent cells (ops::gru_forward /
    /// ops::lstm_forward per module, in the reference) plus the communication block.
    #[test]
    fn all_active_equals_independent_cells_plus_comm(seed in any::<u64>(), lstm in any::<bool>(),
                                                     comm in any::<bool>(), heads in 1usize..3) {
        let cell = if lstm { CellKind::Lstm } else { CellKind::Gru };
        let mut d = dims(cell, comm, heads);
        d.k_active = d.n_modules;
        let mut rng = Pcg32::new(seed);
        let m = Model::random(&d, &mut rng, 1.0);
        let data = Data::random(&d, 5, &mut rng);
        let run = run_data(&m, &d, &data);
        prop_assert!(run.actives.iter().all(|a| *a));
        let r = reference(&m, &d, &data, None);
        prop_assert!(max_abs_diff(&run.hs, &r.hs) < 1e-12);
        prop_assert!(max_abs_diff(&run.cs, &r.cs) < 1e-12);
        if !comm {
            // Independence: changing module j's RNN changes module j only, bit-exactly.
            let j = (seed % d.n_modules as u64) as usize;
            let mut m2 = m.clone();
            for v in &mut m2.get_mut(P::Rnn)[rnn_module_range(&d, j)] {
                *v += 0.25;
            }
            let run2 = run_data(&m2, &d, &data);
            let hid = d.hidden;
            for (e, (a, b)) in run.hs.iter().zip(&run2.hs).enumerate() {
                let module = (e / hid) % d.n_modules;
                if module != j {
                    prop_assert_eq!(a.to_bits(), b.to_bits());
                }
            }
            prop_assert!(max_abs_diff(&run.hs, &run2.hs) > 0.0);
        }
    }

    /// Permuting the modules (with their weights and states) permutes outputs and selection.
    #[test]
    fn module_permutation_equivariance(seed in any::<u64>(), lstm in any::<bool>(),
                                       comm in any::<bool>(), heads in 1usize..3) {
        let cell = if lstm { CellKind::Lstm } else { CellKind::Gru };
        let d = dims(cell, comm, heads);
        let pb = problem(d, 5, seed, 1.0);
        prop_assume!(pb.is_some());
        let pb = pb.unwrap();
        let n = d.n_modules;
        let mut rng = Pcg32::new(seed ^ 0x5eed);
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.below(i as u32 + 1) as usize);
        }
        // new module p = old module perm[p]
        let permute = |v: &[f64], blocks: usize| -> Vec<f64> {
            if v.is_empty() {
                return Vec::new();
            }
            let per = v.len() / blocks;
            let groups = v.len() / (per * n);
            let mut out = Vec::new();
            for g in 0..groups {
                for p in &perm {
                    let s = (g * n + p) * per;
                    out.extend_from_slice(&v[s..s + per]);
                }
            }
            out
        };
        let mut m2 = pb.m.clone();
        for p in [P::Wq, P::Rnn, P::Cq, P::Ck, P::Cv, P::Cg, P::Co] {
            *m2.get_mut(p) = permute(pb.m.get(p), n);
        }
        let mut data2 = pb.data.clone();
        data2.h0 = permute(&pb.data.h0, n);
        data2.c0 = permute(&pb.data.c0, n);
        let run2 = run_data(&m2, &d, &data2);
        let steps = pb.data.steps;
        prop_assert_eq!(run2.actives, permute_bools(&pb.run.actives, &perm, steps));
        prop_assert!(max_abs_diff(&run2.hs, &permute(&pb.run.hs, n * steps)) < 1e-12);
        prop_assert!(max_abs_diff(&run2.cs, &permute(&pb.run.cs, n * steps)) < 1e-12);
    }

    /// CommGrad::Blocked: modules never active in a sequence get exactly zero gradient on their
    /// RNN (fast) weights and their queries; CommGrad::Full with communication gives them some.
    #[test]
    fn never_active_modules_get_zero_rnn_gradients(seed in any::<u64>(), lstm in any::<bool>(),
                                                   comm in any::<bool>()) {
        let cell = if lstm { CellKind::Lstm } else { CellKind::Gru };
        let mut d = dims(cell, comm, 1);
        d.k_active = 1;
        let mut rng = Pcg32::new(seed);
        let m = Model::random(&d, &mut rng, 1.0);
        let data = Data::random(&d, 5, &mut rng);
        let run = run_data(&m, &d, &data);
        let n = d.n_modules;
        let never: Vec<usize> = (0..n)
            .filter(|i| (0..data.steps).all(|t| !run.actives[t * n + i]))
            .collect();
        prop_assume!(!never.is_empty());
        let g = run_bwd(&m, &d, CommGrad::Blocked, &data, &run);
        let q = query_width(&d) * d.hidden;
        for &i in &never {
            prop_assert!(g.model.get(P::Rnn)[rnn_module_range(&d, i)].iter().all(|v| *v == 0.0));
            prop_assert!(g.model.get(P::Wq)[i * q..(i + 1) * q].iter().all(|v| *v == 0.0));
        }
        // Active modules do get gradient (the test can fail).
        let ever = (0..n).find(|i| !never.contains(i)).unwrap();
        prop_assert!(g.model.get(P::Rnn)[rnn_module_range(&d, ever)].iter().any(|v| *v != 0.0));
        if comm {
            let gf = run_bwd(&m, &d, CommGrad::Full, &data, &run);
            prop_assert!(never.iter().all(|&i| gf.model.get(P::Rnn)[rnn_module_range(&d, i)]
                .iter()
                .any(|v| *v != 0.0)));
        }
    }

    /// f32 and f64 forwards agree to 1e-5 (max-norm relative per step) with moderate weights.
    #[test]
    fn f32_matches_f64(seed in any::<u64>(), lstm in any::<bool>(), comm in any::<bool>(),
                       heads in 1usize..3) {
        let cell = if lstm { CellKind::Lstm } else { CellKind::Gru };
        let d = dims(cell, comm, heads);
        let pb = problem(d, 5, seed, 0.5);
        prop_assume!(pb.is_some());
        let pb = pb.unwrap();
        let m32 = pb.m.to_f32();
        let f = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let run32 = run_fwd(&m32, &d, 5, &f(&pb.data.xs), &f(&pb.data.h0), &f(&pb.data.c0));
        prop_assert_eq!(&run32.actives, &pb.run.actives);
        let nh = state_len(&d);
        for (a, b) in [(&run32.hs, &pb.run.hs), (&run32.cs, &pb.run.cs)] {
            for t in 0..a.len() / nh.max(1) {
                let b = &b[t * nh..(t + 1) * nh];
                let a: Vec<f64> = a[t * nh..(t + 1) * nh].iter().map(|x| *x as f64).collect();
                let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                prop_assert!(max_abs_diff(&a, b) <= 1e-5 * scale, "step {}", t);
            }
        }
    }
}

fn permute_bools(v: &[bool], perm: &[usize], steps: usize) -> Vec<bool> {
    let n = perm.len();
    (0..steps)
        .flat_map(|t| perm.iter().map(move |p| v[t * n + p]))
        .collect()
}

/// Equal null attention everywhere (zero queries): the lower module indices win.
#[test]
fn ties_go_to_lower_index() {
    let d = dims(CellKind::Gru, true, 2);
    let mut rng = Pcg32::new(9);
    let mut m = Model::random(&d, &mut rng, 1.0);
    m.get_mut(P::Wq).iter_mut().for_each(|v| *v = 0.0);
    let data = Data::random(&d, 3, &mut rng);
    let run = run_data(&m, &d, &data);
    for t in 0..3 {
        assert_eq!(&run.actives[t * 4..t * 4 + 4], &[true, true, false, false]);
    }
    // NaN null attention ranks last; still exactly k active.
    let mut null = [0.3, f64::NAN, 0.1, 0.3];
    let (mut mask, mut act) = ([0.0; 4], [false; 4]);
    select_top_k(&null, 2, &mut mask, &mut act);
    assert_eq!(act, [true, false, true, false]);
    null = [f64::NAN; 4];
    select_top_k(&null, 3, &mut mask, &mut act);
    assert_eq!(act, [true, true, true, false]);
    assert_eq!(mask, [1.0, 1.0, 1.0, 0.0]);
}

/// Without communication, both gradient modes are the same computation.
#[test]
fn comm_grad_modes_agree_without_communication() {
    for pb in clean_problem_per_cell(false, 7) {
        let a = pb.grads(CommGrad::Blocked);
        let b = pb.grads(CommGrad::Full);
        assert_eq!(a.model, b.model);
        assert_eq!((a.xs, a.h0, a.c0), (b.xs, b.h0, b.c0));
    }
}

// ---------------------------------------------------------------------------------------------
// Parity with an independent plain-Python implementation of the RIM cell as docs/DESIGN.md ("The
// RIM cell") states it (math module only; PyTorch was not available). Weights: tensor number
// `tk` in the order w_k, w_v, w_q, rnn, c_q, c_k, c_v, c_g, c_o, element `e`:
// 0.5 sin(1.3 e + 0.7 tk + 0.1); x_e = sin(0.9 e + 0.3);
// h0_e = 0.5 cos(0.4 e + 0.2); c0_e = 0.5 sin(0.6 e - 0.1). The script:
//
// def run(N,K,H,I,dk,dv,nh,ch,ck,cell,comm):
//     G = 3 if cell=='gru' else 4; U = nh*dv; C = ch*ck
//     def gen(n, tk): return [0.5*math.sin(1.3*e+0.7*tk+0.1) for e in range(n)]
//     wk=gen(nh*dk*I,0); wv=gen(U*I,1); wq=gen(N*nh*dk*H,2); per=G*H*U+G*H*H+2*G*H
//     rnn=gen(N*per,3); cq=gen(N*C*H,4); ckw=gen(N*C*H,5); cv=gen(N*C*H,6)
//     cg=gen(N*H*C,7); co=gen(N*H*C,8)
//     x=[math.sin(0.9*e+0.3) for e in range(I)]; h=[0.5*math.cos(0.4*e+0.2) for e in range(N*H)]
//     c=[0.5*math.sin(0.6*e-0.1) for e in range(N*H)] if cell=='lstm' else []
//     def mv(w, off, rows, cols, v):
//         return [sum(w[off+r*cols+q]*v[q] for q in range(cols)) for r in range(rows)]
//     kx=mv(wk,0,nh*dk,I,x); vx=mv(wv,0,U,I,x); null=[]; us=[]
//     for i in range(N):
//         q=mv(wq,i*nh*dk*H,nh*dk,H,h[i*H:(i+1)*H]); nsum=0; u=[]
//         for j in range(nh):
//             s=sum(q[j*dk+e]*kx[j*dk+e] for e in range(dk))/math.sqrt(dk)
//             z=math.exp(0)+math.exp(s); nsum+=1/z; u+=[math.exp(s)/z*vx[j*dv+e] for e in range(dv)]
//         null.append(nsum/nh); us.append(u)
//     order=sorted(range(N), key=lambda i:(null[i],i)); act=[i in order[:K] for i in range(N)]
//     # per module: PyTorch GRUCell/LSTMCell equations on (us[i], h_i[, c_i]) -> ht[i] (, ct[i])
//     # active i: Q=Wcq_i ht_i, K_m=Wck_m ht_m, V_m=Wcv_m ht_m (all m); per head softmax over m of
//     # Q.K_m/sqrt(ck); o=concat sum_m p_m V_m; h'=ht_i+sig(Wcg_i o)*tanh(Wco_i o); c'=ct_i
//     # inactive i: h, c unchanged
// run(3,2,2,3,2,2,2,2,2,'gru',True); run(3,2,2,3,2,2,2,2,2,'lstm',True)
// run(3,1,2,3,2,2,1,2,2,'gru',False)

fn parity_case(d: RimDims) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    let mut m = Model::<f64>::zeros(&d);
    for (tk, t) in m.t.iter_mut().enumerate() {
        for (e, v) in t.iter_mut().enumerate() {
            *v = 0.5 * (1.3 * e as f64 + 0.7 * tk as f64 + 0.1).sin();
        }
    }
    let x: Vec<f64> = (0..d.input).map(|e| (0.9 * e as f64 + 0.3).sin()).collect();
    let h: Vec<f64> = (0..state_len(&d))
        .map(|e| 0.5 * (0.4 * e as f64 + 0.2).cos())
        .collect();
    let c: Vec<f64> = (0..cell_state_len(&d))
        .map(|e| 0.5 * (0.6 * e as f64 - 0.1).sin())
        .collect();
    let run = run_fwd(&m, &d, 1, &x, &h, &c);
    (run.hs, run.cs, run.actives)
}

#[test]
fn parity_with_python_reference() {
    let base = RimDims {
        n_modules: 3,
        k_active: 2,
        hidden: 2,
        input: 3,
        d_k: 2,
        d_v: 2,
        in_heads: 2,
        c_heads: 2,
        c_k: 2,
        cell: CellKind::Gru,
        communication: true,
        comm_update: CommUpdate::Residual,
    };
    let close = |a: &[f64], b: &[f64]| assert!(max_abs_diff(a, b) < 1e-12, "{a:?} vs {b:?}");

    let (h, _, act) = parity_case(base);
    assert_eq!(act, [true, false, true]);
    close(
        &h,
        &[
            0.2250943781141533,
            0.06949141877541905,
            0.2701511529340699,
            0.08498357145012041,
            -0.05734960406924749,
            -0.32584749628139625,
        ],
    );

    let (h, c, act) = parity_case(RimDims {
        cell: CellKind::Lstm,
        ..base
    });
    assert_eq!(act, [true, false, true]);
    close(
        &h,
        &[
            -0.20422054710168225,
            0.20485032004979592,
            0.2701511529340699,
            0.08498357145012041,
            0.0726181893319238,
            -0.031032192163490364,
        ],
    );
    close(
        &c,
        &[
            -0.3424372871658645,
            0.5151213839724803,
            0.44560368003071765,
            0.49583240522623434,
            0.2119865858771916,
            -0.051341580547498086,
        ],
    );

    let (h, _, act) = parity_case(RimDims {
        k_active: 1,
        in_heads: 1,
        communication: false,
        ..base
    });
    assert_eq!(act, [true, false, false]);
    close(
        &h,
        &[
            0.473493395253366,
            0.3751349424115868,
            0.2701511529340699,
            0.08498357145012041,
            -0.11360104734654355,
            -0.2942505586276729,
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Sizes, errors, panic-freedom.

#[test]
fn preset_sizes() {
    let p = PAPER.rim;
    let c = rim_param_counts(&p);
    assert_eq!(c.w_k, 64 * 192);
    assert_eq!(c.w_v, 256 * 192);
    assert_eq!(c.w_q, 6 * 64 * 64);
    assert_eq!(c.rnn_per_module, 3 * 64 * 256 + 3 * 64 * 64 + 2 * 3 * 64);
    assert_eq!(c.c_q, 6 * 128 * 64);
    assert_eq!(
        rnn_module_range(&p, 2),
        2 * c.rnn_per_module..3 * c.rnn_per_module
    );
    for (name, d) in [("PAPER", PAPER.rim), ("TINY", TINY.rim)] {
        let c = rim_param_counts(&d);
        std::println!(
            "{name}: params fast {} slow {} total {}; step cache {}; scratch {}; sequence scratch {}",
            c.fast(),
            c.slow(),
            c.total(),
            step_cache_len(&d),
            scratch_len(&d),
            sequence_scratch_len(&d)
        );
        assert!(check_dims(&d).is_ok());
    }
    // mask, null, kx, vx, q, ax, u, rnn | ht, cq/ck/cv, p, o, gate/tanh
    assert_eq!(
        step_cache_len(&TINY.rim),
        (4 + 4 + 8 + 8 + 32 + 4 + 32 + 4 * 32) + (32 + 3 * 32 + 4 * 2 * 4 + 32 + 2 * 32)
    );
}

#[test]
fn short_buffers_and_bad_dims_are_errors() {
    let d = dims(CellKind::Lstm, true, 2);
    let mut rng = Pcg32::new(3);
    let m = Model::random(&d, &mut rng, 1.0);
    let nh = state_len(&d);
    let x = std::vec![0.5; d.input];
    let h = std::vec![0.1; nh];
    let (mut ho, mut co) = (std::vec![0.0; nh], std::vec![0.0; nh]);
    let mut act = std::vec![false; 4];
    let mut cache = std::vec![0.0; step_cache_len(&d)];
    // Only the weights, dims and incoming cell state vary below.
    let mut forward = |w: &RimWeights<'_, f64>, dims: &RimDims, c_prev: &[f64]| {
        rim_step_forward(
            w, dims, &x, &h, c_prev, &mut ho, &mut co, &mut act, &mut cache,
        )
    };
    assert_eq!(forward(&m.weights(), &d, &h), Ok(()));
    assert_eq!(
        forward(&m.weights(), &d, &h[..nh - 1]),
        Err(Error::BufferTooSmall {
            needed: nh,
            got: nh - 1
        })
    );
    let mut w = m.weights();
    w.c_o = &w.c_o[1..];
    let e = forward(&w, &d, &h);
    assert!(matches!(e, Err(Error::BufferTooSmall { .. })));
    for bad in [
        RimDims { k_active: 0, ..d },
        RimDims { k_active: 5, ..d },
        RimDims { n_modules: 0, ..d },
        RimDims { d_k: 0, ..d },
        RimDims { c_heads: 0, ..d },
    ] {
        let e = forward(&m.weights(), &bad, &h);
        assert!(matches!(e, Err(Error::BadDims { .. })), "{bad:?}: {e:?}");
    }
    // Huge dimensions saturate into an error instead of overflowing.
    let huge = RimDims {
        hidden: usize::MAX / 2,
        input: usize::MAX / 3,
        ..d
    };
    let e = forward(&m.weights(), &huge, &h);
    assert!(matches!(e, Err(Error::BufferTooSmall { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary small dimensions, buffer lengths (possibly short) and non-finite values: every
    /// entry point returns Ok or Err, never panics.
    #[test]
    fn never_panics(dim in proptest::collection::vec(0usize..4, 11), lens in proptest::collection::vec(0usize..400, 24),
                    fill in prop_oneof![Just(0.5f64), Just(f64::NAN), Just(f64::INFINITY), Just(-3.0)],
                    lstm in any::<bool>(), comm in any::<bool>(), full in any::<bool>()) {
        let d = RimDims {
            n_modules: dim[0],
            k_active: dim[1],
            hidden: dim[2],
            input: dim[3],
            d_k: dim[4],
            d_v: dim[5],
            in_heads: dim[6],
            c_heads: dim[7],
            c_k: dim[8],
            cell: if lstm { CellKind::Lstm } else { CellKind::Gru },
            communication: comm,
            comm_update: CommUpdate::Residual,
        };
        let mode = if full { CommGrad::Full } else { CommGrad::Blocked };
        let v = |i: usize| std::vec![fill; lens[i]];
        let ws: Vec<Vec<f64>> = (0..9).map(v).collect();
        let w = RimWeights::from_parts(core::array::from_fn(|i| &ws[i][..]));
        let (x, h, c) = (v(9), v(10), v(11));
        let (mut ho, mut co, mut cache) = (v(12), v(13), v(14));
        let mut act = std::vec![false; lens[15] % 8];
        let _ = rim_step_forward(&w, &d, &x, &h, &c, &mut ho, &mut co, &mut act, &mut cache);
        let mut gs: Vec<Vec<f64>> = (0..9).map(v).collect();
        let [g0, g1, g2, g3, g4, g5, g6, g7, g8] = &mut gs[..] else { unreachable!() };
        let mut g = RimGrads::from_parts([g0, g1, g2, g3, g4, g5, g6, g7, g8].map(|g| &mut g[..]));
        let (dh, dc, mut dx, mut dhp, mut dcp, mut scratch) = (v(16), v(17), v(18), v(19), v(20), v(21));
        let _ = rim_step_backward(&w, &d, mode, &x, &h, &c, &cache, &dh, &dc, Some(&mut dx),
                                  &mut dhp, &mut dcp, &mut g, &mut scratch);
        let steps = lens[22] % 3;
        let mut acts = std::vec![false; lens[23]];
        let mut seq_scratch = v(21);
        let _ = rim_sequence_forward(&w, &d, steps, &x, &h, &c, &mut ho, &mut co, &mut acts, &mut cache);
        let _ = rim_sequence_backward(&w, &d, mode, steps, &x, &h, &c, &ho, &co, &cache, &dh, &dc,
                                      Some(&mut dx), &mut dhp, &mut dcp, &mut g, &mut seq_scratch);
        // With valid dims and exact buffers, the same fill runs without error.
        if check_dims(&d).is_ok() {
            let m = Model::<f64>::zeros(&d);
            let nh = state_len(&d);
            let ncl = cell_state_len(&d);
            let mut run = Run { hs: std::vec![0.0; nh], cs: std::vec![0.0; ncl],
                                actives: std::vec![false; d.n_modules], caches: std::vec![0.0; step_cache_len(&d)] };
            let xs = std::vec![fill; d.input];
            let h0 = std::vec![fill; nh];
            let c0 = std::vec![fill; ncl];
            prop_assert!(rim_sequence_forward(&m.weights(), &d, 1, &xs, &h0, &c0, &mut run.hs, &mut run.cs,
                                              &mut run.actives, &mut run.caches).is_ok());
            prop_assert_eq!(run.actives.iter().filter(|a| **a).count(), d.k_active);
        }
    }
}
