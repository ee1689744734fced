"""`sqat train`: scheduled QAT fine-tuning of a Hugging Face Llama model on text files."""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
from pathlib import Path

from ._args import positive_int

NAME = "train"
HELP = "fine-tune a Llama model with format-exact scheduled QAT (writes the trained model and a log)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="Hugging Face model directory")
    parser.add_argument("--data", required=True, nargs="+", help="text files or directories of *.txt files")
    parser.add_argument("--recipe", default="Q4_K_M", help="llama-quantize recipe to train against")
    parser.add_argument(
        "--pure", action="store_true", help="one type for every tensor (llama-quantize --pure)"
    )
    parser.add_argument("--steps", type=positive_int, required=True, help="optimiser steps")
    parser.add_argument(
        "--schedule",
        default="linear",
        choices=["linear", "cosine", "step", "constant", "none"],
        help="bit-width schedule shape ('none': no fake quantization, plain fine-tuning)",
    )
    parser.add_argument("--ste", default="identity", choices=["identity", "clipped"])
    parser.add_argument(
        "--loss",
        default="ce",
        choices=["ce", "kl", "mix"],
        help="ce: next-token cross-entropy on the data; kl: KL(teacher || model) over the vocabulary; "
        "mix: --kl-weight of KL plus the rest of CE (default: %(default)s)",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="float Hugging Face model distilled from by --loss kl/mix (default: --model as loaded)",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    parser.add_argument("--kl-weight", type=float, default=0.5, help="KL share of --loss mix")
    parser.add_argument(
        "--lr-decay",
        default="constant",
        choices=["constant", "final", "cosine"],
        help="final: cosine decay to 0.1 x lr over the last rung's steps (default: %(default)s)",
    )
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seq-len", type=positive_int, default=256)
    parser.add_argument("--batch", type=positive_int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: all cores)"
    )
    parser.add_argument("--checkpoint-every", type=positive_int, default=50)
    parser.add_argument(
        "--no-resume", dest="resume", action="store_false", help="start over even if --out holds a checkpoint"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from ..nn import prepare
    from ..schedule import BitWidthSchedule
    from ..train import Objective, TokenWindows, train, write_log

    for what, folder in (("model", args.model), ("teacher", args.teacher)):
        if folder is not None and not (folder / "config.json").is_file():
            raise SystemExit(
                f"sqat train: --{what} {folder} is not a Hugging Face model directory (no config.json)"
            )
    if args.teacher is not None and args.loss == "ce":
        raise SystemExit("sqat train: --teacher needs --loss kl or mix")
    try:
        objective = Objective(args.loss, temperature=args.temperature, kl_weight=args.kl_weight)
    except ValueError as exc:
        raise SystemExit(f"sqat train: {exc}") from exc
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"sqat train: --out {args.out} exists and is not a directory")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    teacher = None
    if objective.needs_teacher:
        # the float model as it is before QAT (its own copy: the student's weights change under it)
        teacher = (
            copy.deepcopy(model)
            if args.teacher is None
            else LlamaForCausalLM.from_pretrained(args.teacher, dtype=torch.float32)
        )
    try:
        data = TokenWindows.from_files(args.data, tokenizer, args.seq_len)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"sqat train: {exc}") from exc
    schedule = None
    if args.schedule != "none":
        schedule = BitWidthSchedule(args.steps, args.schedule)
        prepare(model, args.recipe, pure=args.pure, schedule=schedule, ste=args.ste)
    args.out.mkdir(parents=True, exist_ok=True)
    result = train(
        model,
        data,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch,
        schedule=schedule,
        seed=args.seed,
        checkpoint_dir=args.out / "checkpoint",
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        objective=objective,
        teacher=teacher,
        lr_decay=args.lr_decay,
    )
    # The latent (float) weights are saved: exporting them with the recipe quantizes each tensor once,
    # giving exactly the weights the last training step saw (re-quantizing dequantized values would not).
    model_dir = args.out / "model"
    tmp = args.out / "model.tmp"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "sqat_qat.json").write_text(
            json.dumps(
                {
                    "recipe": args.recipe if schedule is not None else None,
                    "pure": args.pure,
                    "ste": args.ste,
                    "schedule": schedule.state_dict() if schedule is not None else None,
                    "loss": args.loss,
                },
                indent=1,
            )
        )
        if model_dir.exists():
            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
    finally:  # an interrupted or failed save leaves no half-written model folder
        shutil.rmtree(tmp, ignore_errors=True)
    write_log(result, args.out / "train_log.json")
    print(f"trained {args.steps} steps; final loss {result.losses[-1]:.4f}; model in {model_dir}")
    return 0
