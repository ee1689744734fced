"""``sqat::fake_quant``: the weight llama.cpp will dequantize, computed in one fused pass per block.

Forward: ``dequantize(quantize(w))`` with the packed bytes kept in registers (native CPU loops or CUDA
kernels).  Backward: straight-through (the gradient passes unchanged).  Registered with
``torch.library.custom_op`` plus a fake (meta) implementation, so it works under ``torch.compile``.
"""

from __future__ import annotations

import math

import torch

from ..backends.finite import first_nonfinite
from ..backends.host import borrowed_numpy
from ..backends.native import _C, cuda_compiled
from ..formats import QuantFormat, get_format

#: Straight-through estimators: "identity" passes the gradient unchanged; "clipped" zeroes it where the weight
#: lies outside the range its quantized block can represent (beyond half a code step past the extreme codes,
#: i.e. where the format's clamp, not rounding, picks the code; see csrc/include/sqat/clip.h).  The mask is
#: recomputed in backward from the weight autograd already holds: nothing per element is stored.
STE_VARIANTS: tuple[str, ...] = ("identity", "clipped")

#: Kernel families: "auto" = native C++ on CPU tensors, native CUDA on CUDA tensors; "triton" = the Triton
#: kernels (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1); "native" = never Triton.
BACKENDS: tuple[str, ...] = ("auto", "native", "triton")

# llama-quantize's replacement type when a row length does not split into the chosen type's blocks.
_LLAMA_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL",
                   "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0"}


def _row_length_error(fmt: QuantFormat, n: int) -> ValueError:
    fallback = _LLAMA_FALLBACK.get(fmt.name)
    hint = ""
    if fmt.name == "NVFP4":
        # llama-quantize's tensor_type_fallback has no entry for this 64-value type: it raises instead.
        hint = "; llama-quantize has no fallback for NVFP4 and refuses such a tensor"
    elif fallback is not None and n % get_format(fallback).block_size == 0:
        hint = f"; llama-quantize would store such a tensor as {fallback}"
    elif n % 32 != 0:
        hint = "; llama-quantize would store such a tensor as F16"
    return ValueError(
        f"{fmt.name} packs blocks of {fmt.block_size} values along the last dimension; "
        f"a row length of {n} is not a multiple of {fmt.block_size}{hint}"
    )


def _nonfinite_error(fmt: QuantFormat, row: int, col: int) -> ValueError:
    return ValueError(
        f"cannot fake-quantize to {fmt.name}: non-finite weight at row {row}, column {col} "
        "(did training diverge?)"
    )


@torch.library.custom_op("sqat::fake_quant", mutates_args=())
def _fake_quant_op(
    w: torch.Tensor, qtype: str, imatrix: torch.Tensor | None, ste: str, backend: str
) -> torch.Tensor:
    fmt = get_format(qtype)
    n = w.shape[-1]
    rows = math.prod(w.shape[:-1])
    x2d = w.detach().reshape(rows, n).to(torch.float32).contiguous()
    if backend == "triton":
        from ..backends import triton as triton_kernels

        bad = first_nonfinite(x2d)
        if bad is not None:
            raise _nonfinite_error(fmt, *bad)
        im = None if imatrix is None else imatrix.to(device=w.device, dtype=torch.float32).contiguous()
        return triton_kernels.fake_quant(x2d, fmt, im).reshape(w.shape)
    if w.is_cuda:
        from ..backends import cuda

        bad = first_nonfinite(x2d)
        if bad is not None:
            raise _nonfinite_error(fmt, *bad)
        return cuda.fake_quant(x2d, fmt, imatrix).reshape(w.shape)
    im = None if imatrix is None else imatrix.detach().to("cpu", torch.float32).contiguous().numpy()
    try:
        out = _C.fake_quant(borrowed_numpy(x2d), fmt.type_id, im, torch.get_num_threads())
    except ValueError as e:
        raise ValueError(f"cannot fake-quantize to {fmt.name}: {e}") from None
    return torch.from_numpy(out).reshape(w.shape)


@_fake_quant_op.register_fake
def _(w: torch.Tensor, qtype: str, imatrix: torch.Tensor | None, ste: str, backend: str) -> torch.Tensor:
    return torch.empty(w.shape, dtype=torch.float32, device=w.device)


@torch.library.custom_op("sqat::clipped_grad", mutates_args=())
def _clipped_grad_op(
    w: torch.Tensor, grad: torch.Tensor, qtype: str, imatrix: torch.Tensor | None
) -> torch.Tensor:
    fmt = get_format(qtype)
    n = w.shape[-1]
    rows = math.prod(w.shape[:-1])
    x2d = w.detach().reshape(rows, n).to(torch.float32).contiguous()
    g2d = grad.reshape(rows, n).to(torch.float32).contiguous()
    if w.is_cuda:
        from ..backends import cuda

        return cuda.clipped_grad(x2d, fmt, imatrix, g2d).reshape(w.shape)
    im = None if imatrix is None else imatrix.detach().to("cpu", torch.float32).contiguous().numpy()
    out = _C.clipped_grad(borrowed_numpy(x2d), fmt.type_id, im, borrowed_numpy(g2d), torch.get_num_threads())
    return torch.from_numpy(out).reshape(w.shape)


@_clipped_grad_op.register_fake
def _(w: torch.Tensor, grad: torch.Tensor, qtype: str, imatrix: torch.Tensor | None) -> torch.Tensor:
    return torch.empty(w.shape, dtype=torch.float32, device=w.device)


def _setup_context(ctx: object, inputs: tuple, output: torch.Tensor) -> None:
    w, qtype, imatrix, ste, _backend = inputs
    ctx.w_dtype, ctx.qtype, ctx.ste = w.dtype, qtype, ste  # type: ignore[attr-defined]
    if ste == "clipped":
        # The weight itself (already held by autograd as a leaf/parameter): no new per-element storage.
        ctx.save_for_backward(w, imatrix)  # type: ignore[attr-defined]


def _backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
    if ctx.ste == "clipped":  # type: ignore[attr-defined]
        w, imatrix = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = _clipped_grad_op(w, grad, ctx.qtype, imatrix)  # type: ignore[attr-defined]
    # Identity: d fake_quant(w) / dw := 1.
    return grad.to(ctx.w_dtype), None, None, None, None  # type: ignore[attr-defined]


_fake_quant_op.register_autograd(_backward, setup_context=_setup_context)


def fake_quant(
    w: torch.Tensor,
    qtype: str | QuantFormat,
    imatrix: torch.Tensor | None = None,
    ste: str = "identity",
    backend: str = "auto",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fake-quantize ``w`` to exactly the values llama.cpp decodes from its GGUF ``qtype`` quantization.

    Args:
        w: weights ``[..., n]`` (float32, float16 or bfloat16; CPU, or CUDA with a CUDA build); blocks run
            along the last dimension (GGUF ne0, a linear layer's input features).  fp16/bf16 are widened
            exactly to fp32 first.
        qtype: GGUF type name (``"Q4_K"``, ``"Q8_0"``, ``"F16"``, ... see ``SUPPORTED_TYPES``).
        imatrix: optional importance weights ``[n]`` (float), used where llama.cpp uses them.
        ste: backward rule: ``"identity"`` passes the gradient unchanged; ``"clipped"`` zeroes it where the
            weight lies outside what its block can represent (see ``STE_VARIANTS``).
        backend: ``"auto"`` (native C++ for CPU tensors, native CUDA kernels for CUDA tensors), ``"native"``,
            or ``"triton"`` (the Triton kernels; CPU tensors only under ``TRITON_INTERPRET=1``).
        out_dtype: dtype of the result.  ``None`` (default) gives float32, which holds every dequantized
            value exactly.  Asking for ``w.dtype`` (bf16/fp16) rounds each value once, to nearest even; the
            result is then no longer guaranteed to be llama.cpp's value (F16-representable formats aside).

    Returns:
        tensor of ``w``'s shape and device; in float32 it is bit-identical to
        ``dequantize(quantize(w, qtype, imatrix), qtype, w.shape)``.

    Raises:
        ValueError: unknown type or STE, a row length that does not split into blocks (names llama-quantize's
            fallback type), NaN/Inf in ``w`` or the imatrix, imatrix of the wrong length.
        TypeError: ``w`` is not a float32/float16/bfloat16 tensor, or is 0-d.
    """
    fmt = get_format(qtype)
    if not isinstance(w, torch.Tensor) or w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        got = w.dtype if isinstance(w, torch.Tensor) else type(w).__name__
        raise TypeError(f"fake_quant expects a float32, float16 or bfloat16 tensor, got {got}")
    if w.dim() == 0:
        raise TypeError("fake_quant expects a tensor with at least one dimension")
    if ste not in STE_VARIANTS:
        raise ValueError(f"unsupported ste {ste!r}; supported: {', '.join(STE_VARIANTS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unsupported backend {backend!r}; supported: {', '.join(BACKENDS)}")
    n = w.shape[-1]
    if n % fmt.block_size != 0:
        raise _row_length_error(fmt, n)
    if w.is_cuda and backend != "triton" and not cuda_compiled():
        raise RuntimeError("sqat_kernels was built without CUDA kernels; cannot fake-quantize a CUDA tensor")
    if imatrix is not None:
        if not isinstance(imatrix, torch.Tensor):
            imatrix = torch.as_tensor(imatrix)
        if imatrix.dim() != 1 or imatrix.shape[0] != n:
            raise ValueError(
                f"imatrix must have shape [{n}] (one weight per column), got {tuple(imatrix.shape)}"
            )
        if not imatrix.is_floating_point():
            raise TypeError(f"imatrix must be floating point, got {imatrix.dtype}")
        if not bool(torch.isfinite(imatrix).all()):
            raise ValueError("imatrix holds a non-finite value")
        imatrix = imatrix.to(device=w.device, dtype=torch.float32)
    out = _fake_quant_op(w, fmt.name, imatrix, ste, backend)
    return out if out_dtype is None or out_dtype == torch.float32 else out.to(out_dtype)
