// metarim kernels: actor and critic heads forward, and the PPO loss with its gradient through
// the heads (core::nn::heads, core::nn::loss::ppo_loss), SPB_HEADS samples per block.
//
// `ppo_heads_bwd` computes each sample's loss terms and d loss / d (logits, value) with the
// core's formulas (PyTorch's subgradients at the kinks), then the gradient w.r.t. the memory
// output and the heads' pre-activation deltas (HEADS_DELTA); weight gradients are reduce.cu
// `wgrad` reductions over the deltas.
//
// Launch: grid ceil(samples / SPB_HEADS), any block size; dynamic shared memory
// SPB_HEADS * HF_SMEM (forward) or SPB_HEADS * HB_SMEM (backward) floats.
#include "common.cuh"
#include "model.cuh"

// Parameters: the heads' parameter block (model.cuh HP_*); h [samples x ld] (the memory
// output is the first MW values of each row); logits [samples x N_ACT]; values [samples];
// cache [samples x HEADS_CACHE].
extern "C" __global__ void heads_fwd(const float* __restrict__ p, const float* __restrict__ h,
                                     u32 ld, float* __restrict__ logits,
                                     float* __restrict__ values, float* __restrict__ cache,
                                     u32 samples) {
    DYN_SMEM_F32(sm);
    const SampleBlock blk = sample_block(SPB_HEADS, samples);
    for_sample_rows<SPB_HEADS>(blk, MW, [&](u32 s, u32 k, u32 b) {
        sm[s * HF_SMEM + k] = h[(u64)b * ld + k];
    });
    __syncthreads();
    for_sample_rows<SPB_HEADS>(blk, 2 * HEAD_H, [&](u32 s, u32 j, u32 b) {
        float* S = sm + s * HF_SMEM;
        const bool critic = j >= HEAD_H;
        const u32 jj = critic ? j - HEAD_H : j;
        const float* w1 = p + (critic ? HP_C_W1 : 0);
        const float* b1 = p + (critic ? HP_C_B1 : HP_A_B1);
        const float v = tanhf(b1[jj] + dot8(w1 + (u64)jj * MW, S, MW));
        S[MW + j] = v;
        cache[(u64)b * HEADS_CACHE + j] = v;
    });
    __syncthreads();
    for_sample_rows<SPB_HEADS>(blk, N_ACT + 1, [&](u32 s, u32 o, u32 b) {
        const float* S = sm + s * HF_SMEM;
        if (o < N_ACT) {
            logits[(u64)b * N_ACT + o] =
                p[HP_A_B2 + o] + dot8(p + HP_A_W2 + o * HEAD_H, S + MW, HEAD_H);
        } else {
            values[b] = p[HP_C_B2] + dot8(p + HP_C_W2, S + MW + HEAD_H, HEAD_H);
        }
    });
}

// log-sum-exp of the logits (core::nn::loss::lse).
__device__ __forceinline__ float lse_ref(const float* l) {
    float m = l[0];
    for (u32 o = 0; o < N_ACT; ++o) m = max_ref(m, l[o]);
    float sum = 0.0f;
    for (u32 o = 0; o < N_ACT; ++o) sum += expf(l[o] - m);
    return m + logf(sum);
}

__device__ __forceinline__ float clamp_pass(float x, float lo, float hi) {
    return (x >= lo && x <= hi) ? 1.0f : 0.0f;
}

// Gradient shares of minimum(a, b) (PyTorch: split on a tie).
__device__ __forceinline__ void min_shares(float a, float b, float* ga, float* gb) {
    if (a < b) {
        *ga = 1.0f;
        *gb = 0.0f;
    } else if (b < a) {
        *ga = 0.0f;
        *gb = 1.0f;
    } else {
        *ga = 0.5f;
        *gb = 0.5f;
    }
}

// Parameters: heads block; cache (from heads_fwd); logits, values (from
// heads_fwd); per sample: action, old log-probability, old value, advantage, return; the PPO
// coefficients (clip_value 0/1) and the loss scale; outputs: dh [samples x MW] (d loss / d
// memory output), terms [samples x N_TERMS], delta [samples x HEADS_DELTA].
extern "C" __global__ void ppo_heads_bwd(
    const float* __restrict__ p, const float* __restrict__ cache, const float* __restrict__ logits,
    const float* __restrict__ values, const int* __restrict__ action,
    const float* __restrict__ old_logprob, const float* __restrict__ old_value,
    const float* __restrict__ advantage, const float* __restrict__ ret, float clip_eps,
    float value_coef, float entropy_coef, u32 clip_value, float scale, float* __restrict__ dh,
    float* __restrict__ terms, float* __restrict__ delta, u32 samples) {
    DYN_SMEM_F32(sm);
    const SampleBlock blk = sample_block(SPB_HEADS, samples);
    // Loss terms and d loss / d (logits, value), one thread per sample.
    for (u32 s = blk.tid; s < SPB_HEADS; s += blk.nt) {
        const u32 b = blk.b0 + s;
        if (b >= samples) continue;
        float* S = sm + s * HB_SMEM;
        const float* l = logits + (u64)b * N_ACT;
        const float value = values[b];
        const int a = action[b];
        const float adv = advantage[b];
        const float R = ret[b];
        const float ov = old_value[b];
        const float eps = clip_eps;
        const float lo = 1.0f - eps, hi = 1.0f + eps;
        const float lse = lse_ref(l);
        const float logprob = l[a] - lse;
        float entropy = 0.0f;
        for (u32 o = 0; o < N_ACT; ++o) {
            const float lp = l[o] - lse;
            entropy -= expf(lp) * lp;
        }
        const float log_ratio = logprob - old_logprob[b];
        const float ratio = expf(log_ratio);
        const float surr1 = ratio * adv;
        const float surr2 = min_ref(max_ref(ratio, lo), hi) * adv;
        const float policy_loss = -min_ref(surr1, surr2);
        const float d = value - R;
        float value_loss = d * d;
        if (clip_value) {
            const float vc = ov + min_ref(max_ref(value - ov, -eps), eps);
            const float dc = vc - R;
            value_loss = max_ref(d * d, dc * dc);
        }
        float* T = terms + (u64)b * N_TERMS;
        T[0] = policy_loss - entropy_coef * entropy + value_coef * value_loss;
        T[1] = policy_loss;
        T[2] = value_loss;
        T[3] = entropy;
        T[4] = logprob;
        T[5] = ratio;
        T[6] = (ratio - 1.0f) - log_ratio;
        T[7] = -log_ratio;
        T[8] = fabsf(ratio - 1.0f) > eps ? 1.0f : 0.0f;
        float g1, g2;
        min_shares(surr1, surr2, &g1, &g2);
        const float d_ratio = -(g1 * adv + g2 * adv * clamp_pass(ratio, lo, hi));
        const float d_logprob = d_ratio * ratio;
        float* D = delta + (u64)b * HEADS_DELTA;
        for (u32 o = 0; o < N_ACT; ++o) {
            const float lp = l[o] - lse;
            const float pr = expf(lp);
            const float ind = (int)o == a ? 1.0f : 0.0f;
            const float d_h = -pr * (lp + entropy);
            const float g = 0.0f + scale * (d_logprob * (ind - pr) - entropy_coef * d_h);
            S[o] = g;
            D[o] = g;
        }
        float dv = 2.0f * d;
        if (clip_value) {
            const float diff = value - ov;
            const float vc = ov + min_ref(max_ref(diff, -eps), eps);
            const float dc = vc - R;
            float s1, s2;
            min_shares(dc * dc, d * d, &s1, &s2);
            dv = s1 * 2.0f * d + s2 * 2.0f * dc * clamp_pass(diff, -eps, eps);
        }
        const float dval = 0.0f + scale * value_coef * dv;
        S[N_ACT] = dval;
        D[HD_DV] = dval;
    }
    __syncthreads();
    // Through the second layers and tanh: the hidden pre-activation gradients.
    for_sample_rows<SPB_HEADS>(blk, 2 * HEAD_H, [&](u32 s, u32 j, u32 b) {
        float* S = sm + s * HB_SMEM;
        const float t = cache[(u64)b * HEADS_CACHE + j];
        float dhid = 0.0f;
        if (j < HEAD_H) {
            for (u32 o = 0; o < N_ACT; ++o) dhid += p[HP_A_W2 + o * HEAD_H + j] * S[o];
        } else {
            dhid += p[HP_C_W2 + (j - HEAD_H)] * S[N_ACT];
        }
        const float da = dhid * (1.0f - t * t);
        S[N_ACT + 1 + j] = da;
        delta[(u64)b * HEADS_DELTA + HD_DA + j] = da;
    });
    __syncthreads();
    // Into the memory output: actor's first layer, then the critic's.
    for_sample_rows<SPB_HEADS>(blk, MW, [&](u32 s, u32 i, u32 b) {
        const float* S = sm + s * HB_SMEM + N_ACT + 1;
        float acc = 0.0f;
        for (u32 j = 0; j < HEAD_H; ++j) acc += S[j] * p[(u64)j * MW + i];
        for (u32 j = 0; j < HEAD_H; ++j) acc += S[HEAD_H + j] * p[HP_C_W1 + (u64)j * MW + i];
        dh[(u64)b * MW + i] = acc;
    });
}
