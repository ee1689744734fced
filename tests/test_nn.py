"""QATLinear / QATEmbedding, prepare and convert on tiny random Llama models."""

from __future__ import annotations

import numpy as np
import pytest
import sqat_kernels as sk
import torch
import torch.nn.functional as F
from sqat_kernels import recipes
from sqat_kernels.nn import QATConfig, QATEmbedding, QATLinear, convert, prepare, qat_modules
from sqat_kernels.schedule import BitWidthSchedule
from tiny_models import tiny_llama as random_tiny_llama
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


def tiny_llama(vocab=96, **kw):
    return random_tiny_llama(vocab=vocab, **kw)


class CountFakeQuant(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.sqat.fake_quant.default:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q5_1", "IQ4_NL", "Q4_K", "Q6_K", "IQ4_XS", "F16", "BF16"])
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
def test_linear_forward_and_identity_ste(qtype, with_imatrix):
    torch.manual_seed(1)
    linear = nn.Linear(256, 24, bias=True)
    imatrix = torch.rand(256) + 0.1 if with_imatrix else None
    qat = QATLinear.from_linear(linear, QATConfig(qtype, imatrix))
    assert qat.weight is linear.weight and qat.bias is linear.bias
    x = torch.randn(3, 5, 256, requires_grad=True)
    y = qat(x)
    w_fq = sk.fake_quant(linear.weight.detach(), qtype, imatrix)
    w = linear.weight.detach()
    assert torch.equal(w_fq, sk.dequantize(sk.quantize(w, qtype, imatrix), qtype, (24, 256)))
    ref_x = x.detach().clone().requires_grad_(True)
    w_ref = w_fq.clone().requires_grad_(True)
    y_ref = F.linear(ref_x, w_ref, linear.bias.detach())
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(linear.weight.grad, w_ref.grad)  # identity STE: dL/dw = dL/dw_fq
    assert torch.equal(x.grad, ref_x.grad)


def test_clipped_ste_matches_the_op():
    torch.manual_seed(2)
    linear = nn.Linear(64, 8, bias=False)
    with torch.no_grad():
        linear.weight[0, :32] = torch.linspace(-1, 1, 32)
    qat = QATLinear.from_linear(linear, QATConfig("Q4_0", ste="clipped"))
    x = torch.randn(4, 64)
    g = torch.randn(4, 8)
    qat(x).backward(g)
    grad_fq = g.t() @ x
    expected = torch.ops.sqat.clipped_grad(linear.weight.detach(), grad_fq, "Q4_0", None)
    assert torch.equal(linear.weight.grad, expected)


def test_from_linear_keeps_device_dtype_requires_grad_and_meta():
    lin = nn.Linear(64, 16, bias=False, dtype=torch.bfloat16)
    lin.weight.requires_grad_(False)
    qat = QATLinear.from_linear(lin, QATConfig("Q8_0"))
    assert qat.weight.dtype == torch.bfloat16 and not qat.weight.requires_grad
    y = qat(torch.randn(2, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    plain = qat.to_linear()
    assert (
        type(plain) is nn.Linear and plain.weight.dtype == torch.bfloat16 and not plain.weight.requires_grad
    )
    expected = sk.fake_quant(lin.weight, "Q8_0").to(torch.bfloat16)
    assert torch.equal(plain.weight, expected)
    with torch.device("meta"):
        meta_lin = nn.Linear(256, 32)
        meta_emb = nn.Embedding(10, 256)
    mq = QATLinear.from_linear(meta_lin, QATConfig("Q4_K"))
    me = QATEmbedding.from_embedding(meta_emb, QATConfig("Q6_K"))
    assert mq(torch.empty(3, 256, device="meta")).shape == (3, 32)
    assert me(torch.zeros(2, 5, dtype=torch.long, device="meta")).shape == (2, 5, 256)
    assert mq.weight.is_meta and me.weight.is_meta


def test_direct_construction_and_errors():
    q = QATLinear(64, 8, config=QATConfig("Q4_0"))
    assert q.active_qtype == "Q4_0"
    with pytest.raises(TypeError, match="config"):
        QATLinear(64, 8)
    with pytest.raises(ValueError, match="32-blocks"):
        QATLinear.from_linear(nn.Linear(48, 8), QATConfig("Q8_0"))
    with pytest.raises(ValueError, match="imatrix has 10"):
        QATLinear.from_linear(nn.Linear(64, 8), QATConfig("Q8_0", torch.ones(10)))
    with pytest.raises(ValueError, match="ste"):
        QATConfig("Q8_0", ste="soft")
    with pytest.raises(ValueError, match="non-finite"):
        QATConfig("Q8_0", torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="Q3_Z"):
        QATConfig("Q3_Z")
    with pytest.raises(TypeError, match="nn.Linear"):
        QATLinear.from_linear(nn.Embedding(3, 64), QATConfig("Q8_0"))


def _gguf_names(model):
    n_layer = model.config.num_hidden_layers
    return {name: recipes.hf_to_gguf_name(f"{name}.weight", n_layer) for name, _ in qat_modules(model)}


@pytest.mark.parametrize(
    "kw, recipe, pure",
    [
        (dict(hidden=576, heads=9, kv=3, ff=512, tied=True), "Q4_K_M", False),
        (dict(hidden=576, heads=9, kv=3, ff=512, tied=False), "IQ4_XS", False),
        (dict(hidden=256, heads=4, kv=1, ff=256, tied=False, layers=8), "Q5_K_M", False),
        (dict(hidden=256, heads=4, kv=4, ff=512, tied=True), "Q4_0", True),
        (dict(hidden=48, heads=4, kv=2, ff=96, tied=True), "Q4_K_M", False),  # rows of 48: F16 fallback
    ],
    ids=["h576-tied-Q4_K_M", "h576-untied-IQ4_XS", "h256-L8-Q5_K_M", "h256-pure-Q4_0", "h48-F16-fallback"],
)
def test_prepare_assigns_the_recipe_types(kw, recipe, pure):
    model = tiny_llama(**kw)
    tied = model.config.tie_word_embeddings
    prepare(model, recipe, pure=pure)
    types = recipes.tensor_types(recipes.LlamaShape.from_hf_config(model.config), recipe, pure=pure)
    names = _gguf_names(model)
    for name, module in qat_modules(model):
        gguf_name = names[name] if not (tied and name == "lm_head") else "token_embd.weight"
        assert module.config.qtype == types[gguf_name], name
        assert module.active_qtype == types[gguf_name]
    assert isinstance(model.model.embed_tokens, QATEmbedding) and isinstance(model.lm_head, QATLinear)
    ids = torch.randint(0, 96, (2, 12))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_tied_embedding_is_fake_quantized_once_and_grads_are_ste(tied):
    model = tiny_llama(hidden=256, heads=4, kv=2, ff=256, tied=tied)
    reference = tiny_llama(hidden=256, heads=4, kv=2, ff=256, tied=tied)
    prepare(model, "Q4_K_M")
    n_modules = len(list(qat_modules(model)))
    ids = torch.randint(0, 96, (2, 10))
    with CountFakeQuant() as counter:
        loss = model(input_ids=ids, labels=ids).loss
    assert counter.calls == n_modules - (1 if tied else 0)
    loss.backward()
    # The same model with the fake-quantized weights as plain parameters gives the same loss and, with the
    # identity STE, the same gradients (the tied parameter gathers both uses).
    with torch.no_grad():
        for name, module in qat_modules(model):
            reference.get_submodule(name).weight.copy_(module.fake_weight())
    assert (reference.lm_head.weight is reference.model.embed_tokens.weight) == tied
    ref_loss = reference(input_ids=ids, labels=ids).loss
    ref_loss.backward()
    assert torch.equal(loss, ref_loss)
    for name, module in qat_modules(model):
        assert torch.equal(module.weight.grad, reference.get_submodule(name).weight.grad), name


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_training_forward_fake_quantizes_every_weight_before_the_first_matmul(tied):
    model = tiny_llama(hidden=256, heads=4, kv=2, ff=256, tied=tied)
    prepare(model, "Q4_K_M")
    n_fq = len(list(qat_modules(model))) - (1 if tied else 0)
    ids = torch.randint(0, 96, (2, 10))
    with RecordOps() as rec:
        model(input_ids=ids, labels=ids).loss.backward()
    first_matmul = min(i for i, op in enumerate(rec.ops) if op in ("mm", "addmm", "bmm", "linear"))
    assert rec.ops[:first_matmul].count("fake_quant") == n_fq
    assert rec.ops.count("fake_quant") == n_fq
    assert all(m._prefetched is None for _, m in qat_modules(model))  # each used once, none kept
    with torch.no_grad(), RecordOps() as rec:  # inference: one at a time, nothing held ahead
        model(input_ids=ids)
    first_matmul = min(i for i, op in enumerate(rec.ops) if op in ("mm", "addmm", "bmm", "linear"))
    assert rec.ops[:first_matmul].count("fake_quant") < n_fq
    convert(model)
    assert not model._forward_pre_hooks


def test_gradient_accumulation_with_tied_embeddings():
    model = tiny_llama(hidden=256, heads=4, kv=2, ff=256, tied=True)
    prepare(model, "Q8_0")
    ids = torch.randint(0, 96, (2, 10))
    for _ in range(2):  # two forwards/backwards without an optimiser step in between
        model(input_ids=ids, labels=ids).loss.backward()
    assert torch.isfinite(model.lm_head.weight.grad).all()


def test_schedule_drives_every_module_and_convert_is_exact():
    model = tiny_llama(hidden=256, heads=4, kv=2, ff=256, tied=True, layers=3)
    sched = BitWidthSchedule(10)
    prepare(model, "Q4_K_M", schedule=sched)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 96, (2, 8))
    seen = []
    for _ in range(10):
        rungs = {m.active_qtype for _, m in qat_modules(model)}
        seen.append(sched.current_rung)
        if sched.current_rung in ("F32", "F16", "Q8_0"):
            assert rungs == {sched.current_rung}
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    assert seen == ["F32"] * 3 + ["F16"] * 2 + ["Q8_0"] * 2 + ["RECIPE"] * 3
    final = {m.active_qtype for _, m in qat_modules(model)}
    assert final == {m.config.qtype for _, m in qat_modules(model)}
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    fq = {name: m.fake_weight().detach().clone() for name, m in qat_modules(model)}
    convert(model)
    assert not list(qat_modules(model))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for name, w in fq.items():
        assert torch.equal(model.get_submodule(name).weight, w), name
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, logits)


def test_f16_and_disabled():
    lin = nn.Linear(64, 4, bias=False)
    with torch.no_grad():
        lin.weight.mul_(1 + 1e-4)  # values off the fp16 grid
    qat = QATLinear.from_linear(lin, QATConfig("Q4_0"))
    qat.set_rung("F16")
    assert qat.active_qtype == "F16"
    assert torch.equal(qat.fake_weight(), lin.weight.detach().half().float())
    off = QATLinear.from_linear(nn.Linear(64, 4), QATConfig("Q4_0", enabled=False))
    off.set_rung("RECIPE")
    assert off.active_qtype == "F32" and off.fake_weight() is off.weight


def test_prepare_errors():
    model = tiny_llama()
    with pytest.raises(ValueError, match="valid recipes"):
        prepare(model, "Q2_Q")
    prepare(model, "Q8_0")
    with pytest.raises(ValueError, match="already"):
        prepare(model, "Q8_0")
    with pytest.raises(ValueError, match="does not have"):
        prepare(tiny_llama(), "Q8_0", imatrix={"blk.99.attn_q.weight": np.ones(64, np.float32)})
    with pytest.raises(ValueError, match="config"):
        prepare(nn.Sequential(nn.Linear(64, 64)), "Q8_0")


def test_prepare_with_imatrix_uses_it():
    model = tiny_llama(hidden=256, heads=4, kv=2, ff=256, tied=False)
    rng = np.random.default_rng(0)
    im = {"blk.0.attn_q.weight": rng.random(256).astype(np.float32) + 0.1}
    prepare(model, "Q4_K_M", imatrix=im)
    q = model.model.layers[0].self_attn.q_proj
    assert torch.equal(q.imatrix, torch.from_numpy(im["blk.0.attn_q.weight"]))
    w = q.weight.detach()
    assert torch.equal(
        q.fake_weight(), sk.fake_quant(w, q.config.qtype, torch.from_numpy(im["blk.0.attn_q.weight"]))
    )
    assert model.model.layers[0].self_attn.k_proj.imatrix is None


def test_compile_fullgraph_forward_backward():
    lin = nn.Linear(64, 16)
    qat = QATLinear.from_linear(lin, QATConfig("Q4_0"))
    x = torch.randn(4, 64)
    g = torch.randn(4, 16)
    compiled = torch.compile(qat, fullgraph=True)
    y = compiled(x)
    y.backward(g)
    g_compiled = lin.weight.grad.clone()
    lin.weight.grad = None
    eager = qat(x)
    eager.backward(g)
    assert torch.equal(y, eager) and torch.equal(g_compiled, lin.weight.grad)


def _saved_bytes(module, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum().backward()
    return total


@pytest.mark.parametrize("ste", ["identity", "clipped"])
def test_saves_no_more_than_nn_linear(ste):
    torch.manual_seed(0)
    lin = nn.Linear(256, 128, bias=False)
    x = torch.randn(8, 256, requires_grad=True)
    plain = _saved_bytes(lin, x)
    qat = _saved_bytes(QATLinear.from_linear(lin, QATConfig("Q4_K", ste=ste)), x)
    # nn.Linear saves the input and the weight; QATLinear the input and the fake-quantized weight, plus
    # (clipped STE only) the latent weight, from which the mask is recomputed in backward.
    extra = 0 if ste == "identity" else lin.weight.numel() * 4
    assert qat == plain + extra
