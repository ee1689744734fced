// Format registry for the native core: per-type block geometry and dispatch to the
// per-block quantize/dequantize functions.  The CPU loops and the CUDA kernels go
// through these two switches, so a format is defined in exactly one place.
#pragma once

#include "sqat/common.h"
#include "sqat/legacy.h"
#include "sqat/iq4.h"
#include "sqat/kquants.h"
#include "sqat/fp4.h"
#include "sqat/kquants_lowbit.h"
#include "sqat/ternary.h"

namespace sqat {

// Largest block of any supported type, in bytes (Q6_K).
constexpr int kMaxTypeSize = 210;

struct Geometry {
    int block_size;  // values per block (1 for plain float types)
    int type_size;   // bytes per block
};

// Block geometry of a supported type; {0, 0} for an unsupported id.
SQAT_HD Geometry geometry(int type) {
    switch (type) {
        case kF32: return {1, 4};
        case kF16: return {1, 2};
        case kBF16: return {1, 2};
        case kQ8_0: return {32, 34};
        case kQ4_0: return {32, 18};
        case kQ4_1: return {32, 20};
        case kQ5_0: return {32, 22};
        case kQ5_1: return {32, 24};
        case kIQ4_NL: return {32, 18};
        case kQ4_K: return {256, 144};
        case kQ5_K: return {256, 176};
        case kQ6_K: return {256, 210};
        case kIQ4_XS: return {256, 136};
        case kQ2_K: return {256, 84};
        case kQ3_K: return {256, 110};
        case kTQ1_0: return {256, 54};
        case kTQ2_0: return {256, 66};
        case kMXFP4: return {32, 17};
        case kNVFP4: return {64, 36};
        default: return {0, 0};
    }
}

// True for the types whose imatrix path needs the whole-row Σx²/n (the legacy *_impl quantizers).
SQAT_HD bool uses_row_sigma2(int type) {
    return type == kQ4_0 || type == kQ4_1 || type == kQ5_0 || type == kQ5_1;
}

// Quantize one block: x holds block_size values, qw the block's importance weights or nullptr.
SQAT_HD void quantize_block(int type, const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    switch (type) {
        case kF32: memcpy(y, x, 4); break;
        case kF16: store_u16(y, fp32_to_fp16(x[0])); break;
        case kBF16: store_u16(y, fp32_to_bf16(x[0])); break;
        case kQ8_0: quantize_block_q8_0(x, qw, row_sigma2, y); break;
        case kQ4_0: quantize_block_q4_0(x, qw, row_sigma2, y); break;
        case kQ4_1: quantize_block_q4_1(x, qw, row_sigma2, y); break;
        case kQ5_0: quantize_block_q5_0(x, qw, row_sigma2, y); break;
        case kQ5_1: quantize_block_q5_1(x, qw, row_sigma2, y); break;
        case kIQ4_NL: quantize_block_iq4_nl(x, qw, row_sigma2, y); break;
        case kQ4_K: quantize_block_q4_K(x, qw, row_sigma2, y); break;
        case kQ5_K: quantize_block_q5_K(x, qw, row_sigma2, y); break;
        case kQ6_K: quantize_block_q6_K(x, qw, row_sigma2, y); break;
        case kIQ4_XS: quantize_block_iq4_xs(x, qw, row_sigma2, y); break;
        case kQ2_K: quantize_block_q2_K(x, qw, row_sigma2, y); break;
        case kQ3_K: quantize_block_q3_K(x, qw, row_sigma2, y); break;
        case kTQ1_0: quantize_block_tq1_0(x, qw, row_sigma2, y); break;
        case kTQ2_0: quantize_block_tq2_0(x, qw, row_sigma2, y); break;
        case kMXFP4: quantize_block_mxfp4(x, qw, row_sigma2, y); break;
        case kNVFP4: quantize_block_nvfp4(x, qw, row_sigma2, y); break;
        default: break;
    }
}

// Blocks per call of the grouped no-imatrix path (quantize_blocks<block_group(type)>), 1 for the types
// without one: eight legacy 32-value blocks (eight lanes, one AVX2 vector of floats for the per-block
// scalar steps), two Q4_K/Q5_K super-blocks (sixteen sub-block lanes in the scale search), two Q2_K/Q3_K
// super-blocks (32 lanes of 16 values: measured ~10% faster than one).
SQAT_HD constexpr int block_group(int type) {
    return type == kQ8_0 || type == kQ4_0 || type == kQ4_1 || type == kQ5_0 || type == kQ5_1 ? 8
           : type == kQ4_K || type == kQ5_K || type == kQ2_K || type == kQ3_K               ? 2
                                                                                          : 1;
}

// Quantize G consecutive blocks without an importance matrix: bytes equal to G quantize_block calls.
template <int G>
SQAT_HD void quantize_blocks(int type, const float* x, uint8_t* y) {
    switch (type) {
        case kQ8_0: quantize_blocks_q8_0<G>(x, y); return;
        case kQ4_0: quantize_blocks_q4_0<G>(x, y); return;
        case kQ4_1: quantize_blocks_q4_1<G>(x, y); return;
        case kQ5_0: quantize_blocks_q5_0<G>(x, y); return;
        case kQ5_1: quantize_blocks_q5_1<G>(x, y); return;
        case kQ4_K: quantize_blocks_q4_K<G>(x, y); return;
        case kQ5_K: quantize_blocks_q5_K<G>(x, y); return;
        case kQ2_K: quantize_q2_K_blocks<G>(x, nullptr, y); return;
        case kQ3_K: quantize_q3_K_blocks<G>(x, nullptr, y); return;
        default: {
            const Geometry g = geometry(type);
            for (int b = 0; b < G; ++b) quantize_block(type, x + b * g.block_size, nullptr, 0.0f, y + b * g.type_size);
        }
    }
}

// Dequantize one block into block_size floats.
SQAT_HD void dequantize_block(int type, const uint8_t* y, float* x) {
    switch (type) {
        case kF32: memcpy(x, y, 4); break;
        case kF16: x[0] = fp16_to_fp32(load_u16(y)); break;
        case kBF16: x[0] = bf16_to_fp32(load_u16(y)); break;
        case kQ8_0: dequantize_block_q8_0(y, x); break;
        case kQ4_0: dequantize_block_q4_0(y, x); break;
        case kQ4_1: dequantize_block_q4_1(y, x); break;
        case kQ5_0: dequantize_block_q5_0(y, x); break;
        case kQ5_1: dequantize_block_q5_1(y, x); break;
        case kIQ4_NL: dequantize_block_iq4_nl(y, x); break;
        case kQ4_K: dequantize_block_q4_K(y, x); break;
        case kQ5_K: dequantize_block_q5_K(y, x); break;
        case kQ6_K: dequantize_block_q6_K(y, x); break;
        case kIQ4_XS: dequantize_block_iq4_xs(y, x); break;
        case kQ2_K: dequantize_block_q2_K(y, x); break;
        case kQ3_K: dequantize_block_q3_K(y, x); break;
        case kTQ1_0: dequantize_block_tq1_0(y, x); break;
        case kTQ2_0: dequantize_block_tq2_0(y, x); break;
        case kMXFP4: dequantize_block_mxfp4(y, x); break;
        case kNVFP4: dequantize_block_nvfp4(y, x); break;
        default: break;
    }
}

// dequantize(quantize(x)) for G consecutive blocks without an importance matrix, into out (G * block
// size floats): fused for Q8_0, through a local copy of the packed bytes otherwise.
template <int G>
SQAT_HD void fake_quant_blocks(int type, const float* x, float* out) {
    if (type == kQ8_0) {
        fake_quant_blocks_q8_0<G>(x, out);
        return;
    }
    const Geometry g = geometry(type);
    uint8_t packed[G * kMaxTypeSize];
    quantize_blocks<G>(type, x, packed);
    for (int b = 0; b < G; ++b) dequantize_block(type, packed + b * g.type_size, out + b * g.block_size);
}

// Fake-quantize one block: the values llama.cpp would decode from this block's quantization.  The
// packed bytes live only in a local buffer (registers / stack), never in memory the caller sees.
SQAT_HD void fake_quant_block(int type, const float* x, const float* qw, float row_sigma2, float* out) {
    uint8_t packed[kMaxTypeSize];
    quantize_block(type, x, qw, row_sigma2, packed);
    dequantize_block(type, packed, out);
}

}  // namespace sqat
