"""Shared benchmark harness: timing (warm-up + median of repeats), machine description, tables, JSON output.

Every ``bench/bench_<area>.py`` runs its competitors in one process on the same input through
:func:`measure`, prints :func:`format_table` and saves :func:`write_json`. Timing checks never live in the
test suite; benchmarks only report.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Timing",
    "add_tests_dir_to_path",
    "cpu_steal_s",
    "format_table",
    "machine_info",
    "measure_interleaved",
    "usable_cores",
    "write_json",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Timing:
    """Wall-clock seconds of the timed runs (warm-up excluded)."""

    runs_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        """Median run time in seconds."""
        return statistics.median(self.runs_s)

    @property
    def min_s(self) -> float:
        """Fastest run in seconds."""
        return min(self.runs_s)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"median_s": self.median_s, "min_s": self.min_s, "runs_s": list(self.runs_s)}


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 7,
    min_repeats: int = 3,
    budget_s: float = 10.0,
) -> dict[str, Timing]:
    """Time several competitors in interleaved rounds (one call of each per round).

    Interleaving spreads slow drifts of machine load (other processes, turbo, thermal) evenly over the
    competitors, which keeps their ratios meaningful on a shared machine. Each round runs them in a new
    (seeded) random order, so that no competitor always follows the same one: a call's time depends on
    what ran before it (on an AMD EPYC VM, a 16 MB Q4_1 quantize took 1.53 ms right after gguf-py's large
    temporaries had evicted its input, 1.16 ms right after other calls on the same input). Each
    competitor gets ``warmup`` untimed calls, then rounds run until ``repeats`` rounds, or until
    ``min_repeats`` rounds are done and the timed calls have used ``budget_s`` per competitor on average.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timings = {name: Timing() for name in fns}
    spent = 0.0
    order = list(fns)
    shuffler = random.Random(0)
    for i in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            timings[name].runs_s.append(dt)
            spent += dt
        if i + 1 >= min_repeats and spent >= budget_s * len(fns):
            break
    return timings


def usable_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    """CPU model name and feature flags from /proc/cpuinfo (Linux); platform fallbacks elsewhere."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_steal_s() -> list[float] | None:
    """Seconds each CPU has been kept from running by the hypervisor since boot ("steal" in /proc/stat).

    On a virtual machine whose host is busy the vCPUs lose time to other guests; the difference of two
    readings tells how much a timed stretch lost.  None where /proc/stat is not available (not Linux).
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return [int(fields[8]) / tick if len(fields) > 8 else 0.0 for fields in lines]


def machine_info() -> dict[str, Any]:
    """Machine description embedded in every result file."""
    model, flags = _cpu_model_and_flags()
    simd = [
        "sse4_2",
        "avx",
        "f16c",
        "fma",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_bf16",
        "avx512_fp16",
    ]
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu_flags": {name: name in flags for name in simd},
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "packages": {
            name: _version(name) for name in ("sqat-kernels", "numpy", "gguf", "llama_cpp_python", "torch")
        },
        "loadavg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def add_tests_dir_to_path() -> None:
    """Make the test helpers (``tests/libggml.py`` etc.) importable (benchmarks reuse libggml.py)."""
    tests_dir = str(REPO_ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Plain-text table; floats with 3 significant digits, ``None`` as ``-``."""

    def cell(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, creating parent folders; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return out


def _json_default(obj: object) -> object:
    if hasattr(obj, "tolist"):  # NumPy scalars/arrays
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)  # type: ignore[arg-type]
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
