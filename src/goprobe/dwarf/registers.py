"""DWARF register numbers ↔ names, per architecture (System V psABI numbering for amd64, AAPCS64 for arm64)."""

from __future__ import annotations

AMD64 = ("RAX", "RDX", "RCX", "RBX", "RSI", "RDI", "RBP", "RSP",
         "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "RIP",
         *(f"X{i}" for i in range(16)))
ARM64 = {**{i: f"R{i}" for i in range(31)}, 31: "SP", **{64 + i: f"F{i}" for i in range(32)}}



def register_name(reg: int | None, arch: str = "amd64") -> str:
    if reg is None:
        return "?"
    if arch == "arm64":
        return ARM64.get(reg, f"r{reg}")
    return AMD64[reg] if 0 <= reg < len(AMD64) else f"r{reg}"
