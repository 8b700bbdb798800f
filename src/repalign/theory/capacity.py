"""The binary symmetric channel view of triplet teaching (Section 3 of the paper).

A teacher answers triplet queries ("is c closer to a than to b?"); a student whose own
answers disagree with the teacher's on a fraction ``eps`` of triplets reads each answer
through a binary symmetric channel with flip rate ``eps``. Each answer then carries at
most ``C(eps) = 1 - H2(eps)`` bits, so every information requirement measured in bits
costs ``1 / C(eps)`` times more queries than for a perfectly aligned student.

All functions are vectorized over ``eps`` (any array shape, values in [0, 1]) and work in
**bits** (log base 2).
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr

from repalign.errors import InputError

__all__ = [
    "binary_entropy",
    "channel_capacity",
    "fano_query_bound",
    "predicted_accuracy_shape",
    "predicted_query_ratio",
    "query_lower_bound",
    "query_ratio",
]

_LN2 = np.log(2.0)


def check_rate(values, name: str = "eps") -> np.ndarray:
    """Validate an array of rates in [0, 1]; return it as float64 (same shape)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number or an array of numbers in [0, 1]; got {values!r}") from None
    if np.any(~np.isfinite(arr)) or np.any((arr < 0) | (arr > 1)):
        bad = arr[~(np.isfinite(arr) & (arr >= 0) & (arr <= 1))].ravel()[:3]
        raise InputError(f"{name} must lie in [0, 1] (a fraction of triplets); got {bad.tolist()}")
    return arr


def binary_entropy(eps) -> np.ndarray:
    """H2(eps) = -eps log2 eps - (1 - eps) log2(1 - eps), in bits; 0 log 0 = 0.

    ``scipy.special.entr`` is ``-x log x`` with the limit 0 at x = 0, so the endpoints are exact.
    Returns an array of the same shape as ``eps`` (a numpy float for a scalar).
    """
    p = check_rate(eps)
    return ((entr(p) + entr(1.0 - p)) / _LN2)[()]


def channel_capacity(eps) -> np.ndarray:
    """Capacity of a binary symmetric channel with flip rate ``eps``: ``1 - H2(eps)`` bits per use.

    C(0) = C(1) = 1 (a perfectly aligned or perfectly reversed student learns one bit per
    answer), C(0.5) = 0 (an unrelated student learns nothing), symmetric around 0.5.
    """
    return 1.0 - binary_entropy(eps)


def query_ratio(eps) -> np.ndarray:
    """Queries needed relative to a perfectly aligned student: ``1 / C(eps)``.

    1 at eps = 0 and 1, ``inf`` at eps = 0.5 (no number of queries suffices).
    """
    capacity = np.asarray(channel_capacity(eps))
    return np.where(capacity > 0, 1.0 / np.maximum(capacity, np.finfo(float).tiny), np.inf)[()]


def query_lower_bound(d, n, eps, *, constant: float = 1.0) -> np.ndarray:
    """Proposition 3.8: a student needs ``Omega(d log n / C(eps))`` triplet queries.

    We return ``constant * d * log2(n) / C(eps)`` with ``constant = 1`` by default: locating a
    new object among the cells that the n(n-1)/2 bisector hyperplanes of ``n`` shared objects
    cut R^d into takes on the order of ``d log2 n`` bits (there are O(n^(2d)) cells), and the
    channel delivers at most ``C(eps)`` bits per query. The constant of the Omega is not
    pinned down by the proposition; 1 gives the bound in bits per bit of capacity, so it is
    the right scale for comparing shapes, not absolute counts.

    Args:
        d: dimension of the representation (>= 1), scalar or array.
        n: number of shared objects (>= 2), scalar or array.
        eps: misalignment, scalar or array in [0, 1].
    Returns:
        Broadcast array of lower bounds (``inf`` where eps = 0.5).
    """
    d_arr = np.asarray(d, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(~np.isfinite(d_arr)) or np.any(d_arr < 1):
        raise InputError(f"d (the representation dimension) must be >= 1; got {d!r}")
    if np.any(~np.isfinite(n_arr)) or np.any(n_arr < 2):
        raise InputError(f"n (the number of shared objects) must be >= 2; got {n!r}")
    if not np.isfinite(constant) or constant <= 0:
        raise InputError(f"constant must be a positive number; got {constant!r}")
    return (constant * d_arr * np.log2(n_arr) * query_ratio(eps))[()]


def fano_query_bound(n_candidates, eps, *, target_accuracy: float) -> np.ndarray:
    """Fano's inequality: queries any decoder needs to pick the right one of ``K`` candidates.

    With the hidden object uniform over ``K`` candidates and error probability ``Pe``,
    ``I(c; answers) >= log2 K - 1 - Pe log2(K - 1)``, while ``m`` answers through the channel
    carry at most ``m C(eps)`` bits. Hence ``m >= max(0, log2 K - 1 - Pe log2(K-1)) / C(eps)``
    with ``Pe = 1 - target_accuracy``. This is the bound overlaid on the simulated
    communication game (where the candidates are explicit).
    """
    k = np.asarray(n_candidates, dtype=np.float64)
    if np.any(~np.isfinite(k)) or np.any(k < 2):
        raise InputError(f"n_candidates must be >= 2; got {n_candidates!r}")
    if not 0.0 < target_accuracy <= 1.0:
        raise InputError(f"target_accuracy must be in (0, 1]; got {target_accuracy!r}")
    bits = np.maximum(0.0, np.log2(k) - 1.0 - (1.0 - target_accuracy) * np.log2(k - 1.0))
    ratio = query_ratio(eps)
    # 0 bits needed costs 0 queries even over a useless channel (0 * inf would be nan)
    with np.errstate(invalid="ignore"):
        return np.where(bits > 0, bits * ratio, 0.0)[()]


def predicted_query_ratio(alignment) -> np.ndarray:
    """Queries needed relative to a perfectly aligned model, as a function of alignment.

    ``alignment`` is the triplet agreement rate with humans (``D_P`` in [0, 1]; 0.5 =
    chance); the misalignment is ``eps = 1 - alignment`` and the prediction is ``1 / C(eps)``.
    """
    return query_ratio(1.0 - check_rate(alignment, "alignment"))


def predicted_accuracy_shape(alignment) -> np.ndarray:
    """Predicted shape of few-shot performance vs alignment: ``C(1 - alignment)`` in [0, 1].

    Scaling: with a fixed budget of labelled examples (queries), the information a student
    receives is proportional to ``C(eps)``, the reciprocal of :func:`predicted_query_ratio`.
    The value is 1 at alignment 0 and 1, 0 at alignment 0.5, i.e. a U-shape with arbitrary
    units: to overlay it on empirical accuracies fit ``accuracy ~ a + b * shape`` (e.g. with
    ``numpy.polyfit(shape, accuracy, 1)``); only the shape is predicted, not the scale.

    Args:
        alignment: triplet agreement rate(s) in [0, 1], any shape.
    Returns:
        Array of the same shape.
    """
    return channel_capacity(1.0 - check_rate(alignment, "alignment"))
