"""goprobe: look inside running Go programs, compiled from the binary's DWARF.

Public API so far: :class:`GoBinary` (the DWARF frontend) and the typed errors in :mod:`goprobe.errors`.
"""

from goprobe.dwarf.binary import GlobalVariable, GoBinary, SourceLocation
from goprobe.errors import (
    BinaryError,
    DwarfFormatError,
    GoprobeError,
    LookupFailure,
    NoDebugInfoError,
    NotELFError,
    NotGoBinaryError,
    RuntimeLayoutError,
    UnknownFunctionError,
    UnknownTypeError,
    UnknownVariableError,
    UnsupportedArchitectureError,
    UnsupportedGoVersionError,
)

__version__ = "0.1.0"


def open_binary(path: str, *, use_cache: bool = True) -> GoBinary:
    """Open a Go executable for inspection and probe compilation."""
    return GoBinary(path, use_cache=use_cache)


__all__ = [
    "BinaryError", "DwarfFormatError", "GlobalVariable", "GoBinary", "GoprobeError", "LookupFailure",
    "NoDebugInfoError", "NotELFError", "NotGoBinaryError", "RuntimeLayoutError", "SourceLocation",
    "UnknownFunctionError", "UnknownTypeError", "UnknownVariableError", "UnsupportedArchitectureError",
    "UnsupportedGoVersionError", "open_binary",
]
