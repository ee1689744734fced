"""Importance matrices from a model's own activations, in the form llama-quantize uses them.

For every Linear whose weight becomes a GGUF tensor, the mean over all tokens of each input column's
squared activation: the quantity llama.cpp's llama-imatrix accumulates (sum of squares divided by the
count), keyed by GGUF tensor name, ready for `prepare(imatrix=...)`, `export_gguf(imatrix=...)` and
`quantize(..., imatrix)`. Embedding tables get none, as in llama.cpp (their lookup is not a matmul); a
lm_head tied to the embedding gets none either (there is no output.weight in the file).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ..recipes import LlamaShape, hf_to_gguf_name


def collect_imatrix(
    model: nn.Module, batches: Iterable[torch.Tensor], *, progress: bool = True
) -> dict[str, np.ndarray]:
    """Run `model` on `batches` (int64 [batch, seq] token ids) and return GGUF name -> float32 [in_features].

    Sums are accumulated in float64; the model runs under no_grad in eval mode (its mode is restored).
    """
    shape = LlamaShape.from_hf_config(model.config)
    tied_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook_for(gguf_name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            sums[gguf_name] = sums.get(gguf_name, 0) + (x * x).sum(dim=0)
            counts[gguf_name] = counts.get(gguf_name, 0) + x.shape[0]

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in tied_ids:
            gguf_name = hf_to_gguf_name(f"{name}.weight", shape.n_layer)
            handles.append(module.register_forward_pre_hook(hook_for(gguf_name)))
    was_training = model.training
    model.eval()
    try:
        batches = list(batches)
        if not batches:
            raise ValueError("collect_imatrix needs at least one batch")
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="imatrix", unit="batch")
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: (sums[name] / counts[name]).to(torch.float32).numpy() for name in sums}
