"""Compiled kernels for exact triplet agreement (private; see :mod:`repalign.alignment`).

A triplet is (anchor ``i``; pair ``j < k``) with ``j, k != i``; its answer is
``sim[i, j] > sim[i, k]``. For one anchor, comparing the model's and the human's answers
over all pairs ``(j, k)`` is exactly the concordant/discordant pair count of Kendall's tau
between the two rows ``model_sim[i, :]`` and ``human_sim[i, :]``. So instead of
enumerating the n(n-1)(n-2)/2 triplets we count, per anchor, in O(n log n) (Knight 1966):

1. sort the anchor's valid entries by (model, human) lexicographically;
2. count pairs tied on the model side (``n1``) and tied on both sides (``n3``) from runs;
3. merge-sort the human values, counting strict inversions: those are exactly the
   discordant pairs (ties in the model value were ordered by the human value in step 1,
   so they never form an inversion; equal human values are never counted);
4. count pairs tied on the human side (``n2``) from runs of the now sorted human values.

Then ``tied = n1 + n2 - n3``, ``disagree = inversions`` and
``agree = C(v, 2) - tied - disagree`` over the ``v`` valid entries of the row.

For the paper's Definition 3.5 (``ties="strict"``) a triplet's answer is the strict bit
``sim[i, j] > sim[i, k]`` with ``j < k``, a tie giving bit 0. Agreeing and disagreeing
triplets are the same as above; a tied triplet's bits match when it is tied on both sides,
or when it is tied on one side and the other side prefers ``k`` (the later stimulus). With
``strict_bits`` the kernels also count those (column ``TIED_MATCH``): within each run of
equal model values, taken in stimulus order, the pairs whose human value strictly
increases are ``C(g, 2) - inversions - human ties`` of that run (and the same with the
sides swapped), so the count stays O(n log n) per anchor.

Every kernel takes ``idx``, a map from rows of the (virtual) matrix being scored to rows
of the stored matrices, so that a stimulus bootstrap scores ``M[idx][:, idx]`` without
building it. Entries between two copies of the same stimulus are missing by definition;
pairs ``(j, k)`` that are two copies of one stimulus are identical on both sides and are
moved from "tied" to "missing" (they are not real triplets).

Counts are int64 throughout, so they are exact (no floating-point sums).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# The merge sorts first insertion-sort blocks of this many elements: fewer merge passes.
_INSERTION_BLOCK = 16

AGREE, DISAGREE, TIED, MISSING, TIED_MATCH = 0, 1, 2, 3, 4
N_COUNTS = 5


# Merging is latency-bound: each step's loads depend on the previous step's comparison.
# Every merge pass below therefore advances two independent merges in the same loop (the
# CPU overlaps their dependency chains), and merges branch-free, because on real data the
# "take left or right" branch is mispredicted about half of the time.


@njit(cache=True, nogil=True)
def _finish_merge_counting(src, dst, i, mid, j, hi, k):
    """Complete the merge of src[i:mid] and src[j:hi] into dst[k:]; return its inversions."""
    inversions = 0
    while i < mid and j < hi:
        left = src[i]
        right = src[j]
        take_right = right < left  # strict: equal values keep their order, no inversion
        dst[k] = right if take_right else left
        inversions += (mid - i) * take_right  # right jumps over every left element still waiting
        j += take_right
        i += 1 - take_right
        k += 1
    while i < mid:
        dst[k] = src[i]
        i += 1
        k += 1
    while j < hi:
        dst[k] = src[j]
        j += 1
        k += 1
    return inversions


@njit(cache=True, nogil=True)
def _sort_counting_inversions(values, buffer):
    """Sort ``values`` (1-D float64) ascending in place; return the number of pairs
    ``p < q`` with ``values[p] > values[q]`` (strict: equal values are not inversions).

    ``buffer`` is scratch space of at least ``len(values)``.
    """
    n = values.shape[0]
    inversions = 0
    # 1) insertion sort of fixed-size blocks; every element shift is one inversion
    for lo in range(0, n, _INSERTION_BLOCK):
        hi = min(lo + _INSERTION_BLOCK, n)
        for p in range(lo + 1, hi):
            x = values[p]
            q = p - 1
            while q >= lo and values[q] > x:
                values[q + 1] = values[q]
                q -= 1
                inversions += 1
            values[q + 1] = x
    # 2) bottom-up merge passes, two merges (a and b) at a time
    src = values
    dst = buffer
    in_buffer = False
    width = _INSERTION_BLOCK
    while width < n:
        for lo in range(0, n, 4 * width):
            mid_a = min(lo + width, n)
            hi_a = min(lo + 2 * width, n)
            mid_b = min(hi_a + width, n)
            hi_b = min(hi_a + 2 * width, n)
            i_a, j_a, k_a = lo, mid_a, lo
            i_b, j_b, k_b = hi_a, mid_b, hi_a
            while i_a < mid_a and j_a < hi_a and i_b < mid_b and j_b < hi_b:
                left_a = src[i_a]
                right_a = src[j_a]
                left_b = src[i_b]
                right_b = src[j_b]
                take_a = right_a < left_a
                take_b = right_b < left_b
                dst[k_a] = right_a if take_a else left_a
                dst[k_b] = right_b if take_b else left_b
                inversions += (mid_a - i_a) * take_a + (mid_b - i_b) * take_b
                j_a += take_a
                i_a += 1 - take_a
                j_b += take_b
                i_b += 1 - take_b
                k_a += 1
                k_b += 1
            inversions += _finish_merge_counting(src, dst, i_a, mid_a, j_a, hi_a, k_a)
            inversions += _finish_merge_counting(src, dst, i_b, mid_b, j_b, hi_b, k_b)
        src, dst = dst, src
        in_buffer = not in_buffer
        width *= 2
    if in_buffer:
        values[:n] = buffer[:n]
    return inversions


@njit(cache=True, nogil=True)
def _before(k1, v1, k2, v2):
    """Strict lexicographic order of (key, value) pairs, branch-free."""
    return (k1 < k2) | ((k1 == k2) & (v1 < v2))


@njit(cache=True, nogil=True)
def _finish_merge_pairs(src_k, src_v, dst_k, dst_v, i, mid, j, hi, k):
    """Complete the merge of the pair runs [i, mid) and [j, hi) into dst[k:]."""
    while i < mid and j < hi:
        take_right = _before(src_k[j], src_v[j], src_k[i], src_v[i])
        dst_k[k] = src_k[j] if take_right else src_k[i]
        dst_v[k] = src_v[j] if take_right else src_v[i]
        j += take_right
        i += 1 - take_right
        k += 1
    while i < mid:
        dst_k[k] = src_k[i]
        dst_v[k] = src_v[i]
        i += 1
        k += 1
    while j < hi:
        dst_k[k] = src_k[j]
        dst_v[k] = src_v[j]
        j += 1
        k += 1


@njit(cache=True, nogil=True)
def _sort_lexicographic(keys, values, key_buffer, value_buffer):
    """Sort the pairs (keys[p], values[p]) by key, then value, in place (merge sort).

    Sorting the two arrays together avoids an argsort and the random-access gathers it
    needs; both buffers are scratch space of at least ``len(keys)``.
    """
    n = keys.shape[0]
    for lo in range(0, n, _INSERTION_BLOCK):
        hi = min(lo + _INSERTION_BLOCK, n)
        for p in range(lo + 1, hi):
            k = keys[p]
            v = values[p]
            q = p - 1
            while q >= lo and _before(k, v, keys[q], values[q]):
                keys[q + 1] = keys[q]
                values[q + 1] = values[q]
                q -= 1
            keys[q + 1] = k
            values[q + 1] = v
    src_k = keys
    src_v = values
    dst_k = key_buffer
    dst_v = value_buffer
    in_buffer = False
    width = _INSERTION_BLOCK
    while width < n:
        for lo in range(0, n, 4 * width):
            mid_a = min(lo + width, n)
            hi_a = min(lo + 2 * width, n)
            mid_b = min(hi_a + width, n)
            hi_b = min(hi_a + 2 * width, n)
            i_a, j_a, k_a = lo, mid_a, lo
            i_b, j_b, k_b = hi_a, mid_b, hi_a
            while i_a < mid_a and j_a < hi_a and i_b < mid_b and j_b < hi_b:
                left_ka = src_k[i_a]
                left_va = src_v[i_a]
                right_ka = src_k[j_a]
                right_va = src_v[j_a]
                left_kb = src_k[i_b]
                left_vb = src_v[i_b]
                right_kb = src_k[j_b]
                right_vb = src_v[j_b]
                take_a = _before(right_ka, right_va, left_ka, left_va)
                take_b = _before(right_kb, right_vb, left_kb, left_vb)
                dst_k[k_a] = right_ka if take_a else left_ka
                dst_v[k_a] = right_va if take_a else left_va
                dst_k[k_b] = right_kb if take_b else left_kb
                dst_v[k_b] = right_vb if take_b else left_vb
                j_a += take_a
                i_a += 1 - take_a
                j_b += take_b
                i_b += 1 - take_b
                k_a += 1
                k_b += 1
            _finish_merge_pairs(src_k, src_v, dst_k, dst_v, i_a, mid_a, j_a, hi_a, k_a)
            _finish_merge_pairs(src_k, src_v, dst_k, dst_v, i_b, mid_b, j_b, hi_b, k_b)
        src_k, dst_k = dst_k, src_k
        src_v, dst_v = dst_v, src_v
        in_buffer = not in_buffer
        width *= 2
    if in_buffer:
        keys[:n] = key_buffer[:n]
        values[:n] = value_buffer[:n]


@njit(cache=True, nogil=True)
def _pairs(count):
    return count * (count - 1) // 2


@njit(cache=True, nogil=True)
def _increasing_pairs_within_runs(keys, values, order, gathered, buffer, buffer2, valid):
    """Pairs ``p < q`` (stimulus order) with equal ``keys`` and ``values[p] < values[q]``.

    ``order`` holds the stimulus positions 0..valid-1 as float64 on entry (scrambled on
    return); ``keys`` is scrambled too. The other arrays are scratch of length >= ``valid``.
    """
    ks = keys[:valid]
    pos = order[:valid]
    _sort_lexicographic(ks, pos, buffer, buffer2)  # by key, then stimulus position
    total = 0
    start = 0
    while start < valid:
        stop = start + 1
        while stop < valid and ks[stop] == ks[start]:
            stop += 1
        size = stop - start
        if size > 1:
            for p in range(size):
                gathered[p] = values[np.int64(pos[start + p])]
            run = gathered[:size]
            inversions = _sort_counting_inversions(run, buffer)
            ties = 0
            sub = 0
            while sub < size:
                sub_stop = sub + 1
                while sub_stop < size and run[sub_stop] == run[sub]:
                    sub_stop += 1
                ties += _pairs(sub_stop - sub)
                sub = sub_stop
            total += _pairs(size) - inversions - ties
        start = stop
    return total


@njit(cache=True, nogil=True)
def _strict_tied_matches(m, h, valid, scratch):
    """Tied triplets whose strict bits match: tied on one side, the other side preferring
    the later stimulus (both bits 0). ``scratch`` is (5, >= valid) float64."""
    keys, order, gathered, buffer, buffer2 = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    total = 0
    for side in range(2):
        first = m if side == 0 else h
        second = h if side == 0 else m
        for p in range(valid):
            keys[p] = first[p]
            order[p] = p
        total += _increasing_pairs_within_runs(keys, second, order, gathered, buffer, buffer2, valid)
    return total


@njit(cache=True, nogil=True)
def _anchor_counts(model_sim, human_sim, idx, anchor, has_copies, m, h, buffer, buffer2, copies, out, scratch):
    """Triplet counts of one anchor row into ``out[0:5]`` (agree, disagree, tied, missing,
    tied_match; the last only when ``scratch`` has rows, else 0).

    ``m``, ``h``, ``buffer``, ``buffer2`` are scratch float64 arrays of length ``len(idx)``; ``copies``
    is an int64 scratch array of length ``model_sim.shape[0]``, all zero on entry and
    left all zero on return (used only when ``has_copies``); ``scratch`` is (5, len(idx))
    float64 for strict bits, or (0, 0) to skip them.
    """
    n = idx.shape[0]
    s = idx[anchor]
    valid = 0
    copy_pairs = 0
    for j in range(n):
        if j == anchor:
            continue
        t = idx[j]
        if t == s:  # a copy of the anchor: the entry is a self-similarity, missing
            continue
        x = model_sim[s, t]
        y = human_sim[s, t]
        if np.isnan(x) or np.isnan(y):
            continue
        m[valid] = x
        h[valid] = y
        valid += 1
        if has_copies:
            copy_pairs += copies[t]
            copies[t] += 1
    if has_copies:
        for j in range(n):
            copies[idx[j]] = 0

    # 0) strict bits: tied on one side, later stimulus preferred on the other (before the
    #    sorts below scramble the stimulus order of m and h)
    one_side_matches = _strict_tied_matches(m, h, valid, scratch) if scratch.shape[0] else 0

    # 1) sort by (model, human) lexicographically
    ms = m[:valid]
    hs = h[:valid]
    _sort_lexicographic(ms, hs, buffer, buffer2)
    tied_model = 0
    tied_both = 0
    start = 0
    while start < valid:
        stop = start + 1
        while stop < valid and ms[stop] == ms[start]:
            stop += 1
        if stop - start > 1:
            tied_model += _pairs(stop - start)
            sub = start
            while sub < stop:
                sub_stop = sub + 1
                while sub_stop < stop and hs[sub_stop] == hs[sub]:
                    sub_stop += 1
                tied_both += _pairs(sub_stop - sub)
                sub = sub_stop
        start = stop

    # 2) discordant pairs = strict inversions of the human values in that order
    discordant = _sort_counting_inversions(hs, buffer)

    # 3) ties on the human side, from runs of the sorted human values
    tied_human = 0
    start = 0
    while start < valid:
        stop = start + 1
        while stop < valid and hs[stop] == hs[start]:
            stop += 1
        tied_human += _pairs(stop - start)
        start = stop

    tied = tied_model + tied_human - tied_both
    agree = _pairs(valid) - tied - discordant
    out[AGREE] = agree
    out[DISAGREE] = discordant
    out[TIED] = tied - copy_pairs
    out[MISSING] = _pairs(n - 1) - _pairs(valid) + copy_pairs
    # pairs of two copies of one stimulus are tied on both sides: not real triplets
    out[TIED_MATCH] = tied_both + one_side_matches - copy_pairs if scratch.shape[0] else 0


#: below this many stimuli one thread is faster than waking a pool (and, on a busy
#: machine, than waiting for the slowest thread of it)
PARALLEL_FROM_N = 256


def triplet_counts_by_anchor(model_sim, human_sim, idx, has_copies, strict_bits=False):
    """Per-anchor triplet counts of the matrices indexed by ``idx``.

    Args:
        model_sim, human_sim: (N, N) float64, NaN = missing.
        idx: (n,) int64 rows of the stored matrices that make up the scored matrix.
        has_copies: whether ``idx`` repeats a row (enables the copy bookkeeping).
        strict_bits: also count the tied triplets whose strict bits match (Definition 3.5).

    Returns:
        (n, 5) int64: agree, disagree, tied, missing, tied_match for each anchor
        (tied_match is 0 without ``strict_bits``).
    """
    kernel = _counts_parallel if len(idx) >= PARALLEL_FROM_N else _counts_serial
    return kernel(model_sim, human_sim, idx, has_copies, strict_bits)


#: anchors are split into this many contiguous chunks (each allocates its scratch once);
#: many more chunks than threads keeps the threads evenly busy
_CHUNKS = 64


@njit(parallel=True, cache=True)
def _counts_parallel(model_sim, human_sim, idx, has_copies, strict_bits):
    n = idx.shape[0]
    out = np.zeros((n, N_COUNTS), dtype=np.int64)
    n_chunks = min(_CHUNKS, n)
    for chunk in prange(n_chunks):
        m = np.empty(n, dtype=np.float64)
        h = np.empty(n, dtype=np.float64)
        buffer = np.empty(n, dtype=np.float64)
        buffer2 = np.empty(n, dtype=np.float64)
        copies = np.zeros(model_sim.shape[0] if has_copies else 0, dtype=np.int64)
        scratch = np.empty((5, n) if strict_bits else (0, 0), dtype=np.float64)
        for anchor in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            _anchor_counts(
                model_sim, human_sim, idx, anchor, has_copies, m, h, buffer, buffer2, copies, out[anchor], scratch
            )
    return out


@njit(cache=True)
def _counts_serial(model_sim, human_sim, idx, has_copies, strict_bits):
    n = idx.shape[0]
    out = np.zeros((n, N_COUNTS), dtype=np.int64)
    m = np.empty(n, dtype=np.float64)
    h = np.empty(n, dtype=np.float64)
    buffer = np.empty(n, dtype=np.float64)
    buffer2 = np.empty(n, dtype=np.float64)
    copies = np.zeros(model_sim.shape[0] if has_copies else 0, dtype=np.int64)
    scratch = np.empty((5, n) if strict_bits else (0, 0), dtype=np.float64)
    for anchor in range(n):
        _anchor_counts(
            model_sim, human_sim, idx, anchor, has_copies, m, h, buffer, buffer2, copies, out[anchor], scratch
        )
    return out


@njit(parallel=True, cache=True)
def triplet_counts_resampled(model_sim, human_sim, resamples, strict_bits=False):
    """Total triplet counts for each row of ``resamples`` (a stimulus bootstrap).

    Args:
        model_sim, human_sim: (N, N) float64, NaN = missing.
        resamples: (B, n) int64, each row a resample of stimulus indices; a resample's
            stimulus order is its row order.
        strict_bits: also count the tied triplets whose strict bits match.

    Returns:
        (B, 5) int64: agree, disagree, tied, missing, tied_match for each resample.
    """
    n_resamples, n = resamples.shape
    totals = np.zeros((n_resamples, N_COUNTS), dtype=np.int64)
    for b in prange(n_resamples):
        m = np.empty(n, dtype=np.float64)
        h = np.empty(n, dtype=np.float64)
        buffer = np.empty(n, dtype=np.float64)
        buffer2 = np.empty(n, dtype=np.float64)
        copies = np.zeros(model_sim.shape[0], dtype=np.int64)
        scratch = np.empty((5, n) if strict_bits else (0, 0), dtype=np.float64)
        out = np.zeros(N_COUNTS, dtype=np.int64)
        idx = resamples[b]
        for anchor in range(n):
            _anchor_counts(model_sim, human_sim, idx, anchor, True, m, h, buffer, buffer2, copies, out, scratch)
            for c in range(N_COUNTS):
                totals[b, c] += out[c]
    return totals
