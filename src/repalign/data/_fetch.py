"""Fetching a registered dataset into the data home, verified: data home, then mirror, then download.

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

Inside ``with read_only():`` (what ``repalign run --dry-run`` plans under) nothing is copied,
downloaded or written: a verified file is used where it already is -- the data home, else the
mirror, read in place -- and anything else is missing ("not downloaded yet").

Checksums: ``sha256`` is of the file's bytes. ``content_sha256`` is of its *content*:
the decompressed bytes of a ``.gz`` file (a re-compressed gzip is the same data), or the
arrays of a ``.npz`` file (see :func:`npz_content_sha256`; an ``.npz`` rebuilt from the
upstream pickle is the same data). A file is accepted when either matches. ``md5`` is
checked in addition on downloads where that is what upstream publishes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from repalign._io import atomic_path
from repalign._paths import data_home, mirror_dir
from repalign._progress import progress_bar
from repalign.data._archives import _extract_verified_archive, _verify_extracted
from repalign.data._checksums import EXTRACTED_NAME, _read_json, _Stamps, check_file
from repalign.data.specs import DATASETS, DatasetSpec, FileSpec, get_dataset, list_datasets
from repalign.errors import ChecksumError, MissingDataError, unknown_name

logger = logging.getLogger(__name__)


def _offline_env() -> bool:
    return os.environ.get("REPALIGN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def downloads_disabled() -> bool:
    """True when ``$REPALIGN_OFFLINE`` forbids downloads."""
    return _offline_env()


# a context variable, not a global flag: a read-only block in one thread leaves others alone
_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("repalign_data_read_only", default=False)


@contextlib.contextmanager
def read_only() -> Iterator[None]:
    """Within this block :func:`fetch` and :func:`fetch_file` never copy, download or write.

    They return verified files where they already are -- the data home, else the mirror
    (``$REPALIGN_MIRROR``), read in place -- and raise :class:`~repalign.errors.MissingDataError`
    for data that is in neither (its reason says "not downloaded yet" and the size). An
    archive dataset (CIFAR) is present only once extracted in the data home. This is how a
    dry run looks at data without fetching it.
    """
    token = _READ_ONLY.set(True)
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


@dataclass
class _Fetch:
    """State of one fetch call: its stamps, whether the network is known to be unreachable,
    and whether it may write (see :func:`read_only`)."""

    spec: DatasetSpec
    folder: Path
    progress: bool
    stamps: _Stamps
    offline: bool = dataclasses.field(default_factory=_offline_env)
    read_only: bool = dataclasses.field(default_factory=_READ_ONLY.get)

    def save_stamps(self) -> None:
        if not self.read_only:
            self.stamps.save()


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
        logger.warning(
            "%s in the data home is corrupt (%s); replacing it with a verified copy if one is available", dest, corrupt
        )
    attempts = _Attempts()
    if job.read_only:
        in_mirror = _mirror_in_place(job, fspec, attempts)
        if in_mirror is not None:
            return in_mirror
        attempts.reasons.append(_not_downloaded(fspec))
    elif _copy_from_mirror(job, fspec, dest, attempts) or _download(job, fspec, dest, attempts):
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


def _mirror_in_place(job: _Fetch, fspec: FileSpec, attempts: _Attempts) -> Path | None:
    """The mirror's copy of a file, verified and read where it is (read-only fetches)."""
    source = _mirror_source(job.spec, fspec.relpath)
    if source is None or not source.is_file():
        return None
    problem = check_file(source, fspec)
    if problem:
        attempts.checksum(ChecksumError(f"mirror file {source}: {problem}"))
        return None
    return source


_NOWHERE = "not in the data home or the mirror, and no upstream download is known"


def _not_downloaded(fspec: FileSpec) -> str:
    if not fspec.urls:
        return _NOWHERE
    return f"not downloaded yet ({_megabytes(fspec.size)} from upstream)" if fspec.size else "not downloaded yet"


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes < 1e7 else f"{n_bytes / 1e6:.0f} MB"


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
            download_verified(
                url,
                dest,
                verify=verify,
                convert=convert,
                progress=job.progress,
                label=f"{job.spec.name}: {fspec.relpath}",
            )
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
        "or run `repalign data fetch " + spec.name + "` on a machine with internet.",
        dataset=spec.name,
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
        paths: list[Path] = []
        # a files-done bar for datasets with many files (e.g. 120 images)
        with progress_bar(spec.name, len(spec.files), enabled=progress and len(spec.files) > 1) as advance:
            for fspec in spec.files:
                try:
                    paths.append(_ensure_file(job, fspec))
                except _Unavailable as exc:
                    failures.append(exc)
                advance()
        if failures:
            _raise_unavailable(job, failures, len(spec.files))
        return _one_folder(job, paths) if job.read_only else job.folder
    finally:
        job.save_stamps()


def _one_folder(job: _Fetch, paths: list[Path]) -> Path:
    """Read-only fetches find each file where it is: the folder that holds all of them."""
    mirror = _mirror_source(job.spec, "")
    for folder in (job.folder, mirror):
        if folder is not None and all(p == folder / f.relpath for p, f in zip(paths, job.spec.files)):
            return folder
    raise MissingDataError(
        f"Dataset '{job.spec.name}' is partly in the data home ({job.folder}) and partly in the mirror; "
        f"run `repalign data fetch {job.spec.name}` to complete the data home's copy"
    )


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
        job.save_stamps()


def _ensure_archive(job: _Fetch) -> None:
    archive = job.spec.archive
    assert archive is not None
    records = _verify_extracted(job.folder, archive, job.stamps, full=False)
    if records is not None:
        problems = [r for r in records if r["status"] != "ok"]
        if not problems:
            return
        logger.warning(
            "%d extracted file(s) of '%s' are damaged (%s: %s); extracting a verified archive again",
            len(problems),
            job.spec.name,
            problems[0]["file"],
            problems[0]["detail"],
        )
    if job.read_only:  # an archive is usable only once extracted into the data home
        archive_file = archive.as_file()
        in_mirror = _mirror_source(job.spec, archive.filename)
        reason = (
            f"in the mirror at {in_mirror}, not extracted into the data home yet"
            if in_mirror is not None and in_mirror.is_file()
            else _not_downloaded(archive_file)
        )
        _raise_unavailable(job, [_Unavailable(archive.filename, [reason], checksum=False)], 1)
    job.folder.mkdir(parents=True, exist_ok=True)
    try:
        archive_path = _ensure_file(job, archive.as_file())
    except _Unavailable as exc:
        _raise_unavailable(job, [exc], 1)
    _extract_verified_archive(archive, job.folder, job.stamps, archive_path)
    # The extracted files carry the archive's verified content; the archive itself is not kept.
    archive_path.unlink(missing_ok=True)
    job.stamps.forget(archive.filename)


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


def describe_status(name: str) -> str:
    """:func:`dataset_status` in words, for plans: "in the data home", "in the mirror",
    "not downloaded yet (169 MB from upstream)" -- adding that downloads are off when
    ``$REPALIGN_OFFLINE`` says so -- or that no source is known. Reads nothing but names."""
    status = dataset_status(name)
    if status == "present":
        return "in the data home"
    if status == "mirror":
        return "in the mirror; a run copies it into the data home"
    if status == "unavailable":
        return _NOWHERE
    spec = get_dataset(name)
    sizes = [f.size for f in ([spec.archive.as_file()] if spec.archive else spec.files)]
    size = sum(sizes) if all(sizes) else None
    words = f"not downloaded yet ({_megabytes(size)} from upstream)" if size else "not downloaded yet"
    if _offline_env():
        words += "; downloads are off (REPALIGN_OFFLINE) and no mirror holds it"
    return words


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
        "checksums": "sha256"
        + (" + content-sha256" if any(f.content_sha256 for f in fspecs) else "")
        + (" + md5" if any(f.md5 for f in fspecs) else ""),
        "license": spec.license,
        "citation": spec.citation,
        "homepage": spec.homepage,
    }
