"""`sqat recipe MODEL_DIR --type Q4_K_M`: the GGUF type llama-quantize gives every tensor of a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._args import add_tensor_type_argument

NAME = "recipe"
HELP = "print the GGUF type of every tensor of a Llama model under a llama-quantize recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, help="Hugging Face model directory (its config.json is read)")
    parser.add_argument(
        "--type", required=True, dest="recipe", help="recipe, e.g. Q4_K_M, Q8_0, IQ4_XS, Q4_0"
    )
    parser.add_argument(
        "--pure", action="store_true", help="one type for every tensor (llama-quantize --pure)"
    )
    parser.add_argument(
        "--imatrix", action="store_true", help="choose as llama-quantize does with an imatrix"
    )
    parser.add_argument("--output-tensor-type", default=None)
    parser.add_argument("--token-embedding-type", default=None)
    add_tensor_type_argument(parser)
    parser.add_argument("--json", action="store_true", help="print {tensor: type} as JSON")


def run(args: argparse.Namespace) -> int:
    from ..formats import get_format
    from ..recipes import LlamaShape, recipe_table

    config_path = args.model_dir / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"sqat recipe: {config_path} not found (expected a Hugging Face model directory)")
    try:
        shape = LlamaShape.from_hf_config(json.loads(config_path.read_text()))
        table = recipe_table(
            shape,
            args.recipe,
            pure=args.pure,
            imatrix=args.imatrix,
            output_tensor_type=args.output_tensor_type,
            token_embedding_type=args.token_embedding_type,
            tensor_type_overrides=args.tensor_types,
        )
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"sqat recipe: {exc}") from exc
    if args.json:
        json.dump({c.name: c.qtype for c in table}, sys.stdout, indent=1)
        print()
        return 0
    width = max(len(c.name) for c in table)
    total_bits = total_weights = 0
    for c in table:
        n = 1
        for d in c.ne:
            n *= d
        fmt = get_format(c.qtype)
        total_bits += n * 8 * fmt.type_size / fmt.block_size
        total_weights += n
        ne = "x".join(str(d) for d in c.ne)
        print(f"{c.name:<{width}}  {ne:>12}  {c.qtype:<7} {c.reason}")
    print(
        f"{len(table)} tensors, {total_weights / 1e6:.2f} M weights, {total_bits / 8 / 2**20:.1f} MiB, "
        f"{total_bits / total_weights:.3f} bits per weight"
    )
    return 0
