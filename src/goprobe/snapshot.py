"""Snapshots: compile a request, pause the target, run the plan, resume, then decode into the JSON schema
of ``docs/snapshot-json.md``."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import struct
import time
from functools import lru_cache
from typing import Any

import attrs

from goprobe.backends.interpreter.program import load as load_program
from goprobe.backends.interpreter.program import lower as lower_program
from goprobe.backends.interpreter.snapshot import (RawSnapshot, copy_for_values, copy_stacks, goroutine_labels,
                                                  pages_to_copy, run_snapshot)
from goprobe.decoder import hexaddr
from goprobe.decoder_codegen import compile_decoder
from goprobe.dwarf.binary import GoBinary
from goprobe.ir.snapshot import G_STATUS, NOT_IN_DEBUG_INFO, SnapshotPlan, rebase
from goprobe.ir.values import Opaque


def wait_reasons(b: GoBinary) -> dict[int, str]:
    """runtime.waitReasonStrings, read from the binary's initialised data (no process needed)."""
    try:
        g = b.global_variable("runtime.waitReasonStrings")
        t = b.type_at(g.type_offset)
        raw = b.elf.read_vaddr(g.address, t.size)
    except Exception:  # noqa: BLE001 - best effort: an older or changed runtime just loses the names
        return {}
    out = {}
    for i in range(len(raw) // 16):
        ptr, n = struct.unpack_from("<QQ", raw, 16 * i)
        try:
            out[i] = b.elf.read_vaddr(ptr, n).decode("utf-8", "replace") if n else ""
        except ValueError:
            pass
    return out


def _labels_after_resume(raw: RawSnapshot, plan: SnapshotPlan, pid: int, req) -> dict[int, bytes | str]:
    from goprobe.process import ProcessMemory

    if plan.labels_type is None or not any(g.labels for g in raw.goroutines):
        return {}
    return goroutine_labels(raw, plan, ProcessMemory(pid), req.limits)


def labels_json(value: Any) -> Any:
    """A decoded label set as ``{key: value}``: Go ≤ 1.23 keeps it as a map[string]string (already so), later
    releases as a struct around a sorted list of {key, value} pairs."""
    if not isinstance(value, dict) or "@unavailable" in value:
        return value
    if value and all(isinstance(v, str) and not k.startswith("@") for k, v in value.items()):
        return value
    todo: list[Any] = [value]
    while todo:
        x = todo.pop()
        if isinstance(x, list):
            out = {}
            for item in x:
                if isinstance(item, dict):
                    pair = {k.lower(): v for k, v in item.items() if not k.startswith("@")}
                    if isinstance(pair.get("key"), str):
                        out[pair["key"]] = pair.get("value")
            return out
        if isinstance(x, dict):
            todo.extend(v for k, v in x.items() if not k.startswith("@") or k in ("@value", "@entries"))
    return value


def decode_snapshot(raw: RawSnapshot, plan: SnapshotPlan, b: GoBinary, *, pid: int | None = None,
                    pause_ns: int | None = None, bias: int = 0,
                    labels: dict[int, bytes | str] | None = None) -> dict[str, Any]:
    """Turn a raw snapshot into the documented JSON structure (one process); *bias* is the executable's load
    bias (PCs in the output are run-time addresses; symbols are looked up at link-time ones). *labels*: the
    goroutines' pprof label sets as read after the pause (``goroutine_labels``)."""
    reasons = b.wait_reasons() if getattr(b, "stripped", False) else wait_reasons(b)

    @lru_cache(maxsize=None)
    def func_name(pc: int) -> str | None:
        if getattr(b, "stripped", False):
            return b.function_name_at(pc - bias)
        sym = b.elf.function_symbol_at(pc - bias)
        return sym.name if sym else None

    @lru_cache(maxsize=None)
    def type_name(addr: int) -> str | None:
        t = b.type_at_runtime_address(addr - bias)
        return t.name if t is not None else None

    decoder = compile_decoder(plan.types, func_name=func_name, type_name=type_name)
    @lru_cache(maxsize=None)
    def logical_frames(pc: int) -> tuple:
        return tuple(b.frames_at(pc - bias)) or ((func_name(pc) or "?", "?", 0),)

    @lru_cache(maxsize=None)
    def created_by(gopc: int, parent: int) -> dict[str, Any]:
        # As Go's own dumps: the go statement's function and line (the PC is of the call after it).
        fn, file, line = logical_frames(gopc - 1)[0]
        out: dict[str, Any] = {"function": fn, "file": file, "line": line}
        if parent:
            out["goid"] = parent
        return out

    # The runtime's nanotime is CLOCK_MONOTONIC: a waiting goroutine's waitsince is on the same clock.
    now = time.monotonic_ns() if pause_ns is not None else None
    goroutines = []
    for g in raw.goroutines:
        frames = []
        for f in g.frames:
            lookup = f.pc if f.top or not frames else f.pc - 1
            logical = logical_frames(lookup)
            captured = {}
            for function, inlined, caps in f.captures:
                values = {}
                for c in caps:
                    if c.data is None:
                        values[c.label] = {"@unavailable": c.unavailable}
                        if c.known_len is not None:
                            values[c.label]["@len"] = c.known_len
                    else:
                        values[c.label], _ = decoder.decode(c.data, 0, c.type)
                captured[(function, inlined)] = values
            for i, (function, file, line) in enumerate(logical):
                inlined = i < len(logical) - 1
                frame = {"function": function, "file": file, "line": line, "pc": hexaddr(f.pc), "inlined": inlined}
                variables = captured.get((function, inlined)) or (
                    captured.get((_base(function), inlined)) if "[" in function else None)
                if variables is not None:
                    frame["variables"] = variables
                frames.append(frame)
        entry = {"goid": g.goid, "status": G_STATUS.get(g.status, str(g.status)),
                 "wait_reason": reasons.get(g.wait_reason, "") if g.status == 4 else "", "frames": frames}
        if g.tid is not None:
            entry["thread"] = g.tid
        if g.status == 4 and g.waitsince and now is not None and now > g.waitsince:
            entry["wait_ns"] = now - g.waitsince
        if g.locked:
            entry["locked_to_thread"] = True
        if g.gopc and g.goid != 1:  # as Go's dumps: the main goroutine was created by nobody in particular
            entry["created_by"] = created_by(g.gopc, g.parent_goid)
        got = (labels or {}).get(g.goid)
        if isinstance(got, str):
            entry["labels"] = {"@unavailable": got}
        elif got is not None:
            entry["labels"] = labels_json(decoder.decode(got, 0, plan.labels_type)[0])
        if g.truncated:
            entry["@truncated"] = "frames"
        goroutines.append(entry)
    proc: dict[str, Any] = {"pid": pid, "binary": str(b.path), "go_version": b.go_version, "pause_ns": pause_ns,
                            "goroutines": goroutines}
    if raw.errors:
        proc["errors"] = list(raw.errors)
    if raw.skipped:
        proc["truncated"] = {"goroutines": raw.skipped}
    degraded = degraded_types(plan.types)
    if degraded:
        proc["degraded"] = degraded
    dropped = sorted({(fp.function, c.label) for fp in plan.frames for c in fp.captures
                      if c.missing == NOT_IN_DEBUG_INFO})
    if dropped:
        proc["warnings"] = [f"{fn}: {label!r} is in the source but not in this build's debug info (the optimiser "
                            "dropped it): reported unavailable" for fn, label in dropped]
    if getattr(b, "stripped", False):
        proc["debug_info"] = "none"
        proc.setdefault("warnings", []).append(
            f"{b.path}: no DWARF debug information (built with -ldflags=-s/-w): goroutines and stacks come from "
            "the Go runtime's own tables; variables are unavailable (rebuild without -s -w, or give its debug "
            "file with --debug-file)")
    return proc


def degraded_types(table) -> list[dict[str, str]]:
    """The plan's types that goprobe could not lay out (values of them decode as unavailable), with why."""
    return [{"type": e.name, "reason": e.shape.reason} for e in table.entries
            if isinstance(e.shape, Opaque) and e.shape.reason]


def _base(name: str) -> str:
    return name.split("[", 1)[0]


BACKENDS = ("auto", "ebpf", "interp")


def take_snapshot(pids: list[int], request, *, binary: GoBinary | None = None, limits=None,
                  goroutine_filter: str | None = None, backend: str = "interp",
                  debug_file: str | None = None) -> dict[str, Any]:
    """Snapshot every goroutine of each process in *pids*.

    *request* is a :class:`~goprobe.request.SnapshotRequest` or a mapping ``{function: [expression, ...]}``.
    Each process is paused only while its memory is read (all threads seized, then resumed and detached on
    every path); decoding happens after it runs again. Returns ``{"processes": [...]}`` as documented in
    ``docs/snapshot-json.md``. A process that cannot be snapshotted (gone, stripped, no permission, a request
    its build cannot satisfy) is an entry with ``"status": "error"`` and the result says ``"partial": true``;
    only when no process could be taken is that error raised.

    *backend*: ``"interp"`` (goprobe's interpreter reads the memory), ``"ebpf"`` (a generated BPF program walks
    the goroutines in the kernel while the process is paused), or ``"auto"`` (eBPF where this machine allows
    it, else the interpreter; the process entry's ``backend_note`` says why it fell back).

    *debug_file*: the separate debug information of the processes' executable (by default it is looked for
    by build id and debuglink when the executable has no DWARF of its own).
    """
    from goprobe.errors import GoprobeError

    if backend not in BACKENDS:
        raise GoprobeError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    req = _as_request(request, limits, goroutine_filter)
    out: list[dict[str, Any]] = []
    failures: list[GoprobeError] = []
    # Every process's plan is compiled before any is taken, once per executable (processes that run the same
    # file share it): short-lived processes of a bundle (a build's compilers) are still there when their turn
    # comes, and ten processes of one program cost one compilation.
    shared: dict[tuple[int, int], tuple[GoBinary, SnapshotPlan]] = {}
    prepared: dict[int, tuple[GoBinary, SnapshotPlan] | GoprobeError] = {}
    try:
        for pid in pids:
            try:
                prepared[pid] = _prepare(pid, req, binary, debug_file, shared, lowered=backend == "interp")
            except GoprobeError as exc:
                prepared[pid] = exc
        for pid in pids:
            try:
                ready = prepared[pid]
                if isinstance(ready, GoprobeError):
                    raise ready
                proc = _snapshot_one(pid, req, *ready, backend)
                proc["status"] = "ok"
                out.append(proc)
            except GoprobeError as exc:
                # One process that cannot be snapshotted (gone, stripped, no permission, a request its build
                # cannot satisfy...) is reported in the bundle; the others are still taken. One that exited
                # while it was being taken is gone, whatever step noticed it first.
                failures.append(exc)
                kind = error_kind(exc) if _running(pid) else "PROCESS_GONE"
                out.append({"pid": pid, "status": "error", "error": {"kind": kind, "message": str(exc)},
                            "goroutines": []})
    finally:
        if binary is None:
            for b, _plan in shared.values():
                b.close()
    if failures and len(failures) == len(pids):
        raise failures[0]  # nothing was taken: the one error says why (a single process behaves as before)
    result: dict[str, Any] = {"processes": out}
    if failures:
        result["partial"] = True
    return result


def _running(pid: int) -> bool:
    """Whether *pid* exists and has not exited (an exited one not yet reaped still has a /proc entry)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def error_kind(exc: BaseException) -> str:
    """A stable name for why a process is missing from a bundle (``docs/snapshot-json.md``)."""
    from goprobe import errors as E

    for cls, kind in ((E.ProcessNotFoundError, "PROCESS_GONE"), (E.ProcessExitedError, "PROCESS_GONE"),
                      (E.ProcessPermissionError, "NO_PERMISSION"), (E.NoDebugInfoError, "BINARY_STRIPPED"),
                      (E.NotGoBinaryError, "NOT_GO"), (E.NotELFError, "NOT_GO"),
                      (E.UnsupportedArchitectureError, "UNSUPPORTED"), (E.UnsupportedGoVersionError, "UNSUPPORTED"),
                      (E.RuntimeLayoutError, "UNSUPPORTED"), (E.LookupFailure, "BAD_REQUEST"),
                      (E.ExpressionError, "BAD_REQUEST"), (E.ExpressionSyntaxError, "BAD_REQUEST"),
                      (E.RequestError, "BAD_REQUEST")):
        if isinstance(exc, cls):
            return kind
    if "did not stop" in str(exc) or "timed out" in str(exc):
        return "TIMEOUT"
    return "ERROR"


def _prepare(pid: int, req, binary: GoBinary | None, debug_file: str | None,
             shared: dict[tuple[int, int], tuple[GoBinary, SnapshotPlan]], *,
             lowered: bool = True) -> tuple[GoBinary, SnapshotPlan]:
    """The binary of process *pid* and the request's plan for it (at link-time addresses), shared by the
    processes that run the same file. *lowered*: the plan makes the round trip through the interpreter
    program's bytes (for the interpreter backend; the eBPF backend compiles the plan itself, and on a large
    binary the round trip costs seconds)."""
    from goprobe.errors import ProcessNotFoundError

    if not os.path.exists(f"/proc/{pid}"):
        raise ProcessNotFoundError(f"pid {pid} does not exist (did it exit?)")
    try:
        st = os.stat(f"/proc/{pid}/exe")
        key = (-1, -1) if binary is not None else (st.st_dev, st.st_ino)
    except OSError:
        key = None
    if key is not None and key in shared:
        return shared[key]
    b = binary or open_for_snapshot(f"/proc/{pid}/exe", debug_file)
    try:
        # The interpreter runs the lowered program: what it executes is exactly what could be shipped.
        plan = compile_request(b, req)
        ready = (b, load_program(lower_program(plan)) if lowered else plan)
    except BaseException:
        if binary is None:
            b.close()
        raise
    shared[key if key is not None else (-2, pid)] = ready
    return ready


def _snapshot_one(pid: int, req, b: GoBinary, linked: SnapshotPlan, backend: str) -> dict[str, Any]:
    """One process of a bundle: pause it, read, resume, decode (its plan is compiled: :func:`_prepare`)."""
    from goprobe.errors import GoprobeError
    from goprobe.process import pause

    bias = load_bias(b, pid)
    plan = rebase(linked, bias)
    used, note = backend, None
    if backend in ("ebpf", "auto"):
        try:
            proc = _ebpf_snapshot(plan, b, pid, req, bias)
            proc["backend"] = "ebpf"
            return proc
        except GoprobeError as exc:
            if backend == "ebpf":
                raise
            used, note = "interp", f"the eBPF backend is not usable here ({exc}); used the interpreter"
    _warm_up(pid, plan)
    with _no_gc():  # in the pause a collection would lengthen it
        if plan.frames:
            # The pages the values read, found by a run over the running process; the pause copies them with
            # the stacks, and the plan runs over that copy once the process runs again.
            from goprobe.process import ProcessMemory

            pages = pages_to_copy(plan, ProcessMemory(pid), req.limits)
            with pause(pid) as paused:
                copy, copy_errors = copy_for_values(plan, paused.memory, paused.threads, req.limits, pages)
            raw = run_snapshot(plan, copy, paused.threads, req.limits, paused=False)
            if copy_errors:
                raw = attrs.evolve(raw, errors=tuple(copy_errors) + raw.errors)
        else:
            # Stacks only: copy the goroutine list and stacks while paused, unwind after resuming.
            with pause(pid) as paused:
                copy = copy_stacks(plan, paused.memory, paused.threads, req.limits)
            raw = run_snapshot(plan, copy, paused.threads, req.limits)
        labels = _labels_after_resume(raw, plan, pid, req)
        proc = _filtered(decode_snapshot(raw, plan, b, pid=pid, pause_ns=paused.pause_ns, bias=bias,
                                         labels=labels), req)
    proc["backend"] = "interp" if used != "ebpf" else used
    if note:
        proc["backend_note"] = note
    return proc


def _ebpf_snapshot(plan: SnapshotPlan, b: GoBinary, pid: int, req, bias: int,
                   trigger_kind: str = "uprobe") -> dict[str, Any]:
    """One process through the eBPF backend: load the program, pause, run it (and unwind the goroutines that
    are on a thread from their registers), resume, decode."""
    from goprobe.backends.ebpf.snapshot_session import EbpfSnapshotter, find_trigger
    from goprobe.backends.interpreter.snapshot import PlanIndex, running_goroutines
    from goprobe.process import run_paused
    from goprobe.process.remote_pause import run_paused_in_helper, start_helper

    if trigger_kind == "uprobe":
        start_helper()  # it starts while the programs load
    hint = _allglen(pid, plan.goroutines.allglen)
    index = PlanIndex(plan)
    _warm_up(pid, plan)
    trigger = find_trigger(b, f"/proc/{pid}/exe", bias) if trigger_kind == "uprobe" else None
    with _no_gc():  # in the pause a collection would lengthen it
        with EbpfSnapshotter(plan, pid, req.limits, goroutines_hint=hint, trigger=trigger) as snapper:
            def while_paused(paused):
                deadline = time.monotonic() + req.limits.pause_ms / 1000
                # The goroutines on a thread (if the program met any) are unwound by the interpreter from their
                # thread's registers.
                running = snapper.run(paused, lambda: running_goroutines(plan, paused.memory, paused.threads,
                                                                         req.limits, index)) or {}
                return running, snapper.resolve_fixups(paused.memory, req.limits, deadline)

            if snapper.trigger is not None:
                # A stepped thread must get its registers back even if goprobe is killed meanwhile: the pause
                # is held by the helper process, which steps as soon as the threads are stopped.
                snapper.arm_run()
                (running, fixups), pause_ns = run_paused_in_helper(
                    pid, while_paused, arm=snapper.step_arm, step=(snapper.trigger.address, snapper.workers))
            else:
                (running, fixups), pause_ns = run_paused(pid, while_paused)
            # The records wait in the ring buffer: taking them out need not keep the process stopped; nor
            # does encoding the values copied in the pause (raw_snapshot does).
            raw = snapper.raw_snapshot(snapper.records(), running, fixups)
        labels = _labels_after_resume(raw, plan, pid, req)
        return _filtered(decode_snapshot(raw, plan, b, pid=pid, pause_ns=pause_ns, bias=bias, labels=labels), req)


@contextlib.contextmanager
def _no_gc():
    """Python's cycle collector off while a snapshot's millions of small objects (none in a cycle) are made:
    it would otherwise walk them again and again (a third of the time at 100k goroutines)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _warm_up(pid: int, plan: SnapshotPlan) -> None:
    """Read the target once before pausing it: the first read through cffi sets up its types and costs
    milliseconds, which would otherwise land inside the pause."""
    from goprobe.backends.interpreter import values  # noqa: F401 - imported now rather than while paused
    from goprobe.process import ProcessMemory

    memory = ProcessMemory(pid)
    memory.read_many([(plan.goroutines.allglen, 8)])
    memory.read(plan.goroutines.allglen, 8)


def _allglen(pid: int, addr: int) -> int:
    """The number of goroutines the runtime has allocated (a hint for buffer sizes; 10,000 if unreadable)."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as fh:
            fh.seek(addr)
            return int.from_bytes(fh.read(8), "little") or 10_000
    except (OSError, ValueError, OverflowError):
        return 10_000


def snapshot_core(core_path: str, binary_path: str, request, *, limits=None,
                  goroutine_filter: str | None = None, debug_file: str | None = None) -> dict[str, Any]:
    """The same snapshot from an ELF core file of the process (e.g. from gcore or GOTRACEBACK=crash)."""
    from goprobe.process import CoreFile

    req = _as_request(request, limits, goroutine_filter)
    with CoreFile(core_path) as core, GoBinary(binary_path, debug_file=debug_file) as b:
        bias = core_load_bias(core, b, binary_path)
        check_core_matches(core.memory, b, bias, core_path, binary_path)
        plan = rebase(load_program(lower_program(compile_request(b, req))), bias)
        memory = _CoreWithExecutable(core.memory, b, bias)
        raw = run_snapshot(plan, memory, core.threads, req.limits)
        labels = goroutine_labels(raw, plan, memory, req.limits)
        proc = _filtered(decode_snapshot(raw, plan, b, pid=core.pid, pause_ns=None, bias=bias, labels=labels), req)
    proc["core"] = str(core_path)
    return {"processes": [proc]}


class _CoreWithExecutable:
    """Core memory, falling back to the executable's own file image. Cores often leave out read-only
    file-backed mappings (code, read-only data); CoreFile restores them from the NT_FILE note when there is
    one, but gdb's gcore writes none — the binary itself holds those bytes unchanged."""

    def __init__(self, core_memory, b: GoBinary, bias: int = 0) -> None:
        self._core = core_memory
        self._b = b
        self._bias = bias

    def read(self, addr: int, size: int) -> bytes | None:
        data = self._core.read(addr, size)
        if data is None:
            # The file image holds link-time contents: for a PIE that is right only for bytes the dynamic
            # loader never relocates — code and read-only data, which is what cores leave out.
            try:
                return self._b.elf.read_vaddr(addr - self._bias, size)
            except ValueError:
                return None
        return data

    def read_many(self, spans):
        return [self.read(a, n) for a, n in spans]


def compile_request(b: GoBinary, req) -> SnapshotPlan:
    from goprobe.ir.snapshot import compile_snapshot, compile_stripped

    functions = {fn: [c.text for c in caps] for fn, caps in req.functions.items()}
    compile_ = compile_stripped if getattr(b, "stripped", False) else compile_snapshot
    return compile_(b, functions, max_frames=req.limits.frames_per_goroutine,
                    max_goroutines=req.limits.goroutines, goroutine_filter=req.goroutine_filter)


def open_for_snapshot(path: str, debug_file: str | None = None):
    """The binary at *path* for a snapshot: a GoBinary, or, when it has no DWARF and no separate debug file
    is given or found, a StrippedBinary (stacks from the pclntab: ``goprobe.dwarf.stripped``)."""
    from goprobe.dwarf.stripped import StrippedBinary
    from goprobe.errors import NoDebugInfoError

    try:
        return GoBinary(path, debug_file=debug_file)
    except NoDebugInfoError as exc:
        if debug_file is not None:
            raise
        try:
            return StrippedBinary(path)
        except NoDebugInfoError:
            raise exc from None


def _as_request(request, limits, goroutine_filter):
    from goprobe.request import Limits, SnapshotRequest

    if isinstance(request, SnapshotRequest):
        if limits is not None or goroutine_filter is not None:
            import attrs

            request = attrs.evolve(request, limits=limits or request.limits,
                                   goroutine_filter=goroutine_filter or request.goroutine_filter)
        return request
    return SnapshotRequest.build(request or {}, limits=limits or Limits(), goroutine_filter=goroutine_filter)


def _filtered(proc: dict[str, Any], req) -> dict[str, Any]:
    if not req.all_goroutines:
        proc["goroutines"] = [g for g in proc["goroutines"] if any("variables" in f for f in g["frames"])]
    return proc


def check_core_matches(memory, b: GoBinary, bias: int, core_path, binary_path) -> None:
    """Refuse a core that was not dumped from *b*: the runtime's module data (where the code and type
    sections are) in the core's memory must be what the binary itself says. A wrong pairing would otherwise
    read garbage as goroutines, or nothing at all, and look like a real (empty) snapshot."""
    from goprobe.errors import CoreFileError

    L = b.runtime
    md, layout = L.firstmoduledata, L["moduledata"]
    for field in ("text", "etext", "types", "etypes"):
        off = layout.offset(field)
        try:
            linked = int.from_bytes(b.elf.read_vaddr(md + off, 8), "little")
        except ValueError:
            continue
        if linked == 0:
            continue  # filled in by a load-time relocation (position-independent executables): not in the file
        raw = memory.read(md + bias + off, 8)
        if raw is None:
            raise CoreFileError(f"{core_path} holds no memory at {binary_path}'s runtime.firstmoduledata: it was "
                                "not dumped from this binary; give the executable the process ran")
        got = int.from_bytes(raw, "little")
        if got != linked + bias:
            raise CoreFileError(f"{core_path} was not dumped from {binary_path}: runtime.firstmoduledata.{field} is "
                                f"{got:#x} in the core but {linked + bias:#x} in the binary; give the executable the "
                                "process ran")


def core_load_bias(core, b: GoBinary, binary_path) -> int:
    """Where a position-independent executable was loaded in the dumped process, from the core's auxiliary
    vector (run-time entry point − link-time entry point); 0 for ordinary executables."""
    from goprobe.errors import ProcessError

    if not b.is_pie:
        return 0
    if core.entry is None:
        raise ProcessError(f"{binary_path} is a position-independent executable and the core file has no "
                           "auxiliary vector (NT_AUXV) to tell where it was loaded; snapshot the live process "
                           "or dump a core with gcore or the kernel, which record it")
    return core.entry - b.elf.entry


def load_bias(b: GoBinary, pid: int) -> int:
    """How far the kernel moved a position-independent executable: where its first loadable segment is
    mapped in *pid* minus its link-time address (0 for ordinary executables)."""
    from goprobe.errors import ProcessError

    if not b.is_pie:
        return 0
    first = min(seg.vaddr for seg in b.segments) & ~0xFFF
    exe = os.path.realpath(f"/proc/{pid}/exe")
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 6 and parts[2] == "00000000" and os.path.realpath(parts[5]) == exe:
                    return int(parts[0].split("-")[0], 16) - first
    except OSError as exc:
        raise ProcessError(f"cannot read the memory map of pid {pid}: {exc}") from None
    raise ProcessError(f"pid {pid}: cannot find where {exe} is mapped (is this the right process?)")


def render_text(result: dict[str, Any], *, max_groups: int = 50, max_values: int = 10) -> str:
    """A person's view: per process, goroutines grouped by identical stacks (largest group first); under a
    frame with captured variables, each goroutine's values."""
    import json

    def short(v: Any) -> str:
        text = json.dumps(v, ensure_ascii=False)
        return text if len(text) <= 160 else text[:157] + "..."

    lines: list[str] = []
    for proc in result["processes"]:
        if proc.get("status") == "error":
            lines.append(f"pid {proc['pid']}  not taken: {proc['error']['kind']}: {proc['error']['message']}")
            lines.append("")
            continue
        pause = f"{proc['pause_ns'] / 1e6:.2f} ms pause" if proc.get("pause_ns") is not None else "core file"
        lines.append(f"pid {proc['pid']}  {proc['binary']}  {proc['go_version']}  "
                     f"{len(proc['goroutines'])} goroutines  ({pause})")
        for err in proc.get("errors", ()):
            lines.append(f"  warning: {err}")
        if proc.get("truncated", {}).get("goroutines"):
            lines.append(f"  warning: {proc['truncated']['goroutines']} more live goroutines not read: past the "
                         "goroutine limit (limits.goroutines)")
        groups: dict[tuple, list[dict]] = {}
        for g in proc["goroutines"]:
            key = (g["status"], g.get("wait_reason", "")) + tuple(
                (f["function"], f["file"], f["line"], f["inlined"]) for f in g["frames"])
            groups.setdefault(key, []).append(g)
        ordered = sorted(groups.values(), key=lambda gs: (-len(gs), gs[0]["goid"]))
        for gs in ordered[:max_groups]:
            g = gs[0]
            state = g["status"] + (f" ({g['wait_reason']})" if g.get("wait_reason") else "")
            longest = max((x.get("wait_ns", 0) for x in gs), default=0)
            if longest >= 60_000_000_000:  # as Go's dumps: waits of a minute or more
                state += f", {longest // 60_000_000_000} minutes"
            if any(x.get("locked_to_thread") for x in gs):
                state += ", locked to thread"
            ids = ", ".join(str(x["goid"]) for x in gs[:8]) + (" …" if len(gs) > 8 else "")
            lines.append("")
            lines.append(f"  {len(gs)} goroutine{'s' if len(gs) > 1 else ''} [{state}]: {ids}")
            for x in gs[:max_values]:
                if x.get("labels"):
                    who = f"g{x['goid']} " if len(gs) > 1 else ""
                    lines.append(f"    {who}labels: {json.dumps(x['labels'], ensure_ascii=False)}")
            for i, f in enumerate(g["frames"]):
                where = "/".join(f["file"].split("/")[-2:])
                lines.append(f"    {f['function']}{' (inlined)' if f['inlined'] else ''}  {where}:{f['line']}")
                if "variables" not in f:
                    continue
                for x in gs[:max_values]:
                    values = x["frames"][i].get("variables", {})
                    text = "  ".join(f"{k}={short(v)}" for k, v in values.items())
                    lines.append(f"        g{x['goid']}: {text}" if len(gs) > 1 else f"        {text}")
                if len(gs) > max_values:
                    lines.append(f"        … {len(gs) - max_values} more (use --json for all)")
            c = g.get("created_by")
            if c:
                parent = f" in goroutine {c['goid']}" if "goid" in c else ""
                lines.append(f"    created by {c['function']}{parent}  {'/'.join(c['file'].split('/')[-2:])}:{c['line']}")
        if len(ordered) > max_groups:
            lines.append(f"\n  … {len(ordered) - max_groups} more groups (use --json for everything)")
        lines.append("")
    return "\n".join(lines)
