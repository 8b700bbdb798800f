"""Validation of alignment inputs, done once at the boundary; the metrics trust its output."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from repalign.errors import InputError, unknown_name

if TYPE_CHECKING:  # pragma: no cover
    pass

logger = logging.getLogger(__name__)


def _check_choice(kind: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise unknown_name(kind, value, choices)


def _as_similarity(matrix, what: str) -> np.ndarray:
    """A square float64 matrix with >= 3 rows; NaN allowed (missing), infinities not."""
    try:
        array = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a numeric (n, n) array ({exc})") from exc
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise InputError(f"{what} must be a square (n, n) matrix; got shape {array.shape}")
    if array.shape[0] < 3:
        raise InputError(f"{what} has {array.shape[0]} stimuli; alignment needs at least 3")
    if np.isinf(array).any():
        raise InputError(f"{what} contains infinite values; use NaN to mark missing pairs")
    # one memory layout for the compiled kernels (no copy when already C-contiguous)
    return np.ascontiguousarray(array)


def _check_pair(model_sim, human_sim) -> tuple[np.ndarray, np.ndarray]:
    model = _as_similarity(model_sim, "model_sim")
    human = _as_similarity(human_sim, "human_sim")
    if model.shape != human.shape:
        raise InputError(
            f"model_sim and human_sim must describe the same stimuli; got shapes {model.shape} and {human.shape}"
        )
    return model, human


def _as_embeddings(x, what: str = "embeddings") -> np.ndarray:
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a numeric (n_stimuli, n_features) array ({exc})") from exc
    if array.ndim != 2:
        raise InputError(f"{what} must be a 2-D (n_stimuli, n_features) array; got shape {array.shape}")
    if array.shape[0] < 3 or array.shape[1] < 1:
        raise InputError(f"{what} needs at least 3 stimuli and 1 feature; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or infinite values")
    return array
