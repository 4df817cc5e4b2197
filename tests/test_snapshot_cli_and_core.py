"""`goprobe snapshot` from the command line, core files against live snapshots, bundles of processes, and
the error paths of the snapshot API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import build_fixture
from goprobe import GoBinary
from goprobe.errors import ExpressionError, ExpressionSyntaxError, ProcessError, UnknownFunctionError
from goprobe.snapshot import snapshot_core, take_snapshot
from goprobe.testing.fixture_process import running

CAPTURES = {"main.maps": ["small", "len(big)", "byStruct"], "main.(*Server).PointerMethod": ["s.Name", "path", "s.Peer"],
            "main.pointers": ["*pp", "a.Next.Name"], "main.interfaces": ["eStruct", "eInt"]}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "goprobe.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, GOPROBE_NO_CACHE="1"), timeout=120)


def _stable(proc: dict) -> dict:
    """What must agree between two snapshots of the same parked program: goroutines parked for good."""
    out = {}
    for g in proc["goroutines"]:
        if g["status"] != "waiting":
            continue
        out[g["goid"]] = [(f["function"], f["line"], f.get("variables")) for f in g["frames"]]
    return out


@pytest.mark.skipif(shutil.which("gcore") is None, reason="gdb's gcore is not installed on this machine")
def test_core_file_snapshot_equals_live_snapshot(go_version):
    _core_equals_live(build_fixture("kinds", go_version, "debug"))


@pytest.mark.skipif(shutil.which("gcore") is None, reason="gdb's gcore is not installed on this machine")
@pytest.mark.parametrize("mode", ["opt", "debug"])
def test_core_file_of_a_position_independent_executable(newest_version, mode):
    binary = build_fixture("kinds", newest_version, mode, extra_flags=("-buildmode=pie",))
    _core_equals_live(binary)


def _core_equals_live(binary):
    with running(binary) as proc, tempfile.TemporaryDirectory() as tmp:
        live = take_snapshot([proc.pid], CAPTURES)["processes"][0]
        r = subprocess.run(["gcore", "-o", f"{tmp}/core", str(proc.pid)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        core = snapshot_core(f"{tmp}/core.{proc.pid}", str(binary), CAPTURES)["processes"][0]
    assert core["pid"] == proc.pid
    a, b = _stable(live), _stable(core)
    assert a and a == b


def test_several_processes_make_one_bundle(newest_version):
    binary = build_fixture("goroutines", newest_version, "debug")  # every frame keeps depth on the stack
    with running(binary) as p1, running(binary) as p2:
        result = take_snapshot([p1.pid, p2.pid], {"main.recurse": ["depth", "marker"]})
    procs = result["processes"]
    assert [p["pid"] for p in procs] == [p1.pid, p2.pid]
    for p in procs:
        assert p["pause_ns"] > 0 and p["go_version"] == f"go{newest_version}"
        depths = sorted(f["variables"]["depth"] for g in p["goroutines"] for f in g["frames"]
                        if f["function"] == "main.recurse")
        assert depths == list(range(1, 151))
        markers = [f["variables"]["marker"] for g in p["goroutines"] for f in g["frames"]
                   if f["function"] == "main.recurse"]
        assert sorted(markers) == [d * 1000 + 7 for d in range(1, 151)]


def test_processes_of_one_executable_share_one_plan(newest_version, monkeypatch):
    """A bundle compiles its plans before it pauses any process, once per executable: three processes of one
    program cost one compilation, and each gets its own goroutines."""
    import goprobe.snapshot as S

    calls = []
    real = S.compile_request
    monkeypatch.setattr(S, "compile_request", lambda b, req: calls.append(b.path) or real(b, req))
    binary = build_fixture("goroutines", newest_version, "debug")
    with running(binary) as p1, running(binary) as p2, running(binary) as p3:
        result = take_snapshot([p1.pid, p2.pid, p3.pid], {"main.recurse": ["depth"]})
        goids = [{g["goid"] for g in p["goroutines"]} for p in result["processes"]]
    assert len(calls) == 1
    assert [p["status"] for p in result["processes"]] == ["ok"] * 3 and all(len(g) > 10 for g in goids)


def test_cli_snapshot_text_and_json(newest_version, tmp_path):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "200"]) as proc:
        text = run_cli("snapshot", str(proc.pid), "-c", "main.idle:c")
        out = tmp_path / "snap.json"
        js = run_cli("snapshot", str(proc.pid), "-c", "main.idle:c", "--json", "-o", str(out))
    assert text.returncode == 0, text.stderr
    # The 200 idle goroutines share one stack: one group, with each goroutine's captured c listed under it.
    assert "ms pause" in text.stdout and "200 goroutines" in text.stdout and "c=" in text.stdout
    assert js.returncode == 0, js.stderr
    data = json.loads(out.read_text())
    (p,) = data["processes"]
    assert set(p) >= {"pid", "binary", "go_version", "pause_ns", "goroutines"}
    # idle(i) keeps c = i*7 + 3 on its stack (i itself only lives in a register in optimised code).
    idle = sorted(f["variables"]["c"] for g in p["goroutines"] for f in g["frames"] if f["function"] == "main.idle")
    assert idle == [i * 7 + 3 for i in range(200)]
    for g in p["goroutines"]:
        assert set(g) >= {"goid", "status", "wait_reason", "frames"}
        for f in g["frames"]:
            assert set(f) >= {"function", "file", "line", "pc", "inlined"}


def test_cli_groups_identical_stacks(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "300"]) as proc:
        text = run_cli("snapshot", str(proc.pid))
    assert text.returncode == 0, text.stderr
    first_group = [ln for ln in text.stdout.splitlines() if "goroutine" in ln and "[" in ln][0]
    assert first_group.strip().startswith("300 goroutines")


def test_cli_errors(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    dead = subprocess.Popen(["true"])
    dead.wait()
    cases = [
        (["snapshot", str(dead.pid)], "does not exist"),
        (["snapshot"], "PID"),
    ]
    with running(binary) as proc:
        cases += [
            (["snapshot", str(proc.pid), "-c", "main.idel:i"], "did you mean"),
            (["snapshot", str(proc.pid), "-c", "main.recurse:depth +"], "column"),
            (["snapshot", str(proc.pid), "-c", "main.recurse:nosuch"], "depth"),
        ]
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            cases.append((["snapshot", str(sleeper.pid)], "not a Go binary"))
            for args, needle in cases:
                r = run_cli(*args)
                assert r.returncode != 0, args
                assert needle in r.stderr, (args, r.stderr)
                assert "Traceback" not in r.stderr
        finally:
            sleeper.kill()
            sleeper.wait()
        # The target was never left stopped or traced.
        status = open(f"/proc/{proc.pid}/status").read()
        assert "TracerPid:\t0" in status and "State:\tS" in status or "State:\tR" in status


def test_api_errors_are_typed(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    with GoBinary(binary) as b, running(binary) as proc:
        with pytest.raises(UnknownFunctionError):
            take_snapshot([proc.pid], {"main.nope": ["x"]}, binary=b)
        with pytest.raises(ExpressionSyntaxError):
            take_snapshot([proc.pid], {"main.recurse": ["depth["]}, binary=b)
        with pytest.raises(ExpressionError, match="depth"):
            take_snapshot([proc.pid], {"main.recurse": ["nosuch.field"]}, binary=b)
    with pytest.raises(ProcessError):
        take_snapshot([2**22 + 12345], {})


def test_pause_limit_resumes_the_process_and_says_so(newest_version):
    from goprobe.request import Limits

    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "20000"]) as proc:
        snap = take_snapshot([proc.pid], {"main.idle": ["c"]}, limits=Limits(pause_ms=1))["processes"][0]
        assert any("pause limit of 1 ms" in e for e in snap["errors"])
        assert len(snap["goroutines"]) < 20000
        assert "TracerPid:\t0" in open(f"/proc/{proc.pid}/status").read()


def test_the_collector_is_off_only_while_a_snapshot_is_built():
    """Snapshots turn Python's cycle collector off while they make their objects (and inside the pause), and
    leave it as they found it, even when building fails."""
    import gc

    from goprobe.snapshot import _no_gc

    was = gc.isenabled()
    try:
        for state in (True, False):
            (gc.enable if state else gc.disable)()
            with pytest.raises(KeyError), _no_gc():
                assert not gc.isenabled()
                raise KeyError("building failed")
            assert gc.isenabled() == state
    finally:
        (gc.enable if was else gc.disable)()


def test_one_process_does_not_sink_a_bundle(newest_version):
    """A bundle of a good process, one whose binary has no DWARF (stacks only), one that is not a Go program
    and a pid that is gone: the first two are taken, each other one says why, the document and the exit
    status say "partial"."""
    binary = build_fixture("goroutines", newest_version, "opt")
    stripped = build_fixture("goroutines", newest_version, "opt", extra_flags=("-ldflags=-w",))
    dead = subprocess.Popen(["true"])
    dead.wait()
    not_go = subprocess.Popen(["sleep", "600"])
    try:
        with running(binary) as good, running(stripped) as bare:
            pids = [good.pid, bare.pid, not_go.pid, dead.pid]
            r = run_cli("snapshot", *map(str, pids), "-c", "main.recurse:depth", "--json")
            text = run_cli("snapshot", *map(str, pids))
            api = take_snapshot(pids, {})
            with pytest.raises(ProcessError, match="does not exist"):  # nothing taken: the error itself
                take_snapshot([dead.pid], {})
    finally:
        not_go.kill()
        not_go.wait()
    assert r.returncode == 3, r.stderr
    assert "partial result: 2 of 4" in r.stderr and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["partial"] is True
    ok, no_dwarf, foreign, gone = doc["processes"]
    assert [p["pid"] for p in doc["processes"]] == pids
    assert ok["status"] == "ok" and any(
        "variables" in f for g in ok["goroutines"] for f in g["frames"])
    assert no_dwarf["status"] == "ok" and any(
        f["function"] == "main.recurse" and "@unavailable" in f["variables"]["depth"]
        for g in no_dwarf["goroutines"] for f in g["frames"])
    assert foreign["status"] == "error" and foreign["error"]["kind"] == "NOT_GO"
    assert gone["status"] == "error" and gone["error"]["kind"] == "PROCESS_GONE"
    assert text.returncode == 3 and "not taken: NOT_GO" in text.stdout
    assert api["partial"] and [p["status"] for p in api["processes"]] == ["ok", "ok", "error", "error"]


def test_a_variable_the_optimiser_dropped_is_unavailable_not_an_error(newest_version):
    """A name the function's source has but the optimised build's debug info does not list: unavailable with
    that reason and a warning; the rest of the request is captured. A name nowhere in the function is still
    an error with suggestions."""
    binary = build_fixture("kinds", newest_version, "opt")
    with GoBinary(binary) as b, running(binary) as proc:
        dropped = [(v["func"], v["name"]) for v in proc.truth["variables"] if v["name"] not in {
            x.name for fn in b.functions(v["func"]) for x in fn.variables} | {
            x.name for _c, call in b.inlined_copies(v["func"].replace("[...]", "")) for x in call.variables}]
        assert dropped, "this build keeps every variable the fixture reports: pick another fixture variable"
        func, name = dropped[0]
        kept = next(v["name"] for v in proc.truth["variables"] if v["func"] == func and (func, v["name"]) not in dropped)
        result = take_snapshot([proc.pid], {func: [name, kept]}, binary=b)
        with pytest.raises(ExpressionError, match="did you mean|variables here"):
            take_snapshot([proc.pid], {func: [name + "Typo"]}, binary=b)
        r = run_cli("snapshot", str(proc.pid), "-c", f"{func}:{name},{kept}")
    (p,) = result["processes"]
    frames = [f for g in p["goroutines"] for f in g["frames"] if "variables" in f]
    assert frames
    for f in frames:
        assert f["variables"][name] == {"@unavailable": "not in the debug info of this build (the optimiser dropped it)"}
        assert kept in f["variables"]
    assert any(name in w for w in p["warnings"])
    assert r.returncode == 0 and "warning" in r.stderr and name in r.stderr, r.stderr


def test_unwritable_outputs_are_refused_before_any_pause(newest_version, tmp_path):
    """-o into a missing directory: refused before the target is paused (no pause, no lost snapshot);
    -o /dev/full: a one-line error after the target was resumed. No traceback either way."""
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary) as proc:
        missing = run_cli("snapshot", str(proc.pid), "-o", str(tmp_path / "nope" / "x.json"))
        full = run_cli("snapshot", str(proc.pid), "--json", "-o", "/dev/full")
        status = open(f"/proc/{proc.pid}/status").read()
    assert missing.returncode == 1 and "cannot write to" in missing.stderr and "choose another" in missing.stderr
    assert full.returncode == 1 and "No space left on device" in full.stderr
    for r in (missing, full):
        assert "Traceback" not in r.stderr, r.stderr
    assert "TracerPid:\t0" in status


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_the_goroutine_limit_counts_live_goroutines_and_says_what_it_cut(newest_version, backend):
    """20,000 goroutines ran and exited before the program's goroutines started: their dead slots in allgs
    do not count against limits.goroutines; live goroutines past the limit are counted as skipped."""
    from goprobe.request import Limits

    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-exited", "20000", "-n", "50"]) as proc:
        everything = take_snapshot([proc.pid], {}, backend=backend)["processes"][0]
        live = len(everything["goroutines"])
        assert live >= 60 and "truncated" not in everything
        roomy = take_snapshot([proc.pid], {}, backend=backend, limits=Limits(goroutines=live + 5))["processes"][0]
        cut = take_snapshot([proc.pid], {}, backend=backend, limits=Limits(goroutines=40))["processes"][0]
        text = run_cli("snapshot", str(proc.pid), "--backend", backend)
    assert {g["goid"] for g in roomy["goroutines"]} == {g["goid"] for g in everything["goroutines"]}
    assert set(proc.truth["goroutines"].values()) <= {g["goid"] for g in roomy["goroutines"]}
    assert "truncated" not in roomy
    assert len(cut["goroutines"]) == 40
    # The runtime starts and ends goroutines of its own between snapshots: the live count moves a little.
    assert abs(40 + cut["truncated"]["goroutines"] - live) <= 8, (cut["truncated"], live)
    assert text.returncode == 0 and "not read" not in text.stdout


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_deep_stacks_are_cut_at_the_limit_with_a_marker(newest_version, backend):
    """A goroutine 10,000 frames deep (over 256 KiB of stack), stacks only and with a capture: cut at
    frames_per_goroutine with "@truncated"; with a higher limit, listed whole by the interpreter, and by the
    eBPF program up to what its per-goroutine record holds, again with the marker. Never a lost frame
    without a word, never a crash."""
    from goprobe.request import Limits

    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-deep", "10000"]) as proc:
        goid = proc.truth["goroutines"]["deep"]
        for limits, request in [(None, {}), (None, {"main.deep": ["n"]}),
                                (Limits(frames_per_goroutine=20000), {}),
                                (Limits(frames_per_goroutine=20000), {"main.deep": ["n"]})]:
            result = take_snapshot([proc.pid], request, backend=backend, limits=limits)["processes"][0]
            (g,) = [g for g in result["goroutines"] if g["goid"] == goid]
            names = [f["function"] for f in g["frames"]]
            where = (backend, limits, request, len(names))
            assert names[0] == "runtime.gopark" and names.count("main.deep") >= 500, where
            if limits is None:
                assert len(names) == 512 and g["@truncated"] == "frames", where
            elif backend == "interp":
                assert names.count("main.deep") == 10001 and "@truncated" not in g, where
            else:
                assert len(names) > 1000 and g["@truncated"] == "frames", where
            if request:  # every main.deep frame listed has its capture (a value or why it is unavailable)
                assert all("n" in f["variables"] for f in g["frames"] if f["function"] == "main.deep"), where


@pytest.mark.skipif(shutil.which("gcore") is None, reason="gdb's gcore is not installed on this machine")
def test_a_core_with_the_wrong_binary_is_refused(newest_version):
    """A core paired with another program, or with another build of the same program, is refused with the
    cause; with its own binary it gives goroutines."""
    from goprobe.errors import CoreFileError

    binary = build_fixture("goroutines", newest_version, "opt")
    other_build = build_fixture("goroutines", newest_version, "debug")
    other_program = build_fixture("kinds", newest_version, "opt")
    with running(binary) as proc, tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["gcore", "-o", f"{tmp}/core", str(proc.pid)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        core = f"{tmp}/core.{proc.pid}"
        assert snapshot_core(core, str(binary), {})["processes"][0]["goroutines"]
        for wrong in (other_build, other_program):
            with pytest.raises(CoreFileError, match="not dumped from|holds no memory"):
                snapshot_core(core, str(wrong), {})
        cli = run_cli("snapshot", "--core", core, str(other_program))
    assert cli.returncode == 1 and "give the executable the process ran" in cli.stderr
    assert "Traceback" not in cli.stderr
