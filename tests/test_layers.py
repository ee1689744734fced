"""The package's layers (DESIGN.md): data flows down, nothing imports upward or sideways.

Every `import` / `from ... import` of sqat_kernels in the package source is read from the syntax tree (so
imports inside functions count too) and checked against the layer table below: a module may import its
own unit or a unit of a strictly lower layer. export and nn share a layer, so export cannot import nn (a
QAT layer tells the exporter what it trained against as data, through `trained_as`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "sqat_kernels"

# unit (top-level module or sub-package) -> layer; "<root>" is the package's __init__ (the public API)
LAYERS = {
    "_C": 0,
    "formats": 1,
    "_packages": 1,
    "reference": 2,
    "recipes": 2,
    "schedule": 2,
    "gguf_checks": 2,
    "backends": 3,
    "ops": 4,
    "quant": 4,
    "nn": 5,
    "export": 5,
    "train": 6,
    "models": 6,
    "eval": 6,
    "pipeline": 7,
    "demo": 8,
    "cli": 9,
    "<root>": 10,
}


def _unit_of(parts: list[str]) -> str:
    return parts[0] if parts else "<root>"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported unit) for every sqat_kernels import in the file at `path`."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1]  # the package a relative import starts from (for __init__ too)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if node.module is None:  # from .. import x: x may be a submodule
                    found += [(node.lineno, _unit_of(target + [a.name])) for a in node.names]
                    continue
            elif node.module and node.module.split(".")[0] == "sqat_kernels":
                target = node.module.split(".")[1:]
            else:
                continue
            found.append((node.lineno, _unit_of(target)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqat_kernels":
                    found.append((node.lineno, _unit_of(alias.name.split(".")[1:])))
    return found


def _unit_of_file(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return "<root>" if parts == ["__init__"] else parts[0]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {_unit_of_file(p) for p in SOURCES} | {"_C"}
    assert units <= set(LAYERS), f"units without a layer: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    unit = _unit_of_file(path)
    bad = [
        f"line {line}: {unit} (layer {LAYERS[unit]}) imports {target} (layer {LAYERS.get(target)})"
        for line, target in _imports(path)
        if target != unit and LAYERS.get(target, 99) >= LAYERS[unit]
    ]
    assert not bad, "; ".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    # the check itself must be able to fail: an export module importing nn, both absolute and relative
    fake = tmp_path / "sqat_kernels"
    (fake / "export").mkdir(parents=True)
    module = fake / "export" / "bad.py"
    module.write_text("def f():\n    from ..nn import prepare\n    import sqat_kernels.train\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    assert _imports(module) == [(2, "nn"), (3, "train")]
