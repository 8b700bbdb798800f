"""Stochastic alignment ``D_P``: the probability that teacher and student agree on a triplet
drawn from a distribution ``P`` over triplets, and the misalignment ``eps = 1 - D_P``.

With ``P`` uniform over all triplets of the shared objects, ``D_P`` is exactly the triplet
alignment; sampling ``n_triplets`` of them gives an unbiased estimate with a binomial
(Wilson) interval, which is what a researcher gets from a finite set of human judgments.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["StochasticAlignment", "stochastic_alignment"]


class StochasticAlignment(NamedTuple):
    """``D_P`` estimate with its 95% interval, and the implied misalignment ``eps = 1 - D_P``."""

    alignment: float
    ci_low: float
    ci_high: float
    eps: float
    eps_ci_low: float
    eps_ci_high: float
    n_triplets: int


def stochastic_alignment(student_sim, teacher_sim, *, n_triplets: int, random_state=None) -> StochasticAlignment:
    """Estimate ``D_P`` (uniform ``P``) from ``n_triplets`` sampled triplets.

    Reuses :func:`repalign.alignment.triplet_alignment_sampled` (uniform sampling, tied
    triplets redrawn, Wilson 95% interval) and adds the channel's flip rate.

    Args:
        student_sim, teacher_sim: (n, n) similarity matrices over the same objects.
        n_triplets: number of sampled triplets (>= 1).
        random_state: seed or ``numpy.random.Generator``.
    """
    from repalign.alignment import triplet_alignment_sampled  # lazy: sibling module

    estimate = triplet_alignment_sampled(student_sim, teacher_sim, n_triplets=n_triplets, random_state=random_state)
    return StochasticAlignment(
        alignment=float(estimate.value),
        ci_low=float(estimate.ci_low),
        ci_high=float(estimate.ci_high),
        eps=1.0 - float(estimate.value),
        eps_ci_low=1.0 - float(estimate.ci_high),
        eps_ci_high=1.0 - float(estimate.ci_low),
        n_triplets=int(estimate.n_triplets),
    )
