"""The ternary formats TQ1_0 (256 values / 54 bytes) and TQ2_0 (256 values / 66 bytes) (NumPy reference).

Every value is -1, 0 or +1 times one fp16 scale per block. Both quantizers (``quantize_row_tq{1,2}_0_ref``;
``quantize_tq1_0`` / ``quantize_tq2_0`` ignore an importance matrix, so ``imatrix`` is accepted and dropped
here too) compute the same scale and trits and differ only in the packing:

1. ``d`` = the largest ``|x|`` of the block (``amax = MAX(amax, fabsf(v))`` from 0, so +0 for a zero block);
   ``id = 1/d`` (0 when ``d`` is 0);
2. trit = ``lroundf(x * id)`` (half away from zero), stored as ``trit + 1`` in 0..2. ``|x * id|`` stays below
   1.5, so the trit is the sign of ``x`` where ``|x * id| >= 0.5``. When ``1/d`` overflows (``d`` below
   ``2**-128``), ``x * id`` is inf or NaN; glibc's ``lroundf`` then returns ``LONG_MIN`` and the ``+ 1``
   stored into an ``int`` keeps the low word 1: the trit 0;
3. the scale is stored as ``fp16(d)`` (so blocks above 65504 decode to inf, as in ggml).

Layouts:

    TQ2_0 66 B: qs[64] | d     byte 32h + m, bits 2n..2n+1: value 128h + 32n + m (h = 0, 1; n = 0..3)
    TQ1_0 54 B: qs[48] | qh[4] | d

TQ1_0 packs five trits per byte as a base-3 number ``q`` (first value most significant), stored as
``ceil(q * 256 / 243)``: ``qs[m]`` (m < 32) holds values ``m + 32n``, ``qs[32 + m]`` (m < 16) values
``160 + m + 16n`` (n = 0..4), and ``qh[j]`` (j < 4) the four values ``240 + j + 4n`` (n = 0..3) followed by a
zero trit. Decoding trit n of a byte ``b``: ``((b * 3**n mod 256) * 3) >> 8``, minus 1.

Dequantization: ``(float)(code - 1) * d``, one float32 product (TQ2_0's unused code 3 decodes to ``2d``).
"""

from __future__ import annotations

import numpy as np

from ._blocks import (
    F32,
    f16_from_bytes,
    f16_to_bytes,
    packed_rows,
    prepare_input,
    prepare_packed,
    scan_max_macro,
    silence_fp_warnings,
    value_rows,
)

__all__ = ["dequantize_tq1_0", "dequantize_tq2_0", "quantize_tq1_0", "quantize_tq2_0"]

QK_K = 256
_TQ1_BYTES = 54
_TQ2_BYTES = 66
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int32)


@silence_fp_warnings
def _scale_and_codes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks float32 [B, 256] -> (d float32 [B] before fp16 storage, codes int32 [B, 256] in 0..2)."""
    d = scan_max_macro(np.abs(x), 0.0)
    safe = np.where(d != 0, d, F32(1.0))
    idv = np.where(d != 0, F32(1.0) / safe, F32(0.0))
    v = x * idv[:, None]
    finite = np.isfinite(v)
    trit = np.where(finite & (v >= F32(0.5)), 1, 0) - np.where(finite & (v <= F32(-0.5)), 1, 0)
    return d, (trit + 1).astype(np.int32)


def _blocks(x: np.ndarray, imatrix: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate (the imatrix only for its shape; it is unused) and cut rows into float32 [B, 256] blocks."""
    x, _ = prepare_input(x, imatrix, QK_K)
    return x, x.reshape(-1, QK_K)


def quantize_tq2_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to TQ2_0 exactly as ``ggml_quantize_chunk(GGML_TYPE_TQ2_0, ...)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None or float32 [n_per_row]; ignored, as by ggml.

    Returns:
        uint8 [nrows, n_per_row // 256 * 66].
    """
    x, xb = _blocks(x, imatrix)
    d, c = _scale_and_codes(xb)
    c4 = c.reshape(-1, 2, 4, 32)  # [block, half, n, m]
    qs = c4[:, :, 0] | (c4[:, :, 1] << 2) | (c4[:, :, 2] << 4) | (c4[:, :, 3] << 6)
    blocks = np.concatenate([qs.reshape(-1, 64).astype(np.uint8), f16_to_bytes(d)], axis=1)
    return packed_rows(blocks, x.shape, QK_K)


def _base3_bytes(c: np.ndarray) -> np.ndarray:
    """Codes int32 [..., k, m] (k trits per byte, first most significant) -> ``ceil(q*256/243)`` [..., m]."""
    q = np.zeros(c.shape[:-2] + c.shape[-1:], dtype=np.int32)
    for n in range(c.shape[-2]):
        q = q * 3 + c[..., n, :]
    return ((q * 256 + 242) // 243).astype(np.uint8)


def quantize_tq1_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows to TQ1_0 exactly as ``ggml_quantize_chunk(GGML_TYPE_TQ1_0, ...)``.

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None or float32 [n_per_row]; ignored, as by ggml.

    Returns:
        uint8 [nrows, n_per_row // 256 * 54].
    """
    x, xb = _blocks(x, imatrix)
    d, c = _scale_and_codes(xb)
    nb = c.shape[0]
    qs0 = _base3_bytes(c[:, :160].reshape(nb, 5, 32))
    qs1 = _base3_bytes(c[:, 160:240].reshape(nb, 5, 16))
    # four trits, then one more (zero) trit in the least significant place
    tail = np.concatenate([c[:, 240:].reshape(nb, 4, 4), np.zeros((nb, 1, 4), dtype=np.int32)], axis=1)
    qh = _base3_bytes(tail)
    blocks = np.concatenate([qs0, qs1, qh, f16_to_bytes(d)], axis=1)
    return packed_rows(blocks, x.shape, QK_K)


@silence_fp_warnings
def dequantize_tq2_0(data: np.ndarray) -> np.ndarray:
    """TQ2_0 bytes -> values ``(float)(q - 1) * d`` as ``dequantize_row_tq2_0``.

    Args:
        data: uint8 [nrows, nblocks * 66].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, _TQ2_BYTES)
    qs = blocks[:, :64].astype(np.int32).reshape(-1, 2, 1, 32)
    q = (qs >> (2 * np.arange(4, dtype=np.int32))[:, None]) & 3  # [block, half, n, m]
    d = f16_from_bytes(blocks[:, 64:66])
    values = (q - 1).astype(F32).reshape(-1, QK_K) * d[:, None]
    return value_rows(values, data.shape, _TQ2_BYTES, QK_K)


def _byte_trits(b: np.ndarray, k: int) -> np.ndarray:
    """Bytes uint8 [..., m] -> the first k trits (-1..1) int32 [..., k, m] (``(b*3^n mod 256)*3 >> 8``)."""
    q = (b.astype(np.int32)[..., None, :] * _POW3[:k, None]) & 0xFF
    return ((q * 3) >> 8) - 1


@silence_fp_warnings
def dequantize_tq1_0(data: np.ndarray) -> np.ndarray:
    """TQ1_0 bytes -> values ``(float)trit * d`` as ``dequantize_row_tq1_0``.

    Args:
        data: uint8 [nrows, nblocks * 54].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, _TQ1_BYTES)
    nb = blocks.shape[0]
    t = np.concatenate(
        [
            _byte_trits(blocks[:, 0:32], 5).reshape(nb, 160),
            _byte_trits(blocks[:, 32:48], 5).reshape(nb, 80),
            _byte_trits(blocks[:, 48:52], 4).reshape(nb, 16),
        ],
        axis=1,
    )
    d = f16_from_bytes(blocks[:, 52:54])
    return value_rows(t.astype(F32) * d[:, None], data.shape, _TQ1_BYTES, QK_K)
