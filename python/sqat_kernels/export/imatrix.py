"""Reading llama.cpp importance-matrix files (the GGUF format of llama-imatrix, and the legacy .dat format).

The values are what llama-quantize hands to the quantizer: per tensor, the sums of squared activations
divided by their count (GGUF: per-expert `<name>.counts`; a zero count gives 1.0), as float32.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import gguf
import numpy as np

_GGUF_MAGIC = b"GGUF"
_META_KEYS = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")


def read_imatrix(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 importance weights (ne0 per expert), as llama-quantize loads them."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == _GGUF_MAGIC:
        return _read_gguf(path)
    return _read_legacy(path)


def _read_gguf(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    missing = [k for k in _META_KEYS if k not in reader.fields]
    if missing:
        raise ValueError(f"{path}: not an imatrix file (missing {', '.join(missing)})")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        for suffix, store in ((".in_sum2", sums), (".counts", counts)):
            if t.name.endswith(suffix):
                if t.tensor_type != gguf.GGMLQuantizationType.F32:
                    raise ValueError(f"{path}: {t.name} must be F32, not {t.tensor_type.name}")
                store[t.name[: -len(suffix)]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    if set(sums) != set(counts):
        raise ValueError(f"{path}: sums and counts do not pair up for {sorted(set(sums) ^ set(counts))[:5]}")
    out = {}
    for name, s in sums.items():
        # llama.cpp rounds the counts to integers (lround: half away from zero; counts are >= 0).
        c = np.floor(counts[name].astype(np.float64) + 0.5).astype(np.float32)
        per = s.reshape(c.size, -1)
        values = np.empty_like(per)
        for j, cj in enumerate(c):
            values[j] = per[j] / cj if cj > 0 else np.float32(1.0)
        out[name] = values.reshape(-1)
    return out


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ValueError(f"{path}: truncated legacy imatrix file")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise ValueError(f"{path}: not an imatrix file (no entries)")
    out = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        name = data[pos : pos + length].decode("utf-8")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1:
            raise ValueError(f"{path}: entry {name!r} has no values")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        out[name] = sums / np.float32(ncall) if ncall > 0 else sums.copy()
    return out
