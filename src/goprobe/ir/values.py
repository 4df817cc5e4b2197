"""IR for serialising Go values: one immutable *shape* node per Go type, kept in a :class:`TypeTable`.

The compiler turns DWARF types into shapes once; backends execute them (read memory, write the raw value
stream described in ``docs/value-stream.md``) and the decoder walks the same shapes to turn that stream into
JSON. Everything a backend needs is a constant in the node: sizes, offsets, element counts, runtime-structure
layouts. Types refer to each other by index in the table, so recursive Go types are finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary
    from goprobe.dwarf.types import GoType

TypeId = int
MAX_VALUE = 1 << 30  # no single Go value goprobe reads is larger


@attrs.frozen(slots=True)
class Scalar:
    """bool, integers, floats, complex numbers, uintptr, unsafe.Pointer: ``size`` raw bytes."""

    kind: str
    size: int


@attrs.frozen(slots=True)
class String:
    pass


@attrs.frozen(slots=True)
class Slice:
    elem: TypeId
    elem_size: int


@attrs.frozen(slots=True)
class Array:
    elem: TypeId
    elem_size: int
    length: int


@attrs.frozen(slots=True)
class Field:
    name: str
    offset: int
    type: TypeId
    embedded: bool = False


@attrs.frozen(slots=True)
class Struct:
    fields: tuple[Field, ...]


@attrs.frozen(slots=True)
class Pointer:
    elem: TypeId | None  # None: the pointee's type is unknown (its address is all that is recorded)
    elem_size: int


@attrs.frozen(slots=True)
class Interface:
    empty: bool  # eface {type, data} vs iface {itab, data}


@attrs.frozen(slots=True)
class ClassicMap:
    """``runtime.hmap`` buckets (Go ≤ 1.23): offsets inside the header and a bucket."""

    key: TypeId
    elem: TypeId
    count_off: int
    b_off: int
    buckets_off: int
    oldbuckets_off: int
    bucket_size: int
    tophash_off: int
    keys_off: int
    elems_off: int
    overflow_off: int
    key_size: int
    elem_size: int
    # Keys/elements over 128 bytes are stored behind a pointer in the bucket (the slot holds a *K / *V).
    key_indirect: bool = False
    elem_indirect: bool = False


@attrs.frozen(slots=True)
class SwissMap:
    """Swiss tables (Go ≥ 1.24): a directory of tables of groups, or one group for small maps."""

    key: TypeId
    elem: TypeId
    used_off: int
    dir_ptr_off: int
    dir_len_off: int
    table_used_off: int
    groups_data_off: int
    groups_mask_off: int
    group_size: int
    ctrl_off: int
    slots_off: int
    slot_size: int
    key_off: int  # inside a slot
    elem_off: int
    key_size: int
    elem_size: int
    # Keys/elements over 128 bytes are stored behind a pointer in the slot (it holds a *K / *V).
    key_indirect: bool = False
    elem_indirect: bool = False


@attrs.frozen(slots=True)
class Chan:
    elem: TypeId
    elem_size: int
    qcount_off: int
    dataqsiz_off: int
    buf_off: int
    closed_off: int
    sendx_off: int
    recvx_off: int
    recvq_first_off: int
    sendq_first_off: int
    sudog_next_off: int


@attrs.frozen(slots=True)
class Func:
    pass


@attrs.frozen(slots=True)
class Opaque:
    """A type goprobe cannot serialise: *size* raw bytes are written. With a *reason* (its DWARF is incomplete
    or its layout breaks a rule the backends rely on) nothing is read and the value decodes as unavailable
    with that reason: one such type never fails the plan that meets it."""

    size: int
    reason: str = ""


@attrs.frozen(slots=True)
class TypeParam:
    """A value of a type parameter in shaped generic code: its real type is the runtime type in entry
    ``index`` of the frame's dictionary (``.dict``); ``shape`` (same layout) serves when that is unknown."""

    shape: TypeId
    index: int
    # The types this entry holds in the program's instantiations (from its dictionaries), likeliest first
    args: tuple[TypeId, ...] = ()


@attrs.frozen(slots=True)
class Closure:
    """A closure function's captured variables: a func value pointing at a context whose code pointer is
    ``entry`` holds them at the offsets of the ``context`` struct (``DW_AT_go_closure_offset``)."""

    entry: int  # the closure function's entry PC (link-time)
    context: TypeId  # a Struct entry laid over the context, from its start (the code pointer is at 0)


Shape = (Scalar | String | Slice | Array | Struct | Pointer | Interface | ClassicMap | SwissMap | Chan | Func
         | Opaque | TypeParam)


@attrs.frozen(slots=True)
class TypeEntry:
    name: str
    size: int
    shape: Shape
    runtime_type: int | None  # the runtime type descriptor's offset from moduledata.types
    direct_iface: bool  # stored directly in an interface's data word (pointer-shaped)


@attrs.frozen(slots=True)
class InterfaceLayout:
    """What reading an interface's dynamic type needs: offsets in ``internal/abi.Type`` and the itab, the
    direct-value flag (a Kind bit up to Go 1.25, a TFlag bit from 1.26), and where ``moduledata.types`` is."""

    kind_off: int
    tflag_off: int
    str_off: int
    itab_type_off: int
    direct_in_tflag: bool
    direct_mask: int
    types_field_addr: int  # address of firstmoduledata.types (link-time)

    @classmethod
    def from_binary(cls, b: GoBinary) -> InterfaceLayout:
        L = b.runtime
        t = L["type"]
        where, mask = L.direct_iface
        return cls(t.offset("Kind_"), t.offset("TFlag"), t.offset("Str"), L["itab"].offset("Type"),
                   where == "tflag", mask, L.firstmoduledata + L["moduledata"].offset("types"))


@attrs.frozen(slots=True)
class TypeTable:
    """Every type a program may serialise, by id, and the runtime-type → id map interfaces dispatch on."""

    entries: tuple[TypeEntry, ...]
    closures: tuple[Closure, ...] = ()
    by_runtime_type: dict[int, TypeId] = attrs.field(eq=False, repr=False, factory=dict)
    by_closure_entry: dict[int, TypeId] = attrs.field(eq=False, repr=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        # Derived indexes (not part of the program's bytes): rebuilt from the entries wherever a table is made.
        if not self.by_runtime_type:
            self.by_runtime_type.update({e.runtime_type: i for i, e in enumerate(self.entries) if e.runtime_type})
        if not self.by_closure_entry:
            self.by_closure_entry.update({c.entry: c.context for c in self.closures})

    def __getitem__(self, tid: TypeId) -> TypeEntry:
        return self.entries[tid]


def slot_footprints(shape: SwissMap | ClassicMap) -> tuple[int, int]:
    """Bytes a key and an element take in a map's slot or bucket array: a pointer when stored indirectly."""
    return (8 if shape.key_indirect else shape.key_size), (8 if shape.elem_indirect else shape.elem_size)


def entry_problem(entries: Sequence[TypeEntry | None], i: TypeId) -> str | None:
    """What is wrong with entry *i* of a type table (sizes, ids and offsets a backend relies on), or None.
    The verifier rejects a plan for it; :class:`TypeTableBuilder` degrades such an entry instead."""
    n = len(entries)
    e = entries[i]

    def is_int(v: object, lo: int = 0, hi: int = 1 << 64) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v < hi

    def tid_ok(v: object) -> bool:
        return is_int(v, 0, n) and entries[v] is not None

    if not isinstance(e, TypeEntry):
        return "not a TypeEntry"
    if not isinstance(e.name, str):
        return "name must be a string"
    if not is_int(e.size, 0, MAX_VALUE):
        return f"size {e.size!r} is not in [0, {MAX_VALUE})"
    if not (e.runtime_type is None or is_int(e.runtime_type)) or not isinstance(e.direct_iface, bool):
        return "bad runtime_type or direct_iface"
    sh = e.shape
    if isinstance(sh, Scalar):
        return None if isinstance(sh.kind, str) and sh.size == e.size and sh.size in (1, 2, 4, 8, 16) else \
            "scalar size"
    if isinstance(sh, (String, Interface, Func)):
        return None if e.size == (8 if isinstance(sh, Func) else 16) else "header size"
    if isinstance(sh, Slice):
        if not tid_ok(sh.elem):
            return "bad element type id"
        return None if e.size == 24 and sh.elem_size == entries[sh.elem].size else "slice shape"
    if isinstance(sh, Array):
        if not tid_ok(sh.elem) or not is_int(sh.length, 0, MAX_VALUE):
            return "bad element type id or length"
        ok = sh.elem_size == entries[sh.elem].size and sh.elem_size * sh.length <= e.size
        return None if ok else "array shape"
    if isinstance(sh, Struct):
        if not isinstance(sh.fields, tuple):
            return "fields must be a tuple"
        for f in sh.fields:
            if not (isinstance(f, Field) and isinstance(f.name, str) and tid_ok(f.type) and
                    is_int(f.offset, 0, MAX_VALUE)):
                return "bad field"
            if f.offset + entries[f.type].size > e.size:
                return f"field {f.name} outside the struct"
        return None
    if isinstance(sh, Pointer):
        if e.size != 8:
            return "pointer size"
        return None if sh.elem is None or tid_ok(sh.elem) else "bad pointee type id"
    if isinstance(sh, (SwissMap, ClassicMap)):
        if not (tid_ok(sh.key) and tid_ok(sh.elem)):
            return "bad key or element type id"
        if sh.key_size != entries[sh.key].size or sh.elem_size != entries[sh.elem].size:
            return "map key/element sizes"
        for f in attrs.fields(type(sh)):
            v = getattr(sh, f.name)
            if f.name not in ("key", "elem") and not (isinstance(v, bool) or is_int(v, 0, MAX_VALUE)):
                return f"bad {f.name}"
        ks, es = slot_footprints(sh)
        if isinstance(sh, SwissMap):
            ok = (sh.key_off + ks <= sh.slot_size and sh.elem_off + es <= sh.slot_size
                  and sh.slots_off + 8 * sh.slot_size <= sh.group_size and sh.ctrl_off + 8 <= sh.group_size)
            return None if ok else "swiss group layout"
        ok = (sh.keys_off + 8 * ks <= sh.bucket_size and sh.elems_off + 8 * es <= sh.bucket_size
              and sh.overflow_off + 8 <= sh.bucket_size)
        return None if ok else "bucket layout"
    if isinstance(sh, Chan):
        if not tid_ok(sh.elem):
            return "bad element type id"
        ok = all(is_int(getattr(sh, f.name), 0, MAX_VALUE) for f in attrs.fields(Chan) if f.name != "elem")
        return None if ok else "channel layout"
    if isinstance(sh, Opaque):
        return None if is_int(sh.size, 0, MAX_VALUE) and isinstance(sh.reason, str) else "opaque size"
    if isinstance(sh, TypeParam):
        if not (tid_ok(sh.shape) and is_int(sh.index, 0, 1 << 16) and isinstance(sh.args, tuple)
                and all(tid_ok(a) for a in sh.args)):
            return "bad shape, index or args"
        ok = entries[sh.shape].size == e.size and not isinstance(entries[sh.shape].shape, TypeParam)
        return None if ok else "a type parameter's shape has its size and is not itself a type parameter"
    return f"unknown shape {type(sh).__name__}"


class TypeTableBuilder:
    """Compiles DWARF types into shapes, assigning ids on first use (recursive types terminate)."""

    def __init__(self, binary: GoBinary) -> None:
        self._b = binary
        self._layout = binary.runtime
        self._ids: dict[int, TypeId] = {}
        self._entries: list[TypeEntry | None] = []
        self._closures: dict[int, TypeId] = {}
        self._dict_types: dict[str, dict[int, dict[int, GoType]]] = {}  # generic base → index → types
        self._generic_args: dict[int, dict[int, GoType]] | None = None

    def add(self, t: GoType) -> TypeId:
        tid = self._ids.get(t.offset)
        if tid is not None:
            return tid
        tid = len(self._entries)
        self._ids[t.offset] = tid
        self._entries.append(None)  # placeholder while fields refer back to this type
        try:
            shape = self._shape(t)
        except _LAYOUT_ERRORS as exc:  # DWARF this builder does not understand: this type only
            shape = Opaque(0, f"its debug info has a layout goprobe does not understand ({exc})")
        name = t.name or t.kind
        self._entries[tid] = TypeEntry(name, t.size, shape, t.runtime_type, _is_direct_iface(t, shape))
        return tid

    def size_of(self, tid: TypeId) -> int:
        entry = self._entries[tid]
        return entry.size if entry is not None else 0

    def add_interface_candidates(self) -> None:
        """Add the types an interface value may hold at run time, so its dynamic value can be captured:
        the predeclared types and every runtime-typed type of the program's own packages (main and its
        module). Dynamic types outside this set are still named, from the runtime type descriptor."""
        b = self._b
        prefixes = ["main."] + [p + "/" for p in _module_paths(b)] + [p + "." for p in _module_paths(b)]
        for addr, off in b.types.runtime_type_index().items():
            t = b.types.get(off)
            bare = t.name.lstrip("*[]")
            if t.name in _PREDECLARED or any(bare.startswith(p) for p in prefixes) or t.name in _COMMON_DYNAMIC:
                self.add(t)

    def add_type_arguments(self, function: str) -> None:
        """Add the real types a shaped generic *function* may run with: every type its dictionaries
        (``pkg..dict.Name[...]``, static data the linker filled in) refer to, so values of its type
        parameters are serialised by their real types. Also makes *function* the context of the type
        parameters compiled next: where one instantiation alone fits a shape, it stands in when the frame's
        dictionary cannot be read."""
        base = _generic_base(function)
        self._generic_args = None
        if base is None:
            return
        if base not in self._dict_types:
            self._dict_types[base] = by_index = {}
            pkg, _, name = base.rpartition(".")
            prefix = f"{pkg}..dict.{name}["
            elf = self._b.elf
            for sym_name in (elf.symbol_names() if pkg else ()):
                if not sym_name.startswith(prefix):
                    continue
                sym = elf.symbol(sym_name)
                data = elf.read_vaddr(sym.value, sym.size) if sym is not None and sym.size else None
                for i in range(0, len(data or b"") - 7, 8):
                    t = self._b.type_at_runtime_address(int.from_bytes(data[i:i + 8], "little"))
                    if t is not None:
                        self.add(t)
                        by_index.setdefault(i // 8, {})[t.offset] = t
        self._generic_args = self._dict_types[base]

    def add_closures(self, packages: Iterable[str]) -> None:
        """Add the captured-variable layouts of every closure function of *packages*, so a func value that
        is a closure shows what it captured."""
        for pkg in packages:
            for fn in self._b.package_functions(pkg):
                if fn.entry in self._closures:
                    continue
                fields = sorted({(v.closure_offset, v.name, v.type_offset) for v in fn.variables
                                 if v.closure_offset is not None})
                if not fields:
                    continue
                tid = len(self._entries)
                self._entries.append(None)
                shape = Struct(tuple(Field(name, off, self.add(self._b.type_at(t))) for off, name, t in fields))
                size = max(off + self.entry(f.type).size for (off, _n, _t), f in zip(fields, shape.fields))
                self._entries[tid] = TypeEntry(f"closure context of {fn.name}", size, shape, None, False)
                self._closures[fn.entry] = tid

    def add_closures_if_funcs(self) -> None:
        """Closure layouts are only worth their DWARF reads when some captured type is a func."""
        if any(isinstance(e.shape, Func) for e in self._entries if e is not None):
            self.add_closures(user_packages(self._b))

    def entry(self, tid: TypeId) -> TypeEntry:
        """The entry of a type added earlier (complete once its own shape was compiled)."""
        e = self._entries[tid]
        assert e is not None
        return e

    def build(self) -> TypeTable:
        """The table. An entry that breaks a layout rule (:func:`entry_problem`) becomes an :class:`Opaque`
        with the reason, and so does, in turn, any entry that then no longer fits: the plan verifies, and
        only values of those types are unavailable."""
        entries = list(self._entries)
        assert all(e is not None for e in entries)
        changed = True
        while changed:
            changed = False
            for i, e in enumerate(entries):
                problem = entry_problem(entries, i)
                if problem is not None:
                    size = e.size if isinstance(e.size, int) and 0 <= e.size < MAX_VALUE else 0
                    if isinstance(e.shape, Opaque) and e.shape.reason:
                        reason = e.shape.reason
                    elif size != e.size:
                        reason = f"too large to capture ({e.size} bytes)"
                    else:
                        reason = f"goprobe cannot lay out this type ({problem})"
                    entries[i] = TypeEntry(e.name, size, Opaque(0, reason), e.runtime_type, e.direct_iface)
                    changed = True
        self._entries = entries
        entries = tuple(entries)
        closures = tuple(Closure(pc, tid) for pc, tid in sorted(self._closures.items()))
        return TypeTable(entries, closures)

    def _shape(self, t: GoType) -> Shape:
        k = t.kind
        b = self._b
        if t.dict_index is not None and t.shape_offset is not None:
            shape_t = b.type_at(t.shape_offset)
            fits = [c for c in (self._generic_args or {}).get(t.dict_index, {}).values()
                    if c.size == shape_t.size and (c.kind == "ptr") == (shape_t.kind == "ptr")]
            if len(fits) == 1:
                # One instantiation has this shape: it is the real type even without the dictionary.
                fallback = self.add(fits[0])
            elif shape_t.kind == "ptr":
                # Every pointer type shares one shape (``*uint8``): without the real type only the address
                # is known, never a guessed pointee.
                fallback = len(self._entries)
                self._entries.append(TypeEntry(shape_t.name or "pointer", 8, Pointer(None, 0), None, True))
            else:
                fallback = self.add(shape_t)
            return TypeParam(fallback, t.dict_index, tuple(self.add(c) for c in fits))
        if k == "string":
            return String()
        if k in _SCALARS:
            return Scalar(k, t.size)
        if k == "slice":
            elem = t.elem
            if elem is None:
                return Opaque(t.size)
            return Slice(self.add(elem), elem.size)
        if k == "array":
            elem = t.elem
            if elem is None:
                return Opaque(t.size)
            return Array(self.add(elem), elem.size, t.length or 0)
        if k == "struct":
            return Struct(tuple(Field(f.name, f.offset, self.add(t.field_type(f)), f.embedded) for f in t.fields))
        if k == "ptr":
            elem = t.elem
            if elem is None or elem.kind in ("", "unspecified"):
                return Pointer(None, 0)
            return Pointer(self.add(elem), elem.size)
        if k == "interface":
            return Interface(t.empty_interface)
        if k == "func":
            return Func()
        if k == "chan":
            return self._chan(t)
        if k == "map":
            return self._map(t)
        del b
        return Opaque(t.size)

    def _chan(self, t: GoType) -> Shape:
        elem = t.elem
        L = self._layout
        h, w, s = L["hchan"], L["waitq"], L["sudog"]
        if elem is None:
            return Opaque(t.size)
        del w
        return Chan(self.add(elem), elem.size, h.offset("qcount"), h.offset("dataqsiz"), h.offset("buf"),
                    h.offset("closed"), h.offset("sendx"), h.offset("recvx"), h.offset("recvq.first"),
                    h.offset("sendq.first"), s.offset("next"))

    def _map(self, t: GoType) -> Shape:
        key, elem = t.key, t.elem
        header_ptr = t.impl
        header = header_ptr.elem if header_ptr is not None else None
        if key is None or elem is None or header is None:
            return Opaque(t.size)
        kid, eid = self.add(key), self.add(elem)
        if self._layout.map_impl == "classic":
            bucket = self._b.type_at(header.field("buckets").type_offset).elem
            keys_f, values_f = bucket.field("keys"), _values_field(bucket)
            return ClassicMap(
                kid, eid, header.field("count").offset, header.field("B").offset, header.field("buckets").offset,
                header.field("oldbuckets").offset, bucket.size, bucket.field("tophash").offset,
                keys_f.offset, values_f.offset, bucket.field("overflow").offset, key.size, elem.size,
                _indirect(bucket.field_type(keys_f).elem, key), _indirect(bucket.field_type(values_f).elem, elem))
        dir_ptr = header.field("dirPtr")
        table = self._b.type_at(dir_ptr.type_offset).elem.elem
        groups_f = table.field("groups")
        groups = table.field_type(groups_f)
        group = self._b.type_at(groups.field("data").type_offset).elem
        slots_f = group.field("slots")
        slot = group.field_type(slots_f).elem
        key_f, elem_f = slot.field("key"), slot.field("elem")
        return SwissMap(
            kid, eid, header.field("used").offset, dir_ptr.offset, header.field("dirLen").offset,
            table.field("used").offset, groups_f.offset + groups.field("data").offset,
            groups_f.offset + groups.field("lengthMask").offset, group.size, group.field("ctrl").offset,
            slots_f.offset, slot.size, key_f.offset, elem_f.offset, key.size, elem.size,
            _indirect(slot.field_type(key_f), key), _indirect(slot.field_type(elem_f), elem))


# What a DWARF type this builder does not expect raises while its shape is made (a missing field: None).
_LAYOUT_ERRORS = (AttributeError, KeyError, TypeError, ValueError, IndexError, RecursionError)

_SCALARS = frozenset({"bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32",
                      "uint64", "uintptr", "float32", "float64", "complex64", "complex128", "unsafe.Pointer"})


_PREDECLARED = frozenset(_SCALARS - {"unsafe.Pointer"}) | {"string", "[]uint8", "[]string", "[]int", "error",
                                                          "[]interface {}", "map[string]interface {}"}
_COMMON_DYNAMIC = frozenset({"*errors.errorString", "*fmt.wrapError", "*fmt.wrapErrors", "*errors.joinError",
                             "time.Duration", "time.Time", "*time.Location"})


def _module_paths(b: GoBinary) -> list[str]:
    """The main module's path from the build information (``mod`` line), if any."""
    info = b.elf.section_data(".go.buildinfo")
    text = info.decode("utf-8", "replace")
    out = []
    for line in text.split("\n"):
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0] in ("mod", "path") and parts[1] not in ("command-line-arguments",):
            out.append(parts[1])
    return out


MAX_PLAUSIBLE_LEN = 1 << 40  # no string or slice of a real program is longer (bytes or elements)
_USER_TOP = 1 << 47  # amd64 and arm64 user space ends below this address
_LOW_PAGE = 4096  # nothing is ever mapped at the first page


def impossible_header(ptr: int, length: int, cap: int | None = None) -> str | None:
    """Why a string (``cap`` None) or slice header cannot be a real one, or None. Such a header comes from a
    location that the debug info got wrong; shown as it is, it would look like a real value."""
    kind = "string" if cap is None else "slice"
    n = length if cap is None else cap
    if cap is not None and length > cap:
        why = f"its length {length} exceeds its capacity {cap}"
    elif length >= MAX_PLAUSIBLE_LEN or n >= MAX_PLAUSIBLE_LEN:
        why = f"its {'length' if cap is None else 'capacity'} {n} is beyond any real one"
    elif ptr == 0 and n > 0:
        why = f"its data pointer is nil but its {'length' if cap is None else 'capacity'} is {n}"
    elif 0 < ptr < _LOW_PAGE or ptr >= _USER_TOP:
        why = f"its data pointer {ptr:#x} is not a user-space address"
    else:
        return None
    return f"impossible {kind} header: {why} (the debug info's location for it is wrong here)"


def captured_count(length: int, elem_size: int, collection_bytes: int, min_elements: int) -> int:
    """How many elements of a collection a backend captures: the byte budget, but at least min_elements."""
    by_bytes = collection_bytes // elem_size if elem_size else length
    return max(0, min(length, max(min_elements, by_bytes)))


def header_size(shape: SwissMap | ClassicMap | Chan) -> int:
    """Bytes of a map header or an hchan a backend reads at once: every field it uses."""
    if isinstance(shape, SwissMap):
        return max(shape.used_off, shape.dir_ptr_off, shape.dir_len_off) + 8
    if isinstance(shape, ClassicMap):
        return max(shape.count_off, shape.b_off, shape.buckets_off, shape.oldbuckets_off) + 8
    return max(shape.sendq_first_off, shape.recvq_first_off, shape.closed_off) + 8


def user_packages(b: GoBinary) -> list[str]:
    """``main`` and the packages of the main module: the program's own code."""
    mods = _module_paths(b)
    pkgs = set(b.unit_names().values())
    return sorted(p for p in pkgs if p == "main" or any(p == m or p.startswith(m + "/") for m in mods))


def _generic_base(function: str) -> str | None:
    """``main.Pair[go.shape.string,go.shape.int].Describe`` → ``main.Pair``; None if not generic."""
    open_at = function.find("[")
    if open_at < 0:
        return None
    return function[:open_at]


def _indirect(stored: GoType, logical: GoType) -> bool:
    """Whether a map stores *logical* keys (or elements) behind a pointer: the linker's bucket or slot type
    then holds a pointer where the value would be (Go does so above 128 bytes)."""
    return stored.kind == "ptr" and logical.size != stored.size


def _values_field(bucket: GoType):
    # The classic bucket calls its value array "values" (DWARF) or "elems" (source); accept either.
    return bucket.field("values") or bucket.field("elems")


def _is_direct_iface(t: GoType, shape: Shape) -> bool:
    """Values Go stores in the interface data word itself: pointer-shaped types (pointers, maps, chans,
    funcs, unsafe.Pointer, and single-field structs/arrays thereof)."""
    if isinstance(shape, (Pointer, Func)) or t.kind in ("map", "chan", "unsafe.Pointer"):
        return True
    return False
