"""requantize_gguf / `sqat quantize`: byte-identical to llama_model_quantize; llama.cpp imatrix files."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
from llama_quantize import llama_model_quantize
from sqat_kernels import recipes
from sqat_kernels.cli import main as sqat_main
from sqat_kernels.export import export_gguf, read_imatrix, requantize_gguf
from tiny_models import save_tiny_model_dir


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("requant")
    model_dir = save_tiny_model_dir(root / "hf", hidden=576, heads=9, kv=3, ff=512, layers=2, tied=True)
    untied = save_tiny_model_dir(root / "hf-untied", hidden=256, heads=4, kv=4, ff=512, layers=3, tied=False)
    files = {}
    for name, d in (("h576-tied", model_dir), ("h256-untied", untied)):
        for ft in ("F32", "F16", "BF16"):
            path = root / f"{name}-{ft}.gguf"
            export_gguf(d, path, ft, progress=False)
            files[f"{name}-{ft}"] = path
    return files


CASES = [
    ("Q4_K_M", {}),
    ("Q5_K_M", {}),
    ("Q6_K", {}),
    ("Q8_0", {}),
    ("IQ4_XS", {}),
    ("Q4_0", {"pure": True}),
    ("F16", {}),
    ("Q4_K_M", {"output_tensor_type": "Q8_0", "token_embedding_type": "Q8_0"}),
    ("Q2_K", {}),
    ("Q3_K_M", {}),
    ("TQ1_0", {}),
    ("Q3_K_L", {"tensor_type_overrides": (("ffn_down", "NVFP4"), ("token_embd|output", "MXFP4"))}),
]


def _case_id(recipe: str, opts: dict) -> str:
    parts = [recipe]
    for k, v in opts.items():
        parts.append("tt=" + "+".join(f"{p}:{t}" for p, t in v) if k == "tensor_type_overrides" else k)
    return "-".join(parts)


@pytest.mark.parametrize("recipe, opts", CASES, ids=[_case_id(r, o) for r, o in CASES])
@pytest.mark.parametrize("src", ["h576-tied-F32", "h576-tied-F16", "h576-tied-BF16", "h256-untied-F32"])
def test_bytes_equal_llama_model_quantize(sources, tmp_path, src, recipe, opts):
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    requantize_gguf(sources[src], ours, recipe, progress=False, **opts)
    llama_model_quantize(
        sources[src], theirs, recipes.file_type(recipe, pure=opts.get("pure", False)), **opts
    )
    assert ours.read_bytes() == theirs.read_bytes()


def _write_imatrix_gguf(path, entries, *, with_metadata=True):
    writer = gguf.GGUFWriter(str(path), "imatrix")
    if with_metadata:
        writer.add_array("imatrix.datasets", ["shakespeare.txt"])
        writer.add_uint32("imatrix.chunk_count", 4)
        writer.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in entries.items():
        writer.add_tensor(f"{name}.in_sum2", sums.astype(np.float32))
        writer.add_tensor(f"{name}.counts", counts.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_read_imatrix_gguf_and_legacy(tmp_path):
    rng = np.random.default_rng(0)
    sums = (rng.random(64) * 10).astype(np.float32)
    two = (rng.random(2 * 32) * 10).astype(np.float32)
    path = tmp_path / "imatrix.gguf"
    _write_imatrix_gguf(
        path,
        {"blk.0.attn_q.weight": (sums, np.array([7.4])), "blk.0.ffn_up.weight": (two, np.array([3.0, 0.0]))},
    )
    im = read_imatrix(path)
    assert np.array_equal(im["blk.0.attn_q.weight"], sums / np.float32(7.0))  # counts rounded like lround
    assert np.array_equal(im["blk.0.ffn_up.weight"][:32], two[:32] / np.float32(3.0))
    assert np.array_equal(im["blk.0.ffn_up.weight"][32:], np.ones(32, np.float32))  # zero count -> 1
    no_meta = tmp_path / "nometa.gguf"
    _write_imatrix_gguf(no_meta, {"x.weight": (sums, np.array([1.0]))}, with_metadata=False)
    with pytest.raises(ValueError, match="missing imatrix.datasets"):
        read_imatrix(no_meta)

    legacy = tmp_path / "imatrix.dat"
    name = b"blk.1.attn_k.weight"
    blob = (
        struct.pack("<i", 1)
        + struct.pack("<i", len(name))
        + name
        + struct.pack("<ii", 5, 64)
        + sums.tobytes()
    )
    blob += struct.pack("<i", 10) + struct.pack("<i", 4) + b"data"
    legacy.write_bytes(blob)
    assert np.array_equal(read_imatrix(legacy)["blk.1.attn_k.weight"], sums / np.float32(5))


def test_imatrix_file_drives_both_quantizers(sources, tmp_path):
    src = sources["h576-tied-F32"]
    reader = gguf.GGUFReader(src)
    rng = np.random.default_rng(1)
    entries = {
        t.name: ((rng.random(int(t.shape[0])) * 4).astype(np.float32), np.array([3.0]))
        for t in reader.tensors
        if len(t.shape) == 2
    }
    imatrix_file = tmp_path / "im.gguf"
    _write_imatrix_gguf(imatrix_file, entries)
    values = read_imatrix(imatrix_file)
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    assert sqat_main(["quantize", str(src), str(ours), "IQ4_XS", "--imatrix", str(imatrix_file)]) == 0
    llama_model_quantize(src, theirs, recipes.file_type("IQ4_XS"), imatrix=values)
    assert ours.read_bytes() == theirs.read_bytes()
    without = tmp_path / "plain.gguf"
    requantize_gguf(src, without, "IQ4_XS", progress=False)
    assert without.read_bytes() != ours.read_bytes()  # the imatrix was really used


def test_quantize_cli_tensor_type_and_q2_k_s_imatrix(sources, tmp_path, capsys):
    src = sources["h256-untied-F32"]
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    # llama-quantize's own spelling: the pattern is lowercased, the type name case-insensitive
    args = ["--tensor-type", "FFN_UP=nvfp4", "--tensor-type", r"blk\.1\.=q2_k"]
    assert sqat_main(["quantize", str(src), str(ours), "Q3_K_M", *args]) == 0
    overrides = (("ffn_up", "NVFP4"), (r"blk\.1\.", "Q2_K"))
    llama_model_quantize(src, theirs, recipes.file_type("Q3_K_M"), tensor_type_overrides=overrides)
    assert ours.read_bytes() == theirs.read_bytes()
    capsys.readouterr()
    for bad, said in (("ffn_up", "PATTERN=TYPE"), ("ffn_up=Q9_9", "Q9_9"), ("(?i)ffn=Q8_0", "Python-only")):
        with pytest.raises(SystemExit):
            sqat_main(["quantize", str(src), str(ours), "Q3_K_M", "--tensor-type", bad])
        assert said in capsys.readouterr().err
    # Q2_K_S: refused without an imatrix, and with one that lacks a Q2_K tensor's entry (as llama.cpp does)
    out = tmp_path / "q2ks.gguf"
    with pytest.raises(SystemExit, match="needs an importance matrix"):
        sqat_main(["quantize", str(src), str(out), "Q2_K_S"])
    assert not out.exists()
    with pytest.raises(RuntimeError):
        llama_model_quantize(src, tmp_path / "theirs-q2ks.gguf", recipes.file_type("Q2_K_S"))
    rng = np.random.default_rng(3)
    imatrix = {
        t.name: (rng.random(int(t.shape[0])) + 0.1).astype(np.float32)
        for t in gguf.GGUFReader(src).tensors
        if len(t.shape) == 2
    }
    del imatrix["blk.2.ffn_up.weight"]
    with pytest.raises(ValueError, match=r"blk\.2\.ffn_up\.weight is Q2_K"):
        requantize_gguf(src, out, "Q2_K_S", imatrix=imatrix, progress=False)
    assert not out.exists()  # checked before the output is opened (llama.cpp leaves a partial file)
    with pytest.raises(RuntimeError):
        llama_model_quantize(src, out, recipes.file_type("Q2_K_S"), imatrix=imatrix)


def test_errors_and_atomicity(sources, tmp_path):
    q = tmp_path / "q.gguf"
    requantize_gguf(sources["h576-tied-F32"], q, "Q8_0", progress=False)
    with pytest.raises(ValueError, match="already-quantized"):
        requantize_gguf(q, tmp_path / "qq.gguf", "Q4_0", pure=True, progress=False)
    assert not (tmp_path / "qq.gguf").exists()
    with pytest.raises(ValueError, match="same file"):
        requantize_gguf(q, q, "Q4_0", progress=False)
    with pytest.raises(SystemExit, match="valid recipes"):
        sqat_main(["quantize", str(sources["h576-tied-F32"]), str(tmp_path / "x.gguf"), "Q9_9"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.gguf"]
