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
