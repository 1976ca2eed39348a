// metarim kernels: the instruction encoder (core::nn::instr: word embedding + GRU over the
// mission's non-PAD tokens, output = final hidden state), forward and backward, one segment
// (an episode's mission within a chunk) per block; plus the gathers that place instruction
// embeddings into the memory input and sum their gradients back per segment.
//
// The GRU arithmetic is core::nn::ops::gru_forward / gru_gate_grads in the same order. The
// backward stores per-token deltas (INSTR_DELTA); the GRU weight gradients are reduce.cu
// `wgrad` reductions and the embedding rows' gradients `instr_emb_grad` (one thread per table
// element, no atomics).
//
// Launch: instr_fwd / instr_bwd: grid = segments, any block size, INSTR_FWD_SMEM /
// INSTR_BWD_SMEM floats of dynamic shared memory; the others 1-D, any grid.
#include "common.cuh"
#include "model.cuh"

// Parameters: the instruction block (IP_*), tokens [segments x MAX_TOK] (ids < VOCAB, checked
// by the host; 0 is padding), out [segments x INSTR_H], cache [segments x INSTR_CACHE] (the
// core's layout; unused slots zeroed), xs [segments x MAX_TOK x WORD_DIM] (the embedded tokens
// the GRU read, zeros after the last).
extern "C" __global__ void instr_fwd(const float* __restrict__ p, const u16* __restrict__ tokens,
                                     float* __restrict__ out, float* __restrict__ cache,
                                     float* __restrict__ xs, u32 segments) {
    DYN_SMEM_F32(sm);
    BLOCK_ITEM(g, segments);
    const u16* tk = tokens + (u64)g * MAX_TOK;
    float* C = cache + (u64)g * INSTR_CACHE;
    float* X = xs + (u64)g * MAX_TOK * WORD_DIM;
    float* H = sm;
    float* XV = sm + INSTR_H;
    for (u32 it = tid; it < INSTR_CACHE; it += nt) C[it] = 0.0f;
    for (u32 it = tid; it < MAX_TOK * WORD_DIM; it += nt) X[it] = 0.0f;
    for (u32 u = tid; u < INSTR_H; u += nt) H[u] = 0.0f;
    __syncthreads();
    const float* w_ih = p + IP_W_IH;
    const float* w_hh = p + IP_W_HH;
    const float* b_ih = p + IP_B_IH;
    const float* b_hh = p + IP_B_HH;
    u32 n = 0;
    for (u32 k = 0; k < MAX_TOK; ++k) {
        const u32 tok = tk[k];
        if (tok == 0) continue;
        for (u32 e = tid; e < WORD_DIM; e += nt) {
            const float v = p[tok * WORD_DIM + e];
            XV[e] = v;
            X[n * WORD_DIM + e] = v;
        }
        __syncthreads();
        float* gates = C + IC_GATES + n * 4 * INSTR_H;
        float* hnext = C + (n + 1) * INSTR_H;
        for (u32 u = tid; u < INSTR_H; u += nt) {
            hnext[u] = gru_unit_forward(w_ih, b_ih, w_hh, b_hh, XV, WORD_DIM, H, INSTR_H, u, gates);
        }
        __syncthreads();
        for (u32 u = tid; u < INSTR_H; u += nt) H[u] = hnext[u];
        __syncthreads();
        ++n;
    }
    for (u32 u = tid; u < INSTR_H; u += nt) out[(u64)g * INSTR_H + u] = H[u];
}

// Parameters: instruction block, tokens, cache (from instr_fwd), d_out [segments x INSTR_H]
// (the gradient of the output, summed over the segment's steps), delta
// [segments x MAX_TOK x INSTR_DELTA] (token slot t: the t-th non-PAD token; zeros after).
extern "C" __global__ void instr_bwd(const float* __restrict__ p, const u16* __restrict__ tokens,
                                     const float* __restrict__ cache,
                                     const float* __restrict__ d_out, float* __restrict__ delta,
                                     u32 segments) {
    DYN_SMEM_F32(sm);
    BLOCK_ITEM(g, segments);
    const u16* tk = tokens + (u64)g * MAX_TOK;
    const float* C = cache + (u64)g * INSTR_CACHE;
    float* Dg = delta + (u64)g * MAX_TOK * INSTR_DELTA;
    float* DH = sm;
    float* DHP = DH + INSTR_H;
    float* GI = DHP + INSTR_H;
    float* GH = GI + IG3;
    u32 n = 0;
    for (u32 k = 0; k < MAX_TOK; ++k) n += tk[k] != 0 ? 1 : 0;
    for (u32 it = tid; it < (MAX_TOK - n) * INSTR_DELTA; it += nt) {
        Dg[n * INSTR_DELTA + it] = 0.0f;
    }
    for (u32 u = tid; u < INSTR_H; u += nt) DH[u] = d_out[(u64)g * INSTR_H + u];
    __syncthreads();
    const float* w_ih = p + IP_W_IH;
    const float* w_hh = p + IP_W_HH;
    for (u32 i = 0; i < n; ++i) {
        const u32 t = n - 1 - i;
        const float* gates = C + IC_GATES + t * 4 * INSTR_H;
        const float* hprev = C + t * INSTR_H;
        float* D = Dg + t * INSTR_DELTA;
        for (u32 u = tid; u < INSTR_H; u += nt) {
            const float d = DH[u];
            const float z = gates[INSTR_H + u];
            const GruGateGrads g = gru_gate_grads(d, gates[u], z, gates[2 * INSTR_H + u],
                                                  gates[3 * INSTR_H + u], hprev[u]);
            store_gru_gate_grads(GI, GH, INSTR_H, u, g);
            store_gru_gate_grads(D, D + ID_GH, INSTR_H, u, g);
            DHP[u] = 0.0f + d * z;
        }
        __syncthreads();
        for (u32 it = tid; it < WORD_DIM + INSTR_H; it += nt) {
            if (it < WORD_DIM) {
                D[ID_DX + it] = add_column_dot(0.0f, GI, w_ih + it, IG3, WORD_DIM);
            } else {
                const u32 h = it - WORD_DIM;
                DHP[h] = add_column_dot(DHP[h], GH, w_hh + h, IG3, INSTR_H);
            }
        }
        __syncthreads();
        for (u32 u = tid; u < INSTR_H; u += nt) DH[u] = DHP[u];
        __syncthreads();
    }
}

// Gradients of the embedding table (accumulated into grads = the instruction block's gradient):
// element (v, e) sums the deltas of every occurrence of token v. One thread per element.
extern "C" __global__ void instr_emb_grad(const u16* __restrict__ tokens,
                                          const float* __restrict__ delta,
                                          float* __restrict__ grads, u32 segments) {
    for (u64 i = global_thread_index(); i < (u64)VOCAB * WORD_DIM; i += grid_stride()) {
        const u32 v = (u32)(i / WORD_DIM), e = (u32)(i % WORD_DIM);
        float acc = 0.0f;
        for (u32 g = 0; g < segments; ++g) {
            u32 t = 0;
            for (u32 k = 0; k < MAX_TOK; ++k) {
                const u32 tok = tokens[(u64)g * MAX_TOK + k];
                if (tok == 0) continue;
                if (tok == v) acc += delta[((u64)g * MAX_TOK + t) * INSTR_DELTA + ID_DX + e];
                ++t;
            }
        }
        grads[i] += acc;
    }
}

// dst[s * dst_ld + col + k] = src[idx[s] * width + k] for k < width: instruction embeddings
// into the memory input (or any row gather).
extern "C" __global__ void gather_rows(float* __restrict__ dst, u32 dst_ld, u32 col,
                                       const float* __restrict__ src,
                                       const u32* __restrict__ idx, u32 width, u32 samples) {
    for (u64 i = global_thread_index(); i < (u64)samples * width; i += grid_stride()) {
        const u64 s = i / width, k = i % width;
        dst[s * dst_ld + col + k] = src[(u64)idx[s] * width + k];
    }
}

// The instruction gradient of each segment: d_instr[g] = sum over the segment's steps, last
// step first (as the core's backward loop adds them), of dx[(t * chunks + chunk) row][col..].
// seg_chunk / seg_t0 / seg_t1: the segment's chunk and first / last step (inclusive).
extern "C" __global__ void instr_dsum(const float* __restrict__ dx, u32 ld, u32 col,
                                      const u32* __restrict__ seg_chunk,
                                      const u32* __restrict__ seg_t0,
                                      const u32* __restrict__ seg_t1, u32 chunks,
                                      float* __restrict__ d_instr, u32 segments) {
    for (u64 i = global_thread_index(); i < (u64)segments * INSTR_H; i += grid_stride()) {
        const u32 g = (u32)(i / INSTR_H), k = (u32)(i % INSTR_H);
        float acc = 0.0f;
        for (u32 t = seg_t1[g] + 1; t-- > seg_t0[g];) {
            acc += dx[((u64)t * chunks + seg_chunk[g]) * ld + col + k];
        }
        d_instr[i] = acc;
    }
}

// dst[idx[s] * width + k] = src[s * width + k] for k < width (freshly encoded instructions into
// the per-env store; the idx are distinct).
extern "C" __global__ void scatter_rows(float* __restrict__ dst, const float* __restrict__ src,
                                        const u32* __restrict__ idx, u32 width, u32 samples) {
    for (u64 i = global_thread_index(); i < (u64)samples * width; i += grid_stride()) {
        const u64 s = i / width, k = i % width;
        dst[(u64)idx[s] * width + k] = src[i];
    }
}
