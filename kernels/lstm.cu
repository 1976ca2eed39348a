// metarim kernels: the LSTM baseline's memory, one time step forward and backward over a batch
// (core::nn::ops::lstm_forward / lstm_backward with the policy's masking; gate order i, f, g, o).
// The state is [h (MW) | c (MW)] per sample. As for the RIM, the backward stores the gates'
// pre-activation gradients (LSTM_DELTA) and leaves the weight gradients to reduce.cu `wgrad`.
//
// Launch: grid ceil(batch / SPB_LSTM), any block size; dynamic shared memory SPB_LSTM * LF_SMEM
// (forward) or SPB_LSTM * LB_SMEM (backward) floats.
#include "common.cuh"
#include "model.cuh"

// Parameters: w_ih [4MW x INPUT], w_hh [4MW x MW], b_ih [4MW], b_hh [4MW]; x [batch x INPUT];
// h_src [batch x 2MW] (previous state, may alias state_out); reset [batch] (may be null);
// state_in [batch x 2MW] (receives the state read, may be null); state_out [batch x 2MW];
// cache [batch x LSTM_CACHE].
extern "C" __global__ void lstm_fwd_step(const float* __restrict__ w_ih,
                                         const float* __restrict__ w_hh,
                                         const float* __restrict__ b_ih,
                                         const float* __restrict__ b_hh,
                                         const float* __restrict__ x, const float* h_src,
                                         const u8* __restrict__ reset,
                                         float* __restrict__ state_in, float* state_out,
                                         float* __restrict__ cache, u32 batch) {
    DYN_SMEM_F32(sm);
    const SampleBlock blk = sample_block(SPB_LSTM, batch);
    for_sample_rows<SPB_LSTM>(blk, INPUT + 2 * MW, [&](u32 s, u32 k, u32 b) {
        float* S = sm + s * LF_SMEM;
        if (k < INPUT) {
            S[k] = x[(u64)b * INPUT + k];
        } else {
            const u32 q = k - INPUT;
            const float v = (reset && reset[b]) ? 0.0f : h_src[(u64)b * 2 * MW + q];
            S[INPUT + q] = v;
            if (state_in) state_in[(u64)b * 2 * MW + q] = v;
        }
    });
    __syncthreads();
    for_sample_rows<SPB_LSTM>(blk, MW, [&](u32 s, u32 u, u32 b) {
        const float* S = sm + s * LF_SMEM;
        const float* xs = S;
        const float* h = S + INPUT;
        float* C = cache + (u64)b * LSTM_CACHE;
        const LstmUnit o =
            lstm_unit_forward(w_ih, b_ih, w_hh, b_hh, xs, INPUT, h, MW, S[INPUT + MW + u], u, C);
        state_out[(u64)b * 2 * MW + MW + u] = o.c;
        state_out[(u64)b * 2 * MW + u] = o.h;
    });
}

// Parameters: w_ih, w_hh; state_in [batch x 2MW]; cache; dh_loss [batch x MW] (through the
// heads); carry [batch x 2MW] (from step t + 1, may be null, may alias carry_out); reset;
// carry_out [batch x 2MW] (dL/d state_{t-1}, zero after an episode start); dx [batch x INPUT];
// delta [batch x LSTM_DELTA].
extern "C" __global__ void lstm_bwd_step(const float* __restrict__ w_ih,
                                         const float* __restrict__ w_hh, MEMORY_BWD_PARAMS) {
    DYN_SMEM_F32(sm);
    const SampleBlock blk = sample_block(SPB_LSTM, batch);
    for_sample_rows<SPB_LSTM>(blk, MW, [&](u32 s, u32 u, u32 b) {
        float* S = sm + s * LB_SMEM;
        const float* C = cache + (u64)b * LSTM_CACHE;
        const float dho = dh_loss[(u64)b * MW + u] + (carry ? carry[(u64)b * 2 * MW + u] : 0.0f);
        const float dco = carry ? carry[(u64)b * 2 * MW + MW + u] : 0.0f;
        const float cu = state_in[(u64)b * 2 * MW + MW + u];
        float da[4];
        S[4 * MW + u] = lstm_gate_grads(C, MW, u, dho, dco, cu, da);
        float* D = delta + (u64)b * LSTM_DELTA;
        for (u32 q = 0; q < 4; ++q) {
            S[q * MW + u] = da[q];
            D[q * MW + u] = da[q];
        }
    });
    __syncthreads();
    for_sample_rows<SPB_LSTM>(blk, INPUT + 2 * MW, [&](u32 s, u32 k, u32 b) {
        const float* S = sm + s * LB_SMEM;
        const bool cut = reset && reset[b];
        if (k < INPUT) {
            dx[(u64)b * INPUT + k] = add_column_dot(0.0f, S, w_ih + k, 4 * MW, INPUT);
        } else if (k < INPUT + MW) {
            const u32 h = k - INPUT;
            const float acc = add_column_dot(0.0f, S, w_hh + h, 4 * MW, MW);
            carry_out[(u64)b * 2 * MW + h] = cut ? 0.0f : acc;
        } else {
            const u32 u = k - INPUT - MW;
            carry_out[(u64)b * 2 * MW + MW + u] = cut ? 0.0f : S[4 * MW + u];
        }
    });
}
