"""Noise ceilings and reliability of human data: how well any model could align, given how
consistent the humans themselves are.

* Per-participant matrices (k, n, n): :func:`noise_ceiling` gives rsatoolbox's bounds
  (``rsatoolbox.inference.boot_noise_ceiling``) for a metric -- the mean over participants of
  the metric between each participant and the participants pooled *without* them (lower
  bound) and *with* them (upper bound). Its unit is :func:`participant_alignment`, the mean
  over participants of the model's alignment with each participant. :func:`split_half_reliability`
  correlates the means of two random halves of the participants (Spearman-Brown corrected),
  with a stimulus-bootstrap interval.
* Counted triplet judgments: :func:`triplet_ceiling`. The upper bound is the majority-vote
  ceiling, the fraction of judgments that agree with the most frequent answer to their triplet
  (no fixed answer can agree with more); the lower bound predicts each judgment from the
  majority of the *other* judgments of its triplet (ties and unrepeated triplets at chance).

Pooling follows rsatoolbox's ``pool_rdm`` (the pooled matrix that scores best under the
metric): Pearson z-scores each participant, the rank metrics average ranks, the cosine
divides each participant by its root mean square; then the mean over participants of each
pair present (rsatoolbox requires every participant to miss the same pairs; here a pair is
averaged over the participants who rated it). The triplet metric, which rsatoolbox lacks,
pools the plain mean (the dataset's matrix).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from repalign._options import DEFAULT_SEED, DEFAULT_TIES, MATRIX_METRICS, PAIRWISE_METHODS, TIE_MODES
from repalign.alignment._checks import _check_choice, _check_pair
from repalign.alignment.pairwise import _correlation, average_ranks
from repalign.alignment.triplets import _triplet_counts
from repalign.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from repalign.data.judgments import TripletJudgments

#: random splits whose Spearman-Brown corrected correlations :func:`split_half_reliability` averages
DEFAULT_N_SPLITS = 100


class Ceiling(NamedTuple):
    """Bounds of the best alignment a model could reach on noisy human data."""

    low: float
    high: float


class Reliability(NamedTuple):
    """Split-half reliability: the mean corrected correlation and its percentile interval."""

    value: float
    ci_low: float
    ci_high: float


def _check_participants(participants) -> np.ndarray:
    array = np.asarray(participants, dtype=np.float64)
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise InputError(f"participants must be a (k, n, n) array of per-participant matrices; got shape {array.shape}")
    if array.shape[0] < 2:
        raise InputError(f"A noise ceiling needs at least 2 participants; got {array.shape[0]}")
    if array.shape[1] < 3:
        raise InputError(f"Only {array.shape[1]} stimuli; alignment needs at least 3")
    if np.isinf(array).any():
        raise InputError("participants hold infinite values; use NaN for a pair a participant did not rate")
    return array


def _upper_vectors(participants: np.ndarray) -> np.ndarray:
    """(k, p) upper-triangle vectors, p = n(n-1)/2."""
    rows, cols = np.triu_indices(participants.shape[1], k=1)
    return participants[:, rows, cols]


def _nan_mean(vectors: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair nobody rated stays NaN
        return np.nanmean(vectors, axis=0)


def _nan_ranks(vector: np.ndarray) -> np.ndarray:
    out = np.full(vector.shape, np.nan)
    present = ~np.isnan(vector)
    out[present] = average_ranks(vector[present])
    return out


def pool(vectors: np.ndarray, metric: str) -> np.ndarray:
    """The participants' (k, p) pair vectors pooled into the one vector that suits ``metric``
    (rsatoolbox's ``pool_rdm``; see the module docstring)."""
    if metric == "pearson":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            centered = vectors - np.nanmean(vectors, axis=1, keepdims=True)
            vectors = centered / np.nanstd(vectors, axis=1, keepdims=True)
    elif metric in ("spearman", "rho-a", "kendall", "tau-a"):
        vectors = np.array([_nan_ranks(v) for v in vectors])
    elif metric == "cosine":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            vectors = vectors / np.sqrt(np.nanmean(vectors**2, axis=1, keepdims=True))
    return _nan_mean(vectors)


def _as_matrix(vector: np.ndarray, n: int) -> np.ndarray:
    matrix = np.full((n, n), np.nan)
    rows, cols = np.triu_indices(n, k=1)
    matrix[rows, cols] = vector
    matrix[cols, rows] = vector
    return matrix


def _compare(a: np.ndarray, b: np.ndarray, metric: str, n: int, ties: str) -> float:
    """``metric`` between two pair vectors over the pairs present in both; NaN where undefined."""
    if metric == "triplet":
        return _triplet_counts(_as_matrix(a, n), _as_matrix(b, n)).alignment(ties)
    present = ~(np.isnan(a) | np.isnan(b))
    return _correlation(a[present], b[present], metric)


def _mean(values: list[float], what: str) -> float:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        raise InputError(f"{what} is undefined for every participant (constant or too sparse ratings)")
    return float(np.nanmean(values))


def noise_ceiling(participants, metric: str = "pearson", *, ties: str = DEFAULT_TIES) -> Ceiling:
    """rsatoolbox's noise ceiling of one metric from per-participant matrices.

    ``low`` = mean over participants i of metric(pool(all but i), participant i): what a model
    that knows the group, but not i, reaches. ``high`` = mean of metric(pool(all), participant i):
    above what any model can expect (the pool has seen i). Equal to
    ``rsatoolbox.inference.boot_noise_ceiling`` on RDMs of complete data (tests/test_ceiling.py).

    Args:
        participants: (k, n, n) similarity matrices, one per participant; NaN = not rated.
        metric: a metric comparing two matrices (``pearson, spearman, kendall, tau-a, rho-a,
            cosine, triplet``).
        ties: tie rule of the ``triplet`` metric.
    """
    _check_choice("alignment metric", metric, MATRIX_METRICS)
    _check_choice("ties option", ties, TIE_MODES)
    array = _check_participants(participants)
    n = array.shape[1]
    vectors = _upper_vectors(array)
    everyone = pool(vectors, metric)
    low, high = [], []
    for i in range(len(vectors)):
        others = pool(np.delete(vectors, i, axis=0), metric)
        low.append(_compare(others, vectors[i], metric, n, ties))
        high.append(_compare(everyone, vectors[i], metric, n, ties))
    return Ceiling(_mean(low, f"The {metric} noise ceiling"), _mean(high, f"The {metric} noise ceiling"))


def participant_alignment(model_sim, participants, metric: str = "pearson", *, ties: str = DEFAULT_TIES) -> float:
    """Mean over participants of ``metric`` between the model and each participant's matrix:
    the alignment whose ceiling :func:`noise_ceiling` gives (rsatoolbox's model evaluation)."""
    _check_choice("alignment metric", metric, MATRIX_METRICS)
    _check_choice("ties option", ties, TIE_MODES)
    array = _check_participants(participants)
    model, _ = _check_pair(model_sim, array[0])
    n = model.shape[0]
    vectors = _upper_vectors(array)
    model_vector = _upper_vectors(model[None])[0]
    values = [_compare(model_vector, v, metric, n, ties) for v in vectors]
    return _mean(values, f"The {metric} alignment")


def split_half_reliability(
    participants,
    *,
    method: str = "pearson",
    n_splits: int = DEFAULT_N_SPLITS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    random_state=DEFAULT_SEED,
) -> Reliability:
    """Split-half reliability of the participants' mean matrix, with a percentile interval.

    Each split puts a random half of the participants (k // 2 of them) against the rest and
    compares the two halves' mean matrices (``method`` over the pairs present in both); the
    Spearman-Brown formula 2r / (1 + r) turns that into the reliability of a mean of all k.
    ``value`` averages ``n_splits`` random splits. The interval is a stimulus bootstrap, like
    the alignment's: each resample draws n stimuli with replacement and a random split, and
    scores the pairs of distinct stimuli it holds. (A participant bootstrap would be biased
    low: a half that holds one participant twice averages fewer independent raters.)

    Args:
        participants: (k, n, n), k >= 2.
        method: a pairwise method (``PAIRWISE_METHODS``).
        n_splits: random splits averaged (>= 1).
        n_bootstrap: bootstrap resamples of the interval (0: no interval, NaN bounds).
        confidence: coverage of the interval.
        random_state: seed or ``numpy.random.Generator``.
    """
    _check_choice("pairwise method", method, PAIRWISE_METHODS)
    for name, value, least in (("n_splits", n_splits, 1), ("n_bootstrap", n_bootstrap, 0)):
        if int(value) != value or value < least:
            raise InputError(f"{name} must be an integer >= {least}; got {value!r}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be between 0 and 1; got {confidence}")
    array = _check_participants(participants)
    k, n = array.shape[0], array.shape[1]
    rng = np.random.default_rng(random_state)
    upper = np.triu_indices(n, k=1)

    def corrected(order: np.ndarray, stimuli: np.ndarray | None = None) -> float:
        first, second = _nan_mean(array[order[: k // 2]]), _nan_mean(array[order[k // 2 :]])
        rows, cols = upper if stimuli is None else (stimuli[upper[0]], stimuli[upper[1]])
        a, b = first[rows, cols], second[rows, cols]
        present = ~(np.isnan(a) | np.isnan(b)) & (rows != cols)
        r = _correlation(a[present], b[present], method)
        return 2.0 * r / (1.0 + r) if r > -1.0 else float("nan")

    value = _mean([corrected(rng.permutation(k)) for _ in range(int(n_splits))], "The split-half correlation")
    if not n_bootstrap:
        return Reliability(value, float("nan"), float("nan"))
    resampled = np.array([corrected(rng.permutation(k), rng.integers(0, n, n)) for _ in range(int(n_bootstrap))])
    resampled = resampled[np.isfinite(resampled)]
    if len(resampled) == 0:
        return Reliability(value, float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return Reliability(value, float(low), float(high))


def _triplet_questions(judgments: TripletJudgments) -> tuple[np.ndarray, np.ndarray, int]:
    """Each judgment's question (its triplet, answer-free) and answer, as small integers, and the
    number of possible answers: (anchor, {b, c}) answered by b, or {a, b, c} answered by c."""
    a, b, c = (np.asarray(v, dtype=np.int64) for v in (judgments.a, judgments.b, judgments.c))
    if judgments.kind == "triplet":
        question = np.stack([a, np.minimum(b, c), np.maximum(b, c)], axis=1)
        answer, options = b, 2
    else:
        question = np.sort(np.stack([a, b, c], axis=1), axis=1)
        answer, options = c, 3
    _, question_id = np.unique(question, axis=0, return_inverse=True)
    return question_id.ravel(), answer, options


def has_repeated_judgments(judgments: TripletJudgments) -> bool:
    """Whether some triplet was judged more than once (else the judgments say nothing about noise)."""
    question, _, _ = _triplet_questions(judgments)
    totals = np.bincount(question, weights=np.asarray(judgments.counts, dtype=np.float64))
    return bool((totals > 1).any())


def triplet_ceiling(judgments: TripletJudgments) -> Ceiling:
    """The ceiling of ``triplet_accuracy`` set by the judgments' own consistency.

    ``high``: the majority-vote ceiling, sum over triplets of the count of their most frequent
    answer / all judgments. ``low``: each judgment scored against the majority of the other
    judgments of its triplet (1/m when m answers tie for it, chance when no other judgment
    exists), averaged over judgments. Counts weight both.
    """
    from repalign.data.judgments import TripletJudgments

    if not isinstance(judgments, TripletJudgments):
        raise InputError(
            f"judgments must be a repalign.data.judgments.TripletJudgments; got {type(judgments).__name__}"
        )
    if len(judgments) == 0:
        raise InputError("There are no triplet judgments")
    question, answer, options = _triplet_questions(judgments)
    counts = np.asarray(judgments.counts, dtype=np.int64)
    # votes of every distinct (question, answer)
    keys, key_id = np.unique(np.stack([question, answer], axis=1), axis=0, return_inverse=True)
    votes = np.bincount(key_id.ravel(), weights=counts).astype(np.int64)
    of = keys[:, 0]  # the question of each key
    n_questions = int(of.max()) + 1
    total = int(counts.sum())
    top = np.zeros(n_questions, dtype=np.int64)
    np.maximum.at(top, of, votes)
    high = float(top.sum() / total)

    # leave one judgment out: its own answer keeps votes - 1; the rival is the best other
    # answer (given or not: an answer nobody gave has 0 votes)
    n_top = np.bincount(of, weights=votes == top[of], minlength=n_questions).astype(np.int64)
    below = np.zeros(n_questions, dtype=np.int64)  # the largest vote count under the top
    np.maximum.at(below, of, np.where(votes < top[of], votes, 0))
    n_below = np.bincount(of, weights=(votes == below[of]) & (below[of] > 0), minlength=n_questions).astype(np.int64)
    unseen = options - np.bincount(of, minlength=n_questions)  # answers nobody gave
    alone_on_top = (votes == top[of]) & (n_top[of] == 1)
    rival = np.where(alone_on_top, below[of], top[of])
    # other answers with exactly the rival's votes
    n_rivals = np.where(alone_on_top, n_below[of], n_top[of] - (votes == top[of]))
    n_rivals = n_rivals + np.where(rival == 0, unseen[of], 0)
    own = votes - 1
    score = np.where(own > rival, 1.0, np.where(own == rival, 1.0 / (1 + n_rivals), 0.0))
    low = float((score * votes).sum() / total)
    return Ceiling(low, high)
