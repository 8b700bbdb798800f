"""The paper's correlations of alignment with robustness and few-shot accuracy, as one long table.

Every correlation the report shows (Table 2, Figure 3 right, Figure 4 right) is one row of
:func:`alignment_correlations`, with the columns of :data:`CSV_COLUMNS` (written to
``correlations.csv``):

* ``x_metric``: the alignment metric (pearson, spearman, triplet), averaged per model over the
  same human datasets for every model, with the statistics' similarity function;
* ``transform``: ``raw`` (the alignment itself) or ``z2``, its squared z-score across the
  models of that correlation, ``((x - mean) / sd)**2`` with the sample SD -- large for models
  far from the average in either direction, so r with z² measures a U-shaped relation;
* the outcome ``y_*``: a robustness accuracy (``y_stage="robustness"``, dataset imagenet-a/-r/
  -sketch, metric top1/top5; no head or shots) or a few-shot accuracy (``y_stage="fewshot"``,
  one dataset, head and shots; the row's value is already the mean over seeds);
* ``covariate``: ``none`` (Pearson r, Fisher-z 95% CI, scipy's p) or ``imagenet_top1``, the
  partial correlation controlling for ImageNet top-1 (pingouin), where top-1 is known;
* ``n_models``: the models that enter the correlation: those with alignment and the outcome
  (and the covariate). z² is taken across exactly these models.

The paper: "For each of our experiments ... we compute partial correlation with ImageNet-1k
Top-1 validation accuracy as a covariate using the Pingouin Python package".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from repalign import stats
from repalign._options import DEFAULT_CORRECTION, DEFAULT_METRICS, DEFAULT_N_BOOTSTRAP
from repalign.errors import InputError

# the robustness outcomes (out-of-distribution ImageNet test sets, accuracies) are defined once,
# with the robustness join
from repalign.robustness import ACCURACY_METRICS, OOD_DATASETS

#: the columns of correlations.csv, in order (one row per correlation the report shows)
CSV_COLUMNS = (
    "x_metric",
    "transform",
    "y_stage",
    "y_dataset",
    "y_head",
    "y_shots",
    "y_metric",
    "covariate",
    "r",
    "ci_low",
    "ci_high",
    "p",
    "n_models",
)
TRANSFORMS = ("raw", "z2")
NO_COVARIATE = "none"
TOP1_COVARIATE = "imagenet_top1"
#: what identifies one correlation
KEY = ("x_metric", "transform", "y_stage", "y_dataset", "y_head", "y_shots", "y_metric", "covariate")
TARGET_KEY = ("y_stage", "y_dataset", "y_head", "y_shots", "y_metric")

#: the covariate's column in the per-model robustness table
TOP1_COLUMN = "imagenet top1"
#: how the paper groups the robustness test sets when it compares raw and z² alignment
KIND = {"imagenet-a": "adversarial", "imagenet-r": "domain shift", "imagenet-sketch": "domain shift"}

_TARGET_DTYPES = {
    "y_stage": "string",
    "y_dataset": "string",
    "y_head": "string",
    "y_shots": "Int64",
    "y_metric": "string",
}


def robustness_targets(robustness: pd.DataFrame) -> pd.DataFrame:
    """Robustness outcomes in target form.

    Args:
        robustness: per-model robustness (``report.tables.robustness_per_model``): index model,
            columns like "imagenet-a top1".

    Returns:
        Tidy: model, y_stage ("robustness"), y_dataset, y_head (NA), y_shots (NA), y_metric, value.
    """
    records = []
    for dataset in OOD_DATASETS:
        for metric in ACCURACY_METRICS:
            column = f"{dataset} {metric}"
            if column not in robustness:
                continue
            for model, value in robustness[column].dropna().items():
                records.append(
                    {"model": str(model), "y_stage": "robustness", "y_dataset": dataset, "y_metric": metric,
                     "value": float(value)}
                )  # fmt: skip
    if not records:
        raise InputError("The robustness rows hold no ImageNet-A/R/Sketch accuracies.")
    return _target_frame(pd.DataFrame.from_records(records))


def fewshot_targets(
    fewshot: pd.DataFrame, *, datasets: Sequence[str] | None = None, heads: Sequence[str] | None = None
) -> pd.DataFrame:
    """Few-shot outcomes in target form: one per (dataset, head, shots), never averaged over datasets.

    Args:
        fewshot: study rows (``StudyResults.fewshot``); a row's value is the mean accuracy over seeds.
        datasets, heads: restrict to these.

    Returns:
        Tidy: model, y_stage ("fewshot"), y_dataset, y_head, y_shots, y_metric ("accuracy"), value.
    """
    rows = fewshot
    if "stage" in rows:
        rows = rows[rows["stage"] == "fewshot"]
    if "status" in rows:
        rows = rows[rows["status"].fillna("ok") == "ok"]
    rows = rows[rows["value"].notna()]
    if datasets is not None:
        rows = rows[rows["dataset"].isin(list(datasets))]
    if heads is not None:
        rows = rows[rows["head"].isin(list(heads))]
    if rows.empty:
        raise InputError("No successful few-shot rows for these datasets and heads.")
    table = (
        rows.assign(shots=rows["shots"].astype(int))
        .groupby(["model", "dataset", "head", "shots"], sort=True)["value"]
        .mean()  # a setting written twice counts once
        .reset_index()
        .rename(columns={"dataset": "y_dataset", "head": "y_head", "shots": "y_shots"})
    )
    table["model"] = table["model"].astype(str)
    return _target_frame(table.assign(y_stage="fewshot", y_metric="accuracy"))


def _target_frame(frame: pd.DataFrame) -> pd.DataFrame:
    for column, dtype in _TARGET_DTYPES.items():
        if column not in frame:
            frame[column] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
    frame = frame.astype(_TARGET_DTYPES)
    return frame[["model", *TARGET_KEY, "value"]].reset_index(drop=True)


def alignment_correlations(
    alignment: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    covariate: pd.Series | None = None,
    metrics: Sequence[str] | None = None,
    transforms: Sequence[str] = TRANSFORMS,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = 0,
    correction: str = DEFAULT_CORRECTION,
) -> pd.DataFrame:
    """Every alignment metric, raw and z², against every outcome, without and with the covariate.

    Args:
        alignment: per-model alignment: index model, one column per metric.
        targets: outcomes from :func:`robustness_targets` / :func:`fewshot_targets`.
        covariate: ImageNet top-1 per model (Series indexed by model); models without it are
            left out of the partial correlations only. None: no partial correlations.
        metrics: the alignment metrics (columns of ``alignment``); default all.
        transforms: "raw" and/or "z2".
        n_bootstrap: resamples of models for the percentile bootstrap CI (0 = none).
        correction: p-value adjustment across the table, within each covariate.

    Returns:
        One row per correlation: the columns of :data:`CSV_COLUMNS`, then p_adj, boot_low,
        boot_high. r, CI and p are NaN where fewer than ``stats.MIN_MODELS`` models (plus one
        per covariate) have every value.
    """
    metrics = list(metrics or alignment.columns)
    unknown = [m for m in metrics if m not in alignment]
    if unknown:
        raise InputError(f"No alignment metric {unknown} in the per-model table; it has {list(alignment.columns)}.")
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad:
        raise InputError(f"Unknown transform {bad}; expected any of {list(TRANSFORMS)}.")
    covariates = [NO_COVARIATE] + ([TOP1_COVARIATE] if covariate is not None else [])
    rng = np.random.default_rng(random_state)
    records = []
    for target_key, target in targets.groupby(list(TARGET_KEY), sort=False, dropna=False):
        y_all = target.groupby("model")["value"].mean()
        for metric in metrics:
            x_all = alignment[metric].dropna()
            for cov_name in covariates:
                models = x_all.index.intersection(y_all.dropna().index)
                c = None
                if cov_name == TOP1_COVARIATE:
                    c_all = covariate.dropna()
                    models = models.intersection(c_all.index)
                    c = c_all.loc[models].to_numpy(float)
                x = x_all.loc[models].to_numpy(float)
                y = y_all.loc[models].to_numpy(float)
                for transform in transforms:
                    xt = _transform(x, transform)
                    records.append(
                        {
                            "x_metric": metric,
                            "transform": transform,
                            **dict(zip(TARGET_KEY, target_key)),
                            "covariate": cov_name,
                            **_correlate(xt, y, c, n_bootstrap=n_bootstrap, rng=rng),
                        }
                    )
    columns = [*CSV_COLUMNS, "p_adj", "boot_low", "boot_high"]
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return pd.DataFrame(columns=columns)
    table["p_adj"] = np.nan
    for _, index in table.groupby("covariate").groups.items():
        table.loc[index, "p_adj"] = stats.adjust_pvalues(table.loc[index, "p"], method=correction)
    table = table.astype({**_TARGET_DTYPES, "n_models": int})
    return table[columns]


def _transform(x: np.ndarray, transform: str) -> np.ndarray:
    if transform == "raw" or len(x) < 2 or np.ptp(x) == 0:
        return x  # too few or constant: the correlation comes out NaN either way
    return stats.z2_transform(x)


def _correlate(x, y, covar, *, n_bootstrap: int, rng) -> dict:
    if covar is None:
        result = stats.correlation(x, y)
        boot = stats.bootstrap_correlation_ci(x, y, n_bootstrap=n_bootstrap, random_state=rng)
    else:
        result = stats.partial_correlation(x, y, covar)
        boot = stats.bootstrap_correlation_ci(x, y, covar, n_bootstrap=n_bootstrap, random_state=rng)
    return {
        "r": result["r"],
        "ci_low": result["ci_low"],
        "ci_high": result["ci_high"],
        "p": result["p"],
        "n_models": int(result["n"]),
        "boot_low": boot[0],
        "boot_high": boot[1],
    }


def side_by_side(long: pd.DataFrame, *, drop: Sequence[str] = ()) -> pd.DataFrame:
    """The long table as the report shows it: raw and z² of each pair in adjacent rows, the
    partial correlation (covariate ImageNet top-1) in columns beside the plain one.

    Returns:
        x_metric, transform, the y columns (less ``drop``), n_models, r, ci_low, ci_high, p,
        p_adj, boot_low, boot_high [, n_partial, r_partial, ci_partial_low, ci_partial_high,
        p_partial, p_partial_adj, boot_partial_low, boot_partial_high].
    """
    keys = [k for k in KEY if k != "covariate"]
    values = ["n_models", "r", "ci_low", "ci_high", "p", "p_adj", "boot_low", "boot_high"]
    plain = long[long["covariate"] == NO_COVARIATE][keys + values]
    partial = long[long["covariate"] == TOP1_COVARIATE]
    out = plain
    if len(partial):
        renamed = {
            "n_models": "n_partial",
            "r": "r_partial",
            "ci_low": "ci_partial_low",
            "ci_high": "ci_partial_high",
            "p": "p_partial",
            "p_adj": "p_partial_adj",
            "boot_low": "boot_partial_low",
            "boot_high": "boot_partial_high",
        }
        out = plain.merge(partial[keys + values].rename(columns=renamed), on=keys, how="left")
    order = ["y_stage", "y_dataset", "y_head", "y_shots", "y_metric", "x_metric", "transform"]
    out = out.sort_values(order, kind="stable", key=_sort_key).reset_index(drop=True)
    return out.drop(columns=[c for c in ("y_stage", *drop) if c in out])


def _sort_key(column: pd.Series) -> pd.Series:
    if column.name == "x_metric":
        return column.map({m: i for i, m in enumerate(DEFAULT_METRICS)}).fillna(len(DEFAULT_METRICS))
    return column


def csv_rows(*tables: pd.DataFrame) -> pd.DataFrame:
    """The rows of correlations.csv: the long tables' correlations, each once, in CSV_COLUMNS."""
    frames = [t[list(CSV_COLUMNS)] for t in tables if t is not None and len(t)]
    if not frames:
        return pd.DataFrame(columns=list(CSV_COLUMNS))
    table = pd.concat(frames, ignore_index=True).astype({**_TARGET_DTYPES, "n_models": int})
    # Figure 3 right and Figure 4 right can show the same correlation: one row each
    return table.drop_duplicates(list(KEY), keep="first").reset_index(drop=True)


def raw_vs_z2(long: pd.DataFrame, findings: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The paper's comparison of raw and z² alignment: mean |r| of each, per kind of outcome.

    Kinds: adversarial (ImageNet-A), domain shift (ImageNet-R, -Sketch), few-shot.

    Args:
        long: from :func:`alignment_correlations` (raw and z² rows).
        findings: kind -> what the paper reports for it (shown in a ``paper`` column).

    Returns:
        kind, x_metric, covariate, n_pairs, mean_abs_r_raw, mean_abs_r_z2, z2_stronger
        (pairs where |r| of z² exceeds that of raw), paper.
    """
    rows = long.dropna(subset=["r"])
    kind = rows["y_dataset"].map(KIND).where(rows["y_stage"] == "robustness", "few-shot")
    rows = rows.assign(kind=kind, abs_r=rows["r"].abs())
    pair = ["kind", "x_metric", "covariate", *TARGET_KEY]
    wide = rows.pivot_table(index=pair, columns="transform", values="abs_r", aggfunc="first", dropna=False)
    wide = wide.dropna(subset=[t for t in TRANSFORMS if t in wide]).reset_index()
    if wide.empty or not set(TRANSFORMS) <= set(wide.columns):
        return pd.DataFrame(
            columns=["kind", "x_metric", "covariate", "n_pairs", "mean_abs_r_raw", "mean_abs_r_z2", "z2_stronger"]
        )
    table = (
        wide.assign(stronger=wide["z2"] > wide["raw"])
        .groupby(["kind", "x_metric", "covariate"], sort=False)
        .agg(
            n_pairs=("raw", "size"),
            mean_abs_r_raw=("raw", "mean"),
            mean_abs_r_z2=("z2", "mean"),
            z2_stronger=("stronger", "sum"),
        )
        .reset_index()
    )
    order = {
        "kind": {k: i for i, k in enumerate(("adversarial", "domain shift", "few-shot"))},
        "covariate": {NO_COVARIATE: 0, TOP1_COVARIATE: 1},
    }
    table = table.sort_values(
        ["kind", "covariate", "x_metric"], kind="stable", key=lambda s: s.map(order[s.name]) if s.name in order else s
    )
    table["z2_stronger"] = table["z2_stronger"].astype(int)
    if findings:
        table["paper"] = table["kind"].map(findings).fillna("")
    return table.reset_index(drop=True)


__all__ = [
    "CSV_COLUMNS",
    "KEY",
    "NO_COVARIATE",
    "TOP1_COVARIATE",
    "TRANSFORMS",
    "alignment_correlations",
    "csv_rows",
    "fewshot_targets",
    "raw_vs_z2",
    "robustness_targets",
    "side_by_side",
]
