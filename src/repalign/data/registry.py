"""The dataset registry: where each dataset comes from, how it is verified, where it lives.

Every dataset file is resolved in this order (see :func:`fetch`):

1. already in the data home (``$REPALIGN_DATA_HOME/<dataset>/``) and verified -- a
   verification stamp keyed by (size, mtime) avoids re-hashing big files on every call;
2. copied from the mirror folder (``$REPALIGN_MIRROR``) into a temporary file, verified,
   renamed into place;
3. downloaded from upstream with a progress bar, verified, renamed into place.

A file whose checksum does not match is never used: a corrupt mirror copy or download
raises :class:`~repalign.errors.ChecksumError`; a corrupt file already in the data home is
reported (a warning) and replaced only by a verified copy. When nothing can provide a file,
one :class:`~repalign.errors.MissingDataError` says what is missing and how to provide it.

Checksums: ``sha256`` is of the file's bytes. ``content_sha256`` is of its *content*:
the decompressed bytes of a ``.gz`` file (a re-compressed gzip is the same data), or the
arrays of a ``.npz`` file (see :func:`npz_content_sha256`; an ``.npz`` rebuilt from the
upstream pickle is the same data). A file is accepted when either matches. ``md5`` is
checked in addition on downloads where that is what upstream publishes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import numpy as np

from repalign._io import atomic_path, sha256_file, write_json_atomic
from repalign._paths import data_home, mirror_dir
from repalign.errors import ChecksumError, InputError, MissingDataError, unknown_name

logger = logging.getLogger(__name__)

#: Name of the per-dataset verification stamp in the data home.
STAMP_NAME = ".repalign-verified.json"
#: Name of the per-dataset record of files extracted from a verified archive.
EXTRACTED_NAME = ".repalign-extracted.json"


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    Attributes:
        relpath: path inside the dataset's folder (POSIX separators), e.g. ``"test_images/cat.bmp"``.
        sha256: sha256 of the file's bytes.
        content_sha256: sha256 of the file's content (``.gz``: decompressed bytes; ``.npz``:
            :func:`npz_content_sha256`).
        md5: md5 of the upstream bytes, checked on download (only without ``convert``).
        urls: upstream locations, tried in order.
        size: size in bytes of the stored file, when known (for ``data info``).
        convert: ``"module:function"`` turning the downloaded file into the stored one,
            called as ``function(raw_path, out_path)`` (e.g. the Peterson pickle -> ``.npz``).
    """

    relpath: str
    sha256: str | None = None
    content_sha256: str | None = None
    md5: str | None = None
    urls: tuple[str, ...] = ()
    size: int | None = None
    convert: str | None = None

    def __post_init__(self) -> None:
        path = PurePosixPath(self.relpath)
        if not self.relpath or path.is_absolute() or ".." in path.parts:
            raise InputError(f"Dataset file path must be relative and stay inside its folder: {self.relpath!r}")
        if not (self.sha256 or self.content_sha256):
            raise InputError(f"Dataset file {self.relpath!r} needs a sha256 or content_sha256 checksum")
        if self.content_sha256 and not self.relpath.endswith((".gz", ".npz")):
            raise InputError(f"content_sha256 is defined for .gz and .npz files only, not {self.relpath!r}")
        object.__setattr__(self, "urls", tuple(self.urls))

    @property
    def checksum_key(self) -> str:
        """Identifies the expected content; a stamp made under another key is stale."""
        return f"{self.sha256 or ''}|{self.content_sha256 or ''}"


@dataclass(frozen=True)
class ArchiveSpec:
    """A dataset distributed as one archive (e.g. CIFAR's python tarball).

    The archive is verified *before* extraction, extracted safely into ``extract_to``
    inside the dataset folder, and then deleted; the sha256 of every extracted file is
    recorded so later verification needs no archive.
    """

    filename: str
    sha256: str
    extract_to: str
    md5: str | None = None
    size: int | None = None
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(self.urls))

    def as_file(self) -> FileSpec:
        return FileSpec(self.filename, sha256=self.sha256, md5=self.md5, urls=self.urls, size=self.size)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: registry name (also its folder name in the data home).
        description: one line for ``repalign data list``.
        license, citation, homepage: provenance shown by ``repalign data info``.
        mirror_path: folder inside ``$REPALIGN_MIRROR`` holding the files (``""`` = the
            mirror root); ``None`` when the mirror never has it.
        files: the files (for plain datasets).
        archive: the archive (for archive datasets; then ``files`` is empty).
    """

    name: str
    description: str
    license: str
    citation: str
    homepage: str
    mirror_path: str | None
    files: tuple[FileSpec, ...] = ()
    archive: ArchiveSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(self.files))
        if bool(self.files) == bool(self.archive):
            raise InputError(f"Dataset '{self.name}' needs either files or an archive (exactly one)")
        relpaths = [f.relpath for f in self.files]
        if len(set(relpaths)) != len(relpaths):
            raise InputError(f"Dataset '{self.name}' lists a file twice")

    def file(self, relpath: str) -> FileSpec:
        for fspec in self.files:
            if fspec.relpath == relpath:
                return fspec
        raise unknown_name(f"file of dataset '{self.name}'", relpath, [f.relpath for f in self.files])


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry (tests and plugins register small datasets this way)."""
    if spec.name in DATASETS and not replace:
        raise InputError(f"Dataset '{spec.name}' is already registered; pass replace=True to override it")
    DATASETS[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a dataset from the registry (its files in the data home are left alone)."""
    DATASETS.pop(name, None)


def get_dataset(name: str) -> DatasetSpec:
    """The spec of a registered dataset; unknown names get a did-you-mean error."""
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_name("dataset", name, DATASETS) from None


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(DATASETS)


def dataset_dir(name: str) -> Path:
    """The dataset's folder in the data home (it may not exist yet)."""
    return data_home() / get_dataset(name).name


# --------------------------------------------------------------------------- checksums


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


# --------------------------------------------------------------------------- resolution


def _offline_env() -> bool:
    return os.environ.get("REPALIGN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class _Fetch:
    """State of one fetch call: its stamps, and whether the network is known to be unreachable."""

    spec: DatasetSpec
    folder: Path
    progress: bool
    stamps: _Stamps
    offline: bool = dataclasses.field(default_factory=_offline_env)


class _Unavailable(Exception):
    def __init__(self, relpath: str, reasons: list[str], *, checksum: bool):
        super().__init__(relpath)
        self.relpath = relpath
        self.reasons = reasons
        self.checksum = checksum


def _mirror_source(spec: DatasetSpec, relpath: str) -> Path | None:
    root = mirror_dir()
    if root is None or spec.mirror_path is None:
        return None
    return root / spec.mirror_path / relpath


def _umask_permissions(path: Path) -> None:
    """Temporary files are created 0600; give the final file the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _resolve_callable(dotted: str) -> Callable:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


def _ensure_file(job: _Fetch, fspec: FileSpec) -> Path:
    """Make ``fspec`` present and verified in the data home; return its path.

    Raises:
        _Unavailable: no source could provide a verified copy (collected by the caller
            into one user-facing error).
    """
    dest = job.folder / fspec.relpath
    corrupt = None
    if dest.is_file():
        if job.stamps.is_fresh(fspec.relpath, fspec.checksum_key, dest):
            return dest
        corrupt = check_file(dest, fspec)
        if corrupt is None:
            job.stamps.record(fspec.relpath, fspec.checksum_key, dest)
            return dest
        job.stamps.forget(fspec.relpath)
        logger.warning("%s in the data home is corrupt (%s); replacing it with a verified copy if one is available",
                       dest, corrupt)
    attempts = _Attempts()
    if _copy_from_mirror(job, fspec, dest, attempts) or _download(job, fspec, dest, attempts):
        job.stamps.record(fspec.relpath, fspec.checksum_key, dest)
        return dest
    if corrupt is not None:  # the data home's copy is bad and nothing can replace it
        attempts.reasons.insert(0, f"{dest} in the data home is corrupt ({corrupt})")
        attempts.checksum_failed = True
    raise _Unavailable(fspec.relpath, attempts.reasons, checksum=attempts.checksum_failed)


@dataclass
class _Attempts:
    """Why each source failed, and whether any failure was a checksum mismatch."""

    reasons: list[str] = dataclasses.field(default_factory=list)
    checksum_failed: bool = False

    def checksum(self, exc: ChecksumError) -> None:
        logger.error("%s", exc)
        self.reasons.append(str(exc))
        self.checksum_failed = True


def _copy_from_mirror(job: _Fetch, fspec: FileSpec, dest: Path, attempts: _Attempts) -> bool:
    source = _mirror_source(job.spec, fspec.relpath)
    if source is None:
        return False
    if not source.is_file():
        attempts.reasons.append(f"not in the mirror at {source}")
        return False
    try:
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
            problem = check_file(tmp, fspec)
            if problem:
                raise ChecksumError(f"mirror file {source}: {problem}")
            _umask_permissions(tmp)
    except ChecksumError as exc:
        attempts.checksum(exc)
        return False
    logger.info("copied %s from the mirror", fspec.relpath)
    return True


def _download(job: _Fetch, fspec: FileSpec, dest: Path, attempts: _Attempts) -> bool:
    from repalign.data._download import NetworkUnavailable, download_verified

    if not fspec.urls:
        attempts.reasons.append("no upstream download is known")
        return False
    convert = _resolve_callable(fspec.convert) if fspec.convert else None
    for url in fspec.urls:
        if job.offline:
            attempts.reasons.append("downloads are disabled or the network is unreachable")
            return False

        def verify(downloaded, final_tmp: Path, url: str = url) -> None:
            problem = check_file(final_tmp, fspec)
            if problem is None and fspec.md5 and convert is None and downloaded.md5 != fspec.md5:
                problem = f"md5 {downloaded.md5} differs from the expected {fspec.md5}"
            if problem:
                raise ChecksumError(f"download from {url}: {problem}")
            _umask_permissions(final_tmp)

        try:
            download_verified(url, dest, verify=verify, convert=convert, progress=job.progress,
                              label=f"{job.spec.name}: {fspec.relpath}")
            return True
        except NetworkUnavailable as exc:
            job.offline = True  # do not wait on every other file of this fetch
            attempts.reasons.append(str(exc))
        except ChecksumError as exc:
            attempts.checksum(exc)
        except MissingDataError as exc:  # HTTP error, truncated transfer: try the next URL
            attempts.reasons.append(str(exc))
    return False


def _raise_unavailable(job: _Fetch, failures: list[_Unavailable], n_total: int) -> NoReturn:
    spec, shown = job.spec, ", ".join(f.relpath for f in failures[:3])
    more = f" and {len(failures) - 3} more" if len(failures) > 3 else ""
    first = failures[0]
    reasons = "; ".join(first.reasons)
    if any(f.checksum for f in failures):
        bad = next(f for f in failures if f.checksum)
        raise ChecksumError(
            f"Dataset '{spec.name}': no verified copy of {bad.relpath} ({'; '.join(bad.reasons)}). "
            "Files that fail their checksum are never used: delete or replace the bad copy, then fetch again."
        )
    where = f"{job.folder}/" if len(failures) > 1 else str(job.folder / first.relpath)
    mirror_hint = (
        f"set REPALIGN_MIRROR to a folder holding {spec.mirror_path or '.'}/"
        if spec.mirror_path is not None
        else "no mirror layout is defined for it"
    )
    raise MissingDataError(
        f"Dataset '{spec.name}': {len(failures)} of {n_total} file(s) not available ({shown}{more}; {reasons}). "
        f"To provide it: {mirror_hint}, or place the files at {where}, "
        "or run `repalign data fetch " + spec.name + "` on a machine with internet."
    )


def fetch(name: str, *, progress: bool = True) -> Path:
    """Make every file of dataset ``name`` present and verified in the data home.

    Returns:
        The dataset's folder in the data home (``$REPALIGN_DATA_HOME/<name>``). For archive
        datasets (CIFAR) it contains the extracted folder (e.g. ``cifar-10-batches-py/``).

    Raises:
        UnknownNameError: no such dataset.
        MissingDataError: some file is available nowhere (one error naming them all).
        ChecksumError: the only available copy of some file fails its checksum.
    """
    spec = get_dataset(name)
    job = _Fetch(spec, data_home() / spec.name, progress, _Stamps(data_home() / spec.name))
    try:
        if spec.archive is not None:
            _ensure_archive(job)
            return job.folder
        failures: list[_Unavailable] = []
        with _FileProgress(progress, spec.name, len(spec.files)) as advance:
            for fspec in spec.files:
                try:
                    _ensure_file(job, fspec)
                except _Unavailable as exc:
                    failures.append(exc)
                advance()
        if failures:
            _raise_unavailable(job, failures, len(spec.files))
        return job.folder
    finally:
        job.stamps.save()


def fetch_file(name: str, relpath: str, *, progress: bool = True) -> Path:
    """Make one file of dataset ``name`` present and verified; return its path.

    For archive datasets, ``relpath`` is a path inside the dataset folder after
    extraction (e.g. ``"cifar-10-batches-py/test_batch"``); the archive is fetched as a whole.
    """
    spec = get_dataset(name)
    if spec.archive is not None:
        folder = fetch(name, progress=progress)
        path = folder / relpath
        if not path.is_file():
            extracted = (_read_json(folder / EXTRACTED_NAME) or {}).get("files", {})
            raise unknown_name(f"file of dataset '{name}'", relpath, extracted)
        return path
    fspec = spec.file(relpath)
    job = _Fetch(spec, data_home() / spec.name, progress, _Stamps(data_home() / spec.name))
    try:
        return _ensure_file(job, fspec)
    except _Unavailable as exc:
        _raise_unavailable(job, [exc], 1)
    finally:
        job.stamps.save()


class _FileProgress:
    """A files-done progress bar for datasets with many files (e.g. 120 images)."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled = enabled and total > 1
        self.label, self.total = label, total

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=Console(stderr=True), transient=True
        )
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.update(task, advance=1)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


# --------------------------------------------------------------------------- archives


def _check_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Refuse members that could write outside the extraction folder or are not plain files/folders."""
    members = tar.getmembers()
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")):
            raise InputError(f"Refusing to extract {archive.name}: member '{member.name}' points outside its folder")
        if not (member.isfile() or member.isdir()):
            raise InputError(f"Refusing to extract {archive.name}: member '{member.name}' is a link or special file")
    return members


def _extract_verified_archive(job: _Fetch, archive: Path) -> None:
    """Extract (safely) into a temporary folder, hash every file, then move into place."""
    spec = job.spec.archive
    assert spec is not None
    target = job.folder / spec.extract_to
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=job.folder) as tmp:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _check_members(tar, archive)
                # Python's own "data" filter as a second line of defence, where available (3.10.12+/3.11.4+).
                safety = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **safety)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise InputError(f"Cannot extract {archive}: {exc}") from exc
        extracted = Path(tmp) / spec.extract_to
        if not extracted.is_dir():
            raise InputError(f"Archive {archive.name} does not contain the expected folder '{spec.extract_to}/'")
        files = {
            str(PurePosixPath(spec.extract_to) / p.relative_to(extracted).as_posix()): sha256_file(p)
            for p in sorted(extracted.rglob("*"))
            if p.is_file()
        }
        if target.exists():
            shutil.rmtree(target)
        os.replace(extracted, target)
    write_json_atomic(job.folder / EXTRACTED_NAME, {"archive_sha256": spec.sha256, "files": files})
    for relpath in files:
        job.stamps.record(relpath, _extracted_key(files[relpath]), job.folder / relpath)


def _extracted_key(sha256: str) -> str:
    return f"{sha256}|"


def _verify_extracted(folder: Path, archive: ArchiveSpec, stamps: _Stamps, *, full: bool) -> list[dict] | None:
    """Per-file records for an extracted archive, or None when it was never extracted."""
    record = _read_json(folder / EXTRACTED_NAME)
    if not record or record.get("archive_sha256") != archive.sha256:
        return None
    out = []
    for relpath, sha in record["files"].items():
        path = folder / relpath
        if not path.is_file():
            out.append({"file": relpath, "status": "missing", "detail": f"{path} is missing"})
        elif not full and stamps.is_fresh(relpath, _extracted_key(sha), path):
            out.append({"file": relpath, "status": "ok", "detail": "stamp"})
        elif (actual := sha256_file(path)) == sha:
            stamps.record(relpath, _extracted_key(sha), path)
            out.append({"file": relpath, "status": "ok", "detail": ""})
        else:
            stamps.forget(relpath)
            out.append({"file": relpath, "status": "corrupt", "detail": f"sha256 {actual} differs from the expected {sha}"})
    return out


def _ensure_archive(job: _Fetch) -> None:
    archive = job.spec.archive
    assert archive is not None
    records = _verify_extracted(job.folder, archive, job.stamps, full=False)
    if records is not None:
        problems = [r for r in records if r["status"] != "ok"]
        if not problems:
            return
        logger.warning("%d extracted file(s) of '%s' are damaged (%s: %s); extracting a verified archive again",
                       len(problems), job.spec.name, problems[0]["file"], problems[0]["detail"])
    job.folder.mkdir(parents=True, exist_ok=True)
    try:
        archive_path = _ensure_file(job, archive.as_file())
    except _Unavailable as exc:
        _raise_unavailable(job, [exc], 1)
    _extract_verified_archive(job, archive_path)
    # The extracted files carry the archive's verified content; the archive itself is not kept.
    archive_path.unlink(missing_ok=True)
    job.stamps.forget(archive.filename)


# --------------------------------------------------------------------------- verify / info


def verify(name: str | None = None, *, full: bool = True) -> list[dict]:
    """Check the files in the data home against their checksums.

    Args:
        name: one dataset, or ``None`` for every dataset that has a folder in the data home.
        full: re-hash every file (default). ``False`` trusts verification stamps whose size
            and mtime still match.

    Returns:
        One record per file: ``{"dataset", "file", "status", "detail"}`` with status
        ``"ok"``, ``"corrupt"`` (checksum mismatch; the file is reported, never replaced
        here), ``"missing"``, or -- one record per dataset when ``name`` is None --
        ``"absent"`` for datasets never fetched. Problems are the corrupt and missing records.
    """
    names = [get_dataset(name).name] if name is not None else list_datasets()
    records: list[dict] = []
    for dataset in names:
        spec = DATASETS[dataset]
        folder = data_home() / dataset
        if name is None and not folder.is_dir():
            records.append({"dataset": dataset, "file": "", "status": "absent", "detail": "not fetched"})
            continue
        stamps = _Stamps(folder)
        if spec.archive is not None:
            rows = _verify_extracted(folder, spec.archive, stamps, full=full)
            if rows is None:
                rows = [{"file": spec.archive.extract_to, "status": "missing", "detail": "archive not extracted"}]
        else:
            rows = [_verify_one(folder, fspec, stamps, full=full) for fspec in spec.files]
        records.extend({"dataset": dataset, **row} for row in rows)
        stamps.save()
    return records


def _verify_one(folder: Path, fspec: FileSpec, stamps: _Stamps, *, full: bool) -> dict:
    path = folder / fspec.relpath
    if not path.is_file():
        return {"file": fspec.relpath, "status": "missing", "detail": f"{path} is missing"}
    if not full and stamps.is_fresh(fspec.relpath, fspec.checksum_key, path):
        return {"file": fspec.relpath, "status": "ok", "detail": "stamp"}
    problem = check_file(path, fspec)
    if problem is None:
        stamps.record(fspec.relpath, fspec.checksum_key, path)
        return {"file": fspec.relpath, "status": "ok", "detail": ""}
    stamps.forget(fspec.relpath)
    return {"file": fspec.relpath, "status": "corrupt", "detail": problem}


def dataset_status(name: str) -> str:
    """Where the dataset would come from right now, without hashing anything.

    ``"present"`` (all files in the data home), ``"mirror"`` (all in ``$REPALIGN_MIRROR``),
    ``"download"`` (all have an upstream URL), else ``"unavailable"``.
    """
    spec = get_dataset(name)
    folder = data_home() / spec.name
    if spec.archive is not None:
        if _read_json(folder / EXTRACTED_NAME) and (folder / spec.archive.extract_to).is_dir():
            return "present"
        fspecs = [spec.archive.as_file()]
    else:
        if all((folder / f.relpath).is_file() for f in spec.files):
            return "present"
        fspecs = list(spec.files)
    if all((src := _mirror_source(spec, f.relpath)) is not None and src.is_file() for f in fspecs):
        return "mirror"
    if all(f.urls for f in fspecs):
        return "download"
    return "unavailable"


def dataset_info(name: str) -> dict:
    """Provenance and location of a dataset, as a flat dict (for ``repalign data info``)."""
    spec = get_dataset(name)
    fspecs = [spec.archive.as_file()] if spec.archive else list(spec.files)
    sizes = [f.size for f in fspecs]
    root = mirror_dir()
    urls = [u for f in fspecs for u in f.urls]
    return {
        "name": spec.name,
        "description": spec.description,
        "status": dataset_status(name),
        "n_files": len(fspecs),
        "size_bytes": sum(sizes) if all(s is not None for s in sizes) else None,
        "data_home_path": str(data_home() / spec.name),
        "mirror_path": str(root / spec.mirror_path) if root is not None and spec.mirror_path is not None else None,
        "upstream": urls[0] if len(urls) == 1 else (f"{urls[0]} (+{len(urls) - 1} more)" if urls else None),
        "archive": spec.archive.filename if spec.archive else None,
        "checksums": "sha256" + (" + content-sha256" if any(f.content_sha256 for f in fspecs) else "")
        + (" + md5" if any(f.md5 for f in fspecs) else ""),
        "license": spec.license,
        "citation": spec.citation,
        "homepage": spec.homepage,
    }


# --------------------------------------------------------------------------- built-in datasets


def _table(name: str) -> dict[str, dict]:
    """The bundled checksum table of a dataset: relpath -> {sha256, content_sha256, size}."""
    path = resources.files("repalign").joinpath("resources", "checksums", f"{name}.json")
    return json.loads(path.read_text())["files"]


def checksum_record(path: str | os.PathLike, relpath: str) -> dict:
    """The checksum-table entry of one file (used to write ``resources/checksums/*.json``)."""
    path = Path(path)
    record: dict[str, Any] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    if relpath.endswith((".gz", ".npz")):
        record["content_sha256"] = _content_sha256(path, relpath)
    return record


def _files_from_table(name: str, url_for: Callable[[str], tuple[str, ...]], **extra: Any) -> tuple[FileSpec, ...]:
    return tuple(
        FileSpec(
            relpath,
            sha256=rec["sha256"],  # the mirror's bytes; upstream gzips may differ, then content decides
            content_sha256=rec.get("content_sha256"),
            size=rec.get("size"),
            urls=url_for(relpath),
            **extra,
        )
        for relpath, rec in sorted(_table(name).items())
    )


_GITHUB_RAW = "https://raw.githubusercontent.com"
_MEMGRID = f"{_GITHUB_RAW}/AhmedAlSunbati712/memgrid/834e08e677cf4ac316d7076065ef5609ce5d58b3/handoff/data"
_TIMM_RESULTS = {
    "2022-07-27": "e987e29036507b014bb2aef0bf3b3f5c7bcff273",
    "2025-10-30": "4e5207c7bb6592474ca56e28b2cf85be8f1a550f",
}
_CORAL = f"{_GITHUB_RAW}/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41"
_CIFAR_RESNET = f"{_GITHUB_RAW}/akamaster/pytorch_resnet_cifar10/d5489e8995e81e91ce6b1d69dcc98ad579b0b153"
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist")
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
_CIFAR = "https://www.cs.toronto.edu/~kriz"

_PETERSON_CITATION = (
    "Peterson, J. C., Abbott, J. T., & Griffiths, T. L. (2018). Evaluating (and improving) the "
    "correspondence between deep neural networks and human representations. Cognitive Science, 42(8), 2648-2669."
)
_CIFAR_CITATION = "Krizhevsky, A. (2009). Learning multiple layers of features from tiny images. Tech. report, U. Toronto."
_TIMM_CITATION = "Wightman, R. (2019). PyTorch Image Models. GitHub, doi:10.5281/zenodo.4414861."


def _builtin_datasets() -> list[DatasetSpec]:
    specs = [
        DatasetSpec(
            "peterson-similarity",
            "Peterson et al. (2018) human similarity matrices, 6 domains x 120 stimuli",
            license="none stated; research use only",
            citation=_PETERSON_CITATION,
            homepage="https://github.com/AhmedAlSunbati712/memgrid",
            mirror_path="peterson",
            # Upstream ships a pickle; it is read with the restricted unpickler and stored as
            # .npz, verified by the content hash of its arrays.
            files=_files_from_table(
                "peterson-similarity",
                lambda rel: (f"{_MEMGRID}/datasets_peterson.pkl",),
                convert="repalign.data.human:convert_peterson_pickle",
            ),
        ),
    ]
    for domain, size in (("animals", "300x300"), ("fruits", "500x500")):
        specs.append(
            DatasetSpec(
                f"peterson-images-{domain}",
                f"Peterson et al. (2018) {domain} stimuli: 120 PNG images, {size}",
                license="none stated; research use only",
                citation=_PETERSON_CITATION,
                homepage="https://github.com/AhmedAlSunbati712/memgrid",
                mirror_path=f"peterson/images/{domain}",
                files=_files_from_table(f"peterson-images-{domain}", lambda rel, d=domain: (f"{_MEMGRID}/{d}/{rel}",)),
            )
        )
    specs += [
        DatasetSpec(
            "mnist",
            "MNIST handwritten digits, IDX format (60k train / 10k test)",
            license="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
            citation="LeCun, Y., Bottou, L., Bengio, Y., & Haffner, P. (1998). Gradient-based learning applied "
            "to document recognition. Proc. IEEE 86(11), 2278-2324.",
            homepage="http://yann.lecun.com/exdb/mnist/",
            mirror_path="mnist",
            files=_files_from_table("mnist", lambda rel: tuple(f"{base}/{rel}" for base in _MNIST_MIRRORS)),
        ),
        DatasetSpec(
            "fashion_mnist",
            "Fashion-MNIST clothing images, IDX format (60k train / 10k test)",
            license="MIT",
            citation="Xiao, H., Rasul, K., & Vollgraf, R. (2017). Fashion-MNIST: a novel image dataset for "
            "benchmarking machine learning algorithms. arXiv:1708.07747.",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            mirror_path="fashion_mnist",
            files=_files_from_table("fashion_mnist", lambda rel: (f"{_FASHION}/{rel}",)),
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR-10, python pickle batches (50k train / 10k test, 10 classes)",
            license="none stated; research use",
            citation=_CIFAR_CITATION,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            mirror_path="cifar10",
            # sha256 as pinned by Keras/torchvision datasets; md5 as published by torchvision.
            archive=ArchiveSpec(
                "cifar-10-python.tar.gz",
                sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                md5="c58f30108f718f92721af3b95e74349a",
                size=170498071,
                extract_to="cifar-10-batches-py",
                urls=(f"{_CIFAR}/cifar-10-python.tar.gz",),
            ),
        ),
        DatasetSpec(
            "cifar100",
            "CIFAR-100, python pickle files (50k train / 10k test, 100 classes)",
            license="none stated; research use",
            citation=_CIFAR_CITATION,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            mirror_path="cifar100",
            archive=ArchiveSpec(
                "cifar-100-python.tar.gz",
                sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                md5="eb9058c3a382ffc7106e4002c42a8d85",
                size=169001437,
                extract_to="cifar-100-python",
                urls=(f"{_CIFAR}/cifar-100-python.tar.gz",),
            ),
        ),
    ]
    for date, commit in _TIMM_RESULTS.items():
        base = f"{_GITHUB_RAW}/huggingface/pytorch-image-models/{commit}/results"
        specs.append(
            DatasetSpec(
                f"timm-results-{date}",
                f"timm published ImageNet / OOD results @ {commit[:7]} ({date})",
                license="Apache-2.0",
                citation=_TIMM_CITATION,
                homepage="https://github.com/huggingface/pytorch-image-models/tree/main/results",
                mirror_path=f"timm_results/{date}",
                files=_files_from_table(f"timm-results-{date}", lambda rel, b=base: (f"{b}/{rel}",)),
            )
        )
    specs += [
        DatasetSpec(
            "paper-models",
            "The 490 timm model names of Sucholutsky & Griffiths (2023), legacy names",
            license="list of names (facts); no license needed",
            citation="Sucholutsky, I., & Griffiths, T. L. (2023). Alignment with human representations supports "
            "robust few-shot learning. NeurIPS 2023.",
            homepage="https://arxiv.org/abs/2301.11990",
            mirror_path="",
            files=_files_from_table("paper-models", lambda rel: ()),  # curated list: mirror only
        ),
        DatasetSpec(
            "coral-tflite",
            "6 uint8-quantized ImageNet MobileNet TFLite models, labels and test images (Coral)",
            license="Apache-2.0",
            citation="Howard, A. G., et al. (2017). MobileNets. arXiv:1704.04861; Sandler, M., et al. (2018). "
            "MobileNetV2. CVPR.",
            homepage="https://github.com/google-coral/test_data",
            mirror_path="weights/coral_tflite",
            files=_files_from_table("coral-tflite", lambda rel: (f"{_CORAL}/{PurePosixPath(rel).name}",)),
        ),
        DatasetSpec(
            "cifar10-resnet",
            "CIFAR-10 ResNet-20/32/44/56 checkpoints (He et al. 2016 CIFAR variant)",
            license="BSD-2-Clause",
            citation="Idelbayev, Y. Proper ResNet implementation for CIFAR10/CIFAR100 in PyTorch. GitHub, "
            "akamaster/pytorch_resnet_cifar10; He, K., et al. (2016). Deep residual learning. CVPR.",
            homepage="https://github.com/akamaster/pytorch_resnet_cifar10",
            mirror_path="weights/cifar10_resnet",
            files=_files_from_table("cifar10-resnet", lambda rel: (f"{_CIFAR_RESNET}/pretrained_models/{rel}",)),
        ),
    ]
    return specs


for _spec in _builtin_datasets():
    register_dataset(_spec)
del _spec
