"""The ``goprobe`` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from goprobe.errors import GoprobeError

DESCRIPTION = """\
goprobe looks inside Go programs using the DWARF debug information in their binaries.

commands:
  inspect BINARY             Go version, architecture, counts and the main package's functions
  inspect BINARY FUNCTION    a function's parameters and locals, their Go types and where each is available
  snapshot PID [PID...]      every goroutine's stack, with values captured in the frames you name
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="goprobe", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    ins = sub.add_parser(
        "inspect", help="show what goprobe sees in a Go binary",
        description="Show what goprobe reads from a Go binary's DWARF. Without FUNCTION: identity, counts and the "
                    "main package's functions. With FUNCTION (e.g. 'main.(*Server).handle', or a generic's base "
                    "name): its parameters and locals with Go types and where each is available (whole body, "
                    "entry, some ranges, never), its source span, code facts and where it was inlined.",
        epilog="examples:\n  goprobe inspect ./server\n  goprobe inspect ./server 'main.(*Server).handle' --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ins.add_argument("binary", help="path of a Go executable built with DWARF (no -ldflags=-w)")
    ins.add_argument("function", nargs="?", help="qualified Go function name")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")
    ins.add_argument("--no-cache", action="store_true", help="do not read or write the index cache")
    snap = sub.add_parser(
        "snapshot", help="stacks of every goroutine, with captured values",
        description="Pause each process for about a millisecond, walk every goroutine's stack, capture the "
                    "requested expressions in frames of the named functions, resume, and print the result. "
                    "Expressions are Go syntax over the function's parameters, locals and package variables: "
                    "a.b.c, *p, x[3], m[\"key\"], len(x), cap(x), x.(*T).",
        epilog="examples:\n"
               "  goprobe snapshot 4242\n"
               "  goprobe snapshot 4242 -c 'main.(*Server).handle:req.Path,len(s.conns)' --json -o snap.json\n"
               "  goprobe snapshot --core core.4242 ./server -c 'main.(*Worker).run:w.id'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    snap.add_argument("pids", nargs="*", type=int, metavar="PID", help="process ids (several give one bundle)")
    snap.add_argument("-c", "--capture", action="append", default=[], metavar="FUNC:EXPR,EXPR",
                      help="capture expressions in every frame of FUNC (repeatable)")
    snap.add_argument("--spec", metavar="FILE", help="a request file (JSON or TOML, see docs/requests.md)")
    snap.add_argument("--filter", metavar="FUNC", help="only goroutines with FUNC on their stack")
    snap.add_argument("--core", nargs=2, metavar=("CORE", "BINARY"), help="snapshot an ELF core file instead")
    snap.add_argument("--json", action="store_true", help="print the JSON document (docs/snapshot-json.md)")
    snap.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    return p


def _snapshot(args: argparse.Namespace) -> int:
    from goprobe import snapshot as S
    from goprobe.request import SnapshotRequest, load_request_file, parse_capture_spec

    if not args.pids and not args.core:
        print("goprobe: error: name at least one PID, or --core CORE BINARY", file=sys.stderr)
        return 2
    if args.spec:
        req = load_request_file(args.spec)
        if not isinstance(req, SnapshotRequest):
            print(f"goprobe: error: {args.spec} is an events request; use 'goprobe events'", file=sys.stderr)
            return 2
        functions = {fn: [c.text for c in caps] for fn, caps in req.functions.items()}
        limits, gfilter = req.limits, args.filter or req.goroutine_filter
    else:
        functions, limits, gfilter = {}, None, args.filter
    for spec in args.capture:
        fn, caps = parse_capture_spec(spec)
        functions.setdefault(fn, []).extend(c.text for c in caps)
    if args.core:
        result = S.snapshot_core(args.core[0], args.core[1], functions, limits=limits, goroutine_filter=gfilter)
    else:
        result = S.take_snapshot(args.pids, functions, limits=limits, goroutine_filter=gfilter)
    text = json.dumps(result, indent=1, ensure_ascii=False) if args.json else S.render_text(result)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from goprobe.dwarf.binary import GoBinary
    from goprobe import inspect as report

    with GoBinary(args.binary, use_cache=not args.no_cache) as b:
        if args.function:
            data = report.function_report(b, args.function)
            text = report.render_function(data)
        else:
            data = report.binary_summary(b)
            text = report.render_summary(data)
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "snapshot":
            return _snapshot(args)
    except GoprobeError as exc:
        print(f"goprobe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
