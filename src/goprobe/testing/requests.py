"""Large, realistic capture requests generated from a real Go binary, for scale tests and benchmarks.

:func:`scale_request` picks functions (in a fixed order, so the same binary always gives the same request) and,
for each, expressions over its parameters and locals: the variables themselves, fields through pointers
(``a.b.c``), ``*p``, ``len(x)``, ``cap(x)``, ``x[0]`` — whatever the variable's type allows. Every expression is
compiled against the function with goprobe's own compiler and kept only when it compiles, so the request is
valid for events and snapshots alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import attrs

from goprobe import expr as X
from goprobe.dwarf.binary import GoBinary
from goprobe.dwarf.functions import Function
from goprobe.ir.access import AccessCompiler
from goprobe.ir.snapshot import compile_captures
from goprobe.ir.values import TypeTableBuilder

#: Packages linked into every Go program that uses fmt/os/time (the fixtures do), plus the program's own;
#: taken in this order, so the request mixes small and large functions of several styles.
DEFAULT_PACKAGES = ("main", "fmt", "strconv", "os", "time", "sync", "io", "strings", "sort", "errors",
                    "unicode/utf8", "internal/poll", "syscall", "reflect", "runtime")


def _usable(fn: Function) -> bool:
    name = fn.name
    # Generic instances, closures and init code: their names and frames are not what a user probes first.
    return not ("[" in name or ".func" in name or name.endswith(".init") or ".init." in name or "..." in name)


def candidate_expressions(b: GoBinary, fn: Function) -> list[str]:
    """Expressions over *fn*'s parameters, then its locals: each variable's own list, taken round-robin so the
    first few expressions already cover several variables and several kinds of access."""
    per_var: list[list[str]] = []
    seen: set[str] = set()
    ordered = [v for v in fn.variables if v.role == "param"] + [v for v in fn.variables if v.role == "local"]
    for v in ordered:
        if not v.name.isidentifier() or v.name in seen or not v.locations:
            continue
        seen.add(v.name)
        per_var.append(list(_expressions_of(v.name, b.type_at(v.type_offset), 2)))
    out: list[str] = []
    while any(per_var):
        for exprs in per_var:
            if exprs:
                e = exprs.pop(0)
                if e not in out:
                    out.append(e)
    return out


def _fields(t, limit: int = 6) -> list:
    return [f for f in t.fields if f.name.isidentifier() and not f.name.startswith("_")][:limit]


def _expressions_of(text: str, t, depth: int) -> Iterable[str]:
    """*text* (of type *t*) and accesses below it, at most *depth* steps further."""
    yield text
    if depth <= 0 or t is None:
        return
    k = t.kind
    if k == "ptr":
        elem = t.elem
        if elem is not None and elem.kind == "struct":
            yield f"*{text}" if text.isidentifier() else f"*({text})"
            for fl in _fields(elem):
                yield from _expressions_of(f"{text}.{fl.name}", elem.field_type(fl), depth - 1)
        elif elem is not None and elem.kind not in ("func", "unsafe.Pointer"):
            yield f"*{text}" if text.isidentifier() else f"*({text})"
    elif k == "struct":
        for fl in _fields(t):
            yield from _expressions_of(f"{text}.{fl.name}", t.field_type(fl), depth - 1)
    elif k in ("string", "slice", "array"):
        yield f"len({text})"
        if k == "slice":
            yield f"cap({text})"
        yield from _expressions_of(f"{text}[0]", t.elem if k != "string" else None, depth - 1)
    elif k in ("map", "chan"):
        yield f"len({text})"


def scale_request(b: GoBinary, n_functions: int = 100, n_expressions: int = 20,
                  packages: Sequence[str] = DEFAULT_PACKAGES, *, entry_only: bool = True) -> dict[str, list[str]]:
    """``{function: [expression, ...]}`` of *n_functions* functions with *n_expressions* compiling expressions
    each (functions with fewer candidates are skipped; deterministic for a given binary).

    *entry_only*: skip functions an entry probe cannot use (no code of their own, e.g. fully inlined)."""
    tb = TypeTableBuilder(b)
    compiler = AccessCompiler(b, tb)
    request: dict[str, list[str]] = {}
    for pkg in packages:
        for fn in sorted(b.package_functions(pkg), key=lambda f: f.name):
            if fn.name in request or not _usable(fn) or len(b.functions(fn.name)) != 1:
                continue
            if entry_only:
                try:
                    b.code.for_function(fn).prologue_end  # noqa: B018 - raises when the entry cannot be found
                except Exception:  # noqa: BLE001 - such a function is simply not picked
                    continue
            cands = candidate_expressions(b, fn)
            if len(cands) < n_expressions:
                continue
            good: list[str] = []
            for start in range(0, len(cands), 2 * n_expressions):
                chunk = cands[start:start + 2 * n_expressions]
                caps = compile_captures(b, tb, compiler, fn.variables, [(e, X.parse(e)) for e in chunk])
                bad = {c.label for c in caps if c.type is None}
                good += [e for e in chunk if e not in bad and e not in good]
                if len(good) >= n_expressions:
                    break
            if len(good) >= n_expressions:
                request[fn.name] = good[:n_expressions]
                if len(request) >= n_functions:
                    return request
    return request


@attrs.frozen
class ProgramFigures:
    """One loaded (verified) program of a request, or why it was not."""

    function: str
    section: str
    insns: int = 0  # instructions in the program
    processed: int = 0  # instructions the verifier processed
    peak_states: int = 0
    verify_s: float = 0.0  # the load call (the kernel's verification time is close to all of it)
    verifier_us: int | None = None  # what the verifier itself reported
    error: str | None = None


def measure_event_request(b: GoBinary, request: dict[str, list[str]], *, limits=None,
                          on_program=None, **build) -> list[ProgramFigures]:
    """Compile an event request per function (entry probes; *build*: more EventRequest.build arguments, e.g.
    ``at_return=True``) and load every program into the kernel without attaching it: loading is verification.
    Programs are unloaded right after; maps are shared."""
    from goprobe.backends.ebpf import event_codegen as G
    from goprobe.backends.ebpf import syscall as sc
    from goprobe.backends.ebpf.object_file import BpfObject
    from goprobe.backends.ebpf.program import load_program
    from goprobe.backends.ebpf.uprobe import choose_attach_type
    from goprobe.errors import GoprobeError
    from goprobe.ir.events import compile_event
    from goprobe.request import EventRequest, Limits

    lim = Limits()
    limits = limits or G.Limits(lim.string_bytes, lim.collection_bytes, lim.min_elements, lim.map_entries,
                                lim.pointer_depth, None, None, False)
    maps = [sc.create_array(G.SCRATCH_SIZE, sc.possible_cpus(), name="gp_scratch"),
            sc.create_ringbuf(1 << 16, name="gp_events"), sc.create_array(G.COUNTER_VALUE_SIZE, 64, name="gp_counters"),
            sc.create_array(8, 1, name="gp_globals"), sc.create_hash(16, 8, 1024, name="gp_entries"),
            sc.create_map(sc.BPF_MAP_TYPE_LRU_HASH, 16, 8, 1024, name="gp_seen")]
    out: list[ProgramFigures] = []
    try:
        fds = G.MapFds(*(m.fd for m in maps))
        for fn, exprs in request.items():
            try:
                plan = compile_event(b, EventRequest.build(fn, exprs, **build))
                gen, code = G.generate_and_compile(plan, fds, limits, fn)
                obj = BpfObject(code, name=fn)
            except GoprobeError as e:
                out.append(ProgramFigures(fn, "", error=str(e)))
                continue
            for section, name, _index in gen.sections:
                t0 = time.perf_counter()
                try:
                    prog = load_program(obj, section, name=name[:15], expected_attach_type=choose_attach_type(1))
                except GoprobeError as e:
                    out.append(ProgramFigures(fn, section, verify_s=time.perf_counter() - t0, error=str(e)))
                    continue
                with prog:
                    st = prog.stats
                    out.append(ProgramFigures(fn, section, prog.insn_count, st.processed_insns, st.peak_states,
                                              time.perf_counter() - t0, st.verification_time_us))
                if on_program is not None:
                    on_program(out[-1])
    finally:
        for m in maps:
            m.close()
    return out


def summarise(figures: Sequence[ProgramFigures]) -> dict[str, object]:
    """Totals and maxima of :func:`measure_event_request`'s figures (the numbers the benchmark prints)."""
    ok = [f for f in figures if f.error is None]
    worst = max(ok, key=lambda f: f.verify_s, default=None)
    return {"programs": len(ok), "failed": len(figures) - len(ok), "insns_total": sum(f.insns for f in ok),
            "insns_max": max((f.insns for f in ok), default=0),
            "processed_total": sum(f.processed for f in ok), "processed_max": max((f.processed for f in ok), default=0),
            "peak_states_max": max((f.peak_states for f in ok), default=0),
            "verify_s_total": round(sum(f.verify_s for f in ok), 3),
            "verify_s_max": round(worst.verify_s, 3) if worst else 0.0,
            "slowest": worst.function if worst else None}


__all__ = ["DEFAULT_PACKAGES", "ProgramFigures", "candidate_expressions", "measure_event_request", "scale_request",
           "summarise"]
