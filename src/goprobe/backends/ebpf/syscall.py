"""The ``bpf(2)`` and ``perf_event_open(2)`` system calls, through cffi in ABI mode (no compiler needed).

``union bpf_attr`` is declared per command as its own struct: each starts at offset 0 of the union, and the
kernel zero-fills whatever part of the union a shorter ``size`` leaves out, so only the fields a command uses
need to be declared. Layouts follow the kernel's ``include/uapi/linux/bpf.h`` (natural alignment gives the
same offsets as ``__aligned_u64``).

Every file descriptor the kernel hands out is owned by an :class:`OwnedFd` (``close()``, ``with``, and a
finalizer), so maps, programs and links go away when their owner does.
"""

from __future__ import annotations

import errno as _errno
import os
import platform
import weakref
from collections.abc import Sequence

import attrs
import cffi

from goprobe.backends.ebpf.errors import BpfError, BpfPermissionError, VerifierError

ffi = cffi.FFI()
ffi.cdef("""
long syscall(long number, ...);

struct bpf_map_create_attr {
    uint32_t map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node;
    char map_name[16];
    uint32_t map_ifindex, btf_fd, btf_key_type_id, btf_value_type_id, btf_vmlinux_value_type_id;
    uint64_t map_extra;
    int32_t value_type_btf_obj_fd, map_token_fd;
};

struct bpf_map_elem_attr {
    uint32_t map_fd;
    uint64_t key;
    uint64_t value;          /* or next_key */
    uint64_t flags;
};

struct bpf_prog_load_attr {
    uint32_t prog_type, insn_cnt;
    uint64_t insns, license;
    uint32_t log_level, log_size;
    uint64_t log_buf;
    uint32_t kern_version, prog_flags;
    char prog_name[16];
    uint32_t prog_ifindex, expected_attach_type, prog_btf_fd, func_info_rec_size;
    uint64_t func_info;
    uint32_t func_info_cnt, line_info_rec_size;
    uint64_t line_info;
    uint32_t line_info_cnt, attach_btf_id, attach_prog_fd, core_relo_cnt;
    uint64_t fd_array, core_relos;
    uint32_t core_relo_rec_size, log_true_size;
};

struct bpf_btf_load_attr {
    uint64_t btf, btf_log_buf;
    uint32_t btf_size, btf_log_size, btf_log_level, btf_log_true_size, btf_flags;
    int32_t btf_token_fd;
};

struct bpf_link_create_attr {
    uint32_t prog_fd, target_fd, attach_type, flags;
    union {
        uint32_t target_btf_id;
        struct { uint64_t iter_info; uint32_t iter_info_len; } iter;
        struct {
            uint64_t path, offsets, ref_ctr_offsets, cookies;
            uint32_t cnt, flags, pid, path_fd;
        } uprobe_multi;
    } u;
};

struct bpf_iter_create_attr { uint32_t link_fd, flags; };

struct bpf_obj_info_attr { uint32_t bpf_fd, info_len; uint64_t info; };

struct bpf_prog_info {
    uint32_t type, id;
    uint8_t tag[8];
    uint32_t jited_prog_len, xlated_prog_len;
    uint64_t jited_prog_insns, xlated_prog_insns, load_time;
    uint32_t created_by_uid, nr_map_ids;
    uint64_t map_ids;
    char name[16];
    uint32_t ifindex, gpl_compatible;
    uint64_t netns_dev, netns_ino;
    uint32_t nr_jited_ksyms, nr_jited_func_lens;
    uint64_t jited_ksyms, jited_func_lens;
    uint32_t btf_id, func_info_rec_size;
    uint64_t func_info;
    uint32_t nr_func_info, nr_line_info;
    uint64_t line_info, jited_line_info;
    uint32_t nr_jited_line_info, line_info_rec_size, jited_line_info_rec_size, nr_prog_tags;
    uint64_t prog_tags, run_time_ns, run_cnt, recursion_misses;
    uint32_t verified_insns, attach_btf_obj_id, attach_btf_id, pad;
};

union bpf_iter_link_info {
    struct { uint32_t map_fd; } map;
    struct { uint32_t order, cgroup_fd; uint64_t cgroup_id; } cgroup;
    struct { uint32_t tid, pid, pid_fd; } task;
};

struct perf_event_attr {
    uint32_t type, size;
    uint64_t config, sample_period, sample_type, read_format;
    uint64_t flags;                      /* bit field: disabled, inherit, ... */
    uint32_t wakeup_events, bp_type;
    uint64_t config1;                    /* uprobe_path */
    uint64_t config2;                    /* probe_offset */
    uint64_t branch_sample_type, sample_regs_user;
    uint32_t sample_stack_user;
    int32_t clockid;
    uint64_t sample_regs_intr;
    uint32_t aux_watermark;
    uint16_t sample_max_stack, reserved_2;
    uint32_t aux_sample_size, aux_action;
    uint64_t sig_data, config3;
};
""")
libc = ffi.dlopen(None)

# System call numbers differ per architecture (asm/unistd_64.h, asm-generic/unistd.h).
_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}
try:
    SYS_BPF, SYS_PERF_EVENT_OPEN = _SYSCALLS[platform.machine()]
except KeyError:  # pragma: no cover - other architectures are not supported
    SYS_BPF, SYS_PERF_EVENT_OPEN = -1, -1

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_LOAD = 18
BPF_MAP_FREEZE = 22
BPF_LINK_CREATE = 28
BPF_ITER_CREATE = 33
_COMMAND_NAMES = {0: "BPF_MAP_CREATE", 1: "BPF_MAP_LOOKUP_ELEM", 2: "BPF_MAP_UPDATE_ELEM",
                  3: "BPF_MAP_DELETE_ELEM", 5: "BPF_PROG_LOAD", 15: "BPF_OBJ_GET_INFO_BY_FD", 18: "BPF_BTF_LOAD",
                  22: "BPF_MAP_FREEZE", 28: "BPF_LINK_CREATE", 33: "BPF_ITER_CREATE"}

# enum bpf_map_type
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_RINGBUF = 27

# map_flags
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_MMAPABLE = 1 << 10

# BPF_MAP_UPDATE_ELEM flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# enum bpf_prog_type
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_TRACING = 26

# enum bpf_attach_type
BPF_TRACE_ITER = 28
BPF_TRACE_UPROBE_MULTI = 48

# prog_flags
BPF_F_SLEEPABLE = 1 << 4

# verifier log levels (kernel's BPF_LOG_LEVEL1 and BPF_LOG_STATS)
LOG_LEVEL_TRACE = 1
LOG_LEVEL_STATS = 4

BPF_INSN_SIZE = 8
FUNC_INFO_SIZE = 8    # struct bpf_func_info
LINE_INFO_SIZE = 16   # struct bpf_line_info

# perf_event_open
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400          # _IO('$', 0)
PERF_EVENT_IOC_DISABLE = 0x2401         # _IO('$', 1)
PERF_EVENT_IOC_SET_BPF = 0x40042408     # _IOW('$', 8, __u32)

_MIN_LOG = 1 << 20
_MAX_LOG = 1 << 28
_STATS_LOG = 1 << 16  # statistics only: a few lines
_TRACE_LOG = 1 << 24  # the trace of a rejected program: its tail (the kernel's log rolls)


# -- file descriptors ---------------------------------------------------------------------------------------

def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class OwnedFd:
    """One kernel file descriptor with a single owner: closed by ``close()``, ``with``, or the finalizer."""

    def __init__(self, fd: int, kind: str, name: str = "") -> None:
        self.kind = kind
        self.name = name
        self._fd = fd
        self._finalizer = weakref.finalize(self, _close_quietly, fd)

    @property
    def fd(self) -> int:
        """The descriptor number; raises ``ValueError`` once closed (a stale number may be reused)."""
        if not self._finalizer.alive:
            raise ValueError(f"{self.kind} {self.name!r} is closed")
        return self._fd

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<{type(self).__name__} {self.kind} {self.name!r} {state}>"


# -- the raw calls ------------------------------------------------------------------------------------------

def bpf(cmd: int, attr, what: str) -> int:
    """Run ``bpf(cmd, attr, sizeof attr)``; return its result or raise :class:`BpfError` naming *what*."""
    ret = libc.syscall(ffi.cast("long", SYS_BPF), ffi.cast("long", cmd), attr,
                       ffi.cast("unsigned long", ffi.sizeof(attr[0])))
    if ret < 0:
        raise error_for(ffi.errno, _COMMAND_NAMES.get(cmd, f"bpf cmd {cmd}"), what)
    return ret


def error_for(code: int, command: str, what: str) -> BpfError:
    """The typed error for a failed call: missing privilege gets the capability it needs and the fix."""
    if code in (_errno.EPERM, _errno.EACCES):
        cap = "CAP_PERFMON" if command == "perf_event_open" else "CAP_BPF (and CAP_PERFMON for tracing)"
        return BpfPermissionError(code, command, what, capability=cap)
    return BpfError(code, command, what)


def perf_event_open(attr, pid: int, cpu: int, group_fd: int = -1, flags: int = PERF_FLAG_FD_CLOEXEC,
                    *, what: str) -> int:
    """Run ``perf_event_open(2)``; return the new fd or raise :class:`BpfError`."""
    ret = libc.syscall(ffi.cast("long", SYS_PERF_EVENT_OPEN), attr, ffi.cast("int", pid), ffi.cast("int", cpu),
                       ffi.cast("int", group_fd), ffi.cast("unsigned long", flags))
    if ret < 0:
        raise error_for(ffi.errno, "perf_event_open", what)
    return ret


def _ptr(cdata) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _name_bytes(name: str) -> bytes:
    """Kernel object names: at most 15 chars of [A-Za-z0-9_.] (anything else makes the call fail)."""
    clean = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in name)
    return clean[:15].encode()


# -- maps ---------------------------------------------------------------------------------------------------

class BpfMap(OwnedFd):
    """A BPF map: its fd and shape, with element access by bytes."""

    def __init__(self, fd: int, name: str, map_type: int, key_size: int, value_size: int,
                 max_entries: int, flags: int) -> None:
        super().__init__(fd, "map", name)
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.frozen = False

    @property
    def per_cpu(self) -> bool:
        return self.map_type == BPF_MAP_TYPE_PERCPU_ARRAY

    def mmap(self):
        """The values of an array map created with ``BPF_F_MMAPABLE``, mapped into this process (an
        ``mmap.mmap``; close it before the map): reading and writing them then costs no system call."""
        import mmap

        if self.map_type != BPF_MAP_TYPE_ARRAY or not self.flags & BPF_F_MMAPABLE:
            raise ValueError(f"map {self.name!r} is not an array created with BPF_F_MMAPABLE")
        size = (self.value_size * self.max_entries + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        return mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def _value_bytes(self) -> int:
        # Per-CPU maps exchange one 8-byte-aligned value per possible CPU.
        if self.per_cpu:
            return ((self.value_size + 7) & ~7) * possible_cpus()
        return self.value_size

    def lookup(self, key: bytes) -> bytes | None:
        """The value at *key*, or None when there is none (per-CPU maps: all CPUs' values concatenated)."""
        k = ffi.from_buffer(self._check_key(key))
        v = ffi.new("char[]", self._value_bytes())
        attr = ffi.new("struct bpf_map_elem_attr *")
        attr.map_fd = self.fd
        attr.key = _ptr(k)
        attr.value = _ptr(v)
        try:
            bpf(BPF_MAP_LOOKUP_ELEM, attr, f"reading map {self.name!r}")
        except BpfError as e:
            if e.errno == _errno.ENOENT:
                return None
            raise
        return ffi.buffer(v)[:]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        """Set *key* to *value* (``BPF_ANY``, ``BPF_NOEXIST`` or ``BPF_EXIST``)."""
        if len(value) != self._value_bytes():
            raise ValueError(f"map {self.name!r}: value must be {self._value_bytes()} bytes, not {len(value)}")
        k = ffi.from_buffer(self._check_key(key))
        v = ffi.from_buffer(value)
        attr = ffi.new("struct bpf_map_elem_attr *")
        attr.map_fd = self.fd
        attr.key = _ptr(k)
        attr.value = _ptr(v)
        attr.flags = flags
        try:
            bpf(BPF_MAP_UPDATE_ELEM, attr, f"writing map {self.name!r}")
        except BpfPermissionError as e:
            if self.frozen:  # EPERM here means "frozen", not a missing capability
                raise BpfError(e.errno, e.command, f"writing map {self.name!r}",
                               hint="the map was frozen (read-only for user space)") from None
            raise

    def delete(self, key: bytes) -> bool:
        """Remove *key*; False if it was not there."""
        k = ffi.from_buffer(self._check_key(key))
        attr = ffi.new("struct bpf_map_elem_attr *")
        attr.map_fd = self.fd
        attr.key = _ptr(k)
        try:
            bpf(BPF_MAP_DELETE_ELEM, attr, f"deleting from map {self.name!r}")
        except BpfError as e:
            if e.errno == _errno.ENOENT:
                return False
            raise
        return True

    def freeze(self) -> None:
        """Make the map read-only for user space from now on (programs may then treat it as constant)."""
        attr = ffi.new("struct bpf_map_elem_attr *")
        attr.map_fd = self.fd
        bpf(BPF_MAP_FREEZE, attr, f"freezing map {self.name!r}")
        self.frozen = True

    def _check_key(self, key: bytes) -> bytes:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name!r}: key must be {self.key_size} bytes, not {len(key)}")
        return key if key else b"\0"  # from_buffer needs a non-empty buffer; the kernel reads 0 bytes


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int, *, name: str = "",
               flags: int = 0) -> BpfMap:
    """Create a map (``BPF_MAP_TYPE_ARRAY``, ``..._PERCPU_ARRAY``, ``..._HASH``, ``..._RINGBUF``)."""
    attr = ffi.new("struct bpf_map_create_attr *")
    attr.map_type = map_type
    attr.key_size = key_size
    attr.value_size = value_size
    attr.max_entries = max_entries
    attr.map_flags = flags
    attr.map_name = _name_bytes(name)
    fd = bpf(BPF_MAP_CREATE, attr, f"creating map {name!r} (type {map_type}, key {key_size} B, "
                                   f"value {value_size} B, {max_entries} entries)")
    return BpfMap(fd, name, map_type, key_size, value_size, max_entries, flags)


def create_array(value_size: int, max_entries: int, *, name: str = "", per_cpu: bool = False,
                 flags: int = 0) -> BpfMap:
    """An array map with 4-byte keys."""
    kind = BPF_MAP_TYPE_PERCPU_ARRAY if per_cpu else BPF_MAP_TYPE_ARRAY
    return create_map(kind, 4, value_size, max_entries, name=name, flags=flags)


def create_hash(key_size: int, value_size: int, max_entries: int, *, name: str = "") -> BpfMap:
    return create_map(BPF_MAP_TYPE_HASH, key_size, value_size, max_entries, name=name)


def create_ringbuf(size: int, *, name: str = "") -> BpfMap:
    """A ring buffer of *size* bytes (a power of two and a multiple of the page size)."""
    page = os.sysconf("SC_PAGE_SIZE")
    if size < page or size & (size - 1):
        raise ValueError(f"ring buffer size {size} must be a power of two of at least {page} bytes")
    return create_map(BPF_MAP_TYPE_RINGBUF, 0, 0, size, name=name)


_possible_cpus: int | None = None


def possible_cpus() -> int:
    """How many CPUs per-CPU maps hold a value for (``/sys/devices/system/cpu/possible``)."""
    global _possible_cpus
    if _possible_cpus is None:
        text = open("/sys/devices/system/cpu/possible").read().strip()
        n = 0
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            n = max(n, int(hi or lo) + 1)
        _possible_cpus = n
    return _possible_cpus


# -- BTF and programs ---------------------------------------------------------------------------------------

def btf_load(data: bytes, *, name: str = "") -> OwnedFd:
    """Load BTF type data into the kernel (``BPF_BTF_LOAD``); the log is attached to the error on failure."""
    blob = ffi.from_buffer(data)
    size = _MIN_LOG
    while True:
        log = ffi.new("char[]", size)
        attr = ffi.new("struct bpf_btf_load_attr *")
        attr.btf = _ptr(blob)
        attr.btf_size = len(data)
        attr.btf_log_buf = _ptr(log)
        attr.btf_log_size = size
        attr.btf_log_level = 1
        try:
            fd = bpf(BPF_BTF_LOAD, attr, f"loading the BTF of {name or 'a program'}")
        except BpfError as e:
            if e.errno == _errno.ENOSPC and size < _MAX_LOG:
                size = max(size * 4, attr.btf_log_true_size)
                continue
            text = ffi.string(log).decode(errors="replace").strip()
            if text:
                e.args = (f"{e.args[0]}\nBTF log (last lines):\n" + "\n".join(text.splitlines()[-20:]),)
                e.log = text
            raise
        return OwnedFd(fd, "btf", name)


@attrs.frozen
class VerifierStats:
    """What the verifier reported: instructions processed and states explored (from its last log line)."""

    processed_insns: int = 0
    total_states: int = 0
    peak_states: int = 0
    max_states_per_insn: int = 0
    verification_time_us: int | None = None
    stack_depth: str | None = None


def parse_verifier_stats(log: str) -> VerifierStats:
    import re

    kw: dict[str, object] = {}
    m = re.search(r"processed (\d+) insns \(limit \d+\) max_states_per_insn (\d+) total_states (\d+) "
                  r"peak_states (\d+)", log)
    if m:
        kw.update(processed_insns=int(m.group(1)), max_states_per_insn=int(m.group(2)),
                  total_states=int(m.group(3)), peak_states=int(m.group(4)))
    m = re.search(r"verification time (\d+) usec", log)
    if m:
        kw["verification_time_us"] = int(m.group(1))
    m = re.search(r"stack depth ([\d+]+)", log)
    if m:
        kw["stack_depth"] = m.group(1)
    return VerifierStats(**kw)


def prog_load(prog_type: int, insns: bytes, *, name: str, license: str = "GPL",
              expected_attach_type: int = 0, attach_btf_id: int = 0, flags: int = 0,
              btf_fd: int = 0, func_info: bytes = b"", line_info: bytes = b"",
              log_level: int = LOG_LEVEL_TRACE | LOG_LEVEL_STATS) -> tuple[OwnedFd, str]:
    """Load a program (``BPF_PROG_LOAD``); return its fd and the verifier's statistics log.

    The program is verified with statistics only: the kernel formats a trace line per instruction it
    processes, which for a large program costs more than the verification itself (and a trace that
    overflows the buffer fails the load, so it would be verified again). Only when the verifier rejects it
    is it verified again with *log_level* to explain why; :class:`VerifierError` then carries the log (its
    tail when the kernel's rolling log overflowed).
    """
    if len(insns) % BPF_INSN_SIZE or not insns:
        raise ValueError(f"program {name!r}: code is {len(insns)} bytes, not a non-empty multiple of 8")
    code = ffi.from_buffer(insns)
    lic = ffi.new("char[]", license.encode())
    fi = ffi.from_buffer(func_info) if func_info else ffi.NULL
    li = ffi.from_buffer(line_info) if line_info else ffi.NULL

    def attempt(level: int, size: int) -> tuple[int, int, str, int]:
        log = ffi.new("char[]", max(size, 1))
        attr = ffi.new("struct bpf_prog_load_attr *")
        attr.prog_type = prog_type
        attr.insn_cnt = len(insns) // BPF_INSN_SIZE
        attr.insns = _ptr(code)
        attr.license = _ptr(lic)
        attr.log_level = level if size else 0
        attr.log_size = size
        attr.log_buf = _ptr(log) if size else 0
        attr.prog_flags = flags
        attr.prog_name = _name_bytes(name)
        attr.expected_attach_type = expected_attach_type
        attr.attach_btf_id = attach_btf_id
        if btf_fd:
            attr.prog_btf_fd = btf_fd
            if func_info:
                attr.func_info_rec_size = FUNC_INFO_SIZE
                attr.func_info = _ptr(fi)
                attr.func_info_cnt = len(func_info) // FUNC_INFO_SIZE
            if line_info:
                attr.line_info_rec_size = LINE_INFO_SIZE
                attr.line_info = _ptr(li)
                attr.line_info_cnt = len(line_info) // LINE_INFO_SIZE
        ret = libc.syscall(ffi.cast("long", SYS_BPF), ffi.cast("long", BPF_PROG_LOAD), attr,
                           ffi.cast("unsigned long", ffi.sizeof("struct bpf_prog_load_attr")))
        err = ffi.errno
        return ret, err, ffi.string(log).decode(errors="replace") if size else "", attr.log_true_size

    stats_level = LOG_LEVEL_STATS if log_level else 0
    size = _STATS_LOG if log_level else 0
    while True:
        ret, err, text, true_size = attempt(stats_level, size)
        if not (ret < 0 and err == _errno.ENOSPC and size and size < _MAX_LOG):
            break
        size = min(_MAX_LOG, max(size * 4, true_size))  # statistics are a few lines: this is not expected
    if ret >= 0:
        return OwnedFd(ret, "program", name), text
    if err in (_errno.EPERM, _errno.EACCES) and not text:
        raise error_for(err, "BPF_PROG_LOAD", f"loading program {name!r}")
    if not log_level:
        raise BpfError(err, "BPF_PROG_LOAD", f"loading program {name!r}")
    if log_level & LOG_LEVEL_TRACE:
        # Rejected: again with the trace. The kernel's log rolls: a trace longer than the buffer keeps its
        # tail, where the cause is, and the load then fails with ENOSPC instead of the verifier's error.
        ret, err2, trace, _true = attempt(log_level, _TRACE_LOG)
        if ret >= 0:  # accepted this time (cannot happen: the verifier is deterministic); keep it
            return OwnedFd(ret, "program", name), trace
        if err2 != _errno.ENOSPC:
            err = err2
        raise VerifierError(err, name, trace, truncated=err2 == _errno.ENOSPC)
    raise VerifierError(err, name, text)


def prog_info(prog: OwnedFd) -> dict[str, int | str]:
    """Selected fields of ``struct bpf_prog_info`` (``BPF_OBJ_GET_INFO_BY_FD``)."""
    info = ffi.new("struct bpf_prog_info *")
    attr = ffi.new("struct bpf_obj_info_attr *")
    attr.bpf_fd = prog.fd
    attr.info_len = ffi.sizeof(info[0])
    attr.info = _ptr(info)
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"reading the info of program {prog.name!r}")
    return {"id": info.id, "type": info.type, "name": ffi.string(info.name).decode(errors="replace"),
            "xlated_prog_len": info.xlated_prog_len, "jited_prog_len": info.jited_prog_len,
            "verified_insns": info.verified_insns, "run_cnt": info.run_cnt, "run_time_ns": info.run_time_ns,
            "recursion_misses": info.recursion_misses, "btf_id": info.btf_id,
            "nr_func_info": info.nr_func_info, "nr_line_info": info.nr_line_info}


# -- links and iterators ------------------------------------------------------------------------------------

def link_create_iter(prog: OwnedFd, iter_info: bytes = b"", *, what: str) -> OwnedFd:
    """A ``BPF_TRACE_ITER`` link for an iterator program; *iter_info* is a ``union bpf_iter_link_info``."""
    info = ffi.from_buffer(iter_info) if iter_info else ffi.NULL
    attr = ffi.new("struct bpf_link_create_attr *")
    attr.prog_fd = prog.fd
    attr.attach_type = BPF_TRACE_ITER
    if iter_info:
        attr.u.iter.iter_info = _ptr(info)
        attr.u.iter.iter_info_len = len(iter_info)
    fd = bpf(BPF_LINK_CREATE, attr, what)
    return OwnedFd(fd, "link", prog.name)


def link_create_uprobe_multi(prog: OwnedFd, path: str, offsets: Sequence[int], *, pid: int = 0,
                             cookies: Sequence[int] | None = None, flags: int = 0) -> OwnedFd:
    """A ``BPF_TRACE_UPROBE_MULTI`` link: *prog* on every file offset of *path*, for process *pid* (0: all)."""
    c_path = ffi.new("char[]", os.fsencode(path))
    c_offsets = ffi.new("uint64_t[]", list(offsets))
    c_cookies = ffi.new("uint64_t[]", list(cookies)) if cookies else ffi.NULL
    attr = ffi.new("struct bpf_link_create_attr *")
    attr.prog_fd = prog.fd
    attr.attach_type = BPF_TRACE_UPROBE_MULTI
    attr.flags = flags
    um = attr.u.uprobe_multi
    um.path = _ptr(c_path)
    um.offsets = _ptr(c_offsets)
    um.cookies = _ptr(c_cookies) if cookies else 0
    um.cnt = len(offsets)
    um.pid = pid
    fd = bpf(BPF_LINK_CREATE, attr,
             f"attaching program {prog.name!r} to {len(offsets)} uprobe(s) in {path} (pid {pid or 'any'})")
    return OwnedFd(fd, "link", prog.name)


def iter_create(link: OwnedFd) -> OwnedFd:
    """A readable fd that runs the iterator program of *link* as it is read (``BPF_ITER_CREATE``)."""
    attr = ffi.new("struct bpf_iter_create_attr *")
    attr.link_fd = link.fd
    fd = bpf(BPF_ITER_CREATE, attr, f"opening an iterator on link of {link.name!r}")
    return OwnedFd(fd, "iterator", link.name)
