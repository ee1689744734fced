"""Deterministic input generators for the cross-checks against libggml.

Every case is a pure function of (case name, shape): its generator is seeded from a CRC of the name, so a test
id always denotes the same bytes regardless of test order, selection (``-k``) or pytest-xdist.

Cases (rows are float32, C-contiguous):

* ``randn``, ``weights`` (0.02·randn, like trained linear weights), ``heavy_tail`` (Student-t, df 2.5),
* ``fp16_ties_small`` / ``fp16_ties_wide``: integers and halves (exactly on the fp16 grid), each 32-block
  pinned to an extreme of -8 resp. 127 so that the legacy formats get ``d = ±1`` and ``x·id`` lands exactly
  on .5, scaled per row by a power of two (keeps the ties exact),
* ``zero_rows`` (some rows entirely 0), ``zero_subblocks`` (aligned zero 16- and 32-element pieces and one
  zero 256-block inside random rows), ``constant_blocks`` (constant 16/32/256-element pieces),
* ``single_nonzero`` (one non-zero value per row), ``tiny`` (1e-20·randn), ``large`` (1e3·randn),
* ``all_positive``, ``all_negative``.

Importance matrices: ``imatrix_none``, ``imatrix_rand`` (positive, log-normal), ``imatrix_zeros`` (random with
about a quarter of the entries 0, plus one whole 32-column piece of zeros).

:func:`ternary_edges` adds rows aimed at TQ1_0/TQ2_0's rounding (halves of the block maximum, a reciprocal
of the maximum that overflows, an fp16 scale that overflows). :func:`fp4_edges` adds rows aimed at the float
4-bit formats' scale rules (MXFP4's ``floor(log2f(amax))``
just below powers of two, its wrap-around for tiny blocks, NVFP4's UE4M3 rounding, subnormal cap and
saturation, magnitudes up to FLT_MAX) and at exact ties between E2M1 levels.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CASES",
    "FP4_GROUP",
    "IMATRIX_KINDS",
    "SHAPE_DEFAULT",
    "SHAPE_SMOLLM",
    "Case",
    "all_cases",
    "cases_for",
    "fp4_edges",
    "make_imatrix",
    "make_input",
    "rng_for",
    "ternary_edges",
]

#: Default shape: a few rows, row length a multiple of 256 so every format applies.
SHAPE_DEFAULT: tuple[int, int] = (4, 512)
#: SmolLM2-135M hidden size; 576 = 18·32 is not a multiple of 256, so only block-32 (and block-1) formats.
SHAPE_SMOLLM: tuple[int, int] = (3, 576)

IMATRIX_KINDS: tuple[str, ...] = ("imatrix_none", "imatrix_rand", "imatrix_zeros")


def rng_for(*key: object) -> np.random.Generator:
    """A NumPy generator seeded from a CRC32 of ``key`` (unlike ``hash()``, stable across processes)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _randn(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.standard_normal(shape)


def _weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return 0.02 * rng.standard_normal(shape)


def _heavy_tail(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return 0.05 * rng.standard_t(2.5, size=shape)


def _ties(rng: np.random.Generator, shape: tuple[int, int], limit: int, pin: float) -> np.ndarray:
    """Halves in [-limit, limit], one element of every 32-block set to ``pin``, row scale 2**k."""
    nrows, n = shape
    x = rng.integers(-2 * limit, 2 * limit + 1, size=shape) / 2.0
    pos = rng.integers(0, 32, size=(nrows, n // 32))
    blocks = x.reshape(nrows, n // 32, 32)
    np.put_along_axis(blocks, pos[..., None], pin, axis=-1)
    scale = 2.0 ** rng.integers(-8, 4, size=(nrows, 1))
    return x * scale


def _fp16_ties_small(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return _ties(rng, shape, 8, -8.0)


def _fp16_ties_wide(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return _ties(rng, shape, 127, 127.0)


def _zero_rows(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    x = rng.standard_normal(shape)
    x[0] = 0.0
    if shape[0] > 2:
        x[2] = 0.0
    return x


def _zero_subblocks(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    nrows, n = shape
    x = rng.standard_normal(shape)
    for r in range(nrows):
        for width in (16, 32):
            for start in rng.choice(n // width, size=max(1, n // width // 4), replace=False):
                x[r, start * width : (start + 1) * width] = 0.0
    if n % 256 == 0 and nrows > 1:
        x[1, n - 256 :] = 0.0  # a whole super-block
    return x


def _constant_blocks(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    nrows, n = shape
    x = rng.standard_normal(shape)
    for r in range(nrows):
        for width in (16, 32):
            for start in rng.choice(n // width, size=max(1, n // width // 4), replace=False):
                x[r, start * width : (start + 1) * width] = rng.standard_normal()
    if n % 256 == 0 and nrows > 1:
        x[1, :256] = 0.375  # a whole constant super-block (positive)
        x[nrows - 1, :256] = -1.25  # and a negative one
    return x


def _single_nonzero(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    nrows, n = shape
    x = np.zeros(shape)
    cols = rng.integers(0, n, size=nrows)
    x[np.arange(nrows), cols] = rng.standard_normal(nrows) * 3.0
    return x


def _tiny(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return 1e-20 * rng.standard_normal(shape)


def _large(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return 1e3 * rng.standard_normal(shape)


def _all_positive(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.abs(rng.standard_normal(shape)) + 0.01


def _all_negative(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return -np.abs(rng.standard_normal(shape)) - 0.01


_GENERATORS: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "randn": _randn,
    "weights": _weights,
    "heavy_tail": _heavy_tail,
    "fp16_ties_small": _fp16_ties_small,
    "fp16_ties_wide": _fp16_ties_wide,
    "zero_rows": _zero_rows,
    "zero_subblocks": _zero_subblocks,
    "constant_blocks": _constant_blocks,
    "single_nonzero": _single_nonzero,
    "tiny": _tiny,
    "large": _large,
    "all_positive": _all_positive,
    "all_negative": _all_negative,
}


@dataclass(frozen=True)
class Case:
    """One input: a generator name and a shape; ``id`` is what tests show (``randn``, ``weights_n576``)."""

    kind: str
    shape: tuple[int, int] = SHAPE_DEFAULT

    @property
    def id(self) -> str:
        """Readable test-id fragment; the row length is appended when it is not the default."""
        return self.kind if self.shape == SHAPE_DEFAULT else f"{self.kind}_n{self.shape[1]}"

    def make(self) -> np.ndarray:
        """The input rows: float32 ``[nrows, n_per_row]``, C-contiguous, deterministic."""
        return make_input(self.kind, self.shape)


#: Default-shape cases (every format) followed by the row-length-576 cases (block-32 and block-1 formats).
CASES: tuple[Case, ...] = tuple(Case(kind) for kind in _GENERATORS) + tuple(
    Case(kind, SHAPE_SMOLLM) for kind in ("randn", "weights", "fp16_ties_small", "zero_subblocks")
)


def all_cases() -> tuple[Case, ...]:
    """Every case, in a fixed order."""
    return CASES


def cases_for(block_size: int) -> tuple[Case, ...]:
    """The cases whose row length is a whole number of ``block_size`` blocks."""
    return tuple(c for c in CASES if c.shape[1] % block_size == 0)


def make_input(kind: str, shape: tuple[int, int] = SHAPE_DEFAULT) -> np.ndarray:
    """Float32 ``[nrows, n_per_row]`` rows of case ``kind``; deterministic in (kind, shape)."""
    try:
        gen = _GENERATORS[kind]
    except KeyError:
        raise ValueError(f"unknown case {kind!r}; known: {sorted(_GENERATORS)}") from None
    x = gen(rng_for("input", kind, shape), shape)
    return np.ascontiguousarray(x, dtype=np.float32)


def make_imatrix(kind: str, n_per_row: int) -> np.ndarray | None:
    """Importance matrix ``float32 [n_per_row]`` of the given kind, or ``None`` for ``imatrix_none``."""
    if kind == "imatrix_none":
        return None
    rng = rng_for("imatrix", kind, n_per_row)
    if kind == "imatrix_rand":
        w = rng.lognormal(mean=0.0, sigma=1.5, size=n_per_row)
    elif kind == "imatrix_zeros":
        w = rng.lognormal(mean=0.0, sigma=1.5, size=n_per_row)
        w[rng.random(n_per_row) < 0.25] = 0.0
        start = 32 * int(rng.integers(0, n_per_row // 32))
        w[start : start + 32] = 0.0
    else:
        raise ValueError(f"unknown imatrix kind {kind!r}; known: {IMATRIX_KINDS}")
    return np.ascontiguousarray(w, dtype=np.float32)


#: Values per scale of the float 4-bit formats: MXFP4's block, NVFP4's sub-block.
FP4_GROUP: dict[str, int] = {"MXFP4": 32, "NVFP4": 16}

# Half-way points between neighbouring doubled E2M1 levels 0, 1, 2, 3, 4, 6, 8, 12 (in units of the scale).
_FP4_MIDPOINTS = (0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0)


def _ue4m3_values() -> list[float]:
    """Every finite UE4M3 value (exponent bias 7, three mantissa bits, subnormals at exponent 0)."""
    vals = {m * 2.0**-9 for m in range(1, 8)}
    vals |= {(1 + m / 8) * 2.0 ** (e - 7) for e in range(1, 16) for m in range(8)}
    return sorted(vals)


def _fp4_group_maxima(fmt: str) -> np.ndarray:
    """Largest magnitudes of the groups of :func:`fp4_edges`, float32, positive and finite."""
    f32 = np.float32
    big = float(np.finfo(f32).max)
    amax: list[float] = []
    if fmt == "MXFP4":
        for k in range(-149, 128):
            p = f32(2.0**k)
            # just below a power of two, log2f rounds up to the next integer (for |k| >= 3)
            amax += [p, np.nextafter(p, f32(0)), np.nextafter(p, f32(np.inf)), p * f32(1.75)]
        amax += [big, np.nextafter(f32(big), f32(0)), 2.0**127 * 1.9]
    else:
        vals = _ue4m3_values()
        mids = [(a + b) / 2 for a, b in zip(vals[:-1], vals[1:], strict=True)]
        # scale targets: every UE4M3 value and rounding boundary, the subnormal cap (7.5 * 2^-9), the jump
        # past 240, saturation at 448 and beyond
        targets = vals + mids + [2.0**-11, 2.0**-10, 7.5 * 2.0**-9, 244.0, 248.0, 252.0, 500.0, 1e4]
        for v in targets:
            t = f32(v) * f32(6.0)
            amax += [t, np.nextafter(t, f32(0)), np.nextafter(t, f32(np.inf))]
        amax += [2.0**31, 2.0**36, 2.0**40, 1e20, big]  # saturated scale, differences that round away
    out = np.array(amax, dtype=f32)
    return out[np.isfinite(out) & (out > 0)]


def fp4_edges(fmt: str, n_per_row: int = 512) -> np.ndarray:
    """Rows of scale groups aimed at one float 4-bit format's rounding rules (``"MXFP4"`` or ``"NVFP4"``).

    Each group (32 values for MXFP4, 16 for NVFP4) has one of :func:`_fp4_group_maxima` as its largest
    magnitude (random sign and place), values exactly half-way between two levels of the scales the group
    may get (MXFP4: ``2**j`` around ``amax``'s exponent; NVFP4: half of ``amax / 6``, and 224), and random
    values below ``amax``. Deterministic.

    Returns:
        float32 ``[nrows, n_per_row]``, C-contiguous (the last groups are repeated to fill the last row).
    """
    group = FP4_GROUP[fmt]
    rng = rng_for("fp4_edges", fmt)
    f32 = np.float32
    groups = []
    for a in _fp4_group_maxima(fmt):
        if fmt == "MXFP4":
            e = int(np.floor(np.log2(float(a))))
            scales = [2.0**j for j in (e - 4, e - 3, e - 2)]
        else:
            scales = [float(a) / 12.0, 224.0]
        ties = [m * s * rng.choice([-1.0, 1.0]) for s in scales for m in _FP4_MIDPOINTS]
        g = (rng.uniform(-1.0, 1.0, group) * float(a)).astype(f32)
        ties_f = np.array(ties, dtype=np.float64)
        ties_f = ties_f[np.isfinite(ties_f) & (np.abs(ties_f) <= float(a))].astype(f32)
        k = min(group - 1, ties_f.size)
        g[:k] = rng.permutation(ties_f)[:k]
        g = rng.permutation(g)
        g[rng.integers(group)] = a * f32(rng.choice([-1.0, 1.0]))
        groups.append(g)
    x = np.concatenate(groups)
    nrows = -(-x.size // n_per_row)
    x = np.resize(x, nrows * n_per_row)  # repeats from the start to fill the last row
    return np.ascontiguousarray(x.reshape(nrows, n_per_row), dtype=np.float32)


def _ternary_block_maxima() -> list[float]:
    """Largest magnitudes of the blocks of :func:`ternary_edges` (float32 values, positive)."""
    f32 = np.float32
    out: list[float] = []
    # 1/amax overflows below 2**-128 (x * id is then inf, or NaN for x == 0); around that edge
    for k in (-149, -140, -130, -129, -128, -127, -126):
        p = f32(2.0**k)
        out += [float(p), float(np.nextafter(p, f32(np.inf)))]
    out += [float(np.nextafter(f32(2.0**-128), f32(0)))]
    # ordinary scales, powers of two (exact halves) and ones whose reciprocal rounds
    out += [1.0, 3.0, 0.1, 0.02, 7.0, 2.0**-20]
    # maxima whose rounded reciprocal puts amax/2 just below 0.5 (1.7294966), or the float below amax/2 at
    # 0.5 (1.863179)
    out += [1.7294966, 1.863179]
    # the fp16 scale: largest finite (65504), the rounding edge to inf (65520), beyond, near FLT_MAX
    out += [65504.0, 65519.996, 65520.0, 1e6, 1e30, float(np.finfo(f32).max)]
    return out


def ternary_edges(n_per_row: int = 512) -> np.ndarray:
    """Rows of 256-value blocks aimed at the ternary formats' rules (TQ1_0, TQ2_0).

    Each block has one of :func:`_ternary_block_maxima` as its largest magnitude (random place and sign),
    values at and one float step around the rounding points ``±amax/2`` (``lroundf`` rounds halves away
    from zero, and ``x * (1/amax)`` may land a hair off 0.5), zeros of both signs, and random values below
    ``amax``. Deterministic.

    Returns:
        float32 ``[nrows, n_per_row]``, C-contiguous (the last blocks are repeated to fill the last row).
    """
    f32 = np.float32
    rng = rng_for("ternary_edges")
    blocks = []
    for a in _ternary_block_maxima():
        amax = f32(a)
        half = f32(amax / f32(2.0))
        special = [half, -half, np.nextafter(half, f32(0)), -np.nextafter(half, f32(0)),
                   np.nextafter(half, f32(np.inf)), -np.nextafter(half, f32(np.inf)), f32(0.0), f32(-0.0)]
        b = (rng.uniform(-1.0, 1.0, 256) * float(amax)).astype(f32)
        b[: len(special)] = np.array(special, dtype=f32)
        b = rng.permutation(b)
        b[rng.integers(256)] = amax * f32(rng.choice([-1.0, 1.0]))
        blocks.append(b)
    x = np.concatenate(blocks)
    nrows = -(-x.size // n_per_row)
    x = np.resize(x, nrows * n_per_row)
    return np.ascontiguousarray(x.reshape(nrows, n_per_row), dtype=np.float32)
