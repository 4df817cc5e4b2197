"""Dead is not a value: pointers that the program no longer keeps alive are not followed.

Where a frame is stopped at a call (every caller frame of a parked goroutine), the garbage collector's own
liveness map for that call says which stack words hold live pointers (``goprobe.dwarf.pclntab``). A variable
whose debug-info location still names a slot whose pointer is dead there may point at memory that was freed
and reused; such a part of a location becomes unavailable with that reason, for the PCs that only a caller
frame looks up (the last byte of the call instruction: a frame's return address minus one), so top frames
and event probes, which are not stopped at a call, are judged by the debug info alone, as before. The
verdicts go into a capture's ``caller_locations``, which only frames stopped at a call use.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import attrs

from goprobe.dwarf import expressions as E
from goprobe.dwarf.lists import LocationRange
from goprobe.dwarf.types import GoType
from goprobe.ir.location_checks import merged_ranges

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary

DEAD = "dead at this PC: not kept alive by the program (its last use is behind), so what it points to may be reused"

_POINTER_KINDS = frozenset({"ptr", "unsafe.Pointer", "map", "chan", "func", "string", "slice"})
_MAX_WORDS = 64


def pointer_offsets(t: GoType, depth: int = 0) -> tuple[int, ...]:
    """Byte offsets of the words of a *t* value that hold heap pointers the collector traces (an interface's
    data word; not its type word, which points at static data)."""
    kind = t.kind
    if kind in _POINTER_KINDS:
        return (0,)
    if kind == "interface":
        return (8,)
    out: list[int] = []
    if depth > 6:
        return ()
    if kind == "struct" and t.table is not None:
        for f in t.fields:
            out.extend(f.offset + o for o in pointer_offsets(t.field_type(f), depth + 1))
    elif kind == "array" and t.elem is not None and t.length:
        inner = pointer_offsets(t.elem, depth + 1)
        if inner:
            for i in range(min(t.length, _MAX_WORDS)):
                out.extend(i * t.elem.size + o for o in inner)
    return tuple(out[:_MAX_WORDS])


class LivenessJudge:
    """Applies the runtime's liveness maps to variables' locations; one per compilation (it caches per
    function)."""

    def __init__(self, b: GoBinary) -> None:
        self._b = b
        self._table = b.pclntab
        self._functions: dict[int, tuple] = {}

    def _function(self, pc: int):
        """(liveness maps, call return addresses) of the physical function containing *pc*, or None."""
        fn = self._b.function_at(pc)
        if fn is None:
            return None
        hit = self._functions.get(fn.entry)
        if hit is None:
            maps = self._table.liveness(fn.entry)
            calls = self._b.code.for_function(fn).call_returns if maps is not None else ()
            hit = self._functions[fn.entry] = (maps, calls)
        return hit if hit[0] is not None else None

    def caller_locations(self, ranges: tuple[LocationRange, ...], t: GoType, escaped: bool
                         ) -> tuple[LocationRange, ...] | None:
        """*ranges* as a caller frame looks them up (at its return address minus one, always inside a call
        instruction), with what the runtime's liveness map at each call says; None when nothing changes.

        Only the PCs ``ret - 1`` of the function's calls are ever looked up this way, so a range may run from
        one return address to the next: each DWARF range is cut at return addresses, each piece takes the
        verdict of the call that ends it, and equal neighbours merge. The result has few ranges, which keeps a
        program that chooses among them at run time small."""
        if self._table is None or not ranges:
            return None
        words = (0,) if escaped else pointer_offsets(t)
        if not words:
            return None
        size = 8 if escaped else t.size
        out: list[LocationRange] = []
        changed = False
        for r in ranges:
            found = self._function(r.low) if any(p.kind == E.CFA_MEMORY and not p.indirect for p in r.location) \
                else None
            if found is None:
                out.append(r)
                continue
            maps, calls = found
            lo = r.low
            for ret in calls:
                if ret <= r.low or ret - 1 >= r.high:
                    continue
                hi = min(ret, r.high)
                at = ret - 1
                dead = _dead_pieces(r.location, size, words, lambda off: maps.pointer_live(off, at))
                if dead is not None:
                    changed = True
                out.append(LocationRange(lo, hi, dead if dead is not None else r.location))
                lo = hi
            if lo < r.high:
                out.append(LocationRange(lo, r.high, r.location))
        return merged_ranges(out) if changed else None


def _dead_pieces(loc: E.Location, size: int, words: tuple[int, ...], live) -> E.Location | None:
    """*loc* with each piece that holds a dead pointer made unavailable; None if none does."""
    pieces: list[E.Piece] = []
    changed = False
    pos = 0
    for p in loc:
        n = p.size if p.size is not None else size
        if p.kind == E.CFA_MEMORY and not p.indirect:
            dead = [w for w in words if pos <= w and w + 8 <= pos + n and live(p.offset + w - pos) is False]
            if dead and len(loc) == 1 and p.size is None:
                # One place for the whole value, whose pointer the program dropped: the debug info's claim that
                # the rest of it is there is no better (optimised code describes a whole value where only one
                # part was kept), so none of it is shown.
                return (E.Piece(E.UNAVAILABLE, reason=DEAD),)
            if dead:
                changed = True
                # Split the piece so that only its dead words become unavailable.
                cur = pos
                for w in sorted(dead):
                    if cur < w:
                        pieces.append(attrs.evolve(p, size=w - cur, offset=p.offset + cur - pos))
                    pieces.append(E.Piece(E.UNAVAILABLE, size=8, reason=DEAD))
                    cur = w + 8
                if cur < pos + n:
                    pieces.append(attrs.evolve(p, size=pos + n - cur, offset=p.offset + cur - pos))
                pos += n
                continue
        pieces.append(p if p.size is not None or len(loc) > 1 else attrs.evolve(p, size=n))
        pos += n
    return tuple(pieces) if changed else None


_JUDGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def judge_for(b: GoBinary) -> LivenessJudge:
    """The binary's judge, shared by every compilation against it (its per-function caches with it)."""
    j = _JUDGES.get(b)
    if j is None:
        j = _JUDGES[b] = LivenessJudge(b)
    return j
