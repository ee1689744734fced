"""The demo's outputs: a table (terminal and Markdown), results.json, and a PNG plot."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

REFERENCE = "fine-tuned F32"


def _row(rows: list[dict], variant: str) -> dict | None:
    return next((r for r in rows if r["variant"] == variant), None)


def gap_closed(rows: list[dict], recipe: str, baseline: str = "fine-tuned PTQ") -> float | None:
    """Fraction of the perplexity gap between a PTQ baseline ("fine-tuned PTQ" or "fine-tuned imatrix
    PTQ") and the float fine-tuned model that QAT closes.

    1.0: QAT matches the float model; 0.0: no better than the baseline; negative: worse. None when the
    baseline shows no gap (or a row is missing).
    """
    ref, ptq, qat = _row(rows, REFERENCE), _row(rows, f"{baseline} {recipe}"), _row(rows, f"QAT {recipe}")
    if ref is None or ptq is None or qat is None:
        return None
    gap = ptq["perplexity"] - ref["perplexity"]
    if gap <= 0:
        return None
    return (ptq["perplexity"] - qat["perplexity"]) / gap


def table_lines(rows: list[dict], gaps: dict[str, float | None]) -> list[str]:
    """The results as Markdown table lines (also readable on a terminal)."""
    ref = _row(rows, REFERENCE)
    head = ["variant", "perplexity", f"vs {REFERENCE}", "mean KL", "top-1 agree", "size MiB"]
    body = []
    for r in rows:
        delta = f"{(r['perplexity'] / ref['perplexity'] - 1) * 100:+.1f} %" if ref else "-"
        body.append(
            [
                r["variant"],
                f"{r['perplexity']:.3f}",
                delta if r["variant"] != REFERENCE else "reference",
                f"{r['mean_kl']:.4f}",
                f"{r['top1_agreement'] * 100:.1f} %",
                f"{r['size_bytes'] / 2**20:.1f}",
            ]
        )
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)
        return "| " + " | ".join(padded) + " |"

    lines = [
        line(head),
        "|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|",
    ]
    lines += [line(b) for b in body]
    lines.append("")
    for recipe in gaps:
        for baseline in ("fine-tuned PTQ", "fine-tuned imatrix PTQ"):
            ptq, qat = _row(rows, f"{baseline} {recipe}"), _row(rows, f"QAT {recipe}")
            if ptq is None or qat is None:
                continue
            g = gap_closed(rows, recipe, baseline)
            text = "the baseline shows no perplexity gap" if g is None else f"{g * 100:.0f} %"
            kl = ""
            if ptq["mean_kl"] > 0:
                change = qat["mean_kl"] / ptq["mean_kl"] - 1
                kl = f"; mean KL {ptq['mean_kl']:.4f} -> {qat['mean_kl']:.4f} ({change:+.0%})"
            short = baseline.removeprefix("fine-tuned ")
            lines.append(f"- QAT {recipe} vs {short}: share of the perplexity gap closed = {text}{kl}")
    return lines


def _markdown(summary: Any) -> str:
    cfg = summary.config
    lines = [
        "# sqat demo results",
        "",
        f"- model: {cfg['model_dir']}",
        f"- data: {summary.split}",
        f"- training: {cfg['steps']} steps, batch {cfg['batch']} x {cfg['seq_len']} tokens, "
        f"lr {cfg['lr']:g}, AdamW; QAT ({cfg['qat_loss']}: "
        + ("distilled from the fine-tuned float model" if cfg["qat_loss"] == "kl" else "CE from the base")
        + f", {cfg['qat_steps'] or cfg['steps']} steps) schedule {cfg['schedule']} (F32 -> F16 -> Q8_0 -> "
        f"recipe), STE {cfg['ste']}, imatrix from {cfg['imatrix_batches']} batches",
        f"- evaluation: llama.cpp (llama-cpp-python), {summary.rows[0]['n_scored']} held-out tokens "
        f"(second halves of {cfg['eval_chunks']} chunks of {cfg['eval_ctx']}); KL against {REFERENCE}",
        f"- time: {summary.seconds['total'] / 60:.1f} min "
        + "("
        + ", ".join(f"{k} {v:.0f} s" for k, v in summary.seconds.items() if k != "total")
        + ")",
        "",
    ]
    lines += table_lines(summary.rows, summary.gap_closed)
    lines += ["", "![training loss and perplexity](demo.png)", ""]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plot(summary: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    logs = summary.train_logs
    shaded = next((v for k, v in logs.items() if k.startswith("QAT")), None)
    if shaded is not None:
        colors = {"F32": "#f2f2f2", "F16": "#e3ecf7", "Q8_0": "#fbe9d0"}
        start = 0
        rungs = shaded["rungs"]
        for i in range(1, len(rungs) + 1):
            if i == len(rungs) or rungs[i] != rungs[start]:
                ax_loss.axvspan(start, i, color=colors.get(rungs[start], "#f8d7da"), lw=0)
                ax_loss.text(
                    (start + i) / 2,
                    1.0,
                    rungs[start] if rungs[start] in colors else "recipe",
                    transform=ax_loss.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=8,
                )
                start = i
    window = max(1, len(next(iter(logs.values()))["losses"]) // 20)
    for name, log in logs.items():
        losses = np.asarray(log["losses"])
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax_loss.plot(
            np.arange(len(smooth)) + window - 1, smooth, label=name if name != "float" else "float fine-tune"
        )
    ax_loss.set_xlabel("step (shading: QAT rung)")
    ax_loss.set_ylabel(f"training loss (moving mean of {window})")
    ax_loss.legend(fontsize=8)

    rows = summary.rows
    names = [r["variant"] for r in rows]
    ppl = [r["perplexity"] for r in rows]
    kinds = {
        "base": "#9e9e9e",
        "base PTQ": "#cfcfcf",
        "fine-tuned": "#4c72b0",
        "fine-tuned PTQ": "#dd8452",
        "fine-tuned imatrix PTQ": "#c44e52",
        "QAT": "#55a868",
    }
    ax_ppl.barh(range(len(rows)), ppl, color=[kinds.get(r["kind"], "#888") for r in rows])
    ax_ppl.set_yticks(range(len(rows)), names, fontsize=8)
    ax_ppl.invert_yaxis()
    lo = min(ppl)
    ax_ppl.set_xlim(lo * 0.9, max(ppl) * 1.06)
    ref = _row(rows, REFERENCE)
    if ref is not None:
        ax_ppl.axvline(ref["perplexity"], color="#4c72b0", ls="--", lw=1)
    for i, v in enumerate(ppl):
        ax_ppl.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax_ppl.set_xlabel("held-out perplexity (llama.cpp)")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_reports(summary: Any, out_dir: Path) -> None:
    """Write results.json, results.md and demo.png into out_dir, and print the table."""
    out_dir = Path(out_dir)
    _write_atomic(out_dir / "results.json", json.dumps(asdict(summary), indent=1))
    _write_atomic(out_dir / "results.md", _markdown(summary))
    _plot(summary, out_dir / "demo.png")
    print("\n".join(table_lines(summary.rows, summary.gap_closed)), flush=True)
    files = ", ".join(str(out_dir / name) for name in ("results.md", "results.json", "demo.png"))
    print(f"\nwritten: {files}, GGUF files in {out_dir / 'gguf'}")
