"""Offsets and sizes of the Go runtime structures the backends read, taken from DWARF by field name.

Nothing is hard-coded per release: each structure is found by (one of its historical) names and each field by
name. :meth:`RuntimeLayout.read` fails with :class:`~goprobe.errors.RuntimeLayoutError` naming the structure
and field when a release drops or renames one, so a new Go release breaks loudly, not silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from goprobe.errors import RuntimeLayoutError, UnknownTypeError

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary
    from goprobe.dwarf.types import GoType


@attrs.frozen(slots=True)
class FieldLayout:
    offset: int
    size: int


@attrs.frozen(slots=True)
class StructLayout:
    """One runtime structure: the DWARF name it was found under, its size, and the fields goprobe uses."""

    name: str
    size: int
    fields: dict[str, FieldLayout]

    def __getitem__(self, field: str) -> FieldLayout:
        return self.fields[field]

    def offset(self, field: str) -> int:
        return self.fields[field].offset

    def has(self, field: str) -> bool:
        return field in self.fields


# (key, candidate DWARF names (newest first), required fields, optional fields, needed: always or only if present)
# A dotted field "sched.pc" is a field of a nested struct; offsets are from the start of the outer structure.
_SPEC: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], bool], ...] = (
    ("g", ("runtime.g",),
     ("goid", "atomicstatus", "sched.pc", "sched.sp", "sched.bp", "stack.lo", "stack.hi", "m", "waitreason",
      "waitsince", "labels", "gopc", "startpc", "syscallsp", "syscallpc"),
     ("sched.lr", "sched.ctxt", "parentGoid", "lockedm"), True),
    ("m", ("runtime.m",), ("curg", "g0", "procid", "id"), ("gsignal",), True),
    ("type", ("internal/abi.Type", "runtime._type"), ("Size_", "Kind_", "TFlag", "Str", "PtrToThis"), (), True),
    ("itab", ("internal/abi.ITab", "runtime.itab"), ("Inter", "Type", "Fun"), (), True),
    ("moduledata", ("runtime.moduledata",), ("types", "etypes", "text", "etext", "next"), ("gofunc", "rodata"), True),
    ("hchan", ("runtime.hchan",), ("qcount", "dataqsiz", "buf", "elemsize", "closed", "elemtype", "sendx", "recvx",
                                    "recvq.first", "sendq.first"), (), True),
    ("waitq", ("runtime.waitq",), ("first", "last"), (), True),
    ("sudog", ("runtime.sudog",), ("g", "next", "elem"), (), True),
    ("funcval", ("runtime.funcval",), ("fn",), (), True),
    ("string", ("string",), ("str", "len"), (), True),
    ("slice", ("[]uint8",), ("array", "len", "cap"), (), True),
    ("iface", ("runtime.iface",), ("tab", "data"), (), True),
    ("eface", ("runtime.eface",), ("_type", "data"), (), True),
    # Classic hash maps (Go ≤ 1.23, or GOEXPERIMENT=noswissmap on 1.24–1.25).
    ("hmap", ("runtime.hmap",), ("count", "flags", "B", "buckets", "oldbuckets", "nevacuate"), ("noverflow", "hash0"),
     False),
    # Swiss tables (Go ≥ 1.24).
    ("swiss_map", ("internal/runtime/maps.Map",), ("used", "dirPtr", "dirLen", "globalDepth"), ("seed",), False),
    ("swiss_table", ("internal/runtime/maps.table",), ("used", "capacity", "groups.data", "groups.lengthMask"),
     ("localDepth",), False),
)

# Field-name changes across releases: spec name → older spellings to try.
_ALIASES = {
    ("itab", "Inter"): ("inter",),
    ("itab", "Type"): ("_type",),
    ("itab", "Fun"): ("fun",),
    ("type", "Size_"): ("size",),
    ("type", "Kind_"): ("kind",),
    ("type", "TFlag"): ("tflag",),
    ("type", "Str"): ("str",),
    ("type", "PtrToThis"): ("ptrToThis",),
}


@attrs.frozen(slots=True)
class RuntimeLayout:
    go_version: str
    structs: dict[str, StructLayout]
    allgs: int  # address of runtime.allgs (a []*g)
    allglen: int  # address of runtime.allglen
    firstmoduledata: int
    map_impl: str  # "swiss" or "classic"
    direct_iface: tuple[str, int]  # ("tflag"|"kind", bit mask) marking values stored directly in an interface
    kind_mask: int
    g_status_size: int  # atomicstatus is a uint32 or an atomic.Uint32 wrapper: the value's size

    def __getitem__(self, key: str) -> StructLayout:
        return self.structs[key]

    @classmethod
    def read(cls, binary: GoBinary) -> RuntimeLayout:
        cached = binary.cache.get("runtime_layout")
        if cached is not None:
            return cached
        structs: dict[str, StructLayout] = {}
        for key, names, required, optional, always in _SPEC:
            t = _find(binary, names, full_scan=always)
            if t is None:
                if always:
                    raise RuntimeLayoutError(
                        f"{binary.path}: runtime structure {' / '.join(names)} not found in DWARF ({binary.go_version}); "
                        "this Go release changed a structure goprobe reads — goprobe needs an update")
                continue
            fields: dict[str, FieldLayout] = {}
            for f in required + optional:
                loc = _field(binary, t, f, _ALIASES.get((key, f), ()))
                if loc is None:
                    if f in required:
                        raise RuntimeLayoutError(
                            f"{binary.path}: runtime structure {t.name} has no field {f!r} in {binary.go_version}; "
                            "this Go release changed a structure goprobe reads — goprobe needs an update")
                    continue
                fields[f] = loc
            structs[key] = StructLayout(t.name, t.size, fields)
        if "swiss_map" in structs and "swiss_table" in structs:
            map_impl = "swiss"
        elif "hmap" in structs:
            map_impl = "classic"
        else:
            raise RuntimeLayoutError(f"{binary.path}: neither runtime.hmap nor internal/runtime/maps.Map is in DWARF")
        allgs = binary.global_variable("runtime.allgs").address
        allglen = binary.global_variable("runtime.allglen").address
        firstmod = binary.global_variable("runtime.firstmoduledata").address
        tflag_direct = binary.constant("internal/abi.TFlagDirectIface")
        kind_direct = binary.constant("internal/abi.KindDirectIface")
        if tflag_direct is not None and binary.go_version_tuple >= (1, 26):
            direct = ("tflag", tflag_direct)
        elif kind_direct is not None:
            direct = ("kind", kind_direct)
        else:
            raise RuntimeLayoutError(f"{binary.path}: cannot tell how interfaces mark direct values "
                                     "(no internal/abi.KindDirectIface or TFlagDirectIface constant)")
        kind_mask = binary.constant("internal/abi.KindMask")
        if kind_mask is None:
            kind_mask = (1 << 5) - 1
        status = _field(binary, binary.type_named("runtime.g"), "atomicstatus", ())
        status_size = status.size if status else 4
        layout = cls(binary.go_version, structs, allgs, allglen, firstmod, map_impl, direct, kind_mask, status_size)
        return binary.cache.put("runtime_layout", layout)


def _find(binary: GoBinary, names: tuple[str, ...], full_scan: bool) -> GoType | None:
    # The linker puts every type in the runtime package's unit: try that cheap index for all candidates first.
    for n in names:
        t = binary.runtime_unit_type(n)
        if t is not None:
            return t
    if not full_scan:
        return None
    for n in names:
        try:
            return binary.type_named(n)
        except UnknownTypeError:
            continue
    return None


def _field(binary: GoBinary, t: GoType, path: str, aliases: tuple[str, ...]) -> FieldLayout | None:
    offset = 0
    cur = t
    parts = path.split(".")
    for i, part in enumerate(parts):
        f = cur.field(part)
        if f is None and i == 0:
            for alt in aliases:
                f = cur.field(alt)
                if f is not None:
                    break
        if f is None:
            return None
        offset += f.offset
        cur = cur.field_type(f)
    size = cur.size
    # atomic.Uint32 and friends wrap the value in a struct: report the value's own size.
    if cur.kind == "struct" and cur.name.startswith(("internal/runtime/atomic.", "runtime/internal/atomic.", "sync/atomic.")):
        inner = cur.field("value")
        if inner is not None:
            offset += inner.offset
            size = cur.field_type(inner).size
    return FieldLayout(offset, size)


__all__ = ["RuntimeLayout", "StructLayout", "FieldLayout"]
