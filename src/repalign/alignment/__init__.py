"""Alignment between a model's and humans' representations of the same stimuli.

Everything here compares two (n, n) similarity matrices over the same stimuli, in the
same order (larger = more similar; NaN = a missing pair), or a model matrix with explicit
human triplet judgments:

* :func:`similarity_matrix` -- a model's (n, n) similarity matrix from its embeddings;
* :func:`pairwise_alignment` -- Pearson / Spearman / Kendall correlation of the two upper
  triangles (the RSA-style measure of the paper), and rsatoolbox's tau-a, rho-a and cosine;
* :func:`triplet_alignment`, :func:`triplet_agreement_counts` -- exact agreement over
  all n(n-1)(n-2)/2 triplets, counted in O(n^2 log n) by a compiled kernel;
* :func:`triplet_alignment_sampled` -- an unbiased sampled estimate with a binomial CI;
* :func:`triplet_accuracy` -- agreement with explicit human triplet / odd-one-out judgments;
* :func:`linear_cka` -- linear centered kernel alignment between two embeddings;
* :func:`noise_ceiling`, :func:`participant_alignment`, :func:`split_half_reliability`,
  :func:`triplet_ceiling` -- how well any model could align, given how consistent the humans
  are (per-participant matrices, counted triplets; docs/ceilings.md);
* :func:`bootstrap_alignment_ci`, :func:`compute_alignment` -- stimulus-bootstrap
  confidence intervals and tidy result records; :func:`alignment_rows` -- the same as rows
  of the study's result store.

The triplet definitions, tie handling and bootstrap are documented in docs/alignment.md.
Inputs are validated once at the boundary (``_checks``); the private helpers trust them.
"""

from __future__ import annotations

from repalign._options import (
    ALIGNMENT_METRICS,
    COMPARISON_METHODS,
    DEFAULT_METRICS,
    MATRIX_METRICS,
    PAIRWISE_METHODS,
    SIMILARITY_METRICS,
    TIE_MODES,
)
from repalign.alignment.bootstrap import bootstrap_alignment_ci
from repalign.alignment.ceiling import (
    Ceiling,
    Reliability,
    noise_ceiling,
    participant_alignment,
    split_half_reliability,
    triplet_ceiling,
)
from repalign.alignment.cka import linear_cka
from repalign.alignment.compare import compare_models, comparison_matrix
from repalign.alignment.compute import alignment_rows, compute_alignment
from repalign.alignment.pairwise import pairwise_alignment
from repalign.alignment.similarity import similarity_matrix
from repalign.alignment.triplets import (
    SampledEstimate,
    TripletCounts,
    triplet_accuracy,
    triplet_agreement_counts,
    triplet_alignment,
    triplet_alignment_sampled,
)

__all__ = [
    "ALIGNMENT_METRICS",
    "COMPARISON_METHODS",
    "DEFAULT_METRICS",
    "MATRIX_METRICS",
    "PAIRWISE_METHODS",
    "SIMILARITY_METRICS",
    "TIE_MODES",
    "Ceiling",
    "Reliability",
    "SampledEstimate",
    "TripletCounts",
    "alignment_rows",
    "bootstrap_alignment_ci",
    "compare_models",
    "comparison_matrix",
    "compute_alignment",
    "linear_cka",
    "noise_ceiling",
    "pairwise_alignment",
    "participant_alignment",
    "similarity_matrix",
    "split_half_reliability",
    "triplet_accuracy",
    "triplet_agreement_counts",
    "triplet_alignment",
    "triplet_alignment_sampled",
    "triplet_ceiling",
]
