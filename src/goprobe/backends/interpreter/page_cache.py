"""A page cache over a memory source, used while a process is paused.

A snapshot reads many small pieces that cluster on few pages (a goroutine's frames, neighbouring g
structures); fetching whole pages in batched reads turns thousands of system calls into a few dozen.
Pages that cannot be read are remembered as such; reads touching them fall back to an exact read, so
a page-granular failure never hides readable bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from goprobe.backends.interpreter.copied_memory import NotCopied

PAGE = 4096


class PageCache:
    def __init__(self, memory) -> None:
        self.mem = memory
        self.pages: dict[int, bytes | None] = {}
        self.strict = False  # frozen with freeze(strict=True): a page never read raises NotCopied

    def prefetch(self, spans: Iterable[tuple[int, int]]) -> None:
        """Load every page the spans touch, in one batched read (nothing, once frozen)."""
        if self.strict:
            return
        want: dict[int, None] = {}
        for addr, size in spans:
            if size <= 0 or addr < 0:
                continue
            for p in range(addr & ~(PAGE - 1), addr + size, PAGE):
                if p not in self.pages:
                    want[p] = None
        if want:
            for p, data in zip(want, self.mem.read_many([(p, PAGE) for p in want])):
                self.pages[p] = data

    def read(self, addr: int, size: int) -> bytes | None:
        if size <= 0:
            return b"" if size == 0 else None
        if addr < 0 or addr + size > 1 << 64:
            return None
        first = addr & ~(PAGE - 1)
        last = (addr + size - 1) & ~(PAGE - 1)
        if first == last:
            data = self.pages.get(first, b"?")
            if data == b"?":
                if self.strict:
                    raise NotCopied(addr, size)
                self.prefetch(((first, PAGE),))
                data = self.pages[first]
            if data is None:
                return None if self.strict else self.mem.read(addr, size)
            off = addr - first
            return data[off:off + size]
        self.prefetch(((first, last - first + PAGE),))
        chunks = []
        for p in range(first, last + PAGE, PAGE):
            data = self.pages.get(p, b"?")
            if data == b"?":
                raise NotCopied(addr, size)  # (only when frozen strict: prefetch above read it otherwise)
            if data is None:
                return None if self.strict else self.mem.read(addr, size)
            chunks.append(data)
        off = addr - first
        return b"".join(chunks)[off:off + size]

    def read_many(self, spans):
        return [self.read(a, n) for a, n in spans]

    def freeze(self, strict: bool = False) -> None:
        """Stop reading the source: from now on only what was copied can be read. The rest is unreadable, or,
        *strict*, raises :class:`NotCopied` (pages that could not be read in the pause stay unreadable)."""
        self.mem = _NeverCopied() if strict else _Nothing()
        self.strict = strict


class _NeverCopied:
    def read(self, addr: int, size: int):
        raise NotCopied(addr, size)

    def read_many(self, spans):
        spans = list(spans)
        raise NotCopied(*spans[0]) if spans else NotCopied(0, 0)


class _Nothing:
    def read(self, addr: int, size: int) -> None:
        return None

    def read_many(self, spans):
        return [None for _ in spans]
