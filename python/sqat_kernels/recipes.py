"""llama-quantize's per-tensor type choice for Llama-architecture models (SmolLM, SmolLM2, Llama).

A recipe is what `llama-quantize` is asked for (an ftype such as Q4_K_M, optionally `--pure`); the GGUF
type each tensor then gets follows llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp): the
output/tied-embedding rule, the attn_v and ffn_down upgrades on `use_more_bits` layers, the GQA rules, and
the fallback to a 32-wide type (or F16) when a row length is not a multiple of the block size. QAT trains
each tensor against exactly that type, so the exported file decodes to the weights training saw.

Pure Python: importing this module does not import torch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gguf

from .formats import get_format

# llama_ftype values (llama.h), written by llama-quantize as general.file_type.
_FTYPE_VALUE: dict[str, int] = {
    "F32": int(gguf.LlamaFileType.ALL_F32),
    "F16": int(gguf.LlamaFileType.MOSTLY_F16),
    "BF16": int(gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": int(gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": int(gguf.LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": int(gguf.LlamaFileType.MOSTLY_Q4_1),
    "Q5_0": int(gguf.LlamaFileType.MOSTLY_Q5_0),
    "Q5_1": int(gguf.LlamaFileType.MOSTLY_Q5_1),
    "Q4_K_S": int(gguf.LlamaFileType.MOSTLY_Q4_K_S),
    "Q4_K_M": int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
    "Q5_K_S": int(gguf.LlamaFileType.MOSTLY_Q5_K_S),
    "Q5_K_M": int(gguf.LlamaFileType.MOSTLY_Q5_K_M),
    "Q6_K": int(gguf.LlamaFileType.MOSTLY_Q6_K),
    "IQ4_NL": int(gguf.LlamaFileType.MOSTLY_IQ4_NL),
    "IQ4_XS": int(gguf.LlamaFileType.MOSTLY_IQ4_XS),
}

# The ggml type an ftype quantizes to by default (llama_ftype_get_default_type).
_DEFAULT_TYPE: dict[str, str] = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "IQ4_NL": "IQ4_NL",
    "IQ4_XS": "IQ4_XS",
}

# Single-type names that are not llama-quantize ftypes: "Q4_K" means `llama-quantize --pure ... Q4_K_M`.
_PURE_ALIAS: dict[str, str] = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

RECIPES: tuple[str, ...] = tuple(_FTYPE_VALUE) + tuple(_PURE_ALIAS)
"""Recipe names accepted by `tensor_types` (ftypes of llama-quantize, plus the pure-only aliases)."""

# Where a row length does not fit the chosen type's block (tensor_type_fallback).
_FALLBACK: dict[str, str] = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL"}

_FLOAT_TYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class LlamaShape:
    """The hyper-parameters llama-quantize's type rules look at, for a dense Llama model.

    n_embd: hidden size; n_ff: intermediate size; n_head / n_head_kv: attention / key-value heads;
    head_dim: per-head size (n_embd // n_head unless the config says otherwise); tied_embeddings: True
    when the checkpoint has no separate lm_head (then no output.weight is written to the GGUF).
    """

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    tied_embeddings: bool
    head_dim: int | None = None

    def __post_init__(self) -> None:
        for field in ("n_layer", "n_embd", "n_head", "n_head_kv", "n_ff", "n_vocab"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"LlamaShape.{field} must be a positive int, got {value!r}")
        if self.n_head % self.n_head_kv:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_head_kv ({self.n_head_kv})")
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) is not a multiple of n_head ({self.n_head}); give head_dim"
            )

    @property
    def n_embd_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.n_embd // self.n_head

    @classmethod
    def from_hf_config(cls, config: Any) -> LlamaShape:
        """From a transformers `LlamaConfig` (or a config.json dict) of a LlamaForCausalLM."""
        get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
        arch = get("architectures") or []
        model_type = get("model_type")
        if model_type not in (None, "llama") or (arch and "LlamaForCausalLM" not in arch):
            raise ValueError(
                "only Llama-architecture models (LlamaForCausalLM) are supported, got "
                f"model_type={model_type!r}, architectures={arch!r}"
            )
        if get("num_local_experts") or get("num_experts"):
            raise ValueError("mixture-of-experts Llama variants are not supported")
        n_head = get("num_attention_heads")
        n_embd = get("hidden_size")
        head_dim = get("head_dim")
        if head_dim is not None and n_head and n_embd and head_dim * n_head == n_embd:
            head_dim = None
        return cls(
            n_layer=get("num_hidden_layers"),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=get("num_key_value_heads") or n_head,
            n_ff=get("intermediate_size"),
            n_vocab=get("vocab_size"),
            tied_embeddings=bool(get("tie_word_embeddings", False)),
            head_dim=head_dim,
        )

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """GGUF tensor name -> ne (ne0 first: input features): every tensor the converter writes.

        Listed in the converter's order for a Llama model."""
        hd = self.n_embd_head
        q_out, kv_out = self.n_head * hd, self.n_head_kv * hd
        shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (self.n_embd, self.n_vocab)}
        for i in range(self.n_layer):
            b = f"blk.{i}."
            shapes[b + "attn_norm.weight"] = (self.n_embd,)
            shapes[b + "attn_q.weight"] = (self.n_embd, q_out)
            shapes[b + "attn_k.weight"] = (self.n_embd, kv_out)
            shapes[b + "attn_v.weight"] = (self.n_embd, kv_out)
            shapes[b + "attn_output.weight"] = (q_out, self.n_embd)
            shapes[b + "ffn_norm.weight"] = (self.n_embd,)
            shapes[b + "ffn_gate.weight"] = (self.n_embd, self.n_ff)
            shapes[b + "ffn_up.weight"] = (self.n_embd, self.n_ff)
            shapes[b + "ffn_down.weight"] = (self.n_ff, self.n_embd)
        shapes["output_norm.weight"] = (self.n_embd,)
        if not self.tied_embeddings:
            shapes["output.weight"] = (self.n_embd, self.n_vocab)
        return shapes


@dataclass(frozen=True)
class TensorChoice:
    """One tensor's type under a recipe: GGUF name, ne (ne0 first), type name and the rule that chose it."""

    name: str
    ne: tuple[int, ...]
    qtype: str
    reason: str


def _canonical_type(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    try:
        return get_format(name).name
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unknown {what} {name!r}") from exc


def _resolve_recipe(recipe: str, pure: bool) -> str:
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a str, got {type(recipe).__name__}")
    key = recipe.upper()
    if key in _PURE_ALIAS:
        if not pure:
            raise ValueError(
                f"recipe {recipe!r} is a single-type recipe: pass pure=True (like llama-quantize --pure "
                f"{_PURE_ALIAS[key]}), or use {_PURE_ALIAS[key]} for llama-quantize's mixture"
            )
        return _PURE_ALIAS[key]
    if key not in _FTYPE_VALUE:
        raise ValueError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(RECIPES)}")
    return key


def file_type(recipe: str, *, pure: bool = False) -> int:
    """The llama_ftype value llama-quantize writes as general.file_type for this recipe."""
    return _FTYPE_VALUE[_resolve_recipe(recipe, pure)]


def default_type(recipe: str, *, pure: bool = False) -> str:
    """The recipe's base GGUF type (what `--pure` gives every quantizable tensor before fallbacks)."""
    return _DEFAULT_TYPE[_resolve_recipe(recipe, pure)]


def _use_more_bits(i: int, n: int) -> bool:
    # C integer division; (i - n/8) is never negative where it matters because i >= n/8 there.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _category(name: str) -> str:
    # Mirrors the order of llama.cpp's tensor_get_category: the first substring match wins.
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for key in ("attn_v.weight", "attn_k.weight", "attn_q.weight", "attn_output.weight"):
        if key in name:
            return key.split(".")[0]
    for key in ("ffn_up", "ffn_gate", "ffn_down"):
        if key in name:
            return key
    return "other"


def _visit_order(names: list[str]) -> list[str]:
    # llama.cpp's loader keeps tensors in a map ordered by (layer, name); non-block tensors count as layer -1.
    def key(name: str) -> tuple[int, bytes]:
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        return layer, name.encode()

    return sorted(names, key=key)


def _fallback(name: str, ne0: int, chosen: str) -> tuple[str, str | None]:
    block = get_format(chosen).block_size
    if ne0 % block == 0:
        return chosen, None
    if chosen in _FALLBACK:
        target = _FALLBACK[chosen]
    elif block <= 32:
        target = chosen
    else:
        raise ValueError(f"{name}: no llama-quantize fallback defined for {chosen} with ne0={ne0}")
    if ne0 % get_format(target).block_size:
        return "F16", f"ne0={ne0} not a multiple of {block} ({chosen}) nor of 32: F16"
    return target, f"ne0={ne0} not a multiple of {block}: {chosen} falls back to {target}"


def _override(name: str, ne: tuple[int, ...], qtype: str, option: str) -> TensorChoice:
    # llama.cpp returns these overrides without its fallback, so a type that does not fit fails there.
    block = get_format(qtype).block_size
    if ne[0] % block:
        raise ValueError(
            f"{option} {qtype} does not fit {name}: ne0={ne[0]} is not a multiple of {block} "
            "(llama-quantize fails on it too)"
        )
    return TensorChoice(name, ne, qtype, f"{option} (no fallback applied)")


def recipe_table(
    shape: LlamaShape,
    recipe: str,
    *,
    pure: bool = False,
    imatrix: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
) -> list[TensorChoice]:
    """Every tensor of the model with its GGUF type and the rule that chose it, in llama.cpp's visit order.

    imatrix: whether an importance matrix will be given (llama-quantize changes IQ4_XS/IQ4_NL, Q4_0 and
    Q5_0 ffn_down choices when it has one). output_tensor_type / token_embedding_type: the
    `--output-tensor-type` / `--token-embedding-type` overrides.
    """
    ftype = _resolve_recipe(recipe, pure)
    default = _DEFAULT_TYPE[ftype]
    out_override = _canonical_type(output_tensor_type, "output tensor type")
    emb_override = _canonical_type(token_embedding_type, "token embedding type")
    shapes = shape.tensor_shapes()
    names = _visit_order(list(shapes))
    tied = "output.weight" not in shapes
    n_attention_wv = sum(1 for n in names if _category(n) == "attn_v")
    n_gqa = shape.n_head // shape.n_head_kv
    is_70b = shape.n_layer == 80 and shape.n_head != shape.n_head_kv
    i_attention_wv = 0
    i_ffn_down = 0

    table: list[TensorChoice] = []
    for name in names:
        ne = shapes[name]
        cat = _category(name)
        if len(ne) < 2 or not name.endswith("weight") or "_norm.weight" in name:
            table.append(TensorChoice(name, ne, "F32", "1-D / norm: copied as F32"))
            continue
        if emb_override is not None and cat == "token_embd":
            table.append(_override(name, ne, emb_override, "--token-embedding-type"))
            continue
        if out_override is not None and cat == "output":
            table.append(_override(name, ne, out_override, "--output-tensor-type"))
            continue
        qtype, reason = default, f"{ftype} default"
        if default in _FLOAT_TYPES:
            table.append(TensorChoice(name, ne, qtype, reason))
            continue
        if pure:
            reason = "--pure"
        elif cat == "output" or (tied and cat == "token_embd"):
            what = "output" if cat == "output" else "tied token_embd"
            if out_override is not None:
                qtype, reason = out_override, f"{what}: --output-tensor-type"
            elif ne[0] % get_format(default).block_size:
                qtype, reason = "Q8_0", f"{what}: ne0 not a multiple of {default}'s block -> Q8_0"
            elif default != "Q8_0":
                qtype, reason = "Q6_K", f"{what} rule -> Q6_K"
        elif cat == "token_embd":
            reason = "untied token_embd: default"
        elif cat == "attn_v":
            if ftype in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
                qtype, reason = "Q5_K", f"attn_v with n_gqa={n_gqa} >= 4 -> Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i_attention_wv, n_attention_wv):
                qtype, reason = "Q6_K", f"attn_v use_more_bits({i_attention_wv}, {n_attention_wv}) -> Q6_K"
            elif ftype == "Q4_K_S" and i_attention_wv < 4:
                qtype, reason = "Q5_K", "attn_v of the first 4 layers -> Q5_K"
            if is_70b and qtype in ("Q3_K", "Q4_K"):
                qtype, reason = "Q5_K", "70B attn_v -> Q5_K"
            i_attention_wv += 1
        elif cat == "ffn_down":
            i, n = i_ffn_down, shape.n_layer
            if ftype == "Q4_K_M" and _use_more_bits(i, n):
                qtype, reason = "Q6_K", f"ffn_down use_more_bits({i}, {n}) -> Q6_K"
            elif i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not imatrix:
                qtype, reason = "Q5_K", f"ffn_down layer {i} < {n}/8 without imatrix -> Q5_K"
            elif ftype == "Q5_K_M" and _use_more_bits(i, n):
                qtype, reason = "Q6_K", f"ffn_down use_more_bits({i}, {n}) -> Q6_K"
            elif ftype == "Q4_K_S" and i < n // 8:
                qtype, reason = "Q5_K", f"ffn_down layer {i} < {n}/8 -> Q5_K"
            elif ftype in ("Q4_0", "Q5_0") and imatrix and i < n // 8:
                qtype = "Q4_1" if ftype == "Q4_0" else "Q5_1"
                reason = f"ffn_down layer {i} < {n}/8 with imatrix -> {qtype}"
            i_ffn_down += 1
        qtype_fb, why = _fallback(name, ne[0], qtype)
        if why is not None:
            qtype, reason = qtype_fb, f"{reason}; {why}"
        table.append(TensorChoice(name, ne, qtype, reason))
    return table


def tensor_types(
    shape: LlamaShape,
    recipe: str,
    *,
    pure: bool = False,
    imatrix: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
) -> dict[str, str]:
    """GGUF tensor name -> GGUF type name of every tensor, exactly as llama_model_quantize chooses them.

    The input to llama-quantize is taken to be an F32 GGUF (so 1-D tensors are F32). See `recipe_table`
    for the arguments and for the rule behind each choice.
    """
    table = recipe_table(
        shape,
        recipe,
        pure=pure,
        imatrix=imatrix,
        output_tensor_type=output_tensor_type,
        token_embedding_type=token_embedding_type,
    )
    return {c.name: c.qtype for c in table}


@functools.lru_cache(maxsize=8)
def _llama_name_map(n_layer: int) -> gguf.TensorNameMap:
    # Building gguf-py's map costs ~10 ms (it formats every known name for every layer): build it once.
    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)


def hf_to_gguf_name(hf_name: str, n_layer: int) -> str:
    """HF parameter name of a LlamaForCausalLM -> the GGUF tensor name convert_hf_to_gguf gives it.

    "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; "lm_head.weight" -> "output.weight".
    Raises ValueError for a name the Llama converter does not write.
    """
    mapped = _llama_name_map(n_layer).get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ValueError(f"{hf_name!r} is not a tensor of a Llama model with {n_layer} layers")
    return mapped
