"""Correlation grids: every x column against every y column across models, with CIs and adjusted p-values."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from repalign._options import DEFAULT_CORRECTION, DEFAULT_N_BOOTSTRAP
from repalign.stats.bootstrap import bootstrap_correlation_ci
from repalign.stats.correlations import adjust_pvalues, correlation, partial_correlation

log = logging.getLogger(__name__)


def correlation_table(
    xs: pd.DataFrame,
    ys: pd.DataFrame,
    *,
    covar: pd.Series | None = None,
    method: str = "pearson",
    correction: str = DEFAULT_CORRECTION,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
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
    per_model: pd.DataFrame, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, random_state: int | None = 0
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
