// metarim kernels: one RIM time step backward over a batch (core::nn::rim::rim_step_backward,
// GRU or LSTM modules (CELL_LSTM), CommGrad::Blocked, no dropout), SPB_RIM samples per block.
//
// Only the sequential part runs here: the gradients of the state and of the input, and the
// pre-activation gradient of every weight ("deltas", model.cuh RD_*), stored per sample so the
// weight gradients become one reduction over all steps and samples afterwards (reduce.cu
// `wgrad`): no atomics, and the sums do not depend on the launch configuration.
//
// Blocked: an inactive module passes its state gradient through unchanged and receives nothing
// through its discarded update or through its use as a communication key/value; the comm K/V
// projection weights still get their gradient from every module (as in the core). With LSTM
// modules the state is [h | c] and so are the carried gradients: dL/dc flows through the active
// modules' cells (dc_{t-1} = dc_t' f) and straight through the inactive ones (their c was kept).
//
// Launch: grid ceil(batch / SPB_RIM), any block size, SPB_RIM * RB_SMEM floats of dynamic
// shared memory.
//
// The phases (B0..B10 below) are device functions over one block's `RimBwd` (the tensors, the
// block's samples and their per-sample shared memory, SB_*); the kernel calls them in order with
// a block barrier between each two. They are inlined: the compiled kernel is the one the
// single-function version was (ptxas: the same registers, no spills; docs/GPU.md).
#include "common.cuh"
#include "model.cuh"

#define SB_DHO 0
#define SB_DHT (SB_DHO + NH)
#define SB_DHP (SB_DHT + NH)
#define SB_DPG (SB_DHP + NH)
#define SB_DPO (SB_DPG + NH)
#define SB_MASK (SB_DPO + NH)
#define SB_DOUT (SB_MASK + N_MOD)
#define SB_DCK (SB_DOUT + N_MOD * CW)
#define SB_DCV (SB_DCK + N_MOD * CW)
#define SB_DCQ (SB_DCV + N_MOD * CW)
#define SB_DS (SB_DCQ + N_MOD * CW)
#define SB_GI (SB_DS + N_MOD * C_HEADS * N_MOD)
#define SB_GH (SB_GI + N_MOD * RGH)
#define SB_DU (SB_GH + N_MOD * RGH)
#define SB_DSC (SB_DU + N_MOD * UW)
#define SB_DQ (SB_DSC + N_MOD * IN_HEADS)
#define SB_DKX (SB_DQ + N_MOD * QW)
#define SB_DVX (SB_DKX + QW)
#define SB_DC (SB_DVX + UW)  // LSTM modules: dL/dc_t, then dL/dc_{t-1} (empty for GRU)
#if SB_DC + RCL != RB_SMEM
#error "rim_bwd.cu: shared-memory layout disagrees with RB_SMEM"
#endif

// One block's step: the tensors (the kernel's parameters, below), its samples and their shared
// memory.
struct RimBwd : RimTensors {
    const float* state_in;
    const float* cache;
    const float* dh_loss;
    const float* carry;
    const u8* reset;
    float* carry_out;
    float* dx;
    float* delta;
    float* sm;
    SampleBlock blk;

    // Sample s's shared memory (RB_SMEM floats, laid out as SB_*).
    __device__ __forceinline__ float* smem(u32 s) const { return sm + s * RB_SMEM; }
    // Batch row b's forward step cache (RIM_CACHE floats, laid out as RC_*).
    __device__ __forceinline__ const float* cache_of(u32 b) const {
        return cache + (u64)b * RIM_CACHE;
    }
    // Batch row b's deltas (RIM_DELTA floats, laid out as RD_*).
    __device__ __forceinline__ float* delta_of(u32 b) const { return delta + (u64)b * RIM_DELTA; }
};

// sum over the active modules i in order of a[i * lda] * v[i * ldv], from zero (`mask`: the
// sample's SB_MASK; an inactive module adds nothing, not even a -0, as in the core). The
// gradients that sum a product over the modules (B4's dcv / dck, B9's dvx / dkx) all take it.
__device__ __forceinline__ float sum_over_active(const float* mask, const float* a, u32 lda,
                                                 const float* v, u32 ldv) {
    float acc = 0.0f;
    for (u32 i = 0; i < N_MOD; ++i) {
        if (mask[i] == 0.0f) continue;
        acc += a[i * lda] * v[i * ldv];
    }
    return acc;
}

// B0: dL/dh_t, the activity mask; step 5 (masked update): active modules' gradient goes to
// h', inactive ones' straight to h_{t-1}. LSTM modules: dL/dc_t into SB_DC (an inactive
// module's is already dL/dc_{t-1}; an active one's is replaced in B6).
__device__ __forceinline__ void rb_load_gradients(const RimBwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, NH + N_MOD, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        const float* C = step.cache_of(b);
        if (r < NH) {
            const u32 i = r / HID;
            const float d =
                step.dh_loss[(u64)b * NH + r] + (step.carry ? step.carry[(u64)b * RSL + r] : 0.0f);
            const bool on = C[RC_MASK + i] > 0.0f;
            S[SB_DHO + r] = d;
            S[SB_DHT + r] = on ? d : 0.0f;
            S[SB_DHP + r] = on ? 0.0f : d;
#if CELL_LSTM
            S[SB_DC + r] = step.carry ? step.carry[(u64)b * RSL + NH + r] : 0.0f;
#endif
        } else {
            const u32 i = r - NH;
            S[SB_MASK + i] = C[RC_MASK + i] > 0.0f ? 1.0f : 0.0f;
        }
    });
}

#if COMM
// B1: through h' = h~ + sigmoid(a_g) * tanh(a_o) (COMM_INTERP: h' = h~ + g (u - h~), whose
// h~ keeps (1 - g) of dh', as the batched CPU pass computes it).
__device__ __forceinline__ void rb_comm_gate(const RimBwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, NH, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        const float* C = step.cache_of(b);
        float* D = step.delta_of(b);
        float pg = 0.0f, po = 0.0f;
        if (S[SB_MASK + r / HID] != 0.0f) {
            const float dy = S[SB_DHO + r];
            const float gt = C[RC_GATE + r];
            const float th = C[RC_TANH + r];
            const float lift = COMM_INTERP ? th - C[RC_HT + r] : th;
            pg = dy * lift * gt * (1.0f - gt);
            po = dy * gt * (1.0f - th * th);
            if (COMM_INTERP) S[SB_DHT + r] = dy * (1.0f - gt);
        }
        S[SB_DPG + r] = pg;
        S[SB_DPO + r] = po;
        D[RD_DPG + r] = pg;
        D[RD_DPO + r] = po;
    });
}

// B2: dL/do_i = W_g^T dpg + W_o^T dpo (rows in order, zero rows skipped, as the core).
__device__ __forceinline__ void rb_comm_output_grads(const RimBwd& step) {
    for_module_rows<CW>(step.blk, [&](u32 s, u32 r, u32 b, u32 i, u32 e) {
        float* S = step.smem(s);
        float acc = 0.0f;
        if (S[SB_MASK + i] != 0.0f) {
            const float* wg = step.c_g + (u64)i * HID * CW;
            const float* wo = step.c_o + (u64)i * HID * CW;
            acc = add_column_dot(acc, S + SB_DPG + i * HID, wg + e, HID, CW);
            acc = add_column_dot(acc, S + SB_DPO + i * HID, wo + e, HID, CW);
        }
        S[SB_DOUT + r] = acc;
    });
}

// B3: through o_ij = sum_m p_ijm v_mj and the softmax: ds (already times 1/sqrt(c_k)).
__device__ __forceinline__ void rb_comm_scores(const RimBwd& step) {
    const float inv_ck = inv_sqrt_ref(C_K);
    for_module_rows<C_HEADS>(step.blk, [&](u32 s, u32 r, u32 b, u32 i, u32 j) {
        float* S = step.smem(s);
        const float* C = step.cache_of(b);
        float* ds = S + SB_DS + r * N_MOD;
        if (S[SB_MASK + i] == 0.0f) {
            for (u32 m = 0; m < N_MOD; ++m) ds[m] = 0.0f;
            return;
        }
        const float* p = C + RC_P + r * N_MOD;
        const float* doj = S + SB_DOUT + i * CW + j * C_K;
        float dp[N_MOD];
        for (u32 m = 0; m < N_MOD; ++m) dp[m] = dot8(doj, C + RC_CV + m * CW + j * C_K, C_K);
        float dt = 0.0f;
        for (u32 m = 0; m < N_MOD; ++m) dt += p[m] * dp[m];
        for (u32 m = 0; m < N_MOD; ++m) ds[m] = (0.0f + p[m] * (dp[m] - dt)) * inv_ck;
    });
}

// B4: dcv_m and dck_m summed over the active queries in module order; dcq_i.
__device__ __forceinline__ void rb_comm_kqv_grads(const RimBwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, 3 * N_MOD * CW, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        const float* C = step.cache_of(b);
        float* D = step.delta_of(b);
        const u32 part = r / (N_MOD * CW);
        const u32 q = r % (N_MOD * CW);
        const u32 m = q / CW;
        const u32 e = q % CW;
        const u32 j = e / C_K;
        const u32 ld_p = C_HEADS * N_MOD;  // one query module's scores (p, ds)
        if (part == 0) {
            const float acc = sum_over_active(S + SB_MASK, C + RC_P + j * N_MOD + m, ld_p,
                                              S + SB_DOUT + e, CW);
            S[SB_DCV + q] = acc;
            D[RD_DCV + q] = acc;
        } else if (part == 1) {
            const float acc = sum_over_active(S + SB_MASK, S + SB_DS + j * N_MOD + m, ld_p,
                                              C + RC_CQ + e, CW);
            S[SB_DCK + q] = acc;
            D[RD_DCK + q] = acc;
        } else {
            // q indexes the query module here.
            float acc = 0.0f;
            if (S[SB_MASK + m] != 0.0f) {
                for (u32 k = 0; k < N_MOD; ++k) {
                    acc += S[SB_DS + (m * C_HEADS + j) * N_MOD + k] * C[RC_CK + k * CW + e];
                }
            }
            S[SB_DCQ + q] = acc;
            D[RD_DCQ + q] = acc;
        }
    });
}

// B5: into h~ of the active modules: W_cq^T dcq, then W_ck^T dck, then W_cv^T dcv.
__device__ __forceinline__ void rb_into_candidate(const RimBwd& step) {
    for_module_rows<HID>(step.blk, [&](u32 s, u32 r, u32 b, u32 m, u32 h) {
        float* S = step.smem(s);
        if (S[SB_MASK + m] == 0.0f) return;
        float acc = S[SB_DHT + r];
        const float* ws[3] = {step.c_q, step.c_k, step.c_v};
        const u32 src[3] = {SB_DCQ, SB_DCK, SB_DCV};
        for (u32 w = 0; w < 3; ++w) {
            const float* wm = ws[w] + (u64)m * CW * HID;
            acc = add_column_dot(acc, S + src[w] + m * CW, wm + h, CW, HID);
        }
        S[SB_DHT + r] = acc;
    });
}

#endif
// B6: the module cells' gate gradients for the active modules (zeros for the inactive ones),
// into gi / gh and the deltas. LSTM modules (core::nn::ops::lstm_backward): dL/dc_{t-1} replaces
// dL/dc_t in SB_DC; the input and hidden products see the same gradients, so gi and gh are
// equal. GRU modules (core::nn::ops::gru_gate_grads): the direct path d z goes into SB_DHP.
__device__ __forceinline__ void rb_gate_grads(const RimBwd& step) {
    for_module_rows<HID>(step.blk, [&](u32 s, u32 r, u32 b, u32 m, u32 u) {
        float* S = step.smem(s);
        float* D = step.delta_of(b);
        const float* rc = step.cache_of(b) + RC_RNN + m * RNN_CACHE;
        const bool on = S[SB_MASK + m] != 0.0f;
#if CELL_LSTM
        float da[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (on) {
            const float cu = step.state_in[(u64)b * RSL + NH + r];
            S[SB_DC + r] = lstm_gate_grads(rc, HID, u, S[SB_DHT + r], S[SB_DC + r], cu, da);
        }
        float* gi = S + SB_GI + m * RGH;
        float* gh = S + SB_GH + m * RGH;
        float* dgi = D + RD_GI + m * RGH;
        float* dgh = D + RD_GH + m * RGH;
        for (u32 q = 0; q < 4; ++q) {
            gi[q * HID + u] = da[q];
            gh[q * HID + u] = da[q];
            dgi[q * HID + u] = da[q];
            dgh[q * HID + u] = da[q];
        }
#else
        GruGateGrads g{0.0f, 0.0f, 0.0f, 0.0f};
        if (on) {
            const float d = S[SB_DHT + r];
            const float zg = rc[HID + u];
            g = gru_gate_grads(d, rc[u], zg, rc[2 * HID + u], rc[3 * HID + u],
                               step.state_in[(u64)b * RSL + r]);
            S[SB_DHP + r] = S[SB_DHP + r] + d * zg;
        }
        store_gru_gate_grads(S + SB_GI + m * RGH, S + SB_GH + m * RGH, HID, u, g);
        store_gru_gate_grads(D + RD_GI + m * RGH, D + RD_GH + m * RGH, HID, u, g);
#endif
    });
}

// B7: du = W_ih^T gi; dh_{t-1} += W_hh^T gh (active modules).
__device__ __forceinline__ void rb_module_inputs(const RimBwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, N_MOD * UW + NH, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        if (r < N_MOD * UW) {
            const u32 m = r / UW;
            const u32 e = r % UW;
            float acc = 0.0f;
            if (S[SB_MASK + m] != 0.0f) {
                const float* w = step.rnn + (u64)m * RNN_LEN;
                acc = add_column_dot(acc, S + SB_GI + m * RGH, w + e, RGH, UW);
            }
            S[SB_DU + r] = acc;
        } else {
            const u32 q = r - N_MOD * UW;
            const u32 m = q / HID;
            const u32 h = q % HID;
            if (S[SB_MASK + m] == 0.0f) return;
            const float* w = step.rnn + (u64)m * RNN_LEN + RNN_W_HH;
            S[SB_DHP + q] = add_column_dot(S[SB_DHP + q], S + SB_GH + m * RGH, w + h, RGH, HID);
        }
    });
}

// B8: through u_mj = a_mj v_x,j and a_mj = sigmoid(s_mj): the score gradients.
__device__ __forceinline__ void rb_input_scores(const RimBwd& step) {
    const float inv_dk = inv_sqrt_ref(D_K);
    for_module_rows<IN_HEADS>(step.blk, [&](u32 s, u32 r, u32 b, u32 m, u32 j) {
        float* S = step.smem(s);
        const float* C = step.cache_of(b);
        float dsc = 0.0f;
        if (S[SB_MASK + m] != 0.0f) {
            const float a = C[RC_AX + r];
            const float da = dot8(S + SB_DU + m * UW + j * D_V, C + RC_VX + j * D_V, D_V);
            dsc = da * a * (1.0f - a) * inv_dk;
        }
        S[SB_DSC + r] = dsc;
    });
}

// B9: dq_m; dvx and dkx summed over the active modules in order.
__device__ __forceinline__ void rb_input_projections(const RimBwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, N_MOD * QW + UW + QW, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        const float* C = step.cache_of(b);
        float* D = step.delta_of(b);
        if (r < N_MOD * QW) {
            const u32 m = r / QW;
            const u32 j = (r % QW) / D_K;
            float v = 0.0f;
            if (S[SB_MASK + m] != 0.0f) {
                v = 0.0f + S[SB_DSC + m * IN_HEADS + j] * C[RC_KX + r % QW];
            }
            S[SB_DQ + r] = v;
            D[RD_DQ + r] = v;
        } else if (r < N_MOD * QW + UW) {
            const u32 e = r - N_MOD * QW;
            const u32 j = e / D_V;
            const float acc =
                sum_over_active(S + SB_MASK, C + RC_AX + j, IN_HEADS, S + SB_DU + e, UW);
            S[SB_DVX + e] = acc;
            D[RD_DVX + e] = acc;
        } else {
            const u32 e = r - N_MOD * QW - UW;
            const u32 j = e / D_K;
            const float acc =
                sum_over_active(S + SB_MASK, S + SB_DSC + j, IN_HEADS, C + RC_Q + e, QW);
            S[SB_DKX + e] = acc;
            D[RD_DKX + e] = acc;
        }
    });
}

// B10: dh_{t-1} += W_q^T dq (active modules), written out (zero if this step started an
// episode); dx = W_k^T dkx + W_v^T dvx; LSTM modules: dc_{t-1} written out (zero likewise).
__device__ __forceinline__ void rb_write_out(const RimBwd& step) {
    for_sample_rows<SPB_RIM>(step.blk, NH + INPUT + RCL, [&](u32 s, u32 r, u32 b) {
        float* S = step.smem(s);
        if (r < NH) {
            const u32 m = r / HID;
            const u32 h = r % HID;
            float acc = S[SB_DHP + r];
            if (S[SB_MASK + m] != 0.0f) {
                const float* w = step.w_q + (u64)m * QW * HID;
                acc = add_column_dot(acc, S + SB_DQ + m * QW, w + h, QW, HID);
            }
            step.carry_out[(u64)b * RSL + r] = (step.reset && step.reset[b]) ? 0.0f : acc;
        } else if (r >= NH + INPUT) {
            const u32 q = r - NH - INPUT;
            step.carry_out[(u64)b * RSL + NH + q] =
                (step.reset && step.reset[b]) ? 0.0f : S[SB_DC + q];
        } else {
            const u32 e = r - NH;
            float acc = add_column_dot(0.0f, S + SB_DKX, step.w_k + e, QW, INPUT);
            acc = add_column_dot(acc, S + SB_DVX, step.w_v + e, UW, INPUT);
            step.dx[(u64)b * INPUT + e] = acc;
        }
    });
}

// Parameters: the nine RIM tensors, then
//   state_in [batch x RSL] (the state [h | c] the forward read), cache [batch x RIM_CACHE],
//   dh_loss [batch x NH] (gradient of the loss through the heads w.r.t. this step's output h),
//   carry [batch x RSL] (gradient w.r.t. this step's output state [h | c], arriving from step
//   t + 1; null for none; may alias carry_out: it is read completely in B0, before any write),
//   reset [batch] (1: this step started an episode, so nothing flows into step t - 1; may be
//   null), carry_out [batch x RSL] (dL/d state_{t-1}), dx [batch x INPUT] (dL/dx_t),
//   delta [batch x RIM_DELTA].
extern "C" __global__ void rim_bwd_step(RIM_TENSOR_PARAMS, MEMORY_BWD_PARAMS) {
    DYN_SMEM_F32(sm);
    const RimBwd step{RIM_TENSOR_ARGS,
                      state_in, cache, dh_loss, carry, reset, carry_out, dx, delta,
                      sm, sample_block(SPB_RIM, batch)};
    rb_load_gradients(step);
    __syncthreads();
#if COMM
    rb_comm_gate(step);
    __syncthreads();
    rb_comm_output_grads(step);
    __syncthreads();
    rb_comm_scores(step);
    __syncthreads();
    rb_comm_kqv_grads(step);
    __syncthreads();
    rb_into_candidate(step);
    __syncthreads();
#endif
    rb_gate_grads(step);
    __syncthreads();
    rb_module_inputs(step);
    __syncthreads();
    rb_input_scores(step);
    __syncthreads();
    rb_input_projections(step);
    __syncthreads();
    rb_write_out(step);
}
