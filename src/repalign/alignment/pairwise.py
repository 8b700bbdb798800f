"""Pairwise (RSA-style) alignment: correlation of the upper triangles of two similarity matrices."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np

from repalign._options import (
    PAIRWISE_METHODS,
)
from repalign.alignment._checks import _check_choice, _check_pair
from repalign.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    pass

logger = logging.getLogger(__name__)


def _upper_pairs(model: np.ndarray, human: np.ndarray, idx: np.ndarray | None = None):
    """The two upper-triangle vectors over pairs valid on both sides.

    With ``idx`` (a stimulus resample), scores ``M[idx][:, idx]``; pairs of two copies of
    the same stimulus are missing. Returns (x, y, n_missing).
    """
    n = model.shape[0] if idx is None else len(idx)
    rows, cols = np.triu_indices(n, k=1)
    if idx is not None:
        rows, cols = idx[rows], idx[cols]
    x = model[rows, cols]
    y = human[rows, cols]
    valid = ~(np.isnan(x) | np.isnan(y))
    if idx is not None:
        valid &= rows != cols
    return x[valid], y[valid], int(valid.size - valid.sum())


def _correlation(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """scipy's correlation of two vectors; NaN when undefined (constant input)."""
    from scipy import stats

    if len(x) < 3:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> NaN, reported by the caller
        if method == "pearson":
            result = stats.pearsonr(x, y)
        elif method == "spearman":
            result = stats.spearmanr(x, y)
        else:
            result = stats.kendalltau(x, y)
    return float(result.statistic)


def pairwise_alignment(model_sim, human_sim, *, method: str = "pearson") -> float:
    """Correlation between the upper triangles of two (n, n) similarity matrices.

    Pairs missing (NaN) on either side are left out. The value equals
    ``scipy.stats.pearsonr`` / ``spearmanr`` / ``kendalltau`` (tau-b) on those vectors.

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli.
        method: ``"pearson"``, ``"spearman"`` or ``"kendall"``.
    """
    _check_choice("pairwise method", method, PAIRWISE_METHODS)
    model, human = _check_pair(model_sim, human_sim)
    x, y, _ = _upper_pairs(model, human)
    if len(x) < 3:
        raise InputError(f"Only {len(x)} stimulus pairs are present on both sides; need at least 3")
    for side, values in (("model_sim", x), ("human_sim", y)):
        if np.all(values == values[0]):
            raise InputError(f"{side} is constant over the compared pairs; its correlation is undefined")
    return _correlation(x, y, method)
