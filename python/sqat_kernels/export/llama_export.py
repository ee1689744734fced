"""export_gguf: a Llama model (HF directory, transformers model, or a QAT-prepared one) to a GGUF file whose
bytes equal those of llama.cpp's pipeline (convert_hf_to_gguf to F32, then llama_model_quantize)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..formats import get_format
from ..quant import quantize
from ..recipes import LlamaShape, TensorTypeOverrides, check_imatrix_coverage, file_type, recipe_table
from .hf_weights import SafetensorsCheckpoint
from .imatrix import check_imatrix_matches
from .llama_metadata import read_vocab, write_llama_metadata
from .tensors import gguf_name_map, to_gguf_layout
from .writer import write_gguf

FLOAT_RECIPES = ("F32", "F16", "BF16")


def _load(model_or_dir: Any, tokenizer_dir: str | os.PathLike[str] | None):
    """(config, tensor source, tokenizer dir): a directory is read lazily from its safetensors files (no
    torch); a model object gives its state dict."""
    if isinstance(model_or_dir, (str, os.PathLike)):
        model_dir = Path(model_or_dir)
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
        config = json.loads(config_path.read_text())
        LlamaShape.from_hf_config(config)  # architecture check before touching any weights
        return config, SafetensorsCheckpoint(model_dir), tokenizer_dir or model_dir
    if tokenizer_dir is None:
        raise ValueError("exporting a model object needs tokenizer_dir (the tokenizer files' directory)")
    if not hasattr(model_or_dir, "config"):
        raise ValueError("export_gguf expects a Hugging Face model directory or a LlamaForCausalLM")
    return model_or_dir.config, model_or_dir, tokenizer_dir


class _StateDict:
    """A loaded model's parameters as float32 arrays, with the checkpoint reader's interface."""

    def __init__(self, model: Any) -> None:
        self._state = {k: v for k, v in model.state_dict().items() if not k.endswith("imatrix")}
        self.names = list(self._state)

    def get(self, name: str) -> np.ndarray:
        return self._state[name].detach().to("cpu").float().numpy()


def _qat_settings(model: Any) -> dict[str, tuple[str, str, Any]]:
    """HF weight name -> (recipe type, active type, imatrix) of every layer that says what it trained
    against: a module with a `trained_as` attribute of those three (sqat's QAT layers have one). Read as
    data, so export needs nothing of nn."""
    settings = {}
    for name, module in model.named_modules():
        trained_as = getattr(module, "trained_as", None)
        if trained_as is not None:
            settings[f"{name}.weight"] = tuple(trained_as)
    return settings


def export_gguf(
    model_or_dir: Any,
    path: str | os.PathLike[str],
    ftype: str = "Q4_K_M",
    *,
    imatrix: Mapping[str, np.ndarray] | None = None,
    pure: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    tensor_type_overrides: TensorTypeOverrides | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> None:
    """Write a Llama model as a GGUF file of recipe `ftype`, byte-identical to llama.cpp's own pipeline.

    For F32/F16/BF16 the file is laid out as convert_hf_to_gguf writes it; for a quantized recipe it is
    what llama_model_quantize writes from our F32 file: same metadata (general.quantization_version and
    general.file_type last), tensors in llama.cpp's loader order, each tensor of the type llama-quantize
    chooses (recipes.py), packed by sqat's native kernels (byte-identical to ggml's).

    Args:
        model_or_dir: a Hugging Face LlamaForCausalLM directory (config.json, weights, tokenizer files), or
            a LlamaForCausalLM object, possibly prepared for QAT (then each QAT layer's latent weight is
            quantized once with the type and imatrix its forward used: the file decodes to the QAT weights).
        path: output file; written atomically (nothing is left at `path` on error; an old file stays intact).
        imatrix: GGUF tensor name -> float32 importance weights [ne0], as llama-quantize uses them.
        pure, output_tensor_type, token_embedding_type: llama-quantize's options of the same names.
        tensor_type_overrides: llama-quantize's `--tensor-type` as (regex, type) pairs, first match wins
            (see recipes.recipe_table); any type sqat supports, NVFP4 and MXFP4 included.
        tokenizer_dir: directory of tokenizer.json / tokenizer_config.json (default: the model directory).
        threads: CPU threads for packing.

    Raises:
        ValueError: not a Llama model, unknown recipe, non-finite weights (names the tensor), an imatrix
            entry naming no tensor or of another length than the tensor's rows (an InputFileError naming
            it, raised before the file is begun), a QAT model whose layers were prepared for another
            recipe or are not at their recipe type yet.
        FileNotFoundError: missing config or tokenizer files. OSError: the file could not be written.
    """
    config, source, tok_dir = _load(model_or_dir, tokenizer_dir)
    model = None if isinstance(source, SafetensorsCheckpoint) else source
    if model is not None:
        source = _StateDict(model)
    shape = LlamaShape.from_hf_config(config)
    recipe = ftype.upper()
    table = recipe_table(
        shape,
        recipe,
        pure=pure,
        imatrix=imatrix is not None,
        output_tensor_type=output_tensor_type,
        token_embedding_type=token_embedding_type,
        tensor_type_overrides=tensor_type_overrides,
    )
    types = {c.name: c.qtype for c in table}
    vocab = read_vocab(tok_dir, shape.n_vocab)
    if len(vocab.tokens) != shape.n_vocab:
        raise ValueError(f"tokenizer has {len(vocab.tokens)} ids, config.vocab_size is {shape.n_vocab}")
    qat = _qat_settings(model) if model is not None else {}
    imatrix = dict(imatrix or {})
    unknown = set(imatrix) - set(types)
    if unknown:
        raise ValueError(f"imatrix names tensors this model does not have: {sorted(unknown)[:5]}")

    hf_of = gguf_name_map(source.names, shape)
    if set(hf_of) != set(types):
        raise ValueError(
            f"model tensors {sorted(set(hf_of) ^ set(types))[:5]} do not match a Llama model of {shape}"
        )
    ne_of = shape.tensor_shapes()
    check_imatrix_matches(imatrix, {name: ne_of[name][0] for name in types}, "imatrix")
    for gguf_name, hf_name in hf_of.items():
        setting = qat.get(hf_name)
        if setting is None:
            continue
        recipe_type, active, qat_imatrix = setting
        if recipe_type != types[gguf_name]:
            raise ValueError(
                f"{hf_name} was prepared for {recipe_type}, but recipe {recipe} gives "
                f"{gguf_name} {types[gguf_name]}: export with the recipe used in prepare()"
            )
        if active != recipe_type:
            raise ValueError(
                f"{hf_name} is at rung {active}, not its recipe type {recipe_type}: finish the "
                "schedule before exporting, or the file would not hold what training saw"
            )
        if qat_imatrix is not None:
            given = imatrix.get(gguf_name)
            im = qat_imatrix.detach().cpu().numpy()
            if given is not None and not np.array_equal(np.asarray(given, np.float32), im):
                raise ValueError(f"{gguf_name}: the imatrix given differs from the one the QAT layer used")
            imatrix[gguf_name] = im
    check_imatrix_coverage(table, imatrix)

    quantized = recipe not in FLOAT_RECIPES
    order = [c.name for c in table] if quantized else list(hf_of)
    entries = []
    for name in order:
        fmt = get_format(types[name])
        ne = ne_of[name]
        shape_np = tuple(reversed(ne))
        n = int(np.prod(ne))
        nbytes = n * 4 if fmt.name == "F32" else fmt.row_bytes(ne[0]) * (n // ne[0])
        entries.append((name, shape_np, fmt.ggml_type, nbytes))
    np_shapes = {e[0]: e[1] for e in entries}

    def produce(name: str) -> np.ndarray:
        data = to_gguf_layout(name, source.get(hf_of[name]), shape)
        if data.shape != np_shapes[name]:
            raise ValueError(f"{hf_of[name]} has shape {data.shape}, the config implies {np_shapes[name]}")
        if not np.isfinite(data).all():
            row, col = np.argwhere(~np.isfinite(data.reshape(-1, data.shape[-1])))[0]
            raise ValueError(
                f"{name} holds a non-finite value at row {row}, column {col}; refusing to export"
            )
        if types[name] == "F32":
            return data
        im = imatrix.get(name)
        return quantize(
            data.reshape(-1, data.shape[-1]),
            types[name],
            None if im is None else np.asarray(im, np.float32),
            threads=threads,
        )

    ft = file_type(recipe, pure=pure)
    name = getattr(config, "_name_or_path", None) or (
        config.get("_name_or_path") if isinstance(config, dict) else None
    )
    model_name = Path(name).name if name else "Model"
    write_gguf(
        path,
        lambda w: write_llama_metadata(w, config, vocab, ft, name=model_name, quantized=quantized),
        entries,
        produce,
        progress=progress,
    )
