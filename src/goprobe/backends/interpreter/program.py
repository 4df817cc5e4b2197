"""The interpreter program: a snapshot plan lowered to compact, versioned bytes (``docs/interpreter-program.md``).

A program is self-contained — layouts, unwind table, type shapes, frame plans and access paths — so another
runtime (for example a library inside a Go program on a platform without eBPF) can execute it without DWARF.
:func:`lower` writes one; :func:`load` reads one back into the node objects the interpreter runs.
"""

from __future__ import annotations

import struct

import attrs

from goprobe.dwarf.expressions import Piece
from goprobe.dwarf.leb128 import read_sleb, read_uleb, write_sleb, write_uleb
from goprobe.dwarf.lists import LocationRange
from goprobe.errors import GoprobeError
from goprobe.ir import access as A
from goprobe.ir import snapshot as S
from goprobe.ir import values as V
from goprobe.ir.verify import VerificationError, verify

MAGIC = b"GOPROBE\x00"
VERSION = 5  # 3: map key/elem_indirect, Opaque.reason; 4: Piece.reason; 5: pprof labels

# Node tags: the position in this tuple, plus one. Append only; a change of meaning needs a new VERSION.
NODES: tuple[type, ...] = (
    S.SnapshotPlan, S.GoroutineLayout, S.FramePlan, S.VariableCapture, V.InterfaceLayout, V.TypeTable,
    V.TypeEntry, V.Scalar, V.String, V.Slice, V.Array, V.Field, V.Struct, V.Pointer, V.Interface, V.ClassicMap,
    V.SwissMap, V.Chan, V.Func, V.Opaque, LocationRange, Piece, A.AccessPath, A.FieldStep, A.DerefStep,
    A.IndexStep, A.LenStep, A.CapStep, A.MapLookupStep, A.TypeAssertStep, V.TypeParam, V.Closure,
)
_TAG = {cls: i + 1 for i, cls in enumerate(NODES)}

# Value kinds.
K_NONE, K_INT, K_FALSE, K_TRUE, K_STR, K_BYTES, K_TUPLE, K_NODE = range(8)


class ProgramError(GoprobeError):
    """The bytes are not an interpreter program this goprobe can run."""


def _fields(cls: type) -> list[attrs.Attribute]:
    # Fields excluded from equality are derived (e.g. the runtime-type index): rebuilt on load.
    return [f for f in attrs.fields(cls) if f.eq]


def lower(plan: S.SnapshotPlan) -> bytes:
    """Encode a snapshot plan as an interpreter program."""
    strings: dict[str, int] = {}
    body = bytearray()
    _put(body, plan, strings)
    head = bytearray(MAGIC) + struct.pack("<HH", VERSION, 0)
    write_uleb(head, len(strings))
    for s in strings:  # dicts keep insertion order: ids are positions
        raw = s.encode()
        write_uleb(head, len(raw))
        head += raw
    return bytes(head + body)


def load(data: bytes) -> S.SnapshotPlan:
    """Decode an interpreter program; raises :class:`ProgramError` on anything malformed."""
    if data[:8] != MAGIC:
        raise ProgramError("not a goprobe interpreter program (bad magic)")
    try:
        version, _flags = struct.unpack_from("<HH", data, 8)
        if version != VERSION:
            raise ProgramError(f"interpreter program version {version}; this goprobe runs version {VERSION}")
        pos = 12
        n, pos = read_uleb(data, pos)
        strings = []
        for _ in range(n):
            size, pos = read_uleb(data, pos)
            strings.append(data[pos:pos + size].decode())
            pos += size
        plan, pos = _get(data, pos, strings)
    except (IndexError, struct.error, UnicodeDecodeError, TypeError, ValueError, KeyError) as exc:
        raise ProgramError(f"malformed interpreter program ({exc})") from None
    if pos != len(data) or not isinstance(plan, S.SnapshotPlan):
        raise ProgramError("malformed interpreter program (trailing bytes or wrong root node)")
    try:
        return verify(plan)
    except VerificationError as exc:
        raise ProgramError(f"malformed interpreter program ({exc})") from None


def _put(out: bytearray, v: object, strings: dict[str, int]) -> None:
    if v is None:
        out.append(K_NONE)
    elif v is True or v is False:
        out.append(K_TRUE if v else K_FALSE)
    elif isinstance(v, int):
        out.append(K_INT)
        write_sleb(out, v)
    elif isinstance(v, str):
        out.append(K_STR)
        write_uleb(out, strings.setdefault(v, len(strings)))
    elif isinstance(v, (bytes, bytearray)):
        out.append(K_BYTES)
        write_uleb(out, len(v))
        out += v
    elif isinstance(v, tuple):
        out.append(K_TUPLE)
        write_uleb(out, len(v))
        for x in v:
            _put(out, x, strings)
    else:
        tag = _TAG.get(type(v))
        if tag is None:
            raise ProgramError(f"cannot encode {type(v).__name__} in an interpreter program")
        out.append(K_NODE)
        write_uleb(out, tag)
        for f in _fields(type(v)):
            _put(out, getattr(v, f.name), strings)


def _get(data: bytes, pos: int, strings: list[str]) -> tuple[object, int]:
    kind = data[pos]
    pos += 1
    if kind == K_NONE:
        return None, pos
    if kind in (K_TRUE, K_FALSE):
        return kind == K_TRUE, pos
    if kind == K_INT:
        return read_sleb(data, pos)
    if kind == K_STR:
        i, pos = read_uleb(data, pos)
        return strings[i], pos
    if kind == K_BYTES:
        n, pos = read_uleb(data, pos)
        if pos + n > len(data):
            raise ValueError("truncated bytes")
        return bytes(data[pos:pos + n]), pos + n
    if kind == K_TUPLE:
        n, pos = read_uleb(data, pos)
        items = []
        for _ in range(n):
            x, pos = _get(data, pos, strings)
            items.append(x)
        return tuple(items), pos
    if kind == K_NODE:
        tag, pos = read_uleb(data, pos)
        if not 1 <= tag <= len(NODES):
            raise ValueError(f"unknown node tag {tag}")
        cls = NODES[tag - 1]
        values = {}
        for f in _fields(cls):
            values[f.name], pos = _get(data, pos, strings)
        if cls is V.TypeTable:
            entries, closures = values["entries"], values["closures"]
            if not isinstance(entries, tuple) or not all(isinstance(e, V.TypeEntry) for e in entries):
                raise ValueError("type table entries must be TypeEntry nodes")
            if not isinstance(closures, tuple) or not all(isinstance(c, V.Closure) for c in closures):
                raise ValueError("type table closures must be Closure nodes")
        return cls(**values), pos
    raise ValueError(f"unknown value kind {kind}")
