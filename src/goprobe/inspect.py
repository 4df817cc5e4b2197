"""``goprobe inspect``: what goprobe sees in a binary, as plain data (rendered as text or JSON by the CLI)."""

from __future__ import annotations

from typing import Any

from goprobe.dwarf.binary import GoBinary
from goprobe.dwarf.expressions import describe
from goprobe.dwarf.functions import Function


def binary_summary(b: GoBinary) -> dict[str, Any]:
    """Identity, counts, and the main package's functions."""
    unit_names = b.unit_names()
    packages = sorted({n for n in unit_names.values() if n})
    main_funcs = [{"name": fn.name, "entry": f"{fn.entry:#x}", "file": fn.decl_file, "line": fn.decl_line}
                  for fn in b.package_functions("main")]
    main_funcs.sort(key=lambda f: (f["file"], f["line"] or 0, f["name"]))
    return {
        "path": str(b.path),
        "go_version": b.go_version,
        "arch": b.arch,
        "pie": b.is_pie,
        "build_id": b.build_id,
        "dwarf_version": b.dwarf_version,
        "dwarf_compressed": b.dwarf_compressed,
        "counts": {
            "compile_units": len(unit_names),
            "packages": len(packages),
            "functions": len(b.function_names()),
            "main_functions": len(main_funcs),
        },
        "main_functions": main_funcs,
    }


def function_report(b: GoBinary, name: str) -> dict[str, Any]:
    """Parameters and locals with types and availability, source span, code facts, inlining."""
    fns = b.functions(name)
    if not fns:
        b.function(name)  # raises UnknownFunctionError with suggestions
    return {"functions": [_one_function(b, fn) for fn in fns]}


def _one_function(b: GoBinary, fn: Function) -> dict[str, Any]:
    code = b.code.for_function(fn)
    lines = _line_span(b, fn)
    inlined = b.inlined_copies(fn.name)
    variables = []
    for v in fn.variables:
        t = b.type_at(v.type_offset)
        variables.append({
            "name": v.name,
            "role": v.role,
            "type": (t.name or t.kind) + (f" (type parameter, dictionary entry {t.dict_index})"
                                           if t.dict_index is not None else ""),
            "kind": t.kind,
            "size": t.size,
            "available": v.availability(fn.ranges, fn.entry),
            "escaped_to_heap": v.escaped,
            "decl_line": v.decl_line,
            "scoped": v.scope is not None,
            "locations": [{"low": f"{r.low:#x}", "high": f"{r.high:#x}", "where": describe(r.location, b.arch)}
                          for r in v.locations],
        })
    return {
        "name": fn.name,
        "file": fn.decl_file,
        "lines": lines,
        "entry": f"{fn.entry:#x}",
        "ranges": [[f"{lo:#x}", f"{hi:#x}"] for lo, hi in fn.ranges],
        "prologue_end": f"{code.prologue_end:#x}",
        "returns": [f"{pc:#x}" for pc in code.returns],
        "frame_pointer": code.has_frame_pointer,
        "frame_size": code.frame_size,
        "inlined_into": sorted({caller.name for caller, _ in inlined}),
        "inlined_copies": len(inlined),
        "variables": variables,
    }


def _line_span(b: GoBinary, fn: Function) -> list[int]:
    unit = b.units.unit(fn.unit_offset)
    prog = b.line_program(unit)
    lines = []
    if prog is not None:
        for lo, hi in fn.ranges:
            for row in prog.rows_between(lo, hi):
                if prog.file_name(row.file) == fn.decl_file and not fn.inline_chain(row.address):
                    lines.append(row.line)  # rows of inlined callees are not this function's
    if fn.decl_line:
        lines.append(fn.decl_line)
    return [min(lines), max(lines)] if lines else []


def render_summary(s: dict[str, Any]) -> str:
    c = s["counts"]
    out = [
        f"{s['path']}",
        f"  Go {s['go_version'].removeprefix('go')}  {s['arch']}  {'PIE' if s['pie'] else 'non-PIE'}  "
        f"DWARF {s['dwarf_version']}{' (compressed)' if s['dwarf_compressed'] else ''}",
        f"  build id {s['build_id'] or '(none)'}",
        f"  {c['compile_units']} compile units, {c['packages']} packages, {c['functions']} functions",
        "",
        f"main package: {c['main_functions']} functions",
    ]
    for f in s["main_functions"]:
        out.append(f"  {f['name']:<50} {_short(f['file'])}:{f['line']}")
    return "\n".join(out)


def render_function(r: dict[str, Any]) -> str:
    out = []
    for f in r["functions"]:
        span = f"{f['lines'][0]}-{f['lines'][1]}" if f["lines"] else "?"
        out.append(f"{f['name']}")
        out.append(f"  {f['file']}:{span}")
        out.append(f"  entry {f['entry']}, after prologue {f['prologue_end']}, {len(f['returns'])} RET, "
                   f"frame {f['frame_size']} bytes{' with frame pointer' if f['frame_pointer'] else ''}")
        if f["inlined_copies"]:
            into = ", ".join(f["inlined_into"][:5]) + (" …" if len(f["inlined_into"]) > 5 else "")
            out.append(f"  inlined {f['inlined_copies']} times, into {into}")
        else:
            out.append("  not inlined anywhere")
        if not f["variables"]:
            out.append("  (no parameters or locals)")
        width = max((len(v["name"]) for v in f["variables"]), default=0)
        twidth = min(36, max((len(v["type"]) for v in f["variables"]), default=0))
        for v in f["variables"]:
            where = ", ".join(x["where"] for x in v["locations"][:2]) + (" …" if len(v["locations"]) > 2 else "")
            flags = (" (escaped to heap)" if v["escaped_to_heap"] else "") + (
                f" (block, line {v['decl_line']})" if v["scoped"] else "")
            out.append(f"  {v['role']:<6} {v['name']:<{width}}  {v['type']:<{twidth}}  {v['available']:<11}"
                       f"  {where}{flags}")
        out.append("")
    return "\n".join(out).rstrip()


def _short(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else path
