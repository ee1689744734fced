"""Training objectives of a causal LM: next-token cross-entropy, and self-distillation from a frozen teacher.

The distillation loss is KL(teacher || student) over the full vocabulary, per position, optionally at a
temperature T (scaled by T^2 so its gradients keep their size), mixed with cross-entropy if asked. It never
materialises the [batch, seq, vocab] logits: the student's and teacher's final hidden states are taken at
their output layers (whose own matmul is then run on zero positions) and the logits, the loss and its
gradients are computed together, one chunk of positions at a time, as Liger-Kernel's fused linear
cross-entropy does. The gradients are therefore ready after the forward; backward only scales them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "kl", "mix")
IGNORE = -100  # label of a position that has no next token


@dataclass(frozen=True)
class Objective:
    """What a training step minimises.

    kind: "ce" (next-token cross-entropy on the data), "kl" (KL(teacher || student), every position) or
    "mix" (kl_weight * KL + (1 - kl_weight) * CE).
    temperature: T of the distillation softmaxes (the KL term is multiplied by T^2).
    kl_weight: the KL share of "mix" (0 < kl_weight < 1).
    chunk: positions whose logits are computed at once (memory: a few chunk x vocab float32 tensors).
    """

    kind: str = "kl"
    temperature: float = 1.0
    kl_weight: float = 0.5
    chunk: int = 256

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise ValueError(f"unknown loss {self.kind!r}; choose one of {', '.join(LOSSES)}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")
        if self.kind == "mix" and not 0 < self.kl_weight < 1:
            raise ValueError(
                f"kl_weight of a mixed loss must lie strictly between 0 and 1, got {self.kl_weight}"
            )
        if self.chunk < 1:
            raise ValueError(f"chunk must be positive, got {self.chunk}")

    @property
    def needs_teacher(self) -> bool:
        return self.kind != "ce"

    @property
    def weights(self) -> tuple[float, float]:
        """(CE weight, KL weight)."""
        if self.kind == "ce":
            return 1.0, 0.0
        if self.kind == "kl":
            return 0.0, 1.0
        return 1.0 - self.kl_weight, self.kl_weight


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP keeps the model in .module; FSDP2's fully_shard leaves the model itself in place.
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def output_head(model: nn.Module) -> nn.Linear:
    """The layer that maps final hidden states to logits (a Hugging Face model's output embeddings)."""
    inner = _unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(inner).__name__} has no nn.Linear output layer to distil through")
    return head


def _forward_weight(head: nn.Linear) -> torch.Tensor:
    # A QAT head gives the fake-quantized weight its forward is about to use (and keeps it for that
    # forward); a plain head its weight.
    hold = getattr(head, "hold_weight", None)
    return hold() if hold is not None else head.weight


@contextmanager
def tapped_head(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within this context a forward of `model` records its final hidden states and output weight.

    The dict yielded gets "hidden" ([batch, seq, hidden]), "weight" ([vocab, hidden], the weight the head
    used, fake-quantized for a QAT head) and "bias" (or None) at each forward; the head's own matmul
    runs on zero positions, so the model's logits come back as [batch, 0, vocab].
    """
    head = output_head(model)
    tap: dict[str, torch.Tensor] = {}

    def pre_hook(module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        tap["hidden"] = hidden
        tap["weight"] = _forward_weight(module)
        tap["bias"] = module.bias
        return (hidden[..., :0, :], *args[1:])

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield tap
    finally:
        handle.remove()


def next_token_labels(ids: torch.Tensor) -> torch.Tensor:
    """int64 [batch, seq]: position i's label is token i + 1; the last position has none (IGNORE)."""
    labels = torch.full_like(ids, IGNORE)
    labels[:, :-1] = ids[:, 1:]
    return labels


class _FusedHeadLoss(torch.autograd.Function):
    """Loss of logits = hidden @ weight.T + bias against labels and teacher logits, by chunks of positions.

    Forward computes the loss and the gradients of hidden, weight and bias; backward scales them.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, t_hidden, t_weight, t_bias, ce_w, kl_w, temp, chunk):
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
        valid = labels != IGNORE
        n_labelled = int(valid.sum())
        ce_scale = ce_w / max(n_labelled, 1)
        kl_scale = kl_w / n
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        w32 = weight.float()
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            h = hidden[rows].float()
            logits = h @ w32.T
            if bias is not None:
                logits += bias.float()
            grad = torch.zeros_like(logits)
            if kl_w:
                t_logits = t_hidden[rows].float() @ t_weight.float().T
                if t_bias is not None:
                    t_logits += t_bias.float()
                t_logp = torch.log_softmax(t_logits / temp, dim=-1)
                s_logp = torch.log_softmax(logits / temp, dim=-1)
                t_p = t_logp.exp()
                total += kl_scale * temp * temp * (t_p * (t_logp - s_logp)).sum(dtype=torch.float64)
                # d(T^2 KL)/d logits = T (softmax(s / T) - softmax(t / T))
                grad += (kl_scale * temp) * (s_logp.exp() - t_p)
                del t_logits, t_logp, s_logp, t_p
            if ce_w:
                logp = torch.log_softmax(logits, dim=-1)
                mask = valid[rows]
                target = torch.where(mask, labels[rows], 0).unsqueeze(1)
                picked = logp.gather(1, target).squeeze(1)
                total -= ce_scale * (picked * mask).sum(dtype=torch.float64)
                probs = logp.exp()
                probs.scatter_add_(1, target, -torch.ones_like(picked).unsqueeze(1))
                grad += (ce_scale * mask.to(probs.dtype)).unsqueeze(1) * probs
                del logp, probs
            grad_hidden[rows] = (grad @ w32).to(hidden.dtype)
            grad_weight.addmm_(grad.T, h)
            grad_bias += grad.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), grad_bias)
        ctx.has_bias = bias is not None
        return total.to(torch.float32)

    @staticmethod
    def backward(ctx, grad_out):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return (
            grad_hidden * grad_out,
            grad_weight * grad_out,
            (grad_bias * grad_out) if ctx.has_bias else None,
            *([None] * 8),
        )


def head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    objective: Objective,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The objective's loss of the logits hidden @ weight.T + bias, without materialising them whole.

    hidden: [..., H] student final hidden states; weight: [V, H]; bias: [V] or None; labels: int64 [...]
    (IGNORE where a position has no label); teacher_*: the teacher's, same [..., H] and [V, H] (needed
    unless objective.kind is "ce"). CE is the mean over labelled positions, KL the mean over all positions
    of T^2 KL(softmax(teacher / T) || softmax(student / T)), in nats. Returns a float32 scalar; gradients
    flow to hidden, weight and bias.
    """
    ce_w, kl_w = objective.weights
    h = hidden.reshape(-1, hidden.shape[-1])
    lab = labels.reshape(-1)
    if h.shape[0] != lab.shape[0]:
        raise ValueError(f"{h.shape[0]} positions but {lab.shape[0]} labels")
    if kl_w:
        if teacher_hidden is None or teacher_weight is None:
            raise ValueError(f"loss {objective.kind!r} needs the teacher's hidden states and output weight")
        th = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
        if th.shape[0] != h.shape[0] or teacher_weight.shape[0] != weight.shape[0]:
            raise ValueError(
                f"teacher gives {th.shape[0]} positions x {teacher_weight.shape[0]} tokens, "
                f"the student {h.shape[0]} x {weight.shape[0]}"
            )
    else:
        th = teacher_weight = teacher_bias = None
    if h.shape[0] == 0:
        raise ValueError("no positions to score")
    return _FusedHeadLoss.apply(
        h,
        weight,
        bias,
        lab,
        th,
        teacher_weight,
        teacher_bias,
        ce_w,
        kl_w,
        objective.temperature,
        objective.chunk,
    )


def reference_head_loss(
    logits: torch.Tensor, labels: torch.Tensor, objective: Objective, teacher_logits: torch.Tensor | None
) -> torch.Tensor:
    """The same loss from whole logits [..., V] with torch's own functions (for tests and small models)."""
    ce_w, kl_w = objective.weights
    s = logits.reshape(-1, logits.shape[-1]).float()
    loss = s.new_zeros(())
    if ce_w:
        loss = loss + ce_w * F.cross_entropy(s, labels.reshape(-1), ignore_index=IGNORE)
    if kl_w:
        t = teacher_logits.reshape(-1, teacher_logits.shape[-1]).float()
        temp = objective.temperature
        kl = F.kl_div(
            torch.log_softmax(s / temp, -1), torch.log_softmax(t / temp, -1), log_target=True, reduction="sum"
        )
        loss = loss + kl_w * temp * temp * kl / s.shape[0]
    return loss


class Distiller:
    """A training step's loss for a student model, with a frozen teacher where the objective needs one.

    teacher: a float model with the student's vocabulary (e.g. the model as it was before QAT); it is put
    in eval mode and runs under inference mode, so it gets no gradients and stores nothing for backward.
    Its parameters' requires_grad flags are left as they are: a student later deep-copied from the same
    teacher must still be trainable. The teacher's output head must be a plain nn.Linear (not a QAT layer).
    """

    def __init__(self, objective: Objective, teacher: nn.Module | None = None) -> None:
        if objective.needs_teacher and teacher is None:
            raise ValueError(f"loss {objective.kind!r} needs a teacher model")
        self.objective = objective
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()

    def teacher_states(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's final hidden states and output weight/bias for token ids int64 [batch, seq]."""
        with torch.inference_mode(), tapped_head(self.teacher) as tap:
            self.teacher(input_ids=ids, use_cache=False)
        return dict(tap)

    def loss(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """The objective on token ids int64 [batch, seq] (labels = the next tokens): a float32 scalar."""
        teacher = self.teacher_states(ids) if self.objective.needs_teacher else {}
        with tapped_head(model) as tap:
            model(input_ids=ids, use_cache=False)
        return head_loss(
            tap["hidden"],
            tap["weight"],
            tap["bias"],
            next_token_labels(ids),
            self.objective,
            teacher.get("hidden"),
            teacher.get("weight"),
            teacher.get("bias"),
        )
