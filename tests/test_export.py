"""export_gguf: whole files byte-identical to llama.cpp's pipeline (our F32 file -> llama_model_quantize)."""

from __future__ import annotations

import os
import re

import gguf
import numpy as np
import pytest
import sqat_kernels as sk
import torch
import transformers
from llama_quantize import llama_lib, llama_model_quantize
from sqat_kernels import recipes
from sqat_kernels.cli import main as sqat_main
from sqat_kernels.export import export_gguf, permute_qk, unpermute_qk
from sqat_kernels.nn import qat_modules
from sqat_kernels.schedule import BitWidthSchedule
from tiny_models import save_tiny_model_dir

CONFIGS = {
    # SmolLM2-135M-like widths (every hidden-input matrix falls back to a 32-block type), GQA 3, tied
    "h576-gqa3-tied": dict(hidden=576, heads=9, kv=3, ff=512, layers=2, tied=True),
    # SmolLM2-1.7B-like: widths divisible by 256 (no fallbacks), GQA 4 (IQ4_XS attn_v rule), untied
    "h2048-gqa4-untied": dict(hidden=2048, heads=32, kv=8, ff=256, layers=1, tied=False),
    # MHA, three layers, untied
    "h256-mha-untied": dict(hidden=256, heads=4, kv=4, ff=512, layers=3, tied=False),
}
RECIPES = [
    ("Q4_K_M", {}),
    ("Q5_K_M", {}),
    ("Q6_K", {}),
    ("Q8_0", {}),
    ("IQ4_XS", {}),
    ("Q4_0", {"pure": True}),
    ("Q4_K_M", {"imatrix": True}),
    ("IQ4_XS", {"imatrix": True}),
    ("Q2_K", {}),
    ("Q2_K_S", {"imatrix": True}),
    ("Q3_K_S", {}),
    ("Q3_K_M", {}),
    ("Q3_K_L", {}),
    ("Q3_K_M", {"imatrix": True}),
    ("TQ1_0", {}),
    ("TQ2_0", {}),
    ("MXFP4_MOE", {}),
    ("MXFP4", {"pure": True}),
    # --tensor-type: the float 4-bit types and a 2-bit K-quant on chosen tensors of a Q4_K_M file
    ("Q4_K_M", {"tt": (("ffn_(up|gate)", "NVFP4"), ("attn_v", "MXFP4"), ("ffn_down", "Q2_K"))}),
    ("Q3_K_M", {"imatrix": True, "tt": (("attn_[qk]", "TQ2_0"), (r"blk\.0\.", "Q6_K"))}),
]


def _recipe_id(recipe: str, opts: dict) -> str:
    parts = [recipe]
    for k, v in opts.items():
        parts.append("tt=" + "+".join(f"{p}:{t}" for p, t in v) if k == "tt" else k)
    return "-".join(parts)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(cname):
        if cname not in cache:
            root = tmp_path_factory.mktemp(cname)
            model_dir = save_tiny_model_dir(root / "hf", **CONFIGS[cname])
            f32 = root / "model-f32.gguf"
            export_gguf(model_dir, f32, "F32", progress=False)
            cache[cname] = (model_dir, f32)
        return cache[cname]

    return get


def _imatrix(model_dir):
    shape = recipes.LlamaShape.from_hf_config(transformers.AutoConfig.from_pretrained(model_dir))
    rng = np.random.default_rng(7)
    return {
        n: (rng.random(ne[0]) + 0.05).astype(np.float32)
        for n, ne in shape.tensor_shapes().items()
        if len(ne) == 2
    }


@pytest.mark.parametrize("recipe, opts", RECIPES, ids=[_recipe_id(r, o) for r, o in RECIPES])
@pytest.mark.parametrize("cname", list(CONFIGS))
def test_file_bytes_equal_llama_model_quantize(exported, tmp_path, cname, recipe, opts):
    model_dir, f32 = exported(cname)
    pure = opts.get("pure", False)
    tt = opts.get("tt")
    imatrix = _imatrix(model_dir) if opts.get("imatrix") else None
    ours = tmp_path / "ours.gguf"
    theirs = tmp_path / "llama.gguf"
    export_gguf(model_dir, ours, recipe, pure=pure, imatrix=imatrix, tensor_type_overrides=tt, progress=False)
    llama_model_quantize(
        f32,
        theirs,
        recipes.file_type(recipe, pure=pure),
        pure=pure,
        imatrix=imatrix,
        tensor_type_overrides=tt,
    )
    a, b = ours.read_bytes(), theirs.read_bytes()
    if a != b:
        ra, rb = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
        keys_equal = list(ra.fields) == list(rb.fields)
        bad = [
            t.name
            for t, u in zip(ra.tensors, rb.tensors, strict=False)
            if t.name != u.name or t.tensor_type != u.tensor_type or t.data.tobytes() != u.data.tobytes()
        ]
        first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
        pytest.fail(
            f"files differ: sizes {len(a)} vs {len(b)}, first differing byte {first}, metadata keys equal "
            f"{keys_equal}, differing tensors {bad[:8]}"
        )


@pytest.mark.parametrize("cname", ["h576-gqa3-tied", "h256-mha-untied"])
def test_llama_cpp_runs_the_exports(exported, tmp_path, cname):
    model_dir, f32 = exported(cname)
    llama_cpp = llama_lib()
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    text = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate."
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    q4 = tmp_path / "q4km.gguf"
    export_gguf(model_dir, q4, "Q4_K_M", progress=False)
    for path, exact in ((f32, True), (q4, False)):
        # F32 KV cache: llama.cpp's default F16 cache alone moves these logits by about 1e-3.
        llm = llama_cpp.Llama(
            str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0
        )
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)])
        assert np.isfinite(logits).all()
        if exact:
            assert np.abs(logits - ref).max() < 1e-3


LOW_BIT_RUNS = [
    ("Q2_K", {}),
    ("Q3_K_M", {}),
    ("TQ1_0", {}),
    ("TQ2_0", {}),
    ("MXFP4", {"pure": True}),
    ("Q8_0", {"tt": (("ffn", "NVFP4"), ("attn", "MXFP4"))}),
]


@pytest.mark.parametrize("recipe, opts", LOW_BIT_RUNS, ids=[_recipe_id(r, o) for r, o in LOW_BIT_RUNS])
@pytest.mark.parametrize("cname", ["h576-gqa3-tied", "h2048-gqa4-untied"])
def test_llama_cpp_runs_the_low_bit_exports(exported, tmp_path, cname, recipe, opts):
    # The 2048-wide model keeps the 256-wide types (no fallback), so llama.cpp's Q2_K / Q3_K / TQ kernels run.
    model_dir, _ = exported(cname)
    llama_cpp = llama_lib()
    path = tmp_path / "low.gguf"
    kw = dict(pure=opts.get("pure", False), tensor_type_overrides=opts.get("tt"))
    export_gguf(model_dir, path, recipe, progress=False, **kw)
    shape = recipes.LlamaShape.from_hf_config(transformers.AutoConfig.from_pretrained(model_dir))
    wanted = recipes.tensor_types(shape, recipe, **kw)
    assert {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors} == wanted
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    text = "Shall I compare thee to a summer's day?"
    ids = tok(text)["input_ids"]
    llm = llama_cpp.Llama(
        str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0
    )
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    assert logits.shape == (len(ids), len(tok)) and np.isfinite(logits).all()
    assert np.ptp(logits, axis=1).min() > 0  # not a constant (all-zero) output


def test_qat_model_export_decodes_to_the_trained_weights(tmp_path):
    model_dir = save_tiny_model_dir(tmp_path / "hf", hidden=256, heads=4, kv=2, ff=512, layers=2, tied=True)
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    sched = BitWidthSchedule(3)
    sk.prepare(model, "Q4_K_M", schedule=sched)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    early = tmp_path / "early.gguf"
    with pytest.raises(ValueError, match="rung"):
        export_gguf(model, early, "Q4_K_M", tokenizer_dir=model_dir, progress=False)
    assert not early.exists()
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    out = tmp_path / "qat.gguf"
    export_gguf(model, out, "Q4_K_M", tokenizer_dir=model_dir, progress=False)
    stored = {t.name: t for t in gguf.GGUFReader(out).tensors}
    n_layer = model.config.num_hidden_layers
    checked = 0
    for name, module in qat_modules(model):
        if name == "lm_head":
            continue  # tied to the embedding: token_embd.weight holds it
        gname = recipes.hf_to_gguf_name(f"{name}.weight", n_layer)
        t = stored[gname]
        assert t.tensor_type.name == module.config.qtype
        rows = module.weight.shape[0]
        packed = np.asarray(t.data).reshape(rows, -1)
        decoded = sk.dequantize(packed, t.tensor_type.name, tuple(module.weight.shape))
        if ".attn_q." in gname:
            decoded = unpermute_qk(decoded, model.config.num_attention_heads)
        elif ".attn_k." in gname:
            decoded = unpermute_qk(decoded, model.config.num_key_value_heads)
        with torch.no_grad():
            assert np.array_equal(decoded, module.fake_weight().numpy()), name
        checked += 1
    assert checked == 2 * 7 + 1
    with pytest.raises(ValueError, match="prepared for"):
        export_gguf(model, tmp_path / "other.gguf", "Q8_0", tokenizer_dir=model_dir, progress=False)


def test_permutation_round_trip():
    w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    p = permute_qk(w, 1)
    assert p[:, 0].tolist() == [0, 12, 3, 15, 6, 18, 9, 21]  # rows 0, 4, 1, 5, 2, 6, 3, 7
    assert np.array_equal(unpermute_qk(p, 1), w)
    w2 = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
    assert np.array_equal(unpermute_qk(permute_qk(w2, 3), 3), w2)


def test_atomic_output_and_errors(tmp_path):
    model_dir = save_tiny_model_dir(tmp_path / "hf", hidden=64, heads=4, kv=2, ff=256, layers=2)
    dest = tmp_path / "out.gguf"
    dest.write_bytes(b"previous file")
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"blk\.1\.ffn_down\.weight .*non-finite"):
        export_gguf(model, dest, "Q8_0", tokenizer_dir=model_dir, progress=False)
    assert dest.read_bytes() == b"previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out.gguf"]  # no temporary file left
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        export_gguf(model_dir, tmp_path / "x.gguf", "Q8_0", progress=False)
    gpt = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)
    ).save_pretrained(gpt)
    with pytest.raises(ValueError, match="Llama"):
        export_gguf(gpt, tmp_path / "g.gguf", "Q8_0", progress=False)


@pytest.mark.parametrize("fault", ["short", "long", "unknown-name"])
def test_imatrix_that_does_not_fit_the_model_is_refused_before_writing(tmp_path, fault):
    model_dir = save_tiny_model_dir(tmp_path / "hf", hidden=64, heads=4, kv=2, ff=256, layers=2)
    imatrix = _imatrix(model_dir)
    victim = "blk.1.ffn_down.weight"  # 256 columns
    if fault == "unknown-name":
        imatrix["blk.7.ffn_down.weight"] = imatrix.pop(victim)
        match = r"blk\.7\.ffn_down\.weight"
    else:
        n = 255 if fault == "short" else 257
        imatrix[victim] = np.ones(n, np.float32)
        match = re.escape(victim) + rf": expected 256 values .*found {n}"
    dest = tmp_path / "out.gguf"
    with pytest.raises(ValueError, match=match):
        export_gguf(model_dir, dest, "Q4_K_M", imatrix=imatrix, progress=False)
    assert not dest.exists()


def test_export_cli(tmp_path, capsys):
    model_dir = save_tiny_model_dir(tmp_path / "hf", hidden=64, heads=4, kv=2, ff=256, layers=2)
    out = tmp_path / "m.gguf"
    assert sqat_main(["export", str(model_dir), str(out), "--type", "Q8_0"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600
    with pytest.raises(SystemExit, match="valid recipes"):
        sqat_main(["export", str(model_dir), str(out), "--type", "Q7_7"])


def test_prepare_and_export_take_the_same_tensor_type_overrides(tmp_path):
    model_dir = save_tiny_model_dir(tmp_path / "hf", hidden=256, heads=4, kv=2, ff=512, layers=2, tied=True)
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    tt = (("ffn_up", "NVFP4"), ("attn_v", "MXFP4"), ("ffn_down", "TQ2_0"))
    sk.prepare(model, "Q3_K_M", tensor_type_overrides=tt)
    layer = model.model.layers[1]
    assert layer.mlp.up_proj.config.qtype == "NVFP4" and layer.self_attn.v_proj.config.qtype == "MXFP4"
    assert layer.mlp.down_proj.config.qtype == "TQ2_0" and layer.self_attn.q_proj.config.qtype == "Q3_K"
    out = tmp_path / "qat.gguf"
    export_gguf(model, out, "Q3_K_M", tensor_type_overrides=tt, tokenizer_dir=model_dir, progress=False)
    stored = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert stored["blk.1.ffn_up.weight"] == "NVFP4" and stored["blk.0.attn_v.weight"] == "MXFP4"
    with pytest.raises(ValueError, match="prepared for"):
        export_gguf(model, tmp_path / "other.gguf", "Q3_K_M", tokenizer_dir=model_dir, progress=False)
    fresh = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    with pytest.raises(ValueError, match="needs an importance matrix"):
        sk.prepare(fresh, "Q2_K_S")
