"""The interpreter program format: plans round-trip through it exactly, damaged programs are refused with a
typed error, and the format documentation lists every node the encoder knows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import build_fixture
from goprobe import GoBinary
from goprobe.backends.interpreter import program as P
from goprobe.ir.snapshot import compile_snapshot

CAPTURES = {"main.maps": ["small", "len(big)", "byStruct"], "main.(*Server).PointerMethod": ["s.Name", "path"],
            "main.interfaces": ["eStruct", "eInt"], "main.inlinedPark": ["n", "offset"]}


@pytest.fixture(scope="module")
def plan():
    from conftest import VERSIONS

    with GoBinary(build_fixture("kinds", VERSIONS[-1], "opt")) as b:
        return compile_snapshot(b, CAPTURES, goroutine_filter="main.maps")


def test_plans_round_trip(go_version, build_mode):
    with GoBinary(build_fixture("kinds", go_version, build_mode)) as b:
        names = {k: v for k, v in CAPTURES.items() if build_mode == "debug" or k != "main.inlinedPark"}
        p = compile_snapshot(b, names)
    data = P.lower(p)
    assert data.startswith(P.MAGIC)
    back = P.load(data)
    assert back == p
    assert back.types.by_runtime_type == p.types.by_runtime_type


def test_program_is_compact(plan):
    data = P.lower(plan)
    # The unwind table of every function dominates; the rest is a few kilobytes.
    rows = sum(len(r) for _lo, _hi, r in plan.unwind)
    assert len(data) < 16 * rows + 64 * 1024


@given(st.integers(min_value=0, max_value=10**9), st.binary(min_size=1, max_size=8))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_damaged_programs_are_refused_or_decode(plan, where, junk):
    data = bytearray(P.lower(plan))
    at = where % len(data)
    data[at:at + len(junk)] = junk
    try:
        P.load(bytes(data))
    except P.ProgramError:
        pass


def test_truncated_programs_are_refused(plan):
    data = P.lower(plan)
    for cut in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(P.ProgramError):
            P.load(data[:cut])


def test_wrong_version_is_named(plan):
    data = bytearray(P.lower(plan))
    data[8] = P.VERSION + 1
    with pytest.raises(P.ProgramError, match=f"version {P.VERSION + 1}"):
        P.load(bytes(data))


def test_documentation_lists_every_node():
    doc = (Path(__file__).parent.parent / "docs" / "interpreter-program.md").read_text()
    for tag, cls in enumerate(P.NODES, start=1):
        fields = ", ".join(f.name for f in P._fields(cls))
        assert f"| {tag} | {cls.__name__} | {fields} |" in doc, cls.__name__


def test_verifier_rejects_malformed_plans(plan):
    import attrs

    from goprobe.ir import values as V
    from goprobe.ir.verify import VerificationError, verify

    entries = list(plan.types.entries)
    i = next(k for k, e in enumerate(entries) if isinstance(e.shape, V.Struct) and e.shape.fields)
    f0 = entries[i].shape.fields[0]
    bad_field = attrs.evolve(f0, offset=entries[i].size + 8)
    entries[i] = attrs.evolve(entries[i], shape=V.Struct((bad_field,) + entries[i].shape.fields[1:]))
    bad_types = V.TypeTable(tuple(entries), plan.types.closures)
    with pytest.raises(VerificationError, match="outside the struct"):
        verify(attrs.evolve(plan, types=bad_types))
    with pytest.raises(VerificationError, match="max_frames"):
        verify(attrs.evolve(plan, max_frames=0))
    with pytest.raises(VerificationError, match="sorted"):
        verify(attrs.evolve(plan, unwind=tuple(reversed(plan.unwind))))
