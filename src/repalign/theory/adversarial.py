"""Expected disagreement on an adversarial example (Theorem A.5).

Each of ``k`` objects takes part in ``m`` triplets; a student misaligned by ``eps``
disagrees with the teacher on each independently with probability ``eps``, so object
``i`` has ``X_i ~ Binomial(m, eps)`` disagreements. An adversary picks the worst object,
so the damage is the largest order statistic ``X_(k)``:

    E[X_(k)] = sum_{x=0}^{m-1} P(X_(k) > x) = sum_{x=0}^{m-1} (1 - F(x)^k),

with ``F`` the binomial CDF. It grows with ``eps``: a better-aligned student offers the
adversary less to exploit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from repalign.errors import InputError
from repalign.theory.capacity import check_rate

__all__ = [
    "MonteCarloEstimate",
    "expected_max_disagreement",
    "simulate_max_disagreement",
    "triplets_per_object",
]

# Cap on the binomial support we sum over at once (eps values x support points).
_MAX_CELLS = 50_000_000


@dataclass(frozen=True)
class MonteCarloEstimate:
    """Monte Carlo means with a normal-theory confidence interval (arrays shaped like ``eps``)."""

    mean: np.ndarray
    std_error: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_samples: int
    confidence: float


def triplets_per_object(n: int) -> int:
    """``m = n (n - 1) / 2``: the triplets an object forms with pairs of ``n`` other objects."""
    n = _check_count(n, "n", minimum=2)
    return n * (n - 1) // 2


def expected_max_disagreement(eps, n_triplets: int, n_objects: int) -> np.ndarray:
    """Exact ``E[max_i X_i]`` for ``n_objects`` iid ``X_i ~ Binomial(n_triplets, eps)``.

    Computed as ``sum_x -expm1(k * log1p(-sf(x)))``, which equals ``sum_x (1 - F(x)^k)`` but
    keeps full precision when ``F(x)`` is close to 1 (the survival function is accurate in
    the tail where ``1 - F`` would cancel).

    Args:
        eps: disagreement rate(s) in [0, 1], any shape.
        n_triplets: ``m``, triplets per object (see :func:`triplets_per_object`).
        n_objects: ``k``, objects the adversary can choose from.
    Returns:
        Expected maximum number of disagreements, shaped like ``eps`` (divide by
        ``n_triplets`` for a fraction).
    """
    p = check_rate(eps)
    m = _check_count(n_triplets, "n_triplets", minimum=1)
    k = _check_count(n_objects, "n_objects", minimum=1)
    flat = p.ravel()
    out = np.empty(flat.shape, dtype=np.float64)
    x = np.arange(m, dtype=np.float64)
    rows = max(1, _MAX_CELLS // m)
    for start in range(0, flat.size, rows):  # chunks bound memory; each chunk is vectorized
        chunk = flat[start : start + rows, None]
        survival = stats.binom.sf(x[None, :], m, chunk)  # P(X > x), shape (chunk, m)
        with np.errstate(divide="ignore"):
            tail = -np.expm1(k * np.log1p(-survival))  # 1 - F(x)^k
        out[start : start + rows] = tail.sum(axis=1)
    return out.reshape(p.shape)[()]


def simulate_max_disagreement(
    eps,
    n_triplets: int,
    n_objects: int,
    *,
    n_samples: int = 20_000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> MonteCarloEstimate:
    """Monte Carlo check of :func:`expected_max_disagreement`.

    Draws ``n_samples`` sets of ``n_objects`` binomial disagreement counts per ``eps``
    (vectorized: eps x samples x objects, in chunks) and returns the mean of the maximum
    with a normal-theory confidence interval (the max of bounded variables has finite
    variance, so the CLT applies).
    """
    p = check_rate(eps)
    m = _check_count(n_triplets, "n_triplets", minimum=1)
    k = _check_count(n_objects, "n_objects", minimum=1)
    n_samples = _check_count(n_samples, "n_samples", minimum=2)
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1); got {confidence!r}")
    rng = np.random.default_rng(seed)
    flat = p.ravel()
    means = np.empty(flat.shape)
    errors = np.empty(flat.shape)
    rows = max(1, 4_000_000 // (n_samples * k))
    for start in range(0, flat.size, rows):
        chunk = flat[start : start + rows, None, None]
        maxima = rng.binomial(m, chunk, size=(chunk.shape[0], n_samples, k)).max(axis=2)
        means[start : start + rows] = maxima.mean(axis=1)
        errors[start : start + rows] = maxima.std(axis=1, ddof=1) / np.sqrt(n_samples)
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    shape = p.shape
    return MonteCarloEstimate(
        mean=means.reshape(shape),
        std_error=errors.reshape(shape),
        ci_low=(means - z * errors).reshape(shape),
        ci_high=(means + z * errors).reshape(shape),
        n_samples=n_samples,
        confidence=confidence,
    )


def _check_count(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)
