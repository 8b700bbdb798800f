"""``[compare]``: every model of a study compared with every other on one image set.

Runs after the units, in the run's process, under the study's lock: each model's embeddings
of ``[compare] images`` (from the embedding cache when the alignment stage already embedded
that set, e.g. ``peterson:animals``), then :func:`repalign.alignment.compare_models`, written
to ``model_comparison.parquet``. The file records what it was computed from (the settings,
the models' identities and the images' fingerprint), so a resumed run with nothing changed
does not compute it again; a model that cannot be embedded is left out with a note.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence

from repalign.errors import RepalignError
from repalign.study.config import StudyConfig

log = logging.getLogger(__name__)


def run_comparison(cfg: StudyConfig, store, models: Sequence[str]) -> list[str]:
    """Compute (or keep, when up to date) the study's model comparison; return notes for the run."""
    from repalign.alignment import compare_models
    from repalign.data import load_dataset_images
    from repalign.embed import extract_embeddings
    from repalign.models import resolve_model

    settings = cfg.compare
    if not settings.images:
        return []
    models = list(dict.fromkeys(models))
    if len(models) < 2:
        return [f"model comparison left out: it needs at least 2 models, the study has {len(models)}"]
    source = load_dataset_images(settings.images)
    identities = [resolve_model(m).resolved_id for m in models]
    key = _inputs_key(cfg, models, identities, source.images.fingerprint())
    if store.model_comparison_inputs() == key:
        log.info("model comparison on %s is up to date", settings.images)
        return []
    notes = []
    embeddings = {}
    for model in models:
        try:
            embeddings[model] = extract_embeddings(
                model, source.images, device=cfg.execution.device, progress=sys.stderr.isatty()
            )
        except (RepalignError, OSError, RuntimeError) as exc:  # one model's failure is a note, not the run's
            notes.append(f"model comparison: {model} left out ({type(exc).__name__}: {exc})")
    if len(embeddings) < 2:
        return [*notes, "model comparison left out: fewer than 2 models could be embedded"]
    human = None
    if source.kind == "human":
        from repalign.data.human import load_human

        (dataset,) = load_human(settings.images)
        human = dataset.similarity
    table = compare_models(embeddings, methods=settings.methods, similarity=settings.similarity, human_similarity=human)
    store.write_model_comparison(table, inputs_key=key)
    return notes


def _inputs_key(cfg: StudyConfig, models: list[str], identities: list[str], images: str) -> str:
    payload = {"compare": cfg.to_dict()["compare"], "models": models, "ids": identities, "images": images}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
