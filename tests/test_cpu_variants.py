"""Every instruction-set variant of the CPU kernels this machine runs gives llama.cpp's bytes.

For each supported variant (avx512, avx2, scalar), in-process through set_cpu_variant: quantize ==
libggml's ggml_quantize_chunk, fake_quant == dequantize of libggml's bytes, dequantize == libggml's, on the
full case matrix of tests/cases.py (ties, zeros, tiny and huge values, imatrix kinds) and on ragged shapes
(block counts per row and rows that are not multiples of any SIMD lane count).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import sqat_kernels as sk
import torch
from cases import IMATRIX_KINDS, cases_for, make_imatrix, rng_for
from libggml import FORMATS, block_info, load
from report import assert_bitwise_equal, assert_blocks_equal

VARIANTS = [*sk.supported_cpu_variants(), "auto"]


@pytest.fixture(params=VARIANTS)
def variant(request):
    sk.set_cpu_variant(request.param)
    yield request.param
    sk.set_cpu_variant("auto")


def _matrix():
    for fmt in FORMATS:
        for case in cases_for(block_info(fmt)[0]):
            for imat in IMATRIX_KINDS:
                yield pytest.param(fmt, case, imat, id=f"{fmt}-{case.id}-{imat}")


@pytest.mark.parametrize("fmt, case, imat", list(_matrix()))
def test_variant_equals_libggml(variant, fmt, case, imat):
    ggml = load()
    x = case.make()
    w = make_imatrix(imat, x.shape[1])
    expected = ggml.quantize(x, fmt, w)
    got = sk.quantize(x, fmt, w)
    assert_blocks_equal(expected, got, fmt, block_info(fmt), x=x, what=f"{variant} quantize vs libggml:")
    decoded = ggml.dequantize(expected, fmt, x.shape[1])
    block = block_info(fmt)[0]
    assert_bitwise_equal(
        decoded, sk.dequantize(expected, fmt, x.shape), fmt, block, what=f"{variant} dequantize:"
    )
    fq = sk.fake_quant(torch.from_numpy(x), fmt, None if w is None else torch.from_numpy(w))
    assert_bitwise_equal(decoded, fq.numpy(), fmt, block, what=f"{variant} fake_quant:")


@pytest.mark.parametrize("blocks_per_row", [1, 3, 7, 17])
@pytest.mark.parametrize("nrows", [1, 5])
@pytest.mark.parametrize("fmt", FORMATS)
def test_ragged_shapes(variant, fmt, nrows, blocks_per_row):
    block = block_info(fmt)[0]
    n = block * blocks_per_row
    rng = rng_for("ragged", fmt, nrows, blocks_per_row)
    x = (0.02 * rng.standard_normal((nrows, n))).astype(np.float32)
    w = rng.random(n).astype(np.float32)
    ggml = load()
    for im in (None, w):
        expected = ggml.quantize(x, fmt, im)
        got = sk.quantize(x, fmt, im, threads=2)
        assert_blocks_equal(expected, got, fmt, block_info(fmt), x=x, what=f"{variant} quantize vs libggml:")
        decoded = ggml.dequantize(expected, fmt, n)
        fq = sk.fake_quant(torch.from_numpy(x), fmt, None if im is None else torch.from_numpy(im))
        assert_bitwise_equal(decoded, fq.numpy(), fmt, block, what=f"{variant} fake_quant:")


def test_variant_api():
    assert sk.supported_cpu_variants()[-1] == "scalar" and sk.cpu_variant() in VARIANTS
    with pytest.raises(ValueError, match="unknown CPU variant"):
        sk.set_cpu_variant("sse9")


def test_environment_override_and_bad_value():
    code = "import sqat_kernels as sk; print(sk.cpu_variant())"
    env = {**os.environ, "SQAT_CPU_VARIANT": "scalar"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"
    bad = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SQAT_CPU_VARIANT": "sse9"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown CPU variant" in bad.stderr


@pytest.mark.parametrize(
    "variant", [v for v in ("avx512", "avx2") if v not in sk.supported_cpu_variants()] or ["none"]
)
def test_environment_variant_this_cpu_cannot_run_warns_and_keeps_auto(variant: str) -> None:
    # On a CPU that runs every variant there is nothing to fall back from: the parameter is "none" and the
    # test checks that an unset variable leaves "auto".
    code = "import sqat_kernels as sk; print(sk.cpu_variant(), sk.supported_cpu_variants()[0])"
    env = {**os.environ, "SQAT_CPU_VARIANT": "" if variant == "none" else variant}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    active, best = out.stdout.split()
    assert active in (best, "avx2")  # "auto" picks AVX2 for some types on AVX-512 CPUs
    if variant != "none":
        assert f"SQAT_CPU_VARIANT={variant} cannot run on this CPU" in out.stderr

