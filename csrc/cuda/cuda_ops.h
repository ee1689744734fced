// Host-side entry points of the CUDA kernels, plus the host grid emulator that runs
// the same kernel bodies on the CPU (always compiled, so it is tested without a GPU).
// Pointers travel as integers (torch's data_ptr(), a cudaStream_t as uintptr_t).
#pragma once

#include <stdint.h>

#include "sqat/grid.h"

namespace sqat::cuda {

// Whether this build contains the CUDA kernels.
bool compiled();
// Number of usable CUDA devices; 0 when the build has no CUDA, no driver or no GPU.
int device_count();

// All pointers are device pointers on the current device; `sigma2_scratch` holds nrows
// floats and is only touched for Q4_0/Q4_1/Q5_0/Q5_1 with an imatrix.  Throws
// std::runtime_error on a CUDA error.
void quantize(int type, uintptr_t x, int64_t nrows, int64_t n_per_row, uintptr_t imatrix,
              uintptr_t sigma2_scratch, uintptr_t y, uintptr_t stream);
void dequantize(int type, uintptr_t y, int64_t nrows, int64_t n_per_row, uintptr_t x, uintptr_t stream);
// grad_out = grad where x is representable by its quantized block, else 0 (all nrows x n_per_row).
void clipped_grad(int type, uintptr_t x, int64_t nrows, int64_t n_per_row, uintptr_t imatrix,
                  uintptr_t sigma2_scratch, uintptr_t grad, uintptr_t grad_out, uintptr_t stream);
// out: nrows x n_per_row floats receiving dequantize(quantize(x)).
void fake_quant(int type, uintptr_t x, int64_t nrows, int64_t n_per_row, uintptr_t imatrix,
                uintptr_t sigma2_scratch, uintptr_t out, uintptr_t stream);

// Runs the kernel bodies over a grid of `grid` x `block` threads on the host, in the
// order (block, thread); grid <= 0 means the launch shape the CUDA launcher would use.
void emulate_quantize(const QuantizeArgs& a, float* sigma2_scratch, int64_t grid, int64_t block);
void emulate_dequantize(const DequantizeArgs& a, int64_t grid, int64_t block);
void emulate_fake_quant(const QuantizeArgs& a, float* sigma2_scratch, float* out, int64_t grid, int64_t block);
void emulate_clipped_grad(const QuantizeArgs& a, float* sigma2_scratch, const float* grad, float* grad_out,
                          int64_t grid, int64_t block);

}  // namespace sqat::cuda
