// Q4_K, Q5_K and Q6_K: one 256-value super-block per call.
//
// qw == nullptr selects the algorithm ggml_quantize_chunk runs without an importance matrix
// (quantize_row_q*_K_ref); qw != nullptr selects the per-row imatrix algorithm
// (quantize_row_q*_K_impl).  Both are per-super-block computations, so a row is just a
// sequence of independent calls.  row_sigma2 is unused: the K-quant imatrix weighting uses a
// per-super-block sigma2, computed here.
//
// Byte layouts (little-endian fp16):
//   Q4_K 144 B: d, dmin, scales[12], qs[128]
//   Q5_K 176 B: d, dmin, scales[12], qh[32], qs[128]
//   Q6_K 210 B: ql[128], qh[64], scales[16] (int8), d
#pragma once

#include "sqat/common.h"
#include "sqat/search.h"

namespace sqat {

constexpr int kQ4KBytes = 144;
constexpr int kQ5KBytes = 176;
constexpr int kQ6KBytes = 210;

// Unpacks the 6-bit scale and min of sub-block j from the 12-byte Q4_K/Q5_K scale field.
SQAT_HD void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = (uint8_t)(q[j] & 63);
        *m = (uint8_t)(q[j + 4] & 63);
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Packs 8 scales and 8 mins into the 12-byte field.  The inputs are normally 0..63, but the
// Q4_K imatrix path stores make_qp_quants levels without clamping, so out-of-range bits are
// allowed to spill exactly as upstream's byte stores do.
SQAT_HD void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* s) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] = (uint8_t)(s[j - 4] | ((ls[j] >> 4) << 6));
            s[j] = (uint8_t)(s[j] | ((lm[j] >> 4) << 6));
        }
    }
}

// Shared Q4_K/Q5_K quantizer up to (but excluding) the packing of the levels, for B consecutive super-blocks
// (x + 256*b, y + type_size*b, L + 256*b; qw + 256*b when given): writes d, dmin and the 12 scale bytes into
// the block's first 16 bytes and its final levels (0..nmax) into L.  The 8*B sub-blocks are searched side
// by side (make_qkx_quants_lanes), on a transposed copy: xt[8*B*l + 8*b + j] is value l of sub-block j of
// super-block b.  Each lane's sums run in the reference order; more lanes only give the processor
// independent chains to overlap (one super-block's 8 lanes leave the search waiting on add latency).
template <int B>
SQAT_HD void quantize_kq_asym(const float* x, const float* qw, int nmax, uint8_t* y, int type_size, uint8_t* L) {
    constexpr int G = 8 * B;
    float xt[QK_K * B], wt[QK_K * B];
    uint8_t Lt[QK_K * B];
    float mins[G], scales[G];
    uint8_t ls[G], lm[G];
    float d_block[B], m_block[B];
    for (int j = 0; j < G; ++j)
        for (int l = 0; l < 32; ++l) xt[G * l + j] = x[32 * j + l];

    if (qw == nullptr) {
        // Reference path: per-sub-block weights, plain max-based 6-bit scale quantization.
        const float rmin = nmax == 15 ? -1.0f : -0.5f;
        const int nstep = nmax == 15 ? 20 : 15;
        float sum_x2[G];
        for (int j = 0; j < G; ++j) sum_x2[j] = 0;
        for (int l = 0; l < 32; ++l)
            for (int j = 0; j < G; ++j) sum_x2[j] += xt[G * l + j] * xt[G * l + j];
        float av_x[G];
        for (int j = 0; j < G; ++j) av_x[j] = sqrtf(sum_x2[j] / 32.0f);
        for (int l = 0; l < 32; ++l)
            for (int j = 0; j < G; ++j) wt[G * l + j] = av_x[j] + fabsf(xt[G * l + j]);
        make_qkx_quants_lanes<32, G>(nmax, xt, wt, Lt, scales, mins, rmin, 0.1f, nstep, false);
        for (int b = 0; b < B; ++b) {
            float max_scale = 0;
            float max_min = 0;
            for (int j = 8 * b; j < 8 * b + 8; ++j) {
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
            const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
            for (int j = 8 * b; j < 8 * b + 8; ++j) {
                // Upstream narrows to uint8 before clamping, so a negative level wraps and then clamps to 63.
                const uint8_t a = (uint8_t)nearest_int(inv_scale * scales[j]);
                const uint8_t c = (uint8_t)nearest_int(inv_min * mins[j]);
                ls[j] = a < 63 ? a : 63;
                lm[j] = c < 63 ? c : 63;
            }
            // Divided, not 1/inv_scale: the two differ in the last bit often enough to matter.
            d_block[b] = max_scale / 63.f;
            m_block[b] = max_min / 63.f;
        }
    } else {
        // Imatrix path: sigma2 is per super-block here (unlike the legacy formats' per-row one).
        float sw[G];
        for (int b = 0; b < B; ++b) {
            const float* xb = x + QK_K * b;
            float sum_x2 = 0;
            for (int l = 0; l < QK_K; ++l) sum_x2 += xb[l] * xb[l];
            const float sigma2 = 2 * sum_x2 / (float)QK_K;
            for (int j = 8 * b; j < 8 * b + 8; ++j) {
                for (int l = 0; l < 32; ++l) {
                    const float v = x[32 * j + l];
                    wt[G * l + j] = qw[32 * j + l] * sqrtf(sigma2 + v * v);
                }
            }
        }
        for (int j = 0; j < G; ++j) sw[j] = 0;
        for (int l = 0; l < 32; ++l)
            for (int j = 0; j < G; ++j) sw[j] += wt[G * l + j];
        make_qkx_quants_lanes<32, G>(nmax, xt, wt, Lt, scales, mins, -0.9f, 0.05f, 36, false);
        for (int b = 0; b < B; ++b) {
            d_block[b] = make_qp_quants(8, 63, scales + 8 * b, ls + 8 * b, sw + 8 * b);
            m_block[b] = make_qp_quants(8, 63, mins + 8 * b, lm + 8 * b, sw + 8 * b);
        }
        // Only Q5_K clamps here; Q4_K packs the raw levels (identical unless a level wrapped).
        if (nmax == 31) {
            for (int j = 0; j < G; ++j) {
                ls[j] = ls[j] < 63 ? ls[j] : 63;
                lm[j] = lm[j] < 63 ? lm[j] : 63;
            }
        }
    }
    for (int j = 0; j < G; ++j)
        for (int l = 0; l < 32; ++l) L[32 * j + l] = Lt[G * l + j];

    for (int b = 0; b < B; ++b) {
        uint8_t* yb = y + type_size * b;
        uint8_t* sc_bytes = yb + 4;
        pack_scale_min_k4(ls + 8 * b, lm + 8 * b, sc_bytes);
        store_u16(yb, fp32_to_fp16(d_block[b]));
        store_u16(yb + 2, fp32_to_fp16(m_block[b]));

        // Re-quantize against the scales as they will be decoded (fp16 super-scales, 6-bit sub-scales).
        const float d_all = fp16_to_fp32(load_u16(yb));
        const float m_all = fp16_to_fp32(load_u16(yb + 2));
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            get_scale_min_k4(j, sc_bytes, &sc, &m);
            const float d = d_all * (float)sc;
            // A zero step keeps the levels from the search above rather than zeroing them.
            if (d == 0.0f) continue;
            const float dm = m_all * (float)m;
            const float* xs = x + QK_K * b + 32 * j;
            uint8_t* Ls = L + QK_K * b + 32 * j;
            for (int ii = 0; ii < 32; ++ii) {
                int l = nearest_int((xs[ii] + dm) / d);
                l = l < nmax ? l : nmax;
                Ls[ii] = (uint8_t)(l > 0 ? l : 0);
            }
        }
    }
}

// Packs one Q4_K block's levels (0..15) into its 128 nibble bytes.
SQAT_HD void pack_levels_q4_K(const uint8_t* L, uint8_t* y) {
    uint8_t* q = y + 16;
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) q[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

// Packs one Q5_K block's levels (0..31): high bits into qh, nibbles into ql.
SQAT_HD void pack_levels_q5_K(const uint8_t* L, uint8_t* y) {
    uint8_t* qh = y + 16;
    uint8_t* ql = y + 48;
    for (int l = 0; l < 32; ++l) qh[l] = 0;
    for (int c = 0; c < 4; ++c) {
        const uint8_t m1 = (uint8_t)(1u << (2 * c));
        const uint8_t m2 = (uint8_t)(2u << (2 * c));
        for (int l = 0; l < 32; ++l) {
            int l1 = L[64 * c + l];
            int l2 = L[64 * c + 32 + l];
            if (l1 > 15) { l1 -= 16; qh[l] |= m1; }
            if (l2 > 15) { l2 -= 16; qh[l] |= m2; }
            ql[32 * c + l] = (uint8_t)(l1 | (l2 << 4));
        }
    }
}

/// Quantize B consecutive 256-value blocks to Q4_K (144 bytes each) without an importance matrix.
template <int B>
SQAT_HD void quantize_blocks_q4_K(const float* x, uint8_t* y) {
    uint8_t L[QK_K * B];
    quantize_kq_asym<B>(x, nullptr, 15, y, 144, L);
    for (int b = 0; b < B; ++b) pack_levels_q4_K(L + QK_K * b, y + 144 * b);
}

/// Quantize B consecutive 256-value blocks to Q5_K (176 bytes each) without an importance matrix.
template <int B>
SQAT_HD void quantize_blocks_q5_K(const float* x, uint8_t* y) {
    uint8_t L[QK_K * B];
    quantize_kq_asym<B>(x, nullptr, 31, y, 176, L);
    for (int b = 0; b < B; ++b) pack_levels_q5_K(L + QK_K * b, y + 176 * b);
}

// Quantizes 256 floats to one 144-byte Q4_K block (reference algorithm if qw is null, imatrix otherwise).
SQAT_HD void quantize_block_q4_K(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)row_sigma2;
    uint8_t L[QK_K];
    quantize_kq_asym<1>(x, qw, 15, y, 144, L);
    pack_levels_q4_K(L, y);
}

// Quantizes 256 floats to one 176-byte Q5_K block (reference algorithm if qw is null, imatrix otherwise).
SQAT_HD void quantize_block_q5_K(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)row_sigma2;
    uint8_t L[QK_K];
    quantize_kq_asym<1>(x, qw, 31, y, 176, L);
    pack_levels_q5_K(L, y);
}

// Quantizes 256 floats to one 210-byte Q6_K block; with qw the raw importances weight the
// per-16 scale search (no sigma2 term), without it the weights are x².
SQAT_HD void quantize_block_q6_K(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)row_sigma2;
    // The 16 per-16 scale searches (make_qx_quants, nmax 32, weights qw or x²) run side by side, sub-block
    // ib in lane ib: the values are transposed to value i of sub-block ib at xt[16*i + ib].
    float group_max[16], xt[QK_K], wt[QK_K], scales[16], iscales[16];
    for (int ib = 0; ib < 16; ++ib) group_max[ib] = scan_signed_absmax<16>(x + 16 * ib);
    // Written in the order of the transposed arrays (contiguous stores, one lane after the other), with the
    // weights' source chosen outside the loop: a select per element kept this transpose scalar.
    for (int i = 0; i < 16; ++i) {
        SQAT_LANES for (int ib = 0; ib < 16; ++ib) xt[16 * i + ib] = x[16 * ib + i];
    }
    if (qw) {
        for (int i = 0; i < 16; ++i) {
            SQAT_LANES for (int ib = 0; ib < 16; ++ib) wt[16 * i + ib] = qw[16 * ib + i];
        }
    } else {
        for (int k = 0; k < QK_K; ++k) wt[k] = xt[k] * xt[k];
    }
    make_qx_quants_lanes<16, 16>(32, group_max, xt, wt, scales, iscales);
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        const float scale = scales[ib];
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
        for (int i = 0; i < kQ6KBytes; ++i) y[i] = 0;
        return;
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
    int8_t sc[16];
    const float iscale = -128.f / max_scale;
    // d is the reciprocal of iscale, not max_scale/-128: they can differ in the last bit.
    store_u16(y + 208, fp32_to_fp16(1 / iscale));
    for (int ib = 0; ib < 16; ++ib) {
        const int v = nearest_int(iscale * scales[ib]);
        sc[ib] = (int8_t)(uint8_t)(v < 127 ? v : 127);
        y[192 + ib] = (uint8_t)sc[ib];
    }
    const float d_all = fp16_to_fp32(load_u16(y + 208));
    int8_t L[QK_K];
    for (int j = 0; j < 16; ++j) {
        const float d = d_all * (float)sc[j];
        if (d == 0.0f) {
            // Upstream keeps the search's levels here: those of its best trial, all 0 for a flat group.
            for (int ii = 0; ii < 16; ++ii) {
                const int l = iscales[j] == 0.0f ? -32 : qx_level(iscales[j] * x[16 * j + ii], 32);
                L[16 * j + ii] = (int8_t)(l + 32);
            }
            continue;
        }
        SQAT_LANES
        for (int ii = 0; ii < 16; ++ii) {
            int l = nearest_int(x[16 * j + ii] / d);
            l = l < 31 ? l : 31;
            l = l > -32 ? l : -32;
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    for (int h = 0; h < 2; ++h) {
        const int8_t* Lh = L + 128 * h;
        uint8_t* qlh = ql + 64 * h;
        uint8_t* qhh = qh + 32 * h;
        for (int l = 0; l < 32; ++l) {
            const int q1 = Lh[l] & 0xF;
            const int q2 = Lh[l + 32] & 0xF;
            const int q3 = Lh[l + 64] & 0xF;
            const int q4 = Lh[l + 96] & 0xF;
            qlh[l] = (uint8_t)(q1 | (q3 << 4));
            qlh[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qhh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                               ((Lh[l + 96] >> 4) << 6));
        }
    }
}

// Decodes one Q4_K block to 256 floats: (d*sc)*q - dmin*m, as dequantize_row_q4_K.
SQAT_HD void dequantize_block_q4_K(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const float dmin = fp16_to_fp32(load_u16(y + 2));
    const uint8_t* s = y + 4;
    const uint8_t* q = y + 16;
    for (int c = 0; c < 4; ++c) {
        uint8_t sc, m;
        get_scale_min_k4(2 * c, s, &sc, &m);
        const float d1 = d * (float)sc;
        const float m1 = dmin * (float)m;
        get_scale_min_k4(2 * c + 1, s, &sc, &m);
        const float d2 = d * (float)sc;
        const float m2 = dmin * (float)m;
        for (int l = 0; l < 32; ++l) x[64 * c + l] = d1 * (float)(q[32 * c + l] & 0xF) - m1;
        for (int l = 0; l < 32; ++l) x[64 * c + 32 + l] = d2 * (float)(q[32 * c + l] >> 4) - m2;
    }
}

// Decodes one Q5_K block to 256 floats, as dequantize_row_q5_K.
SQAT_HD void dequantize_block_q5_K(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const float dmin = fp16_to_fp32(load_u16(y + 2));
    const uint8_t* s = y + 4;
    const uint8_t* qh = y + 16;
    const uint8_t* ql = y + 48;
    for (int c = 0; c < 4; ++c) {
        uint8_t sc, m;
        get_scale_min_k4(2 * c, s, &sc, &m);
        const float d1 = d * (float)sc;
        const float m1 = dmin * (float)m;
        get_scale_min_k4(2 * c + 1, s, &sc, &m);
        const float d2 = d * (float)sc;
        const float m2 = dmin * (float)m;
        const int u1 = 1 << (2 * c);
        const int u2 = 2 << (2 * c);
        for (int l = 0; l < 32; ++l) {
            const int q = (ql[32 * c + l] & 0xF) + ((qh[l] & u1) ? 16 : 0);
            x[64 * c + l] = d1 * (float)q - m1;
        }
        for (int l = 0; l < 32; ++l) {
            const int q = (ql[32 * c + l] >> 4) + ((qh[l] & u2) ? 16 : 0);
            x[64 * c + 32 + l] = d2 * (float)q - m2;
        }
    }
}

// Decodes one Q6_K block to 256 floats: (d*sc)*(q-32), as dequantize_row_q6_K.
SQAT_HD void dequantize_block_q6_K(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y + 208));
    for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = y + 64 * h;
        const uint8_t* qh = y + 128 + 32 * h;
        const int8_t* sc = (const int8_t*)(y + 192 + 8 * h);
        float* xh = x + 128 * h;
        // Sixteen values per scale: (d * sc) is the same product for all of them, taken once.
        for (int is = 0; is < 2; ++is) {
            const float s1 = d * (float)sc[is + 0], s2 = d * (float)sc[is + 2];
            const float s3 = d * (float)sc[is + 4], s4 = d * (float)sc[is + 6];
            SQAT_LANES
            for (int l = 16 * is; l < 16 * is + 16; ++l) {
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                xh[l] = s1 * (float)q1;
                xh[l + 32] = s2 * (float)q2;
                xh[l + 64] = s3 * (float)q3;
                xh[l + 96] = s4 * (float)q4;
            }
        }
    }
}

}  // namespace sqat
