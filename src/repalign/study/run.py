"""The run loop: plan the units, skip finished ones, execute the rest, store every result,
write the report.

Resume is the default: run the same config again and only units without a finished file
(or with failed rows, or computed under a different config) run. Because every unit is
computed from the config alone with seeded randomness, resumed values equal those of an
uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from repalign.schema import conform
from repalign.store import STATUS_FAILED, StudyStore, new_manifest, utc_now
from repalign.study.config import StudyConfig, as_config
from repalign.study.executors import make_executor
from repalign.study.plan import Unit, describe_plan, plan_units
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
    the user should know that are not failures (e.g. the report could not be written).
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
) -> StudyOutcome:
    """Run (or with ``dry_run=True`` only plan) a study.

    Args:
        config: a :class:`StudyConfig`, its dict form, or the path of a TOML config.
        executor, jobs, address: override ``[execution]`` (``address`` implies nothing about
            the executor; pass ``executor="ray"`` too).
        output: override ``[study] output`` (the study directory).
        live: rich live progress (True), log lines (False), or by terminal (None).

    Returns:
        A :class:`StudyOutcome`; ``outcome.exit_code`` is 0 when every unit succeeded and 3
        when some failed. Invalid configs raise :class:`~repalign.errors.ConfigError`; a
        study being written by another run raises ``StudyLockedError``.
    """
    cfg = _with_overrides(as_config(config), executor=executor, jobs=jobs, address=address, output=output)
    units = plan_units(cfg)
    store = StudyStore(cfg.output_dir)
    if dry_run:
        return StudyOutcome(
            path=store.path, config=cfg, plan=describe_plan(cfg, units, store), dry_run=True, n_units=len(units)
        )

    started = time.monotonic()
    with store.locked():
        _remove_partial_files(store)
        store.write_config(cfg.to_toml())
        manifest = new_manifest(store.read_manifest())
        run_record: dict[str, Any] = {
            "start": utc_now(),
            "end": None,
            "executor": cfg.execution.executor,
            "jobs": cfg.execution.jobs,
            "status": "running",
        }
        manifest["runs"].append(run_record)
        manifest["start"], manifest["end"] = run_record["start"], None
        store.write_manifest(manifest)

        fingerprint = cfg.results_fingerprint()
        states = {u.id: store.unit_state(u.id, fingerprint) for u in units}
        todo = [u for u in units if states[u.id] != "finished"]
        outcome = StudyOutcome(
            path=store.path,
            config=cfg,
            plan=[u.to_dict() | {"state": states[u.id]} for u in units],
            n_units=len(units),
            n_skipped=len(units) - len(todo),
        )
        log.info("%d units, %d finished, %d to run", len(units), outcome.n_skipped, len(todo))

        failed_here: list[dict] = []
        try:
            _execute(cfg, store, todo, fingerprint, outcome, live, failed_here)
            run_record["status"] = "finished"
        except BaseException:
            run_record["status"] = "interrupted"
            raise
        finally:
            run_record["end"] = manifest["end"] = utc_now()
            run_record["units_run"] = outcome.n_run
            run_record["units_failed"] = len({f["model"] for f in failed_here})
            run_record["failures"] = failed_here
            store.write_manifest(manifest)

    results = store.read_results()
    current = results[results["unit"].isin([u.id for u in units])]
    outcome.failures = current[current["status"] == STATUS_FAILED].reset_index(drop=True)
    outcome.n_failed_units = int(outcome.failures["unit"].nunique())
    if cfg.study.report:
        outcome.report = _write_report(store.path, outcome.notes)
    outcome.duration_s = time.monotonic() - started
    return outcome


def _execute(
    cfg: StudyConfig,
    store: StudyStore,
    todo: list[Unit],
    fingerprint: str,
    outcome: StudyOutcome,
    live: bool | None,
    failed_here: list[dict],
) -> None:
    if not todo:
        return
    ex = cfg.execution
    executor = make_executor(ex.executor, jobs=ex.jobs, threads=ex.threads, address=ex.address)
    parallel = ex.jobs if ex.executor == "local" else len(todo)
    progress = StudyProgress(outcome.n_units, already_done=outcome.n_skipped, parallel=parallel, live=live)

    def on_event(unit: Unit, event: str, payload: Any) -> None:
        if event == "start":
            progress.unit_started(unit)
        elif event == "stage":
            progress.unit_step(unit, *payload)

    try:
        for result in executor.run(todo, cfg.to_dict(), on_event):
            rows = conform(result.rows)
            rows["unit"] = result.unit.id
            store.write_unit(result.unit.id, rows, fingerprint=fingerprint)
            failed = rows[rows["status"] == STATUS_FAILED]
            n_failed = len(failed)
            # kept in the manifest: a rerun that succeeds replaces the unit's rows
            for record in failed[["model", "stage", "dataset", "error"]].to_dict(orient="records"):
                failed_here.append({k: None if pd.isna(v) else str(v) for k, v in record.items()})
            outcome.n_run += 1
            progress.unit_finished(result.unit, n_failed_rows=n_failed, duration_s=result.duration_s)
    finally:
        progress.close()


def _with_overrides(cfg: StudyConfig, *, executor, jobs, address, output) -> StudyConfig:
    execution = {k: v for k, v in {"executor": executor, "jobs": jobs, "address": address}.items() if v is not None}
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
