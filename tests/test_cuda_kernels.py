"""CUDA kernels: the grid bodies run on the host (grid emulation, DESIGN.md decision 4), and for real
where a GPU is present.

The emulator calls the same per-thread body functions as the __global__ wrappers, over every
(block, thread) of a grid, so index arithmetic, grid-stride loops and the row-sigma2 pre-pass are
checked byte-for-byte against the CPU loops without a GPU.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import sqat_kernels as sk
import torch
from sqat_kernels import _C

# Launch shapes: the real one (0, 0), a tiny grid that forces many grid-stride iterations, and a
# grid far larger than the work (most threads idle).
GRIDS = [(0, 0), (3, 5), (1, 1), (64, 128)]
GRID_IDS = ["launch_shape", "3x5", "1x1", "64x128"]


def data(n_rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (0.02 * rng.standard_normal((n_rows, n))).astype(np.float32)
    x[0, : min(n, 64)] = 0.0  # an all-zero stretch
    return x


@pytest.mark.parametrize("grid", GRIDS, ids=GRID_IDS)
@pytest.mark.parametrize("imatrix", [False, True], ids=["no_imatrix", "imatrix"])
@pytest.mark.parametrize("qtype", sk.SUPPORTED_TYPES)
def test_emulated_grid_matches_cpu(qtype: str, imatrix: bool, grid: tuple[int, int]) -> None:
    fmt = sk.get_format(qtype)
    x = data(5, 768, seed=fmt.type_id)
    im = np.random.default_rng(7).random(768).astype(np.float32) if imatrix else None
    want = _C.quantize(x, fmt.type_id, im, 1)
    got = _C.emulate_cuda_quantize(x, fmt.type_id, im, *grid)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_C.emulate_cuda_dequantize(want, fmt.type_id, 768, *grid),
                                  _C.dequantize(want, fmt.type_id, 768, 1))


def test_ci_build_has_cuda_kernels() -> None:
    """CI builds with SQAT_REQUIRE_CUDA=ON: there the CUDA sources must have been compiled in."""
    if os.environ.get("SQAT_REQUIRE_CUDA", "").upper() not in ("ON", "1", "TRUE"):
        pytest.skip("not a SQAT_REQUIRE_CUDA build")
    assert sk.cuda_compiled()


def test_package_works_without_gpu() -> None:
    # On a machine without a GPU or driver the module imports, reports 0 devices, and the CPU path works.
    assert _C.cuda_device_count() >= 0
    if _C.cuda_device_count() == 0:
        assert not sk.cuda_usable()


gpu = pytest.mark.skipif(not (sk.cuda_usable() and torch.cuda.is_available()), reason="needs a CUDA GPU")


@gpu
@pytest.mark.parametrize("imatrix", [False, True], ids=["no_imatrix", "imatrix"])
@pytest.mark.parametrize("qtype", sk.SUPPORTED_TYPES)
def test_cuda_matches_cpu(qtype: str, imatrix: bool) -> None:
    x = data(33, 1024, seed=3)
    im = np.random.default_rng(5).random(1024).astype(np.float32) if imatrix else None
    want = sk.quantize(x, qtype, im)
    got = sk.quantize(torch.from_numpy(x).cuda(), qtype, None if im is None else torch.from_numpy(im))
    assert got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy(), want)
    back = sk.dequantize(got, qtype, x.shape)
    np.testing.assert_array_equal(back.cpu().numpy(), sk.dequantize(want, qtype, x.shape))
