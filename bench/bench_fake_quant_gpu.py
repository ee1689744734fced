"""Fake quantization on a CUDA GPU: the native CUDA kernels and the Triton kernels against tensor.clone().

    python bench/bench_fake_quant_gpu.py [--formats Q8_0 Q4_K ...] [--out bench/results/fake_quant_gpu.json]

Forward only and forward + backward (identity STE), on the SmolLM2-1.7B weight shapes, float32; each cell
is the median of CUDA-event timings after warm-up; GB/s counts the bytes read and written (8 per weight),
as for clone. Every result is first checked bit for bit against the CPU op on the same tensor.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import sqat_kernels as sk
import torch

SHAPES = [(2048, 2048), (8192, 2048), (2048, 8192)]
FORMATS = ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]


def _time(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fake_quant_gpu.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available() or not sk.cuda_usable():
        raise SystemExit("needs a CUDA GPU and a CUDA build of sqat-kernels")
    rows = []
    print(f"{torch.cuda.get_device_name()}")
    head = ("shape", "format", "backend", "fwd ms", "fwd GB/s", "% clone", "f+b ms")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (11, 7, 7, 8, 9, 8, 8), strict=True)))
    for shape in SHAPES:
        w = (0.02 * torch.randn(shape)).cuda()
        clone_s = _time(lambda w=w: w.clone())
        nbytes = 8 * w.numel()
        label = "x".join(map(str, shape))
        print(f"{label:>11} {'clone':>7} {'-':>7} {clone_s * 1e3:8.3f} {nbytes / clone_s / 1e9:9.0f}")
        g = torch.randn_like(w)
        for qtype in args.formats:
            want = sk.fake_quant(w.cpu(), qtype)
            for backend in ("auto", "triton"):
                got = sk.fake_quant(w, qtype, backend=backend)
                if not torch.equal(got.cpu().view(torch.int32), want.view(torch.int32)):
                    raise SystemExit(f"{qtype} {backend} on {shape}: not bit-exact with the CPU op")
                fwd = _time(lambda q=qtype, b=backend, w=w: sk.fake_quant(w, q, backend=b))
                wg = w.clone().requires_grad_(True)

                def step(q=qtype, b=backend, wg=wg, g=g):
                    sk.fake_quant(wg, q, backend=b).backward(g)

                fb = _time(step)
                name = "cuda" if backend == "auto" else backend
                row = {
                    "shape": list(shape),
                    "format": qtype,
                    "backend": name,
                    "fwd_s": fwd,
                    "fwd_bwd_s": fb,
                    "fwd_gbps": nbytes / fwd / 1e9,
                    "clone_s": clone_s,
                    "fwd_vs_clone": clone_s / fwd,
                }
                rows.append(row)
                print(
                    f"{label:>11} {qtype:>7} {name:>7} {fwd * 1e3:8.3f} "
                    f"{row['fwd_gbps']:9.0f} {100 * row['fwd_vs_clone']:7.0f}% {fb * 1e3:8.3f}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    print(f"# results written to {args.out}")


if __name__ == "__main__":
    main()
