"""Units of work of a study.

Design choice: **one unit per model**, covering every stage of that model (alignment on each
human dataset, few-shot on each dataset, robustness lookup). Why per model and not per
(model, stage): a model is loaded once per unit and its embeddings stay warm; a crash in
native model code (the usual failure) concerns the model, so isolating whole models in
their own process (or Ray task) is what keeps the study going; and one task per model is
the natural grain to ask a cluster for one GPU. Inside a unit each (stage, dataset) is
still guarded on its own, so a failure in one dataset yields a failed row while the other
datasets of the same model complete.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from repalign._options import DEFAULT_LAYER
from repalign.study.config import StudyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One model's work. ``id`` is a file-name-safe, collision-free slug of the model name.

    A unit covers every layer of its model (``layers``, from ``[models] layers``): they are
    extracted together, in one forward pass per image, and every stage scores each of them.
    ``batch_fewshot``: the unit only embeds the few-shot images (into the embedding cache);
    the run fits its few-shot heads together with other units' (:mod:`repalign.study.fewshot_batch`).
    """

    id: str
    model: str
    stages: tuple[str, ...]
    layers: tuple[str, ...] = (DEFAULT_LAYER,)
    batch_fewshot: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "model": self.model, "stages": list(self.stages), "layers": list(self.layers)}
        return d | {"batch_fewshot": True} if self.batch_fewshot else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        layers = tuple(d.get("layers", (DEFAULT_LAYER,)))
        batch = bool(d.get("batch_fewshot"))
        return cls(id=d["id"], model=d["model"], stages=tuple(d["stages"]), layers=layers, batch_fewshot=batch)


def unit_id(model: str) -> str:
    """``"tflite:mobilenet_v2"`` -> ``"tflite_mobilenet_v2-1a2b3c4d"``: readable, and the
    hash keeps names that slug alike (``a:b`` / ``a_b``) apart."""
    slug = re.sub(r"[^A-Za-z0-9.\-]+", "_", model).strip("_")[:80]
    return f"{slug}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def expand_models(config: StudyConfig) -> list[str]:
    """The model names of a study: include patterns/presets expanded, excludes removed."""
    from repalign.models import expand_model_patterns

    return list(expand_model_patterns(list(config.models.include), list(config.models.exclude)))


def plan_units(config: StudyConfig, models: list[str] | None = None) -> list[Unit]:
    """One :class:`Unit` per model, in the order the models were expanded, except that models
    sharing a preprocessing configuration are pulled together (their inputs are preprocessed once)."""
    from repalign.embed import order_by_preprocessing

    models = order_by_preprocessing(expand_models(config) if models is None else models)
    return [Unit(id=unit_id(m), model=m, stages=config.stages, layers=config.models.layers_for(m)) for m in models]


# ---------------------------------------------------------------------------------------
# what a run does with each unit
# ---------------------------------------------------------------------------------------
#: a unit's state in the store (``StudyStore.unit_state``) -> what the plan calls it
_STATE_WORDS = {
    "finished": "done (skip)",
    "failed": "failed (rerun)",
    "stale": "stale (rerun)",
    "damaged": "damaged (rerun)",
    "missing": "to run",
}


def stages_to_run(
    unit: Unit, state: str, store, stage_fingerprints: dict[str, str], inputs: dict | None = None
) -> tuple[str, ...]:
    """The stages a run computes for ``unit``, whose state in the store is ``state``.

    Nothing for a finished unit; every stage for a new, failed or damaged one; for a stale one
    (finished under other settings, or on inputs that changed since: ``inputs``, see
    :mod:`repalign.study.inputs`) only the stages whose settings or inputs changed -- the rows
    of the others are kept (``StudyStore.stale_stages``). May be empty: then the unit's file
    is only rewritten (e.g. a stage was switched off and its rows are dropped).
    """
    if state == "finished":
        return ()
    redo = store.stale_stages(unit.id, stage_fingerprints, inputs) if state == "stale" else None
    return unit.stages if redo is None else tuple(s for s in unit.stages if s in redo)


def stale_reasons(unit: Unit, store, inputs: dict, stages: tuple[str, ...]) -> list[str]:
    """Why the stages ``stages`` of a stale unit run again, as far as inputs go, e.g.
    ``["peterson:mine changed: sim.csv"]`` (settings that changed are said by the stages)."""
    changes = store.input_changes(unit.id, inputs)
    return list(dict.fromkeys(reason for stage in stages for reason in changes.get(stage, [])))


def describe_state(unit: Unit, state: str, stages: tuple[str, ...], reasons: list[str] | tuple = ()) -> str:
    """The plan's words for a unit's state: for a stale unit, the stages it recomputes (when
    not all) and the inputs that changed, e.g. ``stale (rerun alignment; peterson:mine
    changed: sim.csv)``."""
    if state != "stale":
        return _STATE_WORDS.get(state, "to run")
    parts = []
    if stages != unit.stages:
        parts.append(f"rerun {', '.join(stages)}" if stages else "rewrite, nothing to compute")
    parts.extend(reasons)
    return f"stale ({'; '.join(parts)})" if parts else _STATE_WORDS["stale"]


# ---------------------------------------------------------------------------------------
# dry run: what would run, what is cached, what is already finished
# ---------------------------------------------------------------------------------------
def describe_plan(config: StudyConfig, units: list[Unit], store) -> tuple[list[dict[str, Any]], list[str]]:
    """What a run of ``config`` would do: ``(records, notes)``, without doing any of it.

    ``records``: one per unit -- model, state in the store, and how many of the image sets
    it embeds are cached. ``notes``: plain sentences -- the domains alignment will be
    averaged over (and why any are left out), datasets not downloaded yet.

    Reads only what is present: data in the data home or the mirror (in place), never
    copied or downloaded (``repalign.data.read_only``); no model weights and no network
    (the cache check builds cache keys without loading models).
    """
    from repalign.data import read_only
    from repalign.study.datacheck import check_fewshot_data, check_human_data
    from repalign.study.inputs import StudyInputs

    humans = check_human_data(config, fetch=False)
    fewshot_images, fewshot_notes = check_fewshot_data(config)
    image_sets = {**humans.images, **{f"fewshot:{k}": v for k, v in fewshot_images.items()}}
    unknown = [*[d for d in humans.with_images if d not in humans.images], *fewshot_notes]

    notes = [m] if (m := humans.message()) else []
    notes += [*humans.to_fetch.values(), *fewshot_notes.values()]
    if image_sets and unknown:
        notes.append(
            f"embeddings cached: counted over the {len(image_sets)} image sets present here; "
            f"not known for {', '.join(unknown)} (not present)"
        )

    for file, why in store.damaged_files().items():
        notes.append(
            f"{file.relative_to(store.path)} is damaged ({why}); the run will move it to quarantine/"
            + (" and compute its unit again" if file.suffix == ".parquet" else "")
        )

    fingerprint = config.results_fingerprint()
    stage_fingerprints = config.stage_fingerprints()
    records = []
    with read_only():  # model descriptions read weight files in place, too
        study_inputs = StudyInputs(config, humans.names)
        for unit in units:
            inputs = study_inputs.for_unit(unit)
            state = store.unit_state(unit.id, fingerprint, inputs)
            stages = stages_to_run(unit, state, store, stage_fingerprints, inputs)
            reasons = stale_reasons(unit, store, inputs, stages) if state == "stale" else []
            record: dict[str, Any] = {
                "unit": unit.id,
                "model": unit.model,
                "stages": ",".join(unit.stages),
                "state": describe_state(unit, state, stages, reasons),
            }
            if image_sets:
                weights = config.models.weights.get(unit.model)
                record["embeddings cached"] = _cached_summary(unit.model, image_sets, unit.layers, weights=weights)
            records.append(record)
    return records, notes


def fewshot_inputs(name: str, config: StudyConfig):
    """Few-shot dataset ``name`` and the study's splits of it: ``(FewShotDataset, SplitManifest)``.

    The one place a study loads a few-shot dataset and draws its splits: a unit passes both
    to the few-shot stage, and the dry run checks the cache for exactly the images they use.
    """
    from repalign.data.fewshot_datasets import load_fewshot_dataset
    from repalign.fewshot import make_splits

    fs = config.fewshot
    data = load_fewshot_dataset(name)
    splits = make_splits(
        data.labels,
        shots=fs.shots,
        seeds=fs.n_seeds,
        max_eval_per_class=fs.max_eval_per_class,
        dataset=data.name,
        class_names=data.class_names,
    )
    return data, splits


def _cached_summary(
    model: str, image_sets: dict[str, Any], layers: tuple[str, ...], *, weights: str | None = None
) -> str:
    """How many image sets have every layer of the unit cached."""
    from repalign.embed import is_cached

    n_cached = 0
    for images in image_sets.values():
        try:
            n_cached += bool(is_cached(model, images, layer=list(layers), weights=weights))
        except Exception as exc:  # an unknown source or missing weights: not cached
            log.debug("is_cached(%s) failed: %s", model, exc)
    return f"{n_cached}/{len(image_sets)}"
