"""Tiny random Llama models and an offline byte-level BPE tokenizer for training tests."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TEXT = (
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate: "
    "Rough winds do shake the darling buds of May, And summer's lease hath all too short a date. "
) * 40


def byte_bpe_tokenizer(vocab_size: int = 300) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE trained on a fixed text (deterministic, offline)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT], trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def tiny_llama(hidden=64, layers=2, heads=4, kv=2, ff=256, vocab=300, tied=True, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=hidden,
        intermediate_size=ff,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=128,
    )
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    return model


def save_tiny_model_dir(path: Path, **kw) -> Path:
    """A Hugging Face model directory (model + tokenizer) of a tiny random Llama."""
    tok = byte_bpe_tokenizer()
    model = tiny_llama(vocab=len(tok), **kw)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
