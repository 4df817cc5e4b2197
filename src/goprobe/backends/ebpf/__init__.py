"""The eBPF backend's kernel plumbing: system calls, BTF, BPF objects from LLVM, program loading, uprobes,
ring buffers and task iterators. No libbpf: everything goes through ``bpf(2)`` and ``perf_event_open(2)``.

Modules (each one job):

- ``syscall``      — ``bpf(2)``/``perf_event_open(2)`` via cffi; maps; fd ownership (:class:`OwnedFd`)
- ``btf``          — find type ids in vmlinux / program BTF; ``.BTF.ext`` func_info and line_info
- ``llvm_target``  — llvmlite BPF target, IR → object, debug metadata for BTF, helper ids
- ``object_file``  — the ELF object: code sections, functions, relocations → a loadable program image
- ``program``      — :func:`load_program` → :class:`LoadedProgram`
- ``uprobe``       — attach at file offsets for pids (uprobe PMU or ``uprobe_multi``) → :class:`Attachment`
- ``ringbuf``      — :class:`RingBuffer` reader
- ``iterator``     — sleepable task iterators run on demand
- ``errors``       — typed errors (:class:`BpfError`, :class:`VerifierError`, ...)
"""

from goprobe.backends.ebpf.errors import (
    AttachError,
    AttachProcessNotFoundError,
    BpfError,
    BpfPermissionError,
    BtfError,
    EbpfError,
    ObjectFileError,
    VerifierError,
)

__all__ = [
    "AttachError",
    "AttachProcessNotFoundError",
    "BpfError",
    "BpfPermissionError",
    "BtfError",
    "EbpfError",
    "ObjectFileError",
    "VerifierError",
]
