// The per-instruction-set builds of the CPU loops and the table the dispatcher picks from.
#pragma once

#include <stdint.h>

namespace sqat::cpu {

struct Kernels {
    int64_t (*quantize_rows)(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                             uint8_t* y, int nthreads);
    int64_t (*fake_quant_rows)(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                               float* out, int nthreads);
    void (*clipped_grad_rows)(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                              const float* grad, float* grad_out, int nthreads);
    void (*dequantize_rows)(int type, const uint8_t* y, int64_t nrows, int64_t n_per_row, float* x, int nthreads);
};

}  // namespace sqat::cpu

// One table per variant, defined in variant_<name>.cpp (the AVX ones only on x86-64 builds).
extern const sqat::cpu::Kernels sqat_cpu_kernels_scalar;
extern const sqat::cpu::Kernels sqat_cpu_kernels_avx2;
extern const sqat::cpu::Kernels sqat_cpu_kernels_avx512;
