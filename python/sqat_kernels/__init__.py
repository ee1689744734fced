"""sqat-kernels: GGUF-exact quantization kernels for quantization-aware training.

Public API:
    quantize(x, qtype, imatrix=None, *, threads=None)  -> packed uint8 rows, byte-identical to llama.cpp
    dequantize(data, qtype, shape, *, threads=None)    -> float32 values, identical to llama.cpp
    get_format(qtype) / SUPPORTED_TYPES                 -> the format registry
    fake_quant(w, qtype, imatrix=None, ste="identity") -> the weight llama.cpp will decode (torch op)
    sqat_kernels.reference                              -> the NumPy reference implementation
"""

from typing import Any

from .backends.native import cuda_compiled, cuda_usable
from .formats import SUPPORTED_TYPES, QuantFormat, get_format
from .quant import dequantize, quantize

__version__ = "0.1.0"

__all__ = [
    "SUPPORTED_TYPES",
    "fake_quant",
    "QuantFormat",
    "cuda_compiled",
    "cuda_usable",
    "dequantize",
    "get_format",
    "quantize",
]


def __getattr__(name: str) -> Any:
    # The torch ops are imported on first use, so NumPy-only users never import torch.
    if name == "fake_quant":
        from .ops import fake_quant

        return fake_quant
    raise AttributeError(f"module 'sqat_kernels' has no attribute {name!r}")
