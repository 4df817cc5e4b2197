"""Dynamic events (eBPF backend) on the `calls` fixture: what a probe costs the target per hit, how fast the
record decoder runs, and whether a live stream keeps up with a function called as fast as one goroutine can.

1. Per-hit cost of ``main.handle`` (a ``//go:noinline`` function), from the fixture's own ``spin S`` count
   (calls in S seconds → ns per call), in alternating rounds (the order rotates each round; medians):
     none            no probe
     empty/perf      a uprobe running an empty BPF program (``return 0``) at the PC goprobe uses (after the
     empty/multi     stack-check prologue), attached through the uprobe PMU and through ``uprobe_multi``
     goprobe/live    goprobe's probe capturing n, name, req.ID, req.Path, tags, while a background thread
                     iterates the EventStream (decoding every event, as ``goprobe events`` does)
     goprobe/after   the same probe, records held by the stream's drain (64 MiB ring) and read after the spin
     filtered        the same probe with ``when='n < 0'``: every hit filtered in the kernel
     base/after      (with --baseline REV) goprobe/after with the event code generator of git revision REV,
                     to compare generator changes side by side in one run
   "added" = ns/call − ns/call of `none`; the ratio goprobe/empty (goal ≤ 1.2×) compares added costs.
   Then passes with the kernel's BPF run-time statistics on (BPF_ENABLE_STATS; --stats-rounds, median) split
   the added cost into time inside the BPF program and the rest (trap, uprobe dispatch) — those passes are not
   part of the timings.
2. EventRecordDecoder.decode over ~100k raw records of that probe (recorded in step 1), on one core (goal
   ≥ 200,000 events/s), as EventRecordDecoder is; if its value decoder is not goprobe.decoder.ValueDecoder,
   the same records also through an EventRecordDecoder given a ValueDecoder (the generic baseline). Also
   the rate at which raw records are split out of the drain's spans without decoding.
3. End to end: one goroutine calls handle as fast as it can (``spin S``) while a background thread streams
   and decodes every event; hits, delivered, dropped (ring full), loss, rates, for 16 MiB and 64 MiB rings
   (goal: zero loss), with three consumers in rotation:
     process   EventStream as it is: a helper process empties the ring in spans into its memory and pipes
               them over; the iterating thread splits and decodes (peak backlog, stalls at its limit shown)
     thread    EventStream(drain="thread"): the same with a drain thread in this process
     inline    the one-thread baseline: one thread takes records one by one from the ring and decodes each
               before it looks at the ring again (what EventStream did before it had a drain)
   Delivered events are checked against the fixture (each n once, in order, values as called).

Timings are noisy on a shared VM; nothing here asserts a timing. "other CPUs" columns show how many CPUs
other processes kept busy meanwhile: a live consumer needs a CPU of its own beside the target's.

Usage: python benchmarks/bench_events.py [--quick] [--go VERSION] [--rounds N] [--spin S] [--e2e-spin S]
       [--steps 1,2,3] [--backlog MIB] [--consumers process,thread,inline] [--rings 16,64] [--baseline REV]
       [--stats-rounds N]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import functools
import hashlib
import itertools
import os
import statistics
import subprocess
import sys
import types
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from goprobe.backends.ebpf import event_codegen
from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.llvm_target import compile_to_object
from goprobe.backends.ebpf.program import load_program
from goprobe.backends.ebpf.uprobe import (
    attach_uprobes,
    uprobe_multi_supported,
    vaddr_to_file_offset,
)
from goprobe.decoder import ValueDecoder
from goprobe.dwarf.binary import GoBinary
from goprobe.backends.ebpf.ringbuf import DEFAULT_BACKLOG_BYTES, split_span
from goprobe.events import EventRecordDecoder, EventStream, stream_events
from goprobe.request import EventRequest
from goprobe.testing.fixture_process import running
from goprobe.testing.gobuild import build
from goprobe.testing.toolchains import selected_versions

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "calls"
FUNCTION = "main.handle"
CAPTURES = ["n", "name", "req.ID", "req.Path", "tags"]
# spin calls handle(&Request{ID: 1, Path: "/spin"}, []string{"a"}, count, "spin") with count = 0, 1, 2, ...
SPIN_VALUES = {"name": "spin", "req.ID": 1, "req.Path": "/spin", "tags": ["a"]}
MIB = 1 << 20
PER_HIT_RING = 64 * MIB

EMPTY_IR = 'define i32 @empty(ptr %ctx) section "uprobe/empty" {\n  ret i32 0\n}\n'


# -- the fixture ------------------------------------------------------------------------------------------------

class CpuMeter:
    """CPU time used by everything else on the machine (not this process, not the fixture): the benchmark's
    figures need two free CPUs (target + consumer), and other jobs on a small VM change them a lot."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, fixture_pid: int) -> None:
        self.fixture_pid = fixture_pid

    @staticmethod
    def _proc_ticks(pid: str) -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            return 0

    def snapshot(self) -> tuple[float, int]:
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        busy = sum(cpu[i] for i in (0, 1, 2, 5, 6))  # user nice system irq softirq
        other = busy - self._proc_ticks("self") - self._proc_ticks(str(self.fixture_pid))
        return time.perf_counter(), other

    def other_cpus(self, before: tuple[float, int]) -> float:
        """CPUs kept busy by others since *before* (0.0 = an idle machine apart from us)."""
        t, other = self.snapshot()
        return max(0.0, (other - before[1]) / self.TICK / max(1e-9, t - before[0]))


class Calls:
    """The running `calls` fixture, driven over stdin/stdout without Python's buffering in the way."""

    def __init__(self, fx) -> None:
        self.fx = fx
        self.pid = fx.pid
        self.meter = CpuMeter(fx.pid)
        self.last_other_cpus = 0.0   # other load during the last spin

    def command(self, text: str, timeout: float = 60.0) -> str:
        return self.fx.command(text, timeout)

    def spin(self, seconds: float) -> int:
        """Calls of handle in *seconds* (the fixture checks the clock every 1000 calls)."""
        before = self.meter.snapshot()
        reply = self.command(f"spin {seconds}")
        self.last_other_cpus = self.meter.other_cpus(before)
        if not reply.startswith("done "):
            raise RuntimeError(f"unexpected reply to spin: {reply!r}")
        return int(reply.split()[1])


# -- BPF run-time statistics (BPF_ENABLE_STATS: on while the returned fd is open) ---------------------------------

BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0


@contextmanager
def bpf_run_time_stats():
    """Yield True while the kernel counts run_time_ns/run_cnt of every BPF program (False if it cannot)."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 4)(BPF_STATS_RUN_TIME, 0, 0, 0)
    fd = libc.syscall(ctypes.c_long(sc.SYS_BPF), ctypes.c_long(BPF_ENABLE_STATS), attr, ctypes.c_ulong(16))
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


def prog_run_ns(prog) -> tuple[int, int]:
    info = prog.info()
    return int(info["run_cnt"]), int(info["run_time_ns"])


# -- another revision's code generator (--baseline) ----------------------------------------------------------------

CODEGEN = "src/goprobe/backends/ebpf/event_codegen.py"


def codegen_at(rev: str) -> types.ModuleType:
    """event_codegen as it is at git revision *rev* (loaded beside the current one)."""
    text = subprocess.run(["git", "show", f"{rev}:{CODEGEN}"], cwd=ROOT, check=True, capture_output=True).stdout
    mod = types.ModuleType(f"event_codegen_{rev}")
    mod.__file__ = f"{rev}:{CODEGEN}"
    sys.modules[mod.__name__] = mod  # attrs classes look their module up
    exec(compile(text, mod.__file__, "exec"), mod.__dict__)
    return mod


@contextmanager
def generator(mod: types.ModuleType):
    """Sessions created meanwhile generate their programs with *mod* (the scratch map keeps the current size,
    which is at least the old one's)."""
    if mod.SCRATCH_SIZE > event_codegen.SCRATCH_SIZE:
        raise RuntimeError("the baseline generator needs a larger scratch area than the current one creates")
    current = event_codegen.generate
    event_codegen.generate = mod.generate
    try:
        yield
    finally:
        event_codegen.generate = current


# -- the configurations of step 1 -------------------------------------------------------------------------------

class Bench:
    def __init__(self, calls: Calls, binary: GoBinary, path: Path, offset: int, spin_s: float) -> None:
        self.calls = calls
        self.binary = binary
        self.path = path
        self.offset = offset
        self.spin_s = spin_s
        self.empty_obj = compile_to_object(EMPTY_IR, name="empty")
        self.records: list[bytes] = []       # raw records of the last goprobe/after run (for step 2)
        self.decoder: EventRecordDecoder | None = None
        self.drain_rate: float | None = None    # records/s split out of drained spans (no decoding)
        self.goprobe_method = "?"               # how goprobe attached its probe
        self.baseline: types.ModuleType | None = None  # --baseline: another revision's event_codegen
        self.notes: list[str] = []

    def request(self, when: str | None = None) -> EventRequest:
        return EventRequest.build(FUNCTION, CAPTURES, when=when)

    def stream(self, request: EventRequest, ring_bytes: int) -> EventStream:
        return stream_events([self.calls.pid], request, binary=self.binary, ring_bytes=ring_bytes)

    # Each run returns (calls counted by the fixture, extra facts); `stats` adds BPF program run time.
    def none(self, stats=False):
        return self.calls.spin(self.spin_s), {}

    def empty(self, method: str, stats=False):
        attach_type = sc.BPF_TRACE_UPROBE_MULTI if method == "uprobe_multi" else 0
        with load_program(self.empty_obj, "uprobe/empty", name="empty", expected_attach_type=attach_type) as prog, \
                attach_uprobes(prog, self.path, [self.offset], [self.calls.pid], method=method):
            before = prog_run_ns(prog)
            count = self.calls.spin(self.spin_s)
            after = prog_run_ns(prog)
        return count, {"runs": after[0] - before[0], "run_ns": after[1] - before[1]}

    def goprobe_live(self, stats=False):
        with self.stream(self.request(), PER_HIT_RING) as s:
            consumer = Consumer(s)
            consumer.start()
            try:
                count = self.calls.spin(self.spin_s)
                c = s.counters()
                prog = s.session.programs[0]
                run = prog_run_ns(prog)
            finally:
                consumer.finish()
        return count, {"hits": c.hits, "dropped": c.dropped, "runs": run[0], "run_ns": run[1]}

    def goprobe_after(self, stats=False):
        with self.stream(self.request(), PER_HIT_RING) as s:
            self.goprobe_method = s.session.attachments[0].method
            count = self.calls.spin(self.spin_s)
            s.session.detach()
            c = s.counters()
            run = prog_run_ns(s.session.programs[0])
            # The stream's drain held the records meanwhile; the last ones come out of the ring now.
            s.drain.finish()
            chunks = list(iter(lambda: s.drain.get(None), None))
            t = time.perf_counter()
            records = [raw for chunk in chunks for raw in split_span(chunk)]
            drain_s = time.perf_counter() - t
            if not stats:
                self.drain_rate = len(records) / drain_s if drain_s > 0 else None
                self.records = records
                self.decoder = s.decoder
        return count, {"hits": c.hits, "dropped": c.dropped, "runs": run[0], "run_ns": run[1]}

    def baseline_after(self, stats=False):
        assert self.baseline is not None
        with generator(self.baseline):
            s = self.stream(self.request(), PER_HIT_RING)
        with s:
            count = self.calls.spin(self.spin_s)
            s.session.detach()
            c = s.counters()
            run = prog_run_ns(s.session.programs[0])
        return count, {"hits": c.hits, "dropped": c.dropped, "runs": run[0], "run_ns": run[1]}

    def filtered(self, stats=False):
        with self.stream(self.request(when="n < 0"), PER_HIT_RING) as s:
            count = self.calls.spin(self.spin_s)
            c = s.counters()
            run = prog_run_ns(s.session.programs[0])
        return count, {"hits": c.hits, "filtered": c.filtered, "runs": run[0], "run_ns": run[1]}


class Consumer(threading.Thread):
    """Iterates an EventStream (every event decoded, nothing printed) until finish(); keeps the n values."""

    def __init__(self, stream: EventStream, keep_n: bool = False) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.keep_n = keep_n
        self.ns: list[int] = []
        self.events = 0
        self.bad_values = 0
        self.error: BaseException | None = None
        self.last_event_at = 0.0

    def run(self) -> None:
        try:
            for ev in self.stream:
                self.take(ev)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e

    def take(self, ev: dict) -> None:
        self.events += 1
        if self.keep_n:
            v = ev["values"]
            self.ns.append(v["n"])
            if any(v[k] != want for k, want in SPIN_VALUES.items()):
                self.bad_values += 1

    @property
    def delivered(self) -> int:
        return self.stream.delivered

    def finish(self, timeout: float = 60.0) -> None:
        self.stream.stop()
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError("the consumer thread did not stop")
        if self.error is not None:
            raise self.error


class InlineConsumer(Consumer):
    """The one-thread baseline: take the records one by one out of the ring (RingBuffer.poll_into) and decode
    them all before looking at the ring again, as EventStream did before it had a drain thread."""

    def __init__(self, stream: EventStream, keep_n: bool = False) -> None:
        super().__init__(stream, keep_n)
        self.decoded = 0
        self._stopping = False

    def run(self) -> None:
        s = self.stream
        ring = s.session.ring
        decode = s.decoder.decode
        pending: list[bytes] = []
        try:
            while True:
                stop = self._stopping
                if stop:  # the probes go first, then the last records come out of the ring
                    s.session.detach()
                    ring.consume_into(pending.append)
                else:
                    ring.poll_into(pending.append, 0.05)
                for raw in pending:
                    self.take(decode(raw))
                    self.decoded += 1
                pending.clear()
                if stop:
                    break
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e

    @property
    def delivered(self) -> int:
        return self.decoded

    def finish(self, timeout: float = 60.0) -> None:
        self._stopping = True
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError("the consumer thread did not stop")
        if self.error is not None:
            raise self.error


# -- steps --------------------------------------------------------------------------------------------------------

def per_hit(bench: Bench, rounds: int, methods: list[str], stats_rounds: int = 1) -> dict[str, dict]:
    configs = {"none": bench.none}
    for m in methods:
        configs[f"empty/{'perf' if m == 'perf' else 'multi'}"] = functools.partial(bench.empty, m)
    configs.update({"goprobe/live": bench.goprobe_live, "goprobe/after": bench.goprobe_after,
                    "filtered": bench.filtered})
    if bench.baseline is not None:
        configs["base/after"] = bench.baseline_after
    names = list(configs)
    ns: dict[str, list[float]] = {n: [] for n in names}
    facts: dict[str, list[dict]] = {n: [] for n in names}
    bench.calls.spin(min(0.2, bench.spin_s))  # warm-up
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            count, extra = configs[name]()
            ns[name].append(bench.spin_s * 1e9 / count)
            extra["count"] = count
            extra["other_cpus"] = bench.calls.last_other_cpus
            facts[name].append(extra)
        print(f"  round {r + 1}/{rounds}: " + "  ".join(f"{n} {ns[n][-1]:.0f}" for n in names) + " ns/call; other "
              f"CPUs {max(facts[n][-1]['other_cpus'] for n in names):.1f} at most", flush=True)
    # Passes with BPF statistics on (median): time spent inside each program per hit.
    in_bpf_runs: dict[str, list[float]] = {n: [] for n in names}
    with bpf_run_time_stats() as on:
        if on:
            for r in range(stats_rounds):
                order = names[1:][r % (len(names) - 1):] + names[1:][:r % (len(names) - 1)]
                for name in order:
                    _, extra = configs[name](stats=True)
                    if extra.get("runs"):
                        in_bpf_runs[name].append(extra["run_ns"] / extra["runs"])
        else:
            bench.notes.append("BPF_ENABLE_STATS failed: no in-BPF time breakdown")
    in_bpf = {n: statistics.median(v) if v else None for n, v in in_bpf_runs.items()}
    base = statistics.median(ns["none"])
    out = {}
    for name in names:
        med = statistics.median(ns[name])
        out[name] = {"ns": med, "added": med - base, "min": min(ns[name]), "max": max(ns[name]),
                     "in_bpf": in_bpf[name], "facts": facts[name],
                     "other_cpus": statistics.median(f["other_cpus"] for f in facts[name])}
        for f in facts[name]:
            if "hits" in f and f["hits"] != f["count"]:
                bench.notes.append(f"{name}: probe hits {f['hits']} != calls {f['count']}")
            if f.get("dropped"):
                bench.notes.append(f"{name}: {f['dropped']} records dropped during a per-hit run")
    return out


def value_decoder_name(dec: EventRecordDecoder) -> str:
    t = type(dec.values)
    return f"{t.__module__}.{t.__qualname__}"


def decoder_throughput(bench: Bench, n_records: int, runs: int) -> dict:
    """EventRecordDecoder as it is; beside it, when it does not use goprobe.decoder.ValueDecoder (the generic
    decoder), the same EventRecordDecoder with a ValueDecoder put in, as the baseline."""
    recs = bench.records
    if not recs or bench.decoder is None:
        return {"error": "no records recorded"}
    cycled = recs[:n_records] if len(recs) >= n_records else (recs * (n_records // len(recs) + 1))[:n_records]
    dec = bench.decoder
    decoders = {"EventRecordDecoder": dec}
    if not isinstance(dec.values, ValueDecoder):
        generic = copy.copy(dec)
        generic.values = ValueDecoder(dec.plan.types, dec._func_name, dec._type_name)
        decoders["  with ValueDecoder"] = generic
    # correctness first (not timed): every record decodes to what spin passed
    checks = {}
    for name, d in decoders.items():
        bad = 0
        ns = []
        for raw in recs:
            v = d.decode(raw)["values"]
            ns.append(v["n"])
            bad += any(v[k] != want for k, want in SPIN_VALUES.items())
        checks[name] = bad == 0 and ns == list(range(len(ns)))
    rates: dict[str, list[float]] = {name: [] for name in decoders}
    before = bench.calls.meter.snapshot()
    for _ in range(runs):
        for name, d in decoders.items():
            decode = d.decode
            t = time.perf_counter()
            for raw in cycled:
                decode(raw)
            rates[name].append(len(cycled) / (time.perf_counter() - t))
    sizes = sorted(len(r) for r in recs)
    return {"records": len(cycled), "distinct": len(recs), "record_bytes": sizes[len(sizes) // 2],
            "value_decoder": value_decoder_name(dec), "other_cpus": bench.calls.meter.other_cpus(before),
            "drain_rate": bench.drain_rate,
            "decoders": {name: {"median": statistics.median(r), "best": max(r), "correct": checks[name]}
                         for name, r in rates.items()}}


def end_to_end(calls: Calls, binary: GoBinary, ring_bytes: int, spin_s: float, consumer_kind: str,
               backlog_bytes: int) -> dict:
    """One spin while *consumer_kind* ("process", "thread" or "inline") streams; then wait until every record
    the kernel took is decoded. Loss counts against the probe's hits: hits = delivered + dropped exactly."""
    drained = consumer_kind != "inline"
    with stream_events([calls.pid], EventRequest.build(FUNCTION, CAPTURES), binary=binary,
                       ring_bytes=ring_bytes, backlog_bytes=backlog_bytes,
                       drain="process" if consumer_kind == "process" else "thread") as s:
        if drained:
            consumer: Consumer = Consumer(s, keep_n=True)
        else:
            s.drain.close()  # nothing was written yet: the baseline reads the ring itself
            consumer = InlineConsumer(s, keep_n=True)
        consumer.start()
        try:
            t0 = time.perf_counter()
            before = calls.meter.snapshot()
            count = calls.spin(spin_s)
            t_spin = time.perf_counter() - t0
            delivered_at_spin_end = consumer.delivered
            # Let the consumer catch up with what the kernel put in the ring, then stop.
            deadline = time.monotonic() + 300
            caught_up = False
            while time.monotonic() < deadline:
                c = s.counters()
                if consumer.delivered + s.decode_errors >= c.delivered:
                    caught_up = True
                    break
                time.sleep(0.01)
            t_done = time.perf_counter() - t0
            other = calls.meter.other_cpus(before)
        finally:
            consumer.finish()
        c = s.counters()
        summary = s.summary()
    ns = consumer.ns
    delivered = consumer.delivered
    distinct = len(set(ns))
    return {"consumer": consumer_kind, "ring_mib": ring_bytes // MIB, "calls": count, "hits": c.hits,
            "kernel_delivered": c.delivered, "delivered": delivered, "dropped_full": c.dropped_full,
            "dropped": c.dropped, "decode_errors": summary["decode_errors"], "spin_s": t_spin, "done_s": t_done,
            "hit_rate": c.hits / spin_s, "delivered_rate": delivered / t_done,
            "during_spin_rate": delivered_at_spin_end / t_spin,
            "loss": (c.hits - delivered) / c.hits if c.hits else 0.0, "caught_up": caught_up,
            "backlog_peak": summary["backlog_peak_bytes"] if drained else None,
            "stalls": summary["backlog_stalls"] if drained else None,
            "duplicates": len(ns) - distinct, "out_of_range": sum(1 for n in ns if not 0 <= n < count),
            "out_of_order": sum(1 for a, b in itertools.pairwise(ns) if b <= a), "bad_values": consumer.bad_values,
            "other_cpus": other}


def source_fingerprint() -> str:
    """Short hashes of the sources measured here (they change under active development)."""
    src = ROOT / "src" / "goprobe"
    out = []
    for rel in ("events.py", "decoder.py", "decoder_codegen.py", "backends/ebpf/event_codegen.py",
                "backends/ebpf/event_session.py", "backends/ebpf/ringbuf.py"):
        p = src / rel
        if p.exists():
            out.append(f"{Path(rel).stem}={hashlib.sha1(p.read_bytes()).hexdigest()[:7]}")
    return " ".join(out)


# -- main -----------------------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (~30 s): fewer rounds, shorter spins")
    ap.add_argument("--go", default=None, help="Go version of the fixture build (default: the newest selected)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds of step 1 (default 7; quick 2)")
    ap.add_argument("--spin", type=float, default=None, help="seconds per spin in step 1 (default 0.3; quick 0.2)")
    ap.add_argument("--decode", type=int, default=None, help="records decoded per run in step 2 (100000; quick 30000)")
    ap.add_argument("--e2e-spin", type=float, default=None, help="seconds of spin in step 3 (default 2; quick 0.5)")
    ap.add_argument("--e2e-runs", type=int, default=None, help="runs per ring size in step 3 (default 2; quick 1)")
    ap.add_argument("--consumers", default="process,thread,inline", help="consumers of step 3, rotated per run")
    ap.add_argument("--rings", default="16,64", help="ring sizes of step 3 in MiB (default 16,64)")
    ap.add_argument("--stats-rounds", type=int, default=1,
                    help="passes with BPF run-time statistics on in step 1 (median in-BPF time; default 1)")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="step 1 also runs goprobe/after with the event code generator of git revision REV")
    ap.add_argument("--steps", default="1,2,3", help="which steps to run (default 1,2,3; step 2 needs step 1)")
    ap.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG_BYTES // MIB,
                    help=f"EventStream backlog limit in MiB in step 3 (default {DEFAULT_BACKLOG_BYTES // MIB})")
    args = ap.parse_args()
    q = args.quick
    rounds = args.rounds or (2 if q else 7)
    spin_s = args.spin or (0.2 if q else 0.3)
    n_decode = args.decode or (30_000 if q else 100_000)
    decode_runs = 2 if q else 3
    e2e_spin = args.e2e_spin or (0.5 if q else 2.0)
    e2e_runs = args.e2e_runs or (1 if q else 2)
    version = args.go or selected_versions()[-1]
    steps = {int(x) for x in args.steps.split(",") if x.strip()}
    if 2 in steps:
        steps.add(1)  # step 2 decodes the records step 1 recorded

    started = time.perf_counter()
    path = build(FIXTURE, version, "opt")
    methods = ["perf"] + (["uprobe_multi"] if uprobe_multi_supported() else [])
    with GoBinary(path) as binary:
        site = binary.code.for_function(binary.function(FUNCTION)).prologue_end
        offset = vaddr_to_file_offset(path, site)
        print(f"Go {version} opt build of tests/fixtures/calls; probe {FUNCTION} at {site:#x} (file +{offset:#x}, "
              f"after the stack check); captures {', '.join(CAPTURES)}")
        print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs; {'quick' if q else 'full'} run; "
              f"sources: {source_fingerprint()}")
        with running(path) as fx:
            calls = Calls(fx)
            bench = Bench(calls, binary, path, offset, spin_s)
            if args.baseline:
                bench.baseline = codegen_at(args.baseline)

            hit: dict[str, dict] = {}
            dec: dict = {"error": "step 2 not run"}
            e2e: list[dict] = []
            if 1 in steps:
                print(f"\n1. per-hit cost: {rounds} alternating rounds of 'spin {spin_s}' per configuration")
                hit = per_hit(bench, rounds, methods, args.stats_rounds)

            if 2 in steps:
                print(f"\n2. decoder: EventRecordDecoder.decode over {n_decode} records, {decode_runs} runs")
                dec = decoder_throughput(bench, n_decode, decode_runs)
            if 2 in steps and "error" not in dec:
                print(f"  {dec['distinct']} distinct records of {dec['record_bytes']} B; EventRecordDecoder's value "
                      f"decoder: {dec['value_decoder']}")
                for name, d in dec["decoders"].items():
                    print(f"  {name.strip()}: {d['median']:,.0f} events/s median, {d['best']:,.0f} best "
                          f"({1e6 / d['median']:.1f} µs/event)")

            if 3 in steps:
                print(f"\n3. end to end: 'spin {e2e_spin}' while a thread streams and decodes every event "
                      f"(backlog limit {args.backlog} MiB)")
                calls.spin(0.2)  # warm-up
                kinds = [k.strip() for k in args.consumers.split(",") if k.strip()]
                for run in range(e2e_runs):
                    for ring in (int(r) * MIB for r in args.rings.split(",")):
                        for kind in kinds[run % len(kinds):] + kinds[:run % len(kinds)]:
                            r = end_to_end(calls, binary, ring, e2e_spin, kind, args.backlog * MIB)
                            e2e.append(r)
                            print(f"  {kind:<7} ring {r['ring_mib']} MiB: {r['hits']} hits, {r['delivered']} "
                                  f"delivered, {r['dropped_full']} dropped (ring full), caught up after "
                                  f"{r['done_s']:.1f} s", flush=True)
            remaining_calls = calls.spin(0.05)  # the fixture still runs after every probe is gone

    # -- the table --------------------------------------------------------------------------------------------
    print("\n" + "=" * 100)
    if hit:
        print_per_hit(hit, bench, rounds, spin_s)
    if 2 in steps:
        print_decoder(dec)
    if e2e:
        print_end_to_end(e2e, bench, e2e_spin)
    if 3 in steps and remaining_calls <= 0:
        bench.notes.append("the fixture did not spin after the probes were removed")
    for note in dict.fromkeys(bench.notes):
        print(f"note: {note}")
    print("other CPUs = CPUs kept busy by other processes during the measurement (this machine has "
          f"{os.cpu_count()}; the target and a live consumer need one each)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def print_per_hit(hit: dict, bench: Bench, rounds: int, spin_s: float) -> None:
    print(f"Per hit of {FUNCTION} (medians of {rounds} rounds of spin {spin_s} s; added = minus 'none'; "
          "in-BPF = program run time, separate pass)")
    print(f"{'configuration':<15} {'ns/call':>9} {'added ns':>9} {'range ns':>15} {'in-BPF ns':>10} "
          f"{'rest ns':>8} {'vs empty/perf':>14} {'other CPUs':>11}")
    print(f"(goprobe attached its probe with {bench.goprobe_method}; rest = added − in-BPF: trap, uprobe "
          "dispatch, ring wake-ups, contention)")
    ref = hit.get("empty/perf", {}).get("added")
    for name, h in hit.items():
        ib = h["in_bpf"]
        ib_s = "" if ib is None else f"{ib:.0f}"
        rest_s = "" if ib is None else f"{h['added'] - ib:.0f}"
        ratio = f"{h['added'] / ref:.2f}x" if ref and name != "none" else ""
        print(f"{name:<15} {h['ns']:>9.1f} {h['added']:>9.1f} {h['min']:>7.0f}-{h['max']:<7.0f} "
              f"{ib_s:>10} {rest_s:>8} "
              f"{ratio:>14} {h['other_cpus']:>11.2f}")
    if ref:
        live, after = hit["goprobe/live"]["added"] / ref, hit["goprobe/after"]["added"] / ref
        print(f"goprobe/empty ratio: {live:.2f}x live consumer, {after:.2f}x drained after (goal <= 1.20x)")
        if "base/after" in hit:
            print(f"baseline generator ({bench.baseline.__file__.split(':')[0]}): "
                  f"{hit['base/after']['added'] / ref:.2f}x drained after")


def print_decoder(dec: dict) -> None:
    if "error" in dec:
        print(f"Decoder: {dec['error']}")
        return
    print(f"Decoder over {dec['records']} records, one core (goal >= 200,000 events/s; other CPUs "
          f"{dec['other_cpus']:.2f}); EventRecordDecoder uses {dec['value_decoder']}:")
    for name, d in dec["decoders"].items():
        print(f"  {name:<20} {d['median']:>9,.0f} events/s median {d['best']:>9,.0f} best  "
              f"values {'ok' if d['correct'] else 'WRONG'}")
    if dec["drain_rate"]:
        print(f"  (raw records split out of the drain's spans without decoding, split_span: "
              f"{dec['drain_rate']:,.0f}/s)")


def print_end_to_end(e2e: list[dict], bench: Bench, e2e_spin: float) -> None:
    print(f"End to end (spin {e2e_spin} s, one goroutine calling as fast as it can; loss = (hits − delivered) / "
          "hits; deliv/s = delivered / time until caught up, i.e. the decoder's rate; during = delivered / s "
          "while the spin ran; backlog = peak bytes held by the drain, stalls = times it paused at the backlog limit):")
    print(f"{'consumer':<8} {'ring':>6} {'hits':>9} {'delivered':>10} {'dropped':>9} {'loss':>7} {'hits/s':>9} "
          f"{'deliv/s':>9} {'during':>9} {'caught up':>10} {'backlog':>9} {'stalls':>6} {'checks':>7} "
          f"{'other CPUs':>10}")
    for r in e2e:
        ok = not (r["duplicates"] or r["out_of_range"] or r["out_of_order"] or r["bad_values"] or r["decode_errors"]
                  or r["hits"] != r["calls"] or r["kernel_delivered"] + r["dropped"] != r["hits"]
                  or r["delivered"] != r["kernel_delivered"] or not r["caught_up"])
        backlog = "" if r["backlog_peak"] is None else f"{r['backlog_peak'] / MIB:.0f}MiB"
        stalls = "" if r["stalls"] is None else str(r["stalls"])
        print(f"{r['consumer']:<8} {r['ring_mib']:>3}MiB {r['hits']:>9} {r['delivered']:>10} {r['dropped_full']:>9} "
              f"{r['loss']:>6.1%} {r['hit_rate']:>9,.0f} {r['delivered_rate']:>9,.0f} {r['during_spin_rate']:>9,.0f} "
              f"{r['done_s']:>9.1f}s {backlog:>9} {stalls:>6} {'ok' if ok else 'FAIL':>7} {r['other_cpus']:>10.2f}")
        if not ok:
            bench.notes.append(f"end to end {r['consumer']} {r['ring_mib']} MiB: " + ", ".join(
                f"{k}={r[k]}" for k in ("calls", "hits", "kernel_delivered", "delivered", "dropped", "duplicates",
                                        "out_of_range", "out_of_order", "bad_values", "decode_errors",
                                        "caught_up")))


if __name__ == "__main__":
    sys.exit(main())
