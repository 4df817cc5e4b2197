"""The agent: one per machine (root). It dials the control plane and keeps one stream open — so agents behind
NAT work — reporting the machine and its Go processes, and running the snapshots it is sent. It reconnects
with backoff when the stream breaks; a refused token ends it (retrying would not help)."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import grpc

from goprobe.errors import GoprobeError
from goprobe.fleet import auth, inventory
from goprobe.fleet.control import PROTOCOL
from goprobe.fleet.proto import fleet_pb2 as pb
from goprobe.fleet.proto import fleet_pb2_grpc as pbg

log = logging.getLogger("goprobe.fleet.agent")


class AgentRefused(GoprobeError):
    """The control plane refused this agent (its token, or its protocol version)."""


def _machine_pb(m: inventory.MachineInfo) -> pb.Machine:
    return pb.Machine(agent_id=m.agent_id, hostname=m.hostname, kernel=m.kernel, labels=m.labels)


def _inventory_pb(procs) -> pb.Inventory:
    return pb.Inventory(processes=[pb.GoProcess(pid=p.pid, exe=p.exe, build_id=p.build_id, go_version=p.go_version,
                                                cmdline=list(p.cmdline), start_time=p.start_time) for p in procs])


def snapshot_result(cmd: pb.SnapshotCommand) -> pb.SnapshotResult:
    """Run one snapshot command on this machine. Never raises: a process that cannot be taken is an entry
    with its reason, as in a local bundle."""
    from goprobe.request import Limits, SnapshotRequest
    from goprobe.snapshot import error_kind, take_snapshot

    pids = list(cmd.pids)
    try:
        spec: dict[str, Any] = json.loads(cmd.request_json or "{}")
        limits = Limits(**spec.get("limits", {}))
        req = SnapshotRequest.build(spec.get("functions", {}), limits=limits,
                                    goroutine_filter=spec.get("goroutine_filter"))
    except (ValueError, TypeError, GoprobeError) as exc:
        return pb.SnapshotResult(id=cmd.id, error_kind="BAD_REQUEST", error=str(exc))
    try:
        doc = take_snapshot(pids, req, backend=cmd.backend or "auto")
    except GoprobeError as exc:  # nothing could be taken: each process with the reason
        kind = error_kind(exc)
        doc = {"processes": [{"pid": p, "status": "error", "error": {"kind": kind, "message": str(exc)},
                              "goroutines": []} for p in pids]}
    except Exception as exc:  # noqa: BLE001 - an agent must answer, whatever went wrong
        log.exception("snapshot %s failed", cmd.id)
        return pb.SnapshotResult(id=cmd.id, error_kind="ERROR", error=f"{type(exc).__name__}: {exc}")
    return pb.SnapshotResult(id=cmd.id, result_json=json.dumps(doc))


class Agent:
    def __init__(self, server: str, token: str, labels: dict[str, str] | None = None, *,
                 inventory_every: float = 5.0, root_certificates: bytes | None = None,
                 agent_id: str | None = None) -> None:
        self.server = server
        self.token = token
        self.machine = inventory.machine(labels, agent_id)
        self.inventory_every = inventory_every
        self.root_certificates = root_certificates
        self.stop_event = threading.Event()
        self._scanner = inventory.Scanner()

    def _channel(self) -> grpc.Channel:
        opts = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        if self.root_certificates is not None:
            return grpc.secure_channel(self.server, grpc.ssl_channel_credentials(self.root_certificates), options=opts)
        return grpc.insecure_channel(self.server, options=opts)

    def run(self) -> None:
        """Serve until :meth:`stop`; raises :class:`AgentRefused` when the control plane refuses it."""
        backoff = 0.2
        while not self.stop_event.is_set():
            began = time.monotonic()
            try:
                self._session()
                backoff = 0.2
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.FAILED_PRECONDITION):
                    raise AgentRefused(f"the control plane at {self.server} refused this agent: "
                                       f"{exc.details()}") from None
                if time.monotonic() - began > 10.0:
                    backoff = 0.2  # it was up for a while: a fresh failure, not a series
                log.info("stream to %s broke (%s); reconnecting in %.1f s", self.server, code, backoff)
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def stop(self) -> None:
        self.stop_event.set()

    def _session(self) -> None:
        out: queue.Queue = queue.Queue()
        done = threading.Event()

        def outgoing():
            yield pb.AgentMessage(hello=pb.Hello(machine=_machine_pb(self.machine), protocol=PROTOCOL))
            yield pb.AgentMessage(inventory=_inventory_pb(self._scanner.scan()))
            while not done.is_set():
                try:
                    msg = out.get(timeout=self.inventory_every)
                except queue.Empty:
                    msg = pb.AgentMessage(inventory=_inventory_pb(self._scanner.scan()))
                if msg is None:
                    return
                yield msg

        def watch_stop():  # ends with the session: one watcher per session, never more
            while not done.is_set():
                if self.stop_event.wait(0.2):
                    out.put(None)
                    call.cancel()
                    return

        commands: queue.Queue = queue.Queue()

        def work():
            # One command at a time: two snapshots of the same process at once would fight over it.
            while True:
                cmd = commands.get()
                if cmd is None:
                    return
                out.put(pb.AgentMessage(snapshot_result=snapshot_result(cmd)))

        with self._channel() as channel:
            call = pbg.ControlStub(channel).Connect(outgoing(), metadata=auth.bearer(self.token))
            threading.Thread(target=watch_stop, daemon=True).start()
            threading.Thread(target=work, daemon=True).start()
            try:
                for msg in call:
                    if msg.WhichOneof("body") == "snapshot":
                        commands.put(msg.snapshot)
                if not self.stop_event.is_set():
                    raise _StreamEnded()
            except grpc.RpcError as exc:
                if self.stop_event.is_set() and exc.code() == grpc.StatusCode.CANCELLED:
                    return
                raise
            finally:
                done.set()
                out.put(None)
                commands.put(None)


class _StreamEnded(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "the control plane closed the stream"
