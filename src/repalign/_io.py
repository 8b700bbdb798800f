"""Small file-system helpers shared by the data layer, the cache and the result store."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# tomllib is re-exported for the config reader and the result store (tomli backports it to 3.10)
if sys.version_info >= (3, 11):
    import tomllib as tomllib
else:  # pragma: no cover - exercised on 3.10 only
    pass

_CHUNK = 1 << 20


def _current_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def sha256_file(path: str | os.PathLike, *, decompress_gzip: bool = False) -> str:
    """sha256 of a file's bytes, or of its decompressed content for ``.gz`` files."""
    opener = gzip.open if decompress_gzip else open
    digest = hashlib.sha256()
    with opener(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


_SHA256_SEEN: dict[tuple[str, int, int], str] = {}


def sha256_file_remembered(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, remembered per (path, size, mtime) for this process: identities
    (weights files, a study's input files) are asked for repeatedly, and files can be large."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_SEEN:
        _SHA256_SEEN[key] = sha256_file(path)
    return _SHA256_SEEN[key]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe_os_error(exc: OSError) -> str:
    """``"File too large (EFBIG, errno 27)"``: an OS error's reason and errno in one line."""
    if exc.errno is None:
        return " ".join(str(exc).split()) or type(exc).__name__
    reason = exc.strerror or os.strerror(exc.errno)
    return f"{reason} ({errno.errorcode.get(exc.errno, 'errno')}, errno {exc.errno})"


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it into place on success.

    The rename is atomic on POSIX, so readers see either the old file or the complete
    new one, never a half-written file -- even if the process is killed mid-write.
    An OS error while writing (disk full, file size limit, read-only folder) is raised
    naming ``destination``: a failed ``write()`` names no file by itself.
    """
    destination = Path(destination)
    tmp_path: Path | None = None
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        # mkstemp creates 0600 files; results and caches should be as readable as any file we write.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        yield tmp_path
        os.replace(tmp_path, destination)
    except OSError as exc:
        # repalign's own errors and errors about other files are raised as they are
        if exc.errno is None or type(exc).__module__ != "builtins" or not _about(exc, destination, tmp_path):
            raise
        # OSError(errno, ...) builds the errno's subclass, e.g. PermissionError for EACCES
        raise OSError(exc.errno, os.strerror(exc.errno), str(destination)) from exc
    finally:
        if tmp_path is not None and tmp_path.exists():
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def _about(exc: OSError, destination: Path, tmp_path: Path | None) -> bool:
    """Whether ``exc`` concerns writing ``destination``: no file named, its temporary file,
    itself or a folder above it."""
    if exc.filename is None:
        return True
    if not isinstance(exc.filename, (str, bytes, os.PathLike)):
        return False
    return Path(os.fsdecode(exc.filename)) in (tmp_path, destination, *destination.parents)


def write_bytes_atomic(destination: str | os.PathLike, data: bytes) -> None:
    with atomic_path(destination) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text_atomic(destination: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(destination, text.encode("utf-8"))


def write_json_atomic(destination: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(destination, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
