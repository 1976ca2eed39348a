//! `metarim bench rim`: RIM training-step throughput on the CPU with the batched cell
//! ([`crate::batch::rim`]; GRU or LSTM modules, as `RimBenchOptions::dims` says).
//!
//! One iteration is what `torch_rim_ref.py` times: forward over `T` steps for a batch of `B`
//! sequences from a zero state, the loss `sum_t mean(h_t^2)` (so `dL/dh_t = 2 h_t / (B*N*H)`),
//! BPTT, and one Adam step ([`metarim_core::nn::optim::Adam`]) over all RIM parameters. Frames
//! per second are `iters * B * T / seconds`. With several threads the batch is split into
//! contiguous shards of sequences, one per worker (`std::thread::scope`) for the forward and
//! BPTT, and the weight gradients are one GEMM per tensor over all rows, modules spread over the
//! workers (as the trainer does it).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use metarim_core::nn::dims::RimDims;
use metarim_core::nn::optim::Adam;
use metarim_core::nn::rim::{state_len, CommGrad};
use metarim_core::rng::Pcg32;

use crate::batch::rim::{
    even_bounds, grads_view, param_offsets, state_width, weights_view, RimBatch, RimScratch,
};

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
    let gs = metarim_core::nn::rim::rnn_gates(d) * d.hidden;
    let biases = d.n_modules * 2 * gs;
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
    // The initial states `[h | c]` per sequence (`c` only with LSTM cells).
    let sw = state_width(&d);
    let (_, total) = param_offsets(&d);
    let mut rng = Pcg32::new(o.seed);
    let mut params = init_params(&d, &mut rng);
    let workers_n = o.threads.min(o.batch);
    let bounds = even_bounds(o.batch, workers_n);
    let rows = o.batch * o.steps;
    let mut rb = RimBatch::<f32>::new(&d, rows, true).context("allocating the batched cell")?;
    let mut scratch: Vec<RimScratch<f32>> = bounds
        .windows(2)
        .map(|w| RimScratch::new(&d, w[1] - w[0]))
        .collect();
    let xs: Vec<f32> = (0..rows * d.input)
        .map(|_| rng.gen_f32() * 2.0 - 1.0)
        .collect();
    let h0 = vec![0.0f32; o.batch * sw];
    let reset = vec![false; rows];
    let mut grads = vec![0.0f32; total];
    let mut adam = Adam::new(1e-4, 0.9, 0.999, 1e-8);
    let mut m = vec![0.0f32; total];
    let mut v = vec![0.0f32; total];
    let scale = 1.0 / (o.batch * nh) as f32;
    let mut iterate = |params: &mut Vec<f32>| -> Result<f64> {
        let w = weights_view(&d, params)?;
        let shards = rb.shards(o.batch, o.steps, &bounds)?;
        let losses: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = shards
                .into_iter()
                .zip(scratch.iter_mut())
                .zip(bounds.windows(2))
                .map(|((mut sh, sc), b)| {
                    let w = &w;
                    let (xs, h0, reset) = (&xs, &h0, &reset);
                    s.spawn(move || -> Result<f64> {
                        let (r0, r1) = (b[0] * o.steps, b[1] * o.steps);
                        sh.x_mut().copy_from_slice(&xs[r0 * d.input..r1 * d.input]);
                        sh.forward(w, &h0[b[0] * sw..b[1] * sw], &reset[r0..r1], sc)?;
                        let mut loss = 0.0f64;
                        let hs: Vec<f32> = sh.h_out().to_vec();
                        for (g, h) in sh.dh_mut().iter_mut().zip(&hs) {
                            loss += f64::from(*h * *h);
                            *g = 2.0 * scale * *h;
                        }
                        sh.backward(w, CommGrad::Blocked, &reset[r0..r1], false, true, sc)?;
                        Ok(loss * f64::from(scale))
                    })
                })
                .collect();
            crate::threads::join_all(handles, "benchmark")
        })?;
        let mut loss = 0.0;
        for l in losses {
            loss += l;
        }
        grads.fill(0.0);
        rb.weight_grads(&mut grads_view(&d, &mut grads)?, workers_n)?;
        let all = [(0, params.len())];
        adam.step_ranges(params, &grads, &mut m, &mut v, &all)?;
        Ok(loss)
    };
    for _ in 0..o.warmup {
        iterate(&mut params)?;
    }
    let t0 = Instant::now();
    let mut loss = 0.0;
    for _ in 0..o.iters {
        loss = iterate(&mut params)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use metarim_core::nn::dims::{CellKind, TINY};

    #[test]
    fn runs_with_gru_and_lstm_cells() {
        for cell in [CellKind::Gru, CellKind::Lstm] {
            let o = RimBenchOptions {
                dims: RimDims { cell, ..TINY.rim },
                batch: 3,
                steps: 4,
                iters: 2,
                warmup: 1,
                threads: 2,
                seed: 1,
            };
            let r = run(&o).unwrap();
            assert!(
                r.loss.is_finite() && r.loss > 0.0,
                "{cell:?}: loss {}",
                r.loss
            );
            assert_eq!(r.frames, 2 * 3 * 4);
            assert_eq!(r.threads, 2);
        }
    }
}
