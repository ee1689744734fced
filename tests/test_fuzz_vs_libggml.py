"""Bounded, deterministic property fuzz: sqat_kernels quantization == libggml bytes on arbitrary finite rows.

Rows mix three generators (hypothesis picks): mostly-one-value arrays with a few arbitrary floats (repeats,
zeros, subnormals), fully arbitrary float32 arrays, and seeded normal data with a per-block power-of-two
magnitude (2**-140 .. 2**20, so whole blocks of subnormals and of large values) and zeroed runs. The optional
importance matrix is non-negative and finite (zeros and subnormals included).

Magnitudes are capped at 2**20: above that, upstream's weighted sums of x**3 / x**4 overflow to inf and its
results are NaN-driven (undefined float->int conversions), which is not a property worth pinning.

``derandomize=True`` and no example database: the same examples run on every machine and every run.
"""

from __future__ import annotations

from types import ModuleType

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libggml import FORMATS, LibGGML, block_info
from report import assert_blocks_equal

MAX_ABS = 2.0**20

_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

_any_float = st.floats(
    min_value=-MAX_ABS,
    max_value=MAX_ABS,
    allow_nan=False,
    allow_infinity=False,
    width=32,
    allow_subnormal=True,
)
_TINY = float(np.float32(1e-30))
_tiny_float = st.floats(min_value=-_TINY, max_value=_TINY, width=32, allow_subnormal=True)
_elements = st.one_of(_any_float, _tiny_float, st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5]))


@st.composite
def _shapes(draw: st.DrawFn, block_size: int) -> tuple[int, int]:
    """(nrows, n_per_row): 1..3 rows of 1..2 super-blocks (256-formats), 1..4 blocks of 64 (NVFP4) or 1..8
    blocks of 32."""
    nrows = draw(st.integers(1, 3))
    if block_size == 256:
        n = 256 * draw(st.integers(1, 2))
    elif block_size == 64:
        n = 64 * draw(st.integers(1, 4))
    else:
        n = 32 * draw(st.integers(1, 8))
    return nrows, n


@st.composite
def _rows(draw: st.DrawFn, block_size: int) -> np.ndarray:
    """float32 [nrows, n_per_row] of finite values, |x| <= MAX_ABS."""
    shape = draw(_shapes(block_size))
    mode = draw(st.sampled_from(["fill", "dense", "seeded"]))
    if mode == "fill":  # one repeated value with a few arbitrary ones
        x = draw(hnp.arrays(np.float32, shape, elements=_elements))
    elif mode == "dense":  # every value arbitrary (kept small: hypothesis draws each one)
        shape = (1, min(shape[1], 64 if block_size < 256 else 256))
        x = draw(hnp.arrays(np.float32, shape, elements=_elements, fill=st.nothing()))
    else:  # normal data, per-32-block power-of-two magnitude, some zero runs
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        nrows, n = shape
        exps = draw(st.lists(st.integers(-140, 20), min_size=1, max_size=4))
        scale = (
            np.float32(2.0) ** np.array(exps, dtype=np.float32)[rng.integers(0, len(exps), (nrows, n // 32))]
        )
        x = rng.standard_normal((nrows, n // 32, 32)).astype(np.float32) * scale[..., None]
        zero_frac = draw(st.sampled_from([0.0, 0.1, 0.5]))
        x[rng.random(x.shape) < zero_frac] = 0.0
        x = np.clip(x.reshape(nrows, n), -MAX_ABS, MAX_ABS)
    return np.ascontiguousarray(x, dtype=np.float32)


@st.composite
def _imatrix(draw: st.DrawFn, n: int) -> np.ndarray | None:
    """None, or a non-negative finite float32 [n] (arbitrary, or seeded log-normal with zeros)."""
    kind = draw(st.sampled_from(["none", "arbitrary", "lognormal"]))
    if kind == "none":
        return None
    if kind == "arbitrary":
        w = draw(hnp.arrays(np.float32, (n,), elements=st.floats(0.0, 1e6, width=32, allow_subnormal=True)))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        w = rng.lognormal(0.0, 2.0, n).astype(np.float32)
        w[rng.random(n) < draw(st.sampled_from([0.0, 0.25]))] = 0.0
    return np.ascontiguousarray(w, dtype=np.float32)


@st.composite
def _problems(draw: st.DrawFn, block_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    x = draw(_rows(block_size))
    return x, draw(_imatrix(x.shape[1]))


def _check(impl: ModuleType, ggml: LibGGML, fmt: str, x: np.ndarray, w: np.ndarray | None, what: str) -> None:
    expected = ggml.quantize(x, fmt, w)
    got = np.asarray(impl.quantize(x.copy(), fmt, None if w is None else w.copy()))
    assert_blocks_equal(
        expected,
        got,
        fmt,
        block_info(fmt),
        dequantize=lambda b: ggml.dequantize(b, fmt),
        x=x,
        what=what,
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_native_quantize(sqat: ModuleType, ggml: LibGGML, fmt: str) -> None:
    """Native quantization of arbitrary finite rows (± imatrix) gives libggml's bytes."""

    @_SETTINGS
    @given(problem=_problems(block_info(fmt)[0]))
    def run(problem: tuple[np.ndarray, np.ndarray | None]) -> None:
        _check(sqat, ggml, fmt, *problem, what="fuzz native quantize vs libggml:")

    run()


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_reference_quantize(sqat_reference: ModuleType, ggml: LibGGML, fmt: str) -> None:
    """NumPy reference quantization of arbitrary finite rows (± imatrix) gives libggml's bytes."""

    @_SETTINGS
    @given(problem=_problems(block_info(fmt)[0]))
    def run(problem: tuple[np.ndarray, np.ndarray | None]) -> None:
        _check(sqat_reference, ggml, fmt, *problem, what="fuzz reference quantize vs libggml:")

    run()
