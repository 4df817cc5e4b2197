"""Code generation helpers over llvmlite: the BPF target, IR text → ELF object, debug metadata for BTF, and
the ids of the kernel helpers the backend calls.

Conventions the rest of the backend relies on:

- a helper is called as ``call i64 inttoptr (i64 ID to ptr)(...)`` with ``ID = HELPERS[name]``;
- a map is referenced as ``call i64 @llvm.bpf.pseudo(i64 1, i64 FD)`` (map fd) or ``(i64 2, i64 FD)`` (the
  address of an array map's value 0): the maps exist before code generation, so the object has no map
  relocations (declare ``i64 @llvm.bpf.pseudo(i64, i64)``; ``PSEUDO_DECLARATION`` is that line);
- every function of one program lives in that program's section (``section "uprobe/..."``) — LLVM resolves
  calls to ``internal`` functions itself; the loader resolves the rest (see ``object_file``);
- LLVM emits ``.BTF``/``.BTF.ext`` only when the module has debug metadata (``DebugInfo``); the kernel needs
  that BTF (func_info) for programs with ``bpf_loop`` callbacks.
"""

from __future__ import annotations

import faulthandler
import os
import tempfile
import threading

import attrs
import llvmlite.binding as llvm

from goprobe.backends.ebpf.errors import EbpfError

TRIPLE = "bpfel"
DATA_LAYOUT = "e-m:e-p:64:64-i64:64-i128:128-n32:64-S128"
PSEUDO_DECLARATION = "declare i64 @llvm.bpf.pseudo(i64, i64)"

#: Helper ids, checked against ``__BPF_FUNC_MAPPER`` in the kernel's ``include/uapi/linux/bpf.h``.
HELPERS: dict[str, int] = {
    "map_lookup_elem": 1,
    "map_update_elem": 2,
    "map_delete_elem": 3,
    "ktime_get_ns": 5,
    "get_smp_processor_id": 8,
    "get_current_pid_tgid": 14,
    "send_signal_thread": 117,
    "probe_read_user": 112,
    "probe_read_kernel": 113,
    "seq_write": 127,
    "ringbuf_output": 130,
    "ringbuf_reserve": 131,
    "ringbuf_submit": 132,
    "ringbuf_discard": 133,
    "ringbuf_query": 134,
    "copy_from_user": 148,
    "get_current_task_btf": 158,
    "get_func_ip": 173,
    "task_pt_regs": 175,
    "loop": 181,
    "copy_from_user_task": 191,
}


class CodegenError(EbpfError):
    """LLVM rejected the generated IR or could not emit BPF code for it."""


_lock = threading.Lock()
_machine = None


def target_machine():
    """The BPF target machine (``bpfel``, cpu v3: 32-bit sub-registers, jmp32, atomics), created once."""
    global _machine
    with _lock:
        if _machine is None:
            # Only the BPF target is needed, but llvmlite registers targets all at once.
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            target = llvm.Target.from_triple(TRIPLE)
            _machine = target.create_target_machine(cpu="v3", reloc="static", codemodel="small", opt=2)
        return _machine


def compile_to_object(ir_text: str, *, name: str = "probe", isolate: bool = True) -> bytes:
    """Parse and verify LLVM IR text, optimise it at O2 and return the BPF ELF object.

    LLVM's BPF backend reports some errors (a dynamic stack allocation, an unsupported call...) by printing
    them and EXITING the process; llvmlite offers no diagnostic handler to catch them. With *isolate* the
    code generation runs in a forked child, so such an error becomes a :class:`CodegenError` carrying
    LLVM's message instead of killing the caller (the fork costs a few milliseconds).
    """
    tm = target_machine()
    if not isolate:
        return _compile(ir_text, name, tm)
    return _compile_in_child(ir_text, name, tm)


def _compile(ir_text: str, name: str, tm) -> bytes:
    try:
        module = llvm.parse_assembly(ir_text)
        module.verify()
    except RuntimeError as e:
        raise CodegenError(f"generated LLVM IR for {name!r} is invalid: {e}") from None
    module.triple = TRIPLE
    module.data_layout = DATA_LAYOUT
    module.name = name
    _optimise(module, tm)
    try:
        return tm.emit_object(module)
    except RuntimeError as e:
        raise CodegenError(f"LLVM could not emit BPF code for {name!r}: {e}") from None


def _compile_in_child(ir_text: str, name: str, tm) -> bytes:
    # The object comes back through a pipe; LLVM's diagnostics go to a file (a pipe could fill up and block
    # the child while the parent waits for the object). The child is forked from a process whose other
    # threads may hold locks at that instant (several programs compile side by side): it takes none — it
    # gets the target machine made before the fork rather than asking target_machine() under _lock, which
    # once left a child waiting forever.
    out_r, out_w = os.pipe()
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 1
            try:
                os.close(out_r)
                os.dup2(err.fileno(), 2)
                # LLVM aborts on some errors: its message goes to the diagnostics file; a fault handler the
                # parent enabled (pytest does) would also dump Python's stacks on its own copy of stderr.
                faulthandler.disable()
                try:
                    payload = b"O" + _compile(ir_text, name, tm)
                except CodegenError as e:
                    payload = b"E" + str(e).encode()
                with os.fdopen(out_w, "wb") as f:
                    f.write(payload)
                code = 0
            finally:
                os._exit(code)
        os.close(out_w)
        try:
            with os.fdopen(out_r, "rb") as f:
                payload = f.read()
        finally:
            _, status = os.waitpid(pid, 0)
        err.seek(0)
        diagnostics = err.read().decode(errors="replace").strip()
    status = os.waitstatus_to_exitcode(status)
    if status == 0 and payload[:1] == b"O":
        return payload[1:]
    if payload[:1] == b"E":
        raise CodegenError(payload[1:].decode(errors="replace"))
    raise CodegenError(f"LLVM failed to generate BPF code for {name!r} (exit status {status}): "
                       f"{diagnostics[-4000:] or 'no message'}")


def _optimise(module, tm) -> None:
    # llvmlite ≥ 0.44 has the new pass manager; the target machine's opt level only drives codegen.
    pto = llvm.create_pipeline_tuning_options(speed_level=2)
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    pm.run(module, pb)


def helper_call(name: str) -> str:
    """The callee operand for helper *name*: ``inttoptr (i64 ID to ptr)``."""
    try:
        return f"inttoptr (i64 {HELPERS[name]} to ptr)"
    except KeyError:
        raise CodegenError(f"unknown BPF helper {name!r}; known: {sorted(HELPERS)}") from None


# -- debug metadata -------------------------------------------------------------------------------------------

#: Parameter/return kinds the debug-info helper understands: integer widths and an untyped pointer.
_INT_TYPES = {"i8": 8, "i16": 16, "i32": 32, "i64": 64}


@attrs.define
class DebugInfo:
    """Builds the debug metadata LLVM needs to emit ``.BTF``/``.BTF.ext``: one DICompileUnit and DIFile, and
    a DISubprogram (with named parameters) per function.

    Usage: ``dbg = di.subprogram("cb", [("index", "i64"), ("ctx", "ptr")], "i64", local=True)`` and write
    ``define internal i64 @cb(i64 %index, ptr %ctx) section "..." !dbg {dbg} { ... }``; any call to another
    function with a DISubprogram needs a location: ``call ... , !dbg {di.location(dbg)}``. Append
    ``di.metadata()`` to the module text. Metadata ids start at *first_id* to stay clear of the caller's.
    """

    filename: str = "goprobe_probe.c"
    directory: str = "/"
    first_id: int = 100000
    _next: int = attrs.field(init=False, default=0)
    _lines: list[str] = attrs.field(init=False, factory=list)
    _types: dict[str, int] = attrs.field(init=False, factory=dict)
    _cu: int = attrs.field(init=False, default=0)
    _file: int = attrs.field(init=False, default=0)
    _line: int = attrs.field(init=False, default=0)
    _flags: tuple[int, int] = attrs.field(init=False, default=(0, 0))

    def __attrs_post_init__(self) -> None:
        self._next = self.first_id
        self._cu = self._new("")
        self._file = self._new(f'!DIFile(filename: "{self.filename}", directory: "{self.directory}")')
        self._lines[0] = (f"!{self._cu} = distinct !DICompileUnit(language: DW_LANG_C99, file: !{self._file}, "
                          'producer: "goprobe", isOptimized: true, runtimeVersion: 0, emissionKind: FullDebug)')
        self._flags = (self._new('!{i32 2, !"Debug Info Version", i32 3}'),
                       self._new('!{i32 7, !"Dwarf Version", i32 5}'))

    def _new(self, body: str) -> int:
        n = self._next
        self._next += 1
        self._lines.append(f"!{n} = {body}" if body else "")
        return n

    def _type(self, kind: str) -> int:
        if kind not in self._types:
            if kind == "ptr":
                body = "!DIDerivedType(tag: DW_TAG_pointer_type, baseType: null, size: 64)"
            elif kind in _INT_TYPES:
                bits = _INT_TYPES[kind]
                cname = {8: "char", 16: "short", 32: "int", 64: "long"}[bits]
                body = f'!DIBasicType(name: "{cname}", size: {bits}, encoding: DW_ATE_signed)'
            else:
                raise CodegenError(f"debug info: unsupported parameter type {kind!r}; use ptr or one of "
                                   f"{sorted(_INT_TYPES)}")
            self._types[kind] = self._new(body)
        return self._types[kind]

    def subprogram(self, name: str, params: list[tuple[str, str]], ret: str = "i64", *,
                   local: bool = False) -> str:
        """Describe function *name*; return its ``!N`` reference for the ``define ... !dbg !N`` line.

        *local* marks an ``internal`` function (BTF linkage static): bpf_loop callbacks and other subprograms
        must be local, or the verifier checks them on their own as global functions.
        """
        self._line += 1
        ret_t = "null" if ret == "void" else f"!{self._type(ret)}"
        types = self._new("!{" + ", ".join([ret_t] + [f"!{self._type(k)}" for _, k in params]) + "}")
        sub_type = self._new(f"!DISubroutineType(types: !{types})")
        sp = self._next  # the DISubprogram's id: its variables refer to it
        self._new("")
        var_ids = [self._new(f'!DILocalVariable(name: "{p}", arg: {i + 1}, scope: !{sp}, file: !{self._file}, '
                             f"line: {self._line}, type: !{self._type(k)})")
                   for i, (p, k) in enumerate(params)]
        retained = self._new("!{" + ", ".join(f"!{v}" for v in var_ids) + "}")
        flags = "DISPFlagDefinition | DISPFlagOptimized" + (" | DISPFlagLocalToUnit" if local else "")
        self._lines[sp - self.first_id] = (
            f'!{sp} = distinct !DISubprogram(name: "{name}", scope: !{self._file}, file: !{self._file}, '
            f"line: {self._line}, type: !{sub_type}, scopeLine: {self._line}, flags: DIFlagPrototyped, "
            f"spFlags: {flags}, unit: !{self._cu}, retainedNodes: !{retained})")
        return f"!{sp}"

    def location(self, subprogram: str, line: int | None = None) -> str:
        """A ``!N`` DILocation inside *subprogram* (for calls between described functions)."""
        return f"!{self._new(f'!DILocation(line: {line or 1}, column: 1, scope: {subprogram})')}"

    def metadata(self) -> str:
        """The module-level metadata text to append to the IR."""
        out = [f"!llvm.dbg.cu = !{{!{self._cu}}}",
               "!llvm.module.flags = !{" + ", ".join(f"!{f}" for f in self._flags) + "}"]
        return "\n".join(out + [ln for ln in self._lines if ln]) + "\n"
