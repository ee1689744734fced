"""Every script in examples/ runs to the end with quick settings, so none can rot unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# example -> (quick arguments after --out DIR, files it must leave in DIR)
QUICK = {
    "qat_own_loop.py": (["--steps", "4", "--recipe", "Q4_0"], ["model-Q4_0.gguf"]),
}


def test_every_example_has_quick_settings():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(QUICK)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_example_runs(name, tmp_path):
    args, outputs = QUICK[name]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for out in outputs:
        reader = gguf.GGUFReader(tmp_path / out)
        assert len(reader.tensors) > 0, out
    assert "llama.cpp:" in proc.stdout
