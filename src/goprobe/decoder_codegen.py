"""A decoder for the raw value stream (``docs/value-stream.md``) compiled to Python for one type table.

:class:`goprobe.decoder.ValueDecoder` walks shapes generically; this module generates, once per type table
and lazily per type id actually reached, one Python function per type specialised to its shape: precomputed
``struct.Struct`` readers, constant offsets folded, small child types inlined (recursive types call the
function of the type by id, so the code stays bounded), dicts built directly, vectorised element reads for
slices/arrays of scalars. The result is the same as ``ValueDecoder.decode``'s for every stream, valid or not
(``tests/test_decoder_codegen.py`` checks both against each other), except where ValueDecoder itself raises
on garbage (a followed pointer of unknown pointee type, Python recursion exhaustion): here those are
``{"@unavailable": "truncated output"}`` too, so decoding never raises on any input.

    dec = compile_decoder(plan.types, func_name=..., type_name=...)
    value, pos = dec.decode(data, 0, tid)
    values, pos = dec.decode_many(data, 0, (tid1, tid2, tid3))   # captures back to back
    event = dec.sequence((tid1, tid2, tid3))                      # the same, one generated function
    values, pos = event(data, 0)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from goprobe.decoder import _INT_FORMATS, _float, _Truncated, bytes_text
from goprobe.ir import values as V

_CAUGHT = (_Truncated, struct.error, IndexError, RecursionError)
_NONE = 0xFFFFFFFF  # UNKNOWN_TYPE / NO_PAYLOAD

# Inlining bounds, per generated function: child types are inlined while the function is smaller than
# _MAX_LINES and the nesting shallower than _MAX_DEPTH (and never into themselves); otherwise called.
_MAX_LINES = 300
_MAX_DEPTH = 6

# Scalar kinds decoded by a struct code: kind -> (format char, post-processing)
_FLOAT_KINDS = {"float32": "f", "float64": "d"}
_COMPLEX_KINDS = {"complex64": "ff", "complex128": "dd"}


def _truncated() -> dict[str, Any]:
    return {"@unavailable": "truncated output"}


class CompiledDecoder:
    """Decodes values of one type table with generated code. Same contract as ``ValueDecoder.decode``."""

    def __init__(self, table: V.TypeTable, func_name: Callable[[int], str | None] = lambda pc: None,
                 type_name: Callable[[int], str | None] = lambda addr: None,
                 roots: Iterable[V.TypeId] = ()) -> None:
        self.table = table
        self.func_name = func_name
        self.type_name = type_name
        self._n = n = len(table.entries)
        self._sources: dict[str, str] = {}
        self._sequences: dict[tuple[int, ...], Callable] = {}
        entries = table.entries
        names = tuple(e.name for e in entries)
        # How an interface shows a known dynamic value: 0 wrapped in "@value"; 1 a struct whose field names
        # have no "@" (merged unless unavailable); 2 a struct whose names might (checked like ValueDecoder).
        iface_mode = tuple((1 if not any(f.name.startswith("@") for f in e.shape.fields) else 2)
                           if isinstance(e.shape, V.Struct) else 0 for e in entries)
        dispatch = _Dispatch(self._function, n)
        self._dispatch = dispatch
        ns: dict[str, Any] = {
            "__builtins__": __builtins__, "_T": _Truncated, "_CAUGHT": _CAUGHT, "_D": dispatch, "_N": n,
            "_NAMES": names, "_float": _float, "_func_name": func_name, "_type_name": type_name,
            "_iter_unpack": struct.iter_unpack, "_nonok": _nonok, "_wrap_ptr": _wrap_ptr,
            "_trunc": _truncated, "_bad": V.impossible_header, "_btext": bytes_text,
        }

        def iface_wrap(tid: int, v: Any) -> dict[str, Any]:
            mode = iface_mode[tid]
            if mode == 1:
                if "@unavailable" not in v:
                    return {"@type": names[tid], **v}
            elif mode == 2 and isinstance(v, dict) and not any(k.startswith("@") for k in v):
                return {"@type": names[tid], **v}
            return {"@type": names[tid], "@value": v}

        ns["_iface_wrap"] = iface_wrap
        self._ns = ns
        for tid in roots:
            self._function(tid)

        def decode(data: bytes, pos: int, tid: V.TypeId) -> tuple[Any, int]:
            """Decode one value of type *tid* at *pos*; return it and the position after it."""
            try:
                return dispatch[tid](data, pos)
            except _CAUGHT:
                return {"@unavailable": "truncated output"}, len(data)

        self.decode = decode

    # -- public ---------------------------------------------------------------------------------------------
    def decode(self, data: bytes, pos: int, tid: V.TypeId) -> tuple[Any, int]:  # replaced per instance
        raise NotImplementedError

    def decode_many(self, data: bytes, pos: int, tids: Sequence[V.TypeId]) -> tuple[list[Any], int]:
        """Decode values of *tids* back to back from *pos* (as successive ``decode`` calls would)."""
        key = tuple(tids)
        f = self._sequences.get(key)
        if f is None:
            f = self.sequence(key)
        return f(data, pos)

    def sequence(self, tids: Sequence[V.TypeId]) -> Callable[[bytes, int], tuple[list[Any], int]]:
        """One generated function decoding values of *tids* back to back: ``f(data, pos) -> (values, pos)``.
        A value that cannot be decoded is ``{"@unavailable": "truncated output"}`` and so are all after it
        (the position is then ``len(data)``), exactly like successive ``decode`` calls."""
        key = tuple(tids)
        f = self._sequences.get(key)
        if f is not None:
            return f
        decode = self.decode

        def slow(data: bytes, pos: int) -> tuple[list[Any], int]:
            out = []
            for t in key:
                v, pos = decode(data, pos, t)
                out.append(v)
            return out, pos

        if not all(isinstance(t, int) and 0 <= t < self._n for t in key):
            self._sequences[key] = slow
            return slow
        name = f"_seq{len(self._sequences)}"
        g = _Gen(self, name)
        g.line(1, "start_ = pos")
        g.line(1, "try:")
        outs = []
        for t in key:
            o = g.var("r")
            g.value(t, o, 0, 2, (), root=False)
            outs.append(o)
        g.line(2, f"return [{', '.join(outs)}], pos")
        g.line(1, "except _CAUGHT:")
        g.line(2, f"return _slow{name}(data, start_)")
        f = self._exec(name, g.source(), {f"_slow{name}": slow})
        self._sequences[key] = f
        return f

    def source(self, tid: V.TypeId | None = None) -> str:
        """The generated source of type *tid*'s function (compiling it), or of everything generated so far."""
        if tid is not None:
            self._function(tid)
            return self._sources[f"_d{tid}"]
        return "\n".join(self._sources.values())

    # -- generation -----------------------------------------------------------------------------------------
    def _function(self, tid: int) -> Callable:
        """The decoding function of *tid* (generated and exec'd on first use)."""
        name = f"_d{tid}"
        if name in self._sources:
            return self._ns[name]
        if not (0 <= tid < self._n):
            return _out_of_range
        g = _Gen(self, name)
        g.value(tid, "v", 0, 1, (), root=True)
        g.line(1, "return v, pos")
        f = self._exec(name, g.source(), {})
        self._dispatch[tid] = f
        return f

    def _exec(self, name: str, body: str, extra: dict[str, Any]) -> Callable:
        ns = self._ns
        ns.update(extra)
        src = f"def {name}(data, pos):\n{body}"
        self._sources[name] = src
        exec(compile(src, f"<goprobe decoder {name}>", "exec"), ns)  # noqa: S102 - our own generated code
        return ns[name]

    def _ensure(self, tid: int) -> str:
        """The global name generated code calls for *tid*: the function, or a stub that generates it."""
        name = f"_d{tid}"
        if name not in self._ns:
            function = self._function

            def stub(data: bytes, pos: int) -> tuple[Any, int]:
                return function(tid)(data, pos)

            self._ns[name] = stub
        return name

    def _reader(self, fmt: str) -> str:
        """The global name of ``struct.Struct("<" + fmt).unpack_from``."""
        name = f"_u_{fmt}"
        if name not in self._ns:
            self._ns[name] = struct.Struct("<" + fmt).unpack_from
        return name


class _Dispatch(dict):
    """type id -> decoding function, generated on first lookup (ids outside the table: :func:`_out_of_range`)."""

    def __init__(self, make: Callable[[int], Callable], n: int) -> None:
        super().__init__()
        self._make = make
        self._size = n

    def __missing__(self, tid: int) -> Callable:
        if isinstance(tid, int) and -self._size <= tid < 0:  # like a tuple index, as ValueDecoder's table[tid]
            f = self[tid + self._size]
        else:
            f = self._make(tid) if isinstance(tid, int) else _bad_tid
        if f is not _out_of_range:
            self[tid] = f
        return f


def _out_of_range(data: bytes, pos: int) -> tuple[Any, int]:
    # ValueDecoder reads the status before looking the type up: only an unreadable value survives.
    if data[pos] == 1:
        return _nonok(data, pos)
    raise _Truncated


def _bad_tid(data: bytes, pos: int) -> tuple[Any, int]:
    raise TypeError("type ids are integers")


_U64 = struct.Struct("<Q").unpack_from


def _nonok(data: bytes, pos: int) -> tuple[Any, int]:
    """A value whose status byte is not 0: unreadable, or (budget / garbage) the end of the stream."""
    if data[pos] == 1:
        return {"@unavailable": f"memory at {_U64(data, pos + 1)[0]:#x} is not readable"}, pos + 9
    if data[pos] == 4:  # a reason: u16 length, UTF-8
        n = struct.unpack_from("<H", data, pos + 1)[0]
        end = pos + 3 + n
        if end > len(data):
            raise _Truncated
        return {"@unavailable": bytes(data[pos + 3:end]).decode("utf-8", "replace")}, end
    raise _Truncated


def _wrap_ptr(addr: int, v: Any) -> dict[str, Any]:
    if isinstance(v, dict) and not any(k.startswith("@") for k in v):
        return {"@addr": hex(addr), **v}
    return {"@addr": hex(addr), "@value": v}


def _clean_struct(shape: Any) -> bool:
    return isinstance(shape, V.Struct) and not any(f.name.startswith("@") for f in shape.fields)


class _Gen:
    """Source of one generated function. Emitters decode a value starting at ``pos + k`` (k a constant)
    into a local and leave ``pos`` just after it."""

    def __init__(self, dec: CompiledDecoder, name: str) -> None:
        self.dec = dec
        self.table = dec.table
        self.name = name
        self.lines: list[str] = []
        self._vars = 0

    def line(self, ind: int, text: str) -> None:
        self.lines.append("    " * ind + text)

    def var(self, prefix: str = "v") -> str:
        self._vars += 1
        return f"{prefix}{self._vars}"

    def source(self) -> str:
        return "\n".join(self.lines) + "\n"

    @staticmethod
    def at(k: int) -> str:
        return f"pos + {k}" if k else "pos"

    def adv(self, ind: int, k: int) -> None:
        if k:
            self.line(ind, f"pos += {k}")

    # -- values -------------------------------------------------------------------------------------------
    def value(self, tid: int, out: str, k: int, ind: int, stack: tuple[int, ...], *, root: bool = False,
              addr: str | None = None) -> None:
        """A value of *tid* (status byte first). With *addr*, the result is shown as a followed pointer's
        pointee: ``{"@addr": hex(addr), ...}`` like ValueDecoder._pointer."""
        shape = self.table[tid].shape
        inline = root or (tid not in stack and len(stack) < _MAX_DEPTH and len(self.lines) < _MAX_LINES)
        if not inline:
            fn = self.dec._ensure(tid)
            target = out if addr is None else self.var()
            self.line(ind, f"{target}, pos = {fn}(data, {self.at(k)})")
            if addr is not None:
                self._wrap(ind, tid, target, out, addr)
            return
        stack = stack + (tid,)
        self.line(ind, f"if data[{self.at(k)}]:")
        if addr is None:
            self.line(ind + 1, f"{out}, pos = _nonok(data, {self.at(k)})")
        else:
            self.line(ind + 1, f"{out}, pos = _nonok(data, {self.at(k)})")
            self.line(ind + 1, f'{out} = {{"@addr": hex({addr}), "@value": {out}}}')
        self.line(ind, "else:")
        if addr is not None and _clean_struct(shape):
            self.struct(shape, out, k + 1, ind + 1, stack, prefix=f'"@addr": hex({addr}), ')
            return
        self.body(tid, out, k + 1, ind + 1, stack)
        if addr is not None:
            self._wrap(ind + 1, tid, out, out, addr)

    def _wrap(self, ind: int, tid: int, v: str, out: str, addr: str) -> None:
        shape = self.table[tid].shape
        if _clean_struct(shape):
            self.line(ind, f'{out} = {{"@addr": hex({addr}), **{v}}} if "@unavailable" not in {v} else '
                           f'{{"@addr": hex({addr}), "@value": {v}}}')
        elif isinstance(shape, (V.Struct, V.SwissMap, V.ClassicMap, V.TypeParam)):
            self.line(ind, f"{out} = _wrap_ptr({addr}, {v})")
        else:  # never a dict without "@" keys
            self.line(ind, f'{out} = {{"@addr": hex({addr}), "@value": {v}}}')

    def body(self, tid: int, out: str, k: int, ind: int, stack: tuple[int, ...]) -> None:
        """The value's encoding after a 0 status byte."""
        entry = self.table[tid]
        shape = entry.shape
        if isinstance(shape, V.Scalar):
            self.scalar(shape, out, k, ind)
        elif isinstance(shape, V.String):
            self.string(out, k, ind)
        elif isinstance(shape, V.Struct):
            self.struct(shape, out, k, ind, stack)
        elif isinstance(shape, V.Pointer):
            self.pointer(shape, out, k, ind, stack)
        elif isinstance(shape, V.Slice):
            self.slice(shape, out, k, ind, stack)
        elif isinstance(shape, V.Array):
            self.array(shape, out, k, ind, stack)
        elif isinstance(shape, V.Interface):
            self.interface(out, k, ind)
        elif isinstance(shape, (V.SwissMap, V.ClassicMap)):
            self.map(shape, out, k, ind, stack)
        elif isinstance(shape, V.Chan):
            self.chan(shape, entry.name, out, k, ind, stack)
        elif isinstance(shape, V.Func):
            self.func(out, k, ind)
        elif isinstance(shape, V.TypeParam):
            self.type_param(shape, out, k, ind, stack)
        else:  # Opaque, and whatever ValueDecoder would show the same way
            self.opaque(entry.name, getattr(shape, "reason", ""), out, k, ind)

    def scalar(self, shape: V.Scalar, out: str, k: int, ind: int) -> None:
        kind, size = shape.kind, shape.size
        L = self.line
        fmt = _INT_FORMATS.get(kind)
        at = self.at(k)
        if kind == "bool":
            if size == 1:
                L(ind, f"{out} = data[{at}] != 0")
            elif size == 0:
                L(ind, "raise _T")
                return
            else:
                L(ind, f"if {at} + {size} > len(data):")
                L(ind + 1, "raise _T")
                L(ind, f"{out} = data[{at}] != 0")
        elif fmt is not None:
            if struct.calcsize(fmt) != size:
                L(ind, "raise _T")
                return
            L(ind, f"{out} = {self.dec._reader(fmt[1])}(data, {at})[0]")
        elif kind in _FLOAT_KINDS:
            c = _FLOAT_KINDS[kind]
            if struct.calcsize(c) != size:
                L(ind, "raise _T")
                return
            L(ind, f"{out} = {self.dec._reader(c)}(data, {at})[0]")
            L(ind, f"if {out} - {out}:")  # NaN or ±Inf
            L(ind + 1, f"{out} = _float({out})")
        elif kind in _COMPLEX_KINDS:
            c = _COMPLEX_KINDS[kind]
            if struct.calcsize(c) != size:
                L(ind, "raise _T")
                return
            re, im = self.var("re"), self.var("im")
            L(ind, f"{re}, {im} = {self.dec._reader(c)}(data, {at})")
            L(ind, f"{out} = [{re} if not {re} - {re} else _float({re}), {im} if not {im} - {im} else _float({im})]")
        elif kind == "unsafe.Pointer":
            if size != 8:
                L(ind, "raise _T")
                return
            L(ind, f"{out} = {self.dec._reader('Q')}(data, {at})[0]")
            L(ind, f'{out} = {{"@addr": hex({out})}} if {out} else None')
        else:
            L(ind, f"if {at} + {size} > len(data):")
            L(ind + 1, "raise _T")
            L(ind, f"{out} = data[{at}:{at} + {size}].hex()")
        self.adv(ind, k + size)

    def string(self, out: str, k: int, ind: int) -> None:
        L = self.line
        p, n, ln, e, raw = self.var("p"), self.var("n"), self.var("l"), self.var("e"), self.var("b")
        L(ind, f"{p}, {ln}, {n} = {self.dec._reader('QQI')}(data, {self.at(k)})")
        L(ind, f"pos += {k + 20}")
        L(ind, f"if {n} == {_NONE}:")
        L(ind + 1, f'{out} = {{"@unavailable": f"string bytes at {{{p}:#x}} are not readable", "@len": {ln}}}')
        L(ind + 1, f"if _bad({p}, {ln}) is not None:")
        L(ind + 2, f'{out} = {{"@unavailable": _bad({p}, {ln})}}')
        L(ind, "else:")
        L(ind + 1, f"{e} = pos + {n}")
        L(ind + 1, f"if {e} > len(data):")
        L(ind + 2, "raise _T")
        L(ind + 1, f"{raw} = data[pos:{e}]")
        L(ind + 1, f"pos = {e}")
        L(ind + 1, "try:")
        L(ind + 2, f"{out} = {raw}.decode()")
        L(ind + 1, "except UnicodeDecodeError:")
        L(ind + 2, f'{out} = {{"@hex": {raw}.hex()}}')
        L(ind + 1, f"if {n} < {ln}:")
        L(ind + 2, f'{out} = {{"@len": {ln}, "@truncated": True, "@value": {out}}}')
        L(ind + 1, f"if _bad({p}, {ln}) is not None:")
        L(ind + 2, f'{out} = {{"@unavailable": _bad({p}, {ln})}}')

    def struct(self, shape: V.Struct, out: str, k: int, ind: int, stack: tuple[int, ...],
               prefix: str = "") -> None:
        items = []
        for f in shape.fields:
            v = self.var("f")
            self.value(f.type, v, k, ind, stack)
            k = 0
            items.append(f"{f.name!r}: {v}")
        self.adv(ind, k)
        self.line(ind, f"{out} = {{{prefix}{', '.join(items)}}}")

    def pointer(self, shape: V.Pointer, out: str, k: int, ind: int, stack: tuple[int, ...]) -> None:
        L = self.line
        a, kd = self.var("a"), self.var("k")
        L(ind, f"{a}, {kd} = {self.dec._reader('QB')}(data, {self.at(k)})")
        L(ind, f"pos += {k + 9}")
        L(ind, f"if {kd} == 1:")
        if shape.elem is None:
            # ValueDecoder would look type None up in the table (a TypeError) unless the value is unreadable.
            L(ind + 1, "if data[pos] != 1:")
            L(ind + 2, "raise _T")
            L(ind + 1, f"{out}, pos = _nonok(data, pos)")
            L(ind + 1, f'{out} = {{"@addr": hex({a}), "@value": {out}}}')
        else:
            self.value(shape.elem, out, 0, ind + 1, stack, addr=a)
        L(ind, f"elif {kd} == 0:")
        L(ind + 1, f"{out} = None")
        L(ind, f"elif {kd} == 2:")
        L(ind + 1, f'{out} = {{"@addr": hex({a}), "@cycle": True}}')
        L(ind, f"elif {kd} == 3:")
        L(ind + 1, f'{out} = {{"@addr": hex({a}), "@truncated": "pointer depth"}}')
        L(ind, f"elif {kd} == 4:")
        L(ind + 1, f'{out} = {{"@addr": hex({a})}}')
        L(ind, "else:")
        L(ind + 1, "raise _T")

    def _scalar_elems(self, elem: int) -> tuple[int, str] | None:
        """For elements of a fixed-size scalar type: (stride in the stream, expression turning the stream
        bytes ``data[pos:e]`` of n elements into their list) — used when every status byte is 0."""
        shape = self.table[elem].shape
        if not isinstance(shape, V.Scalar):
            return None
        kind, size = shape.kind, shape.size
        stride = size + 1
        chunk = "data[pos:e_]"
        if kind == "bool" and size == 1:
            return stride, "[x != 0 for x in data[pos + 1:e_:2]]"
        if kind in ("uint8",) and size == 1:
            return stride, "list(data[pos + 1:e_:2])"
        fmt = _INT_FORMATS.get(kind)
        if fmt is not None and struct.calcsize(fmt) == size:
            return stride, f"[x for (x,) in _iter_unpack('<x{fmt[1]}', {chunk})]"
        if kind in _FLOAT_KINDS and struct.calcsize(_FLOAT_KINDS[kind]) == size:
            c = _FLOAT_KINDS[kind]
            return stride, f"[x if not x - x else _float(x) for (x,) in _iter_unpack('<x{c}', {chunk})]"
        if kind in _COMPLEX_KINDS and struct.calcsize(_COMPLEX_KINDS[kind]) == size:
            c = _COMPLEX_KINDS[kind]
            return stride, (f"[[x if not x - x else _float(x), y if not y - y else _float(y)] "
                            f"for x, y in _iter_unpack('<x{c}', {chunk})]")
        if kind == "unsafe.Pointer" and size == 8:
            return stride, f"[{{'@addr': hex(x)}} if x else None for (x,) in _iter_unpack('<xQ', {chunk})]"
        return None

    def _is_byte(self, tid: int) -> bool:
        shape = self.dec.table[tid].shape
        return isinstance(shape, V.Scalar) and shape.kind == "uint8"

    def elements(self, elem: int, n: str, items: str, ind: int, stack: tuple[int, ...]) -> None:
        """*n* element values of type *elem* from ``pos`` into the list *items*."""
        L = self.line
        fast = self._scalar_elems(elem)
        if fast is not None:
            stride, expr = fast
            L(ind, f"e_ = pos + {n} * {stride}")
            L(ind, f"if e_ <= len(data) and data[pos:e_:{stride}].count(0) == {n}:")
            L(ind + 1, f"{items} = {expr}")
            L(ind + 1, "pos = e_")
            L(ind, "else:")
            ind += 1
        v = self.var("x")
        L(ind, f"{items} = []")
        L(ind, f"for _ in range({n}):")
        self.value(elem, v, 0, ind + 1, stack)
        L(ind + 1, f"{items}.append({v})")

    def slice(self, shape: V.Slice, out: str, k: int, ind: int, stack: tuple[int, ...]) -> None:
        L = self.line
        p, ln, c, n, items = self.var("p"), self.var("l"), self.var("c"), self.var("n"), self.var("it")
        L(ind, f"{p}, {ln}, {c}, {n} = {self.dec._reader('QQQI')}(data, {self.at(k)})")
        L(ind, f"pos += {k + 28}")
        L(ind, f"if not ({p} or {ln} or {c}):")
        L(ind + 1, f"{out} = None")
        L(ind, f"elif {n} == {_NONE}:")
        L(ind + 1, f'{out} = {{"@unavailable": f"elements at {{{p}:#x}} are not readable", "@len": {ln}, '
                   f'"@cap": {c}}}')
        L(ind, "else:")
        self.elements(shape.elem, n, items, ind + 1, stack)
        if self._is_byte(shape.elem):
            L(ind + 1, f"{items} = _btext({items})")
        L(ind + 1, f'{out} = {items} if {n} >= {ln} else {{"@len": {ln}, "@cap": {c}, "@truncated": True, '
                   f'"@value": {items}}}')
        L(ind, f"if {out} is not None and _bad({p}, {ln}, {c}) is not None:")
        L(ind + 1, f'{out} = {{"@unavailable": _bad({p}, {ln}, {c})}}')

    def array(self, shape: V.Array, out: str, k: int, ind: int, stack: tuple[int, ...]) -> None:
        L = self.line
        n, items = self.var("n"), self.var("it")
        L(ind, f"{n} = {self.dec._reader('I')}(data, {self.at(k)})[0]")
        L(ind, f"pos += {k + 4}")
        self.elements(shape.elem, n, items, ind, stack)
        if self._is_byte(shape.elem):
            L(ind, f"{items} = _btext({items})")
        L(ind, f'{out} = {items} if {n} >= {shape.length} else {{"@len": {shape.length}, "@truncated": True, '
               f'"@value": {items}}}')

    def interface(self, out: str, k: int, ind: int) -> None:
        L = self.line
        t, d, tid, nb, e = self.var("t"), self.var("d"), self.var("tid"), self.var("nb"), self.var("e")
        L(ind, f"{t}, {d}, {tid} = {self.dec._reader('QQI')}(data, {self.at(k)})")
        L(ind, f"pos += {k + 20}")
        L(ind, f"if {t} == 0:")
        L(ind + 1, "data[pos]")
        L(ind + 1, "pos += 1")
        L(ind + 1, f"{out} = None")
        L(ind, f"elif {tid} == {_NONE}:")
        L(ind + 1, f"{nb} = data[pos]")
        L(ind + 1, f"{e} = pos + 1 + {nb}")
        L(ind + 1, f"if {e} > len(data):")
        L(ind + 2, "raise _T")
        L(ind + 1, f"{out} = {{'@type': data[pos + 1:{e}].decode('utf-8', 'replace') or _type_name({t}) or "
                   f"hex({t}), '@unavailable': 'dynamic type not in the capture plan', '@data': hex({d})}}")
        L(ind + 1, f"pos = {e}")
        L(ind, f"elif {tid} >= _N:")
        L(ind + 1, "raise _T")  # ValueDecoder: table[tid] fails
        L(ind, "else:")
        L(ind + 1, f"{out}, pos = _D[{tid}](data, pos)")
        L(ind + 1, f"{out} = _iface_wrap({tid}, {out})")

    def map(self, shape: V.SwissMap | V.ClassicMap, out: str, k: int, ind: int, stack: tuple[int, ...]) -> None:
        L = self.line
        m, cnt, n, kv, ev = self.var("m"), self.var("cnt"), self.var("n"), self.var("kv"), self.var("ev")
        ents = self.var("ents")
        L(ind, f"{m} = {self.dec._reader('Q')}(data, {self.at(k)})[0]")
        L(ind, f"pos += {k + 8}")
        L(ind, f"if {m} == 0:")
        L(ind + 1, f"{out} = None")
        L(ind, "elif data[pos]:")
        L(ind + 1, "pos += 1")
        L(ind + 1, f'{out} = {{"@unavailable": f"map header at {{{m}:#x}} is not readable"}}')
        L(ind, "else:")
        ind += 1
        L(ind, f"{cnt}, {n} = {self.dec._reader('QI')}(data, pos + 1)")
        L(ind, "pos += 13")
        L(ind, f"{ents} = []")
        string_keys = isinstance(self.table[shape.key].shape, V.String)
        if string_keys:
            ok = self.var("sk")
            L(ind, f"{ok} = True")
        L(ind, f"for _ in range({n}):")
        self.value(shape.key, kv, 0, ind + 1, stack)
        self.value(shape.elem, ev, 0, ind + 1, stack)
        if string_keys:
            L(ind + 1, f"if {ok} and type({kv}) is not str:")
            L(ind + 2, f"{ok} = False")
            L(ind + 1, f"{ents}.append(({kv}, {ev}))")
            L(ind, f"if {ok}:")
            L(ind + 1, f"{out} = dict({ents})")
            L(ind + 1, f"if {n} < {cnt}:")
            L(ind + 2, f'{out} = {{"@len": {cnt}, "@truncated": True, "@value": {out}}}')
            L(ind, "else:")
            L(ind + 1, f'{out} = {{"@len": {cnt}, "@entries": [[a_, b_] for a_, b_ in {ents}]}}')
            L(ind + 1, f"if {n} < {cnt}:")
            L(ind + 2, f'{out}["@truncated"] = True')
        else:
            L(ind + 1, f"{ents}.append([{kv}, {ev}])")
            L(ind, f'{out} = {{"@len": {cnt}, "@entries": {ents}}}')
            L(ind, f"if {n} < {cnt}:")
            L(ind + 1, f'{out}["@truncated"] = True')

    def chan(self, shape: V.Chan, name: str, out: str, k: int, ind: int, stack: tuple[int, ...]) -> None:
        L = self.line
        h, qc, sz, cl, n, items = (self.var("h"), self.var("qc"), self.var("sz"), self.var("cl"), self.var("n"),
                                   self.var("it"))
        rv, sd, x = self.var("rv"), self.var("sd"), self.var("x")
        L(ind, f"{h} = {self.dec._reader('Q')}(data, {self.at(k)})[0]")
        L(ind, f"pos += {k + 8}")
        L(ind, f"if {h} == 0:")
        L(ind + 1, f"{out} = None")
        L(ind, "elif data[pos]:")
        L(ind + 1, "pos += 1")
        L(ind + 1, f'{out} = {{"@unavailable": f"channel at {{{h}:#x}} is not readable"}}')
        L(ind, "else:")
        ind += 1
        L(ind, f"{qc}, {sz}, {cl}, {n} = {self.dec._reader('QQBI')}(data, pos + 1)")
        L(ind, "pos += 22")
        L(ind, f"{items} = []")
        L(ind, f"for _ in range({n}):")
        self.value(shape.elem, x, 0, ind + 1, stack)
        L(ind + 1, f"{items}.append({x})")
        L(ind, f"{rv}, {sd} = {self.dec._reader('II')}(data, pos)")
        L(ind, "pos += 8")
        L(ind, f'{out} = {{"@chan": {name!r}, "@addr": hex({h}), "len": {qc}, "cap": {sz}, "closed": bool({cl}), '
               f'"items": {items}, "waiting_receivers": {rv}, "waiting_senders": {sd}}}')

    def func(self, out: str, k: int, ind: int) -> None:
        L = self.line
        fv, pc, ctx, cap = self.var("fv"), self.var("pc"), self.var("ctx"), self.var("cap")
        L(ind, f"{fv}, {pc}, {ctx} = {self.dec._reader('QQI')}(data, {self.at(k)})")
        L(ind, f"pos += {k + 20}")
        L(ind, f"{cap} = None")
        L(ind, f"if {ctx} != {_NONE}:")
        L(ind + 1, f"{cap}, pos = _D[{ctx}](data, pos)")
        L(ind, f"if {fv} == 0:")
        L(ind + 1, f"{out} = None")
        L(ind, "else:")
        L(ind + 1, f'{out} = {{"@func": _func_name({pc}) or hex({pc})}}')
        L(ind + 1, f"if {cap} is not None:")
        L(ind + 2, f'{out}["@captured"] = {cap}')

    def type_param(self, shape: V.TypeParam, out: str, k: int, ind: int, stack: tuple[int, ...]) -> None:
        L = self.line
        r = self.var("r")
        L(ind, f"{r} = {self.dec._reader('I')}(data, {self.at(k)})[0]")
        L(ind, f"pos += {k + 4}")
        L(ind, f"if {r} == {_NONE}:")
        self.value(shape.shape, out, 0, ind + 1, stack)
        L(ind, "else:")
        L(ind + 1, f"{out}, pos = _D[{r}](data, pos)")

    def opaque(self, name: str, reason: str, out: str, k: int, ind: int) -> None:
        L = self.line
        n, e = self.var("n"), self.var("e")
        L(ind, f"{n} = {self.dec._reader('I')}(data, {self.at(k)})[0]")
        L(ind, f"{e} = pos + {k + 4} + {n}")
        L(ind, f"if {e} > len(data):")
        L(ind + 1, "raise _T")
        if reason:
            L(ind, f'{out} = {{"@type": {name!r}, "@unavailable": {reason!r}}}')
        else:
            L(ind, f'{out} = {{"@type": {name!r}, "@bytes": data[pos + {k + 4}:{e}].hex()}}')
        L(ind, f"pos = {e}")


def compile_decoder(table: V.TypeTable, func_name: Callable[[int], str | None] = lambda pc: None,
                    type_name: Callable[[int], str | None] = lambda addr: None,
                    roots: Iterable[V.TypeId] = ()) -> CompiledDecoder:
    """A :class:`CompiledDecoder` for *table*: functions are generated for *roots* now and for any other type
    id when first reached."""
    return CompiledDecoder(table, func_name, type_name, roots)
