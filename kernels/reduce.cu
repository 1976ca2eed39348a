// metarim kernels: reductions over samples. `wgrad` turns the per-sample deltas of a linear layer
// into its weight (or bias) gradient, dW += sum_s dy_s x_s^T, for one matrix or a batch of
// per-module matrices; it sums every element over the samples in sample order, so results do not
// depend on the launch configuration and no atomics are needed. Also: module activity counts,
// loss-term sums and the layout report the host checks at load time.
#include "common.cuh"
#include "model.cuh"

#define WG_TILE 16

// dw[mat][r][c] += sum_s dy(s, mat)[r] * x(s, mat)[c]   (x null: the bias, cols = 1, x = 1)
// with dy(s, mat) = dy + s * dy_outer + mat * dy_mat and
//      x(s, mat)  = x + (s / x_sub) * x_outer + (s % x_sub) * x_inner + mat * x_mat
// (x_sub > 1 walks a [outer][inner] sample grid, e.g. segments x token slots).
// Launch: block (16, 16), grid (ceil(cols / 16), ceil(rows / 16), mats), dynamic shared memory
// 2 * 16 * 16 floats.
extern "C" __global__ void wgrad(float* __restrict__ dw, u32 dw_mat,
                                 const float* __restrict__ dy, u32 dy_outer, u32 dy_mat,
                                 const float* __restrict__ x, u32 x_outer, u32 x_inner,
                                 u32 x_sub, u32 x_mat, u32 rows, u32 cols, u32 samples) {
    DYN_SMEM_F32(sm);
    float* DY = sm;
    float* XT = sm + WG_TILE * WG_TILE;
    const u32 tx = threadIdx.x, ty = threadIdx.y;
    const u32 mat = blockIdx.z;
    const u32 r = blockIdx.y * WG_TILE + ty;
    const u32 c = blockIdx.x * WG_TILE + tx;
    const u32 sub = x_sub ? x_sub : 1;
    float acc = 0.0f;
    for (u32 s0 = 0; s0 < samples; s0 += WG_TILE) {
        const u32 s = s0 + ty;
        const u32 rr = blockIdx.y * WG_TILE + tx;
        DY[ty * WG_TILE + tx] = (s < samples && rr < rows)
                                    ? dy[(u64)s * dy_outer + (u64)mat * dy_mat + rr]
                                    : 0.0f;
        float xv = 0.0f;
        if (s < samples && c < cols) {
            xv = x ? x[(u64)(s / sub) * x_outer + (u64)(s % sub) * x_inner + (u64)mat * x_mat + c]
                   : 1.0f;
        }
        XT[ty * WG_TILE + tx] = xv;
        __syncthreads();
        const u32 n = samples - s0 < WG_TILE ? samples - s0 : WG_TILE;
        for (u32 k = 0; k < n; ++k) {
            const float d = DY[k * WG_TILE + ty];
            if (d != 0.0f) acc += d * XT[k * WG_TILE + tx];
        }
        __syncthreads();
    }
    if (r < rows && c < cols) {
        float* o = dw + (u64)mat * dw_mat + (u64)r * cols + c;
        *o = *o + acc;
    }
}

// counts[i] += the number of samples whose step cache (stride floats apart, the activity mask
// first) has module i active. Launch: one block.
extern "C" __global__ void count_active(const float* __restrict__ cache, u32 stride,
                                        u32* __restrict__ counts, u32 samples) {
    for (u32 i = block_thread(); i < N_MOD; i += block_threads()) {
        u32 c = 0;
        for (u32 s = 0; s < samples; ++s) c += cache[(u64)s * stride + i] > 0.0f ? 1u : 0u;
        counts[i] += c;
    }
}

// acc[j] += sum_s terms[s][j] in f64, sample order. Launch: one block.
extern "C" __global__ void sum_terms(const float* __restrict__ terms, double* __restrict__ acc,
                                     u32 samples) {
    for (u32 j = block_thread(); j < N_TERMS; j += block_threads()) {
        double a = 0.0;
        for (u32 s = 0; s < samples; ++s) a += (double)terms[(u64)s * N_TERMS + j];
        acc[j] += a;
    }
}

// The layout constants this module was compiled with (cuda/src/layout.rs LAYOUT_FIELDS order).
extern "C" __global__ void layout_info(u32* __restrict__ out) {
    if (block_thread() != 0 || blockIdx.x != 0) return;
    const u32 v[] = {RIM_CACHE,  RIM_DELTA,    LSTM_CACHE,     LSTM_DELTA,     ENC_PARAMS,
                     ENC_CACHE,  ENC_DELTA,    INSTR_PARAMS,   INSTR_CACHE,    INSTR_DELTA,
                     HEADS_PARAMS, HEADS_CACHE, HEADS_DELTA,   RF_SMEM,        RB_SMEM,
                     LF_SMEM,    LB_SMEM,      HF_SMEM,        HB_SMEM,        ENC_FWD_SMEM,
                     ENC_BWD_SMEM, INSTR_FWD_SMEM, INSTR_BWD_SMEM, RNN_LEN,     N_TERMS,
                     EP_FW,      EC_FILM,      ED_FILM,        RSL};
    for (u32 k = 0; k < sizeof(v) / sizeof(v[0]); ++k) out[k] = v[k];
}
