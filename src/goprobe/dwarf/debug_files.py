"""Separate debug information: where a stripped binary's DWARF lives, as distributions ship it.

A build's DWARF can be moved to a file of its own (``objcopy --only-keep-debug``) and the binary stripped; the
binary then names that file by its GNU build id (``/usr/lib/debug/.build-id/ab/cdef….debug``) and/or by a
``.gnu_debuglink`` section (a file name and the file's CRC-32), looked for next to the binary, in its
``.debug/`` directory and under ``/usr/lib/debug`` (the paths GDB and elfutils use).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from goprobe.dwarf.elf import ElfImage
from goprobe.errors import NoDebugInfoError

# Where distributions install debug files; GOPROBE_DEBUG_DIRS (colon-separated) adds roots searched first.
DEBUG_ROOTS = ("/usr/lib/debug",)


def _roots() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("GOPROBE_DEBUG_DIRS", "").split(":") if p]
    return extra + [Path(r) for r in DEBUG_ROOTS]


def debuglink(elf: ElfImage) -> tuple[str, int] | None:
    """The ``.gnu_debuglink`` file name and CRC-32, if the binary has one."""
    data = elf.section_data(".gnu_debuglink")
    end = data.find(b"\0")
    if end <= 0:
        return None
    crc_at = (end + 4) & ~3
    if crc_at + 4 > len(data):
        return None
    return data[:end].decode("utf-8", "replace"), struct.unpack_from("<I", data, crc_at)[0]


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def find_debug_file(elf: ElfImage) -> Path | None:
    """The separate debug file of *elf*'s build, or None."""
    build_id = elf.gnu_build_id
    if len(build_id) > 2:
        for root in _roots():
            p = root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
            if p.is_file():
                return p
    link = debuglink(elf)
    if link is not None:
        name, crc = link
        # The binary's own directory: through /proc/PID/exe, where the file really is.
        where = Path(os.path.realpath(elf.path)).parent
        for p in [where / name, where / ".debug" / name] + [r / where.relative_to("/") / name for r in _roots()]:
            if p.is_file() and _crc32(p) == crc:
                return p
    return None


def open_debug_file(elf: ElfImage, path: str | os.PathLike[str]) -> ElfImage:
    """Open *path* as *elf*'s debug file; refused when it has no DWARF or belongs to another build."""
    debug = ElfImage(path)
    if not debug.has_section(".debug_info"):
        debug.close()
        raise NoDebugInfoError(f"{path}: has no DWARF debug information; give the debug file of {elf.path} "
                               "(made by objcopy --only-keep-debug)")
    mine, theirs = elf.gnu_build_id or elf.go_build_id, debug.gnu_build_id or debug.go_build_id
    if mine and theirs and mine != theirs:
        debug.close()
        raise NoDebugInfoError(f"{path} is the debug file of another build (build id {theirs}, but {elf.path} "
                               f"has {mine}); give the one made from this binary")
    return debug
