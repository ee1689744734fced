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
    torch.library.opcheck(torch.ops.sqat.fake_quant.default, (w, qtype, None, "identity", "auto"))
    torch.library.opcheck(torch.ops.sqat.fake_quant.default, (w, qtype, torch.rand(512), "identity", "auto"))


def test_compile_fullgraph_forward_backward() -> None:
    # A QAT linear layer: everything around the op is a matmul, which the compiled graph hands to the same
    # ATen kernels as eager mode, so outputs and gradients must agree bit for bit.  (A reduction such as
    # .square().mean() would be generated code whose summation order inductor chooses per CPU: not ours.)
    def layer(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, sk.fake_quant(w, "Q4_K"))

    w = weights((64, 256), seed=9).requires_grad_()
    x = torch.randn(8, 256)
    grad_out = torch.randn(8, 64)
    compiled = torch.compile(layer, fullgraph=True)
    got = compiled(w, x)
    got.backward(grad_out)
    g_compiled = w.grad.clone()
    w.grad = None
    want = layer(w, x)
    want.backward(grad_out)
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
                                                      ("Q8_0", 100, "F16"), ("MXFP4", 100, "F16"),
                                                      ("Q2_K", 576, "Q4_0"), ("Q3_K", 960, "Q4_0"),
                                                      ("TQ1_0", 576, "Q4_0"), ("TQ2_0", 100, "F16")])
def test_row_length_error_names_llama_fallback(qtype: str, n: int, fallback: str) -> None:
    with pytest.raises(ValueError, match=rf"not a multiple of .*would store such a tensor as {fallback}"):
        sk.fake_quant(torch.zeros(2, n), qtype)


@pytest.mark.parametrize("n", [32, 100])
def test_row_length_error_nvfp4_has_no_llama_fallback(n: int) -> None:
    with pytest.raises(ValueError, match=r"not a multiple of 64.*no fallback for NVFP4"):
        sk.fake_quant(torch.zeros(2, n), "NVFP4")


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.float64])
def test_bad_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match=r"float32, float16 or bfloat16"):
        sk.fake_quant(torch.zeros(2, 256, dtype=dtype), "Q4_K")


def test_bad_qtype_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"supported: .*Q4_K"):
        sk.fake_quant(torch.zeros(2, 256), "IQ3_S")


def test_unknown_ste_and_backend() -> None:
    with pytest.raises(ValueError, match=r"unsupported backend"):
        sk.fake_quant(torch.zeros(2, 256), "Q4_K", backend="cpp")
    with pytest.raises(ValueError, match=r"unsupported ste"):
        sk.fake_quant(torch.zeros(2, 256), "Q4_K", ste="tanh")


# ---- clipped straight-through estimator --------------------------------------------------------

# Byte ranges of each format's code fields and how a code is written there (from the GGUF layouts),
# for an independent reading of "the range a block can represent".
def _set_codes(qtype: str, block: np.ndarray, code: int) -> None:
    nib = (code & 15) | ((code & 15) << 4)
    hi = 0xFF if code & 16 else 0
    fields = {
        "Q8_0": [(2, 34, code & 0xFF)], "Q4_0": [(2, 18, nib)], "IQ4_NL": [(2, 18, nib)],
        "Q4_1": [(4, 20, nib)],
        "Q5_0": [(2, 6, hi), (6, 22, nib)], "Q5_1": [(4, 8, hi), (8, 24, nib)], "Q4_K": [(16, 144, nib)],
        "Q5_K": [(16, 48, hi), (48, 176, nib)], "IQ4_XS": [(8, 136, nib)],
        "Q6_K": [(0, 128, nib), (128, 192, 0x55 * ((code >> 4) & 3))],
        "MXFP4": [(1, 17, nib)], "NVFP4": [(4, 36, nib)],
        # 2-bit fields: the code in every pair of bits; Q3_K's third bit in hmask
        "Q2_K": [(16, 80, 0x55 * (code & 3))], "TQ2_0": [(0, 64, 0x55 * (code & 3))],
        "Q3_K": [(0, 32, 0xFF if code & 4 else 0), (32, 96, 0x55 * (code & 3))],
        # five equal trits per byte as ceil(q * 256 / 243); a qh byte holds four, one trit up
        "TQ1_0": [(0, 48, (121 * code * 256 + 242) // 243), (48, 52, (120 * code * 256 + 242) // 243)],
    }[qtype]
    for a, b, v in fields:
        block[..., a:b] = v


def reference_clipped_grad(x: np.ndarray, qtype: str, grad: np.ndarray) -> np.ndarray:
    fmt = sk.get_format(qtype)
    packed = sk.quantize(x, qtype).reshape(-1, fmt.type_size)
    lo_code, hi_code = {"Q8_0": (-128, 127), "Q5_0": (0, 31), "Q5_1": (0, 31), "Q5_K": (0, 31),
                        "Q6_K": (0, 63), "Q3_K": (0, 7), "Q2_K": (0, 3), "TQ1_0": (0, 2),
                        "TQ2_0": (0, 2)}.get(qtype, (0, 15))
    # lowest value, next one up, highest, next one down; E2M1 codes are sign + magnitude: -6, -4, +6, +4
    probes = (15, 14, 7, 6) if qtype in ("MXFP4", "NVFP4") else (lo_code, lo_code + 1, hi_code, hi_code - 1)
    vals = []
    for code in probes:
        probe = packed.copy()
        _set_codes(qtype, probe, code)
        vals.append(sk.dequantize(probe, qtype, x.shape))
    v_lo, v_lo1, v_hi, v_hi1 = vals
    f = np.float32
    end_lo = v_lo - f(0.5) * (v_lo1 - v_lo)
    end_hi = v_hi + f(0.5) * (v_hi - v_hi1)
    lo, hi = np.minimum(end_lo, end_hi), np.maximum(end_lo, end_hi)
    return np.where((x >= lo) & (x <= hi), grad, f(0.0)).astype(np.float32)


CODED = [t for t in TYPES if t not in ("F32", "F16", "BF16")]


def heavy_weights(shape: tuple[int, int], seed: int) -> np.ndarray:
    # Student-t tails push values past the clamps of the symmetric formats.
    rng = np.random.default_rng(seed)
    return (0.02 * rng.standard_t(2.5, size=shape)).astype(np.float32)


@pytest.mark.parametrize("qtype", CODED)
def test_clipped_grad_matches_reference(qtype: str) -> None:
    x = heavy_weights((8, 512), seed=11)
    g = np.random.default_rng(12).standard_normal(x.shape).astype(np.float32)
    want = reference_clipped_grad(x, qtype, g)
    got = _C.clipped_grad(x, sk.get_format(qtype).type_id, None, g, 2)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q5_0", "IQ4_XS", "Q4_K", "MXFP4", "Q3_K", "Q2_K"])
def test_clipped_ste_zeroes_some_gradients(qtype: str) -> None:
    x = heavy_weights((16, 512), seed=13)
    mask = _C.clipped_grad(x, sk.get_format(qtype).type_id, None, np.ones_like(x), 1)
    assert 0 < np.count_nonzero(mask == 0) < x.size // 4


def test_clipped_q4_0_by_hand() -> None:
    # max = +1 -> d = -1/8: codes span [-7/8, +1]; half a step below -7/8 is -15/16.
    x = np.zeros((1, 32), dtype=np.float32)
    x[0, :4] = [1.0, -0.9, -0.95, 0.5]
    got = _C.clipped_grad(x, sk.get_format("Q4_0").type_id, None, np.ones_like(x), 1)
    assert got[0, :4].tolist() == [1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("grid", [(0, 0), (3, 5)], ids=["launch_shape", "3x5"])
@pytest.mark.parametrize("imatrix", [False, True], ids=["no_imatrix", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES)
def test_clipped_grad_cuda_bodies_on_host(qtype: str, imatrix: bool, grid: tuple[int, int]) -> None:
    t = sk.get_format(qtype).type_id
    x = heavy_weights((5, 768), seed=14)
    g = np.random.default_rng(15).standard_normal(x.shape).astype(np.float32)
    im = np.random.default_rng(16).random(768).astype(np.float32) if imatrix else None
    want = _C.clipped_grad(x, t, im, g, 1)
    np.testing.assert_array_equal(_C.emulate_cuda_clipped_grad(x, t, im, g, *grid).view(np.uint32),
                                  want.view(np.uint32))


@pytest.mark.parametrize("imatrix", [False, True], ids=["no_imatrix", "imatrix"])
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "IQ4_XS", "Q6_K", "F16"])
def test_clipped_ste_backward(qtype: str, imatrix: bool) -> None:
    x = heavy_weights((4, 512), seed=17)
    im = torch.rand(512) if imatrix else None
    w = torch.from_numpy(x).requires_grad_()
    g = torch.randn(4, 512)
    sk.fake_quant(w, qtype, im, ste="clipped").backward(g)
    want = _C.clipped_grad(x, sk.get_format(qtype).type_id, None if im is None else im.numpy(), g.numpy(), 1)
    np.testing.assert_array_equal(w.grad.numpy().view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K"])
def test_clipped_opcheck_and_compile(qtype: str) -> None:
    w = torch.from_numpy(heavy_weights((3, 512), seed=18)).requires_grad_()
    torch.library.opcheck(torch.ops.sqat.fake_quant.default, (w, qtype, None, "clipped", "auto"))
    torch.library.opcheck(torch.ops.sqat.clipped_grad.default, (w.detach(), torch.randn(3, 512), qtype, None))

    def loss(w: torch.Tensor) -> torch.Tensor:
        return sk.fake_quant(w, qtype, ste="clipped").square().sum()

    compiled = torch.compile(loss, fullgraph=True)
    compiled(w).backward()
    g_compiled = w.grad.clone()
    w.grad = None
    loss(w).backward()
    torch.testing.assert_close(g_compiled, w.grad, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_out_dtype_rounds_once(dtype: torch.dtype) -> None:
    w = weights((4, 256), seed=19).to(dtype).requires_grad_()
    exact = sk.fake_quant(w, "Q4_K")
    got = sk.fake_quant(w, "Q4_K", out_dtype=dtype)
    assert got.dtype == dtype
    torch.testing.assert_close(got, exact.to(dtype), atol=0, rtol=0)
    got.sum().backward()
    assert w.grad is not None and w.grad.dtype == dtype


@pytest.mark.parametrize("ste", ["identity", "clipped"])
def test_no_extra_saved_memory(ste: str) -> None:
    """Autograd keeps nothing per element beyond the weight it already holds."""
    w = torch.nn.Parameter(weights((64, 512), seed=20))
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = sk.fake_quant(w, "Q4_K", ste=ste)
    extra = [t for t in saved if t.untyped_storage().data_ptr() != w.untyped_storage().data_ptr()]
    assert sum(t.numel() for t in extra) == 0
    assert len(saved) == (1 if ste == "clipped" else 0)
    out.sum().backward()
