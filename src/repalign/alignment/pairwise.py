"""Pairwise (RSA-style) alignment: correlation of the upper triangles of two similarity matrices."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from repalign._options import (
    PAIRWISE_METHODS,
)
from repalign.alignment._checks import _check_choice, _check_pair
from repalign.errors import InputError

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
    """Pearson, Spearman or Kendall (tau-b) r of two vectors; NaN when undefined (fewer than 3
    pairs, or a constant side), as scipy.stats gives them.

    Pearson and Spearman are a few lines of numpy (Spearman: Pearson of average ranks); importing
    scipy.stats alone costs about a second, most of a cached ``repalign align``. They are tested
    against ``scipy.stats.pearsonr`` / ``spearmanr``; Kendall's tau-b is scipy's.
    """
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    if method == "kendall":
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(stats.kendalltau(x, y).statistic)
    if method == "spearman":
        x, y = average_ranks(x), average_ranks(y)
    dx, dy = x - x.mean(), y - y.mean()
    r = float(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)))
    return min(1.0, max(-1.0, r))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a vector, ties given their average rank (``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    stops = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + stops - 1) / 2.0 + 1.0, stops - starts)
    return ranks


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
