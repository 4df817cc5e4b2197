"""The memory a value encoder reads after the pause: what was copied while the target was paused.

A backend that copies values in the pause (``goprobe.ir.copy_plan``) hands the copies over as chunks; reads
are served from them. Reads of the executable's read-only mappings (type descriptors and their names,
generic dictionaries) go to the live process: nothing writes there. A read the copy recorded as failed is
unreadable, as it was in the pause. Any other read raises :class:`NotCopied`: the encoder never sees memory
of the running process as if it were the paused one.
"""

from __future__ import annotations

import bisect


LOW_ADDRESSES = 1 << 16


class NotCopied(Exception):
    """The encoder needed memory the copy does not hold."""

    def __init__(self, addr: int, size: int) -> None:
        super().__init__(f"{size} bytes at {addr:#x} were not copied in the pause")
        self.addr = addr
        self.size = size


class CopiedMemory:
    def __init__(self, chunks: list[tuple[int, bytes]], failed: list[tuple[int, int]],
                 static=None, static_ranges: list[tuple[int, int]] = ()) -> None:
        """*chunks*: (address, bytes) copied; *failed*: (address, size) reads that failed in the pause;
        *static*: a live memory (``read(addr, n) -> bytes | None``) for *static_ranges* [lo, hi)."""
        self._starts: list[int] = []
        self._data: list[bytearray] = []
        for addr, data in sorted(chunks, key=lambda c: c[0]):
            if self._starts and addr <= self._starts[-1] + len(self._data[-1]):
                last = self._data[-1]
                rel = addr - self._starts[-1]
                end = rel + len(data)
                if end > len(last):
                    last.extend(bytes(end - len(last)))
                last[rel:end] = data
            else:
                self._starts.append(addr)
                self._data.append(bytearray(data))
        self._failed = sorted(failed)
        self._failed_starts = [a for a, _n in self._failed]
        self._static = static
        self._static_ranges = sorted(static_ranges)
        self._static_starts = [lo for lo, _hi in self._static_ranges]

    def read(self, addr: int, size: int) -> bytes | None:
        if addr < LOW_ADDRESSES:  # never mapped (vm.mmap_min_addr): e.g. a nil pointer plus an offset
            return None
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            rel = addr - self._starts[i]
            data = self._data[i]
            if rel + size <= len(data):
                return bytes(data[rel:rel + size])
        j = bisect.bisect_right(self._static_starts, addr) - 1
        if j >= 0 and self._static is not None and addr + size <= self._static_ranges[j][1]:
            return self._static.read(addr, size)
        k = bisect.bisect_right(self._failed_starts, addr) - 1
        if k >= 0 and addr < self._failed[k][0] + max(self._failed[k][1], 1):
            return None
        raise NotCopied(addr, size)


def read_only_ranges(pid: int) -> list[tuple[int, int]]:
    """[lo, hi) of the process's file-backed mappings that nobody can write (its executable's code and
    read-only data): safe to read while it runs."""
    out = []
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 6 or "w" in parts[1] or not parts[5].startswith("/"):
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    except OSError:
        pass
    return out
