"""The paper's groups: the k models with the highest, nearest-the-mean and lowest value."""

from __future__ import annotations

import logging

import pandas as pd

from repalign.errors import InputError

log = logging.getLogger(__name__)


GROUPS = ("high", "mid", "low")


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
