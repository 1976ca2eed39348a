//! The instruction encoder (word embedding + GRU, `metarim_core::nn::instr`), batched over the
//! episode segments of a minibatch: the same math as `instr_forward` / `instr_backward`, with
//! the recurrent products as GEMMs over all segments per token step.
//!
//! Two facts make it cheap: the embedding is a lookup, so the GRU's input side for a token,
//! `W_ih emb[tok] + b_ih`, is one row of a table over the vocabulary computed once per pass;
//! and the input-side gradients of every (segment, token) add up per vocabulary entry, so the
//! gradients of `W_ih` and of the embedding are two small GEMMs over the vocabulary.
//!
//! Invariants: segments are processed together in their given order, every sum in a fixed order
//! (token steps, then segments), single-threaded: the result depends only on the segments.
//! Buffers grow to the largest pass seen and are reused.

use anyhow::{anyhow, ensure, Result};
use metarim_core::mission::vocab::{PAD, VOCAB_SIZE};
use metarim_core::nn::dims::ModelDims;
use metarim_core::nn::instr::{instr_embedding_len, instr_param_len};
use metarim_core::nn::ops::gru_gate_grads;

use crate::batch::gemm::{axpy, gemm, rm, tr, Scalar};

/// Work space of batched instruction-encoder passes.
#[derive(Clone, Debug, Default)]
pub struct InstrBatch<S> {
    hidden: usize,
    segs: usize,
    steps: usize,
    toks: Vec<u16>,
    lens: Vec<usize>,
    table: Vec<S>,
    hs: Vec<S>,
    gates: Vec<S>,
    gh: Vec<S>,
    dh: Vec<S>,
    dprev: Vec<S>,
    dgi: Vec<S>,
    dgh: Vec<S>,
    dtab: Vec<S>,
}

fn grow<S: Copy>(v: &mut Vec<S>, len: usize, zero: S) {
    if v.len() < len {
        v.resize(len, zero);
    }
}

struct Parts<'a, S> {
    emb: &'a [S],
    w_ih: &'a [S],
    w_hh: &'a [S],
    b_ih: &'a [S],
    b_hh: &'a [S],
}

fn parts<'a, S>(d: &ModelDims, p: &'a [S]) -> Result<Parts<'a, S>> {
    let (h, wd) = (d.instr_hidden, d.word_dim);
    ensure!(
        p.len() >= instr_param_len(d),
        "instruction parameters too short"
    );
    let (emb, r) = p.split_at(instr_embedding_len(d));
    let (w_ih, r) = r.split_at(3 * h * wd);
    let (w_hh, r) = r.split_at(3 * h * h);
    let (b_ih, r) = r.split_at(3 * h);
    Ok(Parts {
        emb,
        w_ih,
        w_hh,
        b_ih,
        b_hh: &r[..3 * h],
    })
}

impl<S: Scalar> InstrBatch<S> {
    /// Empty work space (it grows with the passes).
    pub fn new() -> InstrBatch<S> {
        InstrBatch {
            hidden: 0,
            segs: 0,
            steps: 0,
            toks: Vec::new(),
            lens: Vec::new(),
            table: Vec::new(),
            hs: Vec::new(),
            gates: Vec::new(),
            gh: Vec::new(),
            dh: Vec::new(),
            dprev: Vec::new(),
            dgi: Vec::new(),
            dgh: Vec::new(),
            dtab: Vec::new(),
        }
    }

    /// Encodes every mission in `missions` (token lists as `tokenize` writes them); the
    /// embeddings are then [`InstrBatch::out`]. Errors for unknown tokens or missions longer
    /// than `d.max_tokens`, naming the segment.
    pub fn forward(&mut self, d: &ModelDims, params: &[S], missions: &[&[u16]]) -> Result<()> {
        let p = parts(d, params)?;
        let (h, wd) = (d.instr_hidden, d.word_dim);
        let g3 = 3 * h;
        let segs = missions.len();
        let mut steps = 0;
        self.lens.clear();
        for (s, m) in missions.iter().enumerate() {
            let mut n = 0;
            for &t in m.iter() {
                ensure!(
                    (t as usize) < VOCAB_SIZE,
                    "segment {s}: token {t} is not in the vocabulary"
                );
                n += usize::from(t != PAD);
            }
            ensure!(
                n <= d.max_tokens,
                "segment {s}: {n} tokens, more than {}",
                d.max_tokens
            );
            self.lens.push(n);
            steps = steps.max(n);
        }
        self.hidden = h;
        self.segs = segs;
        self.steps = steps;
        let zero = S::ZERO;
        grow(&mut self.toks, segs * steps.max(1), PAD);
        for (s, m) in missions.iter().enumerate() {
            let row = &mut self.toks[s * steps..(s + 1) * steps];
            row.fill(PAD);
            for (o, t) in row.iter_mut().zip(m.iter().filter(|&&t| t != PAD)) {
                *o = *t;
            }
        }
        // Input side of every vocabulary entry.
        grow(&mut self.table, VOCAB_SIZE * g3, zero);
        let one = S::ONE;
        gemm(
            VOCAB_SIZE,
            wd,
            g3,
            one,
            p.emb,
            rm(0, wd),
            p.w_ih,
            tr(0, wd),
            zero,
            &mut self.table,
            rm(0, g3),
        )?;
        for v in 0..VOCAB_SIZE {
            for (o, b) in self.table[v * g3..][..g3].iter_mut().zip(p.b_ih) {
                *o = *b + *o;
            }
        }
        grow(&mut self.hs, (steps + 1) * segs * h, zero);
        grow(&mut self.gates, steps * segs * 4 * h, zero);
        grow(&mut self.gh, segs * g3, zero);
        self.hs[..segs * h].fill(zero);
        for t in 0..steps {
            let (prev, next) = self.hs.split_at_mut((t + 1) * segs * h);
            let prev = &prev[t * segs * h..];
            gemm(
                segs,
                h,
                g3,
                one,
                prev,
                rm(0, h),
                p.w_hh,
                tr(0, h),
                zero,
                &mut self.gh,
                rm(0, g3),
            )?;
            for s in 0..segs {
                let hp = &prev[s * h..][..h];
                let hn = &mut next[s * h..][..h];
                if t >= self.lens[s] {
                    hn.copy_from_slice(hp);
                    continue;
                }
                let tok = self.toks[s * steps + t] as usize;
                let gx = &self.table[tok * g3..][..g3];
                let gh = &self.gh[s * g3..][..g3];
                let c = &mut self.gates[(t * segs + s) * 4 * h..][..4 * h];
                for u in 0..h {
                    let r = (gx[u] + gh[u] + p.b_hh[u]).act_sigmoid();
                    let z = (gx[h + u] + gh[h + u] + p.b_hh[h + u]).act_sigmoid();
                    let hn_u = gh[2 * h + u] + p.b_hh[2 * h + u];
                    let n = (gx[2 * h + u] + r * hn_u).act_tanh();
                    c[u] = r;
                    c[h + u] = z;
                    c[2 * h + u] = n;
                    c[3 * h + u] = hn_u;
                    hn[u] = (one - z) * n + z * hp[u];
                }
            }
        }
        Ok(())
    }

    /// The embeddings of the last forward pass, `[segments x instr_hidden]`.
    pub fn out(&self) -> &[S] {
        let n = self.segs * self.hidden;
        &self.hs[self.steps * n..(self.steps + 1) * n]
    }

    /// Backward of the last forward given the embeddings' gradients `d_out`
    /// (`[segments x instr_hidden]`): ACCUMULATES into `grads` (the instruction block's layout).
    pub fn backward(
        &mut self,
        d: &ModelDims,
        params: &[S],
        d_out: &[S],
        grads: &mut [S],
    ) -> Result<()> {
        let p = parts(d, params)?;
        let (h, wd) = (d.instr_hidden, d.word_dim);
        let g3 = 3 * h;
        let (segs, steps) = (self.segs, self.steps);
        ensure!(d_out.len() >= segs * h, "instruction gradients too short");
        ensure!(
            grads.len() >= instr_param_len(d),
            "instruction gradient buffer too short"
        );
        if segs == 0 || steps == 0 {
            return Ok(());
        }
        let (zero, one) = (S::ZERO, S::ONE);
        grow(&mut self.dh, segs * h, zero);
        grow(&mut self.dprev, segs * h, zero);
        grow(&mut self.dgi, steps * segs * g3, zero);
        grow(&mut self.dgh, steps * segs * g3, zero);
        self.dh[..segs * h].copy_from_slice(&d_out[..segs * h]);
        for t in (0..steps).rev() {
            for s in 0..segs {
                let dh = &self.dh[s * h..][..h];
                let dp = &mut self.dprev[s * h..][..h];
                let at = (t * segs + s) * g3;
                if t >= self.lens[s] {
                    dp.copy_from_slice(dh);
                    self.dgi[at..][..g3].fill(zero);
                    self.dgh[at..][..g3].fill(zero);
                    continue;
                }
                dp.fill(zero);
                let c = &self.gates[(t * segs + s) * 4 * h..][..4 * h];
                let hp = &self.hs[(t * segs + s) * h..][..h];
                let (gi, gh) = (&mut self.dgi[at..][..g3], &mut self.dgh[at..][..g3]);
                gru_gate_grads(c, hp, dh, gi, gh, dp);
            }
            let dgh = &self.dgh[t * segs * g3..][..segs * g3];
            gemm(
                segs,
                g3,
                h,
                one,
                dgh,
                rm(0, g3),
                p.w_hh,
                rm(0, h),
                one,
                &mut self.dprev,
                rm(0, h),
            )?;
            std::mem::swap(&mut self.dh, &mut self.dprev);
        }
        let (g_emb, r) = grads.split_at_mut(instr_embedding_len(d));
        let (gw_ih, r) = r.split_at_mut(g3 * wd);
        let (gw_hh, r) = r.split_at_mut(g3 * h);
        let (gb_ih, r) = r.split_at_mut(g3);
        let gb_hh = &mut r[..g3];
        let rows = steps * segs;
        gemm(
            g3,
            rows,
            h,
            one,
            &self.dgh,
            tr(0, g3),
            &self.hs,
            rm(0, h),
            one,
            gw_hh,
            rm(0, h),
        )?;
        // Input-side gradients summed per vocabulary entry (token steps, then segments).
        grow(&mut self.dtab, VOCAB_SIZE * g3, zero);
        self.dtab[..VOCAB_SIZE * g3].fill(zero);
        for t in 0..steps {
            for s in 0..segs {
                let at = (t * segs + s) * g3;
                axpy(one, &self.dgh[at..][..g3], gb_hh);
                if t >= self.lens[s] {
                    continue;
                }
                let gi = &self.dgi[at..][..g3];
                axpy(one, gi, gb_ih);
                let tok = self.toks[s * steps + t] as usize;
                let row = self
                    .dtab
                    .get_mut(tok * g3..(tok + 1) * g3)
                    .ok_or_else(|| anyhow!("token {tok} outside the vocabulary"))?;
                axpy(one, gi, row);
            }
        }
        gemm(
            g3,
            VOCAB_SIZE,
            wd,
            one,
            &self.dtab,
            tr(0, g3),
            p.emb,
            rm(0, wd),
            one,
            gw_ih,
            rm(0, wd),
        )?;
        gemm(
            VOCAB_SIZE,
            g3,
            wd,
            one,
            &self.dtab,
            rm(0, g3),
            p.w_ih,
            rm(0, wd),
            one,
            g_emb,
            rm(0, wd),
        )?;
        Ok(())
    }
}
