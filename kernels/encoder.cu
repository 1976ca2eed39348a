// metarim kernels: the observation encoder (core::nn::encoder): conv 2x2 -> ReLU -> maxpool 2x2
// -> conv 2x2 -> ReLU -> conv 2x2 -> ReLU on the 7x7 view, raw integer codes (ENC_BOW 0) or the
// bag-of-words cell embedding (ENC_BOW 1). One sample per block.
//
// FiLM (FILM 1): each conv's pre-activation z is modulated per channel, z (1 + gamma_c) + beta_c,
// before its ReLU (conv1's before the max-pool), the coefficients W_film e + b_film from the
// sample's instruction embedding e (model.cuh FC_*). The cache keeps the modulated values where
// the plain encoder keeps its pre-activations (the ReLUs, the pool's argmaxes and the next conv
// read them) plus the coefficients and the unmodulated values (gamma's gradient); the backward's
// deltas are the unmodulated pre-activations' gradients (what the conv weights need) plus the
// coefficients' gradients, from which `encoder_wgrad` reduces the generator's and the backward
// adds dL/de into the instruction gradient.
//
// Feature normalisation (FEATURE_NORM 1): the C2 features relu(z3) are layer-normalised per
// sample, (f - mean) / sqrt(var + eps), no learned scale or shift. The statistics are sums over
// the sample's features, each taken in order by one thread (the core's order; C2 terms, cheap
// beside the convs); the backward recomputes them from the cached z3.
//
// Same semantics as the core: the input map is x[c][h][w] = obs[w * 7 + h][c]; ReLU's derivative
// at 0 is 0; a pooling window's first maximum in row-major order wins and alone gets the
// gradient. Sums are associated as the core's loops do. The cache has the core's layout
// (model.cuh EC_*); the backward writes deltas (ED_*) and `encoder_wgrad` reduces them into the
// parameter gradients over all samples (one thread per parameter, no atomics).
//
// Launch: encoder_fwd / encoder_bwd: grid = samples, any block size, dynamic shared memory
// ENC_FWD_SMEM / ENC_BWD_SMEM floats; encoder_wgrad: 1-D, any grid (grid-stride loop).
#include "common.cuh"
#include "model.cuh"

// FiLM on one pre-activation z of channel c (`core::nn::encoder::modulate`: the scale 1 + gamma
// rounded first, then z * scale + beta, no contraction): coefs holds the sample's coefficients,
// g and bt the offsets of this conv's gammas and betas in them.
__device__ __forceinline__ float film_modulate(const float* coefs, u32 g, u32 bt, u32 c,
                                               float z) {
    const float scale = 1.0f + coefs[g + c];
    return z * scale + coefs[bt + c];
}

// Input channel ci at map position q = h * 7 + w of one observation (147 codes).
__device__ __forceinline__ float input_at(const float* __restrict__ emb, const u8* o, u32 ci,
                                          u32 q) {
    const u32 h = q / 7, w = q % 7;
    const u8* cell = o + (w * 7 + h) * 3;
#if ENC_BOW
    float acc = 0.0f;
    for (u32 a = 0; a < 3; ++a) acc += emb[(a * 16 + cell[a]) * CIN + ci];
    return acc;
#else
    (void)emb;
    return (float)cell[ci];
#endif
}

#if FEATURE_NORM
// One sample's feature statistics (core layer_norm_stats): st[0] = the mean of f [C2], st[1] =
// 1 / sqrt(var + eps) with var the mean squared deviation from it, each sum in order.
__device__ __forceinline__ void feature_stats(const float* f, float* st) {
    const float n = (float)C2;
    float sum = 0.0f;
    for (u32 c = 0; c < C2; ++c) sum += f[c];
    const float mean = sum / n;
    float var = 0.0f;
    for (u32 c = 0; c < C2; ++c) var += (f[c] - mean) * (f[c] - mean);
    st[0] = mean;
    st[1] = 1.0f / sqrtf(var / n + LN_EPS);
}
#endif

// conv1 output position (0..36) of the first maximum (post-ReLU) of pooling window win (0..9).
__device__ __forceinline__ u32 window_argmax(const float* z1o, u32 win) {
    const u32 ph = win / 3, pw = win % 3;
    const u32 base = 2 * ph * 6 + 2 * pw;
    u32 best = base;
    float best_v = relu_ref(z1o[base]);
    const u32 rest[3] = {base + 1, base + 6, base + 7};
    for (u32 k = 0; k < 3; ++k) {
        const float v = relu_ref(z1o[rest[k]]);
        if (v > best_v) {
            best = rest[k];
            best_v = v;
        }
    }
    return best;
}

// conv1 or conv2 of encoder_fwd, for one sample: `cout` output maps of (side - 1)^2 positions
// from `cin` input maps of side x side at `in` (weights w [cout x cin x 4], bias b), each sum
// associated as the core's conv loop; with FiLM the unmodulated value goes to `raw` and the
// modulated one (coefficients g and bt of coefs) onward. The output goes to Z (read by the next
// layer) and to the cache `z`.
__device__ __forceinline__ void conv2x2_layer(const float* w, const float* bias, const float* in,
                                              u32 cin, u32 side, u32 cout, const float* coefs,
                                              u32 g, u32 bt, float* raw, float* Z, float* z,
                                              u32 tid, u32 nt) {
    const u32 out = side - 1;
    for (u32 it = tid; it < cout * out * out; it += nt) {
        const u32 oc = it / (out * out), q = it % (out * out);
        const u32 t = (q / out) * side + q % out;
        float acc = bias[oc];
        for (u32 ci = 0; ci < cin; ++ci) {
            const float* k = w + (oc * cin + ci) * 4;
            const float* xc = in + ci * side * side;
            acc += k[0] * xc[t] + k[1] * xc[t + 1] + k[2] * xc[t + side] + k[3] * xc[t + side + 1];
        }
#if FILM
        raw[it] = acc;
        acc = film_modulate(coefs, g, bt, oc, acc);
#else
        (void)coefs;
        (void)g;
        (void)bt;
        (void)raw;
#endif
        Z[it] = acc;
        z[it] = acc;
    }
}

// Parameters: the encoder's parameter block (EP_*), obs [samples x 147] (codes checked by the
// host: < 16 for the bag of words), instr [samples x instr_ld] each sample's instruction
// embedding in columns 0..INSTR_H (FiLM only; not read without: may be null), the output x
// [samples x ld] (features in columns 0..C2), cache [samples x ENC_CACHE]. instr may point into
// x's own rows (the memory input holds the embedding after the features): x's columns 0..C2
// and instr's 0..INSTR_H must not overlap.
extern "C" __global__ void encoder_fwd(const float* __restrict__ p, const u8* __restrict__ obs,
                                       const float* instr, u32 instr_ld, float* x, u32 ld,
                                       float* __restrict__ cache, u32 samples) {
    DYN_SMEM_F32(sm);
    BLOCK_ITEM(b, samples);
    const u8* o = obs + (u64)b * 147;
    float* C = cache + (u64)b * ENC_CACHE;
    float* X = sm;
    float* Z1 = X + CIN * 49;
    float* P = Z1 + C0 * 36;
    float* Z2 = P + C0 * 9;
    float* F = Z2 + C1 * 4;  // FiLM coefficients [FILM_N]
    float* NF = F + FILM_N;  // FEATURE_NORM: the features before it [C2] | mean, 1 / std
    (void)NF;
    for (u32 it = tid; it < CIN * 49; it += nt) X[it] = input_at(p, o, it / 49, it % 49);
#if FILM
    // The coefficients, each b_film + sum_j W_film[k][j] e_j in j order (core film_coefs).
    const float* e = instr + (u64)b * instr_ld;
    for (u32 k = tid; k < FILM_N; k += nt) {
        const float* row = p + EP_FW + k * INSTR_H;
        float acc = p[EP_FB + k];
        for (u32 j = 0; j < INSTR_H; ++j) acc += row[j] * e[j];
        F[k] = acc;
        C[EC_FILM + k] = acc;
    }
#else
    (void)instr;
    (void)instr_ld;
    (void)F;
#endif
    __syncthreads();
    conv2x2_layer(p + EP_W1, p + EP_B1, X, CIN, 7, C0, F, FC_G1, FC_B1, C + EC_R1, Z1, C + EC_Z1,
                  tid, nt);
    __syncthreads();
    for (u32 it = tid; it < C0 * 9; it += nt) {
        const u32 oc = it / 9, win = it % 9;
        const float* z1o = Z1 + oc * 36;
        const float v = relu_ref(z1o[window_argmax(z1o, win)]);
        P[it] = v;
        C[EC_POOL + it] = v;
    }
    __syncthreads();
    conv2x2_layer(p + EP_W2, p + EP_B2, P, C0, 3, C1, F, FC_G2, FC_B2, C + EC_R2, Z2, C + EC_Z2, tid,
                  nt);
    __syncthreads();
    for (u32 oc = tid; oc < C2; oc += nt) {
        float acc = p[EP_B3 + oc];
        for (u32 c = 0; c < C1; ++c) {
            const float* k = p + EP_W3 + (oc * C1 + c) * 4;
            for (u32 q = 0; q < 4; ++q) acc += k[q] * relu_ref(Z2[c * 4 + q]);
        }
#if FILM
        C[EC_R3 + oc] = acc;
        acc = film_modulate(F, FC_G3, FC_B3, oc, acc);
#endif
        C[EC_Z3 + oc] = acc;
#if FEATURE_NORM
        NF[oc] = relu_ref(acc);
#else
        x[(u64)b * ld + oc] = relu_ref(acc);
#endif
    }
#if FEATURE_NORM
    __syncthreads();
    if (tid == 0) feature_stats(NF, NF + C2);
    __syncthreads();
    for (u32 oc = tid; oc < C2; oc += nt) x[(u64)b * ld + oc] = (NF[oc] - NF[C2]) * NF[C2 + 1];
#endif
}

#if ENC_BOW
// encoder_bwd's last step with the bag of words: the gradient of one sample's input map (for
// the embedding rows), conv1's transpose at the argmaxes, into its deltas D (ED_X); C is its
// cache and GP the gradient of its pooled conv1 output.
__device__ __forceinline__ void input_map_backward(const float* __restrict__ p, const float* C,
                                                   const float* GP, float* D, u32 tid, u32 nt) {
    for (u32 it = tid; it < CIN * 49; it += nt) {
        const u32 ci = it / 49, q = it % 49;
        float acc = 0.0f;
        for (u32 oc = 0; oc < C0; ++oc) {
            const float* k = p + EP_W1 + (oc * CIN + ci) * 4;
            const float* z1o = C + EC_Z1 + oc * 36;
            for (u32 win = 0; win < 9; ++win) {
                const float gv = GP[oc * 9 + win];
                if (gv == 0.0f) continue;
                const u32 t = window_argmax(z1o, win);
                const u32 u = (t / 6) * 7 + t % 6;
                const u32 offs[4] = {0, 1, 7, 8};
                for (u32 kk = 0; kk < 4; ++kk) {
                    if (u + offs[kk] == q) acc += gv * k[kk];
                }
            }
        }
        D[ED_X + it] = acc;
    }
}
#endif

// A conv's gradients G (n per channel, `channels` channels; each thread's elements those of the
// grid-stride loop that wrote them) made the unmodulated pre-activations' gradients, into G and
// the deltas dz. Without FiLM they already are: copied to dz. With FiLM, one thread per channel
// after a barrier (core modulate_backward / film_conv1_backward): gamma's gradient sums v * raw(k)
// (raw(k): the unmodulated pre-activation that element k's gradient belongs to) and beta's sums
// v over the channel's elements in order, into GC at offsets g / bt; each v becomes
// v (1 + gamma_c). Shared by conv2 (4 positions) and conv1 (9 pooling windows).
template <typename Raw>
__device__ __forceinline__ void unmodulated_grads(const float* C, float* G, float* dz, float* GC,
                                                  u32 g, u32 bt, u32 channels, u32 n, Raw raw,
                                                  u32 tid, u32 nt) {
#if FILM
    __syncthreads();
    for (u32 c = tid; c < channels; c += nt) {
        const float scale = 1.0f + C[EC_FILM + g + c];
        float dg = 0.0f, db = 0.0f;
        for (u32 k = 0; k < n; ++k) {
            const u32 it = c * n + k;
            const float v = G[it];
            dg += v * raw(c, k);
            db += v;
            G[it] = v * scale;
            dz[it] = G[it];
        }
        GC[g + c] = dg;
        GC[bt + c] = db;
    }
#else
    for (u32 it = tid; it < channels * n; it += nt) dz[it] = G[it];
    (void)C, (void)GC, (void)g, (void)bt, (void)raw;
#endif
}
#if FILM
// encoder_bwd's last step with FiLM, for one sample: the coefficients' gradients GC into its
// deltas D (the generator's gradient, encoder_wgrad), and dL/de = W_film^T GC added into its
// instruction gradient de (INSTR_H values) one coefficient at a time, in order, zero ones
// skipped, onto what it holds (core film_coefs_backward accumulating into d_instr: one call of
// encode_backward rounds exactly so).
__device__ __forceinline__ void film_coefs_backward(const float* __restrict__ p, const float* GC,
                                                    float* D, float* de, u32 tid, u32 nt) {
    for (u32 k = tid; k < FILM_N; k += nt) D[ED_FILM + k] = GC[k];
    for (u32 j = tid; j < INSTR_H; j += nt) {
        float acc = de[j];
        for (u32 k = 0; k < FILM_N; ++k) {
            const float dc = GC[k];
            if (dc == 0.0f) continue;
            acc += p[EP_FW + k * INSTR_H + j] * dc;
        }
        de[j] = acc;
    }
}
#endif

// Parameters: encoder parameters, obs, cache (from encoder_fwd), d_out [samples x ld] (the
// gradient w.r.t. the features, normalised ones with FEATURE_NORM, in columns 0..C2), d_instr [samples x instr_ld] (FiLM: dL/de is
// added (+=) into columns 0..INSTR_H, the sample's instruction gradient; not touched without
// FiLM: may be null), delta [samples x ENC_DELTA]. d_instr may point into d_out's own rows (the
// memory input's gradient holds the instruction part after the features): d_out's columns 0..C2
// and d_instr's 0..INSTR_H must not overlap.
extern "C" __global__ void encoder_bwd(const float* __restrict__ p, const u8* __restrict__ obs,
                                       const float* __restrict__ cache, const float* d_out,
                                       u32 ld, float* d_instr, u32 instr_ld,
                                       float* __restrict__ delta, u32 samples) {
    DYN_SMEM_F32(sm);
    BLOCK_ITEM(b, samples);
    const float* C = cache + (u64)b * ENC_CACHE;
    float* D = delta + (u64)b * ENC_DELTA;
    float* G3 = sm;
    float* G2 = G3 + C2;
    float* GP = G2 + C1 * 4;
    float* GC = GP + C0 * 9;  // FiLM: the coefficients' gradients [FILM_N]
    (void)GC;
    const float* dy = d_out + (u64)b * ld;
#if FEATURE_NORM
    // The normalisation's backward (core layer_norm_backward): the features relu(z3) and their
    // statistics again, then m1 = mean(dy) and m2 = mean(dy * y) by one thread, in order; the
    // conv3 loop below reads the un-normalised features' gradient
    // inv (dy - m1 - (f - mean) inv m2) where the plain encoder reads dy.
    float* NF = GC + FILM_N;  // features [C2] | mean, 1 / std, m1, m2
    for (u32 oc = tid; oc < C2; oc += nt) NF[oc] = relu_ref(C[EC_Z3 + oc]);
    __syncthreads();
    if (tid == 0) {
        feature_stats(NF, NF + C2);
        const float mean = NF[C2], inv = NF[C2 + 1];
        float m1 = 0.0f, m2 = 0.0f;
        for (u32 c = 0; c < C2; ++c) {
            m1 += dy[c];
            m2 += dy[c] * (NF[c] - mean) * inv;
        }
        NF[C2 + 2] = m1 / (float)C2;
        NF[C2 + 3] = m2 / (float)C2;
    }
    __syncthreads();
#endif
    // conv3: ReLU's mask on the modulated value; with FiLM gamma3 and beta3's gradients, then the
    // unmodulated pre-activation's gradient (times 1 + gamma3), as the core's conv3 loop.
    for (u32 oc = tid; oc < C2; oc += nt) {
#if FEATURE_NORM
        const float inv = NF[C2 + 1];
        const float df = inv * (dy[oc] - NF[C2 + 2] - (NF[oc] - NF[C2]) * inv * NF[C2 + 3]);
#else
        const float df = dy[oc];
#endif
        float g = C[EC_Z3 + oc] > 0.0f ? df : 0.0f;
#if FILM
        float dg = 0.0f;
        dg += g * C[EC_R3 + oc];
        GC[FC_G3 + oc] = dg;
        GC[FC_B3 + oc] = 0.0f + g;
        g *= 1.0f + C[EC_FILM + FC_G3 + oc];
#endif
        G3[oc] = g;
        D[ED_Z3 + oc] = g;
    }
    __syncthreads();
    for (u32 it = tid; it < C1 * 4; it += nt) {
        const u32 c = it / 4, q = it % 4;
        float acc = 0.0f;
        for (u32 oc = 0; oc < C2; ++oc) {
            const float g = G3[oc];
            if (g == 0.0f) continue;
            acc += g * p[EP_W3 + (oc * C1 + c) * 4 + q];
        }
        if (C[EC_Z2 + it] <= 0.0f) acc = 0.0f;
        G2[it] = acc;
    }
    // FiLM: gamma2 and beta2's gradients over a channel's 4 positions.
    unmodulated_grads(
        C, G2, D + ED_Z2, GC, FC_G2, FC_B2, C1, 4,
        [&](u32 c, u32 q) { return C[EC_R2 + c * 4 + q]; }, tid, nt);
    __syncthreads();
    for (u32 it = tid; it < C0 * 9; it += nt) {
        const u32 ci = it / 9, cell = it % 9;
        const u32 ph = cell / 3, pw = cell % 3;
        float acc = 0.0f;
        for (u32 oc = 0; oc < C1; ++oc) {
            const float* k = p + EP_W2 + (oc * C0 + ci) * 4;
            for (u32 h = 0; h < 2; ++h) {
                for (u32 w = 0; w < 2; ++w) {
                    if (ph < h || pw < w || ph - h > 1 || pw - w > 1) continue;
                    const float g = G2[oc * 4 + h * 2 + w];
                    if (g == 0.0f) continue;
                    acc += g * k[(ph - h) * 2 + (pw - w)];
                }
            }
        }
        const float* z1o = C + EC_Z1 + ci * 36;
        if (z1o[window_argmax(z1o, cell)] <= 0.0f) acc = 0.0f;
        GP[it] = acc;
    }
    // FiLM: gamma1 and beta1's gradients over a channel's 9 windows (each window's gradient sits
    // at its argmax, whose unmodulated value gamma1's gradient reads).
    unmodulated_grads(
        C, GP, D + ED_POOL, GC, FC_G1, FC_B1, C0, 9,
        [&](u32 c, u32 win) { return C[EC_R1 + c * 36 + window_argmax(C + EC_Z1 + c * 36, win)]; },
        tid, nt);
#if ENC_BOW || FILM
    __syncthreads();
#endif
#if ENC_BOW
    input_map_backward(p, C, GP, D, tid, nt);
#endif
#if FILM
    film_coefs_backward(p, GC, D, d_instr + (u64)b * instr_ld, tid, nt);
#else
    (void)d_instr;
    (void)instr_ld;
#endif
    (void)obs;
}

// A bias's gradient in encoder_wgrad: the `n` deltas at offset `at` of each sample's deltas,
// summed from zero sample by sample and within a sample in order (the core's order). conv1's
// bias sums its channel's 9 windows, conv2's its 4 positions, conv3's and FiLM's one value.
__device__ __forceinline__ float bias_grad(const float* __restrict__ delta, u32 samples, u32 at,
                                           u32 n) {
    float acc = 0.0f;
    for (u32 s = 0; s < samples; ++s) {
        const float* d = delta + (u64)s * ENC_DELTA + at;
        for (u32 k = 0; k < n; ++k) acc += d[k];
    }
    return acc;
}

// Parameter gradients of the encoder from the deltas of `samples` samples, accumulated (+=)
// into grads (the encoder's block of the gradient buffer). One thread per parameter. instr
// [samples x instr_ld]: each sample's instruction embedding (FiLM's generator gradient; not
// read without FiLM: may be null).
extern "C" __global__ void encoder_wgrad(const float* __restrict__ p, const u8* __restrict__ obs,
                                         const float* __restrict__ cache,
                                         const float* __restrict__ delta,
                                         const float* __restrict__ instr, u32 instr_ld,
                                         float* __restrict__ grads, u32 samples) {
    for (u64 e = global_thread_index(); e < ENC_PARAMS; e += grid_stride()) {
        float acc = 0.0f;
        if (e < EP_W1) {
#if ENC_BOW
            const u32 row = (u32)e / CIN, c = (u32)e % CIN;
            const u32 a = row / 16, code = row % 16;
            for (u32 s = 0; s < samples; ++s) {
                const u8* o = obs + (u64)s * 147;
                const float* dxm = delta + (u64)s * ENC_DELTA + ED_X + c * 49;
                for (u32 k = 0; k < 49; ++k) {
                    if (o[k * 3 + a] != code) continue;
                    const float v = dxm[(k % 7) * 7 + k / 7];
                    if (v != 0.0f) acc += v;
                }
            }
#endif
        } else if (e < EP_B1) {
            const u32 r = (u32)(e - EP_W1);
            const u32 oc = r / (CIN * 4), ci = (r / 4) % CIN, kk = r % 4;
            const u32 off = (kk / 2) * 7 + kk % 2;
            for (u32 s = 0; s < samples; ++s) {
                const float* gp = delta + (u64)s * ENC_DELTA + ED_POOL + oc * 9;
                const float* z1o = cache + (u64)s * ENC_CACHE + EC_Z1 + oc * 36;
                const u8* o = obs + (u64)s * 147;
                for (u32 win = 0; win < 9; ++win) {
                    const float gv = gp[win];
                    if (gv == 0.0f) continue;
                    const u32 t = window_argmax(z1o, win);
                    const u32 u = (t / 6) * 7 + t % 6;
                    acc += gv * input_at(p, o, ci, u + off);
                }
            }
        } else if (e < EP_W2) {
            acc = bias_grad(delta, samples, ED_POOL + (u32)(e - EP_B1) * 9, 9);
        } else if (e < EP_B2) {
            const u32 r = (u32)(e - EP_W2);
            const u32 oc = r / (C0 * 4), ci = (r / 4) % C0, kk = r % 4;
            const u32 kh = kk / 2, kw = kk % 2;
            for (u32 s = 0; s < samples; ++s) {
                const float* g2 = delta + (u64)s * ENC_DELTA + ED_Z2 + oc * 4;
                const float* pc = cache + (u64)s * ENC_CACHE + EC_POOL + ci * 9;
                for (u32 q = 0; q < 4; ++q) {
                    const float g = g2[q];
                    if (g == 0.0f) continue;
                    acc += g * pc[(q / 2 + kh) * 3 + q % 2 + kw];
                }
            }
        } else if (e < EP_W3) {
            acc = bias_grad(delta, samples, ED_Z2 + (u32)(e - EP_B2) * 4, 4);
        } else if (e < EP_B3) {
            const u32 r = (u32)(e - EP_W3);
            const u32 oc = r / (C1 * 4), c = (r / 4) % C1, q = r % 4;
            for (u32 s = 0; s < samples; ++s) {
                const float g = delta[(u64)s * ENC_DELTA + ED_Z3 + oc];
                if (g == 0.0f) continue;
                acc += g * relu_ref(cache[(u64)s * ENC_CACHE + EC_Z2 + c * 4 + q]);
            }
        } else if (e < EP_FW) {
            acc = bias_grad(delta, samples, ED_Z3 + (u32)(e - EP_B3), 1);
#if FILM
        } else if (e < EP_FB) {
            // dW_film[k][j] = sum_s dcoefs_k e_j (zero coefficients skipped, as the core).
            const u32 r = (u32)(e - EP_FW);
            const u32 k = r / INSTR_H, j = r % INSTR_H;
            for (u32 s = 0; s < samples; ++s) {
                const float dc = delta[(u64)s * ENC_DELTA + ED_FILM + k];
                if (dc == 0.0f) continue;
                acc += dc * instr[(u64)s * instr_ld + j];
            }
        } else {
            acc = bias_grad(delta, samples, ED_FILM + (u32)(e - EP_FB), 1);
#endif
        }
        grads[e] += acc;
    }
#if !FILM
    (void)instr;
    (void)instr_ld;
#endif
}
