"""The float 4-bit formats MXFP4 (32 values) and NVFP4 (64 values) (NumPy reference).

Both store each value as a 4-bit E2M1 code (sign bit 3, magnitude levels ``0, 0.5, 1, 1.5, 2, 3, 4, 6``) and
differ in their scales. ggml keeps the levels doubled, as the integers ``KVALUES_FP4`` (so code 8 is a second
zero), and halves the scale instead. Neither quantizer uses an importance matrix: ``quantize_mxfp4`` and
``quantize_nvfp4`` ignore it, so ``imatrix`` is accepted and dropped here as well.

MXFP4, per 32-value block:

1. ``amax`` = largest ``|x|`` (strict ``<`` scan from 0);
2. ``e = (uint8)(floor(log2f(amax)) - 2 + 127)``, or 0 when ``amax`` is 0. ``log2f`` is glibc's; the only
   thing that matters is on which side of an integer its float32 result lands, and that equals float32
   rounding of the exact logarithm (checked over every positive float32 against glibc 2.36 and against the
   float64 ``np.log2`` used here). Just below a power of two that rounding reaches the next integer (e.g.
   ``amax = 8 - 2**-21`` gives 3). Below ``2**-125`` the sum is negative and the conversion keeps the low
   byte of the int32 (x86), so ``e`` wraps to 232..255;
3. scale ``d = 2**(e - 128)`` (``ggml_e8m0_to_fp32_half``: the E8M0 value halved, a float32 subnormal for
   e < 2);
4. code of each value: the first of the 16 table entries with the smallest ``|KVALUES_FP4[i] * d - x|``
   (float32, strict ``<``), so an exact tie goes to the smaller magnitude and a negative value that rounds
   to zero gets code 0, not 8.

NVFP4, per 16-value sub-block (four per block):

1. ``amax`` as above; ``ue = ggml_fp32_to_ue4m3(amax / 6)`` (see :func:`fp32_to_ue4m3`);
2. ``d = ggml_ue4m3_to_fp32(ue)``, half the UE4M3 value (see :func:`ue4m3_to_fp32`);
3. codes as for MXFP4.

Layouts:

    MXFP4 17 B: e (E8M0) | qs[16]            byte j = code j | code j+16 << 4
    NVFP4 36 B: d[4] (UE4M3) | qs[4][8]      sub-block s: qs[s][j] = code 16s+j | code 16s+8+j << 4

Dequantization: ``KVALUES_FP4[q] * d`` (one float32 product; an MXFP4 ``e`` of 253..255 makes the large levels
overflow to inf, as in ggml).
"""

from __future__ import annotations

import numpy as np

from ._blocks import (
    F32,
    first_abs_max,
    pack_nibbles,
    packed_rows,
    prepare_input,
    prepare_packed,
    silence_fp_warnings,
    unpack_nibbles,
    value_rows,
)

__all__ = [
    "KVALUES_FP4",
    "best_index_fp4",
    "dequantize_mxfp4",
    "dequantize_nvfp4",
    "e8m0_to_fp32_half",
    "fp32_to_ue4m3",
    "mxfp4_exponent",
    "quantize_mxfp4",
    "quantize_nvfp4",
    "ue4m3_to_fp32",
]

#: ggml's ``kvalues_fp4`` (int8 in ggml): twice the E2M1 values, codes 0..7 positive, 8..15 negative.
KVALUES_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)

_QK_MX = 32  # MXFP4 block
_QK_NV = 64  # NVFP4 block
_SUB_NV = 16  # NVFP4 values per scale


def best_index_fp4(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_mxfp4(x, d)``: the first code with the smallest ``|KVALUES_FP4[i] * d - x|``.

    The 16 candidates are scanned in index order with a strict ``<`` (as upstream), in float32.

    Args:
        x: float32 [B, n] values.
        d: float32 [B] scale per row of ``x``.

    Returns:
        int64 [B, n], codes 0..15.
    """
    dcol = d[:, None]
    best = np.zeros(x.shape, dtype=np.int64)
    best_err = np.abs(KVALUES_FP4[0] * dcol - x)
    for i in range(1, 16):
        err = np.abs(KVALUES_FP4[i] * dcol - x)
        take = err < best_err
        best = np.where(take, i, best)
        best_err = np.where(take, err, best_err)
    return best


def mxfp4_exponent(amax: np.ndarray) -> np.ndarray:
    """The E8M0 byte of MXFP4 blocks with largest magnitudes ``amax`` (float32 [B], finite, >= 0).

    ``(uint8)(floorf(log2f(amax)) - 2 + 127)``, 0 for ``amax == 0``. float32 rounding of a float64 logarithm
    reproduces glibc's ``log2f`` on which side of an integer it lands (module docstring); the conversion
    truncates to int32 and keeps the low byte (x86), so tiny blocks wrap.

    Returns:
        uint8 [B].
    """
    with np.errstate(divide="ignore"):
        lg = np.floor(np.log2(amax.astype(np.float64)).astype(F32))
    lg = np.where(amax > 0, lg, F32(0.0))  # keeps -inf (amax == 0) out of the conversion below
    e = (lg - F32(2.0) + F32(127.0)).astype(np.int64) & 0xFF
    return np.where(amax > 0, e, 0).astype(np.uint8)


def e8m0_to_fp32_half(e: np.ndarray) -> np.ndarray:
    """ggml's ``ggml_e8m0_to_fp32_half``: uint8 [...] -> float32 ``2**(e - 128)`` (subnormal for e < 2)."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


def ue4m3_to_fp32(b: np.ndarray) -> np.ndarray:
    """ggml's ``ggml_ue4m3_to_fp32``: half the value of an unsigned E4M3 byte, float32.

    Exponent bits 3..6 (bias 7), mantissa bits 0..2; exponent 0 is subnormal (``man * 2**-9``). Bytes 0 and
    0x7F give 0. Bit 7 is ignored, except that 0xFF (unlike 0x7F) decodes as exponent 15, mantissa 7.

    Args:
        b: uint8 array of any shape.

    Returns:
        float32 array of the same shape.
    """
    b = b.astype(np.int64)
    exp = (b >> 3) & 0xF
    man = (b & 7).astype(F32)
    # Every product is exact (powers of two and at most four significant bits), so float32 is fine here.
    sub = man * F32(2.0**-9)
    normal = (F32(1.0) + man / F32(8.0)) * np.ldexp(F32(1.0), exp - 7).astype(F32)
    raw = np.where(exp == 0, sub, normal).astype(F32)
    return np.where((b == 0) | (b == 0x7F), F32(0.0), raw * F32(0.5)).astype(F32)


def fp32_to_ue4m3(x: np.ndarray) -> np.ndarray:
    """ggml's ``ggml_fp32_to_ue4m3`` for finite float32 ``x`` (any shape) -> uint8.

    * ``x <= 0`` gives 0; ``x`` is capped at 448;
    * below 2**-6 (UE4M3's subnormals): ``man = (int)(x * 512 + 0.5f)`` in float32 (the sum itself rounds,
      so values a hair below a half can round up), capped at 7 -- values in ``[7.5, 8) * 2**-9`` stay at
      mantissa 7 instead of becoming the smallest normal; ``man < 1`` gives 0;
    * otherwise the top three mantissa bits plus the next bit (ties away from zero, sticky bits ignored),
      carrying into the exponent; any exponent >= 15, i.e. every ``x >= 256`` and anything rounding up past
      240, gives 0x7E (448): the codes 0x78..0x7D are never produced.
    """
    x = np.asarray(x, dtype=F32)
    positive = x > 0
    x = np.minimum(np.where(positive, x, F32(0.0)), F32(448.0))
    bits = x.view(np.uint32).astype(np.int64)
    fexp = ((bits >> 23) & 0xFF) - 127
    uexp = fexp + 7
    man3 = (bits >> 20) & 7
    round_bit = (bits >> 19) & 1

    sub_man = np.minimum((x * F32(512.0) + F32(0.5)).astype(np.int64), 7)
    sub = np.where(sub_man < 1, 0, sub_man)

    m = man3 + round_bit
    carry = m > 7
    uexp_r = np.where(carry, uexp + 1, uexp)
    m = np.where(carry, 0, m)
    normal = np.where(uexp_r >= 15, 0x7E, (uexp_r << 3) | m)

    out = np.where(uexp <= 0, sub, np.where(uexp >= 15, 0x7E, normal))
    return np.where(positive, out, 0).astype(np.uint8)


@silence_fp_warnings
def quantize_mxfp4(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """MXFP4 rows as ``quantize_mxfp4`` writes them (``quantize_row_mxfp4_ref``; the imatrix is unused).

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 32.
        imatrix: None or float32 [n_per_row]; validated, then ignored (as ggml does).

    Returns:
        uint8 [nrows, n_per_row // 32 * 17].
    """
    x, _ = prepare_input(x, imatrix, _QK_MX)
    xb = x.reshape(-1, _QK_MX)
    amax, _ = first_abs_max(xb)
    e = mxfp4_exponent(amax)
    codes = best_index_fp4(xb, e8m0_to_fp32_half(e))
    blocks = np.zeros((xb.shape[0], 17), dtype=np.uint8)
    blocks[:, 0] = e
    blocks[:, 1:] = pack_nibbles(codes)  # byte j = code j | code j+16 << 4
    return packed_rows(blocks, x.shape, _QK_MX)


@silence_fp_warnings
def dequantize_mxfp4(data: np.ndarray) -> np.ndarray:
    """MXFP4 bytes -> values ``KVALUES_FP4[q] * 2**(e - 128)``.

    Args:
        data: uint8 [nrows, nblocks * 17].

    Returns:
        float32 [nrows, nblocks * 32].
    """
    blocks = prepare_packed(data, 17)
    d = e8m0_to_fp32_half(blocks[:, 0])
    codes = unpack_nibbles(blocks[:, 1:])
    return value_rows(KVALUES_FP4[codes] * d[:, None], data.shape, 17, _QK_MX)


@silence_fp_warnings
def quantize_nvfp4(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """NVFP4 rows as ``quantize_nvfp4`` writes them (``quantize_row_nvfp4_ref``; the imatrix is unused).

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 64.
        imatrix: None or float32 [n_per_row]; validated, then ignored (as ggml does).

    Returns:
        uint8 [nrows, n_per_row // 64 * 36].
    """
    x, _ = prepare_input(x, imatrix, _QK_NV)
    xs = x.reshape(-1, _SUB_NV)  # sub-blocks, four per block
    amax, _ = first_abs_max(xs)
    ue = fp32_to_ue4m3(amax / F32(6.0))
    codes = best_index_fp4(xs, ue4m3_to_fp32(ue))
    nblocks = xs.shape[0] // 4
    blocks = np.zeros((nblocks, 36), dtype=np.uint8)
    blocks[:, 0:4] = ue.reshape(nblocks, 4)
    blocks[:, 4:] = pack_nibbles(codes).reshape(nblocks, 32)  # per sub-block: code j | code j+8 << 4
    return packed_rows(blocks, x.shape, _QK_NV)


@silence_fp_warnings
def dequantize_nvfp4(data: np.ndarray) -> np.ndarray:
    """NVFP4 bytes -> values ``KVALUES_FP4[q] * ue4m3_to_fp32(d[s])`` per 16-value sub-block s.

    Args:
        data: uint8 [nrows, nblocks * 36].

    Returns:
        float32 [nrows, nblocks * 64].
    """
    blocks = prepare_packed(data, 36)
    d = ue4m3_to_fp32(blocks[:, 0:4])  # [nblocks, 4]
    codes = unpack_nibbles(blocks[:, 4:].reshape(-1, 4, 8))  # [nblocks, 4, 16]
    return value_rows(KVALUES_FP4[codes] * d[:, :, None], data.shape, 36, _QK_NV)
