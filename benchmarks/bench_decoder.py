"""Value-stream decoding speed: ValueDecoder (generic shape walk) vs the generated decoder
(``goprobe.decoder_codegen``) on the values of a typical dynamic event.

An event carries four captures: ``n`` (int64), ``name`` (string), ``req`` (``*struct{ID int64; Path string}``,
followed) and ``tags`` (``[]string``, len 2). --events synthetic events are encoded by the interpreter's
ValueEncoder over an in-memory heap, each capture as its own value stream, then decoded one capture at a time
(``decode(data, 0, tid)`` per capture, as a consumer of records would) and, for the generated decoder, also
as one record holding the four streams back to back (``sequence``). Figures are events per second on one core
(best of --runs).

Usage: python benchmarks/bench_decoder.py [--events 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import struct
import time

import attrs

from goprobe.backends.interpreter.values import ValueEncoder
from goprobe.decoder import ValueDecoder
from goprobe.decoder_codegen import compile_decoder
from goprobe.ir import values as V

INT, STRING, REQ, PREQ, STRINGS = range(5)
TABLE = V.TypeTable((
    V.TypeEntry("int64", 8, V.Scalar("int64", 8), None, False),
    V.TypeEntry("string", 16, V.String(), None, False),
    V.TypeEntry("main.Request", 24, V.Struct((V.Field("ID", 0, INT), V.Field("Path", 8, STRING))), None, False),
    V.TypeEntry("*main.Request", 8, V.Pointer(REQ, 24), None, True),
    V.TypeEntry("[]string", 24, V.Slice(STRING, 16), None, False),
))
CAPTURES = (INT, STRING, PREQ, STRINGS)


@attrs.define
class Limits:
    string_bytes: int = 256
    collection_bytes: int = 4096
    min_elements: int = 1
    map_entries: int = 64
    pointer_depth: int = 4
    total_output_bytes: int = 1 << 15


class Heap:
    """A bump allocator over one bytearray (reads are slices of it)."""

    def __init__(self) -> None:
        self.mem = bytearray(16)
        self.base = 0x10000

    def alloc(self, data: bytes) -> int:
        addr = self.base + len(self.mem)
        self.mem += data + b"\0" * (-len(data) % 16)
        return addr

    def read(self, addr: int, size: int) -> bytes | None:
        off = addr - self.base
        if off < 0 or off + size > len(self.mem):
            return None
        return bytes(self.mem[off:off + size])


def string_header(heap: Heap, s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<QQ", heap.alloc(raw) if raw else 0, len(raw))


def encode_events(n: int, seed: int = 1) -> list[list[bytes]]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "users", "orders", "v1", "api", "health", "items"]
    events = []
    for i in range(n):
        heap = Heap()
        path = "/" + "/".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        req = heap.alloc(struct.pack("<q", rng.randrange(1 << 40)) + string_header(heap, path))
        tags = [rng.choice(words), rng.choice(words)]
        elems = heap.alloc(b"".join(string_header(heap, t) for t in tags))
        roots = {
            INT: struct.pack("<q", rng.randrange(-(1 << 31), 1 << 31)),
            STRING: string_header(heap, f"worker-{i % 97}"),
            PREQ: struct.pack("<Q", req),
            STRINGS: struct.pack("<QQQ", elems, 2, 2),
        }
        streams = []
        for tid in CAPTURES:
            enc = ValueEncoder(TABLE, heap, Limits(), rt=None)
            enc.begin_value()
            enc.value_from_bytes(tid, roots[tid])
            streams.append(bytes(enc.out))
        events.append(streams)
    return events


def bench(label: str, fn, n: int, runs: int) -> float:
    best = min(_timed(fn) for _ in range(runs))
    rate = n / best
    print(f"  {label:<52} {rate:>12,.0f} events/s   ({best * 1e6 / n:.2f} µs/event)")
    return rate


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.events
    t0 = time.perf_counter()
    events = encode_events(n)
    records = [b"".join(e) for e in events]
    print(f"{n} events encoded in {time.perf_counter() - t0:.1f} s "
          f"({sum(map(len, records)) / n:.0f} bytes of value stream per event)")

    generic = ValueDecoder(TABLE)
    compiled = compile_decoder(TABLE, roots=CAPTURES)
    event = compiled.sequence(CAPTURES)
    want = [[generic.decode(s, 0, t)[0] for s, t in zip(e, CAPTURES)] for e in events[:1000]]
    assert [[compiled.decode(s, 0, t)[0] for s, t in zip(e, CAPTURES)] for e in events[:1000]] == want
    assert [event(r, 0)[0] for r in records[:1000]] == want

    def per_capture(decode):
        def run():
            i0, i1, i2, i3 = CAPTURES
            for s0, s1, s2, s3 in events:
                decode(s0, 0, i0)
                decode(s1, 0, i1)
                decode(s2, 0, i2)
                decode(s3, 0, i3)
        return run

    def per_record():
        for r in records:
            event(r, 0)

    print("decoding (one core):")
    base = bench("ValueDecoder.decode, one call per capture", per_capture(generic.decode), n, args.runs)
    fast = bench("CompiledDecoder.decode, one call per capture", per_capture(compiled.decode), n, args.runs)
    seq = bench("CompiledDecoder.sequence, one call per event record", per_record, n, args.runs)
    print(f"speed-up: {fast / base:.1f}x per capture, {seq / base:.1f}x per record")


if __name__ == "__main__":
    main()
