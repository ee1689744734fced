// The 32-value "legacy" block formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.
//
// Without an importance matrix these follow ggml's quantize_row_*_ref; with one, Q4_0/Q4_1/Q5_0/Q5_1
// follow the per-row quantize_row_*_impl (weights qw*sqrt(sigma2 + x^2), sigma2 taken over the whole
// row and passed in), while Q8_0 ignores it, as ggml_quantize_chunk does.
#pragma once

#include "sqat/common.h"
#include "sqat/search.h"

namespace sqat {

namespace legacy_detail {

// ggml narrows floats straight to int8_t/uint8_t.  The reference bytes come from x86, where that is a
// truncating conversion to int32 (NaN, inf and out-of-range give INT32_MIN) followed by keeping the low
// byte.  In-range values never need this, but when a block's maximum is subnormal the reciprocal scale
// overflows to inf and the quotients become inf/NaN; spelling the x86 result out keeps every target
// (CUDA saturates instead) on the same bytes.  Returns the byte read as int8.
SQAT_HD int narrow_to_i8(float v) {
    // Out-of-range and NaN inputs are replaced by -2^31 *before* the conversion, so the conversion
    // itself is always defined and the whole thing stays a straight line the compiler can vectorise.
    const bool in_range = (v >= -2147483648.0f) & (v < 2147483648.0f);
    const int32_t i = (int32_t)(in_range ? v : -2147483648.0f);
    return (int)(int8_t)(uint8_t)((uint32_t)i & 0xffu);
}

// C roundf (halves away from zero), spelled out so host libm and CUDA cannot differ.
SQAT_HD float round_half_away(float v) {
    const float a = fabsf(v);
    if (!(a < 8388608.0f)) return v;                // already integral (or inf/NaN)
    float t = (float)(int)a;                        // exact truncation below 2^23
    t += (float)(a - t >= 0.5f);                    // a - t is exact; a select, not a branch
    return copysignf(t, v);
}

// First value of largest magnitude, sign kept (strict '<' scan, so ties keep the earliest index).
SQAT_HD float signed_absmax(const float* x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK32; ++j) {
        const float v = x[j];
        const bool larger = amax < fabsf(v);  // selects rather than a data-dependent branch
        amax = larger ? fabsf(v) : amax;
        max = larger ? v : max;
    }
    return max;
}

// Importance weights of the legacy *_impl quantizers.
SQAT_HD void impl_weights(const float* x, const float* qw, float sigma2, float* w) {
    for (int j = 0; j < QK32; ++j) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

// Q5 layout: low nibbles like Q4_0, bit 4 of value j in bit j of a little-endian uint32.
SQAT_HD void pack_q5(const uint8_t* q, uint8_t* qh_out, uint8_t* qs) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
        qh |= (uint32_t)((q[j] & 0x10u) >> 4) << j;
        qh |= (uint32_t)((q[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    store_u32(qh_out, qh);
}

SQAT_HD int q5_value(const uint8_t* qh_bytes, const uint8_t* qs, int j) {
    const uint32_t qh = load_u32(qh_bytes);
    const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
    return lo | (int)(((qh >> j) & 1u) << 4);
}

}  // namespace legacy_detail

// ---------------------------------------------------------------------------------------------------
// Q8_0: [d fp16][qs int8 x32]

/// Quantize 32 values to Q8_0 (34 bytes); qw and row_sigma2 are ignored, as in ggml.
SQAT_HD void quantize_block_q8_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)qw;
    (void)row_sigma2;
    float amax = 0.0f;
    for (int j = 0; j < QK32; ++j) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;  // from the unrounded d
    store_u16(y, fp32_to_fp16(d));
    for (int j = 0; j < QK32; ++j) {
        const float v = x[j] * id;
        y[2 + j] = (uint8_t)legacy_detail::narrow_to_i8(legacy_detail::round_half_away(v));
    }
}

/// Dequantize one Q8_0 block into 32 floats.
SQAT_HD void dequantize_block_q8_0(const uint8_t* y, float* x) {
    const float d = fp16_to_fp32(load_u16(y));
    for (int j = 0; j < QK32; ++j) x[j] = (float)(int8_t)y[2 + j] * d;
}

// ---------------------------------------------------------------------------------------------------
// Q4_0: [d fp16][qs x16], value j in the low nibble of qs[j % 16] (j < 16) or the high one.

/// Quantize 32 values to Q4_0 (18 bytes): reference algorithm, or make_qx_quants with importance weights.
SQAT_HD void quantize_block_q4_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    uint8_t* qs = y + 2;
    if (qw != nullptr) {
        float w[QK32];
        int8_t L[QK32];
        legacy_detail::impl_weights(x, qw, row_sigma2, w);
        const float d = make_qx_quants(QK32, 8, x, L, 1, w);
        store_u16(y, fp32_to_fp16(d));
        for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
        return;
    }
    const float max = legacy_detail::signed_absmax(x);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(y, fp32_to_fp16(d));
    for (int j = 0; j < 16; ++j) {
        // Product and the +8.5 offset are two separate roundings in the reference.
        const float a = x[j] * id;
        const float b = x[j + 16] * id;
        const float ao = a + 8.5f;
        const float bo = b + 8.5f;
        int qa = legacy_detail::narrow_to_i8(ao);
        int qb = legacy_detail::narrow_to_i8(bo);
        qa = qa < 15 ? qa : 15;
        qb = qb < 15 ? qb : 15;
        qs[j] = (uint8_t)((uint8_t)qa | (uint8_t)((uint8_t)qb << 4));
    }
}

/// Dequantize one Q4_0 block into 32 floats.
SQAT_HD void dequantize_block_q4_0(const uint8_t* y, float* x) {
    const float d = fp16_to_fp32(load_u16(y));
    const uint8_t* qs = y + 2;
    for (int j = 0; j < 16; ++j) {
        x[j] = (float)((qs[j] & 0x0f) - 8) * d;
        x[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

// ---------------------------------------------------------------------------------------------------
// Q4_1: [d fp16][m fp16][qs x16], value = q*d + m.

/// Quantize 32 values to Q4_1 (20 bytes): reference min/max algorithm, or make_qkx3_quants with weights.
SQAT_HD void quantize_block_q4_1(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    uint8_t* qs = y + 4;
    if (qw != nullptr) {
        float w[QK32];
        uint8_t L[QK32], Laux[QK32];
        legacy_detail::impl_weights(x, qw, row_sigma2, w);
        float the_min = 0.0f;
        const float d = make_qkx3_quants(QK32, 15, x, w, L, &the_min, Laux, -0.9f, 0.05f, 36, false);
        store_u16(y, fp32_to_fp16(d));
        store_u16(y + 2, fp32_to_fp16(-the_min));
        for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
        return;
    }
    // Plain strict scans from +/-FLT_MAX: the minimum is not clamped to <= 0 here.
    float min = 3.40282347e+38f, max = -3.40282347e+38f;
    for (int j = 0; j < QK32; ++j) {
        const float v = x[j];
        if (v < min) min = v;
        if (v > max) max = v;
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(y, fp32_to_fp16(d));
    store_u16(y + 2, fp32_to_fp16(min));
    for (int j = 0; j < 16; ++j) {
        const float a = (x[j] - min) * id;
        const float b = (x[j + 16] - min) * id;
        const float ao = a + 0.5f;
        const float bo = b + 0.5f;
        int qa = legacy_detail::narrow_to_i8(ao);
        int qb = legacy_detail::narrow_to_i8(bo);
        qa = qa < 15 ? qa : 15;
        qb = qb < 15 ? qb : 15;
        qs[j] = (uint8_t)((uint8_t)qa | (uint8_t)((uint8_t)qb << 4));
    }
}

/// Dequantize one Q4_1 block into 32 floats.
SQAT_HD void dequantize_block_q4_1(const uint8_t* y, float* x) {
    const float d = fp16_to_fp32(load_u16(y));
    const float m = fp16_to_fp32(load_u16(y + 2));
    const uint8_t* qs = y + 4;
    for (int j = 0; j < 16; ++j) {
        const float a = (float)(qs[j] & 0x0f) * d;
        const float b = (float)(qs[j] >> 4) * d;
        x[j] = a + m;
        x[j + 16] = b + m;
    }
}

// ---------------------------------------------------------------------------------------------------
// Q5_0: [d fp16][qh u32][qs x16], value = (q - 16)*d.

/// Quantize 32 values to Q5_0 (22 bytes): reference algorithm, or make_qx_quants with importance weights.
SQAT_HD void quantize_block_q5_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    uint8_t q[QK32];
    if (qw != nullptr) {
        float w[QK32];
        int8_t L[QK32];
        legacy_detail::impl_weights(x, qw, row_sigma2, w);
        const float d = make_qx_quants(QK32, 16, x, L, 1, w);
        store_u16(y, fp32_to_fp16(d));
        for (int j = 0; j < QK32; ++j) q[j] = (uint8_t)L[j];
    } else {
        const float max = legacy_detail::signed_absmax(x);
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(y, fp32_to_fp16(d));
        for (int j = 0; j < QK32; ++j) {
            const float a = x[j] * id;
            const float ao = a + 16.5f;
            const int qa = legacy_detail::narrow_to_i8(ao);
            q[j] = (uint8_t)(qa < 31 ? qa : 31);
        }
    }
    legacy_detail::pack_q5(q, y + 2, y + 6);
}

/// Dequantize one Q5_0 block into 32 floats.
SQAT_HD void dequantize_block_q5_0(const uint8_t* y, float* x) {
    const float d = fp16_to_fp32(load_u16(y));
    for (int j = 0; j < QK32; ++j) x[j] = (float)(legacy_detail::q5_value(y + 2, y + 6, j) - 16) * d;
}

// ---------------------------------------------------------------------------------------------------
// Q5_1: [d fp16][m fp16][qh u32][qs x16], value = q*d + m.

/// Quantize 32 values to Q5_1 (24 bytes): reference min/max algorithm, or make_qkx3_quants with weights.
SQAT_HD void quantize_block_q5_1(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    uint8_t q[QK32];
    if (qw != nullptr) {
        float w[QK32];
        uint8_t Laux[QK32];
        legacy_detail::impl_weights(x, qw, row_sigma2, w);
        float the_min = 0.0f;
        const float d = make_qkx3_quants(QK32, 31, x, w, q, &the_min, Laux, -0.9f, 0.05f, 36, false);
        store_u16(y, fp32_to_fp16(d));
        store_u16(y + 2, fp32_to_fp16(-the_min));
    } else {
        float min = 3.40282347e+38f, max = -3.40282347e+38f;
        for (int j = 0; j < QK32; ++j) {
            const float v = x[j];
            if (v < min) min = v;
            if (v > max) max = v;
        }
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(y, fp32_to_fp16(d));
        store_u16(y + 2, fp32_to_fp16(min));
        for (int j = 0; j < QK32; ++j) {
            // No clamp in the reference: (x - min)*id + 0.5 cannot exceed 31.5 for finite id.
            const float a = (x[j] - min) * id;
            const float ao = a + 0.5f;
            q[j] = (uint8_t)legacy_detail::narrow_to_i8(ao);
        }
    }
    legacy_detail::pack_q5(q, y + 4, y + 8);
}

/// Dequantize one Q5_1 block into 32 floats.
SQAT_HD void dequantize_block_q5_1(const uint8_t* y, float* x) {
    const float d = fp16_to_fp32(load_u16(y));
    const float m = fp16_to_fp32(load_u16(y + 2));
    for (int j = 0; j < QK32; ++j) {
        const float a = (float)legacy_detail::q5_value(y + 4, y + 8, j) * d;
        x[j] = a + m;
    }
}

}  // namespace sqat
