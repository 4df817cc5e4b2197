"""Snapshots in the kernel: the generated task-iterator program is loaded before the process is paused; while it
is paused the program runs once (``read()`` on an iterator fd) and leaves one ring-buffer record per
goroutine; after the process runs again the records become the same raw snapshot the interpreter produces.
"""

from __future__ import annotations

import struct

from goprobe.backends.ebpf import event_codegen as G
from goprobe.backends.ebpf import snapshot_codegen as S
from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.iterator import link_task_iterator, load_task_iterator, run
from goprobe.backends.ebpf.llvm_target import compile_to_object
from goprobe.backends.ebpf.ringbuf import RingBuffer
from goprobe.backends.interpreter.snapshot import RawCapture, RawFrame, RawGoroutine, RawSnapshot
from goprobe.ir.snapshot import SnapshotPlan

_U32 = struct.Struct("<I")


def ring_size_for(goroutines: int, per_goroutine: int = 512) -> int:
    """A ring large enough for every goroutine's record (a power of two between 4 MiB and 1 GiB)."""
    want = max(4 << 20, goroutines * per_goroutine)
    size = 1
    while size < want:
        size <<= 1
    return min(size, 1 << 30)


class EbpfSnapshotter:
    """A loaded snapshot program for one process; :meth:`run` while the process is paused."""

    def __init__(self, plan: SnapshotPlan, pid: int, limits, *, goroutines_hint: int = 10_000) -> None:
        self.plan = plan
        self._closables: list = []
        try:
            rows, self.plan_sets = S.unwind_rows(plan)
            self.rows = self._own(sc.create_array(S.ROW.size, len(rows), name="gp_rows"))
            for i, row in enumerate(rows):
                self.rows.update(_U32.pack(i), row)
            self.rows.freeze()
            self.scratch = self._own(sc.create_array(S.SCRATCH_SIZE, sc.possible_cpus(), name="gp_sscratch"))
            self.events = self._own(sc.create_ringbuf(ring_size_for(goroutines_hint), name="gp_snap"))
            glim = G.Limits(limits.string_bytes, limits.collection_bytes, limits.min_elements, limits.map_entries,
                            limits.pointer_depth, None, None, False)
            self.seen = self._own(sc.create_map(sc.BPF_MAP_TYPE_LRU_HASH, 16, 8, 1 << 16, name="gp_seen"))
            self.pc_cache = self._own(sc.create_hash(8, S.ROW.size, 1 << 16, name="gp_pcs"))
            self.fixup_ring = self._own(sc.create_ringbuf(4 << 20, name="gp_fixups"))
            maps = S.SnapshotMapFds(self.scratch.fd, self.events.fd, self.rows.fd, self.seen.fd, self.pc_cache.fd,
                                    self.fixup_ring.fd)
            self.generated = S.generate(plan, maps, len(rows), self.plan_sets, glim)
            obj = compile_to_object(self.generated.ir, name="snapshot")
            self.program = self._own(load_task_iterator(obj, name="snapshot", entry="snapshot"))
            self.link = self._own(link_task_iterator(self.program, tid=pid))
            self.ring = self._own(RingBuffer(self.events))
            self.fixup_reader = self._own(RingBuffer(self.fixup_ring))
        except BaseException:
            self.close()
            raise

    def _own(self, thing):
        self._closables.append(thing)
        return thing

    def run(self) -> None:
        """Walk every goroutine now (the process must be paused); the records wait in the ring buffer."""
        run(self.link)

    def records(self) -> list[bytes]:
        """The records of the last run, in allgs order."""
        return self.ring.consume()

    def resolve_fixups(self, memory, limits) -> dict[int, list[tuple[int, int, bytes]]]:
        """While the process is still paused: encode the values the program left to the interpreter
        (interfaces of types it does not decode, large maps, type parameters) from the process's memory.
        Returns, per g address, (capture length position, marker position, encoded bytes)."""
        from goprobe.backends.interpreter.values import RuntimeTypeInfo, ValueEncoder

        out: dict[int, list[tuple[int, int, bytes]]] = {}
        rt = RuntimeTypeInfo(self.plan.interfaces)
        for raw in self.fixup_reader.consume():
            gp, caplen, marker, tid, size, dictionary, depth, data = G.FIXUP.unpack_from(raw, 0)
            if tid >= len(self.plan.types.entries):
                continue
            enc = ValueEncoder(self.plan.types, memory, limits, rt)
            enc.dictionary = dictionary
            enc.begin_value()
            enc.value_from_bytes(tid, data[:size], depth)
            out.setdefault(gp, []).append((caplen, marker, bytes(enc.out)))
        return out

    def raw_snapshot(self, records: list[bytes], running: dict[int, RawGoroutine],
                     fixups: dict[int, list[tuple[int, int, bytes]]] | None = None) -> RawSnapshot:
        """Records → the interpreter's raw snapshot; *running* replaces goroutines that were on a thread
        (their registers, not ``g.sched``, tell where they are: the interpreter unwinds those)."""
        plan, gen = self.plan, self.generated
        out = []
        errors = []
        for raw in records:
            try:
                gp, goid, status, wait, nframes, truncated = S.GOROUTINE_HEADER.unpack_from(raw, 0)
            except struct.error:
                errors.append("a truncated goroutine record")
                continue
            if fixups and gp in fixups:
                raw = _splice(raw, fixups[gp])
            if gp in running:
                rg = running[gp]
            else:
                pos = S.GOROUTINE_HEADER.size
                frames = []
                for _ in range(nframes):
                    pc, sp, planset = S.FRAME_HEADER.unpack_from(raw, pos)
                    pos += S.FRAME_HEADER.size
                    hits = []
                    for k in gen.plan_sets[planset] if planset < len(gen.plan_sets) else ():
                        fp = plan.frames[k]
                        caps, pos = _captures(raw, pos, gen.slots[k], gen.reasons)
                        hits.append((fp.function, fp.inlined, caps))
                    frames.append(RawFrame(pc, sp, False, tuple(hits)))
                rg = RawGoroutine(goid, status, wait, None, tuple(frames), bool(truncated))
            if plan.goroutine_filter is not None and not any(
                    lo <= f.pc - (0 if f.top else 1) < hi for f in rg.frames for lo, hi in plan.goroutine_filter):
                continue
            out.append(rg)
        return RawSnapshot(tuple(out), tuple(errors))

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
        if state == G.CAPTURE_UNAVAILABLE:
            code = raw[pos + 1]
            out.append(RawCapture(label, tid, None, reasons[code] if code < len(reasons) else "unavailable"))
            pos += 2
            continue
        (length,) = _U32.unpack_from(raw, pos + 1)
        start = pos + 5
        out.append(RawCapture(label, tid, bytes(raw[start:start + length])))
        pos = start + length
    return tuple(out), pos
