"""GGUF -> GGUF requantization of a Llama model, byte-identical to llama.cpp's llama_model_quantize."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np

from ..formats import get_format
from ..gguf_checks import CheckedGGUF
from ..quant import quantize
from ..recipes import TensorTypeOverrides, check_imatrix_coverage, file_type, recipe_table
from .imatrix import check_imatrix_matches, read_imatrix
from .llama_gguf_checks import check_llama_tensors, llama_shape
from .writer import write_gguf

_MOVED_LAST = ("general.quantization_version", "general.file_type")
_DROPPED = ("split.no", "split.count", "split.tensors.count")
_SOURCE_TYPES = ("F32", "F16", "BF16")


def _field_value(field: gguf.ReaderField):
    """(value, type, sub_type) of a metadata field, strings kept as raw bytes (no re-encoding)."""
    main = field.types[0]
    if main == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i].tobytes()) for i in field.data], main, sub
        return [v for i in field.data for v in field.parts[i].tolist()], main, sub
    if main == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1].tobytes()), main, None
    return field.parts[-1].tolist()[0], main, None


def _as_f32(t: gguf.ReaderTensor) -> np.ndarray:
    rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
    ne0 = int(t.shape[0])
    if t.tensor_type == gguf.GGMLQuantizationType.F32:
        return np.asarray(t.data, dtype=np.float32).reshape(rows, ne0)
    if t.tensor_type == gguf.GGMLQuantizationType.F16:
        return np.asarray(t.data).view(np.float16).astype(np.float32).reshape(rows, ne0)
    if t.tensor_type == gguf.GGMLQuantizationType.BF16:
        bits = np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(rows, ne0)
    raise ValueError(
        f"{t.name} is {t.tensor_type.name}: requantizing already-quantized tensors is not supported "
        "(start from an F32, F16 or BF16 file)"
    )


def requantize_gguf(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    ftype: str,
    *,
    imatrix: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
    pure: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    tensor_type_overrides: TensorTypeOverrides | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> None:
    """Quantize a Llama GGUF file (F32, F16 or BF16 tensors) to recipe `ftype`, as llama_model_quantize does.

    Metadata is copied in order, split keys dropped, general.quantization_version and general.file_type set
    last; tensors go in llama.cpp's loader order with the types recipes.py gives them (a tensor already of
    its target type is copied verbatim; F16/BF16 sources are widened exactly to F32 first). imatrix: a file
    (GGUF or legacy .dat, see read_imatrix) or a dict GGUF tensor name -> float32 [ne0].
    tensor_type_overrides: llama-quantize's `--tensor-type` (regex, type) pairs. Atomic output.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if in_path.resolve() == out_path.resolve():
        raise ValueError("input and output are the same file")
    # Everything is checked before the output is opened: the container, the model, the recipe, the imatrix.
    g = CheckedGGUF(in_path)
    reader, tensors = g.reader, g.tensors
    shape = llama_shape(g)
    check_llama_tensors(
        g,
        shape,
        _SOURCE_TYPES,
        "requantizing already-quantized tensors is not supported (start from an F32, F16 or BF16 file)",
    )
    if isinstance(imatrix, (str, os.PathLike)):
        imatrix_source = str(imatrix)
        imatrix = read_imatrix(imatrix)
    else:
        imatrix_source = "imatrix"
    imatrix = dict(imatrix or {})
    check_imatrix_matches(imatrix, {n: ne[0] for n, ne in shape.tensor_shapes().items()}, imatrix_source)
    recipe = ftype.upper()
    table = recipe_table(
        shape,
        recipe,
        pure=pure,
        imatrix=bool(imatrix),
        output_tensor_type=output_tensor_type,
        token_embedding_type=token_embedding_type,
        tensor_type_overrides=tensor_type_overrides,
    )
    check_imatrix_coverage(table, imatrix)

    entries = []
    for c in table:
        t = tensors[c.name]
        fmt = get_format(c.qtype)
        ne = [int(d) for d in t.shape]
        rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
        np_shape = tuple(reversed(ne))
        nbytes = rows * ne[0] * 4 if fmt.name == "F32" else rows * fmt.row_bytes(ne[0])
        entries.append((c.name, np_shape, fmt.ggml_type, nbytes))
    types = {c.name: c.qtype for c in table}

    def produce(name: str) -> np.ndarray:
        t = tensors[name]
        # Decoded (exactly) before any copy, so that NaN/Inf is refused whatever the target type.
        x = _as_f32(t)
        g.check_finite(name, x)
        if t.tensor_type.name == types[name]:
            return (
                np.asarray(t.data).reshape(-1).view(np.uint8)
                if types[name] != "F32"
                else np.asarray(t.data, dtype=np.float32)
            )
        if types[name] == "F32":
            return x
        im = imatrix.get(name)
        return quantize(x, types[name], None if im is None else np.asarray(im, np.float32), threads=threads)

    def setup(writer: gguf.GGUFWriter) -> None:
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture" or key in _MOVED_LAST + _DROPPED:
                continue
            value, vtype, sub = _field_value(field)
            writer.add_key_value(key, value, vtype, sub_type=sub)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_file_type(file_type(recipe, pure=pure))

    write_gguf(out_path, setup, entries, produce, progress=progress)
