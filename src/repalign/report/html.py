"""The self-contained HTML report of a study directory.

``write_report(study_dir)`` loads the study, computes every table and figure it can, and
writes one HTML file with the figures embedded (base64 PNG) and sortable tables (a few
lines of inline JavaScript, no external resources), plus each table as CSV and each figure
as PNG and PDF next to it. Sections whose inputs are missing (no robustness stage, no
few-shot stage, too few models for statistics) are left out with a note instead of failing.
Every piece of text that comes from the study (model names, errors, config values) is
escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repalign._io import atomic_path, write_text_atomic
from repalign._options import DEFAULT_CORRECTION, DEFAULT_N_BOOTSTRAP
from repalign.errors import InputError, RepalignError

log = logging.getLogger(__name__)

#: Fewer models than this and the report shows tables only, no statistics.
MIN_MODELS_FOR_STATS = 6
GROUP_SIZE = 5
REPORT_DIRNAME = "report"
REPORT_FILENAME = "report.html"


@dataclass
class Table:
    name: str  # file stem of the CSV
    frame: pd.DataFrame
    caption: str


@dataclass
class FigureOut:
    name: str  # file stem of the PNG/PDF
    figure: Any  # matplotlib Figure
    caption: str


@dataclass
class Section:
    key: str
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# analysis -> sections
# ---------------------------------------------------------------------------------------------
@dataclass
class _Inputs:
    study: Any
    alignment: pd.DataFrame | None  # per model, one column per metric
    robustness: pd.DataFrame | None  # per model, "imagenet-a top1", ...
    fewshot: pd.DataFrame | None  # tidy model, head, shots, value (mean over datasets)
    fewshot_by_dataset: pd.DataFrame | None
    groups: pd.DataFrame | None
    group_size: int
    seed: int
    n_bootstrap: int
    correction: str
    notes: list[str]


def _attempt(section: Section, what: str, func: Callable[[], None]) -> None:
    """Run one part of a section; a RepalignError (e.g. too few models) becomes a note."""
    try:
        func()
    except RepalignError as exc:
        log.info("report: %s left out: %s", what, exc)
        section.notes.append(f"{what} left out: {exc}")


def _prepare(study, *, n_bootstrap: int, random_state: int | None, correction: str) -> _Inputs:
    from repalign import stats
    from repalign.report import tables

    notes: list[str] = []
    seed = random_state
    if seed is None:
        seed = int((study.config.get("study") or {}).get("seed", 0) or 0)
    alignment = robustness = fewshot = by_dataset = groups = None
    if len(study.alignment):
        alignment = tables.alignment_per_model(study.alignment)
        if alignment.attrs.get("dropped"):
            notes.append(
                "Models without every human dataset are left out of the alignment averages: "
                + ", ".join(alignment.attrs["dropped"])
            )
    if len(study.robustness):
        robustness = tables.robustness_per_model(study.robustness)
    if len(study.fewshot):
        from repalign.report import summaries

        fewshot = summaries.fewshot_accuracy(study.fewshot, by=("head", "shots"))
        by_dataset = summaries.fewshot_accuracy(study.fewshot, by=("dataset", "head", "shots"))
        if fewshot.attrs.get("dropped"):
            notes.append(
                "Models without every few-shot dataset are left out of averaged few-shot accuracy: "
                + ", ".join(fewshot.attrs["dropped"])
            )
    k = 0
    if alignment is not None and len(alignment) >= MIN_MODELS_FOR_STATS:
        k = min(GROUP_SIZE, len(alignment) // 3)
        if k < GROUP_SIZE:
            notes.append(
                f"Only {len(alignment)} models: the high/mid/low groups have {k} models each, not {GROUP_SIZE}."
            )
        groups = stats.select_groups(alignment, k=k)
    return _Inputs(study, alignment, robustness, fewshot, by_dataset, groups, k, seed, n_bootstrap, correction, notes)


def _too_few(inputs: _Inputs) -> str | None:
    n = 0 if inputs.alignment is None else len(inputs.alignment)
    if n < MIN_MODELS_FOR_STATS:
        return f"Statistics need at least {MIN_MODELS_FOR_STATS} models with alignment scores; this study has {n}."
    return None


def _overview(inputs: _Inputs) -> Section:
    study = inputs.study
    section = Section("overview", "Overview", notes=list(inputs.notes))
    results = study.results
    counts = (
        results.groupby(["stage", "status"], dropna=False).size().rename("rows").reset_index()
        if len(results)
        else pd.DataFrame(columns=["stage", "status", "rows"])
    )
    section.tables.append(Table("row_counts", counts, "Result rows per stage and status."))
    if inputs.alignment is not None:
        ranking = inputs.alignment.sort_values(inputs.alignment.columns[0], ascending=False)
        ranking = ranking.rename_axis("model").reset_index()
        section.tables.append(
            Table(
                "alignment_per_model",
                ranking,
                "Alignment of every model with the human similarity judgments, averaged over the human datasets "
                f"(model similarity: {inputs.alignment.attrs.get('similarity') or 'as configured'}). Click a "
                "column header to sort.",
            )
        )
    else:
        section.notes.append("This study has no alignment results.")
    return section


def _alignment_section(inputs: _Inputs) -> Section:
    from repalign import stats

    section = Section("metrics", "Alignment metrics compared")
    if (reason := _too_few(inputs)) is not None:
        section.notes.append(reason)
        return section
    table = stats.metric_correlations(inputs.alignment, n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed)
    section.tables.append(
        Table(
            "metric_correlations",
            table,
            "Correlation of the alignment metrics across models (Pearson r with Fisher-z 95% CI and a bootstrap "
            "CI over models; Spearman rho). The study reports spearman vs triplet 0.992 and pearson vs triplet 0.824.",
        )
    )
    section.tables.append(
        Table(
            "groups",
            inputs.groups,
            f"The {inputs.group_size} models with the highest, nearest-to-the-mean and lowest alignment, per metric.",
        )
    )
    return section


def _robustness_section(inputs: _Inputs) -> Section:
    from repalign.report import tables
    from repalign.robustness import SUBSET_NOTE

    section = Section("robustness", "Robustness (ImageNet-A, -R, -Sketch)")
    skipped = inputs.study.results
    skipped = skipped[(skipped["stage"] == "robustness") & (skipped["status"] == "skipped")]
    if inputs.robustness is None:
        if len(skipped):
            names = ", ".join(sorted(set(skipped["model"].astype(str))))
            section.notes.append(f"No model of this study has published robustness results: {names}.")
        else:
            section.notes.append("This study has no robustness results (set [robustness] source in the config).")
        return section
    section.notes.append(SUBSET_NOTE)
    if len(skipped):
        names = ", ".join(sorted(set(skipped["model"].astype(str))))
        section.notes.append(f"No published robustness results for: {names}.")
    if (reason := _too_few(inputs)) is not None:
        section.notes.append(reason)
        return section

    def table1():
        section.tables.append(
            Table(
                "table1_group_robustness",
                tables.table1_group_robustness(inputs.groups, inputs.robustness),
                "Table 1. Mean ImageNet-A/R/Sketch top-1 and top-5 accuracy (%) of the high/mid/low alignment "
                "groups, per alignment metric.",
            )
        )

    def table2():
        section.tables.append(
            Table(
                "table2_robustness_correlations",
                tables.table2_robustness_correlations(
                    inputs.alignment,
                    inputs.robustness,
                    n_bootstrap=inputs.n_bootstrap,
                    random_state=inputs.seed,
                    correction=inputs.correction,
                ),
                "Table 2. Pearson r (Fisher-z 95% CI, p and p adjusted across the table with "
                f"{inputs.correction}) between each robustness accuracy and each z² alignment metric, and the partial "
                "correlation controlling for ImageNet top-1 (pingouin); boot_* are bootstrap CIs over models.",
            )
        )

    def table1_ci():
        section.tables.append(
            Table(
                "table1_bootstrap",
                tables.table1_bootstrap(
                    inputs.groups, inputs.robustness, n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed
                ),
                "Table 1 in long form, with percentile bootstrap CIs of each group mean (resampling the "
                "group's models).",
            )
        )

    _attempt(section, "Table 1", table1)
    _attempt(section, "Table 1 bootstrap", table1_ci)
    _attempt(section, "Table 2", table2)
    return section


def _fewshot_section(inputs: _Inputs) -> Section:
    from repalign import stats
    from repalign.report import figures, tables

    section = Section("fewshot", "Few-shot learning and alignment")
    if inputs.fewshot is None:
        section.notes.append("This study has no few-shot results (set [fewshot] datasets in the config).")
        return section
    if (reason := _too_few(inputs)) is not None:
        section.notes.append(reason)
        return section
    alignment, fewshot = inputs.alignment, inputs.fewshot
    heads = list(dict.fromkeys(fewshot["head"].astype(str)))
    head = "linear" if "linear" in heads else heads[0]

    def fig3():
        curves = tables.fewshot_group_curves(inputs.groups, fewshot)
        corr = tables.fewshot_alignment_correlations(
            alignment,
            fewshot,
            by=("head", "shots"),
            n_bootstrap=inputs.n_bootstrap,
            random_state=inputs.seed,
            correction=inputs.correction,
        )
        section.figures.append(
            FigureOut(
                "figure3",
                figures.figure3(curves, corr),
                "Figure 3. Left: n-shot accuracy (mean over few-shot datasets) of the high/mid/low alignment groups, "
                "per metric (rows) and head (columns). Right: Pearson r (95% CI) between n-shot accuracy and each z² "
                "alignment metric, per head.",
            )
        )
        section.tables.append(Table("figure3_group_curves", curves, "Data of Figure 3, left."))
        section.tables.append(Table("figure3_correlations", corr, "Data of Figure 3, right."))

    def fig4():
        if "pearson" not in alignment:
            raise InputError("Figure 4 needs the pearson alignment metric.")
        one_shot_rows = fewshot[(fewshot["head"] == head) & (fewshot["shots"] == fewshot["shots"].min())]
        shots = int(fewshot["shots"].min())
        one_shot = one_shot_rows.set_index("model")["value"]
        scatter = pd.DataFrame({"model": alignment.index, "alignment": alignment["pearson"].to_numpy(float)})
        scatter["accuracy"] = scatter["model"].map(one_shot)
        scatter = scatter.dropna()
        fit = None
        try:
            fit = stats.quadratic_fit(
                scatter["alignment"], scatter["accuracy"], n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed
            )
            u_table = stats.u_shape_table(
                scatter["alignment"], scatter["accuracy"], n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed
            )
            section.tables.append(
                Table(
                    "u_shape_tests",
                    u_table,
                    f"U-shape tests of {shots}-shot accuracy ({head} head) against Pearson alignment: the quadratic "
                    "regression (x² coefficient, vertex with bootstrap CI) and Simonsohn's two-lines test (breakpoint by "
                    "the Robin Hood procedure; a U needs opposite-sign slopes, both significant).",
                )
            )
        except InputError as exc:
            section.notes.append(f"U-shape tests left out: {exc}")
        theory = None
        if "triplet" in alignment:
            theory = figures.theory_overlay(scatter, alignment["triplet"])
        corr = None
        if inputs.fewshot_by_dataset is not None:
            per_dataset = inputs.fewshot_by_dataset[inputs.fewshot_by_dataset["head"] == head]
            corr = tables.fewshot_alignment_correlations(
                alignment,
                per_dataset,
                by=("dataset", "shots"),
                metrics=["pearson"],
                n_bootstrap=inputs.n_bootstrap,
                random_state=inputs.seed,
                correction=inputs.correction,
            )
            section.tables.append(Table("figure4_correlations", corr, "Data of Figure 4, right."))
        theory_text = ""
        if theory is not None:
            theory_text = (
                f" Crosses: the theory's predicted shape C(1 − triplet alignment) fitted as "
                f"{theory.attrs['a']:.3g} + {theory.attrs['b']:.3g}·C (least squares across models)."
            )
        section.figures.append(
            FigureOut(
                "figure4",
                figures.figure4(scatter, fit, corr, y_label=f"{shots}-shot accuracy ({head} head)", theory=theory),
                f"Figure 4. Left: {shots}-shot accuracy ({head} head, mean over few-shot datasets) against Pearson "
                f"alignment for all {len(scatter)} models, with the quadratic fit.{theory_text} Right: Pearson r "
                "(95% CI) between n-shot accuracy and z² Pearson alignment, per few-shot dataset.",
            )
        )
        section.tables.append(Table("figure4_scatter", scatter, "Data of Figure 4, left."))

    _attempt(section, "Figure 3", fig3)
    _attempt(section, "Figure 4", fig4)
    return section


def _family_section(inputs: _Inputs) -> Section:
    from repalign.report import tables

    section = Section("families", "Architecture families")
    if inputs.alignment is None:
        section.notes.append("No alignment results.")
        return section
    one_shot = None
    if inputs.fewshot is not None:
        heads = list(dict.fromkeys(inputs.fewshot["head"].astype(str)))
        head = "linear" if "linear" in heads else heads[0]
        rows = inputs.fewshot[
            (inputs.fewshot["head"] == head) & (inputs.fewshot["shots"] == inputs.fewshot["shots"].min())
        ]
        one_shot = rows.set_index("model")["value"]
    pretrain = {}
    try:
        from repalign.robustness import pretrain_metadata

        pretrain = pretrain_metadata()
    except (RepalignError, OSError) as exc:  # the metadata only refines the name-based marks
        log.info("report: no timm pretraining metadata (%s); variant marks come from names", exc)
    per_model, per_family = tables.family_table(
        inputs.alignment, one_shot, tables.model_ids(inputs.study.results), pretrain=pretrain
    )
    section.tables.append(
        Table(
            "family_summary",
            per_family,
            "Mean alignment and 1-shot accuracy per architecture family (parsed from the model id) and training "
            "variant: distilled, ImageNet-21k-pretrained (in21k) and pruned models are marked.",
        )
    )
    section.tables.append(Table("family_models", per_model, "Family and variant of every model."))
    return section


def _failures_section(inputs: _Inputs) -> Section:
    from repalign.report import tables

    section = Section("failures", "Failures and skipped units")
    frame = tables.failures_table(inputs.study.results)
    if frame.empty:
        section.notes.append("No failed or skipped rows.")
    else:
        section.tables.append(
            Table("failures", frame, "Rows that failed (with their error) or had nothing to compute.")
        )
    return section


def _provenance_section(inputs: _Inputs) -> Section:
    from repalign.report import tables

    study = inputs.study
    section = Section("provenance", "Provenance")
    files = _checksums(Path(study.path), study.config)
    section.tables.append(
        Table(
            "provenance",
            tables.provenance_table(study.config, study.manifest, files),
            "The resolved config, the run manifest (package versions, git commit, hardware, runs), the packages of "
            "this report, and sha256 checksums of the study's files and robustness data.",
        )
    )
    return section


def _checksums(path: Path, config: dict) -> dict[str, str]:
    files: dict[str, str] = {}
    from repalign._io import sha256_file

    for name in ("config.resolved.toml", "manifest.json"):
        if (path / name).is_file():
            files[name] = sha256_file(path / name)
    results = sorted((path / "results").glob("*.parquet")) if (path / "results").is_dir() else []
    if results:
        digest = hashlib.sha256()
        for file in results:
            digest.update(f"{file.name}\0{sha256_file(file)}\n".encode())
        files[f"results/*.parquet ({len(results)} files, sha256 of name+sha256 lines)"] = digest.hexdigest()
    source = str((config.get("robustness") or {}).get("source", "none"))
    if source not in ("", "none"):
        try:
            from repalign.robustness import DATASET_FILES, snapshot_dir

            folder = snapshot_dir(source)
            for file_name in DATASET_FILES.values():
                files[f"{source}/{file_name}"] = sha256_file(folder / file_name)
        except (RepalignError, OSError) as exc:
            log.info("report: robustness data not available for checksums (%s)", exc)
    return files


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1200px;padding:1.5rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;
margin-top:2rem}nav a{margin-right:1rem}.meta{color:#555;font-size:.9rem}
.note{background:#fff8e1;border-left:4px solid #e6a700;padding:.4rem .7rem;margin:.5rem 0;font-size:.9rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,p.caption{font-size:.85rem;color:#333;text-align:left;margin:.9rem 0 .2rem}
.tablewrap{max-height:28rem;overflow:auto;margin:0 0 .8rem;border:1px solid #ddd}
table{border-collapse:collapse;font-size:.8rem;width:100%}
th,td{padding:.2rem .45rem;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
td.t,th.t{text-align:left}th{position:sticky;top:0;background:#f3f3f3;cursor:pointer;user-select:none}
th[data-order=asc]::after{content:' \\25B2'}th[data-order=desc]::after{content:' \\25BC'}
a.csv{font-size:.8rem}
@media print{.tablewrap{max-height:none;overflow:visible}nav{display:none}}
"""

_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('data-order') !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-order'); });
    th.setAttribute('data-order', asc ? 'asc' : 'desc');
    function key(row) { var c = row.cells[col]; var v = c.getAttribute('data-v');
      if (v === null) { v = c.textContent; } var n = parseFloat(v);
      return (v !== '' && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase(); }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { var x = key(a), y = key(b);
      if (typeof x === typeof y) { return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }
      return (typeof x === 'number' ? -1 : 1) * (asc ? 1 : -1); });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _format_cell(value: Any) -> tuple[str, str | None, bool]:
    """(display text, sort key or None, is_text) for one table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "", "", False
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), ("1" if value else "0"), True
    if isinstance(value, (int, np.integer)):
        return str(int(value)), str(int(value)), False
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            text = f"{v:.3g}"
        else:
            text = f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
        return text, repr(v), False
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value), None, True
    return str(value), None, True


def render_table(table: Table, csv_name: str | None = None) -> str:
    """A sortable HTML table; every header and cell escaped."""
    frame = table.frame
    head_cells = []
    text_columns = [
        not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns
    ]
    for column, is_text in zip(frame.columns, text_columns):
        head_cells.append(f'<th class="{"t" if is_text else "n"}">{html.escape(str(column))}</th>')
    body_rows = []
    for row in frame.itertuples(index=False, name=None):
        cells = []
        for value in row:
            text, key, is_text = _format_cell(value)
            attrs = ' class="t"' if is_text else ""
            if key is not None:
                attrs += f' data-v="{html.escape(key, quote=True)}"'
            cells.append(f"<td{attrs}>{html.escape(text)}</td>")
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    link = f' <a class="csv" href="{html.escape(csv_name, quote=True)}">CSV</a>' if csv_name else ""
    # The caption sits above the scrolling box so that wide tables do not push it off-screen.
    return (
        f'<p class="caption">{html.escape(table.caption)}{link}</p>'
        f'<div class="tablewrap"><table class="sortable" id="{html.escape(table.name, quote=True)}">'
        f"<thead><tr>{''.join(head_cells)}</tr></thead><tbody>{''.join(body_rows)}</tbody></table></div>"
    )


def render_figure(figure: FigureOut, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{html.escape(figure.name, quote=True)}"><img class="report-figure" '
        f'alt="{html.escape(figure.caption, quote=True)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(figure.caption)} "
        f'<a class="csv" href="{html.escape(figure.name, quote=True)}.pdf">PDF</a></figcaption></figure>'
    )


def render_html(
    title: str, subtitle: str, sections: list[Section], pngs: dict[str, bytes], csv_names: dict[str, str]
) -> str:
    """The whole document as a string (no external resources)."""
    nav = " ".join(f'<a href="#{html.escape(s.key, quote=True)}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing in the report is fetched; the policy keeps it that way even if text slipped through.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f'<h1>{html.escape(title)}</h1><p class="meta">{html.escape(subtitle)}</p><nav>{nav}</nav>',
    ]
    for section in sections:
        parts.append(f'<section id="{html.escape(section.key, quote=True)}"><h2>{html.escape(section.title)}</h2>')
        parts.extend(f'<p class="note">{html.escape(note)}</p>' for note in section.notes)
        for figure in section.figures:
            parts.append(render_figure(figure, pngs[figure.name]))
        for table in section.tables:
            parts.append(render_table(table, csv_names.get(table.name)))
        parts.append("</section>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


def build_sections(
    study,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = None,
    correction: str = DEFAULT_CORRECTION,
) -> list[Section]:
    """Every section of the report for a loaded study (a :class:`StudyResults`)."""
    inputs = _prepare(study, n_bootstrap=n_bootstrap, random_state=random_state, correction=correction)
    return [
        _overview(inputs),
        _alignment_section(inputs),
        _robustness_section(inputs),
        _fewshot_section(inputs),
        _family_section(inputs),
        _failures_section(inputs),
        _provenance_section(inputs),
    ]


def write_report(
    study_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = None,
    correction: str = DEFAULT_CORRECTION,
) -> Path:
    """Write the study's HTML report (and its tables as CSV, figures as PNG + PDF).

    Args:
        study_dir: a study directory written by ``repalign run``.
        out: the HTML file; default ``<study_dir>/report/report.html``. CSVs and figures go
            into the same folder.
        n_bootstrap: bootstrap resamples over models for every headline CI (0 = none).
        random_state: seed of the bootstraps; default the study's ``[study] seed``.
        correction: p-value adjustment across each grid of correlations ("holm", "fdr_bh", ...).

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

    sections = build_sections(study, n_bootstrap=n_bootstrap, random_state=random_state, correction=correction)
    csv_names: dict[str, str] = {}
    pngs: dict[str, bytes] = {}
    for section in sections:
        for table in section.tables:
            csv_names[table.name] = f"{table.name}.csv"
            with atomic_path(folder / csv_names[table.name]) as tmp:
                table.frame.to_csv(tmp, index=False)
                os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; reports are meant to be shared
        for figure in section.figures:
            # the written PNG is also the embedded one: one raster render per figure, not two
            paths = figs.save_figure(figure.figure, folder, figure.name)
            pngs[figure.name] = paths["png"].read_bytes()
    name = str((study.config.get("study") or {}).get("name") or Path(study.path).name)
    n_models = study.results["model"].nunique() if len(study.results) else 0
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"Study directory {study.path} · {n_models} models · report written {created}"
    write_text_atomic(out_path, render_html(f"repalign report: {name}", subtitle, sections, pngs, csv_names))
    os.chmod(out_path, 0o644)
    log.info("report written to %s", out_path)
    return out_path


__all__ = ["write_report", "build_sections", "render_html", "render_table", "Section", "Table", "FigureOut"]
