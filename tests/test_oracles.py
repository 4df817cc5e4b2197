"""PC → function/file:line, function addresses and RET sites, checked against the Go toolchain's own
``go tool objdump`` and ``go tool addr2line`` (which read pclntab, not DWARF: an independent oracle)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import build_fixture
from goprobe import GoBinary
from goprobe.testing.gobuild import go_tool

_TEXT = re.compile(r"^TEXT (.+)\(SB\) (.*)$")
_INSN = re.compile(r"^\s+(\S+):(\d+)\s+(0x[0-9a-f]+)\s+([0-9a-f]+)\s+(.*)$")


def objdump(version: str, binary: Path, pattern: str) -> dict[str, list[tuple[int, str, int, str, int]]]:
    """function → [(pc, file basename, line, instruction text, size)] from ``go tool objdump -s pattern``."""
    out: dict[str, list[tuple[int, str, int, str, int]]] = {}
    current = None
    for line in go_tool(version, "objdump", "-s", pattern, str(binary)).splitlines():
        m = _TEXT.match(line)
        if m:
            current = out.setdefault(m.group(1), [])
            continue
        m = _INSN.match(line)
        if m and current is not None:
            current.append((int(m.group(3), 16), m.group(1), int(m.group(2)), m.group(5).strip(),
                            len(m.group(4)) // 2))
    return out


FIXTURE_FUNCS = {"tiny": r"^main\.", "kinds": r"^main\."}


@pytest.mark.parametrize("fixture", ["tiny", "kinds"])
def test_functions_lines_and_rets_match_objdump(fixture, go_version, build_mode):
    binary = build_fixture(fixture, go_version, build_mode)
    dump = objdump(go_version, binary, FIXTURE_FUNCS[fixture] + "|^runtime\\.gopark$")
    assert len(dump) >= 3
    checked_pcs = 0
    with GoBinary(binary, use_cache=False) as b:
        for name, insns in dump.items():
            fns = b.functions(name)
            if not fns:
                # Only compiler-generated wrappers may lack DWARF.
                assert name.endswith(("-fm", "-range1")) or ".gowrap" in name or "..." in name, name
                continue
            fn = fns[0]
            assert fn.entry == insns[0][0], name
            assert fn.high == insns[-1][0] + insns[-1][4], name
            code = b.code.for_function(fn)
            rets = [pc for pc, _f, _l, text, _n in insns if text.startswith("RET")]
            assert list(code.returns) == rets, name
            for pc, file, line, _text, _size in insns:
                loc = b.source_at(pc)
                assert loc is not None, (name, hex(pc))
                assert (os.path.basename(loc.file), loc.line) == (file, line), (name, hex(pc))
                assert loc.function == name
                checked_pcs += 1
    assert checked_pcs > 50


def test_addr2line_agrees_on_sampled_pcs(go_version):
    binary = build_fixture("tiny", go_version, "opt")
    with GoBinary(binary, use_cache=False) as b:
        pcs = []
        for sym in b.elf.function_symbols():
            if sym.name.startswith(("main.", "fmt.", "runtime.gopark", "runtime.main")) and sym.size:
                pcs.extend(range(sym.value, sym.value + sym.size, max(1, sym.size // 7)))
        pcs = pcs[:600]
        out = go_tool(go_version, "addr2line", str(binary), input="".join(f"{pc:#x}\n" for pc in pcs)).splitlines()
        assert len(out) == 2 * len(pcs)
        compared = 0
        for i, pc in enumerate(pcs):
            func, fileline = out[2 * i], out[2 * i + 1]
            if func == "?":
                continue
            file, line = fileline.rsplit(":", 1)
            loc = b.source_at(pc)
            assert loc is not None, hex(pc)
            assert (loc.file, loc.line) == (file, int(line)), (func, hex(pc))
            fn = b.function_at(pc)
            assert fn is not None and fn.name == func, hex(pc)
            compared += 1
        assert compared > 100


def test_one_sequence_line_lookup_agrees_with_full_decoding(go_version):
    """The per-sequence fast path (used for single PCs) gives the same rows as decoding whole programs."""
    from goprobe.dwarf.lines import LineProgram

    binary = build_fixture("kinds", go_version, "opt")
    with GoBinary(binary, use_cache=False) as b:
        compared = 0
        for unit in list(b.units.units())[:40]:
            off = unit.root.attrs.get(0x10)  # DW_AT_stmt_list
            if off is None:
                continue
            fast = LineProgram(b.sections.line, off, b.sections.line_str, b.sections.str)
            full = LineProgram(b.sections.line, off, b.sections.line_str, b.sections.str)
            pcs = sorted({r.address + d for r in full.rows for d in (-1, 0, 1, 5)})
            for pc in pcs[::3]:
                assert fast.row_for_pc(pc) == full.row_for_pc(pc), hex(pc)
                compared += 1
        assert compared > 1000
        # A function's entry is answered from its own sequence, without decoding the whole program.
        for name in ("main.scalars", "main.maps", "main.main"):
            fn = b.function(name)
            off = b.units.unit(fn.unit_offset).root.attrs.get(0x10)
            prog = LineProgram(b.sections.line, off, b.sections.line_str, b.sections.str)
            assert prog.row_for_pc(fn.entry) is not None
            assert "rows" not in prog.__dict__, name
