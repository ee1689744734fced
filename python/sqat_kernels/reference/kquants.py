"""The 256-value K-quant formats Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (NumPy reference).

Q2_K and Q3_K (16 sub-blocks of 16 values, their own searches with and without an importance matrix) are
described in :func:`quantize_q2_K` and :func:`quantize_q3_K`; the rest of this docstring is about the
others.

Paths follow ``ggml_quantize_chunk`` (spec §3, §4.3-4.7, §6.1-6.2):

* without an importance matrix: ``quantize_row_q{4,5,6}_K_ref`` (Q4_K/Q5_K: per-32 ``make_qkx2_quants``
  with weights ``sqrt(Σx²/32) + |x|``, 6-bit sub-scales/mins by plain rounding against the largest one;
  Q6_K: per-16 ``make_qx_quants`` with weights ``x²`` and int8 sub-scales);
* with one (one float per column, shared by all rows): ``quantize_row_q{4,5,6}_K_impl`` (Q4_K/Q5_K: weights
  ``qw * sqrt(sigma2 + x²)`` with ``sigma2 = 2·Σx²/256`` over the super-block, ``make_qkx3_quants``, and the
  6-bit sub-scales/mins from ``make_qp_quants``; Q6_K: ``make_qx_quants`` weighted by the raw imatrix).

Both then re-quantize every value with the *stored* fp16 super-scales (a true division), except in
sub-blocks whose effective scale ``d * sc`` is exactly zero: those keep the levels found by the search (sticky
state that matters for bit-exactness). All values are float32 with one rounding per operation in C's
evaluation order; sums are sequential; arrays are vectorised across super-blocks (``[nblocks, 256]``).

Block layouts (little-endian; spec §2.2, §2.3):

    Q4_K 144 B: d f16 | dmin f16 | scales[12] | qs[128]
    Q5_K 176 B: d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
    Q6_K 210 B: ql[128] | qh[64] | scales[16] int8 | d f16

Q4_K/Q5_K: value ``64c + l`` (chunk c = 0..3, l = 0..31) is the low nibble of ``qs[32c + l]`` and value
``64c + 32 + l`` its high nibble; Q5_K keeps their bit 4 in bits ``2c`` and ``2c + 1`` of ``qh[l]``. The
twelve scale bytes hold eight 6-bit scales and eight 6-bit mins (:func:`_pack_scale_min`,
:func:`_unpack_scale_min`). Q6_K: see :func:`quantize_q6_K`.
"""

from __future__ import annotations

import numpy as np

from ._blocks import (
    GROUP_MAX_EPS,
    block_weights,
    f16_from_bytes,
    f16_to_bytes,
    first_abs_max,
    nearest_int,
    pack_nibbles,
    packed_rows,
    prepare_input,
    prepare_packed,
    round_trip_f16,
    scan_max,
    seq_sum,
    silence_fp_warnings,
    unpack_nibbles,
    value_rows,
    wrap_int8,
)
from .search import make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qp_quants, make_qx_quants

__all__ = [
    "QK_K",
    "dequantize_q2_K",
    "dequantize_q3_K",
    "dequantize_q4_K",
    "dequantize_q5_K",
    "dequantize_q6_K",
    "quantize_q2_K",
    "quantize_q3_K",
    "quantize_q4_K",
    "quantize_q5_K",
    "quantize_q6_K",
]

F32 = np.float32

#: Values per super-block.
QK_K = 256

_Q4_K_BYTES = 144
_Q5_K_BYTES = 176
_Q6_K_BYTES = 210


# ------------------------------------------------------------------------------------------------------------
# Input plumbing
# ------------------------------------------------------------------------------------------------------------


def _super_blocks(
    x: np.ndarray, imatrix: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate inputs and cut them into super-blocks.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None, or float32 [n_per_row].

    Returns:
        ``(x, xs, qw)``: the validated ``x``, float32 [nrows * n_per_row // 256, 256] super-blocks and the
        importance of each of their values (float32, same shape) or None.
    """
    x, imatrix = prepare_input(x, imatrix, QK_K)
    qw = None if imatrix is None else block_weights(imatrix, x.shape[0], QK_K)
    return x, x.reshape(-1, QK_K), qw


# ------------------------------------------------------------------------------------------------------------
# 6-bit scale/min packing shared by Q4_K and Q5_K
# ------------------------------------------------------------------------------------------------------------


def _pack_scale_min(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Pack eight sub-block scales and mins into ggml's 12 bytes (spec §2.3).

    Bytes 0-3 / 4-7 hold the low six bits of scales / mins 0-3 and, in their top two bits, bits 4-5 of
    scales / mins 4-7; bytes 8-11 hold the low nibbles of scale and min 4-7. Stores into the uint8 fields
    truncate to 8 bits exactly as the C assignments do (only relevant for levels > 63).

    Args:
        ls, lm: integer arrays [B, 8] with values 0..255.

    Returns:
        uint8 [B, 12].
    """
    ls = ls.astype(np.int64)
    lm = lm.astype(np.int64)
    s = np.zeros((ls.shape[0], 12), dtype=np.int64)
    for j in range(4):
        s[:, j] = ls[:, j]
        s[:, j + 4] = lm[:, j]
    for j in range(4, 8):
        s[:, j + 4] = (ls[:, j] & 0xF) | ((lm[:, j] & 0xF) << 4)
        s[:, j - 4] |= (ls[:, j] >> 4) << 6
        s[:, j] |= (lm[:, j] >> 4) << 6
    return (s & 0xFF).astype(np.uint8)


def _unpack_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's ``get_scale_min_k4`` for all eight sub-blocks: uint8 [B, 12] -> (sc, m), int32 [B, 8] each."""
    s = s.astype(np.int32)
    sc = np.empty((s.shape[0], 8), dtype=np.int32)
    m = np.empty((s.shape[0], 8), dtype=np.int32)
    for j in range(4):
        sc[:, j] = s[:, j] & 63
        m[:, j] = s[:, j + 4] & 63
    for j in range(4, 8):
        sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
        m[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, m


# ------------------------------------------------------------------------------------------------------------
# Q4_K / Q5_K
# ------------------------------------------------------------------------------------------------------------


@silence_fp_warnings
def _quantize_q45_K(xs: np.ndarray, qw: np.ndarray | None, nmax: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The part of Q4_K (nmax 15) and Q5_K (nmax 31) quantization before bit packing.

    Args:
        xs: float32 [B, 256] super-blocks.
        qw: float32 [B, 256] importance of each value (imatrix path), or None (reference path).
        nmax: 15 or 31.

    Returns:
        ``(d, dmin, scales, L)``: float32 [B] each (the super-scales *before* fp16 storage), uint8 [B, 12]
        (packed 6-bit sub-scales and mins) and uint8 [B, 256] (levels 0..nmax).
    """
    nb = xs.shape[0]
    xb = xs.reshape(nb * 8, 32)
    if qw is None:
        # quantize_row_q{4,5}_K_ref
        sum_x2 = seq_sum(xb * xb)
        av_x = np.sqrt(sum_x2 / F32(32))
        w = av_x[:, None] + np.abs(xb)
        rmin, nstep = (-1.0, 20) if nmax == 15 else (-0.5, 15)
        scales, mins, L = make_qkx2_quants(nmax, xb, w, rmin, 0.1, nstep, False)
        scales = scales.reshape(nb, 8)
        mins = mins.reshape(nb, 8)
        max_scale = scan_max(scales, 0.0)
        max_min = scan_max(mins, 0.0)
        inv_scale = np.where(max_scale > 0, F32(63.0) / max_scale, F32(0.0))
        inv_min = np.where(max_min > 0, F32(63.0) / max_min, F32(0.0))
        # uint8_t ls = nearest_int(...) wraps modulo 256 before MIN(63, ls).
        ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF)
        lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF)
        d = max_scale / F32(63.0)
        dmin = max_min / F32(63.0)
    else:
        # quantize_row_q{4,5}_K_impl
        sum_x2 = seq_sum(xs * xs)
        sigma2 = F32(2.0) * sum_x2 / F32(QK_K)
        w = (qw * np.sqrt(sigma2[:, None] + xs * xs)).reshape(nb * 8, 32)
        sw = seq_sum(w).reshape(nb, 8)
        scales, mins, L = make_qkx3_quants(nmax, xb, w, -0.9, 0.05, 36, False)
        d, ls = make_qp_quants(63, scales.reshape(nb, 8), sw)
        dmin, lm = make_qp_quants(63, mins.reshape(nb, 8), sw)
        if nmax == 31:
            # Only the Q5_K variant clamps the make_qp_quants levels (Q4_K stores them as they are).
            ls = np.minimum(63, ls)
            lm = np.minimum(63, lm)
    packed = _pack_scale_min(ls, lm)

    # Re-quantize with the stored fp16 super-scales and 6-bit sub-scales; skip sub-blocks with d*sc == 0.
    sc, m = _unpack_scale_min(packed)
    dj = round_trip_f16(d)[:, None] * sc.astype(F32)
    dm = round_trip_f16(dmin)[:, None] * m.astype(F32)
    x3 = xs.reshape(nb, 8, 32)
    requant = np.clip(nearest_int((x3 + dm[:, :, None]) / dj[:, :, None]), 0, nmax)
    L = np.where(dj[:, :, None] == 0, L.reshape(nb, 8, 32), requant).astype(np.uint8)
    return d, dmin, packed, L.reshape(nb, QK_K)


def _nibbles_q4_K(L: np.ndarray) -> np.ndarray:
    """Levels uint8 [B, 256] (0..15) -> qs uint8 [B, 128]: value 64c+l low nibble, 64c+32+l high nibble."""
    return pack_nibbles(L.reshape(-1, 4, 64)).reshape(-1, 128)


def _levels_q4_K(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_nibbles_q4_K`: uint8 [B, 128] -> int32 [B, 256]."""
    return unpack_nibbles(qs.reshape(-1, 4, 32)).reshape(-1, QK_K)


@silence_fp_warnings
def quantize_q4_K(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to Q4_K exactly as ``ggml_quantize_chunk(GGML_TYPE_Q4_K, ...)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None (``quantize_row_q4_K_ref``) or float32 [n_per_row] (``quantize_row_q4_K_impl``).

    Returns:
        uint8 [nrows, n_per_row // 256 * 144].
    """
    x, xs, qw = _super_blocks(x, imatrix)
    d, dmin, scales, L = _quantize_q45_K(xs, qw, 15)
    blocks = np.concatenate([f16_to_bytes(d), f16_to_bytes(dmin), scales, _nibbles_q4_K(L)], axis=1)
    return packed_rows(blocks, x.shape, QK_K)


@silence_fp_warnings
def quantize_q5_K(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to Q5_K exactly as ``ggml_quantize_chunk(GGML_TYPE_Q5_K, ...)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None (``quantize_row_q5_K_ref``) or float32 [n_per_row] (``quantize_row_q5_K_impl``).

    Returns:
        uint8 [nrows, n_per_row // 256 * 176].
    """
    x, xs, qw = _super_blocks(x, imatrix)
    d, dmin, scales, L = _quantize_q45_K(xs, qw, 31)
    hi = (L >> 4).reshape(-1, 4, 2, 32)  # bit 4 of value 64c + 32h + l
    qh = np.zeros((L.shape[0], 32), dtype=np.uint8)
    for c in range(4):
        for h in range(2):
            qh |= (hi[:, c, h, :] << (2 * c + h)).astype(np.uint8)
    qs = _nibbles_q4_K(L & 0xF)
    blocks = np.concatenate([f16_to_bytes(d), f16_to_bytes(dmin), scales, qh, qs], axis=1)
    return packed_rows(blocks, x.shape, QK_K)


@silence_fp_warnings
def dequantize_q4_K(data: np.ndarray) -> np.ndarray:
    """Q4_K bytes -> values ``(d*sc) * q - (dmin*m)`` as ``dequantize_row_q4_K``.

    Args:
        data: uint8 [nrows, nblocks * 144].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, _Q4_K_BYTES)
    q = _levels_q4_K(blocks[:, 16:]).reshape(-1, 8, 32).astype(F32)
    return value_rows(_dequantize_q45_K(blocks, q), data.shape, _Q4_K_BYTES, QK_K)


@silence_fp_warnings
def dequantize_q5_K(data: np.ndarray) -> np.ndarray:
    """Q5_K bytes -> values ``(d*sc) * (q_lo + 16*hbit) - (dmin*m)`` as ``dequantize_row_q5_K``.

    Args:
        data: uint8 [nrows, nblocks * 176].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, _Q5_K_BYTES)
    lo = _levels_q4_K(blocks[:, 48:]).reshape(-1, 4, 2, 32)
    qh = blocks[:, 16:48].astype(np.int32)[:, None, None, :]
    hi = (qh >> np.arange(8, dtype=np.int32).reshape(4, 2, 1)) & 1  # bit 2c + h of qh[l]
    q = (lo + (hi << 4)).reshape(-1, 8, 32).astype(F32)
    return value_rows(_dequantize_q45_K(blocks, q), data.shape, _Q5_K_BYTES, QK_K)


def _dequantize_q45_K(blocks: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K ``(d*sc) * q - (dmin*m)``: blocks uint8 [B, >=16], levels float32 [B, 8, 32] -> [B, 256]."""
    d = f16_from_bytes(blocks[:, 0:2])
    dmin = f16_from_bytes(blocks[:, 2:4])
    sc, m = _unpack_scale_min(blocks[:, 4:16])
    d1 = d[:, None] * sc.astype(F32)
    m1 = dmin[:, None] * m.astype(F32)
    return (d1[:, :, None] * q - m1[:, :, None]).reshape(-1, QK_K)


# ------------------------------------------------------------------------------------------------------------
# Q6_K
# ------------------------------------------------------------------------------------------------------------


@silence_fp_warnings
def quantize_q6_K(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to Q6_K exactly as ``ggml_quantize_chunk(GGML_TYPE_Q6_K, ...)``.

    Per 16 values ``make_qx_quants(nmax=32, rmse_type=1)`` (weights ``x²``, or the raw imatrix values with
    an importance matrix) gives a signed scale and levels. With ``max_scale`` the first scale of largest
    magnitude and ``iscale = -128 / max_scale``: ``d = fp16(1 / iscale)``, int8 sub-scales
    ``sc = min(127, nearest_int(iscale * scale))``; values are re-quantized as
    ``clamp(nearest_int(x / (d*sc)), -32, 31) + 32`` except in sub-blocks with ``d*sc == 0``. A super-block
    whose scales are all below 1e-15 in magnitude is 210 zero bytes.

    Layout: ``ql[128] | qh[64] | scales[16] | d``. In half h (values 128h..128h+127) with quarters k = 0..3 of
    32 values and l = 0..31: ``ql[64h + l]`` = low nibbles of quarters 0 (low) and 2 (high),
    ``ql[64h + 32 + l]`` = quarters 1 and 3, ``qh[32h + l]`` = bits 4-5 of quarter k at bits ``2k, 2k+1``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None (``quantize_row_q6_K_ref``) or float32 [n_per_row] (``quantize_row_q6_K_impl``).

    Returns:
        uint8 [nrows, n_per_row // 256 * 210].
    """
    x, xs, qw = _super_blocks(x, imatrix)
    nb = xs.shape[0]
    qwb = None if qw is None else qw.reshape(nb * 16, 16)
    scales, L = make_qx_quants(32, xs.reshape(nb * 16, 16), 1, qwb)
    scales = scales.reshape(nb, 16)

    max_abs_scale, max_scale = first_abs_max(scales)
    all_zero = max_abs_scale < GROUP_MAX_EPS

    iscale = F32(-128.0) / max_scale
    d = F32(1.0) / iscale
    sc = np.minimum(127, nearest_int(iscale[:, None] * scales))
    sc = wrap_int8(sc)  # stored as int8_t

    dj = round_trip_f16(d)[:, None] * sc.astype(F32)
    x3 = xs.reshape(nb, 16, 16)
    requant = np.clip(nearest_int(x3 / dj[:, :, None]), -32, 31) + 32
    L = np.where(dj[:, :, None] == 0, L.reshape(nb, 16, 16), requant).reshape(nb, QK_K)

    q = L.astype(np.uint8).reshape(nb, 2, 4, 32)  # [block, half, quarter, l]
    ql = pack_nibbles(q.reshape(nb, 2, 128) & 0xF).reshape(nb, 128)  # quarters 0|2 << 4, then 1|3 << 4
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6))
    qh = qh.reshape(nb, 64)
    sc_bytes = sc.astype(np.int8).view(np.uint8)
    blocks = np.concatenate([ql, qh, sc_bytes, f16_to_bytes(d)], axis=1).astype(np.uint8)
    blocks[all_zero] = 0
    return packed_rows(blocks, x.shape, QK_K)


@silence_fp_warnings
def dequantize_q6_K(data: np.ndarray) -> np.ndarray:
    """Q6_K bytes -> values ``(d * sc) * (q - 32)`` as ``dequantize_row_q6_K`` (sub-block = 16 values).

    Args:
        data: uint8 [nrows, nblocks * 210].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, _Q6_K_BYTES)
    nb = blocks.shape[0]
    # ql[64h + j] holds quarter 0 (j < 32) or 1 in its low nibble and quarter 2 or 3 in its high nibble.
    lo = unpack_nibbles(blocks[:, 0:128].reshape(nb, 2, 64)).reshape(nb, 2, 4, 32)
    qh = blocks[:, 128:192].reshape(nb, 2, 1, 32).astype(np.int32)
    hi = (qh >> (2 * np.arange(4, dtype=np.int32))[:, None]) & 3  # bits 2k, 2k+1 of qh[32h + l]: quarter k
    q = (lo | (hi << 4)).reshape(nb, 16, 16) - 32
    sc = blocks[:, 192:208].view(np.int8).astype(F32)
    d = f16_from_bytes(blocks[:, 208:210])
    dsc = d[:, None] * sc
    return value_rows(dsc[:, :, None] * q.astype(F32), data.shape, _Q6_K_BYTES, QK_K)


# ------------------------------------------------------------------------------------------------------------
# Q2_K / Q3_K: 16 sub-blocks of 16 values, 2-bit low parts packed alike
# ------------------------------------------------------------------------------------------------------------

_Q2_K_BYTES = 84
_Q3_K_BYTES = 110


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """Levels [B, 256] (0..3) -> qs uint8 [B, 64]: value ``128h + 32k + l`` in bits ``2k, 2k+1`` of byte
    ``32h + l``."""
    q = L.astype(np.int32).reshape(-1, 2, 4, 32)
    qs = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    return qs.reshape(-1, 64).astype(np.uint8)


def _unpack_2bit(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pack_2bit`: uint8 [B, 64] -> int32 [B, 256]."""
    q = qs.astype(np.int32).reshape(-1, 2, 1, 32)
    return ((q >> (2 * np.arange(4, dtype=np.int32))[:, None]) & 3).reshape(-1, QK_K)


def _imatrix_weights(xs: np.ndarray, qw: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-value weights ``qw * sqrt(sigma2 + x²)`` with ``sigma2 = factor·Σx²/256`` per super-block, as
    float32 [B*16, 16] (one row per sub-block), and each sub-block's Σw, float32 [B, 16]."""
    nb = xs.shape[0]
    sigma2 = F32(factor) * seq_sum(xs * xs) / F32(QK_K)
    w = (qw * np.sqrt(sigma2[:, None] + xs * xs)).reshape(nb * 16, 16)
    return w, seq_sum(w).reshape(nb, 16)


@silence_fp_warnings
def quantize_q2_K(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to Q2_K exactly as ``ggml_quantize_chunk(GGML_TYPE_Q2_K, ...)``.

    Without an importance matrix (``quantize_row_q2_K_ref``): per 16 values ``make_qkx2_quants(nmax=3)`` with
    weights ``|x|``, trials ``-0.5 + 0.1·is`` (is = 0..15) and the *absolute* error; the 4-bit sub-scales and
    sub-mins are ``nearest_int(15/max · s)`` against the largest of each (``d = max/15``, both 0 when the
    largest is not positive), stored without a clamp.

    With one (``quantize_row_q2_K_impl``): weights ``qw * sqrt(Σx²/256 + x²)`` (no factor 2 here),
    ``make_qkx3_quants`` with trials ``-0.9 + 0.05·is`` (is = 0..36) and squared error, and the sub-scales and
    sub-mins from ``make_qp_quants(nmax=15)`` weighted by each sub-block's Σw.

    Both re-quantize with the stored fp16 ``d``/``dmin``: ``clamp(nearest_int((x + dmin·m) / (d·sc)), 0, 3)``,
    except in sub-blocks with ``d·sc == 0``, which keep the search's levels.

    Layout: ``scales[16]`` (sub-block j: scale in the low nibble, min in the high one) | ``qs[64]`` | ``d`` |
    ``dmin``; value ``128h + 32k + l`` sits in bits ``2k..2k+1`` of ``qs[32h + l]``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 256 * 84].
    """
    x, xs, qw = _super_blocks(x, imatrix)
    nb = xs.shape[0]
    xb = xs.reshape(nb * 16, 16)
    if qw is None:
        scales, mins, L = make_qkx2_quants(3, xb, np.abs(xb), -0.5, 0.1, 15, True)
        scales = scales.reshape(nb, 16)
        mins = mins.reshape(nb, 16)
        max_scale = scan_max(scales, 0.0)
        max_min = scan_max(mins, 0.0)
        has_scale = max_scale > 0
        has_min = max_min > 0
        inv_scale = F32(15.0) / np.where(has_scale, max_scale, F32(1.0))
        inv_min = F32(15.0) / np.where(has_min, max_min, F32(1.0))
        ls = np.where(has_scale[:, None], nearest_int(inv_scale[:, None] * scales), 0)
        lm = np.where(has_min[:, None], nearest_int(inv_min[:, None] * mins), 0)
        d = np.where(has_scale, max_scale / F32(15.0), F32(0.0))
        dmin = np.where(has_min, max_min / F32(15.0), F32(0.0))
    else:
        w, sw = _imatrix_weights(xs, qw.reshape(nb, QK_K), 1.0)
        scales, mins, L = make_qkx3_quants(3, xb, w, -0.9, 0.05, 36, False)
        d, ls = make_qp_quants(15, scales.reshape(nb, 16), sw)
        dmin, lm = make_qp_quants(15, mins.reshape(nb, 16), sw)
    # uint8 stores of ints: scales[j] = ls, then |= lm << 4 (both wrap modulo 256 as in C)
    sc = ((ls.astype(np.int64) & 0xFF) | ((lm.astype(np.int64) << 4) & 0xFF)).astype(np.uint8)

    dj = round_trip_f16(d)[:, None] * (sc & 0xF).astype(F32)
    dm = round_trip_f16(dmin)[:, None] * (sc >> 4).astype(F32)
    x3 = xs.reshape(nb, 16, 16)
    requant = np.clip(nearest_int((x3 + dm[:, :, None]) / dj[:, :, None]), 0, 3)
    L = np.where(dj[:, :, None] == 0, L.reshape(nb, 16, 16), requant).reshape(nb, QK_K)
    blocks = np.concatenate([sc, _pack_2bit(L), f16_to_bytes(d), f16_to_bytes(dmin)], axis=1)
    return packed_rows(blocks, x.shape, QK_K)


@silence_fp_warnings
def dequantize_q2_K(data: np.ndarray) -> np.ndarray:
    """Q2_K bytes -> values ``(d·sc)·q - (dmin·m)`` as ``dequantize_row_q2_K`` (sub-block = 16 values).

    Args:
        data: uint8 [nrows, nblocks * 84].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, _Q2_K_BYTES)
    sc = blocks[:, :16].astype(np.int32)
    q = _unpack_2bit(blocks[:, 16:80]).reshape(-1, 16, 16).astype(F32)
    d = f16_from_bytes(blocks[:, 80:82])
    dmin = f16_from_bytes(blocks[:, 82:84])
    dl = d[:, None] * (sc & 0xF).astype(F32)
    ml = dmin[:, None] * (sc >> 4).astype(F32)
    return value_rows(dl[:, :, None] * q - ml[:, :, None], data.shape, _Q2_K_BYTES, QK_K)


def _pack_q3_scales(l6: np.ndarray) -> np.ndarray:
    """16 six-bit values [B, 16] (0..63) -> Q3_K's 12 scale bytes, uint8 [B, 12].

    Bytes 0..7: low nibbles of values 0..7 (low half of the byte) and 8..15 (high half); bytes 8..11: the top
    two bits of value j at bits ``2(j//4)`` of byte ``8 + j%4``.
    """
    l6 = l6.astype(np.int32)
    s = np.zeros((l6.shape[0], 12), dtype=np.int32)
    for j in range(16):
        if j < 8:
            s[:, j] = l6[:, j] & 0xF
        else:
            s[:, j - 8] |= (l6[:, j] & 0xF) << 4
        s[:, 8 + j % 4] |= (l6[:, j] >> 4) << (2 * (j // 4))
    return (s & 0xFF).astype(np.uint8)


def _unpack_q3_scales(s: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pack_q3_scales`: uint8 [B, 12] -> int32 [B, 16] (0..63)."""
    s = s.astype(np.int32)
    out = np.empty((s.shape[0], 16), dtype=np.int32)
    for j in range(16):
        lo = s[:, j] & 0xF if j < 8 else s[:, j - 8] >> 4
        out[:, j] = lo | (((s[:, 8 + j % 4] >> (2 * (j // 4))) & 3) << 4)
    return out


@silence_fp_warnings
def quantize_q3_K(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to Q3_K exactly as ``ggml_quantize_chunk(GGML_TYPE_Q3_K, ...)``.

    Without an importance matrix (``quantize_row_q3_K_ref``): per 16 values :func:`make_q3_quants` (nmax 4,
    weights ``x²``, coordinate descent); with ``max_scale`` the first scale of largest magnitude and
    ``iscale = -32/max_scale``, the 6-bit sub-scales are ``clamp(nearest_int(iscale·s), -32, 31) + 32`` and
    ``d = fp16(1/iscale)`` (everything 0 when ``max_scale`` is 0).

    With one (``quantize_row_q3_K_impl``): weights ``qw * sqrt(2·Σx²/256 + x²)``, ``make_qx_quants(nmax=4,
    rmse_type=1)`` per sub-block, then ``make_qx_quants(nmax=32)`` over the 16 sub-scales weighted by each
    sub-block's Σw gives ``d`` and the 6-bit sub-scales.

    Both re-quantize with the stored scales: ``clamp(nearest_int(x / (d·(sc - 32))), -4, 3) + 4``, except in
    sub-blocks whose step is 0, which keep the search's levels. Levels 4..7 set their bit in ``hmask``.

    Layout: ``hmask[32]`` (bit v//32 of byte v%32: level of value v >= 4) | ``qs[64]`` (low two bits, as Q2_K)
    | ``scales[12]`` (:func:`_pack_q3_scales`) | ``d``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 256 * 110].
    """
    x, xs, qw = _super_blocks(x, imatrix)
    nb = xs.shape[0]
    xb = xs.reshape(nb * 16, 16)
    if qw is None:
        scales, L = make_q3_quants(4, xb)
        scales = scales.reshape(nb, 16)
        _, max_scale = first_abs_max(scales)
        nonzero = max_scale != 0
        iscale = F32(-32.0) / np.where(nonzero, max_scale, F32(1.0))
        l6 = np.clip(wrap_int8(nearest_int(iscale[:, None] * scales)), -32, 31) + 32
        packed = np.where(nonzero[:, None], _pack_q3_scales(l6), 0).astype(np.uint8)
        d = np.where(nonzero, F32(1.0) / iscale, F32(0.0))
    else:
        w, sw = _imatrix_weights(xs, qw.reshape(nb, QK_K), 2.0)
        scales, L = make_qx_quants(4, xb, 1, w)
        d, l6 = make_qx_quants(32, scales.reshape(nb, 16), 1, sw)
        packed = _pack_q3_scales(l6)

    dj = round_trip_f16(d)[:, None] * (_unpack_q3_scales(packed) - 32).astype(F32)
    x3 = xs.reshape(nb, 16, 16)
    requant = np.clip(nearest_int(x3 / dj[:, :, None]), -4, 3) + 4
    L = np.where(dj[:, :, None] == 0, L.reshape(nb, 16, 16), requant).reshape(nb, 8, 32).astype(np.int32)
    hi = (L > 3).astype(np.int32)
    hmask = np.zeros((nb, 32), dtype=np.int32)
    for k in range(8):
        hmask |= hi[:, k] << k
    L = (L - 4 * hi).reshape(nb, QK_K)
    blocks = np.concatenate([hmask.astype(np.uint8), _pack_2bit(L), packed, f16_to_bytes(d)], axis=1)
    return packed_rows(blocks, x.shape, QK_K)


@silence_fp_warnings
def dequantize_q3_K(data: np.ndarray) -> np.ndarray:
    """Q3_K bytes -> values ``(d·(sc - 32))·((q | bit << 2) - 4)`` as ``dequantize_row_q3_K``.

    Args:
        data: uint8 [nrows, nblocks * 110].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, _Q3_K_BYTES)
    nb = blocks.shape[0]
    hmask = blocks[:, :32].astype(np.int32)
    q = _unpack_2bit(blocks[:, 32:96])
    hbit = ((hmask[:, None, :] >> np.arange(8, dtype=np.int32)[:, None]) & 1).reshape(nb, QK_K)
    lev = (q - np.where(hbit == 1, 0, 4)).reshape(nb, 16, 16).astype(F32)
    sc = (_unpack_q3_scales(blocks[:, 96:108]) - 32).astype(F32)
    d = f16_from_bytes(blocks[:, 108:110])
    dl = d[:, None] * sc
    return value_rows(dl[:, :, None] * lev, data.shape, _Q3_K_BYTES, QK_K)
