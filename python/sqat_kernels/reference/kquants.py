"""The 256-value K-quant formats Q4_K, Q5_K and Q6_K (NumPy reference).

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

from .floats import fp16_bits_to_fp32, fp32_to_fp16_bits
from .search import (
    GROUP_MAX_EPS,
    make_qkx2_quants,
    make_qkx3_quants,
    make_qp_quants,
    make_qx_quants,
    nearest_int,
    seq_sum,
)

__all__ = [
    "QK_K",
    "dequantize_q4_K",
    "dequantize_q5_K",
    "dequantize_q6_K",
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

# Re-quantization divides by zero / NaN in sub-blocks whose result is then discarded by a mask.
_quiet = np.errstate(divide="ignore", invalid="ignore", over="ignore")


# ------------------------------------------------------------------------------------------------------------
# Input/output plumbing
# ------------------------------------------------------------------------------------------------------------


def _prepare(x: np.ndarray, imatrix: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate inputs and cut them into super-blocks.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None, or float32 [n_per_row].

    Returns:
        ``(xs, qw)``: float32 [nrows * n_per_row // 256, 256] and the importance of each of those values
        (float32, same shape) or None.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] % QK_K != 0:
        raise ValueError(f"x must have shape [nrows, n_per_row] with n_per_row a multiple of {QK_K}, "
                         f"got shape {x.shape}")
    xs = np.ascontiguousarray(x).reshape(-1, QK_K)
    if imatrix is None:
        return xs, None
    imatrix = np.asarray(imatrix)
    if imatrix.dtype != np.float32:
        raise TypeError(f"imatrix must be float32, got {imatrix.dtype}")
    if imatrix.shape != (x.shape[1],):
        raise ValueError(f"imatrix must have shape ({x.shape[1]},), got shape {imatrix.shape}")
    per_row = imatrix.reshape(-1, QK_K)
    qw = np.broadcast_to(per_row, (x.shape[0], *per_row.shape)).reshape(-1, QK_K)
    return xs, np.ascontiguousarray(qw)


def _prepare_packed(data: np.ndarray, type_size: int) -> np.ndarray:
    """uint8 [nrows, row_bytes] -> uint8 [nblocks, type_size] (row_bytes a multiple of type_size)."""
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise TypeError(f"data must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] % type_size != 0:
        raise ValueError(f"data must have shape [nrows, row_bytes] with row_bytes a multiple of {type_size}, "
                         f"got shape {data.shape}")
    return np.ascontiguousarray(data).reshape(-1, type_size)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 [B] -> uint8 [B, 2]: fp16 (round to nearest even), little-endian."""
    return fp32_to_fp16_bits(v).astype("<u2").view(np.uint8).reshape(-1, 2)


def _f16_load(b: np.ndarray) -> np.ndarray:
    """uint8 [B, 2] little-endian fp16 -> float32 [B]."""
    return fp16_bits_to_fp32(np.ascontiguousarray(b).view("<u2").reshape(-1).astype(np.uint16))


def _round_trip_f16(v: np.ndarray) -> np.ndarray:
    """``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))``: float32 [B] -> float32 [B]."""
    return fp16_bits_to_fp32(fp32_to_fp16_bits(v))


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


def _running_max(v: np.ndarray) -> np.ndarray:
    """``m = 0; for (j...) if (v[j] > m) m = v[j];`` over the last axis: float32 [B, n] -> [B]."""
    m = np.zeros(v.shape[0], dtype=F32)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


@_quiet
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
        max_scale = _running_max(scales)
        max_min = _running_max(mins)
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
    dj = _round_trip_f16(d)[:, None] * sc.astype(F32)
    dm = _round_trip_f16(dmin)[:, None] * m.astype(F32)
    x3 = xs.reshape(nb, 8, 32)
    requant = np.clip(nearest_int((x3 + dm[:, :, None]) / dj[:, :, None]), 0, nmax)
    L = np.where(dj[:, :, None] == 0, L.reshape(nb, 8, 32), requant).astype(np.uint8)
    return d, dmin, packed, L.reshape(nb, QK_K)


def _nibbles_q4_K(L: np.ndarray) -> np.ndarray:
    """Levels uint8 [B, 256] (0..15) -> qs uint8 [B, 128]: value 64c+l low nibble, 64c+32+l high nibble."""
    q = L.reshape(-1, 4, 2, 32)
    return (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(-1, 128).astype(np.uint8)


def _levels_q4_K(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_nibbles_q4_K`: uint8 [B, 128] -> uint8 [B, 256]."""
    q = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([q & 0xF, q >> 4], axis=2).reshape(-1, QK_K)


def quantize_q4_K(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to Q4_K exactly as ``ggml_quantize_chunk(GGML_TYPE_Q4_K, ...)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None (``quantize_row_q4_K_ref``) or float32 [n_per_row] (``quantize_row_q4_K_impl``).

    Returns:
        uint8 [nrows, n_per_row // 256 * 144].
    """
    xs, qw = _prepare(x, imatrix)
    d, dmin, scales, L = _quantize_q45_K(xs, qw, 15)
    blocks = np.concatenate([_f16_bytes(d), _f16_bytes(dmin), scales, _nibbles_q4_K(L)], axis=1)
    return blocks.reshape(x.shape[0], x.shape[1] // QK_K * _Q4_K_BYTES)


def quantize_q5_K(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to Q5_K exactly as ``ggml_quantize_chunk(GGML_TYPE_Q5_K, ...)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None (``quantize_row_q5_K_ref``) or float32 [n_per_row] (``quantize_row_q5_K_impl``).

    Returns:
        uint8 [nrows, n_per_row // 256 * 176].
    """
    xs, qw = _prepare(x, imatrix)
    d, dmin, scales, L = _quantize_q45_K(xs, qw, 31)
    hi = (L >> 4).reshape(-1, 4, 2, 32)  # bit 4 of value 64c + 32h + l
    qh = np.zeros((L.shape[0], 32), dtype=np.uint8)
    for c in range(4):
        for h in range(2):
            qh |= (hi[:, c, h, :] << (2 * c + h)).astype(np.uint8)
    qs = _nibbles_q4_K(L & 0xF)
    blocks = np.concatenate([_f16_bytes(d), _f16_bytes(dmin), scales, qh, qs], axis=1)
    return blocks.reshape(x.shape[0], x.shape[1] // QK_K * _Q5_K_BYTES)


def dequantize_q4_K(data: np.ndarray) -> np.ndarray:
    """Q4_K bytes -> values ``(d*sc) * q - (dmin*m)`` as ``dequantize_row_q4_K``.

    Args:
        data: uint8 [nrows, nblocks * 144].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = _prepare_packed(data, _Q4_K_BYTES)
    q = _levels_q4_K(blocks[:, 16:]).reshape(-1, 8, 32).astype(F32)
    return _dequantize_q45_K(blocks, q).reshape(data.shape[0], data.shape[1] // _Q4_K_BYTES * QK_K)


def dequantize_q5_K(data: np.ndarray) -> np.ndarray:
    """Q5_K bytes -> values ``(d*sc) * (q_lo + 16*hbit) - (dmin*m)`` as ``dequantize_row_q5_K``.

    Args:
        data: uint8 [nrows, nblocks * 176].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = _prepare_packed(data, _Q5_K_BYTES)
    lo = _levels_q4_K(blocks[:, 48:]).reshape(-1, 4, 2, 32)
    qh = blocks[:, 16:48]
    hi = np.stack([np.stack([(qh >> (2 * c + h)) & 1 for h in range(2)], axis=1) for c in range(4)], axis=1)
    q = (lo + (hi << 4)).reshape(-1, 8, 32).astype(F32)
    return _dequantize_q45_K(blocks, q).reshape(data.shape[0], data.shape[1] // _Q5_K_BYTES * QK_K)


def _dequantize_q45_K(blocks: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K ``(d*sc) * q - (dmin*m)``: blocks uint8 [B, >=16], levels float32 [B, 8, 32] -> [B, 256]."""
    d = _f16_load(blocks[:, 0:2])
    dmin = _f16_load(blocks[:, 2:4])
    sc, m = _unpack_scale_min(blocks[:, 4:16])
    d1 = d[:, None] * sc.astype(F32)
    m1 = dmin[:, None] * m.astype(F32)
    return (d1[:, :, None] * q - m1[:, :, None]).reshape(-1, QK_K)


# ------------------------------------------------------------------------------------------------------------
# Q6_K
# ------------------------------------------------------------------------------------------------------------


@_quiet
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
    xs, qw = _prepare(x, imatrix)
    nb = xs.shape[0]
    qwb = None if qw is None else qw.reshape(nb * 16, 16)
    scales, L = make_qx_quants(32, xs.reshape(nb * 16, 16), 1, qwb)
    scales = scales.reshape(nb, 16)

    max_abs_scale = np.zeros(nb, dtype=F32)
    max_scale = np.zeros(nb, dtype=F32)
    for ib in range(16):
        a = np.abs(scales[:, ib])
        take = a > max_abs_scale
        max_abs_scale = np.where(take, a, max_abs_scale)
        max_scale = np.where(take, scales[:, ib], max_scale)
    all_zero = max_abs_scale < GROUP_MAX_EPS

    iscale = F32(-128.0) / max_scale
    d = F32(1.0) / iscale
    sc = np.minimum(127, nearest_int(iscale[:, None] * scales))
    sc = ((sc + 128) & 0xFF) - 128  # stored as int8_t

    dj = _round_trip_f16(d)[:, None] * sc.astype(F32)
    x3 = xs.reshape(nb, 16, 16)
    requant = np.clip(nearest_int(x3 / dj[:, :, None]), -32, 31) + 32
    L = np.where(dj[:, :, None] == 0, L.reshape(nb, 16, 16), requant).reshape(nb, QK_K)

    q = L.astype(np.uint8).reshape(nb, 2, 4, 32)  # [block, half, quarter, l]
    ql = np.concatenate([(q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4),
                         (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6))
    qh = qh.reshape(nb, 64)
    sc_bytes = sc.astype(np.int8).view(np.uint8)
    blocks = np.concatenate([ql, qh, sc_bytes, _f16_bytes(d)], axis=1).astype(np.uint8)
    blocks[all_zero] = 0
    return blocks.reshape(x.shape[0], x.shape[1] // QK_K * _Q6_K_BYTES)


def dequantize_q6_K(data: np.ndarray) -> np.ndarray:
    """Q6_K bytes -> values ``(d * sc) * (q - 32)`` as ``dequantize_row_q6_K`` (sub-block = 16 values).

    Args:
        data: uint8 [nrows, nblocks * 210].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = _prepare_packed(data, _Q6_K_BYTES)
    nb = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(nb, 2, 2, 32)  # half, which 32-byte run, l
    qh = blocks[:, 128:192].reshape(nb, 2, 32)
    q = np.stack([
        (ql[:, :, 0] & 0xF) | (((qh >> 0) & 3) << 4),
        (ql[:, :, 1] & 0xF) | (((qh >> 2) & 3) << 4),
        (ql[:, :, 0] >> 4) | (((qh >> 4) & 3) << 4),
        (ql[:, :, 1] >> 4) | (((qh >> 6) & 3) << 4),
    ], axis=2).reshape(nb, 16, 16).astype(np.int32) - 32
    sc = blocks[:, 192:208].view(np.int8).astype(F32)
    d = _f16_load(blocks[:, 208:210])
    dsc = d[:, None] * sc
    return (dsc[:, :, None] * q.astype(F32)).reshape(data.shape[0], data.shape[1] // _Q6_K_BYTES * QK_K)
