"""Separate debug information, as distributions ship it: a stripped binary's DWARF found by its build id or
its .gnu_debuglink, or given with --debug-file; a debug file of another build is refused by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import VERSIONS, build_fixture
from goprobe import GoBinary
from goprobe.errors import NoDebugInfoError
from goprobe.inspect import function_report
from goprobe.snapshot import take_snapshot
from goprobe.testing.fixture_process import running

pytestmark = pytest.mark.skipif(shutil.which("objcopy") is None, reason="binutils' objcopy is not installed")


def _split(src, tmp_path, *, link: bool):
    """(stripped binary, its debug file) made the way distributions make them."""
    exe, debug = tmp_path / "svc", tmp_path / "svc.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(src), str(debug)], check=True)
    cmd = ["objcopy", "--strip-all"] + ([f"--add-gnu-debuglink={debug}"] if link else []) + [str(src), str(exe)]
    subprocess.run(cmd, check=True, cwd=tmp_path)
    return exe, debug


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "goprobe.cli", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, GOPROBE_NO_CACHE="1"))


def test_debuglink_next_to_the_binary_gives_the_same_functions_and_a_live_snapshot(tmp_path):
    src = build_fixture("calls", VERSIONS[-1], "opt")
    exe, _debug = _split(src, tmp_path, link=True)
    with GoBinary(src, use_cache=False) as whole, GoBinary(exe, use_cache=False) as split:
        assert function_report(split, "main.handle") == function_report(whole, "main.handle")
    with running(exe) as proc:
        snap = take_snapshot([proc.pid], {"main.main": []})["processes"][0]
    assert snap["status"] == "ok" and any(f["function"] == "main.main" for g in snap["goroutines"]
                                          for f in g["frames"])


def test_build_id_directory_and_explicit_debug_file(tmp_path, monkeypatch):
    src = build_fixture("calls", VERSIONS[-1], "opt")
    exe, debug = _split(src, tmp_path, link=False)
    with pytest.raises(NoDebugInfoError, match="--debug-file"):
        GoBinary(exe, use_cache=False)
    # Explicitly, in the API and the CLI.
    with GoBinary(exe, use_cache=False, debug_file=debug) as b:
        assert b.functions("main.handle")
    done = _cli("inspect", str(exe), "main.handle", "--debug-file", str(debug))
    assert done.returncode == 0 and "param  req" in done.stdout, done.stderr
    # By build id under a debug root.
    build_id = subprocess.run(["readelf", "-n", str(exe)], capture_output=True, text=True).stdout
    gnu = next(line.split()[-1] for line in build_id.splitlines() if "Build ID" in line)
    where = tmp_path / "root" / ".build-id" / gnu[:2]
    where.mkdir(parents=True)
    shutil.copy(debug, where / f"{gnu[2:]}.debug")
    monkeypatch.setenv("GOPROBE_DEBUG_DIRS", str(tmp_path / "root"))
    with GoBinary(exe, use_cache=False) as b:
        assert b.functions("main.handle")


def test_a_debug_file_of_another_build_is_refused(tmp_path):
    exe, _ = _split(build_fixture("calls", VERSIONS[-1], "opt"), tmp_path, link=False)
    other = tmp_path / "other.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(build_fixture("tiny", VERSIONS[-1], "opt")), str(other)],
                   check=True)
    done = _cli("inspect", str(exe), "--debug-file", str(other))
    assert done.returncode != 0 and "another build" in done.stderr and "Traceback" not in done.stderr
