"""CUDA execution of quantize/dequantize on torch tensors through the native kernels.

The kernels are launched on the tensor's device and on torch's current stream for it, so they order
correctly with the caller's other work.
"""

from __future__ import annotations

import torch

from ..formats import QuantFormat
from .native import _C, cuda_compiled


def _require_cuda() -> None:
    if not cuda_compiled():
        raise RuntimeError(
            "sqat_kernels was built without CUDA kernels; reinstall with nvcc available (SQAT_CUDA=ON) "
            "or move the tensor to the CPU"
        )


def quantize(x2d: torch.Tensor, fmt: QuantFormat, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (CUDA, contiguous, finite) -> uint8 [rows, row_bytes] on the same device."""
    _require_cuda()
    rows, n = x2d.shape
    out = torch.empty((rows, fmt.row_bytes(n)), dtype=torch.uint8, device=x2d.device)
    im = None if imatrix is None else imatrix.to(device=x2d.device, dtype=torch.float32).contiguous()
    scratch = torch.empty((max(rows, 1),), dtype=torch.float32, device=x2d.device)
    with torch.cuda.device(x2d.device):
        stream = torch.cuda.current_stream(x2d.device).cuda_stream
        _C.cuda_quantize(fmt.type_id, x2d.data_ptr(), rows, n, 0 if im is None else im.data_ptr(),
                         scratch.data_ptr(), out.data_ptr(), stream)
    return out


def dequantize(data2d: torch.Tensor, fmt: QuantFormat, n_per_row: int) -> torch.Tensor:
    """uint8 [rows, row_bytes] (CUDA, contiguous) -> float32 [rows, n_per_row] on the same device."""
    _require_cuda()
    rows = data2d.shape[0]
    out = torch.empty((rows, n_per_row), dtype=torch.float32, device=data2d.device)
    with torch.cuda.device(data2d.device):
        stream = torch.cuda.current_stream(data2d.device).cuda_stream
        _C.cuda_dequantize(fmt.type_id, data2d.data_ptr(), rows, n_per_row, out.data_ptr(), stream)
    return out


def fake_quant(x2d: torch.Tensor, fmt: QuantFormat, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (CUDA, contiguous, finite) -> float32 dequantize(quantize(x)) on the same device."""
    _require_cuda()
    rows, n = x2d.shape
    out = torch.empty((rows, n), dtype=torch.float32, device=x2d.device)
    im = None if imatrix is None else imatrix.to(device=x2d.device, dtype=torch.float32).contiguous()
    scratch = torch.empty((max(rows, 1),), dtype=torch.float32, device=x2d.device)
    with torch.cuda.device(x2d.device):
        stream = torch.cuda.current_stream(x2d.device).cuda_stream
        _C.cuda_fake_quant(fmt.type_id, x2d.data_ptr(), rows, n, 0 if im is None else im.data_ptr(),
                           scratch.data_ptr(), out.data_ptr(), stream)
    return out


def clipped_grad(x2d: torch.Tensor, fmt: QuantFormat, imatrix: torch.Tensor | None,
                 grad2d: torch.Tensor) -> torch.Tensor:
    """Clipped straight-through gradient on CUDA: float32 [rows, n] weights and gradient -> [rows, n]."""
    _require_cuda()
    rows, n = x2d.shape
    out = torch.empty((rows, n), dtype=torch.float32, device=x2d.device)
    im = None if imatrix is None else imatrix.to(device=x2d.device, dtype=torch.float32).contiguous()
    scratch = torch.empty((max(rows, 1),), dtype=torch.float32, device=x2d.device)
    with torch.cuda.device(x2d.device):
        stream = torch.cuda.current_stream(x2d.device).cuda_stream
        _C.cuda_clipped_grad(fmt.type_id, x2d.data_ptr(), rows, n, 0 if im is None else im.data_ptr(),
                             scratch.data_ptr(), grad2d.data_ptr(), out.data_ptr(), stream)
    return out
