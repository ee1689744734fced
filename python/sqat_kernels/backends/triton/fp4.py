"""Triton fused fake quantization of the float 4-bit formats MXFP4 (32 values) and NVFP4 (64 values).

``fake_quant_<fmt>(x2d, imatrix)``: float32 ``[rows, n]`` contiguous (``n`` a multiple of the block size) ->
float32 ``[rows, n]`` on the same device, bit-identical to ``dequantize(quantize(x))`` of the native kernels
(``csrc/include/sqat/fp4.h``); the importance matrix is accepted and ignored, as ggml ignores it for both.

Layout of the work: one program takes ``GROUPS`` consecutive scale groups (an MXFP4 block of 32 values, an
NVFP4 sub-block of 16), one group per lane; every loop over a group's positions loads one column of values per
step. The group's largest magnitude gives its scale (MXFP4: ``floor(log2f(amax))`` as an E8M0 exponent,
through a float64 logarithm where the float32 one rounds to an integer; NVFP4: ``amax / 6`` encoded as
UE4M3), then each value takes the first of the doubled E2M1 levels 0, 1, 2, 3, 4, 6, 8, 12 (times the scale)
with the smallest float32 error, and its sign. Kernels are launched with ``enable_fp_fusion=False``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import check_rows, interpreting

__all__ = ["fake_quant_mxfp4", "fake_quant_nvfp4"]

_MXFP4, _NVFP4 = 0, 1


@triton.jit
def _mxfp4_scale(amax):
    """float32 [G] largest magnitudes -> float32 [G] decoded MXFP4 scales ``2^(e - 128)``.

    ``e = (uint8)(floor(log2f(amax)) - 2 + 127)`` (0 for amax 0). The exponent bits give the floor except in
    the top 64 mantissas of a normal exponent and for subnormals, where the float32 rounding of a float64
    log2 decides (as the native code); the int32 result keeps its low byte (tiny blocks wrap).
    """
    bits = amax.to(tl.int32, bitcast=True)
    biased = bits >> 23
    fast = (biased != 0) & ((bits & 0x7FFFFF) < 0x7FFFC0)
    safe = tl.where(amax > 0.0, amax, 1.0)
    slow = tl.floor(tl.log2(safe.to(tl.float64)).to(tl.float32)).to(tl.int32)
    fl = tl.where(fast, biased - 127, slow)
    e = tl.where(amax > 0.0, (fl - 2 + 127) & 0xFF, 0)
    d_bits = tl.where(e < 2, 0x00200000 << e, (e - 1) << 23)
    return d_bits.to(tl.float32, bitcast=True)


@triton.jit
def _nvfp4_scale(amax):
    """float32 [G] largest magnitudes -> float32 [G] decoded NVFP4 scales (half the UE4M3 value).

    ``ggml_fp32_to_ue4m3(amax / 6)`` then ``ggml_ue4m3_to_fp32``: capped at 448; below 2^-6 the mantissa is
    ``(int)(x * 512 + 0.5f)`` capped at 7 (0 below 1); above, three mantissa bits rounded by the fourth, any
    exponent >= 15 saturating to 0x7E.
    """
    x = tl.div_rn(amax, 6.0)
    x = tl.minimum(x, 448.0)
    bits = x.to(tl.int32, bitcast=True)
    uexp = ((bits >> 23) & 0xFF) - 127 + 7
    sub = tl.minimum((x * 512.0 + 0.5).to(tl.int32), 7)  # x >= 0: the conversion truncates
    sub = tl.where(sub < 1, 0, sub)
    man = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    carry = man > 7
    exp_r = tl.where(carry, uexp + 1, uexp)
    man = tl.where(carry, 0, man)
    normal = tl.where(exp_r >= 15, 0x7E, (exp_r << 3) | man)
    ue = tl.where(uexp <= 0, sub, tl.where(uexp >= 15, 0x7E, normal))
    ue = tl.where(amax > 0.0, ue, 0)
    # decode: man * 2^-10 at exponent 0, else (8 + man) * 2^(exp - 11); 0 for byte 0 (0x7F never occurs)
    e4 = (ue >> 3) & 0xF
    m3 = ue & 7
    pow2 = tl.where(e4 == 0, 117, e4 - 11 + 127) << 23  # 2^-10 for the subnormal case
    scale = tl.where(e4 == 0, m3, 8 + m3).to(tl.float32) * pow2.to(tl.float32, bitcast=True)
    return tl.where(ue == 0, 0.0, scale)


@triton.jit
def _try_level(a, d, best, idx, level: tl.constexpr, code: tl.constexpr):
    """One step of the code scan: take ``code`` where ``|level*d - a|`` is strictly smaller than ``best``."""
    err = tl.abs(level * d - a)
    take = err < best
    return tl.where(take, err, best), tl.where(take, code, idx)


@triton.jit
def _fp4_value(x, d):
    """float32 [G] values and scales -> the decoded value of the code ggml's best_index_mxfp4 picks.

    The scan over the eight magnitudes for ``|x|`` (the other half's errors never beat code 0), then the sign
    for a non-zero magnitude; the value is ``kvalues_fp4[code] * d`` (a zero magnitude decodes to +0).
    """
    a = tl.abs(x)
    best = a  # code 0: |0*d - x|
    idx = tl.zeros(x.shape, tl.int32)
    best, idx = _try_level(a, d, best, idx, 1.0, 1)
    best, idx = _try_level(a, d, best, idx, 2.0, 2)
    best, idx = _try_level(a, d, best, idx, 3.0, 3)
    best, idx = _try_level(a, d, best, idx, 4.0, 4)
    best, idx = _try_level(a, d, best, idx, 6.0, 5)
    best, idx = _try_level(a, d, best, idx, 8.0, 6)
    best, idx = _try_level(a, d, best, idx, 12.0, 7)
    lev = tl.where(idx <= 4, idx, tl.where(idx == 5, 6, tl.where(idx == 6, 8, 12))).to(tl.float32)
    negative = (x.to(tl.int32, bitcast=True) < 0) & (idx != 0)
    return tl.where(negative, -lev, lev) * d


@triton.jit
def _fp4_kernel(x_ptr, out_ptr, ngroups, FMT: tl.constexpr, GROUP: tl.constexpr, GROUPS: tl.constexpr):
    """Fake-quantize GROUPS consecutive scale groups of GROUP values (one per lane) of x into out."""
    g = tl.program_id(0).to(tl.int64) * GROUPS + tl.arange(0, GROUPS)
    mask = g < ngroups
    base = g * GROUP
    amax = tl.zeros([GROUPS], tl.float32)
    for j in range(GROUP):
        v = tl.abs(tl.load(x_ptr + base + j, mask=mask, other=0.0))
        amax = tl.where(amax < v, v, amax)
    if FMT == 0:
        d = _mxfp4_scale(amax)
    else:
        d = _nvfp4_scale(amax)
    for j in range(GROUP):
        xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        tl.store(out_ptr + base + j, _fp4_value(xj, d), mask=mask)


def _run(fmt: int, block: int, group: int, x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    check_rows(x2d, imatrix, block)
    out = torch.empty_like(x2d)
    ngroups = x2d.numel() // group
    if ngroups == 0:
        return out
    # the interpreter pays per operation, not per lane: wide programs there
    tile = max(16, min(1024, triton.next_power_of_2(ngroups))) if interpreting() else 64
    _fp4_kernel[(triton.cdiv(ngroups, tile),)](
        x2d, out, ngroups, FMT=fmt, GROUP=group, GROUPS=tile, enable_fp_fusion=False
    )
    return out


def fake_quant_mxfp4(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (n a multiple of 32; imatrix [n] accepted and ignored) -> float32 [rows, n]."""
    return _run(_MXFP4, 32, 32, x2d, imatrix)


def fake_quant_nvfp4(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (n a multiple of 64; imatrix [n] accepted and ignored) -> float32 [rows, n]."""
    return _run(_NVFP4, 64, 16, x2d, imatrix)
