"""The package under test is the installed one, and the torch it runs with is inside the declared range.

CI (.ci/run) builds the release wheel, installs it into a fresh environment and runs this suite from the
repository. These tests prove that the suite then imports ``sqat_kernels`` from that environment's
site-packages, not from the source tree, print what was imported, and check that the installed torch is one
the package's metadata admits (the native module is torch-free; .ci/torch-range runs the torch tests under
the other torch releases of that range that can be installed here).
"""

from __future__ import annotations

import importlib
import json
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
import sqat_kernels
import torch
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DIST = metadata.distribution("sqat-kernels")


def _editable() -> bool:
    text = DIST.read_text("direct_url.json")
    return bool(text) and bool(json.loads(text).get("dir_info", {}).get("editable", False))


def test_imported_from_site_packages(capsys: pytest.CaptureFixture[str]) -> None:
    if _editable():
        pytest.skip("editable install: sqat_kernels is the source tree here (CI tests the installed wheel)")
    package = Path(sqat_kernels.__file__).resolve().parent
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    assert package.parent in site, f"sqat_kernels imported from {package}, not from site-packages {site}"
    assert REPO / "python" not in package.parents, f"sqat_kernels imported from the source tree: {package}"
    native = Path(importlib.import_module("sqat_kernels._C").__file__).resolve()
    assert native.parent == package, f"the native module {native} is not the installed package's"
    assert f"sqat_kernels/{native.name}" in {str(f) for f in DIST.files or []}, "_C is not in the RECORD"
    tags = [line.split(":", 1)[1].strip() for line in (DIST.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    with capsys.disabled():
        print(f"\nsqat_kernels {DIST.version} imported from {package}; wheel tags: {', '.join(tags)}; "
              f"CUDA kernels compiled: {sqat_kernels.cuda_compiled()}, usable: {sqat_kernels.cuda_usable()}; "
              f"torch {torch.__version__}")


def test_torch_within_declared_range() -> None:
    specs = {str(r.specifier) for r in map(Requirement, DIST.requires or []) if r.name == "torch"}
    assert len(specs) == 1, f"the extras declare different torch ranges: {sorted(specs)}"
    (spec,) = specs
    assert Requirement(f"torch{spec}").specifier.contains(Version(torch.__version__), prereleases=True), (
        f"torch {torch.__version__} is outside the declared range {spec}"
    )
