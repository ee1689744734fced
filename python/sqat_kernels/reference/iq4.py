"""The non-linear 4-bit formats IQ4_NL (32 values) and IQ4_XS (256 values) (NumPy reference).

Both go through ggml's ``quantize_row_iq4_nl_impl`` with ``ntry = 7`` whether or not an importance matrix is
given (spec §4.8, §4.9, §6.3); the importance matrix only changes the weights. Codes index the 16-entry table
``kvalues_iq4nl``.

For every 32-value sub-block (arrays vectorised across sub-blocks, sequential inside):

1. weights ``w = x²``, or ``qw * sqrt(sigma2 + x²)`` with ``sigma2 = 2 * Σx² / S`` over the super-block of
   S values;
2. ``max`` = signed value of largest ``|x|`` (first occurrence); a sub-block with ``|max| < 1e-15`` gets
   scale 0;
3. first guess ``d = -max / -127``, codes ``l = best_index(x / d)``, least-squares scale
   ``sumqx / sumq2`` with ``sumqx = Σ (w*q)*x``, ``sumq2 = Σ (w*q)*q``;
4. 15 trials with inverse scale ``(itry - 127) / max``, itry = -7..7, each kept if
   ``sumqx² > best * sumq2`` (strictly better), where ``best = d * sumqx`` of the kept scale.

IQ4_NL stores ``fp16`` of that scale and re-derives every code with its (unrounded) reciprocal. IQ4_XS takes
``d = -max_scale / 32`` over its 8 sub-block scales, stores ``fp16(d)`` and one 6-bit ``l`` per sub-block, and
re-derives every code with ``1 / (d * l)`` (``d`` unrounded).

Layouts (little-endian, spec §2.2):

    IQ4_NL 18 B:  d fp16 | qs[16]                 byte j = code j | code j+16 << 4
    IQ4_XS 136 B: d fp16 | scales_h u16 | scales_l[4] | qs[128]
                  sub-block ib: 6-bit ls = l + 32, low nibble in scales_l[ib // 2] (high nibble for odd ib),
                  top 2 bits at bits 2ib, 2ib+1 of scales_h; qs[16 ib + j] = code 32ib+j | code 32ib+16+j << 4
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
    safe_reciprocal,
    seq_sum,
    silence_fp_warnings,
    u16_from_bytes,
    u16_to_bytes,
    unpack_nibbles,
    value_rows,
)

__all__ = [
    "KVALUES_IQ4NL",
    "best_index_iq4nl",
    "dequantize_iq4_nl",
    "dequantize_iq4_xs",
    "quantize_iq4_nl",
    "quantize_iq4_xs",
]

#: ggml's ``kvalues_iq4nl`` (int8 in ggml), as float32: the 16 reconstruction levels, ascending.
KVALUES_IQ4NL = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32
)

_SUB = 32  # values per scale (sub-block) in both formats
_QK_K = 256  # values per IQ4_XS super-block
_NTRY = 7


def best_index_iq4nl(x: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_int8(16, kvalues_iq4nl, x)`` elementwise.

    0 for ``x <= -127``, 15 for ``x >= 113``; otherwise, with ``mu`` the first level greater than ``x``, the
    nearer of levels ``mu - 1`` and ``mu`` (float32 differences), an exact tie going to ``mu``. A NaN gives
    15, as the binary search does.

    Args:
        x: float32 array of any shape.

    Returns:
        int64 array of the same shape, values 0..15.
    """
    v = KVALUES_IQ4NL
    # searchsorted(side="right") is the binary search's final ``mu`` for v[0] < x < v[15]; NaN sorts last.
    mu = np.clip(np.searchsorted(v, x, side="right"), 1, 15)
    lower_nearer = (x - v[mu - 1]) < (v[mu] - x)
    pick = np.where(lower_nearer, mu - 1, mu)
    return np.where(x <= v[0], 0, np.where(x >= v[15], 15, pick))


def _sums(xb: np.ndarray, w: np.ndarray, inv_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes for ``inv_scale * x`` and their weighted sums ``(Σ (w*q)*x, Σ (w*q)*q)``, float32 [nsub] each."""
    q = KVALUES_IQ4NL[best_index_iq4nl(inv_scale[:, None] * xb)]
    wq = w * q
    return seq_sum(wq * xb), seq_sum(wq * q)


def _subblock_scales(xb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Steps 2-4 of the module docstring for sub-blocks float32 [nsub, 32] with weights [nsub, 32].

    Returns:
        the chosen (signed, unrounded) scale per sub-block, float32 [nsub]; 0 for an all-zero sub-block.
    """
    amax, vmax = first_abs_max(xb)
    zero = amax < GROUP_MAX_EPS
    v0 = KVALUES_IQ4NL[0]
    # An all-zero sub-block divides by zero below (silently, see silence_fp_warnings); its result is
    # replaced by 0 at the end.
    d = -vmax / v0
    sumqx, sumq2 = _sums(xb, w, np.float32(1.0) / d)
    d = np.where(sumq2 > 0, sumqx / sumq2, np.float32(0.0))
    best = d * sumqx
    for itry in range(-_NTRY, _NTRY + 1):
        inv_scale = np.float32(itry + int(v0)) / vmax
        sumqx, sumq2 = _sums(xb, w, inv_scale)
        take = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(take, sumqx / sumq2, d)
        best = np.where(take, d * sumqx, best)
    return np.where(zero, np.float32(0.0), d).astype(np.float32)


def _weights(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Weights for super-blocks ``xs`` float32 [nsuper, S]: ``x²`` or ``qw * sqrt(sigma2 + x²)``."""
    if qw is None:
        return xs * xs
    sigma2 = seq_sum(xs * xs) * np.float32(2.0 / xs.shape[1])
    return qw * np.sqrt(sigma2[:, None] + xs * xs)


@silence_fp_warnings
def quantize_iq4_nl(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """IQ4_NL rows as ``quantize_iq4_nl`` writes them (``quantize_row_iq4_nl_impl(32, 32, ..., ntry=7)``).

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 32.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 32 * 18].
    """
    x, imatrix = prepare_input(x, imatrix, _SUB)
    xb = x.reshape(-1, _SUB)
    qw = None if imatrix is None else block_weights(imatrix, x.shape[0], _SUB)
    scale = _subblock_scales(xb, _weights(xb, qw))
    inv_scale = safe_reciprocal(scale)
    codes = best_index_iq4nl(inv_scale[:, None] * xb)
    blocks = np.zeros((xb.shape[0], 18), dtype=np.uint8)
    blocks[:, 0:2] = f16_to_bytes(scale)
    blocks[:, 2:] = pack_nibbles(codes)  # byte j = code j | code j+16 << 4
    return packed_rows(blocks, x.shape, _SUB)


@silence_fp_warnings
def dequantize_iq4_nl(data: np.ndarray) -> np.ndarray:
    """IQ4_NL bytes -> values ``d * kvalues[q]``.

    Args:
        data: uint8 [nrows, nblocks * 18].

    Returns:
        float32 [nrows, nblocks * 32].
    """
    blocks = prepare_packed(data, 18)
    d = f16_from_bytes(blocks[:, 0:2])
    codes = unpack_nibbles(blocks[:, 2:])
    return value_rows(d[:, None] * KVALUES_IQ4NL[codes], data.shape, 18, _SUB)


@silence_fp_warnings
def quantize_iq4_xs(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """IQ4_XS rows as ``quantize_iq4_xs`` writes them (``quantize_row_iq4_nl_impl(256, 32, ..., ntry=7)``).

    Args:
        x: float32 [nrows, n_per_row], n_per_row a multiple of 256.
        imatrix: None or float32 [n_per_row].

    Returns:
        uint8 [nrows, n_per_row // 256 * 136].
    """
    x, imatrix = prepare_input(x, imatrix, _QK_K)
    xs = x.reshape(-1, _QK_K)
    nsuper = xs.shape[0]
    nsub = _QK_K // _SUB
    qw = None if imatrix is None else block_weights(imatrix, x.shape[0], _QK_K)
    w = _weights(xs, qw)
    scales = _subblock_scales(xs.reshape(-1, _SUB), w.reshape(-1, _SUB)).reshape(nsuper, nsub)

    _, max_scale = first_abs_max(scales)  # the sub-block scale of largest magnitude (first one, signed)

    d = -max_scale / np.float32(32.0)
    inv_d = safe_reciprocal(d)
    lsub = np.clip(nearest_int(inv_d[:, None] * scales), -32, 31).astype(np.int64)  # 6-bit sub-scale - 32
    dl = d[:, None] * lsub.astype(np.float32)
    inv_dl = safe_reciprocal(dl)
    codes = best_index_iq4nl(inv_dl[:, :, None] * xs.reshape(nsuper, nsub, _SUB))

    ls = lsub + 32
    scales_h = np.zeros(nsuper, dtype=np.int64)
    scales_l = np.zeros((nsuper, nsub // 2), dtype=np.int64)
    for ib in range(nsub):
        scales_l[:, ib // 2] |= (ls[:, ib] & 0x0F) << (4 * (ib % 2))
        scales_h |= (ls[:, ib] >> 4) << (2 * ib)

    blocks = np.zeros((nsuper, 136), dtype=np.uint8)
    blocks[:, 0:2] = f16_to_bytes(d)
    blocks[:, 2:4] = u16_to_bytes(scales_h)
    blocks[:, 4:8] = scales_l.astype(np.uint8)
    blocks[:, 8:] = pack_nibbles(codes).reshape(nsuper, 128)
    return packed_rows(blocks, x.shape, _QK_K)


@silence_fp_warnings
def dequantize_iq4_xs(data: np.ndarray) -> np.ndarray:
    """IQ4_XS bytes -> values ``(d * (ls - 32)) * kvalues[q]``.

    Args:
        data: uint8 [nrows, nblocks * 136].

    Returns:
        float32 [nrows, nblocks * 256].
    """
    blocks = prepare_packed(data, 136)
    d = f16_from_bytes(blocks[:, 0:2])
    scales_h = u16_from_bytes(blocks[:, 2:4]).astype(np.int64)
    scales_l = blocks[:, 4:8].astype(np.int64)
    ib = np.arange(_QK_K // _SUB)
    ls = ((scales_l[:, ib // 2] >> (4 * (ib % 2))) & 0x0F) | (((scales_h[:, None] >> (2 * ib)) & 3) << 4)
    codes = unpack_nibbles(blocks[:, 8:].reshape(-1, 8, 16))  # [nblocks, 8, 32]
    dl = d[:, None] * (ls - 32).astype(np.float32)  # [nblocks, 8]
    return value_rows(dl[:, :, None] * KVALUES_IQ4NL[codes], data.shape, 136, _QK_K)
