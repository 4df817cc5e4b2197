"""What the kernel's verifier does with a large dynamic-event request: 100 functions × 20 expressions generated
from a fixture binary (``goprobe.testing.requests.scale_request``), one entry probe per function, each program
compiled and loaded (loading is verification; nothing is attached).

Prints: programs loaded and rejected (with the reason), instructions (total, largest program), instructions the
verifier processed (total, largest), peak verifier states, load time (total, slowest program) and the time to
generate and compile the code, then the most costly programs.

Usage: python benchmarks/bench_verifier.py [--go VERSION] [--fixture calls] [--mode opt|debug]
       [--functions 100] [--expressions 20] [--top 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from goprobe.dwarf.binary import GoBinary
from goprobe.testing import gobuild
from goprobe.testing.requests import DEFAULT_PACKAGES, measure_event_request, scale_request, summarise
from goprobe.testing.toolchains import selected_versions

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--go", default=selected_versions()[-1])
    ap.add_argument("--fixture", default="calls")
    ap.add_argument("--mode", default="opt", choices=sorted(gobuild.MODES))
    ap.add_argument("--functions", type=int, default=100)
    ap.add_argument("--expressions", type=int, default=20)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()

    binary = gobuild.build(FIXTURES / args.fixture, args.go, args.mode)
    packages = ("main", "encoding/json", "bufio", *DEFAULT_PACKAGES[1:])
    with GoBinary(binary) as b:
        t0 = time.perf_counter()
        request = scale_request(b, args.functions, args.expressions, packages)
        t1 = time.perf_counter()
        figures = measure_event_request(b, request)
        t2 = time.perf_counter()
    s = summarise(figures)
    n_expr = sum(map(len, request.values()))
    print(f"{args.fixture} go{args.go} {args.mode}: {len(request)} functions, {n_expr} expressions "
          f"(request generated in {t1 - t0:.1f} s)")
    print(f"programs loaded     {s['programs']}   rejected {s['failed']}")
    print(f"instructions        total {s['insns_total']:,}   largest program {s['insns_max']:,}")
    print(f"verifier processed  total {s['processed_total']:,}   largest {s['processed_max']:,} "
          f"(limit 1,000,000)   peak states {s['peak_states_max']:,}")
    print(f"load (verification) total {s['verify_s_total']:.2f} s   slowest {s['verify_s_max']:.2f} s "
          f"({s['slowest']})")
    print(f"compile + load      {t2 - t1:.1f} s (IR, LLVM and load; "
          f"{t2 - t1 - s['verify_s_total']:.1f} s outside the kernel)")
    for f in figures:
        if f.error:
            print(f"REJECTED {f.function}: {f.error.splitlines()[0]}")
    print(f"\nmost costly to verify (top {args.top}):")
    print(f"  {'function':55s} {'insns':>7s} {'processed':>10s} {'states':>7s} {'load s':>7s}")
    for f in sorted((f for f in figures if not f.error), key=lambda f: -f.processed)[:args.top]:
        print(f"  {f.function[:55]:55s} {f.insns:7d} {f.processed:10d} {f.peak_states:7d} {f.verify_s:7.2f}")
    return 1 if s["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
