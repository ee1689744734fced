"""A Llama GGUF file -> a Hugging Face model directory (transformers LlamaForCausalLM + fast tokenizer).

Weights are decoded with sqat's dequantize (bit-identical to llama.cpp's), q/k rows are put back into HF's
order (the inverse of convert_hf_to_gguf's permutation), names are mapped back with gguf-py's tensor map,
and the tokenizer is rebuilt from tokenizer.ggml.* (byte-level BPE: tokens, merges, special tokens, the
pre-tokenizer llama.cpp uses for the file's `tokenizer.ggml.pre`, the chat template).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import gguf
import numpy as np

from ..export.llama_gguf_checks import check_llama_tensors, llama_shape
from ..export.tensors import unpermute_qk
from ..formats import SUPPORTED_TYPES
from ..gguf_checks import INTEGER_TYPES, CheckedGGUF, show
from ..quant import dequantize
from ..recipes import hf_to_gguf_name

# tokenizer.ggml.pre values we can rebuild, as HF pre-tokenizer builders.
_SUPPORTED_PRE = ("smollm", "gpt-2")
_STRING = frozenset({gguf.GGUFValueType.STRING})


def _checked(source: CheckedGGUF | str | os.PathLike[str]) -> CheckedGGUF:
    return source if isinstance(source, CheckedGGUF) else CheckedGGUF(source)


def llama_config_from_gguf(source: CheckedGGUF | str | os.PathLike[str]):
    """A transformers LlamaConfig from the llama.* metadata of a GGUF file (a path or a CheckedGGUF).

    Raises InputFileError (a ValueError) for a file that is not a sound Llama GGUF (see gguf_checks and
    export.llama_gguf_checks): the file, key or tensor and what was expected.
    """
    from transformers import LlamaConfig

    g = _checked(source)
    shape = llama_shape(g)
    check_llama_tensors(g, shape, SUPPORTED_TYPES, "sqat cannot decode this type")
    tokens = g.layout.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and tokens.count != shape.n_vocab:
        raise g.error(
            "metadata tokenizer.ggml.tokens",
            f"expected {shape.n_vocab} tokens (token_embd.weight's rows), found {tokens.count}",
        )

    def token_id(key):
        return g.integer(f"tokenizer.ggml.{key}", None, lo=0, hi=shape.n_vocab - 1)

    return LlamaConfig(
        vocab_size=shape.n_vocab,
        hidden_size=shape.n_embd,
        intermediate_size=shape.n_ff,
        num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head,
        num_key_value_heads=shape.n_head_kv,
        head_dim=shape.n_embd_head,
        max_position_embeddings=g.integer("llama.context_length"),
        rms_norm_eps=g.number("llama.attention.layer_norm_rms_epsilon"),
        rope_theta=g.number("llama.rope.freq_base", 10000.0),
        tie_word_embeddings=shape.tied_embeddings,
        bos_token_id=token_id("bos_token_id"),
        eos_token_id=token_id("eos_token_id"),
        pad_token_id=token_id("padding_token_id"),
        architectures=["LlamaForCausalLM"],
    )


def decode_tensors(source: CheckedGGUF | str | os.PathLike[str], config) -> dict[str, np.ndarray]:
    """HF parameter name -> float32 array in HF layout, for every tensor of the file (NaN/Inf refused with
    the tensor's name and the first bad row and column)."""
    g = _checked(source)
    n_layer = config.num_hidden_layers
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        hf_names = [n for n, _ in LlamaForCausalLM(config).named_parameters()]
    if not config.tie_word_embeddings and "lm_head.weight" not in hf_names:
        hf_names.append("lm_head.weight")
    by_gguf = {hf_to_gguf_name(n, n_layer): n for n in hf_names}
    out = {}
    for t in g.reader.tensors:
        if t.name not in by_gguf:
            raise ValueError(f"tensor {t.name} has no place in a LlamaForCausalLM")
        ne = [int(d) for d in t.shape]
        shape = tuple(reversed(ne))
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            data = np.asarray(t.data, dtype=np.float32).reshape(shape)
        else:
            rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
            # gguf-py gives F16 tensors as float16 arrays, the others as bytes: dequantize takes bytes.
            raw = np.asarray(t.data).reshape(-1).view(np.uint8).reshape(rows, -1)
            data = dequantize(raw, t.tensor_type.name, shape)
        g.check_finite(t.name, data)
        if ".attn_q." in t.name:
            data = unpermute_qk(data, config.num_attention_heads)
        elif ".attn_k." in t.name:
            data = unpermute_qk(data, config.num_key_value_heads)
        # A copy: F32 tensors are views into the read-only memory map of the file.
        out[by_gguf[t.name]] = np.array(data, dtype=np.float32, order="C", copy=True)
    return out


def _bpe_vocab(g: CheckedGGUF) -> tuple[list[str], list[int], dict[str, int], list[tuple[str, str]]]:
    """(tokens, token types, vocab, merges), checked so that the tokenizers library accepts them: unique
    tokens, one type per token, merges "a b" whose parts and union are tokens."""
    tokens = g.array("tokenizer.ggml.tokens", _STRING)
    types = g.array("tokenizer.ggml.token_type", INTEGER_TYPES)
    if len(types) != len(tokens):
        raise g.error(
            "metadata tokenizer.ggml.token_type", f"expected {len(tokens)} token types, found {len(types)}"
        )
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if vocab.setdefault(tok, i) != i:
            raise g.error(
                "metadata tokenizer.ggml.tokens",
                f"expected unique tokens, found {show(tok)} at ids {vocab[tok]} and {i}",
            )
    merges = []
    for i, m in enumerate(g.array("tokenizer.ggml.merges", _STRING)):
        a, _, b = m.partition(" ")
        if not a or not b or a + b not in vocab or a not in vocab or b not in vocab:
            raise g.error(
                "metadata tokenizer.ggml.merges",
                f"expected merge {i} to be 'A B' with A, B and AB tokens of the vocabulary, found {show(m)}",
            )
        merges.append((a, b))
    return tokens, types, vocab, merges


def tokenizer_from_gguf(source: CheckedGGUF | str | os.PathLike[str]):
    """A transformers PreTrainedTokenizerFast equal to the GGUF's byte-level BPE vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    g = _checked(source)
    kind = g.string("tokenizer.ggml.model")
    if kind != "gpt2":
        raise g.error(
            "metadata tokenizer.ggml.model",
            f"expected 'gpt2' (byte-level BPE, the only tokenizer sqat rebuilds), found {show(kind)}",
        )
    pre = g.string("tokenizer.ggml.pre")
    if pre not in _SUPPORTED_PRE:
        raise g.error(
            "metadata tokenizer.ggml.pre", f"expected one of {', '.join(_SUPPORTED_PRE)}, found {show(pre)}"
        )
    tokens, types, vocab, merges = _bpe_vocab(g)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre == "smollm":
        # llama.cpp's "smollm" pre-tokenizer: each digit on its own, then the GPT-2 split.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    special = [
        AddedToken(tokens[i], special=True, normalized=False)
        for i, ty in enumerate(types)
        if ty == int(gguf.TokenType.CONTROL)
    ]
    tok.add_special_tokens(special)

    def name_of(key):
        i = g.integer(f"tokenizer.ggml.{key}", None, lo=0, hi=len(tokens) - 1)
        return None if i is None else tokens[i]

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=name_of("bos_token_id"),
        eos_token=name_of("eos_token_id"),
        unk_token=name_of("unknown_token_id"),
        pad_token=name_of("padding_token_id"),
        chat_template=g.string("tokenizer.chat_template", None),
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
    )


def import_llama_gguf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write a Hugging Face model directory (float32 safetensors + tokenizer) for a Llama GGUF file.

    Atomic: built in a temporary directory beside `out_dir`, renamed at the end (an existing `out_dir` is
    replaced only on success). Returns `out_dir`. Raises InputFileError (a ValueError) naming the file and
    the offset, key or tensor for a file that is not a sound Llama GGUF, or holds NaN/Inf; nothing is written.
    """
    import torch
    from transformers import LlamaForCausalLM

    out_dir = Path(out_dir)
    g = CheckedGGUF(gguf_path)
    config = llama_config_from_gguf(g)
    tokenizer = tokenizer_from_gguf(g)  # checked before the weights are decoded
    state = decode_tensors(g, config)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"{gguf_path}: no data for {missing[:5]}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
