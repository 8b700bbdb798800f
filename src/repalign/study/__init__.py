"""The study pipeline: a TOML config -> units of work (one per model) -> executors (local
processes or Ray tasks) -> a resumable Parquet result store -> the report.

Public API (imported lazily, so ``import repalign.study`` stays cheap)::

    load_config(path) -> StudyConfig
    run_study(config, *, executor=None, jobs=None, dry_run=False, address=None) -> StudyOutcome
    load_study(path) -> StudyResults
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "StudyConfig": "repalign.study.config",
    "load_config": "repalign.study.config",
    "parse_config": "repalign.study.config",
    "run_study": "repalign.study.run",
    "StudyOutcome": "repalign.study.run",
    "load_study": "repalign.store",
    "StudyResults": "repalign.store",
    "StudyLockedError": "repalign.store",
    "RESULT_COLUMNS": "repalign.schema",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'repalign.study' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
