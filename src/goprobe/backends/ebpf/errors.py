"""Typed errors of the eBPF backend's kernel plumbing.

Each names the failing kernel operation and, where there is one, the fix. They all derive from
:class:`goprobe.errors.GoprobeError` so the CLI prints them as one line like every other goprobe error.
"""

from __future__ import annotations

import errno as _errno
import os

from goprobe.errors import GoprobeError, ProcessNotFoundError

#: What to tell the user when the kernel refuses an eBPF operation for lack of privilege.
CAPABILITY_FIX = ("run goprobe as root, or grant it CAP_BPF and CAP_PERFMON "
                  "(e.g. `setcap cap_bpf,cap_perfmon+ep` on the Python interpreter)")


class EbpfError(GoprobeError):
    """Base class of the eBPF backend's errors."""


class BpfError(EbpfError):
    """A ``bpf(2)`` or ``perf_event_open(2)`` call failed.

    ``errno`` is the kernel's error number, ``command`` the operation (``BPF_PROG_LOAD``, ``perf_event_open``,
    ...) and ``message`` what goprobe was doing, in words; ``log`` is the kernel's log when it wrote one
    (``BPF_BTF_LOAD``).
    """

    def __init__(self, errno: int, command: str, message: str, *, hint: str | None = None) -> None:
        self.errno = errno
        self.command = command
        self.message = message
        self.hint = hint
        self.log = ""
        text = f"{command} failed: {message}: {_errno_text(errno)}"
        if hint:
            text += f"; {hint}"
        super().__init__(text)


class BpfPermissionError(BpfError):
    """The kernel refused an eBPF or perf operation with EPERM/EACCES: a capability is missing."""

    def __init__(self, errno: int, command: str, message: str, *, capability: str = "CAP_BPF") -> None:
        self.capability = capability
        super().__init__(errno, command, message,
                         hint=f"this needs {capability} (effective uid {os.geteuid()}); {CAPABILITY_FIX}")


class VerifierError(BpfError):
    """The verifier rejected a program. ``log`` is the full verifier log; ``str()`` shows its last lines."""

    TAIL_LINES = 30

    def __init__(self, errno: int, program: str, log: str, *, truncated: bool = False) -> None:
        self.program = program
        self.log = log
        self.truncated = truncated
        lines = [ln for ln in log.rstrip("\n").splitlines()]
        tail = lines[-self.TAIL_LINES:]
        cause = _verifier_cause(lines)
        text = f"the verifier rejected program {program!r}"
        if cause:
            text += f": {cause}"
        body = "\n".join("  " + ln for ln in tail)
        skipped = len(lines) - len(tail)
        head = f"last {len(tail)} of {len(lines)} log lines" if skipped else "verifier log"
        hint = _verifier_hint(cause) + "; the full log is in the exception's .log attribute"
        if truncated:
            hint += " (the log was truncated by the kernel)"
        # BpfError's formatting is bypassed: the log tail must come after the one-line summary.
        EbpfError.__init__(self, f"{text} ({_errno_text(errno)})\n{head}:\n{body}\nhint: {hint}")
        self.errno = errno
        self.command = "BPF_PROG_LOAD"
        self.message = text
        self.hint = hint


class BtfError(EbpfError):
    """BTF data is malformed, or a type the backend needs is missing from it."""


class ObjectFileError(EbpfError):
    """The BPF ELF object from LLVM is unusable: a missing section, an unresolvable relocation..."""


class AttachError(EbpfError):
    """A probe could not be attached (bad binary path, offset, or target process)."""


class AttachProcessNotFoundError(AttachError, ProcessNotFoundError):
    """The process to attach a probe to does not exist (or exited)."""


# Verifier messages (substrings) → what usually fixes them in generated code.
_VERIFIER_HINTS = (
    ("_or_null", "a pointer that may be NULL (map lookup, ringbuf reserve...) is used without a NULL check"),
    ("invalid bpf_context access", "the program reads its context outside the context structure"),
    ("invalid indirect read from stack", "a helper reads stack bytes that were never written"),
    ("!read_ok", "a register is read before it is written"),
    ("invalid access to map value", "a map value is accessed outside its bounds"),
    ("invalid mem access", "memory is read through a pointer the verifier does not trust; copy it with a "
                           "probe-read helper first"),
    ("unknown func", "the helper is not available to this program type, or the kernel is too old for it"),
    ("program is too large", "the program is too complex: split it, or loop with bpf_loop instead of unrolling"),
    ("too many states", "the program is too complex: split it, or loop with bpf_loop instead of unrolling"),
    ("back-edge", "a loop the verifier cannot bound: use bpf_loop or a constant trip count"),
    ("unreachable insn", "the program contains dead code the verifier refuses"),
    ("missing btf func_info", "callbacks need BTF: give the LLVM module debug metadata (llvm_target.DebugInfo)"),
    ("sleepable", "the helper may sleep: load the program sleepable, or use a non-sleeping helper"),
)


def _verifier_hint(cause: str) -> str:
    for needle, hint in _VERIFIER_HINTS:
        if needle in cause:
            return hint
    return "the generated code does something the verifier cannot prove safe"


def _errno_text(code: int) -> str:
    name = _errno.errorcode.get(code, "E?")
    return f"{name} ({code}): {os.strerror(code)}" if code else "no error code"


def _verifier_cause(lines: list[str]) -> str:
    """The verifier's reason: the last non-statistics line of its log (it prints the cause last)."""
    for ln in reversed(lines):
        s = ln.strip()
        if not s or s.startswith(("processed ", "verification time", "stack depth", "-- END PROG LOAD LOG")):
            continue
        return s
    return ""
