"""CUDA execution of quantize/dequantize on torch tensors through the native kernels.

The kernels are launched on the tensor's device and on torch's current stream for it, so they order
correctly with the caller's other work. Every native CUDA entry point takes the same argument order,
`(type_id, src, rows, n, [imatrix, scratch,] [extra inputs...,] out, stream)`; one launcher drives all of
them from the table below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats import QuantFormat
from .native import _C, cuda_compiled


@dataclass(frozen=True)
class _Kernel:
    entry: str  # the _C function
    out_dtype: torch.dtype
    weight_side: bool  # takes float weights plus (imatrix, per-row scratch) after (src, rows, n)


_KERNELS = {
    "quantize": _Kernel("cuda_quantize", torch.uint8, True),
    "dequantize": _Kernel("cuda_dequantize", torch.float32, False),
    "fake_quant": _Kernel("cuda_fake_quant", torch.float32, True),
    "clipped_grad": _Kernel("cuda_clipped_grad", torch.float32, True),
}


def _require_cuda() -> None:
    if not cuda_compiled():
        raise RuntimeError(
            "sqat_kernels was built without CUDA kernels; reinstall with nvcc available (SQAT_CUDA=ON) "
            "or move the tensor to the CPU"
        )


def _launch(
    op: str,
    src: torch.Tensor,
    fmt: QuantFormat,
    n: int,
    out_cols: int,
    imatrix: torch.Tensor | None = None,
    extra: tuple[torch.Tensor, ...] = (),
) -> torch.Tensor:
    """Run kernel `op` over the rows of the contiguous CUDA tensor `src` (n values per row) into a new
    [rows, out_cols] tensor on the same device."""
    _require_cuda()
    kernel = _KERNELS[op]
    rows, device = src.shape[0], src.device
    out = torch.empty((rows, out_cols), dtype=kernel.out_dtype, device=device)
    args: list[int] = [src.data_ptr(), rows, n]
    if kernel.weight_side:
        # held in locals until the launch returns; later reuse by torch's allocator is stream-ordered
        im = None if imatrix is None else imatrix.to(device=device, dtype=torch.float32).contiguous()
        scratch = torch.empty((max(rows, 1),), dtype=torch.float32, device=device)
        args += [0 if im is None else im.data_ptr(), scratch.data_ptr()]
    args += [t.data_ptr() for t in extra]
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        getattr(_C, kernel.entry)(fmt.type_id, *args, out.data_ptr(), stream)
    return out


def quantize(x2d: torch.Tensor, fmt: QuantFormat, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (CUDA, contiguous, finite) -> uint8 [rows, row_bytes] on the same device."""
    n = x2d.shape[1]
    return _launch("quantize", x2d, fmt, n, fmt.row_bytes(n), imatrix)


def dequantize(data2d: torch.Tensor, fmt: QuantFormat, n_per_row: int) -> torch.Tensor:
    """uint8 [rows, row_bytes] (CUDA, contiguous) -> float32 [rows, n_per_row] on the same device."""
    return _launch("dequantize", data2d, fmt, n_per_row, n_per_row)


def fake_quant(x2d: torch.Tensor, fmt: QuantFormat, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (CUDA, contiguous, finite) -> float32 dequantize(quantize(x)) on the same device."""
    n = x2d.shape[1]
    return _launch("fake_quant", x2d, fmt, n, n, imatrix)


def clipped_grad(
    x2d: torch.Tensor, fmt: QuantFormat, imatrix: torch.Tensor | None, grad2d: torch.Tensor
) -> torch.Tensor:
    """Clipped straight-through gradient on CUDA: float32 [rows, n] weights and gradient -> [rows, n]."""
    n = x2d.shape[1]
    return _launch("clipped_grad", x2d, fmt, n, n, imatrix, extra=(grad2d,))
