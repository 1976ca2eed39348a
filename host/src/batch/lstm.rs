//! The LSTM baseline's memory, batched: the same math as `metarim_core::nn::ops::lstm_forward`
//! / `lstm_backward` (PyTorch gate order i, f, g, o), over `B` sequences of `T` steps at once
//! with GEMMs, in the layout of [`crate::batch::rim`] (field-major, row `b*T + t`; states
//! `[h | c]`, `2W` wide), with the same pass structure: [`LstmBatch::shards`], per shard
//! [`LstmShard::forward`] and [`LstmShard::backward`] (episode starts zero the incoming state and
//! stop the gradient), then [`LstmBatch::weight_grads`] over all rows. Results do not depend on the
//! shard split.

use anyhow::{anyhow, ensure, Result};
use metarim_core::nn::ops::{lstm_unit_forward, LstmGrads, LstmWeights};
use metarim_core::nn::params::{GroupBufs, Layout, TensorKind};

use crate::batch::gemm::{gemm, mat, rm, row_fields, tr, Scalar};
use crate::batch::{PassBuffers, ShardScratch};

row_fields! {
    /// Per-row fields of an LSTM pass.
    pass Fields {
        /// Input.
        x,
        /// Incoming `h`, `c`.
        hin,
        cin,
        /// Outgoing `h`, `c`.
        hout,
        cout,
        /// Gate activations `[i | f | g | o]`.
        gates,
        /// `tanh(c)`.
        tc,
        /// Loss gradient of the outgoing `h`.
        dh,
        /// Gate pre-activation gradients.
        da,
        /// Input gradient.
        dx,
    }
}

row_fields! {
    /// Per-sequence scratch of one step.
    StepScratch {
        carry_h,
        carry_c,
        new_h,
    }
}

/// Buffers of batched LSTM passes over up to `capacity` rows.
#[derive(Clone, Debug)]
pub struct LstmBatch<S> {
    input: usize,
    hidden: usize,
    pass: PassBuffers<Fields<usize>, Fields<Vec<S>>>,
}

/// Per-thread scratch of a shard's steps.
#[derive(Clone, Debug)]
pub struct LstmScratch<S> {
    step: ShardScratch<StepScratch<usize>, StepScratch<Vec<S>>>,
}

impl<S: Scalar> LstmScratch<S> {
    /// Scratch for shards of up to `seqs` sequences of an LSTM with `hidden` units.
    pub fn new(hidden: usize, seqs: usize) -> LstmScratch<S> {
        let widths = StepScratch {
            carry_h: hidden,
            carry_c: hidden,
            new_h: hidden,
        };
        LstmScratch {
            step: ShardScratch::new(widths, seqs),
        }
    }
}

/// The rows of a sequence range of an [`LstmBatch`] pass.
#[derive(Debug)]
pub struct LstmShard<'a, S> {
    input: usize,
    hidden: usize,
    seqs: usize,
    steps: usize,
    f: Fields<&'a mut [S]>,
}

fn check_weights<S>(w: &LstmWeights<'_, S>, input: usize, hidden: usize) -> Result<()> {
    let g = 4 * hidden;
    ensure!(
        w.w_ih.len() >= g * input
            && w.w_hh.len() >= g * hidden
            && w.b_ih.len() >= g
            && w.b_hh.len() >= g,
        "batched LSTM: weight buffers too short"
    );
    Ok(())
}

impl<S: Scalar> LstmBatch<S> {
    /// Buffers for passes of up to `capacity` rows of an LSTM `input -> hidden`; without
    /// `backward`, forward passes only.
    pub fn new(input: usize, hidden: usize, capacity: usize, backward: bool) -> Result<Self> {
        ensure!(
            input >= 1 && hidden >= 1 && capacity >= 1,
            "batched LSTM: input, hidden and capacity must be at least 1"
        );
        let b = |w: usize| if backward { w } else { 0 };
        let widths = Fields {
            x: input,
            hin: hidden,
            cin: hidden,
            hout: hidden,
            cout: hidden,
            gates: 4 * hidden,
            tc: hidden,
            dh: b(hidden),
            da: b(4 * hidden),
            dx: b(input),
        };
        Ok(LstmBatch {
            input,
            hidden,
            pass: PassBuffers::new("LSTM", widths, capacity)?,
        })
    }

    /// The inputs of the next pass's first `rows` rows (`[rows x input]`), to fill before
    /// [`LstmBatch::shards`] (which leaves them as they are).
    pub fn inputs_mut(&mut self, rows: usize) -> Result<&mut [S]> {
        self.pass.inputs_mut("LSTM", rows)
    }

    /// Starts a pass of `seqs` sequences of `steps` steps, one view per sequence range.
    pub fn shards(
        &mut self,
        seqs: usize,
        steps: usize,
        bounds: &[usize],
    ) -> Result<Vec<LstmShard<'_, S>>> {
        let (input, hidden) = (self.input, self.hidden);
        self.pass
            .shards("LSTM", (seqs, steps), bounds, |f, seqs| LstmShard {
                input,
                hidden,
                seqs,
                steps,
                f,
            })
    }

    /// Outgoing `h` of the last pass, `[B*T x W]`.
    pub fn h_out(&self) -> &[S] {
        &self.pass.f.hout[..self.pass.rows() * self.hidden]
    }

    /// Input gradients of the last backward pass that asked for them, `[B*T x input]`.
    pub fn dx(&self) -> &[S] {
        self.pass.dx()
    }

    /// Accumulates the weight gradients of the last backward pass into `g` (empty slices are
    /// skipped), one GEMM per tensor over all rows; `threads` share the four tensors.
    pub fn weight_grads(&self, g: &mut LstmGrads<'_, S>, threads: usize) -> Result<()> {
        ensure!(
            self.pass.widths.da > 0,
            "batched LSTM: buffers were made without backward"
        );
        let rows = self.pass.rows();
        let (inp, hid) = (self.input, self.hidden);
        let g4 = 4 * hid;
        let f = &self.pass.f;
        let one = S::ONE;
        // dW = dA^T X over all rows, for W_ih (X = the inputs) and W_hh (X = the carried h).
        let weight = |gw: &mut [S], x: &[S], width: usize, name: &str| -> Result<()> {
            if gw.is_empty() {
                return Ok(());
            }
            ensure!(
                gw.len() >= g4 * width,
                "batched LSTM: {name} gradient too short"
            );
            gemm(
                g4,
                rows,
                width,
                one,
                &f.da,
                tr(0, g4),
                x,
                rm(0, width),
                one,
                gw,
                rm(0, width),
            )
        };
        let w_ih = |gw: &mut [S]| weight(gw, &f.x, inp, "w_ih");
        let w_hh = |gw: &mut [S]| weight(gw, &f.hin, hid, "w_hh");
        let bias = |gb: &mut [S]| -> Result<()> {
            ensure!(gb.len() >= g4, "batched LSTM: bias gradient too short");
            for r in 0..rows {
                for (o, v) in gb.iter_mut().zip(&f.da[r * g4..][..g4]) {
                    *o += *v;
                }
            }
            Ok(())
        };
        let LstmGrads {
            w_ih: gi,
            w_hh: gh,
            b_ih: bi,
            b_hh: bh,
        } = g;
        let biases = |bi: &mut [S], bh: &mut [S]| -> Result<()> {
            if !bi.is_empty() {
                bias(bi)?;
            }
            if !bh.is_empty() {
                bias(bh)?;
            }
            Ok(())
        };
        if threads <= 1 {
            w_ih(gi)?;
            w_hh(gh)?;
            return biases(bi, bh);
        }
        std::thread::scope(|s| -> Result<()> {
            let other = s.spawn(|| -> Result<()> {
                w_hh(gh)?;
                biases(bi, bh)
            });
            w_ih(gi)?;
            other
                .join()
                .map_err(|_| anyhow!("a weight-gradient thread panicked"))?
        })
    }
}

impl<'a, S: Scalar> LstmShard<'a, S> {
    /// The inputs to fill before [`LstmShard::forward`], `[seqs*T x input]`.
    pub fn x_mut(&mut self) -> &mut [S] {
        let len = self.seqs * self.steps * self.input;
        &mut self.f.x[..len]
    }

    /// Outgoing `h`, `[seqs*T x W]`.
    pub fn h_out(&self) -> &[S] {
        &self.f.hout[..self.seqs * self.steps * self.hidden]
    }

    /// Outgoing `c`, `[seqs*T x W]`.
    pub fn c_out(&self) -> &[S] {
        &self.f.cout[..self.seqs * self.steps * self.hidden]
    }

    /// The loss gradient of every outgoing `h`, to fill before [`LstmShard::backward`].
    pub fn dh_mut(&mut self) -> &mut [S] {
        let len = (self.seqs * self.steps * self.hidden).min(self.f.dh.len());
        &mut self.f.dh[..len]
    }

    /// `(input, hidden, seqs, steps, 4 * hidden)`, once `w` is checked to fit them.
    fn sizes_for(&self, w: &LstmWeights<'_, S>) -> Result<(usize, usize, usize, usize, usize)> {
        check_weights(w, self.input, self.hidden)?;
        Ok((
            self.input,
            self.hidden,
            self.seqs,
            self.steps,
            4 * self.hidden,
        ))
    }

    /// Input gradients of the last backward with `want_dx`.
    pub fn dx(&self) -> &[S] {
        let len = (self.seqs * self.steps * self.input).min(self.f.dx.len());
        &self.f.dx[..len]
    }

    /// The steps from `state0` (`[seqs x 2W]`, `[h | c]` per sequence); `reset` (`[seqs x T]`)
    /// zeroes a step's incoming state.
    pub fn forward(
        &mut self,
        w: &LstmWeights<'_, S>,
        state0: &[S],
        reset: &[bool],
        sc: &mut LstmScratch<S>,
    ) -> Result<()> {
        let (inp, hid, bs, steps, g4) = self.sizes_for(w)?;
        ensure!(
            state0.len() >= bs * 2 * hid,
            "batched LSTM: state0 too short"
        );
        // The forward pass needs no scratch rows, only the checks (acting runs it every step:
        // no split, which allocates).
        sc.step.check("LSTM", (bs, steps), reset)?;
        let f = &mut self.f;
        let (one, zero) = (S::ONE, S::ZERO);
        let st = |t: usize, wd: usize| mat(t * wd, steps * wd, 1);
        for t in 0..steps {
            for b in 0..bs {
                let r = b * steps + t;
                let (h, c) = (&mut f.hin[r * hid..][..hid], &mut f.cin[r * hid..][..hid]);
                if reset[r] {
                    h.fill(zero);
                    c.fill(zero);
                } else if t == 0 {
                    h.copy_from_slice(&state0[b * 2 * hid..][..hid]);
                    c.copy_from_slice(&state0[b * 2 * hid + hid..][..hid]);
                } else {
                    h.copy_from_slice(&f.hout[(r - 1) * hid..][..hid]);
                    c.copy_from_slice(&f.cout[(r - 1) * hid..][..hid]);
                }
            }
            gemm(
                bs,
                inp,
                g4,
                one,
                f.x,
                st(t, inp),
                w.w_ih,
                tr(0, inp),
                zero,
                f.gates,
                st(t, g4),
            )?;
            gemm(
                bs,
                hid,
                g4,
                one,
                f.hin,
                st(t, hid),
                w.w_hh,
                tr(0, hid),
                one,
                f.gates,
                st(t, g4),
            )?;
            for b in 0..bs {
                let r = b * steps + t;
                let gates = &mut f.gates[r * g4..][..g4];
                for (v, (bi, bh)) in gates.iter_mut().zip(w.b_ih.iter().zip(w.b_hh)) {
                    *v += *bi + *bh;
                }
                for u in 0..hid {
                    let c_prev = f.cin[r * hid + u];
                    let (cu, tcu, hu) =
                        lstm_unit_forward(gates, hid, u, c_prev, S::act_sigmoid, S::act_tanh);
                    f.tc[r * hid + u] = tcu;
                    f.cout[r * hid + u] = cu;
                    f.hout[r * hid + u] = hu;
                }
            }
        }
        Ok(())
    }

    /// BPTT over the last forward given [`LstmShard::dh_mut`]: the gate pre-activation
    /// gradients (for [`LstmBatch::weight_grads`]) and, with `want_dx`, [`LstmShard::dx`].
    pub fn backward(
        &mut self,
        w: &LstmWeights<'_, S>,
        reset: &[bool],
        want_dx: bool,
        sc: &mut LstmScratch<S>,
    ) -> Result<()> {
        let (inp, hid, bs, steps, g4) = self.sizes_for(w)?;
        ensure!(
            self.f.da.len() >= bs * steps * g4,
            "batched LSTM: buffers were made without backward"
        );
        let mut s = sc.step.rows("LSTM", (bs, steps), reset)?;
        let f = &mut self.f;
        let (one, zero) = (S::ONE, S::ZERO);
        let st = |t: usize, wd: usize| mat(t * wd, steps * wd, 1);
        s.carry_h.fill(zero);
        s.carry_c.fill(zero);
        for t in (0..steps).rev() {
            for b in 0..bs {
                let r = b * steps + t;
                let gates = &f.gates[r * g4..][..g4];
                let da = &mut f.da[r * g4..][..g4];
                for u in 0..hid {
                    let (i, fg, gg, o) = (
                        gates[u],
                        gates[hid + u],
                        gates[2 * hid + u],
                        gates[3 * hid + u],
                    );
                    let tcu = f.tc[r * hid + u];
                    let dho = f.dh[r * hid + u] + s.carry_h[b * hid + u];
                    let dct = s.carry_c[b * hid + u] + dho * o * (one - tcu * tcu);
                    let cu = f.cin[r * hid + u];
                    da[u] = dct * gg * i * (one - i);
                    da[hid + u] = dct * cu * fg * (one - fg);
                    da[2 * hid + u] = dct * i * (one - gg * gg);
                    da[3 * hid + u] = dho * tcu * o * (one - o);
                    s.carry_c[b * hid + u] = dct * fg;
                }
            }
            gemm(
                bs,
                g4,
                hid,
                one,
                f.da,
                st(t, g4),
                w.w_hh,
                rm(0, hid),
                zero,
                s.new_h,
                rm(0, hid),
            )?;
            std::mem::swap(&mut s.carry_h, &mut s.new_h);
            for b in 0..bs {
                if reset[b * steps + t] {
                    s.carry_h[b * hid..][..hid].fill(zero);
                    s.carry_c[b * hid..][..hid].fill(zero);
                }
            }
        }
        if want_dx {
            let rows = bs * steps;
            ensure!(
                f.dx.len() >= rows * inp,
                "batched LSTM: buffers were made without backward"
            );
            gemm(
                rows,
                g4,
                inp,
                one,
                f.da,
                rm(0, g4),
                w.w_ih,
                rm(0, inp),
                zero,
                f.dx,
                rm(0, inp),
            )?;
        }
        Ok(())
    }
}

/// The LSTM memory's weights in the parameter buffers `p` of a model with `layout`.
pub fn weights<'a, S>(layout: &Layout, p: &GroupBufs<'a, S>) -> LstmWeights<'a, S> {
    LstmWeights::from_parts(TensorKind::LSTM.map(|k| layout.slice(p, k)))
}
