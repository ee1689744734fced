"""Fake-quantization forward + backward: sqat-kernels (native CPU) vs eager PyTorch vs torchao vs torch.

Per weight shape of SmolLM2-1.7B and SmolLM2-135M and per GGUF format, on the same float32 weights
(``0.02 * randn``) and the same upstream gradient, in one process:

* ``sqat``: ``sqat_kernels.fake_quant(w, qtype)`` with ``w.requires_grad``, forward + ``backward(g)``
  (identity straight-through estimator); also the forward alone;
* ``eager``: the same math in eager PyTorch (``bench/eager_fake_quant.py``: Q8_0 and the Q4_K/Q6_K no-imatrix
  paths, vectorised across blocks, sequential inside), checked bit-exact against ``sqat`` first;
* context, once per shape: torchao's int4 group-32 fake quantizer (``IntxFakeQuantizer``, symmetric and
  asymmetric), ``torch.fake_quantize_per_channel_affine`` (int4 range, one scale per output row, scale
  computation included), and ``w.clone()`` (forward only) as the memory-bound floor, with
  ``dst.copy_(w)`` into a tensor allocated once beside it: a fresh output's first-touch page faults (when
  the allocator has handed the previous one back to the OS) can cost clone several times its copy.

Blocks run along the last axis (a linear layer's input features). Rows of 576 values (SmolLM2-135M's
hidden size) do not split into 256-value super-blocks, so the K-quants and IQ4_XS are skipped there, as
llama-quantize would fall back to another type. Reported: median ms (warm-up excluded, competitors
interleaved), M weights/s, eager/sqat speed-up, and forward bandwidth (8 bytes per weight: read + write)
as a share of clone's.

Run from the repository root::

    python bench/bench_fake_quant.py              # --quick (default): 1.7B shapes / 4 per side, 135M shapes
    python bench/bench_fake_quant.py --full       # the real SmolLM2-1.7B and -135M shapes (slow: eager Q4_K)
    python bench/bench_fake_quant.py --formats Q8_0 Q4_K --out bench/results/fq.json
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqat_kernels
import torch
from eager_fake_quant import EAGER_FORMATS, eager_fake_quant
from harness import Timing, format_table, machine_info, measure_interleaved, write_json
from sqat_kernels.backends.native import default_threads

DEFAULT_OUT = "bench/results/fake_quant.json"
FORMATS = [f for f in sqat_kernels.SUPPORTED_TYPES if f != "F32"]
BYTES_PER_WEIGHT = 8.0  # forward: read 4 bytes, write 4 bytes (fake quant and clone alike)

#: (model, tensor roles, [out_features, in_features]); blocks run along in_features.
FULL_SHAPES: list[tuple[str, str, tuple[int, int]]] = [
    ("SmolLM2-1.7B", "q/k/v/o_proj", (2048, 2048)),
    ("SmolLM2-1.7B", "gate/up_proj", (8192, 2048)),
    ("SmolLM2-1.7B", "down_proj", (2048, 8192)),
    ("SmolLM2-135M", "q/o_proj", (576, 576)),
    ("SmolLM2-135M", "gate/up_proj", (1536, 576)),
    ("SmolLM2-135M", "down_proj", (576, 1536)),
]
QUICK_SHAPES: list[tuple[str, str, tuple[int, int]]] = [
    ("SmolLM2-1.7B/4", "q/k/v/o_proj", (512, 512)),
    ("SmolLM2-1.7B/4", "gate/up_proj", (2048, 512)),
    ("SmolLM2-1.7B/4", "down_proj", (512, 2048)),
    *FULL_SHAPES[3:],
]


# ------------------------------------------------------------------------------------------------------------
# Competitors
# ------------------------------------------------------------------------------------------------------------


def verify_eager() -> None:
    """Eager ports must equal ``sqat_kernels.fake_quant`` bit for bit (random rows plus edge cases)."""
    gen = torch.Generator().manual_seed(1234)
    w = 0.02 * torch.randn(48, 512, generator=gen)
    w[1] = 0.0  # all-zero blocks
    w[2] = 0.5  # flat blocks
    w[3, :40] = 3.0  # flat sub-blocks next to random ones
    w[4] *= 1000.0  # large magnitudes
    w[5] = torch.rand(512, generator=gen)  # all positive (offset clamps to 0)
    w[6] = -torch.rand(512, generator=gen)  # all negative
    w[7, ::7] = 0.0
    for fmt, fn in EAGER_FORMATS.items():
        got = fn(w)
        want = sqat_kernels.fake_quant(w, fmt)
        if not torch.equal(got.view(torch.int32), want.view(torch.int32)):
            bad = int((got.view(torch.int32) != want.view(torch.int32)).sum())
            raise SystemExit(
                f"eager {fmt} port is NOT bit-exact vs sqat_kernels.fake_quant ({bad} values differ)"
            )
    print(f"# eager ports bit-exact vs sqat_kernels.fake_quant: {', '.join(EAGER_FORMATS)}")


def fwd_bwd(
    fn: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    g: torch.Tensor,
    keep: dict[str, torch.Tensor] | None = None,
    key: str = "",
) -> Callable[[], None]:
    """A timed step: ``y = fn(w); y.backward(g)`` (w.grad reset first); optionally keeps the last ``y``."""

    def step() -> None:
        w.grad = None
        y = fn(w)
        y.backward(g)
        if keep is not None:
            keep[key] = y.detach()

    return step


def fwd_only(fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor) -> Callable[[], None]:
    """A timed forward without autograd."""

    def step() -> None:
        with torch.no_grad():
            fn(w)

    return step


def torch_per_channel_int4(w: torch.Tensor) -> torch.Tensor:
    """``torch.fake_quantize_per_channel_affine``, int4 range [-8, 7], symmetric scale per output row."""
    with torch.no_grad():
        scale = (w.abs().amax(dim=1) / 7.5).clamp_(min=1e-12)
        zero_point = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -8, 7)


def torchao_quantizers() -> tuple[dict[str, Callable[[torch.Tensor], torch.Tensor]], str]:
    """torchao's int4 group-32 fake quantizers (symmetric, asymmetric), or ``({}, why not)``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return {}, f"torchao not usable: {type(e).__name__}: {e}"
    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for name, symmetric in (("torchao_int4_g32_sym", True), ("torchao_int4_g32_asym", False)):
        cfg = IntxFakeQuantizeConfig(torch.int4, group_size=32, is_symmetric=symmetric)
        out[name] = IntxFakeQuantizer(cfg)
    return out, f"torchao {torchao.__version__} IntxFakeQuantizer(int4, group_size=32)"


# ------------------------------------------------------------------------------------------------------------
# One shape
# ------------------------------------------------------------------------------------------------------------


def bench_shape(
    model: str,
    role: str,
    shape: tuple[int, int],
    formats: list[str],
    ao: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Time context competitors once and every format on one weight shape; returns a JSON-ready record."""
    gen = torch.Generator().manual_seed(args.seed)
    w = (0.02 * torch.randn(shape, generator=gen)).requires_grad_()
    g = torch.randn(shape, generator=gen)
    numel = w.numel()
    timing_kw = {"warmup": args.warmup, "repeats": args.repeats, "budget_s": args.budget}

    def summarize(t: Timing, fwd_only_bytes: bool = False) -> dict[str, Any]:
        d = {**t.as_dict(), "ms": t.median_s * 1e3, "mweights_per_s": numel / t.median_s / 1e6}
        if fwd_only_bytes:
            d["gb_per_s"] = BYTES_PER_WEIGHT * numel / t.median_s / 1e9
        return d

    dst = torch.empty_like(w, requires_grad=False)
    context: dict[str, Callable[[], None]] = {
        "clone_fwd": fwd_only(torch.clone, w),
        "copy_into_fwd": fwd_only(dst.copy_, w),
        "torch_fq_per_channel_int4": fwd_bwd(torch_per_channel_int4, w, g),
    }
    for name, q in ao.items():
        context[name] = fwd_bwd(q, w, g)
    ctx_t = measure_interleaved(context, **timing_kw)
    record: dict[str, Any] = {
        "model": model,
        "role": role,
        "shape": list(shape),
        "numel": numel,
        "context": {name: summarize(t, name.endswith("_fwd")) for name, t in ctx_t.items()},
        "formats": {},
    }
    clone_gbs = record["context"]["clone_fwd"]["gb_per_s"]

    for fmt in formats:
        bs = sqat_kernels.get_format(fmt).block_size
        if shape[1] % bs:
            record["formats"][fmt] = {"skipped": f"row length {shape[1]} is not a multiple of {bs}"}
            continue
        kept: dict[str, torch.Tensor] = {}
        comp: dict[str, Callable[[], None]] = {
            "sqat_fwd": fwd_only(lambda x, f=fmt: sqat_kernels.fake_quant(x, f), w),
            "sqat_fwd_bwd": fwd_bwd(lambda x, f=fmt: sqat_kernels.fake_quant(x, f), w, g, kept, "sqat"),
        }
        if fmt in EAGER_FORMATS:
            comp["eager_fwd_bwd"] = fwd_bwd(lambda x, f=fmt: eager_fake_quant(x, f), w, g, kept, "eager")
        if fmt == "Q8_0":  # bandwidth comparison interleaved with the floor it is compared against
            comp["clone_fwd"] = fwd_only(torch.clone, w)
        times = measure_interleaved(comp, **timing_kw)
        rec: dict[str, Any] = {
            name: summarize(t, name in ("sqat_fwd", "clone_fwd")) for name, t in times.items()
        }
        ref_gbs = rec["clone_fwd"]["gb_per_s"] if "clone_fwd" in rec else clone_gbs
        rec["fwd_bandwidth_pct_of_clone"] = 100.0 * rec["sqat_fwd"]["gb_per_s"] / ref_gbs
        if "eager_fwd_bwd" in rec:
            rec["speedup_vs_eager"] = rec["eager_fwd_bwd"]["median_s"] / rec["sqat_fwd_bwd"]["median_s"]
            rec["eager_bit_exact"] = bool(
                torch.equal(kept["eager"].view(torch.int32), kept["sqat"].view(torch.int32))
            )
            if not rec["eager_bit_exact"]:
                raise SystemExit(f"eager {fmt} differs from sqat on the {shape} bench tensor")
        record["formats"][fmt] = rec
        print(f"  {model} {shape} {fmt} done", file=sys.stderr, flush=True)
    return record


# ------------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------------


def tables(records: list[dict[str, Any]]) -> str:
    """The per-format table and the per-shape context table."""
    rows = []
    for r in records:
        sh = f"{r['shape'][0]}x{r['shape'][1]}"
        for fmt, f in r["formats"].items():
            if "skipped" in f:
                rows.append([sh, fmt, "skip", None, None, None, None, None, None, f"skipped: {f['skipped']}"])
                continue
            eager = f.get("eager_fwd_bwd")
            rows.append(
                [
                    sh,
                    fmt,
                    f["sqat_fwd_bwd"]["ms"],
                    f["sqat_fwd_bwd"]["mweights_per_s"],
                    eager["ms"] if eager else None,
                    f.get("speedup_vs_eager"),
                    f["sqat_fwd"]["ms"],
                    f["sqat_fwd"]["gb_per_s"],
                    f["fwd_bandwidth_pct_of_clone"],
                    ("eager bit-exact" if f.get("eager_bit_exact") else "") if eager else "",
                ]
            )
    header = [
        "shape",
        "format",
        "sqat f+b ms",
        "sqat Mw/s",
        "eager f+b ms",
        "eager/sqat",
        "sqat fwd ms",
        "fwd GB/s",
        "% clone",
        "note",
    ]
    main = format_table(rows, header)

    crow = []
    for r in records:
        c = r["context"]
        crow.append(
            [
                f"{r['shape'][0]}x{r['shape'][1]}",
                r["model"],
                r["role"],
                c["clone_fwd"]["ms"],
                c["clone_fwd"]["gb_per_s"],
                c["copy_into_fwd"]["gb_per_s"],
                c["torch_fq_per_channel_int4"]["ms"],
                c["torchao_int4_g32_sym"]["ms"] if "torchao_int4_g32_sym" in c else None,
                c["torchao_int4_g32_asym"]["ms"] if "torchao_int4_g32_asym" in c else None,
            ]
        )
    cheader = [
        "shape",
        "model",
        "tensors",
        "clone ms",
        "clone GB/s",
        "copy_ GB/s",
        "torch per-ch int4 f+b ms",
        "torchao int4 g32 sym f+b ms",
        "torchao int4 g32 asym f+b ms",
    ]
    title = "context (format-independent competitors, same tensors):"
    return f"{main}\n\n{title}\n{format_table(crow, cheader)}"


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Bar chart of fwd+bwd M weights/s per format and shape (needs matplotlib; else skipped with a note)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib is not importable: PNG plot skipped")
        return
    fmts = [f for f in FORMATS if any(f in r["formats"] for r in records)]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / max(len(records), 1)
    for i, r in enumerate(records):
        ys = [r["formats"].get(f, {}).get("sqat_fwd_bwd", {}).get("mweights_per_s", 0.0) for f in fmts]
        xs = [k + i * width for k in range(len(fmts))]
        ax.bar(xs, ys, width, label=f"{r['shape'][0]}x{r['shape'][1]}")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(fmts))], fmts)
    ax.set_ylabel("sqat fake_quant fwd+bwd, M weights/s")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"# plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the tables and write JSON (and a PNG if possible)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1.7B shapes scaled by 1/4 per side (default)")
    mode.add_argument("--full", action="store_true", help="real SmolLM2-1.7B shapes (slow: eager Q4_K)")
    p.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="restrict this process to N cores (CPU affinity, so sqat follows) and torch to N threads "
        "(default: all usable cores)",
    )
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--budget", type=float, default=1.0, help="timed seconds per competitor (>=3 runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result path (default {DEFAULT_OUT})")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG next to the JSON")
    args = p.parse_args(argv)
    shapes = FULL_SHAPES if args.full else QUICK_SHAPES
    if args.threads is not None:
        if args.threads < 1 or not hasattr(os, "sched_setaffinity"):
            p.error("--threads needs N >= 1 and a platform with sched_setaffinity (Linux)")
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
        torch.set_num_threads(args.threads)

    machine = machine_info()
    print(
        f"# {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"avx2={machine['cpu_flags']['avx2']} avx512f={machine['cpu_flags']['avx512f']}, "
        f"load average {machine['loadavg_1m_at_start']:.2f}"
    )
    print(
        f"# threads: sqat native {default_threads()}, torch {torch.get_num_threads()}; "
        f"mode {'full' if args.full else 'quick'}; weights 0.02*randn float32, "
        "fwd+bwd = forward + backward(g)"
    )
    verify_eager()
    ao, ao_note = torchao_quantizers()
    print(f"# {ao_note}")

    records = [bench_shape(m, role, s, args.formats, ao, args) for m, role, s in shapes]
    print(
        "ms = median wall time; eager/sqat = eager PyTorch of the same math / sqat (fwd+bwd); "
        "% clone = sqat forward GB/s / w.clone() GB/s"
    )
    print(tables(records))
    payload = {
        "benchmark": "fake_quant",
        "machine": machine,
        "mode": "full" if args.full else "quick",
        "threads": {"sqat": default_threads(), "torch": torch.get_num_threads()},
        "eager_formats": list(EAGER_FORMATS),
        "torchao": ao_note,
        "settings": {k: v for k, v in vars(args).items() if k != "formats"},
        "formats": args.formats,
        "results": records,
    }
    out = write_json(args.out, payload)
    print(f"# results written to {out}")
    if not args.no_plot:
        plot(records, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
