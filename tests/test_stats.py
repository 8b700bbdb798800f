"""repalign.stats against scipy, pingouin, statsmodels and brute force on small seeded data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin
import pytest
import scipy.stats
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests

from repalign import stats
from repalign.errors import InputError, UnknownNameError
from repalign.report import summaries


# ---------------------------------------------------------------------------------------------
# z^2
# ---------------------------------------------------------------------------------------------
def test_z2_transform_matches_scipy_zscore_with_sample_sd(rng):
    x = rng.normal(3, 2, size=50)
    np.testing.assert_allclose(stats.z2_transform(x), scipy.stats.zscore(x, ddof=1) ** 2)


def test_z2_transform_keeps_series_index_and_nan():
    series = pd.Series([1.0, 2.0, np.nan, 4.0], index=list("abcd"), name="pearson")
    out = stats.z2_transform(series)
    assert list(out.index) == list("abcd") and out.name == "pearson"
    assert np.isnan(out["c"])
    finite = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(out.dropna().to_numpy(), scipy.stats.zscore(finite, ddof=1) ** 2)


def test_correlations_with_z2_do_not_depend_on_ddof(rng):
    x, y = rng.normal(size=(2, 40))
    r1 = stats.correlation(stats.z2_transform(x), y)["r"]
    r0 = scipy.stats.pearsonr(scipy.stats.zscore(x, ddof=0) ** 2, y).statistic
    assert r1 == pytest.approx(r0, abs=1e-12)


@pytest.mark.parametrize(
    ("values", "match"),
    [(np.ones((3, 2)), "1-d"), ([1.0], "at least 2"), ([2.0, 2.0, 2.0], "zero SD")],
)
def test_z2_transform_rejects_bad_input(values, match):
    with pytest.raises(InputError, match=match):
        stats.z2_transform(values)


# ---------------------------------------------------------------------------------------------
# correlations
# ---------------------------------------------------------------------------------------------
def _pingouin(func, *args, **kwargs):
    with stats.correlations._pingouin_unrounded():
        return func(*args, **kwargs).iloc[0]


def test_pearson_equals_scipy_and_pingouin(rng):
    x = rng.normal(size=60)
    y = 0.4 * x + rng.normal(size=60)
    ours = stats.correlation(x, y)
    ref = scipy.stats.pearsonr(x, y)
    ci = ref.confidence_interval(0.95)  # scipy's CI is the Fisher-z interval
    assert ours["r"] == pytest.approx(ref.statistic, abs=1e-12)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    pg = _pingouin(pingouin.corr, x, y)
    assert ours["r"] == pytest.approx(pg["r"], abs=1e-12)
    assert ours["p"] == pytest.approx(pg["p_val"], rel=1e-9)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx(tuple(pg["CI95"]), abs=1e-6)  # pingouin: 6 decimals


def test_spearman_equals_scipy_and_pingouin(rng):
    x = rng.normal(size=45)
    y = np.exp(x) + rng.normal(scale=2, size=45)
    ours = stats.correlation(x, y, method="spearman")
    ref = scipy.stats.spearmanr(x, y)
    assert ours["r"] == pytest.approx(ref.statistic, abs=1e-12)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    pg = _pingouin(pingouin.corr, x, y, method="spearman")
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx(tuple(pg["CI95"]), abs=1e-6)


def test_correlation_drops_nan_pairs_and_handles_degenerate_input(rng):
    x = rng.normal(size=20)
    y = x + rng.normal(size=20)
    x_nan, y_nan = x.copy(), y.copy()
    x_nan[3], y_nan[7] = np.nan, np.nan
    keep = np.ones(20, bool)
    keep[[3, 7]] = False
    assert stats.correlation(x_nan, y_nan)["n"] == 18
    assert stats.correlation(x_nan, y_nan)["r"] == pytest.approx(scipy.stats.pearsonr(x[keep], y[keep]).statistic)
    assert np.isnan(stats.correlation([1, 2, 3], [3, 1, 2])["r"])  # too few models
    assert np.isnan(stats.correlation(np.ones(10), np.arange(10.0))["r"])  # constant vector
    with pytest.raises(UnknownNameError, match="Unknown correlation method 'kendal'"):
        stats.correlation(x, y, method="kendal")
    with pytest.raises(InputError, match="same length"):
        stats.correlation(x, y[:5])


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_partial_correlation_equals_pingouin_called_directly(rng, method):
    n = 80
    top1 = rng.normal(size=n)
    x = top1 + rng.normal(size=n)
    y = 0.5 * top1 + 0.3 * x + rng.normal(size=n)
    ours = stats.partial_correlation(x, y, top1, method=method)
    frame = pd.DataFrame({"x": x, "y": y, "top1": top1})
    ref = _pingouin(pingouin.partial_corr, data=frame, x="x", y="y", covar="top1", method=method)
    assert ours["n"] == ref["n"] == n
    assert ours["r"] == pytest.approx(ref["r"], abs=1e-12)
    assert ours["p"] == pytest.approx(ref["p_val"], rel=1e-9)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx(tuple(ref["CI95"]), abs=1e-12)
    # Fisher z with n - k: the CI pingouin documents
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx(stats.fisher_ci(ours["r"], n, n_covariates=1), abs=1e-6)


def test_partial_correlation_is_correlation_of_residuals(rng):
    n = 60
    covar = rng.normal(size=(n, 2))
    x = covar @ [1.0, -0.5] + rng.normal(size=n)
    y = covar @ [0.3, 0.8] + 0.4 * x + rng.normal(size=n)
    design = sm.add_constant(covar)
    rx = sm.OLS(x, design).fit().resid
    ry = sm.OLS(y, design).fit().resid
    ours = stats.partial_correlation(x, y, covar)
    assert ours["r"] == pytest.approx(scipy.stats.pearsonr(rx, ry).statistic, abs=1e-10)


def test_partial_correlation_rejects_mismatched_covariate(rng):
    with pytest.raises(InputError, match="covar has 5 rows"):
        stats.partial_correlation(rng.normal(size=10), rng.normal(size=10), rng.normal(size=5))


def test_pingouin_column_check_raises_a_clear_error():
    renamed = pd.DataFrame({"n": [10], "r": [0.1], "CI95%": [[0, 0.2]], "p-val": [0.5]})
    with pytest.raises(stats.PingouinAPIError, match=r"expected \['n', 'r', 'CI95', 'p_val'\].*pingouin==0.7.0"):
        stats.check_pingouin_columns(renamed)


def test_pingouin_rounding_options_are_restored():
    before = dict(pingouin.options)
    stats.partial_correlation(np.arange(10.0), np.arange(10.0) ** 1.5, np.sin(np.arange(10.0)))
    assert dict(pingouin.options) == before


@pytest.mark.parametrize(("ours", "theirs"), [("holm", "holm"), ("fdr_bh", "fdr_bh"), ("bonf", "bonferroni")])
def test_adjust_pvalues_equals_statsmodels(ours, theirs):
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.5, 0.011])
    np.testing.assert_allclose(stats.adjust_pvalues(p, method=ours), multipletests(p, method=theirs)[1])


def test_adjust_pvalues_keeps_nan_out_of_the_family():
    p = np.array([0.01, np.nan, 0.02])
    out = stats.adjust_pvalues(p, method="holm")
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], multipletests([0.01, 0.02], method="holm")[1])
    with pytest.raises(UnknownNameError, match="Unknown p-value correction 'bh'"):
        stats.adjust_pvalues(p, method="bh")


def test_correlation_table_grid_with_partial_and_holm(rng):
    n = 50
    models = [f"m{i}" for i in range(n)]
    top1 = pd.Series(rng.normal(size=n), index=models)
    xs = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)}, index=models)
    ys = pd.DataFrame({"r1": top1 + xs["a"] + rng.normal(size=n), "r2": rng.normal(size=n)}, index=models)
    table = stats.correlation_table(xs, ys.iloc[::-1], covar=top1, n_bootstrap=200, random_state=1)
    assert list(zip(table["x"], table["y"])) == [("a", "r1"), ("a", "r2"), ("b", "r1"), ("b", "r2")]
    np.testing.assert_allclose(table["p_adj"], multipletests(table["p"], method="holm")[1])
    np.testing.assert_allclose(table["p_partial_adj"], multipletests(table["p_partial"], method="holm")[1])
    row = table.iloc[0]
    direct = stats.partial_correlation(xs["a"], ys["r1"], top1)  # index-aligned despite the reversed ys
    assert row["r_partial"] == pytest.approx(direct["r"])
    assert row["r"] == pytest.approx(scipy.stats.pearsonr(xs["a"], ys["r1"]).statistic)
    assert row["boot_low"] < row["r"] < row["boot_high"]
    assert row["boot_partial_low"] < row["r_partial"] < row["boot_partial_high"]
    again = stats.correlation_table(xs, ys, covar=top1, n_bootstrap=200, random_state=1)
    pd.testing.assert_frame_equal(table, again)  # seeded


def test_bootstrap_correlation_ci_equals_brute_force(rng):
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    ours = stats.bootstrap_correlation_ci(x, y, n_bootstrap=300, random_state=7)
    index = np.random.default_rng(7).integers(0, 30, size=(300, 30))
    values = [scipy.stats.pearsonr(x[i], y[i]).statistic for i in index]
    assert ours == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
    z = rng.normal(size=30)
    ours_partial = stats.bootstrap_correlation_ci(x, y, z, n_bootstrap=50, random_state=3)
    index = np.random.default_rng(3).integers(0, 30, size=(50, 30))
    frame = pd.DataFrame({"x": x, "y": y, "z": z})
    values = [
        _pingouin(pingouin.partial_corr, data=frame.iloc[i].reset_index(drop=True), x="x", y="y", covar="z")["r"]
        for i in index
    ]
    assert ours_partial == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-9)
    assert np.isnan(stats.bootstrap_correlation_ci(x, y, n_bootstrap=0)[0])


def test_metric_correlations_pairs(rng):
    base = rng.normal(size=40)
    per_model = pd.DataFrame(
        {"pearson": base, "spearman": base + rng.normal(scale=0.1, size=40), "triplet": rng.normal(size=40)}
    )
    table = stats.metric_correlations(per_model, n_bootstrap=100)
    assert list(zip(table["metric_a"], table["metric_b"])) == [
        ("pearson", "spearman"),
        ("pearson", "triplet"),
        ("spearman", "triplet"),
    ]
    assert table.loc[0, "pearson_r"] == pytest.approx(np.corrcoef(per_model["pearson"], per_model["spearman"])[0, 1])
    assert table.loc[0, "spearman_rho"] == pytest.approx(
        scipy.stats.spearmanr(per_model["pearson"], per_model["spearman"]).statistic
    )


# ---------------------------------------------------------------------------------------------
# per-model summaries and groups
# ---------------------------------------------------------------------------------------------
def _alignment_rows():
    rows = []
    for model, offset in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        for dataset, extra in (("peterson:animals", 0.0), ("peterson:fruits", 0.1)):
            for metric in ("pearson", "triplet"):
                rows.append(
                    {
                        "model": model,
                        "stage": "alignment",
                        "dataset": dataset,
                        "metric": metric,
                        "similarity": "cosine",
                        "value": offset + extra,
                        "status": "ok",
                    }
                )
    rows.append(
        {
            "model": "d",
            "stage": "alignment",
            "dataset": "peterson:animals",
            "metric": "pearson",
            "similarity": "cosine",
            "value": 0.9,
            "status": "ok",
        }
    )
    rows.append(
        {
            "model": "e",
            "stage": "alignment",
            "dataset": "peterson:animals",
            "metric": "pearson",
            "similarity": "cosine",
            "value": None,
            "status": "failed",
        }
    )
    return pd.DataFrame(rows)


def test_model_alignment_averages_over_datasets_and_drops_incomplete_models():
    table = summaries.model_alignment(_alignment_rows())
    assert table.attrs["dropped"] == ["d"]
    expected = {("a", "pearson"): 0.15, ("b", "triplet"): 0.25, ("c", "pearson"): 0.35}
    for (model, metric), value in expected.items():
        row = table[(table["model"] == model) & (table["metric"] == metric)]
        assert row["value"].item() == pytest.approx(value) and row["n_datasets"].item() == 2
    kept = summaries.model_alignment(_alignment_rows(), require_all_datasets=False)
    assert "d" in set(kept["model"]) and "e" not in set(kept["model"])


def test_model_alignment_rejects_mixed_similarities_and_empty_input():
    rows = _alignment_rows()
    rows.loc[0, "similarity"] = "dot"
    with pytest.raises(InputError, match="several similarity functions"):
        summaries.model_alignment(rows)
    assert set(summaries.model_alignment(rows, similarity="cosine", require_all_datasets=False)["model"]) >= {"a", "b"}
    with pytest.raises(InputError, match="No successful alignment rows"):
        summaries.model_alignment(rows.iloc[0:0])
    with pytest.raises(InputError, match="lack the columns"):
        summaries.model_alignment(pd.DataFrame({"model": ["a"]}))


def test_fewshot_accuracy_averages_datasets():
    rows = pd.DataFrame(
        [
            {"model": m, "stage": "fewshot", "dataset": d, "head": "linear", "shots": 1, "value": v, "status": "ok"}
            for m, d, v in (("a", "mnist", 0.5), ("a", "fashion", 0.7), ("b", "mnist", 0.4))
        ]
    )
    table = summaries.fewshot_accuracy(rows)
    assert table["model"].tolist() == ["a"] and table["value"].item() == pytest.approx(0.6)
    assert table.attrs["dropped"] == ["b"]
    per_dataset = summaries.fewshot_accuracy(rows, by=("dataset", "head", "shots"))
    assert len(per_dataset) == 3


def test_select_groups_matches_brute_force(rng):
    values = pd.DataFrame(
        {"pearson": rng.normal(size=20), "triplet": rng.uniform(size=20)}, index=[f"m{i:02d}" for i in range(20)]
    )
    groups = stats.select_groups(values, k=5)
    for metric in values:
        series = values[metric]
        by_value = series.sort_values()
        high = set(by_value.index[-5:])
        low = set(by_value.index[:5])
        rest = series.drop(list(high | low))
        mid = set((rest - series.mean()).abs().sort_values().index[:5])
        got = groups[groups["metric"] == metric]
        assert set(got[got["group"] == "high"]["model"]) == high
        assert set(got[got["group"] == "low"]["model"]) == low
        assert set(got[got["group"] == "mid"]["model"]) == mid
        top = got[(got["group"] == "high") & (got["rank"] == 1)]["model"].item()
        assert top == series.idxmax()


def test_select_groups_needs_enough_models():
    with pytest.raises(InputError, match="Groups of 5 need at least 15 models"):
        stats.select_groups(pd.DataFrame({"pearson": np.arange(10.0)}), k=5)
    with pytest.raises(InputError, match="k .* must be >= 1"):
        stats.select_groups(pd.DataFrame({"pearson": np.arange(10.0)}), k=0)


# ---------------------------------------------------------------------------------------------
# U-shape tests
# ---------------------------------------------------------------------------------------------
def test_quadratic_fit_equals_statsmodels(rng):
    x = rng.uniform(0, 1, 80)
    y = 2 - 3 * x + 4 * x**2 + rng.normal(scale=0.2, size=80)
    fit = stats.quadratic_fit(x, y, n_bootstrap=0)
    ref = sm.OLS(y, np.column_stack([np.ones_like(x), x, x**2])).fit()
    assert (fit["b0"], fit["b1"], fit["b2"]) == pytest.approx(tuple(ref.params), rel=1e-9)
    assert fit["b2_se"] == pytest.approx(ref.bse[2], rel=1e-9)
    assert fit["b2_p"] == pytest.approx(ref.pvalues[2], rel=1e-6)
    assert (fit["b2_ci_low"], fit["b2_ci_high"]) == pytest.approx(tuple(ref.conf_int()[2]), rel=1e-9)
    assert fit["vertex"] == pytest.approx(-ref.params[1] / (2 * ref.params[2]))


def test_planted_u_shape_is_detected_by_both_tests(rng):
    x = rng.uniform(0, 1, 150)
    y = (x - 0.45) ** 2 + rng.normal(scale=0.03, size=150)
    quad = stats.quadratic_fit(x, y, n_bootstrap=300, random_state=0)
    assert quad["shape"] == "U" and quad["b2_p"] < 1e-6
    assert quad["vertex_ci_low"] < 0.45 < quad["vertex_ci_high"] and quad["vertex_in_range"]
    for rule in ("robin-hood", "vertex"):
        lines = stats.two_lines_test(x, y, breakpoint=rule)
        assert lines["u_shape"] and lines["shape"] == "U", lines
        assert lines["slope_low"] < 0 < lines["slope_high"]
        assert 0.3 < lines["breakpoint"] < 0.6


def test_planted_inverted_u_is_detected(rng):
    x = rng.uniform(-1, 1, 120)
    y = -(x**2) + rng.normal(scale=0.1, size=120)
    assert stats.two_lines_test(x, y)["shape"] == "inverted-U"


def test_planted_linear_relation_is_not_a_u(rng):
    x = rng.uniform(0, 1, 150)
    y = 2 * x + rng.normal(scale=0.3, size=150)
    lines = stats.two_lines_test(x, y)
    assert not lines["u_shape"] and lines["shape"] == "none"
    assert stats.quadratic_fit(x, y, n_bootstrap=0)["shape"] == "none"


def test_monotone_concave_relation_fools_the_quadratic_but_not_two_lines(rng):
    # Simonsohn's motivating case: log(x) has a significant negative x^2 term but no turn.
    x = rng.uniform(1, 20, 200)
    y = np.log(x) + rng.normal(scale=0.1, size=200)
    assert stats.quadratic_fit(x, y, n_bootstrap=0)["shape"] == "inverted-U"
    assert not stats.two_lines_test(x, y)["u_shape"]


def test_interrupted_regression_equals_separate_statsmodels_fit(rng):
    x = rng.uniform(0, 1, 60)
    y = np.abs(x - 0.5) + rng.normal(scale=0.05, size=60)
    out = stats.interrupted_regression(x, y, 0.5)
    high = x >= 0.5
    design = np.column_stack([np.ones(60), np.where(high, 0, x - 0.5), np.where(high, x - 0.5, 0), high])
    ref = sm.OLS(y, design).fit(cov_type="HC3")
    assert (out["slope_low"], out["slope_high"]) == pytest.approx((ref.params[1], ref.params[2]))
    assert (out["p_low"], out["p_high"]) == pytest.approx((ref.pvalues[1], ref.pvalues[2]))
    assert out["n_low"] + out["n_high"] == 60
    with pytest.raises(InputError, match="each line needs >= 3"):
        stats.interrupted_regression(x, y, 2.0)


def test_u_shape_tests_reject_bad_input(rng):
    with pytest.raises(InputError, match="at least 8 models"):
        stats.two_lines_test(np.arange(5.0), np.arange(5.0))
    with pytest.raises(InputError, match="at least 5 models"):
        stats.quadratic_fit(np.arange(4.0), np.arange(4.0))
    with pytest.raises(UnknownNameError, match="Unknown breakpoint rule 'median'"):
        stats.two_lines_test(rng.normal(size=20), rng.normal(size=20), breakpoint="median")


def test_u_shape_table_has_both_tests(rng):
    x = rng.uniform(0, 1, 100)
    y = (x - 0.5) ** 2 + rng.normal(scale=0.02, size=100)
    table = stats.u_shape_table(x, y, n_bootstrap=50)
    assert table["test"].tolist() == ["quadratic", "two-lines"]
    assert table["shape"].tolist() == ["U", "U"]
