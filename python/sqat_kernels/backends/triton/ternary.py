"""Triton fused fake quantization of the ternary formats TQ1_0 and TQ2_0 (256 values per block).

``fake_quant_<fmt>(x2d, imatrix)``: float32 ``[rows, n]`` contiguous (``n`` a multiple of 256) -> float32
``[rows, n]`` on the same device, bit-identical to ``dequantize(quantize(x))`` of the native kernels
(``csrc/include/sqat/ternary.h``); the importance matrix is accepted and ignored, as ggml ignores it for both.
The two formats quantize alike (they differ only in packing), so one kernel serves both.

Layout of the work: one program takes ``BLOCKS`` consecutive blocks, one block per lane; the loops over a
block's 256 positions load one column of values per step. Per block: ``d`` = the largest ``|x|``,
``id = 1/d`` (0 for d == 0), trit = ``lroundf(x * id)`` (``|x * id| < 1.5``; inf / NaN from an overflowed
``1/d`` give the trit 0, as glibc's ``lroundf`` does through ggml's int conversion), and the decoded value
``trit * fp16(d)``. Kernels are launched with ``enable_fp_fusion=False``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import check_rows, interpreting
from .floats import round_fp16

__all__ = ["fake_quant_tq1_0", "fake_quant_tq2_0"]

_QK = 256
_FLT_MAX = tl.constexpr(3.4028234663852886e38)


@triton.jit
def _ternary_kernel(x_ptr, out_ptr, nblocks, BLOCKS: tl.constexpr):
    """Fake-quantize BLOCKS consecutive 256-value blocks (one per lane) of x into out."""
    b = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
    mask = b < nblocks
    base = b * 256
    amax = tl.zeros([BLOCKS], tl.float32)
    for j in range(256):
        v = tl.abs(tl.load(x_ptr + base + j, mask=mask, other=0.0))
        amax = tl.where(amax > v, amax, v)
    nonzero = amax != 0.0
    idv = tl.where(nonzero, tl.div_rn(1.0, tl.where(nonzero, amax, 1.0)), 0.0)
    d = round_fp16(amax)
    for j in range(256):
        xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        v = xj * idv
        finite = tl.abs(v) <= _FLT_MAX
        trit = tl.where(finite & (v >= 0.5), 1.0, tl.where(finite & (v <= -0.5), -1.0, 0.0))
        tl.store(out_ptr + base + j, trit * d, mask=mask)


def _run(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    check_rows(x2d, imatrix, _QK)
    out = torch.empty_like(x2d)
    nblocks = x2d.numel() // _QK
    if nblocks == 0:
        return out
    # the interpreter pays per operation, not per lane: wide programs there
    tile = max(16, min(512, triton.next_power_of_2(nblocks))) if interpreting() else 32
    _ternary_kernel[(triton.cdiv(nblocks, tile),)](x2d, out, nblocks, BLOCKS=tile, enable_fp_fusion=False)
    return out


def fake_quant_tq1_0(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (n a multiple of 256; imatrix [n] accepted and ignored) -> float32 [rows, n]."""
    return _run(x2d, imatrix)


def fake_quant_tq2_0(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (n a multiple of 256; imatrix [n] accepted and ignored) -> float32 [rows, n]."""
    return _run(x2d, imatrix)
