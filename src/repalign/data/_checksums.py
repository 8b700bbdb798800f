"""Checksums of dataset files (of their bytes, or of their content for .gz and .npz) and the
per-dataset verification stamps that spare re-hashing big unchanged files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repalign._io import sha256_file, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    from repalign.data.specs import FileSpec

logger = logging.getLogger(__name__)


#: Name of the per-dataset verification stamp in the data home.
STAMP_NAME = ".repalign-verified.json"
#: Name of the per-dataset record of files extracted from a verified archive.
EXTRACTED_NAME = ".repalign-extracted.json"


def npz_content_sha256(path: str | os.PathLike) -> str:
    """sha256 of the arrays in an ``.npz`` file, independent of how the zip was written.

    Arrays are taken in sorted key order; each contributes its key, its shape and its
    values -- numbers as little-endian bytes of their dtype, strings as NUL-joined UTF-8
    (so ``<U13`` and ``<U20`` holding the same names hash alike). Object arrays are refused.
    """
    digest = hashlib.sha256(b"npz-content-v1\0")
    with np.load(path, allow_pickle=False) as archive:
        for key in sorted(archive.files):
            array = archive[key]
            digest.update(key.encode() + b"\0" + repr(tuple(array.shape)).encode() + b"\0")
            if array.dtype.kind in "US":
                flat = [x.decode() if isinstance(x, bytes) else str(x) for x in array.ravel().tolist()]
                digest.update(b"str\0" + "\0".join(flat).encode("utf-8"))
            else:
                little = array.astype(array.dtype.newbyteorder("<"), copy=False)
                digest.update(little.dtype.str.encode() + b"\0" + np.ascontiguousarray(little).tobytes())
    return digest.hexdigest()


def _content_sha256(path: Path, relpath: str) -> str:
    if relpath.endswith(".gz"):
        return sha256_file(path, decompress_gzip=True)
    return npz_content_sha256(path)


def check_file(path: str | os.PathLike, fspec: FileSpec) -> str | None:
    """``None`` when the file at ``path`` matches ``fspec``'s checksums, else what is wrong (one line)."""
    path = Path(path)
    actual = None
    if fspec.sha256:
        actual = sha256_file(path)
        if actual == fspec.sha256:
            return None
    if fspec.content_sha256:
        try:
            content = _content_sha256(path, fspec.relpath)
        except (OSError, EOFError, ValueError, zlib.error, zipfile.BadZipFile) as exc:
            return f"content unreadable ({type(exc).__name__}: {exc})"
        if content == fspec.content_sha256:
            return None
        return f"content sha256 {content} differs from the expected {fspec.content_sha256}"
    return f"sha256 {actual} differs from the expected {fspec.sha256}"


class _Stamps:
    """Verification stamps of one dataset folder: relpath -> [size, mtime_ns, checksum key].

    A file whose size and mtime are unchanged since it was verified against the same
    expected checksum is not hashed again by :func:`fetch`.
    """

    def __init__(self, folder: Path):
        self.path = folder / STAMP_NAME
        self.data: dict[str, list] = _read_json(self.path) or {}
        self.dirty = False

    @staticmethod
    def _signature(path: Path, key: str) -> list:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns, key]

    def is_fresh(self, relpath: str, key: str, path: Path) -> bool:
        return self.data.get(relpath) == self._signature(path, key)

    def record(self, relpath: str, key: str, path: Path) -> None:
        self.data[relpath] = self._signature(path, key)
        self.dirty = True

    def forget(self, relpath: str) -> None:
        if self.data.pop(relpath, None) is not None:
            self.dirty = True

    def save(self) -> None:
        if self.dirty and self.path.parent.is_dir():
            write_json_atomic(self.path, self.data)
            self.dirty = False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
