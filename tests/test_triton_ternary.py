"""Triton fused fake quantization of TQ1_0 and TQ2_0 against the native kernels, bit for bit.

Inputs: the rounding edges of ``cases.ternary_edges`` (values at and one float step around ±amax/2, block
maxima whose reciprocal overflows, fp16 scales that overflow) and ordinary rows (0.02·randn with an all-zero
block, the libggml case generators' ``weights``, ``tiny``, ``large``); each without and with an importance
matrix (which both formats ignore). Compared through uint32 views, so the signs of zeros and NaN payloads
count. Without a GPU the kernels run in Triton's interpreter (``conftest.py`` sets ``TRITON_INTERPRET=1``).
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

FORMATS = ["TQ1_0", "TQ2_0"]


def _ordinary_rows() -> np.ndarray:
    """float32 [8, 512]: weights (with an all-zero block), tiny, large, randn rows."""
    parts = [cases.make_input(kind, (2, 512)) for kind in ("weights", "tiny", "large", "randn")]
    x = np.ascontiguousarray(np.concatenate(parts))
    x[0, 256:512] = 0.0
    return x


INPUTS = {"edges": cases.ternary_edges, "ordinary": _ordinary_rows}


# The interpreter evaluates with NumPy, which warns about the inf/NaN products of overflowed reciprocals.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("imatrix_kind", ["imatrix_none", "imatrix_rand"])
@pytest.mark.parametrize("input_name", list(INPUTS))
@pytest.mark.parametrize("qtype", FORMATS)
def test_ternary_matches_native(qtype: str, input_name: str, imatrix_kind: str) -> None:
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
    bad = np.argwhere(got.view(np.uint32) != want.view(np.uint32))
    if len(bad):
        lines = [f"row {r}, col {c} (block {c // 256}): triton {got[r, c]!r} != native {want[r, c]!r}"
                 for r, c in bad[:8]]
        pytest.fail(f"{len(bad)} of {got.size} values differ:\n" + "\n".join(lines))


@pytest.mark.parametrize("qtype", FORMATS)
def test_ternary_degenerate_shapes(qtype: str) -> None:
    """No rows -> empty output; a row length that is not a multiple of 256 is rejected."""
    fmt = sqat_kernels.get_format(qtype)
    assert tk.fake_quant(torch.zeros(0, 256, device=DEVICE), fmt, None).shape == (0, 256)
    with pytest.raises(ValueError, match="multiple of the block size"):
        tk.fake_quant(torch.zeros(2, 320, device=DEVICE), fmt, None)


@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K"])
def test_formats_without_triton_kernel_are_refused(qtype: str) -> None:
    """Q2_K and Q3_K have no Triton kernel: a clear error naming the backends that work."""
    with pytest.raises(ValueError, match=rf"no kernel for {qtype}.*backend='auto' or 'native'"):
        tk.fake_quant(torch.zeros(2, 256, device=DEVICE), sqat_kernels.get_format(qtype), None)
