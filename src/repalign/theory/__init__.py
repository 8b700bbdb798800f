"""The study's information-theoretic predictions, as computations and simulations.

Triplet answers are bits sent over a binary symmetric channel whose flip rate is the
misalignment ``eps`` between teacher (human) and student (model). Modules:

* :mod:`~repalign.theory.capacity` -- ``C(eps) = 1 - H2(eps)``, query bounds, predicted shapes;
* :mod:`~repalign.theory.adversarial` -- worst-object disagreement (Theorem A.5), exact and Monte Carlo;
* :mod:`~repalign.theory.stochastic` -- stochastic alignment ``D_P`` from sampled triplets;
* :mod:`~repalign.theory.students` -- students misaligned by a chosen ``eps`` (flips, or a perturbed embedding);
* :mod:`~repalign.theory.communication` -- the teaching game: queries needed vs ``eps``;
* :mod:`~repalign.theory.domain_shift` -- triplets flipped when class centroids move (Definition A.1);
* :mod:`~repalign.theory.experiments` / :mod:`~repalign.theory.figures` -- everything ``repalign theory`` writes.

See docs/theory.md.
"""

from __future__ import annotations

from repalign.theory.adversarial import (
    MonteCarloEstimate,
    expected_max_disagreement,
    simulate_max_disagreement,
    triplets_per_object,
)
from repalign.theory.capacity import (
    binary_entropy,
    channel_capacity,
    fano_query_bound,
    predicted_accuracy_shape,
    predicted_query_ratio,
    query_lower_bound,
    query_ratio,
)
from repalign.theory.communication import (
    STUDENT_KINDS,
    GameConfig,
    GameResult,
    compare_with_capacity,
    queries_to_target,
    simulate_communication_game,
)
from repalign.theory.domain_shift import domain_shift_sensitivity
from repalign.theory.experiments import TheoryGrid, default_grid, run_theory, summary_table
from repalign.theory.stochastic import StochasticAlignment, stochastic_alignment
from repalign.theory.students import EmbeddingStudent, build_embedding_student, measure_disagreement

__all__ = [
    "STUDENT_KINDS",
    "EmbeddingStudent",
    "GameConfig",
    "GameResult",
    "MonteCarloEstimate",
    "StochasticAlignment",
    "TheoryGrid",
    "binary_entropy",
    "build_embedding_student",
    "channel_capacity",
    "compare_with_capacity",
    "default_grid",
    "domain_shift_sensitivity",
    "expected_max_disagreement",
    "fano_query_bound",
    "measure_disagreement",
    "predicted_accuracy_shape",
    "predicted_query_ratio",
    "queries_to_target",
    "query_lower_bound",
    "query_ratio",
    "run_theory",
    "simulate_communication_game",
    "simulate_max_disagreement",
    "stochastic_alignment",
    "summary_table",
    "triplets_per_object",
]
