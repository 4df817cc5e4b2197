"""Capture expressions compiled to *access paths*: a root (a variable of the frame, or a package variable)
followed by typed steps — field, dereference, bounds-checked index, map lookup with a constant key, len/cap,
type assertion. Every step carries its constants (offsets, sizes, type ids), so a backend evaluates a path
with bounded reads and no knowledge of Go's type system.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from goprobe import expr as X
from goprobe.errors import ExpressionError
from goprobe.ir.values import TypeId, TypeTableBuilder

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary
    from goprobe.dwarf.types import GoType


@attrs.frozen(slots=True)
class FieldStep:
    offset: int


@attrs.frozen(slots=True)
class DerefStep:
    """The current value is a pointer: continue at the address it holds."""


@attrs.frozen(slots=True)
class IndexStep:
    """Element ``index`` of an array (in place), a slice or a string (through its data pointer)."""

    container: str  # "array" | "slice" | "string"
    index: int
    elem_size: int
    length: int = 0  # arrays: the static length (bounds)


@attrs.frozen(slots=True)
class LenStep:
    container: str  # "slice" | "string" | "map" | "chan" | "array"
    static: int = 0  # arrays
    field_offset: int = 0  # maps/chans: the count field inside the header


@attrs.frozen(slots=True)
class CapStep:
    container: str  # "slice" | "chan" | "array"
    static: int = 0
    field_offset: int = 0


@attrs.frozen(slots=True)
class MapLookupStep:
    """``m[key]`` with a constant key: the map's shape (type id) is walked, keys compared as bytes."""

    map_type: TypeId
    key: bytes | int  # string keys: their bytes; integer keys: the value
    key_size: int


@attrs.frozen(slots=True)
class TypeAssertStep:
    """``x.(T)``: the dynamic type must be T (its runtime type offset), then continue with the value."""

    runtime_type: int
    empty: bool


Step = FieldStep | DerefStep | IndexStep | LenStep | CapStep | MapLookupStep | TypeAssertStep


@attrs.frozen(slots=True)
class AccessPath:
    root: str  # a frame variable's name, or "" for a package variable at `global_address`
    global_address: int
    steps: tuple[Step, ...]
    type: TypeId  # the result's type
    result_size: int

    def root_bytes(self) -> tuple[int, int]:
        """The bytes [start, end) of the root value that evaluating the path reads (``len(s)`` reads only the
        length word of ``s``; ``p.x`` only field x)."""
        off = 0
        for s in self.steps:
            if isinstance(s, FieldStep):
                off += s.offset
            elif isinstance(s, IndexStep) and s.container == "array":
                off += s.index * s.elem_size
            elif isinstance(s, (LenStep, CapStep)) and s.container == "array":
                return (0, 0)  # static
            elif isinstance(s, LenStep) and s.container in ("slice", "string"):
                return (off + 8, off + 16)
            elif isinstance(s, CapStep) and s.container == "slice":
                return (off + 16, off + 24)
            elif isinstance(s, (IndexStep, TypeAssertStep)):
                return (off, off + 16)  # a header: data pointer and length, or type word and data word
            else:  # dereference, map lookup, len/cap of a map or channel: the pointer word
                return (off, off + 8)
        return (off, off + self.result_size)


class AccessCompiler:
    """Compiles parsed expressions against the variables visible in a frame."""

    def __init__(self, b: GoBinary, tb: TypeTableBuilder) -> None:
        self._b = b
        self._tb = tb

    def compile(self, text: str, e: X.Expr, frame_vars: dict[str, GoType]) -> AccessPath:
        root, gaddr, t, steps = self._walk(text, e, frame_vars)
        return AccessPath(root, gaddr, tuple(steps), self._tb.add(t), t.size)

    def _err(self, text: str, node: X.Expr, msg: str) -> ExpressionError:
        return ExpressionError(f"{msg} (in {text!r} at column {node.span[0] + 1})")

    def _walk(self, text: str, e: X.Expr, frame_vars: dict[str, GoType]):
        b = self._b
        if isinstance(e, X.Ident):
            if e.name in frame_vars:
                return e.name, 0, frame_vars[e.name], []
            raise self._err(text, e, f"unknown identifier {e.name!r}; variables here: "
                                     f"{', '.join(sorted(frame_vars)) or '(none)'}")
        if isinstance(e, X.Selector):
            # pkg.Global (or a qualified package path written with dots) when the left side is no variable.
            qualified = _qualified_name(e)
            if qualified is not None and _root_ident(e) not in frame_vars:
                g = _lookup_global(b, qualified)
                if g is not None:
                    return "", g.address, b.type_at(g.type_offset), []
            root, gaddr, t, steps = self._walk(text, e.operand, frame_vars)
            t, steps = _auto_deref(b, t, steps)
            if t.kind != "struct":
                raise self._err(text, e, f"{t.name or t.kind} has no field {e.field!r} (not a struct)")
            f = _find_field(t, e.field)
            if f is None:
                raise self._err(text, e, f"{t.name} has no field {e.field!r}; fields: "
                                         f"{', '.join(x.name for x in t.fields)}")
            return root, gaddr, t.field_type(f), steps + [FieldStep(f.offset)]
        if isinstance(e, X.Deref):
            root, gaddr, t, steps = self._walk(text, e.operand, frame_vars)
            if t.kind != "ptr" or t.elem is None:
                raise self._err(text, e, f"cannot dereference {t.name or t.kind} (not a pointer)")
            return root, gaddr, t.elem, steps + [DerefStep()]
        if isinstance(e, X.Index):
            root, gaddr, t, steps = self._walk(text, e.operand, frame_vars)
            t, steps = _auto_deref(b, t, steps) if t.kind == "ptr" and t.elem and t.elem.kind == "array" else (t, steps)
            key = _constant(e.index)
            if t.kind == "map":
                if key is None:
                    raise self._err(text, e.index, "map keys must be constants (string or integer literals)")
                kt = t.key
                if isinstance(key, bytes) and kt.kind != "string" or isinstance(key, int) and not kt.kind.startswith(
                        ("int", "uint")):
                    raise self._err(text, e.index, f"key of type {kt.name} cannot be written as that literal")
                return root, gaddr, t.elem, steps + [MapLookupStep(self._tb.add(t), key, kt.size)]
            if not isinstance(key, int):
                raise self._err(text, e.index, "indexes must be integer constants")
            if t.kind == "array":
                if not 0 <= key < (t.length or 0):
                    raise self._err(text, e.index, f"index {key} out of range for {t.name} (length {t.length})")
                return root, gaddr, t.elem, steps + [IndexStep("array", key, t.elem.size, t.length or 0)]
            if t.kind == "slice":
                return root, gaddr, t.elem, steps + [IndexStep("slice", key, t.elem.size)]
            if t.kind == "string":
                return root, gaddr, b.type_named("uint8"), steps + [IndexStep("string", key, 1)]
            raise self._err(text, e, f"cannot index {t.name or t.kind}")
        if isinstance(e, X.Call):
            (arg,) = e.args
            root, gaddr, t, steps = self._walk(text, arg, frame_vars)
            if t.kind == "ptr" and t.elem is not None and t.elem.kind == "array":
                t, steps = _auto_deref(b, t, steps)
            int_t = b.type_named("int")
            if e.func == "len":
                if t.kind in ("slice", "string", "array"):
                    return root, gaddr, int_t, steps + [LenStep(t.kind, t.length or 0)]
                if t.kind == "map":
                    L = b.runtime
                    off = L["swiss_map"].offset("used") if L.map_impl == "swiss" else L["hmap"].offset("count")
                    return root, gaddr, int_t, steps + [LenStep("map", 0, off)]
                if t.kind == "chan":
                    return root, gaddr, int_t, steps + [LenStep("chan", 0, b.runtime["hchan"].offset("qcount"))]
            if e.func == "cap":
                if t.kind in ("slice", "array"):
                    return root, gaddr, int_t, steps + [CapStep(t.kind, t.length or 0)]
                if t.kind == "chan":
                    return root, gaddr, int_t, steps + [CapStep("chan", 0, b.runtime["hchan"].offset("dataqsiz"))]
            raise self._err(text, e, f"invalid argument: {e.func}() of {t.name or t.kind}")
        if isinstance(e, X.TypeAssert):
            root, gaddr, t, steps = self._walk(text, e.operand, frame_vars)
            if t.kind != "interface":
                raise self._err(text, e, f"{t.name or t.kind} is not an interface; only interfaces have dynamic types")
            name = "*" * e.type.pointer_depth + e.type.text
            try:
                target = b.type_named(name)
            except Exception:  # noqa: BLE001 - re-raised with the expression's position
                raise self._err(text, e, f"unknown type {name!r} in the binary") from None
            if target.runtime_type is None:
                raise self._err(text, e, f"type {name!r} has no runtime type descriptor (never stored in an "
                                         "interface by this program)")
            return root, gaddr, target, steps + [TypeAssertStep(target.runtime_type, t.empty_interface)]
        raise self._err(text, e, "only variables, fields, *, [index], len(), cap() and type assertions can be "
                                 "captured")


def _root_ident(e: X.Expr) -> str | None:
    while isinstance(e, X.Selector):
        e = e.operand
    return e.name if isinstance(e, X.Ident) else None


def _qualified_name(e: X.Selector) -> str | None:
    parts = []
    cur: X.Expr = e
    while isinstance(cur, X.Selector):
        parts.append(cur.field)
        cur = cur.operand
    if not isinstance(cur, X.Ident):
        return None
    parts.append(cur.name)
    return ".".join(reversed(parts))


def _lookup_global(b: GoBinary, qualified: str):
    from goprobe.errors import UnknownVariableError

    # "pkg.Var" or "pkg.Var.Field...": try the longest prefix that names a package variable.
    parts = qualified.split(".")
    for i in range(len(parts), 1, -1):
        if i != len(parts):
            continue  # the selector chain is compiled step by step; only the full name is a global here
        try:
            return b.global_variable(".".join(parts[:i]))
        except UnknownVariableError:
            return None
    return None


def _auto_deref(b: GoBinary, t: GoType, steps: list) -> tuple[GoType, list]:
    while t.kind == "ptr" and t.elem is not None:
        t = t.elem
        steps = steps + [DerefStep()]
    return t, steps


def _find_field(t: GoType, name: str):
    f = t.field(name)
    if f is not None:
        return f
    return None


def _constant(e: X.Expr) -> bytes | int | None:
    if isinstance(e, X.IntLit):
        return e.value
    if isinstance(e, X.StringLit):
        return e.value
    return None
