"""The ELF container of a Go binary: identity, sections (decompressed on demand), load layout, symbols.

pyelftools parses the headers; the hot paths (symbol table, section bytes) are read directly with
``struct`` so opening a 40 MB binary costs milliseconds.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
import struct
import zlib
from functools import cached_property
from pathlib import Path

import attrs
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from goprobe.dwarf.leb128 import read_uleb
from goprobe.errors import DwarfFormatError, NotELFError, NotGoBinaryError, UnsupportedArchitectureError

SHF_COMPRESSED = 0x800
PT_LOAD = 1
STT_FUNC = 2
STT_OBJECT = 1

ARCHES = {"EM_X86_64": "amd64", "EM_AARCH64": "arm64"}


@attrs.frozen(slots=True)
class Segment:
    """A PT_LOAD segment: where the file's bytes go in memory."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int  # PF_X=1, PF_W=2, PF_R=4


@attrs.frozen(slots=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: int  # STT_*


class ElfImage:
    """An opened ELF file. Cheap to construct: everything is read lazily."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except FileNotFoundError:
            raise NotELFError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise NotELFError(f"{self.path}: is a directory, not an executable") from None
        except PermissionError:
            raise NotELFError(f"{self.path}: permission denied; run as a user who can read it") from None
        except OSError as exc:  # e.g. a path through a file, a name too long
            raise NotELFError(f"{self.path}: cannot open ({exc.strerror}); check the path") from None
        try:
            self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            self._fh.close()
            raise NotELFError(f"{self.path}: empty file, not an ELF executable") from None
        except OSError as exc:  # a device, a pipe...: nothing that can be mapped is an executable
            self._fh.close()
            raise NotELFError(f"{self.path}: not a regular file ({exc.strerror}); pass the program's "
                              "executable") from None
        if self._map[:4] != b"\x7fELF":
            self.close()
            raise NotELFError(f"{self.path}: not an ELF file (Go binaries for Linux are ELF); pass the program's executable")
        try:
            self._elf = ELFFile(self._fh)
            self.machine = self._elf["e_machine"]
            self._sections = {s.name: s for s in self._elf.iter_sections()}
        except (ELFError, struct.error, ValueError, OSError) as exc:
            self.close()
            raise NotELFError(f"{self.path}: malformed ELF file ({exc})") from None
        if self._elf.elfclass != 64 or not self._elf.little_endian:
            self.close()
            raise UnsupportedArchitectureError(
                f"{self.path}: {self._elf.elfclass}-bit {'little' if self._elf.little_endian else 'big'}-endian ELF; "
                "goprobe supports 64-bit little-endian amd64 and arm64 binaries")
        if self.machine not in ARCHES:
            self.close()
            raise UnsupportedArchitectureError(
                f"{self.path}: architecture {self.machine} is not supported; build for GOARCH=amd64 or arm64")
        self.arch = ARCHES[self.machine]
        self.is_pie = self._elf["e_type"] == "ET_DYN"
        self.entry: int = self._elf["e_entry"]  # link-time entry point
        self._data_cache: dict[str, bytes] = {}

    def close(self) -> None:
        debug = getattr(self, "_debug", None)
        if debug is not None:
            debug.close()
        try:
            self._map.close()
        except (AttributeError, BufferError):
            pass
        self._fh.close()

    def __enter__(self) -> ElfImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sections -------------------------------------------------------------------------------------
    def attach_debug(self, debug: ElfImage) -> None:
        """Read the debug sections and the symbol table from *debug* (a separate debug file of this build)
        where this file has none; code and data still come from this file."""
        self._debug = debug

    def _holder(self, name: str) -> ElfImage:
        """The image whose section *name* is read: a separate debug file for DWARF and symbols this file
        lacks (or has only as NOBITS placeholders)."""
        debug = getattr(self, "_debug", None)
        if debug is not None and name.startswith((".debug_", ".symtab", ".strtab")):
            sec = self._sections.get(name)
            if sec is None or sec["sh_type"] == "SHT_NOBITS":
                return debug
        return self

    def has_section(self, name: str) -> bool:
        holder = self._holder(name)
        return name in holder._sections

    def section_flags(self, name: str) -> int:
        return self._holder(name)._sections[name]["sh_flags"]

    def section_names(self) -> list[str]:
        return list(self._sections)

    def section_addr(self, name: str) -> int:
        return self._sections[name]["sh_addr"]

    def section_size(self, name: str) -> int:
        """Bytes the section occupies in memory (NOBITS ones, such as .bss, included)."""
        return self._sections[name]["sh_size"]

    def section_data(self, name: str) -> bytes:
        """The section's bytes, decompressed if SHF_COMPRESSED; b"" if absent."""
        holder = self._holder(name)
        if holder is not self:
            return holder.section_data(name)
        cached = self._data_cache.get(name)
        if cached is not None:
            return cached
        sec = self._sections.get(name)
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            return b""
        off, size = sec["sh_offset"], sec["sh_size"]
        raw = self._map[off:off + size]
        if sec["sh_flags"] & SHF_COMPRESSED:
            # Elf64_Chdr: ch_type (1 = zlib), reserved, ch_size, ch_addralign.
            try:
                ch_type, _, ch_size, _ = struct.unpack_from("<IIQQ", raw, 0)
                if ch_type != 1:
                    raise DwarfFormatError(f"{self.path}: section {name} uses unknown compression {ch_type}")
                data = zlib.decompress(raw[24:])
            except (struct.error, zlib.error) as exc:
                raise DwarfFormatError(f"{self.path}: section {name} is corrupt ({exc}); the file is damaged") from None
            if len(data) != ch_size:
                raise DwarfFormatError(f"{self.path}: section {name} decompresses to the wrong size; the file is damaged")
        else:
            data = raw
        self._data_cache[name] = data
        return data

    # -- layout ---------------------------------------------------------------------------------------
    @cached_property
    def segments(self) -> tuple[Segment, ...]:
        out = []
        for seg in self._elf.iter_segments():
            if seg["p_type"] == "PT_LOAD":
                out.append(Segment(seg["p_vaddr"], seg["p_memsz"], seg["p_offset"], seg["p_filesz"], seg["p_flags"]))
        return tuple(out)

    def read_vaddr(self, addr: int, size: int) -> bytes:
        """Bytes at a virtual address, from the file image (zero-filled past a segment's file size)."""
        for seg in self.segments:
            if seg.vaddr <= addr and addr + size <= seg.vaddr + seg.memsz:
                rel = addr - seg.vaddr
                data = self._map[seg.offset + rel: seg.offset + min(rel + size, seg.filesz)]
                return data + b"\0" * (size - len(data))
        raise ValueError(f"address {addr:#x}+{size} is not in any loaded segment")

    def file_offset(self, addr: int) -> int:
        """File offset of a virtual address (what a uprobe attaches to)."""
        for seg in self.segments:
            if seg.vaddr <= addr < seg.vaddr + seg.filesz:
                return seg.offset + addr - seg.vaddr
        raise ValueError(f"address {addr:#x} is not backed by the file")

    # -- symbols --------------------------------------------------------------------------------------
    @cached_property
    def _symbols(self) -> tuple[dict[str, tuple[int, int, int]], list[int], list[tuple[int, int, str]]]:
        # Plain tuples: a large Go binary has tens of thousands of symbols and objects would dominate.
        by_name: dict[str, tuple[int, int, int]] = {}
        funcs: list[tuple[int, int, str]] = []
        symtab = self.section_data(".symtab")
        strtab = self.section_data(".strtab")
        find = strtab.find
        for st_name, st_info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", symtab):
            kind = st_info & 0xF
            if (kind != STT_FUNC and kind != STT_OBJECT) or shndx == 0:
                continue
            name = strtab[st_name:find(b"\0", st_name)].decode("utf-8", "replace")
            if name not in by_name:
                by_name[name] = (value, size, kind)
            if kind == STT_FUNC:
                funcs.append((value, size, name))
        funcs.sort()
        return by_name, [f[0] for f in funcs], funcs

    def symbol(self, name: str) -> Symbol | None:
        t = self._symbols[0].get(name)
        return None if t is None else Symbol(name, *t)

    def symbol_names(self) -> list[str]:
        return list(self._symbols[0])

    def function_symbols(self) -> list[Symbol]:
        return [Symbol(name, value, size, STT_FUNC) for value, size, name in self._symbols[2]]

    def function_symbol_at(self, pc: int) -> Symbol | None:
        _, starts, funcs = self._symbols
        i = bisect.bisect_right(starts, pc) - 1
        if i >= 0:
            value, size, name = funcs[i]
            if pc < value + max(size, 1):
                return Symbol(name, value, size, STT_FUNC)
        return None

    # -- identity -------------------------------------------------------------------------------------
    @cached_property
    def go_build_id(self) -> str:
        """The Go build ID from the ``.note.go.buildid`` note ("" if absent)."""
        data = self.section_data(".note.go.buildid")
        if len(data) < 16:
            return ""
        namesz, descsz, _ntype = struct.unpack_from("<III", data, 0)
        desc_off = 12 + ((namesz + 3) & ~3)
        return data[desc_off:desc_off + descsz].decode("ascii", "replace")

    @cached_property
    def gnu_build_id(self) -> str:
        data = self.section_data(".note.gnu.build-id")
        if len(data) < 16:
            return ""
        namesz, descsz, _ = struct.unpack_from("<III", data, 0)
        desc_off = 12 + ((namesz + 3) & ~3)
        return data[desc_off:desc_off + descsz].hex()

    @cached_property
    def identity_key(self) -> str:
        """A key that changes whenever the binary does: build IDs, size, and a hash of the section headers."""
        h = hashlib.sha256()
        h.update(self.go_build_id.encode())
        h.update(self.gnu_build_id.encode())
        h.update(str(len(self._map)).encode())
        shoff, shentsize, shnum = self._elf["e_shoff"], self._elf["e_shentsize"], self._elf["e_shnum"]
        h.update(self._map[shoff:shoff + shentsize * shnum])
        # The head and tail of the file catch rebuilt binaries whose build ID was forced to a constant.
        h.update(self._map[:65536])
        h.update(self._map[-65536:])
        return h.hexdigest()

    @cached_property
    def go_version(self) -> str:
        """The Go release that built the binary, e.g. ``go1.27.3``, from ``.go.buildinfo``."""
        version = _buildinfo_version(self)
        if version is None:
            raise NotGoBinaryError(
                f"{self.path}: not a Go binary (no Go build information); goprobe reads programs built by the Go toolchain")
        return version


_BUILDINFO_MAGIC = b"\xff Go buildinf:"


def _buildinfo_version(img: ElfImage) -> str | None:
    data = img.section_data(".go.buildinfo")
    if not data:
        # Some linkers merge it into .data; search the writable segments' head.
        idx = img._map.find(_BUILDINFO_MAGIC)
        if idx < 0:
            return None
        data = img._map[idx:idx + 64 * 1024]
    if not data.startswith(_BUILDINFO_MAGIC) or len(data) < 32:
        return None
    ptr_size, flags = data[14], data[15]
    if flags & 2:  # Go 1.18+: inline varint-prefixed strings after the 32-byte header.
        n, pos = read_uleb(data, 32)  # Go's uvarint is unsigned LEB128
        return data[pos:pos + n].decode("utf-8", "replace")
    # Older layout: pointers to Go string headers.
    fmt = "<Q" if ptr_size == 8 else "<I"
    (ptr,) = struct.unpack_from(fmt, data, 16)
    try:
        hdr = img.read_vaddr(ptr, 2 * ptr_size)
        sptr, slen = struct.unpack("<QQ" if ptr_size == 8 else "<II", hdr)
        return img.read_vaddr(sptr, slen).decode("utf-8", "replace")
    except (ValueError, struct.error):
        return None
