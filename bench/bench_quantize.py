"""Quantization throughput: sqat-kernels (C++, 1 thread and all threads) vs libggml vs gguf-py.

All competitors run in this process on the same float32 input (``0.02 * randn``, size x size), per format,
interleaved (one call of each per round, in a new random order each round); sqat and libggml write into
output arrays allocated once, as a caller of ``ggml_quantize_chunk`` does (gguf-py allocates its own).
Reported: median wall time over repeated runs after warm-up, throughput in M weights/s, ratios of sqat to
libggml (``ggml_quantize_chunk``, single-threaded), and whether sqat's bytes equal libggml's. Thread scaling
is shown twice: for single calls, which mostly find sqat's idle worker threads asleep (other competitors
ran in between), and for runs of calls in a row, where only the first call of a run pays for waking them.

Run from the repository root::

    python bench/bench_quantize.py                 # 1024 x 1024, all formats, no imatrix
    python bench/bench_quantize.py --size 2048 --imatrix --formats Q4_K Q6_K --out bench/results/q.json

The libggml wrapper is shared with the tests (``tests/libggml.py``); this script puts ``tests/`` on sys.path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import (
    add_tests_dir_to_path,
    cpu_steal_s,
    format_table,
    machine_info,
    measure_interleaved,
    usable_cores,
    write_json,
)

add_tests_dir_to_path()

import gguf  # noqa: E402
import libggml  # noqa: E402  (tests/libggml.py)

DEFAULT_OUT = "bench/results/quantize.json"
IMATRIX_IGNORED = ("Q8_0", "F16", "BF16")  # ggml_quantize_chunk does not use the imatrix for these
BURST = 8  # calls per run of the "in a row" competitors


def _gguf_py_quantizer(fmt: str) -> Any:
    """gguf-py's quantizer for ``fmt``, or None where gguf.quants only dequantizes this type."""
    qtype = gguf.GGMLQuantizationType[fmt]
    probe = np.zeros((1, gguf.GGML_QUANT_SIZES[qtype][0] * 8), dtype=np.float32)
    try:
        gguf.quants.quantize(probe, qtype)
    except NotImplementedError:
        return None
    return lambda x: gguf.quants.quantize(x, qtype)


def bench_format(
    fmt: str, x: np.ndarray, imatrix: np.ndarray | None, threads: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Time every competitor on one format; returns a JSON-ready record."""
    import sqat_kernels

    ggml = libggml.load()
    timing_kw = {"warmup": args.warmup, "repeats": args.repeats, "budget_s": args.budget}
    best = "auto"

    # Kernels compared as ggml_quantize_chunk is called: into a destination the caller owns, allocated
    # once (fresh arrays would add page faults of the allocator, not of the kernel, to every call).
    sqat_out = np.empty((x.shape[0], sqat_kernels.get_format(fmt).row_bytes(x.shape[1])), np.uint8)
    ggml_out = np.zeros_like(sqat_out)

    def on(variant: str, n: int) -> Any:
        def run() -> Any:
            sqat_kernels.set_cpu_variant(variant)
            return sqat_kernels.quantize(x, fmt, imatrix, threads=n, out=sqat_out)

        return run

    def in_a_row(fn: Any) -> Any:
        def run() -> None:
            for _ in range(BURST):
                fn()

        return run

    competitors: dict[str, Any] = {
        "sqat_1t": on(best, 1),
        f"sqat_{threads}t": on(best, threads),
        "libggml_1t": lambda: ggml.quantize(x, fmt, imatrix, out=ggml_out),
        # The same calls BURST at a time, as a loop over a model's tensors makes them: the pool's threads
        # are still awake for all but the first (a single call after the others' runs finds them asleep).
        "sqat_1t_burst": in_a_row(on(best, 1)),
        f"sqat_{threads}t_burst": in_a_row(on(best, threads)),
    }
    # Each instruction-set variant forced, one thread ("sqat_1t" is the automatic per-type choice).
    for variant in sqat_kernels.supported_cpu_variants():
        competitors[f"sqat_{variant}_1t"] = on(variant, 1)
    gguf_q = _gguf_py_quantizer(fmt)
    # gguf-py has no imatrix path; it is comparable where llama.cpp ignores the imatrix too
    if gguf_q is not None and (imatrix is None or fmt in IMATRIX_IGNORED):
        competitors["gguf_py"] = lambda: gguf_q(x)

    record: dict[str, Any] = {"format": fmt, "imatrix": imatrix is not None, "timings": {}}
    steal_before, t_before = cpu_steal_s(), time.perf_counter()
    timings = measure_interleaved(competitors, **timing_kw)
    steal_after = cpu_steal_s()
    record["wall_s"] = time.perf_counter() - t_before
    # Time the hypervisor took from each vCPU while this format was timed (None off Linux).
    record["host_steal_s"] = None
    if steal_before and steal_after:
        record["host_steal_s"] = [b - a for a, b in zip(steal_before, steal_after, strict=True)]
    for name, t in timings.items():
        calls = BURST if name.endswith("_burst") else 1
        rate = calls * x.size / t.median_s / 1e6
        record["timings"][name] = {**t.as_dict(), "calls": calls, "mweights_per_s": rate}
    sqat_kernels.set_cpu_variant(best)
    expected = ggml.quantize(x, fmt, imatrix)
    record["best_variant"] = best
    record["bytes_match_libggml"] = True
    for variant in sqat_kernels.supported_cpu_variants():
        sqat_kernels.set_cpu_variant(variant)
        same = np.array_equal(np.asarray(sqat_kernels.quantize(x, fmt, imatrix)), expected)
        record["bytes_match_libggml"] &= bool(same)
    sqat_kernels.set_cpu_variant(best)
    base = record["timings"]["libggml_1t"]["median_s"]
    record["speedup_vs_libggml_1t"] = {
        name: base * t["calls"] / t["median_s"]
        for name, t in record["timings"].items()
        if name != "libggml_1t"
    }
    return record


def plot(payload: dict[str, Any], path: Path) -> None:
    """Bar chart of the 1-thread speed ratio against libggml per format, one bar per CPU variant (auto and
    each built variant) and one for all threads; log scale (needs matplotlib; else skipped with a note)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib is not importable: PNG plot skipped")
        return
    records = payload["results"]
    threads = payload["config"]["threads"]
    first = ["sqat_1t", f"sqat_{threads}t"]
    keys = {k for r in records for k in r["speedup_vs_libggml_1t"] if not k.endswith("_burst")}
    series = first + sorted(keys - {*first, "gguf_py"}) + (["gguf_py"] if "gguf_py" in keys else [])
    fmts = [r["format"] for r in records]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(series)
    for i, key in enumerate(series):
        ys = [r["speedup_vs_libggml_1t"].get(key, 0.0) for r in records]
        label = {"sqat_1t": "sqat 1T (auto)", f"sqat_{threads}t": f"sqat {threads}T (auto)"}.get(
            key, key.replace("sqat_", "").replace("_1t", " 1T").replace("gguf_py", "gguf-py")
        )
        ax.bar([k + i * width for k in range(len(fmts))], ys, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(fmts))], fmts)
    ax.set_yscale("log")
    ax.set_ylabel("speed / libggml 1 thread")
    m = payload["machine"]
    shape = payload["config"]["shape"]
    ax.set_title(
        f"quantize {shape[0]}x{shape[1]} float32, imatrix={'yes' if payload['config']['imatrix'] else 'no'}; "
        f"{m['cpu_model']}, avx512f={m['cpu_flags']['avx512f']}",
        fontsize=9,
    )
    ax.legend(fontsize=8, ncol=len(series))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table and write JSON (and a PNG beside it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024, help="input is size x size float32 (default 1024)")
    p.add_argument("--formats", nargs="+", default=list(libggml.FORMATS), choices=libggml.FORMATS)
    p.add_argument(
        "--threads", type=int, default=usable_cores(), help="'all threads' count (default: usable cores)"
    )
    p.add_argument("--imatrix", action="store_true", help="pass a random positive importance matrix")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument(
        "--budget", type=float, default=5.0, help="seconds of timed runs per competitor (>=3 runs)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result path (default {DEFAULT_OUT})")
    args = p.parse_args(argv)

    if args.size % 256:
        p.error("--size must be a multiple of 256 (K-quant super-block)")
    rng = np.random.default_rng(args.seed)
    x = np.ascontiguousarray(0.02 * rng.standard_normal((args.size, args.size)), dtype=np.float32)
    imatrix = rng.lognormal(0.0, 1.0, args.size).astype(np.float32) if args.imatrix else None

    machine = machine_info()
    print(
        f"# {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"avx2={machine['cpu_flags']['avx2']} avx512f={machine['cpu_flags']['avx512f']}, "
        f"load average {machine['loadavg_1m_at_start']:.2f}"
    )
    print(
        f"# input {args.size}x{args.size} float32 (0.02*randn), imatrix={'yes' if args.imatrix else 'no'}, "
        f"threads={args.threads}"
    )

    records = []
    for fmt in args.formats:
        records.append(bench_format(fmt, x, imatrix, args.threads, args))
        print(f"  {fmt} done", file=sys.stderr, flush=True)

    import sqat_kernels

    nt = f"sqat_{args.threads}t"
    others = sqat_kernels.supported_cpu_variants()
    header = [
        "format",
        "sqat 1T (auto)",
        f"sqat {args.threads}T",
        "libggml 1T",
        "gguf-py",
        "sqat1T/ggml",
        f"sqat{args.threads}T/ggml",
        *[f"{v} 1T/ggml" for v in others],
        f"{args.threads}T/1T",
        f"{args.threads}T/1T x{BURST}",
        "bytes==",
    ]
    rows = []
    for r in records:
        t, s = r["timings"], r["speedup_vs_libggml_1t"]
        rows.append(
            [
                r["format"],
                t["sqat_1t"]["mweights_per_s"],
                t[nt]["mweights_per_s"],
                t["libggml_1t"]["mweights_per_s"],
                t["gguf_py"]["mweights_per_s"] if "gguf_py" in t else None,
                s["sqat_1t"],
                s[nt],
                *[s[f"sqat_{v}_1t"] for v in others],
                s[nt] / s["sqat_1t"],
                s[f"{nt}_burst"] / s["sqat_1t_burst"],
                "yes" if r["bytes_match_libggml"] else "NO",
            ]
        )
    print("throughput in M weights/s (median); ratios = sqat / libggml single-thread")
    print(f"{args.threads}T/1T: single calls; x{BURST}: {BURST} calls in a row (threads woken once per run)")
    print(format_table(rows, header))
    steal = [r["host_steal_s"] for r in records if r["host_steal_s"] is not None]
    if steal:
        per_cpu = ", ".join(f"cpu{i} {sum(s[i] for s in steal):.2f} s" for i in range(len(steal[0])))
        print(
            f"time the hypervisor took from the vCPUs while timing: {per_cpu} "
            f"(of {sum(r['wall_s'] for r in records):.0f} s)"
        )

    payload = {
        "benchmark": "quantize",
        "machine": machine,
        "config": {
            "shape": [args.size, args.size],
            "dtype": "float32",
            "distribution": "0.02*randn",
            "seed": args.seed,
            "imatrix": args.imatrix,
            "threads": args.threads,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "budget_s": args.budget,
            "libggml": str(libggml.load().path.name),
        },
        "results": records,
    }
    print(f"wrote {write_json(args.out, payload)}")
    plot(payload, Path(args.out).with_suffix(".png"))
    return 0 if all(r["bytes_match_libggml"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
