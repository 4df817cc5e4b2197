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
        except (IndexError, struct.error):
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

    @cached_property
    def rows(self) -> list[LineRow]:
        try:
            return self._run()
        except (IndexError, struct.error):
            raise DwarfFormatError(f"truncated line program at .debug_line offset {self.offset:#x}") from None

    def _run(self) -> list[LineRow]:
        data = self.data
        pos = self.program_start
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

    def row_for_pc(self, pc: int) -> LineRow | None:
        """The row that covers *pc* (the last row at or before it, if not past an end of sequence)."""
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
