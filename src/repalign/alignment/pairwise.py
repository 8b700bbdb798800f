"""Pairwise (RSA-style) alignment: comparisons of the upper triangles of two similarity matrices.

Pearson, Spearman and Kendall's tau-b as scipy defines them; tau-a, rho-a and the cosine as
rsatoolbox (``rsatoolbox.rdm.compare``) defines them, for models whose similarities tie.
"""

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
    """One comparison of two vectors of pair values (``method`` from ``PAIRWISE_METHODS``); NaN
    where it is undefined: fewer than 3 pairs; a constant side for the correlations (as scipy.stats
    gives them); an all-zero side for the cosine. tau-a and rho-a are 0 for a constant side: a model
    predicting all pairs tied says nothing about their order, and those two measures score that as 0.

    Pearson and Spearman are a few lines of numpy (Spearman: Pearson of average ranks); importing
    scipy.stats alone costs about a second, most of a cached ``repalign align``. They are tested
    against ``scipy.stats.pearsonr`` / ``spearmanr``; Kendall's tau-b is scipy's; tau-a, rho-a and
    the cosine are tested against rsatoolbox.
    """
    if len(x) < 3:
        return float("nan")
    if method in _TIE_AWARE:
        return _TIE_AWARE[method](x, y)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    if method == "kendall":
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(stats.kendalltau(x, y, method="asymptotic").statistic)
    if method == "spearman":
        x, y = average_ranks(x), average_ranks(y)
    dx, dy = x - x.mean(), y - y.mean()
    r = float(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)))
    return min(1.0, max(-1.0, r))


#: pairs (n0 = p(p-1)/2 of them) below which tau-a's concordant-minus-discordant count is
#: recovered exactly: scipy's tau-b is that integer divided by two square roots, a few units
#: of the last place off, so the error of the recovered count stays far below 1/2
_EXACT_TAU_A_PAIRS = 2**48


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a: (concordant - discordant pairs) / all p(p-1)/2 pairs, in O(p log p).

    Ties count in the denominator, so a model that ties many pairs is not rewarded for the
    pairs it leaves undecided (tau-b divides them away). The integer C - D comes from scipy's
    tau-b (merge-sort counts) times its tie-corrected denominator, rounded: exact for fewer than
    2**48 pairs of pairs (more than 7000 stimuli), and within 1e-15 relative beyond that.
    """
    from scipy import stats

    p = len(x)
    n0 = p * (p - 1) // 2
    tied_x, tied_y = _tied_pairs(x), _tied_pairs(y)
    if tied_x == n0 or tied_y == n0:
        return 0.0  # no pair is ordered on one side: C = D = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau_b = float(stats.kendalltau(x, y, method="asymptotic").statistic)
    concordant_minus_discordant = tau_b * np.sqrt(float(n0 - tied_x)) * np.sqrt(float(n0 - tied_y))
    if n0 < _EXACT_TAU_A_PAIRS:
        concordant_minus_discordant = round(concordant_minus_discordant)
    return min(1.0, max(-1.0, concordant_minus_discordant / n0))


def _tied_pairs(values: np.ndarray) -> int:
    """Pairs of equal values: sum of c(c-1)/2 over the runs of equal values."""
    _, counts = np.unique(values, return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def spearman_rho_a(x: np.ndarray, y: np.ndarray) -> float:
    """rho-a (rsatoolbox): the covariance of the average ranks over the rank variance without ties,
    12 sum(rx - mean)(ry - mean) / (p^3 - p).

    Equal to Spearman's rho without ties; with ties it is the expected rho when ties are broken at
    random, so a model cannot gain by tying pairs (rho divides by the smaller tied variance).
    """
    p = len(x)
    rx, ry = average_ranks(x), average_ranks(y)
    value = float((rx - rx.mean()) @ (ry - ry.mean()) * 12.0 / (float(p) ** 3 - p))
    return min(1.0, max(-1.0, value))


def cosine_similarity(x: np.ndarray, y: np.ndarray) -> float:
    """The uncentered cosine of the two vectors of pair values (rsatoolbox's ``cosine``); NaN if a
    side is all zero.

    Unlike the correlations it depends on where zero is: it suits values whose zero means
    something (distances, a similarity on a ratio scale). It does not change when both sides
    change sign, so on similarities it equals rsatoolbox's on the dissimilarities ``-S``.
    """
    norm = float(np.sqrt((x @ x) * (y @ y)))
    if norm == 0.0:
        return float("nan")
    return min(1.0, max(-1.0, float(x @ y) / norm))


#: the comparisons defined (not NaN) when a side is constant
_TIE_AWARE = {"tau-a": kendall_tau_a, "rho-a": spearman_rho_a, "cosine": cosine_similarity}


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
    """Comparison of the upper triangles of two (n, n) similarity matrices.

    Pairs missing (NaN) on either side are left out. ``pearson`` / ``spearman`` / ``kendall``
    equal ``scipy.stats.pearsonr`` / ``spearmanr`` / ``kendalltau`` (tau-b) on those vectors;
    ``tau-a``, ``rho-a`` and ``cosine`` equal rsatoolbox's ``compare_kendall_tau_a``,
    ``compare_rho_a`` and ``compare_cosine`` on them (docs/alignment.md).

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli.
        method: one of ``pearson, spearman, kendall, tau-a, rho-a, cosine``.
    """
    _check_choice("pairwise method", method, PAIRWISE_METHODS)
    model, human = _check_pair(model_sim, human_sim)
    x, y, _ = _upper_pairs(model, human)
    if len(x) < 3:
        raise InputError(f"Only {len(x)} stimulus pairs are present on both sides; need at least 3")
    for side, values in (("model_sim", x), ("human_sim", y)):
        if method == "cosine" and not np.any(values):
            raise InputError(f"{side} is zero over the compared pairs; its cosine is undefined")
        if method not in _TIE_AWARE and np.all(values == values[0]):
            raise InputError(f"{side} is constant over the compared pairs; its correlation is undefined")
    return _correlation(x, y, method)
