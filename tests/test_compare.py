"""Model-vs-model comparison (alignment/compare.py, `repalign compare`): values against
independent oracles (CKA from its HSIC definition, RSA from scipy on sklearn's cosine
matrices), the table's shape and symmetry, bad input, and the command on the real mirror."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics.pairwise import cosine_similarity

from cli_capture import run_cli
from repalign.alignment import compare_models, comparison_matrix
from repalign.errors import InputError, UnknownNameError


def _cka_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with H K H centering."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l):
        return np.trace(k @ h @ l @ h)

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(len(matrix), k=1)]


@pytest.fixture
def three(rng):
    x = rng.normal(size=(25, 6))
    return {"a": x, "b": x @ rng.normal(size=(6, 9)) + 0.3 * rng.normal(size=(25, 9)), "c": rng.normal(size=(25, 4))}


def test_values_match_independent_oracles(three, rng):
    human = np.corrcoef(three["a"] + rng.normal(size=three["a"].shape))
    table = compare_models(
        three, methods=("linear_cka", "rsa_spearman", "rsa_pearson"), similarity="cosine", human_similarity=human
    )
    assert list(table.columns) == ["model_a", "model_b", "method", "similarity", "value", "n"]
    assert set(table["n"]) == {25}
    cka = comparison_matrix(table, "linear_cka")
    for a in three:
        for b in three:
            assert cka.loc[a, b] == pytest.approx(_cka_by_definition(three[a], three[b]), abs=1e-10)
    sims = {name: cosine_similarity(x) for name, x in three.items()} | {"human": human}
    for method, oracle in (("rsa_spearman", stats.spearmanr), ("rsa_pearson", stats.pearsonr)):
        matrix = comparison_matrix(table, method)
        assert list(matrix.index) == ["a", "b", "c", "human"] == list(matrix.columns)
        for a in sims:
            for b in sims:
                expected = oracle(_upper(sims[a]), _upper(sims[b]))[0]
                assert matrix.loc[a, b] == pytest.approx(expected, abs=1e-10)
    # CKA needs features: the human matrix joins the RSA tables only
    assert "human" not in set(table.loc[table["method"] == "linear_cka", "model_a"])
    assert table.loc[table["method"] == "linear_cka", "similarity"].isna().all()
    assert set(table.loc[table["method"] != "linear_cka", "similarity"]) == {"cosine"}


def test_properties_symmetry_self_and_rotation(three, rng):
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    models = {**three, "a_rotated": 2.5 * three["a"] @ rotation}
    table = compare_models(models, methods=("linear_cka", "debiased_cka", "rsa_kendall"), similarity="dot")
    for method in ("linear_cka", "debiased_cka", "rsa_kendall"):
        matrix = comparison_matrix(table, method).to_numpy()
        np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-12)
    # CKA is invariant to rotation and isotropic scaling (dot-product RSA is not invariant to scaling
    # in value, but its rank correlation is)
    for method in ("linear_cka", "debiased_cka", "rsa_kendall"):
        assert comparison_matrix(table, method).loc["a", "a_rotated"] == pytest.approx(1.0, abs=1e-10)
    # debiased CKA removes the upward bias of unrelated representations
    unrelated = compare_models(
        {"p": rng.normal(size=(40, 200)), "q": rng.normal(size=(40, 200))}, methods=("linear_cka", "debiased_cka")
    )
    plain = comparison_matrix(unrelated, "linear_cka").loc["p", "q"]
    debiased = comparison_matrix(unrelated, "debiased_cka").loc["p", "q"]
    assert plain > 0.5 and abs(debiased) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": ("cka",)}, UnknownNameError, "Valid: debiased_cka, linear_cka"),
        ({"methods": ("linear_cca",)}, UnknownNameError, "Did you mean: linear_cka"),
        ({"methods": ()}, InputError, "methods is empty"),
        ({"similarity": "cosin"}, UnknownNameError, "cosine"),
        ({"human_similarity": np.eye(25), "human_name": "a", "methods": "rsa_pearson"}, InputError, "also a model"),
        ({"human_similarity": np.eye(24), "methods": "rsa_pearson"}, InputError, "same stimuli"),
    ],
)
def test_bad_input(three, kwargs, error, match):
    with pytest.raises(error, match=match):
        compare_models(three, **kwargs)


def test_bad_models(three):
    with pytest.raises(InputError, match="at least 2 models"):
        compare_models({"a": three["a"]})
    with pytest.raises(InputError, match="same set; got rows a: 25, short: 24"):
        compare_models({"a": three["a"], "short": three["a"][:24]})
    with pytest.raises(InputError, match="no rows of method 'rsa_pearson'; it has: linear_cka"):
        comparison_matrix(compare_models(three, methods="linear_cka"), "rsa_pearson")


# ------------------------------------------------------------------------ the command line
@pytest.mark.integration
def test_compare_command_on_the_mirror_agrees_with_align(mirror, tmp_path):
    models = ["pixels", "cifar_resnet:resnet20"]
    argv = ["compare", *models, "--images", "peterson:animals", "--format", "json"]
    # one rule for list options: comma-separated or repeated
    repeated = run_cli([*argv, "--methods", "rsa_spearman", "--methods", "linear_cka"])
    commas = run_cli([*argv, "--methods", "rsa_spearman,linear_cka", "--figures", tmp_path])
    assert repeated.code == 0 and commas.code == 0, (repeated.err, commas.err)
    rows = pd.DataFrame(json.loads(commas.out))
    assert rows.equals(pd.DataFrame(json.loads(repeated.out)))
    assert (tmp_path / "compare_linear_cka.png").is_file() and (tmp_path / "compare_rsa_spearman.pdf").is_file()
    assert set(rows["method"]) == {"rsa_spearman", "linear_cka"} and set(rows["n"]) == {120}
    rsa = comparison_matrix(rows, "rsa_spearman")
    assert list(rsa.index) == [*models, "human"]
    # the human row of RSA is each model's Spearman alignment, as `repalign align` computes it
    for model in models:
        aligned = run_cli(
            ["align", model, "--human", "peterson:animals", "--metrics", "spearman", "--n-bootstrap", "0"]
            + ["--format", "json"]
        )
        assert aligned.code == 0, aligned.err
        (record,) = json.loads(aligned.out)
        assert rsa.loc[model, "human"] == pytest.approx(record["value"], abs=1e-12)
    # the table format prints one matrix per method, names whole
    table = run_cli(["compare", *models, "--images", "peterson:animals", "--methods", "linear_cka"])
    assert table.code == 0 and "linear_cka on peterson:animals (120 images)" in table.out
    assert "cifar_resnet:resnet20" in table.out
    no_human = run_cli([*argv, "--methods", "rsa_pearson", "--no-human", "--max-images", "30"])
    frame = pd.DataFrame(json.loads(no_human.out))
    assert set(frame["model_a"]) == set(models) and set(frame["n"]) == {30}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["pixels", "--images", "peterson:animals"], "at least two different models"),
        (["pixels", "pixels", "--images", "peterson:animals"], "at least two different models"),
        (["pixels", "nosuchsource:x", "--images", "peterson:animals"], "nosuchsource"),
        (["pixels", "cifar_resnet:resnet20", "--images", "x", "--methods", "cka"], "Unknown comparison method"),
        (["pixels", "cifar_resnet:resnet20", "--images", "peterson:animals", "--max-images", "2"], "at least 4"),
    ],
)
def test_compare_command_bad_input_is_one_line(mirror, extra, message):
    result = run_cli(["compare", *extra])
    assert result.code == 2 and len(result.err_lines) == 1, result.err
    assert message in result.err_lines[0]


def test_rsa_takes_every_pairwise_method(three):
    """rsa_<method> is pairwise_alignment's method between the two models' matrices, for
    rsatoolbox's comparisons too (themselves tested against rsatoolbox)."""
    from repalign.alignment import pairwise_alignment, similarity_matrix

    methods = ("rsa_tau-a", "rsa_rho-a", "rsa_cosine")
    table = compare_models(three, methods=methods)
    for method in methods:
        matrix = comparison_matrix(table, method)
        expected = pairwise_alignment(
            similarity_matrix(three["a"]), similarity_matrix(three["c"]), method=method.removeprefix("rsa_")
        )
        assert matrix.loc["a", "c"] == pytest.approx(expected, abs=1e-12)
