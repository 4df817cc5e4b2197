"""``goprobe.Client``: a program's (or the CLI's) view of the control plane."""

from __future__ import annotations

import json
from typing import Any

import grpc

from goprobe.errors import GoprobeError
from goprobe.fleet import auth
from goprobe.fleet.proto import fleet_pb2 as pb
from goprobe.fleet.proto import fleet_pb2_grpc as pbg
from goprobe.fleet.selection import Rule


class FleetError(GoprobeError):
    """The control plane refused a request or could not be reached."""


class Client:
    """``Client("host:7070", token).snapshot(["exe=shop"], {"main.(*Server).handle": ["req.URL.Path"]})``."""

    def __init__(self, address: str, token: str, *, root_certificates: bytes | None = None) -> None:
        opts = [("grpc.max_receive_message_length", 256 << 20)]
        creds = grpc.ssl_channel_credentials(root_certificates) if root_certificates is not None else None
        self._channel = (grpc.secure_channel(address, creds, options=opts) if creds is not None
                         else grpc.insecure_channel(address, options=opts))
        self._stub = pbg.ControlStub(self._channel)
        self._meta = auth.bearer(token)
        self.address = address

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request, timeout: float):
        try:
            return method(request, metadata=self._meta, timeout=timeout)
        except grpc.RpcError as exc:
            raise FleetError(f"control plane at {self.address}: {exc.code().name}: {exc.details()}") from None

    def agents(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The connected agents: machine (agent_id, hostname, kernel, labels) and Go processes."""
        reply = self._call(self._stub.ListAgents, pb.ListAgentsRequest(), timeout)
        return [{"agent_id": a.machine.agent_id, "hostname": a.machine.hostname, "kernel": a.machine.kernel,
                 "labels": dict(a.machine.labels), "connected_at": a.connected_at,
                 "processes": [{"pid": p.pid, "exe": p.exe, "build_id": p.build_id, "go_version": p.go_version,
                                "cmdline": list(p.cmdline), "start_time": p.start_time} for p in a.processes]}
                for a in reply.agents]

    def snapshot(self, select: list[str | Rule], functions: dict[str, list[str]] | None = None, *,
                 limits: dict[str, Any] | None = None, goroutine_filter: str | None = None,
                 backend: str = "auto", timeout: float = 60.0) -> dict[str, Any]:
        """One bundled snapshot of the processes any of *select*'s rules matches (``"exe=shop"``,
        ``"label=zone=eu,cmdline=--port 80"``; see :class:`~goprobe.fleet.selection.Rule`): machines →
        processes → goroutines, each process with its status; ``partial`` when some could not be taken."""
        rules = [r if isinstance(r, Rule) else Rule.parse(r) for r in select]
        spec = {"functions": functions or {}, "limits": limits or {}, "goroutine_filter": goroutine_filter}
        req = pb.SnapshotRequest(select=[pb.Rule(exe=r.exe, cmdline=r.cmdline, machine_label=r.machine_label,
                                                 pid=r.pid, agent_id=r.agent_id) for r in rules],
                                 request_json=json.dumps(spec), backend=backend, timeout_s=timeout)
        reply = self._call(self._stub.Snapshot, req, timeout + 10)
        return json.loads(reply.bundle_json)
