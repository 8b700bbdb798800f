"""A human dataset from one matrix file, without a manifest: ``--human sim.csv``.

The file holds a square (n, n) matrix, or a condensed vector of its n(n-1)/2 upper-triangle
values in the order of ``scipy.spatial.distance.pdist`` (``squareform`` turns one into the
other): ``.csv``/``.tsv``/``.txt``, ``.npy``, ``.npz`` or ``.mat``. Stimulus names come
from the file (a CSV header or first column; an ``.npz`` array ``stimuli`` or ``names``) or
from a names file (one name a line, or a CSV with a ``name`` column), in matrix order.

The values are similarities unless declared dissimilarities (``dissimilarity=True``, the
CLI's ``--dissimilarity``): as in a manifest, the orientation is stated, never guessed, and
a dissimilarity D becomes the similarity -D. The dataset is matrix-only (no images): score it
with an embeddings file whose stimulus names match (``align --embeddings FILE``).

Example:
    >>> from repalign.data.matrix_file import load_human_file
    >>> human = load_human_file("rdm.npy", names="names.txt", dissimilarity=True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from repalign.data import _matrix_io
from repalign.data.human import HumanSimilarity, check_similarity_matrix
from repalign.errors import InputError, MissingDataError, quote_tokens

#: suffixes a single-file human dataset may have (those of the matrix readers)
MATRIX_FILE_SUFFIXES = _matrix_io.MATRIX_SUFFIXES
#: .npz arrays read as the stimulus names, in this order
NPZ_NAME_KEYS = ("stimuli", "names")


def is_matrix_file(path: str | os.PathLike) -> bool:
    """True for a path whose suffix is a matrix file's (a manifest or pickle is not one)."""
    return Path(path).suffix.lower() in MATRIX_FILE_SUFFIXES


def load_human_file(
    path: str | os.PathLike,
    *,
    names: str | os.PathLike | Sequence[str] | None = None,
    dissimilarity: bool = False,
    symmetrize: bool = False,
) -> HumanSimilarity:
    """A matrix-only human dataset from one file (see the module docstring).

    Args:
        path: the matrix file: square (n, n) or condensed (n(n-1)/2,) in pdist order.
        names: a names file, or the names themselves, in matrix order (None: the file's own).
        dissimilarity: the values are dissimilarities (distances); they become -D.
        symmetrize: average S and S^T instead of refusing an asymmetric square matrix.

    Returns:
        A :class:`~repalign.data.human.HumanSimilarity` named after the file's stem.

    Raises:
        MissingDataError: the file (or the names file) does not exist.
        InputError: no names anywhere, names that differ from the file's, a vector whose
            length is no n(n-1)/2, and every check of a manifest's matrix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingDataError(f"Human similarity file not found: {path}")
    label = f"{path.stem} ({path.name})"
    values, file_names = _read(path)
    listed = _names(names)
    if listed is not None and file_names is not None and list(listed) != list(file_names):
        raise InputError(f"{label}: the names file differs from the names in {path.name} (order matters)")
    stimuli = listed if listed is not None else file_names
    matrix = _square(values, label)
    if stimuli is None:
        raise InputError(
            f"{label}: no stimulus names; give a names file (--human-names FILE, one name a line in matrix "
            "order), or put them in the file (a CSV header, an .npz array 'stimuli')"
        )
    if dissimilarity:
        matrix = -matrix  # larger = more similar, as for a manifest's 'dissimilarity'
    matrix = check_similarity_matrix(matrix, [str(s) for s in stimuli], label=label, symmetrize=symmetrize)
    return HumanSimilarity(
        name=path.stem,
        stimuli=tuple(str(s) for s in stimuli),
        similarity=matrix,
        source=str(path),
        missing_images_reason=(
            f"Dataset '{path.stem}' is a matrix file without images; score it with an embeddings file "
            "(repalign align --embeddings FILE), or describe its images in a manifest (docs/data.md)"
        ),
    )


def _read(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The file's values (a matrix or a vector) and the names it carries."""
    if path.suffix.lower() != ".npz":
        values, names = _matrix_io.read_matrix(path)
        return values, names
    from repalign._npy import read_npz

    arrays = read_npz(path)
    name_key = next((k for k in NPZ_NAME_KEYS if k in arrays), None)
    numeric = [k for k, v in arrays.items() if k != name_key and v.dtype.kind in "biuf" and v.ndim in (1, 2)]
    if len(numeric) != 1:
        raise InputError(
            f"{path.name} holds {len(numeric)} numeric arrays ({quote_tokens(numeric, shown=5) or 'none'}); "
            "keep one matrix (or condensed vector) beside an optional 'stimuli' array"
        )
    names = None
    if name_key is not None:
        array = arrays[name_key]
        if array.dtype.kind not in "US":
            raise InputError(f"{path.name}: {name_key!r} must hold strings; got dtype {array.dtype}")
        names = [str(s) for s in array.reshape(-1)]
    return np.asarray(arrays[numeric[0]], dtype=np.float64), names


def _names(names) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, (str, os.PathLike)):
        return _matrix_io.read_names(names)
    return [str(s) for s in names]


def _square(values: np.ndarray, label: str) -> np.ndarray:
    """A square matrix as given; a condensed vector (also a single CSV row or column) expanded."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2 and values.shape[0] == values.shape[1] and values.shape[0] > 1:
        return values
    if values.ndim == 2 and 1 in values.shape:
        values = values.reshape(-1)
    if values.ndim != 1:
        raise InputError(
            f"{label}: shape {values.shape} is neither a square matrix nor a condensed vector of pairs (pdist order)"
        )
    m = len(values)
    n = (1 + math.isqrt(1 + 8 * m)) // 2
    if n * (n - 1) // 2 != m or m == 0:
        raise InputError(
            f"{label}: a condensed vector of {m} values is not n(n-1)/2 pairs for any n; give the "
            "upper triangle in scipy.spatial.distance.pdist order, or the square matrix"
        )
    from scipy.spatial.distance import squareform

    # squareform puts 0 on the diagonal; alignment reads only the pairs i < j
    return squareform(values, checks=False)
