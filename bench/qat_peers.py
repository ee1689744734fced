"""The peers bench_qat_quality.py compares sqat's QAT against: torchao's int4 QAT and Intel's AutoRound.

Both run offline on CPU on a transformers LlamaForCausalLM (SmolLM2-135M-Instruct in the benchmark) and end
in something llama.cpp scores:

* **torchao QAT** (`torchao_prepare` / `torchao_convert`): every nn.Linear except the (tied) output head
  becomes torchao's `FakeQuantizedLinear` with the int4 weight-only, group-size-32, symmetric fake quantizer
  (`QATConfig(weight_config=IntxFakeQuantizeConfig(torch.int4, group_size=32, is_symmetric=True))` applied
  with `quantize_`; no activation fake quantization). Its grid is torchao's, not llama.cpp's: scale
  max|w| / 7.5 per group of 32, codes -8..7. Convert swaps the layers back to plain nn.Linear holding the
  latent float weights, so `export_gguf(model, path, "F32", ...)` then llama_model_quantize (or
  `export_gguf(model, path, recipe, ...)`, byte-identical) re-quantizes them for any recipe.
* **AutoRound** (`autoround_quantize`): SignRound tuning of each decoder block on our calibration text.
  Outputs: (a) AutoRound's own GGUF file (GGUF schemes "gguf:q4_0", "gguf:q4_k_m": the tuned scales written
  as they are; llama.cpp loads it; its Q4_0 file has llama-quantize's default, not pure, types) and/or
  (b) its fake-quantized (qdq) weights as a float Hugging Face directory with the original tensor names,
  which `export_gguf(qdq_dir, path, recipe, pure=...)` (byte-identical to F32 + llama_model_quantize)
  turns into any recipe. llama.cpp's re-quantization of the qdq weights re-derives nearly the same blocks
  AutoRound wrote (measured on SmolLM2-135M: Q4_0 99.97 %, Q5_0 99.98 %, Q4_K 99.75 %, Q6_K 98 % of blocks
  byte-identical; Q8_0 blocks differ in rounding), so (b) stands in for (a) and also serves pure Q4_0 and
  IQ4_NL, for which AutoRound has no writer (IQ4_NL: the int4 grid tuned is not IQ4_NL's).

Nothing here downloads: AutoRound gets a loaded model, its tokenizer and token tensors (never a dataset
name). Run with HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 set before transformers is imported, as the
benchmark does. AutoRound's GGUF writer (route a) imports `sentencepiece`, which auto-round does not
declare: install it for that route.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

TORCHAO_GROUP_SIZE = 32

# llama.cpp recipe -> the AutoRound scheme to tune for it.  AutoRound's GGUF writer handles gguf:q4_0 (its
# file has llama-quantize's default Q4_0 types on SmolLM2: token_embd, the tied output, at Q8_0, NOT pure)
# and gguf:q4_k_m (llama.cpp's Q4_K_M mix, 576-wide rows tuned at their Q5_0 / Q8_0 fallbacks).  IQ4_NL has
# no AutoRound scheme or writer: the int4 sym g32 scheme (Q4_0's grid family) is tuned and llama-quantize
# re-quantizes its qdq weights to IQ4_NL's non-uniform grid.
AUTOROUND_SCHEMES = {"Q4_0": "gguf:q4_0", "Q4_K_M": "gguf:q4_k_m", "IQ4_NL": "W4A16"}


# --------------------------------------------------------------------------------------------- torchao QAT


def _import_torchao():
    """torchao's QAT pieces. torchao's first import logs a warning per CUDA extension a CPU-only torch
    cannot load (noise here), so the 'torchao' logger is held at ERROR meanwhile; this quiets nothing when
    torchao was imported before (transformers may import it while loading a model)."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torchao.quantization import quantize_
        from torchao.quantization.qat import FakeQuantizedLinear, IntxFakeQuantizeConfig, QATConfig
    finally:
        log.setLevel(level)
    return quantize_, QATConfig, IntxFakeQuantizeConfig, FakeQuantizedLinear


def _linear_filter(model: nn.Module) -> Callable[[nn.Module, str], bool]:
    """quantize_ filter: nn.Linear layers other than the output head and any layer sharing the embedding."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embed_weight = None if embed is None else embed.weight

    def keep(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear) or module is head or fqn == "lm_head":
            return False
        return embed_weight is None or module.weight is not embed_weight

    return keep


def torchao_prepare(model: nn.Module, *, group_size: int = TORCHAO_GROUP_SIZE) -> nn.Module:
    """Swap (in place) every nn.Linear except lm_head / a tied head for torchao's FakeQuantizedLinear.

    Weight-only int4, symmetric, per group of `group_size` input features (torchao's `IntxFakeQuantizeConfig
    (torch.int4, group_size=group_size, is_symmetric=True)` through `QATConfig(weight_config=..., step=
    "prepare")`); activations stay float. The layers keep the original Parameter objects, so the state dict
    keys are unchanged and an optimizer may be built before or after this call. Returns `model`.
    """
    quantize_, QATConfig, IntxFakeQuantizeConfig, FakeQuantizedLinear = _import_torchao()
    if any(isinstance(m, FakeQuantizedLinear) for m in model.modules()):
        raise ValueError("model already holds torchao FakeQuantizedLinear layers (prepared twice?)")
    weight_config = IntxFakeQuantizeConfig(torch.int4, group_size=group_size, is_symmetric=True)
    quantize_(model, QATConfig(weight_config=weight_config, step="prepare"), filter_fn=_linear_filter(model))
    if not any(isinstance(m, FakeQuantizedLinear) for m in model.modules()):
        raise ValueError("torchao_prepare found no nn.Linear layer to fake-quantize")
    return model


def torchao_convert(model: nn.Module) -> nn.Module:
    """Swap (in place) torchao's FakeQuantizedLinear layers back to plain nn.Linear with the LATENT weights.

    This is `QATConfig(step="convert")` without a base PTQ config: a module swap and nothing else, so the
    weights stay float (not dequantized) for llama-quantize to quantize, and the state dict has the
    original model's keys. Returns `model`.
    """
    quantize_, QATConfig, _, FakeQuantizedLinear = _import_torchao()
    quantize_(model, QATConfig(step="convert"), filter_fn=lambda m, _fqn: isinstance(m, FakeQuantizedLinear))
    left = [name for name, m in model.named_modules() if isinstance(m, FakeQuantizedLinear)]
    if left:
        raise RuntimeError(f"torchao convert left fake-quantized layers: {left[:3]}")
    return model


# ---------------------------------------------------------------------------------------------- AutoRound


@dataclass(frozen=True)
class AutoRoundResult:
    """What one AutoRound run wrote.

    qdq_dir: Hugging Face directory (config, tokenizer, float32 safetensors with the original tensor names)
        of AutoRound's fake-quantized weights, or None. `export_gguf(qdq_dir, path, "F32")` reads it.
    gguf: AutoRound's own GGUF file, or None.
    seconds: wall time of AutoRound's construction and quantize_and_save (tuning plus writing every output).
    settings: the AutoRound arguments used (for the benchmark's JSON).
    """

    qdq_dir: Path | None
    gguf: Path | None
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


def autoround_calibration(
    texts: Sequence[str], tokenizer: Any, *, nsamples: int, seqlen: int, seed: int = 0
) -> list[torch.Tensor]:
    """`nsamples` windows of exactly `seqlen` tokens from `texts`: a list of int64 [1, seqlen] tensors.

    The texts are tokenized as sqat's training data is (TokenWindows) and the windows drawn with its seeded
    permutation; AutoRound drops samples shorter than seqlen, so every window is full length.
    """
    from sqat_kernels.train import TokenWindows

    if nsamples < 1:
        raise ValueError(f"nsamples must be positive, got {nsamples}")
    windows = TokenWindows.from_texts(texts, tokenizer, seqlen)
    picked = windows.batch(0, nsamples, seed=seed)
    return [row.unsqueeze(0).clone() for row in picked]


def autoround_quantize(
    model_dir: str | os.PathLike[str],
    texts: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    scheme: str = "gguf:q4_0",
    write_gguf: bool = False,
    qdq: bool = True,
    pure: bool = False,
    bits: int = 4,
    group_size: int = 32,
    sym: bool = True,
    iters: int = 20,
    nsamples: int = 16,
    seqlen: int = 128,
    batch_size: int = 4,
    seed: int = 0,
    enable_alg_ext: bool = False,
    quiet: bool = True,
) -> AutoRoundResult:
    """Run AutoRound (SignRound) on the Llama model in `model_dir`, calibrated on `texts`, on CPU, offline.

    Args:
        model_dir: Hugging Face directory of the float model (loaded here in float32; AutoRound edits it).
        texts: calibration text (the benchmark passes the training texts); see autoround_calibration.
        out_dir: where AutoRound writes its outputs (in sub-directories it names itself).
        scheme: what AutoRound tunes: a GGUF preset ("gguf:q4_0", "gguf:q4_k_m", ...: the format's blocks,
            grids and, for _K_M, llama.cpp's per-tensor mix) or "W4A16" (integer weights of `bits`,
            `group_size`, `sym`; the token embedding is then left in float). See AUTOROUND_SCHEMES.
        write_gguf: also write AutoRound's own GGUF file (route a; GGUF schemes only; needs sentencepiece).
        qdq: write the fake-quantized float model (route b). Both outputs come from one tuning.
        pure: quantize the token embedding with the scheme's own type in the qdq model (AutoRound RTN), for
            llama-quantize --pure; without it a GGUF scheme gives the tied embedding the output type (Q8_0 on
            SmolLM2). AutoRound's GGUF writer ignores this (it still writes Q8_0, now of a Q4_0-rounded
            embedding), so pure excludes write_gguf.
        bits, group_size, sym: the integer scheme for scheme="W4A16" (4, 32, True: Q4_0's block and grid).
        iters, nsamples, seqlen, batch_size: tuning steps per decoder block, calibration windows, tokens per
            window, windows per step. AutoRound's defaults (200, 128, 2048, 8) are far beyond a 2-core CPU;
            the cost is about linear in iters * batch_size * seqlen per block: W4A16, 4 x 128 tokens per
            step took ~0.5 s per step per block on 2 idle cores (30 blocks: iters=20 ~5 min), several
            times more when the cores are shared.
        seed: AutoRound's seed and the calibration windows' seed.
        enable_alg_ext: AutoRound's extended algorithm (recommended by it for GGUF K-quants; far costlier).
        quiet: hold AutoRound's logger at WARNING (it logs every block and tensor at INFO).

    Returns:
        AutoRoundResult with the qdq model's directory and/or AutoRound's GGUF file.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    is_gguf = scheme.lower().startswith("gguf:")
    if not qdq and not write_gguf:
        raise ValueError("nothing to write: set qdq and/or write_gguf")
    if write_gguf and not is_gguf:
        raise ValueError(f"write_gguf needs a GGUF scheme such as 'gguf:q4_0', got scheme={scheme!r}")
    if pure and write_gguf:
        raise ValueError("pure applies to the qdq model only: AutoRound's GGUF writer ignores it")
    if pure and not is_gguf:
        raise ValueError("pure needs a GGUF scheme (W4A16 leaves the embedding in float)")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = autoround_calibration(texts, tokenizer, nsamples=nsamples, seqlen=seqlen, seed=seed)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    from auto_round import AutoRound  # imported before touching its logger: the import sets the level

    kwargs: dict[str, Any] = dict(
        tokenizer=tokenizer,
        dataset=data,  # token tensors: AutoRound never looks a dataset up by name
        iters=iters,
        nsamples=nsamples,
        seqlen=seqlen,
        batch_size=min(batch_size, nsamples),
        device_map="cpu",
        seed=seed,
        enable_torch_compile=False,
    )
    if is_gguf:
        kwargs["scheme"] = scheme.upper()
        if pure:
            kwargs["layer_config"] = {"model.embed_tokens": scheme.upper()}
    else:
        kwargs.update(scheme=scheme.upper(), bits=bits, group_size=group_size, sym=sym)
    if enable_alg_ext:
        kwargs["enable_alg_ext"] = True
    formats = ",".join((["fake"] if qdq else []) + ([scheme.lower()] if write_gguf else []))
    settings = {
        k: v for k, v in kwargs.items() if k not in ("tokenizer", "dataset", "layer_config", "device_map")
    }
    settings.update(format=formats, pure=pure, calibration_tokens=nsamples * seqlen)

    ar_log = logging.getLogger("autoround")
    level = ar_log.level
    if quiet:
        ar_log.setLevel(logging.WARNING)
    try:
        started = time.perf_counter()
        compressor = AutoRound(model, **kwargs)
        _, folders = compressor.quantize_and_save(str(out_dir), format=formats)
        seconds = time.perf_counter() - started
    finally:
        ar_log.setLevel(level)

    folders = [Path(f) for f in ([folders] if isinstance(folders, (str, os.PathLike)) else folders)]
    qdq_dir = gguf = None
    for folder in folders:
        files = sorted(folder.glob("*.gguf"))
        if files:
            if len(files) != 1:
                raise RuntimeError(f"AutoRound wrote {len(files)} GGUF files in {folder}, expected one")
            gguf = files[0]
        elif (folder / "model.safetensors").is_file() or any(folder.glob("model-*.safetensors")):
            qdq_dir = folder
    if write_gguf and gguf is None:
        raise RuntimeError(f"AutoRound wrote no GGUF file (folders: {folders})")
    if qdq and qdq_dir is None:
        raise RuntimeError(f"AutoRound wrote no fake-quantized model (folders: {folders})")
    if qdq_dir is not None and "quantization_config" in (qdq_dir / "config.json").read_text():
        raise RuntimeError(f"{qdq_dir} declares a quantization_config: not a plain float model")
    return AutoRoundResult(qdq_dir=qdq_dir, gguf=gguf, seconds=seconds, settings=settings)
