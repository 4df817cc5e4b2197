"""Executes value shapes (``goprobe.ir.values``) against a memory source and writes the raw value stream.

The stream format is documented in ``docs/value-stream.md``; ``goprobe.decoder`` reads it back with the
same type table. Every read is bounded by the limits; unreadable memory becomes a marked value.
"""

from __future__ import annotations

import struct
import time
from typing import Protocol

from goprobe.backends.interpreter.copied_memory import NotCopied
from goprobe.ir import values as V

# Status byte that starts every value.
OK = 0
UNREADABLE = 1  # followed by u64 address
BUDGET = 2  # the snapshot's output budget ran out
REASON = 4  # the value could not be evaluated: followed by u16 length and a UTF-8 reason (3 is the eBPF
# backend's placeholder for a value it leaves to goprobe; it never reaches a decoder)


def reason_value(reason: str) -> bytes:
    """A whole value that says why it is not there (e.g. a map lookup whose key is absent)."""
    raw = reason.encode()[:0xFFFF]
    return bytes([REASON]) + struct.pack("<H", len(raw)) + raw

# Pointer kinds.
PTR_NIL, PTR_FOLLOWED, PTR_SEEN, PTR_DEPTH, PTR_OPAQUE = 0, 1, 2, 3, 4
UNKNOWN_TYPE = 0xFFFFFFFF
NO_PAYLOAD = 0xFFFFFFFF  # a string/slice whose payload could not be read

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_ADDR_MASK = (1 << 64) - 1

_DIR_PIECE = 512  # directory entries a piece (copy_codegen.CHUNK // 8)
MAX_BUCKETS = 1 << 16  # bound on bucket/group visits per map
MAX_CHAIN = 1 << 10  # bound on overflow chains and wait queues
MAX_NESTING = 200  # values nested deeper (only through interfaces that contain themselves) are cut


class Memory(Protocol):
    def read(self, addr: int, size: int) -> bytes | None: ...


class Limits(Protocol):
    string_bytes: int
    collection_bytes: int
    min_elements: int
    map_entries: int
    pointer_depth: int
    total_output_bytes: int


class RuntimeTypeInfo:
    """Run-time state for reading interfaces: the IR's layout plus moduledata.types once read."""

    def __init__(self, layout: V.InterfaceLayout, bias: int = 0) -> None:
        self.kind_off = layout.kind_off
        self.tflag_off = layout.tflag_off
        self.str_off = layout.str_off
        self.itab_type_off = layout.itab_type_off
        self.direct_where = "tflag" if layout.direct_in_tflag else "kind"
        self.direct_mask = layout.direct_mask
        self.bias = bias  # runtime address - link-time address (PIE)
        self.types_base: int | None = None  # moduledata.types at run time
        self.types_base_addr = layout.types_field_addr + bias


class ValueEncoder:
    def __init__(self, table: V.TypeTable, memory: Memory, limits: Limits, rt: RuntimeTypeInfo,
                 deadline: float | None = None) -> None:
        """*deadline* (``time.monotonic()``): past it, values are cut as if the output budget ran out and
        ``timed_out`` is set, so that a process paused for this encoding is not kept stopped longer."""
        self.table = table
        self.mem = memory
        self.limits = limits
        self.rt = rt
        self.out = bytearray()
        self._seen: dict[int, int] = {}
        self.dictionary = 0  # the current frame's generic dictionary (``.dict``), 0 if none or unreadable
        self._nest = 0
        self.deadline = deadline
        self.timed_out = False
        self._ticks = 0
        self.scan_cut = False  # the last map_slots walk stopped at a bound, not at the map's end
        self.not_copied = 0  # values cut because a pause's copy did not hold them (see _not_copied)

    # -- entry points -----------------------------------------------------------------------------------
    def begin_value(self) -> None:
        """Start a new top-level value: pointer de-duplication is per value."""
        self._seen = {}

    def value_at(self, tid: V.TypeId, addr: int, depth: int = 0) -> None:
        mark = len(self.out)
        try:
            self._value_at(tid, addr, depth)
        except NotCopied:
            self._not_copied(mark)

    def _not_copied(self, mark: int) -> None:
        """Memory copied in a pause (``copied_memory``) ran out inside this value: it is cut like a value
        past the deadline (the collections around it keep what came before it, marked truncated)."""
        del self.out[mark:]
        self.out.append(BUDGET)
        self.timed_out = True
        self.not_copied += 1

    def _value_at(self, tid: V.TypeId, addr: int, depth: int) -> None:
        entry = self.table[tid]
        if self._over_budget():
            return
        # Addresses computed from what the target holds (a channel buffer plus an index, a pointer plus a
        # field offset) wrap around as the machine's would: a garbage header must not raise here.
        addr &= _ADDR_MASK
        shape = entry.shape
        size = shape.size if isinstance(shape, V.Opaque) else entry.size  # a degraded type reads nothing
        data = self.mem.read(addr, size) if size else b""
        if data is None:
            self.out.append(UNREADABLE)
            self.out += _U64.pack(addr)
            return
        self.value_from_bytes(tid, data, depth)

    def value_from_bytes(self, tid: V.TypeId, data: bytes, depth: int = 0) -> None:
        if self._over_budget():
            return
        self._nest += 1
        mark = len(self.out)
        try:
            if self._nest > MAX_NESTING:  # e.g. a []any that holds itself: cut like a full budget
                self.out.append(BUDGET)
                return
            self._value_from_bytes(tid, data, depth)
        except NotCopied:
            self._not_copied(mark)
        finally:
            self._nest -= 1

    def _value_from_bytes(self, tid: V.TypeId, data: bytes, depth: int) -> None:
        out = self.out
        out.append(OK)
        shape = self.table[tid].shape
        if isinstance(shape, V.Scalar):
            out += data[:shape.size]
        elif isinstance(shape, V.String):
            self._string(data)
        elif isinstance(shape, V.Struct):
            for f in shape.fields:
                size = self.table[f.type].size
                self.value_from_bytes(f.type, data[f.offset:f.offset + size], depth)
        elif isinstance(shape, V.Pointer):
            self._pointer(shape, _U64.unpack_from(data)[0], depth)
        elif isinstance(shape, V.Slice):
            ptr, length, cap = struct.unpack_from("<QQQ", data)
            out += struct.pack("<QQQ", ptr, length, cap)
            self._elements(shape.elem, shape.elem_size, ptr, length, depth)
        elif isinstance(shape, V.Array):
            n = self._count(shape.length, shape.elem_size)
            count_pos = len(out)
            out += struct.pack("<I", n)
            size = shape.elem_size
            for i in range(n):
                mark = len(out)
                self.value_from_bytes(shape.elem, data[i * size:(i + 1) * size], depth)
                if self.timed_out:
                    self._cut(count_pos, mark, i)
                    break
        elif isinstance(shape, V.Interface):
            self._interface(shape, data, depth)
        elif isinstance(shape, (V.SwissMap, V.ClassicMap)):
            self._map(shape, _U64.unpack_from(data)[0], depth)
        elif isinstance(shape, V.Chan):
            self._chan(shape, _U64.unpack_from(data)[0], depth)
        elif isinstance(shape, V.Func):
            fv = _U64.unpack_from(data)[0]
            pc = 0
            if fv:
                raw = self.mem.read(fv, 8)
                pc = _U64.unpack(raw)[0] if raw else 0
            out += struct.pack("<QQ", fv, pc)
            context = self.table.by_closure_entry.get(pc) if pc else None
            if context is None:
                out += struct.pack("<I", UNKNOWN_TYPE)
            else:  # a closure: its captured variables live after the code pointer
                out += struct.pack("<I", context)
                self.value_at(context, fv, depth)
        elif isinstance(shape, V.TypeParam):
            tid = self._type_argument(shape, len(data))
            out += struct.pack("<I", UNKNOWN_TYPE if tid is None else tid)
            self.value_from_bytes(shape.shape if tid is None else tid, data, depth)
        else:  # Opaque: its raw bytes (none for a degraded type)
            raw = data[:shape.size]
            out += struct.pack("<I", len(raw)) + raw

    # -- kinds ------------------------------------------------------------------------------------------
    def _over_budget(self) -> bool:
        if len(self.out) >= self.limits.total_output_bytes or self.out_of_time():
            self.out.append(BUDGET)
            return True
        return False

    def _cut(self, count_pos: int, mark: int, n: int) -> None:
        """The deadline passed inside a collection's element: drop that element, keep the *n* before it (the
        collection then decodes as truncated, like one cut by the byte limits)."""
        del self.out[mark:]
        struct.pack_into("<I", self.out, count_pos, n)

    def out_of_time(self) -> bool:
        """Whether the deadline has passed; the clock is read every 64th call (it costs as much as a value)."""
        if self.timed_out:
            return True
        if self.deadline is None:
            return False
        self._ticks += 1
        if self._ticks & 63 == 0 and time.monotonic() > self.deadline:
            self.timed_out = True
        return self.timed_out

    def _count(self, length: int, elem_size: int) -> int:
        """How many elements of a collection to capture: the byte budget, but at least min_elements."""
        return V.captured_count(length, elem_size, self.limits.collection_bytes, self.limits.min_elements)

    def _string(self, data: bytes) -> None:
        ptr, length = struct.unpack_from("<QQ", data)
        n = min(length, self.limits.string_bytes) if length < (1 << 40) else 0
        payload = self.mem.read(ptr, n) if n else b""
        self.out += struct.pack("<QQ", ptr, length)
        if payload is None:
            self.out += struct.pack("<I", NO_PAYLOAD)
        else:
            self.out += struct.pack("<I", len(payload)) + payload

    def _elements(self, elem: V.TypeId, size: int, ptr: int, length: int, depth: int) -> None:
        n = self._count(length, size) if length < (1 << 40) else 0
        raw = self.mem.read(ptr, n * size) if n * size else b""
        if raw is None:
            self.out += struct.pack("<I", NO_PAYLOAD)
            return
        count_pos = len(self.out)
        self.out += struct.pack("<I", n)
        for i in range(n):
            mark = len(self.out)
            self.value_from_bytes(elem, raw[i * size:(i + 1) * size], depth)
            if self.timed_out:
                self._cut(count_pos, mark, i)
                break

    def _pointer(self, shape: V.Pointer, addr: int, depth: int) -> None:
        out = self.out
        out += _U64.pack(addr)
        if addr == 0:
            out.append(PTR_NIL)
        elif shape.elem is None:
            out.append(PTR_OPAQUE)
        elif addr in self._seen:
            out.append(PTR_SEEN)
        elif depth >= self.limits.pointer_depth:
            out.append(PTR_DEPTH)
        else:
            self._seen[addr] = len(self._seen)
            out.append(PTR_FOLLOWED)
            self.value_at(shape.elem, addr, depth + 1)

    def _interface(self, shape: V.Interface, data: bytes, depth: int) -> None:
        word0, word1 = struct.unpack_from("<QQ", data)
        out = self.out
        typ = word0
        if not shape.empty and word0:
            raw = self.mem.read(word0 + self.rt.itab_type_off, 8)
            typ = _U64.unpack(raw)[0] if raw else 0
        out += struct.pack("<QQ", typ, word1)
        if typ == 0:
            out += struct.pack("<I", UNKNOWN_TYPE)
            out.append(0)  # no name
            return
        # DWARF's DW_AT_go_runtime_type is an offset from moduledata.types (the type section's start).
        tid = self.table.by_runtime_type.get(typ - self.types_base())
        if tid is None:
            out += struct.pack("<I", UNKNOWN_TYPE)
            name = self.runtime_type_name(typ) or b""
            out.append(min(len(name), 255))
            out += name[:255]
            return
        out += struct.pack("<I", tid)
        if self.is_direct(typ):
            self.value_from_bytes(tid, _U64.pack(word1) + b"\0" * max(0, self.table[tid].size - 8), depth)
        else:
            self.value_at(tid, word1, depth)

    def _type_argument(self, shape: V.TypeParam, size: int) -> V.TypeId | None:
        """The real type of a type-parameter value: the runtime type in the frame's dictionary."""
        if not self.dictionary:
            return None
        raw = self.mem.read(self.dictionary + 8 * shape.index, 8)
        if not raw:
            return None
        tid = self.table.by_runtime_type.get(_U64.unpack(raw)[0] - self.types_base())
        if tid is None or self.table[tid].size != size:
            return None
        return tid

    def is_direct(self, typ: int) -> bool:
        rt = self.rt
        off = rt.tflag_off if rt.direct_where == "tflag" else rt.kind_off
        raw = self.mem.read(typ + off, 1)
        return bool(raw and raw[0] & rt.direct_mask)

    def types_base(self) -> int:
        rt = self.rt
        if rt.types_base is None:
            raw = self.mem.read(rt.types_base_addr, 8)
            rt.types_base = _U64.unpack(raw)[0] if raw else 0
        return rt.types_base

    def runtime_type_name(self, typ: int) -> bytes | None:
        """The type's name from its runtime descriptor (nameOff into moduledata.types)."""
        rt = self.rt
        self.types_base()
        raw = self.mem.read(typ + rt.str_off, 4)
        tflag = self.mem.read(typ + rt.tflag_off, 1)
        if not raw or not rt.types_base:
            return None
        name_addr = rt.types_base + struct.unpack("<i", raw)[0]
        head = self.mem.read(name_addr, 11)
        if not head:
            return None
        n, shift, pos = 0, 0, 1  # byte 0 holds flags, then a varint length
        while pos < len(head):
            b = head[pos]
            n |= (b & 0x7F) << shift
            pos += 1
            if b < 0x80:
                break
            shift += 7
        name = self.mem.read(name_addr + pos, min(n, 255))
        if name and tflag and tflag[0] & 2:  # TFlagExtraStar: the stored name has a leading '*' to drop
            name = name[1:]
        return name

    def _chan(self, shape: V.Chan, hchan: int, depth: int) -> None:
        out = self.out
        out += _U64.pack(hchan)
        if hchan == 0:
            return
        hdr = self.mem.read(hchan, V.header_size(shape))
        if hdr is None:
            out.append(1)  # header unreadable
            return
        out.append(0)
        u64 = lambda off: _U64.unpack_from(hdr, off)[0]  # noqa: E731
        qcount, size, buf = u64(shape.qcount_off), u64(shape.dataqsiz_off), u64(shape.buf_off)
        closed = struct.unpack_from("<I", hdr, shape.closed_off)[0]
        recvx = u64(shape.recvx_off)
        out += struct.pack("<QQB", qcount, size, 1 if closed else 0)
        n = self._count(min(qcount, size), shape.elem_size) if size else 0
        count_pos = len(out)
        out += struct.pack("<I", n)
        for i in range(n):
            idx = (recvx + i) % size
            mark = len(out)
            self.value_at(shape.elem, buf + idx * shape.elem_size, depth)
            if self.timed_out:
                self._cut(count_pos, mark, i)
                break
        out += struct.pack("<II", self._queue_len(u64(shape.recvq_first_off), shape.sudog_next_off),
                           self._queue_len(u64(shape.sendq_first_off), shape.sudog_next_off))

    def _queue_len(self, first: int, next_off: int) -> int:
        n = 0
        cur = first
        while cur and n < MAX_CHAIN:
            n += 1
            raw = self.mem.read(cur + next_off, 8)
            cur = _U64.unpack(raw)[0] if raw else 0
        return n

    def map_slots(self, shape: V.SwissMap | V.ClassicMap, m: int, header: bytes):
        """(key address, element address) of each live entry, in table order, within the visit bounds and
        the deadline; ``scan_cut`` says afterwards whether either ended the walk before the map's end."""
        self.scan_cut = False
        if isinstance(shape, V.SwissMap):
            yield from self._swiss_slots(shape, m, header)
        else:
            yield from self._classic_slots(shape, m, header)

    def _slots_copied(self, slots):
        """*slots*, ended (as by the deadline) where a pause's copy does not hold the map's next group."""
        try:
            yield from slots
        except NotCopied:
            self.timed_out = True
            self.not_copied += 1

    def map_header(self, shape: V.SwissMap | V.ClassicMap, m: int) -> bytes | None:
        return self.mem.read(m, V.header_size(shape))

    def _swiss_slots(self, shape: V.SwissMap, m: int, hdr: bytes):
        visited = 0
        for base, ngroups in self._swiss_group_arrays(shape, hdr):
            for g in range(ngroups):
                if visited >= MAX_BUCKETS or self.out_of_time():
                    self.scan_cut = True
                    return
                visited += 1
                addr = base + g * shape.group_size
                ctrl = self.mem.read(addr + shape.ctrl_off, 8)
                if ctrl is None:
                    continue
                for slot in range(8):
                    if ctrl[slot] & 0x80:  # empty or deleted
                        continue
                    s = addr + shape.slots_off + slot * shape.slot_size
                    yield self._slot_addrs(shape, s + shape.key_off, s + shape.elem_off)

    def _swiss_group_arrays(self, shape: V.SwissMap, hdr: bytes):
        """(group array address, number of groups) of each table, table by table as the directory lists them
        (the directory in pieces of one copier read): a pause's copy cut partway holds the first tables
        whole, and their entries are shown (marked cut), not none at all."""
        dir_ptr = _U64.unpack_from(hdr, shape.dir_ptr_off)[0]
        dir_len = _I64.unpack_from(hdr, shape.dir_len_off)[0]
        if dir_len == 0:
            yield dir_ptr, 1  # a small map: one group, no tables
            return
        if dir_len < 0 or dir_len > MAX_BUCKETS:
            self.scan_cut = True
            return
        seen: set[int] = set()
        for start in range(0, dir_len, _DIR_PIECE):
            raw = self.mem.read(dir_ptr + 8 * start, 8 * min(_DIR_PIECE, dir_len - start))
            if raw is None:
                return
            for (t,) in struct.iter_unpack("<Q", raw):
                if not t or t in seen:  # directory entries repeat a table shared by several slots
                    continue
                seen.add(t)
                th = self.mem.read(t, max(shape.groups_data_off, shape.groups_mask_off) + 8)
                if th:
                    data = _U64.unpack_from(th, shape.groups_data_off)[0]
                    mask = _U64.unpack_from(th, shape.groups_mask_off)[0]
                    self.scan_cut |= mask >= MAX_BUCKETS
                    yield data, min(mask + 1, MAX_BUCKETS)

    def _classic_slots(self, shape: V.ClassicMap, h: int, hdr: bytes):
        B = hdr[shape.b_off]
        buckets = _U64.unpack_from(hdr, shape.buckets_off)[0]
        old = _U64.unpack_from(hdr, shape.oldbuckets_off)[0]
        # Entries live in the new buckets, and (while the map grows) in old buckets not yet evacuated:
        # tophash values 2..4 mark evacuated slots, 0..1 empty ones, >= 5 live entries.
        sources = [(buckets, 1 << min(B, 30))]
        if old:
            sources.append((old, 1 << max(min(B, 30) - 1, 0)))
        visited = 0
        for base, n in sources:
            if n > MAX_BUCKETS:
                self.scan_cut = True
            for i in range(min(n, MAX_BUCKETS)):
                if visited >= MAX_BUCKETS or self.out_of_time():
                    self.scan_cut = True
                    return
                b = base + i * shape.bucket_size
                chain = 0
                while b and chain < MAX_CHAIN and visited < MAX_BUCKETS:
                    chain += 1
                    visited += 1
                    raw = self.mem.read(b, shape.bucket_size)
                    if raw is None:
                        break
                    ks, es = V.slot_footprints(shape)
                    for slot in range(8):
                        if raw[shape.tophash_off + slot] >= 5:
                            yield self._slot_addrs(shape, b + shape.keys_off + slot * ks,
                                                   b + shape.elems_off + slot * es)
                    b = _U64.unpack_from(raw, shape.overflow_off)[0]

    def _slot_addrs(self, shape: V.SwissMap | V.ClassicMap, key: int, elem: int) -> tuple[int, int]:
        """Where a slot's key and element are: behind the slot's pointer when stored indirectly (0, which
        reads as unreadable, when that pointer cannot be read)."""
        if shape.key_indirect:
            raw = self.mem.read(key, 8)
            key = 0 if raw is None else _U64.unpack(raw)[0]
        if shape.elem_indirect:
            raw = self.mem.read(elem, 8)
            elem = 0 if raw is None else _U64.unpack(raw)[0]
        return key, elem

    def _map(self, shape: V.SwissMap | V.ClassicMap, m: int, depth: int) -> None:
        out = self.out
        out += _U64.pack(m)
        if m == 0:
            return
        hdr = self.map_header(shape, m)
        if hdr is None:
            out.append(1)
            return
        out.append(0)
        if isinstance(shape, V.SwissMap):
            count = _U64.unpack_from(hdr, shape.used_off)[0]
        else:
            count = max(_I64.unpack_from(hdr, shape.count_off)[0], 0)
        self.out += _U64.pack(count)
        count_pos = len(self.out)
        self.out += struct.pack("<I", 0)  # patched with the number of entries written
        written = 0
        for key_addr, elem_addr in self._slots_copied(self.map_slots(shape, m, hdr)):
            if written >= self.limits.map_entries or self.out_of_time():
                break
            mark = len(out)
            self.value_at(shape.key, key_addr, depth)
            self.value_at(shape.elem, elem_addr, depth)
            if self.timed_out:  # cut inside this entry: leave it out, keep the entries before it
                del out[mark:]
                break
            written += 1
        struct.pack_into("<I", out, count_pos, written)
