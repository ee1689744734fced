"""A Llama model's weights as GGUF tensors: names, the q/k row permutation, order, and packed data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..recipes import LlamaShape, hf_to_gguf_name


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q_proj / k_proj weight (or bias) from HF's rotate-half layout to llama.cpp's
    interleaved pairs, as convert_hf_to_gguf does: per head, rows [0, hd/2, 1, hd/2+1, ...].

    w: [n_heads * head_dim, ...]; a pure row permutation (exact).
    """
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"cannot split {rows} rows into {n_heads} heads of an even size")
    head = rows // n_heads
    return w.reshape(n_heads, 2, head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of `permute_qk` (GGUF row order back to HF's)."""
    rows = w.shape[0]
    head = rows // n_heads
    return w.reshape(n_heads, head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class SourceTensor:
    """One HF parameter headed for the GGUF: its HF name, GGUF name and float32 values in GGUF row order."""

    hf_name: str
    gguf_name: str
    data: np.ndarray  # float32 [ne1, ne0] or [ne0]


def gguf_tensors(state: dict[str, np.ndarray], shape: LlamaShape) -> Iterator[SourceTensor]:
    """The GGUF tensors of a Llama state dict, in the state dict's order (the converter's file order).

    state: HF parameter name -> float32 array. A tied lm_head (same values as the embedding and no
    separate output in the recipe) is not written, as convert_hf_to_gguf writes no output.weight for a
    checkpoint without lm_head.
    """
    for hf_name, data in state.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if hf_name == "lm_head.weight" and shape.tied_embeddings:
            continue
        gguf_name = hf_to_gguf_name(hf_name, shape.n_layer)
        if ".attn_q." in gguf_name:
            data = permute_qk(data, shape.n_head)
        elif ".attn_k." in gguf_name:
            data = permute_qk(data, shape.n_head_kv)
        yield SourceTensor(hf_name, gguf_name, np.ascontiguousarray(data, dtype=np.float32))
