"""Reading llama.cpp importance-matrix files (the GGUF format of llama-imatrix, and the legacy .dat format).

The values are what llama-quantize hands to the quantizer: per tensor, the sums of squared activations
divided by their count (GGUF: per-expert `<name>.counts`; a zero count gives 1.0), as float32.

The files come from anywhere, so both readers check every length against the bytes left before reading
it (the GGUF container through gguf_checks), and refuse, with an InputFileError naming the file and the
offset or entry, anything llama-quantize could not use: unpaired or mistyped tensors, non-finite or
negative values, duplicate names.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np

from ..gguf_checks import ByteCursor, CheckedGGUF, InputFileError, show

_GGUF_MAGIC = b"GGUF"
_META_KEYS = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
_SUFFIXES = (".in_sum2", ".counts")


def read_imatrix(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 importance weights (ne0 per expert), as llama-quantize loads them.

    Raises InputFileError (a ValueError) for a file that is neither a sound imatrix GGUF nor a sound
    legacy .dat file; OSError when it cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == _GGUF_MAGIC:
        return _read_gguf(path)
    return _read_legacy(path)


def _finite_nonnegative(path: Path, where: str, values: np.ndarray) -> None:
    bad = ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputFileError(path, where, f"expected finite values >= 0, found {values[i]} at index {i}")


def _read_gguf(path: Path) -> dict[str, np.ndarray]:
    g = CheckedGGUF(path)
    missing = [k for k in _META_KEYS if k not in g.layout.fields]
    if missing:
        raise g.error("metadata", f"expected the keys of an imatrix file, missing {', '.join(missing)}")
    sums: dict[str, gguf.ReaderTensor] = {}
    counts: dict[str, gguf.ReaderTensor] = {}
    for t in g.reader.tensors:
        where = f"tensor {show(t.name)}"
        suffix = next((s for s in _SUFFIXES if t.name.endswith(s) and len(t.name) > len(s)), None)
        if suffix is None:
            raise g.error(where, "expected a name ending in .in_sum2 or .counts")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise g.error(where, f"expected type F32, found {t.tensor_type.name}")
        (sums if suffix == ".in_sum2" else counts)[t.name[: -len(suffix)]] = t
    unpaired = sorted(set(sums) ^ set(counts))
    if unpaired:
        name = unpaired[0]
        have, lack = (".in_sum2", ".counts") if name in sums else (".counts", ".in_sum2")
        raise g.error(f"tensor {show(name + have)}", f"expected a matching {show(name + lack)}, found none")
    out = {}
    for name, s_t in sums.items():
        c_t = counts[name]
        s = np.asarray(s_t.data, dtype=np.float32).reshape(-1)
        c_raw = np.asarray(c_t.data, dtype=np.float32).reshape(-1)
        # llama-imatrix writes in_sum2 as [ne0, n_mat] and counts as [1, n_mat]; a flat in_sum2 of
        # n_mat * ne0 values is read the same way.
        n_mat = c_raw.size
        if n_mat < 1 or s.size < n_mat or s.size % n_mat:
            raise g.error(
                f"tensor {show(c_t.name)}",
                f"expected a count per matrix of {show(s_t.name)} ({s.size} values), found {n_mat} counts",
            )
        _finite_nonnegative(path, f"tensor {show(s_t.name)}", s)
        _finite_nonnegative(path, f"tensor {show(c_t.name)}", c_raw)
        # llama.cpp rounds the counts to integers (lround: half away from zero; counts are >= 0).
        c = np.floor(c_raw.astype(np.float64) + 0.5).astype(np.float32)
        per = s.reshape(n_mat, -1)
        values = np.empty_like(per)
        for j, cj in enumerate(c):
            values[j] = per[j] / cj if cj > 0 else np.float32(1.0)
        out[name] = values.reshape(-1)
    return out


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise InputFileError(
                path, "byte 0", "expected an imatrix file (GGUF or legacy .dat), found an empty file"
            )
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse_legacy(ByteCursor(buf, path), path)


def _parse_legacy(cur: ByteCursor, path: Path) -> dict[str, np.ndarray]:
    """Legacy layout: int32 n_entries; per entry int32 name length, name, int32 ncall, int32 nval, nval
    float32 sums; then optionally int32 last chunk and int32 length + the dataset name (the whole trailer
    or none of it)."""
    (n_entries,) = cur.unpack("i", "the entry count of an imatrix file (not GGUF, so the legacy .dat format)")
    # An entry takes at least 4 + 1 + 4 + 4 + 4 bytes.
    if not 1 <= n_entries <= cur.remaining // 17:
        raise cur.error(
            f"expected an imatrix file: GGUF, or legacy .dat with 1 to {cur.remaining // 17} entries "
            f"(what the file's size allows), found entry count {n_entries}",
            0,
        )
    out: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        at = cur.pos
        (length,) = cur.unpack("i", f"the name length of entry {i}")
        if not 1 <= length <= cur.remaining:
            raise cur.error(
                f"expected a name length from 1 to {cur.remaining} for entry {i}, found {length}", at
            )
        name = cur.text(length, f"the name of entry {i}")
        if name in out:
            raise cur.error(f"expected unique entry names, found {show(name)} twice", at)
        at = cur.pos
        ncall, nval = cur.unpack("ii", f"the call and value counts of entry {show(name)}")
        if ncall < 0:
            raise cur.error(f"expected a call count >= 0 for entry {show(name)}, found {ncall}", at)
        if not 1 <= nval <= cur.remaining // 4:
            raise cur.error(
                f"expected 1 to {cur.remaining // 4} values for entry {show(name)} (what the rest of the "
                f"file holds), found {nval}",
                at + 4,
            )
        sums = np.frombuffer(cur.buf, dtype="<f4", count=nval, offset=cur.pos).astype(np.float32)
        cur.skip(4 * nval, f"the values of entry {show(name)}")
        _finite_nonnegative(path, f"entry {show(name)}", sums)
        out[name] = sums / np.float32(ncall) if ncall > 0 else sums
    if cur.remaining:
        at = cur.pos
        cur.unpack("i", "the last chunk number of the trailer")
        (length,) = cur.unpack("i", "the dataset name length of the trailer")
        if not 0 <= length <= cur.remaining:
            raise cur.error(
                f"expected a dataset name length from 0 to {cur.remaining}, found {length}", at + 4
            )
        cur.skip(length, "the dataset name of the trailer")
        if cur.remaining:
            raise cur.error(
                f"expected the end of the file after the trailer, found {cur.remaining} more bytes"
            )
    return out


def check_imatrix_matches(imatrix: Mapping[str, np.ndarray], ne0_of: Mapping[str, int], source: str) -> None:
    """Refuse imatrix entries that name no tensor of the model, or whose length is not the tensor's row
    length (ne0). `source` names the imatrix (its file) in the message."""
    for name, values in imatrix.items():
        if name not in ne0_of:
            raise InputFileError(
                source, f"entry {show(name)}", "expected the name of a tensor of the model, found none"
            )
        n = np.asarray(values).size
        if n != ne0_of[name]:
            raise InputFileError(
                source,
                f"entry {show(name)}",
                f"expected {ne0_of[name]} values (the tensor's row length), found {n}",
            )
