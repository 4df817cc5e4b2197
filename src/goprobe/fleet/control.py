"""The control plane: agents dial in and keep a stream open; clients ask it for bundled snapshots.

Each agent reports its machine and its Go processes (kept current); a snapshot request selects processes by
rules, goes to every agent that has some, and comes back as one bundle: machines → processes → goroutines,
with a status per process. A partial result is a result: an agent that does not answer in time, or goes away
meanwhile, leaves its processes marked (``TIMEOUT``, ``AGENT_GONE``) and the others are still there.

Today each agent runs the whole local pipeline (compile, pause, decode) for its processes; the stages are
moving apart so that the control plane compiles once per binary and decodes (see docs/fleet.md).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import attrs
import grpc

from goprobe.fleet import auth
from goprobe.fleet.proto import fleet_pb2 as pb
from goprobe.fleet.proto import fleet_pb2_grpc as pbg
from goprobe.fleet.selection import Rule, select

log = logging.getLogger("goprobe.fleet")
PROTOCOL = 1


@attrs.define
class _Agent:
    machine: pb.Machine
    connected_at: float
    processes: list = attrs.field(factory=list)
    outbox: queue.Queue = attrs.field(factory=queue.Queue)
    pending: dict[str, futures.Future] = attrs.field(factory=dict)
    gone: bool = False


class ControlService(pbg.ControlServicer):
    def __init__(self) -> None:
        self._agents: dict[str, _Agent] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- agents ----------------------------------------------------------------------------------------------
    def Connect(self, request_iterator, context):
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        if first.WhichOneof("body") != "hello":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an agent's stream starts with Hello")
        if first.hello.protocol != PROTOCOL:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"protocol {first.hello.protocol}; this control plane speaks {PROTOCOL}: upgrade goprobe")
        agent = _Agent(first.hello.machine, time.time())
        key = agent.machine.agent_id
        with self._lock:
            old = self._agents.get(key)
            self._agents[key] = agent
        if old is not None:  # the same agent reconnected: its old stream is over
            self._drop(old)
        log.info("agent %s (%s) connected", key, agent.machine.hostname)
        reader = threading.Thread(target=self._read, args=(agent, request_iterator), daemon=True)
        reader.start()
        context.add_callback(lambda: agent.outbox.put(None))
        try:
            while True:
                msg = agent.outbox.get()
                if msg is None or not context.is_active():
                    break
                yield msg
        finally:
            with self._lock:
                if self._agents.get(key) is agent:
                    del self._agents[key]
            self._drop(agent)
            log.info("agent %s disconnected", key)

    def _read(self, agent: _Agent, messages) -> None:
        try:
            for msg in messages:
                kind = msg.WhichOneof("body")
                if kind == "inventory":
                    agent.processes = list(msg.inventory.processes)
                elif kind == "snapshot_result":
                    fut = agent.pending.pop(msg.snapshot_result.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg.snapshot_result)
        except grpc.RpcError:
            pass
        finally:
            agent.outbox.put(None)

    def _drop(self, agent: _Agent) -> None:
        agent.gone = True
        agent.outbox.put(None)
        for fut in list(agent.pending.values()):
            if not fut.done():
                fut.set_exception(ConnectionError("the agent disconnected"))
        agent.pending.clear()

    # -- clients ---------------------------------------------------------------------------------------------
    def ListAgents(self, request, context):
        with self._lock:
            agents = list(self._agents.values())
        return pb.ListAgentsReply(agents=[pb.AgentInfo(machine=a.machine, processes=a.processes,
                                                       connected_at=a.connected_at) for a in agents])

    def Snapshot(self, request, context):
        rules = [Rule(r.exe, r.cmdline, r.machine_label, r.pid, r.agent_id) for r in request.select]
        if not rules:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "select at least one rule (e.g. exe=NAME)")
        try:
            json.loads(request.request_json or "{}")
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request_json is not JSON: {exc}")
        timeout = request.timeout_s or 60.0
        return pb.SnapshotReply(bundle_json=json.dumps(self.bundle(rules, request.request_json or "{}",
                                                                   request.backend or "auto", timeout)))

    def bundle(self, rules: list[Rule], request_json: str, backend: str, timeout: float) -> dict[str, Any]:
        """Send the snapshot to every agent with selected processes; wait for all (at most *timeout*)."""
        with self._lock:
            agents = list(self._agents.values())
        asked = []
        for agent in agents:
            procs = select(rules, agent.machine, agent.processes)
            if not procs:
                continue
            cid = f"s{next(self._ids)}"
            fut: futures.Future = futures.Future()
            agent.pending[cid] = fut
            agent.outbox.put(pb.ServerMessage(snapshot=pb.SnapshotCommand(
                id=cid, pids=[p.pid for p in procs], request_json=request_json, backend=backend,
                deadline_s=timeout)))
            asked.append((agent, procs, fut))
        deadline = time.monotonic() + timeout
        machines = []
        for agent, procs, fut in asked:
            m = agent.machine
            entry: dict[str, Any] = {"agent_id": m.agent_id, "hostname": m.hostname, "kernel": m.kernel,
                                     "labels": dict(m.labels)}
            try:
                result = fut.result(timeout=max(0.0, deadline - time.monotonic()))
                entry["processes"] = _processes(result, procs)
            except futures.TimeoutError:
                entry["processes"] = _failed(procs, "TIMEOUT", f"the agent did not answer within {timeout:g} s")
            except ConnectionError as exc:
                entry["processes"] = _failed(procs, "AGENT_GONE", str(exc))
            machines.append(entry)
        selected = sum(len(m["processes"]) for m in machines)
        ok = sum(p.get("status") == "ok" for m in machines for p in m["processes"])
        out: dict[str, Any] = {"machines": machines, "selected": selected}
        if ok < selected:
            out["partial"] = True
        return out


def _processes(result: pb.SnapshotResult, procs) -> list[dict[str, Any]]:
    if result.error_kind:
        return _failed(procs, result.error_kind, result.error)
    doc = json.loads(result.result_json)
    return doc.get("processes", [])


def _failed(procs, kind: str, message: str) -> list[dict[str, Any]]:
    return [{"pid": p.pid, "status": "error", "error": {"kind": kind, "message": message}, "goroutines": []}
            for p in procs]


def serve(listen: str, tokens: dict[str, str], *, data: str | Path | None = None,
          tls: tuple[bytes, bytes] | None = None) -> tuple[grpc.Server, int]:
    """Start the control plane on *listen* (HOST:PORT; port 0 picks one); returns the server and its port.
    *tls*: (certificate chain, private key) PEM bytes."""
    if data is not None:
        Path(data).mkdir(parents=True, exist_ok=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), interceptors=[auth.TokenInterceptor(tokens)],
                         options=[("grpc.max_receive_message_length", 256 << 20),
                                  ("grpc.max_send_message_length", 256 << 20)])
    pbg.add_ControlServicer_to_server(ControlService(), server)
    if tls is not None:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        from goprobe.errors import GoprobeError

        raise GoprobeError(f"cannot listen on {listen}: the address is in use or not this machine's")
    server.start()
    return server, port
