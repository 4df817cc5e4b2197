"""Functions and their variables, read from one subprogram DIE and its subtree.

Go's DWARF for a function F that is also inlined elsewhere has three shapes: an abstract DIE (names, types,
``DW_AT_inline``), a concrete out-of-line DIE whose children point at the abstract ones through
``DW_AT_abstract_origin``, and ``DW_TAG_inlined_subroutine`` copies inside callers. This module folds them
into one :class:`Function` with :class:`Variable` s that each carry per-PC-range locations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from goprobe.dwarf import constants as C
from goprobe.dwarf.expressions import UNAVAILABLE, Location, decode_location
from goprobe.dwarf.lists import LocationRange, normalise, read_loclist_v4, read_loclist_v5, read_ranges_v4, read_rnglist_v5

if TYPE_CHECKING:
    from goprobe.dwarf.dies import DebugSections, Die, Unit

PARAM = "param"
RESULT = "result"
LOCAL = "local"


@attrs.frozen(slots=True)
class Variable:
    """A parameter, result or local of a function (or of an inlined copy of one)."""

    name: str
    role: str  # PARAM, RESULT or LOCAL
    type_offset: int
    locations: tuple[LocationRange, ...]  # where the value lives, per PC range; empty: never available
    decl_line: int | None = None
    scope: tuple[tuple[int, int], ...] | None = None  # PC ranges of the enclosing lexical block; None: whole function
    escaped: bool = False  # Go moved it to the heap: the location holds the address of the value ("&x" in DWARF)
    closure_offset: int | None = None  # captured by a closure: offset inside the closure context
    die_offset: int = 0

    def location_at(self, pc: int) -> Location | None:
        for r in self.locations:
            if r.low <= pc < r.high:
                return r.location
        return None

    def availability(self, ranges: tuple[tuple[int, int], ...], entry: int) -> str:
        """"whole body", "entry", "some ranges" or "never", relative to the function's PC ranges."""
        usable = [r for r in self.locations if any(p.kind != UNAVAILABLE for p in r.location)]
        if not usable:
            return "never"
        total = sum(hi - lo for lo, hi in ranges)
        covered = 0
        for lo, hi in ranges:
            for r in usable:
                covered += max(0, min(hi, r.high) - max(lo, r.low))
        if covered >= total:
            return "whole body"
        if any(r.low <= entry < r.high for r in usable) and covered <= total // 4:
            return "entry"
        return "some ranges"


@attrs.frozen(slots=True)
class InlinedCall:
    """A copy of another function inlined into this one."""

    name: str
    abstract_offset: int
    ranges: tuple[tuple[int, int], ...]
    call_file: str
    call_line: int
    variables: tuple[Variable, ...]
    children: tuple[InlinedCall, ...]
    die_offset: int


@attrs.frozen(slots=True)
class Function:
    name: str
    entry: int
    ranges: tuple[tuple[int, int], ...]
    die_offset: int
    decl_file: str
    decl_line: int | None
    variables: tuple[Variable, ...]
    inlined_calls: tuple[InlinedCall, ...]
    abstract_offset: int | None  # set when the function is also inlined into callers
    unit_offset: int

    @property
    def low(self) -> int:
        return min(lo for lo, _ in self.ranges)

    @property
    def high(self) -> int:
        return max(hi for _, hi in self.ranges)

    def contains(self, pc: int) -> bool:
        return any(lo <= pc < hi for lo, hi in self.ranges)

    def variable(self, name: str) -> Variable | None:
        for v in self.variables:
            if v.name == name:
                return v
        return None

    def inline_chain(self, pc: int) -> list[InlinedCall]:
        """The inlined calls active at *pc*, outermost first."""
        chain: list[InlinedCall] = []
        level = self.inlined_calls
        while True:
            for call in level:
                if any(lo <= pc < hi for lo, hi in call.ranges):
                    chain.append(call)
                    level = call.children
                    break
            else:
                return chain


class FunctionReader:
    """Builds :class:`Function` objects from subprogram DIEs of one binary."""

    def __init__(self, secs: DebugSections, units, file_names, file_at_pc) -> None:
        self._secs = secs
        self._units = units
        self._file_names = file_names  # (unit, index) -> path
        self._file_at_pc = file_at_pc  # pc -> path (Go omits decl_file on abstract functions)

    def die_ranges(self, die: Die) -> tuple[tuple[int, int], ...]:
        a = die.attrs
        unit = die.unit
        if C.AT_ranges in a:
            return tuple(self._read_ranges(unit, a[C.AT_ranges]))
        lo = a.get(C.AT_low_pc)
        hi = a.get(C.AT_high_pc)
        if lo is None or hi is None:
            return ()
        return ((lo, hi),)

    def _read_ranges(self, unit: Unit, value: object) -> list[tuple[int, int]]:
        base = unit.root.attrs.get(C.AT_low_pc, 0) if unit.root is not None else 0
        if unit.version >= 5:
            off = value
            if isinstance(value, tuple):  # rnglistx
                off = unit.rnglists_base + int.from_bytes(
                    self._secs.rnglists[unit.rnglists_base + 4 * value[2]:unit.rnglists_base + 4 * value[2] + 4], "little")
            return read_rnglist_v5(self._secs.rnglists, off, base, unit.address_at_index)
        return read_ranges_v4(self._secs.ranges, value, base)

    def locations(self, die: Die, whole: tuple[tuple[int, int], ...]) -> tuple[LocationRange, ...]:
        value = die.attrs.get(C.AT_location)
        unit = die.unit
        if value is None:
            return ()
        kw = dict(addr_size=unit.addr_size, address_at_index=unit.address_at_index)
        if isinstance(value, (bytes, bytearray)):
            loc = decode_location(value, **kw)
            return tuple(LocationRange(lo, hi, loc) for lo, hi in whole)
        base = unit.root.attrs.get(C.AT_low_pc, 0)
        if unit.version >= 5:
            off = value
            if isinstance(value, tuple):  # loclistx
                idx = value[2]
                off = unit.loclists_base + int.from_bytes(
                    self._secs.loclists[unit.loclists_base + 4 * idx:unit.loclists_base + 4 * idx + 4], "little")
            ranges = read_loclist_v5(self._secs.loclists, off, base, unit.address_at_index, **kw)
        else:
            ranges = read_loclist_v4(self._secs.loc, value, base, **kw)
        return normalise(ranges)

    def function(self, die: Die) -> Function:
        a = die.attrs
        abstract = a.get(C.AT_abstract_origin)
        abstract_die = self._units.die_at(abstract) if abstract is not None else None
        name = a.get(C.AT_name) or (abstract_die.name if abstract_die else "")
        ranges = self.die_ranges(die)
        entry = a.get(C.AT_low_pc, ranges[0][0] if ranges else 0)
        decl_src = abstract_die if abstract_die is not None else die
        decl_file_idx = decl_src.attrs.get(C.AT_decl_file)
        if decl_file_idx is not None:
            decl_file = self._file_names(decl_src.unit, decl_file_idx)
        else:
            decl_file = self._file_at_pc(entry) if ranges else ""
        variables, inlined = self._scope(die, ranges, None)
        return Function(
            name=name, entry=entry, ranges=ranges, die_offset=die.offset, decl_file=decl_file,
            decl_line=decl_src.attrs.get(C.AT_decl_line), variables=tuple(variables), inlined_calls=tuple(inlined),
            abstract_offset=abstract, unit_offset=die.unit.offset,
        )

    def _scope(self, die: Die, ranges: tuple[tuple[int, int], ...], scope: tuple[tuple[int, int], ...] | None
               ) -> tuple[list[Variable], list[InlinedCall]]:
        variables: list[Variable] = []
        inlined: list[InlinedCall] = []
        for child in die.children():
            tag = child.tag
            if tag in (C.TAG_formal_parameter, C.TAG_variable):
                variables.append(self._variable(child, ranges, scope))
            elif tag == C.TAG_lexical_block:
                block = self.die_ranges(child)
                v, i = self._scope(child, ranges, block or scope)
                variables.extend(v)
                inlined.extend(i)
            elif tag == C.TAG_inlined_subroutine:
                inlined.append(self._inlined(child))
        return variables, inlined

    def _inlined(self, die: Die) -> InlinedCall:
        a = die.attrs
        origin = a.get(C.AT_abstract_origin, 0)
        name = self._units.die_at(origin).name if origin else ""
        ranges = self.die_ranges(die)
        call_file_idx = a.get(C.AT_call_file)
        call_file = self._file_names(die.unit, call_file_idx) if call_file_idx is not None else ""
        variables: list[Variable] = []
        children: list[InlinedCall] = []
        v, i = self._scope(die, ranges, None)
        variables.extend(v)
        children.extend(i)
        return InlinedCall(name, origin, ranges, call_file, a.get(C.AT_call_line, 0), tuple(variables),
                           tuple(children), die.offset)

    def _variable(self, die: Die, ranges: tuple[tuple[int, int], ...], scope) -> Variable:
        a = die.attrs
        origin = a.get(C.AT_abstract_origin)
        src = a
        if origin is not None:
            src = {**self._units.die_at(origin).attrs, **a}
        name = src.get(C.AT_name, "")
        if die.tag == C.TAG_formal_parameter:
            role = RESULT if src.get(C.AT_variable_parameter, 0) else PARAM
        else:
            role = LOCAL
        escaped = name.startswith("&")
        type_offset = src.get(C.AT_type, 0)
        if escaped and type_offset:
            # DWARF types "&x" as *T (its slot holds the heap address); the variable itself is a T.
            type_offset = self._units.die_at(type_offset).attrs.get(C.AT_type, type_offset)
        return Variable(
            name=name[1:] if escaped else name,
            role=role,
            type_offset=type_offset,
            locations=self.locations(die, ranges),
            decl_line=src.get(C.AT_decl_line),
            scope=scope,
            escaped=escaped,
            closure_offset=src.get(C.AT_go_closure_offset),
            die_offset=die.offset,
        )

