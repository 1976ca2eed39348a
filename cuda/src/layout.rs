//! The model's sizes as kernel defines, and the host's mirror of every per-sample layout in
//! `kernels/model.cuh` (offsets into caches, deltas and parameter blocks).
//!
//! Invariants: [`ModelLayout::new`] is the only constructor and rejects what the kernels do not
//! implement (an error naming it); the sizes here equal the core's where both exist (tests),
//! and equal what a compiled module reports through its `layout_info` kernel (checked at load
//! time by [`crate::engine`]).

use metarim_core::mission::vocab::VOCAB_SIZE;
use metarim_core::nn::dims::{CellKind, CommUpdate, EncoderKind, MemoryKind, ModelDims};
use metarim_core::nn::encoder::encoder_sizes;

use crate::nvrtc::Define;
use crate::{Error, Result};

/// Most RIM modules the kernels support (activity bit masks are 16 bits on the host).
pub const MAX_MODULES: usize = 16;
/// Dynamic shared memory a block may use without opting in (bytes).
pub const SMEM_LIMIT: usize = 48 * 1024;
/// Loss terms per sample (`PpoTerms` fields).
pub const N_TERMS: usize = 9;

/// How many constants `layout_info` reports.
pub const LAYOUT_LEN: usize = 29;

/// The layout constants `layout_info` reports, in its order.
pub const LAYOUT_FIELDS: [&str; LAYOUT_LEN] = [
    "RIM_CACHE",
    "RIM_DELTA",
    "LSTM_CACHE",
    "LSTM_DELTA",
    "ENC_PARAMS",
    "ENC_CACHE",
    "ENC_DELTA",
    "INSTR_PARAMS",
    "INSTR_CACHE",
    "INSTR_DELTA",
    "HEADS_PARAMS",
    "HEADS_CACHE",
    "HEADS_DELTA",
    "RF_SMEM",
    "RB_SMEM",
    "LF_SMEM",
    "LB_SMEM",
    "HF_SMEM",
    "HB_SMEM",
    "ENC_FWD_SMEM",
    "ENC_BWD_SMEM",
    "INSTR_FWD_SMEM",
    "INSTR_BWD_SMEM",
    "RNN_LEN",
    "N_TERMS",
    "EP_FW",
    "EC_FILM",
    "ED_FILM",
    "RSL",
];

/// Every size and offset of `kernels/model.cuh` for one model, grouped by block, plus the
/// samples per block. Field names are `model.cuh`'s macros in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are model.cuh's macros, named alike (lower case)
pub struct ModelLayout {
    pub dims: ModelDims,
    pub n: usize,
    pub k: usize,
    pub hid: usize,
    pub input: usize,
    pub nh: usize,
    pub qw: usize,
    pub uw: usize,
    pub cw: usize,
    /// The memory's output width (`N * H`), read by the heads.
    pub mw: usize,
    /// The RIM cell: module RNN blocks, the step cache and the deltas.
    pub rim: RimLayout,
    /// The LSTM memory's cache and deltas.
    pub lstm: LstmLayout,
    /// The observation encoder (with its FiLM parts).
    pub enc: EncoderLayout,
    /// The instruction GRU.
    pub instr: InstrLayout,
    /// The actor and critic heads.
    pub heads: HeadsLayout,
    /// Shared memory per sample of each kernel family, and the samples per block.
    pub smem: SmemLayout,
}

/// The RIM cell's part of `model.cuh`: one module's RNN block, the step cache, the deltas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // model.cuh's macros, lower case
pub struct RimLayout {
    pub rsl: usize,
    pub rgh: usize,
    pub rnn_cache: usize,
    pub rnn_w_hh: usize,
    pub rnn_b_ih: usize,
    pub rnn_b_hh: usize,
    pub rnn_len: usize,
    pub rc_u: usize,
    pub rc_ht: usize,
    pub rc_o: usize,
    pub rim_cache: usize,
    pub rd_dkx: usize,
    pub rd_dvx: usize,
    pub rd_dq: usize,
    pub rd_gi: usize,
    pub rd_gh: usize,
    pub rd_dcq: usize,
    pub rd_dck: usize,
    pub rd_dcv: usize,
    pub rd_dpg: usize,
    pub rd_dpo: usize,
    pub rim_delta: usize,
}

/// The LSTM memory's part of `model.cuh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // model.cuh's macros, lower case
pub struct LstmLayout {
    pub lstm_cache: usize,
    pub lstm_delta: usize,
}

/// The observation encoder's part of `model.cuh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // model.cuh's macros, lower case
pub struct EncoderLayout {
    pub film_n: usize,
    pub ep_fw: usize,
    pub enc_params: usize,
    pub ec_film: usize,
    pub enc_cache: usize,
    pub ed_film: usize,
    pub enc_delta: usize,
}

/// The instruction encoder's part of `model.cuh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // model.cuh's macros, lower case
pub struct InstrLayout {
    pub ig3: usize,
    pub ip_w_ih: usize,
    pub ip_w_hh: usize,
    pub ip_b_ih: usize,
    pub ip_b_hh: usize,
    pub instr_params: usize,
    pub instr_cache: usize,
    pub id_gh: usize,
    pub instr_delta: usize,
}

/// The heads' part of `model.cuh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // model.cuh's macros, lower case
pub struct HeadsLayout {
    pub hp_a_b1: usize,
    pub hp_a_w2: usize,
    pub hp_a_b2: usize,
    pub hp_c_w1: usize,
    pub hp_c_b1: usize,
    pub hp_c_w2: usize,
    pub hp_c_b2: usize,
    pub heads_params: usize,
    pub heads_cache: usize,
    pub hd_dv: usize,
    pub hd_da: usize,
    pub hd_dc: usize,
    pub heads_delta: usize,
}

/// Shared memory per sample (floats) of each kernel family, and the samples per block of the
/// per-sample kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // model.cuh's macros, lower case
pub struct SmemLayout {
    pub rf_smem: usize,
    pub rb_smem: usize,
    pub lf_smem: usize,
    pub lb_smem: usize,
    pub hf_smem: usize,
    pub hb_smem: usize,
    pub enc_fwd_smem: usize,
    pub enc_bwd_smem: usize,
    pub instr_fwd_smem: usize,
    pub instr_bwd_smem: usize,
    pub spb_rim: usize,
    pub spb_lstm: usize,
    pub spb_heads: usize,
}

fn unsupported(what: String) -> Error {
    Error::Unsupported { what }
}

/// Samples per block so that `floats_per_sample` fit the shared-memory limit, at most `cap`.
fn samples_per_block(floats_per_sample: usize, cap: usize) -> Result<usize> {
    let bytes = floats_per_sample * 4;
    if bytes > SMEM_LIMIT {
        return Err(unsupported(format!(
            "a sample needs {bytes} B of shared memory, more than the {SMEM_LIMIT} B a block \
             gets without opting in"
        )));
    }
    Ok((SMEM_LIMIT / bytes.max(1)).clamp(1, cap))
}

impl ModelLayout {
    /// The layout of `dims`; errors for what the kernels do not implement (more than
    /// [`MAX_MODULES`] modules, blocks that do not fit in shared memory).
    pub fn new(dims: &ModelDims) -> Result<ModelLayout> {
        let r = &dims.rim;
        if r.n_modules == 0 || r.n_modules > MAX_MODULES || r.k_active == 0 {
            return Err(unsupported(format!(
                "{} modules, {} active (the kernels take 1..={MAX_MODULES} modules)",
                r.n_modules, r.k_active
            )));
        }
        if r.input != dims.memory_input() || dims.n_actions == 0 || dims.head_hidden == 0 {
            return Err(Error::BadInput {
                what: "model dimensions are inconsistent (see core::nn::params::Layout)".into(),
            });
        }
        if dims.encoder == EncoderKind::Bow && dims.bow_dim == 0 {
            return Err(Error::BadInput {
                what: "bag-of-words encoder with bow_dim 0".into(),
            });
        }
        let w = Widths::of(dims);
        let nh = w.nh;
        let rim = RimLayout::new(dims, &w);
        let enc = EncoderLayout::new(dims);
        let instr = InstrLayout::new(dims);
        Ok(ModelLayout {
            dims: *dims,
            n: w.n,
            k: r.k_active,
            hid: w.hid,
            input: r.input,
            nh,
            qw: w.qw,
            uw: w.uw,
            cw: w.cw,
            mw: nh,
            rim,
            lstm: LstmLayout {
                lstm_cache: 5 * nh,
                lstm_delta: 4 * nh,
            },
            enc,
            instr,
            heads: HeadsLayout::new(dims, nh),
            smem: SmemLayout::new(dims, &w, &rim, &enc, &instr)?,
        })
    }
}

/// The RIM's widths every block's layout starts from (`model.cuh`'s `N_MOD`, `HID`, `NH`,
/// `QW`, `UW`, `CW`), computed once.
struct Widths {
    n: usize,
    hid: usize,
    nh: usize,
    qw: usize,
    uw: usize,
    cw: usize,
}

impl Widths {
    fn of(dims: &ModelDims) -> Widths {
        let r = &dims.rim;
        Widths {
            n: r.n_modules,
            hid: r.hidden,
            nh: r.n_modules * r.hidden,
            qw: r.in_heads * r.d_k,
            uw: r.in_heads * r.d_v,
            cw: if r.communication {
                r.c_heads * r.c_k
            } else {
                0
            },
        }
    }
}

impl RimLayout {
    fn new(dims: &ModelDims, w: &Widths) -> RimLayout {
        let r = &dims.rim;
        let (n, hid, nh, qw, uw, cw) = (w.n, w.hid, w.nh, w.qw, w.uw, w.cw);
        let comm_nh = if r.communication { nh } else { 0 };
        // Module cells: the LSTM's four gates and five cached vectors per unit against the
        // GRU's three and four; its cell state c follows h in the state row.
        let lstm = r.cell == CellKind::Lstm;
        let rsl = if lstm { 2 * nh } else { nh };
        let rgh = if lstm { 4 * hid } else { 3 * hid };
        let rnn_cache = if lstm { 5 * hid } else { 4 * hid };
        let rnn_w_hh = rgh * uw;
        let rnn_b_ih = rnn_w_hh + rgh * hid;
        let rnn_b_hh = rnn_b_ih + rgh;
        // Step cache.
        let rc_kx = 2 * n;
        let rc_vx = rc_kx + qw;
        let rc_q = rc_vx + uw;
        let rc_ax = rc_q + n * qw;
        let rc_u = rc_ax + n * r.in_heads;
        let rc_rnn = rc_u + n * uw;
        let rc_ht = rc_rnn + n * rnn_cache;
        let rc_cq = rc_ht + comm_nh;
        let rc_p = rc_cq + 3 * n * cw;
        let rc_o = rc_p
            + if r.communication {
                n * r.c_heads * n
            } else {
                0
            };
        let rc_gate = rc_o + n * cw;
        // Deltas.
        let rd_dvx = qw;
        let rd_dq = rd_dvx + uw;
        let rd_gi = rd_dq + n * qw;
        let rd_gh = rd_gi + n * rgh;
        let rd_dcq = rd_gh + n * rgh;
        let rd_dck = rd_dcq + n * cw;
        let rd_dcv = rd_dck + n * cw;
        let rd_dpg = rd_dcv + n * cw;
        let rd_dpo = rd_dpg + comm_nh;
        RimLayout {
            rsl,
            rgh,
            rnn_cache,
            rnn_w_hh,
            rnn_b_ih,
            rnn_b_hh,
            rnn_len: rnn_b_hh + rgh,
            rc_u,
            rc_ht,
            rc_o,
            rim_cache: rc_gate + 2 * comm_nh,
            rd_dkx: 0,
            rd_dvx,
            rd_dq,
            rd_gi,
            rd_gh,
            rd_dcq,
            rd_dck,
            rd_dcv,
            rd_dpg,
            rd_dpo,
            rim_delta: rd_dpo + comm_nh,
        }
    }
}

impl EncoderLayout {
    fn new(dims: &ModelDims) -> EncoderLayout {
        // The parameter and cache sizes are the core's (the kernels keep its layouts); the
        // deltas are the kernels' own.
        let s = encoder_sizes(dims);
        let (cin, c0, c1, c2) = (s.cin, s.c0, s.c1, s.c2);
        // FiLM: the coefficients per sample, the generator after the convs' parameters, the
        // coefficients and unmodulated pre-activations after the plain cache, the coefficients'
        // gradients after the plain deltas.
        let film_n = s.nf;
        let ep_fw = s.emb + s.w1 + c0 + s.w2 + c1 + s.w3 + c2;
        let ec_film = s.z1 + s.pool + s.z2 + c2;
        let ed_film = c2 + c1 * 4 + c0 * 9 + if s.bow { cin * 49 } else { 0 };
        EncoderLayout {
            film_n,
            ep_fw,
            enc_params: s.params,
            ec_film,
            enc_cache: s.cache,
            ed_film,
            enc_delta: ed_film + film_n,
        }
    }
}

impl InstrLayout {
    fn new(dims: &ModelDims) -> InstrLayout {
        let (hi, wd, mt) = (dims.instr_hidden, dims.word_dim, dims.max_tokens);
        let ig3 = 3 * hi;
        let ip_w_ih = VOCAB_SIZE * wd;
        let ip_w_hh = ip_w_ih + ig3 * wd;
        let ip_b_ih = ip_w_hh + ig3 * hi;
        let ip_b_hh = ip_b_ih + ig3;
        InstrLayout {
            ig3,
            ip_w_ih,
            ip_w_hh,
            ip_b_ih,
            ip_b_hh,
            instr_params: ip_b_hh + ig3,
            instr_cache: (mt + 1) * hi + mt * 4 * hi,
            id_gh: ig3,
            instr_delta: 2 * ig3 + wd,
        }
    }
}

impl HeadsLayout {
    /// The heads of `dims` reading a memory output `mw` wide.
    fn new(dims: &ModelDims, mw: usize) -> HeadsLayout {
        let (hh, na) = (dims.head_hidden, dims.n_actions);
        let hp_a_b1 = hh * mw;
        let hp_a_w2 = hp_a_b1 + hh;
        let hp_a_b2 = hp_a_w2 + na * hh;
        let hp_c_w1 = hp_a_b2 + na;
        let hp_c_b1 = hp_c_w1 + hh * mw;
        let hp_c_w2 = hp_c_b1 + hh;
        let hp_c_b2 = hp_c_w2 + hh;
        let hd_dv = na;
        let hd_da = hd_dv + 1;
        let hd_dc = hd_da + hh;
        HeadsLayout {
            hp_a_b1,
            hp_a_w2,
            hp_a_b2,
            hp_c_w1,
            hp_c_b1,
            hp_c_w2,
            hp_c_b2,
            heads_params: hp_c_b2 + 1,
            heads_cache: 2 * hh,
            hd_dv,
            hd_da,
            hd_dc,
            heads_delta: hd_dc + hh,
        }
    }
}

impl SmemLayout {
    /// Shared memory of every kernel family of `d` (with its widths `w` and the blocks'
    /// layouts `rim`, `enc` and `instr`); an error when a kernel's sample does not fit in a
    /// block.
    fn new(
        d: &ModelDims,
        w: &Widths,
        rim: &RimLayout,
        enc: &EncoderLayout,
        instr: &InstrLayout,
    ) -> Result<SmemLayout> {
        let r = &d.rim;
        let (n, nh, qw, uw, cw) = (w.n, w.nh, w.qw, w.uw, w.cw);
        let mw = nh;
        let rcl = rim.rsl - nh;
        let rgh = rim.rgh;
        let (hh, na) = (d.head_hidden, d.n_actions);
        let cin = encoder_sizes(d).cin;
        let [c0, c1, c2] = d.conv_channels;
        let film_n = enc.film_n;
        let (hi, wd, ig3) = (d.instr_hidden, d.word_dim, instr.ig3);
        // (The attention-matrix parts are reserved with or without communication, as in
        // model.cuh.)
        let rf_smem = r.input
            + nh
            + qw
            + uw
            + n * qw
            + n * r.in_heads
            + 2 * n
            + n * uw
            + nh
            + 4 * n * cw
            + n * r.c_heads * n
            + rcl;
        let rb_smem = 5 * nh
            + n
            + 4 * n * cw
            + n * r.c_heads * n
            + 2 * n * rgh
            + n * uw
            + n * r.in_heads
            + n * qw
            + qw
            + uw
            + rcl;
        let (lf_smem, lb_smem) = (r.input + 2 * mw, 6 * mw);
        let (hf_smem, hb_smem) = (mw + 2 * hh, na + 1 + 2 * hh);
        // The feature normalisation's features and statistics (model.cuh ENC_NORM_SMEM).
        let norm = if d.feature_norm { c2 + 4 } else { 0 };
        let enc_fwd_smem = cin * 49 + c0 * 36 + c0 * 9 + c1 * 4 + film_n + norm;
        let enc_bwd_smem = c2 + c1 * 4 + c0 * 9 + film_n + norm;
        let instr_fwd_smem = hi + wd;
        let instr_bwd_smem = 2 * hi + 2 * ig3;
        for (what, floats) in [
            ("encoder forward", enc_fwd_smem),
            ("encoder backward", enc_bwd_smem),
            ("instruction forward", instr_fwd_smem),
            ("instruction backward", instr_bwd_smem),
        ] {
            if floats * 4 > SMEM_LIMIT {
                return Err(unsupported(format!(
                    "the {what} kernel needs {} B of shared memory",
                    floats * 4
                )));
            }
        }
        Ok(SmemLayout {
            rf_smem,
            rb_smem,
            lf_smem,
            lb_smem,
            hf_smem,
            hb_smem,
            enc_fwd_smem,
            enc_bwd_smem,
            instr_fwd_smem,
            instr_bwd_smem,
            spb_rim: samples_per_block(rf_smem.max(rb_smem), 8)?,
            spb_lstm: samples_per_block(lf_smem.max(lb_smem), 8)?,
            spb_heads: samples_per_block(hf_smem.max(hb_smem), 16)?,
        })
    }
}

impl ModelLayout {
    /// The values `layout_info` must report, in [`LAYOUT_FIELDS`] order.
    pub fn expected_info(&self) -> [u32; LAYOUT_LEN] {
        let v = [
            self.rim.rim_cache,
            self.rim.rim_delta,
            self.lstm.lstm_cache,
            self.lstm.lstm_delta,
            self.enc.enc_params,
            self.enc.enc_cache,
            self.enc.enc_delta,
            self.instr.instr_params,
            self.instr.instr_cache,
            self.instr.instr_delta,
            self.heads.heads_params,
            self.heads.heads_cache,
            self.heads.heads_delta,
            self.smem.rf_smem,
            self.smem.rb_smem,
            self.smem.lf_smem,
            self.smem.lb_smem,
            self.smem.hf_smem,
            self.smem.hb_smem,
            self.smem.enc_fwd_smem,
            self.smem.enc_bwd_smem,
            self.smem.instr_fwd_smem,
            self.smem.instr_bwd_smem,
            self.rim.rnn_len,
            N_TERMS,
            self.enc.ep_fw,
            self.enc.ec_film,
            self.enc.ed_film,
            self.rim.rsl,
        ];
        v.map(|x| x as u32)
    }

    /// The state width (`[h | c]` for the LSTM memory and for RIM modules with LSTM cells;
    /// `core::nn::policy::state_len`).
    pub fn state_len(&self) -> usize {
        match self.dims.memory {
            MemoryKind::Rim => self.rim.rsl,
            MemoryKind::Lstm => 2 * self.mw,
        }
    }

    /// The `-D` defines of `kernels/model.cuh`.
    pub fn defines(&self) -> Vec<Define> {
        let d = &self.dims;
        let r = &d.rim;
        let list: [(&str, usize); 28] = [
            ("N_MOD", r.n_modules),
            ("K_ACT", r.k_active),
            ("HID", r.hidden),
            ("INPUT", r.input),
            ("D_K", r.d_k),
            ("D_V", r.d_v),
            ("IN_HEADS", r.in_heads),
            ("C_HEADS", r.c_heads),
            ("C_K", r.c_k),
            ("COMM", usize::from(r.communication)),
            (
                "COMM_INTERP",
                usize::from(r.comm_update == CommUpdate::Interpolate),
            ),
            ("CELL_LSTM", usize::from(r.cell == CellKind::Lstm)),
            ("ENC_BOW", usize::from(d.encoder == EncoderKind::Bow)),
            ("BOW_DIM", d.bow_dim),
            ("C0", d.conv_channels[0]),
            ("C1", d.conv_channels[1]),
            ("C2", d.conv_channels[2]),
            ("FILM", usize::from(d.film)),
            ("FEATURE_NORM", usize::from(d.feature_norm)),
            ("WORD_DIM", d.word_dim),
            ("INSTR_H", d.instr_hidden),
            ("MAX_TOK", d.max_tokens),
            ("VOCAB", VOCAB_SIZE),
            ("HEAD_H", d.head_hidden),
            ("N_ACT", d.n_actions),
            ("SPB_RIM", self.smem.spb_rim),
            ("SPB_LSTM", self.smem.spb_lstm),
            ("SPB_HEADS", self.smem.spb_heads),
        ];
        list.iter()
            .map(|(k, v)| Define {
                name: (*k).to_string(),
                value: format!("{v}u"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarim_core::nn::dims::{PAPER, TINY};
    use metarim_core::nn::encoder::{
        encoder_cache_layout, encoder_cache_len, encoder_param_len, encoder_tensors,
    };
    use metarim_core::nn::heads::{heads_cache_len, heads_param_len};
    use metarim_core::nn::instr::{instr_cache_len, instr_param_len};
    use metarim_core::nn::policy::state_len;
    use metarim_core::nn::rim::{rnn_gates, rnn_module_len, step_cache_len};

    #[test]
    fn sizes_equal_the_cores() {
        for mut d in [PAPER, TINY] {
            for (bow, comm, film, norm, cell) in [
                (false, true, false, false, CellKind::Gru),
                (true, false, false, false, CellKind::Gru),
                (true, true, true, false, CellKind::Gru),
                (false, false, true, false, CellKind::Gru),
                (false, true, false, false, CellKind::Lstm),
                (true, false, true, false, CellKind::Lstm),
                (true, true, true, true, CellKind::Gru),
                (false, false, false, true, CellKind::Lstm),
            ] {
                d.film = film;
                d.feature_norm = norm;
                d.rim.cell = cell;
                d.encoder = if bow {
                    EncoderKind::Bow
                } else {
                    EncoderKind::Conv
                };
                d.rim.communication = comm;
                let l = ModelLayout::new(&d).unwrap();
                assert_eq!(l.rim.rim_cache, step_cache_len(&d.rim));
                assert_eq!(l.rim.rnn_len, rnn_module_len(&d.rim));
                assert_eq!(l.rim.rgh, rnn_gates(&d.rim) * d.rim.hidden);
                assert_eq!(l.state_len(), state_len(&d));
                assert_eq!(l.enc.enc_params, encoder_param_len(&d));
                assert_eq!(l.enc.enc_cache, encoder_cache_len(&d));
                let cl = encoder_cache_layout(&d);
                assert_eq!(
                    (l.enc.ec_film, l.enc.ec_film + l.enc.film_n),
                    (cl.film, cl.raw)
                );
                let t = encoder_tensors(&d);
                let film_w = t.as_slice().iter().find(|t| t.name == "film.weight");
                assert_eq!(film_w.map(|t| t.offset), film.then_some(l.enc.ep_fw));
                assert_eq!(l.instr.instr_params, instr_param_len(&d));
                assert_eq!(l.instr.instr_cache, instr_cache_len(&d));
                assert_eq!(l.heads.heads_params, heads_param_len(&d));
                assert_eq!(l.heads.heads_cache, heads_cache_len(&d));
                assert!(l.smem.spb_rim >= 1 && l.smem.rf_smem * 4 * l.smem.spb_rim <= SMEM_LIMIT);
                assert!(l.smem.rb_smem * 4 * l.smem.spb_rim <= SMEM_LIMIT);
            }
        }
        let l = ModelLayout::new(&PAPER).unwrap();
        assert_eq!(l.smem.spb_rim, 1, "Paper: one sample per block");
        assert_eq!(l.defines().len(), 28);
    }

    #[test]
    fn unsupported_models_are_errors() {
        // RIM modules with LSTM cells are implemented (they were refused before the kernels had
        // them): four gates, five cached vectors per unit, the state [h | c].
        let mut d = TINY;
        d.rim.cell = CellKind::Lstm;
        let l = ModelLayout::new(&d).unwrap();
        assert_eq!((l.rim.rgh, l.rim.rnn_cache), (4 * l.hid, 5 * l.hid));
        assert_eq!((l.rim.rsl, l.state_len()), (2 * l.nh, 2 * l.nh));
        assert!(l
            .defines()
            .iter()
            .any(|x| x.name == "CELL_LSTM" && x.value == "1u"));
        // The FiLM encoder is implemented (it was refused before the kernels had it).
        let d = ModelDims { film: true, ..TINY };
        let l = ModelLayout::new(&d).unwrap();
        let [c0, c1, c2] = d.conv_channels;
        assert_eq!(l.enc.film_n, 2 * (c0 + c1 + c2));
        assert!(l
            .defines()
            .iter()
            .any(|x| x.name == "FILM" && x.value == "1u"));
        let mut d = TINY;
        d.rim.n_modules = 17;
        assert!(ModelLayout::new(&d).is_err());
        let d = ModelDims {
            feature_norm: true,
            ..TINY
        };
        // Feature normalisation (refused before the kernels had it): its define, and room for
        // the features and their statistics in both encoder kernels' shared memory.
        let l = ModelLayout::new(&d).unwrap();
        assert!(l
            .defines()
            .iter()
            .any(|x| x.name == "FEATURE_NORM" && x.value == "1u"));
        let plain = ModelLayout::new(&TINY).unwrap();
        let extra = d.conv_channels[2] + 4;
        assert_eq!(l.smem.enc_fwd_smem, plain.smem.enc_fwd_smem + extra);
        assert_eq!(l.smem.enc_bwd_smem, plain.smem.enc_bwd_smem + extra);
        assert_eq!(
            l.enc, plain.enc,
            "no parameters, cache or deltas of its own"
        );
        let mut d = TINY;
        d.rim.input += 1;
        assert!(ModelLayout::new(&d).is_err());
    }
}
