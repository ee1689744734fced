// Index arithmetic and per-thread bodies of the quantize/dequantize grids.
//
// A CUDA kernel is a thin __global__ wrapper that calls one of the *_body functions
// below with its (blockIdx, threadIdx, blockDim, gridDim); the host grid emulator
// (csrc/cuda/emulate.cpp) calls the very same bodies in a loop over the whole grid,
// which is how the CUDA index arithmetic is tested on machines without a GPU.
// All indices are 64-bit: tensors may exceed 2^31 elements.
#pragma once

#include "sqat/clip.h"
#include "sqat/formats.h"

namespace sqat {

// Where block number `flat` (counted row-major over the whole tensor) lives.
struct BlockLocation {
    int64_t row;       // row index
    int64_t col;       // first column (value index inside the row)
    int64_t x_offset;  // offset of its first value in the float input
    int64_t y_offset;  // offset of its first byte in the packed output
};

SQAT_HD BlockLocation locate_block(int64_t flat, int64_t n_per_row, Geometry g) {
    const int64_t blocks_per_row = n_per_row / g.block_size;
    BlockLocation loc;
    loc.row = flat / blocks_per_row;
    const int64_t b = flat - loc.row * blocks_per_row;
    loc.col = b * g.block_size;
    loc.x_offset = loc.row * n_per_row + loc.col;
    loc.y_offset = loc.row * (blocks_per_row * g.type_size) + b * g.type_size;
    return loc;
}

struct QuantizeArgs {
    int type;
    const float* x;           // [nrows, n_per_row]
    const float* imatrix;     // [n_per_row] or nullptr
    const float* row_sigma2;  // [nrows], filled by row_sigma2_body when uses_row_sigma2(type) && imatrix
    uint8_t* y;               // [nrows, row_bytes]
    int64_t nrows;
    int64_t n_per_row;
};

struct DequantizeArgs {
    int type;
    const uint8_t* y;  // [nrows, row_bytes]
    float* x;          // [nrows, n_per_row]
    int64_t nrows;
    int64_t n_per_row;
};

// Grid-stride loop shared by every body: thread (block_idx, thread_idx) handles items
// first, first + stride, ... below `count`.
struct GridPos {
    int64_t block_idx, thread_idx, block_dim, grid_dim;
    SQAT_HD int64_t first() const { return block_idx * block_dim + thread_idx; }
    SQAT_HD int64_t stride() const { return block_dim * grid_dim; }
};

// One thread per row: Σx²/n of the row, sequential (the legacy imatrix quantizers need it).
SQAT_HD void row_sigma2_body(const QuantizeArgs& a, float* sigma2_out, GridPos p) {
    for (int64_t r = p.first(); r < a.nrows; r += p.stride()) {
        sigma2_out[r] = row_sigma2(a.x + r * a.n_per_row, a.n_per_row);
    }
}

// One thread per block.
SQAT_HD void quantize_body(const QuantizeArgs& a, GridPos p) {
    const Geometry g = geometry(a.type);
    const int64_t total = a.nrows * (a.n_per_row / g.block_size);
    const bool need_sigma2 = a.imatrix != nullptr && uses_row_sigma2(a.type);
    for (int64_t i = p.first(); i < total; i += p.stride()) {
        const BlockLocation loc = locate_block(i, a.n_per_row, g);
        const float* qw = a.imatrix ? a.imatrix + loc.col : nullptr;
        const float s2 = need_sigma2 ? a.row_sigma2[loc.row] : 0.0f;
        quantize_block(a.type, a.x + loc.x_offset, qw, s2, a.y + loc.y_offset);
    }
}

// One thread per block: quantize and dequantize in place of the block, writing floats to `out`
// ([nrows, n_per_row]); a.y is unused.
SQAT_HD void fake_quant_body(const QuantizeArgs& a, float* out, GridPos p) {
    const Geometry g = geometry(a.type);
    const int64_t total = a.nrows * (a.n_per_row / g.block_size);
    const bool need_sigma2 = a.imatrix != nullptr && uses_row_sigma2(a.type);
    for (int64_t i = p.first(); i < total; i += p.stride()) {
        const BlockLocation loc = locate_block(i, a.n_per_row, g);
        const float* qw = a.imatrix ? a.imatrix + loc.col : nullptr;
        const float s2 = need_sigma2 ? a.row_sigma2[loc.row] : 0.0f;
        fake_quant_block(a.type, a.x + loc.x_offset, qw, s2, out + loc.x_offset);
    }
}

// One thread per block: the clipped straight-through gradient (grad where a.x is representable, else 0).
SQAT_HD void clipped_grad_body(const QuantizeArgs& a, const float* grad, float* grad_out, GridPos p) {
    const Geometry g = geometry(a.type);
    const int64_t total = a.nrows * (a.n_per_row / g.block_size);
    const bool need_sigma2 = a.imatrix != nullptr && uses_row_sigma2(a.type);
    for (int64_t i = p.first(); i < total; i += p.stride()) {
        const BlockLocation loc = locate_block(i, a.n_per_row, g);
        const float* qw = a.imatrix ? a.imatrix + loc.col : nullptr;
        const float s2 = need_sigma2 ? a.row_sigma2[loc.row] : 0.0f;
        clipped_grad_block(a.type, a.x + loc.x_offset, qw, s2, grad + loc.x_offset, grad_out + loc.x_offset);
    }
}

SQAT_HD void dequantize_body(const DequantizeArgs& a, GridPos p) {
    const Geometry g = geometry(a.type);
    const int64_t total = a.nrows * (a.n_per_row / g.block_size);
    for (int64_t i = p.first(); i < total; i += p.stride()) {
        const BlockLocation loc = locate_block(i, a.n_per_row, g);
        dequantize_block(a.type, a.y + loc.y_offset, a.x + loc.x_offset);
    }
}

}  // namespace sqat

namespace sqat {

// Launch shape used by the CUDA launchers (and by default by the grid emulator).
struct LaunchShape {
    int64_t grid;
    int64_t block;
};

// Threads per CUDA block: the K-quant bodies keep ~1.5 KB of per-thread scratch, so
// blocks stay small; the grid is capped and the bodies' grid-stride loops cover the rest.
constexpr int64_t kThreadsPerBlock = 128;
constexpr int64_t kMaxGridBlocks = 65535;

SQAT_HD LaunchShape launch_shape(int64_t items) {
    int64_t grid = (items + kThreadsPerBlock - 1) / kThreadsPerBlock;
    if (grid < 1) grid = 1;
    if (grid > kMaxGridBlocks) grid = kMaxGridBlocks;
    return {grid, kThreadsPerBlock};
}

}  // namespace sqat
