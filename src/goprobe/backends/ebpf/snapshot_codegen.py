"""Lowers a snapshot plan (``goprobe.ir.snapshot.SnapshotPlan``) to one BPF program.

Run on demand against a paused process, it walks ``runtime.allgs`` and, per goroutine, unwinds the stack
with the plan's CFA table and captures the requested variables of matching frames. Two triggers:

- ``uprobe`` (preferred): a sleepable uprobe program that one stopped thread of the target runs when it is
  single-stepped through the probed instruction, so it reads the target's memory in the target's own context
  with ``bpf_copy_from_user`` (a fraction of the cost of a cross-process read);
- ``iterator``: a sleepable task iterator run from goprobe's context, reading with ``bpf_copy_from_user_task``.

One ring-buffer record per goroutine; the layout is documented in
``docs/event-record.md`` (section "snapshot records"). Goroutines and frames are ``bpf_loop`` callbacks, so the
verifier checks each body once whatever the number of goroutines.

The unwinding table lives in an array map of rows sorted by PC (binary search in the kernel); each row also
says which frame plans cover its PCs (a *plan set*), so a frame finds its captures in one lookup.
"""

from __future__ import annotations

import bisect
import struct

import attrs

from goprobe.backends.ebpf import event_codegen as G
from goprobe.backends.ebpf.copy_codegen import ARM_COPY, ARM_WALK_CUT, CopyEmitter, CopyMaps
from goprobe.backends.ebpf.event_codegen import HALF, TMP_OFF, _SiteProgram, capture_groups
from goprobe.backends.ebpf.ir_text import Function, Module
from goprobe.backends.ebpf.llvm_target import DebugInfo
from goprobe.ir.snapshot import G_DEAD, G_SCAN, SnapshotPlan

RSP, RBP = 7, 6
ROW = struct.Struct("<QiBBH")  # first PC, CFA offset, CFA register (0xFF: none), flags, plan set
ROW_HAS_RULE, ROW_STOP = 1, 2

# per-CPU scratch slots (after the event layout) for loop state, read with volatile loads
SLOT_ALLGS = G.SCRATCH_SIZE
SLOT_PC, SLOT_SP, SLOT_BP, SLOT_DONE, SLOT_N, SLOT_LO, SLOT_HI, SLOT_TYPES = (SLOT_ALLGS + 8 * k
                                                                             for k in range(1, 9))
SLOT_SBASE, SLOT_SEND, SLOT_BATCH = SLOT_TYPES + 8, SLOT_TYPES + 16, SLOT_TYPES + 24
SLOT_PLAN_PC, SLOT_PLAN_CFA = SLOT_BATCH + 8, SLOT_BATCH + 16
SLOT_GLO, SLOT_GHI = SLOT_PLAN_CFA + 8, SLOT_PLAN_CFA + 16  # the target addresses the g window holds
SLOT_SWLO, SLOT_SWHI = SLOT_GHI + 8, SLOT_GHI + 16  # the target addresses the stack copy holds
SLOT_LAST, SLOT_KEEP_BP = SLOT_SWHI + 8, SLOT_SWHI + 16  # the frame is the last one; its rule keeps RBP
SLOT_FIRST = SLOT_KEEP_BP + 8  # the allgs index of this program's first goroutine (its share)
SLOT_LIVE = SLOT_FIRST + 8  # live goroutines this run has walked (its share of the plan's max_goroutines)
G_OFF = SLOT_LIVE + 8  # the g window: the goroutine's g, and the ones allocated right after it
# The runtime allocates g's one after the other (480 bytes apart on Go 1.27): one read of this many bytes
# holds the g's of the next dozen goroutines. A read costs ~150 ns here whatever its size up to a few KiB.
G_WINDOW = 1 << 13
G_MAX = 1024  # bytes of one g read
ALLGS_BATCH = 64  # g pointers read at once
BATCH_OFF = G_OFF + G_WINDOW + G_MAX
STACK_COPY = 1 << 14  # the used stack is copied in one read, up to this much (the rest is read as needed)
# Stacks of parked goroutines often lie side by side (2 KiB apart): when the next goroutine's stack is within
# this many bytes above this one's, one read copies both (and whatever lies between), the next one reuses it.
STACK_WINDOW = 1 << 13
STACK_OFF = BATCH_OFF + 8 * ALLGS_BATCH
SCRATCH_SIZE = STACK_OFF + 2 * STACK_COPY

ROW_RESULT = TMP_OFF + 16  # find_row's answer: the row (16 bytes)
PC_CACHE_BITS = 16  # the PC cache's slots: 2**16 entries of (pc, row)
PC_CACHE_ENTRY = 8 + ROW.size
PC_HASH = 0x9E3779B97F4A7C15 - (1 << 64)  # Fibonacci hashing (as a signed i64 constant for LLVM)

# g address, goid, status, wait reason, frames, truncated, go statement's PC, creator's goid, waitsince, lockedm,
# labels (the pprof label set's address)
GOROUTINE_HEADER = struct.Struct("<QQIIIIQQQQQ")
FRAME_HEADER = struct.Struct("<QQI")  # pc, sp, plan set


@attrs.frozen
class SnapshotMapFds:
    scratch: int
    events: int
    rows: int
    seen: int
    pc_cache: int  # array, direct-mapped: (lookup PC, its row) per slot (filled as frames are met; kept across runs)
    fixups: int  # ring buffer: values left to the interpreter (event_codegen.defer)
    # uprobe trigger: array of ARM_WORDS u64 (mmapable); [0] the armed run number, [1 + shard] the last run
    # done, [ARM_SLOTS + shard] how many goroutines that run found on a thread (running or in a system call),
    # [ARM_TIDS + shard] the thread that runs it (when several threads share the goroutines); with either
    # trigger, [ARM_SKIPPED + shard] the live goroutines that run left out past the plan's max_goroutines
    arm: int = -1


TRIGGERS = ("uprobe", "iterator")
SECTIONS = {"uprobe": "uprobe.s", "iterator": "iter/task"}
ARM_SLOTS = 64
MAX_SLOTS = 1 << 23  # allgs slots walked at most: bpf_loop's bound
SIGURG = 23
ARM_TIDS = 2 * ARM_SLOTS  # [ARM_TIDS + shard]: the thread that runs this program's share (workers > 1)
ARM_SKIPPED = 3 * ARM_SLOTS  # [ARM_SKIPPED + shard]: live goroutines of its share left out past the limit
ARM_WORDS = 5 * ARM_SLOTS  # the last ARM_SLOTS: the copier's (copy_codegen.ARM_COPY)
G_RUNNING, G_SYSCALL = 2, 3


@attrs.frozen
class GeneratedSnapshot:
    ir: str
    reasons: tuple[str, ...]
    plan_sets: tuple[tuple[int, ...], ...]  # plan set id → indices into plan.frames (id 0: none)
    slots: tuple[tuple[tuple[str, int | None], ...], ...]  # per frame plan: (label, type id) in record order


def unwind_rows(plan: SnapshotPlan) -> tuple[list[bytes], tuple[tuple[int, ...], ...]]:
    """The CFA table as sorted rows, split where frame plans begin and end, and the plan sets."""
    points: dict[int, None] = {0: None}
    for lo, hi, rows in plan.unwind:
        points[lo] = points[hi] = None
        for pc, _r, _o in rows:
            points[pc] = None
    for fp in plan.frames:
        for lo, hi in fp.ranges:
            points[lo] = points[hi] = None
    for lo, hi in plan.stops:
        points[lo] = points[hi] = None
    starts = sorted(points)
    out_rows: list[bytes] = []
    sets: dict[tuple[int, ...], int] = {(): 0}
    # Frame plans in the order the interpreter lists a frame's hits (by where their code starts).
    order = sorted(range(len(plan.frames)), key=lambda k: min(lo for lo, _hi in plan.frames[k].ranges))
    unwind_lo = [lo for lo, _h, _r in plan.unwind]
    # Which plans and stops cover each row: marked range by range (every range's ends are row starts)
    members_at: list[list[int]] = [[] for _ in starts]
    stop_at = bytearray(len(starts))
    for k in order:
        for lo, hi in plan.frames[k].ranges:
            for i in range(bisect.bisect_left(starts, lo), bisect.bisect_left(starts, hi)):
                if not members_at[i] or members_at[i][-1] != k:
                    members_at[i].append(k)
    for lo, hi in plan.stops:
        for i in range(bisect.bisect_left(starts, lo), bisect.bisect_left(starts, hi)):
            stop_at[i] = 1
    for n, pc in enumerate(starts):
        rule = None
        i = bisect.bisect_right(unwind_lo, pc) - 1
        if i >= 0:
            lo, hi, rows = plan.unwind[i]
            if pc < hi:
                j = bisect.bisect_right(rows, (pc, 1 << 30, 1 << 62)) - 1
                if j >= 0:
                    rule = rows[j][1:]
        stop = stop_at[n]
        members = tuple(members_at[n])
        sid = sets.setdefault(members, len(sets))
        flags = (ROW_HAS_RULE if rule is not None else 0) | (ROW_STOP if stop else 0)
        reg, off = rule if rule is not None else (0xFF, 0)
        out_rows.append(ROW.pack(pc, off, reg, flags, sid))
    plan_sets = tuple(k for k, _v in sorted(sets.items(), key=lambda kv: kv[1]))
    return out_rows, plan_sets


def generate(plan: SnapshotPlan, maps: SnapshotMapFds, n_rows: int, plan_sets, limits: G.Limits,
             only: frozenset[int] | None = None, *, trigger: str = "uprobe", shard: int = 0,
             worker: int = 0, workers: int = 1, root_modes: dict[str, str] | None = None,
             copy: tuple[CopyMaps, object, tuple[int, int]] | None = None) -> GeneratedSnapshot:
    """The program; with *only*, it captures in frames of those plans only (a request too large for one
    program is split into several, each verified on its own). *trigger*: see the module's docstring; a
    ``uprobe`` program runs only while ``arm[0]`` is non-zero and then stores it in ``arm[1 + shard]``.
    With *workers* > 1 (uprobe trigger) the goroutines are shared among that many threads stepped at once:
    this program walks share *worker* of ``allgs`` (whole batches of ALLGS_BATCH), and only on the thread
    ``arm[ARM_TIDS + shard]``. *root_modes*: capture functions (``capK_J``) whose code LLVM could not
    generate, by how they are made small: ``"defer"`` (the interpreter writes the whole value in the pause)
    or ``"drop"`` (unavailable, saying why); captures whose values the copier takes are ``"copy"`` from the
    start. *copy*: the copier's maps, copy plan and table sizes
    (``copy_codegen``): values of covered types left to goprobe are copied in the pause, encoded after it."""
    if workers > 1 and trigger != "uprobe":
        raise ValueError("only the uprobe trigger shares the goroutines among threads")
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown snapshot trigger {trigger!r}; use one of {TRIGGERS}")
    gen = _SnapshotGenerator(plan, maps, limits)
    gen.only = only
    gen.trigger = trigger
    gen.shard = min(shard, ARM_SLOTS - 2)
    gen.worker, gen.workers = worker, workers
    gen.root_modes = dict(root_modes or {})
    if copy is not None:
        gen.copy, gen.copy_plan, gen.copy_sizes = copy
        gen.root_modes = {**_copied_roots(plan, copy[1]), **gen.root_modes}
    return gen.run(n_rows, plan_sets)


def _copied_roots(plan: SnapshotPlan, cp) -> dict[str, str]:
    """The captures left whole to the copier from the start: those whose values lead to other objects (all of
    a type the copy plan covers). Their code is then a location and a push: small to verify, and the pause
    pays for the bytes read, not for encoding them; a capture that LLVM or the verifier rejected inline used
    to cost a failed load of seconds before it was made small."""
    out = {}
    for k, fp in enumerate(plan.frames):
        for j, (_label, cands) in enumerate(capture_groups(fp.captures)):
            types = {c.type for c in cands if c.type is not None}
            if types and types <= cp.covered and not all(cp.shallow(t) for t in types):
                out[f"cap{k}_{j}"] = "copy"
    return out


class _SnapshotGenerator:
    """What the shared value code expects of its generator (reasons, node budget, plan facts)."""

    def __init__(self, plan: SnapshotPlan, maps: SnapshotMapFds, limits: G.Limits) -> None:
        self.plan = plan
        self.maps = maps
        self.limits = limits
        self.table = plan.types
        self.di = DebugInfo()
        self.module = Module(self.di)
        self.reasons: list[str] = []
        self._nodes = 0
        self.defer = True
        self.trigger = "uprobe"
        self.shard = 0
        self.worker, self.workers = 0, 1
        self.copy: CopyMaps | None = None
        self.copy_plan = None
        self.copy_sizes = (0, 0)

    def reason(self, text: str) -> int:
        if text not in self.reasons:
            self.reasons.append(text)
        return self.reasons.index(text)

    def run(self, n_rows: int, plan_sets) -> GeneratedSnapshot:
        prog = _SnapshotProgram(self, n_rows, plan_sets)
        prog.emit()
        slots = tuple(tuple((label, next((c.type for c in cands if c.type is not None), None))
                            for label, cands in capture_groups(fp.captures)) for fp in self.plan.frames)
        return GeneratedSnapshot(self.module.text(), tuple(self.reasons), tuple(plan_sets), slots)


class _SnapshotProgram(CopyEmitter, _SiteProgram):
    """The iterator program and its two callbacks (per goroutine, per frame)."""

    def __init__(self, gen: _SnapshotGenerator, n_rows: int, plan_sets) -> None:
        self.gen = gen
        self.limits = gen.limits
        self.table = gen.table
        self.n_rows = n_rows
        self.plan_sets = plan_sets
        self.site = None
        self.task = None
        self.cfa = None
        self.stack_copy = False

    # Reads inside the goroutine's stack come from the copy made once per goroutine; others go to the target's
    # memory: in its own context (uprobe trigger) or across processes (iterator, about a microsecond a read).
    def _remote_read(self, dst: str, size: int | str, addr: str) -> str:
        f = self.fn
        if self.gen.trigger == "uprobe":
            # bpf_probe_read_user costs a fraction of bpf_copy_from_user, but fails on a page not present
            # (swapped out, never touched): only then does the faulting copy run.
            res = f.shared_alloca("remote_result", "i64")
            f.store(res, f.helper("probe_read_user", f"ptr {dst}", f"i64 {size}", f"i64 {addr}"))
            slow, done = f.label("fault_in"), f.label("read_in")
            f.cbr(f.icmp("ne", f.load(res), 0), slow, done)
            f.block(slow)
            f.store(res, f.helper("copy_from_user", f"ptr {dst}", f"i64 {size}", f"i64 {addr}"))
            f.br(done)
            f.block(done)
            return f.load(res)
        return f.helper("copy_from_user_task", f"ptr {dst}", f"i64 {size}", f"i64 {addr}", f"ptr {self.task}",
                        "i64 0")

    def read_user(self, dst: str, size: int | str, addr: str) -> str:
        f = self.fn
        if not self.stack_copy:
            return f.icmp("ne", self._remote_read(dst, size, addr), 0)
        res = f.shared_alloca("read_result", "i64")
        base, end = self.vload(SLOT_SBASE), self.vload(SLOT_SEND)
        inside = f.op(f"and i1 {f.icmp('uge', addr, base)}, {f.icmp('ule', f.add(addr, size), end)}")
        local, remote, done = f.label("local"), f.label("remote"), f.label("read_done")
        f.cbr(inside, local, remote)
        f.block(local)
        src = f.gep(f.gep(self.scratch, STACK_OFF), f.and_(f.barrier(f.sub(addr, base)), STACK_COPY - 1))
        if size == 8:  # a word (return address, saved frame pointer, most values): a plain load, no helper
            f.store(dst, f.load(src))
            f.store(res, 0)
        else:
            f.store(res, f.helper("probe_read_kernel", f"ptr {dst}", f"i64 {size}", f"ptr {src}"))
        f.br(done)
        f.block(remote)
        f.store(res, self._remote_read(dst, size, addr))
        f.br(done)
        f.block(done)
        return f.icmp("ne", f.load(res), 0)

    def _function(self, name: str, params: list[tuple[str, str]], ret: str, local: bool) -> Function:
        dbg = self.gen.di.subprogram(name, params, ret, local=local)
        self._last_subprogram = dbg
        text_params = ", ".join(f"{'ptr' if k == 'ptr' else k} %{p}" for p, k in params)
        fn = self.gen.module.function(name, SECTIONS[self.gen.trigger], params=text_params, ret=ret,
                                      linkage="internal " if local else "", dbg=dbg, noinline=True)
        fn.dbg_sp = dbg  # calls made from it name it (call sites between described functions need a location)
        return fn

    def _enter(self, fn: Function, state: str | None) -> str:
        """Common start of each function: the task (from the loop state) and the scratch area."""
        self.fn = f = fn
        self.types_base = "0"
        if state is not None:
            self.task = f.op(f"load ptr, ptr {state}")
        # One scratch value for the program (one run at a time), addressed directly: no lookup per callback.
        scratch = f.map_value(self.gen.maps.scratch)
        self.scratch = scratch
        self.posp = f.gep(scratch, G.POS_OFF)
        self.reasonp = f.gep(scratch, G.REASON_OFF)
        self.types_base = self.vload(SLOT_TYPES)
        return scratch

    def slot(self, off: int) -> str:
        return self.fn.gep(self.scratch, off)

    def defer(self, tid: int, p: str, size: int, depth: int, start: str, root: int | None = None) -> None:
        """As for events, except that a value of a type the copy plan covers (for a path, the path's root)
        is copied in the pause: its fix-up goes to the copier's ring, and goprobe encodes the value (or
        evaluates the path) from the copy after the pause."""
        cp = self.gen.copy_plan
        what = root if tid & G.PATH_FIXUP else tid
        if self.gen.copy is None or what not in cp.covered:
            return super().defer(tid, p, size, depth, start, root)
        f = self.fn
        self.fixup_record(tid, p, size, depth, start, self.gen.copy.fixups)
        if size == G.BY_ADDRESS:
            self.copy_push(f.load(p), what, 1, depth)
        else:
            self.copy_push("1", what, 1, depth, inline_src=p, inline_size=size)

    def vload(self, off: int) -> str:
        return self.fn.load(self.slot(off), volatile=True)

    def emit(self) -> None:
        if self.gen.copy is not None:
            self.emit_copier()
        self.emit_plans()
        self.emit_find_row()
        self.emit_frame()
        self.emit_goroutine()
        self.emit_main()

    # -- main: read the goroutine list, loop over it -----------------------------------------------------------
    def emit_main(self) -> None:
        f = self._function("snapshot", [("ctx", "ptr")], "i32", False)
        self.fn = f
        state = f.alloca("[2 x i64]")
        have, out = f.label("task"), f.label("done")
        if self.gen.trigger == "uprobe":
            # Only the run goprobe armed (the probed instruction is cold code, but never trust that), once.
            arm = f.map_value(self.gen.maps.arm)
            armed = f.load(arm, volatile=True)
            f.cbr(f.icmp("eq", armed, 0), out, have)
            f.block(have)
            if self.gen.workers > 1:  # this program's share is walked by one thread of those stepped
                mine = f.label("mine")
                tid = f.and_(f.helper("get_current_pid_tgid"), (1 << 32) - 1)
                f.cbr(f.icmp("eq", tid, f.load(f.gep(arm, 8 * (ARM_TIDS + self.gen.shard)), volatile=True)),
                      mine, out)
                f.block(mine)
            f.store(f.gep(arm, 8 * (1 + self.gen.shard)), armed)
            f.store(f.gep(arm, 8 * (ARM_SLOTS + self.gen.shard)), 0)
            f(f"store ptr null, ptr {state}")
            self.task = "null"
        else:
            meta_task = f.op(f"load ptr, ptr {f.gep('%ctx', 8)}")
            f.cbr(f.op(f"icmp eq ptr {meta_task}, null"), out, have)
            f.block(have)
            f(f"store ptr {meta_task}, ptr {state}")
            self.task = meta_task
        scratch = f.map_value(self.gen.maps.scratch)
        self.scratch = scratch
        if self.gen.copy is not None:
            self.copy_begin_run()
        gl = self.gen.plan.goroutines
        tmp = f.gep(scratch, TMP_OFF)
        bad1 = self.read_user(tmp, 8, str(gl.allglen))
        n = f.select(bad1, 0, f.load(tmp))
        bad2 = self.read_user(tmp, 8, str(gl.allgs))
        base = f.select(bad2, 0, f.load(tmp))
        f.store(f.gep(scratch, SLOT_ALLGS), base)
        for slot in (SLOT_GLO, SLOT_GHI, SLOT_SWLO, SLOT_SWHI):  # scratch outlives a run: last run's copies are stale
            f.store(f.gep(scratch, slot), 0)
        bad3 = self.read_user(tmp, 8, str(self.gen.plan.interfaces.types_field_addr))
        f.store(f.gep(scratch, SLOT_TYPES), f.select(bad3, 0, f.load(tmp)))
        # Every slot is looked at (dead goroutines stay in allgs); live ones past the limit are only counted.
        n = f.select(f.icmp("ugt", n, MAX_SLOTS), MAX_SLOTS, n)
        f.store(f.gep(scratch, SLOT_LIVE), 0)
        f.store(f.gep(f.map_value(self.gen.maps.arm), 8 * (ARM_SKIPPED + self.gen.shard)), 0)
        first = 0
        if self.gen.workers > 1:
            # Share w of W: [n*w/W, n*(w+1)/W), both ends rounded down to whole batches of g pointers.
            w, ws = self.gen.worker, self.gen.workers
            first = f.and_(f.op(f"udiv i64 {f.op(f'mul i64 {n}, {w}')}, {ws}"), -ALLGS_BATCH) if w else 0
            end = n if w == ws - 1 else f.and_(f.op(f"udiv i64 {f.op(f'mul i64 {n}, {w + 1}')}, {ws}"),
                                               -ALLGS_BATCH)
            n = f.select(f.icmp("ugt", end, first), f.sub(end, first), 0)
        f.store(f.gep(scratch, SLOT_FIRST), first)
        n32 = f.op(f"trunc i64 {n} to i32")
        f.helper("loop", f"i32 {n32}", "ptr @per_goroutine", f"ptr {state}", "i64 0")
        if self.gen.trigger == "uprobe":
            # The stepped thread stops again on this signal before it runs on: goprobe sees a
            # signal-delivery stop and drops the signal; if goprobe is gone, Go's handler takes the SIGURG as
            # a (spurious) preemption request, which the runtime tolerates.
            f.helper("send_signal_thread", f"i32 {SIGURG}")
        f.br(out)
        f.block(out)
        f.ret("0")

    # -- one goroutine -----------------------------------------------------------------------------------------
    def emit_goroutine(self) -> None:
        fn = self._function("per_goroutine", [("index", "i64"), ("state", "ptr")], "i64", True)
        scratch = self._enter(fn, "%state")
        self.stack_copy = False
        f = self.fn
        # The pause limit (the deadline the step writes once the threads are stopped), every 16 goroutines: past
        # it the walk ends here and goprobe says how far it got.
        arm = f.map_value(self.gen.maps.arm)
        clock, walk_on, late = f.label("clock"), f.label("walk_on"), f.label("late")
        f.cbr(f.icmp("eq", f.and_("%index", 15), 0), clock, walk_on)
        f.block(clock)
        deadline = f.load(f.gep(arm, 8 * ARM_COPY), volatile=True)
        past = f.op(f"and i1 {f.icmp('ne', deadline, 0)}, {f.icmp('ugt', f.helper('ktime_get_ns'), deadline)}")
        f.cbr(past, late, walk_on)
        f.block(late)
        f.store(f.gep(arm, 8 * (ARM_WALK_CUT + self.gen.worker)), 1)
        f.ret("1")
        f.block(walk_on)
        gl = self.gen.plan.goroutines
        base = self.vload(SLOT_ALLGS)
        index = f.add("%index", self.vload(SLOT_FIRST))  # in allgs (SLOT_FIRST: a whole number of batches)
        # The g pointers, ALLGS_BATCH at a time (the last batch may reach past allglen: those are not used).
        k = f.and_("%index", ALLGS_BATCH - 1)
        refill, have = f.label("refill"), f.label("batch")
        f.cbr(f.icmp("eq", k, 0), refill, have)
        f.block(refill)
        batch = f.gep(scratch, BATCH_OFF)
        bad = self.read_user(batch, 8 * ALLGS_BATCH, f.add(base, f.mul(index, 8)))
        f.store(self.slot(SLOT_BATCH), f.op(f"zext i1 {bad} to i64"))
        f.br(have)
        f.block(have)
        gpp = f.alloca("i64")
        skip, fast, single, go = f.label("skip"), f.label("from_batch"), f.label("single"), f.label("g")
        f.cbr(f.icmp("ne", self.vload(SLOT_BATCH), 0), single, fast)
        f.block(single)  # the batch ran past the end of a readable mapping: one pointer at a time
        tmp = f.gep(scratch, TMP_OFF)
        bad1 = self.read_user(tmp, 8, f.add(base, f.mul(index, 8)))
        f.store(gpp, f.select(bad1, 0, f.load(tmp)))
        f.br(go)
        f.block(fast)
        f.store(gpp, f.load(f.gep(f.gep(scratch, BATCH_OFF), f.mul(f.and_(f.barrier(k), ALLGS_BATCH - 1), 8))))
        f.br(go)
        f.block(go)
        gp = f.load(gpp)
        nonzero = f.label("nonzero")
        f.cbr(f.icmp("eq", gp, 0), skip, nonzero)
        f.block(skip)
        f.ret("0")
        f.block(nonzero)
        needed = max(gl.goid, gl.status, gl.sched_pc, gl.sched_sp, gl.sched_bp, gl.syscall_sp, gl.syscall_pc,
                     gl.stack_lo, gl.stack_hi, gl.m, gl.waitreason, gl.gopc, gl.parent_goid, gl.waitsince,
                     gl.lockedm, gl.labels) + 8
        needed = min(needed, gl.g_size, G_MAX)
        g = self.g_copy(gp, k, needed, skip)
        status = f.and_(f.load(f.gep(g, gl.status), 8 * gl.status_size), (1 << 32) - 1 - G_SCAN)
        dead = f.op(f"or i1 {f.icmp('eq', status, G_DEAD)}, {f.icmp('eq', status, 0)}")
        live, walk, over = f.label("live"), f.label("walk"), f.label("over_limit")
        f.cbr(dead, skip, live)
        f.block(live)
        # Each worker may walk up to the whole limit: goprobe keeps the first max_goroutines in allgs order
        # (a worker's share of allgs can hold most of the live goroutines).
        walked = self.vload(SLOT_LIVE)
        f.cbr(f.icmp("uge", walked, self.gen.plan.max_goroutines), over, walk)
        f.block(over)
        skipped = f.gep(f.map_value(self.gen.maps.arm), 8 * (ARM_SKIPPED + self.gen.shard))
        f.store(skipped, f.add(f.load(skipped, volatile=True), 1))
        f.ret("0")
        f.block(walk)
        f.store(self.slot(SLOT_LIVE), f.add(walked, 1))
        if self.gen.trigger == "uprobe":
            # Goroutines on a thread are where their thread's registers say, not g.sched: goprobe unwinds them
            # itself, and only needs to look when this count is not zero.
            on_thread = f.op(f"or i1 {f.icmp('eq', status, G_RUNNING)}, {f.icmp('eq', status, G_SYSCALL)}")
            count = f.gep(f.map_value(self.gen.maps.arm), 8 * (ARM_SLOTS + self.gen.shard))
            f.store(count, f.add(f.load(count), f.op(f"zext i1 {on_thread} to i64")))
        in_syscall = f.op(f"and i1 {f.icmp('eq', status, 3)}, "
                          f"{f.icmp('ne', f.load(f.gep(g, gl.syscall_sp)), 0)}")
        pc = f.select(in_syscall, f.load(f.gep(g, gl.syscall_pc)), f.load(f.gep(g, gl.sched_pc)))
        sp = f.select(in_syscall, f.load(f.gep(g, gl.syscall_sp)), f.load(f.gep(g, gl.sched_sp)))
        f.store(self.slot(SLOT_PC), pc)
        f.store(self.slot(SLOT_SP), sp)
        f.store(self.slot(SLOT_BP), f.load(f.gep(g, gl.sched_bp)))
        # The used stack [sp, stack.hi), up to STACK_COPY bytes, in one read; frames and their variables are
        # then read from the copy.
        hi = f.load(f.gep(g, gl.stack_hi))
        used = f.select(f.icmp("ult", sp, hi), f.sub(hi, sp), 0)
        n = f.and_(f.barrier(f.select(f.icmp("ugt", used, STACK_COPY), STACK_COPY, used)), 2 * STACK_COPY - 1)
        self.stack_copy_read(sp, hi, n, k, needed)
        f.store(self.slot(SLOT_DONE), 0)
        f.store(self.slot(SLOT_N), 0)
        head = f.gep(scratch, 0)
        f.store(head, gp)
        f.store(f.gep(scratch, G.GP_OFF), gp)
        f.store(f.gep(head, 8), f.load(f.gep(g, gl.goid)))
        f.store(f.gep(head, 16), status, 32)
        f.store(f.gep(head, 20), f.load(f.gep(g, gl.waitreason), 8), 32)
        for at, off in ((32, gl.gopc), (40, gl.parent_goid), (48, gl.waitsince), (56, gl.lockedm), (64, gl.labels)):
            f.store(f.gep(head, at), f.load(f.gep(g, off)) if off else 0)
        f.store(self.posp, GOROUTINE_HEADER.size)
        frames = self.gen.plan.max_frames
        f.helper("loop", f"i32 {frames}", "ptr @per_frame", "ptr %state", "i64 0")
        f.store(f.gep(head, 24), self.vload(SLOT_N), 32)
        f.store(f.gep(head, 28), f.op(f"zext i1 {f.icmp('eq', self.vload(SLOT_DONE), 0)} to i64"), 32)
        length = f.and_(f.barrier(f.load(self.posp, volatile=True)), HALF - 1)
        m = f.map_ptr(self.gen.maps.events)
        f.helper("ringbuf_output", f"ptr {m}", f"ptr {scratch}", f"i64 {length}", f"i64 {G.RB_NO_WAKEUP}")
        if self.gen.copy is not None:
            self.copy_drain()  # the values this goroutine left to goprobe, while their memory is at hand
        f.ret("0")

    def next_g(self, k: str) -> tuple[str, str]:
        """The next goroutine's g pointer from the batch, and whether it is one (i1)."""
        f = self.fn
        nxt = f.load(f.gep(f.gep(self.scratch, BATCH_OFF),
                           f.mul(f.and_(f.barrier(f.add(k, 1)), ALLGS_BATCH - 1), 8)))
        batched = f.op(f"and i1 {f.icmp('eq', self.vload(SLOT_BATCH), 0)}, {f.icmp('ult', k, ALLGS_BATCH - 1)}")
        return nxt, batched

    def stack_copy_read(self, sp: str, hi: str, n: str, k: str, needed: int) -> None:
        """Copy the used stack [*sp*, *sp* + *n*) into scratch ``STACK_OFF`` (bounds in ``SLOT_SBASE`` and
        ``SLOT_SEND``) unless the last copy holds it already. When the next goroutine's g (in the g window)
        says its stack ends within ``STACK_WINDOW`` above *sp*, one read copies both."""
        f = self.fn
        gl = self.gen.plan.goroutines
        lo_w, hi_w = self.vload(SLOT_SWLO), self.vload(SLOT_SWHI)
        inside = f.op(f"and i1 {f.icmp('uge', sp, lo_w)}, {f.icmp('ule', f.add(sp, n), hi_w)}")
        hit, miss, done = f.label("stack_hit"), f.label("stack_miss"), f.label("stack_copied")
        f.cbr(f.op(f"and i1 {inside}, {f.icmp('ne', n, 0)}"), hit, miss)
        f.block(hit)
        f.store(self.slot(SLOT_SBASE), lo_w)
        f.store(self.slot(SLOT_SEND), hi_w)
        f.br(done)
        f.block(miss)
        nxt, batched = self.next_g(k)
        glo = self.vload(SLOT_GLO)
        in_window = f.op(f"and i1 {f.icmp('uge', nxt, glo)}, "
                         f"{f.icmp('ule', f.add(nxt, needed), self.vload(SLOT_GHI))}")
        window = f.gep(self.scratch, G_OFF)
        nhi = f.load(f.gep(f.gep(window, f.and_(f.barrier(f.sub(nxt, glo)), G_WINDOW - 1)), gl.stack_hi))
        ahead = f.op(f"and i1 {f.icmp('ugt', nhi, hi)}, {f.icmp('ule', f.sub(nhi, sp), STACK_WINDOW)}")
        near = f.op(f"and i1 {f.op(f'and i1 {batched}, {in_window}')}, {ahead}")
        failed = self.window_read(f.gep(self.scratch, STACK_OFF), sp, n, near, STACK_WINDOW, STACK_COPY, SLOT_SWHI)
        ok = f.op(f"xor i1 {failed}, true")
        f.store(self.slot(SLOT_SWLO), f.select(ok, sp, 0))
        f.store(self.slot(SLOT_SWHI), f.select(ok, self.vload(SLOT_SWHI), 0))
        f.store(self.slot(SLOT_SBASE), sp)
        f.store(self.slot(SLOT_SEND), f.select(ok, self.vload(SLOT_SWHI), sp))
        f.br(done)
        f.block(done)

    def window_read(self, dst: str, addr: str, exact: str | int, near: str, window: int, bound: int,
                    end_slot: int) -> str:
        """Read *window* bytes at *addr* into *dst* if *near*, else *exact* bytes; a window that runs into
        memory that cannot be read falls back to *exact*. Stores the end of what was read in *end_slot*;
        returns whether the read failed (i1). *bound*: a power of two above both sizes (for the verifier)."""
        f = self.fn
        span = f.select(near, window, exact)
        failed = f.shared_alloca("window_failed", "i64")
        bad = self.read_user(dst, f.and_(f.barrier(span), 2 * bound - 1), addr)
        f.store(failed, f.op(f"zext i1 {bad} to i64"))
        f.store(self.slot(end_slot), f.add(addr, span))
        retry, stored = f.label("window_exact"), f.label("window_stored")
        f.cbr(f.op(f"and i1 {bad}, {near}"), retry, stored)
        f.block(retry)
        f.store(failed, f.op(f"zext i1 {self.read_user(dst, exact, addr)} to i64"))
        f.store(self.slot(end_slot), f.add(addr, exact))
        f.br(stored)
        f.block(stored)
        return f.icmp("ne", f.load(failed), 0)

    def g_copy(self, gp: str, k: str, needed: int, skip: str) -> str:
        """A pointer to the copy of the g at *gp* (*needed* bytes) in the g window (scratch ``G_OFF``);
        branches to *skip* if it cannot be read. *k* is its index in the batch of g pointers: when the next
        pointer lies a little above this one the whole window is read, else this g alone."""
        f = self.fn
        window = f.gep(self.scratch, G_OFF)
        inside = f.op(f"and i1 {f.icmp('uge', gp, self.vload(SLOT_GLO))}, "
                      f"{f.icmp('ule', f.add(gp, needed), self.vload(SLOT_GHI))}")
        miss, have = f.label("g_miss"), f.label("g_have")
        f.cbr(inside, have, miss)
        f.block(miss)
        nxt, batched = self.next_g(k)
        close = f.op(f"and i1 {f.icmp('ugt', nxt, gp)}, {f.icmp('ule', f.sub(nxt, gp), G_WINDOW - needed)}")
        near = f.op(f"and i1 {batched}, {close}")
        failed = self.window_read(window, gp, needed, near, G_WINDOW, G_WINDOW, SLOT_GHI)
        f.store(self.slot(SLOT_GLO), gp)
        unreadable, read = f.label("g_unreadable"), f.label("g_read")
        f.cbr(failed, unreadable, read)
        f.block(unreadable)
        f.store(self.slot(SLOT_GLO), 0)
        f.store(self.slot(SLOT_GHI), 0)
        f.br(skip)
        f.block(read)
        f.br(have)
        f.block(have)
        return f.gep(window, f.and_(f.barrier(f.sub(gp, self.vload(SLOT_GLO))), G_WINDOW - 1))

    # -- one frame ---------------------------------------------------------------------------------------------
    def emit_frame(self) -> None:
        fn = self._function("per_frame", [("index", "i64"), ("state", "ptr")], "i64", True)
        self.frame_subprogram = self._last_subprogram
        self._enter(fn, "%state")
        self.stack_copy = True
        f = self.fn
        stop, go, room, full = f.label("stop"), f.label("frame"), f.label("room"), f.label("record_full")
        pc = self.vload(SLOT_PC)
        ended = f.op(f"or i1 {f.icmp('ne', self.vload(SLOT_DONE), 0)}, {f.icmp('eq', pc, 0)}")
        f.cbr(ended, stop, room)
        f.block(stop)
        f.store(self.slot(SLOT_DONE), 1)
        f.ret("1")
        # A goroutine's record holds HALF bytes: a stack deeper than fits is cut here (SLOT_DONE stays 0: the
        # record says "truncated"), never written past its end.
        f.block(room)
        f.cbr(f.icmp("uge", f.load(self.posp, volatile=True), G.BUDGET), full, go)
        f.block(full)
        f.ret("1")
        f.block(go)
        sp, bp = self.vload(SLOT_SP), self.vload(SLOT_BP)
        lookup = f.select(f.icmp("eq", "%index", 0), pc, f.sub(pc, 1))
        f(f"call i64 @find_row(i64 {lookup}), !dbg {self.gen.di.location(self.frame_subprogram)}")
        row = f.gep(self.scratch, ROW_RESULT)
        reg = f.load(f.gep(row, 12), 8)
        off = f.op(f"sext i32 {f.op(f'load i32, ptr {f.gep(row, 8)}, align 8')} to i64")
        flags = f.load(f.gep(row, 13), 8)
        planset = f.load(f.gep(row, 14), 16)
        has_rule = f.icmp("ne", f.and_(flags, ROW_HAS_RULE), 0)
        cfa_rsp = f.add(sp, off)
        cfa_rbp = f.add(bp, off)
        cfa_fp = f.select(f.icmp("ne", bp, 0), f.add(bp, 16), 0)
        cfa = f.select(has_rule, f.select(f.icmp("eq", reg, RSP), cfa_rsp,
                                          f.select(f.icmp("eq", reg, RBP), cfa_rbp, 0)), cfa_fp)
        last = f.op(f"or i1 {f.op(f'xor i1 {has_rule}, true')}, {f.icmp('ne', f.and_(flags, ROW_STOP), 0)}")
        last = f.op(f"or i1 {last}, {f.icmp('eq', cfa, 0)}")
        # What the rest of the frame needs goes to scratch and is read back after the captures: no value the
        # verifier knows differently on different paths lives across their calls, so it checks each capture
        # subprogram once per frame callback, not once per path (the CFA's cases, the plan sets).
        f.store(self.slot(SLOT_PLAN_PC), lookup)
        f.store(self.slot(SLOT_PLAN_CFA), cfa)
        f.store(self.slot(SLOT_LAST), f.op(f"zext i1 {last} to i64"))
        f.store(self.slot(SLOT_KEEP_BP), f.op(f"zext i1 {f.icmp('eq', reg, RSP)} to i64"))
        self.put((64, pc), (64, sp), (32, planset))
        self.frame_captures(planset)
        f.store(self.slot(SLOT_N), f.add(self.vload(SLOT_N), 1))
        cont = f.label("next")
        f.cbr(f.icmp("ne", self.vload(SLOT_LAST), 0), stop, cont)
        f.block(cont)
        cfa = self.vload(SLOT_PLAN_CFA)
        tmp = f.gep(self.scratch, TMP_OFF)
        bad = self.read_user(tmp, 8, f.sub(cfa, 8))
        readable = f.label("ret_ok")
        f.cbr(bad, stop, readable)
        f.block(readable)
        ret = f.load(tmp)
        bad2 = self.read_user(tmp, 8, f.sub(cfa, 16))
        saved_bp = f.select(bad2, 0, f.load(tmp))
        keep = f.icmp("ne", self.vload(SLOT_KEEP_BP), 0)
        f.store(self.slot(SLOT_BP), f.select(keep, self.vload(SLOT_BP), saved_bp))
        f.store(self.slot(SLOT_PC), ret)
        f.store(self.slot(SLOT_SP), cfa)
        f.ret("0")

    def emit_find_row(self) -> None:
        """``find_row(pc)``: the row in force at *pc*, copied to scratch ``ROW_RESULT``. A global function: the
        verifier checks it once, on its own, whatever the states of its callers. Inlined in the frame callback,
        the binary search's paths multiplied with every path that reaches a frame (550K instructions to verify
        a program without captures, against 26K)."""
        fn = self._function("find_row", [("pc", "i64")], "i64", False)
        self._enter(fn, None)
        self.find_row("%pc")
        self.fn.ret("0")

    def find_row(self, pc: str) -> str:
        """The row in force at *pc*: from the PC cache (a hash map: goroutines share their code paths), else a
        binary search over the rows map, whose answer goes into the cache."""
        f = self.fn
        res = f.gep(self.scratch, ROW_RESULT)
        # Direct-mapped: slot = hash(pc); array lookups are inlined by the verifier (a hash lookup is a call).
        index = f.op(f"lshr i64 {f.op(f'mul i64 {pc}, {PC_HASH}')}, {64 - PC_CACHE_BITS}")
        entry = self.lookup(self.gen.maps.pc_cache, index)
        cached, search, found, check = f.label("cached"), f.label("search"), f.label("row_found"), f.label("slot")
        f.cbr(f.op(f"icmp eq ptr {entry}, null"), search, check)
        f.block(check)
        f.cbr(f.icmp("eq", f.load(entry), pc), cached, search)
        f.block(cached)
        f.store(res, f.load(f.gep(entry, 8)))
        f.store(f.gep(res, 8), f.load(f.gep(entry, 16)))
        f.br(found)
        f.block(search)
        self.search_row(pc, res)
        entry2 = self.lookup(self.gen.maps.pc_cache, index)
        fill = f.label("fill")
        f.cbr(f.op(f"icmp eq ptr {entry2}, null"), found, fill)
        f.block(fill)
        f.store(entry2, pc)
        f.store(f.gep(entry2, 8), f.load(res))
        f.store(f.gep(entry2, 16), f.load(f.gep(res, 8)))
        f.br(found)
        f.block(found)
        return res

    def search_row(self, pc: str, res: str) -> None:
        """Binary search over the rows map (bounds kept in scratch) for the row in force at *pc*, into *res*."""
        f = self.fn
        f.store(self.slot(SLOT_LO), 0)
        f.store(self.slot(SLOT_HI), self.n_rows)
        rows = self.gen.maps.rows

        def step(_i: str) -> None:
            lo, hi = self.vload(SLOT_LO), self.vload(SLOT_HI)
            mid = f.op(f"lshr i64 {f.add(lo, hi)}, 1")
            more, done = f.label("bs"), f.label("bs_done")
            f.cbr(f.icmp("ugt", f.sub(hi, lo), 1), more, done)
            f.block(more)
            row = self.lookup(rows, mid)
            have, skip = f.label("bs_row"), f.label("bs_norow")
            f.cbr(f.op(f"icmp eq ptr {row}, null"), skip, have)
            f.block(have)
            le = f.icmp("ule", f.load(row), pc)
            f.store(self.slot(SLOT_LO), f.select(le, mid, lo))
            f.store(self.slot(SLOT_HI), f.select(le, hi, mid))
            f.br(done)
            f.block(skip)
            f.store(self.slot(SLOT_HI), lo)  # cannot happen (in bounds): end the search
            f.br(done)
            f.block(done)

        self.loop(max(1, self.n_rows.bit_length() + 1), step)
        row = self.lookup(rows, self.vload(SLOT_LO))
        have, none = f.label("row"), f.label("no_row")
        f.cbr(f.op(f"icmp eq ptr {row}, null"), none, have)
        f.block(none)
        f.store(res, 0)
        f.store(f.gep(res, 8), 0)
        f.br(f"{none}_end")
        f.block(have)
        f.store(res, f.load(row))
        f.store(f.gep(res, 8), f.load(f.gep(row, 8)))
        f.br(f"{none}_end")
        f.block(f"{none}_end")

    def frame_dictionary(self, fp, pc: str, cfa: str) -> None:
        """Shaped generic code: where the frame keeps ``.dict`` (for values left to the interpreter)."""
        f = self.fn
        slot = f.gep(self.scratch, G.DICT_OFF)
        f.store(slot, 0)
        tmp = f.gep(self.scratch, TMP_OFF)
        for r in fp.dictionary:
            loc = r.location
            if not (len(loc) == 1 and loc[0].kind == "cfa" and not loc[0].indirect):
                continue
            hit, nxt = f.label("dict"), f.label("dict_next")
            f.cbr(f.op(f"and i1 {f.icmp('uge', pc, r.low)}, {f.icmp('ult', pc, r.high)}"), hit, nxt)
            f.block(hit)
            bad = self.read_user(tmp, 8, f.add(cfa, loc[0].offset))
            f.store(slot, f.select(bad, 0, f.load(tmp)))
            f.br(nxt)
            f.block(nxt)

    def emit_plans(self) -> None:
        """One subprogram per frame plan with captures, which calls one subprogram per capture: each stays
        within BPF's jump range. With the uprobe trigger a plan's subprogram is a global function: the verifier
        checks it once, on its own, instead of once per path of the frame callback that reaches it (the
        iterator trigger's reads need the task, which only the callbacks' state can carry)."""
        self.plan_functions: dict[int, tuple[str, str]] = {}
        alone = self.gen.trigger == "uprobe"
        # The frame's PC and CFA are in scratch (SLOT_PLAN_PC, SLOT_PLAN_CFA); the iterator's reads need the
        # task, which comes in the loop state.
        params = [] if alone else [("state", "ptr")]
        self.plan_args = "" if alone else "ptr %state"
        state = None if alone else "%state"
        for k, fp in enumerate(self.gen.plan.frames):
            if not fp.captures or (self.gen.only is not None and k not in self.gen.only):
                continue
            captures = []
            for j, (label, cands) in enumerate(capture_groups(fp.captures)):
                name = f"cap{k}_{j}"
                # Global too where the plan's is: the verifier then checks each capture on its own, and what
                # one capture's branches cost it does not add up with the next one's.
                fn = self._function(name, params, "i64", not alone)
                captures.append((name, self._last_subprogram))
                self._enter(fn, state)
                self.stack_copy = True
                self.root_mode = self.gen.root_modes.get(name)
                self.path_fixup = (k << 12) | j if j < 1 << 12 and k < 1 << 19 else None
                # PC and CFA come opaquely from scratch: what the verifier learns about the PC while choosing
                # this capture's location range dies here instead of splitting the caller's paths.
                self.capture_in_caller(label, cands, self.vload(SLOT_PLAN_PC), self.vload(SLOT_PLAN_CFA))
                self.root_mode = None
                self.path_fixup = None
                self.fn.ret("0")
            name = f"plan{k}"
            fn = self._function(name, params, "i64", not alone)
            sp = self._last_subprogram
            self._enter(fn, state)
            self.stack_copy = True
            self.frame_dictionary(fp, self.vload(SLOT_PLAN_PC), self.vload(SLOT_PLAN_CFA))
            for cap_name, _sp in captures:
                loc = self.gen.di.location(sp)
                self.fn(f"call i64 @{cap_name}({self.plan_args}), !dbg {loc}")
            self.fn.ret("0")
            self.plan_functions[k] = (name, sp)

    def frame_captures(self, planset: str) -> None:
        f = self.fn
        done = f.label("caps_done")
        for sid, members in enumerate(self.plan_sets):
            calls = [k for k in members if k in self.plan_functions]
            if not calls:
                continue
            hit, nxt = f.label("set"), f.label("set_next")
            f.cbr(f.icmp("eq", planset, sid), hit, nxt)
            f.block(hit)
            for k in calls:
                name, _sp = self.plan_functions[k]
                loc = self.gen.di.location(self.frame_subprogram)
                f(f"call i64 @{name}({self.plan_args}), !dbg {loc}")
            f.br(done)
            f.block(nxt)
        f.br(done)
        f.block(done)

