// metarim kernel emulator: the runtime (fibers, launches, guarded allocations). Compiled into
// the same translation unit as emu.h, the kernels and their registrations (cuda/src/emu.rs
// writes that unit). Everything here is single-threaded per OS thread (thread_local state), so
// several test threads can emulate at once.
#include <ucontext.h>

#include <cstdlib>
#include <vector>

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace {

enum class FiberState { Ready, AtBarrier, Done };

struct Fiber {
    ucontext_t ctx;
    FiberState state;
    dim3 tid;
};

// Kernel entry of the current launch: a registration wrapper taking CUDA-style parameters.
typedef void (*EmuEntry)(void** params);

constexpr size_t STACK_BYTES = 256 * 1024;

struct Launch {
    EmuEntry entry = nullptr;
    void** params = nullptr;
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    std::vector<unsigned char> smem;
    size_t current = 0;
};

thread_local Launch* g_launch = nullptr;
// Fiber stacks, kept across launches (one per thread of the largest block seen).
thread_local std::vector<char*> g_stacks;
// 0: ascending thread order in every phase, 1: descending, 2: shuffled (xorshift, seeded).
thread_local int g_order = 0;
thread_local uint64_t g_seed = 0x9e3779b97f4a7c15ull;

void fiber_main() {
    Launch* l = g_launch;
    l->entry(l->params);
    l->fibers[l->current].state = FiberState::Done;
    // Returning resumes the scheduler through uc_link.
}

uint64_t next_random() {
    g_seed ^= g_seed << 13;
    g_seed ^= g_seed >> 7;
    g_seed ^= g_seed << 17;
    return g_seed;
}

constexpr size_t GUARD = 256;
constexpr unsigned char GUARD_BYTE = 0xA5;

}  // namespace

void emu_syncthreads() {
    Launch* l = g_launch;
    Fiber& f = l->fibers[l->current];
    f.state = FiberState::AtBarrier;
    swapcontext(&f.ctx, &l->scheduler);
}

void* emu_dyn_smem() {
    Launch* l = g_launch;
    return l->smem.empty() ? nullptr : l->smem.data();
}

extern "C" {

// Thread order of later launches on this OS thread (see g_order) and the shuffle seed.
void emu_set_order(int order, uint64_t seed) {
    g_order = order;
    g_seed = seed ? seed : 0x9e3779b97f4a7c15ull;
}

// Run `entry(params)` over a grid of blocks. Returns 0 on success, 1 for a divergent
// __syncthreads (some threads returned while others waited), 2 for a bad configuration.
int emu_launch(EmuEntry entry, unsigned int gx, unsigned int gy, unsigned int gz,
               unsigned int bx, unsigned int by, unsigned int bz, unsigned int smem_bytes,
               void** params) {
    if (!entry || gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) {
        return 2;
    }
    const size_t nthreads = (size_t)bx * by * bz;
    if (nthreads > 1024) {
        return 2;
    }
    Launch l;
    l.entry = entry;
    l.params = params;
    l.fibers.resize(nthreads);
    while (g_stacks.size() < nthreads) {
        char* s = (char*)std::malloc(STACK_BYTES);
        if (!s) return 2;
        g_stacks.push_back(s);
    }
    l.smem.resize(smem_bytes);
    Launch* saved = g_launch;
    g_launch = &l;
    gridDim = dim3{gx, gy, gz};
    blockDim = dim3{bx, by, bz};
    int status = 0;
    std::vector<size_t> order(nthreads);
    for (unsigned int z = 0; z < gz && status == 0; ++z) {
        for (unsigned int y = 0; y < gy && status == 0; ++y) {
            for (unsigned int x = 0; x < gx && status == 0; ++x) {
                blockIdx = dim3{x, y, z};
                if (smem_bytes) std::memset(l.smem.data(), 0xFF, smem_bytes);
                for (size_t i = 0; i < nthreads; ++i) {
                    Fiber& f = l.fibers[i];
                    f.state = FiberState::Ready;
                    f.tid = dim3{(unsigned int)(i % bx), (unsigned int)((i / bx) % by),
                                 (unsigned int)(i / ((size_t)bx * by))};
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = g_stacks[i];
                    f.ctx.uc_stack.ss_size = STACK_BYTES;
                    f.ctx.uc_link = &l.scheduler;
                    makecontext(&f.ctx, fiber_main, 0);
                }
                for (;;) {
                    for (size_t i = 0; i < nthreads; ++i) order[i] = i;
                    if (g_order == 1) {
                        for (size_t i = 0; i < nthreads; ++i) order[i] = nthreads - 1 - i;
                    } else if (g_order == 2) {
                        for (size_t i = nthreads; i > 1; --i) {
                            size_t j = (size_t)(next_random() % i);
                            size_t t = order[i - 1];
                            order[i - 1] = order[j];
                            order[j] = t;
                        }
                    }
                    for (size_t k = 0; k < nthreads; ++k) {
                        size_t i = order[k];
                        if (l.fibers[i].state != FiberState::Ready) continue;
                        l.current = i;
                        threadIdx = l.fibers[i].tid;
                        swapcontext(&l.scheduler, &l.fibers[i].ctx);
                    }
                    size_t done = 0, waiting = 0;
                    for (size_t i = 0; i < nthreads; ++i) {
                        if (l.fibers[i].state == FiberState::Done) ++done;
                        if (l.fibers[i].state == FiberState::AtBarrier) ++waiting;
                    }
                    if (done == nthreads) break;
                    if (done > 0 && waiting > 0) {
                        status = 1;
                        break;
                    }
                    for (size_t i = 0; i < nthreads; ++i) l.fibers[i].state = FiberState::Ready;
                }
            }
        }
    }
    g_launch = saved;
    return status;
}

// A buffer of `bytes` with GUARD bytes of a known pattern on each side, filled with 0xFF (NaN
// as f32) like uninitialised device memory. Returns the start of the usable part, or null.
void* emu_alloc(size_t bytes) {
    unsigned char* p = (unsigned char*)std::malloc(bytes + 2 * GUARD);
    if (!p) return nullptr;
    std::memset(p, GUARD_BYTE, GUARD);
    std::memset(p + GUARD, 0xFF, bytes);
    std::memset(p + GUARD + bytes, GUARD_BYTE, GUARD);
    return p + GUARD;
}

// 1 when both guards of a buffer from emu_alloc(bytes) are intact (no kernel wrote outside it).
int emu_guards_intact(void* ptr, size_t bytes) {
    unsigned char* p = (unsigned char*)ptr - GUARD;
    for (size_t i = 0; i < GUARD; ++i) {
        if (p[i] != GUARD_BYTE || p[GUARD + bytes + i] != GUARD_BYTE) return 0;
    }
    return 1;
}

void emu_free(void* ptr) {
    if (ptr) std::free((unsigned char*)ptr - GUARD);
}

}  // extern "C"

// Registration: `EMU_KERNEL(name)` defines `emu_entry_name(void** params)`, which calls the
// kernel `name` with its parameters unpacked from CUDA-style `params` (one pointer per
// parameter, as cuLaunchKernel takes them), and `emu_sig_name()`, the parameter types as text
// (one letter per parameter, see emu_type_code), which the Rust side checks against its own
// declaration of the entry point before every launch.
#include <utility>

template <typename T>
struct emu_type_code;
#define EMU_CODE(T, c) \
    template <>        \
    struct emu_type_code<T> { static constexpr char value = c; };
EMU_CODE(float*, 'F')
EMU_CODE(const float*, 'F')
EMU_CODE(double*, 'D')
EMU_CODE(const double*, 'D')
EMU_CODE(unsigned char*, 'B')
EMU_CODE(const unsigned char*, 'B')
EMU_CODE(unsigned short*, 'H')
EMU_CODE(const unsigned short*, 'H')
EMU_CODE(unsigned int*, 'W')
EMU_CODE(const unsigned int*, 'W')
EMU_CODE(int*, 'I')
EMU_CODE(const int*, 'I')
EMU_CODE(unsigned long long*, 'Q')
EMU_CODE(const unsigned long long*, 'Q')
EMU_CODE(float, 'f')
EMU_CODE(unsigned int, 'w')
EMU_CODE(int, 'i')
EMU_CODE(unsigned long long, 'q')
#undef EMU_CODE

template <typename... A, size_t... I>
void emu_call(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<A*>(p[I])...);
}

template <typename... A>
void emu_invoke(void (*f)(A...), void** p) {
    emu_call(f, p, std::index_sequence_for<A...>{});
}

template <typename... A>
const char* emu_signature(void (*)(A...)) {
    static const char sig[] = {emu_type_code<A>::value..., '\0'};
    return sig;
}

#define EMU_KERNEL(name)                                                        \
    extern "C" void emu_entry_##name(void** p) { emu_invoke(&name, p); }      \
    extern "C" const char* emu_sig_##name() { return emu_signature(&name); }
