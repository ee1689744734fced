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
from sqat_kernels.backends.triton import TRITON_TYPES

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


# (qtype, backend) pairs: every type on the native CUDA kernels, the Triton-covered ones on Triton too.
_OP_BACKENDS = [
    pytest.param(t, b, id=f"{t}-{b}")
    for t in sk.SUPPORTED_TYPES
    for b in ("auto", "triton")
    if b == "auto" or t in TRITON_TYPES
]


@gpu
@pytest.mark.parametrize("ste", ["identity", "clipped"])
@pytest.mark.parametrize("imatrix", [False, True], ids=["no_imatrix", "imatrix"])
@pytest.mark.parametrize(("qtype", "backend"), _OP_BACKENDS)
def test_fake_quant_op_on_cuda_matches_cpu(qtype: str, imatrix: bool, backend: str, ste: str) -> None:
    """sqat::fake_quant on CUDA tensors (native CUDA kernels, or Triton compiled for the GPU): forward
    values and STE gradients bit for bit those of the CPU op."""
    x = torch.from_numpy(data(37, 1024, seed=11) * np.float32(3.0))
    im = torch.from_numpy(np.random.default_rng(5).random(1024).astype(np.float32)) if imatrix else None
    g = torch.from_numpy(np.random.default_rng(6).standard_normal((37, 1024)).astype(np.float32))
    w_cpu = x.clone().requires_grad_(True)
    want = sk.fake_quant(w_cpu, qtype, im, ste=ste)
    want.backward(g)
    w_gpu = x.cuda().requires_grad_(True)
    got = sk.fake_quant(w_gpu, qtype, None if im is None else im.cuda(), ste=ste, backend=backend)
    got.backward(g.cuda())
    assert got.is_cuda
    assert torch.equal(got.detach().cpu().view(torch.int32), want.detach().view(torch.int32))
    assert torch.equal(w_gpu.grad.cpu(), w_cpu.grad)


@gpu
def test_qat_model_trains_identically_on_cuda() -> None:
    """A prepared tiny Llama: one forward/backward on the GPU equals the CPU one in the fake-quantized
    weights and in the loss (matmul rounding may differ, so the loss is compared loosely)."""
    from sqat_kernels.nn import prepare, qat_modules
    from tiny_models import tiny_llama

    cpu = tiny_llama(hidden=256, heads=4, kv=2, ff=512, layers=2)
    gpu_model = tiny_llama(hidden=256, heads=4, kv=2, ff=512, layers=2).cuda()
    prepare(cpu, "Q4_K_M")
    prepare(gpu_model, "Q4_K_M")
    ids = torch.randint(0, cpu.config.vocab_size, (2, 16))
    loss_cpu = cpu(input_ids=ids, labels=ids).loss
    loss_gpu = gpu_model(input_ids=ids.cuda(), labels=ids.cuda()).loss
    loss_cpu.backward()
    loss_gpu.backward()
    for (name, m_cpu), (_, m_gpu) in zip(qat_modules(cpu), qat_modules(gpu_model), strict=True):
        assert torch.equal(m_gpu.fake_weight().detach().cpu(), m_cpu.fake_weight().detach()), name
        assert m_gpu.weight.grad is not None and torch.isfinite(m_gpu.weight.grad).all(), name
    assert abs(loss_gpu.item() - loss_cpu.item()) < 1e-3
