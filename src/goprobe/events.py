"""Dynamic events: each time a Go process reaches a probe point, capture values in the kernel (eBPF) and stream
them out as JSON-ready dicts.

    with stream_events([pid], EventRequest.build("main.handle", ["req.ID", "name"], max_events=100)) as s:
        for event in s:
            print(event["goid"], event["values"])
        print(s.summary())

The record format written by the kernel is documented in ``docs/event-record.md``.

From the moment a stream is created, a helper process (:class:`~goprobe.backends.ebpf.ringbuf.ProcessDrain`; or a
thread, :class:`~goprobe.backends.ebpf.ringbuf.RingDrain`) empties the kernel's ring buffer into memory in whole
spans, so a burst the decoder cannot follow waits in memory (up to ``backlog_bytes``) instead of being dropped
by the kernel; the iterating thread splits the spans into records and decodes them.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from goprobe.backends.ebpf import event_codegen as G
from goprobe.backends.ebpf.event_session import Counters, EventSession
from goprobe.backends.ebpf.ringbuf import DEFAULT_BACKLOG_BYTES, ProcessDrain, RingDrain, split_span
from goprobe.decoder import hexaddr
from goprobe.decoder_codegen import compile_decoder
from goprobe.dwarf.binary import GoBinary
from goprobe.errors import GoprobeError, ProcessError, ProcessNotFoundError
from goprobe.ir.events import EventPlan, compile_event, rebase_event
from goprobe.request import EventRequest

_HEADER = struct.Struct("<IIQQQQII")


class EventRecordDecoder:
    """Raw records of one event plan → event dicts (see the module docstring for the shape)."""

    def __init__(self, plan: EventPlan, generated: G.GeneratedEvents, binary: GoBinary, bias: int = 0) -> None:
        self.plan = plan
        self.gen = generated
        self.binary = binary
        self.bias = bias
        self.values = compile_decoder(plan.types, func_name=self._func_name, type_name=self._type_name)

    @lru_cache(maxsize=4096)  # noqa: B019 - one decoder per stream; PCs repeat
    def _func_name(self, pc: int) -> str | None:
        sym = self.binary.elf.function_symbol_at(pc - self.bias)
        return sym.name if sym is not None else None

    @lru_cache(maxsize=1024)  # noqa: B019
    def _type_name(self, addr: int) -> str | None:
        try:
            t = self.binary.type_at_runtime_address(addr - self.bias)
        except Exception:  # noqa: BLE001 - a name is a nicety
            t = None
        return t.name if t is not None else None

    @lru_cache(maxsize=4096)  # noqa: B019
    def _frames(self, pc: int) -> tuple[dict[str, Any], ...]:
        out = []
        for fn, file, line in self.binary.frames_at(pc - self.bias) or ():
            out.append({"function": fn, "file": file, "line": line, "pc": hexaddr(pc)})
        return tuple(out) or ({"function": self._func_name(pc) or "?", "file": "?", "line": 0, "pc": hexaddr(pc)},)

    def decode(self, raw: bytes) -> dict[str, Any]:
        site, flags, goid, pid_tgid, ts, duration, nstack, _ = _HEADER.unpack_from(raw, 0)
        ev: dict[str, Any] = {"probe": self.plan.probe, "pid": pid_tgid >> 32, "tid": pid_tgid & 0xFFFFFFFF,
                              "goid": goid, "ts_ns": ts}
        pos = G.HEADER_SIZE
        if self.plan.stack:
            pcs = struct.unpack_from(f"<{nstack}Q", raw, pos)
            pos += 8 * nstack
            stack = []
            for i, pc in enumerate(pcs):
                # Return addresses point after the call: look up the call instruction's line.
                stack.extend(self._frames(pc if i == 0 else pc - 1))
            ev["stack"] = stack
        layout = self.gen.sites[site]
        ev["values"], pos = self._slots(raw, pos, layout.captures)
        if layout.returns:
            ev["returns"], pos = self._slots(raw, pos, layout.returns)
        if flags & G.FLAG_DURATION:
            ev["duration_ns"] = duration if duration else None
        if self.gen.callers:
            callers: dict[str, Any] = {}
            for function, slots in self.gen.callers:
                found = raw[pos]
                pos += 1
                if not found:
                    callers.setdefault(function, {"@unavailable": "not on the stack"})
                    continue
                pos += 8  # the frame's return address
                callers[function], pos = self._slots(raw, pos, slots)
            ev["callers"] = callers
        return ev

    def _slots(self, raw: bytes, pos: int, slots) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        for label, tid in slots:
            state = raw[pos]
            if state in (G.CAPTURE_UNAVAILABLE, G.CAPTURE_PARTIAL):
                code = raw[pos + 1]
                reasons = self.gen.reasons
                out[label] = {"@unavailable": reasons[code] if code < len(reasons) else "unavailable"}
                pos += 2
                if state == G.CAPTURE_PARTIAL:  # the length of a string or slice that is not available
                    out[label]["@len"] = struct.unpack_from("<q", raw, pos)[0]
                    pos += 8
                continue
            (length,) = struct.unpack_from("<I", raw, pos + 1)
            start = pos + 5
            end = start + length
            if tid is None:
                out[label] = {"@unavailable": "no type"}
            else:
                out[label], _ = self.values.decode(raw[start:end], 0, tid)
            pos = end
        return out, pos


def _alive(pid: int) -> bool:
    """Whether *pid* still runs: a process that exited but was not reaped yet (a zombie) has not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


class EventStream:
    """Events of one request on processes of one executable; iterate for event dicts, then ``summary()``.

    Stops after ``request.max_events`` delivered events, after ``request.duration_s`` seconds, when every
    target process has exited, or on :meth:`stop`. Probes are removed on every exit path. Records already
    captured when it stops are still delivered; a second :meth:`stop` meanwhile gives them up (counted as
    ``dropped_unread``).

    *ring_bytes* sizes the kernel ring buffer (a power of two). *backlog_bytes* bounds the records taken out
    of the ring and not decoded yet; beyond it the ring fills and the kernel drops (``dropped_ring_full``).
    *drain* says what empties the ring: ``"process"`` (a helper process: neither this process's GIL nor its
    garbage collector can hold it up; a thread is used if it cannot start) or ``"thread"``.
    """

    def __init__(self, pids: Sequence[int], request: EventRequest, *, binary: str | GoBinary | None = None,
                 ring_bytes: int | None = None, backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
                 drain: str = "process", debug_file: str | None = None) -> None:
        if backlog_bytes <= 0:
            raise GoprobeError("backlog_bytes must be positive")
        if drain not in ("process", "thread"):
            raise GoprobeError(f"drain must be 'process' or 'thread', not {drain!r}")
        if not pids:
            raise GoprobeError("no process given; pass at least one PID")
        for pid in pids:
            if not os.path.exists(f"/proc/{pid}"):
                raise ProcessNotFoundError(f"no process with PID {pid}; check the PID (it may have exited)")
        self.pids = tuple(pids)
        self.request = request
        self._owns_binary = not isinstance(binary, GoBinary)
        if isinstance(binary, GoBinary):
            path = binary.path
        elif binary:
            path = binary
        else:
            _executable(pids[0])  # a clear error for a process that is gone or not ours
            # Through /proc: the file the process runs even when its path was deleted or replaced since (an
            # in-place deploy); uprobes attach to that file too.
            path = f"/proc/{pids[0]}/exe"
        self.binary = binary if isinstance(binary, GoBinary) else GoBinary(path, debug_file=debug_file)
        self.session: EventSession | None = None
        self.drain: ProcessDrain | RingDrain | None = None
        self.drain_kind = drain
        try:
            want = _file_identity(str(self.binary.path))
            for pid in pids[1:]:
                _executable(pid)
                if _file_identity(f"/proc/{pid}/exe") != want:
                    raise GoprobeError(f"PID {pid} runs another executable than PID {pids[0]}; probe processes of "
                                       "one executable per call")
            from goprobe.snapshot import load_bias

            biases = {load_bias(self.binary, pid) for pid in pids}
            if len(biases) > 1:
                raise GoprobeError("these processes load the position-independent executable at different "
                                   "addresses; probe them one call each")
            self.bias = biases.pop()
            plan = rebase_event(compile_event(self.binary, request), self.bias)
            lim = request.limits
            limits = G.Limits(lim.string_bytes, lim.collection_bytes, lim.min_elements, lim.map_entries,
                              lim.pointer_depth, request.max_events, request.rate_limit_per_s, request.stack)
            self.plan = plan
            self.session = EventSession(plan, str(self.binary.path), pids, limits, bias=self.bias,
                                        **({"ring_bytes": ring_bytes} if ring_bytes else {}))
            self.decoder = EventRecordDecoder(plan, self.session.generated, self.binary, self.bias)
            #: What the kernel's verification budget made the programs leave out ("FUNCTION: EXPR: what"): those
            #: values show less than the limits allow. Fewer or smaller expressions per probe leave more room.
            self.budget_cuts: tuple[str, ...] = self.session.generated.budget_cuts
            # The probes write from now on: drain the ring already, however late the caller starts iterating.
            self.drain = self._start_drain(backlog_bytes)
        except BaseException:
            self.close()
            raise
        self.started = time.monotonic()
        self.backlog_bytes = backlog_bytes
        self.delivered = 0
        self.decode_errors = 0
        self.unread = 0  # records taken from the ring and given up by a second stop()
        self._stops = 0
        self._ended = None
        self.exited = False  # the stream ended because every target process exited

    def stop(self) -> None:
        """End the stream at the next poll (safe from a signal handler); called again while the captured
        records are being delivered, give those up."""
        self._stops += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        req = self.request
        deadline = None if req.duration_s is None else self.started + req.duration_s
        assert self.session is not None and self.drain is not None
        drain = self.drain
        if drain.finished:
            return  # iterated to the end already
        ended = False
        try:
            while not self._stops:
                if req.max_events is not None and self.delivered >= req.max_events:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                # Wait for a span no longer than this: the conditions above are checked in between.
                chunk = drain.get(min(0.05, left) if left is not None else 0.05)
                if chunk:
                    yield from self._decode(chunk)
                if not any(_alive(p) for p in self.pids):
                    self.exited = True
                    break
            ended = True
        finally:
            self._ended = time.monotonic()
            if self.session is not None:
                self.session.detach()
            if ended:
                drain.finish()  # what the probes left in the ring joins the backlog
            else:
                drain.close()  # the caller gave up iterating (or an error): nobody will read the rest
        # Everything captured still comes out (the limits may have been reached meanwhile), unless stop()
        # comes again.
        stops = self._stops
        while (chunk := drain.get(None)) is not None:
            if self._stops != stops:
                self.unread += sum(1 for _ in split_span(chunk)) + drain.abandon()
                break
            yield from self._decode(chunk)
        self._ended = time.monotonic()

    def _start_drain(self, backlog_bytes: int) -> ProcessDrain | RingDrain:
        assert self.session is not None
        if self.drain_kind == "process":
            drain = ProcessDrain(self.session.ring, backlog_bytes=backlog_bytes)
            try:
                return drain.start()
            except (OSError, RuntimeError):
                drain.close()
                self.drain_kind = "thread"  # e.g. no Python executable to start
        return RingDrain(self.session.ring, backlog_bytes=backlog_bytes).start()

    def _decode(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        limit = self.request.max_events
        decode = self.decoder.decode
        for raw in split_span(chunk):
            if limit is not None and self.delivered >= limit:
                return
            try:
                ev = decode(raw)
            except (struct.error, IndexError, KeyError):
                self.decode_errors += 1
                continue
            self.delivered += 1
            yield ev

    def counters(self) -> Counters:
        return self.session.counters_now() if self.session is not None else Counters()

    def summary(self) -> dict[str, Any]:
        """Events delivered, drops by cause, probe hits, and the rate, for the end of a run."""
        c = self.counters()
        elapsed = (self._ended or time.monotonic()) - self.started
        d = self.drain
        return {"events": self.delivered, "hits": c.hits, "filtered": c.filtered,
                "dropped": c.dropped + self.unread, "dropped_ring_full": c.dropped_full,
                "dropped_max_events": c.dropped_max, "dropped_rate_limit": c.dropped_rate,
                "dropped_unread": self.unread, "decode_errors": self.decode_errors,
                "seconds": round(elapsed, 3), "events_per_s": round(self.delivered / elapsed, 1) if elapsed else None,
                "backlog_peak_bytes": d.peak_backlog if d else 0, "backlog_limit_bytes": self.backlog_bytes,
                "backlog_stalls": d.stalls if d else 0, "drain": self.drain_kind,
                "budget_cuts": list(self.budget_cuts), "targets_exited": self.exited}

    def close(self) -> None:
        """Remove the probes and release everything (the iterator ends)."""
        if self.drain is not None:
            self.drain.close()  # its thread reads the ring: stop it before the ring goes
        if self.session is not None:
            self.session.close()
            self.session = None
        if self._owns_binary and getattr(self, "binary", None) is not None:
            self.binary.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_events(pids: Sequence[int], request: EventRequest | str, captures: Sequence[str] = (), *,
                  binary: str | GoBinary | None = None, **kw) -> EventStream:
    """Start probing *pids*; *request* is an :class:`~goprobe.request.EventRequest` or a probe point string
    (then *captures* and the keyword arguments of ``EventRequest.build`` apply)."""
    if isinstance(request, str):
        build_kw = {k: kw.pop(k) for k in list(kw)
                    if k not in ("ring_bytes", "backlog_bytes", "drain", "debug_file")}
        request = EventRequest.build(request, captures, **build_kw)
    return EventStream(pids, request, binary=binary, **kw)


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _executable(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise ProcessNotFoundError(f"no process with PID {pid}; check the PID (it may have exited)") from None
    except PermissionError:
        raise ProcessError(f"no permission to inspect PID {pid}; run goprobe as root or as the process's user") \
            from None


def install_stop_signals(stream: EventStream) -> None:
    """SIGINT/SIGTERM end the stream cleanly (probes removed, summary printed) instead of a traceback."""
    def handler(_sig, _frame):
        stream.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
