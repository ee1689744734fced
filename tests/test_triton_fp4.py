"""Triton fused fake quantization of MXFP4 and NVFP4 against the native kernels, bit for bit.

Inputs: the scale-rule edges of ``cases.fp4_edges`` (maxima just below powers of two, tiny blocks whose
exponent wraps, UE4M3 rounding and saturation, magnitudes up to FLT_MAX, exact level ties) and ordinary rows
(0.02·randn with an all-zero block, the libggml case generators' ``weights``, ``tiny``, ``large``); each
without and with an importance matrix (which both formats ignore). Compared through uint32 views, so the
signs of zeros count. Without a GPU the kernels run in Triton's interpreter (``conftest.py`` sets
``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import cases
import numpy as np
import pytest
import sqat_kernels
import torch
from sqat_kernels import _C
from sqat_kernels.backends import triton as tk

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

FORMATS = list(cases.FP4_GROUP)


def _ordinary_rows() -> np.ndarray:
    """float32 [8, 512]: weights (with an all-zero block), tiny, large, randn rows."""
    parts = [cases.make_input(kind, (2, 512)) for kind in ("weights", "tiny", "large", "randn")]
    x = np.ascontiguousarray(np.concatenate(parts))
    x[0, 64:128] = 0.0
    return x


INPUTS = {
    "edges_mxfp4": lambda: cases.fp4_edges("MXFP4"),
    "edges_nvfp4": lambda: cases.fp4_edges("NVFP4"),
    "ordinary": _ordinary_rows,
}


def _assert_bitwise(got: np.ndarray, want: np.ndarray, block: int) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    bad = np.argwhere(got.view(np.uint32) != want.view(np.uint32))
    if len(bad):
        gb, wb = got.view(np.uint32), want.view(np.uint32)
        lines = [
            f"row {r}, col {c} (block {c // block}): triton {got[r, c]!r} (0x{gb[r, c]:08x}) "
            f"!= native {want[r, c]!r} (0x{wb[r, c]:08x})"
            for r, c in bad[:8]
        ]
        pytest.fail(f"{len(bad)} of {got.size} values differ:\n" + "\n".join(lines))


# The interpreter evaluates with NumPy, which warns about the inf products of the largest MXFP4 exponents.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("imatrix_kind", ["imatrix_none", "imatrix_rand"])
@pytest.mark.parametrize("input_name", list(INPUTS))
@pytest.mark.parametrize("qtype", FORMATS)
def test_fp4_matches_native(qtype: str, input_name: str, imatrix_kind: str) -> None:
    """Triton fake_quant == native fake_quant bitwise (the importance matrix is ignored by both)."""
    x = INPUTS[input_name]()
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
    want = _C.fake_quant(x, fmt.type_id, imatrix, 1)
    _assert_bitwise(got, want, fmt.block_size)


@pytest.mark.parametrize("qtype", FORMATS)
def test_fp4_degenerate_shapes(qtype: str) -> None:
    """No rows -> empty output; a row length that is not a multiple of the block is rejected."""
    fmt = sqat_kernels.get_format(qtype)
    assert tk.fake_quant(torch.zeros(0, 128, device=DEVICE), fmt, None).shape == (0, 128)
    with pytest.raises(ValueError, match="multiple of the block size"):
        tk.fake_quant(torch.zeros(2, fmt.block_size + 16, device=DEVICE), fmt, None)
