"""torch.library ops (``torch.ops.sqat.*``); importing this package registers them (needs torch)."""

from .fake_quant import fake_quant

__all__ = ["fake_quant"]
