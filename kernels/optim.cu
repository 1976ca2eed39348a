// metarim kernels: optimiser updates over a list of (offset, len) ranges of one parameter group.
//
// `adam_ranges` is `core::nn::optim::Adam::update_ranges_at` for S = f32, element for element:
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
// `sgd_ranges` is `core::nn::optim::Sgd::step_ranges`: p = p + neg_lr * g.
//
// Launch: 1-D, any grid; a grid-stride loop covers range_prefix[nranges] selected elements.
#include "common.cuh"

extern "C" __global__ void adam_ranges(float* __restrict__ params,
                                       const float* __restrict__ grads,
                                       float* __restrict__ m,
                                       float* __restrict__ v,
                                       const u64* __restrict__ range_off,
                                       const u64* __restrict__ range_prefix,
                                       unsigned int nranges,
                                       float neg_step, float bc2_sqrt, float w1, float b2,
                                       float w2, float eps) {
    if (nranges == 0) {
        return;
    }
    const u64 total = range_prefix[nranges];
    for (u64 i = global_thread_index(); i < total; i += grid_stride()) {
        const u64 e = range_element(range_off, range_prefix, nranges, i);
        const float g = grads[e];
        float mi = m[e];
        mi = mi + w1 * (g - mi);
        const float vi = b2 * v[e] + w2 * g * g;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[e] = mi;
        v[e] = vi;
        params[e] = params[e] + neg_step * mi / denom;
    }
}

extern "C" __global__ void sgd_ranges(float* __restrict__ params,
                                      const float* __restrict__ grads,
                                      const u64* __restrict__ range_off,
                                      const u64* __restrict__ range_prefix,
                                      unsigned int nranges,
                                      float neg_lr) {
    if (nranges == 0) {
        return;
    }
    const u64 total = range_prefix[nranges];
    for (u64 i = global_thread_index(); i < total; i += grid_stride()) {
        const u64 e = range_element(range_off, range_prefix, nranges, i);
        params[e] = params[e] + neg_lr * grads[e];
    }
}
