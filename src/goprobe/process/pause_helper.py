"""goprobe's pause helper: a small process of its own that holds a pause in which threads are single-stepped.

Why a process of its own: to run a snapshot program inside the target, a stopped thread gets new registers
and the trap flag for one step (see ``_Tracer.step_many``). If its tracer died right then — goprobe killed
with SIGKILL, which no handler sees — the kernel would let the thread go on from the trigger instruction
with the wrong registers and the trap flag set, and the Go runtime would crash. The helper is that tracer
instead. It ignores the terminal's signals and runs in a session of its own, so what kills goprobe does not
reach it; when goprobe goes away mid-pause, its end of the socket closes, and the helper finishes the step,
puts the registers back, detaches and exits.

Run as ``python -m goprobe.process.pause_helper FD`` (FD: one end of a socket pair), by
:mod:`goprobe.process.remote_pause`. Requests and replies are length-prefixed pickles, between two processes of
the same goprobe; every message is a tuple whose first item names it and whose second is the pause number:

* ``("pause", n, pid, timeout, arm, step)`` (with descriptors attached when *arm*, a :class:`StepArm`, is
  given: its map, then its ``pending_rings``): stop every thread of *pid*; then, if *step* is
  ``(addr, count)``, step at once as a ``step`` request would (goprobe needs no CPU meanwhile). No reply of
  its own; what follows is answered inside the pause, or, if stopping failed, by the final
  ``("resumed", …)``.
* ``("step", n, addr, count)`` → ``("stepped", n, tids, stop_ns, regs, ended)``: :meth:`_Tracer.step_many`
  through *addr*. *regs*: every thread's registers as a ``threads`` reply has them, when the arm's
  ``thread_words`` are not all zero (else None). *ended*: the arm found nothing left to read, so the helper
  resumed the process at once and sent this reply after that, followed by ``("resumed", …)``.
* ``("threads", n)`` → ``("threads", n, [(tid, regs), …])``.
* ``("resume", n)`` → ``("resumed", n, error, pause_ns, died, stop_ns)``: detach; *error* is ``None`` or
  ``(class name, message)`` of the failure that ended the pause early.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import socket
import struct
import sys

_LEN = struct.Struct("<I")


def send_msg(sock: socket.socket, msg: tuple, fds: list[int] | None = None) -> None:
    """Send *msg*; a closed other end raises OSError (MSG_NOSIGNAL: never a SIGPIPE, which the CLI leaves
    at its default action, so a dead helper would otherwise kill goprobe)."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    frame = _LEN.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [frame], fds, socket.MSG_NOSIGNAL)
        frame = frame[sent:]
    if frame:
        sock.sendall(frame, socket.MSG_NOSIGNAL)


def recv_msg(sock: socket.socket) -> tuple[tuple | None, list[int]]:
    """The next message and the descriptors attached to it; ``(None, [])`` once the other end is closed."""
    head, fds = b"", []
    while len(head) < _LEN.size:
        chunk, got, _flags, _addr = socket.recv_fds(sock, _LEN.size - len(head), 250)
        if not chunk:
            return None, fds
        head += chunk
        fds += got
    (n,) = _LEN.unpack(head)
    body = bytearray()
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return pickle.loads(body), fds


def _error_tuple(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc)


class _Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parent = os.getppid()
        self.parent_gone = False
        self.early: tuple[list[int], int] | None = None  # (tids, stop_ns) of a pause that ended with its step

    def recv(self) -> tuple[tuple | None, list[int]]:
        if self.parent_gone:
            return None, []
        try:
            # goprobe's death closes its end of the socket, unless a child it forked still holds a copy: the
            # parent pid changing says so too.
            while not select.select([self.sock], [], [], 1.0)[0]:
                if os.getppid() != self.parent:
                    self.parent_gone = True
                    return None, []
            msg, fds = recv_msg(self.sock)
        except OSError:
            msg, fds = None, []
        if msg is None:
            self.parent_gone = True
        return msg, fds

    def send(self, msg: tuple) -> None:
        if self.parent_gone:
            return
        try:
            send_msg(self.sock, msg)
        except OSError:
            self.parent_gone = True

    def serve(self) -> None:
        while True:
            msg, fds = self.recv()
            if msg is None:
                return
            if msg[0] == "pause":
                self.pause(*msg[1:], fds=fds)
            else:
                # It belongs to a pause that ended early (its final reply went out already): dropped.
                for fd in fds:
                    os.close(fd)

    def pause(self, n: int, pid: int, timeout: float, arm, step, *, fds: list[int]) -> None:
        from goprobe.process.ptrace import _Timeout, _Tracer

        maps: list[mmap.mmap] = []
        rings: list[mmap.mmap] = []
        try:
            try:
                if arm is not None:
                    maps.append(mmap.mmap(fds[0], arm.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
                    arm = arm.bound_to(maps[0])
                    # A ring buffer's first two pages: its consumer position, then its producer position.
                    rings = [mmap.mmap(fd, 2 * mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
                             for fd in fds[1:1 + len(arm.pending_rings)]]
            except (OSError, IndexError) as exc:
                self.send(("resumed", n, ("ProcessError", f"the pause helper could not map the arm map: {exc}"),
                           None, False, 0))
                return
            finally:
                for fd in fds:
                    os.close(fd)
            self.early = None
            tracer = _Tracer(pid, timeout, lambda view: self.while_paused(n, view, arm, rings, step))
            tracer._run()  # on this thread: every ptrace request comes from it
            err = tracer.error
            if isinstance(err, _Timeout):
                err = err.as_error(pid, timeout)
            if err is not None:
                err = _error_tuple(err)
            if self.early is not None and err is None:
                self.send(("stepped", n, *self.early, None, True))
            self.send(("resumed", n, err, tracer.pause_ns, tracer.died, tracer.stop_ns))
        finally:
            for m in rings + maps:
                m.close()

    def while_paused(self, n: int, view, arm, rings: list[mmap.mmap], step) -> None:
        """Answer the pause's requests until it is resumed or goprobe is gone (the tracer detaches after).
        *step*: ``(addr, count)`` of a step to make at once, asked for with the pause."""
        while True:
            if step is not None:
                msg, step = ("step", n, *step), None
            else:
                msg, fds = self.recv()
                for fd in fds:
                    os.close(fd)
            if msg is None:
                return
            op = msg[0]
            if msg[1] != n:
                continue
            if op == "resume":
                return
            if op == "step":
                _op, _n, addr, count = msg
                tids = view.step_many(addr, count, arm)  # an error ends the pause; "resumed" carries it
                if arm is None:
                    self.send(("stepped", n, tids, view.stop_ns, None, False))
                    continue
                on_thread = any(_U64.unpack_from(arm.words, off)[0] for off in arm.thread_words)
                if (arm.thread_words or rings) and not on_thread and all(_empty(r) for r in rings):
                    self.early = (tids, view.stop_ns)  # sent once the threads run again
                    return
                regs = _registers(view) if on_thread else None  # goprobe is about to ask for them
                self.send(("stepped", n, tids, view.stop_ns, regs, False))
            elif op == "threads":
                self.send(("threads", n, _registers(view)))


def _registers(view) -> list[tuple[int, dict[str, int]]]:
    return [(t.tid, dict(t.regs)) for t in view.threads]


def _empty(ring: mmap.mmap) -> bool:
    """No record between a ring buffer's consumer position (page 0) and its producer position (page 1)."""
    return _U64.unpack_from(ring, 0)[0] == _U64.unpack_from(ring, mmap.PAGESIZE)[0]


_U64 = struct.Struct("<Q")


def main(argv: list[str]) -> int:
    # Whatever ends goprobe must not end the helper in the middle of a step: it leaves when goprobe's end of
    # the socket closes, after putting every thread back.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    from goprobe.process import _libc

    _libc.warm_up()
    try:
        _Server(sock).serve()
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
