"""The study directory: the resumable result store of a study.

Layout::

    <output>/
      config.resolved.toml    the validated config with every default filled in
      manifest.json           package versions, git commit, hardware, start/end time of each run
      results/<unit>.parquet  one file per unit of work (all rows of one model), schema RESULT_COLUMNS
      .lock                   held (fcntl.flock) while a run writes the study
      report/                 written by ``repalign report`` at the end of a run

Each unit file is written atomically (temporary file + rename), so a run killed at any
moment -- SIGKILL included -- leaves only complete unit files; resuming recomputes just the
units without one. A unit file records the results fingerprint of the config that produced
it, and the fingerprint of each stage's settings (Parquet schema metadata); a unit is
*finished* when its file exists, every row is ``ok`` (or ``skipped``) and the fingerprint
matches. Failed units are computed again on the next run and their file is replaced. A
unit that finished under other settings is *stale*: only the stages whose settings changed
are computed again (:meth:`StudyStore.stale_stages`), the rows of the others are kept.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from repalign._io import atomic_path, write_json_atomic, write_text_atomic
from repalign.errors import InputError, MissingDataError, RepalignError
from repalign.schema import RESULT_COLUMNS, conform, empty_results

log = logging.getLogger(__name__)

CONFIG_FILE = "config.resolved.toml"
MANIFEST_FILE = "manifest.json"
RESULTS_DIR = "results"
LOCK_FILE = ".lock"
_FINGERPRINT_KEY = b"repalign.results_fingerprint"
_STAGE_FINGERPRINTS_KEY = b"repalign.stage_fingerprints"
_UNIT_KEY = b"repalign.unit"

#: Row statuses. "skipped" = nothing to compute (e.g. no published robustness results).
STATUS_OK, STATUS_FAILED, STATUS_SKIPPED = "ok", "failed", "skipped"


class StudyLockedError(RepalignError, RuntimeError):
    """Another run is writing the same study directory."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class StudyResults:
    """A study's results as DataFrames (schema :data:`RESULT_COLUMNS`)."""

    path: Path
    results: pd.DataFrame
    config: dict[str, Any]
    manifest: dict[str, Any]

    def _stage(self, stage: str) -> pd.DataFrame:
        rows = self.results[(self.results["stage"] == stage) & (self.results["status"] == STATUS_OK)]
        return rows.reset_index(drop=True)

    @property
    def alignment(self) -> pd.DataFrame:
        """Successful alignment rows: model, dataset, metric, similarity, value, ci_low, ci_high, n."""
        return self._stage("alignment")

    @property
    def fewshot(self) -> pd.DataFrame:
        """Successful few-shot rows: model, dataset, head, shots, value (accuracy), CI, n (seeds)."""
        return self._stage("fewshot")

    @property
    def robustness(self) -> pd.DataFrame:
        """Published robustness rows: model, dataset (imagenet, imagenet-a, ...), metric, value."""
        return self._stage("robustness")

    @property
    def failures(self) -> pd.DataFrame:
        """Failed rows, with the error message of each."""
        return self.results[self.results["status"] == STATUS_FAILED].reset_index(drop=True)


class StudyStore:
    """Read and write one study directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self._lock_handle = None

    @property
    def results_dir(self) -> Path:
        return self.path / RESULTS_DIR

    def unit_file(self, unit_id: str) -> Path:
        return self.results_dir / f"{unit_id}.parquet"

    # -- locking -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Hold the study's write lock, or raise :class:`StudyLockedError` at once.

        ``flock`` locks die with their process, so a killed run never leaves a stale lock.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StudyLockedError(
                f"Study {self.path} is being written by another run (pid {holder}). "
                "Wait for it to finish, or set a different [study] output."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle
        try:
            yield self
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
            self._lock_handle = None

    def _require_lock(self) -> None:
        if self._lock_handle is None:
            raise RuntimeError("write to a study only inside StudyStore.locked()")

    # -- writing -------------------------------------------------------------------------
    def write_config(self, toml_text: str) -> None:
        self._require_lock()
        write_text_atomic(self.path / CONFIG_FILE, toml_text)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self._require_lock()
        write_json_atomic(self.path / MANIFEST_FILE, manifest)

    def read_manifest(self) -> dict[str, Any]:
        file = self.path / MANIFEST_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    def write_unit(
        self, unit_id: str, rows: pd.DataFrame, *, fingerprint: str, stage_fingerprints: dict[str, str] | None = None
    ) -> Path:
        """Write (or replace) the rows of one unit, atomically.

        ``stage_fingerprints`` ({stage: fingerprint of its settings}) lets a later run with
        other settings recompute only the stages they change (:meth:`stale_stages`).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._require_lock()
        rows = conform(rows)
        table = pa.Table.from_pandas(rows, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_FINGERPRINT_KEY] = fingerprint.encode()
        if stage_fingerprints is not None:
            meta[_STAGE_FINGERPRINTS_KEY] = json.dumps(stage_fingerprints, sort_keys=True).encode()
        meta[_UNIT_KEY] = unit_id.encode()
        table = table.replace_schema_metadata(meta)
        destination = self.unit_file(unit_id)
        with atomic_path(destination) as tmp:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as handle:  # data on disk before the rename makes it visible
                os.fsync(handle.fileno())
        return destination

    # -- reading -------------------------------------------------------------------------
    def unit_state(self, unit_id: str, fingerprint: str) -> str:
        """ "missing", "finished", "failed" (has failed rows) or "stale" (other config)."""
        import pyarrow.parquet as pq

        file = self.unit_file(unit_id)
        if not file.is_file():
            return "missing"
        try:
            schema = pq.read_schema(file)
            status = pq.read_table(file, columns=["status"]).column("status").to_pylist()
        except Exception as exc:  # a file damaged outside our control: recompute the unit
            log.warning("unreadable unit file %s (%s); it will be recomputed", file, exc)
            return "stale"
        if (schema.metadata or {}).get(_FINGERPRINT_KEY, b"").decode() != fingerprint:
            return "stale"
        return "failed" if STATUS_FAILED in status else "finished"

    def stale_stages(self, unit_id: str, stage_fingerprints: dict[str, str]) -> tuple[str, ...] | None:
        """The stages of a unit to compute again under settings ``stage_fingerprints``.

        Those (in the order given) whose fingerprint differs from the one its file records;
        the rows of the other stages still hold. ``None`` when the whole unit must run: no
        file, an unreadable one, failed rows (a crash may have cut a later stage short), or a
        file written without stage fingerprints.
        """
        import pyarrow.parquet as pq

        file = self.unit_file(unit_id)
        try:
            recorded = (pq.read_schema(file).metadata or {}).get(_STAGE_FINGERPRINTS_KEY)
            if (
                recorded is None
                or STATUS_FAILED in pq.read_table(file, columns=["status"]).column("status").to_pylist()
            ):
                return None
            recorded = json.loads(recorded)
        except Exception:  # missing or damaged: the unit is computed whole
            return None
        return tuple(stage for stage, fp in stage_fingerprints.items() if recorded.get(stage) != fp)

    def read_unit(self, unit_id: str) -> pd.DataFrame:
        """The rows of one unit file, schema :data:`RESULT_COLUMNS`."""
        import pyarrow.parquet as pq

        return conform(pq.read_table(self.unit_file(unit_id)).to_pandas())

    def read_results(self) -> pd.DataFrame:
        """Every row of every unit file, schema :data:`RESULT_COLUMNS`."""
        import pyarrow.parquet as pq

        files = sorted(self.results_dir.glob("*.parquet")) if self.results_dir.is_dir() else []
        frames = [pq.read_table(f).to_pandas() for f in files]
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_results()
        return conform(pd.concat(frames, ignore_index=True))


def load_study(path: str | os.PathLike) -> StudyResults:
    """Load a study directory written by ``repalign run``.

    Returns a :class:`StudyResults` with ``.results`` (all rows), ``.alignment``,
    ``.fewshot``, ``.robustness``, ``.failures``, ``.config``, ``.manifest`` and ``.path``.
    """
    from repalign._io import tomllib

    store = StudyStore(path)
    if not store.path.is_dir():
        raise MissingDataError(f"No study directory at {store.path}. Run `repalign run CONFIG` first.")
    config_file = store.path / CONFIG_FILE
    if not config_file.is_file() and not store.results_dir.is_dir():
        raise InputError(f"{store.path} is not a study directory (no {CONFIG_FILE} and no {RESULTS_DIR}/).")
    config = tomllib.loads(config_file.read_text()) if config_file.is_file() else {}
    return StudyResults(path=store.path, results=store.read_results(), config=config, manifest=store.read_manifest())


# ---------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------
_PACKAGES = (
    "repalign",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "pingouin",
    "numba",
    "torch",
    "torchvision",
    "timm",
    "ai-edge-litert",
    "ray",
    "rich",
    "matplotlib",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (imports nothing)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """Commit of the repalign source tree (with ``-dirty`` when modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def hardware() -> dict[str, Any]:
    """CPU, memory and GPUs of this machine (GPUs via nvidia-smi, so torch is not imported)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    with contextlib.suppress(OSError, ValueError, AttributeError):
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        info["gpus"] = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    return info


def new_manifest(previous: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = dict(previous or {})
    manifest.update(
        {
            "packages": package_versions(),
            "git_commit": git_commit(),
            "hardware": hardware(),
            "schema": list(RESULT_COLUMNS),
        }
    )
    manifest.setdefault("created", utc_now())
    manifest.setdefault("runs", [])
    return manifest
