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

from repalign.study.config import StudyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One model's work. ``id`` is a file-name-safe, collision-free slug of the model name."""

    id: str
    model: str
    stages: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "stages": list(self.stages)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(id=d["id"], model=d["model"], stages=tuple(d["stages"]))


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
    """One :class:`Unit` per model, in the order the models were expanded."""
    models = expand_models(config) if models is None else models
    return [Unit(id=unit_id(m), model=m, stages=config.stages) for m in models]


# ---------------------------------------------------------------------------------------
# dry run: what would run, what is cached, what is already finished
# ---------------------------------------------------------------------------------------
def describe_plan(config: StudyConfig, units: list[Unit], store) -> list[dict[str, Any]]:
    """One record per unit: model, state in the store, and cached embeddings per dataset.

    Needs no model weights and no network: the cache check uses ``embed.is_cached``, which
    builds the cache key without loading the model.
    """
    image_sets = {**_alignment_image_sets(config), **_fewshot_image_sets(config)}
    fingerprint = config.results_fingerprint()
    records = []
    for unit in units:
        state = store.unit_state(unit.id, fingerprint)
        record: dict[str, Any] = {
            "unit": unit.id,
            "model": unit.model,
            "stages": ",".join(unit.stages),
            "state": {"finished": "done (skip)", "failed": "failed (rerun)", "stale": "stale (rerun)"}.get(
                state, "to run"
            ),
        }
        if image_sets:
            record["embeddings cached"] = _cached_summary(unit.model, image_sets)
        records.append(record)
    return records


def _alignment_image_sets(config: StudyConfig) -> dict[str, Any]:
    """{human dataset name: ImageSet, or the reason it is unavailable (str)}."""
    if "alignment" not in config.stages:
        return {}
    from repalign.data.human import load_human

    sets: dict[str, Any] = {}
    for spec in config.alignment.human:
        try:
            humans = load_human(spec)
        except Exception as exc:  # reported in the plan, not fatal for a dry run
            sets[spec] = f"unavailable ({type(exc).__name__})"
            continue
        for human in humans:
            try:
                sets[human.name] = human.images()
            except Exception as exc:
                sets[human.name] = f"no images ({type(exc).__name__})"
    return sets


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
        seeds=fs.seeds,
        max_eval_per_class=fs.max_eval_per_class,
        dataset=data.name,
        class_names=data.class_names,
    )
    return data, splits


def _fewshot_image_sets(config: StudyConfig) -> dict[str, Any]:
    """{few-shot dataset: the images its splits use (what a unit embeds), or why it is unavailable}."""
    if "fewshot" not in config.stages:
        return {}
    from repalign.data.images import SubsetImageSet

    sets: dict[str, Any] = {}
    for name in config.fewshot.datasets:
        try:
            data, splits = fewshot_inputs(name, config)
        except Exception as exc:  # e.g. CIFAR-100 offline: shown in the plan, not fatal
            sets[f"fewshot:{name}"] = f"unavailable ({type(exc).__name__})"
            continue
        sets[f"fewshot:{name}"] = SubsetImageSet(data.images, splits.used_indices())
    return sets


def _cached_summary(model: str, image_sets: dict[str, Any]) -> str:
    from repalign.embed import is_cached

    n_cached = 0
    n_checkable = 0
    for images in image_sets.values():
        if isinstance(images, str):
            continue
        n_checkable += 1
        try:
            n_cached += bool(is_cached(model, images))
        except Exception as exc:  # an unknown source or missing weights: not cached
            log.debug("is_cached(%s) failed: %s", model, exc)
    return f"{n_cached}/{n_checkable}" if n_checkable else "-"
