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
    "Q2_K",
    "Q2_K_S",  # refused without an imatrix (by llama.cpp too): its Q2_K tensors need one
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "TQ1_0",
    "TQ2_0",
    "MXFP4_MOE",  # all Q8_0 on a dense model
]
PURES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "IQ4_NL", "IQ4_XS", "Q8_0", "Q6_K"]
PURES += ["Q2_K", "Q3_K", "TQ1_0", "TQ2_0", "MXFP4"]
IMATRIX = ["IQ4_XS", "IQ4_NL", "Q4_0", "Q5_0", "Q4_K_M", "Q2_K_S", "Q2_K", "Q3_K_M"]
# --tensor-type overrides (pattern, type), in priority order; what each one exercises is noted.
OVERRIDES = [
    # an override on one layer leaves llama.cpp's attn_v / ffn_down counters behind for the later layers
    ("Q4_K_M", {"tt": ((r"blk\.0\.attn_v", "Q4_0"), (r"blk\.1\.ffn_down", "Q8_0"))}),
    # the float 4-bit types; NVFP4's 64-blocks do not fit 96-wide rows and it has no fallback: refused
    ("Q3_K_M", {"tt": (("ffn_(up|gate)", "MXFP4"), ("attn_[qk]", "NVFP4"))}),
    # the first matching pattern wins; 256-wide types fall back as the recipe's own choices do
    ("Q2_K", {"tt": (("ffn_down", "TQ2_0"), (r"blk\.0\.", "Q2_K"), ("attn_output", "TQ1_0"))}),
    ("Q8_0", {"tt": (("token_embd", "Q2_K"), ("output", "Q3_K"))}),
    # --output-tensor-type / --token-embedding-type win over a pattern; a tied token_embd takes the pattern
    ("Q4_K_M", {"output_tensor_type": "Q8_0", "tt": (("output|token_embd", "Q3_K"),)}),
    ("Q4_K_M", {"token_embedding_type": "Q8_0", "tt": (("token_embd", "Q2_K"),)}),
    # ignored under a float recipe; applied under --pure
    ("F16", {"tt": (("attn", "Q8_0"),)}),
    ("Q6_K", {"pure": True, "tt": (("ffn", "Q4_K"),)}),
    # Q2_K_S needs an imatrix only for tensors that end up Q2_K; Q2_K in another recipe needs none
    ("Q2_K_S", {"tt": ((".", "Q3_K"),)}),
    ("Q3_K_S", {"tt": (("ffn_up", "Q2_K"),)}),
    ("Q2_K_S", {"imatrix": True, "tt": (("attn_v", "Q5_K"),)}),
    ("MXFP4_MOE", {"tt": (("ffn", "MXFP4"),)}),
    ("Q4_K_M", {"tt": ((r"^blk\.(0|2)\.ffn_gate\.weight$", "IQ4_XS"), ("attn_k", "F16"))}),
]
VARIANTS = (
    [(m, {}) for m in MIXES]
    + [(p, {"pure": True}) for p in PURES]
    + [(m, {"imatrix": True}) for m in IMATRIX]
    + [
        ("Q4_K_M", {"output_tensor_type": "Q8_0"}),
        ("Q4_K_M", {"token_embedding_type": "Q4_K"}),
        ("Q5_K_M", {"output_tensor_type": "Q4_0", "token_embedding_type": "Q5_1"}),
        ("IQ4_XS", {"pure": True, "output_tensor_type": "Q6_K"}),
        ("F16", {"token_embedding_type": "Q8_0"}),
    ]
    + OVERRIDES
)
BIG_VARIANTS = {
    ("Q4_K_M", ()),
    ("IQ4_XS", ()),
    ("Q8_0", ()),
    ("Q4_0", (("pure", True),)),
    ("IQ4_XS", (("imatrix", True),)),
    ("Q2_K", ()),
    ("Q3_K_M", ()),
    ("Q3_K_L", ()),
    ("Q2_K_S", (("imatrix", True),)),
    ("Q4_K_M", tuple(OVERRIDES[0][1].items())),
}


def _variant_id(recipe: str, opts: dict) -> str:
    parts = [recipe]
    for k, v in opts.items():
        if k == "tt":
            parts.append("tt=" + "+".join(f"{p}:{t}" for p, t in v))
        else:
            parts.append(k if v is True else f"{k}={v}")
    return "-".join(parts)


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
        tensor_type_overrides=opts.get("tt"),
    )
    try:
        ours = recipes.tensor_types(shape, recipe, imatrix=imatrix is not None, **kwargs)
    except ValueError as exc:
        # A type that does not fit the row length, or Q2_K_S without an imatrix: llama.cpp must refuse it
        # as well. ggml may abort the process on such a request, so llama.cpp runs in a child process here.
        assert "does not fit" in str(exc) or "needs an importance matrix" in str(exc)
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
        recipes.tensor_types(shape, "NVFP4")  # llama_model_quantize refuses this ftype: overrides only
    with pytest.raises(ValueError, match="pure=True"):
        recipes.tensor_types(shape, "Q4_K")
    with pytest.raises(ValueError, match="output tensor type"):
        recipes.tensor_types(shape, "Q4_K_M", output_tensor_type="Q9_9")
    with pytest.raises(ValueError, match="not a tensor"):
        recipes.hf_to_gguf_name("model.layers.3.mlp.w9.weight", 30)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ([("attn", "Q9_9")], "unknown --tensor-type type"),
        ([("", "Q8_0")], "non-empty"),
        ([("(?i)attn", "Q8_0")], "Python-only"),
        ([(r"\Aattn", "Q8_0")], "not ECMAScript"),
        ([("attn[", "Q8_0")], "not a valid regex"),
        (["attn=Q8_0"], "pair"),
    ],
    ids=["unknown-type", "empty-pattern", "inline-flag", "python-escape", "bad-regex", "not-a-pair"],
)
def test_tensor_type_overrides_refused(overrides, match):
    shape = LlamaShape(2, 256, 4, 4, 256, 64, True)
    with pytest.raises(ValueError, match=match):
        recipes.tensor_types(shape, "Q4_K_M", tensor_type_overrides=overrides)


def test_tensor_type_overrides_forms_and_parse():
    shape = LlamaShape(2, 256, 4, 4, 256, 64, True)
    pairs = [("ffn_up", "mxfp4"), ("ffn", "Q2_K")]
    as_list = recipes.tensor_types(shape, "Q3_K_M", tensor_type_overrides=pairs)
    as_dict = recipes.tensor_types(shape, "Q3_K_M", tensor_type_overrides=dict(pairs))
    assert as_list == as_dict
    assert as_list["blk.1.ffn_up.weight"] == "MXFP4" and as_list["blk.1.ffn_gate.weight"] == "Q2_K"
    assert recipes.parse_tensor_type(r"BLK\.0\.ATTN_V=nvfp4") == (r"blk\.0\.attn_v", "NVFP4")
    with pytest.raises(ValueError, match="PATTERN=TYPE"):
        recipes.parse_tensor_type("=Q8_0")


def test_smollm2_135m_and_1_7b_low_bit_tables():
    # docs/formats.md: what Q3_K_M and Q2_K become on SmolLM2-135M (576-wide rows) and on the 1.7B shape.
    small = recipes.tensor_types(LlamaShape(30, 576, 9, 3, 1536, 49152, True), "Q3_K_M")
    assert small["token_embd.weight"] == "Q8_0"
    assert [small[f"blk.{i}.attn_v.weight"] for i in range(3)] == ["Q5_1", "Q5_1", "Q5_0"]
    assert {small[f"blk.{i}.attn_output.weight"] for i in range(30)} == {"Q5_0"}
    assert [small[f"blk.{i}.ffn_down.weight"] for i in range(2)] == ["Q5_K", "Q4_K"]
    assert {small[f"blk.{i}.{k}.weight"] for i in range(30) for k in ("attn_q", "ffn_up")} == {"Q4_0"}
    q2 = recipes.tensor_types(LlamaShape(30, 576, 9, 3, 1536, 49152, True), "Q2_K")
    assert {q for n, q in q2.items() if n.endswith("ffn_down.weight")} == {"Q3_K"}
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up")
    assert {q2[f"blk.{i}.{k}.weight"] for i in range(30) for k in kinds} == {"Q4_0"}
    big = recipes.tensor_types(LlamaShape(24, 2048, 32, 32, 8192, 49152, True), "Q2_K")
    assert big["token_embd.weight"] == "Q6_K" and big["blk.5.attn_q.weight"] == "Q2_K"
    assert {big[f"blk.5.{k}.weight"] for k in ("attn_v", "attn_output", "ffn_down")} == {"Q3_K"}


def test_file_type_values():
    assert recipes.file_type("Q4_K_M") == int(gguf.LlamaFileType.MOSTLY_Q4_K_M) == 15
    assert recipes.file_type("q4_k", pure=True) == 15
    assert recipes.file_type("IQ4_XS") == 30 and recipes.file_type("Q8_0") == 7
    assert recipes.default_type("Q5_K", pure=True) == "Q5_K"
    assert recipes.file_type("Q3_K_M") == 12 and recipes.file_type("Q2_K_S") == 21
    assert recipes.file_type("TQ1_0") == 36 and recipes.file_type("MXFP4", pure=True) == 38


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
    args = ["recipe", str(tmp_path), "--type", "Q3_K_M", "--json", "--tensor-type", "ATTN_V=nvfp4"]
    assert sqat_main(args) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["blk.0.attn_v.weight"] == "NVFP4" and table["blk.0.attn_q.weight"] == "Q4_0"
    with pytest.raises(SystemExit, match="needs an importance matrix"):
        sqat_main(["recipe", str(tmp_path), "--type", "Q2_K_S"])
    assert sqat_main(["recipe", str(tmp_path), "--type", "Q2_K_S", "--imatrix"]) == 0
    assert "Q2_K" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sqat_main(["recipe", str(tmp_path / "missing"), "--type", "Q4_K_M"])
