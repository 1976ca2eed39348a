//! Observation encoders, forward and hand-written backward, for one observation at a time
//! (batching is the caller's loop).
//!
//! Two encoders ([`EncoderKind`]), both ending in rl-starter-files' light CNN (PyTorch
//! semantics; `Cin` = 3 for `Conv`, `bow_dim` for `Bow`; `[C0, C1, C2]` =
//! [`ModelDims::conv_channels`]):
//!
//! ```text
//! x [Cin][7][7] -> conv 2x2 (Cin -> C0, stride 1, no padding, bias) -> ReLU -> [C0][6][6]
//!   -> maxpool 2x2 stride 2 -> [C0][3][3]
//!   -> conv 2x2 (C0 -> C1) -> ReLU -> [C1][2][2]
//!   -> conv 2x2 (C1 -> C2) -> ReLU -> [C2][1][1] -> flatten -> C2 features
//! ```
//!
//! # Input
//!
//! The input is channels-first, `x[c][h][w]` for `c < Cin`, `h, w < 7`, built from the
//! [`Observation`] (`obs[j * 7 + i] = [type, color, state]` of view column `i`, row `j`):
//!
//! - `Conv`: `x[c][h][w] = obs[w * 7 + h][c]` as a float (raw integer codes, no scaling):
//!   channel `c` is attribute `c` (0 type, 1 colour, 2 state); the H axis runs along the view's
//!   columns `i` and the W axis along its rows `j`. This is exactly the tensor rl-starter-files and
//!   BabyAI feed their conv: minigrid's image is indexed `image[i][j]` (column first) and
//!   `obs.image.transpose(1, 3).transpose(2, 3)` turns `(B, 7_i, 7_j, 3)` into
//!   `(B, 3, 7_i, 7_j)`, so PyTorch weights port both ways unchanged.
//! - `Bow` (BabyAI 1.1's `ImageBOWEmbedding`): an embedding table `E` of [`BOW_ROWS`]
//!   (`3 * 16`) rows by `bow_dim`, row `attr * 16 + value` for attribute `attr`
//!   (0 type, 1 colour, 2 state) and its value; each cell's vector is the sum of its three rows,
//!   `x[c][h][w] = E[t][c] + E[16 + k][c] + E[32 + s][c]` with `[t, k, s] = obs[w * 7 + h]`
//!   (same spatial mapping). BabyAI uses `max_value = 147`; 16 suffices for minigrid's codes
//!   (type <= 10, colour <= 5, state <= 2) and keeps the table small. A value >= 16 is
//!   [`Error::BadCellCode`].
//!
//! # Semantics
//!
//! - ReLU's derivative at exactly 0 is 0 (PyTorch's).
//! - Maxpool ties: the first maximum in row-major window order (`(0,0), (0,1), (1,0), (1,1)`)
//!   wins and alone receives the gradient (as in PyTorch's native max_pool2d kernels). The pool
//!   compares post-ReLU values, so a window whose four pre-activations are all <= 0 passes 0 and
//!   no gradient.
//!
//! # Feature normalisation
//!
//! With [`ModelDims::feature_norm`] the `C2` features are layer-normalised after the last
//! ReLU, without a learned scale or shift ([`crate::nn::ops::layer_norm`]): `y = (f - mean) /
//! sqrt(var + 1e-5)` per frame. It adds no parameter and no cache (the backward recomputes the
//! statistics from the cached conv3 pre-activations) and `2 * C2` values of scratch. BabyAI's
//! FiLM agents normalise after every FiLM block (batch norm); this is the cheapest bound on the
//! features that the RIM's input attention reads.
//!
//! # Parameter layout
//!
//! One flat slice, tensors contiguous in this order, each row-major ([`encoder_tensors`] lists
//! them with offsets; a global layout prefixes the names, e.g. `encoder.conv1.weight`):
//!
//! | name | shape | present |
//! |------|-------|---------|
//! | `embedding.weight` | `[48, bow_dim]` | `Bow` only |
//! | `conv1.weight` | `[C0, Cin, 2, 2]` | always |
//! | `conv1.bias` | `[C0]` | always |
//! | `conv2.weight` | `[C1, C0, 2, 2]` | always |
//! | `conv2.bias` | `[C1]` | always |
//! | `conv3.weight` | `[C2, C1, 2, 2]` | always |
//! | `conv3.bias` | `[C2]` | always |
//!
//! Gradient buffers have the same layout. The cache ([`encoder_cache_layout`]) keeps the
//! pre-activations of the three convs and the pooled map; the input map is recomputed from the
//! observation in the backward pass (cheap), so the cache does not grow with `bow_dim`.
//!
//! Invariants: no heap, no panic. Every length is checked up front (sizes computed with
//! saturating arithmetic, so absurd dimensions give an error, never an overflow) and every error
//! is reported before any output or gradient is written. Longer buffers are fine: only their
//! prefix is used. Backward *accumulates* into `grads` (`+=`), like [`crate::nn::ops`].
//!
//! ```
//! use metarim_core::nn::dims::TINY;
//! use metarim_core::nn::encoder::*;
//! const D: metarim_core::nn::dims::ModelDims = TINY;
//! let params = [0.01f32; encoder_param_len(&D)];
//! let obs = [[2u8, 5, 0]; 49];
//! let (mut out, mut cache) = ([0.0f32; 16], [0.0f32; encoder_cache_len(&D)]);
//! encode_forward(&D, &params, &obs, &[], &mut out, &mut cache).unwrap();
//! let mut grads = [0.0f32; encoder_param_len(&D)];
//! let mut scratch = [0.0f32; encoder_scratch_len(&D)];
//! encode_backward(&D, &params, &obs, &[], &cache, &[1.0; 16], &mut grads, &mut [], &mut scratch).unwrap();
//! assert!(grads.iter().any(|g| *g != 0.0));
//! ```

use crate::env::{Observation, VIEW_SIZE};
use crate::error::{check_len, Error};
use crate::nn::cut::{cut, Cut};
use crate::nn::dims::{EncoderKind, ModelDims};
use crate::nn::ops::{layer_norm, layer_norm_backward};
use crate::nn::scalar::Real;

/// Rows per attribute in the bag-of-words table (values must be below this).
pub const BOW_MAX_VALUE: usize = 16;
/// Attributes per cell: type, colour, state.
pub const CELL_ATTRS: usize = 3;
/// Rows of the bag-of-words embedding table.
pub const BOW_ROWS: usize = CELL_ATTRS * BOW_MAX_VALUE;
/// Most tensors an encoder has (`Bow` with FiLM: the embedding, three convs' weight and bias,
/// the FiLM generator's weight and bias).
pub const MAX_ENCODER_TENSORS: usize = 9;

/// Kernel area (2x2).
pub const KA: usize = 4;
/// Input side (7).
pub const S_IN: usize = VIEW_SIZE;
/// Input area (7x7).
pub const A_IN: usize = S_IN * S_IN;
/// conv1 output side (6).
pub const S_C1: usize = S_IN - 1;
/// conv1 output area (6x6).
pub const A_C1: usize = S_C1 * S_C1;
/// Pooled side (3).
pub const S_P: usize = S_C1 / 2;
/// Pooled area (3x3).
pub const A_P: usize = S_P * S_P;
/// conv2 output side (2); conv3's 2x2 kernel covers it, giving 1x1.
pub const S_C2: usize = S_P - 1;
/// conv2 output area (2x2).
pub const A_C2: usize = S_C2 * S_C2;

/// Shape and place of one parameter tensor inside the encoder's parameter slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorShape {
    /// Name local to the encoder (`conv1.weight`, ...); a global layout adds a prefix.
    pub name: &'static str,
    /// Offset of the first element in the encoder's parameter slice.
    pub offset: usize,
    /// Dimensions, row-major; only the first `rank` are meaningful, the others are 1.
    pub shape: [usize; 4],
    /// Number of dimensions (1, 2 or 4).
    pub rank: usize,
}

impl TensorShape {
    const EMPTY: TensorShape = TensorShape {
        name: "",
        offset: 0,
        shape: [0, 1, 1, 1],
        rank: 1,
    };

    /// Number of elements (saturating).
    pub const fn len(&self) -> usize {
        self.shape[0]
            .saturating_mul(self.shape[1])
            .saturating_mul(self.shape[2])
            .saturating_mul(self.shape[3])
    }

    /// True when the tensor has no element.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The meaningful dimensions, `shape[..rank]`.
    pub fn dims(&self) -> &[usize] {
        self.shape.get(..self.rank).unwrap_or(&self.shape)
    }
}

/// The tensors of an encoder, in layout order (see [`encoder_tensors`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EncoderTensors {
    tensors: [TensorShape; MAX_ENCODER_TENSORS],
    count: usize,
}

impl EncoderTensors {
    /// The tensors, in layout order (offsets increasing, contiguous from 0).
    pub fn as_slice(&self) -> &[TensorShape] {
        self.tensors.get(..self.count).unwrap_or(&[])
    }

    /// Number of tensors (6 for `Conv`, 7 for `Bow`, 2 more with FiLM).
    pub const fn count(&self) -> usize {
        self.count
    }
}

/// Where each activation lies in the cache (offsets in elements; all maps channels-first,
/// row-major). With FiLM the `conv*` regions hold the *modulated* pre-activations (what the
/// ReLU reads) and `raw` the unmodulated ones (what `gamma`'s gradient needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheLayout {
    /// conv1 pre-activations `[C0][6][6]`.
    pub conv1: usize,
    /// Pooled post-ReLU map `[C0][3][3]` (conv2's input).
    pub pool: usize,
    /// conv2 pre-activations `[C1][2][2]`.
    pub conv2: usize,
    /// conv3 pre-activations `[C2]` (the output is their ReLU).
    pub conv3: usize,
    /// FiLM coefficients `[gamma1 C0 | beta1 C0 | gamma2 C1 | beta2 C1 | gamma3 C2 | beta3 C2]`
    /// (empty without FiLM).
    pub film: usize,
    /// Unmodulated pre-activations `[conv1 | conv2 | conv3]` (empty without FiLM).
    pub raw: usize,
    /// Total length ([`encoder_cache_len`]).
    pub len: usize,
}

/// Every size the encoder needs, computed once (saturating) by [`encoder_sizes`]: the core's
/// passes and the host's batched encoder read their widths from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderSizes {
    /// Bag-of-words input (else the raw cell codes).
    pub bow: bool,
    /// FiLM-conditioned convolutions.
    pub film: bool,
    /// Layer-normalised output features ([`ModelDims::feature_norm`]).
    pub norm: bool,
    /// Input channels: [`CELL_ATTRS`] for raw codes, `bow_dim` for bag of words.
    pub cin: usize,
    /// Output channels of the first convolution.
    pub c0: usize,
    /// Output channels of the second convolution.
    pub c1: usize,
    /// Output channels of the third convolution.
    pub c2: usize,
    /// Instruction width read by FiLM (0 without FiLM).
    pub hi: usize,
    /// FiLM coefficients, `2 * (C0 + C1 + C2)` (0 without FiLM).
    pub nf: usize,
    /// Bag-of-words table (0 for raw codes).
    pub emb: usize,
    /// First convolution's weight.
    pub w1: usize,
    /// Second convolution's weight.
    pub w2: usize,
    /// Third convolution's weight.
    pub w3: usize,
    /// FiLM generator's weight (0 without FiLM).
    pub fw: usize,
    /// All parameters.
    pub params: usize,
    /// First convolution's output (cache).
    pub z1: usize,
    /// Pooled map (cache).
    pub pool: usize,
    /// Second convolution's output (cache).
    pub z2: usize,
    /// The whole step cache.
    pub cache: usize,
    /// The backward scratch.
    pub scratch: usize,
}

const fn sat_mul3(a: usize, b: usize, c: usize) -> usize {
    a.saturating_mul(b).saturating_mul(c)
}

/// The encoder's sizes for `d` (saturating for absurd dimensions).
// Always inlined: every size query (several per policy step) calls it, and inlined its
// arithmetic folds into the caller's constants.
#[inline(always)]
pub const fn encoder_sizes(d: &ModelDims) -> EncoderSizes {
    let bow = matches!(d.encoder, EncoderKind::Bow);
    let cin = if bow { d.bow_dim } else { CELL_ATTRS };
    let [c0, c1, c2] = d.conv_channels;
    let emb = if bow {
        BOW_ROWS.saturating_mul(d.bow_dim)
    } else {
        0
    };
    let w1 = sat_mul3(c0, cin, KA);
    let w2 = sat_mul3(c1, c0, KA);
    let w3 = sat_mul3(c2, c1, KA);
    let film = d.film;
    let hi = if film { d.instr_hidden } else { 0 };
    let nf = if film {
        c0.saturating_add(c1).saturating_add(c2).saturating_mul(2)
    } else {
        0
    };
    let fw = nf.saturating_mul(hi);
    let params = emb
        .saturating_add(w1)
        .saturating_add(c0)
        .saturating_add(w2)
        .saturating_add(c1)
        .saturating_add(w3)
        .saturating_add(c2)
        .saturating_add(fw)
        .saturating_add(nf);
    let z1 = c0.saturating_mul(A_C1);
    let pool = c0.saturating_mul(A_P);
    let z2 = c1.saturating_mul(A_C2);
    let raw = if film {
        z1.saturating_add(z2).saturating_add(c2)
    } else {
        0
    };
    let cache = z1
        .saturating_add(pool)
        .saturating_add(z2)
        .saturating_add(c2)
        .saturating_add(nf)
        .saturating_add(raw);
    let norm_scratch = if d.feature_norm {
        c2.saturating_mul(2)
    } else {
        0
    };
    let scratch = z2
        .saturating_add(pool)
        .saturating_add(nf)
        .saturating_add(norm_scratch);
    EncoderSizes {
        bow,
        film,
        norm: d.feature_norm,
        cin,
        c0,
        c1,
        c2,
        hi,
        nf,
        emb,
        w1,
        w2,
        w3,
        fw,
        params,
        z1,
        pool,
        z2,
        cache,
        scratch,
    }
}

/// Input channels of the CNN: 3 for `Conv`, `bow_dim` for `Bow`.
pub const fn encoder_in_channels(d: &ModelDims) -> usize {
    encoder_sizes(d).cin
}

/// Number of parameters of the encoder (saturating for absurd dimensions).
pub const fn encoder_param_len(d: &ModelDims) -> usize {
    encoder_sizes(d).params
}

/// Length of the activation cache one forward pass fills for its backward pass.
pub const fn encoder_cache_len(d: &ModelDims) -> usize {
    encoder_sizes(d).cache
}

/// Length of the scratch buffer [`encode_backward`] needs (`C1 * 4 + C0 * 9`, plus the FiLM
/// coefficients' gradient `2 * (C0 + C1 + C2)` with FiLM, plus `2 * C2` with feature
/// normalisation); it is overwritten, so one buffer
/// serves every call.
pub const fn encoder_scratch_len(d: &ModelDims) -> usize {
    encoder_sizes(d).scratch
}

/// Offsets of the activations inside the cache.
pub const fn encoder_cache_layout(d: &ModelDims) -> CacheLayout {
    let l = encoder_sizes(d);
    let pool = l.z1;
    let conv2 = pool.saturating_add(l.pool);
    let conv3 = conv2.saturating_add(l.z2);
    let film = conv3.saturating_add(l.c2);
    let raw = film.saturating_add(l.nf);
    CacheLayout {
        conv1: 0,
        pool,
        conv2,
        conv3,
        film,
        raw,
        len: l.cache,
    }
}

/// The encoder's parameter tensors with offsets and shapes, in layout order.
pub const fn encoder_tensors(d: &ModelDims) -> EncoderTensors {
    let l = encoder_sizes(d);
    let mut tensors = [TensorShape::EMPTY; MAX_ENCODER_TENSORS];
    let first = if l.bow { 1 } else { 0 };
    if l.bow {
        tensors[0] = TensorShape {
            name: "embedding.weight",
            offset: 0,
            shape: [BOW_ROWS, l.cin, 1, 1],
            rank: 2,
        };
    }
    let names = [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "conv3.weight",
        "conv3.bias",
    ];
    let shapes = [
        ([l.c0, l.cin, 2, 2], 4),
        ([l.c0, 1, 1, 1], 1),
        ([l.c1, l.c0, 2, 2], 4),
        ([l.c1, 1, 1, 1], 1),
        ([l.c2, l.c1, 2, 2], 4),
        ([l.c2, 1, 1, 1], 1),
    ];
    let mut offset = l.emb;
    let mut k = 0;
    while k < 6 {
        let t = TensorShape {
            name: names[k],
            offset,
            shape: shapes[k].0,
            rank: shapes[k].1,
        };
        offset = offset.saturating_add(t.len());
        tensors[first + k] = t;
        k += 1;
    }
    let mut count = first + 6;
    if l.film {
        let w = TensorShape {
            name: "film.weight",
            offset,
            shape: [l.nf, l.hi, 1, 1],
            rank: 2,
        };
        tensors[count] = w;
        tensors[count + 1] = TensorShape {
            name: "film.bias",
            offset: offset.saturating_add(w.len()),
            shape: [l.nf, 1, 1, 1],
            rank: 1,
        };
        count += 2;
    }
    EncoderTensors { tensors, count }
}

/// The encoder's parameters (or their gradients), borrowed either way, split into its tensors
/// in layout order ([`split_encoder`]): what the batched CPU encoder reads and writes.
#[derive(Debug)]
pub struct EncoderParts<T> {
    /// Bag-of-words embedding table `[BOW_ROWS][bow_dim]` (empty for the raw-code encoder).
    pub emb: T,
    /// conv1 weight `[C0][cin][2][2]`.
    pub w1: T,
    /// conv1 bias `[C0]`.
    pub b1: T,
    /// conv2 weight `[C1][C0][2][2]`.
    pub w2: T,
    /// conv2 bias `[C1]`.
    pub b2: T,
    /// conv3 weight `[C2][C1][2][2]`.
    pub w3: T,
    /// conv3 bias `[C2]`.
    pub b3: T,
    /// FiLM generator `[nf][hi]` (empty without FiLM).
    pub fw: T,
    /// FiLM bias `[nf]` (empty without FiLM).
    pub fb: T,
}

type Parts<T> = EncoderParts<T>;

/// Splits the encoder's parameters (or gradients) `p` of a model with dimensions `d` into its
/// tensors; [`Error::BufferTooSmall`] when `p` is shorter than [`encoder_param_len`].
pub fn split_encoder<T: Cut>(d: &ModelDims, p: T) -> Result<EncoderParts<T>, Error> {
    split_params(&encoder_sizes(d), p)
}

fn too_small(needed: usize, got: usize) -> Error {
    Error::BufferTooSmall { needed, got }
}

/// Parameters (or gradients) `p`, borrowed either way, split into tensors.
fn split_params<T: Cut>(l: &EncoderSizes, p: T) -> Result<Parts<T>, Error> {
    let n = l.params;
    check_len(p.count(), n)?;
    let (emb, p) = cut(p, l.emb, n)?;
    let (w1, p) = cut(p, l.w1, n)?;
    let (b1, p) = cut(p, l.c0, n)?;
    let (w2, p) = cut(p, l.w2, n)?;
    let (b2, p) = cut(p, l.c1, n)?;
    let (w3, p) = cut(p, l.w3, n)?;
    let (b3, p) = cut(p, l.c2, n)?;
    let (fw, p) = cut(p, l.fw, n)?;
    let (fb, _) = cut(p, l.nf, n)?;
    Ok(Parts {
        emb,
        w1,
        b1,
        w2,
        b2,
        w3,
        b3,
        fw,
        fb,
    })
}

/// Rejects attribute values that have no row in the bag-of-words table.
fn check_codes(obs: &Observation) -> Result<(), Error> {
    for cell in obs.iter() {
        for (a, &value) in cell.iter().enumerate() {
            if usize::from(value) >= BOW_MAX_VALUE {
                let field = match a {
                    0 => "type",
                    1 => "color",
                    _ => "state",
                };
                return Err(Error::BadCellCode { field, value });
            }
        }
    }
    Ok(())
}

#[inline]
fn relu<S: Real>(v: S) -> S {
    if v > S::ZERO {
        v
    } else {
        S::ZERO
    }
}

/// Input channel `ci` as a `[7][7]` map (`x[h * 7 + w]`, see the module docs for the mapping).
/// `emb` is the bag-of-words table (codes already checked) or empty for `Conv`.
fn input_channel<S: Real>(
    l: &EncoderSizes,
    emb: &[S],
    obs: &Observation,
    ci: usize,
    x: &mut [S; A_IN],
) {
    for (k, cell) in obs.iter().enumerate() {
        let (j, i) = (k / S_IN, k % S_IN);
        let v = if l.bow {
            let mut acc = S::ZERO;
            for (a, &code) in cell.iter().enumerate() {
                let row = a * BOW_MAX_VALUE + usize::from(code);
                acc += emb.get(row * l.cin + ci).copied().unwrap_or(S::ZERO);
            }
            acc
        } else {
            S::from_f64(f64::from(cell.get(ci).copied().unwrap_or(0)))
        };
        if let Some(slot) = x.get_mut(i * S_IN + j) {
            *slot = v;
        }
    }
}

/// `z += conv2x2(x, k)` for one input and one output channel: `x` is `[sx][sx]`, `z` is
/// `[sx-1][sx-1]`, `k` is `[2][2]`.
// Always inlined: called once per (output, input) channel pair, and as a call (which the FiLM
// branches made the compiler choose) it cost the firmware 3.4% more instructions per step.
#[inline(always)]
fn conv2x2_acc<S: Real>(x: &[S], sx: usize, k: &[S], z: &mut [S]) {
    let so = sx.saturating_sub(1);
    let [k00, k01, k10, k11] = match k {
        [a, b, c, d, ..] => [*a, *b, *c, *d],
        _ => return,
    };
    if x.len() < sx * sx || z.len() < so * so {
        return;
    }
    for h in 0..so {
        for w in 0..so {
            let t = h * sx + w;
            z[h * so + w] += k00 * x[t] + k01 * x[t + 1] + k10 * x[t + sx] + k11 * x[t + sx + 1];
        }
    }
}

/// Backward of [`conv2x2_acc`] given `gz = dL/dz`: `dk += sum gz * x-window`, and
/// `dx += k * gz` scattered back (when given).
#[inline]
fn conv2x2_backward<S: Real>(
    x: &[S],
    sx: usize,
    k: &[S],
    gz: &[S],
    dk: &mut [S],
    dx: Option<&mut [S]>,
) {
    let so = sx.saturating_sub(1);
    let [k00, k01, k10, k11] = match k {
        [a, b, c, d, ..] => [*a, *b, *c, *d],
        _ => return,
    };
    let [d00, d01, d10, d11] = match dk {
        [a, b, c, d, ..] => [a, b, c, d],
        _ => return,
    };
    if x.len() < sx * sx || gz.len() < so * so {
        return;
    }
    let mut dx = dx.filter(|dx| dx.len() >= sx * sx);
    for h in 0..so {
        for w in 0..so {
            let g = gz[h * so + w];
            if g == S::ZERO {
                continue;
            }
            let t = h * sx + w;
            *d00 += g * x[t];
            *d01 += g * x[t + 1];
            *d10 += g * x[t + sx];
            *d11 += g * x[t + sx + 1];
            if let Some(dx) = dx.as_deref_mut() {
                dx[t] += g * k00;
                dx[t + 1] += g * k01;
                dx[t + sx] += g * k10;
                dx[t + sx + 1] += g * k11;
            }
        }
    }
}

/// Index (into the `[6][6]` map `z1o`) of the maximum post-ReLU value of pooling window `win`
/// (`ph * 3 + pw`); ties go to the first in row-major window order.
#[inline]
fn window_argmax<S: Real>(z1o: &[S], win: usize) -> usize {
    let (ph, pw) = (win / S_P, win % S_P);
    let base = 2 * ph * S_C1 + 2 * pw;
    let at = |t: usize| relu(z1o.get(t).copied().unwrap_or(S::ZERO));
    let mut best = base;
    let mut best_v = at(base);
    for t in [base + 1, base + S_C1, base + S_C1 + 1] {
        let v = at(t);
        if v > best_v {
            best = t;
            best_v = v;
        }
    }
    best
}

/// Cache regions (see [`CacheLayout`]).
struct CacheParts<T> {
    z1: T,
    pool: T,
    z2: T,
    z3: T,
    /// FiLM coefficients (empty without FiLM).
    gb: T,
    /// Unmodulated pre-activations of the three convs (empty without FiLM).
    r1: T,
    r2: T,
    r3: T,
}

/// A cache `c`, borrowed either way, split into its regions.
fn split_cache<T: Cut>(l: &EncoderSizes, c: T) -> Result<CacheParts<T>, Error> {
    let n = l.cache;
    check_len(c.count(), n)?;
    let (z1, c) = cut(c, l.z1, n)?;
    let (pool, c) = cut(c, l.pool, n)?;
    let (z2, c) = cut(c, l.z2, n)?;
    let (z3, c) = cut(c, l.c2, n)?;
    let (gb, c) = cut(c, l.nf, n)?;
    let film = |v: usize| if l.film { v } else { 0 };
    let (r1, c) = cut(c, film(l.z1), n)?;
    let (r2, c) = cut(c, film(l.z2), n)?;
    let (r3, _) = cut(c, film(l.c2), n)?;
    Ok(CacheParts {
        z1,
        pool,
        z2,
        z3,
        gb,
        r1,
        r2,
        r3,
    })
}

/// The FiLM coefficients of conv layer `layer` (0, 1, 2): `(gamma, beta)`, `C_layer` each.
fn film_layer<'a, S>(l: &EncoderSizes, gb: &'a [S], layer: usize) -> (&'a [S], &'a [S]) {
    let (c, start) = match layer {
        0 => (l.c0, 0),
        1 => (l.c1, 2 * l.c0),
        _ => (l.c2, 2 * (l.c0 + l.c1)),
    };
    let g = gb.get(start..).unwrap_or(&[]);
    let (gamma, rest) = g.split_at(c.min(g.len()));
    (gamma, rest.get(..c).unwrap_or(rest))
}

fn film_layer_mut<'a, S>(
    l: &EncoderSizes,
    gb: &'a mut [S],
    layer: usize,
) -> (&'a mut [S], &'a mut [S]) {
    let (c, start) = match layer {
        0 => (l.c0, 0),
        1 => (l.c1, 2 * l.c0),
        _ => (l.c2, 2 * (l.c0 + l.c1)),
    };
    let g = gb.get_mut(start..).unwrap_or(&mut []);
    let (gamma, rest) = g.split_at_mut(c.min(g.len()));
    let rest_len = rest.len();
    (gamma, rest.get_mut(..c.min(rest_len)).unwrap_or(&mut []))
}

/// `gb = fb + fw e`: the FiLM coefficients of every channel from the instruction embedding.
fn film_coefs<S: Real>(fw: &[S], fb: &[S], e: &[S], gb: &mut [S]) {
    let hi = e.len().max(1);
    for ((out, b), row) in gb.iter_mut().zip(fb).zip(fw.chunks_exact(hi)) {
        let mut acc = *b;
        for (w, x) in row.iter().zip(e) {
            acc += *w * *x;
        }
        *out = acc;
    }
}

/// FiLM in place on `C` maps of `area` values: keeps the input in `raw`, then
/// `z = z * (1 + gamma_c) + beta_c`.
fn modulate<S: Real>(z: &mut [S], raw: &mut [S], gamma: &[S], beta: &[S], area: usize) {
    raw.copy_from_slice(z.get(..raw.len()).unwrap_or(&[]));
    for ((zc, g), b) in z.chunks_exact_mut(area.max(1)).zip(gamma).zip(beta) {
        let scale = S::ONE + *g;
        for v in zc {
            *v = *v * scale + *b;
        }
    }
}

/// Backward of [`modulate`] given `dz = dL/d(modulated z)`: accumulates `dgamma_c += sum dz *
/// raw`, `dbeta_c += sum dz`, and turns `dz` into `dL/d(raw z)` (`dz * (1 + gamma_c)`).
fn modulate_backward<S: Real>(
    dz: &mut [S],
    raw: &[S],
    gamma: &[S],
    dgamma: &mut [S],
    dbeta: &mut [S],
    area: usize,
) {
    let a = area.max(1);
    for ((((dzc, rc), g), dg), db) in dz
        .chunks_exact_mut(a)
        .zip(raw.chunks_exact(a))
        .zip(gamma)
        .zip(dgamma.iter_mut())
        .zip(dbeta.iter_mut())
    {
        let scale = S::ONE + *g;
        for (v, r) in dzc.iter_mut().zip(rc) {
            *dg += *v * *r;
            *db += *v;
            *v *= scale;
        }
    }
}

/// The instruction prefix FiLM reads (`instr_hidden` values), empty without FiLM.
fn film_input<'a, S>(l: &EncoderSizes, instr: &'a [S]) -> Result<&'a [S], Error> {
    instr.get(..l.hi).ok_or(too_small(l.hi, instr.len()))
}

/// Encodes one observation: writes the `C2` features into `out[..C2]` and the activations the
/// backward pass needs into `cache[..encoder_cache_len(d)]`. With FiLM ([`ModelDims::film`])
/// the convs are modulated by the instruction embedding `instr[..instr_hidden]`; without it
/// `instr` is not read (pass `&[]`).
///
/// Errors: [`Error::BufferTooSmall`] when `params`, `instr` (FiLM), `out` or `cache` is shorter
/// than its layout; [`Error::BadCellCode`] for a `Bow` observation with a value >= 16. Nothing
/// is written on error.
pub fn encode_forward<S: Real>(
    d: &ModelDims,
    params: &[S],
    obs: &Observation,
    instr: &[S],
    out: &mut [S],
    cache: &mut [S],
) -> Result<(), Error> {
    let l = encoder_sizes(d);
    let p = split_params(&l, params)?;
    let e = film_input(&l, instr)?;
    let got = out.len();
    let out = out.get_mut(..l.c2).ok_or(too_small(l.c2, got))?;
    let CacheParts {
        z1,
        pool,
        z2,
        z3,
        gb,
        r1,
        r2,
        r3,
    } = split_cache(&l, cache)?;
    if l.bow {
        check_codes(obs)?;
    }
    if l.film {
        film_coefs(p.fw, p.fb, e, gb);
    }

    // conv1: z1 = b1 + sum over input channels (one input map on the stack at a time).
    for (zo, b) in z1.chunks_exact_mut(A_C1).zip(p.b1) {
        zo.fill(*b);
    }
    let mut x = [S::ZERO; A_IN];
    for ci in 0..l.cin {
        input_channel(&l, p.emb, obs, ci, &mut x);
        // Kernels are ordered [o][ci]: this channel's kernel of output o is number o*cin+ci.
        let kernels = p.w1.chunks_exact(KA).skip(ci).step_by(l.cin);
        for (zo, k) in z1.chunks_exact_mut(A_C1).zip(kernels) {
            conv2x2_acc(&x, S_IN, k, zo);
        }
    }
    if l.film {
        let (g, b) = film_layer(&l, gb, 0);
        modulate(z1, r1, g, b, A_C1);
    }

    // ReLU + maxpool.
    for (zo, po) in z1.chunks_exact(A_C1).zip(pool.chunks_exact_mut(A_P)) {
        for (win, v) in po.iter_mut().enumerate() {
            *v = relu(zo.get(window_argmax(zo, win)).copied().unwrap_or(S::ZERO));
        }
    }

    // conv2.
    let mut kernels = p.w2.chunks_exact(KA);
    for (zo, b) in z2.chunks_exact_mut(A_C2).zip(p.b2) {
        zo.fill(*b);
        for pc in pool.chunks_exact(A_P) {
            let Some(k) = kernels.next() else { break };
            conv2x2_acc(pc, S_P, k, zo);
        }
    }
    if l.film {
        let (g, b) = film_layer(&l, gb, 1);
        modulate(z2, r2, g, b, A_C2);
    }

    // ReLU + conv3 (its 2x2 kernel covers the whole 2x2 map) + ReLU.
    let mut kernels = p.w3.chunks_exact(KA);
    for (zo, b) in z3.iter_mut().zip(p.b3) {
        let mut acc = *b;
        for zc in z2.chunks_exact(A_C2) {
            let Some(k) = kernels.next() else { break };
            for (kv, zv) in k.iter().zip(zc) {
                acc += *kv * relu(*zv);
            }
        }
        *zo = acc;
    }
    if l.film {
        let (g, b) = film_layer(&l, gb, 2);
        modulate(z3, r3, g, b, 1);
    }
    for (y, zo) in out.iter_mut().zip(z3.iter()) {
        *y = relu(*zo);
    }
    if l.norm {
        layer_norm(out);
    }
    Ok(())
}

/// Backward of [`encode_forward`] given `d_out = dL/d(out)` (`C2` values) and the `cache` the
/// forward pass filled for the same `params`, `obs` and `instr`: accumulates `dL/d(params)` into
/// `grads[..encoder_param_len(d)]` (same layout as `params`; the `Bow` embedding rows get their
/// gradients too) and, with FiLM, `dL/d(instr)` into `d_instr[..instr_hidden]` (without FiLM
/// neither `instr` nor `d_instr` is touched: pass `&[]`). The observation is discrete, so there
/// is no observation gradient. `scratch` needs [`encoder_scratch_len`] elements and is
/// overwritten.
///
/// Errors: [`Error::BufferTooSmall`] for any short buffer, [`Error::BadCellCode`] for a bad
/// `Bow` code; nothing is written to `grads` or `d_instr` on error.
#[allow(clippy::too_many_arguments)]
pub fn encode_backward<S: Real>(
    d: &ModelDims,
    params: &[S],
    obs: &Observation,
    instr: &[S],
    cache: &[S],
    d_out: &[S],
    grads: &mut [S],
    d_instr: &mut [S],
    scratch: &mut [S],
) -> Result<(), Error> {
    let l = encoder_sizes(d);
    let p = split_params(&l, params)?;
    let e = film_input(&l, instr)?;
    let d_len = d_instr.len();
    let d_e = d_instr.get_mut(..l.hi).ok_or(too_small(l.hi, d_len))?;
    let g = split_params(&l, grads)?;
    let CacheParts {
        z1,
        pool,
        z2,
        z3,
        gb: coefs,
        r1,
        r2,
        r3,
    } = split_cache(&l, cache)?;
    let d_out = d_out.get(..l.c2).ok_or(too_small(l.c2, d_out.len()))?;
    check_len(scratch.len(), l.scratch)?;
    let (dz2, rest) = cut(scratch, l.z2, l.scratch)?;
    let (dp, rest) = cut(rest, l.pool, l.scratch)?;
    let (dcoefs, rest) = cut(rest, l.nf, l.scratch)?;
    if l.bow {
        check_codes(obs)?;
    }
    // Feature normalisation: d_out becomes the gradient of the un-normalised features, whose
    // values (relu of the cached conv3 pre-activations) give back the forward's statistics.
    let d_out = if l.norm {
        let (features, rest) = cut(rest, l.c2, l.scratch)?;
        let (d_features, _) = cut(rest, l.c2, l.scratch)?;
        for (f, z) in features.iter_mut().zip(z3.iter()) {
            *f = relu(*z);
        }
        layer_norm_backward(features, d_out, d_features);
        &*d_features
    } else {
        d_out
    };
    dz2.fill(S::ZERO);
    dp.fill(S::ZERO);
    dcoefs.fill(S::ZERO);

    // ReLU (+ FiLM) + conv3: dW3 += dz3 relu(z2), db3 += dz3, dz2 = W3^T dz3 (masked below).
    let (gamma3, _) = film_layer(&l, coefs, 2);
    let (dgamma3, dbeta3) = film_layer_mut(&l, dcoefs, 2);
    let mut kernels = p.w3.chunks_exact(KA);
    let mut gkernels = g.w3.chunks_exact_mut(KA);
    for (c, ((zo, dy), gb)) in z3.iter().zip(d_out).zip(g.b3.iter_mut()).enumerate() {
        let mut gz = if *zo > S::ZERO { *dy } else { S::ZERO };
        if l.film {
            let (Some(r), Some(gm), Some(dg), Some(db)) = (
                r3.get(c),
                gamma3.get(c),
                dgamma3.get_mut(c),
                dbeta3.get_mut(c),
            ) else {
                continue;
            };
            *dg += gz * *r;
            *db += gz;
            gz *= S::ONE + *gm;
        }
        *gb += gz;
        for (zc, dzc) in z2.chunks_exact(A_C2).zip(dz2.chunks_exact_mut(A_C2)) {
            let (Some(k), Some(dk)) = (kernels.next(), gkernels.next()) else {
                break;
            };
            if gz == S::ZERO {
                continue;
            }
            for (((kv, dkv), zv), dzv) in k.iter().zip(dk.iter_mut()).zip(zc).zip(dzc.iter_mut()) {
                *dkv += gz * relu(*zv);
                *dzv += gz * *kv;
            }
        }
    }
    for (dzv, zv) in dz2.iter_mut().zip(z2.iter()) {
        if *zv <= S::ZERO {
            *dzv = S::ZERO;
        }
    }
    if l.film {
        let (gamma2, _) = film_layer(&l, coefs, 1);
        let (dgamma2, dbeta2) = film_layer_mut(&l, dcoefs, 1);
        modulate_backward(dz2, r2, gamma2, dgamma2, dbeta2, A_C2);
    }

    // conv2: dW2, db2, and dp = dL/d(pool).
    let mut kernels = p.w2.chunks_exact(KA);
    let mut gkernels = g.w2.chunks_exact_mut(KA);
    for (dzo, gb) in dz2.chunks_exact(A_C2).zip(g.b2.iter_mut()) {
        for v in dzo {
            *gb += *v;
        }
        for (pc, dpc) in pool.chunks_exact(A_P).zip(dp.chunks_exact_mut(A_P)) {
            let (Some(k), Some(dk)) = (kernels.next(), gkernels.next()) else {
                break;
            };
            conv2x2_backward(pc, S_P, k, dzo, dk, Some(dpc));
        }
    }

    // Maxpool + ReLU: the gradient goes to each window's argmax, if its pre-activation is > 0.
    for (zo, dpo) in z1.chunks_exact(A_C1).zip(dp.chunks_exact_mut(A_P)) {
        for (win, gv) in dpo.iter_mut().enumerate() {
            let z = zo.get(window_argmax(zo, win)).copied().unwrap_or(S::ZERO);
            if z <= S::ZERO {
                *gv = S::ZERO;
            }
        }
    }
    if l.film {
        film_conv1_backward(&l, z1, r1, coefs, dcoefs, dp);
    }
    conv1_backward(&l, &p, g.w1, g.b1, g.emb, obs, z1, dp);
    if l.film {
        film_coefs_backward(p.fw, g.fw, g.fb, e, dcoefs, d_e);
    }
    Ok(())
}

/// FiLM's backward on conv1 (see [`modulate_backward`]): only each pooling window's argmax
/// carries a gradient, so `dp` (`dL/d(modulated z1)` at the argmaxes, `[C0][3][3]`) gives
/// `dgamma1`, `dbeta1` and becomes `dL/d(raw z1)` there.
fn film_conv1_backward<S: Real>(
    l: &EncoderSizes,
    z1: &[S],
    r1: &[S],
    coefs: &[S],
    dcoefs: &mut [S],
    dp: &mut [S],
) {
    let (gamma1, _) = film_layer(l, coefs, 0);
    let (dgamma1, dbeta1) = film_layer_mut(l, dcoefs, 0);
    for (c, (zo, dpo)) in z1
        .chunks_exact(A_C1)
        .zip(dp.chunks_exact_mut(A_P))
        .enumerate()
    {
        let (Some(gm), Some(dg), Some(db)) = (gamma1.get(c), dgamma1.get_mut(c), dbeta1.get_mut(c))
        else {
            continue;
        };
        for (win, gv) in dpo.iter_mut().enumerate() {
            let t = c * A_C1 + window_argmax(zo, win);
            *dg += *gv * r1.get(t).copied().unwrap_or(S::ZERO);
            *db += *gv;
            *gv *= S::ONE + *gm;
        }
    }
}

/// conv1's backward from `dp` (`dL/d(raw z1)` at each pooling window's argmax): `db1`, then per
/// input channel `dW1`, and for `Bow` the embedding rows' gradient (each cell's vector is the
/// sum of its three rows).
#[allow(clippy::too_many_arguments)]
fn conv1_backward<S: Real>(
    l: &EncoderSizes,
    p: &Parts<&[S]>,
    gw1: &mut [S],
    gb1: &mut [S],
    gemb: &mut [S],
    obs: &Observation,
    z1: &[S],
    dp: &[S],
) {
    // conv1: db1, then per input channel dW1 (and the embedding's gradient for Bow).
    for (dpo, gb) in dp.chunks_exact(A_P).zip(gb1.iter_mut()) {
        for v in dpo {
            *gb += *v;
        }
    }
    let mut x = [S::ZERO; A_IN];
    for ci in 0..l.cin {
        input_channel(l, p.emb, obs, ci, &mut x);
        let mut dx = [S::ZERO; A_IN];
        let kernels = p.w1.chunks_exact(KA).skip(ci).step_by(l.cin);
        let gkernels = gw1.chunks_exact_mut(KA).skip(ci).step_by(l.cin);
        for (((zo, dpo), k), dk) in z1
            .chunks_exact(A_C1)
            .zip(dp.chunks_exact(A_P))
            .zip(kernels)
            .zip(gkernels)
        {
            let ([k00, k01, k10, k11], [d00, d01, d10, d11]) = (k, dk) else {
                continue;
            };
            for (win, gv) in dpo.iter().enumerate() {
                let gv = *gv;
                if gv == S::ZERO {
                    continue;
                }
                let t = window_argmax(zo, win);
                // Top-left input of the 2x2 input window of conv1 output t = (h, w).
                let u = (t / S_C1) * S_IN + t % S_C1;
                let (Some(&x00), Some(&x01), Some(&x10), Some(&x11)) =
                    (x.get(u), x.get(u + 1), x.get(u + S_IN), x.get(u + S_IN + 1))
                else {
                    continue;
                };
                *d00 += gv * x00;
                *d01 += gv * x01;
                *d10 += gv * x10;
                *d11 += gv * x11;
                if l.bow {
                    for (off, kv) in [(0, *k00), (1, *k01), (S_IN, *k10), (S_IN + 1, *k11)] {
                        if let Some(v) = dx.get_mut(u + off) {
                            *v += gv * kv;
                        }
                    }
                }
            }
        }
        if l.bow {
            // Each cell's vector is the sum of its three rows: scatter dx into them.
            for (k, cell) in obs.iter().enumerate() {
                let (j, i) = (k / S_IN, k % S_IN);
                let v = dx.get(i * S_IN + j).copied().unwrap_or(S::ZERO);
                if v == S::ZERO {
                    continue;
                }
                for (a, &code) in cell.iter().enumerate() {
                    let row = a * BOW_MAX_VALUE + usize::from(code);
                    if let Some(e) = gemb.get_mut(row * l.cin + ci) {
                        *e += v;
                    }
                }
            }
        }
    }
}

/// Backward of [`film_coefs`] given `dcoefs = dL/d(gb)`: `dfb += dcoefs`,
/// `dfw += dcoefs e^T`, `d_e += fw^T dcoefs`.
fn film_coefs_backward<S: Real>(
    fw: &[S],
    dfw: &mut [S],
    dfb: &mut [S],
    e: &[S],
    dcoefs: &[S],
    d_e: &mut [S],
) {
    let hi = e.len().max(1);
    for (((row, drow), db), dc) in fw
        .chunks_exact(hi)
        .zip(dfw.chunks_exact_mut(hi))
        .zip(dfb.iter_mut())
        .zip(dcoefs)
    {
        *db += *dc;
        if *dc == S::ZERO {
            continue;
        }
        for (((w, dw), x), de) in row.iter().zip(drow.iter_mut()).zip(e).zip(d_e.iter_mut()) {
            *dw += *dc * *x;
            *de += *w * *dc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::dims::{PAPER, TINY};

    /// The plain encoder (no FiLM, no normalisation) at the Paper preset's sizes: what these
    /// tests measure the variants against (the preset itself has both since 2026-12-05).
    const PAPER_CONV: ModelDims = ModelDims {
        encoder: EncoderKind::Conv,
        film: false,
        feature_norm: false,
        ..PAPER
    };
    use crate::nn::gradcheck::{max_rel_error, max_rel_error_richardson_smooth, GRAD_TOL};
    use crate::rng::Pcg32;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const H: f64 = 1e-5;
    const FLOOR: f64 = 1e-4;
    /// Smallest standard deviation of the features at a point where the normalisation's
    /// gradient is checked (finite differences at step `H` need the function smooth at a much
    /// larger scale).
    const NORM_MARGIN: f64 = 0.1;
    /// Distance from a ReLU kink or a maxpool tie below which a point is skipped. A step of
    /// `H` on one parameter moves a pre-activation by up to ~`H * 10` (raw codes reach 10), so
    /// the margin must exceed that for the central difference to stay on one linear piece.
    const MARGIN: f64 = 1e-3;

    fn dims(encoder: EncoderKind, conv_channels: [usize; 3], bow_dim: usize) -> ModelDims {
        ModelDims {
            encoder,
            conv_channels,
            bow_dim,
            ..TINY
        }
    }

    fn uni(rng: &mut Pcg32, s: f64) -> f64 {
        (rng.gen_f64() * 2.0 - 1.0) * s
    }

    fn random_obs(rng: &mut Pcg32) -> Observation {
        let mut o = [[0u8; 3]; 49];
        for c in o.iter_mut() {
            *c = [rng.below(11) as u8, rng.below(6) as u8, rng.below(3) as u8];
        }
        o
    }

    fn env_obs(seed: u64) -> Observation {
        let level = crate::levels::Level::from_id("BabyAI-GoToLocal-v0").unwrap();
        let mut env = crate::env::Env::new(8, 8).unwrap();
        level.reset(&mut env, seed).unwrap();
        env.observation()
    }

    fn random_params(d: &ModelDims, rng: &mut Pcg32) -> Vec<f64> {
        let mut p = vec![0.0; encoder_param_len(d)];
        for t in encoder_tensors(d).as_slice() {
            let fan_in = (t.shape[1] * 4).max(1) as f64;
            let s = match t.name {
                "embedding.weight" => 1.0,
                "conv1.weight" if d.encoder == EncoderKind::Conv => 0.3 / fan_in.sqrt(),
                "conv1.weight" | "conv2.weight" | "conv3.weight" => 1.5 / fan_in.sqrt(),
                _ => 0.5,
            };
            for v in &mut p[t.offset..t.offset + t.len()] {
                *v = uni(rng, s);
            }
        }
        p
    }

    fn forward<S: Real>(d: &ModelDims, p: &[S], obs: &Observation) -> (Vec<S>, Vec<S>) {
        forward_e(d, p, obs, &[])
    }

    /// Forward with an instruction embedding (read by FiLM only).
    fn forward_e<S: Real>(d: &ModelDims, p: &[S], obs: &Observation, e: &[S]) -> (Vec<S>, Vec<S>) {
        let mut out = vec![S::ZERO; d.conv_channels[2]];
        let mut cache = vec![S::ZERO; encoder_cache_len(d)];
        encode_forward(d, p, obs, e, &mut out, &mut cache).unwrap();
        (out, cache)
    }

    fn backward(d: &ModelDims, p: &[f64], obs: &Observation, dy: &[f64]) -> Vec<f64> {
        let (_, cache) = forward(d, p, obs);
        let mut g = vec![0.0; p.len()];
        let mut scratch = vec![f64::NAN; encoder_scratch_len(d)];
        encode_backward(d, p, obs, &[], &cache, dy, &mut g, &mut [], &mut scratch).unwrap();
        g
    }

    fn loss(d: &ModelDims, p: &[f64], obs: &Observation, dy: &[f64]) -> f64 {
        let (out, _) = forward(d, p, obs);
        out.iter().zip(dy).map(|(a, b)| a * b).sum()
    }

    /// True when no pre-activation is within `MARGIN` of 0 and no pooling window has a
    /// runner-up within `MARGIN` of its (positive) maximum.
    fn clean(d: &ModelDims, cache: &[f64]) -> bool {
        let cl = encoder_cache_layout(d);
        let z1 = &cache[cl.conv1..cl.pool];
        let pre = z1.iter().chain(&cache[cl.conv2..cl.film]);
        if pre.into_iter().any(|z| z.abs() < MARGIN) {
            return false;
        }
        for zo in z1.chunks_exact(36) {
            for win in 0..9 {
                let base = (win / 3) * 12 + (win % 3) * 2;
                let mut v: Vec<f64> = [base, base + 1, base + 6, base + 7]
                    .iter()
                    .map(|&t| zo[t].max(0.0))
                    .collect();
                v.sort_by(|a, b| b.partial_cmp(a).unwrap());
                if v[0] > 0.0 && v[0] - v[1] < MARGIN {
                    return false;
                }
            }
        }
        true
    }

    /// A clean random point (weights, observation, loss coefficients) for `d`.
    fn clean_point(d: &ModelDims, seed: u64) -> Option<(Vec<f64>, Observation, Vec<f64>)> {
        let mut rng = Pcg32::new(seed);
        let p = random_params(d, &mut rng);
        let obs = random_obs(&mut rng);
        let dy: Vec<f64> = (0..d.conv_channels[2])
            .map(|_| uni(&mut rng, 1.0))
            .collect();
        let (out, cache) = forward(d, &p, &obs);
        // A point where every feature is dead has an all-zero gradient: a weak check, skip it.
        let alive = out.iter().any(|v| *v > 0.0);
        (alive && clean(d, &cache)).then_some((p, obs, dy))
    }

    fn grad_error(d: &ModelDims, p: &[f64], obs: &Observation, dy: &[f64], g: &[f64]) -> f64 {
        assert!(p.len() <= 4096, "gradcheck buffer holds 4096 parameters");
        max_rel_error(|v| loss(d, v, obs, dy), p, g, H, FLOOR).0
    }

    /// PyTorch-style reference: direct formulas on explicit tensors, first-max pooling.
    fn reference(d: &ModelDims, p: &[f64], obs: &Observation) -> Vec<f64> {
        let t = encoder_tensors(d);
        let get = |name: &str| {
            let t = t.as_slice().iter().find(|t| t.name == name).unwrap();
            &p[t.offset..t.offset + t.len()]
        };
        let cin = encoder_in_channels(d);
        let mut x = vec![0.0; cin * 49];
        for c in 0..cin {
            for h in 0..7 {
                for w in 0..7 {
                    let cell = obs[w * 7 + h];
                    x[c * 49 + h * 7 + w] = match d.encoder {
                        EncoderKind::Conv => cell[c] as f64,
                        EncoderKind::Bow => {
                            let e = get("embedding.weight");
                            (0..3)
                                .map(|a| e[(a * 16 + cell[a] as usize) * cin + c])
                                .sum()
                        }
                    };
                }
            }
        }
        let conv = |x: &[f64], ci: usize, s: usize, w: &[f64], b: &[f64]| {
            let (co, so) = (b.len(), s - 1);
            let mut z = vec![0.0; co * so * so];
            for o in 0..co {
                for h in 0..so {
                    for ww in 0..so {
                        let mut acc = b[o];
                        for c in 0..ci {
                            for kh in 0..2 {
                                for kw in 0..2 {
                                    acc += w[((o * ci + c) * 2 + kh) * 2 + kw]
                                        * x[c * s * s + (h + kh) * s + ww + kw];
                                }
                            }
                        }
                        z[o * so * so + h * so + ww] = acc;
                    }
                }
            }
            z
        };
        let [c0, c1, _] = d.conv_channels;
        let a1: Vec<f64> = conv(&x, cin, 7, get("conv1.weight"), get("conv1.bias"))
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        let mut pool = vec![0.0; c0 * 9];
        for o in 0..c0 {
            for ph in 0..3 {
                for pw in 0..3 {
                    let mut m = f64::NEG_INFINITY;
                    for dh in 0..2 {
                        for dw in 0..2 {
                            let v = a1[o * 36 + (2 * ph + dh) * 6 + 2 * pw + dw];
                            if v > m {
                                m = v;
                            }
                        }
                    }
                    pool[o * 9 + ph * 3 + pw] = m;
                }
            }
        }
        let a2: Vec<f64> = conv(&pool, c0, 3, get("conv2.weight"), get("conv2.bias"))
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        conv(&a2, c1, 2, get("conv3.weight"), get("conv3.bias"))
            .iter()
            .map(|v| v.max(0.0))
            .collect()
    }

    #[test]
    fn preset_sizes() {
        let bow = |d: ModelDims| ModelDims {
            encoder: EncoderKind::Bow,
            ..d
        };
        // rl-starter-files' image_conv: 208 + 2080 + 8256.
        assert_eq!(encoder_param_len(&PAPER_CONV), 10_544);
        assert_eq!(encoder_cache_len(&PAPER_CONV), 576 + 144 + 128 + 64);
        assert_eq!(encoder_scratch_len(&PAPER_CONV), 128 + 144);
        assert_eq!(
            encoder_param_len(&bow(PAPER_CONV)),
            768 + 1040 + 2080 + 8256
        );
        assert_eq!(encoder_cache_len(&bow(PAPER_CONV)), 912);
        // The preset: bag of words + FiLM (2 x 112 coefficients from 128 features) + norm.
        assert_eq!(encoder_param_len(&PAPER), 41_040);
        assert_eq!(
            encoder_param_len(&PAPER),
            encoder_param_len(&bow(PAPER_CONV)) + 224 * 129
        );
        assert_eq!(encoder_param_len(&TINY), 104 + 528 + 1040);
        assert_eq!(encoder_cache_len(&TINY), 288 + 72 + 64 + 16);
        assert_eq!(encoder_scratch_len(&TINY), 64 + 72);
        assert_eq!(encoder_param_len(&bow(TINY)), 384 + 264 + 528 + 1040);
        for d in [PAPER_CONV, TINY, bow(PAPER_CONV), bow(TINY)] {
            let t = encoder_tensors(&d);
            let mut off = 0;
            for s in t.as_slice() {
                assert_eq!(s.offset, off, "{}", s.name);
                assert_eq!(s.dims().iter().product::<usize>(), s.len());
                off += s.len();
            }
            assert_eq!(off, encoder_param_len(&d));
            assert_eq!(t.count(), if d.encoder == EncoderKind::Bow { 7 } else { 6 });
            assert_eq!(t.as_slice()[t.count() - 1].name, "conv3.bias");
            let cl = encoder_cache_layout(&d);
            assert_eq!(cl.len, encoder_cache_len(&d));
            assert!(cl.conv1 <= cl.pool && cl.pool <= cl.conv2 && cl.conv2 <= cl.conv3);
        }
        let t = encoder_tensors(&bow(TINY));
        assert_eq!(t.as_slice()[0].dims(), &[48, 8]);
        assert_eq!(t.as_slice()[1].dims(), &[8, 8, 2, 2]);
    }

    /// One channel per layer, values worked out by hand; pins the input orientation too.
    #[test]
    fn hand_computed_example() {
        let d = dims(EncoderKind::Conv, [1, 1, 1], 0);
        let mut p = vec![0.0; encoder_param_len(&d)];
        assert_eq!(p.len(), 12 + 1 + 4 + 1 + 4 + 1);
        // conv1 reads only the type channel at kernel position (kh 0, kw 1), bias -0.5:
        // z1[h][w] = obs[(w + 1) * 7 + h].type - 0.5.
        p[1] = 1.0;
        p[12] = -0.5;
        p[13..17].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        p[17] = 0.25;
        p[18..22].copy_from_slice(&[1.0, -1.0, 0.5, -2.0]);
        p[22] = -1.0;
        let mut obs = [[0u8; 3]; 49];
        obs[3 * 7 + 2] = [5, 1, 0]; // column i=2, row j=3 -> x[.][2][3] -> z1[2][2] = 4.5
        obs[7 + 4] = [2, 0, 0]; // i=4, j=1 -> x[.][4][1] -> z1[4][0] = 1.5
        obs[0] = [10, 0, 0]; // i=0, j=0 -> x[.][0][0]: kw=1 never reads w=0
        let (out, cache) = forward(&d, &p, &obs);
        let cl = encoder_cache_layout(&d);
        let z1 = &cache[cl.conv1..cl.pool];
        assert_eq!(z1.len(), 36);
        for (t, v) in z1.iter().enumerate() {
            let want = match t {
                14 => 4.5, // (2, 2)
                24 => 1.5, // (4, 0)
                _ => -0.5,
            };
            assert_eq!(*v, want, "z1[{t}]");
        }
        let pool = &cache[cl.pool..cl.conv2];
        assert_eq!(pool, &[0.0, 0.0, 0.0, 0.0, 4.5, 0.0, 1.5, 0.0, 0.0]);
        // z2[h][w] = 0.25 + p[h][w] + 2 p[h][w+1] + 3 p[h+1][w] + 4 p[h+1][w+1].
        assert_eq!(&cache[cl.conv2..cl.conv3], &[18.25, 13.75, 13.75, 4.75]);
        // z3 = -1 + 18.25 - 13.75 + 0.5 * 13.75 - 2 * 4.75.
        assert_eq!(&cache[cl.conv3..cl.len], &[0.875]);
        assert_eq!(out, vec![0.875]);
        assert_eq!(reference(&d, &p, &obs), out);
        // Backward by hand for dL/dout = 1: db3 = 1, dW3 = relu(z2), db2 = sum(W3) = -1.5.
        let g = backward(&d, &p, &obs, &[1.0]);
        assert_eq!(g[22], 1.0);
        assert_eq!(&g[18..22], &[18.25, 13.75, 13.75, 4.75]);
        assert_eq!(g[17], -1.5);
        // dW2[kh][kw] = sum_{h,w} dz2[h][w] p[h+kh][w+kw] with dz2 = W3 = [1, -1, 0.5, -2] and
        // p11 = 4.5, p20 = 1.5 the only nonzero inputs.
        assert_eq!(&g[13..17], &[-2.0 * 4.5, 0.5 * 4.5, -4.5 + 0.5 * 1.5, 4.5]);
        // dp11 = 1*(-2) + 2*0.5 + 3*(-1) + 4*1 = 0 and dp20 = 3 * 0.5 = 1.5 (window 6, argmax
        // z1[4][0]): db1 = 1.5 and dW1[type][0][1] = 1.5 * x[type][4][1] = 1.5 * 2.
        let mut want_w1 = [0.0; 13];
        want_w1[1] = 3.0;
        want_w1[12] = 1.5;
        assert_eq!(&g[..13], &want_w1);
    }

    #[test]
    fn matches_reference_implementation() {
        let mut rng = Pcg32::new(11);
        let mut alive = 0;
        for (k, d) in [
            dims(EncoderKind::Conv, [3, 4, 5], 0),
            dims(EncoderKind::Bow, [2, 3, 4], 5),
            dims(EncoderKind::Bow, [3, 1, 2], 1),
            TINY,
            ModelDims {
                encoder: EncoderKind::Bow,
                ..TINY
            },
        ]
        .iter()
        .enumerate()
        {
            for i in 0..4 {
                let p = random_params(d, &mut rng);
                let obs = if i == 0 {
                    env_obs(k as u64)
                } else {
                    random_obs(&mut rng)
                };
                let (out, _) = forward(d, &p, &obs);
                let want = reference(d, &p, &obs);
                assert_eq!(out.len(), want.len());
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
                }
                alive += out.iter().filter(|v| **v > 0.0).count();
            }
        }
        assert!(alive > 20, "too few live features ({alive}): weak test");
    }

    /// Checks every parameter of a clean point; returns whether the point was clean.
    fn gradcheck_point(d: &ModelDims, seed: u64) -> bool {
        let Some((p, obs, dy)) = clean_point(d, seed) else {
            return false;
        };
        let g = backward(d, &p, &obs, &dy);
        let err = grad_error(d, &p, &obs, &dy, &g);
        assert!(
            err < GRAD_TOL,
            "{:?} seed {seed}: rel error {err}",
            d.encoder
        );
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, max_global_rejects: 4096, ..ProptestConfig::default() })]

        #[test]
        fn gradcheck_conv(seed in any::<u64>(), c0 in 1usize..=4, c1 in 1usize..=4, c2 in 1usize..=4) {
            let d = dims(EncoderKind::Conv, [c0, c1, c2], 0);
            prop_assume!(clean_point(&d, seed).is_some());
            prop_assert!(gradcheck_point(&d, seed));
        }

        #[test]
        fn gradcheck_bow(seed in any::<u64>(), c0 in 1usize..=4, c1 in 1usize..=4, c2 in 1usize..=4, bow in 1usize..=3) {
            let d = dims(EncoderKind::Bow, [c0, c1, c2], bow);
            prop_assume!(clean_point(&d, seed).is_some());
            prop_assert!(gradcheck_point(&d, seed));
        }
    }

    #[test]
    fn gradcheck_tiny_presets() {
        for d in [
            TINY,
            ModelDims {
                encoder: EncoderKind::Bow,
                ..TINY
            },
        ] {
            let checked = (0..200u64)
                .filter(|s| gradcheck_point(&d, *s))
                .take(1)
                .count();
            assert_eq!(checked, 1, "no clean point found for {:?}", d.encoder);
        }
    }

    // FiLM: the gradient check runs over the parameters and the instruction embedding together,
    // `v = [params | e]`.

    fn film_dims(
        encoder: EncoderKind,
        conv_channels: [usize; 3],
        bow: usize,
        hi: usize,
    ) -> ModelDims {
        ModelDims {
            film: true,
            instr_hidden: hi,
            ..dims(encoder, conv_channels, bow)
        }
    }

    fn film_loss(d: &ModelDims, v: &[f64], obs: &Observation, dy: &[f64]) -> f64 {
        let (p, e) = v.split_at(encoder_param_len(d));
        let (out, _) = forward_e(d, p, obs, e);
        out.iter().zip(dy).map(|(a, b)| a * b).sum()
    }

    /// `[dL/d params | dL/d e]` from the hand-written backward pass.
    fn film_grad(d: &ModelDims, v: &[f64], obs: &Observation, dy: &[f64]) -> Vec<f64> {
        let np = encoder_param_len(d);
        let (p, e) = v.split_at(np);
        let (_, cache) = forward_e(d, p, obs, e);
        let mut g = vec![0.0; v.len()];
        let (gp, ge) = g.split_at_mut(np);
        let mut scratch = vec![f64::NAN; encoder_scratch_len(d)];
        encode_backward(d, p, obs, e, &cache, dy, gp, ge, &mut scratch).unwrap();
        g
    }

    fn film_point(d: &ModelDims, seed: u64) -> Option<(Vec<f64>, Observation, Vec<f64>)> {
        let mut rng = Pcg32::new(seed);
        let mut v = random_params(d, &mut rng);
        for t in encoder_tensors(d).as_slice() {
            if t.name.starts_with("film.") {
                for x in &mut v[t.offset..t.offset + t.len()] {
                    *x = uni(&mut rng, 0.4);
                }
            }
        }
        v.extend((0..d.instr_hidden).map(|_| uni(&mut rng, 1.0)));
        let obs = random_obs(&mut rng);
        let dy: Vec<f64> = (0..d.conv_channels[2])
            .map(|_| uni(&mut rng, 1.0))
            .collect();
        let (p, e) = v.split_at(encoder_param_len(d));
        let (out, cache) = forward_e(d, p, &obs, e);
        let alive = out.iter().any(|x| *x > 0.0);
        (alive && clean(d, &cache)).then_some((v, obs, dy))
    }

    fn film_gradcheck_point(d: &ModelDims, seed: u64) -> bool {
        let Some((v, obs, dy)) = film_point(d, seed) else {
            return false;
        };
        let g = film_grad(d, &v, &obs, &dy);
        let err = max_rel_error(|x| film_loss(d, x, &obs, &dy), &v, &g, H, FLOOR).0;
        assert!(
            err < GRAD_TOL,
            "FiLM {:?} seed {seed}: rel error {err}",
            d.encoder
        );
        // The instruction and the FiLM generator do get gradients.
        let np = encoder_param_len(d);
        assert!(g[np..].iter().any(|x| *x != 0.0), "no instruction gradient");
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, max_global_rejects: 4096, ..ProptestConfig::default() })]

        #[test]
        fn gradcheck_film(seed in any::<u64>(), c0 in 1usize..=3, c1 in 1usize..=3, c2 in 1usize..=3, hi in 1usize..=3, bow in 0usize..=2) {
            let d = if bow == 0 {
                film_dims(EncoderKind::Conv, [c0, c1, c2], 0, hi)
            } else {
                film_dims(EncoderKind::Bow, [c0, c1, c2], bow, hi)
            };
            prop_assume!(film_point(&d, seed).is_some());
            prop_assert!(film_gradcheck_point(&d, seed));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, max_global_rejects: 4096, ..ProptestConfig::default() })]

        /// Feature normalisation, with and without FiLM, over parameters and instruction.
        #[test]
        fn gradcheck_feature_norm(seed in any::<u64>(), c0 in 1usize..=3, c1 in 1usize..=3, c2 in 2usize..=5, hi in 1usize..=3, film in any::<bool>()) {
            let d = ModelDims {
                feature_norm: true,
                film,
                ..film_dims(EncoderKind::Bow, [c0, c1, c2], 2, hi)
            };
            let Some((v, obs, dy)) = film_point(&d, seed) else {
                prop_assume!(false);
                unreachable!()
            };
            // Like a ReLU kink or a pooling tie, features of almost equal values are a point
            // finite differences cannot check: the normalisation's curvature grows as
            // 1 / std^2 (two features 0.036 apart gave a relative error of 1.1e-6 at step H).
            let plain = ModelDims { feature_norm: false, ..d };
            let (f, _) = {
                let (p, e) = v.split_at(encoder_param_len(&d));
                forward_e(&plain, p, &obs, e)
            };
            let mean = f.iter().sum::<f64>() / f.len() as f64;
            let var = f.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / f.len() as f64;
            prop_assume!(var.sqrt() >= NORM_MARGIN);
            let v = if film { v } else { v[..encoder_param_len(&d)].to_vec() };
            let loss = |x: &[f64]| film_loss(&d, x, &obs, &dy);
            let g = film_grad(&d, &v, &obs, &dy);
            // Richardson-extrapolated differences (as the whole policy's check): the normalised
            // features are scale-invariant, so gradients of very different sizes sit side by
            // side and a plain central difference's truncation error reaches 1e-6 on the small
            // ones. A point the extrapolation finds not smooth within the step is skipped.
            let Some((err, _)) = max_rel_error_richardson_smooth(loss, &v, &g, 1e-4, FLOOR) else {
                prop_assume!(false);
                unreachable!()
            };
            prop_assert!(err < GRAD_TOL, "feature_norm (film {film}) seed {seed}: rel error {err}");
        }
    }

    /// Normalised features have mean 0 and variance 1 (up to eps), and are the plain ones
    /// normalised.
    #[test]
    fn feature_norm_normalises_the_plain_features() {
        let plain = ModelDims {
            encoder: EncoderKind::Bow,
            ..TINY
        };
        let normed = ModelDims {
            feature_norm: true,
            ..plain
        };
        let mut rng = Pcg32::new(5);
        let p = random_params(&plain, &mut rng);
        let obs = random_obs(&mut rng);
        let (f, _) = forward(&plain, &p, &obs);
        let (y, _) = forward(&normed, &p, &obs);
        let n = f.len() as f64;
        let mean = f.iter().sum::<f64>() / n;
        let var = f.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        assert!(var > 1e-3, "a degenerate point: {f:?}");
        for (a, b) in f.iter().zip(&y) {
            assert!(((a - mean) / (var + 1e-5).sqrt() - b).abs() < 1e-12);
        }
        let ym = y.iter().sum::<f64>() / n;
        let yv = y.iter().map(|v| (v - ym) * (v - ym)).sum::<f64>() / n;
        assert!(
            ym.abs() < 1e-12 && (yv - 1.0).abs() < 1e-3,
            "mean {ym}, var {yv}"
        );
        assert_eq!(encoder_param_len(&plain), encoder_param_len(&normed));
        assert_eq!(encoder_cache_len(&plain), encoder_cache_len(&normed));
        assert_eq!(
            encoder_scratch_len(&plain) + 2 * plain.conv_channels[2],
            encoder_scratch_len(&normed)
        );
    }

    #[test]
    fn film_tiny_gradcheck() {
        let d = ModelDims { film: true, ..TINY };
        let checked = (0..400u64)
            .filter(|s| film_gradcheck_point(&d, *s))
            .take(1)
            .count();
        assert_eq!(checked, 1, "no clean FiLM point found");
    }

    /// FiLM with zero generator weights is the plain encoder, whatever the instruction; with
    /// nonzero ones, two instructions give two encodings.
    #[test]
    fn film_starts_as_identity_and_reads_the_instruction() {
        for enc in [EncoderKind::Conv, EncoderKind::Bow] {
            let plain = dims(enc, [4, 5, 6], 3);
            let film = film_dims(enc, [4, 5, 6], 3, 4);
            let mut rng = Pcg32::new(7);
            let p = random_params(&plain, &mut rng);
            let mut pf = p.clone();
            pf.resize(encoder_param_len(&film), 0.0);
            let obs = env_obs(3);
            let e: Vec<f64> = (0..4).map(|_| uni(&mut rng, 1.0)).collect();
            let (y0, _) = forward(&plain, &p, &obs);
            let (y1, _) = forward_e(&film, &pf, &obs, &e);
            assert_eq!(y0, y1);
            assert!(y0.iter().any(|v| *v > 0.0), "weak test: all features dead");
            let t = encoder_tensors(&film);
            let fw = t
                .as_slice()
                .iter()
                .find(|t| t.name == "film.weight")
                .unwrap();
            for x in &mut pf[fw.offset..fw.offset + fw.len()] {
                *x = uni(&mut rng, 0.5);
            }
            let (ya, _) = forward_e(&film, &pf, &obs, &e);
            let e2: Vec<f64> = e.iter().map(|v| -v).collect();
            let (yb, _) = forward_e(&film, &pf, &obs, &e2);
            assert_ne!(ya, yb);
        }
    }

    #[test]
    fn film_sizes_and_errors() {
        let d = ModelDims {
            film: true,
            ..PAPER_CONV
        };
        // 2 x (16 + 32 + 64) coefficients from 128 instruction features.
        assert_eq!(
            encoder_param_len(&d),
            encoder_param_len(&PAPER_CONV) + 224 * 128 + 224
        );
        assert_eq!(encoder_tensors(&d).count(), 8);
        let mut rng = Pcg32::new(1);
        let p = random_params(&d, &mut rng);
        let obs = env_obs(1);
        let mut out = vec![0.0; 64];
        let mut cache = vec![0.0; encoder_cache_len(&d)];
        let short = vec![0.0; 127];
        assert_eq!(
            encode_forward(&d, &p, &obs, &short, &mut out, &mut cache),
            Err(Error::BufferTooSmall {
                needed: 128,
                got: 127
            })
        );
        let e = vec![0.1; 128];
        encode_forward(&d, &p, &obs, &e, &mut out, &mut cache).unwrap();
        let mut g = vec![0.0; p.len()];
        let mut s = vec![0.0; encoder_scratch_len(&d)];
        let mut de = vec![0.0; 127];
        assert_eq!(
            encode_backward(&d, &p, &obs, &e, &cache, &out, &mut g, &mut de, &mut s),
            Err(Error::BufferTooSmall {
                needed: 128,
                got: 127
            })
        );
        assert!(g.iter().all(|v| *v == 0.0), "grads written on error");
    }

    /// The gradient check is sensitive: small corruptions of a correct gradient fail it.
    #[test]
    fn gradcheck_detects_wrong_gradients() {
        for d in [
            dims(EncoderKind::Conv, [3, 3, 3], 0),
            dims(EncoderKind::Bow, [3, 3, 3], 2),
        ] {
            let (seed, (p, obs, dy)) = (0..200u64)
                .find_map(|s| clean_point(&d, s).map(|x| (s, x)))
                .unwrap();
            let g = backward(&d, &p, &obs, &dy);
            assert!(grad_error(&d, &p, &obs, &dy, &g) < GRAD_TOL, "seed {seed}");
            // 1e-4 relative on the largest entry.
            let mut bad = g.clone();
            let (i, _) = g
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().partial_cmp(&b.1.abs()).unwrap())
                .unwrap();
            bad[i] *= 1.0 + 1e-4;
            assert!(grad_error(&d, &p, &obs, &dy, &bad) > GRAD_TOL);
            // A spurious 1e-3 where the true gradient is exactly zero.
            let mut bad = g.clone();
            let z = g.iter().position(|v| *v == 0.0).unwrap();
            bad[z] = 1e-3;
            assert!(grad_error(&d, &p, &obs, &dy, &bad) > GRAD_TOL);
            // Each tensor's gradient matters: zeroing any nonzero one fails.
            for t in encoder_tensors(&d).as_slice() {
                let r = t.offset..t.offset + t.len();
                if g[r.clone()].iter().all(|v| *v == 0.0) {
                    continue;
                }
                let mut bad = g.clone();
                bad[r].fill(0.0);
                assert!(grad_error(&d, &p, &obs, &dy, &bad) > GRAD_TOL, "{}", t.name);
            }
        }
    }

    #[test]
    fn backward_accumulates() {
        let d = dims(EncoderKind::Bow, [3, 4, 5], 3);
        let (p, obs, dy) = (0..200u64).find_map(|s| clean_point(&d, s)).unwrap();
        let g1 = backward(&d, &p, &obs, &dy);
        let (_, cache) = forward(&d, &p, &obs);
        let mut g2 = g1.clone();
        let mut scratch = vec![7.0; encoder_scratch_len(&d)];
        encode_backward(
            &d,
            &p,
            &obs,
            &[],
            &cache,
            &dy,
            &mut g2,
            &mut [],
            &mut scratch,
        )
        .unwrap();
        for (a, b) in g1.iter().zip(&g2) {
            assert!((2.0 * a - b).abs() <= 1e-12 * a.abs().max(1.0));
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = Pcg32::new(5);
        for d in [
            PAPER_CONV,
            TINY,
            ModelDims {
                encoder: EncoderKind::Bow,
                ..PAPER_CONV
            },
            ModelDims {
                encoder: EncoderKind::Bow,
                ..TINY
            },
        ] {
            for i in 0..6u64 {
                let p = random_params(&d, &mut rng);
                let obs = if i % 2 == 0 {
                    env_obs(i)
                } else {
                    random_obs(&mut rng)
                };
                let p32: Vec<f32> = p.iter().map(|v| *v as f32).collect();
                let (y64, _) = forward(&d, &p, &obs);
                let (y32, _) = forward(&d, &p32, &obs);
                let scale = y64.iter().fold(1e-2f64, |m, v| m.max(v.abs()));
                for (a, b) in y32.iter().zip(&y64) {
                    let err = (f64::from(*a) - b).abs() / scale;
                    assert!(err < 1e-5, "{:?}: {a} vs {b} (rel {err})", d.encoder);
                }
            }
        }
    }

    #[test]
    fn bow_rejects_bad_codes_without_writing() {
        let d = dims(EncoderKind::Bow, [2, 2, 2], 2);
        let mut rng = Pcg32::new(9);
        let p = random_params(&d, &mut rng);
        let good = random_obs(&mut rng);
        let (_, cache) = forward(&d, &p, &good);
        for (a, field) in ["type", "color", "state"].iter().enumerate() {
            for value in [16u8, 200, 255] {
                let mut obs = good;
                obs[30][a] = value;
                let mut out = vec![-1.0; 2];
                let mut c = vec![-1.0; encoder_cache_len(&d)];
                let want = Err(Error::BadCellCode { field, value });
                assert_eq!(encode_forward(&d, &p, &obs, &[], &mut out, &mut c), want);
                assert!(out.iter().chain(&c).all(|v| *v == -1.0));
                let mut g = vec![0.0; p.len()];
                let mut s = vec![0.0; encoder_scratch_len(&d)];
                let r = encode_backward(
                    &d,
                    &p,
                    &obs,
                    &[],
                    &cache,
                    &[1.0, 1.0],
                    &mut g,
                    &mut [],
                    &mut s,
                );
                assert_eq!(r, want);
                assert!(g.iter().all(|v| *v == 0.0));
            }
        }
        // 15 is the largest value with a row; Conv takes any byte as a raw value.
        let mut obs = good;
        obs[0] = [15, 15, 15];
        forward(&d, &p, &obs);
        obs[0] = [255, 255, 255];
        let c = dims(EncoderKind::Conv, [2, 2, 2], 0);
        let pc = random_params(&c, &mut rng);
        let (y, _) = forward(&c, &pc, &obs);
        assert_eq!(y.len(), 2);
    }

    #[test]
    fn short_buffers_are_errors() {
        for d in [
            TINY,
            ModelDims {
                encoder: EncoderKind::Bow,
                ..TINY
            },
        ] {
            let (np, nc, ns, no) = (
                encoder_param_len(&d),
                encoder_cache_len(&d),
                encoder_scratch_len(&d),
                d.conv_channels[2],
            );
            let p = vec![0.1; np];
            let obs = random_obs(&mut Pcg32::new(1));
            let mut out = vec![0.0; no];
            let mut cache = vec![0.0; nc];
            let e = |needed, got| Err(Error::BufferTooSmall { needed, got });
            assert_eq!(
                encode_forward(&d, &p[..np - 1], &obs, &[], &mut out, &mut cache),
                e(np, np - 1)
            );
            assert_eq!(
                encode_forward(&d, &p, &obs, &[], &mut out[..no - 1], &mut cache),
                e(no, no - 1)
            );
            assert_eq!(
                encode_forward(&d, &p, &obs, &[], &mut out, &mut cache[..nc - 1]),
                e(nc, nc - 1)
            );
            encode_forward(&d, &p, &obs, &[], &mut out, &mut cache).unwrap();
            let mut g = vec![0.0; np];
            let mut s = vec![0.0; ns];
            let dy = vec![1.0; no];
            let bw = |p: &[f64], c: &[f64], dy: &[f64], g: &mut [f64], s: &mut [f64]| {
                encode_backward(&d, p, &obs, &[], c, dy, g, &mut [], s)
            };
            assert_eq!(bw(&p[..np - 1], &cache, &dy, &mut g, &mut s), e(np, np - 1));
            assert_eq!(bw(&p, &cache[..nc - 1], &dy, &mut g, &mut s), e(nc, nc - 1));
            assert_eq!(bw(&p, &cache, &dy[..no - 1], &mut g, &mut s), e(no, no - 1));
            assert_eq!(bw(&p, &cache, &dy, &mut g[..np - 1], &mut s), e(np, np - 1));
            assert_eq!(bw(&p, &cache, &dy, &mut g, &mut s[..ns - 1]), e(ns, ns - 1));
            assert!(g.iter().all(|v| *v == 0.0));
            // Longer buffers are fine.
            let mut big = vec![0.0; ns + 3];
            let mut gbig = vec![0.0; np + 3];
            bw(&p, &cache, &dy, &mut gbig, &mut big).unwrap();
        }
    }

    #[test]
    fn absurd_dimensions_are_errors() {
        let d = dims(EncoderKind::Bow, [usize::MAX / 3, 2, 3], usize::MAX / 7);
        assert_eq!(encoder_param_len(&d), usize::MAX);
        assert_eq!(encoder_cache_len(&d), usize::MAX);
        let p = [0.0f32; 8];
        let mut out = [0.0f32; 3];
        let mut cache = [0.0f32; 8];
        let obs = [[0u8; 3]; 49];
        assert!(encode_forward(&d, &p, &obs, &[], &mut out, &mut cache).is_err());
        let mut g = [0.0f32; 8];
        assert!(encode_backward(
            &d,
            &p,
            &obs,
            &[],
            &cache,
            &out,
            &mut g,
            &mut [],
            &mut [0.0; 4]
        )
        .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any dimensions (zeros included), buffer lengths and bytes: no panic, and success
        /// exactly when every buffer is long enough and (for Bow) every code has a row.
        #[test]
        fn never_panics(
            bow in any::<bool>(),
            ch in prop::array::uniform3(0usize..4),
            bow_dim in 0usize..4,
            cells in prop::collection::vec(prop::array::uniform3(0u8..20), 49),
            deltas in prop::array::uniform6(-2i64..=2),
            seed in any::<u64>(),
        ) {
            let kind = if bow { EncoderKind::Bow } else { EncoderKind::Conv };
            let d = dims(kind, ch, bow_dim);
            let mut obs = [[0u8; 3]; 49];
            obs.copy_from_slice(&cells);
            let len = |n: usize, k: usize| (n as i64 + deltas[k]).max(0) as usize;
            let sizes = [
                encoder_param_len(&d), ch[2], encoder_cache_len(&d),
                ch[2], encoder_param_len(&d), encoder_scratch_len(&d),
            ];
            let mut rng = Pcg32::new(seed);
            let mut buf = |k: usize| -> Vec<f32> {
                (0..len(sizes[k], k)).map(|_| uni(&mut rng, 2.0) as f32).collect()
            };
            let (p, mut out, mut cache, dy, mut g, mut s) =
                (buf(0), buf(1), buf(2), buf(3), buf(4), buf(5));
            let codes_ok = !bow || cells.iter().all(|c| c.iter().all(|v| *v < 16));
            let fits = |ks: &[usize]| ks.iter().all(|&k| deltas[k] >= 0 || sizes[k] == 0);
            let r = encode_forward(&d, &p, &obs, &[], &mut out, &mut cache);
            prop_assert_eq!(r.is_ok(), codes_ok && fits(&[0, 1, 2]));
            let r = encode_backward(&d, &p, &obs, &[], &cache, &dy, &mut g, &mut [], &mut s);
            prop_assert_eq!(r.is_ok(), codes_ok && fits(&[0, 2, 3, 4, 5]));
        }
    }
}
