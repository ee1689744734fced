"""Triton fused fake quantization of the 32-value block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL.

``fake_quant_<fmt>(x2d, imatrix)``: float32 ``[rows, n]`` contiguous (``n`` a multiple of 32) and an optional
float32 importance matrix ``[n]`` -> float32 ``[rows, n]`` on the same device, bit-identical to
``dequantize(quantize(x))`` of the native kernels (``csrc/include/sqat/legacy.h``, ``iq4.h``, ``search.h``).
The block is quantized and decoded again in registers; no packed byte ever reaches memory.

Layout of the work: one program takes ``BLOCKS`` consecutive 32-value blocks, one block per lane.  Every
quantity of a block is a ``[BLOCKS]`` vector, and every loop over the 32 positions of a block loads one
column of values per step, so each per-block sum is a sequential chain in index order, exactly the
reference's order (no tree reductions).  Branches of the reference become per-lane selects.  Divisions
and square roots use the IEEE-rounded ``div_rn`` / ``sqrt_rn``; kernels are launched with
``enable_fp_fusion=False`` so no multiply-add is contracted.  Values the kernels never select (the
quotients of a degenerate block) are computed with harmless stand-in denominators.

The Q4_0/Q4_1/Q5_0/Q5_1 importance-matrix paths need the row's ``sigma2 = Σx²/n`` (sequential over the
whole row); a small first kernel computes it, one row per lane.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import check_rows, interpreting
from .floats import round_fp16

__all__ = [
    "fake_quant_iq4_nl",
    "fake_quant_q4_0",
    "fake_quant_q4_1",
    "fake_quant_q5_0",
    "fake_quant_q5_1",
    "fake_quant_q8_0",
]

# Format selectors of the kernel (a tl.constexpr, so each format compiles to its own straight code).
_Q8_0, _Q4_0, _Q4_1, _Q5_0, _Q5_1, _IQ4_NL = 0, 1, 2, 3, 4, 5


# ---------------------------------------------------------------------------------------------------
# Scalar helpers (element-wise on [BLOCKS] vectors)


@triton.jit
def _nearest_int(v):
    """float32 -> int32: llama.cpp's nearest_int (round half to even through the 1.5*2^23 magic add)."""
    t = v + 12582912.0
    return (t.to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000


@triton.jit
def _narrow_to_i8(v):
    """float32 -> int32 in [-128, 127]: the x86 result of narrowing a float to int8 (truncation to int32,
    NaN / out of range -> INT32_MIN, then the low byte)."""
    in_range = (v >= -2147483648.0) & (v < 2147483648.0)
    i = tl.where(in_range, v, -2147483648.0).to(tl.int32)
    b = i & 0xFF
    return tl.where(b >= 128, b - 256, b)


@triton.jit
def _round_half_away(v):
    """float32 -> float32: C roundf (halves away from zero), inf/NaN/integral values returned as they are."""
    bits = v.to(tl.int32, bitcast=True)
    abits = bits & 0x7FFFFFFF
    small = abits < 0x4B000000  # |v| < 2^23
    a = tl.where(small, abits, 0).to(tl.float32, bitcast=True)
    t = a.to(tl.int32).to(tl.float32)  # exact truncation
    t = t + tl.where(a - t >= 0.5, 1.0, 0.0)
    r = t.to(tl.int32, bitcast=True) | (bits & -2147483648)  # sign of v
    return tl.where(small, r, bits).to(tl.float32, bitcast=True)


@triton.jit
def _qx_level(v, NMAX: tl.constexpr):
    """nearest_int(v) clamped to [-NMAX, NMAX - 1] (make_qx_quants' level), int32."""
    return tl.maximum(tl.minimum(_nearest_int(v), NMAX - 1), -NMAX)


@triton.jit
def _qkx_level(v, NMAX: tl.constexpr):
    """nearest_int(v) clamped to [0, NMAX] (make_qkx3_quants' level), int32."""
    return tl.maximum(tl.minimum(_nearest_int(v), NMAX), 0)


@triton.jit
def _iq4_value(al):
    """float32 -> float32: kvalues_iq4nl[best index of al], nearest code with exact ties going up (a NaN
    gives the top code).  -127 plus the steps of the midpoints not above al, all exact integers."""
    q = tl.zeros(al.shape, tl.float32) - 127.0
    q += tl.where(al < -115.5, 0.0, 23.0)
    q += tl.where(al < -93.5, 0.0, 21.0)
    q += tl.where(al < -74.0, 0.0, 18.0)
    q += tl.where(al < -57.0, 0.0, 16.0)
    q += tl.where(al < -42.0, 0.0, 14.0)
    q += tl.where(al < -28.5, 0.0, 13.0)
    q += tl.where(al < -16.0, 0.0, 12.0)
    q += tl.where(al < -4.5, 0.0, 11.0)
    q += tl.where(al < 7.0, 0.0, 12.0)
    q += tl.where(al < 19.0, 0.0, 12.0)
    q += tl.where(al < 31.5, 0.0, 13.0)
    q += tl.where(al < 45.5, 0.0, 15.0)
    q += tl.where(al < 61.0, 0.0, 16.0)
    q += tl.where(al < 79.0, 0.0, 20.0)
    q += tl.where(al < 101.0, 0.0, 24.0)
    return q


@triton.jit
def _safe(den, ok):
    """den where ok, else 1.0: a stand-in denominator for quotients that are never selected."""
    return tl.where(ok, den, 1.0)


# ---------------------------------------------------------------------------------------------------
# Per-block loops (x_ptr + base + j addresses value j of each lane's block)


@triton.jit
def _weight(x_ptr, w_ptr, base, col, j, s2, mask, HAS_W: tl.constexpr):
    """(x_j, importance weight of x_j) for the legacy *_impl paths: qw_j * sqrt(sigma2 + x_j²)."""
    xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
    if HAS_W:
        qw = tl.load(w_ptr + col + j, mask=mask, other=0.0)
        wj = qw * tl.sqrt_rn(s2 + xj * xj)
    else:
        wj = xj * xj
    return xj, wj


@triton.jit
def _signed_absmax(x_ptr, base, mask, BLOCKS: tl.constexpr):
    """First value of largest magnitude, sign kept (scan from amax = max = 0, strict >)."""
    amax = tl.zeros([BLOCKS], tl.float32)
    mx = tl.zeros([BLOCKS], tl.float32)
    for j in range(32):
        v = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        a = tl.abs(v)
        up = a > amax
        amax = tl.where(up, a, amax)
        mx = tl.where(up, v, mx)
    return mx


@triton.jit
def _min_max(x_ptr, base, mask, BLOCKS: tl.constexpr):
    """Strict sequential scans `if (v < min) min = v; if (v > max) max = v;` from +/-FLT_MAX."""
    mn = tl.zeros([BLOCKS], tl.float32) + 3.4028234663852886e38
    mx = tl.zeros([BLOCKS], tl.float32) - 3.4028234663852886e38
    for j in range(32):
        v = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        mn = tl.where(v < mn, v, mn)
        mx = tl.where(v > mx, v, mx)
    return mn, mx


@triton.jit
def _qx_trial(
    x_ptr, w_ptr, base, col, s2, mask, isc, NMAX: tl.constexpr, HAS_W: tl.constexpr, BLOCKS: tl.constexpr
):
    """Σ w·x·l and Σ w·l² over a block for the levels l = qx_level(isc·x) (sequential in j)."""
    sumlx = tl.zeros([BLOCKS], tl.float32)
    suml2 = tl.zeros([BLOCKS], tl.float32)
    for j in range(32):
        # helpers inlined in the hot loops: each nested call costs the interpreter far more than an op
        xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        wj = tl.load(w_ptr + col + j, mask=mask, other=0.0) * tl.sqrt_rn(s2 + xj * xj)
        wx = wj * xj
        t = (isc * xj + 12582912.0).to(tl.int32, bitcast=True)
        lf = tl.maximum(tl.minimum((t & 0x7FFFFF) - 0x400000, NMAX - 1), -NMAX).to(tl.float32)
        sumlx += wx * lf
        suml2 += wj * lf * lf
    return sumlx, suml2


@triton.jit
def _qx_pick(
    x_ptr,
    w_ptr,
    base,
    col,
    s2,
    mask,
    mx,
    scale,
    best,
    pick,
    IS: tl.constexpr,
    NMAX: tl.constexpr,
    HAS_W: tl.constexpr,
    BLOCKS: tl.constexpr,
):
    """One trial inverse scale -(NMAX + 0.1·IS)/max of make_qx_quants, kept when it is better."""
    is_f = tl.zeros([BLOCKS], tl.float32) + IS
    isc = tl.div_rn(-(NMAX + 0.1 * is_f), mx)
    sumlx, suml2 = _qx_trial(x_ptr, w_ptr, base, col, s2, mask, isc, NMAX, HAS_W, BLOCKS)
    acc = (suml2 > 0) & (sumlx * sumlx > best * suml2)
    scale = tl.where(acc, tl.div_rn(sumlx, _safe(suml2, acc)), scale)
    best = tl.where(acc, scale * sumlx, best)
    pick = tl.where(acc, isc, pick)
    return scale, best, pick


@triton.jit
def _make_qx_quants(
    x_ptr, w_ptr, base, col, s2, mask, NMAX: tl.constexpr, HAS_W: tl.constexpr, BLOCKS: tl.constexpr
):
    """make_qx_quants(32, NMAX, x, L, rmse_type=1, w) with the *_impl weights.

    Returns (scale, inverse scale of the levels, degenerate mask); level j is
    qx_level(pick·x_j) + NMAX, or 0 where the block is degenerate (then scale = 0).
    """
    mx = _signed_absmax(x_ptr, base, mask, BLOCKS)
    degen = tl.abs(mx) < 1e-15
    mx = _safe(mx, ~degen)
    isc0 = tl.div_rn(tl.zeros([BLOCKS], tl.float32) - NMAX, mx)
    sumlx, suml2 = _qx_trial(x_ptr, w_ptr, base, col, s2, mask, isc0, NMAX, HAS_W, BLOCKS)
    nz = suml2 != 0.0
    scale = tl.where(nz, tl.div_rn(sumlx, _safe(suml2, nz)), 0.0)
    best = scale * sumlx
    pick = isc0
    for k in tl.static_range(-9, 0):
        scale, best, pick = _qx_pick(
            x_ptr, w_ptr, base, col, s2, mask, mx, scale, best, pick, k, NMAX, HAS_W, BLOCKS
        )
    for k in tl.static_range(1, 10):
        scale, best, pick = _qx_pick(
            x_ptr, w_ptr, base, col, s2, mask, mx, scale, best, pick, k, NMAX, HAS_W, BLOCKS
        )
    scale = tl.where(degen, 0.0, scale)
    return scale, pick, degen


@triton.jit
def _make_qkx3_quants(
    x_ptr, w_ptr, base, col, s2, mask, NMAX: tl.constexpr, HAS_W: tl.constexpr, BLOCKS: tl.constexpr
):
    """make_qkx3_quants(32, NMAX, x, w, L, &the_min, Laux, -0.9, 0.05, 36, false) with the *_impl weights.

    Returns (scale, offset m = -the_min, inverse scale and offset the levels come from, flat mask);
    level j is qkx_level(l_iscale·(x_j - l_min)), or 0 where the block is flat (then scale = 0).
    """
    x0, w0 = _weight(x_ptr, w_ptr, base, col, 0, s2, mask, HAS_W)
    mn = x0
    mx = x0
    sum_w = w0
    sum_x = w0 * x0
    for j in range(1, 32):
        xj, wj = _weight(x_ptr, w_ptr, base, col, j, s2, mask, HAS_W)
        mn = tl.where(xj < mn, xj, mn)
        mx = tl.where(xj > mx, xj, mx)
        sum_w += wj
        sum_x += wj * xj
    mn = tl.where(mn > 0, 0.0, mn)
    flat = mx <= mn
    iscale = tl.div_rn(tl.zeros([BLOCKS], tl.float32) + NMAX, _safe(mx - mn, ~flat))
    scale = tl.div_rn(1.0, iscale)
    best_error = tl.zeros([BLOCKS], tl.float32)
    for j in range(32):
        xj, wj = _weight(x_ptr, w_ptr, base, col, j, s2, mask, HAS_W)
        lf = _qkx_level(iscale * (xj - mn), NMAX).to(tl.float32)
        diff = scale * lf + mn - xj
        best_error += wj * (diff * diff)
    l_iscale = iscale
    l_min = mn
    m = mn
    for step in range(37):
        step_f = tl.zeros([BLOCKS], tl.float32) + step
        isc = tl.div_rn(-0.9 + 0.05 * step_f + NMAX, _safe(mx - m, ~flat))
        sum_l = tl.zeros([BLOCKS], tl.float32)
        sum_l2 = tl.zeros([BLOCKS], tl.float32)
        sum_xl = tl.zeros([BLOCKS], tl.float32)
        for j in range(32):
            xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
            wj = tl.load(w_ptr + col + j, mask=mask, other=0.0) * tl.sqrt_rn(s2 + xj * xj)
            t = (isc * (xj - m) + 12582912.0).to(tl.int32, bitcast=True)
            lf = tl.maximum(tl.minimum((t & 0x7FFFFF) - 0x400000, NMAX), 0).to(tl.float32)
            sum_l += wj * lf
            sum_l2 += wj * lf * lf
            sum_xl += wj * lf * xj
        D = sum_w * sum_l2 - sum_l * sum_l
        dpos = D > 0
        ts = tl.div_rn(sum_w * sum_xl - sum_x * sum_l, _safe(D, dpos))
        tm = tl.div_rn(sum_l2 * sum_x - sum_l * sum_xl, _safe(D, dpos))
        positive = tm > 0
        ts = tl.where(positive, tl.div_rn(sum_xl, _safe(sum_l2, positive & dpos)), ts)
        tm = tl.where(positive, 0.0, tm)
        cur_error = tl.zeros([BLOCKS], tl.float32)
        for j in range(32):
            xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
            wj = tl.load(w_ptr + col + j, mask=mask, other=0.0) * tl.sqrt_rn(s2 + xj * xj)
            t = (isc * (xj - m) + 12582912.0).to(tl.int32, bitcast=True)
            lf = tl.maximum(tl.minimum((t & 0x7FFFFF) - 0x400000, NMAX), 0).to(tl.float32)
            diff = ts * lf + tm - xj
            cur_error += wj * (diff * diff)
        accept = dpos & (cur_error < best_error) & ~flat
        best_error = tl.where(accept, cur_error, best_error)
        scale = tl.where(accept, ts, scale)
        l_iscale = tl.where(accept, isc, l_iscale)
        l_min = tl.where(accept, m, l_min)
        m = tl.where(accept, tm, m)
    scale = tl.where(flat, 0.0, scale)
    return scale, m, l_iscale, l_min, flat


@triton.jit
def _iq4_trial(x_ptr, w_ptr, base, col, sigma2, mask, idt, HAS_W: tl.constexpr, BLOCKS: tl.constexpr):
    """Σ w·q·x and Σ w·q² over a block for the codes q = nearest IQ4 value of idt·x (sequential in j)."""
    sumqx = tl.zeros([BLOCKS], tl.float32)
    sumq2 = tl.zeros([BLOCKS], tl.float32)
    for j in range(32):
        xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        if HAS_W:
            wj = tl.load(w_ptr + col + j, mask=mask, other=0.0) * tl.sqrt_rn(sigma2 + xj * xj)
        else:
            wj = xj * xj
        q = _iq4_value(idt * xj)
        wq = wj * q
        sumqx += wq * xj
        sumq2 += wq * q
    return sumqx, sumq2


@triton.jit
def _iq4_scale(x_ptr, w_ptr, base, col, mask, HAS_W: tl.constexpr, BLOCKS: tl.constexpr):
    """IQ4_NL block scale: quantize_row_iq4_nl_impl with ntry = 7 (sigma2 = 2·Σx²/32 over the block)."""
    sigma2 = tl.zeros([BLOCKS], tl.float32)
    for j in range(32):
        v = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        sigma2 += v * v
    sigma2 = sigma2 * 0.0625
    mx = _signed_absmax(x_ptr, base, mask, BLOCKS)
    degen = tl.abs(mx) < 1e-15
    mx = _safe(mx, ~degen)
    id0 = tl.div_rn(1.0, tl.div_rn(mx * -1.0, -127.0))  # not -mx: compiled, that is 0 - mx
    sumqx, sumq2 = _iq4_trial(x_ptr, w_ptr, base, col, sigma2, mask, id0, HAS_W, BLOCKS)
    ok = sumq2 > 0.0
    d = tl.where(ok, tl.div_rn(sumqx, _safe(sumq2, ok)), 0.0)
    best = d * sumqx
    for t in range(1, 16):
        t_f = tl.zeros([BLOCKS], tl.float32) + (t - 135)  # itry - 127 with itry = t - 8
        idt = tl.div_rn(t_f, mx)
        sumqx, sumq2 = _iq4_trial(x_ptr, w_ptr, base, col, sigma2, mask, idt, HAS_W, BLOCKS)
        acc = (sumq2 > 0.0) & (sumqx * sumqx > best * sumq2)
        d = tl.where(acc, tl.div_rn(sumqx, _safe(sumq2, acc)), d)
        best = tl.where(acc, d * sumqx, best)
    return tl.where(degen, 0.0, d)


# ---------------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _row_sigma2_kernel(x_ptr, s2_ptr, rows, n, n_f, ROWS: tl.constexpr):
    """s2[r] = (Σ_j x[r, j]²) / n, sequential in j; one row per lane.  x float32 [rows, n]."""
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    mask = r < rows
    base = r * n
    s = tl.zeros([ROWS], tl.float32)
    for j in range(n):
        v = tl.load(x_ptr + base + j, mask=mask, other=0.0)
        s += v * v
    tl.store(s2_ptr + r, tl.div_rn(s, n_f), mask=mask)


@triton.jit
def _legacy_kernel(
    x_ptr,
    w_ptr,
    s2_ptr,
    out_ptr,
    nblocks,
    blocks_per_row,
    FMT: tl.constexpr,
    HAS_W: tl.constexpr,
    BLOCKS: tl.constexpr,
):
    """Fake-quantize BLOCKS consecutive 32-value blocks (one per lane) of x float32 [rows, n] into out.

    w_ptr: importance matrix float32 [n] (read only when HAS_W); s2_ptr: per-row sigma2 float32 [rows]
    (read only for the Q4_0/Q4_1/Q5_0/Q5_1 imatrix paths).
    """
    b = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
    mask = b < nblocks
    base = b * 32
    col = (b % blocks_per_row) * 32
    s2 = tl.zeros([BLOCKS], tl.float32)
    if HAS_W:
        if FMT != 0:
            if FMT != 5:
                s2 = tl.load(s2_ptr + b // blocks_per_row, mask=mask, other=0.0)

    if FMT == 0:  # Q8_0 (the importance matrix is ignored)
        amax = tl.zeros([BLOCKS], tl.float32)
        for j in range(32):
            a = tl.abs(tl.load(x_ptr + base + j, mask=mask, other=0.0))
            amax = tl.where(amax > a, amax, a)
        d = tl.div_rn(amax, 127.0)
        nz = d != 0.0
        iscale = tl.where(nz, tl.div_rn(1.0, _safe(d, nz)), 0.0)
        d16 = round_fp16(d)
        for j in range(32):
            xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
            q = _narrow_to_i8(_round_half_away(xj * iscale))
            tl.store(out_ptr + base + j, q.to(tl.float32) * d16, mask=mask)

    elif FMT == 1 or FMT == 3:  # Q4_0, Q5_0: symmetric, value = (q - OFF)·d
        OFF: tl.constexpr = 8 if FMT == 1 else 16
        if HAS_W:
            d, pick, degen = _make_qx_quants(x_ptr, w_ptr, base, col, s2, mask, OFF, HAS_W, BLOCKS)
            d16 = round_fp16(d)
            for j in range(32):
                xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
                q = tl.where(degen, 0, _qx_level(pick * xj, OFF) + OFF)
                tl.store(out_ptr + base + j, (q - OFF).to(tl.float32) * d16, mask=mask)
        else:
            mx = _signed_absmax(x_ptr, base, mask, BLOCKS)
            d = tl.div_rn(mx, -1.0 * OFF)
            nz = d != 0.0
            iscale = tl.where(nz, tl.div_rn(1.0, _safe(d, nz)), 0.0)
            d16 = round_fp16(d)
            for j in range(16):
                x0 = tl.load(x_ptr + base + j, mask=mask, other=0.0)
                x1 = tl.load(x_ptr + base + j + 16, mask=mask, other=0.0)
                # level bytes as the reference stores them (uint8 images of the clamped int8 values)
                q0 = tl.minimum(_narrow_to_i8(x0 * iscale + (OFF + 0.5)), 2 * OFF - 1) & 0xFF
                q1 = tl.minimum(_narrow_to_i8(x1 * iscale + (OFF + 0.5)), 2 * OFF - 1) & 0xFF
                if FMT == 1:
                    # Q4_0 packs q0 | q1 << 4 unmasked: the high nibble also sees q0's bits 4..7
                    v0 = q0 & 0x0F
                    v1 = ((q0 >> 4) | q1) & 0x0F
                else:
                    v0 = q0 & 0x1F
                    v1 = q1 & 0x1F
                tl.store(out_ptr + base + j, (v0 - OFF).to(tl.float32) * d16, mask=mask)
                tl.store(out_ptr + base + j + 16, (v1 - OFF).to(tl.float32) * d16, mask=mask)

    elif FMT == 2 or FMT == 4:  # Q4_1, Q5_1: value = q·d + m
        NMAX: tl.constexpr = 15 if FMT == 2 else 31
        if HAS_W:
            d, m, l_iscale, l_min, flat = _make_qkx3_quants(
                x_ptr, w_ptr, base, col, s2, mask, NMAX, HAS_W, BLOCKS
            )
            d16 = round_fp16(d)
            m16 = round_fp16(m)
            for j in range(32):
                xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
                q = tl.where(flat, 0, _qkx_level(l_iscale * (xj - l_min), NMAX))
                tl.store(out_ptr + base + j, q.to(tl.float32) * d16 + m16, mask=mask)
        else:
            mn, mx = _min_max(x_ptr, base, mask, BLOCKS)
            d = tl.div_rn(mx - mn, 1.0 * NMAX)
            nz = d != 0.0
            iscale = tl.where(nz, tl.div_rn(1.0, _safe(d, nz)), 0.0)
            d16 = round_fp16(d)
            m16 = round_fp16(mn)
            for j in range(16):
                x0 = tl.load(x_ptr + base + j, mask=mask, other=0.0)
                x1 = tl.load(x_ptr + base + j + 16, mask=mask, other=0.0)
                q0 = _narrow_to_i8((x0 - mn) * iscale + 0.5)
                q1 = _narrow_to_i8((x1 - mn) * iscale + 0.5)
                if FMT == 2:
                    q0 = tl.minimum(q0, 15) & 0xFF
                    q1 = tl.minimum(q1, 15) & 0xFF
                    v0 = q0 & 0x0F
                    v1 = ((q0 >> 4) | q1) & 0x0F
                else:
                    v0 = q0 & 0x1F
                    v1 = q1 & 0x1F
                tl.store(out_ptr + base + j, v0.to(tl.float32) * d16 + m16, mask=mask)
                tl.store(out_ptr + base + j + 16, v1.to(tl.float32) * d16 + m16, mask=mask)

    else:  # IQ4_NL
        d = _iq4_scale(x_ptr, w_ptr, base, col, mask, HAS_W, BLOCKS)
        d16 = round_fp16(d)
        nz = d != 0.0
        iscale = tl.where(nz, tl.div_rn(1.0, _safe(d, nz)), 0.0)
        for j in range(32):
            xj = tl.load(x_ptr + base + j, mask=mask, other=0.0)
            tl.store(out_ptr + base + j, d16 * _iq4_value(iscale * xj), mask=mask)


# ---------------------------------------------------------------------------------------------------
# Launchers


def _run(fmt: int, x2d: torch.Tensor, imatrix: torch.Tensor | None, needs_sigma2: bool) -> torch.Tensor:
    """Launch the block kernel (and, for the *_impl paths, the row-sigma2 kernel) for one format."""
    check_rows(x2d, imatrix, 32)
    rows, n = x2d.shape
    out = torch.empty_like(x2d)
    nblocks = rows * (n // 32)
    if nblocks == 0:
        return out
    has_w = imatrix is not None
    w = imatrix.contiguous().to(x2d.device) if has_w else x2d
    s2 = x2d
    if has_w and needs_sigma2:
        s2 = torch.empty(rows, dtype=torch.float32, device=x2d.device)
        row_tile = 64 if interpreting() else 32
        _row_sigma2_kernel[(triton.cdiv(rows, row_tile),)](
            x2d, s2, rows, n, float(n), ROWS=row_tile, enable_fp_fusion=False
        )
    tile = min(256, triton.next_power_of_2(nblocks)) if interpreting() else 64
    tile = max(tile, 16)
    _legacy_kernel[(triton.cdiv(nblocks, tile),)](
        x2d, w, s2, out, nblocks, n // 32, FMT=fmt, HAS_W=has_w, BLOCKS=tile, enable_fp_fusion=False
    )
    return out


def fake_quant_q8_0(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] -> float32 [rows, n] through Q8_0 (imatrix [n] accepted and ignored, as ggml)."""
    check_rows(x2d, imatrix, 32)
    return _run(_Q8_0, x2d, None, needs_sigma2=False)


def fake_quant_q4_0(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through Q4_0."""
    return _run(_Q4_0, x2d, imatrix, needs_sigma2=True)


def fake_quant_q4_1(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through Q4_1."""
    return _run(_Q4_1, x2d, imatrix, needs_sigma2=True)


def fake_quant_q5_0(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through Q5_0."""
    return _run(_Q5_0, x2d, imatrix, needs_sigma2=True)


def fake_quant_q5_1(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through Q5_1."""
    return _run(_Q5_1, x2d, imatrix, needs_sigma2=True)


def fake_quant_iq4_nl(x2d: torch.Tensor, imatrix: torch.Tensor | None) -> torch.Tensor:
    """float32 [rows, n] (+ imatrix float32 [n] or None) -> float32 [rows, n] through IQ4_NL."""
    return _run(_IQ4_NL, x2d, imatrix, needs_sigma2=False)
