"""Build Go programs per toolchain version and build mode, cached by (version, mode, source hash).

Modes: ``opt`` (the compiler's defaults: optimised, inlining on) and ``debug``
(``-gcflags=all=-N -l``: no optimisation, no inlining, everything in memory).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from goprobe.cache_dir import cache_dir
from goprobe.testing.toolchains import ToolchainError, go_binary, go_env

MODES: dict[str, tuple[str, ...]] = {
    "opt": (),
    "debug": ("-gcflags=all=-N -l",),
}


def source_hash(src: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(src)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(src: Path, version: str, mode: str = "opt", *, extra_flags: tuple[str, ...] = (),
          goarch: str = "amd64", name: str | None = None) -> Path:
    """Build the Go main package in *src* with Go *version* in *mode*; return the cached binary's path.

    *extra_flags* go to ``go build`` (e.g. ``-buildmode=pie``, ``-ldflags=-w``); *goarch* cross-compiles.
    """
    if mode not in MODES:
        raise ValueError(f"unknown build mode {mode!r}; choose from {sorted(MODES)}")
    src = Path(src).resolve()
    flags = MODES[mode] + tuple(extra_flags)
    key = hashlib.sha256("\0".join((source_hash(src), version, goarch, *flags)).encode()).hexdigest()[:16]
    out_dir = cache_dir() / "builds"
    out = out_dir / f"{name or src.name}-{version}-{mode}-{goarch}-{key}"
    if out.exists():
        return out
    env = go_env(version)
    env["GOARCH"] = goarch
    _go_build(version, [*flags, "."], src, env, out, f"{src} ({mode})")
    return out


def _go_build(version: str, args: list[str], cwd: Path | None, env: dict[str, str], out: Path, what: str) -> None:
    """``go build -o OUT ARGS`` of *version*, written to *out* at once when it succeeded."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / "a.out"
        proc = subprocess.run([str(go_binary(version)), "build", "-o", str(tmp_out), *args], cwd=cwd or tmp,
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(f"go {version} build of {what} failed:\n{proc.stderr[-4000:]}")
        os.replace(tmp_out, out)


def go_tool(version: str, *args: str, cwd: Path | None = None, input: str | None = None) -> str:
    """Run ``go tool ARGS`` of *version* and return its stdout (used as an independent oracle in tests)."""
    proc = subprocess.run([str(go_binary(version)), "tool", *args], env=go_env(version), cwd=cwd,
                          capture_output=True, text=True, input=input)
    if proc.returncode != 0:
        raise ToolchainError(f"go tool {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def build_std(version: str, package: str, *, extra_flags: tuple[str, ...] = ()) -> Path:
    """Build *package* (``cmd/trace``, ``cmd/go``, ``cmd/compile``…) from Go *version*'s own source with the
    default flags, as the toolchain ships it but with its debug info: real programs nobody here wrote.
    Cached by (version, package, flags); the toolchain's source does not change under a version."""
    key = hashlib.sha256("\0".join((version, package, *extra_flags)).encode()).hexdigest()[:16]
    out_dir = cache_dir() / "builds"
    out = out_dir / f"{package.replace('/', '_')}-{version}-{key}"
    if out.exists():
        return out
    _go_build(version, [*extra_flags, package], None, go_env(version), out, package)
    return out
