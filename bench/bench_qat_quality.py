"""Which 4-bit GGUF file reads most like the float model?  sqat QAT against llama.cpp's best PTQ and peers.

Every row is a GGUF file of the real SmolLM2-135M-Instruct scored by llama.cpp (llama-cpp-python) on the
same held-out tokens (two Shakespeare plays never used for training or calibration): perplexity, mean
KL(reference || file) and top-1 agreement with the reference, each with a 95 % bootstrap interval over the
evaluation chunks. Rows per recipe:

  PTQ                 llama-quantize's recipe on the float weights
  imatrix PTQ         the same with an importance matrix collected on the training text
  AutoRound           auto-round's tuned int4 weights (sym, group 32, calibrated on the training text),
                      exported as F32 and quantized with the recipe and the imatrix
  torchao QAT         torchao's int4 group-32 fake quant trained with sqat's loop and loss, its latent
                      weights exported as F32 and quantized with the recipe and the imatrix
  sqat QAT (CE)       sqat's scheduled, imatrix-aware format-exact fake quant, next-token cross-entropy
  sqat QAT (KL)       the same distilled from the float model (`sqat distill`'s defaults)

Scenarios: "recovery" (train on the training text; the reference is the float model itself) and
"finetune" (the float model fine-tuned with cross-entropy on the training text is the reference and the
PTQ baseline; sqat's rows train for the same number of steps; the KL row distils from the fine-tuned
float model, so it costs the float fine-tune's steps on top: its wall time says so). torchao's fake quant
does not depend on the recipe: one torchao training per scenario is exported with each recipe.

    python bench/bench_qat_quality.py            # the full run (about an hour on 2 cores)
    python bench/bench_qat_quality.py --quick    # CI-sized: one recipe, few steps, few chunks

Writes bench/results/qat_quality.{md,json,png} (or --out).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine_info  # noqa: E402

RECIPES = ("Q4_0-pure", "Q4_K_M", "IQ4_NL-pure")
# the recipes the fine-tune targets name (IQ4_NL stays in recovery only, to keep the run near an hour)
FINETUNE_RECIPES = ("Q4_0-pure", "Q4_K_M")
PEERS = ("PTQ", "imatrix PTQ", "AutoRound", "torchao QAT", "sqat QAT (CE)", "sqat QAT (KL)")


@dataclass
class Settings:
    steps: int = 60
    seq_len: int = 256
    batch: int = 2
    lr: float = 1e-4
    imatrix_batches: int = 16
    eval_chunks: int = 16
    eval_ctx: int = 512
    seed: int = 0
    threads: int | None = None
    # AutoRound's tuning steps per block, calibration windows, their length and windows per step: 60 x 4 x
    # 128 tokens, the trained rows' budget (steps x batch x seq_len), through every block
    autoround_iters: int = 60
    autoround_nsamples: int = 32
    autoround_seqlen: int = 128
    autoround_batch: int = 4


def parse_recipe(text: str) -> tuple[str, bool]:
    ftype, _, pure = text.partition("-")
    return ftype.upper(), pure.lower() == "pure"


def bootstrap(values_a: np.ndarray, values_b: np.ndarray | None, stat, n: int = 2000, seed: int = 0):
    """95 % interval of stat(a[idx]) (or stat(a[idx], b[idx])) over chunks resampled with replacement."""
    rng = np.random.default_rng(seed)
    k = len(values_a)
    idx = rng.integers(0, k, size=(n, k))
    samples = [stat(values_a[i]) if values_b is None else stat(values_a[i], values_b[i]) for i in idx]
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


# bench_qat_levers.py chooses sqat's defaults by scoring on these plays, held out of its training text along
# with the evaluation plays: the choice never sees the text this bench's table is scored on
VALIDATION_PLAYS = ("othello", "lear")


class Bench:
    def __init__(
        self, settings: Settings, out: Path, progress: bool, validation: tuple[str, ...] = ()
    ) -> None:
        """validation: plays to score on instead of the held-out evaluation plays (which then leave the
        training text too)."""
        import torch
        from sqat_kernels.demo.data import HELD_OUT_PLAYS, TextSplit, shakespeare_split
        from sqat_kernels.models.smollm2 import smollm2_hf_dir
        from sqat_kernels.train import TokenWindows
        from transformers import AutoTokenizer

        self.s = settings
        self.out = out
        self.gguf_dir = out / "gguf"
        self.gguf_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.model_dir = smollm2_hf_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        split = shakespeare_split()
        if validation:
            split = TextSplit(
                train=shakespeare_split(HELD_OUT_PLAYS + validation).train,
                held_out=shakespeare_split(validation).held_out,
            )
        self.split = split.describe()
        self.train_texts, self.eval_text = split.texts()
        self.data = TokenWindows.from_texts(self.train_texts, self.tokenizer, settings.seq_len)
        self.seconds: dict[str, float] = {}
        self.logs: dict[str, dict] = {}
        self._torchao: dict[str, tuple] = {}

    def load(self):
        import torch
        from transformers import LlamaForCausalLM

        torch.manual_seed(self.s.seed)
        return LlamaForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)

    def calibration(self) -> list:
        # the imatrix's (and AutoRound's) batches: training text, drawn with their own seed
        return [self.data.batch(i, self.s.batch, seed=self.s.seed + 1) for i in range(self.s.imatrix_batches)]

    def imatrix(self, model) -> dict[str, np.ndarray]:
        from sqat_kernels.train import collect_imatrix

        return collect_imatrix(model, self.calibration(), progress=self.progress)

    def export(self, model, name: str, recipe: str, imatrix=None) -> Path:
        from sqat_kernels.export.llama_export import export_gguf

        ftype, pure = parse_recipe(recipe)
        path = self.gguf_dir / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.gguf"
        export_gguf(
            model,
            path,
            ftype,
            pure=pure,
            imatrix=None if ftype == "F32" else imatrix,
            tokenizer_dir=self.model_dir,
            threads=self.s.threads,
            progress=False,
        )
        return path

    def train(
        self,
        model,
        name: str,
        *,
        schedule=None,
        objective=None,
        teacher=None,
        lr_decay="constant",
        lr=None,
        freezer=None,
    ):
        from sqat_kernels.train import train

        t = time.perf_counter()
        result = train(
            model,
            self.data,
            steps=self.s.steps,
            lr=self.s.lr if lr is None else lr,
            batch_size=self.s.batch,
            schedule=schedule,
            seed=self.s.seed,
            progress=self.progress,
            desc=name,
            objective=objective,
            teacher=teacher,
            lr_decay=lr_decay,
            freezer=freezer,
        )
        self.logs[name] = result.to_json()
        return time.perf_counter() - t

    def sqat_qat(self, name: str, recipe: str, imatrix, loss: str, teacher, init=None, **distill) -> tuple:
        """sqat's scheduled QAT of `recipe` with the `sqat distill` defaults (overridable by `distill`)."""
        from sqat_kernels.nn import prepare
        from sqat_kernels.pipeline.distill import DEFAULTS
        from sqat_kernels.schedule import BitWidthSchedule
        from sqat_kernels.train import Objective, OscillationFreezer

        known = {"schedule", "warmup", "cooldown", "lr_decay", "temperature", "lr", "kl_weight", "freeze"}
        unknown = set(distill) - known
        if unknown:
            raise ValueError(f"unknown sqat options {sorted(unknown)}")
        opts = {
            k: distill.get(k, DEFAULTS[k])
            for k in ("schedule", "warmup", "cooldown", "lr_decay", "temperature")
        }
        ftype, pure = parse_recipe(recipe)
        model = self.load() if init is None else copy.deepcopy(init)
        schedule = BitWidthSchedule(
            self.s.steps, opts["schedule"], warmup=opts["warmup"], cooldown=opts["cooldown"]
        )
        prepare(model, ftype, pure=pure, schedule=schedule, imatrix=imatrix)
        objective = Objective(loss, temperature=opts["temperature"], kl_weight=distill.get("kl_weight", 0.5))
        seconds = self.train(
            model,
            name,
            schedule=schedule,
            objective=objective,
            teacher=teacher if loss != "ce" else None,
            lr_decay=opts["lr_decay"],
            lr=distill.get("lr"),
            freezer=OscillationFreezer(distill["freeze"]) if distill.get("freeze") else None,
        )
        return self.export(model, name, recipe, imatrix), seconds

    def torchao_qat(self, name: str, scenario: str, recipe: str, imatrix, teacher, init=None) -> tuple:
        """torchao's int4 g32 QAT, exported with `recipe`. Its fake quant does not depend on the recipe, so
        one training per scenario serves every recipe; each row reports that training's time."""
        from qat_peers import torchao_convert, torchao_prepare
        from sqat_kernels.train import Objective

        key = scenario
        if key not in self._torchao:
            model = torchao_prepare(self.load() if init is None else copy.deepcopy(init))
            seconds = self.train(model, name, objective=Objective("kl"), teacher=teacher)
            self._torchao[key] = (torchao_convert(model), seconds)
        model, seconds = self._torchao[key]
        return self.export(model, name, recipe, imatrix), seconds

    def autoround(self, name: str, recipe: str, imatrix) -> tuple:
        from qat_peers import AUTOROUND_SCHEMES, autoround_quantize

        ftype, _ = parse_recipe(recipe)
        result = autoround_quantize(
            self.model_dir,
            self.train_texts,
            self.gguf_dir / f"{name.replace(' ', '_')}-autoround",
            scheme=AUTOROUND_SCHEMES[ftype],
            qdq=True,
            iters=self.s.autoround_iters,
            nsamples=self.s.autoround_nsamples,
            seqlen=self.s.autoround_seqlen,
            batch_size=self.s.autoround_batch,
            seed=self.s.seed,
        )
        # its fake-quantized weights, quantized with the recipe and the imatrix (= llama_model_quantize)
        return self.export(str(result.qdq_dir), name, recipe, imatrix), result.seconds


def run_scenario(b: Bench, scenario: str, recipes: list[str], peers: list[str]) -> tuple[dict, dict, str]:
    """Make every file of one scenario; returns (name -> path, name -> row metadata, reference name)."""
    files: dict[str, Path] = {}
    meta: dict[str, dict] = {}

    def add(name, recipe, peer, path, seconds):
        files[name] = path
        meta[name] = {"variant": name, "recipe": recipe, "peer": peer, "seconds": round(seconds, 1)}
        print(f"  {name}: {seconds:.0f} s", flush=True)

    base = b.load()
    if scenario == "recovery":
        reference, teacher, ref_seconds = "F32", base, 0.0
    else:
        reference = "fine-tuned F32"
        teacher = b.load()
        ref_seconds = b.train(teacher, f"{scenario}: float fine-tune")
    t = time.perf_counter()
    imatrix = b.imatrix(teacher)
    im_seconds = time.perf_counter() - t
    add(reference, "F32", "float", b.export(teacher, f"{scenario} {reference}", "F32"), ref_seconds)
    for recipe in recipes:
        label = f"{scenario} {recipe}"
        for peer in peers:
            name = f"{peer} {recipe}"
            t = time.perf_counter()
            if peer == "PTQ":
                add(name, recipe, peer, b.export(teacher, f"{label} {peer}", recipe), time.perf_counter() - t)
            elif peer == "imatrix PTQ":
                path = b.export(teacher, f"{label} {peer}", recipe, imatrix)
                add(name, recipe, peer, path, time.perf_counter() - t + im_seconds)
            elif peer == "AutoRound":
                if scenario != "recovery":
                    continue
                path, seconds = b.autoround(f"{label} {peer}", recipe, imatrix)
                add(name, recipe, peer, path, seconds)
            elif peer == "torchao QAT":
                init = None if scenario == "recovery" else teacher
                path, seconds = b.torchao_qat(f"{label} {peer}", scenario, recipe, imatrix, teacher, init)
                add(name, recipe, peer, path, seconds + ref_seconds * (init is not None))
            elif peer == "sqat QAT (CE)":
                # fine-tune: QAT fine-tunes from the base model with the float fine-tune's budget
                path, seconds = b.sqat_qat(f"{label} {peer}", recipe, imatrix, "ce", None)
                add(name, recipe, peer, path, seconds)
            elif peer == "sqat QAT (KL)":
                init = None if scenario == "recovery" else teacher
                path, seconds = b.sqat_qat(f"{label} {peer}", recipe, imatrix, "kl", teacher, init)
                add(name, recipe, peer, path, seconds + ref_seconds * (init is not None))
            else:
                raise ValueError(f"unknown peer {peer!r}")
    return files, meta, reference


def score(b: Bench, files: dict, meta: dict, reference: str) -> list[dict]:
    from sqat_kernels.eval import score_ggufs, tokenize_with_gguf

    tokens = tokenize_with_gguf(files[reference], b.eval_text)
    scores = score_ggufs(
        files,
        tokens,
        reference=reference,
        n_ctx=b.s.eval_ctx,
        max_chunks=b.s.eval_chunks,
        threads=b.s.threads,
        progress=b.progress,
    )
    ref = scores[reference]
    ref_nll = np.asarray(ref.chunk_nll)
    per = ref.n_scored / len(ref_nll)
    rows = []
    for name, sc in scores.items():
        nll = np.asarray(sc.chunk_nll)
        kl = np.asarray(sc.chunk_kl)
        row = dict(meta[name])
        row.update({k: v for k, v in asdict(sc).items() if k not in ("path", "chunk_nll", "chunk_kl")})
        row["ppl_ci"] = bootstrap(nll, None, lambda a: float(np.exp(a.mean() / per)))
        row["kl_ci"] = bootstrap(kl, None, lambda a: float(a.mean() / per))
        row["ppl_gap"] = sc.perplexity / ref.perplexity - 1
        row["ppl_gap_ci"] = bootstrap(
            nll, ref_nll, lambda a, r: float(np.exp((a.mean() - r.mean()) / per) - 1)
        )
        row["chunk_nll"], row["chunk_kl"] = list(sc.chunk_nll), list(sc.chunk_kl)
        rows.append(row)
    return rows


def markdown(results: dict) -> str:
    lines = [
        "# sqat QAT vs llama.cpp PTQ and peers — SmolLM2-135M-Instruct",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Data: {results['split']}. Each trained row: {results['settings']['steps']} steps x "
        f"{results['settings']['batch']} x {results['settings']['seq_len']} tokens; evaluation "
        f"{results['n_scored']} scored tokens ({results['settings']['eval_chunks']} chunks of "
        f"{results['settings']['eval_ctx']}); [95 % bootstrap interval over chunks].",
        "",
    ]
    for scenario, rows in results["scenarios"].items():
        lines += [
            f"## {scenario}",
            "",
            "| recipe | row | perplexity | vs reference | mean KL | top-1 | wall s |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['recipe']} | {r['peer']} | {r['perplexity']:.3f} | "
                f"{r['ppl_gap']:+.1%} [{r['ppl_gap_ci'][0]:+.1%}, {r['ppl_gap_ci'][1]:+.1%}] | "
                f"{r['mean_kl']:.4f} [{r['kl_ci'][0]:.4f}, {r['kl_ci'][1]:.4f}] | "
                f"{r['top1_agreement']:.1%} | "
                f"{r['seconds']:.0f} |"
            )
        lines.append("")
        lines += summary_lines(rows)
        lines.append("")
    lines.append("![perplexity gap and KL per row](qat_quality.png)")
    return "\n".join(lines) + "\n"


def summary_lines(rows: list[dict]) -> list[str]:
    """sqat (KL) against the strongest baseline of each recipe: KL ratio and share of the PPL gap left."""
    out = []
    by = {(r["recipe"], r["peer"]): r for r in rows}
    for recipe in dict.fromkeys(r["recipe"] for r in rows if r["recipe"] != "F32"):
        ours, base = by.get((recipe, "sqat QAT (KL)")), by.get((recipe, "imatrix PTQ"))
        if ours is None or base is None or base["mean_kl"] <= 0:
            continue
        gap_share = ours["ppl_gap"] / base["ppl_gap"] if base["ppl_gap"] > 0 else float("nan")
        out.append(
            f"- {recipe}: sqat (KL) / imatrix PTQ: mean KL x{ours['mean_kl'] / base['mean_kl']:.2f}, "
            f"perplexity gap x{gap_share:.2f} ({ours['ppl_gap']:+.2%} vs {base['ppl_gap']:+.2%})"
        )
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(results["scenarios"].items())
    fig, axes = plt.subplots(
        len(scenarios),
        2,
        figsize=(13, 0.35 * max(len(r) for _, r in scenarios) * len(scenarios) + 2),
        squeeze=False,
    )
    for (scenario, rows), (ax_gap, ax_kl) in zip(scenarios, axes, strict=True):
        rows = [r for r in rows if r["recipe"] != "F32"]
        labels = [f"{r['recipe']} {r['peer']}" for r in rows]
        colors = ["#55a868" if r["peer"].startswith("sqat") else "#999999" for r in rows]
        for ax, key, ci, title in (
            (ax_gap, "ppl_gap", "ppl_gap_ci", "perplexity vs reference"),
            (ax_kl, "mean_kl", "kl_ci", "mean KL to reference (nats)"),
        ):
            vals = np.array([r[key] for r in rows])
            err = np.array([[v - r[ci][0], r[ci][1] - v] for v, r in zip(vals, rows, strict=True)]).T
            ax.barh(range(len(rows)), vals, xerr=err, color=colors)
            ax.set_yticks(range(len(rows)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{scenario}: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run: Q4_0-pure, 6 steps, 2 chunks")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recovery scenario's recipes")
    p.add_argument("--finetune-recipes", nargs="+", default=list(FINETUNE_RECIPES))
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS, metavar="PEER")
    p.add_argument(
        "--scenarios", nargs="+", default=["recovery", "finetune"], choices=["recovery", "finetune"]
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eval-chunks", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--name", default="qat_quality", help="file stem of the results")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = Settings(seed=args.seed, threads=args.threads)
    if args.quick:
        s.steps, s.seq_len, s.imatrix_batches, s.eval_chunks = 6, 64, 2, 2
        s.autoround_iters, s.autoround_nsamples, s.autoround_seqlen, s.autoround_batch = 1, 2, 64, 2
        if args.recipes == list(RECIPES):
            args.recipes = ["Q4_0-pure"]
        if args.finetune_recipes == list(FINETUNE_RECIPES):
            args.finetune_recipes = ["Q4_0-pure"]
    for key in ("steps", "seq_len", "batch", "lr", "eval_chunks"):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / f"{args.name}-files"
    b = Bench(s, work, progress=not args.no_progress)
    started = time.perf_counter()
    results = {
        "command": "python bench/bench_qat_quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": asdict(s),
        "split": b.split,
        "machine": machine_info(),
        "scenarios": {},
    }
    for scenario in args.scenarios:
        print(f"{scenario}:", flush=True)
        recipes = args.recipes if scenario == "recovery" else args.finetune_recipes
        files, meta, reference = run_scenario(b, scenario, recipes, args.peers)
        rows = score(b, files, meta, reference)
        results["scenarios"][scenario] = rows
        results["n_scored"] = rows[0]["n_scored"]
    results["logs"] = b.logs
    results["seconds"] = time.perf_counter() - started
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / f"{args.name}.md").write_text(text)
    plot(results, args.out / f"{args.name}.png")
    print(text)
    print(f"total {results['seconds'] / 60:.1f} min; results in {args.out / args.name}.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
