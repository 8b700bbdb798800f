"""What a dataset is: its files (with checksums and upstream URLs) or its archive, and the registry of them.

The built-in datasets are registered by :mod:`repalign.data.catalogue` when :mod:`repalign.data`
is imported; tests and plugins add their own with :func:`register_dataset`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from repalign._paths import data_home
from repalign.errors import InputError, unknown_name

logger = logging.getLogger(__name__)


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
