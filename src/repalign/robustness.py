"""ImageNet robustness results published by timm, joined to models on canonical ids.

timm (PyTorch Image Models) publishes, per pretrained model, top-1/top-5 accuracy on
ImageNet and on three out-of-distribution test sets: ImageNet-A (natural adversarial
examples), ImageNet-R (renditions) and ImageNet-Sketch. ImageNet-A and ImageNet-R are
scored on their **200-class subsets** (the logits of the other 800 classes are masked),
so their numbers are not comparable to 1000-class accuracies.

Two snapshots of timm's ``results/`` folder are supported:

``timm-2022-07-27`` (default, the snapshot of the paper)
    Pre-0.9 *legacy* names (``resnet50``, ``ssl_resnet50``, ``tf_efficientnet_b0_ns``),
    one row per model.
``timm-2025-10-30``
    ``arch.tag`` names (``resnet50.a1_in1k``), often several rows per model evaluated at
    different image sizes. We take the row at the model's *default* size, i.e. timm's
    ``pretrained_cfg.input_size`` -- the size the embedding pipeline feeds the model. In
    this snapshot that is always the smallest evaluated size (the larger one is timm's
    ``test_input_size``); ``tests/test_robustness.py`` checks this against timm.

Names are resolved both ways: a legacy name finds its row in the 2025 snapshot through
timm's deprecation map (``ssl_resnet50`` -> ``resnet50.fb_ssl_yfcc100m_ft_in1k``) or the
architecture's default tag (``resnet50`` -> ``resnet50.a1_in1k``), and an ``arch.tag`` name
finds its legacy row in the 2022 snapshot by the reverse of the same maps. timm is imported
lazily for these maps and the canonical ``arch.tag`` ids; without timm, names are matched
verbatim and ids fall back to the snapshot's own names.

Models without a row (non-timm sources such as ``tflite:*`` or ``pixels``, random
weights, names a snapshot does not know) are never dropped silently: they are listed in
``table.attrs["missing"]`` with a reason in ``table.attrs["missing_reasons"]``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from repalign._options import DEFAULT_ROBUSTNESS_SOURCE as DEFAULT_SOURCE
from repalign._options import ROBUSTNESS_SOURCES
from repalign.errors import InputError, MissingDataError, unknown_name

log = logging.getLogger(__name__)

#: snapshot source name -> folder date in the mirror / registry dataset suffix
SOURCES: dict[str, str] = {source: source.removeprefix("timm-") for source in ROBUSTNESS_SOURCES}

#: robustness dataset -> results file of timm
DATASET_FILES: dict[str, str] = {
    "imagenet": "results-imagenet.csv",
    "imagenet-a": "results-imagenet-a.csv",
    "imagenet-r": "results-imagenet-r.csv",
    "imagenet-sketch": "results-sketch.csv",
}
ROBUSTNESS_DATASETS = tuple(DATASET_FILES)
OOD_DATASETS = ("imagenet-a", "imagenet-r", "imagenet-sketch")
ACCURACY_METRICS = ("top1", "top5")

SUBSET_NOTE = (
    "ImageNet-A and ImageNet-R are scored on their 200-class subsets (timm masks the other "
    "800 logits); their accuracies are not comparable to 1000-class ImageNet accuracies."
)

#: Legacy names whose meaning timm >= 0.9 changed without a deprecation entry.
#: vit_base_patch16_224_miil named the ImageNet-1k fine-tuned weights; the arch's new
#: default tag is the 21k-only pretraining. gluon_xception65 was removed from timm.
_LEGACY_OVERRIDES: dict[str, str | None] = {
    "vit_base_patch16_224_miil": "vit_base_patch16_224_miil.in21k_ft_in1k",
    "gluon_xception65": None,
}

_NON_TIMM_PLAIN = {"pixels"}
_COLUMNS = ["model", "model_id", "dataset", "metric", "value", "param_count", "img_size", "snapshot_name"]


def parse_param_count(value: object) -> float:
    """Millions of parameters from timm's ``param_count`` cell ("25.56", "1,014.45") -> float.

    Raises:
        InputError: for anything that is not a number with optional thousands commas.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if not re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d+)?|\d+(\.\d+)?", text):
        raise InputError(f"param_count {value!r} is not a number like '25.56' or '1,014.45'.")
    return float(text.replace(",", ""))


def snapshot_dir(source: str = DEFAULT_SOURCE) -> Path:
    """Folder of a timm results snapshot, every file verified by the data registry.

    The registry copies it from ``$REPALIGN_MIRROR/timm_results/<date>/`` or downloads it
    from timm's GitHub at the pinned commit, checking sha256 either way.
    """
    from repalign.data import fetch

    date = _check_source(source)
    return Path(fetch(f"timm-results-{date}", progress=False))


@functools.lru_cache(maxsize=8)
def _read_results_file(path: str, mtime: float) -> pd.DataFrame:
    """One timm results CSV with ``param_count`` parsed; cached per (path, mtime)."""
    frame = pd.read_csv(path, dtype={"model": str, "param_count": str})
    missing = {"model", "top1", "top5", "param_count", "img_size"} - set(frame.columns)
    if missing:
        raise InputError(f"{path} is not a timm results file: columns {sorted(missing)} are missing.")
    frame["param_count"] = frame["param_count"].map(parse_param_count)
    return frame


def load_results_file(source: str, dataset: str) -> pd.DataFrame:
    """All rows of one results file of a snapshot (several rows per model in 2025).

    Returns the CSV's columns (model, top1, top5, param_count as float, img_size, ...).
    """
    if dataset not in DATASET_FILES:
        raise unknown_name("robustness dataset", dataset, DATASET_FILES)
    path = snapshot_dir(source) / DATASET_FILES[dataset]
    if not path.is_file():
        raise MissingDataError(f"{path} is missing from the timm results snapshot {source}.")
    return _read_results_file(str(path), path.stat().st_mtime).copy()


def _default_size_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per model: the smallest evaluated image size (= timm's default input size)."""
    frame = frame.sort_values(["model", "img_size"], kind="stable")
    return frame.drop_duplicates("model", keep="first").set_index("model")


def split_model_name(name: str) -> tuple[str, str, str | None]:
    """``"timm:resnet50@random"`` -> ``("timm", "resnet50", "random")``; plain names are timm's."""
    text = str(name).strip()
    if not text:
        raise InputError("Empty model name in the robustness join.")
    source, sep, rest = text.partition(":")
    if not sep:
        source, rest = ("pixels" if text in _NON_TIMM_PLAIN else "timm"), text
    base, _, variant = rest.partition("@")
    return source, base, (variant or None)


# -- timm name knowledge (optional) ---------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _timm_names():
    """(deprecated legacy -> arch.tag map, default-tag function) from timm, or None without timm."""
    try:
        import timm.models
        from timm.models._registry import get_deprecated_models  # stable since timm 0.9
    except ImportError:
        log.info("timm is not installed: robustness ids fall back to the snapshot's names")
        return None
    deprecated = {k: v for k, v in get_deprecated_models().items() if v}

    def default_tag(arch: str) -> str | None:
        try:
            cfg = timm.models.get_pretrained_cfg(arch)
        except (RuntimeError, KeyError, ValueError):
            return None
        return getattr(cfg, "tag", None) if cfg is not None else None

    return deprecated, functools.lru_cache(maxsize=None)(default_tag)


def canonical_timm_id(name: str) -> str:
    """``arch.tag`` id of a timm name (legacy names resolved); the name itself without timm."""
    if name in _LEGACY_OVERRIDES and _LEGACY_OVERRIDES[name]:
        return _LEGACY_OVERRIDES[name]
    knowledge = _timm_names()
    if knowledge is None or "." in name:
        return name
    deprecated, default_tag = knowledge
    name = deprecated.get(name, name)  # some targets are bare archs (xception -> legacy_xception)
    if "." in name:
        return name
    tag = default_tag(name)
    return f"{name}.{tag}" if tag else name


def _legacy_candidates(name: str) -> list[str]:
    """Names to try in a legacy-named snapshot (2022) for a timm model name."""
    if "." not in name:
        return [name]
    candidates = [name]
    candidates += [legacy for legacy, new in _LEGACY_OVERRIDES.items() if new == name]
    knowledge = _timm_names()
    if knowledge is not None:
        deprecated, default_tag = knowledge
        candidates += [legacy for legacy, new in deprecated.items() if new == name]
        arch, _, tag = name.partition(".")
        if default_tag(arch) == tag:
            candidates.append(arch)
    return candidates


def _tagged_candidates(name: str) -> list[str]:
    """Names to try in an ``arch.tag``-named snapshot (2025) for a timm model name."""
    if "." in name:
        return [name]
    if name in _LEGACY_OVERRIDES:
        override = _LEGACY_OVERRIDES[name]
        return [override] if override else []
    canonical = canonical_timm_id(name)
    return [canonical] if canonical != name else [name]


# -- the join ----------------------------------------------------------------------------------
def robustness_table(models: Sequence[str] | Iterable[str], *, source: str = DEFAULT_SOURCE) -> pd.DataFrame:
    """Published ImageNet / ImageNet-A / -R / -Sketch accuracies of ``models``.

    Args:
        models: model names as in a study ("timm:resnet50", "resnet50", "tflite:...").
        source: "timm-2022-07-27" (the paper's snapshot) or "timm-2025-10-30".

    Returns:
        Long DataFrame, one row per (model, dataset, metric) found, with columns
        model (as given), model_id ("timm:arch.tag"), dataset ("imagenet", "imagenet-a",
        "imagenet-r", "imagenet-sketch"), metric ("top1", "top5"), value (percent),
        param_count (millions, float), img_size, snapshot_name (the row's name in the CSV).
        ``attrs``: ``missing`` (names without any row), ``missing_reasons`` (name -> why),
        ``incomplete`` (name -> datasets without a row, for models found in some files),
        ``source`` and ``note`` (the 200-class subset caveat of ImageNet-A/R).
    """
    _check_source(source)
    names = list(dict.fromkeys(str(m) for m in models))  # keep order, drop repeats
    tables = {dataset: _default_size_rows(load_results_file(source, dataset)) for dataset in DATASET_FILES}
    legacy = source == "timm-2022-07-27"

    records: list[dict] = []
    reasons: dict[str, str] = {}
    expected_missing: list[str] = []
    incomplete: dict[str, list[str]] = {}
    for name in names:
        origin, base, variant = split_model_name(name)
        if origin != "timm":
            reasons[name] = f"not a timm model (source '{origin}'): timm publishes results for its own models only"
            expected_missing.append(name)
            continue
        if variant is not None:
            reasons[name] = f"variant '@{variant}' (e.g. random weights) has no published results"
            expected_missing.append(name)
            continue
        candidates = _legacy_candidates(base) if legacy else _tagged_candidates(base)
        found_in: list[str] = []
        for dataset, table in tables.items():
            row_name = next((c for c in candidates if c in table.index), None)
            if row_name is None:
                continue
            found_in.append(dataset)
            row = table.loc[row_name]
            for metric in ACCURACY_METRICS:
                records.append(
                    {
                        "model": name,
                        "model_id": "timm:" + canonical_timm_id(row_name),
                        "dataset": dataset,
                        "metric": metric,
                        "value": float(row[metric]),
                        "param_count": float(row["param_count"]),
                        "img_size": int(row["img_size"]),
                        "snapshot_name": row_name,
                    }
                )
        if not found_in:
            if not candidates:  # a legacy name timm dropped (see _LEGACY_OVERRIDES)
                reasons[name] = f"removed from timm >= 0.9, so the {source} snapshot has no row for it"
            else:
                reasons[name] = f"no row in the {source} snapshot (names tried: {', '.join(candidates)})"
        elif len(found_in) < len(tables):
            incomplete[name] = [d for d in tables if d not in found_in]

    table = pd.DataFrame.from_records(records, columns=_COLUMNS)
    table = table.astype({"img_size": "Int64"}) if len(table) else table
    missing = [n for n in names if n in reasons]
    # non-timm sources and random weights are expected to lack rows; a timm name is not
    unexpected = [n for n in missing if n not in expected_missing]
    if unexpected:
        log.warning(
            "%d of %d models have no %s robustness results: %s",
            len(unexpected),
            len(names),
            source,
            ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""),
        )
    if expected_missing:
        log.info("no published robustness results (not timm-published models): %s", ", ".join(expected_missing))
    for name, datasets in incomplete.items():
        log.warning("model %s has no %s row for %s", name, source, ", ".join(datasets))
    table.attrs.update(
        missing=missing,
        missing_reasons={n: reasons[n] for n in missing},
        incomplete=incomplete,
        source=source,
        note=SUBSET_NOTE,
    )
    return table


def pretrain_metadata(source: str = "timm-2025-10-30") -> dict[str, str]:
    """timm's ``model_metadata-in1k.csv``: legacy model name -> pretraining data label.

    Labels: "in1k", "in1k-dist" (distilled), "in21k", "jft300m-ns", "ig1b-wsl", ... Only the
    2025 snapshot has this file; other sources return an empty dict.
    """
    path = snapshot_dir(source) / "model_metadata-in1k.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str)
    return dict(zip(frame["model"], frame["pretrain"]))


def to_result_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`robustness_table` in the study schema (stage "robustness").

    Missing models become ``status="skipped"`` rows whose ``error`` is the reason, so a
    study records them instead of dropping them.
    """
    from repalign.schema import conform

    ok = table[["model", "model_id", "dataset", "metric", "value"]].assign(stage="robustness", status="ok")
    skipped = pd.DataFrame(
        {
            "model": list(table.attrs.get("missing_reasons", {})),
            "error": list(table.attrs.get("missing_reasons", {}).values()),
        }
    ).assign(stage="robustness", status="skipped")
    return conform(pd.concat([ok, skipped], ignore_index=True))


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise unknown_name("robustness source", source, SOURCES)
    return SOURCES[source]
