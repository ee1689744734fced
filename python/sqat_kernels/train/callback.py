"""A transformers Trainer callback that steps a BitWidthSchedule with the optimiser."""

from __future__ import annotations

from transformers import TrainerCallback

from ..schedule import BitWidthSchedule


class QATScheduleCallback(TrainerCallback):
    """Advance `schedule` once per optimiser step of a transformers Trainer.

    `rungs` records the rung each step trained at; Trainer logs get a "qat_rung" entry (the rung of the
    last step taken).
    """

    def __init__(self, schedule: BitWidthSchedule) -> None:
        self.schedule = schedule
        self.rungs: list[str] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.rungs.append(self.schedule.current_rung)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self.schedule.step()
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.rungs:
            logs["qat_rung"] = self.rungs[-1]
        return control
