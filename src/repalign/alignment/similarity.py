"""A model's (n, n) similarity matrix from its embeddings."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from repalign._options import DEFAULT_SIMILARITY, SIMILARITY_METRICS
from repalign.alignment._checks import _as_embeddings, _check_choice

if TYPE_CHECKING:  # pragma: no cover
    pass

logger = logging.getLogger(__name__)


def similarity_matrix(embeddings, *, metric: str = DEFAULT_SIMILARITY) -> np.ndarray:
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
