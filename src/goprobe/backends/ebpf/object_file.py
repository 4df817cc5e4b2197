"""Read the BPF ELF object LLVM emits and turn one of its programs into loadable instructions.

The backend avoids relocations by design (maps exist before code generation and their fds are in the code),
so the only references left to resolve are between functions of one program's section:

- ``call`` to a non-``internal`` function: LLVM leaves ``imm = -1`` and an ``R_BPF_64_32`` relocation
  (calls to ``internal`` functions it resolves itself, pc-relative);
- a callback's address (``bpf_loop``): LLVM leaves an ``ld_imm64`` with ``src_reg = 0``, the byte offset in
  ``imm`` and an ``R_BPF_64_64`` relocation against the section symbol; the kernel wants
  ``src_reg = BPF_PSEUDO_FUNC`` and ``imm`` = the target's instruction index relative to the next one.

The kernel runs a program from instruction 0 and needs exactly one func_info record per subprogram, so the
program image puts the entry function first and appends only the functions it reaches, renumbering every
call, callback reference, func_info and line_info record. Anything else — a map or global variable
relocation, a call into another section — raises :class:`ObjectFileError` naming the symbol.
"""

from __future__ import annotations

import io
import struct

import attrs
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from goprobe.backends.ebpf.btf import Btf, BtfExt
from goprobe.backends.ebpf.errors import BtfError, ObjectFileError

EM_BPF = 247
SHF_EXECINSTR = 0x4
R_BPF_64_64 = 1        # ld_imm64
R_BPF_64_32 = 10       # call
OP_CALL = 0x85
OP_LD_IMM64 = 0x18
PSEUDO_CALL = 1
PSEUDO_FUNC = 4
INSN = 8


@attrs.frozen(slots=True)
class Function:
    """A function symbol in a code section: *offset* and *size* in bytes."""

    name: str
    section: str
    offset: int
    size: int
    is_global: bool


@attrs.frozen(slots=True)
class Relocation:
    """A relocation in a code section: at byte *offset*, against *symbol* (in section *symbol_section*)."""

    section: str
    offset: int
    type: int
    symbol: str
    symbol_value: int
    symbol_section: str
    symbol_is_section: bool


@attrs.frozen
class ProgramImage:
    """One program ready for ``BPF_PROG_LOAD``: instructions with the entry first, and func_info/line_info in
    the kernel's format (``insn_off`` in instructions)."""

    name: str
    section: str
    insns: bytes
    func_info: bytes
    line_info: bytes
    functions: tuple[tuple[str, int], ...]   # (name, first instruction) in image order
    has_callbacks: bool                      # BPF_PSEUDO_FUNC references: the kernel then requires BTF

    @property
    def insn_count(self) -> int:
        return len(self.insns) // INSN


class BpfObject:
    """A parsed BPF ELF object (small: everything is read up front)."""

    def __init__(self, data: bytes, *, name: str = "object") -> None:
        self.name = name
        try:
            elf = ELFFile(io.BytesIO(data))
        except ELFError as e:
            raise ObjectFileError(f"{name}: not an ELF object: {e}") from None
        if elf["e_machine"] not in ("EM_BPF", EM_BPF) or not elf.little_endian:
            raise ObjectFileError(f"{name}: not a little-endian BPF object (machine {elf['e_machine']})")
        self.code: dict[str, bytes] = {}
        names: dict[int, str] = {}
        for idx, sec in enumerate(elf.iter_sections()):
            names[idx] = sec.name
            if sec["sh_flags"] & SHF_EXECINSTR and sec["sh_size"]:
                self.code[sec.name] = sec.data()
        self.functions: dict[str, list[Function]] = {s: [] for s in self.code}
        symtab = elf.get_section_by_name(".symtab")
        symbols = list(symtab.iter_symbols()) if symtab is not None else []
        for sym in symbols:
            shndx = sym["st_shndx"]
            if sym["st_info"]["type"] == "STT_FUNC" and isinstance(shndx, int) and names.get(shndx) in self.code:
                self.functions[names[shndx]].append(Function(
                    sym.name, names[shndx], sym["st_value"], sym["st_size"], sym["st_info"]["bind"] != "STB_LOCAL"))
        for fns in self.functions.values():
            fns.sort(key=lambda f: f.offset)
        self.relocations: dict[str, list[Relocation]] = {s: [] for s in self.code}
        for sec in elf.iter_sections():
            if sec["sh_type"] != "SHT_REL" or names.get(sec["sh_info"]) not in self.code:
                continue
            target = names[sec["sh_info"]]
            for rel in sec.iter_relocations():
                sym = symbols[rel["r_info_sym"]]
                shndx = sym["st_shndx"]
                sym_sec = names.get(shndx, str(shndx)) if isinstance(shndx, int) else str(shndx)
                is_sec = sym["st_info"]["type"] == "STT_SECTION"
                self.relocations[target].append(Relocation(
                    target, rel["r_offset"], rel["r_info_type"], sym_sec if is_sec else sym.name,
                    sym["st_value"], sym_sec, is_sec))
        btf_sec = elf.get_section_by_name(".BTF")
        ext_sec = elf.get_section_by_name(".BTF.ext")
        self.btf_data: bytes | None = btf_sec.data() if btf_sec is not None else None
        self.btf: Btf | None = None
        self.btf_ext: BtfExt | None = None
        if self.btf_data:
            try:
                self.btf = Btf(self.btf_data, source=f"{name} .BTF")
                if ext_sec is not None:
                    self.btf_ext = BtfExt(ext_sec.data(), self.btf)
            except BtfError as e:
                raise ObjectFileError(f"{name}: unreadable BTF from LLVM: {e}") from None

    @property
    def sections(self) -> list[str]:
        """Names of the code sections (one per program; ``.text`` only when LLVM put code there)."""
        return list(self.code)

    def program(self, section: str, entry: str | None = None) -> ProgramImage:
        """The program of *section*, starting at function *entry* (default: the section's only global
        function that no other function calls, or its first function)."""
        if section not in self.code:
            raise ObjectFileError(f"{self.name}: no code section {section!r}; it has {self.sections}")
        code = bytearray(self.code[section])
        fns = self.functions[section] or [Function(section, section, 0, len(code), True)]
        targets = self._targets(section, code, fns)
        start = self._entry(section, fns, entry, {t for t, _ in targets.values()})
        by_start = {f.offset // INSN: f for f in fns}

        # Entry first, then every function it reaches (the verifier rejects unreachable code).
        order = [start]
        seen = {start.name}
        k = 0
        while k < len(order):
            f = order[k]
            k += 1
            for i, (t, _) in targets.items():
                if f.offset <= i * INSN < f.offset + f.size:
                    callee = by_start[t]
                    if callee.name not in seen:
                        seen.add(callee.name)
                        order.append(callee)
        order = [start] + sorted(order[1:], key=lambda f: f.offset)
        new_start: dict[str, int] = {}
        pos = 0
        for f in order:
            new_start[f.name] = pos
            pos += f.size // INSN

        def new_index(old_byte: int) -> int | None:
            for f in order:
                if f.offset <= old_byte < f.offset + f.size:
                    return new_start[f.name] + (old_byte - f.offset) // INSN
            return None

        out = bytearray()
        has_callbacks = False
        for f in order:
            body = bytearray(code[f.offset:f.offset + f.size])
            for i, (t, is_func_ref) in targets.items():
                if not f.offset <= i * INSN < f.offset + f.size:
                    continue
                at = i * INSN - f.offset
                here = new_start[f.name] + at // INSN
                imm = new_start[by_start[t].name] - (here + 1)
                regs = body[at + 1]
                if is_func_ref:
                    body[at + 1] = (regs & 0x0F) | (PSEUDO_FUNC << 4)
                    has_callbacks = True
                struct.pack_into("<i", body, at + 4, imm)
            out += body

        func_info = bytearray()
        line_info = bytearray()
        if self.btf_ext is not None:
            for rec in sorted(self.btf_ext.func_info.get(section, []), key=lambda r: new_index(r.insn_off) or 0):
                idx = new_index(rec.insn_off)
                if idx is not None:
                    func_info += struct.pack("<II", idx, rec.type_id)
            last = -1
            recs = [(new_index(r.insn_off), r) for r in self.btf_ext.line_info.get(section, [])]
            for idx, rec in sorted((x for x in recs if x[0] is not None), key=lambda x: x[0]):
                if idx > last:  # the kernel wants strictly increasing offsets
                    line_info += struct.pack("<IIII", idx, rec.file_name_off, rec.line_off, rec.line_col)
                    last = idx
        return ProgramImage(start.name, section, bytes(out), bytes(func_info), bytes(line_info),
                            tuple((f.name, new_start[f.name]) for f in order), has_callbacks)

    def _entry(self, section: str, fns: list[Function], entry: str | None, called: set[int]) -> Function:
        if entry is not None:
            for f in fns:
                if f.name == entry:
                    return f
            raise ObjectFileError(f"{self.name}: section {section!r} has no function {entry!r}; "
                                  f"it has {[f.name for f in fns]}")
        # The entry is a global function nothing in the section calls.
        globals_ = [f for f in fns if f.is_global and f.offset // INSN not in called]
        if len(globals_) > 1:
            raise ObjectFileError(f"{self.name}: section {section!r} has several global functions "
                                  f"{[f.name for f in globals_]}; name the entry function")
        return globals_[0] if globals_ else fns[0]

    def _targets(self, section: str, code: bytearray, fns: list[Function]) -> dict[int, tuple[int, bool]]:
        """Every instruction that refers to a function: index → (target's first instruction, is a callback
        address rather than a call)."""
        relocs = {r.offset // INSN: r for r in self.relocations[section]}
        starts = {f.offset // INSN for f in fns}
        out: dict[int, tuple[int, bool]] = {}
        i, n = 0, len(code) // INSN
        while i < n:
            op = code[i * INSN]
            src = code[i * INSN + 1] >> 4
            (imm,) = struct.unpack_from("<i", code, i * INSN + 4)
            rel = relocs.pop(i, None)
            target = None
            if rel is not None:
                if rel.symbol_section != section:
                    raise ObjectFileError(
                        f"{self.name}: section {section!r} refers to {rel.symbol!r} in section "
                        f"{rel.symbol_section!r} (relocation type {rel.type} at byte {rel.offset}); maps must be "
                        "created before code generation and referenced with llvm.bpf.pseudo, and every function "
                        "of a program must be in the program's section")
                if op == OP_CALL and rel.type == R_BPF_64_32:
                    target = (rel.symbol_value // INSN + imm + 1, False)
                elif op == OP_LD_IMM64 and rel.type == R_BPF_64_64:
                    target = ((rel.symbol_value + imm) // INSN, True)
                else:
                    raise ObjectFileError(f"{self.name}: cannot resolve relocation type {rel.type} against "
                                          f"{rel.symbol!r} on instruction {i} (opcode {op:#04x}) of {section!r}")
            elif op == OP_CALL and src == PSEUDO_CALL:
                target = (i + 1 + imm, False)   # resolved by LLVM (pc-relative)
            elif op == OP_LD_IMM64 and src == PSEUDO_FUNC:
                target = (i + 1 + imm, True)
            if target is not None:
                if target[0] not in starts:
                    raise ObjectFileError(f"{self.name}: instruction {i} of {section!r} refers to instruction "
                                          f"{target[0]}, which does not start a function")
                out[i] = target
            i += 2 if op == OP_LD_IMM64 else 1
        if relocs:
            r = next(iter(relocs.values()))
            raise ObjectFileError(f"{self.name}: relocation against {r.symbol!r} at byte {r.offset} of {section!r} "
                                  "is not on an instruction that can refer to a function")
        return out
