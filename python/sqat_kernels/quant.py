"""Public quantize / dequantize: GGUF block formats, byte-identical to llama.cpp's ggml_quantize_chunk.

Inputs may be NumPy arrays or torch tensors (CPU, or CUDA when the package was built with CUDA); the
result has the same kind (and device) as the input.  Blocks always run along the last axis (GGUF ne0).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from .backends.finite import first_nonfinite
from .backends.host import borrowed_numpy
from .backends.native import _C, default_threads
from .formats import QuantFormat, get_format

QType = str | GGMLQuantizationType | QuantFormat

_NUMPY_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


def _torch() -> Any:
    """The torch module if the caller has imported it (we never import it for NumPy users)."""
    return sys.modules.get("torch")


def _is_tensor(x: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _imatrix_array(imatrix: Any, n_per_row: int) -> np.ndarray | None:
    """Validate an importance matrix (one weight per column) and return it as float32 [n_per_row]."""
    if imatrix is None:
        return None
    if _is_tensor(imatrix):
        imatrix = imatrix.detach().to("cpu").numpy()
    im = np.asarray(imatrix)
    if im.dtype.kind != "f":
        raise TypeError(f"imatrix must hold floating-point values, got dtype {im.dtype}")
    im = np.ascontiguousarray(im, dtype=np.float32)
    if im.ndim != 1 or im.shape[0] != n_per_row:
        raise ValueError(
            f"imatrix must be a 1-D array with one weight per column: expected length {n_per_row}, "
            f"got shape {tuple(im.shape)}"
        )
    bad = ~np.isfinite(im)
    if bad.any():
        col = int(np.argmax(bad))
        raise ValueError(f"imatrix holds a non-finite value ({im[col]}) at column {col}")
    return im


def _threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return int(threads)


def quantize(
    x: Any, qtype: QType, imatrix: Any = None, *, threads: int | None = None, out: Any = None
) -> Any:
    """Quantize ``x`` into packed GGUF blocks, exactly as llama.cpp's ``ggml_quantize_chunk`` would.

    Args:
        x: values, shape ``[..., n]`` with ``n`` a multiple of the type's block size; NumPy float32/float16
            or torch float32/float16/bfloat16 (CPU, or CUDA).  fp16/bf16 are widened exactly to fp32 first.
            Any layout; non-contiguous inputs are copied.
        qtype: ``"Q4_K"``-style name or ``gguf.GGMLQuantizationType`` (see ``SUPPORTED_TYPES``).
        imatrix: optional importance matrix, one non-negative weight per column (length ``n``), shared by
            all rows; used where llama.cpp uses one (ignored by Q8_0 and the float types, as in llama.cpp).
        threads: CPU threads (default: all cores available to the process).
        out: optional destination, reused instead of a new array: for NumPy input a NumPy uint8 array, for a
            torch tensor a torch uint8 tensor on the same device; C-contiguous, writeable, shape
            ``[..., row_bytes]``.  Written in place (on CUDA through a copy) and returned; if an error is
            raised its contents are unspecified.

    Returns:
        uint8 of shape ``[..., row_bytes]`` (``row_bytes = n / block_size * type_size``): a NumPy array for
        NumPy input, a torch tensor on the input's device for torch input; ``out`` when given.

    Raises:
        TypeError: unsupported dtype, or a 0-d input; ``out`` of the wrong kind, dtype or device.
        ValueError: ``out`` of the wrong shape, not contiguous or read-only; unsupported type; ``n`` not a
            multiple of the block size; NaN/Inf in ``x`` (names the first bad row and column of the
            ``[-1, n]`` view) or in the imatrix; imatrix of the wrong length.
    """
    fmt = get_format(qtype)
    if _is_tensor(x):
        return _quantize_tensor(x, fmt, imatrix, threads, out)
    arr = np.asarray(x)
    if arr.dtype not in _NUMPY_FLOATS:
        raise TypeError(
            f"quantize expects float32 or float16 values, got dtype {arr.dtype} "
            "(convert explicitly, e.g. x.astype(np.float32), if the rounding is intended)"
        )
    if arr.ndim == 0:
        raise TypeError("quantize expects an array with at least one axis (blocks run along the last one)")
    n = arr.shape[-1]
    fmt.check_row_length(n)
    x2d = np.ascontiguousarray(arr.reshape(math.prod(arr.shape[:-1]), n), dtype=np.float32)
    im = _imatrix_array(imatrix, n)
    out_shape = arr.shape[:-1] + (fmt.row_bytes(n),)
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array for NumPy input, got {type(out).__name__}")
        flags = out.flags
        _checked_out(out, out.dtype == np.uint8, flags.c_contiguous, flags.writeable, out_shape)
        _quantize_2d(x2d, fmt, im, _threads(threads), out.reshape(x2d.shape[0], fmt.row_bytes(n)))
        return out
    packed = _quantize_2d(x2d, fmt, im, _threads(threads))
    return packed.reshape(out_shape)


def _checked_out(out: Any, is_uint8: bool, contiguous: bool, writeable: bool, shape: tuple[int, ...]) -> Any:
    if not is_uint8:
        raise TypeError(f"out must hold uint8, got {out.dtype}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if not contiguous or not writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return out


def _quantize_2d(
    x2d: np.ndarray, fmt: QuantFormat, im: np.ndarray | None, threads: int, out: np.ndarray | None = None
) -> np.ndarray:
    try:
        return _C.quantize(x2d, fmt.type_id, im, threads, out)
    except ValueError as e:  # the native loop reports the first non-finite value
        raise ValueError(f"cannot quantize to {fmt.name}: {e}") from None


def _quantize_tensor(x: Any, fmt: QuantFormat, imatrix: Any, threads: int | None, out: Any = None) -> Any:
    torch = _torch()
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"quantize expects float32, float16 or bfloat16 values, got {x.dtype}")
    if x.dim() == 0:
        raise TypeError(
            "quantize expects a tensor with at least one dimension (blocks run along the last one)"
        )
    n = x.shape[-1]
    fmt.check_row_length(n)
    out_shape = tuple(x.shape[:-1]) + (fmt.row_bytes(n),)
    if out is not None:
        if not isinstance(out, torch.Tensor) or out.device != x.device:
            got = out.device if isinstance(out, torch.Tensor) else type(out).__name__
            raise TypeError(f"out must be a torch tensor on {x.device}, like the input; got {got}")
        _checked_out(out, out.dtype == torch.uint8, out.is_contiguous(), True, out_shape)
    x2d = x.detach().reshape(math.prod(x.shape[:-1]), n).to(torch.float32).contiguous()
    if x.is_cuda:
        from .backends import cuda

        im = _imatrix_array(imatrix, n)  # validates length and finiteness on the host
        bad = first_nonfinite(x2d)
        if bad is not None:
            raise ValueError(
                f"cannot quantize to {fmt.name}: non-finite value at row {bad[0]}, column {bad[1]}"
            )
        packed = cuda.quantize(x2d, fmt, None if im is None else torch.from_numpy(im))
        if out is not None:
            return out.copy_(packed.reshape(out_shape))
        return packed.reshape(out_shape)
    if x.device.type != "cpu":
        raise TypeError(f"quantize supports CPU and CUDA tensors, not device {x.device}")
    im = _imatrix_array(imatrix, n)
    if out is not None:
        out2d = borrowed_numpy(out.view(x2d.shape[0], fmt.row_bytes(n)))
        _quantize_2d(borrowed_numpy(x2d), fmt, im, _threads(threads), out2d)
        return out
    packed = _quantize_2d(borrowed_numpy(x2d), fmt, im, _threads(threads))
    return torch.from_numpy(packed).reshape(out_shape)


def _logical_shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if len(dims) == 0:
        raise TypeError("shape must have at least one dimension (blocks run along the last one)")
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must not have negative dimensions, got {dims}")
    return dims


def dequantize(data: Any, qtype: QType, shape: Sequence[int] | int, *, threads: int | None = None) -> Any:
    """Decode packed GGUF blocks to float32, exactly as llama.cpp's ``dequantize_row_*`` would.

    Args:
        data: uint8 bytes of ``prod(shape[:-1])`` packed rows, any shape with that many bytes (typically
            ``[..., row_bytes]`` as returned by :func:`quantize`); NumPy or torch (CPU or CUDA).
        qtype: the type the bytes hold.
        shape: the logical float shape ``[..., n]``; ``n`` a multiple of the block size.
        threads: CPU threads (default: all available).

    Returns:
        float32 of ``shape``: NumPy for NumPy input, a torch tensor on the input's device for torch input.

    Raises:
        TypeError: ``data`` is not uint8, or ``shape`` is empty.
        ValueError: unsupported type, bad row length, or a byte count that does not match ``shape``.
    """
    fmt = get_format(qtype)
    dims = _logical_shape(shape)
    n = dims[-1]
    fmt.check_row_length(n)
    rows = math.prod(dims[:-1])
    expected = rows * fmt.row_bytes(n)
    if _is_tensor(data):
        torch = _torch()
        if data.dtype != torch.uint8:
            raise TypeError(f"dequantize expects uint8 bytes, got {data.dtype}")
        if data.numel() != expected:
            raise ValueError(
                f"{fmt.name} data for shape {dims} must hold {expected} bytes, got {data.numel()}"
            )
        d2 = data.detach().reshape(rows, fmt.row_bytes(n)).contiguous()
        if data.is_cuda:
            from .backends import cuda

            return cuda.dequantize(d2, fmt, n).reshape(dims)
        out = _C.dequantize(borrowed_numpy(d2.cpu()), fmt.type_id, n, _threads(threads))
        return torch.from_numpy(out).reshape(dims)
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        raise TypeError(f"dequantize expects uint8 bytes, got dtype {arr.dtype}")
    if arr.size != expected:
        raise ValueError(f"{fmt.name} data for shape {dims} must hold {expected} bytes, got {arr.size}")
    d2 = np.ascontiguousarray(arr).reshape(rows, fmt.row_bytes(n))
    return _C.dequantize(d2, fmt.type_id, n, _threads(threads)).reshape(dims)
