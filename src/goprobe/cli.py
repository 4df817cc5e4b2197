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
    return p


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
    except GoprobeError as exc:
        print(f"goprobe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
