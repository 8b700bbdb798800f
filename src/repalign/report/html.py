"""The self-contained HTML report of a study directory: rendering and files.

``write_report(study_dir)`` takes the analyses of :func:`repalign.report.analysis.analyze_study`
and writes one HTML file rendered from the jinja2 templates in ``report/templates/`` (figures
embedded as base64 PNG, inline CSS and a few lines of sortable-table JavaScript, no external
resources), plus each table as CSV and each figure as PNG and PDF next to it. The template
environment autoescapes, so every piece of text from the study (model names, errors, config
values) is HTML-escaped where it is written out; nothing here builds markup from strings.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repalign._io import atomic_path, write_text_atomic
from repalign._options import DEFAULT_CORRECTION, DEFAULT_N_BOOTSTRAP
from repalign.errors import InputError
from repalign.report.analysis import ReportData, analyze_study

log = logging.getLogger(__name__)

REPORT_DIRNAME = "report"
REPORT_FILENAME = "report.html"
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class ColumnView:
    name: str
    is_text: bool  # left-aligned; numbers are right-aligned


@dataclass(frozen=True)
class CellView:
    text: str  # what the cell shows
    key: str | None  # data-v: the sort key (the unrounded number), None to sort by text
    is_text: bool


def cell_view(value: Any) -> CellView:
    """How one table cell is shown: rounded text, an exact sort key, and its alignment."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return CellView("", "", False)
    if isinstance(value, (bool, np.bool_)):
        return CellView("yes" if value else "no", "1" if value else "0", True)
    if isinstance(value, (int, np.integer)):
        return CellView(str(int(value)), str(int(value)), False)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            text = f"{v:.3g}"
        else:
            text = f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
        return CellView(text, repr(v), False)
    if isinstance(value, (list, tuple)):
        return CellView(", ".join(str(v) for v in value), None, True)
    return CellView(str(value), None, True)


def column_views(frame: pd.DataFrame) -> list[ColumnView]:
    return [
        ColumnView(str(c), not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
        for c in frame.columns
    ]


def row_views(frame: pd.DataFrame):
    for row in frame.itertuples(index=False, name=None):
        yield [cell_view(value) for value in row]


@functools.lru_cache(maxsize=1)
def environment():
    """The report's jinja2 environment: package templates, autoescaping, strict undefined names."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("repalign.report", "templates"),
        autoescape=True,  # every template, whatever its extension: the study's text is never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(column_views=column_views, row_views=row_views)
    return env


@dataclass(frozen=True)
class HoverView:
    """Hover labels of one figure: an SVG overlay in the figure's own units (points)."""

    width: float
    height: float
    points: list[tuple[str, float, float]]  # title, x, y (from the top left)


def hover_view(figure) -> HoverView | None:
    """Where the figure's hover points lie in the rendered image, or None without any.

    Call after the figure was saved (drawn), so that the layout is final.
    """
    from repalign.report import figures as figs

    if not figure.hover:
        return None
    width, height = (float(v) * 72 for v in figure.figure.get_size_inches())
    positions = figs.hover_positions(figure.figure, figure.hover)
    points = [
        (str(row.title), round(row.fx * width, 2), round((1 - row.fy) * height, 2))
        for row in positions.itertuples(index=False)
    ]
    return HoverView(round(width, 2), round(height, 2), points)


def render_html(
    report: ReportData,
    *,
    images: dict[str, bytes],
    csv_names: dict[str, str] | None = None,
    created: str | None = None,
    hover: dict[str, HoverView] | None = None,
) -> str:
    """The whole document as a string (no external resources).

    Args:
        report: the analyses (:func:`analyze_study`).
        images: figure name -> PNG bytes, embedded as base64.
        csv_names: table name -> CSV file name to link (relative to the HTML file).
        created: the time stamp shown under the title; default now (UTC).
        hover: figure name -> its hover labels (:func:`hover_view`), shown over the image.
    """
    missing = [figure.name for figure in report.figures() if figure.name not in images]
    if missing:
        raise InputError(f"No PNG given for the figures {missing}; pass images={{name: png_bytes}}.")
    if created is None:
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            report=report,
            title=f"repalign report: {report.name}",
            created=created,
            images={name: base64.b64encode(png).decode("ascii") for name, png in images.items()},
            csv_names=dict(csv_names or {}),
            hover=dict(hover or {}),
        )
    )


def write_report(
    study_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = None,
    correction: str = DEFAULT_CORRECTION,
    relative_to_ceiling: bool = False,
) -> Path:
    """Write the study's HTML report (and its tables as CSV, figures as PNG + PDF).

    Args:
        study_dir: a study directory written by ``repalign run``.
        out: the HTML file; default ``<study_dir>/report/report.html``. CSVs and figures go
            into the same folder.
        n_bootstrap: bootstrap resamples over models for every headline CI (0 = none).
        random_state: seed of the bootstraps; default the study's ``[study] seed``.
        correction: p-value adjustment across each grid of correlations ("holm", "fdr_bh", ...).
        relative_to_ceiling: draw the noise-ceiling figures as alignment / ceiling.

    Returns:
        Path of the HTML file.
    """
    from repalign.report import figures as figs
    from repalign.store import load_study

    study = load_study(study_dir)
    out_path = Path(out) if out is not None else Path(study.path) / REPORT_DIRNAME / REPORT_FILENAME
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--out must name an .html file; got {out_path}.")
    if out_path.exists() and out_path.is_dir():
        raise InputError(f"--out {out_path} is a directory; give a file name such as {out_path / REPORT_FILENAME}.")
    folder = out_path.parent
    folder.mkdir(parents=True, exist_ok=True)

    report = analyze_study(
        study,
        n_bootstrap=n_bootstrap,
        random_state=random_state,
        correction=correction,
        relative_to_ceiling=relative_to_ceiling,
    )
    csv_names: dict[str, str] = {}
    images: dict[str, bytes] = {}
    for table in report.tables():
        csv_names[table.name] = f"{table.name}.csv"
        with atomic_path(folder / csv_names[table.name]) as tmp:
            table.frame.to_csv(tmp, index=False)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; reports are meant to be shared
    hover: dict[str, HoverView] = {}
    for figure in report.figures():
        # the written PNG is also the embedded one: one raster render per figure, not two
        paths = figs.save_figure(figure.figure, folder, figure.name)
        images[figure.name] = paths["png"].read_bytes()
        if (view := hover_view(figure)) is not None:  # after saving: the layout is final
            hover[figure.name] = view
    write_text_atomic(out_path, render_html(report, images=images, csv_names=csv_names, hover=hover))
    os.chmod(out_path, 0o644)
    log.info("report written to %s", out_path)
    return out_path


__all__ = ["write_report", "render_html", "hover_view", "environment", "REPORT_DIRNAME", "REPORT_FILENAME"]
