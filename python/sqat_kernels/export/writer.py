"""Writing a GGUF file atomically, tensor by tensor (one tensor's working set in memory at a time)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on any error remove it.

    An existing file at `path` stays untouched unless the whole write succeeded.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); the finished file gets the mode a plain open() would give
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_gguf(
    path: str | os.PathLike[str],
    writer_setup: Callable[[gguf.GGUFWriter], None],
    tensors: list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType, int]],
    produce: Callable[[str], np.ndarray],
    *,
    progress: bool = True,
) -> None:
    """Write a GGUF file: metadata from `writer_setup`, then each tensor's bytes from `produce(name)`.

    tensors: (name, numpy shape of the float tensor [ne1, ne0] / [ne0], GGUF type, byte size), in file
    order. produce(name) returns the tensor's data (float32 array for F32, packed uint8 rows otherwise); it is
    called once per tensor, in order, so only one tensor is held at a time. Atomic (see atomic_path);
    an OSError (e.g. a full disk) is re-raised naming the destination.
    """
    dest = Path(path)
    try:
        with atomic_path(dest) as tmp:
            writer = gguf.GGUFWriter(tmp, "llama")
            try:
                _write(writer, writer_setup, tensors, produce, dest.name, progress)
            finally:
                writer.close()
    except OSError as exc:
        raise OSError(exc.errno, f"could not write {dest}: {exc.strerror or exc}") from exc


def _write(writer: gguf.GGUFWriter, writer_setup, tensors, produce, label: str, progress: bool) -> None:
    writer_setup(writer)
    for name, shape, qtype, nbytes in tensors:
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes)
        else:  # every other type arrives as packed bytes (F16 and BF16 included)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            byte_shape = (*shape[:-1], shape[-1] // block * type_size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tensors), desc=f"writing {label}", unit="tensor")
    for name, _, _, nbytes in tensors:
        data = produce(name)
        if data.nbytes != nbytes:
            raise RuntimeError(f"{name}: produced {data.nbytes} bytes, expected {nbytes}")
        writer.write_tensor_data(data)
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)
    if bar is not None:
        bar.close()
