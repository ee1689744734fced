"""Plain float storage (F32, F16, BF16) and the fp16/bf16 bit conversions the block formats reuse.

ggml stores F16 and BF16 tensors as little-endian 16-bit patterns, one per value (block size 1). The rules
(spec §1.1, §1.2):

* fp32 -> fp16: IEEE round-to-nearest-even, subnormal results kept, overflow to ±inf; a NaN becomes the
  quiet NaN ``0x7E00`` carrying the input's sign (ggml's portable routine drops the payload).
* fp16 -> fp32: exact widening; a NaN keeps its payload (shifted into place) and comes out quiet, as the
  multiply inside ggml's portable routine makes it on x86-64.
* fp32 -> bf16: a NaN keeps its top 16 bits with the quiet bit (``0x40``) forced on; every other value is
  rounded to nearest-even on the bit pattern (overflow rounds to ±inf by itself).
* bf16 -> fp32: the 16 bits become the top half of the f32 pattern.

Every function here is elementwise, so "sequential" summation rules do not arise.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "bf16_bits_to_fp32",
    "dequantize_bf16",
    "dequantize_f16",
    "dequantize_f32",
    "fp16_bits_to_fp32",
    "fp32_to_bf16_bits",
    "fp32_to_fp16_bits",
    "quantize_bf16",
    "quantize_f16",
    "quantize_f32",
]


def fp32_to_fp16_bits(x: np.ndarray) -> np.ndarray:
    """ggml's ``GGML_FP32_TO_FP16`` elementwise.

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
    """ggml's ``GGML_FP16_TO_FP32`` elementwise (exact; NaNs come out quiet with their payload).

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
    """ggml's ``GGML_BF16_TO_FP32`` elementwise (exact).

    Args:
        h: uint16 array of any shape holding bfloat16 patterns.

    Returns:
        float32 array of the same shape.
    """
    h = np.asarray(h, dtype=np.uint16)
    return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _check_values(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape [nrows, n_per_row], got shape {x.shape}")
    return np.ascontiguousarray(x)


def _check_packed(data: np.ndarray, width: int) -> np.ndarray:
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise TypeError(f"data must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] % width != 0:
        raise ValueError(
            f"data must have shape [nrows, row_bytes] with row_bytes a multiple of {width}, "
            f"got shape {data.shape}"
        )
    return np.ascontiguousarray(data)


def _to_bytes(bits: np.ndarray) -> np.ndarray:
    """uint16 [nrows, n] -> uint8 [nrows, 2n], little-endian."""
    return bits.astype("<u2").view(np.uint8).reshape(bits.shape[0], 2 * bits.shape[1])


def _from_bytes(data: np.ndarray) -> np.ndarray:
    """uint8 [nrows, 2n] little-endian -> uint16 [nrows, n]."""
    return data.view("<u2").astype(np.uint16).reshape(data.shape[0], data.shape[1] // 2)


def quantize_f32(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Store float32 rows as bytes (ggml copies F32 rows unchanged; ``imatrix`` is ignored).

    Args:
        x: float32 [nrows, n_per_row].
        imatrix: ignored.

    Returns:
        uint8 [nrows, 4 * n_per_row], little-endian f32 values.
    """
    x = _check_values(x)
    return x.astype("<f4").view(np.uint8).reshape(x.shape[0], 4 * x.shape[1])


def dequantize_f32(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize_f32`: uint8 [nrows, 4n] -> float32 [nrows, n]."""
    data = _check_packed(data, 4)
    return data.view("<f4").astype(np.float32).reshape(data.shape[0], data.shape[1] // 4)


def quantize_f16(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Convert float32 rows to F16 storage as ``ggml_fp32_to_fp16_row`` does (``imatrix`` is ignored).

    Args:
        x: float32 [nrows, n_per_row].
        imatrix: ignored.

    Returns:
        uint8 [nrows, 2 * n_per_row], little-endian binary16 patterns.
    """
    x = _check_values(x)
    return _to_bytes(fp32_to_fp16_bits(x))


def dequantize_f16(data: np.ndarray) -> np.ndarray:
    """Widen F16 storage back to float32 as ggml does: uint8 [nrows, 2n] -> float32 [nrows, n]."""
    data = _check_packed(data, 2)
    return fp16_bits_to_fp32(_from_bytes(data))


def quantize_bf16(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Convert float32 rows to BF16 storage as ``ggml_fp32_to_bf16_row_ref`` does (``imatrix`` is ignored).

    Args:
        x: float32 [nrows, n_per_row].
        imatrix: ignored.

    Returns:
        uint8 [nrows, 2 * n_per_row], little-endian bfloat16 patterns.
    """
    x = _check_values(x)
    return _to_bytes(fp32_to_bf16_bits(x))


def dequantize_bf16(data: np.ndarray) -> np.ndarray:
    """Widen BF16 storage back to float32: uint8 [nrows, 2n] -> float32 [nrows, n]."""
    data = _check_packed(data, 2)
    return bf16_bits_to_fp32(_from_bytes(data))
