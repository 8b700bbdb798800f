"""Percentile bootstrap confidence intervals over models (resampling models with replacement)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from scipy import stats as _sps

from repalign._options import DEFAULT_N_BOOTSTRAP
from repalign.stats.correlations import MIN_MODELS

log = logging.getLogger(__name__)


def _pearson_along(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorized Pearson r (2 arrays) or partial r given a third, along ``axis``."""

    def r(a, b):
        a = a - a.mean(axis=axis, keepdims=True)
        b = b - b.mean(axis=axis, keepdims=True)
        denom = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(axis=axis) / denom

    if len(arrays) == 2:
        return r(*arrays)
    x, y, z = arrays
    rxy, rxz, ryz = r(x, y), r(x, z), r(y, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))


def bootstrap_correlation_ci(
    x,
    y,
    covar=None,
    *,
    method: str = "pearson",
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state=0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of a (partial) correlation, resampling models (pairs) with replacement.

    Spearman correlations are bootstrapped as Pearson correlations of ranks computed
    within each resample. Returns (NaN, NaN) for n_bootstrap == 0 or too few models.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (x, y) + (() if covar is None else (covar,))]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    arrays = [a[keep] for a in arrays]
    if n_bootstrap <= 0 or len(arrays[0]) < MIN_MODELS:
        return (np.nan, np.nan)
    rng = np.random.default_rng(random_state)
    index = rng.integers(0, len(arrays[0]), size=(n_bootstrap, len(arrays[0])))
    samples = [a[index] for a in arrays]  # (n_bootstrap, n_models) each
    if method == "spearman":
        samples = [_sps.rankdata(s, axis=1) for s in samples]
    values = _pearson_along(*samples)
    values = values[np.isfinite(values)]  # a resample with a constant column has no r
    if values.size == 0:
        return (np.nan, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state=0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of any statistic of paired per-model samples.

    ``statistic(*resampled)`` is called once per resample (rows resampled jointly).
    """
    arrays = [np.asarray(s) for s in samples]
    n = len(arrays[0])
    if n_bootstrap <= 0 or n < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(random_state)
    values = []
    for _ in range(n_bootstrap):
        index = rng.integers(0, n, size=n)
        values.append(statistic(*(a[index] for a in arrays)))
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
