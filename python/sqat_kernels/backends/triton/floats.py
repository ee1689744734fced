"""Triton round trips through the plain float formats F32, F16 and BF16, plus the fp16 helpers.

``fake_quant_<fmt>(x2d, imatrix)``: float32 ``[rows, n]`` contiguous -> float32 ``[rows, n]``, each value
replaced by ``widen(narrow(x))`` exactly as the native kernels compute it (the importance matrix is
ignored).  The conversions are spelled out with integer bit operations on the float's bit pattern, so
no hardware conversion instruction, flush-to-zero mode or libdevice routine can change a result.

The ``@triton.jit`` helpers ``fp16_bits``, ``fp16_value`` and ``round_fp16`` are shared with the block
formats (``legacy.py``), whose stored scales are fp16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import interpreting

__all__ = ["fake_quant_bf16", "fake_quant_f16", "fake_quant_f32", "fp16_bits", "fp16_value", "round_fp16"]


@triton.jit
def fp16_bits(f):
    """float32 tensor -> int32 tensor holding the binary16 bit pattern (0..0xffff) of ``f``.

    Round to nearest even, subnormal halves kept, overflow to inf, NaN -> quiet NaN (sign kept): the
    native ``fp32_to_fp16``.  Pure integer arithmetic.
    """
    u = f.to(tl.int32, bitcast=True)
    sign = (u >> 16) & 0x8000
    ax = u & 0x7FFFFFFF
    # normal half: exponent re-biased 127 -> 15, mantissa rounded to 10 bits, ties to even
    normal = (ax - 0x38000000 + 0xFFF + ((ax >> 13) & 1)) >> 13
    # subnormal half (|f| < 2^-14): round(|f| * 2^24) = round(m * 2^(e - 126)), ties to even
    e = ax >> 23
    m = (ax & 0x7FFFFF) | 0x800000
    s = tl.minimum(tl.maximum(126 - e, 1), 31)  # shift; >= 14 wherever the subnormal result is used
    q = m >> s
    q2 = m >> (s - 1)  # q and the first dropped bit
    round_bit = q2 & 1
    sticky = (m - (q2 << (s - 1))) != 0
    up = (round_bit != 0) & (sticky | ((q & 1) != 0))
    sub = q + up.to(tl.int32)
    h = tl.where(ax < 0x38800000, sub, normal)
    h = tl.where(ax >= 0x477FF000, 0x7C00, h)  # rounds to >= 65520: inf
    h = tl.where(ax > 0x7F800000, 0x7E00, h)  # NaN
    return sign | h


@triton.jit
def fp16_value(h):
    """int32 tensor of binary16 bit patterns (0..0xffff) -> the float32 values, exactly (native
    ``fp16_to_fp32``: inf kept, NaN widened with the quiet bit set)."""
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    normal = sign | ((e + 112) << 23) | (m << 13)
    special = sign | 0x7F800000 | (m << 13) | tl.where(m != 0, 0x400000, 0)
    # subnormal or zero: m * 2^-24 is exact in float32 (and a normal float32 unless 0)
    sub = (m.to(tl.float32) * 5.9604644775390625e-08).to(tl.int32, bitcast=True) | sign
    bits = tl.where(e == 0, sub, tl.where(e == 31, special, normal))
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def round_fp16(f):
    """float32 tensor -> float32 tensor: ``f`` rounded to binary16 (RNE) and widened back."""
    return fp16_value(fp16_bits(f))


@triton.jit
def _round_bf16(f):
    """float32 tensor -> float32 tensor rounded to bfloat16 (RNE, NaN made quiet), as ggml does."""
    u = f.to(tl.int32, bitcast=True)
    rounded = u + (0x7FFF + ((u >> 16) & 1))
    quiet = u | 0x00400000
    bits = tl.where((u & 0x7FFFFFFF) > 0x7F800000, quiet, rounded) & -65536  # keep the top 16 bits
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _float_round_trip_kernel(x_ptr, out_ptr, numel, FMT: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = widen(narrow(x[i])) for FMT 0 = F16, 1 = BF16; one program per BLOCK values."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if FMT == 0:
        y = round_fp16(x)
    else:
        y = _round_bf16(x)
    tl.store(out_ptr + offs, y, mask=mask)


def _round_trip(x2d: torch.Tensor, fmt: int) -> torch.Tensor:
    out = torch.empty_like(x2d)
    numel = x2d.numel()
    if numel == 0:
        return out
    block = 1 << 16 if interpreting() else 1024
    grid = (triton.cdiv(numel, block),)
    _float_round_trip_kernel[grid](x2d, out, numel, FMT=fmt, BLOCK=block, enable_fp_fusion=False)
    return out


def fake_quant_f32(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] -> float32 [rows, n]: F32 stores the value itself, so a copy (imatrix ignored)."""
    del imatrix
    return x2d.clone()


def fake_quant_f16(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] contiguous -> float32 [rows, n]: each value through binary16 and back (imatrix
    ignored)."""
    del imatrix
    return _round_trip(x2d, 0)


def fake_quant_bf16(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] contiguous -> float32 [rows, n]: each value through bfloat16 and back (imatrix
    ignored)."""
    del imatrix
    return _round_trip(x2d, 1)
