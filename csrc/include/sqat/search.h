// Scale-search helpers shared by the K-quants and the imatrix paths of the legacy formats.
//
// Each function reproduces its ggml namesake operation for operation: the same argument order,
// the same sequential sums, the same int/uint8 conversions (including the wrap-around of
// unclamped negative levels stored into uint8 arrays), and strict comparisons wherever ggml
// uses them.  Expressions are written so that C's left-to-right evaluation yields the same
// f32 rounding sequence as upstream; do not regroup them.
//
// What may differ from upstream is the order in which *independent* computations run: trials of a
// search whose sums do not depend on each other, or sub-blocks of a super-block, are evaluated side by
// side in "lanes" (arrays indexed by trial or group, innermost loop over the lane), which the compiler
// vectorises across the lanes while every single sum stays a sequential chain over its values.
// Decisions upstream takes in order (keep the best trial so far) are then replayed in that order.
#pragma once

#include "sqat/common.h"

namespace sqat {

// ---------------------------------------------------------------------------------------------------
// Extreme-value scans.  Upstream scans a block once, with a chain of dependent compares; these run four
// interleaved partial scans (lane k takes i = k mod 4) and then combine the lanes: four independent
// chains instead of one.  The minimum or maximum of a set does not depend on the order of the scan,
// with two exceptions handled explicitly: which of +0.0/-0.0 a strict scan keeps (the first one, see
// scan_first_zero) and NaN (the selects skip NaNs exactly as upstream's `if (v < min) min = v`).

// Smallest and largest of x[0..N) and (min0, max0), NaNs skipped, signs of zero not resolved.
// N a multiple of 4.  On the host (GCC/Clang) the lanes are one 8-wide vector of GCC's vector extension
// when N is a multiple of 8: the auto-vectoriser leaves the 4-lane loop below as scalar compare chains.
// A vector `v < m ? v : m` selects lane by lane exactly as the scalar select does (a NaN v keeps m).
#if defined(__GNUC__) && !defined(__CUDACC__)
#define SQAT_HOST_VECTORS 1
typedef float sqat_v8f __attribute__((vector_size(32)));
typedef float sqat_v4f __attribute__((vector_size(16)));
typedef int32_t sqat_v8i __attribute__((vector_size(32)));
typedef uint8_t sqat_v32u8 __attribute__((vector_size(32)));
typedef uint8_t sqat_v16u8 __attribute__((vector_size(16)));
// Byte shuffles are single instructions (SSSE3 and later; x86, so little-endian): without them, GCC
// builds a gather of bytes from scalar moves, slower than the plain loops.
#if defined(__SSSE3__)
#define SQAT_HOST_BYTE_SHUFFLE 1
#endif
// Eight blocks' extremes reduced together (scan_min_max_blocks) need AVX's 8-wide registers: on the SSE2
// baseline the 8-wide vectors are register pairs, and the reductions measured slower than a scan per block.
#if defined(__AVX__)
#define SQAT_HOST_TRANSPOSED_SCANS 1
#endif
#endif

template <int N>
SQAT_HD void scan_min_max(const float* x, float min0, float max0, float* min_out, float* max_out) {
#if defined(SQAT_HOST_VECTORS)
    if constexpr (N % 8 == 0) {
        sqat_v8f mn = {min0, min0, min0, min0, min0, min0, min0, min0};
        sqat_v8f mx = {max0, max0, max0, max0, max0, max0, max0, max0};
        for (int i = 0; i < N; i += 8) {
            sqat_v8f v;
            memcpy(&v, x + i, sizeof v);
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        // The eight lanes combined as a tree of shuffles (lanes hold no NaN: a NaN is never selected).
        sqat_v4f a = __builtin_shufflevector(mn, mn, 0, 1, 2, 3), b = __builtin_shufflevector(mx, mx, 0, 1, 2, 3);
        const sqat_v4f ah = __builtin_shufflevector(mn, mn, 4, 5, 6, 7);
        const sqat_v4f bh = __builtin_shufflevector(mx, mx, 4, 5, 6, 7);
        a = ah < a ? ah : a;
        b = bh > b ? bh : b;
        sqat_v4f as = __builtin_shufflevector(a, a, 2, 3, 0, 1), bs = __builtin_shufflevector(b, b, 2, 3, 0, 1);
        a = as < a ? as : a;
        b = bs > b ? bs : b;
        as = __builtin_shufflevector(a, a, 1, 0, 3, 2);
        bs = __builtin_shufflevector(b, b, 1, 0, 3, 2);
        a = as < a ? as : a;
        b = bs > b ? bs : b;
        *min_out = a[0];
        *max_out = b[0];
        return;
    }
#endif
    float mn[4] = {min0, min0, min0, min0};
    float mx[4] = {max0, max0, max0, max0};
    for (int i = 0; i < N; i += 4) {
        for (int k = 0; k < 4; ++k) {
            const float v = x[i + k];
            mn[k] = v < mn[k] ? v : mn[k];
            mx[k] = v > mx[k] ? v : mx[k];
        }
    }
    float a = mn[0], b = mx[0];
    for (int k = 1; k < 4; ++k) {
        a = mn[k] < a ? mn[k] : a;
        b = mx[k] > b ? mx[k] : b;
    }
    *min_out = a;
    *max_out = b;
}

// The first zero of x[0..n) (either sign); only called when there is one.
SQAT_HD float scan_first_zero(const float* x, int n) {
    for (int i = 0; i < n; ++i)
        if (x[i] == 0.0f) return x[i];
    return 0.0f;
}

#if defined(SQAT_HOST_TRANSPOSED_SCANS)
// Lane-wise smaller (kMax: larger) of two NaN-free vectors.  Vectors go by reference: by value, the
// baseline build's calling convention for 32-byte vectors would differ from the AVX builds' (-Wpsabi).
template <bool kMax>
SQAT_HD void pick_extreme(const sqat_v8f& a, const sqat_v8f& b, sqat_v8f& out) {
    if constexpr (kMax) {
        out = a > b ? a : b;
    } else {
        out = a < b ? a : b;
    }
}

// out lane b: the smallest (kMax: largest) of the eight lanes of v[b].  Three steps of a transpose (two
// shuffles) and an extreme, instead of eight horizontal reductions.
template <bool kMax>
SQAT_HD void reduce_transposed(const sqat_v8f* v, sqat_v8f& out) {
    sqat_v8f a[4], e[2];
    for (int k = 0; k < 4; ++k) {  // v[2k], v[2k+1] -> lanes (0-1, 2-3) of each 128-bit half
        const sqat_v8f lo = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 1, 8, 9, 4, 5, 12, 13);
        const sqat_v8f hi = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 2, 3, 10, 11, 6, 7, 14, 15);
        pick_extreme<kMax>(lo, hi, a[k]);
    }
    for (int k = 0; k < 2; ++k) {  // v[4k..4k+3] -> lane j of each half
        const sqat_v8f lo = __builtin_shufflevector(a[2 * k], a[2 * k + 1], 0, 2, 8, 10, 4, 6, 12, 14);
        const sqat_v8f hi = __builtin_shufflevector(a[2 * k], a[2 * k + 1], 1, 3, 9, 11, 5, 7, 13, 15);
        pick_extreme<kMax>(lo, hi, e[k]);
    }
    const sqat_v8f lo = __builtin_shufflevector(e[0], e[1], 0, 1, 2, 3, 8, 9, 10, 11);
    const sqat_v8f hi = __builtin_shufflevector(e[0], e[1], 4, 5, 6, 7, 12, 13, 14, 15);
    pick_extreme<kMax>(lo, hi, out);
}
#endif

// scan_min_max for G consecutive blocks of N values, block b at x + N*b: min_out[b] and max_out[b].
// On the host, eight blocks at a time: each block's partial extremes in one 8-wide vector, then the eight
// vectors reduced together (reduce_transposed).  Same values: the order of a NaN-free min/max does not
// matter.
template <int G, int N>
SQAT_HD void scan_min_max_blocks(const float* x, float min0, float max0, float* min_out, float* max_out) {
#if defined(SQAT_HOST_TRANSPOSED_SCANS)
    if constexpr (N % 8 == 0 && G % 8 == 0) {
        for (int g = 0; g < G; g += 8) {
            sqat_v8f mn[8], mx[8];
            for (int b = 0; b < 8; ++b) {
                mn[b] = sqat_v8f{min0, min0, min0, min0, min0, min0, min0, min0};
                mx[b] = sqat_v8f{max0, max0, max0, max0, max0, max0, max0, max0};
                for (int i = 0; i < N; i += 8) {
                    sqat_v8f v;
                    memcpy(&v, x + N * (g + b) + i, sizeof v);
                    mn[b] = v < mn[b] ? v : mn[b];  // a NaN v keeps the lane, as upstream skips it
                    mx[b] = v > mx[b] ? v : mx[b];
                }
            }
            sqat_v8f rmin, rmax;
            reduce_transposed<false>(mn, rmin);
            reduce_transposed<true>(mx, rmax);
            memcpy(min_out + g, &rmin, sizeof rmin);
            memcpy(max_out + g, &rmax, sizeof rmax);
        }
        return;
    }
#endif
    for (int b = 0; b < G; ++b) scan_min_max<N>(x + N * b, min0, max0, &min_out[b], &max_out[b]);
}

// scan_signed_absmax (below) of a block whose scan_min_max from 0 gave min and max.
template <int N>
SQAT_HD float signed_absmax_of(const float* x, float min, float max) {
    // Which side wins is a coin toss on real weights: picked with bit masks, not branches, which would
    // mispredict about every other block.
    const uint32_t pos = 0u - (uint32_t)(max > -min);
    const uint32_t neg = 0u - (uint32_t)(-min > max);
    if ((pos | neg) == 0u && max != 0.0f) {  // both signs reach the magnitude: the first one wins
        for (int i = 0; i < N; ++i)
            if (fabsf(x[i]) == max) return x[i];
    }
    return f32_from_bits((f32_bits(max) & pos) | (f32_bits(min) & neg));  // +0 for an all-zero block
}

// First value of largest magnitude, sign kept: upstream's `if (fabsf(v) > amax) { amax = fabsf(v);
// max = v; }` from amax = max = 0, so ties keep the earliest index, NaNs are skipped and an all-zero
// block gives +0.  The magnitude comes from the smallest and largest values; only when both signs reach
// it does the first index have to be searched for.  N a multiple of 4.
template <int N>
SQAT_HD float scan_signed_absmax(const float* x) {
    float min, max;
    scan_min_max<N>(x, 0.0f, 0.0f, &min, &max);
    return signed_absmax_of<N>(x, min, max);
}

// scan_signed_absmax of G consecutive blocks of N values into out[b].
template <int G, int N>
SQAT_HD void scan_signed_absmax_blocks(const float* x, float* out) {
#if defined(SQAT_HOST_TRANSPOSED_SCANS)
    float min[G], max[G];
    scan_min_max_blocks<G, N>(x, 0.0f, 0.0f, min, max);
    for (int b = 0; b < G; ++b) out[b] = signed_absmax_of<N>(x + N * b, min[b], max[b]);
#else
    for (int b = 0; b < G; ++b) out[b] = scan_signed_absmax<N>(x + N * b);
#endif
}

// a where mask m is all ones, b where it is zero (m is 0 or ~0): a float select done on the bits.
SQAT_HD float select_bits(uint32_t m, float a, float b) {
    return f32_from_bits((f32_bits(a) & m) | (f32_bits(b) & ~m));
}

// Level of an asymmetric search: nearest_int clamped to [0, nmax].
SQAT_HD int qkx_level(float v, int nmax) {
    int l = nearest_int(v);
    l = l < nmax ? l : nmax;
    return l > 0 ? l : 0;
}

// Asymmetric (scale + non-positive offset) search, ggml's make_qkx3_quants: the imatrix paths of
// Q4_1/Q5_1 (and, through make_qkx2_quants, everything of that shape).  weights == nullptr means w = x².
// Writes L[0..n) in 0..nmax and *the_min (the negated offset); returns the scale.  n <= 32; Laux is
// unused (kept for upstream's argument list).
//
// Upstream walks nstep+1 trial inverse scales, each one a pass of sequential sums that waits for the
// previous trial only through the offset `min`, and only when that trial is accepted with a different
// offset.  So the trials are evaluated a window of kWindow at a time, side by side (trial t in lane t,
// every sum still sequential over i), all with the current offset; the window is then walked in
// upstream's order, and an acceptance that moves the offset restarts the next window right after that
// trial.  The levels are recomputed at the end from the inverse scale and offset of the last accepted
// trial, the same arithmetic that produced them.
SQAT_HD float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                               float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                               bool use_mad) {
    (void)Laux;
    constexpr int kMaxN = 32;
    float w[kMaxN] = {};  // zeroed only to quiet -Wmaybe-uninitialized when this is compiled out of line
    for (int i = 0; i < n; ++i) w[i] = weights ? weights[i] : x[i] * x[i];
    float min = x[0];
    float max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const float l = (float)qkx_level(iscale * (x[i] - min), nmax);
        float diff = scale * l + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    float l_iscale = iscale, l_min = min;  // what the current levels are computed from
    constexpr int kWindow = 4;
    for (int start = 0; nstep >= 1 && start <= nstep;) {
        float isc[kWindow], sum_l[kWindow], sum_l2[kWindow], sum_xl[kWindow], lv[kMaxN * kWindow];
        SQAT_LANES for (int t = 0; t < kWindow; ++t) {
            isc[t] = (rmin + rdelta * (float)(start + t) + (float)nmax) / (max - min);
            sum_l[t] = sum_l2[t] = sum_xl[t] = 0;
        }
        for (int i = 0; i < n; ++i) {
            const float xi = x[i], wi = w[i];
            SQAT_LANES for (int t = 0; t < kWindow; ++t) {
                const float l = (float)qkx_level(isc[t] * (xi - min), nmax);
                lv[i * kWindow + t] = l;
                sum_l[t] += wi * l;
                sum_l2[t] += wi * l * l;
                sum_xl[t] += wi * l * xi;
            }
        }
        float D[kWindow], this_scale[kWindow], this_min[kWindow], cur_error[kWindow];
        SQAT_LANES for (int t = 0; t < kWindow; ++t) {
            D[t] = sum_w * sum_l2[t] - sum_l[t] * sum_l[t];
            float ts = (sum_w * sum_xl[t] - sum_x * sum_l[t]) / D[t];
            float tm = (sum_l2[t] * sum_x - sum_l[t] * sum_xl[t]) / D[t];
            const bool positive = tm > 0;
            ts = positive ? sum_xl[t] / sum_l2[t] : ts;
            tm = positive ? 0.0f : tm;
            this_scale[t] = ts;
            this_min[t] = tm;
            cur_error[t] = 0;
        }
        for (int i = 0; i < n; ++i) {
            const float xi = x[i], wi = w[i];
            SQAT_LANES for (int t = 0; t < kWindow; ++t) {
                const float l = lv[i * kWindow + t];
                float diff = this_scale[t] * l + this_min[t] - xi;
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error[t] += wi * diff;
            }
        }
        int next = start + kWindow;
        for (int t = 0; t < kWindow && start + t <= nstep; ++t) {
            if (D[t] > 0 && cur_error[t] < best_error) {
                best_error = cur_error[t];
                scale = this_scale[t];
                l_iscale = isc[t];
                l_min = min;
                // Only the offset's value matters to later trials (x - min and max - min are the same
                // for +0 and -0 here), but its bits are what is returned.
                const bool moved = this_min[t] != min;
                min = this_min[t];
                if (moved) {
                    next = start + t + 1;
                    break;
                }
            }
        }
        start = next;
    }
    for (int i = 0; i < n; ++i) L[i] = (uint8_t)qkx_level(l_iscale * (x[i] - l_min), nmax);
    *the_min = -min;
    return scale;
}

// ggml's make_qkx2_quants (weights non-null), the Q4_K/Q5_K reference-path search.  With non-null
// weights it is make_qkx3_quants: the only difference, `max == min` against `max <= min` as the
// degenerate test, cannot show, since min <= 0 and min <= max unless a NaN makes both tests false.
SQAT_HD float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                               float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                               bool use_mad) {
    return make_qkx3_quants(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

// make_qkx2_quants / make_qkx3_quants (non-null weights) on G independent groups of N values side by
// side: group g in lane g, every lane running exactly upstream's sequence (its own min/max scan from its
// first value, its own moving offset, every sum sequential over i), with the branches turned into
// per-lane selects.  Lanes that take an early exit keep computing, on garbage, and are masked out at
// the end.
// Layout: value i of group g at x[i*G + g] (likewise weights and L).  Writes scale[g] and the_min[g].
// Levels are floats inside (exact small integers), so that one element width lets the compiler
// vectorise across the lanes; the final levels are recomputed from the inverse scale and offset of the
// last accepted trial (the same arithmetic that produced them) instead of being copied per trial.
template <int N, int G>
SQAT_HD void make_qkx_quants_lanes(int nmax, const float* x, const float* weights, uint8_t* L, float* scale,
                                   float* the_min, float rmin, float rdelta, int nstep, bool use_mad) {
    float min[G], max[G], sum_w[G], sum_x[G];
    SQAT_LANES for (int g = 0; g < G; ++g) {
        min[g] = max[g] = x[g];
        sum_w[g] = weights[g];
        sum_x[g] = sum_w[g] * x[g];
    }
    for (int i = 1; i < N; ++i) {
        SQAT_LANES for (int g = 0; g < G; ++g) {
            const float v = x[i * G + g];
            min[g] = v < min[g] ? v : min[g];
            max[g] = v > max[g] ? v : max[g];
            const float w = weights[i * G + g];
            sum_w[g] += w;
            sum_x[g] += w * v;
        }
    }
    // s, m: current scale and offset; l_iscale, l_min: what the current levels were computed from.
    float iscale[G], best_error[G], s[G], m[G], l_iscale[G], l_min[G];
    int flat[G];
    SQAT_LANES for (int g = 0; g < G; ++g) {
        m[g] = min[g] > 0 ? 0.0f : min[g];
        flat[g] = max[g] == m[g];
        iscale[g] = (float)nmax / (max[g] - m[g]);
        s[g] = 1 / iscale[g];
        best_error[g] = 0;
        l_iscale[g] = iscale[g];
        l_min[g] = m[g];
    }
    for (int i = 0; i < N; ++i) {
        SQAT_LANES for (int g = 0; g < G; ++g) {
            const float v = x[i * G + g];
            int l = nearest_int(iscale[g] * (v - m[g]));
            l = l < nmax ? l : nmax;
            l = l > 0 ? l : 0;
            float diff = s[g] * (float)l + m[g] - v;
            diff = use_mad ? fabsf(diff) : diff * diff;
            best_error[g] += weights[i * G + g] * diff;
        }
    }
    float Laux[N * G];
    for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
        float sum_l[G], sum_l2[G], sum_xl[G];
        SQAT_LANES for (int g = 0; g < G; ++g) {
            iscale[g] = (rmin + rdelta * (float)is + (float)nmax) / (max[g] - m[g]);
            sum_l[g] = sum_l2[g] = sum_xl[g] = 0;
        }
        for (int i = 0; i < N; ++i) {
            SQAT_LANES for (int g = 0; g < G; ++g) {
                const float v = x[i * G + g];
                int l = nearest_int(iscale[g] * (v - m[g]));
                l = l < nmax ? l : nmax;
                l = l > 0 ? l : 0;
                const float lf = (float)l;
                Laux[i * G + g] = lf;
                const float w = weights[i * G + g];
                sum_l[g] += w * lf;
                sum_l2[g] += w * lf * lf;
                sum_xl[g] += w * lf * v;
            }
        }
        float this_scale[G], this_min[G], cur_error[G], D[G];
        SQAT_LANES for (int g = 0; g < G; ++g) {
            D[g] = sum_w[g] * sum_l2[g] - sum_l[g] * sum_l[g];
            const float ts_free = (sum_w[g] * sum_xl[g] - sum_x[g] * sum_l[g]) / D[g];
            const float tm_free = (sum_l2[g] * sum_x[g] - sum_l[g] * sum_xl[g]) / D[g];
            // Both candidates are computed in every lane and one is picked with a bit mask: a division
            // under upstream's condition (a `?:` too: GCC sinks the division into a branch) is not
            // executed speculatively, which kept this loop scalar.
            const float ts_zero_min = sum_xl[g] / sum_l2[g];
            const uint32_t positive = 0u - (uint32_t)(tm_free > 0);
            const float ts = select_bits(positive, ts_zero_min, ts_free);
            const float tm = select_bits(positive, 0.0f, tm_free);
            this_scale[g] = ts;
            this_min[g] = tm;
            cur_error[g] = 0;
        }
        for (int i = 0; i < N; ++i) {
            SQAT_LANES for (int g = 0; g < G; ++g) {
                float diff = this_scale[g] * Laux[i * G + g] + this_min[g] - x[i * G + g];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error[g] += weights[i * G + g] * diff;
            }
        }
        SQAT_LANES for (int g = 0; g < G; ++g) {
            // Bit-mask selects and `&` (see make_qx_quants_lanes): straight-line code that vectorises.
            const uint32_t a = 0u - (uint32_t)((D[g] > 0) & !flat[g] & (cur_error[g] < best_error[g]));
            best_error[g] = select_bits(a, cur_error[g], best_error[g]);
            l_iscale[g] = select_bits(a, iscale[g], l_iscale[g]);
            l_min[g] = select_bits(a, m[g], l_min[g]);
            s[g] = select_bits(a, this_scale[g], s[g]);
            m[g] = select_bits(a, this_min[g], m[g]);
        }
    }
    SQAT_LANES for (int g = 0; g < G; ++g) {
        scale[g] = flat[g] ? 0.0f : s[g];
        the_min[g] = -m[g];
    }
    for (int i = 0; i < N; ++i) {
        SQAT_LANES for (int g = 0; g < G; ++g) {
            int l = nearest_int(l_iscale[g] * (x[i * G + g] - l_min[g]));
            l = l < nmax ? l : nmax;
            l = l > 0 ? l : 0;
            L[i * G + g] = (uint8_t)(l & (flat[g] - 1));  // 0 in a flat lane; a mask, so the loop vectorises
        }
    }
}

// Weight used by make_qx_quants when no explicit weights are given.
SQAT_HD float qx_default_weight(int rmse_type, float x) {
    return rmse_type == 1 ? x * x : rmse_type == 2 ? 1.0f : rmse_type == 3 ? fabsf(x) : sqrtf(fabsf(x));
}

// Level of v for make_qx_quants: nearest_int clamped to [-nmax, nmax - 1].
SQAT_HD int qx_level(float v, int nmax) {
    int l = nearest_int(v);
    l = l < nmax - 1 ? l : nmax - 1;
    return l > -nmax ? l : -nmax;
}

// Symmetric search: the largest-magnitude value maps to -nmax.  Writes L[i] = level + nmax
// (0..2*nmax-1) and returns the signed scale.  rmse_type 0 = plain rounding, < 0 = one
// weighted pass then return, otherwise 18 extra trial scales.  qw may be nullptr.
SQAT_HD float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw) {
    float max = 0;
    if (n == 16 || n == 32) {
        max = n == 16 ? scan_signed_absmax<16>(x) : scan_signed_absmax<32>(x);
    } else {
        float amax = 0;
        for (int i = 0; i < n; ++i) {
            const float ax = fabsf(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
    }
    if (fabsf(max) < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = (float)(-nmax) / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) L[i] = (int8_t)(nmax + qx_level(iscale * x[i], nmax));
        return 1 / iscale;
    }
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        float sumlx = 0;
        float suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = qx_level(iscale * x[i], nmax);
            L[i] = (int8_t)(l + nmax);
            const float w = qw ? qw[i] : qx_default_weight(rmse_type, x[i]);
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        const float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
        return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    }
    // The first pass and the 18 trial scales -(nmax + 0.1*is)/max (is = -9..9, is != 0) are independent
    // until the final pick, so their sums run side by side: trial t in lane t (lane 0 = the first pass),
    // each sum still sequential over i.  The pick then walks the trials in upstream's order, and the
    // levels are recomputed once, from the winning inverse scale.
    constexpr int kTrials = 20;  // 19 used; lane 19 repeats lane 0 and is ignored
    float is_scale[kTrials];
    is_scale[0] = is_scale[kTrials - 1] = iscale;
    for (int t = 1; t < kTrials - 1; ++t) {
        const int is = t <= 9 ? t - 10 : t - 9;
        is_scale[t] = -((float)nmax + 0.1f * (float)is) / max;
    }
    float sumlx[kTrials], suml2[kTrials];
    for (int t = 0; t < kTrials; ++t) sumlx[t] = suml2[t] = 0.0f;
    for (int i = 0; i < n; ++i) {
        const float xi = x[i];
        const float w = qw ? qw[i] : qx_default_weight(rmse_type, xi);
        const float wx = w * xi;
        for (int t = 0; t < kTrials; ++t) {
            const float l = (float)qx_level(is_scale[t] * xi, nmax);
            sumlx[t] += wx * l;
            suml2[t] += w * l * l;
        }
    }
    float scale = suml2[0] != 0.0f ? sumlx[0] / suml2[0] : 0.0f;
    float best = scale * sumlx[0];
    int pick = 0;
    for (int t = 1; t < kTrials - 1; ++t) {
        if (suml2[t] > 0 && sumlx[t] * sumlx[t] > best * suml2[t]) {
            scale = sumlx[t] / suml2[t];
            best = scale * sumlx[t];
            pick = t;
        }
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(nmax + qx_level(is_scale[pick] * x[i], nmax));
    return scale;
}

// make_qx_quants(N, nmax, ., ., rmse_type = 1, weights) on G independent groups side by side: group g in
// lane g, the first pass and the 18 trial scales run one after the other, each across all lanes, and
// upstream's keep-the-best-trial branch becomes a per-lane select.  Every sum is still sequential over
// i, every lane the reference sequence.  Inputs: max[g], the group's first value of largest magnitude
// (scan_signed_absmax); value i of group g at x[i*G + g], its weight at w[i*G + g].  Writes scale[g]
// (upstream's return value) and iscale[g], the inverse scale the final levels come from
// (L = nmax + qx_level(iscale*x, nmax)); a group whose |max| < GROUP_MAX_EPS gets scale 0 and, as
// upstream's all-zero levels, iscale 0 marks it (no other group can have iscale 0).
// One trial of make_qx_quants_lanes: the weighted sums of every lane at inverse scales isc[g].
template <int N, int G>
SQAT_HD void qx_trial_sums(int nmax, const float* isc, const float* x, const float* w, const float* wx,
                           float* sumlx, float* suml2) {
    SQAT_LANES for (int g = 0; g < G; ++g) sumlx[g] = suml2[g] = 0.0f;
    for (int i = 0; i < N; ++i) {
        SQAT_LANES for (int g = 0; g < G; ++g) {
            const float l = (float)qx_level(isc[g] * x[i * G + g], nmax);
            sumlx[g] += wx[i * G + g] * l;
            suml2[g] += w[i * G + g] * l * l;
        }
    }
}

template <int N, int G>
SQAT_HD void make_qx_quants_lanes(int nmax, const float* max, const float* x, const float* w, float* scale,
                                  float* iscale) {
    float wx[N * G];
    for (int i = 0; i < N * G; ++i) wx[i] = w[i] * x[i];
    float isc[G], sumlx[G], suml2[G], best[G], s[G], pick[G];
    // The first pass.
    SQAT_LANES for (int g = 0; g < G; ++g) isc[g] = (float)(-nmax) / max[g];
    qx_trial_sums<N, G>(nmax, isc, x, w, wx, sumlx, suml2);
    SQAT_LANES for (int g = 0; g < G; ++g) {
        const float q = sumlx[g] / suml2[g];  // kept only where suml2 != 0
        s[g] = suml2[g] != 0.0f ? q : 0.0f;
        best[g] = s[g] * sumlx[g];
        pick[g] = isc[g];
    }
    // The 18 trial scales, is = -9..9 without 0, in upstream's order.
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        SQAT_LANES for (int g = 0; g < G; ++g) isc[g] = -((float)nmax + 0.1f * (float)is) / max[g];
        qx_trial_sums<N, G>(nmax, isc, x, w, wx, sumlx, suml2);
        SQAT_LANES for (int g = 0; g < G; ++g) {
            const float q = sumlx[g] / suml2[g];  // kept only where suml2 > 0
            // Selects as bit masks and `&`, not `&&`: the loop stays straight-line code that vectorises.
            const uint32_t m = 0u - (uint32_t)((suml2[g] > 0) & (sumlx[g] * sumlx[g] > best[g] * suml2[g]));
            s[g] = select_bits(m, q, s[g]);
            best[g] = select_bits(m, q * sumlx[g], best[g]);
            pick[g] = select_bits(m, isc[g], pick[g]);
        }
    }
    SQAT_LANES for (int g = 0; g < G; ++g) {
        const bool zero = fabsf(max[g]) < GROUP_MAX_EPS;
        scale[g] = zero ? 0.0f : s[g];
        iscale[g] = zero ? 0.0f : pick[g];
    }
}

// ggml's make_q3_quants(N, nmax, x, L, do_rmse = true), the Q3_K reference-path search, on G independent
// groups side by side (group g in lane g; value i of group g at x[i*G + g]).  max[g] is the group's first
// value of largest magnitude (scan_signed_absmax).  Per group: levels l = clamp(nearest_int(-nmax/max * x),
// -nmax, nmax-1) weighted by x², then up to five passes of coordinate descent, each sequential over the
// values, where a value takes the level nearest to x·Σwl²/Σwxl (both sums without that value) if that
// raises (Σwxl)²/Σwl².  Writes scale[g] = Σwxl/Σwl² (0 where Σwl² <= 0) and L[i*G + g] = l + nmax
// (0..2*nmax-1); a group whose |max| < GROUP_MAX_EPS gets scale 0 and all-zero L, as upstream.
//
// Upstream stops a group after a pass that changed nothing; such a pass leaves the group's state as it
// was, so the next pass would change nothing either: the lanes run the passes together and stop when no
// lane changed.  Levels are kept as floats (exact small integers), so that every array has one element
// width and the loops vectorise across the lanes.
template <int N, int G>
SQAT_HD void make_q3_quants_lanes(int nmax, const float* max, const float* x, float* scale, uint8_t* L) {
    float iscale[G], sumlx[G], suml2[G];
    float Lf[N * G];
    SQAT_LANES for (int g = 0; g < G; ++g) {
        iscale[g] = (float)(-nmax) / max[g];
        sumlx[g] = suml2[g] = 0.0f;
    }
    for (int i = 0; i < N; ++i) {
        SQAT_LANES for (int g = 0; g < G; ++g) {
            const float v = x[i * G + g];
            const float l = (float)qx_level(iscale[g] * v, nmax);
            Lf[i * G + g] = l;
            const float w = v * v;
            sumlx[g] += w * v * l;
            suml2[g] += w * l * l;
        }
    }
    for (int itry = 0; itry < 5; ++itry) {
        uint32_t changed = 0;
        for (int i = 0; i < N; ++i) {
            SQAT_LANES for (int g = 0; g < G; ++g) {
                const float v = x[i * G + g];
                const float w = v * v;
                const float li = Lf[i * G + g];
                const float slx0 = sumlx[g] - w * v * li;
                const float sl20 = suml2[g] - w * li * li;
                // Computed in every lane (upstream only where slx0 > 0): quotients of the other lanes are
                // discarded by the mask below.
                const float nl = (float)qx_level(v * sl20 / slx0, nmax);
                const float slx = slx0 + w * v * nl;
                const float sl2 = sl20 + w * nl * nl;
                const uint32_t take = 0u - (uint32_t)((slx0 > 0) & (nl != li) & (sl2 > 0) &
                                                      (slx * slx * suml2[g] > sumlx[g] * sumlx[g] * sl2));
                Lf[i * G + g] = select_bits(take, nl, li);
                sumlx[g] = select_bits(take, slx, sumlx[g]);
                suml2[g] = select_bits(take, sl2, suml2[g]);
                changed |= take;
            }
        }
        if (!changed) break;
    }
    SQAT_LANES for (int g = 0; g < G; ++g) {
        const bool zero = fabsf(max[g]) < GROUP_MAX_EPS;
        const float q = suml2[g] > 0.0f ? sumlx[g] / suml2[g] : 0.0f;
        scale[g] = zero ? 0.0f : q;
    }
    for (int i = 0; i < N; ++i) {
        SQAT_LANES for (int g = 0; g < G; ++g) {
            const bool zero = fabsf(max[g]) < GROUP_MAX_EPS;
            L[i * G + g] = zero ? (uint8_t)0 : (uint8_t)((int)Lf[i * G + g] + nmax);
        }
    }
}

// Positive-only search used to quantize the 8 sub-block scales/mins of Q4_K/Q5_K (imatrix
// path) to 0..nmax, weighted by quant_weights (non-null).  Returns the super-scale.
// Levels are clamped only from above, as upstream: a negative input would wrap in the uint8 L
// and that wrapped value then feeds the error sums, so the wrap is reproduced, not fixed.
SQAT_HD float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
    if (max < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; ++i) L[i] = (uint8_t)nearest_int(iscale * x[i]);
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * (float)L[i];
        const float w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        const float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale_is * x[i]);
            l = l < nmax ? l : nmax;
            const float diff = x[i] - scale_is * (float)l;
            const float w = quant_weights[i];
            mse += w * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        const float w = quant_weights[i];
        // The sums use the signed int level while L keeps its uint8 image, exactly as upstream.
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = quant_weights[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = new_l < nmax ? new_l : nmax;
                if (new_l != (int)L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

}  // namespace sqat
