"""Whatever happens during a snapshot — goprobe killed or interrupted, the target killed — no process is left
stopped or traced, and goprobe reports a clear error rather than a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import build_fixture
from goprobe.testing.fixture_process import running


def _status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    with open(path) as fh:
        for line in fh:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _assert_free(pid: int) -> None:
    """Every thread of *pid* is neither traced nor stopped (give the kernel a moment to release them)."""
    deadline = time.monotonic() + 5
    while True:
        bad = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                st = _status(pid, int(tid))
            except FileNotFoundError:
                continue  # the thread exited
            if st["TracerPid"] != "0" or st["State"][0] in "tT":
                bad.append((tid, st["TracerPid"], st["State"]))
        if not bad:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left traced or stopped: {bad}")
        time.sleep(0.05)


def _assert_healthy(proc) -> None:
    """The target runs on as before: it printed nothing (a thread resumed with another context's registers,
    or with the trap flag still set, dies at once with "fatal error" or "SIGTRAP: trace trap") and it exits
    cleanly when its stdin closes."""
    time.sleep(0.5)
    fd = proc.proc.stderr.fileno()
    os.set_blocking(fd, False)
    try:
        err = os.read(fd, 4096)
    except BlockingIOError:
        err = b""
    assert err == b"" and proc.proc.poll() is None, err.decode(errors="replace")
    proc.proc.stdin.close()
    assert proc.proc.wait(timeout=30) == 0


def _snapshot_cli(pid: int, *extra: str) -> subprocess.Popen:
    # A shell may start the suite with SIGINT ignored (background jobs); the child must see SIGINT as ^C.
    return subprocess.Popen([sys.executable, "-m", "goprobe.cli", "snapshot", str(pid), "-c", "main.idle:c", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, GOPROBE_NO_CACHE="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_until_tracing(pid: int, child: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        if _status(pid)["TracerPid"] != "0":
            return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_goprobe_killed_during_the_pause_leaves_the_target_running(newest_version, sig):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "30000"]) as proc:  # a long enough pause to land a signal in it
        child = _snapshot_cli(proc.pid)
        assert _wait_until_tracing(proc.pid, child), child.stderr.read() if child.stderr else ""
        child.send_signal(sig)
        child.wait(timeout=30)
        assert child.returncode != 0
        if sig != signal.SIGKILL:
            assert "Traceback" not in child.stderr.read()
        _assert_free(proc.pid)
        # It still runs: it answers the next snapshot.
        r = subprocess.run([sys.executable, "-m", "goprobe.cli", "snapshot", str(proc.pid)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        _assert_healthy(proc)


# goprobe kills itself (SIGKILL: no handler runs) right after it sent this request to the pause helper, or
# right after this reply came: "pause" — while the threads are being stopped and stepped; "step" — a step
# asked for inside the pause (the helper steps while goprobe dies); "after-stepped" — with the process still
# paused for goprobe to read the goroutines on a thread.
_KILL_CHILD = """
import os, signal, sys
import goprobe.process.remote_pause as R

point = sys.argv[2]
send, wait = R.RemotePausedView._send, R.RemotePausedView._wait

def kill():
    with open(sys.argv[3], "w") as fh:
        fh.write(str(R._helper.proc.pid))
    os.kill(os.getpid(), signal.SIGKILL)

def patched_send(self, msg, fds=None):
    send(self, msg, fds)
    if msg[0] == point:
        kill()

def patched_wait(self, op):
    reply = wait(self, op)
    if point == "after-" + op:
        kill()
    return reply

R.RemotePausedView._send, R.RemotePausedView._wait = patched_send, patched_wait
if point == "step":  # the step is asked for inside the pause, not with it
    run = R.run_paused_in_helper
    R.run_paused_in_helper = lambda pid, body, step=None, **k: run(pid, body, **k)
from goprobe.cli import main
sys.exit(main(["snapshot", sys.argv[1], "-c", "main.idle:c"]))
"""


@pytest.mark.parametrize("point", ["pause", "step", "after-stepped"])
def test_goprobe_killed_at_each_point_of_a_stepped_pause(newest_version, point, tmp_path):
    """The eBPF snapshot steps target threads through the trigger with changed registers: the pause helper
    holds that pause, so goprobe's death at any point of it leaves every thread with its own registers."""
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "3000"]) as proc:
        helper_file = tmp_path / "helper.pid"
        r = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(proc.pid), point, str(helper_file)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == -signal.SIGKILL, r.stderr
        _assert_free(proc.pid)
        helper = int(helper_file.read_text())
        deadline = time.monotonic() + 10
        while _state_of(helper) not in (None, "Z"):  # the helper leaves once the pause is over
            assert time.monotonic() < deadline, "the pause helper outlived goprobe"
            time.sleep(0.05)
        _assert_healthy(proc)


def _state_of(pid: int) -> str | None:
    try:
        return _status(pid)["State"][0]
    except FileNotFoundError:
        return None


def test_pause_helper_killed_during_the_pause(newest_version):
    """If the helper itself dies while it holds a (not stepping) pause, goprobe says so; the kernel released
    the threads; the next pause starts a new helper."""
    from goprobe.errors import ProcessError
    from goprobe.process import remote_pause

    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary) as proc:
        def body(view):
            os.kill(remote_pause._helper.proc.pid, signal.SIGKILL)
            return view.threads

        with pytest.raises(ProcessError, match="pause helper"):
            remote_pause.run_paused_in_helper(proc.pid, body)
        _assert_free(proc.pid)
        threads, pause_ns = remote_pause.run_paused_in_helper(proc.pid, lambda view: view.threads)
        assert {t.tid for t in threads} == {int(t) for t in os.listdir(f"/proc/{proc.pid}/task")}
        assert all(t.regs["rip"] for t in threads) and pause_ns > 0
        _assert_free(proc.pid)
        _assert_healthy(proc)


def test_target_killed_during_the_snapshot_gives_a_clear_error(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "30000"]) as proc:
        child = _snapshot_cli(proc.pid)
        assert _wait_until_tracing(proc.pid, child)
        os.kill(proc.pid, signal.SIGKILL)
        child.wait(timeout=60)
        err = child.stderr.read()
    assert child.returncode == 1
    assert "Traceback" not in err and "goprobe: error:" in err


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_pause_limit_bounds_the_reading_of_one_large_value(newest_version, backend):
    """limits.pause_ms bounds the pause even inside one value (a 300k-entry map, ~15 MB to copy): the process
    is resumed at the limit, the map keeps the entries copied so far, marked truncated, and the errors say
    why."""
    from ebpf_support import REASON

    from goprobe.request import Limits
    from goprobe.snapshot import take_snapshot

    if backend == "ebpf" and REASON is not None:
        pytest.skip(REASON)
    n = 300_000
    binary = build_fixture("goroutines", newest_version, "opt")
    big = dict(map_entries=10 ** 6, total_output_bytes=1 << 30, collection_bytes=1 << 30)

    def take(pause_ms):
        proc = take_snapshot([target.pid], {"main.holdMap": ["m"]}, backend=backend,
                             limits=Limits(pause_ms=pause_ms, **big))["processes"][0]
        frames = [f for g in proc["goroutines"] for f in g["frames"] if f["function"] == "main.holdMap"]
        assert len(frames) == 1
        return proc, frames[0]["variables"]["m"]

    with running(binary, ["-bigmap", str(n)]) as target:
        whole, whole_map = take(60_000)
        cut, cut_map = take(2)
        _assert_free(target.pid)
    assert not whole.get("errors") and whole_map["@len"] == n and len(whole_map["@entries"]) == n
    assert any("pause limit of 2 ms" in e for e in cut["errors"])
    assert cut_map["@len"] == n and cut_map.get("@truncated") and len(cut_map["@entries"]) < n
    for k, v in whole_map["@entries"] + cut_map["@entries"]:  # the program's own rule: m[i] = "v" + i
        assert v == f"v{k}"
    # Side by side in one run: the limited pause is a fraction of the whole read's.
    assert cut["pause_ns"] * 3 < whole["pause_ns"], (cut["pause_ns"], whole["pause_ns"])


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_a_cut_inside_a_large_map_directory_keeps_the_entries_before_it(newest_version, backend):
    """A 600k-entry map (Go 1.24+: a swiss table directory of more than one 4 KiB read) cut by a 25 ms pause
    limit: the entries of the tables copied before the cut are shown, marked truncated (before, a cut anywhere
    in the directory or the tables lost the whole map)."""
    from ebpf_support import REASON

    from goprobe.request import Limits
    from goprobe.snapshot import take_snapshot

    if backend == "ebpf" and REASON is not None:
        pytest.skip(REASON)
    n = 600_000
    binary = build_fixture("goroutines", newest_version, "opt")
    big = dict(map_entries=10 ** 6, total_output_bytes=1 << 30, collection_bytes=1 << 30)
    with running(binary, ["-bigmap", str(n)]) as target:
        proc = take_snapshot([target.pid], {"main.holdMap": ["m"]}, backend=backend,
                             limits=Limits(pause_ms=25, **big))["processes"][0]
        _assert_free(target.pid)
    (m,) = [f["variables"]["m"] for g in proc["goroutines"] for f in g["frames"] if f["function"] == "main.holdMap"]
    assert isinstance(m, dict) and "@entries" in m, (m, proc.get("errors"))
    assert m["@len"] == n and m.get("@truncated") and 0 < len(m["@entries"]) < n, {k: v for k, v in m.items()
                                                                                  if k != "@entries"}
    assert all(v == f"v{k}" for k, v in m["@entries"])


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_max_pause_option_bounds_the_pause_and_says_what_it_cut(newest_version, backend, tmp_path):
    """`goprobe snapshot --max-pause MS`: with a limit far below what 20k goroutines and their values take,
    the process runs again at the limit, the document says what was cut, the process is left free."""
    import json

    from ebpf_support import REASON

    if backend == "ebpf" and REASON is not None:
        pytest.skip(REASON)
    binary = build_fixture("goroutines", newest_version, "debug")
    out = tmp_path / "snap.json"
    with running(binary, ["-n", "20000"]) as target:
        r = subprocess.run([sys.executable, "-m", "goprobe.cli", "snapshot", str(target.pid), "--backend", backend,
                            "-c", "main.idleA:a", "-c", "main.idle:c", "--max-pause", "1", "--json", "-o", str(out)],
                           capture_output=True, text=True, timeout=600)
        _assert_free(target.pid)
        full = subprocess.run([sys.executable, "-m", "goprobe.cli", "snapshot", str(target.pid), "--backend",
                               backend, "--max-pause", "60000", "--json"], capture_output=True, text=True,
                              timeout=600)
    assert r.returncode == 0, r.stderr
    proc = json.loads(out.read_text())["processes"][0]
    assert any("pause limit of 1 ms" in e for e in proc.get("errors", [])), proc.get("errors")
    whole = json.loads(full.stdout)["processes"][0]
    assert not whole.get("errors")
    cut_goroutines = len(proc["goroutines"])
    assert len(whole["goroutines"]) > 20000 and cut_goroutines < len(whole["goroutines"])
    bad = subprocess.run([sys.executable, "-m", "goprobe.cli", "snapshot", str(os.getpid()), "--max-pause", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "positive" in bad.stderr and "Traceback" not in bad.stderr
