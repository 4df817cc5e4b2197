"""Snapshot and event requests: validation, CLI spec forms, and the .toml/.json file forms."""

from __future__ import annotations

import json
from pathlib import Path
import re

import attrs
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from goprobe.errors import ExpressionSyntaxError, RequestError
from goprobe.expr import Binary, Ident, IntLit, parse, unparse
from goprobe.request import (
    Capture, EventRequest, Limits, ProbePoint, SnapshotRequest, load_request_file, parse_capture_spec,
    request_from_dict, request_to_dict, split_expressions,
)

from test_expr import exprs

FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DOCS = Path(__file__).parent.parent / "docs" / "requests.md"
LIMIT_NAMES = [a.name for a in attrs.fields(Limits)]


def request_error(fn, *args, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------------------------------ values

def test_limits_defaults():
    assert Limits() == Limits(512, 512, 1, 64, 4, 512, 100_000, 64 * 1024 * 1024)


@pytest.mark.parametrize("name", LIMIT_NAMES)
@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "8", None])
def test_limits_must_be_positive_integers(name, bad):
    err = request_error(Limits, **{name: bad})
    assert err.key == name and "positive integer" in str(err)


def test_capture_parse_keeps_text_and_tree():
    c = Capture.parse("  len(s.conns) ")
    assert c.text == "len(s.conns)" and unparse(c.expr) == "len(s.conns)"
    with pytest.raises(ExpressionSyntaxError):
        Capture.parse("len(")


def test_snapshot_build():
    r = SnapshotRequest.build({"main.(*Server).handle": ["req.URL.Path", "s.cfg", "len(s.conns)"]},
                              limits=Limits(string_bytes=8), goroutine_filter="main.(*Server).serve")
    assert [c.text for c in r.functions["main.(*Server).handle"]] == ["req.URL.Path", "s.cfg", "len(s.conns)"]
    assert r.limits.string_bytes == 8 and r.goroutine_filter == "main.(*Server).serve" and r.all_goroutines
    assert r == SnapshotRequest.build({"main.(*Server).handle": ["req.URL.Path", "s.cfg", "len(s.conns)"]},
                                      limits=Limits(string_bytes=8), goroutine_filter="main.(*Server).serve")
    assert hash(r) == hash(attrs.evolve(r))
    with pytest.raises(TypeError):
        r.functions["main.main"] = ()  # immutable
    assert SnapshotRequest().functions == {}  # stacks of every goroutine, nothing captured


def test_snapshot_validation():
    assert request_error(SnapshotRequest.build, {"": ["x"]}).key == "functions"
    assert request_error(SnapshotRequest.build, {"main.f": "x"}).key == "functions['main.f']"
    assert request_error(SnapshotRequest.build, {"main.f": [1]}).key == "functions['main.f']"
    assert request_error(SnapshotRequest.build, {}, all_goroutines=False).key == "all_goroutines"
    assert request_error(SnapshotRequest.build, {"f": []}, goroutine_filter=" ").key == "goroutine_filter"
    with pytest.raises(ExpressionSyntaxError):
        SnapshotRequest.build({"main.f": ["x +"]})


@pytest.mark.parametrize("spec, at_return, expected", [
    ("main.(*Server).handle", False, ProbePoint("entry", function="main.(*Server).handle")),
    ("main.(*Server).handle", True, ProbePoint("return", function="main.(*Server).handle")),
    ("server.go:212", False, ProbePoint("line", file="server.go", line=212)),
    ("/src/app/server.go:7", False, ProbePoint.at_line("/src/app/server.go", 7)),
    ("type:.eq.main.T", False, ProbePoint.entry("type:.eq.main.T")),
    ("main.Map[go.shape.int].Get", True, ProbePoint.at_return("main.Map[go.shape.int].Get")),
])
def test_probe_point_parse(spec, at_return, expected):
    assert ProbePoint.parse(spec, at_return=at_return) == expected


def test_probe_point_validation():
    assert request_error(ProbePoint.parse, "server.go:12", at_return=True).key == "probe"
    assert request_error(ProbePoint.parse, "server.go:0").key == "probe.line"
    assert request_error(ProbePoint, "entry").key == "probe.function"
    assert request_error(ProbePoint, "return", function="f", line=3).key == "probe"
    assert request_error(ProbePoint, "line", file="x.go").key == "probe.line"
    assert request_error(ProbePoint, "line", line=3).key == "probe.file"
    assert request_error(ProbePoint, "line", function="f", file="x.go", line=3).key == "probe.function"
    assert request_error(ProbePoint, "exit", function="f").key == "probe"
    assert str(ProbePoint.at_return("main.f")) == "return of main.f" and str(ProbePoint.at_line("a.go", 3)) == "a.go:3"


def test_event_request_build():
    ev = EventRequest.build("main.(*Server).handle", ["req.URL.Path"], when='req.Method == "POST"',
                            callers={"main.(*Server).serve": ["s.addr"]}, stack=True, max_events=10,
                            duration_s=1.5, rate_limit_per_s=100)
    assert ev.probe == ProbePoint.entry("main.(*Server).handle")
    assert ev.condition == parse('req.Method == "POST"')
    assert [c.text for c in ev.callers["main.(*Server).serve"]] == ["s.addr"]
    assert EventRequest.build("f", at_return=True).probe.kind == "return"
    assert EventRequest(ProbePoint.entry("f"), condition=Binary("<", Ident("n"), IntLit(3))).condition is not None
    hash(ev)


@pytest.mark.parametrize("kwargs, key", [
    ({"when": "n"}, "when"),
    ({"when": "len(x)"}, "when"),
    ({"when": "-n"}, "when"),
    ({"max_events": 0}, "max_events"),
    ({"max_events": 1.0}, "max_events"),
    ({"duration_s": 0}, "duration_s"),
    ({"duration_s": float("inf")}, "duration_s"),
    ({"duration_s": True}, "duration_s"),
    ({"rate_limit_per_s": -5}, "rate_limit_per_s"),
    ({"stack": 1}, "stack"),
    ({"callers": {"": ["x"]}}, "callers"),
])
def test_event_request_validation(kwargs, key):
    err = request_error(EventRequest.build, "main.f", ["x"], **kwargs)
    assert err.key == key


def test_non_condition_message_suggests_a_fix():
    assert 'e.g. "done == true"' in str(request_error(EventRequest.build, "f", when="done"))


# ------------------------------------------------------------------------------------------ CLI specs

@pytest.mark.parametrize("spec, function, texts", [
    ("main.(*Server).handle:req.URL.Path,s.cfg", "main.(*Server).handle", ["req.URL.Path", "s.cfg"]),
    ('main.f: m["a,b"] , len(x) ,x.(map[string]int)', "main.f", ['m["a,b"]', "len(x)", "x.(map[string]int)"]),
    ("main.f:x.(func(int, string) error),y", "main.f", ["x.(func(int, string) error)", "y"]),
    ("main.f:m[`,\"`],m[\"\\\",\"]", "main.f", ["m[`,\"`]", 'm["\\",\"]']),
    ("main.(*List[go.shape.int,go.shape.string]).Push:l.n", "main.(*List[go.shape.int,go.shape.string]).Push",
     ["l.n"]),
    ("type:.eq.main.T:p.x", "type:.eq.main.T", ["p.x"]),
    ("main.main", "main.main", []),
    (" main.f : x ", "main.f", ["x"]),
])
def test_parse_capture_spec(spec, function, texts):
    fn, caps = parse_capture_spec(spec)
    assert fn == function
    assert [c.text for c in caps] == texts
    assert all(c.expr == parse(c.text) for c in caps)


def test_capture_spec_errors():
    assert request_error(parse_capture_spec, ":x").key == "function"
    assert request_error(parse_capture_spec, "main.f:x,,y").key == "expressions"
    assert request_error(parse_capture_spec, "main.f:x,").key == "expressions"
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_capture_spec("main.f:x,len(y")
    assert info.value.text == "len(y" and info.value.column == 6


def test_split_expressions():
    assert split_expressions('a, m["x,y"], f[1,2], (a,b), `,`') == ["a", 'm["x,y"]', "f[1,2]", "(a,b)", "`,`"]
    assert split_expressions('"unterminated, x') == ['"unterminated, x']
    assert split_expressions("a), b") == ["a)", "b"]  # unbalanced: the parser reports it


seg = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
typ = st.from_regex(r"[A-Z][A-Za-z0-9]{0,5}", fullmatch=True)
shape = st.lists(st.sampled_from(["go.shape.int", "go.shape.string", "go.shape.*uint8", "go.shape.[]int",
                                  "go.shape.map[string]int", "..."]), min_size=1, max_size=3)
generic = st.one_of(st.just(""), shape.map(lambda a: "[" + ",".join(a) + "]"))
function_names = st.builds(
    lambda pkg, recv, name, closure: f"{pkg}.{recv}{name}{closure}",
    st.one_of(seg, st.lists(seg, min_size=1, max_size=3).map(lambda p: "example.com/" + "/".join(p))),
    st.one_of(st.just(""), st.tuples(typ, generic).map(lambda t: f"(*{t[0]}{t[1]}).")),
    st.tuples(st.one_of(seg, typ), generic).map("".join),
    st.sampled_from(["", ".func1", ".func2.1", "-fm"]),
)


@FAST
@given(function_names, st.lists(exprs, min_size=1, max_size=4), st.sampled_from([",", ", ", " , "]))
def test_capture_spec_round_trip(function, expressions, sep):
    texts = [unparse(e) for e in expressions]
    fn, caps = parse_capture_spec(f"{function}:{sep.join(texts)}")
    assert fn == function
    assert [c.expr for c in caps] == expressions
    assert [c.text for c in caps] == texts


@FAST
@given(function_names)
def test_probe_point_parse_keeps_function_names(function):
    assert ProbePoint.parse(function) == ProbePoint.entry(function)
    assert ProbePoint.parse(function, at_return=True) == ProbePoint.at_return(function)


# ------------------------------------------------------------------------------------------ file forms

def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOCS.read_text(), re.DOTALL)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_documented_examples_load(tmp_path):
    toml_blocks, json_blocks = doc_blocks("toml"), doc_blocks("json")
    assert len(toml_blocks) == 3 and len(json_blocks) == 2
    loaded = [load_request_file(write(tmp_path, f"t{i}.toml", b)) for i, b in enumerate(toml_blocks)]
    snap, event, line_event = loaded
    # Each JSON example is the same request as the TOML one before it.
    assert load_request_file(write(tmp_path, "s.json", json_blocks[0])) == snap
    assert load_request_file(write(tmp_path, "e.json", json_blocks[1])) == event

    assert isinstance(snap, SnapshotRequest)
    assert list(snap.functions) == ["main.(*Server).handle", "main.main"]
    assert [c.text for c in snap.functions["main.(*Server).handle"]] == ["req.URL.Path", "len(s.conns)"]
    assert snap.limits == Limits(string_bytes=256) and snap.goroutine_filter == "main.(*Server).serve"

    assert isinstance(event, EventRequest)
    assert event.probe == ProbePoint.entry("main.(*Server).handle")
    assert event.condition == parse('req.Method == "POST" && len(req.Header) > 0')
    assert (event.stack, event.max_events, event.duration_s, event.rate_limit_per_s) == (True, 100, 30, 1000)
    assert [c.text for c in event.callers["main.(*Server).serve"]] == ["s.addr"]
    assert event.limits == Limits(collection_bytes=1024)
    assert line_event.probe == ProbePoint.at_line("server.go", 212)


def test_documented_limit_defaults_match():
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", DOCS.read_text(), re.MULTILINE))
    assert {k: int(v) for k, v in rows.items()} == attrs.asdict(Limits())


def test_return_probe_and_duplicate_functions(tmp_path):
    path = write(tmp_path, "r.toml", """
kind = "events"
probe = {function = "main.f", at = "return"}
expressions = ["~r0"]
""")
    assert load_request_file(path).probe == ProbePoint.at_return("main.f")
    path = write(tmp_path, "d.json", json.dumps({"kind": "snapshot", "capture": [
        {"function": "main.f", "expressions": ["a"]}, {"function": "main.f", "expressions": ["b"]},
        {"function": "main.g"}]}))
    req = load_request_file(path)
    assert [c.text for c in req.functions["main.f"]] == ["a", "b"] and req.functions["main.g"] == ()


@pytest.mark.parametrize("doc, key, words", [
    ({"kind": "snapshot", "limit": {}}, "limit", ["unknown key", "did you mean 'limits'", "all_goroutines"]),
    ({"kind": "snapshot", "limits": {"string_byte": 1}}, "limits.string_byte", ["'string_bytes'"]),
    ({"kind": "snapshot", "limits": {"string_bytes": 0}}, "limits.string_bytes", ["positive"]),
    ({"kind": "snapshot", "limits": {"string_bytes": 1.0}}, "limits.string_bytes", ["integer"]),
    ({"kind": "snapshot", "limits": []}, "limits", ["table"]),
    ({}, "kind", ["missing", 'kind = "snapshot"']),
    ({"kind": "snapshots"}, "kind", ["unknown kind"]),
    ({"kind": "snapshot", "capture": {"function": "f"}}, "capture", ["list"]),
    ({"kind": "snapshot", "capture": [{"expressions": ["x"]}]}, "capture[0]", ["missing key 'function'"]),
    ({"kind": "snapshot", "capture": [{"function": "f", "expression": ["x"]}]}, "capture[0].expression",
     ["did you mean 'expressions'"]),
    ({"kind": "snapshot", "capture": [{"function": "f", "expressions": "x"}]}, "capture[0].expressions", ["list"]),
    ({"kind": "snapshot", "capture": [{"function": "f", "expressions": ["x", "len(y"]}]},
     "capture[0].expressions[1]", ['expected ")" at column 6']),
    ({"kind": "snapshot", "capture": [{"function": "", "expressions": []}]}, "capture[0].function", ["empty"]),
    ({"kind": "snapshot", "all_goroutines": "yes"}, "all_goroutines", ["true or false"]),
    ({"kind": "snapshot", "all_goroutines": False}, "all_goroutines", ["nothing"]),
    ({"kind": "snapshot", "goroutine_filter": 3}, "goroutine_filter", ["string"]),
    ({"kind": "events"}, "probe", ["missing"]),
    ({"kind": "events", "probe": {}}, "probe", ["function or file and line"]),
    ({"kind": "events", "probe": {"function": "f", "at": "exit"}}, "probe.at", ['"entry" or "return"']),
    ({"kind": "events", "probe": {"file": "x.go", "line": 3, "at": "entry"}}, "probe.at", ["function"]),
    ({"kind": "events", "probe": {"file": "x.go"}}, "probe.line", ["line number"]),
    ({"kind": "events", "probe": {"function": "f", "line": 3}}, "probe", ["not a file or line"]),
    ({"kind": "events", "probe": {"function": "f"}, "when": "n"}, "when", ["not a condition"]),
    ({"kind": "events", "probe": {"function": "f"}, "when": "n =="}, "when", ["invalid expression"]),
    ({"kind": "events", "probe": {"function": "f"}, "max_events": 0}, "max_events", ["positive"]),
    ({"kind": "events", "probe": {"function": "f"}, "duration_s": "5s"}, "duration_s", ["number"]),
    ({"kind": "events", "probe": {"function": "f"}, "capture": []}, "capture", ["unknown key", "expressions"]),
    ({"kind": "events", "probe": {"function": "f"}, "callers": [{"function": "g", "expressions": [1]}]},
     "callers[0].expressions[0]", ["string"]),
    ([1], "top level", ["table"]),
])
def test_file_errors_name_file_key_and_fix(tmp_path, doc, key, words):
    path = write(tmp_path, "req.json", json.dumps(doc))
    err = request_error(load_request_file, path)
    assert (err.file, err.key) == (str(path), key)
    assert str(err).startswith(f"{path}: {key}: ")
    for w in words:
        assert w in str(err), str(err)


def test_file_level_errors(tmp_path):
    assert "unsupported file type '.yaml'" in str(request_error(load_request_file, write(tmp_path, "r.yaml", "")))
    assert "cannot read" in str(request_error(load_request_file, tmp_path / "missing.toml"))
    err = request_error(load_request_file, write(tmp_path, "bad.toml", 'kind = "snapshot"\nkind = 1\n'))
    assert "invalid TOML" in str(err) and err.file.endswith("bad.toml")
    err = request_error(load_request_file, write(tmp_path, "bad.json", '{"kind": "snapshot",}'))
    assert "invalid JSON" in str(err) and "line 1" in str(err)
    err = request_error(load_request_file, write(tmp_path, "dup.json", '{"kind": "snapshot", "kind": "events"}'))
    assert "duplicate key 'kind'" in str(err)
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'kind = "\xe9"')
    assert "not UTF-8" in str(request_error(load_request_file, path))


# ------------------------------------------------------------------------------------------ round trips

captures_st = st.lists(exprs.map(lambda e: Capture.parse(unparse(e))), max_size=3).map(tuple)
caller_maps = st.dictionaries(function_names, captures_st, max_size=3)
limits_st = st.builds(Limits, **{n: st.integers(1, 2**40) for n in LIMIT_NAMES})
probes = st.one_of(
    function_names.map(ProbePoint.entry), function_names.map(ProbePoint.at_return),
    st.builds(ProbePoint.at_line, st.from_regex(r"[a-z/]{1,12}\.go", fullmatch=True), st.integers(1, 10**6)),
)
conditions = exprs.map(lambda e: e if isinstance(e, Binary) else Binary("==", e, IntLit(1)))
snapshots = st.builds(SnapshotRequest, caller_maps.filter(bool), limits_st, st.none() | function_names,
                      st.booleans())
events = st.builds(EventRequest, probes, captures_st, caller_maps, st.none() | conditions, st.booleans(),
                   limits_st, st.none() | st.integers(1, 10**9),
                   st.none() | st.floats(0.001, 1e6) | st.integers(1, 10**6), st.none() | st.integers(1, 10**6))


def to_toml(doc: dict) -> str:
    """A minimal TOML writer for request documents (strings, numbers, booleans, lists, nested tables)."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):  # JSON's escapes are valid TOML; DEL must be escaped in TOML
            return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
    return "\n".join(f"{k} = {value(v)}" for k, v in doc.items()) + "\n"


@settings(FAST, max_examples=80)
@given(st.one_of(snapshots, events), st.sampled_from(["json", "toml"]))
def test_file_round_trip(tmp_path_factory, req, fmt):
    doc = request_to_dict(req)
    assert request_from_dict(json.loads(json.dumps(doc))) == req
    path = tmp_path_factory.mktemp("rt") / f"req.{fmt}"
    path.write_text(json.dumps(doc) if fmt == "json" else to_toml(doc), encoding="utf-8")
    assert load_request_file(path) == req


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.sampled_from(
        ["snapshot", "events", "entry", "return", "main.f", "x.go", "x", "x ==", "n > 1", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["kind", "probe", "function", "at", "file", "line", "expressions", "capture", "callers",
                         "when", "limits", "string_bytes", "stack", "max_events", "duration_s", "all_goroutines",
                         "goroutine_filter", "bogus"]), inner, max_size=5),
    max_leaves=12)


@FAST
@given(json_values)
def test_arbitrary_documents_only_raise_request_errors(doc):
    try:
        req = request_from_dict(doc, file="fuzz.json")
    except RequestError as err:
        assert err.file == "fuzz.json" and err.key
    else:
        assert request_from_dict(request_to_dict(req)) == req


@FAST
@given(st.text(max_size=30))
def test_arbitrary_capture_specs_only_raise_goprobe_errors(spec):
    try:
        fn, caps = parse_capture_spec(spec)
    except (RequestError, ExpressionSyntaxError):
        pass
    else:
        assert fn and fn == fn.strip() and all(isinstance(c, Capture) for c in caps)
