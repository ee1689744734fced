"""A small training loop for QAT fine-tuning of a causal LM, with exact checkpoint/resume."""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..schedule import BitWidthSchedule
from .data import TokenWindows
from .distill import Distiller, Objective
from .oscillation import OscillationFreezer

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LR_DECAYS = ("constant", "final", "cosine")


def lr_factor(
    step: int, steps: int, decay: str, schedule: BitWidthSchedule | None, floor: float = 0.1
) -> float:
    """The learning-rate multiplier of optimiser step `step` (0-based) of `steps`.

    "constant": 1. "cosine": cosine from 1 to `floor` over the run. "final": 1 until the schedule's last
    rung begins, then cosine from 1 to `floor` over the steps at that rung (the whole run without a
    schedule), so the weights settle at the grid they are exported on.
    """
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown lr decay {decay!r}; choose one of {', '.join(LR_DECAYS)}")
    if decay == "constant":
        return 1.0
    first = 0
    if decay == "final" and schedule is not None:
        last = schedule.ladder[-1]
        first = next(s for s in range(steps) if schedule.rung_at(s) == last)
    span = steps - first
    if step < first or span <= 1:
        return 1.0
    progress = (step - first) / (span - 1)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    """Per-step record of a run: step index, loss (mean over the global batch on this rank) and rung."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    rungs: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"steps": self.steps, "losses": self.losses, "rungs": self.rungs}


def _write_atomic(path: Path, write) -> None:
    """write(tmp) then rename over `path`: an interrupted or failed write leaves the previous file and no
    half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_atomic(obj: dict, path: Path) -> None:
    _write_atomic(path, lambda tmp: torch.save(obj, tmp))


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def train(
    model: nn.Module,
    data: TokenWindows,
    *,
    steps: int,
    lr: float = 5e-5,
    batch_size: int = 4,
    schedule: BitWidthSchedule | None = None,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    optimizer: torch.optim.Optimizer | None = None,
    desc: str = "train",
    objective: Objective | None = None,
    teacher: nn.Module | None = None,
    lr_decay: str = "constant",
    freezer: OscillationFreezer | None = None,
) -> TrainResult:
    """Fine-tune a causal LM (labels = inputs) for `steps` optimiser steps with AdamW.

    The schedule (if any) is stepped after every optimiser step, so step s trains at schedule.rung_at(s).
    With `checkpoint_dir`, the model, optimiser, schedule, RNG states and the log are saved every
    `checkpoint_every` steps and at the end, atomically; with `resume`, a run restarts from the checkpoint
    found there and continues exactly as the uninterrupted run would (same batches, same updates).
    Under torch.distributed (DDP or FSDP2-wrapped `model`), pass rank / world_size: each rank trains on its
    slice of the global batch of `batch_size * world_size` windows.

    `desc` labels the progress bar.

    objective: what a step minimises (see train.distill.Objective); None is the model's own next-token
    cross-entropy (`model(input_ids, labels=input_ids).loss`, whole logits). teacher: the frozen float model
    a "kl" or "mix" objective distils from (e.g. a copy of the model before QAT); it is not checkpointed,
    so a resumed run must be given the same teacher. lr_decay: "constant", "cosine" or "final" (see
    lr_factor), applied to the optimiser's learning rates. freezer: freezes weights whose fake-quantized
    values oscillate (see train.oscillation), updated after every optimiser step and checkpointed.

    Returns the per-step losses and rungs (of the whole run, resumed parts included).
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if schedule is not None and schedule.total_steps != steps:
        raise ValueError(f"schedule has {schedule.total_steps} steps, the run {steps}")
    lr_factor(0, steps, lr_decay, schedule)  # rejects an unknown decay before anything runs
    distiller = Distiller(objective, teacher) if objective is not None else None
    if distiller is None and teacher is not None:
        raise ValueError("a teacher was given without an objective that uses it (objective=Objective('kl'))")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params and optimizer is None:
        raise ValueError("the model has no parameter that requires grad: nothing to train")
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    result = TrainResult()
    start = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and ckpt_path.exists():
            state = torch.load(ckpt_path, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            base_lrs = state.get("base_lrs", base_lrs)
            if freezer is not None:
                freezer.load_state_dict(state["freezer"])
            if schedule is not None:
                schedule.load_state_dict(state["schedule"])
            _set_rng_state(state["rng"])
            result = TrainResult(**state["log"])
            start = state["step"]
            logger.info("resumed from %s at step %d", ckpt_path, start)

    def checkpoint(step: int) -> None:
        if ckpt_path is None or rank != 0:
            return
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict() if schedule is not None else None,
                "rng": _rng_state(),
                "log": result.to_json(),
                "step": step,
                "base_lrs": base_lrs,
                "freezer": freezer.state_dict() if freezer is not None else None,
            },
            ckpt_path,
        )

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=desc, unit="step")
    model.train()
    try:
        for step in range(start, steps):
            rung = schedule.current_rung if schedule is not None else "-"
            ids = data.batch(step, batch_size, seed=seed, rank=rank, world_size=world_size)
            if lr_decay != "constant":  # a constant rate leaves the optimiser's (or the caller's) rates alone
                factor = lr_factor(step, steps, lr_decay, schedule)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
            if distiller is None:
                loss = model(input_ids=ids, labels=ids).loss
            else:
                loss = distiller.loss(model, ids)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if freezer is not None:
                freezer.after_step(model)
            if schedule is not None:
                schedule.step()
            value = float(loss.detach())
            if not np.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step} (rung {rung})")
            result.steps.append(step)
            result.losses.append(value)
            result.rungs.append(rung)
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4f}", rung=rung)
                bar.update(1)
            if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                checkpoint(step + 1)
    finally:  # closed before an interruption's message is printed, not at garbage collection
        if bar is not None:
            bar.close()
    checkpoint(steps)
    return result


def write_log(result: TrainResult, path: str | Path) -> None:
    """The per-step log as JSON (atomically)."""
    path = Path(path)
    _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(result.to_json())))
