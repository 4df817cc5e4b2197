"""goprobe on a real program nobody here wrote: `go tool trace` (cmd/trace, built from each release's own
source with default flags) serving a trace. Per release:

- types: every named DWARF type laid out (table size, build time, degraded types by reason);
- inspect: every function with code (reports, refusals, time);
- snapshot: every parameter and local of every function on the goroutines' stacks, with both backends (plan
  and compile time, pause, values read / unavailable by reason);
- events: entry probes capturing every parameter on a sample of functions (programs loaded or refused by
  reason, instructions, generate+compile+verify time per program).

Usage: python benchmarks/bench_real.py [--go 1.21.13,1.27.3] [--functions 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import time
from pathlib import Path

from goprobe import open_binary
from goprobe.errors import GoprobeError
from goprobe.inspect import function_report
from goprobe.ir import values as V
from goprobe.snapshot import take_snapshot
from goprobe.testing.corpus import request_for_stacks, trace_server
from goprobe.testing.requests import measure_event_request
from goprobe.testing.toolchains import selected_versions


def _types(b) -> str:
    t = time.perf_counter()
    tb = V.TypeTableBuilder(b)
    for off in b.types.name_index().values():
        tb.add(b.types.get(off))
    table = tb.build()
    took = time.perf_counter() - t
    reasons = collections.Counter(e.shape.reason.split(" (")[0] for e in table.entries
                                  if isinstance(e.shape, V.Opaque) and e.shape.reason)
    return f"{len(table.entries)} types in {took:.1f} s; degraded: {dict(reasons) or 'none'}"


def _inspect(b) -> str:
    t = time.perf_counter()
    ok = refused = 0
    for name in sorted(set(b.function_names())):
        try:
            function_report(b, name)
            ok += 1
        except GoprobeError:
            refused += 1
    return f"{ok} functions reported, {refused} refused with a reason, {time.perf_counter() - t:.1f} s"


def _snapshot(pid: int, b, runs: int) -> list[str]:
    req = request_for_stacks(pid, b)
    lines = [f"request: {sum(map(len, req.values()))} variables of {len(req)} functions on the stacks"]
    for backend in ("interp", "ebpf"):
        totals, pauses, first = [], [], None
        for _ in range(runs):
            t = time.perf_counter()
            proc = take_snapshot([pid], req, backend=backend)["processes"][0]
            totals.append(time.perf_counter() - t)
            pauses.append(proc["pause_ns"] / 1e6)
            first = first or proc
        values = [v for g in first["goroutines"] for f in g["frames"] for v in (f.get("variables") or {}).values()]
        why = collections.Counter(v["@unavailable"].split(" (")[0][:50] for v in values
                                  if isinstance(v, dict) and "@unavailable" in v)
        read = len(values) - sum(why.values())
        lines.append(f"{backend:>6}: first call {totals[0]:.1f} s (plan, compile, load), then median "
                     f"{statistics.median(totals[1:] or totals):.2f} s; pause median {statistics.median(pauses):.2f} "
                     f"ms; {read} of {len(values)} values read; unavailable: {dict(why.most_common(5))}")
    bare = [take_snapshot([pid], {}, backend="ebpf")["processes"][0]["pause_ns"] / 1e6 for _ in range(runs)]
    lines.append(f"stacks only (eBPF): pause median {statistics.median(bare):.2f} ms")
    return lines


def _events(b, n: int) -> str:
    names = sorted({name for name in b.function_names() if "." in name and not name.startswith("type:")})
    request = {}
    for name in random.Random(19).sample(names, min(n, len(names))):
        request[name] = sorted({v.name for fn in b.functions(name) for v in fn.variables
                                if v.role == "param" and v.name and "." not in v.name and v.name[0] != "~"})
    t = time.perf_counter()
    figures = measure_event_request(b, request)
    took = time.perf_counter() - t
    loaded = [f for f in figures if f.error is None]
    why = collections.Counter(f.error.split(" '")[0][:40] for f in figures if f.error)
    insns = [f.insns for f in loaded]
    return (f"{len({f.function for f in loaded})} of {len(request)} functions' programs loaded "
            f"({took / max(1, len(request)):.2f} s each, median {statistics.median(insns or [0])} insns); refused: "
            f"{dict(why)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go", default=",".join(selected_versions()))
    ap.add_argument("--functions", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for version in args.go.split(","):
        print(f"== cmd/trace, Go {version}", flush=True)
        with trace_server(version) as proc, open_binary(proc.binary) as b:
            print(f"  binary: {Path(proc.binary).stat().st_size >> 20} MiB")
            print(f"  types: {_types(b)}", flush=True)
            print(f"  inspect: {_inspect(b)}", flush=True)
            for line in _snapshot(proc.pid, b, args.runs):
                print(f"  snapshot {line}", flush=True)
            print(f"  events: {_events(b, args.functions)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
