"""Values copied in the pause and encoded after it (``goprobe.ir.copy_plan``, the eBPF copier,
``copied_memory``): the copy holds exactly what the encoder reads, or says what it does not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import build_fixture
from ebpf_support import no_leaked_kernel_fds, requires_bpf  # noqa: F401 (autouse fixture)
from goprobe.backends.interpreter.copied_memory import CopiedMemory, NotCopied
from goprobe.dwarf.binary import GoBinary
from goprobe.ir import copy_plan as CP
from goprobe.ir import values as V
from goprobe.request import Limits
from goprobe.snapshot import _as_request, compile_request
from goprobe.testing.fixture_process import running


class _Live:
    def __init__(self, base: int, data: bytes) -> None:
        self.base, self.data = base, data

    def read(self, addr: int, n: int) -> bytes:
        return self.data[addr - self.base:addr - self.base + n]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=64, max_size=512), st.lists(st.tuples(st.integers(0, 511), st.integers(1, 64)), max_size=12),
       st.lists(st.tuples(st.integers(0, 600), st.integers(1, 40)), min_size=1, max_size=30))
def test_copied_memory_serves_exactly_what_was_copied(memory, spans, reads):
    """Reads inside the copied spans (also across spans that touch or overlap) give the memory's bytes; any
    other read raises NotCopied; reads in the static ranges go to the live memory; failed reads are None."""
    base = 0x10000
    chunks = [(base + lo, memory[lo:lo + n]) for lo, n in spans if lo < len(memory)]
    covered = set()
    for addr, data in chunks:
        covered.update(range(addr, addr + len(data)))
    static = (base + len(memory) + 1000, base + len(memory) + 1100)
    failed = [(base + len(memory) + 2000, 16)]
    mem = CopiedMemory(chunks, failed, _Live(base, memory + bytes(3000)), [static])
    for lo, n in reads:
        addr = base + lo
        if all(a in covered for a in range(addr, addr + n)):
            want = memory[lo:lo + n]
            # A span inside one merged run of chunks is served whole
            try:
                assert mem.read(addr, n) == want
            except NotCopied:
                # only when the bytes come from separate runs that do not touch (never for touching ones)
                runs = _runs(covered)
                assert not any(r0 <= addr and addr + n <= r1 for r0, r1 in runs)
        else:
            with pytest.raises(NotCopied):
                mem.read(addr, n)
    assert mem.read(static[0] + 4, 8) == (memory + bytes(3000))[static[0] + 4 - base:static[0] + 12 - base]
    assert mem.read(failed[0][0] + 4, 4) is None


def _runs(addrs: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a in sorted(addrs):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], a + 1)
        else:
            out.append((a, a + 1))
    return out


def test_copy_plan_of_every_fixture_type(go_version):
    """Over the kinds fixture's types (classic maps up to Go 1.23, swiss maps from 1.24): every op leads to a
    type of the plan; pseudo types are as large as the encoder's reads of them; pointer-free types have no
    ops; types the plan covers lead only to covered or pseudo types."""
    from test_ebpf_snapshot import _kinds_request

    binary = build_fixture("kinds", go_version, "debug")
    with GoBinary(binary, use_cache=False) as b, running(binary) as proc:
        plan = compile_request(b, _as_request(_kinds_request(b, proc.truth), None, None))
    table = plan.types
    cp = CP.copy_plan(table, plan.interfaces, Limits())
    n = len(table.entries)
    assert cp.covered, "the fixture's types are copied in the pause"
    kinds_met = set()
    for tid, t in enumerate(cp.types):
        assert t is not None
        for op in t.ops:
            kinds_met.add(op.kind)
            assert op.off + 8 <= t.size, (t.name, op)
            if op.kind not in (CP.IFACE, CP.CLOSURE):
                assert 0 <= op.tid < len(cp.types)
            if tid in cp.covered and op.kind not in (CP.IFACE, CP.CLOSURE) and op.tid < n:
                assert op.tid in cp.covered, (t.name, table[op.tid].name)
        if tid < n:
            sh = table[tid].shape
            if isinstance(sh, V.Scalar):
                assert not t.ops
    for e in table.entries:
        if isinstance(e.shape, (V.SwissMap, V.ClassicMap, V.Chan)):
            names = {t.name: t.size for t in cp.types[n:]}
            want = V.header_size(e.shape)
            assert any(t.size == want for t in cp.types[n:] if t.name in ("map", "chan")), names
    assert {CP.PTR, CP.STR, CP.SLICE, CP.IFACE} <= kinds_met
    # Func values, closures among them, are copied with what the closures captured (DWARF lays contexts out
    # from Go 1.23)
    assert bool(table.closures) == (tuple(int(x) for x in go_version.split(".")[:2]) >= (1, 23))
    assert (CP.CLOSURE in kinds_met) == bool(table.closures)
    assert dict(cp.by_closure_entry) == {c.entry: c.context for c in table.closures}
    assert all(tid in cp.covered for tid, e in enumerate(table.entries) if isinstance(e.shape, V.Func))
    swiss = tuple(int(x) for x in go_version.split(".")[:2]) >= (1, 24)
    assert (CP.SWISS_DIR in kinds_met) == swiss


@requires_bpf
@pytest.mark.parametrize("trigger", ["uprobe", "iterator"])
def test_values_left_to_goprobe_are_copied_in_the_pause(newest_version, build_mode, trigger):
    """Every variable of the kinds fixture through the eBPF backend: the maps, interfaces and other values the
    kernel program leaves to goprobe are copied in the pause (nothing of them is read once the process runs
    again) and decode as the interpreter reads them in the same pause."""
    from goprobe.backends.ebpf.snapshot_session import EbpfSnapshotter, find_trigger
    from goprobe.backends.interpreter.snapshot import run_snapshot, running_goroutines
    from goprobe.ir.snapshot import rebase
    from goprobe.process import pause
    from goprobe.snapshot import decode_snapshot, load_bias
    from test_ebpf_snapshot import _kinds_request

    binary = build_fixture("kinds", newest_version, build_mode)
    with GoBinary(binary, use_cache=False) as b, running(binary) as proc:
        req = _as_request(_kinds_request(b, proc.truth), None, None)
        bias = load_bias(b, proc.pid)
        plan = rebase(compile_request(b, req), bias)
        where = find_trigger(b, f"/proc/{proc.pid}/exe", bias) if trigger == "uprobe" else None
        with EbpfSnapshotter(plan, proc.pid, req.limits, trigger=where) as snapper:
            assert snapper.copy_plan is not None
            with pause(proc.pid) as paused:
                snapper.run(paused)
                running_now = running_goroutines(plan, paused.memory, paused.threads, req.limits)
                fixups = snapper.resolve_fixups(paused.memory, req.limits)
                raw_interp = run_snapshot(plan, paused.memory, paused.threads, req.limits)
                left_in_pause = sum(len(v) for part in fixups for v in part.values())
            raw_ebpf = snapper.raw_snapshot(snapper.records(), running_now, fixups)
            stats = snapper.copy_stats
    assert decode_snapshot(raw_ebpf, plan, b, pid=proc.pid) == decode_snapshot(raw_interp, plan, b, pid=proc.pid)
    assert stats["chunks"] > 0 and not stats["cut"] and not stats["dropped"] and not stats["short"], stats
    assert not raw_ebpf.errors
    # What goprobe still reads in the pause: only captures of types the copy plan does not cover
    assert left_in_pause <= sum(1 for fp in plan.frames for c in fp.captures
                                if c.type is not None and c.type not in snapper.copy_plan.covered) + 8
