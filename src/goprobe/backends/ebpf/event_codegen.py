"""Lowers an event plan (``goprobe.ir.events.EventPlan``) to BPF programs, as LLVM IR text.

One program per probe site (a uprobe at that PC). Everything the plan knows is a constant in the code: PCs,
CFA rules, register numbers, offsets, sizes, type ids. A program reads the registers from ``pt_regs``, checks
the condition, applies the limits, writes one event record into a per-CPU scratch area and sends it through a
ring buffer. The record layout is documented in ``docs/event-record.md``; values inside it use the raw value
stream of ``docs/value-stream.md`` so the same decoder serves snapshots and events.

The verifier must be able to prove every access: positions in the output are masked (``pos & (HALF-1)``,
hidden from LLVM's range analysis by a barrier), variable lengths are clamped to constants, loops have
constant bounds and are not unrolled.
"""

from __future__ import annotations

import copy
import re
import struct

import attrs

from goprobe.backends.ebpf.ir_text import Function, Module
from goprobe.backends.ebpf.llvm_target import CodegenError, compile_to_object
from goprobe.dwarf import expressions as E
from goprobe.ir import access as A
from goprobe.ir import events as EV
from goprobe.ir import values as V
from goprobe.ir.location_checks import known_length
from goprobe.ir.snapshot import VariableCapture

# -- scratch layout (one area per CPU) ----------------------------------------------------------------------
HALF = 1 << 15  # output positions stay below this; accesses are masked with HALF-1
OUT_SIZE = 2 * HALF
STAGE_SIZE = 1024  # one staging buffer per nesting level: a value read from the target in one go
STAGE_LEVELS = 8
STAGE_OFF = OUT_SIZE
TMP_OFF = STAGE_OFF + STAGE_SIZE * STAGE_LEVELS  # 64 bytes for small reads
HAND_OFF = TMP_OFF + 64  # 16 bytes: a value computed in the program (len, cap)
SEEN_COUNT_OFF = HAND_OFF + 16  # the current value's number, for pointer de-duplication
# The output position and a failure reason live in the scratch map, read with volatile loads: the verifier
# then knows them only as bounded unknowns, so the paths through a value's branches converge and get pruned
# (kept in registers they would be exact constants on every path, and the paths would multiply).
POS_OFF = SEEN_COUNT_OFF + 8
REASON_OFF = POS_OFF + 8
MAPN_OFF = REASON_OFF + 8  # per nesting level: entries written so far in the map being walked
# Deferred values (snapshots only): the record's owner (g address), the current capture's length field,
# the frame's generic dictionary, and the fix-up record being built.
GP_OFF = MAPN_OFF + 8 * (STAGE_LEVELS + 1)
CAPLEN_OFF = GP_OFF + 8
DICT_OFF = CAPLEN_OFF + 8
FIX_OFF = DICT_OFF + 8
FIX_DATA = 48  # in-hand bytes a fix-up carries
BY_ADDRESS = 0xFFFFFFFF  # a fix-up's size when it carries the value's address instead of its bytes
# A fix-up whose type id has this bit carries a capture's root, not its value: goprobe evaluates the capture's
# whole access path from it (a map lookup on a map too large to search in the kernel). The rest of the id:
# frame plan << 12 | capture group.
PATH_FIXUP = 1 << 31
FIXUP = struct.Struct("<QIIIIQQ48s")  # g, capture length pos, marker pos, type id, size, dictionary, depth, data
# Captures reached through the same pointer (req.ID, req.Path): the pointer is followed once and the bytes of
# all of them read in one bpf_probe_read_user (each read costs some 65-85 ns a hit, most of a probe's cost).
# Per group a slot (u64 base address, u32 state, u32 failure reason), then the groups' bytes.
MERGE_GROUPS = 8
MERGE_SPAN = 256  # bytes one merged read may cover (a larger read costs little more, but reads unused bytes)
MERGE_OFF = FIX_OFF + FIXUP.size
MERGE_DATA_OFF = MERGE_OFF + 16 * MERGE_GROUPS
MERGE_DATA = 1024
MERGE_PREFIX_FAILED, MERGE_READ_FAILED, MERGE_READ = 0, 1, 2
# Map lookups (m["k"]): the walk's state (u64 slots) and the bytes of the slot's key being compared.
LOOKUP_OFF = MERGE_DATA_OFF + MERGE_DATA
LOOKUP_KEY_OFF = LOOKUP_OFF + 64
MAX_LOOKUP_KEY = 256  # string keys of m["k"] compared in the kernel, bytes
PARTIAL_OFF = LOOKUP_OFF + 48  # u64 flag, u64 length: an unavailable string/slice whose length is known
SCRATCH_SIZE = LOOKUP_KEY_OFF + MAX_LOOKUP_KEY + 2 * STAGE_SIZE  # slack: masked lengths may pass the last stage
BUDGET = HALF - 8192  # a value starting beyond this is cut (status 2); one value never writes 8 KiB at once
MAX_STRING = 4096  # string payload bytes per value in the kernel
MAX_TYPE_ARGUMENTS = 16  # types a type-parameter value is compared with in the kernel
MAX_STACK = 64  # frames walked for the stack and for caller frames
MAX_NODES = 12000  # bound on the value-serialisation code of one program
# Events: the verifier walks every iteration of a bounded loop with its own state, so what a value costs it is
# its code times the iterations of the loops around it. Each event program gets this many value nodes so
# weighted (one node is some 50-150 processed instructions), shared out among its captures; past its share a
# capture takes fewer elements, stops following pointers and decodes fewer interface types in the kernel.
PROGRAM_UNITS = 2000
PROGRAM_CODE = 1200  # value nodes of code (loops not counted) per event program: LLVM's jumps reach 32K insns
EST_CAP = 1 << 40  # estimates saturate here (recursive types count as costly)
FAST_SCALARS = 4096  # scalar elements are written by a tight loop when they take at most these many bytes

# -- event record -------------------------------------------------------------------------------------------
HEADER_SIZE = 48  # u32 site, u32 flags, u64 goid, u64 pid_tgid, u64 ts_ns, u64 duration_ns, u32 n_stack, u32 0
FLAG_DURATION = 1
CAPTURE_VALUE, CAPTURE_UNAVAILABLE, CAPTURE_PARTIAL = 0, 1, 2  # 2: unavailable, u8 reason, u64 known length

RB_NO_WAKEUP, RB_FORCE_WAKEUP = 1, 2
WAKEUP_BYTES = 256 * 1024  # unread bytes in the ring before a record wakes the reader

# counters: one array entry per site, these u64 fields
COUNTERS = ("hits", "filtered", "delivered", "dropped_full", "dropped_max", "dropped_rate")
COUNTER_SIZE = 8 * len(COUNTERS)
COUNTER_VALUE_SIZE = COUNTER_SIZE + 16  # then the rate limit's window start and count
# global array entry 0: u64 emitted (events admitted so far, for max_events)

# pt_regs (x86_64) offsets by DWARF register number; 16 is the return address column (rip)
PT_REGS = {0: 80, 1: 96, 2: 88, 3: 40, 4: 104, 5: 112, 6: 32, 7: 152, 8: 72, 9: 64, 10: 56, 11: 48, 12: 24,
           13: 16, 14: 8, 15: 0, 16: 128}
RSP, RBP, R14, RIP = 7, 6, 14, 16

# value-stream constants (docs/value-stream.md)
OK, UNREADABLE, BUDGET_STATUS, DEFERRED = 0, 1, 2, 3
PTR_NIL, PTR_FOLLOWED, PTR_SEEN, PTR_DEPTH, PTR_OPAQUE = 0, 1, 2, 3, 4
UNKNOWN_TYPE = 0xFFFFFFFF
NO_PAYLOAD = 0xFFFFFFFF
MAX_CHAIN = 64  # wait-queue walks in the kernel
MAX_SMALL_CHAIN = 4  # overflow buckets walked for a one-bucket classic map
# m["k"] walks the map in the kernel: at most this many swiss groups or classic buckets (8 slots each), which
# covers maps of a few hundred entries; a key not met within them is reported as not searched for, not absent.
MAX_LOOKUP_GROUPS = 4
MAX_LOOKUP_TABLES = 4  # swiss directory entries looked at


@attrs.frozen
class MapFds:
    """The maps a program refers to (created before code generation: their fds are constants in the code)."""

    scratch: int
    events: int
    counters: int
    globals: int
    entries: int  # hash (goid, depth) → entry timestamp, for return durations
    seen: int  # LRU hash (value number, address): pointers already followed in the current value
    fixups: int = -1  # snapshots: ring buffer of values left for the interpreter (see ``defer``)


@attrs.frozen
class Limits:
    string_bytes: int
    collection_bytes: int
    min_elements: int
    map_entries: int
    pointer_depth: int
    max_events: int | None
    rate_limit_per_s: int | None
    stack: bool


Slot = tuple[str, "int | None"]  # (label, type id) of one capture in a record, in record order


@attrs.frozen
class SiteLayout:
    """What a site's records hold after the header and stack, in order."""

    captures: tuple[Slot, ...]
    returns: tuple[Slot, ...]


@attrs.frozen
class GeneratedEvents:
    """LLVM IR text and what the loader and decoder need to know about it."""

    ir: str
    sections: tuple[tuple[str, str, int], ...]  # (section, function name, site index; -1: entry stamp)
    reasons: tuple[str, ...]  # why a capture is unavailable, by code
    sites: tuple[SiteLayout, ...]
    callers: tuple[tuple[str, tuple[Slot, ...]], ...]  # per caller plan: function, its captures
    # What the verification budget cut, one note each ("FUNCTION: EXPR: what"): those values show less than
    # the limits allow, with the same markers the limits put.
    budget_cuts: tuple[str, ...] = ()


def generate(plan: EV.EventPlan, maps: MapFds, limits: Limits, code: int = 0) -> GeneratedEvents:
    """The BPF programs of *plan*, as one LLVM module; *code*: value nodes of code per program (0: the
    default, PROGRAM_CODE)."""
    gen = _Generator(plan, maps, limits)
    gen.code_budget = code or PROGRAM_CODE
    return gen.run()


def generate_and_compile(plan: EV.EventPlan, maps: MapFds, limits: Limits, name: str) -> tuple[GeneratedEvents, bytes]:
    """:func:`generate`, then the ELF object. The code budget is an estimate: should LLVM still find a branch
    beyond BPF's 16-bit jump range, the programs are made again with half the budget (their captures then
    show less, and say so in ``budget_cuts``) rather than the probe refused."""
    code = PROGRAM_CODE
    while True:
        generated = generate(plan, maps, limits, code)
        try:
            return generated, compile_to_object(generated.ir, name=name)
        except CodegenError as exc:
            if "out of insn range" not in str(exc) or code < PROGRAM_CODE // 8:
                raise
            code //= 2


class _Unsupported(Exception):
    pass


class _TooMuchCode(CodegenError):
    """The program's value code passed MAX_NODES: the capture being written is left out (see _capture)."""


class _Generator:
    def __init__(self, plan: EV.EventPlan, maps: MapFds, limits: Limits) -> None:
        self.plan = plan
        self.maps = maps
        self.limits = limits
        self.table = plan.types
        self.module = Module()
        self.reasons: list[str] = []
        self.sections: list[tuple[str, str, int]] = []
        self.layouts: list[SiteLayout] = []
        self._nodes = 0
        self.code_budget = PROGRAM_CODE
        self.defer = False  # events cannot leave values for later: the process is not paused
        # what the verification budget cut: (function, expression) → kind of cut → details (ordered sets)
        self.budget_cuts: dict[tuple[str, str], dict[str, dict[str, None]]] = {}

    def reason(self, text: str) -> int:
        if text not in self.reasons:
            self.reasons.append(text)
        return self.reasons.index(text)

    def run(self) -> GeneratedEvents:
        for i, site in enumerate(self.plan.sites):
            name = f"site{i}"
            self.sections.append((f"uprobe/{name}", name, i))
            _SiteProgram(self, i, site, name).emit()
        if self.plan.kind == "return" and self.plan.entry_pcs:
            self.sections.append(("uprobe/stamp", "stamp", -1))
            _StampProgram(self, "stamp").emit()
        callers = tuple((fp.function, tuple((label, next((c.type for c in cands if c.type is not None), None))
                                            for label, cands in capture_groups(fp.captures)))
                        for fp in self.plan.callers)
        return GeneratedEvents(self.module.text(), tuple(self.sections), tuple(self.reasons), tuple(self.layouts),
                               callers, self.budget_notes())

    def budget_notes(self) -> tuple[str, ...]:
        """One line per capture the budget cut: "FUNCTION: EXPR: what was left out"."""
        out = []
        for (where, label), kinds in self.budget_cuts.items():
            parts = []
            for kind, details in kinds.items():
                names = [d for d in details if d]
                more = f" ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})" if names else ""
                parts.append(kind + more)
            out.append(f"{where}: {label}: {'; '.join(parts)}")
        return tuple(out)


class _Program:
    """Code shared by the programs: prologue, registers, output writes."""

    def __init__(self, gen: _Generator, name: str) -> None:
        self.gen = gen
        self.fn: Function = gen.module.function(name, f"uprobe/{name}")

    def reg(self, dwarf: int) -> str:
        # Read from pt_regs at each use: keeping every register live across the program would spill them
        # all to the 512-byte BPF stack.
        return self.fn.load(self.fn.gep("%ctx", PT_REGS[dwarf]))

    def lookup(self, map_fd: int, key: int | str, bits: int = 32) -> str:
        f = self.fn
        slot = f.shared_alloca("key")
        f.store(slot, key, bits)
        m = f.map_ptr(map_fd)
        return f.op(f"call ptr inttoptr (i64 1 to ptr)(ptr {m}, ptr {slot})")

    def read_user(self, dst: str, size: int | str, addr: str) -> str:
        """bpf_probe_read_user; returns an i1 that is true when the read failed."""
        f = self.fn
        r = f.helper("probe_read_user", f"ptr {dst}", f"i64 {size}", f"i64 {addr}")
        return f.icmp("ne", r, 0)

    def goid_and_stack_hi(self, want_hi: bool = True) -> tuple[str, str]:
        f, gl = self.fn, self.gen.plan.goroutines
        g = self.reg(R14)
        tmp = f.gep(self.scratch, TMP_OFF)
        lo = min(gl.goid, gl.stack_hi)
        span = max(gl.goid, gl.stack_hi) + 8 - lo
        if want_hi and span <= MERGE_SPAN:
            # Both fields in one read (stage 0 is free before the captures); the separate reads only if it fails.
            stage = f.gep(self.scratch, STAGE_OFF)
            res = f.gep(tmp, 16)  # goid, stack.hi
            bad = self.read_user(stage, span, f.add(g, lo))
            one, two, done = f.label("g_read"), f.label("g_fields"), f.label("g_done")
            f.cbr(bad, two, one)
            f.block(one)
            f.store(res, f.load(f.gep(stage, gl.goid - lo)))
            f.store(f.gep(res, 8), f.load(f.gep(stage, gl.stack_hi - lo)))
            f.br(done)
            f.block(two)
            for k, off in enumerate((gl.goid, gl.stack_hi)):
                bad = self.read_user(tmp, 8, f.add(g, off))
                f.store(f.gep(res, 8 * k), f.select(bad, 0, f.load(tmp)))
            f.br(done)
            f.block(done)
            return f.load(res, volatile=True), f.load(f.gep(res, 8), volatile=True)
        bad = self.read_user(tmp, 8, f.add(g, gl.goid))
        goid = f.select(bad, 0, f.load(tmp))
        if not want_hi:
            return goid, "0"
        bad2 = self.read_user(tmp, 8, f.add(g, gl.stack_hi))
        hi = f.select(bad2, 0, f.load(tmp))
        return goid, hi

    def counter(self, counters: str, name: str) -> None:
        f = self.fn
        p = f.gep(counters, 8 * COUNTERS.index(name))
        f(f"atomicrmw add ptr {p}, i64 1 seq_cst")


class _StampProgram(_Program):
    """At the probed function's entry: remember when this goroutine, at this stack depth, entered it."""

    def emit(self) -> None:
        f, maps = self.fn, self.gen.maps
        zero_key = f.helper("get_smp_processor_id")
        scratch = self.lookup(maps.scratch, zero_key)
        ok, out = f.label("ok"), f.label("out")
        f.cbr(f.op(f"icmp eq ptr {scratch}, null"), out, ok)
        f.block(ok)
        self.scratch = scratch
        goid, hi = self.goid_and_stack_hi()
        key = f.alloca("[2 x i64]")
        f.store(key, goid)
        # At the entry (after the stack check) the CFA is RSP + 8: depth = stack.hi − CFA survives stack copies.
        f.store(f.gep(key, 8), f.sub(hi, f.add(self.reg(RSP), 8)))
        ts = f.alloca("i64")
        f.store(ts, f.helper("ktime_get_ns"))
        m = f.map_ptr(maps.entries)
        f.op(f"call i64 inttoptr (i64 2 to ptr)(ptr {m}, ptr {key}, ptr {ts}, i64 0)")
        f.br(out)
        f.block(out)
        f.ret()


class _SiteProgram(_Program):
    # Verification budget of the capture being written (value nodes, see PROGRAM_UNITS): None = unbounded
    # (snapshots, which leave costly values to the interpreter instead); mult = iterations of enclosing loops.
    vleft: int | None = None
    cleft = 0  # code nodes left to the capture
    mult = 1

    def __init__(self, gen: _Generator, index: int, site: EV.ProbeSite, name: str) -> None:
        super().__init__(gen, name)
        self.index = index
        self.site = site
        self.limits = gen.limits
        self.table = gen.table

    # -- the program ----------------------------------------------------------------------------------------
    def emit(self) -> None:
        f, maps, site = self.fn, self.gen.maps, self.site
        cpu = f.helper("get_smp_processor_id")
        scratch = self.lookup(maps.scratch, cpu)
        counters = self.lookup(maps.counters, self.index)
        glob = self.lookup(maps.globals, 0)
        ok, out = f.label("ok"), f.label("out")
        bad = f.op(f"or i1 {f.op(f'icmp eq ptr {scratch}, null')}, {f.op(f'icmp eq ptr {counters}, null')}")
        bad = f.op(f"or i1 {bad}, {f.op(f'icmp eq ptr {glob}, null')}")
        f.cbr(bad, out, ok)
        f.block(ok)
        self.scratch, self.counters = scratch, counters
        self.posp = f.gep(scratch, POS_OFF)
        self.reasonp = f.gep(scratch, REASON_OFF)
        self.counter(counters, "hits")
        self.cfa = f.add(self.reg(site.cfa[0]), site.cfa[1]) if site.cfa[0] in PT_REGS else None
        self.types_base = "0"
        if site.condition is not None:
            yes, no = f.label("cond_true"), f.label("cond_false")
            self.condition(site.condition, yes, no)
            f.block(no)
            self.counter(counters, "filtered")
            f.br(out)
            f.block(yes)
        if self.limits.max_events is not None:
            old = f.op(f"atomicrmw add ptr {glob}, i64 1 seq_cst")
            over, fine = f.label("over_max"), f.label("under_max")
            f.cbr(f.icmp("uge", old, self.limits.max_events), over, fine)
            f.block(over)
            self.counter(counters, "dropped_max")
            f.br(out)
            f.block(fine)
        now = f.helper("ktime_get_ns")
        if self.limits.rate_limit_per_s is not None:
            self.rate_limit(counters, now, out)
        if self._needs_types_base():
            self.types_base = self._types_base()
        self.site_dictionary()
        goid, hi = self.goid_and_stack_hi(self.gen.plan.kind == "return" and bool(self.gen.plan.entry_pcs))
        duration = "0"
        flags = 0
        if self.gen.plan.kind == "return" and self.gen.plan.entry_pcs:
            duration = self.duration(goid, hi, now)
            flags |= FLAG_DURATION
        f.store(self.posp, HEADER_SIZE)
        head = f.gep(scratch, 0)
        f.store(head, self.index, 32)
        f.store(f.gep(head, 4), flags, 32)
        f.store(f.gep(head, 8), goid)
        f.store(f.gep(head, 16), f.helper("get_current_pid_tgid"))
        f.store(f.gep(head, 24), now)
        f.store(f.gep(head, 32), duration)
        f.store(f.gep(head, 40), 0)

        callers = self.gen.plan.callers
        here = self._per_label(site.captures)
        self.units_left, self.code_left = PROGRAM_UNITS, self.gen.code_budget
        self.caps_left = len(here) + len(site.returns) + sum(len(capture_groups(fp.captures)) for fp in callers)
        # What the captures still to come would cost in full: a cheap one leaves its part of the share to others.
        self.rest_cost = sum(self._cap_cost(c) for c in [*here, *site.returns,
                                                        *(cs[0] for fp in callers for _l, cs in capture_groups(fp.captures))])
        if self.gen.plan.stack or callers:
            found = self.walk_stack(callers)
        self.merges = self.merged_reads(here + list(site.returns))
        for cap in here:
            self.capture_here(cap)
        for cap in site.returns:
            self.capture_here(cap)
        self.gen.layouts.append(SiteLayout(tuple((c.label, c.type) for c in here),
                                           tuple((c.label, c.type) for c in site.returns)))
        if callers:
            self.callers(callers, found)

        length = f.and_(f.barrier(f.load(self.posp, volatile=True)), HALF - 1)
        m = f.map_ptr(maps.events)
        # Wake the reader only once a batch has piled up: a wake-up per event would cost the target more than
        # the probe itself (the reader also polls on a short timeout).
        avail = f.helper("ringbuf_query", f"ptr {m}", "i64 0")
        after = f.add(avail, f.add(length, 8))
        crossed = f.icmp("ne", f.and_(avail, -WAKEUP_BYTES), f.and_(after, -WAKEUP_BYTES))
        wake = f.select(crossed, RB_FORCE_WAKEUP, RB_NO_WAKEUP)  # once per WAKEUP_BYTES written
        r = f.helper("ringbuf_output", f"ptr {m}", f"ptr {scratch}", f"i64 {length}", f"i64 {wake}")
        full, sent = f.label("full"), f.label("sent")
        f.cbr(f.icmp("ne", r, 0), full, sent)
        f.block(full)
        self.counter(counters, "dropped_full")
        f.br(out)
        f.block(sent)
        self.counter(counters, "delivered")
        f.br(out)
        f.block(out)
        f.ret()

    def _per_label(self, captures) -> list[VariableCapture]:
        """One capture per label: the candidate whose location covers the (constant) probe PC."""
        out: dict[str, VariableCapture] = {}
        for c in captures:
            if c.label in out:
                prev = out[c.label]
                if _covers(prev, self.site.pc) or not _covers(c, self.site.pc):
                    continue
            out[c.label] = c
        return list(out.values())

    def _needs_types_base(self) -> bool:
        """Whether a captured value can hold an interface (or a path asserts a type): only then is
        ``moduledata.types`` worth a read on every hit."""
        if any(isinstance(s, A.TypeAssertStep) for c in self._all_captures() if c.path for s in c.path.steps):
            return True
        seen: set[int] = set()
        todo = [c.type for c in self._all_captures() if c.type is not None]
        while todo:
            tid = todo.pop()
            if tid in seen:
                continue
            seen.add(tid)
            sh = self.table[tid].shape
            if isinstance(sh, V.Interface) or (isinstance(sh, V.TypeParam) and not self.gen.defer):
                return True
            for name in ("elem", "key", "shape"):
                nxt = getattr(sh, name, None)
                if isinstance(nxt, int):
                    todo.append(nxt)
            if isinstance(sh, V.Struct):
                todo.extend(fl.type for fl in sh.fields)
        return False

    def site_dictionary(self) -> None:
        """Shaped generic code: the frame's dictionary (``.dict``) at the probe PC into scratch, so type-parameter
        values are written with their real types; 0 where it is not known."""
        f = self.fn
        slot = f.gep(self.scratch, DICT_OFF)
        f.store(slot, 0)
        shaped = bool(self.site.dictionary) or "go.shape." in self.site.function
        if self.gen.defer or not shaped:
            return
        if self.gen.plan.kind == "entry" and not self.site.inlined and 0 in PT_REGS:
            # At entry the register ABI has the dictionary in the first integer register (RAX); the DWARF may
            # already name its stack slot, which the body has not written yet.
            f.store(slot, self.reg(0))
            return
        loc = next((r.location for r in self.site.dictionary if r.low <= self.site.pc < r.high), None)
        if loc is None or len(loc) != 1:
            return
        p = loc[0]
        if p.kind == E.REGISTER and p.reg in PT_REGS:
            f.store(slot, self.reg(p.reg))
        elif p.kind in (E.CFA_MEMORY, E.ADDRESS_MEMORY, E.REGISTER_MEMORY) and not p.indirect:
            try:
                addr = self.piece_address(p, "")
            except _Unsupported:
                return
            tmp = f.gep(self.scratch, TMP_OFF)
            bad = self.read_user(tmp, 8, addr)
            f.store(slot, f.select(bad, 0, f.load(tmp)))

    def _all_captures(self):
        yield from self.site.captures
        yield from self.site.returns
        for fp in self.gen.plan.callers:
            yield from fp.captures

    def _types_base(self) -> str:
        f = self.fn
        tmp = f.gep(self.scratch, TMP_OFF)
        bad = self.read_user(tmp, 8, str(self.gen.plan.interfaces.types_field_addr))
        return f.select(bad, 0, f.load(tmp))

    def rate_limit(self, counters: str, now: str, out: str) -> None:
        """At most rate_limit_per_s events per one-second window and site (window kept in the counters)."""
        f = self.fn
        # two extra u64 after the counters: window start, events in the window
        win = f.gep(counters, COUNTER_SIZE)
        cnt = f.gep(counters, COUNTER_SIZE + 8)
        start = f.load(win)
        new_win, same = f.label("new_window"), f.label("same_window")
        f.cbr(f.icmp("uge", f.sub(now, start), 1_000_000_000), new_win, same)
        f.block(new_win)
        f.store(win, now)
        f.store(cnt, 0)
        f.br(same)
        f.block(same)
        n = f.op(f"atomicrmw add ptr {cnt}, i64 1 seq_cst")
        over, fine = f.label("over_rate"), f.label("under_rate")
        f.cbr(f.icmp("uge", n, self.limits.rate_limit_per_s), over, fine)
        f.block(over)
        self.counter(counters, "dropped_rate")
        f.br(out)
        f.block(fine)

    def duration(self, goid: str, hi: str, now: str) -> str:
        f, maps = self.fn, self.gen.maps
        key = f.alloca("[2 x i64]")
        f.store(key, goid)
        cfa = self.cfa if self.cfa is not None else f.add(self.reg(RSP), 8)
        f.store(f.gep(key, 8), f.sub(hi, cfa))
        m = f.map_ptr(maps.entries)
        p = f.op(f"call ptr inttoptr (i64 1 to ptr)(ptr {m}, ptr {key})")
        res = f.alloca("i64")
        f.store(res, 0)
        have, done = f.label("have_entry"), f.label("no_entry")
        f.cbr(f.op(f"icmp eq ptr {p}, null"), done, have)
        f.block(have)
        f.store(res, f.sub(now, f.load(p)))
        f.helper("map_delete_elem", f"ptr {m}", f"ptr {key}")
        f.br(done)
        f.block(done)
        return f.load(res)

    # -- stack walk and caller frames -------------------------------------------------------------------------
    def walk_stack(self, callers) -> list[tuple[str, str, str]]:
        """Walk frame pointers: write the PCs (if asked) and note, for each caller plan, the first frame of
        it (found flag, its return address, its CFA)."""
        f, site = self.fn, self.site
        found = []
        for _ in callers:
            flag, pcp, cfap = f.alloca("i64"), f.alloca("i64"), f.alloca("i64")
            f.store(flag, 0)
            f.store(pcp, 0)
            f.store(cfap, 0)
            found.append((flag, pcp, cfap))
        nstack = f.alloca("i64")
        f.store(nstack, 0)
        if self.gen.plan.stack:
            self.put64(self.reg(RIP))
            f.store(nstack, 1)
        tmp = f.gep(self.scratch, TMP_OFF)
        # The first caller: where this frame returns to, and the caller's frame pointer.
        if site.frame_pointer_saved:
            bp = self.reg(RBP)
            bad = self.read_user(tmp, 16, bp)
            ret0 = f.select(bad, 0, f.load(f.gep(tmp, 8)))
            bp0 = f.select(bad, 0, f.load(tmp))
        else:
            cfa = self.cfa if self.cfa is not None else f.add(self.reg(RSP), 8)
            bad = self.read_user(tmp, 8, f.sub(cfa, 8))
            ret0 = f.select(bad, 0, f.load(tmp))
            bp0 = self.reg(RBP)
        pre = f.current_label()
        head, body, after = f.label("walk"), f.label("walk_body"), f.label("walk_done")
        f.br(head)
        f.block(head)
        i, ret, bp = f.tmp(), f.tmp(), f.tmp()
        f(f"{i} = phi i64 [0, %{pre}], [%NEXT_I_{head}, %LATCH_{head}]")
        f(f"{ret} = phi i64 [{ret0}, %{pre}], [%NEXT_RET_{head}, %LATCH_{head}]")
        f(f"{bp} = phi i64 [{bp0}, %{pre}], [%NEXT_BP_{head}, %LATCH_{head}]")
        go = f.op(f"and i1 {f.icmp('ult', i, MAX_STACK)}, {f.icmp('ne', ret, 0)}")
        f.cbr(go, body, after)
        f.block(body)
        if self.gen.plan.stack:
            self.put64(ret)
            f.store(nstack, f.add(f.load(nstack), 1))
        for (flag, pcp, cfap), fp in zip(found, callers):
            match = self.in_ranges(f.sub(ret, 1), fp.ranges)
            first = f.op(f"and i1 {match}, {f.icmp('eq', f.load(flag), 0)}")
            yes, no = f.label("caller_found"), f.label("caller_next")
            f.cbr(first, yes, no)
            f.block(yes)
            f.store(flag, 1)
            f.store(pcp, ret)
            f.store(cfap, f.add(bp, 16))
            f.br(no)
            f.block(no)
        bad = f.op(f"or i1 {f.icmp('eq', bp, 0)}, {self.read_user(tmp, 16, bp)}")
        next_ret = f.select(bad, 0, f.load(f.gep(tmp, 8)))
        next_bp = f.select(bad, 0, f.load(tmp))
        next_i = f.add(i, 1)
        latch = f.current_label()
        f.loop_back(head)
        f.replace(f"%NEXT_I_{head}", next_i)
        f.replace(f"%NEXT_RET_{head}", next_ret)
        f.replace(f"%NEXT_BP_{head}", next_bp)
        f.replace(f"%LATCH_{head}", f"%{latch}")
        f.block(after)
        f.store(f.gep(self.scratch, 40), f.load(nstack), 32)
        return found

    def in_ranges(self, pc: str, ranges) -> str:
        f = self.fn
        acc = "false"
        for lo, hi in ranges:
            c = f.op(f"and i1 {f.icmp('uge', pc, lo)}, {f.icmp('ult', pc, hi)}")
            acc = f.op(f"or i1 {acc}, {c}")
        return acc

    def callers(self, callers, found) -> None:
        """Per caller plan: u8 found; if found: u64 return address, then its captures."""
        f = self.fn
        for (flag, pcp, cfap), fp in zip(found, callers):
            yes, no, done = f.label("caller"), f.label("no_caller"), f.label("caller_done")
            f.cbr(f.icmp("ne", f.load(flag), 0), yes, no)
            f.block(no)
            self.put8(0)
            f.br(done)
            f.block(yes)
            self.put8(1)
            pc = f.load(pcp)
            self.put64(pc)
            cfa = f.load(cfap)
            for label, cands in capture_groups(fp.captures):
                self.capture_in_caller(label, cands, f.sub(pc, 1), cfa)
            f.br(done)
            f.block(done)

    # -- captures ---------------------------------------------------------------------------------------------
    merges: dict = {}  # id(capture) → (group, offset from the group's base, offset of its bytes in the scratch)

    def capture_here(self, cap: VariableCapture) -> None:
        """A capture in the probed frame, whose PC (and so its location) is a constant."""
        m = self.merges.get(id(cap))
        if m is not None:
            self._capture(cap, lambda fail: self.merged_root(*m, fail), with_path=False)
        else:
            self._capture(cap, lambda fail: self.root_here(cap, fail))

    def merged_reads(self, caps: list[VariableCapture]) -> dict:
        """Captures of the probed frame whose paths follow the same pointers and end in fields of the same
        target (req.ID, req.Path): the pointers are followed once here and all their bytes read in one read.
        Each capture then writes its value from those bytes; if the common read fails (the span reaches an
        unreadable page), it reads its own bytes as before, so records do not change."""
        f = self.fn
        groups: dict[tuple, list[tuple[VariableCapture, int, int]]] = {}
        for cap in caps:
            if cap.type is None or cap.path is None:
                continue
            steps = cap.path.steps
            k = max((i + 1 for i, st in enumerate(steps) if isinstance(st, A.DerefStep)), default=0)
            if k == 0 and not cap.escaped:
                continue  # no pointer followed: the root is in registers or read once anyway
            if not all(isinstance(st, (A.FieldStep, A.DerefStep, A.IndexStep)) for st in steps[:k]):
                continue
            if not all(isinstance(st, A.FieldStep) or isinstance(st, A.IndexStep) and st.container == "array"
                       for st in steps[k:]):
                continue
            size = self.table[cap.type].size
            if not 0 < size <= MERGE_SPAN:
                continue
            off = sum(st.offset if isinstance(st, A.FieldStep) else st.index * st.elem_size for st in steps[k:])
            loc = None
            if cap.path.root != "":
                loc = next((r.location for r in cap.locations if r.low <= self.site.pc < r.high), None)
                if loc is None:
                    continue
            key = (cap.path.root, cap.path.global_address, loc, cap.escaped, cap.root_type, steps[:k])
            groups.setdefault(key, []).append((cap, off, size))
        out: dict = {}
        used = n_groups = 0
        for key, members in groups.items():
            lo = min(off for _c, off, _n in members)
            span = max(off + n for _c, off, n in members) - lo
            if len(members) < 2 or span > MERGE_SPAN or used + span > MERGE_DATA or n_groups >= MERGE_GROUPS:
                continue
            cap0 = members[0][0]
            slot = f.gep(self.scratch, MERGE_OFF + 16 * n_groups)
            fail, done = f.label("merge_fail"), f.label("merge_done")
            try:
                state = self.root_here(cap0, fail)
                if key[-1]:  # the steps up to the last pointer followed
                    state = self.path(attrs.evolve(cap0.path, steps=key[-1]), state, fail)
            except _Unsupported:
                state = None
            if state is not None:  # ("user", the address the fields are at)
                base = state[1]
                f.store(slot, base)
                bad = self.read_user(f.gep(self.scratch, MERGE_DATA_OFF + used), span, f.add(base, lo))
                f.store(f.gep(slot, 8), f.select(bad, MERGE_READ_FAILED, MERGE_READ), 32)
            f.br(done)
            f.block(fail)  # the captures fail as they would on their own: same steps, same reason
            f.store(f.gep(slot, 8), MERGE_PREFIX_FAILED, 32)
            f.store(f.gep(slot, 12), f.load(self.reasonp, volatile=True), 32)
            f.br(done)
            f.block(done)
            if state is None:
                continue
            for cap, off, _n in members:
                out[id(cap)] = (n_groups, off, MERGE_DATA_OFF + used + off - lo)
            used += span
            n_groups += 1
        return out

    def merged_root(self, group: int, off: int, data: int, fail: str):
        """A merged capture's place: its address, or the failure its common steps met."""
        f = self.fn
        slot = f.gep(self.scratch, MERGE_OFF + 16 * group)
        bad, ok = f.label("prefix_failed"), f.label("prefix_ok")
        f.cbr(f.icmp("eq", f.load(f.gep(slot, 8), 32, volatile=True), MERGE_PREFIX_FAILED), bad, ok)
        f.block(bad)
        f.store(self.reasonp, f.load(f.gep(slot, 12), 32, volatile=True))
        f.br(fail)
        f.block(ok)
        return ("merged", (group, f.add(f.load(slot, volatile=True), off), data))

    def value_merged(self, tid: int, group: int, addr: str, data: int) -> None:
        """value_at(tid, addr, 1, 0) for a capture of a merged group: its bytes are at *data* in the scratch."""
        f = self.fn
        self._node()
        p = f.gep(self.scratch, data)
        own, no, yes, done = f.label("own_read"), f.label("unreadable"), f.label("readable"), f.label("value_done")
        state = f.load(f.gep(self.scratch, MERGE_OFF + 16 * group + 8), 32, volatile=True)
        f.cbr(f.icmp("eq", state, MERGE_READ), yes, own)
        f.block(own)
        f.cbr(self.read_user(p, self.table[tid].size, addr), no, yes)
        f.block(no)
        self.put((8, UNREADABLE), (64, addr))
        f.br(done)
        f.block(yes)
        self.ser_local(tid, p, 2, 0)
        f.br(done)
        f.block(done)

    def capture_in_caller(self, label: str, cands: list[VariableCapture], pc: str, cfa: str) -> None:
        if all(c.type is None for c in cands):
            self.put8(CAPTURE_UNAVAILABLE)
            self.put8(self.gen.reason(cands[0].missing or "not capturable"))
            return
        cands = [c for c in cands if c.type is not None]
        types = {(c.type, c.path) for c in cands}
        if len(types) > 1:  # shadowed names of different types: take the first (rare)
            cands = cands[:1]
        cap = cands[0]
        self._capture(cap, lambda fail: self.root_in_caller(cands, pc, cfa, fail))

    def _capture(self, cap: VariableCapture, root, with_path: bool = True) -> None:
        """u8 0, u32 length, the value; or u8 1, u8 reason code. *root* gives the root's place (with the access
        path applied already unless *with_path*)."""
        f = self.fn
        start = f.load(self.posp, volatile=True)
        fail, done = f.label("cap_fail"), f.label("cap_done")
        if cap.type is None:
            self.put8(CAPTURE_UNAVAILABLE)
            self.put8(self.gen.reason(cap.missing or "not capturable"))
            return
        self.capture_nodes = 0
        self.cap_label = cap.label
        self.partial_emitted = False
        share = None
        if not self.gen.defer:
            # An equal share of what the program has left: what earlier captures did not use goes to later ones.
            mine = self._cap_cost(cap)
            self.rest_cost -= mine
            share = min(self.units_left, max(self.units_left // max(1, self.caps_left),
                                             self.units_left - max(0, self.rest_cost)))
            code = self.code_left // max(1, self.caps_left)
            self.vleft, self.cleft, self.mult = share, code, 1
        try:
            state = root(fail)
            if with_path and cap.path is not None and cap.path.steps:
                if self._path_deferred(cap, state):
                    self._defer_path(cap, state, done)
                    state = None
                else:
                    state = self.path(cap.path, state, fail)
        except _Unsupported as exc:
            f.store(self.reasonp, self.gen.reason(str(exc)))
            f.br(fail)
            state = None
        if state is not None:
            # Should this value's code push the program past MAX_NODES, it is taken out again and the capture
            # says why: one huge value does not cost the probe its other captures.
            # A second try follows no pointer (a pointer root then shows its address). Allocas made meanwhile
            # stay (unused ones cost nothing; shared ones are cached by the function).
            cuts = getattr(self.gen, "budget_cuts", None)  # events only
            mark = (len(f.lines), f._current, self.gen._nodes, copy.deepcopy(cuts))
            limits = self.limits
            for depth in (limits.pointer_depth, 0):
                self.limits = attrs.evolve(limits, pointer_depth=depth)
                try:
                    self._capture_value(cap, state, done, fail)
                    break
                except _TooMuchCode:
                    del f.lines[mark[0]:]
                    f.terminated, f._current, self.gen._nodes = False, mark[1], mark[2]
                    if cuts is not None:
                        self.gen.budget_cuts = copy.deepcopy(mark[3])
                    self.budget_cut(TOO_LARGE_VALUE, self.table[cap.type].name)
                finally:
                    self.limits = limits
            else:
                f.store(self.reasonp, self.gen.reason(TOO_LARGE_VALUE))
                f.br(fail)
        f.block(fail)
        f.store(self.posp, start)
        if self.partial_emitted:
            flag = f.gep(self.scratch, PARTIAL_OFF)
            partial, whole = f.label("cap_partial"), f.label("cap_none")
            f.cbr(f.icmp("ne", f.load(flag, volatile=True), 0), partial, whole)
            f.block(partial)
            f.store(flag, 0)
            self.put((8, CAPTURE_PARTIAL), (8, f.load(self.reasonp, volatile=True)),
                     (64, f.load(f.gep(flag, 8), volatile=True)))
            f.br(done)
            f.block(whole)
        self.put8(CAPTURE_UNAVAILABLE)
        self.put8(f.load(self.reasonp, volatile=True))
        f.br(done)
        f.block(done)
        if share is not None:
            self.units_left -= share - self.vleft
            self.code_left -= code - self.cleft
            self.caps_left -= 1
            self.vleft = None

    def _path_deferred(self, cap: VariableCapture, state) -> bool:
        """Whether goprobe, not the program, evaluates *cap*'s path (snapshots only: a map lookup, which the
        kernel can search only in small maps, done whole from the paused process)."""
        if not self.gen.defer or getattr(self, "path_fixup", None) is None:
            return False
        if not any(isinstance(s, A.MapLookupStep) for s in cap.path.steps):
            return False
        kind, _where = state
        root = cap.root_type if cap.root_type is not None else cap.type
        return kind == "user" or (kind == "local" and self.table[root].size <= FIX_DATA)

    def _defer_path(self, cap: VariableCapture, state, done: str) -> None:
        f = self.fn
        self.put8(CAPTURE_VALUE)
        len_at = f.load(self.posp, volatile=True)
        f.store(f.gep(self.scratch, CAPLEN_OFF), len_at)
        self.put32(0)
        kind, where = state
        tid = PATH_FIXUP | self.path_fixup
        root = cap.root_type if cap.root_type is not None else cap.type
        if kind == "local":
            self.defer(tid, where, self.table[root].size, 0, f.load(self.posp, volatile=True), root=root)
        else:
            hand = f.gep(self.scratch, TMP_OFF + 48)
            f.store(hand, where)
            self.defer(tid, hand, BY_ADDRESS, 0, f.load(self.posp, volatile=True), root=root)
        end = f.load(self.posp, volatile=True)
        at = f.and_(f.barrier(len_at), HALF - 1)
        f.store(f.gep(self.scratch, at), f.sub(end, f.add(len_at, 4)), 32)
        f.br(done)

    def _capture_value(self, cap: VariableCapture, state, done: str, fail: str) -> None:
        """The CAPTURE_VALUE part of a capture whose root is at *state*; ends with a branch to *done* (or to
        *fail* when the root is dropped)."""
        f = self.fn
        self.put8(CAPTURE_VALUE)
        len_at = f.load(self.posp, volatile=True)
        f.store(f.gep(self.scratch, CAPLEN_OFF), len_at)
        self.put32(0)
        if self._follows_pointers(cap.type):
            self.new_value()
        kind, where = state
        mode = getattr(self, "root_mode", None)
        size = self.table[cap.type].size
        # "copy": left to the copier where it can take it (not a value assembled from registers that is too
        # large for a fix-up), else written here; "defer"/"drop": this capture's code could not be generated
        deferred = mode in ("defer", "copy") and (kind != "local" or size <= FIX_DATA)
        if deferred and kind == "local":
            self.defer(cap.type, where, size, 0, f.load(self.posp, volatile=True))
        elif deferred:
            hand = f.gep(self.scratch, TMP_OFF + 48)
            f.store(hand, where[1] if kind == "merged" else where)
            self.defer(cap.type, hand, BY_ADDRESS, 0, f.load(self.posp, volatile=True))
        elif mode not in (None, "copy"):
            f.store(self.reasonp, self.gen.reason(ROOT_DROPPED))
            f.br(fail)
            return
        elif kind == "local":
            self.ser_local(cap.type, where, 1, 0)
        elif kind == "merged":
            self.value_merged(cap.type, *where)
        else:
            self.value_at(cap.type, where, 1, 0)
        end = f.load(self.posp, volatile=True)
        at = f.and_(f.barrier(len_at), HALF - 1)
        f.store(f.gep(self.scratch, at), f.sub(end, f.add(len_at, 4)), 32)
        f.br(done)

    def _cap_cost(self, cap: VariableCapture) -> int:
        """The budget units *cap* would use with nothing cut (capped at the program's units)."""
        if cap.type is None or self.gen.defer:
            return 0
        return min(self._est(cap.type, 0, 0), PROGRAM_UNITS)

    def _follows_pointers(self, tid: int) -> bool:
        """Whether writing a value of *tid* can follow a pointer (and so needs a value number for de-duplication):
        not for scalars, strings and collections or structs of them."""
        memo = self.gen.__dict__.setdefault("_follows", {})
        if tid not in memo:
            todo, seen, found = [tid], set(), False
            while todo and not found:
                t = todo.pop()
                if t in seen:
                    continue
                seen.add(t)
                sh = self.table[t].shape
                found = isinstance(sh, (V.Interface, V.Func)) or isinstance(sh, V.Pointer) and sh.elem is not None
                todo.extend(x for x in (getattr(sh, "elem", None), getattr(sh, "key", None),
                                        getattr(sh, "shape", None)) if isinstance(x, int))
                if isinstance(sh, V.Struct):
                    todo.extend(fl.type for fl in sh.fields)
            memo[tid] = found
        return memo[tid]

    def new_value(self) -> None:
        """Start a top-level value: a fresh value number (CPU in the top bits) for pointer de-duplication."""
        f = self.fn
        slot = f.gep(self.scratch, SEEN_COUNT_OFF)
        n = f.add(f.and_(f.load(slot, volatile=True), (1 << 48) - 1), 1)
        cpu = f.helper("get_smp_processor_id")
        f.store(slot, f.op(f"or i64 {n}, {f.op(f'shl i64 {cpu}, 48')}"))

    def fail(self, fail: str, why: str) -> None:
        f = self.fn
        f.store(self.reasonp, self.gen.reason(why))
        f.br(fail)

    def root_here(self, cap: VariableCapture, fail: str):
        f = self.fn
        if cap.path is not None and cap.path.root == "":
            return ("user", str(cap.path.global_address))
        loc = next((r.location for r in cap.locations if r.low <= self.site.pc < r.high), None)
        if loc is None:
            self.fail(fail, "not available at this PC (optimised away or out of scope)")
            f.block(f.label("dead"))
            raise _Unsupported("not available at this PC (optimised away or out of scope)")
        size = 8 if cap.escaped else self.table[cap.root_type if cap.root_type is not None else cap.type].size
        state = self.location(loc, size, fail)
        if cap.escaped:
            state = ("user", self.load_word(state, 0, 8, fail))
        return state

    def location(self, loc: E.Location, size: int, fail: str):
        f = self.fn
        if len(loc) == 1 and loc[0].kind in (E.CFA_MEMORY, E.ADDRESS_MEMORY, E.REGISTER_MEMORY) and (
                loc[0].size is None or loc[0].size >= size):
            return ("user", self.piece_address(loc[0], fail))
        root = f.gep(self.scratch, STAGE_OFF)  # stage 0 holds roots assembled from pieces
        off = 0
        for p in loc:
            n = p.size if p.size is not None else size
            if off + n > STAGE_SIZE:
                raise _Unsupported("value too large for the eBPF backend's staging buffer")
            dst = f.gep(root, off)
            if p.kind == E.UNAVAILABLE:
                raise _Unsupported(p.reason or "optimised away at this PC")
            if p.kind == E.IMPLICIT:
                data = p.value[:n].ljust(n, b"\0")
                for k in range(n):
                    f.store(f.gep(dst, k), data[k], 8)
            elif p.kind == E.REGISTER:
                if p.reg not in PT_REGS:
                    raise _Unsupported("held in a floating-point register, which eBPF cannot read")
                v = self.reg(p.reg)
                if n not in (1, 2, 4, 8):
                    raise _Unsupported(f"a {n}-byte register piece")
                f.store(dst, v, 8 * n)
            else:
                addr = self.piece_address(p, fail)
                bad = self.read_user(dst, n, addr)
                ok = f.label("piece_ok")
                f.store(self.reasonp, self.gen.reason("memory is not readable"))
                f.cbr(bad, fail, ok)
                f.block(ok)
            off += n
        return ("local", root)

    def piece_address(self, p: E.Piece, fail: str) -> str:
        f = self.fn
        if p.kind == E.CFA_MEMORY:
            if self.cfa is None:
                raise _Unsupported("frame address unknown")
            addr = f.add(self.cfa, p.offset)
        elif p.kind == E.ADDRESS_MEMORY:
            addr = str(p.offset)
        elif p.reg in PT_REGS:
            addr = f.add(self.reg(p.reg), p.offset)
        else:
            raise _Unsupported("address held in a register eBPF cannot read")
        if p.indirect:
            ptr = self.load_word(("user", addr), 0, 8, fail)
            addr = f.add(ptr, p.post_offset)
        return addr

    def root_in_caller(self, cands: list[VariableCapture], pc: str, cfa: str, fail: str):
        """A frame whose registers are gone (a caller, or a parked goroutine): the location is chosen by the
        frame's PC at run time; pieces in the frame's memory are read, a piece in a register makes the value
        unavailable — with the reasons the interpreter gives."""
        f = self.fn
        cap0 = cands[0]
        if cap0.path is not None and cap0.path.root == "":
            return ("user", str(cap0.path.global_address))
        # Candidates of one name may differ in whether their slot holds the value or the address of its heap
        # copy (a parameter at entry, then the escaped local): each is read its own way.
        all_escaped = all(c.escaped for c in cands)
        value_size = self.table[cap0.root_type if cap0.root_type is not None else cap0.type].size
        if not all_escaped and value_size > STAGE_SIZE:
            raise _Unsupported("value too large for the eBPF backend's staging buffer")
        found = f.label("root_found")
        root = f.gep(self.scratch, STAGE_OFF)
        for c in cands:
            for r in c.locations_for(True):  # a frame stopped at a call: looked up at its return address - 1
                hit, nxt = f.label("range"), f.label("range_next")
                inside = f.op(f"and i1 {f.icmp('uge', pc, r.low)}, {f.icmp('ult', pc, r.high)}")
                f.cbr(inside, hit, nxt)
                f.block(hit)
                why = _first_unreadable_piece(r.location)
                if why is not None:
                    self._known_length(c, r.location, cfa)
                    self.fail(fail, why)
                else:
                    self.assemble(r.location, 8 if c.escaped else value_size, root, cfa, fail)
                    if c.escaped and not all_escaped:  # the heap copy into the root buffer
                        bad = self.read_user(root, value_size, f.load(root))
                        ok = f.label("heap_ok")
                        f.store(self.reasonp, self.gen.reason("memory is not readable"))
                        f.cbr(bad, fail, ok)
                        f.block(ok)
                    f.br(found)
                f.block(nxt)
        self.fail(fail, "not available at this PC (optimised away or out of scope)")
        f.block(found)
        if all_escaped:
            return ("user", self.load_word(("local", root), 0, 8, fail))
        return ("local", root)

    def _known_length(self, c: VariableCapture, loc: E.Location, cfa: str) -> None:
        """Where the value is unavailable but it is a string or slice whose length is readable: read the length
        and flag it, so the capture says ``{"@unavailable", "@len"}`` (goprobe.ir.location_checks)."""
        f = self.fn
        root = self.table[c.root_type if c.root_type is not None else c.type].shape
        piece = known_length(loc, root, not c.escaped and (c.path is None or not c.path.steps))
        if piece is None or piece.kind not in (E.CFA_MEMORY, E.ADDRESS_MEMORY, E.IMPLICIT):
            return
        flag = f.gep(self.scratch, PARTIAL_OFF)
        if piece.kind == E.IMPLICIT:
            f.store(f.gep(flag, 8), int.from_bytes(piece.value[:8].ljust(8, b"\0"), "little"))
            f.store(flag, 1)
        else:
            addr = f.add(cfa, piece.offset) if piece.kind == E.CFA_MEMORY else str(piece.offset)
            bad = self.read_user(f.gep(flag, 8), 8, addr)
            f.store(flag, f.select(bad, 0, 1))
        self.partial_emitted = True

    def assemble(self, loc: E.Location, size: int, dst: str, cfa: str, fail: str) -> None:
        """Read a location made of memory and constant pieces into *dst* (the frame's CFA is *cfa*)."""
        f = self.fn
        off = 0
        for p in loc:
            n = min(p.size if p.size is not None else size, STAGE_SIZE - off)
            at = f.gep(dst, off) if off else dst
            if p.kind == E.IMPLICIT:
                data = p.value[:n].ljust(n, b"\0")
                for k in range(n):
                    f.store(f.gep(at, k), data[k], 8)
            else:
                addr = f.add(cfa, p.offset) if p.kind == E.CFA_MEMORY else str(p.offset)
                if p.indirect:
                    ptr = self.load_word(("user", addr), 0, 8, fail)
                    addr = f.add(ptr, p.post_offset)
                bad = self.read_user(at, n, addr)
                ok = f.label("piece_ok")
                f.store(self.reasonp, self.gen.reason("memory is not readable"))
                f.cbr(bad, fail, ok)
                f.block(ok)
            off += n

    # -- access paths -----------------------------------------------------------------------------------------
    def load_word(self, state, offset: int, size: int, fail: str) -> str:
        """An unsigned integer of *size* bytes at *offset* of the place; unreadable → fail."""
        f = self.fn
        kind, where = state
        bits = size * 8
        if kind == "local":
            return f.load(f.gep(where, offset), bits)
        tmp = f.gep(self.scratch, TMP_OFF)
        bad = self.read_user(tmp, size, f.add(where, offset))
        ok = f.label("read_ok")
        f.store(self.reasonp, self.gen.reason("memory is not readable"))
        f.cbr(bad, fail, ok)
        f.block(ok)
        return f.load(tmp, bits)

    def path(self, path: A.AccessPath, state, fail: str):
        f = self.fn
        for step in path.steps:
            kind, where = state
            if isinstance(step, A.FieldStep):
                state = (kind, f.gep(where, step.offset) if kind == "local" else f.add(where, step.offset))
            elif isinstance(step, A.DerefStep):
                ptr = self.load_word(state, 0, 8, fail)
                ok = f.label("deref_ok")
                f.store(self.reasonp, self.gen.reason("nil pointer dereference"))
                f.cbr(f.icmp("eq", ptr, 0), fail, ok)
                f.block(ok)
                state = ("user", ptr)
            elif isinstance(step, A.IndexStep):
                if step.container == "array":
                    off = step.index * step.elem_size
                    state = (kind, f.gep(where, off) if kind == "local" else f.add(where, off))
                    continue
                ptr = self.load_word(state, 0, 8, fail)
                length = self.load_word(state, 8, 8, fail)
                ok = f.label("index_ok")
                f.store(self.reasonp, self.gen.reason(f"index {step.index} out of range"))
                f.cbr(f.icmp("ule", length, step.index), fail, ok)
                f.block(ok)
                state = ("user", f.add(ptr, step.index * step.elem_size))
            elif isinstance(step, (A.LenStep, A.CapStep)):
                value = self.length(state, step, fail)
                hand = f.gep(self.scratch, HAND_OFF)
                f.store(hand, value)
                state = ("local", hand)
            elif isinstance(step, A.TypeAssertStep):
                state = self.type_assert(state, step, path, fail)
            elif isinstance(step, A.MapLookupStep):
                state = self.map_lookup(state, step, fail)
            else:
                raise _Unsupported(f"access step {type(step).__name__} is not supported by the eBPF backend")
        return state

    # -- map lookups ------------------------------------------------------------------------------------------
    def map_lookup(self, state, step: A.MapLookupStep, fail: str):
        """``m[key]`` with a constant key: the map's slots are walked (the hash is keyed per process, so it
        cannot be computed here) and the first whose key equals it gives the element's address."""
        f = self.fn
        shape = self.table[step.map_type].shape
        if not isinstance(shape, (V.SwissMap, V.ClassicMap)):
            raise _Unsupported("not a map")
        if isinstance(step.key, bytes) and len(step.key) > MAX_LOOKUP_KEY:
            raise _Unsupported(f"string keys longer than {MAX_LOOKUP_KEY} bytes are not compared in the kernel")
        m = self.load_word(state, 0, 8, fail)
        some = f.label("map_some")
        f.store(self.reasonp, self.gen.reason("nil map"))
        f.cbr(f.icmp("eq", m, 0), fail, some)
        f.block(some)
        hdr = f.gep(self.scratch, STAGE_OFF + (STAGE_LEVELS - 1) * STAGE_SIZE)
        bad = self.read_user(hdr, V.header_size(shape), m)
        ok = f.label("map_hdr")
        f.store(self.reasonp, self.gen.reason(f"map header at the map's address is not readable"))
        f.cbr(bad, fail, ok)
        f.block(ok)
        st = lambda k: f.gep(self.scratch, LOOKUP_OFF + 8 * k)  # noqa: E731 - walk state slots
        found, cut = st(0), st(1)
        f.store(found, 0)
        f.store(cut, 0)
        if isinstance(shape, V.SwissMap):
            self._swiss_lookup(shape, step, hdr, st)
        else:
            self._classic_lookup(shape, step, hdr, st)
        elem = f.load(found, volatile=True)
        hit, miss = f.label("key_found"), f.label("key_missing")
        f.cbr(f.icmp("ne", elem, 0), hit, miss)
        f.block(miss)
        key = step.key.decode("utf-8", "replace") if isinstance(step.key, bytes) else step.key
        shown = f'"{key}"' if isinstance(step.key, bytes) else str(key)
        missing, searched = f.label("key_absent"), f.label("key_unsearched")
        f.cbr(f.icmp("eq", f.load(cut, volatile=True), 0), missing, searched)
        f.block(missing)
        f.store(self.reasonp, self.gen.reason(f"key {shown} is not in the map"))
        f.br(fail)
        f.block(searched)
        f.store(self.reasonp, self.gen.reason(
            f"key {shown} is not among the first {8 * MAX_LOOKUP_GROUPS} slots that an event program searches (the "
            "map is larger; a snapshot searches it whole)"))
        f.br(fail)
        f.block(hit)
        return ("user", elem)

    def _lookup_slot(self, shape, step: A.MapLookupStep, live: str, key_addr: str, elem_addr: str,
                     found: str) -> None:
        """Compare one slot's key with the constant; when it is live and matches, its element's address goes to
        *found*. Without branches: each would double the paths the verifier explores, slot after slot."""
        f = self.fn
        if shape.key_indirect:
            key_addr = self._slot_pointer(key_addr)
        if shape.elem_indirect:
            elem_addr = self._slot_pointer(elem_addr)
        tmp = f.gep(self.scratch, TMP_OFF)
        conds = [live]
        if isinstance(step.key, bytes):
            k = step.key
            conds.append(f.icmp("eq", f.op(f"zext i1 {self.read_user(tmp, 16, key_addr)} to i64"), 0))
            conds.append(f.icmp("eq", f.load(f.gep(tmp, 8)), len(k)))
            if k:
                buf = f.gep(self.scratch, LOOKUP_KEY_OFF)
                conds.append(f.icmp("eq", f.op(f"zext i1 {self.read_user(buf, len(k), f.load(tmp))} to i64"), 0))
                for off in range(0, len(k), 8):
                    chunk = k[off:off + 8]
                    if len(chunk) in (1, 2, 4, 8):
                        conds.append(f.icmp("eq", f.load(f.gep(buf, off), 8 * len(chunk)),
                                            int.from_bytes(chunk, "little")))
                    else:
                        conds.extend(f.icmp("eq", f.load(f.gep(buf, off + j), 8), byte) for j, byte in enumerate(chunk))
        else:
            size = step.key_size
            conds.append(f.icmp("eq", f.op(f"zext i1 {self.read_user(tmp, size, key_addr)} to i64"), 0))
            conds.append(f.icmp("eq", f.load(tmp, 8 * size), step.key & ((1 << (8 * size)) - 1)))
        match = conds[0]
        for c in conds[1:]:
            match = f.op(f"and i1 {match}, {c}")
        prev = f.load(found, volatile=True)
        f.store(found, f.select(f.op(f"and i1 {match}, {f.icmp('eq', prev, 0)}"), elem_addr, prev))

    def _lookup_eight(self, shape, step, valid: str, marks_addr: str, slot, found: str) -> None:
        """Eight slots of a group or bucket, when *valid*: their mark bytes say which are live."""
        f = self.fn
        marks = f.gep(self.scratch, TMP_OFF + 32)
        bad = self.read_user(marks, 8, marks_addr)
        valid = f.op(f"and i1 {valid}, {f.icmp('eq', f.op(f'zext i1 {bad} to i64'), 0)}")

        def one(i: str) -> None:
            live, key, elem = slot(i, f.load(f.gep(marks, f.and_(f.barrier(i), 7)), 8))
            self._lookup_slot(shape, step, f.op(f"and i1 {valid}, {live}"), key, elem, found)

        self.loop(8, one)

    # The walks below have no branches but their loops': each branch would double the states the verifier
    # keeps, visit after visit (a few lookups in one program passed its limit of 8192 pending states). Reads
    # that a step does not need are made anyway (from address 0 when there is nothing to read) and ignored.
    def _swiss_lookup(self, shape: V.SwissMap, step, hdr: str, st) -> None:
        """Groups in directory order: the state holds the current table's groups (address, count left)."""
        f = self.fn
        found, cut, table_i, groups, left, last = st(0), st(1), st(2), st(3), st(4), st(5)
        dir_ptr, dir_len = f.load(f.gep(hdr, shape.dir_ptr_off)), f.load(f.gep(hdr, shape.dir_len_off))
        small = f.icmp("eq", dir_len, 0)
        # A small map is one group at dir_ptr; otherwise tables are taken from the directory as groups run out.
        f.store(groups, f.select(small, dir_ptr, 0))
        f.store(left, f.select(small, 1, 0))
        f.store(table_i, 0)
        f.store(last, 0)
        tmp = f.gep(self.scratch, TMP_OFF + 48)
        th = f.gep(self.scratch, STAGE_OFF + (STAGE_LEVELS - 2) * STAGE_SIZE)
        span = max(shape.groups_data_off, shape.groups_mask_off) + 8
        vol = lambda p: f.load(p, volatile=True)  # noqa: E731

        def visit(_v: str) -> None:
            ti = vol(table_i)
            in_dir = f.op(f"and i1 {f.icmp('ult', ti, dir_len)}, {f.icmp('ult', ti, MAX_LOOKUP_TABLES)}")
            can = f.op(f"and i1 {f.icmp('eq', vol(left), 0)}, {in_dir}")
            bad = self.read_user(tmp, 8, f.select(can, f.add(dir_ptr, f.mul(ti, 8)), 0))
            t = f.select(bad, 0, f.load(tmp))
            prev = vol(last)
            other = f.op(f"and i1 {f.icmp('ne', t, 0)}, {f.icmp('ne', t, prev)}")
            fresh = f.op(f"and i1 {can}, {other}")
            f.store(table_i, f.select(can, f.add(ti, 1), ti))
            f.store(last, f.select(fresh, t, prev))
            bad = self.read_user(th, span, f.select(fresh, t, 0))
            ok = f.op(f"and i1 {fresh}, {f.icmp('eq', f.op(f'zext i1 {bad} to i64'), 0)}")
            f.store(groups, f.select(ok, f.load(f.gep(th, shape.groups_data_off)), vol(groups)))
            f.store(left, f.select(ok, f.add(f.load(f.gep(th, shape.groups_mask_off)), 1), vol(left)))
            n_left, group = vol(left), vol(groups)
            valid = f.op(f"and i1 {f.icmp('ne', n_left, 0)}, {f.icmp('eq', vol(found), 0)}")

            def slot(i: str, c: str) -> tuple[str, str, str]:
                s_addr = f.add(f.add(group, shape.slots_off), f.mul(i, shape.slot_size))
                return f.icmp("eq", f.and_(c, 0x80), 0), f.add(s_addr, shape.key_off), f.add(s_addr, shape.elem_off)

            self._lookup_eight(shape, step, valid, f.select(valid, f.add(group, shape.ctrl_off), 0), slot, found)
            f.store(groups, f.select(valid, f.add(group, shape.group_size), group))
            f.store(left, f.select(valid, f.sub(n_left, 1), n_left))

        self.loop(MAX_LOOKUP_GROUPS, visit)
        self._mark_cut(found, cut, f.op(f"or i1 {f.icmp('ne', vol(left), 0)}, {f.icmp('ult', vol(table_i), dir_len)}"))

    def _classic_lookup(self, shape: V.ClassicMap, step, hdr: str, st) -> None:
        """Buckets in order, each with its overflow chain (old buckets of a growing map are not searched)."""
        f = self.fn
        found, cut, bucket, index, chain = st(0), st(1), st(2), st(3), st(4)
        B = f.op(f"and i64 {f.load(f.gep(hdr, shape.b_off), 8)}, 31")
        nb = f.op(f"shl i64 1, {B}")
        old = f.load(f.gep(hdr, shape.oldbuckets_off))
        base = f.load(f.gep(hdr, shape.buckets_off))
        f.store(index, 0)
        f.store(bucket, base)
        f.store(chain, 0)
        ks, es = V.slot_footprints(shape)
        tmp = f.gep(self.scratch, TMP_OFF + 48)
        vol = lambda p: f.load(p, volatile=True)  # noqa: E731

        def visit(_v: str) -> None:
            i, b, c = vol(index), vol(bucket), vol(chain)
            valid = f.op(f"and i1 {f.icmp('ult', i, nb)}, {f.icmp('eq', vol(found), 0)}")

            def slot(j: str, t: str) -> tuple[str, str, str]:
                return (f.icmp("uge", t, 5), f.add(f.add(b, shape.keys_off), f.mul(j, ks)),
                        f.add(f.add(b, shape.elems_off), f.mul(j, es)))

            self._lookup_eight(shape, step, valid, f.select(valid, f.add(b, shape.tophash_off), 0), slot, found)
            # Next: the overflow bucket, else the next bucket of the array.
            bad = self.read_user(tmp, 8, f.select(valid, f.add(b, shape.overflow_off), 0))
            over = f.select(bad, 0, f.load(tmp))
            chained = f.op(f"and i1 {f.icmp('ne', over, 0)}, {f.icmp('ult', c, MAX_CHAIN)}")
            follow = f.op(f"and i1 {valid}, {chained}")
            step_on = f.op(f"and i1 {valid}, {f.op(f'xor i1 {follow}, true')}")
            nxt = f.add(i, 1)
            f.store(index, f.select(step_on, nxt, i))
            f.store(chain, f.select(follow, f.add(c, 1), f.select(step_on, 0, c)))
            f.store(bucket, f.select(follow, over, f.select(step_on, f.add(base, f.mul(nxt, shape.bucket_size)), b)))

        self.loop(MAX_LOOKUP_GROUPS, visit)
        # Old buckets not evacuated yet may hold the key too: a miss while the map grows is not conclusive.
        self._mark_cut(found, cut, f.op(f"or i1 {f.icmp('ult', vol(index), nb)}, {f.icmp('ne', old, 0)}"))

    def _mark_cut(self, found: str, cut: str, unfinished: str) -> None:
        f = self.fn
        f.store(cut, f.select(unfinished, 1, f.load(cut, volatile=True)))

    def length(self, state, step, fail: str) -> str:
        f = self.fn
        if step.container == "array":
            return str(step.static)
        if step.container in ("slice", "string"):
            return self.load_word(state, 16 if isinstance(step, A.CapStep) and step.container == "slice" else 8,
                                  8, fail)
        # maps and channels: a pointer to a header; nil has length 0
        hdr = self.load_word(state, 0, 8, fail)
        res = f.alloca("i64")
        f.store(res, 0)
        some, done = f.label("hdr"), f.label("hdr_done")
        f.cbr(f.icmp("eq", hdr, 0), done, some)
        f.block(some)
        f.store(res, self.load_word(("user", hdr), step.field_offset, 8, fail))
        f.br(done)
        f.block(done)
        return f.load(res)

    def type_assert(self, state, step: A.TypeAssertStep, path: A.AccessPath, fail: str):
        f = self.fn
        word0 = self.load_word(state, 0, 8, fail)
        data = self.load_word(state, 8, 8, fail)
        typ = word0
        if not step.empty:
            nz = f.label("itab")
            f.store(self.reasonp, self.gen.reason("nil interface"))
            f.cbr(f.icmp("eq", word0, 0), fail, nz)
            f.block(nz)
            typ = self.load_word(("user", word0), self.gen.plan.interfaces.itab_type_off, 8, fail)
        ok = f.label("assert_ok")
        f.store(self.reasonp, self.gen.reason("the dynamic type is not the asserted type"))
        f.cbr(f.icmp("ne", f.sub(typ, self.types_base), step.runtime_type), fail, ok)
        f.block(ok)
        # Whether the asserted type's values sit in the data word itself (pointers): the asserted type's own
        # entry, not the path's result (``e.(*T).f`` continues past the assertion).
        tid = self.table.by_runtime_type.get(step.runtime_type)
        asserted = self.table[tid if tid is not None else path.type]
        if asserted.direct_iface:
            hand = f.gep(self.scratch, HAND_OFF)
            f.store(hand, data)
            f.store(f.gep(hand, 8), 0)
            return ("local", hand)
        return ("user", data)

    # -- conditions -------------------------------------------------------------------------------------------
    def condition(self, c, yes: str, no: str) -> None:
        f = self.fn
        if isinstance(c, EV.Logic):
            mid = f.label("cond_mid")
            if c.op == "&&":
                self.condition(c.left, mid, no)
            else:
                self.condition(c.left, yes, mid)
            f.block(mid)
            self.condition(c.right, yes, no)
        elif isinstance(c, EV.Not):
            self.condition(c.operand, no, yes)
        elif isinstance(c, EV.Operand):
            v = self.operand(c, no)
            f.cbr(f.icmp("ne", v, 0), yes, no)
        else:
            self.compare(c, yes, no)

    def operand(self, o: EV.Operand, fail: str) -> str:
        """An operand's value as i64 (sign- or zero-extended); failures make the condition false."""
        f = self.fn
        if o.kind == "float":
            raise CodegenError("conditions on floating-point values are not supported by the eBPF backend")
        try:
            state = self.root_here(o.capture, fail)
            if o.capture.path is not None and o.capture.path.steps:
                state = self.path(o.capture.path, state, fail)
        except _Unsupported as exc:
            raise CodegenError(f"condition operand {o.capture.label!r}: {exc}") from None
        raw = self.load_word(state, 0, o.size, fail) if o.size in (1, 2, 4, 8) else None
        if raw is None:
            raise CodegenError(f"condition operand {o.capture.label!r} of size {o.size} is not comparable")
        if o.kind == "int" and o.size < 8:
            bits = o.size * 8
            raw = f.op(f"sext i{bits} {f.op(f'trunc i64 {raw} to i{bits}')} to i64")
        return raw

    def compare(self, c: EV.Compare, yes: str, no: str) -> None:
        f = self.fn
        sides = (c.left, c.right)
        if any(isinstance(s, EV.Operand) and s.kind == "string" for s in sides):
            self.compare_string(c, yes, no)
            return
        vals, signed = [], False
        for s in sides:
            if isinstance(s, EV.Literal):
                v = s.value
                vals.append(str(int(v) if v is not None else 0))
            else:
                vals.append(self.operand(s, no))
                signed = signed or s.kind == "int"
        pred = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}[c.op]
        if pred not in ("eq", "ne"):
            pred = ("s" if signed else "u") + pred
        f.cbr(f.icmp(pred, vals[0], vals[1]), yes, no)

    def compare_string(self, c: EV.Compare, yes: str, no: str) -> None:
        f = self.fn
        if c.op not in ("==", "!="):
            raise CodegenError("the eBPF backend compares strings with == and != only")
        lit = next((s for s in (c.left, c.right) if isinstance(s, EV.Literal)), None)
        op = next(s for s in (c.left, c.right) if isinstance(s, EV.Operand))
        if lit is None:
            raise CodegenError("the eBPF backend compares a string with a literal only")
        text = lit.value if isinstance(lit.value, bytes) else str(lit.value).encode()
        if len(text) > 56:
            raise CodegenError("string literals in eBPF conditions are limited to 56 bytes")
        equal, differ = (yes, no) if c.op == "==" else (no, yes)
        try:
            state = self.root_here(op.capture, no)
            if op.capture.path is not None and op.capture.path.steps:
                state = self.path(op.capture.path, state, no)
        except _Unsupported as exc:
            raise CodegenError(f"condition operand {op.capture.label!r}: {exc}") from None
        ptr = self.load_word(state, 0, 8, no)
        length = self.load_word(state, 8, 8, no)
        same_len = f.label("same_len")
        f.cbr(f.icmp("eq", length, len(text)), same_len, differ)
        f.block(same_len)
        if not text:
            f.br(equal)
            return
        tmp = f.gep(self.scratch, TMP_OFF)
        bad = self.read_user(tmp, len(text), ptr)
        ok = f.label("str_read")
        f.cbr(bad, no, ok)
        f.block(ok)
        acc = "true"
        for k in range(len(text)):
            acc = f.op(f"and i1 {acc}, {f.icmp('eq', f.load(f.gep(tmp, k), 8), text[k])}")
        f.cbr(acc, equal, differ)

    # -- output -----------------------------------------------------------------------------------------------
    def out_ptr(self) -> tuple[str, str]:
        f = self.fn
        pos = f.load(self.posp, volatile=True)
        return f.gep(self.scratch, f.and_(f.barrier(pos), HALF - 1)), pos

    def put(self, *fields: tuple[int, str | int]) -> None:
        """Write fields of (bits, value) at the current position and advance."""
        f = self.fn
        p, pos = self.out_ptr()
        off = 0
        for bits, value in fields:
            f.store(f.gep(p, off) if off else p, value, bits)
            off += bits // 8
        f.store(self.posp, f.add(pos, off))

    def put8(self, v: str | int) -> None:
        self.put((8, v))

    def put32(self, v: str | int) -> None:
        self.put((32, v))

    def put64(self, v: str | int) -> None:
        self.put((64, v))

    # -- values -----------------------------------------------------------------------------------------------
    def _node(self) -> None:
        self.gen._nodes += 1
        if self.vleft is not None:
            self.vleft -= self.mult
            self.cleft -= 1
        if self.gen._nodes > MAX_NODES:
            raise _TooMuchCode(TOO_MUCH_CODE)

    def value_at(self, tid: int, addr: str, level: int, depth: int) -> None:
        """A value in the target's memory: read it whole into the level's staging buffer, then write it."""
        f = self.fn
        self._node()
        entry = self.table[tid]
        size = entry.size
        if self.gen.defer and (getattr(self, "capture_nodes", 0) > CAPTURE_NODES or (
                isinstance(entry.shape, V.Struct) and
                getattr(self, "capture_nodes", 0) + _flat_nodes(self.table, tid, CAPTURE_NODES) > CAPTURE_NODES)):
            # Past this capture's code budget, or a struct that would run past it: the interpreter writes the
            # value from its address (one fix-up for the struct, not one for each field past the budget:
            # hundreds of them made code whose live values overflowed BPF's 512-byte stack).
            self.capture_nodes += 1
            hand = f.gep(self.scratch, TMP_OFF + 48)
            f.store(hand, addr)
            self.defer(tid, hand, BY_ADDRESS, depth, f.load(self.posp, volatile=True))
            return
        if size == 0:
            self.ser_local(tid, f.gep(self.scratch, STAGE_OFF), level, depth)
            return
        if size <= STAGE_SIZE and level < STAGE_LEVELS:
            stage = f.gep(self.scratch, STAGE_OFF + level * STAGE_SIZE)
            bad = self.read_user(stage, size, addr)
            no, yes, done = f.label("unreadable"), f.label("readable"), f.label("value_done")
            f.cbr(bad, no, yes)
            f.block(no)
            self.put((8, UNREADABLE), (64, addr))
            f.br(done)
            f.block(yes)
            self.ser_local(tid, stage, level + 1, depth)
            f.br(done)
            f.block(done)
            return
        shape = entry.shape
        # Too large to stage: walk it part by part from the target's memory.
        if isinstance(shape, V.Struct):
            self.put8(OK)
            for fl in shape.fields:
                self.value_at(fl.type, f.add(addr, fl.offset), level, depth)
        elif isinstance(shape, V.Array):
            n = self._afford(self._count(shape.length, shape.elem_size), shape.elem, depth, level)
            self.put((8, OK), (32, n))
            self.loop(n, lambda i: self.value_at(shape.elem, f.add(addr, f.mul(i, shape.elem_size)), level, depth))
        else:  # nested deeper than the staging buffers: cut here rather than guess
            self.put8(BUDGET_STATUS)

    def _count(self, length: int, elem_size: int) -> int:
        return V.captured_count(length, elem_size, self.limits.collection_bytes, self.limits.min_elements)

    # -- verification budget (events) -------------------------------------------------------------------------
    def _est(self, tid: int, depth: int, level: int) -> int:
        """Value nodes (loop iterations counted) the code for *tid* would have, as value_at/ser_local write it."""
        memo = self.gen.__dict__.setdefault("_estimates", {})
        key = (tid, depth, level)
        if key in memo:
            return memo[key]
        memo[key] = EST_CAP  # a type reached again while estimating itself: costly
        sh = self.table[tid].shape
        pd = self.limits.pointer_depth
        if level >= STAGE_LEVELS or isinstance(sh, (V.Scalar, V.String, V.Opaque)):
            c = 1
        elif isinstance(sh, V.Func):
            c = 1 + (sum(self._est(cl.context, depth, level) for cl in self.table.closures[:16]) if depth < pd else 0)
        elif isinstance(sh, V.Struct):
            c = 1 + sum(self._est(fl.type, depth, level) for fl in sh.fields)
        elif isinstance(sh, V.Array):
            n = self._count(sh.length, sh.elem_size)
            c = 1 + (n // 8 if self._fast(sh.elem, n) else n * self._est(sh.elem, depth, level))
        elif isinstance(sh, V.Slice):
            n = self._count(1 << 40, sh.elem_size) if sh.elem_size else self.limits.min_elements
            c = 2 + (n // 8 if self._fast(sh.elem, n) else n * self._est(sh.elem, depth, level + 1))
        elif isinstance(sh, V.Pointer):
            c = 2 if sh.elem is None or depth >= pd else 2 + self._est(sh.elem, depth + 1, level + 1)
        elif isinstance(sh, V.Interface):
            c = 2 + sum(self._est(t, depth, level + 1) for _rt, t in self._candidates(depth))
        elif isinstance(sh, (V.SwissMap, V.ClassicMap)):
            slots = 8 if isinstance(sh, V.SwissMap) else 8 * MAX_SMALL_CHAIN
            c = 2 + slots * (self._est(sh.key, depth, level + 1) + self._est(sh.elem, depth, level + 1))
        elif isinstance(sh, V.Chan):
            n = self._count(1 << 40, sh.elem_size) if sh.elem_size else self.limits.min_elements
            c = 2 + n * self._est(sh.elem, depth, level + 1)
        elif isinstance(sh, V.TypeParam):
            c = 1 + self._est(sh.shape, depth, level)
        else:
            c = 1
        memo[key] = min(c, EST_CAP)
        return memo[key]

    def _est_least(self, tid: int, level: int) -> int:
        """The fewest value nodes *tid* can be written with when the budget is short: one element of each
        collection, maps and channels as their length, pointers and interfaces not followed. What the pointee
        then holds is decided inside, each part against what is left (``_fits``, ``_afford``)."""
        memo = self.gen.__dict__.setdefault("_least", {})
        key = (tid, level)
        if key not in memo:
            memo[key] = EST_CAP  # a type reached again while estimating itself
            sh = self.table[tid].shape
            if level >= STAGE_LEVELS or isinstance(sh, (V.Scalar, V.String, V.Opaque, V.Func)):
                c = 1
            elif isinstance(sh, V.Struct):
                c = 1 + sum(self._est_least(fl.type, level) for fl in sh.fields)
            elif isinstance(sh, V.Array):
                c = 1 + self._est_least(sh.elem, level)
            elif isinstance(sh, V.Slice):
                c = 2 + self._est_least(sh.elem, level + 1)
            elif isinstance(sh, V.TypeParam):
                c = 1 + self._est_least(sh.shape, level)
            else:  # pointers, interfaces, maps, channels: a few nodes before any choice to go further
                c = 2
            memo[key] = min(c, EST_CAP)
        return memo[key]

    def _fast(self, elem: int, n: int) -> bool:
        """Scalar elements written by a tight loop (one status byte and the bytes each, no checks between)."""
        sh = self.table[elem].shape
        return not self.gen.defer and isinstance(sh, V.Scalar) and n * (1 + sh.size) <= FAST_SCALARS

    def _afford(self, n: int, elem: int, depth: int, level: int) -> int:
        """How many of *n* elements the capture's budget pays for, each written shallowly (at least one)."""
        if self.vleft is None or n <= 1:
            return n
        one = self._est(elem, self.limits.pointer_depth, level)
        if one > self.cleft:
            return 1  # one copy of the element's code is all a loop has; the budget then cuts inside it
        got = max(1, min(n, self.vleft // max(1, self.mult * one)))
        if got < n:
            self.budget_cut("fewer elements than the limits allow", f"{got} of {n}")
        return got

    def budget_cut(self, kind: str, detail: str = "") -> None:
        """Note that the capture being written shows less than the limits allow because of its budget."""
        if self.vleft is not None:
            site = getattr(self, "site", None)
            key = (site.function if site is not None else "?", getattr(self, "cap_label", "?"))
            self.gen.budget_cuts.setdefault(key, {}).setdefault(kind, {})[detail] = None

    def _fits(self, cost: int) -> bool:
        return self.vleft is None or (cost * self.mult <= self.vleft and cost <= self.cleft)

    def scalars(self, elem: int, src: str, n: str | int, max_n: int) -> None:
        """*n* (at most *max_n*) scalar elements staged at *src*: status byte and bytes each. The caller checked the
        budget position; max_n * (1 + size) <= FAST_SCALARS keeps the writes inside the output's slack. Small
        elements go several an iteration (the verifier walks every iteration); the last one may write and read
        a few bytes past the elements, inside the scratch area, and the position ends after the n-th."""
        f = self.fn
        size = self.table[elem].shape.size
        k = max(1, 8 // size) if size in (1, 2, 4) else 1
        stride = 1 + size
        pos0 = f.load(self.posp, volatile=True)
        if self.vleft is not None:
            self.vleft -= self.mult * max(1, -(-max_n // k) * (8 + 3 * k) // 40)

        def group(i: str) -> None:
            out = f.gep(self.scratch, f.and_(f.barrier(f.add(pos0, f.mul(i, k * stride))), HALF - 1))
            inp = f.gep(src, f.mul(i, k * size))
            for j in range(k):
                dst = f.gep(out, j * stride)
                f.store(dst, OK, 8)
                w = 0
                while w < size:
                    c = 8 if size - w >= 8 else 4 if size - w >= 4 else 2 if size - w >= 2 else 1
                    f.store(f.gep(dst, 1 + w), f.load(f.gep(inp, j * size + w), 8 * c), 8 * c)
                    w += c

        groups = n if k == 1 else f.op(f"lshr i64 {f.add(n, k - 1)}, {k.bit_length() - 1}") if isinstance(n, str) \
            else -(-n // k)
        mult, self.mult = self.mult, 0  # charged above
        self.loop(groups, group, -(-max_n // k))
        self.mult = mult
        f.store(self.posp, f.add(pos0, f.mul(n, stride)))

    def _read_header(self, shape, addr: str, level: int, done: str) -> str:
        """Read a map header or an hchan into the level's staging buffer; unreadable: status 1 and *done*."""
        f = self.fn
        stage = f.gep(self.scratch, STAGE_OFF + min(level, STAGE_LEVELS - 1) * STAGE_SIZE)
        bad = self.read_user(stage, V.header_size(shape), addr)
        no, yes = f.label("header_bad"), f.label("header_ok")
        f.cbr(bad, no, yes)
        f.block(no)
        self.put8(1)
        f.br(done)
        f.block(yes)
        return stage

    def loop(self, bound: int | str, body, max_bound: int | None = None) -> None:
        """for i in range(bound): body(i) — *bound* a constant, or a value at most *max_bound*."""
        f = self.fn
        if isinstance(bound, int):
            if bound == 0:
                return
            max_bound = bound
        pre = f.current_label()
        head, inner, after = f.label("loop"), f.label("loop_body"), f.label("loop_done")
        f.br(head)
        f.block(head)
        i = f.tmp()
        f(f"{i} = phi i64 [0, %{pre}], [%NEXT_{head}, %LATCH_{head}]")
        f.cbr(f.op(f"and i1 {f.icmp('ult', i, bound)}, {f.icmp('ult', i, max_bound)}"), inner, after)
        f.block(inner)
        outer = self.mult
        self.mult = outer * max(1, max_bound)  # the verifier walks the body once per iteration
        try:
            body(i)
        finally:
            self.mult = outer
        nxt = f.add(i, 1)
        latch = f.current_label()
        f.loop_back(head)
        f.replace(f"%NEXT_{head}", nxt)
        f.replace(f"%LATCH_{head}", f"%{latch}")
        f.block(after)

    def ser_local(self, tid: int, p: str, level: int, depth: int) -> None:
        """A value whose bytes are in the scratch area at *p*."""
        f = self.fn
        self._node()
        entry = self.table[tid]
        shape = entry.shape
        over, fine, done = f.label("budget"), f.label("in_budget"), f.label("ser_done")
        f.cbr(f.icmp("uge", f.load(self.posp, volatile=True), BUDGET), over, fine)
        f.block(over)
        self.put8(BUDGET_STATUS)
        f.br(done)
        f.block(fine)
        self.capture_nodes = getattr(self, "capture_nodes", 0) + 1
        if self.gen.defer and entry.size <= FIX_DATA and (self._leave_to_interpreter(entry) or (
                self.capture_nodes > CAPTURE_NODES) or (isinstance(shape, V.Struct) and
                self.capture_nodes + _flat_nodes(self.table, tid, CAPTURE_NODES) > CAPTURE_NODES)):
            # Collections with costly elements, channels and the like: in a snapshot the process is paused, so
            # goprobe's interpreter writes them from memory at once (the kernel code stays small to verify).
            self.defer(tid, p, entry.size, depth, f.load(self.posp, volatile=True))
        elif isinstance(shape, V.Scalar):
            self.put8(OK)
            self.copy_local(p, shape.size)
        elif isinstance(shape, V.String):
            self.string(p)
        elif isinstance(shape, V.Struct):
            self.put8(OK)
            for fl in shape.fields:
                self.ser_local(fl.type, f.gep(p, fl.offset), level, depth)
        elif isinstance(shape, V.Array):
            n = self._count(shape.length, shape.elem_size)
            if self._fast(shape.elem, n):
                self.put((8, OK), (32, n))
                self.scalars(shape.elem, p, n, n)
            else:
                n = self._afford(n, shape.elem, depth, level)
                self.put((8, OK), (32, n))
                self.loop(n, lambda i: self.ser_local(shape.elem, f.gep(p, f.mul(i, shape.elem_size)), level, depth))
        elif isinstance(shape, V.Slice):
            self.slice(shape, p, level, depth)
        elif isinstance(shape, V.Pointer):
            self.pointer(shape, f.load(p), level, depth)
        elif isinstance(shape, V.Interface):
            self.interface(shape, p, level, depth, tid)
        elif isinstance(shape, (V.SwissMap, V.ClassicMap)):
            self.map_value(shape, f.load(p), level, depth, tid, p)
        elif isinstance(shape, V.Chan):
            self.chan(shape, f.load(p), level, depth)
        elif isinstance(shape, V.Func):
            self.func_tid = tid
            self.func(f.load(p), level, depth)
        elif isinstance(shape, V.TypeParam) and self.gen.defer and entry.size <= FIX_DATA:
            # Its real type is in the frame's dictionary: goprobe's interpreter resolves it while paused.
            self.defer(tid, p, entry.size, depth, f.sub(f.load(self.posp, volatile=True), 0))
        elif isinstance(shape, V.TypeParam):
            self.type_param(shape, entry, p, level, depth)
        else:  # Opaque: its raw bytes (none for a degraded type)
            self.put((8, OK), (32, shape.size))
            if shape.size:
                self.copy_local(p, shape.size)
        f.br(done)
        f.block(done)

    def type_param(self, shape: V.TypeParam, entry: V.TypeEntry, p: str, level: int, depth: int) -> None:
        """A type parameter's value, written as the type in entry ``index`` of the frame's dictionary when that is
        one of the table's types of its size (compared in the kernel); else in its shape's layout."""
        f = self.fn
        # Candidates: the table's types that fit the shape's name (go.shape.*uint8 stands for any pointer type,
        # go.shape.int for int and the types defined on it...). Their code is cut by the capture's budget inside.
        # The program's own instantiations (read from its dictionaries) come first: the budget may not reach the
        # rest.
        pattern, size = _shape_pattern(entry.name), entry.size
        args = [(self.table[tid].runtime_type, tid) for tid in shape.args if self.table[tid].runtime_type is not None]
        cands = list(dict.fromkeys(args + [
            (rt, tid) for rt, tid in sorted(self.table.by_runtime_type.items())
            if self.table[tid].size == size and pattern is not None and pattern.fullmatch(self.table[tid].name)]))
        cands = cands[:MAX_TYPE_ARGUMENTS]
        done = f.label("tparam_done")
        if cands:
            tmp = f.gep(self.scratch, TMP_OFF)
            res = f.alloca("i64")
            f.store(res, -1)
            dictionary = f.load(f.gep(self.scratch, DICT_OFF), volatile=True)
            some, known = f.label("tparam_dict"), f.label("tparam_known")
            f.cbr(f.icmp("eq", dictionary, 0), known, some)
            f.block(some)
            bad = self.read_user(tmp, 8, f.add(dictionary, 8 * shape.index))
            f.store(res, f.select(bad, -1, f.sub(f.load(tmp), self.types_base)))
            f.br(known)
            f.block(known)
            rt = f.load(res)
            for off, tid in cands:
                hit, nxt = f.label("targ"), f.label("targ_next")
                f.cbr(f.icmp("eq", rt, off), hit, nxt)
                f.block(hit)
                self.put((8, OK), (32, tid))
                self.ser_local(tid, p, level, depth)
                f.br(done)
                f.block(nxt)
        self.put((8, OK), (32, UNKNOWN_TYPE))
        self.ser_local(shape.shape, p, level, depth)
        f.br(done)
        f.block(done)

    def _leave_to_interpreter(self, entry: V.TypeEntry) -> bool:
        sh = entry.shape
        if entry.size > FIX_DATA:
            return False
        if isinstance(sh, V.Chan):
            return True
        if isinstance(sh, V.Slice):
            c = self._count(1 << 40, sh.elem_size) if sh.elem_size else self.limits.min_elements
            return c > CHEAP_COUNT or _cost(self.table, sh.elem, 1) is None
        if isinstance(sh, V.Array):
            n = self._count(sh.length, sh.elem_size)
            return n > CHEAP_COUNT or _cost(self.table, sh.elem, 1) is None
        if isinstance(sh, (V.SwissMap, V.ClassicMap)):
            return True  # walking even a small map multiplies the verifier's work by its 8 slots
        return False

    def copy_local(self, src: str, size: int) -> None:
        f = self.fn
        dst, pos = self.out_ptr()
        k = 0
        while k < size:
            n = 8 if size - k >= 8 else 4 if size - k >= 4 else 2 if size - k >= 2 else 1
            f.store(f.gep(dst, k), f.load(f.gep(src, k), 8 * n), 8 * n)
            k += n
        f.store(self.posp, f.add(pos, size))

    def string(self, p: str) -> None:
        f = self.fn
        ptr, length = f.load(p), f.load(f.gep(p, 8))
        self.put((8, OK), (64, ptr), (64, length))
        limit = min(self.limits.string_bytes, MAX_STRING)
        sane = f.icmp("ult", length, 1 << 40)
        n = f.select(sane, length, 0)
        n = f.barrier(f.select(f.icmp("ugt", n, limit), limit, n))
        n = f.and_(n, 8191)
        dst, pos = self.out_ptr()
        empty, some, done = f.label("str_empty"), f.label("str_some"), f.label("str_done")
        f.cbr(f.icmp("eq", n, 0), empty, some)
        f.block(empty)
        self.put32(0)
        f.br(done)
        f.block(some)
        bad = self.read_user(f.gep(dst, 4), n, ptr)
        no, yes = f.label("str_unreadable"), f.label("str_read")
        f.cbr(bad, no, yes)
        f.block(no)
        self.put32(NO_PAYLOAD)
        f.br(done)
        f.block(yes)
        f.store(dst, n, 32)
        f.store(self.posp, f.add(pos, f.add(n, 4)))
        f.br(done)
        f.block(done)

    def slice(self, shape: V.Slice, p: str, level: int, depth: int) -> None:
        f = self.fn
        ptr, length, cap = f.load(p), f.load(f.gep(p, 8)), f.load(f.gep(p, 16))
        self.put((8, OK), (64, ptr), (64, length), (64, cap))
        size = shape.elem_size
        c = self._count(1 << 40, size) if size else self.limits.min_elements
        fast = self._fast(shape.elem, c)
        if not fast:
            c = self._afford(c, shape.elem, depth, level + 1)
        sane = f.icmp("ult", length, 1 << 40)
        n = f.select(sane, length, 0)
        n = f.barrier(f.select(f.icmp("ugt", n, c), c, n))
        if size and c * size <= STAGE_SIZE and level < STAGE_LEVELS:
            # One read for the captured elements, as the interpreter does.
            stage = f.gep(self.scratch, STAGE_OFF + level * STAGE_SIZE)
            nbytes = f.and_(f.barrier(f.mul(n, size)), _mask_for(c * size))
            bad = self.read_user(stage, nbytes, ptr)
            bad = f.op(f"and i1 {bad}, {f.icmp('ne', n, 0)}")
            no, yes, done = f.label("elems_unreadable"), f.label("elems"), f.label("elems_done")
            f.cbr(bad, no, yes)
            f.block(no)
            self.put32(NO_PAYLOAD)
            f.br(done)
            f.block(yes)
            self.put32(n)
            if fast:
                self.scalars(shape.elem, stage, n, c)
            else:
                self.loop(n, lambda i: self.ser_local(shape.elem, f.gep(stage, f.mul(i, size)), level + 1, depth), c)
            f.br(done)
            f.block(done)
        else:
            self.put32(n)
            self.loop(n, lambda i: self.value_at(shape.elem, f.add(ptr, f.mul(i, size)), level, depth), c)

    def pointer(self, shape: V.Pointer, addr: str, level: int, depth: int) -> None:
        f = self.fn
        self.put((8, OK), (64, addr))
        done = f.label("ptr_done")
        nil, nonnil = f.label("ptr_nil"), f.label("ptr_some")
        f.cbr(f.icmp("eq", addr, 0), nil, nonnil)
        f.block(nil)
        self.put8(PTR_NIL)
        f.br(done)
        f.block(nonnil)
        if shape.elem is None:
            self.put8(PTR_OPAQUE)
            f.br(done)
            f.block(done)
            return
        seen, fresh = f.label("ptr_seen"), f.label("ptr_fresh")
        f.cbr(self.seen(addr), seen, fresh)
        f.block(seen)
        self.put8(PTR_SEEN)
        f.br(done)
        f.block(fresh)
        # The first pointer of a capture is followed when its pointee fits at least written shallowly (inside,
        # each part is then weighed against what is left); deeper ones only when they fit whole, which keeps
        # the verifier's work on large requests in bounds.
        need = (self._est_least(shape.elem, level + 1) if depth == 0
                else self._est(shape.elem, self.limits.pointer_depth, level + 1))
        if depth >= self.limits.pointer_depth or self.gen._nodes > MAX_NODES // 2 or not self._fits(need):
            if depth < self.limits.pointer_depth and self.gen._nodes <= MAX_NODES // 2:
                self.budget_cut("pointers not followed", self.table[shape.elem].name)
            self.put8(PTR_DEPTH)
        else:
            self.remember(addr)
            self.put8(PTR_FOLLOWED)
            self.value_at(shape.elem, addr, level, depth + 1)
        f.br(done)
        f.block(done)

    def _seen_key(self, addr: str) -> str:
        f = self.fn
        key = f.shared_alloca("seen_key")
        f.store(key, f.load(f.gep(self.scratch, SEEN_COUNT_OFF), volatile=True))
        f.store(f.gep(key, 8), addr)
        return key

    def seen(self, addr: str) -> str:
        """Whether *addr* was followed before in this value: (value number, address) keys in an LRU hash,
        so nothing needs clearing between values and no loop needs verifying."""
        f = self.fn
        m = f.map_ptr(self.gen.maps.seen)
        hit = f.op(f"call ptr inttoptr (i64 1 to ptr)(ptr {m}, ptr {self._seen_key(addr)})")
        return f.op(f"icmp ne ptr {hit}, null")

    def remember(self, addr: str) -> None:
        f = self.fn
        m = f.map_ptr(self.gen.maps.seen)
        one = f.shared_alloca("one", "i64")
        f.store(one, 1)
        f.helper("map_update_elem", f"ptr {m}", f"ptr {self._seen_key(addr)}", f"ptr {one}", "i64 0")

    def interface(self, shape: V.Interface, p: str, level: int, depth: int, tid_self: int) -> None:
        f = self.fn
        start = f.load(self.posp, volatile=True)
        word0, word1 = f.load(p), f.load(f.gep(p, 8))
        typ = word0
        if not shape.empty:
            tmp = f.gep(self.scratch, TMP_OFF)
            res = f.alloca("i64")
            f.store(res, 0)
            some, done = f.label("itab"), f.label("itab_done")
            f.cbr(f.icmp("eq", word0, 0), done, some)
            f.block(some)
            bad = self.read_user(tmp, 8, f.add(word0, self.gen.plan.interfaces.itab_type_off))
            f.store(res, f.select(bad, 0, f.load(tmp)))
            f.br(done)
            f.block(done)
            typ = f.load(res)
        self.put((8, OK), (64, typ), (64, word1))
        done = f.label("iface_done")
        nil, nonnil = f.label("iface_nil"), f.label("iface_some")
        f.cbr(f.icmp("eq", typ, 0), nil, nonnil)
        f.block(nil)
        self.put((32, UNKNOWN_TYPE), (8, 0))
        f.br(done)
        f.block(nonnil)
        rt = f.sub(typ, self.types_base)
        cands, spent = [], 0
        for off, tid in self._candidates(depth):
            spent += self._est(tid, depth, level + 1) if self.vleft is not None else 0
            if not self._fits(spent):
                self.budget_cut("interface values of some dynamic types named, not decoded")
                break  # the rest are named from their type descriptor, not decoded
            cands.append((off, tid))
        for off, tid in cands:
            hit, nxt = f.label("dyn"), f.label("dyn_next")
            f.cbr(f.icmp("eq", rt, off), hit, nxt)
            f.block(hit)
            self.put32(tid)
            if self.table[tid].direct_iface:
                stage = f.gep(self.scratch, STAGE_OFF + min(level, STAGE_LEVELS - 1) * STAGE_SIZE)
                f.store(stage, word1)
                for k in range(8, self.table[tid].size, 8):
                    f.store(f.gep(stage, k), 0)
                self.ser_local(tid, stage, level + 1, depth)
            else:
                self.value_at(tid, word1, level, depth)
            f.br(done)
            f.block(nxt)
        if self.gen.defer:
            # Not among the types decoded here: goprobe's interpreter writes it while the process is paused.
            self.defer(tid_self, p, 16, depth, start)
        else:
            # Not among the types the program knows: the decoder names it from the runtime type's address.
            self.put((32, UNKNOWN_TYPE), (8, 0))
        f.br(done)
        f.block(done)

    def defer(self, tid: int, p: str, size: int, depth: int, start: str, root: int | None = None) -> None:
        """Replace the value begun at *start* by a marker, and send a fix-up (which g, where, type id, the
        value's bytes) for goprobe to fill in from the paused process. *root*: for a path fix-up, the type of
        the path's root (what *p* holds)."""
        self.fixup_record(tid, p, size, depth, start, self.gen.maps.fixups)

    def fixup_record(self, tid: int, p: str, size: int, depth: int, start: str, ring: int) -> None:
        """``defer``'s marker and fix-up record, sent to *ring*."""
        f = self.fn
        f.store(self.posp, start)
        marker = f.load(self.posp, volatile=True)
        self.put((8, DEFERRED), (32, 0))
        fix = f.gep(self.scratch, FIX_OFF)
        f.store(fix, f.load(f.gep(self.scratch, GP_OFF), volatile=True))
        f.store(f.gep(fix, 8), f.load(f.gep(self.scratch, CAPLEN_OFF), volatile=True), 32)
        f.store(f.gep(fix, 12), marker, 32)
        f.store(f.gep(fix, 16), tid, 32)
        f.store(f.gep(fix, 20), size, 32)  # BY_ADDRESS: data holds the value's address
        f.store(f.gep(fix, 24), f.load(f.gep(self.scratch, DICT_OFF), volatile=True))
        f.store(f.gep(fix, 32), depth)
        f.helper("probe_read_kernel", f"ptr {f.gep(fix, 40)}", f"i64 {8 if size == BY_ADDRESS else min(size, FIX_DATA)}",
                 f"ptr {p}")
        m = f.map_ptr(ring)
        f.helper("ringbuf_output", f"ptr {m}", f"ptr {fix}", f"i64 {FIXUP.size}", "i64 0")

    def _candidates(self, depth: int) -> list[tuple[int, int]]:
        """Dynamic types an interface is decoded as in the kernel: the table's runtime-typed entries whose
        serialising code is small, cheapest first (others are named from their type descriptor, not shown)."""
        if depth >= self.limits.pointer_depth:
            return []
        cache = self.gen.__dict__.setdefault("_candidate_cache", None)
        if cache is None:
            costs = []
            for rt, tid in self.table.by_runtime_type.items():
                c = _cost(self.table, tid, 3)
                if c is not None and c <= CANDIDATE_COST:
                    costs.append((c, tid, rt))
            costs.sort()
            # With deferral (snapshots) only the cheapest few are worth their code: the rest are written by the
            # interpreter during the same pause.
            keep = DEFERRED_CANDIDATES if self.gen.defer else MAX_CANDIDATES
            cache = self.gen._candidate_cache = [(rt, tid) for _c, tid, rt in costs[:keep]]
        return cache

    def map_value(self, shape, m: str, level: int, depth: int, tid: int, p: str) -> None:
        """Maps: small ones are walked in the kernel (a swiss map without a directory: one group of 8 slots; a
        classic map with one bucket and its overflow chain); larger ones give their count with no entries,
        which the decoder marks as cut."""
        f = self.fn
        start = f.load(self.posp, volatile=True)
        self.put((8, OK), (64, m))
        done = f.label("map_done")
        some = f.label("map_some")
        f.cbr(f.icmp("eq", m, 0), done, some)
        f.block(some)
        lvl = min(level, STAGE_LEVELS - 1)
        hdr = self._read_header(shape, m, level, done)
        if isinstance(shape, V.SwissMap):
            count = f.load(f.gep(hdr, shape.used_off))
            dir_ptr, dir_len = f.load(f.gep(hdr, shape.dir_ptr_off)), f.load(f.gep(hdr, shape.dir_len_off))
            small = f.icmp("eq", dir_len, 0)
            first = dir_ptr
        else:
            count = f.load(f.gep(hdr, shape.count_off))
            count = f.select(f.icmp("slt", count, 0), 0, count)
            b, old = f.load(f.gep(hdr, shape.b_off), 8), f.load(f.gep(hdr, shape.oldbuckets_off))
            small = f.op(f"and i1 {f.icmp('eq', b, 0)}, {f.icmp('eq', old, 0)}")
            first = f.load(f.gep(hdr, shape.buckets_off))
        self.put((8, 0), (64, count))
        n_at = f.load(self.posp, volatile=True)
        self.put32(0)
        written = f.gep(self.scratch, MAPN_OFF + 8 * lvl)
        f.store(written, 0)
        walk, end = f.label("map_walk"), f.label("map_end")
        if self.gen.defer:
            large = f.label("map_large")
            f.cbr(small, walk, large)
            f.block(large)
            self.defer(tid, p, 8, depth, start)
            f.br(done)
        elif self._fits((8 if isinstance(shape, V.SwissMap) else 8 * MAX_SMALL_CHAIN) * (
                self._est(shape.key, depth, level + 1) + self._est(shape.elem, depth, level + 1))):
            f.cbr(small, walk, end)
        else:  # walking it would take more than the capture's budget: the count only, like a large map
            self.budget_cut("map entries not walked (length only)", self.table[tid].name)
            f.br(end)
            walk = None
        if walk is not None:
            f.block(walk)
            if isinstance(shape, V.SwissMap):
                self._swiss_group(shape, first, written, level, depth)
            else:
                cur = f.gep(self.scratch, MAPN_OFF + 8 * STAGE_LEVELS)  # the bucket being walked
                f.store(cur, first)

                def bucket(_i: str) -> None:
                    b_addr = f.load(cur, volatile=True)
                    go, stop = f.label("bucket"), f.label("bucket_done")
                    f.cbr(f.icmp("ne", b_addr, 0), go, stop)
                    f.block(go)
                    self._classic_bucket(shape, b_addr, written, level, depth)
                    tmp = f.gep(self.scratch, TMP_OFF)
                    bad_o = self.read_user(tmp, 8, f.add(b_addr, shape.overflow_off))
                    f.store(cur, f.select(bad_o, 0, f.load(tmp)))
                    f.br(stop)
                    f.block(stop)

                self.loop(MAX_SMALL_CHAIN, bucket)
            f.br(end)
        f.block(end)
        at = f.and_(f.barrier(n_at), HALF - 1)
        f.store(f.gep(self.scratch, at), f.load(written, volatile=True), 32)
        f.br(done)
        f.block(done)

    def _entry(self, shape, key_addr: str, elem_addr: str, written: str, level: int, depth: int) -> None:
        f = self.fn
        room, full = f.label("entry"), f.label("entry_skip")
        n = f.load(written, volatile=True)
        f.cbr(f.icmp("ult", n, self.limits.map_entries), room, full)
        f.block(room)
        if shape.key_indirect:
            key_addr = self._slot_pointer(key_addr)
        if shape.elem_indirect:
            elem_addr = self._slot_pointer(elem_addr)
        self.value_at(shape.key, key_addr, level + 1, depth)
        self.value_at(shape.elem, elem_addr, level + 1, depth)
        f.store(written, f.add(f.load(written, volatile=True), 1))
        f.br(full)
        f.block(full)

    def _slot_pointer(self, addr: str) -> str:
        """The pointer a map slot holds for a key or element stored indirectly (0, read as unreadable, when
        the slot cannot be read)."""
        f = self.fn
        tmp = f.gep(self.scratch, TMP_OFF + 56)  # not live across an entry (the marks are at +32)
        bad = self.read_user(tmp, 8, addr)
        return f.select(bad, 0, f.load(tmp, volatile=True))

    def _swiss_group(self, shape: V.SwissMap, group: str, written: str, level: int, depth: int) -> None:
        f = self.fn

        def slot(i: str, c: str) -> tuple[str, str, str]:  # a control byte with the high bit clear: full
            s_addr = f.add(f.add(group, shape.slots_off), f.mul(i, shape.slot_size))
            return f.icmp("eq", f.and_(c, 0x80), 0), f.add(s_addr, shape.key_off), f.add(s_addr, shape.elem_off)

        self._eight_slots(shape, f.add(group, shape.ctrl_off), slot, written, level, depth)

    def _classic_bucket(self, shape: V.ClassicMap, b: str, written: str, level: int, depth: int) -> None:
        f = self.fn

        ks, es = V.slot_footprints(shape)

        def slot(i: str, t: str) -> tuple[str, str, str]:  # tophash 0..4: empty or evacuated
            return (f.icmp("uge", t, 5), f.add(f.add(b, shape.keys_off), f.mul(i, ks)),
                    f.add(f.add(b, shape.elems_off), f.mul(i, es)))

        self._eight_slots(shape, f.add(b, shape.tophash_off), slot, written, level, depth)

    def _eight_slots(self, shape, marks_addr: str, slot, written: str, level: int, depth: int) -> None:
        """A swiss group or a classic bucket: 8 mark bytes at *marks_addr*, then the entries they mark live."""
        f = self.fn
        marks = f.gep(self.scratch, TMP_OFF + 32)
        bad = self.read_user(marks, 8, marks_addr)
        ok, skip = f.label("marks"), f.label("marks_bad")
        f.cbr(bad, skip, ok)
        f.block(ok)

        def one(i: str) -> None:
            live, key, elem = slot(i, f.load(f.gep(marks, f.and_(f.barrier(i), 7)), 8))
            full, empty = f.label("slot_full"), f.label("slot_next")
            f.cbr(live, full, empty)
            f.block(full)
            self._entry(shape, key, elem, written, level, depth)
            f.br(empty)
            f.block(empty)

        self.loop(8, one)
        f.br(skip)
        f.block(skip)

    def chan(self, shape: V.Chan, h: str, level: int, depth: int) -> None:
        f = self.fn
        self.put((8, OK), (64, h))
        done, some = f.label("chan_done"), f.label("chan_some")
        f.cbr(f.icmp("eq", h, 0), done, some)
        f.block(some)
        stage = self._read_header(shape, h, level, done)
        qcount, cap = f.load(f.gep(stage, shape.qcount_off)), f.load(f.gep(stage, shape.dataqsiz_off))
        buf, recvx = f.load(f.gep(stage, shape.buf_off)), f.load(f.gep(stage, shape.recvx_off))
        closed = f.load(f.gep(stage, shape.closed_off), 32)
        recvq, sendq = f.load(f.gep(stage, shape.recvq_first_off)), f.load(f.gep(stage, shape.sendq_first_off))
        self.put((8, 0), (64, qcount), (64, cap), (8, f.op(f"zext i1 {f.icmp('ne', closed, 0)} to i64")))
        c = self._count(1 << 40, shape.elem_size) if shape.elem_size else self.limits.min_elements
        c = self._afford(c, shape.elem, depth, level + 1)
        queued = f.select(f.icmp("ult", qcount, cap), qcount, cap)
        n = f.barrier(f.select(f.icmp("ugt", queued, c), c, queued))
        self.put32(n)
        safe_cap = f.select(f.icmp("eq", cap, 0), 1, cap)

        def item(i: str) -> None:
            idx = f.op(f"urem i64 {f.add(recvx, i)}, {safe_cap}")
            self.value_at(shape.elem, f.add(buf, f.mul(idx, shape.elem_size)), level + 1, depth)

        self.loop(n, item, c)
        self.put((32, self.queue_len(recvq, shape.sudog_next_off)), (32, self.queue_len(sendq, shape.sudog_next_off)))
        f.br(done)
        f.block(done)

    def queue_len(self, first: str, next_off: int) -> str:
        f = self.fn
        cur, n = f.alloca("i64"), f.alloca("i64")
        f.store(cur, first)
        f.store(n, 0)
        tmp = f.gep(self.scratch, TMP_OFF)

        def body(_i: str) -> None:
            c = f.load(cur)
            some, done = f.label("sudog"), f.label("sudog_done")
            f.cbr(f.icmp("ne", c, 0), some, done)
            f.block(some)
            f.store(n, f.add(f.load(n), 1))
            bad = self.read_user(tmp, 8, f.add(c, next_off))
            f.store(cur, f.select(bad, 0, f.load(tmp)))
            f.br(done)
            f.block(done)

        self.loop(MAX_CHAIN, body)
        return f.load(n)

    def func(self, fv: str, level: int, depth: int) -> None:
        f = self.fn
        tmp = f.gep(self.scratch, TMP_OFF)
        res = f.alloca("i64")
        f.store(res, 0)
        some, done = f.label("fv"), f.label("fv_done")
        f.cbr(f.icmp("eq", fv, 0), done, some)
        f.block(some)
        bad = self.read_user(tmp, 8, fv)
        f.store(res, f.select(bad, 0, f.load(tmp)))
        f.br(done)
        f.block(done)
        pc = f.load(res)
        start = f.load(self.posp, volatile=True)
        self.put((8, OK), (64, fv), (64, pc))
        end = f.label("closure_done")
        if self.gen.defer and self.table.closures:
            # A closure's captured variables: left to the interpreter (their layouts vary too much to inline).
            is_closure = "false"
            for c in self.table.closures:
                is_closure = f.op(f"or i1 {is_closure}, {f.icmp('eq', pc, c.entry)}")
            hit, plain = f.label("closure"), f.label("plain_func")
            f.cbr(f.op(f"and i1 {is_closure}, {f.icmp('ne', fv, 0)}"), hit, plain)
            f.block(hit)
            fvp = f.gep(self.scratch, TMP_OFF + 40)
            f.store(fvp, fv)
            self.defer(self.func_tid, fvp, 8, depth, start)
            f.br(end)
            f.block(plain)
            self.put32(UNKNOWN_TYPE)
            f.br(end)
            f.block(end)
            return
        for c in self.table.closures[:16] if depth < self.limits.pointer_depth else ():
            hit, nxt = f.label("closure"), f.label("closure_next")
            f.cbr(f.op(f"and i1 {f.icmp('eq', pc, c.entry)}, {f.icmp('ne', fv, 0)}"), hit, nxt)
            f.block(hit)
            self.put32(c.context)
            self.value_at(c.context, fv, level, depth)
            f.br(end)
            f.block(nxt)
        self.put32(UNKNOWN_TYPE)
        f.br(end)
        f.block(end)


def _shape_pattern(name: str):
    """A regular expression for the names of the types a shaped type stands for: each ``go.shape.*X`` is any
    pointer type, each other ``go.shape.X`` any type (the size check narrows it)."""
    if "go.shape." not in name:
        return None
    out, pos = [], 0
    for m in re.finditer(r"go\.shape\.(\*?)[\w.]+(\[[^\]]*\])?", name):
        out.append(re.escape(name[pos:m.start()]))
        out.append(r"\*.+" if m.group(1) else r".+")
        pos = m.end()
    out.append(re.escape(name[pos:]))
    return re.compile("".join(out))


def _first_unreadable_piece(loc: E.Location) -> str | None:
    """Why a location cannot be read without the frame's registers (the first piece that needs them)."""
    for p in loc:
        if p.kind == E.UNAVAILABLE:
            return p.reason or "optimised away at this PC"
        if p.kind == E.REGISTER:
            return "held in a register, which Go does not preserve across calls"
        if p.kind == E.REGISTER_MEMORY:
            return "address held in a register that is not preserved"
        if p.kind not in (E.CFA_MEMORY, E.ADDRESS_MEMORY, E.IMPLICIT):
            return f"unsupported location {p.kind}"
    return None


CANDIDATE_COST = 24  # shape nodes of one dynamic type's serialiser
MAX_CANDIDATES = 64  # dynamic types dispatched per interface value
DEFERRED_CANDIDATES = 4  # the same when other types can be left to the interpreter
CAPTURE_NODES = 150  # snapshots: past this much code for one capture, the rest is left to the interpreter
CHEAP_COUNT = 8  # snapshots: collections of more captured elements are left to the interpreter


TOO_MUCH_CODE = ("the captured values need too much eBPF code; capture fewer or smaller values (e.g. a field "
                 "instead of a whole struct), or lower pointer_depth")
TOO_LARGE_VALUE = ("too much eBPF code to write this value in the kernel: capture a field of it instead (or "
                   "lower pointer_depth)")
ROOT_DROPPED = ("too complex for the eBPF program (its code exceeded BPF's stack limit); "
                "take the snapshot with --backend interp to read it")


def _flat_nodes(table: V.TypeTable, tid: int, limit: int) -> int:
    """Shape nodes of *tid* with its nested structs and arrays spelled out and nothing followed (a pointer,
    collection or interface counts one); counting stops past *limit*."""
    total, todo = 0, [tid]
    while todo and total <= limit:
        sh = table[todo.pop()].shape
        total += 1
        if isinstance(sh, V.Struct):
            todo.extend(fl.type for fl in sh.fields)
        elif isinstance(sh, V.Array) and sh.length:
            total += (sh.length - 1) * _flat_nodes(table, sh.elem, limit)
            todo.append(sh.elem)
    return total


def _cost(table: V.TypeTable, tid: int, budget: int) -> int | None:
    """Shape nodes needed to serialise *tid* without loops (collections), interfaces, maps, channels or deep
    pointers; None if it has those (the verifier walks every candidate's code for every interface value)."""
    sh = table[tid].shape
    if isinstance(sh, (V.Scalar, V.String, V.Func, V.Opaque)):
        return 1
    if isinstance(sh, V.Struct):
        total = 1
        for fl in sh.fields:
            c = _cost(table, fl.type, budget)
            if c is None:
                return None
            total += c
        return total
    if isinstance(sh, V.Pointer):
        if sh.elem is None:
            return 1
        if budget <= 0:
            return None
        c = _cost(table, sh.elem, budget - 1)
        return None if c is None else 2 + c
    return None


def _mask_for(n: int) -> int:
    m = 1
    while m <= n:
        m <<= 1
    return m - 1


def _covers(c: VariableCapture, pc: int) -> bool:
    return c.path is not None and c.path.root == "" or any(r.low <= pc < r.high for r in c.locations)


def capture_groups(captures) -> list[tuple[str, list[VariableCapture]]]:
    out: dict[str, list[VariableCapture]] = {}
    for c in captures:
        out.setdefault(c.label, []).append(c)
    return list(out.items())
