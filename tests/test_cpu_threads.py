"""Where the CPU kernels' threads come from: PyTorch's OpenMP team when torch is loaded, sqat's own pool
otherwise, in a forked child, or when forced; the bytes never depend on it."""

from __future__ import annotations

import importlib.util
import multiprocessing
import subprocess
import sys
import time

import numpy as np
import pytest
import sqat_kernels as sk
import torch
from libggml import FORMATS, block_info, load
from report import assert_bitwise_equal, assert_blocks_equal
from sqat_kernels.backends import native

# Large enough to be split over both threads (the kernels keep tensors under 16K values on one thread).
ROWS, COLS = 64, 4096


@pytest.fixture
def thread_source(request):
    native.set_cpu_threads(request.param)
    yield request.param
    native.set_cpu_threads("auto")


def test_torch_openmp_runtime_is_shared():
    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("this torch build does not use OpenMP")  # pragma: no cover (Linux wheels all do)
    torch.ones(1 << 16).add_(1)  # whatever torch does at start-up, its runtime is loaded by now
    assert native.cpu_threads() == "openmp"


def test_pool_can_be_forced():
    native.set_cpu_threads("pool")
    try:
        assert native.cpu_threads() == "pool"
    finally:
        native.set_cpu_threads("auto")
    with pytest.raises(ValueError, match="unknown CPU thread source"):
        native.set_cpu_threads("tbb")


@pytest.mark.parametrize("thread_source", ["auto", "pool"], indirect=True)
@pytest.mark.parametrize("fmt", FORMATS)
def test_both_thread_sources_give_llama_cpp_bytes(thread_source, fmt):
    rng = np.random.default_rng(7)
    x = (0.02 * rng.standard_normal((ROWS, COLS))).astype(np.float32)
    x[3, 100:164] = 0.0
    ggml = load()
    expected = ggml.quantize(x, fmt, None)
    got = sk.quantize(x, fmt, threads=2)
    assert_blocks_equal(expected, got, fmt, block_info(fmt), x=x, what=f"{thread_source} quantize:")
    decoded = ggml.dequantize(expected, fmt, COLS)
    block = block_info(fmt)[0]
    assert_bitwise_equal(decoded, sk.dequantize(expected, fmt, x.shape, threads=2), fmt, block)
    fq = sk.fake_quant(torch.from_numpy(x), fmt)
    assert_bitwise_equal(decoded, fq.numpy(), fmt, block, what=f"{thread_source} fake_quant:")


@pytest.mark.parametrize("thread_source", ["auto", "pool"], indirect=True)
def test_first_nonfinite_value_is_reported_on_either_source(thread_source):
    x = np.zeros((ROWS, COLS), np.float32)
    x[50, 7] = np.inf
    x[40, 9] = np.nan  # the first one in row-major order
    with pytest.raises(ValueError, match="row 40, column 9"):
        sk.quantize(x, "Q8_0", threads=2)


@pytest.mark.parametrize("gap_ms", [0, 2, 20], ids=lambda g: f"gap{g}ms")
def test_pool_calls_after_idle_gaps_give_the_same_bytes(gap_ms):
    # After a gap the pool's worker sleeps and may join a call late or not at all (the caller then does
    # every chunk itself): each call must still write every block, whatever the worker's timing.
    rng = np.random.default_rng(11)
    x = (0.02 * rng.standard_normal((ROWS, COLS))).astype(np.float32)
    native.set_cpu_threads("pool")
    try:
        expected = sk.quantize(x, "Q4_0", threads=1)
        for i in range(20):
            out = np.full_like(expected, 0xA5)
            sk.quantize(x, "Q4_0", threads=2, out=out)
            np.testing.assert_array_equal(out, expected, err_msg=f"call {i} after a {gap_ms} ms gap")
            time.sleep(gap_ms / 1000)
    finally:
        native.set_cpu_threads("auto")


def _quantize_in_child(queue) -> None:
    x = (np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS) % 97) * 0.01
    queue.put((native.cpu_threads(), sk.quantize(x, "Q4_K", threads=2).tobytes()))


def test_forked_child_uses_its_own_pool():
    # The parent has just run torch's and sqat's parallel loops on the OpenMP team: a child that asked
    # that team (whose threads do not exist after fork) for threads would hang.
    torch.ones(1 << 20).mul_(2)
    x = (np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS) % 97) * 0.01
    parent = sk.quantize(x, "Q4_K", threads=2).tobytes()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_quantize_in_child, args=(queue,))
    child.start()
    source, data = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert source == "pool"
    assert data == parent


def test_without_torch_the_core_uses_its_pool():
    # The native module alone (no torch, so no OpenMP runtime in the process), loaded from its file.
    spec = importlib.util.find_spec("sqat_kernels._C")
    assert spec is not None and spec.origin is not None
    code = (
        "import importlib.machinery, importlib.util, sys, numpy as np\n"
        f"loader = importlib.machinery.ExtensionFileLoader('sqat_kernels._C', {spec.origin!r})\n"
        "spec = importlib.util.spec_from_loader('sqat_kernels._C', loader)\n"
        "C = importlib.util.module_from_spec(spec); loader.exec_module(C)\n"
        "assert 'torch' not in sys.modules\n"
        "x = np.ones((64, 4096), np.float32)\n"
        "y = C.quantize(x, 8, None, 2)\n"
        "print(C.openmp_available(), y.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "(64,", "4352)"]
