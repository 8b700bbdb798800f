"""Readers for the files of user-provided human datasets.

* :func:`read_matrix` -- a square matrix from CSV/TSV/TXT, NPY, NPZ or MAT, with the
  stimulus names when the file carries them (CSV header / index column, an NPZ or MAT
  variable named by ``names_key``).
* :func:`read_names` -- a stimulus-name list (one name a line, or a CSV with a ``name`` column).
* :func:`read_triplets` -- a triplet-judgment CSV into :class:`~repalign.data.judgments.TripletJudgments`.

Readers only parse: every unreadable, corrupt or malformed file raises a one-line
:class:`~repalign.errors.InputError` naming the file; a missing file raises
:class:`~repalign.errors.MissingDataError`. Checks on the *values* (square, symmetric, ...)
are done by :mod:`repalign.data.human`. An error quotes at most a few short tokens of the
file (a cell, a name, with its line), never more of its content. Text files may start with
a UTF-8 byte-order mark (Excel writes one); it is not part of the first name or cell.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from repalign._npy import read_npy, read_npz
from repalign.data.judgments import TripletJudgments
from repalign.errors import InputError, MissingDataError, first_line, quote_token, quote_tokens

MATRIX_SUFFIXES = (".csv", ".tsv", ".txt", ".npy", ".npz", ".mat")
#: Cell texts read as a missing value (NaN) in CSV matrices.
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "-"})
NAME_COLUMNS = ("name", "stimulus", "stimuli", "filename", "file", "image")
#: Text files are read with this codec: UTF-8 that drops a leading byte-order mark.
TEXT_ENCODING = "utf-8-sig"


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise MissingDataError(f"{what} not found: {path}")


def read_matrix(
    path: str | os.PathLike, *, key: str | None = None, names_key: str | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Read a matrix file.

    Args:
        path: ``.csv``/``.tsv``/``.txt`` (text; names may be in a header row and/or first
            column), ``.npy``, ``.npz`` or ``.mat`` (MATLAB up to v7; v7.3 is HDF5 and refused).
        key: the variable holding the matrix in ``.npz``/``.mat`` files (optional when the
            file holds exactly one 2-D numeric array).
        names_key: the variable holding the stimulus names in ``.npz``/``.mat`` files.

    Returns:
        ``(matrix, names)``: matrix as float64 with NaN for missing cells, any shape (the
        caller checks it); names or ``None`` when the file has none.
    """
    path = Path(path)
    _require_file(path, "Matrix file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        if key or names_key:
            raise InputError(f"matrix_key / names_key apply to .npz and .mat files, not to {path.name}")
        return _read_text_matrix(path)
    if suffix == ".npy":
        if key or names_key:
            raise InputError(f"matrix_key / names_key apply to .npz and .mat files, not to {path.name}")
        return _as_float_matrix(read_npy(path), path), None
    if suffix == ".npz":
        return _read_variables(path, read_npz(path), key, names_key)
    if suffix == ".mat":
        return _read_variables(path, _load_mat(path), key, names_key)
    raise InputError(f"Unsupported matrix file type '{suffix}' ({path}); use one of {', '.join(MATRIX_SUFFIXES)}")


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except NotImplementedError as exc:  # scipy's message for v7.3 (HDF5) files
        raise InputError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it with "
            "save(..., '-v7') or export the matrix as .npy/.csv"
        ) from exc
    except Exception as exc:  # scipy raises MatReadError, IndexError, ValueError ... on damaged files
        raise InputError(f"Corrupt or unreadable .mat file {path}: {type(exc).__name__}: {exc}") from exc
    return {k: v for k, v in contents.items() if not k.startswith("__")}


def _read_variables(
    path: Path, variables: Mapping[str, np.ndarray], key: str | None, names_key: str | None
) -> tuple[np.ndarray, list[str] | None]:
    if key is None:
        candidates = [k for k, v in variables.items() if k != names_key and v.ndim == 2 and v.dtype.kind in "biuf"]
        if len(candidates) != 1:
            found = ", ".join(f"{quote_token(k)} {variables[k].shape}" for k in list(variables)[:5]) or "nothing"
            more = f" and {len(variables) - 5} more" if len(variables) > 5 else ""
            raise InputError(
                f"{path.name} holds {len(candidates)} 2-D numeric arrays ({found}{more}); "
                "name the matrix with matrix_key in the manifest"
            )
        key = candidates[0]
    if key not in variables:
        raise InputError(
            f"{path.name} has no variable {quote_token(key)}; it holds: {quote_tokens(variables, shown=5) or 'nothing'}"
        )
    names = None
    if names_key is not None:
        if names_key not in variables:
            raise InputError(
                f"{path.name} has no variable {quote_token(names_key)}; it holds: "
                f"{quote_tokens(variables, shown=5) or 'nothing'}"
            )
        names = _strings(variables[names_key], path, names_key)
    return _as_float_matrix(variables[key], path), names


def _strings(array: np.ndarray, path: Path, key: str) -> list[str]:
    """Names from a numpy string array, a MATLAB cell array of strings, or a char matrix."""
    if array.dtype.kind in "US" and array.ndim == 2 and path.suffix.lower() == ".mat":
        return [str(row).strip() for row in array]  # MATLAB char matrix: one padded row per name
    if array.dtype.kind in "US":
        return [x.decode() if isinstance(x, bytes) else str(x) for x in array.ravel().tolist()]
    if array.dtype == object:  # MATLAB cell array: each cell is a 1-element string array
        out = []
        for cell in array.ravel():
            cell = np.asarray(cell).ravel()
            if cell.size != 1 or cell.dtype.kind not in "US":
                raise InputError(f"Variable {quote_token(key)} in {path.name} must hold one string per stimulus")
            out.append(str(cell[0]))
        return out
    raise InputError(f"Variable {quote_token(key)} in {path.name} holds {array.dtype} values, not stimulus names")


def _as_float_matrix(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise InputError(f"Matrix in {path.name} holds {array.dtype} values; expected numbers")
    return np.array(array, dtype=np.float64)


def _read_text_matrix(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """CSV/TSV/whitespace text; a header row and/or a first column of names are detected
    by their non-numeric cells (numeric stimulus names therefore need a separate name list)."""
    import pandas as pd

    sep = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower(), r"\s+")
    try:
        table = pd.read_csv(
            path, sep=sep, header=None, dtype=str, keep_default_na=False, engine="python", encoding=TEXT_ENCODING
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"Cannot parse matrix file {path}: {first_line(exc)}") from exc
    cells = table.to_numpy(dtype=object)
    cells = np.vectorize(lambda s: str(s).strip(), otypes=[object])(cells)
    values = pd.DataFrame(cells).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    is_missing = np.vectorize(lambda s: s.lower() in MISSING_TOKENS, otypes=[bool])(cells)
    bad = np.isnan(values) & ~is_missing
    header = bool(cells.shape[0] and bad[0, 1:].any()) or bool(cells.shape[1] == 1 and bad[0, 0])
    first_row = 1 if header else 0
    index = bool(cells.shape[0] > first_row and bad[first_row:, 0].any())
    first_col = 1 if index else 0
    body_bad = bad[first_row:, first_col:]
    if body_bad.any():
        r, c = np.argwhere(body_bad)[0]
        raise InputError(
            f"Non-numeric entry {quote_token(cells[r + first_row, c + first_col])} in {path.name} at row "
            f"{r + first_row + 1}, column {c + first_col + 1}; matrix cells must be numbers (empty or NaN = missing pair)"
        )
    matrix = values[first_row:, first_col:]
    col_names = [str(x) for x in cells[0, first_col:]] if header else None
    row_names = [str(x) for x in cells[first_row:, 0]] if index else None
    if col_names is not None and row_names is not None and col_names != row_names:
        raise InputError(
            f"Row names and column names of {path.name} differ; they must list the stimuli in the same order"
        )
    return matrix, col_names or row_names


def read_names(path: str | os.PathLike) -> list[str]:
    """Stimulus names: one a line (``.txt``, blank lines skipped), or a CSV/TSV with a header
    holding a ``name`` (or ``stimulus``/``filename``) column."""
    path = Path(path)
    _require_file(path, "Stimulus list")
    try:
        if path.suffix.lower() in (".csv", ".tsv"):
            import pandas as pd

            table = pd.read_csv(
                path,
                sep="\t" if path.suffix.lower() == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                encoding=TEXT_ENCODING,
            )
            columns = {str(c).strip().lower(): c for c in table.columns}
            column = next((columns[c] for c in NAME_COLUMNS if c in columns), None)
            if column is None:
                raise InputError(
                    f"Stimulus list {path.name} needs a header with a 'name' column; found columns: "
                    f"{quote_tokens(table.columns)}"
                )
            return [str(x).strip() for x in table[column]]
        text = path.read_text(encoding=TEXT_ENCODING)
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"Cannot read stimulus list {path}: {first_line(exc)}") from exc
    except InputError:
        raise
    except Exception as exc:  # pandas parser errors
        raise InputError(f"Cannot parse stimulus list {path}: {first_line(exc)}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


TRIPLET_COLUMNS = {"triplet": ("anchor", "positive", "negative"), "odd_one_out": ("i", "j", "k", "odd")}


def read_triplets(path: str | os.PathLike, index_of: Mapping[str, int], n_stimuli: int) -> TripletJudgments:
    """Read a triplet-judgment CSV.

    Args:
        path: CSV with columns ``anchor,positive,negative`` ("anchor is more similar to
            positive than to negative") or ``i,j,k,odd`` (odd-one-out; ``odd`` is one of
            i, j, k), plus an optional positive-integer ``count`` column.
        index_of: stimulus name -> row of the similarity matrix.
        n_stimuli: number of stimuli.

    Returns:
        TripletJudgments with ``m`` = number of rows.
    """
    path = Path(path)
    _require_file(path, "Triplet judgment file")
    table = read_triplet_table(path)
    kind = next((k for k, cols in TRIPLET_COLUMNS.items() if set(cols) <= set(table.columns)), None)
    if kind is None:
        raise InputError(
            f"Triplet file {path.name} has columns {quote_tokens(table.columns)}; expected "
            "'anchor,positive,negative' or 'i,j,k,odd' (plus an optional 'count')"
        )
    if len(table) == 0:
        raise InputError(f"Triplet file {path.name} has no judgments")
    names = {c: table[c].str.strip().to_numpy(dtype=object) for c in TRIPLET_COLUMNS[kind]}
    for column, values in names.items():
        unknown = [(row, v) for row, v in enumerate(values, start=2) if v not in index_of]
        if unknown:
            shown = ", ".join(f"{quote_token(v)} (line {row})" for row, v in unknown[:3])
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise InputError(
                f"Unknown stimulus name(s) in column '{column}' of {path.name}: {shown}{more}; "
                "names must match the stimulus list / image files"
            )
    idx = {c: np.array([index_of[v] for v in values], dtype=np.int64) for c, values in names.items()}
    counts = _counts(table, path)
    if kind == "triplet":
        a, b, c = idx["anchor"], idx["positive"], idx["negative"]
    else:
        i, j, k, odd = idx["i"], idx["j"], idx["k"], idx["odd"]
        not_member = (odd != i) & (odd != j) & (odd != k)
        if not_member.any():
            row = int(np.flatnonzero(not_member)[0]) + 2
            raise InputError(f"In {path.name} line {row}, 'odd' is not one of i, j, k")
        # The two stimuli that are not odd form the similar pair; the odd one goes last.
        first = np.where(odd == i, j, i)
        second = np.where(odd == k, j, k)
        a, b, c = first, second, odd
    repeated = (a == b) | (a == c) | (b == c)
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0]) + 2
        raise InputError(
            f"In {path.name} line {row}, a triplet names the same stimulus twice; it needs 3 distinct stimuli"
        )
    return TripletJudgments(kind=kind, a=a, b=b, c=c, counts=counts, n_stimuli=n_stimuli)


def _counts(table, path: Path) -> np.ndarray:
    if "count" not in table.columns:
        return np.ones(len(table), dtype=np.int64)
    import pandas as pd

    raw = table["count"].str.strip()
    counts = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(counts) | (counts <= 0) | (counts != np.round(counts))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"In {path.name} line {row + 2}, count {quote_token(raw.iloc[row])} is not a positive integer")
    return counts.astype(np.int64)


def read_triplet_table(path: Path):
    """The raw table of a triplet CSV (every cell a stripped string, column names lower case)."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding=TEXT_ENCODING)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"Cannot parse triplet file {path}: {first_line(exc)}") from exc
    except OSError as exc:
        raise InputError(f"Cannot read triplet file {path}: {first_line(exc)}") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    repeated = sorted({c for c in table.columns if list(table.columns).count(c) > 1})
    if repeated:
        raise InputError(f"Triplet file {path.name} names column(s) {quote_tokens(repeated)} more than once")
    return table
