"""IR of dynamic events: where a probe fires, what it captures there and in caller frames, and the condition
that gates it — compiled from an :class:`~goprobe.request.EventRequest` against the binary.

Probe sites are concrete PCs: a function's entry *after* its stack-check prologue (a stack growth re-runs the
entry), every RET of the function for returns (Go forbids uretprobes), or every statement PC of a line,
inlined copies included. Each site carries the captures compiled for the code at that PC, so a backend reads
registers and memory there without knowing any DWARF. Conditions become a small typed tree over captures and
literals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from goprobe import expr as X
from goprobe.dwarf.functions import Variable
from goprobe.errors import ExpressionError
from goprobe.ir.access import AccessCompiler
from goprobe.dwarf.lists import LocationRange
from goprobe.ir.snapshot import (FramePlan, GoroutineLayout, VariableCapture, compile_captures, dictionary_locations,
                                 unwind_table)
from goprobe.ir.values import InterfaceLayout, TypeTable, TypeTableBuilder

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary
    from goprobe.request import EventRequest

_COMPARABLE_INT = frozenset({"int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32",
                             "uint64", "uintptr"})


@attrs.frozen(slots=True)
class ProbeSite:
    pc: int
    function: str  # the function whose code holds the PC (an inlined callee for inlined line sites)
    inlined: bool
    captures: tuple[VariableCapture, ...]
    condition: Cond | None
    dictionary: tuple[LocationRange, ...] = ()  # shaped generic code: where ``.dict`` lives


@attrs.frozen(slots=True)
class Literal:
    value: int | bytes | bool | None  # None: nil


@attrs.frozen(slots=True)
class Operand:
    """A capture evaluated as a scalar: integers and bools by value, strings by content, pointers by address."""

    capture: VariableCapture
    kind: str  # "int" | "uint" | "bool" | "string" | "pointer" | "float"
    size: int


@attrs.frozen(slots=True)
class Compare:
    op: str
    left: Operand | Literal
    right: Operand | Literal


@attrs.frozen(slots=True)
class Logic:
    op: str  # "&&" | "||"
    left: Cond
    right: Cond


@attrs.frozen(slots=True)
class Not:
    operand: Cond


Cond = Compare | Logic | Not | Operand


@attrs.frozen(slots=True)
class EventPlan:
    kind: str  # "entry" | "return" | "line"
    sites: tuple[ProbeSite, ...]
    callers: tuple[FramePlan, ...]  # captures in caller frames (only stack-resident values are readable there)
    types: TypeTable
    interfaces: InterfaceLayout
    goroutines: GoroutineLayout
    unwind: tuple
    stack: bool
    labels: tuple[str, ...]  # the probe's capture labels, in request order


def compile_event(b: GoBinary, req: EventRequest) -> EventPlan:
    """Compile an event request; errors name the probe and expression that do not fit the program."""
    tb = TypeTableBuilder(b)
    compiler = AccessCompiler(b, tb)
    parsed = [(c.text, c.expr) for c in req.captures]
    probe = req.probe
    sites: list[ProbeSite] = []
    for pc, function, inlined, variables in _sites(b, probe):
        caps = compile_captures(b, tb, compiler, variables, parsed)
        for c in caps:
            if c.type is None:
                raise ExpressionError(f"{c.missing} (probe {_probe_text(probe)} at {pc:#x})")
        cond = None
        if req.condition is not None:
            cond = _condition(b, tb, compiler, variables, req.condition, X.unparse(req.condition))
        sites.append(ProbeSite(pc, function, inlined, caps, cond, dictionary_locations(variables)))
        tb.add_type_arguments(function)
    callers = []
    for fname, caps in req.callers.items():
        texts = [(c.text, c.expr) for c in caps]
        fns = b.functions(fname) or [b.function(fname)]
        for fn in fns:
            callers.append(FramePlan(fn.name, fn.ranges, False, compile_captures(b, tb, compiler, fn.variables, texts),
                                     dictionary_locations(fn.variables)))
            tb.add_type_arguments(fn.name)
        for _caller, call in b.inlined_copies(fname):
            callers.append(FramePlan(fname, call.ranges, True, compile_captures(b, tb, compiler, call.variables, texts),
                                     dictionary_locations(call.variables)))
    tb.add_interface_candidates()
    tb.add_closures_if_funcs()
    return EventPlan(probe.kind, tuple(sites), tuple(callers), tb.build(), InterfaceLayout.from_binary(b),
                     GoroutineLayout.from_binary(b), unwind_table(b), req.stack, tuple(c.text for c in req.captures))


def _probe_text(probe) -> str:
    return f"{probe.file}:{probe.line}" if probe.kind == "line" else f"{probe.kind} of {probe.function}"


def _sites(b: GoBinary, probe) -> list[tuple[int, str, bool, tuple[Variable, ...]]]:
    out = []
    if probe.kind in ("entry", "return"):
        fns = b.functions(probe.function)
        if not fns:
            b.function(probe.function)  # UnknownFunctionError, or "inlined into ..." with the fix
        for fn in fns:
            code = b.code.for_function(fn)
            pcs = [code.prologue_end] if probe.kind == "entry" else list(code.returns)
            for pc in pcs:
                out.append((pc, fn.name, False, fn.variables))
        return out
    for pc in b.pcs_for_line(probe.file, probe.line):
        fn = b.function_at(pc)
        if fn is None:
            continue
        calls = fn.inline_chain(pc)
        if calls:  # the line belongs to an inlined copy: its variables are that copy's
            out.append((pc, calls[-1].name, True, calls[-1].variables))
        else:
            out.append((pc, fn.name, False, fn.variables))
    return out


def _condition(b: GoBinary, tb: TypeTableBuilder, compiler: AccessCompiler, variables, e: X.Expr, text: str) -> Cond:
    if isinstance(e, X.Binary) and e.op in ("&&", "||"):
        return Logic(e.op, _condition(b, tb, compiler, variables, e.left, text),
                     _condition(b, tb, compiler, variables, e.right, text))
    if isinstance(e, X.Unary) and e.op == "!":
        return Not(_condition(b, tb, compiler, variables, e.operand, text))
    if isinstance(e, X.Binary):
        left = _operand(b, tb, compiler, variables, e.left, text)
        right = _operand(b, tb, compiler, variables, e.right, text)
        _check_comparable(e, left, right, text)
        return Compare(e.op, left, right)
    operand = _operand(b, tb, compiler, variables, e, text)
    if not (isinstance(operand, Operand) and operand.kind == "bool"):
        raise ExpressionError(f"{X.unparse(e)!r} is not a boolean (in {text!r})")
    return operand


def _operand(b, tb, compiler, variables, e: X.Expr, text: str) -> Operand | Literal:
    if isinstance(e, X.IntLit):
        return Literal(e.value)
    if isinstance(e, X.StringLit):
        return Literal(e.value)
    if isinstance(e, X.BoolLit):
        return Literal(e.value)
    if isinstance(e, X.NilLit):
        return Literal(None)
    sub = X.unparse(e)
    (cap,) = compile_captures(b, tb, compiler, variables, [(sub, e)])[:1]
    if cap.type is None:
        raise ExpressionError(f"{cap.missing} (in condition {text!r})")
    t = tb.entry(cap.type)
    kind = t.shape.kind if hasattr(t.shape, "kind") else type(t.shape).__name__.lower()
    if kind in _COMPARABLE_INT:
        k = "uint" if kind.startswith("uint") else "int"
    elif kind == "bool":
        k = "bool"
    elif kind in ("float32", "float64"):
        k = "float"
    elif kind == "string":
        k = "string"
    elif kind in ("pointer", "unsafe.Pointer", "map", "chan", "func", "swissmap", "classicmap"):
        k = "pointer"
    else:
        raise ExpressionError(f"{sub!r} has type {t.name}, which conditions cannot compare (in {text!r})")
    return Operand(cap, k, t.size)


def _check_comparable(e: X.Binary, left, right, text: str) -> None:
    kinds = []
    for side in (left, right):
        if isinstance(side, Operand):
            kinds.append(side.kind)
        elif side.value is None:
            kinds.append("nil")
        elif isinstance(side.value, bool):
            kinds.append("bool")
        elif isinstance(side.value, int):
            kinds.append("intlit")
        else:
            kinds.append("string")
    a, c = kinds
    ok = (a == c or {a, c} <= {"int", "uint", "intlit", "float"} or {a, c} == {"pointer", "nil"})
    if ok and "string" in (a, c) and e.op not in ("==", "!=", "<", "<=", ">", ">="):
        ok = False
    if ok and ("bool" in (a, c) or "pointer" in (a, c) or "nil" in (a, c)) and e.op not in ("==", "!="):
        ok = False
    if not ok:
        raise ExpressionError(f"cannot compare {X.unparse(e.left)!r} ({a}) {e.op} {X.unparse(e.right)!r} ({c}) "
                              f"in {text!r}")


__all__ = ["EventPlan", "ProbeSite", "Compare", "Logic", "Not", "Operand", "Literal", "compile_event"]
