"""The data layer: datasets fetched and verified, human similarity data, image sets, few-shot datasets.

* :mod:`~repalign.data.specs` -- what a dataset is (files or an archive, checksums, URLs)
  and the registry of datasets; :mod:`~repalign.data.catalogue` -- the built-in ones;
* :mod:`~repalign.data._fetch` -- :func:`fetch` / :func:`fetch_file`: data home, then the
  mirror (``$REPALIGN_MIRROR``), then a verified download; :func:`verify`; ``with
  read_only():`` uses only what is present, in place, and writes nothing (dry runs);
* :mod:`~repalign.data.human` -- human similarity data (:func:`load_human`);
* :mod:`~repalign.data.judgments` -- explicit human triplet judgments;
* :mod:`~repalign.data.images` -- image sets; :mod:`~repalign.data.fewshot_datasets` --
  labelled few-shot datasets;
* :mod:`~repalign.data.sources` -- :func:`load_dataset_images`: the images of an image folder,
  a human dataset or a few-shot dataset, whichever a name or path means.

Importing this package registers the built-in datasets; it never imports torch.
"""

from __future__ import annotations

from repalign.data import catalogue as _catalogue  # noqa: F401  (registers the built-in datasets)
from repalign.data._checksums import STAMP_NAME, check_file, npz_content_sha256
from repalign.data._fetch import (
    dataset_info,
    dataset_status,
    describe_status,
    downloads_disabled,
    fetch,
    fetch_file,
    read_only,
    verify,
)
from repalign.data.catalogue import checksum_record
from repalign.data.sources import DATASET_KINDS, DatasetImages, load_dataset_images
from repalign.data.specs import (
    DATASETS,
    ArchiveSpec,
    DatasetSpec,
    FileSpec,
    dataset_dir,
    get_dataset,
    list_datasets,
    register_dataset,
    unregister_dataset,
)

__all__ = [
    "DATASETS",
    "DATASET_KINDS",
    "STAMP_NAME",
    "ArchiveSpec",
    "DatasetImages",
    "DatasetSpec",
    "FileSpec",
    "check_file",
    "checksum_record",
    "dataset_dir",
    "dataset_info",
    "dataset_status",
    "describe_status",
    "downloads_disabled",
    "fetch",
    "fetch_file",
    "get_dataset",
    "list_datasets",
    "load_dataset_images",
    "npz_content_sha256",
    "read_only",
    "register_dataset",
    "unregister_dataset",
    "verify",
]
