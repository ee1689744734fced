"""Eager-PyTorch fake quantization with llama.cpp's exact arithmetic (a benchmark competitor, not an API).

Torch ports of the NumPy reference (``sqat_kernels.reference``) for Q8_0 and the Q4_K and Q6_K
reference paths (no importance matrix): vectorised across blocks, sequential inside a block. Values are
laid out position-major (``[32, nblocks]``; ``[16, ngroups]`` for Q6_K) so that every in-block step is one
torch op over all blocks, and every in-block Σ is a loop of float32 additions over the positions in index
order (``torch.sum``/``cumsum`` reorder or widen the accumulation and would not be exact).
Other rules that keep the result bit-identical to llama.cpp:

* ``scalar / tensor`` is avoided (torch evaluates it as ``reciprocal(tensor) * scalar``); divisions that
  ggml writes as ``c / x`` divide a 0-d tensor by ``x``;
* ``nearest_int`` is ggml's bit trick (add ``1.5 * 2**23``, keep the low mantissa bits), C ``roundf`` is
  rounded half away from zero through the exact fractional part;
* ``sqrtf`` goes through float64 (torch's float32 CPU sqrt is not correctly rounded everywhere);
* fp16 fields are a round trip through ``torch.float16`` (round to nearest even, as ggml);
* max/min scans keep ggml's strict-compare semantics (start value, signed zeros) for finite input.

Each function returns the dequantized weights; :class:`EagerFakeQuant` wraps them with the identity
straight-through gradient, like ``sqat_kernels.fake_quant``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "EAGER_FORMATS",
    "EagerFakeQuant",
    "eager_fake_quant",
    "fake_quant_q4_K",
    "fake_quant_q6_K",
    "fake_quant_q8_0",
]

F32 = np.float32


def _c(v: float) -> torch.Tensor:
    """A float32 0-d tensor (divisor/dividend that keeps true IEEE division)."""
    return torch.tensor(v, dtype=torch.float32)


def _positions(w: torch.Tensor, block: int) -> torch.Tensor:
    """float32 [..., n] -> [block, nblocks] (position-major, contiguous)."""
    return w.detach().reshape(-1, block).t().contiguous()


def _from_positions(v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_positions`."""
    return v.t().contiguous().reshape(shape)


def seq_sum(a: torch.Tensor) -> torch.Tensor:
    """``float s = 0; for (i...) s += a[i];`` over the first axis: [n, B] -> [B] (float32, index order)."""
    s = a[0].clone()
    for j in range(1, a.shape[0]):
        s.add_(a[j])
    return s.add_(0.0)  # C starts from +0.0: only turns a -0.0 total into +0.0


def nearest_int(v: torch.Tensor) -> torch.Tensor:
    """ggml's ``nearest_int``: int32 bits of ``v + 12582912.0f``, low 23 bits minus ``2**22``."""
    return ((v + 12582912.0).view(torch.int32) & 0x007FFFFF) - 0x00400000


def round_trip_f16(v: torch.Tensor) -> torch.Tensor:
    """``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))`` for finite ``v``."""
    return v.to(torch.float16).to(torch.float32)


def _roundf(v: torch.Tensor) -> torch.Tensor:
    """C ``roundf`` (half away from zero), exact: floor of |v| plus one where the exact fraction is >= 1/2.

    Zero results are +0.0 (ggml stores the level as an integer, which has no sign of zero).
    """
    a = v.abs()
    fl = a.floor()
    r = fl + (a - fl >= 0.5).to(torch.float32)
    return torch.copysign(r, v).add_(0.0)


def _sqrtf(v: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 ``sqrtf``.

    ``torch.sqrt`` on float32 CPU tensors is not always correctly rounded (observed on AVX-512 builds: the
    vectorised kernel differs from IEEE sqrt in the last bit); the float64 square root rounded once to
    float32 is (53 >= 2*24 + 2 bits).
    """
    return v.double().sqrt_().float()


def _scan_max_from_zero(v: torch.Tensor, dim: int) -> torch.Tensor:
    """``m = 0; for (...) if (v > m) m = v;`` for finite ``v`` (the result is +0.0 unless some v > 0)."""
    m = v.amax(dim=dim)
    return torch.where(m > 0, m, torch.zeros_like(m))


# ------------------------------------------------------------------------------------------------------------
# Q8_0
# ------------------------------------------------------------------------------------------------------------


def fake_quant_q8_0(w: torch.Tensor) -> torch.Tensor:
    """Q8_0 round trip: ``d = amax/127``, ``q = roundf(x * (1/d))``, value ``q * fp16(d)``.

    Args:
        w: float32 [..., n], n a multiple of 32 (blocks along the last axis).

    Returns:
        float32 tensor of ``w``'s shape, bit-identical to llama.cpp's dequantized Q8_0.
    """
    xb = w.detach().reshape(-1, 32)
    amax = xb.abs().amax(dim=1)  # C: amax = MAX(amax, |x|) from 0; |x| >= 0 so the plain max is the same
    d = amax / 127.0
    inv_d = torch.where(d != 0, torch.div(_c(1.0), d), torch.zeros_like(d))
    q = _roundf(xb * inv_d[:, None])
    return (q * round_trip_f16(d)[:, None]).reshape(w.shape)


# ------------------------------------------------------------------------------------------------------------
# Q4_K (quantize_row_q4_K_ref)
# ------------------------------------------------------------------------------------------------------------


def _weighted_sq_error(
    w: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, lf: torch.Tensor, vmin: torch.Tensor
) -> torch.Tensor:
    """``Σ w * (scale*L + min - x)²`` in C's evaluation order, sequential over positions: [32, B] -> [B]."""
    diff = scale * lf + vmin - x
    return seq_sum(w * (diff * diff))


def make_qkx2_quants(
    nmax: int, x: torch.Tensor, w: torch.Tensor, rmin: float, rdelta: float, nstep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ggml's ``make_qkx2_quants`` (squared error) for all groups at once.

    Args:
        nmax: largest level (15 for Q4_K).
        x, w: float32 [n, B] (position-major) values and weights.
        rmin, rdelta, nstep: trial schedule.

    Returns:
        ``(scale, the_min, L)``: float32 [B], float32 [B] (negated offset), int32 [n, B] levels.
    """
    # Strict-compare min/max scans seeded with x[0].
    vmin = x[0].clone()
    vmax = x[0].clone()
    for j in range(1, x.shape[0]):
        vmin = torch.where(x[j] < vmin, x[j], vmin)
        vmax = torch.where(x[j] > vmax, x[j], vmax)
    sum_w = seq_sum(w)
    sum_x = seq_sum(w * x)
    vmin = torch.where(vmin > 0, torch.zeros_like(vmin), vmin)
    degenerate = vmax == vmin
    degenerate_min = vmin
    fnmax = float(nmax)

    iscale = torch.div(_c(fnmax), vmax - vmin)
    scale = torch.div(_c(1.0), iscale)
    L = nearest_int(iscale * (x - vmin)).clamp_(0, nmax)
    best_error = _weighted_sq_error(w, x, scale, L.to(torch.float32), vmin)
    for step in range(nstep + 1) if nstep >= 1 else ():
        numerator = float(F32(rmin) + F32(rdelta) * F32(step) + F32(fnmax))  # float32 as in C
        iscale = torch.div(_c(numerator), vmax - vmin)
        laux = nearest_int(iscale * (x - vmin)).clamp_(0, nmax)
        lf = laux.to(torch.float32)
        wl = w * lf
        sum_l = seq_sum(wl)
        sum_l2 = seq_sum(wl * lf)
        sum_xl = seq_sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive_min = this_min > 0
        this_min = torch.where(positive_min, torch.zeros_like(this_min), this_min)
        this_scale = torch.where(positive_min, sum_xl / sum_l2, this_scale)
        cur_error = _weighted_sq_error(w, x, this_scale, lf, this_min)
        accept = (D > 0) & (cur_error < best_error)
        L = torch.where(accept, laux, L)
        best_error = torch.where(accept, cur_error, best_error)
        scale = torch.where(accept, this_scale, scale)
        vmin = torch.where(accept, this_min, vmin)

    scale = torch.where(degenerate, torch.zeros_like(scale), scale)
    the_min = -torch.where(degenerate, degenerate_min, vmin)
    L = torch.where(degenerate, torch.zeros_like(L), L)
    return scale, the_min, L


def fake_quant_q4_K(w: torch.Tensor) -> torch.Tensor:
    """Q4_K round trip on llama.cpp's no-imatrix path (``quantize_row_q4_K_ref`` then dequantize).

    Per 32 values: weights ``sqrt(Σx²/32) + |x|``, ``make_qkx2_quants(15, rmin -1, rdelta 0.1, 20 steps)``;
    per 256 values: 6-bit sub-scales/mins against ``max/63``, fp16 ``d``/``dmin``; re-quantization
    ``clamp(nearest_int((x + dmin*m) / (d*sc)), 0, 15)`` (kept levels where ``d*sc == 0``); value
    ``(d*sc)*q - dmin*m``.

    Args:
        w: float32 [..., n], n a multiple of 256.

    Returns:
        float32 tensor of ``w``'s shape, bit-identical to llama.cpp's dequantized Q4_K.
    """
    x = _positions(w, 32)  # [32, nsub]; sub-blocks 8k..8k+7 form super-block k
    nsub = x.shape[1]
    sum_x2 = seq_sum(x * x)
    av_x = _sqrtf(sum_x2 / 32.0)
    weights = av_x + x.abs()
    scales, mins, L = make_qkx2_quants(15, x, weights, -1.0, 0.1, 20)

    s8 = scales.reshape(-1, 8)
    m8 = mins.reshape(-1, 8)
    max_scale = _scan_max_from_zero(s8, 1)
    max_min = _scan_max_from_zero(m8, 1)
    zero = torch.zeros_like(max_scale)
    inv_scale = torch.where(max_scale > 0, torch.div(_c(63.0), max_scale), zero)
    inv_min = torch.where(max_min > 0, torch.div(_c(63.0), max_min), zero)
    # uint8_t ls = nearest_int(...) wraps modulo 256 before MIN(63, ls); levels 0..63 pass the 6-bit packing.
    ls = (nearest_int(inv_scale[:, None] * s8) & 0xFF).clamp_(max=63)
    lm = (nearest_int(inv_min[:, None] * m8) & 0xFF).clamp_(max=63)
    d = round_trip_f16(max_scale / 63.0)
    dmin = round_trip_f16(max_min / 63.0)
    dj = (d[:, None] * ls.to(torch.float32)).reshape(nsub)
    dm = (dmin[:, None] * lm.to(torch.float32)).reshape(nsub)

    requant = nearest_int((x + dm) / dj).clamp_(0, 15)
    q = torch.where(dj == 0, L, requant).to(torch.float32)
    return _from_positions(dj * q - dm, w.shape)


# ------------------------------------------------------------------------------------------------------------
# Q6_K (quantize_row_q6_K_ref)
# ------------------------------------------------------------------------------------------------------------


def _first_abs_max(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``if (amax < |v|) { amax = |v|; max = v; }`` from 0 over the first axis: [n, B] -> ([B], [B])."""
    amax = torch.zeros_like(v[0])
    vmax = torch.zeros_like(v[0])
    for j in range(v.shape[0]):
        av = v[j].abs()
        take = amax < av
        amax = torch.where(take, av, amax)
        vmax = torch.where(take, v[j], vmax)
    return amax, vmax


def make_qx_quants_x2(nmax: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's ``make_qx_quants(n, nmax, x, L, rmse_type=1, NULL)`` for all groups at once.

    Args:
        nmax: half the level count (32 for Q6_K).
        x: float32 [n, B] (position-major).

    Returns:
        ``(scale, L)``: float32 [B] and int32 [n, B] holding ``l + nmax`` (0 for all-zero groups).
    """
    amax, vmax = _first_abs_max(x)
    all_zero = amax < 1e-15
    w = x * x
    wx = w * x

    def trial(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = nearest_int(iscale * x).clamp_(-nmax, nmax - 1)
        lf = q.to(torch.float32)
        return q, seq_sum(wx * lf), seq_sum(w * lf * lf)

    q, sumlx, suml2 = trial(torch.div(_c(float(-nmax)), vmax))
    L = q + nmax
    scale = torch.where(suml2 != 0, sumlx / suml2, torch.zeros_like(sumlx))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        numerator = float(-(F32(nmax) + F32(0.1) * F32(step)))  # -(nmax + 0.1f*is) in float32
        q, sumlx, suml2 = trial(torch.div(_c(numerator), vmax))
        accept = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = torch.where(accept, q + nmax, L)
        scale = torch.where(accept, sumlx / suml2, scale)
        best = torch.where(accept, scale * sumlx, best)
    scale = torch.where(all_zero, torch.zeros_like(scale), scale)
    L = torch.where(all_zero, torch.zeros_like(L), L)
    return scale, L


def fake_quant_q6_K(w: torch.Tensor) -> torch.Tensor:
    """Q6_K round trip on llama.cpp's no-imatrix path (``quantize_row_q6_K_ref`` then dequantize).

    Per 16 values ``make_qx_quants(32, rmse_type 1)``; per 256 values ``iscale = -128 / max_scale`` (first
    scale of largest magnitude), int8 sub-scales ``min(127, nearest_int(iscale*scale))``, fp16
    ``d = 1/iscale``; re-quantization ``clamp(nearest_int(x / (d*sc)), -32, 31) + 32`` (kept levels where
    ``d*sc == 0``); value ``(d*sc) * (q - 32)``. Super-blocks whose scales are all below 1e-15 are stored
    as zero bytes (which decode to ``0 * -32 = -0.0``).

    Args:
        w: float32 [..., n], n a multiple of 256.

    Returns:
        float32 tensor of ``w``'s shape, bit-identical to llama.cpp's dequantized Q6_K.
    """
    x = _positions(w, 16)  # [16, ngroups]; groups 16k..16k+15 form super-block k
    ng = x.shape[1]
    scales, L = make_qx_quants_x2(32, x)
    s16 = scales.reshape(-1, 16).t()  # [16, nsuper]
    max_abs_scale, max_scale = _first_abs_max(s16)
    block_zero = max_abs_scale < 1e-15
    iscale = torch.div(_c(-128.0), max_scale)
    d = torch.div(_c(1.0), iscale)
    sc = nearest_int(iscale * s16).clamp_(max=127)
    sc = ((sc + 128) & 0xFF) - 128  # stored as int8_t
    d16 = round_trip_f16(d)
    d16 = torch.where(block_zero, torch.zeros_like(d16), d16)
    sc = torch.where(block_zero, torch.zeros_like(sc), sc)
    dj = (d16 * sc.to(torch.float32)).t().reshape(ng)

    requant = nearest_int(x / dj).clamp_(-32, 31) + 32
    L = torch.where(dj == 0, L, requant)
    L = torch.where(block_zero.repeat_interleave(16), torch.zeros_like(L), L)
    return _from_positions(dj * (L - 32).to(torch.float32), w.shape)


#: Formats with an eager port, by GGUF type name.
EAGER_FORMATS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q8_0": fake_quant_q8_0,
    "Q4_K": fake_quant_q4_K,
    "Q6_K": fake_quant_q6_K,
}


class EagerFakeQuant(torch.autograd.Function):
    """Eager fake quantization with the identity straight-through gradient."""

    @staticmethod
    def forward(ctx: object, w: torch.Tensor, qtype: str) -> torch.Tensor:  # type: ignore[override]
        with torch.no_grad():
            return EAGER_FORMATS[qtype](w)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def eager_fake_quant(w: torch.Tensor, qtype: str) -> torch.Tensor:
    """Eager-PyTorch ``fake_quant(w, qtype)`` (Q8_0, Q4_K or Q6_K without imatrix) with identity STE."""
    return EagerFakeQuant.apply(w, qtype)
