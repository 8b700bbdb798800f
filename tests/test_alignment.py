"""Alignment metrics against independent oracles (scipy, scikit-learn, brute-force
enumeration) and the properties every alignment measure must have; the compiled triplet
kernels against brute force with exact integer equality."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist

from repalign import alignment as al
from repalign.alignment import bootstrap as alignment_bootstrap
from repalign.alignment import pairwise
from repalign.alignment._triplet_kernel import (
    _counts_parallel,
    _counts_serial,
    _sort_counting_inversions,
    _sort_lexicographic,
    triplet_counts_resampled,
)
from repalign.data.judgments import TripletJudgments
from repalign.errors import InputError, UnknownNameError

# ------------------------------------------------------ brute force and compiled kernels


def brute_force_counts(model, human, idx=None):
    """Enumerate every triplet (anchor a; pair j < k) of M[idx][:, idx], H[idx][:, idx].

    Entries between two copies of one stimulus are missing, and so is a triplet whose
    pair is two copies of one stimulus. ``tied_match`` counts the tied triplets whose strict
    bits 1[sim(a, j) > sim(a, k)] (Definition 3.5 of the paper) are equal on both sides.
    """
    n = model.shape[0] if idx is None else len(idx)
    idx = np.arange(n) if idx is None else idx
    agree = disagree = tied = missing = tied_match = 0
    for a in range(n):
        for j, k in itertools.combinations(range(n), 2):
            if a in (j, k):
                continue
            s, t, u = idx[a], idx[j], idx[k]
            if len({s, t, u}) < 3:
                missing += 1
                continue
            entries = (model[s, t], model[s, u], human[s, t], human[s, u])
            if np.isnan(entries).any():
                missing += 1
                continue
            model_order = np.sign(model[s, t] - model[s, u])
            human_order = np.sign(human[s, t] - human[s, u])
            if model_order == 0 or human_order == 0:
                tied += 1
                tied_match += (model_order > 0) == (human_order > 0)
            elif model_order == human_order:
                agree += 1
            else:
                disagree += 1
    return [agree, disagree, tied, missing, tied_match]


def tied_matrices(rng, n, levels=4, missing_rate=0.1):
    """Integer-valued (many ties) matrices with NaN holes; asymmetric on purpose."""
    model = rng.integers(0, levels, (n, n)).astype(float)
    human = rng.integers(0, levels, (n, n)).astype(float)
    model[rng.random((n, n)) < missing_rate] = np.nan
    human[rng.random((n, n)) < missing_rate] = np.nan
    return model, human


@pytest.mark.parametrize("n", [3, 4, 5, 17, 40])
@pytest.mark.parametrize("levels", [2, 5, 1000])
def test_counts_equal_brute_force(n, levels):
    rng = np.random.default_rng(n * 1000 + levels)
    model, human = tied_matrices(rng, n, levels=levels)
    idx = np.arange(n)
    counts = _counts_serial(model, human, idx, False, True).sum(axis=0)
    assert counts.tolist() == brute_force_counts(model, human)
    assert counts[:4].sum() == n * (n - 1) * (n - 2) // 2
    for strict_bits in (False, True):
        serial = _counts_serial(model, human, idx, False, strict_bits)
        assert np.array_equal(_counts_parallel(model, human, idx, False, strict_bits), serial)
    # without strict bits the kernel skips that count, and the other four are the same
    plain = _counts_serial(model, human, idx, False, False).sum(axis=0)
    assert plain.tolist() == [*counts[:4].tolist(), 0]


@pytest.mark.parametrize("seed", range(6))
def test_resampled_counts_equal_brute_force_on_copies(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 25))
    model, human = tied_matrices(rng, n, levels=3)
    resamples = rng.integers(0, n, (3, n))
    totals = triplet_counts_resampled(model, human, resamples, True)
    for row, idx in zip(totals, resamples):
        assert row.tolist() == brute_force_counts(model, human, idx)
        # the single-matrix kernels with copy bookkeeping agree with the batch kernel
        for kernel in (_counts_serial, _counts_parallel):
            assert kernel(model, human, idx, True, True).sum(axis=0).tolist() == row.tolist()


@pytest.mark.parametrize("n", [3, 4, 17, 40])
@pytest.mark.parametrize("levels", [2, 1000])
def test_numpy_small_n_counts_equal_brute_force(n, levels):
    """The numba-free path used up to SMALL_N stimuli (a cold start loads no numba)."""
    from repalign.alignment import _triplet_small

    rng = np.random.default_rng(n * 7 + levels)
    model, human = tied_matrices(rng, n, levels=levels)
    assert _triplet_small.counts(model, human, with_tied_matches=True).tolist() == brute_force_counts(model, human)
    plain = _triplet_small.counts(model, human, with_tied_matches=False).tolist()
    assert plain == [*brute_force_counts(model, human)[:4], 0]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("missing_rate", [0.0, 0.1])
def test_numpy_small_n_resampled_counts_equal_the_kernel(seed, missing_rate):
    from repalign.alignment import _triplet_small

    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    model, human = tied_matrices(rng, n, levels=3, missing_rate=missing_rate)
    resamples = rng.integers(0, n, (300, n))  # more than one chunk of resamples
    expected = triplet_counts_resampled(model, human, resamples, False)
    assert np.array_equal(_triplet_small.counts_resampled(model, human, resamples), expected)
    for row, idx in zip(expected[:2], resamples[:2]):
        assert row.tolist() == [*brute_force_counts(model, human, idx)[:4], 0]


def test_alignment_takes_the_numpy_path_up_to_small_n_and_the_kernel_above(monkeypatch):
    from repalign.alignment import _triplet_small

    rng = np.random.default_rng(3)
    model, human = tied_matrices(rng, 12, levels=4, missing_rate=0.0)
    expected = al.triplet_alignment(model, human, ties="half")
    monkeypatch.setattr(_triplet_small, "SMALL_N", 5)  # now the kernels count
    assert al.triplet_alignment(model, human, ties="half") == expected


SORT_SIZES = [0, 1, 2, 15, 16, 17, 33, 48, 64, 80, 100, 257, 1000]


@pytest.mark.parametrize("n", SORT_SIZES)
def test_sort_counting_inversions(n):
    rng = np.random.default_rng(n)
    values = rng.integers(0, max(n // 3, 1), n).astype(float)  # plenty of ties
    expected = sum(values[p] > values[q] for p, q in itertools.combinations(range(n), 2))
    work = values.copy()
    assert _sort_counting_inversions(work, np.empty(n)) == expected
    assert np.array_equal(work, np.sort(values))


@pytest.mark.parametrize("n", SORT_SIZES)
def test_sort_lexicographic(n):
    rng = np.random.default_rng(n + 1)
    keys = rng.integers(0, max(n // 4, 1), n).astype(float)  # many equal keys
    values = rng.integers(0, 5, n).astype(float)
    order = np.lexsort((values, keys))
    sorted_keys, sorted_values = keys.copy(), values.copy()
    _sort_lexicographic(sorted_keys, sorted_values, np.empty(n), np.empty(n))
    assert np.array_equal(sorted_keys, keys[order]) and np.array_equal(sorted_values, values[order])


def noisy_pair(rng, n=30, d=8, noise=1.0):
    """A model and a human similarity matrix that agree partly (continuous: no ties)."""
    x = rng.normal(size=(n, d))
    y = x + noise * rng.normal(size=(n, d))
    return al.similarity_matrix(x), al.similarity_matrix(y)


def upper(matrix):
    return matrix[np.triu_indices(matrix.shape[0], 1)]


# --------------------------------------------------------------------- similarity matrices


def test_similarity_matrix_matches_reference_formulas(rng):
    from sklearn.metrics.pairwise import cosine_similarity

    x = rng.normal(size=(12, 5)).astype(np.float32)
    cosine = al.similarity_matrix(x, metric="cosine")
    assert cosine.dtype == np.float64
    np.testing.assert_allclose(cosine, cosine_similarity(x.astype(np.float64)), atol=1e-12)
    np.testing.assert_allclose(al.similarity_matrix(x, metric="dot"), x.astype(float) @ x.T.astype(float), rtol=1e-12)
    np.testing.assert_allclose(al.similarity_matrix(x, metric="neg_euclidean"), -cdist(x, x), atol=1e-9)
    np.testing.assert_allclose(al.similarity_matrix(x, metric="pearson"), np.corrcoef(x.astype(float)), atol=1e-12)
    for metric in al.SIMILARITY_METRICS:
        sim = al.similarity_matrix(x, metric=metric)
        assert np.array_equal(sim, sim.T)


def test_similarity_matrix_zero_and_constant_rows_give_zero_not_nan(rng):
    x = rng.normal(size=(6, 4))
    x[2] = 0.0  # zero norm
    x[4] = 3.0  # zero variance across features
    cosine = al.similarity_matrix(x, metric="cosine")
    pearson = al.similarity_matrix(x, metric="pearson")
    assert np.isfinite(cosine).all() and np.isfinite(pearson).all()
    assert np.all(np.delete(cosine[2], 2) == 0) and cosine[2, 2] == 1
    assert np.all(np.delete(pearson[4], 4) == 0) and pearson[4, 4] == 1
    assert np.all(np.diag(al.similarity_matrix(x, metric="neg_euclidean")) == 0)


@pytest.mark.parametrize(
    ("embeddings", "kwargs", "error", "match"),
    [
        (np.ones(5), {}, InputError, "2-D"),
        (np.ones((2, 3)), {}, InputError, "at least 3 stimuli"),
        (np.array([[1.0, np.nan], [1, 2], [3, 4]]), {}, InputError, "NaN or infinite"),
        (np.array([["a", "b"]] * 3), {}, InputError, "numeric"),
        (np.ones((4, 3)), {"metric": "cosin"}, UnknownNameError, "Did you mean: cosine"),
    ],
)
def test_similarity_matrix_bad_input(embeddings, kwargs, error, match):
    with pytest.raises(error, match=match):
        al.similarity_matrix(embeddings, **kwargs)


# --------------------------------------------------------------------- pairwise alignment

SCIPY = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}


@pytest.mark.parametrize("method", sorted(SCIPY))  # the rest: tests/test_rsa_comparisons.py
@pytest.mark.parametrize("levels", [3, None])
def test_pairwise_equals_scipy_on_the_same_vectors(method, levels, rng):
    n = 25
    if levels:  # ties and missing pairs on both sides
        model, human = tied_matrices(rng, n, levels=levels, missing_rate=0.15)
        model, human = np.triu(model) + np.triu(model, 1).T, np.triu(human) + np.triu(human, 1).T
    else:
        model, human = noisy_pair(rng, n)
    x, y = upper(model), upper(human)
    keep = ~(np.isnan(x) | np.isnan(y))
    expected = SCIPY[method](x[keep], y[keep]).statistic
    assert al.pairwise_alignment(model, human, method=method) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("model", "human", "kwargs", "error", "match"),
    [
        (np.ones((3, 4)), np.ones((3, 4)), {}, InputError, "square"),
        (np.eye(4), np.eye(5), {}, InputError, "same stimuli"),
        (np.eye(2), np.eye(2), {}, InputError, "at least 3"),
        (np.full((4, 4), np.inf), np.eye(4), {}, InputError, "infinite"),
        (np.eye(5), np.arange(25.0).reshape(5, 5), {}, InputError, "model_sim is constant"),
        (np.arange(25.0).reshape(5, 5), np.eye(5), {"method": "kendal"}, UnknownNameError, "kendall"),
        (np.full((4, 4), np.nan), np.eye(4), {}, InputError, "Only 0 stimulus pairs"),
    ],
)
def test_pairwise_bad_input(model, human, kwargs, error, match):
    with pytest.raises(error, match=match):
        al.pairwise_alignment(model, human, **kwargs)


# ---------------------------------------------------------------------- triplet alignment


@pytest.mark.parametrize("n", [3, 9, 24, 40])
def test_triplet_counts_equal_brute_force_with_ties_and_missing(n, rng):
    model, human = tied_matrices(rng, n, levels=4, missing_rate=0.1)
    expected = brute_force_counts(model, human)
    counts = al.triplet_agreement_counts(model, human)
    assert list(counts) == [*expected[:4], None], "tied_match is counted only on request"
    counts = al.triplet_agreement_counts(model, human, with_tied_matches=True)
    assert list(counts) == expected
    assert all(type(c) is int for c in counts)
    agree, disagree, tied, _, tied_match = counts
    if agree + disagree:
        assert al.triplet_alignment(model, human) == agree / (agree + disagree)
        assert al.triplet_alignment(model, human, ties="half") == (agree + tied / 2) / (agree + disagree + tied)
        assert al.triplet_alignment(model, human, ties="strict") == (agree + tied_match) / (agree + disagree + tied)


def test_triplet_alignment_properties(rng):
    model, human = noisy_pair(rng, n=40)
    # a matrix against itself
    assert al.triplet_alignment(model, model) == 1.0
    assert al.pairwise_alignment(model, model) == pytest.approx(1.0)
    # the same permutation of stimuli on both sides changes nothing
    perm = rng.permutation(40)
    counts = al.triplet_agreement_counts(model, human)
    assert al.triplet_agreement_counts(model[np.ix_(perm, perm)], human[np.ix_(perm, perm)]) == counts
    # reversing one side's order flips every triplet
    assert al.triplet_alignment(model, -model) == 0.0
    reversed_counts = al.triplet_agreement_counts(model, -human)
    assert (reversed_counts.agree, reversed_counts.disagree) == (counts.disagree, counts.agree)
    # invariance to strictly increasing transforms (of either side)
    for transform in (np.exp, lambda s: s**3, lambda s: 5 * s - 2):
        assert al.triplet_agreement_counts(model, transform(human)) == counts
        assert al.pairwise_alignment(transform(model), human, method="spearman") == pytest.approx(
            al.pairwise_alignment(model, human, method="spearman"), abs=1e-12
        )


def test_triplet_alignment_raises_when_nothing_is_comparable():
    constant = np.ones((5, 5))
    assert al.triplet_agreement_counts(constant, np.eye(5)).tied == 30
    with pytest.raises(InputError, match="No comparable triplet"):
        al.triplet_alignment(constant, np.eye(5))
    with pytest.raises(UnknownNameError, match="half"):
        al.triplet_alignment(np.eye(5), np.eye(5), ties="halve")


@pytest.mark.slow
def test_triplet_counts_large_matrix_equal_vectorized_reference(rng):
    """n = 300 (4.5 million triplets) against a per-anchor numpy enumeration."""
    n = 300
    model, human = noisy_pair(rng, n=n, d=3)
    model = np.round(model, 2)  # ties
    human[rng.random((n, n)) < 0.02] = np.nan
    expected = np.zeros(5, dtype=np.int64)
    j, k = np.triu_indices(n, 1)
    for a in range(n):
        keep = (j != a) & (k != a)
        dm = np.sign(model[a, j[keep]] - model[a, k[keep]])
        dh = np.sign(human[a, j[keep]] - human[a, k[keep]])
        missing = np.isnan(dm) | np.isnan(dh)
        tied = ~missing & ((dm == 0) | (dh == 0))
        expected += [
            np.sum(~missing & ~tied & (dm == dh)),
            np.sum(~missing & ~tied & (dm != dh)),
            tied.sum(),
            missing.sum(),
            np.sum(tied & ((dm > 0) == (dh > 0))),  # strict bits (a tie is bit 0) that match
        ]
    assert list(al.triplet_agreement_counts(model, human, with_tied_matches=True)) == expected.tolist()


# -------------------------------------------------------------------- sampled estimate


def test_sampled_estimate_is_unbiased_and_its_ci_covers(rng):
    model, human = noisy_pair(rng, n=30, noise=1.5)
    exact = al.triplet_alignment(model, human)
    estimates = [al.triplet_alignment_sampled(model, human, n_triplets=400, random_state=s) for s in range(300)]
    assert all(e.n_triplets == 400 and e.ci_low <= e.value <= e.ci_high for e in estimates)
    coverage = np.mean([e.ci_low <= exact <= e.ci_high for e in estimates])
    assert 0.90 <= coverage <= 0.99
    values = np.array([e.value for e in estimates])
    standard_error = np.sqrt(exact * (1 - exact) / 400 / len(values))
    assert abs(values.mean() - exact) < 4 * standard_error
    big = al.triplet_alignment_sampled(model, human, n_triplets=20_000, random_state=1)
    assert big.ci_low <= exact <= big.ci_high


def test_sampled_estimate_with_ties_and_missing(rng):
    model, human = tied_matrices(rng, 25, levels=3, missing_rate=0.2)
    for ties in al.TIE_MODES:
        exact = al.triplet_alignment(model, human, ties=ties)
        values = [
            al.triplet_alignment_sampled(model, human, n_triplets=500, random_state=s, ties=ties).value
            for s in range(200)
        ]
        assert abs(np.mean(values) - exact) < 4 * np.sqrt(0.25 / 500 / 200)
    same = [al.triplet_alignment_sampled(model, human, n_triplets=50, random_state=7) for _ in range(2)]
    assert same[0] == same[1]


def test_sampled_estimate_bad_input():
    with pytest.raises(InputError, match="positive integer"):
        al.triplet_alignment_sampled(np.eye(4), np.eye(4), n_triplets=0)
    with pytest.raises(InputError, match="comparable"):
        al.triplet_alignment_sampled(np.ones((4, 4)), np.eye(4), n_triplets=10)


# -------------------------------------------------------------------- explicit judgments


def brute_force_accuracy(model, kind, triples, counts):
    total = weight = 0.0
    for (a, b, c), w in zip(triples, counts):
        if kind == "triplet":
            score = 1.0 if model[a, b] > model[a, c] else 0.5 if model[a, b] == model[a, c] else 0.0
        else:
            pair_sims = {"c": model[a, b], "b": model[a, c], "a": model[b, c]}  # odd one -> sim of the other two
            best = max(pair_sims.values())
            winners = [odd for odd, s in pair_sims.items() if s == best]
            score = winners.count("c") / len(winners)
        total += w * score
        weight += w
    return total / weight


def random_judgments(rng, n, m, kind):
    triples = np.array([rng.choice(n, 3, replace=False) for _ in range(m)])
    counts = rng.integers(1, 4, m)
    judgments = TripletJudgments(kind, triples[:, 0], triples[:, 1], triples[:, 2], counts, n)
    return judgments, triples, counts


@pytest.mark.parametrize("kind", ["triplet", "odd_one_out"])
def test_triplet_accuracy_equals_brute_force(kind, rng):
    n = 15
    model = np.round(al.similarity_matrix(rng.normal(size=(n, 3))), 1)  # ties
    judgments, triples, counts = random_judgments(rng, n, 400, kind)
    expected = brute_force_accuracy(model, kind, triples, counts)
    assert al.triplet_accuracy(model, judgments) == pytest.approx(expected, abs=1e-12)


def test_triplet_accuracy_chance_levels_and_perfect_model(rng):
    n = 40
    x = rng.normal(size=(n, 5))
    truth = al.similarity_matrix(x)
    unrelated = al.similarity_matrix(rng.normal(size=(n, 5)))
    # judgments generated from `truth`: the odd one is the one outside the most similar pair
    triples = np.array([rng.choice(n, 3, replace=False) for _ in range(6000)])
    a, b, c = triples.T
    sims = np.stack([truth[b, c], truth[a, c], truth[a, b]])  # pair without a, without b, without c
    odd = sims.argmax(axis=0)
    ordered = np.where(
        odd[:, None] == 0, triples[:, [1, 2, 0]], np.where(odd[:, None] == 1, triples[:, [0, 2, 1]], triples)
    )
    ooo = TripletJudgments("odd_one_out", ordered[:, 0], ordered[:, 1], ordered[:, 2], np.ones(len(a), int), n)
    assert al.triplet_accuracy(truth, ooo) == 1.0
    assert al.triplet_accuracy(unrelated, ooo) == pytest.approx(1 / 3, abs=0.03)
    assert al.triplet_accuracy(np.ones((n, n)), ooo) == pytest.approx(1 / 3)
    positive = truth[a, b] > truth[a, c]
    tri = TripletJudgments("triplet", a, np.where(positive, b, c), np.where(positive, c, b), np.ones(len(a), int), n)
    assert al.triplet_accuracy(truth, tri) == 1.0
    assert al.triplet_accuracy(-truth, tri) == 0.0
    assert al.triplet_accuracy(unrelated, tri) == pytest.approx(0.5, abs=0.03)


def test_triplet_accuracy_counts_are_weights(rng):
    model = al.similarity_matrix(rng.normal(size=(10, 3)))
    judgments, triples, counts = random_judgments(rng, 10, 50, "triplet")
    repeated = np.repeat(triples, counts, axis=0)
    expanded = TripletJudgments("triplet", *repeated.T, np.ones(len(repeated), int), 10)
    assert al.triplet_accuracy(model, judgments) == pytest.approx(al.triplet_accuracy(model, expanded), abs=1e-12)


def test_triplet_accuracy_bad_input(rng):
    judgments, _, _ = random_judgments(rng, 10, 20, "triplet")
    with pytest.raises(InputError, match="refer to 10"):
        al.triplet_accuracy(np.eye(9), judgments)
    with pytest.raises(InputError, match="TripletJudgments"):
        al.triplet_accuracy(np.eye(10), [(0, 1, 2)])
    with pytest.raises(InputError, match="missing"):
        al.triplet_accuracy(np.full((10, 10), np.nan), judgments)


# ----------------------------------------------------------------------------- CKA


def cka_direct(x, y):
    """Kornblith et al. (2019) eq.: HSIC = tr(K H L H) / (n-1)^2 with the centering matrix H."""
    n = len(x)
    center = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l):
        return np.trace(k @ center @ l @ center) / (n - 1) ** 2

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def cka_unbiased_direct(x, y):
    """CKA from the U-statistic definition of HSIC, averaged over all ordered 4-tuples of
    distinct stimuli (Song et al. 2012): E[K_ij L_ij] + E[K_ij] E[L_qr] - 2 E[K_ij L_iq]."""
    n = len(x)

    def hsic(k, l):
        tuples = np.array(list(itertools.permutations(range(n), 4)))
        i, j, q, r = tuples.T
        return np.mean(k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q])

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_equals_direct_formulas(rng):
    x = rng.normal(size=(9, 4))
    y = x @ rng.normal(size=(4, 6)) + rng.normal(size=(9, 6))
    assert al.linear_cka(x, y) == pytest.approx(cka_direct(x, y), abs=1e-12)
    assert al.linear_cka(x, y, debiased=True) == pytest.approx(cka_unbiased_direct(x, y), abs=1e-10)


def test_linear_cka_invariances_and_debiasing(rng):
    x = rng.normal(size=(50, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert al.linear_cka(x, 3.0 * x @ rotation + 1.0) == pytest.approx(1.0)
    assert al.linear_cka(x, 3.0 * x @ rotation, debiased=True) == pytest.approx(1.0)
    # unrelated wide representations: biased CKA is inflated, debiased is near 0
    a, b = rng.normal(size=(30, 500)), rng.normal(size=(30, 500))
    assert al.linear_cka(a, b) > 0.5
    assert abs(al.linear_cka(a, b, debiased=True)) < 0.1


def test_linear_cka_bad_input(rng):
    with pytest.raises(InputError, match="one row per stimulus"):
        al.linear_cka(rng.normal(size=(5, 2)), rng.normal(size=(6, 2)))
    with pytest.raises(InputError, match="at least 4"):
        al.linear_cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), debiased=True)
    with pytest.raises(InputError, match="constant"):
        al.linear_cka(np.ones((5, 2)), rng.normal(size=(5, 2)))


# ------------------------------------------------------------------------- bootstrap


def materialize(matrix, idx):
    """The resampled matrix, with entries between copies of one stimulus missing."""
    out = matrix[np.ix_(idx, idx)].copy()
    out[idx[:, None] == idx[None, :]] = np.nan
    return out


def test_bootstrap_resamples_stimuli_not_pairs(rng):
    model, human = noisy_pair(rng, n=20)
    human[3, 7] = human[7, 3] = np.nan
    resamples = alignment_bootstrap._resamples(20, 5, random_state=3)
    values = alignment_bootstrap._bootstrap_values(
        model, human, None, ("pearson", "spearman", "kendall", "triplet"), resamples, "exclude"
    )
    for b, idx in enumerate(resamples):
        m, h = materialize(model, idx), materialize(human, idx)
        x, y = upper(m), upper(h)
        keep = ~(np.isnan(x) | np.isnan(y))
        for method, oracle in SCIPY.items():
            assert values[method][b] == pytest.approx(oracle(x[keep], y[keep]).statistic, abs=1e-12)
        agree, disagree, *_ = brute_force_counts(model, human, idx)
        assert values["triplet"][b] == agree / (agree + disagree)


def test_bootstrap_of_judgments_repeats_judgments_among_copies(rng):
    n = 8
    model = al.similarity_matrix(rng.normal(size=(n, 3)))
    judgments, triples, counts = random_judgments(rng, n, 60, "odd_one_out")
    idx = np.array([0, 0, 1, 2, 2, 2, 5, 7])
    values = alignment_bootstrap._bootstrap_values(
        model, None, judgments, ("triplet_accuracy",), idx[None, :], "exclude"
    )
    # expand: every judgment about (a, b, c) becomes one per choice of copies of a, b and c
    copies = np.bincount(idx, minlength=n)
    weights = counts * copies[triples[:, 0]] * copies[triples[:, 1]] * copies[triples[:, 2]]
    keep = weights > 0
    expected = brute_force_accuracy(model, "odd_one_out", triples[keep], weights[keep])
    assert values["triplet_accuracy"][0] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_ci_is_seeded_and_brackets_the_value(rng):
    model, human = noisy_pair(rng, n=30)
    kwargs = dict(metrics=("pearson", "triplet"), n_bootstrap=200)
    first = al.bootstrap_alignment_ci(model, human, random_state=5, **kwargs)
    assert first == al.bootstrap_alignment_ci(model, human, random_state=5, **kwargs)
    assert first != al.bootstrap_alignment_ci(model, human, random_state=6, **kwargs)
    low, high = first["triplet"]
    assert low < al.triplet_alignment(model, human) < high
    low, high = first["pearson"]
    assert low < al.pairwise_alignment(model, human) < high


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_bootstrap": 0}, InputError, "positive integer"),
        ({"confidence": 1.5}, InputError, "between 0 and 1"),
        ({"metrics": ("pearsn",)}, UnknownNameError, "pearson"),
        ({"metrics": ("triplet_accuracy",)}, InputError, "judgments"),
    ],
)
def test_bootstrap_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        al.bootstrap_alignment_ci(np.eye(4), np.eye(4), **kwargs)


def test_bootstrap_needs_human_matrix_for_matrix_metrics():
    with pytest.raises(InputError, match="need a human similarity matrix"):
        al.bootstrap_alignment_ci(np.eye(4), None, metrics=("pearson",))


# ------------------------------------------------------------------- compute_alignment


def make_human(name, similarity=None, judgments=None, n=None):
    from repalign.data.human import HumanSimilarity

    n = n or (similarity.shape[0] if similarity is not None else judgments.n_stimuli)
    return HumanSimilarity(
        name=name, stimuli=tuple(f"s{i}" for i in range(n)), similarity=similarity, judgments=judgments
    )


def test_compute_alignment_records(rng):
    x = rng.normal(size=(30, 6))
    human_sim = al.similarity_matrix(x + rng.normal(size=(30, 6)))
    human_sim[2, 9] = human_sim[9, 2] = np.nan
    human = make_human("toy", human_sim)
    table = al.compute_alignment(x, human, metrics=("pearson", "kendall", "triplet"), n_bootstrap=100, random_state=1)
    # a DataFrame with the result store's column names (value, n), as run_fewshot returns
    assert list(table.columns) == [
        "dataset",
        "metric",
        "similarity",
        "ties",
        "value",
        "ci_low",
        "ci_high",
        "n",
        "n_missing_pairs",
        "ceiling_low",
        "ceiling_high",
    ]
    records = table.to_dict(orient="records")
    model = al.similarity_matrix(x)
    assert [r["metric"] for r in records] == ["pearson", "kendall", "triplet"]
    for record in records:
        assert record["dataset"] == "toy" and record["n"] == 30 and record["n_missing_pairs"] == 1
        # no participants: the data cannot tell a ceiling
        assert np.isnan(record["ceiling_low"]) and np.isnan(record["ceiling_high"])
        # the tie rule is recorded where it applies: on the triplet record only
        assert record["ties"] == ("exclude" if record["metric"] == "triplet" else None)
        assert record["ci_low"] < record["value"] < record["ci_high"]
    assert records[0]["value"] == al.pairwise_alignment(model, human_sim)
    assert records[2]["value"] == al.triplet_alignment(model, human_sim)
    again = al.compute_alignment(x, human, metrics=("pearson", "kendall", "triplet"), n_bootstrap=100, random_state=1)
    assert again.equals(table)
    no_ci = al.compute_alignment(x, human, n_bootstrap=0)
    assert no_ci["metric"].tolist() == list(al.DEFAULT_METRICS) and no_ci["ci_low"].isna().all()


def test_alignment_rows_are_the_records_in_the_store_schema(rng):
    from repalign.schema import RESULT_COLUMNS

    x = rng.normal(size=(15, 4))
    human = make_human("toy", al.similarity_matrix(x + rng.normal(size=(15, 4))))
    options = {
        "similarity": "dot",
        "metrics": ("spearman", "triplet"),
        "n_bootstrap": 30,
        "random_state": 2,
        "ties": "strict",
    }
    records = al.compute_alignment(x, human, **options).to_dict(orient="records")
    rows = al.alignment_rows(x, human, **options)
    assert list(rows.columns) == list(RESULT_COLUMNS) and dict(rows.dtypes.astype(str)) == RESULT_COLUMNS
    assert rows["stage"].tolist() == ["alignment", "alignment"] and rows["head"].isna().all()
    assert rows["ties"].tolist()[1] == "strict" and rows["ties"].isna().tolist() == [True, False]
    for row, record in zip(rows.to_dict(orient="records"), records):
        shared = ("dataset", "metric", "similarity", "value", "ci_low", "ci_high", "n")  # the same names
        assert {k: row[k] for k in shared} == {k: record[k] for k in shared} and row["n"] == 15


def test_compute_alignment_with_judgments(rng):
    n = 20
    x = rng.normal(size=(n, 4))
    judgments, _, _ = random_judgments(rng, n, 300, "odd_one_out")
    only_judgments = make_human("ooo", judgments=judgments)
    (record,) = al.compute_alignment(x, only_judgments, n_bootstrap=50).to_dict(orient="records")
    assert record["metric"] == "triplet_accuracy"
    assert record["value"] == al.triplet_accuracy(al.similarity_matrix(x), judgments)
    both = make_human("both", al.similarity_matrix(rng.normal(size=(n, 4))), judgments)
    assert al.compute_alignment(x, both, n_bootstrap=0)["metric"].tolist() == [
        *al.DEFAULT_METRICS,
        "triplet_accuracy",
    ]
    with pytest.raises(InputError, match="no similarity matrix"):
        al.compute_alignment(x, only_judgments, metrics=("spearman",))
    with pytest.raises(InputError, match="no triplet judgments"):
        al.compute_alignment(x, make_human("m", np.eye(n)), metrics=("triplet_accuracy",))


def test_compute_alignment_default_metrics_are_explicit_none(rng):
    """``metrics=None`` (or "auto") adapts to the dataset; naming the default metrics
    explicitly asks for exactly those, so it never behaves like the default by accident."""
    n = 12
    x = rng.normal(size=(n, 4))
    judgments, _, _ = random_judgments(rng, n, 100, "triplet")
    both = make_human("both", al.similarity_matrix(rng.normal(size=(n, 4))), judgments)
    only_judgments = make_human("ooo", judgments=judgments)

    def metrics(human, **kwargs):
        return al.compute_alignment(x, human, n_bootstrap=0, **kwargs)["metric"].tolist()

    assert metrics(both) == metrics(both, metrics=None) == metrics(both, metrics="auto")
    assert metrics(both, metrics=None) == [*al.DEFAULT_METRICS, "triplet_accuracy"]
    assert metrics(both, metrics=al.DEFAULT_METRICS) == list(al.DEFAULT_METRICS)
    assert metrics(both, metrics=list(al.DEFAULT_METRICS)) == list(al.DEFAULT_METRICS)
    assert metrics(only_judgments, metrics=None) == ["triplet_accuracy"]
    with pytest.raises(InputError, match="no similarity matrix"):
        metrics(only_judgments, metrics=al.DEFAULT_METRICS)
    with pytest.raises(InputError, match="metrics is empty"):
        metrics(both, metrics=())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"embeddings": np.ones((29, 3))}, InputError, "29 rows but dataset toy has 30 stimuli"),
        ({"similarity": "cos"}, UnknownNameError, "cosine"),
        ({"metrics": ("triplets",)}, UnknownNameError, "triplet"),
        ({"n_bootstrap": -1}, InputError, "non-negative"),
        ({"ties": "drop"}, UnknownNameError, "exclude"),
    ],
)
def test_compute_alignment_bad_input(kwargs, error, match, rng):
    arguments = {"embeddings": rng.normal(size=(30, 3)), "human": make_human("toy", np.eye(30))} | kwargs
    embeddings = arguments.pop("embeddings")
    with pytest.raises(error, match=match):
        al.compute_alignment(embeddings, **arguments)


# ----------------------------------------------------------- the real Peterson matrices


@pytest.mark.integration
def test_peterson_matrices(mirror):
    from repalign.data.human import load_human

    domains = load_human("peterson")
    assert len(domains) == 6 and all(d.similarity.shape == (120, 120) for d in domains)
    animals, automobiles = domains[0].similarity, domains[1].similarity
    # the ratings are discrete, so ties are real: self-agreement is 1, ties are reported
    counts = al.triplet_agreement_counts(animals, animals)
    assert counts.disagree == 0 and counts.tied > 0 and counts.missing == 0
    assert al.triplet_alignment(animals, animals) == 1.0
    # exact counts between two real domains (stimuli paired by index) against enumeration
    j, k = np.triu_indices(120, 1)
    expected = np.zeros(4, dtype=np.int64)
    for a in range(120):
        keep = (j != a) & (k != a)
        dm = np.sign(automobiles[a, j[keep]] - automobiles[a, k[keep]])
        dh = np.sign(animals[a, j[keep]] - animals[a, k[keep]])
        tied = (dm == 0) | (dh == 0)
        expected += [np.sum(~tied & (dm == dh)), np.sum(~tied & (dm != dh)), tied.sum(), 0]
    exact = al.triplet_agreement_counts(automobiles, animals)
    assert list(exact) == [*expected.tolist(), None]
    sampled = al.triplet_alignment_sampled(automobiles, animals, n_triplets=20_000, random_state=0)
    assert sampled.ci_low <= exact.alignment() <= sampled.ci_high
    # a representation built from the human matrix itself (its top eigenvectors) aligns well
    values, vectors = np.linalg.eigh(animals)
    embedding = vectors[:, -10:] * np.sqrt(values[-10:])
    table = al.compute_alignment(embedding, domains[0], similarity="dot", n_bootstrap=50)
    assert (table["value"] > 0.7).all() and (table["ci_low"] > 0.6).all()


@pytest.mark.integration
def test_strict_ties_equal_definition_3_5_on_every_peterson_domain(mirror):
    """ties="strict" is the paper's Definition 3.5: the match rate of the strict bits
    1[s(i, j) > s(i, k)] (a tie is bit 0) over all n(n-1)(n-2)/2 triplets with j < k,
    here between each pair of real Peterson domains (stimuli paired by index)."""
    from repalign.data.human import load_human

    domains = {d.name: d.similarity for d in load_human("peterson")}
    names = sorted(domains)
    j, k = np.triu_indices(120, 1)
    for model_name, human_name in zip(names, names[1:] + names[:1]):
        model, human = domains[model_name], domains[human_name]
        matches = total = 0
        for a in range(120):
            keep = (j != a) & (k != a)
            model_bits = model[a, j[keep]] > model[a, k[keep]]
            human_bits = human[a, j[keep]] > human[a, k[keep]]
            matches += int(np.sum(model_bits == human_bits))
            total += int(keep.sum())
        assert total == 120 * 119 * 118 // 2
        assert al.triplet_alignment(model, human, ties="strict") == matches / total
    # the human matrices really are tied, so the definitions differ
    animals = domains["peterson:animals"]
    counts = al.triplet_agreement_counts(animals, domains["peterson:fruits"], with_tied_matches=True)
    assert counts.tied / counts.total > 0.01
    assert al.triplet_alignment(animals, domains["peterson:fruits"], ties="strict") != counts.alignment("exclude")


def test_strict_ties_sampled_and_bootstrap_agree_with_exact(rng):
    model, human = tied_matrices(rng, 30, levels=3, missing_rate=0.0)
    exact = al.triplet_alignment(model, human, ties="strict")
    sampled = al.triplet_alignment_sampled(model, human, n_triplets=40_000, random_state=1, ties="strict")
    assert sampled.ci_low <= exact <= sampled.ci_high
    low, high = al.bootstrap_alignment_ci(model, human, metrics=("triplet",), n_bootstrap=200, ties="strict")["triplet"]
    assert low <= exact <= high
    # a tie is bit 0 on that side: a constant model matches exactly the human's 0 bits
    constant = np.ones_like(human)
    counts = al.triplet_agreement_counts(constant, human, with_tied_matches=True)
    n_zero_bits = sum(
        int(human[a, j] <= human[a, k])
        for a in range(30)
        for j in range(30)
        for k in range(j + 1, 30)
        if a not in (j, k)
    )
    assert counts.tied_match == n_zero_bits
    assert al.triplet_alignment(constant, human, ties="strict") == n_zero_bits / counts.total


@pytest.mark.parametrize(
    ("n", "levels", "missing_rate", "symmetric"),
    [(40, None, 0.0, True), (25, 3, 0.05, True), (30, 2, 0.1, True), (6, 2, 0.1, True), (25, 3, 0.05, False)],
)
def test_vectorized_bootstrap_correlations_equal_scipy_on_every_resample(rng, n, levels, missing_rate, symmetric):
    """Pearson and Spearman over all resamples at once equal scipy on each resample's pairs, also
    with ties, missing pairs, copies of one stimulus, and degenerate resamples (NaN where scipy);
    asymmetric matrices take the resample-by-resample path."""
    model, human = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    if levels:
        model, human = np.round(model * levels / 3), np.round(human * levels / 3)
    model, human = (model + model.T) / 2, (human + human.T) / 2
    holes = rng.random((n, n)) < missing_rate
    model[(holes | holes.T) if symmetric else holes] = np.nan
    resamples = rng.integers(0, n, (150, n))
    values = alignment_bootstrap._correlations_resampled(model, human, resamples, ("pearson", "spearman"))
    scipy_r = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}
    for method in ("pearson", "spearman"):
        expected = []
        for idx in resamples:
            x, y, _ = pairwise._upper_pairs(model, human, idx)
            constant = len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0  # scipy: NaN (with a warning)
            expected.append(np.nan if constant else scipy_r[method](x, y).statistic)
        np.testing.assert_allclose(values[method], expected, rtol=0, atol=1e-12, equal_nan=True)
        # and the one-resample function the rest of the package uses
        direct = [pairwise._correlation(*pairwise._upper_pairs(model, human, idx)[:2], method) for idx in resamples]
        np.testing.assert_allclose(direct, expected, rtol=0, atol=1e-12, equal_nan=True)
