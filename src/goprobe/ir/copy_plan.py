"""What to copy of a value while the target is paused, so that it can be encoded after the target runs again.

A *copy plan* describes, per type, the bytes an object of that type occupies and the *ops* that find the
other objects its encoding reads: the bytes behind a pointer, a string or a slice, an interface's dynamic
value, a map's groups or buckets, a channel's buffer. A backend copies a value by copying its root object
and then, object by object, what the ops point at (each object once), and hands the copies to the
interpreter's value encoder after the pause (``goprobe.backends.interpreter.copied_memory``). The pause then
costs the reads the value needs, not the work of encoding it.

Besides the type table's types (same ids), a plan has *pseudo types* for the runtime's own objects that
values lead to (map headers, tables, groups, buckets, channel headers, wait queues, func values) and
``BYTES`` for string bytes. A type is *covered* when the ops find every byte the encoder reads for it; only
covered values are copied (the others are encoded inside the pause, as before).
"""

from __future__ import annotations

import attrs

from goprobe.ir import values as V

# Op kinds
PTR = 1  # *(u64 at off) → (tid, 1); pointer depth + 1 unless the op says it is not a Go pointer deref
STR = 2  # string header at off → (BYTES, min(len, arg))
SLICE = 3  # slice header at off → (tid, min(len, arg))
IFACE = 4  # eface at off (arg 0) or iface (arg = 1 + the itab's type offset) → (dynamic type, 1)
SWISS_DIR = 5  # swiss map header: dirPtr at off, dirLen at arg → (tid group, 1) or (tid + 1 table ptrs, dirLen)
COUNTED = 6  # *(u64 at off) → (tid, count from the field at arg & 0xFFFF by mode arg >> 16), at most limit
ARRAY = 7  # the array inside this object at off → (tid, arg)
CLOSURE = 8  # code pointer at off: a closure's entry → (its context type, 1) at this object's own address

# COUNTED modes: how the count field gives the number of objects
COUNT_PLUS_ONE, COUNT_POW2, COUNT_POW2_HALF, COUNT_U64 = 0, 1, 2, 3
# Guards: the op applies to a map slot only when its control/tophash byte says the slot is full
GUARD_NONE, GUARD_SWISS, GUARD_CLASSIC = 0, 1, 2

NO_DEPTH = 1  # op flag: following this pointer is not a pointer dereference in the encoder's sense

MAX_COUNT = 1 << 16  # objects one op leads to at most (the encoder visits at most 1 << 16 groups/buckets)
MAX_OPS_PER_TYPE = 64  # beyond this a type is not covered (its values are encoded in the pause)


@attrs.frozen(slots=True)
class CopyOp:
    kind: int
    off: int  # offset in the object
    tid: int = 0  # the type of what it leads to
    arg: int = 0  # see the kinds
    guard: int = GUARD_NONE
    guard_off: int = 0  # offset of the slot's control/tophash byte in the object
    flags: int = 0


@attrs.frozen(slots=True)
class CopyType:
    name: str
    size: int  # bytes one object occupies (what the encoder reads of it)
    ops: tuple[CopyOp, ...]


@attrs.frozen(slots=True)
class CopyPlan:
    types: tuple[CopyType, ...]  # ids 0..len(table)-1: the table's types; then BYTES and pseudo types
    covered: frozenset[int]  # table types whose values a copy holds whole
    bytes_tid: int
    by_runtime_type: tuple[tuple[int, int], ...]  # (runtime type offset, tid) of covered types
    by_closure_entry: tuple[tuple[int, int], ...] = ()  # (closure entry PC, context tid) of every closure

    def shallow(self, tid: int) -> bool:
        """Whether a value of *tid* reads nothing beyond its own bytes and its strings' bytes (a backend may
        then write it in the pause at little cost; a deeper value is better copied and encoded after it)."""
        return all(op.kind == STR for op in self.types[tid].ops)


class _Builder:
    def __init__(self, table: V.TypeTable, interfaces: V.InterfaceLayout, limits) -> None:
        self.table = table
        self.interfaces = interfaces
        self.limits = limits
        n = len(table.entries)
        self.types: list[CopyType | None] = [None] * n
        self.bytes_tid = n
        self.types.append(CopyType("bytes", 1, ()))
        self.pseudo: dict[tuple, int] = {}
        self.uncovered: set[int] = set()

    # -- per type --------------------------------------------------------------------------------------------
    def build(self) -> CopyPlan:
        for tid in range(len(self.table.entries)):
            self.type_of(tid)
        covered = self._covered()
        # The encoder's own map from runtime type to type (several entries may share a runtime type)
        rt = tuple(sorted((off, tid) for off, tid in self.table.by_runtime_type.items() if tid in covered))
        # Every closure's context, covered or not: an uncovered one is copied without what it points to (the
        # encoder then cuts the value there), which beats leaving every func value to the pause.
        closures = tuple(sorted((c.entry, c.context) for c in self.table.closures))
        return CopyPlan(tuple(self.types), frozenset(covered), self.bytes_tid, rt, closures)

    def type_of(self, tid: int) -> None:
        if self.types[tid] is not None:
            return
        e = self.table[tid]
        ops: list[CopyOp] = []
        ok = self.ops(tid, 0, ops, 0)
        if not ok or len(ops) > MAX_OPS_PER_TYPE:
            self.uncovered.add(tid)
            ops = []
        size = e.shape.size if isinstance(e.shape, V.Opaque) else e.size
        self.types[tid] = CopyType(e.name, size, tuple(ops))

    def count_limit(self, elem_size: int) -> int:
        return min(MAX_COUNT, V.captured_count(1 << 62, elem_size, self.limits.collection_bytes,
                                               self.limits.min_elements))

    def ops(self, tid: int, off: int, out: list[CopyOp], nest: int, guard=(GUARD_NONE, 0)) -> bool:
        """Append the ops of a *tid* value at *off* in its object; False if the encoder may read what no op
        finds (the type is then not covered)."""
        if nest > 16:
            return False
        e = self.table[tid]
        sh = e.shape
        g, goff = guard
        if isinstance(sh, (V.Scalar, V.Opaque)):
            return True
        if isinstance(sh, V.String):
            out.append(CopyOp(STR, off, self.bytes_tid, self.limits.string_bytes, g, goff))
            return True
        if isinstance(sh, V.Struct):
            return all(self.ops(fl.type, off + fl.offset, out, nest + 1, guard) for fl in sh.fields)
        if isinstance(sh, V.Array):
            n = V.captured_count(sh.length, sh.elem_size, self.limits.collection_bytes, self.limits.min_elements)
            inner: list[CopyOp] = []
            if not self.ops(sh.elem, 0, inner, nest + 1):
                return False
            if not inner or n == 0:
                return True
            if n * len(inner) <= 8:
                for i in range(n):
                    self.ops(sh.elem, off + i * sh.elem_size, out, nest + 1, guard)
            else:
                out.append(CopyOp(ARRAY, off, sh.elem, n, g, goff, NO_DEPTH))
            return True
        if isinstance(sh, V.Slice):
            out.append(CopyOp(SLICE, off, sh.elem, self.count_limit(sh.elem_size), g, goff))
            return True
        if isinstance(sh, V.Pointer):
            if sh.elem is None:
                return True
            out.append(CopyOp(PTR, off, sh.elem, 0, g, goff))
            return True
        if isinstance(sh, V.Interface):
            arg = 0 if sh.empty else 1 + self.interfaces.itab_type_off
            out.append(CopyOp(IFACE, off, 0, arg, g, goff))
            return True
        if isinstance(sh, V.SwissMap):
            out.append(CopyOp(PTR, off, self.swiss(sh), 0, g, goff, NO_DEPTH))
            return True
        if isinstance(sh, V.ClassicMap):
            out.append(CopyOp(PTR, off, self.classic(sh), 0, g, goff, NO_DEPTH))
            return True
        if isinstance(sh, V.Chan):
            out.append(CopyOp(PTR, off, self.chan(sh), 0, g, goff, NO_DEPTH))
            return True
        if isinstance(sh, V.Func):
            # The func value points at its code pointer; a closure's captured variables follow it
            ops = (CopyOp(CLOSURE, 0, flags=NO_DEPTH),) if self.table.closures else ()
            out.append(CopyOp(PTR, off, self.new_pseudo(("funcval",), "funcval", 8, ops), 0, g, goff, NO_DEPTH))
            return True
        return False  # type parameters: their real type is known only from the frame's dictionary

    # -- the runtime's objects -------------------------------------------------------------------------------
    def new_pseudo(self, key: tuple, name: str, size: int, ops) -> int:
        if key in self.pseudo:
            return self.pseudo[key]
        tid = len(self.types)
        self.pseudo[key] = tid
        self.types.append(CopyType(name, size, tuple(ops)))
        return tid

    def _reserve(self, key: tuple, count: int = 1) -> int:
        tid = len(self.types)
        self.pseudo[key] = tid
        self.types.extend([None] * count)
        return tid

    def eight_slots(self, sh, key_at, elem_at, guard_of) -> list[CopyOp] | None:
        """The ops of a group's or bucket's 8 slots (key and element offsets and the guard of slot i), or None
        when a key or element type is not covered."""
        ops: list[CopyOp] = []
        for i in range(8):
            parts = ((sh.key, key_at(i), sh.key_indirect), (sh.elem, elem_at(i), sh.elem_indirect))
            got = self.slot_ops(parts, guard_of(i))
            if got is None:
                return None
            ops += got
        return ops

    def slot_ops(self, parts, guard) -> list[CopyOp] | None:
        """The ops of one map slot: *parts* are (type, offset, stored behind a pointer) of its key and element."""
        out: list[CopyOp] = []
        for tid, off, indirect in parts:
            if indirect:
                out.append(CopyOp(PTR, off, tid, 0, guard[0], guard[1], NO_DEPTH))
            elif not self.ops(tid, off, out, 1, guard):
                return None
        return out

    def swiss(self, sh: V.SwissMap) -> int:
        key = ("swiss", sh)
        if key in self.pseudo:
            return self.pseudo[key]
        hdr = self._reserve(key, 3)  # header, group, table pointer, then the table
        group, tptr = hdr + 1, hdr + 2
        ops = self.eight_slots(sh, lambda i: sh.slots_off + i * sh.slot_size + sh.key_off,
                               lambda i: sh.slots_off + i * sh.slot_size + sh.elem_off,
                               lambda i: (GUARD_SWISS, sh.ctrl_off + i))
        self.types[group] = CopyType("map.group", sh.group_size, tuple(ops or ()))
        if ops is None:
            self.uncovered_pseudo(key)
        table = self.new_pseudo(("swiss.table", sh), "map.table", max(sh.groups_data_off, sh.groups_mask_off) + 8,
                                (CopyOp(COUNTED, sh.groups_data_off, group, (COUNT_PLUS_ONE << 16) | sh.groups_mask_off,
                                        flags=NO_DEPTH),))
        self.types[tptr] = CopyType("*map.table", 8, (CopyOp(PTR, 0, table, flags=NO_DEPTH),))
        self.types[hdr] = CopyType("map", V.header_size(sh), (CopyOp(SWISS_DIR, sh.dir_ptr_off, group, sh.dir_len_off,
                                                                     flags=NO_DEPTH),))
        return hdr

    def classic(self, sh: V.ClassicMap) -> int:
        key = ("classic", sh)
        if key in self.pseudo:
            return self.pseudo[key]
        hdr = self._reserve(key, 2)
        bucket = hdr + 1
        ks, es = V.slot_footprints(sh)
        ops = self.eight_slots(sh, lambda i: sh.keys_off + i * ks, lambda i: sh.elems_off + i * es,
                               lambda i: (GUARD_CLASSIC, sh.tophash_off + i))
        if ops is None:
            self.uncovered_pseudo(key)
        ops = list(ops or ()) + [CopyOp(PTR, sh.overflow_off, bucket, flags=NO_DEPTH)]
        self.types[bucket] = CopyType("map.bucket", sh.bucket_size, tuple(ops))
        self.types[hdr] = CopyType("map", V.header_size(sh), (
            CopyOp(COUNTED, sh.buckets_off, bucket, (COUNT_POW2 << 16) | sh.b_off, flags=NO_DEPTH),
            CopyOp(COUNTED, sh.oldbuckets_off, bucket, (COUNT_POW2_HALF << 16) | sh.b_off, flags=NO_DEPTH)))
        return hdr

    def chan(self, sh: V.Chan) -> int:
        key = ("chan", sh)
        if key in self.pseudo:
            return self.pseudo[key]
        hdr = self._reserve(key, 1)
        sudog = self.new_pseudo(("sudog", sh.sudog_next_off), "sudog", sh.sudog_next_off + 8, ())
        self.types[sudog] = CopyType("sudog", sh.sudog_next_off + 8,
                                     (CopyOp(PTR, sh.sudog_next_off, sudog, flags=NO_DEPTH),))
        self.types[hdr] = CopyType("chan", V.header_size(sh), (
            CopyOp(COUNTED, sh.buf_off, sh.elem, (COUNT_U64 << 16) | sh.dataqsiz_off, flags=NO_DEPTH),
            CopyOp(PTR, sh.recvq_first_off, sudog, flags=NO_DEPTH),
            CopyOp(PTR, sh.sendq_first_off, sudog, flags=NO_DEPTH)))
        return hdr

    def uncovered_pseudo(self, key: tuple) -> None:
        self.uncovered.add(("pseudo", key))

    def _covered(self) -> set[int]:
        """Table types whose every reachable type (through ops; interfaces' dynamic types and closures' contexts
        aside) is covered."""
        bad_pseudo = {self.pseudo[k[1]] for k in self.uncovered if isinstance(k, tuple)}
        bad = {t for t in self.uncovered if isinstance(t, int)} | bad_pseudo
        n = len(self.types)
        # A type is uncovered if any op leads (transitively) to an uncovered one.
        changed = True
        while changed:
            changed = False
            for tid in range(n):
                if tid in bad:
                    continue
                t = self.types[tid]
                if t is None or any(op.kind not in (IFACE, CLOSURE) and op.tid in bad for op in t.ops):
                    bad.add(tid)
                    changed = True
        return {tid for tid in range(len(self.table.entries)) if tid not in bad}


def copy_plan(table: V.TypeTable, interfaces: V.InterfaceLayout, limits) -> CopyPlan:
    """The copy plan of a type table under a request's *limits* (string bytes, collection bytes...)."""
    return _Builder(table, interfaces, limits).build()
