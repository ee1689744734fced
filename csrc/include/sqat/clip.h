// The clipped straight-through estimator's mask: which weights lie inside the range their block can
// represent.  "Can represent" means: within half a code step of the block's two extreme code values,
// i.e. exactly the weights that reach their code by rounding rather than by the format's clamp.
//
// The range is read off the quantized block itself, format-independently: overwrite every code of the
// packed block with the lowest code (then the next one, the highest, the one below it), dequantize, and
// compare.  Scales, mins and sub-block structure are left as quantized, so each value gets the range of
// its own (sub-)block.
#pragma once

#include "sqat/formats.h"

namespace sqat {

// Code range of a type's quantized values (the integer stored per value).
struct CodeRange {
    int lo, hi;
};

SQAT_HD CodeRange code_range(int type) {
    switch (type) {
        case kQ8_0: return {-128, 127};
        case kQ5_0: case kQ5_1: case kQ5_K: return {0, 31};
        case kQ6_K: return {0, 63};
        case kQ3_K: return {0, 7};               // level + 4, the third bit from hmask
        case kQ2_K: return {0, 3};
        case kTQ1_0: case kTQ2_0: return {0, 2};  // trit + 1 (TQ2_0's code 3 is never written)
        default: return {0, 15};  // 4-bit codes: Q4_0, Q4_1, IQ4_NL, Q4_K, IQ4_XS
    }
}

// The codes of the lowest value, the next one up, the highest value and the next one down.  For the
// integer formats the codes are ordered like their values; MXFP4/NVFP4 codes are sign + magnitude, so
// their extremes are -6 (code 15), -4 (14), +6 (7) and +4 (6) in E2M1 terms.
struct ProbeCodes {
    int code[4];
};

SQAT_HD ProbeCodes probe_codes(int type) {
    if (type == kMXFP4 || type == kNVFP4) return {{15, 14, 7, 6}};
    const CodeRange c = code_range(type);
    return {{c.lo, c.lo + 1, c.hi, c.hi - 1}};
}

// Writes `code` as the code of every value of a packed block, leaving scales and mins untouched.
SQAT_HD void set_all_codes(int type, uint8_t* y, int code) {
    const uint8_t nib = (uint8_t)((code & 15) | ((code & 15) << 4));
    const uint8_t hi_byte = (code & 16) ? 0xffu : 0x00u;
    switch (type) {
        case kQ8_0:
            for (int j = 0; j < 32; ++j) y[2 + j] = (uint8_t)(int8_t)code;
            break;
        case kQ4_0: case kIQ4_NL:
            for (int j = 0; j < 16; ++j) y[2 + j] = nib;
            break;
        case kQ4_1:
            for (int j = 0; j < 16; ++j) y[4 + j] = nib;
            break;
        case kQ5_0:
            for (int j = 0; j < 4; ++j) y[2 + j] = hi_byte;
            for (int j = 0; j < 16; ++j) y[6 + j] = nib;
            break;
        case kQ5_1:
            for (int j = 0; j < 4; ++j) y[4 + j] = hi_byte;
            for (int j = 0; j < 16; ++j) y[8 + j] = nib;
            break;
        case kQ4_K:
            for (int j = 0; j < 128; ++j) y[16 + j] = nib;
            break;
        case kQ5_K:
            for (int j = 0; j < 32; ++j) y[16 + j] = hi_byte;
            for (int j = 0; j < 128; ++j) y[48 + j] = nib;
            break;
        case kQ6_K: {
            const int h = (code >> 4) & 3;
            for (int j = 0; j < 128; ++j) y[j] = nib;
            for (int j = 0; j < 64; ++j) y[128 + j] = (uint8_t)(h | (h << 2) | (h << 4) | (h << 6));
            break;
        }
        case kIQ4_XS:
            for (int j = 0; j < 128; ++j) y[8 + j] = nib;
            break;
        case kQ2_K:
            for (int j = 0; j < 64; ++j) y[16 + j] = (uint8_t)(0x55 * (code & 3));
            break;
        case kQ3_K:
            for (int j = 0; j < 32; ++j) y[j] = (code & 4) ? 0xffu : 0x00u;
            for (int j = 0; j < 64; ++j) y[32 + j] = (uint8_t)(0x55 * (code & 3));
            break;
        case kTQ2_0:
            for (int j = 0; j < 64; ++j) y[j] = (uint8_t)(0x55 * (code & 3));
            break;
        case kTQ1_0: {
            // five equal trits c: c * (81 + 27 + 9 + 3 + 1); the four of a qh byte sit one trit up
            for (int j = 0; j < 48; ++j) y[j] = (uint8_t)((121 * code * 256 + 242) / 243);
            for (int j = 0; j < 4; ++j) y[48 + j] = (uint8_t)((120 * code * 256 + 242) / 243);
            break;
        }
        case kMXFP4:
            for (int j = 0; j < 16; ++j) y[1 + j] = nib;
            break;
        case kNVFP4:
            for (int j = 0; j < 32; ++j) y[4 + j] = nib;
            break;
        default: break;
    }
}

SQAT_HD bool has_codes(int type) { return !(type == kF32 || type == kF16 || type == kBF16); }

// grad_out[i] = grad[i] where x[i] is representable by its quantized block, else 0.  x, grad,
// grad_out: one block of values; the block is re-quantized here (nothing was saved from forward).
// Float types have no clamp: the gradient passes unchanged.
SQAT_HD void clipped_grad_block(int type, const float* x, const float* qw, float row_sigma2, const float* grad,
                                float* grad_out) {
    const Geometry g = geometry(type);
    if (!has_codes(type)) {
        for (int i = 0; i < g.block_size; ++i) grad_out[i] = grad[i];
        return;
    }
    uint8_t packed[kMaxTypeSize], probe[kMaxTypeSize];
    quantize_block(type, x, qw, row_sigma2, packed);
    const ProbeCodes codes = probe_codes(type);
    // Values at the lowest two and highest two codes, per position (sub-block scales differ).
    float v_lo[QK_K], v_lo1[QK_K], v_hi[QK_K], v_hi1[QK_K];
    float* outs[4] = {v_lo, v_lo1, v_hi, v_hi1};
    for (int k = 0; k < 4; ++k) {
        for (int b = 0; b < g.type_size; ++b) probe[b] = packed[b];
        set_all_codes(type, probe, codes.code[k]);
        dequantize_block(type, probe, outs[k]);
    }
    for (int i = 0; i < g.block_size; ++i) {
        // Extend each end by half the step to its neighbouring code; the scale's sign may flip the ends.
        const float end_lo = v_lo[i] - 0.5f * (v_lo1[i] - v_lo[i]);
        const float end_hi = v_hi[i] + 0.5f * (v_hi[i] - v_hi1[i]);
        const float lo = end_lo < end_hi ? end_lo : end_hi;
        const float hi = end_lo < end_hi ? end_hi : end_lo;
        grad_out[i] = (x[i] >= lo && x[i] <= hi) ? grad[i] : 0.0f;
    }
}

}  // namespace sqat
