"""QATLinear and QATEmbedding: nn.Linear / nn.Embedding whose forward sees the weight llama.cpp will decode.

The weight stays a float parameter (the "latent" weight the optimiser updates). Each forward calls the
sqat::fake_quant op once on it, with the type of the schedule's current rung (or the tensor's recipe
type), and the straight-through backward passes the gradient to the latent weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..formats import get_format
from ..ops.fake_quant import STE_VARIANTS
from ..schedule import BitWidthSchedule, resolve_rung

_FLOAT = ("F32",)


@dataclass
class QATConfig:
    """How one module fake-quantizes its weight.

    qtype: the tensor's recipe type (GGUF type name, e.g. "Q4_K"), what it is exported as.
    imatrix: importance weights float32 [in_features] (one per column, as llama-quantize uses them).
    ste: straight-through backward, "identity" or "clipped".
    enabled: False gives the plain float forward.
    """

    qtype: str
    imatrix: torch.Tensor | None = None
    ste: str = "identity"
    enabled: bool = True

    def __post_init__(self) -> None:
        self.qtype = get_format(self.qtype).name
        if self.ste not in STE_VARIANTS:
            raise ValueError(f"unsupported ste {self.ste!r}; supported: {', '.join(STE_VARIANTS)}")
        if self.imatrix is not None:
            imatrix = torch.as_tensor(self.imatrix)
            if imatrix.dim() != 1 or not imatrix.is_floating_point():
                raise ValueError(
                    f"imatrix must be a 1-D float tensor, got shape {tuple(imatrix.shape)}, "
                    f"dtype {imatrix.dtype}"
                )
            if not bool(torch.isfinite(imatrix).all()):
                raise ValueError("imatrix holds a non-finite value")
            self.imatrix = imatrix.detach().to(torch.float32).contiguous()


def _is_sharded(weight: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed support
        return False
    return isinstance(weight, DTensor)


def _row_fallback(qtype: str, n: int) -> str:
    # A rung type the row does not split into (only possible for rungs coarser than the recipe's own
    # fallback-checked type): llama-quantize would store such a tensor as F16.
    return qtype if n % get_format(qtype).block_size == 0 else "F16"


class TrainedAs(NamedTuple):
    """What a QAT layer's weight trains against, as data for the exporter (which never imports nn: it
    reads the `trained_as` attribute of any module that has one).

    qtype: the recipe type prepare() gave the tensor; active_qtype: the rung its forward uses now ("F32"
    before the schedule reaches a quantized rung); imatrix: float32 [columns] importance weights or None.
    """

    qtype: str
    active_qtype: str
    imatrix: torch.Tensor | None


class _QATMixin:
    """The fake-quant state shared by QATLinear and QATEmbedding (weight rows = GGUF rows)."""

    config: QATConfig
    weight: nn.Parameter
    _prefetched: tuple | None = None

    def _init_qat(self, config: QATConfig, schedule: BitWidthSchedule | None) -> None:
        n = self.weight.shape[-1]
        block = get_format(config.qtype).block_size
        if n % block:
            raise ValueError(
                f"{config.qtype} needs rows that split into {block}-blocks; this weight has "
                f"{n} columns (the recipe's fallback type should have been chosen)"
            )
        if config.imatrix is not None and config.imatrix.shape[0] != n:
            raise ValueError(f"imatrix has {config.imatrix.shape[0]} entries, the weight {n} columns")
        self.config = config
        self.register_buffer("imatrix", config.imatrix, persistent=False)
        self.schedule = None
        self.active_qtype = config.qtype if config.enabled else "F32"
        if schedule is not None:
            self.follow(schedule)

    @property
    def trained_as(self) -> TrainedAs:
        return TrainedAs(self.config.qtype, self.active_qtype, self.imatrix)

    def follow(self, schedule: BitWidthSchedule) -> None:
        """Train at `schedule`'s rungs from now on (its current rung applies at once)."""
        self.schedule = schedule
        schedule.add_listener(self.set_rung)

    def set_rung(self, rung: str) -> None:
        """Use the type `rung` maps to for this tensor (see schedule.resolve_rung) in later forwards."""
        if not self.config.enabled:
            self.active_qtype = "F32"
            return
        self.active_qtype = _row_fallback(resolve_rung(rung, self.config.qtype), self.weight.shape[-1])

    def fake_weight(self) -> torch.Tensor:
        """The weight the forward uses: fake-quantized to `active_qtype`, in the weight's dtype.

        In float32 this is bit-identical to dequantize(quantize(weight, active_qtype, imatrix)). For a
        bf16/fp16 weight the dequantized value is rounded once to that dtype. A result computed ahead by
        `prefetch` is used (once) when the weight, its version, the type and the grad mode are unchanged.
        """
        ahead, self._prefetched = self._prefetched, None
        if ahead is not None:
            weight, version, qtype, grad_mode, out = ahead
            if (
                weight is self.weight
                and version == weight._version
                and qtype == self.active_qtype
                and grad_mode == torch.is_grad_enabled()
            ):
                return out
        return self._fake_quantize()

    def hold_weight(self) -> torch.Tensor:
        """`fake_weight()`, kept for this module's next forward: a caller that needs the weight itself (the
        distillation loss, which computes a head's logits in chunks) and the forward then share one
        fake-quantized tensor and one gradient path."""
        out = self.fake_weight()
        held = (self.weight, self.weight._version, self.active_qtype, torch.is_grad_enabled(), out)
        self._prefetched = held
        return out

    def prefetch(self) -> None:
        """Compute the next forward's fake-quantized weight now.

        prepare() calls this for every layer, back to back, before a model's training forward: one burst
        of sqat kernels instead of one call between every two matmuls, whose thread pools then keep
        contending for the cores (PyTorch's OpenMP threads spin for a while after each matmul). The
        values are the same; only the time they are computed at moves.
        """
        if _is_sharded(self.weight):
            return  # FSDP2 holds a shard here; the full weight only exists inside the layer's forward
        self._prefetched = (
            self.weight,
            self.weight._version,
            self.active_qtype,
            torch.is_grad_enabled(),
            self._fake_quantize(),
        )

    def _fake_quantize(self) -> torch.Tensor:
        qtype = self.active_qtype
        if qtype in _FLOAT:
            return self.weight
        imatrix = self.imatrix
        if imatrix is not None and imatrix.device != self.weight.device:
            imatrix = imatrix.to(self.weight.device)
        out = torch.ops.sqat.fake_quant(self.weight, qtype, imatrix, self.config.ste, "auto")
        return out if out.dtype == self.weight.dtype else out.to(self.weight.dtype)

    def qat_repr(self) -> str:
        return f"qtype={self.config.qtype}, active={self.active_qtype}, ste={self.config.ste}"


class QATLinear(_QATMixin, nn.Linear):
    """nn.Linear whose forward uses the fake-quantized weight (blocks along in_features = GGUF ne0).

    Built with `QATLinear.from_linear(linear, config, schedule=None)`; the parameters are shared with
    the original module, not copied. `to_linear()` gives a plain nn.Linear holding the fake-quantized
    weight. A lm_head tied to a QATEmbedding (`tied_to`) uses that embedding's fake-quantized weight of
    the same forward instead of computing it a second time.
    """

    def __init__(self, *args, **kwargs) -> None:  # direct construction: plain nn.Linear args + config=
        config = kwargs.pop("config", None)
        schedule = kwargs.pop("schedule", None)
        super().__init__(*args, **kwargs)
        if config is None:
            raise TypeError("QATLinear needs config=QATConfig(...); or use QATLinear.from_linear")
        self._tied: list[QATEmbedding] = []
        self._init_qat(config, schedule)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        config: QATConfig,
        schedule: BitWidthSchedule | None = None,
        *,
        tied_to: QATEmbedding | None = None,
    ) -> QATLinear:
        """Wrap `linear` (its weight and bias Parameters are reused; device and dtype kept; meta-safe)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.bias = linear.bias
        new._tied = []
        if tied_to is not None:
            if tied_to.weight is not linear.weight:
                raise ValueError("tied_to must share this linear layer's weight Parameter")
            new._tied.append(tied_to)  # a plain list: the embedding is not registered as a child twice
        new._init_qat(config, schedule)
        return new

    def fake_weight(self) -> torch.Tensor:
        if self._tied:
            shared = self._tied[0].take_shared_weight()
            if shared is not None:
                return shared
        return super().fake_weight()

    def prefetch(self) -> None:
        if not self._tied:  # a tied lm_head reuses the embedding's result instead
            super().prefetch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fake_weight(), self.bias)

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear whose weight is the fake-quantized weight a forward would use now."""
        with torch.no_grad():
            weight = self.fake_weight().detach().clone()
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        linear.weight = nn.Parameter(weight, requires_grad=self.weight.requires_grad)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=self.bias.requires_grad)
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.qat_repr()}"


class QATEmbedding(_QATMixin, nn.Embedding):
    """nn.Embedding whose lookups read the fake-quantized table (blocks along embedding_dim = GGUF ne0).

    When a lm_head is tied to it, the fake-quantized table of a forward is handed to the lm_head once
    (`take_shared_weight`), so the shared tensor is fake-quantized once per forward and both uses see
    the same values and feed one gradient.
    """

    def __init__(self, *args, **kwargs) -> None:
        config = kwargs.pop("config", None)
        schedule = kwargs.pop("schedule", None)
        super().__init__(*args, **kwargs)
        if config is None:
            raise TypeError("QATEmbedding needs config=QATConfig(...); or use QATEmbedding.from_embedding")
        self._shared: tuple[int, str, torch.Tensor] | None = None
        self._init_qat(config, schedule)

    @classmethod
    def from_embedding(
        cls, embedding: nn.Embedding, config: QATConfig, schedule: BitWidthSchedule | None = None
    ) -> QATEmbedding:
        """Wrap `embedding` (its weight Parameter is reused; device and dtype kept; meta-safe)."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"from_embedding expects an nn.Embedding, got {type(embedding).__name__}")
        if embedding.sparse:
            raise ValueError("sparse embeddings are not supported by QATEmbedding")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for attr in (
            "num_embeddings",
            "embedding_dim",
            "padding_idx",
            "max_norm",
            "norm_type",
            "scale_grad_by_freq",
            "sparse",
        ):
            setattr(new, attr, getattr(embedding, attr))
        new.weight = embedding.weight
        new._shared = None
        new._init_qat(config, schedule)
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.fake_weight()
        # Handed to a tied lm_head of this same forward; the weight's version guards against an
        # optimiser step in between.
        self._shared = (self.weight._version, self.active_qtype, weight)
        return F.embedding(
            ids, weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )

    def take_shared_weight(self) -> torch.Tensor | None:
        """The fake-quantized table of the current forward, once; None if there is none to reuse."""
        shared, self._shared = self._shared, None
        if shared is None:
            return None
        version, qtype, weight = shared
        if version != self.weight._version or qtype != self.active_qtype:
            return None
        if torch.is_grad_enabled() and self.weight.requires_grad and not weight.requires_grad:
            return None  # computed under no_grad: useless for a training forward
        return weight

    def to_embedding(self) -> nn.Embedding:
        """A plain nn.Embedding whose table is the fake-quantized table a forward would use now."""
        with torch.no_grad():
            weight = self.fake_weight().detach().clone()
        emb = nn.Embedding(
            self.num_embeddings,
            self.embedding_dim,
            padding_idx=self.padding_idx,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
            device=weight.device,
            dtype=weight.dtype,
        )
        emb.weight = nn.Parameter(weight, requires_grad=self.weight.requires_grad)
        return emb

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.qat_repr()}"
