"""The format registry: which GGUF tensor types sqat-kernels handles, and their block geometry.

Ids and block geometry come from the ``gguf`` package (``GGMLQuantizationType``, ``GGML_QUANT_SIZES``),
never re-declared here; the native core's own table is checked against it by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

#: Every type sqat-kernels can quantize and dequantize, in the order used by tables and tests.
SUPPORTED_TYPES: tuple[str, ...] = (
    "F32", "F16", "BF16",
    "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS",
    "MXFP4", "NVFP4",
    "TQ1_0", "TQ2_0",
)


@dataclass(frozen=True)
class QuantFormat:
    """One GGUF tensor type.

    Attributes:
        name: ggml's name, e.g. ``"Q4_K"``.
        ggml_type: the ``gguf.GGMLQuantizationType`` member (its value is ggml's type id).
        block_size: values per block along the last axis (GGUF ne0); 1 for plain float types.
        type_size: bytes per block.
    """

    name: str
    ggml_type: GGMLQuantizationType
    block_size: int
    type_size: int

    @property
    def type_id(self) -> int:
        return int(self.ggml_type)

    def row_bytes(self, n_per_row: int) -> int:
        """Bytes of one packed row of ``n_per_row`` values (a multiple of ``block_size``)."""
        return n_per_row // self.block_size * self.type_size

    def check_row_length(self, n_per_row: int) -> None:
        """Raise ValueError unless rows of ``n_per_row`` values split into whole blocks."""
        if n_per_row % self.block_size != 0:
            raise ValueError(
                f"{self.name} packs blocks of {self.block_size} values along the last axis; "
                f"a row length of {n_per_row} is not a multiple of {self.block_size}"
            )


def _build() -> dict[str, QuantFormat]:
    table = {}
    for name in SUPPORTED_TYPES:
        t = GGMLQuantizationType[name]
        block_size, type_size = GGML_QUANT_SIZES[t]
        table[name] = QuantFormat(name, t, block_size, type_size)
    return table


_FORMATS = _build()


def get_format(qtype: str | GGMLQuantizationType | QuantFormat) -> QuantFormat:
    """Resolve ``"Q4_K"`` (any case), a ``GGMLQuantizationType`` or a ``QuantFormat`` to a ``QuantFormat``.

    Raises:
        ValueError: the type is not one sqat-kernels supports (the message lists those it does).
        TypeError: ``qtype`` is neither a string nor a ggml type.
    """
    if isinstance(qtype, QuantFormat):
        return qtype
    if isinstance(qtype, GGMLQuantizationType):
        name = qtype.name
    elif isinstance(qtype, str):
        name = qtype.upper()
    else:
        raise TypeError(
            f"qtype must be a type name like 'Q4_K' or a gguf.GGMLQuantizationType, not {qtype!r}"
        )
    fmt = _FORMATS.get(name)
    if fmt is None:
        raise ValueError(f"unsupported quantization type {qtype!r}; supported: {', '.join(SUPPORTED_TYPES)}")
    return fmt
