// Q2_K and Q3_K: one 256-value super-block of 16 sub-blocks of 16 values per call (or B consecutive
// super-blocks for the grouped no-imatrix path).
//
// qw == nullptr selects what ggml_quantize_chunk runs without an importance matrix
// (quantize_row_q{2,3}_K_ref), qw != nullptr the imatrix algorithm (quantize_row_q{2,3}_K_impl).  The two
// search differently, not just with other weights:
//
//   Q2_K ref:  per 16 values make_qkx2_quants(nmax 3, weights |x|, -0.5, 0.1, 15 trials, absolute error);
//              4-bit sub-scales and sub-mins by plain rounding against the largest (15/max).
//   Q2_K impl: weights qw * sqrt(Σx²/256 + x²) (note: no factor 2, unlike Q3_K/Q4_K), make_qkx3_quants
//              (-0.9, 0.05, 36 trials, squared error), the 4-bit sub-scales and sub-mins from
//              make_qp_quants(nmax 15) weighted by each sub-block's Σw.
//   Q3_K ref:  per 16 values make_q3_quants (weights x², coordinate descent on the levels); 6-bit signed
//              sub-scales by plain rounding against the first scale of largest magnitude (-32/max).
//   Q3_K impl: weights qw * sqrt(2·Σx²/256 + x²), make_qx_quants(nmax 4, rmse_type 1) per sub-block, and the
//              6-bit sub-scales from make_qx_quants(nmax 32) over the 16 scales weighted by Σw.
//
// Both then re-quantize every value against the stored fp16 super-scale(s) and sub-scales (a true
// division), except in sub-blocks whose decoded step is zero: those keep the levels of the search.
// row_sigma2 is unused (the sigma2 above is per super-block).
//
// Byte layouts (little-endian fp16):
//   Q2_K 84 B:  scales[16] (low nibble: scale, high nibble: min) | qs[64] | d | dmin
//   Q3_K 110 B: hmask[32] | qs[64] | scales[12] (16 six-bit values) | d
// qs (both): value 128h + 32k + l (h = 0..1, k = 0..3, l = 0..31) in bits 2k..2k+1 of qs[32h + l].
// Q3_K's third bit of value v is bit v/32 of hmask[v % 32]; its level is (q | bit << 2) - 4.
#pragma once

#include "sqat/common.h"
#include "sqat/search.h"

namespace sqat {

constexpr int kQ2KBytes = 84;
constexpr int kQ3KBytes = 110;

namespace lowbit_detail {

// Packs levels 0..3 of one super-block into its 64 qs bytes.
SQAT_HD void pack_2bit(const uint8_t* L, uint8_t* qs) {
    for (int h = 0; h < 2; ++h) {
        const uint8_t* Lh = L + 128 * h;
        SQAT_LANES for (int l = 0; l < 32; ++l) {
            qs[32 * h + l] = (uint8_t)(Lh[l] | (Lh[l + 32] << 2) | (Lh[l + 64] << 4) | (Lh[l + 96] << 6));
        }
    }
}

// Sub-block j's 6-bit Q3_K scale (0..63, meaning value - 32) from the 12 scale bytes.
SQAT_HD int q3_scale(const uint8_t* s, int j) {
    const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    return lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}

// Packs 16 six-bit values (0..63) into Q3_K's 12 scale bytes: low nibbles of 0..7 and 8..15 in bytes 0..7
// (low, high nibble), the top two bits of value j at bits 2(j/4) of byte 8 + j%4.
SQAT_HD void q3_pack_scales(const int* l6, uint8_t* s) {
    for (int k = 0; k < 12; ++k) s[k] = 0;
    for (int j = 0; j < 16; ++j) {
        const int l = l6[j];
        if (j < 8) {
            s[j] = (uint8_t)(l & 0xF);
        } else {
            s[j - 8] = (uint8_t)(s[j - 8] | ((l & 0xF) << 4));
        }
        s[8 + j % 4] = (uint8_t)(s[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
    }
}

// Weights qw * sqrt(sigma2 + x²) of one super-block, transposed (value l of sub-block j at wt[16*l + j]),
// with sigma2 = factor·Σx²/256 (Σ sequential over the block), and each sub-block's Σw (from 0, in order).
SQAT_HD void imatrix_weights(const float* x, const float* qw, float factor, float* wt, float* sw) {
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
    const float sigma2 = factor * sum_x2 / (float)QK_K;
    for (int l = 0; l < 16; ++l) {
        SQAT_LANES for (int j = 0; j < 16; ++j) {
            const float v = x[16 * j + l];
            wt[16 * l + j] = qw[16 * j + l] * sqrtf(sigma2 + v * v);
        }
    }
    for (int j = 0; j < 16; ++j) sw[j] = 0;
    for (int l = 0; l < 16; ++l) {
        SQAT_LANES for (int j = 0; j < 16; ++j) sw[j] += wt[16 * l + j];
    }
}

}  // namespace lowbit_detail

// ---------------------------------------------------------------------------------------------------
// Q2_K

/// Quantizes B consecutive super-blocks to Q2_K (84 bytes each); qw (imatrix values of the block's columns)
/// only with B == 1.  The 16·B sub-block searches run side by side (make_qkx_quants_lanes).
template <int B>
SQAT_HD void quantize_q2_K_blocks(const float* x, const float* qw, uint8_t* y) {
    constexpr int G = 16 * B;
    float xt[QK_K * B], wt[QK_K * B], scales[G], mins[G], sw[16];
    uint8_t Lt[QK_K * B], L[QK_K * B];
    for (int l = 0; l < 16; ++l) {
        SQAT_LANES for (int j = 0; j < G; ++j) xt[G * l + j] = x[16 * j + l];
    }
    if (qw == nullptr) {
        for (int k = 0; k < QK_K * B; ++k) wt[k] = fabsf(xt[k]);
        make_qkx_quants_lanes<16, G>(3, xt, wt, Lt, scales, mins, -0.5f, 0.1f, 15, true);
    } else {
        lowbit_detail::imatrix_weights(x, qw, 1.0f, wt, sw);
        make_qkx_quants_lanes<16, G>(3, xt, wt, Lt, scales, mins, -0.9f, 0.05f, 36, false);
    }
    for (int l = 0; l < 16; ++l) {
        for (int j = 0; j < G; ++j) L[16 * j + l] = Lt[G * l + j];
    }
    for (int b = 0; b < B; ++b) {
        uint8_t* yb = y + kQ2KBytes * b;
        const float* sb = scales + 16 * b;
        const float* mb = mins + 16 * b;
        uint8_t* sc = yb;
        float d, dmin;
        if (qw == nullptr) {
            float max_scale = 0, max_min = 0;
            for (int j = 0; j < 16; ++j) {
                if (sb[j] > max_scale) max_scale = sb[j];
                if (mb[j] > max_min) max_min = mb[j];
            }
            // Levels are stored unclamped into the uint8 fields (they cannot exceed 15 for finite input).
            if (max_scale > 0) {
                const float iscale = 15.f / max_scale;
                for (int j = 0; j < 16; ++j) sc[j] = (uint8_t)nearest_int(iscale * sb[j]);
                d = max_scale / 15.f;
            } else {
                for (int j = 0; j < 16; ++j) sc[j] = 0;
                d = 0.f;
            }
            if (max_min > 0) {
                const float iscale = 15.f / max_min;
                // (unsigned: upstream's `l << 4` of an int keeps the same low byte)
                for (int j = 0; j < 16; ++j) sc[j] = (uint8_t)(sc[j] | ((uint32_t)nearest_int(iscale * mb[j]) << 4));
                dmin = max_min / 15.f;
            } else {
                dmin = 0.f;
            }
        } else {
            uint8_t ls[16], lm[16];
            d = make_qp_quants(16, 15, sb, ls, sw);
            dmin = make_qp_quants(16, 15, mb, lm, sw);
            for (int j = 0; j < 16; ++j) sc[j] = (uint8_t)(ls[j] | (lm[j] << 4));
        }
        store_u16(yb + 80, fp32_to_fp16(d));
        store_u16(yb + 82, fp32_to_fp16(dmin));
        const float d_all = fp16_to_fp32(load_u16(yb + 80));
        const float m_all = fp16_to_fp32(load_u16(yb + 82));
        const float* xb = x + QK_K * b;
        uint8_t* Lb = L + QK_K * b;
        for (int j = 0; j < 16; ++j) {
            const float dj = d_all * (float)(sc[j] & 0xF);
            // A zero step keeps the search's levels.
            if (dj == 0.0f) continue;
            const float dm = m_all * (float)(sc[j] >> 4);
            SQAT_LANES for (int ii = 0; ii < 16; ++ii) {
                Lb[16 * j + ii] = (uint8_t)qkx_level((xb[16 * j + ii] + dm) / dj, 3);
            }
        }
        lowbit_detail::pack_2bit(Lb, yb + 16);
    }
}

/// Quantizes 256 floats to one 84-byte Q2_K block (reference algorithm if qw is null, imatrix otherwise).
SQAT_HD void quantize_block_q2_K(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)row_sigma2;
    quantize_q2_K_blocks<1>(x, qw, y);
}

/// Decodes one Q2_K block to 256 floats: (d·sc)·q - (dmin·m), as dequantize_row_q2_K.
SQAT_HD void dequantize_block_q2_K(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y + 80));
    const float dmin = fp16_to_fp32(load_u16(y + 82));
    const uint8_t* qs = y + 16;
    for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
            for (int half = 0; half < 2; ++half) {
                const int j = 8 * h + 2 * k + half;  // sub-block of values 128h + 32k + 16·half ...
                const float dl = d * (float)(y[j] & 0xF);
                const float ml = dmin * (float)(y[j] >> 4);
                const uint8_t* q = qs + 32 * h + 16 * half;
                float* xo = x + 128 * h + 32 * k + 16 * half;
                SQAT_LANES for (int l = 0; l < 16; ++l) xo[l] = dl * (float)((q[l] >> (2 * k)) & 3) - ml;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Q3_K

/// Quantizes B consecutive super-blocks to Q3_K (110 bytes each); qw only with B == 1.
template <int B>
SQAT_HD void quantize_q3_K_blocks(const float* x, const float* qw, uint8_t* y) {
    constexpr int G = 16 * B;
    float xt[QK_K * B], group_max[G], scales[G], iscales[G];
    uint8_t Lt[QK_K * B];
    for (int j = 0; j < G; ++j) group_max[j] = scan_signed_absmax<16>(x + 16 * j);
    for (int l = 0; l < 16; ++l) {
        SQAT_LANES for (int j = 0; j < G; ++j) xt[G * l + j] = x[16 * j + l];
    }
    float sw[16];
    if (qw == nullptr) {
        make_q3_quants_lanes<16, G>(4, group_max, xt, scales, Lt);
    } else {
        float wt[QK_K];
        lowbit_detail::imatrix_weights(x, qw, 2.0f, wt, sw);
        make_qx_quants_lanes<16, G>(4, group_max, xt, wt, scales, iscales);
    }
    for (int b = 0; b < B; ++b) {
        uint8_t* yb = y + kQ3KBytes * b;
        const float* sb = scales + 16 * b;
        uint8_t* s = yb + 96;
        int l6[16];
        float d;
        if (qw == nullptr) {
            float max_scale = 0, amax = 0;
            for (int j = 0; j < 16; ++j) {
                const float a = fabsf(sb[j]);
                if (a > amax) {
                    amax = a;
                    max_scale = sb[j];
                }
            }
            if (max_scale != 0.0f) {
                const float iscale = -32.f / max_scale;
                for (int j = 0; j < 16; ++j) {
                    // upstream stores nearest_int into an int8_t before clamping (no wrap: |level| <= 32)
                    int l = (int8_t)nearest_int(iscale * sb[j]);
                    l = l < 31 ? l : 31;
                    l6[j] = (l > -32 ? l : -32) + 32;
                }
                lowbit_detail::q3_pack_scales(l6, s);
                d = 1 / iscale;
            } else {
                for (int k = 0; k < 12; ++k) s[k] = 0;
                d = 0.f;
            }
        } else {
            int8_t ls[16];
            d = make_qx_quants(16, 32, sb, ls, 1, sw);
            for (int j = 0; j < 16; ++j) l6[j] = ls[j];
            lowbit_detail::q3_pack_scales(l6, s);
        }
        store_u16(yb + 108, fp32_to_fp16(d));
        const float d_all = fp16_to_fp32(load_u16(yb + 108));
        const float* xb = x + QK_K * b;
        uint8_t L[QK_K];
        for (int j = 0; j < 16; ++j) {
            const float dj = d_all * (float)(lowbit_detail::q3_scale(s, j) - 32);
            const int g = 16 * b + j;
            if (dj == 0.0f) {
                // A zero step keeps the search's levels (those of the winning trial for the imatrix path).
                for (int ii = 0; ii < 16; ++ii) {
                    if (qw == nullptr) {
                        L[16 * j + ii] = Lt[G * ii + g];
                    } else {
                        L[16 * j + ii] = iscales[g] == 0.0f ? (uint8_t)0
                                                            : (uint8_t)(4 + qx_level(iscales[g] * xb[16 * j + ii], 4));
                    }
                }
                continue;
            }
            SQAT_LANES for (int ii = 0; ii < 16; ++ii) {
                L[16 * j + ii] = (uint8_t)(qx_level(xb[16 * j + ii] / dj, 4) + 4);
            }
        }
        uint8_t* hmask = yb;
        for (int m = 0; m < 32; ++m) hmask[m] = 0;
        for (int k = 0; k < 8; ++k) {
            SQAT_LANES for (int m = 0; m < 32; ++m) {
                const int v = 32 * k + m;
                const int hi = L[v] > 3;
                hmask[m] = (uint8_t)(hmask[m] | (hi << k));
                L[v] = (uint8_t)(L[v] - 4 * hi);
            }
        }
        lowbit_detail::pack_2bit(L, yb + 32);
    }
}

/// Quantizes 256 floats to one 110-byte Q3_K block (reference algorithm if qw is null, imatrix otherwise).
SQAT_HD void quantize_block_q3_K(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)row_sigma2;
    quantize_q3_K_blocks<1>(x, qw, y);
}

/// Decodes one Q3_K block to 256 floats: (d·(sc - 32))·((q | bit << 2) - 4), as dequantize_row_q3_K.
SQAT_HD void dequantize_block_q3_K(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d_all = fp16_to_fp32(load_u16(y + 108));
    const uint8_t* hmask = y;
    const uint8_t* qs = y + 32;
    for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
            const int bit = 4 * h + k;  // hmask bit of values 128h + 32k ...
            for (int half = 0; half < 2; ++half) {
                const int j = 8 * h + 2 * k + half;
                const float dl = d_all * (float)(lowbit_detail::q3_scale(y + 96, j) - 32);
                const uint8_t* q = qs + 32 * h + 16 * half;
                const uint8_t* hm = hmask + 16 * half;
                float* xo = x + 128 * h + 32 * k + 16 * half;
                SQAT_LANES for (int l = 0; l < 16; ++l) {
                    const int lev = ((q[l] >> (2 * k)) & 3) - (((hm[l] >> bit) & 1) ? 0 : 4);
                    xo[l] = dl * (float)lev;
                }
            }
        }
    }
}

}  // namespace sqat
