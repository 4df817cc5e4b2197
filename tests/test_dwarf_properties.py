"""Properties of the DWARF decoders: LEB128, location expressions, location and range lists (v4 and v5).

Each test encodes random but valid input with a small independent encoder, decodes it with goprobe, and
compares; and feeds arbitrary bytes to check that malformed input only ever raises DwarfFormatError.
"""

from __future__ import annotations

import struct

import attrs

from hypothesis import example, given, settings
from hypothesis import strategies as st

from goprobe.dwarf import expressions as E
from goprobe.dwarf.dies import read_sleb, read_uleb
from goprobe.dwarf.lists import (
    LocationRange,
    read_loclist_v4,
    read_loclist_v5,
    read_ranges_v4,
    read_rnglist_v5,
)
from goprobe.errors import DwarfFormatError


def uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        done = (v == 0 and not b & 0x40) or (v == -1 and b & 0x40)
        out.append(b if done else b | 0x80)
        if done:
            return bytes(out)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uleb_round_trip(v):
    data = uleb(v) + b"\xAA"
    assert read_uleb(data, 0) == (v, len(data) - 1)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_sleb_round_trip(v):
    data = sleb(v) + b"\xAA"
    assert read_sleb(data, 0) == (v, len(data) - 1)


# -- location expressions ----------------------------------------------------------------------------
regs = st.integers(min_value=0, max_value=40)
offsets = st.integers(min_value=-(2**20), max_value=2**20)
addresses = st.integers(min_value=0, max_value=2**48)

piece_specs = st.one_of(
    st.tuples(st.just(E.REGISTER), regs, st.just(0)),
    st.tuples(st.just(E.CFA_MEMORY), st.just(None), offsets),
    st.tuples(st.just(E.ADDRESS_MEMORY), st.just(None), addresses),
    st.tuples(st.just(E.REGISTER_MEMORY), regs, offsets),
    st.tuples(st.just(E.UNAVAILABLE), st.just(None), st.just(0)),
)


def encode_piece(kind, reg, off, use_call_frame_cfa: bool) -> bytes:
    if kind == E.REGISTER:
        return bytes([E.DW_OP_reg0 + reg]) if reg < 32 else bytes([E.DW_OP_regx]) + uleb(reg)
    if kind == E.CFA_MEMORY:
        if use_call_frame_cfa:
            if off >= 0:
                return bytes([E.DW_OP_call_frame_cfa, E.DW_OP_plus_uconst]) + uleb(off)
            return bytes([E.DW_OP_call_frame_cfa, E.DW_OP_consts]) + sleb(off) + bytes([E.DW_OP_plus])
        return bytes([E.DW_OP_fbreg]) + sleb(off)
    if kind == E.ADDRESS_MEMORY:
        return bytes([E.DW_OP_addr]) + struct.pack("<Q", off)
    if kind == E.REGISTER_MEMORY:
        return (bytes([E.DW_OP_breg0 + reg]) if reg < 32 else bytes([E.DW_OP_bregx]) + uleb(reg)) + sleb(off)
    return b""  # an empty piece: unavailable


def expected_piece(kind, reg, off, size):
    if kind == E.REGISTER:
        return E.Piece(kind, size=size, reg=reg)
    if kind == E.REGISTER_MEMORY:
        return E.Piece(kind, size=size, reg=reg, offset=off)
    if kind in (E.CFA_MEMORY, E.ADDRESS_MEMORY):
        return E.Piece(kind, size=size, offset=off)
    return E.Piece(E.UNAVAILABLE, size=size)


@given(st.lists(st.tuples(piece_specs, st.integers(min_value=1, max_value=16), st.booleans()), min_size=1, max_size=6))
def test_location_pieces_round_trip(specs):
    expr = b""
    expected = []
    for (kind, reg, off), size, cfa_form in specs:
        expr += encode_piece(kind, reg, off, cfa_form) + bytes([E.DW_OP_piece]) + uleb(size)
        expected.append(expected_piece(kind, reg, off, size))
    assert E.decode_location(expr) == tuple(expected)


@given(piece_specs.filter(lambda p: p[0] != E.UNAVAILABLE), st.booleans())
def test_single_location_round_trip(spec, cfa_form):
    kind, reg, off = spec
    assert E.decode_location(encode_piece(kind, reg, off, cfa_form)) == (expected_piece(kind, reg, off, None),)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_stack_value_is_a_constant(v):
    got = E.decode_location(bytes([E.DW_OP_consts]) + sleb(v) + bytes([E.DW_OP_stack_value]))
    assert got == (E.Piece(E.IMPLICIT, value=(v & (2**64 - 1)).to_bytes(8, "little")),)


@given(st.sampled_from([E.CFA_MEMORY, E.ADDRESS_MEMORY, E.REGISTER_MEMORY]), regs, offsets,
       st.integers(min_value=0, max_value=4096))
def test_indirect_locations(kind, reg, off, post):
    if kind == E.ADDRESS_MEMORY:
        off = abs(off)  # an address
    expr = encode_piece(kind, reg, off, False) + bytes([E.DW_OP_deref])
    if post:
        expr += bytes([E.DW_OP_plus_uconst]) + uleb(post)
    got = E.decode_location(expr)
    want = attrs.evolve(expected_piece(kind, reg, off, None), indirect=True, post_offset=post)
    assert got == (want,)


def test_empty_expression_is_unavailable():
    assert E.decode_location(b"") == E.UNAVAILABLE_LOCATION


@given(st.binary(max_size=40))
@example(b"p\x00p\x00\"")  # DW_OP_breg0 0; DW_OP_breg0 0; DW_OP_plus: two locations added (was a TypeError)
def test_arbitrary_expression_bytes_never_crash(data):
    try:
        loc = E.decode_location(data)
    except DwarfFormatError:
        return
    assert isinstance(loc, tuple) and all(isinstance(p, E.Piece) for p in loc)


# -- location and range lists --------------------------------------------------------------------------
entries = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2**20), st.integers(min_value=1, max_value=2**12),
              piece_specs.filter(lambda p: p[0] != E.UNAVAILABLE)),
    max_size=8)


@given(entries, st.integers(min_value=0, max_value=2**40))
def test_loclist_v4_round_trip(items, base):
    data = b"\x55" * 3  # the list starts at a non-zero offset
    start = len(data)
    expected = []
    for lo, n, (kind, reg, off) in items:
        expr = encode_piece(kind, reg, off, False)
        data += struct.pack("<QQH", lo, lo + n, len(expr)) + expr
        expected.append(LocationRange(lo + base, lo + n + base, (expected_piece(kind, reg, off, None),)))
    data += struct.pack("<QQ", 0, 0)
    assert read_loclist_v4(data, start, base) == expected


@given(entries, st.integers(min_value=0, max_value=2**40), st.lists(addresses, min_size=1, max_size=4))
def test_loclist_v5_round_trip(items, base, table):
    # Mix the entry kinds Go and other producers use: offset_pair, start_length, startx_length, base_addressx.
    data = b""
    expected = []
    cur_base = base
    for i, (lo, n, (kind, reg, off)) in enumerate(items):
        expr = encode_piece(kind, reg, off, False)
        style = i % 4
        if style == 0:
            data += b"\x04" + uleb(lo) + uleb(lo + n)
            low = cur_base + lo
        elif style == 1:
            data += b"\x08" + struct.pack("<Q", lo) + uleb(n)
            low = lo
        elif style == 2:
            idx = lo % len(table)
            data += b"\x03" + uleb(idx) + uleb(n)
            low = table[idx]
        else:
            idx = lo % len(table)
            data += b"\x01" + uleb(idx) + b"\x04" + uleb(0) + uleb(n)
            cur_base = table[idx]
            low = cur_base
        data += uleb(len(expr)) + expr
        expected.append(LocationRange(low, low + n, (expected_piece(kind, reg, off, None),)))
    data += b"\x00"
    assert read_loclist_v5(data, 0, base, table.__getitem__) == expected


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=2**30), st.integers(min_value=1, max_value=2**16)),
                max_size=10), st.integers(min_value=0, max_value=2**40))
def test_ranges_v4_and_v5_agree(spans, base):
    v4 = b"".join(struct.pack("<QQ", lo, lo + n) for lo, n in spans) + struct.pack("<QQ", 0, 0)
    v5 = b"".join(b"\x04" + uleb(lo) + uleb(lo + n) for lo, n in spans) + b"\x00"
    want = [(lo + base, lo + n + base) for lo, n in spans]
    assert read_ranges_v4(v4, 0, base) == want
    assert read_rnglist_v5(v5, 0, base, lambda i: 0) == want


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_arbitrary_list_bytes_never_crash(data):
    for reader in (lambda: read_loclist_v4(data, 0, 0), lambda: read_loclist_v5(data, 0, 0, lambda i: i),
                   lambda: read_ranges_v4(data, 0, 0), lambda: read_rnglist_v5(data, 0, 0, lambda i: i)):
        try:
            reader()
        except DwarfFormatError:
            pass
