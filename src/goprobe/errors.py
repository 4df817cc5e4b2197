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

    def __init__(self, what: str, name: str, candidates: Iterable[str] = (), where: str = "") -> None:
        self.what = what
        self.name = name
        self.suggestions = suggest(name, candidates)
        msg = f"unknown {what} {name!r}{' in ' + where if where else ''}"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        super().__init__(msg)


class UnknownFunctionError(LookupFailure):
    def __init__(self, name: str, candidates: Iterable[str] = (), where: str = "") -> None:
        super().__init__("function", name, candidates, where)


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
