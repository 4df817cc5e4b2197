"""Checks of reported values against the truth a fixture program records about its own variables (the
``fidelity`` fixture), shared by the test that demands none be wrong and the benchmark that counts shares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from goprobe.snapshot import take_snapshot
from goprobe.testing.fixture_process import running


def verdict(want, have) -> str:
    """"right", "unavailable" or "wrong" for one reported value against the program's own record."""
    if isinstance(have, dict) and "@unavailable" in have:
        # The part that is known must be right too: the length of a string or slice that is not shown.
        if "@len" in have and isinstance(want, (str, list)):
            n = len(want.encode("latin-1")) if isinstance(want, str) else len(want)
            if have["@len"] != n:
                return "wrong"
        return "unavailable"
    if isinstance(want, str) and isinstance(have, list) and all(isinstance(x, int) for x in have):
        have = bytes(have).decode("latin-1")  # a []byte the program recorded as text
    return "right" if have == want else "wrong"


def fidelity_verdicts(binary: Path, backend: str) -> tuple[Counter, list[str]]:
    """Run *binary* (a build of the fidelity fixture), snapshot it capturing every variable it recorded, and
    judge each value: (counts per verdict, a line per wrong value)."""
    with running(binary) as proc:
        truth = proc.truth
        request: dict[str, set[str]] = {}
        for f in truth["frames"]:
            request.setdefault(f["function"], set()).update(f["vars"])
        snap = take_snapshot([proc.pid], {k: sorted(v) for k, v in request.items()}, backend=backend)
    got = {}
    for g in snap["processes"][0]["goroutines"]:
        for fr in g["frames"]:
            if "variables" in fr:
                got[(g["goid"], fr["function"])] = fr["variables"]
    counts: Counter = Counter()
    wrong = []
    for f in truth["frames"]:
        values = got.get((f["goid"], f["function"]))
        if values is None:
            counts["frame missing"] += 1
            wrong.append(f"goroutine {f['goid']} in {f['function']} is missing from the snapshot")
            continue
        for name, want in f["vars"].items():
            v = verdict(want, values.get(name))
            counts[v] += 1
            if v == "wrong":
                wrong.append(f"{f['function']} {name}: the program had {want!r}, goprobe said {values.get(name)!r}")
    return counts, wrong
