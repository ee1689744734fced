"""What every Triton fake-quant launcher shares: the interpreter test and the input checks."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True under Triton's interpreter (TRITON_INTERPRET set to anything but "" or "0"), where a program
    pays per operation rather than per lane, so launchers pick wider tiles."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_rows(x2d: torch.Tensor, imatrix: torch.Tensor | None, block: int) -> None:
    """Raise ValueError unless x2d is a contiguous float32 [rows, n] tensor with n a multiple of `block`
    and imatrix is None or float32 [n]."""
    if x2d.dtype != torch.float32 or x2d.dim() != 2 or not x2d.is_contiguous():
        raise ValueError(
            f"x2d must be a contiguous float32 [rows, n] tensor, got {x2d.dtype} {tuple(x2d.shape)}"
        )
    if x2d.shape[1] % block != 0:
        raise ValueError(
            f"row length {x2d.shape[1]} is not a multiple of the block size: rows need a multiple of "
            f"{block} values"
        )
    if imatrix is not None and (imatrix.dtype != torch.float32 or tuple(imatrix.shape) != (x2d.shape[1],)):
        raise ValueError(
            f"imatrix must be float32 [{x2d.shape[1]}], got {imatrix.dtype} {tuple(imatrix.shape)}"
        )
