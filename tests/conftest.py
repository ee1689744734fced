"""Shared pytest fixtures: deterministic seeding and the libggml oracle.

The helper modules beside this file (``libggml``, ``cases``, ``report``) are imported by the test modules as
top-level modules; this directory is put on ``sys.path`` so that works under any ``--import-mode``.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

# Triton kernels run in Triton's interpreter on machines without a GPU.  The variable is read when the
# kernels are defined, so it is set here, before any test module imports them.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import libggml  # noqa: E402  (needs the sys.path entry above)

SEED = 20240607


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Seed Python's, NumPy's legacy global and (if already imported) torch's generators before every test.

    Case data does not depend on this (``cases`` seeds its own generators per case); it only makes any
    incidental randomness inside a test reproducible.
    """
    random.seed(SEED)
    np.random.seed(SEED % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(SEED)


@pytest.fixture(scope="session")
def ggml() -> libggml.LibGGML:
    """The process-wide ``libggml-base.so`` wrapper (an error, never a skip, without llama-cpp-python)."""
    return libggml.load()


@pytest.fixture(scope="session")
def sqat() -> ModuleType:
    """The public ``sqat_kernels`` package (native quantize/dequantize)."""
    import sqat_kernels

    return sqat_kernels


@pytest.fixture(scope="session")
def sqat_reference() -> ModuleType:
    """The NumPy reference ``sqat_kernels.reference``."""
    from sqat_kernels import reference

    return reference
