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
from goprobe.errors import ExpressionError, RequestError
from goprobe.ir.access import AccessCompiler
from goprobe.dwarf.expressions import IMPLICIT, REGISTER, Piece
from goprobe.dwarf.lists import LocationRange
from goprobe.ir.snapshot import (FramePlan, GoroutineLayout, Rebaser, VariableCapture, compile_captures,
                                 dictionary_locations, unwind_table)
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
    returns: tuple[VariableCapture, ...] = ()  # return probes: the results, where the register ABI puts them
    cfa: tuple[int, int] = (7, 8)  # CFA rule at the PC: (DWARF register, offset)
    frame_pointer_saved: bool = False  # RBP already holds this frame's pointer (the caller's is at CFA-16)


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
    probe: str = ""  # the probe point as the user would write it
    entry_pcs: tuple[int, ...] = ()  # return probes: where the probed functions start (after the stack check)


def compile_event(b: GoBinary, req: EventRequest) -> EventPlan:
    """Compile an event request; errors name the probe and expression that do not fit the program."""
    tb = TypeTableBuilder(b)
    compiler = AccessCompiler(b, tb)
    parsed = [(c.text, c.expr) for c in req.captures]
    probe = req.probe
    sites: list[ProbeSite] = []
    for pc, function, inlined, variables in _sites(b, probe):
        tb.add_type_arguments(function)
        caps = compile_captures(b, tb, compiler, variables, parsed)
        for c in caps:
            if c.type is None:
                raise ExpressionError(f"{c.missing} (probe {_probe_text(probe)} at {pc:#x})")
        cond = None
        if req.condition is not None:
            cond = _condition(b, tb, compiler, variables, req.condition, X.unparse(req.condition))
        returns = _abi_results(b, tb, variables, pc) if probe.kind == "return" else ()
        sites.append(ProbeSite(pc, function, inlined, caps, cond, dictionary_locations(variables), returns,
                               *_frame_at(b, pc)))
    callers = []
    for fname, caps in req.callers.items():
        texts = [(c.text, c.expr) for c in caps]
        fns = b.functions(fname) or [b.function(fname)]
        for fn in fns:
            tb.add_type_arguments(fn.name)
            callers.append(FramePlan(fn.name, fn.ranges, False, compile_captures(b, tb, compiler, fn.variables, texts),
                                     dictionary_locations(fn.variables)))
        for _caller, call in b.inlined_copies(fname):
            callers.append(FramePlan(fname, call.ranges, True, compile_captures(b, tb, compiler, call.variables, texts),
                                     dictionary_locations(call.variables)))
    tb.add_interface_candidates()
    tb.add_closures_if_funcs()
    entry_pcs: tuple[int, ...] = ()
    if probe.kind == "return":
        entry_pcs = tuple(b.code.for_function(fn).prologue_end for fn in b.functions(probe.function))
    return EventPlan(probe.kind, tuple(sites), tuple(callers), tb.build(), InterfaceLayout.from_binary(b),
                     GoroutineLayout.from_binary(b), unwind_table(b), req.stack, tuple(c.text for c in req.captures),
                     _probe_text(probe), entry_pcs)


# Go's internal ABI on amd64 (DWARF register numbers): integer results in RAX, RBX, RCX, RDI, RSI, R8-R11,
# floating-point ones in X0-X14; results are assigned from the first register again, independent of arguments.
_INT_REGS = (0, 3, 2, 5, 4, 8, 9, 10, 11)
_FLOAT_REGS = tuple(range(17, 32))


def _abi_results(b: GoBinary, tb: TypeTableBuilder, variables, pc: int) -> tuple[VariableCapture, ...]:
    """The function's results as captures located in registers at a RET instruction (register ABI)."""
    ints, floats = list(_INT_REGS), list(_FLOAT_REGS)
    out = []
    for v in variables:
        if v.role != "result":
            continue
        t = b.type_at(v.type_offset)
        pieces: list[Piece] = []
        try:
            _assign(b, t, pieces, ints, floats)
        except _StackAssigned:
            out.append(VariableCapture(v.name, (), tb.add(t), missing="returned on the stack (too large for the "
                                       "register ABI); not captured"))
            continue
        out.append(VariableCapture(v.name, (LocationRange(pc, pc + 1, tuple(pieces)),), tb.add(t),
                                   root_type=tb.add(t)))
    return tuple(out)


class _StackAssigned(Exception):
    pass


def _assign(b: GoBinary, t, pieces: list[Piece], ints: list[int], floats: list[int]) -> None:
    """Append register pieces for a value of type *t*, padding included; raise when registers run out."""
    k = t.kind
    if k in ("float32", "float64"):
        if not floats:
            raise _StackAssigned
        pieces.append(Piece(REGISTER, t.size, floats.pop(0)))
    elif k in ("complex64", "complex128"):
        half = t.size // 2
        if len(floats) < 2:
            raise _StackAssigned
        pieces += [Piece(REGISTER, half, floats.pop(0)), Piece(REGISTER, half, floats.pop(0))]
    elif k == "struct":
        end = 0
        for f in t.fields:
            if f.offset > end:
                pieces.append(Piece(IMPLICIT, f.offset - end, value=bytes(f.offset - end)))
            ft = t.field_type(f)
            _assign(b, ft, pieces, ints, floats)
            end = f.offset + ft.size
        if t.size > end:
            pieces.append(Piece(IMPLICIT, t.size - end, value=bytes(t.size - end)))
    elif k == "array":
        if (t.length or 0) > 1:
            raise _StackAssigned
        if t.length == 1:
            _assign(b, t.elem, pieces, ints, floats)
    elif k in ("string", "interface", "slice"):
        words = t.size // 8
        if len(ints) < words:
            raise _StackAssigned
        pieces += [Piece(REGISTER, 8, ints.pop(0)) for _ in range(words)]
    elif t.size == 0:
        return
    else:  # integers, bools, pointers, maps, chans, funcs
        if not ints:
            raise _StackAssigned
        pieces.append(Piece(REGISTER, t.size, ints.pop(0)))


def rebase_event(plan: EventPlan, bias: int) -> EventPlan:
    """The plan for a position-independent executable loaded *bias* bytes above its link-time addresses."""
    if bias == 0:
        return plan
    r = Rebaser(bias)

    def operand(o):
        return attrs.evolve(o, capture=r.capture(o.capture)) if isinstance(o, Operand) else o

    def cond(c):
        if isinstance(c, Compare):
            return attrs.evolve(c, left=operand(c.left), right=operand(c.right))
        if isinstance(c, Logic):
            return attrs.evolve(c, left=cond(c.left), right=cond(c.right))
        if isinstance(c, Not):
            return attrs.evolve(c, operand=cond(c.operand))
        return operand(c) if c is not None else None

    sites = tuple(attrs.evolve(s, pc=s.pc + bias, captures=tuple(r.capture(c) for c in s.captures),
                               returns=tuple(r.capture(c) for c in s.returns), condition=cond(s.condition),
                               dictionary=r.locations(s.dictionary)) for s in plan.sites)
    return attrs.evolve(plan, sites=sites, callers=tuple(r.frame(fp) for fp in plan.callers),
                        types=r.types(plan.types), interfaces=r.interfaces(plan.interfaces),
                        goroutines=r.goroutines(plan.goroutines), unwind=r.unwind(plan.unwind),
                        entry_pcs=tuple(pc + bias for pc in plan.entry_pcs))


def _probe_text(probe) -> str:
    return f"{probe.file}:{probe.line}" if probe.kind == "line" else f"{probe.kind} of {probe.function}"


def _frame_at(b: GoBinary, pc: int) -> tuple[tuple[int, int], bool]:
    """The CFA rule at *pc* and whether the frame pointer is set up there (then the caller's is saved)."""
    rule = b.frame_rule(pc)
    cfa = (rule.cfa_reg, rule.cfa_offset) if rule is not None else (7, 8)
    fn = b.function_at(pc)
    saved = False
    if fn is not None and cfa[0] == 7 and cfa[1] > 8:
        saved = b.code.for_function(fn).has_frame_pointer
    return cfa, saved


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
    pcs = b.pcs_for_line(probe.file, probe.line)
    if not pcs:
        # A line without code (a comment, a blank line, a declaration the compiler folded away) would wait
        # forever for hits: refuse it, naming the nearest lines that have code.
        lines = b.lines_with_code(probe.file)
        near = [x for x in (max((n for n in lines if n < probe.line), default=None),
                            min((n for n in lines if n > probe.line), default=None)) if x is not None]
        raise RequestError(f"no code at {probe.file}:{probe.line} in this build" + (
            f"; nearest lines with code: {', '.join(f'{probe.file}:{n}' for n in near)}" if near else ""))
    for pc in pcs:
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
