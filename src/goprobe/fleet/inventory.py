"""What an agent reports: its machine and the Go processes running on it.

A process is a Go process when its executable carries Go build information (``.go.buildinfo``); reading that
maps the file once per (device, inode, mtime), so a machine with many processes of a few programs costs a
few file opens per scan.
"""

from __future__ import annotations

import os
import platform
import socket

import attrs

from goprobe.dwarf.elf import ElfImage
from goprobe.errors import GoprobeError


@attrs.frozen
class GoProcessInfo:
    pid: int
    exe: str
    build_id: str
    go_version: str
    cmdline: tuple[str, ...]
    start_time: float  # seconds since the epoch


@attrs.frozen
class MachineInfo:
    agent_id: str
    hostname: str
    kernel: str
    labels: dict[str, str]


def machine(labels: dict[str, str] | None = None, agent_id: str | None = None) -> MachineInfo:
    """This machine, as an agent names it: the id is stable while the machine (boot) and the agent's PID
    namespace stay the same, so a reconnecting agent is recognised."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = "?"
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = "?"
    host = socket.gethostname()
    return MachineInfo(agent_id or f"{host}/{boot[:8]}/{pidns.strip('pid:[]')}", host, platform.release(),
                       dict(labels or {}))


def _boot_time() -> float:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


class Scanner:
    """Finds the Go processes of this machine (its PID namespace); remembers what each executable is."""

    def __init__(self) -> None:
        self._files: dict[tuple[int, int, int], tuple[str, str] | None] = {}
        self._boot = _boot_time()
        self._ticks = os.sysconf("SC_CLK_TCK")

    def _go_facts(self, pid: int) -> tuple[str, str] | None:
        path = f"/proc/{pid}/exe"
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if key not in self._files:
            try:
                with ElfImage(path) as elf:
                    self._files[key] = (elf.go_version, elf.go_build_id or "")
            except (GoprobeError, OSError, ValueError):
                self._files[key] = None
        return self._files[key]

    def scan(self) -> list[GoProcessInfo]:
        out = []
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            pid = int(name)
            facts = self._go_facts(pid)
            if facts is None:
                continue
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = tuple(a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a)
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                start = self._boot + int(fields[19]) / self._ticks
            except (OSError, IndexError, ValueError):
                continue  # it exited meanwhile
            out.append(GoProcessInfo(pid, exe, facts[1], facts[0], cmdline, start))
        return out


def environ(pid: int) -> dict[str, str]:
    """A process's environment (for selection rules on environment variables); {} when unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out
