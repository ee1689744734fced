"""llama.cpp's own quantizer (llama_model_quantize from libllama, through llama-cpp-python) for tests,
and a minimal F32 GGUF of a random Llama model to feed it.

The GGUF written here carries only what libllama's loader needs to pick tensor types (architecture and
hyper-parameters, no tokenizer): it is a test input, not the package's exporter.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import numpy as np
from sqat_kernels.recipes import LlamaShape

_llama = None


def llama_lib():
    """The llama_cpp bindings module, with llama.cpp's log output silenced."""
    global _llama
    if _llama is None:
        import llama_cpp

        @ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
        def _quiet(level, text, user_data):  # noqa: ARG001 - signature fixed by llama.cpp
            return None

        llama_cpp.llama_log_set(_quiet, ctypes.c_void_p())
        llama_lib._keep = _quiet  # the callback must outlive every call into the library
        _llama = llama_cpp
    return _llama


def write_random_llama_f32(path: Path, shape: LlamaShape, seed: int = 0) -> dict[str, np.ndarray]:
    """Write an F32 GGUF of a random Llama model with `shape`; returns GGUF name -> array [ne1, ne0]."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(shape.n_layer)
    writer.add_context_length(256)
    writer.add_embedding_length(shape.n_embd)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(shape.n_embd_head)
    writer.add_vocab_size(shape.n_vocab)
    if shape.head_dim is not None:
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    tensors = {}
    for name, ne in shape.tensor_shapes().items():
        data = (0.02 * rng.standard_normal(tuple(reversed(ne)))).astype(np.float32)
        if len(ne) == 1:
            data = 1.0 + data
        tensors[name] = data
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def llama_model_quantize(
    src: Path,
    dst: Path,
    ftype: int,
    *,
    pure: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    imatrix: dict[str, np.ndarray] | None = None,
    tensor_type_overrides: list[tuple[str, str]] | tuple[tuple[str, str], ...] | None = None,
    nthread: int = 2,
) -> None:
    """Run llama.cpp's llama_model_quantize (the engine of the llama-quantize tool) from src to dst.

    tensor_type_overrides: (regex, type name) pairs, handed over as params.tt_overrides (the array the
    llama-quantize tool builds from its --tensor-type options; patterns are passed unchanged)."""
    llama = llama_lib()
    params = llama.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = ftype
    params.pure = pure
    if output_tensor_type is not None:
        params.output_tensor_type = int(gguf.GGMLQuantizationType[output_tensor_type])
    if token_embedding_type is not None:
        params.token_embedding_type = int(gguf.GGMLQuantizationType[token_embedding_type])
    keep = []
    if imatrix is not None:
        entries = (llama.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(imatrix.items()):
            arr = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(arr)
            entries[i].name = name.encode()
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(imatrix)].name = None
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama.llama_model_imatrix_data))
        keep.append(entries)
    if tensor_type_overrides:
        pairs = list(tensor_type_overrides)
        overrides = (llama.llama_model_tensor_override * (len(pairs) + 1))()
        for i, (pattern, qtype) in enumerate(pairs):
            overrides[i].pattern = pattern.encode()
            overrides[i].type = int(gguf.GGMLQuantizationType[qtype])
        overrides[len(pairs)].pattern = None  # the terminator llama.cpp stops at
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama.llama_model_tensor_override))
        keep.append(overrides)
    rc = llama.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed with status {rc} for {src} -> {dst}")


def gguf_tensor_types(path: Path) -> dict[str, str]:
    """GGUF tensor name -> type name, as stored in the file."""
    reader = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in reader.tensors}
