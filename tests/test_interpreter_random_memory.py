"""The interpreter terminates within its budget on arbitrary memory: a real plan run against random bytes
(random pointers, lengths, map headers, goroutine lists) always finishes, bounded in reads and output."""

from __future__ import annotations

import random
import time

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import build_fixture
from goprobe import GoBinary
from goprobe.backends.interpreter.snapshot import run_snapshot
from goprobe.dwarf.lists import LocationRange
from goprobe.ir.snapshot import compile_snapshot
from goprobe.process import ThreadState
from goprobe.request import Limits

CAPTURES = {"main.maps": ["small", "big", "byStruct", "byIface"], "main.interfaces": ["eStruct", "sStruct"],
            "main.channels": ["buf"], "main.pointers": ["a", "ppp"], "main.stringsAndSlices": ["long", "big"]}


class RandomMemory:
    """Every address is readable and holds pseudo-random bytes, biased towards small numbers and towards
    pointers back into a small window, so the interpreter follows chains, loops and huge lengths."""

    def __init__(self, seed: int, window: int) -> None:
        self.seed = seed
        self.window = window
        self.reads = 0

    def read(self, addr: int, size: int) -> bytes | None:
        self.reads += 1
        if size > 1 << 24:
            return None
        rng = random.Random(hash((self.seed, addr)))
        out = bytearray()
        while len(out) < size:
            r = rng.random()
            if r < 0.3:
                out += rng.randrange(self.window, self.window + 4096).to_bytes(8, "little")
            elif r < 0.6:
                out += rng.randrange(0, 64).to_bytes(8, "little")
            else:
                out += rng.randbytes(8)
        return bytes(out[:size])

    def read_many(self, spans):
        return [self.read(a, n) for a, n in spans]


@pytest.fixture(scope="module")
def plan():
    from conftest import VERSIONS

    with GoBinary(build_fixture("kinds", VERSIONS[-1], "debug")) as b:
        p = compile_snapshot(b, CAPTURES, max_frames=64, max_goroutines=64)
    # Make every function's frames "requested" at any PC, and each variable's first location valid at any PC,
    # so every random frame runs every capture against random memory.
    def widen(c):
        if not c.locations:
            return c
        return attrs.evolve(c, locations=(LocationRange(0, 1 << 63, c.locations[0].location),))

    frames = tuple(attrs.evolve(fp, ranges=((0, 1 << 63),), captures=tuple(widen(c) for c in fp.captures))
                   for fp in p.frames)
    return attrs.evolve(p, frames=frames)


@given(st.integers(min_value=0, max_value=2**32))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_memory_terminates_within_budget(plan, seed):
    mem = RandomMemory(seed, 0x10000)
    # A random allglen asks for up to millions of slots: the pause budget bounds how long they are looked at.
    limits = Limits(total_output_bytes=1 << 20, pause_ms=100)
    threads = [ThreadState(tid=1, regs={"rip": 0x10000, "rsp": 0x10000, "rbp": 0x10100, "fs_base": 0x10010})]
    start = time.monotonic()
    raw = run_snapshot(plan, mem, threads, limits)
    elapsed = time.monotonic() - start
    assert len(raw.goroutines) <= plan.max_goroutines
    for g in raw.goroutines:
        assert len(g.frames) <= plan.max_frames
    # Bounded work: reads grow with goroutines × frames × captures, never with the random lengths.
    assert mem.reads < 2_000_000, mem.reads
    assert elapsed < 120
    captured = sum(len(c.data) for g in raw.goroutines for f in g.frames for _fn, _inl, caps in f.captures
                   for c in caps if c.data)
    assert captured <= len(raw.goroutines) * plan.max_frames * limits.total_output_bytes
