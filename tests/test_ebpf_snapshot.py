"""Snapshots through the eBPF backend: in the same pause, the kernel program and goprobe's interpreter must
produce the same document (every fixture, Go release and build mode); the backend choice in the API and CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import build_fixture
from ebpf_support import no_leaked_kernel_fds, requires_bpf  # noqa: F401 (autouse fixture)
from goprobe.backends.ebpf.snapshot_session import EbpfSnapshotter, _groups, find_trigger
from goprobe.backends.interpreter.snapshot import run_snapshot, running_goroutines
from goprobe.dwarf.binary import GoBinary
from goprobe.errors import GoprobeError
from goprobe.ir.snapshot import rebase
from goprobe.process import pause
from goprobe.snapshot import _as_request, compile_request, decode_snapshot, load_bias, take_snapshot
from goprobe.testing.fixture_process import running

pytestmark = requires_bpf


def _kinds_request(b: GoBinary, truth) -> dict[str, list[str]]:
    """Every variable the fixture reports that this build kept: all Go kinds, in many frames."""
    request: dict[str, list[str]] = {}
    for v in truth["variables"]:
        names = {x.name for fn in b.functions(v["func"]) for x in fn.variables} | {
            x.name for _c, call in b.inlined_copies(v["func"].replace("[...]", "")) for x in call.variables}
        if v["name"] in names and v["name"] not in request.setdefault(v["func"], []):
            request[v["func"]].append(v["name"])
    return request


def _both_in_one_pause(binary, args=(), request_of=lambda b, truth: {}, trigger="uprobe"):
    """(eBPF document, interpreter document) of one pause of the fixture. *trigger*: the program runs inside
    the target (a stepped thread hits its uprobe) or from a task iterator."""
    with GoBinary(binary, use_cache=False) as b, running(binary, args) as proc:
        return documents_of_one_pause(b, proc.pid, request_of(b, proc.truth), trigger)


def documents_of_one_pause(b: GoBinary, pid: int, request, trigger="uprobe", loads_whole=False):
    """(eBPF document, interpreter document) of *request* in one pause of process *pid* (binary *b*).
    *loads_whole*: check that no program was found too large (and then split or made small)."""
    req = _as_request(request, None, None)
    bias = load_bias(b, pid)
    plan = rebase(compile_request(b, req), bias)
    where = find_trigger(b, f"/proc/{pid}/exe", bias) if trigger == "uprobe" else None
    assert (where is not None) == (trigger == "uprobe")
    with EbpfSnapshotter(plan, pid, req.limits, trigger=where) as snapper:
        assert not loads_whole or snapper.rejections == 0, snapper.rejections
        with pause(pid) as paused:
            gated = snapper.run(paused, lambda: running_goroutines(plan, paused.memory, paused.threads,
                                                                   req.limits))
            running_now = running_goroutines(plan, paused.memory, paused.threads, req.limits)
            # The program counts goroutines on a thread; goprobe looks for them only when it found some.
            assert gated is not None or not running_now or where is None
            fixups = snapper.resolve_fixups(paused.memory, req.limits)
            raw_interp = run_snapshot(plan, paused.memory, paused.threads, req.limits)
        raw_ebpf = snapper.raw_snapshot(snapper.records(), running_now, fixups)
    ebpf = decode_snapshot(raw_ebpf, plan, b, pid=pid)
    interp = decode_snapshot(raw_interp, plan, b, pid=pid)
    return ebpf, interp


def test_kinds_snapshot_equals_the_interpreters_in_the_same_pause(go_version, build_mode):
    ebpf, interp = _both_in_one_pause(build_fixture("kinds", go_version, build_mode), request_of=_kinds_request)
    assert ebpf == interp
    captured = [v for g in ebpf["goroutines"] for f in g["frames"] for v in f.get("variables", {}).values()]
    assert len(captured) >= 60


@pytest.mark.parametrize("trigger", ["uprobe", "iterator"])
def test_map_lookups_equal_the_interpreters(newest_version, build_mode, trigger):
    """m[key] on small and large maps (2000 entries, searched by goprobe in the pause when the program hands
    the capture over at its root), keys present and absent, string and integer keys."""
    lookups = ['small["a"]', "big[7]", "big[13993]", "big[123456]", 'inverse["v7"]', 'copied["extra"]',
               'copied["nope"]', "len(big)"]
    ebpf, interp = _both_in_one_pause(build_fixture("kinds", newest_version, build_mode),
                                      request_of=lambda b, truth: {"main.maps": lookups}, trigger=trigger)
    assert ebpf == interp
    values = [f["variables"] for g in ebpf["goroutines"] for f in g["frames"] if "variables" in f]
    assert len(values) == 1
    v = values[0]
    assert v["big[7]"] == "v1" and v["big[13993]"] == "v1999" and v["len(big)"] == 2000
    assert v["big[123456]"] == {"@unavailable": "key 123456 is not in the map"}
    assert v['copied["nope"]'] == {"@unavailable": 'key "nope" is not in the map'}


@pytest.mark.parametrize("trigger", ["uprobe", "iterator"])
def test_snapshot_programs_stay_cheap_to_verify(newest_version, build_mode, trigger):
    """Every variable of the kinds fixture: each program of the request (one per SHARD_CAPTURES captures) loads
    as planned, none split for being too large, each well under the verifier's million instructions. Paths that
    multiply across subprogram calls once made a three-capture program cost over a million."""
    binary = build_fixture("kinds", newest_version, build_mode)
    with GoBinary(binary, use_cache=False) as b, running(binary) as proc:
        req = _as_request(_kinds_request(b, proc.truth), None, None)
        bias = load_bias(b, proc.pid)
        plan = rebase(compile_request(b, req), bias)
        where = find_trigger(b, f"/proc/{proc.pid}/exe", bias) if trigger == "uprobe" else None
        with EbpfSnapshotter(plan, proc.pid, req.limits, trigger=where) as snapper:
            assert len(snapper.parts) == len(_groups(plan, snapper.shard_captures))
            assert len(snapper.shards) == len(snapper.parts) * snapper.workers
            processed = [shard.program.stats.processed_insns for shard in snapper.shards]
    assert all(n > 0 for n in processed)
    assert max(processed) < (300_000 if trigger == "uprobe" else 800_000), processed


def test_task_iterator_trigger_gives_the_same_snapshot(newest_version):
    ebpf, interp = _both_in_one_pause(build_fixture("kinds", newest_version, "opt"),
                                      request_of=_kinds_request, trigger="iterator")
    assert ebpf == interp
    assert sum(len(f.get("variables", {})) for g in ebpf["goroutines"] for f in g["frames"]) >= 40


def test_goroutine_stacks_equal_the_interpreters_in_the_same_pause(go_version, build_mode):
    ebpf, interp = _both_in_one_pause(build_fixture("goroutines", go_version, build_mode), ["-n", "300"])
    assert ebpf == interp
    assert len(ebpf["goroutines"]) > 300


def test_backend_choice_in_api_and_cli(newest_version):
    binary = build_fixture("kinds", newest_version, "debug")
    with running(binary) as proc:
        doc = take_snapshot([proc.pid], {"main.pointers": ["*pp", "a.Next.Name"]}, backend="ebpf")["processes"][0]
        assert doc["backend"] == "ebpf" and doc["pause_ns"] > 0
        frame = next(f for g in doc["goroutines"] for f in g["frames"] if f["function"] == "main.pointers")
        want = {v["name"]: v["value"] for v in proc.truth["variables"] if v["func"] == "main.pointers"}
        assert frame["variables"]["a.Next.Name"] == want["a"]["value"]["Next"]["value"]["Name"]
        with pytest.raises(GoprobeError, match="unknown backend"):
            take_snapshot([proc.pid], {}, backend="gpu")
        out = subprocess.run([sys.executable, "-m", "goprobe.cli", "snapshot", str(proc.pid), "--backend", "auto",
                              "-c", "main.pointers:*pp", "--json"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        (cli_doc,) = json.loads(out.stdout)["processes"]
        assert cli_doc["backend"] == "ebpf"
        cli_frame = next(f for g in cli_doc["goroutines"] for f in g["frames"] if f["function"] == "main.pointers")
        assert cli_frame["variables"]["*pp"] == frame["variables"]["*pp"]


@pytest.mark.parametrize("fixture", ["kinds", "goroutines"])
def test_a_pause_held_by_the_helper_gives_the_interpreters_document(newest_version, build_mode, fixture):
    """The snapshot path's pause is held by the helper process: the program's records and the goroutines on
    a thread (registers asked of the helper) decode to what the interpreter reads in that same pause. With
    the arm's idle conditions the helper ends the pause with the step exactly when nothing is left to read
    (no goroutine on a thread, no value left to the interpreter)."""
    import attrs

    from goprobe.process.remote_pause import run_paused_in_helper

    binary = build_fixture(fixture, newest_version, build_mode)
    with GoBinary(binary, use_cache=False) as b, running(binary) as proc:
        req = _as_request(_kinds_request(b, proc.truth) if fixture == "kinds" else {}, None, None)
        bias = load_bias(b, proc.pid)
        plan = rebase(compile_request(b, req), bias)
        where = find_trigger(b, f"/proc/{proc.pid}/exe", bias)
        with EbpfSnapshotter(plan, proc.pid, req.limits, trigger=where) as snapper:
            held = attrs.evolve(snapper.step_arm, thread_words=(), pending_rings=())  # the interpreter reads too

            def body(view):
                snapper.run(view)
                assert not view.resumed
                running_now = running_goroutines(plan, view.memory, view.threads, req.limits)
                fixups = snapper.resolve_fixups(view.memory, req.limits)
                return running_now, fixups, run_snapshot(plan, view.memory, view.threads, req.limits)

            (running_now, fixups, raw_interp), pause_ns = run_paused_in_helper(proc.pid, body, arm=held)
            assert pause_ns > 0
            raw_ebpf = snapper.raw_snapshot(snapper.records(), running_now, fixups)
            assert decode_snapshot(raw_ebpf, plan, b, pid=proc.pid) == decode_snapshot(raw_interp, plan, b,
                                                                                        pid=proc.pid)

            def idle_body(view):
                snapper.run(view)
                words = snapper._arm_words
                quiet = (not any(int.from_bytes(words[o:o + 8], "little") for o in snapper.step_arm.thread_words)
                         and not any(sh.fixup_reader.pending() for sh in snapper.shards))
                return view.resumed, quiet

            (ended, quiet), _ns = run_paused_in_helper(proc.pid, idle_body, arm=snapper.step_arm)
            assert ended == quiet
            for shard in snapper.shards:
                shard.ring.consume(), shard.fixup_reader.consume()


def _affinities(pid: int) -> dict[int, set[int]]:
    return {int(t): os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("workers", [1, 3])
def test_goroutines_shared_among_stepped_threads_give_the_same_snapshot(newest_version, workers):
    """One thread walks every goroutine, or three (more than this machine's CPUs: two share one) each walk
    their share of allgs: the document is the interpreter's in both cases."""
    binary = build_fixture("goroutines", newest_version, "opt")
    with GoBinary(binary, use_cache=False) as b, running(binary, ["-n", "300"]) as proc:
        req = _as_request({}, None, None)
        bias = load_bias(b, proc.pid)
        plan = rebase(compile_request(b, req), bias)
        where = find_trigger(b, f"/proc/{proc.pid}/exe", bias)
        with EbpfSnapshotter(plan, proc.pid, req.limits, trigger=where, workers=workers) as snapper:
            assert snapper.workers == workers and len(snapper.shards) == workers
            with pause(proc.pid) as paused:
                snapper.run(paused)
                running_now = running_goroutines(plan, paused.memory, paused.threads, req.limits)
                raw_interp = run_snapshot(plan, paused.memory, paused.threads, req.limits)
            raw_ebpf = snapper.raw_snapshot(snapper.records(), running_now)
        ebpf = decode_snapshot(raw_ebpf, plan, b, pid=proc.pid)
        interp = decode_snapshot(raw_interp, plan, b, pid=proc.pid)
    assert ebpf == interp and len(ebpf["goroutines"]) > 300


def test_stepping_a_thread_for_the_trigger_leaves_the_program_unchanged(newest_version, tmp_path):
    """Each in-target snapshot single-steps one stopped thread through the trigger instruction and puts its
    registers back: a program computing hard meanwhile (a thread is caught mid-loop, or in a system call)
    must give the same results, and the trigger's original instruction byte is back afterwards."""
    import threading

    from ebpf_support import Fixture

    binary = build_fixture("calls", newest_version, "opt")
    log = tmp_path / "calls.jsonl"
    with running(binary, env={"GOPROBE_CALL_LOG": str(log)}) as proc, GoBinary(binary) as b:
        fx = Fixture(proc, log)
        assert fx.command("call 5") == "done 5"
        masks = _affinities(fx.pid)
        before = [r["ret"] for r in fx.log()]
        trigger = find_trigger(b, f"/proc/{fx.pid}/exe", load_bias(b, fx.pid))
        original = fx.peek(trigger.address)
        answers: list[str] = []
        spinner = threading.Thread(target=lambda: answers.append(fx.command("spin 4", timeout=60)))
        spinner.start()
        docs = []
        while spinner.is_alive() or len(docs) < 3:
            docs.append(take_snapshot([fx.pid], {"main.handle": ["n", "name"]}, backend="ebpf")["processes"][0])
        spinner.join()
        assert answers and answers[0].startswith("done ") and int(answers[0].split()[1]) > 0
        assert all(d["backend"] == "ebpf" for d in docs)
        assert any(f["function"] in ("main.handle", "main.spin") for d in docs for g in d["goroutines"]
                   for f in g["frames"])
        assert fx.command("call 5") == "done 5"
        assert [r["ret"] for r in fx.log()[len(before):]] == before
        assert fx.peek(trigger.address) == original
        # Threads stepped together are each given a CPU for the step; their own masks are back after.
        assert {t: m for t, m in _affinities(fx.pid).items() if t in masks} == masks
        with open(f"/proc/{fx.pid}/status") as fh:
            status = fh.read()
        assert "TracerPid:\t0" in status and "State:\tt" not in status
