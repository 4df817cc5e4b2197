"""Binaries without DWARF (``-ldflags=-s -w``) still give bare snapshots (issue 19 item 8): stacks from the
pclntab, the runtime's layouts from a table generated from each release's own DWARF."""

from __future__ import annotations

import json
import random

import pytest

from conftest import build_fixture
from ebpf_support import requires_bpf
from goprobe import GoBinary
from goprobe.dwarf.stripped import NO_DEBUG_INFO, TABLES_PATH, StrippedBinary, table_for
from goprobe.errors import UnknownFunctionError
from goprobe.snapshot import take_snapshot
from goprobe.testing.fixture_process import running
from goprobe.testing.runtime_tables import entry_for
from test_snapshot_values import assert_stacks_equal_the_runtimes


def test_runtime_table_is_what_the_release_s_dwarf_says(go_version):
    """The checked-in table entry of each release is exactly what the generator reads from that release's
    reference build (run ``python -m goprobe.testing.runtime_tables`` after changing what it reads)."""
    on_file = json.loads(TABLES_PATH.read_text())
    assert on_file[".".join(go_version.split(".")[:2])] == entry_for(go_version)
    assert table_for(f"go{go_version}") is not None


def test_pclntab_gives_dwarf_s_frames_and_cfa(go_version):
    """Per function of the same program built with and without DWARF: the CFA rows from the pclntab's SP
    deltas equal .debug_frame's, and the logical frames (inlined calls included) at sampled PCs equal the
    DWARF line tables' (the addresses differ between the two builds: functions are matched by name)."""
    full = build_fixture("goroutines", go_version, "opt")
    bare = build_fixture("goroutines", go_version, "opt", extra_flags=("-ldflags=-s -w",))
    with GoBinary(full, use_cache=False) as b, StrippedBinary(bare) as s:
        assert b.runtime.structs == s.runtime.structs
        names = [f.name for f in s.pcln.functions()]
        unique = {n for n in names if names.count(n) == 1}
        ours = {s.function_name_at(lo): (lo, rows) for lo, _hi, rows in s.unwind_table()}
        compared = 0
        for lo, _hi, rows in b.frames.cfa_table():
            name = b.elf.function_symbol_at(lo).name
            if name in unique and name in ours:
                mlo, mrows = ours[name]
                assert [(p - mlo, r, o) for p, r, o in mrows] == [(p - lo, r, o) for p, r, o in rows], name
                compared += 1
        assert compared > 1000
        full_fns = {f.name: f for f in b.elf.function_symbols()}
        sample = random.Random(19).sample(sorted(unique & set(full_fns)), 300)
        frames, uncovered = 0, []
        for name in sample:
            f, g = s.function(name), full_fns[name]
            for d in {0, g.size // 3, g.size // 2, max(0, g.size - 1)}:
                want = [(fn, file.removeprefix("./"), line) for fn, file, line in b.frames_at(g.value + d)]
                got = s.frames_at(f.entry + d)
                frames += 1
                if got != want and len(want) == 1 and want[0][0] == got[-1][0]:
                    # At a few PCs on the edge of inlined code DWARF's line table and the pclntab disagree
                    # (DWARF's inlined ranges do not always cover the inlined code, a known Go defect). The
                    # runtime prints its own tracebacks from the pclntab: that is what goprobe follows here.
                    uncovered.append((name, d))
                    continue
                assert got == want, (name, d)
        assert frames > 600 and len(uncovered) < frames // 20, uncovered


@pytest.mark.parametrize("backend", ["interp", pytest.param("ebpf", marks=requires_bpf)])
def test_bare_snapshot_of_a_stripped_binary(go_version, backend):
    """A -s -w build: every parked goroutine's stack equals the one the runtime printed, with states and wait
    reasons; requested variables are unavailable, saying why; an unknown function is still an error."""
    bare = build_fixture("goroutines", go_version, "opt", extra_flags=("-ldflags=-s -w",))
    with running(bare) as proc:
        truth = proc.truth
        snap = take_snapshot([proc.pid], {"main.recurse": ["depth"]}, backend=backend)
        with pytest.raises(UnknownFunctionError):
            take_snapshot([proc.pid], {"main.nope": ["x"]}, backend=backend)
    p = snap["processes"][0]
    assert p["status"] == "ok" and p["backend"] == backend and "partial" not in snap
    assert p["debug_info"] == "none" and any("no DWARF" in w for w in p["warnings"])
    assert_stacks_equal_the_runtimes(p, truth)
    waiting = [g for g in p["goroutines"] if g["status"] == "waiting"]
    assert waiting and all(g["wait_reason"] for g in waiting)
    recursing = [f for g in p["goroutines"] for f in g["frames"] if f["function"] == "main.recurse"]
    assert len(recursing) >= truth["recurse_depth"]
    assert all(f["variables"] == {"depth": {"@unavailable": NO_DEBUG_INFO}} for f in recursing)


def test_bare_snapshot_of_a_stripped_position_independent_build(newest_version):
    """-buildmode=pie -ldflags='-s -w': the pclntab is in .data.rel.ro.gopclntab and everything is moved by the
    load bias; the stacks are still the runtime's."""
    bare = build_fixture("goroutines", newest_version, "opt", extra_flags=("-buildmode=pie", "-ldflags=-s -w"))
    with running(bare) as proc:
        truth = proc.truth
        p = take_snapshot([proc.pid], {}, backend="interp")["processes"][0]
    assert p["status"] == "ok" and p["debug_info"] == "none"
    assert_stacks_equal_the_runtimes(p, truth)
