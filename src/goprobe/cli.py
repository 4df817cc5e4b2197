"""The ``goprobe`` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from goprobe.errors import GoprobeError
from goprobe.fleet import cli as fleet_cli

DESCRIPTION = """\
goprobe looks inside Go programs using the DWARF debug information in their binaries.

commands:
  inspect BINARY             Go version, architecture, counts and the main package's functions
  inspect BINARY FUNCTION    a function's parameters and locals, their Go types and where each is available
  snapshot PID [PID...]      every goroutine's stack, with values captured in the frames you name
  events PID [PID...]        values captured each time a function runs or a line executes (eBPF)

exit status: 0 done, 1 error (nothing taken), 2 bad usage, 3 partial (some processes of a snapshot not
taken: each says why; events that ended early because the target exited), 130 interrupted.
"""
EXIT_PARTIAL = 3


_DEBUG_FILE_HELP = ("the executable's separate debug information (objcopy --only-keep-debug); by default looked "
                    "for by build id under /usr/lib/debug/.build-id and by .gnu_debuglink")

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
    ins.add_argument("--debug-file", metavar="FILE", help=_DEBUG_FILE_HELP)
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
    snap.add_argument("--backend", choices=("auto", "ebpf", "interp"), default="auto",
                      help="who reads the paused process: a generated eBPF program in the kernel, goprobe's "
                           "interpreter, or auto (eBPF where permitted; says so when it falls back)")
    snap.add_argument("--max-pause", type=_positive_ms, metavar="MS",
                      help="stop each process for at most MS milliseconds (default: the request file's "
                           "pause_ms, else 2000); past it the process runs again and what was not read is "
                           "marked as cut")
    snap.add_argument("--json", action="store_true", help="print the JSON document (docs/snapshot-json.md)")
    snap.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    snap.add_argument("--debug-file", metavar="FILE", help=_DEBUG_FILE_HELP)
    fleet_cli.add_snapshot_options(snap)
    ev = sub.add_parser(
        "events", help="capture values each time a function runs or a line executes (eBPF)",
        description="Attach probes (uprobes running generated eBPF) to the processes and stream one JSON object "
                    "per event on standard output: probe, pid, tid, goid, ts_ns (CLOCK_MONOTONIC) and the "
                    "captured values; with --return also the results and duration_ns. Conditions run in the "
                    "kernel. At the end a summary (events, drops, rate) goes to standard error. Probes are "
                    "removed on every exit, including Ctrl-C and SIGTERM.",
        epilog="examples:\n"
               "  goprobe events 4242 --probe 'main.(*Server).handle(req.URL.Path, len(req.Header))' --max 100\n"
               "  goprobe events 4242 --probe 'main.handle(req.ID)' --return --when 'req.ID == 7'\n"
               "  goprobe events 4242 --at server.go:212 -c tx.id --caller 'main.serve:conn.id' --stack",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("pids", nargs="+", type=int, metavar="PID", help="processes of one executable")
    where = ev.add_mutually_exclusive_group(required=True)
    where.add_argument("--probe", metavar="'FUNC(EXPR, ...)'", help="a function, with the expressions to capture")
    where.add_argument("--at", metavar="FILE:LINE", help="a source line (every statement PC, inlined copies too)")
    where.add_argument("--spec", metavar="FILE", help="an events request file (.toml or .json: docs/requests.md); "
                                                      "other options given too override its values")
    ev.add_argument("-c", "--capture", action="append", default=[], metavar="EXPR",
                    help="another expression to capture at the probe (repeatable)")
    ev.add_argument("--return", dest="at_return", action="store_true",
                    help="fire when the function returns (every RET); adds results and duration_ns")
    ev.add_argument("--caller", action="append", default=[], metavar="FUNC:EXPR,EXPR",
                    help="capture expressions in the nearest frame of FUNC up the stack (repeatable)")
    ev.add_argument("--when", metavar="EXPR", help="only events where this condition holds (checked in the kernel)")
    ev.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    ev.add_argument("--max", type=int, metavar="N", help="stop after N events (further hits are counted as drops)")
    ev.add_argument("--rate", type=int, metavar="N", help="at most N events a second per probe site")
    ev.add_argument("--stack", action="store_true", help="add the goroutine's stack to each event")
    ev.add_argument("--ring", type=_ring_mib, metavar="MiB",
                    help="size of the kernel ring buffer (a power of two; default 16)")
    ev.add_argument("--backlog", type=_mib, metavar="MiB",
                    help="events held in memory while the decoder catches up (default 512); past it, drops "
                         "are counted")
    ev.add_argument("-o", "--output", metavar="FILE", help="write the JSON lines to FILE")
    ev.add_argument("--debug-file", metavar="FILE", help=_DEBUG_FILE_HELP)
    fleet_cli.add_parsers(sub)
    return p


def _positive_ms(text: str) -> int:
    try:
        ms = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of milliseconds") from None
    if ms <= 0:
        raise argparse.ArgumentTypeError("give a positive number of milliseconds")
    return ms


def _mib(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB") from None
    if n <= 0:
        raise argparse.ArgumentTypeError("must be at least 1 MiB")
    return n << 20


RING_MAX_MIB = 1024  # the kernel takes a ring buffer's size as a 32-bit count of bytes


def _ring_mib(text: str) -> int:
    n = _mib(text)
    if n & (n - 1):
        raise argparse.ArgumentTypeError("the ring size must be a power of two (1, 2, 4, ... MiB)")
    if n > RING_MAX_MIB << 20:
        raise argparse.ArgumentTypeError(f"the ring size can be at most {RING_MAX_MIB} MiB (a kernel limit); "
                                         "use --backlog to hold more in memory")
    return n


def parse_probe_spec(spec: str) -> tuple[str, list[str]]:
    """``main.(*S).handle(req.ID, len(x))`` → ("main.(*S).handle", ["req.ID", "len(x)"]); no parentheses at
    the end: the function alone."""
    from goprobe.request import split_expressions

    spec = spec.strip()
    if not spec:
        raise GoprobeError("--probe needs a function, e.g. --probe 'main.(*Server).handle(req.ID)'")
    opened, closed = _count_outside_strings(spec, "("), _count_outside_strings(spec, ")")
    if opened != closed:
        raise GoprobeError(f"--probe {spec!r}: {'a ( is not closed' if opened > closed else 'a ) has no ('}; "
                           "write FUNC(EXPR, ...), e.g. 'main.handle(req.ID, len(name))'")
    if not spec.endswith(")"):
        return spec, []
    depth = 0
    for i in range(len(spec) - 1, -1, -1):
        c = spec[i]
        if c == ")":
            depth += 1
        elif c == "(":
            depth -= 1
            if depth == 0:
                break
    else:
        return spec, []
    inner = spec[i + 1:-1]
    # "main.(*Server)" alone is not a call: the "(" must follow the name's last identifier.
    if i == 0 or not (spec[i - 1].isalnum() or spec[i - 1] in "_]"):
        return spec, []
    return spec[:i], [e for e in split_expressions(inner) if e.strip()] if inner.strip() else []


def _count_outside_strings(text: str, char: str) -> int:
    """How many times *char* occurs in *text* outside Go string literals."""
    n, quote, i = 0, None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"`":
            quote = c
        elif c == char:
            n += 1
        i += 1
    return n


def _events(args: argparse.Namespace) -> int:
    import attrs

    from goprobe.events import install_stop_signals, stream_events
    from goprobe.request import EventRequest, load_request_file, parse_capture_spec

    callers: dict[str, list[str]] = {}
    for spec in args.caller:
        fn, caps = parse_capture_spec(spec)
        callers.setdefault(fn, []).extend(c.text for c in caps)
    if args.spec:
        req = load_request_file(args.spec)
        if not isinstance(req, EventRequest):
            print(f"goprobe: error: {args.spec} is a snapshot request; use 'goprobe snapshot --spec'", file=sys.stderr)
            return 2
        req = attrs.evolve(
            req, captures=req.captures + tuple(args.capture), callers={**req.callers, **callers},
            condition=args.when if args.when is not None else req.condition, stack=args.stack or req.stack,
            max_events=args.max or req.max_events, duration_s=args.duration or req.duration_s,
            rate_limit_per_s=args.rate or req.rate_limit_per_s)
    else:
        if args.probe is not None:
            point, exprs = parse_probe_spec(args.probe)
        else:
            point, exprs = args.at, []
        exprs += args.capture
        req = EventRequest.build(point, exprs, at_return=args.at_return, callers=callers, when=args.when,
                                 stack=args.stack, max_events=args.max, duration_s=args.duration,
                                 rate_limit_per_s=args.rate)
    out = _open_output(args.output) if args.output else sys.stdout
    try:
        sizes = {k: v for k, v in (("ring_bytes", args.ring), ("backlog_bytes", args.backlog)) if v}
        # A SIGINT/SIGTERM while the probes are being attached is remembered, then ends the stream cleanly.
        early: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda num, _frame: early.append(num))
        with stream_events(args.pids, req, debug_file=args.debug_file, **sizes) as stream:
            install_stop_signals(stream)
            if early:
                stream.stop()
            print(f"goprobe: probing {req.probe} in {', '.join(map(str, args.pids))} "
                  f"({len(stream.plan.sites)} site{'s' if len(stream.plan.sites) != 1 else ''}); Ctrl-C stops",
                  file=sys.stderr, flush=True)
            for note in stream.budget_cuts:
                print(f"goprobe: note: {note} (the kernel verifier's budget for one probe program; capture fewer "
                      "or smaller expressions at this probe to see more)", file=sys.stderr, flush=True)
            try:
                for event in stream:
                    out.write(json.dumps(event, ensure_ascii=False) + "\n")
                    out.flush()
            except OSError as exc:
                raise GoprobeError(f"cannot write events to {args.output or 'standard output'}: "
                                   f"{exc.strerror or exc}; the probes were removed") from None
            s = stream.summary()
    finally:
        if out is not sys.stdout:
            _close_quietly(out)
    drops = ", ".join(f"{s[k]} {k.removeprefix('dropped_').replace('_', ' ')}" for k in
                      ("dropped_ring_full", "dropped_max_events", "dropped_rate_limit", "dropped_unread") if s[k])
    if s["backlog_stalls"]:
        drops += (", " if drops else "") + (f"the backlog reached {s['backlog_limit_bytes'] >> 20} MiB "
                                            f"{s['backlog_stalls']} time(s): raise --backlog")
    print(f"goprobe: {s['events']} events in {s['seconds']} s ({s['events_per_s']}/s), {s['hits']} probe hits, "
          f"{s['filtered']} filtered by --when, {s['dropped']} dropped" + (f" ({drops})" if drops else ""),
          file=sys.stderr)
    if s["targets_exited"]:
        print(f"goprobe: the stream ended early: {'the target process' if len(args.pids) == 1 else 'every target'}"
              f" ({', '.join(map(str, args.pids))}) exited", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def _close_quietly(fh) -> None:
    try:
        fh.close()
    except OSError:
        pass  # the write that failed already said why


def _open_output(path: str):
    """*path* opened for writing, or a GoprobeError naming the cause and the fix."""
    try:
        return open(path, "w")
    except OSError as exc:
        raise GoprobeError(f"cannot write to {path}: {exc.strerror or exc}; choose another -o path") from None


def _snapshot(args: argparse.Namespace) -> int:
    from goprobe import snapshot as S
    from goprobe.request import SnapshotRequest, load_request_file, parse_capture_spec

    if not args.pids and not args.core and not args.server:
        print("goprobe: error: name at least one PID, or --core CORE BINARY, or --server", file=sys.stderr)
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
    if args.max_pause is not None:
        import attrs

        from goprobe.request import Limits

        limits = attrs.evolve(limits or Limits(), pause_ms=args.max_pause)
    # The output must be writable before any process is paused: a snapshot is not taken to be lost.
    out = _open_output(args.output) if args.output else None
    try:
        return _take_and_write(args, S, functions, limits, gfilter, out)
    finally:
        if out is not None:
            _close_quietly(out)


def _take_and_write(args: argparse.Namespace, S, functions, limits, gfilter, out) -> int:
    if args.server:
        bundle = fleet_cli.snapshot_through_server(args, functions, limits, gfilter)
        (out or sys.stdout).write((fleet_cli.dumps(bundle) if args.json else fleet_cli.render_bundle(bundle)) + "\n")
        if bundle.get("partial"):
            ok = sum(p.get("status") == "ok" for m in bundle["machines"] for p in m["processes"])
            print(f"goprobe: partial result: {ok} of {bundle['selected']} processes taken", file=sys.stderr)
            return 3
        return 0
    if args.core:
        result = S.snapshot_core(args.core[0], args.core[1], functions, limits=limits, goroutine_filter=gfilter,
                                 debug_file=args.debug_file)
    else:
        result = S.take_snapshot(args.pids, functions, limits=limits, goroutine_filter=gfilter, backend=args.backend,
                                 debug_file=args.debug_file)
    for proc in result["processes"]:
        if proc.get("backend_note"):
            print(f"goprobe: note: pid {proc['pid']}: {proc['backend_note']}", file=sys.stderr)
        for w in proc.get("warnings", ()):
            print(f"goprobe: warning: pid {proc['pid']}: {w}", file=sys.stderr)
        for d in proc.get("degraded", ()):
            print(f"goprobe: note: pid {proc['pid']}: values of type {d['type']} are unavailable: {d['reason']}",
                  file=sys.stderr)
    text = json.dumps(result, indent=1, ensure_ascii=False) if args.json else S.render_text(result)
    try:
        if out is not None:
            out.write(text + "\n")
            out.flush()
        else:
            print(text, flush=True)
    except OSError as exc:
        raise GoprobeError(f"cannot write the snapshot to {args.output or 'standard output'}: {exc.strerror or exc}"
                           " (the target processes were resumed; nothing else was lost)") from None
    if result.get("partial"):
        failed = [p for p in result["processes"] if p.get("status") == "error"]
        print(f"goprobe: partial result: {len(failed)} of {len(result['processes'])} processes not taken",
              file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from goprobe.dwarf.binary import GoBinary
    from goprobe import inspect as report

    with GoBinary(args.binary, use_cache=not args.no_cache, debug_file=args.debug_file) as b:
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
        if args.command == "events":
            return _events(args)
        if args.command == "server":
            return fleet_cli.run_server(args)
        if args.command == "agent":
            return fleet_cli.run_agent(args)
    except GoprobeError as exc:
        print(f"goprobe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
