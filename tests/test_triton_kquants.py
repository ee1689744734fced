"""Triton fused fake quantization of Q4_K, Q5_K, Q6_K and IQ4_XS against the native kernels, bit for bit.

Every case stacks several kinds of input as rows of one tensor (the interpreter's cost is per program, not
per super-block): 0.02·randn with an all-zero sub-block, values on the fp16 grid (ties), constant
super-blocks (including an all-zero one), 1e-20-scaled and 1e3-scaled randn, small integer multiples of
1/8 (exact level ties), heavy-tailed, all-negative / all-positive and per-row scales from e^-30 to e^10.
Each runs without an importance matrix, with a random one and with one that has zeros (a whole sub-block
of them included).
"""

from __future__ import annotations

import numpy as np
import pytest
import sqat_kernels
import torch
from sqat_kernels import _C
from sqat_kernels.backends import triton as tk

# Real kernels on a GPU; on CPU-only machines the interpreter (TRITON_INTERPRET=1, set by conftest).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

FORMATS = ["Q6_K", "IQ4_XS", "Q4_K", "Q5_K"]
N = 512  # two super-blocks per row


def _inputs(seed: int) -> dict[str, np.ndarray]:
    """Named [2, N] float32 inputs."""
    rng = np.random.default_rng(seed)
    randn = (0.02 * rng.standard_normal((2, N))).astype(np.float32)
    randn[0, 32:64] = 0.0  # an all-zero 32-sub-block (and two 16-sub-blocks)
    randn[1, 256:272] = 0.0
    grid = (rng.integers(-2048, 2048, size=(2, N)).astype(np.float32) / np.float32(64.0)).astype(np.float32)
    const = np.full((2, N), 0.37, np.float32)
    const[0, 256:] = 0.0
    const[1] = -1.25
    ints = (rng.integers(-8, 8, size=(2, N)) * 0.125).astype(np.float32)  # exact ties of the levels
    heavy = (0.01 * rng.standard_t(2, size=(2, N))).astype(np.float32)
    one_sided = (-np.abs(rng.standard_normal((2, N))) - 0.5).astype(np.float32)
    one_sided[1] = -one_sided[1]
    wide = (rng.standard_normal((2, N)) * np.exp(rng.uniform(-30, 10, size=(2, 1)))).astype(np.float32)
    return {
        "randn": randn,
        "fp16_grid": grid,
        "constant": const,
        "tiny": (randn * np.float32(1e-20)).astype(np.float32),
        "large": (randn * np.float32(1e3)).astype(np.float32),
        "small_ints": ints,
        "heavy_tailed": heavy,
        "one_signed": one_sided,
        "wide_range": wide,
    }


def _imatrix(kind: str, seed: int) -> np.ndarray | None:
    """None, a random positive importance vector, or one with zeros (the first 64 columns all zero)."""
    if kind == "none":
        return None
    rng = np.random.default_rng(seed + 1)
    w = (3.0 * rng.random(N)).astype(np.float32)
    if kind == "zeros":
        w[rng.random(N) < 0.4] = 0.0
        w[:64] = 0.0
    return w


@pytest.mark.parametrize("imatrix_kind", ["none", "random", "zeros"])
@pytest.mark.parametrize("qtype", FORMATS)
def test_bitwise_equal_to_native(qtype: str, imatrix_kind: str) -> None:
    """tk.fake_quant == _C.fake_quant (uint32 views) on every input kind."""
    fmt = sqat_kernels.get_format(qtype)
    inputs = _inputs(seed=7)
    x = np.ascontiguousarray(np.concatenate(list(inputs.values()), axis=0))
    im = _imatrix(imatrix_kind, seed=7)
    want = _C.fake_quant(x, fmt.type_id, im, 1)
    got = tk.fake_quant(
        torch.from_numpy(x).to(DEVICE), fmt, None if im is None else torch.from_numpy(im).to(DEVICE)
    )
    assert got.dtype == torch.float32 and tuple(got.shape) == x.shape
    bad = got.cpu().numpy().view(np.uint32) != want.view(np.uint32)
    if bad.any():
        kinds = list(inputs)
        failing = sorted({kinds[r // 2] for r in np.nonzero(bad.any(axis=1))[0]})
        r, c = np.argwhere(bad)[0]
        pytest.fail(
            f"{qtype}/{imatrix_kind}: {int(bad.sum())} values differ in inputs {failing}; "
            f"x[{r},{c}]={x[r, c]!r}: triton {got.cpu()[r, c].item()!r} vs native {want[r, c]!r}"
        )


@pytest.mark.parametrize("qtype", ["Q6_K", "IQ4_XS", "Q5_K"])
def test_several_programs_and_rows(qtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three programs of 16 super-blocks, the last one partly masked; n = 768 (imatrix columns wrap)."""
    from sqat_kernels.backends.triton import kquants

    monkeypatch.setattr(kquants, "INTERPRETER_TILE", 16)
    fmt = sqat_kernels.get_format(qtype)
    rng = np.random.default_rng(11)
    x = (0.05 * rng.standard_normal((13, 768))).astype(np.float32)  # 39 super-blocks
    im = (rng.random(768) + 0.1).astype(np.float32)
    want = _C.fake_quant(x, fmt.type_id, im, 1)
    got = tk.fake_quant(torch.from_numpy(x).to(DEVICE), fmt, torch.from_numpy(im).to(DEVICE))
    assert np.array_equal(got.cpu().numpy().view(np.uint32), want.view(np.uint32))


def test_rejects_bad_row_length() -> None:
    """Rows must hold whole 256-value super-blocks."""
    with pytest.raises(ValueError, match="multiple of 256"):
        tk.fake_quant(torch.zeros(2, 320, device=DEVICE), sqat_kernels.get_format("Q6_K"), None)
