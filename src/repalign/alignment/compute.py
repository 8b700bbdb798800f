"""Alignment of a model's embeddings with one human dataset, as tidy records or as result rows."""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from repalign._options import (
    ALIGNMENT_METRICS,
    AUTO,
    DEFAULT_LAYER,
    DEFAULT_METRICS,
    DEFAULT_N_BOOTSTRAP,
    DEFAULT_SEED,
    DEFAULT_SIMILARITY,
    DEFAULT_TIES,
    MATRIX_METRICS,
    PAIRWISE_METHODS,
    SIMILARITY_METRICS,
    TIE_MODES,
)
from repalign.alignment._checks import _as_embeddings, _check_choice, _check_pair
from repalign.alignment.bootstrap import bootstrap_alignment_ci
from repalign.alignment.ceiling import (
    has_repeated_judgments,
    noise_ceiling,
    participant_alignment,
    triplet_ceiling,
)
from repalign.alignment.pairwise import _upper_pairs, pairwise_alignment
from repalign.alignment.similarity import similarity_matrix
from repalign.alignment.triplets import triplet_accuracy, triplet_alignment
from repalign.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from repalign.data.human import HumanSimilarity

logger = logging.getLogger(__name__)

#: the columns of :func:`compute_alignment`: the result store's names, plus n_missing_pairs
ALIGNMENT_COLUMNS = (
    "dataset",
    "metric",
    "similarity",
    "ties",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "n_missing_pairs",
    "ceiling_low",
    "ceiling_high",
)


def _metrics_for(human: HumanSimilarity, metrics: tuple[str, ...] | None) -> list[str]:
    """The metrics to compute for one dataset: ``None`` adapts to what it provides; an
    explicit list must apply to it."""
    has_matrix = human.similarity is not None
    has_judgments = human.judgments is not None
    if metrics is None:
        chosen = list(DEFAULT_METRICS) if has_matrix else []
        return chosen + (["triplet_accuracy"] if has_judgments else [])
    needs_matrix = [m for m in metrics if m in MATRIX_METRICS]
    if needs_matrix and not has_matrix:
        raise InputError(
            f"Dataset {human.name} has triplet judgments but no similarity matrix, so metrics "
            f"{', '.join(needs_matrix)} do not apply; use --metrics triplet_accuracy"
        )
    if "triplet_accuracy" in metrics and not has_judgments:
        raise InputError(f"Dataset {human.name} has no triplet judgments, so triplet_accuracy does not apply")
    return list(metrics)


def compute_alignment(
    embeddings,
    human: HumanSimilarity,
    *,
    similarity: str = DEFAULT_SIMILARITY,
    metrics: Sequence[str] | str | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state=DEFAULT_SEED,
    ties: str = DEFAULT_TIES,
    progress: bool = False,
) -> pd.DataFrame:
    """Alignment of a model's embeddings with one human dataset, as a tidy table.

    Args:
        embeddings: (n_stimuli, n_features), rows in ``human.stimuli`` order.
        human: a :class:`repalign.data.human.HumanSimilarity`.
        similarity: similarity function of the model matrix (see :func:`similarity_matrix`).
        metrics: names from ``pearson, spearman, kendall, triplet, triplet_accuracy``, each
            of which must apply to the dataset. ``None`` (or ``"auto"``, as configs and the
            command line spell it) means the dataset's defaults: ``pearson, spearman,
            triplet`` where it has a similarity matrix, plus ``triplet_accuracy`` where it
            has triplet judgments.
        n_bootstrap: stimulus-bootstrap resamples for the 95% CI (0: no CI, NaN bounds).
        random_state: seed of the bootstrap.
        ties: tie rule of the ``"triplet"`` metric.
        progress: a progress bar of the bootstrap on stderr (shown on a terminal only).

    Returns:
        A DataFrame, one row per metric, with columns :data:`ALIGNMENT_COLUMNS`: ``dataset,
        metric, similarity, ties, value, ci_low, ci_high, n`` (the result store's names;
        ``n`` = stimuli), ``n_missing_pairs`` (pairs missing on either side) and
        ``ceiling_low, ceiling_high``. ``ties`` is the tie rule on the ``"triplet"`` row, null
        on the others: their values do not depend on it. The ceiling is NaN where the data
        cannot tell it; where the dataset has per-participant matrices, a matrix metric's value
        (and CI) is the mean over participants of its value with each participant, the quantity
        its ceiling bounds (:mod:`repalign.alignment.ceiling`).
    """
    import pandas as pd  # here, so importing the alignment package does not import pandas

    if isinstance(metrics, str):
        metrics = None if metrics == AUTO else (metrics,)
    if metrics is not None:
        metrics = tuple(metrics)
        if not metrics:
            raise InputError("metrics is empty; pass None for the dataset's defaults, or names of alignment metrics")
        for metric in metrics:
            _check_choice("alignment metric", metric, ALIGNMENT_METRICS)
    _check_choice("similarity metric", similarity, SIMILARITY_METRICS)
    _check_choice("ties option", ties, TIE_MODES)
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise InputError(f"n_bootstrap must be a non-negative integer; got {n_bootstrap!r}")
    x = _as_embeddings(embeddings)
    n_stimuli = len(human.stimuli)
    if x.shape[0] != n_stimuli:
        raise InputError(
            f"embeddings have {x.shape[0]} rows but dataset {human.name} has {n_stimuli} stimuli; "
            "pass one row per stimulus, in the dataset's stimulus order"
        )
    chosen = _metrics_for(human, metrics)
    model = similarity_matrix(x, metric=similarity)
    human_sim = None
    if human.similarity is not None:
        model, human_sim = _check_pair(model, human.similarity)
    judgments = human.judgments if "triplet_accuracy" in chosen else None
    n_missing = _upper_pairs(model, human_sim)[2] if human_sim is not None else 0

    participants = human.participants
    values: dict[str, float] = {}
    for metric in chosen:
        if participants is not None and metric in MATRIX_METRICS:
            values[metric] = participant_alignment(model, participants, metric, ties=ties)
        elif metric in PAIRWISE_METHODS:
            values[metric] = pairwise_alignment(model, human_sim, method=metric)
        elif metric == "triplet":
            values[metric] = triplet_alignment(model, human_sim, ties=ties)
        else:
            values[metric] = triplet_accuracy(model, judgments)
    if n_bootstrap:
        intervals = bootstrap_alignment_ci(
            model,
            human_sim,
            judgments=judgments,
            metrics=chosen,
            n_bootstrap=n_bootstrap,
            random_state=random_state,
            ties=ties,
            participants=participants,
            progress=progress,
        )
    else:
        intervals = {metric: (float("nan"), float("nan")) for metric in chosen}
    ceilings = _ceilings(human, chosen, ties)
    records = [
        {
            "dataset": human.name,
            "metric": metric,
            "similarity": similarity,
            "ties": ties if metric == "triplet" else None,
            "value": values[metric],
            "ci_low": intervals[metric][0],
            "ci_high": intervals[metric][1],
            "n": n_stimuli,
            "n_missing_pairs": n_missing,
            "ceiling_low": ceilings[metric][0],
            "ceiling_high": ceilings[metric][1],
        }
        for metric in chosen
    ]
    frame = pd.DataFrame.from_records(records, columns=list(ALIGNMENT_COLUMNS))
    # None, not NaN, where no tie rule applies (pandas would make a string column's None a NaN)
    frame["ties"] = pd.Series([r["ties"] for r in records], index=frame.index, dtype=object)
    return frame


#: ceilings already computed for a dataset, by (metric, ties): they do not depend on the model,
#: and a study scores many models against the same dataset object
_CEILINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ceilings(human: HumanSimilarity, metrics: Sequence[str], ties: str) -> dict[str, tuple[float, float]]:
    """The noise ceiling of each metric where the data can tell it (NaN where not): matrix
    metrics from per-participant matrices, triplet_accuracy from triplets judged more than once."""
    known = _CEILINGS.setdefault(human, {})
    out = {}
    for metric in metrics:
        key = (metric, ties if metric == "triplet" else None)
        if key not in known:
            ceiling = (math.nan, math.nan)  # one NaN object: records compare equal
            if metric in MATRIX_METRICS and human.participants is not None:
                ceiling = tuple(noise_ceiling(human.participants, metric, ties=ties))
            elif metric == "triplet_accuracy" and has_repeated_judgments(human.judgments):
                ceiling = tuple(triplet_ceiling(human.judgments))
            known[key] = ceiling
        out[metric] = known[key]
    return out


def alignment_rows(embeddings, human: HumanSimilarity, *, layer: str = DEFAULT_LAYER, **options) -> pd.DataFrame:
    """:func:`compute_alignment` as result rows of the study's store (:mod:`repalign.schema`).

    One row per metric: stage ``"alignment"``, ``n`` = the number of stimuli, ``layer`` the
    model layer the embeddings were read from; the columns a run adds (model, unit, status,
    timing) are left null, and ``n_missing_pairs`` (no store column) is dropped.

    Args:
        embeddings, human: as :func:`compute_alignment`.
        layer: the layer ``embeddings`` come from (recorded, not read).
        **options: keyword options of :func:`compute_alignment`.
    """
    from repalign.schema import conform

    return conform(compute_alignment(embeddings, human, **options).assign(stage="alignment", layer=layer))
