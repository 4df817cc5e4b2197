"""Location lists and range lists, DWARF 4 (``.debug_loc``, ``.debug_ranges``) and 5 (``.debug_loclists``,
``.debug_rnglists`` with ``.debug_addr``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from goprobe.dwarf.leb128 import read_uleb as _uleb
from goprobe.dwarf.expressions import Location, decode_location
from goprobe.errors import DwarfFormatError

_MAX = 0xFFFFFFFFFFFFFFFF


@attrs.frozen(slots=True)
class LocationRange:
    """``location`` holds for PCs in [low, high)."""

    low: int
    high: int
    location: Location




def read_ranges_v4(data: bytes, offset: int, base: int) -> list[tuple[int, int]]:
    out = []
    pos = offset
    try:
        while True:
            lo, hi = struct.unpack_from("<QQ", data, pos)
            pos += 16
            if lo == 0 and hi == 0:
                return out
            if lo == _MAX:
                base = hi
                continue
            if lo != hi:
                out.append((lo + base, hi + base))
    except struct.error:
        raise DwarfFormatError(f"truncated range list at .debug_ranges offset {offset:#x}") from None


def read_rnglist_v5(data: bytes, offset: int, base: int, addrx: Callable[[int], int]) -> list[tuple[int, int]]:
    out = []
    pos = offset
    try:
        while True:
            kind = data[pos]
            pos += 1
            if kind == 0:  # end_of_list
                return out
            if kind == 1:  # base_addressx
                i, pos = _uleb(data, pos)
                base = addrx(i)
                continue
            if kind == 2:  # startx_endx
                a, pos = _uleb(data, pos)
                b, pos = _uleb(data, pos)
                lo, hi = addrx(a), addrx(b)
            elif kind == 3:  # startx_length
                a, pos = _uleb(data, pos)
                n, pos = _uleb(data, pos)
                lo = addrx(a)
                hi = lo + n
            elif kind == 4:  # offset_pair
                a, pos = _uleb(data, pos)
                b, pos = _uleb(data, pos)
                lo, hi = base + a, base + b
            elif kind == 5:  # base_address
                (base,) = struct.unpack_from("<Q", data, pos)
                pos += 8
                continue
            elif kind == 6:  # start_end
                lo, hi = struct.unpack_from("<QQ", data, pos)
                pos += 16
            elif kind == 7:  # start_length
                (lo,) = struct.unpack_from("<Q", data, pos)
                n, pos = _uleb(data, pos + 8)
                hi = lo + n
            else:
                raise DwarfFormatError(f"unknown range list entry {kind} at offset {pos - 1:#x}")
            if lo != hi:
                out.append((lo, hi))
    except (IndexError, struct.error):
        raise DwarfFormatError(f"truncated range list at .debug_rnglists offset {offset:#x}") from None


def read_loclist_v4(data: bytes, offset: int, base: int, **decode_kw) -> list[LocationRange]:
    out = []
    pos = offset
    try:
        while True:
            lo, hi = struct.unpack_from("<QQ", data, pos)
            pos += 16
            if lo == 0 and hi == 0:
                return out
            if lo == _MAX:
                base = hi
                continue
            (n,) = struct.unpack_from("<H", data, pos)
            expr = data[pos + 2:pos + 2 + n]
            pos += 2 + n
            if lo != hi:
                out.append(LocationRange(lo + base, hi + base, decode_location(expr, **decode_kw)))
    except struct.error:
        raise DwarfFormatError(f"truncated location list at .debug_loc offset {offset:#x}") from None


def read_loclist_v5(data: bytes, offset: int, base: int, addrx: Callable[[int], int], **decode_kw) -> list[LocationRange]:
    out = []
    pos = offset
    try:
        while True:
            kind = data[pos]
            pos += 1
            if kind == 0:
                return out
            if kind == 1:  # base_addressx
                i, pos = _uleb(data, pos)
                base = addrx(i)
                continue
            if kind == 6:  # base_address
                (base,) = struct.unpack_from("<Q", data, pos)
                pos += 8
                continue
            if kind == 2:
                a, pos = _uleb(data, pos)
                b, pos = _uleb(data, pos)
                lo, hi = addrx(a), addrx(b)
            elif kind == 3:
                a, pos = _uleb(data, pos)
                n, pos = _uleb(data, pos)
                lo = addrx(a)
                hi = lo + n
            elif kind == 4:
                a, pos = _uleb(data, pos)
                b, pos = _uleb(data, pos)
                lo, hi = base + a, base + b
            elif kind == 5:  # default_location
                lo, hi = 0, _MAX
            elif kind == 7:
                lo, hi = struct.unpack_from("<QQ", data, pos)
                pos += 16
            elif kind == 8:
                (lo,) = struct.unpack_from("<Q", data, pos)
                n, pos = _uleb(data, pos + 8)
                hi = lo + n
            else:
                raise DwarfFormatError(f"unknown location list entry {kind} at offset {pos - 1:#x}")
            n, pos = _uleb(data, pos)
            expr = data[pos:pos + n]
            pos += n
            if lo != hi:
                out.append(LocationRange(lo, hi, decode_location(expr, **decode_kw)))
    except (IndexError, struct.error):
        raise DwarfFormatError(f"truncated location list at .debug_loclists offset {offset:#x}") from None


def normalise(ranges: list[LocationRange]) -> tuple[LocationRange, ...]:
    """Sort by PC and drop exact duplicates (Go sometimes emits a piece twice)."""
    seen = set()
    out = []
    for r in sorted(ranges, key=lambda r: (r.low, r.high)):
        key = (r.low, r.high, r.location)
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return tuple(out)
