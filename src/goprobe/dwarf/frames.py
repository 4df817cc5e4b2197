"""Call-frame information from ``.debug_frame``: the CFA rule and saved-register rules at any PC."""

from __future__ import annotations

import bisect
import struct
from functools import cached_property

import attrs

from goprobe.dwarf.leb128 import read_sleb as _sleb, read_uleb as _uleb
from goprobe.errors import DwarfFormatError

_CIE_ID_32 = 0xFFFFFFFF


@attrs.frozen(slots=True)
class FrameRule:
    """At one PC: CFA = register ``cfa_reg`` + ``cfa_offset``; saved registers at CFA + offset."""

    cfa_reg: int
    cfa_offset: int
    saved: tuple[tuple[int, int], ...]  # (register, CFA-relative offset) of registers saved in memory

    def saved_offset(self, reg: int) -> int | None:
        for r, off in self.saved:
            if r == reg:
                return off
        return None


@attrs.frozen(slots=True)
class _Cie:
    code_align: int
    data_align: int
    ra_reg: int
    initial: bytes






class FrameTable:
    """Index of FDEs by PC (built on first use: one hop per entry) and CFI evaluation."""

    def __init__(self, data: bytes, addr_size: int = 8) -> None:
        self.data = data
        self.addr_size = addr_size
        self._cies: dict[int, _Cie] = {}

    @cached_property
    def _index(self) -> tuple[list[int], list[tuple[int, int, int, int]]]:
        data = self.data
        entries = []
        pos = 0
        n = len(data)
        try:
            while pos + 4 <= n:
                (length,) = struct.unpack_from("<I", data, pos)
                if length == 0:
                    pos += 4
                    continue
                body = pos + 4
                end = body + length
                (cie_ptr,) = struct.unpack_from("<I", data, body)
                if cie_ptr != _CIE_ID_32:
                    lo, size = struct.unpack_from("<QQ", data, body + 4)
                    entries.append((lo, lo + size, cie_ptr, body + 20, end))
                pos = end
        except struct.error:
            raise DwarfFormatError("truncated .debug_frame") from None
        entries.sort()
        return [e[0] for e in entries], [e[1:] for e in entries]

    def _cie(self, offset: int) -> _Cie:
        cie = self._cies.get(offset)
        if cie is not None:
            return cie
        data = self.data
        (length,) = struct.unpack_from("<I", data, offset)
        end = offset + 4 + length
        pos = offset + 8
        version = data[pos]
        pos += 1
        aug_end = data.index(0, pos)
        augmentation = data[pos:aug_end]
        pos = aug_end + 1
        if augmentation not in (b"",):
            raise DwarfFormatError(f"unsupported CIE augmentation {augmentation!r} in .debug_frame")
        if version >= 4:
            pos += 2  # address_size, segment_size
        code_align, pos = _uleb(data, pos)
        data_align, pos = _sleb(data, pos)
        if version == 1:
            ra = data[pos]
            pos += 1
        else:
            ra, pos = _uleb(data, pos)
        cie = _Cie(code_align, data_align, ra, data[pos:end])
        self._cies[offset] = cie
        return cie

    def _fde(self, pc: int) -> tuple[int, int, int, int, int] | None:
        starts, rest = self._index
        i = bisect.bisect_right(starts, pc) - 1
        if i < 0:
            return None
        hi, cie, instr, end = rest[i]
        if pc >= hi:
            return None
        return starts[i], cie, instr, end, hi

    def rule_at(self, pc: int) -> FrameRule | None:
        """The frame rule in force at *pc*, or None if no FDE covers it."""
        fde = self._fde(pc)
        if fde is None:
            return None
        lo, cie_off, instr, end, _hi = fde
        state = _State()
        try:
            cie = self._cie(cie_off)
            _execute(cie.initial, 0, len(cie.initial), cie, state, None, None)
            initial = state.copy()
            _execute(self.data, instr, end, cie, state, (lo, pc), initial)
        except (IndexError, struct.error, ValueError, KeyError):
            raise DwarfFormatError(f"malformed CFI in .debug_frame for pc {pc:#x}") from None
        return FrameRule(state.cfa_reg, state.cfa_offset, tuple(sorted(state.saved.items())))


    def cfa_table(self) -> tuple[tuple[int, int, tuple[tuple[int, int, int], ...]], ...]:
        """For every FDE: (low, high, rows), each row (first PC, CFA register, CFA offset) in PC order —
        the whole unwinding table in a form a backend can carry without the DWARF."""
        starts, rest = self._index
        out = []
        for lo, (hi, cie_off, instr, end) in zip(starts, rest):
            state = _State()
            rows: list[tuple[int, int, int]] = []
            try:
                cie = self._cie(cie_off)
                _execute(cie.initial, 0, len(cie.initial), cie, state, None, None)
                initial = state.copy()
                _execute(self.data, instr, end, cie, state, (lo, hi + 1), initial, rows)
            except (IndexError, struct.error, ValueError, KeyError):
                raise DwarfFormatError(f"malformed CFI in .debug_frame for the function at {lo:#x}") from None
            _row(rows, lo if not rows else rows[-1][0], state, final=True)
            out.append((lo, hi, tuple(rows)))
        return tuple(out)


def _row(rows: list[tuple[int, int, int]], pc: int, st: _State, final: bool = False) -> None:
    if rows and rows[-1][1:] == (st.cfa_reg, st.cfa_offset):
        return
    if rows and rows[-1][0] == pc:
        rows[-1] = (pc, st.cfa_reg, st.cfa_offset)
    elif not final or not rows or rows[-1][0] <= pc:
        rows.append((pc, st.cfa_reg, st.cfa_offset))


class _State:
    __slots__ = ("cfa_reg", "cfa_offset", "saved", "stack")

    def __init__(self) -> None:
        self.cfa_reg = 0
        self.cfa_offset = 0
        self.saved: dict[int, int] = {}
        self.stack: list[tuple[int, int, dict[int, int]]] = []

    def copy(self) -> _State:
        s = _State()
        s.cfa_reg, s.cfa_offset, s.saved = self.cfa_reg, self.cfa_offset, dict(self.saved)
        return s


def _execute(data: bytes, pos: int, end: int, cie: _Cie, st: _State, until: tuple[int, int] | None,
             initial: _State | None, rows: list[tuple[int, int, int]] | None = None) -> None:
    loc = until[0] if until else 0
    target = until[1] if until else 0
    ca, da = cie.code_align, cie.data_align

    def advance(delta: int) -> bool:
        nonlocal loc
        if rows is not None:
            _row(rows, loc, st)  # the state that held from `loc` up to the advance
        loc += delta * ca
        return until is not None and loc > target

    while pos < end:
        op = data[pos]
        pos += 1
        high = op & 0xC0
        low = op & 0x3F
        if high == 0x40:  # advance_loc
            if advance(low):
                return
        elif high == 0x80:  # offset
            off, pos = _uleb(data, pos)
            st.saved[low] = off * da
        elif high == 0xC0:  # restore
            _restore(st, initial, low)
        elif op == 0x00:
            pass
        elif op == 0x01:  # set_loc
            (newloc,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            if rows is not None:
                _row(rows, loc, st)
            if until is not None and newloc > target:
                return
            loc = newloc
        elif op in (0x02, 0x03, 0x04):
            size = {0x02: 1, 0x03: 2, 0x04: 4}[op]
            delta = int.from_bytes(data[pos:pos + size], "little")
            pos += size
            if advance(delta):
                return
        elif op == 0x05:  # offset_extended
            reg, pos = _uleb(data, pos)
            off, pos = _uleb(data, pos)
            st.saved[reg] = off * da
        elif op in (0x06, 0x08):  # restore_extended, same_value
            reg, pos = _uleb(data, pos)
            _restore(st, initial if op == 0x06 else None, reg)
        elif op == 0x07:  # undefined
            reg, pos = _uleb(data, pos)
            st.saved.pop(reg, None)
        elif op == 0x09:  # register (value in another register): not memory-saved
            reg, pos = _uleb(data, pos)
            _, pos = _uleb(data, pos)
            st.saved.pop(reg, None)
        elif op == 0x0A:
            st.stack.append((st.cfa_reg, st.cfa_offset, dict(st.saved)))
        elif op == 0x0B:
            st.cfa_reg, st.cfa_offset, st.saved = st.stack.pop()
        elif op == 0x0C:  # def_cfa
            st.cfa_reg, pos = _uleb(data, pos)
            st.cfa_offset, pos = _uleb(data, pos)
        elif op == 0x0D:
            st.cfa_reg, pos = _uleb(data, pos)
        elif op == 0x0E:
            st.cfa_offset, pos = _uleb(data, pos)
        elif op == 0x11:  # offset_extended_sf
            reg, pos = _uleb(data, pos)
            off, pos = _sleb(data, pos)
            st.saved[reg] = off * da
        elif op == 0x12:  # def_cfa_sf
            st.cfa_reg, pos = _uleb(data, pos)
            off, pos = _sleb(data, pos)
            st.cfa_offset = off * da
        elif op == 0x13:  # def_cfa_offset_sf
            off, pos = _sleb(data, pos)
            st.cfa_offset = off * da
        elif op in (0x14, 0x15):  # val_offset(_sf): value, not a memory slot
            reg, pos = _uleb(data, pos)
            _, pos = (_uleb if op == 0x14 else _sleb)(data, pos)
            st.saved.pop(reg, None)
        elif op in (0x0F, 0x10, 0x16):
            raise DwarfFormatError("DWARF expressions in CFI are not supported")
        else:
            raise DwarfFormatError(f"unknown CFI operation {op:#x}")


def _restore(st: _State, initial: _State | None, reg: int) -> None:
    if initial is not None and reg in initial.saved:
        st.saved[reg] = initial.saved[reg]
    else:
        st.saved.pop(reg, None)
