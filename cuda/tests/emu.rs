//! The kernels on the CPU emulator (`metarim_cuda::emu`) against the CPU reference: every
//! kernel through the full gradient pass and one PPO update per mode, the acting path, thread
//! order invariance, and the launch checks. Runs in CI (needs a C++17 compiler; fails under
//! `CI` when there is none, prints why it skipped elsewhere). What this does and does not
//! verify: `metarim_cuda::emu`'s docs and docs/GPU.md.

mod common;

use std::sync::Arc;

use common::*;
use metarim_core::nn::dims::{CommUpdate, ModelDims, RimDims};
use metarim_core::nn::params::Mode;
use metarim_cuda::emu::{EmuExec, ThreadOrder};
use metarim_cuda::exec::Exec;

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn emu_exec() -> Option<Arc<EmuExec>> {
    match EmuExec::new() {
        Ok(e) => Some(Arc::new(e)),
        Err(e) if in_ci() => panic!("CI is set but the kernel emulator is unavailable: {e}"),
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

fn emu() -> Option<Arc<dyn Exec>> {
    emu_exec().map(|e| e as Arc<dyn Exec>)
}

/// The modes the plain and FiLM acting tests run on the emulator: one with a RIM, one without
/// (the GPU tests run every mode).
const ACT_MODES: [Mode; 2] = [Mode::MetaRim, Mode::Lstm];

/// `run` under each thread order of the emulator (ascending, descending, shuffled with `seed`),
/// the order set back to ascending afterwards: the results, in that order.
fn under_every_order<T>(emu: &EmuExec, seed: u64, mut run: impl FnMut(ThreadOrder) -> T) -> Vec<T> {
    let runs = [
        ThreadOrder::Ascending,
        ThreadOrder::Descending,
        ThreadOrder::Shuffled(seed),
    ]
    .into_iter()
    .map(|order| {
        emu.set_thread_order(order);
        run(order)
    })
    .collect();
    emu.set_thread_order(ThreadOrder::Ascending);
    runs
}

/// Every gradient of the three groups as bits, for exact comparisons.
fn grad_bits(g: &GroupVecs) -> Vec<u32> {
    [&g.fast, &g.slow, &g.other]
        .iter()
        .flat_map(|b| b.iter().map(|x| x.to_bits()))
        .collect()
}

#[test]
fn gradient_pass_matches_chunk_backward() {
    let Some(exec) = emu() else { return };
    for (name, dims) in configs(false) {
        for mode in MODES {
            let (layout, params) = model(&dims, mode, 3);
            let chunks = minibatch(layout.dims(), 3, 5, 0.2, 7);
            let (want, want_stats) = cpu_grads(&layout, &params, &chunks);
            let (got, stats, counts) = device_grads(&exec, &layout, &params, &chunks);
            let what = format!("{name} {}", mode.name());
            let worst = compare_tensors(&what, &layout, &got, &want, TOL);
            let loss_err = scalar_rel(stats.terms[0], f64::from(want_stats.sum.loss));
            println!("{what}: gradients max rel {worst:.2e}, loss {loss_err:.2e}");
            assert!(
                loss_err <= TOL,
                "{what}: loss {} vs {}",
                stats.terms[0],
                want_stats.sum.loss
            );
            assert_eq!(stats.frames, want_stats.steps);
            if mode != Mode::Lstm {
                let n = dims.rim.n_modules;
                assert_eq!(
                    counts,
                    want_stats.active_steps[..n].to_vec(),
                    "{what}: activity"
                );
            }
        }
    }
}

#[test]
fn paper_gradient_pass_matches_chunk_backward() {
    let Some(exec) = emu() else { return };
    let dims = metarim_core::nn::dims::PAPER;
    for mode in [Mode::MetaRim, Mode::Lstm] {
        let (layout, params) = model(&dims, mode, 4);
        let chunks = minibatch(layout.dims(), 2, 4, 0.25, 9);
        let (want, want_stats) = cpu_grads(&layout, &params, &chunks);
        let t = std::time::Instant::now();
        let (got, stats, _) = device_grads(&exec, &layout, &params, &chunks);
        let what = format!("Paper {}", mode.name());
        let worst = compare_tensors(&what, &layout, &got, &want, TOL);
        let loss_err = scalar_rel(stats.terms[0], f64::from(want_stats.sum.loss));
        println!(
            "{what}: gradients max rel {worst:.2e}, loss {loss_err:.2e} ({:?})",
            t.elapsed()
        );
        assert!(loss_err <= TOL);
    }
}

#[test]
fn results_do_not_depend_on_the_order_of_threads() {
    let Some(emu) = emu_exec() else { return };
    let exec: Arc<dyn Exec> = emu.clone();
    for (name, dims) in configs(false) {
        for mode in [Mode::MetaRim, Mode::Lstm] {
            let (layout, params) = model(&dims, mode, 5);
            let chunks = minibatch(layout.dims(), 3, 4, 0.3, 8);
            let runs = under_every_order(&emu, 0x5eed, |_| {
                device_grads(&exec, &layout, &params, &chunks)
            });
            for r in &runs[1..] {
                assert!(
                    grad_bits(&r.0) == grad_bits(&runs[0].0),
                    "{name} {}: gradients depend on the thread order",
                    mode.name()
                );
                assert_eq!(
                    r.1, runs[0].1,
                    "{name}: statistics depend on the thread order"
                );
            }
        }
    }
}

exec_tests! {
    emu;
    /// One PPO update per mode: plain PPO (one step on every group) for joint and lstm, an
    /// inner (fast, active modules only) and an outer (slow + other) step for the meta modes,
    /// each on its own gradient pass, against the host trainer's arithmetic on the core.
    one_ppo_update_per_mode_matches_the_cpu => ppo_updates_match(&configs(false), &MODES);
    acting_matches_policy_step => acting_matches(&configs(false), &ACT_MODES, 5, 6);
}

/// The FiLM-conditioned encoder's kernels on their own against the core's encoder (features,
/// the whole cache, every parameter gradient, each sample's instruction gradient), under every
/// thread order the emulator offers (bit-identical across them); the plain bag-of-words
/// encoder too, through the same launches. The kernels associate every sum as the core does
/// and the emulator compiles without contraction, so here they match it bit for bit.
#[test]
fn film_encoder_kernels_match_the_core() {
    let Some(emu) = emu_exec() else { return };
    let exec: Arc<dyn Exec> = emu.clone();
    let mut configs = film_configs(false);
    configs.push((
        "Tiny bow",
        metarim_core::nn::dims::ModelDims {
            encoder: metarim_core::nn::dims::EncoderKind::Bow,
            ..metarim_core::nn::dims::TINY
        },
    ));
    // The feature normalisation without FiLM, on the plain conv input (with FiLM: film_configs).
    configs.push((
        "small conv+norm",
        metarim_core::nn::dims::ModelDims {
            feature_norm: true,
            ..small_dims(false, true)
        },
    ));
    for (name, dims) in configs {
        let mut runs = Vec::new();
        for order in [
            ThreadOrder::Ascending,
            ThreadOrder::Descending,
            ThreadOrder::Shuffled(0xf11),
        ] {
            emu.set_thread_order(order);
            let (worst, differ, bits) = encoder_kernels_parity(&exec, name, &dims, 7, 0xf11a);
            println!("{name} {order:?}: encoder kernels max rel {worst:.2e}, {differ} differ");
            assert_eq!(differ, 0, "{name}: not bit-identical to the core");
            runs.push(bits);
        }
        emu.set_thread_order(ThreadOrder::Ascending);
        assert!(
            runs.iter().all(|r| *r == runs[0]),
            "{name}: the encoder kernels depend on the thread order"
        );
    }
}

/// The whole gradient pass with the FiLM encoder (the instruction encoder before the encoder,
/// FiLM's dL/de into the instruction backward) against `Policy::chunk_backward`, every mode,
/// and bit-identical under every thread order.
#[test]
fn film_gradient_pass_matches_chunk_backward() {
    let Some(emu) = emu_exec() else { return };
    pass_parity_under_every_order(&emu, &film_configs(false), &MODES);
}

/// The gradient pass of each config and mode against `Policy::chunk_backward` (gradients,
/// loss, frames, module activity), and bit-identical under every thread order.
fn pass_parity_under_every_order(
    emu: &Arc<EmuExec>,
    configs: &[(&str, metarim_core::nn::dims::ModelDims)],
    modes: &[Mode],
) -> f64 {
    let exec: Arc<dyn Exec> = emu.clone();
    let mut worst_all = 0.0f64;
    for (name, dims) in configs {
        for &mode in modes {
            let (layout, params) = model(dims, mode, 3);
            let chunks = minibatch(layout.dims(), 3, 5, 0.2, 7);
            let (want, want_stats) = cpu_grads(&layout, &params, &chunks);
            let runs = under_every_order(emu, 0x5eed, |_| {
                device_grads(&exec, &layout, &params, &chunks)
            });
            let (got, stats, counts) = &runs[0];
            let what = format!("{name} {}", mode.name());
            let worst = compare_tensors(&what, &layout, got, &want, TOL);
            worst_all = worst_all.max(worst);
            let loss_err = scalar_rel(stats.terms[0], f64::from(want_stats.sum.loss));
            println!("{what}: gradients max rel {worst:.2e}, loss {loss_err:.2e}");
            assert!(loss_err <= TOL, "{what}: loss");
            assert_eq!(stats.frames, want_stats.steps);
            if mode != Mode::Lstm {
                let n = dims.rim.n_modules;
                assert_eq!(*counts, want_stats.active_steps[..n].to_vec(), "{what}");
            }
            for r in &runs[1..] {
                assert!(
                    grad_bits(&r.0) == grad_bits(got) && r.1 == *stats,
                    "{what}: the pass depends on the thread order"
                );
            }
        }
    }
    worst_all
}

exec_tests! {
    emu;
    /// One PPO update per mode with the FiLM encoder against the host trainer's arithmetic.
    film_ppo_update_per_mode_matches_the_cpu => ppo_updates_match(&film_configs(false), &MODES);
    /// Acting with the FiLM encoder (embeddings gathered before the encoder reads them) against
    /// `Policy::step`.
    film_acting_matches_policy_step => acting_matches(&film_configs(false), &ACT_MODES, 5, 6);
}

/// `d` with the gated interpolation in its communication (`comm_update = "interpolate"`).
fn interpolating(d: ModelDims) -> ModelDims {
    ModelDims {
        rim: RimDims {
            comm_update: CommUpdate::Interpolate,
            ..d.rim
        },
        ..d
    }
}

/// The gated interpolation in the communication (`COMM_INTERP`): the whole gradient pass in
/// every RIM mode against `Policy::chunk_backward`, GRU and LSTM cells, bit-identical under
/// every thread order.
#[test]
fn interpolating_communication_gradient_pass_matches_chunk_backward() {
    let Some(emu) = emu_exec() else { return };
    let mut lstm = interpolating(small_dims(true, true));
    lstm.rim.cell = metarim_core::nn::dims::CellKind::Lstm;
    let configs = [
        ("small-interpolate", interpolating(small_dims(false, true))),
        ("small-bow-interpolate-lstm-cells", lstm),
    ];
    let worst = pass_parity_under_every_order(&emu, &configs, &RIM_MODES);
    println!("interpolating communication: worst gradient error {worst:.2e}");
}

/// RIM modules with LSTM cells (state `[h | c]`, dL/dc carried across steps): the whole
/// gradient pass in every mode that uses a RIM against `Policy::chunk_backward`, bit-identical
/// under every thread order.
#[test]
fn lstm_cell_gradient_pass_matches_chunk_backward() {
    let Some(emu) = emu_exec() else { return };
    let worst = pass_parity_under_every_order(&emu, &lstm_cell_configs(false), &RIM_MODES);
    println!("LSTM cells: worst gradient error {worst:.2e}");
}

/// The RIM step kernels on their own against the core's step forward and backward, with LSTM
/// cells (and GRU cells, through the same launches): states `[h | c]` read and written (in
/// place, as acting does), the step cache, the carried `[dh | dc]`, the input gradient and the
/// module RNNs' weight gradients from the deltas; identical under every thread order.
#[test]
fn rim_step_kernels_match_the_core() {
    let Some(emu) = emu_exec() else { return };
    let exec: Arc<dyn Exec> = emu.clone();
    let mut configs = lstm_cell_configs(false);
    configs.push(("Tiny", metarim_core::nn::dims::TINY));
    configs.push(("small-comm", small_dims(false, false)));
    configs.push((
        "small-comm-interpolate",
        interpolating(small_dims(false, true)),
    ));
    for (name, dims) in configs {
        let runs = under_every_order(&emu, 0x57e9, |order| {
            let (worst, differ, bits) = rim_step_kernels_parity(&exec, name, &dims, 11, 0x57e9);
            println!("{name} {order:?}: RIM step kernels max rel {worst:.2e}, {differ} differ");
            bits
        });
        assert!(
            runs.iter().all(|r| *r == runs[0]),
            "{name}: the RIM step kernels depend on the thread order"
        );
    }
}

exec_tests! {
    emu;
    /// One PPO update per RIM mode with LSTM-cell modules against the host trainer's arithmetic.
    lstm_cell_ppo_update_per_mode_matches_the_cpu =>
        ppo_updates_match(&lstm_cell_configs(false), &RIM_MODES);
}

/// Acting with LSTM-cell modules (the cell state kept per environment, zeroed at episode
/// starts, kept by inactive modules) against `Policy::step`, under every thread order.
#[test]
fn lstm_cell_acting_matches_policy_step() {
    let Some(emu) = emu_exec() else { return };
    let exec: Arc<dyn Exec> = emu.clone();
    for (name, dims) in lstm_cell_configs(false) {
        for order in [ThreadOrder::Descending, ThreadOrder::Shuffled(0xace)] {
            emu.set_thread_order(order);
            let e = act_parity(&exec, &dims, Mode::MetaRim, 5, 6);
            println!("{name} {order:?}: acting max rel {e:.2e}");
        }
        emu.set_thread_order(ThreadOrder::Ascending);
    }
}

/// The training path's Adam kernel (`adam_masked`) against `Adam::update_ranges_at` bit for
/// bit, over random ranges tagged with modules, once with nothing skipped and once with the
/// ranges of an inactive module skipped (left bit-identical).
#[test]
fn adam_kernel_matches_the_cpu_bit_for_bit() {
    use metarim_core::nn::optim::{Adam, Range};
    use metarim_core::rng::Pcg32;
    let Some(exec) = emu() else { return };
    let mut rng = Pcg32::new(0x0e1);
    for trial in 0..6 {
        let n = 1 + rng.below(3000) as usize;
        let mut cuts: Vec<usize> = (0..8).map(|_| rng.below(n as u32 + 1) as usize).collect();
        cuts.sort_unstable();
        let ranges: Vec<Range> = cuts.chunks(2).map(|c| (c[0], c[1] - c[0])).rev().collect();
        let modules: Vec<i32> = (0..ranges.len() as i32).map(|r| r % 3 - 1).collect();
        let host = random_group(&mut rng, n);
        let adam = Adam::new(1e-3, 0.9, 0.999, 1e-5);
        let t = 1 + u64::from(rng.below(500));
        // Module 1 inactive: its ranges are skipped; shared ranges (-1) never are.
        let counts = [3u32, 0, 1];
        for mask in [None, Some(&counts[..])] {
            let got = adam_masked_on_device(&exec, &adam, t, &host, &ranges, &modules, mask);
            let selected: Vec<Range> = ranges
                .iter()
                .zip(&modules)
                .filter(|(_, &m)| mask.is_none() || m != 1)
                .map(|(r, _)| *r)
                .collect();
            let mut want = host.clone();
            adam.update_ranges_at(
                t,
                &mut want.params,
                &want.grads,
                &mut want.m,
                &mut want.v,
                &selected,
            )
            .unwrap();
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let what = format!("trial {trial}, masked {}", mask.is_some());
            assert_eq!(bits(&got.params), bits(&want.params), "{what}: params");
            assert_eq!(bits(&got.m), bits(&want.m), "{what}: m");
            assert_eq!(bits(&got.v), bits(&want.v), "{what}: v");
            assert_eq!(bits(&got.grads), bits(&host.grads), "{what}: grads");
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_it() {
    use metarim_cuda::engine::CudaPolicy;
    use metarim_cuda::exec::{launch, Arg, DevBuf, LaunchCfg};
    let Some(exec) = emu() else { return };
    let dims = metarim_core::nn::dims::TINY;
    let (layout, params) = model(&dims, Mode::MetaRim, 1);
    let mut dev =
        CudaPolicy::new(exec.clone(), &layout, params.bufs()).unwrap_or_else(|e| panic!("{e}"));
    let mut chunks = minibatch(&dims, 2, 3, 0.0, 1);
    let run = |dev: &mut CudaPolicy, chunks: &[Chunk]| -> String {
        let steps: Vec<Vec<_>> = chunks.iter().map(Chunk::steps).collect();
        let pass = pass_chunks(&steps, chunks);
        dev.grad_pass(&pass, &coefs(), 0.1)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    };
    assert_eq!(run(&mut dev, &chunks), "");
    let mut c = chunks.clone();
    c[1].tokens[0][0] = 9999;
    assert!(
        run(&mut dev, &c).contains("token id 9999"),
        "{}",
        run(&mut dev, &c)
    );
    let mut c = chunks.clone();
    c[0].samples[1].action = 7;
    assert!(run(&mut dev, &c).contains("action 7"));
    let mut c = chunks.clone();
    c[0].init.pop();
    assert!(run(&mut dev, &c).contains("initial state"));
    chunks[1].obs.pop();
    chunks[1].tokens.pop();
    chunks[1].starts.pop();
    chunks[1].samples.pop();
    assert!(run(&mut dev, &chunks).contains("equal length"));
    // A launch whose arguments do not match the kernel's parameters is refused, naming them.
    let funcs = exec
        .load(metarim_cuda::Kernel::Optim, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let clip = funcs
        .iter()
        .find(|f| f.entry.name == "clip_finish")
        .expect("optim.cu has clip_finish");
    let buf = DevBuf::<f32>::zeros(&exec, 4).unwrap_or_else(|e| panic!("{e}"));
    let e = launch(
        &*exec,
        clip,
        &LaunchCfg::linear(1, 32, 0),
        &[buf.arg(), Arg::U32(3)],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("clip_finish") && e.contains("declared") && e.contains("max_norm"),
        "{e}"
    );
    // Typed arguments for another entry point are refused too.
    let typed = metarim_cuda::args::LayoutInfo {
        out: DevBuf::<u32>::zeros(&exec, metarim_cuda::layout::LAYOUT_LEN)
            .unwrap_or_else(|e| panic!("{e}"))
            .ptr(),
    };
    let e = metarim_cuda::exec::launch_typed(&*exec, clip, &LaunchCfg::linear(1, 1, 0), &typed)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layout_info") && e.contains("clip_finish"),
        "{e}"
    );
    // Buffer extents are checked.
    assert!(buf.slice(2, 3).is_err());
    assert!(buf.upload_at(3, &[1.0, 2.0]).is_err());
}

/// The gradient parity over many seeds (slow: `cargo test -p metarim-cuda --test emu --
/// --ignored`); the worst error over the sweep is printed (7.7e-5 when last run, in the
/// configuration with FiLM and LSTM cells; 6.8e-5 before the LSTM-cell configurations were
/// added, 5.5e-5 before the FiLM ones).
#[test]
#[ignore]
fn seed_sweep() {
    let Some(exec) = emu() else { return };
    let (mut worst_all, mut worst_film, mut worst_cells) = (0.0f64, 0.0f64, 0.0f64);
    for seed in 0..12u64 {
        for (name, dims) in configs(false)
            .into_iter()
            .chain(film_configs(false))
            .chain(lstm_cell_configs(false))
        {
            for mode in MODES {
                let (layout, params) = model(&dims, mode, 100 + seed);
                let chunks = minibatch(layout.dims(), 4, 6, 0.2, 200 + seed);
                let (want, _) = cpu_grads(&layout, &params, &chunks);
                let (got, _, _) = device_grads(&exec, &layout, &params, &chunks);
                let w = compare_tensors(
                    &format!("{name} {} seed {seed}", mode.name()),
                    &layout,
                    &got,
                    &want,
                    TOL,
                );
                worst_all = worst_all.max(w);
                if dims.film {
                    worst_film = worst_film.max(w);
                }
                if dims.rim.cell == metarim_core::nn::dims::CellKind::Lstm && mode != Mode::Lstm {
                    worst_cells = worst_cells.max(w);
                }
            }
        }
    }
    println!(
        "worst over the sweep: {worst_all:e} (FiLM configurations: {worst_film:e}, LSTM cells: \
         {worst_cells:e})"
    );
}
