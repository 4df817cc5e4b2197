"""Real programs nobody here wrote (issue 19): ``go tool trace`` (cmd/trace) built from each release's own
source with default flags, serving a trace. Every type of the binary lays out, a snapshot of every parameter
and local of every function on the stacks decodes on both backends and the two agree. And the toolchain's own
``go`` command in the middle of a build, with its compiler children: one bundle."""

from __future__ import annotations

import collections
import urllib.request

import pytest

from conftest import VERSIONS
from ebpf_support import requires_bpf
from test_ebpf_snapshot import documents_of_one_pause
from goprobe import open_binary
from goprobe.ir import values as V
from goprobe.snapshot import take_snapshot
from goprobe.testing.corpus import go_build_in_progress, request_for_stacks, trace_server


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"go{v}")
def trace(request):
    with trace_server(request.param) as proc:
        with urllib.request.urlopen(proc.url, timeout=30) as page:  # it serves: the handlers have run once
            assert page.status == 200
        yield proc


def test_every_type_of_the_binary_lays_out(trace):
    """The type table of EVERY named DWARF type builds and verifies; only types too large to read as one
    value are degraded, and maps whose keys or elements Go stores behind a pointer are laid out, not
    degraded."""
    with open_binary(trace.binary) as b:
        tb = V.TypeTableBuilder(b)
        for off in b.types.name_index().values():
            tb.add(b.types.get(off))
        table = tb.build()
    entries = table.entries
    assert len(entries) > 5000
    assert [i for i in range(len(entries)) if V.entry_problem(entries, i)] == []
    reasons = collections.Counter(e.shape.reason.split(" (")[0] for e in entries
                                  if isinstance(e.shape, V.Opaque) and e.shape.reason)
    assert set(reasons) <= {"too large to capture"}, reasons
    maps = [e for e in entries if isinstance(e.shape, (V.SwissMap, V.ClassicMap))]
    release = tuple(map(int, trace.binary.name.split("-")[1].split(".")[:2]))
    assert all(isinstance(e.shape, V.SwissMap if release >= (1, 24) else V.ClassicMap) for e in maps)
    indirect = [e.name for e in maps if e.shape.key_indirect or e.shape.elem_indirect]
    if release >= (1, 22):  # its trace parser keys stacks by [128]uint64 (1 KiB): stored behind a pointer
        assert any(name.startswith("map[[128]uint64]") for name in indirect), indirect


def _same(a, b) -> bool:
    """Equal values, where a pointer one side shows as seen before (``@cycle``) may be written out on the
    other: the eBPF program leaves large parts to the interpreter, whose walk starts a fresh "seen" set."""
    if isinstance(a, dict) and isinstance(b, dict):
        if (a.get("@cycle") or b.get("@cycle")) and a.get("@addr") == b.get("@addr"):
            return True
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _where(a, b, path: str = "") -> list[str]:
    """The paths at which two values differ (for failure messages)."""
    if isinstance(a, dict) and isinstance(b, dict) and not _same(a, b):
        if a.keys() != b.keys() and not (a.get("@cycle") or b.get("@cycle")):
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())[:5]}"]
        return [w for k in a if k in b for w in _where(a[k], b[k], f"{path}.{k}")] or [path]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [w for i, (x, y) in enumerate(zip(a, b)) for w in _where(x, y, f"{path}[{i}]")]
    return [] if _same(a, b) else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


def _values(result) -> dict:
    proc = result["processes"][0]
    return {(g["goid"], i, f["function"], name): v for g in proc["goroutines"] for i, f in enumerate(g["frames"])
            for name, v in (f.get("variables") or {}).items()}


@requires_bpf
def test_every_variable_on_the_stacks_decodes_and_both_backends_agree(trace):
    with open_binary(trace.binary) as b:
        req = request_for_stacks(trace.pid, b)
    assert sum(map(len, req.values())) >= 80, req
    # Through the public path (the eBPF backend's is the one checked below, in one pause with the other)...
    for backend in ("interp",):
        proc = take_snapshot([trace.pid], req, backend=backend)["processes"][0]
        assert proc["backend"] == backend
        assert "errors" not in proc, proc["errors"]
        assert len(proc["goroutines"]) >= 3
        assert any(f["function"] == "main.main" for g in proc["goroutines"] for f in g["frames"])
    # ...and, to compare them (the runtime's own state moves between two pauses), both in one pause.
    with open_binary(trace.binary) as b:
        # (no program is found too large: captures that lead to other objects go to the copier from the start)
        ebpf, interp = documents_of_one_pause(b, trace.pid, req, loads_whole=True)
    a, b = _values({"processes": [interp]}), _values({"processes": [ebpf]})
    assert a.keys() == b.keys()
    assert len(a) >= 100
    different = {k: (a[k], b[k]) for k in a if not _same(a[k], b[k])}
    assert not different, {k: _where(*v)[:5] for k, v in different.items()}
    # Most values are read: the server's goroutines are parked in ordinary code.
    unavailable = sum(isinstance(v, dict) and "@unavailable" in v for v in a.values())
    assert unavailable < len(a)
    # The server still works.
    with urllib.request.urlopen(trace.url, timeout=30) as page:
        assert page.status == 200


def test_inspect_of_every_function_succeeds(trace):
    """`goprobe inspect BINARY FUNCTION` of every function with code in the binary (newest release; a sample
    of 1500 on the others: benchmarks/bench_real.py does them all): a report, or (for code without debug
    info: assembly, or a function only ever inlined) a GoprobeError naming the cause."""
    from goprobe.errors import GoprobeError
    from goprobe.inspect import function_report

    reported = refused = 0
    with open_binary(trace.binary) as b:
        names = sorted(set(b.function_names()))
        assert len(names) > 5000
        if trace.binary.name.split("-")[1] != VERSIONS[-1]:  # every function on the newest release only
            names = _function_sample(b, 1500)
        for name in names:
            try:
                report = function_report(b, name)
            except GoprobeError as exc:
                assert str(exc), name
                refused += 1
                continue
            assert report["functions"] and all(f["name"] for f in report["functions"]), name
            reported += 1
    assert reported > 0.9 * len(names), (reported, refused)


def _function_sample(b, n: int, seed: int = 19) -> list[str]:
    """*n* function names of the binary, spread over its packages (a fixed seed: the same sample each run)."""
    import random

    names = sorted({name for name in b.function_names() if "." in name and not name.startswith("type:")})
    return random.Random(seed).sample(names, min(n, len(names)))


@requires_bpf
def test_event_programs_for_a_sample_of_functions_load_or_say_why(trace):
    """Entry probes capturing every parameter, on a sample of functions of the real program (methods,
    generic code, closures, runtime internals): each program verifies in the kernel, or the request is
    refused with a one-line reason (a function only ever inlined, code without debug info). A program costs
    about a second to generate, compile and verify: 12 functions a release here, 200 in
    benchmarks/bench_real.py."""
    from goprobe.testing.requests import measure_event_request

    n = 12
    with open_binary(trace.binary) as b:
        request = {}
        for name in _function_sample(b, n):
            fns = b.functions(name)
            params = sorted({v.name for fn in fns for v in fn.variables
                             if v.role == "param" and v.name and "." not in v.name and v.name[0] != "~"})
            request[name] = params
        figures = measure_event_request(b, request)
    by_function: dict[str, list] = {}
    for f in figures:
        by_function.setdefault(f.function, []).append(f)
    assert len(by_function) == len(request) == n
    loaded = [fn for fn, fs in by_function.items() if all(f.error is None for f in fs)]
    refused = {fn: fs[0].error for fn, fs in by_function.items() if fn not in loaded}
    for fn, why in refused.items():
        assert "\n" not in why.strip() or "verifier" in why, (fn, why)
        assert any(k in why for k in ("inlined", "unknown function", "no debug", "not in")), (fn, why)
    assert len(loaded) >= n // 2, refused


@requires_bpf
def test_events_fire_on_the_real_server(trace):
    """Probes on the real server's HTTP path fire when it serves a request, with the request's URL path."""
    from goprobe.events import stream_events

    with stream_events([trace.pid], "net/http.serverHandler.ServeHTTP", ["req.URL.Path"], max_events=1,
                       duration_s=30) as s:
        with urllib.request.urlopen(trace.url + "/usertasks", timeout=30) as page:
            assert page.status == 200
        events = list(s)
    assert [e["values"]["req.URL.Path"] for e in events] == ["/usertasks"]


@pytest.mark.parametrize("version", sorted({VERSIONS[0], VERSIONS[-1]}), ids=lambda v: f"go{v}")
def test_a_live_go_build_is_one_bundle(version):
    """``go build`` caught while its compiler runs: the ``go`` command and its children (the wheel's own
    binaries, built without DWARF) in one snapshot. Each is taken (stacks from the pclntab) or, if it exited
    meanwhile, reported gone; nothing sinks the bundle. (The oldest and newest release here: every release's
    stripped binaries are covered by test_stripped.py.)"""
    with go_build_in_progress(version) as (go, kids):
        result = take_snapshot([go.pid, *kids], {}, backend="auto")
    entries = {p["pid"]: p for p in result["processes"]}
    assert list(entries) == [go.pid, *kids]
    main = entries[go.pid]
    assert main["status"] == "ok" and main["debug_info"] == "none", main
    assert any(f["function"] == "main.main" for g in main["goroutines"] for f in g["frames"])
    assert all(f["file"] != "?" and f["line"] > 0 for g in main["goroutines"] for f in g["frames"])
    taken = [entries[k] for k in kids if entries[k]["status"] == "ok"]
    assert all(entries[k]["error"]["kind"] == "PROCESS_GONE" for k in kids if entries[k]["status"] != "ok")
    assert taken, "the compiler exited before it was taken: give it a larger package"
    assert any(f["function"].startswith("cmd/compile/") for p in taken for g in p["goroutines"] for f in g["frames"])
