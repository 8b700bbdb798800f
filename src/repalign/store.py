"""The study directory: the resumable result store of a study.

Layout::

    <output>/
      config.resolved.toml    the validated config with every default filled in
      manifest.json           package versions, git commit, hardware, start/end time of each run
      results/<unit>.parquet  one file per unit of work (all rows of one model), schema RESULT_COLUMNS
      model_comparison.parquet  [compare]: model-vs-model CKA / RSA (repalign.alignment.compare_models)
      .lock                   held (fcntl.flock) while a run writes the study
      report/                 written by ``repalign report`` at the end of a run

Each unit file is written atomically (temporary file + rename), so a run killed at any
moment -- SIGKILL included -- leaves only complete unit files; resuming recomputes just the
units without one. A unit file records the results fingerprint of the config that produced
it, the fingerprint of each stage's settings, and the identity of every input each stage
read (Parquet schema metadata); a unit is *finished* when its file exists, every row is
``ok`` (or ``skipped``), the fingerprint matches and no input changed. Failed units are
computed again on the next run and their file is replaced. A unit that finished under other
settings or on other inputs is *stale*: only the stages whose settings or inputs changed are
computed again (:meth:`StudyStore.stale_stages`), the rows of the others are kept.

Damage from outside (a unit file overwritten, truncated or of another schema, a stray
``.parquet`` file, a truncated ``manifest.json`` or ``config.resolved.toml``) is named, never
a crash: readers skip the file with a warning (:attr:`StudyStore.damaged`), and a run moves it
into ``quarantine/`` (:meth:`StudyStore.quarantine_damaged`) and computes that unit again.
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from repalign._io import atomic_path, write_json_atomic, write_text_atomic
from repalign._options import DEFAULT_LAYER
from repalign.errors import InputError, MissingDataError, RepalignError
from repalign.schema import RESULT_COLUMNS, conform, empty_results

log = logging.getLogger(__name__)

CONFIG_FILE = "config.resolved.toml"
MANIFEST_FILE = "manifest.json"
RESULTS_DIR = "results"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = ".lock"
_FINGERPRINT_KEY = b"repalign.results_fingerprint"
_STAGE_FINGERPRINTS_KEY = b"repalign.stage_fingerprints"
_INPUTS_KEY = b"repalign.inputs"
_UNIT_KEY = b"repalign.unit"
_ROWS_KEY = b"repalign.rows_sha256"
MODEL_COMPARISON_FILE = "model_comparison.parquet"
#: what the comparison was computed from ([compare] settings, models, images): equal -> up to date
_COMPARISON_KEY = b"repalign.comparison_inputs"

#: a run's status in the manifest: "running" until it ends; "killed" is set by a later run
#: on an entry its process never closed (SIGKILL, power loss, the OOM killer)
RUN_RUNNING, RUN_FINISHED, RUN_INTERRUPTED, RUN_FAILED, RUN_KILLED = (
    "running",
    "finished",
    "interrupted",
    "failed",
    "killed",
)

#: Row statuses. "skipped" = nothing to compute (e.g. no published robustness results).
STATUS_OK, STATUS_FAILED, STATUS_SKIPPED = "ok", "failed", "skipped"


#: columns added to the schema after studies were written without them -> what such a
#: study's rows held: {column: (the stages it applies to, value)}; null on every other stage.
#: Every study written before layers existed read the penultimate layer; none knew a ceiling.
ADDED_COLUMNS: dict[str, tuple[tuple[str, ...], object]] = {
    "layer": (("alignment", "fewshot"), DEFAULT_LAYER),
    "ceiling_low": ((), None),
    "ceiling_high": ((), None),
}


class StudyLockedError(RepalignError, RuntimeError):
    """Another run is writing the same study directory."""


class DamagedFileError(InputError):
    """A file of the study directory that is not what repalign wrote (names it and why)."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class StudyResults:
    """A study's results as DataFrames (schema :data:`RESULT_COLUMNS`)."""

    path: Path
    results: pd.DataFrame
    config: dict[str, Any]
    manifest: dict[str, Any]
    #: damaged files left out of the above: path -> why (each was also logged as a warning)
    damaged: dict[str, str] = field(default_factory=dict)
    #: ``[compare]``: model_a, model_b, method, similarity, value, n (no rows when not run)
    model_comparison: pd.DataFrame = field(default_factory=lambda: _empty_comparison())

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


#: seconds to wait for the lock of a run that has ended (see _take_lock)
_ENDED_HOLDER_WAIT_S = 10.0


def _take_lock(handle) -> bool:
    """Take the study's flock without blocking; False when another run holds it.

    A run that was just killed can hold its lock a moment after its own process is gone: a
    process it forked (a worker, a subprocess not yet at exec) shares the lock until the
    kernel has torn it down too. So while the pid the lock file names is no longer running,
    wait up to ``_ENDED_HOLDER_WAIT_S`` for the lock instead of refusing at once.
    """
    deadline = time.monotonic() + _ENDED_HOLDER_WAIT_S
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        handle.seek(0)
        holder = handle.read().strip()
        if (holder.isdigit() and _running(int(holder))) or time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)  # no /proc (macOS): signal 0 only asks whether it exists
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


class StudyStore:
    """Read and write one study directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self._lock_handle = None
        #: damaged files met while reading: path -> why (readers skip them, a run quarantines them)
        self.damaged: dict[str, str] = {}
        self._quiet = False  # set while scanning for damage that the caller reports itself

    @property
    def results_dir(self) -> Path:
        return self.path / RESULTS_DIR

    def unit_file(self, unit_id: str) -> Path:
        return self.results_dir / f"{unit_id}.parquet"

    # -- locking -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Hold the study's write lock, or raise :class:`StudyLockedError`: at once while the
        run holding it is alive, after up to ``_ENDED_HOLDER_WAIT_S`` when it has ended.

        ``flock`` locks die with their process, so a killed run never leaves a stale lock.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")
        if not _take_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StudyLockedError(
                f"Study {self.path} is being written by another run (pid {holder}). "
                "Wait for it to finish, or set a different [study] output."
            )
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
        """The manifest, or ``{}`` when there is none -- or it is damaged (then a warning
        names it, and it is in :attr:`damaged`)."""
        file = self.path / MANIFEST_FILE
        if not file.is_file():
            return {}
        try:
            return _check_manifest(json.loads(file.read_bytes().decode("utf-8")))
        except (ValueError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
            self._damaged(file, f"not a readable manifest: {_one_line(exc)}")
            return {}

    def read_config(self) -> dict[str, Any]:
        """``config.resolved.toml`` as a dict, or ``{}`` when absent or damaged (warned, in :attr:`damaged`)."""
        from repalign._io import tomllib

        file = self.path / CONFIG_FILE
        if not file.is_file():
            return {}
        try:
            config = tomllib.loads(file.read_bytes().decode("utf-8"))
            if not all(isinstance(v, dict) for v in config.values()):
                raise ValueError("expected [sections] of keys")
            return config
        except (ValueError, OSError) as exc:  # TOMLDecodeError, UnicodeDecodeError are ValueErrors
            self._damaged(file, f"not a readable config: {_one_line(exc)}")
            return {}

    def _damaged(self, file: Path, why: str) -> None:
        if str(file) not in self.damaged and not self._quiet:
            log.warning("%s: %s; %s", file, why, "left out" if file.suffix == ".parquet" else "ignored")
        self.damaged[str(file)] = why

    def write_unit(
        self,
        unit_id: str,
        rows: pd.DataFrame,
        *,
        fingerprint: str,
        stage_fingerprints: dict[str, str] | None = None,
        inputs: dict[str, dict[str, dict[str, str | None]]] | None = None,
    ) -> Path:
        """Write (or replace) the rows of one unit, atomically.

        ``stage_fingerprints`` ({stage: fingerprint of its settings}) lets a later run with
        other settings recompute only the stages they change (:meth:`stale_stages`);
        ``inputs`` ({stage: {input: {part: digest}}}, see :func:`compare_inputs`) does the same
        for a changed input (a dataset file, an image folder, a weights file).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._require_lock()
        rows = conform(rows)
        table = pa.Table.from_pandas(rows, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_ROWS_KEY] = _rows_digest(rows).encode()
        meta[_FINGERPRINT_KEY] = fingerprint.encode()
        if stage_fingerprints is not None:
            meta[_STAGE_FINGERPRINTS_KEY] = json.dumps(stage_fingerprints, sort_keys=True).encode()
        if inputs is not None:
            meta[_INPUTS_KEY] = json.dumps(inputs, sort_keys=True).encode()
        meta[_UNIT_KEY] = unit_id.encode()
        table = table.replace_schema_metadata(meta)
        destination = self.unit_file(unit_id)
        with atomic_path(destination) as tmp:
            pq.write_table(table, tmp, write_page_checksum=True)  # a flipped bit in a data page is caught on read
            with open(tmp, "rb") as handle:  # data on disk before the rename makes it visible
                os.fsync(handle.fileno())
        return destination

    # -- reading -------------------------------------------------------------------------
    def unit_state(self, unit_id: str, fingerprint: str, inputs: dict | None = None) -> str:
        """ "missing", "finished", "failed" (has failed rows), "stale" (other settings, or --
        with ``inputs`` -- other inputs) or "damaged" (not an intact unit file)."""
        file = self.unit_file(unit_id)
        if not file.is_file():
            return "missing"
        try:
            meta, status = self._unit_meta(unit_id)
        except DamagedFileError:
            return "damaged"
        if meta.get(_FINGERPRINT_KEY, b"").decode() != fingerprint:
            return "stale"
        if inputs is not None and compare_inputs(_recorded_inputs(meta), inputs):
            return "stale"
        return "failed" if STATUS_FAILED in status else "finished"

    def stale_stages(
        self, unit_id: str, stage_fingerprints: dict[str, str], inputs: dict | None = None
    ) -> tuple[str, ...] | None:
        """The stages of a unit to compute again under settings ``stage_fingerprints``.

        Those (in the order given) whose fingerprint differs from the one its file records,
        or -- with ``inputs`` -- one of whose inputs changed (:func:`compare_inputs`); the rows
        of the other stages still hold. ``None`` when the whole unit must run: no file, a
        damaged one, failed rows (a crash may have cut a later stage short), or a file written
        without stage fingerprints.
        """
        try:
            meta, status = self._unit_meta(unit_id)
            recorded = meta.get(_STAGE_FINGERPRINTS_KEY)
            if recorded is None or STATUS_FAILED in status:
                return None
            recorded = json.loads(recorded)
        except (DamagedFileError, ValueError, FileNotFoundError):  # missing or damaged: computed whole
            return None
        changed = compare_inputs(_recorded_inputs(meta), inputs) if inputs is not None else {}
        return tuple(stage for stage, fp in stage_fingerprints.items() if recorded.get(stage) != fp or stage in changed)

    def input_changes(self, unit_id: str, inputs: dict) -> dict[str, list[str]]:
        """{stage: ["peterson:mine changed: sim.csv", ...]}: what changed since the unit's file
        was written (nothing for a missing or damaged file)."""
        try:
            meta, _ = self._unit_meta(unit_id)
        except (DamagedFileError, FileNotFoundError):
            return {}
        return compare_inputs(_recorded_inputs(meta), inputs)

    def _unit_meta(self, unit_id: str) -> tuple[dict[bytes, bytes], list]:
        """(schema metadata, status column) of an intact unit file."""
        file = self.unit_file(unit_id)
        if not file.is_file():
            raise FileNotFoundError(file)
        meta, frame = self._read_unit(file)
        return meta, frame["status"].tolist()

    def _read_unit(self, file: Path) -> tuple[dict[bytes, bytes], pd.DataFrame]:
        """(schema metadata, rows) of an intact unit file of this study, or
        :class:`DamagedFileError` saying why it is not one."""
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(file, page_checksum_verification=True)
        except Exception as exc:  # pyarrow's errors on random bytes or a truncated file vary
            reason = _one_line(exc).replace(f"'{file}'", file.name).replace(str(file), file.name)
            raise DamagedFileError(f"{file}: not a readable Parquet file: {reason}") from None
        try:
            return _check_unit_table(table, file)
        except DamagedFileError:
            raise
        except Exception as exc:  # a footer that decodes but holds nonsense (e.g. a column name not UTF-8)
            raise DamagedFileError(f"{file}: not a unit file of a repalign study: {_one_line(exc)}") from None

    def _read_unit_frame(self, file: Path) -> pd.DataFrame:
        return self._read_unit(file)[1]

    def read_unit(self, unit_id: str) -> pd.DataFrame:
        """The rows of one unit file, schema :data:`RESULT_COLUMNS` (:class:`DamagedFileError` if damaged)."""
        return self._read_unit_frame(self.unit_file(unit_id))

    def unit_files(self) -> list[Path]:
        return sorted(self.results_dir.glob("*.parquet")) if self.results_dir.is_dir() else []

    def read_results(self) -> pd.DataFrame:
        """Every row of every intact unit file, schema :data:`RESULT_COLUMNS`.

        A damaged file is left out with a warning naming it (and recorded in :attr:`damaged`):
        its rows are not shown rather than shown wrong; a run computes its unit again.
        """
        frames = []
        for file in self.unit_files():
            try:
                frames.append(self._read_unit_frame(file))
            except DamagedFileError as exc:
                self._damaged(file, str(exc).removeprefix(f"{file}: "))
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_results()
        return conform(pd.concat(frames, ignore_index=True))

    # -- the model comparison ([compare]) -------------------------------------------------
    @property
    def comparison_file(self) -> Path:
        return self.path / MODEL_COMPARISON_FILE

    def write_model_comparison(self, table: pd.DataFrame, *, inputs_key: str) -> Path:
        """Write the comparison table atomically, with the key of what it was computed from."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._require_lock()
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), _COMPARISON_KEY: inputs_key.encode()})
        with atomic_path(self.comparison_file) as tmp:
            pq.write_table(arrow, tmp, write_page_checksum=True)
        return self.comparison_file

    def model_comparison_inputs(self) -> str | None:
        """The key :meth:`write_model_comparison` recorded (None: no intact file)."""
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(self.comparison_file).metadata or {}
        except Exception:  # absent or damaged: either way, compute it again
            return None
        value = meta.get(_COMPARISON_KEY)
        return value.decode() if value else None

    def read_model_comparison(self) -> pd.DataFrame:
        """The comparison table (no rows when absent; a damaged file is named and left out)."""
        import pyarrow.parquet as pq

        if not self.comparison_file.is_file():
            return _empty_comparison()
        try:
            frame = pq.read_table(self.comparison_file, page_checksum_verification=True).to_pandas()
        except Exception as exc:
            self._damaged(self.comparison_file, f"not a readable Parquet file: {_one_line(exc)}")
            return _empty_comparison()
        from repalign.alignment.compare import COMPARISON_COLUMNS

        if list(frame.columns) != list(COMPARISON_COLUMNS):
            self._damaged(self.comparison_file, f"not a model comparison (columns {list(frame.columns)})")
            return _empty_comparison()
        return frame

    def damaged_files(self) -> dict[Path, str]:
        """Every file of the study directory a run would not trust: path -> why (not logged:
        the caller says what it does about them)."""
        self.damaged, self._quiet = {}, True
        try:
            self.read_manifest()
            self.read_config()
            self.read_results()
        finally:
            self._quiet = False
        return {Path(p): why for p, why in self.damaged.items()}

    # -- damage ----------------------------------------------------------------------------
    def quarantine_damaged(self) -> list[str]:
        """Move every damaged file into ``quarantine/`` (under the lock, at the start of a
        run), so its unit is computed again and nothing is deleted. Returns one sentence per file."""
        self._require_lock()
        moved = []
        for file, why in self.damaged_files().items():
            target = self._quarantine(file)
            moved.append(f"{file.relative_to(self.path)} was damaged ({why}); moved to {target.relative_to(self.path)}")
            log.warning(moved[-1])
        self.damaged = {}
        return moved

    def _quarantine(self, file: Path) -> Path:
        folder = self.path / QUARANTINE_DIR
        folder.mkdir(exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        for n in range(1000):
            target = folder / f"{file.stem}.{stamp}{f'-{n}' if n else ''}{file.suffix}"
            if not target.exists():
                break
        os.replace(file, target)
        return target


def compare_inputs(recorded: dict | None, current: dict) -> dict[str, list[str]]:
    """What changed between the inputs a unit file records and the current ones.

    Inputs are ``{stage: {input: {part: digest}}}``, e.g. ``{"alignment": {"peterson:mine":
    {"repalign.toml": ..., "sim.csv": ..., "images/": ...}}}``. A part whose digest is unknown
    on either side (``None``: e.g. weights not downloaded here) is not compared. A file
    written before inputs were recorded (``recorded`` None) counts as changed everywhere.
    Returns {stage: ["peterson:mine changed: sim.csv", ...]} for the stages with a change.
    """
    changed: dict[str, list[str]] = {}
    for stage, now in current.items():
        if recorded is None or stage not in recorded:
            changed[stage] = ["inputs not recorded by the repalign that wrote it"]
            continue
        before = recorded[stage] if isinstance(recorded[stage], dict) else {}
        reasons = []
        for name, parts in now.items():
            old = before.get(name)
            if not isinstance(old, dict):
                reasons.append(f"{name} is new")
                continue
            differ = [part for part in {**old, **parts} if _part_changed(old, parts, part)]
            if differ:
                reasons.append(f"{name} changed: {', '.join(differ)}")
        if reasons:
            changed[stage] = reasons
    return changed


def _check_unit_table(table, file: Path) -> tuple[dict[bytes, bytes], pd.DataFrame]:
    """(metadata, rows) of a unit file's table, checked to be what the store wrote there."""
    meta = dict(table.schema.metadata or {})
    unit = meta.get(_UNIT_KEY)
    if unit is None:
        raise DamagedFileError(f"{file}: not a unit file of a repalign study (no unit id in its metadata)")
    if unit.decode(errors="replace") != file.stem:
        raise DamagedFileError(f"{file}: holds the rows of unit '{unit.decode(errors='replace')}', not '{file.stem}'")
    missing = [c for c in RESULT_COLUMNS if c not in table.column_names and c not in ADDED_COLUMNS]
    if missing:
        raise DamagedFileError(f"{file}: another schema: no column {', '.join(missing[:5])}")
    try:
        frame = conform(table.to_pandas())
    except Exception as exc:  # columns of the right names but the wrong types
        raise DamagedFileError(f"{file}: another schema: {_one_line(exc)}") from None
    # the footer has no checksum of its own: the rows' digest catches a change there (files
    # of repalign versions before it have none and are taken as they are). A file written
    # before a column was added was digested without it.
    present = [c for c in RESULT_COLUMNS if c in table.column_names]
    recorded = meta.get(_ROWS_KEY)
    if recorded is not None and recorded.decode(errors="replace") != _rows_digest(frame[present]):
        raise DamagedFileError(f"{file}: its rows differ from the digest written with them")
    if len(present) < len(RESULT_COLUMNS):
        frame = _fill_added_columns(frame, present)
    return meta, frame


def _fill_added_columns(frame: pd.DataFrame, present: list[str]) -> pd.DataFrame:
    """Rows of a unit file written before the columns of :data:`ADDED_COLUMNS` that are not
    in ``present``: those columns filled with what they held then (``frame`` conformed)."""
    frame = frame.copy()
    for column, (stages, value) in ADDED_COLUMNS.items():
        if column not in present:
            frame.loc[frame["stage"].isin(stages), column] = value
    return frame


def _rows_digest(rows: pd.DataFrame) -> str:
    """sha256 of a unit's rows (values and order; the columns are the schema's)."""
    import hashlib

    return hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()


def _part_changed(old: dict, now: dict, part: str) -> bool:
    if part not in old or part not in now:  # a file added to or dropped from what is read
        return True
    return old[part] is not None and now[part] is not None and old[part] != now[part]


def _recorded_inputs(meta: dict[bytes, bytes]) -> dict | None:
    raw = meta.get(_INPUTS_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _check_manifest(manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise ValueError(f"expected a JSON object, got {type(manifest).__name__}")
    runs = manifest.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ValueError("'runs' is not a list of records")
    return manifest


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_study(path: str | os.PathLike) -> StudyResults:
    """Load a study directory written by ``repalign run``.

    Returns a :class:`StudyResults` with ``.results`` (all rows), ``.alignment``,
    ``.fewshot``, ``.robustness``, ``.failures``, ``.config``, ``.manifest`` and ``.path``.
    """
    store = StudyStore(path)
    if not store.path.is_dir():
        raise MissingDataError(f"No study directory at {store.path}. Run `repalign run CONFIG` first.")
    config_file = store.path / CONFIG_FILE
    if not config_file.is_file() and not store.results_dir.is_dir():
        raise InputError(f"{store.path} is not a study directory (no {CONFIG_FILE} and no {RESULTS_DIR}/).")
    config, manifest, results = store.read_config(), store.read_manifest(), store.read_results()
    comparison = store.read_model_comparison()
    return StudyResults(
        path=store.path,
        results=results,
        config=config,
        manifest=manifest,
        damaged=dict(store.damaged),
        model_comparison=comparison,
    )


def _empty_comparison() -> pd.DataFrame:
    from repalign.alignment.compare import COMPARISON_COLUMNS

    return pd.DataFrame(columns=list(COMPARISON_COLUMNS))


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


def close_abandoned_runs(manifest: dict[str, Any]) -> int:
    """Mark "killed" every run entry still "running": called by a run that holds the study's
    lock, so no other run is alive -- an entry left "running" belongs to a process that ended
    without recording it (SIGKILL, power loss, the OOM killer). Returns how many."""
    n = 0
    for record in manifest.get("runs", []):
        if record.get("status") == RUN_RUNNING:
            record["status"] = RUN_KILLED
            record["note"] = f"the process ended without recording its end; marked by the run of {utc_now()}"
            n += 1
    if n:
        log.warning("%d earlier run(s) of this study ended without recording it (killed); marked in the manifest", n)
    return n
