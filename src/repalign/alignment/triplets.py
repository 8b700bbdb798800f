"""Triplet alignment: exact agreement over all n(n-1)(n-2)/2 triplets, a sampled estimate,
and agreement with explicit human triplet / odd-one-out judgments.

Exact counts come from a compiled kernel in O(n^2 log n) (``_triplet_kernel``); see
docs/alignment.md for the definitions and the tie rules.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from repalign._options import DEFAULT_TIES, TIE_MODES
from repalign.alignment._checks import _as_similarity, _check_choice, _check_pair
from repalign.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from repalign.data.judgments import TripletJudgments

logger = logging.getLogger(__name__)


class TripletCounts(NamedTuple):
    """Exact counts over all n(n-1)(n-2)/2 triplets (anchor i; pair j < k).

    ``agree``: both sides give the same strict answer; ``disagree``: opposite strict answers;
    ``tied``: comparable but tied on at least one side; ``missing``: an entry (i, j) or
    (i, k) is NaN on either side (or, in a bootstrap resample, involves two copies of one
    stimulus). The four add up to n(n-1)(n-2)/2.

    ``tied_match`` (counted on request, else None): the tied triplets whose strict bits
    ``1[sim(i, j) > sim(i, k)]`` are equal on both sides -- tied on both sides, or tied on
    one side while the other prefers k. It is what Definition 3.5 of the paper needs.
    """

    agree: int
    disagree: int
    tied: int
    missing: int
    tied_match: int | None = None

    @property
    def total(self) -> int:
        return self.agree + self.disagree + self.tied + self.missing

    def alignment(self, ties: str = DEFAULT_TIES) -> float:
        """The triplet alignment these counts give (NaN when no triplet is comparable)."""
        _check_choice("ties option", ties, TIE_MODES)
        if ties == "exclude":
            denominator = self.agree + self.disagree
            numerator = float(self.agree)
        elif ties == "half":
            denominator = self.agree + self.disagree + self.tied
            numerator = self.agree + 0.5 * self.tied
        else:  # strict: the match rate of the strict bits over every comparable triplet
            if self.tied_match is None:
                raise InputError("ties='strict' needs counts with tied_match (with_tied_matches=True)")
            denominator = self.agree + self.disagree + self.tied
            numerator = float(self.agree + self.tied_match)
        return numerator / denominator if denominator else float("nan")

    @classmethod
    def from_kernel(cls, row, *, with_tied_matches: bool) -> TripletCounts:
        """Counts from a kernel row (agree, disagree, tied, missing, tied_match)."""
        agree, disagree, tied, missing, tied_match = (int(v) for v in row)
        return cls(agree, disagree, tied, missing, tied_match if with_tied_matches else None)


class SampledEstimate(NamedTuple):
    """A sampled triplet-alignment estimate with its binomial 95% (Wilson) interval."""

    value: float
    ci_low: float
    ci_high: float
    n_triplets: int


def _triplet_counts(model: np.ndarray, human: np.ndarray, *, with_tied_matches: bool = False) -> TripletCounts:
    from repalign.alignment import _triplet_small

    if model.shape[0] <= _triplet_small.SMALL_N:  # numpy: no numba to load in a fresh process
        row = _triplet_small.counts(model, human, with_tied_matches=with_tied_matches)
        return TripletCounts.from_kernel(row, with_tied_matches=with_tied_matches)
    from repalign.alignment._triplet_kernel import triplet_counts_by_anchor

    idx = np.arange(model.shape[0], dtype=np.int64)
    per_anchor = triplet_counts_by_anchor(model, human, idx, False, with_tied_matches)
    return TripletCounts.from_kernel(per_anchor.sum(axis=0), with_tied_matches=with_tied_matches)


def triplet_agreement_counts(model_sim, human_sim, *, with_tied_matches: bool = False) -> TripletCounts:
    """Exact integer counts of (dis)agreeing, tied and missing triplets.

    Every triplet (anchor i; pair j < k; j, k != i) asks "is i more similar to j than to
    k?", answered by ``sim[i, j] > sim[i, k]`` on each side. Counting uses the Kendall-tau
    merge-sort idea per anchor (O(n log n)), never enumerating triplets.

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli; NaN =
            missing. Row i of each matrix gives the anchor's similarities (matrices are
            normally symmetric).
        with_tied_matches: also count ``tied_match`` (needed by ``ties="strict"``; about
            twice the work).
    """
    model, human = _check_pair(model_sim, human_sim)
    return _triplet_counts(model, human, with_tied_matches=with_tied_matches)


def triplet_alignment(model_sim, human_sim, *, ties: str = DEFAULT_TIES) -> float:
    """Fraction of triplets on which model and humans give the same answer.

    ``ties="exclude"``: agree / (agree + disagree), tied and missing triplets left out.
    ``ties="half"``: (agree + tied / 2) / (agree + disagree + tied), a triplet tied on
    either side scoring half (what a coin flip would get on average).
    ``ties="strict"``: the paper's Definition 3.5, the match rate of the strict bits
    ``1[sim(i, j) > sim(i, k)]`` (j < k; a tie gives bit 0) over all n(n-1)(n-2)/2
    triplets -- over those without a missing entry when there are NaNs.

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli.
        ties: ``"exclude"``, ``"half"`` or ``"strict"``.

    Returns:
        A float in [0, 1]; 1 = identical orderings of every anchor's row, 0 = reversed.
    """
    _check_choice("ties option", ties, TIE_MODES)
    counts = triplet_agreement_counts(model_sim, human_sim, with_tied_matches=ties == "strict")
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
    model_sim, human_sim, *, n_triplets: int, random_state=None, ties: str = DEFAULT_TIES
) -> SampledEstimate:
    """Unbiased estimate of :func:`triplet_alignment` from ``n_triplets`` sampled triplets.

    Triplets are drawn uniformly with replacement; those that do not count for the
    chosen ``ties`` rule (missing ones, and tied ones under ``"exclude"``) are redrawn,
    so each kept triplet is uniform over the counted ones and the fraction that agree is
    an unbiased estimate of the exact value. Under ``ties="half"`` a tied triplet counts
    as agreement with probability 1/2 (a coin flip), which keeps every draw a Bernoulli
    variable with exactly the exact value as its mean. Under ``ties="strict"`` a draw
    matches when the strict bits of its (j < k) ordering are equal on both sides. The 95%
    interval is Wilson's score interval of ``scipy.stats.binomtest``.

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli.
        n_triplets: number of counted triplets to draw (>= 1).
        random_state: seed or ``numpy.random.Generator``.
        ties: ``"exclude"``, ``"half"`` or ``"strict"``.
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
        elif ties == "strict":
            # the bits are defined for the pair in stimulus order (j < k): a tie is bit 0
            first, second = np.minimum(j, k), np.maximum(j, k)
            model_bit = model[anchor, first] > model[anchor, second]
            human_bit = human[anchor, first] > human[anchor, second]
            agree = comparable & (model_bit == human_bit)
            counted = comparable
        else:
            counted = comparable & ~tied
        take = np.flatnonzero(counted)[: n_triplets - kept]
        successes += int(agree[take].sum())
        kept += len(take)
    interval = binomtest(successes, kept).proportion_ci(confidence_level=0.95, method="wilson")
    return SampledEstimate(successes / kept, float(interval.low), float(interval.high), kept)


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
    from repalign.data.judgments import TripletJudgments

    if not isinstance(judgments, TripletJudgments):
        raise InputError(
            f"judgments must be a repalign.data.judgments.TripletJudgments; got {type(judgments).__name__}"
        )
    model = _as_similarity(model_sim, "model_sim")
    if model.shape[0] != judgments.n_stimuli:
        raise InputError(f"model_sim has {model.shape[0]} stimuli but the judgments refer to {judgments.n_stimuli}")
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
        judgments: :class:`repalign.data.judgments.TripletJudgments` indexing its rows.
    """
    model = _check_judgments(model_sim, judgments)
    score, valid = _judgment_scores(model, judgments)
    value = _weighted_accuracy(score, valid, np.asarray(judgments.counts, dtype=np.float64))
    if np.isnan(value):
        raise InputError("Every triplet judgment touches a missing (NaN) model similarity")
    return value
