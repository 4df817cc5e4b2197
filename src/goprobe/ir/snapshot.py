"""IR of a snapshot: which goroutine fields to read, which frames to recognise, and what to capture in them.

A :class:`SnapshotPlan` is compiled once per (binary, request) and is immutable. It carries every constant a
backend needs: runtime-structure offsets, the PC ranges of requested functions (inlined copies included),
each captured variable's per-PC-range location, and the value shapes (``goprobe.ir.values``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from goprobe.dwarf.expressions import ADDRESS_MEMORY, repair_pieces
from goprobe.dwarf.functions import Variable
from goprobe.dwarf.lists import LocationRange
from goprobe.errors import ExpressionError
from goprobe import expr as X
from goprobe.ir.access import AccessCompiler, AccessPath
from goprobe.ir.liveness import judge_for
from goprobe.ir.location_checks import check_variable, narrowed
from goprobe.ir.values import InterfaceLayout, TypeId, TypeTable, TypeTableBuilder
from goprobe.source import names_in_source

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary

# Go's goroutine states (runtime/runtime2.go), by value.
G_STATUS = {0: "idle", 1: "runnable", 2: "running", 3: "syscall", 4: "waiting", 5: "moribund", 6: "dead",
            7: "enqueue", 8: "copystack", 9: "preempted", 10: "leaked"}
G_SCAN = 0x1000
G_DEAD = 6


@attrs.frozen(slots=True)
class GoroutineLayout:
    """Offsets inside runtime.g / runtime.m and the addresses of the goroutine list."""

    g_size: int
    goid: int
    status: int
    status_size: int
    sched_pc: int
    sched_sp: int
    sched_bp: int
    syscall_sp: int
    syscall_pc: int
    stack_lo: int
    stack_hi: int
    m: int
    waitreason: int
    m_procid: int
    m_curg: int
    allgs: int
    allglen: int
    # What Go's own goroutine dumps show besides the stack: who created it (the go statement's PC and the
    # creator's goid), since when it waits (nanotime, set by the garbage collector), the thread it is locked to
    gopc: int = 0
    parent_goid: int = 0
    waitsince: int = 0
    lockedm: int = 0
    labels: int = 0  # g.labels: the goroutine's pprof label set (a *runtime/pprof.labelMap), 0 if none

    @classmethod
    def from_binary(cls, b: GoBinary) -> GoroutineLayout:
        L = b.runtime
        g, m = L["g"], L["m"]
        return cls(g.size, g.offset("goid"), g.offset("atomicstatus"), L.g_status_size, g.offset("sched.pc"),
                   g.offset("sched.sp"), g.offset("sched.bp"), g.offset("syscallsp"), g.offset("syscallpc"),
                   g.offset("stack.lo"), g.offset("stack.hi"), g.offset("m"), g.offset("waitreason"),
                   m.offset("procid"), m.offset("curg"), L.allgs, L.allglen, g.offset("gopc"),
                   g.offset("parentGoid"), g.offset("waitsince"), g.offset("lockedm"),
                   g.offset("labels") if g.has("labels") else 0)

    def extras(self, g: bytes) -> tuple[int, int, int, bool, int]:
        """(creating PC, creator's goid, wait-since nanotime, locked to a thread, pprof labels pointer) from a
        copy of a g."""
        u64 = lambda off: int.from_bytes(g[off:off + 8], "little")  # noqa: E731
        labels = u64(self.labels) if self.labels else 0
        return u64(self.gopc), u64(self.parent_goid), u64(self.waitsince), u64(self.lockedm) != 0, labels


@attrs.frozen(slots=True)
class VariableCapture:
    """One requested expression of a frame: its root variable's location per PC range (none for a package
    variable), the access path from that root, and the result's value shape."""

    label: str
    locations: tuple[LocationRange, ...]
    type: TypeId | None  # the result's type; None: not capturable here (reported with `missing`)
    escaped: bool = False
    missing: str | None = None
    path: AccessPath | None = None
    root_type: TypeId | None = None
    # Where a caller frame (stopped at a call, looked up at its return address minus one) finds the root, with
    # the runtime's liveness maps applied (goprobe.ir.liveness); None: the same as ``locations``.
    caller_locations: tuple[LocationRange, ...] | None = None

    def locations_for(self, caller: bool) -> tuple[LocationRange, ...]:
        return self.caller_locations if caller and self.caller_locations is not None else self.locations


@attrs.frozen(slots=True)
class FramePlan:
    """Frames of one function (out-of-line code, or one inlined copy) whose PCs fall in ``ranges``."""

    function: str
    ranges: tuple[tuple[int, int], ...]
    inlined: bool
    captures: tuple[VariableCapture, ...]
    dictionary: tuple[LocationRange, ...] = ()  # shaped generic code: where ``.dict`` (a pointer) lives


# Unwinding ends in these functions: the bottom of every goroutine's stack.
STOP_FUNCTIONS = ("runtime.goexit", "runtime.mstart", "runtime.mstart0", "runtime.rt0_go",
                  "runtime.systemstack_switch")

UnwindRow = tuple[int, int, int]  # (first PC, CFA register, CFA offset)


@attrs.frozen(slots=True)
class SnapshotPlan:
    """Everything a backend needs to take a snapshot; it never consults the binary's DWARF itself."""

    goroutines: GoroutineLayout
    frames: tuple[FramePlan, ...]
    types: TypeTable
    interfaces: InterfaceLayout
    unwind: tuple[tuple[int, int, tuple[UnwindRow, ...]], ...]  # per function: (low, high, rows)
    stops: tuple[tuple[int, int], ...]  # PC ranges where unwinding ends
    max_frames: int
    max_goroutines: int
    goroutine_filter: tuple[tuple[int, int], ...] | None  # PC ranges of the filter function
    labels_type: TypeId | None = None  # runtime/pprof.labelMap, what g.labels points to (None: not linked in)


def compile_snapshot(b: GoBinary, functions: Mapping[str, Sequence[str]], *, max_frames: int = 512,
                     max_goroutines: int = 100_000, goroutine_filter: str | None = None) -> SnapshotPlan:
    """Compile "capture these expressions in every frame of these functions" for *b*.

    Expressions are Go syntax over the function's parameters and locals and package variables
    (``req.URL.Path``, ``len(s.conns)``, ``*p``, ``m["k"]``, ``x.(*T)``, ``main.config``). Errors name the
    expression: :class:`~goprobe.errors.ExpressionSyntaxError`, :class:`~goprobe.errors.ExpressionError`
    (listing the variables that exist), :class:`~goprobe.errors.UnknownFunctionError`.
    """
    tb = TypeTableBuilder(b)
    compiler = AccessCompiler(b, tb)
    plans: list[FramePlan] = []
    for fname, texts in functions.items():
        outlined = b.functions(fname)
        copies = b.inlined_copies(fname) if "[" not in fname or "[...]" in fname else []
        if not outlined and not copies:
            b.function(fname)  # raises UnknownFunctionError with suggestions
        parsed = [(t, X.parse(t)) for t in texts]
        tb.add_type_arguments(fname)
        copies_vars = [(fn.name, False, fn.variables) for fn in outlined] + [
            (fname, True, call.variables) for _caller, call in copies]
        # Check every expression against at least one copy, so a typo fails at compile time. A name that the
        # function's source has but this build's debug info does not (the optimiser dropped it) is no typo:
        # its captures are unavailable, with that reason.
        dropped: dict[str, str] = {}
        for text, e in parsed:
            errors = []
            for _name, _inl, variables in copies_vars:
                try:
                    compiler.compile(text, e, _frame_types(b, variables))
                    break
                except ExpressionError as exc:
                    errors.append(exc)
            else:
                known = {v.name for _n, _i, variables in copies_vars for v in variables}
                absent = sorted(n for n in X.identifiers(e) if n not in known)
                if absent and copies_vars and names_in_source(b, fname, absent):
                    dropped[text] = NOT_IN_DEBUG_INFO
                    continue
                raise errors[0]
        for name, inlined, variables in copies_vars:
            ranges = next(fn.ranges for fn in outlined if fn.name == name) if not inlined else None
            if inlined:
                ranges = next(call.ranges for _c, call in copies if call.variables is variables)
            tb.add_type_arguments(name)
            plans.append(FramePlan(name, ranges, inlined,
                                   compile_captures(b, tb, compiler, variables, parsed, dropped),
                                   dictionary_locations(variables)))
    tb.add_interface_candidates()
    tb.add_closures_if_funcs()
    gfilter = None
    if goroutine_filter:
        fns = b.functions(goroutine_filter) or [b.function(goroutine_filter)]
        gfilter = tuple(r for fn in fns for r in fn.ranges) + tuple(
            r for _c, call in b.inlined_copies(goroutine_filter) for r in call.ranges)
    from goprobe.ir.verify import verify

    labels = _labels_type(b, tb)
    return verify(SnapshotPlan(GoroutineLayout.from_binary(b), tuple(plans), tb.build(),
                               InterfaceLayout.from_binary(b), unwind_table(b), _stop_ranges(b), max_frames,
                               max_goroutines, gfilter, labels))


def compile_stripped(sb, functions: Mapping[str, Sequence[str]], *, max_frames: int = 512,
                     max_goroutines: int = 100_000, goroutine_filter: str | None = None) -> SnapshotPlan:
    """A bare plan for a binary without DWARF (``goprobe.dwarf.stripped.StrippedBinary``): every goroutine's
    stack from the pclntab; each requested expression is unavailable, saying why (a function that the binary
    does not have is still an error, with suggestions)."""
    from goprobe.dwarf.stripped import NO_DEBUG_INFO
    from goprobe.ir.verify import verify

    plans = tuple(FramePlan(name, sb.ranges_of(name), False,
                            tuple(VariableCapture(t, (), None, missing=NO_DEBUG_INFO) for t in texts))
                  for name, texts in functions.items())
    gfilter = sb.ranges_of(goroutine_filter) if goroutine_filter else None
    stops = tuple(sorted(r for name in STOP_FUNCTIONS if sb.has_function(name) for r in sb.ranges_of(name)))
    return verify(SnapshotPlan(GoroutineLayout.from_binary(sb), plans, TypeTable(()), InterfaceLayout.from_binary(sb),
                               sb.unwind_table(), stops, max_frames, max_goroutines, gfilter, None))


def _labels_type(b: GoBinary, tb: TypeTableBuilder) -> TypeId | None:
    """The type g.labels points to: runtime/pprof's label set (a map until Go 1.23, a sorted list since)."""
    from goprobe.errors import UnknownTypeError

    try:
        return tb.add(b.type_named("runtime/pprof.labelMap"))
    except UnknownTypeError:
        return None


def unwind_table(b: GoBinary):
    table = b.cache.get("cfa_table")
    if table is None:
        table = b.cache.put("cfa_table", b.frames.cfa_table())
    return table


def _stop_ranges(b: GoBinary) -> tuple[tuple[int, int], ...]:
    out = []
    for name in STOP_FUNCTIONS:
        sym = b.elf.symbol(name)
        if sym is not None and sym.kind == 2:
            out.append((sym.value, sym.value + max(sym.size, 1)))
    return tuple(sorted(out))


def _frame_types(b: GoBinary, variables: Sequence[Variable]) -> dict:
    out = {}
    for v in variables:
        out.setdefault(v.name, b.type_at(v.type_offset))
    return out


def dictionary_locations(variables: Sequence[Variable]) -> tuple[LocationRange, ...]:
    """Where shaped generic code keeps its dictionary pointer (``.dict``), per PC range; () if not generic."""
    for v in variables:
        if v.name == ".dict":
            return tuple(attrs.evolve(r, location=repair_pieces(r.location, 8)) for r in v.locations)
    return ()


NOT_IN_DEBUG_INFO = "not in the debug info of this build (the optimiser dropped it)"


def compile_captures(b: GoBinary, tb: TypeTableBuilder, compiler: AccessCompiler,
                     variables: Sequence[Variable], parsed,
                     dropped: Mapping[str, str] | None = None) -> tuple[VariableCapture, ...]:
    """One VariableCapture per (expression, candidate root variable) of a function or inlined copy.
    *dropped*: expressions known to be unavailable in this build, with the reason."""
    out = []
    for text, e in parsed:
        if dropped and text in dropped:
            out.append(VariableCapture(text, (), None, missing=dropped[text]))
            continue
        # A name can denote several DWARF variables (shadowing in nested blocks): one capture per candidate
        # root; at run time the one whose location covers the PC wins.
        roots = sorted(X.identifiers(e))
        candidates = [v for v in variables if v.name in roots] or [None]
        for v in candidates:
            # With no candidate root, compile against every variable so the error lists what exists.
            frame_vars = {v.name: b.type_at(v.type_offset)} if v is not None else _frame_types(b, variables)
            try:
                path = compiler.compile(text, e, frame_vars)
            except ExpressionError as exc:
                out.append(VariableCapture(text, (), None, missing=str(exc)))
                continue
            if path.root == "":
                out.append(VariableCapture(text, (), path.type, path=path))  # a package variable
                continue
            root_t = b.type_at(v.type_offset)
            size = 8 if v.escaped else root_t.size
            locations = tuple(attrs.evolve(r, location=repair_pieces(r.location, size)) for r in v.locations)
            locations = check_variable(attrs.evolve(v, locations=locations), root_t, variables)
            callers = judge_for(b).caller_locations(locations, root_t, v.escaped)
            if not v.escaped:
                need = path.root_bytes()
                locations = tuple(attrs.evolve(r, location=narrowed(r.location, need)) for r in locations)
                if callers is not None:
                    callers = tuple(attrs.evolve(r, location=narrowed(r.location, need)) for r in callers)
            out.append(VariableCapture(text, locations, path.type, v.escaped, path=path, root_type=tb.add(root_t),
                                       caller_locations=callers))
    return tuple(out)


__all__ = ["SnapshotPlan", "FramePlan", "VariableCapture", "GoroutineLayout", "compile_snapshot", "G_STATUS"]


class Rebaser:
    """Moves the code and static-data addresses of plan parts by a position-independent executable's load
    bias; offsets, sizes and runtime-type offsets stay."""

    def __init__(self, bias: int) -> None:
        self.bias = bias

    def spans(self, rs):
        return tuple((lo + self.bias, hi + self.bias) for lo, hi in rs)

    def piece(self, p):
        return attrs.evolve(p, offset=p.offset + self.bias) if p.kind == ADDRESS_MEMORY else p

    def locations(self, rs):
        return tuple(attrs.evolve(r, low=r.low + self.bias, high=r.high + self.bias,
                                  location=tuple(self.piece(p) for p in r.location)) for r in rs)

    def capture(self, c: VariableCapture) -> VariableCapture:
        path = c.path
        if path is not None and path.root == "":
            path = attrs.evolve(path, global_address=path.global_address + self.bias)
        callers = None if c.caller_locations is None else self.locations(c.caller_locations)
        return attrs.evolve(c, locations=self.locations(c.locations), path=path, caller_locations=callers)

    def frame(self, fp: FramePlan) -> FramePlan:
        return attrs.evolve(fp, ranges=self.spans(fp.ranges), captures=tuple(self.capture(c) for c in fp.captures),
                            dictionary=self.locations(fp.dictionary))

    def unwind(self, unwind):
        b = self.bias
        return tuple((lo + b, hi + b, tuple((pc + b, reg, off) for pc, reg, off in rows)) for lo, hi, rows in unwind)

    def types(self, types: TypeTable) -> TypeTable:
        if not types.closures:
            return types
        return TypeTable(types.entries, tuple(attrs.evolve(c, entry=c.entry + self.bias) for c in types.closures))

    def goroutines(self, g: GoroutineLayout) -> GoroutineLayout:
        return attrs.evolve(g, allgs=g.allgs + self.bias, allglen=g.allglen + self.bias)

    def interfaces(self, il: InterfaceLayout) -> InterfaceLayout:
        return attrs.evolve(il, types_field_addr=il.types_field_addr + self.bias)


def rebase(plan: SnapshotPlan, bias: int) -> SnapshotPlan:
    """The plan for a position-independent executable loaded *bias* bytes above its link-time addresses."""
    if bias == 0:
        return plan
    r = Rebaser(bias)
    return attrs.evolve(
        plan, frames=tuple(r.frame(fp) for fp in plan.frames), unwind=r.unwind(plan.unwind), stops=r.spans(plan.stops),
        types=r.types(plan.types),
        goroutine_filter=None if plan.goroutine_filter is None else r.spans(plan.goroutine_filter),
        goroutines=r.goroutines(plan.goroutines), interfaces=r.interfaces(plan.interfaces))
