"""Typed exceptions of goprobe's public API.

Every error names its cause and, where there is one, the fix. The CLI prints ``str(exc)`` and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable
import difflib


class GoprobeError(Exception):
    """Base class of every error goprobe raises on bad input or an unusable target."""


class BinaryError(GoprobeError):
    """The file cannot be used as a Go binary."""


class NotELFError(BinaryError):
    """The file is not an ELF executable."""


class NotGoBinaryError(BinaryError):
    """The file is ELF but was not built by the Go toolchain."""


class NoDebugInfoError(BinaryError):
    """The binary carries no DWARF (built with ``-ldflags=-w`` or stripped)."""


class UnsupportedArchitectureError(BinaryError):
    """The binary targets an architecture goprobe does not support."""


class UnsupportedGoVersionError(BinaryError):
    """The binary was built by a Go release goprobe does not support."""


class DwarfFormatError(BinaryError):
    """The DWARF data is malformed or uses a construct goprobe does not understand."""


class RuntimeLayoutError(BinaryError):
    """A Go runtime structure goprobe relies on changed shape in this release."""


class LookupFailure(GoprobeError):
    """A name the user gave does not exist in the binary."""

    def __init__(self, what: str, name: str, candidates: Iterable[str] = (), where: str = "",
                 ranked: bool = False) -> None:
        self.what = what
        self.name = name
        # ranked: *candidates* are already the suggestions, best first
        self.suggestions = list(candidates)[:5] if ranked else suggest(name, candidates)
        msg = f"unknown {what} {name!r}{' in ' + where if where else ''}"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        super().__init__(msg)


class UnknownFunctionError(LookupFailure):
    def __init__(self, name: str, candidates: Iterable[str] = (), where: str = "", ranked: bool = False) -> None:
        super().__init__("function", name, candidates, where, ranked)


class UnknownSourceFileError(UnknownFunctionError):
    """A ``file:line`` probe names a file the binary has no code from (kept an UnknownFunctionError: a
    probe point names neither)."""

    def __init__(self, name: str, candidates: Iterable[str] = (), where: str = "") -> None:
        LookupFailure.__init__(self, "source file", name, candidates, where, ranked=True)


class UnknownVariableError(LookupFailure):
    def __init__(self, name: str, candidates: Iterable[str] = (), where: str = "") -> None:
        super().__init__("variable", name, candidates, where)


class UnknownTypeError(LookupFailure):
    def __init__(self, name: str, candidates: Iterable[str] = (), where: str = "") -> None:
        super().__init__("type", name, candidates, where)


def suggest(name: str, candidates: Iterable[str], limit: int = 5) -> list[str]:
    """Closest names to *name*: exact suffix matches first (``handle`` → ``main.(*Server).handle``), then fuzzy."""
    pool = list(dict.fromkeys(candidates))
    if not pool:
        return []
    short = name.rsplit(".", 1)[-1].lower()
    suffix = [c for c in pool if c.lower().endswith("." + short) or c.lower() == name.lower()]
    out = sorted(suffix, key=len)[:limit]
    if len(out) < limit:
        for c in difflib.get_close_matches(name, pool, n=limit, cutoff=0.6):
            if c not in out:
                out.append(c)
    return out[:limit]


class ProcessError(GoprobeError):
    """A live process or core file cannot be read or paused."""


class ProcessNotFoundError(ProcessError):
    """No process has the given pid."""


class ProcessPermissionError(ProcessError):
    """The kernel refuses to let goprobe trace or read the process."""


class ProcessExitedError(ProcessError):
    """The process exited (or was killed) while goprobe was reading or pausing it."""


class CoreFileError(ProcessError):
    """The file is not a usable ELF core dump."""


class ExpressionSyntaxError(GoprobeError):
    """A capture expression, condition or type is not valid goprobe expression syntax.

    ``column`` is 1-based (``len(text) + 1`` means "at the end"); ``expected`` says what would have been valid
    there and ``found`` what was there instead (``None`` when the error is inside a token).
    """

    def __init__(self, text: str, column: int, expected: str, found: str | None = None, *,
                 headline: str | None = None, hint: str | None = None) -> None:
        import json  # local: keeps this module's import surface as it was

        self.text = text
        self.column = column
        self.expected = expected
        self.found = found
        msg = f"{headline or 'expected ' + expected} at column {column} in {json.dumps(text, ensure_ascii=False)}"
        if found:
            msg += f", found {found}"
        if hint:
            msg += f": {hint}"
        super().__init__(msg + "\n" + _caret(text, column - 1))


def _caret(text: str, offset: int) -> str:
    """Two lines: the line of *text* holding *offset*, and a caret under that offset."""
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    line = text[start:] if end < 0 else text[start:end]
    # One display cell per character so the caret stays aligned.
    line = "".join(" " if c in "\t\r" else c for c in line)
    return f"  {line}\n  {' ' * (offset - start)}^"


class RequestError(GoprobeError):
    """A snapshot or event request (a file, a CLI spec or constructor values) is invalid.

    ``file`` and ``key`` (e.g. ``limits.string_bytes``, ``capture[1].expressions[0]``) locate the problem when
    known; ``fix`` says what would be valid.
    """

    def __init__(self, problem: str, *, file: str | None = None, key: str | None = None,
                 fix: str | None = None) -> None:
        self.problem = problem
        self.file = file
        self.key = key
        self.fix = fix
        where = ": ".join(p for p in (file, key) if p)
        msg = f"{where}: {problem}" if where else problem
        super().__init__(msg + (f"; {fix}" if fix else ""))


class ExpressionError(GoprobeError):
    """A well-formed expression that does not fit the program: unknown identifier, no such field, a type
    that cannot be indexed... The message names the expression, the column and what exists instead."""
