"""Text files -> fixed-length token windows -> deterministic batches (rank-aware, resumable by step)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch


def text_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand files and directories (their *.txt files, sorted) into a list of files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.txt"))
            if not found:
                raise ValueError(f"{p} holds no *.txt files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"training data {p} does not exist")
    return files


class TokenWindows:
    """A token stream cut into non-overlapping windows of `seq_len` tokens.

    tokens: int64 [n_tokens]; the stream is the files' texts tokenized one after another (each with the
    tokenizer's BOS when it adds one). Batches are drawn by step number, so a resumed run sees exactly the
    batches an uninterrupted one would: epoch e uses the permutation rng(seed + e) of the windows.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        n = tokens.numel() // seq_len
        if n == 0:
            raise ValueError(f"{tokens.numel()} tokens do not fill one window of {seq_len}")
        self.seq_len = seq_len
        self.windows = tokens[: n * seq_len].reshape(n, seq_len).to(torch.int64)
        self._perms: dict[int, np.ndarray] = {}
        self._seed_base = 0

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng(self._seed_base + epoch).permutation(len(self))}
        return self._perms[epoch]

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer, seq_len: int) -> TokenWindows:
        """Tokenize `texts` with a transformers tokenizer and cut the stream into windows."""
        ids: list[int] = []
        for text in texts:
            ids.extend(tokenizer(text)["input_ids"])
        return cls(torch.tensor(ids, dtype=torch.int64), seq_len)

    @classmethod
    def from_files(cls, paths, tokenizer, seq_len: int) -> TokenWindows:
        return cls.from_texts((f.read_text(encoding="utf-8") for f in text_files(paths)), tokenizer, seq_len)

    def __len__(self) -> int:
        return self.windows.shape[0]

    def batch(
        self, step: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> torch.Tensor:
        """The windows of optimiser step `step` for `rank`: int64 [batch_size, seq_len].

        The global batch of a step is batch_size * world_size consecutive entries of the epoch's
        permutation; rank r takes the r-th slice, so the ranks together see the single-process batch.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        n = len(self)
        per_step = batch_size * world_size
        if seed != self._seed_base:
            self._seed_base, self._perms = seed, {}
        picks = []
        for i in range(step * per_step + rank * batch_size, step * per_step + (rank + 1) * batch_size):
            epoch, pos = divmod(i, n)
            picks.append(int(self._permutation(epoch)[pos]))
        return self.windows[picks]
