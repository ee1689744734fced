"""Byte-exact cross-check of sqat_kernels (native C++ and NumPy reference) against llama.cpp's libggml-base.

For every format × case × importance matrix (ids like ``Q4_K-randn-imatrix_zeros``):

* ``sqat_kernels.quantize`` bytes == ``ggml_quantize_chunk`` bytes,
* ``sqat_kernels.reference.quantize`` bytes == ``ggml_quantize_chunk`` bytes,
* ``sqat_kernels.dequantize`` / ``reference.dequantize`` of libggml's bytes == libggml's ``dequantize_row_*``,
  compared bitwise (uint32 views: -0.0 vs 0.0 and NaN payloads count).

Plus: thread counts, odd shapes (one row, empty, leading batch dims), dequantization of random bytes,
F16/BF16 conversion of special values (subnormals, overflow, rounding ties) and of every 16-bit pattern,
for MXFP4/NVFP4 the scale-rule edges of ``cases.fp4_edges`` and every scale byte with every code, and for
TQ1_0/TQ2_0 the rounding edges of ``cases.ternary_edges`` and every byte of TQ1_0's base-3 packing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
from cases import FP4_GROUP, IMATRIX_KINDS, Case, cases_for, fp4_edges, make_imatrix, rng_for, ternary_edges
from libggml import FORMATS, LibGGML, block_info, load
from report import assert_bitwise_equal, assert_blocks_equal


def _params() -> list[object]:
    """format × case × imatrix, with readable ids."""
    out = []
    for fmt in FORMATS:
        for case in cases_for(block_info(fmt)[0]):
            for imat in IMATRIX_KINDS:
                out.append(pytest.param(fmt, case, imat, id=f"{fmt}-{case.id}-{imat}"))
    return out


PARAMS = _params()


@functools.cache
def _inputs(case: Case, imat: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Case rows and importance matrix (read-only, cached across the tests of one parameter set)."""
    x = case.make()
    w = make_imatrix(imat, x.shape[1])
    x.flags.writeable = False
    if w is not None:
        w.flags.writeable = False
    return x, w


@functools.cache
def _ggml_bytes(fmt: str, case: Case, imat: str) -> np.ndarray:
    """libggml's quantization of a case (read-only, cached)."""
    x, w = _inputs(case, imat)
    q = load().quantize(x, fmt, w)
    q.flags.writeable = False
    return q


def _ggml_dequantizer(fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """libggml's dequantizer for ``fmt`` as a function of blocks (for mismatch reports)."""
    return lambda blocks: load().dequantize(blocks, fmt)


@pytest.mark.parametrize(("fmt", "case", "imat"), PARAMS)
def test_native_quantize_matches_libggml(
    sqat: ModuleType, ggml: LibGGML, fmt: str, case: Case, imat: str
) -> None:
    """Native C++ quantization gives libggml's bytes."""
    x, w = _inputs(case, imat)
    got = np.asarray(sqat.quantize(x.copy(), fmt, None if w is None else w.copy()))
    assert_blocks_equal(
        _ggml_bytes(fmt, case, imat),
        got,
        fmt,
        block_info(fmt),
        dequantize=_ggml_dequantizer(fmt),
        x=x,
        what="native quantize vs libggml:",
    )


@pytest.mark.parametrize(("fmt", "case", "imat"), PARAMS)
def test_reference_quantize_matches_libggml(
    sqat_reference: ModuleType, ggml: LibGGML, fmt: str, case: Case, imat: str
) -> None:
    """NumPy reference quantization gives libggml's bytes."""
    x, w = _inputs(case, imat)
    got = np.asarray(sqat_reference.quantize(x.copy(), fmt, None if w is None else w.copy()))
    assert_blocks_equal(
        _ggml_bytes(fmt, case, imat),
        got,
        fmt,
        block_info(fmt),
        dequantize=_ggml_dequantizer(fmt),
        x=x,
        what="reference quantize vs libggml:",
    )


@pytest.mark.parametrize(("fmt", "case", "imat"), PARAMS)
def test_native_dequantize_matches_libggml(
    sqat: ModuleType, ggml: LibGGML, fmt: str, case: Case, imat: str
) -> None:
    """Native dequantization of libggml's bytes equals libggml's dequantization, bit for bit."""
    data = _ggml_bytes(fmt, case, imat)
    expected = ggml.dequantize(data, fmt)
    got = np.asarray(sqat.dequantize(data.copy(), fmt, expected.shape))
    assert_bitwise_equal(expected, got, fmt, block_info(fmt)[0], what="native dequantize vs libggml:")


@pytest.mark.parametrize(("fmt", "case", "imat"), PARAMS)
def test_reference_dequantize_matches_libggml(
    sqat_reference: ModuleType, ggml: LibGGML, fmt: str, case: Case, imat: str
) -> None:
    """Reference dequantization of libggml's bytes equals libggml's dequantization, bit for bit."""
    data = _ggml_bytes(fmt, case, imat)
    expected = ggml.dequantize(data, fmt)
    got = np.asarray(sqat_reference.dequantize(data.copy(), fmt))
    assert_bitwise_equal(expected, got, fmt, block_info(fmt)[0], what="reference dequantize vs libggml:")


# ---------------------------------------------------------------------------------------------------------
# threads and shapes


@pytest.mark.parametrize("imat", ["imatrix_none", "imatrix_rand"])
@pytest.mark.parametrize("threads", [1, 2, 3, None], ids=lambda t: f"threads{t}" if t else "threads_auto")
@pytest.mark.parametrize("fmt", FORMATS)
def test_native_quantize_threads(
    sqat: ModuleType, ggml: LibGGML, fmt: str, threads: int | None, imat: str
) -> None:
    """The bytes do not depend on the thread count (37 rows: an uneven split)."""
    x = (0.02 * rng_for("threads", fmt).standard_normal((37, 512))).astype(np.float32)
    w = make_imatrix(imat, 512)
    got = np.asarray(sqat.quantize(x, fmt, w, threads=threads))
    assert_blocks_equal(
        ggml.quantize(x, fmt, w),
        got,
        fmt,
        block_info(fmt),
        dequantize=_ggml_dequantizer(fmt),
        x=x,
        what=f"native quantize threads={threads} vs libggml:",
    )


SHAPES = [(0, 512), (1, 256), (2, 3, 512), (5, 1024)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", FORMATS)
def test_native_shapes(sqat: ModuleType, ggml: LibGGML, fmt: str, shape: tuple[int, ...]) -> None:
    """Blocks run along the last axis for any leading shape, including one row and no rows."""
    x = rng_for("shape", fmt, shape).standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1, shape[-1])
    expected = ggml.quantize(flat, fmt)
    got = np.asarray(sqat.quantize(x, fmt))
    assert got.shape == (*shape[:-1], expected.shape[1]), f"{fmt}: quantize returned shape {got.shape}"
    assert_blocks_equal(expected, got.reshape(expected.shape), fmt, block_info(fmt), what="native quantize:")
    deq = np.asarray(sqat.dequantize(got, fmt, shape))
    assert deq.shape == shape, f"{fmt}: dequantize returned shape {deq.shape}"
    assert_bitwise_equal(
        ggml.dequantize(expected, fmt),
        deq.reshape(flat.shape),
        fmt,
        block_info(fmt)[0],
        what="native dequantize:",
    )


@pytest.mark.parametrize("shape", [(0, 512), (1, 256), (5, 1024)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", FORMATS)
def test_reference_shapes(
    sqat_reference: ModuleType, ggml: LibGGML, fmt: str, shape: tuple[int, int]
) -> None:
    """The reference handles one row and no rows."""
    x = rng_for("shape", fmt, shape).standard_normal(shape).astype(np.float32)
    expected = ggml.quantize(x, fmt)
    got = np.asarray(sqat_reference.quantize(x, fmt))
    assert_blocks_equal(expected, got, fmt, block_info(fmt), what="reference quantize:")
    deq = np.asarray(sqat_reference.dequantize(got, fmt))
    assert_bitwise_equal(
        ggml.dequantize(expected, fmt), deq, fmt, block_info(fmt)[0], what="reference dequantize:"
    )


# ---------------------------------------------------------------------------------------------------------
# dequantization of arbitrary bytes


def _random_block_bytes(fmt: str, nblocks_per_row: int, nrows: int = 4) -> np.ndarray:
    """Bytes made of finite fp16 values (as gguf-py's test does): every fp16 scale field is finite."""
    _, type_size = block_info(fmt)
    nbytes = nrows * nblocks_per_row * type_size
    rng = rng_for("random_bytes", fmt)
    halves = (rng.standard_normal(nbytes // 2) * 2.0 ** rng.integers(-12, 8, nbytes // 2)).astype(np.float16)
    return halves.view(np.uint8).reshape(nrows, nblocks_per_row * type_size)


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_random_bytes(request: pytest.FixtureRequest, ggml: LibGGML, fmt: str, impl: str) -> None:
    """Dequantizing arbitrary finite-scale bytes (every code and scale pattern) matches libggml bitwise."""
    block_size, _ = block_info(fmt)
    data = _random_block_bytes(fmt, 512 // block_size if block_size > 1 else 512)
    expected = ggml.dequantize(data, fmt)
    if impl == "native":
        got = request.getfixturevalue("sqat").dequantize(data, fmt, expected.shape)
    else:
        got = request.getfixturevalue("sqat_reference").dequantize(data, fmt)
    assert_bitwise_equal(expected, np.asarray(got), fmt, block_size, what=f"{impl} dequantize random bytes:")


def _every_16bit_pattern() -> np.ndarray:
    """All 65536 16-bit patterns as bytes ``[64, 2048]`` (NaNs, infinities, subnormals, both zeros)."""
    return np.arange(1 << 16, dtype=np.uint16).astype("<u2").view(np.uint8).reshape(64, 2048)


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("fmt", ["F16", "BF16"])
def test_dequantize_every_16bit_pattern(
    request: pytest.FixtureRequest, ggml: LibGGML, fmt: str, impl: str
) -> None:
    """F16/BF16 -> F32 for every bit pattern, NaN payloads included."""
    data = _every_16bit_pattern()
    expected = ggml.dequantize(data, fmt)
    if impl == "native":
        got = request.getfixturevalue("sqat").dequantize(data, fmt, expected.shape)
    else:
        got = request.getfixturevalue("sqat_reference").dequantize(data, fmt)
    assert_bitwise_equal(expected, np.asarray(got), fmt, 1, what=f"{impl} dequantize all patterns:")


#: Finite float32 bit patterns where fp32 -> fp16/bf16 conversion is delicate (the public API rejects NaN/Inf
#: inputs, so those are covered by the every-16-bit-pattern dequantization test instead).
_SPECIAL_BITS: dict[str, tuple[int, ...]] = {
    "zeros": (0x00000000, 0x80000000),
    "fp32 subnormals, smallest normal": (0x00000001, 0x807FFFFF, 0x00800000),
    "around fp16's subnormal range": (0x33000000, 0x33000001, 0x33800000, 0x387FC000, 0x38800000),
    "fp16 max 65504, overflow to inf": (0x477FE000, 0x477FEFFF, 0x477FF000, 0x47800000, 0x7F7FFFFF),
    "bf16 ties, overflow": (0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF, 0x7F7F8000, 0x7F7F7FFF),
    "fp16 ties at 1.0": (0x3F801000, 0x3F803000, 0x3F801001),
}


def _special_floats() -> np.ndarray:
    """float32 ``[4, 256]`` of the :data:`_SPECIAL_BITS` values, both signs, in fixed and shuffled places."""
    bits = [b for group in _SPECIAL_BITS.values() for b in group]
    base = np.array(bits, dtype=np.uint32).view(np.float32)
    rng = rng_for("special_floats")
    x = rng.choice(base, size=(4, 256)).astype(np.float32)
    x[0, : len(base)] = base
    x[1, : len(base)] = -base
    return np.ascontiguousarray(x)


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("fmt", ["F16", "BF16"])
def test_float_formats_special_values(
    request: pytest.FixtureRequest, ggml: LibGGML, fmt: str, impl: str
) -> None:
    """F16/BF16 quantization of signed zeros, subnormals, overflow and rounding ties gives libggml's bytes."""
    x = _special_floats()
    expected = ggml.quantize(x, fmt)
    if impl == "native":
        got = request.getfixturevalue("sqat").quantize(x, fmt)
    else:
        got = request.getfixturevalue("sqat_reference").quantize(x, fmt)
    assert_blocks_equal(
        expected,
        np.asarray(got),
        fmt,
        block_info(fmt),
        dequantize=_ggml_dequantizer(fmt),
        x=x,
        what=f"{impl} quantize special values:",
    )


# ---------------------------------------------------------------------------------------------------------
# MXFP4 / NVFP4: scale rules and every scale byte


def _assert_edges_as_libggml(
    request: pytest.FixtureRequest, ggml: LibGGML, fmt: str, impl: str, x: np.ndarray, label: str
) -> None:
    """x (float32 [rows, n]) quantizes to libggml's bytes, and those bytes decode to libggml's values."""
    expected = ggml.quantize(x, fmt)
    mod = request.getfixturevalue("sqat" if impl == "native" else "sqat_reference")
    got = np.asarray(mod.quantize(x, fmt))
    assert_blocks_equal(
        expected,
        got,
        fmt,
        block_info(fmt),
        dequantize=_ggml_dequantizer(fmt),
        x=x,
        what=f"{impl} quantize {label} edges vs libggml:",
    )
    decoded = mod.dequantize(expected, fmt, x.shape) if impl == "native" else mod.dequantize(expected, fmt)
    assert_bitwise_equal(
        ggml.dequantize(expected, fmt),
        np.asarray(decoded),
        fmt,
        block_info(fmt)[0],
        what=f"{impl} dequantize {label} edges:",
    )


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("fmt", list(FP4_GROUP))
def test_fp4_scale_edges(request: pytest.FixtureRequest, ggml: LibGGML, fmt: str, impl: str) -> None:
    """Groups whose maxima sit on the scale rules' edges (log2f just below powers of two, UE4M3 rounding,
    saturation, tiny and FLT_MAX-sized blocks) and values on exact level ties give libggml's bytes, and decode
    to libggml's values."""
    _assert_edges_as_libggml(request, ggml, fmt, impl, fp4_edges(fmt), "fp4")


def _every_fp4_scale_byte(fmt: str) -> np.ndarray:
    """Blocks with each scale byte 0..255 (in every scale field), all 16 codes: uint8 [64, 4 * type_size]."""
    _, type_size = block_info(fmt)
    nscales = 1 if fmt == "MXFP4" else 4
    blocks = np.zeros((256, type_size), dtype=np.uint8)
    blocks[:, :nscales] = np.arange(256, dtype=np.uint8)[:, None]
    codes = np.arange(type_size - nscales, dtype=np.uint8) % 16
    blocks[:, nscales:] = codes | (((codes + 5) % 16) << 4)
    return blocks.reshape(64, 4 * type_size)


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("fmt", list(FP4_GROUP))
def test_fp4_dequantize_every_scale_byte(
    request: pytest.FixtureRequest, ggml: LibGGML, fmt: str, impl: str
) -> None:
    """Every E8M0 / UE4M3 byte (0x7F, 0xFF, overflow to inf included) times every code decodes as in ggml."""
    data = _every_fp4_scale_byte(fmt)
    expected = ggml.dequantize(data, fmt)
    if impl == "native":
        got = request.getfixturevalue("sqat").dequantize(data, fmt, expected.shape)
    else:
        got = request.getfixturevalue("sqat_reference").dequantize(data, fmt)
    assert_bitwise_equal(
        expected, np.asarray(got), fmt, block_info(fmt)[0], what=f"{impl} dequantize scale bytes:"
    )


# ---------------------------------------------------------------------------------------------------------
# TQ1_0 / TQ2_0: rounding edges and every packed byte


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("fmt", ["TQ1_0", "TQ2_0"])
def test_ternary_edges(request: pytest.FixtureRequest, ggml: LibGGML, fmt: str, impl: str) -> None:
    """Blocks with values at and around ±amax/2, block maxima whose reciprocal overflows (inf/NaN products)
    or whose fp16 scale overflows, give libggml's bytes and decode to libggml's values."""
    _assert_edges_as_libggml(request, ggml, fmt, impl, ternary_edges(), "ternary")


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_tq1_0_dequantize_every_byte(request: pytest.FixtureRequest, ggml: LibGGML, impl: str) -> None:
    """Every value 0..255 in every qs and qh byte (243..255 are never written: their trits wrap) decodes as in
    ggml, with a finite, an infinite and a zero fp16 scale."""
    blocks = np.zeros((3 * 256, 54), dtype=np.uint8)
    blocks[:, :52] = (np.arange(3 * 256)[:, None] + np.arange(52)[None, :]) % 256
    blocks[:, 52:54] = np.repeat(np.array([[0x00, 0x3C], [0x00, 0x7C], [0x00, 0x00]], np.uint8), 256, axis=0)
    data = blocks.reshape(48, 16 * 54)
    expected = ggml.dequantize(data, "TQ1_0")
    if impl == "native":
        got = request.getfixturevalue("sqat").dequantize(data, "TQ1_0", expected.shape)
    else:
        got = request.getfixturevalue("sqat_reference").dequantize(data, "TQ1_0")
    assert_bitwise_equal(expected, np.asarray(got), "TQ1_0", 256, what=f"{impl} dequantize every byte:")
