"""Alignment across a model's layers: which depth is most human-aligned, and does the same
layer transfer best?

A study may read each model at several layers (``[models] layers``). The paper's statistics
across models use one layer per model -- the penultimate -- so the other report sections see
only that layer's rows (:func:`at_layer`), and this module adds the per-layer profile: for
every model, alignment and few-shot accuracy at each of its layers, from input to output.

Depth order: the named layers in the order the rows give them (the order the config lists
them; list them from input to output), then ``penultimate`` and ``logits``, which sit at the
end of every network. Layer names differ between architectures, so depth is compared within
a model, never across models.
"""

from __future__ import annotations

import pandas as pd

from repalign._options import DEFAULT_LAYER, DEFAULT_METRICS

#: presets, deepest last: every network ends with its penultimate features, then its logits
_DEEPEST = (DEFAULT_LAYER, "logits")
_STAGES = ("alignment", "fewshot")


def layers_of(rows: pd.DataFrame) -> list[str]:
    """The layers of a study's alignment and few-shot rows, in depth order (see the module)."""
    if "layer" not in rows or not len(rows):
        return []
    return depth_order(rows.loc[rows["stage"].isin(_STAGES), "layer"].dropna().astype(str))


def depth_order(layers) -> list[str]:
    """Unique layer names, named layers first (in the order given), then the presets."""
    seen = list(dict.fromkeys(str(layer) for layer in layers))
    return [layer for layer in seen if layer not in _DEEPEST] + [layer for layer in _DEEPEST if layer in seen]


def primary_layer(rows: pd.DataFrame) -> str | None:
    """The layer of the statistics across models: the penultimate (the paper's) when the
    study has it, else the deepest layer it read."""
    layers = layers_of(rows)
    if not layers:
        return None
    return DEFAULT_LAYER if DEFAULT_LAYER in layers else layers[-1]


def at_layer(results: pd.DataFrame, layer: str | None) -> pd.DataFrame:
    """``results`` without the alignment and few-shot rows of other layers (rows without a
    layer -- robustness, failures of a whole stage -- are kept)."""
    if layer is None:
        return results
    other = results["stage"].isin(_STAGES) & results["layer"].notna() & (results["layer"] != layer)
    return results[~other].reset_index(drop=True)


def layer_profile(
    alignment: pd.DataFrame,
    fewshot: pd.DataFrame | None = None,
    *,
    similarity: str | None = None,
    metric: str | None = None,
    head: str | None = None,
    shots: int | None = None,
    fewshot_datasets: list[str] | None = None,
) -> pd.DataFrame:
    """Alignment and few-shot accuracy of every (model, layer), layers in depth order.

    Args:
        alignment: successful alignment rows (study schema), every layer.
        fewshot: successful few-shot rows, every layer (None: no accuracy column values).
        similarity: the model similarity function of the alignment values (default: the
            first of the rows).
        metric: the alignment metric (default: the first of the paper's metrics present).
        head, shots, fewshot_datasets: which few-shot accuracy (default: the first head, the
            fewest shots, every dataset); averaged over the datasets.

    Returns:
        One row per (model, layer): model, layer, depth (1 = nearest the input, per model),
        alignment (mean over the human datasets), n_domains, accuracy, most_aligned and
        best_transfer (the model's top layer by each; ties: the deeper one loses), in the
        models' order of appearance.
    """
    rows = alignment
    if similarity is None and len(rows):
        similarity = str(rows["similarity"].dropna().iloc[0])
    if metric is None:
        present = set(rows["metric"].dropna().astype(str))
        metric = next((m for m in DEFAULT_METRICS if m in present), min(present) if present else None)
    rows = rows[(rows["similarity"] == similarity) & (rows["metric"] == metric)]
    per_domain = rows.groupby(["model", "layer", "dataset"], sort=False)["value"].mean()
    profile = (
        per_domain.groupby(level=["model", "layer"], sort=False).agg(alignment="mean", n_domains="size").reset_index()
    )
    accuracy = _accuracy(fewshot, head=head, shots=shots, datasets=fewshot_datasets)
    # the rows' order of models and layers (an outer merge sorts its keys)
    seen = list(dict.fromkeys([*zip(profile["model"], profile["layer"]), *zip(accuracy["model"], accuracy["layer"])]))
    profile = profile.merge(accuracy, on=["model", "layer"], how="outer").set_index(["model", "layer"])
    frames = []
    for model in dict.fromkeys(m for m, _ in seen):
        order = depth_order(layer for m, layer in seen if m == model)
        frame = profile.loc[[(model, layer) for layer in order]].reset_index()
        frame.insert(2, "depth", range(1, len(frame) + 1))
        frame["most_aligned"] = _is_top(frame["alignment"])
        frame["best_transfer"] = _is_top(frame["accuracy"])
        frames.append(frame)
    columns = ["model", "layer", "depth", "alignment", "n_domains", "accuracy", "most_aligned", "best_transfer"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)[columns]
    out.attrs.update(similarity=similarity, metric=metric, head=head, shots=shots)
    return out


def layer_summary(profile: pd.DataFrame) -> pd.DataFrame:
    """Per model: its most human-aligned layer, its best-transferring layer, and whether they
    are the same layer (null when the model has no few-shot accuracy)."""
    records = []
    for model, frame in profile.groupby("model", sort=False):
        aligned = frame[frame["most_aligned"]]
        transfer = frame[frame["best_transfer"]]
        record = {
            "model": model,
            "n_layers": len(frame),
            "most_aligned_layer": aligned["layer"].iloc[0] if len(aligned) else None,
            "depth": int(aligned["depth"].iloc[0]) if len(aligned) else None,
            "alignment": float(aligned["alignment"].iloc[0]) if len(aligned) else None,
            "best_transfer_layer": transfer["layer"].iloc[0] if len(transfer) else None,
            "accuracy": float(transfer["accuracy"].iloc[0]) if len(transfer) else None,
        }
        record["same_layer"] = (
            record["most_aligned_layer"] == record["best_transfer_layer"] if len(aligned) and len(transfer) else None
        )
        records.append(record)
    return pd.DataFrame.from_records(records).astype({"depth": "Int64", "same_layer": "boolean"})


def _accuracy(fewshot: pd.DataFrame | None, *, head, shots, datasets) -> pd.DataFrame:
    """Mean few-shot accuracy over ``datasets`` per (model, layer), at one head and shots."""
    if fewshot is None or not len(fewshot):
        return pd.DataFrame({"model": pd.Series(dtype="string"), "layer": pd.Series(dtype="string"), "accuracy": []})
    rows = fewshot
    head = head if head is not None else str(rows["head"].dropna().iloc[0])
    shots = shots if shots is not None else int(rows["shots"].min())
    rows = rows[(rows["head"] == head) & (rows["shots"] == shots)]
    if datasets:
        rows = rows[rows["dataset"].isin(datasets)]
    per_dataset = rows.groupby(["model", "layer", "dataset"], sort=False)["value"].mean()
    return per_dataset.groupby(level=["model", "layer"], sort=False).mean().rename("accuracy").reset_index()


def _is_top(values: pd.Series) -> pd.Series:
    """True at the first (shallowest) maximum; all False when every value is missing."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    top = pd.Series(False, index=values.index)
    if numbers.notna().any():
        top.loc[numbers.idxmax()] = True
    return top
