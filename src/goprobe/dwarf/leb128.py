"""LEB128 integers, the variable-length encoding DWARF uses everywhere."""

from __future__ import annotations


def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 at *pos*: (value, position after it). Raises IndexError if truncated."""
    b = data[pos]
    if b < 0x80:  # most values fit in one byte
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    while True:
        pos += 1
        b = data[pos]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos + 1
        shift += 7


def read_sleb(data: bytes, pos: int) -> tuple[int, int]:
    """Signed LEB128 at *pos*: (value, position after it). Raises IndexError if truncated."""
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos


def write_uleb(out: bytearray, v: int) -> None:
    """Append *v* (>= 0) as unsigned LEB128."""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def write_sleb(out: bytearray, v: int) -> None:
    """Append *v* as signed LEB128."""
    while True:
        b = v & 0x7F
        v >>= 7
        done = (v == 0 and not b & 0x40) or (v == -1 and b & 0x40)
        out.append(b if done else b | 0x80)
        if done:
            return
