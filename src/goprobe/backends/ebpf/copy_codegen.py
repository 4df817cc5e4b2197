"""The snapshot program's copier: while the target is paused, copy the memory of the values left to the
interpreter (``goprobe.ir.copy_plan``), so that goprobe encodes them after the target runs again.

Values the capture code hands over (``defer``) become *items* — (address, copy type, count, pointer depth) —
on a per-worker stack in an array map. After each goroutine, ``copy_step`` (a ``bpf_loop`` callback) pops an
item, copies its objects (at most ``CHUNK`` bytes a read; the rest is pushed back as an item of its own) into
the chunk ring, and runs the type's ops over the copy (``copy_op``, a nested ``bpf_loop``), each of which may
push more items. Each (address, type) is copied once per run (an LRU hash of those seen). A read that fails
is recorded as such (the encoder then shows the value unreadable, as it would reading the live process).

The stop conditions — the pause deadline, the byte budget, a full stack or ring — end the copy and are
counted in the arm map; goprobe then shows what was not copied as cut by the pause budget, never as whole.
"""

from __future__ import annotations

import struct

import attrs

from goprobe.ir import copy_plan as CP

CHUNK = 4096  # bytes copied by one read
ITEM = 128  # bytes of a stack item: addr, type, count, depth, inline flag, then up to 48 inline bytes
ITEM_DATA = 32
INLINE_BYTES = 48
QCAP = 8192  # stack items (1 MiB)
OP = 32  # bytes of one op in the ops map
DESC = 16  # bytes of one copy type: size, number of ops, first op
COPY_BYTES = 64 << 20  # bytes copied at most in one run (and the chunk ring's size)
CHUNK_HEADER = struct.Struct("<QII")  # address, length, flags (1: the read failed; the length was asked)
MAX_STEPS = 1 << 20  # items one drain handles at most

# The copier's scratch (one per worker)
C_TOP, C_RUN, C_ADDR, C_K, C_SIZE, C_NOPS, C_FIRST, C_DEPTH, C_NBYTES, C_BYTES = (8 * i for i in range(10))
C_POS, C_OBJPOS, C_STEPS = 80, 88, 96  # staged bytes; where the current object's copy starts; items taken
C_KEY = 104  # 8 bytes: the runtime types map's key
C_TMP = 128
C_INLINE = 136  # 48 bytes: an inline item's bytes, staged for copy_push
C_ITAB = 192  # 24 bytes: an itab's type word as a chunk
C_STAGE = 256  # chunks staged for the ring: STAGE bytes, then room for one more read; an inline item at INLINE_AT
STAGE = 1 << 15
STAGE_WINDOW = 1 << 16  # copy_op reads objects at (offset & (STAGE_WINDOW - 1)) in the stage
INLINE_AT = STAGE_WINDOW - 64
C_SIZE_TOTAL = C_STAGE + STAGE_WINDOW + 16
SEEN_BITS = 16  # the seen cache: 2**16 slots of (address, tag)
_HASH = 0x9E3779B97F4A7C15 - (1 << 64)  # Fibonacci hashing (a signed i64 constant for LLVM)

# arm map words (u64 index) after the snapshot's own (see snapshot_codegen)
ARM_COPY = 4 * 64  # [ARM_COPY] the pause deadline (CLOCK_MONOTONIC ns; 0: none), for the walk and the copier
ARM_COPY_DROPPED = ARM_COPY + 1  # + worker: items not copied (stack or ring full)
ARM_COPY_CUT = ARM_COPY + 17  # + worker: the deadline or the byte budget ended the copy
ARM_COPY_BYTES = ARM_COPY + 33  # + worker: bytes copied
ARM_WALK_CUT = ARM_COPY + 49  # + worker: the deadline ended the goroutine walk (snapshot_codegen)


@attrs.frozen
class CopyMaps:
    scratch: int
    queue: int
    seen: int
    descs: int
    ops: int
    rtypes: int
    chunks: int
    fixups: int  # ring: the fix-ups of copied values (goprobe encodes them after the pause)
    closures: int = -1  # hash: closure entry PC → its context's copy type (-1: the plan has no closures)


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def table_blobs(plan: CP.CopyPlan) -> tuple[bytes, bytes]:
    """The descs and ops maps' values for *plan* (sizes rounded up to powers of two)."""
    descs, ops = bytearray(), bytearray()
    for t in plan.types:
        descs += struct.pack("<IIII", t.size if t is not None else 0, len(t.ops) if t else 0, len(ops) // OP, 0)
        for op in (t.ops if t else ()):
            ops += struct.pack("<BBBBIIII12x", op.kind, op.guard, op.flags, 0, op.off, op.tid, op.arg, op.guard_off)
    descs += bytes(_pow2(max(len(descs), DESC)) - len(descs))
    ops += bytes(_pow2(max(len(ops), OP)) - len(ops))
    return bytes(descs), bytes(ops)


class CopyEmitter:
    """Mixed into the snapshot program: emits ``copy_step``/``copy_op`` and the pushes. Expects the program's
    ``_function``, ``_enter``, ``read_user`` (remote reads), ``fn`` and ``gen`` (``gen.copy``: CopyMaps,
    ``gen.copy_plan``, ``gen.copy_sizes``: (descs bytes, ops bytes))."""

    def _copy_enter(self, name: str) -> str:
        fn = self._function(name, [("index", "i64"), ("state", "ptr")], "i64", True)
        self._enter(fn, "%state")
        self.stack_copy = False
        return self.fn.map_value(self.gen.copy.scratch)

    def cload(self, cs: str, off: int, bits: int = 64) -> str:
        return self.fn.load(self.fn.gep(cs, off), bits, volatile=True)

    def emit_copier(self) -> None:
        if self.gen.trigger == "uprobe":
            self.emit_copy_drain()
        self.emit_copy_push()
        self.emit_copy_op()
        self.emit_copy_step()

    # -- pushing ----------------------------------------------------------------------------------------------
    def emit_copy_push(self) -> None:
        """``copy_push(addr, type, count, depth, inline)``: a global function, so that the verifier checks its
        code once, not at each of the many places that push. An inline item takes its bytes from the copier's
        scratch (``C_INLINE``, staged by the caller); otherwise *addr* 0 or *count* 0 push nothing."""
        params = [("addr", "i64"), ("tid", "i64"), ("count", "i64"), ("depth", "i64"), ("inline", "i64")]
        fn = self._function("copy_push", params, "i64", False)
        self.fn = f = fn
        cm = self.gen.copy
        cs = f.map_value(cm.scratch)
        nothing, check, full, room = f.label("nothing"), f.label("check"), f.label("cq_full"), f.label("cq_room")
        absent = f.op(f"or i1 {f.icmp('eq', '%addr', 0)}, {f.icmp('eq', '%count', 0)}")
        f.cbr(f.op(f"and i1 {absent}, {f.icmp('eq', '%inline', 0)}"), nothing, check)
        f.block(nothing)
        f.ret("0")
        f.block(check)
        top = f.load(f.gep(cs, C_TOP), volatile=True)
        f.cbr(f.icmp("uge", top, QCAP), full, room)
        f.block(full)
        drop = f.gep(f.map_value(self.gen.maps.arm), 8 * (ARM_COPY_DROPPED + self.gen.worker))
        f.store(drop, f.add(f.load(drop, volatile=True), 1))
        f.ret("0")
        f.block(room)
        item = f.gep(f.map_value(cm.queue), f.mul(f.and_(f.barrier(top), QCAP - 1), ITEM))
        f.store(item, "%addr")
        f.store(f.gep(item, 8), "%tid", 32)
        f.store(f.gep(item, 12), "%count", 32)
        f.store(f.gep(item, 16), "%depth", 32)
        f.store(f.gep(item, 20), "%inline", 32)
        copy_in, pushed = f.label("copy_in"), f.label("pushed")
        f.cbr(f.icmp("ne", "%inline", 0), copy_in, pushed)
        f.block(copy_in)
        f.helper("probe_read_kernel", f"ptr {f.gep(item, ITEM_DATA)}", f"i64 {INLINE_BYTES}",
                 f"ptr {f.gep(cs, C_INLINE)}")
        f.br(pushed)
        f.block(pushed)
        f.store(f.gep(cs, C_TOP), f.add(top, 1))
        f.ret("0")

    def copy_push(self, addr: str, tid: str | int, count: str | int, depth: str | int, inline_src: str | None = None,
                  inline_size: int = 0) -> None:
        """Push an item (see ``emit_copy_push``); *inline_src*: the item's bytes, in the program's memory."""
        f = self.fn
        if inline_src is not None:
            staged = f.gep(f.map_value(self.gen.copy.scratch), C_INLINE)
            f.helper("probe_read_kernel", f"ptr {staged}", f"i64 {min(inline_size, INLINE_BYTES)}",
                     f"ptr {inline_src}")
        where = self.gen.di.location(f.dbg_sp)
        f(f"call i64 @copy_push(i64 {0 if inline_src is not None else addr}, i64 {tid}, i64 {count}, "
          f"i64 {depth}, i64 {1 if inline_src is not None else 0}), !dbg {where}")

    def copy_push_word(self, word: str, tid: str, depth: str) -> None:
        """Push an inline item holding one word (a direct interface's data)."""
        f = self.fn
        staged = f.gep(f.map_value(self.gen.copy.scratch), C_INLINE)
        f.store(staged, word)
        where = self.gen.di.location(f.dbg_sp)
        f(f"call i64 @copy_push(i64 0, i64 {tid}, i64 1, i64 {depth}, i64 1), !dbg {where}")

    def copy_drain(self) -> None:
        """Copy everything pushed so far (called after each goroutine). With the uprobe trigger through a
        global function: the verifier then checks the copier once, not once per way of reaching the call."""
        f = self.fn
        if self.gen.trigger == "uprobe":
            f(f"call i64 @copy_drain(), !dbg {self.gen.di.location(f.dbg_sp)}")
        else:
            f.helper("loop", f"i32 {MAX_STEPS}", "ptr @copy_step", "ptr %state", "i64 0")
            self.stage_flush()

    def emit_copy_drain(self) -> None:
        fn = self._function("copy_drain", [], "i64", False)
        self.fn = f = fn
        state = f.alloca("[2 x i64]")
        f(f"store ptr null, ptr {state}")
        f.helper("loop", f"i32 {MAX_STEPS}", "ptr @copy_step", f"ptr {state}", "i64 0")
        self.stage_flush()
        f.ret("0")

    def copy_begin_run(self) -> None:
        """At the start of a program: an empty stack, and this run's number for the seen keys."""
        f = self.fn
        cs = f.map_value(self.gen.copy.scratch)
        f.store(f.gep(cs, C_TOP), 0)
        f.store(f.gep(cs, C_RUN), f.load(f.map_value(self.gen.maps.arm), volatile=True))

    # -- one item ---------------------------------------------------------------------------------------------
    def emit_copy_step(self) -> None:
        cs = self._copy_enter("copy_step")
        f = self.fn
        cm = self.gen.copy
        arm = f.map_value(self.gen.maps.arm)
        w = self.gen.worker
        stop, go, late, in_time, clock = f.label("stop"), f.label("go"), f.label("late"), f.label("in_time"), f.label("clock")
        top = self.cload(cs, C_TOP)
        f.cbr(f.icmp("eq", top, 0), stop, go)
        f.block(stop)
        f.ret("1")
        f.block(go)
        # The clock every 16 items (it costs as much as a small copy), the byte budget always
        steps = self.cload(cs, C_STEPS)
        f.store(f.gep(cs, C_STEPS), f.add(steps, 1))
        over_bytes = f.icmp("ugt", self.cload(cs, C_BYTES), COPY_BYTES)
        f.cbr(f.op(f"or i1 {over_bytes}, {f.icmp('eq', f.and_(steps, 15), 0)}"), clock, in_time)
        f.block(clock)
        deadline = f.load(f.gep(arm, 8 * ARM_COPY), volatile=True)
        now = f.helper("ktime_get_ns")
        set_, past = f.icmp("ne", deadline, 0), f.icmp("ugt", now, deadline)
        timed_out = f.op(f"and i1 {set_}, {past}")
        f.cbr(f.op(f"or i1 {timed_out}, {over_bytes}"), late, in_time)
        f.block(late)
        f.store(f.gep(arm, 8 * (ARM_COPY_CUT + w)), 1)
        f.ret("1")
        f.block(in_time)
        top = f.sub(top, 1)
        f.store(f.gep(cs, C_TOP), top)
        item = f.gep(f.map_value(cm.queue), f.mul(f.and_(f.barrier(top), QCAP - 1), ITEM))
        addr = f.load(item)
        tid = f.load(f.gep(item, 8), 32)
        count = f.load(f.gep(item, 12), 32)
        depth = f.load(f.gep(item, 16), 32)
        inline = f.load(f.gep(item, 20), 32)
        dmask = _pow2(self.gen.copy_sizes[0]) // DESC - 1
        desc = f.gep(f.map_value(cm.descs), f.mul(f.and_(f.barrier(tid), dmask), DESC))
        size = f.load(desc, 32)
        nops = f.load(f.gep(desc, 4), 32)
        first = f.load(f.gep(desc, 8), 32)
        stage = f.gep(cs, C_STAGE)
        empty, some = f.label("empty"), f.label("sized")
        f.cbr(f.icmp("eq", size, 0), empty, some)
        f.block(empty)
        f.ret("0")
        f.block(some)
        f.store(f.gep(cs, C_SIZE), size)
        f.store(f.gep(cs, C_NOPS), nops)
        f.store(f.gep(cs, C_FIRST), first)
        f.store(f.gep(cs, C_DEPTH), depth)
        is_inline, from_memory, scan = f.label("inline"), f.label("from_memory"), f.label("scan")
        f.cbr(f.icmp("ne", inline, 0), is_inline, from_memory)
        f.block(is_inline)
        f.helper("probe_read_kernel", f"ptr {f.gep(stage, INLINE_AT)}", f"i64 {INLINE_BYTES}",
                 f"ptr {f.gep(item, ITEM_DATA)}")
        f.store(f.gep(cs, C_ADDR), 0)
        f.store(f.gep(cs, C_K), 1)
        f.store(f.gep(cs, C_OBJPOS), INLINE_AT)
        f.store(f.gep(cs, C_NBYTES), INLINE_BYTES)
        f.br(scan)
        f.block(from_memory)
        # Each (address, type, count) once per run, as far as a direct-mapped cache remembers (a forgotten one
        # is copied again: pointer chains are bounded by the pointer depth, so nothing loops)
        count_bits = f.op(f"shl i64 {count}, 24")
        run_bits = f.op(f"shl i64 {self.cload(cs, C_RUN)}, 48")
        tag = f.op(f"or i64 {f.op(f'or i64 {tid}, {count_bits}')}, {run_bits}")
        mixed = f.mul(f.op(f"xor i64 {addr}, {tag}"), _HASH)
        h = f.op(f"lshr i64 {mixed}, {64 - SEEN_BITS}")
        slot = f.gep(f.map_value(cm.seen), f.mul(f.and_(f.barrier(h), (1 << SEEN_BITS) - 1), 16))
        again, fresh = f.label("again"), f.label("fresh")
        f.cbr(f.op(f"and i1 {f.icmp('eq', f.load(slot), addr)}, {f.icmp('eq', f.load(f.gep(slot, 8)), tag)}"),
              again, fresh)
        f.block(again)
        f.ret("0")
        f.block(fresh)
        f.store(slot, addr)
        f.store(f.gep(slot, 8), tag)
        # k objects fit one read (at least one: a larger object is copied in part)
        per = f.op(f"udiv i64 {CHUNK}, {size}")
        per = f.select(f.icmp("eq", per, 0), 1, per)
        k = f.select(f.icmp("ugt", count, per), per, count)
        rest, whole = f.label("rest"), f.label("whole")
        f.cbr(f.icmp("ugt", count, k), rest, whole)
        f.block(rest)
        self.copy_push(f.add(addr, f.mul(k, size)), tid, f.sub(count, k), depth)
        f.br(whole)
        f.block(whole)
        want = f.mul(k, size)
        nbytes = f.select(f.icmp("ugt", want, CHUNK), CHUNK, want)
        f.store(f.gep(cs, C_BYTES), f.add(self.cload(cs, C_BYTES), nbytes))
        f.store(f.gep(cs, C_ADDR), addr)
        f.store(f.gep(cs, C_K), k)
        f.store(f.gep(cs, C_NBYTES), nbytes)
        self.stage_room(f.add(nbytes, CHUNK_HEADER.size))
        pos = self.cload(cs, C_POS)
        rec = f.gep(stage, f.and_(f.barrier(pos), STAGE - 1))
        f.store(rec, addr)
        f.store(f.gep(rec, 8), nbytes, 32)
        f.store(f.gep(rec, 12), 0, 32)
        bad = self.read_user(f.gep(rec, CHUNK_HEADER.size), f.and_(f.barrier(nbytes), 2 * CHUNK - 1), addr)
        failed, copied = f.label("failed"), f.label("copied")
        f.cbr(bad, failed, copied)
        f.block(failed)
        f.store(f.gep(rec, 12), 1, 32)
        f.store(f.gep(cs, C_POS), f.add(pos, CHUNK_HEADER.size))
        f.ret("0")
        f.block(copied)
        f.store(f.gep(cs, C_OBJPOS), f.add(pos, CHUNK_HEADER.size))
        f.store(f.gep(cs, C_POS), f.add(pos, f.add(CHUNK_HEADER.size, f.and_(f.add(nbytes, 7), -8))))
        f.br(scan)
        f.block(scan)
        n = f.mul(self.cload(cs, C_K), self.cload(cs, C_NOPS))
        has, none = f.label("has_ops"), f.label("no_ops")
        f.cbr(f.icmp("eq", n, 0), none, has)
        f.block(has)
        n32 = f.op(f"trunc i64 {f.select(f.icmp('ugt', n, 1 << 22), 1 << 22, n)} to i32")
        f.helper("loop", f"i32 {n32}", "ptr @copy_op", "ptr %state", "i64 0")
        f.br(none)
        f.block(none)
        f.ret("0")

    def stage_room(self, need: str) -> None:
        """Flush the staged chunks to the ring unless *need* more bytes fit after them."""
        f = self.fn
        cs = f.map_value(self.gen.copy.scratch)
        flush, fits = f.label("flush"), f.label("fits")
        f.cbr(f.icmp("ugt", f.add(self.cload(cs, C_POS), need), STAGE), flush, fits)
        f.block(flush)
        self.stage_flush()
        f.br(fits)
        f.block(fits)

    def stage_flush(self) -> None:
        """The staged chunks, as one ring record (chunks: header, then the bytes padded to 8)."""
        f = self.fn
        cs = f.map_value(self.gen.copy.scratch)
        pos = self.cload(cs, C_POS)
        some, done = f.label("staged"), f.label("flushed")
        f.cbr(f.icmp("eq", pos, 0), done, some)
        f.block(some)
        length = f.and_(f.barrier(pos), 2 * STAGE - 1)
        self._chunk_out(f.gep(cs, C_STAGE), length)
        f.store(f.gep(cs, C_POS), 0)
        f.br(done)
        f.block(done)

    def _chunk_out(self, rec: str, length: str) -> None:
        f = self.fn
        ring = f.map_ptr(self.gen.copy.chunks)
        res = f.helper("ringbuf_output", f"ptr {ring}", f"ptr {rec}", f"i64 {length}", "i64 1")  # no wakeup
        lost, kept = f.label("ring_full"), f.label("ring_ok")
        f.cbr(f.icmp("ne", res, 0), lost, kept)
        f.block(lost)
        drop = f.gep(f.map_value(self.gen.maps.arm), 8 * (ARM_COPY_DROPPED + self.gen.worker))
        f.store(drop, f.add(f.load(drop, volatile=True), 1))
        f.br(kept)
        f.block(kept)

    # -- one op of one object ---------------------------------------------------------------------------------
    def emit_copy_op(self) -> None:
        cs = self._copy_enter("copy_op")
        f = self.fn
        cm = self.gen.copy
        nops = self.cload(cs, C_NOPS)
        # Last op first: what it pushes is taken last, so the objects are copied in the order the encoder reads
        # them (what a deadline leaves out is then the end of a value, not its start)
        j = f.sub(f.sub(f.mul(self.cload(cs, C_K), nops), 1), "%index")
        e = f.op(f"udiv i64 {j}, {f.select(f.icmp('eq', nops, 0), 1, nops)}")
        o = f.sub(j, f.mul(e, nops))
        omask = _pow2(self.gen.copy_sizes[1]) // OP - 1
        op = f.gep(f.map_value(cm.ops), f.mul(f.and_(f.barrier(f.add(self.cload(cs, C_FIRST), o)), omask), OP))
        kind = f.load(op, 8)
        guard = f.load(f.gep(op, 1), 8)
        flags = f.load(f.gep(op, 2), 8)
        off = f.load(f.gep(op, 4), 32)
        tid = f.load(f.gep(op, 8), 32)
        arg = f.load(f.gep(op, 12), 32)
        goff = f.load(f.gep(op, 16), 32)
        size = self.cload(cs, C_SIZE)
        elem = f.mul(e, size)
        at = f.add(elem, off)
        nbytes = self.cload(cs, C_NBYTES)
        stage = f.gep(cs, C_STAGE)
        objpos = self.cload(cs, C_OBJPOS)
        out, inside = f.label("op_out"), f.label("op_in")
        # (a 16-byte header's second word lies inside the object too; the buffer has room past the copy)
        f.cbr(f.icmp("ugt", f.add(at, 8), nbytes), out, inside)
        f.block(out)
        f.ret("0")
        f.block(inside)

        def word(offset: str, bits: int = 64) -> str:
            return f.load(f.gep(stage, f.and_(f.barrier(f.add(objpos, offset)), STAGE_WINDOW - 1)), bits)

        # A map slot's op applies only to a full slot
        gb = word(f.add(elem, goff), 8)
        swiss_empty = f.op(f"and i1 {f.icmp('eq', guard, CP.GUARD_SWISS)}, {f.icmp('ne', f.and_(gb, 0x80), 0)}")
        classic_empty = f.op(f"and i1 {f.icmp('eq', guard, CP.GUARD_CLASSIC)}, {f.icmp('ult', gb, 5)}")
        skip, live = f.label("slot_empty"), f.label("slot_live")
        f.cbr(f.op(f"or i1 {swiss_empty}, {classic_empty}"), skip, live)
        f.block(skip)
        f.ret("0")
        f.block(live)
        w0 = word(at)
        w1 = word(f.add(at, 8))
        depth = self.cload(cs, C_DEPTH)
        done = f.label("op_done")
        kinds = [CP.PTR, CP.STR, CP.SLICE, CP.IFACE, CP.SWISS_DIR, CP.COUNTED, CP.ARRAY]
        if cm.closures >= 0:
            kinds.append(CP.CLOSURE)
        labels = {k: f.label(f"op{k}") for k in kinds}
        cases = " ".join(f"i64 {k}, label %{lab}" for k, lab in labels.items())
        f(f"switch i64 {kind}, label %{done} [ {cases} ]")
        f.terminated = True

        f.block(labels[CP.PTR])
        counts = f.icmp("eq", f.and_(flags, CP.NO_DEPTH), 0)
        deep = f.op(f"and i1 {counts}, {f.icmp('uge', depth, self.gen.limits.pointer_depth)}")
        follow = f.label("follow")
        f.cbr(deep, done, follow)
        f.block(follow)
        self.copy_push(w0, tid, 1, f.add(depth, f.op(f"zext i1 {counts} to i64")))
        f.br(done)

        for kind_ in (CP.STR, CP.SLICE):
            f.block(labels[kind_])
            sane = f.label("sane")
            f.cbr(f.icmp("uge", w1, 1 << 40), done, sane)
            f.block(sane)
            self.copy_push(w0, tid, f.select(f.icmp("ugt", w1, arg), arg, w1), depth)
            f.br(done)

        f.block(labels[CP.IFACE])
        typ = f.alloca("i64")
        f.store(typ, w0)
        have, itab, look = f.label("iface_set"), f.label("itab"), f.label("iface_type")
        f.cbr(f.icmp("eq", w0, 0), done, have)
        f.block(have)
        f.cbr(f.icmp("ne", arg, 0), itab, look)
        f.block(itab)
        # The itab's type word goes out as a chunk of its own (a record of its own: the object being scanned
        # sits in the stage), once per itab as far as the seen cache remembers.
        rec = f.gep(cs, C_ITAB)
        where = f.add(w0, f.sub(arg, 1))
        tmp = f.gep(rec, CHUNK_HEADER.size)
        bad = self.read_user(tmp, 8, where)
        read, out_itab = f.label("itab_read"), f.label("itab_out")
        f.cbr(bad, done, read)
        f.block(read)
        f.store(typ, f.load(tmp))
        tag = (1 << 24) - 1
        mixed = f.mul(f.op(f"xor i64 {where}, {tag}"), _HASH)
        h = f.op(f"lshr i64 {mixed}, {64 - SEEN_BITS}")
        slot = f.gep(f.map_value(cm.seen), f.mul(f.and_(f.barrier(h), (1 << SEEN_BITS) - 1), 16))
        f.cbr(f.op(f"and i1 {f.icmp('eq', f.load(slot), where)}, {f.icmp('eq', f.load(f.gep(slot, 8)), tag)}"),
              look, out_itab)
        f.block(out_itab)
        f.store(slot, where)
        f.store(f.gep(slot, 8), tag)
        f.store(rec, where)
        f.store(f.gep(rec, 8), 8, 32)
        f.store(f.gep(rec, 12), 0, 32)
        self._chunk_out(rec, str(CHUNK_HEADER.size + 8))
        f.br(look)
        f.block(look)
        key = f.gep(cs, C_KEY)
        f.store(key, f.sub(f.load(typ), self.types_base))  # (loaded from the snapshot's scratch by _enter)
        v = f.helper("map_lookup_elem", f"ptr {f.map_ptr(cm.rtypes)}", f"ptr {key}")
        known = f.label("known_type")
        f.cbr(f.icmp("eq", v, 0), done, known)
        f.block(known)
        val = f.load(f.to_ptr(v))
        ctid = f.and_(val, 0xFFFFFFFF)
        # Stored in the data word itself or behind it: the type descriptor says (as the encoder reads it)
        lay = self.gen.plan.interfaces
        flag_at = f.add(f.load(typ), lay.tflag_off if lay.direct_in_tflag else lay.kind_off)
        flag = f.gep(cs, C_TMP)
        f.store(flag, 0)
        self.read_user(flag, 1, flag_at)
        direct, indirect = f.label("direct"), f.label("indirect")
        f.cbr(f.icmp("ne", f.and_(f.load(flag, 8), lay.direct_mask), 0), direct, indirect)
        f.block(direct)
        self.copy_push_word(w1, ctid, depth)
        f.br(done)
        f.block(indirect)
        self.copy_push(w1, ctid, 1, depth)
        f.br(done)

        f.block(labels[CP.SWISS_DIR])
        dl = word(f.add(elem, arg))
        small, big = f.label("small_map"), f.label("tables")
        f.cbr(f.icmp("eq", dl, 0), small, big)
        f.block(small)
        self.copy_push(w0, tid, 1, depth)
        f.br(done)
        f.block(big)
        self.copy_push(w0, f.add(tid, 1), f.select(f.icmp("ugt", dl, CP.MAX_COUNT), CP.MAX_COUNT, dl), depth)
        f.br(done)

        f.block(labels[CP.COUNTED])
        mode = f.op(f"lshr i64 {arg}, 16")
        field = f.add(elem, f.and_(arg, 0xFFFF))
        c64 = word(field)
        c8 = f.and_(word(field, 8), 63)
        plus_one = f.add(c64, 1)
        pow2 = f.op(f"shl i64 1, {c8}")
        half = f.select(f.icmp("eq", c8, 0), 0, f.op(f"shl i64 1, {f.sub(c8, f.select(f.icmp('eq', c8, 0), 0, 1))}"))
        c = f.select(f.icmp("eq", mode, CP.COUNT_PLUS_ONE), plus_one,
                     f.select(f.icmp("eq", mode, CP.COUNT_POW2), pow2,
                              f.select(f.icmp("eq", mode, CP.COUNT_POW2_HALF), half, c64)))
        self.copy_push(w0, tid, f.select(f.icmp("ugt", c, CP.MAX_COUNT), CP.MAX_COUNT, c), depth)
        f.br(done)

        f.block(labels[CP.ARRAY])
        base = self.cload(cs, C_ADDR)
        self.copy_push(f.select(f.icmp("eq", base, 0), 0, f.add(base, at)), tid, arg, depth)
        f.br(done)

        if cm.closures >= 0:
            # A func value's code pointer: a closure's captured variables lie after it, in the same object
            f.block(labels[CP.CLOSURE])
            ckey = f.gep(cs, C_KEY)
            f.store(ckey, w0)
            cv = f.helper("map_lookup_elem", f"ptr {f.map_ptr(cm.closures)}", f"ptr {ckey}")
            closure = f.label("closure")
            f.cbr(f.icmp("eq", cv, 0), done, closure)
            f.block(closure)
            obj = self.cload(cs, C_ADDR)
            ctx_tid = f.and_(f.load(f.to_ptr(cv)), 0xFFFFFFFF)
            self.copy_push(f.select(f.icmp("eq", obj, 0), 0, f.add(obj, elem)), ctx_tid, 1, depth)
            f.br(done)

        f.block(done)
        f.ret("0")
