"""Load one program of a compiled BPF object into the kernel.

BTF: when the object has ``.BTF`` and func_info for the section, the BTF is loaded (``BPF_BTF_LOAD``) and
func_info/line_info go with the program. Only programs with ``bpf_loop`` callbacks need it; for the others a
BTF the kernel refuses is dropped rather than failing the load.
"""

from __future__ import annotations

import attrs

from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.errors import BpfError, BpfPermissionError, ObjectFileError
from goprobe.backends.ebpf.object_file import BpfObject, ProgramImage
from goprobe.backends.ebpf.syscall import OwnedFd, VerifierStats


@attrs.define(eq=False)
class LoadedProgram:
    """A program in the kernel: its fd (owned), name, size, type and what the verifier reported."""

    fd: OwnedFd
    name: str
    section: str
    insn_count: int
    prog_type: int
    expected_attach_type: int
    sleepable: bool
    stats: VerifierStats
    log: str
    has_btf: bool = False   # loaded with the object's BTF and func_info (the kernel keeps its own reference)

    def fileno(self) -> int:
        return self.fd.fd

    def close(self) -> None:
        """Unload the program (the kernel keeps it while links or perf events still use it)."""
        self.fd.close()

    @property
    def closed(self) -> bool:
        return self.fd.closed

    def __enter__(self) -> LoadedProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, int | str]:
        """The kernel's ``bpf_prog_info`` (run counts need ``kernel.bpf_stats_enabled``)."""
        return sc.prog_info(self.fd)


def load_program(obj: bytes | BpfObject, section: str, *, name: str | None = None, entry: str | None = None,
                 prog_type: int = sc.BPF_PROG_TYPE_KPROBE, expected_attach_type: int = 0,
                 attach_btf_id: int = 0, sleepable: bool = False, license: str = "GPL",
                 log_level: int = sc.LOG_LEVEL_TRACE | sc.LOG_LEVEL_STATS) -> LoadedProgram:
    """Load the program in *section* of *obj* (an ELF object from ``compile_to_object``, or a parsed one).

    *name* names the program in errors and in the kernel (default: the entry function's name).
    Raises :class:`VerifierError` (with the log) when the verifier rejects it, :class:`ObjectFileError` for an
    unknown section or unresolvable relocation, :class:`BpfError` for other kernel errors.
    """
    if not isinstance(obj, BpfObject):
        obj = BpfObject(obj, name=name or section)
    image = obj.program(section, entry)
    name = name or image.name
    btf_fd = _load_btf(obj, image, name)
    try:
        fd, log = sc.prog_load(prog_type, image.insns, name=name, license=license,
                               expected_attach_type=expected_attach_type, attach_btf_id=attach_btf_id,
                               flags=sc.BPF_F_SLEEPABLE if sleepable else 0,
                               btf_fd=btf_fd.fd if btf_fd else 0,
                               func_info=image.func_info if btf_fd else b"",
                               line_info=image.line_info if btf_fd else b"", log_level=log_level)
    finally:
        # The loaded program holds its own reference to the BTF: our fd is not needed past the load.
        if btf_fd is not None:
            btf_fd.close()
    return LoadedProgram(fd, name, section, image.insn_count, prog_type, expected_attach_type, sleepable,
                         sc.parse_verifier_stats(log), log, btf_fd is not None)


def _load_btf(obj: BpfObject, image: ProgramImage, name: str) -> OwnedFd | None:
    if not obj.btf_data or not image.func_info:
        if image.has_callbacks:
            raise ObjectFileError(
                f"program {name!r} passes a callback (bpf_loop) but its object has no BTF func_info; give the "
                "LLVM module debug metadata (llvm_target.DebugInfo) so LLVM emits .BTF and .BTF.ext")
        return None
    try:
        return sc.btf_load(obj.btf_data, name=name)
    except BpfError as e:
        if image.has_callbacks or isinstance(e, BpfPermissionError):
            raise
        return None  # BTF is optional for this program: load it without
