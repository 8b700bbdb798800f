"""The study's tables, computed from result rows in the study schema.

Every function takes tidy rows (``StudyResults.alignment`` / ``.fewshot`` / ``.robustness``)
or the per-model tables derived from them, and returns a tidy DataFrame that the HTML
report renders and writes as CSV. Nothing here plots or writes files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from repalign import stats
from repalign._options import DEFAULT_CORRECTION, DEFAULT_METRICS, DEFAULT_N_BOOTSTRAP
from repalign.errors import InputError
from repalign.report import summaries
from repalign.report.correlations import ACCURACY_METRICS, OOD_DATASETS
from repalign.report.correlations import TOP1_COLUMN as COVARIATE


# ---------------------------------------------------------------------------------------------
# per-model inputs
# ---------------------------------------------------------------------------------------------
def alignment_per_model(alignment: pd.DataFrame, *, similarity: str | None = None) -> pd.DataFrame:
    """Alignment averaged over the same human datasets for every model.

    Args:
        alignment: alignment rows in the study schema.
        similarity: the model similarity function whose rows are used; default the only one,
            or the most frequent when the rows have several (the report passes the first
            configured one, :func:`repalign.report.similarity.primary_similarity`).

    Returns:
        DataFrame indexed by model, one column per metric; ``attrs``: ``domains`` (the human
        datasets averaged), ``dropped`` (models without all of them), ``similarity``.
    """
    rows = alignment
    if similarity is None and "similarity" in rows and rows["similarity"].nunique(dropna=True) >= 1:
        similarity = str(rows["similarity"].dropna().astype(str).mode().iloc[0])
    tidy = summaries.model_alignment(rows, similarity=similarity)
    table = summaries.wide(tidy)
    ordered = [m for m in DEFAULT_METRICS if m in table.columns]
    table = table[ordered + [c for c in table.columns if c not in ordered]]
    table.attrs["dropped"] = tidy.attrs.get("dropped", [])
    table.attrs["domains"] = tidy.attrs.get("domains", [])
    table.attrs["similarity"] = similarity
    return table


def with_domains(frame: pd.DataFrame, domains: Sequence[str]) -> pd.DataFrame:
    """``frame`` with the columns n_domains and domains ("peterson:animals, peterson:fruits"):
    which human datasets its alignment values average."""
    return frame.assign(n_domains=len(domains), domains=", ".join(domains))


def weights_mismatched(robustness: pd.DataFrame) -> list[str]:
    """Models whose robustness rows have ``weights_match`` False: the published numbers are of
    other weights than the ones the study embedded (see :mod:`repalign.robustness`)."""
    if "weights_match" not in robustness:
        return []
    rows = robustness[robustness["stage"] == "robustness"] if "stage" in robustness else robustness
    other = rows["weights_match"].astype("boolean").eq(False).fillna(False).astype(bool)
    return sorted(set(rows.loc[other, "model"].astype(str)))


def robustness_per_model(robustness: pd.DataFrame, *, include_mismatched: bool = False) -> pd.DataFrame:
    """Robustness rows -> DataFrame indexed by model, columns like "imagenet-a top1" (percent).

    Rows with ``weights_match`` False describe other weights than the embedded ones, so they
    are left out unless ``include_mismatched`` (:func:`weights_mismatched` names those models).
    """
    rows = robustness
    if "status" in rows:
        rows = rows[rows["status"].fillna("ok") == "ok"]
    rows = rows[rows["value"].notna()]
    mismatched = [] if include_mismatched else weights_mismatched(rows)
    rows = rows[~rows["model"].astype(str).isin(mismatched)]
    if rows.empty:
        left_out = f" (left out, of other weights than the embedded ones: {', '.join(mismatched)})"
        raise InputError(f"No robustness rows in this study{left_out if mismatched else ''}.")
    rows = rows.assign(key=rows["dataset"].astype(str) + " " + rows["metric"].astype(str))
    table = rows.pivot_table(index="model", columns="key", values="value", aggfunc="mean")
    table.columns = [str(c) for c in table.columns]
    table.index = table.index.astype(str)
    return table


# ---------------------------------------------------------------------------------------------
# Table 1 and Table 2
# ---------------------------------------------------------------------------------------------
def table1_group_robustness(groups: pd.DataFrame, robustness: pd.DataFrame) -> pd.DataFrame:
    """Table 1: mean OOD top-1/top-5 of the high/mid/low alignment groups, per metric.

    Args:
        groups: output of :func:`repalign.stats.select_groups` (metric, group, rank, model, value).
        robustness: per-model robustness (:func:`robustness_per_model`).

    Returns:
        One row per (metric, group): metric, group, n_models, mean_alignment, then one column per
        OOD accuracy ("imagenet-a top1", ...) holding the group mean (percent); a group member
        without robustness numbers is left out of the mean and counted in n_missing.
    """
    columns = [f"{d} {m}" for d in OOD_DATASETS for m in ACCURACY_METRICS if f"{d} {m}" in robustness]
    if not columns:
        raise InputError("The robustness rows hold no ImageNet-A/R/Sketch accuracies.")
    records = []
    for (metric, group), members in groups.groupby(["metric", "group"], sort=False):
        present = [m for m in members["model"] if m in robustness.index]
        record: dict[str, Any] = {
            "metric": metric,
            "group": group,
            "n_models": len(members),
            "n_missing": len(members) - len(present),
            "mean_alignment": float(members["value"].mean()),
        }
        for column in columns:
            record[column] = float(robustness.loc[present, column].mean()) if present else np.nan
        records.append(record)
    table = pd.DataFrame.from_records(records)
    order = {g: i for i, g in enumerate(stats.GROUPS)}
    return table.sort_values(
        ["metric", "group"], key=lambda s: s.map(order) if s.name == "group" else s, kind="stable"
    ).reset_index(drop=True)


def table1_bootstrap(
    groups: pd.DataFrame,
    robustness: pd.DataFrame,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Table 1 in long form with a bootstrap CI of each group mean (resampling the group's models).

    Returns:
        Tidy: metric, group, robustness ("imagenet-a top1", ...), n_models, mean, boot_low, boot_high.
    """
    columns = [f"{d} {m}" for d in OOD_DATASETS for m in ACCURACY_METRICS if f"{d} {m}" in robustness]
    rng = np.random.default_rng(random_state)
    records = []
    for (metric, group), members in groups.groupby(["metric", "group"], sort=False):
        present = [m for m in members["model"] if m in robustness.index]
        for column in columns:
            values = robustness.loc[present, column].dropna().to_numpy(float)
            low, high = stats.bootstrap_ci(np.mean, values, n_bootstrap=n_bootstrap, random_state=rng)
            records.append(
                {
                    "metric": metric,
                    "group": group,
                    "robustness": column,
                    "n_models": len(values),
                    "mean": float(values.mean()) if len(values) else np.nan,
                    "boot_low": low,
                    "boot_high": high,
                }
            )
    return pd.DataFrame.from_records(records)


def table2_robustness_correlations(
    alignment: pd.DataFrame,
    robustness: pd.DataFrame,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = 0,
    correction: str = DEFAULT_CORRECTION,
) -> pd.DataFrame:
    """Table 2: every alignment metric, raw and z², against each OOD accuracy, and the partial
    correlation controlling for ImageNet top-1 where the robustness rows have it.

    Returns:
        Long form, one row per correlation (:func:`repalign.report.correlations.alignment_correlations`);
        :func:`repalign.report.correlations.side_by_side` gives the table the report shows.
    """
    from repalign.report import correlations

    targets = correlations.robustness_targets(robustness)
    covar = robustness[COVARIATE] if COVARIATE in robustness else None
    return correlations.alignment_correlations(
        alignment, targets, covariate=covar, n_bootstrap=n_bootstrap, random_state=random_state, correction=correction
    )


# ---------------------------------------------------------------------------------------------
# few-shot (the data behind Figure 3, left)
# ---------------------------------------------------------------------------------------------
def fewshot_group_curves(groups: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Mean n-shot accuracy of each alignment group, with the SD across the group's models.

    Args:
        groups: from :func:`repalign.stats.select_groups`.
        accuracy: tidy accuracy of ONE few-shot dataset: model, head, shots, value.

    Returns:
        metric, group, head, shots, accuracy (mean), sd, n_models.
    """
    merged = groups[["metric", "group", "model"]].merge(accuracy, on="model", how="inner")
    curves = (
        merged.groupby(["metric", "group", "head", "shots"], sort=True)["value"]
        .agg(accuracy="mean", sd="std", n_models="count")
        .reset_index()
    )
    order = {g: i for i, g in enumerate(stats.GROUPS)}
    curves = curves.sort_values(
        ["metric", "group", "head", "shots"], kind="stable", key=lambda s: s.map(order) if s.name == "group" else s
    )
    return curves.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# family view
# ---------------------------------------------------------------------------------------------
_TRAINING_PREFIXES = (
    "ens_adv_",
    "adv_",
    "tf_",
    "gluon_",
    "ssl_",
    "swsl_",
    "ig_",
    "legacy_",
    "tv_",
    "jx_",
    "timm_",
    "fb_",
    "hf_",
)
# ImageNet-21k/22k (and its 12k subset) pretraining; BiT-M models were pretrained on 21k.
_IN21K = re.compile(r"in21k|in22k|in22ft1k|in21ft1k|in12k|(^|_)21k|(^|_)22k|bitm")
_DISTILLED = re.compile(r"distill|(^|[._])dist([._]|$)|_dist_|(^|[._])kd([._]|$)")
# a versioned family keeps its version ("mobilenetv3", "resnetv2"); else the leading letters
_FAMILY = re.compile(r"res2next|res2net|[a-z]+?v\d+(?=[_\d]|$)|[a-z]+")


@dataclass(frozen=True)
class Architecture:
    """What a model's name says about the network: family and training variants."""

    arch: str
    tag: str
    family: str
    distilled: bool = False
    in21k: bool = False
    pruned: bool = False
    random: bool = False  # untrained weights (``@random``)

    @property
    def variant(self) -> str:
        marks = (
            ("distilled", self.distilled),
            ("in21k", self.in21k),
            ("pruned", self.pruned),
            ("random", self.random),
        )
        return "+".join(name for name, on in marks if on) or "standard"


def parse_architecture(model_id: str, *, pretrain: str | None = None) -> Architecture:
    """Parse a timm architecture name ("deit_base_distilled_patch16_224.fb_in1k", "resnet50") into its family.

    Only for timm names (:func:`model_architecture` decides which names are): the family is
    the leading word of the architecture name after training-recipe prefixes (``tf_``,
    ``gluon_``, ``ssl_``, ...): "resnet50d" -> "resnet", "efficientnetv2_rw_s" ->
    "efficientnetv2", "vit_base_patch16_224" -> "vit". Variants: *distilled* (distilled
    architectures or ``dist``/``kd`` tags), *in21k* (pretrained on ImageNet-21k/22k or larger
    weakly-labelled sets before ImageNet-1k fine-tuning, incl. BiT-M), *pruned*. ``pretrain``
    (timm's model_metadata value, e.g. "in21k", "in1k-dist") overrides the name-based guess
    where given. A ``timm:`` prefix and an ``@random`` suffix are accepted.
    """
    text = str(model_id).strip().lower()
    source = text.split(":", 1)[0] if ":" in text else ""
    text = text.split(":", 1)[1] if ":" in text else text
    random = "@random" in text
    text = text.split("@", 1)[0].rsplit("/", 1)[-1]
    arch, _, tag = text.partition(".")
    core = arch
    stripped = True
    while stripped:
        stripped = False
        for prefix in _TRAINING_PREFIXES:
            if core.startswith(prefix) and len(core) > len(prefix):
                core, stripped = core[len(prefix) :], True
    match = _FAMILY.match(core)
    family = match.group(0) if match else (source or core)
    distilled = bool(_DISTILLED.search(arch) or _DISTILLED.search(tag))
    in21k = bool(_IN21K.search(text))
    if pretrain:
        distilled = distilled or "dist" in pretrain
        in21k = in21k or pretrain.startswith(("in21k", "ig1b", "jft", "yfc"))
    return Architecture(
        arch=arch, tag=tag, family=family, distilled=distilled, in21k=in21k, pruned="pruned" in text, random=random
    )


def model_architecture(model: str, *, pretrain: Mapping[str, str] | None = None) -> Architecture:
    """Family and variant of a study's model, from the models registry's identity.

    A timm model is resolved (``repalign.models.resolve_model``) and its architecture name
    parsed (:func:`parse_architecture`); any other source is its own family, with the
    source's name of the model as ``arch`` ("tflite:mobilenet_v1_0.25_128_quant" -> family
    "tflite"), because other sources' names do not follow timm's naming. A name the registry
    cannot resolve (e.g. a model removed since the study ran) is treated the same way by its
    ``source:`` prefix; a name without one is read as a timm architecture name.
    """
    from repalign.errors import RepalignError
    from repalign.models import resolve_model

    name = str(model).strip()
    pretrain = pretrain or {}
    legacy = name.split(":", 1)[-1].split("@", 1)[0]  # timm's metadata is keyed by (legacy) names
    label = pretrain.get(legacy) or pretrain.get(name)
    try:
        spec = resolve_model(name)
    except (RepalignError, ImportError, ValueError):
        source, _, rest = name.partition(":") if ":" in name else ("", "", name)
        if source in ("", "timm"):
            return parse_architecture(name, pretrain=label)
        return Architecture(arch=rest, tag="", family=source, random="@random" in rest)
    if spec.source == "timm":
        info = parse_architecture(spec.arch, pretrain=label)
        return replace(info, random=spec.variant == "random")
    return Architecture(arch=spec.arch, tag="", family=spec.source, random=spec.variant == "random")


def family_table(
    alignment: pd.DataFrame,
    fewshot: pd.DataFrame | None = None,
    *,
    pretrain: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Alignment and few-shot accuracy per architecture family, with variant marks.

    Args:
        alignment: per-model alignment (index model, one column per metric).
        fewshot: few-shot accuracy per model (index model, one column per dataset/setting,
            e.g. "1-shot mnist"), optional.
        pretrain: optional model/arch name -> pretraining label (timm model_metadata).

    Returns:
        (per_model, per_family): per_model has model, family, arch, variant, distilled, in21k,
        pruned, random, the alignment metrics and the few-shot columns; per_family aggregates
        it by (family, variant): n_models and the mean of each value column.
    """
    records = []
    for model in alignment.index:
        info = model_architecture(str(model), pretrain=pretrain)
        record = {
            "model": model,
            "family": info.family,
            "arch": info.arch,
            "variant": info.variant,
            "distilled": info.distilled,
            "in21k": info.in21k,
            "pruned": info.pruned,
            "random": info.random,
        }
        record.update({metric: float(alignment.loc[model, metric]) for metric in alignment.columns})
        if fewshot is not None:
            record.update({c: float(fewshot[c].get(model, np.nan)) for c in fewshot.columns})
        records.append(record)
    per_model = pd.DataFrame.from_records(records)
    value_columns = [*alignment.columns] + ([*fewshot.columns] if fewshot is not None else [])
    per_family = (
        per_model.groupby(["family", "variant"], sort=True)
        .agg(n_models=("model", "count"), **{c: (c, "mean") for c in value_columns})
        .reset_index()
    )
    per_family = per_family.sort_values(["family", "variant"], kind="stable").reset_index(drop=True)
    return per_model, per_family


# ---------------------------------------------------------------------------------------------
# failures and provenance
# ---------------------------------------------------------------------------------------------
def failures_table(results: pd.DataFrame) -> pd.DataFrame:
    """Failed and skipped rows: model, stage, dataset, metric, status, error, unit."""
    if "status" not in results:
        return pd.DataFrame(columns=["model", "stage", "dataset", "metric", "status", "error", "unit"])
    rows = results[results["status"].isin(["failed", "skipped"])]
    columns = [c for c in ("model", "stage", "dataset", "metric", "status", "error", "unit") if c in rows]
    return rows[columns].drop_duplicates().reset_index(drop=True)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> sorted (dotted.key, value text) pairs; lists of scalars joined by ", "."""
    items: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            items.append((name, ", ".join(str(v) for v in value)))
        elif isinstance(value, (list, tuple)):
            for i, element in enumerate(value):
                if isinstance(element, Mapping):
                    items.extend(flatten(element, prefix=f"{name}[{i}]."))
                else:
                    items.append((f"{name}[{i}]", str(element)))
        else:
            items.append((name, "" if value is None else str(value)))
    return items


def provenance_table(
    config: Mapping[str, Any], manifest: Mapping[str, Any], files: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Config, manifest (package versions, commit, hardware, runs) and file checksums as rows.

    Returns:
        DataFrame: section ("config" | "manifest" | "report" | "checksum"), key, value.
    """
    from repalign.store import package_versions  # report-time versions beside run-time ones

    rows = [("config", k, v) for k, v in flatten(config)]
    rows += [("manifest", k, v) for k, v in flatten(manifest)]
    rows += [("report", f"packages.{k}", v or "not installed") for k, v in package_versions().items()]
    rows += [("checksum", k, v) for k, v in sorted((files or {}).items())]
    return pd.DataFrame(rows, columns=["section", "key", "value"])
