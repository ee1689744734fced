"""NumPy views of contiguous CPU torch tensors for the native module, borrowed without side effects.

`Tensor.numpy()` marks the tensor's storage as not resizable (numpy may keep a pointer into it), and
FSDP2 frees unsharded parameters by resizing their storage to zero, so a weight that went through
`.numpy()` breaks FSDP2 training. The native calls only borrow the memory for their duration, so a view
built from the raw address is enough and leaves the storage as it was.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

_NUMPY_DTYPE = {"torch.float32": np.float32, "torch.uint8": np.uint8}


def borrowed_numpy(t: Any) -> np.ndarray:
    """A NumPy array over the memory of `t` (contiguous CPU float32/uint8 tensor), valid while `t` lives.

    Shape and dtype follow `t`; the caller keeps `t` alive for as long as the array is used.
    """
    dtype = _NUMPY_DTYPE.get(str(t.dtype))
    if dtype is None or t.device.type != "cpu" or not t.is_contiguous():
        raise TypeError(
            f"borrowed_numpy needs a contiguous CPU float32/uint8 tensor, got {t.dtype} on {t.device}"
        )
    if t.numel() == 0:
        return np.empty(tuple(t.shape), dtype=dtype)
    nbytes = t.numel() * t.element_size()
    buffer = (ctypes.c_uint8 * nbytes).from_address(t.data_ptr())
    return np.frombuffer(buffer, dtype=dtype).reshape(tuple(t.shape))
