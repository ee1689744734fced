"""GGUF key/value metadata of a Llama model, in the order convert_hf_to_gguf.py writes it.

The values come from the Hugging Face config and tokenizer directory; the tokenizer keys follow the
converter's GPT-2 BPE path (SmolLM, SmolLM2) and use gguf-py's own SpecialVocab for merges, special ids,
add-token flags and the chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

# Tokenizer pre-processing types llama.cpp knows, keyed by a vocabulary fingerprint we can check without
# running the converter's hash: (vocab size, token 0). Unknown tokenizers get "gpt-2" unless told.
_KNOWN_PRE = {(49152, "<|endoftext|>"): "smollm"}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class LlamaVocab:
    """The GGUF vocabulary: tokens and types per id, the pre-tokenizer name, the tokenizer directory."""

    tokens: list[str]
    token_types: list[int]
    pre: str
    tokenizer_dir: Path


def _does_token_look_special(token: str) -> bool:
    # The converter's heuristic for added tokens that should be CONTROL even if not flagged special.
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")


def read_vocab(tokenizer_dir: str | Path, vocab_size: int, pre: str | None = None) -> LlamaVocab:
    """Tokens and token types of a byte-level BPE tokenizer (tokenizer.json), as the converter lists them.

    vocab_size: the model's config.vocab_size; ids the tokenizer lacks become "[PAD{id}]" (UNUSED).
    """
    tokenizer_dir = Path(tokenizer_dir)
    missing = [f for f in TOKENIZER_FILES if not (tokenizer_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"tokenizer files missing in {tokenizer_dir}: {', '.join(missing)}")
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(
            f"only byte-level BPE tokenizers (GPT-2 style) are supported, got {model.get('type')!r}"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    for tid, t in added.items():
        vocab[t["content"]] = tid
    reverse = {i: tok for tok, i in vocab.items()}
    n = max(vocab_size, max(reverse) + 1)
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif i in added:
            tok = added[i]["content"]
            tokens.append(tok)
            special = added[i].get("special", False) or _does_token_look_special(tok)
            types.append(int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(reverse[i])
            types.append(int(gguf.TokenType.NORMAL))
    if pre is None:
        pre = _KNOWN_PRE.get((n, tokens[0]), "gpt-2")
    return LlamaVocab(tokens, types, pre, tokenizer_dir)


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def write_llama_metadata(
    writer: gguf.GGUFWriter,
    config: Any,
    vocab: LlamaVocab,
    file_type: int,
    *,
    name: str | None = None,
    quantized: bool = False,
) -> None:
    """Add the Llama model's keys to `writer` (after general.architecture, which the writer adds itself).

    file_type: general.file_type (llama_ftype). quantized: write general.quantization_version and
    general.file_type last, where llama-quantize leaves them (it re-sets both keys, which moves them to
    the end of the list); otherwise they go where the converter writes them.
    """
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or "Model")
    n_head = _get(config, "num_attention_heads")
    n_embd = _get(config, "hidden_size")
    writer.add_block_count(_get(config, "num_hidden_layers"))
    writer.add_context_length(_get(config, "max_position_embeddings"))
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(_get(config, "intermediate_size"))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(_get(config, "num_key_value_heads") or n_head)
    rope = _get(config, "rope_parameters") or _get(config, "rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"rope scaling {rope!r} is not supported by the exporter yet")
    writer.add_rope_freq_base(float(rope.get("rope_theta", _get(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(_get(config, "rms_norm_eps")))
    head_dim = _get(config, "head_dim")
    if head_dim is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if not quantized:
        writer.add_file_type(file_type)
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_rope_dimension_count(head_dim if head_dim is not None else n_embd // n_head)
    if not quantized:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    special = gguf.SpecialVocab(vocab.tokenizer_dir, load_merges=True, n_vocab=len(vocab.tokens))
    special.add_to_gguf(writer, quiet=True)
    tok_config = json.loads((vocab.tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    if "add_prefix_space" in tok_config:
        writer.add_add_space_prefix(bool(tok_config["add_prefix_space"]))
    if len(vocab.tokens) == 49152:
        # The converter's rule for small models with this vocabulary size (SmolLM, SmolLM2, Granite).
        writer.add_add_bos_token(False)
    if quantized:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_file_type(file_type)
