"""Coverage-guided fuzz target (atheris / libFuzzer) for every reader of untrusted files.

Each input is written to a file and given to what `sqat quantize`, the model import and `--imatrix` run:
requantize_gguf (container, Llama checks, NaN/Inf, the write), the import's metadata and tokenizer rebuild,
and read_imatrix (GGUF and legacy .dat). The only exception allowed is InputFileError with a one-line message
naming the file; anything else (a traceback), a hang past -timeout or memory past -rss_limit_mb is a crash.

Run (CI runs it for 60 s; the corpus folder is seeded with a tiny Llama GGUF and two imatrix files):

    python tests/fuzz_gguf.py -max_total_time=60 -timeout=20 -rss_limit_mb=4096 fuzz-corpus/

Not collected by pytest (the name does not start with test_).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["sqat_kernels", "gguf"]):
    import gguf
    from sqat_kernels.export import read_imatrix, requantize_gguf
    from sqat_kernels.gguf_checks import CheckedGGUF, InputFileError
    from sqat_kernels.models import llama_config_from_gguf, tokenizer_from_gguf
    from sqat_kernels.recipes import LlamaShape

_WORK = Path(tempfile.mkdtemp(prefix="sqat-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
_IN, _OUT = _WORK / "input.bin", _WORK / "out.gguf"
_TINY = LlamaShape(n_layer=1, n_embd=32, n_head=2, n_head_kv=1, n_ff=32, n_vocab=4, tied_embeddings=True)


def _seed_llama(path: Path) -> None:
    """A tiny, sound Llama GGUF (F32), written by gguf-py: four tokens, one merge."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(_TINY.n_layer)
    w.add_context_length(64)
    w.add_embedding_length(_TINY.n_embd)
    w.add_feed_forward_length(_TINY.n_ff)
    w.add_head_count(_TINY.n_head)
    w.add_head_count_kv(_TINY.n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(["a", "b", "ab", "<s>"])
    w.add_token_types([1, 1, 1, 3])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(3)
    rng = np.random.default_rng(0)
    for name, ne in _TINY.tensor_shapes().items():
        w.add_tensor(name, (0.05 * rng.standard_normal(tuple(reversed(ne)))).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _seed_imatrix(gguf_path: Path, dat_path: Path) -> None:
    """The same importance values in llama-imatrix's GGUF layout and in its legacy .dat layout."""
    names = [n for n, ne in _TINY.tensor_shapes().items() if len(ne) == 2]
    w = gguf.GGUFWriter(str(gguf_path), "imatrix")
    w.add_array("imatrix.datasets", ["seed.txt"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 512)
    blob = struct.pack("<i", len(names))
    for name in names:
        sums = np.arange(1, 33, dtype=np.float32)
        w.add_tensor(f"{name}.in_sum2", sums.reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.array([[2.0]], np.float32))
        blob += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 2, 32) + sums.tobytes()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    dat_path.write_bytes(blob + struct.pack("<ii", 1, 8) + b"seed.txt")


def seed_corpus(folder: Path) -> None:
    """Write the three seed files into `folder` unless it already holds files."""
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.iterdir()):
        _seed_llama(folder / "tiny-llama-F32.gguf")
        _seed_imatrix(folder / "imatrix.gguf", folder / "imatrix.dat")


def _expect_clean(call) -> None:
    try:
        call()
    except InputFileError as exc:
        msg = str(exc)
        if "\n" in msg or not msg.startswith(f"{_IN}: "):
            raise AssertionError(f"badly formed message: {msg!r}") from exc
    finally:
        _OUT.unlink(missing_ok=True)
    if any(p.name.endswith(".partial") for p in _WORK.iterdir()):
        raise AssertionError("a partial output file was left behind")


def test_one_input(data: bytes) -> None:
    """The libFuzzer entry point: one input through every reader."""
    _IN.write_bytes(data)
    _expect_clean(lambda: requantize_gguf(_IN, _OUT, "Q8_0", progress=False))
    _expect_clean(lambda: read_imatrix(_IN))
    if data[:4] == b"GGUF":

        def import_metadata() -> None:
            g = CheckedGGUF(_IN)
            llama_config_from_gguf(g)
            tokenizer_from_gguf(g)

        _expect_clean(import_metadata)


def main() -> None:
    """Seed the corpus folders named on the command line, then hand over to libFuzzer."""
    for arg in sys.argv[1:]:
        if not arg.startswith("-"):
            seed_corpus(Path(arg))
    # The import path loads transformers on first use; loaded here, its seconds do not count against the
    # first input that reaches it (-timeout would call that a hang).
    import transformers  # noqa: F401

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
