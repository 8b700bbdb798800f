"""Which model similarity function the statistics use, and how much the choice matters.

A study may compute alignment with several similarity functions (rows carry ``similarity``).
The statistics use the first configured one (``config["alignment"]["similarity"]``, a name or
a list); :func:`sensitivity_table` says how far the model orderings agree between each pair
of similarity functions: the Spearman rank correlation across models of each metric's
per-model alignment (averaged over the same domains).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import pandas as pd

from repalign.errors import InputError


def configured_similarities(config: Mapping[str, Any]) -> list[str]:
    """The study's similarity functions in config order (``similarity`` may be a name or a list)."""
    value = (config.get("alignment") or {}).get("similarity")
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else list(value)
    return list(dict.fromkeys(str(v) for v in values))


def present_similarities(alignment: pd.DataFrame) -> list[str]:
    """Similarity functions of the successful alignment rows, in order of first appearance."""
    if "similarity" not in alignment or alignment.empty:
        return []
    return list(dict.fromkeys(str(s) for s in alignment["similarity"].dropna()))


def primary_similarity(config: Mapping[str, Any], alignment: pd.DataFrame) -> str | None:
    """The similarity function of the statistics: the first configured one that has rows,
    else the one with most rows; None when the rows carry none."""
    present = present_similarities(alignment)
    for name in configured_similarities(config):
        if name in present:
            return name
    if not present:
        return None
    return str(alignment["similarity"].dropna().astype(str).mode().iloc[0])


def alignment_by_similarity(alignment: pd.DataFrame, similarities: Sequence[str]) -> pd.DataFrame:
    """Per-model alignment (averaged over the domains) for each similarity function.

    Returns:
        Tidy DataFrame: similarity, model, metric, value, n_datasets; ``attrs["domains"]``
        maps each similarity to the domains averaged, ``attrs["dropped"]`` to the models left out.
    """
    from repalign.report import summaries

    frames = []
    domains: dict[str, list[str]] = {}
    dropped: dict[str, list[str]] = {}
    for name in similarities:
        tidy = summaries.model_alignment(alignment, similarity=name)
        domains[name] = list(tidy.attrs.get("domains", []))
        dropped[name] = list(tidy.attrs.get("dropped", []))
        frames.append(tidy.assign(similarity=name))
    if not frames:
        raise InputError("No similarity functions to compare.")
    table = pd.concat(frames, ignore_index=True)[["similarity", "model", "metric", "value", "n_datasets"]]
    table.attrs.update(domains=domains, dropped=dropped)
    return table


def sensitivity_table(by_similarity: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation of the model orderings between each pair of similarity functions.

    Args:
        by_similarity: from :func:`alignment_by_similarity`.

    Returns:
        One row per (metric, pair): metric, similarity_a, similarity_b, n_models, spearman_rho,
        ci_low, ci_high (Fisher z), p. Models with both values enter each row.
    """
    from repalign import stats

    records = []
    names = list(dict.fromkeys(by_similarity["similarity"]))
    for metric in dict.fromkeys(by_similarity["metric"]):
        values = by_similarity[by_similarity["metric"] == metric].pivot_table(
            index="model", columns="similarity", values="value", aggfunc="mean"
        )
        for a, b in combinations(names, 2):
            if a not in values or b not in values:
                continue
            both = values[[a, b]].dropna()
            result = stats.correlation(both[a], both[b], method="spearman")
            records.append(
                {
                    "metric": str(metric),
                    "similarity_a": a,
                    "similarity_b": b,
                    "n_models": int(result["n"]),
                    "spearman_rho": result["r"],
                    "ci_low": result["ci_low"],
                    "ci_high": result["ci_high"],
                    "p": result["p"],
                }
            )
    columns = ["metric", "similarity_a", "similarity_b", "n_models", "spearman_rho", "ci_low", "ci_high", "p"]
    return pd.DataFrame.from_records(records, columns=columns)


__all__ = [
    "alignment_by_similarity",
    "configured_similarities",
    "present_similarities",
    "primary_similarity",
    "sensitivity_table",
]
