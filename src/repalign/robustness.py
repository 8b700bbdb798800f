"""ImageNet robustness results published by timm, joined to models by their resolved id.

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

Identity: a model is ``repalign.models.resolve_model(name).resolved_id`` -- the same id the
study embeds, caches and reports (``timm:arch.tag``); there is no second name parser here.
The 2025 snapshot is keyed by that ``arch.tag``. The 2022 snapshot is keyed by legacy names;
its row is found through :func:`repalign.models.timm_source.legacy_names`, the reverse of the
models package's own legacy resolution. When no 2022 row describes the resolved weights but
the given legacy name has a row of its own (``gluon_xception65``, removed from timm and
embedded as its substitute ``xception65.tf_in1k``), that row is joined with
``weights_match = False``, so the study can tell, and leave out, results of other weights.

Models without a row (non-timm sources such as ``tflite:*`` or ``pixels``, random
weights, ids a snapshot does not have) are never dropped silently: they are listed in
``table.attrs["missing"]`` with a reason in ``table.attrs["missing_reasons"]``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from repalign._options import DEFAULT_ROBUSTNESS_SOURCE as DEFAULT_SOURCE
from repalign._options import ROBUSTNESS_SOURCES
from repalign.errors import InputError, MissingDataError, OptionalDependencyError, RepalignError, unknown_name

if TYPE_CHECKING:
    from repalign.models import ModelSpec

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

_COLUMNS = [
    "model",
    "model_id",
    "dataset",
    "metric",
    "value",
    "param_count",
    "img_size",
    "snapshot_name",
    "weights_match",
]


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


def _resolve(name: str) -> ModelSpec:
    """The model's spec from the models registry; timm is needed to resolve timm names."""
    from repalign.models import resolve_model

    try:
        return resolve_model(name)
    except RepalignError:
        raise
    except ImportError as exc:  # resolving a timm name imports timm (never downloads)
        raise OptionalDependencyError("timm", "torch", f"The robustness join of '{name}'") from exc


def _row_candidates(spec: ModelSpec, given: str, legacy: bool) -> list[tuple[str, bool]]:
    """``(snapshot row name, weights_match)`` to try, best first, for a resolved timm model.

    2025 rows are keyed by the resolved ``arch.tag`` itself. 2022 rows are keyed by legacy
    names: first those whose weights are the resolved id (the one the user gave first), then
    -- only if the user gave that legacy name -- a name resolved to a substitute, whose row
    describes other weights (``weights_match`` False).
    """
    if not legacy:
        return [(spec.arch, True)]
    from repalign.models.timm_source import legacy_names

    names = legacy_names(spec.arch)
    exact = sorted((n for n, same in names.items() if same), key=lambda n: n != given)  # stable: keeps order
    candidates = [(n, True) for n in exact]
    if names.get(given) is False:
        candidates.append((given, False))
    return candidates


# -- the join ----------------------------------------------------------------------------------
def robustness_table(models: Sequence[str] | Iterable[str], *, source: str = DEFAULT_SOURCE) -> pd.DataFrame:
    """Published ImageNet / ImageNet-A / -R / -Sketch accuracies of ``models``.

    Args:
        models: model names as in a study ("timm:resnet50", "timm:ssl_resnet50",
            "tflite:..."), resolved by :func:`repalign.models.resolve_model`.
        source: "timm-2022-07-27" (the paper's snapshot) or "timm-2025-10-30".

    Returns:
        Long DataFrame, one row per (model, dataset, metric) found, with columns
        model (as given), model_id (``resolve_model(model).resolved_id``, "timm:arch.tag"),
        dataset ("imagenet", "imagenet-a", "imagenet-r", "imagenet-sketch"), metric ("top1",
        "top5"), value (percent), param_count (millions, float), img_size, snapshot_name (the
        row's name in the CSV), weights_match (True when the row describes exactly the weights
        of model_id). ``attrs``: ``missing`` (names without any row), ``missing_reasons``
        (name -> why), ``incomplete`` (name -> datasets without a row, for models found in some
        files), ``weights_mismatch`` (name -> why its rows describe other weights), ``source``
        and ``note`` (the 200-class subset caveat of ImageNet-A/R).

    Raises:
        InputError / UnknownNameError: a name the models registry does not resolve.
        OptionalDependencyError: a timm name without timm installed.
    """
    from repalign.models import parse_model_name

    _check_source(source)
    names = list(dict.fromkeys(str(m) for m in models))  # keep order, drop repeats
    parsed = {name: parse_model_name(name) for name in names}  # a malformed name fails before any data is read
    tables = {dataset: _default_size_rows(load_results_file(source, dataset)) for dataset in DATASET_FILES}
    legacy = source == "timm-2022-07-27"

    records: list[dict] = []
    reasons: dict[str, str] = {}
    expected_missing: list[str] = []
    incomplete: dict[str, list[str]] = {}
    mismatched: dict[str, str] = {}
    for name in names:
        origin, given, variant, _seed = parsed[name]
        if origin != "timm":
            reasons[name] = f"not a timm model (source '{origin}'): timm publishes results for its own models only"
            expected_missing.append(name)
            continue
        if variant is not None:
            reasons[name] = f"variant '@{variant}' (e.g. random weights) has no published results"
            expected_missing.append(name)
            continue
        spec = _resolve(name)
        candidates = _row_candidates(spec, given, legacy)
        found_in: list[str] = []
        for dataset, table in tables.items():
            row_name, match = next(((c, m) for c, m in candidates if c in table.index), (None, None))
            if row_name is None:
                continue
            found_in.append(dataset)
            row = table.loc[row_name]
            if not match:
                note = spec.extra.get("note", "")
                mismatched[name] = (
                    f"row '{row_name}' of {source} describes the weights timm published under that name, "
                    f"not the embedded {spec.resolved_id}" + (f" ({note})" if note else "")
                )
            for metric in ACCURACY_METRICS:
                records.append(
                    {
                        "model": name,
                        "model_id": spec.resolved_id,
                        "dataset": dataset,
                        "metric": metric,
                        "value": float(row[metric]),
                        "param_count": float(row["param_count"]),
                        "img_size": int(row["img_size"]),
                        "snapshot_name": row_name,
                        "weights_match": bool(match),
                    }
                )
        if not found_in:
            tried = ", ".join(c for c, _ in candidates)
            why = f"names tried: {tried}" if tried else "no pre-0.9 timm name has these weights"
            reasons[name] = f"no row in the {source} snapshot for {spec.resolved_id} ({why})"
        elif len(found_in) < len(tables):
            incomplete[name] = [d for d in tables if d not in found_in]

    table = pd.DataFrame.from_records(records, columns=_COLUMNS)
    table = table.astype({"img_size": "Int64", "weights_match": bool}) if len(table) else table
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
    for name, why in mismatched.items():
        log.warning("robustness rows of %s describe other weights (weights_match=False): %s", name, why)
    table.attrs.update(
        missing=missing,
        missing_reasons={n: reasons[n] for n in missing},
        incomplete=incomplete,
        weights_mismatch=mismatched,
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
    study records them instead of dropping them. ``weights_match`` is kept (null on skipped
    rows): the report leaves rows of other weights out of its statistics.
    """
    from repalign.schema import conform

    ok = table[["model", "model_id", "dataset", "metric", "value", "weights_match"]]
    ok = ok.assign(stage="robustness", status="ok")
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
