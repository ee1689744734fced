"""Bit-width schedules: which precision rung QAT trains at, step by step.

A ladder is a sequence of rungs from fine to coarse, e.g. F32 -> F16 -> Q8_0 -> RECIPE, where the
rung "RECIPE" stands for each tensor's own recipe type (Q4_K for one tensor, Q6_K for another under
Q4_K_M). The seed model card's linear schedule keeps the first 10 % of the steps at the first rung,
descends through the ladder over 10 %-90 % and holds the last rung for the final 10 %.

Pure Python (no torch). Positions are computed with exact fractions, so a step's rung never depends on
floating-point rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

from .formats import get_format

logger = logging.getLogger(__name__)

RECIPE = "RECIPE"
SHAPES = ("linear", "cosine", "step", "constant")
DEFAULT_LADDER = ("F32", "F16", "Q8_0", RECIPE)


def _fraction(value: float, what: str) -> Fraction:
    frac = Fraction(str(value))  # "0.1" -> 1/10 exactly, not the binary double
    if not 0 <= frac < 1:
        raise ValueError(f"{what} must lie in [0, 1), got {value!r}")
    return frac


class BitWidthSchedule:
    """Precision rung per optimiser step, for `total_steps` steps.

    shape:
        "linear" (the seed's): rung 0 for the warm-up fraction; the descent window between warm-up and
            cool-down is cut into len(ladder) equal spans, one per rung in ladder order; the last rung holds
            through the cool-down. Defaults (10 % / 10 %, 4 rungs): F32 for 0-30 %, F16 30-50 %,
            Q8_0 50-70 %, recipe 70-100 %.
        "cosine": like linear, but span boundaries at warmup + window * (1 - cos(pi k / L)) / 2, so the
            first and last rungs of the descent get longer spans.
        "step": rung 0 during the warm-up, then straight to the last rung (no intermediate rungs).
        "constant": the last rung from the first step (plain QAT).
    ladder: rung names, fine to coarse: GGUF type names ("F32", "F16", "BF16", "Q8_0", "Q4_0", ...) and
        "RECIPE" (each tensor's own recipe type).

    The final step always uses the last rung, however short the run.
    `step()` advances one optimiser step; `current_rung` is the rung of the step about to run.
    Listeners registered with `add_listener` are called with the new rung whenever it changes.
    """

    def __init__(
        self,
        total_steps: int,
        shape: str = "linear",
        ladder: Sequence[str] = DEFAULT_LADDER,
        warmup: float = 0.1,
        cooldown: float = 0.1,
    ) -> None:
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if shape not in SHAPES:
            raise ValueError(f"unknown schedule shape {shape!r}; valid shapes: {', '.join(SHAPES)}")
        ladder = tuple(str(r).upper() for r in ladder)
        if not ladder:
            raise ValueError("ladder must hold at least one rung")
        for rung in ladder:
            if rung != RECIPE:
                get_format(rung)  # raises ValueError naming the valid types
        self.total_steps = total_steps
        self.shape = shape
        self.ladder = ladder
        self.warmup = _fraction(warmup, "warmup")
        self.cooldown = _fraction(cooldown, "cooldown")
        if self.warmup + self.cooldown >= 1:
            raise ValueError(f"warmup + cooldown must be < 1, got {warmup} + {cooldown}")
        self.step_count = 0
        self._listeners: list[Callable[[str], None]] = []
        self._bounds = self._boundaries()

    def _boundaries(self) -> list[Fraction]:
        """Progress values (fractions of total_steps) where rung k+1 starts, k = 0..L-2."""
        n = len(self.ladder)
        if n == 1:
            return []
        start, window = self.warmup, 1 - self.warmup - self.cooldown
        if self.shape == "constant":
            return [Fraction(0)] * (n - 1)
        if self.shape == "step":
            return [start] * (n - 1)
        if self.shape == "linear":
            return [start + window * k / n for k in range(1, n)]
        # cosine: exact fractions are not possible for cos, so round the boundary to a step boundary
        # (a rational number of steps) once, here.
        bounds = []
        for k in range(1, n):
            pos = float(start + window / 2) - float(window) / 2 * math.cos(math.pi * k / n)
            bounds.append(Fraction(round(pos * self.total_steps), self.total_steps))
        return bounds

    def rung_index_at(self, step: int) -> int:
        """Index into `ladder` of the rung used by optimiser step `step` (0-based; clamped to the run)."""
        step = min(max(step, 0), self.total_steps - 1)
        if step == self.total_steps - 1:
            # However short the run, its last step trains at the last rung: that is the rung exported.
            return len(self.ladder) - 1
        progress = Fraction(step, self.total_steps)
        return sum(1 for b in self._bounds if progress >= b)

    def rung_at(self, step: int) -> str:
        """The rung used by optimiser step `step` (0-based)."""
        return self.ladder[self.rung_index_at(step)]

    @property
    def current_rung(self) -> str:
        """The rung of the step about to run."""
        return self.rung_at(self.step_count)

    def phases(self) -> list[tuple[int, int, str]]:
        """(first_step, last_step, rung) spans covering 0..total_steps-1, for logging and plotting."""
        spans: list[tuple[int, int, str]] = []
        for step in range(self.total_steps):
            rung = self.rung_at(step)
            if spans and spans[-1][2] == rung and spans[-1][1] == step - 1:
                spans[-1] = (spans[-1][0], step, rung)
            else:
                spans.append((step, step, rung))
        return spans

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call `callback(rung)` now and on every rung change."""
        self._listeners.append(callback)
        callback(self.current_rung)

    def _notify(self, old: str) -> None:
        new = self.current_rung
        if new != old:
            logger.info(
                "bit-width schedule: step %d/%d, rung %s -> %s", self.step_count, self.total_steps, old, new
            )
            for callback in self._listeners:
                callback(new)

    def step(self) -> None:
        """Advance one optimiser step."""
        old = self.current_rung
        self.step_count += 1
        self._notify(old)

    def state_dict(self) -> dict:
        """Everything needed to resume: the configuration and the step count."""
        return {
            "total_steps": self.total_steps,
            "shape": self.shape,
            "ladder": list(self.ladder),
            "warmup": str(self.warmup),
            "cooldown": str(self.cooldown),
            "step_count": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state["step_count"]`; the configuration must match this schedule's."""
        mine = self.state_dict()
        theirs = {
            "total_steps": state["total_steps"],
            "shape": state["shape"],
            "ladder": [str(r).upper() for r in state["ladder"]],
            "warmup": str(Fraction(str(state["warmup"]))),
            "cooldown": str(Fraction(str(state["cooldown"]))),
        }
        for key, value in theirs.items():
            if value != mine[key]:
                raise ValueError(f"schedule state has {key}={state[key]!r}, this schedule {mine[key]!r}")
        step_count = int(state["step_count"])
        if not 0 <= step_count <= self.total_steps:
            raise ValueError(f"step_count {step_count} outside 0..{self.total_steps}")
        old = self.current_rung
        self.step_count = step_count
        self._notify(old)

    def __repr__(self) -> str:
        return (
            f"BitWidthSchedule(total_steps={self.total_steps}, shape={self.shape!r}, ladder={self.ladder}, "
            f"warmup={self.warmup}, cooldown={self.cooldown}, step_count={self.step_count})"
        )


def bits_per_weight(qtype: str) -> float:
    """Storage bits per weight of a GGUF type (F32 32, F16 16, Q8_0 8.5, Q4_K 4.5, ...)."""
    fmt = get_format(qtype)
    return 8.0 * fmt.type_size / fmt.block_size


def resolve_rung(rung: str, recipe_type: str) -> str:
    """The type a tensor with recipe type `recipe_type` trains at on `rung`.

    "RECIPE" gives the recipe type. A rung never makes a tensor coarser than its recipe type (a tensor
    the recipe keeps at Q8_0 or F16 stays there through the coarser rungs).
    """
    if rung == RECIPE:
        return recipe_type
    return rung if bits_per_weight(rung) >= bits_per_weight(recipe_type) else recipe_type
