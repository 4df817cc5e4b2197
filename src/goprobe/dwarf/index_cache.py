"""Persisted answers about one binary, keyed by its identity (build IDs, size, section headers).

Stored as a pickle under ``GOPROBE_CACHE_DIR/index/``. The file records its format version and the binary's
identity key and is ignored when either differs, so it is never trusted for another binary and is always safe
to delete. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from goprobe.cache_dir import cache_dir

FORMAT_VERSION = 3


class IndexCache:
    def __init__(self, path: Path | None, key: str, data: dict[str, Any]) -> None:
        self.path = path
        self.key = key
        self._data = data
        self._dirty = False

    @classmethod
    def disabled(cls) -> IndexCache:
        return cls(None, "", {})

    @classmethod
    def open(cls, key: str) -> IndexCache:
        if os.environ.get("GOPROBE_NO_CACHE"):
            return cls.disabled()
        path = cache_dir() / "index" / f"{key[:40]}.pickle"
        data: dict[str, Any] = {}
        try:
            with open(path, "rb") as fh:
                stored = pickle.load(fh)
            if isinstance(stored, dict) and stored.get("format") == FORMAT_VERSION and stored.get("key") == key:
                data = stored["data"]
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
            data = {}
        return cls(path, key, data)

    def get(self, name: str) -> Any:
        return self._data.get(name)

    def put(self, name: str, value: Any) -> Any:
        self._data[name] = value
        self._dirty = True
        return value

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump({"format": FORMAT_VERSION, "key": self.key, "data": self._data}, fh,
                            protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            pass  # a cache that cannot be written only costs speed next time
