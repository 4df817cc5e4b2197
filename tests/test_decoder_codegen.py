"""The generated decoder (``goprobe.decoder_codegen``) against ValueDecoder: same values and positions for
streams written by the interpreter's ValueEncoder (test memory, random memory under a real plan, a real
snapshot of the kinds fixture), for random streams over random type tables covering every shape and status,
for every prefix of them and for arbitrary bytes."""

from __future__ import annotations

import math
import random
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import VERSIONS, build_fixture
from goprobe.backends.interpreter.values import RuntimeTypeInfo, ValueEncoder
from goprobe.decoder import ValueDecoder
from goprobe.decoder_codegen import compile_decoder
from goprobe.ir import values as V
from test_value_stream_properties import TABLE, Heap, Limits, ints, lay_out, strip_addr, structs, texts

TRUNCATED = {"@unavailable": "truncated output"}


def func_name(pc: int) -> str | None:
    return f"main.fn{pc % 5}" if pc % 3 else None


def type_name(addr: int) -> str | None:
    return f"pkg.T{addr % 7}" if addr % 2 else None


def reference(table: V.TypeTable, data: bytes, tid: int, pos: int = 0):
    """ValueDecoder's answer (it never raises, even on garbage)."""
    return ValueDecoder(table, func_name, type_name).decode(data, pos, tid)


def check(table: V.TypeTable, dec, data: bytes, tid: int, pos: int = 0) -> None:
    want = reference(table, data, tid, pos)
    got = dec.decode(data, pos, tid)
    assert got == want, (data.hex(), tid, pos)


def check_prefixes(table: V.TypeTable, dec, data: bytes, tid: int) -> None:
    for cut in range(len(data) + 1):
        check(table, dec, data[:cut], tid)


# -- streams from the interpreter's encoder over test memory ------------------------------------------------
def encode(table, heap, tid, addr, limits=None, rt=None) -> bytes:
    enc = ValueEncoder(table, heap, limits or Limits(), rt=rt)
    enc.begin_value()
    enc.value_at(tid, addr)
    return bytes(enc.out)


small_limits = st.builds(Limits, string_bytes=st.integers(0, 12), collection_bytes=st.integers(0, 40),
                         min_elements=st.integers(0, 2), pointer_depth=st.integers(0, 3),
                         total_output_bytes=st.integers(1, 400))


@given(structs, small_limits)
@settings(max_examples=80, deadline=None)
def test_encoded_structs_with_pointers(v, limits):
    heap = Heap()
    addr = heap.alloc(lay_out(heap, 3, v))
    dec = compile_decoder(TABLE, func_name, type_name)
    for tid, a in ((3, addr), (4, heap.alloc(struct.pack("<Q", addr)))):
        data = encode(TABLE, heap, tid, a, limits)
        check_prefixes(TABLE, dec, data, tid)


@given(st.one_of(st.tuples(st.just(1), texts), st.tuples(st.just(2), st.lists(ints, max_size=12) | st.none()),
                 st.tuples(st.just(6), st.lists(texts, max_size=6)),
                 st.tuples(st.just(7), st.lists(ints, min_size=3, max_size=3))), small_limits)
@settings(max_examples=80, deadline=None)
def test_encoded_strings_slices_arrays(tv, limits):
    tid, v = tv
    heap = Heap()
    addr = heap.alloc(lay_out(heap, tid, v))
    dec = compile_decoder(TABLE)
    data = encode(TABLE, heap, tid, addr, limits)
    check_prefixes(TABLE, dec, data, tid)
    assert dec.decode(data, 0, tid) == ValueDecoder(TABLE).decode(data, 0, tid)
    check(TABLE, dec, encode(TABLE, heap, tid, 0xDEAD0000, limits), tid)  # unreadable


# Interfaces: TABLE plus interface types; some entries have runtime types, one runtime type is unknown.
TYPES_BASE, TYPES_FIELD = 0x400000, 0x9000
LAYOUT = V.InterfaceLayout(kind_off=23, tflag_off=20, str_off=40, itab_type_off=8, direct_in_tflag=False,
                           direct_mask=0x20, types_field_addr=TYPES_FIELD)
RUNTIME = {0: 0x40, 1: 0x80, 3: 0xC0, 4: 0x100}  # tid -> runtime type offset; *main.T is direct
HIDDEN = 0x140  # a runtime type the table does not know: "main.Hidden"
IFACE_TABLE = V.TypeTable(tuple(
    attrs.evolve(e, runtime_type=RUNTIME.get(i)) for i, e in enumerate(TABLE.entries)) + (
    V.TypeEntry("interface {}", 16, V.Interface(True), None, False),
    V.TypeEntry("error", 16, V.Interface(False), None, False),
    V.TypeEntry("[]interface {}", 24, V.Slice(8, 16), None, False),
    V.TypeEntry("main.Box", 32, V.Struct((V.Field("E", 0, 8), V.Field("I", 16, 9))), None, False),
))


def runtime_heap() -> Heap:
    heap = Heap()
    heap.blocks[TYPES_FIELD] = struct.pack("<Q", TYPES_BASE)
    names = {0x40: b"int64", 0x80: b"string", 0xC0: b"main.T", 0x100: b"*main.T", HIDDEN: b"main.Hidden"}
    for off, name in names.items():
        desc = bytearray(48)
        desc[23] = 0x20 if off == 0x100 else 0
        struct.pack_into("<i", desc, 40, 0x1000 + off)
        heap.blocks[TYPES_BASE + off] = bytes(desc)
        heap.blocks[TYPES_BASE + 0x1000 + off] = bytes([0, len(name)]) + name
    return heap


iface_values = st.one_of(
    st.none(), st.tuples(st.just(0), ints), st.tuples(st.just(1), texts), st.tuples(st.just(3), structs),
    st.tuples(st.just(4), structs | st.none()), st.tuples(st.just("hidden"), st.binary(max_size=8)))


def lay_out_iface(heap: Heap, v, empty: bool) -> bytes:
    if v is None:
        return struct.pack("<QQ", 0, 0)
    tid, x = v
    if tid == "hidden":
        typ, word = TYPES_BASE + HIDDEN, heap.alloc(x or b"\0")
    else:
        typ = TYPES_BASE + RUNTIME[tid]
        laid = lay_out(heap, tid, x)
        word = struct.unpack("<Q", laid)[0] if tid == 4 else heap.alloc(laid)
    if not empty:
        typ = heap.alloc(struct.pack("<QQ", 0, typ))  # an itab: its type at offset 8
    return struct.pack("<QQ", typ, word)


@given(st.lists(iface_values, max_size=5), iface_values, small_limits)
@settings(max_examples=80, deadline=None)
def test_encoded_interfaces_known_and_unknown(items, single, limits):
    heap = runtime_heap()
    rt = RuntimeTypeInfo(LAYOUT)
    dec = compile_decoder(IFACE_TABLE, func_name, type_name)
    body = b"".join(lay_out_iface(heap, x, True) for x in items)
    sl = heap.alloc(struct.pack("<QQQ", heap.alloc(body or b"\0"), len(items), len(items)))
    box = heap.alloc(lay_out_iface(heap, single, True) + lay_out_iface(heap, single, False))
    for tid, addr in ((10, sl), (11, box)):
        data = encode(IFACE_TABLE, heap, tid, addr, limits, rt)
        check_prefixes(IFACE_TABLE, dec, data, tid)
    data = encode(IFACE_TABLE, heap, 11, box, Limits(string_bytes=1 << 10), rt)
    got, _ = dec.decode(data, 0, 11)
    if single is not None and single[0] == "hidden":
        assert got["E"]["@type"] == "main.Hidden" and "not in the capture plan" in got["E"]["@unavailable"]
    elif single is not None:
        assert got["E"]["@type"] == IFACE_TABLE[single[0]].name and strip_addr(got["E"]) == strip_addr(got["I"])


# -- random streams over random type tables -----------------------------------------------------------------
SCALARS = [("bool", 1), ("int8", 1), ("int16", 2), ("int32", 4), ("int64", 8), ("int", 8), ("uint8", 1),
           ("uint16", 2), ("uint32", 4), ("uint64", 8), ("uint", 8), ("uintptr", 8), ("float32", 4),
           ("float64", 8), ("complex64", 8), ("complex128", 16), ("unsafe.Pointer", 8)]
ODD_SCALARS = [("int32", 8), ("bool", 0), ("bool", 2), ("mystery", 3), ("float64", 4), ("unsafe.Pointer", 4),
               ("complex128", 8), ("uint8", 0)]
FIELD_NAMES = ["A", "B", "ID", "Path", "_", "_", "next", "&x", "@odd", "it's \"quoted\"\n"]
TYPE_NAMES = ["main.T", "*main.T", "map[string]int", "chan int", 'we\'ird "name" \\ {x}', "closure context"]


def random_table(rng: random.Random) -> V.TypeTable:
    n = rng.randint(1, 14)
    ref = lambda: rng.randrange(n)  # noqa: E731 - any entry, so recursive types are common
    entries = []
    for _ in range(n):
        r = rng.random()
        if r < 0.22:
            kind, size = rng.choice(SCALARS) if rng.random() < 0.9 else rng.choice(ODD_SCALARS)
            shape = V.Scalar(kind, size)
        elif r < 0.32:
            shape = V.String()
        elif r < 0.42:
            shape = V.Struct(tuple(V.Field(rng.choice(FIELD_NAMES if rng.random() < 0.95 else ["@x"]), 0, ref())
                                   for _ in range(rng.randint(0, 4))))
        elif r < 0.52:
            shape = V.Pointer(ref() if rng.random() < 0.85 else None, 8)
        elif r < 0.6:
            shape = V.Slice(ref(), 8)
        elif r < 0.66:
            shape = V.Array(ref(), 8, rng.randint(0, 4))
        elif r < 0.73:
            shape = V.Interface(rng.random() < 0.5)
        elif r < 0.8:
            cls = rng.choice([V.SwissMap, V.ClassicMap])
            shape = cls(ref(), ref(), *([0] * (len(attrs.fields(cls)) - 2)))
        elif r < 0.85:
            shape = V.Chan(ref(), 8, *([0] * 9))
        elif r < 0.9:
            shape = V.Func()
        elif r < 0.95:
            shape = V.TypeParam(ref(), 0)
        else:
            shape = V.Opaque(rng.randint(0, 9))
        entries.append(V.TypeEntry(rng.choice(TYPE_NAMES), 8, shape, None, False))
    return V.TypeTable(tuple(entries))


FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.5, -2.25e30]


class StreamWriter:
    """Writes a random but mostly well-formed value stream of a type: every status, pointer kind, payload
    state and dynamic type choice the format has, some garbage, and values nested up to a depth."""

    def __init__(self, table: V.TypeTable, rng: random.Random) -> None:
        self.t = table
        self.r = rng
        self.out = bytearray()

    def u(self, fmt: str, *v) -> None:
        self.out += struct.pack("<" + fmt, *v)

    def value(self, tid: int, depth: int) -> None:
        r = self.r
        x = r.random()
        if depth <= 0 or x < 0.05:
            self.out.append(1)  # unreadable
            self.u("Q", r.randrange(1 << 64))
            return
        if x < 0.06:
            self.out.append(r.choice([2, 3, 255]))  # budget / garbage status
            return
        self.out.append(0)
        if not 0 <= tid < len(self.t.entries):
            return
        entry = self.t[tid]
        s = entry.shape
        d = depth - 1
        if isinstance(s, V.Scalar):
            if s.kind.startswith(("float", "complex")) and r.random() < 0.7:
                fmt = {"float32": "f", "float64": "d", "complex64": "ff", "complex128": "dd"}[s.kind]
                raw = struct.pack("<" + fmt, *(r.choice(FLOATS) for _ in fmt))
                self.out += raw[:s.size].ljust(s.size, b"\0")
            else:
                self.out += r.randbytes(s.size)
        elif isinstance(s, V.String):
            self.string()
        elif isinstance(s, V.Struct):
            for f in s.fields:
                self.value(f.type, d)
        elif isinstance(s, V.Pointer):
            kind = r.choice([0, 1, 1, 1, 2, 3, 4, 7])
            self.u("QB", 0 if kind == 0 else r.randrange(1, 1 << 48), kind)
            if kind == 1:
                self.value(s.elem if s.elem is not None else -1, d)
        elif isinstance(s, (V.Slice, V.Array)):
            n = r.randint(0, 4)
            if isinstance(s, V.Slice):
                nil = r.random() < 0.15
                ln = 0 if nil else max(0, n + r.choice([0, 0, 0, 2, -1]))
                self.u("QQQ", 0 if nil else r.randrange(1, 1 << 48), ln, 0 if nil else ln + r.randint(0, 3))
                if not nil and r.random() < 0.1:
                    self.u("I", 0xFFFFFFFF)
                    return
                if nil:
                    n = 0 if r.random() < 0.8 else n
            self.u("I", n)
            for _ in range(n):
                self.value(s.elem, d)
        elif isinstance(s, V.Interface):
            c = r.random()
            if c < 0.15:
                self.u("QQI", 0, 0, 0xFFFFFFFF)
                self.out.append(0)
            elif c < 0.4:
                name = r.choice([b"", b"main.Hidden", "caf\u00e9".encode(), b"\xff\xfe"])
                self.u("QQI", r.randrange(1, 1 << 48), r.randrange(1 << 64), 0xFFFFFFFF)
                self.out.append(len(name))
                self.out += name
            else:
                tid2 = r.randrange(len(self.t.entries)) if r.random() < 0.95 else len(self.t.entries) + 3
                self.u("QQI", r.randrange(1, 1 << 48), r.randrange(1 << 64), tid2)
                self.value(tid2, d)
        elif isinstance(s, (V.SwissMap, V.ClassicMap)):
            c = r.random()
            if c < 0.15:
                self.u("Q", 0)
                return
            self.u("Q", r.randrange(1, 1 << 48))
            if c < 0.25:
                self.out.append(r.choice([1, 9]))
                return
            self.out.append(0)
            n = r.randint(0, 3)
            self.u("QI", max(0, n + r.choice([0, 0, 2, -1])), n)
            for _ in range(n):
                self.value(s.key, d)
                self.value(s.elem, d)
        elif isinstance(s, V.Chan):
            c = r.random()
            if c < 0.15:
                self.u("Q", 0)
                return
            self.u("Q", r.randrange(1, 1 << 48))
            if c < 0.25:
                self.out.append(1)
                return
            self.out.append(0)
            n = r.randint(0, 3)
            self.u("QQBI", n, n + r.randint(0, 2), r.choice([0, 1, 5]), n)
            for _ in range(n):
                self.value(s.elem, d)
            self.u("II", r.randint(0, 3), r.randint(0, 3))
        elif isinstance(s, V.Func):
            nil = r.random() < 0.2
            ctx = r.randrange(len(self.t.entries)) if r.random() < 0.4 else 0xFFFFFFFF
            self.u("QQI", 0 if nil else r.randrange(1, 1 << 48), 0 if nil else r.randrange(1, 1 << 32), ctx)
            if ctx != 0xFFFFFFFF:
                self.value(ctx, d)
        elif isinstance(s, V.TypeParam):
            if r.random() < 0.5:
                self.u("I", 0xFFFFFFFF)
                self.value(s.shape, d)
            else:
                real = r.randrange(len(self.t.entries)) if r.random() < 0.95 else 1 << 20
                self.u("I", real)
                self.value(real, d)
        else:
            n = r.randint(0, 6)
            self.u("I", n)
            self.out += r.randbytes(n)

    def string(self) -> None:
        r = self.r
        text = r.choice(["", "héllo", "a\x00b", "\u2603" * 3]).encode() if r.random() < 0.7 else r.randbytes(
            r.randint(1, 6))
        ln = len(text) + r.choice([0, 0, 0, 5])
        if r.random() < 0.1:
            self.u("QQI", r.randrange(1 << 48), ln, 0xFFFFFFFF)
            return
        self.u("QQI", r.randrange(1 << 48), ln, len(text))
        self.out += text


def random_case(seed: int):
    rng = random.Random(seed)
    table = random_table(rng)
    tid = rng.randrange(len(table.entries))
    w = StreamWriter(table, rng)
    w.value(tid, rng.randint(1, 6))
    return table, tid, bytes(w.out), rng


@given(st.integers(0, 2**64))
@settings(max_examples=400, deadline=None)
def test_random_streams_over_random_tables(seed):
    table, tid, data, rng = random_case(seed)
    dec = compile_decoder(table, func_name, type_name)
    check(table, dec, data, tid)
    check(table, dec, data + b"\x07tail", tid)
    check_prefixes(table, dec, data, tid)
    for _ in range(8):  # corrupt a few bytes
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        check(table, dec, bytes(b), tid)


@given(st.integers(0, 2**64), st.integers(1, 4))
@settings(max_examples=150, deadline=None)
def test_sequences_decode_like_successive_calls(seed, count):
    rng = random.Random(seed)
    table = random_table(rng)
    tids, parts = [], []
    for _ in range(count):
        tid = rng.randrange(len(table.entries))
        w = StreamWriter(table, rng)
        w.value(tid, rng.randint(1, 4))
        tids.append(tid)
        parts.append(bytes(w.out))
    data = b"".join(parts)
    dec = compile_decoder(table, func_name, type_name)
    for cut in sorted({len(data), *(rng.randrange(len(data) + 1) for _ in range(10))}):
        chunk = data[:cut]
        want, pos = [], 0
        for t in tids:
            v, pos = reference(table, chunk, t, pos)
            want.append(v)
        assert dec.decode_many(chunk, 0, tids) == (want, pos)
        assert dec.sequence(tids)(chunk, 0) == (want, pos)


@given(st.binary(max_size=300), st.integers(0, 2**64))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_raise(data, seed):
    table = random_table(random.Random(seed))
    dec = compile_decoder(table, func_name, type_name)
    for tid in range(len(table.entries)):
        check(table, dec, data, tid)
    check(TABLE, compile_decoder(TABLE), data, seed % len(TABLE.entries))


def test_type_ids_outside_the_table_behave_like_valuedecoder():
    dec = compile_decoder(TABLE)
    unreadable = b"\x01" + struct.pack("<Q", 0xABC)
    for tid in (len(TABLE.entries), 10**6, -1, -len(TABLE.entries), -len(TABLE.entries) - 1):
        for data in (unreadable, b"\x00" + b"\x00" * 40, b"\x02", b""):
            check(TABLE, dec, data, tid)


def test_deep_garbage_never_raises():
    """A stream nesting far deeper than Python's recursion limit: both decoders answer "truncated output"."""
    table = V.TypeTable((V.TypeEntry("interface {}", 16, V.Interface(True), None, False),))
    one = b"\x00" + struct.pack("<QQI", 1, 2, 0)
    data = one * 20000 + b"\x01" + b"\0" * 8
    assert ValueDecoder(table).decode(data, 0, 0) == (TRUNCATED, len(data))
    assert compile_decoder(table).decode(data, 0, 0) == (TRUNCATED, len(data))
    assert compile_decoder(table).decode(one * 50 + b"\x01" + b"\0" * 8, 0, 0)[1] == 50 * len(one) + 9


def test_generated_code_is_per_reached_type_and_bounded():
    # A chain of 3000 structs, each with a scalar, a string and a pointer to the next (the last to the first).
    n = 3000
    entries = [V.TypeEntry("int64", 8, V.Scalar("int64", 8), None, False),
               V.TypeEntry("string", 16, V.String(), None, False)]
    for i in range(n):
        s = 2 + 2 * i
        nxt = 2 + 2 * ((i + 1) % n)
        entries.append(V.TypeEntry(f"main.S{i}", 32, V.Struct((
            V.Field("N", 0, 0), V.Field("S", 8, 1), V.Field("Next", 24, nxt + 1))), None, False))
        entries.append(V.TypeEntry(f"*main.S{i}", 8, V.Pointer(s, 32), None, True))
    table = V.TypeTable(tuple(entries))
    dec = compile_decoder(table, roots=[2])
    src = dec.source()
    assert src.count("\ndef ") + 1 <= 2 and len(src.splitlines()) < 2 * 300
    data = b""
    for i in reversed(range(30)):  # S0 -> S1 -> ... -> S29 -> nil
        link = struct.pack("<QB", 0x1000 + i, 1) + data if data else struct.pack("<QB", 0, 0)
        data = b"\0" + b"\0" + struct.pack("<q", i) + b"\0" + struct.pack("<QQI", 1, 2, 2) + b"hi" + b"\0" + link
    check(table, dec, data, 2)
    value, _ = dec.decode(data, 0, 2)
    assert value["Next"]["Next"]["N"] == 2
    generated = dec.source().count("def _d")
    assert 2 < generated <= 31  # only the types reached, never the whole table
    assert len(dec.source().splitlines()) < generated * 300
    for line in dec.source().splitlines():
        assert len(line) < 400


def test_special_values():
    table = V.TypeTable((
        V.TypeEntry("float64", 8, V.Scalar("float64", 8), None, False),
        V.TypeEntry("complex64", 8, V.Scalar("complex64", 8), None, False),
        V.TypeEntry("[]float32", 24, V.Slice(3, 4), None, False),
        V.TypeEntry("float32", 4, V.Scalar("float32", 4), None, False),
        V.TypeEntry("string", 16, V.String(), None, False),
        V.TypeEntry("[]uint8", 24, V.Slice(6, 1), None, False),
        V.TypeEntry("uint8", 1, V.Scalar("uint8", 1), None, False),
    ))
    dec = compile_decoder(table)
    for x, want in ((math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (2.5, 2.5)):
        assert dec.decode(b"\0" + struct.pack("<d", x), 0, 0) == (want, 9)
    assert dec.decode(b"\0" + struct.pack("<ff", math.nan, -math.inf), 0, 1)[0] == ["NaN", "-Inf"]
    floats = struct.pack("<QQQI", 0xc000010000, 3, 3, 3) + b"".join(b"\0" + struct.pack("<f", x) for x in (1, math.inf, 2))
    assert dec.decode(b"\0" + floats, 0, 2)[0] == [1.0, "+Inf", 2.0]
    raw = b"\0" + struct.pack("<QQI", 0x1234, 4, 2) + b"\xff\xfe"
    assert dec.decode(raw, 0, 4)[0] == {"@len": 4, "@truncated": True, "@value": {"@hex": "fffe"}}
    mixed = b"\0" + struct.pack("<QQQI", 0xc000010000, 3, 3, 3) + b"\0\x07" + b"\x01" + struct.pack("<Q", 0x99) + b"\0\x09"
    assert dec.decode(mixed, 0, 5)[0] == [7, {"@unavailable": "memory at 0x99 is not readable"}, 9]
    for data, tid in ((floats, 2), (mixed[1:], 5)):
        check_prefixes(table, dec, b"\0" + data, tid)
    # Headers no real value has (a location the debug info got wrong) are unavailable, never shown.
    for hdr, tid in ((struct.pack("<QQQI", 0xc000010000, 4, 3, 0), 5), (struct.pack("<QQQI", 0, 0, 3, 0), 5),
                     (struct.pack("<QQQI", 10, 1, 3, 0), 5), (struct.pack("<QQI", 0xc000010000, 1 << 45, 0), 4),
                     (struct.pack("<QQI", 0, 2, 0), 4), (struct.pack("<QQI", 1 << 50, 2, 0), 4)):
        for d in (dec, ValueDecoder(table)):
            got = d.decode(b"\0" + hdr, 0, tid)[0]
            assert set(got) == {"@unavailable"} and got["@unavailable"].startswith("impossible"), got


# -- real type tables ---------------------------------------------------------------------------------------
def _versions_for_maps():
    """One Go version with classic maps (≤ 1.23) and one with swiss maps, among those selected."""
    classic = [v for v in VERSIONS if tuple(map(int, v.split(".")[:2])) <= (1, 23)]
    swiss = [v for v in VERSIONS if tuple(map(int, v.split(".")[:2])) >= (1, 24)]
    return ([classic[-1]] if classic else []) + ([swiss[-1]] if swiss else [])


def _widened_plan(version):
    """test_interpreter_random_memory's plan for *version*: its captures run in every random frame."""
    from goprobe import GoBinary
    from goprobe.dwarf.lists import LocationRange
    from goprobe.ir.snapshot import compile_snapshot
    from test_interpreter_random_memory import CAPTURES

    with GoBinary(build_fixture("kinds", version, "debug")) as b:
        p = compile_snapshot(b, CAPTURES, max_frames=64, max_goroutines=64)

    def widen(c):
        if not c.locations:
            return c
        return attrs.evolve(c, locations=(LocationRange(0, 1 << 63, c.locations[0].location),))

    frames = tuple(attrs.evolve(fp, ranges=((0, 1 << 63),), captures=tuple(widen(c) for c in fp.captures))
                   for fp in p.frames)
    return attrs.evolve(p, frames=frames)


@pytest.mark.parametrize("version", _versions_for_maps())
def test_random_memory_under_a_real_plan(version):
    """Streams the interpreter writes for real kinds-fixture types (maps of this version's layout, interfaces,
    channels, pointers, strings, slices) over random memory: both decoders agree."""
    from goprobe.backends.interpreter.snapshot import run_snapshot
    from goprobe.process import ThreadState
    from goprobe.request import Limits as RequestLimits
    from test_interpreter_random_memory import RandomMemory

    plan = _widened_plan(version)
    dec = compile_decoder(plan.types, func_name, type_name)
    kinds = {type(e.shape).__name__ for e in plan.types.entries}
    assert {"SwissMap", "ClassicMap"} & kinds and {"Interface", "Chan", "Pointer"} <= kinds
    compared = 0
    for seed in range(6):
        threads = [ThreadState(tid=1, regs={"rip": 0x10000, "rsp": 0x10000, "rbp": 0x10100,
                                            "fs_base": 0x10010})]
        raw = run_snapshot(plan, RandomMemory(seed, 0x10000), threads, RequestLimits(total_output_bytes=1 << 14))
        for g in raw.goroutines:
            for f in g.frames:
                for _fn, _inl, caps in f.captures:
                    for c in caps:
                        if c.data is None:
                            continue
                        check(plan.types, dec, c.data, c.type)
                        if compared < 40 and len(c.data) < 600:
                            check_prefixes(plan.types, dec, c.data, c.type)
                        compared += 1
    assert compared > 20


@pytest.mark.parametrize("version", _versions_for_maps())
def test_real_snapshot_of_the_kinds_fixture(version, monkeypatch):
    """A real snapshot (kinds fixture, optimised build): every raw capture decodes to the same value with both
    decoders, and the snapshot's JSON is the same when decoded with the generated decoder."""
    import goprobe.snapshot as snapshot
    from goprobe import GoBinary
    from goprobe.request import Limits as RequestLimits
    from goprobe.testing.fixture_process import running

    binary = build_fixture("kinds", version, "opt")
    seen = []
    original = snapshot.decode_snapshot

    def spy(raw, plan, b, **kw):
        out = original(raw, plan, b, **kw)
        seen.append((raw, plan, b, kw, out))
        return out

    monkeypatch.setattr(snapshot, "decode_snapshot", spy)
    with GoBinary(binary, use_cache=False) as b, running(binary) as proc:
        request: dict[str, list[str]] = {}
        for v in proc.truth["variables"]:  # those the optimised build kept (as test_snapshot_values does)
            names = {x.name for fn in b.functions(v["func"]) for x in fn.variables} | {
                x.name for _c, call in b.inlined_copies(v["func"].replace("[...]", "")) for x in call.variables}
            if v["name"] in names and v["name"] not in request.setdefault(v["func"], []):
                request[v["func"]].append(v["name"])
        limits = RequestLimits(string_bytes=1 << 16, collection_bytes=4096, map_entries=1 << 12)
        snapshot.take_snapshot([proc.pid], request, binary=b, limits=limits)
        assert len(seen) == 1
        raw, plan, b, kw, want_json = seen[0]
        bias = kw.get("bias", 0)

        def fname(pc):
            sym = b.elf.function_symbol_at(pc - bias)
            return sym.name if sym else None

        generic = ValueDecoder(plan.types, func_name=fname)
        dec = compile_decoder(plan.types, func_name=fname)
        compared, shapes = 0, set()
        for g in raw.goroutines:
            for f in g.frames:
                for _fn, _inl, caps in f.captures:
                    for c in caps:
                        if c.data is not None:
                            assert dec.decode(c.data, 0, c.type) == generic.decode(c.data, 0, c.type), c.label
                            compared += 1
                            shapes.add(type(plan.types[c.type].shape).__name__)
        assert compared >= 30
        assert {"Interface", "Chan", "Func", "Struct", "Pointer", "Slice", "String", "TypeParam"} <= shapes, shapes
        assert {"SwissMap", "ClassicMap"} & shapes, shapes
        # The whole snapshot (decode_snapshot uses the generated decoder) decoded with ValueDecoder instead.
        monkeypatch.setattr(snapshot, "compile_decoder", lambda table, **k: ValueDecoder(table, **k))
        got_json = original(raw, plan, b, **kw)
    # take_snapshot adds which backend ran and the process's status after decoding: not part of the decoded
    # document.
    want_json = {k: v for k, v in want_json.items() if not k.startswith("backend") and k != "status"}
    assert got_json == want_json
