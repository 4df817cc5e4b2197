"""How often the location checks fire on real optimised code, and what share of values they leave right.

- Real code: every function of a large binary built from a release's own source (default: `cmd/compile`,
  ~585k DIEs; `--binary cmd/trace` is quicker): for each parameter and local with a location, its PC ranges
  before the checks and what became of them: kept as the debug info says, pieces that do not add up to the
  type (rejected, then rebuilt from the compiler's split parts where they say where each part is), a
  whole-value location where only one part is (the same), and the call sites where a pointer the debug info
  still names is dead in the runtime's liveness map.
- Fixtures: the `fidelity` fixture per release, build mode and backend: right / unavailable / wrong shares
  against the values the program recorded (wrong must be 0; the test suite demands it).

Usage: python benchmarks/bench_fidelity.py [--go 1.21.13,1.27.3] [--binary cmd/compile] [--functions N]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

import attrs

from goprobe import open_binary
from goprobe.dwarf import expressions as E
from goprobe.dwarf.expressions import repair_pieces
from goprobe.ir.liveness import DEAD, judge_for
from goprobe.ir.location_checks import BROKEN_PIECES, BROKEN_WHOLE, check_variable
from goprobe.testing.fidelity import fidelity_verdicts
from goprobe.testing.gobuild import MODES, build, build_std
from goprobe.testing.toolchains import selected_versions

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "fidelity"


def _reasons(loc: E.Location) -> set[str]:
    out = set()
    for p in loc:
        if p.kind == E.UNAVAILABLE and p.reason:
            out.add(p.reason.split(";")[0])
    return out


def real_code(version: str, target: str, sample: int | None) -> str:
    path = build_std(version, target)
    t0 = time.perf_counter()
    counts: collections.Counter = collections.Counter()
    with open_binary(path) as b:
        names = sorted(set(b.function_names()))
        if sample and sample < len(names):
            names = random.Random(1).sample(names, sample)
        judge = judge_for(b)
        for name in names:
            try:
                fns = b.functions(name)
            except Exception:  # noqa: BLE001 - a benchmark counts what it cannot read
                counts["functions unreadable"] += 1
                continue
            for fn in fns:
                counts["functions"] += 1
                for v in fn.variables:
                    if not v.locations or v.name.startswith((".", "~")):
                        continue
                    t = b.type_at(v.type_offset)
                    size = 8 if v.escaped else t.size
                    counts["variables"] += 1
                    counts["ranges"] += len(v.locations)
                    repaired = tuple(attrs.evolve(r, location=repair_pieces(r.location, size)) for r in v.locations)
                    checked = check_variable(attrs.evolve(v, locations=repaired), t, fn.variables)
                    judged = judge.caller_locations(checked, t, v.escaped) or ()
                    for r in checked:
                        why = _reasons(r.location)
                        if BROKEN_PIECES in why:
                            counts["ranges: pieces do not add up"] += 1
                        if BROKEN_WHOLE in why:
                            counts["ranges: whole where one part is"] += 1
                        if (why & {BROKEN_PIECES, BROKEN_WHOLE}) and any(
                                p.kind != E.UNAVAILABLE for p in r.location):
                            counts["  of which rebuilt with some parts known"] += 1
                    dead = sum(1 for r in judged if DEAD in _reasons(r.location))
                    if dead:
                        counts["variables with a dead pointer at some call"] += 1
                        counts["call sites × variables: dead pointer"] += dead
    took = time.perf_counter() - t0
    lines = [f"{target} {version}: {counts['functions']} functions, {counts['variables']} variables, "
             f"{counts['ranges']} PC ranges, judged in {took:.1f} s"]
    for k, v in counts.items():
        if k not in ("functions", "variables", "ranges"):
            lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def fixtures(version: str) -> list[str]:
    out = []
    for mode in MODES:
        for backend in ("interp", "ebpf"):
            try:
                counts, wrong = fidelity_verdicts(build(FIXTURE, version, mode), backend)
            except Exception as exc:  # noqa: BLE001 - e.g. no eBPF on this machine: say so, go on
                out.append(f"  {mode:5} {backend:6}: not measured ({exc})")
                continue
            total = sum(counts.values()) or 1
            out.append(f"  {mode:5} {backend:6}: right {counts['right'] / total:6.1%}  unavailable "
                       f"{counts['unavailable'] / total:6.1%}  wrong {counts['wrong'] / total:6.1%} "
                       f"({total} values)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go", default=None, help="comma-separated Go versions (default: all installed)")
    ap.add_argument("--binary", default="cmd/compile", help="a command of the Go distribution to build")
    ap.add_argument("--functions", type=int, default=None, help="judge a random sample of this many functions")
    args = ap.parse_args()
    versions = args.go.split(",") if args.go else selected_versions()
    for version in versions:
        print(real_code(version, args.binary, args.functions), flush=True)
        print(f"fidelity fixture {version}:")
        for line in fixtures(version):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
