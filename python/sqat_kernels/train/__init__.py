"""Training: token windows from text, a QAT fine-tuning loop, distillation objectives, a transformers
Trainer callback, imatrices."""

from .data import TokenWindows, text_files
from .distill import LOSSES, Distiller, Objective, head_loss
from .imatrix import collect_imatrix
from .loop import LR_DECAYS, TrainResult, lr_factor, train, write_log
from .oscillation import OscillationFreezer

__all__ = [
    "LOSSES",
    "LR_DECAYS",
    "Distiller",
    "Objective",
    "OscillationFreezer",
    "TokenWindows",
    "TrainResult",
    "collect_imatrix",
    "head_loss",
    "lr_factor",
    "text_files",
    "train",
    "write_log",
]
