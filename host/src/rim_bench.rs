//! `metarim bench rim`: RIM training-step throughput on the CPU with the batched cell
//! ([`crate::rim_batch`]).
//!
//! One iteration is what `torch_rim_ref.py` times: forward over `T` steps for a batch of `B`
//! sequences from a zero state, the loss `sum_t mean(h_t^2)` (so `dL/dh_t = 2 h_t / (B*N*H)`),
//! BPTT, and one Adam step ([`metarim_core::nn::optim::Adam`]) over all RIM parameters. Frames
//! per second are `iters * B * T / seconds`. With several threads the batch is split into
//! contiguous parts, one [`RimBatch`] per worker (`std::thread::scope`), and the workers'
//! gradients are summed before the Adam step.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use metarim_core::nn::dims::RimDims;
use metarim_core::nn::optim::Adam;
use metarim_core::nn::rim::{state_len, CommGrad};
use metarim_core::rng::Pcg32;

use crate::rim_batch::{grads_view, param_offsets, weights_view, RimBatch};

/// What to run.
#[derive(Clone, Debug)]
pub struct RimBenchOptions {
    /// Cell dimensions (a preset's `rim`).
    pub dims: RimDims,
    /// Sequences per iteration.
    pub batch: usize,
    /// Steps per sequence.
    pub steps: usize,
    /// Timed iterations.
    pub iters: usize,
    /// Untimed iterations first.
    pub warmup: usize,
    /// Worker threads requested (the batch is split over `min(threads, batch)` workers).
    pub threads: usize,
    /// Seed of the weights and inputs.
    pub seed: u64,
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct RimBenchReport {
    /// Worker threads used.
    pub threads: usize,
    /// Parameters of the cell.
    pub params: usize,
    /// Timed wall-clock time.
    pub elapsed: Duration,
    /// Frames (sample-steps) through forward, backward and Adam in the timed iterations.
    pub frames: u64,
    /// Loss of the last iteration.
    pub loss: f64,
    /// Dense multiply-add work per frame (2 flops per multiply-add; forward, input and weight
    /// gradients of every weight matrix, all modules as computed).
    pub flops_per_frame: f64,
}

impl RimBenchReport {
    /// Frames per second.
    pub fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-12)
    }

    /// Achieved dense GFLOP/s (see [`RimBenchReport::flops_per_frame`]).
    pub fn gflops(&self) -> f64 {
        self.frames_per_sec() * self.flops_per_frame * 1e-9
    }
}

/// One worker: its part of the batch and everything it needs.
struct Worker {
    rb: RimBatch<f32>,
    xs: Vec<f32>,
    h0: Vec<f32>,
    dhs: Vec<f32>,
    dh0: Vec<f32>,
    grads: Vec<f32>,
    loss: f64,
}

impl Worker {
    /// Forward, loss gradient (`scale = 1 / (B*N*H)` of the whole batch), backward.
    fn run(&mut self, d: &RimDims, params: &[f32], scale: f32) -> Result<()> {
        let w = weights_view(d, params)?;
        self.rb.forward(&w, &self.xs, &self.h0)?;
        let mut loss = 0.0f64;
        for (g, h) in self.dhs.iter_mut().zip(self.rb.hs()) {
            loss += f64::from(*h * *h);
            *g = 2.0 * scale * *h;
        }
        self.loss = loss * f64::from(scale);
        self.grads.fill(0.0);
        self.dh0.fill(0.0);
        let mut g = grads_view(d, &mut self.grads)?;
        self.rb
            .backward(&w, CommGrad::Blocked, &self.dhs, &mut self.dh0, &mut g)
    }
}

/// Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) per tensor (PyTorch's default scale).
fn init_params(d: &RimDims, rng: &mut Pcg32) -> Vec<f32> {
    let (offs, total) = param_offsets(d);
    let cw = d.c_heads * d.c_k;
    let fans = [
        d.input, d.input, d.hidden, d.hidden, d.hidden, d.hidden, d.hidden, cw, cw,
    ];
    let mut p = vec![0.0f32; total];
    for (i, fan) in fans.iter().enumerate() {
        let end = offs.get(i + 1).copied().unwrap_or(total);
        let s = 1.0 / (*fan.max(&1) as f32).sqrt();
        for v in &mut p[offs[i]..end] {
            *v = (rng.gen_f32() * 2.0 - 1.0) * s;
        }
    }
    p
}

/// Multiply-adds x 2 per frame of the dense products (see [`RimBenchReport::flops_per_frame`]).
fn flops_per_frame(d: &RimDims) -> f64 {
    let c = metarim_core::nn::rim::rim_param_counts(d);
    let g3 = 3 * d.hidden;
    let biases = d.n_modules * 2 * g3;
    let weights = c.total() - biases;
    // forward + weight gradients: every weight once each; input gradients: all but w_k, w_v.
    (2 * weights + 2 * weights + 2 * (weights - c.w_k - c.w_v)) as f64
}

/// Runs the benchmark.
pub fn run(o: &RimBenchOptions) -> Result<RimBenchReport> {
    ensure!(o.batch >= 1, "--batch must be at least 1");
    ensure!(o.steps >= 1, "--steps must be at least 1");
    ensure!(o.iters >= 1, "--iters must be at least 1");
    ensure!(o.threads >= 1, "--threads must be at least 1");
    let d = o.dims;
    let nh = state_len(&d);
    let (_, total) = param_offsets(&d);
    let mut rng = Pcg32::new(o.seed);
    let mut params = init_params(&d, &mut rng);
    let workers_n = o.threads.min(o.batch);
    let mut workers = Vec::with_capacity(workers_n);
    for k in 0..workers_n {
        // Contiguous parts of the batch, sizes differing by at most one.
        let bw = o.batch / workers_n + usize::from(k < o.batch % workers_n);
        let xs = (0..o.steps * bw * d.input)
            .map(|_| rng.gen_f32() * 2.0 - 1.0)
            .collect();
        workers.push(Worker {
            rb: RimBatch::new(&d, bw, o.steps).context("allocating the batched cell")?,
            xs,
            h0: vec![0.0; bw * nh],
            dhs: vec![0.0; o.steps * bw * nh],
            dh0: vec![0.0; bw * nh],
            grads: vec![0.0; total],
            loss: 0.0,
        });
    }
    let mut adam = Adam::new(1e-4, 0.9, 0.999, 1e-8);
    let mut m = vec![0.0f32; total];
    let mut v = vec![0.0f32; total];
    let scale = 1.0 / (o.batch * nh) as f32;
    let mut iterate = |params: &mut Vec<f32>, workers: &mut Vec<Worker>| -> Result<f64> {
        let (first, rest) = workers.split_at_mut(1);
        let p: &[f32] = params;
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = rest
                .iter_mut()
                .map(|w| s.spawn(move || w.run(&d, p, scale)))
                .collect();
            let r0 = first[0].run(&d, p, scale);
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a benchmark worker panicked"))??;
            }
            r0
        })?;
        let (first, rest) = workers.split_at_mut(1);
        let g = &mut first[0].grads;
        for wk in rest.iter() {
            for (a, b) in g.iter_mut().zip(&wk.grads) {
                *a += *b;
            }
        }
        adam.step(params, g, &mut m, &mut v)?;
        Ok(workers.iter().map(|w| w.loss).sum())
    };
    for _ in 0..o.warmup {
        iterate(&mut params, &mut workers)?;
    }
    let t0 = Instant::now();
    let mut loss = 0.0;
    for _ in 0..o.iters {
        loss = iterate(&mut params, &mut workers)?;
    }
    let elapsed = t0.elapsed();
    Ok(RimBenchReport {
        threads: workers_n,
        params: total,
        elapsed,
        frames: (o.iters * o.batch * o.steps) as u64,
        loss,
        flops_per_frame: flops_per_frame(&d),
    })
}
