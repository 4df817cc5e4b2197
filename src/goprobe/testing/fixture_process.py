"""Run a fixture Go program under the fixtures' protocol and collect the truth it reports.

Protocol: the program gets ``GOPROBE_TRUTH=<file>``, writes its truth JSON there once every goroutine it
describes is parked, prints ``ready``, and exits when its stdin reaches EOF.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs


@attrs.define
class FixtureProcess:
    proc: subprocess.Popen
    truth: dict[str, Any]
    _buf: bytes = b""  # stdout read past the last answer

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, text: str, timeout: float = 30.0) -> str:
        """Send one command line on stdin and return the program's one-line answer (read without Python's
        buffering, so a select() on stdout stays truthful). Raises TimeoutError, or RuntimeError if it exits."""
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the fixture did not answer {text!r}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"the fixture exited while running {text!r}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()


@contextmanager
def running(binary: Path, args: Sequence[str] = (), *, timeout: float = 120.0,
            env: dict[str, str] | None = None) -> Iterator[FixtureProcess]:
    """Start *binary*, wait until it is ready, yield it with its truth; always stop it afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        truth_path = Path(tmp) / "truth.json"
        full_env = dict(os.environ, **(env or {}), GOPROBE_TRUTH=str(truth_path))
        proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=full_env)
        try:
            _wait_ready(proc, timeout)
            truth = json.loads(truth_path.read_text())
            yield FixtureProcess(proc, truth)
        finally:
            _stop(proc)


def _wait_ready(proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    buf = b""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while b"ready\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"fixture {proc.args[0]} did not become ready in {timeout} s")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"fixture {proc.args[0]} exited before ready (code {proc.wait()}): {err[-2000:]}")
            buf += chunk


def _stop(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, OSError):
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    finally:
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
