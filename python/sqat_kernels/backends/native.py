"""Loads the native module ``sqat_kernels._C`` and says what it can do on this machine."""

from __future__ import annotations

import os

from .. import _C  # noqa: F401  (re-exported for the other backends)


def default_threads() -> int:
    """CPU threads used when the caller does not say: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not available on macOS/Windows
        return max(1, os.cpu_count() or 1)


def cuda_compiled() -> bool:
    """Whether this build of the package contains the CUDA kernels."""
    return bool(_C.cuda_compiled())


def cuda_usable() -> bool:
    """Whether the CUDA kernels can run here (built with CUDA, a driver and at least one GPU)."""
    return cuda_compiled() and _C.cuda_device_count() > 0
