// Run-time choice among the instruction-set variants of the CPU loops (csrc/cpu/variant_*.cpp).
#include "cpu/cpu_loops.h"

#include <atomic>
#include <cstring>

#include "cpu/cpu_variants.h"

namespace sqat::cpu {
namespace {

struct Variant {
    const char* name;
    const Kernels* kernels;
    bool (*runnable)();
};

bool always() { return true; }

#if defined(SQAT_HAVE_X86_VARIANTS)
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"); }
bool has_avx512() {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#endif

// Best first.
const Variant kVariants[] = {
#if defined(SQAT_HAVE_X86_VARIANTS)
    {"avx512", &sqat_cpu_kernels_avx512, &has_avx512},
    {"avx2", &sqat_cpu_kernels_avx2, &has_avx2},
#endif
    {"scalar", &sqat_cpu_kernels_scalar, &always},
};

const Variant* find(const char* name) {
    for (const Variant& v : kVariants) {
        if (std::strcmp(v.name, name) == 0) return &v;
    }
    return nullptr;
}

const Variant* best() {
    for (const Variant& v : kVariants) {
        if (v.runnable()) return &v;
    }
    return &kVariants[sizeof(kVariants) / sizeof(kVariants[0]) - 1];
}

std::atomic<const Variant*> g_active{nullptr};
std::atomic<bool> g_forced{false};

const Variant& active() {
    const Variant* v = g_active.load(std::memory_order_acquire);
    if (v == nullptr) {
        v = best();
        g_active.store(v, std::memory_order_release);
    }
    return *v;
}

#if defined(SQAT_HAVE_X86_VARIANTS)
// Measured (bench/bench_quantize.py, Xeon with AVX-512): the 32-value legacy blocks and the BF16 stream
// run faster from the AVX2 build than from the AVX-512 one (narrower vectors fit the 32-value blocks,
// and no 512-bit frequency penalty on this memory-bound work), while the K-quants, IQ4 and F16 gain
// from AVX-512.  On AMD's AVX-512 (Zen 4: 512-bit operations as two 256-bit halves, clock unchanged)
// the legacy types gain too (C++, one thread, quantize and fake quant of 4M values: 1.05-1.16x), and
// BF16 does only in cache: on a 16 MB input whose output starts at the same offset in its page (as two
// large NumPy arrays do) it ran at 0.57-0.60x of AVX2.  Unless a variant was forced, the types below
// use AVX2 on an AVX-512 CPU.  Same bytes either way.
bool prefers_avx2(int type) {
    static const bool amd = __builtin_cpu_is("amd");
    switch (type) {
        case 2: case 3: case 6: case 7: case 8:  // Q4_0 Q4_1 Q5_0 Q5_1 Q8_0
            return !amd;
        case 30:  // BF16
            return true;
        default:
            return false;
    }
}
#endif

const Kernels& kernels_for(int type) {
    const Variant& v = active();
#if defined(SQAT_HAVE_X86_VARIANTS)
    if (v.kernels == &sqat_cpu_kernels_avx512 && !g_forced.load(std::memory_order_relaxed) &&
        prefers_avx2(type)) {
        return sqat_cpu_kernels_avx2;
    }
#else
    (void)type;
#endif
    return *v.kernels;
}

}  // namespace

const char* active_variant() { return active().name; }

bool variant_supported(const char* name) {
    const Variant* v = find(name);
    return v != nullptr && v->runnable();
}

bool set_variant(const char* name) {
    if (std::strcmp(name, "auto") == 0) {
        g_forced.store(false, std::memory_order_relaxed);
        g_active.store(best(), std::memory_order_release);
        return true;
    }
    const Variant* v = find(name);
    if (v == nullptr || !v->runnable()) return false;
    g_forced.store(true, std::memory_order_relaxed);
    g_active.store(v, std::memory_order_release);
    return true;
}

int64_t quantize_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                      uint8_t* y, int nthreads) {
    return kernels_for(type).quantize_rows(type, x, nrows, n_per_row, imatrix, y, nthreads);
}

int64_t fake_quant_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                        float* out, int nthreads) {
    return kernels_for(type).fake_quant_rows(type, x, nrows, n_per_row, imatrix, out, nthreads);
}

void clipped_grad_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                       const float* grad, float* grad_out, int nthreads) {
    kernels_for(type).clipped_grad_rows(type, x, nrows, n_per_row, imatrix, grad, grad_out, nthreads);
}

void dequantize_rows(int type, const uint8_t* y, int64_t nrows, int64_t n_per_row, float* x, int nthreads) {
    kernels_for(type).dequantize_rows(type, y, nrows, n_per_row, x, nthreads);
}

}  // namespace sqat::cpu
