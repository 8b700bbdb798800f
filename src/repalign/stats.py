"""The study's statistics, as small functions over tidy tables.

Everything here works on plain arrays or DataFrames in the study schema
(:data:`repalign.study.schema.RESULT_COLUMNS`), so each function is usable on its own.

Conventions
-----------
* Correlations are across **models** (one value per model).
* ``z2_transform`` uses the sample SD (``ddof=1``). The choice only rescales z^2 by a
  constant, so every correlation computed with z^2 is the same under ``ddof=0``.
* 95% CIs of Pearson/Spearman r use the Fisher z transform (``atanh(r) +- z_crit / sqrt(n - 3)``),
  as scipy's ``pearsonr(...).confidence_interval()`` and pingouin do; partial correlations
  come from ``pingouin.partial_corr`` (Fisher z with ``n - k`` for ``k`` covariates).
* "Headline" numbers also get a percentile bootstrap CI over models (resampling models with
  replacement, seeded by ``random_state``).
* U-shape tests: a quadratic regression (its x^2 coefficient, and the vertex with a bootstrap
  CI) and Simonsohn's (2018) two-lines test, an interrupted regression whose breakpoint is
  chosen by the Robin Hood procedure; see :func:`two_lines_test`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _sps

from repalign.errors import InputError, RepalignError, unknown_name

log = logging.getLogger(__name__)

ALIGNMENT_METRICS = ("pearson", "spearman", "triplet")
CORRECTIONS = ("holm", "fdr_bh", "bonf", "none")
GROUPS = ("high", "mid", "low")
#: Fewer models than this and correlations / Fisher CIs are meaningless (n - 3 > 0 needed).
MIN_MODELS = 4

#: Columns of pingouin.partial_corr's output in the pinned pingouin (==0.7.0). pingouin
#: renamed them before ('CI95%' -> 'CI95', 'p-val' -> 'p_val'); a silent rename would turn
#: our numbers into NaN or KeyErrors, so we check and fail loudly instead.
PINGOUIN_PARTIAL_COLUMNS = ("n", "r", "CI95", "p_val")
PINGOUIN_REGRESSION_COLUMNS = ("names", "coef", "se", "pval", "r2")


class PingouinAPIError(RepalignError, RuntimeError):
    """The installed pingouin returns other columns than the pinned version."""


# ---------------------------------------------------------------------------------------------
# per-model summaries
# ---------------------------------------------------------------------------------------------
def model_alignment(
    alignment: pd.DataFrame, *, similarity: str | None = None, require_all_datasets: bool = True
) -> pd.DataFrame:
    """Alignment per model and metric, averaged over the human datasets.

    Args:
        alignment: rows in the study schema with ``stage == "alignment"`` (others are ignored);
            columns used: model, dataset, metric, similarity, value, status (if present).
        similarity: keep rows of this model similarity function only; ``None`` requires that
            the rows use a single one.
        require_all_datasets: drop a model that lacks any (dataset, metric) the others have
            (an average over fewer datasets is not comparable); dropped names are logged and
            listed in ``attrs["dropped"]``.

    Returns:
        Tidy DataFrame: model, metric, value (mean over datasets), n_datasets.
    """
    rows = _ok_rows(alignment, "alignment")
    if similarity is not None:
        rows = rows[rows["similarity"] == similarity]
    elif "similarity" in rows and rows["similarity"].nunique(dropna=True) > 1:
        raise InputError(
            f"Alignment rows use several similarity functions {sorted(rows['similarity'].dropna().unique())}; "
            "pass similarity=... to choose one."
        )
    if rows.empty:
        raise InputError("No successful alignment rows to summarize.")
    grouped = rows.groupby(["model", "metric"], sort=True)["value"]
    table = grouped.agg(value="mean", n_datasets="count").reset_index()
    dropped: list[str] = []
    if require_all_datasets:
        expected = rows.groupby("metric")["dataset"].nunique()
        complete = table["n_datasets"].to_numpy() == table["metric"].map(expected).to_numpy()
        dropped = sorted(set(table.loc[~complete, "model"]))
        table = table[~table["model"].isin(dropped)]
        if dropped:
            log.warning(
                "alignment: %d models lack some human datasets and are left out: %s",
                len(dropped),
                ", ".join(dropped[:10]),
            )
    table = table.reset_index(drop=True).astype({"model": "string", "metric": "string"})
    table.attrs["dropped"] = dropped
    return table


def wide(table: pd.DataFrame, *, columns: str = "metric", values: str = "value") -> pd.DataFrame:
    """Tidy ``model, <columns>, <values>`` -> DataFrame indexed by model, one column per key."""
    out = table.pivot_table(index="model", columns=columns, values=values, aggfunc="mean")
    out.columns = [str(c) for c in out.columns]
    out.index = out.index.astype(str)
    return out


def fewshot_accuracy(
    fewshot: pd.DataFrame, *, by: Sequence[str] = ("head", "shots"), datasets: Sequence[str] | None = None
) -> pd.DataFrame:
    """Few-shot accuracy per model, averaged over the few-shot datasets not in ``by``.

    Args:
        fewshot: study rows with ``stage == "fewshot"`` (value = accuracy).
        by: grouping besides model, e.g. ("head", "shots") or ("dataset", "head", "shots").
        datasets: restrict to these few-shot datasets.

    Returns:
        Tidy DataFrame: model, *by, value, n_datasets. Models must have every dataset to be
        averaged (else they would be compared on different tasks); others are dropped and
        listed in ``attrs["dropped"]``.
    """
    rows = _ok_rows(fewshot, "fewshot")
    if datasets is not None:
        rows = rows[rows["dataset"].isin(list(datasets))]
    if rows.empty:
        raise InputError("No successful few-shot rows to summarize.")
    keys = ["model", *by]
    table = rows.groupby(keys, sort=True, dropna=False)["value"].agg(value="mean", n_datasets="count").reset_index()
    dropped: list[str] = []
    if "dataset" not in by:
        expected = rows["dataset"].nunique()
        dropped = sorted(set(table.loc[table["n_datasets"] < expected, "model"]))
        table = table[~table["model"].isin(dropped)].reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table


def z2_transform(values):
    """Squared z-score across models: ``((x - mean) / sd) ** 2`` with the sample SD (ddof=1).

    Large values mark models far from the average alignment in either direction -- the
    quantity that a U-shaped relation makes linear. NaNs are ignored in mean/SD and kept.

    Args:
        values: 1-d array-like (n_models,) or a pandas Series (index kept).
    Returns:
        Same type and shape as the input (Series in -> Series out, else ndarray).
    """
    is_series = isinstance(values, pd.Series)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"z2_transform expects a 1-d array of per-model values; got shape {x.shape}.")
    finite = x[np.isfinite(x)]
    if finite.size < 2:
        raise InputError(f"z2_transform needs at least 2 finite values; got {finite.size}.")
    sd = finite.std(ddof=1)
    if sd == 0:
        raise InputError("z2_transform: all values are equal (zero SD), z-scores are undefined.")
    z2 = ((x - finite.mean()) / sd) ** 2
    return pd.Series(z2, index=values.index, name=values.name) if is_series else z2


# ---------------------------------------------------------------------------------------------
# correlations
# ---------------------------------------------------------------------------------------------
def fisher_ci(r: float, n: int, *, confidence: float = 0.95, n_covariates: int = 0) -> tuple[float, float]:
    """Fisher-z confidence interval of a correlation r from n observations."""
    dof = n - n_covariates - 3
    if dof <= 0 or not np.isfinite(r):
        return (np.nan, np.nan)
    if abs(r) >= 1:
        return (float(r), float(r))
    crit = _sps.norm.ppf(0.5 + confidence / 2)
    z = np.arctanh(r)
    half = crit / np.sqrt(dof)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def correlation(x, y, *, method: str = "pearson", confidence: float = 0.95) -> dict[str, float]:
    """Correlation of two per-model vectors with a Fisher-z CI and a two-sided p-value.

    Pairs with a NaN in either vector are dropped.

    Args:
        x, y: 1-d arrays (n_models,).
        method: "pearson" or "spearman".
    Returns:
        {"n", "r", "ci_low", "ci_high", "p"}; r, CI and p are NaN when n < 4 or a vector is constant.
    """
    xv, yv = _paired(x, y)
    n = len(xv)
    if n < MIN_MODELS or np.ptp(xv) == 0 or np.ptp(yv) == 0:
        return {"n": n, "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    if method == "pearson":
        result = _sps.pearsonr(xv, yv)
    elif method == "spearman":
        result = _sps.spearmanr(xv, yv)
    else:
        raise unknown_name("correlation method", method, ("pearson", "spearman"))
    r, p = float(result.statistic), float(result.pvalue)
    low, high = fisher_ci(r, n, confidence=confidence)
    return {"n": n, "r": r, "ci_low": low, "ci_high": high, "p": p}


def partial_correlation(x, y, covar, *, method: str = "pearson") -> dict[str, float]:
    """Partial correlation of x and y controlling for ``covar`` (pingouin.partial_corr).

    Args:
        x, y: 1-d arrays (n_models,).
        covar: 1-d array (n_models,) or 2-d (n_models, k) of covariates (e.g. ImageNet top-1).
    Returns:
        {"n", "r", "ci_low", "ci_high", "p"} exactly as pingouin computes them (95% CI).
    """
    import pingouin

    cov = np.asarray(covar, dtype=np.float64)
    cov = cov[:, None] if cov.ndim == 1 else cov
    data = pd.DataFrame({"x": np.asarray(x, dtype=np.float64), "y": np.asarray(y, dtype=np.float64)})
    if len(cov) != len(data):
        raise InputError(f"covar has {len(cov)} rows but x and y have {len(data)}.")
    cov_names = [f"covar{i}" for i in range(cov.shape[1])]
    data[cov_names] = cov
    data = data.dropna()
    n = len(data)
    if n < MIN_MODELS + cov.shape[1] or data.std().eq(0).any():
        return {"n": n, "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    if method not in ("pearson", "spearman"):
        raise unknown_name("correlation method", method, ("pearson", "spearman"))
    with _pingouin_unrounded():
        out = pingouin.partial_corr(data=data, x="x", y="y", covar=cov_names, method=method)
    check_pingouin_columns(out)
    row = out.iloc[0]
    low, high = row["CI95"]
    return {
        "n": int(row["n"]),
        "r": float(row["r"]),
        "ci_low": float(low),
        "ci_high": float(high),
        "p": float(row["p_val"]),
    }


@contextlib.contextmanager
def _pingouin_unrounded() -> Iterator[None]:
    """pingouin rounds its CI95 column to 2 decimals by default (``pingouin.options``); we
    want full precision, so switch that display rounding off for the call and restore it."""
    import pingouin

    saved = dict(pingouin.options)
    for key in [k for k in pingouin.options if k.startswith("round.column.")]:
        pingouin.options[key] = None
    pingouin.options["round"] = None
    try:
        yield
    finally:
        pingouin.options.clear()
        pingouin.options.update(saved)


def check_pingouin_columns(frame: pd.DataFrame, expected: Sequence[str] = PINGOUIN_PARTIAL_COLUMNS) -> None:
    """Raise :class:`PingouinAPIError` if pingouin's output lacks the pinned columns."""
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        import pingouin

        raise PingouinAPIError(
            f"pingouin {pingouin.__version__} returned columns {list(frame.columns)}, expected "
            f"{list(expected)} (pingouin==0.7.0). Install the pinned version: pip install 'pingouin==0.7.0'."
        )


def adjust_pvalues(pvalues, *, method: str = "holm") -> np.ndarray:
    """Family-wise (Holm, Bonferroni) or false-discovery-rate (Benjamini-Hochberg) adjustment.

    NaN p-values are kept as NaN and do not count toward the family size.
    """
    import pingouin

    if method not in CORRECTIONS:
        raise unknown_name("p-value correction", method, CORRECTIONS)
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        out[ok] = p[ok]
        return out
    _, adjusted = pingouin.multicomp(p[ok], method=method)
    out[ok] = adjusted
    return out


def correlation_table(
    xs: pd.DataFrame,
    ys: pd.DataFrame,
    *,
    covar: pd.Series | None = None,
    method: str = "pearson",
    correction: str = "holm",
    n_bootstrap: int = 1000,
    random_state: int | None = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Correlate every column of ``xs`` with every column of ``ys`` across models.

    Args:
        xs, ys: DataFrames indexed by model (n_models, n_x) and (n_models, n_y); rows are
            matched on the index, pairs with NaN dropped per cell.
        covar: optional Series indexed by model; adds partial correlations controlling for it.
        correction: p-value adjustment across the whole grid ("holm", "fdr_bh", "bonf", "none").
        n_bootstrap: resamples of models for the percentile bootstrap CI (0 = none).

    Returns:
        Tidy DataFrame, one row per (x, y): x, y, n, r, ci_low, ci_high, p, p_adj,
        boot_low, boot_high; with ``covar`` also r_partial, ci_partial_low, ci_partial_high,
        p_partial, p_partial_adj, boot_partial_low, boot_partial_high.
    """
    index = xs.index.intersection(ys.index)
    if covar is not None:
        index = index.intersection(covar.index)
    rng = np.random.default_rng(random_state)
    records = []
    for x_name in xs.columns:
        for y_name in ys.columns:
            x = xs.loc[index, x_name].to_numpy(dtype=np.float64)
            y = ys.loc[index, y_name].to_numpy(dtype=np.float64)
            record: dict[str, Any] = {
                "x": x_name,
                "y": y_name,
                **correlation(x, y, method=method, confidence=confidence),
            }
            record["boot_low"], record["boot_high"] = bootstrap_correlation_ci(
                x, y, method=method, n_bootstrap=n_bootstrap, random_state=rng, confidence=confidence
            )
            if covar is not None:
                c = covar.loc[index].to_numpy(dtype=np.float64)
                partial = partial_correlation(x, y, c, method=method)
                record.update(
                    r_partial=partial["r"],
                    ci_partial_low=partial["ci_low"],
                    ci_partial_high=partial["ci_high"],
                    p_partial=partial["p"],
                )
                record["boot_partial_low"], record["boot_partial_high"] = bootstrap_correlation_ci(
                    x, y, c, method=method, n_bootstrap=n_bootstrap, random_state=rng, confidence=confidence
                )
            records.append(record)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    table.insert(table.columns.get_loc("p") + 1, "p_adj", adjust_pvalues(table["p"], method=correction))
    if covar is not None:
        table.insert(
            table.columns.get_loc("p_partial") + 1,
            "p_partial_adj",
            adjust_pvalues(table["p_partial"], method=correction),
        )
    table.attrs["correction"] = correction
    return table


def metric_correlations(
    per_model: pd.DataFrame, *, n_bootstrap: int = 1000, random_state: int | None = 0
) -> pd.DataFrame:
    """Correlation between the alignment metrics themselves across models.

    Args:
        per_model: DataFrame indexed by model, one column per metric (see :func:`wide`).
    Returns:
        One row per unordered metric pair: metric_a, metric_b, n, pearson_r, ci_low, ci_high,
        p, boot_low, boot_high, spearman_rho, spearman_p.
    """
    rng = np.random.default_rng(random_state)
    records = []
    columns = list(per_model.columns)
    for i, a in enumerate(columns):
        for b in columns[i + 1 :]:
            x, y = per_model[a].to_numpy(float), per_model[b].to_numpy(float)
            pear = correlation(x, y, method="pearson")
            spear = correlation(x, y, method="spearman")
            low, high = bootstrap_correlation_ci(x, y, n_bootstrap=n_bootstrap, random_state=rng)
            records.append(
                {
                    "metric_a": a,
                    "metric_b": b,
                    "n": pear["n"],
                    "pearson_r": pear["r"],
                    "ci_low": pear["ci_low"],
                    "ci_high": pear["ci_high"],
                    "p": pear["p"],
                    "boot_low": low,
                    "boot_high": high,
                    "spearman_rho": spear["r"],
                    "spearman_p": spear["p"],
                }
            )
    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------------------------------------
# bootstrap over models
# ---------------------------------------------------------------------------------------------
def _pearson_along(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorized Pearson r (2 arrays) or partial r given a third, along ``axis``."""

    def r(a, b):
        a = a - a.mean(axis=axis, keepdims=True)
        b = b - b.mean(axis=axis, keepdims=True)
        denom = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(axis=axis) / denom

    if len(arrays) == 2:
        return r(*arrays)
    x, y, z = arrays
    rxy, rxz, ryz = r(x, y), r(x, z), r(y, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))


def bootstrap_correlation_ci(
    x,
    y,
    covar=None,
    *,
    method: str = "pearson",
    n_bootstrap: int = 1000,
    random_state=0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of a (partial) correlation, resampling models (pairs) with replacement.

    Spearman correlations are bootstrapped as Pearson correlations of ranks computed
    within each resample. Returns (NaN, NaN) for n_bootstrap == 0 or too few models.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (x, y) + (() if covar is None else (covar,))]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    arrays = [a[keep] for a in arrays]
    if n_bootstrap <= 0 or len(arrays[0]) < MIN_MODELS:
        return (np.nan, np.nan)
    rng = np.random.default_rng(random_state)
    index = rng.integers(0, len(arrays[0]), size=(n_bootstrap, len(arrays[0])))
    samples = [a[index] for a in arrays]  # (n_bootstrap, n_models) each
    if method == "spearman":
        samples = [_sps.rankdata(s, axis=1) for s in samples]
    values = _pearson_along(*samples)
    values = values[np.isfinite(values)]  # a resample with a constant column has no r
    if values.size == 0:
        return (np.nan, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Callable[..., float], *samples, n_bootstrap: int = 1000, random_state=0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of any statistic of paired per-model samples.

    ``statistic(*resampled)`` is called once per resample (rows resampled jointly).
    """
    arrays = [np.asarray(s) for s in samples]
    n = len(arrays[0])
    if n_bootstrap <= 0 or n < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(random_state)
    values = []
    for _ in range(n_bootstrap):
        index = rng.integers(0, n, size=n)
        values.append(statistic(*(a[index] for a in arrays)))
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# groups
# ---------------------------------------------------------------------------------------------
def select_groups(per_model: pd.DataFrame, *, k: int = 5) -> pd.DataFrame:
    """The ``k`` models with the highest, nearest-to-the-mean and lowest value, per metric.

    Args:
        per_model: DataFrame indexed by model, one column per metric (NaNs ignored per metric).
        k: models per group; needs at least 3k models per metric so the groups are disjoint.

    Returns:
        Tidy DataFrame: metric, group ("high" | "mid" | "low"), rank (1 = most extreme /
        nearest), model, value. Ties are broken by model name, so the result is deterministic.
    """
    if k < 1:
        raise InputError(f"k (models per group) must be >= 1; got {k}.")
    records = []
    for metric in per_model.columns:
        values = per_model[metric].dropna().astype(float)
        if len(values) < 3 * k:
            raise InputError(
                f"Groups of {k} need at least {3 * k} models with a '{metric}' value; got {len(values)}. "
                "Use a smaller k or more models."
            )
        frame = pd.DataFrame({"model": values.index.astype(str), "value": values.to_numpy()})
        frame["distance"] = (frame["value"] - frame["value"].mean()).abs()
        high = frame.sort_values(["value", "model"], ascending=[False, True]).head(k)
        low = frame.sort_values(["value", "model"], ascending=[True, True]).head(k)
        rest = frame[~frame["model"].isin(set(high["model"]) | set(low["model"]))]
        mid = rest.sort_values(["distance", "model"]).head(k)
        for group, members in (("high", high), ("mid", mid), ("low", low)):
            for rank, (_, row) in enumerate(members.iterrows(), start=1):
                records.append(
                    {
                        "metric": metric,
                        "group": group,
                        "rank": rank,
                        "model": row["model"],
                        "value": float(row["value"]),
                    }
                )
    return pd.DataFrame.from_records(records, columns=["metric", "group", "rank", "model", "value"])


# ---------------------------------------------------------------------------------------------
# U-shape tests
# ---------------------------------------------------------------------------------------------
def quadratic_fit(
    x, y, *, n_bootstrap: int = 1000, random_state: int | None = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """OLS fit ``y = b0 + b1 x + b2 x^2``: the curvature b2 with its CI and the vertex.

    The vertex ``-b1 / (2 b2)`` gets a percentile bootstrap CI over models. A U (b2 > 0) or
    inverted U (b2 < 0) is only evidence of a turn *inside* the data if the vertex lies within
    the range of x; the two-lines test checks that directly.

    Args:
        x, y: 1-d arrays (n_models,); NaN pairs dropped.
    Returns:
        dict: n, b0, b1, b2, b2_se, b2_ci_low, b2_ci_high, b2_p, r2, vertex, vertex_ci_low,
        vertex_ci_high, vertex_in_range, x_min, x_max, shape ("U", "inverted-U" or "none" at
        the 1 - confidence level).
    """
    import pingouin

    xv, yv = _paired(x, y)
    n = len(xv)
    if n < 5:
        raise InputError(f"A quadratic fit needs at least 5 models; got {n}.")
    design = pd.DataFrame({"x": xv, "x2": xv**2})
    fit = pingouin.linear_regression(design, yv, alpha=1 - confidence)
    check_pingouin_columns(fit, PINGOUIN_REGRESSION_COLUMNS)
    coef = dict(zip(fit["names"], fit["coef"]))
    b0, b1, b2 = coef["Intercept"], coef["x"], coef["x2"]
    row = fit[fit["names"] == "x2"].iloc[0]
    ci_columns = [c for c in fit.columns if c.startswith("CI")]  # "CI2.5", "CI97.5" at 95%
    if len(ci_columns) != 2:
        check_pingouin_columns(fit, (*PINGOUIN_REGRESSION_COLUMNS, "CI<low>", "CI<high>"))
    b2_low, b2_high = float(row[ci_columns[0]]), float(row[ci_columns[1]])

    def vertex_of(xs, ys):
        design = np.column_stack([np.ones_like(xs), xs, xs**2])
        (c0, c1, c2), _, rank, _ = np.linalg.lstsq(design, ys, rcond=None)
        # a resample with < 3 distinct x values has no unique parabola
        return -c1 / (2 * c2) if rank == 3 and c2 != 0 else np.nan

    vertex = -b1 / (2 * b2) if b2 != 0 else np.nan
    v_low, v_high = bootstrap_ci(
        vertex_of, xv, yv, n_bootstrap=n_bootstrap, random_state=random_state, confidence=confidence
    )
    p = float(row["pval"])
    shape = "none" if p >= 1 - confidence else ("U" if b2 > 0 else "inverted-U")
    return {
        "n": n,
        "b0": float(b0),
        "b1": float(b1),
        "b2": float(b2),
        "b2_se": float(row["se"]),
        "b2_ci_low": b2_low,
        "b2_ci_high": b2_high,
        "b2_p": p,
        "r2": float(row["r2"]),
        "vertex": float(vertex),
        "vertex_ci_low": v_low,
        "vertex_ci_high": v_high,
        "vertex_in_range": bool(xv.min() <= vertex <= xv.max()),
        "x_min": float(xv.min()),
        "x_max": float(xv.max()),
        "shape": shape,
    }


def interrupted_regression(x, y, breakpoint: float) -> dict[str, Any]:
    """Two lines meeting at ``breakpoint``: ``y = a + b1 x_low + b2 x_high + c [x >= bp]``.

    ``x_low = x - bp`` below the breakpoint (else 0), ``x_high = x - bp`` at or above it (else 0).
    Standard errors are heteroskedasticity-robust (HC3), as in Simonsohn (2018).

    Returns:
        dict: breakpoint, n_low, n_high, slope_low, se_low, p_low, slope_high, se_high, p_high.
    """
    import statsmodels.api as sm

    xv, yv = _paired(x, y)
    high = xv >= breakpoint
    n_low, n_high = int((~high).sum()), int(high.sum())
    if min(n_low, n_high) < 3:
        raise InputError(
            f"Breakpoint {breakpoint:.4g} leaves {n_low} models below and {n_high} above; each line needs >= 3."
        )
    centered = xv - breakpoint
    design = np.column_stack(
        [np.ones_like(xv), np.where(high, 0.0, centered), np.where(high, centered, 0.0), high.astype(float)]
    )
    fit = sm.OLS(yv, design).fit(cov_type="HC3")
    params, se, p = fit.params, fit.bse, fit.pvalues
    return {
        "breakpoint": float(breakpoint),
        "n_low": n_low,
        "n_high": n_high,
        "slope_low": float(params[1]),
        "se_low": float(se[1]),
        "p_low": float(p[1]),
        "slope_high": float(params[2]),
        "se_high": float(se[2]),
        "p_high": float(p[2]),
    }


def two_lines_test(x, y, *, breakpoint: str | float = "robin-hood", alpha: float = 0.05) -> dict[str, Any]:
    """Simonsohn's (2018) two-lines test for a U-shaped (or inverted-U) relation.

    Fits two separate regression lines below and above a breakpoint and calls the relation
    U-shaped when the slopes have opposite signs and *both* are significant at ``alpha``.

    Breakpoint choice:
        "robin-hood" (default): Simonsohn's procedure with the quadratic fit as the smoother
            (his reference implementation uses a GAM; the smoother only locates the region of
            the turn). ``x_flat`` = the observed x whose fitted value is within one standard
            error of the most extreme fitted value. A first interrupted regression at the median
            of ``x_flat`` gives the slopes' |z| statistics z1 (left), z2 (right); the breakpoint
            then moves to the ``100 * z2 / (z1 + z2)``-th percentile of ``x_flat``, giving the
            statistically weaker line more observations.
        "vertex": the vertex of the quadratic fit, clipped into the data range.
        a number: that breakpoint.

    Returns:
        dict: everything from :func:`interrupted_regression` plus method, u_shape (bool),
        shape ("U", "inverted-U" or "none") and reason (a sentence for reports).
    """
    import statsmodels.api as sm

    xv, yv = _paired(x, y)
    if len(xv) < 8:
        raise InputError(f"The two-lines test needs at least 8 models; got {len(xv)}.")
    order = np.sort(xv)
    lowest_allowed, highest_allowed = order[3], order[-3]  # >= 3 points on each side
    if isinstance(breakpoint, str):
        if breakpoint not in ("robin-hood", "vertex"):
            raise unknown_name("breakpoint rule", breakpoint, ("robin-hood", "vertex"))
        design = np.column_stack([np.ones_like(xv), xv, xv**2])
        quad = sm.OLS(yv, design).fit()
        if breakpoint == "vertex":
            b2 = quad.params[2]
            bp = -quad.params[1] / (2 * b2) if b2 != 0 else np.median(xv)
        else:
            fitted = quad.fittedvalues
            extreme = int(np.argmin(fitted) if quad.params[2] > 0 else np.argmax(fitted))
            se_extreme = float(quad.get_prediction(design[extreme : extreme + 1]).se_mean[0])
            flat = np.sort(xv[np.abs(fitted - fitted[extreme]) <= se_extreme])
            first_bp = float(np.clip(np.median(flat), lowest_allowed, highest_allowed))
            first = interrupted_regression(xv, yv, first_bp)
            z1, z2 = abs(first["slope_low"] / first["se_low"]), abs(first["slope_high"] / first["se_high"])
            share = z2 / (z1 + z2) if (z1 + z2) > 0 else 0.5
            bp = float(np.percentile(flat, 100 * share))
        method = breakpoint
    else:
        bp, method = float(breakpoint), "fixed"
    bp = float(np.clip(bp, lowest_allowed, highest_allowed))
    result = interrupted_regression(xv, yv, bp)
    opposite = np.sign(result["slope_low"]) * np.sign(result["slope_high"]) < 0
    both = result["p_low"] < alpha and result["p_high"] < alpha
    u_shape = bool(opposite and both)
    shape = "none"
    if u_shape:
        shape = "U" if result["slope_low"] < 0 else "inverted-U"
    if u_shape:
        reason = (
            f"slopes {result['slope_low']:.3g} and {result['slope_high']:.3g} have opposite signs, both p < {alpha}"
        )
    elif not opposite:
        reason = "both slopes have the same sign"
    else:
        reason = (
            f"slopes have opposite signs but p = {result['p_low']:.3g} and {result['p_high']:.3g} (need both < {alpha})"
        )
    return {"method": method, **result, "u_shape": u_shape, "shape": shape, "reason": reason}


def u_shape_table(x, y, *, n_bootstrap: int = 1000, random_state: int | None = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Both U-shape tests in one tidy table: one row per test with its key numbers."""
    quad = quadratic_fit(x, y, n_bootstrap=n_bootstrap, random_state=random_state, confidence=1 - alpha)
    lines = two_lines_test(x, y, alpha=alpha)
    return pd.DataFrame.from_records(
        [
            {
                "test": "quadratic",
                "shape": quad["shape"],
                "estimate": quad["b2"],
                "ci_low": quad["b2_ci_low"],
                "ci_high": quad["b2_ci_high"],
                "p": quad["b2_p"],
                "location": quad["vertex"],
                "location_ci_low": quad["vertex_ci_low"],
                "location_ci_high": quad["vertex_ci_high"],
                "n": quad["n"],
                "detail": f"x^2 coefficient; vertex {'inside' if quad['vertex_in_range'] else 'outside'} the data range",
            },
            {
                "test": "two-lines",
                "shape": lines["shape"],
                "estimate": lines["slope_low"],
                "ci_low": np.nan,
                "ci_high": np.nan,
                "p": lines["p_low"],
                "location": lines["breakpoint"],
                "location_ci_low": np.nan,
                "location_ci_high": np.nan,
                "n": lines["n_low"] + lines["n_high"],
                "detail": f"slope below {lines['slope_low']:.3g} (p={lines['p_low']:.3g}), above "
                f"{lines['slope_high']:.3g} (p={lines['p_high']:.3g}); {lines['reason']}",
            },
        ]
    )


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    xv = np.asarray(x, dtype=np.float64).ravel()
    yv = np.asarray(y, dtype=np.float64).ravel()
    if xv.shape != yv.shape:
        raise InputError(f"x and y must have the same length; got {xv.size} and {yv.size}.")
    keep = np.isfinite(xv) & np.isfinite(yv)
    return xv[keep], yv[keep]


_REQUIRED = {
    "alignment": {"model", "dataset", "metric", "value"},
    "fewshot": {"model", "dataset", "head", "shots", "value"},
}


def _ok_rows(rows: pd.DataFrame, stage: str) -> pd.DataFrame:
    missing = _REQUIRED[stage] - set(rows.columns)
    if missing:
        raise InputError(f"Result rows lack the columns {sorted(missing)} (expected the study schema).")
    if "stage" in rows:
        rows = rows[rows["stage"] == stage]
    if "status" in rows:
        rows = rows[rows["status"].fillna("ok") == "ok"]
    return rows[rows["value"].notna()]
