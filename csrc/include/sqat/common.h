// Primitives shared by every format: host+device qualifiers, fp16/bf16 conversion,
// llama.cpp's rounding helpers and the IQ4 value table.
//
// Everything here is compiled both by the host compiler (CPU loops, grid emulation)
// and by nvcc (CUDA kernels), so it must stay plain C arithmetic: no std::, no
// intrinsics, no FMA-prone tricks.  Bit-exactness rules: see DESIGN.md, decision 3.
#pragma once

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__CUDACC__)
#define SQAT_HD __host__ __device__ __forceinline__
#else
#define SQAT_HD inline
#endif

namespace sqat {

// Format ids: the numbers of ggml's `enum ggml_type` (= gguf.GGMLQuantizationType).
enum TypeId : int {
    kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
    kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kIQ4_NL = 20, kIQ4_XS = 23, kBF16 = 30,
};

constexpr int QK_K = 256;        // K-quant / IQ4_XS super-block
constexpr int QK32 = 32;         // legacy block (Q4_0 ... Q8_0, IQ4_NL)
constexpr float GROUP_MAX_EPS = 1e-15f;

SQAT_HD uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
SQAT_HD float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// IEEE binary32 -> binary16, round to nearest even, subnormals kept, overflow -> inf.
// Integer-only so that it cannot be affected by FTZ or contraction on any target.
SQAT_HD uint16_t fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);      // NaN
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);     // rounds to >= 65520: inf
    if (ax < 0x38800000u) {                                       // below 2^-14: subnormal half
        if (ax < 0x33000000u) return (uint16_t)sign;              // below 2^-25: zero
        const uint32_t e = ax >> 23;
        const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e;                          // 14..24
        uint32_t h = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u);
        const uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (h & 1u))) h += 1u;
        return (uint16_t)(sign | h);
    }
    ax -= 0x38000000u;                                            // re-bias exponent 127 -> 15
    ax += 0xfffu + ((ax >> 13) & 1u);                             // round mantissa to 10 bits, ties even
    return (uint16_t)(sign | (ax >> 13));
}

// binary16 -> binary32, exact.
SQAT_HD float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0) {
        if (m == 0) return f32_from_bits(sign);
        // subnormal: normalise
        uint32_t exp = 113;  // 127 - 15 + 1
        while ((m & 0x400u) == 0) { m <<= 1; exp -= 1; }
        m &= 0x3ffu;
        return f32_from_bits(sign | (exp << 23) | (m << 13));
    }
    if (e == 31) {
        // ggml widens through an f32 multiply, which on x86 quiets a signalling NaN (payload kept).
        return f32_from_bits(sign | 0x7f800000u | (m << 13) | (m ? 0x00400000u : 0u));
    }
    return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

// binary32 -> bfloat16 as ggml_compute_fp32_to_bf16: NaN forced quiet, else round to nearest even.
SQAT_HD uint16_t fp32_to_bf16(float f) {
    const uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64u);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

SQAT_HD float bf16_to_fp32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

// llama.cpp's nearest_int: round half to even via the 1.5*2^23 magic number (|v| < 2^22).
SQAT_HD int nearest_int(float v) {
    const float t = v + 12582912.0f;
    return (int)(f32_bits(t) & 0x007fffffu) - 0x00400000;
}

// The 16 IQ4_NL / IQ4_XS code values (ggml's kvalues_iq4nl), ascending.
SQAT_HD int iq4nl_value(int i) {
    constexpr int8_t v[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    return v[i];
}

// ggml's best_index_int8 over kvalues_iq4nl: nearest code index, exact ties go to the upper index.
SQAT_HD int iq4nl_best_index(float x) {
    if (x <= (float)iq4nl_value(0)) return 0;
    if (x >= (float)iq4nl_value(15)) return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        const int mav = (ml + mu) / 2;
        if (x < (float)iq4nl_value(mav)) mu = mav; else ml = mav;
    }
    return (x - (float)iq4nl_value(mu - 1)) < ((float)iq4nl_value(mu) - x) ? mu - 1 : mu;
}

SQAT_HD void store_u16(uint8_t* p, uint16_t v) { p[0] = (uint8_t)(v & 0xff); p[1] = (uint8_t)(v >> 8); }
SQAT_HD uint16_t load_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }
SQAT_HD void store_u32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = (uint8_t)(v >> (8 * i)); }
SQAT_HD uint32_t load_u32(const uint8_t* p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

// Σ x² / n over a whole row, sequential: the `sigma2` of the Q4_0/Q4_1/Q5_0/Q5_1 imatrix path.
SQAT_HD float row_sigma2(const float* x, int64_t n) {
    float s = 0.0f;
    for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
    return s / (float)n;
}

}  // namespace sqat
