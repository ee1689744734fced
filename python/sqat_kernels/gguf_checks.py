"""Checks of untrusted GGUF files, run before the gguf package's reader maps them.

gguf-py's `GGUFReader` trusts its input: a file cut short in its header ends in an IndexError, one cut short
in its tensor data in a NumPy dtype error, a nested array recurses without bound. `check_gguf` walks the
container the way llama.cpp's gguf.cpp reads it (header, metadata, tensor records, data section) and proves
that every count, length, offset and size fits inside the file before anything is allocated from it: a
header claiming 2^60 tensors or a 2^40-byte string is refused from its first bytes. Only then does
`open_gguf` hand the file to `GGUFReader`, which can no longer fail on it.

Every refusal is an `InputFileError` (a ValueError), one line: the file, the byte offset, metadata key or
tensor, and what was expected there. `CheckedGGUF` adds typed metadata getters and the non-finite check for
decoded tensors, so the commands that read GGUF files (quantize, import, imatrix) report alike.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME - 1 (the name is stored NUL-terminated in ggml)
# Total metadata array items a file may hold. GGUFReader keeps NumPy views per item (two per string):
# measured ~1 KB and ~28 us per item, so this caps its memory near 1 GiB and its time near 30 s whatever
# the header says. The largest real vocabularies hold fewer: SmolLM2 1.5e5 items (tokens, types, merges),
# Llama 3 5.4e5, Gemma 3 7.9e5.
MAX_ARRAY_ITEMS = 1 << 20
INT64_MAX = (1 << 63) - 1

_V = gguf.GGUFValueType
_SCALAR_FORMATS = {
    _V.UINT8: "B",
    _V.INT8: "b",
    _V.UINT16: "H",
    _V.INT16: "h",
    _V.UINT32: "I",
    _V.INT32: "i",
    _V.FLOAT32: "f",
    _V.BOOL: "?",
    _V.UINT64: "Q",
    _V.INT64: "q",
    _V.FLOAT64: "d",
}
INTEGER_TYPES = frozenset({_V.UINT8, _V.INT8, _V.UINT16, _V.INT16, _V.UINT32, _V.INT32, _V.UINT64, _V.INT64})
FLOAT_TYPES = frozenset({_V.FLOAT32, _V.FLOAT64})


class InputFileError(ValueError):
    """An input file is not what it claims to be.

    Attributes: path (the file), where (a byte offset, metadata key, tensor or entry), problem (what was
    expected and what was found). str() is the one-line message "path: where: problem".
    """

    def __init__(self, path: str | os.PathLike[str], where: str, problem: str) -> None:
        self.path, self.where, self.problem = str(path), where, problem
        super().__init__(f"{path}: {where}: {problem}")


def show(text: str, limit: int = 80) -> str:
    """`text` as it can appear in a one-line message: printable and short, else escaped and cut."""
    if len(text) <= limit and text.isprintable() and text.strip() == text and text:
        return text
    cut = text[:limit]
    return ascii(cut) + ("..." if len(text) > limit else "")


class ByteCursor:
    """Bounds-checked little-endian reads from a byte buffer; every failure names the file and the offset."""

    def __init__(self, buf: Any, path: str | os.PathLike[str]) -> None:
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def error(self, problem: str, at: int | None = None) -> InputFileError:
        return InputFileError(self.path, f"byte {self.pos if at is None else at}", problem)

    def need(self, n: int, what: str) -> None:
        """Refuse unless `n` more bytes are in the file (before reading or allocating anything for them)."""
        if n > self.remaining:
            raise self.error(f"expected {what} ({n} bytes), but the file ends at byte {self.size}")

    def unpack(self, fmt: str, what: str) -> tuple:
        """struct.unpack of '<' + fmt at the cursor, then advance past it."""
        size = struct.calcsize("<" + fmt)
        self.need(size, what)
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return values

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n

    def text(self, n: int, what: str) -> str:
        """n bytes of UTF-8 text at the cursor (n already bounded by the caller's length check)."""
        start = self.pos
        self.need(n, what)
        raw = bytes(self.buf[start : start + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(
                f"expected {what} in UTF-8, found an invalid byte at +{exc.start}", start
            ) from None


@dataclass(frozen=True)
class FieldRecord:
    """One metadata key/value: its type (and item type and count for arrays) and where its key starts."""

    value_type: gguf.GGUFValueType
    item_type: gguf.GGUFValueType | None
    count: int
    at: int


@dataclass(frozen=True)
class TensorRecord:
    """One tensor record: type, ne (ne0 first), data offset (from the data section's start), byte size."""

    name: str
    qtype: gguf.GGMLQuantizationType
    ne: tuple[int, ...]
    offset: int
    nbytes: int
    at: int


@dataclass(frozen=True)
class GGUFLayout:
    """What check_gguf proved about a file: every field and tensor lies inside it."""

    path: Path
    version: int
    alignment: int
    data_offset: int
    file_size: int
    fields: dict[str, FieldRecord]
    tensors: tuple[TensorRecord, ...]


def _read_string(cur: ByteCursor, what: str, max_len: int | None = None) -> str:
    at = cur.pos
    (n,) = cur.unpack("Q", f"the length of {what}")
    if n > cur.remaining:
        raise cur.error(
            f"expected {what} of at most {cur.remaining} bytes (the rest of the file), found length {n}", at
        )
    if max_len is not None and n > max_len:
        raise cur.error(f"expected {what} of at most {max_len} bytes, found length {n}", at)
    return cur.text(n, what)


def _value_type(cur: ByteCursor, raw: int, what: str, at: int) -> gguf.GGUFValueType:
    try:
        return gguf.GGUFValueType(raw)
    except ValueError:
        known = f"0 to {max(int(v) for v in gguf.GGUFValueType)}"
        raise cur.error(f"expected a GGUF value type ({known}) for {what}, found {raw}", at) from None


def _walk_value(cur: ByteCursor, key: str, budget: list[int]) -> FieldRecord:
    """Walk one metadata value (after its key); return its record. budget[0]: array items still allowed."""
    key_at = cur.pos
    (raw,) = cur.unpack("I", f"the value type of {show(key)}")
    vtype = _value_type(cur, raw, show(key), key_at)
    if vtype in _SCALAR_FORMATS:
        cur.unpack(_SCALAR_FORMATS[vtype], f"the {vtype.name} value of {show(key)}")
        return FieldRecord(vtype, None, 1, key_at)
    if vtype == _V.STRING:
        _read_string(cur, f"the string value of {show(key)}")
        return FieldRecord(vtype, None, 1, key_at)
    # An array: item type, count, items. Nested arrays are refused, as llama.cpp does.
    at = cur.pos
    (raw_item,) = cur.unpack("I", f"the item type of array {show(key)}")
    item = _value_type(cur, raw_item, f"the items of {show(key)}", at)
    if item == _V.ARRAY:
        raise cur.error(
            f"expected a scalar or string item type for array {show(key)}, found a nested array", at
        )
    at = cur.pos
    (count,) = cur.unpack("Q", f"the item count of array {show(key)}")
    item_size = 8 if item == _V.STRING else struct.calcsize("<" + _SCALAR_FORMATS[item])
    if count > cur.remaining // item_size:
        raise cur.error(
            f"expected at most {cur.remaining // item_size} items in array {show(key)} (the rest of the "
            f"file holds no more), found count {count}",
            at,
        )
    if count > budget[0]:
        raise cur.error(
            f"expected at most {MAX_ARRAY_ITEMS} metadata array items in the whole file, found array "
            f"{show(key)} of {count} items beyond the {MAX_ARRAY_ITEMS - budget[0]} before it",
            at,
        )
    budget[0] -= count
    if item == _V.STRING:
        _walk_strings(cur, key, count)
    else:
        cur.skip(count * item_size, f"the {count} {item.name} items of array {show(key)}")
    return FieldRecord(vtype, item, count, key_at)


def _walk_strings(cur: ByteCursor, key: str, count: int) -> None:
    """Walk `count` strings (a vocabulary: tens of thousands); the message is built only on a failure."""
    buf, size, pos = cur.buf, cur.size, cur.pos
    unpack = struct.Struct("<Q").unpack_from
    for i in range(count):
        if pos + 8 <= size:
            (n,) = unpack(buf, pos)
            end = pos + 8 + n
            if end <= size:
                try:
                    bytes(buf[pos + 8 : end]).decode("utf-8")
                    pos = end
                    continue
                except UnicodeDecodeError:
                    pass
        cur.pos = pos
        _read_string(cur, f"item {i} of array {show(key)}")  # raises, with the message
        raise AssertionError("unreachable: the fast path refused a sound string")
    cur.pos = pos


def _read_tensor_record(cur: ByteCursor, index: int, names: set[str]) -> tuple:
    at = cur.pos
    name = _read_string(cur, f"the name of tensor {index}")
    if not name:
        raise cur.error(f"expected a non-empty name for tensor {index}", at)
    if len(name.encode()) > MAX_TENSOR_NAME:
        raise cur.error(f"expected a tensor name of at most {MAX_TENSOR_NAME} bytes, found {show(name)}", at)
    if name in names:
        raise cur.error(f"expected unique tensor names, found {show(name)} twice", at)
    names.add(name)
    where = f"tensor {show(name)}"
    dims_at = cur.pos
    (n_dims,) = cur.unpack("I", f"the dimension count of {where}")
    # llama.cpp also takes 0 dimensions (a scalar): gguf-py cannot shape a block-type one, no model has one.
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.error(f"expected 1 to {MAX_DIMS} dimensions for {where}, found {n_dims}", dims_at)
    ne = cur.unpack("Q" * n_dims, f"the {n_dims} dimensions of {where}")
    n_elements, extent = 1, 1
    for d in ne:
        if d > INT64_MAX:
            raise cur.error(f"expected dimensions below 2^63 for {where}, found {ne}", dims_at)
        n_elements *= d
        extent *= max(d, 1)
    if n_elements > INT64_MAX:
        raise cur.error(f"expected at most 2^63-1 elements in {where}, found shape {ne}", dims_at)
    type_at = cur.pos
    (raw_type,) = cur.unpack("I", f"the type of {where}")
    try:
        qtype = gguf.GGMLQuantizationType(raw_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise cur.error(
            f"expected a known ggml type for {where}, found type id {raw_type}", type_at
        ) from None
    # The byte extent without the zero dimensions is bounded too: NumPy refuses to shape even an empty
    # F32 array as (0, 2^61), and gguf-py shapes every tensor.
    if extent * type_size > INT64_MAX:
        raise cur.error(
            f"expected at most 2^63-1 bytes in {where} counting its non-zero dimensions, found shape {ne}",
            dims_at,
        )
    if ne[0] % block:
        raise cur.error(
            f"expected a row length that is a multiple of {block} ({qtype.name} blocks) for {where}, "
            f"found ne0 = {ne[0]}",
            dims_at,
        )
    off_at = cur.pos
    (offset,) = cur.unpack("Q", f"the data offset of {where}")
    return name, qtype, tuple(ne), offset, n_elements // block * type_size, at, off_at


def check_gguf(path: str | os.PathLike[str]) -> GGUFLayout:
    """Walk a GGUF file's structure and prove it sound; return its layout or raise InputFileError.

    Checked: magic, version (2 or 3, little-endian), metadata and tensor counts bounded by the file size,
    every string length bounded by the bytes left and valid UTF-8, known value types (no nested arrays),
    unique keys and tensor names (at most 63 bytes), general.alignment a UINT32 power of two, at most
    MAX_ARRAY_ITEMS metadata array items, tensors of 1 to 4 dimensions whose element counts fit in int64
    (and their bytes, counting non-zero dimensions only, in NumPy's limit), of known ggml types with rows a
    whole number of blocks, offsets aligned, data inside the file's data section, no two tensors overlapping.
    Memory used: the names and keys, never a size read from the file. OSError (missing, unreadable
    file) passes through.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise InputFileError(path, "byte 0", "expected the GGUF magic 'GGUF', found an empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _check(ByteCursor(buf, path), path)


def _check(cur: ByteCursor, path: Path) -> GGUFLayout:
    magic = bytes(cur.buf[:4])
    if magic != GGUF_MAGIC:
        if len(magic) < 4:
            raise cur.error(f"expected the GGUF magic 'GGUF', but the file ends at byte {cur.size}")
        raise cur.error(f"expected the GGUF magic 'GGUF', found {magic!r}")
    cur.pos = 4
    (version,) = cur.unpack("I", "the GGUF version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and version:
            raise cur.error("expected a little-endian GGUF file, found a big-endian one", 4)
        raise cur.error(f"expected GGUF version 2 or 3, found {version}", 4)
    n_tensors, n_kv = cur.unpack("QQ", "the tensor and metadata counts")
    # Lower bounds on a record's size bound the counts by the bytes left, before any loop or allocation:
    # a metadata record takes at least 8 + 1 + 4 + 1 bytes, a tensor record at least 8 + 1 + 4 + 4 + 8.
    if n_kv > cur.remaining // 14:
        raise cur.error(
            f"expected at most {cur.remaining // 14} metadata entries (the rest of the file holds no more), "
            f"found count {n_kv}",
            16,
        )
    if n_tensors > cur.remaining // 25:
        raise cur.error(
            f"expected at most {cur.remaining // 25} tensors (the rest of the file holds no more), "
            f"found count {n_tensors}",
            8,
        )
    fields: dict[str, FieldRecord] = {}
    budget = [MAX_ARRAY_ITEMS]
    for i in range(n_kv):
        at = cur.pos
        key = _read_string(cur, f"the key of metadata entry {i}")
        if not key:
            raise cur.error(f"expected a non-empty key for metadata entry {i}", at)
        if key in fields:
            raise cur.error(f"expected unique metadata keys, found {show(key)} twice", at)
        record = _walk_value(cur, key, budget)
        fields[key] = FieldRecord(record.value_type, record.item_type, record.count, at)
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    align = fields.get("general.alignment")
    if align is not None:
        if align.value_type != _V.UINT32:
            raise InputFileError(
                path, "metadata general.alignment", f"expected a UINT32, found {align.value_type.name}"
            )
        alignment = _scalar_at(cur, "general.alignment", align)
        if alignment == 0 or alignment & (alignment - 1):
            raise InputFileError(
                path, "metadata general.alignment", f"expected a power of two, found {alignment}"
            )
    names: set[str] = set()
    raw = [_read_tensor_record(cur, i, names) for i in range(n_tensors)]
    data_offset = -(-cur.pos // alignment) * alignment
    data_size = max(cur.size - data_offset, 0)
    tensors = []
    for name, qtype, ne, offset, nbytes, at, off_at in raw:
        where = f"tensor {show(name)}"
        if offset % alignment:
            raise cur.error(
                f"expected a data offset of {where} aligned to {alignment} bytes, found {offset}", off_at
            )
        if offset > data_size or nbytes > data_size - offset:
            raise cur.error(
                f"expected {where}'s {nbytes} bytes at data offset {offset} to lie inside the data section "
                f"({data_size} bytes from byte {data_offset}), but the file ends at byte {cur.size}",
                off_at,
            )
        tensors.append(TensorRecord(name, qtype, ne, offset, nbytes, at))
    by_offset = sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset)
    for before, after in zip(by_offset, by_offset[1:], strict=False):
        if after.offset < before.offset + before.nbytes:
            raise InputFileError(
                path,
                f"tensor {show(after.name)}",
                f"expected data that does not overlap another tensor's, found data offset {after.offset} "
                f"inside {show(before.name)} ({before.offset} to {before.offset + before.nbytes})",
            )
    return GGUFLayout(path, version, alignment, data_offset, cur.size, fields, tuple(tensors))


def _scalar_at(cur: ByteCursor, key: str, record: FieldRecord) -> Any:
    """A scalar value re-read from its record (key length, key, type, then the value)."""
    fmt = "<" + _SCALAR_FORMATS[record.value_type]
    return struct.unpack_from(fmt, cur.buf, record.at + 8 + len(key.encode()) + 4)[0]


_REQUIRED = object()


class CheckedGGUF:
    """A GGUF file that passed check_gguf, mapped by gguf-py's GGUFReader, with typed metadata access.

    `reader` is the GGUFReader (fields, tensors); `layout` what check_gguf proved. The getters refuse a
    missing key (unless a default is given) or a value of the wrong type with an InputFileError.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.layout = check_gguf(self.path)
        self.reader = gguf.GGUFReader(self.path)
        self.tensors = {t.name: t for t in self.reader.tensors}

    def error(self, where: str, problem: str) -> InputFileError:
        """An InputFileError about this file."""
        return InputFileError(self.path, where, problem)

    def _record(self, key: str, default: Any) -> FieldRecord | None:
        record = self.layout.fields.get(key)
        if record is None and default is _REQUIRED:
            raise self.error(f"metadata {key}", "expected this key, found none")
        return record

    def integer(self, key: str, default: Any = _REQUIRED, *, lo: int = 1, hi: int = 2**31 - 1) -> Any:
        """An integer-typed scalar in [lo, hi] (default when absent, if given)."""
        record = self._record(key, default)
        if record is None:
            return default
        if record.value_type not in INTEGER_TYPES:
            raise self.error(f"metadata {key}", f"expected an integer, found {record.value_type.name}")
        value = int(self.reader.fields[key].parts[-1][0])
        if not lo <= value <= hi:
            raise self.error(f"metadata {key}", f"expected an integer from {lo} to {hi}, found {value}")
        return value

    def number(self, key: str, default: Any = _REQUIRED) -> Any:
        """A finite float- or integer-typed scalar as a Python float (default when absent, if given)."""
        record = self._record(key, default)
        if record is None:
            return default
        if record.value_type not in FLOAT_TYPES | INTEGER_TYPES:
            raise self.error(f"metadata {key}", f"expected a number, found {record.value_type.name}")
        value = float(self.reader.fields[key].parts[-1][0])
        if not np.isfinite(value):
            raise self.error(f"metadata {key}", f"expected a finite number, found {value}")
        return value

    def string(self, key: str, default: Any = _REQUIRED) -> Any:
        """A string scalar (default when absent, if given)."""
        record = self._record(key, default)
        if record is None:
            return default
        if record.value_type != _V.STRING:
            raise self.error(f"metadata {key}", f"expected a string, found {record.value_type.name}")
        return self.reader.fields[key].contents()

    def array(self, key: str, item_types: frozenset, default: Any = _REQUIRED) -> Any:
        """An array whose items are of one of item_types, as a list (default when absent, if given)."""
        record = self._record(key, default)
        if record is None:
            return default
        if record.value_type != _V.ARRAY or record.item_type not in item_types:
            found = record.value_type.name + (f" of {record.item_type.name}" if record.item_type else "")
            wanted = " or ".join(sorted(t.name for t in item_types))
            raise self.error(f"metadata {key}", f"expected an array of {wanted}, found {found}")
        return self.reader.fields[key].contents()

    def check_finite(self, name: str, values: np.ndarray) -> None:
        """Refuse a decoded tensor holding NaN or Inf, naming it and the first bad row and column."""
        rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        bad = ~np.isfinite(rows)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise self.error(
                f"tensor {show(name)}",
                f"expected finite values, found {rows[row, col]} at row {row}, column {col}",
            )
