"""GGUF export of Llama models, byte-identical to llama.cpp's convert + llama-quantize pipeline."""

from .llama_export import export_gguf
from .tensors import permute_qk, unpermute_qk
from .writer import atomic_path

__all__ = ["atomic_path", "export_gguf", "permute_qk", "unpermute_qk"]
