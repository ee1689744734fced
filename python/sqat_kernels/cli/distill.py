"""`sqat distill`: MODEL_DIR + text -> imatrix -> self-distilled scheduled QAT -> GGUF of the recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "distill"
HELP = (
    "make a better GGUF of a Llama model: importance matrix from your text, QAT distilled from the float "
    "model against the exact llama.cpp grid, export (resumable)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..pipeline.distill import DEFAULTS

    d = DEFAULTS
    parser.add_argument(
        "model_dir", type=Path, metavar="MODEL_DIR", help="Hugging Face Llama model directory"
    )
    parser.add_argument("out", type=Path, metavar="OUT.gguf", help="GGUF file to write (atomically)")
    parser.add_argument("--recipe", default="Q4_K_M", help="llama-quantize recipe (default: %(default)s)")
    parser.add_argument(
        "--pure", action="store_true", help="one type for every tensor (llama-quantize --pure)"
    )
    parser.add_argument("--data", required=True, nargs="+", type=Path, help="text files or folders of *.txt")
    parser.add_argument(
        "--steps", type=int, default=d["steps"], help="optimiser steps (default: %(default)s)"
    )
    parser.add_argument(
        "--seq-len", type=int, default=d["seq_len"], help="tokens per sequence (default: %(default)s)"
    )
    parser.add_argument(
        "--batch", type=int, default=d["batch"], help="sequences per step (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=d["lr"], help="AdamW learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--loss",
        default=d["loss"],
        choices=["kl", "ce", "mix"],
        help="kl: KL(float model || QAT model) over the vocabulary; ce: next-token cross-entropy; "
        "mix: --kl-weight of each (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature", type=float, default=d["temperature"], help="distillation temperature"
    )
    parser.add_argument("--kl-weight", type=float, default=0.5, help="KL share of --loss mix (default: 0.5)")
    parser.add_argument(
        "--schedule",
        default=d["schedule"],
        choices=["linear", "cosine", "step", "constant"],
        help="bit-width schedule F32 -> F16 -> Q8_0 -> recipe (default: %(default)s)",
    )
    parser.add_argument("--warmup", type=float, default=d["warmup"], help="fraction of steps at F32 first")
    parser.add_argument(
        "--cooldown",
        type=float,
        default=d["cooldown"],
        help="fraction of steps at the recipe after the descent (default: %(default)s)",
    )
    parser.add_argument(
        "--lr-decay",
        default=d["lr_decay"],
        choices=["constant", "final", "cosine"],
        help="final: cosine decay to 0.1 x lr over the steps at the recipe (default: %(default)s)",
    )
    parser.add_argument(
        "--imatrix-batches",
        type=int,
        default=d["imatrix_batches"],
        metavar="N",
        help="batches of the text the importance matrix is collected on; 0: none (default: %(default)s)",
    )
    parser.add_argument("--ste", default="identity", choices=["identity", "clipped"])
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="checkpoints and imatrix (default: OUT.work)"
    )
    parser.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints")
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start over even if the work folder holds a run",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.distill import DistillConfig, DistillError, check_config, distill_to_gguf

    config = DistillConfig(
        model_dir=args.model_dir,
        out=args.out,
        data=list(args.data),
        recipe=args.recipe,
        pure=args.pure,
        steps=args.steps,
        seq_len=args.seq_len,
        batch=args.batch,
        lr=args.lr,
        loss=args.loss,
        temperature=args.temperature,
        kl_weight=args.kl_weight,
        schedule=args.schedule,
        warmup=args.warmup,
        cooldown=args.cooldown,
        lr_decay=args.lr_decay,
        imatrix_batches=args.imatrix_batches,
        ste=args.ste,
        work_dir=args.work_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        threads=args.threads,
        seed=args.seed,
    )
    try:
        check_config(config)
        result = distill_to_gguf(config)
    except (DistillError, FileNotFoundError) as exc:
        raise SystemExit(f"sqat distill: {exc}") from None
    work = config.resolved_work_dir()
    checkpoint = work / "checkpoint.pt"
    checkpoint.unlink(missing_ok=True)  # the finished file replaces it; imatrix and log stay
    print(
        f"wrote {result.out} ({args.recipe}{' pure' if args.pure else ''}); {len(result.losses)} steps, "
        f"final loss {result.losses[-1]:.4f}; imatrix and training log in {work}"
    )
    return 0
