"""Checks a repaired release wheel (run by .ci/build-wheel with the release tools' Python).

* every platform tag is manylinux, none newer than manylinux_2_28;
* the native module holds SASS for exactly the GPU architectures below and PTX only of the newest;
* it exports PyInit__C alone, and every symbol it takes from the system is versioned (an unversioned one,
  other than Python's own and weak references, would resolve on this machine and fail on an older one);
* and prints the wheel's size.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from elftools.elf.elffile import ELFFile
from packaging.utils import parse_wheel_filename

SASS = {"sm_75", "sm_80", "sm_86", "sm_89", "sm_90"}
PTX = {"sm_90"}
NEWEST_TAG = (2, 28)


def gpu_code(cuobjdump: str, module: Path, kind: str) -> set[str]:
    out = subprocess.run([cuobjdump, f"--list-{kind}", str(module)], capture_output=True, text=True,
                         check=True)
    print(out.stdout, end="")
    return set(re.findall(r"\.(sm_\d+)\.(?:cubin|ptx)$", out.stdout, flags=re.M))


def external_symbols(module: Path) -> tuple[list[str], list[str]]:
    """(names exported by the module, undefined strong names without a symbol version)."""
    with module.open("rb") as f:
        elf = ELFFile(f)
        dynsym = elf.get_section_by_name(".dynsym")
        versions = elf.get_section_by_name(".gnu.version")
        exported, unversioned = [], []
        for i, sym in enumerate(dynsym.iter_symbols()):
            if not sym.name:
                continue
            if sym["st_shndx"] != "SHN_UNDEF":
                if sym["st_info"]["bind"] != "STB_LOCAL":
                    exported.append(sym.name)
                continue
            version = versions.get_symbol(i)["ndx"] if versions else "VER_NDX_LOCAL"
            weak = sym["st_info"]["bind"] == "STB_WEAK"
            python = sym.name.startswith(("Py", "_Py"))
            if version in ("VER_NDX_LOCAL", "VER_NDX_GLOBAL") and not weak and not python:
                unversioned.append(sym.name)
    return exported, unversioned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--cuobjdump", required=True)
    args = parser.parse_args()
    errors: list[str] = []

    _, _, _, tags = parse_wheel_filename(args.wheel.name)
    for tag in tags:
        m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64|manylinux(2014)_x86_64", tag.platform)
        glibc = (2, 17) if m and m.group(3) else (int(m.group(1)), int(m.group(2))) if m else None
        if glibc is None or glibc > NEWEST_TAG:
            errors.append(f"platform tag {tag.platform} is not manylinux_2_28 or older")

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.wheel) as zf:
        (name,) = [n for n in zf.namelist() if re.fullmatch(r"sqat_kernels/_C\..*\.so", n)]
        module = Path(zf.extract(name, tmp))
        sass, ptx = gpu_code(args.cuobjdump, module, "elf"), gpu_code(args.cuobjdump, module, "ptx")
        if sass != SASS:
            errors.append(f"SASS for {sorted(sass)}, expected {sorted(SASS)}")
        if ptx != PTX:
            errors.append(f"PTX for {sorted(ptx)}, expected {sorted(PTX)}")
        exported, unversioned = external_symbols(module)
        if exported != ["PyInit__C"]:
            shown = ", ".join(exported[:10]) + (" ..." if len(exported) > 10 else "")
            errors.append(f"exports {shown}, not PyInit__C alone")
        if unversioned:
            errors.append(f"unversioned system symbols: {sorted(unversioned)}")
        module_mib = module.stat().st_size / 2**20

    wheel_mib = args.wheel.stat().st_size / 2**20
    print(f"{args.wheel.name}: {wheel_mib:.1f} MiB ({module_mib:.1f} MiB native module unpacked); "
          f"SASS {', '.join(sorted(sass))}; PTX {', '.join(sorted(ptx))}")
    for error in errors:
        print(f"check_wheel: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
