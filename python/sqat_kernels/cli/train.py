"""`sqat train`: scheduled QAT fine-tuning of a Hugging Face Llama model on text files."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

NAME = "train"
HELP = "fine-tune a Llama model with format-exact scheduled QAT (writes the trained model and a log)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="Hugging Face model directory")
    parser.add_argument("--data", required=True, nargs="+", help="text files or directories of *.txt files")
    parser.add_argument("--recipe", default="Q4_K_M", help="llama-quantize recipe to train against")
    parser.add_argument(
        "--pure", action="store_true", help="one type for every tensor (llama-quantize --pure)"
    )
    parser.add_argument("--steps", type=int, required=True, help="optimiser steps")
    parser.add_argument(
        "--schedule",
        default="linear",
        choices=["linear", "cosine", "step", "constant", "none"],
        help="bit-width schedule shape ('none': no fake quantization, plain fine-tuning)",
    )
    parser.add_argument("--ste", default="identity", choices=["identity", "clipped"])
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument(
        "--no-resume", dest="resume", action="store_false", help="start over even if --out holds a checkpoint"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from ..nn import prepare
    from ..schedule import BitWidthSchedule
    from ..train import TokenWindows, train, write_log

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"sqat train: {args.model} is not a Hugging Face model directory (no config.json)")
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
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
    )
    # The latent (float) weights are saved: exporting them with the recipe quantizes each tensor once,
    # giving exactly the weights the last training step saw (re-quantizing dequantized values would not).
    model_dir = args.out / "model"
    tmp = args.out / "model.tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "sqat_qat.json").write_text(
        json.dumps(
            {
                "recipe": args.recipe if schedule is not None else None,
                "pure": args.pure,
                "ste": args.ste,
                "schedule": schedule.state_dict() if schedule is not None else None,
            },
            indent=1,
        )
    )
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)
    write_log(result, args.out / "train_log.json")
    print(f"trained {args.steps} steps; final loss {result.losses[-1]:.4f}; model in {model_dir}")
    return 0
