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

from ..export.tensors import unpermute_qk
from ..quant import dequantize
from ..recipes import hf_to_gguf_name

# tokenizer.ggml.pre values we can rebuild, as HF pre-tokenizer builders.
_SUPPORTED_PRE = ("smollm", "gpt-2")


def _field(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def llama_config_from_gguf(reader: gguf.GGUFReader):
    """A transformers LlamaConfig from the llama.* metadata of a GGUF file."""
    from transformers import LlamaConfig

    if _field(reader, "general.architecture") != "llama":
        raise ValueError(
            f"not a Llama GGUF file (general.architecture={_field(reader, 'general.architecture')!r})"
        )
    names = {t.name for t in reader.tensors}
    n_head = int(_field(reader, "llama.attention.head_count"))
    n_embd = int(_field(reader, "llama.embedding_length"))
    n_vocab = _field(reader, "llama.vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    head_dim = _field(reader, "llama.attention.key_length") or n_embd // n_head

    def token_id(key):
        v = _field(reader, f"tokenizer.ggml.{key}")
        return None if v is None else int(v)

    return LlamaConfig(
        vocab_size=int(n_vocab),
        hidden_size=n_embd,
        intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        num_hidden_layers=int(_field(reader, "llama.block_count")),
        num_attention_heads=n_head,
        num_key_value_heads=int(_field(reader, "llama.attention.head_count_kv", n_head)),
        head_dim=int(head_dim),
        max_position_embeddings=int(_field(reader, "llama.context_length")),
        rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=token_id("bos_token_id"),
        eos_token_id=token_id("eos_token_id"),
        pad_token_id=token_id("padding_token_id"),
        architectures=["LlamaForCausalLM"],
    )


def decode_tensors(reader: gguf.GGUFReader, config) -> dict[str, np.ndarray]:
    """HF parameter name -> float32 array in HF layout, for every tensor of the file."""
    n_layer = config.num_hidden_layers
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        hf_names = [n for n, _ in LlamaForCausalLM(config).named_parameters()]
    if not config.tie_word_embeddings and "lm_head.weight" not in hf_names:
        hf_names.append("lm_head.weight")
    by_gguf = {hf_to_gguf_name(n, n_layer): n for n in hf_names}
    out = {}
    for t in reader.tensors:
        if t.name not in by_gguf:
            raise ValueError(f"tensor {t.name} has no place in a LlamaForCausalLM")
        ne = [int(d) for d in t.shape]
        shape = tuple(reversed(ne))
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            data = np.asarray(t.data, dtype=np.float32).reshape(shape)
        else:
            rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
            data = dequantize(np.asarray(t.data).reshape(rows, -1), t.tensor_type.name, shape)
        if ".attn_q." in t.name:
            data = unpermute_qk(data, config.num_attention_heads)
        elif ".attn_k." in t.name:
            data = unpermute_qk(data, config.num_key_value_heads)
        # A copy: F32 tensors are views into the read-only memory map of the file.
        out[by_gguf[t.name]] = np.array(data, dtype=np.float32, order="C", copy=True)
    return out


def tokenizer_from_gguf(reader: gguf.GGUFReader):
    """A transformers PreTrainedTokenizerFast equal to the GGUF's byte-level BPE vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"only byte-level BPE (gpt2) tokenizers are supported, got {kind!r}")
    pre = _field(reader, "tokenizer.ggml.pre")
    if pre not in _SUPPORTED_PRE:
        raise ValueError(
            f"tokenizer.ggml.pre={pre!r} is not supported (supported: {', '.join(_SUPPORTED_PRE)})"
        )
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
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
        i = _field(reader, f"tokenizer.ggml.{key}")
        return None if i is None else tokens[int(i)]

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=name_of("bos_token_id"),
        eos_token=name_of("eos_token_id"),
        unk_token=name_of("unknown_token_id"),
        pad_token=name_of("padding_token_id"),
        chat_template=_field(reader, "tokenizer.chat_template"),
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
    )


def import_llama_gguf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write a Hugging Face model directory (float32 safetensors + tokenizer) for a Llama GGUF file.

    Atomic: built in a temporary directory beside `out_dir`, renamed at the end (an existing `out_dir` is
    replaced only on success). Returns `out_dir`.
    """
    import torch
    from transformers import LlamaForCausalLM

    out_dir = Path(out_dir)
    reader = gguf.GGUFReader(gguf_path)
    config = llama_config_from_gguf(reader)
    state = decode_tensors(reader, config)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"{gguf_path}: no data for {missing[:5]}")
    tokenizer = tokenizer_from_gguf(reader)
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
