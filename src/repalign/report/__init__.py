"""The study report: tables, figures and a self-contained HTML file.

``write_report(study_dir)`` is the entry point (also ``repalign report STUDY_DIR``);
:mod:`repalign.report.tables` and :mod:`repalign.report.figures` hold the pieces.
Importing this package imports neither matplotlib nor pingouin.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from repalign.report.html import write_report

        return write_report
    raise AttributeError(f"module 'repalign.report' has no attribute {name!r}")
