"""Per-participant similarity judgments: one (n, n) matrix per participant.

Noise ceilings and split-half reliability (:mod:`repalign.alignment.ceiling`) need the
individual participants, not only their mean. A manifest names them with
``participant_similarity = FILE`` or ``participant_dissimilarity = FILE`` (the orientation
declared, as for the mean matrix), where FILE is

* ``.npy``: a (participants, n, n) array in the stimulus order, NaN where a participant did
  not rate a pair;
* ``.npz``: one such 3-D array (the only 3-D numeric one in the file);
* ``.csv``: a long table ``participant,i,j,value``, ``i`` and ``j`` stimulus names, one row a
  judgment. A participant who rated a pair several times (in either order) gets the mean of
  those ratings; pairs a participant did not rate are NaN.

A participant's matrix is symmetrized from whichever triangle holds its ratings; the diagonal
is NaN (a stimulus against itself is not a judgment).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from repalign._npy import read_npy, read_npz
from repalign.errors import InputError, MissingDataError, first_line, quote_token, quote_tokens

PARTICIPANT_SUFFIXES = (".npy", ".npz", ".csv")
LONG_COLUMNS = ("participant", "i", "j", "value")


def read_participant_matrices(
    path: str | os.PathLike, index_of: Mapping[str, int], n_stimuli: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The participants' matrices of a file, as ``(matrices, participant_ids)``.

    Args:
        path: ``.npy`` / ``.npz`` (a 3-D array) or ``.csv`` (``participant,i,j,value``).
        index_of: stimulus name -> row (names in the CSV must be among them).
        n_stimuli: n.

    Returns:
        matrices: (k, n, n) float64, symmetric, NaN where a participant gave no rating and on
        the diagonal; participant ids: ``"0".."k-1"`` for arrays, the CSV's ids (sorted) otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"Participant judgment file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        matrices, ids = _read_long_csv(path, index_of, n_stimuli)
    elif suffix in (".npy", ".npz"):
        matrices = _read_array(path)
        if matrices.shape[1:] != (n_stimuli, n_stimuli):
            raise InputError(
                f"{path.name} holds matrices of shape {matrices.shape[1:]}, but the dataset has {n_stimuli} stimuli; "
                "give one (n, n) matrix per participant in the stimulus order"
            )
        matrices = _symmetrized(matrices, path)
        ids = tuple(str(i) for i in range(len(matrices)))
    else:
        raise InputError(
            f"Unsupported participant file type {quote_token(suffix)} ({path.name}); "
            f"use one of {', '.join(PARTICIPANT_SUFFIXES)}"
        )
    if len(matrices) < 2:
        raise InputError(f"{path.name} holds {len(matrices)} participant(s); a noise ceiling needs at least 2")
    return matrices, ids


def _read_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        array = read_npy(path)
    else:
        arrays = [a for a in read_npz(path).values() if a.ndim == 3 and a.dtype.kind in "biuf"]
        if len(arrays) != 1:
            raise InputError(
                f"{path.name} holds {len(arrays)} 3-D numeric arrays; keep exactly one (participants, n, n)"
            )
        array = arrays[0]
    if array.ndim != 3 or array.dtype.kind not in "biuf":
        raise InputError(
            f"{path.name} must hold a numeric (participants, n, n) array; got {array.ndim}-D {array.dtype}"
        )
    array = array.astype(np.float64)
    if np.isinf(array).any():
        raise InputError(f"{path.name} holds infinite values; use NaN for a pair a participant did not rate")
    return array


def _symmetrized(matrices: np.ndarray, path: Path) -> np.ndarray:
    """Each matrix made symmetric: a pair rated in one triangle only is copied to the other;
    rated in both, the two values must agree (else the file is ambiguous)."""
    transposed = matrices.transpose(0, 2, 1)
    both = ~np.isnan(matrices) & ~np.isnan(transposed)
    scale = max(1.0, float(np.nanmax(np.abs(matrices)))) if both.any() else 1.0
    if np.any(np.abs(matrices[both] - transposed[both]) > 1e-6 * scale):
        raise InputError(
            f"{path.name}: a participant's matrix is not symmetric; give each pair once (one triangle) or equal in both"
        )
    out = np.where(np.isnan(matrices), transposed, matrices)
    diagonal = np.arange(matrices.shape[1])
    out[:, diagonal, diagonal] = np.nan
    return out


def _read_long_csv(path: Path, index_of: Mapping[str, int], n_stimuli: int) -> tuple[np.ndarray, tuple[str, ...]]:
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"Cannot parse participant file {path}: {first_line(exc)}") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    if not set(LONG_COLUMNS) <= set(table.columns):
        raise InputError(
            f"Participant file {path.name} has columns {quote_tokens(table.columns)}; expected 'participant,i,j,value'"
        )
    if len(table) == 0:
        raise InputError(f"Participant file {path.name} has no judgments")
    rows = {}
    for column in ("i", "j"):
        names = table[column].str.strip()
        unknown = ~names.isin(list(index_of))
        if unknown.any():
            line = int(np.flatnonzero(unknown.to_numpy())[0])
            raise InputError(
                f"Unknown stimulus name {quote_token(names.iloc[line])} in column '{column}' of {path.name} "
                f"(line {line + 2}); names must match the stimulus list"
            )
        rows[column] = names.map(index_of).to_numpy(dtype=np.intp)
    values = pd.to_numeric(table["value"].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        line = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"In {path.name} line {line + 2}, value {quote_token(table['value'].iloc[line])} is not a number"
        )
    same = rows["i"] == rows["j"]
    if same.any():
        raise InputError(f"In {path.name} line {int(np.flatnonzero(same)[0]) + 2}, i and j name the same stimulus")
    ids, participant = np.unique(table["participant"].str.strip().to_numpy(dtype=str), return_inverse=True)
    # the mean of every (participant, unordered pair): sums and counts, then divide
    low, high = np.minimum(rows["i"], rows["j"]), np.maximum(rows["i"], rows["j"])
    flat = (participant * n_stimuli + low) * n_stimuli + high
    size = len(ids) * n_stimuli * n_stimuli
    sums = np.bincount(flat, weights=values, minlength=size)
    counts = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrices = (sums / counts).reshape(len(ids), n_stimuli, n_stimuli)
    return _symmetrized(matrices, path), tuple(str(i) for i in ids)
