"""Dynamic events through the eBPF backend against the `calls` fixture: every value an event carries equals
what the program logged for that call; counts equal calls; conditions run in the kernel; limits account for
every hit; probes are gone afterwards, whatever way goprobe stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODES, VERSIONS, build_fixture
from ebpf_support import Fixture, no_leaked_kernel_fds, requires_bpf  # noqa: F401 (autouse fixture)
from goprobe.dwarf.binary import GoBinary
from goprobe.errors import ExpressionError, GoprobeError, ProcessNotFoundError, UnknownFunctionError
from goprobe.events import stream_events
from goprobe.request import EventRequest
from goprobe.testing.fixture_process import running

pytestmark = requires_bpf

ARGS = ["req.ID", "req.Path", "name", "n", "tags", "len(tags)", "req.Next"]


@pytest.fixture(params=[(v, m) for v in VERSIONS for m in MODES], ids=lambda p: f"go{p[0]}-{p[1]}")
def calls(request, tmp_path):
    binary = build_fixture("calls", *request.param)
    log = tmp_path / "calls.jsonl"
    with running(binary, env={"GOPROBE_CALL_LOG": str(log)}) as fx:
        yield Fixture(fx, log)


@pytest.fixture
def newest_calls(tmp_path):
    binary = build_fixture("calls", VERSIONS[-1], "opt")
    log = tmp_path / "calls.jsonl"
    with running(binary, env={"GOPROBE_CALL_LOG": str(log)}) as fx:
        yield Fixture(fx, log)


def _run(fx: Fixture, request: EventRequest, command: str) -> tuple[list[dict], dict]:
    with stream_events([fx.pid], request) as s:
        assert fx.command(command).startswith("done")
        events = list(s)
        return events, s.summary()


def test_entry_events_equal_the_call_log(calls):
    n = 25
    events, summary = _run(calls, EventRequest.build("main.handle", ARGS, max_events=n, duration_s=20),
                           f"call {n}")
    log = calls.log()
    assert len(log) == n and len(events) == n
    assert summary["hits"] == n and summary["dropped"] == 0
    prev = None
    for ev, rec in zip(events, log):
        v = ev["values"]
        assert v["req.ID"] == rec["id"] and v["req.Path"] == rec["path"] and v["name"] == rec["name"]
        assert v["n"] == rec["n"] and v["tags"] == rec["tags"] and v["len(tags)"] == len(rec["tags"])
        if rec["i"] % 3 == 2:  # the fixture links the previous request
            assert v["req.Next"]["ID"] == prev["id"] and v["req.Next"]["Path"] == prev["path"]
            assert v["req.Next"]["Meta"] == {"i": prev["i"]}  # a small map, walked in the kernel
        else:
            assert v["req.Next"] is None
        assert ev["pid"] == calls.pid and ev["goid"] >= 1 and ev["ts_ns"] > 0
        prev = rec
    assert [e["ts_ns"] for e in events] == sorted(e["ts_ns"] for e in events)


def test_generic_values_resolve_through_the_dictionary_and_closures_show_their_captures(calls):
    """pick[T] with T = *Request runs as the shaped pick[go.shape.*uint8]: only the frame's dictionary says its
    elements are *Request (compared in the kernel, decoded as such, not as opaque pointers). The closure passed
    to apply shows the variable it captured where the DWARF describes its context (Go 1.23+, unoptimised)."""
    n = 6
    with stream_events([calls.pid], EventRequest.build("main.pick[...]", ["xs", "i"], max_events=n,
                                                       duration_s=20)) as s:
        assert calls.command(f"call {n}") == f"done {n}"
        picks = list(s)
    with stream_events([calls.pid], EventRequest.build("main.apply", ["f", "x"], max_events=n, duration_s=20)) as s:
        assert calls.command(f"call {n}") == f"done {n}"
        applies = list(s)
    log = calls.log()
    assert len(picks) == len(applies) == n and len(log) == 2 * n
    for ev, rec in zip(picks, log[:n]):
        xs = ev["values"]["xs"]
        assert ev["values"]["i"] == 1 and len(xs) == 2
        assert xs[1]["ID"] == rec["picked"] == rec["id"] and xs[1]["Path"] == rec["path"]
    with GoBinary(os.readlink(f"/proc/{calls.pid}/exe")) as b:
        # Whether this build's DWARF gives the closure's context layout (DW_AT_go_closure_offset).
        layout = any(v.closure_offset is not None for v in b.function("main.callN.func1").variables)
    for ev, rec in zip(applies, log[n:]):
        f = ev["values"]["f"]
        assert f["@func"] == "main.callN.func1" and ev["values"]["x"] == rec["i"]
        assert f.get("@captured") == ({"offset": rec["offset"]} if layout else None)


def test_return_values_and_durations(calls):
    n = 15
    events, summary = _run(calls, EventRequest.build("main.handle", [], at_return=True, max_events=n,
                                                     duration_s=20), f"call {n}")
    log = calls.log()
    assert len(events) == n and summary["hits"] == n
    for ev, rec in zip(events, log):
        ret, err = ev["returns"]["~r0"], ev["returns"]["~r1"]
        assert ret == rec["ret"]
        if rec["err"] is None:
            assert err is None
        else:
            assert err["@type"] == "*errors.errorString" and err["@value"]["s"] == rec["err"]
        assert ev["duration_ns"] is not None and 0 < ev["duration_ns"] < 10**9


def test_conditions_run_in_the_kernel(newest_calls):
    fx = newest_calls
    n = 30
    req = EventRequest.build("main.handle", ["req.ID", "name"], when='n > 10 && name != "name7" || req.ID == 1',
                             duration_s=3)
    events, summary = _run(fx, req, f"call {n}")
    want = [r for r in fx.log() if (r["n"] > 10 and r["name"] != "name7") or r["id"] == 1]
    assert [e["values"]["req.ID"] for e in events] == [r["id"] for r in want]
    assert summary["hits"] == n and summary["filtered"] == n - len(want) and summary["events"] == len(want)


def test_caller_frames_and_stacks(calls):
    """In -N -l builds callers keep their variables on the stack; optimised callers may keep them only in
    registers, which Go does not preserve across calls: then the value must say so."""
    fx = calls
    req = EventRequest.build("main.depth", ["n"], callers={"main.(*Server).Serve": ["req.ID", "req.Path"]},
                             stack=True, duration_s=3)
    events, summary = _run(fx, req, "call 12")
    log = fx.log()
    # Serve calls depth(ID % 5), which recurses down to 0: ID % 5 + 1 calls per request.
    assert summary["hits"] == sum(r["id"] % 5 + 1 for r in log) == len(events)
    ids = iter(r["id"] for r in log for _ in range(r["id"] % 5 + 1))
    for ev in events:
        want = next(ids)
        serve = ev["callers"]["main.(*Server).Serve"]
        for key, expected in (("req.ID", want), ("req.Path", f"/p/{want}")):
            if "debug" in fx.fx.proc.args[0]:
                assert serve[key] == expected
            else:
                assert serve[key] == expected or "register" in serve[key]["@unavailable"]
        fns = [f["function"] for f in ev["stack"]]
        assert fns[0] == "main.depth" and "main.(*Server).Serve" in fns and "main.callN" in fns
        depth_frames = fns.index("main.(*Server).Serve")
        assert fns[:depth_frames] == ["main.depth"] * depth_frames
        assert all(f["line"] > 0 for f in ev["stack"][:depth_frames + 2])


def test_line_probes(newest_calls):
    fx = newest_calls
    src = Path(__file__).parent / "fixtures" / "calls" / "main.go"
    line = next(i for i, text in enumerate(src.read_text().splitlines(), 1) if "total := int(req.ID)" in text)
    req = EventRequest.build(f"main.go:{line}", ["n"], duration_s=2)
    events, summary = _run(fx, req, "call 20")
    want = [r["n"] for r in fx.log() if r["id"] % 5 != 4]  # the others return before that line
    assert [e["values"]["n"] for e in events] == want
    assert summary["hits"] == len(events)


def test_limits_account_for_every_hit(newest_calls):
    fx = newest_calls
    events, summary = _run(fx, EventRequest.build("main.handle", ["n"], max_events=7, duration_s=10), "call 40")
    assert len(events) == 7 and summary["hits"] == 40
    assert summary["events"] + summary["dropped"] + summary["filtered"] == summary["hits"]
    events, summary = _run(fx, EventRequest.build("main.handle", ["n"], rate_limit_per_s=5, duration_s=1),
                           "call 40")
    assert summary["dropped_rate_limit"] >= 30 and len(events) <= 10
    assert summary["events"] + summary["dropped"] == summary["hits"] == 40


def test_a_million_hits_and_many_attach_cycles_leave_the_program_unchanged(newest_calls):
    fx = newest_calls
    assert fx.command("call 5") == "done 5"
    unprobed = [r["ret"] for r in fx.log()]
    total = 0
    with stream_events([fx.pid], EventRequest.build("main.handle", ["n"], max_events=1000, duration_s=60)) as s:
        while total < 1_000_000:
            total += int(fx.command("spin 0.5").split()[1])
        hits = s.counters().hits
    assert hits == total >= 1_000_000
    for _ in range(20):
        with stream_events([fx.pid], EventRequest.build("main.handle", ["req.ID"], max_events=3, duration_s=5)) as s:
            assert fx.command("call 3") == "done 3"
            assert len(list(s)) == 3
    before = len(fx.log())
    assert fx.command("call 5") == "done 5"
    assert [r["ret"] for r in fx.log()[before:]] == unprobed
    _assert_no_probe_left(fx)


def _assert_no_probe_left(fx: Fixture) -> None:
    """The probed instruction holds its original byte again (a uprobe puts an int3 there)."""
    with GoBinary(os.readlink(f"/proc/{fx.pid}/exe")) as b:
        code = b.code.for_function(b.function("main.handle"))
        original = b.elf.read_vaddr(code.prologue_end, 1)
        assert fx.peek(code.prologue_end) == original != b"\xcc"


def test_goprobe_killed_mid_stream_leaves_no_probe(newest_calls):
    fx = newest_calls
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([sys.executable, "-m", "goprobe.cli", "events", str(fx.pid), "--probe",
                                 "main.handle(req.ID, name)", "--duration", "60"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert fx.command("call 1") == "done 1"
            if _probed(fx):
                break
            time.sleep(0.1)
        assert _probed(fx), proc.stderr.read1().decode() if proc.poll() is not None else "probe never attached"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        if sig != signal.SIGKILL:
            assert proc.returncode == 0, err.decode()
            assert b"events" in err  # the summary
        assert fx.command("call 2") == "done 2"
        _assert_no_probe_left(fx)


def _probed(fx: Fixture) -> bool:
    with GoBinary(os.readlink(f"/proc/{fx.pid}/exe")) as b:
        return fx.peek(b.code.for_function(b.function("main.handle")).prologue_end) == b"\xcc"


def _read_until(proc: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    """Read *proc*'s stderr until *marker* appears (or it ends, or *timeout* passes); return what was read."""
    import select

    fd, got = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while marker not in got and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            got += chunk
    assert marker in got, f"no {marker!r} from the CLI: {got.decode(errors='replace')}"
    return got


def test_cli_events_streams_json_lines(newest_calls):
    fx = newest_calls
    proc = subprocess.Popen([sys.executable, "-m", "goprobe.cli", "events", str(fx.pid), "--probe",
                             "main.handle(req.ID, name)", "--max", "4", "--duration", "30", "--when", "req.ID >= 2",
                             "--ring", "4", "--backlog", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The int3 is in place as soon as the uprobe is opened, before its program is on it: the CLI's own
    # "Ctrl-C stops" line says the probes and the drain are ready.
    started = _read_until(proc, b"Ctrl-C stops", timeout=60)
    assert fx.command("call 10") == "done 10"
    out, err = proc.communicate(timeout=60)
    err = started + err
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(x) for x in out.decode().splitlines()]
    assert [e["values"]["req.ID"] for e in lines] == [2, 3, 4, 5]
    assert all(e["values"]["name"] == f"name{e['values']['req.ID']}" for e in lines)
    summary = err.decode()
    assert "4 events" in summary and "dropped" in summary
    bad = subprocess.run([sys.executable, "-m", "goprobe.cli", "events", str(fx.pid), "--probe", "main.handle",
                          "--ring", "3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "power of two" in bad.stderr and "Traceback" not in bad.stderr


def test_event_errors_are_typed_and_leave_nothing_behind(newest_calls):
    fx = newest_calls
    with pytest.raises(UnknownFunctionError, match="main.handle"):
        stream_events([fx.pid], "main.handel", ["n"])
    with pytest.raises(ExpressionError, match="nosuch"):
        stream_events([fx.pid], "main.handle", ["nosuch"])
    with pytest.raises(ProcessNotFoundError):
        stream_events([2**22 + 12345], "main.handle", ["n"])
    with pytest.raises(GoprobeError, match="== and !="):
        stream_events([fx.pid], "main.handle", ["n"], when='name < "b"')
    assert fx.command("call 1") == "done 1"
    _assert_no_probe_left(fx)


def test_cli_events_from_a_request_file(newest_calls, tmp_path):
    """`goprobe events --spec FILE` takes an events request file; options given beside it override it; a
    snapshot request file is refused with the command to use."""
    fx = newest_calls
    spec = tmp_path / "ev.toml"
    spec.write_text('kind = "events"\nexpressions = ["req.ID"]\nwhen = "req.ID >= 3"\nmax_events = 50\n'
                    '[probe]\nfunction = "main.handle"\n')
    proc = subprocess.Popen([sys.executable, "-m", "goprobe.cli", "events", str(fx.pid), "--spec", str(spec),
                             "--max", "2", "-c", "name", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = _read_until(proc, b"Ctrl-C stops", timeout=60)
    assert fx.command("call 10") == "done 10"
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (started + err).decode()
    lines = [json.loads(x) for x in out.decode().splitlines()]
    assert [(e["values"]["req.ID"], e["values"]["name"]) for e in lines] == [(3, "name3"), (4, "name4")]
    snap = tmp_path / "snap.toml"
    snap.write_text('kind = "snapshot"\n[[capture]]\nfunction = "main.handle"\nexpressions = ["n"]\n')
    bad = subprocess.run([sys.executable, "-m", "goprobe.cli", "events", str(fx.pid), "--spec", str(snap)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "goprobe snapshot" in bad.stderr and "Traceback" not in bad.stderr
    _assert_no_probe_left(fx)


def test_cli_mistakes_get_one_line_and_a_target_that_exits_ends_the_stream(newest_calls):
    """Bad CLI input gets one line naming the cause and a fix (no traceback); a stream whose target exits
    ends at once, says so, and exits with status 3."""
    fx = newest_calls

    def cli(*args, timeout=60):
        return subprocess.run([sys.executable, "-m", "goprobe.cli", *args], capture_output=True, text=True,
                              timeout=timeout)

    for args, status, needle in [
        (["events", str(fx.pid), "--probe", ""], 1, "--probe needs a function"),
        (["events", str(fx.pid), "--probe", "main.handle", "--ring", "4096"], 2, "at most 1024 MiB"),
        (["events", str(fx.pid), "--probe", "main.handle(req.ID"], 1, "a ( is not closed"),
        (["inspect", "/dev/null"], 1, "not a regular file"),
    ]:
        r = cli(*args)
        assert r.returncode == status and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    proc = subprocess.Popen([sys.executable, "-m", "goprobe.cli", "events", str(fx.pid), "--probe",
                             "main.handle(req.ID)", "--duration", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = _read_until(proc, b"Ctrl-C stops", timeout=60)
    assert fx.command("call 2") == "done 2"
    fx.fx.proc.kill()  # the target goes away (a crash, a deploy)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10  # not the 60 s asked for
    assert proc.returncode == 3, (started + err).decode()
    assert b"ended early: the target process" in err and len(out.splitlines()) == 2


@pytest.mark.parametrize("change", ["deleted", "replaced"])
def test_events_on_a_binary_deleted_or_replaced_since_the_process_started(tmp_path, change):
    """An in-place deploy leaves the running process on a file whose path is gone or names another build:
    events read and probe the file the process runs (through /proc/PID/exe)."""
    import shutil

    src = build_fixture("calls", VERSIONS[-1], "opt")
    exe = tmp_path / "service"
    shutil.copy2(src, exe)
    log = tmp_path / "calls.jsonl"
    with running(exe, env={"GOPROBE_CALL_LOG": str(log)}) as proc:
        fx = Fixture(proc, log)
        exe.unlink()
        if change == "replaced":  # another program at the same path
            shutil.copy2(build_fixture("tiny", VERSIONS[-1], "opt"), exe)
        events, summary = _run(fx, EventRequest.build("main.handle", ["req.ID", "name"], max_events=5,
                                                      duration_s=20), "call 5")
        log_records = fx.log()
    assert [e["values"]["req.ID"] for e in events] == [r["id"] for r in log_records]
    assert [e["values"]["name"] for e in events] == [r["name"] for r in log_records]
    assert summary["hits"] == 5


def test_map_lookups_run_in_the_kernel(newest_calls):
    """m["k"] in an event: the map is searched by the program itself (the key's hash is keyed per process)."""
    fx = newest_calls
    req = EventRequest.build("main.handle", ["req.ID", 'req.Meta["i"]', 'req.Meta["nope"]'], max_events=6,
                             duration_s=20)
    events, _summary = _run(fx, req, "call 6")
    assert len(events) == 6
    for ev, rec in zip(events, fx.log()):
        assert ev["values"]['req.Meta["i"]'] == rec["i"]
        assert ev["values"]['req.Meta["nope"]'] == {"@unavailable": 'key "nope" is not in the map'}
