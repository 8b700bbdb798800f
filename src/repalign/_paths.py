"""Where repalign keeps data, caches and where it looks for a local mirror.

A location taken from the environment is checked when it is asked for: a variable that
points at a file (or below one) is a one-line :class:`~repalign.errors.InputError` naming
the variable, not a NotADirectoryError deep inside a download or a cache write.
"""

from __future__ import annotations

import os
from pathlib import Path

from repalign.errors import InputError


def data_home() -> Path:
    """Downloaded and verified datasets and weights: ``$REPALIGN_DATA_HOME``,
    else ``$XDG_CACHE_HOME/repalign/data``, else ``~/.cache/repalign/data``."""
    if env := os.environ.get("REPALIGN_DATA_HOME"):
        return _folder(Path(env).expanduser(), "REPALIGN_DATA_HOME")
    return _cache_root() / "data"


def cache_home() -> Path:
    """Embedding cache: ``$REPALIGN_CACHE_HOME``, else ``<user cache>/repalign/embeddings``."""
    if env := os.environ.get("REPALIGN_CACHE_HOME"):
        return _folder(Path(env).expanduser(), "REPALIGN_CACHE_HOME")
    return _cache_root() / "embeddings"


def input_cache_home() -> Path:
    """Decoded and preprocessed inputs (:mod:`repalign.embed.inputs`): ``$REPALIGN_INPUT_CACHE_DIR``,
    else ``<embedding cache>/inputs``. A cluster task points it at its node's own store, so
    the tasks a node runs share inputs while each keeps a private embedding cache."""
    if env := os.environ.get("REPALIGN_INPUT_CACHE_DIR"):
        return _folder(Path(env).expanduser(), "REPALIGN_INPUT_CACHE_DIR")
    return cache_home() / "inputs"


def mirror_dir() -> Path | None:
    """A local read-only copy of upstream data (``$REPALIGN_MIRROR``), if configured."""
    env = os.environ.get("REPALIGN_MIRROR")
    return Path(env).expanduser() if env else None


def _cache_root() -> Path:
    if env := os.environ.get("XDG_CACHE_HOME"):
        return _folder(Path(env), "XDG_CACHE_HOME") / "repalign"
    return Path.home() / ".cache" / "repalign"


def _folder(path: Path, variable: str) -> Path:
    """``path``, unless it or the nearest of its parents that exists is not a folder."""
    existing = next((p for p in (path, *path.parents) if _exists(p)), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"lies below the file {existing}"
        raise InputError(f"{variable}={path} {where}; point {variable} at a folder (it is created if missing)")
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. no permission to look: let the later write report it with its errno
        return False
