"""The run loop: plan the units, skip finished ones, execute the rest, store every result,
write the report.

Resume is the default: run the same config again and only units without a finished file
(or with failed rows, or computed under a different config) run. A unit finished under
other settings recomputes only the stages whose settings changed (e.g. a new ``[alignment]
ties`` reruns alignment and keeps the few-shot rows). Because every unit is computed from
the config alone with seeded randomness, resumed values equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from repalign._options import DEFAULT_LAYER
from repalign.errors import RepalignError
from repalign.schema import conform, empty_results
from repalign.store import (
    RUN_FAILED,
    RUN_FINISHED,
    RUN_INTERRUPTED,
    RUN_RUNNING,
    STATUS_FAILED,
    StudyStore,
    close_abandoned_runs,
    new_manifest,
    utc_now,
)
from repalign.study.config import StudyConfig, as_config
from repalign.study.datacheck import check_human_data
from repalign.study.executors import make_executor
from repalign.study.fewshot_batch import FEWSHOT_BATCH_UNITS
from repalign.study.inputs import StudyInputs, refresh_model
from repalign.study.plan import Unit, describe_plan, plan_units, stages_to_run, stale_reasons
from repalign.study.progress import StudyProgress

log = logging.getLogger(__name__)

#: Exit codes of a run (the CLI's): all ok / some units failed.
EXIT_OK = 0
EXIT_UNITS_FAILED = 3


@dataclass
class StudyOutcome:
    """What a run did.

    ``plan``: one record per unit (dry run: also cache state). ``failures``: the failed rows
    of this study (all units, including earlier runs' still-failed ones). ``notes``: things
    the user should know that are not failures: the domains alignment is averaged over (and
    why any are left out), datasets not downloaded yet (dry run), a report that could not be
    written.
    """

    path: Path
    config: StudyConfig
    plan: list[dict[str, Any]]
    dry_run: bool = False
    n_units: int = 0
    n_skipped: int = 0
    n_run: int = 0
    n_failed_units: int = 0
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)
    report: Path | None = None
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_UNITS_FAILED if self.n_failed_units else EXIT_OK


def run_study(
    config: StudyConfig | dict | str | os.PathLike,
    *,
    executor: str | None = None,
    jobs: int | None = None,
    dry_run: bool = False,
    address: str | None = None,
    output: str | os.PathLike | None = None,
    live: bool | None = None,
    connect_timeout: int | None = None,
) -> StudyOutcome:
    """Run (or with ``dry_run=True`` only plan) a study.

    Args:
        config: a :class:`StudyConfig`, its dict form, or the path of a TOML config.
        executor, jobs, address: override ``[execution]`` (``address`` implies nothing about
            the executor; pass ``executor="ray"`` too).
        output: override ``[study] output`` (the study directory).
        connect_timeout: override ``[execution] connect_timeout`` (seconds to join a Ray cluster).
        live: rich live progress (True), log lines (False), or by terminal (None).

    Returns:
        A :class:`StudyOutcome`; ``outcome.exit_code`` is 0 when every unit succeeded and 3
        when some failed. Invalid configs raise :class:`~repalign.errors.ConfigError`; a
        study being written by another run raises ``StudyLockedError``.
    """
    from repalign.data import read_only

    cfg = _with_overrides(
        as_config(config), executor=executor, jobs=jobs, address=address, output=output, connect_timeout=connect_timeout
    )
    with read_only() if dry_run else contextlib.nullcontext():  # a dry run copies nothing (e.g. the model list)
        units = plan_units(cfg)
    _check_before_work(cfg, dry_run=dry_run)
    store = StudyStore(cfg.output_dir)
    if dry_run:
        plan, notes = describe_plan(cfg, units, store)
        return StudyOutcome(path=store.path, config=cfg, plan=plan, dry_run=True, n_units=len(units), notes=notes)

    started = time.monotonic()
    humans = check_human_data(cfg, fetch=True)  # a bad name or a name clash stops the run here
    if cfg.compare.images:  # a [compare] set that does not exist stops the run before any work, not after it
        from repalign.data import load_dataset_images

        load_dataset_images(cfg.compare.images)
    notes = _say_domains(humans)
    study_inputs = StudyInputs(cfg, humans.names)
    with store.locked():
        notes += store.quarantine_damaged()  # moved aside, never deleted; their units run again
        _remove_partial_files(store)
        store.write_config(cfg.to_toml())
        manifest = new_manifest(store.read_manifest())
        close_abandoned_runs(manifest)
        run_record: dict[str, Any] = {
            "start": utc_now(),
            "end": None,
            "executor": cfg.execution.executor,
            "jobs": cfg.execution.jobs,
            "status": RUN_RUNNING,
            "pid": os.getpid(),
        }
        manifest["runs"].append(run_record)
        manifest["start"], manifest["end"] = run_record["start"], None
        store.write_manifest(manifest)

        outcome = StudyOutcome(path=store.path, config=cfg, plan=[], n_units=len(units), notes=notes)
        failed_here: list[dict] = []
        try:
            fingerprint = cfg.results_fingerprint()
            inputs = {u.id: study_inputs.for_unit(u) for u in units}
            states = {u.id: store.unit_state(u.id, fingerprint, inputs[u.id]) for u in units}
            work = _plan_work(cfg, store, units, states, inputs)
            todo = [w for w in work if w.unit.stages]
            for w in work:  # nothing to compute (e.g. a stage switched off): drop its rows, record the settings
                if not w.unit.stages:
                    rows = empty_results() if w.kept is None else w.kept
                    store.write_unit(
                        w.unit.id, rows, fingerprint=fingerprint, stage_fingerprints=w.fingerprints, inputs=w.inputs
                    )
            outcome.plan = [u.to_dict() | {"state": states[u.id]} for u in units]
            outcome.n_skipped = len(units) - len(todo)
            log.info("%d units, %d finished, %d to run", len(units), outcome.n_skipped, len(todo))
            _execute(cfg, store, todo, fingerprint, outcome, live, failed_here)
            outcome.notes += _compare_models(cfg, store, [u.model for u in units])
            run_record["status"] = RUN_FINISHED
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the CLI raises a KeyboardInterrupt for it)
            run_record["status"] = RUN_INTERRUPTED
            raise
        except BaseException as exc:  # e.g. a disk that is full: said in the manifest, then raised
            run_record["status"] = RUN_FAILED
            run_record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            run_record["end"] = manifest["end"] = utc_now()
            run_record["units_run"] = outcome.n_run
            run_record["units_failed"] = len({f["model"] for f in failed_here})
            run_record["failures"] = failed_here
            _close_manifest(store, manifest)

    results = store.read_results()
    current = results[results["unit"].isin([u.id for u in units])]
    outcome.failures = current[current["status"] == STATUS_FAILED].reset_index(drop=True)
    outcome.n_failed_units = int(outcome.failures["unit"].nunique())
    if cfg.study.report:
        outcome.report = _write_report(store.path, outcome.notes)
    outcome.duration_s = time.monotonic() - started
    return outcome


@dataclass(frozen=True)
class _Work:
    """One unit to write: ``unit.stages`` are the stages to compute (maybe none), ``kept``
    the rows of its file that still hold (None: none kept), ``inputs`` what its stages read."""

    unit: Unit
    kept: pd.DataFrame | None
    fingerprints: dict[str, str]
    inputs: dict[str, dict]


def _plan_work(
    cfg: StudyConfig, store: StudyStore, units: list[Unit], states: dict[str, str], inputs: dict[str, dict]
) -> list[_Work]:
    """The units that are not finished, each with the stages to compute and the rows to keep."""
    stage_fingerprints = cfg.stage_fingerprints()
    work = []
    for unit in units:
        if states[unit.id] == "finished":
            continue
        stages = stages_to_run(unit, states[unit.id], store, stage_fingerprints, inputs[unit.id])
        kept = None
        if stages != unit.stages:  # stale: keep the rows of the stages whose settings and inputs are unchanged
            old = store.read_unit(unit.id)
            kept = old[old["stage"].isin([s for s in unit.stages if s not in stages])]
            log.info(
                "%s: settings or inputs of %s changed; keeping its other rows",
                unit.model,
                ", ".join(stages) or "no stage",
            )
        for reason in stale_reasons(unit, store, inputs[unit.id], stages) if states[unit.id] == "stale" else []:
            log.info("%s: %s", unit.model, reason)
        work.append(_Work(dataclasses.replace(unit, stages=stages), kept, stage_fingerprints, inputs[unit.id]))
    return work


def _check_before_work(cfg: StudyConfig, *, dry_run: bool) -> None:
    """What can be checked before any work, from names alone: few-shot dataset names (the
    human datasets are checked as they load, models as they are planned); for a run, the
    device (an explicit cuda/mps must exist here, even if every embedding is cached) and
    that a Ray cluster at the given address lets this driver join (token, versions)."""
    from repalign._device import require_device
    from repalign.study.cluster import check_cluster
    from repalign.study.datacheck import check_fewshot_names, check_weights_files
    from repalign.study.plan import expand_models

    check_fewshot_names(cfg)
    if cfg.models.weights:  # every path of the config exists, dry run or not
        check_weights_files(cfg, expand_models(cfg))
    if dry_run:  # a plan may be made on a laptop for a GPU cluster
        return
    ex = cfg.execution
    if ex.executor == "local":  # on Ray the device is the workers', checked in each unit
        require_device(ex.device)
    else:
        check_cluster(ex.address, timeout=ex.connect_timeout, token_file=ex.token_file)


def _close_manifest(store: StudyStore, manifest: dict[str, Any]) -> None:
    """Record how the run ended. When even that write fails (a full disk), the error that
    ended the run is the one to see; the next run marks this run's entry "killed"."""
    try:
        store.write_manifest(manifest)
    except OSError as exc:
        if sys.exc_info()[0] is None:
            raise
        log.warning("could not record the end of the run in %s: %s", store.path / "manifest.json", exc)


def _say_domains(check) -> list[str]:
    """Before any work: the domains alignment will be averaged over, as a note (and a warning
    when some are left out)."""
    message = check.message()
    if message is None:
        return []
    left_out = check.without_images or check.unreachable or check.unloadable
    log.log(logging.WARNING if left_out else logging.INFO, "%s", message)
    return [message]


def _execute(
    cfg: StudyConfig,
    store: StudyStore,
    todo: list[_Work],
    fingerprint: str,
    outcome: StudyOutcome,
    live: bool | None,
    failed_here: list[dict],
) -> None:
    if not todo:
        return
    kept = {w.unit.id: w.kept for w in todo}
    inputs = {w.unit.id: w.inputs for w in todo}
    stage_fingerprints = todo[0].fingerprints
    ex = cfg.execution
    ray_options = {
        "connect_timeout": ex.connect_timeout,
        "token_file": ex.token_file,
        "gpu_memory_gb": ex.gpu_memory_gb,
    }
    executor = make_executor(
        ex.executor,
        jobs=ex.jobs,
        threads=ex.threads,
        address=ex.address,
        **(ray_options if ex.executor == "ray" else {}),
    )
    parallel = ex.jobs if ex.executor == "local" else len(todo)
    progress = StudyProgress(outcome.n_units, already_done=outcome.n_skipped, parallel=parallel, live=live)

    def on_event(unit: Unit, event: str, payload: Any) -> None:
        if event == "start":
            progress.unit_started(unit)
        elif event == "stage":
            progress.unit_step(unit, *payload)
        elif event == "node":  # ray: the node running the unit, and which attempt this is
            progress.unit_node(unit, *payload)

    def write(result, extra_rows: list[dict] = ()) -> None:
        rows = conform(result.rows)
        previous = kept.get(result.unit.id)
        if previous is not None and len(previous):
            rows = conform(pd.concat([previous, rows], ignore_index=True))
        if extra_rows:
            rows = conform(pd.concat([rows, conform(pd.DataFrame(extra_rows))], ignore_index=True))
        rows["unit"] = result.unit.id
        store.write_unit(
            result.unit.id,
            rows,
            fingerprint=fingerprint,
            stage_fingerprints=stage_fingerprints,
            inputs=refresh_model(
                inputs[result.unit.id], result.unit.model, weights=cfg.models.weights.get(result.unit.model)
            ),
        )
        failed = rows[rows["status"] == STATUS_FAILED]
        n_failed = len(failed)
        # kept in the manifest: a rerun that succeeds replaces the unit's rows
        for record in failed[["model", "stage", "dataset", "error"]].to_dict(orient="records"):
            failed_here.append({k: None if pd.isna(v) else str(v) for k, v in record.items()})
        outcome.n_run += 1
        progress.unit_finished(result.unit, n_failed_rows=n_failed, duration_s=result.duration_s)

    held: list = []  # units whose few-shot heads are fitted together, with their other rows

    def write_held() -> None:
        from repalign.study.fewshot_batch import batched_fewshot_rows

        if not held:
            return
        failed_steps = {r.unit.id: _failed_fewshot_datasets(r.rows) for r in held}
        fewshot = batched_fewshot_rows([r.unit for r in held], failed_steps, cfg)
        for result in held:
            write(result, fewshot[result.unit.id])
        held.clear()

    units = _with_batched_fewshot(cfg, [w.unit for w in todo])
    try:
        for result in executor.run(units, cfg.to_dict(), on_event):
            if not result.unit.batch_fewshot:
                write(result)
                continue
            held.append(result)
            if len(held) >= FEWSHOT_BATCH_UNITS:
                write_held()
        write_held()
    finally:
        progress.close()


def _with_batched_fewshot(cfg: StudyConfig, units: list[Unit]) -> list[Unit]:
    """Units whose few-shot heads this run fits together (:mod:`repalign.study.fewshot_batch`):
    only when ``[execution] batch_fewshot`` asks for it, with the local executor (its workers
    fill the embedding cache the driver reads), and for units that read the default layer of
    the published weights, when at least two such units have a few-shot stage; every other
    unit fits its own."""
    if not cfg.execution.batch_fewshot or cfg.execution.executor != "local":
        return units

    def batchable(unit: Unit) -> bool:
        return (
            "fewshot" in unit.stages and unit.layers == (DEFAULT_LAYER,) and cfg.models.weights.get(unit.model) is None
        )

    if sum(batchable(u) for u in units) < 2:
        return units
    return [dataclasses.replace(u, batch_fewshot=True) if batchable(u) else u for u in units]


def _failed_fewshot_datasets(rows: pd.DataFrame) -> set[str]:
    if rows.empty or "stage" not in rows:
        return set()
    failed = rows[(rows["stage"] == "fewshot") & (rows["status"] == STATUS_FAILED)]
    return {str(d) for d in failed["dataset"].dropna()}


def _with_overrides(cfg: StudyConfig, *, executor, jobs, address, output, connect_timeout=None) -> StudyConfig:
    given = {"executor": executor, "jobs": jobs, "address": address, "connect_timeout": connect_timeout}
    execution = {k: v for k, v in given.items() if v is not None}
    if execution:
        cfg = cfg.replace("execution", **execution)
    if output is not None:
        cfg = cfg.replace("study", output=str(Path(output).expanduser().resolve()))
    # the stored config names the directory absolutely, so it does not depend on the cwd
    return cfg.replace("study", output=str(cfg.output_dir))


def _remove_partial_files(store: StudyStore) -> None:
    """Temporary files of unit writes cut short by a kill (never visible as results)."""
    if store.results_dir.is_dir():
        for tmp in store.results_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _compare_models(cfg: StudyConfig, store: StudyStore, models: list[str]) -> list[str]:
    """``[compare]``: the units' results are safe in the store whatever happens here."""
    from repalign.study.compare import run_comparison

    try:
        return run_comparison(cfg, store, models)
    except RepalignError as exc:
        return [f"model comparison not written: {exc}"]


def _write_report(study_dir: Path, notes: list[str]) -> Path | None:
    try:
        from repalign.report import write_report
    except ImportError as exc:
        notes.append(f"report not written: the report module is not available ({exc})")
        log.warning(notes[-1])
        return None
    try:
        return Path(write_report(study_dir))
    except Exception as exc:  # the results are safe in the store; the report can be rerun
        notes.append(f"report not written: {type(exc).__name__}: {exc} (retry with `repalign report {study_dir}`)")
        log.warning(notes[-1])
        return None
