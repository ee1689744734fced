"""Locating the first non-finite value of a torch tensor on any device (the native CPU loops do this
themselves; CUDA and Triton paths check before launching)."""

from __future__ import annotations

from typing import Any


def first_nonfinite(x2d: Any) -> tuple[int, int] | None:
    """(row, column) of the first NaN/Inf of a 2-D torch tensor, or None when all values are finite."""
    bad = x2d.isfinite().logical_not_()
    if not bool(bad.any()):
        return None
    flat = int(bad.reshape(-1).nonzero()[0, 0])
    return divmod(flat, x2d.shape[1])
