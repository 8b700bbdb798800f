"""The few-shot heads of several units, fitted together once their embeddings are ready.

Every model of a study is scored on the same splits (``plan.fewshot_inputs`` draws them from
the config alone), so the heads of several models can train as one batched program
(:func:`repalign.fewshot.evaluate_fewshot_many`: 4x the per-fit loops for a 10-model grid on
2 CPU cores, against 3.6x for one model at a time). A local run therefore lets its units embed
the few-shot images only (``Unit.batch_fewshot``: the embeddings go to the embedding cache,
which the driver shares with its worker processes), holds their other rows, and fits the
heads of up to :data:`FEWSHOT_BATCH_UNITS` units at a time here, reading the embeddings back
from the cache.

The rows are those :func:`repalign.fewshot.fewshot_rows` gives for each model alone: the same
splits, the same per-task seeds; linear-head accuracies agree to float rounding and the MLP
heads' within bfloat16 rounding (tests/test_fewshot_many.py, tests/test_study_run.py). A
failure stays the model's own: when the batched fit fails, each model is fitted alone, and a
model that fails then gets its failed row, as in a unit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from repalign._options import DEFAULT_LAYER
from repalign.store import STATUS_FAILED, STATUS_OK, utc_now
from repalign.study.config import StudyConfig
from repalign.study.plan import Unit

log = logging.getLogger(__name__)

#: Units whose heads are fitted together: enough to fill the batched groups, few enough that
#: held rows are written soon (a run cut short recomputes held units, from cached embeddings).
FEWSHOT_BATCH_UNITS = 8


def batched_fewshot_rows(
    units: list[Unit], failed_steps: dict[str, set[str]], config: StudyConfig
) -> dict[str, list[dict[str, Any]]]:
    """unit id -> its few-shot rows (row dicts in the store's schema), for every dataset of the config.

    ``failed_steps``: unit id -> the few-shot datasets whose embedding failed in the unit
    (those have their failed row already and are not fitted).
    """
    from repalign.models import resolve_model

    rows: dict[str, list[dict[str, Any]]] = {u.id: [] for u in units}
    model_ids = {u.id: resolve_model(u.model).resolved_id for u in units}
    for dataset in config.fewshot.datasets:
        members = [u for u in units if dataset not in failed_steps.get(u.id, set())]
        if not members:
            continue
        started = time.perf_counter()
        try:
            data, splits = _inputs(dataset, config)
        except Exception as exc:  # the dataset itself: every member fails this step
            for unit in members:
                rows[unit.id].append(_failed(unit, model_ids[unit.id], dataset, exc, time.perf_counter() - started))
            continue
        features, failures = _features(members, data, splits, config)
        for unit, exc in failures.items():
            rows[unit.id].append(_failed(unit, model_ids[unit.id], dataset, exc, 0.0))
        ready = [u for u in members if u.id in features]
        for unit, frame, seconds in _fitted(ready, features, data, splits, config):
            base = {"model": unit.model, "unit": unit.id, "model_id": model_ids[unit.id]}
            if isinstance(frame, BaseException):
                rows[unit.id].append(_failed(unit, base["model_id"], dataset, frame, seconds))
                continue
            frame = frame.assign(
                stage="fewshot",
                metric="accuracy",
                layer=DEFAULT_LAYER,  # batched units read the default layer only (run._with_batched_fewshot)
                status=STATUS_OK,
                **base,
                duration_s=seconds,
                timestamp=utc_now(),
            )
            rows[unit.id] += _records(frame)
    return rows


def _inputs(dataset: str, config: StudyConfig):
    from repalign.study.plan import fewshot_inputs

    return fewshot_inputs(dataset, config)


def _features(members: list[Unit], data, splits, config: StudyConfig):
    """unit id -> its embeddings of the used images (from the cache), and the units that failed."""
    from repalign.data.images import SubsetImageSet
    from repalign.embed import extract_embeddings, is_cached
    from repalign.errors import MissingDataError

    images = SubsetImageSet(data.images, splits.used_indices())
    features, failures = {}, {}
    for unit in members:
        try:  # a cache hit: the unit has just embedded these images
            if not is_cached(unit.model, images):  # never load a model here: the unit died, or the cache is off
                raise MissingDataError(
                    f"the embeddings of {data.name}'s few-shot images are not in the embedding cache "
                    "(the unit did not finish its few-shot step); the next run computes them again"
                )
            features[unit.id] = extract_embeddings(unit.model, images, device=config.execution.device, num_workers=0)
        except Exception as exc:
            log.warning("%s fewshot %s: embeddings unavailable: %s", unit.model, data.name, exc)
            failures[unit] = exc
    return features, failures


def _fitted(units: list[Unit], features: dict, data, splits, config: StudyConfig):
    """Yield (unit, summary frame or the exception, seconds) for every unit: one batched fit,
    or each alone when that fails."""
    from repalign.fewshot import evaluate_fewshot, evaluate_fewshot_many

    if not units:
        return
    options = {
        "splits": splits,
        "heads": config.fewshot.heads,
        "dataset": data.name,
        "feature_indices": splits.used_indices(),
        "device": config.execution.device,
    }
    started = time.perf_counter()
    try:
        table = evaluate_fewshot_many({u.id: features[u.id] for u in units}, data.labels, **options)
    except Exception as exc:  # fit each alone: a failure stays the model's own
        log.warning("few-shot heads of %d models fitted together failed (%s); fitting each alone", len(units), exc)
    else:
        share = (time.perf_counter() - started) / len(units)
        for unit in units:
            yield unit, table[table["model"] == unit.id].drop(columns="model").reset_index(drop=True), share
        return
    for unit in units:
        started = time.perf_counter()
        try:
            frame = evaluate_fewshot(features[unit.id], data.labels, **options)
        except Exception as exc:
            frame = exc
        yield unit, frame, time.perf_counter() - started


def _failed(unit: Unit, model_id: str, dataset: str, exc: BaseException, seconds: float) -> dict[str, Any]:
    return {
        "model": unit.model,
        "unit": unit.id,
        "model_id": model_id,
        "stage": "fewshot",
        "dataset": dataset,
        "status": STATUS_FAILED,
        "error": f"{type(exc).__name__}: {exc}".strip()[:2000],
        "duration_s": seconds,
        "timestamp": utc_now(),
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
