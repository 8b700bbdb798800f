"""Content-addressed store of extracted embeddings.

An entry is found by a key that hashes *everything* its values depend on: the identity
of the model actually loaded (resolved id plus weights sha256, hub revision or random
seed), its preprocessing config, the layer, the content fingerprint of the images, the
extraction code version and the storage dtype. A change of any of these gives a new key,
so stale embeddings are never reused; nothing is keyed by a model *name* alone.

Layout under :func:`repalign._paths.cache_home`::

    <root>/<key[:2]>/<key>.npy    the (n_images, n_features) array, float32 or float16
    <root>/<key[:2]>/<key>.json   metadata: the key parts, model, layer, images, shape, dtype,
                                  sha256 of the array's bytes, created

Both files are written atomically (temporary file + rename), the array first: the JSON
file is the commit marker, so a reader never sees an entry whose array is incomplete.

Every read checks the array against the sha256 in its metadata, so an array replaced on
disk -- by hand, by a disk error, by another array of the same shape -- is never used: it
is logged, removed and reported as a miss, and the caller recomputes it. Entries written
before the hash was stored (no ``sha256`` in their metadata) cannot be checked; they are
misses too (recomputed once and rewritten with a hash, with one warning per process),
since trusting them would keep exactly the silent reuse the hash exists to stop.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from repalign._io import atomic_path, write_json_atomic
from repalign._npy import read_npy
from repalign._options import EMBEDDING_DTYPES
from repalign._paths import cache_home
from repalign.errors import InputError

log = logging.getLogger(__name__)

#: Storage dtypes an entry may have: the dtypes embeddings are extracted in.
CACHE_DTYPES = EMBEDDING_DTYPES
#: Bump when the on-disk layout changes (part of every key, so old entries are ignored).
CACHE_FORMAT_VERSION = 1


def canonical_json(obj: Any) -> str:
    """Deterministic JSON of a key part: sorted keys, no whitespace, tuples as lists.

    Raises InputError for values JSON cannot represent, rather than hashing their repr
    (a repr can embed memory addresses and would silently defeat the cache).
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    except TypeError as exc:
        raise InputError(f"Embedding cache key parts must be JSON-serialisable: {exc}") from exc


def read_metadata(path: Path) -> dict[str, Any] | None:
    """A cache entry's JSON metadata, or None when it is absent or unreadable (a miss either way)."""
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``parts`` (plus the cache format version)."""
    payload = {"cache_format": CACHE_FORMAT_VERSION, **parts}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class EmbeddingCache:
    """The embedding store rooted at ``root`` (default: ``$REPALIGN_CACHE_HOME`` or the user cache)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_home()

    # -- paths -----------------------------------------------------------------
    def _array_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _meta_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    # -- single entries --------------------------------------------------------
    def contains(self, key: str) -> bool:
        """True when a complete entry with a content hash exists for ``key`` (no array is read)."""
        meta = self._read_meta(key)
        return meta is not None and "sha256" in meta and self._array_path(key).is_file()

    def load(self, key: str) -> np.ndarray | None:
        """The stored array of ``key``, or None on a miss.

        An entry that cannot be read, whose shape/dtype disagree with its metadata or whose
        content does not match its sha256 (a disk error, a manual edit, another array put in
        its place) is logged, removed and reported as a miss, so it is recomputed.
        """
        meta = self._read_meta(key)
        if meta is None or not self._array_path(key).is_file():
            return None
        if "sha256" not in meta:
            _warn_unhashed_once(self.root)
            return None
        try:
            array = read_npy(self._array_path(key))
            check_cached_array(array, (meta["n"], meta["d"]), meta["dtype"], meta["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Discarding unreadable embedding cache entry %s (recomputing it): %s", key, exc)
            self.remove(key)
            return None
        return array

    def _read_meta(self, key: str) -> dict[str, Any] | None:
        """An entry's metadata, or None when it is absent or unreadable (a miss either way)."""
        return read_metadata(self._meta_path(key))

    def store(self, key: str, array: np.ndarray, *, parts: Mapping[str, Any], info: Mapping[str, Any]) -> Path:
        """Write ``array`` (n, d) under ``key`` with metadata; returns the array's path.

        ``parts`` are the key parts (stored for inspection), ``info`` descriptive fields
        shown by ``repalign cache list`` (model, model_id, layer, images).
        """
        if array.ndim != 2:
            raise InputError(f"Embeddings to cache must be 2-D (n_images, n_features); got shape {array.shape}")
        if str(array.dtype) not in CACHE_DTYPES:
            raise InputError(f"Embeddings to cache must be one of {CACHE_DTYPES}; got {array.dtype}")
        array_path = self._array_path(key)
        with atomic_path(array_path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        meta = {
            **info,
            "key": key,
            "n": int(array.shape[0]),
            "d": int(array.shape[1]),
            "dtype": str(array.dtype),
            "sha256": array_sha256(array),
            "size_bytes": array_path.stat().st_size,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "parts": dict(parts),
        }
        write_json_atomic(self._meta_path(key), meta)
        return array_path

    def remove(self, key: str) -> None:
        """Delete an entry (metadata first, so a concurrent reader sees a miss, not a half entry)."""
        for path in (self._meta_path(key), self._array_path(key)):
            path.unlink(missing_ok=True)

    # -- whole store -----------------------------------------------------------
    def entries(self, *, model: str | None = None) -> list[dict[str, Any]]:
        """Metadata of every complete entry, newest first, optionally filtered by a model glob.

        ``model`` matches (fnmatch, case-insensitive) the model name or the resolved model id.
        """
        if not self.root.is_dir():
            return []
        records = []
        for meta_path in self.root.glob("??/*.json"):
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("Skipping unreadable cache metadata %s: %s", meta_path, exc)
                continue
            if not isinstance(meta, dict) or not self._array_path(meta_path.stem).is_file():
                continue
            if model is not None and not _matches_model(meta, model):
                continue
            records.append(meta)
        records.sort(key=lambda m: m.get("created", ""), reverse=True)
        return records

    def clear(self, *, model: str | None = None) -> int:
        """Remove every entry (or those whose model matches the glob ``model``); returns the count."""
        removed = 0
        for meta in self.entries(model=model):
            self.remove(meta["key"])
            removed += 1
        if model is None and self.root.is_dir():
            # Leftover temporary files of interrupted writes.
            for tmp in self.root.glob("??/.*.tmp"):
                tmp.unlink(missing_ok=True)
        return removed

    def stats(self) -> dict[str, Any]:
        """``{"root", "n_entries", "total_bytes"}`` of the store."""
        entries = self.entries()
        return {
            "root": str(self.root),
            "n_entries": len(entries),
            "total_bytes": int(sum(e.get("size_bytes", 0) for e in entries)),
        }


#: rows are hashed this many bytes at a time, so a memory-mapped array is never read whole
_HASH_BLOCK_BYTES = 64 << 20


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's bytes in C order (its dtype and shape are checked separately),
    read a block of rows at a time (memory maps stay on disk)."""
    digest = hashlib.sha256()
    if array.ndim == 0 or len(array) == 0:
        digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()
    step = max(1, _HASH_BLOCK_BYTES // max(1, array[:1].nbytes))
    for start in range(0, len(array), step):
        digest.update(np.ascontiguousarray(array[start : start + step]).data)
    return digest.hexdigest()


def check_cached_array(array: np.ndarray, shape, dtype: str, sha256: str) -> None:
    """Raise ValueError unless a cache entry's array is what its metadata recorded: the shape,
    the dtype and the content (both caches of this package store their arrays this way)."""
    if list(array.shape) != list(shape) or str(array.dtype) != dtype:
        raise ValueError(f"array {array.dtype}{array.shape} != metadata {dtype}{tuple(shape)}")
    if array_sha256(array) != sha256:
        raise ValueError("its array does not match the sha256 stored with it (changed on disk)")


_warned_unhashed: set[str] = set()


def _warn_unhashed_once(root: Path) -> None:
    if str(root) not in _warned_unhashed:
        _warned_unhashed.add(str(root))
        log.warning(
            "The embedding cache %s holds entries from an older repalign without a content hash; "
            "they are recomputed once as they are needed",
            root,
        )


def _matches_model(meta: Mapping[str, Any], pattern: str) -> bool:
    pattern = pattern.lower()
    candidates = [str(meta.get("model", "")), str(meta.get("model_id", ""))]
    return any(fnmatch.fnmatchcase(c.lower(), pattern) for c in candidates if c)
