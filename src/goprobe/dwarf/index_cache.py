"""Persisted answers about one binary, keyed by its identity (build IDs, size, section headers).

Two pickles under ``GOPROBE_CACHE_DIR/index/``: a small one with the answers a request needs (functions,
types, code facts, runtime layout), read at open, and a bulk one with per-unit name indexes, read only when an
answer is missing. Each records its format version and the binary's identity key and is ignored when either
differs, so it is never trusted for another binary and is always safe to delete. Writes are atomic.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from goprobe.cache_dir import cache_dir

FORMAT_VERSION = 4
BULK_PREFIXES = ("unit_index:",)


class _Store:
    def __init__(self, path: Path | None, key: str, load: bool) -> None:
        self.path = path
        self.key = key
        self.data: dict[str, Any] = self._load() if load else {}
        self.dirty = False
        self.sizes = self._fingerprint()

    def _load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            with open(self.path, "rb") as fh:
                stored = pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError,
                IndexError):
            return {}
        if isinstance(stored, dict) and stored.get("format") == FORMAT_VERSION and stored.get("key") == self.key:
            return stored["data"]
        return {}

    def _fingerprint(self) -> dict[str, int]:
        # Some entries are dicts that grow in place (the type store): their sizes tell whether to rewrite.
        return {k: len(v) for k, v in self.data.items() if isinstance(v, dict)}

    def save(self) -> None:
        if self.path is None or (not self.dirty and self._fingerprint() == self.sizes):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump({"format": FORMAT_VERSION, "key": self.key, "data": self.data}, fh,
                            protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
            self.dirty = False
            self.sizes = self._fingerprint()
        except OSError:
            pass  # a cache that cannot be written only costs speed next time


_SCHEMA: str | None = None


def _schema() -> str:
    """A fingerprint of the classes the cache pickles: their names and fields."""
    global _SCHEMA
    if _SCHEMA is None:
        import hashlib

        import attrs

        from goprobe.dwarf import code_facts, expressions, functions, lists, runtime_layout, types

        classes = (functions.Function, functions.Variable, functions.InlinedCall, lists.LocationRange,
                   expressions.Piece, types.GoType, types.Field, code_facts.FunctionCode,
                   runtime_layout.RuntimeLayout, runtime_layout.StructLayout, runtime_layout.FieldLayout)
        text = ";".join(f"{c.__module__}.{c.__qualname__}:{','.join(f.name for f in attrs.fields(c))}"
                        for c in classes)
        _SCHEMA = hashlib.sha256(text.encode()).hexdigest()[:12]
    return _SCHEMA


class IndexCache:
    def __init__(self, main: _Store, bulk_path: Path | None, key: str) -> None:
        self._main = main
        self._bulk_path = bulk_path
        self._key = key
        self._bulk: _Store | None = None

    @classmethod
    def disabled(cls) -> IndexCache:
        return cls(_Store(None, "", False), None, "")

    @classmethod
    def open(cls, key: str) -> IndexCache:
        if os.environ.get("GOPROBE_NO_CACHE"):
            return cls.disabled()
        key = f"{key}:{_schema()}"  # objects pickled by another shape of goprobe's classes are not reused
        folder = cache_dir() / "index"
        return cls(_Store(folder / f"{key[:40]}.pickle", key, True), folder / f"{key[:40]}.units.pickle", key)

    def _store_for(self, name: str) -> _Store:
        if name.startswith(BULK_PREFIXES):
            if self._bulk is None:
                self._bulk = _Store(self._bulk_path, self._key, self._bulk_path is not None)
            return self._bulk
        return self._main

    def get(self, name: str) -> Any:
        return self._store_for(name).data.get(name)

    def put(self, name: str, value: Any) -> Any:
        store = self._store_for(name)
        store.data[name] = value
        store.dirty = True
        return value

    def save(self) -> None:
        self._main.save()
        if self._bulk is not None:
            self._bulk.save()
