"""Turns the raw value stream back into JSON-ready Python values, walking the same type table the
backend executed (``goprobe.ir.values``). The JSON shape of each Go kind is documented in
``docs/value-stream.md``.

The decoder trusts nothing: a truncated or corrupt stream yields ``{"@unavailable": "truncated output"}``
for what is missing, never an exception.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from goprobe.backends.interpreter.values import (
    BUDGET,
    NO_PAYLOAD,
    OK,
    PTR_DEPTH,
    PTR_FOLLOWED,
    PTR_NIL,
    PTR_OPAQUE,
    PTR_SEEN,
    REASON,
    UNKNOWN_TYPE,
    UNREADABLE,
)
from goprobe.ir import values as V

_INT_FORMATS = {
    "int8": "<b", "int16": "<h", "int32": "<i", "int64": "<q", "int": "<q",
    "uint8": "<B", "uint16": "<H", "uint32": "<I", "uint64": "<Q", "uint": "<Q", "uintptr": "<Q",
}


class _Truncated(Exception):
    pass


def bytes_text(items: list) -> Any:
    """A ``[]byte`` / ``[N]byte``'s elements shown like a string: text, or ``{"@hex"}`` where not UTF-8 (the
    list as it is when an element could not be read)."""
    if not all(type(x) is int for x in items):
        return items
    raw = bytes(items)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"@hex": raw.hex()}


def _float(v: float) -> Any:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def hexaddr(a: int) -> str:
    return f"0x{a:x}"


class ValueDecoder:
    """Decodes values of one table. *func_name* maps a code address to a function name; *type_name* maps a
    runtime type address to a name (for interface values whose dynamic type is not in the table)."""

    def __init__(self, table: V.TypeTable, func_name: Callable[[int], str | None] = lambda pc: None,
                 type_name: Callable[[int], str | None] = lambda addr: None) -> None:
        self.table = table
        self.func_name = func_name
        self.type_name = type_name

    def decode(self, data: bytes, pos: int, tid: V.TypeId) -> tuple[Any, int]:
        """Decode one value of type *tid* at *pos*; return it and the position after it."""
        self._data = data
        try:
            return self._value(pos, tid)
        except (_Truncated, struct.error, IndexError, TypeError, RecursionError):
            # TypeError: garbage that follows a pointer of unknown type; RecursionError: garbage nested deeply.
            return {"@unavailable": "truncated output"}, len(data)

    # -- helpers ----------------------------------------------------------------------------------------
    def _take(self, pos: int, n: int) -> tuple[bytes, int]:
        end = pos + n
        if end > len(self._data):
            raise _Truncated
        return self._data[pos:end], end

    def _unpack(self, fmt: str, pos: int) -> tuple[tuple, int]:
        size = struct.calcsize(fmt)
        raw, pos = self._take(pos, size)
        return struct.unpack(fmt, raw), pos

    def _value(self, pos: int, tid: V.TypeId) -> tuple[Any, int]:
        (status,), pos = self._unpack("<B", pos)
        if status == UNREADABLE:
            (addr,), pos = self._unpack("<Q", pos)
            return {"@unavailable": f"memory at {hexaddr(addr)} is not readable"}, pos
        if status == BUDGET:
            raise _Truncated
        if status == REASON:
            (n,), pos = self._unpack("<H", pos)
            raw, pos = self._take(pos, n)
            return {"@unavailable": raw.decode("utf-8", "replace")}, pos
        if status != OK:
            raise _Truncated
        entry = self.table[tid]
        shape = entry.shape
        if isinstance(shape, V.Scalar):
            raw, pos = self._take(pos, shape.size)
            return _scalar(shape.kind, raw), pos
        if isinstance(shape, V.String):
            return self._string(pos)
        if isinstance(shape, V.Struct):
            obj: dict[str, Any] = {}
            for f in shape.fields:
                obj[f.name], pos = self._value(pos, f.type)
            return obj, pos
        if isinstance(shape, V.Pointer):
            return self._pointer(pos, shape)
        if isinstance(shape, V.Slice):
            (ptr, length, cap), pos = self._unpack("<QQQ", pos)
            if ptr == 0 and length == 0 and cap == 0:
                n, pos = self._unpack("<I", pos)
                return None, pos
            items, pos = self._items(pos, shape.elem)
            if items is not None and self._is_byte(shape.elem):
                items = bytes_text(items)
            bad = V.impossible_header(ptr, length, cap)
            if bad is not None:
                return {"@unavailable": bad}, pos
            if items is None:
                return {"@unavailable": f"elements at {hexaddr(ptr)} are not readable", "@len": length,
                        "@cap": cap}, pos
            if len(items) < length:
                return {"@len": length, "@cap": cap, "@truncated": True, "@value": items}, pos
            return items, pos
        if isinstance(shape, V.Array):
            (n,), pos = self._unpack("<I", pos)
            items = []
            for _ in range(n):
                v, pos = self._value(pos, shape.elem)
                items.append(v)
            if self._is_byte(shape.elem):
                items = bytes_text(items)
            if n < shape.length:
                return {"@len": shape.length, "@truncated": True, "@value": items}, pos
            return items, pos
        if isinstance(shape, V.Interface):
            return self._interface(pos)
        if isinstance(shape, (V.SwissMap, V.ClassicMap)):
            return self._map(pos, shape)
        if isinstance(shape, V.Chan):
            return self._chan(pos, shape, entry.name)
        if isinstance(shape, V.Func):
            (fv, pc), pos = self._unpack("<QQ", pos)
            (context,), pos = self._unpack("<I", pos)
            captured = None
            if context != UNKNOWN_TYPE:
                captured, pos = self._value(pos, context)
            if fv == 0:
                return None, pos
            out = {"@func": self.func_name(pc) or hexaddr(pc)}
            if captured is not None:
                out["@captured"] = captured
            return out, pos
        if isinstance(shape, V.TypeParam):
            (real,), pos = self._unpack("<I", pos)
            return self._value(pos, shape.shape if real == UNKNOWN_TYPE else real)
        (n,), pos = self._unpack("<I", pos)
        raw, pos = self._take(pos, n)
        if isinstance(shape, V.Opaque) and shape.reason:
            return {"@type": entry.name, "@unavailable": shape.reason}, pos
        return {"@type": entry.name, "@bytes": raw.hex()}, pos

    def _is_byte(self, tid: V.TypeId) -> bool:
        shape = self.table[tid].shape
        return isinstance(shape, V.Scalar) and shape.kind == "uint8"

    def _items(self, pos: int, elem: V.TypeId) -> tuple[list[Any] | None, int]:
        (n,), pos = self._unpack("<I", pos)
        if n == NO_PAYLOAD:
            return None, pos
        items = []
        for _ in range(n):
            v, pos = self._value(pos, elem)
            items.append(v)
        return items, pos

    def _string(self, pos: int) -> tuple[Any, int]:
        (ptr, length, n), pos = self._unpack("<QQI", pos)
        bad = V.impossible_header(ptr, length)
        if n == NO_PAYLOAD:
            if bad is not None:
                return {"@unavailable": bad}, pos
            return {"@unavailable": f"string bytes at {hexaddr(ptr)} are not readable", "@len": length}, pos
        raw, pos = self._take(pos, n)
        if bad is not None:
            return {"@unavailable": bad}, pos
        try:
            text: Any = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = {"@hex": raw.hex()}
        if n < length:
            return {"@len": length, "@truncated": True, "@value": text}, pos
        return text, pos

    def _pointer(self, pos: int, shape: V.Pointer) -> tuple[Any, int]:
        (addr, kind), pos = self._unpack("<QB", pos)
        if kind == PTR_NIL:
            return None, pos
        if kind == PTR_FOLLOWED:
            v, pos = self._value(pos, shape.elem)
            if isinstance(v, dict) and not any(k.startswith("@") for k in v):
                return {"@addr": hexaddr(addr), **v}, pos
            return {"@addr": hexaddr(addr), "@value": v}, pos
        if kind == PTR_SEEN:
            return {"@addr": hexaddr(addr), "@cycle": True}, pos
        if kind == PTR_DEPTH:
            return {"@addr": hexaddr(addr), "@truncated": "pointer depth"}, pos
        if kind == PTR_OPAQUE:
            return {"@addr": hexaddr(addr)}, pos
        raise _Truncated

    def _interface(self, pos: int) -> tuple[Any, int]:
        (typ, data, tid), pos = self._unpack("<QQI", pos)
        if typ == 0:
            (_n,), pos = self._unpack("<B", pos)
            return None, pos
        if tid == UNKNOWN_TYPE:
            (n,), pos = self._unpack("<B", pos)
            raw, pos = self._take(pos, n)
            name = raw.decode("utf-8", "replace") or self.type_name(typ) or hexaddr(typ)
            return {"@type": name, "@unavailable": "dynamic type not in the capture plan", "@data": hexaddr(data)}, pos
        v, pos = self._value(pos, tid)
        name = self.table[tid].name
        if isinstance(v, dict) and not any(k.startswith("@") for k in v) and isinstance(
                self.table[tid].shape, V.Struct):
            return {"@type": name, **v}, pos
        return {"@type": name, "@value": v}, pos

    def _map(self, pos: int, shape: V.SwissMap | V.ClassicMap) -> tuple[Any, int]:
        (m,), pos = self._unpack("<Q", pos)
        if m == 0:
            return None, pos
        (bad,), pos = self._unpack("<B", pos)
        if bad:
            return {"@unavailable": f"map header at {hexaddr(m)} is not readable"}, pos
        (count, n), pos = self._unpack("<QI", pos)
        entries = []
        for _ in range(n):
            k, pos = self._value(pos, shape.key)
            v, pos = self._value(pos, shape.elem)
            entries.append((k, v))
        if isinstance(self.table[shape.key].shape, V.String) and all(isinstance(k, str) for k, _ in entries):
            obj: dict[str, Any] = dict(entries)  # string keys: a plain JSON object
            if n < count:
                return {"@len": count, "@truncated": True, "@value": obj}, pos
            return obj, pos
        out: dict[str, Any] = {"@len": count, "@entries": [[k, v] for k, v in entries]}
        if n < count:
            out["@truncated"] = True
        return out, pos

    def _chan(self, pos: int, shape: V.Chan, name: str) -> tuple[Any, int]:
        (h,), pos = self._unpack("<Q", pos)
        if h == 0:
            return None, pos
        (bad,), pos = self._unpack("<B", pos)
        if bad:
            return {"@unavailable": f"channel at {hexaddr(h)} is not readable"}, pos
        (qcount, size, closed, n), pos = self._unpack("<QQBI", pos)
        items = []
        for _ in range(n):
            v, pos = self._value(pos, shape.elem)
            items.append(v)
        (recv, send), pos = self._unpack("<II", pos)
        return {"@chan": name, "@addr": hexaddr(h), "len": qcount, "cap": size, "closed": bool(closed),
                "items": items, "waiting_receivers": recv, "waiting_senders": send}, pos


def _scalar(kind: str, raw: bytes) -> Any:
    if kind == "bool":
        return raw[0] != 0
    fmt = _INT_FORMATS.get(kind)
    if fmt is not None:
        return struct.unpack(fmt, raw)[0]
    if kind == "float32":
        return _float(struct.unpack("<f", raw)[0])
    if kind == "float64":
        return _float(struct.unpack("<d", raw)[0])
    if kind == "complex64":
        re, im = struct.unpack("<ff", raw)
        return [_float(re), _float(im)]
    if kind == "complex128":
        re, im = struct.unpack("<dd", raw)
        return [_float(re), _float(im)]
    if kind == "unsafe.Pointer":
        v = struct.unpack("<Q", raw)[0]
        return None if v == 0 else {"@addr": hexaddr(v)}
    return raw.hex()
