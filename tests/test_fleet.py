"""The fleet (issue 12, first part): a control plane, agents that dial in, clients that ask for bundled
snapshots; bearer tokens with roles; faults (an agent killed, a control plane restarted, a slow agent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import build_fixture
from goprobe.fleet.agent import Agent, AgentRefused
from goprobe.fleet.client import Client, FleetError
from goprobe.fleet.control import serve
from goprobe.fleet.inventory import GoProcessInfo, MachineInfo
from goprobe.fleet.proto.generate import HERE, generate
from goprobe.fleet.selection import Rule
from goprobe.errors import RequestError
from goprobe.testing.fixture_process import running

AGENT_TOKEN, CLIENT_TOKEN = "agent-" + "a" * 26, "client-" + "c" * 25


def test_generated_protocol_modules_are_current(tmp_path):
    """fleet_pb2*.py are what ``python -m goprobe.fleet.proto.generate`` makes of fleet.proto."""
    for made in generate(tmp_path):
        assert made.read_bytes() == (HERE / made.name).read_bytes(), f"regenerate {made.name}"


_PROC = GoProcessInfo(42, "/srv/bin/shop", "bid", "go1.27.3", ("/srv/bin/shop", "--port", "80"), 0.0)
_MACHINE = MachineInfo("m1", "host1", "6.18", {"zone": "eu"})


def test_selection_rules():
    assert Rule.parse("exe=shop").matches(_MACHINE, _PROC)
    assert Rule.parse("exe=/srv/bin/shop,pid=42").matches(_MACHINE, _PROC)
    assert not Rule.parse("exe=/bin/shop").matches(_MACHINE, _PROC)
    assert Rule.parse("cmdline=--port 80,label=zone=eu,agent=m1").matches(_MACHINE, _PROC)
    assert not Rule.parse("label=zone=us").matches(_MACHINE, _PROC)
    # Malformed rules, and rules that would select every process of the fleet ("exe=" from an unset variable)
    for bad in ("exe", "color=red", "pid=x", "pid=0", "label=zone", "exe=", "", " , "):
        with pytest.raises(RequestError):
            Rule.parse(bad)


@given(st.sampled_from(["exe", "cmdline", "label", "pid", "agent"]), st.text(min_size=1, max_size=8).filter(
    lambda s: "," not in s and "=" not in s and s.strip() == s))
def test_a_rule_with_a_field_that_differs_never_matches(field, value):
    """Every field a rule gives must match: one field set to a value the process does not have excludes it."""
    other = {"exe": "x" + value, "cmdline": "\x00" + value, "label": f"zone=\x00{value}", "pid": "7",
             "agent": "m-" + value}[field]
    assert not Rule.parse(f"{field}={other}").matches(_MACHINE, _PROC)
    assert Rule().matches(_MACHINE, _PROC)  # an empty rule: every process


@pytest.fixture()
def control():
    server, port = serve("127.0.0.1:0", {AGENT_TOKEN: "agent", CLIENT_TOKEN: "client"})
    yield f"127.0.0.1:{port}", server
    server.stop(0)


def _start_agent(address: str, agent_id: str, labels: dict[str, str], token: str = AGENT_TOKEN):
    agent = Agent(address, token, labels, agent_id=agent_id, inventory_every=0.3)
    errors: list[BaseException] = []

    def run():
        try:
            agent.run()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return agent, t, errors


def _wait_for(client: Client, pred, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        agents = client.agents()
        if pred(agents):
            return agents
        assert time.monotonic() < deadline, agents
        time.sleep(0.1)


def test_tokens_have_roles(control):
    address, _server = control
    with Client(address, "nobody-" + "x" * 20) as stranger, pytest.raises(FleetError, match="UNAUTHENTICATED"):
        stranger.agents()
    with Client(address, AGENT_TOKEN) as agent_as_client, pytest.raises(FleetError, match="PERMISSION_DENIED"):
        agent_as_client.snapshot(["exe=x"])
    agent, t, errors = _start_agent(address, "sneaky", {}, token=CLIENT_TOKEN)  # a client token cannot serve
    t.join(timeout=20)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], AgentRefused), errors
    assert "may not call Connect" in str(errors[0])
    # A second agent claiming a connected agent's id does not knock it off (it is refused and retries)
    first, t1, _e1 = _start_agent(address, "m-dup", {"n": "1"})
    with Client(address, CLIENT_TOKEN) as client:
        _wait_for(client, lambda ags: [a["labels"] for a in ags] == [{"n": "1"}])
        second, t2, _e2 = _start_agent(address, "m-dup", {"n": "2"})
        time.sleep(1.5)
        assert [a["labels"] for a in client.agents()] == [{"n": "1"}]
    for a, th in ((first, t1), (second, t2)):
        a.stop()
        th.join(timeout=10)
        assert not th.is_alive()


def test_bundled_snapshot_across_agents(control, newest_version):
    """Two agents (two "machines" with labels), a process selected on each: one bundle with both, each with
    the goroutines the program itself reports and the requested variable; the agents' inventories name the
    processes with their Go version and build id."""
    address, _server = control
    binary = build_fixture("goroutines", newest_version, "debug")  # every depth readable
    eu = _start_agent(address, "m-eu", {"zone": "eu"})
    us = _start_agent(address, "m-us", {"zone": "us"})
    try:
        with running(binary) as p1, running(binary) as p2, Client(address, CLIENT_TOKEN) as client:
            agents = _wait_for(client, lambda ags: len(ags) == 2 and all(
                {p1.pid, p2.pid} <= {p["pid"] for p in a["processes"]} for a in ags))
            listed = next(p for p in agents[0]["processes"] if p["pid"] == p1.pid)
            assert listed["go_version"] == f"go{newest_version}" and listed["build_id"]
            bundle = client.snapshot([f"pid={p1.pid},agent=m-eu", f"pid={p2.pid},label=zone=us"],
                                     {"main.recurse": ["depth"]})
            truths = {p1.pid: p1.truth, p2.pid: p2.truth}
    finally:
        for agent, t, _e in (eu, us):
            agent.stop()
            t.join(timeout=10)
    assert "partial" not in bundle and bundle["selected"] == 2
    by_agent = {m["agent_id"]: m for m in bundle["machines"]}
    assert by_agent["m-eu"]["labels"] == {"zone": "eu"}
    for agent_id, pid in (("m-eu", p1.pid), ("m-us", p2.pid)):
        (proc,) = by_agent[agent_id]["processes"]
        assert proc["pid"] == pid and proc["status"] == "ok"
        goids = {g["goid"] for g in proc["goroutines"]}
        assert set(truths[pid]["goroutines"].values()) - goids <= {truths[pid]["goroutines"].get("busy")}
        depths = sorted(f["variables"]["depth"] for g in proc["goroutines"] for f in g["frames"]
                        if f["function"] == "main.recurse")
        assert depths == list(range(1, truths[pid]["recurse_depth"] + 1))


def test_slow_agent_and_gone_process_leave_a_partial_result(control, newest_version):
    """A deadline shorter than the work: the agent's processes are TIMEOUT, the result is partial, not an
    error; an agent that disconnects mid-command leaves its processes AGENT_GONE; the target is never left
    stopped."""
    address, _server = control
    binary = build_fixture("goroutines", newest_version, "opt")
    agent, t, _errors = _start_agent(address, "m-slow", {})
    try:
        with running(binary) as proc, Client(address, CLIENT_TOKEN) as client:
            _wait_for(client, lambda ags: any(p["pid"] == proc.pid for a in ags for p in a["processes"]))
            bundle = client.snapshot([f"pid={proc.pid}"], {"main.recurse": ["depth"]}, timeout=0.001)
            (m,) = bundle["machines"]
            assert bundle["partial"] and m["processes"][0]["error"]["kind"] == "TIMEOUT"
            # Mid-command, the agent goes away (its stream is cancelled)
            result: dict = {}
            asker = threading.Thread(target=lambda: result.update(client.snapshot([f"pid={proc.pid}"], timeout=60)))
            asker.start()
            time.sleep(0.05)
            agent.stop()
            asker.join(timeout=90)
            kinds = {p.get("error", {}).get("kind", p["status"]) for m in result["machines"] for p in m["processes"]}
            assert kinds == {"AGENT_GONE"}, result
            # The agent's own snapshot may still be finishing: the target must run again soon, not stay stopped
            deadline = time.monotonic() + 30
            while _state(proc.pid) in ("t", "T"):
                assert time.monotonic() < deadline, "the target was left stopped"
                time.sleep(0.1)
            assert proc.proc.poll() is None
    finally:
        agent.stop()
        t.join(timeout=10)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "goprobe.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_cli_server_agents_and_restart(tmp_path, newest_version):
    """``goprobe server`` and two ``goprobe agent`` processes; ``goprobe snapshot --server --select``; the
    control plane restarted on the same address: the agents reconnect by themselves; an agent killed with
    SIGKILL leaves the control plane serving the other."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "tokens").write_text(f"agent {AGENT_TOKEN}\nclient {CLIENT_TOKEN}\n")
    (tmp_path / "agent.token").write_text(AGENT_TOKEN)
    (tmp_path / "client.token").write_text(CLIENT_TOKEN)
    binary = build_fixture("goroutines", newest_version, "opt")
    procs: list[subprocess.Popen] = []

    def server(listen: str) -> str:
        s = _cli("server", "--listen", listen, "--data", str(data))
        procs.append(s)
        line = s.stdout.readline()
        assert "listening on" in line, s.stderr.read() if s.poll() is not None else line
        return line.split()[-1]

    try:
        address = server("127.0.0.1:0")
        for name, zone in (("m1", "eu"), ("m2", "us")):
            procs.append(_cli("agent", "--server", address, "--token-file", str(tmp_path / "agent.token"),
                              "--label", f"zone={zone}", "--id", name))
        with running(binary) as target, Client(address, CLIENT_TOKEN) as client:
            _wait_for(client, lambda ags: len(ags) == 2 and all(
                any(p["pid"] == target.pid for p in a["processes"]) for a in ags))
            r = subprocess.run([sys.executable, "-m", "goprobe.cli", "snapshot", "--server", address, "--token-file",
                                str(tmp_path / "client.token"), "--select", f"pid={target.pid},label=zone=eu",
                                "--json"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            doc = json.loads(r.stdout)
            assert [m["agent_id"] for m in doc["machines"]] == ["m1"]
            assert doc["machines"][0]["processes"][0]["status"] == "ok"
            # Restart the control plane on the same port: both agents come back
            procs[0].send_signal(signal.SIGTERM)
            assert procs[0].wait(timeout=20) == 0
            procs[0] = _cli("server", "--listen", address, "--data", str(data))
            assert "listening on" in procs[0].stdout.readline()
        with Client(address, CLIENT_TOKEN) as client:
            _wait_for(client, lambda ags: len(ags) == 2)
            procs[2].kill()  # agent m2, without any goodbye
            _wait_for(client, lambda ags: [a["agent_id"] for a in ags] == ["m1"])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()


def test_tls(tmp_path):
    """A control plane serving TLS: a client and an agent that trust its certificate connect; a plaintext
    client does not."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server, port = serve("127.0.0.1:0", {AGENT_TOKEN: "agent", CLIENT_TOKEN: "client"},
                         tls=(cert.read_bytes(), key.read_bytes()))
    address = f"localhost:{port}"
    agent = Agent(address, AGENT_TOKEN, {}, agent_id="m-tls", inventory_every=0.3, root_certificates=cert.read_bytes())
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    try:
        with Client(address, CLIENT_TOKEN, root_certificates=cert.read_bytes()) as client:
            assert [a["agent_id"] for a in _wait_for(client, lambda ags: len(ags) == 1)] == ["m-tls"]
        with Client(address, CLIENT_TOKEN) as plain, pytest.raises(FleetError, match="UNAVAILABLE"):
            plain.agents(timeout=3)
    finally:
        agent.stop()
        t.join(timeout=10)
        server.stop(0)
