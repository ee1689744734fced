"""The `sqat` command line.

Each subcommand lives in its own module of this package and exposes

    NAME: str                                   # the subcommand, e.g. "recipe"
    HELP: str                                   # one line for `sqat --help`
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # process exit status

Modules are found by walking this package, so adding a command never edits this file. Heavy imports
(torch, transformers) belong inside `run`, so `sqat --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType


def _command_modules() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The full `sqat` argument parser, one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="sqat",
        description="Format-exact GGUF quantization-aware training (sqat-kernels).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sqat` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("sqat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
