"""A small writer of LLVM IR text for BPF functions: SSA names, labels, blocks, helper calls, map references.

The code generator (``event_codegen``) speaks in these terms; this module knows LLVM's syntax. Kept textual
(not ``llvmlite.ir``) because loop metadata and inline-asm barriers are one line each here.
"""

from __future__ import annotations

from goprobe.backends.ebpf.llvm_target import HELPERS, PSEUDO_DECLARATION

#: ``llvm.loop`` metadata that keeps LLVM from unrolling a bounded loop (the verifier walks each iteration
#: anyway; unrolled copies only make the program longer).
NO_UNROLL_MD = '!{!"llvm.loop.unroll.disable"}'


class Function:
    """One function's IR lines; values are ``i64`` unless said otherwise."""

    def __init__(self, module: Module, name: str, section: str, params: str = "ptr %ctx",
                 ret: str = "i64", linkage: str = "", dbg: str = "", noinline: bool = False) -> None:
        self.module = module
        self.name = name
        self.ret_type = ret
        # noinline: subprograms stay separate so each stays within BPF's 16-bit jump range
        self.head = (f"define {linkage}{ret} @{name}({params}){' noinline' if noinline else ''} "
                     f"section \"{section}\"" + (f" !dbg {dbg}" if dbg else ""))
        self.lines: list[str] = []
        self.allocas: list[str] = []
        self._n = 0
        self.terminated = False
        self._current = "entry"

    # -- names and blocks ---------------------------------------------------------------------------------
    def tmp(self) -> str:
        self._n += 1
        return f"%t{self._n}"

    def label(self, hint: str = "b") -> str:
        self._n += 1
        return f"{hint}{self._n}"

    def __call__(self, text: str) -> None:
        self.lines.append("  " + text)

    def block(self, label: str) -> None:
        if not self.terminated:
            self(f"br label %{label}")
        self.lines.append(f"{label}:")
        self.terminated = False
        self._current = label

    def current_label(self) -> str:
        """The block being written (a phi names its predecessors by these)."""
        return self._current

    def replace(self, placeholder: str, value: str) -> None:
        """Fill a forward reference written as *placeholder* (phi operands from a loop's latch)."""
        self.lines = [line.replace(placeholder, value) for line in self.lines]

    def br(self, label: str) -> None:
        self(f"br label %{label}")
        self.terminated = True

    def cbr(self, cond: str, yes: str, no: str) -> None:
        self(f"br i1 {cond}, label %{yes}, label %{no}")
        self.terminated = True

    def loop_back(self, label: str) -> None:
        """The back edge of a bounded loop, marked not to be unrolled."""
        self(f"br label %{label}, !llvm.loop {self.module.loop_md()}")
        self.terminated = True

    def ret(self, value: str = "0") -> None:
        self(f"ret {self.ret_type} {value}")
        self.terminated = True

    # -- values -------------------------------------------------------------------------------------------
    def op(self, text: str) -> str:
        t = self.tmp()
        self(f"{t} = {text}")
        return t

    def add(self, a: str, b: str | int) -> str:
        return self.op(f"add i64 {a}, {b}")

    def sub(self, a: str, b: str | int) -> str:
        return self.op(f"sub i64 {a}, {b}")

    def mul(self, a: str, b: str | int) -> str:
        return self.op(f"mul i64 {a}, {b}")

    def and_(self, a: str, b: str | int) -> str:
        return self.op(f"and i64 {a}, {b}")

    def icmp(self, pred: str, a: str, b: str | int) -> str:
        return self.op(f"icmp {pred} i64 {a}, {b}")

    def select(self, cond: str, a: str | int, b: str | int) -> str:
        return self.op(f"select i1 {cond}, i64 {a}, i64 {b}")

    def gep(self, base: str, offset: str | int) -> str:
        return self.op(f"getelementptr i8, ptr {base}, i64 {offset}")

    def load(self, ptr: str, bits: int = 64, volatile: bool = False) -> str:
        """Load an unsigned integer of *bits* and widen it to i64."""
        # "align 8" even where the address is not: LLVM's BPF backend splits less aligned accesses into bytes,
        # while the kernel (x86-64, efficient unaligned access) accepts unaligned map-value accesses.
        v = self.op(f"load {'volatile ' if volatile else ''}i{bits}, ptr {ptr}, align 8")
        return v if bits == 64 else self.op(f"zext i{bits} {v} to i64")

    def store(self, ptr: str, value: str | int, bits: int = 64) -> None:
        if bits != 64 and not isinstance(value, int):
            value = self.op(f"trunc i64 {value} to i{bits}")
        self(f"store i{bits} {value}, ptr {ptr}, align 8")

    def barrier(self, value: str) -> str:
        """The same value, opaque to LLVM: keeps range checks the verifier needs from being folded away."""
        return self.op(f'call i64 asm sideeffect "", "=r,0"(i64 {value})')

    def alloca(self, ty: str = "i64") -> str:
        t = self.tmp()
        self.allocas.append(f"  {t} = alloca {ty}, align 8")
        return t

    def shared_alloca(self, key: str, ty: str = "[2 x i64]") -> str:
        """One stack slot per *key* and function, reused by every use: map keys and values passed to helpers
        live only for the call, and separate slots would add up past the 512-byte BPF stack."""
        slots = self.__dict__.setdefault("_shared", {})
        if key not in slots:
            slots[key] = self.alloca(ty)
        return slots[key]

    def helper(self, name: str, *args: str) -> str:
        """Call kernel helper *name* with typed arguments (``"ptr %x"``, ``"i64 8"``); returns its i64 result."""
        return self.op(f"call i64 inttoptr (i64 {HELPERS[name]} to ptr)({', '.join(args)})")

    def map_ptr(self, fd: int) -> str:
        v = self.op(f"call i64 @llvm.bpf.pseudo(i64 1, i64 {fd})")
        return self.op(f"inttoptr i64 {v} to ptr")

    def map_value(self, fd: int) -> str:
        """The address of an array map's value 0 (a direct load: no lookup, never null)."""
        v = self.op(f"call i64 @llvm.bpf.pseudo(i64 2, i64 {fd})")
        return self.op(f"inttoptr i64 {v} to ptr")

    def to_ptr(self, value: str) -> str:
        return self.op(f"inttoptr i64 {value} to ptr")

    def text(self) -> str:
        return "\n".join([self.head + " {", "entry:", *self.allocas, *self.lines, "}"])


class Module:
    """Functions plus the shared declarations and loop metadata."""

    def __init__(self, debug_info=None) -> None:
        self.functions: list[Function] = []
        self._loop_ids: list[int] = []
        self._md = 1  # !0 is the no-unroll property
        self.debug_info = debug_info  # llvm_target.DebugInfo when a program needs BTF (bpf_loop callbacks)

    def function(self, name: str, section: str, **kw) -> Function:
        fn = Function(self, name, section, **kw)
        self.functions.append(fn)
        return fn

    def loop_md(self) -> str:
        self._md += 1
        self._loop_ids.append(self._md)
        return f"!{self._md}"

    def text(self) -> str:
        out = [PSEUDO_DECLARATION, ""]
        out += [f.text() + "\n" for f in self.functions]
        out.append(f"!0 = {NO_UNROLL_MD}")
        out += [f"!{i} = distinct !{{!{i}, !0}}" for i in self._loop_ids]
        if self.debug_info is not None:
            out.append(self.debug_info.metadata())
        else:
            out.append('!llvm.module.flags = !{!1}')
            out.append('!1 = !{i32 1, !"wchar_size", i32 4}')
        return "\n".join(out) + "\n"
