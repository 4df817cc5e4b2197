"""Snapshot and event requests: what to capture, where, and within which limits.

Requests are immutable values built three ways: in Python (:meth:`SnapshotRequest.build`,
:meth:`EventRequest.build`), from CLI spec strings (:func:`parse_capture_spec`, :meth:`ProbePoint.parse`) and
from ``.json``/``.toml`` files (:func:`load_request_file`, format in ``docs/requests.md``). Every invalid value
raises :class:`~goprobe.errors.RequestError` naming the key and the fix; expressions that do not parse raise
:class:`~goprobe.errors.ExpressionSyntaxError` (wrapped in a ``RequestError`` when they come from a file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import itertools
import json
import math
import os
from pathlib import Path
import tomllib
import types
from typing import Any, Literal

import attrs

from goprobe.errors import ExpressionSyntaxError, RequestError, suggest
from goprobe.expr import Expr, is_condition, parse, unparse

__all__ = [
    "Capture", "EventRequest", "Limits", "ProbePoint", "SnapshotRequest", "load_request_file",
    "parse_capture_spec", "request_from_dict", "request_to_dict", "split_expressions",
]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(_inst, attr, value) -> None:
    if not _is_int(value) or value <= 0:
        raise RequestError(f"must be a positive integer, got {value!r}", key=attr.name)


@attrs.frozen
class Limits:
    """Bounds on what a capture reads and prints; all must be positive integers.

    ``min_elements`` wins over ``collection_bytes``: a collection always shows at least that many elements.
    """

    string_bytes: int = attrs.field(default=512, validator=_positive_int)
    collection_bytes: int = attrs.field(default=512, validator=_positive_int)
    min_elements: int = attrs.field(default=1, validator=_positive_int)
    map_entries: int = attrs.field(default=64, validator=_positive_int)
    pointer_depth: int = attrs.field(default=4, validator=_positive_int)
    frames_per_goroutine: int = attrs.field(default=512, validator=_positive_int)
    goroutines: int = attrs.field(default=100_000, validator=_positive_int)
    total_output_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive_int)
    # The longest a snapshot keeps a process stopped: past it, goprobe resumes it and reports what it has.
    pause_ms: int = attrs.field(default=2000, validator=_positive_int)


LIMIT_KEYS = tuple(a.name for a in attrs.fields(Limits))


@attrs.frozen
class Capture:
    """One expression to capture: the text as the user wrote it (labels the output) and its AST."""

    text: str
    expr: Expr = attrs.field(validator=attrs.validators.instance_of(Expr))

    @classmethod
    def parse(cls, text: str) -> Capture:
        """Parse *text*; raises :class:`~goprobe.errors.ExpressionSyntaxError`."""
        text = text.strip()
        return cls(text, parse(text))


def _captures(items: Iterable[Capture | str], key: str) -> tuple[Capture, ...]:
    if isinstance(items, (str, bytes)):
        raise RequestError(f"must be a list of expressions, got the string {items!r}", key=key,
                           fix=f"write [{json.dumps(items)}]" if isinstance(items, str) else None)
    out = []
    for item in items:
        if isinstance(item, str):
            item = Capture.parse(item)
        elif not isinstance(item, Capture):
            raise RequestError(f"must hold expression strings or Captures, got {item!r}", key=key)
        out.append(item)
    return tuple(out)


def _function_name(name: object, key: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise RequestError(f"must be a non-empty function name, got {name!r}", key=key,
                           fix='use the Go symbol name, e.g. "main.(*Server).handle"')
    return name.strip()


def _function_captures(mapping: Mapping[str, Iterable[Capture | str]] | None, key: str
                       ) -> Mapping[str, tuple[Capture, ...]]:
    """An immutable copy of function → captures, names stripped, captures parsed from strings."""
    out: dict[str, tuple[Capture, ...]] = {}
    for fn, caps in (mapping or {}).items():
        fn = _function_name(fn, key)
        out[fn] = out.get(fn, ()) + _captures(caps, f"{key}[{fn!r}]")
    return types.MappingProxyType(out)


@attrs.frozen
class SnapshotRequest:
    """Capture the stacks of all goroutines once, with values in the frames of the named functions.

    ``functions`` maps a Go function name to the expressions captured in each of its frames (an empty tuple
    reports the frames without values). ``goroutine_filter`` keeps only goroutines with that function on their
    stack; ``all_goroutines=False`` drops goroutines that have no frame of a requested function.
    """

    functions: Mapping[str, tuple[Capture, ...]] = attrs.field(
        factory=dict, converter=lambda m: _function_captures(m, "functions"), hash=False)
    limits: Limits = attrs.field(factory=Limits, validator=attrs.validators.instance_of(Limits))
    goroutine_filter: str | None = None
    all_goroutines: bool = True

    def __attrs_post_init__(self) -> None:
        if self.goroutine_filter is not None:
            _function_name(self.goroutine_filter, "goroutine_filter")
        if not isinstance(self.all_goroutines, bool):
            raise RequestError(f"must be true or false, got {self.all_goroutines!r}", key="all_goroutines")
        if not self.functions and not self.all_goroutines:
            raise RequestError("the request would report nothing: no functions and all_goroutines is false",
                               key="all_goroutines", fix="name functions to capture or set all_goroutines")

    @classmethod
    def build(cls, functions: Mapping[str, Iterable[str | Capture]] | None = None, *, limits: Limits | None = None,
              goroutine_filter: str | None = None, all_goroutines: bool = True) -> SnapshotRequest:
        """``SnapshotRequest.build({"main.(*Server).handle": ["req.URL.Path", "len(s.conns)"]})``."""
        return cls(functions or {}, limits or Limits(), goroutine_filter, all_goroutines)


ProbeKind = Literal["entry", "return", "line"]


@attrs.frozen
class ProbePoint:
    """Where an event fires: a function's entry or return, or a source line (``file`` matches a path suffix)."""

    kind: ProbeKind
    function: str | None = None
    file: str | None = None
    line: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind in ("entry", "return"):
            _function_name(self.function, "probe.function")
            if self.file is not None or self.line is not None:
                raise RequestError(f"an {self.kind} probe names a function, not a file or line", key="probe",
                                   fix="give either function (with at) or file and line")
        elif self.kind == "line":
            if not isinstance(self.file, str) or not self.file.strip():
                raise RequestError(f"a line probe needs a file, got {self.file!r}", key="probe.file",
                                   fix='give the source file, e.g. "server.go"')
            if not _is_int(self.line) or self.line <= 0:
                raise RequestError(f"a line probe needs a positive line number, got {self.line!r}", key="probe.line")
            if self.function is not None:
                raise RequestError("a line probe names a file and line, not a function", key="probe.function")
        else:
            raise RequestError(f"unknown probe kind {self.kind!r}", key="probe",
                               fix='use "entry", "return" or "line"')

    @classmethod
    def entry(cls, function: str) -> ProbePoint:
        return cls("entry", function=function)

    @classmethod
    def at_return(cls, function: str) -> ProbePoint:
        return cls("return", function=function)

    @classmethod
    def at_line(cls, file: str, line: int) -> ProbePoint:
        return cls("line", file=file, line=line)

    @classmethod
    def parse(cls, spec: str, *, at_return: bool = False) -> ProbePoint:
        """Parse the CLI form: ``FUNC`` (entry, or return with *at_return*) or ``FILE:LINE``."""
        spec = spec.strip() if isinstance(spec, str) else spec
        if not spec or not isinstance(spec, str):
            raise RequestError(f"no probe point in {spec!r}", key="probe",
                               fix="name a function (main.(*Server).handle) or a FILE:LINE (server.go:212)")
        head, sep, tail = spec.rpartition(":")
        # Go symbol names never end in ":<digits>", so this cannot misread a function.
        if sep and tail.isascii() and tail.isdigit():
            if at_return:
                raise RequestError(f"{spec!r} is a line probe; return probes need a function", key="probe",
                                   fix="drop the return flag or name a function")
            return cls.at_line(head, int(tail))
        return cls.at_return(spec) if at_return else cls.entry(spec)

    def __str__(self) -> str:
        if self.kind == "line":
            return f"{self.file}:{self.line}"
        return f"{self.kind} of {self.function}"


def _condition(value: Expr | str | None) -> Expr | None:
    return parse(value) if isinstance(value, str) else value


def _optional_positive(value: object, key: str, kinds: str = "integer") -> None:
    if value is None:
        return
    ok = _is_int(value) if kinds == "integer" else (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    if not ok or value <= 0:
        raise RequestError(f"must be a positive {kinds} or absent, got {value!r}", key=key)


@attrs.frozen
class EventRequest:
    """Capture values each time execution reaches ``probe``, while ``condition`` holds.

    ``captures`` are read in the probed frame, ``callers`` in frames of the named functions further up the
    stack. The request ends after ``max_events`` events or ``duration_s`` seconds (whichever comes first);
    ``rate_limit_per_s`` drops events beyond that rate. ``stack`` adds the goroutine's stack to each event.
    """

    probe: ProbePoint = attrs.field(validator=attrs.validators.instance_of(ProbePoint))
    captures: tuple[Capture, ...] = attrs.field(default=(), converter=lambda c: _captures(c, "captures"))
    callers: Mapping[str, tuple[Capture, ...]] = attrs.field(
        factory=dict, converter=lambda m: _function_captures(m, "callers"), hash=False)
    condition: Expr | None = attrs.field(default=None, converter=_condition)
    stack: bool = False
    limits: Limits = attrs.field(factory=Limits, validator=attrs.validators.instance_of(Limits))
    max_events: int | None = None
    duration_s: float | None = None
    rate_limit_per_s: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.condition is not None and not (isinstance(self.condition, Expr) and is_condition(self.condition)):
            shown = unparse(self.condition) if isinstance(self.condition, Expr) else repr(self.condition)
            raise RequestError(f"{shown!r} is not a condition", key="when",
                               fix=f"use a comparison, &&, || or !, e.g. \"{shown} == true\"")
        if not isinstance(self.stack, bool):
            raise RequestError(f"must be true or false, got {self.stack!r}", key="stack")
        _optional_positive(self.max_events, "max_events")
        _optional_positive(self.duration_s, "duration_s", "number")
        _optional_positive(self.rate_limit_per_s, "rate_limit_per_s")

    @classmethod
    def build(cls, probe: ProbePoint | str, captures: Iterable[str | Capture] = (), *, at_return: bool = False,
              callers: Mapping[str, Iterable[str | Capture]] | None = None, when: str | Expr | None = None,
              stack: bool = False, limits: Limits | None = None, max_events: int | None = None,
              duration_s: float | None = None, rate_limit_per_s: int | None = None) -> EventRequest:
        """``EventRequest.build("main.(*Server).handle", ["req.URL.Path"], when='req.Method == "POST"')``;
        *probe* as a string is parsed by :meth:`ProbePoint.parse` with *at_return*."""
        if isinstance(probe, str):
            probe = ProbePoint.parse(probe, at_return=at_return)
        return cls(probe, captures, callers or {}, when, stack, limits or Limits(), max_events, duration_s,
                   rate_limit_per_s)


# ------------------------------------------------------------------------------------------ CLI specs

_OPEN = {"(": ")", "[": "]", "{": "}"}


def _top_level(text: str, targets: str) -> Iterable[int]:
    """Offsets in *text* of characters in *targets* outside brackets and string literals."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in ('"', "`"):
            # Skip the literal; an unterminated one runs to the end and the expression parser reports it.
            i += 1
            while i < n and text[i] != c:
                i += 2 if c == '"' and text[i] == "\\" else 1
        elif c in _OPEN:
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)  # unbalanced closers: leave the error to the parser
        elif depth == 0 and c in targets:
            yield i
        i += 1


def split_expressions(text: str) -> list[str]:
    """Split comma-separated expressions at commas outside brackets and strings (``m["a,b"], f(x)[1]``)."""
    cuts = [-1, *_top_level(text, ","), len(text)]
    return [text[a + 1:b].strip() for a, b in itertools.pairwise(cuts)]


def parse_capture_spec(spec: str) -> tuple[str, tuple[Capture, ...]]:
    """Parse ``FUNC:EXPR,EXPR`` (e.g. ``main.(*Server).handle:req.URL.Path,s.cfg``) into (function, captures).

    The function ends at the first ``:`` outside parentheses and brackets that is not followed by ``.``
    (Go's ``type:.eq.T`` symbols contain ``:.``; an expression never starts with ``.``). Without a ``:`` the
    whole spec is the function and there are no captures.
    """
    # The function part has no string literals, so scan it for brackets only.
    depth, cut = 0, -1
    for i, c in enumerate(spec):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth = max(0, depth - 1)
        elif c == ":" and depth == 0 and not spec.startswith(":.", i):
            cut = i
            break
    if cut < 0:
        return _function_name(spec, "function"), ()
    function = _function_name(spec[:cut], "function")
    rest = spec[cut + 1:]
    texts = split_expressions(rest)
    for k, t in enumerate(texts):
        if not t:
            raise RequestError(f"expression {k + 1} after {function}: is empty in {spec!r}", key="expressions",
                               fix="separate expressions with single commas, without a trailing comma")
    return function, tuple(Capture.parse(t) for t in texts)


# ------------------------------------------------------------------------------------------ file forms

_SNAPSHOT_KEYS = ("kind", "limits", "capture", "goroutine_filter", "all_goroutines")
_EVENT_KEYS = ("kind", "probe", "expressions", "callers", "when", "stack", "limits", "max_events", "duration_s",
               "rate_limit_per_s")
_PROBE_KEYS = ("function", "at", "file", "line")
_CAPTURE_KEYS = ("function", "expressions")
_KINDS = ("snapshot", "events")


class _Reader:
    """Typed access to a decoded request document, raising RequestError with the file and key path."""

    def __init__(self, file: str | None) -> None:
        self.file = file

    def error(self, key: str, problem: str, fix: str | None = None) -> RequestError:
        return RequestError(problem, file=self.file, key=key or "top level", fix=fix)

    def table(self, value: object, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table/object, got {_kind(value)}")
        for k in value:
            if k not in allowed:
                close = suggest(k, allowed, limit=1)
                fix = "allowed keys: " + ", ".join(allowed) + (f"; did you mean {close[0]!r}?" if close else "")
                raise self.error(_join(key, k), "unknown key", fix)
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {_kind(value)}")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {_kind(value)}")
        return value

    def integer(self, value: object, key: str) -> int:
        if not _is_int(value):
            raise self.error(key, f"must be an integer, got {_kind(value)}")
        return value

    def number(self, value: object, key: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.error(key, f"must be a number, got {_kind(value)}")
        return value

    def items(self, value: object, key: str, what: str) -> list:
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of {what}, got {_kind(value)}")
        return value

    def captures(self, value: object, key: str) -> tuple[Capture, ...]:
        out = []
        for k, text in enumerate(self.items(value, key, "expression strings")):
            out.append(self.capture(self.string(text, f"{key}[{k}]"), f"{key}[{k}]"))
        return tuple(out)

    def capture(self, text: str, key: str) -> Capture:
        try:
            return Capture.parse(text)
        except ExpressionSyntaxError as e:
            raise self.error(key, f"invalid expression: {e}") from e

    def function_captures(self, value: object, key: str) -> dict[str, tuple[Capture, ...]]:
        out: dict[str, tuple[Capture, ...]] = {}
        for k, entry in enumerate(self.items(value, key, "tables with function and expressions")):
            where = f"{key}[{k}]"
            entry = self.table(entry, where, _CAPTURE_KEYS)
            if "function" not in entry:
                raise self.error(where, "missing key 'function'", 'add function = "main.(*Server).handle"')
            fn = self.string(entry["function"], f"{where}.function").strip()
            if not fn:
                raise self.error(f"{where}.function", "must not be empty")
            # The same function listed twice captures the union, in order.
            out[fn] = out.get(fn, ()) + self.captures(entry.get("expressions", []), f"{where}.expressions")
        return out

    def limits(self, value: object) -> Limits:
        table = self.table(value, "limits", LIMIT_KEYS)
        values = {k: self.integer(v, f"limits.{k}") for k, v in table.items()}
        return self.build(Limits, "limits.", **values)

    def build(self, cls, prefix: str, *args, **kwargs):
        try:
            return cls(*args, **kwargs)
        except RequestError as e:  # constructor validation: add the file and where the value sits
            key = e.key or ""
            if prefix and not key.startswith(prefix.rstrip(".")):
                key = prefix + key
            raise RequestError(e.problem, file=self.file, key=key or "top level", fix=e.fix) from e


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table", type(None): "null"}.get(type(value), type(value).__name__) + f" ({_short(value)})"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def request_from_dict(data: Mapping[str, Any], *, file: str | None = None) -> SnapshotRequest | EventRequest:
    """Build a request from a decoded document (the structure of the file forms); *file* names it in errors."""
    r = _Reader(file)
    if not isinstance(data, dict):
        raise r.error("", f"a request must be a table/object, got {_kind(data)}")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise r.error("kind", "missing" if kind is None else f"unknown kind {kind!r}",
                      'set kind = "snapshot" or kind = "events"')
    limits = r.limits(data["limits"]) if "limits" in data else Limits()
    if kind == "snapshot":
        r.table(data, "", _SNAPSHOT_KEYS)
        functions = r.function_captures(data.get("capture", []), "capture")
        gf = data.get("goroutine_filter")
        return r.build(SnapshotRequest, "", functions, limits,
                       None if gf is None else r.string(gf, "goroutine_filter"),
                       r.boolean(data.get("all_goroutines", True), "all_goroutines"))
    r.table(data, "", _EVENT_KEYS)
    if "probe" not in data:
        raise r.error("probe", "missing", 'add probe = {function = "main.f", at = "entry"} or {file = "x.go", line = 12}')
    probe = r.table(data["probe"], "probe", _PROBE_KEYS)
    if "function" in probe:
        at = r.string(probe.get("at", "entry"), "probe.at")
        if at not in ("entry", "return"):
            raise r.error("probe.at", f"unknown value {at!r}", 'use "entry" or "return"')
        point = r.build(ProbePoint, "", at, r.string(probe["function"], "probe.function"),
                        probe.get("file"), probe.get("line"))
    elif "file" in probe or "line" in probe:
        if "at" in probe:
            raise r.error("probe.at", "only applies to function probes", "remove at, or name a function")
        point = r.build(ProbePoint, "", "line", None, probe.get("file"), probe.get("line"))
    else:
        raise r.error("probe", "needs function or file and line", 'e.g. {function = "main.f", at = "return"}')
    condition = None
    if "when" in data:
        condition = r.capture(r.string(data["when"], "when"), "when").expr
    opt = {}
    for key, read in (("max_events", r.integer), ("duration_s", r.number), ("rate_limit_per_s", r.integer)):
        if key in data:
            opt[key] = read(data[key], key)
    return r.build(EventRequest, "", point, r.captures(data.get("expressions", []), "expressions"),
                   r.function_captures(data.get("callers", []), "callers"), condition,
                   r.boolean(data.get("stack", False), "stack"), limits, **opt)


def request_to_dict(request: SnapshotRequest | EventRequest) -> dict[str, Any]:
    """The file-form document of *request* (JSON-ready; :func:`request_from_dict` reads it back equal)."""
    limits = attrs.asdict(request.limits)

    def entries(mapping: Mapping[str, tuple[Capture, ...]]) -> list[dict[str, Any]]:
        return [{"function": fn, "expressions": [c.text for c in caps]} for fn, caps in mapping.items()]

    if isinstance(request, SnapshotRequest):
        out: dict[str, Any] = {"kind": "snapshot", "limits": limits, "capture": entries(request.functions),
                               "all_goroutines": request.all_goroutines}
        if request.goroutine_filter is not None:
            out["goroutine_filter"] = request.goroutine_filter
        return out
    p = request.probe
    probe = {"file": p.file, "line": p.line} if p.kind == "line" else {"function": p.function, "at": p.kind}
    out = {"kind": "events", "probe": probe, "expressions": [c.text for c in request.captures],
           "callers": entries(request.callers), "stack": request.stack, "limits": limits}
    if request.condition is not None:
        out["when"] = unparse(request.condition)
    for key in ("max_events", "duration_s", "rate_limit_per_s"):
        if getattr(request, key) is not None:
            out[key] = getattr(request, key)
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def load_request_file(path: str | os.PathLike[str]) -> SnapshotRequest | EventRequest:
    """Load a snapshot or event request from a ``.json`` or ``.toml`` file (see ``docs/requests.md``)."""
    p = Path(path)
    name = str(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise RequestError(f"unsupported file type {p.suffix or '(none)'!r}", file=name,
                           fix="write the request as .toml or .json")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise RequestError(f"cannot read: {e.strerror or e}", file=name) from e
    try:
        if suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise RequestError(f"not UTF-8 text: {e.reason} at byte {e.start}", file=name) from e
    except tomllib.TOMLDecodeError as e:
        raise RequestError(f"invalid TOML: {e}", file=name) from e
    except json.JSONDecodeError as e:
        raise RequestError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}", file=name) from e
    except ValueError as e:  # duplicate JSON key
        raise RequestError(f"invalid JSON: {e}", file=name) from e
    return request_from_dict(data, file=name)
