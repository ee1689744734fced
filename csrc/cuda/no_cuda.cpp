// Stand-ins used when the package is built without CUDA (SQAT_CUDA=OFF or no nvcc).
#include <stdexcept>

#include "cuda_ops.h"

namespace sqat::cuda {

bool compiled() { return false; }
int device_count() { return 0; }

void quantize(int, uintptr_t, int64_t, int64_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t) {
    throw std::runtime_error("sqat_kernels was built without CUDA support");
}
void fake_quant(int, uintptr_t, int64_t, int64_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t) {
    throw std::runtime_error("sqat_kernels was built without CUDA support");
}
void clipped_grad(int, uintptr_t, int64_t, int64_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t) {
    throw std::runtime_error("sqat_kernels was built without CUDA support");
}
void dequantize(int, uintptr_t, int64_t, int64_t, uintptr_t, uintptr_t) {
    throw std::runtime_error("sqat_kernels was built without CUDA support");
}

}  // namespace sqat::cuda
