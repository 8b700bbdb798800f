"""Preprocessed inputs, kept once per (image set, preprocessing configuration).

A study runs the same images through hundreds of models, and most models share one of a
handful of preprocessing configurations (input size, resize/crop rule, interpolation,
normalization, input dtype and quantization). Decoding and preprocessing are then the same
work done again for every model: for a fast model (a quantized TFLite MobileNet) as much CPU
as the forward pass itself. This store keeps the model-ready input array of an image set,
computed while the first model of a configuration runs, so every later model of that
configuration -- in this study, in another process, in a later study -- reads ready inputs.

The key hashes everything the inputs depend on: the image set's content fingerprint, the
model source and its transform's type, the canonical preprocessing config (the same config
that is part of the embedding cache key), the extraction code version and this store's format.
It never includes the model's identity, which is what lets models share an entry.

Layout under ``$REPALIGN_INPUT_CACHE_DIR``, else ``<embedding cache>/inputs``::

    <key[:2]>/<key>.npy    the (n_images, ...) input array, exactly as the model's forward got it
    <key[:2]>/<key>.json   metadata: key parts, shape, dtype, sha256 of the array's bytes, size

The same store keeps an image set's decoded files (:mod:`repalign.embed.decoded`, whose
entries' parts say ``"kind": "decoded-images"``), under the same limit.

Written atomically (array first, the JSON last as the commit marker). Every read checks the
array against its sha256 (once per process while the file is unchanged), so a replaced or
damaged array is removed and recomputed, never used. The store is bounded: after each
write, the least recently used entries are removed until the total is under the limit
(:data:`repalign._options.DEFAULT_INPUT_CACHE_BYTES`, 2 GiB, or ``$REPALIGN_INPUT_CACHE_BYTES``;
0 switches the store off). The last use is the metadata file's modification time, set on
every hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repalign._io import write_json_atomic
from repalign._options import DEFAULT_INPUT_CACHE_BYTES
from repalign._paths import input_cache_home
from repalign.embed.cache import canonical_json, check_cached_array, read_metadata
from repalign.errors import InputError

log = logging.getLogger(__name__)

#: Bump when the layout of an entry changes (part of every key).
INPUT_CACHE_FORMAT_VERSION = 1
#: Environment variable overriding :data:`DEFAULT_INPUT_CACHE_BYTES`.
LIMIT_VARIABLE = "REPALIGN_INPUT_CACHE_BYTES"

__all__ = [
    "InputCache",
    "InputRecorder",
    "input_cache_limit",
    "input_key_parts",
    "order_by_preprocessing",
    "preprocessing_group",
]


def input_cache_limit() -> int:
    """The store's size limit in bytes: ``$REPALIGN_INPUT_CACHE_BYTES`` or the default."""
    text = os.environ.get(LIMIT_VARIABLE)
    if text is None or not text.strip():
        return DEFAULT_INPUT_CACHE_BYTES
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(
            f"{LIMIT_VARIABLE}={text!r} is not a byte count; set it to an integer >= 0 (0 switches the input cache off)"
        )
    return value


def input_key_parts(
    *, source: str, transform: str, preprocess_config: Mapping[str, Any], images: str, code_version: str
) -> dict[str, Any]:
    """What a preprocessed input array depends on (hashed into its key by :func:`cache_key`)."""
    return {
        "kind": "preprocessed-inputs",
        "input_format": INPUT_CACHE_FORMAT_VERSION,
        "source": source,
        "transform": transform,
        "preprocess": dict(preprocess_config),
        "images": images,
        "code_version": code_version,
    }


def preprocessing_group(model: str) -> str:
    """A string equal for models that share a preprocessing configuration (and source).

    Read with ``describe_model`` (the network is not built). A model that cannot be
    described (unknown, weights missing) is a group of its own: ordering must never fail.
    """
    from repalign.data import read_only
    from repalign.models import describe_model

    try:
        with read_only():  # ordering looks at what is here; it never downloads
            config = describe_model(model)["preprocess_config"]
        source = model.split(":", 1)[0]
        return canonical_json({"source": source, "preprocess": config})
    except Exception as exc:  # noqa: BLE001 - any failure only means "no known group"
        log.debug("No preprocessing group for %s: %s", model, exc)
        return canonical_json({"model": model})


def order_by_preprocessing(models: Sequence[str]) -> list[str]:
    """``models`` with those sharing a preprocessing configuration next to each other.

    Groups keep the order of their first model, and models keep their order inside a
    group, so a deliberate order (the slowest model first) survives; only models of one
    configuration are pulled together, so their preprocessed inputs are read while fresh.
    """
    groups = [preprocessing_group(m) for m in models]
    first = {g: i for i, g in reversed(list(enumerate(groups)))}
    return [m for _, _, m in sorted(zip((first[g] for g in groups), range(len(models)), models, strict=True))]


class InputCache:
    """The input store under ``root`` (default :func:`repalign._paths.input_cache_home`:
    ``$REPALIGN_INPUT_CACHE_DIR``, else ``<cache home>/inputs``)."""

    def __init__(self, root: str | os.PathLike | None = None, *, max_bytes: int | None = None):
        self.root = Path(root) if root is not None else input_cache_home()
        self.max_bytes = input_cache_limit() if max_bytes is None else int(max_bytes)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def array_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _meta_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def metadata(self, key: str) -> dict[str, Any] | None:
        """The entry's metadata (what its writer recorded), or None when there is no entry."""
        return read_metadata(self._meta_path(key))

    def load(self, key: str) -> np.ndarray | None:
        """The stored inputs of ``key`` (a read-only memory map), or None on a miss.

        The whole array is hashed first: one that does not match its metadata (shape,
        dtype or sha256) is logged, removed and reported as a miss. A process hashes an entry
        once: later reads of the same unchanged file (same size, modification time and
        recorded hash) only check its shape and dtype. A hit marks the entry as the most
        recently used.
        """
        if not self.enabled:
            return None
        meta = self.metadata(key)
        if meta is None or not self.array_path(key).is_file():
            return None
        try:
            array = np.lib.format.open_memmap(self.array_path(key), mode="r")
            _check_once(self.array_path(key), array, meta)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Discarding damaged preprocessed-input cache entry %s (recomputing it): %s", key, exc)
            self.remove(key)
            return None
        _touch(self._meta_path(key))
        return array

    def recorder(self, key: str, n_items: int, *, parts: Mapping[str, Any], info: Mapping[str, Any]) -> InputRecorder:
        """A writer that takes the batches of a run in order and commits them as ``key``."""
        return InputRecorder(self, key, n_items, parts=parts, info=info)

    def remove(self, key: str) -> None:
        """Delete an entry (metadata first, so a concurrent reader sees a miss)."""
        for path in (self._meta_path(key), self.array_path(key)):
            path.unlink(missing_ok=True)

    def entries(self) -> list[dict[str, Any]]:
        """Metadata of every complete entry, least recently used first (``last_used_ns`` added)."""
        if not self.root.is_dir():
            return []
        records = []
        for meta_path in self.root.glob("??/*.json"):
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
                used = meta_path.stat().st_mtime_ns
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and self.array_path(meta_path.stem).is_file():
                records.append({**meta, "key": meta_path.stem, "last_used_ns": used})
        records.sort(key=lambda m: (m["last_used_ns"], m["key"]))
        return records

    def total_bytes(self) -> int:
        return int(sum(int(m.get("size_bytes", 0)) for m in self.entries()))

    def clear(self) -> int:
        """Remove every entry, and the leftovers of interrupted writes; returns the entries removed."""
        entries = self.entries()
        for meta in entries:
            self.remove(meta["key"])
        if self.root.is_dir():
            for leftover in [*self.root.glob("??/.*.tmp"), *self.root.glob("??/*.npy")]:
                leftover.unlink(missing_ok=True)  # an array whose metadata was never written
        return len(entries)

    def evict(self) -> list[str]:
        """Remove least recently used entries until the store is within its limit; their keys."""
        entries = self.entries()
        total = sum(int(m.get("size_bytes", 0)) for m in entries)
        removed = []
        for meta in entries:
            if total <= self.max_bytes:
                break
            self.remove(meta["key"])
            total -= int(meta.get("size_bytes", 0))
            removed.append(meta["key"])
        if removed:
            log.info("Input cache over %d bytes: removed %d least recently used entries", self.max_bytes, len(removed))
        return removed


class InputRecorder:
    """Writes a run's input batches, in order, into a new entry; committed only when complete.

    The array is allocated when the first batch shows the per-image shape and dtype. A
    batch that is not one array (a dict, a tuple), or an entry larger than the store's limit,
    switches recording off for this run: extraction goes on, only nothing is kept.
    """

    def __init__(self, store: InputCache, key: str, n_items: int, *, parts: Mapping[str, Any], info: Mapping[str, Any]):
        self.store = store
        self.key = key
        self.n_items = int(n_items)
        self.parts = dict(parts)
        self.info = dict(info)
        self.active = store.enabled
        self._array: np.ndarray | None = None
        self._tmp: Path | None = None
        self._digest = hashlib.sha256()
        self._done = 0

    def add(self, batch: Any) -> None:
        """Append one batch (a torch tensor or numpy array of ``(b, ...)``)."""
        if not self.active:
            return
        block = _as_numpy(batch)
        if block is None:
            self._stop("the model's inputs are not a single array")
            return
        if self._array is None and not self._allocate(block):
            return
        if block.shape[1:] != self._array.shape[1:] or block.dtype != self._array.dtype:
            self._stop("batches of different shapes or dtypes")
            return
        block = np.ascontiguousarray(block)
        self._array[self._done : self._done + len(block)] = block
        self._digest.update(block.data)
        self._done += len(block)

    def _allocate(self, block: np.ndarray) -> bool:
        size = self.n_items * block[:1].nbytes
        if size > self.store.max_bytes:
            self._stop(f"{size} bytes is more than the input cache limit of {self.store.max_bytes}")
            return False
        path = self.store.array_path(self.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
        shape = (self.n_items, *block.shape[1:])
        self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=block.dtype, shape=shape)
        return True

    def commit(self) -> bool:
        """Make the entry visible (array, then metadata) and evict to the limit; False if not kept."""
        if not self.active or self._array is None or self._done != self.n_items:
            self.abort()
            return False
        self._array.flush()
        shape, dtype = list(self._array.shape), str(self._array.dtype)
        self._array = None  # closes the map before the rename
        array_path = self.store.array_path(self.key)
        os.replace(self._tmp, array_path)  # same folder: atomic
        self._tmp = None
        meta = {
            **self.info,
            "shape": shape,
            "dtype": dtype,
            "sha256": self._digest.hexdigest(),
            "size_bytes": array_path.stat().st_size,
            "parts": self.parts,
        }
        write_json_atomic(self.store._meta_path(self.key), meta)
        _touch(self.store._meta_path(self.key))
        _mark_verified(array_path, meta["sha256"])  # hashed as written: a read back need not hash it again
        self.store.evict()
        return True

    def abort(self) -> None:
        """Drop what was written (an interrupted or failed run leaves nothing behind)."""
        self.active = False
        self._array = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _stop(self, why: str) -> None:
        log.info("Not caching the preprocessed inputs of %s: %s", self.info.get("images", "these images"), why)
        self.abort()


#: (path, size, mtime, sha256) of entries this process has hashed and found intact
_verified: set[tuple[str, int, int, str]] = set()


def _check_once(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    """:func:`check_cached_array`, hashing a file only the first time this process reads it
    (or never, when this process wrote it: its recorder hashed the bytes as they were written).

    Hashing is what makes reading an entry cost: 0.13 s for the 217 MB of one 224-pixel
    configuration's Peterson inputs (measured here, from memory), which a process reading
    them for model after model would repeat. A file changed on disk since (size or modification time) is hashed again.
    """
    if _verified_key(path, meta["sha256"]) in _verified:
        if list(array.shape) != list(meta["shape"]) or str(array.dtype) != meta["dtype"]:
            raise ValueError(f"array {array.dtype}{array.shape} != metadata {meta['dtype']}{tuple(meta['shape'])}")
        return
    check_cached_array(array, meta["shape"], meta["dtype"], meta["sha256"])
    _mark_verified(path, meta["sha256"])


def _verified_key(path: Path, sha256: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns, str(sha256))


def _mark_verified(path: Path, sha256: str) -> None:
    _verified.add(_verified_key(path, sha256))


def _as_numpy(batch: Any) -> np.ndarray | None:
    if isinstance(batch, np.ndarray):
        return batch
    numpy = getattr(batch, "numpy", None)
    if callable(numpy) and getattr(batch, "device", None) is not None and str(batch.device) == "cpu":
        return batch.numpy()
    return None


def _touch(path: Path) -> None:
    """Mark an entry used now (explicit nanoseconds: successive uses never tie)."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except OSError:  # removed meanwhile by another process's eviction: nothing to mark
        pass
