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
MAX_AGENTS = 1024


@attrs.define
class _Agent:
    machine: pb.Machine
    connected_at: float
    processes: list = attrs.field(factory=list)
    outbox: queue.Queue = attrs.field(factory=queue.Queue)
    pending: dict[str, futures.Future] = attrs.field(factory=dict)
    gone: bool = False
    lock: threading.Lock = attrs.field(factory=threading.Lock)  # pending and gone

    def ask(self, cid: str, command: pb.ServerMessage) -> futures.Future:
        """Send *command*; the future gets the agent's answer, or ConnectionError if it goes away first."""
        fut: futures.Future = futures.Future()
        with self.lock:
            if self.gone:
                fut.set_exception(ConnectionError("the agent disconnected"))
                return fut
            self.pending[cid] = fut
        self.outbox.put(command)
        return fut

    def answer(self, result: pb.SnapshotResult) -> None:
        with self.lock:
            fut = self.pending.pop(result.id, None)
        if fut is not None:
            _settle(fut, result=result)

    def forget(self, cid: str) -> None:
        with self.lock:
            self.pending.pop(cid, None)


def _settle(fut: futures.Future, result=None, exc: BaseException | None = None) -> None:
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except futures.InvalidStateError:
        pass  # settled already (the client gave up, or the agent answered as it went away)


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
        if not key:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an agent's Hello names its agent id")
        with self._lock:
            busy = key in self._agents
            if not busy:
                self._agents[key] = agent
        if busy:
            # Another live stream has this id (the same agent whose old stream is not yet known to be dead, or
            # a second agent with the same id): this one retries later; the live one is not knocked off.
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"an agent with id {key!r} is connected already")
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
                    agent.answer(msg.snapshot_result)
        except grpc.RpcError:
            pass
        finally:
            agent.outbox.put(None)

    def _drop(self, agent: _Agent) -> None:
        with agent.lock:
            agent.gone = True
            pending, agent.pending = agent.pending, {}
        agent.outbox.put(None)
        for fut in pending.values():
            _settle(fut, exc=ConnectionError("the agent disconnected"))

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
            fut = agent.ask(cid, pb.ServerMessage(snapshot=pb.SnapshotCommand(
                id=cid, pids=[p.pid for p in procs], request_json=request_json, backend=backend,
                deadline_s=timeout)))
            asked.append((agent, procs, fut, cid))
        deadline = time.monotonic() + timeout
        machines = []
        for agent, procs, fut, cid in asked:
            m = agent.machine
            entry: dict[str, Any] = {"agent_id": m.agent_id, "hostname": m.hostname, "kernel": m.kernel,
                                     "labels": dict(m.labels)}
            try:
                result = fut.result(timeout=max(0.0, deadline - time.monotonic()))
                entry["processes"] = _processes(result, procs)
            except futures.TimeoutError:
                agent.forget(cid)
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
    from goprobe.errors import GoprobeError

    if data is not None:
        Path(data).mkdir(parents=True, exist_ok=True)
    # Each agent's stream holds a worker thread for as long as it is connected, each client call one while it
    # runs: the pool is sized for MAX_AGENTS agents plus clients, and agents past that are refused.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_AGENTS + 64),
                         interceptors=[auth.TokenInterceptor(tokens)],
                         maximum_concurrent_rpcs=MAX_AGENTS + 64,
                         options=[("grpc.max_receive_message_length", 256 << 20),
                                  ("grpc.max_send_message_length", 256 << 20),
                                  ("grpc.so_reuseport", 0)])  # a second server on the port is an error
    pbg.add_ControlServicer_to_server(ControlService(), server)
    try:
        if tls is not None:
            port = server.add_secure_port(listen, grpc.ssl_server_credentials([(tls[1], tls[0])]))
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise GoprobeError(f"cannot listen on {listen}: {exc} (the address is in use, not this machine's, or "
                           "the TLS certificate and key do not match)") from None
    if port == 0:
        raise GoprobeError(f"cannot listen on {listen}: the address is in use or not this machine's")
    server.start()
    return server, port
