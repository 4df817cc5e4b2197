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
