"""Argument types shared by the `sqat` commands that write files: bad values are refused by argparse."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (thread counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {value}")
    return value


def tensor_type(text: str) -> tuple[str, str]:
    """argparse type of `--tensor-type PATTERN=TYPE`, read as llama-quantize reads it (pattern lowercased,
    type case-insensitive); a malformed option or an unknown type is refused by argparse."""
    from ..recipes import parse_tensor_type

    try:
        return parse_tensor_type(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tensor_type_argument(parser: argparse.ArgumentParser) -> None:
    """The repeatable `--tensor-type` option of `sqat export`, `sqat quantize` and `sqat recipe`."""
    parser.add_argument(
        "--tensor-type",
        dest="tensor_types",
        action="append",
        type=tensor_type,
        default=None,
        metavar="PATTERN=TYPE",
        help="llama-quantize's per-tensor override: tensors whose name matches the regex PATTERN get TYPE "
        "(any sqat type, NVFP4 and MXFP4 included); repeatable, the first matching one wins",
    )
