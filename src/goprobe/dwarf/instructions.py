"""Facts about a function's machine code, from decoding its instructions (capstone).

- ``prologue_end``: the first PC after the stack-bound check. A probe at the entry PC fires twice when the
  goroutine's stack grows (entry → morestack → entry), so entry probes go here.
- ``returns``: every RET instruction. Go forbids uretprobes (they rewrite the return address on a stack the
  runtime may copy), so a return probe attaches to each RET.
- ``has_frame_pointer`` / ``frame_size``: how the function sets up its frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functools import cached_property

from goprobe.dwarf.code_facts import FunctionCode

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary
    from goprobe.dwarf.functions import Function


_COND_JUMPS_AMD64 = {"jbe", "jna", "jb", "jae", "ja", "jl", "jle", "jg", "jge"}


class CodeInfo:
    def __init__(self, binary: GoBinary) -> None:
        self._binary = binary
        self._cache: dict[int, FunctionCode] = {}

    @cached_property
    def _cs(self):
        import capstone  # heavy import: only when code must really be decoded (not on a cache hit)

        if self._binary.arch == "amd64":
            return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        return capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)

    def instructions(self, low: int, high: int) -> list[tuple[int, int, str, str]]:
        """(address, size, mnemonic, operands) of every instruction in [low, high)."""
        code = self._binary.elf.read_vaddr(low, high - low)
        out = list(self._cs.disasm_lite(code, low))
        return out

    def for_function(self, fn: Function) -> FunctionCode:
        info = self._cache.get(fn.entry)
        if info is None:
            key = f"code2:{fn.entry}"
            info = self._binary.cache.get(key)
            if info is None:
                info = self._binary.cache.put(key, self._analyse(fn))
            self._cache[fn.entry] = info
        return info

    def _analyse(self, fn: Function) -> FunctionCode:
        insns: list[tuple[int, int, str, str]] = []
        for lo, hi in sorted(fn.ranges):
            insns.extend(self.instructions(lo, hi))
        if self._binary.arch == "amd64":
            return _analyse_amd64(fn, insns, self._binary)
        return _analyse_arm64(fn, insns, self._binary)


def _target(op_str: str) -> int | None:
    s = op_str.strip().lstrip("#")
    try:
        return int(s, 16) if s.startswith("0x") else int(s)
    except ValueError:
        return None


def _morestack_block(insns, target: int, entry: int, binary: GoBinary, arch: str) -> bool:
    """Does the code at *target* call runtime.morestack* and then jump back to the entry?"""
    called = False
    for addr, _size, mnem, ops in insns:
        if addr < target:
            continue
        if mnem in ("call", "bl"):
            t = _target(ops)
            sym = binary.elf.function_symbol_at(t) if t is not None else None
            if sym is not None and sym.name.startswith("runtime.morestack"):
                called = True
        elif mnem in ("jmp", "b") and called:
            return _target(ops) == entry
        if addr - target > 128:
            return False
    return False


def _analyse_amd64(fn: Function, insns, binary: GoBinary) -> FunctionCode:
    returns = tuple(a for a, _s, m, _o in insns if m in ("ret", "retq"))
    prologue_end = fn.entry
    has_check = False
    # The check is within the first few instructions: [LEAQ -N(SP), R12;] CMPQ SP|R12, 16(R14); JBE morestack.
    for i, (addr, size, mnem, ops) in enumerate(insns[:6]):
        if mnem in _COND_JUMPS_AMD64:
            tgt = _target(ops)
            if tgt is not None and fn.contains(tgt) and _morestack_block(insns, tgt, fn.entry, binary, "amd64"):
                prologue_end = addr + size
                has_check = True
            break
    has_fp = False
    frame = 0
    body = [x for x in insns if x[0] >= prologue_end][:4]
    for j, (addr, size, mnem, ops) in enumerate(body):
        if mnem == "push" and ops == "rbp":
            frame += 8
            nxt = body[j + 1] if j + 1 < len(body) else None
            if nxt and nxt[2] == "mov" and nxt[3].replace(" ", "") == "rbp,rsp":
                has_fp = True
        elif mnem == "sub" and ops.startswith("rsp,"):
            t = _target(ops.split(",", 1)[1])
            frame += t or 0
            break
    calls = tuple(a + s for a, s, m, _o in insns if m in ("call", "callq"))
    return FunctionCode(fn.entry, fn.high, prologue_end, returns, has_fp, frame, has_check, calls)


def _analyse_arm64(fn: Function, insns, binary: GoBinary) -> FunctionCode:
    returns = tuple(a for a, _s, m, _o in insns if m == "ret")
    prologue_end = fn.entry
    has_check = False
    for addr, size, mnem, ops in insns[:6]:
        if mnem in ("b.ls", "b.lo", "b.hs", "b.hi"):
            tgt = _target(ops)
            if tgt is not None and fn.contains(tgt) and _morestack_block(insns, tgt, fn.entry, binary, "arm64"):
                prologue_end = addr + size
                has_check = True
            break
    has_fp = False
    frame = 0
    for addr, size, mnem, ops in [x for x in insns if x[0] >= prologue_end][:4]:
        o = ops.replace(" ", "")
        if mnem in ("str", "stp") and "x30" in o and "sp" in o and "!" in o:
            # MOVD.W R30, -N(RSP): allocates the frame and saves the link register.
            t = o.split("#-")
            if len(t) > 1:
                frame = _target(t[1].rstrip("]!")) or 0
        elif mnem == "stur" and "x29" in o:
            has_fp = True
        elif mnem == "sub" and "x29" in o and "sp" in o:
            has_fp = True
    return FunctionCode(fn.entry, fn.high, prologue_end, returns, has_fp, frame, has_check)
