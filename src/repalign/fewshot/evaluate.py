"""The few-shot grid: evaluate_fewshot on precomputed features, run_fewshot from a model and a dataset,
fewshot_rows: run_fewshot as rows of the study's result store.

Example:
    >>> from repalign.fewshot import run_fewshot
    >>> run_fewshot("pixels", "mnist", shots=(10,), heads=("linear",), max_eval_per_class=200)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from repalign._device import resolve_device
from repalign._options import DEFAULT_DEVICE, DEFAULT_LAYER, HEADS
from repalign._progress import progress_bar
from repalign.errors import InputError, unknown_name
from repalign.fewshot._heads import Task
from repalign.fewshot.settings import HeadSettings
from repalign.fewshot.splits import (
    SplitManifest,
    check_labels,
    make_splits,
    normalize_seeds,
    normalize_shots,
)
from repalign.schema import conform

if TYPE_CHECKING:  # pragma: no cover
    from repalign.data.fewshot_datasets import FewShotDataset

log = logging.getLogger(__name__)

#: the columns of the few-shot tables: the result store's names (value = accuracy, n = seeds),
#: so a table and the store's rows read the same (docs/fewshot.md)
RESULT_COLUMNS = ("dataset", "head", "shots", "metric", "value", "ci_low", "ci_high", "n")
PER_SEED_COLUMNS = ("dataset", "head", "shots", "seed", "metric", "value")
#: the one metric of few-shot rows
ACCURACY = "accuracy"


def confidence_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval of the mean over seeds, clipped to [0, 1].

    The interval is ``mean +- t_{k-1} * sd / sqrt(k)`` over the k per-seed accuracies,
    intersected with [0, 1]: an accuracy cannot leave that range, but with few seeds and a
    wide spread the t-interval does (3 seeds of 1-shot accuracy gave an upper bound of 1.26).
    With one seed the interval is undefined and returned as (mean, NaN, NaN).
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, max(mean - half, 0.0), min(mean + half, 1.0)


def evaluate_fewshot(
    features,
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
    progress: bool = False,
) -> pd.DataFrame:
    """Few-shot accuracy of precomputed features over the grid shots x heads x seeds.

    Args:
        features: (n_rows, d) embeddings. Row i belongs to example i, or to example
            ``feature_indices[i]`` when given (features of a subset of the dataset).
        labels: (n_examples,) class of every example of the dataset (defines the splits).
        shots: training examples per class (None: :func:`make_splits`' default, 1, 5, ..., 80).
        heads: any of "linear", "mlp1", "mlp2".
        seeds: number of seeds (0..k-1) or the seeds themselves (None: :func:`make_splits`' default, 5).
        max_eval_per_class: cap on evaluation examples per class (None: no cap).
        splits: a manifest to reuse (must match ``labels``); drawn from the three options above
            otherwise. A manifest fixes shots, seeds and the cap itself: leave those options
            out, or give the manifest's own values -- any other value is refused
            (:class:`~repalign.errors.InputError`) rather than ignored.
        per_seed: one row per seed instead of mean and CI.
        dataset: the name put in the ``dataset`` column.
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:1", "mps".
        settings: head hyperparameters (defaults documented in docs/fewshot.md).
        progress: a progress bar of the heads' training on stderr (shown on a terminal only).

    Returns:
        Columns dataset, head, shots, metric ("accuracy"), value (the mean accuracy over
        seeds, in [0, 1]), ci_low, ci_high, n (seeds): the result store's names; with
        ``per_seed=True``: dataset, head, shots, seed, metric, value.
    """
    import torch

    from repalign.fewshot._heads import fit_and_score

    features, labels, rows_of_example = checked_features(features, labels, feature_indices)
    heads, splits, keys, classes, targets = _checked_grid(
        labels, heads, splits, shots=shots, seeds=seeds, max_eval_per_class=max_eval_per_class, dataset=dataset
    )
    settings = settings or HeadSettings()
    tasks = grid_tasks(splits, keys, rows_of_example)
    row_targets = targets if rows_of_example is None else targets[np.asarray(feature_indices)]

    torch_device = torch.device(resolve_device(device))
    x = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32), device=torch_device)
    y = torch.as_tensor(row_targets, device=torch_device)
    records = []
    # one step per head: each head's fits over the grid run as one batch
    with progress_bar(f"few-shot heads on {dataset}", len(heads), enabled=progress) as advance:
        for head in heads:
            start = time.perf_counter()
            accuracies = fit_and_score(head, x, y, tasks, n_classes=len(classes), settings=settings)
            log.info(
                "few-shot %s on %s: %d fits in %.2fs",
                head,
                dataset,
                len(tasks),
                time.perf_counter() - start,
            )
            records += per_seed_records(dataset, head, keys, accuracies)
            advance()
    per_seed_frame = pd.DataFrame.from_records(records, columns=list(PER_SEED_COLUMNS))
    if per_seed:
        return per_seed_frame
    return summarize(per_seed_frame)


def checked_features(features, labels, feature_indices, *, what: str = "features"):
    """Validate features (and their example indices) against the labels.

    Returns the features as an array, the labels (int64), and ``rows_of_example`` (n_examples,):
    the feature row of each example, -1 where it has none (None without ``feature_indices``).
    ``what`` names the features in errors (e.g. "features of model 'x'").
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise InputError(f"{what} must be a non-empty 2-D array (n_examples, n_features); got shape {features.shape}.")
    if not np.issubdtype(features.dtype, np.number):
        raise InputError(f"{what} must be numeric; got dtype {features.dtype}.")
    if feature_indices is None:
        labels = check_labels(labels, n_features=len(features))
        rows_of_example = None
    else:
        labels = check_labels(labels)
        feature_indices = np.asarray(feature_indices, dtype=np.int64)
        if feature_indices.shape != (len(features),):
            raise InputError(
                f"feature_indices must give one example index per feature row: {len(features)} rows "
                f"but {feature_indices.shape} indices."
            )
        rows_of_example = np.full(len(labels), -1, dtype=np.int64)
        rows_of_example[feature_indices] = np.arange(len(features))
    if not np.all(np.isfinite(features)):
        bad = int(np.argwhere(~np.isfinite(features))[0][0])
        raise InputError(f"{what} contain NaN or infinite values (first in row {bad}).")
    return features, labels, rows_of_example


def grid_tasks(splits: SplitManifest, keys, rows_of_example, *, offset: int = 0, source: int = 0) -> list[Task]:
    """One task per (seed, shots) in ``keys``, on feature rows (shifted by ``offset``)."""
    tasks = []
    for seed, n in keys:
        split = splits.splits[(seed, n)]
        train, evaluate = split.train, split.eval
        if rows_of_example is not None:
            train, evaluate = rows_of_example[train], rows_of_example[evaluate]
            if (train < 0).any() or (evaluate < 0).any():
                raise InputError(
                    "feature_indices does not cover every example the splits use; embed splits.used_indices()."
                )
        tasks.append(Task(seed=seed, shots=n, train_rows=train + offset, eval_rows=evaluate + offset, source=source))
    return tasks


def per_seed_records(dataset: str, head: str, keys, accuracies) -> list[dict]:
    """Rows of the per-seed table (:data:`PER_SEED_COLUMNS`) for one head's accuracies over ``keys``."""
    return [
        {"dataset": dataset, "head": head, "shots": n, "seed": seed, "metric": ACCURACY, "value": float(accuracy)}
        for (seed, n), accuracy in zip(keys, accuracies)
    ]


def summarize(per_seed_frame: pd.DataFrame) -> pd.DataFrame:
    """Collapse per-seed rows to mean accuracy and 95% t-interval per (dataset, head, shots)."""
    rows = []
    for (dataset, head, n), group in per_seed_frame.groupby(["dataset", "head", "shots"], sort=False):
        mean, low, high = confidence_interval(group["value"].to_numpy())
        rows.append(
            {
                "dataset": dataset,
                "head": head,
                "shots": int(n),
                "metric": ACCURACY,
                "value": mean,
                "ci_low": low,
                "ci_high": high,
                "n": len(group),
            }
        )
    return pd.DataFrame.from_records(rows, columns=list(RESULT_COLUMNS))


def run_fewshot(
    model: str,
    dataset: str | os.PathLike | FewShotDataset,
    *,
    shots: int | Iterable[int] | None = None,
    heads: str | Iterable[str] = HEADS,
    seeds: int | Iterable[int] | None = None,
    max_eval_per_class: int | None = None,
    splits: SplitManifest | None = None,
    per_seed: bool = False,
    split: str | None = None,
    device: str = DEFAULT_DEVICE,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: bool = False,
    settings: HeadSettings | None = None,
    weights: str | os.PathLike | None = None,
    layer: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Embed a dataset with ``model`` and evaluate few-shot transfer on it.

    Only the images some split uses (train or eval, any seed or shots) are embedded, through
    the embedding cache, so repeated runs and other heads reuse the features.

    Args:
        model: a model name, e.g. "pixels", "tflite:mobilenet_v2_1.0_224_quant", "timm:resnet50".
        dataset: "mnist", "fashion_mnist", "cifar10", "cifar100", a dataset folder, or a
            :class:`~repalign.data.fewshot_datasets.FewShotDataset` already loaded (a caller
            that also draws the splits loads it once and passes it here).
        split: the dataset split the protocol draws from (None: "test", as in the study). A
            loaded dataset is one split already: ``split`` may only repeat it.
        batch_size, num_workers, weights: passed to :func:`repalign.embed.extract_embeddings`
            (``weights``: a local weights file for the model).
        progress: progress bars of the embedding and of the heads' training (on a terminal only).
        layer: the layer to read (None: the penultimate), or a list of layers, all extracted
            in one forward pass and each evaluated on the same splits.
        Other options: as :func:`evaluate_fewshot`.

    Returns:
        The :func:`evaluate_fewshot` table with ``model``, ``model_id`` and ``layer`` columns
        first; with several layers, the rows of each layer in the order given.
    """
    from repalign.data.images import SubsetImageSet
    from repalign.embed import extract_embeddings

    heads = _check_heads(heads)  # fail before any embedding work
    data = _loaded(dataset, split)
    splits = _splits_for(
        data.labels,
        splits,
        shots=shots,
        seeds=seeds,
        max_eval_per_class=max_eval_per_class,
        dataset=data.name,
        class_names=data.class_names,
    )
    used = splits.used_indices()
    log.info(
        "few-shot %s on %s: embedding %d of %d images",
        model,
        data.name,
        len(used),
        len(data),
    )
    layers = [DEFAULT_LAYER] if layer is None else [layer] if isinstance(layer, str) else list(layer)
    features = extract_embeddings(
        model,
        SubsetImageSet(data.images, used),
        layer=layers,  # a list: {layer: features}, every layer from one forward pass
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        weights=weights,
    )
    frames = []
    for name, layer_features in features.items():
        frame = evaluate_fewshot(
            layer_features,
            data.labels,
            heads=heads,
            splits=splits,
            per_seed=per_seed,
            dataset=data.name,
            feature_indices=used,
            device=device,
            settings=settings,
            progress=progress,
        )
        frame.insert(0, "layer", name)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(0, "model_id", _model_id(model))
    frame.insert(0, "model", model)
    return frame


def fewshot_rows(model: str, dataset: str | os.PathLike | FewShotDataset, **options: Any) -> pd.DataFrame:
    """:func:`run_fewshot` as result rows of the study's store (:mod:`repalign.schema`).

    One row per (head, shots): stage ``"fewshot"``, metric ``"accuracy"``, ``value`` the mean
    accuracy over seeds with its t-interval in ``ci_low``/``ci_high``, ``n`` the number of
    seeds; ``model`` and ``model_id`` filled, the columns a run adds (unit, status, timing)
    left null.

    Args:
        model, dataset: as :func:`run_fewshot`.
        **options: keyword options of :func:`run_fewshot`, except ``per_seed`` (a result row
            summarizes its seeds).
    """
    if options.get("per_seed"):
        raise InputError(
            "fewshot_rows gives one row per (head, shots) over its seeds; "
            "call run_fewshot(..., per_seed=True) for one row per seed."
        )
    return conform(run_fewshot(model, dataset, **options).assign(stage="fewshot"))


def _loaded(dataset: str | os.PathLike | FewShotDataset, split: str | None) -> FewShotDataset:
    from repalign.data.fewshot_datasets import FewShotDataset, load_fewshot_dataset

    if not isinstance(dataset, FewShotDataset):
        return load_fewshot_dataset(dataset) if split is None else load_fewshot_dataset(dataset, split=split)
    if split is not None and split != dataset.split:
        raise InputError(
            f"split='{split}' was given, but dataset '{dataset.name}' is loaded as its '{dataset.split}' split; "
            f"leave split out, or pass load_fewshot_dataset('{dataset.name}', split='{split}')."
        )
    return dataset


def _checked_grid(labels, heads, splits, *, shots, seeds, max_eval_per_class, dataset):
    """What every evaluation of a few-shot grid checks and derives first: (heads, splits --
    given, or drawn from the labels --, their keys in order, the classes, each example's
    class index)."""
    heads = _check_heads(heads)
    splits = _splits_for(
        labels, splits, shots=shots, seeds=seeds, max_eval_per_class=max_eval_per_class, dataset=dataset
    )
    _check_shots_per_class(splits, labels)
    classes, targets = np.unique(labels, return_inverse=True)
    return heads, splits, sorted(splits.splits), classes, targets


def _splits_for(
    labels: np.ndarray,
    splits: SplitManifest | None,
    *,
    shots: int | Iterable[int] | None,
    seeds: int | Iterable[int] | None,
    max_eval_per_class: int | None,
    dataset: str,
    class_names: Sequence[str] | None = None,
) -> SplitManifest:
    """The splits to evaluate: ``splits`` when given (checked), else drawn from the options.

    A manifest decides the grid by itself; an option given beside it must say the same,
    because ignoring it would report a grid other than the one the caller asked for.
    """
    if splits is None:
        given = {k: v for k, v in (("shots", shots), ("seeds", seeds)) if v is not None}
        return make_splits(
            labels,
            **given,  # the defaults of what is not given are make_splits' own
            max_eval_per_class=max_eval_per_class,
            dataset=dataset,
            class_names=class_names,
        )
    splits.check_labels(labels)
    disagreeing = []
    if shots is not None and (given_shots := normalize_shots(shots)) != splits.shots:
        disagreeing.append(f"shots={list(given_shots)}")
    if seeds is not None and tuple(sorted(given_seeds := normalize_seeds(seeds))) != splits.seeds:
        disagreeing.append(f"seeds={seeds if isinstance(seeds, (int, np.integer)) else list(given_seeds)}")
    if max_eval_per_class is not None and max_eval_per_class != splits.max_eval_per_class:
        disagreeing.append(f"max_eval_per_class={max_eval_per_class!r}")
    if disagreeing:
        cap = "none" if splits.max_eval_per_class is None else splits.max_eval_per_class
        raise InputError(
            f"The split manifest of '{splits.dataset}' has shots {list(splits.shots)}, seeds {list(splits.seeds)} "
            f"and max_eval_per_class {cap}, but {', '.join(disagreeing)} was given with it; leave those options "
            "out when passing splits, or draw new splits with make_splits."
        )
    return splits


def _model_id(model: str) -> str:
    from repalign.models import resolve_model

    return resolve_model(model).resolved_id


def _check_heads(heads: str | Iterable[str]) -> tuple[str, ...]:
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    if not heads:
        raise InputError(f"heads is empty; choose from {', '.join(HEADS)}.")
    for head in heads:
        if head not in HEADS:
            raise unknown_name("few-shot head", head, HEADS)
    return tuple(dict.fromkeys(heads))


def _check_shots_per_class(splits: SplitManifest, labels: np.ndarray) -> None:
    """Each training set holds exactly ``shots`` examples of every class (also for loaded manifests)."""
    classes, targets = np.unique(labels, return_inverse=True)
    for (seed, n), split in splits.splits.items():
        counts = np.bincount(targets[split.train], minlength=len(classes))
        if not np.all(counts == n):
            raise InputError(
                f"Split seed={seed}, shots={n} does not hold exactly {n} training examples per class "
                f"(counts range {counts.min()}..{counts.max()}); the manifest is not a few-shot split of these labels."
            )
