"""Runs a :class:`~goprobe.ir.snapshot.SnapshotPlan` against a stopped process's memory and threads.

Only memory reading happens here (it is what the target's pause must cover); the result is raw: goroutine
fields, frame PCs, and value-stream bytes per captured variable. ``goprobe.snapshot`` decodes and
symbolises it after the process runs again.
"""

from __future__ import annotations

import bisect
import struct
import time
from collections.abc import Sequence
import attrs

from goprobe.backends.interpreter.access import PathError, evaluate
from goprobe.backends.interpreter.copied_memory import NotCopied
from goprobe.backends.interpreter.page_cache import PAGE, PageCache
from goprobe.backends.interpreter.values import RuntimeTypeInfo, ValueEncoder
from goprobe.dwarf import expressions as E
from goprobe.ir import values as V
from goprobe.ir.location_checks import known_length
from goprobe.ir.snapshot import G_DEAD, G_SCAN, FramePlan, SnapshotPlan

G_RUNNING, G_SYSCALL = 2, 3


_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
RSP, RBP, RIP = 7, 6, 16

# DWARF register number → name in a ThreadState's regs (amd64).
_REG_NAMES = {0: "rax", 1: "rdx", 2: "rcx", 3: "rbx", 4: "rsi", 5: "rdi", 6: "rbp", 7: "rsp", 8: "r8", 9: "r9",
              10: "r10", 11: "r11", 12: "r12", 13: "r13", 14: "r14", 15: "r15", 16: "rip"}

_PREFETCH_STACK = 256 * 1024  # larger used stacks are read page by page as frames need them
MAX_STACK = 64 << 20  # a stacks-only copy keeps this much of a goroutine's stack (its innermost part)



@attrs.frozen(slots=True)
class RawCapture:
    label: str
    type: int | None
    data: bytes | None  # value stream of one value; None with `unavailable`
    unavailable: str | None = None
    known_len: int | None = None  # an unavailable string or slice whose length is known


@attrs.frozen(slots=True)
class RawFrame:
    pc: int
    sp: int
    top: bool  # registers are exact here (the goroutine is running on a thread); else a caller frame
    captures: tuple[tuple[str, bool, tuple[RawCapture, ...]], ...]  # (function, inlined, captures) per plan hit


@attrs.frozen(slots=True)
class RawGoroutine:
    goid: int
    status: int
    wait_reason: int
    tid: int | None
    frames: tuple[RawFrame, ...]
    truncated: bool
    gopc: int = 0  # the go statement that created it
    parent_goid: int = 0
    waitsince: int = 0  # nanotime; 0: not known
    locked: bool = False  # locked to its thread (runtime.LockOSThread)
    labels: int = 0  # g.labels at the pause: its pprof label set (read after the process resumes)
    g: int = 0  # the g's address


@attrs.frozen(slots=True)
class RawSnapshot:
    goroutines: tuple[RawGoroutine, ...]
    errors: tuple[str, ...]
    skipped: int = 0  # live goroutines left out past the plan's max_goroutines


MAX_SLOTS = 1 << 23  # allgs slots looked at, at most (bpf_loop's bound too)
_SLOT_CHUNK = 4096  # allgs slots whose g's are read in one batch


class PlanIndex:
    """Lookup tables derived from a plan; built once, before a pause (the unwinding table can be large)."""

    def __init__(self, plan: SnapshotPlan) -> None:
        self.scalars = {i: e.size for i, e in enumerate(plan.types.entries) if isinstance(e.shape, V.Scalar)}
        self.unwind_starts = [lo for lo, _hi, _rows in plan.unwind]
        self.stop_starts = [lo for lo, _hi in plan.stops]
        self.frame_plans = sorted(((lo, hi, fp) for fp in plan.frames for lo, hi in fp.ranges), key=lambda x: x[0])


class SnapshotInterpreter:
    def __init__(self, plan: SnapshotPlan, memory, threads: Sequence, limits, index: PlanIndex | None = None,
                 paused: bool = True) -> None:
        """*paused*: this run holds a pause (its clock bounds the run); False for a run over a copy made in a
        pause (:func:`copy_for_values`) or over the running process (:func:`pages_to_copy`)."""
        self.plan = plan
        self.mem = memory if isinstance(memory, PageCache) else PageCache(memory)  # a copy made in a pause: as is
        self.skipped = 0  # live goroutines past the plan's max_goroutines (counted by load)
        self.load_errors: list[str] = []
        self._pcs: dict[int, tuple] = {}
        index = index or PlanIndex(plan)
        self._scalars = index.scalars
        self.threads = {t.tid: t for t in threads}
        self.limits = limits
        # One clock for the whole pause (this object is made once the process is stopped): every loop that
        # can run long checks it, so limits.pause_ms bounds the pause itself, not one stage of it.
        budget = getattr(limits, "pause_ms", None)
        self.budget_ms = budget
        self.deadline = time.monotonic() + budget / 1000 if budget and paused else None
        self.not_copied = 0  # captures cut because a copy made in the pause did not hold what they read
        self.timed_out_in_values = False
        self.rt = RuntimeTypeInfo(plan.interfaces)
        self._dictionary = 0  # of the frame being captured
        self._unwind_starts = index.unwind_starts
        self._stop_starts = index.stop_starts
        self._frame_plans = index.frame_plans

    def load(self, whole_stacks: bool = False) -> tuple[list[int], list[bytes | None], dict[int, object]] | str:
        """Read the goroutine list, every g and every goroutine's used stack, in a few batched reads (stacks
        over _PREFETCH_STACK are read page by page as frames need them, unless *whole_stacks*: a copy made for
        unwinding after the process resumes must hold them whole).

        Returns (g addresses, g structures, g → thread), or the reason the list cannot be read.
        """
        limit = MAX_STACK if whole_stacks else _PREFETCH_STACK
        gl = self.plan.goroutines
        raw = self.mem.read(gl.allglen, 8)
        hdr = self.mem.read(gl.allgs, 8)
        if raw is None or hdr is None:
            return "cannot read the goroutine list (runtime.allgs)"
        # Every slot is looked at: dead goroutines stay in allgs, and the cap counts live ones only.
        n = min(_U64.unpack(raw)[0], MAX_SLOTS)
        base = _U64.unpack(hdr)[0]
        if n and self.mem.read(base, 8) is None:
            return "cannot read the goroutine list (runtime.allgs)"
        by_thread = self._thread_goroutines()
        gps, gs = self._live_goroutines(base, n)
        # Each goroutine's used stack, in a few more batches: its frames are read from there.
        for start in range(0, len(gps), _SLOT_CHUNK):
            if self.out_of_time():  # what is not prefetched is read on demand, if the budget allows
                break
            spans = []
            for gp, g in zip(gps[start:start + _SLOT_CHUNK], gs[start:start + _SLOT_CHUNK]):
                hi = _U64.unpack_from(g, gl.stack_hi)[0]
                sps = [_U64.unpack_from(g, gl.sched_sp)[0], _U64.unpack_from(g, gl.syscall_sp)[0]]
                thread = by_thread.get(gp)
                if thread is not None:
                    sps.append(thread.regs.get("rsp", 0))
                for sp in sps:
                    if 0 < sp < hi:
                        spans.append((max(sp, hi - limit), min(hi - sp, limit)))
            self.mem.prefetch(spans)
        return gps, gs, by_thread

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def _live_goroutines(self, base: int, n: int) -> tuple[list[int], list[bytes]]:
        """The first max_goroutines live goroutines of the *n* slots of allgs at *base* and their g's; the
        live ones past that are counted in ``self.skipped`` from their status word alone. Chunk by chunk, so
        that a huge allgs (or a corrupt allglen) costs neither memory nor more than the pause budget."""
        gl = self.plan.goroutines
        cap = self.plan.max_goroutines
        gps: list[int] = []
        gs: list[bytes] = []

        def live(g: bytes | None, at: int = 0) -> bool:
            if g is None:
                return False
            status = int.from_bytes(g[at:at + gl.status_size], "little") & ~G_SCAN
            return status not in (G_DEAD, 0)

        step = min(_SLOT_CHUNK, max(256, cap))  # small limits look at small chunks between clock checks
        try:
            self._walk_allgs(base, n, step, cap, gps, gs, live)
        except NotCopied:  # a copy made in a pause whose limit cut the goroutine list: the list ends there
            self.load_errors.append(f"the goroutine list was copied in the pause up to {len(gps)} live goroutines "
                                    "(the pause limit was reached): the others are not shown")
        return gps, gs

    def _walk_allgs(self, base: int, n: int, step: int, cap: int, gps: list[int], gs: list[bytes], live) -> None:
        gl = self.plan.goroutines
        for start in range(0, n, step):
            # Through the page cache, like every read here: a stacks-only copy must hold what a second pass
            # over it reads.
            arr = self.mem.read(base + 8 * start, 8 * min(step, n - start))
            if arr is None:
                self.load_errors.append(f"the goroutine list (runtime.allgs) is readable only up to slot {start}")
                break
            chunk = [gp for (gp,) in struct.iter_unpack("<Q", arr) if gp]
            if len(gps) < cap:
                self.mem.prefetch((gp, gl.g_size) for gp in chunk)
                for gp in chunk:
                    g = self.mem.read(gp, gl.g_size)
                    if not live(g, gl.status):
                        continue
                    if len(gps) < cap:
                        gps.append(gp)
                        gs.append(g)
                    else:
                        self.skipped += 1
            else:  # past the limit: the status words only
                self.mem.prefetch((gp + gl.status, gl.status_size) for gp in chunk)
                self.skipped += sum(live(self.mem.read(gp + gl.status, gl.status_size)) for gp in chunk)
            if self.out_of_time():
                self.load_errors.append(
                    f"pause limit of {self.budget_ms} ms reached while looking at the goroutine list ({start + step} "
                    f"of {n} slots): the process was resumed; raise limits.pause_ms")
                break

    def run(self) -> RawSnapshot:
        gl = self.plan.goroutines
        loaded = self.load()
        if isinstance(loaded, str):
            return RawSnapshot((), (loaded,))
        gps, gs, by_thread = loaded
        out = []
        errors = list(self.load_errors)
        for i, (gp, g) in enumerate(zip(gps, gs)):
            if self.out_of_time():
                if not self.timed_out_in_values:
                    errors.append(f"pause limit of {self.budget_ms} ms reached after {i} of {len(gps)} goroutines: "
                                  "the process was resumed; raise limits.pause_ms or capture less")
                break
            status = int.from_bytes(g[gl.status:gl.status + gl.status_size], "little") & ~G_SCAN
            rg = self._goroutine(gp, g, status, by_thread)
            if self.plan.goroutine_filter is not None and not any(
                    lo <= f.pc - (0 if f.top else 1) < hi for f in rg.frames for lo, hi in self.plan.goroutine_filter):
                continue
            out.append(rg)
            if self.timed_out_in_values:
                errors.append(f"pause limit of {self.budget_ms} ms reached while capturing the values of goroutine "
                              f"{rg.goid} ({i + 1} of {len(gps)} goroutines): the values from there on are cut "
                              "(@truncated) and the process was resumed; raise limits.pause_ms or capture less")
                break
        if self.not_copied:
            errors.append(f"{self.not_copied} values were cut (@truncated or unavailable) where they lead to memory "
                          "that goprobe did not copy in the pause (it changed after goprobe planned the pause, "
                          "or the pause limit was reached)")
        return RawSnapshot(tuple(out), tuple(errors), self.skipped)

    # -- goroutines -------------------------------------------------------------------------------------
    def _thread_goroutines(self) -> dict[int, object]:
        """g address → the thread currently running it (from the thread-local g slot at fs_base-8)."""
        out = {}
        for t in self.threads.values():
            fs = t.regs.get("fs_base", 0)
            raw = self.mem.read(fs - 8, 8) if fs else None
            if raw:
                out[_U64.unpack(raw)[0]] = t
        return out

    def _goroutine(self, gp: int, g: bytes, status: int, by_thread) -> RawGoroutine:
        gl = self.plan.goroutines
        u64 = lambda off: _U64.unpack_from(g, off)[0]  # noqa: E731
        goid = u64(gl.goid)
        thread = by_thread.get(gp)
        regs = None
        if thread is not None:
            r = thread.regs
            pc, sp, bp = r["rip"], r["rsp"], r["rbp"]
            regs = r
        elif status == 3 and u64(gl.syscall_sp):  # in a system call: where it entered it
            pc, sp, bp = u64(gl.syscall_pc), u64(gl.syscall_sp), u64(gl.sched_bp)
        else:
            pc, sp, bp = u64(gl.sched_pc), u64(gl.sched_sp), u64(gl.sched_bp)
        frames, truncated = self._unwind(pc, sp, bp, regs)
        tid = thread.tid if thread is not None else None
        return RawGoroutine(goid, status, g[gl.waitreason], tid, tuple(frames), truncated, *gl.extras(g), g=gp)

    def _pc_info(self, pc: int) -> tuple:
        """Per-PC facts, memoised for the run: (CFA register, CFA offset) or None, whether unwinding stops
        here, and the frame plans whose code contains the PC."""
        info = self._pcs.get(pc)
        if info is None:
            rule = None
            i = bisect.bisect_right(self._unwind_starts, pc) - 1
            if i >= 0:
                lo, hi, rows = self.plan.unwind[i]
                if pc < hi:
                    j = bisect.bisect_right(rows, (pc, 1 << 30, 1 << 62)) - 1
                    if j >= 0:
                        rule = rows[j][1:]
            k = bisect.bisect_right(self._stop_starts, pc) - 1
            # No unwinding information means no Go function: stop there too.
            stop = rule is None or (k >= 0 and pc < self.plan.stops[k][1])
            plans = tuple(fp for lo, hi, fp in self._frame_plans if lo <= pc < hi)
            info = self._pcs[pc] = (rule, stop, plans)
        return info

    def _unwind(self, pc: int, sp: int, bp: int, regs) -> tuple[list[RawFrame], bool]:
        frames: list[RawFrame] = []
        read = self.mem.read
        top = regs is not None
        for _ in range(self.plan.max_frames):
            if pc == 0:
                return frames, False
            lookup = pc if (top or not frames) else pc - 1  # a return address: its call is at pc-1
            rule, stop, plans = self._pc_info(lookup)
            if rule is not None and rule[0] == RSP:
                cfa = sp + rule[1]
            elif rule is not None and rule[0] == RBP:
                cfa = bp + rule[1]
            elif bp:
                cfa = bp + 16  # no CFI: follow the frame pointer chain
            else:
                cfa = None
            # A frame looked up at its return address minus one is stopped at a call: its captures use the
            # locations judged by the runtime's liveness maps there.
            caller = lookup != pc
            captures = tuple((fp.function, fp.inlined,
                              self._capture_frame(fp, lookup, cfa, regs if top else None, caller))
                             for fp in plans) if plans else ()
            frames.append(RawFrame(pc, sp, top, captures))
            if stop or cfa is None:
                return frames, False
            try:
                ret = read(cfa - 8, 8)
            except NotCopied:  # beyond the stack copied in the pause
                return frames, True
            if ret is None:  # the stack ends in memory that cannot be read: what follows is unknown
                return frames, True
            pc = _U64.unpack(ret)[0]
            if rule[0] != RSP:
                # Only a BP-based CFA needs the caller's BP (saved just below the return address); Go's CFI is
                # RSP-based, so this is rare, and a frame without a rule ends the walk.
                try:
                    saved = read(cfa - 16, 8)
                except NotCopied:
                    saved = None
                bp = _U64.unpack(saved)[0] if saved else 0
            sp = cfa
            top = False
            regs = None
        return frames, True

    # -- captures ---------------------------------------------------------------------------------------
    def _capture_frame(self, fp: FramePlan, pc: int, cfa: int | None, regs, caller: bool = False
                       ) -> tuple[RawCapture, ...]:
        try:
            return self._frame_captures(fp, pc, cfa, regs, caller)
        except NotCopied as exc:  # a location outside the copy (rare: locations are on the copied stack)
            self.not_copied += 1
            why = f"not read: {exc}"
            labels: dict[str, int | None] = {}
            for c in fp.captures:
                if labels.get(c.label) is None:
                    labels[c.label] = c.type
            return tuple(RawCapture(label, tid, None, why) for label, tid in labels.items())

    def _frame_captures(self, fp: FramePlan, pc: int, cfa: int | None, regs, caller: bool
                        ) -> tuple[RawCapture, ...]:
        out: list[RawCapture] = []
        done: set[str] = set()
        self._dictionary = self._frame_dictionary(fp, pc, cfa, regs) if fp.dictionary else 0
        for cap in fp.captures:
            if cap.label in done:
                continue
            if cap.type is None:
                out.append(RawCapture(cap.label, None, None, cap.missing))
                done.add(cap.label)
                continue
            if cap.path is not None and cap.path.root == "":  # rooted at a package variable
                done.add(cap.label)
                out.append(self._finish(cap, addr=cap.path.global_address))
                continue
            loc = None
            for r in cap.locations_for(caller):
                if r.low <= pc < r.high:
                    loc = r.location
                    break
            if loc is None:
                continue  # another same-named variable (another scope) may cover this PC
            done.add(cap.label)
            out.append(self._capture(cap, loc, cfa, regs))
        for cap in fp.captures:
            if cap.label not in done:
                done.add(cap.label)
                out.append(RawCapture(cap.label, cap.type, None, "not available at this PC (optimised away "
                                      "or out of scope)"))
        return tuple(out)

    def _frame_dictionary(self, fp: FramePlan, pc: int, cfa: int | None, regs) -> int:
        """The dictionary pointer of a shaped generic frame (0 where its location is unknown)."""
        for r in fp.dictionary:
            if r.low <= pc < r.high:
                data = bytearray()
                for piece in r.location:
                    got, _why = self._piece(piece, piece.size if piece.size is not None else 8, cfa, regs)
                    if got is None:
                        return 0
                    data += got
                return _U64.unpack_from(bytes(data).ljust(8, b"\0"))[0]
        return 0

    def _capture(self, cap, loc: E.Location, cfa: int | None, regs) -> RawCapture:
        root_size = 8 if cap.escaped else self.plan.types[cap.root_type if cap.root_type is not None else cap.type].size
        data = bytearray()
        for piece in loc:
            want = piece.size if piece.size is not None else root_size
            got, why = self._piece(piece, want, cfa, regs)
            if got is None:
                return RawCapture(cap.label, cap.type, None, why, self._known_len(cap, loc, cfa, regs))
            data += got
        data = bytes(data).ljust(root_size, b"\0")
        if cap.escaped:  # the slot holds the address of the heap copy
            return self._finish(cap, addr=_U64.unpack_from(data)[0])
        if cap.type in self._scalars and (cap.path is None or not cap.path.steps):
            # A scalar in hand: its value-stream encoding is the OK status byte and its bytes.
            return RawCapture(cap.label, cap.type, b"\x00" + data[:self._scalars[cap.type]])
        return self._finish(cap, data=data)

    def _known_len(self, cap, loc: E.Location, cfa: int | None, regs) -> int | None:
        root = self.plan.types[cap.root_type if cap.root_type is not None else cap.type].shape
        piece = known_length(loc, root, not cap.escaped and (cap.path is None or not cap.path.steps))
        if piece is None:
            return None
        got, _why = self._piece(piece, 8, cfa, regs)
        return None if got is None else _I64.unpack(got.ljust(8, b"\0"))[0]

    def _finish(self, cap, *, addr: int | None = None, data: bytes | None = None) -> RawCapture:
        """Follow the capture's access path from its root, then encode the result."""
        enc = ValueEncoder(self.plan.types, self.mem, self.limits, self.rt, self.deadline)
        enc.dictionary = self._dictionary
        enc.begin_value()
        if cap.path is not None and cap.path.steps:
            try:
                st = evaluate(enc, cap.path, addr=addr, data=data)
            except PathError as exc:
                return RawCapture(cap.label, cap.type, None, str(exc))
            except NotCopied as exc:
                self.not_copied += 1
                return RawCapture(cap.label, cap.type, None, f"not read: {exc}")
            addr, data = st.addr, st.data
        size = self.plan.types[cap.type].size
        if data is not None:
            enc.value_from_bytes(cap.type, data[:size].ljust(size, b"\0"))
        else:
            enc.value_at(cap.type, addr)
        if enc.not_copied:
            self.not_copied += 1
        else:
            self.timed_out_in_values |= enc.timed_out
        return RawCapture(cap.label, cap.type, bytes(enc.out))

    def _piece(self, p: E.Piece, size: int, cfa: int | None, regs) -> tuple[bytes | None, str]:
        if p.kind == E.UNAVAILABLE:
            return None, p.reason or "optimised away at this PC"
        if p.kind == E.IMPLICIT:
            return p.value[:size].ljust(size, b"\0"), ""
        if p.kind == E.REGISTER:
            if regs is None:
                return None, "held in a register, which Go does not preserve across calls"
            name = _REG_NAMES.get(p.reg)
            if name is None or name not in regs:
                return None, f"held in register {p.reg}, which is not captured"
            return (regs[name] & (2**64 - 1)).to_bytes(8, "little")[:size], ""
        if p.kind == E.CFA_MEMORY:
            if cfa is None:
                return None, "frame address unknown"
            addr = cfa + p.offset
        elif p.kind == E.ADDRESS_MEMORY:
            addr = p.offset
        elif p.kind == E.REGISTER_MEMORY:
            name = _REG_NAMES.get(p.reg)
            if regs is None or name not in regs:
                return None, "address held in a register that is not preserved"
            addr = regs[name] + p.offset
        else:
            return None, f"unsupported location {p.kind}"
        if p.indirect:
            raw = self.mem.read(addr, 8)
            if raw is None:
                return None, f"memory at {addr:#x} is not readable"
            addr = _U64.unpack(raw)[0] + p.post_offset
        data = self.mem.read(addr, size)
        if data is None:
            return None, f"memory at {addr:#x} is not readable"
        return data, ""


def goroutine_labels(raw: RawSnapshot, plan: SnapshotPlan, memory, limits) -> dict[int, bytes | str]:
    """The pprof labels of each goroutine that had some at the pause, read after the process resumed (they
    never lengthen the pause): goid → the label set's encoded value, or why it is not shown.

    A label set is never changed once made (setting labels makes a new one), and it stays alive while g.labels
    holds it: so one read while g.labels still holds the pointer seen in the pause is the set of the pause."""
    gl = plan.goroutines
    out: dict[int, bytes | str] = {}
    if plan.labels_type is None or not gl.labels:
        return out
    rt = RuntimeTypeInfo(plan.interfaces)
    for g in raw.goroutines:
        if not g.labels or not g.g:
            continue
        enc = ValueEncoder(plan.types, memory, limits, rt)
        enc.begin_value()
        enc.value_at(plan.labels_type, g.labels)
        now = memory.read(g.g + gl.labels, 8)
        if now is None or int.from_bytes(now, "little") != g.labels:
            out[g.goid] = "the goroutine's labels changed before they could be read"
        else:
            out[g.goid] = bytes(enc.out)
    return out


def running_goroutines(plan: SnapshotPlan, memory, threads: Sequence, limits,
                       index: PlanIndex | None = None) -> dict[int, RawGoroutine]:
    """The goroutines running on a thread now (g address → raw goroutine), unwound from the thread's registers:
    another backend that walks ``g.sched`` uses these instead of its own view of them."""
    gl = plan.goroutines
    # Fast path (this runs while the process is paused): each thread's current g in one batched read, their
    # statuses in another; the interpreter is only set up when some goroutine is really on a thread.
    tls = [t.regs.get("fs_base", 0) for t in threads]
    words = memory.read_many([(fs - 8, 8) for fs in tls if fs])
    gps = [_U64.unpack(w)[0] for w in words if w]
    spans = [(gp + gl.status, gl.status_size) for gp in gps if gp]
    statuses = memory.read_many(spans) if spans else []
    if not any(st is not None and int.from_bytes(st, "little") & ~G_SCAN in (G_RUNNING, G_SYSCALL)
               for st in statuses):
        return {}
    interp = SnapshotInterpreter(plan, memory, threads, limits, index)
    out = {}
    by_thread = interp._thread_goroutines()
    for gp in by_thread:
        g = interp.mem.read(gp, gl.g_size)
        if g is None:
            continue
        status = int.from_bytes(g[gl.status:gl.status + gl.status_size], "little") & ~G_SCAN
        if status not in (G_RUNNING, G_SYSCALL):  # e.g. a thread's g0 in the scheduler: not in allgs
            continue
        out[gp] = interp._goroutine(gp, g, status, by_thread)
    return out


def copy_stacks(plan: SnapshotPlan, memory, threads: Sequence, limits) -> PageCache:
    """Copy what a stacks-only snapshot reads — goroutine list, g structures, used stacks — and nothing else.

    Run while the process is paused; the plan can then run against the returned copy after it resumes, which
    keeps the pause to a few batched reads. Only for plans without captures: values need the live heap.
    """
    interp = SnapshotInterpreter(plan, memory, threads, limits)
    interp.load(whole_stacks=True)
    interp.mem.freeze()
    return interp.mem


def pages_to_copy(plan: SnapshotPlan, memory, limits) -> list[int]:
    """Before a pause: run *plan* against the running process (*memory*) to learn which pages its values
    read. The values themselves are thrown away (read while the process runs, they may be torn)."""
    interp = SnapshotInterpreter(plan, memory, (), limits, paused=False)
    interp.run()
    return list(interp.mem.pages)  # unreadable ones too: the copy must say they were unreadable in the pause


def copy_for_values(plan: SnapshotPlan, memory, threads: Sequence, limits, pages: list[int]
                    ) -> tuple[PageCache, list[str]]:
    """In a pause: copy the goroutine list, the g's, the used stacks and the *pages* (from
    :func:`pages_to_copy`), in batched reads, within the pause limit. The plan then runs over the copy after
    the process resumes (``run_snapshot(..., paused=False)``): the pause costs the bytes read, whatever is
    captured. A value that leads to memory outside the copy (it changed since *pages* were found, or the
    limit cut the copy) is cut there, and the errors say so. Returns the copy and the errors of the copy."""
    interp = SnapshotInterpreter(plan, memory, threads, limits)
    loaded = interp.load(whole_stacks=True)
    errors: list[str] = list(interp.load_errors) + ([loaded] if isinstance(loaded, str) else [])
    if not isinstance(loaded, str):
        # Goroutines on a thread are where their registers say, which the run before the pause could not
        # know: their captures run here (a few goroutines: one per thread at most), to copy what they read.
        gps, gs, by_thread = loaded
        gl = plan.goroutines
        for gp, g in zip(gps, gs):
            if gp in by_thread and not interp.out_of_time():
                status = int.from_bytes(g[gl.status:gl.status + gl.status_size], "little") & ~G_SCAN
                interp._goroutine(gp, g, status, by_thread)
    # In the order the run before the pause read them: a cut then keeps the start of each value (a map's
    # directory and first tables), never an arbitrary set of its pages.
    have = interp.mem.pages
    todo = [p for p in dict.fromkeys(pages) if p not in have]
    for start in range(0, len(todo), _PAGE_BATCH):
        if interp.out_of_time():
            errors.append(f"pause limit of {interp.budget_ms} ms reached while copying the memory of the values "
                          f"({start} of {len(todo)} pages): values that need the rest are cut; raise "
                          "limits.pause_ms or capture less")
            break
        interp.mem.prefetch((p, PAGE) for p in todo[start:start + _PAGE_BATCH])
    interp.mem.freeze(strict=True)
    return interp.mem, errors


_PAGE_BATCH = 256  # pages copied in one batched read (~1 ms: the pause limit is checked between them)


def run_snapshot(plan: SnapshotPlan, memory, threads: Sequence, limits, paused: bool = True) -> RawSnapshot:
    """Run *plan* against *memory* (a paused process, a core file, test memory, a copy made in a pause) and its
    *threads*. *paused*: the run holds a pause, whose limit (``limits.pause_ms``) bounds it."""
    return SnapshotInterpreter(plan, memory, threads, limits, paused=paused).run()


__all__ = ["RawSnapshot", "RawGoroutine", "RawFrame", "RawCapture", "run_snapshot"]
