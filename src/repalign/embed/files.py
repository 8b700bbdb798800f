"""Precomputed embeddings from a file, matched to a human dataset's stimuli.

A file is either an ``.npy`` holding one row per stimulus in the dataset's stimulus order,
or an ``.npz`` with arrays ``embeddings`` (n, d) and ``names`` (n,) whose rows are matched to
the dataset's stimulus names (exactly, else by file stem), so one file can serve several
datasets in any row order. Files are read with ``allow_pickle=False``: an object array, which
only pickle could rebuild, is refused rather than unpickled.

Example:
    >>> from repalign.data.human import load_human
    >>> from repalign.embed import NoMatchingStimuliError, load_embeddings_file, match_stimuli
    >>> names, embeddings = load_embeddings_file("features.npz")
    >>> for human in load_human("peterson"):
    ...     try:
    ...         x = match_stimuli(embeddings, names, human)  # (n_stimuli, n_features), stimulus order
    ...     except NoMatchingStimuliError:
    ...         continue  # the file holds none of this dataset's stimuli
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repalign._npy import read_npy, read_npz, read_npz_names
from repalign.errors import InputError, MissingDataError, quote_tokens

if TYPE_CHECKING:
    from repalign.data.human import HumanSimilarity

EMBEDDINGS_SUFFIXES = (".npy", ".npz")
#: the arrays an .npz embeddings file must hold
NPZ_ARRAYS = ("embeddings", "names")


class NoMatchingStimuliError(InputError):
    """None of a dataset's stimuli is named in the embeddings file (a partial match is a plain InputError)."""


def load_embeddings_file(path: str | os.PathLike) -> tuple[tuple[str, ...] | None, np.ndarray]:
    """Read precomputed embeddings from an ``.npy`` or ``.npz`` file, without pickle.

    Args:
        path: an ``.npy`` of shape (n_stimuli, n_features), rows in a dataset's stimulus order,
            or an ``.npz`` with ``embeddings`` (n, n_features) and ``names`` (n,), one unique
            stimulus name per row.

    Returns:
        ``(names, embeddings)``: the row names (None for an ``.npy``) and the (n, n_features) array.

    Raises:
        MissingDataError: the file does not exist.
        InputError: another suffix, an array that needs pickle, a corrupt file, missing arrays,
            embeddings that are not 2-D numbers, names that repeat or do not match the rows.
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
        embeddings, names = read_npy(path), None
    else:
        arrays = read_npz(path, keys=NPZ_ARRAYS)
        missing = [name for name in NPZ_ARRAYS if name not in arrays]
        if missing:
            found = quote_tokens(read_npz_names(path), shown=5)
            raise InputError(
                f"{path.name} lacks array(s) {', '.join(sorted(missing))}; an .npz needs 'embeddings' "
                f"(n, d) and 'names' (n,) (found: {found or 'nothing'})"
            )
        embeddings, names = arrays["embeddings"], arrays["names"]
    if names is not None:
        names = tuple(str(n) for n in names.reshape(-1))
    _check_embeddings(embeddings, names, path.name)
    return names, embeddings


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
                "per stimulus in the dataset's order, or an .npz with 'embeddings' and 'names'"
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
            f"{source}: {len(unknown)} of {n} stimuli of {human.name} have no row in 'names' "
            f"(e.g. {shown}); name rows by the dataset's stimulus names"
        )
    return embeddings[rows]


def _check_embeddings(embeddings: np.ndarray, names: tuple[str, ...] | None, source: str) -> None:
    if embeddings.ndim != 2:
        raise InputError(f"{source}: embeddings must be 2-D (n_stimuli, n_features); got shape {embeddings.shape}")
    if not (np.issubdtype(embeddings.dtype, np.number) or embeddings.dtype == np.bool_):
        raise InputError(f"{source}: embeddings must be numbers; got dtype {embeddings.dtype}")
    if names is None:
        return
    if len(names) != len(embeddings):
        raise InputError(f"{source}: {len(names)} names for {len(embeddings)} embedding rows; give one name per row")
    if len(set(names)) != len(names):
        raise InputError(f"{source}: names repeat; each row needs a unique stimulus name")
