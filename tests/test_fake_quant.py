"""sqat::fake_quant: exactly dequantize(quantize(w)), fused; straight-through backward; torch integration."""

from __future__ import annotations

import numpy as np
import pytest
import sqat_kernels as sk
import torch
from sqat_kernels import _C

TYPES = sk.SUPPORTED_TYPES


def weights(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = 0.02 * torch.randn(shape, generator=g)
    w.view(-1, shape[-1])[0, :32] = 0.0  # an all-zero block
    return w


def assert_bitwise(got: torch.Tensor, want: np.ndarray) -> None:
    assert got.dtype == torch.float32
    g = got.detach().cpu().numpy()
    assert g.shape == want.shape
    bad = np.flatnonzero(g.view(np.uint32).ravel() != want.astype(np.float32).view(np.uint32).ravel())
    if bad.size:
        i = bad[0]
        raise AssertionError(
            f"{bad.size} values differ; first at flat index {i}: {g.ravel()[i]!r} vs {want.ravel()[i]!r}"
        )


DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"]
)


@pytest.mark.parametrize("imatrix", [False, True], ids=["no_imatrix", "imatrix"])
@DTYPES
@pytest.mark.parametrize("qtype", TYPES)
def test_equals_dequantize_of_quantize(qtype: str, dtype: torch.dtype, imatrix: bool) -> None:
    w = weights((6, 768), seed=sk.get_format(qtype).type_id).to(dtype)
    im = torch.rand(768, generator=torch.Generator().manual_seed(3)) if imatrix else None
    want = sk.dequantize(sk.quantize(w, qtype, im), qtype, tuple(w.shape)).numpy()
    assert_bitwise(sk.fake_quant(w, qtype, im), want)


@pytest.mark.parametrize(
    "shape", [(1, 256), (2, 3, 512), (256,), (0, 256)], ids=["one_row", "3d", "1d", "empty"]
)
@pytest.mark.parametrize("qtype", ["Q4_K", "Q8_0", "IQ4_XS", "Q5_1"])
def test_shapes(qtype: str, shape: tuple[int, ...]) -> None:
    w = 0.02 * torch.randn(shape)
    got = sk.fake_quant(w, qtype)
    assert got.shape == w.shape
    if w.numel():
        assert_bitwise(got, sk.dequantize(sk.quantize(w.numpy(), qtype), qtype, shape))


@pytest.mark.parametrize("grid", [(0, 0), (3, 5)], ids=["launch_shape", "3x5"])
@pytest.mark.parametrize("imatrix", [False, True], ids=["no_imatrix", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES)
def test_cuda_kernel_bodies_on_host(qtype: str, imatrix: bool, grid: tuple[int, int]) -> None:
    fmt = sk.get_format(qtype)
    x = weights((5, 768), seed=1).numpy()
    im = np.random.default_rng(2).random(768).astype(np.float32) if imatrix else None
    want = _C.fake_quant(x, fmt.type_id, im, 1)
    got = _C.emulate_cuda_fake_quant(x, fmt.type_id, im, *grid)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@DTYPES
@pytest.mark.parametrize("qtype", ["Q4_K", "Q4_0", "IQ4_NL", "Q8_0"])
def test_identity_ste_backward(qtype: str, dtype: torch.dtype) -> None:
    w = weights((4, 512), seed=5).to(dtype).requires_grad_()
    g = torch.randn(4, 512)
    sk.fake_quant(w, qtype).backward(g)
    assert w.grad is not None and w.grad.dtype == dtype
    torch.testing.assert_close(w.grad, g.to(dtype), atol=0, rtol=0)


@pytest.mark.parametrize("qtype", TYPES)
def test_opcheck(qtype: str) -> None:
    w = weights((3, 512), seed=7).requires_grad_()
    torch.library.opcheck(torch.ops.sqat.fake_quant.default, (w, qtype, None, "auto"))
    torch.library.opcheck(torch.ops.sqat.fake_quant.default, (w, qtype, torch.rand(512), "auto"))


def test_compile_fullgraph_forward_backward() -> None:
    def loss(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x @ sk.fake_quant(w, "Q4_K").t()).square().mean()

    w = weights((64, 256), seed=9).requires_grad_()
    x = torch.randn(8, 256)
    compiled = torch.compile(loss, fullgraph=True)
    got = compiled(w, x)
    got.backward()
    g_compiled = w.grad.clone()
    w.grad = None
    want = loss(w, x)
    want.backward()
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(g_compiled, w.grad, atol=0, rtol=0)


# ---- bad input ---------------------------------------------------------------------------------


def test_nan_weight_is_refused() -> None:
    w = torch.zeros(3, 256)
    w[2, 100] = float("inf")
    with pytest.raises(ValueError, match=r"Q4_K.*row 2, column 100"):
        sk.fake_quant(w, "Q4_K")


@pytest.mark.parametrize(("qtype", "n", "fallback"), [("Q4_K", 576, "Q5_0"), ("Q5_K", 960, "Q5_1"),
                                                      ("Q6_K", 576, "Q8_0"), ("IQ4_XS", 576, "IQ4_NL"),
                                                      ("Q8_0", 100, "F16")])
def test_row_length_error_names_llama_fallback(qtype: str, n: int, fallback: str) -> None:
    with pytest.raises(ValueError, match=rf"not a multiple of .*would store such a tensor as {fallback}"):
        sk.fake_quant(torch.zeros(2, n), qtype)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.float64])
def test_bad_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match=r"float32, float16 or bfloat16"):
        sk.fake_quant(torch.zeros(2, 256, dtype=dtype), "Q4_K")


def test_bad_qtype_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"supported: .*Q4_K"):
        sk.fake_quant(torch.zeros(2, 256), "Q3_K")


def test_unknown_ste() -> None:
    with pytest.raises(ValueError, match=r"unsupported ste"):
        sk.fake_quant(torch.zeros(2, 256), "Q4_K", ste="tanh")
