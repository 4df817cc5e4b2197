"""Fault injection for the snapshot's safety tests: SIGKILL goprobe, its pause helper, or both at a chosen
instant of an eBPF snapshot's pause.

``python fault_injector.py VICTIM AT REPORT -- goprobe CLI args`` runs goprobe's CLI; its pause helper is
started as ``python fault_injector.py --helper FD`` instead of ``-m goprobe.process.pause_helper``, and counts
the ptrace and waitpid calls it makes for the pause. AT names the instant:

* ``OP:N`` — right after the N-th call of ptrace request OP (SEIZE, INTERRUPT, GETREGS, SETREGS, POKEDATA,
  CONT, DETACH) or of ``WAIT`` (waitpid) after the first CONT;
* ``CONT+US`` — US microseconds after the first CONT (the snapshot program is running in the target).

VICTIM is ``goprobe`` (the helper kills its parent), ``helper`` (it kills itself) or ``both`` (a cgroup or
container kill: the parent first, then itself). REPORT receives the helper's pid, then ``hit`` when the
instant was reached.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

NAMES = {0x4206: "SEIZE", 0x4207: "INTERRUPT", 12: "GETREGS", 13: "SETREGS", 5: "POKEDATA", 7: "CONT",
         17: "DETACH", 9: "SINGLESTEP"}
NOBODY = 0x7FFFFFFF  # the pid warm-up calls use


def _kill(victim: str, report: str) -> None:
    with open(report, "a") as fh:
        fh.write("hit\n")
    if victim in ("goprobe", "both"):
        os.kill(os.getppid(), signal.SIGKILL)
    if victim in ("helper", "both"):
        os.kill(os.getpid(), signal.SIGKILL)


def helper_main(fd: str) -> int:
    victim, at, report = os.environ["GP_FAULT_VICTIM"], os.environ["GP_FAULT_AT"], os.environ["GP_FAULT_REPORT"]
    with open(report, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    from goprobe.process import _libc

    op, _, arg = at.partition(":") if ":" in at else at.partition("+")
    count = {"n": 0, "cont": False}
    real_ptrace, real_waitpid = _libc.ptrace, _libc.waitpid

    def after(name: str) -> None:
        if name == "CONT" and not count["cont"]:
            count["cont"] = True
            if "+" in at:
                threading.Timer(int(arg) / 1e6, _kill, (victim, report)).start()
        if name == op and (name != "WAIT" or count["cont"]):
            count["n"] += 1
            if count["n"] == int(arg):
                _kill(victim, report)

    def ptrace(request, tid, addr=0, data=0):
        r = real_ptrace(request, tid, addr, data)
        if tid != NOBODY:
            after(NAMES.get(request, str(request)))
        return r

    def waitpid(tid, options):
        r = real_waitpid(tid, options)
        if tid != NOBODY:
            after("WAIT")
        return r

    _libc.ptrace, _libc.waitpid = ptrace, waitpid
    from goprobe.process.pause_helper import main

    return main([fd])


def goprobe_main(victim: str, at: str, report: str, argv: list[str]) -> int:
    os.environ.update(GP_FAULT_VICTIM=victim, GP_FAULT_AT=at, GP_FAULT_REPORT=report)
    real_popen = subprocess.Popen

    def popen(args, *a, **k):
        if list(args[1:3]) == ["-m", "goprobe.process.pause_helper"]:
            args = [args[0], os.path.abspath(__file__), "--helper", *args[3:]]
        return real_popen(args, *a, **k)

    subprocess.Popen = popen
    from goprobe.cli import main

    return main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "--helper":
        sys.exit(helper_main(sys.argv[2]))
    sep = sys.argv.index("--")
    sys.exit(goprobe_main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[sep + 1:]))
