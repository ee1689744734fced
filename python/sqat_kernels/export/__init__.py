"""GGUF export of Llama models, byte-identical to llama.cpp's convert + llama-quantize pipeline."""

from .imatrix import read_imatrix
from .llama_export import export_gguf
from .requantize import requantize_gguf
from .tensors import permute_qk, unpermute_qk
from .writer import atomic_path

__all__ = ["atomic_path", "export_gguf", "permute_qk", "read_imatrix", "requantize_gguf", "unpermute_qk"]
