"""Ctrl-C during `sqat quantize`, `sqat export` and `sqat train`: a real SIGINT to a real process in the
middle of writing leaves no partial file, keeps an older output intact (or, for train, a loadable
checkpoint), and exits 130 with one line.

Timing is made deterministic without touching the code under test: the child's stderr is a pipe the test
has filled to the brim beforehand, so the child blocks on its first progress-bar write, which comes after
the temporary output was created and its header written. The signal then reaches a process that is
certainly in the middle of writing; the test drains the pipe afterwards so that the child can finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqat_kernels.export import export_gguf
from tiny_models import save_tiny_model_dir

SQAT = str(Path(sys.executable).with_name("sqat"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    model_dir = save_tiny_model_dir(root / "hf", hidden=64, heads=4, kv=2, ff=128, layers=2, tied=False)
    f32 = root / "model-F32.gguf"
    export_gguf(model_dir, f32, "F32", progress=False)
    return {"model_dir": model_dir, "f32": f32}


def _full_pipe() -> tuple[int, int, int]:
    """(read end, write end, bytes already in it): a pipe whose buffer is full."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    filled = 0
    for size in (4096, 1):
        try:
            while True:
                filled += os.write(w, b"\0" * size)
        except BlockingIOError:
            pass
    os.set_blocking(w, True)
    return r, w, filled


def _interrupt_while_writing(argv: list[str], out_dir: Path) -> tuple[int, str]:
    r, w, filled = _full_pipe()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [SQAT, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w, env=env
    )
    os.close(w)
    try:
        deadline = time.monotonic() + 120
        while not list(out_dir.glob(".*.partial")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no partial output appeared (exit status {proc.poll()})")
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        with os.fdopen(r, "rb") as pipe:
            err = pipe.read()  # until the child exits: this unblocks it
        return proc.wait(timeout=60), err[filled:].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("command", ["quantize", "export"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-output", "existing-output"])
def test_ctrl_c_leaves_no_partial_file(sources, tmp_path, command, existing):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.gguf"
    if existing:
        out.write_bytes(b"an older file")
    if command == "quantize":
        argv = ["quantize", str(sources["f32"]), str(out), "IQ4_XS", "--threads", "1"]
    else:
        argv = ["export", str(sources["model_dir"]), str(out), "--type", "IQ4_XS", "--threads", "1"]
    status, err = _interrupt_while_writing(argv, out_dir)
    assert status == 130, err
    assert err.rstrip().endswith("sqat: interrupted") and "Traceback" not in err, err
    assert [p.name for p in out_dir.iterdir()] == (["model.gguf"] if existing else [])
    if existing:
        assert out.read_bytes() == b"an older file"


def test_ctrl_c_during_sqat_train_keeps_a_loadable_checkpoint(sources, tmp_path):
    import torch
    from tiny_models import TEXT

    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    argv = ["train", "--model", str(sources["model_dir"]), "--data", str(data), "--recipe", "Q4_0"]
    argv += ["--pure", "--seq-len", "16", "--batch", "2", "--threads", "1", "--out", str(out)]
    argv += ["--steps", "600", "--checkpoint-every", "3", "--loss", "kl"]
    checkpoint = out / "checkpoint" / "checkpoint.pt"
    proc = subprocess.Popen(
        [SQAT, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists():
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        time.sleep(0.3)  # a few more steps, so the signal may land inside a checkpoint write too
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        pytest.fail("the run finished before the signal arrived; the test needs a longer run")
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("sqat: interrupted") and "Traceback" not in err, err
    # no model folder (the run never finished), no half-written file anywhere
    assert not (out / "model").exists() and not (out / "model.tmp").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    state = torch.load(checkpoint, weights_only=False)
    assert 0 < state["step"] < 600
    # and the run resumes from it to the end
    done = subprocess.run([SQAT, *argv], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == list(range(600))
    assert (out / "model" / "sqat_qat.json").is_file()
