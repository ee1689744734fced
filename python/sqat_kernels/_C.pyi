"""Type stub for the native module sqat_kernels._C (csrc/bindings.cpp)."""

import numpy as np
import numpy.typing as npt

def geometry(type: int) -> tuple[int, int]:
    """(block_size, type_size) of a ggml type id; (0, 0) if unsupported."""

def locate_block(type: int, n_per_row: int, flat_block: int) -> tuple[int, int, int, int]:
    """(row, col, x_offset, y_offset) of block number flat_block, as the kernels compute it (64-bit)."""

def quantize(
    x: npt.NDArray[np.float32],
    type: int,
    imatrix: npt.NDArray[np.float32] | None = None,
    threads: int = 1,
    out: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """float32 [nrows, n] (C-contiguous) -> uint8 [nrows, row_bytes], written into ``out`` (uint8,
    C-contiguous, writeable, exactly that shape) when given; ValueError on NaN/Inf."""

def dequantize(
    data: npt.NDArray[np.uint8], type: int, n_per_row: int, threads: int = 1
) -> npt.NDArray[np.float32]:
    """uint8 [nrows, row_bytes] (C-contiguous) -> float32 [nrows, n_per_row]."""

def fake_quant(
    x: npt.NDArray[np.float32], type: int, imatrix: npt.NDArray[np.float32] | None = None, threads: int = 1
) -> npt.NDArray[np.float32]:
    """float32 [nrows, n] -> float32 dequantize(quantize(x)), fused; ValueError on NaN/Inf."""

def clipped_grad(
    x: npt.NDArray[np.float32],
    type: int,
    imatrix: npt.NDArray[np.float32] | None,
    grad: npt.NDArray[np.float32],
    threads: int = 1,
) -> npt.NDArray[np.float32]:
    """Clipped STE: grad where x is representable by its quantized block (sqat/clip.h), else 0."""

def emulate_cuda_clipped_grad(
    x: npt.NDArray[np.float32],
    type: int,
    imatrix: npt.NDArray[np.float32] | None,
    grad: npt.NDArray[np.float32],
    grid: int = 0,
    block: int = 0,
) -> npt.NDArray[np.float32]:
    """Run the CUDA clipped-gradient kernel bodies over a grid on the host."""

def cuda_clipped_grad(
    type: int,
    x: int,
    nrows: int,
    n_per_row: int,
    imatrix: int,
    sigma2_scratch: int,
    grad: int,
    grad_out: int,
    stream: int,
) -> None:
    """Launch the clipped-gradient kernel on device pointers (integers)."""

def emulate_cuda_fake_quant(
    x: npt.NDArray[np.float32],
    type: int,
    imatrix: npt.NDArray[np.float32] | None = None,
    grid: int = 0,
    block: int = 0,
) -> npt.NDArray[np.float32]:
    """Run the CUDA fake-quant kernel bodies over a grid on the host."""

def emulate_cuda_quantize(
    x: npt.NDArray[np.float32],
    type: int,
    imatrix: npt.NDArray[np.float32] | None = None,
    grid: int = 0,
    block: int = 0,
) -> npt.NDArray[np.uint8]:
    """Run the CUDA quantize kernel bodies over a grid on the host (grid <= 0: the real launch shape)."""

def emulate_cuda_dequantize(
    data: npt.NDArray[np.uint8], type: int, n_per_row: int, grid: int = 0, block: int = 0
) -> npt.NDArray[np.float32]:
    """Run the CUDA dequantize kernel bodies over a grid on the host."""

def cpu_variant() -> str:
    """The instruction-set variant the CPU loops use now ("avx512", "avx2" or "scalar")."""

def cpu_variant_supported(name: str) -> bool:
    """Whether the variant is compiled in and runnable on this CPU."""

def set_cpu_variant(name: str) -> bool:
    """Use this variant from now on; False (no change) if it is not supported."""

def set_openmp_allowed(allowed: bool) -> None:
    """Allow (default) or forbid running the CPU loops on an OpenMP runtime's threads already loaded in the
    process (PyTorch's) instead of sqat's own pool."""

def openmp_available() -> bool:
    """Whether the CPU loops run on a loaded OpenMP runtime's threads now."""

def cuda_compiled() -> bool:
    """Whether this build contains the CUDA kernels."""

def cuda_device_count() -> int:
    """Usable CUDA devices (0 without driver or GPU)."""

def cuda_quantize(
    type: int, x: int, nrows: int, n_per_row: int, imatrix: int, sigma2_scratch: int, y: int, stream: int
) -> None:
    """Launch the quantize kernel on device pointers (integers)."""

def cuda_fake_quant(
    type: int, x: int, nrows: int, n_per_row: int, imatrix: int, sigma2_scratch: int, out: int, stream: int
) -> None:
    """Launch the fake-quant kernel on device pointers (integers)."""

def cuda_dequantize(type: int, y: int, nrows: int, n_per_row: int, x: int, stream: int) -> None:
    """Launch the dequantize kernel on device pointers (integers)."""
