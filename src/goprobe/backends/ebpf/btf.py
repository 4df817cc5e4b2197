"""A minimal BTF reader: find type ids by name and kind (vmlinux, or a program's ``.BTF``), and read the
``func_info``/``line_info`` records of a program's ``.BTF.ext``.

Formats: ``include/uapi/linux/btf.h`` (types) and the ``.BTF.ext`` layout that LLVM writes and libbpf reads.
The kernel's BTF is ~5 MB with ~150k types: types are indexed lazily on the first lookup (one pass that
records each type's offset, name and kind in arrays) and names are never decoded wholesale — a lookup finds
the name's offset in the string section and then the types that use it. ``vmlinux()`` caches per process.
"""

from __future__ import annotations

import struct
import threading
from array import array
from pathlib import Path

import attrs

from goprobe.backends.ebpf.errors import BtfError

BTF_MAGIC = 0xEB9F

KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

KIND_NAMES = {KIND_INT: "INT", KIND_PTR: "PTR", KIND_ARRAY: "ARRAY", KIND_STRUCT: "STRUCT", KIND_UNION: "UNION",
              KIND_ENUM: "ENUM", KIND_FWD: "FWD", KIND_TYPEDEF: "TYPEDEF", KIND_VOLATILE: "VOLATILE",
              KIND_CONST: "CONST", KIND_RESTRICT: "RESTRICT", KIND_FUNC: "FUNC", KIND_FUNC_PROTO: "FUNC_PROTO",
              KIND_VAR: "VAR", KIND_DATASEC: "DATASEC", KIND_FLOAT: "FLOAT", KIND_DECL_TAG: "DECL_TAG",
              KIND_TYPE_TAG: "TYPE_TAG", KIND_ENUM64: "ENUM64"}

# Bytes that follow the 12-byte common header: (fixed, per vlen item).
_TRAILER = {KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12), KIND_ENUM: (0, 8),
            KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12), KIND_DECL_TAG: (4, 0),
            KIND_ENUM64: (0, 12)}

VMLINUX_PATH = Path("/sys/kernel/btf/vmlinux")


@attrs.frozen(slots=True)
class BtfType:
    """One type's common header: ``size_or_type`` is a size for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT and a
    referenced type id otherwise (for FUNC: its FUNC_PROTO; ``vlen`` of a FUNC is its linkage)."""

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, str(self.kind))


@attrs.frozen(slots=True)
class Member:
    name: str
    type_id: int
    bit_offset: int


class Btf:
    """Parsed BTF type data. Type ids start at 1 (0 is ``void``)."""

    def __init__(self, data: bytes, *, source: str = "BTF") -> None:
        self.source = source
        self.data = bytes(data)
        if len(self.data) < 24:
            raise BtfError(f"{source}: {len(self.data)} bytes is too short for a BTF header")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", self.data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"{source}: bad BTF magic {magic:#x} (big-endian BTF is not supported)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<4I", self.data, 8)
        self.version = version
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._strings = self.data[hdr_len + str_off: hdr_len + str_off + str_len]
        if self._types_end > len(self.data) or len(self._strings) != str_len:
            raise BtfError(f"{source}: type or string section runs past the end of the data")
        self._offsets: array | None = None
        self._name_offs: array | None = None
        self._infos: array | None = None
        self._lookups: dict[tuple[str, int | None], list[int]] = {}
        self._lock = threading.Lock()

    # -- index ------------------------------------------------------------------------------------------
    def _index(self) -> None:
        if self._offsets is not None:
            return
        with self._lock:
            if self._offsets is not None:
                return
            offsets = array("I", [0])      # id 0 is void: a placeholder keeps ids as indexes
            name_offs = array("I", [0])
            infos = array("I", [0])
            data, pos, end = self.data, self._types_start, self._types_end
            unpack = struct.Struct("<II").unpack_from
            trailer = _TRAILER
            while pos < end:
                name_off, info = unpack(data, pos)
                offsets.append(pos)
                name_offs.append(name_off)
                infos.append(info)
                kind = (info >> 24) & 0x1F
                fixed, per = trailer.get(kind, (0, 0))
                pos += 12 + fixed + per * (info & 0xFFFF)
            if pos != end:
                raise BtfError(f"{self.source}: type section does not end on a type boundary")
            self._name_offs, self._infos, self._offsets = name_offs, infos, offsets

    def __len__(self) -> int:
        """Number of types, ``void`` included."""
        self._index()
        return len(self._offsets)

    def name_at(self, offset: int) -> str:
        """The string at *offset* of the string section."""
        end = self._strings.find(b"\0", offset)
        if offset >= len(self._strings) or end < 0:
            raise BtfError(f"{self.source}: string offset {offset} is outside the string section")
        return self._strings[offset:end].decode(errors="replace")

    # -- lookups ----------------------------------------------------------------------------------------
    def type(self, type_id: int) -> BtfType:
        """The type with id *type_id*."""
        self._index()
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"{self.source}: no type id {type_id} (it has {len(self._offsets) - 1} types)")
        name_off, info, size_or_type = struct.unpack_from("<III", self.data, self._offsets[type_id])
        return BtfType(type_id, (info >> 24) & 0x1F, self.name_at(name_off), info & 0xFFFF,
                       bool(info >> 31), size_or_type)

    def find_all(self, name: str, kind: int | None = None) -> list[int]:
        """Ids of every type called *name* (of *kind*, when given)."""
        key = (name, kind)
        hit = self._lookups.get(key)
        if hit is not None:
            return list(hit)
        self._index()
        name_offsets = self._string_offsets(name)
        out: list[int] = []
        if name_offsets:
            infos = self._infos
            for i, n in enumerate(self._name_offs):
                if n in name_offsets and (kind is None or (infos[i] >> 24) & 0x1F == kind):
                    out.append(i)
        self._lookups[key] = out
        return list(out)

    def find(self, name: str, kind: int | None = None) -> int:
        """The id of the one type called *name* (of *kind*); raises :class:`BtfError` when there is none."""
        ids = self.find_all(name, kind)
        if not ids:
            what = KIND_NAMES.get(kind, "type") if kind is not None else "type"
            raise BtfError(f"{self.source} has no {what} named {name!r}"
                           + ("; the running kernel may be too old for this feature" if self.source ==
                              "vmlinux BTF" else ""))
        return ids[0]

    def members(self, type_id: int) -> list[Member]:
        """The members of a STRUCT or UNION."""
        t = self.type(type_id)
        if t.kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"{self.source}: type {type_id} ({t.name!r}) is a {t.kind_name}, not a struct")
        pos = self._offsets[type_id] + 12
        out = []
        for k in range(t.vlen):
            name_off, tid, off = struct.unpack_from("<III", self.data, pos + 12 * k)
            # With kind_flag the offset's top 8 bits are a bitfield size.
            out.append(Member(self.name_at(name_off), tid, off & 0xFFFFFF if t.kind_flag else off))
        return out

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of *member* in the struct *struct_name* (e.g. ``task_struct``, ``pid``)."""
        sid = self.find(struct_name, KIND_STRUCT)
        for m in self.members(sid):
            if m.name == member:
                return m.bit_offset // 8
        raise BtfError(f"{self.source}: struct {struct_name} has no member {member!r}")

    def _string_offsets(self, name: str) -> set[int]:
        needle = name.encode()
        if not needle:
            return set()
        strings, out, start = self._strings, set(), 0
        while True:
            i = strings.find(needle + b"\0", start)
            if i < 0:
                return out
            if i == 0 or strings[i - 1] == 0:  # a whole string, not another's tail
                out.add(i)
            start = i + 1


_vmlinux: Btf | None = None
_vmlinux_lock = threading.Lock()


def vmlinux() -> Btf:
    """The running kernel's BTF (``/sys/kernel/btf/vmlinux``), parsed once per process."""
    global _vmlinux
    with _vmlinux_lock:
        if _vmlinux is None:
            try:
                data = VMLINUX_PATH.read_bytes()
            except OSError as e:
                raise BtfError(f"cannot read the kernel's BTF at {VMLINUX_PATH}: {e.strerror}; the kernel must be "
                               "built with CONFIG_DEBUG_INFO_BTF=y") from None
            _vmlinux = Btf(data, source="vmlinux BTF")
        return _vmlinux


# -- .BTF.ext ---------------------------------------------------------------------------------------------

@attrs.frozen(slots=True)
class FuncInfo:
    """A ``bpf_func_info`` as in ``.BTF.ext``: ``insn_off`` is in BYTES from the section start."""

    insn_off: int
    type_id: int


@attrs.frozen(slots=True)
class LineInfo:
    """A ``bpf_line_info`` as in ``.BTF.ext``: ``insn_off`` in BYTES; the other fields index ``.BTF``'s strings."""

    insn_off: int
    file_name_off: int
    line_off: int
    line_col: int


class BtfExt:
    """``.BTF.ext``: func_info and line_info records per code section (section names resolve through the
    program's ``.BTF`` strings)."""

    def __init__(self, data: bytes, btf: Btf) -> None:
        if len(data) < 24:
            raise BtfError(f".BTF.ext: {len(data)} bytes is too short for its header")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f".BTF.ext: bad magic {magic:#x}")
        fi_off, fi_len, li_off, li_len = struct.unpack_from("<4I", data, 8)
        self.func_info: dict[str, list[FuncInfo]] = self._records(
            data, hdr_len + fi_off, fi_len, btf, 8,
            lambda b, p: FuncInfo(*struct.unpack_from("<II", b, p)))
        self.line_info: dict[str, list[LineInfo]] = self._records(
            data, hdr_len + li_off, li_len, btf, 16,
            lambda b, p: LineInfo(*struct.unpack_from("<IIII", b, p)))

    @staticmethod
    def _records(data: bytes, start: int, length: int, btf: Btf, min_size: int, make) -> dict:
        # Layout: u32 record size, then per section {u32 sec_name_off, u32 count, count records}.
        out: dict[str, list] = {}
        if length == 0:
            return out
        end = start + length
        if end > len(data):
            raise BtfError(".BTF.ext: a record section runs past the end of the data")
        (rec_size,) = struct.unpack_from("<I", data, start)
        if rec_size < min_size:
            raise BtfError(f".BTF.ext: record size {rec_size} is smaller than the kernel's {min_size}")
        pos = start + 4
        while pos < end:
            sec_off, count = struct.unpack_from("<II", data, pos)
            pos += 8
            recs = out.setdefault(btf.name_at(sec_off), [])
            for _ in range(count):
                recs.append(make(data, pos))
                pos += rec_size
        if pos != end:
            raise BtfError(".BTF.ext: records do not end where the header says")
        return out
