"""The IR verifier: a snapshot plan is well-formed — every node and field has the right kind, type ids
resolve, offsets stay inside the values they index, and every loop a backend runs is bounded.

The compiler's output is verified before it is lowered, and every program is verified after it is loaded,
so a backend can trust the plan it executes.
"""

from __future__ import annotations


from goprobe.dwarf.expressions import (
    ADDRESS_MEMORY,
    CFA_MEMORY,
    IMPLICIT,
    REGISTER,
    REGISTER_MEMORY,
    UNAVAILABLE,
    Piece,
)
from goprobe.dwarf.lists import LocationRange
from goprobe.errors import GoprobeError
from goprobe.ir import access as A
from goprobe.ir import snapshot as S
from goprobe.ir import values as V

MAX_FRAMES = 1 << 20
MAX_GOROUTINES = 1 << 26
MAX_VALUE = V.MAX_VALUE
_PIECE_KINDS = {REGISTER, CFA_MEMORY, ADDRESS_MEMORY, REGISTER_MEMORY, IMPLICIT, UNAVAILABLE}


class VerificationError(GoprobeError):
    """The plan is malformed; the message names the node and the problem."""


def _check(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise VerificationError(f"invalid plan: {where}: {what}")


def _int(v: object, where: str, lo: int = 0, hi: int = 1 << 64) -> None:
    _check(isinstance(v, int) and not isinstance(v, bool) and lo <= v < hi, where, f"expected an integer in "
           f"[{lo}, {hi}), got {v!r}")


def _span_list(v: object, where: str) -> None:
    _check(isinstance(v, tuple), where, "expected a tuple of PC ranges")
    for r in v:
        _check(isinstance(r, tuple) and len(r) == 2, where, "a PC range is (low, high)")
        _int(r[0], where)
        _int(r[1], where)
        _check(r[0] < r[1], where, "empty PC range")


def verify(plan: S.SnapshotPlan) -> S.SnapshotPlan:
    """Check *plan*; return it unchanged or raise :class:`VerificationError`."""
    _check(isinstance(plan, S.SnapshotPlan), "root", "not a SnapshotPlan")
    gl = plan.goroutines
    _check(isinstance(gl, S.GoroutineLayout), "goroutines", "not a GoroutineLayout")
    for name in ("goid", "status", "sched_pc", "sched_sp", "sched_bp", "syscall_sp", "syscall_pc", "stack_lo",
                 "stack_hi", "m", "waitreason", "gopc", "parent_goid", "waitsince", "lockedm"):
        _int(getattr(gl, name), f"goroutines.{name}", 0, MAX_VALUE)
        _check(getattr(gl, name) + 1 <= gl.g_size, f"goroutines.{name}", "outside runtime.g")
    _int(gl.g_size, "goroutines.g_size", 1, MAX_VALUE)
    _check(gl.status_size in (1, 2, 4, 8), "goroutines.status_size", "must be 1, 2, 4 or 8")
    _int(gl.allgs, "goroutines.allgs")
    _int(gl.allglen, "goroutines.allglen")
    il = plan.interfaces
    _check(isinstance(il, V.InterfaceLayout), "interfaces", "not an InterfaceLayout")
    for name in ("kind_off", "tflag_off", "str_off", "itab_type_off", "direct_mask", "types_field_addr"):
        _int(getattr(il, name), f"interfaces.{name}")
    _check(isinstance(il.direct_in_tflag, bool), "interfaces.direct_in_tflag", "expected a boolean")
    _int(plan.max_frames, "max_frames", 1, MAX_FRAMES)
    _int(plan.max_goroutines, "max_goroutines", 1, MAX_GOROUTINES)
    _span_list(plan.stops, "stops")
    if plan.goroutine_filter is not None:
        _span_list(plan.goroutine_filter, "goroutine_filter")
    _verify_unwind(plan.unwind)
    _verify_types(plan.types)
    _check(isinstance(plan.frames, tuple), "frames", "expected a tuple")
    for i, fp in enumerate(plan.frames):
        _verify_frame(fp, plan.types, f"frames[{i}]")
    return plan


def _verify_unwind(unwind: object) -> None:
    _check(isinstance(unwind, tuple), "unwind", "expected a tuple")
    prev = -1
    for i, entry in enumerate(unwind):
        where = f"unwind[{i}]"
        _check(isinstance(entry, tuple) and len(entry) == 3, where, "expected (low, high, rows)")
        lo, hi, rows = entry
        _int(lo, where)
        _int(hi, where)
        _check(prev <= lo < hi, where, "functions must be sorted and non-empty")
        prev = lo
        _check(isinstance(rows, tuple), where, "rows must be a tuple")
        last = -1
        for row in rows:
            _check(isinstance(row, tuple) and len(row) == 3, where, "a row is (pc, register, offset)")
            _int(row[0], where)
            _int(row[1], where, 0, 128)
            _int(row[2], where, -(1 << 31), 1 << 31)
            _check(row[0] > last, where, "rows must be sorted by PC")
            last = row[0]


def _verify_types(table: object) -> None:
    _check(isinstance(table, V.TypeTable), "types", "not a TypeTable")
    entries = table.entries
    _check(isinstance(entries, tuple), "types", "entries must be a tuple")
    n = len(entries)

    def tid(v: object, where: str) -> None:
        _int(v, where, 0, n)

    for i in range(n):
        problem = V.entry_problem(entries, i)
        _check(problem is None, f"types[{i}]", problem or "")

    closures = table.closures
    _check(isinstance(closures, tuple), "types.closures", "must be a tuple")
    for i, c in enumerate(closures):
        where = f"types.closures[{i}]"
        _check(isinstance(c, V.Closure), where, "not a Closure")
        _int(c.entry, where + ".entry")
        tid(c.context, where + ".context")
        _check(isinstance(entries[c.context].shape, V.Struct), where, "a closure context is a struct")


def _verify_frame(fp: object, table: V.TypeTable, where: str) -> None:
    _check(isinstance(fp, S.FramePlan), where, "not a FramePlan")
    _check(isinstance(fp.function, str) and isinstance(fp.inlined, bool), where, "bad function or inlined")
    _span_list(fp.ranges, where + ".ranges")
    _check(isinstance(fp.captures, tuple), where, "captures must be a tuple")
    _locations(fp.dictionary, where + ".dictionary")
    n = len(table.entries)
    for j, c in enumerate(fp.captures):
        w = f"{where}.captures[{j}]"
        _check(isinstance(c, S.VariableCapture) and isinstance(c.label, str), w, "not a VariableCapture")
        _check(isinstance(c.escaped, bool), w, "bad escaped")
        _check(c.missing is None or isinstance(c.missing, str), w, "bad missing")
        for ref in (c.type, c.root_type):
            if ref is not None:
                _int(ref, w, 0, n)
        _check(c.type is not None or c.missing is not None, w, "a capture needs a type or a reason")
        _locations(c.locations, w)
        if c.caller_locations is not None:
            _locations(c.caller_locations, w + ".caller_locations")
        if c.path is not None:
            _verify_path(c.path, table, w)


def _locations(locations: object, w: str) -> None:
    _check(isinstance(locations, tuple), w, "locations must be a tuple")
    for r in locations:
        _check(isinstance(r, LocationRange) and isinstance(r.low, int) and isinstance(r.high, int)
               and r.low < r.high, w, "bad location range")
        _check(isinstance(r.location, tuple), w, "a location is a tuple of pieces")
        for p in r.location:
            _verify_piece(p, w)


def _verify_piece(p: object, where: str) -> None:
    _check(isinstance(p, Piece) and p.kind in _PIECE_KINDS, where, "bad location piece")
    _check(p.size is None or (isinstance(p.size, int) and 0 < p.size <= MAX_VALUE), where, "bad piece size")
    _check(p.reg is None or (isinstance(p.reg, int) and 0 <= p.reg < 128), where, "bad register")
    _check(isinstance(p.offset, int) and isinstance(p.post_offset, int), where, "bad piece offsets")
    _check(isinstance(p.value, bytes) and isinstance(p.indirect, bool), where, "bad piece value")


def _verify_path(path: object, table: V.TypeTable, where: str) -> None:
    n = len(table.entries)
    _check(isinstance(path, A.AccessPath) and isinstance(path.root, str), where, "not an AccessPath")
    _int(path.global_address, where + ".global_address")
    _int(path.type, where + ".type", 0, n)
    _int(path.result_size, where + ".result_size", 0, MAX_VALUE)
    _check(isinstance(path.steps, tuple) and len(path.steps) <= 256, where, "steps must be a short tuple")
    for s in path.steps:
        if isinstance(s, A.FieldStep):
            _int(s.offset, where, 0, MAX_VALUE)
        elif isinstance(s, A.IndexStep):
            _check(s.container in ("array", "slice", "string"), where, "bad index container")
            _int(s.index, where, 0, 1 << 62)
            _int(s.elem_size, where, 0, MAX_VALUE)
            _int(s.length, where, 0, 1 << 62)
        elif isinstance(s, (A.LenStep, A.CapStep)):
            _check(s.container in ("array", "slice", "string", "map", "chan"), where, "bad len/cap container")
            _int(s.static, where, 0, 1 << 62)
            _int(s.field_offset, where, 0, MAX_VALUE)
        elif isinstance(s, A.MapLookupStep):
            _int(s.map_type, where, 0, n)
            _check(isinstance(table.entries[s.map_type].shape, (V.SwissMap, V.ClassicMap)), where,
                   "map lookup on a non-map")
            _check(isinstance(s.key, (bytes, int)) and not isinstance(s.key, bool), where, "bad map key")
            _int(s.key_size, where, 1, 1 << 16)
        elif isinstance(s, A.TypeAssertStep):
            _int(s.runtime_type, where)
            _check(isinstance(s.empty, bool), where, "bad interface kind")
        elif not isinstance(s, A.DerefStep):
            _check(False, where, f"unknown step {type(s).__name__}")
