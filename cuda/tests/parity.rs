//! GPU parity of `kernels/optim.cu` against the CPU reference (`core::nn::optim`): one Adam step
//! on separate fast and slow device buffers (the fast group restricted to random ranges, as for
//! the active modules), and one SGD step. Prints `skipped: no CUDA device` and passes where there
//! is no GPU.

use metarim_core::nn::optim::{Adam, Range, Sgd};
use metarim_core::rng::Pcg32;
use std::sync::Arc;

use metarim_cuda::cuda_exec::CudaExec;
use metarim_cuda::exec::Exec;
use metarim_cuda::optim::{DeviceGroup, FastSlow, HostGroup, OptimKernels};
use metarim_cuda::{detect, Backend};

fn random(rng: &mut Pcg32, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.gen_f32() * 2.0 - 1.0) * scale)
        .collect()
}

fn group(rng: &mut Pcg32, n: usize) -> HostGroup {
    HostGroup {
        params: random(rng, n, 1.0),
        grads: random(rng, n, 0.1),
        m: random(rng, n, 0.01),
        v: random(rng, n, 0.01).iter().map(|x| x * x).collect(),
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

/// Maximum relative difference, and how many elements differ in any bit.
fn compare(what: &str, gpu: &[f32], cpu: &[f32]) -> (f64, usize) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let mut max_rel = 0.0f64;
    let mut differ = 0;
    for (a, b) in gpu.iter().zip(cpu) {
        if a.to_bits() != b.to_bits() {
            differ += 1;
            let rel = f64::from((a - b).abs()) / f64::from(b.abs()).max(1e-30);
            max_rel = max_rel.max(rel);
        }
    }
    println!(
        "{what}: {differ} of {} elements differ in any bit, max relative {max_rel:e}",
        gpu.len()
    );
    (max_rel, differ)
}

#[test]
fn adam_and_sgd_on_device_match_the_cpu() {
    let dev = match detect(0) {
        Backend::Cuda(dev) => dev,
        Backend::Unavailable(reason) => {
            println!("skipped: no CUDA device ({reason})");
            return;
        }
    };
    println!("device: {} ({})", dev.name, dev.arch());
    let exec: Arc<dyn Exec> = Arc::new(CudaExec::new(&dev).unwrap_or_else(|e| panic!("{e}")));
    let k = OptimKernels::load(&exec).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Pcg32::new(0x5eed_0005);
    for trial in 0..4 {
        let (nf, ns) = (
            1 + rng.below(50_000) as usize,
            1 + rng.below(50_000) as usize,
        );
        let (fast0, slow0) = (group(&mut rng, nf), group(&mut rng, ns));
        let fast_ranges = ranges(&mut rng, nf);
        let slow_ranges = [(0, ns)];
        let (fast_opt, slow_opt) = (
            Adam::new(3e-3, 0.9, 0.999, 1e-5),
            Adam::new(1e-4, 0.9, 0.999, 1e-5),
        );
        let t = 1 + u64::from(rng.below(1000));

        let mut bufs = FastSlow {
            fast: DeviceGroup::upload(&exec, &fast0).unwrap_or_else(|e| panic!("{e}")),
            slow: DeviceGroup::upload(&exec, &slow0).unwrap_or_else(|e| panic!("{e}")),
        };
        k.adam(&fast_opt, t, &mut bufs.fast, &fast_ranges)
            .unwrap_or_else(|e| panic!("{e}"));
        k.adam(&slow_opt, t, &mut bufs.slow, &slow_ranges)
            .unwrap_or_else(|e| panic!("{e}"));
        let sgd = Sgd { lr: 0.05 };
        // SGD on the slow group's gradients into its (already Adam-stepped) parameters.
        k.sgd(
            &sgd,
            &mut bufs.slow.params,
            &bufs.slow.grads,
            &fast_ranges
                .iter()
                .copied()
                .filter(|&(o, l)| o + l <= ns)
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let fast = bufs.fast.download().unwrap_or_else(|e| panic!("{e}"));
        let slow = bufs.slow.download().unwrap_or_else(|e| panic!("{e}"));

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
        let sgd_ranges: Vec<Range> = fast_ranges
            .iter()
            .copied()
            .filter(|&(o, l)| o + l <= ns)
            .collect();
        sgd.step_ranges(&mut cs.params, &cs.grads, &sgd_ranges)
            .unwrap();

        for (name, g, c) in [
            ("fast params", &fast.params, &cf.params),
            ("fast m", &fast.m, &cf.m),
            ("fast v", &fast.v, &cf.v),
            ("slow params", &slow.params, &cs.params),
            ("slow m", &slow.m, &cs.m),
            ("slow v", &slow.v, &cs.v),
        ] {
            let (rel, _) = compare(&format!("trial {trial} {name}"), g, c);
            assert!(
                rel <= 1e-6,
                "trial {trial} {name}: relative difference {rel:e} > 1e-6"
            );
        }
        // Outside the fast ranges nothing moved, bit for bit.
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
