"""Per-model summaries of study result rows: alignment averaged over human datasets,
few-shot accuracy averaged over few-shot datasets, and the wide per-model tables the
statistics take. They know the study schema, so they live with the report, not in stats.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from repalign.errors import InputError

log = logging.getLogger(__name__)


def model_alignment(
    alignment: pd.DataFrame, *, similarity: str | None = None, require_all_datasets: bool = True
) -> pd.DataFrame:
    """Alignment per model and metric, averaged over the same human datasets for every model.

    Args:
        alignment: rows in the study schema with ``stage == "alignment"`` (others are ignored);
            columns used: model, dataset, metric, similarity, value, status (if present).
        similarity: keep rows of this model similarity function only; ``None`` requires that
            the rows use a single one.
        require_all_datasets: keep only models that have every (dataset, metric) pair of the
            rows, so that every model's average is over the same domains (an average over
            fewer or other domains is not comparable); dropped names are logged and listed in
            ``attrs["dropped"]``.

    Returns:
        Tidy DataFrame: model, metric, value (mean over datasets), n_datasets.
        ``attrs["domains"]`` lists the human datasets averaged (sorted), ``attrs["dropped"]``
        the models left out.
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
    # a (model, dataset, metric) written twice (e.g. by two runs) counts once
    per_domain = rows.groupby(["model", "dataset", "metric"], sort=True)["value"].mean().reset_index()
    dropped: list[str] = []
    if require_all_datasets:
        expected = set(per_domain[["dataset", "metric"]].itertuples(index=False, name=None))
        have = per_domain.groupby("model")[["dataset", "metric"]].apply(
            lambda g: set(g.itertuples(index=False, name=None))
        )
        dropped = sorted(str(m) for m, pairs in have.items() if pairs != expected)
        per_domain = per_domain[~per_domain["model"].isin(dropped)]
        if dropped:
            log.warning(
                "alignment: %d models lack some human datasets and are left out: %s",
                len(dropped),
                ", ".join(dropped[:10]),
            )
    grouped = per_domain.groupby(["model", "metric"], sort=True)["value"]
    table = grouped.agg(value="mean", n_datasets="count").reset_index()
    table = table.reset_index(drop=True).astype({"model": "string", "metric": "string"})
    table.attrs["dropped"] = dropped
    table.attrs["domains"] = sorted(str(d) for d in per_domain["dataset"].unique())
    return table


def alignment_per_domain(alignment: pd.DataFrame) -> pd.DataFrame:
    """Every model's alignment on every human dataset, one column per metric (not averaged).

    Returns:
        DataFrame: model, similarity, dataset, then one column per metric; the table a study
        with too few models for statistics still shows.
    """
    rows = _ok_rows(alignment, "alignment")
    if rows.empty:
        raise InputError("No successful alignment rows to summarize.")
    rows = rows.assign(similarity=rows["similarity"].astype("string").fillna("")) if "similarity" in rows else rows
    keys = ["model", "similarity", "dataset"] if "similarity" in rows else ["model", "dataset"]
    table = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean").reset_index()
    table.columns.name = None
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


#: the columns of :func:`alignment_with_ceilings`
CEILING_COLUMNS = [
    "dataset",
    "metric",
    "model",
    "value",
    "ci_low",
    "ci_high",
    "ceiling_low",
    "ceiling_high",
    "of_ceiling",
]


def alignment_with_ceilings(alignment: pd.DataFrame, *, similarity: str | None = None) -> pd.DataFrame:
    """Every model's alignment on the human datasets whose noise ceiling is known, with it.

    ``of_ceiling`` = value / ceiling_high: the alignment as a fraction of the upper bound of
    the noise ceiling (at least that fraction of what the human data allows). Rows without a
    ceiling (no repeated judgments; stores written before the ceiling columns) are left out.

    Returns:
        DataFrame with :data:`CEILING_COLUMNS`, sorted by dataset, metric and value (highest
        first); empty when no row has a ceiling.
    """
    rows = _ok_rows(alignment, "alignment")
    if "ceiling_high" not in rows or "ceiling_low" not in rows:
        return pd.DataFrame(columns=CEILING_COLUMNS)
    if similarity is not None and "similarity" in rows:
        rows = rows[rows["similarity"] == similarity]
    rows = rows[rows["ceiling_high"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=CEILING_COLUMNS)
    numbers = ["value", "ci_low", "ci_high", "ceiling_low", "ceiling_high"]
    # a (model, dataset, metric) written twice (e.g. by two runs) counts once
    table = rows.groupby(["dataset", "metric", "model"], sort=True)[numbers].mean().reset_index()
    table["of_ceiling"] = table["value"] / table["ceiling_high"]
    table = table.sort_values(["dataset", "metric", "value"], ascending=[True, True, False], kind="stable")
    return table[CEILING_COLUMNS].reset_index(drop=True)


def fewshot_per_model(fewshot: pd.DataFrame) -> pd.DataFrame:
    """Every model's few-shot accuracy per dataset and head, one column per shots (not averaged).

    ``value`` of a few-shot row is already the mean over seeds; duplicates are averaged.

    Returns:
        DataFrame: model, dataset, head, then columns "1-shot", "5-shot", ...
    """
    rows = _ok_rows(fewshot, "fewshot")
    if rows.empty:
        raise InputError("No successful few-shot rows to summarize.")
    rows = rows.assign(shots=rows["shots"].astype(int))
    table = rows.pivot_table(index=["model", "dataset", "head"], columns="shots", values="value", aggfunc="mean")
    table.columns = [f"{int(c)}-shot" for c in table.columns]
    return table.reset_index().sort_values(["model", "dataset", "head"], kind="stable").reset_index(drop=True)


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
    if "layer" in rows and rows["layer"].nunique(dropna=True) > 1:
        # a per-model summary of several layers would average them: one layer per model, the
        # statistics' (penultimate); the per-layer profile is repalign.report.layers
        from repalign.report import layers

        rows = layers.at_layer(rows, layers.primary_layer(rows))
    return rows[rows["value"].notna()]
