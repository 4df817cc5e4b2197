"""Memory sources the snapshot interpreter reads through: a live process, a core file, or a test model.

Every source answers ``read(addr, size)`` with the bytes, or None when any byte of the span is unreadable
(unmapped, not dumped): a missing byte must never be mistaken for a zero.
"""

from __future__ import annotations

import bisect
import errno
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from goprobe.errors import (
    ProcessError,
    ProcessExitedError,
    ProcessNotFoundError,
    ProcessPermissionError,
)
from goprobe.process import _libc

_ADDR_LIMIT = 1 << 64
# Bytes per process_vm_readv call: bounds the staging buffer; far above what the interpreter batches.
_BATCH_BYTES = 64 << 20


@runtime_checkable
class Memory(Protocol):
    """A readable address space."""

    def read(self, addr: int, size: int) -> bytes | None:
        """*size* bytes at *addr*, or None if any of them is unreadable."""
        ...

    def read_many(self, spans: Sequence[tuple[int, int]]) -> list[bytes | None]:
        """``[read(addr, size) for addr, size in spans]``, batched where the source can do better."""
        return [self.read(a, n) for a, n in spans]


def _check_span(addr: int, size: int) -> bool:
    """Validate a span; False if it cannot be a user address range (so reads of it give None)."""
    if size < 0:
        raise ValueError(f"negative read size {size} at {addr:#x}")
    return 0 <= addr and addr + size <= _ADDR_LIMIT


class TestMemory(Memory):
    """An address space made of byte segments, for unit tests: ``TestMemory({0x1000: b"..."})``.

    Adjacent segments join, so a read may cross from one into the next, as in a real address space.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, segments: Mapping[int, bytes]) -> None:
        runs: list[tuple[int, bytearray]] = []
        for start, data in sorted(segments.items()):
            if start < 0 or start + len(data) > _ADDR_LIMIT:
                raise ValueError(f"segment at {start:#x} (+{len(data)}) is outside the 64-bit address space")
            if runs and start < runs[-1][0] + len(runs[-1][1]):
                raise ValueError(f"segment at {start:#x} overlaps the one at {runs[-1][0]:#x}")
            if runs and start == runs[-1][0] + len(runs[-1][1]):
                runs[-1][1].extend(data)
            elif data:
                runs.append((start, bytearray(data)))
        self._starts = [s for s, _ in runs]
        self._data = [bytes(d) for _, d in runs]

    def read(self, addr: int, size: int) -> bytes | None:
        if not _check_span(addr, size):
            return None
        if size == 0:
            return b""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        off = addr - self._starts[i]
        data = self._data[i]
        if off + size > len(data):
            return None
        return data[off:off + size]

    def read_many(self, spans: Sequence[tuple[int, int]]) -> list[bytes | None]:
        return [self.read(a, n) for a, n in spans]


class ProcessMemory(Memory):
    """The memory of a live process, read with ``process_vm_readv`` (no ptrace attach needed).

    ``read_many`` puts up to 1024 spans (IOV_MAX) in one system call. The kernel stops a call at the first
    unreadable byte, so after a short read the span that failed is retried on its own and the rest of the
    batch goes on in a new call: one bad span costs one span, not the batch.

    Raises :class:`ProcessNotFoundError` if *pid* does not exist, :class:`ProcessExitedError` when a read
    finds it gone, :class:`ProcessPermissionError` when the kernel refuses access.
    """

    def __init__(self, pid: int) -> None:
        if not isinstance(pid, int) or pid <= 0:
            raise ProcessNotFoundError(f"pid {pid!r} is not a valid process id (give a positive integer)")
        if not os.path.exists(f"/proc/{pid}"):
            raise ProcessNotFoundError(f"pid {pid} does not exist (did it exit?)")
        self.pid = pid

    def read(self, addr: int, size: int) -> bytes | None:
        return self.read_many(((addr, size),))[0]

    def read_many(self, spans: Sequence[tuple[int, int]]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(spans)
        batch: list[tuple[int, int, int]] = []  # (index into out, addr, size)
        batch_bytes = 0
        for i, (addr, size) in enumerate(spans):
            if not _check_span(addr, size):
                continue
            if size == 0:
                out[i] = b""
                continue
            if batch and (len(batch) == _libc.IOV_MAX or batch_bytes + size > _BATCH_BYTES):
                self._read_batch(batch, out)
                batch, batch_bytes = [], 0
            batch.append((i, addr, size))
            batch_bytes += size
        if batch:
            self._read_batch(batch, out)
        return out

    def _read_batch(self, batch: list[tuple[int, int, int]], out: list[bytes | None]) -> None:
        start = 0
        while start < len(batch):
            part = batch[start:]
            buf, got = self._readv(part)
            view = memoryview(buf)
            pos = 0
            for k, (i, _addr, size) in enumerate(part):
                if pos + size > got:
                    # The call stopped inside (or at the start of) this span: confirm it alone, then go on
                    # with the spans after it.
                    if len(part) > 1:
                        one, one_got = self._readv([part[k]])
                        out[i] = bytes(one) if one_got == size else None
                    start += k + 1
                    break
                out[i] = bytes(view[pos:pos + size])
                pos += size
            else:
                return

    def _readv(self, part: list[tuple[int, int, int]]) -> tuple[bytearray, int]:
        """One process_vm_readv of *part* into a single local buffer; returns (buffer, bytes read)."""
        total = sum(size for _, _, size in part)
        buf = bytearray(total)
        flat = []
        for _, addr, size in part:
            flat.append(addr)
            flat.append(size)
        remote = struct.pack(f"<{len(flat)}Q", *flat)
        ffi, lib = _libc.ffi, _libc.lib
        local = ffi.new("struct iovec *", {"iov_base": ffi.from_buffer(buf), "iov_len": total})
        r = lib.process_vm_readv(self.pid, local, 1, ffi.from_buffer("struct iovec[]", remote), len(part), 0)
        if r >= 0:
            return buf, r
        err = ffi.errno
        if err == errno.EFAULT:  # the very first byte was unreadable
            return buf, 0
        if err == errno.ESRCH:
            raise ProcessExitedError(f"pid {self.pid} has exited; its memory is gone (read it while it runs, "
                                     "or take a core file with gcore)")
        if err == errno.EPERM:
            raise ProcessPermissionError(
                f"no permission to read the memory of pid {self.pid}: run as root or as its user with "
                "kernel.yama.ptrace_scope=0, or grant CAP_SYS_PTRACE")
        raise ProcessError(f"process_vm_readv on pid {self.pid} failed: {os.strerror(err)}")
