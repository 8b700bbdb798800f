"""The few-shot grid of several models at once: :func:`evaluate_fewshot_many`.

A study scores many models on the same splits (a split depends only on the labels, the
seed, the shots and the cap). Their fits can therefore share the batched groups of
:mod:`repalign.fewshot._heads`: the models' features are stacked row-wise, each model's
tasks index its own block of rows, and all seeds of all models with one number of shots
train as one tensor program. The groups are per feature dimension: models of the same
dimension train together, others in their own groups (zero-padding to a common dimension
would leave the linear head's optimum unchanged, but change the MLP heads' initial weights
and dropout draws, and cost the padded arithmetic; see docs/fewshot.md).

The results equal :func:`~repalign.fewshot.evaluate_fewshot` called per model: every task
keeps its own random draws, seeded by (seed, shots, head) as there, and a task's result
does not depend on the other tasks of its batch (up to float rounding of batched products).

Example:
    >>> from repalign.fewshot import evaluate_fewshot_many
    >>> evaluate_fewshot_many({"a": features_a, "b": features_b}, labels, shots=(1, 5), seeds=5)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from repalign._device import resolve_device
from repalign._options import DEFAULT_DEVICE, HEADS
from repalign.errors import InputError
from repalign.fewshot.evaluate import (
    PER_SEED_COLUMNS,
    _checked_grid,
    checked_features,
    grid_tasks,
    per_seed_records,
    summarize,
)
from repalign.fewshot.settings import HeadSettings
from repalign.fewshot.splits import SplitManifest

log = logging.getLogger(__name__)


def evaluate_fewshot_many(
    features_by_model: Mapping[str, np.ndarray],
    labels,
    *,
    shots: int | Iterable[int] | None = None,
    heads: str | Iterable[str] = HEADS,
    seeds: int | Iterable[int] | None = None,
    max_eval_per_class: int | None = None,
    splits: SplitManifest | None = None,
    per_seed: bool = False,
    dataset: str = "features",
    feature_indices: Sequence[int] | None = None,
    device: str = DEFAULT_DEVICE,
    settings: HeadSettings | None = None,
) -> pd.DataFrame:
    """:func:`~repalign.fewshot.evaluate_fewshot` for several models on the same splits, fitted together.

    Args:
        features_by_model: model name -> its (n_rows, d) features of the same examples
            (row i is example i, or ``feature_indices[i]``); the dimension d may differ
            between models (models of equal d are batched together).
        labels, shots, heads, seeds, max_eval_per_class, splits, per_seed, dataset,
        feature_indices, device, settings: as :func:`~repalign.fewshot.evaluate_fewshot`;
            ``feature_indices`` is shared by all models (the study embeds
            ``splits.used_indices()`` for each).

    Returns:
        :func:`~repalign.fewshot.evaluate_fewshot`'s table with a ``model`` column first,
        models in the order given: the same numbers as calling it per model.

    Memory: the features of all models of one dimension are stacked (one float32 copy of
    the rows the splits use); a caller with many large models passes them in chunks.
    """
    import torch

    from repalign.fewshot._heads import fit_and_score

    if not isinstance(features_by_model, Mapping) or not features_by_model:
        raise InputError(
            "features_by_model must be a non-empty mapping of model name -> (n_examples, n_features) array; "
            "call evaluate_fewshot for a single feature matrix."
        )
    names = list(features_by_model)
    for name in names:
        if not isinstance(name, str) or not name:
            raise InputError(f"Model names must be non-empty strings; got {name!r}.")
    checked = {}
    for name in names:
        features, labels_checked, rows_of_example = checked_features(
            features_by_model[name], labels, feature_indices, what=f"features of model '{name}'"
        )
        checked[name] = features
    labels = labels_checked
    heads, splits, keys, classes, targets = _checked_grid(
        labels, heads, splits, shots=shots, seeds=seeds, max_eval_per_class=max_eval_per_class, dataset=dataset
    )
    settings = settings or HeadSettings()
    # Only the rows some split uses are stacked (with a cap on evaluation examples, a small
    # part of a dataset): the rows of the used examples, in example order.
    used = splits.used_indices()
    rows = used if rows_of_example is None else rows_of_example[used]
    if (rows < 0).any():
        raise InputError("feature_indices does not cover every example the splits use; embed splits.used_indices().")
    compact_rows = np.full(len(labels), -1, dtype=np.int64)
    compact_rows[used] = np.arange(len(used))
    row_targets = targets[used]

    torch_device = torch.device(resolve_device(device))
    by_dimension: dict[int, list[str]] = {}
    for name in names:
        by_dimension.setdefault(checked[name].shape[1], []).append(name)
    per_model: dict[str, list[dict]] = {name: [] for name in names}
    for dim, members in by_dimension.items():
        x = _stacked(checked, members, rows, torch_device)
        y = torch.as_tensor(np.tile(row_targets, len(members)), device=torch_device)
        tasks = []
        for m in range(len(members)):
            tasks += grid_tasks(splits, keys, compact_rows, offset=m * len(used), source=m)
        for head in heads:
            start = time.perf_counter()
            accuracies = fit_and_score(head, x, y, tasks, n_classes=len(classes), settings=settings)
            log.info(
                "few-shot %s on %s: %d fits of %d models (%d-d) in %.2fs",
                head,
                dataset,
                len(tasks),
                len(members),
                dim,
                time.perf_counter() - start,
            )
            for m, name in enumerate(members):
                per_model[name] += per_seed_records(
                    dataset, head, keys, accuracies[m * len(keys) : (m + 1) * len(keys)]
                )
        del x
    frames = []
    for name in names:
        frame = pd.DataFrame.from_records(per_model[name], columns=list(PER_SEED_COLUMNS))
        if not per_seed:
            frame = summarize(frame)
        frame.insert(0, "model", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _stacked(features: dict[str, np.ndarray], members: list[str], rows: np.ndarray, device):
    """The given rows of each member's features, stacked into one (len(members) * len(rows), d)
    float32 tensor, written in place (one copy; numpy's fancy indexing and concatenation made
    two, and cost more than the linear head's 1-shot fits)."""
    import torch

    dim = features[members[0]].shape[1]
    out = torch.empty((len(members) * len(rows), dim), dtype=torch.float32, device=device)
    all_rows = len(rows) == len(features[members[0]]) and np.array_equal(rows, np.arange(len(rows)))
    index = None if all_rows else torch.as_tensor(rows, device=device)
    for m, name in enumerate(members):
        source = torch.as_tensor(np.ascontiguousarray(features[name], dtype=np.float32), device=device)
        block = out[m * len(rows) : (m + 1) * len(rows)]
        if index is None:
            block.copy_(source)
        else:
            torch.index_select(source, 0, index, out=block)
    return out
