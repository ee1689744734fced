"""llama-quantize's per-tensor type choice for Llama-architecture models (SmolLM, SmolLM2, Llama).

A recipe is what `llama-quantize` is asked for (an ftype such as Q4_K_M, optionally `--pure`, optionally
`--tensor-type PATTERN=TYPE` overrides); the GGUF type each tensor then gets follows llama.cpp's
`llama_tensor_get_type` (src/llama-quant.cpp): the per-tensor overrides, the output/tied-embedding rule, the
attn_v / attn_output / ffn_down upgrades (use_more_bits layers, first layers, GQA), and the fallback to a
32-wide type (or F16) when a row length is not a multiple of the block size. QAT trains each tensor against
exactly that type, so the exported file decodes to the weights training saw.

Pure Python: importing this module does not import torch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
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
    "Q2_K": int(gguf.LlamaFileType.MOSTLY_Q2_K),
    "Q2_K_S": int(gguf.LlamaFileType.MOSTLY_Q2_K_S),
    "Q3_K_S": int(gguf.LlamaFileType.MOSTLY_Q3_K_S),
    "Q3_K_M": int(gguf.LlamaFileType.MOSTLY_Q3_K_M),
    "Q3_K_L": int(gguf.LlamaFileType.MOSTLY_Q3_K_L),
    "TQ1_0": int(gguf.LlamaFileType.MOSTLY_TQ1_0),
    "TQ2_0": int(gguf.LlamaFileType.MOSTLY_TQ2_0),
    # A mixture-of-experts recipe: expert tensors (3-D) MXFP4, everything else Q8_0. On a dense Llama it
    # therefore gives all-Q8_0 (what llama_model_quantize writes); `--pure` makes it pure MXFP4.
    "MXFP4_MOE": int(gguf.LlamaFileType.MOSTLY_MXFP4_MOE),
}
# NVFP4 (llama_ftype 39) is not in this list: llama_model_quantize refuses that ftype ("invalid output file
# type"), so NVFP4 tensors come only from --tensor-type overrides.

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
    "Q2_K": "Q2_K",
    "Q2_K_S": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "TQ1_0": "TQ1_0",
    "TQ2_0": "TQ2_0",
    "MXFP4_MOE": "MXFP4",
}

# Single-type names that are not llama-quantize ftypes: "Q4_K" means `llama-quantize --pure ... Q4_K_M`.
_PURE_ALIAS: dict[str, str] = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M", "MXFP4": "MXFP4_MOE"}

RECIPES: tuple[str, ...] = tuple(_FTYPE_VALUE) + tuple(_PURE_ALIAS)
"""Recipe names accepted by `tensor_types` (ftypes of llama-quantize, plus the pure-only aliases)."""

# Where a row length does not fit the chosen type's block (tensor_type_fallback).
_FALLBACK: dict[str, str] = {
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
    "IQ4_XS": "IQ4_NL",
    "Q2_K": "Q4_0",
    "Q3_K": "Q4_0",
    "TQ1_0": "Q4_0",
    "TQ2_0": "Q4_0",
}

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
    """One tensor's type under a recipe: GGUF name, ne (ne0 first), type name and the rule that chose it.

    needs_imatrix: llama_model_quantize refuses to write this tensor without importance weights for it
    (Q2_K tensors of a Q2_K_S file, other than token_embd / output).
    """

    name: str
    ne: tuple[int, ...]
    qtype: str
    reason: str
    needs_imatrix: bool = False


TensorTypeOverrides = Mapping[str, str] | Iterable[tuple[str, str]]
"""`--tensor-type` overrides: (regex pattern, GGUF type) pairs in priority order, or a dict in that order."""

# ECMAScript (std::regex, what llama.cpp compiles) and Python's `re` agree on literals, classes, escapes
# such as \d \w \s \b, anchors, alternation, groups, lookahead and quantifiers; these are Python-only (or
# mean something else there), so a pattern using them could select other tensors than llama.cpp does.
_PY_ONLY_ESCAPES = frozenset("AZ")
_ECMA_GROUPS = (":", "=", "!")


def _check_pattern(pattern: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"--tensor-type pattern must be a non-empty str, got {pattern!r}")
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            if pattern[i + 1] in _PY_ONLY_ESCAPES:
                raise ValueError(
                    f"--tensor-type pattern {pattern!r}: \\{pattern[i + 1]} is not ECMAScript regex"
                )
            i += 2
            continue
        if pattern.startswith("(?", i) and pattern[i + 2 : i + 3] not in _ECMA_GROUPS:
            raise ValueError(
                f"--tensor-type pattern {pattern!r}: {pattern[i : i + 4]!r}... is Python-only regex syntax "
                "(llama.cpp uses ECMAScript: only (?:, (?= and (?! groups)"
            )
        i += 1
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--tensor-type pattern {pattern!r} is not a valid regex: {exc}") from exc


def normalize_overrides(overrides: TensorTypeOverrides | None) -> tuple[tuple[str, str], ...]:
    """The overrides as a tuple of (pattern, canonical GGUF type name), order kept; checked.

    Patterns are taken as given (llama_model_quantize_params.tt_overrides does not change them; the
    llama-quantize *tool* lowercases them first, as `sqat --tensor-type` does). Types: any type sqat
    supports (sk.SUPPORTED_TYPES), case-insensitive.
    """
    if overrides is None:
        return ()
    items = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides)
    out = []
    for item in items:
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"a --tensor-type override is a (pattern, type) pair, got {item!r}")
        pattern, qtype = item
        _check_pattern(pattern)
        out.append((pattern, _canonical_type(qtype, f"--tensor-type type (for pattern {pattern!r})")))
    return tuple(out)


def parse_tensor_type(text: str) -> tuple[str, str]:
    """'PATTERN=TYPE' as llama-quantize's --tensor-type reads it: split at the first '=', the pattern
    lowercased, the type case-insensitive. Returns (pattern, canonical type)."""
    pattern, sep, qtype = text.partition("=")
    if not sep or not pattern or not qtype:
        raise ValueError(f"expected PATTERN=TYPE (e.g. 'attn_v=Q8_0'), got {text!r}")
    return normalize_overrides([(pattern.lower(), qtype)])[0]


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
        # tensor_type_fallback has no entry for it (NVFP4, 64-wide, through --tensor-type): llama.cpp throws.
        raise ValueError(
            f"{chosen} does not fit {name}: ne0={ne0} is not a multiple of {block} and llama-quantize "
            "defines no fallback for it (llama-quantize fails on it too)"
        )
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


class _Counters:
    """llama.cpp's i_attention_wv / i_ffn_down counters.

    They advance only when the mixture rules run for a tensor (not for a --pure or --tensor-type one), so an
    override on one layer shifts the layer index that the later layers' rules see."""

    def __init__(self) -> None:
        self.attn_v = 0
        self.ffn_down = 0


def _mixture_type(
    ftype: str,
    cat: str,
    qtype: str,
    ne0: int,
    shape: LlamaShape,
    *,
    tied: bool,
    imatrix: bool,
    out_override: str | None,
    n_attention_wv: int,
    counters: _Counters,
) -> tuple[str, str]:
    """(type, reason) llama_tensor_get_type_impl gives a quantizable tensor of a dense Llama, before the
    row-length fallback. qtype: the recipe's main type."""
    default = qtype
    reason = f"{ftype} default"
    n_gqa = shape.n_head // shape.n_head_kv
    is_70b = shape.n_layer == 80 and shape.n_head != shape.n_head_kv
    if cat == "output" or (tied and cat == "token_embd"):
        what = "output" if cat == "output" else "tied token_embd"
        if out_override is not None:
            return out_override, f"{what}: --output-tensor-type"
        if ftype == "MXFP4_MOE":
            return "Q8_0", f"{what}: MXFP4_MOE -> Q8_0"
        if ne0 % get_format(default).block_size:
            return "Q8_0", f"{what}: ne0 not a multiple of {default}'s block -> Q8_0"
        if default != "Q8_0":
            return "Q6_K", f"{what} rule -> Q6_K"
        return qtype, reason
    if ftype == "MXFP4_MOE":
        # Only 3-D (expert) tensors get MXFP4; a dense model has none.
        return "Q8_0", "MXFP4_MOE: not an expert tensor -> Q8_0"
    if cat == "token_embd":
        if ftype in ("TQ1_0", "TQ2_0"):
            return "Q4_K", f"untied token_embd under {ftype} -> Q4_K"
        return qtype, "untied token_embd: default"
    if cat == "attn_v":
        i = counters.attn_v
        counters.attn_v += 1
        if ftype == "Q2_K":
            qtype = "Q4_K" if n_gqa >= 4 else "Q3_K"
            reason = f"attn_v under Q2_K with n_gqa={n_gqa} -> {qtype}"
        elif ftype == "Q2_K_S" and n_gqa >= 4:
            qtype, reason = "Q4_K", f"attn_v with n_gqa={n_gqa} >= 4 -> Q4_K"
        elif ftype == "Q3_K_M":
            qtype = "Q5_K" if i < 2 else "Q4_K"
            reason = f"attn_v #{i} under Q3_K_M -> {qtype}"
        elif ftype == "Q3_K_L":
            qtype, reason = "Q5_K", "attn_v under Q3_K_L -> Q5_K"
        elif ftype in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
            qtype, reason = "Q5_K", f"attn_v with n_gqa={n_gqa} >= 4 -> Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n_attention_wv):
            qtype, reason = "Q6_K", f"attn_v use_more_bits({i}, {n_attention_wv}) -> Q6_K"
        elif ftype == "Q4_K_S" and i < 4:
            qtype, reason = "Q5_K", "attn_v of the first 4 layers -> Q5_K"
        if is_70b and qtype in ("Q3_K", "Q4_K"):
            qtype, reason = "Q5_K", "70B attn_v -> Q5_K"
        return qtype, reason
    if cat == "ffn_down":
        i, n = counters.ffn_down, shape.n_layer
        counters.ffn_down += 1
        if ftype == "Q2_K":
            return "Q3_K", "ffn_down under Q2_K -> Q3_K"
        if ftype == "Q2_K_S":
            if i < n // 8:
                return "Q4_K", f"ffn_down layer {i} < {n}/8 -> Q4_K"
            return qtype, reason
        if ftype == "Q3_K_M":
            # llama.cpp keeps Q3_K only on Falcon's non-use_more_bits layers; a Llama gets Q4_K there.
            if i < n // 16:
                return "Q5_K", f"ffn_down layer {i} < {n}/16 -> Q5_K"
            return "Q4_K", "ffn_down under Q3_K_M -> Q4_K"
        if ftype == "Q3_K_L":
            return "Q5_K", "ffn_down under Q3_K_L -> Q5_K"
        if ftype == "Q4_K_M":
            if _use_more_bits(i, n):
                return "Q6_K", f"ffn_down use_more_bits({i}, {n}) -> Q6_K"
            return qtype, reason
        if i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not imatrix:
            return "Q5_K", f"ffn_down layer {i} < {n}/8 without imatrix -> Q5_K"
        if ftype == "Q5_K_M" and _use_more_bits(i, n):
            return "Q6_K", f"ffn_down use_more_bits({i}, {n}) -> Q6_K"
        if ftype == "Q4_K_S" and i < n // 8:
            return "Q5_K", f"ffn_down layer {i} < {n}/8 -> Q5_K"
        if ftype in ("Q4_0", "Q5_0") and imatrix and i < n // 8:
            qtype = "Q4_1" if ftype == "Q4_0" else "Q5_1"
            return qtype, f"ffn_down layer {i} < {n}/8 with imatrix -> {qtype}"
        return qtype, reason
    if cat == "attn_output":
        upgrade = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ftype)
        if upgrade is not None:
            return upgrade, f"attn_output under {ftype} -> {upgrade}"
    return qtype, reason


def recipe_table(
    shape: LlamaShape,
    recipe: str,
    *,
    pure: bool = False,
    imatrix: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    tensor_type_overrides: TensorTypeOverrides | None = None,
) -> list[TensorChoice]:
    """Every tensor of the model with its GGUF type and the rule that chose it, in llama.cpp's visit order.

    imatrix: whether an importance matrix will be given (llama-quantize changes IQ4_XS/IQ4_NL, Q4_0 and
    Q5_0 ffn_down choices when it has one, and refuses Q2_K_S without one). output_tensor_type /
    token_embedding_type: the `--output-tensor-type` / `--token-embedding-type` overrides; they win over
    everything else and get no fallback. tensor_type_overrides: `--tensor-type PATTERN=TYPE` pairs; the
    first pattern `re.search`-ing a tensor name gives its type instead of the mixture (also under `pure`),
    the fallback still applies; ignored under the float recipes (F32/F16/BF16), as in llama.cpp.

    Raises ValueError for an unknown recipe or type, a type whose block does not fit the row and has no
    fallback (llama-quantize fails on it too), and for a table that needs an imatrix when imatrix=False.
    """
    ftype = _resolve_recipe(recipe, pure)
    default = _DEFAULT_TYPE[ftype]
    out_override = _canonical_type(output_tensor_type, "output tensor type")
    emb_override = _canonical_type(token_embedding_type, "token embedding type")
    patterns = [(re.compile(p), p, t) for p, t in normalize_overrides(tensor_type_overrides)]
    shapes = shape.tensor_shapes()
    names = _visit_order(list(shapes))
    tied = "output.weight" not in shapes
    n_attention_wv = sum(1 for n in names if _category(n) == "attn_v")
    counters = _Counters()

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
        if default in _FLOAT_TYPES:
            # llama.cpp consults --tensor-type only when the recipe's main type is a quantized one.
            table.append(TensorChoice(name, ne, default, f"{ftype} default"))
            continue
        manual = next(((p, t) for rx, p, t in patterns if rx.search(name)), None)
        if manual is not None:
            qtype, reason = manual[1], f"--tensor-type {manual[0]}={manual[1]}"
        elif pure:
            qtype, reason = default, "--pure"
        else:
            qtype, reason = _mixture_type(
                ftype,
                cat,
                default,
                ne[0],
                shape,
                tied=tied,
                imatrix=imatrix,
                out_override=out_override,
                n_attention_wv=n_attention_wv,
                counters=counters,
            )
        qtype_fb, why = _fallback(name, ne[0], qtype)
        if why is not None:
            qtype, reason = qtype_fb, f"{reason}; {why}"
        # tensor_requires_imatrix: by name, on the final type.
        needs = ftype == "Q2_K_S" and qtype == "Q2_K" and cat not in ("token_embd", "output")
        table.append(TensorChoice(name, ne, qtype, reason, needs))
    needing = [c.name for c in table if c.needs_imatrix]
    if needing and not imatrix:
        raise ValueError(
            f"recipe {ftype} needs an importance matrix: its Q2_K tensors ({needing[0]} and "
            f"{len(needing) - 1} more) are refused without one by llama-quantize; pass an imatrix"
        )
    return table


def tensor_types(
    shape: LlamaShape,
    recipe: str,
    *,
    pure: bool = False,
    imatrix: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    tensor_type_overrides: TensorTypeOverrides | None = None,
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
        tensor_type_overrides=tensor_type_overrides,
    )
    return {c.name: c.qtype for c in table}


def check_imatrix_coverage(table: list[TensorChoice], imatrix: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first tensor that needs importance weights (TensorChoice.needs_imatrix)
    but has no entry in `imatrix`: llama_model_quantize stops on such a tensor ("missing importance matrix
    ... in a very low-bit quantization")."""
    missing = [c.name for c in table if c.needs_imatrix and c.name not in imatrix]
    if missing:
        raise ValueError(
            f"{missing[0]} is Q2_K in a Q2_K_S file and needs importance weights, but the imatrix has no "
            f"entry for it ({len(missing)} such tensors)"
        )


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
