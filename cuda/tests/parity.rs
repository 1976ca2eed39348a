//! GPU parity of every kernel against the CPU reference (`metarim_core`): the training path's
//! Adam kernel on a fast and a slow group, the full gradient pass (encoder, instruction
//! encoder, RIM or LSTM memory, heads and PPO loss, every weight-gradient reduction) against
//! `Policy::chunk_backward`, one PPO update per mode (meta-rim, reversed, joint, lstm) against
//! the host trainer's arithmetic, and the batched acting step against `Policy::step`, all within
//! 1e-4 relative in f32 (the Adam kernels bit for bit), for the Tiny and Paper presets and two
//! small models that take the kernels' other branches; the same for the FiLM-conditioned
//! encoder (Tiny with the bag of words, a small conv model, the Small preset), plus its three
//! kernels on their own against the core's encoder; and for RIM modules with LSTM cells (Tiny,
//! a small model without communication, Tiny bow+FiLM, the Small preset). Prints `skipped: no
//! CUDA device` and passes where there is no GPU; `cuda/tests/emu.rs` runs the same checks on the
//! CPU emulator.

mod common;

use std::sync::Arc;

use common::*;
use metarim_core::nn::dims::ModelDims;
use metarim_core::nn::optim::{Adam, Range};
use metarim_core::nn::params::Mode;
use metarim_core::rng::Pcg32;
use metarim_cuda::cuda_exec::CudaExec;
use metarim_cuda::exec::Exec;
use metarim_cuda::{detect, Backend};

/// The device, or `None` after printing why the test skips.
fn device() -> Option<Arc<dyn Exec>> {
    match detect(0) {
        Backend::Cuda(dev) => {
            println!("device: {} ({})", dev.name, dev.arch());
            match CudaExec::new(&dev) {
                Ok(e) => Some(Arc::new(e)),
                Err(e) => panic!("a CUDA device was detected but cannot be used: {e}"),
            }
        }
        Backend::Unavailable(reason) => {
            println!("skipped: no CUDA device ({reason})");
            None
        }
    }
}

/// Disjoint ranges over `n`, some empty, not in offset order.
fn ranges(rng: &mut Pcg32, n: usize) -> Vec<Range> {
    let mut cuts: Vec<usize> = (0..12).map(|_| rng.below(n as u32 + 1) as usize).collect();
    cuts.sort_unstable();
    let mut out: Vec<Range> = cuts.chunks(2).map(|c| (c[0], c[1] - c[0])).collect();
    out.reverse();
    out
}

/// The training path's Adam kernel (`adam_masked`) on a fast group (random ranges, nothing
/// skipped) and a slow group (one range) against `Adam::update_ranges_at`.
#[test]
fn adam_on_device_matches_the_cpu() {
    let Some(exec) = device() else { return };
    let mut rng = Pcg32::new(0x5eed_0005);
    for trial in 0..4 {
        let (nf, ns) = (
            1 + rng.below(50_000) as usize,
            1 + rng.below(50_000) as usize,
        );
        let (fast0, slow0) = (random_group(&mut rng, nf), random_group(&mut rng, ns));
        let fast_ranges = ranges(&mut rng, nf);
        let slow_ranges = [(0, ns)];
        let (fast_opt, slow_opt) = (
            Adam::new(3e-3, 0.9, 0.999, 1e-5),
            Adam::new(1e-4, 0.9, 0.999, 1e-5),
        );
        let t = 1 + u64::from(rng.below(1000));
        let shared = vec![-1; fast_ranges.len()];
        let fast = adam_masked_on_device(&exec, &fast_opt, t, &fast0, &fast_ranges, &shared, None);
        let slow = adam_masked_on_device(&exec, &slow_opt, t, &slow0, &slow_ranges, &[-1], None);
        let mut cf = fast0.clone();
        fast_opt
            .update_ranges_at(
                t,
                &mut cf.params,
                &cf.grads,
                &mut cf.m,
                &mut cf.v,
                &fast_ranges,
            )
            .unwrap();
        let mut cs = slow0.clone();
        slow_opt
            .update_ranges_at(
                t,
                &mut cs.params,
                &cs.grads,
                &mut cs.m,
                &mut cs.v,
                &slow_ranges,
            )
            .unwrap();
        for (name, g, c) in [
            ("fast params", &fast.params, &cf.params),
            ("fast m", &fast.m, &cf.m),
            ("fast v", &fast.v, &cf.v),
            ("slow params", &slow.params, &cs.params),
            ("slow m", &slow.m, &cs.m),
            ("slow v", &slow.v, &cs.v),
        ] {
            let (rel, differ) = rel_error(g, c);
            println!(
                "trial {trial} {name}: {differ} of {} differ in any bit, max rel {rel:e}",
                g.len()
            );
            assert!(
                rel <= 1e-6,
                "trial {trial} {name}: relative difference {rel:e} > 1e-6"
            );
        }
        let inside = |i: usize| fast_ranges.iter().any(|&(o, l)| i >= o && i < o + l);
        for i in (0..nf).filter(|&i| !inside(i)) {
            assert_eq!(
                fast.params[i].to_bits(),
                fast0.params[i].to_bits(),
                "param {i} moved"
            );
            assert_eq!(fast.m[i].to_bits(), fast0.m[i].to_bits(), "m {i} moved");
            assert_eq!(fast.v[i].to_bits(), fast0.v[i].to_bits(), "v {i} moved");
        }
        assert_eq!(fast.grads, fast0.grads, "gradients are read-only");
    }
}

/// One gradient pass of `mode` on the device against `Policy::chunk_backward`: every tensor,
/// the loss and (with a RIM) the modules' activity counts.
fn gradient_pass_parity(
    exec: &Arc<dyn Exec>,
    name: &str,
    dims: &metarim_core::nn::dims::ModelDims,
    mode: metarim_core::nn::params::Mode,
) {
    let (layout, params) = model(dims, mode, 3);
    let chunks = minibatch(layout.dims(), 6, 8, 0.15, 7);
    let (want, want_stats) = cpu_grads(&layout, &params, &chunks);
    let (got, stats, counts) = device_grads(exec, &layout, &params, &chunks);
    let what = format!("{name} {}", mode.name());
    let worst = compare_tensors(&what, &layout, &got, &want, TOL);
    let loss_err = scalar_rel(stats.terms[0], f64::from(want_stats.sum.loss));
    println!("{what}: gradients max rel {worst:.2e}, loss {loss_err:.2e}");
    assert!(loss_err <= TOL, "{what}: loss");
    if mode != metarim_core::nn::params::Mode::Lstm {
        let n = dims.rim.n_modules;
        assert_eq!(
            counts,
            want_stats.active_steps[..n].to_vec(),
            "{what}: activity"
        );
    }
}

/// [`gradient_pass_parity`] in each of `modes` for every model of `configs`.
fn gradient_passes_match(exec: &Arc<dyn Exec>, configs: &[(&str, ModelDims)], modes: &[Mode]) {
    for (name, dims) in configs {
        for mode in modes {
            gradient_pass_parity(exec, name, dims, *mode);
        }
    }
}

exec_tests! {
    device;
    gradient_pass_matches_chunk_backward => gradient_passes_match(&configs(true), &MODES);
    one_ppo_update_per_mode_matches_the_cpu => ppo_updates_match(&configs(true), &MODES);
    acting_matches_policy_step => acting_matches(&configs(true), &MODES, 9, 8);
}

/// The FiLM encoder's kernels on their own against the core's encoder (features, cache,
/// parameter gradients, instruction gradients).
#[test]
fn film_encoder_kernels_match_the_core() {
    let Some(exec) = device() else { return };
    for (name, dims) in film_configs(true) {
        let (worst, differ, _) = encoder_kernels_parity(&exec, name, &dims, 33, 0xf11a);
        println!("{name}: encoder kernels max rel {worst:.2e}, {differ} differ in any bit");
    }
}

exec_tests! {
    device;
    film_gradient_pass_matches_chunk_backward => gradient_passes_match(&film_configs(true), &MODES);
    film_ppo_update_per_mode_matches_the_cpu => ppo_updates_match(&film_configs(true), &MODES);
    film_acting_matches_policy_step => acting_matches(&film_configs(true), &MODES, 9, 8);
}

exec_tests! {
    device;
    /// RIM modules with LSTM cells (state `[h | c]`): the gradient pass in every mode that uses
    /// a RIM, one PPO update per such mode and acting, for Tiny, the small model without
    /// communication, Tiny bow+FiLM and the Small preset, all with LSTM cells.
    lstm_cell_gradient_pass_matches_chunk_backward =>
        gradient_passes_match(&lstm_cell_configs(true), &RIM_MODES);
    lstm_cell_ppo_update_per_mode_matches_the_cpu =>
        ppo_updates_match(&lstm_cell_configs(true), &RIM_MODES);
    lstm_cell_acting_matches_policy_step =>
        acting_matches(&lstm_cell_configs(true), &[Mode::MetaRim], 9, 8);
}
