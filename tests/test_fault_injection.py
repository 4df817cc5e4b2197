"""Kill goprobe, its pause helper, or both (as a cgroup, OOM or container kill would) at many instants of an
eBPF snapshot's pause, including while target threads run the snapshot program with borrowed registers:
the target must go on running correctly every time — not traced, not stopped, no probe left in its code,
nothing printed, still accepting connections, still answering snapshots, exiting cleanly at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_fixture
from goprobe.testing.fixture_process import running
from test_snapshot_safety import _assert_free, _assert_healthy, _state_of

INJECTOR = Path(__file__).with_name("fault_injector.py")

# Across the pause: stopping the threads, choosing and preparing the stepped ones (their stack word, then their
# registers: the first thread prepared while the second is not), resuming them into the trigger, while the
# snapshot program runs (timed from the first resume), waiting for them, reading registers after, releasing.
INSTANTS = ["SEIZE:1", "INTERRUPT:2", "GETREGS:1", "POKEDATA:1", "SETREGS:1", "SETREGS:2", "CONT:1",
            "CONT:2", "CONT+300", "CONT+1500", "WAIT:1", "WAIT:3", "GETREGS:3", "DETACH:1", "DETACH:4"]


def _listening_port(pid: int) -> int:
    """The TCP port the fixture listens on (its netpoller goroutine accepts and closes connections)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    with open(f"/proc/{pid}/net/tcp") as fh:
        for line in list(fh)[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                return int(parts[1].split(":")[1], 16)
    raise AssertionError(f"pid {pid} listens on no TCP port")


def _answers(port: int) -> None:
    """A connection is accepted and closed by the target's accept loop (its scheduler and netpoller run)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        assert s.recv(1) == b""


def _text_byte(pid: int, addr: int) -> int:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as fh:
        fh.seek(addr)
        return fh.read(1)[0]


@pytest.mark.parametrize("victim", ["goprobe", "helper", "both"])
def test_killing_any_goprobe_process_at_any_instant_leaves_the_target_running(newest_version, victim, tmp_path):
    import goprobe
    from goprobe.backends.ebpf.snapshot_session import find_trigger
    from goprobe.snapshot import load_bias

    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "3000"]) as proc:
        port = _listening_port(proc.pid)
        with goprobe.open_binary(binary) as b:
            trigger = find_trigger(b, f"/proc/{proc.pid}/exe", load_bias(b, proc.pid))
        assert trigger is not None and _text_byte(proc.pid, trigger.address) == 0xC3
        hits = 0
        for at in INSTANTS:
            report = tmp_path / f"{at}.report"
            r = subprocess.run([sys.executable, str(INJECTOR), victim, at, str(report), "--", "snapshot",
                                str(proc.pid), "-c", "main.idle:c"], capture_output=True, text=True, timeout=120)
            lines = report.read_text().split() if report.exists() else []
            hit = "hit" in lines
            hits += hit
            where = f"killing {victim} at {at} (reached: {hit}; goprobe exit {r.returncode})"
            assert "Traceback" not in r.stderr, f"{where}: {r.stderr}"
            if hit and victim != "helper":
                assert r.returncode == -9, where
            elif hit:
                assert r.returncode in (0, 1), f"{where}: {r.stderr}"
            _assert_free(proc.pid)
            helper = int(lines[0]) if lines else None
            deadline = time.monotonic() + 10
            while helper is not None and _state_of(helper) not in (None, "Z"):
                assert time.monotonic() < deadline, f"{where}: the pause helper outlived goprobe"
                time.sleep(0.02)
            assert proc.proc.poll() is None, f"{where}: the target died: {proc.proc.stderr.read()!r}"
            assert _text_byte(proc.pid, trigger.address) == 0xC3, f"{where}: a uprobe is left in the target"
            _answers(port)
        # The instants are real: most of them were reached (a few may not be, e.g. a second CONT when only one
        # thread was stepped).
        assert hits >= len(INSTANTS) - 3, hits
        r = subprocess.run([sys.executable, "-m", "goprobe.cli", "snapshot", str(proc.pid)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        _assert_healthy(proc)
