"""Triton fused fake quantization of the 32-value formats and the float round trips, bit for bit.

Every Triton result is compared with the native fused ``_C.fake_quant`` (itself cross-checked against
libggml) through uint32 views: ``atol = rtol = 0`` and the signs of zeros count.  Without a GPU the kernels
run in Triton's interpreter (``conftest.py`` sets ``TRITON_INTERPRET=1``), which costs about a millisecond
per op-chain step, so the inputs are stacked into one small tensor per (format, importance matrix) and the
kernels take many blocks per program.
"""

from __future__ import annotations

import cases
import numpy as np
import pytest
import sqat_kernels
import torch
from sqat_kernels import _C
from sqat_kernels.backends import triton as tk

# Real kernels on a GPU; on CPU-only machines the interpreter (TRITON_INTERPRET=1, set by conftest).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

BLOCK32_FORMATS = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL")
FLOAT_FORMATS = ("F32", "F16", "BF16")

#: Input kinds stacked (2 rows each, 256 columns) into the "mixed" case.
MIXED_KINDS = ("weights", "fp16_ties_small", "fp16_ties_wide", "constant_blocks", "tiny", "large")
ROWS_PER_KIND = 2


def _mixed_input() -> tuple[np.ndarray, list[str]]:
    """float32 [14, 256]: MIXED_KINDS rows, an all-zero and a constant block, 2 extreme rows; row kinds."""
    parts, labels = [], []
    for kind in MIXED_KINDS:
        x = cases.make_input(kind, (ROWS_PER_KIND, 256))
        if kind == "weights":
            x[0, 32:64] = 0.0  # an all-zero block
            x[1, 64:96] = np.float32(0.0123)  # a constant block
        parts.append(x)
        labels += [kind] * ROWS_PER_KIND
    # extremes: subnormal blocks (the reciprocal scale overflows, x86 narrowing of inf/NaN quotients) and
    # a block of +/-3e38 (overflowing squares and ranges)
    rng = cases.rng_for("triton_legacy", "extreme")
    x = (rng.standard_normal((2, 256)) * 1e-39).astype(np.float32)
    x[1, :32] = (rng.standard_normal(32) * 1e-44).astype(np.float32)
    x[1, 32:64] = np.float32(3e38) * np.where(rng.standard_normal(32) < 0, -1, 1).astype(np.float32)
    parts.append(x)
    labels += ["extreme"] * 2
    return np.ascontiguousarray(np.concatenate(parts)), labels


def _wide_input() -> tuple[np.ndarray, list[str]]:
    """float32 [3, 576] (SmolLM2's hidden size, 18 blocks per row) of 0.02·randn; and each row's kind."""
    return cases.make_input("weights", cases.SHAPE_SMOLLM), ["weights_n576"] * cases.SHAPE_SMOLLM[0]


INPUTS = {"mixed": _mixed_input, "n576": _wide_input}


def _assert_bitwise(got: np.ndarray, want: np.ndarray, labels: list[str]) -> None:
    """Equal uint32 patterns, else a report of the first mismatching values with their row kinds."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    differ = got.view(np.uint32) != want.view(np.uint32)
    if DEVICE == "cuda":
        # A NaN made by arithmetic (the 3e38 block's inf * 0) is 0xffc00000 on x86 and the canonical
        # 0x7fffffff on NVIDIA GPUs: the payload is the hardware's, so there both must merely be NaN.
        differ &= ~(np.isnan(got) & np.isnan(want))
    bad = np.argwhere(differ)
    if len(bad):
        gb, wb = got.view(np.uint32), want.view(np.uint32)
        lines = [
            f"row {r} ({labels[r]}), col {c} (block {c // 32}): triton {got[r, c]!r} (0x{gb[r, c]:08x}) "
            f"!= native {want[r, c]!r} (0x{wb[r, c]:08x})"
            for r, c in bad[:8]
        ]
        pytest.fail(f"{len(bad)} of {got.size} values differ:\n" + "\n".join(lines))


def _check(qtype: str, input_name: str, imatrix_kind: str) -> None:
    x, labels = INPUTS[input_name]()
    imatrix = cases.make_imatrix(imatrix_kind, x.shape[1])
    fmt = sqat_kernels.get_format(qtype)
    got = (
        tk.fake_quant(
            torch.from_numpy(x.copy()).to(DEVICE),
            fmt,
            None if imatrix is None else torch.from_numpy(imatrix).to(DEVICE),
        )
        .cpu()
        .numpy()
    )
    want = _C.fake_quant(x, int(fmt.ggml_type), imatrix, 1)
    _assert_bitwise(got, want, labels)


# The interpreter evaluates the kernels with NumPy, which warns about the inf/NaN intermediates that the
# extreme rows produce (and the reference produces too, silently, before selecting them away).
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    ("input_name", "imatrix_kind"),
    # every imatrix kind on the mixed rows; the wide rows (a row length that is no multiple of 256) without
    # and with a random one, which keeps the interpreter's run time down
    [("mixed", kind) for kind in cases.IMATRIX_KINDS] + [("n576", "imatrix_none"), ("n576", "imatrix_rand")],
)
@pytest.mark.parametrize("qtype", BLOCK32_FORMATS)
def test_block32_matches_native(qtype: str, input_name: str, imatrix_kind: str) -> None:
    """Triton fake_quant == native fake_quant bitwise, for every 32-value format, input and imatrix kind."""
    _check(qtype, input_name, imatrix_kind)


@pytest.mark.parametrize("imatrix_kind", ["imatrix_none", "imatrix_rand"])
@pytest.mark.parametrize("input_name", list(INPUTS))
@pytest.mark.parametrize("qtype", FLOAT_FORMATS)
def test_floats_match_native(qtype: str, input_name: str, imatrix_kind: str) -> None:
    """F32/F16/BF16 round trips == native bitwise (the importance matrix is ignored)."""
    _check(qtype, input_name, imatrix_kind)


@pytest.mark.parametrize("qtype", ["F16", "BF16"])
def test_float_round_trips_edge_values(qtype: str) -> None:
    """fp16/bf16 rounding at the edges: ties, subnormals, the overflow threshold, signed zeros."""
    rng = np.random.default_rng(7)
    specials = np.array(
        [
            0.0,
            -0.0,
            65504.0,
            65519.996,
            65520.0,
            -65520.0,
            1e38,
            -3.4e38,
            2.0**-24,
            2.0**-25,
            3 * 2.0**-26,
            2.0**-14,
            2.0**-14 - 2.0**-25,
            1.0 + 2.0**-11,
            1.0 + 3 * 2.0**-11,
            1e-45,
            -1e-40,
            1.0 + 2.0**-8,
        ],
        dtype=np.float32,
    )
    bits = rng.integers(0, 2**32, size=4096 - specials.size, dtype=np.uint64).astype(np.uint32)
    rand = bits.view(np.float32)
    rand = np.where(np.isfinite(rand), rand, np.float32(1.5))
    x = np.ascontiguousarray(np.concatenate([specials, rand]).reshape(-1, 32))
    fmt = sqat_kernels.get_format(qtype)
    got = tk.fake_quant(torch.from_numpy(x.copy()).to(DEVICE), fmt, None).cpu().numpy()
    want = _C.fake_quant(x, int(fmt.ggml_type), None, 1)
    _assert_bitwise(got, want, ["edge"] * x.shape[0])


def test_degenerate_shapes() -> None:
    """No rows -> empty output; a row length that is not a multiple of 32 is rejected."""
    fmt = sqat_kernels.get_format("Q4_0")
    assert tk.fake_quant(torch.zeros(0, 64, device=DEVICE), fmt, None).shape == (0, 64)
    with pytest.raises(ValueError, match="multiple of the block size"):
        tk.fake_quant(torch.zeros(2, 48, device=DEVICE), fmt, None)
