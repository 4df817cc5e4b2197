"""Pauses held by goprobe's pause helper process, for bodies that single-step the target's threads.

:func:`run_paused_in_helper` has the contract of :func:`goprobe.process.run_paused`, but the ptrace side of
the pause runs in the helper (:mod:`goprobe.process.pause_helper`), so that goprobe's own death — even by
SIGKILL, in the middle of a step — cannot leave a thread of the target with changed registers: the helper
outlives goprobe long enough to put them back and detach. The body still runs here; it reads memory with
``process_vm_readv`` (any process with ptrace rights may) and asks the helper for registers and steps.

One helper serves the whole goprobe process (started on first use, or early with :func:`start_helper` so
that its start overlaps other work); it exits when goprobe's end of its socket closes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import attrs

from goprobe import errors
from goprobe.errors import ProcessError, ProcessExitedError
from goprobe.process.memory import ProcessMemory
from goprobe.process.pause_helper import recv_msg, send_msg
from goprobe.process.ptrace import StepArm, ThreadState, _check_target, _SignalGuard


class _Helper:
    """The running helper process and goprobe's end of its socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        src = str(Path(__file__).resolve().parents[2])  # where the goprobe package is, for the child's imports
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH")))))
        try:
            # A process group of its own: the terminal's ^C and a kill of goprobe's group do not reach it. (Not
            # a session of its own: the scheduler would then treat it as another group of tasks, and the threads
            # it stops and steps took milliseconds longer to get a CPU.)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "goprobe.process.pause_helper", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                process_group=0, env=env)
        except OSError as exc:
            ours.close()
            raise ProcessError(f"could not start goprobe's pause helper ({sys.executable}): {exc}") from exc
        finally:
            theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()  # one pause at a time
        self.pauses = 0
        self.broken = False  # its socket failed: it is gone or going (it may not have exited yet)

    def usable(self) -> bool:
        return self.owner == os.getpid() and not self.broken and self.proc.poll() is None

    def close(self) -> None:
        self.sock.close()  # the helper leaves when it sees the socket closed
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_helper: _Helper | None = None
_helper_lock = threading.Lock()


def start_helper() -> None:
    """Start the pause helper now if it is not running (it needs ~0.2 s to start, which this overlaps)."""
    _get_helper()


def _get_helper() -> _Helper:
    global _helper
    with _helper_lock:
        if _helper is None or not _helper.usable():
            if _helper is not None and _helper.owner == os.getpid():
                _helper.close()
            _helper = _Helper()
        return _helper


def _raise_from(err: tuple[str, str]) -> None:
    name, text = err
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.GoprobeError):
        raise cls(text)
    raise ProcessError(f"the pause helper failed: {name}: {text}")


class RemotePausedView:
    """What a :func:`run_paused_in_helper` body sees: ``pid``, ``memory``, ``threads``, ``stop_ns`` and
    :meth:`step_many` / :meth:`step_through`, as on a :class:`~goprobe.process.PausedProcess`."""

    def __init__(self, helper: _Helper, number: int, pid: int, arm: StepArm | None,
                 step: tuple[int, int] | None = None) -> None:
        self._helper = helper
        self._n = number
        self._arm = arm
        self._step = step  # asked for with the pause: the first matching step_many only waits for its reply
        self._threads: list[ThreadState] | None = None
        self._final: tuple | None = None
        self._ended = False  # the helper ended the pause right after the step (its "resumed" is on the way)
        self.pid = pid
        self.memory = ProcessMemory(pid)
        self.stop_ns = 0

    def _send(self, msg: tuple, fds: list[int] | None = None) -> None:
        try:
            send_msg(self._helper.sock, msg, fds)
        except OSError as exc:
            self._helper.broken = True
            raise ProcessError(f"goprobe's pause helper (pid {self._helper.proc.pid}) is gone: {exc}") from exc

    def _wait(self, op: str) -> tuple:
        """The helper's reply *op* to this pause's last request. If the pause ended first (a failure: the
        reply is then ``resumed``), its error is raised."""
        while True:
            cause: OSError | None = None
            try:
                msg, fds = recv_msg(self._helper.sock)
            except OSError as exc:
                msg, fds, cause = None, [], exc
            for fd in fds:
                os.close(fd)
            if msg is None:
                self._helper.broken = True
                self._final = ("resumed", self._n, None, None, False, 0)
                raise ProcessError(f"goprobe's pause helper (pid {self._helper.proc.pid}) exited during the pause"
                                   "; the kernel released the target's threads") from cause
            if msg[1] != self._n:
                continue  # a reply to an earlier pause that gave up waiting
            if msg[0] == "resumed":
                self._final = msg
                if op != "resumed":
                    err = msg[2]
                    if err is not None:
                        _raise_from(err)
                    raise ProcessError(f"the pause of pid {self.pid} ended before {op!r} was answered")
                return msg
            if msg[0] == op:
                return msg

    @property
    def threads(self) -> list[ThreadState]:
        """The stopped threads' registers (asked for on first use)."""
        if self._threads is None:
            if self._ended or self._final is not None:
                raise ProcessError(f"pid {self.pid} is no longer paused")
            self._send(("threads", self._n))
            self._threads = [ThreadState(tid, regs) for tid, regs in self._wait("threads")[2]]
        return self._threads

    def step_through(self, addr: int) -> int:
        return self.step_many(addr)[0]

    def step_many(self, addr: int, count: int = 1, before: StepArm | None = None) -> list[int]:
        """As :meth:`goprobe.process.PausedProcess.step_many`; *before* may only be None or the words of the
        ``arm`` given to :func:`run_paused_in_helper` (the helper writes them, and applies that arm's idle
        conditions)."""
        same = self._arm is not None and before is not None and (before.fd, before.size, before.slots) == (
            self._arm.fd, self._arm.size, self._arm.slots)
        if before is not None and not same:
            raise ProcessError("a step in the pause helper can only write the StepArm given to "
                               "run_paused_in_helper")
        if self._ended or self._final is not None:
            raise ProcessError(f"pid {self.pid} is no longer paused")
        if self._step == (addr, count):
            self._step = None
        else:
            self._send(("step", self._n, addr, count))
        _op, _n, tids, self.stop_ns, regs, self._ended = self._wait("stepped")
        if regs is not None:
            self._threads = [ThreadState(tid, r) for tid, r in regs]
        return tids

    @property
    def resumed(self) -> bool:
        """True once the process runs again (the helper may end the pause with the step: see StepArm)."""
        return self._ended or self._final is not None

    def finish(self) -> tuple:
        """Resume (unless the pause already ended); the helper's final ``resumed`` message."""
        if self._final is None:
            if not self._ended:
                self._send(("resume", self._n))
            self._wait("resumed")
        return self._final


def run_paused_in_helper(pid: int, body, *, timeout: float = 2.0, arm: StepArm | None = None,
                         step: tuple[int, int] | None = None):
    """Stop every thread of *pid* from the pause helper, call ``body(view)`` here, resume; returns
    ``(result, pause_ns)``. *arm*: what the helper writes before a step (see :class:`StepArm`; its map is
    passed to the helper). *step*: ``(addr, count)`` of the body's first ``step_many``, made by the helper as
    soon as the threads are stopped (the body only waits for its reply; goprobe, meanwhile, leaves the CPUs
    to the helper and the stepped threads). SIGINT/SIGTERM wait until the process runs again. Raises what
    :func:`goprobe.process.run_paused` raises, or what the body raised (after the process was resumed)."""
    _check_target(pid)
    helper = _get_helper()
    guard = _SignalGuard()
    guard.install()
    try:
        with helper.lock:
            helper.pauses += 1
            view = RemotePausedView(helper, helper.pauses, pid, arm, step)
            sent = None if arm is None else attrs.evolve(arm, words=None)
            view._send(("pause", view._n, pid, timeout, sent, step),
                       None if arm is None else [arm.fd, *arm.pending_rings])
            try:
                result = body(view)
            finally:
                final = view.finish()
    finally:
        guard.restore_and_deliver()
    _op, _n, err, pause_ns, died, _stop_ns = final
    if err is not None:
        _raise_from(err)
    if died:
        raise ProcessExitedError(f"pid {pid} exited while paused (killed?); nothing was left traced")
    return result, pause_ns
