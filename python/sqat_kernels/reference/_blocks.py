"""Format-agnostic pieces shared by the NumPy reference formats (private).

Everything here is plumbing or one of ggml's scalar rules that several formats use in the same way; the
format modules keep their own numerics. Shapes follow the format modules' convention: blocks along the
first axis (``[nblocks, ...]``), values of one block along the last.

* input checking and cutting into blocks (:func:`prepare_input`, :func:`block_weights`,
  :func:`prepare_packed`) and joining blocks back into rows (:func:`packed_rows`, :func:`value_rows`);
* ggml's fp16/bf16 conversions (spec §1.1, §1.2) and little-endian block fields (``*_to_bytes`` /
  ``*_from_bytes``), nibble packing;
* the order-dependent primitives: sequential sums (:func:`seq_sum`), the three kinds of max/min scan ggml
  writes (strict compare, the ``MAX`` macro, first largest magnitude), ``nearest_int``, int8 wrapping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np

F32 = np.float32

#: ggml's "this group is all zero" threshold (``GROUP_MAX_EPS = 1e-15f``).
GROUP_MAX_EPS = F32(1e-15)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def silence_fp_warnings(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with NumPy's floating-point warnings off.

    The results are unchanged (NumPy computes IEEE results either way: overflow to inf, ``0 * inf`` = NaN,
    ``x / 0`` = inf); C computes the same values silently, and the reference often computes them in blocks
    whose result a mask discards later (where C branches away before computing them).
    """

    @functools.wraps(fn)
    def quiet(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return quiet


# ----------------------------------------------------------------------------------------------------------
# Checking inputs, cutting rows into blocks and joining them back
# ----------------------------------------------------------------------------------------------------------


def prepare_input(
    x: np.ndarray, imatrix: np.ndarray | None = None, block_size: int = 1
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


def block_weights(imatrix: np.ndarray, nrows: int, block_size: int) -> np.ndarray:
    """The importance of each value, block by block, for ``x.reshape(-1, block_size)``.

    Args:
        imatrix: float32 [n_per_row].
        nrows: rows of ``x``.
        block_size: values per block.

    Returns:
        float32 [nrows * n_per_row // block_size, block_size].
    """
    per_row = imatrix.reshape(-1, block_size)
    return np.ascontiguousarray(np.broadcast_to(per_row, (nrows, *per_row.shape))).reshape(-1, block_size)


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


def packed_rows(blocks: np.ndarray, x_shape: tuple[int, ...], block_size: int) -> np.ndarray:
    """Quantized blocks back into rows.

    Args:
        blocks: uint8 [nrows * nb, type_size].
        x_shape: ``(nrows, n_per_row)`` of the quantized input, n_per_row = nb * block_size.
        block_size: values per block.

    Returns:
        uint8 [nrows, nb * type_size].
    """
    nrows, n_per_row = x_shape
    return blocks.reshape(nrows, n_per_row // block_size * blocks.shape[-1])


def value_rows(
    values: np.ndarray, data_shape: tuple[int, ...], type_size: int, block_size: int
) -> np.ndarray:
    """Dequantized blocks back into rows.

    Args:
        values: float32 [nrows * nb, ...] holding block_size values per block.
        data_shape: ``(nrows, row_bytes)`` of the packed input, row_bytes = nb * type_size.
        type_size: bytes per block.
        block_size: values per block.

    Returns:
        float32 [nrows, nb * block_size].
    """
    nrows, row_bytes = data_shape
    return values.reshape(nrows, row_bytes // type_size * block_size)


# ----------------------------------------------------------------------------------------------------------
# ggml's fp16 / bf16 conversions (bit patterns held in uint16)
# ----------------------------------------------------------------------------------------------------------


def fp32_to_fp16_bits(x: np.ndarray) -> np.ndarray:
    """ggml's ``GGML_FP32_TO_FP16`` elementwise.

    Round-to-nearest-even, subnormal results kept, overflow to ±inf; a NaN becomes the quiet NaN ``0x7E00``
    carrying the input's sign (ggml's portable routine drops the payload).

    Args:
        x: float32 array of any shape.

    Returns:
        uint16 array of the same shape holding binary16 patterns.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        bits = x.astype(np.float16).view(np.uint16)
    u = x.view(np.uint32)
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    quiet_nan = (sign | np.uint32(0x7E00)).astype(np.uint16)
    return np.where(np.isnan(x), quiet_nan, bits)


def fp16_bits_to_fp32(h: np.ndarray) -> np.ndarray:
    """ggml's ``GGML_FP16_TO_FP32`` elementwise.

    Exact widening; a NaN keeps its payload (shifted into place) and comes out quiet, as the multiply
    inside ggml's portable routine makes it on x86-64.

    Args:
        h: uint16 array of any shape holding binary16 patterns.

    Returns:
        float32 array of the same shape.
    """
    h = np.asarray(h, dtype=np.uint16)
    widened = h.view(np.float16).astype(np.float32).view(np.uint32)
    h32 = h.astype(np.uint32)
    is_nan = (h32 & np.uint32(0x7C00)) == np.uint32(0x7C00)
    is_nan &= (h32 & np.uint32(0x03FF)) != np.uint32(0)
    nan_bits = (
        ((h32 & np.uint32(0x8000)) << np.uint32(16))
        | np.uint32(0x7F800000)
        | ((h32 & np.uint32(0x03FF)) << np.uint32(13))
        | np.uint32(0x00400000)
    )
    return np.where(is_nan, nan_bits, widened).view(np.float32)


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """ggml's ``GGML_FP32_TO_BF16`` elementwise.

    A NaN keeps its top 16 bits with the quiet bit (``0x40``) forced on; every other value is rounded to
    nearest-even on the bit pattern (overflow rounds to ±inf by itself).

    Args:
        x: float32 array of any shape.

    Returns:
        uint16 array of the same shape holding bfloat16 patterns.
    """
    u = np.asarray(x, dtype=np.float32).view(np.uint32)
    is_nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quieted = (u >> np.uint32(16)) | np.uint32(0x40)
    # u + 0x7FFF + lsb cannot wrap: the largest non-NaN pattern is 0xFF800000 (-inf).
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    return np.where(is_nan, quieted, rounded).astype(np.uint16)


def bf16_bits_to_fp32(h: np.ndarray) -> np.ndarray:
    """ggml's ``GGML_BF16_TO_FP32`` elementwise (exact: the 16 bits become the top half of the f32 pattern).

    Args:
        h: uint16 array of any shape holding bfloat16 patterns.

    Returns:
        float32 array of the same shape.
    """
    h = np.asarray(h, dtype=np.uint16)
    return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_trip_f16(v: np.ndarray) -> np.ndarray:
    """``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))``: the value a stored fp16 field reads back as (float32)."""
    return fp16_bits_to_fp32(fp32_to_fp16_bits(v))


# ----------------------------------------------------------------------------------------------------------
# Little-endian block fields
# ----------------------------------------------------------------------------------------------------------


def u16_to_bytes(v: np.ndarray) -> np.ndarray:
    """Integers [...] (low 16 bits used) -> uint8 [..., 2], little-endian."""
    v = np.asarray(v).astype(np.uint16)
    return np.stack([v & 0xFF, v >> 8], axis=-1).astype(np.uint8)


def u16_from_bytes(b: np.ndarray) -> np.ndarray:
    """uint8 [..., 2] little-endian -> uint16 [...]."""
    return b[..., 0].astype(np.uint16) | (b[..., 1].astype(np.uint16) << np.uint16(8))


def u32_to_bytes(v: np.ndarray) -> np.ndarray:
    """Integers [...] (low 32 bits used) -> uint8 [..., 4], little-endian."""
    v = np.asarray(v).astype(np.uint32)
    return np.stack([(v >> np.uint32(8 * k)) & np.uint32(0xFF) for k in range(4)], axis=-1).astype(np.uint8)


def u32_from_bytes(b: np.ndarray) -> np.ndarray:
    """uint8 [..., 4] little-endian -> uint32 [...]."""
    v = np.zeros(b.shape[:-1], dtype=np.uint32)
    for k in range(4):
        v |= b[..., k].astype(np.uint32) << np.uint32(8 * k)
    return v


def f16_to_bytes(v: np.ndarray) -> np.ndarray:
    """float32 [...] -> uint8 [..., 2]: ``GGML_FP32_TO_FP16(v)``, little-endian."""
    return u16_to_bytes(fp32_to_fp16_bits(v))


def f16_from_bytes(b: np.ndarray) -> np.ndarray:
    """uint8 [..., 2] little-endian fp16 -> float32 [...] (``GGML_FP16_TO_FP32``)."""
    return fp16_bits_to_fp32(u16_from_bytes(b))


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Two values per byte: integers [..., 2h] -> uint8 [..., h], byte j = ``q[j] | q[j + h] << 4``.

    Exactly the C ``qs[j] = q0 | (q1 << 4)`` stored into a byte: the values are not masked to 4 bits first
    (callers with 5- or 6-bit levels pass ``q & 0xF``).
    """
    h = q.shape[-1] // 2
    return ((q[..., :h] | (q[..., h:] << 4)) & 0xFF).astype(np.uint8)


def unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`: uint8 [..., h] -> int32 [..., 2h] (low nibbles first, then high)."""
    q = qs.astype(np.int32)
    return np.concatenate([q & 0x0F, q >> 4], axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Order-dependent primitives: sums, scans, rounding and casts
# ----------------------------------------------------------------------------------------------------------


def seq_sum(a: np.ndarray) -> np.ndarray:
    """Σ over the last axis the way C computes ``float s = 0; for (i...) s += a[i];``.

    ``np.cumsum`` accumulates sequentially in float32; adding ``+0.0f`` afterwards reproduces the ``+0.0``
    starting value (it only turns a ``-0.0`` result, which C cannot produce, into ``+0.0``).

    Args:
        a: float32 [..., n].

    Returns:
        float32 [...].
    """
    if a.shape[-1] == 0:
        return np.zeros(a.shape[:-1], dtype=F32)
    return np.cumsum(a, axis=-1, dtype=F32)[..., -1] + F32(0.0)


def scan_max(v: np.ndarray, start: float | np.ndarray) -> np.ndarray:
    """``m = start; for (j...) if (v[j] > m) m = v[j];`` over the last axis (a NaN is never taken).

    Args:
        v: float32 [B, n].
        start: initial value, scalar or float32 [B].

    Returns:
        float32 [B].
    """
    m = np.full(v.shape[0], start, dtype=F32)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


def scan_min(v: np.ndarray, start: float | np.ndarray) -> np.ndarray:
    """``m = start; for (j...) if (v[j] < m) m = v[j];`` over the last axis: float32 [B, n] -> [B]."""
    m = np.full(v.shape[0], start, dtype=F32)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] < m, v[:, j], m)
    return m


def scan_max_macro(v: np.ndarray, start: float | np.ndarray) -> np.ndarray:
    """``m = start; for (j...) m = MAX(m, v[j]);`` with ggml's ``MAX(a, b) = a > b ? a : b``.

    Differs from :func:`scan_max` only for NaN: ``MAX`` takes a NaN ``v[j]`` (and then keeps the next value).

    Args:
        v: float32 [B, n].
        start: initial value, scalar or float32 [B].

    Returns:
        float32 [B].
    """
    m = np.full(v.shape[0], start, dtype=F32)
    for j in range(v.shape[1]):
        m = np.where(m > v[:, j], m, v[:, j])
    return m


def first_abs_max(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``|v|`` per row and the signed value where it first occurs.

    Scans positions in order and updates on a strict ``amax < |v|`` (ggml's ``if (amax < fabsf(v))`` and
    ``if (ax > amax)`` are the same test), starting from ``amax = max = 0``.

    Args:
        v: float32 [B, n].

    Returns:
        ``(amax, max)``, float32 [B] each.
    """
    amax = np.zeros(v.shape[0], dtype=F32)
    vmax = np.zeros(v.shape[0], dtype=F32)
    for j in range(v.shape[1]):
        av = np.abs(v[:, j])
        take = amax < av
        amax = np.where(take, av, amax)
        vmax = np.where(take, v[:, j], vmax)
    return amax, vmax


def safe_reciprocal(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f`` elementwise (float32)."""
    out = np.zeros_like(d)
    with np.errstate(over="ignore"):
        np.divide(F32(1.0), d, out=out, where=d != 0)
    return out


@silence_fp_warnings
def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: round half to even via the ``v + 1.5*2^23`` bit trick.

    For ``|v| < 2^22`` this equals ``np.rint``. Outside that range (and for NaN/inf) it returns what the C
    code returns: the low 23 mantissa bits of ``v + 12582912.0f`` minus ``2^22``, a value in
    ``[-2^22, 2^22)``. ggml asserts the range only in debug builds; the release library computes this.

    Args:
        v: float32 array of any shape.

    Returns:
        int32 array of the same shape.
    """
    t = np.asarray(np.asarray(v, dtype=F32) + F32(12582912.0)).view(np.int32)
    return (t & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def wrap_int8(i: np.ndarray) -> np.ndarray:
    """Reduce integers modulo 256 into the int8 range, as a C conversion to ``int8_t`` does."""
    return ((i + 128) & 0xFF) - 128
