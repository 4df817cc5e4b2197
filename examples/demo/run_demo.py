"""``make demo``: build the bundled demo Go service, start it, run goprobe on it, stop it.

goprobe's main jobs: a snapshot of the running service — every goroutine's stack, grouped, with values
captured in the frames of the functions a user cares about — after a short look at what the binary exposes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from goprobe.testing.gobuild import build

HERE = Path(__file__).resolve().parent
GO_VERSION = os.environ.get("GOPROBE_DEMO_GO", "1.27.3")
FUNCTIONS = ["main.(*Server).handle", "main.(*Worker).run", "main.(*CacheHandler).Serve"]


def goprobe(*args: str) -> None:
    cmd = [sys.executable, "-m", "goprobe.cli", *args]
    print(f"\n$ goprobe {' '.join(repr(a) if '(' in a else a for a in args)}", flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    print(f"building the demo service with Go {GO_VERSION} ...", flush=True)
    binary = build(HERE, GO_VERSION, "opt", name="demo-service")
    service = subprocess.Popen([str(binary), "-duration", "120s"], stdout=subprocess.PIPE, text=True)
    try:
        line = service.stdout.readline().strip()
        print(f"demo service pid {service.pid}: {line}", flush=True)
        time.sleep(0.5)  # let the load generator and workers get going
        exe = f"/proc/{service.pid}/exe"  # what goprobe will attach to: the running process's binary
        goprobe("inspect", exe, FUNCTIONS[0])
        goprobe("snapshot", str(service.pid),
                "-c", "main.(*Server).handle:req.ID,req.Path,req.Headers,len(s.conns),s.cfg",
                "-c", "main.(*Worker).run:w.ID,w.Done,w.Current",
                "-c", "main.(*CacheHandler).Serve:key,len(c.entries)")
        # Dynamic events: each call of the cache handler, then each return of the request handler with its
        # result and duration, for a few seconds (eBPF uprobes; conditions run in the kernel).
        goprobe("events", str(service.pid), "--probe", "main.(*CacheHandler).Serve(req.ID, req.Path)",
                "--duration", "2", "--max", "5")
        goprobe("events", str(service.pid), "--probe", "main.(*Server).handle(req.ID, req.Path)", "--return",
                "--when", "req.ID > 0", "--duration", "2", "--max", "5")
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        print(f"\ndemo service stopped (exit code {service.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
