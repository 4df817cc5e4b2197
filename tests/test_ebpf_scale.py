"""The verifier at scale: an event request of 100 functions × 20 expressions (generated from the `calls` fixture
binary: its own functions and those of the standard library packages linked into it) compiles to programs the
kernel accepts, attaches to a running process all at once, and leaves the process working. A rejection names
the probe and shows the verifier log's tail. A snapshot with a request of the same size goes through the eBPF
backend too.

Run time (2 shared cores): ~1 min per Go version for the events test (run for the oldest and newest Go version
of the run), ~5 s for the rejection, ~1.5-2 min for the snapshot (newest version only).
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest

from conftest import VERSIONS, build_fixture
from ebpf_support import Fixture, no_leaked_kernel_fds, requires_bpf  # noqa: F401 (autouse fixture)
from goprobe.backends.ebpf import event_codegen as G
from goprobe.backends.ebpf.errors import VerifierError
from goprobe.dwarf.binary import GoBinary
from goprobe.events import stream_events
from goprobe.request import EventRequest
from goprobe.snapshot import load_bias, take_snapshot
from goprobe.testing.fixture_process import running
from goprobe.testing.requests import DEFAULT_PACKAGES, measure_event_request, scale_request

pytestmark = requires_bpf

SCALE_VERSIONS = tuple(dict.fromkeys((VERSIONS[0], VERSIONS[-1])))
# The fixture's own code first, then what it calls on every request (JSON, buffered I/O), then the rest.
PACKAGES = ("main", "encoding/json", "bufio", *DEFAULT_PACKAGES[1:])


@pytest.mark.parametrize("version", SCALE_VERSIONS, ids=lambda v: f"go{v}")
def test_100_functions_x_20_expressions_verify_attach_and_leave_the_process_working(version, tmp_path):
    binary = build_fixture("calls", version, "opt")
    log = tmp_path / "calls.jsonl"
    with GoBinary(binary) as b, running(binary, env={"GOPROBE_CALL_LOG": str(log)}) as proc:
        request = scale_request(b, 100, 20, PACKAGES)
        assert len(request) == 100 and sum(map(len, request.values())) == 2000
        fx = Fixture(proc, log)
        assert fx.command("call 3") == "done 3"
        unprobed = [r["ret"] for r in fx.log()]
        entries = {fn: b.code.for_function(b.function(fn)).prologue_end + load_bias(b, fx.pid) for fn in request}
        with ExitStack() as stack:
            streams = {fn: stack.enter_context(stream_events(
                [fx.pid], EventRequest.build(fn, exprs, duration_s=60), binary=b, ring_bytes=1 << 16,
                drain="thread"))
                for fn, exprs in request.items()}
            programs = [p for s in streams.values() for p in s.session.programs]
            assert len(programs) == 100  # one entry site each
            assert max(p.stats.processed_insns for p in programs) < 1_000_000 // 2  # room to spare
            assert all(fx.peek(pc) == b"\xcc" for pc in entries.values())
            # Everything attached at once: the program still answers, and the probes on its path fire.
            assert fx.command("call 20") == "done 20"
            fired = {fn: s for fn, s in streams.items() if s.counters().hits}
            assert "main.(*Server).Serve" in fired and len(fired) >= 10
            for s in fired.values():
                s.stop()
                events = list(s)  # what the ring holds, decoded
                assert events and s.decode_errors == 0
                assert set(events[0]["values"]) == {c.text for c in s.request.captures}
        # Detached: the original instructions are back and the program computes what it computed unprobed.
        for fn, pc in entries.items():
            with GoBinary(binary) as fresh:
                want = fresh.elf.read_vaddr(pc - load_bias(b, fx.pid), 1)
            assert fx.peek(pc) == want != b"\xcc", fn
        before = len(fx.log())
        assert fx.command("call 3") == "done 3"
        assert [r["ret"] for r in fx.log()[before:]] == unprobed


def test_a_rejected_program_names_the_probe_and_shows_the_verifier_log(monkeypatch):
    """Without the verification budget a costly capture (a string replacer's trie, followed through nested
    slices of pointers) exceeds the verifier's million instructions: the error says where and why."""
    binary = build_fixture("calls", VERSIONS[-1], "opt")
    monkeypatch.setattr(G, "PROGRAM_UNITS", 1 << 40)
    with running(binary) as proc, pytest.raises(VerifierError) as info:
        stream_events([proc.pid], EventRequest.build("strings.(*genericReplacer).lookup", ["s", "r", "ignoreRoot"]))
    text = str(info.value)
    assert "probe entry of strings.(*genericReplacer).lookup at 0x" in text
    # The expression is named: only the trie is rejected on its own.
    assert "rejects 'r' even alone" in text and "'s'" not in text
    assert "too large" in text and "last " in text and "log lines" in text


def test_snapshot_with_100_functions_x_20_expressions_through_ebpf():
    """The snapshot programs are sharded by their own code generator (not sized by the event budget)."""
    binary = build_fixture("kinds", VERSIONS[-1], "opt")
    with GoBinary(binary) as b, running(binary) as proc:
        request = scale_request(b, 100, 20)
        assert len(request) == 100
        doc = take_snapshot([proc.pid], request, binary=b, backend="ebpf")
        (process,) = doc["processes"]
        assert process.get("backend", "ebpf") == "ebpf" and process["goroutines"]
        assert os.path.exists(f"/proc/{proc.pid}")


@pytest.mark.parametrize("at_return", [False, True], ids=["entry", "return"])
def test_event_programs_for_every_kinds_variable_verify(go_version, build_mode, at_return):
    """Every function of the kinds fixture probed with every variable it reports (every Go kind): each program
    loads, for every Go release and build mode."""
    from test_ebpf_snapshot import _kinds_request

    binary = build_fixture("kinds", go_version, build_mode)
    with GoBinary(binary) as b, running(binary) as proc:
        request = _kinds_request(b, proc.truth)
    with GoBinary(binary) as b:
        figures = measure_event_request(b, request, at_return=at_return)
    failed = [(f.function, f.error) for f in figures if f.error]
    assert not failed
    assert len({f.function for f in figures}) == len(request) >= 10


def test_what_the_verification_budget_leaves_out_is_named():
    """A capture whose code the per-program budget cuts (here a map with interface keys among ten other maps:
    walked in the kernel only when it fits) is named in the stream's ``budget_cuts``, in the summary and by the CLI; a small request
    has none."""
    import subprocess
    import sys

    from test_ebpf_snapshot import _kinds_request

    binary = build_fixture("kinds", VERSIONS[-1], "opt")
    with GoBinary(binary) as b, running(binary) as proc:
        maps = _kinds_request(b, proc.truth)["main.maps"]  # every map of the function: they share the budget
        assert "byIface" in maps
        with stream_events([proc.pid], "main.maps", maps) as s:
            cuts = s.budget_cuts
            assert s.summary()["budget_cuts"] == list(cuts)
        assert any(n.startswith("main.maps: byIface: ") and "map entries not walked" in n for n in cuts), cuts
        with stream_events([proc.pid], "main.scalars", ["i", "b"]) as s:
            assert s.budget_cuts == ()
        cli = subprocess.run([sys.executable, "-m", "goprobe.cli", "events", str(proc.pid), "--probe",
                              f"main.maps({', '.join(maps)})", "--duration", "0.2"], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert "goprobe: note: main.maps: byIface: map entries not walked" in cli.stderr
