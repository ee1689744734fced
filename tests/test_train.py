"""Training loop, resume, Trainer callback and `sqat train` on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sqat_kernels.cli import main as sqat_main
from sqat_kernels.nn import prepare
from sqat_kernels.schedule import BitWidthSchedule
from sqat_kernels.train import TokenWindows, train
from tiny_models import TEXT, byte_bpe_tokenizer, save_tiny_model_dir, tiny_llama


@pytest.fixture(scope="module")
def windows():
    return TokenWindows.from_texts([TEXT], byte_bpe_tokenizer(), seq_len=16)


def test_batches_are_deterministic_and_split_by_rank(windows):
    full = windows.batch(5, 4, seed=3, world_size=1)
    halves = [windows.batch(5, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat(halves), full)
    assert torch.equal(windows.batch(5, 4, seed=3), full)
    assert not torch.equal(windows.batch(5, 4, seed=4), full)
    many = torch.cat([windows.batch(s, 4) for s in range(len(windows) // 4)])
    assert len({tuple(r.tolist()) for r in many}) == len({tuple(r.tolist()) for r in windows.windows})
    with pytest.raises(ValueError, match="fill one window"):
        TokenWindows(torch.arange(5), 16)


class Interrupted(TokenWindows):
    """Token windows that raise KeyboardInterrupt when step `at` asks for its batch (a killed run)."""

    def __init__(self, base: TokenWindows, at: int):
        self.__dict__.update(base.__dict__)
        self.at = at

    def batch(self, step, *args, **kwargs):
        if step == self.at:
            raise KeyboardInterrupt
        return super().batch(step, *args, **kwargs)


def _fresh(steps):
    model = tiny_llama(vocab=300)
    sched = BitWidthSchedule(steps)
    prepare(model, "Q4_0", pure=True, schedule=sched)
    return model, sched


def test_resume_continues_exactly(windows, tmp_path):
    steps = 8
    model_a, sched_a = _fresh(steps)
    res_a = train(model_a, windows, steps=steps, schedule=sched_a, lr=1e-3, progress=False)
    assert res_a.rungs == [sched_a.rung_at(i) for i in range(steps)]

    model_b, sched_b = _fresh(steps)
    with pytest.raises(KeyboardInterrupt):
        train(
            model_b,
            Interrupted(windows, at=5),
            steps=steps,
            schedule=sched_b,
            lr=1e-3,
            progress=False,
            checkpoint_dir=tmp_path,
            checkpoint_every=3,
        )
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 3

    model_c, sched_c = _fresh(steps)  # a new process would start from scratch like this
    res_c = train(
        model_c,
        windows,
        steps=steps,
        schedule=sched_c,
        lr=1e-3,
        progress=False,
        checkpoint_dir=tmp_path,
        checkpoint_every=3,
    )
    assert res_c.losses == res_a.losses and res_c.rungs == res_a.rungs
    assert sched_c.step_count == steps
    for (name, pa), (_, pc) in zip(model_a.named_parameters(), model_c.named_parameters(), strict=True):
        assert torch.equal(pa, pc), name


def test_trainer_callback_steps_the_schedule(tmp_path, windows):
    import transformers
    from sqat_kernels.train.callback import QATScheduleCallback

    model = tiny_llama(vocab=300)
    sched = BitWidthSchedule(4)
    prepare(model, "Q8_0", schedule=sched)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            ids = windows.windows[i]
            return {"input_ids": ids, "labels": ids}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = QATScheduleCallback(sched)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=DS(), callbacks=[callback])
    trainer.train()
    assert sched.step_count == 4
    assert callback.rungs == [sched.rung_at(i) for i in range(4)]


def test_sqat_train_cli(tmp_path, capsys):
    model_dir = save_tiny_model_dir(tmp_path / "tiny")
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    out = tmp_path / "out"
    argv = [
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--recipe",
        "Q4_0",
        "--pure",
        "--steps",
        "4",
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--lr",
        "1e-3",
        "--out",
        str(out),
        "--checkpoint-every",
        "2",
    ]
    assert sqat_main(argv) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == [0, 1, 2, 3] and log["rungs"][-1] == "RECIPE"
    meta = json.loads((out / "model" / "sqat_qat.json").read_text())
    assert meta["recipe"] == "Q4_0" and meta["pure"] and meta["schedule"]["step_count"] == 4
    import transformers

    reloaded = transformers.LlamaForCausalLM.from_pretrained(out / "model")
    assert reloaded.config.num_hidden_layers == 2
    # Running again resumes from the final checkpoint and changes nothing.
    assert sqat_main(argv) == 0
    assert json.loads((out / "train_log.json").read_text()) == log
    with pytest.raises(SystemExit):
        sqat_main(
            [
                "train",
                "--model",
                str(tmp_path / "nope"),
                "--data",
                str(data),
                "--steps",
                "1",
                "--out",
                str(out),
            ]
        )


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_collect_imatrix_is_the_mean_squared_input_of_every_matmul(tied):
    from sqat_kernels.recipes import LlamaShape, tensor_types
    from sqat_kernels.train import collect_imatrix

    model = tiny_llama(hidden=64, heads=4, kv=2, ff=128, layers=2, tied=tied)
    model.train()
    batches = [torch.randint(0, model.config.vocab_size, (2, 9)) for _ in range(3)]
    inputs: dict[str, list[torch.Tensor]] = {}
    handle = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda m, a: inputs.setdefault("down", []).append(a[0].detach().reshape(-1, a[0].shape[-1]))
    )
    imatrix = collect_imatrix(model, batches, progress=False)
    handle.remove()
    assert model.training  # mode restored
    types = tensor_types(LlamaShape.from_hf_config(model.config), "Q4_K_M", imatrix=True)
    expected_names = {n for n in types if n != "token_embd.weight" and not n.endswith("norm.weight")}
    assert set(imatrix) == expected_names  # every matmul weight; no token_embd; output only when untied
    x = torch.cat(inputs["down"]).double()
    expected = (x * x).mean(dim=0).float().numpy()
    got = imatrix["blk.1.ffn_down.weight"]
    assert got.dtype == np.float32 and got.shape == (128,)
    np.testing.assert_array_equal(got, expected)
    prepare(model, "Q4_K_M", imatrix=imatrix)  # the names and shapes are what prepare accepts


def test_sqat_train_distils_from_a_teacher(tmp_path):
    model_dir = save_tiny_model_dir(tmp_path / "tiny")
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    out = tmp_path / "out"
    argv = ["train", "--model", str(model_dir), "--data", str(data), "--recipe", "Q4_0", "--pure"]
    argv += ["--steps", "4", "--seq-len", "16", "--batch", "2", "--out", str(out), "--loss", "kl"]
    argv += ["--teacher", str(model_dir), "--lr-decay", "final"]
    assert sqat_main(argv) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == [0, 1, 2, 3]
    # the student starts as the teacher: KL 0 before the first quantized rung, positive after it
    assert log["losses"][0] == pytest.approx(0.0, abs=1e-6) and log["losses"][-1] > 0
    assert json.loads((out / "model" / "sqat_qat.json").read_text())["loss"] == "kl"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--teacher", "{model}"], "--teacher needs --loss kl or mix"),
        (["--teacher", "{tmp}/nowhere", "--loss", "kl"], "not a Hugging Face model directory"),
        (["--loss", "kl", "--temperature", "0"], "temperature"),
        (["--steps", "0"], "expected an integer >= 1"),
        (["--batch", "-1"], "expected an integer >= 1"),
        (["--threads", "0"], "expected an integer >= 1"),
    ],
    ids=["teacher-with-ce", "teacher-missing", "temperature", "steps", "batch", "threads"],
)
def test_sqat_train_refuses_bad_arguments_before_writing(tmp_path, capsys, extra, message):
    model_dir = save_tiny_model_dir(tmp_path / "tiny")
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    out = tmp_path / "out"
    argv = ["train", "--model", str(model_dir), "--data", str(data), "--steps", "2", "--out", str(out)]
    argv += [e.format(model=model_dir, tmp=tmp_path) for e in extra]
    with pytest.raises(SystemExit) as exc:
        sqat_main(argv)
    assert exc.value.code != 0
    assert message in str(exc.value.code) + capsys.readouterr().err
    assert not out.exists()
