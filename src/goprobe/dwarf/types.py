"""Go's type model, read from DWARF type DIEs on demand.

Types reference each other by DIE offset (Go types are often recursive); :class:`TypeTable` parses a type the
first time it is asked for and keeps it. Go encodes several kinds as typedefs (interfaces, maps, channels,
funcs, and named non-struct types); ``DW_AT_go_kind`` decides which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from goprobe.dwarf import constants as C
from goprobe.dwarf.expressions import member_offset
from goprobe.errors import DwarfFormatError

if TYPE_CHECKING:
    from goprobe.dwarf.dies import Die, UnitTable

SCALAR_KINDS = frozenset({
    "bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "uintptr",
    "float32", "float64", "complex64", "complex128", "unsafe.Pointer",
})


@attrs.frozen(slots=True)
class Field:
    name: str
    type_offset: int
    offset: int
    embedded: bool


@attrs.frozen(slots=True)
class GoType:
    """One Go type. ``kind`` is the Go kind of the underlying type (``int``, ``struct``, ``map``, ...).

    References to other types are DIE offsets; resolve them with the table (``table.get(off)``) or the
    convenience properties.
    """

    offset: int
    name: str
    kind: str
    size: int
    runtime_type: int | None = None  # runtime type descriptor, as an offset from moduledata.types (DW_AT_go_runtime_type)
    elem_offset: int | None = None  # pointer/slice/array/chan elem, map value
    key_offset: int | None = None  # map key
    length: int | None = None  # array length
    fields: tuple[Field, ...] = ()
    impl_offset: int | None = None  # the runtime representation behind a typedef (iface/eface, map header, hchan)
    empty_interface: bool = False
    dict_index: int | None = None  # generic shape types: index into the dictionary
    shape_offset: int | None = None  # a dictionary-indexed type parameter: its shape type's DIE
    named: bool = False  # declared with a name (``type X ...``) rather than a type literal
    table: TypeTable | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def elem(self) -> GoType | None:
        return None if self.elem_offset is None else self._t().get(self.elem_offset)

    @property
    def key(self) -> GoType | None:
        return None if self.key_offset is None else self._t().get(self.key_offset)

    @property
    def impl(self) -> GoType | None:
        return None if self.impl_offset is None else self._t().get(self.impl_offset)

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def field_type(self, f: Field) -> GoType:
        return self._t().get(f.type_offset)

    def _t(self) -> TypeTable:
        if self.table is None:
            raise RuntimeError("type is detached from its table")
        return self.table

    def describe(self) -> str:
        return self.name or self.kind


class TypeTable:
    """Lazily parsed Go types of one binary, by DIE offset; plus indexes built on first use."""

    def __init__(self, units: UnitTable, store: dict[int, GoType] | None = None, persist=None) -> None:
        self._units = units
        self._by_offset: dict[int, GoType] = {}
        # Persisted types (detached from any table) from the index cache; filled as types are parsed.
        self._store = store if store is not None else {}
        self._persist = persist  # the index cache, for the whole-binary name and runtime-type indexes
        self._by_name: dict[str, int] | None = None
        self._by_runtime_type: dict[int, int] | None = None

    def get(self, offset: int) -> GoType:
        t = self._by_offset.get(offset)
        if t is None:
            stored = self._store.get(offset)
            if stored is not None:
                t = attrs.evolve(stored, table=self)
            else:
                t = self._parse(self._units.die_at(offset))
                self._store[offset] = attrs.evolve(t, table=None)
            self._by_offset[offset] = t
        return t

    def _parse(self, die: Die) -> GoType:
        a = die.attrs
        tag = die.tag
        name = a.get(C.AT_name, "")
        kind = C.GO_KINDS.get(a.get(C.AT_go_kind, 0) & 0x1F, "")
        size = a.get(C.AT_byte_size, 0)
        rtype = a.get(C.AT_go_runtime_type)
        dict_index = a.get(C.AT_go_dict_index)
        target = a.get(C.AT_type)
        common = dict(offset=die.offset, name=name, size=size, runtime_type=rtype, dict_index=dict_index, table=self)
        if tag == C.TAG_base_type:  # Go also uses it for named basic types (``type Celsius float64``)
            return GoType(kind=kind or _base_kind(name), named=_is_named(name), **common)
        if tag == C.TAG_pointer_type:
            if name == "unsafe.Pointer" or kind == "unsafe.Pointer" or target is None:
                return GoType(kind="unsafe.Pointer", **{**common, "size": size or 8})
            return GoType(kind="ptr", elem_offset=target, **{**common, "size": size or 8})
        if tag == C.TAG_structure_type:
            fields = []
            for child in die.children():
                if child.tag != C.TAG_member:
                    continue
                ca = child.attrs
                fields.append(Field(
                    name=ca.get(C.AT_name, ""),
                    type_offset=ca.get(C.AT_type, 0),
                    offset=member_offset(ca.get(C.AT_data_member_location, 0)),
                    embedded=bool(ca.get(C.AT_go_embedded_field, 0)),
                ))
            elem = a.get(C.AT_go_elem)
            k = kind or "struct"
            named = _is_named(name)
            return GoType(kind=k, fields=tuple(fields), elem_offset=elem, named=named, **common)
        if tag == C.TAG_array_type:
            length = None
            for child in die.children():
                if child.tag == C.TAG_subrange_type:
                    if C.AT_count in child.attrs:
                        length = child.attrs[C.AT_count]
                    elif C.AT_upper_bound in child.attrs:
                        length = child.attrs[C.AT_upper_bound] + 1
            return GoType(kind="array", elem_offset=target, length=length or 0, **common)
        if tag == C.TAG_typedef:
            if kind in ("interface", "map", "chan", "func"):
                impl = self.get(target) if target is not None else None
                empty = kind == "interface" and impl is not None and impl.name == "runtime.eface"
                return GoType(kind=kind, impl_offset=target, elem_offset=a.get(C.AT_go_elem),
                              key_offset=a.get(C.AT_go_key), empty_interface=empty,
                              named=_is_named(name), **{**common, "size": size or (impl.size if impl else 8)})
            if target is None:
                return GoType(kind=kind or "unknown", **common)
            under = self.get(target)
            if dict_index is not None:
                # A type parameter of shaped generic code (DWARF names it ".paramN"): it has the shape's layout
                # and its real type is entry `dict_index` of the function's dictionary.
                return attrs.evolve(under, offset=die.offset, runtime_type=None, dict_index=dict_index,
                                    shape_offset=target)
            return attrs.evolve(under, offset=die.offset, name=name, named=True,
                                runtime_type=rtype if rtype is not None else None,
                                dict_index=dict_index if dict_index is not None else under.dict_index,
                                impl_offset=under.impl_offset if under.impl_offset is not None else (
                                    target if under.kind in ("interface", "map", "chan", "func") else None))
        if tag == C.TAG_subroutine_type:
            return GoType(kind="func", **{**common, "size": size or 8})
        if tag == C.TAG_unspecified_type:
            return GoType(kind=kind or "unspecified", **common)
        raise DwarfFormatError(f"DIE at {die.offset:#x} (tag {tag:#x}) is not a type")

    # -- indexes ------------------------------------------------------------------------------------
    def name_index(self) -> dict[str, int]:
        if self._by_name is None and self._persist is not None:
            stored = self._persist.get("type_indexes")
            if stored is not None:
                self._by_name, self._by_runtime_type = stored
        if self._by_name is None:
            self._build_indexes()
        assert self._by_name is not None
        return self._by_name

    def runtime_type_index(self) -> dict[int, int]:
        if self._by_runtime_type is None:
            self.name_index()
        if self._by_runtime_type is None:
            self._build_indexes()
        assert self._by_runtime_type is not None
        return self._by_runtime_type

    def _build_indexes(self) -> None:
        by_name: dict[str, int] = {}
        by_rt: dict[int, int] = {}
        for unit in self._units.units():
            index_type_dies(unit, by_name, by_rt)
        self._by_name = by_name
        self._by_runtime_type = by_rt
        if self._persist is not None:
            self._persist.put("type_indexes", (by_name, by_rt))


TYPE_TAGS = frozenset({C.TAG_base_type, C.TAG_pointer_type, C.TAG_structure_type, C.TAG_array_type, C.TAG_typedef,
                       C.TAG_subroutine_type, C.TAG_unspecified_type})


def index_type_dies(unit, by_name: dict[str, int], by_rt: dict[int, int] | None) -> None:
    """Index the unit's top-level type DIEs by name (and by runtime type offset when *by_rt* is given)."""
    data = unit.info
    for off, ab in unit.top_level_scan():
        if ab.tag not in TYPE_TAGS:
            continue
        if by_rt is None and data[off] < 0x80 and ab.specs and ab.specs[0][:2] == (C.AT_name, C.FORM_string):
            # Go puts the name first: read it without decoding the other attributes (one-byte abbrev code).
            end = data.find(0, off + 1)
            if end < 0:
                raise DwarfFormatError(f"unterminated string at .debug_info offset {off + 1:#x}")
            by_name.setdefault(data[off + 1:end].decode("utf-8", "replace"), off)
            continue
        a = unit.die_at(off).attrs
        name = a.get(C.AT_name)
        if name:
            by_name.setdefault(name, off)
        rt = a.get(C.AT_go_runtime_type)
        if rt and by_rt is not None:
            by_rt.setdefault(rt, off)


def _base_kind(name: str) -> str:
    return name if name in SCALAR_KINDS else "unknown"


def _is_named(name: str) -> bool:
    """Declared types have qualified names (``main.Celsius``, ``time.Duration``) or are ``error``; literal
    types start with a type constructor and predeclared basic types have no package."""
    if not name or name.startswith(("*", "[", "map[", "chan ", "chan<-", "<-chan", "func(", "struct {",
                                    "interface {", "struct{", "interface{")):
        return False
    return name == "error" or "." in name.split("[", 1)[0]
