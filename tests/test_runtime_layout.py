"""The runtime-structure check, run against every supported Go toolchain."""

from __future__ import annotations

import pytest

from conftest import build_fixture
from goprobe import GoBinary, RuntimeLayoutError
from goprobe.dwarf import runtime_layout
from goprobe.dwarf.binary import parse_go_version


def test_runtime_layout_on_every_toolchain(go_version):
    binary = build_fixture("tiny", go_version, "opt")
    with GoBinary(binary, use_cache=False) as b:
        layout = b.runtime
        ver = parse_go_version(b.go_version)
        assert b.go_version == f"go{go_version}"
        # Every structure the spec marks as always needed is there, with every required field inside it.
        for key, _names, required, _optional, always in runtime_layout._SPEC:
            if not always and key not in layout.structs:
                continue
            s = layout[key]
            for f in required:
                fl = s[f]
                assert 0 <= fl.offset and fl.offset + fl.size <= s.size, (key, f)
        g = layout["g"]
        assert g["goid"].size == 8 and g["sched.pc"].size == 8 and g["stack.hi"].offset == g["stack.lo"].offset + 8
        assert layout.g_status_size == 4
        assert layout["m"]["curg"].size == 8
        assert layout["string"].size == 16 and layout["slice"].size == 24 and layout["eface"].size == 16
        # Globals agree with the ELF symbol table.
        for name, addr in (("runtime.allgs", layout.allgs), ("runtime.allglen", layout.allglen),
                           ("runtime.firstmoduledata", layout.firstmoduledata)):
            assert b.elf.symbol(name).value == addr, name
        # Release-dependent choices.
        assert layout.map_impl == ("swiss" if ver >= (1, 24, 0) else "classic")
        assert layout.direct_iface[0] == ("tflag" if ver >= (1, 26, 0) else "kind")
        assert layout.kind_mask == 31
        assert layout["type"].name == "internal/abi.Type"


def test_a_changed_structure_fails_loudly_naming_it(newest_version, monkeypatch):
    binary = build_fixture("tiny", newest_version, "opt")
    spec = list(runtime_layout._SPEC)
    key, names, required, optional, always = spec[0]
    spec[0] = (key, names, required + ("goidRenamed",), optional, always)
    monkeypatch.setattr(runtime_layout, "_SPEC", tuple(spec))
    with GoBinary(binary, use_cache=False) as b:
        with pytest.raises(RuntimeLayoutError, match=r"runtime\.g has no field 'goidRenamed'"):
            b.runtime

    spec[0] = (key, ("runtime.gRenamed",), required, optional, always)
    monkeypatch.setattr(runtime_layout, "_SPEC", tuple(spec))
    with GoBinary(binary, use_cache=False) as b:
        with pytest.raises(RuntimeLayoutError, match=r"runtime\.gRenamed not found"):
            b.runtime
