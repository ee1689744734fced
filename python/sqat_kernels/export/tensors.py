"""A Llama model's weights as GGUF tensors: names, the q/k row permutation, order, and packed data."""

from __future__ import annotations

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


def gguf_name_map(hf_names: list[str], shape: LlamaShape) -> dict[str, str]:
    """GGUF name -> HF name for the tensors convert_hf_to_gguf writes, in `hf_names` order.

    Rotary inv_freq buffers are dropped; so is a tied lm_head (the converter writes no output.weight for a
    checkpoint without lm_head, and llama.cpp reuses token_embd).
    """
    out: dict[str, str] = {}
    for hf_name in hf_names:
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and shape.tied_embeddings):
            continue
        out[hf_to_gguf_name(hf_name, shape.n_layer)] = hf_name
    return out


def to_gguf_layout(gguf_name: str, data: np.ndarray, shape: LlamaShape) -> np.ndarray:
    """An HF tensor's values in GGUF row order (q/k permuted), float32, C-contiguous."""
    if ".attn_q." in gguf_name:
        data = permute_qk(data, shape.n_head)
    elif ".attn_k." in gguf_name:
        data = permute_qk(data, shape.n_head_kv)
    return np.ascontiguousarray(data, dtype=np.float32)
