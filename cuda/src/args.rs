//! The typed argument list of every kernel entry point: one struct per `extern "C"` function of
//! `kernels/`, its fields the kernel's parameters by name and in order, launched with
//! [`crate::exec::launch_typed`] (the engine's call sites name every argument; none writes a
//! raw list).
//!
//! Invariants:
//! - Each struct's [`KernelArgs::ENTRY`] is generated from its fields: the parameter names
//!   (checked against the `.cu` declarations by `kernel::tests`) and kinds, whose one-letter
//!   codes ([`Entry::sig`]) are checked against the emulator's C++ signatures and the PTX
//!   `.param` types (`cuda/tests/ptx.rs`), so a struct that disagrees with its kernel fails a
//!   test, and a launch that disagrees with its entry is an error, not undefined behaviour.
//! - Field types: [`Ptr<T>`] for `T*` (typed: a `u16` buffer cannot be passed for a `float*`),
//!   `usize` for an `unsigned int` size or index (checked to fit in 32 bits when launched, the
//!   error naming the parameter), `u32` for an `unsigned int` flag, `f32` for `float`.
//! - The fields are named as the `.cu` parameters; what each means is written at the kernel.
//! - A field may instead be a parameter group ([`RimWeights`], [`MemoryBwd`]): a struct of
//!   parameters that several kernels take in the same order, flattened in place into the entry's
//!   parameter list under its own field names (so the kernel's list is what the `.cu` declares).

use crate::exec::{Arg, ArgType, KernelArgs, Ptr};
use crate::kernel::{ArgKind, Entry, Param};
use crate::Result;

/// One field of a kernel's argument struct: a single parameter (any [`ArgType`], named as the
/// field) or a parameter group (named by its own fields).
pub trait ArgFields: Copy {
    /// The group's parameter names in order; empty for a single parameter.
    const NAMES: &'static [&'static str];
    /// The parameters' kinds in order (one for a single parameter).
    const KINDS: &'static [ArgKind];
    /// Append this field's arguments to `out` (`field` names a single parameter in errors).
    fn push_args(self, entry: &str, field: &str, out: &mut Vec<Arg>) -> Result<()>;
}

impl<T: ArgType> ArgFields for T {
    const NAMES: &'static [&'static str] = &[];
    const KINDS: &'static [ArgKind] = &[T::KIND];
    fn push_args(self, entry: &str, field: &str, out: &mut Vec<Arg>) -> Result<()> {
        out.push(self.to_arg(entry, field)?);
        Ok(())
    }
}

/// The flat parameter list of an argument struct whose fields are `(name, group names, kinds)`;
/// `N` must be the number of parameters (a mismatch fails at compile time).
const fn flatten<const N: usize>(
    fields: &[(&'static str, &'static [&'static str], &'static [ArgKind])],
) -> [Param; N] {
    let mut out = [Param {
        name: "",
        kind: ArgKind::U32,
    }; N];
    let (mut i, mut k) = (0, 0);
    while i < fields.len() {
        let (name, names, kinds) = fields[i];
        let mut j = 0;
        while j < kinds.len() {
            out[k] = Param {
                name: if names.is_empty() { name } else { names[j] },
                kind: kinds[j],
            };
            k += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(k == N, "parameter count");
    out
}

/// Defines one parameter group: a struct of kernel parameters taken by several entry points.
macro_rules! arg_group {
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident: $ty:ty),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        #[allow(missing_docs)] // the fields are the kernels' parameters, named alike
        pub struct $name {
            $(pub $field: $ty,)*
        }

        impl ArgFields for $name {
            const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];
            const KINDS: &'static [ArgKind] = &[$(<$ty as ArgType>::KIND),*];
            fn push_args(self, entry: &str, _: &str, out: &mut Vec<Arg>) -> Result<()> {
                $(out.push(self.$field.to_arg(entry, stringify!($field))?);)*
                Ok(())
            }
        }
    };
}

arg_group! {
    /// The RIM's nine weight tensors, first in `rim_fwd_step` and `rim_bwd_step` (without
    /// communication the five comm pointers repeat the key projection; the kernels do not read
    /// them). The `.cu` side's list: `RIM_TENSOR_PARAMS` in `kernels/model.cuh`.
    RimWeights {
        w_k: Ptr<f32>,
        w_v: Ptr<f32>,
        w_q: Ptr<f32>,
        rnn: Ptr<f32>,
        c_q: Ptr<f32>,
        c_k: Ptr<f32>,
        c_v: Ptr<f32>,
        c_g: Ptr<f32>,
        c_o: Ptr<f32>,
    }
}

arg_group! {
    /// The operands of one memory step backward, after the weights in `rim_bwd_step` and
    /// `lstm_bwd_step`: the step's states read and cache, the loss and carried state gradients,
    /// the episode starts, then the outputs (carried gradient, input gradient, deltas). The
    /// `.cu` side's list: `MEMORY_BWD_PARAMS` in `kernels/model.cuh`.
    MemoryBwd {
        state_in: Ptr<f32>,
        cache: Ptr<f32>,
        dh_loss: Ptr<f32>,
        carry: Ptr<f32>,
        reset: Ptr<u8>,
        carry_out: Ptr<f32>,
        dx: Ptr<f32>,
        delta: Ptr<f32>,
        batch: usize,
    }
}

/// Defines one struct per entry point and its [`KernelArgs`] implementation.
macro_rules! kernel_args {
    ($(
        $(#[$doc:meta])*
        $name:ident = $entry:literal { $($field:ident: $ty:ty),* $(,)? }
    )*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        #[allow(missing_docs)] // the fields are the kernel's parameters, named alike
        pub struct $name {
            $(pub $field: $ty,)*
        }

        const _: () = {
            const N: usize = 0 $(+ <$ty as ArgFields>::KINDS.len())*;
            const PARAMS: [Param; N] = flatten::<N>(&[$((
                stringify!($field),
                <$ty as ArgFields>::NAMES,
                <$ty as ArgFields>::KINDS,
            )),*]);

            impl KernelArgs for $name {
                const ENTRY: Entry = Entry {
                    name: $entry,
                    params: &PARAMS,
                };

                fn to_args(&self) -> Result<Vec<Arg>> {
                    let mut out = Vec::with_capacity(N);
                    $(self.$field.push_args($entry, stringify!($field), &mut out)?;)*
                    Ok(out)
                }
            }
        };
    )*};
}

kernel_args! {
    // ---- optim.cu ------------------------------------------------------------------------------

    /// `adam_masked`: Adam over the selected elements of ranges tagged with their module (skipped
    /// where `counts[module] == 0`; `counts` null: none skipped), gradients times `*coef` (null:
    /// 1). Launch: [`crate::optim::range_config`].
    AdamMasked = "adam_masked" {
        params: Ptr<f32>,
        grads: Ptr<f32>,
        m: Ptr<f32>,
        v: Ptr<f32>,
        range_off: Ptr<u64>,
        range_prefix: Ptr<u64>,
        range_module: Ptr<i32>,
        counts: Ptr<u32>,
        nranges: u32,
        coef: Ptr<f32>,
        neg_step: f32,
        bc2_sqrt: f32,
        w1: f32,
        b2: f32,
        w2: f32,
        eps: f32,
    }

    /// `sumsq_masked`: `partial[slot + block]`, each block's f64 sum of squared gradients over the
    /// selected, not skipped elements. Launch: 1-D, power-of-two block, `blockDim.x` doubles of
    /// shared memory.
    SumsqMasked = "sumsq_masked" {
        grads: Ptr<f32>,
        range_off: Ptr<u64>,
        range_prefix: Ptr<u64>,
        range_module: Ptr<i32>,
        counts: Ptr<u32>,
        nranges: u32,
        partial: Ptr<f64>,
        slot: usize,
    }

    /// `clip_finish`: the norm of the first `n` partials into `norm_log[k]`, the clip coefficient
    /// into `*coef`. Launch: one thread.
    ClipFinish = "clip_finish" {
        partial: Ptr<f64>,
        n: usize,
        max_norm: f32,
        norm_log: Ptr<f32>,
        k: usize,
        coef: Ptr<f32>,
    }

    // ---- encoder.cu ----------------------------------------------------------------------------

    /// `encoder_fwd`: the observation encoder of `samples` observations into `x` (row stride
    /// `ld`), with FiLM modulated by each sample's instruction embedding in `instr` (row stride
    /// `instr_ld`; null without FiLM). Launch: one sample per block.
    EncoderFwd = "encoder_fwd" {
        p: Ptr<f32>,
        obs: Ptr<u8>,
        instr: Ptr<f32>,
        instr_ld: usize,
        x: Ptr<f32>,
        ld: usize,
        cache: Ptr<f32>,
        samples: usize,
    }

    /// `encoder_bwd`: the encoder's per-sample deltas from the input gradient `d_out`; with
    /// FiLM also dL/de added into `d_instr` (row stride `instr_ld`; null without FiLM). Launch:
    /// one sample per block.
    EncoderBwd = "encoder_bwd" {
        p: Ptr<f32>,
        obs: Ptr<u8>,
        cache: Ptr<f32>,
        d_out: Ptr<f32>,
        ld: usize,
        d_instr: Ptr<f32>,
        instr_ld: usize,
        delta: Ptr<f32>,
        samples: usize,
    }

    /// `encoder_wgrad`: the encoder's weight gradients, one thread per parameter over all
    /// samples (FiLM's generator from the instruction embeddings `instr`, row stride
    /// `instr_ld`; null without FiLM). Launch: 1-D over the encoder's parameters.
    EncoderWgrad = "encoder_wgrad" {
        p: Ptr<f32>,
        obs: Ptr<u8>,
        cache: Ptr<f32>,
        delta: Ptr<f32>,
        instr: Ptr<f32>,
        instr_ld: usize,
        grads: Ptr<f32>,
        samples: usize,
    }

    // ---- instr.cu ------------------------------------------------------------------------------

    /// `instr_fwd`: word embedding and GRU over each segment's tokens. Launch: one segment per
    /// block.
    InstrFwd = "instr_fwd" {
        p: Ptr<f32>,
        tokens: Ptr<u16>,
        out: Ptr<f32>,
        cache: Ptr<f32>,
        xs: Ptr<f32>,
        segments: usize,
    }

    /// `instr_bwd`: BPTT over each segment's tokens from the gradient `d_out` of its embedding.
    /// Launch: one segment per block.
    InstrBwd = "instr_bwd" {
        p: Ptr<f32>,
        tokens: Ptr<u16>,
        cache: Ptr<f32>,
        d_out: Ptr<f32>,
        delta: Ptr<f32>,
        segments: usize,
    }

    /// `instr_emb_grad`: the word-embedding rows' gradients. Launch: 1-D over the embedding.
    InstrEmbGrad = "instr_emb_grad" {
        tokens: Ptr<u16>,
        delta: Ptr<f32>,
        grads: Ptr<f32>,
        segments: usize,
    }

    /// `gather_rows`: `dst[s][col..col + width] = src[idx[s]]`. Launch: 1-D.
    GatherRows = "gather_rows" {
        dst: Ptr<f32>,
        dst_ld: usize,
        col: usize,
        src: Ptr<f32>,
        idx: Ptr<u32>,
        width: usize,
        samples: usize,
    }

    /// `instr_dsum`: each segment's sum of the instruction part of the input gradient over its
    /// steps. Launch: 1-D.
    InstrDsum = "instr_dsum" {
        dx: Ptr<f32>,
        ld: usize,
        col: usize,
        seg_chunk: Ptr<u32>,
        seg_t0: Ptr<u32>,
        seg_t1: Ptr<u32>,
        chunks: usize,
        d_instr: Ptr<f32>,
        segments: usize,
    }

    /// `scatter_rows`: `dst[idx[s]] = src[s]` (`width` floats each). Launch: 1-D.
    ScatterRows = "scatter_rows" {
        dst: Ptr<f32>,
        src: Ptr<f32>,
        idx: Ptr<u32>,
        width: usize,
        samples: usize,
    }

    // ---- rim_fwd.cu / rim_bwd.cu ---------------------------------------------------------------

    /// `rim_fwd_step`: one fused RIM step over a batch (the nine weight tensors, then the step's
    /// operands; `active_bits` may be null). Launch: per sample, `spb_rim` per block.
    RimFwdStep = "rim_fwd_step" {
        w: RimWeights,
        x: Ptr<f32>,
        h_src: Ptr<f32>,
        reset: Ptr<u8>,
        state_in: Ptr<f32>,
        h_out: Ptr<f32>,
        cache: Ptr<f32>,
        active_bits: Ptr<u32>,
        batch: usize,
    }

    /// `rim_bwd_step`: one RIM step backward (state and input gradients, every weight's
    /// pre-activation deltas). Launch: per sample, `spb_rim` per block.
    RimBwdStep = "rim_bwd_step" {
        w: RimWeights,
        step: MemoryBwd,
    }

    // ---- lstm.cu -------------------------------------------------------------------------------

    /// `lstm_fwd_step`: one step of the LSTM baseline's memory. Launch: per sample, `spb_lstm`
    /// per block.
    LstmFwdStep = "lstm_fwd_step" {
        w_ih: Ptr<f32>,
        w_hh: Ptr<f32>,
        b_ih: Ptr<f32>,
        b_hh: Ptr<f32>,
        x: Ptr<f32>,
        h_src: Ptr<f32>,
        reset: Ptr<u8>,
        state_in: Ptr<f32>,
        state_out: Ptr<f32>,
        cache: Ptr<f32>,
        batch: usize,
    }

    /// `lstm_bwd_step`: one LSTM memory step backward. Launch: per sample, `spb_lstm` per block.
    LstmBwdStep = "lstm_bwd_step" {
        w_ih: Ptr<f32>,
        w_hh: Ptr<f32>,
        step: MemoryBwd,
    }

    // ---- heads.cu ------------------------------------------------------------------------------

    /// `heads_fwd`: actor and critic on the memory states `h` (row stride `ld`). Launch: per
    /// sample, `spb_heads` per block.
    HeadsFwd = "heads_fwd" {
        p: Ptr<f32>,
        h: Ptr<f32>,
        ld: usize,
        logits: Ptr<f32>,
        values: Ptr<f32>,
        cache: Ptr<f32>,
        samples: usize,
    }

    /// `ppo_heads_bwd`: the PPO loss terms (times `scale`) and their gradient through the heads
    /// (`clip_value`: 0 or 1). Launch: per sample, `spb_heads` per block.
    PpoHeadsBwd = "ppo_heads_bwd" {
        p: Ptr<f32>,
        cache: Ptr<f32>,
        logits: Ptr<f32>,
        values: Ptr<f32>,
        action: Ptr<i32>,
        old_logprob: Ptr<f32>,
        old_value: Ptr<f32>,
        advantage: Ptr<f32>,
        ret: Ptr<f32>,
        clip_eps: f32,
        value_coef: f32,
        entropy_coef: f32,
        clip_value: u32,
        scale: f32,
        dh: Ptr<f32>,
        terms: Ptr<f32>,
        delta: Ptr<f32>,
        samples: usize,
    }

    // ---- reduce.cu -----------------------------------------------------------------------------

    /// `wgrad`: `dw[mat][r][c] += sum_s dy(s, mat)[r] * x(s, mat)[c]` (x null: a bias), with
    /// `dy(s, mat) = dy + s * dy_outer + mat * dy_mat` and
    /// `x(s, mat) = x + (s / x_sub) * x_outer + (s % x_sub) * x_inner + mat * x_mat`. Launch:
    /// 16 x 16 tiles, one grid layer per matrix.
    Wgrad = "wgrad" {
        dw: Ptr<f32>,
        dw_mat: usize,
        dy: Ptr<f32>,
        dy_outer: usize,
        dy_mat: usize,
        x: Ptr<f32>,
        x_outer: usize,
        x_inner: usize,
        x_sub: usize,
        x_mat: usize,
        rows: usize,
        cols: usize,
        samples: usize,
    }

    /// `count_active`: `counts[i] +=` the samples whose step cache (`stride` floats apart) has
    /// module `i` active. Launch: one block.
    CountActive = "count_active" {
        cache: Ptr<f32>,
        stride: usize,
        counts: Ptr<u32>,
        samples: usize,
    }

    /// `sum_terms`: `acc +=` the samples' loss terms, in f64. Launch: one block.
    SumTerms = "sum_terms" {
        terms: Ptr<f32>,
        acc: Ptr<f64>,
        samples: usize,
    }

    /// `layout_info`: the compiled layout constants (`crate::layout::LAYOUT_FIELDS`) into `out`.
    /// Launch: one block.
    LayoutInfo = "layout_info" {
        out: Ptr<u32>,
    }
}
