"""The 32-value "legacy" formats Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (NumPy reference).

Paths follow ``ggml_quantize_chunk`` (spec §3, §4.1, §4.2, §6.4):

* Q8_0 always runs ``quantize_row_q8_0_ref``; an importance matrix is ignored.
* Q4_0, Q4_1, Q5_0, Q5_1 without an importance matrix run the ``quantize_row_*_ref`` min/max rules.
* With an importance matrix they run the per-row ``quantize_row_*_impl``: one ``sigma2 = Σx²/n_per_row`` for
  the whole row (sequential sum), weights ``w = qw * sqrt(sigma2 + x²)`` per 32-block, then the shared scale
  searches from :mod:`.search` (``make_qx_quants`` for Q4_0/Q5_0, ``make_qkx3_quants`` for Q4_1/Q5_1).

Arrays are vectorised across blocks (shape ``[nblocks, 32]``); everything that depends on order inside a
block (max scans, sums) runs sequentially over the 32 positions. All arithmetic is float32, one rounding per
operation, no fused multiply-add. Where ggml casts a float to an integer type the cast is reproduced as
compiled for x86-64: truncation toward zero, with NaN and out-of-range values giving the low byte of
``INT32_MIN`` (0).

Block layouts (little-endian, spec §2.2; Q4_1 = 2-byte ``d``, 2-byte ``m``, 16 nibble bytes):

    Q8_0 34 B: d | qs[32] int8          Q4_0 18 B: d | qs[16]          Q4_1 20 B: d | m | qs[16]
    Q5_0 22 B: d | qh u32 | qs[16]      Q5_1 24 B: d | m | qh u32 | qs[16]

Nibble byte ``j`` holds value ``j`` (low nibble) and value ``j + 16`` (high nibble); bit ``j`` of ``qh`` is
bit 4 of value ``j``.
"""

from __future__ import annotations

import numpy as np

from ._blocks import (
    block_weights,
    f16_from_bytes,
    f16_to_bytes,
    first_abs_max,
    pack_nibbles,
    packed_rows,
    prepare_input,
    prepare_packed,
    safe_reciprocal,
    scan_max,
    scan_max_macro,
    scan_min,
    seq_sum,
    silence_fp_warnings,
    u32_from_bytes,
    u32_to_bytes,
    unpack_nibbles,
    value_rows,
    wrap_int8,
)
from .search import make_qkx3_quants, make_qx_quants

__all__ = [
    "QK",
    "dequantize_q4_0",
    "dequantize_q4_1",
    "dequantize_q5_0",
    "dequantize_q5_1",
    "dequantize_q8_0",
    "quantize_q4_0",
    "quantize_q4_1",
    "quantize_q5_0",
    "quantize_q5_1",
    "quantize_q8_0",
]

#: Values per block for every format in this module.
QK = 32

_F32_MAX = np.float32(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------------------------------
# Helpers of the legacy formats
# ----------------------------------------------------------------------------------------------------


def _row_sigma2(x: np.ndarray) -> np.ndarray:
    """``Σ x² / n_per_row`` per row, the sum sequential over the whole row: float32 [nrows, n] -> [nrows]."""
    n = x.shape[1]
    if n == 0:
        return np.zeros(x.shape[0], dtype=np.float32)
    return seq_sum(x * x) / np.float32(n)


def _imatrix_block_weights(x: np.ndarray, imatrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``_impl`` weights: per-row sigma2, then ``qw * sqrt(sigma2 + x²)`` per value.

    Returns:
        ``(xb, w)``: float32 [nrows * n_per_row // 32, 32] each.
    """
    nrows, n = x.shape
    sigma2 = np.repeat(_row_sigma2(x), n // QK)[:, None]
    xb = x.reshape(-1, QK)
    qw = block_weights(imatrix, nrows, QK)
    return xb, qw * np.sqrt(sigma2 + xb * xb)


def _c_cast_to_int(v: np.ndarray) -> np.ndarray:
    """A C ``(int)`` / ``(int8_t)`` / ``(uint8_t)`` cast of float32 values as GCC compiles it for x86-64.

    Truncation toward zero; NaN, ±inf and values outside the int32 range give ``INT32_MIN`` (``cvttss2si``).
    Narrower casts keep the low byte of this result (callers mask or wrap).

    Args:
        v: float32 array.

    Returns:
        int64 array of the same shape.
    """
    in_range = np.abs(v) < np.float32(2.0**31)  # False for NaN
    t = np.trunc(np.where(in_range, v, np.float32(0.0))).astype(np.int64)
    return np.where(in_range, t, np.int64(-(2**31)))


def _roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: round half away from zero, exactly (float32 in, float32 out).

    ``floor(|v| + 0.5)`` would be wrong (the addition itself rounds, e.g. 0.49999997 + 0.5 == 1.0); instead
    the fractional part ``|v| - floor(|v|)`` is exact and is compared with one half.
    """
    a = np.abs(v)
    fl = np.floor(a)
    frac = a - fl  # exact for every finite float32 (NaN for inf, which then keeps fl = inf)
    r = fl + np.where(frac >= np.float32(0.5), np.float32(1.0), np.float32(0.0))
    return np.copysign(r, v).astype(np.float32)


def _high_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of each of the 32 values of ``q`` (int [nblocks, 32]) gathered as bit j of a uint32 [nblocks]."""
    qh = np.zeros(q.shape[0], dtype=np.uint32)
    for j in range(QK):
        qh |= ((q[:, j] >> 4) & 1).astype(np.uint32) << np.uint32(j)
    return qh


def _unpack_high_bits(qh: np.ndarray) -> np.ndarray:
    """uint32 [nblocks] -> int32 [nblocks, 32]: 16 where bit j is set, else 0."""
    shifts = np.arange(QK, dtype=np.uint32)
    return (((qh[:, None] >> shifts) & np.uint32(1)) << np.uint32(4)).astype(np.int32)


# ----------------------------------------------------------------------------------------------------
# Q8_0
# ----------------------------------------------------------------------------------------------------


@silence_fp_warnings
def quantize_q8_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Q8_0 rows (``quantize_row_q8_0_ref``; ``imatrix`` is validated but ignored, as in ggml).

    Per block: ``amax = max |x|``; ``d = amax / 127``; ``q = roundf(x * (1/d))`` with the unrounded f32 ``d``;
    ``fp16(d)`` is stored.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 32.
        imatrix: None or float32 [n_per_row] (ignored).

    Returns:
        uint8 [nrows, n_per_row // 32 * 34].
    """
    x, _ = prepare_input(x, imatrix, QK)
    xb = x.reshape(-1, QK)
    amax = scan_max_macro(np.abs(xb), 0.0)  # C's amax = MAX(amax, |v|)
    d = amax / np.float32(127.0)
    inv_d = safe_reciprocal(d)
    q = wrap_int8(_c_cast_to_int(_roundf(xb * inv_d[:, None])))
    blocks = np.zeros((xb.shape[0], 34), dtype=np.uint8)
    blocks[:, 0:2] = f16_to_bytes(d)
    blocks[:, 2:] = q.astype(np.int8).view(np.uint8)
    return packed_rows(blocks, x.shape, QK)


@silence_fp_warnings
def dequantize_q8_0(data: np.ndarray) -> np.ndarray:
    """Q8_0 bytes -> values ``q * d``: uint8 [nrows, nblocks * 34] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 34)
    d = f16_from_bytes(blocks[:, 0:2])
    q = blocks[:, 2:].view(np.int8).astype(np.float32)
    return value_rows(q * d[:, None], data.shape, 34, QK)


# ----------------------------------------------------------------------------------------------------
# Q4_0
# ----------------------------------------------------------------------------------------------------


def _q4_0_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_row_q4_0_ref`` on blocks float32 [nb, 32] -> (d float32 [nb], qs uint8 [nb, 16])."""
    _, vmax = first_abs_max(xb)
    d = vmax / np.float32(-8.0)
    inv_d = safe_reciprocal(d)
    v = xb * inv_d[:, None] + np.float32(8.5)  # two roundings: product, then sum
    q = np.minimum(15, wrap_int8(_c_cast_to_int(v))) & 0xFF  # MIN(15, (int8_t)v), stored as uint8
    return d, pack_nibbles(q)


@silence_fp_warnings
def quantize_q4_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Q4_0 rows: ``quantize_row_q4_0_ref`` without imatrix, per-row ``quantize_row_q4_0_impl`` with one.

    Reference rule per block: ``d = max / -8`` (``max`` = signed value of largest magnitude, first
    occurrence); ``q = min(15, trunc(x * (1/d) + 8.5))``. Imatrix rule:
    ``d, L = make_qx_quants(32, nmax=8, x, rmse_type=1, w)`` with ``w = qw * sqrt(sigma2 + x²)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 32.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 32 * 18].
    """
    x, imatrix = prepare_input(x, imatrix, QK)
    if imatrix is None:
        d, qs = _q4_0_ref(x.reshape(-1, QK))
    else:
        xb, w = _imatrix_block_weights(x, imatrix)
        d, L = make_qx_quants(8, xb, 1, w)
        qs = pack_nibbles(L)
    blocks = np.zeros((d.shape[0], 18), dtype=np.uint8)
    blocks[:, 0:2] = f16_to_bytes(d)
    blocks[:, 2:] = qs
    return packed_rows(blocks, x.shape, QK)


@silence_fp_warnings
def dequantize_q4_0(data: np.ndarray) -> np.ndarray:
    """Q4_0 bytes -> values ``(q - 8) * d``: uint8 [nrows, nblocks * 18] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 18)
    d = f16_from_bytes(blocks[:, 0:2])
    q = (unpack_nibbles(blocks[:, 2:]) - 8).astype(np.float32)
    return value_rows(q * d[:, None], data.shape, 18, QK)


# ----------------------------------------------------------------------------------------------------
# Q4_1
# ----------------------------------------------------------------------------------------------------


def _q4_1_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``quantize_row_q4_1_ref`` on blocks float32 [nb, 32] -> (d [nb], m [nb], qs uint8 [nb, 16])."""
    vmin, vmax = scan_min(xb, _F32_MAX), scan_max(xb, -_F32_MAX)  # strict compares from ±FLT_MAX
    d = (vmax - vmin) / np.float32(15.0)
    inv_d = safe_reciprocal(d)
    v = (xb - vmin[:, None]) * inv_d[:, None] + np.float32(0.5)
    q = np.minimum(15, wrap_int8(_c_cast_to_int(v))) & 0xFF
    return d, vmin, pack_nibbles(q)


@silence_fp_warnings
def quantize_q4_1(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Q4_1 rows: ``quantize_row_q4_1_ref`` without imatrix, per-row ``quantize_row_q4_1_impl`` with one.

    Reference rule per block: ``min``/``max`` by strict scans (min is not clamped to 0);
    ``d = (max - min) / 15``; ``q = min(15, trunc((x - min) * (1/d) + 0.5))``; stores ``fp16(d)``,
    ``fp16(min)``. Imatrix rule:
    ``d, the_min, L = make_qkx3_quants(32, nmax=15, x, w, rmin=-0.9, rdelta=0.05, nstep=36, use_mad=False)``;
    stores ``fp16(d)``, ``fp16(-the_min)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 32.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 32 * 20].
    """
    x, imatrix = prepare_input(x, imatrix, QK)
    if imatrix is None:
        d, m, qs = _q4_1_ref(x.reshape(-1, QK))
    else:
        xb, w = _imatrix_block_weights(x, imatrix)
        d, the_min, L = make_qkx3_quants(15, xb, w, np.float32(-0.9), np.float32(0.05), 36, False)
        m = -the_min
        qs = pack_nibbles(L)
    blocks = np.zeros((d.shape[0], 20), dtype=np.uint8)
    blocks[:, 0:2] = f16_to_bytes(d)
    blocks[:, 2:4] = f16_to_bytes(m)
    blocks[:, 4:] = qs
    return packed_rows(blocks, x.shape, QK)


@silence_fp_warnings
def dequantize_q4_1(data: np.ndarray) -> np.ndarray:
    """Q4_1 bytes -> values ``q * d + m``: uint8 [nrows, nblocks * 20] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 20)
    d = f16_from_bytes(blocks[:, 0:2])
    m = f16_from_bytes(blocks[:, 2:4])
    q = unpack_nibbles(blocks[:, 4:]).astype(np.float32)
    return value_rows(q * d[:, None] + m[:, None], data.shape, 20, QK)


# ----------------------------------------------------------------------------------------------------
# Q5_0
# ----------------------------------------------------------------------------------------------------


def _q5_0_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_row_q5_0_ref`` on blocks float32 [nb, 32] -> (d float32 [nb], q int64 [nb, 32], 0..255)."""
    _, vmax = first_abs_max(xb)
    d = vmax / np.float32(-16.0)
    inv_d = safe_reciprocal(d)
    v = xb * inv_d[:, None] + np.float32(16.5)
    q = np.minimum(31, wrap_int8(_c_cast_to_int(v))) & 0xFF  # MIN(31, (int8_t)v), stored as uint8
    return d, q


@silence_fp_warnings
def quantize_q5_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Q5_0 rows: ``quantize_row_q5_0_ref`` without imatrix, per-row ``quantize_row_q5_0_impl`` with one.

    Reference rule per block: ``d = max / -16``; ``q = min(31, trunc(x * (1/d) + 16.5))``. Imatrix rule:
    ``d, L = make_qx_quants(32, nmax=16, x, rmse_type=1, w)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 32.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 32 * 22].
    """
    x, imatrix = prepare_input(x, imatrix, QK)
    if imatrix is None:
        d, q = _q5_0_ref(x.reshape(-1, QK))
    else:
        xb, w = _imatrix_block_weights(x, imatrix)
        d, L = make_qx_quants(16, xb, 1, w)
        q = L.astype(np.int64) & 0xFF
    blocks = np.zeros((d.shape[0], 22), dtype=np.uint8)
    blocks[:, 0:2] = f16_to_bytes(d)
    blocks[:, 2:6] = u32_to_bytes(_high_bits(q))
    blocks[:, 6:] = pack_nibbles(q & 0x0F)
    return packed_rows(blocks, x.shape, QK)


@silence_fp_warnings
def dequantize_q5_0(data: np.ndarray) -> np.ndarray:
    """Q5_0 bytes -> values ``(q - 16) * d``: uint8 [nrows, nblocks * 22] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 22)
    d = f16_from_bytes(blocks[:, 0:2])
    q = (unpack_nibbles(blocks[:, 6:]) | _unpack_high_bits(u32_from_bytes(blocks[:, 2:6]))) - 16
    return value_rows(q.astype(np.float32) * d[:, None], data.shape, 22, QK)


# ----------------------------------------------------------------------------------------------------
# Q5_1
# ----------------------------------------------------------------------------------------------------


def _q5_1_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``quantize_row_q5_1_ref`` on blocks float32 [nb, 32] -> (d [nb], m [nb], q int64 [nb, 32], 0..255)."""
    vmin, vmax = scan_min(xb, _F32_MAX), scan_max(xb, -_F32_MAX)  # strict compares from ±FLT_MAX
    d = (vmax - vmin) / np.float32(31.0)
    inv_d = safe_reciprocal(d)
    v = (xb - vmin[:, None]) * inv_d[:, None] + np.float32(0.5)
    q = _c_cast_to_int(v) & 0xFF  # (uint8_t)v, no clamp
    return d, vmin, q


@silence_fp_warnings
def quantize_q5_1(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Q5_1 rows: ``quantize_row_q5_1_ref`` without imatrix, per-row ``quantize_row_q5_1_impl`` with one.

    Reference rule per block: strict ``min``/``max`` scans; ``d = (max - min) / 31``;
    ``q = trunc((x - min) * (1/d) + 0.5)``; stores ``fp16(d)``, ``fp16(min)``. Imatrix rule:
    ``make_qkx3_quants(32, nmax=31, x, w, -0.9, 0.05, 36, False)``; stores ``fp16(d)``, ``fp16(-the_min)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 32.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 32 * 24].
    """
    x, imatrix = prepare_input(x, imatrix, QK)
    if imatrix is None:
        d, m, q = _q5_1_ref(x.reshape(-1, QK))
    else:
        xb, w = _imatrix_block_weights(x, imatrix)
        d, the_min, L = make_qkx3_quants(31, xb, w, np.float32(-0.9), np.float32(0.05), 36, False)
        m = -the_min
        q = L.astype(np.int64) & 0xFF
    blocks = np.zeros((d.shape[0], 24), dtype=np.uint8)
    blocks[:, 0:2] = f16_to_bytes(d)
    blocks[:, 2:4] = f16_to_bytes(m)
    blocks[:, 4:8] = u32_to_bytes(_high_bits(q))
    blocks[:, 8:] = pack_nibbles(q & 0x0F)
    return packed_rows(blocks, x.shape, QK)


@silence_fp_warnings
def dequantize_q5_1(data: np.ndarray) -> np.ndarray:
    """Q5_1 bytes -> values ``q * d + m``: uint8 [nrows, nblocks * 24] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 24)
    d = f16_from_bytes(blocks[:, 0:2])
    m = f16_from_bytes(blocks[:, 2:4])
    q = unpack_nibbles(blocks[:, 8:]) | _unpack_high_bits(u32_from_bytes(blocks[:, 4:8]))
    return value_rows(q.astype(np.float32) * d[:, None] + m[:, None], data.shape, 24, QK)
