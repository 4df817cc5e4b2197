"""The IR's text dump is stable: a golden file for the tiny fixture (built by the newest Go, optimised),
and the dump survives lowering to an interpreter program and loading it back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import VERSIONS, build_fixture
from goprobe import GoBinary
from goprobe.backends.interpreter import program as P
from goprobe.ir.dump import dump
from goprobe.ir.snapshot import compile_snapshot

GOLDEN = Path(__file__).parent / "golden" / "tiny-1.27.3-opt.txt"
CAPTURES = {"main.sum": ["xs", "len(xs)", "total"], "main.(*Counter).Add": ["c.Name", "c.Count", "n", "main.global"]}


def _plan(version: str, mode: str = "opt"):
    with GoBinary(build_fixture("tiny", version, mode)) as b:
        return compile_snapshot(b, CAPTURES)


@pytest.mark.skipif("1.27.3" not in VERSIONS, reason="the golden file is for Go 1.27.3 (GOPROBE_GO_VERSIONS omits it)")
def test_golden_dump():
    text = dump(_plan("1.27.3"))
    if os.environ.get("GOPROBE_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_dump_is_deterministic_and_survives_lowering(go_version, build_mode):
    plan = _plan(go_version, build_mode)
    assert dump(plan) == dump(_plan(go_version, build_mode))
    assert dump(P.load(P.lower(plan))) == dump(plan)
