"""goprobe: look inside running Go programs, compiled from the binary's DWARF.

Public API: :func:`take_snapshot` / :func:`snapshot_core` (goroutine stacks with captured values, as JSON-ready
dicts), the request model (:class:`SnapshotRequest`, :class:`EventRequest`, :class:`Limits`),
:class:`GoBinary` (the DWARF frontend), and the typed errors in :mod:`goprobe.errors`.
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
    UnknownSourceFileError,
    UnknownTypeError,
    UnknownVariableError,
    UnsupportedArchitectureError,
    UnsupportedGoVersionError,
)

__version__ = "0.1.0"

# Snapshot and request names load on first use, so `import goprobe` for the DWARF frontend stays light.
_LAZY = {"take_snapshot": "goprobe.snapshot", "snapshot_core": "goprobe.snapshot",
         "SnapshotRequest": "goprobe.request", "EventRequest": "goprobe.request", "ProbePoint": "goprobe.request",
         "Limits": "goprobe.request", "load_request_file": "goprobe.request", "Client": "goprobe.fleet.client"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'goprobe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def open_binary(path: str, *, use_cache: bool = True) -> GoBinary:
    """Open a Go executable for inspection and probe compilation."""
    return GoBinary(path, use_cache=use_cache)


__all__ = [
    "BinaryError", "DwarfFormatError", "GlobalVariable", "GoBinary", "GoprobeError", "LookupFailure",
    "NoDebugInfoError", "NotELFError", "NotGoBinaryError", "RuntimeLayoutError", "SourceLocation",
    "UnknownFunctionError", "UnknownSourceFileError", "UnknownTypeError", "UnknownVariableError", "UnsupportedArchitectureError",
    "UnsupportedGoVersionError", "open_binary", "take_snapshot", "snapshot_core", "SnapshotRequest",
    "EventRequest", "ProbePoint", "Limits", "load_request_file",
]
