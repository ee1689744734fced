"""Scale searches shared by the K-quants and the imatrix paths of the legacy formats (NumPy reference).

These are NumPy versions of ggml's helpers ``make_qkx2_quants``, ``make_qkx3_quants``, ``make_qx_quants``
and ``make_qp_quants`` (spec §4.3, §4.6, §6.1). Each takes a batch of independent groups shaped ``[B, n]``
and works on all of them at once; whatever depends on order *inside* a group (max/min scans, sums, the trial
loops, the coordinate descent of ``make_qp_quants``) runs sequentially, exactly as the C loops do.

Exactness rules followed throughout:

* float32 for every value, one IEEE rounding per operation, evaluated in the order the C source writes it
  (``w*l*l`` is ``(w*l)*l``); no fused multiply-add;
* every Σ is a sequential float32 accumulation in index order (:func:`seq_sum`); never ``np.sum``/``np.dot``;
* ``nearest_int`` is reproduced bit for bit (:func:`nearest_int`), including what it returns for NaN, infinity
  and out-of-range input, which the degenerate branches of the searches can feed it (both primitives live
  in :mod:`._blocks`, with the max/min scans, and are re-exported here);
* "accept if strictly better" is a masked update (``np.where``) inside the sequential trial loop, and accepted
  trials change the state (notably the running ``min`` of ``make_qkx2/3_quants``) seen by later trials.

Integer outputs are uint8 arrays; where ggml stores an ``int`` into a ``uint8_t`` the value wraps modulo 256.
"""

from __future__ import annotations

import numpy as np

from ._blocks import (
    GROUP_MAX_EPS,
    first_abs_max,
    nearest_int,
    scan_max,
    scan_max_macro,
    scan_min,
    seq_sum,
    silence_fp_warnings,
)

__all__ = [
    "GROUP_MAX_EPS",
    "make_q3_quants",
    "make_qkx2_quants",
    "make_qkx3_quants",
    "make_qp_quants",
    "make_qx_quants",
    "nearest_int",
    "seq_sum",
]

F32 = np.float32


def _first_sum(a: np.ndarray) -> np.ndarray:
    """Σ over the last axis seeded with the first term (C: ``s = a[0]; for (i = 1...) s += a[i];``)."""
    return np.cumsum(a, axis=-1, dtype=F32)[..., -1]


def _weighted_error(w: np.ndarray, x: np.ndarray, scale: np.ndarray, lf: np.ndarray, vmin: np.ndarray,
                    use_mad: bool) -> np.ndarray:
    """``Σ w * f(scale*L + min - x)`` with f = |.| or square, sequential (make_qkx2/3 error measure)."""
    diff = scale[:, None] * lf + vmin[:, None] - x
    diff = np.abs(diff) if use_mad else diff * diff
    return seq_sum(w * diff)


@silence_fp_warnings
def _make_qkx(nmax: int, x: np.ndarray, w: np.ndarray, rmin: float, rdelta: float, nstep: int, use_mad: bool,
              degenerate_if_le: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body shared by :func:`make_qkx2_quants` and :func:`make_qkx3_quants` (weights already resolved)."""
    x = np.asarray(x, dtype=F32)
    w = np.asarray(w, dtype=F32)
    fnmax = F32(nmax)
    rmin_f = F32(rmin)
    rdelta_f = F32(rdelta)

    # Step 1: min/max scans and the two weighted totals (seeded with element 0, as in C).
    vmin, vmax = scan_min(x, x[:, 0]), scan_max(x, x[:, 0])  # strict compares from x[0]
    sum_w = _first_sum(w)
    sum_x = _first_sum(w * x)
    # Step 2: the offset is never positive.
    vmin = np.where(vmin > 0, F32(0.0), vmin)
    # Step 3: flat groups return early (qkx2 tests max == min, qkx3 tests max <= min).
    degenerate = (vmax <= vmin) if degenerate_if_le else (vmax == vmin)
    degenerate_min = vmin

    # Step 4: first candidate, mapping [min, max] onto [0, nmax].
    iscale = fnmax / (vmax - vmin)
    scale = F32(1.0) / iscale
    L = np.clip(nearest_int(iscale[:, None] * (x - vmin[:, None])), 0, nmax)
    best_error = _weighted_error(w, x, scale, L.astype(F32), vmin, use_mad)

    # Steps 5-6: nstep + 1 trials; an accepted trial replaces L, scale and *min* for the following trials.
    for step in range(nstep + 1) if nstep >= 1 else ():
        iscale = (rmin_f + rdelta_f * F32(step) + fnmax) / (vmax - vmin)
        laux = np.clip(nearest_int(iscale[:, None] * (x - vmin[:, None])), 0, nmax)
        lf = laux.astype(F32)
        wl = w * lf
        sum_l = seq_sum(wl)
        sum_l2 = seq_sum(wl * lf)
        sum_xl = seq_sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive_min = this_min > 0
        this_min = np.where(positive_min, F32(0.0), this_min)
        this_scale = np.where(positive_min, sum_xl / sum_l2, this_scale)
        cur_error = _weighted_error(w, x, this_scale, lf, this_min, use_mad)
        accept = (D > 0) & (cur_error < best_error)
        L = np.where(accept[:, None], laux, L)
        best_error = np.where(accept, cur_error, best_error)
        scale = np.where(accept, this_scale, scale)
        vmin = np.where(accept, this_min, vmin)

    scale = np.where(degenerate, F32(0.0), scale)
    the_min = -np.where(degenerate, degenerate_min, vmin)
    L = np.where(degenerate[:, None], 0, L)
    return scale.astype(F32), the_min.astype(F32), L.astype(np.uint8)


def make_qkx2_quants(nmax: int, x: np.ndarray, weights: np.ndarray, rmin: float, rdelta: float, nstep: int,
                     use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric (scale + offset) search, ggml's ``make_qkx2_quants`` (spec §4.3); Q4_K/Q5_K reference path.

    Finds ``scale >= 0`` and an offset ``min <= 0`` such that ``x ≈ scale * L + min`` with ``L`` in
    ``0..nmax``, minimising ``Σ w * (scale*L + min - x)²`` (or ``|.|`` with ``use_mad``) over ``nstep + 1``
    trial inverse scales ``(rmin + rdelta*is + nmax) / (max - min)``, where ``min`` is the offset of the best
    trial so far (so both the denominator and ``x - min`` move when a trial is accepted).

    Args:
        nmax: largest quantized value (15 for Q4_K, 31 for Q5_K).
        x: float32 [B, n], B independent groups (ggml: one call per group of n values).
        weights: float32 [B, n], non-negative weights.
        rmin, rdelta, nstep: trial schedule (Q4_K: -1.0, 0.1, 20; Q5_K: -0.5, 0.1, 15).
        use_mad: weight absolute instead of squared errors.

    Returns:
        ``(scale, the_min, L)``: float32 [B], float32 [B] (the negated offset, ``>= 0``; ``-0.0`` for an
        all-zero group, as in C), uint8 [B, n] with values in ``0..nmax``.
    """
    return _make_qkx(nmax, x, weights, rmin, rdelta, nstep, use_mad, degenerate_if_le=False)


def make_qkx3_quants(nmax: int, x: np.ndarray, weights: np.ndarray | None, rmin: float, rdelta: float,
                     nstep: int, use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's ``make_qkx3_quants`` (spec §6.1): :func:`make_qkx2_quants` with two differences.

    ``weights=None`` means ``w = x*x``, and the flat-group test is ``max <= min`` instead of ``max == min``.
    Used by the Q4_K/Q5_K imatrix path (-0.9, 0.05, 36) and by Q4_1/Q5_1 with an imatrix.

    Args:
        nmax: largest quantized value.
        x: float32 [B, n].
        weights: float32 [B, n] or None.
        rmin, rdelta, nstep: trial schedule.
        use_mad: weight absolute instead of squared errors.

    Returns:
        ``(scale, the_min, L)``: float32 [B], float32 [B] (negated offset), uint8 [B, n] in ``0..nmax``.
    """
    x = np.asarray(x, dtype=F32)
    w = x * x if weights is None else weights
    return _make_qkx(nmax, x, w, rmin, rdelta, nstep, use_mad, degenerate_if_le=True)


def _qx_weights(x: np.ndarray, rmse_type: int, qw: np.ndarray | None) -> np.ndarray:
    """Per-value weights of ``make_qx_quants``: ``qw`` if given, else by ``rmse_type`` (1: x², 2: 1, 3: |x|,
    4: sqrt|x|)."""
    if qw is not None:
        return np.asarray(qw, dtype=F32)
    if rmse_type == 1:
        return x * x
    if rmse_type == 2:
        return np.ones_like(x)
    if rmse_type == 3:
        return np.abs(x)
    return np.sqrt(np.abs(x))


@silence_fp_warnings
def make_qx_quants(nmax: int, x: np.ndarray, rmse_type: int, qw: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scale search, ggml's ``make_qx_quants`` (spec §4.6).

    Maps the first value with the largest ``|x|`` to ``-nmax`` and searches 18 further inverse scales
    ``-(nmax + 0.1*is) / max`` (is = -9..9, not 0), keeping the one that maximises ``(Σ w x l)² / Σ w l²``
    (strict improvement). Used by Q6_K (nmax 32) and, with an importance matrix, Q4_0 (8) and Q5_0 (16).

    Args:
        nmax: half the number of levels; quantized values ``l`` lie in ``-nmax..nmax-1``.
        x: float32 [B, n].
        rmse_type: ggml's selector; 0 = plain rounding (returns ``1/iscale``), 1 = weights ``x²`` (the one
            the formats here use), 2/3/4 = weights 1, ``|x|``, ``sqrt|x|``; negative = the same weights with
            ggml's early return after the first pass.
        qw: float32 [B, n] importance weights replacing the ``rmse_type`` weights, or None.

    Returns:
        ``(scale, L)``: float32 [B] (signed; 0 for groups with ``max|x| < 1e-15``) and uint8 [B, n] holding
        ``l + nmax`` in ``0..2*nmax-1`` (ggml's ``int8_t L[]``, always non-negative; 0 for all-zero groups).
    """
    x = np.asarray(x, dtype=F32)
    fnmax = F32(nmax)

    amax, vmax = first_abs_max(x)
    all_zero = amax < GROUP_MAX_EPS

    def levels(iscale: np.ndarray) -> np.ndarray:
        return np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)

    iscale = F32(-nmax) / vmax
    if rmse_type == 0:
        L = levels(iscale) + nmax
        scale = F32(1.0) / iscale
    else:
        return_early = rmse_type < 0
        w = _qx_weights(x, abs(rmse_type), qw)
        q = levels(iscale)
        L = q + nmax
        lf = q.astype(F32)
        sumlx = seq_sum(w * x * lf)
        suml2 = seq_sum(w * lf * lf)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0.0))
        if return_early:
            scale = np.where(suml2 > 0, F32(0.5) * (scale + F32(1.0) / iscale), F32(1.0) / iscale)
        else:
            best = scale * sumlx
            for step in range(-9, 10):
                if step == 0:
                    continue
                iscale = -(fnmax + F32(0.1) * F32(step)) / vmax
                q = levels(iscale)
                lf = q.astype(F32)
                sumlx = seq_sum(w * x * lf)
                suml2 = seq_sum(w * lf * lf)
                accept = (suml2 > 0) & (sumlx * sumlx > best * suml2)
                L = np.where(accept[:, None], q + nmax, L)
                scale = np.where(accept, sumlx / suml2, scale)
                best = np.where(accept, scale * sumlx, best)

    scale = np.where(all_zero, F32(0.0), scale).astype(F32)
    L = np.where(all_zero[:, None], 0, L).astype(np.uint8)
    return scale, L


@silence_fp_warnings
def make_qp_quants(nmax: int, x: np.ndarray, quant_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale for non-negative values, ggml's ``make_qp_quants`` (spec §6.1); used for the 6-bit sub-block
    scales and mins of the Q4_K/Q5_K imatrix path.

    Picks the best of 9 inverse scales ``(0.1*is + nmax) / max`` by weighted squared error, then runs up to 5
    passes of coordinate descent on the levels (each pass sequential over the n values; a group stops after a
    pass that changed nothing), and returns the least-squares scale ``Σ w x L / Σ w L²``.

    Args:
        nmax: largest level (63 for the K-quant sub-scales).
        x: float32 [B, n] values (meant to be >= 0; negative values behave as in C, incl. uint8 wrap of L).
        quant_weights: float32 [B, n].

    Returns:
        ``(scale, L)``: float32 [B] (0 when ``max(0, x...) < 1e-15`` or ``Σ w L² <= 0``) and uint8 [B, n]
        (levels ``<= nmax``; an int that ggml stores into ``uint8_t`` wraps modulo 256).
    """
    x = np.asarray(x, dtype=F32)
    qw = np.asarray(quant_weights, dtype=F32)
    fnmax = F32(nmax)
    nb, n = x.shape

    vmax = scan_max_macro(x, 0.0)  # max = MAX(max, x[i]) from 0
    all_zero = vmax < GROUP_MAX_EPS

    # First candidate and its error; L here is the uint8 store of an unclamped nearest_int.
    iscale = fnmax / vmax
    L0 = (nearest_int(iscale[:, None] * x) & 0xFF).astype(F32)
    scale = F32(1.0) / iscale
    diff = x - scale[:, None] * L0
    best_mse = seq_sum(qw * diff * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (F32(0.1) * F32(step) + fnmax) / vmax
        scale_is = F32(1.0) / iscale_is
        lf = np.minimum(nmax, nearest_int(iscale_is[:, None] * x)).astype(F32)
        diff = x - scale_is[:, None] * lf
        mse = seq_sum(qw * diff * diff)
        better = mse < best_mse
        best_mse = np.where(better, mse, best_mse)
        iscale = np.where(better, iscale_is, iscale)

    # Levels for the chosen scale; the sums use the int level, L keeps its uint8 store.
    q = np.minimum(nmax, nearest_int(iscale[:, None] * x))
    lf = q.astype(F32)
    sumlx = seq_sum(qw * x * lf)
    suml2 = seq_sum(qw * lf * lf)
    L = (q & 0xFF).astype(np.int32)

    # Coordinate descent: one value at a time, accept a new level if it raises (Σwxl)² / Σwl².
    active = np.ones(nb, dtype=bool)
    for _ in range(5):
        changed = np.zeros(nb, dtype=bool)
        for i in range(n):
            w_i = qw[:, i]
            x_i = x[:, i]
            li = L[:, i].astype(F32)
            slx = sumlx - w_i * x_i * li
            sl2 = suml2 - w_i * li * li
            usable = (slx > 0) & (sl2 > 0)
            new_l = np.minimum(nmax, nearest_int(x_i * sl2 / slx))
            differs = usable & (new_l != L[:, i])
            nlf = new_l.astype(F32)
            slx = slx + w_i * x_i * nlf
            sl2 = sl2 + w_i * nlf * nlf
            accept = active & differs & (slx * slx * suml2 > sumlx * sumlx * sl2)
            L[:, i] = np.where(accept, new_l & 0xFF, L[:, i])
            sumlx = np.where(accept, slx, sumlx)
            suml2 = np.where(accept, sl2, suml2)
            changed |= accept
        active &= changed
        if not active.any():
            break

    scale = np.where(suml2 > 0, sumlx / suml2, F32(0.0))
    scale = np.where(all_zero, F32(0.0), scale).astype(F32)
    L = np.where(all_zero[:, None], 0, L).astype(np.uint8)
    return scale, L


@silence_fp_warnings
def make_q3_quants(nmax: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric search with coordinate descent, ggml's ``make_q3_quants(n, nmax, x, L, do_rmse=true)``; the
    per-16 search of the Q3_K reference path.

    Maps the first value of largest ``|x|`` to ``-nmax`` (levels ``l = clamp(nearest_int(-nmax/max * x),
    -nmax, nmax-1)``), weights every value by ``x²``, then runs up to 5 passes over the values in order: a
    value whose removal leaves ``slx = Σwxl > 0`` takes the level nearest to ``x * sl2 / slx`` (sums without
    it) when that raises ``(Σwxl)² / Σwl²`` and keeps ``Σwl² > 0``. A group stops after a pass that changed
    nothing (running further passes would change nothing either).

    Args:
        nmax: half the number of levels (4 for Q3_K).
        x: float32 [B, n].

    Returns:
        ``(scale, L)``: float32 [B] (``Σwxl / Σwl²``, 0 where ``Σwl² <= 0`` or ``max|x| < 1e-15``) and uint8
        [B, n] holding ``l + nmax`` in ``0..2*nmax-1`` (0 for groups with ``max|x| < 1e-15``).
    """
    x = np.asarray(x, dtype=F32)
    nb, n = x.shape
    amax, vmax = first_abs_max(x)
    all_zero = amax < GROUP_MAX_EPS
    iscale = F32(-nmax) / vmax
    L = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
    w = x * x
    lf = L.astype(F32)
    sumlx = seq_sum(w * x * lf)
    suml2 = seq_sum(w * lf * lf)
    for _ in range(5):
        changed = np.zeros(nb, dtype=bool)
        for i in range(n):
            w_i, x_i = w[:, i], x[:, i]
            li = L[:, i].astype(F32)
            slx = sumlx - w_i * x_i * li
            sl2 = suml2 - w_i * li * li
            new_l = np.clip(nearest_int(x_i * sl2 / slx), -nmax, nmax - 1)
            nlf = new_l.astype(F32)
            slx_new = slx + w_i * x_i * nlf
            sl2_new = sl2 + w_i * nlf * nlf
            accept = ((slx > 0) & (new_l != L[:, i]) & (sl2_new > 0)
                      & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new))
            L[:, i] = np.where(accept, new_l, L[:, i])
            sumlx = np.where(accept, slx_new, sumlx)
            suml2 = np.where(accept, sl2_new, suml2)
            changed |= accept
        if not changed.any():
            break
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0.0))
    scale = np.where(all_zero, F32(0.0), scale).astype(F32)
    L = np.where(all_zero[:, None], 0, L + nmax).astype(np.uint8)
    return scale, L
