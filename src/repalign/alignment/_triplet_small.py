"""Exact triplet counts for small stimulus sets in numpy, without loading numba.

``repalign align`` on one of the paper's datasets scores 120 stimuli. The compiled kernels
(:mod:`repalign.alignment._triplet_kernel`) count that in milliseconds, but loading numba
and its cached kernels costs a fresh process about half a second (numba's own imports pull
in scipy.linalg and cffi), more than the whole computation. Up to :data:`SMALL_N` stimuli
the n^3 triplet outcomes fit in a few megabytes, so numpy enumerates them directly:

* the point estimate: the outcome of every (anchor i; pair j < k), summed;
* the stimulus bootstrap: a resample holding stimulus s ``c_s`` times holds triplet
  (i; j, k) of distinct stimuli ``c_i c_j c_k`` times (triplets among copies of one stimulus
  are missing by definition, as in the kernels), so each count is a cubic form in the
  resample's copy counts: one matrix product over all resamples, then two weighted sums.

Counts are integers held exactly (every partial sum below n^3 < 2**24, exact in float32),
and equal the kernels' (tests/test_alignment.py compares them). The strict-bits count of
``ties="strict"`` depends on the order of the copies within a resample, not only on their
number, so the strict bootstrap stays with the kernels.
"""

from __future__ import annotations

import numpy as np

#: Largest stimulus count counted here (n^3 outcomes: 6.4 MB of booleans at 186).
SMALL_N = 186

#: Resamples per matrix product (bounds the (2 n^2, chunk) float32 intermediate to ~70 MB at n = 186).
_CHUNK = 256


def _signs(sim: np.ndarray) -> np.ndarray:
    """(n, n, n) int8: sign of sim[i, j] - sim[i, k] (0 for NaN, see :func:`_valid`)."""
    a, b = sim[:, :, None], sim[:, None, :]
    return (a > b).astype(np.int8) - (a < b).astype(np.int8)


def _valid(model: np.ndarray, human: np.ndarray) -> np.ndarray:
    """(n, n, n) bool: the four entries of triplet (i; j, k) are present, j, k, i distinct."""
    present = ~(np.isnan(model) | np.isnan(human))
    valid = present[:, :, None] & present[:, None, :]
    n = len(model)
    distinct = ~np.eye(n, dtype=bool)
    valid &= distinct[:, :, None] & distinct[:, None, :] & distinct[None, :, :]
    return valid


def _outcomes(model: np.ndarray, human: np.ndarray):
    """(agree, disagree, valid) (n, n, n) boolean arrays over ordered pairs (j, k)."""
    product = _signs(model) * _signs(human)
    valid = _valid(model, human)
    return valid & (product > 0), valid & (product < 0), valid


def counts(model: np.ndarray, human: np.ndarray, *, with_tied_matches: bool) -> np.ndarray:
    """(5,) int64 agree, disagree, tied, missing, tied_match of all triplets, as the kernels
    give them summed over anchors (tied_match 0 without ``with_tied_matches``)."""
    n = len(model)
    agree, disagree, valid = _outcomes(model, human)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)[None]  # pairs j < k
    n_agree = int((agree & upper).sum())
    n_disagree = int((disagree & upper).sum())
    n_valid = int((valid & upper).sum())
    tied = n_valid - n_agree - n_disagree
    missing = n * (n - 1) * (n - 2) // 2 - n_valid
    tied_match = 0
    if with_tied_matches:  # tied on a side, and the strict bits sim[i, j] > sim[i, k] still match
        m, h = model[:, :, None] > model[:, None, :], human[:, :, None] > human[:, None, :]
        tied_match = int((valid & upper & ~agree & ~disagree & (m == h)).sum())
    return np.array([n_agree, n_disagree, tied, missing, tied_match], dtype=np.int64)


def counts_resampled(model: np.ndarray, human: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """(B, 5) int64 counts of each resample (rows of ``resamples``, stimulus indices), as
    ``triplet_counts_resampled`` without strict bits (its last column is 0)."""
    n_stimuli = len(model)
    n_resamples, n = resamples.shape
    agree, disagree, valid = _outcomes(model, human)
    complete = not (np.isnan(model).any() or np.isnan(human).any())
    by_last = _by_last(np.stack([agree, disagree] if complete else [agree, disagree, valid]))
    out = np.zeros((n_resamples, 5), dtype=np.int64)
    for start in range(0, n_resamples, _CHUNK):
        idx = resamples[start : start + _CHUNK]
        copies = np.zeros((len(idx), n_stimuli), dtype=np.float32)
        np.add.at(copies, (np.arange(len(idx))[:, None], idx), 1.0)
        sums = np.rint(_cubic_forms(by_last, copies)).astype(np.int64)
        n_agree, n_disagree = sums[0], sums[1]
        n_valid = sums[2] if not complete else _distinct_triplets(copies)
        rows = slice(start, start + len(idx))
        out[rows, 0], out[rows, 1] = n_agree, n_disagree
        out[rows, 2] = n_valid - n_agree - n_disagree
        out[rows, 3] = n * (n - 1) * (n - 2) // 2 - n_valid
    return out


def _cubic_forms(by_last: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """For each outcome and each row c of ``copies``: the sum over anchors i and ordered
    pairs (j, k) of c_i c_j c_k [outcome i; j, k], halved (every pair is counted in both
    orders) -> (n_outcomes, B). ``by_last``: the outcomes as a float32 (n, n_outcomes * n * n)
    matrix, k first (:func:`_by_last`). Every partial sum is an integer below n^3 < 2**24,
    so float32 holds it exactly whatever the summation order."""
    n = copies.shape[1]
    kinds = by_last.shape[1] // (n * n)
    by_pair = (copies @ by_last).reshape(len(copies), kinds * n, n)  # over k: (B, t*i, j)
    by_anchor = np.matmul(by_pair, copies[:, :, None]).reshape(len(copies), kinds, n)  # over j
    return np.einsum("bti,bi->tb", by_anchor, copies) / 2.0


def _by_last(outcomes: np.ndarray) -> np.ndarray:
    """(t, n, n, n) boolean outcomes [t, i, j, k] -> float32 (n, t*n*n) with k first."""
    t, n = outcomes.shape[0], outcomes.shape[1]
    return np.ascontiguousarray(np.moveaxis(outcomes, 3, 0).reshape(n, t * n * n), dtype=np.float32)


def _distinct_triplets(copies: np.ndarray) -> np.ndarray:
    """Triplets (i; {j, k}) of three distinct stimuli, weighted c_i c_j c_k: all of them are
    valid when no entry is missing."""
    c = copies.astype(np.int64)
    total, squares = c.sum(axis=1, keepdims=True), (c * c).sum(axis=1, keepdims=True)
    pairs_without = ((total - c) ** 2 - (squares - c * c)) // 2  # pairs of distinct stimuli other than i
    return (c * pairs_without).sum(axis=1)
