"""Stimulus-bootstrap percentile confidence intervals of alignment metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from repalign._options import (
    ALIGNMENT_METRICS,
    DEFAULT_METRICS,
    DEFAULT_N_BOOTSTRAP,
    DEFAULT_SEED,
    DEFAULT_TIES,
    MATRIX_METRICS,
    PAIRWISE_METHODS,
    TIE_MODES,
)
from repalign._progress import progress_bar
from repalign.alignment._checks import _as_similarity, _check_choice, _check_pair
from repalign.alignment.pairwise import _correlation, _upper_pairs
from repalign.alignment.triplets import TripletCounts, _check_judgments, _judgment_scores, _weighted_accuracy
from repalign.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from repalign.data.judgments import TripletJudgments

logger = logging.getLogger(__name__)


def _resamples(n: int, n_bootstrap: int, random_state) -> np.ndarray:
    rng = np.random.default_rng(random_state)
    return rng.integers(0, n, size=(n_bootstrap, n), dtype=np.int64)


def _percentile_interval(values: np.ndarray, confidence: float, metric: str) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < len(values):
        logger.warning(
            "%s: %d of %d bootstrap resamples gave no value (too few distinct stimuli or comparable pairs)",
            metric,
            len(values) - len(finite),
            len(values),
        )
    if len(finite) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


#: pairwise methods whose resamples are computed together, as arrays (the rest loop over scipy)
_VECTORIZED = ("pearson", "spearman", "rho-a", "cosine")
#: resamples per block: bounds memory at a few arrays of block x n(n-1)/2 float64
_RESAMPLES_PER_BLOCK = 200


def _correlations_resampled(
    model: np.ndarray, human: np.ndarray, resamples: np.ndarray, methods: Sequence[str]
) -> dict[str, np.ndarray]:
    """Pearson / Spearman r, rho-a and the cosine of the upper triangles of every resample at once.

    Equal (to rounding) to ``scipy.stats.pearsonr`` / ``spearmanr`` (and to :func:`_correlation`'s
    rho-a and cosine) on the pairs of each resample
    that are present on both sides and are not two copies of one stimulus, as
    :func:`_upper_pairs` gives them; NaN where scipy gives NaN (fewer than 3 pairs, or a
    constant side). Looping over scipy costs about 2 ms a resample at n = 120, most of a cached
    ``repalign align``.

    A resample holds the pair of stimuli (s, t) exactly ``c_s * c_t`` times (``c`` = copies of
    each stimulus in it), so each resample is the original pairs with integer weights: Pearson r
    is a weighted correlation, and the average ranks Spearman needs come from cumulative
    weights along the pairs' one global sort order, with no sort per resample. That holds for
    symmetric matrices (a resample may read a pair from either triangle); others are scored
    resample by resample.
    """
    if not (_symmetric(model) and _symmetric(human)):
        return _correlations_resampled_directly(model, human, resamples, methods)
    n = model.shape[0]
    rows, cols = np.triu_indices(n, k=1)
    x, y = model[rows, cols], human[rows, cols]
    present = ~(np.isnan(x) | np.isnan(y))
    rows, cols, x, y = rows[present], cols[present], x[present], y[present]
    sides = {"pearson": (x - x.mean(), y - y.mean()), "cosine": (x, y)}  # centered once: less cancellation
    if "spearman" in methods or "rho-a" in methods:
        sides["spearman"] = sides["rho-a"] = (_RankOrder(x), _RankOrder(y))
    out = {method: np.full(len(resamples), np.nan) for method in methods}
    for start in range(0, len(resamples), _RESAMPLES_PER_BLOCK):
        block = resamples[start : start + _RESAMPLES_PER_BLOCK]
        copies = np.zeros((len(block), n))
        np.add.at(copies, (np.arange(len(block))[:, None], block), 1.0)
        weights = copies[:, rows] * copies[:, cols]  # (block, pairs): times each pair occurs
        ranks = None
        for method in methods:
            a, b = sides[method]
            if method in ("spearman", "rho-a"):
                ranks = ranks or (a.ranks(weights), b.ranks(weights))
                a, b = ranks
            score = {"rho-a": _weighted_rho_a, "cosine": _weighted_cosine}.get(method, _weighted_pearson)
            out[method][start : start + len(block)] = score(a, b, weights)
    return out


def _symmetric(matrix: np.ndarray) -> bool:
    return bool(np.array_equal(matrix, matrix.T, equal_nan=True))


class _RankOrder:
    """The global sort order of one side's values and its runs of ties, for weighted ranks."""

    def __init__(self, values: np.ndarray):
        self.order = np.argsort(values, kind="stable")
        ordered = values[self.order]
        self.run_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self.run_of = np.empty(len(values), dtype=np.intp)
        self.run_of[self.order] = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        """(block, pairs) average ranks of each pair among its resample's weighted copies."""
        in_runs = np.add.reduceat(weights[:, self.order], self.run_starts, axis=1)  # weight of each run
        before = np.cumsum(in_runs, axis=1) - in_runs  # weight of the smaller values
        per_run = before + (in_runs + 1.0) / 2.0  # the average rank of a run's copies
        return per_run[:, self.run_of]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of x and y (each (pairs,) or (rows, pairs)) over weighted pairs; NaN for
    fewer than 3 pairs or a constant side, as scipy."""
    count = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = _row_dot(weights, x) / count
        mean_y = _row_dot(weights, y) / count
        dx = x - mean_x[:, None]
        dy = y - mean_y[:, None]
        sxx = np.einsum("ij,ij->i", weights, dx * dx)
        syy = np.einsum("ij,ij->i", weights, dy * dy)
        r = np.einsum("ij,ij->i", weights, dx * dy) / np.sqrt(sxx * syy)
        scale_x = np.einsum("ij,ij->i", weights, np.broadcast_to(x * x, weights.shape))
        scale_y = np.einsum("ij,ij->i", weights, np.broadcast_to(y * y, weights.shape))
    # a side is constant when its centered values vanish up to rounding (scipy: NaN)
    constant = (sxx <= 1e-24 * np.maximum(scale_x, 1e-300)) | (syy <= 1e-24 * np.maximum(scale_y, 1e-300))
    r[(count < 3) | constant] = np.nan
    return np.clip(r, -1.0, 1.0)


def _weighted_rho_a(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise rho-a of the (rows, pairs) ranks among the weighted copies: 12 sum w (rx - m)(ry - m)
    / (W^3 - W), W the copies and m = (W + 1) / 2 their mean rank; NaN for fewer than 3 pairs."""
    count = weights.sum(axis=1)
    middle = (count + 1.0) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = 12.0 * np.einsum("ij,ij->i", weights, (x - middle[:, None]) * (y - middle[:, None])) / (count**3 - count)
    r[count < 3] = np.nan
    return np.clip(r, -1.0, 1.0)


def _weighted_cosine(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise cosine of x and y ((pairs,)) over weighted pairs; NaN for fewer than 3 pairs or a zero side."""
    count = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.sqrt((weights @ (x * x)) * (weights @ (y * y)))
        r = (weights @ (x * y)) / norm
    r[(count < 3) | (norm == 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _row_dot(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    return weights @ values if values.ndim == 1 else np.einsum("ij,ij->i", weights, values)


def _correlations_resampled_directly(
    model: np.ndarray, human: np.ndarray, resamples: np.ndarray, methods: Sequence[str]
) -> dict[str, np.ndarray]:
    """scipy on each resample's pairs (asymmetric matrices)."""
    out = {method: np.full(len(resamples), np.nan) for method in methods}
    for b, idx in enumerate(resamples):
        x, y, _ = _upper_pairs(model, human, idx)
        for method in methods:
            out[method][b] = _correlation(x, y, method)
    return out


def _bootstrap_values(
    model: np.ndarray,
    human: np.ndarray | None,
    judgments: TripletJudgments | None,
    metrics: Sequence[str],
    resamples: np.ndarray,
    ties: str,
) -> dict[str, np.ndarray]:
    """Metric value on every stimulus resample (rows of ``resamples``), NaN where undefined."""
    values = {metric: np.full(len(resamples), np.nan) for metric in metrics}
    vectorized = [m for m in metrics if m in _VECTORIZED]
    if vectorized:
        values.update(_correlations_resampled(model, human, resamples, vectorized))
    looped = [m for m in metrics if m in PAIRWISE_METHODS and m not in _VECTORIZED]
    if looped:  # Kendall's tau: scipy, one resample at a time
        for b, idx in enumerate(resamples):
            x, y, _ = _upper_pairs(model, human, idx)
            for metric in looped:
                values[metric][b] = _correlation(x, y, metric)
    if "triplet" in metrics:
        from repalign.alignment import _triplet_small

        strict = ties == "strict"
        if not strict and model.shape[0] <= _triplet_small.SMALL_N:  # numpy: no numba to load
            totals = _triplet_small.counts_resampled(model, human, resamples)
        else:
            from repalign.alignment._triplet_kernel import triplet_counts_resampled

            totals = triplet_counts_resampled(model, human, resamples, strict)
        values["triplet"] = np.array(
            [TripletCounts.from_kernel(row, with_tied_matches=strict).alignment(ties) for row in totals]
        )
    if "triplet_accuracy" in metrics:
        # a resample holding stimulus s c_s times holds every judgment among copies:
        # judgment (a, b, c) is repeated c_a * c_b * c_c times
        score, valid = _judgment_scores(model, judgments)
        a, b, c = (np.asarray(v, dtype=np.intp) for v in (judgments.a, judgments.b, judgments.c))
        counts = np.asarray(judgments.counts, dtype=np.float64)
        n = model.shape[0]
        for r, idx in enumerate(resamples):
            copies = np.bincount(idx, minlength=n).astype(np.float64)
            weights = counts * copies[a] * copies[b] * copies[c]
            values["triplet_accuracy"][r] = _weighted_accuracy(score, valid, weights)
    return values


def _participant_means(
    model: np.ndarray, participants: np.ndarray, metrics: Sequence[str], resamples: np.ndarray, ties: str
) -> dict[str, np.ndarray]:
    """Each matrix metric on every resample, averaged over the participants (NaN-skipping)."""
    if participants.ndim != 3 or participants.shape[1:] != model.shape:
        raise InputError(f"participants of shape {participants.shape} do not match the {model.shape} model matrix")
    per_participant = [_bootstrap_values(model, one, None, metrics, resamples, ties) for one in participants]
    out = {}
    for metric in metrics:
        stacked = np.stack([values[metric] for values in per_participant])
        finite = np.isfinite(stacked)
        out[metric] = np.where(
            finite.any(axis=0), np.where(finite, stacked, 0.0).sum(axis=0) / finite.sum(axis=0).clip(1), np.nan
        )
    return out


def bootstrap_alignment_ci(
    model_sim,
    human_sim=None,
    *,
    judgments: TripletJudgments | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state=DEFAULT_SEED,
    confidence: float = 0.95,
    ties: str = DEFAULT_TIES,
    participants=None,
    progress: bool = False,
) -> dict[str, tuple[float, float]]:
    """Stimulus-bootstrap percentile confidence intervals of alignment metrics.

    Each resample draws n stimuli with replacement and scores the alignment of the two
    matrices restricted to them (all metrics on the same resamples). Pairs of two copies
    of one stimulus are missing pairs: they carry no information about how similar two
    different stimuli are. Resampling stimuli, not pairs, keeps the dependence between
    pairs that share a stimulus, so the interval reflects generalization to new stimuli.

    Args:
        model_sim: (n, n) model similarity matrix.
        human_sim: (n, n) human similarity matrix (needed for pairwise and triplet metrics).
        judgments: explicit judgments (needed for ``"triplet_accuracy"``).
        metrics: names from ``pearson, spearman, kendall, triplet, triplet_accuracy``.
        n_bootstrap: number of resamples (>= 1).
        random_state: seed or ``numpy.random.Generator``; the same seed gives the same CIs.
        confidence: coverage of the two-sided interval.
        ties: tie rule of the ``"triplet"`` metric.
        participants: (k, n, n) per-participant matrices: the matrix metrics are then the mean
            over participants of the metric with each (:func:`repalign.alignment.ceiling.participant_alignment`),
            every participant scored on the same resamples.
        progress: a progress bar of the resamples on stderr (shown on a terminal only).

    Returns:
        ``{metric: (ci_low, ci_high)}``.
    """
    for metric in metrics:
        _check_choice("alignment metric", metric, ALIGNMENT_METRICS)
    _check_choice("ties option", ties, TIE_MODES)
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise InputError(f"n_bootstrap must be a positive integer; got {n_bootstrap!r}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be between 0 and 1; got {confidence}")
    needs_matrix = [m for m in metrics if m in MATRIX_METRICS]
    if needs_matrix and human_sim is None:
        raise InputError(f"Metrics {', '.join(needs_matrix)} need a human similarity matrix (human_sim)")
    if needs_matrix:
        model, human = _check_pair(model_sim, human_sim)
    else:
        model, human = _as_similarity(model_sim, "model_sim"), None
    if "triplet_accuracy" in metrics:
        if judgments is None:
            raise InputError("Metric triplet_accuracy needs human triplet judgments (judgments=...)")
        model = _check_judgments(model, judgments)
    resamples = _resamples(model.shape[0], int(n_bootstrap), random_state)
    if participants is not None:
        participants = np.asarray(participants, dtype=np.float64)
    per_stimulus_set = [m for m in metrics if participants is None or m not in needs_matrix]

    def score(chunk: np.ndarray) -> dict[str, np.ndarray]:
        values = _bootstrap_values(model, human, judgments, per_stimulus_set, chunk, ties)
        if participants is not None:
            values.update(_participant_means(model, participants, needs_matrix, chunk, ties))
        return values

    # in chunks of whole blocks, progress bar or not: the vectorized correlations see the same
    # blocks either way, so the values never depend on whether a terminal was watching
    parts = []
    with progress_bar("bootstrap resamples", len(resamples), enabled=progress) as advance:
        for start in range(0, len(resamples), _RESAMPLES_PER_BLOCK):
            chunk = resamples[start : start + _RESAMPLES_PER_BLOCK]
            parts.append(score(chunk))
            advance(len(chunk))
    values = {metric: np.concatenate([part[metric] for part in parts]) for metric in metrics}
    return {metric: _percentile_interval(values[metric], confidence, metric) for metric in metrics}
