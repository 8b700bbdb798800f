"""Linear centered kernel alignment (CKA) between two representations of the same stimuli."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from repalign.alignment._checks import _as_embeddings
from repalign.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    pass

logger = logging.getLogger(__name__)


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
