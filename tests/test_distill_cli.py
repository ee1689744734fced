"""`sqat distill` end to end on a tiny random Llama: a file llama.cpp runs, resume after Ctrl-C, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqat_kernels.cli import main as sqat_main
from tiny_models import TEXT, save_tiny_model_dir

TINY = [
    "--recipe",
    "Q4_0",
    "--pure",
    "--seq-len",
    "16",
    "--batch",
    "2",
    "--imatrix-batches",
    "2",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    model = save_tiny_model_dir(root / "model")
    text = root / "text.txt"
    text.write_text(TEXT)
    return model, text


def _cmd(model: Path, text: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", str(model), str(out), "--data", str(text), *TINY, *extra]


def test_distill_writes_a_file_llama_cpp_runs(tiny, tmp_path, capsys):
    from llama_cpp import Llama

    model, text = tiny
    out = tmp_path / "tiny-Q4_0.gguf"
    assert sqat_main(_cmd(model, text, out, "--steps", "6")) == 0
    assert "wrote" in capsys.readouterr().out
    work = Path(f"{out}.work")
    assert (work / "imatrix.npz").is_file() and (work / "train_log.json").is_file()
    assert not (work / "checkpoint.pt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    llm = Llama(model_path=str(out), n_ctx=32, verbose=False)
    try:
        llm.eval(llm.tokenize(b"Shall I compare thee", add_bos=True))
        assert llm.n_tokens > 0
    finally:
        llm.close()


def test_distill_resumes_after_ctrl_c_to_the_same_bytes(tiny, tmp_path):
    model, text = tiny
    whole = tmp_path / "whole.gguf"
    # long enough that the signal lands mid-run (a tiny model's step takes milliseconds)
    args = ["--steps", "400", "--checkpoint-every", "2"]
    assert sqat_main(_cmd(model, text, whole, *args)) == 0

    out = tmp_path / "resumed.gguf"
    work = Path(f"{out}.work")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from sqat_kernels.cli import main; sys.exit(main())",
            *_cmd(model, text, out, *args),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while not (work / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    if proc.returncode == 0:
        pytest.fail("the run finished before the signal arrived; the test needs a slower run")
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert not out.exists(), "an interrupted run left an output file"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]

    assert sqat_main(_cmd(model, text, out, *args)) == 0
    assert out.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, t: a.__setitem__(1, str(t / "missing-model")), "not a Hugging Face model directory"),
        (lambda a, t: a.__setitem__(2, str(t / "no-such-dir" / "x.gguf")), "does not exist"),
        (lambda a, t: a.__setitem__(2, str(t)), "is a directory"),
        (lambda a, t: a.extend(["--steps", "0"]), "steps must be a positive"),
        (lambda a, t: a.extend(["--threads", "-3"]), "threads must be positive"),
        (lambda a, t: a.extend(["--recipe", "Q3_XYZ"]), "Q3_XYZ"),
        (lambda a, t: a.extend(["--temperature", "0"]), "temperature"),
        (lambda a, t: a.extend(["--data", str(t / "nothing.txt")]), "does not exist"),
    ],
    ids=["model", "out-folder", "out-is-dir", "steps", "threads", "recipe", "temperature", "data"],
)
def test_bad_input_is_refused_before_anything_is_written(tiny, tmp_path, change, message, capsys):
    model, text = tiny
    args = _cmd(model, text, tmp_path / "out.gguf", "--steps", "2")
    change(args, tmp_path)
    with pytest.raises(SystemExit) as exc:
        sqat_main(args)
    assert message in str(exc.value)
    assert str(exc.value).startswith("sqat distill: ")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out.gguf").exists() and not Path(f"{tmp_path / 'out.gguf'}.work").exists()


def test_a_work_folder_of_other_settings_is_not_resumed(tiny, tmp_path):
    model, text = tiny
    out = tmp_path / "a.gguf"
    work = tmp_path / "work"
    assert sqat_main(_cmd(model, text, out, "--steps", "2", "--work-dir", str(work))) == 0
    with pytest.raises(SystemExit, match="other settings"):
        sqat_main(_cmd(model, text, out, "--steps", "3", "--work-dir", str(work)))
    assert sqat_main(_cmd(model, text, out, "--steps", "3", "--work-dir", str(work), "--no-resume")) == 0
