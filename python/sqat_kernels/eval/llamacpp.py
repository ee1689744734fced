"""Perplexity and KL divergence of GGUF files, computed by llama.cpp itself (llama-cpp-python).

The scoring follows llama.cpp's `llama-perplexity`: the token stream is cut into chunks of `n_ctx`
tokens, the first token of a chunk is replaced by BOS when the model adds one, and only the second half
of each chunk is scored, so every scored token has at least n_ctx/2 tokens of context. All files are
scored on the same tokens; the KL divergence is KL(reference || model) per scored token, averaged.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class GGUFScore:
    """What llama.cpp measured for one GGUF file on the scored tokens.

    perplexity: exp(mean negative log-likelihood); mean_kl: mean KL(reference || this) in nats (0 for the
    reference itself); top1_agreement: fraction of scored positions whose most likely token equals the
    reference's; n_scored: number of scored tokens; size_bytes: file size; chunk_nll, chunk_kl: the summed
    negative log-likelihood and KL of each chunk's scored tokens (for intervals over chunks).
    """

    name: str
    path: str
    perplexity: float
    mean_kl: float
    top1_agreement: float
    n_scored: int
    size_bytes: int
    chunk_nll: tuple[float, ...] = ()
    chunk_kl: tuple[float, ...] = ()

    def to_json(self) -> dict:
        data = asdict(self)
        data["chunk_nll"], data["chunk_kl"] = list(self.chunk_nll), list(self.chunk_kl)
        return data


def _load(path: str | os.PathLike[str], n_ctx: int, threads: int | None):
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
        raise ImportError(
            "evaluating GGUF files needs llama-cpp-python: pip install 'sqat-kernels[demo]'"
        ) from exc
    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        logits_all=True,
        n_threads=threads or os.cpu_count() or 1,
        n_threads_batch=threads or os.cpu_count() or 1,
        verbose=False,
    )


def tokenize_with_gguf(path: str | os.PathLike[str], text: str) -> list[int]:
    """Token ids of `text` by the GGUF file's own (llama.cpp) tokenizer, without BOS."""
    llm = _load(path, 64, 1)
    try:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    finally:
        llm.close()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def score_ggufs(
    models: Mapping[str, str | os.PathLike[str]],
    tokens: Sequence[int],
    *,
    reference: str,
    n_ctx: int = 512,
    max_chunks: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    on_result: Callable[[GGUFScore], None] | None = None,
) -> dict[str, GGUFScore]:
    """Score every GGUF file in `models` (name -> path) on the same chunks of `tokens`.

    tokens: token ids (int) of the evaluation text, as the models' tokenizer gives them (no BOS).
    reference: the name in `models` whose distributions the KL divergence is taken against; it is scored
    first and its log-probabilities of the scored positions are kept in a temporary file
    (n_scored x n_vocab float32), so the models are loaded one at a time.
    n_ctx: chunk length (>= 8, even); max_chunks: use at most this many chunks, spread evenly over the
    text (default: every full chunk).

    Returns name -> GGUFScore, in the order of `models`.
    """
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models {list(models)}")
    if n_ctx < 8 or n_ctx % 2:
        raise ValueError(f"n_ctx must be an even number >= 8, got {n_ctx}")
    available = len(tokens) // n_ctx
    if available < 1:
        raise ValueError(f"{len(tokens)} evaluation tokens do not fill one chunk of {n_ctx}")
    if max_chunks is not None and max_chunks < 1:
        raise ValueError(f"max_chunks must be positive, got {max_chunks}")
    n_chunks = available if max_chunks is None else min(available, max_chunks)
    picked = np.unique(np.linspace(0, available - 1, n_chunks).round().astype(np.int64))
    for name, path in models.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"GGUF file of {name!r} not found: {path}")
    first = n_ctx // 2
    per_chunk = n_ctx - 1 - first
    stream = np.asarray(tokens[: available * n_ctx], dtype=np.int64).reshape(available, n_ctx)[picked]
    order = [reference] + [n for n in models if n != reference]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order) * n_chunks, desc="llama.cpp eval", unit="chunk")
    results: dict[str, GGUFScore] = {}
    with tempfile.TemporaryDirectory(prefix="sqat-eval-") as tmp:
        ref_logp: np.ndarray | None = None
        ref_top: np.ndarray | None = None
        for name in order:
            llm = _load(models[name], n_ctx, threads)
            try:
                bos = llm.token_bos() if llm.tokenize(b"", add_bos=True, special=False) else None
                n_vocab = llm.n_vocab()
                if ref_logp is None:
                    ref_logp = np.lib.format.open_memmap(
                        Path(tmp) / "reference.npy",
                        mode="w+",
                        dtype=np.float32,
                        shape=(n_chunks * per_chunk, n_vocab),
                    )
                    ref_top = np.empty(n_chunks * per_chunk, dtype=np.int64)
                elif ref_logp.shape[1] != n_vocab:
                    raise ValueError(f"{name} has {n_vocab} tokens, the reference {ref_logp.shape[1]}")
                chunk_nll: list[float] = []
                chunk_kl: list[float] = []
                agree = 0
                for c in range(n_chunks):
                    chunk = stream[c].copy()
                    if bos is not None:
                        chunk[0] = bos
                    llm.reset()
                    llm.eval(chunk.tolist())
                    logp = _log_softmax(llm.scores[first : n_ctx - 1])
                    targets = chunk[first + 1 :]
                    chunk_nll.append(-float(logp[np.arange(per_chunk), targets].sum()))
                    rows = slice(c * per_chunk, (c + 1) * per_chunk)
                    top = logp.argmax(axis=1)
                    if name == reference:
                        ref_logp[rows] = logp
                        ref_top[rows] = top
                    else:
                        # both sides at the stored (float32) precision: a file identical to the
                        # reference then scores exactly 0
                        p_ref = ref_logp[rows].astype(np.float64)
                        p_model = logp.astype(np.float32).astype(np.float64)
                        chunk_kl.append(float((np.exp(p_ref) * (p_ref - p_model)).sum()))
                    agree += int((top == ref_top[rows]).sum())
                    if bar is not None:
                        bar.update(1)
            finally:
                llm.close()
            n_scored = n_chunks * per_chunk
            score = GGUFScore(
                name=name,
                path=str(models[name]),
                perplexity=math.exp(sum(chunk_nll) / n_scored),
                mean_kl=sum(chunk_kl) / n_scored,
                top1_agreement=agree / n_scored,
                n_scored=n_scored,
                size_bytes=Path(models[name]).stat().st_size,
                chunk_nll=tuple(chunk_nll),
                chunk_kl=tuple(chunk_kl) if name != reference else (0.0,) * n_chunks,
            )
            results[name] = score
            if on_result is not None:
                on_result(score)
        del ref_logp
    if bar is not None:
        bar.close()
    return {name: results[name] for name in models}
