"""Human similarity datasets: Peterson et al. (2018) and datasets users bring themselves.

``load_human(spec)`` accepts

* ``"peterson"`` (all six domains) or ``"peterson:<domain>"`` with domain one of
  animals, automobiles, fruits, furniture, various, vegetables;
* a manifest file (``repalign.toml`` or ``repalign.json``) or a folder holding one;
* a pickle in the upstream Peterson format (``{domain: {"similarity", "fnames"}}``),
  read with the restricted unpickler;
* one matrix file (``sim.csv``, ``rdm.npy``, ...), square or condensed in ``pdist`` order,
  without a manifest: see :mod:`repalign.data.matrix_file`.

A manifest describes (all paths relative to the manifest's folder)::

    name = "my-study"                 # default: the folder's name
    images = "images"                 # folder of image files (optional)
    stimuli = "stimuli.txt"           # name list (or an inline array); optional when the
                                      # matrix file carries names or images define them
    similarity = "sim.csv"            # or: dissimilarity = "rdm.npy"  (CSV, NPY, NPZ, MAT)
    matrix_key = "rdm"                # NPZ/MAT variable holding the matrix (optional)
    names_key = "names"               # NPZ/MAT variable holding the names (optional)
    symmetrize = false                # average S and S^T instead of refusing an asymmetric matrix
    symmetry_tolerance = 1e-6         # allowed |S - S^T|, relative to max(1, max |S|)
    triplets = "judgments.csv"        # anchor,positive,negative  or  i,j,k,odd  [+ count]
    participant_similarity = "p.csv"  # or participant_dissimilarity: one matrix per participant
                                      # (participant,i,j,value CSV, or a (k, n, n) .npy/.npz);
                                      # without a matrix, their mean is the dataset's matrix
    allow_outside = false             # let the paths above leave the manifest's folder

Every path must stay inside the manifest's folder once symlinks are resolved (image files
included), so a dataset someone hands over cannot make repalign read, and quote in an
error, a file elsewhere (``stimuli = "../../etc/passwd"``); ``allow_outside = true`` is the
explicit opt-in for data kept elsewhere (e.g. images symlinked from a shared folder).

The orientation is always declared (``similarity`` or ``dissimilarity``), never guessed. A
dissimilarity matrix D is converted to the similarity -D: negation reverses the order of
every pair, so rank (Spearman, triplet) alignment is unchanged and Pearson correlation only
changes sign -- which is exactly the flip from "distance" to "similarity".
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repalign.data.judgments import TripletJudgments
from repalign.errors import (
    InputError,
    MissingDataError,
    did_you_mean,
    first_line,
    quote_token,
    quote_tokens,
    unknown_name,
)

logger = logging.getLogger(__name__)

PETERSON_DOMAINS = ("animals", "automobiles", "fruits", "furniture", "various", "vegetables")
#: Domains whose images are registered datasets (the others are matrix-only here).
PETERSON_IMAGE_DATASETS = {domain: f"peterson-images-{domain}" for domain in ("animals", "fruits", "vegetables")}
MANIFEST_NAMES = ("repalign.toml", "repalign.json")
MANIFEST_KEYS = (
    "name",
    "description",
    "images",
    "stimuli",
    "similarity",
    "dissimilarity",
    "matrix_key",
    "names_key",
    "symmetrize",
    "symmetry_tolerance",
    "triplets",
    "participant_similarity",
    "participant_dissimilarity",
    "allow_outside",
)
DEFAULT_SYMMETRY_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class HumanSimilarity:
    """A human similarity dataset in canonical form.

    Attributes:
        name: ``"peterson:animals"`` or the user dataset's name.
        stimuli: stimulus names in matrix order, length n.
        similarity: (n, n) float64, larger = more similar, symmetric, NaN = missing pair;
            read-only. ``None`` for judgment-only datasets.
        judgments: explicit triplet judgments (indices into ``stimuli``), or ``None``.
        participants: (k, n, n) float64, one similarity matrix per participant (NaN = a pair
            the participant did not rate), read-only; ``None`` when only the mean is known.
            Noise ceilings and reliability need it (:mod:`repalign.alignment.ceiling`).
        image_paths: n image files in stimulus order, or ``None`` when images are not available.
        source: where the data came from (file path or dataset name), for reports.
        images_dataset: the registered dataset its images are fetched from (e.g.
            ``"peterson-images-animals"``), or ``None`` (a user folder, or no images anywhere).
            Without ``image_paths`` it tells "could not be fetched here" (a name) from "there
            are none" (``None``).
    """

    name: str
    stimuli: tuple[str, ...]
    similarity: np.ndarray | None = None
    judgments: TripletJudgments | None = None
    image_paths: tuple[Path, ...] | None = None
    source: str = ""
    images_dataset: str | None = None
    #: Why images are unavailable (the message of :meth:`images`' error).
    missing_images_reason: str | None = field(default=None, repr=False)
    participants: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.stimuli)
        object.__setattr__(self, "stimuli", tuple(self.stimuli))
        if self.similarity is not None:
            # A read-only float64 view: shared by every consumer, never mutated, and the
            # caller's own array keeps its flags (no copy when it is float64 already).
            view = np.asarray(self.similarity, dtype=np.float64).view()
            view.setflags(write=False)
            object.__setattr__(self, "similarity", view)
            if view.shape != (n, n):
                raise InputError(f"{self.name}: similarity shape {view.shape} does not match {n} stimuli")
        if self.participants is not None:
            view = np.asarray(self.participants, dtype=np.float64).view()
            view.setflags(write=False)
            object.__setattr__(self, "participants", view)
            if view.ndim != 3 or view.shape[1:] != (n, n):
                raise InputError(f"{self.name}: participant matrices of shape {view.shape} do not match {n} stimuli")
        if self.image_paths is not None and len(self.image_paths) != n:
            raise InputError(f"{self.name}: {len(self.image_paths)} image paths for {n} stimuli")
        if self.judgments is not None and self.judgments.n_stimuli != n:
            raise InputError(f"{self.name}: judgments refer to {self.judgments.n_stimuli} stimuli, not {n}")
        if self.similarity is None and self.judgments is None:
            raise InputError(f"{self.name}: a human dataset needs a similarity matrix or triplet judgments")

    @property
    def n_stimuli(self) -> int:
        return len(self.stimuli)

    @property
    def n_missing_pairs(self) -> int:
        """Stimulus pairs (i < j) without a human value (NaN); alignment metrics exclude them."""
        if self.similarity is None:
            return 0
        upper = np.triu_indices(self.n_stimuli, k=1)
        return int(np.isnan(self.similarity[upper]).sum())

    @property
    def has_images(self) -> bool:
        return self.image_paths is not None

    def images(self):
        """The stimuli as a :class:`~repalign.data.images.FileImageSet`, in stimulus order.

        Raises:
            MissingDataError: naming the missing image files and how to provide them.
        """
        from repalign.data.images import FileImageSet

        if self.image_paths is None:
            raise MissingDataError(self.missing_images_reason or f"No images are available for '{self.name}'")
        return FileImageSet(self.image_paths, name=self.name)


# --------------------------------------------------------------------------- entry points


def list_human_datasets() -> list[str]:
    """Names :func:`load_human` accepts besides paths: ``peterson`` and ``peterson:<domain>``."""
    return ["peterson", *(f"peterson:{d}" for d in PETERSON_DOMAINS)]


def load_human(
    spec: str | os.PathLike,
    *,
    progress: bool = False,
    names: str | os.PathLike | None = None,
    dissimilarity: bool = False,
) -> list[HumanSimilarity]:
    """Load human similarity data.

    Args:
        spec: ``"peterson"``, ``"peterson:<domain>"``, a manifest (``repalign.toml`` /
            ``repalign.json``), a folder holding one, an upstream-format Peterson pickle, or
            one matrix file (:func:`repalign.data.matrix_file.load_human_file`).
        progress: show progress bars while data is copied/downloaded into the data home.
        names, dissimilarity: for a matrix file only: its names file, and whether its values
            are dissimilarities.

    Returns:
        One :class:`HumanSimilarity` per dataset (six for ``"peterson"``).
    """
    from repalign.data.matrix_file import is_matrix_file, load_human_file

    text = os.fspath(spec)
    path = Path(text).expanduser()
    if (names is not None or dissimilarity) and not (path.is_file() and is_matrix_file(path)):
        raise InputError(
            f"A names file and --dissimilarity apply to one matrix file (.csv, .npy, ...); '{text}' is not one"
        )
    if text == "peterson" or text.startswith("peterson:"):
        return _load_peterson(text, progress=progress)
    if path.is_dir():
        return [load_manifest(_find_manifest(path))]
    if path.is_file():
        if path.suffix.lower() in (".pkl", ".pickle"):
            return _peterson_from_arrays(read_peterson_pickle(path), source=str(path), progress=progress)
        if is_matrix_file(path):
            return [load_human_file(path, names=names, dissimilarity=dissimilarity)]
        return [load_manifest(path)]
    if os.sep in text or "/" in text or Path(text).suffix:
        raise MissingDataError(f"Human dataset path not found: {path}")
    raise unknown_name("human dataset", text, list_human_datasets())


# --------------------------------------------------------------------------- Peterson


def _parse_peterson(spec: str) -> list[str]:
    if spec == "peterson":
        return list(PETERSON_DOMAINS)
    domain = spec.split(":", 1)[1]
    if domain not in PETERSON_DOMAINS:
        raise unknown_name("Peterson domain", domain, PETERSON_DOMAINS)
    return [domain]


def _load_peterson(spec: str, *, progress: bool) -> list[HumanSimilarity]:
    from repalign.data import fetch_file

    domains = _parse_peterson(spec)
    arrays = read_peterson_npz(fetch_file("peterson-similarity", "similarity.npz", progress=progress))
    return _peterson_from_arrays({d: arrays[d] for d in domains}, source="peterson-similarity", progress=progress)


def _peterson_from_arrays(
    arrays: dict[str, tuple[np.ndarray, tuple[str, ...]]], *, source: str, progress: bool
) -> list[HumanSimilarity]:
    out = []
    for domain, (similarity, fnames) in arrays.items():
        label = f"peterson:{domain}"
        similarity = check_similarity_matrix(similarity, fnames, label=label)
        image_paths, reason = _peterson_images(domain, fnames, progress=progress)
        out.append(
            HumanSimilarity(
                name=label,
                stimuli=tuple(fnames),
                similarity=similarity,
                image_paths=image_paths,
                source=source,
                images_dataset=PETERSON_IMAGE_DATASETS.get(domain),
                missing_images_reason=reason,
            )
        )
    return out


def _peterson_images(
    domain: str, fnames: tuple[str, ...], *, progress: bool
) -> tuple[tuple[Path, ...] | None, str | None]:
    """Image paths of a domain in stimulus order, or (None, why not)."""
    from repalign.data import fetch

    shown = ", ".join(fnames[:3]) + (f" and {len(fnames) - 3} more" if len(fnames) > 3 else "")
    dataset = PETERSON_IMAGE_DATASETS.get(domain)
    if dataset is None:
        return None, (
            f"Images of Peterson domain '{domain}' are not available ({len(fnames)} files missing: {shown}); only "
            f"{', '.join(PETERSON_IMAGE_DATASETS)} have registered images. The matrix works for matrix-only analyses; "
            "to use images, put the files in a folder and describe it with a repalign.toml manifest (see docs/data.md)."
        )
    try:
        folder = fetch(dataset, progress=progress)
    except MissingDataError as exc:
        return None, f"Images of Peterson domain '{domain}' are missing ({shown}): {exc}"
    paths = tuple(folder / name for name in fnames)
    absent = [p.name for p in paths if not p.is_file()]
    if absent:  # the registry and the matrix disagree: a packaging error, not user input
        return (
            None,
            f"Images of Peterson domain '{domain}' lack {len(absent)} stimuli of the matrix: {', '.join(absent[:3])}",
        )
    return paths, None


def read_peterson_npz(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """The mirror's ``similarity.npz``: domain -> ((120, 120) float64 similarity, 120 names)."""
    from repalign._npy import read_npz

    variables = read_npz(Path(path))
    out = {}
    for domain in PETERSON_DOMAINS:
        try:
            similarity, fnames = variables[f"{domain}__similarity"], variables[f"{domain}__fnames"]
        except KeyError as exc:
            raise InputError(f"{path} is not a Peterson similarity file: no {quote_token(exc.args[0])} array") from exc
        out[domain] = (np.asarray(similarity, dtype=np.float64), tuple(str(x) for x in fnames))
    return out


def read_peterson_pickle(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """The upstream pickle ``{domain: {"similarity": array, "fnames": names}}``, read with the
    restricted unpickler (numpy arrays and plain containers only; anything else is refused
    before it runs). Stimuli are put in sorted name order, as in the mirror's ``.npz``."""
    from repalign._safe_pickle import safe_load

    with open(path, "rb") as handle:
        payload = safe_load(handle, encoding="latin1")
    if not isinstance(payload, dict) or not payload:
        raise InputError(f"{path} is not a Peterson pickle: expected a dict of domains, got {type(payload).__name__}")
    out = {}
    for domain, entry in payload.items():
        if not isinstance(entry, dict) or not {"similarity", "fnames"} <= set(entry):
            raise InputError(f"{path}: domain {quote_token(domain)} must be a dict with 'similarity' and 'fnames'")
        similarity = np.asarray(entry["similarity"])
        if similarity.dtype.kind not in "biuf":
            raise InputError(
                f"{path}: similarity of domain {quote_token(domain)} holds {similarity.dtype}, not numbers"
            )
        fnames = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(entry["fnames"]).ravel().tolist()]
        order = np.argsort(np.asarray(fnames), kind="stable")
        similarity = np.asarray(similarity, dtype=np.float64)
        if similarity.shape != (len(fnames), len(fnames)):
            raise InputError(
                f"{path}: domain {quote_token(domain)} has a {similarity.shape} matrix for {len(fnames)} names"
            )
        out[str(domain)] = (similarity[np.ix_(order, order)], tuple(fnames[i] for i in order))
    return out


def convert_peterson_pickle(raw_path: Path, out_path: Path) -> None:
    """Registry converter: upstream Peterson pickle -> the ``.npz`` layout of the mirror."""
    arrays = read_peterson_pickle(raw_path)
    missing = [d for d in PETERSON_DOMAINS if d not in arrays]
    if missing:
        raise InputError(f"Peterson pickle lacks domain(s): {', '.join(missing)}")
    payload = {}
    for domain in PETERSON_DOMAINS:
        similarity, fnames = arrays[domain]
        payload[f"{domain}__similarity"] = similarity
        payload[f"{domain}__fnames"] = np.asarray(fnames, dtype=str)
    with open(out_path, "wb") as handle:
        np.savez(handle, **payload)


# --------------------------------------------------------------------------- validation


def check_similarity_matrix(
    matrix: np.ndarray,
    names: list[str] | tuple[str, ...],
    *,
    label: str,
    symmetrize: bool = False,
    tolerance: float = DEFAULT_SYMMETRY_TOLERANCE,
) -> np.ndarray:
    """Validate a human similarity matrix and return it in canonical form.

    Args:
        matrix: (n, n) numbers; NaN marks a missing pair.
        names: n distinct stimulus names.
        label: dataset/file name used in error messages.
        symmetrize: average ``S`` and ``S.T`` (where only one of the two is present, use it)
            instead of refusing an asymmetric matrix.
        tolerance: largest ``|S[i,j] - S[j,i]|`` accepted, relative to ``max(1, max|S|)``.

    Returns:
        (n, n) float64, exactly symmetric, NaN for missing pairs (kept: alignment excludes them).
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise InputError(
            f"{label}: the matrix is not square (shape {matrix.shape}); it needs one row and one column per stimulus"
        )
    if matrix.dtype.kind not in "biuf":
        raise InputError(f"{label}: the matrix holds {matrix.dtype} values; expected numbers")
    n = matrix.shape[0]
    if n < 3:
        raise InputError(f"{label}: only {n} stimuli; alignment needs at least 3")
    _check_names(names, n, label=label)
    matrix = np.array(matrix, dtype=np.float64)
    if np.isinf(matrix).any():
        i, j = np.argwhere(np.isinf(matrix))[0]
        raise InputError(
            f"{label}: infinite value at ({quote_token(names[i])}, {quote_token(names[j])}); "
            "use NaN (or an empty cell) for a missing pair"
        )
    off = ~np.eye(n, dtype=bool)
    missing = np.isnan(matrix)
    one_sided = (missing != missing.T) & off
    scale = max(1.0, float(np.nanmax(np.abs(matrix))) if not missing.all() else 1.0)
    diff = np.where(missing | missing.T, 0.0, np.abs(matrix - matrix.T))
    if symmetrize:
        both = np.where(missing, matrix.T, np.where(missing.T, matrix, (matrix + matrix.T) / 2))
        matrix = both
    elif one_sided.any() or diff.max() > tolerance * scale:
        if one_sided.any():
            i, j = np.argwhere(one_sided)[0]
            what = (
                f"S[{quote_token(names[i])}, {quote_token(names[j])}] is "
                f"{'missing' if missing[i, j] else 'present'} but its mirror entry is not"
            )
        else:
            i, j = np.unravel_index(np.argmax(diff), diff.shape)
            what = (
                f"|S - S^T| reaches {diff[i, j]:.4g} at ({quote_token(names[i])}, {quote_token(names[j])}) "
                f"(tolerance {tolerance * scale:.3g})"
            )
        raise InputError(
            f"{label}: the matrix is not symmetric: {what}; set symmetrize = true in the manifest to average S and S^T"
        )
    else:
        matrix = (matrix + matrix.T) / 2  # remove rounding-level asymmetry so both triangles agree exactly
    upper = matrix[np.triu_indices(n, k=1)]
    observed = upper[~np.isnan(upper)]
    if observed.size == 0:
        raise InputError(f"{label}: every stimulus pair is missing (NaN); there is nothing to compare against")
    if np.ptp(observed) == 0:
        raise InputError(
            f"{label}: the matrix is constant (every pair = {observed[0]:g}); it carries no similarity information"
        )
    n_missing = int(np.isnan(upper).sum())
    if n_missing:
        logger.info("%s: %d of %d stimulus pairs are missing and will be excluded", label, n_missing, upper.size)
    return matrix


def _check_names(names, n: int, *, label: str) -> None:
    if len(names) != n:
        raise InputError(
            f"{label}: {len(names)} stimulus names for a {n}x{n} matrix; the list must name every row in order"
        )
    if any(not str(x).strip() for x in names):
        raise InputError(f"{label}: the stimulus list contains an empty name")
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise InputError(f"{label}: duplicate stimulus name(s): {quote_tokens(duplicates)}; names must be unique")


# --------------------------------------------------------------------------- manifests


def _find_manifest(folder: Path) -> Path:
    found = [folder / name for name in MANIFEST_NAMES if (folder / name).is_file()]
    if len(found) > 1:
        raise InputError(f"{folder} holds both repalign.toml and repalign.json; keep one manifest")
    if not found:
        raise InputError(
            f"No manifest in {folder}: create repalign.toml (or repalign.json) describing the dataset (see docs/data.md)"
        )
    return found[0]


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML or JSON manifest and check its keys (unknown keys are errors, with a hint)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MissingDataError(f"Cannot read manifest {path}: {exc}") from exc
    try:
        # utf-8-sig: a byte-order mark (Notepad, Excel) is not part of the first key
        if path.suffix.lower() == ".json":
            manifest = json.loads(raw.decode("utf-8-sig"))
        elif path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python < 3.11
                import tomli as tomllib
            manifest = tomllib.loads(raw.decode("utf-8-sig"))
        else:
            raise InputError(f"Manifest {path.name} must be a .toml or .json file")
    except InputError:
        raise
    except (ValueError, RecursionError) as exc:  # JSON/TOML decode errors, bad UTF-8, absurd nesting
        raise InputError(f"Cannot parse manifest {path}: {first_line(exc)}") from exc
    if not isinstance(manifest, dict):
        raise InputError(f"Manifest {path} must be a table/object of keys")
    for key in manifest:
        if key not in MANIFEST_KEYS:
            hint = did_you_mean(str(key), MANIFEST_KEYS) or " Valid: " + ", ".join(MANIFEST_KEYS) + "."
            raise InputError(f"Unknown key {quote_token(key)} in manifest {path.name}.{hint}")
    return manifest


def load_manifest(path: str | os.PathLike) -> HumanSimilarity:
    """Load a user dataset described by a manifest (see the module docstring)."""
    from repalign.data import _matrix_io

    path = Path(path).resolve()
    manifest = read_manifest(path)
    root = path.parent
    inside = _Inside(root, allow_outside=bool(_get(manifest, "allow_outside", bool, path)), manifest=path)
    name = _get(manifest, "name", str, path) or root.name
    label = f"{name} ({path.name})"
    if "similarity" in manifest and "dissimilarity" in manifest:
        raise InputError(f"{label}: give either 'similarity' or 'dissimilarity', not both")
    orientation = (
        "similarity" if "similarity" in manifest else ("dissimilarity" if "dissimilarity" in manifest else None)
    )
    triplets_file = _get(manifest, "triplets", str, path)
    if "participant_similarity" in manifest and "participant_dissimilarity" in manifest:
        raise InputError(f"{label}: give either 'participant_similarity' or 'participant_dissimilarity', not both")
    participant_key = next((k for k in ("participant_similarity", "participant_dissimilarity") if k in manifest), None)
    participants_file = _get(manifest, participant_key, str, path) if participant_key else None
    if orientation is None and triplets_file is None and participants_file is None:
        raise InputError(
            f"{label}: the manifest needs 'similarity' or 'dissimilarity' (a matrix file, orientation declared) "
            "and/or 'triplets' (a judgment CSV) and/or 'participant_similarity' (one matrix per participant)"
        )
    symmetrize = _get(manifest, "symmetrize", bool, path) or False
    tolerance = _get(manifest, "symmetry_tolerance", (int, float), path)
    tolerance = DEFAULT_SYMMETRY_TOLERANCE if tolerance is None else float(tolerance)
    if not math.isfinite(tolerance) or tolerance < 0:  # NaN would pass every comparison, so check it first
        raise InputError(f"{label}: symmetry_tolerance must be a finite number >= 0; got {tolerance!r}")

    image_files = _image_files(inside, _get(manifest, "images", str, path), label)
    listed = _stimulus_list(manifest, inside, path)

    matrix = matrix_names = None
    if orientation is not None:
        matrix_file = inside.path(orientation, _get(manifest, orientation, str, path))
        matrix, matrix_names = _matrix_io.read_matrix(
            matrix_file, key=_get(manifest, "matrix_key", str, path), names_key=_get(manifest, "names_key", str, path)
        )
        if orientation == "dissimilarity":
            matrix = -matrix  # larger = more similar; see the module docstring
        if listed is not None and matrix_names is not None and list(matrix_names) != list(listed):
            raise InputError(f"{label}: the names in {matrix_file.name} differ from the stimulus list (order matters)")
    elif _get(manifest, "matrix_key", str, path) or _get(manifest, "names_key", str, path):
        raise InputError(f"{label}: matrix_key / names_key need a 'similarity' or 'dissimilarity' file")

    stimuli = listed if listed is not None else matrix_names
    if stimuli is None and image_files is not None:
        stimuli = [p.name for p in image_files]  # judgment-only dataset over an image folder
    if stimuli is None and (orientation is not None or participants_file is not None):
        raise InputError(
            f"{label}: no stimulus names: add 'stimuli' (a name list), or names inside the matrix file (CSV header, names_key)"
        )
    if stimuli is None:
        stimuli = _names_in_triplets(inside.path("triplets", triplets_file))
    stimuli = [str(s) for s in stimuli]

    participants = None
    if participants_file is not None:
        from repalign.data.participants import read_participant_matrices

        participants, _ = read_participant_matrices(
            inside.path(participant_key, participants_file), _name_index(stimuli), len(stimuli)
        )
        if participant_key == "participant_dissimilarity":
            participants = -participants  # larger = more similar, as the dataset's matrix
        if matrix is None:  # the participants' mean is the dataset's matrix; a pair nobody rated is NaN
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                matrix = np.nanmean(participants, axis=0)
            np.fill_diagonal(matrix, np.nanmax(matrix) if np.isfinite(matrix).any() else 0.0)
    if matrix is not None:
        matrix = check_similarity_matrix(matrix, stimuli, label=label, symmetrize=symmetrize, tolerance=tolerance)
    else:
        if len(stimuli) < 3:
            raise InputError(f"{label}: only {len(stimuli)} stimuli; alignment needs at least 3")
        _check_names(stimuli, len(stimuli), label=label)

    image_paths = _match_images(stimuli, image_files, label) if image_files is not None else None
    judgments = None
    if triplets_file is not None:
        judgments = _matrix_io.read_triplets(inside.path("triplets", triplets_file), _name_index(stimuli), len(stimuli))
    reason = None if image_paths is not None else f"Dataset '{name}' has no images: add 'images = \"FOLDER\"' to {path}"
    return HumanSimilarity(
        name=name,
        stimuli=tuple(stimuli),
        similarity=matrix,
        judgments=judgments,
        image_paths=image_paths,
        source=str(path),
        participants=participants,
        missing_images_reason=reason,
    )


def _get(manifest: dict, key: str, kind, path: Path):
    value = manifest.get(key)
    if value is not None and not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else "a number"
        raise InputError(f"Manifest {path.name}: '{key}' must be {expected}, got {_shown(value)}")
    return value


def _shown(value) -> str:
    """A manifest value for an error message: its repr, cut short (a manifest may hold a huge value)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Inside:
    """Resolves a manifest's paths, refusing any that leaves the dataset folder (after symlinks)
    unless the manifest sets ``allow_outside = true``."""

    def __init__(self, root: Path, *, allow_outside: bool, manifest: Path):
        self.root = root.resolve()
        self.allow_outside = allow_outside
        self.manifest = manifest

    def path(self, key: str, value: str) -> Path:
        """``root / value``, checked; ``key`` names the manifest entry in the error."""
        if "\0" in value:
            raise InputError(f"Manifest {self.manifest.name}: '{key}' holds a NUL character")
        path = self.root / value
        self.check(path, f"'{key}' = {quote_token(value, 60)}")
        return path

    def check(self, path: Path, what: str) -> None:
        if self.allow_outside:
            return
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise InputError(
                f"Manifest {self.manifest.name}: {what} cannot be resolved ({getattr(exc, 'strerror', None) or exc})"
            ) from exc
        if not real.is_relative_to(self.root):
            raise InputError(
                f"Manifest {self.manifest.name}: {what} leads outside the dataset folder {self.root} (to {real}); "
                "keep the dataset's files inside its folder, or set allow_outside = true in the manifest"
            )


def _stimulus_list(manifest: dict, inside: _Inside, path: Path) -> list[str] | None:
    from repalign.data._matrix_io import read_names

    value = manifest.get("stimuli")
    if value is None:
        return None
    if isinstance(value, list):
        if not all(isinstance(x, str) for x in value):
            raise InputError(f"Manifest {path.name}: 'stimuli' must be a list of strings or a file name")
        return [x.strip() for x in value]
    if isinstance(value, str):
        return read_names(inside.path("stimuli", value))
    raise InputError(f"Manifest {path.name}: 'stimuli' must be a list of strings or a file name, got {_shown(value)}")


def _image_files(inside: _Inside, images: str | None, label: str) -> list[Path] | None:
    from repalign.data.images import list_image_files

    if images is None:
        return None
    folder = inside.path("images", images)
    if not folder.is_dir():
        raise MissingDataError(f"{label}: image folder not found: {folder}")
    files = list_image_files(folder)
    if not files:
        raise InputError(f"{label}: no image files in {folder}")
    for file in files:  # a symlinked image is as much a path out of the folder as a '../' in the manifest
        inside.check(file, f"image file {quote_token(file.name)}")
    return files


def _name_index(stimuli: list[str]) -> dict[str, int]:
    """Name -> index, also accepting a name without its file extension when that is unambiguous."""
    index = {name: i for i, name in enumerate(stimuli)}
    stems = Counter(Path(name).stem for name in stimuli)
    for i, name in enumerate(stimuli):
        stem = Path(name).stem
        if stem != name and stems[stem] == 1 and stem not in index:
            index[stem] = i
    return index


def _match_images(stimuli: list[str], files: list[Path], label: str) -> tuple[Path, ...]:
    """Image file of every stimulus, matched by file name, or by stem when the name has no extension."""
    by_name = {p.name: p for p in files}
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    paths, unmatched, ambiguous = [], [], []
    for name in stimuli:
        if name in by_name:
            paths.append(by_name[name])
        elif len(by_stem.get(name, [])) == 1:
            paths.append(by_stem[name][0])
        elif len(by_stem.get(name, [])) > 1:
            ambiguous.append(name)
        else:
            unmatched.append(name)
    if ambiguous:
        raise InputError(
            f"{label}: stimulus {quote_token(ambiguous[0])} matches several image files; use full file names"
        )
    if unmatched:
        raise InputError(
            f"{label}: {len(unmatched)} stimulus name(s) match no image file in the image folder: "
            f"{quote_tokens(unmatched)}"
        )
    if len(set(paths)) != len(paths):
        raise InputError(f"{label}: two stimulus names refer to the same image file")
    extra = len(files) - len(paths)
    if extra:
        logger.warning("%s: %d image file(s) in the folder are not in the stimulus list and are ignored", label, extra)
    return tuple(paths)


def _names_in_triplets(path: Path) -> list[str]:
    """Sorted distinct names of a judgment CSV (stimulus order of a judgment-only dataset)."""
    from repalign.data._matrix_io import TRIPLET_COLUMNS, read_triplet_table

    if not path.is_file():
        raise MissingDataError(f"Triplet judgment file not found: {path}")
    table = read_triplet_table(path)
    names: set[str] = set()
    for columns in TRIPLET_COLUMNS.values():
        for column in columns:
            if column in table.columns:
                names.update(table[column].str.strip())
    return sorted(names)
