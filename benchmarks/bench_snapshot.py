"""Snapshot pause and total time against the number of goroutines, beside the latency of
/debug/pprof/goroutine?debug=2 on the same process, for the eBPF and the interpreter backends.

Each target parks N goroutines three frames deep (idleA → idleB → idle), and the snapshot captures one
local in each of the three frames. Figures are medians of --runs, measured side by side in one run.

Usage: python benchmarks/bench_snapshot.py [--go 1.27.3] [--runs 3] [--counts 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from goprobe.snapshot import take_snapshot
from goprobe.testing.gobuild import build

HERE = Path(__file__).resolve().parent
CAPTURES = {"main.idle": ["c"], "main.idleB": ["b"], "main.idleA": ["a"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go", default="1.27.3")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--counts", default="1000,10000,100000")
    args = ap.parse_args()
    # -N -l keeps each frame's local on its stack, so every capture is a real read.
    binary = build(HERE / "goroutines_pprof", args.go, "debug", name="goroutines_pprof")
    print(f"Go {args.go}, {args.runs} runs each (medians); pause = the process is stopped; total = the call")
    print(f"{'goroutines':>10} {'eBPF pause':>11} {'eBPF total':>11} {'interp pause':>13} {'interp total':>13} "
          f"{'stacks-only pause':>18} {'pprof debug=2':>14} {'captured':>9}   (ms)")
    for n in (int(x) for x in args.counts.split(",")):
        proc = subprocess.Popen([str(binary), "-n", str(n)], stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline().split()
            url = f"http://{line[1]}/debug/pprof/goroutine?debug=2"
            pauses, totals, pprofs, bare, epauses, etotals = [], [], [], [], [], []
            captured = 0
            for _ in range(args.runs):
                t = time.perf_counter()
                snap = take_snapshot([proc.pid], CAPTURES, backend="ebpf")["processes"][0]
                etotals.append(time.perf_counter() - t)
                epauses.append(snap["pause_ns"] / 1e9)
                ecaptured = sum(len(f.get("variables", {})) for g in snap["goroutines"] for f in g["frames"])
                t = time.perf_counter()
                snap = take_snapshot([proc.pid], CAPTURES, backend="interp")["processes"][0]
                totals.append(time.perf_counter() - t)
                pauses.append(snap["pause_ns"] / 1e9)
                captured = sum(len(f.get("variables", {})) for g in snap["goroutines"] for f in g["frames"])
                # The interpreter's pause is cut at limits.pause_ms (2 s): at 100k it captures only part.
                assert captured == ecaptured or snap.get("errors"), (captured, ecaptured)
                bare.append(take_snapshot([proc.pid], {}, backend="interp")["processes"][0]["pause_ns"] / 1e9)
                t = time.perf_counter()
                with urllib.request.urlopen(url, timeout=300) as r:
                    r.read()
                pprofs.append(time.perf_counter() - t)
            med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
            print(f"{n:>10} {med(epauses):>11.1f} {med(etotals):>11.1f} {med(pauses):>13.1f} {med(totals):>13.1f} "
                  f"{med(bare):>18.1f} {med(pprofs):>14.1f} {ecaptured:>9} (interp {captured})")
        finally:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
