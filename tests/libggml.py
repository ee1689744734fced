"""Thin ctypes access to llama.cpp's ``libggml-base.so``, the oracle for the byte-exact cross-checks.

The library comes from the ``llama-cpp-python`` wheel (``<llama_cpp package>/lib/libggml-base.so``); it is a
test dependency, so a missing library is an error here, never a skip.

Only three kinds of entry points are used, all plain C exported by ggml-base:

* ``ggml_init`` once per process (also sets up ggml's global state),
* ``ggml_quantize_chunk`` -- the same dispatcher ``llama-quantize`` and gguf-py's tests go through,
* ``dequantize_row_<type>`` / ``ggml_fp16_to_fp32_row`` / ``ggml_bf16_to_fp32_row``.

Block sizes and type sizes come from ``gguf.GGML_QUANT_SIZES``; type ids from ``gguf.GGMLQuantizationType``.
This module is also imported by ``bench/bench_quantize.py`` (which puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from pathlib import Path

import gguf
import numpy as np

__all__ = [
    "FORMATS",
    "LibGGML",
    "LibGGMLNotFoundError",
    "block_info",
    "find_libggml_base",
    "ggml_dequantize",
    "ggml_quantize",
    "load",
    "row_bytes",
]

#: The formats the project covers, in the order tests and benchmarks report them.
FORMATS: tuple[str, ...] = (
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_NL",
    "IQ4_XS",
    "MXFP4",
    "NVFP4",
    "TQ1_0",
    "TQ2_0",
    "F16",
    "BF16",
)


class LibGGMLNotFoundError(RuntimeError):
    """``libggml-base.so`` could not be located or lacks a needed symbol."""


class _InitParams(ctypes.Structure):
    """``struct ggml_init_params`` from ggml.h."""

    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


def _qtype(name: str) -> gguf.GGMLQuantizationType:
    """Map an upper-case format name (``"Q4_K"``) to gguf's enum; ``ValueError`` for unknown names."""
    try:
        return gguf.GGMLQuantizationType[name]
    except KeyError:
        raise ValueError(f"unknown ggml type name {name!r}") from None


def block_info(qtype: str) -> tuple[int, int]:
    """``(block_size, type_size)`` of a format, from ``gguf.GGML_QUANT_SIZES``."""
    return gguf.GGML_QUANT_SIZES[_qtype(qtype)]


def row_bytes(qtype: str, n_per_row: int) -> int:
    """Bytes of one quantized row of ``n_per_row`` values; ``ValueError`` if not a whole number of blocks."""
    block_size, type_size = block_info(qtype)
    if n_per_row % block_size:
        raise ValueError(f"{qtype}: row length {n_per_row} is not a multiple of block size {block_size}")
    return n_per_row // block_size * type_size


def find_libggml_base() -> Path:
    """Path of ``libggml-base.so`` inside the installed ``llama_cpp`` package.

    Raises:
        LibGGMLNotFoundError: the package is not installed or ships no ``lib/libggml-base.so``.
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise LibGGMLNotFoundError(
            "the 'llama_cpp' package (PyPI: llama-cpp-python) is not installed; it is a test dependency "
            "providing libggml-base.so for the cross-checks against llama.cpp"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "lib" / "libggml-base.so"
        if candidate.is_file():
            return candidate
    raise LibGGMLNotFoundError(
        f"llama_cpp is installed at {list(spec.submodule_search_locations)} but has no lib/libggml-base.so; "
        "reinstall llama-cpp-python (a shared-library build)"
    )


def _dequantize_symbol(qtype: str) -> str:
    """Exported dequantizer name for a block format (``Q4_K`` -> ``dequantize_row_q4_K``)."""
    name = qtype.lower()
    if name.endswith("_k"):
        name = name[:-2] + "_K"
    return f"dequantize_row_{name}"


class LibGGML:
    """A loaded ``libggml-base.so`` with typed wrappers; build one with :func:`load`."""

    def __init__(self, path: Path | str | None = None) -> None:
        """Load the library (default: :func:`find_libggml_base`) and call ``ggml_init`` once."""
        self.path = Path(path) if path is not None else find_libggml_base()
        self._lib = ctypes.CDLL(str(self.path))

        init = self._symbol("ggml_init")
        init.argtypes = [_InitParams]
        init.restype = ctypes.c_void_p
        # The context is only needed for ggml's one-time global initialisation; keep it for the process.
        self._ctx = init(_InitParams(1 << 20, None, False))
        if not self._ctx:
            raise RuntimeError("ggml_init returned NULL")

        self._quantize_chunk = self._symbol("ggml_quantize_chunk")
        self._quantize_chunk.argtypes = [
            ctypes.c_int,  # enum ggml_type
            ctypes.c_void_p,  # const float * src
            ctypes.c_void_p,  # void * dst
            ctypes.c_int64,  # start
            ctypes.c_int64,  # nrows
            ctypes.c_int64,  # n_per_row
            ctypes.c_void_p,  # const float * imatrix (nullable)
        ]
        self._quantize_chunk.restype = ctypes.c_size_t

        self._dequantizers: dict[str, ctypes._CFuncPtr] = {}
        for qtype in FORMATS:
            if qtype == "F16":
                symbol = "ggml_fp16_to_fp32_row"
            elif qtype == "BF16":
                symbol = "ggml_bf16_to_fp32_row"
            else:
                symbol = _dequantize_symbol(qtype)
            fn = self._symbol(symbol)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            fn.restype = None
            self._dequantizers[qtype] = fn

    def _symbol(self, name: str) -> ctypes._CFuncPtr:
        """Look up an exported function; a clear error if this build lacks it."""
        try:
            return getattr(self._lib, name)
        except AttributeError:
            raise LibGGMLNotFoundError(f"{self.path} does not export {name}") from None

    def quantize(
        self, x: np.ndarray, qtype: str, imatrix: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Quantize rows with ``ggml_quantize_chunk``.

        Args:
            x: float32 ``[nrows, n_per_row]`` (a 1-D array is one row); ``n_per_row`` a multiple of the
                block size.
            qtype: upper-case format name, e.g. ``"Q4_K"``.
            imatrix: optional float32 ``[n_per_row]`` importance weights (one per column, shared by all rows).
            out: optional destination, uint8 C-contiguous ``[nrows, row_bytes]`` (reused, as a caller of
                ``ggml_quantize_chunk`` would); a new zeroed array when omitted.

        Returns:
            uint8 ``[nrows, row_bytes]``.
        """
        if x.dtype != np.float32:
            raise TypeError(f"x must be float32, got {x.dtype}")
        x2 = np.ascontiguousarray(x.reshape(1, -1) if x.ndim == 1 else x)
        if x2.ndim != 2:
            raise ValueError(f"x must be 1-D or 2-D, got shape {x.shape}")
        nrows, n_per_row = x2.shape
        shape = (nrows, row_bytes(qtype, n_per_row))
        if out is None:
            out = np.zeros(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
        imatrix_ptr = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            if imatrix.shape != (n_per_row,):
                raise ValueError(f"imatrix must have shape ({n_per_row},), got {imatrix.shape}")
            imatrix_ptr = imatrix.ctypes.data
        if nrows == 0:
            return out
        written = self._quantize_chunk(
            int(_qtype(qtype)), x2.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, imatrix_ptr
        )
        if written != out.nbytes:
            raise RuntimeError(f"ggml_quantize_chunk({qtype}) wrote {written} bytes, expected {out.nbytes}")
        return out

    def dequantize(self, data: np.ndarray, qtype: str, n: int | None = None) -> np.ndarray:
        """Dequantize rows with ggml's own dequantizer.

        Args:
            data: uint8 ``[..., row_bytes]`` (contiguous rows of whole blocks).
            qtype: upper-case format name.
            n: expected values per row (checked against ``row_bytes`` when given).

        Returns:
            float32 ``[..., n_per_row]``.
        """
        if data.dtype != np.uint8:
            raise TypeError(f"data must be uint8, got {data.dtype}")
        block_size, type_size = block_info(qtype)
        if data.ndim == 0 or data.shape[-1] % type_size:
            raise ValueError(
                f"{qtype}: last dimension {data.shape} is not a multiple of type size {type_size}"
            )
        n_per_row = data.shape[-1] // type_size * block_size
        if n is not None and n != n_per_row:
            raise ValueError(f"{qtype}: rows of {data.shape[-1]} bytes hold {n_per_row} values, not {n}")
        src = np.ascontiguousarray(data)
        out = np.zeros((*data.shape[:-1], n_per_row), dtype=np.float32)
        if out.size:
            self._dequantizers[qtype](src.ctypes.data, out.ctypes.data, out.size)
        return out


@functools.cache
def load() -> LibGGML:
    """The process-wide :class:`LibGGML` (``ggml_init`` runs once)."""
    return LibGGML()


def ggml_quantize(x: np.ndarray, qtype: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Module-level shortcut for ``load().quantize``."""
    return load().quantize(x, qtype, imatrix)


def ggml_dequantize(data: np.ndarray, qtype: str, n: int | None = None) -> np.ndarray:
    """Module-level shortcut for ``load().dequantize``."""
    return load().dequantize(data, qtype, n)
