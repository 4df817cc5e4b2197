"""Variables, types and locations read from DWARF, checked against what the fixture program itself reports
(names, static Go types via reflect, declaration lines), on every Go version and both build modes."""

from __future__ import annotations

import pytest

from conftest import build_fixture
from goprobe import GoBinary, UnknownVariableError
from goprobe.dwarf.expressions import ADDRESS_MEMORY, CFA_MEMORY, UNAVAILABLE
from goprobe.dwarf.functions import LOCAL, PARAM
from goprobe.dwarf.types import GoType
from goprobe.testing.fixture_process import running

_truth_cache: dict[tuple[str, str], dict] = {}


def kinds_truth(version: str, mode: str) -> tuple[object, dict]:
    binary = build_fixture("kinds", version, mode)
    key = (version, mode)
    if key not in _truth_cache:
        with running(binary) as proc:
            _truth_cache[key] = proc.truth
    return binary, _truth_cache[key]


def go_type_string(t: GoType) -> str:
    """The name reflect would print for a DWARF type (they agree but for a few spellings)."""
    return t.name


def find_variable(b: GoBinary, func: str, name: str):
    """The variable in the function's out-of-line code, or in an inlined copy of it."""
    for fn in b.functions(func):
        v = fn.variable(name)
        if v is not None:
            return fn, v
    for caller, call in b.inlined_copies(func):
        for v in call.variables:
            if v.name == name:
                return caller, v
    return None, None


def test_every_reported_variable_is_in_dwarf_with_its_type(go_version, build_mode):
    binary, truth = kinds_truth(go_version, build_mode)
    missing, wrong_type, wrong_role = [], [], []
    with GoBinary(binary, use_cache=False) as b:
        for entry in truth["variables"]:
            fn, v = find_variable(b, entry["func"], entry["name"])
            if v is None:
                missing.append((entry["func"], entry["name"]))
                continue
            t = b.type_at(v.type_offset)
            if t.dict_index is not None:
                # Shaped generic code: the real type comes from the dictionary at run time (optimised code
                # may drop an unused dictionary; then the shape's layout is all there is).
                if t.name and "go.shape." not in t.name:
                    wrong_type.append((entry["func"], entry["name"], "not a shape", t.name))
                if build_mode == "debug" and not any(x.name == ".dict" for x in fn.variables):
                    wrong_type.append((entry["func"], entry["name"], "no .dict for", t.name))
            elif go_type_string(t) != entry["type"]:
                wrong_type.append((entry["func"], entry["name"], t.name, entry["type"]))
            want_role = PARAM if entry["kind"] == "param" else LOCAL
            if v.role != want_role:
                wrong_role.append((entry["func"], entry["name"], v.role))
    if build_mode == "debug":
        assert not missing, missing
    else:
        # Optimised code may drop a variable from DWARF altogether (goprobe then reports it unavailable);
        # Go keeps almost all of them.
        assert len(missing) <= max(2, len(truth["variables"]) // 25), missing
    assert not wrong_type, wrong_type
    assert not wrong_role, wrong_role
    assert len(truth["variables"]) > 100


def test_unoptimised_variables_live_on_the_stack_for_the_whole_body(go_version):
    """With -N -l every parameter and local has a stack slot (CFA-relative) over its whole scope."""
    binary, truth = kinds_truth(go_version, "debug")
    with GoBinary(binary, use_cache=False) as b:
        checked = 0
        for entry in truth["variables"]:
            fn, v = find_variable(b, entry["func"], entry["name"])
            assert v is not None
            if fn.name != entry["func"] and "[...]" not in entry["func"]:
                continue  # recorded through an inlined copy: no inlining in this mode, so not expected
            kinds = {p.kind for r in v.locations for p in r.location}
            if v.escaped:
                # The slot holds the address of the heap copy.
                assert kinds <= {CFA_MEMORY, "reg"}, (entry, kinds)
            else:
                assert CFA_MEMORY in kinds, (entry, kinds)
            assert UNAVAILABLE not in kinds or v.role != PARAM, (entry, v.locations)
            if v.role == PARAM:
                assert v.availability(fn.ranges, fn.entry) == "whole body", entry
            checked += 1
        assert checked > 100


def test_escaped_variables_are_marked(go_version, build_mode):
    binary, truth = kinds_truth(go_version, build_mode)
    escaped = [e for e in truth["variables"] if e.get("escapes")]
    assert escaped, "the fixture reports at least one escaped variable"
    with GoBinary(binary, use_cache=False) as b:
        for entry in escaped:
            _fn, v = find_variable(b, entry["func"], entry["name"])
            assert v is not None and v.escaped, entry


def test_globals_have_address_and_type(go_version, build_mode):
    binary, truth = kinds_truth(go_version, build_mode)
    with GoBinary(binary, use_cache=False) as b:
        for entry in truth["globals"]:
            if b.elf.symbol(entry["name"]) is None:
                # Zero-size variables get neither a symbol nor DWARF; goprobe must say it does not know them.
                assert entry["type"] in ("main.Empty", "struct {}"), entry
                with pytest.raises(UnknownVariableError):
                    b.global_variable(entry["name"])
                continue
            g = b.global_variable(entry["name"])
            assert b.elf.symbol(entry["name"]).value == g.address
            assert b.type_at(g.type_offset).name == entry["type"], entry["name"]


def test_function_declarations_match(go_version, build_mode):
    binary, truth = kinds_truth(go_version, build_mode)
    with GoBinary(binary, use_cache=False) as b:
        for name, where in truth["functions"].items():
            fns = b.functions(name)
            if not fns:  # inlined everywhere in optimised builds
                assert build_mode == "opt" and b.abstract_function_offset(name.replace("[...]", "")) is not None \
                    or b.inlined_copies(name), name
                continue
            for fn in fns:
                assert (fn.decl_file, fn.decl_line) == (where["file"], where["line"]), name


def test_type_model_shapes(newest_version):
    binary, _ = kinds_truth(newest_version, "debug")
    with GoBinary(binary, use_cache=False) as b:
        emp = b.type_named("main.Employee")
        assert emp.kind == "struct" and emp.named
        embedded = [f.name for f in emp.fields if f.embedded]
        assert "Base" in embedded and "Meta" in embedded
        assert b.type_named("[]string").elem.kind == "string"
        m = b.type_named("map[string]int")
        assert m.kind == "map" and m.key.name == "string" and m.elem.name == "int" and m.impl is not None
        assert b.type_named("[4]int32").length == 4
        assert b.type_named("chan int").kind == "chan" and b.type_named("chan int").elem.name == "int"
        assert b.type_named("main.Celsius").kind == "float64" and b.type_named("main.Celsius").named
        assert b.type_named("interface {}").empty_interface
        assert not b.type_named("main.Shape").empty_interface and b.type_named("main.Shape").kind == "interface"
        assert b.type_named("func(int) int").kind == "func"
        assert b.type_named("unsafe.Pointer").kind == "unsafe.Pointer"
        assert b.type_named("*main.Point").elem.name == "main.Point"
        # Runtime type addresses map back to the DWARF type.
        for name in ("main.Point", "*main.Node", "map[string]int", "[]string", "main.Celsius"):
            t = b.type_named(name)
            assert t.runtime_type, name
            assert b.type_for_runtime_type(t.runtime_type).name == name


def test_generic_instantiations_and_dictionaries(go_version, build_mode):
    binary, _ = kinds_truth(go_version, build_mode)
    with GoBinary(binary, use_cache=False) as b:
        fns = b.functions("main.genericSum")
        assert fns
        for fn in fns:
            assert fn.name.startswith("main.genericSum[")
            assert {"xs", "scale"} <= {v.name for v in fn.variables}
            # Shaped generic code receives its dictionary as a hidden parameter (which optimised code before
            # Go 1.27 drops from DWARF when the body does not use it).
            if build_mode == "debug" or b.go_version_tuple >= (1, 27, 0):
                assert any(v.name == ".dict" for v in fn.variables), fn.name
            shaped = [b.type_at(v.type_offset) for v in fn.variables if v.name in ("xs", "scale")]
            assert all(t.dict_index is not None for t in shaped), fn.name
        assert b.functions("main.Pair[...].Describe")


def test_closure_captures_have_offsets(go_version):
    binary, _ = kinds_truth(go_version, "debug")
    with GoBinary(binary, use_cache=False) as b:
        closures = [fn for fn in b.functions("main.makeClosure.func1")]
        assert closures
        captured = {v.name for fn in closures for v in fn.variables if v.closure_offset is not None}
        if b.go_version_tuple >= (1, 23, 0):  # DW_AT_go_closure_offset appeared in Go 1.23
            assert {"n", "s"} <= captured, captured
        else:
            assert {"n", "s"} <= {v.name for fn in closures for v in fn.variables}


def test_inlined_function_and_its_copies(go_version):
    binary, _ = kinds_truth(go_version, "opt")
    with GoBinary(binary, use_cache=False) as b:
        copies = b.inlined_copies("main.inlinedPark")
        assert copies, "inlinedPark is small and inlined in optimised builds"
        assert "main.inlining" in {caller.name for caller, _ in copies}
        for caller, call in copies:
            assert call.name == "main.inlinedPark"
            assert {"n", "offset", "square"} <= {v.name for v in call.variables}
            for lo, hi in call.ranges:
                src = b.source_at(lo)
                assert src.function == caller.name
                assert "main.inlinedPark" in [name for name, _f, _l in src.inlined]


def test_globals_location_kind(newest_version):
    binary, truth = kinds_truth(newest_version, "opt")
    with GoBinary(binary, use_cache=False) as b:
        g = b.global_variable(truth["globals"][0]["name"])
        die = b.die_at(g.die_offset)
        from goprobe.dwarf import constants as C
        from goprobe.dwarf.expressions import decode_location

        assert decode_location(die.attrs[C.AT_location])[0].kind == ADDRESS_MEMORY


@pytest.mark.parametrize("fixture", ["kinds"])
def test_line_to_pcs_round_trip(fixture, go_version, build_mode):
    """Every statement PC of a line maps back to that line (directly or as an inlined position)."""
    binary, truth = kinds_truth(go_version, build_mode)
    with GoBinary(binary, use_cache=False) as b:
        checked = 0
        for name, where in truth["functions"].items():
            for line in range(where["line"] + 1, where["line"] + 6):
                for pc in b.pcs_for_line("frames.go", line):
                    src = b.source_at(pc)
                    assert src.file == where["file"] and src.line == line, (name, line, hex(pc))
                    checked += 1
        assert checked > 20
