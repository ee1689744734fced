"""sqat-kernels: GGUF-exact quantization kernels for quantization-aware training.

Public API:
    quantize(x, qtype, imatrix=None, *, threads=None)  -> packed uint8 rows, byte-identical to llama.cpp
    dequantize(data, qtype, shape, *, threads=None)    -> float32 values, identical to llama.cpp
    get_format(qtype) / SUPPORTED_TYPES                 -> the format registry
    fake_quant(w, qtype, imatrix=None, ste="identity") -> the weight llama.cpp will decode (torch op)
    prepare(model, recipe="Q4_K_M", schedule=...)      -> swap a Llama model's layers for QAT layers (torch)
    convert(model)                                      -> plain layers holding the fake-quantized weights
    QATLinear, QATEmbedding, QATConfig                  -> the QAT layers (torch)
    BitWidthSchedule                                    -> the precision ladder over training steps
    cpu_variant() / set_cpu_variant(name)               -> CPU kernel instruction set (avx512/avx2/scalar)
    recipes.tensor_types(shape, recipe)                 -> llama-quantize's type for every tensor
    sqat_kernels.reference                              -> the NumPy reference implementation
    InputFileError                                      -> (a ValueError) an input file is malformed
"""

from typing import Any

from .backends.native import (
    cpu_variant,
    cuda_compiled,
    cuda_usable,
    set_cpu_variant,
    supported_cpu_variants,
)
from .formats import SUPPORTED_TYPES, QuantFormat, get_format
from .gguf_checks import InputFileError
from .quant import dequantize, quantize
from .schedule import BitWidthSchedule

__version__ = "0.1.0"

_TORCH_ATTRS = {
    "fake_quant": "ops",
    "prepare": "nn",
    "convert": "nn",
    "QATLinear": "nn",
    "QATEmbedding": "nn",
    "QATConfig": "nn",
}

__all__ = [
    "SUPPORTED_TYPES",
    "BitWidthSchedule",
    "InputFileError",
    "QATConfig",
    "QATEmbedding",
    "QATLinear",
    "convert",
    "cpu_variant",
    "prepare",
    "set_cpu_variant",
    "supported_cpu_variants",
    "fake_quant",
    "QuantFormat",
    "cuda_compiled",
    "cuda_usable",
    "dequantize",
    "get_format",
    "quantize",
]


def __getattr__(name: str) -> Any:
    # The torch parts are imported on first use, so NumPy-only users never import torch.
    if name in _TORCH_ATTRS:
        import importlib

        return getattr(importlib.import_module(f".{_TORCH_ATTRS[name]}", __name__), name)
    raise AttributeError(f"module 'sqat_kernels' has no attribute {name!r}")
