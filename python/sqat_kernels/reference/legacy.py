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

from .floats import fp16_bits_to_fp32, fp32_to_fp16_bits
from .search import make_qkx3_quants, make_qx_quants, seq_sum

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

#: Public functions evaluate IEEE arithmetic as C does: overflow to inf, 0*inf = NaN, x/0 = inf, silently.
_IEEE = np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")


# ----------------------------------------------------------------------------------------------------
# Shared helpers (also used by iq4.py)
# ----------------------------------------------------------------------------------------------------


def prepare_input(
    x: np.ndarray, imatrix: np.ndarray | None, block_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate quantizer inputs.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of ``block_size``.
        imatrix: None, or float32 [n_per_row] (one importance per column, shared by every row).
        block_size: values per block of the target format.

    Returns:
        ``x`` as a C-contiguous float32 array and ``imatrix`` as a C-contiguous float32 array (or None).
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape [nrows, n_per_row], got shape {x.shape}")
    if x.shape[1] % block_size != 0:
        raise ValueError(f"n_per_row = {x.shape[1]} is not a multiple of the block size {block_size}")
    x = np.ascontiguousarray(x)
    if imatrix is not None:
        imatrix = np.asarray(imatrix)
        if imatrix.dtype != np.float32:
            raise TypeError(f"imatrix must be float32, got {imatrix.dtype}")
        if imatrix.shape != (x.shape[1],):
            raise ValueError(
                f"imatrix must have shape ({x.shape[1]},) (one value per column), got shape {imatrix.shape}"
            )
        imatrix = np.ascontiguousarray(imatrix)
    return x, imatrix


def prepare_packed(data: np.ndarray, type_size: int) -> np.ndarray:
    """Validate dequantizer input and view it as blocks.

    Args:
        data: uint8 [nrows, row_bytes], row_bytes a multiple of ``type_size``.
        type_size: bytes per block.

    Returns:
        uint8 [nrows * row_bytes // type_size, type_size].
    """
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise TypeError(f"data must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] % type_size != 0:
        raise ValueError(
            f"data must have shape [nrows, row_bytes] with row_bytes a multiple of {type_size}, "
            f"got shape {data.shape}"
        )
    return np.ascontiguousarray(data).reshape(-1, type_size)


def block_weights(imatrix: np.ndarray, nrows: int, block_size: int) -> np.ndarray:
    """The importance of each value, block by block: float32 [nrows * n_per_row // block_size, block_size]."""
    per_row = imatrix.reshape(-1, block_size)
    return np.ascontiguousarray(np.broadcast_to(per_row, (nrows, *per_row.shape))).reshape(-1, block_size)


def row_sigma2(x: np.ndarray) -> np.ndarray:
    """``Σ x² / n_per_row`` per row, the sum sequential over the whole row: float32 [nrows, n] -> [nrows]."""
    n = x.shape[1]
    if n == 0:
        return np.zeros(x.shape[0], dtype=np.float32)
    return seq_sum(x * x) / np.float32(n)


def first_abs_max(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``|x|`` per block and the signed value where it first occurs.

    Scans positions in order and updates on a strict ``amax < |x|`` (ggml's ``if (amax < fabsf(v))`` and
    ``if (ax > amax)`` are the same test), starting from ``amax = max = 0``.

    Args:
        xb: float32 [nblocks, n].

    Returns:
        ``(amax, max)``, float32 [nblocks] each.
    """
    amax = np.zeros(xb.shape[0], dtype=np.float32)
    vmax = np.zeros(xb.shape[0], dtype=np.float32)
    for j in range(xb.shape[1]):
        v = xb[:, j]
        av = np.abs(v)
        take = amax < av
        amax = np.where(take, av, amax)
        vmax = np.where(take, v, vmax)
    return amax, vmax


def safe_reciprocal(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f`` elementwise (float32)."""
    out = np.zeros_like(d)
    with np.errstate(over="ignore"):
        np.divide(np.float32(1.0), d, out=out, where=d != 0)
    return out


def c_cast_to_int(v: np.ndarray) -> np.ndarray:
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


def wrap_int8(i: np.ndarray) -> np.ndarray:
    """Reduce integers modulo 256 into the int8 range (a C conversion to ``int8_t``); int64 in, int64 out."""
    return ((i + 128) & 0xFF) - 128


def roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: round half away from zero, exactly (float32 in, float32 out).

    ``floor(|v| + 0.5)`` would be wrong (the addition itself rounds, e.g. 0.49999997 + 0.5 == 1.0); instead
    the fractional part ``|v| - floor(|v|)`` is exact and is compared with one half.
    """
    a = np.abs(v)
    fl = np.floor(a)
    frac = a - fl  # exact for every finite float32 (NaN for inf, which then keeps fl = inf)
    r = fl + np.where(frac >= np.float32(0.5), np.float32(1.0), np.float32(0.0))
    return np.copysign(r, v).astype(np.float32)


def fp16_store(blocks: np.ndarray, offset: int, values: np.ndarray) -> None:
    """Store ``fp16(values)`` (float32 [nblocks]) little-endian at bytes ``offset``, ``offset+1``."""
    h = fp32_to_fp16_bits(values)
    blocks[:, offset] = (h & 0xFF).astype(np.uint8)
    blocks[:, offset + 1] = (h >> 8).astype(np.uint8)


def fp16_load(blocks: np.ndarray, offset: int) -> np.ndarray:
    """Read the little-endian fp16 at bytes ``offset, offset+1`` of each block, widened: float32 [nblocks]."""
    h = blocks[:, offset].astype(np.uint16) | (blocks[:, offset + 1].astype(np.uint16) << np.uint16(8))
    return fp16_bits_to_fp32(h)


def u32_store(blocks: np.ndarray, offset: int, values: np.ndarray) -> None:
    """Write uint32 ``values`` [nblocks] little-endian at bytes ``offset .. offset+3`` of each block."""
    v = values.astype(np.uint32)
    for k in range(4):
        blocks[:, offset + k] = ((v >> np.uint32(8 * k)) & np.uint32(0xFF)).astype(np.uint8)


def u32_load(blocks: np.ndarray, offset: int) -> np.ndarray:
    """Read the little-endian uint32 at bytes ``offset .. offset+3`` of each block: uint32 [nblocks]."""
    v = np.zeros(blocks.shape[0], dtype=np.uint32)
    for k in range(4):
        v |= blocks[:, offset + k].astype(np.uint32) << np.uint32(8 * k)
    return v


def _pack_low_nibbles(q: np.ndarray) -> np.ndarray:
    """Values 0..15 of ``q`` (int [nblocks, 32]) -> uint8 [nblocks, 16]: byte j = q[j] | q[j+16] << 4."""
    return ((q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)).astype(np.uint8)


def _high_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of each of the 32 values of ``q`` (int [nblocks, 32]) gathered as bit j of a uint32 [nblocks]."""
    qh = np.zeros(q.shape[0], dtype=np.uint32)
    for j in range(QK):
        qh |= ((q[:, j] >> 4) & 1).astype(np.uint32) << np.uint32(j)
    return qh


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """uint8 [nblocks, 16] -> int32 [nblocks, 32]: low nibbles give values 0..15, high nibbles 16..31."""
    q = qs.astype(np.int32)
    return np.concatenate([q & 0x0F, q >> 4], axis=1)


def _unpack_high_bits(qh: np.ndarray) -> np.ndarray:
    """uint32 [nblocks] -> int32 [nblocks, 32]: 16 where bit j is set, else 0."""
    shifts = np.arange(QK, dtype=np.uint32)
    return (((qh[:, None] >> shifts) & np.uint32(1)) << np.uint32(4)).astype(np.int32)


def _min_max(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block minimum and maximum by strict scans from +FLT_MAX / -FLT_MAX (ggml's Q4_1/Q5_1 rule)."""
    vmin = np.full(xb.shape[0], _F32_MAX, dtype=np.float32)
    vmax = np.full(xb.shape[0], -_F32_MAX, dtype=np.float32)
    for j in range(xb.shape[1]):
        v = xb[:, j]
        vmin = np.where(v < vmin, v, vmin)
        vmax = np.where(v > vmax, v, vmax)
    return vmin, vmax


def _imatrix_block_weights(x: np.ndarray, imatrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``_impl`` weights: per-row sigma2, then ``qw * sqrt(sigma2 + x²)`` per value.

    Returns:
        ``(xb, w)``: float32 [nrows * n_per_row // 32, 32] each.
    """
    nrows, n = x.shape
    sigma2 = np.repeat(row_sigma2(x), n // QK)[:, None]
    xb = x.reshape(-1, QK)
    qw = block_weights(imatrix, nrows, QK)
    return xb, qw * np.sqrt(sigma2 + xb * xb)


def _finish(blocks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 [nrows * nb, type_size] -> uint8 [nrows, nb * type_size] for input ``shape`` (nrows, nb * 32)."""
    nrows, n_per_row = shape
    return blocks.reshape(nrows, n_per_row // QK * blocks.shape[1])


def _rows(values: np.ndarray, data: np.ndarray, type_size: int) -> np.ndarray:
    """float32 [nrows * nb, 32] -> float32 [nrows, nb * 32], for ``data`` uint8 [nrows, nb * type_size]."""
    return values.reshape(data.shape[0], data.shape[1] // type_size * QK)


# ----------------------------------------------------------------------------------------------------
# Q8_0
# ----------------------------------------------------------------------------------------------------


@_IEEE
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
    amax = np.zeros(xb.shape[0], dtype=np.float32)
    for j in range(QK):
        av = np.abs(xb[:, j])
        amax = np.where(amax > av, amax, av)  # C's MAX(amax, |v|)
    d = amax / np.float32(127.0)
    inv_d = safe_reciprocal(d)
    q = wrap_int8(c_cast_to_int(roundf(xb * inv_d[:, None])))
    blocks = np.zeros((xb.shape[0], 34), dtype=np.uint8)
    fp16_store(blocks, 0, d)
    blocks[:, 2:] = q.astype(np.int8).view(np.uint8)
    return _finish(blocks, x.shape)


@_IEEE
def dequantize_q8_0(data: np.ndarray) -> np.ndarray:
    """Q8_0 bytes -> values ``q * d``: uint8 [nrows, nblocks * 34] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 34)
    d = fp16_load(blocks, 0)
    q = blocks[:, 2:].view(np.int8).astype(np.float32)
    return _rows(q * d[:, None], data, 34)


# ----------------------------------------------------------------------------------------------------
# Q4_0
# ----------------------------------------------------------------------------------------------------


def _q4_0_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_row_q4_0_ref`` on blocks float32 [nb, 32] -> (d float32 [nb], qs uint8 [nb, 16])."""
    _, vmax = first_abs_max(xb)
    d = vmax / np.float32(-8.0)
    inv_d = safe_reciprocal(d)
    v = xb * inv_d[:, None] + np.float32(8.5)  # two roundings: product, then sum
    q = np.minimum(15, wrap_int8(c_cast_to_int(v))) & 0xFF  # MIN(15, (int8_t)v), stored as uint8
    qs = (q[:, :16] | (q[:, 16:] << 4)) & 0xFF
    return d, qs.astype(np.uint8)


@_IEEE
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
        L = L.astype(np.int64)
        qs = ((L[:, :16] | (L[:, 16:] << 4)) & 0xFF).astype(np.uint8)
    blocks = np.zeros((d.shape[0], 18), dtype=np.uint8)
    fp16_store(blocks, 0, d)
    blocks[:, 2:] = qs
    return _finish(blocks, x.shape)


@_IEEE
def dequantize_q4_0(data: np.ndarray) -> np.ndarray:
    """Q4_0 bytes -> values ``(q - 8) * d``: uint8 [nrows, nblocks * 18] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 18)
    d = fp16_load(blocks, 0)
    q = (_unpack_nibbles(blocks[:, 2:]) - 8).astype(np.float32)
    return _rows(q * d[:, None], data, 18)


# ----------------------------------------------------------------------------------------------------
# Q4_1
# ----------------------------------------------------------------------------------------------------


def _q4_1_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``quantize_row_q4_1_ref`` on blocks float32 [nb, 32] -> (d [nb], m [nb], qs uint8 [nb, 16])."""
    vmin, vmax = _min_max(xb)
    d = (vmax - vmin) / np.float32(15.0)
    inv_d = safe_reciprocal(d)
    v = (xb - vmin[:, None]) * inv_d[:, None] + np.float32(0.5)
    q = np.minimum(15, wrap_int8(c_cast_to_int(v))) & 0xFF
    qs = (q[:, :16] | (q[:, 16:] << 4)) & 0xFF
    return d, vmin, qs.astype(np.uint8)


@_IEEE
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
        L = L.astype(np.int64)
        qs = ((L[:, :16] | (L[:, 16:] << 4)) & 0xFF).astype(np.uint8)
    blocks = np.zeros((d.shape[0], 20), dtype=np.uint8)
    fp16_store(blocks, 0, d)
    fp16_store(blocks, 2, m)
    blocks[:, 4:] = qs
    return _finish(blocks, x.shape)


@_IEEE
def dequantize_q4_1(data: np.ndarray) -> np.ndarray:
    """Q4_1 bytes -> values ``q * d + m``: uint8 [nrows, nblocks * 20] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 20)
    d = fp16_load(blocks, 0)
    m = fp16_load(blocks, 2)
    q = _unpack_nibbles(blocks[:, 4:]).astype(np.float32)
    return _rows(q * d[:, None] + m[:, None], data, 20)


# ----------------------------------------------------------------------------------------------------
# Q5_0
# ----------------------------------------------------------------------------------------------------


def _q5_0_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_row_q5_0_ref`` on blocks float32 [nb, 32] -> (d float32 [nb], q int64 [nb, 32], 0..255)."""
    _, vmax = first_abs_max(xb)
    d = vmax / np.float32(-16.0)
    inv_d = safe_reciprocal(d)
    v = xb * inv_d[:, None] + np.float32(16.5)
    q = np.minimum(31, wrap_int8(c_cast_to_int(v))) & 0xFF  # MIN(31, (int8_t)v), stored as uint8
    return d, q


@_IEEE
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
    fp16_store(blocks, 0, d)
    u32_store(blocks, 2, _high_bits(q))
    blocks[:, 6:] = _pack_low_nibbles(q)
    return _finish(blocks, x.shape)


@_IEEE
def dequantize_q5_0(data: np.ndarray) -> np.ndarray:
    """Q5_0 bytes -> values ``(q - 16) * d``: uint8 [nrows, nblocks * 22] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 22)
    d = fp16_load(blocks, 0)
    q = (_unpack_nibbles(blocks[:, 6:]) | _unpack_high_bits(u32_load(blocks, 2))) - 16
    return _rows(q.astype(np.float32) * d[:, None], data, 22)


# ----------------------------------------------------------------------------------------------------
# Q5_1
# ----------------------------------------------------------------------------------------------------


def _q5_1_ref(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``quantize_row_q5_1_ref`` on blocks float32 [nb, 32] -> (d [nb], m [nb], q int64 [nb, 32], 0..255)."""
    vmin, vmax = _min_max(xb)
    d = (vmax - vmin) / np.float32(31.0)
    inv_d = safe_reciprocal(d)
    v = (xb - vmin[:, None]) * inv_d[:, None] + np.float32(0.5)
    q = c_cast_to_int(v) & 0xFF  # (uint8_t)v, no clamp
    return d, vmin, q


@_IEEE
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
    fp16_store(blocks, 0, d)
    fp16_store(blocks, 2, m)
    u32_store(blocks, 4, _high_bits(q))
    blocks[:, 8:] = _pack_low_nibbles(q)
    return _finish(blocks, x.shape)


@_IEEE
def dequantize_q5_1(data: np.ndarray) -> np.ndarray:
    """Q5_1 bytes -> values ``q * d + m``: uint8 [nrows, nblocks * 24] -> float32 [nrows, nblocks * 32]."""
    blocks = prepare_packed(data, 24)
    d = fp16_load(blocks, 0)
    m = fp16_load(blocks, 2)
    q = _unpack_nibbles(blocks[:, 8:]) | _unpack_high_bits(u32_load(blocks, 4))
    return _rows(q.astype(np.float32) * d[:, None] + m[:, None], data, 24)
