"""NumPy reference implementation of ggml's weight quantizers and dequantizers.

What it is for: a second, readable implementation of every format sqat-kernels supports, written from the
llama.cpp sources (``ggml-quants.c``) independently of the native C++/CUDA code. The tests check the native
kernels and the Triton kernels against it, and check it against libggml itself (``ggml_quantize_chunk``);
benchmarks use it as the "plain NumPy" baseline. It favours clarity over speed.

How it stays bit-exact with llama.cpp:

* float32 arithmetic throughout, one IEEE rounding per operation in the order the C source writes it, no
  fused multiply-add (NumPy never fuses);
* vectorised *across* blocks (arrays shaped ``[nblocks, block]``), sequential *inside* a block: max scans,
  every Σ (a float32 running sum in index order, never ``np.sum``/``np.dot``), and the trial loops of the
  scale searches, whose "keep if strictly better" steps are masked updates;
* ggml's roundings reproduced exactly: ``nearest_int`` is half-to-even, Q8_0's ``roundf`` half-away-from-zero,
  the legacy formats truncate where the C code casts; fp16 is round-to-nearest-even.

Formats (block size / bytes per block), paths as ``ggml_quantize_chunk`` takes them with and without an
importance matrix:

* :mod:`.floats`: F32, F16, BF16 (1 / 4, 2, 2);
* :mod:`.legacy`: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (32 / 34, 18, 20, 22, 24);
* :mod:`.iq4`: IQ4_NL (32 / 18), IQ4_XS (256 / 136);
* :mod:`.kquants`: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256 / 84, 110, 144, 176, 210);
* :mod:`.fp4`: MXFP4 (32 / 17), NVFP4 (64 / 36), the float 4-bit formats (no importance matrix);
* :mod:`.ternary`: TQ1_0 (256 / 54), TQ2_0 (256 / 66), the ternary formats (no importance matrix);
* :mod:`.search`: the shared scale searches (``make_qkx2/qkx3/qx/qp/q3_quants``);
* :mod:`._blocks` (private): the format-agnostic pieces all of them share (input checks, little-endian
  fields and ggml's fp16/bf16 conversions, sequential sums and scans, ``nearest_int``).

Each module exposes ``quantize_<fmt>(x, imatrix=None)`` (float32 [nrows, n_per_row] -> uint8
[nrows, n_per_row // block * type_size]) and ``dequantize_<fmt>(data)`` (uint8 [nrows, row_bytes] -> float32
[nrows, n_per_row]); :func:`quantize` and :func:`dequantize` below dispatch on the type name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .floats import dequantize_bf16, dequantize_f16, dequantize_f32, quantize_bf16, quantize_f16, quantize_f32
from .fp4 import dequantize_mxfp4, dequantize_nvfp4, quantize_mxfp4, quantize_nvfp4
from .iq4 import dequantize_iq4_nl, dequantize_iq4_xs, quantize_iq4_nl, quantize_iq4_xs
from .kquants import (
    dequantize_q2_K,
    dequantize_q3_K,
    dequantize_q4_K,
    dequantize_q5_K,
    dequantize_q6_K,
    quantize_q2_K,
    quantize_q3_K,
    quantize_q4_K,
    quantize_q5_K,
    quantize_q6_K,
)
from .legacy import (
    dequantize_q4_0,
    dequantize_q4_1,
    dequantize_q5_0,
    dequantize_q5_1,
    dequantize_q8_0,
    quantize_q4_0,
    quantize_q4_1,
    quantize_q5_0,
    quantize_q5_1,
    quantize_q8_0,
)
from .ternary import dequantize_tq1_0, dequantize_tq2_0, quantize_tq1_0, quantize_tq2_0

__all__ = ["dequantize", "quantize"]

_Quantizer = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
_Dequantizer = Callable[[np.ndarray], np.ndarray]

_FUNCTIONS: dict[str, tuple[_Quantizer, _Dequantizer]] = {
    "F32": (quantize_f32, dequantize_f32),
    "F16": (quantize_f16, dequantize_f16),
    "BF16": (quantize_bf16, dequantize_bf16),
    "Q8_0": (quantize_q8_0, dequantize_q8_0),
    "Q4_0": (quantize_q4_0, dequantize_q4_0),
    "Q4_1": (quantize_q4_1, dequantize_q4_1),
    "Q5_0": (quantize_q5_0, dequantize_q5_0),
    "Q5_1": (quantize_q5_1, dequantize_q5_1),
    "IQ4_NL": (quantize_iq4_nl, dequantize_iq4_nl),
    "Q2_K": (quantize_q2_K, dequantize_q2_K),
    "Q3_K": (quantize_q3_K, dequantize_q3_K),
    "Q4_K": (quantize_q4_K, dequantize_q4_K),
    "Q5_K": (quantize_q5_K, dequantize_q5_K),
    "Q6_K": (quantize_q6_K, dequantize_q6_K),
    "IQ4_XS": (quantize_iq4_xs, dequantize_iq4_xs),
    "MXFP4": (quantize_mxfp4, dequantize_mxfp4),
    "NVFP4": (quantize_nvfp4, dequantize_nvfp4),
    "TQ1_0": (quantize_tq1_0, dequantize_tq1_0),
    "TQ2_0": (quantize_tq2_0, dequantize_tq2_0),
}


def _lookup(qtype: str) -> tuple[_Quantizer, _Dequantizer]:
    if not isinstance(qtype, str):
        raise TypeError(f"qtype must be a type name such as 'Q4_K', not {qtype!r}")
    fns = _FUNCTIONS.get(qtype.upper())
    if fns is None:
        raise ValueError(f"unsupported quantization type {qtype!r}; supported: {', '.join(_FUNCTIONS)}")
    return fns


def quantize(x: np.ndarray, qtype: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows exactly as ``ggml_quantize_chunk(qtype, x, ..., imatrix)`` does.

    Args:
        x: float32 [nrows, n_per_row], C-contiguous; n_per_row a multiple of the format's block size.
        qtype: type name, any case: ``"Q4_K"``, ``"iq4_xs"``, ``"F16"``, ...
        imatrix: None, or float32 [n_per_row]: one importance per column, shared by all rows (ignored by
            F32/F16/BF16, Q8_0, MXFP4, NVFP4, TQ1_0 and TQ2_0, as in ggml).

    Returns:
        uint8 [nrows, n_per_row // block_size * type_size], the packed blocks of each row.
    """
    return _lookup(qtype)[0](x, imatrix)


def dequantize(data: np.ndarray, qtype: str) -> np.ndarray:
    """Decode packed rows exactly as ggml's ``dequantize_row_<type>`` (or its fp16/bf16 row converters) does.

    Args:
        data: uint8 [nrows, row_bytes], row_bytes a multiple of the format's type size.
        qtype: type name, any case.

    Returns:
        float32 [nrows, row_bytes // type_size * block_size].
    """
    return _lookup(qtype)[1](data)
