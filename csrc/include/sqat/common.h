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
#define SQAT_HD_INLINE __host__ __device__ __forceinline__
#else
#define SQAT_HD inline
// For the fp16 conversions, which GCC leaves out of line: called inside a loop across blocks, a call keeps
// the loop scalar (fp32_to_fp16 calls were a fifth of Q4_1's time).
#define SQAT_HD_INLINE inline __attribute__((always_inline))
#endif

// The decoders read packed bytes and write floats.  uint8_t may alias anything, so without `restrict`
// every float store could change the bytes still to be read, and their loops stay scalar.
#define SQAT_RESTRICT __restrict__

// Marks a short loop whose iterations should become SIMD lanes: a loop over lanes (independent groups or
// trials run side by side) or over the 16 values of a decoder's half block.  GCC unrolls such loops
// completely, then fails to vectorise the enclosing loop or packs the copies as scalar code (byte loads
// and inserts: 3x slower decoders); kept a loop, it is vectorised.  A code-generation hint only.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define SQAT_LANES _Pragma("GCC unroll 1")
#else
#define SQAT_LANES
#endif

namespace sqat {

// Format ids: the numbers of ggml's `enum ggml_type` (= gguf.GGMLQuantizationType).
enum TypeId : int {
    kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
    kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kIQ4_NL = 20, kIQ4_XS = 23, kBF16 = 30,
    kTQ1_0 = 34, kTQ2_0 = 35, kMXFP4 = 39, kNVFP4 = 40,
};

constexpr int QK_K = 256;        // K-quant / IQ4_XS super-block
constexpr int QK32 = 32;         // legacy block (Q4_0 ... Q8_0, IQ4_NL)
constexpr float GROUP_MAX_EPS = 1e-15f;

SQAT_HD uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
SQAT_HD float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// IEEE binary32 -> binary16, round to nearest even, subnormals kept, overflow -> inf.
// Straight-line code so that a loop over values vectorises: every case is computed and the result
// picked with mask blends (b ^ ((a ^ b) & mask)); a ?: would let the compiler move the float operation
// into a branch, which it then may not turn back into a select under -ftrapping-math.
// The subnormal case is the one float operation: |f|*2^24 is exact (a power-of-two scaling into
// [0, 1024)), and adding 2^23 rounds it to an integer, ties to even, in the low mantissa bits.  That
// needs the default rounding mode and no flush-to-zero of inputs, which the build guarantees
// (DESIGN.md decision 3); everything else is integer arithmetic.
SQAT_HD_INLINE uint16_t fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    // normal half: re-bias the exponent 127 -> 15, round the mantissa to 10 bits (ties to even)
    const uint32_t normal = (ax - 0x38000000u + 0xfffu + ((ax >> 13) & 1u)) >> 13;
    // below 2^-14: subnormal half (or zero), the integer round(|f| * 2^24)
    const uint32_t subnormal = f32_bits(f32_from_bits(ax) * 16777216.0f + 8388608.0f) - 0x4b000000u;
    const uint32_t is_subnormal = 0u - (uint32_t)(ax < 0x38800000u);
    const uint32_t is_inf = 0u - (uint32_t)(ax >= 0x477ff000u);  // rounds to >= 65520 (or inf, NaN)
    const uint32_t is_nan = 0u - (uint32_t)(ax > 0x7f800000u);
    uint32_t h = normal ^ ((subnormal ^ normal) & is_subnormal);
    h = h ^ ((0x7c00u ^ h) & is_inf);
    h = h ^ ((0x7e00u ^ h) & is_nan);
    return (uint16_t)(sign | h);
}

// binary16 -> binary32, exact, branch-free (so that it vectorises in loops across blocks), and with no
// arithmetic on subnormal floats (which costs a microcode assist: K-quant super-scales are often fp16
// subnormals).  Normal halves re-bias the exponent.  A subnormal half m * 2^-24 is read with exponent
// 2^-14 as 2^-14 + m * 2^-24, and 2^-14 is subtracted exactly.
SQAT_HD_INLINE float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t mag = (uint32_t)(h & 0x7fffu);
    const uint32_t bits = mag << 13;
    const uint32_t normal = bits + (112u << 23);
    const uint32_t subnormal = f32_bits(f32_from_bits(bits + (113u << 23)) - 0x1p-14f);
    // Exponent 31: ggml widens through an f32 multiply, which on x86 quiets a signalling NaN (payload kept).
    const uint32_t m = mag & 0x3ffu;
    const uint32_t special = 0x7f800000u | (m << 13) | ((uint32_t)(m != 0) << 22);
    const uint32_t is_subnormal = 0u - (uint32_t)(mag < 0x0400u);
    const uint32_t is_special = 0u - (uint32_t)(mag >= 0x7c00u);
    uint32_t r = normal ^ ((subnormal ^ normal) & is_subnormal);
    r = r ^ ((special ^ r) & is_special);
    return f32_from_bits(sign | r);
}

// binary32 -> bfloat16 as ggml_compute_fp32_to_bf16: NaN forced quiet, else round to nearest even.
SQAT_HD uint16_t fp32_to_bf16(float f) {
    // Blend in 32 bits and shift once: narrowing a NaN mask to 16 bits is costly without SSE4.
    const uint32_t u = f32_bits(f);
    const uint32_t rounded = u + (0x7fffu + ((u >> 16) & 1u));
    const uint32_t quiet = u | 0x00400000u;
    const uint32_t is_nan = 0u - (uint32_t)((u & 0x7fffffffu) > 0x7f800000u);
    return (uint16_t)((rounded ^ ((quiet ^ rounded) & is_nan)) >> 16);
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
// Upstream runs a binary search and then compares x - V[i] with V[i+1] - x.  Both differences are
// exact wherever they are close (near a midpoint |x| > 4, the gaps are <= 24), so that comparison is
// the exact test x >= (V[i] + V[i+1])/2, and every midpoint is a half-integer float.  The index is
// therefore the number of midpoints not above x: a branch-free count.  Written as !(x < m) so that a
// NaN counts every midpoint and gives 15, as upstream's search does.
SQAT_HD int iq4nl_best_index(float x) {
    constexpr float mid[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                               7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};
    int n = 0;
    for (int i = 0; i < 15; ++i) n += (int)!(x < mid[i]);
    return n;
}

SQAT_HD void store_u16(uint8_t* p, uint16_t v) { p[0] = (uint8_t)(v & 0xff); p[1] = (uint8_t)(v >> 8); }
SQAT_HD uint16_t load_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }
SQAT_HD void store_u32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = (uint8_t)(v >> (8 * i)); }
SQAT_HD uint32_t load_u32(const uint8_t* p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

// Eight bytes as a little-endian integer: one load where the target is little-endian (x86, CUDA).
SQAT_HD uint64_t load_u64_le(const uint8_t* p) {
#if defined(__CUDACC__) || (defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= (uint64_t)p[i] << (8 * i);
    return v;
#endif
}

SQAT_HD void store_u64_le(uint8_t* p, uint64_t v) {
#if defined(__CUDACC__) || (defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    memcpy(p, &v, 8);
#else
    for (int i = 0; i < 8; ++i) p[i] = (uint8_t)(v >> (8 * i));
#endif
}

// Σ x² / n over a whole row, sequential: the `sigma2` of the Q4_0/Q4_1/Q5_0/Q5_1 imatrix path.
SQAT_HD float row_sigma2(const float* x, int64_t n) {
    float s = 0.0f;
    for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
    return s / (float)n;
}

}  // namespace sqat
