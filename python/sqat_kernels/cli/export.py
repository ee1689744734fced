"""`sqat export HF_DIR OUT.gguf --type Q4_K_M`: Llama model to GGUF, as llama.cpp's pipeline writes it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import add_tensor_type_argument, positive_int

NAME = "export"
HELP = "export a Hugging Face Llama model directory to GGUF (F32/F16/BF16 or a llama-quantize recipe)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, help="Hugging Face model directory (weights + tokenizer)")
    parser.add_argument("out", type=Path, help="output .gguf file (written atomically)")
    parser.add_argument(
        "--type",
        dest="ftype",
        default="Q4_K_M",
        help="F32, F16, BF16 or a llama-quantize recipe (Q4_K_M, Q3_K_M, Q2_K, Q6_K, Q8_0, IQ4_XS, ...)",
    )
    parser.add_argument(
        "--pure", action="store_true", help="one type for every tensor (llama-quantize --pure)"
    )
    parser.add_argument("--output-tensor-type", default=None)
    parser.add_argument("--token-embedding-type", default=None)
    add_tensor_type_argument(parser)
    parser.add_argument(
        "--imatrix", type=Path, default=None, help="llama.cpp imatrix file (GGUF or legacy .dat)"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (>= 1)")


def run(args: argparse.Namespace) -> int:
    from ..export import export_gguf, read_imatrix

    if args.imatrix is not None and not args.imatrix.is_file():
        raise SystemExit(f"sqat export: {args.imatrix}: expected an existing imatrix file, found none")
    try:
        # Read (and checked) before the output is opened; export_gguf refuses names the model lacks.
        imatrix = None if args.imatrix is None else read_imatrix(args.imatrix)
        export_gguf(
            args.model_dir,
            args.out,
            args.ftype,
            imatrix=imatrix,
            pure=args.pure,
            threads=args.threads,
            output_tensor_type=args.output_tensor_type,
            token_embedding_type=args.token_embedding_type,
            tensor_type_overrides=args.tensor_types,
        )
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise SystemExit(f"sqat export: {exc}") from exc
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0
