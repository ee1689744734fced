"""Loads the native module ``sqat_kernels._C`` and says what it can do on this machine."""

from __future__ import annotations

import os
import warnings

from .. import _C  # noqa: F401  (re-exported for the other backends)


def default_threads() -> int:
    """CPU threads used when the caller does not say: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not available on macOS/Windows
        return max(1, os.cpu_count() or 1)


CPU_VARIANTS = ("avx512", "avx2", "scalar")
"""Instruction-set variants of the CPU kernels, best first; all give identical bytes."""


def cpu_variant() -> str:
    """The CPU kernels' instruction-set variant: "avx512", "avx2" or "scalar" (see set_cpu_variant)."""
    return _C.cpu_variant()


def supported_cpu_variants() -> list[str]:
    """The variants this build can run on this CPU, best first."""
    return [v for v in CPU_VARIANTS if _C.cpu_variant_supported(v)]


def set_cpu_variant(name: str) -> None:
    """Force CPU kernel variant `name` ("avx512", "avx2" or "scalar") for every type, or go back to "auto".

    "auto" (the default) uses the best variant the CPU supports, per type: on AVX-512 CPUs BF16 (and on
    Intel's also the 32-value legacy formats) runs from the AVX2 build, which measured faster there. The
    environment variable SQAT_CPU_VARIANT sets the variant when the package is imported (an unknown name
    fails the import; a variant this CPU cannot run only warns and leaves "auto"). All variants give
    identical bytes. Raises ValueError for an unknown name or a variant this build or CPU cannot run.
    """
    if name not in (*CPU_VARIANTS, "auto"):
        raise ValueError(f"unknown CPU variant {name!r}; valid: auto, {', '.join(CPU_VARIANTS)}")
    if not _C.set_cpu_variant(name):
        supported = ", ".join(supported_cpu_variants())
        raise ValueError(f"CPU variant {name!r} cannot run here; supported: {supported}")


def _variant_from_environment() -> None:
    # An unknown name is a typo and fails the import; a known variant this CPU cannot run (an environment
    # carried over to an older machine) warns and keeps "auto": every variant gives the same bytes.
    name = os.environ.get("SQAT_CPU_VARIANT", "").strip().lower()
    if not name:
        return
    if name in CPU_VARIANTS and not _C.cpu_variant_supported(name):
        warnings.warn(
            f"SQAT_CPU_VARIANT={name} cannot run on this CPU; using 'auto' "
            f"(supported: {', '.join(supported_cpu_variants())})",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    set_cpu_variant(name)


_variant_from_environment()


CPU_THREADS = ("auto", "pool")
"""Thread sources of the CPU kernels: "auto" runs them on the threads of an OpenMP runtime already loaded
in the process (PyTorch's, once torch is imported), else on sqat's own pool; "pool" always uses the pool."""


def cpu_threads() -> str:
    """Whose threads the CPU kernels run on now: "openmp" (a loaded OpenMP runtime's: PyTorch's) or "pool".

    Sharing PyTorch's team matters in a training loop: after each parallel torch op its threads spin on every
    core for a while, and a thread of a second pool then competes with them for a core. A forked child
    always uses the pool (GNU OpenMP's threads do not survive fork). Bytes are identical either way.
    """
    return "openmp" if _C.openmp_available() else "pool"


def set_cpu_threads(name: str) -> None:
    """Choose the CPU kernels' thread source: "auto" (default) or "pool" (see CPU_THREADS)."""
    if name not in CPU_THREADS:
        raise ValueError(f"unknown CPU thread source {name!r}; valid: {', '.join(CPU_THREADS)}")
    _C.set_openmp_allowed(name == "auto")


def cuda_compiled() -> bool:
    """Whether this build of the package contains the CUDA kernels."""
    return bool(_C.cuda_compiled())


def cuda_usable() -> bool:
    """Whether the CUDA kernels can run here (built with CUDA, a driver and at least one GPU)."""
    return cuda_compiled() and _C.cuda_device_count() > 0
