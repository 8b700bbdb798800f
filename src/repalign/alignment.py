"""Alignment between a model's and humans' representations of the same stimuli.

Everything here compares two (n, n) similarity matrices over the same stimuli, in the
same order (larger = more similar; NaN = a missing pair), or a model matrix with explicit
human triplet judgments:

* :func:`similarity_matrix` -- a model's (n, n) similarity matrix from its embeddings;
* :func:`pairwise_alignment` -- Pearson / Spearman / Kendall correlation of the two upper
  triangles (the RSA-style measure of the paper);
* :func:`triplet_alignment`, :func:`triplet_agreement_counts` -- exact agreement over
  all n(n-1)(n-2)/2 triplets, counted in O(n^2 log n) by a compiled kernel;
* :func:`triplet_alignment_sampled` -- an unbiased sampled estimate with a binomial CI;
* :func:`triplet_accuracy` -- agreement with explicit human triplet / odd-one-out judgments;
* :func:`linear_cka` -- linear centered kernel alignment between two embeddings;
* :func:`bootstrap_alignment_ci`, :func:`compute_alignment` -- stimulus-bootstrap
  confidence intervals and tidy result records.

The triplet definitions, tie handling and bootstrap are documented in docs/alignment.md.
Inputs are validated once here at the boundary; the private helpers trust them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from repalign.errors import InputError, unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from repalign.data.human import HumanSimilarity
    from repalign.judgments import TripletJudgments

logger = logging.getLogger(__name__)

SIMILARITY_METRICS = ("cosine", "dot", "neg_euclidean", "pearson")
PAIRWISE_METHODS = ("pearson", "spearman", "kendall")
TIE_MODES = ("exclude", "half")
#: metrics that compare two similarity matrices / a matrix with judgments
MATRIX_METRICS = (*PAIRWISE_METHODS, "triplet")
ALIGNMENT_METRICS = (*MATRIX_METRICS, "triplet_accuracy")
DEFAULT_METRICS = ("pearson", "spearman", "triplet")


class TripletCounts(NamedTuple):
    """Exact counts over all n(n-1)(n-2)/2 triplets (anchor i; pair j < k).

    ``agree``: both sides give the same strict answer; ``disagree``: opposite strict answers;
    ``tied``: comparable but tied on at least one side; ``missing``: an entry (i, j) or
    (i, k) is NaN on either side (or, in a bootstrap resample, involves two copies of one
    stimulus). The four add up to n(n-1)(n-2)/2.
    """

    agree: int
    disagree: int
    tied: int
    missing: int

    @property
    def total(self) -> int:
        return self.agree + self.disagree + self.tied + self.missing

    def alignment(self, ties: str = "exclude") -> float:
        """The triplet alignment these counts give (NaN when no triplet is comparable)."""
        _check_choice("ties option", ties, TIE_MODES)
        if ties == "exclude":
            denominator = self.agree + self.disagree
            numerator = float(self.agree)
        else:
            denominator = self.agree + self.disagree + self.tied
            numerator = self.agree + 0.5 * self.tied
        return numerator / denominator if denominator else float("nan")


class SampledEstimate(NamedTuple):
    """A sampled triplet-alignment estimate with its binomial 95% (Wilson) interval."""

    value: float
    ci_low: float
    ci_high: float
    n_triplets: int


# --------------------------------------------------------------------------- validation


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


# ------------------------------------------------------------------- similarity matrices


def similarity_matrix(embeddings, *, metric: str = "cosine") -> np.ndarray:
    """The (n, n) similarity matrix of a model's embeddings (larger = more similar).

    Args:
        embeddings: (n_stimuli, n_features) array, one row per stimulus.
        metric: ``"cosine"``, ``"dot"``, ``"neg_euclidean"`` (minus the Euclidean
            distance) or ``"pearson"`` (correlation between the feature vectors).

    Returns:
        (n, n) float64, symmetric, never NaN. A row with zero norm (cosine) or zero variance
        (pearson) has similarity 0 to every other stimulus; every diagonal entry is the
        self-similarity (1 for cosine and pearson, also for such rows; 0 for
        neg_euclidean). The diagonal is never used by the alignment metrics.
    """
    _check_choice("similarity metric", metric, SIMILARITY_METRICS)
    x = _as_embeddings(embeddings)
    if metric == "pearson":
        x = x - x.mean(axis=1, keepdims=True)
    if metric in ("cosine", "pearson"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        # zero rows stay zero: their similarity to others is 0 instead of 0/0
        unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        sim = unit @ unit.T
        np.clip(sim, -1.0, 1.0, out=sim)  # rounding can leave |cos| slightly above 1
        np.fill_diagonal(sim, 1.0)
    elif metric == "dot":
        sim = x @ x.T
    else:  # neg_euclidean, via the Gram matrix (O(n^2 d) in BLAS, not O(n^2 d) in Python)
        squared = np.einsum("ij,ij->i", x, x)
        dist2 = squared[:, None] + squared[None, :] - 2.0 * (x @ x.T)
        np.maximum(dist2, 0.0, out=dist2)
        sim = -np.sqrt(dist2)
        np.fill_diagonal(sim, 0.0)
    # exact symmetry, so that rows and columns give identical triplet answers
    return (sim + sim.T) / 2.0


# -------------------------------------------------------------------- pairwise alignment


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


# --------------------------------------------------------------------- triplet alignment


def _triplet_counts(model: np.ndarray, human: np.ndarray) -> TripletCounts:
    from repalign._triplet_kernel import triplet_counts_by_anchor

    idx = np.arange(model.shape[0], dtype=np.int64)
    per_anchor = triplet_counts_by_anchor(model, human, idx, False)
    return TripletCounts(*(int(v) for v in per_anchor.sum(axis=0)))


def triplet_agreement_counts(model_sim, human_sim) -> TripletCounts:
    """Exact integer counts of (dis)agreeing, tied and missing triplets.

    Every triplet (anchor i; pair j < k; j, k != i) asks "is i more similar to j than to
    k?", answered by ``sim[i, j] > sim[i, k]`` on each side. Counting uses the Kendall-tau
    merge-sort idea per anchor (O(n log n)), never enumerating triplets.

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli; NaN =
            missing. Row i of each matrix gives the anchor's similarities (matrices are
            normally symmetric).
    """
    model, human = _check_pair(model_sim, human_sim)
    return _triplet_counts(model, human)


def triplet_alignment(model_sim, human_sim, *, ties: str = "exclude") -> float:
    """Fraction of triplets on which model and humans give the same answer.

    ``ties="exclude"``: agree / (agree + disagree), tied and missing triplets left out.
    ``ties="half"``: (agree + tied / 2) / (agree + disagree + tied), a triplet tied on
    either side scoring half (what a coin flip would get on average).

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli.
        ties: ``"exclude"`` or ``"half"``.

    Returns:
        A float in [0, 1]; 1 = identical orderings of every anchor's row, 0 = reversed.
    """
    _check_choice("ties option", ties, TIE_MODES)
    counts = triplet_agreement_counts(model_sim, human_sim)
    value = counts.alignment(ties)
    if np.isnan(value):
        raise InputError(f"No comparable triplet (counts: {counts}); every triplet is missing or tied")
    return value


def _sample_triplets(n: int, size: int, rng: np.random.Generator):
    """``size`` triplets drawn uniformly (with replacement) from all n(n-1)(n-2)/2."""
    anchor = rng.integers(0, n, size)
    j = rng.integers(0, n - 1, size)
    j += j >= anchor  # skip the anchor
    k = rng.integers(0, n - 2, size)
    low, high = np.minimum(anchor, j), np.maximum(anchor, j)
    k += k >= low  # skip both, in increasing order, to stay uniform over the rest
    k += k >= high
    return anchor, j, k


def triplet_alignment_sampled(
    model_sim, human_sim, *, n_triplets: int, random_state=None, ties: str = "exclude"
) -> SampledEstimate:
    """Unbiased estimate of :func:`triplet_alignment` from ``n_triplets`` sampled triplets.

    Triplets are drawn uniformly with replacement; those that do not count for the
    chosen ``ties`` rule (missing ones, and tied ones under ``"exclude"``) are redrawn,
    so each kept triplet is uniform over the counted ones and the fraction that agree is
    an unbiased estimate of the exact value. Under ``ties="half"`` a tied triplet counts
    as agreement with probability 1/2 (a coin flip), which keeps every draw a Bernoulli
    variable with exactly the exact value as its mean. The 95% interval is Wilson's score
    interval of ``scipy.stats.binomtest``.

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli.
        n_triplets: number of counted triplets to draw (>= 1).
        random_state: seed or ``numpy.random.Generator``.
        ties: ``"exclude"`` or ``"half"``.
    """
    from scipy.stats import binomtest

    _check_choice("ties option", ties, TIE_MODES)
    model, human = _check_pair(model_sim, human_sim)
    if int(n_triplets) != n_triplets or n_triplets < 1:
        raise InputError(f"n_triplets must be a positive integer; got {n_triplets!r}")
    n_triplets = int(n_triplets)
    rng = np.random.default_rng(random_state)
    n = model.shape[0]

    successes = 0
    kept = 0
    drawn = 0
    # a draw is kept with probability p = counted / all; stop if p looks like 0
    max_draws = max(100 * n_triplets, 1_000_000)
    while kept < n_triplets:
        if drawn >= max_draws:
            raise InputError(
                f"Only {kept} of {drawn} sampled triplets were comparable (not missing or tied); "
                "too many missing or tied pairs for a sampled estimate, use triplet_alignment instead"
            )
        batch = max(2 * (n_triplets - kept), 1024)
        anchor, j, k = _sample_triplets(n, batch, rng)
        drawn += batch
        model_order = np.sign(model[anchor, j] - model[anchor, k])
        human_order = np.sign(human[anchor, j] - human[anchor, k])
        comparable = ~(np.isnan(model_order) | np.isnan(human_order))
        tied = comparable & ((model_order == 0) | (human_order == 0))
        agree = comparable & ~tied & (model_order == human_order)
        if ties == "half":
            agree |= tied & (rng.random(batch) < 0.5)
            counted = comparable
        else:
            counted = comparable & ~tied
        take = np.flatnonzero(counted)[: n_triplets - kept]
        successes += int(agree[take].sum())
        kept += len(take)
    interval = binomtest(successes, kept).proportion_ci(confidence_level=0.95, method="wilson")
    return SampledEstimate(successes / kept, float(interval.low), float(interval.high), kept)


# ------------------------------------------------------------------- explicit judgments


def _judgment_scores(model: np.ndarray, judgments: TripletJudgments) -> tuple[np.ndarray, np.ndarray]:
    """Per-judgment model score in [0, 1] and a mask of judgments with no missing entry."""
    a, b, c = (np.asarray(v, dtype=np.intp) for v in (judgments.a, judgments.b, judgments.c))
    s_ab = model[a, b]
    s_ac = model[a, c]
    if judgments.kind == "triplet":
        score = np.where(s_ab > s_ac, 1.0, np.where(s_ab == s_ac, 0.5, 0.0))
        valid = ~(np.isnan(s_ab) | np.isnan(s_ac))
    else:
        # the model's odd one out is the stimulus outside its most similar pair; humans
        # said c (a and b alike), so the model agrees when (a, b) is its most similar pair,
        # sharing the credit equally when several pairs tie for most similar
        s_bc = model[b, c]
        top = np.fmax(np.fmax(s_ab, s_ac), s_bc)
        n_top = (s_ab == top).astype(float) + (s_ac == top) + (s_bc == top)
        score = np.divide((s_ab == top).astype(float), n_top, out=np.zeros_like(top), where=n_top > 0)
        valid = ~(np.isnan(s_ab) | np.isnan(s_ac) | np.isnan(s_bc))
    return score, valid


def _check_judgments(model_sim, judgments) -> np.ndarray:
    from repalign.judgments import TripletJudgments

    if not isinstance(judgments, TripletJudgments):
        raise InputError(f"judgments must be a repalign.judgments.TripletJudgments; got {type(judgments).__name__}")
    model = _as_similarity(model_sim, "model_sim")
    if model.shape[0] != judgments.n_stimuli:
        raise InputError(
            f"model_sim has {model.shape[0]} stimuli but the judgments refer to {judgments.n_stimuli}"
        )
    if len(judgments) == 0:
        raise InputError("There are no triplet judgments to score")
    return model


def _weighted_accuracy(score, valid, weights) -> float:
    weights = np.where(valid, weights, 0.0)
    total = weights.sum()
    return float((score * weights).sum() / total) if total > 0 else float("nan")


def triplet_accuracy(model_sim, judgments: TripletJudgments) -> float:
    """Agreement of a model's similarities with explicit human triplet judgments.

    * ``kind="triplet"`` (anchor a, positive b, negative c): the fraction of judgments
      with ``model_sim[a, b] > model_sim[a, c]``; a tie scores 1/2. Chance 1/2.
    * ``kind="odd_one_out"`` (a, b alike, c odd): the fraction where the model's odd one
      out -- the stimulus not in its most similar pair -- is c; when k pairs tie for most
      similar, a judgment scores 1/k if (a, b) is among them. Chance 1/3.

    Judgments are weighted by their ``counts``; those touching a NaN model entry are left out.

    Args:
        model_sim: (n, n) model similarity matrix.
        judgments: :class:`repalign.judgments.TripletJudgments` indexing its rows.
    """
    model = _check_judgments(model_sim, judgments)
    score, valid = _judgment_scores(model, judgments)
    value = _weighted_accuracy(score, valid, np.asarray(judgments.counts, dtype=np.float64))
    if np.isnan(value):
        raise InputError("Every triplet judgment touches a missing (NaN) model similarity")
    return value


# ----------------------------------------------------------------------------- CKA


def _unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC estimator of two (n, n) Gram matrices, n > 3."""
    n = k.shape[0]
    k = k.copy()
    l = l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    k_sum = k.sum(axis=0)
    l_sum = l.sum(axis=0)
    term = (
        np.sum(k * l)  # tr(K L) for symmetric matrices
        + k_sum.sum() * l_sum.sum() / ((n - 1) * (n - 2))
        - 2.0 * (k_sum @ l_sum) / (n - 2)
    )
    return float(term / (n * (n - 3)))


def linear_cka(x, y, *, debiased: bool = False) -> float:
    """Linear centered kernel alignment between two representations of the same stimuli.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels
    ``K = x x^T``, ``L = y y^T`` (Kornblith et al. 2019). The plain version uses the
    biased HSIC (centered features: ``||y^T x||_F^2 / (||x^T x||_F ||y^T y||_F)``); with
    ``debiased=True`` every HSIC is Song et al.'s (2012) unbiased estimator, which removes
    the upward bias of CKA when features outnumber stimuli (as in Nguyen et al. 2021).

    Args:
        x: (n_stimuli, p) array; y: (n_stimuli, q) array, rows in the same stimulus order.
        debiased: use the unbiased HSIC estimator (needs n_stimuli >= 4).

    Returns:
        A float, 1 for representations equal up to rotation and isotropic scaling. The
        debiased value can be slightly negative for unrelated representations.
    """
    x = _as_embeddings(x, "x")
    y = _as_embeddings(y, "y")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"x and y must have one row per stimulus each; got {x.shape[0]} and {y.shape[0]} rows")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    if not debiased:
        # feature-space form: O(n p q) instead of building n x n kernels
        cross = np.linalg.norm(y.T @ x) ** 2
        norm_x = np.linalg.norm(x.T @ x)
        norm_y = np.linalg.norm(y.T @ y)
    else:
        if x.shape[0] < 4:
            raise InputError("debiased CKA needs at least 4 stimuli")
        k = x @ x.T
        l = y @ y.T
        cross = _unbiased_hsic(k, l)
        norm_x = np.sqrt(max(_unbiased_hsic(k, k), 0.0))
        norm_y = np.sqrt(max(_unbiased_hsic(l, l), 0.0))
    if norm_x == 0 or norm_y == 0:
        raise InputError("CKA is undefined for a representation that is constant across stimuli")
    return float(cross / (norm_x * norm_y))


# -------------------------------------------------------------------------- bootstrap


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
        from repalign._triplet_kernel import triplet_counts_resampled

        totals = triplet_counts_resampled(model, human, resamples)
        values["triplet"] = np.array([TripletCounts(*row).alignment(ties) for row in totals])
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
    n_bootstrap: int = 1000,
    random_state=0,
    confidence: float = 0.95,
    ties: str = "exclude",
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


# ---------------------------------------------------------------------- one dataset


def _metrics_for(human: HumanSimilarity, metrics: Sequence[str], is_default: bool) -> list[str]:
    """The metrics to compute for one dataset (the default adapts to what it provides)."""
    has_matrix = human.similarity is not None
    has_judgments = human.judgments is not None
    if is_default:
        chosen = list(metrics) if has_matrix else []
        return chosen + (["triplet_accuracy"] if has_judgments else [])
    needs_matrix = [m for m in metrics if m in MATRIX_METRICS]
    if needs_matrix and not has_matrix:
        raise InputError(
            f"Dataset {human.name} has triplet judgments but no similarity matrix, so metrics "
            f"{', '.join(needs_matrix)} do not apply; use --metrics triplet_accuracy"
        )
    if "triplet_accuracy" in metrics and not has_judgments:
        raise InputError(f"Dataset {human.name} has no triplet judgments, so triplet_accuracy does not apply")
    return list(metrics)


def compute_alignment(
    embeddings,
    human: HumanSimilarity,
    *,
    similarity: str = "cosine",
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_bootstrap: int = 1000,
    random_state=0,
    ties: str = "exclude",
) -> list[dict]:
    """Alignment of a model's embeddings with one human dataset, as tidy records.

    Args:
        embeddings: (n_stimuli, n_features), rows in ``human.stimuli`` order.
        human: a :class:`repalign.data.human.HumanSimilarity`.
        similarity: similarity function of the model matrix (see :func:`similarity_matrix`).
        metrics: names from ``pearson, spearman, kendall, triplet, triplet_accuracy``. With
            the default, a judgments-only dataset gets ``triplet_accuracy`` and a dataset
            with both a matrix and judgments gets ``triplet_accuracy`` as well.
        n_bootstrap: stimulus-bootstrap resamples for the 95% CI (0: no CI, NaN bounds).
        random_state: seed of the bootstrap.
        ties: tie rule of the ``"triplet"`` metric.

    Returns:
        One dict per metric with keys ``dataset, metric, similarity, value, ci_low,
        ci_high, n_stimuli, n_missing_pairs`` (pairs missing on either side).
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    is_default = tuple(metrics) == DEFAULT_METRICS
    for metric in metrics:
        _check_choice("alignment metric", metric, ALIGNMENT_METRICS)
    _check_choice("similarity metric", similarity, SIMILARITY_METRICS)
    _check_choice("ties option", ties, TIE_MODES)
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise InputError(f"n_bootstrap must be a non-negative integer; got {n_bootstrap!r}")
    x = _as_embeddings(embeddings)
    n_stimuli = len(human.stimuli)
    if x.shape[0] != n_stimuli:
        raise InputError(
            f"embeddings have {x.shape[0]} rows but dataset {human.name} has {n_stimuli} stimuli; "
            "pass one row per stimulus, in the dataset's stimulus order"
        )
    chosen = _metrics_for(human, metrics, is_default)
    model = similarity_matrix(x, metric=similarity)
    human_sim = None
    if human.similarity is not None:
        model, human_sim = _check_pair(model, human.similarity)
    judgments = human.judgments if "triplet_accuracy" in chosen else None
    n_missing = _upper_pairs(model, human_sim)[2] if human_sim is not None else 0

    values: dict[str, float] = {}
    for metric in chosen:
        if metric in PAIRWISE_METHODS:
            values[metric] = pairwise_alignment(model, human_sim, method=metric)
        elif metric == "triplet":
            values[metric] = triplet_alignment(model, human_sim, ties=ties)
        else:
            values[metric] = triplet_accuracy(model, judgments)
    if n_bootstrap:
        intervals = bootstrap_alignment_ci(
            model,
            human_sim,
            judgments=judgments,
            metrics=chosen,
            n_bootstrap=n_bootstrap,
            random_state=random_state,
            ties=ties,
        )
    else:
        intervals = {metric: (float("nan"), float("nan")) for metric in chosen}
    return [
        {
            "dataset": human.name,
            "metric": metric,
            "similarity": similarity,
            "value": values[metric],
            "ci_low": intervals[metric][0],
            "ci_high": intervals[metric][1],
            "n_stimuli": n_stimuli,
            "n_missing_pairs": n_missing,
        }
        for metric in chosen
    ]
