#include "cuda_ops.h"

namespace sqat::cuda {
namespace {

template <class Body>
void run_grid(int64_t items, int64_t grid, int64_t block, Body&& body) {
    if (grid <= 0 || block <= 0) {
        const LaunchShape s = launch_shape(items);
        grid = s.grid;
        block = s.block;
    }
    for (int64_t b = 0; b < grid; ++b)
        for (int64_t t = 0; t < block; ++t) body(GridPos{b, t, block, grid});
}

// The row-sigma2 pre-pass, as the launchers run it before the main kernel.
QuantizeArgs with_row_sigma2(const QuantizeArgs& a_in, float* sigma2_scratch, int64_t grid, int64_t block) {
    QuantizeArgs a = a_in;
    if (a.imatrix != nullptr && uses_row_sigma2(a.type)) {
        run_grid(a.nrows, grid, block, [&](GridPos p) { row_sigma2_body(a, sigma2_scratch, p); });
        a.row_sigma2 = sigma2_scratch;
    }
    return a;
}

}  // namespace

void emulate_quantize(const QuantizeArgs& a_in, float* sigma2_scratch, int64_t grid, int64_t block) {
    const QuantizeArgs a = with_row_sigma2(a_in, sigma2_scratch, grid, block);
    const int64_t blocks = a.nrows * (a.n_per_row / geometry(a.type).block_size);
    run_grid(blocks, grid, block, [&](GridPos p) { quantize_body(a, p); });
}

void emulate_fake_quant(const QuantizeArgs& a_in, float* sigma2_scratch, float* out, int64_t grid, int64_t block) {
    const QuantizeArgs a = with_row_sigma2(a_in, sigma2_scratch, grid, block);
    const int64_t blocks = a.nrows * (a.n_per_row / geometry(a.type).block_size);
    run_grid(blocks, grid, block, [&](GridPos p) { fake_quant_body(a, out, p); });
}

void emulate_dequantize(const DequantizeArgs& a, int64_t grid, int64_t block) {
    const int64_t blocks = a.nrows * (a.n_per_row / geometry(a.type).block_size);
    run_grid(blocks, grid, block, [&](GridPos p) { dequantize_body(a, p); });
}

void emulate_clipped_grad(const QuantizeArgs& a_in, float* sigma2_scratch, const float* grad, float* grad_out,
                          int64_t grid, int64_t block) {
    const QuantizeArgs a = with_row_sigma2(a_in, sigma2_scratch, grid, block);
    const int64_t blocks = a.nrows * (a.n_per_row / geometry(a.type).block_size);
    run_grid(blocks, grid, block, [&](GridPos p) { clipped_grad_body(a, grad, grad_out, p); });
}

}  // namespace sqat::cuda
