"""Runs an event plan in the kernel: creates the maps, generates and loads the programs, attaches them to the
target processes, and hands out the raw records from the ring buffer. Everything is released by ``close()``
(also on exceptions, through ``with``, and by finalizers of the fds underneath).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence

import attrs

from goprobe.backends.ebpf import event_codegen as G
from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.errors import VerifierError
from goprobe.backends.ebpf.llvm_target import CodegenError, compile_to_object
from goprobe.backends.ebpf.object_file import BpfObject
from goprobe.backends.ebpf.program import LoadedProgram, load_program
from goprobe.backends.ebpf.ringbuf import RingBuffer
from goprobe.backends.ebpf.uprobe import Attachment, attach_uprobes, choose_attach_type, vaddr_to_file_offset
from goprobe.ir.events import EventPlan

DEFAULT_RING_BYTES = 16 << 20


@attrs.frozen
class Counters:
    """What the probes did, summed over sites: ``hits`` = filtered + delivered + every kind of drop."""

    hits: int = 0
    filtered: int = 0
    delivered: int = 0
    dropped_full: int = 0
    dropped_max: int = 0
    dropped_rate: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_max + self.dropped_rate


class EventSession:
    """The kernel side of one event request on one executable and its processes."""

    def __init__(self, plan: EventPlan, binary_path: str, pids: Sequence[int], limits: G.Limits, *,
                 ring_bytes: int = DEFAULT_RING_BYTES, bias: int = 0) -> None:
        """*plan* is rebased by *bias* (a PIE's load bias in these processes); probes attach at file offsets."""
        self.plan = plan
        self.bias = bias
        # /proc/PID/exe stays as it is: the kernel follows it to the file the process runs, even one whose path
        # was deleted or now names another file; its resolved name would not.
        self.path = binary_path if binary_path.startswith("/proc/") else os.path.realpath(binary_path)
        self.pids = tuple(pids)
        self._closables: list = []
        self.programs: list[LoadedProgram] = []
        self.attachments: list[Attachment] = []
        try:
            self._setup(limits, ring_bytes)
        except BaseException:
            self.close()
            raise

    def _own(self, thing):
        self._closables.append(thing)
        return thing

    def _setup(self, limits: G.Limits, ring_bytes: int) -> None:
        plan = self.plan
        n_sites = max(1, len(plan.sites))
        self.scratch = self._own(sc.create_array(G.SCRATCH_SIZE, sc.possible_cpus(), name="gp_scratch"))
        self.events = self._own(sc.create_ringbuf(ring_bytes, name="gp_events"))
        self.counters = self._own(sc.create_array(G.COUNTER_VALUE_SIZE, n_sites, name="gp_counters"))
        self.globals = self._own(sc.create_array(8, 1, name="gp_globals"))
        self.entries = self._own(sc.create_hash(16, 8, 1 << 16, name="gp_entries"))
        self.seen = self._own(sc.create_map(sc.BPF_MAP_TYPE_LRU_HASH, 16, 8, 1 << 16, name="gp_seen"))
        fds = G.MapFds(self.scratch.fd, self.events.fd, self.counters.fd, self.globals.fd, self.entries.fd,
                       self.seen.fd)
        self.generated, code = G.generate_and_compile(plan, fds, limits, plan.probe or "events")
        obj = BpfObject(code, name="events")
        offsets_of: dict[int, list[int]] = {}
        for section, fname, index in self.generated.sections:
            pcs = plan.entry_pcs if index < 0 else (plan.sites[index].pc,)
            offsets = [vaddr_to_file_offset(self.path, pc - self.bias) for pc in pcs]
            offsets_of[index] = offsets
            what = "return-duration stamp" if index < 0 else f"probe {plan.probe} at {plan.sites[index].pc:#x}"
            try:
                prog = load_program(obj, section, name=fname[:15], expected_attach_type=choose_attach_type(
                    len(offsets)))
            except VerifierError as exc:
                culprits = self._culprits(fds, limits, index) if index >= 0 else []
                if culprits:
                    what += (f": the verifier rejects {', '.join(repr(c) for c in culprits)} even alone; capture "
                             "a smaller part of it (a field, an element) or lower the limits")
                elif index >= 0:
                    what += ": every capture loads alone, not all together; split them over several requests"
                exc.args = (f"{what}: {exc}",)
                raise
            self.programs.append(self._own(prog))
            self.attachments.append(self._own(attach_uprobes(prog, self.path, offsets, self.pids)))
        self.ring = self._own(RingBuffer(self.events))

    def _culprits(self, fds, limits: G.Limits, index: int) -> list[str]:
        """The captures of site *index* whose program the verifier rejects even when it holds that capture alone
        (only called after a rejection, to name the expression in the error)."""
        site = self.plan.sites[index]
        bad = []
        for label, caps in G.capture_groups(site.captures):
            alone = attrs.evolve(site, captures=tuple(caps), returns=(), condition=None)
            plan = attrs.evolve(self.plan, sites=(alone,), callers=(), stack=False)
            try:
                generated = G.generate(plan, fds, limits)
                obj = BpfObject(compile_to_object(generated.ir, name="culprit"), name="culprit")
                for section, fname, i in generated.sections:
                    if i == 0:
                        load_program(obj, section, name=fname[:15]).close()
            except (VerifierError, CodegenError):
                bad.append(label)
        return bad

    # -- reading --------------------------------------------------------------------------------------------
    def poll(self, callback: Callable[[bytes], object], timeout: float | None) -> int:
        """Hand every available record to *callback*, waiting up to *timeout* seconds for the first."""
        return self.ring.poll_into(callback, timeout)

    def drain(self, callback: Callable[[bytes], object]) -> int:
        return self.ring.consume_into(callback)

    def counters_now(self) -> Counters:
        total = [0] * len(G.COUNTERS)
        for i in range(max(1, len(self.plan.sites))):
            raw = self.counters.lookup(struct.pack("<I", i))
            if raw is None:
                continue
            for k, v in enumerate(struct.unpack_from(f"<{len(G.COUNTERS)}Q", raw)):
                total[k] += v
        return Counters(*total)

    def detach(self) -> None:
        """Remove the probes (the maps stay readable for the last records and counters)."""
        for a in self.attachments:
            a.close()

    def close(self) -> None:
        for thing in reversed(self._closables):
            try:
                thing.close()
            except Exception:  # noqa: BLE001 - closing must go on for the rest
                pass
        self._closables.clear()

    def __enter__(self) -> EventSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(deadline: float | None) -> float | None:
    """Seconds left until *deadline* (monotonic), None for no deadline."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
