"""Readable mismatch reports for exact (byte / bit) comparisons of quantized data.

``assert_blocks_equal`` compares quantized bytes block by block. On mismatch its ``AssertionError`` message
says how many blocks differ and, for the first few: where (row, block), which byte offsets (labelled with the
block field they belong to), expected vs got bytes in hex, and the dequantized values of that block from both.
``assert_bitwise_equal`` compares float32 arrays through their uint32 views (so -0.0 vs 0.0 and NaN payloads
count) and groups differences by block.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["assert_bitwise_equal", "assert_blocks_equal", "field_name"]

#: Byte ranges of each block field, [start, stop) within the block (spec §2.2); used only to label offsets.
_FIELDS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "Q8_0": (("d", 0, 2), ("qs", 2, 34)),
    "Q4_0": (("d", 0, 2), ("qs", 2, 18)),
    "Q4_1": (("d", 0, 2), ("m", 2, 4), ("qs", 4, 20)),
    "Q5_0": (("d", 0, 2), ("qh", 2, 6), ("qs", 6, 22)),
    "Q5_1": (("d", 0, 2), ("m", 2, 4), ("qh", 4, 8), ("qs", 8, 24)),
    "IQ4_NL": (("d", 0, 2), ("qs", 2, 18)),
    "Q4_K": (("d", 0, 2), ("dmin", 2, 4), ("scales", 4, 16), ("qs", 16, 144)),
    "Q5_K": (("d", 0, 2), ("dmin", 2, 4), ("scales", 4, 16), ("qh", 16, 48), ("qs", 48, 176)),
    "Q6_K": (("ql", 0, 128), ("qh", 128, 192), ("scales", 192, 208), ("d", 208, 210)),
    "IQ4_XS": (("d", 0, 2), ("scales_h", 2, 4), ("scales_l", 4, 8), ("qs", 8, 136)),
}

MAX_BLOCKS = 4  # blocks detailed per report
MAX_ITEMS = 16  # offsets / values listed per block


def field_name(qtype: str, offset: int) -> str:
    """``"qs[3]"``-style label of a byte offset inside one block (``"[offset]"`` for F16/BF16)."""
    for name, start, stop in _FIELDS.get(qtype, ()):
        if start <= offset < stop:
            return f"{name}[{offset - start}]"
    return f"[{offset}]"


def _fmt_float(v: np.float32) -> str:
    """A float32 with its bit pattern, e.g. ``-0.0(0x80000000)``."""
    return f"{float(v)!r}(0x{int(np.float32(v).view(np.uint32)):08x})"


def assert_blocks_equal(
    expected: np.ndarray,
    got: np.ndarray,
    qtype: str,
    block_info: tuple[int, int],
    *,
    dequantize: Callable[[np.ndarray], np.ndarray] | None = None,
    x: np.ndarray | None = None,
    what: str = "",
) -> None:
    """Assert two quantized byte arrays are identical, reporting the first differing blocks.

    Args:
        expected: uint8 ``[nrows, row_bytes]`` (the oracle, e.g. libggml).
        got: uint8 array of the same shape (the implementation under test).
        qtype: format name, for labels.
        block_info: ``(block_size, type_size)``.
        dequantize: maps uint8 ``[k, type_size]`` blocks to float32 ``[k, block_size]`` (used for the report).
        x: the float32 input ``[nrows, n_per_row]``, shown beside differing values when given.
        what: a short description put in the first line of the message.
    """
    block_size, type_size = block_info
    if got.dtype != np.uint8 or got.shape != expected.shape:
        raise AssertionError(
            f"{what} {qtype}: expected uint8 {expected.shape}, got {got.dtype} {got.shape}".strip()
        )
    if np.array_equal(expected, got):
        return
    nrows = expected.shape[0] if expected.ndim > 1 else 1
    exp_b = expected.reshape(nrows, -1, type_size)
    got_b = got.reshape(nrows, -1, type_size)
    bad = np.argwhere((exp_b != got_b).any(axis=-1))
    total_blocks = nrows * exp_b.shape[1]
    lines = [f"{what} {qtype}: {len(bad)} of {total_blocks} blocks differ".strip()]
    for row, blk in bad[:MAX_BLOCKS]:
        e, g = exp_b[row, blk], got_b[row, blk]
        offsets = np.flatnonzero(e != g)
        lines.append(
            f"  row {row} block {blk} (values {blk * block_size}..{(blk + 1) * block_size - 1}): "
            f"{len(offsets)} byte(s) differ"
        )
        shown = ", ".join(
            f"{field_name(qtype, int(o))}@{int(o)}: {int(e[o]):02x}->{int(g[o]):02x}"
            for o in offsets[:MAX_ITEMS]
        )
        lines.append(f"    expected->got: {shown}{' ...' if len(offsets) > MAX_ITEMS else ''}")
        if type_size <= 36:
            lines.append(f"    expected {e.tobytes().hex()}")
            lines.append(f"    got      {g.tobytes().hex()}")
        if dequantize is not None:
            de = dequantize(e.reshape(1, type_size)).reshape(-1)
            dg = dequantize(g.reshape(1, type_size)).reshape(-1)
            diff = np.flatnonzero(de.view(np.uint32) != dg.view(np.uint32))
            lines.append(f"    dequantized: {len(diff)} of {block_size} values differ")
            for i in diff[:MAX_ITEMS]:
                src = ""
                if x is not None:
                    src = f"  (input {_fmt_float(x.reshape(nrows, -1)[row, blk * block_size + i])})"
                lines.append(f"      [{int(i)}] expected {_fmt_float(de[i])} got {_fmt_float(dg[i])}{src}")
    if len(bad) > MAX_BLOCKS:
        lines.append(f"  ... and {len(bad) - MAX_BLOCKS} more blocks")
    raise AssertionError("\n".join(lines))


def assert_bitwise_equal(
    expected: np.ndarray,
    got: np.ndarray,
    qtype: str,
    block_size: int,
    *,
    what: str = "",
) -> None:
    """Assert two float32 arrays have identical bit patterns; report differing values grouped by block.

    Args:
        expected: float32 ``[nrows, n]`` (the oracle).
        got: float32 of the same shape.
        qtype: format name, for labels.
        block_size: values per block, to report (row, block, index in block).
        what: a short description put in the first line of the message.
    """
    if got.dtype != np.float32 or got.shape != expected.shape:
        raise AssertionError(
            f"{what} {qtype}: expected float32 {expected.shape}, got {got.dtype} {got.shape}".strip()
        )
    e = np.ascontiguousarray(expected).view(np.uint32)
    g = np.ascontiguousarray(got).view(np.uint32)
    if np.array_equal(e, g):
        return
    e2, g2 = e.reshape(e.shape[0] if e.ndim > 1 else 1, -1), g.reshape(g.shape[0] if g.ndim > 1 else 1, -1)
    ev, gv = e2.view(np.float32), g2.view(np.float32)
    bad = np.argwhere(e2 != g2)
    blocks = {(int(r), int(c) // block_size) for r, c in bad}
    lines = [
        f"{what} {qtype}: {len(bad)} of {e2.size} values differ bitwise, in {len(blocks)} blocks".strip()
    ]
    for row, blk in sorted(blocks)[:MAX_BLOCKS]:
        cols = [int(c) for r, c in bad if r == row and c // block_size == blk]
        lines.append(f"  row {row} block {blk}: {len(cols)} value(s) differ")
        for c in cols[:MAX_ITEMS]:
            lines.append(
                f"    [{c - blk * block_size}] expected {_fmt_float(ev[row, c])} got {_fmt_float(gv[row, c])}"
            )
    if len(blocks) > MAX_BLOCKS:
        lines.append(f"  ... and {len(blocks) - MAX_BLOCKS} more blocks")
    raise AssertionError("\n".join(lines))
