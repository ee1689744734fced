"""`sqat quantize IN.gguf OUT.gguf TYPE`: llama-quantize's job, byte-identical output, native kernels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import add_tensor_type_argument, positive_int

NAME = "quantize"
HELP = "quantize a Llama GGUF file (F32/F16/BF16) to a recipe, byte-identical to llama-quantize"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="input .gguf (F32, F16 or BF16 tensors)")
    parser.add_argument("dst", type=Path, help="output .gguf (written atomically)")
    parser.add_argument(
        "type", help="recipe: Q4_K_M, Q3_K_M, Q2_K, Q6_K, Q8_0, IQ4_XS, TQ2_0, ... (see `sqat recipe`)"
    )
    parser.add_argument(
        "--imatrix", type=Path, default=None, help="llama.cpp imatrix file (GGUF or legacy .dat)"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (>= 1)")
    parser.add_argument("--pure", action="store_true", help="one type for every tensor")
    parser.add_argument("--output-tensor-type", default=None)
    parser.add_argument("--token-embedding-type", default=None)
    add_tensor_type_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..export.requantize import requantize_gguf

    # Files are checked before the output is opened: the input, and the imatrix inside requantize_gguf.
    for path, what in ((args.src, "input"), (args.imatrix, "imatrix")):
        if path is not None and not path.is_file():
            raise SystemExit(f"sqat quantize: {path}: expected an existing {what} file, found none")
    try:
        requantize_gguf(
            args.src,
            args.dst,
            args.type,
            imatrix=args.imatrix,
            pure=args.pure,
            threads=args.threads,
            output_tensor_type=args.output_tensor_type,
            token_embedding_type=args.token_embedding_type,
            tensor_type_overrides=args.tensor_types,
        )
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise SystemExit(f"sqat quantize: {exc}") from exc
    print(f"wrote {args.dst} ({args.dst.stat().st_size / 2**20:.1f} MiB)")
    return 0
