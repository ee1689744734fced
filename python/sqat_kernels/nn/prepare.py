"""prepare / convert: swap a Llama model's Linear and Embedding layers for QAT layers and back.

Each layer gets the GGUF type llama-quantize will give its tensor under the recipe (recipes.py), so the
fake quantization in training is the quantization of the exported file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..recipes import LlamaShape, TensorTypeOverrides, check_imatrix_coverage, hf_to_gguf_name, recipe_table
from ..schedule import BitWidthSchedule
from .modules import QATConfig, QATEmbedding, QATLinear


def _set_child(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def qat_modules(model: nn.Module) -> Iterator[tuple[str, QATLinear | QATEmbedding]]:
    """(name, module) of every QAT layer of `model`, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, (QATLinear, QATEmbedding)):
            yield name, module


def prepare(
    model: nn.Module,
    recipe: str = "Q4_K_M",
    *,
    pure: bool = False,
    schedule: BitWidthSchedule | None = None,
    imatrix: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    ste: str = "identity",
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    tensor_type_overrides: TensorTypeOverrides | None = None,
) -> nn.Module:
    """Make a Hugging Face LlamaForCausalLM train against its GGUF recipe (in place; returns `model`).

    Every nn.Linear and nn.Embedding whose weight becomes a GGUF tensor is replaced (by setattr on its
    parent, keeping the Parameters) with a QATLinear / QATEmbedding configured with the type
    `recipes.tensor_types` gives that tensor. With tied embeddings, lm_head and embed_tokens share one
    fake-quantized weight per forward, of the type llama-quantize gives token_embd.weight (the output
    rule).

    Args:
        recipe, pure, output_tensor_type, token_embedding_type: as for llama-quantize (see recipes.py).
        tensor_type_overrides: llama-quantize's `--tensor-type` (regex, type) pairs, first match wins;
            give export_gguf the same ones.
        schedule: the bit-width schedule every QAT layer follows (None: the recipe type from the start).
        imatrix: GGUF tensor name -> importance weights [ne0] (float32), as llama-quantize reads them.
        ste: "identity" or "clipped" straight-through backward.
    """
    if any(True for _ in qat_modules(model)):
        raise ValueError("model already holds QAT layers (prepare was called before)")
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("prepare expects a Hugging Face LlamaForCausalLM (it has no .config)")
    shape = LlamaShape.from_hf_config(config)
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
    imatrix = dict(imatrix or {})
    unknown = set(imatrix) - set(types)
    if unknown:
        raise ValueError(f"imatrix names tensors this model does not have: {sorted(unknown)[:5]}")
    # Training against a table the exporter could not write (a Q2_K_S tensor without weights) is refused now.
    check_imatrix_coverage(table, imatrix)

    def config_for(gguf_name: str) -> QATConfig:
        im = imatrix.get(gguf_name)
        return QATConfig(types[gguf_name], None if im is None else torch.as_tensor(np.asarray(im)), ste)

    targets = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Embedding)]
    embeddings: dict[int, QATEmbedding] = {}
    for name, module in targets:
        if isinstance(module, nn.Embedding):
            gguf_name = hf_to_gguf_name(f"{name}.weight", shape.n_layer)
            qat = QATEmbedding.from_embedding(module, config_for(gguf_name), schedule)
            embeddings[id(module.weight)] = qat
            _set_child(model, name, qat)
    for name, module in targets:
        if not isinstance(module, nn.Linear):
            continue
        gguf_name = hf_to_gguf_name(f"{name}.weight", shape.n_layer)
        tied = embeddings.get(id(module.weight))
        if tied is not None:
            # lm_head sharing the embedding: no output.weight in the GGUF; token_embd's type applies.
            qat = QATLinear.from_linear(module, tied.config, schedule, tied_to=tied)
        else:
            if gguf_name not in types:
                raise ValueError(
                    f"{name}.weight maps to {gguf_name}, which the recipe table lacks "
                    "(config.tie_word_embeddings disagrees with the model's weights?)"
                )
            qat = QATLinear.from_linear(module, config_for(gguf_name), schedule)
        _set_child(model, name, qat)
    model._sqat_prefetch_hook = model.register_forward_pre_hook(_prefetch_fake_weights)
    return model


def _prefetch_fake_weights(model: nn.Module, args: tuple) -> None:
    # Training forwards only: their fake-quantized weights are kept for backward anyway, so computing
    # them all up front costs no memory; an inference forward keeps freeing each after its matmul.
    if torch.is_grad_enabled():
        for _, module in qat_modules(model):
            module.prefetch()


def convert(model: nn.Module) -> nn.Module:
    """Replace every QAT layer by a plain one holding its fake-quantized weight (in place; returns `model`).

    The weights equal, bit for bit, what a forward at the current rung uses (the last forward's, if no
    optimiser step happened since); a tied lm_head and embedding keep sharing one Parameter.
    """
    hook = getattr(model, "_sqat_prefetch_hook", None)
    if hook is not None:
        hook.remove()
        del model._sqat_prefetch_hook
    converted: dict[int, nn.Parameter] = {}
    for name, module in list(qat_modules(model)):
        if isinstance(module, QATEmbedding):
            plain = module.to_embedding()
        else:
            plain = module.to_linear()
        key = id(module.weight)
        if key in converted:
            plain.weight = converted[key]
        else:
            converted[key] = plain.weight
        _set_child(model, name, plain)
    return model
