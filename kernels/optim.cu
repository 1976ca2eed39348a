// metarim kernels: the training step's optimiser update over a list of (offset, len) ranges of
// one parameter group, with the global gradient norm and clipping on the device.
//
// `adam_masked` is `core::nn::optim::Adam::update_ranges_at` for S = f32, element for element:
//
//     m = m + w1 * (g - m)
//     v = b2 * v + w2 * g * g          (evaluated as (b2 * v) + ((w2 * g) * g))
//     denom = sqrt(v) / bc2_sqrt + eps
//     p = p + neg_step * m / denom     (evaluated as p + ((neg_step * m) / denom))
//
// The scalars (neg_step = -(lr / (1 - beta1^t)), bc2_sqrt = sqrt(1 - beta2^t), w1 = 1 - beta1,
// b2 = beta2, w2 = 1 - beta2, eps) are computed on the host in f64 and rounded to f32 exactly as
// the CPU does, then passed in; the kernel only does f32 arithmetic. With `--fmad=false`, IEEE
// `sqrtf` and division and no flush-to-zero, every operation is correctly rounded in the same
// order as on the CPU, so the result is the same bit for bit. (With FMA contraction allowed,
// `b2 * v + w2 * g * g` and `p + neg_step * m / denom` would round once instead of twice and
// differ in the last bit.)
//
// Launch: 1-D, any grid; a grid-stride loop covers range_prefix[nranges] selected elements.
#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// Ranges are tagged with the module they belong to (range_module[r];
// -1: shared, always updated), skipped when that module was active in no step of the minibatch
// (counts[module] == 0; counts null: nothing is skipped), which is Layout::fast_ranges without a
// host round trip. Gradients are multiplied by *coef first (the clip coefficient computed on the
// device by clip_finish; null or exactly 1: unchanged), as the CPU scales them in place.

// The module of selected element i's range, and whether that range is skipped.
__device__ __forceinline__ bool range_skipped(const u64* range_prefix, const int* range_module,
                                              const u32* counts, u32 nranges, u64 i) {
    const int m = range_module[range_of(range_prefix, nranges, i)];
    return counts && m >= 0 && counts[m] == 0;
}

extern "C" __global__ void adam_masked(float* __restrict__ params,
                                       const float* __restrict__ grads,
                                       float* __restrict__ m, float* __restrict__ v,
                                       const u64* __restrict__ range_off,
                                       const u64* __restrict__ range_prefix,
                                       const int* __restrict__ range_module,
                                       const u32* __restrict__ counts, unsigned int nranges,
                                       const float* __restrict__ coef, float neg_step,
                                       float bc2_sqrt, float w1, float b2, float w2, float eps) {
    if (nranges == 0) {
        return;
    }
    const float c = coef ? *coef : 1.0f;
    const u64 total = range_prefix[nranges];
    for (u64 i = global_thread_index(); i < total; i += grid_stride()) {
        if (range_skipped(range_prefix, range_module, counts, nranges, i)) continue;
        const u64 e = range_element(range_off, range_prefix, nranges, i);
        float g = grads[e];
        if (c != 1.0f) g = g * c;
        float mi = m[e];
        mi = mi + w1 * (g - mi);
        const float vi = b2 * v[e] + w2 * g * g;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[e] = mi;
        v[e] = vi;
        params[e] = params[e] + neg_step * mi / denom;
    }
}

// partial[slot + blockIdx.x] = sum over this block's share of the selected, not skipped elements
// of grads[e]^2 in f64. Launch: 1-D, a power-of-two block size, dynamic shared memory
// blockDim.x doubles (as 2 * blockDim.x floats).
extern "C" __global__ void sumsq_masked(const float* __restrict__ grads,
                                        const u64* __restrict__ range_off,
                                        const u64* __restrict__ range_prefix,
                                        const int* __restrict__ range_module,
                                        const u32* __restrict__ counts, unsigned int nranges,
                                        double* __restrict__ partial, unsigned int slot) {
    DYN_SMEM_F32(smf);
    double* sm = (double*)smf;
    const u32 tid = threadIdx.x;
    double acc = 0.0;
    if (nranges > 0) {
        const u64 total = range_prefix[nranges];
        for (u64 i = global_thread_index(); i < total; i += grid_stride()) {
            if (range_skipped(range_prefix, range_module, counts, nranges, i)) continue;
            const double g = (double)grads[range_element(range_off, range_prefix, nranges, i)];
            acc += g * g;
        }
    }
    sm[tid] = acc;
    __syncthreads();
    for (u32 stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (tid < stride) sm[tid] = sm[tid] + sm[tid + stride];
        __syncthreads();
    }
    if (tid == 0) partial[slot + blockIdx.x] = sm[0];
}

// norm = sqrt(sum of the n partials, in order) as f32; coef = min(1, max_norm / (norm + 1e-6))
// (core::nn::optim::clip_coef); norm_log[k] = norm. Launch: one thread.
extern "C" __global__ void clip_finish(const double* __restrict__ partial, unsigned int n,
                                       float max_norm, float* __restrict__ norm_log,
                                       unsigned int k, float* __restrict__ coef) {
    if (global_thread_index() != 0) return;
    double sq = 0.0;
    for (unsigned int i = 0; i < n; ++i) sq += partial[i];
    const float norm = (float)sqrt(sq);
    const float cf = max_norm / (norm + 1e-6f);
    norm_log[k] = norm;
    *coef = min_ref(cf, 1.0f);
}
