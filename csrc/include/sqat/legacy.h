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

// Fast paths of the reference quantizers.  When the block scale d and its reciprocal id are both
// finite, every non-NaN x of the block has |x*id| within a few ulps of the format's level range: d is
// max/c (or (max - min)/c) rounded, either normal (relative error 2^-24) or at least 2^-128, since below
// that 1/d overflows to inf.  The quotients are then NaN (from a NaN x) or far inside the int range, so
// a plain conversion is defined and equals the x86 narrowing, except for NaN, which x86 narrows to 0.
// Blocks with an inf/NaN scale (a subnormal or infinite extreme) take the exact narrow_to_i8 path.

// narrow_to_i8 of a value known to be NaN or in [0, 256): a NaN narrows to 0 on x86.
SQAT_HD int trunc_nan0(float v) { return (int)(v > 0.0f ? v : 0.0f); }

// min(q[j], hi) over a block of bytes (a separate byte pass: it vectorises as a byte minimum).
SQAT_HD void clamp_levels(uint8_t* q, uint8_t hi) {
    for (int j = 0; j < QK32; ++j) q[j] = q[j] < hi ? q[j] : hi;
}

// C roundf (halves away from zero), spelled out so host libm and CUDA cannot differ.  Straight-line
// code with integer selects, so that a loop over a block vectorises even under -ftrapping-math: the
// conversion only ever sees an in-range value.
SQAT_HD float round_half_away(float v) {
    const uint32_t bits = f32_bits(v);
    const uint32_t abits = bits & 0x7fffffffu;
    const uint32_t small = abits < 0x4b000000u ? 0xffffffffu : 0u;  // |v| < 2^23, else integral/inf/NaN
    const float a = f32_from_bits(abits & small);                   // |v|, or 0 when not small
    float t = (float)(int)a;                                        // exact truncation below 2^23
    t += (float)(a - t >= 0.5f);                                    // a - t is exact
    const uint32_t r = f32_bits(t) | (bits & 0x80000000u);          // sign of v (as copysignf)
    return f32_from_bits((r & small) | (bits & ~small));
}

SQAT_HD bool is_finite(float v) { return (f32_bits(v) & 0x7f800000u) != 0x7f800000u; }

SQAT_HD bool any_nan(const float* x) {
    int nan = 0;
    for (int j = 0; j < QK32; ++j) nan |= (int)(x[j] != x[j]);
    return nan != 0;
}

// Upstream's strict scans `if (v < min) min = v; if (v > max) max = v;` from +/-FLT_MAX keep the first
// zero of a block when its extreme is zero: the sign that scan_min_max leaves unresolved.
SQAT_HD void resolve_zero_extremes(const float* x, float* min, float* max) {
    if (*min == 0.0f) *min = scan_first_zero(x, QK32);
    if (*max == 0.0f) *max = scan_first_zero(x, QK32);
}

// Largest |x| of a NaN-free block, as upstream's `amax = MAX(amax, fabsf(v))` scan from 0 computes it,
// from the block's scan_min_max from 0.
SQAT_HD float absmax_of(float min, float max) {
    const float amax = -min > max ? -min : max;
    return amax + 0.0f;  // an all-zero block gives +0
}

// Values j and j + 16 of a 32-block into one byte (low, high nibble), OR-ed unmasked as upstream does.
SQAT_HD void pack_nibbles(const uint8_t* q, uint8_t* qs) {
    uint8_t packed[16];  // local, then copied: see pack_q5
    for (int j = 0; j < 16; ++j) packed[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    memcpy(qs, packed, 16);
}

// The fast path of Q4_0 / Q4_1 straight to packed bytes: level j is trunc((x[j] - sub)*id + offset)
// (NaN -> 0) capped at 15, values j and j + 16 in one byte.  Both halves are formed in registers, so no
// 32-level array goes through the stack between the rounding and the packing.
template <bool kCap>
SQAT_HD void pack_q4_fast(const float* x, float sub, float id, float offset, uint8_t* qs) {
#if defined(SQAT_HOST_BYTE_SHUFFLE)
    // Eight values per vector: the level of j + 16 shifted onto that of j in one int32 lane (both below
    // 16), then byte 0 of every lane gathered by one byte shuffle.  Written as a scalar loop, the levels
    // went through byte conversions, masks and 64-bit moves: a third of Q4_1's time.  Capping the float
    // at 15 before the truncation gives min(trunc, 15), as trunc is monotone.
    sqat_v8i w[2];
    for (int k = 0; k < 2; ++k) {
        sqat_v8f lo, hi;
        memcpy(&lo, x + 8 * k, sizeof lo);
        memcpy(&hi, x + 16 + 8 * k, sizeof hi);
        const sqat_v8f zero = {}, cap = {15.0f, 15.0f, 15.0f, 15.0f, 15.0f, 15.0f, 15.0f, 15.0f};
        sqat_v8f a = (lo - sub) * id;  // product and sum: two roundings, as in the reference
        sqat_v8f b = (hi - sub) * id;
        a = a + offset;
        b = b + offset;
        a = a > zero ? a : zero;  // NaN -> 0
        b = b > zero ? b : zero;
        if (kCap) {
            a = a < cap ? a : cap;
            b = b < cap ? b : cap;
        }
        w[k] = __builtin_convertvector(a, sqat_v8i) | (__builtin_convertvector(b, sqat_v8i) << 4);
    }
    const sqat_v16u8 packed = __builtin_shufflevector((sqat_v32u8)w[0], (sqat_v32u8)w[1], 0, 4, 8, 12, 16, 20,
                                                      24, 28, 32, 36, 40, 44, 48, 52, 56, 60);
    memcpy(qs, &packed, sizeof packed);
#else
    uint8_t q[QK32];
    for (int j = 0; j < QK32; ++j) {
        const float a = (x[j] - sub) * id;  // product and sum: two roundings, as in the reference
        q[j] = (uint8_t)trunc_nan0(a + offset);
    }
    if (kCap) clamp_levels(q, 15);
    // Two nibbles per byte in 64-bit words: every level is below 16, so shifting a word by 4 moves
    // each byte's level into that byte's high nibble.
    for (int k = 0; k < 2; ++k) {
        const uint64_t w = load_u64_le(q + 8 * k) | (load_u64_le(q + 16 + 8 * k) << 4);
        store_u64_le(qs + 8 * k, w);
    }
#endif
}

// Importance weights of the legacy *_impl quantizers.
SQAT_HD void impl_weights(const float* x, const float* qw, float sigma2, float* w) {
    for (int j = 0; j < QK32; ++j) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

// Q5 layout: low nibbles like Q4_0, bit 4 of value j in bit j of a little-endian uint32.
SQAT_HD void pack_q5(const uint8_t* q, uint8_t* qh_out, uint8_t* qs) {
    // Built in a local array and copied out: written straight to qs, which could alias q as far as the
    // compiler knows, the loop stays scalar.  (q[j + 16] << 4 keeps only its low nibble in the byte.)
    uint8_t lo[16];
    for (int j = 0; j < 16; ++j) lo[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] << 4));
    memcpy(qs, lo, 16);
    // Eight bits at a time: bit 4 of eight bytes read as one little-endian word gives a 0/1 per byte,
    // then one multiply moves byte k's bit to bit 56 + k (the partial products land on distinct bits,
    // so nothing carries).
    for (int g = 0; g < 4; ++g) {
        const uint64_t t = (load_u64_le(q + 8 * g) >> 4) & 0x0101010101010101ull;
        qh_out[g] = (uint8_t)((t * 0x0102040810204080ull) >> 56);
    }
}

// Level j (< 16) and j + 16 of a Q5 block: the nibble of qs[j] and bit j or j + 16 of qh.
SQAT_HD int q5_low(const uint8_t* qs, uint32_t qh, int j) { return (qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4); }
SQAT_HD int q5_high(const uint8_t* qs, uint32_t qh, int j) {
    return (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
}

// The reference's `d ? 1/d : 0`, with the division done on an operand that cannot be zero, so that a
// loop over blocks turns into vector code (a division that may trap is not executed speculatively).  The
// choices are bit selects: as ternaries, GCC moved the division into branches and the loop stayed scalar.
SQAT_HD float inverse_scale(float d) {
    const uint32_t nonzero = 0u - (uint32_t)(d != 0.0f);
    const float r = 1.0f / select_bits(nonzero, d, 1.0f);
    return select_bits(nonzero, r, 0.0f);
}

// Q8_0's scale for a block that holds a NaN: upstream's MAX(amax, fabsf(v)) lets a NaN through (the
// next value then replaces it), so this one stays the sequential scan.
SQAT_HD float absmax_with_nan(const float* x) {
    float amax = 0.0f;
    for (int j = 0; j < QK32; ++j) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    return amax;
}

// The per-block scalar steps of the grouped quantizers, across G blocks.  Symmetric formats (Q4_0, Q5_0):
// d = max / kDiv from the first value of largest magnitude, its reciprocal and fp16 image.
template <int G, int kDiv>
SQAT_HD void symmetric_scales(const float* x, float* d, float* id, uint16_t* h) {
    float max[G];
    scan_signed_absmax_blocks<G, QK32>(x, max);
    SQAT_LANES for (int b = 0; b < G; ++b) {
        d[b] = max[b] / (float)kDiv;
        id[b] = inverse_scale(d[b]);
    }
    // A loop of its own: merged with the one above, neither gets vectorised.
    SQAT_LANES for (int b = 0; b < G; ++b) h[b] = fp32_to_fp16(d[b]);
}

// Offset formats (Q4_1, Q5_1): min and max by strict scans from +/-FLT_MAX (the minimum is not clamped to
// <= 0 here), d = (max - min) / kLevels, its reciprocal, and the fp16 images of d and min.
template <int G, int kLevels>
SQAT_HD void offset_scales(const float* x, float* min, float* d, float* id, uint16_t* hd, uint16_t* hm) {
    float max[G];
    scan_min_max_blocks<G, QK32>(x, 3.40282347e+38f, -3.40282347e+38f, min, max);
    for (int b = 0; b < G; ++b) resolve_zero_extremes(x + QK32 * b, &min[b], &max[b]);
    SQAT_LANES for (int b = 0; b < G; ++b) {
        d[b] = (max[b] - min[b]) / (float)kLevels;
        id[b] = inverse_scale(d[b]);
    }
    SQAT_LANES for (int b = 0; b < G; ++b) {  // apart, as in symmetric_scales
        hd[b] = fp32_to_fp16(d[b]);
        hm[b] = fp32_to_fp16(min[b]);
    }
}

}  // namespace legacy_detail

// Blocks without an importance matrix are quantized G at a time (quantize_blocks_*<G>: G consecutive
// blocks, G = 1 for a single one).  Each block runs the reference sequence; what is grouped is the
// per-block scalar work between the extreme-value scan and the level pass (scale, reciprocal, fp16),
// which then runs across blocks, lane b = block b, as vector code on the CPU.

// ---------------------------------------------------------------------------------------------------
// Q8_0: [d fp16][qs int8 x32]

namespace legacy_detail {

// Q8_0's per-block steps for G blocks: amax (NaN-aware), d = amax / 127, its reciprocal and fp16 image.
template <int G>
struct Q8_0Scales {
    float d[G], id[G];
    uint16_t h[G];
    bool nan[G];

    SQAT_HD explicit Q8_0Scales(const float* x) {
        float amax[G], min[G], max[G];
        scan_min_max_blocks<G, QK32>(x, 0.0f, 0.0f, min, max);
        for (int b = 0; b < G; ++b) {
            const float* xb = x + QK32 * b;
            nan[b] = any_nan(xb);
            amax[b] = nan[b] ? absmax_with_nan(xb) : absmax_of(min[b], max[b]);
        }
        SQAT_LANES for (int b = 0; b < G; ++b) {
            d[b] = amax[b] / 127.0f;
            id[b] = inverse_scale(d[b]);  // from the unrounded d
        }
        // A loop of its own: merged with the one above, neither gets vectorised.
        SQAT_LANES for (int b = 0; b < G; ++b) h[b] = fp32_to_fp16(d[b]);
    }
};

// The fast case of a Q8_0 block: no NaN and a finite scale and reciprocal, so every |x*id| <= 127 (to
// rounding) and the rounded values convert exactly, with no x86 emulation needed.
SQAT_HD bool q8_0_fast(bool nan, float d, float id) { return !nan && is_finite(d) && is_finite(id); }

// The int8 level of v = x*id outside the fast case: roundf, then x86's narrowing of the result.
SQAT_HD int q8_0_exact_level(float v) { return narrow_to_i8(round_half_away(v)); }

// Level of v = x*id in the fast case, as an integer-valued float: roundf (halves away from zero).  The
// + 0.0f turns a -0 into the +0 that the int8 level 0 decodes to.
SQAT_HD float q8_0_level(float v) {
    const float a = fabsf(v);
    float t = (float)(int)a;
    t += (float)(a - t >= 0.5f);
    return copysignf(t, v) + 0.0f;
}

}  // namespace legacy_detail

/// Quantize G consecutive 32-value blocks to Q8_0 (34 bytes each), as quantize_row_q8_0_ref.
template <int G>
SQAT_HD void quantize_blocks_q8_0(const float* x, uint8_t* y) {
    const legacy_detail::Q8_0Scales<G> sc(x);
    for (int b = 0; b < G; ++b) {
        const float* xb = x + QK32 * b;
        uint8_t* yb = y + 34 * b;
        store_u16(yb, sc.h[b]);
        if (legacy_detail::q8_0_fast(sc.nan[b], sc.d[b], sc.id[b])) {
            for (int j = 0; j < QK32; ++j) yb[2 + j] = (uint8_t)(int)legacy_detail::q8_0_level(xb[j] * sc.id[b]);
        } else {
            for (int j = 0; j < QK32; ++j) yb[2 + j] = (uint8_t)legacy_detail::q8_0_exact_level(xb[j] * sc.id[b]);
        }
    }
}

/// Quantize 32 values to Q8_0 (34 bytes); qw and row_sigma2 are ignored, as in ggml.
SQAT_HD void quantize_block_q8_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)qw;
    (void)row_sigma2;
    quantize_blocks_q8_0<1>(x, y);
}

/// Dequantize one Q8_0 block into 32 floats.
SQAT_HD void dequantize_block_q8_0(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const int8_t* q = reinterpret_cast<const int8_t*>(y + 2);
    for (int j = 0; j < QK32; ++j) x[j] = (float)q[j] * d;
}

/// dequantize(quantize(x)) for G consecutive Q8_0 blocks, fused: each level (a float equal to the int8 it
/// would be stored as) times the fp16-rounded scale, as the decoder computes it; no packed bytes.
template <int G>
SQAT_HD void fake_quant_blocks_q8_0(const float* x, float* SQAT_RESTRICT out) {
    const legacy_detail::Q8_0Scales<G> sc(x);
    for (int b = 0; b < G; ++b) {
        const float* xb = x + QK32 * b;
        float* ob = out + QK32 * b;
        const float dq = fp16_to_fp32(sc.h[b]);
        if (legacy_detail::q8_0_fast(sc.nan[b], sc.d[b], sc.id[b])) {
            for (int j = 0; j < QK32; ++j) ob[j] = legacy_detail::q8_0_level(xb[j] * sc.id[b]) * dq;
        } else {
            for (int j = 0; j < QK32; ++j) ob[j] = (float)legacy_detail::q8_0_exact_level(xb[j] * sc.id[b]) * dq;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Q4_0: [d fp16][qs x16], value j in the low nibble of qs[j % 16] (j < 16) or the high one.

/// Quantize G consecutive 32-value blocks to Q4_0 (18 bytes each), as quantize_row_q4_0_ref.
template <int G>
SQAT_HD void quantize_blocks_q4_0(const float* x, uint8_t* y) {
    float d[G], id[G];
    uint16_t h[G];
    legacy_detail::symmetric_scales<G, -8>(x, d, id, h);
    for (int b = 0; b < G; ++b) {
        const float* xb = x + QK32 * b;
        uint8_t* yb = y + 18 * b;
        store_u16(yb, h[b]);
        if (legacy_detail::is_finite(d[b]) && legacy_detail::is_finite(id[b])) {
            // |x*id| <= 8 (to rounding) for every non-NaN x, so x*id + 8.5 is NaN or in [0, 17); x - 0 is x.
            legacy_detail::pack_q4_fast<true>(xb, 0.0f, id[b], 8.5f, yb + 2);
            continue;
        }
        uint8_t q[QK32];
        for (int j = 0; j < QK32; ++j) {
            const float a = xb[j] * id[b];
            const int qa = legacy_detail::narrow_to_i8(a + 8.5f);
            q[j] = (uint8_t)(qa < 15 ? qa : 15);
        }
        legacy_detail::pack_nibbles(q, yb + 2);
    }
}

/// Quantize 32 values to Q4_0 (18 bytes): reference algorithm, or make_qx_quants with importance weights.
SQAT_HD void quantize_block_q4_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    if (qw == nullptr) {
        quantize_blocks_q4_0<1>(x, y);
        return;
    }
    uint8_t* qs = y + 2;
    float w[QK32];
    int8_t L[QK32];
    legacy_detail::impl_weights(x, qw, row_sigma2, w);
    const float d = make_qx_quants(QK32, 8, x, L, 1, w);
    store_u16(y, fp32_to_fp16(d));
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
}

/// Dequantize one Q4_0 block into 32 floats.
SQAT_HD void dequantize_block_q4_0(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const uint8_t* qs = y + 2;
    // One loop per nibble, each straight to the floats: an int array in between is stored in halves
    // and reloaded whole, which stalls store forwarding.
    SQAT_LANES
    for (int j = 0; j < 16; ++j) x[j] = (float)((qs[j] & 0x0f) - 8) * d;
    SQAT_LANES
    for (int j = 0; j < 16; ++j) x[j + 16] = (float)((qs[j] >> 4) - 8) * d;
}

// ---------------------------------------------------------------------------------------------------
// Q4_1: [d fp16][m fp16][qs x16], value = q*d + m.

/// Quantize G consecutive 32-value blocks to Q4_1 (20 bytes each), as quantize_row_q4_1_ref.
template <int G>
SQAT_HD void quantize_blocks_q4_1(const float* x, uint8_t* y) {
    float min[G], d[G], id[G];
    uint16_t hd[G], hm[G];
    legacy_detail::offset_scales<G, 15>(x, min, d, id, hd, hm);
    for (int b = 0; b < G; ++b) {
        const float* xb = x + QK32 * b;
        uint8_t* yb = y + 20 * b;
        store_u16(yb, hd[b]);
        store_u16(yb + 2, hm[b]);
        if (legacy_detail::is_finite(d[b]) && legacy_detail::is_finite(id[b])) {
            // 0 <= (x - min)*id <= 15 (to rounding) for every non-NaN x, so (x - min)*id + 0.5 is NaN or
            // in [0, 16): upstream's MIN(15, .) never bites.
            legacy_detail::pack_q4_fast<false>(xb, min[b], id[b], 0.5f, yb + 4);
            continue;
        }
        uint8_t q[QK32];
        for (int j = 0; j < QK32; ++j) {
            const float a = (xb[j] - min[b]) * id[b];
            const int qa = legacy_detail::narrow_to_i8(a + 0.5f);
            q[j] = (uint8_t)(qa < 15 ? qa : 15);
        }
        legacy_detail::pack_nibbles(q, yb + 4);
    }
}

/// Quantize 32 values to Q4_1 (20 bytes): reference min/max algorithm, or make_qkx3_quants with weights.
SQAT_HD void quantize_block_q4_1(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    if (qw == nullptr) {
        quantize_blocks_q4_1<1>(x, y);
        return;
    }
    uint8_t* qs = y + 4;
    float w[QK32];
    uint8_t L[QK32], Laux[QK32];
    legacy_detail::impl_weights(x, qw, row_sigma2, w);
    float the_min = 0.0f;
    const float d = make_qkx3_quants(QK32, 15, x, w, L, &the_min, Laux, -0.9f, 0.05f, 36, false);
    store_u16(y, fp32_to_fp16(d));
    store_u16(y + 2, fp32_to_fp16(-the_min));
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
}

/// Dequantize one Q4_1 block into 32 floats.
SQAT_HD void dequantize_block_q4_1(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const float m = fp16_to_fp32(load_u16(y + 2));
    const uint8_t* qs = y + 4;
    // Product and sum: two roundings, as upstream.  One loop per nibble, as for Q4_0.
    SQAT_LANES
    for (int j = 0; j < 16; ++j) {
        const float a = (float)(qs[j] & 0x0f) * d;
        x[j] = a + m;
    }
    SQAT_LANES
    for (int j = 0; j < 16; ++j) {
        const float a = (float)(qs[j] >> 4) * d;
        x[j + 16] = a + m;
    }
}

// ---------------------------------------------------------------------------------------------------
// Q5_0: [d fp16][qh u32][qs x16], value = (q - 16)*d.

/// Quantize G consecutive 32-value blocks to Q5_0 (22 bytes each), as quantize_row_q5_0_ref.
template <int G>
SQAT_HD void quantize_blocks_q5_0(const float* x, uint8_t* y) {
    float d[G], id[G];
    uint16_t h[G];
    legacy_detail::symmetric_scales<G, -16>(x, d, id, h);
    for (int b = 0; b < G; ++b) {
        const float* xb = x + QK32 * b;
        uint8_t* yb = y + 22 * b;
        uint8_t q[QK32];
        store_u16(yb, h[b]);
        if (legacy_detail::is_finite(d[b]) && legacy_detail::is_finite(id[b])) {
            // x*id + 16.5 is NaN or in [0, 33)
            for (int j = 0; j < QK32; ++j) {
                const float a = xb[j] * id[b];
                q[j] = (uint8_t)legacy_detail::trunc_nan0(a + 16.5f);
            }
            legacy_detail::clamp_levels(q, 31);
        } else {
            for (int j = 0; j < QK32; ++j) {
                const float a = xb[j] * id[b];
                const int qa = legacy_detail::narrow_to_i8(a + 16.5f);
                q[j] = (uint8_t)(qa < 31 ? qa : 31);
            }
        }
        legacy_detail::pack_q5(q, yb + 2, yb + 6);
    }
}

/// Quantize 32 values to Q5_0 (22 bytes): reference algorithm, or make_qx_quants with importance weights.
SQAT_HD void quantize_block_q5_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    if (qw == nullptr) {
        quantize_blocks_q5_0<1>(x, y);
        return;
    }
    uint8_t q[QK32];
    float w[QK32];
    int8_t L[QK32];
    legacy_detail::impl_weights(x, qw, row_sigma2, w);
    const float d = make_qx_quants(QK32, 16, x, L, 1, w);
    store_u16(y, fp32_to_fp16(d));
    for (int j = 0; j < QK32; ++j) q[j] = (uint8_t)L[j];
    legacy_detail::pack_q5(q, y + 2, y + 6);
}

/// Dequantize one Q5_0 block into 32 floats.
SQAT_HD void dequantize_block_q5_0(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const uint32_t qh = load_u32(y + 2);
    const uint8_t* qs = y + 6;
    SQAT_LANES
    for (int j = 0; j < 16; ++j) x[j] = (float)(legacy_detail::q5_low(qs, qh, j) - 16) * d;
    SQAT_LANES
    for (int j = 0; j < 16; ++j) x[j + 16] = (float)(legacy_detail::q5_high(qs, qh, j) - 16) * d;
}

// ---------------------------------------------------------------------------------------------------
// Q5_1: [d fp16][m fp16][qh u32][qs x16], value = q*d + m.

/// Quantize G consecutive 32-value blocks to Q5_1 (24 bytes each), as quantize_row_q5_1_ref.
template <int G>
SQAT_HD void quantize_blocks_q5_1(const float* x, uint8_t* y) {
    float min[G], d[G], id[G];
    uint16_t hd[G], hm[G];
    legacy_detail::offset_scales<G, 31>(x, min, d, id, hd, hm);
    for (int b = 0; b < G; ++b) {
        const float* xb = x + QK32 * b;
        uint8_t* yb = y + 24 * b;
        uint8_t q[QK32];
        store_u16(yb, hd[b]);
        store_u16(yb + 2, hm[b]);
        if (legacy_detail::is_finite(d[b]) && legacy_detail::is_finite(id[b])) {
            // No clamp in the reference: (x - min)*id + 0.5 is NaN or in [0, 32) here.
            for (int j = 0; j < QK32; ++j) {
                const float a = (xb[j] - min[b]) * id[b];
                q[j] = (uint8_t)legacy_detail::trunc_nan0(a + 0.5f);
            }
        } else {
            for (int j = 0; j < QK32; ++j) {
                const float a = (xb[j] - min[b]) * id[b];
                q[j] = (uint8_t)legacy_detail::narrow_to_i8(a + 0.5f);
            }
        }
        legacy_detail::pack_q5(q, yb + 4, yb + 8);
    }
}

/// Quantize 32 values to Q5_1 (24 bytes): reference min/max algorithm, or make_qkx3_quants with weights.
SQAT_HD void quantize_block_q5_1(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    if (qw == nullptr) {
        quantize_blocks_q5_1<1>(x, y);
        return;
    }
    uint8_t q[QK32];
    float w[QK32];
    uint8_t Laux[QK32];
    legacy_detail::impl_weights(x, qw, row_sigma2, w);
    float the_min = 0.0f;
    const float d = make_qkx3_quants(QK32, 31, x, w, q, &the_min, Laux, -0.9f, 0.05f, 36, false);
    store_u16(y, fp32_to_fp16(d));
    store_u16(y + 2, fp32_to_fp16(-the_min));
    legacy_detail::pack_q5(q, y + 4, y + 8);
}

/// Dequantize one Q5_1 block into 32 floats.
SQAT_HD void dequantize_block_q5_1(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const float m = fp16_to_fp32(load_u16(y + 2));
    const uint32_t qh = load_u32(y + 4);
    const uint8_t* qs = y + 8;
    SQAT_LANES
    for (int j = 0; j < 16; ++j) {
        const float a = (float)legacy_detail::q5_low(qs, qh, j) * d;
        x[j] = a + m;
    }
    SQAT_LANES
    for (int j = 0; j < 16; ++j) {
        const float a = (float)legacy_detail::q5_high(qs, qh, j) * d;
        x[j + 16] = a + m;
    }
}

}  // namespace sqat
