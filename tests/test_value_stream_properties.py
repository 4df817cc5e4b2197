"""Properties of the value encoder/decoder pair: generated Go values laid out in test memory round-trip; the
decoder never crashes or hangs on arbitrary or truncated bytes; unreadable memory becomes a marked value."""

from __future__ import annotations

import struct

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from goprobe.backends.interpreter.values import ValueEncoder
from goprobe.decoder import ValueDecoder
from goprobe.ir import values as V


@attrs.define
class Limits:
    string_bytes: int = 64
    collection_bytes: int = 256
    min_elements: int = 1
    map_entries: int = 64
    pointer_depth: int = 4
    total_output_bytes: int = 1 << 20


class Heap:
    """A toy address space: allocate byte blocks, read them back; everything else is unreadable."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}
        self.next = 0x10000

    def alloc(self, data: bytes) -> int:
        addr = self.next
        self.blocks[addr] = data
        self.next += (len(data) + 15) // 16 * 16 + 16
        return addr

    def read(self, addr: int, size: int) -> bytes | None:
        for base, data in self.blocks.items():
            if base <= addr and addr + size <= base + len(data):
                return data[addr - base:addr - base + size]
        return None


# A fixed table: 0 int64, 1 string, 2 []int64, 3 struct{A int64; S string; P *struct}, 4 *struct(3), 5 bool,
# 6 []string, 7 [3]int64
TABLE = V.TypeTable((
    V.TypeEntry("int64", 8, V.Scalar("int64", 8), None, False),
    V.TypeEntry("string", 16, V.String(), None, False),
    V.TypeEntry("[]int64", 24, V.Slice(0, 8), None, False),
    V.TypeEntry("main.T", 40, V.Struct((V.Field("A", 0, 0), V.Field("S", 8, 1), V.Field("P", 24, 4),
                                        V.Field("B", 32, 5))), None, False),
    V.TypeEntry("*main.T", 8, V.Pointer(3, 40), None, True),
    V.TypeEntry("bool", 1, V.Scalar("bool", 1), None, False),
    V.TypeEntry("[]string", 24, V.Slice(1, 16), None, False),
    V.TypeEntry("[3]int64", 24, V.Array(0, 8, 3), None, False),
))


def lay_out(heap: Heap, tid: int, value) -> bytes:
    """Go memory layout of *value* (as the decoder would show it) for type *tid*."""
    shape = TABLE[tid].shape
    if tid == 0:
        return struct.pack("<q", value)
    if tid == 5:
        return bytes([1 if value else 0])
    if tid == 1:
        raw = value.encode()
        return struct.pack("<QQ", heap.alloc(raw) if raw else 0, len(raw))
    if isinstance(shape, V.Slice):
        if value is None:
            return struct.pack("<QQQ", 0, 0, 0)
        body = b"".join(lay_out(heap, shape.elem, x) for x in value)
        return struct.pack("<QQQ", heap.alloc(body) if body else heap.alloc(b"\0"), len(value), len(value))
    if isinstance(shape, V.Array):
        return b"".join(lay_out(heap, shape.elem, x) for x in value)
    if tid == 3:
        return (struct.pack("<q", value["A"]) + lay_out(heap, 1, value["S"]) + lay_out(heap, 4, value["P"])
                + bytes([1 if value["B"] else 0]) + b"\0" * 7)
    if tid == 4:
        if value is None:
            return struct.pack("<Q", 0)
        return struct.pack("<Q", heap.alloc(lay_out(heap, 3, value)))
    raise AssertionError(tid)


ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.text(max_size=40)
structs = st.recursive(
    st.fixed_dictionaries({"A": ints, "S": texts, "P": st.none(), "B": st.booleans()}),
    lambda inner: st.fixed_dictionaries({"A": ints, "S": texts, "P": inner | st.none(), "B": st.booleans()}),
    max_leaves=3)


def strip_addr(v):
    if isinstance(v, dict):
        return {k: strip_addr(x) for k, x in v.items() if k != "@addr"}
    if isinstance(v, list):
        return [strip_addr(x) for x in v]
    return v


def round_trip(tid: int, value, limits: Limits | None = None):
    heap = Heap()
    data = lay_out(heap, tid, value)
    addr = heap.alloc(data)
    enc = ValueEncoder(TABLE, heap, limits or Limits(string_bytes=1 << 16, collection_bytes=1 << 16), rt=None)
    enc.begin_value()
    enc.value_at(tid, addr)
    got, end = ValueDecoder(TABLE).decode(bytes(enc.out), 0, tid)
    assert end == len(enc.out)
    return got


@given(ints)
def test_ints(v):
    assert round_trip(0, v) == v


@given(texts)
def test_strings(v):
    assert round_trip(1, v) == v


@given(st.lists(ints, max_size=20) | st.none())
def test_int_slices(v):
    assert round_trip(2, v) == v


@given(st.lists(texts, max_size=8))
def test_string_slices(v):
    assert round_trip(6, v) == (v if v else [])


@given(st.lists(ints, min_size=3, max_size=3))
def test_arrays(v):
    assert round_trip(7, v) == v


@given(structs)
@settings(max_examples=60)
def test_structs_with_pointers(v):
    assert strip_addr(round_trip(3, v)) == v


@given(st.text(min_size=65, max_size=200))
def test_long_strings_are_truncated_not_lost(v):
    got = round_trip(1, v, Limits())
    raw = v.encode()
    assert got["@truncated"] is True and got["@len"] == len(raw)
    prefix = got["@value"]
    assert isinstance(prefix, dict) or raw.startswith(prefix.encode())


def test_cycles_and_depth_are_marked():
    heap = Heap()
    a = heap.alloc(b"\0" * 40)
    body = struct.pack("<q", 1) + struct.pack("<QQ", 0, 0) + struct.pack("<Q", a) + b"\0" * 8
    heap.blocks[a] = body  # a.P = a
    enc = ValueEncoder(TABLE, heap, Limits(), rt=None)
    enc.begin_value()
    enc.value_at(4, heap.alloc(struct.pack("<Q", a)))
    got, _ = ValueDecoder(TABLE).decode(bytes(enc.out), 0, 4)
    assert got["P"] == {"@addr": hex(a), "@cycle": True}


def test_unreadable_memory_is_a_marked_value():
    heap = Heap()
    enc = ValueEncoder(TABLE, heap, Limits(), rt=None)
    enc.begin_value()
    enc.value_at(3, 0xDEAD0000)
    got, _ = ValueDecoder(TABLE).decode(bytes(enc.out), 0, 3)
    assert "not readable" in got["@unavailable"]
    enc = ValueEncoder(TABLE, heap, Limits(), rt=None)
    enc.value_from_bytes(1, struct.pack("<QQ", 0xBAD000, 5))
    got, _ = ValueDecoder(TABLE).decode(bytes(enc.out), 0, 1)
    assert "not readable" in got["@unavailable"] and got["@len"] == 5


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=len(TABLE.entries) - 1))
@settings(max_examples=400)
def test_decoder_never_crashes_on_arbitrary_bytes(data, tid):
    value, end = ValueDecoder(TABLE).decode(data, 0, tid)
    assert end <= max(len(data), 0) or end == len(data)


@given(structs, st.data())
@settings(max_examples=60)
def test_truncated_streams_decode_to_marked_values(v, data):
    heap = Heap()
    addr = heap.alloc(lay_out(heap, 3, v))
    enc = ValueEncoder(TABLE, heap, Limits(), rt=None)
    enc.begin_value()
    enc.value_at(3, addr)
    cut = data.draw(st.integers(min_value=0, max_value=len(enc.out) - 1))
    got, _ = ValueDecoder(TABLE).decode(bytes(enc.out[:cut]), 0, 3)
    assert got == {"@unavailable": "truncated output"}


def test_output_budget_stops_the_value():
    heap = Heap()
    v = {"A": 1, "S": "x" * 50, "P": {"A": 2, "S": "y" * 50, "P": None, "B": True}, "B": False}
    addr = heap.alloc(lay_out(heap, 3, v))
    enc = ValueEncoder(TABLE, heap, Limits(total_output_bytes=40), rt=None)
    enc.begin_value()
    enc.value_at(3, addr)
    assert len(enc.out) < 200
    got, _ = ValueDecoder(TABLE).decode(bytes(enc.out), 0, 3)
    assert got == {"@unavailable": "truncated output"}


def test_an_address_past_the_top_of_memory_wraps_and_is_unreadable():
    """A garbage header (a channel buffer plus an index, a pointer plus an offset) can put an address past
    2**64: it wraps as the machine's arithmetic would and reads as unreadable; nothing raises."""
    heap = Heap()
    enc = ValueEncoder(TABLE, heap, Limits(), rt=None)
    enc.begin_value()
    enc.value_at(3, (1 << 64) + 0xDEAD0000)
    got, _ = ValueDecoder(TABLE).decode(bytes(enc.out), 0, 3)
    assert got == {"@unavailable": "memory at 0xdead0000 is not readable"}
