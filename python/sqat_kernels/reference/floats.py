"""Plain float storage: F32, F16 and BF16 (NumPy reference).

ggml stores these tensors as little-endian patterns, one per value (block size 1): F32 rows are copied
unchanged, F16 and BF16 go through ggml's conversions (spec §1.1, §1.2):

* fp32 -> fp16: IEEE round-to-nearest-even, subnormal results kept, overflow to ±inf; a NaN becomes the
  quiet NaN ``0x7E00`` carrying the input's sign (ggml's portable routine drops the payload).
* fp16 -> fp32: exact widening; a NaN keeps its payload (shifted into place) and comes out quiet, as the
  multiply inside ggml's portable routine makes it on x86-64.
* fp32 -> bf16: a NaN keeps its top 16 bits with the quiet bit (``0x40``) forced on; every other value is
  rounded to nearest-even on the bit pattern (overflow rounds to ±inf by itself).
* bf16 -> fp32: the 16 bits become the top half of the f32 pattern.

The conversions themselves (:func:`fp32_to_fp16_bits` and friends, re-exported here) live in
:mod:`._blocks`, because every block format stores its fp16 scales with them. Every function here is
elementwise, so "sequential" summation rules do not arise.
"""

from __future__ import annotations

import numpy as np

from ._blocks import (
    bf16_bits_to_fp32,
    fp16_bits_to_fp32,
    fp32_to_bf16_bits,
    fp32_to_fp16_bits,
    packed_rows,
    prepare_input,
    prepare_packed,
    u16_from_bytes,
    u16_to_bytes,
    u32_from_bytes,
    u32_to_bytes,
    value_rows,
)

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


def quantize_f32(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Store float32 rows as bytes (ggml copies F32 rows unchanged; ``imatrix`` is ignored).

    Args:
        x: float32 [nrows, n_per_row].
        imatrix: ignored.

    Returns:
        uint8 [nrows, 4 * n_per_row], little-endian f32 values.
    """
    x, _ = prepare_input(x)
    return packed_rows(u32_to_bytes(x.view(np.uint32)), x.shape, 1)


def dequantize_f32(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize_f32`: uint8 [nrows, 4n] -> float32 [nrows, n]."""
    values = u32_from_bytes(prepare_packed(data, 4)).view(np.float32)
    return value_rows(values, data.shape, 4, 1)


def quantize_f16(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Convert float32 rows to F16 storage as ``ggml_fp32_to_fp16_row`` does (``imatrix`` is ignored).

    Args:
        x: float32 [nrows, n_per_row].
        imatrix: ignored.

    Returns:
        uint8 [nrows, 2 * n_per_row], little-endian binary16 patterns.
    """
    x, _ = prepare_input(x)
    return packed_rows(u16_to_bytes(fp32_to_fp16_bits(x)), x.shape, 1)


def dequantize_f16(data: np.ndarray) -> np.ndarray:
    """Widen F16 storage back to float32 as ggml does: uint8 [nrows, 2n] -> float32 [nrows, n]."""
    values = fp16_bits_to_fp32(u16_from_bytes(prepare_packed(data, 2)))
    return value_rows(values, data.shape, 2, 1)


def quantize_bf16(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Convert float32 rows to BF16 storage as ``ggml_fp32_to_bf16_row_ref`` does (``imatrix`` is ignored).

    Args:
        x: float32 [nrows, n_per_row].
        imatrix: ignored.

    Returns:
        uint8 [nrows, 2 * n_per_row], little-endian bfloat16 patterns.
    """
    x, _ = prepare_input(x)
    return packed_rows(u16_to_bytes(fp32_to_bf16_bits(x)), x.shape, 1)


def dequantize_bf16(data: np.ndarray) -> np.ndarray:
    """Widen BF16 storage back to float32: uint8 [nrows, 2n] -> float32 [nrows, n]."""
    values = bf16_bits_to_fp32(u16_from_bytes(prepare_packed(data, 2)))
    return value_rows(values, data.shape, 2, 1)
