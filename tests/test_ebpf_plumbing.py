"""The eBPF backend's kernel plumbing against the real kernel: programs written as LLVM IR text, compiled with
llvmlite, loaded with bpf(2), attached as uprobes to the `calls` fixture, read through ring buffers and task
iterators. Skipped (with the reason) only when this machine cannot load BPF programs at all.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import VERSIONS, build_fixture
from ebpf_support import Fixture, no_leaked_kernel_fds, requires_bpf  # noqa: F401 (autouse fixture)
from goprobe.backends.ebpf import errors
from goprobe.backends.ebpf import syscall as sc
from goprobe.backends.ebpf.btf import KIND_FUNC, KIND_STRUCT, vmlinux
from goprobe.backends.ebpf.iterator import link_task_iterator, load_task_iterator, run, task_iter_btf_id
from goprobe.backends.ebpf.llvm_target import HELPERS, DebugInfo, compile_to_object, helper_call
from goprobe.backends.ebpf.object_file import BpfObject
from goprobe.backends.ebpf.program import load_program
from goprobe.backends.ebpf.ringbuf import RingBuffer
from goprobe.backends.ebpf.uprobe import (
    attach_uprobes,
    choose_attach_type,
    uprobe_multi_supported,
    vaddr_to_file_offset,
)
from goprobe.dwarf.binary import GoBinary
from goprobe.errors import GoprobeError, ProcessNotFoundError
from goprobe.testing.fixture_process import running

pytestmark = requires_bpf

# amd64 `struct pt_regs` (arch/x86/include/uapi/asm/ptrace.h): r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx
# rdx rsi rdi orig_rax rip ...
PT_REGS = {"rbx": 40, "r9": 64, "rax": 80, "rcx": 88, "rsi": 104, "rdi": 112, "rip": 128}


# -- the fixture ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calls_binary() -> Path:
    return build_fixture("calls", VERSIONS[-1], "opt")


@pytest.fixture(scope="module")
def handle_site(calls_binary) -> tuple[int, int]:
    """(virtual address, file offset) just after main.handle's stack check, where the arguments are still in
    their ABI registers: req=RAX, tags=RBX/RCX/RDI, n=RSI, name=R8/R9."""
    with GoBinary(calls_binary) as b:
        code = b.code.for_function(b.function("main.handle"))
        site = code.prologue_end
    return site, vaddr_to_file_offset(calls_binary, site)


@pytest.fixture
def calls(calls_binary, tmp_path):
    log = tmp_path / "calls.jsonl"
    with running(calls_binary, env={"GOPROBE_CALL_LOG": str(log)}) as fx:
        yield Fixture(fx, log)


def _poll_until(ring: RingBuffer, count: int, timeout: float = 10.0) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out += ring.poll(max(0.0, deadline - time.monotonic()))
    return out


# -- BPF programs as LLVM IR text -----------------------------------------------------------------------------

def _pseudo_map(var: str, fd: int) -> str:
    return f"  %{var}.i = call i64 @llvm.bpf.pseudo(i64 1, i64 {fd})\n  %{var} = inttoptr i64 %{var}.i to ptr\n"


def _pseudo_value(var: str, fd: int) -> str:
    return f"  %{var}.i = call i64 @llvm.bpf.pseudo(i64 2, i64 {fd})\n  %{var} = inttoptr i64 %{var}.i to ptr\n"


HEADER = "declare i64 @llvm.bpf.pseudo(i64, i64)\n"

# Record written by the uprobe on main.handle (64 bytes).
HANDLE_RECORD = struct.Struct("<QQQQqQQq")  # pid_tgid n tags_len name_len req_id ip seq read_ret


def handle_probe_ir(ring_fd: int, stats_fd: int) -> str:
    """On each hit: reserve 64 bytes, fill in pid/tgid, arguments from pt_regs, req.ID read from user memory,
    the probe address and a sequence number; count reserve failures in stats[1]."""
    r = PT_REGS
    return HEADER + f"""
define i32 @on_handle(ptr %ctx) section "uprobe/handle" {{
entry:
{_pseudo_map("rb", ring_fd)}{_pseudo_value("stats", stats_fd)}
  %rec = call ptr {helper_call("ringbuf_reserve")}(ptr %rb, i64 64, i64 0)
  %full = icmp eq ptr %rec, null
  br i1 %full, label %drop, label %fill
drop:
  %drops = getelementptr i8, ptr %stats, i64 8
  %old = atomicrmw add ptr %drops, i64 1 seq_cst
  ret i32 0
fill:
  %pt = call i64 {helper_call("get_current_pid_tgid")}()
  store i64 %pt, ptr %rec
  %rsi.p = getelementptr i8, ptr %ctx, i64 {r["rsi"]}
  %rsi = load i64, ptr %rsi.p
  %f1 = getelementptr i8, ptr %rec, i64 8
  store i64 %rsi, ptr %f1
  %rcx.p = getelementptr i8, ptr %ctx, i64 {r["rcx"]}
  %rcx = load i64, ptr %rcx.p
  %f2 = getelementptr i8, ptr %rec, i64 16
  store i64 %rcx, ptr %f2
  %r9.p = getelementptr i8, ptr %ctx, i64 {r["r9"]}
  %r9 = load i64, ptr %r9.p
  %f3 = getelementptr i8, ptr %rec, i64 24
  store i64 %r9, ptr %f3
  %rax.p = getelementptr i8, ptr %ctx, i64 {r["rax"]}
  %rax = load i64, ptr %rax.p
  %req = inttoptr i64 %rax to ptr
  %f4 = getelementptr i8, ptr %rec, i64 32
  %rd = call i64 {helper_call("probe_read_user")}(ptr %f4, i32 8, ptr %req)
  %rip.p = getelementptr i8, ptr %ctx, i64 {r["rip"]}
  %rip = load i64, ptr %rip.p
  %f5 = getelementptr i8, ptr %rec, i64 40
  store i64 %rip, ptr %f5
  %seq = atomicrmw add ptr %stats, i64 1 seq_cst
  %f6 = getelementptr i8, ptr %rec, i64 48
  store i64 %seq, ptr %f6
  %f7 = getelementptr i8, ptr %rec, i64 56
  store i64 %rd, ptr %f7
  call void {helper_call("ringbuf_submit")}(ptr %rec, i64 0)
  ret i32 0
}}
"""


def _load_handle_probe(ring, stats, method: str):
    obj = compile_to_object(handle_probe_ir(ring.fd, stats.fd), name="handle_probe")
    attach_type = sc.BPF_TRACE_UPROBE_MULTI if method == "uprobe_multi" else 0
    return load_program(obj, "uprobe/handle", name="handle_probe", expected_attach_type=attach_type)


# -- uprobes + ring buffer: records equal what the fixture did --------------------------------------------------

@pytest.mark.parametrize("method", ["perf", "uprobe_multi"])
def test_uprobe_records_match_fixture_calls(method, calls, calls_binary, handle_site):
    if method == "uprobe_multi" and not uprobe_multi_supported():
        pytest.skip("this kernel has no uprobe_multi links")
    vaddr, offset = handle_site
    original = calls.peek(vaddr)
    with sc.create_ringbuf(1 << 16, name="rb") as ring, sc.create_array(16, 1, name="stats") as stats, \
            RingBuffer(ring) as reader, _load_handle_probe(ring, stats, method) as prog:
        assert prog.stats.processed_insns > 0 and prog.insn_count > 10
        with attach_uprobes(prog, calls_binary, [offset], [calls.pid], method=method) as att:
            assert att.method == method
            assert calls.peek(vaddr) == b"\xcc"  # the uprobe's breakpoint is in the process
            assert calls.command("call 25") == "done 25"
            records = _poll_until(reader, 25)
            time.sleep(0.05)
            records += reader.consume()
        log = calls.log()
        assert len(log) == 25 and len(records) == 25
        for i, (rec, line) in enumerate(zip(records, log)):
            pid_tgid, n, tags_len, name_len, req_id, ip, seq, read_ret = HANDLE_RECORD.unpack(rec)
            assert pid_tgid >> 32 == calls.pid
            assert (pid_tgid & 0xFFFFFFFF) in {int(t) for t in os.listdir(f"/proc/{calls.pid}/task")}
            assert (n, tags_len, name_len, req_id) == (line["n"], len(line["tags"]), len(line["name"]), line["id"])
            assert (ip, seq, read_ret) == (vaddr, i, 0)
        assert struct.unpack("<QQ", stats.lookup(bytes(4))) == (25, 0)  # 25 hits, no drops

        # Detached: the original instruction is back, the fixture runs on, and no record comes any more.
        assert att.closed and calls.peek(vaddr) == original
        assert calls.command("call 10") == "done 10"
        assert reader.poll(0.3) == []
        assert len(calls.log()) == 35
        assert struct.unpack("<QQ", stats.lookup(bytes(4)))[0] == 25


def test_attachment_is_detached_when_garbage_collected(calls, calls_binary, handle_site):
    vaddr, offset = handle_site
    original = calls.peek(vaddr)
    with sc.create_ringbuf(1 << 12, name="rb") as ring, sc.create_array(16, 1, name="stats") as stats, \
            _load_handle_probe(ring, stats, "perf") as prog:
        att = attach_uprobes(prog, calls_binary, [offset], [calls.pid])
        assert calls.peek(vaddr) == b"\xcc"
        del att  # no close(): the finalizers must remove the probe
        import gc

        gc.collect()
        assert calls.peek(vaddr) == original
        assert calls.command("call 3") == "done 3"
        assert struct.unpack("<QQ", stats.lookup(bytes(4))) == (0, 0)


# -- bpf_loop callback + bpf-to-bpf call: needs BTF func_info ---------------------------------------------------

def loop_probe_ir(ring_fd: int, with_debug_info: bool = True) -> str:
    """sum = Σ_{i<count} (i + n) with count = (n & 15) + 1, through bpf_loop; then scale(sum) = sum*3 in a
    global (non-internal) function, which leaves LLVM's call relocation for the loader. Output via
    bpf_ringbuf_output of a stack record {n, sum, scaled}."""
    di = DebugInfo() if with_debug_info else None

    def dbg(name, params, ret, local):
        return f" !dbg {di.subprogram(name, params, ret, local=local)}" if di else ""

    cb = dbg("add_index", [("index", "i64"), ("ctx", "ptr")], "i64", True)
    sc_ = dbg("scale", [("x", "i64")], "i64", False)
    main = dbg("on_handle_loop", [("ctx", "ptr")], "i32", False)
    call_loc = f", !dbg {di.location(main.split()[-1])}" if di else ""
    text = HEADER + f"""
define internal i64 @add_index(i64 %index, ptr %ctx) section "uprobe/loop"{cb} {{
  %base.p = getelementptr i8, ptr %ctx, i64 8
  %base = load i64, ptr %base.p
  %sum = load i64, ptr %ctx
  %a = add i64 %sum, %index
  %b = add i64 %a, %base
  store i64 %b, ptr %ctx
  ret i64 0
}}

define i64 @scale(i64 %x) noinline section "uprobe/loop"{sc_} {{
  %y = mul i64 %x, 3
  ret i64 %y
}}

define i32 @on_handle_loop(ptr %ctx) section "uprobe/loop"{main} {{
{_pseudo_map("rb", ring_fd)}
  %state = alloca [2 x i64], align 8
  %rsi.p = getelementptr i8, ptr %ctx, i64 {PT_REGS["rsi"]}
  %n = load volatile i64, ptr %rsi.p
  store i64 0, ptr %state
  %base.p = getelementptr i8, ptr %state, i64 8
  store i64 %n, ptr %base.p
  %low = and i64 %n, 15
  %count = add i64 %low, 1
  %count32 = trunc i64 %count to i32
  %r = call i64 {helper_call("loop")}(i32 %count32, ptr @add_index, ptr %state, i64 0)
  %sum = load i64, ptr %state
  %scaled = call i64 @scale(i64 %sum){call_loc}
  %out = alloca [3 x i64], align 8
  store i64 %n, ptr %out
  %o1 = getelementptr i8, ptr %out, i64 8
  store i64 %sum, ptr %o1
  %o2 = getelementptr i8, ptr %out, i64 16
  store i64 %scaled, ptr %o2
  %w = call i64 {helper_call("ringbuf_output")}(ptr %rb, ptr %out, i64 24, i64 0)
  ret i32 0
}}
"""
    return text + (di.metadata() if di else "")


def test_bpf_loop_callback_loads_with_btf_and_runs(calls, calls_binary, handle_site):
    _, offset = handle_site
    with sc.create_ringbuf(1 << 14, name="rb") as ring, RingBuffer(ring) as reader:
        obj = BpfObject(compile_to_object(loop_probe_ir(ring.fd), name="loop"), name="loop")
        assert obj.btf is not None and obj.btf_ext is not None
        # .BTF.ext offsets are bytes from the section start; the image has instruction indexes, entry first.
        image = obj.program("uprobe/loop", "on_handle_loop")
        assert image.has_callbacks and image.functions[0] == ("on_handle_loop", 0)
        starts = dict(image.functions)
        fi = [struct.unpack_from("<II", image.func_info, k) for k in range(0, len(image.func_info), 8)]
        assert [off for off, _ in fi] == sorted(starts.values())
        assert {obj.btf.type(t).name for _, t in fi} == {"on_handle_loop", "add_index", "scale"}
        assert all(obj.btf.type(t).kind == KIND_FUNC for _, t in fi)

        with load_program(obj, "uprobe/loop", name="loop_probe") as prog:
            assert prog.has_btf
            info = prog.info()
            assert info["nr_func_info"] == 3 and info["btf_id"] > 0
            with attach_uprobes(prog, calls_binary, [offset], [calls.pid]):
                assert calls.command("call 7") == "done 7"
                records = _poll_until(reader, 7)
        assert len(records) == 7
        for rec, line in zip(records, calls.log()):
            n, total, scaled = struct.unpack("<QQQ", rec)
            count = (n & 15) + 1
            assert n == line["n"]
            assert total == sum(i + n for i in range(count)) and scaled == 3 * total


def test_bpf_loop_callback_without_btf_is_a_clear_error():
    with sc.create_ringbuf(1 << 12, name="rb") as ring:
        obj = compile_to_object(loop_probe_ir(ring.fd, with_debug_info=False), name="loop_nobtf")
        assert BpfObject(obj).btf is None
        with pytest.raises(errors.ObjectFileError, match="callback.*no BTF func_info"):
            load_program(obj, "uprobe/loop", name="loop_nobtf")


# -- verifier rejections ---------------------------------------------------------------------------------------

def unchecked_lookup_ir(map_fd: int) -> str:
    return HEADER + f"""
define i32 @bad_lookup(ptr %ctx) section "uprobe/bad" {{
{_pseudo_map("m", map_fd)}
  %key = alloca i32, align 4
  store i32 0, ptr %key
  %v = call ptr {helper_call("map_lookup_elem")}(ptr %m, ptr %key)
  %x = load i64, ptr %v
  %t = trunc i64 %x to i32
  ret i32 %t
}}
"""


def ctx_out_of_bounds_ir(_fd: int) -> str:
    return HEADER + """
define i32 @bad_ctx(ptr %ctx) section "uprobe/bad" {
  %p = getelementptr i8, ptr %ctx, i64 4096
  %x = load volatile i64, ptr %p
  %t = trunc i64 %x to i32
  ret i32 %t
}
"""


@pytest.mark.parametrize("make_ir, cause, hint", [
    (unchecked_lookup_ir, "map_value_or_null", "without a NULL check"),
    (ctx_out_of_bounds_ir, "invalid bpf_context access", "outside the context structure"),
], ids=["unchecked-map-value", "ctx-out-of-bounds"])
def test_verifier_rejection_is_a_verifier_error_with_the_log_tail(make_ir, cause, hint):
    # A hash map: recent kernels prove array lookups with a constant in-range key non-NULL.
    with sc.create_hash(4, 8, 4, name="m") as m:
        obj = compile_to_object(make_ir(m.fd), name="bad")
        with pytest.raises(errors.VerifierError) as exc:
            load_program(obj, "uprobe/bad", name="my_bad_probe")
    e = exc.value
    text = str(e)
    assert "'my_bad_probe'" in text and cause in text
    assert cause in e.log and e.program == "my_bad_probe" and e.errno != 0
    assert hint in text.rsplit("\nhint: ", 1)[1]
    tail = text.split("log lines:\n" if "log lines:\n" in text else "verifier log:\n", 1)[1]
    assert len(tail.splitlines()) <= errors.VerifierError.TAIL_LINES + 1  # the tail, then the hint
    assert isinstance(e, errors.BpfError) and isinstance(e, GoprobeError)


def test_verifier_error_shows_only_the_last_lines_of_a_long_log():
    log = "\n".join(f"{i}: (b7) r0 = {i}" for i in range(200)) + "\nR1 invalid mem access 'scalar'\n"
    e = errors.VerifierError(13, "long_one", log)
    text = str(e)
    assert "last 30 of 201 log lines" in text and "R1 invalid mem access 'scalar'" in text
    assert "0: (b7) r0 = 0" not in text and "199: (b7) r0 = 199" in text
    assert e.log == log


# -- sleepable task iterator -----------------------------------------------------------------------------------

ITER_RECORD = struct.Struct("<QqII")  # value, copy_from_user_task's result, tid, tgid


def marker_iter_ir(marker_addr: int, ring_fd: int, pid_off: int, tgid_off: int) -> str:
    """For each thread: read 8 bytes at *marker_addr* of the task's process with bpf_copy_from_user_task
    and emit {value, ret, tid, tgid} both with bpf_seq_write and into a ring buffer."""
    return HEADER + f"""
define i32 @read_marker(ptr %ctx) section "iter/task" {{
entry:
  %rec = alloca [3 x i64], align 8   ; allocas belong in the entry block: BPF has no dynamic stack
  %task.p = getelementptr i8, ptr %ctx, i64 8
  %task = load ptr, ptr %task.p
  %done = icmp eq ptr %task, null
  br i1 %done, label %out, label %body
body:
  %user = inttoptr i64 {marker_addr} to ptr
  %ret = call i64 {helper_call("copy_from_user_task")}(ptr %rec, i32 8, ptr %user, ptr %task, i64 0)
  %r1 = getelementptr i8, ptr %rec, i64 8
  store i64 %ret, ptr %r1
  %pid.p = getelementptr i8, ptr %task, i64 {pid_off}
  %pid = load i32, ptr %pid.p
  %tgid.p = getelementptr i8, ptr %task, i64 {tgid_off}
  %tgid = load i32, ptr %tgid.p
  %r2 = getelementptr i8, ptr %rec, i64 16
  store i32 %pid, ptr %r2
  %r3 = getelementptr i8, ptr %rec, i64 20
  store i32 %tgid, ptr %r3
  %meta = load ptr, ptr %ctx
  %seq = load ptr, ptr %meta
  %w = call i64 {helper_call("seq_write")}(ptr %seq, ptr %rec, i32 24)
{_pseudo_map("rb", ring_fd)}
  %o = call i64 {helper_call("ringbuf_output")}(ptr %rb, ptr %rec, i64 24, i64 0)
  br label %out
out:
  ret i32 0
}}
"""


def test_sleepable_task_iterator_reads_a_stopped_process(calls, calls_binary):
    with GoBinary(calls_binary) as b:
        marker = b.global_variable("main.Marker")
    assert calls.fx.truth["marker"] == 0x1234567890
    value = random.randrange(1, 1 << 62)
    assert calls.command(f"marker {value}") == f"marker {value}"  # a live value, not the file's
    kernel = vmlinux()
    assert task_iter_btf_id() == kernel.find("bpf_iter_task", KIND_FUNC)
    offsets = kernel.member_offset("task_struct", "pid"), kernel.member_offset("task_struct", "tgid")
    with sc.create_ringbuf(1 << 14, name="iter_rb") as ring, RingBuffer(ring) as reader:
        obj = compile_to_object(marker_iter_ir(marker.address, ring.fd, *offsets), name="iter")
        with load_task_iterator(obj, name="read_marker") as prog, \
                link_task_iterator(prog, pid=calls.pid) as link:
            assert prog.sleepable
            os.kill(calls.pid, signal.SIGSTOP)
            try:
                _wait_stopped(calls.pid)
                threads = {int(t) for t in os.listdir(f"/proc/{calls.pid}/task")}
                out = run(link)
                again = run(link)  # runs on demand, as often as asked
            finally:
                os.kill(calls.pid, signal.SIGCONT)
        recs = [ITER_RECORD.unpack_from(out, k) for k in range(0, len(out), ITER_RECORD.size)]
        assert len(out) % ITER_RECORD.size == 0 and len(recs) == len(threads) > 1
        assert {r[2] for r in recs} == threads and {r[3] for r in recs} == {calls.pid}
        assert all(r[0] == value and r[1] == 0 for r in recs)
        assert again == out
        # The same records also went through the ring buffer, once per run.
        seq_records = [out[k:k + ITER_RECORD.size] for k in range(0, len(out), ITER_RECORD.size)]
        assert sorted(reader.consume()) == sorted(seq_records * 2)
    # The process runs normally again.
    assert calls.command("call 2") == "done 2"


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of *pid* is in the stopped state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
                  for t in os.listdir(f"/proc/{pid}/task")}
        if states == {"T"}:
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop")


# -- ring buffer reader: wrap-around and drops ---------------------------------------------------------------

SMALL_RECORD = struct.Struct("<QQQQQI")  # seq, n, name_len, pid_tgid, ip, magic: 44 bytes → 56 in the ring


def small_record_ir(ring_fd: int, stats_fd: int) -> str:
    """44-byte records (not a multiple of 8: the reader must honour the padding); drops counted in stats[1]."""
    return HEADER + f"""
define i32 @small(ptr %ctx) section "uprobe/small" {{
entry:
{_pseudo_map("rb", ring_fd)}{_pseudo_value("stats", stats_fd)}
  %rec = call ptr {helper_call("ringbuf_reserve")}(ptr %rb, i64 44, i64 0)
  %full = icmp eq ptr %rec, null
  br i1 %full, label %drop, label %fill
drop:
  %drops = getelementptr i8, ptr %stats, i64 8
  %old = atomicrmw add ptr %drops, i64 1 seq_cst
  ret i32 0
fill:
  %seq = atomicrmw add ptr %stats, i64 1 seq_cst
  store i64 %seq, ptr %rec
  %rsi.p = getelementptr i8, ptr %ctx, i64 {PT_REGS["rsi"]}
  %rsi = load i64, ptr %rsi.p
  %f1 = getelementptr i8, ptr %rec, i64 8
  store i64 %rsi, ptr %f1
  %r9.p = getelementptr i8, ptr %ctx, i64 {PT_REGS["r9"]}
  %r9 = load i64, ptr %r9.p
  %f2 = getelementptr i8, ptr %rec, i64 16
  store i64 %r9, ptr %f2
  %pt = call i64 {helper_call("get_current_pid_tgid")}()
  %f3 = getelementptr i8, ptr %rec, i64 24
  store i64 %pt, ptr %f3
  %ip = call i64 {helper_call("get_func_ip")}(ptr %ctx)
  %f4 = getelementptr i8, ptr %rec, i64 32
  store i64 %ip, ptr %f4
  %f5 = getelementptr i8, ptr %rec, i64 40
  store i32 3735928559, ptr %f5
  call void {helper_call("ringbuf_submit")}(ptr %rec, i64 0)
  ret i32 0
}}
"""


def test_ringbuf_reader_wraps_around_and_drops_are_counted(calls, calls_binary, handle_site):
    vaddr, offset = handle_site
    size = 4096
    stride = 56  # 8-byte header + 44 bytes, rounded up to 8
    with sc.create_ringbuf(size, name="small_rb") as ring, sc.create_array(16, 1, name="stats") as stats, \
            RingBuffer(ring) as reader:
        obj = compile_to_object(small_record_ir(ring.fd, stats.fd), name="small")
        with load_program(obj, "uprobe/small", name="small_probe") as prog, \
                attach_uprobes(prog, calls_binary, [offset], [calls.pid]):
            got: list[tuple] = []
            wrapped = 0
            # Three rounds of 30 records (1680 bytes each): the second and third cross the end of the 4 KiB
            # data area, record 73 (at byte 4088) straddling it.
            for round_ in range(3):
                assert calls.command("call 30") == "done 30"
                recs = _poll_until(reader, 30)
                assert len(recs) == 30 and all(len(r) == 44 for r in recs)
                for k, r in enumerate(recs):
                    seq = len(got)
                    start = (seq * stride) % size
                    wrapped += start + stride > size
                    got.append(SMALL_RECORD.unpack(r))
                    assert got[-1] == (seq, 3 * k, len(f"name{k}"), (calls.pid << 32) | (got[-1][3] & 0xFFFFFFFF),
                                       vaddr, 0xDEADBEEF)
            assert wrapped >= 1 and reader.records == 90
            assert struct.unpack("<QQ", stats.lookup(bytes(4))) == (90, 0)

            # Nobody consumes while 100 more hits come: the ring holds 73 records, the rest are dropped.
            assert calls.command("call 100") == "done 100"
            time.sleep(0.05)
            kept = reader.consume()
            hits, drops = struct.unpack("<QQ", stats.lookup(bytes(4)))
            assert drops > 0 and hits + drops == 190 and len(kept) == hits - 90
            assert [SMALL_RECORD.unpack(r)[0] for r in kept] == list(range(90, hits))
            assert reader.pending() == 0

            # Space is back: records flow again.
            assert calls.command("call 5") == "done 5"
            assert [SMALL_RECORD.unpack(r)[0] for r in _poll_until(reader, 5)] == list(range(hits, hits + 5))


def discard_odd_ir(ring_fd: int) -> str:
    """Reserve 8 bytes for n on each hit; submit when n is even, discard when it is odd."""
    return HEADER + f"""
define i32 @maybe(ptr %ctx) section "uprobe/maybe" {{
entry:
{_pseudo_map("rb", ring_fd)}
  %rec = call ptr {helper_call("ringbuf_reserve")}(ptr %rb, i64 8, i64 0)
  %full = icmp eq ptr %rec, null
  br i1 %full, label %out, label %fill
fill:
  %rsi.p = getelementptr i8, ptr %ctx, i64 {PT_REGS["rsi"]}
  %n = load i64, ptr %rsi.p
  store i64 %n, ptr %rec
  %odd = and i64 %n, 1
  %keep = icmp eq i64 %odd, 0
  br i1 %keep, label %submit, label %discard
submit:
  call void {helper_call("ringbuf_submit")}(ptr %rec, i64 0)
  br label %out
discard:
  call void {helper_call("ringbuf_discard")}(ptr %rec, i64 0)
  br label %out
out:
  ret i32 0
}}
"""


def test_ringbuf_reader_skips_discarded_records(calls, calls_binary, handle_site):
    _, offset = handle_site
    with sc.create_ringbuf(1 << 12, name="rb") as ring, RingBuffer(ring) as reader:
        obj = compile_to_object(discard_odd_ir(ring.fd), name="maybe")
        with load_program(obj, "uprobe/maybe") as prog, \
                attach_uprobes(prog, calls_binary, [offset], [calls.pid]):
            assert calls.command("call 10") == "done 10"
            time.sleep(0.05)
            recs = reader.consume()
        assert [struct.unpack("<Q", r)[0] for r in recs] == [0, 6, 12, 18, 24]  # n = 3i, even ones
        assert reader.discarded == 5 and reader.records == 5


# -- ring buffer reader throughput -----------------------------------------------------------------------------

def flood_iter_ir(ring_fd: int, count: int) -> str:
    """A task iterator whose one run writes *count* 64-byte records through bpf_loop + bpf_ringbuf_output."""
    di = DebugInfo()
    cb = di.subprogram("emit", [("index", "i64"), ("ctx", "ptr")], "i64", local=True)
    main = di.subprogram("flood", [("ctx", "ptr")], "i32")
    return HEADER + f"""
define internal i64 @emit(i64 %index, ptr %ctx) section "iter/task" !dbg {cb} {{
{_pseudo_map("rb", ring_fd)}
  %rec = alloca [8 x i64], align 8
  store i64 %index, ptr %rec
  %o = call i64 {helper_call("ringbuf_output")}(ptr %rb, ptr %rec, i64 64, i64 1)  ; BPF_RB_NO_WAKEUP
  ret i64 0
}}

define i32 @flood(ptr %ctx) section "iter/task" !dbg {main} {{
  %task.p = getelementptr i8, ptr %ctx, i64 8
  %task = load ptr, ptr %task.p
  %done = icmp eq ptr %task, null
  br i1 %done, label %out, label %body
body:
  %r = call i64 {helper_call("loop")}(i32 {count}, ptr @emit, ptr null, i64 0)
  br label %out
out:
  ret i32 0
}}
""" + di.metadata()


def test_ringbuf_reader_throughput():
    count = 50_000
    with sc.create_ringbuf(1 << 23, name="flood_rb") as ring, RingBuffer(ring) as reader:
        obj = compile_to_object(flood_iter_ir(ring.fd, count), name="flood")
        with load_task_iterator(obj, name="flood", sleepable=False) as prog, \
                link_task_iterator(prog, tid=os.getpid()) as link:
            rates = []
            for _ in range(3):
                assert run(link) == b""
                assert reader.pending() == count * 72
                seen = 0

                def take(rec: bytes) -> None:
                    nonlocal seen
                    seen += 1

                t0 = time.perf_counter()
                got = reader.consume_into(take)
                dt = time.perf_counter() - t0
                assert got == seen == count
                rates.append(count / dt)
            assert reader.consume() == []
            t0 = time.perf_counter()
            run(link)
            recs = reader.consume()
            list_rate = count / (time.perf_counter() - t0)
            assert [struct.unpack_from("<Q", r)[0] for r in recs] == list(range(count))
    print(f"\nring buffer reader: {max(rates) / 1e6:.2f} M records/s (64-byte records, callback); "
          f"{list_rate / 1e6:.2f} M records/s including the producer run, as a list")
    assert max(rates) > 100_000


# -- bad inputs -------------------------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not Path(f"/proc/{proc.pid}").exists()
    return proc.pid


def test_bad_inputs_raise_typed_errors(calls, calls_binary, handle_site, tmp_path):
    _, offset = handle_site
    with sc.create_ringbuf(1 << 12, name="rb") as ring, sc.create_array(16, 1, name="stats") as stats:
        obj = compile_to_object(handle_probe_ir(ring.fd, stats.fd), name="handle_probe")

        with pytest.raises(errors.ObjectFileError, match=r"no code section 'uprobe/nope'.*uprobe/handle"):
            load_program(obj, "uprobe/nope", name="x")
        with pytest.raises(errors.ObjectFileError, match="has no function 'nope'"):
            load_program(obj, "uprobe/handle", entry="nope")

        with load_program(obj, "uprobe/handle", name="handle_probe") as prog:
            dead = _dead_pid()
            with pytest.raises(errors.AttachProcessNotFoundError, match=f"process {dead}: it does not exist") as e:
                attach_uprobes(prog, calls_binary, [offset], [dead])
            assert isinstance(e.value, ProcessNotFoundError)
            with pytest.raises(errors.AttachError, match="No such file"):
                attach_uprobes(prog, tmp_path / "no-such-binary", [offset], [calls.pid])
            with pytest.raises(errors.AttachError, match="outside"):
                attach_uprobes(prog, calls_binary, [1 << 40], [calls.pid])
            with pytest.raises(errors.AttachError, match=f"process {os.getpid()} does not run"):
                attach_uprobes(prog, calls_binary, [offset], [os.getpid()])
            with pytest.raises(errors.AttachError, match="expected_attach_type"):
                attach_uprobes(prog, calls_binary, [offset], [calls.pid], method="uprobe_multi")
            with pytest.raises(errors.AttachError, match="not in any loaded part"):
                vaddr_to_file_offset(calls_binary, 0x10)
            # Nothing was left attached by the failures.
            assert calls.command("call 2") == "done 2"
            assert struct.unpack("<QQ", stats.lookup(bytes(4))) == (0, 0)

        with pytest.raises(ValueError, match="key must be 4 bytes"):
            stats.lookup(b"\0")
        stats.freeze()
        with pytest.raises(errors.BpfError, match="frozen"):
            stats.update(bytes(4), bytes(16))

    with sc.create_ringbuf(1 << 12, name="iter_rb") as ring:
        obj = compile_to_object(marker_iter_ir(0x1000, ring.fd, 0, 0), name="iter")
        with load_task_iterator(obj, name="it") as prog:
            with pytest.raises(errors.AttachProcessNotFoundError):
                link_task_iterator(prog, pid=_dead_pid())


def test_vaddr_to_file_offset_matches_the_program_headers(calls_binary, handle_site):
    from elftools.elf.elffile import ELFFile

    vaddr, offset = handle_site
    with open(calls_binary, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        expected = vaddr - text["sh_addr"] + text["sh_offset"]
        f.seek(offset)
        assert f.read(1) == b"U"  # PUSHQ BP right after the stack check
    assert offset == expected


def test_helper_ids_and_btf_lookups():
    # Ids from the kernel's __BPF_FUNC_MAPPER (stable ABI); a few spot checks guard against typos.
    assert HELPERS["map_lookup_elem"] == 1 and HELPERS["get_current_pid_tgid"] == 14
    assert HELPERS["probe_read_user"] == 112 and HELPERS["ringbuf_reserve"] == 131
    assert HELPERS["loop"] == 181 and HELPERS["copy_from_user_task"] == 191
    kernel = vmlinux()
    assert kernel is vmlinux()  # cached per process
    fid = kernel.find("bpf_iter_task", KIND_FUNC)
    assert kernel.type(fid).name == "bpf_iter_task" and kernel.type(fid).kind == KIND_FUNC
    assert kernel.find_all("task_struct", KIND_STRUCT)
    with pytest.raises(errors.BtfError, match="no FUNC named 'bpf_iter_no_such_target'"):
        kernel.find("bpf_iter_no_such_target", KIND_FUNC)
    # Many probe sites prefer one uprobe_multi link over one perf event each.
    assert choose_attach_type(1) == 0
    assert choose_attach_type(100) == (sc.BPF_TRACE_UPROBE_MULTI if uprobe_multi_supported() else 0)


def test_unresolvable_relocations_are_clear_errors():
    data_ref = HEADER + """
@counter = global i64 0
define i32 @uses_global(ptr %ctx) section "uprobe/g" {
  %x = load volatile i64, ptr @counter
  %t = trunc i64 %x to i32
  ret i32 %t
}
"""
    obj = BpfObject(compile_to_object(data_ref, name="global"), name="global")
    with pytest.raises(errors.ObjectFileError, match=r"refers to 'counter'.*llvm.bpf.pseudo"):
        obj.program("uprobe/g")

    other_section = HEADER + """
define i64 @elsewhere(i64 %x) noinline section "uprobe/other" {
  %y = add i64 %x, 1
  ret i64 %y
}
define i32 @caller(ptr %ctx) section "uprobe/main" {
  %p = load volatile i64, ptr %ctx
  %r = call i64 @elsewhere(i64 %p)
  %t = trunc i64 %r to i32
  ret i32 %t
}
"""
    obj = BpfObject(compile_to_object(other_section, name="split"), name="split")
    with pytest.raises(errors.ObjectFileError, match=r"refers to 'elsewhere' in section 'uprobe/other'"):
        obj.program("uprobe/main")
    assert obj.program("uprobe/other").functions == (("elsewhere", 0),)


def test_llvm_backend_errors_do_not_kill_the_process():
    # A non-constant alloca makes LLVM's BPF backend print an error and exit(); compiled in a child, it is
    # an exception here.
    from goprobe.backends.ebpf.llvm_target import CodegenError

    text = """
define i32 @f(ptr %ctx) section "x" {
entry:
  %p = load ptr, ptr %ctx
  %c = icmp eq ptr %p, null
  br i1 %c, label %a, label %b
a:
  %r = alloca [3 x i64], align 8
  %x = call i64 inttoptr (i64 14 to ptr)(ptr %r)
  ret i32 0
b:
  ret i32 1
}
"""
    with pytest.raises(CodegenError, match="unsupported dynamic stack allocation"):
        compile_to_object(text, name="dynamic_alloca")
    with pytest.raises(CodegenError, match="invalid"):
        compile_to_object("this is not IR", name="garbage")


def test_missing_privilege_names_the_capability():
    code = (
        "import os, sys\n"
        "from goprobe.backends.ebpf import syscall as sc, errors\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    sc.create_array(8, 1, name='x').close()\n"
        "except errors.BpfPermissionError as e:\n"
        "    print(e); sys.exit(3)\n"
        "sys.exit(0)\n")
    proc = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if proc.returncode == 0:
        pytest.skip("unprivileged bpf() is allowed on this machine (kernel.unprivileged_bpf_disabled=0)")
    assert proc.returncode == 3, proc.stderr
    assert "CAP_BPF" in proc.stdout and "run goprobe as root" in proc.stdout and "EPERM" in proc.stdout


def test_verifier_log_statistics_on_success_trace_on_rejection(monkeypatch):
    with sc.create_ringbuf(1 << 12, name="rb") as ring, sc.create_array(16, 1, name="stats") as stats, \
            sc.create_hash(4, 8, 4, name="m") as m:
        good = compile_to_object(handle_probe_ir(ring.fd, stats.fd), name="good")
        bad = compile_to_object(unchecked_lookup_ir(m.fd), name="bad")

        # A program that loads is verified once, with statistics only (no per-instruction trace); a buffer
        # too small even for those grows.
        monkeypatch.setattr(sc, "_STATS_LOG", 16)
        with load_program(good, "uprobe/handle", name="grown") as prog:
            assert "processed" in prog.log and len(prog.log) > 16
            assert prog.stats.processed_insns > 10
            assert "R0=" not in prog.log and "call bpf_" not in prog.log

        # A rejected one is verified again with the trace: the error carries the cause.
        with pytest.raises(errors.VerifierError, match="map_value_or_null") as exc:
            load_program(bad, "uprobe/bad", name="traced_bad")
        assert not exc.value.truncated and "processed" in exc.value.log and "call bpf_" in exc.value.log
        full = exc.value.log

        # A trace longer than its buffer keeps its tail, where the cause is.
        monkeypatch.setattr(sc, "_TRACE_LOG", len(full) * 3 // 4)
        with pytest.raises(errors.VerifierError, match="map_value_or_null") as exc:
            load_program(bad, "uprobe/bad", name="capped_bad")
        assert exc.value.truncated and "truncated" in str(exc.value)
        assert len(exc.value.log) < len(full) and not exc.value.log.startswith(full[:40])  # the head is gone


def count_ir(counter_fd: int) -> str:
    return HEADER + f"""
define i32 @count(ptr %ctx) section "uprobe/count" {{
{_pseudo_value("counter", counter_fd)}
  %old = atomicrmw add ptr %counter, i64 1 seq_cst
  ret i32 0
}}
"""


def test_every_call_of_a_spinning_process_hits_the_probe(calls, calls_binary, handle_site):
    """`spin` calls main.handle in a tight loop: the probe must count exactly the calls the fixture reports,
    and after detaching the fixture spins at full speed again."""
    _, offset = handle_site
    method = "uprobe_multi" if uprobe_multi_supported() else "perf"
    with sc.create_array(8, 1, name="counter") as counter:
        obj = compile_to_object(count_ir(counter.fd), name="count")
        attach_type = sc.BPF_TRACE_UPROBE_MULTI if method == "uprobe_multi" else 0
        with load_program(obj, "uprobe/count", expected_attach_type=attach_type) as prog:
            with attach_uprobes(prog, calls_binary, [offset], [calls.pid]):
                reply = calls.command("spin 0.3")
            probed = int(reply.split()[1])
            assert probed > 0 and struct.unpack("<Q", counter.lookup(bytes(4)))[0] == probed
        free = int(calls.command("spin 0.3").split()[1])
        assert struct.unpack("<Q", counter.lookup(bytes(4)))[0] == probed  # nothing counted after detaching
    print(f"\nspin 0.3 s: {probed} calls with a uprobe ({method}), {free} without")
    assert free > 10 * probed  # a trap per call costs microseconds; without it calls take nanoseconds


def site_ir(ring_fd: int) -> str:
    """One 16-byte record {tgid, probe address} per hit."""
    return HEADER + f"""
define i32 @site(ptr %ctx) section "uprobe/site" {{
{_pseudo_map("rb", ring_fd)}
  %rec = alloca [2 x i64], align 8
  %pt = call i64 {helper_call("get_current_pid_tgid")}()
  %tgid = lshr i64 %pt, 32
  store i64 %tgid, ptr %rec
  %ip = call i64 {helper_call("get_func_ip")}(ptr %ctx)
  %r1 = getelementptr i8, ptr %rec, i64 8
  store i64 %ip, ptr %r1
  %o = call i64 {helper_call("ringbuf_output")}(ptr %rb, ptr %rec, i64 16, i64 0)
  ret i32 0
}}
"""


@pytest.mark.parametrize("method", ["perf", "uprobe_multi"])
def test_several_offsets_and_processes_and_only_those(method, calls_binary, handle_site, tmp_path):
    if method == "uprobe_multi" and not uprobe_multi_supported():
        pytest.skip("this kernel has no uprobe_multi links")
    with GoBinary(calls_binary) as b:
        depth = b.code.for_function(b.function("main.depth")).prologue_end
    sites = {handle_site[0]: "handle", depth: "depth"}
    offsets = [vaddr_to_file_offset(calls_binary, v) for v in sites]
    attach_type = sc.BPF_TRACE_UPROBE_MULTI if method == "uprobe_multi" else 0
    with running(calls_binary) as a, running(calls_binary) as b_, running(calls_binary) as other, \
            sc.create_ringbuf(1 << 14, name="rb") as ring, RingBuffer(ring) as reader:
        fa, fb, fo = (Fixture(f, tmp_path / "none") for f in (a, b_, other))
        obj = compile_to_object(site_ir(ring.fd), name="site")
        with load_program(obj, "uprobe/site", expected_attach_type=attach_type) as prog, \
                attach_uprobes(prog, calls_binary, offsets, [fa.pid, fb.pid], method=method) as att:
            assert len(att.fds) == (2 if method == "uprobe_multi" else 4)
            assert fa.command("call 3") == "done 3"
            assert fb.command("call 2") == "done 2"
            assert fo.command("call 4") == "done 4"  # not probed
            records = _poll_until(reader, 3 + 6 + 2 + 3)
            time.sleep(0.05)
            records += reader.consume()
    hits: dict[tuple[int, str], int] = {}
    for r in records:
        tgid, ip = struct.unpack("<QQ", r)
        hits[tgid, sites[ip]] = hits.get((tgid, sites[ip]), 0) + 1
    # depth(i % 5) runs i+1 times per Serve call: 1+2+3 in A, 1+2 in B.
    assert hits == {(fa.pid, "handle"): 3, (fa.pid, "depth"): 6, (fb.pid, "handle"): 2, (fb.pid, "depth"): 3}
