"""Float32 views of a Hugging Face checkpoint's tensors, read straight from its safetensors files.

No torch, no copy of the whole model: each file is memory-mapped and a tensor is materialised (widened to
float32 when stored as F16/BF16, which is exact) only when asked for, so an export holds about one tensor at
a time.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(
        f"{model_dir} holds no model.safetensors (or index): only safetensors checkpoints are read"
    )


def _header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


class SafetensorsCheckpoint:
    """The tensors of a Hugging Face safetensors checkpoint (one file or an index of shards), by name.

    `names` lists them as the converter meets them (files by name, names sorted within a file, as
    safetensors' keys() gives them); `get(name)` returns a float32 array read from the memory map then.
    """

    def __init__(self, model_dir: str | Path) -> None:
        self._where: dict[str, tuple[Path, int, dict]] = {}
        self.names: list[str] = []
        self._maps: dict[Path, np.memmap] = {}
        for path in _files(Path(model_dir)):
            header, start = _header(path)
            for name in sorted(header):
                self._where[name] = (path, start, header[name])
                self.names.append(name)

    def get(self, name: str) -> np.ndarray:
        path, start, info = self._where[name]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path.name}: {name} is {info['dtype']}; F32, F16 and BF16 are supported")
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
        begin, end = info["data_offsets"]
        values = self._maps[path][start + begin : start + end].view(dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":
            return (values.astype(np.uint32) << 16).view(np.float32)
        return np.array(values, dtype=np.float32)
