"""``GoBinary``: everything goprobe's compiler needs to know about one Go executable, read lazily.

Opening costs a few milliseconds; each question (a function, a type, a line) reads only the units and DIEs it
needs. Answers are kept in a persisted index cache keyed by the binary's identity, so a second open of the
same binary skips the DWARF entirely for what was asked before.
"""

from __future__ import annotations

import bisect
import difflib
import os
import struct
import re
from collections.abc import Iterable
from functools import cached_property

import attrs

from goprobe.dwarf import constants as C
from goprobe.dwarf.debug_files import find_debug_file, open_debug_file
from goprobe.dwarf.dies import DebugSections, Die, Unit, UnitTable
from goprobe.dwarf.elf import ElfImage
from goprobe.dwarf.expressions import ADDRESS_MEMORY, decode_location
from goprobe.dwarf.frames import FrameRule, FrameTable
from goprobe.dwarf.functions import Function, FunctionReader, InlinedCall
from goprobe.dwarf.index_cache import IndexCache
from goprobe.dwarf.lines import LineProgram
from goprobe.dwarf.types import GoType, TypeTable, index_type_dies
from goprobe.errors import (
    BinaryError,
    DwarfFormatError,
    NoDebugInfoError,
    NotGoBinaryError,
    UnknownFunctionError,
    UnknownSourceFileError,
    UnknownTypeError,
    UnknownVariableError,
    UnsupportedGoVersionError,
)

MIN_GO = (1, 21)

_TOP_LEVEL_TAGS = (C.TAG_subprogram, C.TAG_variable, C.TAG_constant)


@attrs.frozen(slots=True)
class GlobalVariable:
    name: str
    address: int
    type_offset: int
    die_offset: int


@attrs.frozen(slots=True)
class SourceLocation:
    """What is at a PC: the function, and the source position including the chain of inlined calls."""

    pc: int
    function: str
    file: str
    line: int
    inlined: tuple[tuple[str, str, int], ...]  # (inlined function, its file, line) innermost last


def parse_go_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return (0, 0, 0)
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


class GoBinary:
    """A Go ELF binary opened for compiling probes.

    Raises :class:`~goprobe.errors.NotELFError`, :class:`~goprobe.errors.NotGoBinaryError`,
    :class:`~goprobe.errors.NoDebugInfoError`, :class:`~goprobe.errors.UnsupportedArchitectureError` or
    :class:`~goprobe.errors.UnsupportedGoVersionError` when the file cannot be used.
    """

    def __init__(self, path: str | os.PathLike[str], *, use_cache: bool = True,
                 debug_file: str | os.PathLike[str] | None = None) -> None:
        """*debug_file*: the build's separate debug info (``objcopy --only-keep-debug``); by default one is
        looked for, as distributions ship them, when the binary itself has no DWARF: by its GNU build id
        under ``/usr/lib/debug/.build-id/`` and by its ``.gnu_debuglink`` (next to it, in ``.debug/``, and
        under ``/usr/lib/debug``)."""
        self.elf = ElfImage(path)
        self.path = self.elf.path
        self.arch = self.elf.arch
        try:
            self.go_version = self.elf.go_version
        except NotGoBinaryError:
            self.elf.close()
            raise
        ver = parse_go_version(self.go_version)
        if ver[:2] < MIN_GO:
            self.elf.close()
            raise UnsupportedGoVersionError(
                f"{self.path}: built by {self.go_version}; goprobe supports Go 1.21 and newer — rebuild with a newer Go")
        try:
            found = debug_file if debug_file is not None else (
                None if self.elf.has_section(".debug_info") else find_debug_file(self.elf))
            if found is not None:
                self.elf.attach_debug(open_debug_file(self.elf, found))
        except BinaryError:
            self.elf.close()
            raise
        if not self.elf.has_section(".debug_info"):
            self.elf.close()
            raise NoDebugInfoError(
                f"{self.path}: has no DWARF debug information (built with -ldflags=-w or -s, or stripped) and no "
                "separate debug file was found for it; rebuild without '-w' and '-s' in -ldflags, or give its "
                "debug file (--debug-file)")
        self.go_version_tuple = ver
        self.build_id = self.elf.go_build_id
        self.sections = DebugSections(self.elf.section_data)
        self.cache = IndexCache.open(self.elf.identity_key) if use_cache else IndexCache.disabled()
        self._function_reader = FunctionReader(self.sections, self, self._file_name, self._file_at_pc)
        self._line_programs: dict[int, LineProgram] = {}
        self._unit_index: dict[int, dict[str, list[int]]] = {}
        self._functions: dict[int, Function] = {}

    def close(self) -> None:
        self.cache.save()
        self.elf.close()

    def __enter__(self) -> GoBinary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity ---------------------------------------------------------------------------------------
    @property
    def is_pie(self) -> bool:
        return self.elf.is_pie

    @property
    def segments(self):
        """The PT_LOAD segments: how the file maps into memory (PIE binaries are relocated as a whole)."""
        return self.elf.segments

    @property
    def dwarf_version(self) -> int:
        v = self.cache.get("dwarf_version")
        if v is None:
            v = self.cache.put("dwarf_version", self.units.unit(0).version)
        return v

    @property
    def dwarf_compressed(self) -> bool:
        return bool(self.elf.section_flags(".debug_info") & 0x800)

    @cached_property
    def producer(self) -> str:
        return self.units.unit(0).root.attrs.get(C.AT_producer, "")

    # -- units --------------------------------------------------------------------------------------------
    @cached_property
    def units(self) -> UnitTable:
        if not self.sections.info:
            raise NoDebugInfoError(f"{self.path}: .debug_info is empty; rebuild without -ldflags=-w")
        return UnitTable(self.sections)

    def die_at(self, offset: int) -> Die:
        return self.units.die_at(offset)

    @cached_property
    def _unit_ranges(self) -> tuple[list[int], list[tuple[int, int, int]]]:
        cached = self.cache.get("unit_ranges")
        if cached is None:
            spans = []
            for unit in self.units.units():
                for lo, hi in self._function_reader.die_ranges(unit.root):
                    spans.append((lo, hi, unit.offset))
            spans.sort()
            cached = self.cache.put("unit_ranges", spans)
        return [s[0] for s in cached], cached

    def unit_for_pc(self, pc: int) -> Unit | None:
        starts, spans = self._unit_ranges
        i = bisect.bisect_right(starts, pc) - 1
        while i >= 0:
            lo, hi, off = spans[i]
            if lo <= pc < hi:
                return self.units.unit(off)
            if hi <= pc:
                break
            i -= 1
        return None

    def unit_names(self) -> dict[int, str]:
        names = self.cache.get("unit_names")
        if names is None:
            names = self.cache.put("unit_names", {u.offset: u.name for u in self.units.units()})
        return names

    def _units_for_symbol(self, name: str) -> list[int]:
        """Units whose package could define *name* (the package path is a prefix of a qualified name) and
        whose bytes mention it (a concrete copy of an inlinable function is named only in its abstract DIE,
        which may sit in another unit: for code, the unit covering the symbol's address is added)."""
        mentioned = set(self._units_mentioning(name))
        out = [off for off, pkg in self.unit_names().items()
               if pkg and name.startswith(pkg + ".") and off in mentioned]
        sym = self.elf.symbol(name)
        if sym is not None and sym.kind == 2:  # STT_FUNC
            unit = self.unit_for_pc(sym.value)
            if unit is not None and unit.offset not in out:
                out.insert(0, unit.offset)
        return out

    def _units_mentioning(self, name: str) -> list[int]:
        """Units whose bytes contain *name* as a string: a cheap filter before indexing a unit's DIEs."""
        data = self.sections.info
        needle = name.encode() + b"\0"
        starts = self.units.starts
        found: list[int] = []
        pos = data.find(needle)
        while pos >= 0:
            i = bisect.bisect_right(starts, pos) - 1
            found.append(starts[i])
            nxt = starts[i + 1] if i + 1 < len(starts) else len(data)
            pos = data.find(needle, nxt)  # one hit per unit is enough
        return found

    def _index_of_unit(self, unit_offset: int) -> dict[str, list[int]]:
        idx = self._unit_index.get(unit_offset)
        if idx is not None:
            return idx
        key = f"unit_index:{unit_offset}"
        idx = self.cache.get(key)
        if idx is None:
            unit = self.units.unit(unit_offset)
            data = unit.info
            idx = {}
            for off, ab in unit.top_level_scan():
                if ab.tag in _TOP_LEVEL_TAGS:
                    if data[off] < 0x80 and ab.specs and ab.specs[0][:2] == (C.AT_name, C.FORM_string):
                        # Go puts the name first: read it without decoding the other attributes.
                        end = _string_end(data, off + 1)
                        idx.setdefault(data[off + 1:end].decode("utf-8", "replace"), []).append(off)
                        continue
                    die = unit.die_at(off)
                    name = die.attrs.get(C.AT_name)
                    if not name and C.AT_abstract_origin in die.attrs:
                        # A concrete copy of an inlinable function is named only through its abstract DIE.
                        name = self.die_at(die.attrs[C.AT_abstract_origin]).attrs.get(C.AT_name)
                    if name:
                        idx.setdefault(name, []).append(off)
            self.cache.put(key, idx)
        self._unit_index[unit_offset] = idx
        return idx

    # -- lines ---------------------------------------------------------------------------------------------
    def line_program(self, unit: Unit) -> LineProgram | None:
        prog = self._line_programs.get(unit.offset)
        if prog is None:
            off = unit.root.attrs.get(C.AT_stmt_list)
            if off is None:
                return None
            prog = LineProgram(self.sections.line, off, self.sections.line_str, self.sections.str)
            self._line_programs[unit.offset] = prog
        return prog

    def _file_name(self, unit: Unit, index: int) -> str:
        prog = self.line_program(unit)
        return prog.file_name(index) if prog else "?"

    def _file_at_pc(self, pc: int) -> str:
        unit = self.unit_for_pc(pc)
        prog = self.line_program(unit) if unit is not None else None
        row = prog.row_for_pc(pc) if prog else None
        return prog.file_name(row.file) if row else ""

    def source_at(self, pc: int) -> SourceLocation | None:
        """PC → function, file, line, and the inlined calls active there (innermost last)."""
        unit = self.unit_for_pc(pc)
        if unit is None:
            return None
        prog = self.line_program(unit)
        row = prog.row_for_pc(pc) if prog else None
        if row is None:
            return None
        fn = self.function_at(pc)
        chain: tuple[tuple[str, str, int], ...] = ()
        if fn is not None:
            calls = fn.inline_chain(pc)
            # Each inlined call's position is the call site in its parent; the row is the innermost position.
            chain = tuple((c.name, c.call_file, c.call_line) for c in calls)
        return SourceLocation(pc, fn.name if fn else "?", prog.file_name(row.file), row.line, chain)

    def frames_at(self, pc: int) -> list[tuple[str, str, int]]:
        """The logical frames at *pc*, innermost first: inlined calls, then the physical function.

        Each is (function, file, line). For a return address pass ``pc - 1`` (the call instruction), as Go's
        own tracebacks do.
        """
        src = self.source_at(pc)
        if src is None:
            return []
        fn = self.function_at(pc)
        calls = fn.inline_chain(pc) if fn is not None else []
        frames = []
        file, line = src.file, src.line
        for call in reversed(calls):
            frames.append((call.name, file, line))
            file, line = call.call_file, call.call_line
        frames.append((src.function, file, line))
        return frames

    def pcs_for_line(self, file: str, line: int, *, statements_only: bool = True) -> list[int]:
        """Every PC where a statement of *file*:*line* begins, inlined copies included, sorted.

        *file* may be a suffix of the path (``server.go`` or ``demo/server.go``).
        """
        out: set[int] = set()
        for prog, idxs in self._programs_of(file, line):
            prev_line_file = None
            for row in prog.rows:
                if row.end_sequence:
                    prev_line_file = None
                    continue
                key = (row.file, row.line)
                if row.file in idxs and row.line == line and (row.is_stmt or not statements_only):
                    if key != prev_line_file:
                        out.add(row.address)
                prev_line_file = key
        return sorted(out)

    def lines_with_code(self, file: str) -> list[int]:
        """The lines of *file* (a path suffix, as in :meth:`pcs_for_line`) where some statement begins."""
        return sorted({row.line for prog, idxs in self._programs_of(file, 0) for row in prog.rows
                       if not row.end_sequence and row.file in idxs and row.is_stmt})

    def _programs_of(self, file: str, line: int) -> list[tuple[LineProgram, set[int]]]:
        """(line program, indexes of its files whose path ends with *file*) of every unit that has such a file;
        none raises :class:`UnknownSourceFileError` with suggestions (*line* is only for its message)."""
        out = []
        for unit in self.units.units():
            prog = self.line_program(unit)
            if prog is not None:
                idxs = {i for i, f in enumerate(prog.files) if _path_matches(f, file)}
                if idxs:
                    out.append((prog, idxs))
        if not out:
            raise self._unknown_file(file, line)
        return out

    def _unknown_file(self, file: str, line: int) -> UnknownSourceFileError:
        """No source file of the binary ends with *file*: suggest those whose names are close (``main.go`` for
        ``mian.go``), each with its shortest distinguishing path."""
        base = file.rsplit("/", 1)[-1]
        by_base: dict[str, list[str]] = {}
        for f in self._all_files():
            by_base.setdefault(f.rsplit("/", 1)[-1], []).append(f)
        close = difflib.get_close_matches(base, list(by_base), n=5, cutoff=0.6)
        close = sorted(close, key=lambda c: sorted(c) != sorted(base))[:3]  # swapped letters first (mian.go)
        at = f":{line}" if line else ""
        names = [("/".join(f.split("/")[-2:]) if len(by_base[c]) > 1 else c) + at for c in close for f in by_base[c]]
        return UnknownSourceFileError(f"{file}{at}", names[:5], "the binary's source files")

    def _all_files(self) -> list[str]:
        files: set[str] = set()
        for unit in self.units.units():
            prog = self.line_program(unit)
            if prog:
                files.update(f for f in prog.files if f)
        return sorted(files)

    # -- functions -----------------------------------------------------------------------------------------
    def function_names(self) -> list[str]:
        return [name for _v, _s, name in self.elf._symbols[2]]

    def function(self, name: str) -> Function:
        """The out-of-line function called *name* (exact Go symbol name, e.g. ``main.(*Server).handle``).

        For a generic function give the base name to get the single instantiation, or see :meth:`functions`.
        """
        found = self.functions(name)
        if not found:
            if self.abstract_function_offset(name) is not None:
                callers = sorted({caller.name for caller, _ in self.inlined_copies(name)})
                raise UnknownFunctionError(
                    name, (), f"{self.path.name} as out-of-line code: it was inlined into "
                    f"{', '.join(callers[:5]) or 'its callers'}{' …' if len(callers) > 5 else ''}; probe a caller or "
                    "a file:line inside it, or rebuild with -gcflags=all=-l to keep it")
            raise UnknownFunctionError(name, self.function_names(), str(self.path.name))
        return found[0]

    def functions(self, name: str) -> list[Function]:
        """All functions matching *name*: the exact symbol, or every instantiation ``name[...]`` of a generic."""
        cached = self.cache.get(f"fn:{name}")
        if cached is not None:
            return [self._function_by_offset(off) for off in cached]
        if "[...]" in name:  # how Go prints generic functions in stack traces and runtime.FuncForPC
            offsets = []
            for sym in self.function_names():
                if _generic_match(name, sym):
                    offsets.extend(self._find_function_dies(sym))
            offsets = sorted(set(offsets))
        else:
            offsets = self._find_function_dies(name)
        if not offsets and "[" not in name:
            offsets = self._find_function_dies(name + "[", prefix=True)
        self.cache.put(f"fn:{name}", offsets)
        return [self._function_by_offset(off) for off in offsets]

    def _find_function_dies(self, name: str, prefix: bool = False) -> list[int]:
        if prefix:
            names = [n for n in self.function_names() if n.startswith(name)]
        else:
            names = [name]
        found = []
        for n in names:
            off = self._direct_function_die(n)
            if off is not None:
                found.append(off)
        if found:
            return sorted(set(found))
        # Slow path (no symbol, or an unusual DIE shape): index the candidate units' top-level DIEs.
        for unit_off in self._units_for_symbol(name):
            idx = self._index_of_unit(unit_off)
            keys = [k for k in idx if k.startswith(name)] if prefix else [name] if name in idx else []
            for key in keys:
                for off in idx[key]:
                    die = self.die_at(off)
                    # Concrete out-of-line code only: abstract DIEs (inlined-only) have no PCs.
                    if die.tag == C.TAG_subprogram and (C.AT_low_pc in die.attrs or C.AT_ranges in die.attrs):
                        found.append(off)
        return sorted(set(found))

    def _named_die_candidates(self, name: str, lo: int, hi: int) -> Iterable[Die]:
        """DIEs in [lo, hi) whose first attribute is the inline string *name* (Go's layout for named DIEs).

        Found with a byte search, so each hit is only a candidate: callers verify it (tag, and an address
        from the symbol table) before trusting it.
        """
        data = self.sections.info
        needle = name.encode() + b"\0"
        pos = data.find(needle, lo + 1, hi)
        while pos >= 0:
            start = pos - 1
            unit = self.units.unit_containing(start)
            ab = unit.abbrevs.get(data[start])
            if ab is not None and ab.specs and ab.specs[0][:2] == (C.AT_name, C.FORM_string):
                try:
                    yield unit.die_at(start)
                except DwarfFormatError:
                    pass
            pos = data.find(needle, pos + 1, hi)

    def _direct_function_die(self, name: str) -> int | None:
        """Find a function's concrete DIE without indexing units: the symbol gives its entry PC and unit."""
        sym = self.elf.symbol(name)
        if sym is None or sym.kind != 2:
            return None
        unit = self.unit_for_pc(sym.value)
        if unit is None:
            return None
        abstracts = []
        for die in self._named_die_candidates(name, 0, len(self.sections.info)):
            if die.tag != C.TAG_subprogram:
                continue
            if die.attrs.get(C.AT_low_pc) == sym.value:
                return die.offset
            if C.AT_inline in die.attrs:
                abstracts.append(die.offset)
        # A concrete copy of an inlinable function names itself only through DW_AT_abstract_origin, which Go
        # writes first: look for a reference to the abstract DIE inside the unit that covers the entry PC.
        data = self.sections.info
        for abstract in abstracts:
            needle = abstract.to_bytes(unit.offset_size, "little")
            pos = data.find(needle, unit.first_die, unit.end)
            while pos >= 0:
                ab = unit.abbrevs.get(data[pos - 1])
                if ab is not None and ab.tag == C.TAG_subprogram and ab.specs and ab.specs[0][0] == C.AT_abstract_origin:
                    try:
                        die = unit.die_at(pos - 1)
                    except DwarfFormatError:
                        die = None
                    if die is not None and die.attrs.get(C.AT_abstract_origin) == abstract \
                            and die.attrs.get(C.AT_low_pc) == sym.value:
                        return die.offset
                pos = data.find(needle, pos + 1, unit.end)
        return None

    def abstract_function_offset(self, name: str) -> int | None:
        """The abstract DIE of *name* if Go inlined it somewhere (it lives in a unit that inlined it)."""
        for unit_off in self._units_mentioning(name):
            for off in self._index_of_unit(unit_off).get(name, []):
                die = self.die_at(off)
                if die.tag == C.TAG_subprogram and C.AT_inline in die.attrs:
                    return off
        return None

    def package_functions(self, package: str) -> list[Function]:
        """Every function with code of a package (``main``), in DIE order."""
        out = []
        for off, pkg in self.unit_names().items():
            if pkg != package:
                continue
            for offs in self._index_of_unit(off).values():
                for die_off in offs:
                    die = self.die_at(die_off)
                    if die.tag == C.TAG_subprogram and (C.AT_low_pc in die.attrs or C.AT_ranges in die.attrs):
                        out.append(self._function_by_offset(die_off))
        return out

    def _function_by_offset(self, off: int) -> Function:
        fn = self._functions.get(off)
        if fn is None:
            key = f"fnobj:{off}"
            fn = self.cache.get(key)
            if fn is None:
                fn = self.cache.put(key, self._function_reader.function(self.die_at(off)))
            self._functions[off] = fn
        return fn

    def function_at(self, pc: int) -> Function | None:
        """The out-of-line function whose code contains *pc*."""
        sym = self.elf.function_symbol_at(pc)
        if sym is not None:
            for fn in self.functions(sym.name):
                if fn.contains(pc):
                    return fn
        unit = self.unit_for_pc(pc)
        if unit is None:
            return None
        for names in self._index_of_unit(unit.offset).values():
            for off in names:
                die = self.die_at(off)
                if die.tag == C.TAG_subprogram and any(
                        lo <= pc < hi for lo, hi in self._function_reader.die_ranges(die)):
                    return self._function_by_offset(off)
        return None

    def inlined_copies(self, name: str) -> list[tuple[Function, InlinedCall]]:
        """Every place *name* was inlined: (caller, the inlined call). Scans all units; used on demand."""
        abstract = self.abstract_function_offset(name)
        if abstract is None:
            return []
        key = f"inlined:{abstract}"
        cached = self.cache.get(key)
        if cached is None:
            callers = set()
            for unit in self.units.units():
                data = unit.info
                needle = abstract.to_bytes(4, "little")
                start = unit.root.end
                if data.find(needle, start, unit.end) < 0:
                    continue  # no reference to the abstract DIE anywhere in this unit
                for off, ab in unit.top_level_scan():
                    if ab.tag == C.TAG_subprogram:
                        die = unit.die_at(off)
                        if C.AT_low_pc in die.attrs or C.AT_ranges in die.attrs:
                            end = unit.skip_subtree(die)
                            if data.find(needle, off, end) >= 0:
                                callers.add(off)
            cached = self.cache.put(key, sorted(callers))
        out = []
        for off in cached:
            fn = self._function_by_offset(off)
            for call in _walk_calls(fn.inlined_calls):
                if call.abstract_offset == abstract:
                    out.append((fn, call))
        return out

    # -- globals ------------------------------------------------------------------------------------------
    def global_variable(self, name: str) -> GlobalVariable:
        """A package-level variable by qualified name (``main.config``, ``runtime.allgs``)."""
        sym = self.elf.symbol(name)
        if sym is not None:
            # Fast path: a named DIE whose DW_OP_addr location is the symbol's address.
            for die in self._named_die_candidates(name, 0, len(self.sections.info)):
                if die.tag == C.TAG_variable:
                    g = _global_from_die(name, die)
                    if g is not None and g.address == sym.value:
                        return g
        for unit_off in self._units_for_symbol(name):
            for off in self._index_of_unit(unit_off).get(name, []):
                die = self.die_at(off)
                g = _global_from_die(name, die) if die.tag == C.TAG_variable else None
                if g is not None:
                    return g
        candidates = [s for s in self.elf.symbol_names() if "." in s]
        raise UnknownVariableError(name, candidates, "the binary's package variables")

    def constant(self, name: str) -> int | None:
        """The value of a package-level Go constant (``internal/abi.KindMask``), or None if DWARF lacks it."""
        for unit_off in self._units_for_symbol(name):
            for off in self._index_of_unit(unit_off).get(name, []):
                die = self.die_at(off)
                if die.tag == C.TAG_constant and C.AT_const_value in die.attrs:
                    v = die.attrs[C.AT_const_value]
                    return v if isinstance(v, int) else int.from_bytes(v, "little")
        return None

    # -- types ---------------------------------------------------------------------------------------------
    @cached_property
    def types(self) -> TypeTable:
        store = self.cache.get("types")
        if store is None:
            store = self.cache.put("types", {})
        # The units table is built only if a type is missing from the store (it needs the DWARF bytes).
        return TypeTable(_LazyUnits(self), store, self.cache)

    def type_at(self, offset: int) -> GoType:
        return self.types.get(offset)

    def type_named(self, name: str) -> GoType:
        """A type by its Go name (``runtime.g``, ``main.Server``, ``[]string``)."""
        off = self.cache.get(f"type:{name}")
        if off is None:
            off = self._find_type(name)
            if off is None:
                raise UnknownTypeError(name, self.types.name_index().keys(), "the binary's DWARF types")
            self.cache.put(f"type:{name}", off)
        return self.types.get(off)

    def _find_type(self, name: str) -> int | None:
        # Go's linker emits every type into the runtime package's unit: look there before scanning everything.
        off = self._runtime_unit_types[0].get(name)
        return off if off is not None else self.types.name_index().get(name)

    @cached_property
    def _runtime_unit_types(self) -> tuple[dict[str, int], dict[int, int]]:
        by_name: dict[str, int] = {}
        for unit_off, pkg in self.unit_names().items():
            if pkg == "runtime":
                index_type_dies(self.units.unit(unit_off), by_name, None)
        return by_name, {}

    @cached_property
    def _runtime_type_addresses(self) -> dict[int, int]:
        by_name: dict[str, int] = {}
        by_rt: dict[int, int] = {}
        for unit_off, pkg in self.unit_names().items():
            if pkg == "runtime":
                index_type_dies(self.units.unit(unit_off), by_name, by_rt)
        return by_rt

    def runtime_unit_type(self, name: str) -> GoType | None:
        """A type by name from the runtime package's units only (cheap; None if not there)."""
        off = self._runtime_unit_types[0].get(name)
        return None if off is None else self.types.get(off)

    def type_for_runtime_type(self, offset: int) -> GoType | None:
        """The DWARF type whose runtime type descriptor is *offset* bytes into ``moduledata.types``."""
        off = self._runtime_type_addresses.get(offset)
        if off is None:
            off = self.types.runtime_type_index().get(offset)
        return None if off is None else self.types.get(off)

    @cached_property
    def types_base(self) -> int | None:
        """Link-time address of the runtime type descriptors (``firstmoduledata.types``), from the file;
        None when the file holds no value there (position-independent executables relocate it)."""
        L = self.runtime
        try:
            raw = self.elf.read_vaddr(L.firstmoduledata + L["moduledata"].offset("types"), 8)
        except ValueError:
            return None
        base = int.from_bytes(raw, "little")
        return base or None

    def type_at_runtime_address(self, addr: int) -> GoType | None:
        """The DWARF type of the runtime type descriptor at link-time address *addr*."""
        base = self.types_base
        return None if base is None or addr < base else self.type_for_runtime_type(addr - base)

    # -- frames and code -----------------------------------------------------------------------------------
    @cached_property
    def frames(self) -> FrameTable:
        return FrameTable(self.sections.frame)

    def frame_rule(self, pc: int) -> FrameRule | None:
        return self.frames.rule_at(pc)

    @cached_property
    def code(self):
        from goprobe.dwarf.instructions import CodeInfo

        return CodeInfo(self)

    @cached_property
    def pclntab(self):
        """The runtime's function tables (liveness maps), or None where they cannot be read (not amd64, no
        DWARF for their layout)."""
        from goprobe.dwarf.pclntab import PcLineTable

        if self.arch != "amd64":
            return None
        try:
            return PcLineTable(self)
        except (LookupError, ValueError, struct.error, IndexError):
            return None

    @cached_property
    def runtime(self):
        from goprobe.dwarf.runtime_layout import RuntimeLayout

        return RuntimeLayout.read(self)



def _string_end(data: bytes, pos: int) -> int:
    end = data.find(0, pos)
    if end < 0:
        raise DwarfFormatError(f"unterminated string at .debug_info offset {pos:#x}")
    return end


def _global_from_die(name: str, die: Die) -> GlobalVariable | None:
    loc = die.attrs.get(C.AT_location)
    if isinstance(loc, (bytes, bytearray)):
        try:
            pieces = decode_location(loc, addr_size=die.unit.addr_size, address_at_index=die.unit.address_at_index)
        except DwarfFormatError:
            return None
        if len(pieces) == 1 and pieces[0].kind == ADDRESS_MEMORY:
            return GlobalVariable(name, pieces[0].offset, die.attrs.get(C.AT_type, 0), die.offset)
    return None


class _LazyUnits:
    """Stands in for the unit table until a DIE must really be read."""

    def __init__(self, binary: GoBinary) -> None:
        self._binary = binary

    def __getattr__(self, name: str):
        return getattr(self._binary.units, name)


def _generic_match(pattern: str, name: str) -> bool:
    """Does *name* (``main.Pair[go.shape.string,int].Describe``) match *pattern* (``main.Pair[...].Describe``)?"""
    parts = pattern.split("[...]")
    pos = 0
    for i, part in enumerate(parts):
        if not name.startswith(part, pos):
            return False
        pos += len(part)
        if i == len(parts) - 1:
            return pos == len(name)
        if pos >= len(name) or name[pos] != "[":
            return False
        depth = 0
        while pos < len(name):  # skip one balanced [...] group
            c = name[pos]
            depth += c == "["
            depth -= c == "]"
            pos += 1
            if depth == 0:
                break
        if depth:
            return False
    return True


def _walk_calls(calls: Iterable[InlinedCall]) -> Iterable[InlinedCall]:
    for c in calls:
        yield c
        yield from _walk_calls(c.children)


def _path_matches(path: str, want: str) -> bool:
    if path == want:
        return True
    return path.endswith("/" + want.lstrip("/"))


__all__ = ["GoBinary", "GlobalVariable", "SourceLocation", "DwarfFormatError"]
