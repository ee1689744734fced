"""Triton kernels for fused fake quantization, one module per format family.

Each module exposes ``fake_quant_<fmt>(x2d, imatrix) -> Tensor``: float32 ``[rows, n]`` contiguous in,
float32 ``[rows, n]`` out on the same device, bit-identical to the native kernels.  Kernels are compiled
with ``enable_fp_fusion=False`` (no FMA contraction); on machines without a GPU they run under
``TRITON_INTERPRET=1``, which must be set before this package is imported.
"""

from __future__ import annotations

import importlib
import os

import torch

from ...formats import QuantFormat

# format name -> module holding fake_quant_<name.lower()>
_MODULE_OF = {
    "F32": "floats", "F16": "floats", "BF16": "floats",
    "Q8_0": "legacy", "Q4_0": "legacy", "Q4_1": "legacy", "Q5_0": "legacy", "Q5_1": "legacy",
    "IQ4_NL": "legacy",
    "Q4_K": "kquants", "Q5_K": "kquants", "Q6_K": "kquants", "IQ4_XS": "kquants",
    "MXFP4": "fp4", "NVFP4": "fp4",
    "TQ1_0": "ternary", "TQ2_0": "ternary",
}

#: Formats the Triton backend covers (Q2_K and Q3_K have native CPU/CUDA kernels only, so far).
TRITON_TYPES: tuple[str, ...] = tuple(_MODULE_OF)


def fake_quant(x2d: torch.Tensor, fmt: QuantFormat, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (contiguous, finite) -> float32 dequantize(quantize(x)), by the Triton kernels."""
    if not x2d.is_cuda and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise ValueError(
            f"the Triton kernels take CUDA tensors, got one on {x2d.device} (set TRITON_INTERPRET=1 "
            "before importing sqat_kernels to run them on the CPU in Triton's interpreter)"
        )
    if fmt.name not in _MODULE_OF:
        raise ValueError(
            f"the Triton backend has no kernel for {fmt.name} (it covers {', '.join(TRITON_TYPES)}); "
            "use backend='auto' or 'native'"
        )
    module = importlib.import_module(f"{__name__}.{_MODULE_OF[fmt.name]}")
    return getattr(module, f"fake_quant_{fmt.name.lower()}")(x2d, imatrix)
