"""Pausing a live Go process for a moment: every thread stopped with ptrace, registers read, then resumed.

Design points, each for a failure that would otherwise leave the target stopped:

* All ptrace calls run on a private tracer thread made for one pause. The kernel detaches every tracee of a
  tracer *thread* when that thread exits, so whatever goes wrong (a thread that never stops, an exception, a
  PausedProcess that is garbage-collected without being resumed) ends with the thread returning and the
  target released. If the whole goprobe process dies, the kernel does the same.
* PTRACE_SEIZE + PTRACE_INTERRUPT, not PTRACE_ATTACH: no SIGSTOP is sent, so nothing can leave the process in
  a job-control stop, and no stray signal reaches the program.
* A thread that reports a signal instead of the interrupt stop (Go sends itself SIGURG for preemption) counts
  as stopped; the signal is handed back on PTRACE_DETACH so the program still gets it.
* SIGINT and SIGTERM are deferred while threads are being stopped or resumed, and re-delivered after the
  last PTRACE_DETACH (only when pausing from the main thread, where Python runs signal handlers).
* A thread sent to run a snapshot program (``step_many``) gets registers whose only way on is back to
  where it stopped (through a ``ret``): a tracer's death at any instant leaves it correct.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import struct
import threading
import time
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Self

import attrs

from goprobe.errors import (
    GoprobeError,
    NotELFError,
    NotGoBinaryError,
    ProcessError,
    ProcessExitedError,
    ProcessNotFoundError,
    ProcessPermissionError,
    UnsupportedArchitectureError,
)
from goprobe.process import _libc
from goprobe.process.memory import ProcessMemory


def _freeze(regs: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(regs))


@attrs.frozen
class ThreadState:
    """One thread's registers at the pause (or in a core file).

    ``regs`` maps amd64 register names (rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip eflags fs_base gs_base
    orig_rax) to their values as unsigned 64-bit integers (orig_rax -1 reads as 2**64-1).
    """

    tid: int
    regs: Mapping[str, int] = attrs.field(converter=_freeze)


@attrs.frozen
class StepArm:
    """What :meth:`PausedProcess.step_many` writes before the chosen threads run: the id of the stepped thread
    number ``worker % len(tids)`` as a little-endian u64 at each ``(byte offset, worker)`` of *slots*, in the
    first *size* bytes of an mmap-able BPF array map (*fd*). Being data, not a callback, it can be handed to
    the pause helper process (:mod:`goprobe.process.pause_helper`), which maps the map itself.

    For a pause held by the helper: *thread_words* are byte offsets of u64 counts (in that map) of what the
    step found on a thread; when one is not zero, the step's reply carries every thread's registers, which
    goprobe will want. *pending_rings* are BPF ring buffers (fds) whose records goprobe reads while paused.
    When every count is zero and every ring empty, the helper resumes the process right after the step,
    with no round trip to goprobe: nothing needs it stopped any longer."""

    fd: int
    size: int
    slots: tuple[tuple[int, int], ...]
    thread_words: tuple[int, ...] = ()
    pending_rings: tuple[int, ...] = ()
    disarm: tuple[int, ...] = ()  # byte offsets of words set to zero when the step is over
    code: tuple[tuple[int, int], ...] = ()  # only threads stopped at a PC in these ranges are stepped
    # (byte offset of a u64, ns): that word is set to CLOCK_MONOTONIC + ns when the threads are chosen (the
    # program's deadline, counted from the stop rather than from when goprobe asked for the pause)
    deadline: tuple[int, int] = ()
    words: object = attrs.field(default=None, eq=False, repr=False)  # this process's mapping of the map

    def bound_to(self, words) -> StepArm:
        return attrs.evolve(self, words=words)

    def __call__(self, tids: list[int]) -> None:
        if self.words is None:
            raise ValueError("StepArm has no mapping of its map in this process (bound_to)")
        for off, worker in self.slots:
            _U64.pack_into(self.words, off, tids[worker % len(tids)])
        if self.deadline:
            off, ns = self.deadline
            _U64.pack_into(self.words, off, time.monotonic_ns() + ns)

    def step_over(self) -> None:
        """Clear the *disarm* words (the program must not run again once the threads run)."""
        if self.words is not None:
            for off in self.disarm:
                _U64.pack_into(self.words, off, 0)


_U64 = struct.Struct("<Q")


# --------------------------------------------------------------------------------------------------------
# /proc helpers


def _proc_state(pid: int, tid: int | None = None) -> str | None:
    """The one-letter scheduler state of a process (or thread), None if it does not exist."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2:][:1].decode()


def _is_dead(pid: int) -> bool:
    return _proc_state(pid) in (None, "Z", "X")


def _tracer_of(pid: int, tid: int) -> int:
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _list_tasks(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError):
        return []


# Executables already checked to be amd64 Go binaries, keyed by (device, inode, mtime).
_go_checked: dict[tuple[int, int, int], bool] = {}


def _check_target(pid: int) -> None:
    """Typed errors for a pid that cannot be paused: missing, dead, ourselves, not an amd64 Go program."""
    if not isinstance(pid, int) or pid <= 0:
        raise ProcessNotFoundError(f"pid {pid!r} is not a valid process id (give a positive integer)")
    state = _proc_state(pid)
    if state is None:
        raise ProcessNotFoundError(f"pid {pid} does not exist (did it exit?)")
    if state in ("Z", "X"):
        raise ProcessExitedError(f"pid {pid} has exited (it is a zombie waiting for its parent to reap it)")
    if pid == os.getpid():
        raise ProcessError(f"pid {pid} is goprobe's own process; a process cannot pause itself: pass another pid")
    exe = f"/proc/{pid}/exe"
    try:
        st = os.stat(exe)
        real = os.readlink(exe)
    except FileNotFoundError:
        if _is_dead(pid):
            raise ProcessExitedError(f"pid {pid} exited before it could be paused") from None
        raise NotGoBinaryError(f"pid {pid} has no executable (a kernel thread?); pass the pid of a Go program") from None
    except PermissionError:
        raise ProcessPermissionError(
            f"no permission to inspect pid {pid}: run as root or as its user, or grant CAP_SYS_PTRACE") from None
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if _go_checked.get(key):
        return
    from goprobe.dwarf.elf import ElfImage

    try:
        with ElfImage(exe) as img:
            arch = img.arch
            _ = img.go_version  # raises NotGoBinaryError
    except (NotELFError, NotGoBinaryError, UnsupportedArchitectureError):
        raise NotGoBinaryError(f"pid {pid} ({real}) is not a Go program; goprobe pauses programs built by "
                               "the Go toolchain") from None
    if arch != "amd64":
        raise UnsupportedArchitectureError(f"pid {pid} ({real}) is an {arch} program; pausing needs amd64")
    _go_checked[key] = True


# --------------------------------------------------------------------------------------------------------
# Signal deferral


class _SignalExit(SystemExit):
    """Unwinds the ``with`` body for a signal whose default action is to terminate the process."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class _SignalGuard:
    """Defers SIGINT/SIGTERM while threads are being stopped or resumed; passes them on inside the body.

    Inside the ``with`` body a signal behaves as usual (KeyboardInterrupt is raised there, so ``__exit__``
    resumes the process before it propagates); a signal whose disposition is SIG_DFL unwinds the body and is
    re-raised with that disposition after the last detach, so the process still dies of it.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.pending: list[int] = []
        self.in_body = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python runs handlers on the main thread only; a signal there unwinds it, not us
        for s in self.SIGNALS:
            prev = signal.getsignal(s)
            if prev is None:  # a handler installed from C: it could not be put back, so leave it alone
                continue
            self.previous[s] = prev
            signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.in_body:
            self._dispatch(signum, frame)
        elif signum not in self.pending:
            self.pending.append(signum)

    def _dispatch(self, signum: int, frame) -> None:
        prev = self.previous[signum]
        if prev == signal.SIG_IGN:
            return
        if prev == signal.SIG_DFL:
            self.in_body = False
            if signum not in self.pending:
                self.pending.append(signum)
            raise _SignalExit(signum)
        prev(signum, frame)  # e.g. default_int_handler raises KeyboardInterrupt

    def enter_body(self) -> None:
        """Start passing signals on; deliver those that arrived while threads were being stopped."""
        self.in_body = True
        while self.pending and self.in_body:  # if one raises, the rest wait for restore_and_deliver
            self._dispatch(self.pending.pop(0), None)

    def leave_body(self) -> None:
        self.in_body = False

    def restore_and_deliver(self) -> None:
        """Put the previous handlers back and re-raise deferred signals under them."""
        for s, prev in self.previous.items():
            signal.signal(s, prev)
        self.previous = {}
        pending, self.pending = self.pending, []
        for s in pending:
            signal.raise_signal(s)


# --------------------------------------------------------------------------------------------------------
# The tracer thread


class _Timeout(Exception):
    """Threads (``args[0]``) that did not stop in time."""

    def as_error(self, pid: int, timeout: float) -> ProcessError:
        tids = ", ".join(map(str, self.args[0]))
        return ProcessError(
            f"pid {pid}: thread(s) {tids} did not stop within {timeout} s (stuck in uninterruptible "
            "kernel work such as disk or NFS I/O?); every thread was released; retry or raise timeout")


_TRAP_FLAG = 0x100  # EFLAGS.TF
_SIGURG_BIT = 1 << (signal.SIGURG - 1)
# Errors a system call interrupted by a stop returns when the kernel will restart it (<linux/errno.h>).
_RESTART = {(1 << 64) - 512, (1 << 64) - 513, (1 << 64) - 514}  # ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
_RESTART_BLOCK = (1 << 64) - 516  # ERESTART_RESTARTBLOCK: restarted as restart_syscall
_NR_RESTART_SYSCALL = 219  # x86_64


def _continuation(regs) -> tuple[int, int]:
    """(rip, rax) with which the thread of stopped registers *regs* goes on as the kernel would resume it: a
    system call it was interrupted in and that the kernel would restart is made again (the ``syscall``
    instruction is 2 bytes), as arch_do_signal_or_restart does when no handler runs."""
    if regs.orig_rax < (1 << 63):
        if regs.rax in _RESTART:
            return regs.rip - 2, regs.orig_rax
        if regs.rax == _RESTART_BLOCK:
            return regs.rip - 2, _NR_RESTART_SYSCALL
    return regs.rip, regs.rax


def _blocks_sigurg(pid: int, tid: int) -> bool:
    """Whether thread *tid* blocks SIGURG (its SigBlk mask), or cannot be looked at."""
    try:
        with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigBlk:"):
                    return bool(int(line.split()[1], 16) & _SIGURG_BIT)
    except (OSError, ValueError):
        pass
    return True


STEP_THREADS_MAX = 8  # threads stepped at once at most (step_many)


class _Job:
    """A call made on the tracer thread (ptrace requests are only accepted from the tracing thread)."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            self.error = exc
        finally:
            self.done.set()


class _ResumeSignal:
    """``set()`` asks the tracer thread to resume the process (after the jobs queued before it)."""

    def __init__(self, jobs: queue.SimpleQueue) -> None:
        self._jobs = jobs

    def set(self) -> None:
        self._jobs.put(None)


class _Tracer:
    """Owns the ptrace relationship; every ptrace call of one pause happens on its thread."""

    def __init__(self, pid: int, timeout: float, body=None) -> None:
        _libc.warm_up()  # before the pause, not in it
        self.pid = pid
        # Made now: inside the pause every line of Python runs with caches the target's threads (and the
        # snapshot program) just filled with their own data, several times slower than here.
        self.memory = ProcessMemory(pid)
        self._saved_regs = [_libc.ffi.new("struct user_regs_struct *") for _ in range(STEP_THREADS_MAX)]
        self._step_regs = _libc.ffi.new("struct user_regs_struct *")
        self.timeout = timeout
        self.body = body  # run_paused: called on this thread while stopped; its result or exception is kept
        self.result = None
        self.stopped = threading.Event()  # set when the threads are stopped (or stopping failed)
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # work while paused; None: resume
        self.resume = _ResumeSignal(self.jobs)  # set by the owner to resume
        self.error: BaseException | None = None
        self.threads: list[ThreadState] = []
        self.regs_read = False
        self.seized: set[int] = set()
        self.signals: dict[int, int] = {}  # stopped tid → signal to hand back on detach (0: none)
        self.died = False
        self.t_first = 0
        self.stop_ns = 0
        self.pause_ns: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"goprobe-pause-{pid}", daemon=True)

    # Runs on the tracer thread.
    def _run(self) -> None:
        # Signals go to the main thread, where Python handles them; here they would only interrupt syscalls.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SignalGuard.SIGNALS)
        try:
            try:
                self._stop_all()
            except BaseException as exc:  # noqa: BLE001 - handed to the owner once everything is released
                self.error = exc
                self._detach_all()
                return
            finally:
                if self.body is None:
                    self.stopped.set()
            if self.body is not None:
                try:
                    self.result = self.body(_PausedView(self))
                except BaseException as exc:  # noqa: BLE001 - handed to the owner after the detach
                    self.error = exc
                self._detach_all()
                return
            while (job := self.jobs.get()) is not None:
                job.run()
            self._detach_all()
        finally:
            # Returning ends the thread: the kernel detaches (and wakes) anything still traced.
            self.stopped.set()

    def _stop_all(self) -> None:
        deadline = time.monotonic() + self.timeout
        known: set[int] = set()
        pending: set[int] = set()
        while True:
            new = [t for t in _list_tasks(self.pid) if t not in known]
            if not new:
                break
            for tid in new:
                known.add(tid)
                if self._seize(tid):
                    pending.add(tid)
            self._wait_stops(pending, deadline)
        self.stop_ns = time.monotonic_ns() - self.t_first if self.t_first else 0
        if not self.signals:
            self.died = True
            raise ProcessExitedError(f"pid {self.pid} exited while it was being paused")
        if self.body is None:
            self.read_registers()
        # run_paused: the body reads them when it needs them (_PausedView.threads); an eBPF snapshot of
        # goroutines that are all parked does not.

    def read_registers(self) -> None:
        """Fill ``threads`` with the registers of every stopped thread (once)."""
        if self.regs_read:
            return
        self.regs_read = True
        regs = _libc.ffi.new("struct user_regs_struct *")
        words = _libc.ffi.cast("unsigned long *", regs)
        n = len(_libc.USER_REGS_FIELDS)
        for tid in sorted(self.signals, key=lambda t: (t != self.pid, t)):
            r, err = _libc.ptrace(_libc.PTRACE_GETREGS, tid, 0, regs)
            if r == -1:
                if err == errno.ESRCH:  # killed while stopped
                    continue
                raise ProcessError(f"PTRACE_GETREGS on thread {tid} of pid {self.pid} failed: {os.strerror(err)}")
            self.threads.append(ThreadState(tid, _libc.regs_from_user_regs(_libc.ffi.unpack(words, n))))
        if not self.threads:
            self.died = True
            raise ProcessExitedError(f"pid {self.pid} exited while it was being paused")

    def _seize(self, tid: int) -> bool:
        r, err = _libc.ptrace(_libc.PTRACE_SEIZE, tid, 0, 0)
        if r == -1:
            if err == errno.ESRCH or _proc_state(self.pid, tid) in (None, "Z", "X"):
                return False  # exited between the listing and now
            if err == errno.EPERM:
                tracer = _tracer_of(self.pid, tid)
                if tracer:
                    raise ProcessPermissionError(
                        f"thread {tid} of pid {self.pid} is already traced by pid {tracer} (a debugger?); "
                        "detach it first")
                raise ProcessPermissionError(
                    f"no permission to trace pid {self.pid}: run as root or set kernel.yama.ptrace_scope=0 / "
                    "grant CAP_SYS_PTRACE")
            raise ProcessError(f"PTRACE_SEIZE of thread {tid} of pid {self.pid} failed: {os.strerror(err)}")
        self.seized.add(tid)
        if not self.t_first:
            self.t_first = time.monotonic_ns()
        _libc.ptrace(_libc.PTRACE_INTERRUPT, tid)  # ESRCH: it is dying; waitpid reports its exit
        return True

    def _wait_stops(self, pending: set[int], deadline: float) -> None:
        delay = 0.0
        spin_until = time.monotonic() + 0.002
        while pending:
            progressed = False
            for tid in sorted(pending):
                r, status, err = _libc.waitpid(tid, _libc.WALL | _libc.WNOHANG)
                if r == 0:
                    continue
                if r == -1 and err == errno.EINTR:
                    continue
                progressed = True
                pending.discard(tid)
                if r == -1 or os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    self.seized.discard(tid)  # gone (and reaped by this wait)
                elif os.WIFSTOPPED(status):
                    event = status >> 16
                    # A signal-delivery stop: hand the signal back on detach. Interrupt or group stop: nothing.
                    self.signals[tid] = os.WSTOPSIG(status) if event == 0 else 0
            if not pending:
                break
            if progressed:
                delay = 0.0
                continue
            if time.monotonic() > deadline:
                raise _Timeout(sorted(pending))
            # Threads stop within microseconds unless busy in the kernel. Yield the CPU at first (a thread woken
            # to stop may be queued on ours; a sleep would oversleep by tens of microseconds), then back off.
            if time.monotonic() < spin_until:
                os.sched_yield()
                continue
            delay = min(delay * 2 or 20e-6, 1e-3)
            time.sleep(delay)

    def step_through(self, addr: int) -> int:
        """Make one stopped thread execute the single instruction at *addr* and stop again, its registers
        restored after; returns the thread id. A uprobe on *addr* then runs its
        program in the target's own context (its memory read directly) while every other thread stays
        stopped."""
        return self.step_many(addr)[0]

    def step_many(self, addr: int, count: int = 1, before=None) -> list[int]:
        """Like :meth:`step_through`, with up to *count* threads at the same time (each can run its share of
        the program's work on a CPU of its own); returns their ids. *before(tids)* is called once they are
        chosen, before any of them runs.

        *addr* must be a ``ret`` instruction. A chosen thread gets, as the word below its stack pointer, the
        address it was stopped at (one step back onto the system call instruction when the kernel would
        restart the call it was interrupted in), and then registers that differ from its own only in that
        ``rip`` is *addr*, ``rsp`` is 8 lower, and the call to restart is set up. So whatever happens next —
        goprobe or its helper killed, the uprobe gone — the ``ret`` alone puts the thread back where it was:
        no state ever depends on a tracer that lives to restore it. The thread is resumed (not stepped: a
        trap flag outliving its tracer would kill the program); the snapshot program at *addr* sends the
        thread a SIGURG when done, which stops it again (a traced thread) before it runs any code of its own,
        or, with no tracer left, reaches Go's handler as a harmless spurious preemption request.

        With a :class:`StepArm` whose ``code`` is set, only threads stopped at a PC there are chosen, and
        never one that blocks SIGURG."""
        # Prefer threads in an interrupt stop (no signal of their own to hand back), and not the main thread:
        # if the process is killed during the step, another thread's death is reported at once, and waiting
        # for the main thread takes any tracee's report (see _wait_one), so it is only ever stepped alone.
        order = sorted(self.signals, key=lambda t: (self.signals[t] != 0, t == self.pid, t))
        if count > 1 and any(t != self.pid for t in order):
            order = [t for t in order if t != self.pid]
        code = getattr(before, "code", ())
        saved: dict[int, object] = {}  # chosen thread → its registers at the stop
        started: set[int] = set()  # resumed (they run their way back through the ret)
        running: set[int] = set()  # resumed and not seen stopped since
        pinned: dict[int, set[int]] = {}
        try:
            for tid in order:
                if len(saved) == min(count, len(self._saved_regs)):
                    break
                buf = self._saved_regs[len(saved)]
                if _libc.ptrace(_libc.PTRACE_GETREGS, tid, 0, buf)[0] == -1:
                    continue  # killed while stopped: try another thread
                if code and not (any(lo <= buf.rip < hi for lo, hi in code) and not _blocks_sigurg(self.pid, tid)):
                    continue
                rip, rax = _continuation(buf)
                # The word below the stack pointer is free in Go code (Go's own asynchronous preemption pushes
                # a return address there).
                if _libc.ptrace(_libc.PTRACE_POKEDATA, tid, buf.rsp - 8, rip)[0] == -1:
                    continue  # no stack below: try another thread
                regs = self._step_regs
                regs[0] = buf[0]
                regs.rip = addr
                regs.rsp = buf.rsp - 8
                regs.rax = rax
                regs.orig_rax = (1 << 64) - 1  # the restart, if any, is in rip/rax: the kernel makes none
                regs.eflags &= ~_TRAP_FLAG
                saved[tid] = buf
                if _libc.ptrace(_libc.PTRACE_SETREGS, tid, 0, regs)[0] == -1:
                    del saved[tid]  # killed while stopped: try another thread
            tids = list(saved)
            if tids and self.memory.read(addr, 1) not in (b"\xc3", b"\xcc"):  # ret, or the uprobe's int3 on it
                raise ProcessError(f"pid {self.pid}: {addr:#x} is not a ret instruction; nothing was stepped")
            if not tids:
                if not self.signals:
                    self.died = True
                    raise ProcessExitedError(f"pid {self.pid} has no thread left to run the snapshot program on")
                raise ProcessError(f"pid {self.pid}: no stopped thread can run the snapshot program (none is "
                                   "in Go code with SIGURG unblocked); retry, or use backend='interp'")
            if before is not None:
                before(tids)
            if len(tids) > 1:
                # Woken together, the threads tend to be queued on one CPU and run one after the other: each
                # gets a CPU of its own for the step (its own affinity mask is put back right after). The last
                # one started gets the CPU this thread is on: one started earlier there could preempt this
                # thread before it has started the others, which would then wait for its whole share.
                here = _libc.current_cpu()
                for i, tid in enumerate(tids):
                    try:
                        allowed = sorted(os.sched_getaffinity(tid))
                        if here in allowed:
                            allowed.remove(here)
                            allowed.append(here)
                        os.sched_setaffinity(tid, {allowed[(i - len(tids)) % len(allowed)]})
                        pinned[tid] = set(allowed)
                    except OSError:
                        continue  # it runs where the scheduler puts it
            for tid in tids:
                self._cont(tid)
                started.add(tid)
                running.add(tid)
            for tid in tids:
                self._finish_step(tid, addr)
                running.discard(tid)
            return tids
        finally:
            if isinstance(before, StepArm):
                before.step_over()
            for tid in running:  # an error left it running: stop it again (wherever it is, it is consistent)
                _libc.ptrace(_libc.PTRACE_INTERRUPT, tid)
                try:
                    self._wait_one(tid)
                except GoprobeError:
                    continue
            for tid, buf in saved.items():
                if tid not in started:  # never resumed: its own registers back (the word below is unused)
                    _libc.ptrace(_libc.PTRACE_SETREGS, tid, 0, buf)
            for tid, allowed in pinned.items():
                try:
                    os.sched_setaffinity(tid, allowed)
                except OSError:
                    pass  # it exited

    def _cont(self, tid: int) -> None:
        r, err = _libc.ptrace(_libc.PTRACE_CONT, tid, 0, 0)
        if r == -1:
            raise ProcessError(f"PTRACE_CONT of thread {tid} of pid {self.pid} failed: {os.strerror(err)}")

    def _finish_step(self, tid: int, addr: int) -> None:
        """Wait until resumed thread *tid* stops again after the ``ret`` at *addr*; resume it again when it
        stopped before (a signal of its own came due first: it is handed back on detach)."""
        for _attempt in range(8):
            status = self._wait_step(tid)
            if status is None:
                # No stop: the program did not signal (not attached, or not armed for this thread). Stopping it
                # now is safe wherever it is; the caller finds out from what the program left.
                _libc.ptrace(_libc.PTRACE_INTERRUPT, tid)
                self._wait_one(tid)
                return
            sig, event = os.WSTOPSIG(status), status >> 16
            regs = self._step_regs
            _libc.ptrace(_libc.PTRACE_GETREGS, tid, 0, regs)
            if regs.rip != addr:
                return  # through the ret: the SIGURG stop (dropped: it is resumed with its own signal)
            if event == 0 and sig != signal.SIGURG and self.signals.get(tid) == 0:
                self.signals[tid] = sig  # a signal came due first: the program gets it when resumed
            self._cont(tid)
        raise ProcessError(f"thread {tid} of pid {self.pid} kept stopping before the snapshot program's "
                           "instruction; it did not run")

    def _wait_step(self, tid: int) -> int | None:
        """The next stop of resumed thread *tid*, or None if it has not stopped within the step's time limit
        (the pause's timeout; the program's own run may take that long on a very large process)."""
        deadline = time.monotonic() + max(self.timeout, 1.0)
        delay = 0.0
        while True:
            status = self._wait_one(tid, block=False)
            if status is not None:
                return status
            if time.monotonic() > deadline:
                return None
            # Sleeping (not spinning) leaves this CPU to the stepped thread that may have been put on it.
            delay = min(delay * 2 or 10e-6, 200e-6)
            time.sleep(delay)

    def _wait_one(self, tid: int, block: bool = True) -> int | None:
        """The stop status of *tid* after a single step. The wait blocks: a step always ends in a stop or in
        the thread's death, and polling would add its sleep to the pause.

        If the process is killed meanwhile, its other (stopped) threads exit and stay zombies until their
        tracer reaps them, and a killed thread-group leader is reported only after all of them are: for the
        leader, every tracee of this thread is waited for (else the wait would never return). Other threads
        are reported at once; they are waited for alone, which never reaps the leader's exit status (the
        target's parent may be this very process, and it wants that status)."""
        leader = tid == self.pid
        flags = _libc.WALL | _libc.WNOTHREAD | (0 if block else _libc.WNOHANG)
        while True:
            r, status, err = _libc.waitpid(-1 if leader else tid, flags)
            if r == 0:
                return None  # not blocking, and nothing to report yet
            if r == -1:
                if err == errno.EINTR:
                    continue
                if err == errno.ECHILD:  # no tracee left: every thread is gone
                    self.seized.clear()
                    self.signals.clear()
                    self.died = True
                    raise ProcessExitedError(f"pid {self.pid}: thread {tid} exited during the snapshot")
                raise ProcessError(f"waiting for thread {tid} of pid {self.pid} failed: {os.strerror(err)}")
            if r != tid:
                if not os.WIFSTOPPED(status):  # another thread exited (the process is being killed)
                    self.seized.discard(r)
                    self.signals.pop(r, None)
                continue  # the others are stopped already: nothing else can be reported for them
            if not os.WIFSTOPPED(status):
                self.seized.discard(tid)
                self.signals.pop(tid, None)
                self.died = not self.signals
                raise ProcessExitedError(f"pid {self.pid}: thread {tid} exited during the snapshot")
            return status

    def _detach_all(self) -> None:
        gone = 0
        # Seized threads not yet seen stopped (error paths only) fail with ESRCH while running; our thread's
        # exit releases those.
        for tid in sorted(self.seized):
            r, _err = _libc.ptrace(_libc.PTRACE_DETACH, tid, 0, self.signals.get(tid, 0))
            if r == -1 and tid in self.signals:
                gone += 1
                # Killed while stopped: reap it if it is already a zombie (our thread's exit does the rest).
                _libc.waitpid(tid, _libc.WALL | _libc.WNOHANG)
        self.seized = set()
        if self.t_first:
            self.pause_ns = time.monotonic_ns() - self.t_first
        if self.signals and gone == len(self.signals):
            self.died = True
        self.signals = {}


# --------------------------------------------------------------------------------------------------------
# Public API


class PausedProcess:
    """A Go process with every thread stopped; a context manager that resumes it on exit.

    Attributes: ``pid``; ``threads`` (:class:`ThreadState` of each thread at the pause, the main thread
    first); ``memory`` (:class:`ProcessMemory`); ``stop_ns`` (time to stop every thread); ``pause_ns``
    (filled on resume: time from the first stop request to the last thread resumed).

    Leaving the ``with`` block resumes every thread, whether it ends normally, by an exception or by
    SIGINT/SIGTERM. If the process died during the pause, leaving raises :class:`ProcessExitedError`.
    """

    def __init__(self, tracer: _Tracer, guard: _SignalGuard) -> None:
        self._tracer = tracer
        self._guard = guard
        self.pid = tracer.pid
        self.threads: list[ThreadState] = tracer.threads
        self.memory = ProcessMemory(tracer.pid)
        self.stop_ns: int = tracer.stop_ns
        self.pause_ns: int | None = None
        self._done = False
        # If this object is dropped without resume(), the tracer thread still detaches.
        self._finalizer = weakref.finalize(self, tracer.resume.set)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.resume()
        except ProcessExitedError:
            # The death explains the body's exception (e.g. a failed read) better; interrupts keep priority.
            if exc is None or isinstance(exc, Exception):
                raise
        return False

    @property
    def resumed(self) -> bool:
        """True once :meth:`resume` ran (the threads run again, or the process died)."""
        return self._done

    def step_through(self, addr: int) -> int:
        """Run the one instruction at *addr* on a stopped thread (it comes back to where it was), so that a
        uprobe there runs its BPF program in the target's context; the process stays paused. Returns the
        thread id. Raises :class:`ProcessError` (or
        :class:`ProcessExitedError`) if that cannot be done. *addr* must be a ``ret``: see
        :meth:`_Tracer.step_many`, which leaves the thread safe should this process die at any instant."""
        return self.step_many(addr)[0]

    def step_many(self, addr: int, count: int = 1, before=None) -> list[int]:
        """Like :meth:`step_through`, with up to *count* threads at the same time; returns their ids.
        *before(tids)* is called once they are chosen, before any of them runs."""
        if self._done:
            raise ProcessError(f"pid {self.pid} is no longer paused")
        t = self._tracer
        if threading.current_thread() is t.thread:
            return t.step_many(addr, count, before)
        job = _Job(lambda: t.step_many(addr, count, before))
        t.jobs.put(job)
        while not job.done.wait(0.5):
            if not t.thread.is_alive():
                raise ProcessError(f"the tracer of pid {self.pid} ended; the process was released")
        if job.error is not None:
            raise job.error
        return job.result

    def resume(self) -> None:
        """Resume every thread (idempotent); raises :class:`ProcessExitedError` if the process died meanwhile."""
        if self._done:
            return
        self._done = True
        self._guard.leave_body()
        t = self._tracer
        try:
            t.resume.set()
            t.thread.join()
            self._finalizer.detach()
        finally:
            self.pause_ns = t.pause_ns
            self._guard.restore_and_deliver()
        # Only the detach results count: a process may well exit right after it was resumed.
        if t.died:
            raise ProcessExitedError(f"pid {self.pid} exited while paused (killed?); nothing was left traced")


class _PausedView:
    """What a :func:`run_paused` body sees: ``pid``, ``threads``, ``memory`` and :meth:`step_through`, as on a
    :class:`PausedProcess` (the body runs on the tracer thread itself)."""

    def __init__(self, tracer: _Tracer) -> None:
        self._tracer = tracer
        self.pid = tracer.pid
        self.memory = tracer.memory
        self.stop_ns: int = tracer.stop_ns

    @property
    def threads(self) -> list[ThreadState]:
        """The stopped threads' registers, read on first use (a body that needs none saves the calls)."""
        self._tracer.read_registers()
        return self._tracer.threads

    def step_through(self, addr: int) -> int:
        return self._tracer.step_through(addr)

    def step_many(self, addr: int, count: int = 1, before=None) -> list[int]:
        return self._tracer.step_many(addr, count, before)


def run_paused(pid: int, body, *, timeout: float = 2.0):
    """Stop every thread of *pid*, call ``body(paused)``, resume; returns ``(result, pause_ns)``.

    Like ``with pause(pid) as paused: body(paused)``, but the body runs on the thread that stopped the process,
    so no hand-over between threads adds to the pause. SIGINT/SIGTERM wait until the process runs again.
    Raises what :func:`pause` raises, or what the body raised (after the process was resumed).
    """
    _check_target(pid)
    guard = _SignalGuard()
    guard.install()
    tracer = _Tracer(pid, timeout, body)
    try:
        tracer.thread.start()
        tracer.thread.join()
    finally:
        if tracer.thread.is_alive():  # interrupted while joining: the body and the detach still finish
            tracer.thread.join()
        guard.restore_and_deliver()
    err = tracer.error
    if err is not None:
        if isinstance(err, _Timeout):
            raise err.as_error(pid, timeout)
        raise err
    if tracer.died:
        raise ProcessExitedError(f"pid {pid} exited while paused (killed?); nothing was left traced")
    return tracer.result, tracer.pause_ns


def pause(pid: int, *, timeout: float = 2.0) -> PausedProcess:
    """Stop every thread of Go process *pid* and read their registers; use the result as a context manager.

    ``with pause(pid) as p:`` — inside, ``p.threads`` and ``p.memory`` show the process frozen; on exit every
    thread resumes. Threads started while the pause is being set up are stopped too; threads that exit
    meanwhile are dropped. Keep the body short: the program is frozen for its whole duration.

    Raises :class:`ProcessNotFoundError`, :class:`ProcessExitedError`, :class:`ProcessPermissionError`,
    :class:`NotGoBinaryError` (not a Go program), or :class:`ProcessError` when a thread does not stop within
    *timeout* seconds (every thread is released before any of these is raised).
    """
    _check_target(pid)
    guard = _SignalGuard()
    guard.install()
    tracer = _Tracer(pid, timeout)
    try:
        tracer.thread.start()
        tracer.stopped.wait()
        if tracer.error is not None:
            tracer.thread.join()
            err = tracer.error
            if isinstance(err, _Timeout):
                raise err.as_error(pid, timeout)
            if isinstance(err, GoprobeError):
                raise err
            raise ProcessError(f"pausing pid {pid} failed: {err!r}") from err
    except BaseException:
        tracer.resume.set()
        if tracer.thread.is_alive():
            tracer.thread.join()
        guard.restore_and_deliver()
        raise
    paused = PausedProcess(tracer, guard)
    try:
        guard.enter_body()
    except BaseException:
        try:
            paused.resume()
        except ProcessExitedError:
            pass
        raise
    return paused
