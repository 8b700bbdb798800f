"""Embeddings files: the one format ``repalign embed --out`` writes and ``align --embeddings`` /
``fewshot --embeddings`` read, and matching a file's rows to a human dataset's stimuli.

The format (docs/own-data.md) is an ``.npz`` holding

* ``embeddings`` -- (n, d) numbers, one row per image; or, for several layers, one array
  ``embeddings:<layer>`` per layer with their names in ``layers``;
* ``stimuli`` -- (n,) names, one per row (a human dataset or an image folder), and/or
* ``labels`` -- (n,) integer classes, one per row, in the few-shot dataset's order;
* optional metadata, 0-d strings: ``model``, ``model_id``, ``layer``, ``dataset``, and
  ``format`` (:data:`FORMAT`).

Older files are read too: ``names`` for ``stimuli``, and one array per layer named by the
layer (``penultimate``, as ``embed --out`` wrote before). An ``.npy`` is a bare (n, d) array
whose rows are in a dataset's order. Files are read with ``allow_pickle=False``: an object
array, which only pickle could rebuild, is refused rather than unpickled.

Example:
    >>> from repalign.data.human import load_human
    >>> from repalign.embed import NoMatchingStimuliError, read_embeddings_file, match_stimuli
    >>> file = read_embeddings_file("features.npz")
    >>> for human in load_human("peterson"):
    ...     try:
    ...         x = match_stimuli(file.embeddings, file.stimuli, human)  # (n_stimuli, n_features)
    ...     except NoMatchingStimuliError:
    ...         continue  # the file holds none of this dataset's stimuli
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repalign._npy import read_npy, read_npz
from repalign.errors import InputError, MissingDataError, quote_token, quote_tokens, unknown_name

if TYPE_CHECKING:
    from repalign.data.human import HumanSimilarity

EMBEDDINGS_SUFFIXES = (".npy", ".npz")
#: the version tag ``write_embeddings_file`` stores in ``format``
FORMAT = "repalign-embeddings/1"
#: the array of a one-layer file; a several-layer file has ``embeddings:<layer>`` arrays
EMBEDDINGS_KEY = "embeddings"
LAYER_PREFIX = "embeddings:"
#: 0-d string arrays describing the file; all optional
METADATA_KEYS = ("format", "model", "model_id", "layer", "dataset")
#: row names, then the older name of the same array
STIMULI_KEYS = ("stimuli", "names")
#: every array name that is not a layer of embeddings (the old per-layer files are told apart by it)
_RESERVED = frozenset({EMBEDDINGS_KEY, "labels", "layers", *STIMULI_KEYS, *METADATA_KEYS})


class NoMatchingStimuliError(InputError):
    """None of a dataset's stimuli is named in the embeddings file (a partial match is a plain InputError)."""


@dataclass(frozen=True, eq=False)
class EmbeddingsFile:
    """One layer of an embeddings file, with what identifies its rows.

    Attributes:
        embeddings: (n, n_features) numbers, one row per image.
        stimuli: (n,) unique row names, or None (rows in a dataset's order, or labelled rows).
        labels: (n,) int64 class of each row (few-shot datasets), or None.
        layer: the layer the rows come from, when the file says.
        layers: every layer the file holds (one for most files).
        model, model_id, dataset: what the file says produced it, each None when it does not.
        source: the file's name, for messages.
    """

    embeddings: np.ndarray
    stimuli: tuple[str, ...] | None = None
    labels: np.ndarray | None = None
    layer: str | None = None
    layers: tuple[str, ...] = ()
    model: str | None = None
    model_id: str | None = None
    dataset: str | None = None
    source: str = "embeddings"


def write_embeddings_file(
    path: str | os.PathLike,
    embeddings: np.ndarray | Mapping[str, np.ndarray],
    *,
    stimuli: Sequence[str] | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    model: str | None = None,
    model_id: str | None = None,
    dataset: str | None = None,
) -> Path:
    """Write embeddings in the format :func:`read_embeddings_file` reads (atomically).

    Args:
        path: the ``.npz`` file to write.
        embeddings: an (n, d) array, or ``{layer: (n, d) array}`` (one layer is stored as
            ``embeddings`` with its name in ``layer``; several as ``embeddings:<layer>``).
        stimuli: (n,) unique names of the rows (a human dataset's stimuli, image file names).
        labels: (n,) integer class of each row (a few-shot dataset, rows in its order).
        model, model_id, dataset: stored as metadata, read back by the commands that score it.

    Returns:
        The path written.
    """
    from repalign._io import atomic_path

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise InputError(f"An embeddings file is written as .npz; got '{path.name}'")
    layers = dict(embeddings) if isinstance(embeddings, Mapping) else {None: embeddings}
    if not layers:
        raise InputError("No embeddings to write; give an (n, d) array or {layer: array}")
    arrays: dict[str, np.ndarray] = {}
    metadata = {"format": FORMAT, "model": model, "model_id": model_id, "dataset": dataset}
    for name, array in layers.items():
        array = np.asarray(array)
        _check_embeddings(array, None, path.name)
        key = EMBEDDINGS_KEY if len(layers) == 1 else LAYER_PREFIX + str(name)
        arrays[key] = array
    n = len(next(iter(arrays.values())))
    if any(len(a) != n for a in arrays.values()):
        raise InputError(f"{path.name}: the layers have different numbers of rows; give one row per image in each")
    if len(layers) == 1:
        metadata["layer"] = next(iter(layers))
    else:
        arrays["layers"] = np.array([str(name) for name in layers])
    if stimuli is not None:
        names = tuple(str(s) for s in stimuli)
        _check_names(names, n, path.name)
        arrays["stimuli"] = np.array(names, dtype=str)
    if labels is not None:
        arrays["labels"] = _checked_labels(np.asarray(labels), n, path.name)
    arrays.update({k: np.array(str(v)) for k, v in metadata.items() if v is not None})
    # An open handle: given a path, np.savez would append ".npz" to the temporary name.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def read_embeddings_file(path: str | os.PathLike, *, layer: str | None = None) -> EmbeddingsFile:
    """Read an embeddings file (see the module docstring), without pickle.

    Args:
        path: an ``.npz`` in the format above (or an older one), or an ``.npy`` (n, d) array.
        layer: which layer of a several-layer file (required then); for a one-layer file
            that names its layer, it must be that layer.

    Raises:
        MissingDataError: the file does not exist.
        InputError: another suffix, an array that needs pickle, a corrupt file, no embeddings,
            embeddings that are not 2-D numbers, names or labels that do not fit the rows.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"Embeddings file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in EMBEDDINGS_SUFFIXES:
        raise InputError(f"Embeddings must be an .npy or .npz file; got '{path.name}'")
    # The readers go by the file's content and check its header before allocating anything: an
    # .npz named .npy (or the reverse), a truncated file or a header declaring a huge shape is
    # a one-line error, not a MemoryError or an attribute error later.
    if suffix == ".npy":
        embeddings = read_npy(path)
        _check_embeddings(embeddings, None, path.name)
        if layer is not None:
            raise InputError(f"{path.name} is a bare .npy array with no layer names; leave the layer out")
        return EmbeddingsFile(embeddings, source=path.name)
    arrays = read_npz(path)
    meta = {key: _string(arrays[key], key, path.name) for key in METADATA_KEYS if key in arrays}
    by_layer = _layers(arrays, meta.get("layer"), path.name)
    chosen = _choose_layer(by_layer, layer, path.name)
    embeddings = by_layer[chosen]
    stimuli = next((arrays[k] for k in STIMULI_KEYS if k in arrays), None)
    if stimuli is not None:
        if stimuli.dtype.kind not in "US":
            raise InputError(f"{path.name}: 'stimuli' must hold strings; got dtype {stimuli.dtype}")
        stimuli = tuple(str(s) for s in stimuli.reshape(-1))
    _check_embeddings(embeddings, stimuli, path.name)
    labels = arrays.get("labels")
    if labels is not None:
        labels = _checked_labels(labels, len(embeddings), path.name)
    return EmbeddingsFile(
        embeddings,
        stimuli=stimuli,
        labels=labels,
        layer=chosen if chosen != EMBEDDINGS_KEY else None,
        layers=tuple(by_layer),
        model=meta.get("model"),
        model_id=meta.get("model_id"),
        dataset=meta.get("dataset"),
        source=path.name,
    )


def load_embeddings_file(path: str | os.PathLike) -> tuple[tuple[str, ...] | None, np.ndarray]:
    """``(stimulus names or None, (n, n_features) embeddings)`` of a one-layer embeddings file.

    The short form of :func:`read_embeddings_file`, kept for callers that need only the rows
    and their names; raises as it does.
    """
    file = read_embeddings_file(path)
    return file.stimuli, file.embeddings


def _layers(arrays: dict[str, np.ndarray], layer: str | None, source: str) -> dict[str, np.ndarray]:
    """``{layer: array}`` of every layer in the file, in the file's order."""
    if EMBEDDINGS_KEY in arrays:
        return {layer or EMBEDDINGS_KEY: arrays[EMBEDDINGS_KEY]}
    prefixed = {k[len(LAYER_PREFIX) :]: v for k, v in arrays.items() if k.startswith(LAYER_PREFIX)}
    if prefixed:
        return prefixed
    # files written before the format: one array per layer, named by the layer
    legacy = {k: v for k, v in arrays.items() if k not in _RESERVED and v.ndim == 2 and v.dtype.kind in "biuf"}
    if legacy:
        return legacy
    found = quote_tokens(arrays, shown=5)
    raise InputError(
        f"{source} holds no embeddings; an .npz needs an 'embeddings' array (n, d), with 'stimuli' names "
        f"or 'labels' for its rows (found: {found or 'nothing'})"
    )


def _choose_layer(by_layer: dict[str, np.ndarray], layer: str | None, source: str) -> str:
    if layer is None:
        if len(by_layer) > 1:
            raise InputError(
                f"{source} holds {len(by_layer)} layers ({quote_tokens(by_layer, shown=5)}); choose one, or "
                "write one layer per file (repalign embed --layer L --out FILE)"
            )
        return next(iter(by_layer))
    if layer not in by_layer:
        if list(by_layer) == [EMBEDDINGS_KEY]:
            raise InputError(f"{source} does not say which layer its embeddings come from; leave the layer out")
        raise unknown_name(f"layer in {source}", layer, list(by_layer))
    return layer


def _string(array: np.ndarray, key: str, source: str) -> str:
    if array.dtype.kind not in "US" or array.size != 1:
        raise InputError(f"{source}: {quote_token(key)} must be one string; got a {array.dtype} array {array.shape}")
    return str(array.reshape(-1)[0])


def _checked_labels(labels: np.ndarray, n: int, source: str) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(f"{source}: 'labels' must be a 1-D integer array; got {labels.dtype} of shape {labels.shape}")
    if len(labels) != n:
        raise InputError(f"{source}: {len(labels)} labels for {n} embedding rows; give one label per row")
    return labels.astype(np.int64)


def match_stimuli(
    embeddings: np.ndarray,
    names: Sequence[str] | None,
    human: HumanSimilarity,
    *,
    source: str = "embeddings",
) -> np.ndarray:
    """The rows of ``embeddings`` for ``human``'s stimuli, in the dataset's stimulus order.

    Args:
        embeddings: (n, n_features) array, e.g. from :func:`load_embeddings_file`.
        names: one unique stimulus name per row; a row matches a stimulus by its exact name,
            else (when the names' file stems are unique) by file stem, so "cat.png" matches
            "animals/cat.png". None: the rows already are in stimulus order, one per stimulus.
        human: the dataset whose stimuli to pick (its ``name`` and ``stimuli``).
        source: what the rows came from (e.g. a file name), for error messages.

    Returns:
        (n_stimuli, n_features): row i belongs to ``human.stimuli[i]``. The input is not modified.

    Raises:
        NoMatchingStimuliError: ``names`` holds none of the dataset's stimuli.
        InputError: only some stimuli are named, or (``names`` None) the row count differs from
            the number of stimuli, or the embeddings and names are malformed.
    """
    embeddings = np.asarray(embeddings)
    if names is not None:
        names = tuple(str(n) for n in names)
    _check_embeddings(embeddings, names, source)
    n = len(human.stimuli)
    if names is None:
        if len(embeddings) != n:
            raise InputError(
                f"{source} has {len(embeddings)} rows but {human.name} has {n} stimuli; give one row "
                "per stimulus in the dataset's order, or an .npz with 'embeddings' and 'stimuli'"
            )
        return embeddings
    position = {name: row for row, name in enumerate(names)}
    rows = [position.get(s) for s in human.stimuli]
    if None in rows:
        # "cat.png" in the file vs "animals/cat.png" in the dataset: match on unique stems
        stems = {Path(name).stem: row for row, name in enumerate(names)}
        if len(stems) == len(names):
            rows = [stems.get(Path(s).stem) for s in human.stimuli]
    unknown = [s for s, row in zip(human.stimuli, rows) if row is None]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        error = NoMatchingStimuliError if len(unknown) == n else InputError
        raise error(
            f"{source}: {len(unknown)} of {n} stimuli of {human.name} have no row in 'stimuli' "
            f"(e.g. {shown}); name rows by the dataset's stimulus names"
        )
    return embeddings[rows]


def _check_embeddings(embeddings: np.ndarray, names: tuple[str, ...] | None, source: str) -> None:
    if embeddings.ndim != 2:
        raise InputError(f"{source}: embeddings must be 2-D (n_stimuli, n_features); got shape {embeddings.shape}")
    if not (np.issubdtype(embeddings.dtype, np.number) or embeddings.dtype == np.bool_):
        raise InputError(f"{source}: embeddings must be numbers; got dtype {embeddings.dtype}")
    if names is not None:
        _check_names(names, len(embeddings), source)


def _check_names(names: tuple[str, ...], n: int, source: str) -> None:
    if len(names) != n:
        raise InputError(f"{source}: {len(names)} names for {n} embedding rows; give one name per row")
    if len(set(names)) != len(names):
        raise InputError(f"{source}: names repeat; each row needs a unique stimulus name")
