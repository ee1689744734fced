// The non-linear 4-bit formats IQ4_NL (32 values) and IQ4_XS (256 values, eight 32-value sub-blocks).
//
// Both follow what ggml's quantize_iq4_nl / quantize_iq4_xs produce, i.e. quantize_row_iq4_nl_impl
// with ntry = 7, with or without importance weights (the ntry = -1 "_ref" variant of IQ4_NL is not what
// llama-quantize writes and is not modelled).
#pragma once

#include "sqat/common.h"
#include "sqat/search.h"

namespace sqat {

namespace iq4_detail {

// sigma2 of the imatrix weights: 2*Σx²/n over the whole (super-)block, n = 32 or 256.
SQAT_HD float block_sigma2(const float* x, int n) {
    float s = 0.0f;
    for (int j = 0; j < n; ++j) s += x[j] * x[j];
    s *= 2.0f / (float)n;
    return s;
}

SQAT_HD void block_weights(const float* xb, const float* qw, float sigma2, float* w) {
    if (qw != nullptr) {
        for (int j = 0; j < 32; ++j) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
    } else {
        for (int j = 0; j < 32; ++j) w[j] = xb[j] * xb[j];
    }
}

// iq4nl_value(iq4nl_best_index(al)) as a float: V[0] plus the steps V[i+1] - V[i] of the midpoints
// not above al.  Those midpoints are a prefix (the count iq4nl_best_index returns), so the sum is
// exactly V[index]; the selects are straight-line code that vectorises, unlike a table lookup.
SQAT_HD float nearest_code_value(float al) {
    float q = (float)iq4nl_value(0);
    for (int i = 0; i < 15; ++i) {
        const int lo = iq4nl_value(i), hi = iq4nl_value(i + 1);
        q += !(al < 0.5f * (float)(lo + hi)) ? (float)(hi - lo) : 0.0f;
    }
    return q;
}

// Weighted least-squares scale of one 32-value group over the IQ4 code book: a first guess that maps
// the extreme value to +127, then 15 trial inverse scales (itry - 127)/max, keeping the best by
// sumqx²/sumq2.  Returns 0 for an (almost) all-zero group or when every weight is zero.
// The 16 trials are independent until the final pick, so their sums run side by side (trial t in
// lane t, each sum still sequential over j), and the pick then walks them in upstream's order.
SQAT_HD float group_scale(const float* xb, const float* w) {
    const float max = scan_signed_absmax<32>(xb);
    if (fabsf(max) < GROUP_MAX_EPS) return 0.0f;
    constexpr int kTrials = 16;
    float id[kTrials];
    id[0] = 1.0f / (-max / (float)iq4nl_value(0));
    for (int t = 1; t < kTrials; ++t) id[t] = (float)(t - 8 + iq4nl_value(0)) / max;  // itry = t - 8
    float sumqx[kTrials], sumq2[kTrials];
    for (int t = 0; t < kTrials; ++t) sumqx[t] = sumq2[t] = 0.0f;
    for (int j = 0; j < 32; ++j) {
        const float xj = xb[j], wj = w[j];
        for (int t = 0; t < kTrials; ++t) {
            const float q = nearest_code_value(id[t] * xj);
            const float wq = wj * q;
            sumqx[t] += wq * xj;
            sumq2[t] += wq * q;
        }
    }
    // The `sumq2 > 0` guards (2026 upstream) keep zero-weight groups at d = 0 instead of NaN.
    float d = sumq2[0] > 0.0f ? sumqx[0] / sumq2[0] : 0.0f;
    float best = d * sumqx[0];
    for (int t = 1; t < kTrials; ++t) {
        if (sumq2[t] > 0.0f && sumqx[t] * sumqx[t] > best * sumq2[t]) {
            d = sumqx[t] / sumq2[t];
            best = d * sumqx[t];
        }
    }
    return d;
}

// Nibble layout shared by both formats: within each 32-group, value j < 16 in the low nibble of
// qs[j], value j + 16 in the high nibble.
SQAT_HD void pack_group(const uint8_t* L, uint8_t* qs) {
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
}

}  // namespace iq4_detail

// ---------------------------------------------------------------------------------------------------
// IQ4_NL: [d fp16][qs x16], value = d * kvalues_iq4nl[q].

/// Quantize 32 values to IQ4_NL (18 bytes); qw = the block's 32 importance weights or nullptr.
/// row_sigma2 is ignored: the imatrix sigma2 is taken over the 32-value block itself.
SQAT_HD void quantize_block_iq4_nl(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)row_sigma2;
    const float sigma2 = iq4_detail::block_sigma2(x, 32);
    float w[32];
    iq4_detail::block_weights(x, qw, sigma2, w);
    const float d = iq4_detail::group_scale(x, w);
    store_u16(y, fp32_to_fp16(d));
    // Indices come from the unrounded f32 scale, not the stored fp16 one.
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t L[32];
    for (int j = 0; j < 32; ++j) L[j] = (uint8_t)iq4nl_best_index(id * x[j]);
    iq4_detail::pack_group(L, y + 2);
}

/// Dequantize one IQ4_NL block into 32 floats.
SQAT_HD void dequantize_block_iq4_nl(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const uint8_t* qs = y + 2;
    // The table lookups into a local array first, then one vectorised loop of products (measured 12 %
    // faster than looking up inside the product loops).
    int v[QK32];
    for (int j = 0; j < 16; ++j) v[j] = iq4nl_value(qs[j] & 0x0f);  // a loop per nibble
    for (int j = 0; j < 16; ++j) v[j + 16] = iq4nl_value(qs[j] >> 4);
    for (int j = 0; j < QK32; ++j) x[j] = d * (float)v[j];
}

// ---------------------------------------------------------------------------------------------------
// IQ4_XS: [d fp16][scales_h u16][scales_l x4][qs x128]; sub-block ib has the 6-bit scale ls
// (low nibble in scales_l[ib/2], high 2 bits at bit 2*ib of scales_h), value = d*(ls-32)*kvalues[q].

/// Quantize 256 values to IQ4_XS (136 bytes); qw = the super-block's 256 importance weights or nullptr.
/// row_sigma2 is ignored: the imatrix sigma2 is taken over the 256-value super-block.
SQAT_HD void quantize_block_iq4_xs(const float* x, const float* qw, float row_sigma2, uint8_t* y) {
    (void)row_sigma2;
    const float sigma2 = iq4_detail::block_sigma2(x, QK_K);
    float scales[QK_K / 32];
    float max_scale = 0.0f, amax_scale = 0.0f;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        float w[32];
        iq4_detail::block_weights(x + 32 * ib, qw != nullptr ? qw + 32 * ib : nullptr, sigma2, w);
        const float s = iq4_detail::group_scale(x + 32 * ib, w);
        scales[ib] = s;
        if (fabsf(s) > amax_scale) {
            amax_scale = fabsf(s);
            max_scale = s;
        }
    }
    // Negative super-scale so that the largest sub-scale lands on the code -32 (the widest one).
    // An all-zero super-block therefore stores d = -0.0 (0x8000).
    const float d = -max_scale / 32.0f;
    store_u16(y, fp32_to_fp16(d));
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t scales_h = 0;
    uint8_t* scales_l = y + 4;
    uint8_t* qs = y + 8;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        int l = nearest_int(id * scales[ib]);
        l = l < -32 ? -32 : (l > 31 ? 31 : l);
        // Sub-block indices use the unrounded f32 d, although the file stores fp16(d).
        const float dl = d * (float)l;
        const float idl = dl != 0.0f ? 1.0f / dl : 0.0f;
        const float* xb = x + 32 * ib;
        uint8_t L[32];
        for (int j = 0; j < 32; ++j) L[j] = (uint8_t)iq4nl_best_index(idl * xb[j]);
        iq4_detail::pack_group(L, qs + 16 * ib);
        const int ls = l + 32;
        if (ib % 2 == 0) scales_l[ib / 2] = (uint8_t)(ls & 0x0f);
        else scales_l[ib / 2] = (uint8_t)(scales_l[ib / 2] | ((ls & 0x0f) << 4));
        scales_h = (uint16_t)(scales_h | ((ls >> 4) << (2 * ib)));
    }
    store_u16(y + 2, scales_h);
}

/// Dequantize one IQ4_XS super-block into 256 floats.
SQAT_HD void dequantize_block_iq4_xs(const uint8_t* SQAT_RESTRICT y, float* SQAT_RESTRICT x) {
    const float d = fp16_to_fp32(load_u16(y));
    const uint16_t scales_h = load_u16(y + 2);
    const uint8_t* scales_l = y + 4;
    const uint8_t* qs = y + 8;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        const int ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f) | (((scales_h >> (2 * ib)) & 3) << 4);
        const float dl = d * (float)(ls - 32);
        for (int j = 0; j < 16; ++j) {
            x[32 * ib + j] = dl * (float)iq4nl_value(qs[16 * ib + j] & 0x0f);
            x[32 * ib + j + 16] = dl * (float)iq4nl_value(qs[16 * ib + j] >> 4);
        }
    }
}

}  // namespace sqat
