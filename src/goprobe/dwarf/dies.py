"""Random-access reading of ``.debug_info``: units, abbreviations, and DIEs parsed at any offset.

Nothing here walks the whole section. A DIE is parsed where a reference points; children are scanned with
per-abbreviation skip plans, so passing over a subtree costs a few bytecodes per DIE.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import cached_property
from typing import Any

import attrs

from goprobe.dwarf import constants as C
from goprobe.dwarf.leb128 import read_sleb, read_uleb
from goprobe.errors import DwarfFormatError

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_I8 = struct.Struct("<b").unpack_from

# Skip-plan opcodes (negative); a positive number is a fixed byte count.
_SKIP_STRING, _SKIP_LEB, _SKIP_BLOCK1, _SKIP_BLOCK2, _SKIP_BLOCK4, _SKIP_BLOCK_LEB = -1, -2, -3, -4, -5, -6
_SKIP_INDIRECT = -7

_FIXED_FORM_SIZES = {
    C.FORM_data1: 1, C.FORM_ref1: 1, C.FORM_flag: 1, C.FORM_strx1: 1, C.FORM_addrx1: 1,
    C.FORM_data2: 2, C.FORM_ref2: 2, C.FORM_strx2: 2, C.FORM_addrx2: 2,
    C.FORM_strx3: 3, C.FORM_addrx3: 3,
    C.FORM_data4: 4, C.FORM_ref4: 4, C.FORM_strx4: 4, C.FORM_addrx4: 4, C.FORM_ref_sup4: 4,
    C.FORM_data8: 8, C.FORM_ref8: 8, C.FORM_ref_sig8: 8, C.FORM_ref_sup8: 8,
    C.FORM_data16: 16,
    C.FORM_flag_present: 0, C.FORM_implicit_const: 0,
}
_LEB_FORMS = {C.FORM_udata, C.FORM_sdata, C.FORM_ref_udata, C.FORM_strx, C.FORM_addrx, C.FORM_loclistx,
              C.FORM_rnglistx}






@attrs.frozen(slots=True)
class Abbrev:
    code: int
    tag: int
    has_children: bool
    specs: tuple[tuple[int, int, int], ...]  # (attribute, form, implicit const)
    skip: tuple[int, ...]  # plan for passing over the attribute bytes
    high_pc_is_length: bool = False  # DWARF 4+: a constant-class high_pc is an offset from low_pc


def parse_abbrevs(data: bytes, offset: int, offset_size: int = 4, addr_size: int = 8) -> dict[int, Abbrev]:
    table: dict[int, Abbrev] = {}
    pos = offset
    try:
        while True:
            code, pos = read_uleb(data, pos)
            if code == 0:
                return table
            tag, pos = read_uleb(data, pos)
            children = data[pos] == 1
            pos += 1
            specs = []
            while True:
                at, pos = read_uleb(data, pos)
                form, pos = read_uleb(data, pos)
                if at == 0 and form == 0:
                    break
                implicit = 0
                if form == C.FORM_implicit_const:
                    implicit, pos = read_sleb(data, pos)
                specs.append((at, form, implicit))
            _check_forms(code, specs, offset)
            high_len = any(at == C.AT_high_pc and form not in (C.FORM_addr, C.FORM_addrx, C.FORM_addrx1, C.FORM_addrx2,
                                                                C.FORM_addrx3, C.FORM_addrx4) for at, form, _ in specs)
            table[code] = Abbrev(code, tag, children, tuple(specs), _skip_plan(specs, offset_size, addr_size),
                                 high_len)
    except IndexError:
        raise DwarfFormatError(f"truncated abbreviation table at offset {offset:#x}") from None


_STRING_FORMS = {C.FORM_string, C.FORM_strp, C.FORM_line_strp, C.FORM_strx, C.FORM_strx1, C.FORM_strx2, C.FORM_strx3,
                 C.FORM_strx4}
_REF_FORMS = {C.FORM_ref_addr, C.FORM_ref1, C.FORM_ref2, C.FORM_ref4, C.FORM_ref8, C.FORM_ref_udata}
_CONST_FORMS = {C.FORM_data1, C.FORM_data2, C.FORM_data4, C.FORM_data8, C.FORM_sdata, C.FORM_udata,
                C.FORM_implicit_const}
_ADDR_FORMS = {C.FORM_addr, C.FORM_addrx, C.FORM_addrx1, C.FORM_addrx2, C.FORM_addrx3, C.FORM_addrx4}
_BLOCK_FORMS = {C.FORM_exprloc, C.FORM_block, C.FORM_block1, C.FORM_block2, C.FORM_block4}
_FLAG_FORMS = {C.FORM_flag, C.FORM_flag_present}
# The forms each attribute goprobe reads may take: anything else means the DWARF is damaged, and is refused
# when the abbreviation table is read rather than surfacing later as a wrongly typed value.
_ALLOWED_FORMS = {
    C.AT_name: _STRING_FORMS, C.AT_producer: _STRING_FORMS, C.AT_comp_dir: _STRING_FORMS,
    C.AT_type: _REF_FORMS, C.AT_abstract_origin: _REF_FORMS, C.AT_sibling: _REF_FORMS,
    C.AT_go_elem: _REF_FORMS, C.AT_go_key: _REF_FORMS,
    C.AT_low_pc: _ADDR_FORMS, C.AT_high_pc: _ADDR_FORMS | _CONST_FORMS, C.AT_entry_pc: _ADDR_FORMS | _CONST_FORMS,
    C.AT_location: _BLOCK_FORMS | {C.FORM_sec_offset, C.FORM_loclistx},
    C.AT_frame_base: _BLOCK_FORMS | {C.FORM_sec_offset, C.FORM_loclistx},
    C.AT_ranges: {C.FORM_sec_offset, C.FORM_rnglistx}, C.AT_stmt_list: {C.FORM_sec_offset, C.FORM_data4},
    C.AT_byte_size: _CONST_FORMS, C.AT_decl_line: _CONST_FORMS, C.AT_decl_file: _CONST_FORMS,
    C.AT_call_line: _CONST_FORMS, C.AT_call_file: _CONST_FORMS, C.AT_count: _CONST_FORMS,
    C.AT_upper_bound: _CONST_FORMS, C.AT_go_kind: _CONST_FORMS, C.AT_inline: _CONST_FORMS,
    C.AT_go_dict_index: _CONST_FORMS, C.AT_go_closure_offset: _CONST_FORMS,
    C.AT_go_runtime_type: _CONST_FORMS | _ADDR_FORMS,
    C.AT_data_member_location: _CONST_FORMS | _BLOCK_FORMS,
    C.AT_const_value: _CONST_FORMS | _BLOCK_FORMS | _STRING_FORMS,
    C.AT_external: _FLAG_FORMS, C.AT_variable_parameter: _FLAG_FORMS, C.AT_go_embedded_field: _FLAG_FORMS,
    C.AT_addr_base: {C.FORM_sec_offset}, C.AT_loclists_base: {C.FORM_sec_offset},
    C.AT_rnglists_base: {C.FORM_sec_offset}, C.AT_str_offsets_base: {C.FORM_sec_offset},
}


def _check_forms(code: int, specs: list[tuple[int, int, int]], offset: int) -> None:
    for at, form, _ in specs:
        allowed = _ALLOWED_FORMS.get(at)
        if allowed is not None and form not in allowed and form != C.FORM_indirect:
            raise DwarfFormatError(f"abbreviation {code} at .debug_abbrev offset {offset:#x} gives attribute "
                                   f"{at:#x} the form {form:#x}; the DWARF data is damaged")


def _skip_plan(specs: list[tuple[int, int, int]], offset_size: int, addr_size: int) -> tuple[int, ...]:
    plan: list[int] = []
    for _, form, _ in specs:
        if form in _FIXED_FORM_SIZES:
            n = _FIXED_FORM_SIZES[form]
        elif form == C.FORM_addr:
            n = addr_size
        elif form in (C.FORM_ref_addr, C.FORM_sec_offset, C.FORM_strp, C.FORM_line_strp, C.FORM_strp_sup):
            n = offset_size
        elif form == C.FORM_string:
            n = _SKIP_STRING
        elif form in _LEB_FORMS:
            n = _SKIP_LEB
        elif form == C.FORM_block1:
            n = _SKIP_BLOCK1
        elif form == C.FORM_block2:
            n = _SKIP_BLOCK2
        elif form == C.FORM_block4:
            n = _SKIP_BLOCK4
        elif form in (C.FORM_block, C.FORM_exprloc):
            n = _SKIP_BLOCK_LEB
        elif form == C.FORM_indirect:
            n = _SKIP_INDIRECT
        else:
            raise DwarfFormatError(f"unknown DWARF form {form:#x}")
        if n == 0:
            continue
        if n > 0 and plan and plan[-1] > 0:
            plan[-1] += n
        else:
            plan.append(n)
    return tuple(plan)


class DebugSections:
    """The raw DWARF sections of one binary (decompressed)."""

    def __init__(self, get: Any) -> None:
        self._get = get  # name -> bytes

    @cached_property
    def info(self) -> bytes:
        return self._get(".debug_info")

    @cached_property
    def abbrev(self) -> bytes:
        return self._get(".debug_abbrev")

    @cached_property
    def addr(self) -> bytes:
        return self._get(".debug_addr")

    @cached_property
    def loc(self) -> bytes:
        return self._get(".debug_loc")

    @cached_property
    def loclists(self) -> bytes:
        return self._get(".debug_loclists")

    @cached_property
    def ranges(self) -> bytes:
        return self._get(".debug_ranges")

    @cached_property
    def rnglists(self) -> bytes:
        return self._get(".debug_rnglists")

    @cached_property
    def line(self) -> bytes:
        return self._get(".debug_line")

    @cached_property
    def frame(self) -> bytes:
        return self._get(".debug_frame")

    @cached_property
    def str(self) -> bytes:
        return self._get(".debug_str")

    @cached_property
    def line_str(self) -> bytes:
        return self._get(".debug_line_str")


class Unit:
    """A compilation unit: its header, abbreviations and the attributes of its root DIE."""

    __slots__ = ("info", "offset", "version", "unit_type", "addr_size", "offset_size", "abbrev_offset",
                 "first_die", "end", "abbrevs", "addr_base", "loclists_base", "rnglists_base", "str_offsets_base",
                 "root", "_secs")

    def __init__(self, secs: DebugSections, offset: int, abbrev_cache: dict[int, dict[int, Abbrev]]) -> None:
        data = secs.info
        self._secs = secs
        self.info = data
        self.offset = offset
        (length,) = _U32(data, offset)
        pos = offset + 4
        self.offset_size = 4
        if length == 0xFFFFFFFF:
            (length,) = _U64(data, pos)
            pos += 8
            self.offset_size = 8
        self.end = pos + length
        (self.version,) = _U16(data, pos)
        pos += 2
        if self.version >= 5:
            self.unit_type = data[pos]
            self.addr_size = data[pos + 1]
            pos += 2
            self.abbrev_offset = _U64(data, pos)[0] if self.offset_size == 8 else _U32(data, pos)[0]
            pos += self.offset_size
        elif self.version in (2, 3, 4):
            self.unit_type = 1
            self.abbrev_offset = _U64(data, pos)[0] if self.offset_size == 8 else _U32(data, pos)[0]
            pos += self.offset_size
            self.addr_size = data[pos]
            pos += 1
        else:
            raise DwarfFormatError(f"unsupported DWARF version {self.version} in unit at {offset:#x}")
        self.first_die = pos
        abbrevs = abbrev_cache.get(self.abbrev_offset)
        if abbrevs is None:
            abbrevs = parse_abbrevs(secs.abbrev, self.abbrev_offset, self.offset_size, self.addr_size)
            abbrev_cache[self.abbrev_offset] = abbrevs
        self.abbrevs = abbrevs
        self.addr_base = 8
        self.loclists_base = 12
        self.rnglists_base = 12
        self.str_offsets_base = 8
        self.root = None
        root = self.die_at(self.first_die)
        a = root.attrs
        self.addr_base = a.get(C.AT_addr_base, 8)
        self.loclists_base = a.get(C.AT_loclists_base, 12)
        self.rnglists_base = a.get(C.AT_rnglists_base, 12)
        self.str_offsets_base = a.get(C.AT_str_offsets_base, 8)
        # Re-read the root now that the bases are known (addrx forms depend on them).
        self.root = self.die_at(self.first_die)

    @property
    def name(self) -> str:
        return self.root.attrs.get(C.AT_name, "")

    def die_at(self, offset: int) -> Die:
        """Parse the DIE at absolute *offset* (which must lie inside this unit)."""
        data = self.info
        try:
            code, pos = read_uleb(data, offset)
            if code == 0:
                return Die(offset, 0, {}, False, pos, self)
            ab = self.abbrevs[code]
            values: dict[int, Any] = {}
            for at, form, implicit in ab.specs:
                values[at], pos = self._read_form(form, pos, implicit)
            if ab.high_pc_is_length and C.AT_high_pc in values:
                values[C.AT_high_pc] += values.get(C.AT_low_pc, 0)
        except (IndexError, KeyError, ValueError, struct.error):
            raise DwarfFormatError(f"malformed DIE at .debug_info offset {offset:#x}") from None
        return Die(offset, ab.tag, values, ab.has_children, pos, self)

    def _read_form(self, form: int, pos: int, implicit: int) -> tuple[Any, int]:
        data = self.info
        if form == C.FORM_string:
            end = data.index(0, pos)
            return data[pos:end].decode("utf-8", "replace"), end + 1
        if form in (C.FORM_ref_addr, C.FORM_sec_offset):
            if self.offset_size == 4:
                return _U32(data, pos)[0], pos + 4
            return _U64(data, pos)[0], pos + 8
        if form == C.FORM_addr:
            return (_U64(data, pos)[0], pos + 8) if self.addr_size == 8 else (_U32(data, pos)[0], pos + 4)
        if form in (C.FORM_data1, C.FORM_flag):
            return data[pos], pos + 1
        if form == C.FORM_ref4:
            return self.offset + _U32(data, pos)[0], pos + 4
        if form == C.FORM_udata:
            return read_uleb(data, pos)
        if form == C.FORM_sdata:
            return read_sleb(data, pos)
        if form == C.FORM_block1:
            n = data[pos]
            return data[pos + 1:pos + 1 + n], pos + 1 + n
        if form in (C.FORM_exprloc, C.FORM_block):
            n, pos = read_uleb(data, pos)
            return data[pos:pos + n], pos + n
        if form == C.FORM_data2:
            return _U16(data, pos)[0], pos + 2
        if form == C.FORM_data4:
            return _U32(data, pos)[0], pos + 4
        if form == C.FORM_data8:
            return _U64(data, pos)[0], pos + 8
        if form == C.FORM_flag_present:
            return True, pos
        if form == C.FORM_implicit_const:
            return implicit, pos
        if form in (C.FORM_addrx, C.FORM_addrx1, C.FORM_addrx2, C.FORM_addrx3, C.FORM_addrx4):
            if form == C.FORM_addrx:
                idx, pos = read_uleb(data, pos)
            else:
                size = {C.FORM_addrx1: 1, C.FORM_addrx2: 2, C.FORM_addrx3: 3, C.FORM_addrx4: 4}[form]
                idx = int.from_bytes(data[pos:pos + size], "little")
                pos += size
            return self.address_at_index(idx), pos
        if form in (C.FORM_ref1, C.FORM_ref2, C.FORM_ref8, C.FORM_ref_udata):
            if form == C.FORM_ref_udata:
                rel, pos = read_uleb(data, pos)
            else:
                size = {C.FORM_ref1: 1, C.FORM_ref2: 2, C.FORM_ref8: 8}[form]
                rel = int.from_bytes(data[pos:pos + size], "little")
                pos += size
            return self.offset + rel, pos
        if form == C.FORM_block2:
            n = _U16(data, pos)[0]
            return data[pos + 2:pos + 2 + n], pos + 2 + n
        if form == C.FORM_block4:
            n = _U32(data, pos)[0]
            return data[pos + 4:pos + 4 + n], pos + 4 + n
        if form in (C.FORM_strp, C.FORM_line_strp):
            off = _U32(data, pos)[0] if self.offset_size == 4 else _U64(data, pos)[0]
            sec = self._secs.str if form == C.FORM_strp else self._secs.line_str
            end = sec.index(0, off)
            return sec[off:end].decode("utf-8", "replace"), pos + self.offset_size
        if form in (C.FORM_loclistx, C.FORM_rnglistx):
            idx, pos = read_uleb(data, pos)
            return ("index", form, idx), pos
        if form == C.FORM_data16:
            return data[pos:pos + 16], pos + 16
        if form in (C.FORM_ref_sig8, C.FORM_ref_sup4, C.FORM_ref_sup8, C.FORM_strp_sup, C.FORM_strx, C.FORM_strx1,
                    C.FORM_strx2, C.FORM_strx3, C.FORM_strx4):
            raise DwarfFormatError(f"DWARF form {form:#x} is not used by Go and not supported")
        if form == C.FORM_indirect:
            real, pos = read_uleb(data, pos)
            return self._read_form(real, pos, implicit)
        raise DwarfFormatError(f"unknown DWARF form {form:#x}")

    def address_at_index(self, idx: int) -> int:
        addr = self._secs.addr
        if self.addr_size == 8:
            return _U64(addr, self.addr_base + 8 * idx)[0]
        return _U32(addr, self.addr_base + 4 * idx)[0]

    def skip_die(self, pos: int) -> tuple[int, Abbrev | None]:
        """Pass over the DIE at *pos*: return the offset after its attributes, and its abbreviation (None: null)."""
        data = self.info
        code = data[pos]
        pos += 1
        if code >= 0x80:
            code, pos = read_uleb(data, pos - 1)
        if code == 0:
            return pos, None
        ab = self.abbrevs[code]
        for op in ab.skip:
            if op > 0:
                pos += op
            elif op == _SKIP_STRING:
                pos = data.index(0, pos) + 1
            elif op == _SKIP_BLOCK1:
                pos += 1 + data[pos]
            elif op == _SKIP_LEB:
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
            elif op == _SKIP_BLOCK_LEB:
                n, pos = read_uleb(data, pos)
                pos += n
            elif op == _SKIP_BLOCK2:
                pos += 2 + _U16(data, pos)[0]
            elif op == _SKIP_BLOCK4:
                pos += 4 + _U32(data, pos)[0]
            else:  # indirect: rare; fall back to a real parse
                return self.die_at(pos - 1).end, ab
        return pos, ab

    def skip_subtree(self, die: Die) -> int:
        """Offset just past *die* and all its descendants."""
        if not die.has_children:
            return die.end
        pos = die.end
        depth = 1
        skip = self.skip_die
        try:
            while depth:
                pos, ab = skip(pos)
                if ab is None:
                    depth -= 1
                elif ab.has_children:
                    depth += 1
        except (IndexError, KeyError, ValueError, struct.error):
            raise DwarfFormatError(f"malformed DIE tree under .debug_info offset {die.offset:#x}") from None
        return pos

    def children(self, die: Die) -> Iterator[Die]:
        """The direct children of *die*, parsed; grandchildren are skipped unparsed."""
        if not die.has_children:
            return
        pos = die.end
        while pos < self.end:
            child = self.die_at(pos)
            if child.tag == 0:
                return
            yield child
            pos = self.skip_subtree(child)

    def top_level_scan(self) -> Iterator[tuple[int, Abbrev]]:
        """(offset, abbreviation) of every child of the root, without parsing their attributes."""
        pos = self.root.end
        skip = self.skip_die
        end = self.end
        try:
            while pos < end:
                start = pos
                pos, ab = skip(pos)
                if ab is None:
                    return
                yield start, ab
                if ab.has_children:
                    depth = 1
                    while depth:
                        pos, sub = skip(pos)
                        if sub is None:
                            depth -= 1
                        elif sub.has_children:
                            depth += 1
        except (IndexError, KeyError, ValueError, struct.error):
            raise DwarfFormatError(f"malformed DIE tree in unit at {self.offset:#x}") from None


@attrs.frozen(slots=True, eq=False)
class Die:
    offset: int
    tag: int
    attrs: dict[int, Any]
    has_children: bool
    end: int  # offset after this DIE's own attributes
    unit: Unit = attrs.field(repr=False)

    @property
    def name(self) -> str:
        return self.attrs.get(C.AT_name, "")

    def children(self) -> Iterator[Die]:
        return self.unit.children(self)


class UnitTable:
    """All unit headers of ``.debug_info`` (cheap: one hop per unit) and lookup of the unit at an offset."""

    def __init__(self, secs: DebugSections) -> None:
        self.secs = secs
        self._abbrev_cache: dict[int, dict[int, Abbrev]] = {}
        data = secs.info
        starts = []
        pos = 0
        n = len(data)
        try:
            while pos + 11 <= n:
                starts.append(pos)
                (length,) = _U32(data, pos)
                pos += 4 + (length if length != 0xFFFFFFFF else _U64(data, pos + 4)[0] + 8)
        except struct.error:
            raise DwarfFormatError("truncated .debug_info unit header") from None
        self.starts = starts
        self._units: dict[int, Unit] = {}

    def unit(self, offset: int) -> Unit:
        u = self._units.get(offset)
        if u is None:
            u = Unit(self.secs, offset, self._abbrev_cache)
            self._units[offset] = u
        return u

    def units(self) -> Iterator[Unit]:
        for off in self.starts:
            yield self.unit(off)

    def unit_containing(self, die_offset: int) -> Unit:
        import bisect

        i = bisect.bisect_right(self.starts, die_offset) - 1
        if i < 0:
            raise DwarfFormatError(f"offset {die_offset:#x} is before the first unit")
        return self.unit(self.starts[i])

    def die_at(self, offset: int) -> Die:
        return self.unit_containing(offset).die_at(offset)
