"""The study report: analyses as data, rendered into a self-contained HTML file.

``write_report(study_dir)`` is the entry point (also ``repalign report STUDY_DIR``).
``analyze_study(study)`` returns what the report shows as plain data (sections with notes,
tables as DataFrames, figures, captions), for use from Python without HTML.

Where things live: :mod:`~repalign.report.analysis` decides and computes the analyses,
:mod:`~repalign.report.tables`, :mod:`~repalign.report.figures` and
:mod:`~repalign.report.summaries` hold the computations, :mod:`~repalign.report.captions`
the captions and the paper's published values they quote, and :mod:`~repalign.report.html`
renders the jinja2 templates of ``report/templates/`` and writes the files.
Importing this package imports neither matplotlib, pingouin nor jinja2.
"""

from __future__ import annotations

from typing import Any

__all__ = ["analyze_study", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from repalign.report.html import write_report

        return write_report
    if name == "analyze_study":
        from repalign.report.analysis import analyze_study

        return analyze_study
    raise AttributeError(f"module 'repalign.report' has no attribute {name!r}")
