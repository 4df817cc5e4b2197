"""A stable, readable text dump of a snapshot plan, for golden tests and for people debugging a request.

The unwind table is summarised (it covers every function of the binary); everything else is listed in full.
"""

from __future__ import annotations

import attrs

from goprobe.dwarf.expressions import describe
from goprobe.ir import access as A
from goprobe.ir import snapshot as S
from goprobe.ir import values as V


def dump(plan: S.SnapshotPlan) -> str:
    out: list[str] = []
    gl = plan.goroutines
    out.append("goroutines " + " ".join(f"{f.name}={_num(getattr(gl, f.name))}" for f in attrs.fields(type(gl))))
    il = plan.interfaces
    out.append("interfaces " + " ".join(f"{f.name}={_num(getattr(il, f.name))}" for f in attrs.fields(type(il))))
    rows = sum(len(r) for _lo, _hi, r in plan.unwind)
    out.append(f"unwind functions={len(plan.unwind)} rows={rows}")
    out.append("stops " + " ".join(f"[{lo:#x},{hi:#x})" for lo, hi in plan.stops))
    out.append(f"limits max_frames={plan.max_frames} max_goroutines={plan.max_goroutines}")
    if plan.goroutine_filter:
        out.append("filter " + " ".join(f"[{lo:#x},{hi:#x})" for lo, hi in plan.goroutine_filter))
    for i, fp in enumerate(plan.frames):
        ranges = " ".join(f"[{lo:#x},{hi:#x})" for lo, hi in fp.ranges)
        out.append(f"frame {i} {fp.function}{' inlined' if fp.inlined else ''} {ranges}")
        for r in fp.dictionary:
            out.append(f"  dictionary at [{r.low:#x},{r.high:#x}) {describe(r.location)}")
        for c in fp.captures:
            head = f"  capture {c.label!r}"
            if c.type is None:
                out.append(f"{head} missing: {c.missing}")
                continue
            out.append(f"{head} type=t{c.type}{' escaped' if c.escaped else ''}"
                       + (f" root=t{c.root_type}" if c.root_type is not None else ""))
            for r in c.locations:
                out.append(f"    at [{r.low:#x},{r.high:#x}) {describe(r.location)}")
            for r in c.caller_locations or ():
                out.append(f"    caller at [{r.low:#x},{r.high:#x}) {describe(r.location)}")
            if c.path is not None:
                root = c.path.root or f"global {c.path.global_address:#x}"
                steps = " ".join(_step(s) for s in c.path.steps)
                out.append(f"    path {root}{' ' + steps if steps else ''} -> t{c.path.type}")
    for i, e in enumerate(plan.types.entries):
        rt = f" rtype={e.runtime_type:#x}" if e.runtime_type else ""
        out.append(f"t{i} {e.name!r} size={e.size}{rt}{' direct' if e.direct_iface else ''} {_shape(e.shape)}")
    for c in plan.types.closures:
        out.append(f"closure {c.entry:#x} context=t{c.context}")
    return "\n".join(out) + "\n"


def _num(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int) and v > 4096:
        return f"{v:#x}"
    return str(v)


def _step(s: object) -> str:
    if isinstance(s, A.FieldStep):
        return f".+{s.offset}"
    if isinstance(s, A.DerefStep):
        return "*"
    if isinstance(s, A.IndexStep):
        return f"[{s.container} {s.index} x{s.elem_size}]"
    if isinstance(s, A.LenStep):
        return f"len({s.container})"
    if isinstance(s, A.CapStep):
        return f"cap({s.container})"
    if isinstance(s, A.MapLookupStep):
        return f"[map t{s.map_type} key={s.key!r}]"
    if isinstance(s, A.TypeAssertStep):
        return f".(rtype {s.runtime_type:#x})"
    return repr(s)


def _shape(sh: object) -> str:
    if isinstance(sh, V.Struct):
        return "struct{" + "; ".join(f"{f.name}@{f.offset}:t{f.type}" for f in sh.fields) + "}"
    name = type(sh).__name__.lower()
    fields = ", ".join(f"{f.name}={_num(getattr(sh, f.name))}" for f in attrs.fields(type(sh)))
    return f"{name}({fields})" if fields else name
