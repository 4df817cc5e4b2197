"""IR of a snapshot: which goroutine fields to read, which frames to recognise, and what to capture in them.

A :class:`SnapshotPlan` is compiled once per (binary, request) and is immutable. It carries every constant a
backend needs: runtime-structure offsets, the PC ranges of requested functions (inlined copies included),
each captured variable's per-PC-range location, and the value shapes (``goprobe.ir.values``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from goprobe.dwarf.functions import Variable
from goprobe.dwarf.lists import LocationRange
from goprobe.errors import UnknownVariableError
from goprobe.ir.values import TypeId, TypeTable, TypeTableBuilder

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

    @classmethod
    def from_binary(cls, b: GoBinary) -> GoroutineLayout:
        L = b.runtime
        g, m = L["g"], L["m"]
        return cls(g.size, g.offset("goid"), g.offset("atomicstatus"), L.g_status_size, g.offset("sched.pc"),
                   g.offset("sched.sp"), g.offset("sched.bp"), g.offset("syscallsp"), g.offset("syscallpc"),
                   g.offset("stack.lo"), g.offset("stack.hi"), g.offset("m"), g.offset("waitreason"),
                   m.offset("procid"), m.offset("curg"), L.allgs, L.allglen)


@attrs.frozen(slots=True)
class VariableCapture:
    """One requested variable of a frame: where it lives per PC range, and its value shape."""

    label: str
    locations: tuple[LocationRange, ...]
    type: TypeId | None  # None: unknown variable (reported unavailable with `missing`)
    escaped: bool = False
    missing: str | None = None


@attrs.frozen(slots=True)
class FramePlan:
    """Frames of one function (out-of-line code, or one inlined copy) whose PCs fall in ``ranges``."""

    function: str
    ranges: tuple[tuple[int, int], ...]
    inlined: bool
    captures: tuple[VariableCapture, ...]


@attrs.frozen(slots=True)
class SnapshotPlan:
    goroutines: GoroutineLayout
    frames: tuple[FramePlan, ...]
    types: TypeTable
    max_frames: int
    max_goroutines: int
    goroutine_filter: tuple[tuple[int, int], ...] | None  # PC ranges of the filter function


def compile_snapshot(b: GoBinary, functions: Mapping[str, Sequence[str]], *, max_frames: int = 512,
                     max_goroutines: int = 100_000, goroutine_filter: str | None = None) -> SnapshotPlan:
    """Compile "capture these variables in every frame of these functions" for *b*.

    Variable names are the function's parameters and locals; an unknown name raises
    :class:`~goprobe.errors.UnknownVariableError` listing the names that exist.
    """
    tb = TypeTableBuilder(b)
    plans: list[FramePlan] = []
    for fname, names in functions.items():
        outlined = b.functions(fname)
        copies = b.inlined_copies(fname)
        if not outlined and not copies:
            b.function(fname)  # raises UnknownFunctionError with suggestions
        known: set[str] = set()
        for fn in outlined:
            known.update(v.name for v in fn.variables)
        for _caller, call in copies:
            known.update(v.name for v in call.variables)
        for name in names:
            if name not in known:
                raise UnknownVariableError(name, sorted(known), f"function {fname} (its parameters and locals)")
        for fn in outlined:
            plans.append(FramePlan(fn.name, fn.ranges, False, _captures(b, tb, fn.variables, names)))
        for _caller, call in copies:
            plans.append(FramePlan(fname, call.ranges, True, _captures(b, tb, call.variables, names)))
    tb.add_interface_candidates()
    gfilter = None
    if goroutine_filter:
        fns = b.functions(goroutine_filter) or [b.function(goroutine_filter)]
        gfilter = tuple(r for fn in fns for r in fn.ranges) + tuple(
            r for _c, call in b.inlined_copies(goroutine_filter) for r in call.ranges)
    return SnapshotPlan(GoroutineLayout.from_binary(b), tuple(plans), tb.build(), max_frames, max_goroutines,
                        gfilter)


def _captures(b: GoBinary, tb: TypeTableBuilder, variables: Sequence[Variable], names: Sequence[str]
              ) -> tuple[VariableCapture, ...]:
    out = []
    for name in names:
        # Several DWARF variables may share a name (shadowing in nested blocks): keep them all; the one
        # whose location covers the PC wins at run time.
        matching = [v for v in variables if v.name == name]
        if not matching:
            out.append(VariableCapture(name, (), None, missing="not a variable of this copy of the function"))
            continue
        for v in matching:
            out.append(VariableCapture(name, v.locations, tb.add(b.type_at(v.type_offset)), v.escaped))
    return tuple(out)


__all__ = ["SnapshotPlan", "FramePlan", "VariableCapture", "GoroutineLayout", "compile_snapshot", "G_STATUS"]
