"""The Go runtime's own per-function tables (pclntab), read from the binary: the garbage collector's liveness
maps at each call site.

Debug info says in which stack slot a variable lives over a range of PCs, and for optimised code that range
often runs on past the variable's last use. A pointer there may then lead to memory that the runtime has
freed and reused: reading it gives a value that looks real and is not. The runtime itself knows better: at
every call site, a bitmap per function says which pointer-sized words of the frame hold live pointers (the
stack maps that the garbage collector scans, ``FUNCDATA_LocalsPointerMaps`` / ``FUNCDATA_ArgsPointerMaps``
indexed by ``PCDATA_StackMapIndex``); a word that holds a pointer but is not in the map is not kept alive.
Address-taken locals (stack objects) are scanned when reachable instead: their words are left unjudged.

Layouts (``runtime.pcHeader``, ``runtime._func``, ``runtime.stackObjectRecord``) and the table indexes
(``internal/abi.PCDATA_StackMapIndex`` ...) come from the binary's DWARF, never from a per-release table.
"""

from __future__ import annotations

import bisect
import struct
from typing import TYPE_CHECKING

import attrs

from goprobe.dwarf.leb128 import read_uleb

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary

_NONE = 0xFFFFFFFF


@attrs.frozen(slots=True)
class FrameLiveness:
    """One function's liveness maps, relative to its frame's CFA (the caller's SP before the call)."""

    index: tuple[tuple[int, int, int], ...]  # (low, high, stack map index) from PCDATA_StackMapIndex
    locals_base: int  # CFA offset of the locals bitmap's first word (varp - nbit*8)
    locals: tuple[bytes, ...]  # one bitmap per stack map index
    locals_words: int
    args_base: int  # CFA offset of the arguments bitmap's first word (argp)
    args: tuple[bytes, ...]
    args_words: int
    objects: tuple[tuple[int, int], ...]  # stack objects: (CFA offset, size); scanned when reachable

    def map_index(self, pc: int) -> int:
        i = bisect.bisect_right(self.index, (pc, 1 << 62, 1 << 62)) - 1
        if i >= 0 and self.index[i][0] <= pc < self.index[i][1]:
            return self.index[i][2]
        return -1

    def pointer_live(self, cfa_offset: int, pc: int) -> bool | None:
        """Whether the runtime keeps the pointer in the word at CFA+*cfa_offset* alive while the function is
        stopped at the call whose instruction holds *pc*; None where it does not say (no map there, a word
        outside both maps, a stack object)."""
        idx = self.map_index(pc)
        if idx < 0:
            return None
        for off, size in self.objects:
            if off <= cfa_offset < off + size:
                return None
        for base, maps, words in ((self.locals_base, self.locals, self.locals_words),
                                  (self.args_base, self.args, self.args_words)):
            rel = cfa_offset - base
            if 0 <= rel < 8 * words and rel % 8 == 0:
                if idx >= len(maps):
                    return None
                word = rel // 8
                return bool(maps[idx][word // 8] >> (word % 8) & 1)
        return None


def pc_value_runs(data: bytes, pos: int, entry: int) -> list[tuple[int, int, int]]:
    """Decode the pc-value table at *pos* of a function at *entry*: (low, high, value) runs."""
    pc, val, out, first = entry, -1, [], True
    while pos < len(data):
        uv, pos = read_uleb(data, pos)
        if uv == 0 and not first:
            break
        first = False
        val += -(uv & 1) ^ (uv >> 1)
        delta, pos = read_uleb(data, pos)
        out.append((pc, pc + delta, val))  # PC quantum 1 on amd64
        pc += delta
    return out


class PcLineTable:
    """Reads function records and their liveness maps out of ``.gopclntab`` and the ``go:func.*`` data."""

    def __init__(self, b: GoBinary) -> None:
        self._b = b
        elf = b.elf
        self._data = elf.section_data(".gopclntab")
        hdr = b.runtime_unit_type("runtime.pcHeader")
        fn = b.runtime_unit_type("runtime._func")
        obj = b.runtime_unit_type("runtime.stackObjectRecord")
        if not self._data or hdr is None or fn is None or obj is None:
            raise LookupError("no pclntab or no DWARF for its layout")
        u64 = lambda field: struct.unpack_from("<Q", self._data, hdr.field(field).offset)[0]  # noqa: E731
        self._nfunc = u64("nfunc")
        self._pctab = u64("pctabOffset")
        self._pcln = u64("pclnOffset")
        self._func_size = fn.size
        self._f = {f.name: f.offset for f in fn.fields}
        self._obj_size = obj.size
        sym = elf.symbol("runtime.text")
        self._text = sym.value if sym is not None else elf.section_addr(".text")
        gofunc = elf.symbol("go:func.*")
        if gofunc is not None:
            self._gofunc = gofunc.value
        elif elf.has_section(".go.func"):
            self._gofunc = elf.section_addr(".go.func")
        else:
            raise LookupError("no go:func.* data")
        c = b.constant
        self._pc_stackmap = c("internal/abi.PCDATA_StackMapIndex")
        self._fd_args = c("internal/abi.FUNCDATA_ArgsPointerMaps")
        self._fd_locals = c("internal/abi.FUNCDATA_LocalsPointerMaps")
        self._fd_objects = c("internal/abi.FUNCDATA_StackObjects")
        if None in (self._pc_stackmap, self._fd_args, self._fd_locals, self._fd_objects):
            raise LookupError("the table indexes are not in DWARF")
        ftab = self._pcln
        self._entries = [struct.unpack_from("<I", self._data, ftab + 8 * i)[0] for i in range(self._nfunc)]

    def _func_offset(self, entry: int) -> int | None:
        rel = entry - self._text
        i = bisect.bisect_left(self._entries, rel)
        if i >= len(self._entries) or self._entries[i] != rel:
            return None
        funcoff = struct.unpack_from("<I", self._data, self._pcln + 8 * i + 4)[0]
        return self._pcln + funcoff

    def _pcvalue(self, off: int, entry: int) -> list[tuple[int, int, int]]:
        return pc_value_runs(self._data, self._pctab + off, entry)

    def _funcdata(self, fo: int, k: int) -> int | None:
        npcdata = struct.unpack_from("<I", self._data, fo + self._f["npcdata"])[0]
        nfuncdata = self._data[fo + self._f["nfuncdata"]]
        if k >= nfuncdata:
            return None
        off = struct.unpack_from("<I", self._data, fo + self._func_size + 4 * npcdata + 4 * k)[0]
        return None if off == _NONE else self._gofunc + off

    def _pcdata(self, fo: int, k: int) -> int | None:
        npcdata = struct.unpack_from("<I", self._data, fo + self._f["npcdata"])[0]
        if k >= npcdata:
            return None
        off = struct.unpack_from("<I", self._data, fo + self._func_size + 4 * k)[0]
        return off or None

    def _stackmap(self, addr: int | None) -> tuple[tuple[bytes, ...], int]:
        if addr is None:
            return (), 0
        read = self._b.elf.read_vaddr
        n, nbit = struct.unpack("<ii", read(addr, 8))
        if n <= 0 or nbit <= 0 or n > 1 << 16 or nbit > 1 << 20:
            return (), 0
        row = (nbit + 7) // 8
        raw = read(addr + 8, n * row)
        return tuple(raw[i * row:(i + 1) * row] for i in range(n)), nbit

    def liveness(self, entry: int) -> FrameLiveness | None:
        """The liveness maps of the function at *entry*; None when it has none (assembly, no locals)."""
        fo = self._func_offset(entry)
        if fo is None:
            return None
        table = self._pcdata(fo, self._pc_stackmap)
        if table is None:
            return None
        index = tuple(r for r in self._pcvalue(table, entry) if r[2] >= 0)
        locals_, lwords = self._stackmap(self._funcdata(fo, self._fd_locals))
        args, awords = self._stackmap(self._funcdata(fo, self._fd_args))
        # The locals bitmap ends at varp: below the return address and the saved frame pointer (amd64).
        varp = -16
        objects = []
        p = self._funcdata(fo, self._fd_objects)
        if p is not None:
            read = self._b.elf.read_vaddr
            n = struct.unpack("<Q", read(p, 8))[0]
            for i in range(min(n, 1 << 12)):
                off, size = struct.unpack("<ii", read(p + 8 + i * self._obj_size, 8))
                objects.append(((varp if off < 0 else 0) + off, size))
        return FrameLiveness(index, varp - 8 * lwords, locals_, lwords, 0, args, awords, tuple(objects))

