// metarim kernel emulator: the CUDA C++ dialect of kernels/*.cu compiled as ordinary C++17 on the
// host, so the kernels' own code runs (and is checked against the CPU reference) on a machine
// without a GPU. See cuda/src/emu.rs for what this verifies and what it does not.
//
// Model of execution (a subset of CUDA's, the part the kernels may use):
// - Blocks of a grid run one after the other. The threads of a block are cooperative fibers
//   (ucontext): a thread runs until it reaches __syncthreads() or returns; once every thread has
//   reached the barrier (a "phase"), the next phase starts. Within a phase the threads run in an
//   order the test chooses (ascending, descending or shuffled), so a kernel whose result depends
//   on the order of threads between two barriers (a data race on the device) gives different
//   results under different orders, which the tests compare bit for bit.
// - A thread that returns while others wait at a barrier is reported (divergent __syncthreads).
// - Dynamic shared memory (the only shared memory kernels may use, through DYN_SMEM) is filled
//   with 0xFF bytes (NaN as f32) at the start of every block: reading it before writing shows up.
// - No warp-level primitives, no atomics, no static __shared__ (they fail to compile here).
#pragma once

#include <math.h>
#include <cstddef>
#include <cstdint>
#include <cstring>

struct dim3 {
    unsigned int x, y, z;
};

extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

// Suspend this thread until every thread of the block has reached the barrier.
void emu_syncthreads();
// The block's dynamic shared memory.
void* emu_dyn_smem();

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __syncthreads() emu_syncthreads()
// Static shared memory is not modelled: make any use a compile error.
#define __shared__ static_shared_memory_is_not_supported_by_the_emulator
#define METARIM_EMU 1
