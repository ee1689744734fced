"""QAT layers and the model-level prepare / convert."""

from .modules import QATConfig, QATEmbedding, QATLinear
from .prepare import convert, prepare, qat_modules

__all__ = ["QATConfig", "QATEmbedding", "QATLinear", "convert", "prepare", "qat_modules"]
