"""Training-step cost of format-exact QAT vs the same model without fake quantization.

A SmolLM2-135M-shaped LlamaForCausalLM (the real config: hidden 576, 30 layers, 9/3 heads, ff 1536, vocab
49152, tied embeddings; random weights), batch 4 x 256 tokens, CPU, one process. Each competitor is a copy
of the same model with its own AdamW; one timed call = forward + backward + optimiser step on the same batch;
competitors interleaved, median of the timed calls:

* ``plain``: the model as transformers builds it;
* ``qat-Q4_K_M``: ``sqat_kernels.prepare(model, "Q4_K_M")`` at its final rung (each tensor at its recipe
  type);
* ``qat-Q8_0-rung`` / ``qat-F16-rung``: the same QAT model on the schedule's Q8_0 and F16 rungs;
* ``qat-Q4_K_M-distill``: the Q4_K_M QAT model trained by self-distillation (``Objective("kl")``) from a
  frozen float copy: the teacher's forward and the chunked KL over the vocabulary are the extra work.

Memory: bytes autograd saves for backward in one step (saved-tensor hooks; exact), plain vs QAT.

Run from the repository root::

    python bench/bench_qat_overhead.py [--repeats 5] [--batch 4] [--seq-len 256] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import sqat_kernels as sk
import torch
import transformers
from harness import format_table, machine_info, measure_interleaved, write_json
from sqat_kernels.schedule import BitWidthSchedule
from sqat_kernels.train import Distiller, Objective

SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
)


def _saved_bytes(step) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(backward=False)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench/results/qat_overhead.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2_135M))
    ids = torch.randint(0, SMOLLM2_135M["vocab_size"], (args.batch, args.seq_len))

    variants = {}
    teacher = copy.deepcopy(base)
    for name, rung in [
        ("plain", None),
        ("qat-Q4_K_M", "RECIPE"),
        ("qat-Q8_0-rung", "Q8_0"),
        ("qat-F16-rung", "F16"),
        ("qat-Q4_K_M-distill", "RECIPE"),
    ]:
        model = copy.deepcopy(base)
        if rung is not None:
            ladder = ("F32", "F16", "Q8_0", "RECIPE")
            sched = BitWidthSchedule(4, "constant", ladder=ladder[: ladder.index(rung) + 1])
            sk.prepare(model, "Q4_K_M", schedule=sched)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        distiller = Distiller(Objective("kl"), teacher) if name.endswith("distill") else None

        def step(model=model, opt=opt, distiller=distiller, backward=True):
            if distiller is None:
                loss = model(input_ids=ids, labels=ids).loss
            else:
                loss = distiller.loss(model, ids)
            if backward:
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return loss

        variants[name] = step

    saved = {name: _saved_bytes(step) for name, step in variants.items()}
    timings = measure_interleaved(variants, warmup=1, repeats=args.repeats, min_repeats=3, budget_s=60.0)
    plain = timings["plain"].median_s
    rows = []
    for name, t in timings.items():
        rows.append([name, t.median_s, t.median_s / plain, saved[name] / 2**20, saved[name] / saved["plain"]])
    header = ["variant", "step s (median)", "x plain", "saved for backward MiB", "x plain"]
    print(format_table(rows, header))
    payload = {
        "machine": machine_info(),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "config": SMOLLM2_135M,
        "results": {
            n: {"timing": timings[n].as_dict(), "ratio": timings[n].median_s / plain, "saved_bytes": saved[n]}
            for n in variants
        },
    }
    path = write_json(args.out, payload)
    print(f"wrote {path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(timings)
    bars = ax.bar(names, [timings[n].median_s for n in names], color="#4c72b0")
    ax.bar_label(bars, labels=[f"{timings[n].median_s / plain:.3f}x" for n in names], fontsize=8)
    ax.set_ylabel("train step, s (median)")
    ax.set_title(f"SmolLM2-135M shape, batch {args.batch}x{args.seq_len}, CPU")
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)
    print(f"wrote {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
