"""Worker processes for tests/test_distributed.py (CPU, gloo): DDP and FSDP2 QAT training."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from sqat_kernels.nn import prepare
from sqat_kernels.schedule import BitWidthSchedule
from sqat_kernels.train import Distiller, Objective, TokenWindows, train
from tiny_models import TEXT, byte_bpe_tokenizer, tiny_llama

STEPS = 6
BATCH = 2  # per rank
SEQ = 16
LR = 1e-3
RECIPE = "Q4_0"


def windows() -> TokenWindows:
    return TokenWindows.from_texts([TEXT], byte_bpe_tokenizer(), seq_len=SEQ)


def teacher_for(loss: str, tied: bool):
    """The frozen float teacher of a distillation run ("kl"), or None for the model's own CE ("ce")."""
    return tiny_llama(vocab=300, tied=tied, hidden=64, ff=256, seed=1) if loss == "kl" else None


def qat_model(tied: bool):
    model = tiny_llama(vocab=300, tied=tied, hidden=64, ff=256)
    sched = BitWidthSchedule(STEPS)
    prepare(model, RECIPE, pure=True, schedule=sched)
    return model, sched


def run(rank: int, world_size: int, port: int, mode: str, tied: bool, out_dir: str, loss: str = "ce") -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model, sched = qat_model(tied)
        if mode == "ddp":
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.fsdp import fully_shard

            for layer in model.model.layers:
                fully_shard(layer)
            fully_shard(model)
            wrapped = model
        teacher = teacher_for(loss, tied)
        result = train(wrapped, windows(), steps=STEPS, lr=LR, batch_size=BATCH, schedule=sched,
                       max_grad_norm=None, progress=False, rank=rank, world_size=world_size,
                       objective=Objective("kl") if teacher is not None else None, teacher=teacher)
        state = {}
        for name, p in model.named_parameters():
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            state[name] = full.detach().clone()
        if rank == 0 or mode == "ddp":
            torch.save({"params": state, "losses": result.losses, "rungs": result.rungs},
                       os.path.join(out_dir, f"{mode}-rank{rank}.pt"))
        # Neither rank tears the group down while the other may still use it: in FSDP mode rank 1, which
        # saves nothing and so reached the teardown first, aborted once in CI ("terminate called without
        # an active exception"; not reproduced in 21 runs).  Only on success: a failed rank must not
        # leave the other waiting here (mp.spawn stops it instead).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def single_process_reference(tied: bool, world_size: int = 2, loss: str = "ce") -> dict[str, torch.Tensor]:
    """What DDP computes, in one process: each rank's half-batch gradient taken separately, then averaged
    the way DDP's all-reduce does (g / world_size summed over ranks), then the same AdamW step."""
    torch.set_num_threads(1)
    model, sched = qat_model(tied)
    teacher = teacher_for(loss, tied)
    distiller = Distiller(Objective("kl"), teacher) if teacher is not None else None
    data = windows()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    for step in range(STEPS):
        total = [torch.zeros_like(p) for p in params]
        for rank in range(world_size):
            ids = data.batch(step, BATCH, rank=rank, world_size=world_size)
            if distiller is None:
                model(input_ids=ids, labels=ids).loss.backward()
            else:
                distiller.loss(model, ids).backward()
            for acc, p in zip(total, params, strict=True):
                acc.add_(p.grad / world_size)
                p.grad = None
        for acc, p in zip(total, params, strict=True):
            p.grad = acc
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}
