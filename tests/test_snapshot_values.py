"""Snapshot values against the truth the kinds fixture reports, and goroutine stacks against the Go runtime's
own traceback, on every Go version and build mode (interpreter backend)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import build_fixture
from goprobe import GoBinary
from goprobe.request import Limits
from goprobe.snapshot import take_snapshot
from goprobe.testing.fixture_process import running


def to_truth_form(v, t, b):
    """goprobe's JSON for a value of DWARF type *t* → the fixture's truth encoding (which wraps pointees and
    dynamic values in "value", lists maps as sorted entries, channels as len/cap, funcs as {"func"})."""
    if t.kind in ("slice", "array") and t.elem is not None and t.elem.kind == "uint8":
        v = _bytes_as_list(v)  # goprobe shows bytes like a string; the truth lists them
    if v is None or not isinstance(v, (dict, list)):
        return v
    if isinstance(v, dict) and "@unavailable" in v:
        return v
    k = t.kind
    if k == "ptr":
        if v.get("@cycle"):
            return {"@addr": v["@addr"]}
        inner = v["@value"] if "@value" in v else {x: y for x, y in v.items() if not x.startswith("@")}
        return {"@addr": v["@addr"], "value": to_truth_form(inner, t.elem, b)}
    if k == "interface":
        dyn = b.type_named(v["@type"])
        inner = v["@value"] if "@value" in v else {x: y for x, y in v.items() if not x.startswith("@")}
        return {"@type": v["@type"], "value": to_truth_form(inner, dyn, b)}
    if k == "struct":
        return {f.name: to_truth_form(v[f.name], t.field_type(f), b) for f in t.fields}
    if k in ("slice", "array"):
        if isinstance(v, dict):  # truncated
            return {"len": v["@len"], "cap": v.get("@cap"), "first": [to_truth_form(x, t.elem, b) for x in
                                                                     v["@value"][:5]]}
        return [to_truth_form(x, t.elem, b) for x in v]
    if k == "map":
        if "@entries" in v:
            n, entries = v["@len"], v["@entries"]
        elif "@value" in v:
            n, entries = v["@len"], list(v["@value"].items())
        else:
            n, entries = len(v), list(v.items())
        if n > 20:
            return {"len": n}
        pairs = [[to_truth_form(a, t.key, b), to_truth_form(c, t.elem, b)] for a, c in entries]
        return {"len": n, "entries": sorted(pairs, key=lambda e: json.dumps(e[0], sort_keys=True))}
    if k == "chan":
        return {"len": v["len"], "cap": v["cap"]}
    if k == "func":
        return {"func": v["@func"]}
    return v


def _bytes_as_list(v):
    if isinstance(v, str):
        return list(v.encode())
    if isinstance(v, dict) and set(v) == {"@hex"}:
        return list(bytes.fromhex(v["@hex"]))
    if isinstance(v, dict) and "@value" in v:
        return {**v, "@value": _bytes_as_list(v["@value"])}
    return v


def _norm_fn(name: str) -> str:
    return re.sub(r"\[[^\]]*\]", "[...]", name)


@pytest.fixture
def kinds_snapshot(go_version, build_mode):
    return _kinds_snapshot(build_fixture("kinds", go_version, build_mode))


def _kinds_snapshot(binary):
    with GoBinary(binary, use_cache=False) as b, running(binary) as proc:
        truth = proc.truth
        request: dict[str, list[str]] = {}
        optimised_out = []
        for v in truth["variables"]:
            names = {x.name for fn in b.functions(v["func"]) for x in fn.variables} | {
                x.name for _c, call in b.inlined_copies(v["func"].replace("[...]", "")) for x in call.variables}
            if v["name"] in names:
                request.setdefault(v["func"], [])
                if v["name"] not in request[v["func"]]:
                    request[v["func"]].append(v["name"])
            else:
                optimised_out.append((v["func"], v["name"]))
        limits = Limits(string_bytes=1 << 16, collection_bytes=4096, map_entries=1 << 12)
        snap = take_snapshot([proc.pid], request, binary=b, limits=limits)
        types = {(v["func"], v["name"]): _var_type(b, v["func"], v["name"]) for v in truth["variables"]
                 if (v["func"], v["name"]) not in optimised_out}
    return truth, snap["processes"][0], optimised_out, types, binary


def _var_type(b, func, name):
    for fn in b.functions(func):
        for v in fn.variables:
            if v.name == name:
                return b.type_at(v.type_offset)
    for _c, call in b.inlined_copies(func.replace("[...]", "")):
        for v in call.variables:
            if v.name == name:
                return b.type_at(v.type_offset)
    return None


def test_captured_values_equal_the_programs_truth(kinds_snapshot, build_mode):
    _check_values(kinds_snapshot, build_mode)


@pytest.mark.parametrize("mode", ["opt", "debug"])
def test_position_independent_executables(newest_version, mode):
    binary = build_fixture("kinds", newest_version, mode, extra_flags=("-buildmode=pie",))
    with GoBinary(binary, use_cache=False) as b:
        assert b.is_pie
    _check_values(_kinds_snapshot(binary), mode)


def _check_values(kinds_snapshot, build_mode):
    truth, proc, optimised_out, types, binary = kinds_snapshot
    got = {}
    for g in proc["goroutines"]:
        for f in g["frames"]:
            for name, value in f.get("variables", {}).items():
                got[(_norm_fn(f["function"]), name)] = value
    wrong, unavailable = [], []
    for v in truth["variables"]:
        key = (v["func"], v["name"])
        if key in optimised_out:
            continue
        if key not in got:
            unavailable.append((key, "frame not found"))
            continue
        value = got[key]
        if isinstance(value, dict) and "@unavailable" in value:
            unavailable.append((key, value["@unavailable"]))
            continue
        want = v["value"]
        if v.get("encoding") == "decimal-string":
            want = int(want)
        with GoBinary(binary, use_cache=False) as b:
            t = types[key]
            if t.dict_index is not None:  # generic: the real type is the truth's
                t = b.type_named(v["type"])
            got_form = to_truth_form(value, t, b)
        if got_form != want:
            wrong.append((key, got_form, want))
    assert not wrong, wrong[:5]
    if build_mode == "debug":
        assert not unavailable, unavailable
    else:
        # Optimised code keeps some values only in registers of callee frames, drops pointers after their last
        # use and describes some parts wrongly: goprobe must say so rather than guess. Most are still readable.
        assert len(unavailable) <= len(truth["variables"]) // 4, unavailable
        legitimate = ("register", "optimised", "dead at this PC", "Go compiler defect")
        assert all(any(w in why for w in legitimate) for _k, why in unavailable), unavailable


def test_goroutine_stacks_equal_the_runtimes(go_version, build_mode):
    binary = build_fixture("goroutines", go_version, build_mode)
    with GoBinary(binary, use_cache=False) as b, running(binary) as proc:
        truth = proc.truth
        snap = take_snapshot([proc.pid], {}, binary=b)["processes"][0]
    assert_stacks_equal_the_runtimes(snap, truth)


def assert_stacks_equal_the_runtimes(snap: dict, truth: dict) -> None:
    """The goroutines fixture's parked goroutines in a snapshot (one process) have the stacks the runtime
    printed for them (``runtime.Stack``), frame by frame: function, file and line."""
    from test_goroutines_fixture_stacks import parse_stacks

    by_goid = {g["goid"]: g for g in snap["goroutines"]}
    runtime_stacks = parse_stacks(truth["stacks"])
    headers = re.findall(r"^goroutine (\d+) \[", truth["stacks"], re.M)
    assert len(headers) == len(runtime_stacks)
    parked = {g for name, g in truth["goroutines"].items() if name not in ("main", "busy")}
    assert parked <= set(by_goid), parked - set(by_goid)
    compared = 0
    for goid, frames in zip(headers, runtime_stacks):
        goid = int(goid)
        if goid not in parked:
            continue  # only goroutines parked for good keep the stack the truth recorded
        ours = [(f["function"], f["file"], f["line"]) for f in by_goid[goid]["frames"]]
        shown = {fn for fn, *_ in frames}
        # The runtime hides its own frames below the first; keep ours comparable.
        ours = [x for x in ours if x[0] in shown or not x[0].startswith("runtime.")]
        want = [(fn, file, line) for fn, file, line, _off in frames]
        if by_goid[goid]["status"] == "syscall":
            # The runtime starts a syscall goroutine's traceback at the PC where it entered the system call
            # (runtime_entersyscall); goprobe reads the thread's registers, so it also shows the frames inside
            # the call and the entry function's current line. From the entry function's caller on, they agree.
            names = [f for f, *_ in ours]
            assert want[0][0] in names, (goid, want[0], names)
            ours = ours[names.index(want[0][0]) + 1:]
            want = want[1:]
        norm = lambda fs: [(_norm_fn(a), b_, c) for a, b_, c in fs]  # noqa: E731
        if ("...", "", 0) in want:  # the runtime elided the middle of a deep stack: compare both ends
            cut = want.index(("...", "", 0))
            head, tail = want[:cut], want[cut + 1:]
            assert norm(ours[:len(head)]) == norm(head), goid
            assert norm(ours[len(ours) - len(tail):]) == norm(tail), goid
            assert len(ours) > len(head) + len(tail)
        else:
            assert norm(ours[:len(want)]) == norm(want), goid
        compared += 1
    assert compared == len(parked)


def test_closures_show_their_captured_variables(kinds_snapshot, build_mode, go_version):
    """A func value that is a closure shows the variables it captured (where DWARF gives their layout: Go
    1.23+ describes closure contexts, DW_AT_go_closure_offset, at least in -N -l builds)."""
    truth, proc, _out, _types, _binary = kinds_snapshot
    described = build_mode == "debug" and tuple(map(int, go_version.split(".")[:2])) >= (1, 23)
    want = {v["name"]: v["value"] for v in truth["variables"] if v["func"] == "main.funcs"}
    frame = next(f for g in proc["goroutines"] for f in g["frames"] if f["function"] == "main.funcs")
    tag = want["tag"]  # closure() + "!", where the closure returns fmt.Sprintf("%s#%d", s, n)
    s, n = tag[:-1].rsplit("#", 1)
    closure, captured = frame["variables"]["closure"], frame["variables"]["captured"]
    checked = 0
    for value, expected in ((closure, {"s": s, "n": int(n)}), (captured, {"tag": tag, "base": want["base"]})):
        if "@unavailable" in value:
            assert build_mode == "opt", value
            continue
        if described:
            assert "@captured" in value, value
        if "@captured" in value:  # without a layout in DWARF: only @func
            assert value["@captured"] == expected
            checked += 1
    if described:
        assert checked == 2


def _runtime_dump_extras(text: str) -> dict[int, dict]:
    """Per goroutine of a runtime.Stack(all) dump: "created by" (function, goid, line) and "locked to thread"."""
    out: dict[int, dict] = {}
    current = None
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        head = re.match(r"^goroutine (\d+) \[(.*)\]:$", ln)
        if head:
            current = out[int(head.group(1))] = {"locked": "locked to thread" in head.group(2)}
            continue
        made = re.match(r"^created by (\S+)(?: in goroutine (\d+))?$", ln)
        if made and current is not None:
            pos = re.match(r"^\t(.*):(\d+)", lines[i + 1])
            current["created_by"] = (made.group(1), int(made.group(2) or 0), int(pos.group(2)))
    return out


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_created_by_waiting_time_and_locked_threads_equal_the_runtimes(go_version, backend):
    """What Go's own dump prints besides the stack: "created by F in goroutine N" at file:line and "locked to
    thread", for every goroutine parked for good; and how long waiting goroutines have waited (the runtime
    records it at a collection, which the fixture runs once its goroutines block)."""
    import time as _time

    binary = build_fixture("goroutines", go_version, "opt")
    with running(binary) as proc:
        started = _time.monotonic()
        snap = take_snapshot([proc.pid], {}, backend=backend)["processes"][0]
        uptime_ns = (_time.monotonic() - started) * 1e9 + 120e9  # generous: since the fixture started
    truth = proc.truth
    runtime = _runtime_dump_extras(truth["stacks"])
    by_goid = {g["goid"]: g for g in snap["goroutines"]}
    parked = {g for name, g in truth["goroutines"].items() if name not in ("main", "busy")}
    compared = 0
    for goid in parked:
        ours, want = by_goid[goid], runtime[goid]
        c = ours.get("created_by")
        if "created_by" in want:
            fn, parent, line = want["created_by"]
            assert c is not None and _norm_fn(c["function"]) == _norm_fn(fn), (goid, c, want)
            assert c.get("goid", 0) == parent and c["line"] == line, (goid, c, want)
            compared += 1
        assert ours.get("locked_to_thread", False) == want["locked"], (goid, ours.get("locked_to_thread"))
    assert compared >= 10
    assert by_goid[truth["goroutines"]["locked"]].get("locked_to_thread") is True
    waits = [g["wait_ns"] for g in snap["goroutines"] if g["goid"] in parked and "wait_ns" in g]
    assert waits and all(0 < w < uptime_ns for w in waits)


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_pprof_labels_are_the_ones_the_program_set(go_version, backend):
    """A goroutine running under pprof.Do shows its labels (read after the pause: a label set never changes
    once made); the others have none."""
    binary = build_fixture("goroutines", go_version, "opt")
    with running(binary) as proc:
        snap = take_snapshot([proc.pid], {}, backend=backend)["processes"][0]
    truth = proc.truth
    by_goid = {g["goid"]: g for g in snap["goroutines"]}
    for state, want in truth["labels"].items():
        assert by_goid[truth["goroutines"][state]].get("labels") == want
    labelled = {g["goid"] for g in snap["goroutines"] if "labels" in g}
    assert labelled == {truth["goroutines"][s] for s in truth["labels"]}
