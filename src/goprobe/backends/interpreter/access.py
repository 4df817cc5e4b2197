"""Evaluates access paths (``goprobe.ir.access``) against memory: from a root value to the captured one.

The state is either a *place* (the value lives in memory at an address) or a *value* (its bytes are already
in hand, e.g. from registers). Each step is bounded; failures return a reason instead of a value.
"""

from __future__ import annotations

import struct

from goprobe.backends.interpreter.values import ValueEncoder
from goprobe.ir import access as A
from goprobe.ir import values as V

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


class PathError(Exception):
    """The path cannot be followed at run time (nil pointer, index out of range, missing key, ...)."""


class _State:
    __slots__ = ("addr", "data")

    def __init__(self, addr: int | None = None, data: bytes | None = None) -> None:
        self.addr = addr
        self.data = data

    def read(self, enc: ValueEncoder, offset: int, size: int) -> bytes:
        if self.data is not None:
            if offset + size > len(self.data):
                raise PathError("value shorter than its type")
            return self.data[offset:offset + size]
        raw = enc.mem.read(self.addr + offset, size)
        if raw is None:
            raise PathError(f"memory at {self.addr + offset:#x} is not readable")
        return raw


def evaluate(enc: ValueEncoder, path: A.AccessPath, *, addr: int | None = None, data: bytes | None = None
             ) -> _State:
    """Follow *path* from a root at *addr* (in memory) or with bytes *data*; return where the result is."""
    st = _State(addr, data)
    for step in path.steps:
        if isinstance(step, A.FieldStep):
            st = _State(data=st.data[step.offset:]) if st.data is not None else _State(st.addr + step.offset)
        elif isinstance(step, A.DerefStep):
            ptr = _U64.unpack(st.read(enc, 0, 8))[0]
            if ptr == 0:
                raise PathError("nil pointer dereference")
            st = _State(ptr)
        elif isinstance(step, A.IndexStep):
            st = _index(enc, st, step)
        elif isinstance(step, A.LenStep):
            st = _State(data=_I64.pack(_len(enc, st, step.container, step.static, step.field_offset, 8)))
        elif isinstance(step, A.CapStep):
            st = _State(data=_I64.pack(_len(enc, st, step.container, step.static, step.field_offset, 16)))
        elif isinstance(step, A.MapLookupStep):
            st = _lookup(enc, st, step)
        elif isinstance(step, A.TypeAssertStep):
            st = _assert(enc, st, step)
        else:
            raise PathError(f"unsupported step {step!r}")
    return st


def _index(enc: ValueEncoder, st: _State, step: A.IndexStep) -> _State:
    i = step.index
    if step.container == "array":
        off = i * step.elem_size
        return _State(data=st.data[off:]) if st.data is not None else _State(st.addr + off)
    ptr, length = struct.unpack("<QQ", st.read(enc, 0, 16))
    if not 0 <= i < length:
        raise PathError(f"index {i} out of range (length {length})")
    return _State(ptr + i * step.elem_size)


def _len(enc: ValueEncoder, st: _State, container: str, static: int, field_offset: int, slice_off: int) -> int:
    if container == "array":
        return static
    if container in ("slice", "string"):
        return _I64.unpack(st.read(enc, slice_off, 8))[0]
    hdr = _U64.unpack(st.read(enc, 0, 8))[0]  # maps and channels are pointers to their headers
    if hdr == 0:
        return 0
    raw = enc.mem.read(hdr + field_offset, 8)
    if raw is None:
        raise PathError(f"header at {hdr:#x} is not readable")
    return _I64.unpack(raw)[0]


def _lookup(enc: ValueEncoder, st: _State, step: A.MapLookupStep) -> _State:
    shape = enc.table[step.map_type].shape
    if not isinstance(shape, (V.SwissMap, V.ClassicMap)):
        raise PathError("not a map")
    m = _U64.unpack(st.read(enc, 0, 8))[0]
    if m == 0:
        raise PathError("nil map")
    hdr = enc.map_header(shape, m)
    if hdr is None:
        raise PathError(f"map header at {m:#x} is not readable")
    key = f'"{step.key.decode("utf-8", "replace")}"' if isinstance(step.key, bytes) else str(step.key)
    for key_addr, elem_addr in enc.map_slots(shape, m, hdr):
        if _key_matches(enc, key_addr, step):
            return _State(elem_addr)
    if enc.timed_out:
        raise PathError(f"key {key} not found before the pause limit was reached; raise limits.pause_ms")
    if enc.scan_cut:
        raise PathError(f"key {key} not found in the part of the map that was searched (the map is too "
                        "large to search whole)")
    raise PathError(f"key {key} is not in the map")


def _key_matches(enc: ValueEncoder, key_addr: int, step: A.MapLookupStep) -> bool:
    if isinstance(step.key, bytes):
        raw = enc.mem.read(key_addr, 16)
        if raw is None:
            return False
        ptr, n = struct.unpack("<QQ", raw)
        if n != len(step.key):
            return False
        return n == 0 or enc.mem.read(ptr, n) == step.key
    raw = enc.mem.read(key_addr, step.key_size)
    if raw is None:
        return False
    mask = (1 << (8 * step.key_size)) - 1
    return int.from_bytes(raw, "little") == step.key & mask


def _assert(enc: ValueEncoder, st: _State, step: A.TypeAssertStep) -> _State:
    word0, word1 = struct.unpack("<QQ", st.read(enc, 0, 16))
    typ = word0
    if not step.empty and word0:
        raw = enc.mem.read(word0 + enc.rt.itab_type_off, 8)
        typ = _U64.unpack(raw)[0] if raw else 0
    if typ == 0:
        raise PathError("interface is nil")
    if typ - enc.types_base() != step.runtime_type:
        name = enc.runtime_type_name(typ)
        raise PathError(f"dynamic type is {name.decode(errors='replace') if name else hex(typ)}")
    if enc.is_direct(typ):
        return _State(data=_U64.pack(word1))
    return _State(word1)
