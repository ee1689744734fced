"""Training: token windows from text, a QAT fine-tuning loop, a transformers Trainer callback, imatrices."""

from .data import TokenWindows, text_files
from .imatrix import collect_imatrix
from .loop import TrainResult, train, write_log

__all__ = ["TokenWindows", "TrainResult", "collect_imatrix", "text_files", "train", "write_log"]
