"""Binaries without DWARF (``-ldflags=-s -w``, as many production builds and Go's own tools are): enough of
the runtime to give a bare snapshot — every goroutine, its state, wait reason and stack with functions, files
and lines.

Go always keeps its pclntab, the table the runtime itself unwinds and symbolises with: function names and
entries, each function's SP delta at every PC (so the CFA), file and line tables and inlining trees. What
DWARF gave besides — the runtime structures' layouts, the wait reasons' names — comes from
``runtime_tables.json``, generated from each release's own DWARF (``goprobe.testing.runtime_tables``) and
keyed by the Go version the binary's build information records. ``runtime.allgs``/``allglen`` are found from
the code of ``runtime.allgadd`` (the table says which of the data addresses it uses they are), and
``firstmoduledata`` from its first word, which points at the pclntab.
"""

from __future__ import annotations

import bisect
import json
import struct
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import attrs

from goprobe.dwarf.elf import ElfImage
from goprobe.dwarf.pclntab import pc_value_runs
from goprobe.dwarf.runtime_layout import FieldLayout, RuntimeLayout, StructLayout
from goprobe.errors import NoDebugInfoError, RuntimeLayoutError

TABLES_PATH = Path(__file__).resolve().parent / "runtime_tables.json"
NO_DEBUG_INFO = "no debug info in this binary (stripped: -ldflags=-s/-w); stacks only"
_RSP = 7  # DWARF register number of RSP on amd64


def data_targets(code: bytes, addr: int) -> list[int]:
    """The distinct addresses that RIP-relative operands of *code* (at *addr*) refer to, in order of first use."""
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    out: list[int] = []
    for insn in md.disasm(code, addr):
        for op in insn.operands:
            if op.type == capstone.x86.X86_OP_MEM and op.mem.base == capstone.x86.X86_REG_RIP:
                target = insn.address + insn.size + op.mem.disp
                if target not in out:
                    out.append(target)
    return out


@lru_cache(maxsize=1)
def _tables() -> dict[str, Any]:
    return json.loads(TABLES_PATH.read_text())


def table_for(go_version: str) -> dict[str, Any] | None:
    """The runtime table of a release (``go1.27.3`` → the ``1.27`` entry), or None if goprobe has none."""
    key = ".".join(go_version.removeprefix("go").split(".")[:2])
    return _tables().get(key)


@attrs.frozen(slots=True)
class PcFunction:
    name: str
    entry: int
    end: int
    offset: int  # of its _func record in the pclntab

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        return ((self.entry, self.end),)


class Pclntab:
    """The pclntab of a Go 1.20+ binary, laid out as the release's table says."""

    def __init__(self, data: bytes, layout: dict[str, Any], constants: dict[str, int], read_vaddr, gofunc: int,
                 text: int):
        self._data = data
        h = layout["pcHeader"]["fields"]
        self._f = layout["_func"]["fields"]
        self._func_size = layout["_func"]["size"]
        self._inl = layout["inlinedCall"]
        u64 = lambda name: struct.unpack_from("<Q", data, h[name])[0]  # noqa: E731
        if struct.unpack_from("<I", data, 0)[0] != 0xFFFFFFF1:
            raise RuntimeLayoutError("the pclntab's header is not the Go 1.20+ one")
        self.nfunc = u64("nfunc")
        self.text = text  # moduledata.text (the header's textStart, where it has one, is the same)
        self._funcname = u64("funcnameOffset")
        self._cu = u64("cuOffset")
        self._filetab = u64("filetabOffset")
        self._pctab = u64("pctabOffset")
        self._pcln = u64("pclnOffset")
        self._inl_index = constants["PCDATA_InlTreeIndex"]
        self._inl_tree = constants["FUNCDATA_InlTree"]
        self._read = read_vaddr
        self._gofunc = gofunc
        ft = self._pcln
        pairs = struct.unpack_from(f"<{2 * (self.nfunc + 1)}I", data, ft)
        self._entries = [self.text + pairs[2 * i] for i in range(self.nfunc + 1)]  # the last: end of text
        self._funcoffs = [ft + pairs[2 * i + 1] for i in range(self.nfunc)]
        self._made: dict[int, PcFunction] = {}

    def _u32(self, fo: int, field: str) -> int:
        return struct.unpack_from("<I", self._data, fo + self._f[field])[0]

    def _cstring(self, pos: int) -> str:
        end = self._data.index(b"\0", pos)
        return self._data[pos:end].decode("utf-8", "replace")

    def function_at(self, pc: int) -> PcFunction | None:
        i = bisect.bisect_right(self._entries, pc) - 1
        if i < 0 or i >= self.nfunc:
            return None
        return self._function(i)

    def _function(self, i: int) -> PcFunction:
        fn = self._made.get(i)
        if fn is None:
            fo = self._funcoffs[i]
            fn = self._made[i] = PcFunction(self._cstring(self._funcname + self._u32(fo, "nameOff")),
                                            self._entries[i], self._entries[i + 1], fo)
        return fn

    def functions(self) -> list[PcFunction]:
        return [self._function(i) for i in range(self.nfunc)]

    def _runs(self, fn: PcFunction, table_off: int) -> list[tuple[int, int, int]]:
        return pc_value_runs(self._data, self._pctab + table_off, fn.entry) if table_off else []

    def _value(self, fn: PcFunction, table_off: int, pc: int) -> int | None:
        for lo, hi, v in self._runs(fn, table_off):
            if lo <= pc < hi:
                return v
        return None

    def sp_deltas(self, fn: PcFunction) -> list[tuple[int, int, int]]:
        """(low, high, bytes the function has pushed below its CFA's return address) runs."""
        return self._runs(fn, self._u32(fn.offset, "pcsp"))

    def _file_line(self, fn: PcFunction, pc: int) -> tuple[str, int]:
        fileno = self._value(fn, self._u32(fn.offset, "pcfile"), pc)
        line = self._value(fn, self._u32(fn.offset, "pcln"), pc)
        name = "?"
        if fileno is not None and fileno >= 0:
            cu = self._u32(fn.offset, "cuOffset")
            off = struct.unpack_from("<I", self._data, self._cu + 4 * (cu + fileno))[0]
            if off != 0xFFFFFFFF:
                name = self._cstring(self._filetab + off)
        return name, line or 0

    def _pcdata_table(self, fn: PcFunction, k: int) -> int:
        if k >= self._u32(fn.offset, "npcdata"):
            return 0
        return struct.unpack_from("<I", self._data, fn.offset + self._func_size + 4 * k)[0]

    def _funcdata(self, fn: PcFunction, k: int) -> int | None:
        npcdata = self._u32(fn.offset, "npcdata")
        if k >= self._data[fn.offset + self._f["nfuncdata"]]:
            return None
        off = struct.unpack_from("<I", self._data, fn.offset + self._func_size + 4 * npcdata + 4 * k)[0]
        return None if off == 0xFFFFFFFF else self._gofunc + off

    def frames_at(self, pc: int) -> list[tuple[str, str, int]]:
        """The logical frames at *pc*, innermost first (inlined calls, then the function), as the runtime's
        own traceback finds them."""
        fn = self.function_at(pc)
        if fn is None:
            return []
        out = []
        index_table = self._pcdata_table(fn, self._inl_index)
        tree = self._funcdata(fn, self._inl_tree) if index_table else None
        f = self._inl["fields"]
        for _ in range(64):  # inlining depth is bounded; a corrupt tree must not loop
            ix = self._value(fn, index_table, pc) if tree is not None else None
            if ix is None or ix < 0:
                break
            raw = self._read(tree + ix * self._inl["size"], self._inl["size"])
            name_off, parent = struct.unpack_from("<ii", raw, f["nameOff"])[0], \
                struct.unpack_from("<i", raw, f["parentPc"])[0]
            out.append((self._cstring(self._funcname + name_off), *self._file_line(fn, pc)))
            pc = fn.entry + parent
        out.append((fn.name, *self._file_line(fn, pc)))
        return out


class StrippedBinary:
    """What a bare snapshot needs of a Go executable that has no DWARF (see the module's docstring). It
    answers the symbol questions decoding asks (``frames_at``, ``function_name_at``, ``wait_reasons``) from
    the pclntab and the release's table."""

    stripped = True

    def __init__(self, path) -> None:
        self.elf = ElfImage(path)
        self.path = self.elf.path
        self.arch = self.elf.arch
        try:
            self.go_version = self.elf.go_version
            self._table = table_for(self.go_version)
            if self._table is None:
                raise NoDebugInfoError(
                    f"{self.path}: has no DWARF debug information and goprobe has no runtime table for "
                    f"{self.go_version}; rebuild without '-w' and '-s' in -ldflags")
            if self.arch != "amd64":
                raise NoDebugInfoError(f"{self.path}: has no DWARF debug information; stacks of stripped "
                                       "binaries are read on amd64 only; rebuild without '-w' and '-s'")
            # (position-independent executables keep it in .data.rel.ro.gopclntab)
            section = next((n for n in (".gopclntab", ".data.rel.ro.gopclntab") if self.elf.has_section(n)), None)
            data = self.elf.section_data(section) if section else b""
            if not data:
                raise NoDebugInfoError(f"{self.path}: has neither DWARF nor a .gopclntab section")
            self._pclntab_addr = self.elf.section_addr(section)
            self.firstmoduledata = self._find_moduledata()
            md = self._table["structs"]["moduledata"]["fields"]
            gofunc = self._word(self.firstmoduledata + md["gofunc"][0]) if "gofunc" in md else 0
            self.pcln = Pclntab(data, self._table["pclntab"], self._table["constants"], self.elf.read_vaddr,
                                gofunc, self._word(self.firstmoduledata + md["text"][0]))
        except BaseException:
            self.elf.close()
            raise
        self.is_pie = self.elf.is_pie
        self.build_id = self.elf.go_build_id

    def close(self) -> None:
        self.elf.close()

    def __enter__(self) -> StrippedBinary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def segments(self):
        return self.elf.segments

    def _word(self, addr: int) -> int:
        return struct.unpack("<Q", self.elf.read_vaddr(addr, 8))[0]

    def _find_moduledata(self) -> int:
        """firstmoduledata: the initialised data word that points at the pclntab, whose text field lies in the
        code."""
        needle = struct.pack("<Q", self._pclntab_addr)
        text_off = self._table["structs"]["moduledata"]["fields"]["text"][0]
        lo = self.elf.section_addr(".text")
        hi = lo + len(self.elf.section_data(".text"))
        for name in (".go.module", ".noptrdata", ".data"):
            if not self.elf.has_section(name):
                continue
            data, base = self.elf.section_data(name), self.elf.section_addr(name)
            pos = data.find(needle)
            while pos >= 0:
                if (base + pos) % 8 == 0 and pos + text_off + 8 <= len(data):
                    if lo <= struct.unpack_from("<Q", data, pos + text_off)[0] < hi:
                        return base + pos
                pos = data.find(needle, pos + 1)
        raise NoDebugInfoError(f"{self.path}: has no DWARF and its runtime module data was not found")

    def function(self, name: str) -> PcFunction:
        """The function named *name* (the first, where ABI wrappers repeat a name: see :meth:`ranges_of`)."""
        from goprobe.errors import UnknownFunctionError

        fns = self._by_name.get(name)
        if not fns:
            raise UnknownFunctionError(name, list(self._by_name), "the binary's pclntab")
        return fns[0]

    def ranges_of(self, name: str) -> tuple[tuple[int, int], ...]:
        """The code of every function named *name* (a name may appear more than once: ABI wrappers)."""
        self.function(name)
        return tuple(r for fn in self._by_name[name] for r in fn.ranges)

    def has_function(self, name: str) -> bool:
        return name in self._by_name

    @cached_property
    def _by_name(self) -> dict[str, list[PcFunction]]:
        out: dict[str, list[PcFunction]] = {}
        for fn in self.pcln.functions():
            out.setdefault(fn.name, []).append(fn)
        return out

    @cached_property
    def runtime(self) -> RuntimeLayout:
        t = self._table
        structs = {k: StructLayout(s["name"], s["size"], {f: FieldLayout(*v) for f, v in s["fields"].items()})
                   for k, s in t["structs"].items()}
        fn = self.function("runtime.allgadd")
        targets = data_targets(self.elf.read_vaddr(fn.entry, fn.end - fn.entry), fn.entry)
        try:
            allgs, allglen = (targets[t["allgadd"][k]] for k in ("allgs", "allglen"))
        except IndexError:
            allgs = allglen = 0
        # Both are zero-initialised variables: anything else means allgadd's code is not what the table's
        # release compiles (other build flags), and the goroutine list would be read from the wrong place.
        bss = [(self.elf.section_addr(n), self.elf.section_addr(n) + self.elf.section_size(n))
               for n in (".bss", ".noptrbss") if self.elf.has_section(n)]
        if not all(any(lo <= a and a + 8 <= hi for lo, hi in bss) for a in (allgs, allglen)) or allgs == allglen:
            raise RuntimeLayoutError(f"{self.path}: runtime.allgadd's code is not what {t['from']} compiles; "
                                     "cannot find the goroutine list without debug info (rebuild without -s -w)")
        return RuntimeLayout(self.go_version, structs, allgs, allglen, self.firstmoduledata, t["map_impl"],
                             tuple(t["direct_iface"]), t["kind_mask"], t["g_status_size"])

    @cached_property
    def text_range(self) -> tuple[int, int]:
        """[runtime.text, runtime.etext): the Go code (moduledata's text and etext)."""
        md = self._table["structs"]["moduledata"]["fields"]
        return tuple(self._word(self.firstmoduledata + md[f][0]) for f in ("text", "etext"))

    @cached_property
    def code(self):
        from goprobe.dwarf.instructions import CodeInfo

        return CodeInfo(self)

    def unwind_table(self):
        """The CFA at every PC of every function (CFA = RSP + SP delta + 8), in the plan's unwind format."""
        out = []
        for fn in self.pcln.functions():
            rows = []
            for lo, _hi, delta in self.pcln.sp_deltas(fn):
                if not rows or rows[-1][2] != delta + 8:
                    rows.append((lo, _RSP, delta + 8))
            if rows:
                out.append((fn.entry, fn.end, tuple(rows)))
        return tuple(out)

    # -- what decoding asks ----------------------------------------------------------------------------------
    def frames_at(self, pc: int) -> list[tuple[str, str, int]]:
        return self.pcln.frames_at(pc)

    def function_name_at(self, pc: int) -> str | None:
        fn = self.pcln.function_at(pc)
        return fn.name if fn is not None else None

    def type_at_runtime_address(self, _addr: int):
        return None

    def wait_reasons(self) -> dict[int, str]:
        return dict(enumerate(self._table["wait_reasons"]))
