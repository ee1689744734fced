"""QAT layers and the model-level prepare / convert."""

from .modules import QATConfig, QATEmbedding, QATLinear, TrainedAs
from .prepare import convert, prepare, qat_modules

__all__ = ["QATConfig", "QATEmbedding", "QATLinear", "TrainedAs", "convert", "prepare", "qat_modules"]
