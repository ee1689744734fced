"""Checks that a GGUF file (its container already proved sound by gguf_checks) holds a Llama model sqat reads.

Shared by `sqat quantize` (requantize.py) and the GGUF model import: architecture, the llama.*
hyper-parameters (typed, in range, consistent with the tensors before any table is built from them), tensor
names, shapes and types. Every refusal is an InputFileError naming the file and the key or tensor.
"""

from __future__ import annotations

from collections.abc import Collection

import gguf

from ..gguf_checks import CheckedGGUF, show
from ..recipes import LlamaShape

# Tensors of a Llama model: 9 per block, plus token_embd, output_norm and (untied) output.
_PER_BLOCK = 9


def llama_shape(g: CheckedGGUF) -> LlamaShape:
    """The LlamaShape of a Llama GGUF file, from typed and bounded llama.* metadata.

    Raises InputFileError: another architecture, a missing or mistyped key, values out of range or
    inconsistent (heads, key-value heads, embedding width), more blocks than the file has tensors for.
    """
    arch = g.string("general.architecture")
    if arch != "llama":
        raise g.error(
            "metadata general.architecture",
            f"expected 'llama' (the architecture sqat reads), found {show(arch)}",
        )
    n_layer = g.integer("llama.block_count")
    n_tensors = len(g.layout.tensors)
    # Bound the block count by the tensors present before anything of that size is built from it.
    if _PER_BLOCK * n_layer + 2 > n_tensors:
        raise g.error(
            "metadata llama.block_count",
            f"expected at most {max(n_tensors - 2, 0) // _PER_BLOCK} blocks (the file holds {n_tensors} "
            f"tensors, {_PER_BLOCK} per block plus 2), found {n_layer}",
        )
    n_embd = g.integer("llama.embedding_length")
    n_head = g.integer("llama.attention.head_count")
    n_head_kv = g.integer("llama.attention.head_count_kv", n_head)
    if n_head % n_head_kv:
        raise g.error(
            "metadata llama.attention.head_count_kv",
            f"expected a divisor of llama.attention.head_count ({n_head}), found {n_head_kv}",
        )
    head_dim = g.integer("llama.attention.key_length", None)
    if head_dim is not None and head_dim * n_head == n_embd:
        head_dim = None
    if head_dim is None and n_embd % n_head:
        raise g.error(
            "metadata llama.embedding_length",
            f"expected a multiple of llama.attention.head_count ({n_head}), found {n_embd}",
        )
    n_vocab = g.integer("llama.vocab_size", None)
    if n_vocab is None:
        tokens = g.layout.fields.get("tokenizer.ggml.tokens")
        if tokens is None or tokens.item_type != gguf.GGUFValueType.STRING or not tokens.count:
            raise g.error(
                "metadata llama.vocab_size", "expected this key or a tokenizer.ggml.tokens string array"
            )
        n_vocab = tokens.count
    return LlamaShape(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=g.integer("llama.feed_forward_length"),
        n_vocab=n_vocab,
        tied_embeddings="output.weight" not in g.tensors,
        head_dim=head_dim,
    )


def check_llama_tensors(g: CheckedGGUF, shape: LlamaShape, types: Collection[str], why: str) -> None:
    """Refuse unless the file's tensors are exactly those of a Llama of `shape`, each of its shape and of one
    of `types` (type names; `why` says what the command does with other types)."""
    expected = shape.tensor_shapes()
    for name in g.tensors:
        if name not in expected:
            raise g.error(
                f"tensor {show(name)}", "expected only the tensors of a Llama model, found this one"
            )
    for name, ne in expected.items():
        t = g.tensors.get(name)
        if t is None:
            raise g.error(
                f"tensor {name}", f"expected it in a Llama model of {shape.n_layer} blocks, found none"
            )
        found = tuple(int(d) for d in t.shape)
        if found != ne:
            raise g.error(f"tensor {name}", f"expected shape {ne} (ne0 first), found {found}")
        if t.tensor_type.name not in types:
            raise g.error(
                f"tensor {name}", f"expected type {', '.join(types)}, found {t.tensor_type.name}: {why}"
            )
