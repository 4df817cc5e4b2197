"""A function's source text, when the file named by its debug info is readable here: used to tell a variable
the optimiser dropped from the debug info (it is in the source) from a name that is nowhere in the function."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from goprobe.dwarf.binary import GoBinary

_MAX_LINES = 5000  # a function longer than this is not searched to its end


def function_source(b: GoBinary, name: str) -> str | None:
    """The text of function *name* (from its ``func`` line to its closing brace), or None when its file is
    not readable here or the function cannot be placed."""
    where = _a_line_inside(b, name)
    if where is None:
        return None
    lines = _file_lines(where[0])
    if not lines or not 0 < where[1] <= len(lines):
        return None
    start = where[1] - 1
    while start > 0 and not lines[start].startswith("func"):
        start -= 1
    depth, opened = 0, False
    for i in range(start, min(len(lines), start + _MAX_LINES)):
        code = _strip_strings_and_comments(lines[i])
        depth += code.count("{") - code.count("}")
        opened = opened or "{" in code
        if opened and depth <= 0:
            return "\n".join(lines[start:i + 1])
    return "\n".join(lines[start:start + _MAX_LINES])


def names_in_source(b: GoBinary, function: str, names) -> bool:
    """Whether every identifier of *names* appears as a word in *function*'s source (False if unreadable)."""
    text = function_source(b, function)
    return text is not None and all(re.search(rf"(?<![\w.]){re.escape(n)}\b", text) for n in names)


def _a_line_inside(b: GoBinary, name: str) -> tuple[str, int] | None:
    fns = b.functions(name)
    if fns and fns[0].decl_file and fns[0].decl_line:
        return fns[0].decl_file, fns[0].decl_line
    for _caller, call in b.inlined_copies(name):
        for lo, _hi in call.ranges:
            for fn_name, file, line in b.frames_at(lo):
                if fn_name == name and line:
                    return file, line
    return None


@lru_cache(maxsize=64)
def _file_lines(path: str) -> tuple[str, ...] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return tuple(fh.read().split("\n"))
    except OSError:
        return None


def _strip_strings_and_comments(line: str) -> str:
    line = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', line)
    return line.split("//", 1)[0]
