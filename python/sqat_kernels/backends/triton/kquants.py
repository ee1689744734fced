"""Triton fused fake quantization of the 256-value super-block formats Q4_K, Q5_K, Q6_K and IQ4_XS.

``fake_quant_<fmt>(x2d, imatrix)``: float32 ``[rows, n]`` contiguous (``n`` a multiple of 256) and an
optional float32 importance matrix ``[n]`` -> float32 ``[rows, n]`` on the same device, bit-identical to
``dequantize(quantize(x))`` of the native kernels (``csrc/include/sqat/kquants.h``, ``iq4.h``,
``search.h``).  Each super-block is quantized and decoded again in registers.

Layout of the work: one program takes ``SB`` consecutive super-blocks.  Per-sub-block quantities are
``[SB, G]`` tiles (``G`` sub-blocks per super-block, one per column); every loop over the positions of a
sub-block loads one ``[SB, G]`` slice per step, so each per-sub-block sum is a sequential chain in index
order.  Sums across the sub-blocks of a super-block (which the reference also runs in order) walk the
columns one at a time, each column picked out of its tile with an exact masked max.  Branches become
per-lane selects; trials that the reference runs one after another are run one after another.  Divisions
and square roots are the IEEE-rounded ``div_rn`` / ``sqrt_rn``; kernels are launched with
``enable_fp_fusion=False`` so that no multiply-add is contracted.  Quotients the reference never uses
(degenerate groups) are computed with stand-in denominators.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import check_rows, interpreting
from .floats import round_fp16

__all__ = ["fake_quant_iq4_xs", "fake_quant_q4_k", "fake_quant_q5_k", "fake_quant_q6_k"]

_GROUP_MAX_EPS = tl.constexpr(1e-15)  # ggml GROUP_MAX_EPS
# Super-blocks per program: the interpreter pays per program, a GPU wants many programs.
INTERPRETER_TILE = 256
GPU_TILE = 32
_NEG_INF = tl.constexpr(float("-inf"))

# ---------------------------------------------------------------------------------------------------
# Element-wise helpers


@triton.jit
def _nearest_int(v):
    """float32 -> int32: llama.cpp's nearest_int (round half to even through the 1.5*2^23 magic add)."""
    t = v + 12582912.0
    return (t.to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000


@triton.jit
def _col(a, jj, j):
    """Column ``j`` of a float ``[SB, G]`` tile as an ``[SB]`` vector (exact: a masked max)."""
    return tl.max(tl.where(jj == j, a, _NEG_INF), axis=1)


@triton.jit
def _icol(a, jj, j):
    """Column ``j`` of an int32 ``[SB, G]`` tile as an ``[SB]`` vector."""
    return tl.max(tl.where(jj == j, a, -2147483647), axis=1)


@triton.jit
def _first_absmax(s, jj, G: tl.constexpr):
    """Per row of ``s`` [SB, G]: the first value of largest magnitude, sign kept (``if (|v| > amax)``
    from amax = 0); +0 when every value is zero.  Returns (value, magnitude)."""
    a = tl.abs(s)
    amax = tl.max(a, axis=1)
    first = tl.min(tl.where(a == amax[:, None], jj, G), axis=1)
    v = tl.max(tl.where(jj == first[:, None], s, _NEG_INF), axis=1)
    v = tl.where(amax > 0, v, 0.0)
    return v, amax


@triton.jit
def _safe(den, ok):
    """``den`` where ``ok``, else 1 (a stand-in denominator for quotients that are never selected)."""
    return tl.where(ok, den, 1.0)


@triton.jit
def _iq4_value(al):
    """kvalues_iq4nl[best_index(al)] as float32: the nearest code value, exact ties to the upper one."""
    q = tl.full(al.shape, -127.0, tl.float32)
    q = tl.where(al >= -115.5, -104.0, q)
    q = tl.where(al >= -93.5, -83.0, q)
    q = tl.where(al >= -74.0, -65.0, q)
    q = tl.where(al >= -57.0, -49.0, q)
    q = tl.where(al >= -42.0, -35.0, q)
    q = tl.where(al >= -28.5, -22.0, q)
    q = tl.where(al >= -16.0, -10.0, q)
    q = tl.where(al >= -4.5, 1.0, q)
    q = tl.where(al >= 7.0, 13.0, q)
    q = tl.where(al >= 19.0, 25.0, q)
    q = tl.where(al >= 31.5, 38.0, q)
    q = tl.where(al >= 45.5, 53.0, q)
    q = tl.where(al >= 61.0, 69.0, q)
    q = tl.where(al >= 79.0, 89.0, q)
    q = tl.where(al >= 101.0, 113.0, q)
    return q


@triton.jit
def _qx_level(v, NMAX: tl.constexpr):
    """nearest_int(v) clamped to [-NMAX, NMAX - 1] (int32)."""
    return tl.maximum(tl.minimum(_nearest_int(v), NMAX - 1), -NMAX)


# ---------------------------------------------------------------------------------------------------
# Q6_K: 16 sub-blocks of 16 values, symmetric 6-bit levels, int8 sub-scales, fp16 super-scale.


@triton.jit
def _q6_trial(x_ptr, w_ptr, xb, wb, mask, isc, HAS_W: tl.constexpr):
    """Σ w·x·l and Σ w·l² (sequential over the 16 positions) for the inverse scale ``isc`` [SB, 16]."""
    sumlx = tl.zeros(isc.shape, tl.float32)
    suml2 = tl.zeros(isc.shape, tl.float32)
    for i in range(16):
        v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
        if HAS_W:
            w = tl.load(w_ptr + wb + i, mask=mask, other=0.0)
        else:
            w = v * v
        lf = _qx_level(isc * v, 32).to(tl.float32)
        sumlx += w * v * lf
        suml2 += w * lf * lf
    return sumlx, suml2


@triton.jit
def _q6_kernel(x_ptr, w_ptr, out_ptr, nsb, n, HAS_W: tl.constexpr, SB: tl.constexpr):
    """One program: SB super-blocks of Q6_K, quantized and decoded."""
    sb = tl.program_id(0) * SB + tl.arange(0, SB)
    jj = tl.arange(0, 16)[None, :]
    valid = sb < nsb
    mask = valid[:, None] & (jj < 16)
    xb = sb[:, None].to(tl.int64) * 256 + jj * 16
    wb = (sb[:, None].to(tl.int64) * 256) % n + jj * 16
    # make_qx_quants(16, 32, x, L, 1, qw) per sub-block
    mx = tl.zeros([SB, 16], tl.float32)
    amax = tl.zeros([SB, 16], tl.float32)
    for i in range(16):
        v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
        upd = tl.abs(v) > amax
        amax = tl.where(upd, tl.abs(v), amax)
        mx = tl.where(upd, v, mx)
    zero_grp = amax < _GROUP_MAX_EPS
    mxs = _safe(mx, ~zero_grp)
    isc0 = tl.div_rn(tl.full([SB, 16], -32.0, tl.float32), mxs)
    sumlx, suml2 = _q6_trial(x_ptr, w_ptr, xb, wb, mask, isc0, HAS_W)
    scale = tl.where(suml2 != 0.0, tl.div_rn(sumlx, _safe(suml2, suml2 != 0.0)), 0.0)
    best = scale * sumlx
    pick = isc0
    for t in range(1, 19):
        isf = tl.where(t <= 9, t - 10, t - 9).to(tl.float32)
        isc = tl.div_rn(-(32.0 + 0.1 * isf) + tl.zeros([SB, 16], tl.float32), mxs)
        slx, sl2 = _q6_trial(x_ptr, w_ptr, xb, wb, mask, isc, HAS_W)
        acc = (sl2 > 0) & (slx * slx > best * sl2)
        scale = tl.where(acc, tl.div_rn(slx, _safe(sl2, acc)), scale)
        best = tl.where(acc, scale * slx, best)
        pick = tl.where(acc, isc, pick)
    scale = tl.where(zero_grp, 0.0, scale)
    # super-block: int8 sub-scales against the first largest-magnitude scale
    max_scale, max_abs = _first_absmax(scale, jj, 16)
    zero_sb = max_abs < _GROUP_MAX_EPS
    iscale = tl.div_rn(tl.full([SB], -128.0, tl.float32), _safe(max_scale, ~zero_sb))
    d_all = round_fp16(tl.div_rn(tl.full([SB], 1.0, tl.float32), iscale))
    d_all = tl.where(zero_sb, 0.0, d_all)
    sc = tl.minimum(_nearest_int(iscale[:, None] * scale), 127)
    sc = ((sc & 255) ^ 128) - 128
    sc = tl.where(zero_sb[:, None], 0, sc)
    d = d_all[:, None] * sc.to(tl.float32)
    keep = d == 0.0
    ds = _safe(d, ~keep)
    for i in range(16):
        v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
        l_search = tl.where(zero_grp | zero_sb[:, None], 0, _qx_level(pick * v, 32) + 32)
        lq = tl.maximum(tl.minimum(_nearest_int(tl.div_rn(v, ds)), 31), -32) + 32
        lv = tl.where(keep, l_search, lq)
        tl.store(out_ptr + xb + i, d * (lv - 32).to(tl.float32), mask=mask)


# ---------------------------------------------------------------------------------------------------
# IQ4_XS: 8 sub-blocks of 32 values on the IQ4 code book, 6-bit sub-scales, fp16 super-scale.


@triton.jit
def _iq4_load(x_ptr, w_ptr, xb, wb, mask, i, sigma2, HAS_W: tl.constexpr):
    """(x, weight) at position ``i`` of every sub-block: qw·sqrt(sigma2 + x²) with imatrix, else x²."""
    v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
    if HAS_W:
        w = tl.load(w_ptr + wb + i, mask=mask, other=0.0) * tl.sqrt_rn(sigma2 + v * v)
    else:
        w = v * v
    return v, w


@triton.jit
def _iq4_trial(x_ptr, w_ptr, xb, wb, mask, sigma2, idt, HAS_W: tl.constexpr):
    """Σ w·q·x and Σ w·q² (sequential over the 32 positions) for the inverse scale ``idt``."""
    sumqx = tl.zeros(idt.shape, tl.float32)
    sumq2 = tl.zeros(idt.shape, tl.float32)
    for i in range(32):
        v, w = _iq4_load(x_ptr, w_ptr, xb, wb, mask, i, sigma2, HAS_W)
        q = _iq4_value(idt * v)
        wq = w * q
        sumqx += wq * v
        sumq2 += wq * q
    return sumqx, sumq2


@triton.jit
def _iq4xs_kernel(x_ptr, w_ptr, out_ptr, nsb, n, HAS_W: tl.constexpr, SB: tl.constexpr):
    """One program: SB super-blocks of IQ4_XS, quantized and decoded."""
    sb = tl.program_id(0) * SB + tl.arange(0, SB)
    jj = tl.arange(0, 8)[None, :]
    valid = sb < nsb
    mask = valid[:, None] & (jj < 8)
    base = sb.to(tl.int64) * 256
    xb = base[:, None] + jj * 32
    wb = base[:, None] % n + jj * 32
    # sigma2 = 2 Σx² / 256, sequential over the super-block
    s = tl.zeros([SB], tl.float32)
    for k in range(256):
        v = tl.load(x_ptr + base + k, mask=valid, other=0.0)
        s += v * v
    sigma2 = (s * 0.0078125)[:, None]
    # group scale per 32-value sub-block
    mx = tl.zeros([SB, 8], tl.float32)
    amax = tl.zeros([SB, 8], tl.float32)
    for i in range(32):
        v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
        upd = tl.abs(v) > amax
        amax = tl.where(upd, tl.abs(v), amax)
        mx = tl.where(upd, v, mx)
    zero_grp = amax < _GROUP_MAX_EPS
    mxs = _safe(mx, ~zero_grp)
    id0 = tl.div_rn(tl.full([SB, 8], 1.0, tl.float32), tl.div_rn(-mxs, tl.full([SB, 8], -127.0, tl.float32)))
    sumqx, sumq2 = _iq4_trial(x_ptr, w_ptr, xb, wb, mask, sigma2, id0, HAS_W)
    dg = tl.where(sumq2 > 0.0, tl.div_rn(sumqx, _safe(sumq2, sumq2 > 0.0)), 0.0)
    best = dg * sumqx
    for t in range(1, 16):
        idt = tl.div_rn((tl.zeros([SB, 8], tl.int32) + (t - 135)).to(tl.float32), mxs)
        sqx, sq2 = _iq4_trial(x_ptr, w_ptr, xb, wb, mask, sigma2, idt, HAS_W)
        acc = (sq2 > 0.0) & (sqx * sqx > best * sq2)
        dg = tl.where(acc, tl.div_rn(sqx, _safe(sq2, acc)), dg)
        best = tl.where(acc, dg * sqx, best)
    dg = tl.where(zero_grp, 0.0, dg)
    # super-scale and 6-bit sub-scales
    max_scale, max_abs = _first_absmax(dg, jj, 8)
    # x * -1.0, not -x: compiled Triton lowers unary minus to 0 - x, which turns -(+0.0) into +0.0
    d = tl.div_rn(max_scale * -1.0, tl.full([SB], 32.0, tl.float32))
    dh = round_fp16(d)
    dnz = d != 0.0
    idd = tl.where(dnz, tl.div_rn(tl.full([SB], 1.0, tl.float32), _safe(d, dnz)), 0.0)
    lvl = tl.maximum(tl.minimum(_nearest_int(idd[:, None] * dg), 31), -32)
    dl = d[:, None] * lvl.to(tl.float32)
    dlnz = dl != 0.0
    idl = tl.where(dlnz, tl.div_rn(tl.full([SB, 8], 1.0, tl.float32), _safe(dl, dlnz)), 0.0)
    dq = dh[:, None] * lvl.to(tl.float32)
    for i in range(32):
        v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
        tl.store(out_ptr + xb + i, dq * _iq4_value(idl * v), mask=mask)


# ---------------------------------------------------------------------------------------------------
# Q4_K / Q5_K: 8 sub-blocks of 32 values, asymmetric levels 0..NMAX, 6-bit scales and mins.


@triton.jit
def _kq_load(x_ptr, w_ptr, xb, wb, mask, i, aux, HAS_W: tl.constexpr):
    """(x, weight) at position ``i`` of every sub-block.  With imatrix ``aux`` is the super-block's
    sigma2 and the weight qw·sqrt(sigma2 + x²); without, ``aux`` is the sub-block's sqrt(Σx²/32) and
    the weight aux + |x|."""
    v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
    if HAS_W:
        w = tl.load(w_ptr + wb + i, mask=mask, other=0.0) * tl.sqrt_rn(aux + v * v)
    else:
        w = aux + tl.abs(v)
    return v, w


@triton.jit
def _kq_level(v, NMAX: tl.constexpr):
    """nearest_int(v) clamped to [0, NMAX] (int32)."""
    return tl.maximum(tl.minimum(_nearest_int(v), NMAX), 0)


@triton.jit
def _make_qp_quants(x, qw, jj, NMAX: tl.constexpr):
    """make_qp_quants(8, NMAX, x, L, qw) on every row of the [SB, 8] tiles ``x`` / ``qw``: returns
    (scale [SB], L [SB, 8] int32 holding the uint8 image of each level).  Sums run over the columns in
    order; the 5 refinement passes always run (a pass that changes nothing leaves the state as it was,
    so the reference's early exit changes no result)."""
    mxv = tl.max(tl.where(x > 0, x, 0.0), axis=1)
    zero = mxv < _GROUP_MAX_EPS
    mxs = _safe(mxv, ~zero)[:, None]
    iscale = tl.div_rn(tl.full(x.shape, NMAX, tl.float32), mxs)
    lv = _nearest_int(iscale * x) & 255
    scale = tl.div_rn(tl.full(x.shape, 1.0, tl.float32), iscale)
    diff = x - scale * lv.to(tl.float32)
    term = qw * diff * diff
    best = tl.zeros([x.shape[0]], tl.float32)
    for j in tl.static_range(8):
        best += _col(term, jj, j)
    for k in tl.static_range(9):
        if k != 4:
            isf = (tl.zeros(x.shape, tl.int32) + (k - 4)).to(tl.float32)
            isc = tl.div_rn(0.1 * isf + NMAX, mxs)
            sc = tl.div_rn(tl.full(x.shape, 1.0, tl.float32), isc)
            lt = tl.minimum(_nearest_int(isc * x), NMAX).to(tl.float32)
            diff = x - sc * lt
            term = qw * diff * diff
            mse = tl.zeros([x.shape[0]], tl.float32)
            for j in tl.static_range(8):
                mse += _col(term, jj, j)
            acc = mse < best
            best = tl.where(acc, mse, best)
            iscale = tl.where(acc[:, None], isc, iscale)
    li = tl.minimum(_nearest_int(iscale * x), NMAX)
    lf = li.to(tl.float32)
    lv = li & 255
    t_lx = qw * x * lf
    t_l2 = qw * lf * lf
    sumlx = tl.zeros([x.shape[0]], tl.float32)
    suml2 = tl.zeros([x.shape[0]], tl.float32)
    for j in tl.static_range(8):
        sumlx += _col(t_lx, jj, j)
        suml2 += _col(t_l2, jj, j)
    for _itry in range(5):
        for i in tl.static_range(8):
            w = _col(qw, jj, i)
            xi = _col(x, jj, i)
            li_old = _icol(lv, jj, i)
            lo = li_old.to(tl.float32)
            slx = sumlx - w * xi * lo
            sl2 = suml2 - w * lo * lo
            ok = (slx > 0) & (sl2 > 0)
            new_l = tl.minimum(_nearest_int(tl.div_rn(xi * sl2, _safe(slx, ok))), NMAX)
            ch = ok & (new_l != li_old)
            nf = new_l.to(tl.float32)
            slx = slx + w * xi * nf
            sl2 = sl2 + w * nf * nf
            acc = ch & (slx * slx * suml2 > sumlx * sumlx * sl2)
            lv = tl.where(acc[:, None] & (jj == i), (new_l & 255)[:, None], lv)
            sumlx = tl.where(acc, slx, sumlx)
            suml2 = tl.where(acc, sl2, suml2)
    res = tl.where(suml2 > 0.0, tl.div_rn(sumlx, _safe(suml2, suml2 > 0.0)), 0.0)
    res = tl.where(zero, 0.0, res)
    lv = tl.where(zero[:, None], 0, lv)
    return res, lv


@triton.jit
def _decode_k4(ls, jj):
    """The 6-bit values get_scale_min_k4 reads back after pack_scale_min_k4 stored the uint8 levels
    ``ls`` [SB, 8] (levels above 63 spill their high bits exactly as the byte stores do)."""
    prev = tl.zeros(ls.shape, tl.int32)
    for j in tl.static_range(4, 8):
        prev = tl.where(jj == j, _icol(ls, jj, j - 4)[:, None], prev)
    hi = (((prev >> 6) | (ls >> 4)) & 3) << 4
    return tl.where(jj < 4, ls & 63, (ls & 15) | hi)


@triton.jit
def _kq_kernel(x_ptr, w_ptr, out_ptr, nsb, n, HAS_W: tl.constexpr, SB: tl.constexpr, NMAX: tl.constexpr):
    """One program: SB super-blocks of Q4_K (NMAX = 15) or Q5_K (NMAX = 31), quantized and decoded."""
    sb = tl.program_id(0) * SB + tl.arange(0, SB)
    jj = tl.arange(0, 8)[None, :]
    valid = sb < nsb
    mask = valid[:, None] & (jj < 8)
    base = sb.to(tl.int64) * 256
    xb = base[:, None] + jj * 32
    wb = base[:, None] % n + jj * 32
    if HAS_W:
        s = tl.zeros([SB], tl.float32)
        for k in range(256):
            v = tl.load(x_ptr + base + k, mask=valid, other=0.0)
            s += v * v
        aux = tl.div_rn(2.0 * s, tl.full([SB], 256.0, tl.float32))[:, None] + tl.zeros([SB, 8], tl.float32)
        RMIN: tl.constexpr = -0.9
        RDELTA: tl.constexpr = 0.05
        NSTEP: tl.constexpr = 36
    else:
        s2 = tl.zeros([SB, 8], tl.float32)
        for i in range(32):
            v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
            s2 += v * v
        aux = tl.sqrt_rn(tl.div_rn(s2, tl.full([SB, 8], 32.0, tl.float32)))
        RMIN: tl.constexpr = -1.0 if NMAX == 15 else -0.5
        RDELTA: tl.constexpr = 0.1
        NSTEP: tl.constexpr = 20 if NMAX == 15 else 15
    # make_qkx2/3_quants per sub-block, with the moving offset m
    v, w = _kq_load(x_ptr, w_ptr, xb, wb, mask, 0, aux, HAS_W)
    mn = v
    mx = v
    sum_w = w
    sum_x = w * v
    sw = 0.0 + w
    for i in range(1, 32):
        v, w = _kq_load(x_ptr, w_ptr, xb, wb, mask, i, aux, HAS_W)
        mn = tl.where(v < mn, v, mn)
        mx = tl.where(v > mx, v, mx)
        sum_w += w
        sum_x += w * v
        sw += w
    m = tl.where(mn > 0, 0.0, mn)
    flat = mx == m
    iscale = tl.div_rn(tl.full([SB, 8], NMAX, tl.float32), _safe(mx - m, ~flat))
    sc = tl.div_rn(tl.full([SB, 8], 1.0, tl.float32), iscale)
    best = tl.zeros([SB, 8], tl.float32)
    for i in range(32):
        v, w = _kq_load(x_ptr, w_ptr, xb, wb, mask, i, aux, HAS_W)
        lf = _kq_level(iscale * (v - m), NMAX).to(tl.float32)
        diff = sc * lf + m - v
        best += w * (diff * diff)
    l_iscale = iscale
    l_min = m
    for step in range(NSTEP + 1):
        isf = (tl.zeros([SB, 8], tl.int32) + step).to(tl.float32)
        isc = tl.div_rn(RMIN + RDELTA * isf + NMAX, _safe(mx - m, ~flat))
        sum_l = tl.zeros([SB, 8], tl.float32)
        sum_l2 = tl.zeros([SB, 8], tl.float32)
        sum_xl = tl.zeros([SB, 8], tl.float32)
        for i in range(32):
            v, w = _kq_load(x_ptr, w_ptr, xb, wb, mask, i, aux, HAS_W)
            lf = _kq_level(isc * (v - m), NMAX).to(tl.float32)
            sum_l += w * lf
            sum_l2 += w * lf * lf
            sum_xl += w * lf * v
        D = sum_w * sum_l2 - sum_l * sum_l
        Ds = _safe(D, D != 0.0)
        ts = tl.div_rn(sum_w * sum_xl - sum_x * sum_l, Ds)
        tm = tl.div_rn(sum_l2 * sum_x - sum_l * sum_xl, Ds)
        pos = tm > 0
        ts = tl.where(pos, tl.div_rn(sum_xl, _safe(sum_l2, sum_l2 != 0.0)), ts)
        tm = tl.where(pos, 0.0, tm)
        cur = tl.zeros([SB, 8], tl.float32)
        for i in range(32):
            v, w = _kq_load(x_ptr, w_ptr, xb, wb, mask, i, aux, HAS_W)
            lf = _kq_level(isc * (v - m), NMAX).to(tl.float32)
            diff = ts * lf + tm - v
            cur += w * (diff * diff)
        acc = (D > 0) & (~flat) & (cur < best)
        best = tl.where(acc, cur, best)
        l_iscale = tl.where(acc, isc, l_iscale)
        l_min = tl.where(acc, m, l_min)
        sc = tl.where(acc, ts, sc)
        m = tl.where(acc, tm, m)
    scales = tl.where(flat, 0.0, sc)
    mins = m * -1.0  # not -m (0 - m on a GPU: the sign of a zero would be lost)
    # 6-bit sub-scales and mins, fp16 super-scales
    if HAS_W:
        d_block, ls = _make_qp_quants(scales, sw, jj, 63)
        m_block, lm = _make_qp_quants(mins, sw, jj, 63)
        if NMAX == 31:
            ls = tl.minimum(ls, 63)
            lm = tl.minimum(lm, 63)
    else:
        max_scale = tl.max(tl.where(scales > 0, scales, 0.0), axis=1)
        max_min = tl.max(tl.where(mins > 0, mins, 0.0), axis=1)
        inv_scale = tl.where(
            max_scale > 0, tl.div_rn(tl.full([SB], 63.0, tl.float32), _safe(max_scale, max_scale > 0)), 0.0
        )
        inv_min = tl.where(
            max_min > 0, tl.div_rn(tl.full([SB], 63.0, tl.float32), _safe(max_min, max_min > 0)), 0.0
        )
        ls = tl.minimum(_nearest_int(inv_scale[:, None] * scales) & 255, 63)
        lm = tl.minimum(_nearest_int(inv_min[:, None] * mins) & 255, 63)
        d_block = tl.div_rn(max_scale, tl.full([SB], 63.0, tl.float32))
        m_block = tl.div_rn(max_min, tl.full([SB], 63.0, tl.float32))
    d_all = round_fp16(d_block)
    m_all = round_fp16(m_block)
    d = d_all[:, None] * _decode_k4(ls, jj).to(tl.float32)
    dm = m_all[:, None] * _decode_k4(lm, jj).to(tl.float32)
    keep = d == 0.0
    ds = _safe(d, ~keep)
    for i in range(32):
        v = tl.load(x_ptr + xb + i, mask=mask, other=0.0)
        l_search = tl.where(flat, 0, _kq_level(l_iscale * (v - l_min), NMAX))
        lq = _kq_level(tl.div_rn(v + dm, ds), NMAX)
        lv = tl.where(keep, l_search, lq)
        tl.store(out_ptr + xb + i, d * lv.to(tl.float32) - dm, mask=mask)


# ---------------------------------------------------------------------------------------------------
# Host side


def _launch(
    kernel: triton.JITFunction, x2d: torch.Tensor, imatrix: torch.Tensor | None, **meta: int
) -> torch.Tensor:
    """Runs ``kernel`` over all super-blocks of ``x2d``; returns the decoded tensor."""
    check_rows(x2d, imatrix, 256)
    out = torch.empty_like(x2d)
    nsb = x2d.numel() // 256
    if nsb == 0:
        return out
    has_w = imatrix is not None
    w = imatrix.contiguous() if has_w else x2d
    tile = max(16, min(INTERPRETER_TILE, triton.next_power_of_2(nsb))) if interpreting() else GPU_TILE
    kernel[(triton.cdiv(nsb, tile),)](
        x2d, w, out, nsb, x2d.shape[1], HAS_W=has_w, SB=tile, enable_fp_fusion=False, **meta
    )
    return out


def fake_quant_q6_k(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through Q6_K."""
    return _launch(_q6_kernel, x2d, imatrix)


def fake_quant_iq4_xs(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through IQ4_XS."""
    return _launch(_iq4xs_kernel, x2d, imatrix)


def fake_quant_q4_k(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through Q4_K."""
    return _launch(_kq_kernel, x2d, imatrix, NMAX=15)


def fake_quant_q5_k(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through Q5_K."""
    return _launch(_kq_kernel, x2d, imatrix, NMAX=31)
