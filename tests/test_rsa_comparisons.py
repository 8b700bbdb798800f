"""rsatoolbox's comparisons in pairwise_alignment (tau-a, rho-a, cosine), checked against
rsatoolbox itself (a dev dependency) and brute force, on random, tied and real Peterson data,
through the Python API and `repalign align`."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from repalign import alignment as al
from repalign.alignment.pairwise import kendall_tau_a
from repalign.cli import main
from repalign.errors import InputError

compare = pytest.importorskip("rsatoolbox.rdm.compare")

RSA = {"tau-a": "compare_kendall_tau_a", "rho-a": "compare_rho_a", "cosine": "compare_cosine"}
NEW = tuple(RSA)


def rsatoolbox_value(method: str, x: np.ndarray, y: np.ndarray) -> float:
    """rsatoolbox on two vectors of pair values (it takes (1, p) arrays as RDM vectors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(getattr(compare, RSA[method])(x[None], y[None])[0, 0])


def upper(matrix):
    return matrix[np.triu_indices(matrix.shape[0], 1)]


def symmetric(matrix):
    return np.triu(matrix) + np.triu(matrix, 1).T


def test_the_new_metrics_are_in_the_one_vocabulary():
    from repalign import _options as opt

    assert set(NEW) <= set(opt.PAIRWISE_METHODS) <= set(opt.MATRIX_METRICS) <= set(opt.ALIGNMENT_METRICS)
    assert opt.DEFAULT_METRICS == ("pearson", "spearman", "triplet")  # the paper's defaults stay


@pytest.mark.parametrize("method", NEW)
@pytest.mark.parametrize("levels", [None, 2, 4])
@pytest.mark.parametrize("n", [4, 30])
def test_equal_to_rsatoolbox_on_random_and_tied_data(method, levels, n):
    rng = np.random.default_rng(n * 10 + (levels or 0))
    x = rng.normal(size=(n, 5))
    model, human = al.similarity_matrix(x), al.similarity_matrix(x + rng.normal(size=(n, 5)))
    if levels:  # many ties on both sides (a coarse model, ratings on a scale)
        model, human = np.round(model * levels), np.round(human * levels)
    expected = rsatoolbox_value(method, upper(model), upper(human))
    assert al.pairwise_alignment(model, human, method=method) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("method", NEW)
def test_missing_pairs_are_left_out_as_rsatoolbox_leaves_out_nan_entries(method, rng):
    model = symmetric(np.round(rng.normal(size=(20, 20)), 1))
    human = symmetric(rng.normal(size=(20, 20)))
    human[rng.random((20, 20)) < 0.2] = np.nan
    human = symmetric(human)
    x, y = upper(model), upper(human)
    keep = ~np.isnan(y)
    assert al.pairwise_alignment(model, human, method=method) == pytest.approx(
        rsatoolbox_value(method, x[keep], y[keep]), abs=1e-12
    )


def brute_tau_a(x, y) -> float:
    pairs = list(itertools.combinations(range(len(x)), 2))
    return sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs) / len(pairs)


@pytest.mark.parametrize("levels", [1, 2, 3, 50])
def test_tau_a_is_exact_against_brute_force(levels, rng):
    for size in (3, 7, 60):
        x = rng.integers(0, levels, size).astype(float)
        y = rng.integers(0, 3, size).astype(float)
        assert kendall_tau_a(x, y) == brute_tau_a(x, y)  # exactly: C - D is recovered as an integer


def test_tau_a_recovers_the_exact_count_on_a_large_tied_vector(rng):
    # 200 stimuli (19900 pairs, ~2e8 pairs of pairs): (C - D) / n0 with C - D an integer
    p = 19_900
    x = np.round(rng.normal(size=p), 1)
    y = x + rng.normal(size=p)
    value = kendall_tau_a(x, y)
    n0 = p * (p - 1) // 2
    assert value * n0 == pytest.approx(round(value * n0), abs=1e-6)
    assert value == pytest.approx(rsatoolbox_value("tau-a", x, y), abs=1e-15)


def test_ties_cost_tau_a_and_rho_a_what_tau_b_and_rho_forgive(rng):
    """A model that ties most pairs: tau-b / Spearman divide the ties away, tau-a / rho-a do not."""
    x = rng.normal(size=(40, 6))
    human = al.similarity_matrix(x + 0.5 * rng.normal(size=(40, 6)))
    coarse = (al.similarity_matrix(x) > 0.3).astype(float)  # two levels: most pairs tied
    assert abs(al.pairwise_alignment(coarse, human, method="tau-a")) < abs(
        al.pairwise_alignment(coarse, human, method="kendall")
    )
    assert abs(al.pairwise_alignment(coarse, human, method="rho-a")) < abs(
        al.pairwise_alignment(coarse, human, method="spearman")
    )


def test_a_constant_model_scores_zero_on_tau_a_and_rho_a_and_is_refused_by_the_correlations(rng):
    human = symmetric(rng.normal(size=(8, 8)))
    flat = np.ones((8, 8))
    assert al.pairwise_alignment(flat, human, method="tau-a") == 0.0
    assert al.pairwise_alignment(flat, human, method="rho-a") == 0.0
    assert rsatoolbox_value("tau-a", upper(flat), upper(human)) == 0.0
    with pytest.raises(InputError, match="constant"):
        al.pairwise_alignment(flat, human, method="kendall")
    with pytest.raises(InputError, match="cosine is undefined"):
        al.pairwise_alignment(np.zeros((8, 8)), human, method="cosine")


def test_the_bootstrap_gives_the_new_metrics_intervals_around_their_values(rng):
    x = rng.normal(size=(25, 4))
    model, human = al.similarity_matrix(x), al.similarity_matrix(x + rng.normal(size=(25, 4)))
    intervals = al.bootstrap_alignment_ci(model, human, metrics=NEW, n_bootstrap=60, random_state=3)
    for method in NEW:
        low, high = intervals[method]
        assert low < al.pairwise_alignment(model, human, method=method) < high


# --------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def animals(mirror):
    from repalign.data.human import load_human

    (dataset,) = load_human("peterson:animals")
    return dataset


@pytest.mark.integration
def test_real_peterson_matrices_equal_rsatoolbox(animals):
    from repalign.data.human import load_human

    (fruits,) = load_human("peterson:fruits")
    # two real human matrices (different domains, same size) and a coarse version of one: ratings
    # binned to 5 levels, a model with many ties
    coarse = np.round(fruits.similarity * 4)
    for model in (fruits.similarity, coarse):
        for method in NEW:
            expected = rsatoolbox_value(method, upper(model), upper(animals.similarity))
            assert al.pairwise_alignment(model, animals.similarity, method=method) == pytest.approx(expected, abs=1e-12)


@pytest.mark.integration
def test_cli_metric_tau_a_on_peterson_equals_rsatoolbox(tmp_path, animals, capsys):
    x = np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)
    np.save(tmp_path / "emb.npy", x)
    argv = ["align", "--embeddings", str(tmp_path / "emb.npy"), "--human", "peterson:animals", "--format", "json"]
    assert main([*argv, "--metric", "tau-a,rho-a,cosine", "--bootstrap", "30"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["metric"] for r in records] == list(NEW)
    model = upper(al.similarity_matrix(x))
    for record in records:
        expected = rsatoolbox_value(record["metric"], model, upper(animals.similarity))
        assert record["value"] == pytest.approx(expected, abs=1e-12)
        assert record["ci_low"] <= record["value"] <= record["ci_high"]
    assert (
        main(["align", "--embeddings", str(tmp_path / "emb.npy"), "--human", "peterson:animals", "--metrics", "tau_a"])
        == 2
    )
    assert "tau-a" in capsys.readouterr().err  # the suggestion names the right spelling


@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("missing_rate", [0.0, 0.2])
def test_vectorized_bootstrap_of_rho_a_and_cosine_equals_each_resample_scored_alone(rng, levels, missing_rate):
    from repalign.alignment import bootstrap, pairwise

    n = 14
    model, human = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    if levels:
        model, human = np.round(model * levels / 3), np.round(human * levels / 3)
    model, human = (model + model.T) / 2, (human + human.T) / 2
    holes = rng.random((n, n)) < missing_rate
    human[holes | holes.T] = np.nan
    resamples = rng.integers(0, n, (120, n))
    resamples[0] = 0  # one stimulus only: no pair, NaN
    values = bootstrap._correlations_resampled(model, human, resamples, ("rho-a", "cosine", "spearman"))
    for method in ("rho-a", "cosine"):
        direct = []
        for idx in resamples:
            x, y, _ = pairwise._upper_pairs(model, human, idx)
            direct.append(pairwise._correlation(x, y, method))
            if method == "cosine" and len(x) >= 3:  # the one-resample value is rsatoolbox's
                assert direct[-1] == pytest.approx(rsatoolbox_value(method, x, y), abs=1e-12)
        np.testing.assert_allclose(values[method], direct, rtol=0, atol=1e-12, equal_nan=True)
