"""DWARF location expressions → where a variable's bytes live, as a tuple of pieces.

Go's compiler emits a small subset: ``DW_OP_call_frame_cfa`` frame base and ``DW_OP_fbreg`` stack slots,
registers (``DW_OP_reg*``/``regx``), ``DW_OP_addr`` for globals, and ``DW_OP_piece`` to split a value
across several places. This module turns such an expression into a static description (no memory is read):
each :class:`Piece` says "these N bytes are in register R", "... at memory CFA+off", "... at address A",
"... are this constant", or "... are unavailable".
"""

from __future__ import annotations

import struct

import attrs

from goprobe.dwarf.leb128 import read_sleb as _sleb, read_uleb as _uleb
from goprobe.errors import DwarfFormatError

# Piece kinds
REGISTER = "reg"  # value held in register `reg`
CFA_MEMORY = "cfa"  # memory at CFA + offset
ADDRESS_MEMORY = "addr"  # memory at absolute (link-time) address `offset`
REGISTER_MEMORY = "breg"  # memory at register `reg` + offset
IMPLICIT = "const"  # the bytes are `value`
UNAVAILABLE = "none"  # optimised away here

DW_OP_addr = 0x03
DW_OP_deref = 0x06
DW_OP_const1u, DW_OP_const1s, DW_OP_const2u, DW_OP_const2s = 0x08, 0x09, 0x0A, 0x0B
DW_OP_const4u, DW_OP_const4s, DW_OP_const8u, DW_OP_const8s = 0x0C, 0x0D, 0x0E, 0x0F
DW_OP_constu, DW_OP_consts = 0x10, 0x11
DW_OP_plus_uconst = 0x23
DW_OP_plus = 0x22
DW_OP_minus = 0x1C
DW_OP_lit0, DW_OP_lit31 = 0x30, 0x4F
DW_OP_reg0, DW_OP_reg31 = 0x50, 0x6F
DW_OP_breg0, DW_OP_breg31 = 0x70, 0x8F
DW_OP_regx = 0x90
DW_OP_fbreg = 0x91
DW_OP_bregx = 0x92
DW_OP_piece = 0x93
DW_OP_nop = 0x96
DW_OP_call_frame_cfa = 0x9C
DW_OP_implicit_value = 0x9E
DW_OP_stack_value = 0x9F
DW_OP_addrx = 0xA1
DW_OP_constx = 0xA2


@attrs.frozen(slots=True)
class Piece:
    kind: str
    size: int | None = None  # None: the whole value (no DW_OP_piece)
    reg: int | None = None  # DWARF register number
    offset: int = 0
    value: bytes = b""
    # Memory pieces only: the address computed above holds a pointer; the value is at pointer + post_offset.
    indirect: bool = False
    post_offset: int = 0
    reason: str = ""  # UNAVAILABLE pieces made by goprobe's checks: why (empty: the debug info says so)


Location = tuple[Piece, ...]

UNAVAILABLE_LOCATION: Location = (Piece(UNAVAILABLE),)


class _Deref:
    """A memory location whose contents are the address of the value (``... DW_OP_deref``)."""

    __slots__ = ("inner", "offset")

    def __init__(self, inner: object, offset: int = 0) -> None:
        self.inner = inner
        self.offset = offset


class _Cfa:
    """Marker for the CFA on the evaluation stack."""

    __slots__ = ("offset",)

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset


def decode_location(expr: bytes, *, addr_size: int = 8, address_at_index=None) -> Location:
    """Decode a location expression into pieces. The frame base is assumed to be the CFA (Go's choice)."""
    if not expr:
        return UNAVAILABLE_LOCATION
    pieces: list[Piece] = []
    stack: list[object] = []
    current: Piece | None = None
    pos = 0
    n = len(expr)
    try:
        while pos < n:
            op = expr[pos]
            pos += 1
            if DW_OP_reg0 <= op <= DW_OP_reg31:
                current = Piece(REGISTER, reg=op - DW_OP_reg0)
            elif op == DW_OP_regx:
                reg, pos = _uleb(expr, pos)
                current = Piece(REGISTER, reg=reg)
            elif op == DW_OP_fbreg:
                off, pos = _sleb(expr, pos)
                stack.append(_Cfa(off))
            elif op == DW_OP_call_frame_cfa:
                stack.append(_Cfa(0))
            elif DW_OP_breg0 <= op <= DW_OP_breg31:
                off, pos = _sleb(expr, pos)
                stack.append(("breg", op - DW_OP_breg0, off))
            elif op == DW_OP_bregx:
                reg, pos = _uleb(expr, pos)
                off, pos = _sleb(expr, pos)
                stack.append(("breg", reg, off))
            elif op == DW_OP_addr:
                if addr_size == 8:
                    stack.append(struct.unpack_from("<Q", expr, pos)[0])
                else:
                    stack.append(struct.unpack_from("<I", expr, pos)[0])
                pos += addr_size
            elif op == DW_OP_addrx or op == DW_OP_constx:
                idx, pos = _uleb(expr, pos)
                if address_at_index is None:
                    raise DwarfFormatError("DW_OP_addrx without an address table")
                stack.append(address_at_index(idx))
            elif DW_OP_lit0 <= op <= DW_OP_lit31:
                stack.append(op - DW_OP_lit0)
            elif op in _CONST_FORMATS:
                fmt = _CONST_FORMATS[op]
                stack.append(struct.unpack_from(fmt, expr, pos)[0])
                pos += struct.calcsize(fmt)
            elif op == DW_OP_constu:
                v, pos = _uleb(expr, pos)
                stack.append(v)
            elif op == DW_OP_consts:
                v, pos = _sleb(expr, pos)
                stack.append(v)
            elif op == DW_OP_plus_uconst:
                v, pos = _uleb(expr, pos)
                stack.append(_add(stack.pop(), v))
            elif op == DW_OP_plus:
                b, a = stack.pop(), stack.pop()
                if not isinstance(b, int):
                    a, b = b, a
                stack.append(_add(a, b))
            elif op == DW_OP_minus:
                b, a = stack.pop(), stack.pop()
                if not isinstance(b, int):
                    raise DwarfFormatError("DW_OP_minus of two locations")
                stack.append(_add(a, -b))
            elif op == DW_OP_stack_value:
                v = stack.pop()
                if not isinstance(v, int):
                    raise DwarfFormatError("computed (stack_value) location values are not supported")
                current = Piece(IMPLICIT, value=(v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
            elif op == DW_OP_implicit_value:
                size, pos = _uleb(expr, pos)
                current = Piece(IMPLICIT, value=bytes(expr[pos:pos + size]))
                pos += size
            elif op == DW_OP_piece:
                size, pos = _uleb(expr, pos)
                piece = current if current is not None else (_memory_piece(stack.pop()) if stack else None)
                if piece is None:
                    piece = Piece(UNAVAILABLE)
                pieces.append(attrs.evolve(piece, size=size))
                current = None
                stack.clear()
            elif op == DW_OP_nop:
                pass
            elif op == DW_OP_deref:
                top = stack.pop()
                if isinstance(top, _Deref):
                    raise DwarfFormatError("double DW_OP_deref in a location is not supported")
                stack.append(_Deref(top))
            else:
                raise DwarfFormatError(f"unsupported DWARF location operation {op:#x}")
    except (IndexError, struct.error):
        raise DwarfFormatError(f"truncated DWARF expression {bytes(expr).hex()}") from None
    if current is not None:
        pieces.append(current)
    elif stack:
        pieces.append(_memory_piece(stack.pop()))
    return tuple(pieces) if pieces else UNAVAILABLE_LOCATION


_CONST_FORMATS = {
    DW_OP_const1u: "<B", DW_OP_const1s: "<b", DW_OP_const2u: "<H", DW_OP_const2s: "<h",
    DW_OP_const4u: "<I", DW_OP_const4s: "<i", DW_OP_const8u: "<Q", DW_OP_const8s: "<q",
}


def _add(a: object, v: object) -> object:
    if not isinstance(v, int):  # DW_OP_plus of two locations (two registers, say): no single address
        raise DwarfFormatError("DW_OP_plus of two locations")
    if isinstance(a, _Deref):
        return _Deref(a.inner, a.offset + v)
    if isinstance(a, _Cfa):
        return _Cfa(a.offset + v)
    if isinstance(a, tuple):
        return (a[0], a[1], a[2] + v)
    if isinstance(a, int):
        return a + v
    raise DwarfFormatError("bad operand in DWARF expression")


def _memory_piece(v: object) -> Piece:
    if isinstance(v, _Deref):
        return attrs.evolve(_memory_piece(v.inner), indirect=True, post_offset=v.offset)
    if isinstance(v, _Cfa):
        return Piece(CFA_MEMORY, offset=v.offset)
    if isinstance(v, tuple):
        return Piece(REGISTER_MEMORY, reg=v[1], offset=v[2])
    if isinstance(v, int):
        return Piece(ADDRESS_MEMORY, offset=v)
    raise DwarfFormatError("bad DWARF location")


def repair_pieces(loc: Location, size: int) -> Location:
    """Work around a Go (≤ 1.21) DWARF defect: a piece repeated right after itself, which makes the pieces
    add up to more than the value's size. The same register or memory slot cannot hold two parts of a value,
    so an identical consecutive register/memory piece is dropped — only when the sizes do not add up."""
    if len(loc) < 2 or any(p.size is None for p in loc) or sum(p.size for p in loc) <= size:
        return loc
    out = [loc[0]]
    for p in loc[1:]:
        if p == out[-1] and p.kind in (REGISTER, CFA_MEMORY, ADDRESS_MEMORY, REGISTER_MEMORY):
            continue
        out.append(p)
    return tuple(out)


def member_offset(value: object) -> int:
    """``DW_AT_data_member_location``: a constant, or an expression ``DW_OP_plus_uconst N`` (older producers)."""
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray)) and value and value[0] == DW_OP_plus_uconst:
        return _uleb(value, 1)[0]
    raise DwarfFormatError(f"unsupported member location {value!r}")






def describe(loc: Location, arch: str = "amd64") -> str:
    """Short human text for a location, e.g. ``RAX`` or ``[CFA-24]`` or ``RBX(8)+[CFA+8](8)`` (register names
    of *arch*: ``R0``... on arm64)."""
    from goprobe.dwarf.registers import register_name

    parts = []
    for p in loc:
        if p.kind == REGISTER:
            s = register_name(p.reg, arch)
        elif p.kind == CFA_MEMORY:
            s = f"[CFA{p.offset:+d}]"
        elif p.kind == ADDRESS_MEMORY:
            s = f"[{p.offset:#x}]"
        elif p.kind == REGISTER_MEMORY:
            s = f"[{register_name(p.reg, arch)}{p.offset:+d}]"
        elif p.kind == IMPLICIT:
            s = f"const {p.value.hex()}"
        else:
            s = "unavailable"
        if p.indirect:
            s = f"[{s}{p.post_offset:+d}]" if p.post_offset else f"[{s}]"
        if p.size is not None and len(loc) > 1:
            s += f"({p.size})"
        parts.append(s)
    return "+".join(parts)
