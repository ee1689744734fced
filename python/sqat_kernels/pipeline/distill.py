"""`sqat distill`: a model directory and text in, a better GGUF file of a recipe out.

The steps: tokenize the text; collect an importance matrix from the model on it (as llama-imatrix would);
train the model with scheduled, imatrix-aware, format-exact fake quantization against its own float
self as the teacher (KL over the whole vocabulary); export with the same recipe and imatrix, so the file
decodes to exactly the weights the last steps trained with. Every step's state lives in a work folder:
an interrupted run started again with the same arguments resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..recipes import file_type
from ..schedule import SHAPES

# The defaults are the measured best of the lever table in docs/qat-levers.md.
DEFAULTS = {
    "steps": 200,
    "seq_len": 256,
    "batch": 4,
    "lr": 1e-4,
    "loss": "kl",
    "temperature": 1.0,
    "schedule": "linear",
    "warmup": 0.1,
    "cooldown": 0.5,
    "lr_decay": "final",
    "imatrix_batches": 16,
}


class DistillError(ValueError):
    """Bad input to `distill_to_gguf`; the message names what is wrong and nothing has been written."""


@dataclass
class DistillConfig:
    """Everything one `sqat distill` run does (see DEFAULTS for the defaults' source)."""

    model_dir: Path
    out: Path
    data: list[Path]
    recipe: str = "Q4_K_M"
    pure: bool = False
    steps: int = DEFAULTS["steps"]
    seq_len: int = DEFAULTS["seq_len"]
    batch: int = DEFAULTS["batch"]
    lr: float = DEFAULTS["lr"]
    loss: str = DEFAULTS["loss"]
    temperature: float = DEFAULTS["temperature"]
    kl_weight: float = 0.5
    schedule: str = DEFAULTS["schedule"]
    warmup: float = DEFAULTS["warmup"]
    cooldown: float = DEFAULTS["cooldown"]
    lr_decay: str = DEFAULTS["lr_decay"]
    imatrix_batches: int = DEFAULTS["imatrix_batches"]  # 0: no importance matrix
    ste: str = "identity"
    work_dir: Path | None = None  # default: OUT's name + ".work" beside it
    checkpoint_every: int = 25
    resume: bool = True
    threads: int | None = None
    seed: int = 0
    progress: bool = True

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir is not None else Path(f"{self.out}.work")


@dataclass
class DistillResult:
    out: Path
    losses: list[float] = field(default_factory=list)
    rungs: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def check_config(config: DistillConfig) -> None:
    """Refuse bad input before anything is read at length or written (raises DistillError)."""
    from ..train import LOSSES, LR_DECAYS, Objective

    try:
        file_type(config.recipe, pure=config.pure)
    except ValueError as exc:
        raise DistillError(str(exc)) from None
    if config.recipe.upper() in ("F32", "F16", "BF16"):
        raise DistillError(f"recipe {config.recipe}: distillation targets a quantized recipe")
    for name in ("steps", "seq_len", "batch", "checkpoint_every"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise DistillError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
    if config.seq_len < 2:
        raise DistillError(f"seq-len must be at least 2, got {config.seq_len}")
    if config.imatrix_batches < 0:
        raise DistillError(f"imatrix batches must be >= 0, got {config.imatrix_batches}")
    if config.threads is not None and config.threads < 1:
        raise DistillError(f"threads must be positive, got {config.threads}")
    if not (config.lr > 0 and config.lr < float("inf")):
        raise DistillError(f"lr must be a positive number, got {config.lr}")
    if config.loss not in LOSSES:
        raise DistillError(f"loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    if config.schedule not in SHAPES:
        raise DistillError(f"schedule must be one of {', '.join(SHAPES)}, got {config.schedule!r}")
    if config.lr_decay not in LR_DECAYS:
        raise DistillError(f"lr-decay must be one of {', '.join(LR_DECAYS)}, got {config.lr_decay!r}")
    try:
        Objective(config.loss, config.temperature, config.kl_weight)
    except ValueError as exc:
        raise DistillError(str(exc)) from None
    model_dir = Path(config.model_dir)
    if not (model_dir / "config.json").is_file():
        raise DistillError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    if not config.data:
        raise DistillError("no training text given (--data FILES)")
    for p in map(Path, config.data):
        if not p.exists():
            raise DistillError(f"training data {p} does not exist")
    out = Path(config.out)
    if out.is_dir():
        raise DistillError(f"output {out} is a directory; give a file name such as model-Q4_K_M.gguf")
    if not out.parent.is_dir():
        raise DistillError(f"output folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise DistillError(f"output folder {out.parent} is not writable")


def _fingerprint(config: DistillConfig) -> str:
    # What a checkpoint depends on: a resumed run with other settings would silently mix two runs.
    keys = asdict(config)
    for k in ("out", "work_dir", "resume", "progress", "threads", "checkpoint_every"):
        keys.pop(k)
    keys["data"] = [str(Path(p).resolve()) for p in config.data]
    keys["model_dir"] = str(Path(config.model_dir).resolve())
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def distill_to_gguf(config: DistillConfig) -> DistillResult:
    """Run the whole job: imatrix, self-distilled scheduled QAT, export of `config.out` (atomically).

    Raises DistillError for bad input (before writing anything), FileNotFoundError for missing files.
    """
    check_config(config)
    import numpy as np
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from ..export.llama_export import export_gguf
    from ..nn import prepare
    from ..schedule import BitWidthSchedule
    from ..train import Objective, TokenWindows, collect_imatrix, train, write_log

    seconds: dict[str, float] = {}
    if config.threads:
        torch.set_num_threads(config.threads)
    work = config.resolved_work_dir()
    stamp = _fingerprint(config)
    t = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(config.model_dir)
    try:
        data = TokenWindows.from_files(config.data, tokenizer, config.seq_len)
    except (ValueError, FileNotFoundError) as exc:
        raise DistillError(str(exc)) from None

    def load() -> LlamaForCausalLM:
        torch.manual_seed(config.seed)
        return LlamaForCausalLM.from_pretrained(config.model_dir, dtype=torch.float32)

    teacher = load()
    if tuple(teacher.config.architectures or ("LlamaForCausalLM",)) != ("LlamaForCausalLM",):
        raise DistillError(f"{config.model_dir} holds a {teacher.config.architectures}, not a Llama model")
    seconds["load"] = time.perf_counter() - t

    work.mkdir(parents=True, exist_ok=True)
    stamp_file = work / "settings.json"
    if stamp_file.exists() and config.resume:
        previous = json.loads(stamp_file.read_text())
        if previous.get("fingerprint") != stamp:
            raise DistillError(
                f"{work} holds a run with other settings; pass --no-resume to start over, "
                "or another --work-dir"
            )
    stamp_file.write_text(json.dumps({"fingerprint": stamp, "config": asdict(config)}, default=str, indent=1))

    imatrix = None
    if config.imatrix_batches:
        t = time.perf_counter()
        im_file = work / "imatrix.npz"
        if config.resume and im_file.exists():
            with np.load(im_file) as z:
                imatrix = {k: z[k] for k in z.files}
        else:
            # calibration batches drawn with their own seed, so they are not the first training batches
            calib = [data.batch(i, config.batch, seed=config.seed + 1) for i in range(config.imatrix_batches)]
            imatrix = collect_imatrix(teacher, calib, progress=config.progress)
            tmp = work / "imatrix.tmp.npz"
            np.savez(tmp, **imatrix)
            os.replace(tmp, im_file)
        seconds["imatrix"] = time.perf_counter() - t

    student = load()
    schedule = BitWidthSchedule(config.steps, config.schedule, warmup=config.warmup, cooldown=config.cooldown)
    prepare(student, config.recipe, pure=config.pure, schedule=schedule, imatrix=imatrix, ste=config.ste)
    objective = Objective(config.loss, config.temperature, config.kl_weight)
    t = time.perf_counter()
    result = train(
        student,
        data,
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch,
        schedule=schedule,
        seed=config.seed,
        checkpoint_dir=work,
        checkpoint_every=config.checkpoint_every,
        resume=config.resume,
        progress=config.progress,
        objective=objective,
        teacher=teacher if objective.needs_teacher else None,
        lr_decay=config.lr_decay,
        desc=f"distill {config.recipe}{'-pure' if config.pure else ''}",
    )
    seconds["train"] = time.perf_counter() - t
    write_log(result, work / "train_log.json")
    t = time.perf_counter()
    export_gguf(
        student,
        config.out,
        config.recipe,
        pure=config.pure,
        imatrix=imatrix,
        tokenizer_dir=config.model_dir,
        threads=config.threads,
        progress=config.progress,
    )
    seconds["export"] = time.perf_counter() - t
    return DistillResult(Path(config.out), result.losses, result.rungs, seconds)
