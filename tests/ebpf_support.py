"""Shared by the eBPF tests: whether this machine can load BPF programs, a guard against leaked kernel objects,
and a driver for the `calls` fixture."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from goprobe.backends.ebpf import errors
from goprobe.backends.ebpf import syscall as sc


def bpf_unavailable() -> str | None:
    """Why BPF programs cannot run here, or None when they can (judged by trying)."""
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "/sys/kernel/btf/vmlinux is missing (kernel without CONFIG_DEBUG_INFO_BTF)"
    try:
        sc.create_array(8, 1, name="probe_avail").close()
    except errors.BpfError as e:
        return f"bpf() is unusable here: {e}"
    except OSError as e:  # pragma: no cover - e.g. seccomp
        return f"bpf() is unusable here: {e}"
    return None


REASON = bpf_unavailable()
requires_bpf = pytest.mark.skipif(REASON is not None, reason=REASON or "")




def _kernel_fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("anon_inode:") and any(k in target for k in ("bpf", "btf", "perf_event")):
            out[fd] = target
    return out


@pytest.fixture(autouse=True)
def no_leaked_kernel_fds():
    """Every test must close every map, program, link and perf event it made, on every path."""
    import gc

    before = _kernel_fds()
    yield
    gc.collect()
    leaked = {fd: t for fd, t in _kernel_fds().items() if before.get(fd) != t}
    assert not leaked, f"kernel objects left open: {leaked}"



class Fixture:
    """Talks to a running `calls` fixture over stdin/stdout, without Python's buffering in the way."""

    def __init__(self, fx, call_log: Path) -> None:
        self.fx = fx
        self.pid = fx.pid
        self.call_log = call_log

    def command(self, text: str, timeout: float = 30.0) -> str:
        try:
            return self.fx.command(text, timeout)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(str(exc)) from None

    def log(self) -> list[dict]:
        return [json.loads(ln) for ln in self.call_log.read_text().splitlines()] if self.call_log.exists() else []

    def peek(self, addr: int, size: int = 1) -> bytes:
        with open(f"/proc/{self.pid}/mem", "rb", buffering=0) as f:
            f.seek(addr)
            return f.read(size)
