"""recipes.tensor_types must equal the tensor types llama.cpp's own llama_model_quantize writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from llama_quantize import gguf_tensor_types, llama_model_quantize, write_random_llama_f32
from sqat_kernels import recipes
from sqat_kernels.cli import main as sqat_main
from sqat_kernels.recipes import LlamaShape

# Widths of the SmolLM2 family (576: 135M, 960: 360M, 2048: 1.7B) with few layers, and the layer counts
# the use_more_bits rule depends on (24, 30, 32) at small widths; n_ff chosen so ffn_down keeps 256-blocks.
CONFIGS = {
    "h576-gqa3-tied-L6": LlamaShape(6, 576, 9, 3, 512, 128, True),
    "h960-gqa3-untied-L4": LlamaShape(4, 960, 15, 5, 512, 128, False),
    "h2048-mha-tied-L1": LlamaShape(1, 2048, 32, 32, 256, 64, True),
    "h64-gqa4-tied-L24": LlamaShape(24, 64, 4, 1, 256, 96, True),
    "h256-mha-untied-L30": LlamaShape(30, 256, 8, 8, 256, 96, False),
    "h128-gqa8-untied-L32": LlamaShape(32, 128, 8, 1, 512, 96, False),
    "h96-headdim48-tied-L3": LlamaShape(3, 96, 4, 2, 256, 64, True, head_dim=48),
}
BIG = {"h2048-mha-tied-L1", "h256-mha-untied-L30"}

MIXES = [
    "Q8_0",
    "Q4_K_M",
    "Q5_K_M",
    "Q6_K",
    "IQ4_XS",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "IQ4_NL",
    "Q4_K_S",
    "Q5_K_S",
    "F16",
    "BF16",
]
PURES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "IQ4_NL", "IQ4_XS", "Q8_0", "Q6_K"]
VARIANTS = (
    [(m, {}) for m in MIXES]
    + [(p, {"pure": True}) for p in PURES]
    + [(m, {"imatrix": True}) for m in ("IQ4_XS", "IQ4_NL", "Q4_0", "Q5_0", "Q4_K_M")]
    + [
        ("Q4_K_M", {"output_tensor_type": "Q8_0"}),
        ("Q4_K_M", {"token_embedding_type": "Q4_K"}),
        ("Q5_K_M", {"output_tensor_type": "Q4_0", "token_embedding_type": "Q5_1"}),
        ("IQ4_XS", {"pure": True, "output_tensor_type": "Q6_K"}),
        ("F16", {"token_embedding_type": "Q8_0"}),
    ]
)
BIG_VARIANTS = {
    ("Q4_K_M", ()),
    ("IQ4_XS", ()),
    ("Q8_0", ()),
    ("Q4_0", (("pure", True),)),
    ("IQ4_XS", (("imatrix", True),)),
}


def _variant_id(recipe: str, opts: dict) -> str:
    return "-".join([recipe] + [k if v is True else f"{k}={v}" for k, v in opts.items()])


def _cases():
    for cname, _shape in CONFIGS.items():
        for recipe, opts in VARIANTS:
            if cname in BIG and (recipe, tuple(opts.items())) not in BIG_VARIANTS:
                continue
            yield pytest.param(cname, recipe, opts, id=f"{cname}-{_variant_id(recipe, opts)}")


@pytest.fixture(scope="session")
def f32_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    made = {}

    def get(cname: str):
        if cname not in made:
            path = root / f"{cname}.gguf"
            made[cname] = (path, write_random_llama_f32(path, CONFIGS[cname]))
        return made[cname]

    return get


@pytest.mark.parametrize("cname, recipe, opts", list(_cases()))
def test_tensor_types_equal_llama_model_quantize(f32_models, tmp_path, cname, recipe, opts):
    shape = CONFIGS[cname]
    src, tensors = f32_models(cname)
    pure = opts.get("pure", False)
    imatrix = None
    if opts.get("imatrix"):
        rng = np.random.default_rng(1)
        imatrix = {
            n: rng.random(a.shape[-1]).astype(np.float32) + 0.1 for n, a in tensors.items() if a.ndim == 2
        }
    dst = tmp_path / "out.gguf"
    kwargs = dict(
        pure=pure,
        output_tensor_type=opts.get("output_tensor_type"),
        token_embedding_type=opts.get("token_embedding_type"),
    )
    try:
        ours = recipes.tensor_types(shape, recipe, imatrix=imatrix is not None, **kwargs)
    except ValueError as exc:
        # An override that does not fit the row length: llama.cpp must refuse it as well.
        # ggml may abort the process on such a request, so llama.cpp runs in a child process here.
        assert "does not fit" in str(exc)
        assert imatrix is None
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from llama_quantize import llama_model_quantize; "
            f"llama_model_quantize({str(src)!r}, {str(dst)!r}, "
            f"{recipes.file_type(recipe, pure=pure)}, **{kwargs!r})"
        )
        child = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True)
        assert child.returncode != 0, "llama.cpp accepted an override sqat refuses"
        return
    llama_model_quantize(src, dst, recipes.file_type(recipe, pure=pure), imatrix=imatrix, **kwargs)
    written = gguf_tensor_types(dst)
    diff = {
        n: (written.get(n), ours.get(n))
        for n in sorted(set(written) | set(ours))
        if written.get(n) != ours.get(n)
    }
    assert not diff, f"(llama.cpp, sqat) differ for {len(diff)} tensors: {dict(list(diff.items())[:12])}"
    # The order of the visit (llama.cpp's loader) is also the order of the written file.
    assert list(written) == list(ours)


def test_smollm2_135m_q4_k_m_table():
    # The worked example of the spec (section 7.5), on the real SmolLM2-135M shape.
    shape = LlamaShape(30, 576, 9, 3, 1536, 49152, True)
    t = recipes.tensor_types(shape, "Q4_K_M")
    more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}
    assert t["token_embd.weight"] == "Q8_0" and "output.weight" not in t
    for i in range(30):
        assert t[f"blk.{i}.attn_q.weight"] == "Q5_0"
        assert t[f"blk.{i}.attn_v.weight"] == ("Q8_0" if i in more else "Q5_0")
        assert t[f"blk.{i}.ffn_down.weight"] == ("Q6_K" if i in more else "Q4_K")
        assert t[f"blk.{i}.ffn_norm.weight"] == "F32"


def test_hf_names_cover_every_parameter_of_a_llama_model():
    import transformers

    for tied in (True, False):
        cfg = transformers.LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=96,
            tie_word_embeddings=tied,
        )
        model = transformers.LlamaForCausalLM(cfg)
        shape = LlamaShape.from_hf_config(cfg)
        expected = shape.tensor_shapes()
        names = {recipes.hf_to_gguf_name(n, 3) for n, _ in model.named_parameters()}
        if not tied:
            names.add(recipes.hf_to_gguf_name("lm_head.weight", 3))
        assert names == set(expected)
        for n, p in model.state_dict().items():
            if tied and n == "lm_head.weight":
                continue  # the embedding itself; convert_hf_to_gguf writes no output.weight for it
            g = recipes.hf_to_gguf_name(n, 3)
            assert tuple(reversed(p.shape)) == expected[g], n


def test_from_hf_config_dict_and_errors():
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "head_dim": 64,
    }
    assert LlamaShape.from_hf_config(cfg) == LlamaShape(30, 576, 9, 3, 1536, 49152, True)
    with pytest.raises(ValueError, match="Llama"):
        LlamaShape.from_hf_config({**cfg, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ValueError, match="n_head_kv"):
        LlamaShape(2, 64, 4, 3, 128, 64, True)
    with pytest.raises(ValueError, match="n_layer"):
        LlamaShape(0, 64, 4, 2, 128, 64, True)
    shape = LlamaShape.from_hf_config(cfg)
    with pytest.raises(ValueError, match="valid recipes: .*Q4_K_M"):
        recipes.tensor_types(shape, "Q3_K_M")
    with pytest.raises(ValueError, match="pure=True"):
        recipes.tensor_types(shape, "Q4_K")
    with pytest.raises(ValueError, match="output tensor type"):
        recipes.tensor_types(shape, "Q4_K_M", output_tensor_type="Q9_9")
    with pytest.raises(ValueError, match="not a tensor"):
        recipes.hf_to_gguf_name("model.layers.3.mlp.w9.weight", 30)


def test_file_type_values():
    assert recipes.file_type("Q4_K_M") == int(gguf.LlamaFileType.MOSTLY_Q4_K_M) == 15
    assert recipes.file_type("q4_k", pure=True) == 15
    assert recipes.file_type("IQ4_XS") == 30 and recipes.file_type("Q8_0") == 7
    assert recipes.default_type("Q5_K", pure=True) == "Q5_K"


def test_recipe_cli_prints_the_table(tmp_path, capsys):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 512,
        "vocab_size": 100,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert sqat_main(["recipe", str(tmp_path), "--type", "Q4_K_M"]) == 0
    out = capsys.readouterr().out
    assert "blk.1.ffn_down.weight" in out and "Q6_K" in out and "falls back to Q5_0" in out
    assert sqat_main(["recipe", str(tmp_path), "--type", "Q4_0", "--pure", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["blk.0.attn_q.weight"] == "Q4_0" and table["token_embd.weight"] == "Q4_0"
    with pytest.raises(SystemExit):
        sqat_main(["recipe", str(tmp_path / "missing"), "--type", "Q4_K_M"])
