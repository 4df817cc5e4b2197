"""PIE and arm64 binaries, the persisted index cache, and ``goprobe inspect`` output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import FIXTURES, build_fixture
from goprobe import GoBinary
from goprobe.dwarf import index_cache
from goprobe.testing.gobuild import go_tool


@pytest.mark.parametrize("goarch,flags", [("amd64", ("-buildmode=pie",)), ("arm64", ()), ("arm64", ("-buildmode=pie",))])
def test_pie_and_arm64(go_version, goarch, flags):
    binary = build_fixture("tiny", go_version, "opt", goarch=goarch, extra_flags=flags)
    dump = go_tool(go_version, "objdump", "-s", r"^main\.", str(binary))
    starts = {m.group(1): None for m in re.finditer(r"^TEXT (\S+)\(SB\)", dump, re.M)}
    with GoBinary(binary, use_cache=False) as b:
        assert b.arch == goarch
        assert b.is_pie == ("-buildmode=pie" in flags)
        for name in ("main.sum", "main.(*Counter).Add"):
            fn = b.function(name)
            assert name in starts
            block = dump[dump.index(f"TEXT {name}(SB)"):]
            first = re.search(r"\s(0x[0-9a-f]+)\s", block).group(1)
            assert fn.entry == int(first, 16), name
            lines = block.split("\nTEXT ")[0].splitlines()[1:]
            rets = [int(re.search(r"\s(0x[0-9a-f]+)\s", ln).group(1), 16) for ln in lines if re.search(r"\tRET\b", ln)]
            code = b.code.for_function(fn)
            assert list(code.returns) == rets, name
            assert code.has_stack_check == (code.prologue_end != fn.entry)
            assert {v.name for v in fn.variables} >= ({"xs"} if name == "main.sum" else {"c", "n"})
        layout = b.runtime
        assert layout["g"]["goid"].size == 8
        if goarch == "arm64":
            assert layout["g"].has("sched.lr")
        # inspect names registers the binary's way: R0..R30 on arm64, RAX... on amd64.
        from goprobe.inspect import function_report

        wheres = " ".join(loc["where"] for f in function_report(b, "main.sum")["functions"]
                          for v in f["variables"] for loc in v["locations"])
        amd64_names = re.findall(r"\b(RAX|RBX|RCX|RDI|RSI)\b", wheres)
        arm64_names = re.findall(r"\bR\d+\b", wheres)
        if goarch == "arm64":
            assert arm64_names and not amd64_names, wheres
        else:
            assert amd64_names, wheres


def test_index_cache_makes_the_second_open_skip_dwarf(newest_version, tmp_path, monkeypatch):
    monkeypatch.setenv("GOPROBE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GOPROBE_NO_CACHE", raising=False)
    binary = build_fixture("tiny", newest_version, "opt")
    with GoBinary(binary) as b:
        first = (b.function("main.sum"), b.runtime, b.type_at(b.function("main.sum").variables[0].type_offset))
    assert list((tmp_path / "index").glob("*.pickle"))

    read = []
    orig = GoBinary.__init__

    def spy_init(self, *a, **kw):
        orig(self, *a, **kw)
        real = self.elf.section_data
        self.elf.section_data = lambda name: (read.append(name), real(name))[1]
        self.sections._get = self.elf.section_data

    monkeypatch.setattr(GoBinary, "__init__", spy_init)
    with GoBinary(binary) as b:
        second = (b.function("main.sum"), b.runtime, b.type_at(b.function("main.sum").variables[0].type_offset))
    assert second[0] == first[0] and second[1] == first[1] and second[2].name == first[2].name
    assert not [n for n in read if n.startswith(".debug_")], read


def test_index_cache_is_never_trusted_for_another_binary(newest_version, tmp_path, monkeypatch):
    monkeypatch.setenv("GOPROBE_CACHE_DIR", str(tmp_path))
    a = build_fixture("tiny", newest_version, "opt")
    b_ = build_fixture("tiny", newest_version, "debug")
    copy = tmp_path / "prog"
    copy.write_bytes(a.read_bytes())
    with GoBinary(copy) as b:
        entry_a = b.function("main.sum").entry
    copy.write_bytes(b_.read_bytes())  # same path, different binary
    with GoBinary(copy) as b:
        entry_b = b.function("main.sum").entry
    with GoBinary(b_, use_cache=False) as b:
        assert entry_b == b.function("main.sum").entry
    assert entry_a != entry_b


def test_corrupt_or_foreign_cache_files_are_ignored(newest_version, tmp_path, monkeypatch):
    monkeypatch.setenv("GOPROBE_CACHE_DIR", str(tmp_path))
    binary = build_fixture("tiny", newest_version, "opt")
    with GoBinary(binary) as b:
        want = b.function("main.sum").entry
    for f in (tmp_path / "index").glob("*.pickle"):
        f.write_bytes(b"garbage")
    with GoBinary(binary) as b:
        assert b.function("main.sum").entry == want
    monkeypatch.setattr(index_cache, "FORMAT_VERSION", index_cache.FORMAT_VERSION + 1)
    with GoBinary(binary) as b:
        assert b.function("main.sum").entry == want


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "goprobe.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, GOPROBE_NO_CACHE="1"))


def test_inspect_binary_text_and_json(go_version):
    binary = build_fixture("kinds", go_version, "opt")
    text = run_cli("inspect", str(binary))
    assert text.returncode == 0, text.stderr
    assert f"Go {go_version}" in text.stdout and "amd64" in text.stdout
    assert "main.scalars" in text.stdout and "main.(*Server).PointerMethod" in text.stdout
    js = run_cli("inspect", str(binary), "--json")
    data = json.loads(js.stdout)
    assert data["go_version"] == f"go{go_version}" and data["arch"] == "amd64"
    names = {f["name"] for f in data["main_functions"]}
    assert {"main.scalars", "main.main", "main.(*Server).PointerMethod"} <= names
    assert data["counts"]["main_functions"] == len(data["main_functions"])


def test_inspect_function(go_version, build_mode):
    binary = build_fixture("kinds", go_version, build_mode)
    data = json.loads(run_cli("inspect", str(binary), "main.(*Server).PointerMethod", "--json").stdout)
    (fn,) = data["functions"]
    by_name = {v["name"]: v for v in fn["variables"]}
    assert by_name["s"]["type"] == "*main.Server" and by_name["s"]["role"] == "param"
    assert by_name["path"]["type"] == "string" and by_name["attempt"]["type"] == "int"
    # The line of its "func" in the fixture's source, found there (not a number that edits would shift).
    src = (FIXTURES / "kinds" / "frames.go").read_text().splitlines()
    line = next(i + 1 for i, text in enumerate(src) if text.startswith("func (s *Server) PointerMethod("))
    assert fn["file"].endswith("frames.go") and fn["lines"][0] == line
    if build_mode == "debug":
        assert all(v["available"] == "whole body" for v in fn["variables"] if v["role"] == "param")
    text = run_cli("inspect", str(binary), "main.(*Server).PointerMethod").stdout
    assert "param" in text and "*main.Server" in text and f"frames.go:{line}" in text


def test_inspect_inlined_function_reports_callers(go_version):
    binary = build_fixture("kinds", go_version, "opt")
    proc = run_cli("inspect", str(binary), "main.inlinedPark")
    if proc.returncode == 0:  # an out-of-line copy was kept as well
        assert "inlined" in proc.stdout and "main.inlining" in proc.stdout
    else:
        assert "inlined into main.inlining" in proc.stderr


def test_help_is_useful():
    top = run_cli("--help")
    assert top.returncode == 0 and "inspect" in top.stdout
    sub = run_cli("inspect", "--help")
    assert sub.returncode == 0 and "--json" in sub.stdout and "FUNCTION" in sub.stdout.upper()

