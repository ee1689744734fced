"""The public quantize/dequantize API: input kinds, shapes, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import sqat_kernels as sk
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from sqat_kernels import _C

QUANTIZED = [t for t in sk.SUPPORTED_TYPES if t not in ("F32", "F16", "BF16")]


def rows(n_rows: int, n: int, seed: int = 0) -> np.ndarray:
    return (0.02 * np.random.default_rng(seed).standard_normal((n_rows, n))).astype(np.float32)


@pytest.mark.parametrize("qtype", sk.SUPPORTED_TYPES)
def test_native_geometry_matches_gguf(qtype: str) -> None:
    assert _C.geometry(int(GGMLQuantizationType[qtype])) == GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]


@pytest.mark.parametrize(
    "qtype", ["Q4_K", "q4_k", GGMLQuantizationType.Q4_K], ids=["name", "lower", "enum"]
)
def test_qtype_spellings(qtype: object) -> None:
    x = rows(2, 256)
    np.testing.assert_array_equal(sk.quantize(x, qtype), sk.quantize(x, "Q4_K"))


@pytest.mark.parametrize("qtype", sk.SUPPORTED_TYPES)
@pytest.mark.parametrize(
    "shape", [(256,), (3, 512), (2, 3, 256), (1, 256)], ids=["1d", "2d", "3d", "one_row"]
)
def test_shapes_roundtrip(qtype: str, shape: tuple[int, ...]) -> None:
    fmt = sk.get_format(qtype)
    x = rows(int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]).reshape(shape)
    data = sk.quantize(x, qtype)
    assert data.dtype == np.uint8 and data.shape == shape[:-1] + (fmt.row_bytes(shape[-1]),)
    y = sk.dequantize(data, qtype, shape)
    assert y.dtype == np.float32 and y.shape == shape
    # Dequantize accepts the same bytes flattened.
    np.testing.assert_array_equal(sk.dequantize(data.reshape(-1), qtype, shape), y)


@pytest.mark.parametrize("qtype", sk.SUPPORTED_TYPES)
@pytest.mark.parametrize("shape", [(0, 256), (4, 0), (0,)], ids=["no_rows", "empty_rows", "empty_1d"])
def test_empty_input_gives_empty_output(qtype: str, shape: tuple[int, ...]) -> None:
    x = np.zeros(shape, dtype=np.float32)
    data = sk.quantize(x, qtype)
    assert data.size == 0 and data.shape == shape[:-1] + (sk.get_format(qtype).row_bytes(shape[-1]),)
    assert sk.dequantize(data, qtype, shape).shape == shape


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "IQ4_XS", "Q5_1"])
def test_non_contiguous_input(qtype: str) -> None:
    base = rows(512, 8)
    x = base.T  # (8, 512), Fortran-ordered view
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(sk.quantize(x, qtype), sk.quantize(np.ascontiguousarray(x), qtype))
    strided = rows(4, 1024)[:, ::2]
    np.testing.assert_array_equal(sk.quantize(strided, qtype), sk.quantize(strided.copy(), qtype))


@pytest.mark.parametrize("qtype", ["Q6_K", "Q4_0", "F16"])
def test_threads_do_not_change_bytes(qtype: str) -> None:
    x = rows(64, 1024)
    one = sk.quantize(x, qtype, threads=1)
    for t in (2, 3, 7):
        np.testing.assert_array_equal(sk.quantize(x, qtype, threads=t), one)
        np.testing.assert_array_equal(sk.dequantize(one, qtype, x.shape, threads=t),
                                      sk.dequantize(one, qtype, x.shape, threads=1))


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_0", "IQ4_NL", "BF16"])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"]
)
def test_torch_cpu_inputs_widen_exactly(qtype: str, dtype: torch.dtype) -> None:
    t = torch.from_numpy(rows(3, 512)).to(dtype)
    got = sk.quantize(t, qtype)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
    want = sk.quantize(t.to(torch.float32).numpy(), qtype)
    np.testing.assert_array_equal(got.numpy(), want)
    back = sk.dequantize(got, qtype, tuple(t.shape))
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    np.testing.assert_array_equal(back.numpy(), sk.dequantize(want, qtype, t.shape))


def test_numpy_float16_widens_exactly() -> None:
    x = rows(2, 256).astype(np.float16)
    np.testing.assert_array_equal(sk.quantize(x, "Q4_K"), sk.quantize(x.astype(np.float32), "Q4_K"))


def test_torch_imatrix_accepted() -> None:
    x = rows(2, 256)
    im = np.random.default_rng(1).random(256).astype(np.float32)
    np.testing.assert_array_equal(sk.quantize(x, "Q4_K", torch.from_numpy(im)), sk.quantize(x, "Q4_K", im))


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", sk.SUPPORTED_TYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_values_are_refused_with_position(qtype: str, bad: float) -> None:
    x = rows(5, 512)
    x[3, 300] = bad
    x[4, 7] = bad  # a later one: the message must name the first
    with pytest.raises(ValueError, match=r"row 3, column 300"):
        sk.quantize(x, qtype)


def test_non_finite_in_torch_input() -> None:
    t = torch.zeros(2, 256)
    t[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"row 1, column 5"):
        sk.quantize(t, "Q8_0")


@pytest.mark.parametrize("qtype", ["Q4_K", "Q4_0", "IQ4_XS"])
def test_non_finite_imatrix_is_refused(qtype: str) -> None:
    im = np.ones(256, dtype=np.float32)
    im[17] = np.nan
    with pytest.raises(ValueError, match=r"imatrix .*column 17"):
        sk.quantize(rows(2, 256), qtype, im)


@pytest.mark.parametrize("length", [255, 512, 1])
def test_imatrix_of_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match=r"expected length 256"):
        sk.quantize(rows(2, 256), "Q4_K", np.ones(length, dtype=np.float32))


def test_imatrix_must_be_one_dimensional() -> None:
    with pytest.raises(ValueError, match=r"1-D"):
        sk.quantize(rows(2, 256), "Q4_K", np.ones((2, 256), dtype=np.float32))


@pytest.mark.parametrize(("qtype", "n"), [("Q4_K", 576), ("Q8_0", 100), ("IQ4_XS", 32), ("Q5_0", 33)])
def test_row_length_not_multiple_of_block(qtype: str, n: int) -> None:
    bs = sk.get_format(qtype).block_size
    with pytest.raises(ValueError, match=rf"{qtype} .*blocks of {bs} .*row length of {n}"):
        sk.quantize(np.zeros((2, n), dtype=np.float32), qtype)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint8, np.complex64])
def test_unsupported_numpy_dtype(dtype: type) -> None:
    with pytest.raises(TypeError, match=r"dtype"):
        sk.quantize(np.zeros((2, 256), dtype=dtype), "Q4_K")


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.uint8])
def test_unsupported_torch_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError):
        sk.quantize(torch.zeros(2, 256, dtype=dtype), "Q4_K")


def test_zero_dim_input() -> None:
    with pytest.raises(TypeError, match=r"at least one"):
        sk.quantize(np.float32(1.0), "Q8_0")


@pytest.mark.parametrize("qtype", ["IQ3_S", "IQ2_XXS", "nope"])
def test_unsupported_type(qtype: str) -> None:
    with pytest.raises(ValueError, match=r"unsupported quantization type"):
        sk.quantize(rows(1, 256), qtype)


def test_dequantize_wrong_byte_count() -> None:
    data = sk.quantize(rows(2, 256), "Q4_K")
    with pytest.raises(ValueError, match=r"must hold 432 bytes, got 288"):
        sk.dequantize(data, "Q4_K", (3, 256))


def test_dequantize_wrong_dtype() -> None:
    with pytest.raises(TypeError, match=r"uint8"):
        sk.dequantize(np.zeros((1, 144), dtype=np.int8), "Q4_K", (1, 256))


def test_quantize_does_not_modify_input() -> None:
    x = rows(4, 512)
    before = x.copy()
    sk.quantize(x, "Q4_K", np.ones(512, dtype=np.float32))
    np.testing.assert_array_equal(x, before)


# ---- 64-bit indexing ---------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", QUANTIZED + ["F16"])
def test_block_index_arithmetic_is_64_bit(qtype: str) -> None:
    """The kernels' block -> (row, column, offsets) map stays exact past 2^31 elements and bytes."""
    fmt = sk.get_format(qtype)
    n_per_row = 8192
    blocks_per_row = n_per_row // fmt.block_size
    nrows = (1 << 33) // n_per_row + 3  # a 2^33-element tensor: 32 GiB of fp32, never allocated
    for flat in (0, 1, blocks_per_row - 1, blocks_per_row, (1 << 31) // fmt.block_size + 5,
                 nrows * blocks_per_row - 1):
        row, b = divmod(flat, blocks_per_row)
        got = _C.locate_block(fmt.type_id, n_per_row, flat)
        assert got == (row, b * fmt.block_size, row * n_per_row + b * fmt.block_size,
                       row * fmt.row_bytes(n_per_row) + b * fmt.type_size)
    assert got[2] > 2**33 - n_per_row  # the last block starts beyond 2^32 elements


@pytest.mark.parametrize("qtype", ["Q4_1", "Q6_K", "IQ4_NL", "F16"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_quantize_into_out(qtype: str, kind: str) -> None:
    x = rows(6, 512, seed=3).reshape(2, 3, 512)
    want = sk.quantize(x, qtype)
    if kind == "numpy":
        out = np.full(want.shape, 0xAB, dtype=np.uint8)
        got = sk.quantize(x, qtype, out=out)
        assert got is out
        np.testing.assert_array_equal(out, want)
    else:
        out_t = torch.full(want.shape, 0xAB, dtype=torch.uint8)
        got_t = sk.quantize(torch.from_numpy(x), qtype, out=out_t)
        assert got_t is out_t
        np.testing.assert_array_equal(out_t.numpy(), want)


def test_quantize_into_out_no_rows() -> None:
    out = np.empty((0, 144), dtype=np.uint8)
    assert sk.quantize(np.zeros((0, 256), np.float32), "Q4_K", out=out) is out


def _read_only(shape: tuple[int, ...]) -> np.ndarray:
    a = np.zeros(shape, dtype=np.uint8)
    a.setflags(write=False)
    return a


@pytest.mark.parametrize(
    ("make_out", "error", "match"),
    [
        (lambda: np.zeros((4, 143), np.uint8), ValueError, "shape"),
        (lambda: np.zeros((4, 144), np.int8), TypeError, "uint8"),
        (lambda: np.zeros((4, 288), np.uint8)[:, ::2], ValueError, "contiguous"),
        (lambda: _read_only((4, 144)), ValueError, "writeable"),
        (lambda: torch.zeros((4, 144), dtype=torch.uint8), TypeError, "NumPy"),
        (lambda: [0] * 144, TypeError, "NumPy"),
    ],
    ids=["shape", "dtype", "strided", "read_only", "tensor_for_numpy", "list"],
)
def test_quantize_out_is_checked(make_out: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sk.quantize(rows(4, 256), "Q4_K", out=make_out())  # type: ignore[operator]


def test_quantize_torch_out_must_be_a_tensor_on_the_input_device() -> None:
    with pytest.raises(TypeError, match="torch tensor"):
        sk.quantize(torch.from_numpy(rows(4, 256)), "Q4_K", out=np.zeros((4, 144), np.uint8))
