"""Byte positions of a GGUF file's header fields, for tests that corrupt one field of a real file.

The positions come from the layout sqat_kernels.gguf_checks proved for the sound file (where each metadata
key and tensor record starts); from there the fields follow the GGUF layout: a string is a uint64 length and
its bytes; a metadata entry is key, uint32 value type, value (an array: uint32 item type, uint64 count,
items); a tensor record is name, uint32 n_dims, n_dims uint64 dims, uint32 type, uint64 offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sqat_kernels.gguf_checks import GGUFLayout


@dataclass(frozen=True)
class Site:
    """One integer field of the file: a readable label, byte offset and struct format ('<I' or '<Q')."""

    label: str
    at: int
    fmt: str


def header_sites(layout: GGUFLayout) -> list[Site]:
    """Every count, length, type and offset field of the file's header, metadata and tensor records."""
    sites = [Site("version", 4, "<I"), Site("tensor_count", 8, "<Q"), Site("kv_count", 16, "<Q")]
    for key, f in layout.fields.items():
        value = f.at + 8 + len(key.encode())
        sites += [Site(f"{key}:key_length", f.at, "<Q"), Site(f"{key}:value_type", value, "<I")]
        if f.item_type is not None:
            sites += [Site(f"{key}:item_type", value + 4, "<I"), Site(f"{key}:item_count", value + 8, "<Q")]
        elif f.value_type.name == "STRING":
            sites.append(Site(f"{key}:string_length", value + 4, "<Q"))
        elif f.value_type.name in ("UINT32", "INT32"):
            sites.append(Site(f"{key}:value", value + 4, "<I"))
    for t in layout.tensors:
        n_dims_at = t.at + 8 + len(t.name.encode())
        sites += [Site(f"{t.name}:name_length", t.at, "<Q"), Site(f"{t.name}:n_dims", n_dims_at, "<I")]
        sites += [Site(f"{t.name}:ne{i}", n_dims_at + 4 + 8 * i, "<Q") for i in range(len(t.ne))]
        type_at = n_dims_at + 4 + 8 * len(t.ne)
        sites += [Site(f"{t.name}:type", type_at, "<I"), Site(f"{t.name}:offset", type_at + 4, "<Q")]
    return sites


def site(layout: GGUFLayout, label: str) -> Site:
    """The site called `label` (e.g. 'tensor_count', 'blk.0.attn_q.weight:offset')."""
    return next(s for s in header_sites(layout) if s.label == label)


def patch(data: bytes, at: int, fmt: str, value: int) -> bytes:
    """`data` with the field at `at` replaced by `value` (wrapped to the field's width: -1 is all ones)."""
    unsigned = fmt.upper()
    bits = 8 * struct.calcsize(unsigned)
    return data[:at] + struct.pack(unsigned, value % (1 << bits)) + data[at + struct.calcsize(unsigned) :]


def read(data: bytes, s: Site) -> int:
    """The current value of field `s`."""
    return struct.unpack_from(s.fmt, data, s.at)[0]
