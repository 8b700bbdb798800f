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
    pairwise = [m for m in metrics if m in PAIRWISE_METHODS]
    if pairwise:
        for b, idx in enumerate(resamples):
            x, y, _ = _upper_pairs(model, human, idx)
            for metric in pairwise:
                values[metric][b] = _correlation(x, y, metric)
    if "triplet" in metrics:
        from repalign.alignment._triplet_kernel import triplet_counts_resampled

        strict = ties == "strict"
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
    values = _bootstrap_values(model, human, judgments, metrics, resamples, ties)
    return {metric: _percentile_interval(values[metric], confidence, metric) for metric in metrics}
