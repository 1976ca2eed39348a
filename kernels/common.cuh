// metarim kernels: shared header.
//
// Layout notes
// - Every parameter group (fast: the RIM modules' own weights; slow: attention and the rest)
//   lives in its own contiguous f32 device buffer, with parallel buffers of the same length for
//   the gradient and Adam's first and second moments. Offsets are element indices into them.
// - A "range list" selects part of a group: `range_off[r]` is the first element of range r and
//   `range_prefix[r]` the number of selected elements before it (an exclusive prefix sum of the
//   lengths, with `range_prefix[nranges]` the total). Ranges are disjoint (the host checks this
//   with the same rule as `core::nn::optim::check_ranges`), so no element is written twice.
// - Kernels are compiled by NVRTC without the CUDA headers: only builtins are used here. The same
//   sources also compile as plain C++17 under the emulator (cuda/emu/emu.h defines
//   METARIM_EMU), which runs them on the CPU for the parity tests: kernels use only what both
//   understand (no warp primitives, no atomics, shared memory only through DYN_SMEM).
//
// Numerics: kernels that must match the CPU reference bit for bit are compiled with
// `--fmad=false` (no a*b+c contraction), IEEE division and square root (NVRTC's defaults
// `--prec-div=true --prec-sqrt=true`) and no flush-to-zero (`--ftz=false`, the default).
#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

// The block's dynamic shared memory as an array of floats (size given at launch).
#ifdef METARIM_EMU
#define DYN_SMEM_F32(name) float* name = (float*)emu_dyn_smem()
#else
#define DYN_SMEM_F32(name)          \
    extern __shared__ float name##_raw[]; \
    float* name = name##_raw
#endif

// Flat thread index and count of a block (any 1-, 2- or 3-D block).
__device__ __forceinline__ u32 block_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ __forceinline__ u32 block_threads() {
    return blockDim.x * blockDim.y * blockDim.z;
}

// The start of a kernel that gives each block one item of `count` (a sample, a segment): binds
// `item` to the block's item (blockIdx.x), `tid` / `nt` to the thread's flat index and the block's
// thread count; blocks past the last item return. Written once so the four such kernels
// (encoder_fwd / _bwd, instr_fwd / _bwd) agree on the rule.
#define BLOCK_ITEM(item, count)         \
    const u32 item = blockIdx.x;        \
    if (item >= (count)) return;        \
    const u32 tid = block_thread();     \
    const u32 nt = block_threads()

// The samples a block of a per-sample kernel works on: sample s of the block is row b0 + s of
// the batch (the last block may have fewer samples than it has room for).
struct SampleBlock {
    u32 tid;    // this thread's flat index in the block
    u32 nt;     // threads in the block
    u32 b0;     // batch row of the block's first sample
    u32 batch;  // rows in the batch
};

// This block's samples, `per_block` per block.
__device__ __forceinline__ SampleBlock sample_block(u32 per_block, u32 batch) {
    return SampleBlock{block_thread(), block_threads(), blockIdx.x * per_block, batch};
}

// One phase of a per-sample kernel: `rows` work items per sample, spread over the block's
// threads and ordered sample-fastest, so neighbouring threads read the same weight row (a
// broadcast) for different samples. Calls `f(s, r, b)` for each item of a sample that exists:
// s the sample's index in the block, r the item (0 <= r < rows), b the sample's batch row.
template <u32 PER_BLOCK, typename F>
__device__ __forceinline__ void for_sample_rows(const SampleBlock& blk, u32 rows, F f) {
    for (u32 it = blk.tid; it < PER_BLOCK * rows; it += blk.nt) {
        const u32 s = it % PER_BLOCK;
        const u32 b = blk.b0 + s;
        if (b >= blk.batch) continue;
        f(s, it / PER_BLOCK, b);
    }
}

// Global index of this thread in a 1-D launch.
__device__ __forceinline__ u64 global_thread_index() {
    return (u64)blockIdx.x * (u64)blockDim.x + (u64)threadIdx.x;
}

// Stride of a grid-stride loop in a 1-D launch.
__device__ __forceinline__ u64 grid_stride() {
    return (u64)gridDim.x * (u64)blockDim.x;
}

// The range of selected element `i` (0 <= i < range_prefix[nranges]): binary search for the
// last range r with range_prefix[r] <= i (empty ranges are skipped naturally).
__device__ __forceinline__ unsigned int range_of(const u64* range_prefix, unsigned int nranges,
                                                 u64 i) {
    unsigned int lo = 0;
    unsigned int hi = nranges;  // invariant: range_prefix[lo] <= i < range_prefix[hi]
    while (hi - lo > 1) {
        unsigned int mid = lo + (hi - lo) / 2;
        if (range_prefix[mid] <= i) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// The buffer element of selected element `i`: range_off[r] + (i - range_prefix[r]) for its
// range r.
__device__ __forceinline__ u64 range_element(const u64* range_off, const u64* range_prefix,
                                             unsigned int nranges, u64 i) {
    const unsigned int r = range_of(range_prefix, nranges, i);
    return range_off[r] + (i - range_prefix[r]);
}

// ---------------------------------------------------------------------------------------------
// Arithmetic in the CPU reference's order (core::nn::ops, core::nn::scalar). With --fmad=false,
// IEEE division and square root these round exactly as the Rust code does; only the library
// functions (expf, tanhf, logf: CUDA's are within 2 ulp, not correctly rounded) may differ in
// the last bits.

// `core::nn::ops::dot`: 8 interleaved partial sums over the full groups of 8 (element i into
// lane i % 8), the tail in a ninth sum, combined as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)) + tail.
__device__ __forceinline__ float dot8(const float* a, const float* b, u32 n) {
    float l0 = 0.0f, l1 = 0.0f, l2 = 0.0f, l3 = 0.0f, l4 = 0.0f, l5 = 0.0f, l6 = 0.0f, l7 = 0.0f;
    const u32 full = n & ~7u;
    float tail = 0.0f;
    for (u32 i = full; i < n; ++i) {
        tail += a[i] * b[i];
    }
    for (u32 i = 0; i < full; i += 8) {
        l0 += a[i] * b[i];
        l1 += a[i + 1] * b[i + 1];
        l2 += a[i + 2] * b[i + 2];
        l3 += a[i + 3] * b[i + 3];
        l4 += a[i + 4] * b[i + 4];
        l5 += a[i + 5] * b[i + 5];
        l6 += a[i + 6] * b[i + 6];
        l7 += a[i + 7] * b[i + 7];
    }
    return ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)) + tail;
}

// One element of a transposed product, `core::nn::ops::linear_backward`'s input gradient: acc
// plus d[r] * w[r * ld] over r = 0..rows in order, zero d[r] skipped (they add nothing, not even
// a -0). `w` points at the column's first element.
__device__ __forceinline__ float add_column_dot(float acc, const float* d, const float* w, u32 rows,
                                                u32 ld) {
    for (u32 r = 0; r < rows; ++r) {
        const float v = d[r];
        if (v != 0.0f) acc += v * w[(u64)r * ld];
    }
    return acc;
}

// `Real::sigmoid`: 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) otherwise (no overflow).
__device__ __forceinline__ float sigmoidf_ref(float x) {
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    }
    const float e = expf(x);
    return e / (1.0f + e);
}

// `Real::max` / `Real::min`: the other operand only when it is strictly larger / smaller.
__device__ __forceinline__ float max_ref(float a, float b) { return b > a ? b : a; }
__device__ __forceinline__ float min_ref(float a, float b) { return b < a ? b : a; }

// `1 / sqrt(n)` in f32, as `core::nn::rim::inv_sqrt`.
__device__ __forceinline__ float inv_sqrt_ref(u32 n) { return 1.0f / sqrtf((float)n); }

// `x > 0 ? x : 0` (ReLU with derivative 0 at 0, as the core's encoder).
__device__ __forceinline__ float relu_ref(float x) { return x > 0.0f ? x : 0.0f; }

// One GRU unit's forward (core::nn::ops::gru_forward, the same sums in the same order): unit u
// of a cell with input `x` (`nin`), state `h` (`hid`), weights w_ih [3hid x nin], w_hh
// [3hid x hid] and biases b_ih, b_hh [3hid] (gates r, z, n). Writes [r | z | n | hn] (`hid`
// apart; hn the hidden side's n pre-activation) for the unit into `cache` and returns its new
// state (1 - z) n + z h. Shared by the RIM's GRU modules (rim_fwd.cu) and the instruction encoder
// (instr.cu).
__device__ __forceinline__ float gru_unit_forward(const float* w_ih, const float* b_ih,
                                                  const float* w_hh, const float* b_hh,
                                                  const float* x, u32 nin, const float* h,
                                                  u32 hid, u32 u, float* cache) {
    const float gx_r = b_ih[u] + dot8(w_ih + (u64)u * nin, x, nin);
    const float gx_z = b_ih[hid + u] + dot8(w_ih + (u64)(hid + u) * nin, x, nin);
    const float gx_n = b_ih[2 * hid + u] + dot8(w_ih + (u64)(2 * hid + u) * nin, x, nin);
    const float r = sigmoidf_ref((gx_r + dot8(w_hh + (u64)u * hid, h, hid)) + b_hh[u]);
    const float z =
        sigmoidf_ref((gx_z + dot8(w_hh + (u64)(hid + u) * hid, h, hid)) + b_hh[hid + u]);
    const float hn = dot8(w_hh + (u64)(2 * hid + u) * hid, h, hid) + b_hh[2 * hid + u];
    const float n = tanhf(gx_n + r * hn);
    cache[u] = r;
    cache[hid + u] = z;
    cache[2 * hid + u] = n;
    cache[3 * hid + u] = hn;
    return (1.0f - z) * n + z * h[u];
}

// One LSTM unit's new cell state and output.
struct LstmUnit {
    float c;
    float h;
};

// One LSTM unit's forward (core::nn::ops::lstm_forward, the same sums in the same order): unit u
// of a cell with input `x` (`nin`), state `h` (`hid`) and cell state `c_prev`, weights w_ih
// [4hid x nin], w_hh [4hid x hid], biases b_ih, b_hh [4hid] (gates i, f, g, o; pre-activations
// (b_ih + W_ih x) + W_hh h, then + b_hh). Writes [i | f | g | o | tanh(c')] (`hid` apart) for the
// unit into `cache`; returns c' = f c + i g and h' = o tanh(c'). Shared by the RIM's LSTM
// modules (rim_fwd.cu) and the LSTM baseline (lstm.cu).
__device__ __forceinline__ LstmUnit lstm_unit_forward(const float* w_ih, const float* b_ih,
                                                      const float* w_hh, const float* b_hh,
                                                      const float* x, u32 nin, const float* h,
                                                      u32 hid, float c_prev, u32 u,
                                                      float* cache) {
    float a[4];
    for (u32 q = 0; q < 4; ++q) {
        const u32 row = q * hid + u;
        a[q] = ((b_ih[row] + dot8(w_ih + (u64)row * nin, x, nin)) +
                dot8(w_hh + (u64)row * hid, h, hid)) +
               b_hh[row];
    }
    const float ig = sigmoidf_ref(a[0]);
    const float fg = sigmoidf_ref(a[1]);
    const float gg = tanhf(a[2]);
    const float og = sigmoidf_ref(a[3]);
    const float cu = fg * c_prev + ig * gg;
    const float t = tanhf(cu);
    cache[u] = ig;
    cache[hid + u] = fg;
    cache[2 * hid + u] = gg;
    cache[3 * hid + u] = og;
    cache[4 * hid + u] = t;
    return LstmUnit{cu, og * t};
}

// One GRU unit's gate pre-activation gradients (core::nn::ops::gru_gate_grads, the same products
// in the same order): `r`, `z`, `n` the input side's [da_r | da_z | da_n], `hn` the hidden
// side's third gate (r * da_n; its first two are the input side's). Shared by the RIM's GRU
// modules (rim_bwd.cu) and the instruction encoder (instr.cu).
struct GruGateGrads {
    float r;
    float z;
    float n;
    float hn;
};

// The gradients from the unit's output gradient `d`, its cached gates (`r`, `z`, `n` after the
// nonlinearities, `hn` the hidden side's n pre-activation) and its previous state `h_prev`. The
// direct path d * z into the previous state is left to the caller (it accumulates differently).
__device__ __forceinline__ GruGateGrads gru_gate_grads(float d, float r, float z, float n, float hn,
                                                       float h_prev) {
    const float dn = d * (1.0f - z);
    const float dz = d * (h_prev - n);
    const float da_n = dn * (1.0f - n * n);
    const float dr = da_n * hn;
    const float da_z = dz * z * (1.0f - z);
    const float da_r = dr * r * (1.0f - r);
    return GruGateGrads{da_r, da_z, da_n, da_n * r};
}

// Unit u's gradients into gi = [da_r | da_z | da_n] and gh = [da_r | da_z | r da_n] (`hid` each
// part), the layout of the core's gi / gh.
__device__ __forceinline__ void store_gru_gate_grads(float* gi, float* gh, u32 hid, u32 u,
                                                     const GruGateGrads& g) {
    gi[u] = g.r;
    gi[hid + u] = g.z;
    gi[2 * hid + u] = g.n;
    gh[u] = g.r;
    gh[hid + u] = g.z;
    gh[2 * hid + u] = g.hn;
}

// One LSTM unit's backward (core::nn::ops::lstm_backward, the same products in the same order).
// `cache` holds the step's [i | f | g | o | tanh(c')] after the nonlinearities (`hid` each part),
// `u` the unit; `dho` / `dc` the gradients of its output h' and cell c', `c_prev` the cell state
// it read. Writes the four gates' pre-activation gradients into da (i, f, g, o) and returns
// dc_{t-1} = dc~ f (started from zero, as the core's d_prev), dc~ = dc + dho o (1 - tanh(c')^2).
// Shared by the RIM's LSTM modules (rim_bwd.cu) and the LSTM baseline (lstm.cu).
__device__ __forceinline__ float lstm_gate_grads(const float* cache, u32 hid, u32 u, float dho,
                                                 float dc, float c_prev, float da[4]) {
    const float ig = cache[u], fg = cache[hid + u], gg = cache[2 * hid + u];
    const float og = cache[3 * hid + u];
    const float t = cache[4 * hid + u];
    const float dct = dc + dho * og * (1.0f - t * t);
    da[0] = dct * gg * ig * (1.0f - ig);
    da[1] = dct * c_prev * fg * (1.0f - fg);
    da[2] = dct * ig * (1.0f - gg * gg);
    da[3] = dho * t * og * (1.0f - og);
    return 0.0f + dct * fg;
}
