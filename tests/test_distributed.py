"""QAT under torch.distributed on CPU (gloo): DDP and FSDP2 with 2 processes."""

from __future__ import annotations

import socket

import pytest
import sqat_kernels as sk
import torch
import torch.multiprocessing as mp
from dist_worker import run, single_process_reference


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, tied: bool, out_dir, loss: str) -> None:
    mp.spawn(run, args=(2, _free_port(), mode, tied, str(out_dir), loss), nprocs=2, join=True)


# (tied, loss): "ce" is the model's own cross-entropy, "kl" self-distillation from a frozen float teacher
@pytest.fixture(
    scope="module",
    params=[(True, "ce"), (False, "ce"), (True, "kl"), (False, "kl")],
    ids=["tied-ce", "untied-ce", "tied-kl", "untied-kl"],
)
def ddp_run(request, tmp_path_factory):
    tied, loss = request.param
    out = tmp_path_factory.mktemp(f"ddp-{tied}-{loss}")
    _launch("ddp", tied, out, loss)
    return tied, loss, out


def test_ddp_ranks_agree_and_equal_single_process(ddp_run):
    tied, loss, out = ddp_run
    r0 = torch.load(out / "ddp-rank0.pt")
    r1 = torch.load(out / "ddp-rank1.pt")
    assert r0["rungs"][-1] == "RECIPE"
    threads = torch.get_num_threads()
    try:
        reference = single_process_reference(tied, loss=loss)
    finally:
        torch.set_num_threads(threads)
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), f"ranks differ in {name}"
        # Exact: 2-rank averaging is one addition of halves, which the reference performs identically.
        assert torch.equal(p, reference[name]), f"DDP differs from the single-process run in {name}"


def test_fsdp2_equals_ddp(ddp_run, tmp_path):
    tied, loss, out = ddp_run
    _launch("fsdp", tied, tmp_path, loss)
    fsdp = torch.load(tmp_path / "fsdp-rank0.pt")
    ddp = torch.load(out / "ddp-rank0.pt")
    for name, p in ddp["params"].items():
        assert torch.equal(fsdp["params"][name], p), f"FSDP2 differs from DDP in {name}"


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "IQ4_XS", "Q4_0", "Q8_0"])
def test_dim0_shards_never_split_a_block(qtype):
    # FSDP shards dim 0 (rows = output features); blocks run along dim 1, so each shard's fake quant is
    # the matching rows of the whole tensor's.
    torch.manual_seed(0)
    w = 0.05 * torch.randn(10, 512)
    full = sk.fake_quant(w, qtype)
    for shard in torch.chunk(w, 2, dim=0) + torch.chunk(w, 3, dim=0):
        start = int((shard.data_ptr() - w.data_ptr()) // (w.stride(0) * w.element_size()))
        assert torch.equal(sk.fake_quant(shard, qtype), full[start : start + shard.shape[0]])
