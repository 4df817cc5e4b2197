"""The process layer against real Go processes: pausing with ptrace, process_vm_readv reads, core files.

Every test that pauses a process checks afterwards, from /proc, that no thread is left stopped or traced and
that the program still runs (its busy goroutine keeps burning CPU).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import build_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import goprobe
from goprobe.errors import (
    CoreFileError,
    NotGoBinaryError,
    ProcessError,
    ProcessExitedError,
    ProcessNotFoundError,
    ProcessPermissionError,
)
from goprobe.process import (
    CoreFile,
    ProcessMemory,
    TestMemory,
    ThreadState,
    _libc,
    pause,
)
from goprobe.testing.fixture_process import running

# --------------------------------------------------------------------------------------------------------
# /proc helpers


def tasks(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def thread_state(pid: int, tid: int) -> str:
    data = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return data[data.rindex(")") + 2]


def tracer_pid(pid: int, tid: int) -> int:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError("no TracerPid line")


def utime(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_text()
    return int(data[data.rindex(")") + 2:].split()[11])


def maps(pid: int) -> list[tuple[int, int, str, str]]:
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append((lo, hi, parts[1], parts[5] if len(parts) > 5 else ""))
    return out


def assert_all_stopped(pid: int) -> None:
    states = {tid: thread_state(pid, tid) for tid in tasks(pid)}
    assert set(states.values()) == {"t"}, states


def assert_released_and_running(pid: int) -> None:
    """No thread stopped or traced (allowing a moment for the scheduler), and the busy goroutine runs."""
    deadline = time.monotonic() + 2.0
    while True:
        bad = {tid: (thread_state(pid, tid), tracer_pid(pid, tid)) for tid in tasks(pid)
               if thread_state(pid, tid) in "tT" or tracer_pid(pid, tid)}
        if not bad:
            break
        assert time.monotonic() < deadline, f"threads left stopped or traced: {bad}"
        time.sleep(0.01)
    before = utime(pid)
    deadline = time.monotonic() + 3.0
    while utime(pid) < before + 3:  # clock ticks are 10 ms: ≥ 30 ms of CPU
        assert time.monotonic() < deadline, "the busy goroutine stopped running"
        time.sleep(0.05)


def goids(binary: Path, mem) -> list[int]:
    """Goroutine ids of every g in runtime.allgs, read through *mem* in one batch."""
    with goprobe.GoBinary(binary) as b:
        allgs = b.global_variable("runtime.allgs").address
        goid_off = b.runtime["g"].offset("goid")
    ptr, n = struct.unpack("<QQ", mem.read(allgs, 16))
    gs = struct.unpack(f"<{n}Q", mem.read(ptr, 8 * n))
    return [struct.unpack("<Q", raw)[0] for raw in mem.read_many([(g + goid_off, 8) for g in gs])]


def global_addr(binary: Path, name: str) -> int:
    with goprobe.GoBinary(binary) as b:
        return b.global_variable(name).address


# --------------------------------------------------------------------------------------------------------
# TestMemory


@st.composite
def memory_models(draw):
    """Random segments (some adjacent, some apart) and the byte-level model they stand for."""
    segments: dict[int, bytes] = {}
    addr = draw(st.integers(0, 64))
    for _ in range(draw(st.integers(0, 5))):
        data = draw(st.binary(min_size=1, max_size=48))
        segments[addr] = data
        addr += len(data) + draw(st.sampled_from([0, 0, 1, 7, 30]))
    model = {a + i: b for a, data in segments.items() for i, b in enumerate(data)}
    return segments, model, addr


@settings(max_examples=300, deadline=None)
@given(memory_models(), st.lists(st.tuples(st.integers(-8, 400), st.integers(0, 64)), max_size=20))
def test_test_memory_equals_model(seg_model, spans):
    segments, model, _ = seg_model
    mem = TestMemory(segments)
    want = []
    for addr, size in spans:
        if addr < 0 or any(a not in model for a in range(addr, addr + size)):
            want.append(None)
        else:
            want.append(bytes(model[a] for a in range(addr, addr + size)))
    assert [mem.read(a, n) for a, n in spans] == want
    assert mem.read_many(spans) == want


def test_test_memory_edges():
    mem = TestMemory({0x1000: b"abcd", 0x1004: b"ef", 0x2000: b""})
    assert mem.read(0x1002, 4) == b"cdef"  # adjacent segments join
    assert mem.read(0x1000, 0) == b""
    assert mem.read(0x1005, 2) is None
    assert mem.read(2**64 - 1, 2) is None
    with pytest.raises(ValueError):
        mem.read(0x1000, -1)
    with pytest.raises(ValueError):
        TestMemory({0x10: b"abc", 0x11: b"x"})


# --------------------------------------------------------------------------------------------------------
# Pause and read a live process, every Go version


def test_pause_registers_and_allglen(go_version):
    binary = build_fixture("goroutines", go_version, "opt")
    allglen_addr = global_addr(binary, "runtime.allglen")
    with running(binary, ["-n", "1000"]) as proc:
        pid = proc.pid
        mapping = maps(pid)
        exe = os.readlink(f"/proc/{pid}/exe")
        text = [(lo, hi) for lo, hi, perm, path in mapping if "x" in perm and path in (exe, "[vdso]")]
        with pause(pid) as p:
            assert_all_stopped(pid)
            assert {t.tid for t in p.threads} == set(tasks(pid))
            assert p.threads[0].tid == pid
            for t in p.threads:
                assert set(t.regs) == set(_libc.REG_NAMES)
                assert tracer_pid(pid, t.tid) in tasks(os.getpid())  # our tracer thread
                rip, rsp = t.regs["rip"], t.regs["rsp"]
                assert any(lo <= rip < hi for lo, hi in text), hex(rip)
                assert any(lo <= rsp < hi for lo, hi, _, _ in mapping), hex(rsp)
                assert t.regs["fs_base"] != 0  # Go sets up TLS on every thread
            allglen = int.from_bytes(p.memory.read(allglen_addr, 8), "little")
            assert allglen >= 1000
            ids = goids(binary, p.memory)
            assert len(ids) == allglen
            assert set(proc.truth["goroutines"].values()) <= set(ids)
            assert p.pause_ns is None and p.stop_ns > 0
        assert p.pause_ns is not None and p.pause_ns >= p.stop_ns
        assert_released_and_running(pid)


# --------------------------------------------------------------------------------------------------------
# ProcessMemory


def test_read_many_mixed_spans(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    allglen_addr = global_addr(binary, "runtime.allglen")
    with running(binary) as proc:
        mem = ProcessMemory(proc.pid)
        mapping = maps(proc.pid)
        text_lo, text_hi = next((lo, hi) for lo, hi, perm, _ in mapping if "x" in perm)
        rw_lo, rw_hi = next((lo, hi) for lo, hi, perm, _ in mapping if perm.startswith("rw"))
        # An unmapped hole right after a mapping, and a span that runs from a mapping into the hole.
        hole = next(hi for (_, hi, _, _), (lo2, _, _, _) in itertools.pairwise(mapping) if hi < lo2)
        with open(binary, "rb") as f:
            f.seek(0)
            elf_head = f.read(64)
        valid = [(allglen_addr, 8), (text_lo, 64), (text_lo, 0), (rw_hi - 16, 16), (text_hi - 4096, 4096)]
        invalid = [(0, 8), (0x10, 1), (hole, 8), (hole - 4, 8), (0xFFFF_8000_0000_0000, 8), (2**64 - 4, 8),
                   (-8, 8)]
        spans = []
        for k in range(3000):  # three system-call batches; bad spans scattered through them
            spans.append(invalid[k % len(invalid)] if k % 5 == 2 else valid[k % len(valid)])
        got = mem.read_many(spans)
        for span, data in zip(spans, got):
            if span in invalid:
                assert data is None, span
            else:
                assert data is not None and len(data) == span[1], span
                assert data == mem.read(*span)
        # All-valid spans: one system call per 1024 (IOV_MAX); each bad span costs two more calls at most.
        calls = []
        real_readv = mem._readv
        mem._readv = lambda part: calls.append(len(part)) or real_readv(part)
        all_valid = [valid[k % len(valid)] for k in range(3000)]
        assert None not in mem.read_many(all_valid)
        nonempty = sum(size > 0 for _, size in all_valid)  # empty spans need no system call
        assert calls == [1024, 1024, nonempty - 2048]
        calls.clear()
        assert mem.read_many(spans) == got
        assert len(calls) <= 3 + 2 * sum(span in invalid for span in spans)
        del mem._readv
        assert mem.read(text_lo, 64)[:4] == elf_head[:4]  # non-PIE: the ELF header starts the text mapping
        assert int.from_bytes(mem.read(allglen_addr, 8), "little") >= 1
        assert mem.read(rw_lo, rw_hi - rw_lo) is not None
        assert mem.read_many([]) == []
        with pytest.raises(ValueError):
            mem.read(text_lo, -1)
    # The process has exited (and been reaped): reads now fail loudly, not with None.
    with pytest.raises((ProcessExitedError, ProcessNotFoundError)):
        mem.read(allglen_addr, 8)


def test_dead_and_missing_pids():
    child = subprocess.Popen(["true"])
    while _state_or_none(child.pid) not in ("Z", None):
        time.sleep(0.01)
    zombie = child.pid
    with pytest.raises(ProcessExitedError, match="exited"):
        pause(zombie)
    with pytest.raises(ProcessExitedError, match="exited"):
        ProcessMemory(zombie).read(0x400000, 8)
    child.wait()
    with pytest.raises(ProcessNotFoundError, match="does not exist"):
        pause(zombie)  # dead and reaped (pids are not reused this fast)
    with pytest.raises(ProcessNotFoundError, match="does not exist"):
        ProcessMemory(zombie)
    never = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    with pytest.raises(ProcessNotFoundError, match="does not exist"):
        pause(never)
    with pytest.raises(ProcessNotFoundError):
        pause(-1)
    with pytest.raises(ProcessError, match="itself"):
        pause(os.getpid())
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(NotGoBinaryError, match="not a Go program"):
            pause(sleeper.pid)
        assert tracer_pid(sleeper.pid, sleeper.pid) == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def _state_or_none(pid: int) -> str | None:
    try:
        return thread_state(pid, pid)
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------------
# Safety


def test_target_killed_while_paused(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    before = threading.active_count()
    with running(binary) as proc:
        with pytest.raises(ProcessExitedError, match="exited while paused"), pause(proc.pid) as p:
            os.kill(proc.pid, signal.SIGKILL)
        assert p.pause_ns is not None
        # Our tracer released its (zombie) tracees: the real parent can reap the process at once.
        assert proc.proc.wait(timeout=5) == -signal.SIGKILL
        assert not os.path.exists(f"/proc/{proc.pid}")
    assert threading.active_count() == before


def _status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as fh:
        return next(line.split(":", 1)[1].strip() for line in fh if line.startswith(name + ":"))


def test_warm_up_touches_no_process(monkeypatch):
    """The calls made before a pause to set cffi up act on no process: a child of ours is still ours to reap,
    and nothing is traced."""
    child = subprocess.Popen(["sleep", "0.2"])
    monkeypatch.setattr(_libc, "_warm", False)
    _libc.warm_up()
    assert _libc._warm
    assert _status_field(child.pid, "TracerPid") == "0"
    assert child.wait(timeout=5) == 0


@pytest.mark.parametrize("main_thread", [False, True])
def test_target_killed_during_a_single_step(newest_version, monkeypatch, main_thread):
    """The process dies while goprobe waits for the stepped thread: a clear error, not a hang (the kernel
    reports the main thread's death only after goprobe has reaped every other thread it traces)."""
    import goprobe
    from goprobe.backends.ebpf.snapshot_session import find_trigger

    binary = build_fixture("goroutines", newest_version, "opt")
    real_waitpid = _libc.waitpid
    with running(binary) as proc:
        with goprobe.open_binary(binary) as b:
            ret = find_trigger(b, str(binary), 0).address  # a step goes through a `ret` (see step_many)

        def kill_first(tid, options):
            if _state_or_none(proc.pid) not in ("Z", None):
                os.kill(proc.pid, signal.SIGKILL)
                time.sleep(0.2)  # every thread is dead by now
            return real_waitpid(tid, options)

        outcome = []

        def step() -> None:
            try:
                with pause(proc.pid) as p:
                    if main_thread:  # every other thread has a signal to hand back: the main thread is stepped
                        p._tracer.signals.update({t: signal.SIGURG for t in p._tracer.signals if t != proc.pid})
                    monkeypatch.setattr(_libc, "waitpid", kill_first)
                    p.step_through(ret)
            except BaseException as exc:  # noqa: BLE001 - examined below
                outcome.append(exc)

        worker = threading.Thread(target=step, daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "the tracer hung waiting for a thread of a killed process"
        assert len(outcome) == 1 and isinstance(outcome[0], ProcessExitedError), outcome
        monkeypatch.undo()
        if not main_thread:  # the main thread's exit status is goprobe's to reap when goprobe is its parent
            assert proc.proc.wait(timeout=5) == -signal.SIGKILL
        assert proc.proc.wait(timeout=5) in (0, -signal.SIGKILL)
        assert not os.path.exists(f"/proc/{proc.pid}")


def test_reading_a_killed_process_inside_the_pause(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    addr = global_addr(binary, "runtime.allglen")
    with running(binary) as proc:
        with pytest.raises(ProcessExitedError) as info, pause(proc.pid) as p:
            assert p.memory.read(addr, 8) is not None
            os.kill(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _state_or_none(proc.pid) not in ("Z", None):
                assert time.monotonic() < deadline
                time.sleep(0.005)
            p.memory.read(addr, 8)
        assert "exited" in str(info.value)
        assert proc.proc.wait(timeout=5) == -signal.SIGKILL


def test_signal_to_target_during_pause_is_delivered(newest_version):
    """A signal sent while the threads are stopped is not lost: the fixture exits 0 on SIGTERM."""
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary) as proc:
        with pause(proc.pid):
            os.kill(proc.pid, signal.SIGTERM)
            time.sleep(0.05)
            assert_all_stopped(proc.pid)
        assert proc.proc.wait(timeout=5) == 0


CHILD = textwrap.dedent("""
    import json, os, sys, time
    from goprobe.process import pause

    def status(pid):
        out = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
            tracer = [l for l in open(f"/proc/{pid}/task/{tid}/status") if l.startswith("TracerPid:")]
            out[tid] = [stat[stat.rindex(")") + 2], int(tracer[0].split()[1])]
        return out

    pid = int(sys.argv[1])
    try:
        with pause(pid) as p:
            print("paused", flush=True)
            time.sleep(60)
    except KeyboardInterrupt:
        # Reached only after __exit__: the target must already be released.
        print(json.dumps(status(pid)), flush=True)
        raise
""")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _paused_child(pid: int) -> subprocess.Popen:
    # A shell may start us with SIGINT ignored (background jobs); the child must see SIGINT as a person's ^C.
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(pid)], preexec_fn=_default_sigint,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line == "paused\n", (line, child.stderr.read() if child.poll() is not None else "")
    assert_all_stopped(pid)
    assert {tracer_pid(pid, t) for t in tasks(pid)} <= set(tasks(child.pid))
    return child


def test_goprobe_killed_while_paused(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary) as proc:
        child = _paused_child(proc.pid)
        child.kill()
        assert child.wait(timeout=5) == -signal.SIGKILL
        child.stdout.close()
        child.stderr.close()
        assert_released_and_running(proc.pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_goprobe_signalled_while_paused(newest_version, signum):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary) as proc:
        child = _paused_child(proc.pid)
        child.send_signal(signum)
        out, err = child.communicate(timeout=10)
        # Python ends an uncaught KeyboardInterrupt by re-raising SIGINT on itself.
        assert child.returncode == -signum, err
        if signum == signal.SIGINT:
            assert "KeyboardInterrupt" in err
            seen = json.loads(out)
            assert seen and all(state not in "tT" and tracer == 0 for state, tracer in seen.values()), seen
        assert_released_and_running(proc.pid)


def test_fifty_pause_cycles(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    addr = global_addr(binary, "runtime.allglen")
    before = threading.active_count()
    with running(binary, ["-n", "100"]) as proc:
        pauses = []
        for _ in range(50):
            with pause(proc.pid) as p:
                assert int.from_bytes(p.memory.read(addr, 8), "little") >= 100
            pauses.append(p.pause_ns)
        assert all(0 < ns < 1_000_000_000 for ns in pauses)
        assert_released_and_running(proc.pid)
        assert proc.proc.poll() is None
    assert threading.active_count() == before


def test_threads_that_never_report_are_released_by_the_kernel(newest_version, monkeypatch):
    """A thread that does not stop in time: the tracer thread gives up and exits, and the kernel detaches
    everything it traced — even when PTRACE_DETACH itself cannot be used."""
    binary = build_fixture("goroutines", newest_version, "opt")
    real_ptrace = _libc.ptrace

    def no_detach(request, tid, addr=0, data=0):
        if request == _libc.PTRACE_DETACH:
            return -1, 3  # ESRCH, as for a thread that is not in a ptrace stop
        return real_ptrace(request, tid, addr, data)

    monkeypatch.setattr(_libc, "waitpid", lambda tid, options: (0, 0, 0))
    monkeypatch.setattr(_libc, "ptrace", no_detach)
    with running(binary) as proc:
        t0 = time.monotonic()
        with pytest.raises(ProcessError, match="did not stop within 0.2 s"):
            pause(proc.pid, timeout=0.2)
        assert time.monotonic() - t0 < 2
        monkeypatch.undo()
        assert_released_and_running(proc.pid)
        with pause(proc.pid) as p:  # and it can be paused again
            assert p.threads


def test_thread_appearing_during_the_pause_is_stopped_too(newest_version, monkeypatch):
    """Threads created while the pause is set up are caught by re-listing /proc/PID/task until it is stable.
    Simulated by hiding one thread from the first listing."""
    from goprobe.process import ptrace as ptrace_mod

    binary = build_fixture("goroutines", newest_version, "opt")
    real_list = ptrace_mod._list_tasks
    calls = []

    def late_thread(pid):
        calls.append(pid)
        tids = real_list(pid)
        return tids[:-1] if len(calls) == 1 else tids

    monkeypatch.setattr(ptrace_mod, "_list_tasks", late_thread)
    with running(binary) as proc:
        with pause(proc.pid) as p:
            assert {t.tid for t in p.threads} == set(tasks(proc.pid))
            assert_all_stopped(proc.pid)
        assert len(calls) >= 3  # first listing, the one that found the hidden thread, the stable one
        assert_released_and_running(proc.pid)


def test_already_traced_process(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary) as proc:
        with pause(proc.pid) as outer:
            with pytest.raises(ProcessPermissionError, match="already traced by pid"):
                pause(proc.pid)
            assert_all_stopped(proc.pid)
        assert outer.pause_ns is not None
        assert_released_and_running(proc.pid)


# --------------------------------------------------------------------------------------------------------
# Core files


def test_gcore_agrees_with_live_process(newest_version):
    """gcore and pause() see the same registers and memory. gcore attaches with ptrace itself, so it cannot
    run inside a pause; instead the process is held in a job-control stop (SIGSTOP), where no thread runs
    between the two looks. This also checks that pausing a stopped process leaves it stopped."""
    if shutil.which("gcore") is None:
        pytest.skip("gdb's gcore is not installed")
    binary = build_fixture("goroutines", newest_version, "opt")
    with goprobe.GoBinary(binary) as b:
        allglen_addr = b.global_variable("runtime.allglen").address
        text = b.elf.section_addr(".text")
        text_bytes = b.elf.read_vaddr(text, 4096)
    with running(binary, ["-n", "1000"]) as proc, tempfile.TemporaryDirectory() as tmp:
        pid = proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 5
            while {thread_state(pid, t) for t in tasks(pid)} != {"T"}:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            r = subprocess.run(["gcore", "-o", f"{tmp}/core", str(pid)], capture_output=True, text=True,
                               timeout=60, check=False)
            assert r.returncode == 0, r.stderr
            with pause(pid) as p:
                assert_all_stopped(pid)
                live_allglen = p.memory.read(allglen_addr, 8)
                live_goids = goids(binary, p.memory)
                assert p.memory.read(text, 4096) == text_bytes
            # Resuming from our pause puts the threads back into the stop they were in, untraced.
            assert {(thread_state(pid, t), tracer_pid(pid, t)) for t in tasks(pid)} == {("T", 0)}
        finally:
            os.kill(pid, signal.SIGCONT)
        assert_released_and_running(pid)

        with CoreFile(f"{tmp}/core.{pid}") as core:
            assert core.pid == pid
            assert core.executable == os.readlink(f"/proc/{pid}/exe")
            assert sorted(core.threads, key=lambda t: t.tid) == sorted(p.threads, key=lambda t: t.tid)
            assert core.memory.read(allglen_addr, 8) == live_allglen
            assert int.from_bytes(live_allglen, "little") >= 1000
            assert core.memory.read(text, 4096) == text_bytes
            assert goids(binary, core.memory) == live_goids
            assert core.memory.read(0, 8) is None


def test_kernel_core_reads_dropped_pages_from_the_file(newest_version, tmp_path):
    """The kernel leaves unmodified text out of a core (filesz < memsz); it is read from the executable."""
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write a core into the process's directory")
    binary = build_fixture("goroutines", newest_version, "opt")
    with goprobe.GoBinary(binary) as b:
        text = b.elf.section_addr(".text")
        text_bytes = b.elf.read_vaddr(text, 8192)
        allglen_addr = b.global_variable("runtime.allglen").address

    # exec keeps the shell's pid, so proc.pid is the Go program's.
    proc = subprocess.Popen(["sh", "-c", 'ulimit -c unlimited && exec "$0"', str(binary)], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, GOTRACEBACK="crash"))
    try:
        assert proc.stdout.readline() == b"ready\n"
        with pause(proc.pid) as p:
            live_allglen = p.memory.read(allglen_addr, 8)
            tids = {t.tid for t in p.threads}
        proc.send_signal(signal.SIGABRT)  # GOTRACEBACK=crash: Go aborts with a core dump
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    cores = [c for c in tmp_path.iterdir() if c.name.startswith("core")]
    if not cores:
        pytest.skip("the kernel wrote no core file (core dumps disabled here)")
    with CoreFile(cores[0]) as core:
        assert core.pid == proc.pid
        assert {t.tid for t in core.threads} == tids
        assert core.executable == str(binary)
        seg = next(s for s in core.memory._segs if s[0] <= text < s[0] + s[1])
        assert seg[3] < seg[1], "expected the kernel to drop the text pages"
        assert core.memory.read(text, 8192) == text_bytes
        assert core.memory.read(allglen_addr, 8) == live_allglen


# A small synthetic core: exact control of segments and notes.

def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def _prstatus(tid: int, regs: dict[str, int]) -> bytes:
    desc = bytearray(336)
    struct.pack_into("<i", desc, 32, tid)
    struct.pack_into("<27Q", desc, 112, *(regs.get(f, 0) for f in _libc.USER_REGS_FIELDS))
    return bytes(desc)


def _write_core(path: Path, segments: list[tuple[int, int, bytes]], notes: bytes, e_type: int = 4) -> None:
    phnum = len(segments) + 1
    offset = 64 + 56 * phnum
    phdrs = [struct.pack("<IIQQQQQQ", 4, 4, offset, 0, 0, len(notes), 0, 1)]
    body = notes
    for vaddr, memsz, data in segments:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 6, offset + len(body), vaddr, 0, len(data), memsz, 1))
        body += data
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), e_type, 62, 1, 0, 64, 0, 0, 64,
                       56, phnum, 0, 0, 0)
    path.write_bytes(ehdr + b"".join(phdrs) + body)


@pytest.fixture(scope="module")
def synthetic_core(tmp_path_factory):
    d = tmp_path_factory.mktemp("core")
    backing = d / "mapped.bin"
    file_bytes = bytes(range(256)) * 40  # 0x2800 bytes: the mapping below runs 0x800 bytes past its end
    backing.write_bytes(file_bytes)
    a = os.urandom(0x2000)
    b_dumped = os.urandom(0x1000)
    segments = [(0x10000, 0x2000, a), (0x12000, 0x3000, b_dumped), (0x20000, 0x1000, b"")]
    name = os.fsencode(backing)
    nt_file = struct.pack("<QQ", 1, 0x1000) + struct.pack("<QQQ", 0x12000, 0x15000, 0) + name + b"\0"
    prpsinfo = bytearray(136)
    struct.pack_into("<i", prpsinfo, 24, 4242)
    notes = (_note(b"CORE", 3, bytes(prpsinfo))
             + _note(b"CORE", 1, _prstatus(4243, {"rip": 0x12345, "rsp": 0x10ff0, "fs_base": 0x7000}))
             + _note(b"CORE", 1, _prstatus(4242, {"rip": 0x12346, "orig_rax": 2**64 - 1}))
             + _note(b"LINUX", 0x202, b"xstate")
             + _note(b"CORE", 6, struct.pack("<4Q", 9, 0x12010, 0, 0))
             + _note(b"CORE", 0x46494C45, nt_file))
    path = d / "core"
    _write_core(path, segments, notes)
    # What is readable: a, then b's dumped page, then the mapped file from offset 0x1000 to its end.
    model = TestMemory({0x10000: a + b_dumped + file_bytes[0x1000:]})
    return path, model, str(backing)


def test_synthetic_core(synthetic_core):
    path, model, backing = synthetic_core
    with CoreFile(path) as core:
        assert core.pid == 4242
        assert core.executable == backing  # the mapping holding AT_ENTRY
        assert [t.tid for t in core.threads] == [4243, 4242]
        assert core.threads[0] == ThreadState(4243, {**{r: 0 for r in _libc.REG_NAMES},
                                                     "rip": 0x12345, "rsp": 0x10ff0, "fs_base": 0x7000})
        assert core.threads[1].regs["orig_rax"] == 2**64 - 1
        assert core.memory.read(0x11ff0, 0x20) == model.read(0x11ff0, 0x20)  # across two segments
        assert core.memory.read(0x12ff0, 0x20) == model.read(0x12ff0, 0x20)  # dumped → from the file
        assert core.memory.read(0x14700, 0x100) == model.read(0x14700, 0x100)
        assert core.memory.read(0x14800, 1) is None  # beyond the mapped file's end
        assert core.memory.read(0x20000, 1) is None  # not dumped, no file behind it
        assert core.memory.read(0x15000, 1) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0xF000, 0x21000), st.integers(0, 0x1800)), max_size=10))
def test_synthetic_core_reads_equal_model(synthetic_core, spans):
    path, model, _ = synthetic_core
    with CoreFile(path) as core:
        assert core.memory.read_many(spans) == model.read_many(spans)


def test_core_file_errors(tmp_path, synthetic_core):
    with pytest.raises(CoreFileError, match="cannot open"):
        CoreFile(tmp_path / "missing")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(CoreFileError, match="empty"):
        CoreFile(tmp_path / "empty")
    (tmp_path / "text").write_bytes(b"hello world" * 10)
    with pytest.raises(CoreFileError, match="not an ELF"):
        CoreFile(tmp_path / "text")
    _write_core(tmp_path / "exec", [], b"", e_type=2)
    with pytest.raises(CoreFileError, match="not a core dump"):
        CoreFile(tmp_path / "exec")
    _write_core(tmp_path / "nothreads", [(0x1000, 0x1000, b"x" * 0x1000)], _note(b"CORE", 3, bytes(136)))
    with pytest.raises(CoreFileError, match="no thread"):
        CoreFile(tmp_path / "nothreads")
    data = synthetic_core[0].read_bytes()
    (tmp_path / "truncated").write_bytes(data[:200])
    with pytest.raises(CoreFileError):
        CoreFile(tmp_path / "truncated")
