// The ternary formats TQ1_0 (54 bytes) and TQ2_0 (66 bytes): 256 values per block, each -1, 0 or +1 times
// one fp16 scale.
//
// Both follow ggml's quantize_row_tq{1,2}_0_ref, which is also what quantize_tq1_0 / quantize_tq2_0 run:
// neither uses an importance matrix (qw and row_sigma2 are ignored).  The two formats quantize identically
// (same scale, same trits) and differ only in how the trits are packed:
//
//   scale:  d = amax, the largest |x| of the block (no division by a level count: the levels are -1, 0, 1);
//   trit:   lroundf(x * id) with id = 1/d (0 for d == 0), stored as t + 1 in 0..2.
//
// Byte layouts (little-endian fp16):
//   TQ2_0 66 B: qs[64] | d.   In each 128-value half h, byte 32h + m holds value 128h + 32n + m in bits 2n..2n+1.
//   TQ1_0 54 B: qs[48] | qh[4] | d.  Five trits per byte as a base-3 number (first value most significant),
//               scaled to a byte by ceil(q * 256 / 243) so that a decoder can peel trits off with a
//               multiply by 3 and a shift:
//                 qs[m], m < 32:       values m + 32n        (n = 0..4: values 0..159)
//                 qs[32 + m], m < 16:  values 160 + m + 16n  (n = 0..4: values 160..239)
//                 qh[j], j < 4:        values 240 + j + 4n   (n = 0..3) and a fifth trit 0 (value 240..255)
#pragma once

#include "sqat/common.h"
#include "sqat/search.h"

namespace sqat {

constexpr int kTQ1Bytes = 54;
constexpr int kTQ2Bytes = 66;

namespace ternary_detail {

// Largest |x| of the block, +0 for an all-zero block (upstream: amax = MAX(amax, fabsf(v)) from 0, which
// never yields -0; neither does this scan, whose min and max start at +0).  Finite input: the order of the
// scan does not matter.
SQAT_HD float absmax256(const float* x) {
    float mn, mx;
    scan_min_max<QK_K>(x, 0.0f, 0.0f, &mn, &mx);
    return -mn > mx ? -mn : mx;
}

// lroundf(v) + 1 for v = x * id, as upstream computes it, for the only values v can take: |v| < 1.5
// (|x| <= amax and id is 1/amax rounded, so v rounds to at most 1 + 2^-22), or inf / NaN when 1/amax
// overflowed (amax below 2^-128: then x*id is inf, or NaN for x == 0).  lroundf rounds halves away from
// zero; for inf and NaN glibc returns LONG_MIN, and LONG_MIN + 1 stored into an int keeps its low word, 1,
// i.e. the trit 0.  Written with comparisons only (NaN compares false), so the loops over values vectorise.
SQAT_HD int trit_code(float v) {
    const bool finite = fabsf(v) <= 3.40282347e38f;
    const int up = (int)(v >= 0.5f) & (int)finite;
    const int down = (int)(v <= -0.5f) & (int)finite;
    return 1 + up - down;
}

// Scale of one block and the trit codes (0..2) of its 256 values; returns d (before fp16 storage).
SQAT_HD float trit_codes(const float* x, uint8_t* code) {
    const float d = absmax256(x);
    // upstream's `d ? 1.0f/d : 0.0f`: a division only where d != 0 (select, not a branch)
    const float safe = d != 0.0f ? d : 1.0f;
    const float inv = 1.0f / safe;
    const float id = d != 0.0f ? inv : 0.0f;
    SQAT_LANES for (int j = 0; j < QK_K; ++j) code[j] = (uint8_t)trit_code(x[j] * id);
    return d;
}

// ceil(q * 256 / 243): a base-3 number of five trits (q <= 242) as a byte.
SQAT_HD uint8_t trits_to_byte(int q) { return (uint8_t)((q * 256 + 242) / 243); }

// Trit n (0 = most significant) of a TQ1_0 byte: (byte * 3^n mod 256) * 3 >> 8, minus 1.
SQAT_HD int byte_trit(uint8_t b, int n) {
    constexpr uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const uint8_t q = (uint8_t)(b * pow3[n]);
    return (int)(((uint16_t)q * 3) >> 8) - 1;
}

}  // namespace ternary_detail

/// Quantizes 256 floats to one 66-byte TQ2_0 block (qw, row_sigma2: ignored, as by ggml).
SQAT_HD void quantize_block_tq2_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)qw;
    (void)row_sigma2;
    uint8_t c[QK_K];
    const float d = ternary_detail::trit_codes(x, c);
    for (int h = 0; h < 2; ++h) {
        const uint8_t* ch = c + 128 * h;
        SQAT_LANES for (int m = 0; m < 32; ++m) {
            y[32 * h + m] = (uint8_t)(ch[m] | (ch[m + 32] << 2) | (ch[m + 64] << 4) | (ch[m + 96] << 6));
        }
    }
    store_u16(y + 64, fp32_to_fp16(d));
}

/// Quantizes 256 floats to one 54-byte TQ1_0 block (qw, row_sigma2: ignored, as by ggml).
SQAT_HD void quantize_block_tq1_0(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)qw;
    (void)row_sigma2;
    using ternary_detail::trits_to_byte;
    uint8_t c[QK_K];
    const float d = ternary_detail::trit_codes(x, c);
    SQAT_LANES for (int m = 0; m < 32; ++m) {
        const int q = (((c[m] * 3 + c[m + 32]) * 3 + c[m + 64]) * 3 + c[m + 96]) * 3 + c[m + 128];
        y[m] = trits_to_byte(q);
    }
    const uint8_t* c2 = c + 160;
    SQAT_LANES for (int m = 0; m < 16; ++m) {
        const int q = (((c2[m] * 3 + c2[m + 16]) * 3 + c2[m + 32]) * 3 + c2[m + 48]) * 3 + c2[m + 64];
        y[32 + m] = trits_to_byte(q);
    }
    const uint8_t* c3 = c + 240;
    for (int j = 0; j < 4; ++j) {
        // four trits, then shifted up by one trit (a fifth, zero trit in the least significant place)
        const int q = (((c3[j] * 3 + c3[j + 4]) * 3 + c3[j + 8]) * 3 + c3[j + 12]) * 3;
        y[48 + j] = trits_to_byte(q);
    }
    store_u16(y + 52, fp32_to_fp16(d));
}

/// Decodes one TQ2_0 block to 256 floats: (float)(q - 1) * d, as dequantize_row_tq2_0 (q = 3 gives 2d).
SQAT_HD void dequantize_block_tq2_0(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y + 64));
    for (int h = 0; h < 2; ++h) {
        for (int n = 0; n < 4; ++n) {
            SQAT_LANES for (int m = 0; m < 32; ++m) {
                const int q = (y[32 * h + m] >> (2 * n)) & 3;
                x[128 * h + 32 * n + m] = (float)(q - 1) * d;
            }
        }
    }
}

/// Decodes one TQ1_0 block to 256 floats: (float)trit * d, as dequantize_row_tq1_0.
SQAT_HD void dequantize_block_tq1_0(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    using ternary_detail::byte_trit;
    const float d = fp16_to_fp32(load_u16(y + 52));
    for (int n = 0; n < 5; ++n) {
        SQAT_LANES for (int m = 0; m < 32; ++m) x[32 * n + m] = (float)byte_trit(y[m], n) * d;
    }
    for (int n = 0; n < 5; ++n) {
        SQAT_LANES for (int m = 0; m < 16; ++m) x[160 + 16 * n + m] = (float)byte_trit(y[32 + m], n) * d;
    }
    for (int n = 0; n < 4; ++n) {
        for (int j = 0; j < 4; ++j) x[240 + 4 * n + j] = (float)byte_trit(y[48 + j], n) * d;
    }
}

}  // namespace sqat
