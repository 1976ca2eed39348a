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
// - Kernels are compiled by NVRTC without the CUDA headers: only builtins are used here.
//
// Numerics: kernels that must match the CPU reference bit for bit are compiled with
// `--fmad=false` (no a*b+c contraction), IEEE division and square root (NVRTC's defaults
// `--prec-div=true --prec-sqrt=true`) and no flush-to-zero (`--ftz=false`, the default).
#pragma once

typedef unsigned long long u64;

// Global index of this thread in a 1-D launch.
__device__ __forceinline__ u64 global_thread_index() {
    return (u64)blockIdx.x * (u64)blockDim.x + (u64)threadIdx.x;
}

// Stride of a grid-stride loop in a 1-D launch.
__device__ __forceinline__ u64 grid_stride() {
    return (u64)gridDim.x * (u64)blockDim.x;
}

// The buffer element of selected element `i` (0 <= i < range_prefix[nranges]): binary search for
// the last range r with range_prefix[r] <= i (empty ranges are skipped naturally), then
// range_off[r] + (i - range_prefix[r]).
__device__ __forceinline__ u64 range_element(const u64* range_off, const u64* range_prefix,
                                             unsigned int nranges, u64 i) {
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
    return range_off[lo] + (i - range_prefix[lo]);
}
