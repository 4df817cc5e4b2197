"""Stacks the Go runtime prints for parked goroutines (``runtime.Stack``) agree with goprobe's PC → logical
frames (inlined calls included), on every Go version and build mode."""

from __future__ import annotations

import re

from conftest import build_fixture
from goprobe import GoBinary
from goprobe.testing.fixture_process import running

_FRAME = re.compile(r"^(?P<func>\S.*)\((?P<args>[^()]*)\)$")
_POS = re.compile(r"^\t(?P<file>.+):(?P<line>\d+)(?: \+0x(?P<off>[0-9a-f]+))?")


ELIDED = ("...", "", 0, None)  # where the runtime skipped frames of a very deep stack


def parse_stacks(text: str) -> list[list[tuple[str, str, int, int | None]]]:
    """Goroutines, each a list of frames (function, file, line, pc offset or None for inlined frames)."""
    goroutines = []
    frames: list[tuple[str, str, int, int | None]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("goroutine "):
            frames = []
            goroutines.append(frames)
        elif ln.startswith("created by "):
            i += 2
            continue
        elif ln.startswith("...") and "frames elided" in ln:
            frames.append(ELIDED)
            i += 1
            continue
        else:
            m = _FRAME.match(ln)
            if m and i + 1 < len(lines):
                pos = _POS.match(lines[i + 1])
                if pos:
                    off = int(pos.group("off"), 16) if pos.group("off") else None
                    frames.append((m.group("func"), pos.group("file"), int(pos.group("line")), off))
                    i += 2
                    continue
        i += 1
    return goroutines


def test_runtime_stacks_match_logical_frames(go_version, build_mode):
    binary = build_fixture("goroutines", go_version, build_mode)
    with running(binary) as proc:
        truth = proc.truth
    stacks = parse_stacks(truth["stacks"])
    assert len(stacks) >= len(truth["goroutines"]) - 1
    checked = 0
    with GoBinary(binary, use_cache=False) as b:
        for frames in stacks:
            frames = [f for f in frames if f is not ELIDED]
            i = 0
            while i < len(frames):
                # A physical frame (with +0x offset) closes a run of inlined frames printed before it.
                j = i
                while j < len(frames) and frames[j][3] is None:
                    j += 1
                if j == len(frames):
                    break
                name, _file, _line, off = frames[j]
                fns = b.functions(name)
                assert fns, name
                fn = fns[0] if len(fns) == 1 else next(f for f in fns if f.contains(f.entry + off))
                pc = fn.entry + off
                # Go looks up the line of the call instruction (pc-1) except at a function's entry.
                want = [(f, fl, ln) for f, fl, ln, _ in frames[i:j + 1]]
                # Tracebacks hide runtime-internal frames (inlined ones included) below the first frame.
                shown = {f for f, *_ in want}

                def logical(at: int) -> list[tuple[str, str, int]]:
                    return [(_norm(f), fl, ln) for f, fl, ln in b.frames_at(at)
                            if f in shown or not f.startswith("runtime.")]

                expected = [(_norm(f), fl, ln) for f, fl, ln in want]
                candidates = [logical(pc - 1 if off else pc)]
                if i == 0:
                    # A running goroutine's top frame was interrupted (async preemption): Go uses its exact PC.
                    candidates.append(logical(pc))
                assert expected in candidates, (name, hex(pc), candidates, expected)
                checked += len(want)
                i = j + 1
    assert checked > 50


def _norm(name: str) -> str:
    # Tracebacks print generic instantiations as "[...]"; DWARF spells out the shapes.
    return re.sub(r"\[[^\]]*\]", "[...]", name)


def test_parked_functions_and_their_variables_exist(go_version, build_mode):
    binary = build_fixture("goroutines", go_version, build_mode)
    with GoBinary(binary, use_cache=False) as b:
        rec = b.function("main.recurse")
        assert {"depth", "marker"} <= {v.name for v in rec.variables}
        for name in ("main.idleA", "main.idleB", "main.idle"):
            assert "i" in {v.name for v in b.function(name).variables}
        for name in ("main.blockChanRecv", "main.blockSelect", "main.blockMutex", "main.spin"):
            assert b.function(name).entry


def test_ten_thousand_goroutines_mode(newest_version):
    binary = build_fixture("goroutines", newest_version, "opt")
    with running(binary, ["-n", "10000"]) as proc:
        assert proc.truth["idle_count"] == 10000
