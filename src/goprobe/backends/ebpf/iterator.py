"""Task iterators: a BPF program the kernel runs on demand, once per thread of a chosen process.

The program is ``BPF_PROG_TYPE_TRACING`` with ``expected_attach_type = BPF_TRACE_ITER`` and ``attach_btf_id``
= the vmlinux FUNC ``bpf_iter_task`` (the kernel names iterator targets ``bpf_iter_<target>``). Loaded
sleepable it may call ``bpf_copy_from_user_task`` to read the target's memory. Its context is
``struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`` (task is NULL on the
final call); ``meta->seq`` (offset 0) is the ``seq_file`` for ``bpf_seq_write``.

A link (``BPF_LINK_CREATE`` with a ``union bpf_iter_link_info`` pid/tid filter) fixes the target;
each :func:`run` opens a fresh iterator fd (``BPF_ITER_CREATE``) and reads it to the end, which runs the
program. Output comes back either as the bytes read (``bpf_seq_write``) or through a ring buffer the program
writes to — both work; the first needs no map.
"""

from __future__ import annotations

import errno as _errno
import os

from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.btf import KIND_FUNC, vmlinux
from goprobe.backends.ebpf.errors import AttachError, AttachProcessNotFoundError, BpfError
from goprobe.backends.ebpf.object_file import BpfObject
from goprobe.backends.ebpf.program import LoadedProgram, load_program
from goprobe.backends.ebpf.syscall import OwnedFd, ffi

TASK_ITER_TARGET = "bpf_iter_task"

_READ_CHUNK = 1 << 16


def task_iter_btf_id() -> int:
    """The vmlinux BTF id of the task iterator target (``FUNC bpf_iter_task``)."""
    return vmlinux().find(TASK_ITER_TARGET, KIND_FUNC)


def load_task_iterator(obj: bytes | BpfObject, section: str = "iter/task", *, name: str | None = None,
                       entry: str | None = None, sleepable: bool = True) -> LoadedProgram:
    """Load the task-iterator program in *section* (sleepable by default, for ``bpf_copy_from_user_task``)."""
    return load_program(obj, section, name=name, entry=entry, prog_type=sc.BPF_PROG_TYPE_TRACING,
                        expected_attach_type=sc.BPF_TRACE_ITER, attach_btf_id=task_iter_btf_id(),
                        sleepable=sleepable)


def link_task_iterator(program: LoadedProgram, *, pid: int = 0, tid: int = 0) -> OwnedFd:
    """A link running *program* over the threads of process *pid* (or only thread *tid*; 0 and 0: every task
    of the system)."""
    for which in (pid, tid):
        if which and not os.path.exists(f"/proc/{which}"):
            raise AttachProcessNotFoundError(f"cannot iterate over process {which}: it does not exist")
    info = ffi.new("union bpf_iter_link_info *")
    info.task.pid = pid
    info.task.tid = tid
    blob = bytes(ffi.buffer(info))
    target = f"thread {tid}" if tid else f"process {pid}" if pid else "every task"
    try:
        return sc.link_create_iter(program.fd, blob, what=f"linking task iterator {program.name!r} to {target}")
    except BpfError as e:
        if e.errno in (_errno.ESRCH, _errno.ENOENT):
            raise AttachProcessNotFoundError(f"cannot iterate over {target}: it does not exist") from None
        if e.errno == _errno.EINVAL and program.expected_attach_type != sc.BPF_TRACE_ITER:
            raise AttachError(f"program {program.name!r} was not loaded as an iterator "
                              "(use load_task_iterator)") from None
        raise


def run(link: OwnedFd, *, limit: int = 1 << 30) -> bytes:
    """Run the iterator of *link* once over its tasks; return what the program wrote with ``bpf_seq_write``."""
    it = sc.iter_create(link)
    try:
        chunks = []
        total = 0
        while True:
            try:
                chunk = os.read(it.fd, _READ_CHUNK)
            except InterruptedError:
                continue
            except OSError as e:
                raise BpfError(e.errno or 0, "read", f"running iterator {link.name!r}") from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise BpfError(_errno.E2BIG, "read", f"iterator {link.name!r} wrote more than {limit} bytes")
    finally:
        it.close()
