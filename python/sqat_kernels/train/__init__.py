"""Training: token windows from text, a QAT fine-tuning loop, a transformers Trainer callback."""

from .data import TokenWindows, text_files
from .loop import TrainResult, train, write_log

__all__ = ["TokenWindows", "TrainResult", "text_files", "train", "write_log"]
