"""Attach a loaded kprobe-type program to instructions of a binary, for a set of processes.

Two kernel interfaces:

- the uprobe PMU: one ``perf_event_open`` per (pid, offset) with ``config1`` = the path, ``config2`` = the
  file offset, then ``PERF_EVENT_IOC_SET_BPF`` and ``PERF_EVENT_IOC_ENABLE``. The kernel filters such events
  by the target's address space, so the event fires in every thread of the process;
- a ``BPF_TRACE_UPROBE_MULTI`` link: one fd per pid for all offsets — cheaper for many probe sites. The
  program must have been loaded with ``expected_attach_type=BPF_TRACE_UPROBE_MULTI`` (and such a program
  cannot go on a perf event), so the method is decided before loading: see :func:`choose_attach_type`.

Uprobes take FILE offsets, not virtual addresses: :func:`vaddr_to_file_offset` converts.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.errors import AttachError, AttachProcessNotFoundError, BpfError, BtfError
from goprobe.backends.ebpf.program import LoadedProgram
from goprobe.backends.ebpf.syscall import OwnedFd, ffi

UPROBE_PMU_TYPE_FILE = Path("/sys/bus/event_source/devices/uprobe/type")

#: Above this many probe sites per process, ``uprobe_multi`` (one link) beats one perf event per site.
MULTI_THRESHOLD = 4

_cache_lock = threading.Lock()
_pmu_type: int | None = None
_multi_supported: bool | None = None
_segments_cache: dict[tuple[str, int, int], list[tuple[int, int, int]]] = {}


def uprobe_pmu_type() -> int:
    """The uprobe PMU's perf type (read once from sysfs)."""
    global _pmu_type
    with _cache_lock:
        if _pmu_type is None:
            try:
                _pmu_type = int(UPROBE_PMU_TYPE_FILE.read_text())
            except (OSError, ValueError) as e:
                raise AttachError(f"the kernel has no uprobe PMU ({UPROBE_PMU_TYPE_FILE}: {e}); it needs "
                                  "CONFIG_UPROBE_EVENTS=y") from None
        return _pmu_type


def uprobe_multi_supported() -> bool:
    """Whether the kernel has ``uprobe_multi`` links (Linux 6.6+), judged from its BTF."""
    global _multi_supported
    if _multi_supported is None:
        try:
            from goprobe.backends.ebpf.btf import KIND_STRUCT, vmlinux

            _multi_supported = bool(vmlinux().find_all("bpf_uprobe_multi_link", KIND_STRUCT))
        except BtfError:
            _multi_supported = False
    return _multi_supported


def choose_attach_type(offset_count: int) -> int:
    """The ``expected_attach_type`` to load a uprobe program with: ``BPF_TRACE_UPROBE_MULTI`` when the kernel
    has it and there are many probe sites, else 0 (perf events)."""
    if offset_count > MULTI_THRESHOLD and uprobe_multi_supported():
        return sc.BPF_TRACE_UPROBE_MULTI
    return 0


def vaddr_to_file_offset(path: str | os.PathLike[str], vaddr: int) -> int:
    """The file offset of virtual address *vaddr* of ELF *path*, through its PT_LOAD program headers."""
    path = os.fspath(path)
    for start, end, offset in _load_segments(path):
        if start <= vaddr < end:
            return vaddr - start + offset
    raise AttachError(f"address {vaddr:#x} is not in any loaded part of {path} (no PT_LOAD segment holds it "
                      "in the file)")


def _load_segments(path: str) -> list[tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise AttachError(f"cannot probe {path}: {e.strerror}") from None
    key = (path, st.st_ino, st.st_mtime_ns)
    hit = _segments_cache.get(key)
    if hit is None:
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                hit = [(s["p_vaddr"], s["p_vaddr"] + s["p_filesz"], s["p_offset"]) for s in elf.iter_segments()
                       if s["p_type"] == "PT_LOAD"]
        except (OSError, ELFError) as e:
            raise AttachError(f"cannot probe {path}: not a readable ELF file ({e})") from None
        _segments_cache[key] = hit
    return hit


@attrs.define(eq=False)
class Attachment:
    """Probes attached for one program: closing it (or leaving ``with``, or garbage collection) removes them
    all. ``method`` is ``"perf"`` or ``"uprobe_multi"``."""

    program: LoadedProgram
    path: str
    offsets: tuple[int, ...]
    pids: tuple[int, ...]
    method: str
    fds: list[OwnedFd]

    def close(self) -> None:
        """Detach every probe (idempotent)."""
        for fd in self.fds:
            fd.close()

    @property
    def closed(self) -> bool:
        return all(fd.closed for fd in self.fds)

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach_uprobes(program: LoadedProgram, path: str | os.PathLike[str], offsets: Iterable[int],
                   pids: Iterable[int], *, method: str = "auto") -> Attachment:
    """Attach *program* at each file offset of *path* in each process of *pids*.

    *method*: ``"perf"`` (uprobe PMU), ``"uprobe_multi"``, or ``"auto"`` (what the program was loaded for).
    Raises :class:`AttachProcessNotFoundError` for a pid that does not exist, :class:`AttachError` for a bad
    path or offset or a process that does not map the binary.
    """
    path = os.fspath(path)
    if not path.startswith("/proc/"):  # /proc/PID/exe: the kernel follows it to the file the process runs
        path = os.path.realpath(path)
    offsets = tuple(dict.fromkeys(int(o) for o in offsets))
    pids = tuple(dict.fromkeys(int(p) for p in pids))
    if not offsets:
        raise AttachError(f"no probe offsets given for {path}")
    if not pids:
        raise AttachError(f"no processes given to probe {path} in")
    _check_target(path, offsets, pids)
    multi = program.expected_attach_type == sc.BPF_TRACE_UPROBE_MULTI
    if method == "auto":
        method = "uprobe_multi" if multi else "perf"
    if method not in ("perf", "uprobe_multi"):
        raise ValueError(f"unknown attach method {method!r}; use 'perf', 'uprobe_multi' or 'auto'")
    if (method == "uprobe_multi") != multi:
        raise AttachError(f"program {program.name!r} was loaded with expected_attach_type "
                          f"{program.expected_attach_type}; {method} needs "
                          f"{'BPF_TRACE_UPROBE_MULTI' if method == 'uprobe_multi' else '0'} (see choose_attach_type)")
    fds: list[OwnedFd] = []
    try:
        for pid in pids:
            if method == "uprobe_multi":
                fds.append(_attach_multi(program, path, offsets, pid))
            else:
                for off in offsets:
                    fds.append(_attach_perf(program, path, off, pid))
    except BaseException:
        for fd in fds:
            fd.close()
        raise
    return Attachment(program, path, offsets, pids, method, fds)


def _check_target(path: str, offsets: Sequence[int], pids: Sequence[int]) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise AttachError(f"cannot probe {path}: {e.strerror}") from None
    bad = [o for o in offsets if not 0 <= o < st.st_size]
    if bad:
        raise AttachError(f"probe offset(s) {[hex(o) for o in bad]} lie outside {path} ({st.st_size} bytes); "
                          "uprobes take file offsets (see vaddr_to_file_offset)")
    for pid in pids:
        maps = Path(f"/proc/{pid}/maps")
        try:
            text = maps.read_text()
        except FileNotFoundError:
            raise AttachProcessNotFoundError(f"cannot probe process {pid}: it does not exist") from None
        except OSError as e:
            raise AttachError(f"cannot probe process {pid}: {e.strerror}") from None
        if not _maps_inode(text, st.st_ino):
            raise AttachError(f"process {pid} does not run {path} (the file is not mapped in it); the probes "
                              "would never fire")


def _maps_inode(maps_text: str, inode: int) -> bool:
    # Lines are "start-end perms offset dev inode [path]".
    want = str(inode)
    for line in maps_text.splitlines():
        fields = line.split(None, 5)
        if len(fields) >= 5 and fields[4] == want:
            return True
    return False


def _attach_perf(program: LoadedProgram, path: str, offset: int, pid: int) -> OwnedFd:
    c_path = ffi.new("char[]", os.fsencode(path))
    attr = ffi.new("struct perf_event_attr *")
    attr.type = uprobe_pmu_type()
    attr.size = ffi.sizeof("struct perf_event_attr")
    attr.config = 0                # bit 0 would make it a uretprobe (which Go stacks do not survive)
    attr.config1 = int(ffi.cast("uintptr_t", c_path))
    attr.config2 = offset
    attr.flags = 1                 # disabled until the program is on it
    try:
        fd = OwnedFd(sc.perf_event_open(attr, pid, -1, what=f"opening a uprobe at {path}+{offset:#x} "
                                                             f"for process {pid}"), "uprobe", program.name)
    except BpfError as e:
        raise _attach_error(e, path, pid) from e
    try:
        fcntl.ioctl(fd.fd, sc.PERF_EVENT_IOC_SET_BPF, program.fileno())
        fcntl.ioctl(fd.fd, sc.PERF_EVENT_IOC_ENABLE, 0)
    except OSError as e:
        fd.close()
        raise AttachError(f"cannot attach program {program.name!r} to the uprobe at {path}+{offset:#x}: "
                          f"{e.strerror} (a program loaded for uprobe_multi cannot go on a perf event)") from None
    except BaseException:
        fd.close()
        raise
    return fd


def _attach_multi(program: LoadedProgram, path: str, offsets: Sequence[int], pid: int) -> OwnedFd:
    try:
        return sc.link_create_uprobe_multi(program.fd, path, offsets, pid=pid)
    except BpfError as e:
        raise _attach_error(e, path, pid) from e


def _attach_error(e: BpfError, path: str, pid: int) -> Exception:
    if e.errno == _errno.ESRCH:
        return AttachProcessNotFoundError(f"cannot probe process {pid}: it does not exist (it exited)")
    if e.errno == _errno.ENOENT:
        return AttachError(f"cannot probe {path}: no such file")
    if e.errno in (_errno.EPERM, _errno.EACCES):
        return e
    return AttachError(f"{e}")
