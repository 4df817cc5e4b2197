"""Where goprobe keeps caches: ``GOPROBE_CACHE_DIR``, by default ``~/.cache/goprobe``.

Everything under it is safe to delete.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    raw = os.environ.get("GOPROBE_CACHE_DIR")
    path = Path(raw) if raw else Path.home() / ".cache" / "goprobe"
    return path
