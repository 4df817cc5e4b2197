"""Generate ``goprobe/dwarf/runtime_tables.json``: what goprobe needs of the Go runtime to snapshot a binary
that has no DWARF (``-ldflags=-s -w``), per Go release, read from the DWARF of a reference build made by that
release's own toolchain.

Per release (keyed ``"1.27"``; the patch release it was read from is recorded): the runtime structures goprobe
reads (``RuntimeLayout``: g, m, type, itab, moduledata, maps...), the pclntab's own structures (``pcHeader``,
``_func``, ``inlinedCall``) and table indexes, the wait reasons' names, and how to find ``runtime.allgs`` and
``runtime.allglen`` without a symbol table: their ordinals among the distinct RIP-relative data addresses
that ``runtime.allgadd``'s code uses (the same runtime source built by the same compiler gives the same code).

Usage: python -m goprobe.testing.runtime_tables [--go 1.21.13,...] [--check]
``--check`` compares the generated tables with the file instead of writing it (exit 1 if they differ).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from goprobe.dwarf.binary import GoBinary
from goprobe.dwarf.runtime_layout import RuntimeLayout
from goprobe.dwarf.stripped import TABLES_PATH, data_targets
from goprobe.testing.gobuild import build
from goprobe.testing.toolchains import selected_versions

PROBE = Path(__file__).resolve().parent / "layout_probe"

# pclntab structures: (table key, DWARF name, fields)
_PCLN_STRUCTS = (
    ("pcHeader", "runtime.pcHeader", ("magic", "minLC", "ptrSize", "nfunc", "nfiles", "textStart",
                                      "funcnameOffset", "cuOffset", "filetabOffset", "pctabOffset",
                                      "pclnOffset")),  # textStart: up to Go 1.26 (moduledata.text since)
    ("_func", "runtime._func", ("entryOff", "nameOff", "args", "pcsp", "pcfile", "pcln", "npcdata", "cuOffset",
                                "startLine", "funcID", "nfuncdata")),
    ("inlinedCall", "runtime.inlinedCall", ("funcID", "nameOff", "parentPc", "startLine")),
)
_CONSTANTS = ("internal/abi.PCDATA_InlTreeIndex", "internal/abi.FUNCDATA_InlTree",
              "internal/abi.PCDATA_StackMapIndex")


def entry_for(version: str) -> dict[str, Any]:
    """The table entry of one Go release, read from its reference build."""
    binary = build(PROBE, version, "opt", name="layout-probe")
    with GoBinary(binary, use_cache=False) as b:
        L = RuntimeLayout.read(b)
        out: dict[str, Any] = {
            "from": b.go_version,
            "structs": {k: {"name": s.name, "size": s.size,
                            "fields": {f: [fl.offset, fl.size] for f, fl in sorted(s.fields.items())}}
                        for k, s in sorted(L.structs.items())},
            "map_impl": L.map_impl, "direct_iface": list(L.direct_iface), "kind_mask": L.kind_mask,
            "g_status_size": L.g_status_size,
        }
        pcln = {}
        for key, name, fields in _PCLN_STRUCTS:
            t = b.runtime_unit_type(name) or b.type_named(name)
            pcln[key] = {"size": t.size, "fields": {f: t.field(f).offset for f in fields if t.field(f) is not None}}
        out["pclntab"] = pcln
        out["constants"] = {c.rsplit(".", 1)[1]: b.constant(c) for c in _CONSTANTS}
        from goprobe.snapshot import wait_reasons

        reasons = wait_reasons(b)
        out["wait_reasons"] = [reasons.get(i, "") for i in range(max(reasons, default=-1) + 1)]
        sym = b.elf.symbol("runtime.allgadd")
        targets = data_targets(b.elf.read_vaddr(sym.value, sym.size), sym.value)
        wanted = {"allgs": L.allgs, "allglen": L.allglen}
        out["allgadd"] = {k: targets.index(addr) for k, addr in wanted.items()}
        return out


def generate(versions: list[str]) -> dict[str, Any]:
    return {".".join(v.split(".")[:2]): entry_for(v) for v in versions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go", default=",".join(selected_versions()))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    tables = generate(args.go.split(","))
    if args.check:
        on_file = json.loads(TABLES_PATH.read_text())
        differ = [k for k, v in tables.items() if on_file.get(k) != v]
        print("differ: " + ", ".join(differ) if differ else "the tables match the releases' DWARF")
        return 1 if differ else 0
    old = json.loads(TABLES_PATH.read_text()) if TABLES_PATH.exists() else {}
    old.update(tables)
    TABLES_PATH.write_text(json.dumps(dict(sorted(old.items(), key=lambda kv: tuple(map(int, kv[0].split("."))))),
                                      indent=1, sort_keys=False) + "\n")
    print(f"wrote {TABLES_PATH} ({', '.join(tables)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
