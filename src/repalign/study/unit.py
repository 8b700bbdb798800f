"""Compute one unit of work (one model through every stage) -> result rows.

This is what runs inside a worker process or a Ray task. Each stage returns its rows in the
store's schema itself (``alignment_rows``, ``fewshot_rows``, ``robustness.to_result_rows``);
the unit only adds what it knows: model, unit, status, timing. Data flows once: a few-shot
dataset is loaded and its splits drawn once (``plan.fewshot_inputs``), then handed to the
stage. Each (stage, dataset) is guarded on its own: an exception becomes a ``failed`` row
carrying the error, and the remaining datasets still run. Crashes that kill the process
(segfault, ``os._exit``, the OOM killer) cannot be caught here; the executor turns those
into failed rows.

Every random computation is seeded from the config (``[study] seed`` for the bootstrap;
few-shot splits and heads are seeded by their seed index), so recomputing a unit -- after
a crash, on resume, on another executor -- gives the same values.

Fault injection (test-only)
---------------------------
``REPALIGN_TEST_FAULT="MODEL_GLOB:STAGE:KIND[;...]"`` makes the unit of a matching model
fail on purpose when it enters ``STAGE`` (``alignment``, ``fewshot``, ``robustness`` or
``*``). ``KIND`` is ``segfault`` (SIGSEGV to itself), ``exit`` (``os._exit(1)``), ``raise``
(a RuntimeError), ``oom`` (a MemoryError), ``hang`` (sleeps ten minutes: a run that is
surely still going when a test signals it) or ``slow`` (sleeps ten seconds, then goes on: a
unit surely still running when a test stops its Ray node). It exists so the failure-isolation tests can
crash a real worker process; never set it outside tests.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import pandas as pd

from repalign.store import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, utc_now
from repalign.study.config import StudyConfig
from repalign.study.plan import Unit

log = logging.getLogger(__name__)

FAULT_ENV = "REPALIGN_TEST_FAULT"

#: report(event, payload): ("stage", (stage, dataset)) when a step starts,
#: ("rows", [row dicts]) when a step has its rows.
Reporter = Callable[[str, Any], None]


def run_unit(unit: Unit, config: StudyConfig, report: Reporter | None = None) -> pd.DataFrame:
    """All rows of one unit (a DataFrame with the columns of ``RESULT_COLUMNS``)."""
    report = report or (lambda event, payload: None)
    rows: list[dict[str, Any]] = []
    base = {"model": unit.model, "unit": unit.id}

    try:
        from repalign.models import resolve_model

        base["model_id"] = resolve_model(unit.model).resolved_id
    except Exception as exc:
        failed = [_failed_row(base, stage, None, exc, 0.0) for stage in unit.stages]
        report("rows", failed)
        return pd.DataFrame(failed)

    for stage, dataset, step in _steps(unit, config):
        report("stage", (stage, dataset))
        started = time.perf_counter()
        try:
            inject_fault(unit.model, stage)
            frame = step().assign(**base, duration_s=time.perf_counter() - started, timestamp=utc_now())
            new_rows = _records(frame.assign(status=frame["status"].fillna(STATUS_OK)))
        except Exception as exc:  # recorded, the study goes on
            log.warning("%s %s %s failed: %s", unit.model, stage, dataset or "", exc)
            new_rows = [_failed_row(base, stage, dataset, exc, time.perf_counter() - started)]
        report("rows", new_rows)
        rows.extend(new_rows)
    return pd.DataFrame(rows)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts (nulls as None): how they travel to the driver."""
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]


def _failed_row(base: dict, stage: str, dataset: str | None, exc: BaseException, duration: float) -> dict[str, Any]:
    message = f"{type(exc).__name__}: {exc}".strip()
    log.debug("traceback:\n%s", "".join(traceback.format_exception(exc)))
    return {
        **base,
        "stage": stage,
        "dataset": dataset,
        "status": STATUS_FAILED,
        "error": message[:2000],
        "duration_s": duration,
        "timestamp": utc_now(),
    }


def _steps(unit: Unit, config: StudyConfig):
    """Yield (stage, dataset, thunk) for every step of a unit, in a fixed order."""
    if "alignment" in unit.stages:
        from repalign.data.human import load_human

        for spec in config.alignment.human:
            try:
                humans = load_human(spec)
            except Exception as exc:
                yield "alignment", spec, _raiser(exc)
                continue
            for human in humans:
                # images that exist nowhere: skipped; images that could not be fetched here: the
                # step fails (MissingDataError naming the files) and is computed again next run
                no_images = not human.has_images and human.images_dataset is None
                if no_images:
                    yield "alignment", human.name, _bind(_no_images_rows, unit.model, human, config)
                else:
                    yield "alignment", human.name, _bind(_alignment_rows, unit.model, human, config, unit.layers)
    if "fewshot" in unit.stages:
        step = _fewshot_embeddings if unit.batch_fewshot else _fewshot_rows
        for dataset in config.fewshot.datasets:
            yield "fewshot", dataset, _bind(step, unit.model, dataset, config, unit.layers)
    if "robustness" in unit.stages:
        yield "robustness", None, _bind(_robustness_rows, unit.model, config)


def _bind(func, *args):
    return lambda: func(*args)


def _raiser(exc: BaseException):
    def thunk():
        raise exc

    return thunk


def loader_workers(config: StudyConfig) -> int | None:
    """DataLoader workers for embedding inside a unit: none on a CPU-only host, else the
    embedding engine's default.

    Why: on CPU the executor already runs one unit per core (``jobs``), so decode workers
    would only oversubscribe the cores -- and each costs a process start that imports torch
    (measured: 120 Peterson images through a TFLite model, 4 s without workers vs ~45 s with
    them on a busy 2-core machine). With a GPU, parallel decoding keeps the device fed.
    """
    from repalign._device import resolve_device

    return 0 if resolve_device(config.execution.device) == "cpu" else None


def _alignment_rows(model: str, human, config: StudyConfig, layers: tuple[str, ...]) -> pd.DataFrame:
    """The rows of every layer and configured similarity function, from one extraction of
    embeddings (all layers in one forward pass)."""
    from repalign.alignment import alignment_rows
    from repalign.embed import extract_embeddings

    by_layer = extract_embeddings(
        model,
        human.images(),
        layer=list(layers),
        device=config.execution.device,
        num_workers=loader_workers(config),
        weights=config.models.weights.get(model),
    )
    a = config.alignment
    frames = [
        alignment_rows(
            embeddings,
            human,
            layer=layer,
            similarity=similarity,
            metrics=a.metrics,
            ties=a.ties,
            n_bootstrap=a.n_bootstrap,
            random_state=config.study.seed,
        )
        for layer, embeddings in by_layer.items()
        for similarity in a.similarity
    ]
    return pd.concat(frames, ignore_index=True)


def _no_images_rows(model: str, human, config: StudyConfig) -> pd.DataFrame:
    """A dataset whose images exist nowhere (e.g. three Peterson domains): one ``skipped`` row
    giving the reason. Not a failure -- nothing about the model went wrong, the run said so at
    its start (``datacheck.check_human_data``), and a failed row would recompute the unit on
    every resume."""
    from repalign.schema import conform

    row = {"stage": "alignment", "dataset": human.name, "status": STATUS_SKIPPED, "error": human.missing_images_reason}
    return conform(pd.DataFrame([row]))


def _fewshot_rows(model: str, dataset: str, config: StudyConfig, layers: tuple[str, ...]) -> pd.DataFrame:
    from repalign.fewshot import fewshot_rows
    from repalign.study.plan import fewshot_inputs

    data, splits = fewshot_inputs(dataset, config)
    return fewshot_rows(
        model,
        data,
        splits=splits,
        heads=config.fewshot.heads,
        layer=list(layers),
        device=config.execution.device,
        num_workers=loader_workers(config),
        weights=config.models.weights.get(model),
    )


def _fewshot_embeddings(model: str, dataset: str, config: StudyConfig, layers: tuple[str, ...]) -> pd.DataFrame:
    """The few-shot stage of a unit whose heads the run fits with other units': only the
    embeddings of the images the splits use, into the embedding cache; no rows (the run adds
    them, :func:`repalign.study.fewshot_batch.batched_fewshot_rows`). A failure is this step's
    failed row, as for :func:`_fewshot_rows`."""
    from repalign.data.images import SubsetImageSet
    from repalign.embed import extract_embeddings
    from repalign.schema import empty_results
    from repalign.study.plan import fewshot_inputs

    data, splits = fewshot_inputs(dataset, config)
    extract_embeddings(
        model,
        SubsetImageSet(data.images, splits.used_indices()),
        layer=list(layers),
        device=config.execution.device,
        num_workers=loader_workers(config),
        weights=config.models.weights.get(model),
    )
    return empty_results()


def _robustness_rows(model: str, config: StudyConfig) -> pd.DataFrame:
    """Published rows; a model without any (e.g. TFLite, ``@random``) gets one ``skipped``
    row giving the reason -- that is not a failure."""
    from repalign.robustness import robustness_table, to_result_rows

    return to_result_rows(robustness_table([model], source=config.robustness.source))


# ---------------------------------------------------------------------------------------
# test-only fault injection
# ---------------------------------------------------------------------------------------
def inject_fault(model: str, stage: str) -> None:
    """Crash on purpose when ``$REPALIGN_TEST_FAULT`` names this model and stage (tests only)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        # model names contain ':' themselves, so split from the right
        head, _, kind = entry.rpartition(":")
        pattern, _, fault_stage = head.rpartition(":")
        if not fnmatch.fnmatchcase(model, pattern) or fault_stage not in ("*", stage):
            continue
        log.warning("injecting test fault %r into %s at %s", kind, model, stage)
        if kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(10)  # the signal is delivered asynchronously
        elif kind == "exit":
            os._exit(1)
        elif kind == "oom":
            raise MemoryError(f"injected out-of-memory in {stage}")
        elif kind == "hang":
            time.sleep(600)
        elif kind == "slow":
            time.sleep(10)
        else:
            raise RuntimeError(f"injected failure in {stage}")
