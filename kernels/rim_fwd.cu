// metarim kernels: one fused RIM time step forward over a batch (core::nn::rim::rim_step_forward,
// no dropout): input attention, top-k selection, per-module GRU or LSTM (CELL_LSTM), communication
// attention and the masked update (of h, and of c with LSTM modules), for SPB_RIM samples per
// block.
//
// Every product is the CPU's: the same 8-lane dot (common.cuh), the same association of every
// sum and the same selection rule (least null attention; ties to the lower index; NaN last), so
// the outputs and the step cache (same layout as the CPU's, model.cuh RC_*) agree with the core
// up to the library functions' last bits.
//
// Launch: grid ceil(batch / SPB_RIM), any block size (256 in production), dynamic shared memory
// SPB_RIM * RF_SMEM floats. Threads loop over work items; items are ordered sample-fastest, so
// neighbouring threads read the same weight row (a broadcast) for different samples.
//
// The phases (P0..P7 below) are device functions over one block's `RimFwd` (the tensors, the
// block's samples and their per-sample shared memory, SF_*); the kernel calls them in order with
// a block barrier between each two. They are inlined: the compiled kernel is the one the
// single-function version was (ptxas: the same registers, no spills; docs/GPU.md).
#include "common.cuh"
#include "model.cuh"

// Per-sample shared memory (floats).
#define SF_X 0
#define SF_H (SF_X + INPUT)
#define SF_KX (SF_H + NH)
#define SF_VX (SF_KX + QW)
#define SF_Q (SF_VX + UW)
#define SF_AX (SF_Q + N_MOD * QW)
#define SF_NULL (SF_AX + N_MOD * IN_HEADS)
#define SF_MASK (SF_NULL + N_MOD)
#define SF_U (SF_MASK + N_MOD)
#define SF_HT (SF_U + N_MOD * UW)
#define SF_CQ (SF_HT + NH)
#define SF_CK (SF_CQ + N_MOD * CW)
#define SF_CV (SF_CK + N_MOD * CW)
#define SF_O (SF_CV + N_MOD * CW)
#define SF_P (SF_O + N_MOD * CW)
#define SF_C (SF_P + N_MOD * C_HEADS * N_MOD)  // cell state read (LSTM modules; empty for GRU)
#if SF_C + RCL != RF_SMEM
#error "rim_fwd.cu: shared-memory layout disagrees with RF_SMEM"
#endif

// `ranks_before` of core::nn::rim: a ranks before b (less null attention); NaN after numbers.
__device__ __forceinline__ bool ranks_before(float a, float b) {
    const bool a_nan = a != a;
    const bool b_nan = b != b;
    if (!a_nan && !b_nan) return a < b;
    return !a_nan && b_nan;
}

// One block's step: the tensors (the kernel's parameters, below), its samples and their shared
// memory.
struct RimFwd : RimTensors {
    const float* x;
    const float* h_src;
    const u8* reset;
    float* state_in;
    float* h_out;
    float* cache;
    u32* active_bits;
    float* sm;
    SampleBlock blk;

    // Sample s's shared memory (RF_SMEM floats, laid out as SF_*).
    __device__ __forceinline__ float* smem(u32 s) const { return sm + s * RF_SMEM; }
    // Batch row b's step cache (RIM_CACHE floats, laid out as RC_*).
    __device__ __forceinline__ float* cache_of(u32 b) const { return cache + (u64)b * RIM_CACHE; }
};

// P0: inputs and the state read (zeros at an episode start).
// (h_src is read completely here, before any write to h_out: the two may alias.)
__device__ __forceinline__ void rf_read_inputs(const RimFwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, INPUT + RSL, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        if (r < INPUT) {
            S[SF_X + r] = step.x[(u64)b * INPUT + r];
        } else {
            const u32 e = r - INPUT;
            const float v = (step.reset && step.reset[b]) ? 0.0f : step.h_src[(u64)b * RSL + e];
            // [h | c]: h to SF_H, c (LSTM modules) to SF_C.
            S[e < NH ? SF_H + e : SF_C + (e - NH)] = v;
            if (step.state_in) step.state_in[(u64)b * RSL + e] = v;
        }
    });
}

// P1: key and value of the input row, per-module queries.
__device__ __forceinline__ void rf_input_projections(const RimFwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, QW + UW + N_MOD * QW, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        if (r < QW) {
            const float v = 0.0f + dot8(step.w_k + (u64)r * INPUT, S + SF_X, INPUT);
            S[SF_KX + r] = v;
            C[RC_KX + r] = v;
        } else if (r < QW + UW) {
            const u32 e = r - QW;
            const float v = 0.0f + dot8(step.w_v + (u64)e * INPUT, S + SF_X, INPUT);
            S[SF_VX + e] = v;
            C[RC_VX + e] = v;
        } else {
            const u32 q = r - QW - UW;
            const u32 i = q / QW;
            const float v = 0.0f + dot8(step.w_q + (u64)q * HID, S + SF_H + i * HID, HID);
            S[SF_Q + q] = v;
            C[RC_Q + q] = v;
        }
    });
}

// P2: attention on the input row per module and head; null attention averaged over heads.
__device__ __forceinline__ void rf_input_attention(const RimFwd& step) {
    const float inv_dk = inv_sqrt_ref(D_K);
    const float inv_heads = 1.0f / (float)IN_HEADS;
    for_sample_rows<SPB_RIM>(step.blk, N_MOD, [&](u32 s, u32 i, u32 b) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        float null_sum = 0.0f;
        for (u32 j = 0; j < IN_HEADS; ++j) {
            const float sc = dot8(S + SF_Q + i * QW + j * D_K, S + SF_KX + j * D_K, D_K) * inv_dk;
            const float a = sigmoidf_ref(sc);
            S[SF_AX + i * IN_HEADS + j] = a;
            C[RC_AX + i * IN_HEADS + j] = a;
            null_sum += sigmoidf_ref(-sc);
        }
        const float nl = null_sum * inv_heads;
        S[SF_NULL + i] = nl;
        C[RC_NULL + i] = nl;
    });
}

// P3: module inputs u_i = a_i * v_x; hard top-k on the least null attention.
__device__ __forceinline__ void rf_select_modules(const RimFwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, N_MOD * UW + N_MOD, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        if (r < N_MOD * UW) {
            const u32 i = r / UW;
            const u32 e = r % UW;
            const u32 j = e / D_V;
            const float v = S[SF_AX + i * IN_HEADS + j] * S[SF_VX + e];
            S[SF_U + r] = v;
            C[RC_U + r] = v;
        } else {
            const u32 i = r - N_MOD * UW;
            const float vi = S[SF_NULL + i];
            u32 rank = 0;
            for (u32 j = 0; j < N_MOD; ++j) {
                const float vj = S[SF_NULL + j];
                if (ranks_before(vj, vi) || (j < i && !ranks_before(vi, vj))) ++rank;
            }
            const float m = rank < K_ACT ? 1.0f : 0.0f;
            S[SF_MASK + i] = m;
            C[RC_MASK + i] = m;
        }
    });
}

#if CELL_LSTM
// P4: per-module LSTM (core::nn::ops::lstm_forward; the same modules as for a GRU), then the
// masked update of the cell state: c' = c~ for active modules, an inactive one keeps c
// bit-exactly (the communication below only changes h).
__device__ __forceinline__ void rf_modules(const RimFwd& step) {
    for_module_rows<HID>(step.blk, [&](u32 s, u32 r, u32 b, u32 i, u32 u) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        float* c_out = step.h_out + (u64)b * RSL + NH;
        float* rc = C + RC_RNN + i * RNN_CACHE;
        const bool on = S[SF_MASK + i] != 0.0f;
        if (!COMM && !on) {
            for (u32 q = 0; q < 5; ++q) rc[q * HID + u] = 0.0f;
            c_out[r] = S[SF_C + r];
            return;
        }
        const float* p = step.rnn + (u64)i * RNN_LEN;
        const float* ui = S + SF_U + i * UW;
        const float* hi = S + SF_H + i * HID;
        const LstmUnit o = lstm_unit_forward(p, p + RNN_B_IH, p + RNN_W_HH, p + RNN_B_HH, ui, UW,
                                             hi, HID, S[SF_C + r], u, rc);
        S[SF_HT + r] = o.h;
        if (COMM) C[RC_HT + r] = o.h;
        c_out[r] = on ? o.c : S[SF_C + r];
    });
}
#else
// P4: per-module GRU (every module with communication: its h~ is read as key and value;
// only the active ones without).
__device__ __forceinline__ void rf_modules(const RimFwd& step) {
    for_module_rows<HID>(step.blk, [&](u32 s, u32 r, u32 b, u32 i, u32 u) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        float* rc = C + RC_RNN + i * RNN_CACHE;
        if (!COMM && S[SF_MASK + i] == 0.0f) {
            rc[u] = 0.0f;
            rc[HID + u] = 0.0f;
            rc[2 * HID + u] = 0.0f;
            rc[3 * HID + u] = 0.0f;
            return;
        }
        const float* p = step.rnn + (u64)i * RNN_LEN;
        const float* ui = S + SF_U + i * UW;
        const float* hi = S + SF_H + i * HID;
        const float ht =
            gru_unit_forward(p, p + RNN_B_IH, p + RNN_W_HH, p + RNN_B_HH, ui, UW, hi, HID, u, rc);
        S[SF_HT + r] = ht;
        if (COMM) C[RC_HT + r] = ht;
    });
}
#endif

#if COMM
// P5: communication keys and values of every module, queries of the active ones.
__device__ __forceinline__ void rf_comm_projections(const RimFwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, N_MOD * CW, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        const u32 m = r / CW;
        const float* ht = S + SF_HT + m * HID;
        const float kv = 0.0f + dot8(step.c_k + (u64)r * HID, ht, HID);
        const float vv = 0.0f + dot8(step.c_v + (u64)r * HID, ht, HID);
        const float qv =
            S[SF_MASK + m] != 0.0f ? 0.0f + dot8(step.c_q + (u64)r * HID, ht, HID) : 0.0f;
        S[SF_CK + r] = kv;
        S[SF_CV + r] = vv;
        S[SF_CQ + r] = qv;
        C[RC_CK + r] = kv;
        C[RC_CV + r] = vv;
        C[RC_CQ + r] = qv;
    });
}

// P6a: attention of each active module and head over all modules (softmax in place).
__device__ __forceinline__ void rf_comm_attention(const RimFwd& step) {
    const float inv_ck = inv_sqrt_ref(C_K);
    for_module_rows<C_HEADS>(step.blk, [&](u32 s, u32 r, u32 b, u32 i, u32 j) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        float* p = S + SF_P + r * N_MOD;
        if (S[SF_MASK + i] == 0.0f) {
            for (u32 m = 0; m < N_MOD; ++m) p[m] = 0.0f;
        } else {
            const float* qj = S + SF_CQ + i * CW + j * C_K;
            for (u32 m = 0; m < N_MOD; ++m) {
                p[m] = dot8(qj, S + SF_CK + m * CW + j * C_K, C_K) * inv_ck;
            }
            float mx = p[0];
            for (u32 m = 0; m < N_MOD; ++m) mx = max_ref(mx, p[m]);
            float sum = 0.0f;
            for (u32 m = 0; m < N_MOD; ++m) {
                p[m] = expf(p[m] - mx);
                sum += p[m];
            }
            for (u32 m = 0; m < N_MOD; ++m) p[m] = p[m] / sum;
        }
        for (u32 m = 0; m < N_MOD; ++m) C[RC_P + r * N_MOD + m] = p[m];
    });
}

// P6b: attention outputs o_i (zeros for inactive modules).
__device__ __forceinline__ void rf_comm_outputs(const RimFwd& step) {
    for_module_rows<CW>(step.blk, [&](u32 s, u32 r, u32 b, u32 i, u32 e) {
        float* S = step.smem(s);
        float* C = step.cache_of(b);
        const u32 j = e / C_K;
        float o = 0.0f;
        if (S[SF_MASK + i] != 0.0f) {
            const float* p = S + SF_P + (i * C_HEADS + j) * N_MOD;
            for (u32 m = 0; m < N_MOD; ++m) o += p[m] * S[SF_CV + m * CW + e];
        }
        S[SF_O + r] = o;
        C[RC_O + r] = o;
    });
}
#endif

// P7: gated residual (or interpolation) of the active modules and the masked update; the
// active-module bits.
__device__ __forceinline__ void rf_update(const RimFwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, NH, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        const u32 i = r / HID;
        const bool on = S[SF_MASK + i] != 0.0f;
        float out = S[SF_H + r];
#if COMM
        float* C = step.cache_of(b);
        float gate = 0.0f, th = 0.0f;
        if (on) {
            const float* oi = S + SF_O + i * CW;
            gate = sigmoidf_ref(0.0f + dot8(step.c_g + (u64)r * CW, oi, CW));
            th = tanhf(0.0f + dot8(step.c_o + (u64)r * CW, oi, CW));
            const float ht = S[SF_HT + r];
            // COMM_INTERP: the gated interpolation h~ + g (u - h~); else the residual h~ + g u.
            out = COMM_INTERP ? ht + gate * (th - ht) : ht + gate * th;
        }
        C[RC_GATE + r] = gate;
        C[RC_TANH + r] = th;
#else
        if (on) out = S[SF_HT + r];
#endif
        step.h_out[(u64)b * RSL + r] = out;
    });
    if (step.active_bits) {
        for_sample_rows<SPB_RIM>(step.blk, 1, [&](u32 s, u32, u32 b) {
            const float* S = step.smem(s);
            u32 bits = 0;
            for (u32 i = 0; i < N_MOD; ++i) {
                if (S[SF_MASK + i] != 0.0f) bits |= 1u << i;
            }
            step.active_bits[b] = bits;
        });
    }
}

// Parameters: the nine RIM tensors (per-module ones module-major; without communication the
// five comm pointers are not read), then
//   x [batch x INPUT], h_src [batch x RSL] (the previous state [h | c]; may alias h_out),
//   reset [batch] (1: the step starts an episode, the state read is zeros; may be null),
//   state_in [batch x RSL] (receives the state read; may be null), h_out [batch x RSL],
//   cache [batch x RIM_CACHE], active_bits [batch] (bit i: module i active; may be null).
extern "C" __global__ void rim_fwd_step(RIM_TENSOR_PARAMS,
                                        const float* __restrict__ x, const float* h_src,
                                        const u8* __restrict__ reset,
                                        float* __restrict__ state_in, float* h_out,
                                        float* __restrict__ cache,
                                        u32* __restrict__ active_bits, u32 batch) {
    DYN_SMEM_F32(sm);
    const RimFwd step{RIM_TENSOR_ARGS,
                   x, h_src, reset, state_in, h_out, cache, active_bits,
                   sm, sample_block(SPB_RIM, batch)};
    rf_read_inputs(step);
    __syncthreads();
    rf_input_projections(step);
    __syncthreads();
    rf_input_attention(step);
    __syncthreads();
    rf_select_modules(step);
    __syncthreads();
    rf_modules(step);
    __syncthreads();
#if COMM
    rf_comm_projections(step);
    __syncthreads();
    rf_comm_attention(step);
    __syncthreads();
    rf_comm_outputs(step);
    __syncthreads();
#endif
    rf_update(step);
}
