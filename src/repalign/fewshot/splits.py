"""Few-shot splits: which examples train and which evaluate, for every (seed, shots).

A split depends only on (labels, seed, shots, max_eval_per_class), so every model is
scored on identical splits, and a single cell can be reproduced on its own. For each seed
and each class, one random permutation of the class's examples is drawn; the first
``shots`` of it train, the rest evaluate (the *last* ``max_eval_per_class`` of it when
capped, so the evaluation set stays the same across shots whenever the class is large
enough, and the union of images to embed stays small). Training sets are therefore
nested: the 5-shot set contains the 1-shot set.

Manifests are saved as JSON or ``.npz`` (no pickle) and carry a fingerprint of the labels;
using a manifest with different labels is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repalign._options import DEFAULT_FEWSHOT_SPLIT, DEFAULT_N_SEEDS, DEFAULT_SHOTS
from repalign.errors import InputError, first_line, quote_token

if TYPE_CHECKING:
    from repalign.data.fewshot_datasets import FewShotDataset

MANIFEST_FORMAT = "repalign-fewshot-splits"
MANIFEST_VERSION = 1


def labels_fingerprint(labels: np.ndarray) -> str:
    """sha256 of the labels as little-endian int64 (order matters)."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


def check_labels(labels, *, n_features: int | None = None) -> np.ndarray:
    """Validate labels: 1-D integers, at least two classes. Returns an int64 copy, (n,)."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise InputError(f"labels must be 1-D (one class per example); got shape {array.shape}.")
    whole_floats = np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array))
    if array.size and not np.issubdtype(array.dtype, np.integer) and not whole_floats:
        raise InputError(f"labels must be integer class indices; got dtype {array.dtype}.")
    array = array.astype(np.int64)
    if n_features is not None and n_features != len(array):
        raise InputError(
            f"features and labels differ in length: {n_features} feature rows but {len(array)} labels. "
            "Pass one label per feature row (in the same order)."
        )
    n_classes = len(np.unique(array))
    if n_classes < 2:
        raise InputError(f"Few-shot learning needs at least 2 classes; the labels hold {n_classes}.")
    return array


def normalize_shots(shots: int | Iterable[int]) -> tuple[int, ...]:
    values = (shots,) if isinstance(shots, (int, np.integer)) else tuple(shots)
    if not values:
        raise InputError("shots is empty; give at least one number of examples per class, e.g. 1,5,10.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"shots must be positive integers; got {value!r}.")
    return tuple(sorted({int(v) for v in values}))


def normalize_seeds(seeds: int | Iterable[int]) -> tuple[int, ...]:
    """An int k means seeds 0..k-1; a sequence is taken as the seeds themselves."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise InputError(f"seeds must be at least 1; got {seeds}.")
        return tuple(range(int(seeds)))
    values = tuple(int(s) for s in seeds)
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise InputError(f"seeds must be distinct non-negative integers; got {list(values)}.")
    return values


@dataclass(frozen=True)
class Split:
    """Indices into the dataset: ``train`` (n_classes * shots,) and ``eval`` (n_eval,), int64."""

    train: np.ndarray
    eval: np.ndarray


@dataclass(frozen=True, eq=False)
class SplitManifest:
    """Train/eval indices for every (seed, shots) of one dataset.

    Attributes:
        dataset: name of the dataset the indices refer to.
        labels_fingerprint: :func:`labels_fingerprint` of the labels the splits were drawn from.
        n_examples: number of examples in the dataset.
        max_eval_per_class: the evaluation cap used, or None.
        splits: (seed, shots) -> :class:`Split`.
    """

    dataset: str
    labels_fingerprint: str
    n_examples: int
    max_eval_per_class: int | None
    splits: dict[tuple[int, int], Split] = field(repr=False)

    def __post_init__(self):
        for (seed, shots), split in self.splits.items():
            _check_split(split, seed, shots, self.n_examples)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({seed for seed, _ in self.splits}))

    @property
    def shots(self) -> tuple[int, ...]:
        return tuple(sorted({shots for _, shots in self.splits}))

    def split(self, seed: int, shots: int) -> Split:
        try:
            return self.splits[(seed, shots)]
        except KeyError:
            raise InputError(
                f"The split manifest has no split for seed={seed}, shots={shots} "
                f"(seeds {list(self.seeds)}, shots {list(self.shots)})."
            ) from None

    def used_indices(self) -> np.ndarray:
        """Sorted union of every train and eval index: the only examples that need features."""
        parts = [np.concatenate([s.train, s.eval]) for s in self.splits.values()]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def check_labels(self, labels: np.ndarray) -> None:
        """Refuse labels other than the ones the splits were drawn from."""
        labels = np.asarray(labels)
        if len(labels) != self.n_examples or labels_fingerprint(labels) != self.labels_fingerprint:
            raise InputError(
                f"This split manifest was drawn for other labels (dataset '{self.dataset}', "
                f"{self.n_examples} examples, fingerprint {self.labels_fingerprint[:12]}); got "
                f"{len(labels)} labels with fingerprint {labels_fingerprint(labels)[:12]}. "
                "Use the manifest of this dataset or draw new splits."
            )

    # ----------------------------------------------------------------------------- file I/O

    def _meta(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "dataset": self.dataset,
            "labels_fingerprint": self.labels_fingerprint,
            "n_examples": self.n_examples,
            "max_eval_per_class": self.max_eval_per_class,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest as ``.json`` (readable) or ``.npz`` (compact), atomically."""
        from repalign._io import atomic_path, write_json_atomic

        path = Path(path)
        keys = sorted(self.splits)
        if path.suffix == ".json":
            meta = self._meta()
            meta["splits"] = [
                {
                    "seed": s,
                    "shots": n,
                    "train": self.splits[(s, n)].train.tolist(),
                    "eval": self.splits[(s, n)].eval.tolist(),
                }
                for s, n in keys
            ]
            write_json_atomic(path, meta)
        elif path.suffix == ".npz":
            arrays = {"meta": np.array(json.dumps(self._meta()))}
            for s, n in keys:
                arrays[f"train__seed{s}__shots{n}"] = self.splits[(s, n)].train
                arrays[f"eval__seed{s}__shots{n}"] = self.splits[(s, n)].eval
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)
        else:
            raise InputError(f"Split manifests are saved as .json or .npz; got '{path.name}'.")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SplitManifest:
        """Read a manifest written by :meth:`save`.

        Refused with an :class:`~repalign.errors.InputError`: another ``format`` or a
        ``version`` this code does not know (a newer repalign's manifest is not guessed at),
        indices that are not integers (``1.5``, ``"3"``, ``true`` -- never truncated or
        coerced), and train and eval sets that overlap or leave the dataset.
        """
        from repalign.errors import MissingDataError

        path = Path(path)
        if not path.is_file():
            raise MissingDataError(f"Split manifest not found: {path}")
        if path.suffix == ".json":
            meta, entries = _read_json_manifest(path)
        elif path.suffix == ".npz":
            meta, entries = _read_npz_manifest(path)
        else:
            raise InputError(f"Split manifests are .json or .npz files; got '{path.name}'.")
        if meta.get("format") != MANIFEST_FORMAT:
            raise InputError(
                f"{path} is not a repalign split manifest (format {quote_token(repr(meta.get('format')))})."
            )
        if meta.get("version") != MANIFEST_VERSION or isinstance(meta.get("version"), bool):
            raise InputError(
                f"{path} is a split manifest of version {quote_token(repr(meta.get('version')))}; this repalign "
                f"reads version {MANIFEST_VERSION}. Draw the splits again with this version."
            )
        where = f"Malformed split manifest {path}"
        max_eval = meta.get("max_eval_per_class")
        splits = {}
        for seed, shots, train, evals in entries:
            key = (_integer(seed, f"{where}: seed"), _integer(shots, f"{where}: shots"))
            if key in splits:
                raise InputError(f"{where}: seed={key[0]}, shots={key[1]} appears twice.")
            what = f"{where}: split seed={key[0]}, shots={key[1]}"
            splits[key] = Split(_indices(train, f"{what}, train"), _indices(evals, f"{what}, eval"))
        if not isinstance(meta.get("dataset"), str) or not isinstance(meta.get("labels_fingerprint"), str):
            raise InputError(f"{where}: 'dataset' and 'labels_fingerprint' must be strings.")
        return cls(
            dataset=meta["dataset"],
            labels_fingerprint=meta["labels_fingerprint"],
            n_examples=_integer(meta.get("n_examples"), f"{where}: n_examples"),
            max_eval_per_class=None if max_eval is None else _integer(max_eval, f"{where}: max_eval_per_class"),
            splits=splits,
        )


def _read_json_manifest(path: Path) -> tuple[dict, list[tuple]]:
    """(meta, [(seed, shots, train, eval)]) of a JSON manifest, values not yet checked."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise InputError(f"Malformed split manifest {path}: {first_line(exc)}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("splits"), list):
        raise InputError(f"Malformed split manifest {path}: expected an object with a list of 'splits'.")
    entries = []
    for entry in meta["splits"]:
        if not isinstance(entry, dict) or not {"seed", "shots", "train", "eval"} <= set(entry):
            raise InputError(f"Malformed split manifest {path}: each split needs 'seed', 'shots', 'train' and 'eval'.")
        entries.append((entry["seed"], entry["shots"], entry["train"], entry["eval"]))
    return meta, entries


def _read_npz_manifest(path: Path) -> tuple[dict, list[tuple]]:
    """(meta, [(seed, shots, train, eval)]) of an .npz manifest, values not yet checked."""
    from repalign._npy import read_npz

    arrays = read_npz(path)
    where = f"Malformed split manifest {path}"
    meta_array = arrays.get("meta")
    if meta_array is None or meta_array.dtype.kind != "U" or meta_array.shape != ():
        raise InputError(f"{where}: no 'meta' string.")
    try:
        meta = json.loads(str(meta_array))
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{where}: its 'meta' is not JSON.") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{where}: its 'meta' is not an object.")
    entries = []
    for key in arrays:
        if not key.startswith("train__"):
            continue
        match = re.fullmatch(r"train__seed(\d+)__shots(\d+)", key)
        eval_key = key.replace("train__", "eval__", 1)
        if match is None or eval_key not in arrays:
            raise InputError(f"{where}: array {quote_token(key)} is not train__seed<S>__shots<N> with its eval__ twin.")
        entries.append((int(match.group(1)), int(match.group(2)), arrays[key], arrays[eval_key]))
    return meta, entries


def _integer(value, what: str) -> int:
    """An int from JSON or numpy; floats, strings and booleans are refused, not converted."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{what} must be an integer; got {quote_token(repr(value))}.")
    return int(value)


def _indices(values, what: str) -> np.ndarray:
    """A 1-D int64 index array from a JSON list or an npz array; never truncates 1.5 to 1."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu" or values.ndim != 1:
            raise InputError(f"{what} must be a 1-D integer array; got {values.dtype} of shape {values.shape}.")
        if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
            raise InputError(f"{what} holds an index beyond int64.")
        return values.astype(np.int64)
    if not isinstance(values, list):
        raise InputError(f"{what} must be a list of integers; got {type(values).__name__}.")
    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise InputError(f"{what} must hold integer indices; got {quote_token(repr(bad))}.")
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError as exc:
        raise InputError(f"{what} holds an index beyond int64.") from exc


def make_splits(
    labels,
    *,
    shots: int | Iterable[int] = DEFAULT_SHOTS,
    seeds: int | Iterable[int] = DEFAULT_N_SEEDS,
    max_eval_per_class: int | None = None,
    dataset: str = "features",
    class_names: Sequence[str] | None = None,
) -> SplitManifest:
    """Draw the few-shot splits of the study's protocol.

    Args:
        labels: (n_examples,) class of each example of the split the shots come from.
        shots: examples per class for training (each class needs ``shots + 1`` examples).
        seeds: number of seeds (0..k-1) or the seeds themselves.
        max_eval_per_class: evaluate on at most this many remaining examples per class.
        dataset: name stored in the manifest.
        class_names: names used in error messages (index -> name).

    Returns:
        A :class:`SplitManifest` with one split per (seed, shots).
    """
    labels = check_labels(labels)
    shots = normalize_shots(shots)
    seeds = normalize_seeds(seeds)
    if max_eval_per_class is not None and (isinstance(max_eval_per_class, bool) or int(max_eval_per_class) < 1):
        raise InputError(f"max_eval_per_class must be a positive integer or None; got {max_eval_per_class!r}.")
    classes, counts = np.unique(labels, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < shots[-1] + 1:
        label = int(classes[smallest])
        name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
        raise InputError(
            f"Class '{name}' has only {counts[smallest]} examples, but shots={shots[-1]} needs "
            f"{shots[-1] + 1} ({shots[-1]} to train and at least 1 to evaluate). Use fewer shots "
            f"(at most {counts[smallest] - 1} here)."
        )
    members = [np.flatnonzero(labels == c) for c in classes]
    splits: dict[tuple[int, int], Split] = {}
    for seed in seeds:
        # One permutation per class and seed; it does not depend on the shots asked for.
        rng = np.random.default_rng(seed)
        perms = [rng.permutation(m) for m in members]
        for n in shots:
            train = np.concatenate([p[:n] for p in perms])
            if max_eval_per_class is None:
                evals = [p[n:] for p in perms]
            else:
                evals = [p[max(n, len(p) - int(max_eval_per_class)) :] for p in perms]
            splits[(seed, n)] = Split(np.sort(train), np.sort(np.concatenate(evals)))
    return SplitManifest(
        dataset=dataset,
        labels_fingerprint=labels_fingerprint(labels),
        n_examples=len(labels),
        max_eval_per_class=None if max_eval_per_class is None else int(max_eval_per_class),
        splits=splits,
    )


def make_dataset_splits(
    dataset: str | os.PathLike | FewShotDataset,
    *,
    shots: int | Iterable[int] | None = None,
    seeds: int | Iterable[int] | None = None,
    max_eval_per_class: int | None = None,
    split: str = DEFAULT_FEWSHOT_SPLIT,
) -> SplitManifest:
    """Draw the splits of a few-shot dataset: the ones :func:`~repalign.fewshot.run_fewshot` draws.

    With the same options as ``run_fewshot``, the manifest holds exactly the splits that call
    would draw, so it can be saved (:meth:`SplitManifest.save`) and passed back as ``splits=``.

    Args:
        dataset: a registered dataset ("mnist", "cifar10", ...), a dataset folder, or a
            :class:`~repalign.data.fewshot_datasets.FewShotDataset` already loaded.
        shots, seeds, max_eval_per_class: as :func:`make_splits` (None: its defaults).
        split: the dataset split to draw from, when ``dataset`` is a name or folder.

    Returns:
        A :class:`SplitManifest` named after the dataset; class names appear in its errors.
    """
    from repalign.data.fewshot_datasets import FewShotDataset, load_fewshot_dataset

    data = dataset if isinstance(dataset, FewShotDataset) else load_fewshot_dataset(dataset, split=split)
    return make_splits(
        data.labels,
        shots=DEFAULT_SHOTS if shots is None else shots,
        seeds=DEFAULT_N_SEEDS if seeds is None else seeds,
        max_eval_per_class=max_eval_per_class,
        dataset=data.name,
        class_names=data.class_names,
    )


def _check_split(split: Split, seed: int, shots: int, n_examples: int) -> None:
    for part in (split.train, split.eval):
        if part.ndim != 1 or (part.size and (part.min() < 0 or part.max() >= n_examples)):
            raise InputError(f"Split seed={seed}, shots={shots} has indices outside 0..{n_examples - 1}.")
    if not split.train.size or not split.eval.size:
        raise InputError(f"Split seed={seed}, shots={shots} has an empty train or eval set.")
    overlap = np.intersect1d(split.train, split.eval)
    if overlap.size or len(np.unique(split.train)) != len(split.train):
        raise InputError(
            f"Split seed={seed}, shots={shots} is leaky: {overlap.size} example(s) are in both train and "
            f"eval (e.g. index {int(overlap[0]) if overlap.size else -1}) or train repeats an example."
        )
