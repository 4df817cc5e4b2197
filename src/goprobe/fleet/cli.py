"""The fleet's commands: ``goprobe server``, ``goprobe agent``, and ``goprobe snapshot --server``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path


def add_parsers(sub) -> None:
    srv = sub.add_parser("server", help="the control plane: agents connect to it, clients ask it for snapshots",
                         description="Run the control plane (unprivileged). Agents dial in and keep a stream "
                                     "open; clients ask for bundled snapshots of processes across machines.")
    srv.add_argument("--listen", default="127.0.0.1:7070", metavar="HOST:PORT")
    srv.add_argument("--data", required=True, metavar="DIR", help="where the control plane keeps its state")
    srv.add_argument("--tokens", metavar="FILE",
                     help="'agent TOKEN' / 'client TOKEN' lines (default: DIR/tokens)")
    srv.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (with --tls-key)")
    srv.add_argument("--tls-key", metavar="PEM")
    ag = sub.add_parser("agent", help="run snapshots on this machine for a control plane (root)",
                        description="Dial the control plane, report this machine and its Go processes, and run "
                                    "the snapshots it sends. Reconnects with backoff.")
    ag.add_argument("--server", required=True, metavar="HOST:PORT")
    ag.add_argument("--token-file", required=True, metavar="FILE")
    ag.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a machine label (repeatable)")
    ag.add_argument("--ca", metavar="PEM", help="trust this CA for the control plane's TLS certificate")
    ag.add_argument("--id", metavar="ID", help="this agent's id (default: hostname/boot id/PID namespace)")


def add_snapshot_options(snap) -> None:
    snap.add_argument("--server", metavar="HOST:PORT", help="ask a control plane for a bundle across machines")
    snap.add_argument("--token-file", metavar="FILE", help="the client token for --server")
    snap.add_argument("--select", action="append", default=[], metavar="RULE",
                      help="with --server: processes to take, e.g. exe=shop or label=zone=eu,cmdline=--port "
                           "(repeatable: any rule)")
    snap.add_argument("--timeout", type=float, default=60.0, metavar="S", help="with --server: wait at most S s")
    snap.add_argument("--ca", metavar="PEM", help="with --server: trust this CA for the control plane's TLS")


def run_server(args: argparse.Namespace) -> int:
    from goprobe.fleet.auth import read_tokens
    from goprobe.fleet.control import serve

    logging.basicConfig(level=logging.INFO, format="goprobe server: %(message)s")
    tokens = read_tokens(args.tokens or Path(args.data) / "tokens")
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("goprobe: error: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        tls = (_read_pem(args.tls_cert), _read_pem(args.tls_key))
    server, port = serve(args.listen, tokens, data=args.data, tls=tls)
    host = args.listen.rsplit(":", 1)[0]
    print(f"goprobe server: listening on {host}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
    return 0


def run_agent(args: argparse.Namespace) -> int:
    from goprobe.fleet.agent import Agent
    from goprobe.fleet.auth import read_token

    logging.basicConfig(level=logging.INFO, format="goprobe agent: %(message)s")
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"goprobe: error: bad --label {item!r}: use KEY=VALUE", file=sys.stderr)
            return 2
        labels[key] = value
    agent = Agent(args.server, read_token(args.token_file), labels,
                  root_certificates=_read_pem(args.ca), agent_id=args.id)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.stop())
    print(f"goprobe agent: {agent.machine.agent_id} serving {args.server}", flush=True)
    agent.run()
    return 0


def snapshot_through_server(args: argparse.Namespace, functions, limits, gfilter) -> dict:
    """``goprobe snapshot --server``: the bundle the control plane returns."""
    import attrs

    from goprobe.errors import GoprobeError
    from goprobe.fleet.auth import read_token
    from goprobe.fleet.client import Client

    if not args.select:
        raise GoprobeError("with --server, name the processes with --select (e.g. --select exe=shop)")
    if not args.token_file:
        raise GoprobeError("with --server, give the client token with --token-file")
    with Client(args.server, read_token(args.token_file), root_certificates=_read_pem(args.ca)) as client:
        return client.snapshot(args.select, functions, limits=attrs.asdict(limits) if limits else None,
                               goroutine_filter=gfilter, backend=args.backend, timeout=args.timeout)


def render_bundle(bundle: dict) -> str:
    """Text view of a fleet bundle: per machine, the local view of its processes."""
    from goprobe.snapshot import render_text

    out = []
    for m in bundle["machines"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(m["labels"].items()))
        out.append(f"== machine {m['hostname']} ({m['agent_id']}{', ' + labels if labels else ''})")
        out.append(render_text({"processes": m["processes"]}))
    if not bundle["machines"]:
        out.append("no process matched the selection")
    return "\n".join(out)


def dumps(bundle: dict) -> str:
    return json.dumps(bundle, indent=1, ensure_ascii=False)


def _read_pem(path: str | None) -> bytes | None:
    from goprobe.errors import GoprobeError

    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise GoprobeError(f"cannot read {path}: {exc.strerror}") from None
