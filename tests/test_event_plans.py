"""Event requests compile to probe sites with captures and conditions, on every Go version and build mode."""

from __future__ import annotations

import pytest

from conftest import build_fixture
from goprobe import GoBinary
from goprobe.errors import ExpressionError, UnknownFunctionError
from goprobe.ir import events as EV
from goprobe.request import EventRequest


def test_entry_return_and_line_sites(go_version, build_mode):
    with GoBinary(build_fixture("tiny", go_version, build_mode)) as b:
        fn = b.function("main.(*Counter).Add")
        code = b.code.for_function(fn)
        entry = EV.compile_event(b, EventRequest.build("main.(*Counter).Add", ["c.Name", "n"], when="n > 0"))
        assert [s.pc for s in entry.sites] == [code.prologue_end]
        site = entry.sites[0]
        assert [c.label for c in site.captures] == ["c.Name", "n"]
        assert all(c.type is not None for c in site.captures)
        assert isinstance(site.condition, EV.Compare) and site.condition.op == ">"
        ret = EV.compile_event(b, EventRequest.build("main.(*Counter).Add", [], at_return=True))
        assert [s.pc for s in ret.sites] == list(code.returns)
        line = EV.compile_event(b, EventRequest.build("main.go:26", []))  # total += x
        assert line.sites and {s.pc for s in line.sites} == set(b.pcs_for_line("main.go", 26))
        assert all(b.source_at(s.pc).line == 26 for s in line.sites)


def test_callers_and_logic(newest_version):
    with GoBinary(build_fixture("tiny", newest_version, "debug")) as b:
        plan = EV.compile_event(b, EventRequest.build(
            "main.(*Counter).Add", ["c.Count"], callers={"main.main": ["c.Name", "step"]},
            when='c.Name == "main" && (n >= 1 || !(c.Count != 0))', stack=True))
        assert plan.stack and plan.labels == ("c.Count",)
        assert [c.label for fp in plan.callers for c in fp.captures] == ["c.Name", "step"]
        cond = plan.sites[0].condition
        assert isinstance(cond, EV.Logic) and cond.op == "&&"
        assert isinstance(cond.left, EV.Compare) and cond.left.right == EV.Literal(b"main")
        assert isinstance(cond.right, EV.Logic) and isinstance(cond.right.right, EV.Not)


@pytest.mark.parametrize("when,needle", [
    ('n == "x"', "cannot compare"),
    ("c.Name > 3", "cannot compare"),
    ("nosuch == 1", "nosuch"),
    ("c == 1", "cannot compare"),
])
def test_bad_conditions_are_refused(newest_version, when, needle):
    with GoBinary(build_fixture("tiny", newest_version, "debug")) as b:
        with pytest.raises(ExpressionError, match=needle):
            EV.compile_event(b, EventRequest.build("main.(*Counter).Add", [], when=when))


def test_bad_probes_are_refused(newest_version):
    with GoBinary(build_fixture("tiny", newest_version, "debug")) as b:
        with pytest.raises(UnknownFunctionError):
            EV.compile_event(b, EventRequest.build("main.(*Countr).Add", []))
        with pytest.raises(ExpressionError, match="variables here"):
            EV.compile_event(b, EventRequest.build("main.(*Counter).Add", ["nosuch"]))
        with pytest.raises(UnknownFunctionError):
            EV.compile_event(b, EventRequest.build("nosuch.go:3", []))


def test_a_line_without_code_or_a_misspelt_file_is_refused_with_the_fix(newest_version):
    """A probe on a comment line would wait forever for hits: refused, naming the nearest lines with code;
    a misspelt file name suggests the right one."""
    from goprobe.errors import RequestError

    with GoBinary(build_fixture("calls", newest_version, "opt")) as b:
        code = b.lines_with_code("main.go")
        assert 38 not in code and code, code  # line 38 of the calls fixture is a comment
        with pytest.raises(RequestError, match=r"no code at main.go:38.*nearest lines with code: main.go:\d+"):
            EV.compile_event(b, EventRequest.build("main.go:38", []))
        after = min(n for n in code if n > 38)
        assert EV.compile_event(b, EventRequest.build(f"main.go:{after}", [])).sites
        with pytest.raises(UnknownFunctionError, match="did you mean 'main.go:31'"):
            EV.compile_event(b, EventRequest.build("mian.go:31", []))
