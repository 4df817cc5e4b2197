"""DWARF frontend benchmark on a large real binary: Go's own compiler (``go build cmd/compile``, ~37 MB).

Measures, each in a fresh Python process (medians of --runs):
  cold   open the binary and resolve a request naming five functions — every variable, its type and the
         types reachable from it (3 levels), each function's code facts — plus the runtime layout, with no
         index cache;
  warm   the same with the index cache written by a previous run;
  peak memory (max RSS) of the cold process; Python import time is reported separately.
With --pyelftools it also times a full pyelftools DIE walk of the same binary, for reference.

Usage: python benchmarks/bench_dwarf.py [--go 1.27.3] [--runs 3] [--pyelftools]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goprobe.cache_dir import cache_dir
from goprobe.testing.toolchains import go_binary, go_env

FUNCTIONS = [
    "cmd/compile/internal/ssa.(*Func).newValue",
    "cmd/compile/internal/ssagen.buildssa",
    "cmd/compile/internal/types2.(*Checker).expr",
    "cmd/compile/internal/gc.Main",
    "runtime.gopark",
]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from goprobe.dwarf.binary import GoBinary
t1 = time.perf_counter()
b = GoBinary(sys.argv[1])
nvars = ntypes = 0
seen = set()
def walk(t, depth):
    global ntypes
    if t.offset in seen or depth > 3:
        return
    seen.add(t.offset)
    ntypes += 1
    for f in t.fields:
        walk(t.field_type(f), depth + 1)
    for ref in (t.elem, t.key, t.impl):
        if ref is not None:
            walk(ref, depth + 1)
for name in sys.argv[2:]:
    fn = b.function(name)
    b.code.for_function(fn)
    for v in fn.variables:
        nvars += 1
        walk(b.type_at(v.type_offset), 0)
layout = b.runtime
b.close()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "resolve_s": t2 - t1, "variables": nvars, "types": ntypes,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def compile_binary(version: str) -> Path:
    out = cache_dir() / "bench" / f"compile-{version}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"building cmd/compile with Go {version} (once, ~2 min)...", file=sys.stderr)
        subprocess.run([str(go_binary(version)), "build", "-o", str(out), "cmd/compile"], env=go_env(version),
                       check=True)
    return out


def run_child(binary: Path, cache: Path | None) -> dict:
    env = dict(os.environ)
    if cache is None:
        env["GOPROBE_NO_CACHE"] = "1"
    else:
        env["GOPROBE_CACHE_DIR"] = str(cache)
        env.pop("GOPROBE_NO_CACHE", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(binary), *FUNCTIONS], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def pyelftools_walk(binary: Path) -> float:
    from elftools.elf.elffile import ELFFile

    t = time.perf_counter()
    with open(binary, "rb") as fh:
        dwarf = ELFFile(fh).get_dwarf_info()
        n = 0
        for cu in dwarf.iter_CUs():
            for _ in cu.iter_DIEs():
                n += 1
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go", default="1.27.3")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pyelftools", action="store_true")
    args = ap.parse_args()
    binary = compile_binary(args.go)
    size_mb = binary.stat().st_size / 1e6
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        run_child(binary, cache)  # fill the cache once
        for _ in range(args.runs):  # interleave cold and warm so machine noise hits both alike
            cold.append(run_child(binary, None))
            warm.append(run_child(binary, cache))
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    print(f"binary: cmd/compile built by Go {args.go}, {size_mb:.1f} MB")
    print(f"request: {len(FUNCTIONS)} functions, {cold[0]['variables']} variables, {cold[0]['types']} types "
          f"(3 levels), code facts, runtime layout")
    print(f"cold (no cache)   {med(cold, 'resolve_s') * 1000:8.1f} ms   (goal <= 1000 ms)")
    print(f"warm (cache)      {med(warm, 'resolve_s') * 1000:8.1f} ms   (goal <= 100 ms)")
    print(f"python import     {med(cold, 'import_s') * 1000:8.1f} ms   (not included above)")
    print(f"peak RSS cold     {med(cold, 'maxrss_mb'):8.1f} MB")
    print(f"peak RSS warm     {med(warm, 'maxrss_mb'):8.1f} MB")
    if args.pyelftools:
        print(f"pyelftools full DIE walk {pyelftools_walk(binary):8.1f} s   (reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
