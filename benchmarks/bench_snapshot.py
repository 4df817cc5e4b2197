"""Snapshot pause and total time against the number of goroutines and what is captured, for the eBPF and the
interpreter backends, beside the stacks-only pause and /debug/pprof/goroutine?debug=2 on the same process.

Requests (each measured side by side with the stacks-only pause of the same process, in one run):

- ``ints``: N goroutines three frames deep (idleA → idleB → idle), one int local captured in each frame
  (a -N -l build, so every capture is a real read);
- ``struct``: N goroutines parked in ``handle(o *Order)`` (optimised build), capturing ``o.ID``,
  ``o.Items`` (2 small structs), ``o.Status`` (an interface), ``o.Meta`` (a 2-entry map) or ``o`` whole;
- ``rich``: N goroutines ten frames deep (stage0 … stage9, a -N -l build: every value is there to read), 140+
  expressions of every kind
  over the ten functions.

Figures are medians of --runs. The ratio column is the pause over the stacks-only pause of the same backend.

Usage: python benchmarks/bench_snapshot.py [--go 1.27.3] [--runs 5] [--counts 1000,10000]
       [--requests ints,struct,rich] [--backends ebpf,interp]
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
INTS = {"main.idle": ["c"], "main.idleB": ["b"], "main.idleA": ["a"]}
STRUCT = {name: {"main.handle": [expr]} for name, expr in (
    ("o.ID", "o.ID"), ("o.Items", "o.Items"), ("o.Status", "o.Status"), ("o.Meta", "o.Meta"), ("o", "o"))}
_ORDER = ["o", "o.ID", "o.Name", "o.Items", "o.Items[0]", "o.Items[1].SKU", "len(o.Items)", "o.Meta",
          'o.Meta["region"]', "len(o.Meta)", "o.Status", "*o", "i"]
_OWN = {
    "stage0": ["name", "len(name)"],
    "stage1": ["name", "pts", "pts[1]", "len(pts)"],
    "stage2": ["pts", "counts", "counts[5]", "len(pts)"],
    "stage3": ["counts", "err", "v", "len(counts)"],
    "stage4": ["err", "v", "list", "list.Next"],
    "stage5": ["list", "arr", "f", "list.Next.Next"],
    "stage6": ["arr", "f", "ch", "arr[2]"],
    "stage7": ["ch", "fn", "d", "len(ch)"],
    "stage8": ["fn", "d", "words", "ok"],
    "stage9": ["words", "ok", "b", "words[0]"],
}
RICH = {f"main.{fn}": _ORDER + own for fn, own in _OWN.items()}


def _expressions(request: dict) -> int:
    return sum(len(v) for v in request.values())


def _pause(pid: int, request: dict, backend: str) -> tuple[float, float, int]:
    t = time.perf_counter()
    snap = take_snapshot([pid], request, backend=backend)["processes"][0]
    total = time.perf_counter() - t
    captured = sum(len(f.get("variables", {})) for g in snap.get("goroutines", ()) for f in g["frames"])
    return snap["pause_ns"] / 1e6, total * 1000, captured


def measure(binary: Path, shape: str, n: int, requests: dict[str, dict], backends: list[str], runs: int,
            pprof: bool) -> None:
    proc = subprocess.Popen([str(binary), "-n", str(n), "-shape", shape], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        url = f"http://{line[1]}/debug/pprof/goroutine?debug=2"
        for backend in backends:
            _pause(proc.pid, {}, backend)  # warm: plans and programs of this binary compiled once
        for name, request in requests.items():
            for backend in backends:
                bare, pauses, totals, captured = [], [], [], 0
                for _ in range(runs):
                    bare.append(_pause(proc.pid, {}, backend)[0])
                    p, t, captured = _pause(proc.pid, request, backend)
                    pauses.append(p)
                    totals.append(t)
                med = statistics.median
                print(f"{shape:>6} {n:>7} {name:>10} {_expressions(request):>5} {backend:>6} {med(bare):>9.2f} "
                      f"{med(pauses):>9.2f} {med(pauses) / med(bare):>6.1f}x {med(totals):>9.0f} {captured:>9}",
                      flush=True)
        if pprof:
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=300) as r:
                r.read()
            print(f"{shape:>6} {n:>7} {'pprof debug=2':>10} {(time.perf_counter() - t) * 1000:>46.1f} ms")
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go", default="1.27.3")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--requests", default="ints,struct,rich")
    ap.add_argument("--backends", default="ebpf,interp")
    args = ap.parse_args()
    backends = args.backends.split(",")
    debug = build(HERE / "goroutines_pprof", args.go, "debug", name="goroutines_pprof")
    opt = build(HERE / "goroutines_pprof", args.go, "opt", name="goroutines_pprof")
    print(f"Go {args.go}, medians of {args.runs} runs; times in ms; pause = the process is stopped; bare = the "
          "stacks-only pause measured alternately with it")
    print(f"{'shape':>6} {'gs':>7} {'request':>10} {'exprs':>5} {'backend':>6} {'bare':>9} {'pause':>9} "
          f"{'ratio':>7} {'total':>9} {'captured':>9}")
    for n in (int(x) for x in args.counts.split(",")):
        for shape in args.requests.split(","):
            if shape == "ints":
                measure(debug, "ints", n, {"ints": INTS}, backends, args.runs, pprof=True)
            elif shape == "struct":
                measure(opt, "struct", n, STRUCT, backends, args.runs, pprof=False)
            elif shape == "rich":
                measure(debug, "rich", n, {"rich": RICH}, backends, args.runs, pprof=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
