// The float 4-bit formats MXFP4 (32 values, one E8M0 scale) and NVFP4 (64 values, four UE4M3 scales
// of 16 values each).
//
// Every value is an E2M1 code: bit 3 the sign, bits 0..2 one of the magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6.
// ggml keeps those magnitudes doubled (the integers 0, 1, 2, 3, 4, 6, 8, 12 of kvalues_fp4) and halves
// the decoded scale instead; so does this file.  Both follow ggml's quantize_row_{mxfp4,nvfp4}_ref, which
// is also what quantize_mxfp4 / quantize_nvfp4 run: neither uses an importance matrix (qw is ignored).
#pragma once

#include "sqat/common.h"
#include "sqat/search.h"

namespace sqat {

namespace fp4_detail {

// The code search below runs on 8-wide vectors of GCC's vector extension where AVX registers hold them; on
// the SSE2 baseline (register pairs) that measured 3x slower than the plain loops, which are kept there
// and on CUDA.
#if defined(SQAT_HOST_VECTORS) && defined(__AVX__)
#define SQAT_FP4_VECTORS 1
#endif

// Doubled E2M1 magnitude of code bits 0..2.
SQAT_HD float level(int i) {
    constexpr float v[8] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 6.0f, 8.0f, 12.0f};
    return v[i];
}

// Signed doubled value of a 4-bit code (ggml's kvalues_fp4; code 8 is a second +0).
SQAT_HD int value(int code) {
    constexpr int8_t v[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    return v[code];
}

// Largest |x| of N values (upstream: strict `amax < fabsf(v)` from 0).  A NaN-free max does not depend on
// the scan order, and its sign of zero does not matter to the callers (they only test amax > 0).
template <int N>
SQAT_HD float absmax(const float* x) {
    float mn, mx;
    scan_min_max<N>(x, 0.0f, 0.0f, &mn, &mx);
    return -mn > mx ? -mn : mx;
}

// ggml's best_index_mxfp4 for N values with scale d, into codes q[0..N).
//
// Upstream scans all 16 codes for the first one with the smallest |kvalues[i]*d - x| (f32, strict <).
// For x >= 0 the negative codes never win: their error |(-k)*d - x| rounds to at least |x|, the error of
// code 0, which comes first.  For x < 0 the positive codes lose the same way, code 8 (+0) only ties with
// code 0, and codes 9..15 have the errors of codes 1..7 for |x| (rounding is symmetric in sign).  So
// the scan runs over the eight magnitudes for |x| and the sign is added afterwards, except to a value
// that rounds to zero, which keeps code 0.  The products k*d and differences are the upstream ones.
// Lanes are values (each one's scan is independent): the loop over j vectorises.
template <int N>
SQAT_HD void best_codes(const float* x, float d, uint8_t* q) {
    float best[N];
    int32_t idx[N];
    SQAT_LANES for (int j = 0; j < N; ++j) {
        best[j] = fabsf(x[j]);  // code 0: |0*d - x|
        idx[j] = 0;
    }
    for (int i = 1; i < 8; ++i) {
        const float kd = level(i) * d;
        SQAT_LANES for (int j = 0; j < N; ++j) {
            const float err = fabsf(kd - fabsf(x[j]));
            // bit selects: written as ?:, GCC branched on every compare (unpredictable: 10x slower)
            const uint32_t take = 0u - (uint32_t)(err < best[j]);
            best[j] = select_bits(take, err, best[j]);
            idx[j] ^= (idx[j] ^ i) & (int32_t)take;
        }
    }
    SQAT_LANES for (int j = 0; j < N; ++j) {
        const int32_t negative = (int32_t)(f32_bits(x[j]) >> 31);  // a -0 has code 0 anyway
        q[j] = (uint8_t)(idx[j] | ((negative & (int32_t)(idx[j] != 0)) << 3));
    }
}

#if defined(SQAT_FP4_VECTORS)
// best_codes for the eight values at x, in one 8-wide vector of GCC's vector extension (the auto-vectoriser
// kept the loops above scalar: the table of levels and the sign step defeat it).  Same operations, lane by
// lane: |x| and |kd - |x|| by clearing the sign bit (as fabsf does), the strict compare, bit selects.
SQAT_HD void best_codes8(const float* x, float d, sqat_v8i& out) {
    sqat_v8f v;
    memcpy(&v, x, sizeof v);
    const sqat_v8i bits = (sqat_v8i)v;
    const sqat_v8i magnitude = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff,
                                0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    const sqat_v8f a = (sqat_v8f)(bits & magnitude);
    sqat_v8f best = a;  // code 0: |0*d - x|
    sqat_v8i idx = {};
    for (int i = 1; i < 8; ++i) {
        const float kd = level(i) * d;
        const sqat_v8f err = (sqat_v8f)((sqat_v8i)(kd - a) & magnitude);
        const sqat_v8i take = err < best;
        best = (sqat_v8f)(((sqat_v8i)err & take) | ((sqat_v8i)best & ~take));
        idx = (take & i) | (idx & ~take);
    }
    const sqat_v8i zero = {};
    // negative x (sign bit set; a -0 has code 0 anyway) moves a non-zero magnitude to codes 9..15
    out = idx | ((bits < zero) & (idx != zero) & 8);
}
#endif

// MXFP4's 16 code bytes for the 32 values at x: qs[j] = code j | code j+16 << 4.
SQAT_HD void mxfp4_pack_codes(const float* x, float d, uint8_t* qs) {
#if defined(SQAT_FP4_VECTORS)
    sqat_v8i c[4];
    for (int k = 0; k < 4; ++k) best_codes8(x + 8 * k, d, c[k]);
    const sqat_v8i w0 = c[0] | (c[2] << 4), w1 = c[1] | (c[3] << 4);  // codes < 16: one byte per lane
#if defined(SQAT_HOST_BYTE_SHUFFLE)
    const sqat_v16u8 packed = __builtin_shufflevector((sqat_v32u8)w0, (sqat_v32u8)w1, 0, 4, 8, 12, 16, 20, 24,
                                                      28, 32, 36, 40, 44, 48, 52, 56, 60);
    memcpy(qs, &packed, sizeof packed);
#else
    for (int j = 0; j < 8; ++j) {
        qs[j] = (uint8_t)w0[j];
        qs[8 + j] = (uint8_t)w1[j];
    }
#endif
#else
    uint8_t q[QK32];
    best_codes<QK32>(x, d, q);
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
#endif
}

// NVFP4's 8 code bytes for the 16 values of a sub-block at x: qs[j] = code j | code j+8 << 4.
SQAT_HD void nvfp4_pack_codes(const float* x, float d, uint8_t* qs) {
#if defined(SQAT_FP4_VECTORS)
    sqat_v8i c[2];
    best_codes8(x, d, c[0]);
    best_codes8(x + 8, d, c[1]);
    const sqat_v8i w = c[0] | (c[1] << 4);
#if defined(SQAT_HOST_BYTE_SHUFFLE)
    typedef uint8_t v8u8 __attribute__((vector_size(8)));
    const v8u8 packed = __builtin_shufflevector((sqat_v32u8)w, (sqat_v32u8)w, 0, 4, 8, 12, 16, 20, 24, 28);
    memcpy(qs, &packed, sizeof packed);
#else
    for (int j = 0; j < 8; ++j) qs[j] = (uint8_t)w[j];
#endif
#else
    uint8_t q[16];
    best_codes<16>(x, d, q);
    for (int j = 0; j < 8; ++j) qs[j] = (uint8_t)(q[j] | (q[j + 8] << 4));
#endif
}

}  // namespace fp4_detail

// ---------------------------------------------------------------------------------------------------
// Scale encodings.

/// ggml_e8m0_to_fp32_half: 2^(e - 128) (a subnormal for e < 2), exactly.
SQAT_HD float e8m0_to_fp32_half(uint8_t e) {
    return f32_from_bits(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

/// MXFP4's E8M0 byte for a block whose largest |x| is amax (finite, >= 0): upstream's
/// (uint8_t)(floorf(log2f(amax)) - 2 + 127), 0 for amax == 0.
///
/// Only the side of an integer on which log2f's f32 result lands matters.  That is the exponent of amax,
/// except just below a power of two, where the f32 rounding of the logarithm reaches the next integer
/// (at most the 44 largest mantissas of a normal exponent, and some subnormals).  Those rare cases take
/// f32 rounding of a double logarithm, which equals glibc's log2f there: checked over every positive
/// float32 (and libm's or CUDA's double log2 is accurate far beyond the margin involved), and it keeps
/// CUDA's own log2f out of it.  The int32 conversion then keeps its low byte, as x86 does: blocks below
/// 2^-125 wrap to 232..255.
SQAT_HD uint8_t mxfp4_exponent(float amax) {
    if (!(amax > 0.0f)) return 0;
    const uint32_t bits = f32_bits(amax);
    const uint32_t biased = bits >> 23;  // amax > 0: no sign bit
    int fl;
    if (biased != 0 && (bits & 0x7fffffu) < 0x7fffc0u) {
        fl = (int)biased - 127;
    } else {
        fl = (int)floorf((float)log2((double)amax));
    }
    return (uint8_t)((uint32_t)(fl - 2 + 127) & 0xffu);
}

/// ggml_ue4m3_to_fp32: half the value of an unsigned E4M3 byte (exponent bits 3..6, bias 7; mantissa bits
/// 0..2).  0 and 0x7F give 0; bit 7 is ignored (so 0xFF is exponent 15, mantissa 7: 240).  Exact:
/// man * 2^-10 for exponent 0, else (8 + man) * 2^(exp - 11).
SQAT_HD float ue4m3_to_fp32(uint8_t b) {
    if (b == 0 || b == 0x7f) return 0.0f;
    const int exp = (b >> 3) & 0xf, man = b & 7;
    if (exp == 0) return (float)man * 0x1p-10f;
    return (float)(8 + man) * f32_from_bits((uint32_t)(exp - 11 + 127) << 23);
}

/// ggml_fp32_to_ue4m3 for finite x.  Non-positive -> 0; capped at 448; below 2^-6 the mantissa is the f32
/// (int)(x * 512 + 0.5f) capped at 7 (so [7.5, 8) * 2^-9 stays subnormal); above, the top three mantissa
/// bits rounded by the fourth (ties away, sticky bits ignored); any exponent >= 15 (x >= 256, or a
/// rounding past 240) gives 0x7E, i.e. 448.
SQAT_HD uint8_t fp32_to_ue4m3(float x) {
    if (!(x > 0.0f)) return 0;
    if (x > 448.0f) x = 448.0f;
    const uint32_t bits = f32_bits(x);
    int exp = (int)((bits >> 23) & 0xffu) - 127 + 7;
    if (exp <= 0) {
        int man = (int)(x * 512.0f + 0.5f);  // a product and a sum: two roundings, as upstream
        man = man > 7 ? 7 : man;
        return man < 1 ? (uint8_t)0 : (uint8_t)man;
    }
    if (exp >= 15) return 0x7e;
    int man = (int)((bits >> 20) & 7u) + (int)((bits >> 19) & 1u);
    if (man > 7) {
        man = 0;
        if (++exp >= 15) return 0x7e;
    }
    return (uint8_t)((exp << 3) | man);
}

// ---------------------------------------------------------------------------------------------------
// MXFP4: [e E8M0][qs x16], qs[j] = code j | code j+16 << 4, value = kvalues_fp4[q] * 2^(e - 128).

/// Quantize 32 values to MXFP4 (17 bytes).  qw and row_sigma2 are ignored (ggml uses no imatrix here).
SQAT_HD void quantize_block_mxfp4(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)qw;
    (void)row_sigma2;
    const uint8_t e = mxfp4_exponent(fp4_detail::absmax<QK32>(x));
    y[0] = e;
    fp4_detail::mxfp4_pack_codes(x, e8m0_to_fp32_half(e), y + 1);
}

/// Dequantize one MXFP4 block into 32 floats.
SQAT_HD void dequantize_block_mxfp4(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = e8m0_to_fp32_half(y[0]);
    const uint8_t* qs = y + 1;
    int v[QK32];  // lookups first, then one product loop (as the IQ4_NL decoder)
    for (int j = 0; j < 16; ++j) v[j] = fp4_detail::value(qs[j] & 0x0f);
    for (int j = 0; j < 16; ++j) v[j + 16] = fp4_detail::value(qs[j] >> 4);
    for (int j = 0; j < QK32; ++j) x[j] = (float)v[j] * d;
}

// ---------------------------------------------------------------------------------------------------
// NVFP4: [d x4 UE4M3][qs x32]; sub-block s (16 values) has scale d[s] and bytes qs[8s .. 8s+8),
// qs[8s + j] = code 16s+j | code 16s+8+j << 4, value = kvalues_fp4[q] * ue4m3_to_fp32(d[s]).

constexpr int QK_NVFP4 = 64;
constexpr int QK_NVFP4_SUB = 16;

/// Quantize 64 values to NVFP4 (36 bytes).  qw and row_sigma2 are ignored (ggml uses no imatrix here).
SQAT_HD void quantize_block_nvfp4(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)qw;
    (void)row_sigma2;
    for (int s = 0; s < QK_NVFP4 / QK_NVFP4_SUB; ++s) {
        const float* xs = x + QK_NVFP4_SUB * s;
        const uint8_t ue = fp32_to_ue4m3(fp4_detail::absmax<QK_NVFP4_SUB>(xs) / 6.0f);
        y[s] = ue;
        fp4_detail::nvfp4_pack_codes(xs, ue4m3_to_fp32(ue), y + 4 + 8 * s);
    }
}

/// Dequantize one NVFP4 block into 64 floats.
SQAT_HD void dequantize_block_nvfp4(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const uint8_t* qs = y + 4;
    int v[QK_NVFP4];
    for (int s = 0; s < 4; ++s) {
        for (int j = 0; j < 8; ++j) v[16 * s + j] = fp4_detail::value(qs[8 * s + j] & 0x0f);
        for (int j = 0; j < 8; ++j) v[16 * s + 8 + j] = fp4_detail::value(qs[8 * s + j] >> 4);
    }
    for (int s = 0; s < 4; ++s) {
        const float d = ue4m3_to_fp32(y[s]);
        for (int j = 0; j < QK_NVFP4_SUB; ++j) x[16 * s + j] = (float)v[16 * s + j] * d;
    }
}

}  // namespace sqat
