"""Safe extraction of a verified archive, and verification of what was extracted."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from repalign._io import sha256_file, write_json_atomic
from repalign.data._checksums import EXTRACTED_NAME, _read_json, _Stamps
from repalign.data.specs import ArchiveSpec
from repalign.errors import InputError

logger = logging.getLogger(__name__)


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


def _extract_verified_archive(spec: ArchiveSpec, folder: Path, stamps: _Stamps, archive: Path) -> None:
    """Extract (safely) into a temporary folder, hash every file, then move into place."""
    target = folder / spec.extract_to
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=folder) as tmp:
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
    write_json_atomic(folder / EXTRACTED_NAME, {"archive_sha256": spec.sha256, "files": files})
    for relpath in files:
        stamps.record(relpath, _extracted_key(files[relpath]), folder / relpath)


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
            out.append(
                {"file": relpath, "status": "corrupt", "detail": f"sha256 {actual} differs from the expected {sha}"}
            )
    return out
