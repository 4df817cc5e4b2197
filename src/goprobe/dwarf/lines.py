"""Line-number programs (``.debug_line``, DWARF 2–5): decoded per unit, on demand."""

from __future__ import annotations

import bisect
import struct
from functools import cached_property

import attrs

from goprobe.dwarf.leb128 import read_sleb as _sleb, read_uleb as _uleb
from goprobe.errors import DwarfFormatError

DW_LNCT_path = 1
DW_LNCT_directory_index = 2


@attrs.frozen(slots=True)
class LineRow:
    address: int
    file: int
    line: int
    is_stmt: bool
    end_sequence: bool
    prologue_end: bool






class LineProgram:
    """One unit's line program. The header is parsed eagerly (cheap); rows on first use."""

    def __init__(self, data: bytes, offset: int, line_str: bytes = b"", debug_str: bytes = b"") -> None:
        self.data = data
        self.offset = offset
        try:
            self._parse_header(line_str, debug_str)
        except (IndexError, ValueError, struct.error):
            raise DwarfFormatError(f"truncated line program header at .debug_line offset {offset:#x}") from None

    def _parse_header(self, line_str: bytes, debug_str: bytes) -> None:
        data, pos = self.data, self.offset
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        self.end = pos + length
        (self.version,) = struct.unpack_from("<H", data, pos)
        pos += 2
        if self.version >= 5:
            pos += 2  # address_size, segment_selector_size
        (header_length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        self.program_start = pos + header_length
        self.min_inst_length = data[pos]
        pos += 1
        if self.version >= 4:
            pos += 1  # maximum_operations_per_instruction
        self.default_is_stmt = bool(data[pos])
        self.line_base = struct.unpack_from("<b", data, pos + 1)[0]
        self.line_range = data[pos + 2]
        self.opcode_base = data[pos + 3]
        pos += 4
        self.std_lengths = list(data[pos:pos + self.opcode_base - 1])
        pos += self.opcode_base - 1
        files: list[str] = []
        if self.version >= 5:
            dirs, pos = self._read_entries_v5(pos, line_str, debug_str)
            entries, pos = self._read_entries_v5(pos, line_str, debug_str)
            for e in entries:
                name = e.get(DW_LNCT_path, "")
                d = e.get(DW_LNCT_directory_index, 0)
                files.append(_join(dirs[d].get(DW_LNCT_path, "") if d < len(dirs) else "", name))
            self.files = files  # DWARF 5: file 0 is valid
        else:
            dirs_v4 = [""]
            while data[pos]:
                end = data.index(0, pos)
                dirs_v4.append(data[pos:end].decode("utf-8", "replace"))
                pos = end + 1
            pos += 1
            files.append("")  # DWARF 4 files are 1-based
            while data[pos]:
                end = data.index(0, pos)
                name = data[pos:end].decode("utf-8", "replace")
                pos = end + 1
                d, pos = _uleb(data, pos)
                _, pos = _uleb(data, pos)
                _, pos = _uleb(data, pos)
                files.append(_join(dirs_v4[d] if d < len(dirs_v4) else "", name))
            self.files = files

    def _read_entries_v5(self, pos: int, line_str: bytes, debug_str: bytes) -> tuple[list[dict[int, object]], int]:
        data = self.data
        nfmt = data[pos]
        pos += 1
        fmt = []
        for _ in range(nfmt):
            ct, pos = _uleb(data, pos)
            form, pos = _uleb(data, pos)
            fmt.append((ct, form))
        count, pos = _uleb(data, pos)
        out = []
        for _ in range(count):
            entry: dict[int, object] = {}
            for ct, form in fmt:
                if form == 0x08:  # string
                    end = data.index(0, pos)
                    val: object = data[pos:end].decode("utf-8", "replace")
                    pos = end + 1
                elif form in (0x1F, 0x0E):  # line_strp, strp
                    (off,) = struct.unpack_from("<I", data, pos)
                    pos += 4
                    src = line_str if form == 0x1F else debug_str
                    val = src[off:src.index(0, off)].decode("utf-8", "replace")
                elif form == 0x0F:  # udata
                    val, pos = _uleb(data, pos)
                elif form == 0x0B:
                    val = data[pos]
                    pos += 1
                elif form == 0x05:
                    (val,) = struct.unpack_from("<H", data, pos)
                    pos += 2
                elif form == 0x1E:  # data16 (MD5)
                    val = data[pos:pos + 16]
                    pos += 16
                elif form == 0x09:  # block
                    n, pos = _uleb(data, pos)
                    val = data[pos:pos + n]
                    pos += n
                else:
                    raise DwarfFormatError(f"unsupported form {form:#x} in line table entry format")
                entry[ct] = val
            out.append(entry)
        return out, pos

    def rows_between(self, lo: int, hi: int) -> list[LineRow]:
        """The rows (end-of-sequence rows excluded) whose address is in [lo, hi), in address order."""
        addrs, order = self._by_address
        rows = self.rows
        return [rows[i] for i in order[bisect.bisect_left(addrs, lo):bisect.bisect_left(addrs, hi)]]

    @cached_property
    def _by_address(self) -> tuple[list[int], list[int]]:
        rows = self.rows
        order = sorted((i for i, r in enumerate(rows) if not r.end_sequence), key=lambda i: rows[i].address)
        return [rows[i].address for i in order], order

    @cached_property
    def rows(self) -> list[LineRow]:
        try:
            return self._run()
        except (IndexError, ValueError, struct.error):
            raise DwarfFormatError(f"truncated line program at .debug_line offset {self.offset:#x}") from None

    def _run(self, start: int | None = None, one_sequence: bool = False) -> list[LineRow]:
        data = self.data
        pos = self.program_start if start is None else start
        end = self.end
        rows: list[LineRow] = []
        append = rows.append
        opcode_base, line_base, line_range, mil = self.opcode_base, self.line_base, self.line_range, self.min_inst_length
        address, file, line, is_stmt, prologue_end = 0, 1, 1, self.default_is_stmt, False
        # Go's linker sometimes starts a sequence (set_address) and emits its first row only after the
        # prologue, leaving the first bytes without a row although pclntab maps them to the initial
        # file/line. ``pending`` remembers the sequence start so that state can be recorded there.
        pending: LineRow | None = None
        seq_rows = 0
        while pos < end:
            op = data[pos]
            pos += 1
            if op >= opcode_base:
                adj = op - opcode_base
                address += (adj // line_range) * mil
                line += line_base + adj % line_range
                if pending is not None:
                    if pending.address < address:
                        append(pending)
                    pending = None
                append(LineRow(address, file, line, is_stmt, False, prologue_end))
                prologue_end = False
            elif op == 0:  # extended
                n, pos = _uleb(data, pos)
                sub = data[pos]
                if sub == 1:  # end_sequence
                    if pending is not None and pending.address < address:
                        append(pending)
                    pending = None
                    append(LineRow(address, file, line, is_stmt, True, False))
                    if one_sequence:
                        self._sequence_end = pos + n
                        return rows
                    address, file, line, is_stmt, prologue_end = 0, 1, 1, self.default_is_stmt, False
                    seq_rows = len(rows)
                elif sub == 2:  # set_address
                    (address,) = struct.unpack_from("<Q", data, pos + 1)
                    if len(rows) == seq_rows:  # no row yet in this sequence
                        pending = LineRow(address, file, line, is_stmt, False, False)
                pos += n
            elif op == 1:  # copy
                if pending is not None:
                    if pending.address < address:
                        append(pending)
                    pending = None
                append(LineRow(address, file, line, is_stmt, False, prologue_end))
                prologue_end = False
            elif op == 2:  # advance_pc
                v, pos = _uleb(data, pos)
                address += v * mil
            elif op == 3:  # advance_line
                v, pos = _sleb(data, pos)
                line += v
            elif op == 4:  # set_file
                file, pos = _uleb(data, pos)
            elif op == 5:  # set_column
                _, pos = _uleb(data, pos)
            elif op == 6:  # negate_stmt
                is_stmt = not is_stmt
            elif op == 7:  # basic_block
                pass
            elif op == 8:  # const_add_pc
                address += ((255 - opcode_base) // line_range) * mil
            elif op == 9:  # fixed_advance_pc
                (v,) = struct.unpack_from("<H", data, pos)
                pos += 2
                address += v
            elif op == 10:  # set_prologue_end
                prologue_end = True
            elif op in (11, 12):  # set_epilogue_begin, set_isa
                if op == 12:
                    _, pos = _uleb(data, pos)
            else:  # unknown standard opcode: skip its operands
                for _ in range(self.std_lengths[op - 1]):
                    _, pos = _uleb(data, pos)
        return rows

    @cached_property
    def _sorted(self) -> tuple[list[int], list[LineRow]]:
        # Rows sorted by address; sequences do not overlap in Go binaries.
        ordered = sorted(self.rows, key=lambda r: (r.address, r.end_sequence))
        return [r.address for r in ordered], ordered

    # -- one sequence at a time ------------------------------------------------------------------------
    # Go emits one sequence per function, and a large unit has thousands. Looking up one PC decodes only
    # the sequence that covers it: sequences are found by searching for "end_sequence; set_address" byte
    # patterns, and every decoded sequence is checked (it must start with that set_address and end where
    # expected); on any doubt the whole program is decoded instead.
    _SEQ_BOUNDARY = b"\x00\x01\x01\x00\x09\x02"  # DW_LNE_end_sequence, then DW_LNE_set_address (8 bytes)

    @cached_property
    def _sequence_index(self) -> tuple[list[int], list[int]]:
        """(first address, byte offset where the sequence starts) of each candidate sequence, sorted."""
        data = self.data
        starts = [self.program_start]
        pos = data.find(self._SEQ_BOUNDARY, self.program_start, self.end)
        while pos >= 0:
            starts.append(pos + 3)
            pos = data.find(self._SEQ_BOUNDARY, pos + 6, self.end)
        entries = []
        for st in starts:
            if data[st:st + 3] == b"\x00\x09\x02" and st + 11 <= self.end:
                entries.append((struct.unpack_from("<Q", data, st + 3)[0], st))
            else:  # the first sequence may set its state before its address: decode it to learn the address
                rows = self._sequence_rows(st, set(starts) | {self.end})
                entries.append((rows[0].address if rows else -1, st))
        entries.sort()
        self._starts_set = set(starts) | {self.end}
        return [e[0] for e in entries], [e[1] for e in entries]

    def _sequence_rows(self, start: int, boundaries: set[int] | None = None) -> list[LineRow] | None:
        cache = self.__dict__.setdefault("_seq_cache", {})
        rows = cache.get(start)
        if rows is None:
            try:
                rows = self._run(start, one_sequence=True)
            except (IndexError, ValueError, struct.error):
                return None
            # A real sequence ends exactly where the next one (or the program) starts.
            if not rows or not rows[-1].end_sequence or self._sequence_end not in (boundaries or self._starts_set):
                return None
            cache[start] = rows
        return rows

    def _row_in_sequence(self, pc: int) -> LineRow | None | bool:
        """The row covering *pc* from its own sequence; False when the fast path cannot decide."""
        addrs, starts = self._sequence_index
        if addrs and addrs[0] < 0:
            return False  # a sequence whose start could not be decoded
        i = bisect.bisect_right(addrs, pc) - 1
        if i < 0:
            return None  # below every sequence (sequences never overlap in Go binaries)
        rows = self._sequence_rows(starts[i])
        if rows is None or rows[0].address != addrs[i]:
            return False
        if pc >= rows[-1].address:
            # Past this sequence: a gap, or a sequence that jumps over others with set_address. Decide
            # with the whole program.
            return False
        best = None
        for r in rows:
            if r.address > pc:
                break
            best = r
        return best

    def row_for_pc(self, pc: int) -> LineRow | None:
        """The row that covers *pc* (the last row at or before it, if not past an end of sequence)."""
        if "rows" not in self.__dict__:
            found = self._row_in_sequence(pc)
            if found is not False:
                return found
        addrs, ordered = self._sorted
        i = bisect.bisect_right(addrs, pc) - 1
        while i >= 0 and ordered[i].end_sequence and ordered[i].address <= pc:
            # pc sits at or after an end marker: only a real row at the same address can cover it.
            if ordered[i].address == pc:
                i -= 1
                continue
            return None
        if i < 0:
            return None
        return ordered[i]

    def file_name(self, index: int) -> str:
        return self.files[index] if 0 <= index < len(self.files) else "?"


def _join(d: str, name: str) -> str:
    if not d or name.startswith("/"):
        return name
    return d.rstrip("/") + "/" + name
