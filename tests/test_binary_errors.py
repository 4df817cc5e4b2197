"""Every way a file can be unusable gives a typed error that names the cause and the fix."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import build_fixture
from goprobe import (
    GoBinary,
    NoDebugInfoError,
    NotELFError,
    NotGoBinaryError,
    UnknownFunctionError,
    UnknownTypeError,
    UnknownVariableError,
    UnsupportedArchitectureError,
    UnsupportedGoVersionError,
)
from goprobe.errors import BinaryError, GoprobeError


@pytest.fixture(scope="module")
def tiny(request) -> Path:
    from conftest import VERSIONS

    return build_fixture("tiny", VERSIONS[-1], "opt")


def test_not_elf(tmp_path):
    p = tmp_path / "script.sh"
    p.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(NotELFError, match="not an ELF file"):
        GoBinary(p)


def test_missing_and_empty_and_directory(tmp_path):
    with pytest.raises(NotELFError, match="no such file"):
        GoBinary(tmp_path / "missing")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(NotELFError, match="empty file"):
        GoBinary(tmp_path / "empty")
    with pytest.raises(NotELFError, match="directory"):
        GoBinary(tmp_path)


@given(st.binary(max_size=256))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
def test_arbitrary_bytes_give_a_typed_error(tmp_path, data):
    p = tmp_path / "junk"
    p.write_bytes(data)
    with pytest.raises(BinaryError):
        GoBinary(p, use_cache=False)


@given(st.integers(min_value=0, max_value=4095), st.binary(min_size=1, max_size=8))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None)
def test_corrupted_headers_give_a_typed_error_or_work(tmp_path, tiny, offset, junk):
    """Damage in the ELF headers either still opens or raises a goprobe error — never anything else."""
    data = bytearray(tiny.read_bytes())
    data[offset:offset + len(junk)] = junk
    p = tmp_path / "damaged"
    p.write_bytes(bytes(data))
    try:
        b = GoBinary(p, use_cache=False)
    except GoprobeError:
        return
    try:
        b.function("main.sum")
    except GoprobeError:
        pass
    finally:
        b.close()


def test_not_a_go_binary(tmp_path):
    exe = Path(shutil.which("true") or "/bin/true")
    with pytest.raises(NotGoBinaryError, match="not a Go binary"):
        GoBinary(exe)


def test_no_dwarf_when_built_with_w(newest_version):
    p = build_fixture("tiny", newest_version, "opt", extra_flags=("-ldflags=-w",))
    with pytest.raises(NoDebugInfoError, match="-w") as exc:
        GoBinary(p)
    assert "rebuild" in str(exc.value)


def test_no_dwarf_when_stripped(newest_version, tmp_path):
    p = build_fixture("tiny", newest_version, "opt", extra_flags=("-ldflags=-s -w",))
    with pytest.raises(NoDebugInfoError, match="stripped"):
        GoBinary(p)
    if shutil.which("strip"):
        copy = tmp_path / "stripped"
        shutil.copy(build_fixture("tiny", newest_version, "opt"), copy)
        subprocess.run(["strip", str(copy)], check=True)
        with pytest.raises(NoDebugInfoError):
            GoBinary(copy)


def _patched(src: Path, dst: Path, old: bytes, new: bytes, after: bytes = b"") -> Path:
    data = src.read_bytes()
    start = data.index(after) if after else 0
    at = data.index(old, start)
    dst.write_bytes(data[:at] + new + data[at + len(old):])
    return dst


def test_go_too_old(tiny, tmp_path):
    b = GoBinary(tiny)
    version = b.go_version.encode()
    b.close()
    fake = (b"go1.20." + b"9" * 10)[:len(version)]
    p = _patched(tiny, tmp_path / "old", version, fake, after=b"\xff Go buildinf:")
    with pytest.raises(UnsupportedGoVersionError, match="Go 1.21 and newer"):
        GoBinary(p)


@pytest.mark.parametrize("machine,name", [(3, "EM_386"), (243, "RISC-V")])
def test_unsupported_architecture(tiny, tmp_path, machine, name):
    data = bytearray(tiny.read_bytes())
    struct.pack_into("<H", data, 18, machine)
    p = tmp_path / "other-arch"
    p.write_bytes(bytes(data))
    with pytest.raises(UnsupportedArchitectureError, match="amd64 or arm64"):
        GoBinary(p)


def test_unknown_names_suggest_close_ones(tiny):
    with GoBinary(tiny) as b:
        with pytest.raises(UnknownFunctionError) as exc:
            b.function("main.summ")
        assert "main.sum" in exc.value.suggestions
        with pytest.raises(UnknownFunctionError) as exc:
            b.function("Add")
        assert "main.(*Counter).Add" in exc.value.suggestions
        with pytest.raises(UnknownVariableError) as exc:
            b.global_variable("main.globl")
        assert "main.global" in exc.value.suggestions
        with pytest.raises(UnknownTypeError) as exc:
            b.type_named("main.Countr")
        assert "main.Counter" in exc.value.suggestions


def test_cli_errors_exit_nonzero_without_traceback(tiny, tmp_path):
    cases = [
        ([str(tmp_path / "missing")], "no such file"),
        ([shutil.which("true") or "/bin/true"], "not a Go binary"),
        ([str(tiny), "main.nope"], "unknown function"),
    ]
    for args, needle in cases:
        proc = subprocess.run([sys.executable, "-m", "goprobe.cli", "inspect", *args], capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        assert needle in proc.stderr
        assert "Traceback" not in proc.stderr


@given(st.integers(min_value=0, max_value=0xFFFF).filter(lambda m: m not in (62, 183)))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40, deadline=None)
def test_any_other_architecture_is_refused(tiny, tmp_path, machine):
    data = bytearray(tiny.read_bytes())
    struct.pack_into("<H", data, 18, machine)
    p = tmp_path / "arch"
    p.write_bytes(bytes(data))
    with pytest.raises(UnsupportedArchitectureError):
        GoBinary(p, use_cache=False)


def _with_version(tiny: Path, dst: Path, version: str) -> Path:
    data = bytearray(tiny.read_bytes())
    at = data.index(b"\xff Go buildinf:") + 32
    raw = version.encode()
    data[at:at + 1 + len(raw)] = bytes([len(raw)]) + raw
    dst.write_bytes(bytes(data))
    return dst


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=30))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40, deadline=None)
def test_go_releases_before_1_21_are_refused(tiny, tmp_path, minor, patch):
    p = _with_version(tiny, tmp_path / "v", f"go1.{minor}.{patch}")
    if minor < 21:
        with pytest.raises(UnsupportedGoVersionError, match=f"go1.{minor}.{patch}"):
            GoBinary(p, use_cache=False)
    else:
        with GoBinary(p, use_cache=False) as b:
            assert b.go_version == f"go1.{minor}.{patch}"


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.()*[]/_0123456789", min_size=1, max_size=30)


@given(_names)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None)
def test_unknown_names_raise_lookup_errors_with_real_suggestions(tiny, name):
    with GoBinary(tiny, use_cache=False) as b:
        known_funcs = set(b.function_names())
        if name in known_funcs:
            return
        try:
            b.function(name)
        except UnknownFunctionError as exc:
            assert set(exc.suggestions) <= known_funcs
            assert name in str(exc)
        for lookup, err in ((b.global_variable, UnknownVariableError), (b.type_named, UnknownTypeError)):
            try:
                lookup(name)
            except err as exc:
                assert name in str(exc)


@pytest.fixture(scope="module")
def tiny_plain_dwarf() -> Path:
    from conftest import VERSIONS

    return build_fixture("tiny", VERSIONS[-1], "opt", extra_flags=("-ldflags=-compressdwarf=false",))


@given(st.sampled_from([".debug_info", ".debug_line", ".debug_abbrev", ".debug_loclists", ".debug_frame",
                        ".debug_rnglists", ".debug_addr"]),
       st.floats(min_value=0, max_value=1), st.binary(min_size=1, max_size=16))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=80, deadline=None)
def test_damaged_dwarf_gives_typed_errors_only(tiny_plain_dwarf, tmp_path, section, where, junk):
    """Whatever bytes of a DWARF section are damaged, every query either answers or raises a goprobe error."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(tiny_plain_dwarf.read_bytes())
    with open(tiny_plain_dwarf, "rb") as fh:
        sec = ELFFile(fh).get_section_by_name(section)
        if sec is None:
            return
        start, size = sec["sh_offset"], sec["sh_size"]
    at = start + int(where * max(0, size - len(junk)))
    data[at:at + len(junk)] = junk
    p = tmp_path / "damaged-dwarf"
    p.write_bytes(bytes(data))
    queries = [
        lambda b: [b.type_at(v.type_offset) for v in b.function("main.sum").variables],
        lambda b: b.function("main.(*Counter).Add").variables,
        lambda b: b.source_at(b.function("main.sum").entry),
        lambda b: b.frames_at(b.function("main.main").entry + 8),
        lambda b: b.pcs_for_line("main.go", 24),
        lambda b: b.global_variable("main.global"),
        lambda b: b.frame_rule(b.function("main.sum").entry),
        lambda b: b.runtime,
        lambda b: b.type_named("main.Counter").fields,
    ]
    for q in queries:
        try:
            b = GoBinary(p, use_cache=False)
        except GoprobeError:
            return
        try:
            q(b)
        except GoprobeError:
            pass
        finally:
            b.close()
