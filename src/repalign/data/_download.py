"""HTTP download to a temporary file, with a progress bar, verification and an atomic move.

A download never lands at its final path unverified: bytes stream into a temporary file
next to the destination (same file system, so the final ``os.replace`` is atomic), are
hashed on the way, optionally converted, checked by the caller's ``verify`` callback, and
only then renamed into place. On any failure the temporary files are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from repalign import __version__
from repalign._progress import progress_bar
from repalign.errors import MissingDataError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = f"repalign/{__version__} (+https://github.com/; dataset fetcher)"


class NetworkUnavailable(MissingDataError):
    """The host could not be reached at all (no route, DNS failure, timeout).

    The registry stops trying further URLs of a fetch after this, so an offline machine
    fails fast instead of waiting on every file of a dataset.
    """


@dataclass(frozen=True)
class Downloaded:
    """What was received: the temporary file and the digests of its raw bytes."""

    path: Path
    n_bytes: int
    sha256: str
    md5: str


@contextlib.contextmanager
def _temporary_file(directory: Path, name: str, suffix: str) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
    os.close(fd)
    path = Path(tmp)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _stream(url: str, target: Path, *, progress: bool, label: str, timeout: float) -> Downloaded:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    n_bytes = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(target, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with progress_bar(label, expected, enabled=progress, unit="bytes") as advance:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
                    n_bytes += len(chunk)
                    advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        raise MissingDataError(f"{url} answered HTTP {exc.code} ({exc.reason})") from exc
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkUnavailable(f"cannot reach {url} ({reason})") from exc
    if expected is not None and n_bytes != expected:
        raise MissingDataError(f"download of {url} stopped after {n_bytes} of {expected} bytes")
    return Downloaded(target, n_bytes, sha256.hexdigest(), md5.hexdigest())


def download_verified(
    url: str,
    destination: str | os.PathLike,
    *,
    verify: Callable[[Downloaded, Path], None],
    convert: Callable[[Path, Path], None] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    label: str | None = None,
) -> Path:
    """Download ``url`` and move it to ``destination`` only once ``verify`` accepts it.

    Args:
        url: http(s) URL.
        destination: final path; its folder is created.
        verify: ``verify(downloaded, final_tmp)`` raises (normally
            :class:`~repalign.errors.ChecksumError`) when the content is wrong. ``downloaded``
            carries the raw bytes' digests; ``final_tmp`` is the file about to be moved into
            place (the converted file when ``convert`` is given).
        convert: optional ``convert(raw_path, out_path)`` that turns the downloaded file into
            the stored form (e.g. the upstream Peterson pickle into ``.npz``).
        progress: show a progress bar on stderr.
        timeout: socket timeout in seconds.

    Returns:
        ``destination`` as a Path.

    Raises:
        NetworkUnavailable: the host cannot be reached.
        MissingDataError: HTTP error or truncated transfer.
        ChecksumError: raised by ``verify``.
    """
    destination = Path(destination)
    label = label or destination.name
    logger.info("downloading %s -> %s", url, destination)
    with _temporary_file(destination.parent, destination.name, ".part") as raw:
        downloaded = _stream(url, raw, progress=progress, label=label, timeout=timeout)
        if convert is None:
            verify(downloaded, raw)
            os.replace(raw, destination)
            return destination
        with _temporary_file(destination.parent, destination.name, ".converted") as converted:
            convert(raw, converted)
            verify(downloaded, converted)
            os.replace(converted, destination)
    return destination
