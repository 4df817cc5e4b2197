"""Checks of where the debug info says a variable is, decided once here for every backend.

The Go compiler's DWARF for optimised code is wrong in known ways (golang/go#61700, #48405, #47354, #60493,
#72053): when only part of a string, slice, interface or struct stays live, it may place the whole value where
only that part is, or list pieces that do not add up to the type. Read as it stands, such a location gives a
garbage value that looks real. Optimised code also splits such values into parts that DWARF lists as separate
variables named after the parts (``label.ptr``, ``label.len``, ``sl.cap``, ``e.itab``, ``e.data``, ``c.real``,
a struct's fields as ``pA``, ``pB``, arrays as ``a[0]``); they are what the compiler really tracks.

So, per PC range of a variable:

- pieces that do not add up to its type's size are rejected;
- a whole-value location of a value that the compiler split into parts is kept only where every part's own
  variable agrees with it;
- a rejected location is rebuilt from the parts' variables, each part that none of them covers being an
  unavailable piece with the reason;
- a location whose unavailable parts a capture does not read (``len(label)`` needs only the length) has them
  replaced by placeholder bytes that are never read, so both backends can read the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from goprobe.dwarf import expressions as E
from goprobe.dwarf.functions import Variable
from goprobe.dwarf.lists import LocationRange
from goprobe.dwarf.types import GoType

BROKEN_PIECES = "the debug info's pieces of this value do not add up to its type (a Go compiler defect)"
BROKEN_WHOLE = "the debug info places the whole value where only one of its parts is (a Go compiler defect)"
PART_UNKNOWN = "this part of the value is not kept at this PC"

_MEMORY = (E.CFA_MEMORY, E.ADDRESS_MEMORY, E.REGISTER_MEMORY)


def part_names(name: str, t: GoType) -> list[tuple[str, int, int]]:
    """The variables the compiler may split *name* of type *t* into, as (name, offset, size), innermost
    parts included (a struct field's string gives ``pB``, ``pB.ptr`` and ``pB.len``)."""
    out: list[tuple[str, int, int]] = []

    def walk(n: str, typ: GoType, base: int, depth: int) -> None:
        if depth > 4:
            return
        kind = typ.kind
        if kind == "string":
            out.extend([(n + ".ptr", base, 8), (n + ".len", base + 8, 8)])
        elif kind == "slice":
            out.extend([(n + ".ptr", base, 8), (n + ".len", base + 8, 8), (n + ".cap", base + 16, 8)])
        elif kind == "interface":
            out.extend([(n + ".itab", base, 8), (n + ".type", base, 8), (n + ".data", base + 8, 8)])
        elif kind in ("complex64", "complex128"):
            half = typ.size // 2
            out.extend([(n + ".real", base, half), (n + ".imag", base + half, half)])
        elif kind == "struct" and typ.table is not None:
            for f in typ.fields:
                ft = typ.field_type(f)
                out.append((n + f.name, base + f.offset, ft.size))
                walk(n + f.name, ft, base + f.offset, depth + 1)
        elif kind == "array" and typ.length == 1 and typ.elem is not None:
            out.append((n + "[0]", base, typ.elem.size))
            walk(n + "[0]", typ.elem, base, depth + 1)

    walk(name, t, 0, 0)
    return out


def _leaves(parts: list[tuple[str, int, int]]) -> list[tuple[int, int, list[tuple[str, int]]]]:
    """The smallest parts, as (offset, size, [(name, offset inside it)...]): the parts that are exactly it
    first, then those that contain it, smallest first."""
    spans = sorted({(off, size) for _n, off, size in parts})
    leaves = [s for s in spans if not any(o != s and s[0] <= o[0] and o[0] + o[1] <= s[0] + s[1] for o in spans)]
    out = []
    for off, size in leaves:
        names = [(n, off - o) for n, o, s in sorted(parts, key=lambda p: p[2]) if o <= off and off + size <= o + s]
        out.append((off, size, names))
    return out


def check_variable(v: Variable, t: GoType, variables: Sequence[Variable]) -> tuple[LocationRange, ...]:
    """*v*'s location ranges (pieces already repaired for duplicates), each checked and, where rejected,
    rebuilt from the variables of its parts."""
    size = 8 if v.escaped else t.size
    if v.escaped or size <= 0:
        return tuple(v.locations)
    parts = part_names(v.name, t)
    by_name = {x.name: x for x in variables if x is not v}
    siblings = {n: (by_name[n], off, sz) for n, off, sz in parts if n in by_name}
    out: list[LocationRange] = []
    for r in v.locations:
        problem = _problem(r.location, size, siblings, r)
        if problem is None:
            out.append(r)
        else:
            out.extend(_rebuild(r, size, parts, siblings, problem))
    return merged_ranges(out)


def _problem(loc: E.Location, size: int, siblings, r: LocationRange) -> str | None:
    if not loc or all(p.kind == E.UNAVAILABLE for p in loc):
        return None
    if len(loc) > 1 or loc[0].size is not None:
        if all(p.size is not None for p in loc) and sum(p.size for p in loc) != size:
            return BROKEN_PIECES
        return None
    if size <= 8 or not siblings:
        return None
    # One place for the whole of a value the compiler split: every part's variable must agree where it covers
    # this range, and every word must be vouched for by some part.
    whole = loc[0]
    vouched = 0
    for var, off, sz in siblings.values():
        for sub in var.locations:
            if sub.high <= r.low or sub.low >= r.high:
                continue
            if not _same_place(sub.location, whole, off):
                return BROKEN_WHOLE
            vouched |= ((1 << sz) - 1) << off if sub.low <= r.low and sub.high >= r.high else 0
    if vouched & ((1 << size) - 1) != (1 << size) - 1:
        return BROKEN_WHOLE
    return None


def _same_place(part_loc: E.Location, whole: E.Piece, off: int) -> bool:
    """Whether a part's location is the whole value's location moved by the part's offset."""
    if len(part_loc) != 1:
        return False
    p = part_loc[0]
    if p.kind in _MEMORY and whole.kind == p.kind and not p.indirect and not whole.indirect:
        return p.reg == whole.reg and p.offset == whole.offset + off
    return False


def _rebuild(r: LocationRange, size: int, parts, siblings, problem: str) -> list[LocationRange]:
    """The range rebuilt from the parts' variables, split where their own ranges begin or end."""
    cuts = {r.low, r.high}
    for var, _off, _sz in siblings.values():
        for sub in var.locations:
            for x in (sub.low, sub.high):
                if r.low < x < r.high:
                    cuts.add(x)
    leaves = _leaves(parts)
    out = []
    bounds = sorted(cuts)
    for lo, hi in zip(bounds, bounds[1:]):
        pieces: list[E.Piece] = []
        pos = 0
        known = False
        for off, sz, names in leaves:
            if off < pos:
                continue  # an interface's .itab/.type alternatives share a span
            if off > pos:  # padding between fields: never shown
                pieces.append(E.Piece(E.IMPLICIT, size=off - pos, value=bytes(off - pos)))
            piece = None
            for n, delta in names:
                if n in siblings:
                    piece = _part_piece(siblings[n][0], lo, hi, sz, delta)
                    if piece is not None:
                        break
            if piece is None:
                piece = E.Piece(E.UNAVAILABLE, size=sz, reason=f"{problem}; {PART_UNKNOWN}")
            else:
                known = True
            pieces.append(piece)
            pos = off + sz
        if pos < size:
            pieces.append(E.Piece(E.IMPLICIT, size=size - pos, value=bytes(size - pos)))
        loc = tuple(pieces) if known and leaves else (E.Piece(E.UNAVAILABLE, reason=problem),)
        out.append(LocationRange(lo, hi, loc))
    return out


def _part_piece(var: Variable, lo: int, hi: int, size: int, delta: int) -> E.Piece | None:
    """Where *size* bytes at *delta* inside part variable *var* are for all of [lo, hi), if one place."""
    for sub in var.locations:
        if sub.low <= lo and sub.high >= hi and len(sub.location) == 1:
            p = sub.location[0]
            if p.kind in _MEMORY and not p.indirect:
                return attrs.evolve(p, size=size, offset=p.offset + delta)
            if p.kind in (E.REGISTER, E.IMPLICIT) and delta == 0 and size <= 8:
                return attrs.evolve(p, size=size)
            return None
    return None


def merged_ranges(ranges: Iterable[LocationRange]) -> tuple[LocationRange, ...]:
    """Adjacent ranges with the same location as one."""
    out: list[LocationRange] = []
    for r in ranges:
        if out and out[-1].high == r.low and out[-1].location == r.location:
            out[-1] = LocationRange(out[-1].low, r.high, r.location)
        else:
            out.append(r)
    return tuple(out)


def narrowed(loc: E.Location, needed: tuple[int, int] | None) -> E.Location:
    """*loc* with its unavailable pieces outside the root bytes [start, end) that a capture reads replaced by
    placeholder bytes (never read); unchanged when the capture reads them or reads the whole value."""
    if needed is None or not any(p.kind == E.UNAVAILABLE for p in loc) or any(p.size is None for p in loc):
        return loc
    start, end = needed
    out = []
    pos = 0
    for p in loc:
        if p.kind == E.UNAVAILABLE:
            if pos < end and start < pos + p.size:
                return loc  # the capture needs bytes that are not known
            p = E.Piece(E.IMPLICIT, size=p.size, value=bytes(p.size))
        out.append(p)
        pos += p.size
    return tuple(out)


def known_length(loc: E.Location, root: object, bare: bool) -> E.Piece | None:
    """Where the length of a string or slice is when the value itself is not available at *loc* (its data
    pointer is dead or not kept): the 8-byte piece of its length word, if one readable piece holds it. *root*
    is the root's value shape (``goprobe.ir.values``); *bare*: the capture is the variable itself (no path).
    Both backends then report ``{"@unavailable": why, "@len": n}``: the part that is known."""
    from goprobe.ir import values as V

    if not bare or not isinstance(root, (V.String, V.Slice)) or not any(p.kind == E.UNAVAILABLE for p in loc):
        return None
    pos = 0
    for p in loc:
        if p.size is None:
            return None
        if pos == 8 and p.size == 8 and p.kind in (E.CFA_MEMORY, E.ADDRESS_MEMORY, E.REGISTER, E.IMPLICIT) \
                and not p.indirect:
            return p
        if pos <= 8 < pos + p.size:  # the length shares a piece with other bytes, or is unavailable
            if p.kind in (E.CFA_MEMORY, E.ADDRESS_MEMORY) and not p.indirect:
                return attrs.evolve(p, size=8, offset=p.offset + 8 - pos)
            return None
        pos += p.size
    return None
