"""Snapshots in the kernel: the generated program is loaded before the process is paused; while it is paused
the program runs once and leaves one ring-buffer record per goroutine; after the process runs again the
records become the same raw snapshot the interpreter produces.

The program runs inside the target (see :class:`Trigger`): one stopped thread is single-stepped through a
cold instruction that carries a sleepable uprobe, so the program reads the target's memory in the target's
own context. Where that cannot be set up, a task iterator runs it from goprobe's context instead (slower:
every read crosses processes).
"""

from __future__ import annotations

import itertools
import os
import struct
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import attrs

from goprobe.backends.ebpf import copy_codegen as C
from goprobe.backends.ebpf import event_codegen as G
from goprobe.backends.ebpf import snapshot_codegen as S
from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.iterator import link_task_iterator, load_task_iterator, run
from goprobe.backends.ebpf.errors import EbpfError, VerifierError
from goprobe.backends.ebpf.program import load_program
from goprobe.backends.ebpf.uprobe import attach_uprobes, vaddr_to_file_offset
from goprobe.backends.ebpf.llvm_target import CodegenError, compile_to_object
from goprobe.backends.ebpf.ringbuf import RingBuffer
from goprobe.backends.interpreter.snapshot import RawCapture, RawFrame, RawGoroutine, RawSnapshot
from goprobe.ir.copy_plan import CopyPlan, copy_plan
from goprobe.ir.snapshot import SnapshotPlan
from goprobe.process.ptrace import StepArm

_U32 = struct.Struct("<I")


def ring_size_for(goroutines: int, per_goroutine: int = 512) -> int:
    """A ring large enough for every goroutine's record (a power of two between 4 MiB and 1 GiB)."""
    want = max(4 << 20, goroutines * per_goroutine)
    size = 1
    while size < want:
        size <<= 1
    return min(size, 1 << 30)


SHARD_CAPTURES = 60  # captures per program before a request is split (each part is verified on its own)
# The task iterator's frame plans are not global functions (their reads need the task): the verifier walks
# them once per path that reaches them, so its programs hold fewer.
SHARD_CAPTURES_ITERATOR = 40
WORKERS = 2  # threads that share the goroutines at most (one per CPU): each walks its share on a CPU

# Functions that run only when the program is already failing: their code is where the trigger's uprobe goes.
COLD_FUNCTIONS = ("runtime.badctxt", "runtime.badmorestackg0", "runtime.badmorestackgsignal", "runtime.abort",
                  "runtime.throw", "runtime.fatal")


RESUME_RESERVE_MS = 3.0  # see EbpfSnapshotter._copy_budget_ns


@attrs.frozen
class Trigger:
    """Where a stopped thread is sent to run the snapshot program: a ``ret`` instruction of the target's
    executable (*path*, its offset in that file, its address in the process), and the address ranges of the
    executable's Go code (*code*): only threads stopped there are used (see
    :meth:`goprobe.process.ptrace._Tracer.step_many`)."""

    path: str
    file_offset: int
    address: int
    code: tuple[tuple[int, int], ...] = ()


def find_trigger(binary, path: str, bias: int) -> Trigger | None:
    """A ``ret`` instruction in cold code of *binary* (a GoBinary) for the uprobe trigger, or None.

    Why a ``ret``: a thread is sent there with the word below its stack pointer set to where it was stopped,
    so the instruction itself takes it back; if goprobe and its uprobe vanish at any instant, the thread
    still goes on exactly where it was (the kernel executes ``ret`` out of line; it touches only that word)."""
    if binary.arch != "amd64":
        return None
    code = _go_code(binary, bias)
    for name in COLD_FUNCTIONS:
        try:
            fn = binary.function(name)
        except Exception:  # noqa: BLE001 - not in this binary or release: try the next one
            continue
        for lo, hi in sorted(fn.ranges):
            for addr, size, mnem, ops in binary.code.instructions(lo, hi):
                if mnem == "ret" and size == 1 and not ops:
                    try:
                        return Trigger(path, vaddr_to_file_offset(path, addr), addr + bias, code)
                    except Exception:  # noqa: BLE001 - no file mapping for it: no trigger
                        return None
    return None


def _go_code(binary, bias: int) -> tuple[tuple[int, int], ...]:
    """[runtime.text, runtime.etext) in the process: the Go code (cgo's C code, which may keep data below its
    stack pointer, lies outside it)."""
    if getattr(binary, "stripped", False):
        lo, hi = binary.text_range
    else:
        lo, hi = (getattr(binary.elf.symbol(n), "value", 0) for n in ("runtime.text", "runtime.etext"))
    if not lo or hi <= lo:
        return ()
    return ((lo + bias, hi + bias),)


_CAPTURE_FN = re.compile(r"in function (cap\d+_\d+)\b")


class _Shard:
    """One program of a snapshot: it walks every goroutine and captures in the frames of its plans."""

    def __init__(self, owner: EbpfSnapshotter, plans: frozenset[int], glim, pid: int, ring_bytes: int,
                 index: int, worker: int, root_modes: dict[str, str] | None = None) -> None:
        own = owner._own
        self.plans = plans
        self.index = index
        self.worker = worker
        self.events = own(sc.create_ringbuf(ring_bytes, name="gp_snap"))
        self.fixup_ring = own(sc.create_ringbuf(4 << 20, name="gp_fixups"))
        copy = None
        if owner.copy_plan is not None:
            self.copy_fixup_ring = own(sc.create_ringbuf(4 << 20, name="gp_cfixups"))
            cscratch, queue, cseen = owner.copy_worker_maps[worker]
            copy = (C.CopyMaps(cscratch.fd, queue.fd, cseen.fd, owner.copy_descs.fd, owner.copy_ops.fd,
                               owner.copy_rtypes.fd, owner.copy_chunks.fd, self.copy_fixup_ring.fd,
                               owner.copy_closures.fd if owner.copy_closures is not None else -1),
                    owner.copy_plan, owner.copy_sizes)
        scratch, seen, pc_cache = owner.worker_maps[worker]
        maps = S.SnapshotMapFds(scratch.fd, self.events.fd, owner.rows.fd, seen.fd, pc_cache.fd,
                                self.fixup_ring.fd, owner.arm.fd)
        trigger = "uprobe" if owner.trigger is not None else "iterator"
        # *root_modes*: captures made small from the start (see S.generate): found by another worker's program
        # of the same plans, or all of a plan too large to verify even alone.
        root_modes = dict(root_modes or {})
        while True:
            self.generated = S.generate(owner.plan, maps, owner.n_rows, owner.plan_sets, glim, plans,
                                        trigger=trigger, shard=self.index, worker=worker, workers=owner.workers,
                                        root_modes=root_modes, copy=copy)
            try:
                obj = compile_to_object(self.generated.ir, name="snapshot")
                break
            except CodegenError as exc:
                # One capture whose code LLVM cannot fit (BPF's 512-byte stack) must not cost the others: it
                # is left to the interpreter in the pause, or, failing that too, made unavailable.
                m = _CAPTURE_FN.search(str(exc))
                if m is None or root_modes.get(m.group(1)) == "drop":
                    raise
                owner.rejections += 1
                root_modes[m.group(1)] = "drop" if m.group(1) in root_modes else "defer"
        self.root_modes = root_modes
        if owner.trigger is not None:
            self.program = own(load_program(obj, S.SECTIONS["uprobe"], name="snapshot", entry="snapshot",
                                            sleepable=True))
            t = owner.trigger
            self.link = own(attach_uprobes(self.program, t.path, [t.file_offset], [pid], method="perf"))
        else:
            self.program = own(load_task_iterator(obj, name="snapshot", entry="snapshot"))
            self.link = own(link_task_iterator(self.program, tid=pid))
        self.ring = own(RingBuffer(self.events))
        self.fixup_reader = own(RingBuffer(self.fixup_ring))
        self.copy_fixup_reader = own(RingBuffer(self.copy_fixup_ring)) if copy is not None else None


class EbpfSnapshotter:
    """The loaded snapshot program(s) for one process; :meth:`run` while the process is paused."""

    def __init__(self, plan: SnapshotPlan, pid: int, limits, *, goroutines_hint: int = 10_000,
                 trigger: Trigger | None = None, workers: int | None = None) -> None:
        """*trigger*: where to run the program inside the target (see :func:`find_trigger`); None runs it
        from a task iterator. *workers*: how many of the target's threads share the goroutines, each stepped
        through the trigger at the same time with programs of its own (default: one per CPU, at most
        WORKERS; the iterator trigger uses one)."""
        self.plan = plan
        self.pid = pid
        self.limits = limits
        self.trigger = trigger
        self.workers = 1 if trigger is None else max(1, workers or min(WORKERS, os.cpu_count() or 1))
        self._runs = 0
        self.fixup_errors: list[str] = []  # set by resolve_fixups
        self.copy_stats: dict = {}  # what the last run's copier copied (set by copied_values)
        self.rejections = 0  # programs LLVM or the verifier found too large (each then split or made small)
        self._armed = False
        self._closables: list = []
        try:
            # Armed and read back inside the pause: mapped into this process, so that costs no system call.
            self.arm = self._own(sc.create_array(8 * S.ARM_WORDS, 1, name="gp_arm", flags=sc.BPF_F_MMAPABLE))
            self._arm_words = self._own(self.arm.mmap())
            self._arm_words[:] = bytes(len(self._arm_words))  # faulted in now, not inside the pause
            rows, self.plan_sets = S.unwind_rows(plan)
            self.n_rows = len(rows)
            # Written through a mapping in one copy: a large binary has ~100k rows, and one bpf() call per
            # row took over a second.
            self.rows = self._own(sc.create_array(S.ROW.size, len(rows), name="gp_rows", flags=sc.BPF_F_MMAPABLE))
            with self.rows.mmap() as values:
                blob = b"".join(rows)
                values[:len(blob)] = blob
            self.rows.freeze()
            # Per worker (threads running at the same time must not share them): scratch, the "seen" keys of
            # pointers followed (numbered from scratch) and the PC cache (entries are written non-atomically).
            self.worker_maps = [
                (self._own(sc.create_array(S.SCRATCH_SIZE, 1, name="gp_sscratch")),
                 self._own(sc.create_map(sc.BPF_MAP_TYPE_LRU_HASH, 16, 8, 1 << 16, name="gp_seen")),
                 self._own(sc.create_array(S.PC_CACHE_ENTRY, 1 << S.PC_CACHE_BITS, name="gp_pcs")))
                for _w in range(self.workers)]
            self.pause_ms = limits.pause_ms
            self.copy_plan: CopyPlan | None = None
            self._setup_copier(plan, limits)
            glim = G.Limits(limits.string_bytes, limits.collection_bytes, limits.min_elements, limits.map_entries,
                            limits.pointer_depth, None, None, False)
            ring = ring_size_for(goroutines_hint)
            self._indices = itertools.count()
            self._index_lock = threading.Lock()
            self.shard_captures = SHARD_CAPTURES if trigger is not None else SHARD_CAPTURES_ITERATOR
            groups = _groups(plan, self.shard_captures)
            # Each program is compiled (in a child process) and verified (in the kernel) on its own: a request
            # split into several programs loads them side by side, one per CPU.
            # The first worker's programs find how the request must be split and made small (each verifier
            # rejection costs seconds); the other workers' programs, the same but for their share, follow that.
            cpus = os.cpu_count() or 1
            with ThreadPoolExecutor(max_workers=max(1, min(len(groups), cpus))) as pool:
                first = [sh for part in pool.map(lambda g: self._load(g, glim, pid, ring, 0), groups) for sh in part]
            jobs = [(sh, w) for w in range(1, self.workers) for sh in first]
            with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), cpus))) as pool:
                rest = list(pool.map(lambda job: _Shard(self, job[0].plans, glim, pid, ring, self._next_index(),
                                                        job[1], job[0].root_modes), jobs))
            self.shards: list[_Shard] = first + rest
            # parts[i]: the programs capturing the same plans, one per worker (in allgs order of their shares)
            per_worker = [[sh for sh in self.shards if sh.worker == w] for w in range(self.workers)]
            if len({len(x) for x in per_worker}) != 1:
                raise EbpfError("the snapshot programs of the workers were split differently; retry with "
                                "backend='interp'")
            self.parts: list[list[_Shard]] = [list(p) for p in zip(*per_worker)]
            # Before the step: each program's share goes to one of the stepped threads. After it, nothing keeps
            # the process stopped unless a goroutine was on a thread or a value was left to the interpreter.
            slots = [min(shard.index, S.ARM_SLOTS - 2) for shard in self.shards]
            self.step_arm = StepArm(
                self.arm.fd, len(self._arm_words),
                tuple((8 * (S.ARM_TIDS + slot), shard.worker) for slot, shard in zip(slots, self.shards)),
                thread_words=tuple(8 * (S.ARM_SLOTS + slot) for slot in slots),
                pending_rings=tuple(shard.fixup_ring.fd for shard in self.shards), disarm=(0,),
                code=() if trigger is None else trigger.code, words=self._arm_words,
                deadline=(8 * C.ARM_COPY, self._copy_budget_ns()))
            self.generated = self.shards[0].generated
            self.program = self.shards[0].program
        except BaseException:
            self.close()
            raise

    def _setup_copier(self, plan: SnapshotPlan, limits) -> None:
        """The copier's tables and maps (see ``copy_codegen``), when the request leaves any value to goprobe
        that the copy plan covers."""
        cp = copy_plan(plan.types, plan.interfaces, limits)
        if not cp.covered or os.environ.get("GOPROBE_NO_COPY"):
            return
        descs, ops = C.table_blobs(cp)
        if max(len(descs), len(ops)) > 4 << 20:
            return  # tables too large for one map value: values are encoded in the pause
        own = self._own
        maps = []
        for blob, name in ((descs, "gp_cdescs"), (ops, "gp_cops")):
            m = own(sc.create_array(len(blob), 1, name=name, flags=sc.BPF_F_MMAPABLE))
            with m.mmap() as values:
                values[:len(blob)] = blob
            m.freeze()
            maps.append(m)
        self.copy_descs, self.copy_ops = maps
        self.copy_rtypes = own(sc.create_map(sc.BPF_MAP_TYPE_HASH, 8, 8, max(1, len(cp.by_runtime_type)),
                                             name="gp_crtypes"))
        for off, tid in cp.by_runtime_type:
            self.copy_rtypes.update(struct.pack("<Q", off), struct.pack("<Q", tid))
        self.copy_closures = None
        if cp.by_closure_entry:
            self.copy_closures = own(sc.create_map(sc.BPF_MAP_TYPE_HASH, 8, 8, len(cp.by_closure_entry),
                                                   name="gp_cclos"))
            for pc, tid in cp.by_closure_entry:
                self.copy_closures.update(struct.pack("<Q", pc), struct.pack("<Q", tid))
        self.copy_chunks = own(sc.create_ringbuf(2 * C.COPY_BYTES, name="gp_chunks"))
        self.copy_chunk_reader = own(RingBuffer(self.copy_chunks))
        self.copy_worker_maps = [
            (own(sc.create_array(C.C_SIZE_TOTAL, 1, name="gp_cscratch")),
             own(sc.create_array(C.QCAP * C.ITEM, 1, name="gp_cqueue")),
             own(sc.create_array(16 << C.SEEN_BITS, 1, name="gp_cseen")))
            for _w in range(self.workers)]
        self.copy_sizes = (len(descs), len(ops))
        self.copy_plan = cp

    def _copy_budget_ns(self) -> int:
        """How long the walk and the copier may run once the threads are stopped: the pause limit less what
        finishing and resuming take. Measured (Go 1.27, a 600k-entry map, quiet machine): the stepped threads
        come back and the process runs again ~3 ms after the program's deadline, whatever the limit, so 90 %
        of a 5 ms limit gave 7–9 ms pauses. Half of a limit too small for that reserve."""
        return int(max(0.5 * self.pause_ms, self.pause_ms - RESUME_RESERVE_MS) * 1e6)

    def _next_index(self) -> int:
        with self._index_lock:
            return next(self._indices)

    def _load(self, plans: list[int], glim, pid: int, ring: int, worker: int) -> list[_Shard]:
        """Load a program for *plans*; if the verifier or LLVM finds it too large, split it in two."""
        index = self._next_index()
        try:
            return [_Shard(self, frozenset(plans), glim, pid, ring, index, worker)]
        except (VerifierError, CodegenError) as exc:
            too_big = isinstance(exc, CodegenError) or "too large" in str(exc) or "too complex" in str(exc)
            if not too_big:
                raise
            self.rejections += 1
            if len(plans) <= 1:
                # One frame plan whose captures the verifier cannot walk: the interpreter writes them in the
                # pause, the program only hands it their roots.
                every = {f"cap{k}_{j}": "defer" for k in plans
                         for j in range(len(G.capture_groups(self.plan.frames[k].captures)))}
                return [_Shard(self, frozenset(plans), glim, pid, ring, index, worker, every)]
            half = len(plans) // 2
            return (self._load(plans[:half], glim, pid, ring, worker)
                    + self._load(plans[half:], glim, pid, ring, worker))

    def _own(self, thing):
        self._closables.append(thing)
        return thing

    def arm_run(self) -> None:
        """Arm the programs for the next :meth:`run` now: needed before the pause when the step is made as soon
        as the threads are stopped (``run_paused_in_helper(step=...)``); otherwise run() does it."""
        self._runs += 1
        words = self._arm_words
        words[:] = bytes(len(words))
        struct.pack_into("<Q", words, 0, self._runs)
        self._armed = True

    def run(self, paused=None, on_threads=None):
        """Walk every goroutine now (the process must be paused: *paused* is its PausedProcess, needed by the
        uprobe trigger); the records wait in the ring buffers. *on_threads* is called, still paused, when some
        goroutine may be on a thread (the program counts them; the iterator trigger does not): its result is
        returned, else None."""
        if self.trigger is None:
            struct.pack_into("<Q", self._arm_words, 8 * C.ARM_COPY, time.monotonic_ns() + self._copy_budget_ns())
            for shard in self.shards:
                run(shard.link)
            return on_threads() if on_threads is not None else None
        if paused is None:
            raise ValueError("the uprobe trigger needs the PausedProcess")
        if not self._armed:
            self.arm_run()
        words = self._arm_words
        try:
            paused.step_many(self.trigger.address, self.workers, self.step_arm)  # every program is there
        finally:
            self._armed = False
            struct.pack_into("<Q", words, 0, 0)
        on_thread = 0
        for shard in self.shards:
            slot = min(shard.index, S.ARM_SLOTS - 2)
            (done,) = struct.unpack_from("<Q", words, 8 * (1 + slot))
            if done != self._runs:
                raise EbpfError(f"the snapshot program {shard.index} did not run when thread stepped through "
                                f"{self.trigger.address:#x}; retry with backend='interp'")
            on_thread = max(on_thread, struct.unpack_from("<Q", words, 8 * (S.ARM_SLOTS + slot))[0])
        return on_threads() if on_threads is not None and on_thread else None

    def records(self) -> list[list[bytes]]:
        """The records of the last run, per part of the request (one list for its workers' programs), in
        allgs order."""
        return [[rec for shard in part for rec in shard.ring.consume()] for part in self.parts]

    def resolve_fixups(self, memory, limits, deadline: float | None = None
                       ) -> list[dict[int, list[tuple[int, int, bytes]]]]:
        """While the process is still paused: encode the values the programs left to the interpreter
        (interfaces of types they do not decode, maps, channels, type parameters...) from the process's
        memory. Per program and g address: (capture length position, marker position, encoded bytes).

        Past *deadline* (``time.monotonic()``, the pause limit) the values left are cut (``@truncated``) and
        the snapshot's errors say so."""
        self.fixup_errors = []
        if not any(shard.fixup_reader.pending() for shard in self.shards):
            return [{} for _ in self.parts]  # the common case, decided without setting anything up
        from goprobe.backends.interpreter.page_cache import PageCache
        from goprobe.backends.interpreter.values import RuntimeTypeInfo, ValueEncoder

        rt = RuntimeTypeInfo(self.plan.interfaces)
        memory = PageCache(memory)  # values cluster on few pages: batched page reads, not a system call each
        result = []
        for part in self.parts:
            out: dict[int, list[tuple[int, int, bytes]]] = {}
            for raw in (rec for shard in part for rec in shard.fixup_reader.consume()):
                gp, caplen, marker, tid, size, dictionary, depth, data = G.FIXUP.unpack_from(raw, 0)
                enc = ValueEncoder(self.plan.types, memory, limits, rt, deadline)
                enc.dictionary = dictionary
                enc.begin_value()
                if tid & G.PATH_FIXUP:
                    self._path_fixup(enc, tid & ~G.PATH_FIXUP, size, data)
                elif tid >= len(self.plan.types.entries):
                    continue
                elif size == G.BY_ADDRESS:
                    enc.value_at(tid, int.from_bytes(data[:8], "little"), depth)
                else:
                    enc.value_from_bytes(tid, data[:size], depth)
                out.setdefault(gp, []).append((caplen, marker, bytes(enc.out)))
                if enc.timed_out and not self.fixup_errors:
                    self.fixup_errors.append(
                        f"pause limit of {limits.pause_ms} ms reached while reading the values that the kernel "
                        "program left to goprobe (maps, interfaces...): those from there on are cut (@truncated) "
                        "and the process was resumed; raise limits.pause_ms or capture less")
            result.append(out)
        return result

    def copied_values(self, pid: int, limits) -> list[dict[int, list[tuple[int, int, bytes]]]]:
        """After the pause: encode the values the programs copied (see ``copy_codegen``) from the copies, in the
        form of :meth:`resolve_fixups`' result."""
        if self.copy_plan is None:
            return [{} for _ in self.parts]
        from goprobe.backends.interpreter.copied_memory import CopiedMemory, NotCopied, read_only_ranges
        from goprobe.backends.interpreter.values import RuntimeTypeInfo, ValueEncoder, reason_value
        from goprobe.process.memory import ProcessMemory

        fixes = [[rec for shard in part for rec in shard.copy_fixup_reader.consume()] for part in self.parts]
        chunks = list(self.copy_chunk_reader.consume())
        if not any(fixes):
            return [{} for _ in self.parts]
        copied, failed = [], []
        hsize = C.CHUNK_HEADER.size
        for raw in chunks:  # each record: chunks, each a header and its bytes padded to 8
            pos = 0
            while pos + hsize <= len(raw):
                addr, n, flags = C.CHUNK_HEADER.unpack_from(raw, pos)
                pos += hsize
                if flags & 1:
                    failed.append((addr, n))
                    continue
                copied.append((addr, raw[pos:pos + n]))
                pos += (n + 7) & ~7
        words = self._arm_words
        cut = any(struct.unpack_from("<Q", words, 8 * (C.ARM_COPY_CUT + w))[0] for w in range(self.workers))
        dropped = sum(struct.unpack_from("<Q", words, 8 * (C.ARM_COPY_DROPPED + w))[0] for w in range(self.workers))
        try:
            live = ProcessMemory(pid)
        except Exception:  # noqa: BLE001 - gone since: only the copies are read
            live = None
        memory = CopiedMemory(copied, failed, live, read_only_ranges(pid) if live is not None else ())
        rt = RuntimeTypeInfo(self.plan.interfaces)
        raw_base = live.read(rt.types_base_addr, 8) if live is not None else None
        rt.types_base = struct.unpack("<Q", raw_base)[0] if raw_base else 0
        short = 0
        result = []
        for recs in fixes:
            out: dict[int, list[tuple[int, int, bytes]]] = {}
            for raw in recs:
                gp, caplen, marker, tid, size, dictionary, depth, data = G.FIXUP.unpack_from(raw, 0)
                if tid >= len(self.plan.types.entries) and not tid & G.PATH_FIXUP:
                    continue
                enc = ValueEncoder(self.plan.types, memory, limits, rt)
                enc.dictionary = dictionary
                enc.begin_value()
                try:
                    if tid & G.PATH_FIXUP:
                        self._path_fixup(enc, tid & ~G.PATH_FIXUP, size, data)
                    elif size == G.BY_ADDRESS:
                        enc.value_at(tid, int.from_bytes(data[:8], "little"), depth)
                    else:
                        enc.value_from_bytes(tid, data[:size], depth)
                    encoded = bytes(enc.out)
                except NotCopied as exc:  # outside any value (a path's steps): the whole capture
                    enc.not_copied += 1
                    encoded = reason_value(f"not read in the pause ({exc})")
                short += enc.not_copied
                out.setdefault(gp, []).append((caplen, marker, encoded))
            result.append(out)
        if short:
            self.fixup_errors.append(
                f"pause limit of {limits.pause_ms} ms reached while copying values: {short} of them were cut where "
                "the copy ended (@truncated) and the process was resumed; raise limits.pause_ms or capture less"
                if cut or dropped else
                f"{short} values were cut (@truncated) where goprobe's copy in the pause did not hold what they "
                "point to (a gap in goprobe: please report it)")
        self.copy_stats = dict(chunks=len(copied), failed=len(failed), cut=cut, dropped=dropped, short=short,
                               bytes=sum(len(c[1]) for c in copied))
        return result

    def _path_fixup(self, enc, which: int, size: int, data: bytes) -> None:
        """A capture the program handed over at its root: its whole access path evaluated here, then its value
        (or the reason the path has none, e.g. a key that is not in the map)."""
        from goprobe.backends.interpreter.access import PathError, evaluate
        from goprobe.backends.interpreter.values import reason_value

        k, j = which >> 12, which & 0xFFF
        try:
            _label, cands = G.capture_groups(self.plan.frames[k].captures)[j]
        except IndexError:
            enc.out += reason_value("internal error: unknown capture")
            return
        cap = next(c for c in cands if c.type is not None)
        root = dict(addr=int.from_bytes(data[:8], "little")) if size == G.BY_ADDRESS else dict(data=bytes(data[:size]))
        try:
            st = evaluate(enc, cap.path, **root)
        except PathError as exc:
            enc.out += reason_value(str(exc))
            return
        tsize = self.plan.types[cap.type].size
        if st.data is not None:
            enc.value_from_bytes(cap.type, st.data[:tsize].ljust(tsize, b"\0"))
        else:
            enc.value_at(cap.type, st.addr)

    def raw_snapshot(self, records: list[list[bytes]], running: dict[int, RawGoroutine],
                     fixups: list[dict[int, list[tuple[int, int, bytes]]]] | None = None) -> RawSnapshot:
        """Records → the interpreter's raw snapshot; *running* replaces goroutines that were on a thread
        (their registers, not ``g.sched``, tell where they are: the interpreter unwinds those). Call it after
        the pause: the values copied in the pause are encoded here (:meth:`copied_values`)."""
        plan = self.plan
        fixups = [dict(part) for part in (fixups or [{}] * len(self.parts))]
        for part, copied in zip(fixups, self.copied_values(self.pid, self.limits)):
            for gp, fixes in copied.items():
                part[gp] = part.get(gp, []) + fixes
        errors: list[str] = list(self.fixup_errors)
        if any(struct.unpack_from("<Q", self._arm_words, 8 * (C.ARM_WALK_CUT + w))[0] for w in range(self.workers)):
            walked = len(records[0]) if records else 0
            errors.append(f"pause limit of {self.pause_ms} ms reached after {walked} goroutines: the others were "
                          "not walked and the process was resumed; raise limits.pause_ms (--max-pause)")
        parsed = [self._parse(part[0], recs, fixups[i], errors)
                  for i, (part, recs) in enumerate(zip(self.parts, records))]
        others = [{rec[0]: rec[5] for rec in part} for part in parsed[1:]]
        out = []
        # Workers walk up to the limit each: the first max_goroutines live ones in allgs order are kept.
        limit, over = plan.max_goroutines, 0
        for n, (gp, goid, status, wait, truncated, frames, extras) in enumerate(parsed[0]):
            if n >= limit:
                over += 1
                continue
            if gp in running:
                rg = running[gp]
            else:
                merged = []
                for i, (pc, sp, hits) in enumerate(frames):
                    if others:
                        hits = dict(hits)
                        for other in others:  # the same frames, with the captures of the other programs' plans
                            more = other.get(gp)
                            if more is not None and i < len(more):
                                hits.update(more[i][2])
                        ordered = sorted(hits.values(), key=lambda h: h[3])
                    else:
                        ordered = hits.values()  # made in plan-set (rank) order
                    merged.append(RawFrame(pc, sp, False, tuple((fn, inl, caps) for fn, inl, caps, _r in ordered)))
                rg = RawGoroutine(goid, status, wait, None, tuple(merged), bool(truncated), *extras, g=gp)
            if plan.goroutine_filter is not None and not any(
                    lo <= f.pc - (0 if f.top else 1) < hi for f in rg.frames for lo, hi in plan.goroutine_filter):
                continue
            out.append(rg)
        return RawSnapshot(tuple(out), tuple(errors), self.skipped() + over)

    def skipped(self) -> int:
        """Live goroutines the last run left out past the plan's limit (each worker's share of the first part:
        every part walks the same goroutines)."""
        return sum(struct.unpack_from("<Q", self._arm_words, 8 * (S.ARM_SKIPPED + min(sh.index, S.ARM_SLOTS - 2)))[0]
                   for sh in self.parts[0])

    def _parse(self, shard: _Shard, records: list[bytes], fixups, errors: list[str]):
        """(gp, goid, status, wait reason, truncated, frames) per record; frames are (pc, sp, {plan index:
        (function, inlined, captures)}) in the order of the frame's plan set."""
        plan, gen = self.plan, shard.generated
        out = []
        # Per plan set: what its frames hold, in record order (rank, plan index, function, inlined, slots or
        # None when the plan captures nothing); plan sets repeat across goroutines, so this is worked out once.
        layouts: dict[int, list[tuple[int, int, str, bool, object]]] = {}

        def layout(planset: int) -> list[tuple[int, int, str, bool, object]]:
            entries = []
            for rank, k in enumerate(gen.plan_sets[planset] if planset < len(gen.plan_sets) else ()):
                fp = plan.frames[k]
                if fp.captures and k not in shard.plans:
                    continue  # another program captures these
                entries.append((rank, k, fp.function, fp.inlined, gen.slots[k] if fp.captures else None))
            layouts[planset] = entries
            return entries

        reasons = gen.reasons
        for raw in records:
            try:
                gp, goid, status, wait, nframes, truncated, *extras = S.GOROUTINE_HEADER.unpack_from(raw, 0)
            except struct.error:
                errors.append("a truncated goroutine record")
                continue
            if gp in fixups:
                raw = _splice(raw, fixups[gp])
            pos = S.GOROUTINE_HEADER.size
            frames = []
            try:
                for _ in range(nframes):
                    pc, sp, planset = S.FRAME_HEADER.unpack_from(raw, pos)
                    pos += S.FRAME_HEADER.size
                    hits = {}
                    entries = layouts.get(planset)
                    for rank, k, function, inlined, slots in (layout(planset) if entries is None else entries):
                        caps, pos = _captures(raw, pos, slots, reasons) if slots is not None else ((), pos)
                        hits[k] = (function, inlined, caps, rank)
                    frames.append((pc, sp, hits))
            except struct.error:
                # The program never writes past its record; should a record still end early, the frames read
                # so far are kept and the goroutine says it was cut.
                errors.append(f"goroutine {goid}: its record ended after {len(frames)} of {nframes} frames")
                truncated = 1
            gopc, parent, since, lockedm, labels = extras
            out.append((gp, goid, status, wait, truncated, frames, (gopc, parent, since, lockedm != 0, labels)))
        return out

    def close(self) -> None:
        for thing in reversed(self._closables):
            try:
                thing.close()
            except Exception:  # noqa: BLE001 - release the rest
                pass
        self._closables.clear()

    def __enter__(self) -> EbpfSnapshotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _groups(plan: SnapshotPlan, size: int = SHARD_CAPTURES) -> list[list[int]]:
    """Frame plans with captures in groups of about *size* captures (one program each)."""
    groups: list[list[int]] = [[]]
    count = 0
    for k, fp in enumerate(plan.frames):
        if not fp.captures:
            continue
        if groups[-1] and count + len(fp.captures) > size:
            groups.append([])
            count = 0
        groups[-1].append(k)
        count += len(fp.captures)
    return groups


def _splice(raw: bytes, fixes: list[tuple[int, int, bytes]]) -> bytes:
    """Put the interpreter's encodings in place of the 5-byte markers, from the last marker back (so earlier
    positions stay valid), growing each enclosing capture's length field."""
    buf = bytearray(raw)
    for caplen, marker, data in sorted(fixes, key=lambda x: x[1], reverse=True):
        if buf[marker:marker + 1] != bytes([G.DEFERRED]) or caplen + 4 > len(buf):
            continue
        buf[marker:marker + 5] = data
        (n,) = _U32.unpack_from(buf, caplen)
        _U32.pack_into(buf, caplen, n + len(data) - 5)
    return bytes(buf)


def _captures(raw: bytes, pos: int, slots, reasons) -> tuple[tuple[RawCapture, ...], int]:
    out = []
    for label, tid in slots:
        state = raw[pos]
        if state in (G.CAPTURE_UNAVAILABLE, G.CAPTURE_PARTIAL):
            code = raw[pos + 1]
            why = reasons[code] if code < len(reasons) else "unavailable"
            if state == G.CAPTURE_PARTIAL:
                out.append(RawCapture(label, tid, None, why, struct.unpack_from("<q", raw, pos + 2)[0]))
                pos += 10
            else:
                out.append(RawCapture(label, tid, None, why))
                pos += 2
            continue
        (length,) = _U32.unpack_from(raw, pos + 1)
        start = pos + 5
        out.append(RawCapture(label, tid, bytes(raw[start:start + length])))
        pos = start + length
    return tuple(out), pos
