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

Two ways to read: record by record (:meth:`RingBuffer.consume`, :meth:`RingBuffer.poll`), or in *spans*
(:meth:`RingBuffer.take_span`): one copy of every committed record between the consumer and producer
positions, headers included, split later by :func:`split_span`. :class:`RingDrain` (a thread) and
:class:`ProcessDrain` (a helper process) take spans on every wake-up and hold them, so the ring is emptied
at memory speed and a slow decoder works from memory.
"""

from __future__ import annotations

import collections
import fcntl
import mmap
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

from goprobe.backends.ebpf.syscall import BPF_MAP_TYPE_RINGBUF, BpfMap, ffi

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
LENGTH_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFFFFFF  # the hot loops below spell these out as literals


class RingBuffer:
    """A consumer of one ring buffer map. It does not own the map; ``close()`` unmaps and stops polling."""

    def __init__(self, ring: BpfMap) -> None:
        if ring.map_type != BPF_MAP_TYPE_RINGBUF:
            raise ValueError(f"map {ring.name!r} is not a ring buffer (type {ring.map_type})")
        self.map: BpfMap | None = ring
        page = mmap.PAGESIZE
        fd = ring.fd
        cons_mm = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            prod_mm = mmap.mmap(fd, page + 2 * ring.max_entries, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            cons_mm.close()
            raise
        self._attach(cons_mm, prod_mm, ring.max_entries, page)
        self._epoll.register(fd, select.EPOLLIN)

    @classmethod
    def over_memory(cls, consumer: bytearray, producer: bytearray, size: int, data_offset: int) -> RingBuffer:
        """A reader over plain memory laid out like the kernel's mapping (for tests): *consumer* holds the
        consumer position at offset 0, *producer* the producer position at offset 0 and the data area, twice
        in a row, from *data_offset* (a multiple of 8)."""
        self = cls.__new__(cls)
        self.map = None
        self._attach(consumer, producer, size, data_offset)
        return self

    def _attach(self, cons_mm, prod_mm, size: int, data_offset: int) -> None:
        self.size = size
        self._mask = size - 1
        self._page = data_offset
        self._cons_mm = cons_mm
        self._prod_mm = prod_mm
        self._cons = ffi.from_buffer("uint64_t[]", cons_mm)
        self._prod = ffi.from_buffer("uint64_t[]", prod_mm)
        self._words = memoryview(prod_mm).cast("I")  # record headers, read one u32 each
        # Fault the position pages in now: a first touch costs tens of microseconds under nested paging, which
        # would otherwise land wherever the first read happens (inside a snapshot's pause, for one).
        self._prod[0]  # noqa: B018 - a read faults the producer page in
        self._cons[0] = self._cons[0]  # a write faults the consumer page in (writable)
        self._epoll = select.epoll()
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

    def take_span(self, max_bytes: int | None = None) -> bytes:
        """Copy out every committed record now, headers and padding included, as one chunk for
        :func:`split_span`, and free their space in the ring at once; ``b""`` when there is none.

        The headers are walked first (a record still being written ends the span: the ones behind it wait
        too), then the span is copied in one slice — the data area is mapped twice in a row, so a span that
        wraps past its end is contiguous. *max_bytes* caps the chunk (its last record may cross the cap).
        The ``records``/``discarded`` counters do not count spans: :func:`split_span` sees the records."""
        prod = self._prod[0]   # acquire: every record before it has its header written
        start = self._cons[0]
        limit = prod if max_bytes is None else min(prod, start + max_bytes)
        mask = self._mask
        pos = _committed_end(self._words, self._page >> 2, mask, start, limit)
        if pos == start:
            return b""
        off = self._page + (start & mask)
        chunk = self._prod_mm[off: off + (pos - start)]
        self._cons[0] = pos  # after the copy: from here on the producer may overwrite the span
        return chunk

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
        # The views must go before the mmaps they point into.
        self._words.release()
        ffi.release(self._cons)
        ffi.release(self._prod)
        if self.map is not None:
            self._cons_mm.close()
            self._prod_mm.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _committed_end(words, base: int, mask: int, start: int, limit: int) -> int:
    """Position after the committed records from *start* (the first busy record, or the first record at or
    past *limit*, ends them). *words*: the mapping as u32s, the data area from word *base*. Stdlib only: the
    drain process runs it from its source."""
    pos = start
    # The hot loop of a drain (a thread holds the GIL meanwhile): keep it to the bare walk.
    while pos < limit:
        hdr = words[base + ((pos & mask) >> 2)]
        if hdr & 0x80000000:  # BUSY_BIT
            break
        pos += ((hdr & 0x3FFFFFFF) + 15) & -8  # length + header, rounded up to 8
    return pos


def split_span(chunk: bytes) -> Iterator[bytes]:
    """The records of a chunk from :meth:`RingBuffer.take_span`, in order, without the discarded ones."""
    words = memoryview(chunk).cast("I")
    pos = 0
    end = len(chunk)
    while pos < end:
        hdr = words[pos >> 2]
        length = hdr & 0x3FFFFFFF
        if not hdr & 0x40000000:  # DISCARD_BIT
            yield chunk[pos + 8: pos + 8 + length]
        pos += (length + 15) & -8


def count_span(chunk: bytes) -> tuple[int, int]:
    """(records, discarded records) in a chunk from :meth:`RingBuffer.take_span`."""
    words = memoryview(chunk).cast("I")
    pos = n = discarded = 0
    end = len(chunk)
    while pos < end:
        hdr = words[pos >> 2]
        if hdr & DISCARD_BIT:
            discarded += 1
        else:
            n += 1
        pos += ((hdr & LENGTH_MASK) + HEADER_SIZE + 7) & ~7
    return n, discarded


# Room for a few seconds of the fastest probe (~700k records/s of ~190 B) that the decoder (~200k/s) cannot follow.
DEFAULT_BACKLOG_BYTES = 512 << 20


class RingDrain:
    """Empties a :class:`RingBuffer` from a background thread: each wake-up takes every committed record in
    spans (:meth:`RingBuffer.take_span`) and queues them, so the producer rarely finds the ring full however
    slowly the records are decoded; :meth:`get` hands the spans out in order.

    The queue holds at most *backlog_bytes* (one span may overshoot). When it is full the thread stops
    taking until :meth:`get` makes room: the ring then fills and the producer counts its drops, so nothing
    is lost unaccounted; ``stalls`` says how often that happened. :meth:`finish` stops the thread and takes
    what is left in the ring whatever the limit (do it once the producers are gone).

    The thread needs the GIL to take a span: whatever holds the GIL for long (a full garbage collection over
    many live objects, a long C call) delays it, and the ring must hold what comes meanwhile.
    """

    def __init__(self, ring: RingBuffer, *, backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
                 chunk_bytes: int = 4 << 20, idle_s: float = 0.05) -> None:
        if backlog_bytes <= 0:
            raise ValueError("backlog_bytes must be positive")
        self.ring = ring
        self.backlog_limit = backlog_bytes
        self.chunk_bytes = chunk_bytes
        self.idle_s = idle_s
        self.backlog = 0          # bytes taken from the ring and not handed out yet
        self.peak_backlog = 0
        self.taken_bytes = 0
        self.spans = 0            # spans taken
        self.stalls = 0           # times the thread waited because the backlog was full
        self.stalled_s = 0.0
        self.error: BaseException | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._finished = False
        self._thread: threading.Thread | None = None
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        if ring.map is not None:
            # Edge-triggered: one report per kernel wake-up, not a busy loop while any byte is unread.
            self._epoll.register(ring.map.fd, select.EPOLLIN | select.EPOLLET)

    def start(self) -> RingDrain:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="goprobe-ring-drain", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        # Producers wake the reader only now and then (the event programs once per 256 KiB unread), so the
        # timeout catches trickles; after a large take, look again soon in case the ring is small.
        big = max(1, self.ring.size // 4)
        try:
            while not self._stopping:
                took = self._take(limited=True)
                if self._stopping:
                    break
                self._epoll.poll(0.001 if took >= big else self.idle_s)
        except BaseException as e:  # noqa: BLE001 - handed to the reader by get()
            self.error = e
        finally:
            with self._cv:
                self._cv.notify_all()

    def _take(self, limited: bool) -> int:
        """Queue spans until the ring is empty (or, when *limited*, the backlog is full); return bytes taken."""
        total = 0
        while True:
            if limited and self.backlog >= self.backlog_limit:
                with self._cv:
                    if self.backlog >= self.backlog_limit and not self._stopping:
                        self.stalls += 1
                        t = time.monotonic()
                        while self.backlog >= self.backlog_limit and not self._stopping:
                            self._cv.wait()
                        self.stalled_s += time.monotonic() - t
                if self._stopping:
                    return total
            chunk = self.ring.take_span(self.chunk_bytes)
            if not chunk:
                return total
            with self._cv:
                self._chunks.append(chunk)
                self.backlog += len(chunk)
                self.peak_backlog = max(self.peak_backlog, self.backlog)
                self.taken_bytes += len(chunk)
                self.spans += 1
                self._cv.notify_all()
            total += len(chunk)

    def get(self, timeout: float | None = None) -> bytes | None:
        """The next span, waiting up to *timeout* seconds (``None``: until one comes or the drain has
        finished); None if there is none. Re-raises an error of the thread."""
        with self._cv:
            if not self._chunks and not self._finished and self.error is None:
                if timeout is None:
                    while not self._chunks and not self._finished and self.error is None:
                        self._cv.wait()
                else:
                    self._cv.wait(timeout)
            if self._chunks:
                chunk = self._chunks.popleft()
                self.backlog -= len(chunk)
                self._cv.notify_all()  # room for a stalled drain
                return chunk
        if self.error is not None:
            raise self.error
        return None

    def abandon(self) -> int:
        """Drop every span not handed out yet; return how many records (discarded ones excepted) they held."""
        with self._cv:
            out = list(self._chunks)
            self._chunks.clear()
            self.backlog = 0
            self._cv.notify_all()
        return sum(count_span(c)[0] for c in out)

    @property
    def finished(self) -> bool:
        """True after :meth:`finish`: no span will be added any more."""
        return self._finished

    def finish(self) -> None:
        """Stop the thread, then queue whatever is still in the ring (call it after the producers are gone)."""
        self._stop_thread()
        if not self._finished and self.error is None and not self._epoll.closed:
            self._take(limited=False)
        with self._cv:
            self._finished = True
            self._cv.notify_all()

    def _stop_thread(self) -> None:
        self._stopping = True
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            if not self._epoll.closed:
                os.eventfd_write(self._wake, 1)
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop the thread and forget the queue (the ring buffer is not closed: it is not ours)."""
        self._stop_thread()
        with self._cv:
            self._finished = True
            self._chunks.clear()
            self.backlog = 0
        if not self._epoll.closed:
            self._epoll.close()
            os.close(self._wake)

    def __enter__(self) -> RingDrain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- draining from a helper process ------------------------------------------------------------------------------

_MSG = struct.Struct("<IIQQ")  # kind, length, peak backlog, stalls: the header of each message of the drain process
_MSG_SPAN, _MSG_END, _MSG_READY = 1, 2, 3


def _drain_process_main(fd: int, size: int, backlog_limit: int, chunk_bytes: int, idle_s: float) -> None:
    """The drain process: maps the ring behind *fd*, takes spans on each wake-up into its own memory (at most
    *backlog_limit* bytes, then it stops taking) and writes them to stdout as messages (:data:`_MSG` header,
    then the span), after an ``_MSG_READY`` message once the ring is mapped. EOF on stdin: take everything left,
    write it, end with an ``_MSG_END`` message, exit.
    Stdlib only: it runs from its source in a bare interpreter (``python -I -S``), so it starts in
    milliseconds and its GIL and garbage collector are its own."""
    import collections
    import mmap
    import os
    import select
    import signal
    import struct

    # A Ctrl-C or SIGTERM to the process group is for the parent, which then ends the stream through stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    msg = struct.Struct("<IIQQ")
    page = mmap.PAGESIZE
    cons_mm = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    prod_mm = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    # One aligned 8-byte load/store per position (x86-64: the order the protocol needs, as in RingBuffer).
    cons = memoryview(cons_mm).cast("Q")
    prod = memoryview(prod_mm).cast("Q")
    words = memoryview(prod_mm).cast("I")
    base, mask, big = page >> 2, size - 1, max(1, size // 4)
    out = 1
    os.set_blocking(out, False)
    ep = select.epoll()
    ep.register(fd, select.EPOLLIN | select.EPOLLET)
    ep.register(0, select.EPOLLIN)
    ep.register(out, 0)
    os.write(out, msg.pack(3, 0, 0, 0))  # ready (the pipe is empty: this write cannot block)
    queue: collections.deque = collections.deque()
    backlog = peak = stalls = 0
    stalled = finishing = False
    sending = None  # the rest of the message being written
    sending_len = 0
    while True:
        took = 0
        while finishing or backlog < backlog_limit:
            start = cons[0]
            p = prod[0]
            pos = _committed_end(words, base, mask, start, min(p, start + chunk_bytes))
            if pos == start:
                break
            off = page + (start & mask)
            chunk = prod_mm[off: off + pos - start]
            cons[0] = pos
            queue.append(chunk)
            backlog += len(chunk)
            took += len(chunk)
        peak = max(peak, backlog)
        if backlog >= backlog_limit and not finishing:
            stalls += not stalled
            stalled = True
        else:
            stalled = False
        while queue or sending is not None:
            if sending is None:
                chunk = queue.popleft()
                sending = memoryview(msg.pack(1, len(chunk), peak, stalls) + chunk)
                sending_len = len(chunk)
            try:
                n = os.write(out, sending)
            except BlockingIOError:
                break
            sending = sending[n:] if n < len(sending) else None
            if sending is None:
                backlog -= sending_len
        if finishing and sending is None and not queue:
            os.set_blocking(out, True)
            os.write(out, msg.pack(2, 0, peak, stalls))
            return
        ep.modify(out, select.EPOLLOUT if sending is not None else 0)
        for efd, _ in ep.poll(0.001 if took >= big else idle_s):
            if efd == 0 and not finishing:
                if not os.read(0, 4096):
                    finishing = True
                    ep.unregister(0)


class ProcessDrain:
    """Like :class:`RingDrain`, with the draining done by a helper process (``python -I -S`` running
    :func:`_drain_process_main`), which holds the backlog and sends spans through a pipe.

    A thread of this process needs the GIL to take a span, and a full collection of the garbage collector holds
    it for as long as it walks every live object — 100–200 ms with a few hundred thousand events kept — while
    a 16 MiB ring fills in ~130 ms at 600k events/s. The helper process does not wait for us.
    """

    def __init__(self, ring: RingBuffer, *, backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
                 chunk_bytes: int = 4 << 20, idle_s: float = 0.05) -> None:
        if backlog_bytes <= 0:
            raise ValueError("backlog_bytes must be positive")
        if ring.map is None:
            raise ValueError("a drain process needs a ring buffer map")
        self.ring = ring
        self.backlog_limit = backlog_bytes
        self.chunk_bytes = chunk_bytes
        self.idle_s = idle_s
        self.peak_backlog = 0
        self.stalls = 0
        self.taken_bytes = 0
        self.spans = 0
        self.backlog = 0  # not known here: the helper holds it
        self._proc: subprocess.Popen | None = None
        self._poll = select.poll()
        self._eof = False
        self._finished = False

    def start(self) -> ProcessDrain:
        """Start the helper process (once)."""
        if self._proc is not None:
            return self
        import inspect

        src = (inspect.getsource(_committed_end) + inspect.getsource(_drain_process_main)
               + f"_drain_process_main({self.ring.map.fd}, {self.ring.size}, {self.backlog_limit}, "
                 f"{self.chunk_bytes}, {self.idle_s!r})\n")
        self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", src], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(self.ring.map.fd,),
                                      bufsize=0)
        out = self._proc.stdout.fileno()
        try:
            fcntl.fcntl(out, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer, larger reads
        except OSError:
            pass
        self._poll.register(out, select.POLLIN)
        # Wait until it has mapped the ring: from then on nothing the producers write can be lost to its start.
        head = self._read(_MSG.size) if self._poll.poll(30_000) else None
        if head is None or _MSG.unpack(head)[0] != _MSG_READY:
            self._fail("did not start")
        return self

    def _read(self, n: int) -> bytes | None:
        """Exactly *n* bytes from the helper (waiting for them), or None at its end."""
        fd = self._proc.stdout.fileno()
        parts = []
        while n:
            b = os.read(fd, min(n, 1 << 20))
            if not b:
                return None
            parts.append(b)
            n -= len(b)
        return b"".join(parts)

    def get(self, timeout: float | None = None) -> bytes | None:
        """The next span, waiting up to *timeout* seconds (``None``: until one comes or the drain has
        finished); None if there is none. Raises :class:`RuntimeError` if the helper failed."""
        if self._eof or self._proc is None:
            return None
        if not self._poll.poll(-1 if timeout is None else int(timeout * 1000)):
            return None
        head = self._read(_MSG.size)
        if head is None:
            self._eof = True
            self._fail("ended without its last message")
        kind, length, self.peak_backlog, self.stalls = _MSG.unpack(head)
        if kind == _MSG_END:
            self._eof = True
            self._proc.wait()
            return None
        chunk = self._read(length)
        if chunk is None:
            self._eof = True
            self._fail("ended in the middle of a span")
        self.taken_bytes += length
        self.spans += 1
        return chunk

    def _fail(self, what: str) -> None:
        self._eof = True
        self._proc.kill()
        self._proc.wait()
        err = self._proc.stderr.read().decode(errors="replace").strip()
        raise RuntimeError(f"the ring buffer drain process {what} (exit status {self._proc.returncode})"
                           + (f": {err.splitlines()[-1]}" if err else ""))

    @property
    def finished(self) -> bool:
        """True after :meth:`finish`: no span will be added any more."""
        return self._finished

    def finish(self) -> None:
        """Tell the helper to take what is left in the ring and end (call it after the producers are gone);
        :meth:`get` then hands out the rest."""
        if self._proc is not None and not self._finished:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        self._finished = True

    def abandon(self) -> int:
        """Read every span not handed out yet without keeping it; return how many records they held."""
        n = 0
        self.finish()
        while (chunk := self.get(None)) is not None:
            n += count_span(chunk)[0]
        return n

    def close(self) -> None:
        """Stop the helper and forget what it held (the ring buffer is not closed: it is not ours)."""
        self._finished = True
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass

    def __enter__(self) -> ProcessDrain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
