"""ELF core files (from the kernel or gdb's ``gcore``) as a memory source plus thread registers.

A core dump leaves out pages it can get back from files (unmodified text and read-only data: PT_LOAD with
filesz < memsz). Those bytes are read from the mapped file named by the NT_FILE note, at the offset the note
gives; without the file they are unreadable (None), never zeros.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from goprobe.errors import CoreFileError
from goprobe.process import _libc
from goprobe.process.memory import Memory, _check_span
from goprobe.process.ptrace import ThreadState

PT_LOAD = 1
PT_NOTE = 4
ET_CORE = 4
EM_X86_64 = 62
NT_PRSTATUS = 1
NT_PRPSINFO = 3
NT_AUXV = 6
NT_FILE = 0x46494C45
AT_ENTRY = 9

# struct elf_prstatus on x86_64: pr_pid at 32, pr_reg (user_regs_struct) at 112.
_PRSTATUS_PID = 32
_PRSTATUS_REGS = 112
# struct elf_prpsinfo on x86_64: pr_pid at 24.
_PRPSINFO_PID = 24


class _CoreMemory(Memory):
    """The PT_LOAD segments of a core file, with dropped file-backed pages read from their files."""

    def __init__(self, data: mmap.mmap | bytes, segments: list[tuple[int, int, int, int]],
                 files: list[tuple[int, int, int, str]]) -> None:
        self._data = data
        self._segs = sorted(segments)  # (vaddr, memsz, offset, filesz)
        self._seg_starts = [s[0] for s in self._segs]
        self._files = sorted(files)  # (start, end, file offset, path)
        self._file_starts = [f[0] for f in self._files]
        self._fds: dict[str, int | None] = {}

    def read(self, addr: int, size: int) -> bytes | None:
        if not _check_span(addr, size):
            return None
        if size == 0:
            return b""
        i = bisect.bisect_right(self._seg_starts, addr) - 1
        if i >= 0:  # fast path: wholly inside one segment's dumped bytes
            vaddr, _memsz, offset, filesz = self._segs[i]
            rel = addr - vaddr
            if rel + size <= filesz and offset + rel + size <= len(self._data):
                return self._data[offset + rel:offset + rel + size]
        return self._read_pieces(addr, size)

    def read_many(self, spans: Sequence[tuple[int, int]]) -> list[bytes | None]:
        return [self.read(a, n) for a, n in spans]

    def _read_pieces(self, addr: int, size: int) -> bytes | None:
        out = bytearray()
        cur, end = addr, addr + size
        while cur < end:
            i = bisect.bisect_right(self._seg_starts, cur) - 1
            if i < 0:
                return None
            vaddr, memsz, offset, filesz = self._segs[i]
            rel = cur - vaddr
            if rel >= memsz:
                return None
            if rel < filesz:
                n = min(end - cur, filesz - rel)
                lo = offset + rel
                if lo + n > len(self._data):  # truncated core
                    return None
                out += self._data[lo:lo + n]
            else:
                n = min(end - cur, memsz - rel)
                piece = self._from_files(cur, n)
                if piece is None:
                    return None
                out += piece
            cur += n
        return bytes(out)

    def _from_files(self, addr: int, size: int) -> bytes | None:
        out = bytearray()
        cur, end = addr, addr + size
        while cur < end:
            i = bisect.bisect_right(self._file_starts, cur) - 1
            if i < 0 or cur >= self._files[i][1]:
                return None
            start, fend, fofs, path = self._files[i]
            n = min(end, fend) - cur
            fd = self._fd(path)
            if fd is None:
                return None
            piece = os.pread(fd, n, fofs + cur - start)
            if len(piece) != n:  # past the end of the file (or it changed since the dump)
                return None
            out += piece
            cur += n
        return bytes(out)

    def _fd(self, path: str) -> int | None:
        if path not in self._fds:
            try:
                self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._fds[path] = None
        return self._fds[path]

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds = {}


class CoreFile:
    """An x86_64 ELF core file: ``memory`` (a :class:`Memory`), ``threads`` (:class:`ThreadState` per
    NT_PRSTATUS note, in file order), ``pid``, and ``executable`` (path of the main program, or None).

    Raises :class:`CoreFileError` for a file that is not a readable x86_64 ELF core.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                self._data: mmap.mmap | bytes = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # mmap of an empty file
            raise CoreFileError(f"{self.path}: empty file, not a core dump") from None
        except OSError as exc:
            raise CoreFileError(f"{self.path}: cannot open core file ({exc.strerror}); check the path") from None
        try:
            self._parse()
        except struct.error:
            self.close()
            raise CoreFileError(f"{self.path}: truncated or malformed ELF core file") from None
        except CoreFileError:
            self.close()
            raise

    def _parse(self) -> None:
        d = self._data
        if d[:4] != b"\x7fELF":
            raise CoreFileError(f"{self.path}: not an ELF file; pass a core dump (e.g. from `gcore PID`)")
        if d[4] != 2 or d[5] != 1:
            raise CoreFileError(f"{self.path}: not a 64-bit little-endian ELF core; goprobe reads x86_64 cores")
        e_type, e_machine = struct.unpack_from("<HH", d, 16)
        if e_type != ET_CORE:
            raise CoreFileError(f"{self.path}: ELF type {e_type} is not a core dump (ET_CORE); pass the core "
                                "file, not the executable")
        if e_machine != EM_X86_64:
            raise CoreFileError(f"{self.path}: core of machine {e_machine}; goprobe reads x86_64 cores only")
        (e_phoff,) = struct.unpack_from("<Q", d, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", d, 54)
        segments: list[tuple[int, int, int, int]] = []
        notes: list[tuple[int, bytes, bytes]] = []
        for k in range(e_phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz = struct.unpack_from(
                "<IIQQQQQ", d, e_phoff + k * e_phentsize)
            if p_type == PT_LOAD and p_memsz:
                segments.append((p_vaddr, p_memsz, p_offset, p_filesz))
            elif p_type == PT_NOTE:
                notes.extend(_parse_notes(d[p_offset:p_offset + p_filesz]))

        threads: list[ThreadState] = []
        files: list[tuple[int, int, int, str]] = []
        proc_pid: int | None = None
        entry: int | None = None
        nregs = len(_libc.USER_REGS_FIELDS)
        for ntype, name, desc in notes:
            if name != b"CORE":
                continue
            if ntype == NT_PRSTATUS:
                (tid,) = struct.unpack_from("<i", desc, _PRSTATUS_PID)
                words = struct.unpack_from(f"<{nregs}Q", desc, _PRSTATUS_REGS)
                threads.append(ThreadState(tid, _libc.regs_from_user_regs(words)))
            elif ntype == NT_PRPSINFO:
                (proc_pid,) = struct.unpack_from("<i", desc, _PRPSINFO_PID)
            elif ntype == NT_AUXV:
                for j in range(0, len(desc) - 15, 16):
                    key, val = struct.unpack_from("<QQ", desc, j)
                    if key == AT_ENTRY:
                        entry = val
            elif ntype == NT_FILE:
                files = _parse_nt_file(desc)
        if not threads:
            raise CoreFileError(f"{self.path}: core file has no thread (NT_PRSTATUS) notes")
        self.threads: list[ThreadState] = threads
        self.pid: int = proc_pid if proc_pid else min(t.tid for t in threads)
        self.executable: str | None = _executable(files, entry)
        self.entry: int | None = entry  # the program's run-time entry point (AT_ENTRY), when the core has it
        self.memory = _CoreMemory(self._data, segments, files)

    def close(self) -> None:
        """Release the file mapping and the mapped files opened for reads."""
        mem = getattr(self, "memory", None)
        if mem is not None:
            mem.close()
        if isinstance(self._data, mmap.mmap):
            try:
                self._data.close()
            except BufferError:  # a caller still holds a view of it: leave it to the garbage collector
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_notes(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(type, name, desc) of each note; core notes are 4-byte aligned."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name = bytes(data[pos:pos + namesz]).rstrip(b"\0")
        pos += (namesz + 3) & ~3
        desc = bytes(data[pos:pos + descsz])
        if len(desc) != descsz:
            raise struct.error("note runs past its segment")
        pos += (descsz + 3) & ~3
        out.append((ntype, name, desc))
    return out


def _parse_nt_file(desc: bytes) -> list[tuple[int, int, int, str]]:
    """NT_FILE: count, page size, count × (start, end, offset in pages), then count NUL-ended paths."""
    count, page = struct.unpack_from("<QQ", desc, 0)
    entries = [struct.unpack_from("<QQQ", desc, 16 + 24 * k) for k in range(count)]
    names = desc[16 + 24 * count:].split(b"\0")
    return [(s, e, o * page, os.fsdecode(names[k])) for k, (s, e, o) in enumerate(entries) if k < len(names)]


def _executable(files: list[tuple[int, int, int, str]], entry: int | None) -> str | None:
    # The mapping holding the program's entry point (AT_ENTRY) is the executable; else the lowest mapping,
    # which is the executable for the usual layouts.
    if entry is not None:
        for start, end, _ofs, path in files:
            if start <= entry < end:
                return path
    return min(files)[3] if files else None
