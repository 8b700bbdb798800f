"""Where repalign keeps data, caches and where it looks for a local mirror."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Downloaded and verified datasets and weights: ``$REPALIGN_DATA_HOME``,
    else ``$XDG_CACHE_HOME/repalign/data``, else ``~/.cache/repalign/data``."""
    if env := os.environ.get("REPALIGN_DATA_HOME"):
        return Path(env).expanduser()
    return _cache_root() / "data"


def cache_home() -> Path:
    """Embedding cache: ``$REPALIGN_CACHE_HOME``, else ``<user cache>/repalign/embeddings``."""
    if env := os.environ.get("REPALIGN_CACHE_HOME"):
        return Path(env).expanduser()
    return _cache_root() / "embeddings"


def mirror_dir() -> Path | None:
    """A local read-only copy of upstream data (``$REPALIGN_MIRROR``), if configured."""
    env = os.environ.get("REPALIGN_MIRROR")
    return Path(env).expanduser() if env else None


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repalign"
