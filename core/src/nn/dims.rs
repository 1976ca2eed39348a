//! Model dimensions and the two presets.
//!
//! Invariants: a [`ModelDims`] is plain data, `const`-constructible, so buffer sizes derived
//! from it are `const fn`s and presets can size static arrays on the device (no heap). Stable
//! Rust cannot size arrays from a generic's associated consts, so presets are concrete consts.

use crate::Error;

config_enum! {
    /// Recurrent cell used inside each RIM module (or as the LSTM baseline's memory).
    pub enum CellKind (serde case "lowercase") {
        /// GRU (PyTorch gate order r, z, n).
        Gru,
        /// LSTM (PyTorch gate order i, f, g, o), with a cell state beside the hidden state.
        Lstm,
    }
}

config_enum! {
    /// Observation encoder.
    pub enum EncoderKind (serde case "lowercase") {
        /// rl-starter-files' light CNN on the raw integer codes: conv 2x2 -> ReLU -> maxpool 2x2 ->
        /// conv 2x2 -> ReLU -> conv 2x2 -> ReLU, on 7x7x3.
        Conv,
        /// BabyAI 1.1's bag-of-words cell embedding (one embedding per type, colour and state
        /// value, summed per cell) followed by the same CNN.
        Bow,
    }
}

config_enum! {
    /// How communication changes an active module's candidate state `h~` (the RIM cell's step 4;
    /// `o` the attention's read, `g = sigmoid(W_g o)`, `u = tanh(W_o o)`).
    pub enum CommUpdate (serde case "lowercase") {
        /// `h' = h~ + g * u`, the official RIMs code's gated residual. The state is unbounded: a
        /// module can add up to 1 per step, and trained agents do (states near 60 after a
        /// 64-step episode; docs/RESULTS.md, "Where the gradient norm grows").
        Residual,
        /// `h' = (1 - g) * h~ + g * u`, a gated interpolation: with a GRU cell (`h~` in [-1, 1])
        /// the state stays in [-1, 1], as the LSTM baseline's `h` does.
        Interpolate,
    }
}

/// Memory of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryKind {
    /// Recurrent Independent Mechanisms.
    Rim,
    /// One LSTM as wide as all RIM modules together (`n_modules * hidden`), the baseline.
    Lstm,
}

/// Sizes of the RIM cell (RIMs paper; docs/DESIGN.md, "The RIM cell").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RimDims {
    /// Number of modules N.
    pub n_modules: usize,
    /// Active modules per step k (1..=N).
    pub k_active: usize,
    /// Hidden units per module.
    pub hidden: usize,
    /// Width of the input x_t.
    pub input: usize,
    /// Input-attention key/query size per head.
    pub d_k: usize,
    /// Input-attention value size per head (the module RNN's input is `in_heads * d_v`).
    pub d_v: usize,
    /// Input-attention heads (selection averages the null-row attention over heads).
    pub in_heads: usize,
    /// Communication-attention heads.
    pub c_heads: usize,
    /// Communication key/query/value size per head.
    pub c_k: usize,
    /// Module cell type.
    pub cell: CellKind,
    /// Communication attention on (the "no communication" ablation turns it off).
    pub communication: bool,
    /// How communication updates a module's state (unused without communication).
    pub comm_update: CommUpdate,
}

impl RimDims {
    /// Total hidden width `N * hidden`.
    pub const fn total_hidden(&self) -> usize {
        self.n_modules * self.hidden
    }
}

/// Sizes of the whole policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelDims {
    /// Observation encoder.
    pub encoder: EncoderKind,
    /// Channels of the three conv layers.
    pub conv_channels: [usize; 3],
    /// Per-cell embedding width of the bag-of-words encoder (its CNN's input channels).
    pub bow_dim: usize,
    /// FiLM conditioning of the encoder on the instruction: each conv's pre-activation `z`
    /// becomes `z * (1 + gamma(e)) + beta(e)` per channel, `gamma, beta` linear in the
    /// instruction embedding `e` ([`crate::nn::encoder`], "FiLM").
    pub film: bool,
    /// Layer normalisation (no learned scale or shift) of the encoder's `C2` output features:
    /// `y = (f - mean(f)) / sqrt(var(f) + 1e-5)` over one frame's features. Why: without it
    /// FiLM's gains and the conv weights let the features grow (norms of 65-104 on GoToLocal
    /// by 8M frames), the input attention's scores grow with them, and its sigmoids saturate
    /// ([`crate::nn::encoder`], "Feature normalisation").
    pub feature_norm: bool,
    /// Word-embedding width of the instruction encoder.
    pub word_dim: usize,
    /// Hidden width of the instruction GRU (its final state is the instruction embedding).
    pub instr_hidden: usize,
    /// Longest mission in tokens.
    pub max_tokens: usize,
    /// Memory kind.
    pub memory: MemoryKind,
    /// RIM sizes (`input` must equal `conv_channels[2] + instr_hidden`).
    pub rim: RimDims,
    /// Hidden width of the actor and critic MLPs.
    pub head_hidden: usize,
    /// Number of actions (7).
    pub n_actions: usize,
}

/// Widest any one dimension of a model may be: channels, embedding, hidden and head widths,
/// attention sizes and heads, mission tokens, actions. With at most [`MAX_MODULES`] modules it
/// bounds every buffer size the core derives from a [`ModelDims`] below 2^32, so that none
/// overflows, on 32-bit targets too (`crate::nn::params::Layout::new` checks it first; the
/// widest preset, Paper, uses 256).
pub const MAX_DIM: usize = 1024;

/// Most RIM modules a policy supports (fixed-size activity masks).
pub const MAX_MODULES: usize = 16;

impl ModelDims {
    /// These dims with RIM modules of `cell` (a preset with the RIMs paper's LSTM modules, say).
    pub const fn with_cell(self, cell: CellKind) -> ModelDims {
        ModelDims {
            rim: RimDims { cell, ..self.rim },
            ..self
        }
    }

    /// Every dimension within the core's bounds: each width, head count, token and action count
    /// at most [`MAX_DIM`], 1 to [`MAX_MODULES`] modules (the memory input, the sum of two
    /// widths, is checked against them by `Layout::new`). Zero widths are left to the blocks'
    /// own checks. Checked before any size is derived, so absurd dimensions are an error
    /// instead of an overflow.
    pub fn check_bounds(&self) -> Result<(), Error> {
        let r = &self.rim;
        let widths = [
            self.conv_channels[0],
            self.conv_channels[1],
            self.conv_channels[2],
            self.bow_dim,
            self.word_dim,
            self.instr_hidden,
            self.max_tokens,
            self.head_hidden,
            self.n_actions,
            r.hidden,
            r.d_k,
            r.d_v,
            r.in_heads,
            r.c_heads,
            r.c_k,
        ];
        // The messages name the bounds' values.
        const _: () = assert!(MAX_DIM == 1024 && MAX_MODULES == 16);
        if widths.iter().any(|w| *w > MAX_DIM) {
            return Err(Error::BadDims {
                what: "a width, head, token or action count is over 1024 (MAX_DIM)",
            });
        }
        if r.n_modules == 0 || r.n_modules > MAX_MODULES {
            return Err(Error::BadDims {
                what: "n_modules must be 1 to 16 (MAX_MODULES)",
            });
        }
        Ok(())
    }

    /// Width of the encoded observation.
    pub const fn obs_features(&self) -> usize {
        self.conv_channels[2]
    }

    /// Width of the memory's input x_t.
    pub const fn memory_input(&self) -> usize {
        self.obs_features() + self.instr_hidden
    }

    /// Width of the memory's output (what the heads read).
    pub const fn memory_width(&self) -> usize {
        self.rim.total_hidden()
    }
}

/// The paper's sizes: N=6, k=4, 64 per module, d_k 64, d_v 256, 4 comm heads x 32,
/// instruction GRU 128, heads 64; the observation encoder that grounds the mission (bag-of-words
/// cells, FiLM on the instruction, layer-normalised features: with the plain CNN the agent
/// ignored its mission, and without the normalisation one seed in three stayed blind).
pub const PAPER: ModelDims = ModelDims {
    encoder: EncoderKind::Bow,
    conv_channels: [16, 32, 64],
    bow_dim: 16,
    film: true,
    feature_norm: true,
    word_dim: 128,
    instr_hidden: 128,
    max_tokens: crate::mission::vocab::MAX_TOKENS,
    memory: MemoryKind::Rim,
    rim: RimDims {
        n_modules: 6,
        k_active: 4,
        hidden: 64,
        input: 64 + 128,
        d_k: 64,
        d_v: 256,
        in_heads: 1,
        c_heads: 4,
        c_k: 32,
        cell: CellKind::Gru,
        communication: true,
        comm_update: CommUpdate::Residual,
    },
    head_hidden: 64,
    n_actions: 7,
};

/// RIM sizes for parity tests (not a model preset): several input heads and every width off a
/// multiple of 8, so that vectorised paths run their remainder loops, with communication on.
pub const RIM_ODD_WIDTHS: RimDims = RimDims {
    n_modules: 5,
    k_active: 3,
    hidden: 9,
    input: 13,
    d_k: 6,
    d_v: 11,
    in_heads: 2,
    c_heads: 3,
    c_k: 5,
    cell: CellKind::Gru,
    communication: true,
    comm_update: CommUpdate::Residual,
};

/// Microcontroller sizes: N=4, k=2, 8 per module, a small encoder. The fast group (module
/// RNNs, 1,728 parameters) is the only part in RAM; the slow and other groups stay read-only in
/// flash (`metarim model info --preset Tiny`). With a 16-step adaptation window, SGD, the
/// memory-lean fast backward ([`crate::adapt`]) and the environment, the firmware measures
/// 60,868 B of RAM on a Cortex-M4F (docs/BENCHMARKS.md).
pub const TINY: ModelDims = ModelDims {
    encoder: EncoderKind::Conv,
    conv_channels: [8, 16, 16],
    bow_dim: 8,
    film: false,
    feature_norm: false,
    word_dim: 16,
    instr_hidden: 16,
    max_tokens: crate::mission::vocab::MAX_TOKENS,
    memory: MemoryKind::Rim,
    rim: RimDims {
        n_modules: 4,
        k_active: 2,
        hidden: 8,
        input: 16 + 16,
        d_k: 8,
        d_v: 8,
        in_heads: 1,
        c_heads: 2,
        c_k: 4,
        cell: CellKind::Gru,
        communication: true,
        comm_update: CommUpdate::Residual,
    },
    head_hidden: 16,
    n_actions: 7,
};

/// The smallest agent that reads its mission: twice Tiny's widths (4 modules x 16, k = 2;
/// attention sizes as Tiny's) and the bag-of-words encoder FiLM-conditioned on the
/// instruction. It is the main job's preset (`metarim train` with no arguments): on
/// BabyAI-GoToLocal-v0 it learns to follow the mission, where Tiny and Paper without FiLM learn
/// a mission-blind sweep (docs/RESULTS.md, "The main job"). The CUDA kernels have FiLM
/// too (emulator-verified).
pub const SMALL: ModelDims = ModelDims {
    encoder: EncoderKind::Bow,
    conv_channels: [16, 32, 32],
    bow_dim: 16,
    film: true,
    word_dim: 32,
    instr_hidden: 32,
    rim: RimDims {
        hidden: 16,
        input: 32 + 32,
        ..TINY.rim
    },
    head_hidden: 32,
    ..TINY
};
