"""Iterative weight freezing against QAT oscillations (Nagel et al., 2022, "Overcoming Oscillations in
Quantization-Aware Training").

Near a grid point's decision boundary a latent weight can flip between two codes step after step; the
exported code is then a coin toss and the batch statistics the rest of the network adapted to belong to
neither. Here a weight oscillates at a step when its fake-quantized value moves in the direction opposite
to its previous move; an exponential moving average of those events is its oscillation frequency, and a
weight whose frequency passes the threshold is frozen at its current latent value for the rest of the run.
Only steps at a tensor's recipe type count (the coarser rungs before it are other grids).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class _Track:
    qtype: str
    prev: torch.Tensor  # fake-quantized weight after the last tracked step
    last_move: torch.Tensor  # int8: sign of the last nonzero move of each fake-quantized value
    frequency: torch.Tensor  # float32 EMA of oscillation events
    frozen: torch.Tensor  # bool
    frozen_value: torch.Tensor  # latent values of frozen weights (others unused)


class OscillationFreezer:
    """Tracks every QAT layer's fake-quantized weight after each optimiser step and freezes oscillating ones.

    threshold: EMA frequency above which a weight is frozen; momentum: the EMA's weight of one step.
    Call `after_step(model)` after every optimiser step (train() does, given `freezer=`). Single process
    only: FSDP2 shards (DTensor weights) are refused.
    """

    def __init__(self, threshold: float = 0.05, momentum: float = 0.02) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"oscillation threshold must lie in (0, 1), got {threshold}")
        if not 0 < momentum <= 1:
            raise ValueError(f"oscillation momentum must lie in (0, 1], got {momentum}")
        self.threshold = threshold
        self.momentum = momentum
        self._tracks: dict[str, _Track] = {}

    def _layers(self, model: nn.Module):
        from ..nn import qat_modules

        seen: set[int] = set()
        for name, module in qat_modules(model):
            if id(module.weight) in seen:  # a tied lm_head shares the embedding's weight
                continue
            seen.add(id(module.weight))
            yield name, module

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """Hold frozen weights, then update the oscillation statistics at the weights' current values."""
        for name, module in self._layers(model):
            weight = module.weight
            if type(weight).__name__ == "DTensor":
                raise ValueError("oscillation freezing does not support FSDP2-sharded weights")
            qtype = module.active_qtype
            if qtype != module.config.qtype:
                continue  # not at the recipe rung yet
            track = self._tracks.get(name)
            if track is not None and track.frozen.any():
                weight.copy_(torch.where(track.frozen, track.frozen_value, weight))
            current = module.fake_weight().float()
            if track is None or track.qtype != qtype:
                self._tracks[name] = _Track(
                    qtype,
                    current,
                    torch.zeros(weight.shape, dtype=torch.int8, device=weight.device),
                    torch.zeros(weight.shape, dtype=torch.float32, device=weight.device),
                    torch.zeros(weight.shape, dtype=torch.bool, device=weight.device),
                    torch.zeros_like(weight, dtype=torch.float32),
                )
                continue
            move = torch.sign(current - track.prev).to(torch.int8)
            oscillated = (move != 0) & (move == -track.last_move)
            track.last_move = torch.where(move != 0, move, track.last_move)
            track.frequency.mul_(1 - self.momentum).add_(oscillated.float(), alpha=self.momentum)
            newly = (track.frequency > self.threshold) & ~track.frozen
            track.frozen_value = torch.where(newly, weight.float(), track.frozen_value)
            track.frozen |= newly
            track.prev = current

    def frozen_fraction(self) -> float:
        """Share of the tracked weights frozen so far."""
        total = sum(t.frozen.numel() for t in self._tracks.values())
        return sum(int(t.frozen.sum()) for t in self._tracks.values()) / total if total else 0.0

    def state_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "momentum": self.momentum,
            "tracks": {k: vars(t).copy() for k, t in self._tracks.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["threshold"], state["momentum"]) != (self.threshold, self.momentum):
            raise ValueError("the checkpoint's oscillation settings differ from this run's")
        self._tracks = {k: _Track(**v) for k, v in state["tracks"].items()}
