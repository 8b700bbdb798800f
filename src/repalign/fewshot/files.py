"""Few-shot transfer of embeddings computed elsewhere: an embeddings file (docs/own-data.md).

``repalign embed MODEL --dataset mnist --out f.npz`` writes every image's row with its class
label; :func:`run_fewshot_file` draws the same splits from those labels as
:func:`~repalign.fewshot.run_fewshot` draws from the dataset, and scores the same rows, so
``fewshot --embeddings f.npz`` and ``fewshot MODEL --dataset mnist`` give the same table.

Example:
    >>> from repalign.fewshot import run_fewshot_file
    >>> run_fewshot_file("mnist_pixels.npz", shots=(5,), heads="linear", seeds=3)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from repalign._options import DEFAULT_DEVICE, HEADS
from repalign.errors import InputError
from repalign.fewshot.evaluate import _check_heads, _loaded, _splits_for, evaluate_fewshot
from repalign.fewshot.settings import HeadSettings
from repalign.fewshot.splits import SplitManifest

if TYPE_CHECKING:  # pragma: no cover
    from repalign.data.fewshot_datasets import FewShotDataset


def run_fewshot_file(
    path: str | os.PathLike,
    *,
    dataset: str | os.PathLike | FewShotDataset | None = None,
    layer: str | None = None,
    shots: int | Iterable[int] | None = None,
    heads: str | Iterable[str] = HEADS,
    seeds: int | Iterable[int] | None = None,
    max_eval_per_class: int | None = None,
    splits: SplitManifest | None = None,
    per_seed: bool = False,
    split: str | None = None,
    device: str = DEFAULT_DEVICE,
    settings: HeadSettings | None = None,
) -> pd.DataFrame:
    """Few-shot accuracy of the embeddings in a file, one row per example of a dataset.

    Args:
        path: an embeddings file (:func:`repalign.embed.read_embeddings_file`) whose rows are
            the dataset's examples in its order.
        dataset: the few-shot dataset the rows belong to. None: the file's ``labels`` define
            the classes and its ``dataset`` (else the file's stem) names it. Given: its labels
            are used, and a file's own labels must equal them.
        layer: the layer of a several-layer file.
        split: the split of ``dataset`` (None: "test"); only with ``dataset``.
        Other options: as :func:`~repalign.fewshot.run_fewshot`.

    Returns:
        The :func:`~repalign.fewshot.evaluate_fewshot` table, with ``model`` and ``model_id``
        columns first when the file names its model.
    """
    from repalign.embed import read_embeddings_file

    heads = _check_heads(heads)
    file = read_embeddings_file(path, layer=layer)
    name, labels, class_names = _labels(file, dataset, split)
    splits = _splits_for(
        labels,
        splits,
        shots=shots,
        seeds=seeds,
        max_eval_per_class=max_eval_per_class,
        dataset=name,
        class_names=class_names,
    )
    used = splits.used_indices()
    # the rows the splits use, as run_fewshot embeds them: the same arrays go into the heads
    frame = evaluate_fewshot(
        file.embeddings[used],
        labels,
        heads=heads,
        splits=splits,
        per_seed=per_seed,
        dataset=name,
        feature_indices=used,
        device=device,
        settings=settings,
    )
    # the columns run_fewshot puts first, where the file names them
    for column, value in (("layer", file.layer), ("model_id", file.model_id), ("model", file.model)):
        if value is not None:
            frame.insert(0, column, value)
    return frame


def _labels(file, dataset, split: str | None) -> tuple[str, np.ndarray, tuple[str, ...] | None]:
    """(dataset name, labels of the rows, class names) from the dataset or the file."""
    if dataset is None:
        if split is not None:
            raise InputError(
                "split applies to a dataset; give the dataset with the embeddings file, or leave split out"
            )
        if file.labels is None:
            raise InputError(
                f"{file.source} has no 'labels' array: give the dataset its rows belong to (--dataset), or write "
                "the file with `repalign embed MODEL --dataset DATASET --out FILE`"
            )
        return file.dataset or Path(file.source).stem, file.labels, None
    data = _loaded(dataset, split)
    labels = np.asarray(data.labels, dtype=np.int64)
    if len(file.embeddings) != len(labels):
        raise InputError(
            f"{file.source} has {len(file.embeddings)} rows but {data.name} ({data.split}) has {len(labels)} "
            "examples; give one row per example in the dataset's order"
        )
    if file.labels is not None and not np.array_equal(file.labels, labels):
        raise InputError(
            f"{file.source}: its labels differ from those of {data.name} ({data.split}); "
            "the rows are not that dataset's examples in its order"
        )
    return data.name, labels, data.class_names
