"""`sqat demo`: does scheduled QAT keep more quality in a GGUF file than PTQ?  Measured by llama.cpp."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = (
    "fine-tune SmolLM2-135M on Shakespeare with and without QAT and compare the GGUF files in llama.cpp "
    "(offline, ~13 min on 2 cores)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..demo.run import DEFAULT_RECIPES, DemoConfig

    d = DemoConfig()
    parser.add_argument("--out", type=Path, default=d.out_dir, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="Hugging Face Llama directory (default: SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=None,
        help="training text files or folders (default: Shakespeare)",
    )
    parser.add_argument(
        "--eval-data",
        nargs="+",
        type=Path,
        default=None,
        help="held-out text files (default with --data: the last file, or the last 10%% of a single file)",
    )
    parser.add_argument(
        "--recipe",
        dest="recipes",
        nargs="+",
        default=list(DEFAULT_RECIPES),
        help="llama-quantize recipes, '-pure' suffix for --pure (default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=int, default=d.steps, help="optimiser steps per run (default: %(default)s)"
    )
    parser.add_argument(
        "--seq-len", type=int, default=d.seq_len, help="tokens per sequence (default: %(default)s)"
    )
    parser.add_argument(
        "--batch", type=int, default=d.batch, help="sequences per step (default: %(default)s)"
    )
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument(
        "--schedule",
        default=d.schedule,
        choices=["linear", "cosine", "step", "constant"],
        help="QAT bit-width schedule (default: %(default)s)",
    )
    parser.add_argument(
        "--ste", default=d.ste, choices=["identity", "clipped"], help="straight-through variant"
    )
    parser.add_argument("--eval-ctx", type=int, default=d.eval_ctx, help="llama.cpp context per chunk")
    parser.add_argument(
        "--eval-chunks", type=int, default=d.eval_chunks, help="held-out chunks scored (default: %(default)s)"
    )
    parser.add_argument(
        "--imatrix",
        type=int,
        default=d.imatrix_batches,
        metavar="BATCHES",
        help="importance matrix of the fine-tuned model from this many training batches, for the imatrix PTQ "
        "rows and QAT; 0: none (default: %(default)s)",
    )
    parser.add_argument(
        "--qat-loss",
        default=d.qat_loss,
        choices=["kl", "ce"],
        help="kl: distil the fine-tuned float model into the recipe; ce: QAT fine-tune of the base model "
        "(default: %(default)s)",
    )
    parser.add_argument("--qat-steps", type=int, default=None, help="QAT steps (default: --steps)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=d.seed)


def run(args: argparse.Namespace) -> int:
    from ..demo.run import DemoConfig, run_demo

    config = DemoConfig(
        out_dir=args.out,
        model_dir=args.model,
        data=args.data,
        eval_data=args.eval_data,
        recipes=tuple(args.recipes),
        steps=args.steps,
        seq_len=args.seq_len,
        batch=args.batch,
        lr=args.lr,
        schedule=args.schedule,
        ste=args.ste,
        eval_ctx=args.eval_ctx,
        eval_chunks=args.eval_chunks,
        imatrix_batches=args.imatrix,
        qat_loss=args.qat_loss,
        qat_steps=args.qat_steps,
        threads=args.threads,
        seed=args.seed,
    )
    try:
        run_demo(config)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise SystemExit(f"sqat demo: {exc}") from exc
    return 0
