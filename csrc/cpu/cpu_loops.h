// Threaded CPU loops over blocks.  Torch-free: pointers and sizes only.
#pragma once

#include <stdint.h>

namespace sqat::cpu {

// Quantize nrows x n_per_row floats (row-major) into packed rows.  imatrix: n_per_row
// floats or nullptr.  Returns -1 on success, otherwise the flat index of the first
// non-finite input value (the output is then incomplete and must be discarded).
// n_per_row must be a multiple of the type's block size (checked by the caller).
int64_t quantize_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                      uint8_t* y, int nthreads);

// Fake-quantize nrows x n_per_row floats: out receives what dequantize(quantize(x)) would give,
// without the packed bytes ever being stored.  Same return convention as quantize_rows.
int64_t fake_quant_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                        float* out, int nthreads);

// Clipped straight-through gradient: grad_out = grad where x is representable by its quantized block,
// 0 elsewhere (see sqat/clip.h).  x must be finite (it was checked by the forward pass).
void clipped_grad_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                       const float* grad, float* grad_out, int nthreads);

// Dequantize packed rows into nrows x n_per_row floats.
void dequantize_rows(int type, const uint8_t* y, int64_t nrows, int64_t n_per_row, float* x, int nthreads);

}  // namespace sqat::cpu

namespace sqat::cpu {

// Instruction-set variants of the loops above, all byte-identical: "scalar" (the baseline build),
// "avx2" (AVX2 + F16C) and "avx512" (AVX-512 F/BW/DQ/VL).  By default ("auto") the best one this CPU
// supports is used, per type (a few types run faster from AVX2 on AVX-512 CPUs); set_variant forces one
// for every type, or goes back to "auto".
const char* active_variant();
bool variant_supported(const char* name);   // compiled in and runnable on this CPU
bool set_variant(const char* name);         // "auto" or a variant; false (no change) if not supported

}  // namespace sqat::cpu
