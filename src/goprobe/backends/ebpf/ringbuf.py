"""Read a BPF ring buffer map from user space.

Memory layout of a ring buffer fd (``kernel/bpf/ringbuf.c``): page 0 holds the consumer position (we map
it read-write: we advance it); page 1 holds the producer position, followed by the data area mapped TWICE
in a row, so a record that wraps past the end of the data area reads as one contiguous slice. We map
page 1 + 2×size read-only.

Each record starts with an 8-byte header: a u32 length with ``BPF_RINGBUF_BUSY_BIT`` (still being written)
and ``BPF_RINGBUF_DISCARD_BIT`` (skip it), then a u32 page offset the kernel uses. Records are 8-byte
aligned. A batch reads the producer position once, consumes every committed record and then stores the
consumer position once. Positions are read and written as whole 64-bit words through cffi; on x86-64
(TSO) ordinary aligned loads/stores give the acquire/release order the protocol needs.
"""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Callable

from goprobe.backends.ebpf.syscall import BPF_MAP_TYPE_RINGBUF, BpfMap, ffi

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8


class RingBuffer:
    """A consumer of one ring buffer map. It does not own the map; ``close()`` unmaps and stops polling."""

    def __init__(self, ring: BpfMap) -> None:
        if ring.map_type != BPF_MAP_TYPE_RINGBUF:
            raise ValueError(f"map {ring.name!r} is not a ring buffer (type {ring.map_type})")
        self.map = ring
        self.size = ring.max_entries
        self._mask = self.size - 1
        page = mmap.PAGESIZE
        self._page = page
        fd = ring.fd
        self._cons_mm = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._prod_mm = mmap.mmap(fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._cons_mm.close()
            raise
        self._cons = ffi.from_buffer("uint64_t[]", self._cons_mm)
        self._prod = ffi.from_buffer("uint64_t[]", self._prod_mm)
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)
        self.records = 0      # records handed out so far
        self.discarded = 0    # records the program discarded

    def consume(self) -> list[bytes]:
        """Take every committed record now, without waiting."""
        out: list[bytes] = []
        self._consume(out.append)
        return out

    def consume_into(self, callback: Callable[[bytes], object]) -> int:
        """Pass every committed record to *callback* now, without waiting; return how many."""
        return self._consume(callback)

    def poll(self, timeout: float | None = None) -> list[bytes]:
        """Records available now or, when there are none, those that arrive within *timeout* seconds
        (``None``: wait until some do)."""
        out: list[bytes] = []
        self.poll_into(out.append, timeout)
        return out

    def poll_into(self, callback: Callable[[bytes], object], timeout: float | None = None) -> int:
        """Like :meth:`poll`, passing each record to *callback*; return how many."""
        n = self._consume(callback)
        if n:
            return n
        self._epoll.poll(-1 if timeout is None else timeout)
        return self._consume(callback)

    def _consume(self, sink: Callable[[bytes], object]) -> int:
        prod = self._prod[0]   # one acquire-load of the producer position a batch
        cons = self._cons[0]
        if cons == prod:
            return 0
        mm = self._prod_mm
        base = self._page
        mask = self._mask
        unpack = struct.unpack_from
        taken = dropped = 0
        try:
            while cons < prod:
                off = base + (cons & mask)
                (hdr,) = unpack("<I", mm, off)
                if hdr & BUSY_BIT:
                    break  # not committed yet: the records behind it wait too
                length = hdr & ~(BUSY_BIT | DISCARD_BIT)
                if hdr & DISCARD_BIT:
                    dropped += 1
                else:
                    # The data area is mapped twice in a row, so a wrapping record is one slice.
                    sink(mm[off + HEADER_SIZE: off + HEADER_SIZE + length])
                    taken += 1
                cons += (length + HEADER_SIZE + 7) & ~7
        finally:
            # One release-store a batch frees the space; if *sink* raised, its record comes again.
            self._cons[0] = cons
            self.records += taken
            self.discarded += dropped
        return taken

    def pending(self) -> int:
        """Bytes written by the producer and not consumed yet (headers and padding included)."""
        return self._prod[0] - self._cons[0]

    def fileno(self) -> int:
        """The epoll fd: readable when records are available (for an outer event loop)."""
        return self._epoll.fileno()

    def close(self) -> None:
        if self._epoll.closed:
            return
        self._epoll.close()
        ffi.release(self._cons)  # the cffi views must go before the mmaps they point into
        ffi.release(self._prod)
        self._cons_mm.close()
        self._prod_mm.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

