"""Labelled image datasets for few-shot transfer: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100
and any ImageFolder-style directory.

Registered datasets are read through :mod:`repalign.data` (verified copies from the
mirror or upstream). A path may point at a folder in one of the same layouts (IDX gzips, an
extracted CIFAR "python" tarball) or at an ImageFolder tree (one sub-folder of images per
class). CIFAR batches are pickles, i.e. untrusted code: they are read with
:func:`repalign._safe_pickle.safe_load`, never plain :mod:`pickle`.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repalign._options import DEFAULT_FEWSHOT_SPLIT
from repalign._options import FEWSHOT_SPLITS as SPLITS
from repalign.data.images import ArrayImageSet, FileImageSet, ImageSet, list_image_files
from repalign.errors import InputError, MissingDataError, unknown_name

log = logging.getLogger(__name__)

_IDX_FILES = {
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
}
_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_FILES = {
    "test": ("test_batch",),
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
}
_CIFAR100_DIR = "cifar-100-python"
_CIFAR100_FILES = {"test": ("test",), "train": ("train",)}

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Registered dataset names (also the registry's names).
FEWSHOT_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


@dataclass(frozen=True, eq=False)
class FewShotDataset:
    """A labelled image set.

    Attributes:
        name: "mnist", "fashion_mnist", "cifar10", "cifar100" or the folder's name.
        images: the images, in dataset order (grayscale is converted to RGB on load).
        labels: (n_images,) int64 class indices into ``class_names``.
        class_names: one name per class.
        split: "test" or "train" for registered datasets, "folder" for an ImageFolder tree.
    """

    name: str
    images: ImageSet
    labels: np.ndarray
    class_names: tuple[str, ...]
    split: str = "test"

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise InputError(f"Dataset '{self.name}' has {len(self.images)} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)


def load_fewshot_dataset(name_or_path: str | os.PathLike, *, split: str = DEFAULT_FEWSHOT_SPLIT) -> FewShotDataset:
    """Load a registered dataset by name, or a dataset folder by path.

    Args:
        name_or_path: "mnist", "fashion_mnist", "cifar10", "cifar100", or a folder holding IDX
            gzips, an extracted CIFAR python tarball, or class sub-folders of images.
        split: "test" (the study's protocol draws shots and evaluation from it) or "train".
            Ignored for ImageFolder trees.
    """
    if split not in SPLITS:
        raise InputError(f"Unknown split '{split}': expected one of {', '.join(SPLITS)}.")
    if isinstance(name_or_path, str) and name_or_path in FEWSHOT_DATASETS:
        return _load_registered(name_or_path, split)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_folder(path, split)
    if path.exists():
        raise InputError(f"Few-shot dataset path {path} is a file; expected a dataset folder.")
    if isinstance(name_or_path, str) and os.sep not in name_or_path:
        raise unknown_name("few-shot dataset", name_or_path, FEWSHOT_DATASETS)
    raise MissingDataError(f"Few-shot dataset folder not found: {path}")


# ---------------------------------------------------------------------------------- registered


def _load_registered(name: str, split: str) -> FewShotDataset:
    from repalign.data import _fetch as registry

    if name in ("mnist", "fashion_mnist"):
        image_file, label_file = _IDX_FILES[split]
        images = read_idx(registry.fetch_file(name, image_file))
        labels = read_idx(registry.fetch_file(name, label_file))
        classes = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
        return _idx_dataset(name, images, labels, classes, split)
    if name == "cifar10":
        files = [registry.fetch_file(name, f"{_CIFAR10_DIR}/{f}") for f in _CIFAR10_FILES[split]]
        meta = registry.fetch_file(name, f"{_CIFAR10_DIR}/batches.meta")
        return _cifar_dataset(name, files, meta, split, fine=False)
    files = [registry.fetch_file(name, f"{_CIFAR100_DIR}/{f}") for f in _CIFAR100_FILES[split]]
    meta = registry.fetch_file(name, f"{_CIFAR100_DIR}/meta")
    return _cifar_dataset(name, files, meta, split, fine=True)


def _load_folder(path: Path, split: str) -> FewShotDataset:
    for root in (path, path / _CIFAR10_DIR):
        if (root / "batches.meta").is_file():
            files = [root / f for f in _CIFAR10_FILES[split]]
            return _cifar_dataset(path.name, files, root / "batches.meta", split, fine=False)
    for root in (path, path / _CIFAR100_DIR):
        if (root / "meta").is_file() and any((root / f).is_file() for f in ("test", "train")):
            files = [root / f for f in _CIFAR100_FILES[split]]
            return _cifar_dataset(path.name, files, root / "meta", split, fine=True)
    image_file, label_file = _IDX_FILES[split]
    if (path / image_file).is_file() or (path / label_file).is_file():
        images, labels = read_idx(path / image_file), read_idx(path / label_file)
        n_classes = int(labels.max()) + 1 if labels.size else 0
        return _idx_dataset(path.name, images, labels, tuple(str(i) for i in range(n_classes)), split)
    return load_image_folder(path)


# ---------------------------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST's format; gzip-compressed or plain) of unsigned bytes.

    Returns:
        (n,) labels or (n, rows, cols) images, uint8.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"Cannot read IDX file {path}: {exc}. Delete it and fetch it again.") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}).")
    if data[2] != 0x08:
        raise InputError(f"{path}: IDX element type 0x{data[2]:02x} is not supported (expected 0x08, unsigned byte).")
    ndim = data[3]
    if ndim not in (1, 3):
        raise InputError(f"{path}: IDX file has {ndim} dimensions; expected 1 (labels) or 3 (images).")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path}: IDX header is truncated.")
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise InputError(
            f"{path}: IDX header promises {dims} = {expected} bytes but the file holds {len(data) - header}; "
            "the file is truncated or corrupt. Delete it and fetch it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_dataset(name, images, labels, classes, split) -> FewShotDataset:
    if images.ndim != 3 or labels.ndim != 1:
        raise InputError(f"{name}: expected images (n, h, w) and labels (n,), got {images.shape} and {labels.shape}.")
    if len(images) != len(labels):
        raise InputError(f"{name}: {len(images)} images but {len(labels)} labels in the IDX files.")
    if labels.size and int(labels.max()) >= len(classes):
        raise InputError(f"{name}: label {int(labels.max())} out of range for {len(classes)} classes.")
    return FewShotDataset(
        name=name,
        images=ArrayImageSet(images, name=f"{name}:{split}"),
        labels=labels.astype(np.int64),
        class_names=tuple(classes),
        split=split,
    )


# -------------------------------------------------------------------------------------- CIFAR


def read_cifar_pickle(path: str | os.PathLike) -> dict[str, object]:
    """Read one CIFAR "python" pickle (a batch or the meta file) with the restricted unpickler.

    Keys come back as ``str`` whether the file was written by Python 2 (byte-string keys,
    the official tarballs) or Python 3.
    """
    from repalign._safe_pickle import safe_load

    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"CIFAR file not found: {path}")
    with open(path, "rb") as handle:
        obj = safe_load(handle, encoding="bytes")
    if not isinstance(obj, dict):
        raise InputError(f"{path} is not a CIFAR pickle (expected a dict, got {type(obj).__name__}).")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_dataset(name: str, files: Sequence[Path], meta_path: Path, split: str, *, fine: bool) -> FewShotDataset:
    label_key, names_key = ("fine_labels", "fine_label_names") if fine else ("labels", "label_names")
    meta = read_cifar_pickle(meta_path)
    if names_key not in meta:
        raise InputError(f"{meta_path}: CIFAR meta file has no '{names_key}' (keys: {sorted(meta)}).")
    class_names = tuple(_text(v) for v in meta[names_key])
    images, labels = [], []
    for path in files:
        batch = read_cifar_pickle(path)
        missing = {"data", label_key} - set(batch)
        if missing:
            raise InputError(f"{path}: CIFAR batch lacks {sorted(missing)} (keys: {sorted(batch)}).")
        data = np.asarray(batch["data"])
        batch_labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise InputError(f"{path}: CIFAR data must be uint8 (n, 3072); got {data.dtype} {data.shape}.")
        if len(data) != len(batch_labels):
            raise InputError(f"{path}: {len(data)} images but {len(batch_labels)} labels.")
        # Rows hold the red, green and blue 32x32 planes one after another.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    labels_all = np.concatenate(labels)
    if labels_all.size and (labels_all.min() < 0 or labels_all.max() >= len(class_names)):
        raise InputError(f"{name}: labels out of range for {len(class_names)} class names in {meta_path}.")
    return FewShotDataset(
        name=name,
        images=ArrayImageSet(np.ascontiguousarray(np.concatenate(images)), name=f"{name}:{split}"),
        labels=labels_all,
        class_names=class_names,
        split=split,
    )


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -------------------------------------------------------------------------------- ImageFolder


def load_image_folder(path: str | os.PathLike) -> FewShotDataset:
    """An ImageFolder tree: each sub-folder is a class (sorted by name) holding its images."""
    path = Path(path)
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError(
            f"{path} has no class sub-folders. Expected an ImageFolder tree (one folder of images "
            "per class), IDX gzips, or an extracted CIFAR python tarball."
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = list_image_files(class_dir)
        if not files:
            raise InputError(
                f"Class folder {class_dir} holds no image files (.png, .jpg, ...); remove it or add images."
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    log.info("ImageFolder %s: %d classes, %d images", path, len(class_dirs), len(paths))
    return FewShotDataset(
        name=path.name,
        images=FileImageSet(paths, name=path.name),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(p.name for p in class_dirs),
        split="folder",
    )
