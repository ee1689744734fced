// CUDA kernels: thin wrappers around the grid bodies of sqat/grid.h.  Built with
// --fmad=false and without fast-math so that every kernel reproduces the CPU bytes.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_ops.h"

namespace sqat::cuda {
namespace {

__device__ GridPos here() {
    return GridPos{static_cast<int64_t>(blockIdx.x), static_cast<int64_t>(threadIdx.x),
                   static_cast<int64_t>(blockDim.x), static_cast<int64_t>(gridDim.x)};
}

__global__ void row_sigma2_kernel(QuantizeArgs a, float* out) { row_sigma2_body(a, out, here()); }
__global__ void quantize_kernel(QuantizeArgs a) { quantize_body(a, here()); }
__global__ void dequantize_kernel(DequantizeArgs a) { dequantize_body(a, here()); }
__global__ void fake_quant_kernel(QuantizeArgs a, float* out) { fake_quant_body(a, out, here()); }
__global__ void clipped_grad_kernel(QuantizeArgs a, const float* grad, float* grad_out) {
    clipped_grad_body(a, grad, grad_out, here());
}

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string("sqat CUDA ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace

bool compiled() { return true; }

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver / no device" error
        return 0;
    }
    return n;
}

namespace {

// Launches the row-sigma2 pre-pass when the type's imatrix path needs it; returns the kernel arguments.
QuantizeArgs prepare(int type, uintptr_t x, int64_t nrows, int64_t n_per_row, uintptr_t imatrix,
                     uintptr_t sigma2_scratch, uintptr_t y, cudaStream_t s) {
    QuantizeArgs a{type, reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(imatrix), nullptr,
                   reinterpret_cast<uint8_t*>(y), nrows, n_per_row};
    if (a.imatrix != nullptr && uses_row_sigma2(type)) {
        const LaunchShape ls = launch_shape(nrows);
        auto* s2 = reinterpret_cast<float*>(sigma2_scratch);
        row_sigma2_kernel<<<static_cast<unsigned>(ls.grid), static_cast<unsigned>(ls.block), 0, s>>>(a, s2);
        check(cudaGetLastError(), "row_sigma2 launch");
        a.row_sigma2 = s2;
    }
    return a;
}

}  // namespace

void quantize(int type, uintptr_t x, int64_t nrows, int64_t n_per_row, uintptr_t imatrix,
              uintptr_t sigma2_scratch, uintptr_t y, uintptr_t stream) {
    auto s = reinterpret_cast<cudaStream_t>(stream);
    const QuantizeArgs a = prepare(type, x, nrows, n_per_row, imatrix, sigma2_scratch, y, s);
    const int64_t blocks = nrows * (n_per_row / geometry(type).block_size);
    if (blocks == 0) return;
    const LaunchShape ls = launch_shape(blocks);
    quantize_kernel<<<static_cast<unsigned>(ls.grid), static_cast<unsigned>(ls.block), 0, s>>>(a);
    check(cudaGetLastError(), "quantize launch");
}

void fake_quant(int type, uintptr_t x, int64_t nrows, int64_t n_per_row, uintptr_t imatrix,
                uintptr_t sigma2_scratch, uintptr_t out, uintptr_t stream) {
    auto s = reinterpret_cast<cudaStream_t>(stream);
    const QuantizeArgs a = prepare(type, x, nrows, n_per_row, imatrix, sigma2_scratch, 0, s);
    const int64_t blocks = nrows * (n_per_row / geometry(type).block_size);
    if (blocks == 0) return;
    const LaunchShape ls = launch_shape(blocks);
    fake_quant_kernel<<<static_cast<unsigned>(ls.grid), static_cast<unsigned>(ls.block), 0, s>>>(
        a, reinterpret_cast<float*>(out));
    check(cudaGetLastError(), "fake_quant launch");
}

void dequantize(int type, uintptr_t y, int64_t nrows, int64_t n_per_row, uintptr_t x, uintptr_t stream) {
    auto s = reinterpret_cast<cudaStream_t>(stream);
    DequantizeArgs a{type, reinterpret_cast<const uint8_t*>(y), reinterpret_cast<float*>(x), nrows, n_per_row};
    const int64_t blocks = nrows * (n_per_row / geometry(type).block_size);
    if (blocks == 0) return;
    const LaunchShape ls = launch_shape(blocks);
    dequantize_kernel<<<static_cast<unsigned>(ls.grid), static_cast<unsigned>(ls.block), 0, s>>>(a);
    check(cudaGetLastError(), "dequantize launch");
}

void clipped_grad(int type, uintptr_t x, int64_t nrows, int64_t n_per_row, uintptr_t imatrix,
                  uintptr_t sigma2_scratch, uintptr_t grad, uintptr_t grad_out, uintptr_t stream) {
    auto s = reinterpret_cast<cudaStream_t>(stream);
    const QuantizeArgs a = prepare(type, x, nrows, n_per_row, imatrix, sigma2_scratch, 0, s);
    const int64_t blocks = nrows * (n_per_row / geometry(type).block_size);
    if (blocks == 0) return;
    const LaunchShape ls = launch_shape(blocks);
    clipped_grad_kernel<<<static_cast<unsigned>(ls.grid), static_cast<unsigned>(ls.block), 0, s>>>(
        a, reinterpret_cast<const float*>(grad), reinterpret_cast<float*>(grad_out));
    check(cudaGetLastError(), "clipped_grad launch");
}

}  // namespace sqat::cuda
