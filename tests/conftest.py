"""Shared fixtures: Go toolchains per version and fixture programs built per (version, mode), cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from goprobe.testing import gobuild
from goprobe.testing.toolchains import selected_versions

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = selected_versions()
MODES = tuple(gobuild.MODES)


def build_fixture(name: str, version: str, mode: str, **kw) -> Path:
    return gobuild.build(FIXTURES / name, version, mode, **kw)


@pytest.fixture(params=VERSIONS, ids=lambda v: f"go{v}")
def go_version(request) -> str:
    return request.param


@pytest.fixture(params=MODES)
def build_mode(request) -> str:
    return request.param


@pytest.fixture
def newest_version() -> str:
    return VERSIONS[-1]


@pytest.fixture
def kinds_binary(go_version, build_mode) -> Path:
    return build_fixture("kinds", go_version, build_mode)
