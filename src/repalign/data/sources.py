"""Any dataset's images by one name or path: an image folder, a human dataset or a few-shot dataset.

``repalign embed --dataset X`` takes all three kinds; :func:`load_dataset_images` decides which
kind ``X`` is and returns its images with what identifies them (stimulus names or class labels).

Example:
    >>> from repalign.data import load_dataset_images
    >>> source = load_dataset_images("peterson:animals")
    >>> source.kind, len(source.images), len(source.stimuli)
    ('human', 120, 120)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repalign.errors import InputError, RepalignError, UnknownNameError

if TYPE_CHECKING:
    from repalign.data.images import ImageSet

#: the kinds of dataset :func:`load_dataset_images` recognizes, in the order it tries them
DATASET_KINDS = ("image_folder", "human", "fewshot")


@dataclass(frozen=True, eq=False)
class DatasetImages:
    """A dataset's images and what identifies each of them.

    Attributes:
        kind: "image_folder", "human" or "fewshot" (see :data:`DATASET_KINDS`).
        images: the images in dataset order.
        stimuli: (n_images,) names: the file names of an image folder, the stimulus names of a
            human dataset; None for a few-shot dataset.
        labels: (n_images,) int64 class of each image of a few-shot dataset; None otherwise.
        name: the dataset's own name (``peterson:animals``, ``mnist``, the folder's name).
    """

    kind: str
    images: ImageSet
    stimuli: tuple[str, ...] | None = None
    labels: np.ndarray | None = None
    name: str = ""


def load_dataset_images(spec: str | os.PathLike) -> DatasetImages:
    """The images of the dataset ``spec`` names, whichever kind it is.

    ``spec`` is tried, in this order, as

    1. a folder with image files directly inside (sorted by file name; ``stimuli`` = file names);
    2. a human dataset: ``peterson:<domain>``, a manifest or a folder holding one (its stimuli);
    3. a few-shot dataset: ``mnist``, ``cifar10``, ..., or a dataset folder (its test split's labels).

    Raises:
        InputError: ``spec`` names several human datasets (e.g. ``peterson``); pick one.
        MissingDataError: a human dataset whose images are not available.
        UnknownNameError: ``spec`` is none of the three kinds (the message says why for each).
    """
    from repalign.data.fewshot_datasets import load_fewshot_dataset
    from repalign.data.human import load_human
    from repalign.data.images import FileImageSet, list_image_files

    text = os.fspath(spec)
    folder = Path(text).expanduser()
    if folder.is_dir():
        files = list_image_files(folder)
        if files:
            return DatasetImages(
                "image_folder",
                FileImageSet(files, name=folder.name),
                stimuli=tuple(p.name for p in files),
                name=folder.name,
            )

    errors = []
    try:
        datasets = load_human(text)
    except RepalignError as exc:
        errors.append(f"not a human dataset ({exc})")
    else:
        if len(datasets) != 1:
            names = ", ".join(d.name for d in datasets)
            raise InputError(f"'{text}' holds {len(datasets)} datasets ({names}); pick one, e.g. '{datasets[0].name}'")
        (human,) = datasets
        # images() raises MissingDataError naming the files when the dataset has none here
        return DatasetImages("human", human.images(), stimuli=human.stimuli, name=human.name)
    try:
        fewshot = load_fewshot_dataset(text)
    except RepalignError as exc:
        errors.append(f"not a few-shot dataset ({exc})")
    else:
        return DatasetImages("fewshot", fewshot.images, labels=np.asarray(fewshot.labels), name=fewshot.name)
    kind = "folder holds no images and is" if folder.is_dir() else "is not an image folder and"
    raise UnknownNameError(f"Dataset '{text}' {kind} " + "; ".join(errors))
