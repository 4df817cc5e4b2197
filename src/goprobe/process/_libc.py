"""cffi (ABI mode) declarations of the few libc calls the process layer needs: ptrace, waitpid, process_vm_readv.

Linux x86_64 only. cffi keeps ``errno`` per thread after each call (``ffi.errno``), which is why it is used
instead of reading errno through ctypes.
"""

from __future__ import annotations

import cffi

ffi = cffi.FFI()
ffi.cdef("""
    struct iovec { void *iov_base; size_t iov_len; };

    /* <sys/user.h>, x86_64: what PTRACE_GETREGS fills and what NT_PRSTATUS carries as pr_reg. */
    struct user_regs_struct {
        unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
        unsigned long rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
        unsigned long fs_base, gs_base, ds, es, fs, gs;
    };

    /* glibc declares ptrace variadic; declaring it so makes libffi set up the call the way va_arg expects. */
    long ptrace(int request, ...);
    int waitpid(int pid, int *status, int options);
    int sched_getcpu(void);
    ssize_t process_vm_readv(int pid, const struct iovec *local_iov, unsigned long liovcnt,
                             const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
""")
lib = ffi.dlopen(None)

# <sys/ptrace.h>
PTRACE_POKEDATA = 5
PTRACE_CONT = 7
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128

# <sys/wait.h>
WNOHANG = 1
WALL = 0x40000000  # __WALL: wait for clone children (non-leader threads) too
WNOTHREAD = 0x20000000  # __WNOTHREAD: only this thread's children (its tracees), not its siblings

IOV_MAX = 1024

# Order of user_regs_struct's fields, the layout of PTRACE_GETREGS and of NT_PRSTATUS's pr_reg.
USER_REGS_FIELDS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
    "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
    "fs_base", "gs_base", "ds", "es", "fs", "gs",
)
# The registers ThreadState exposes (segment selectors are left out: Go never uses them).
REG_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "eflags", "fs_base", "gs_base", "orig_rax",
)


def ptrace(request: int, tid: int, addr: int = 0, data=0) -> tuple[int, int]:
    """One ptrace call; returns (result, errno). *data* may be an int or a cdata pointer."""
    if not isinstance(data, ffi.CData):
        data = ffi.cast("void *", data)
    r = lib.ptrace(request, ffi.cast("int", tid), ffi.cast("void *", addr), data)
    return r, (ffi.errno if r == -1 else 0)


def waitpid(tid: int, options: int) -> tuple[int, int, int]:
    """waitpid(2); returns (pid or -1, status, errno)."""
    status = ffi.new("int *")
    r = lib.waitpid(tid, status, options)
    return r, status[0], (ffi.errno if r == -1 else 0)


def current_cpu() -> int:
    """The CPU the calling thread runs on (-1 if unknown)."""
    return lib.sched_getcpu()


def regs_from_user_regs(values) -> dict[str, int]:
    """The exposed registers, by name, from the 27 words of a user_regs_struct in declaration order."""
    by_name = dict(zip(USER_REGS_FIELDS, values))
    return {name: by_name[name] for name in REG_NAMES}


_warm = False


def warm_up() -> None:
    """Make each call the pause uses once, harmlessly (on a pid that cannot exist): cffi sets up a call's
    types on its first use, 0.2-0.7 ms each, which would otherwise land inside the first pause."""
    global _warm
    if _warm:
        return
    nobody = 0x7FFFFFFF  # above pid_max: ESRCH / ECHILD, no side effect
    regs = ffi.new("struct user_regs_struct *")
    ptrace(PTRACE_SEIZE, nobody, 0, 0)
    ptrace(PTRACE_GETREGS, nobody, 0, regs)
    copy = ffi.new("struct user_regs_struct *")
    copy[0] = regs[0]  # as the single step prepares a thread's registers
    copy.rip, copy.orig_rax, copy.eflags = regs.rip, regs.orig_rax, regs.eflags
    waitpid(nobody, WALL | WNOHANG)
    current_cpu()
    regs_from_user_regs(ffi.unpack(ffi.cast("unsigned long *", regs), len(USER_REGS_FIELDS)))
    _warm = True
