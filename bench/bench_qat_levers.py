"""The levers of sqat's QAT, one at a time: each variant changes one setting of `sqat distill`'s defaults.

Recovery scenario of bench_qat_quality.py (SmolLM2-135M-Instruct, Shakespeare training plays, the float
model is the teacher and the reference), one recipe, scored by llama.cpp on validation plays (othello,
lear) that, like bench_qat_quality's evaluation plays, are left out of the training text: the defaults are
chosen without looking at the text the comparison table is scored on. Every variant is trained and scored
beside PTQ and imatrix PTQ on the same tokens, with bootstrap intervals.

    python bench/bench_qat_levers.py --recipe Q4_0-pure --steps 60
    python bench/bench_qat_levers.py --variants default ce "cooldown=0.1" "lr_decay=constant"

A variant is "default", "ce" / "mix" (the loss), "no-imatrix" (fake quant and export without the
importance matrix), or comma-separated key=value overrides of schedule, warmup, cooldown, lr_decay,
temperature, lr, kl_weight, freeze (the oscillation-freezing threshold), e.g. "schedule=step,warmup=0.1".
Each sqat variant is also compared with the default row chunk by chunk (the same evaluation chunks, so
the noise the two rows share cancels): its mean KL as a ratio of the default's and its perplexity as a
ratio, each with a 95 % paired bootstrap interval. Writes bench/results/qat_levers.{md,json};
`--render JSON` rewrites the Markdown table from a saved JSON without training anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from bench_qat_quality import VALIDATION_PLAYS, Bench, Settings, bootstrap, score  # noqa: E402
from harness import machine_info  # noqa: E402

VARIANTS = (
    "default",
    "ce",
    "mix",
    "cooldown=0.1",
    "lr_decay=constant",
    "no-imatrix",
    "temperature=2",
    "lr=3e-4",
    "lr=3e-5",
    "freeze=0.05",
)
FLOATS = {"warmup", "cooldown", "temperature", "lr", "kl_weight", "freeze"}


def parse_variant(text: str) -> tuple[str, bool, dict]:
    """(loss, use the imatrix, overrides) of a variant."""
    if text in ("default", "ce", "mix"):
        return ("kl" if text == "default" else text), True, {}
    if text == "no-imatrix":
        return "kl", False, {}
    opts: dict = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"variant {text!r}: write key=value pairs separated by commas")
        opts[key] = float(value) if key in FLOATS else value
    return "kl", True, opts


def paired(row: dict, default: dict) -> dict:
    """The row against the default row on the same chunks: KL ratio and perplexity ratio, each with its
    95 % paired bootstrap interval (chunks resampled together)."""
    kl, kl0 = np.asarray(row["chunk_kl"]), np.asarray(default["chunk_kl"])
    nll, nll0 = np.asarray(row["chunk_nll"]), np.asarray(default["chunk_nll"])
    per = row["n_scored"] / len(nll)
    return {
        "kl_ratio": float(kl.mean() / kl0.mean()),
        "kl_ratio_ci": bootstrap(kl, kl0, lambda a, b: float(a.mean() / b.mean())),
        "ppl_ratio": float(np.exp((nll.mean() - nll0.mean()) / per)),
        "ppl_ratio_ci": bootstrap(nll, nll0, lambda a, b: float(np.exp((a.mean() - b.mean()) / per))),
    }


def markdown(results: dict) -> str:
    """The Markdown table of a run's results (as written to its JSON)."""
    s, rows = results["settings"], results["rows"]
    default = next((r for r in rows if r["variant"] == "sqat default"), None)
    lines = [
        f"Command: `{results['command']}`",
        "",
        f"{results['recipe']}, recovery; {s['steps']} steps x {s['batch']} x {s['seq_len']} tokens; "
        f"{rows[0]['n_scored']} scored tokens ({results['split']}); [95 % bootstrap interval over chunks]; "
        "the last two columns: against the default row on the same chunks [95 % paired bootstrap interval]",
        "",
        "| variant | perplexity | vs F32 | mean KL | top-1 | KL / default | perplexity / default |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        vs = "| | |"
        if default is not None and r["variant"].startswith("sqat ") and r is not default:
            c = paired(r, default)
            vs = (
                f"| {c['kl_ratio']:.3f} [{c['kl_ratio_ci'][0]:.3f}, {c['kl_ratio_ci'][1]:.3f}] "
                f"| {c['ppl_ratio']:.3f} [{c['ppl_ratio_ci'][0]:.3f}, {c['ppl_ratio_ci'][1]:.3f}] |"
            )
        lines.append(
            f"| {r['variant']} | {r['perplexity']:.3f} | {r['ppl_gap']:+.2%} "
            f"[{r['ppl_gap_ci'][0]:+.2%}, {r['ppl_gap_ci'][1]:+.2%}] | {r['mean_kl']:.4f} "
            f"[{r['kl_ci'][0]:.4f}, {r['kl_ci'][1]:.4f}] | {r['top1_agreement']:.1%} {vs}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="Q4_0-pure")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--eval-chunks", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--name", default="qat_levers")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render", type=Path, default=None, help="rewrite the .md of this saved JSON and stop")
    args = p.parse_args(argv)
    if args.render is not None:
        text = markdown(json.loads(args.render.read_text()))
        args.render.with_suffix(".md").write_text(text)
        print(text)
        return 0
    specs = {v: parse_variant(v) for v in args.variants}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = Settings(
        steps=args.steps,
        seq_len=args.seq_len,
        batch=args.batch,
        eval_chunks=args.eval_chunks,
        seed=args.seed,
        threads=args.threads,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    b = Bench(s, args.out / f"{args.name}-files", progress=not args.no_progress, validation=VALIDATION_PLAYS)
    started = time.perf_counter()
    base = b.load()
    imatrix = b.imatrix(base)
    files = {"F32": b.export(base, "levers F32", "F32")}
    meta = {"F32": {"variant": "F32", "recipe": "F32", "peer": "float", "seconds": 0.0}}
    for peer, im in (("PTQ", None), ("imatrix PTQ", imatrix)):
        files[peer] = b.export(base, f"levers {args.recipe} {peer}", args.recipe, im)
        meta[peer] = {"variant": peer, "recipe": args.recipe, "peer": peer, "seconds": 0.0}
    for variant, (loss, use_im, opts) in specs.items():
        name = f"sqat {variant}"
        print(f"{name}: loss {loss}, imatrix {use_im}, {opts}", flush=True)
        path, seconds = b.sqat_qat(
            f"levers {args.recipe} {variant}", args.recipe, imatrix if use_im else None, loss, base, **opts
        )
        files[name] = path
        meta[name] = {"variant": name, "recipe": args.recipe, "peer": name, "seconds": round(seconds, 1)}
        print(f"  {seconds:.0f} s", flush=True)
    rows = score(b, files, meta, "F32")
    results = {
        "command": "python bench/bench_qat_levers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": asdict(s),
        "recipe": args.recipe,
        "split": b.split,
        "machine": machine_info(),
        "rows": rows,
        "logs": b.logs,
        "seconds": time.perf_counter() - started,
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    print(f"total {results['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
