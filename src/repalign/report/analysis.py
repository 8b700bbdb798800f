"""The report's analyses as plain data: which sections, tables and figures a study gets, and why.

``analyze_study(study)`` decides what the study's results support (which statistics, which
few-shot head and shots, which sections are left out and why) and computes it, returning a
:class:`ReportData`: sections, each with notes, tables (DataFrames with captions) and figures
(matplotlib figures with captions). Nothing here knows HTML; :mod:`repalign.report.html`
renders the result, and it is as usable from Python or a notebook::

    from repalign.report import analyze_study
    data = analyze_study("studies/quickstart", n_bootstrap=200)
    data.table("table2_robustness_correlations").frame

Captions come from :mod:`repalign.report.captions`; the computations from
:mod:`repalign.report.tables`, :mod:`repalign.report.figures` and :mod:`repalign.stats`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from repalign._options import DEFAULT_CORRECTION, DEFAULT_N_BOOTSTRAP
from repalign.errors import InputError, RepalignError
from repalign.report.captions import caption

log = logging.getLogger(__name__)

#: Fewer models than this and the report shows tables only, no statistics.
MIN_MODELS_FOR_STATS = 6
#: models per high/mid/low alignment group (smaller when the study has fewer than 3x as many)
GROUP_SIZE = 5
#: the few-shot head the single-head analyses (Figure 4, the family view) use when the study has it
PREFERRED_HEAD = "linear"


@dataclass
class Table:
    """One table: ``name`` is its id and CSV file stem."""

    name: str
    frame: pd.DataFrame
    caption: str


@dataclass
class Figure:
    """One figure: ``name`` is its id and PNG/PDF file stem; ``figure`` a matplotlib Figure."""

    name: str
    figure: Any
    caption: str


@dataclass
class Section:
    """One part of the report; ``notes`` say what is left out and why, or what to keep in mind."""

    key: str
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class ReportData:
    """Everything the report shows, before rendering."""

    name: str
    study_path: Path
    n_models: int
    n_bootstrap: int
    seed: int
    correction: str
    sections: list[Section]

    def section(self, key: str) -> Section:
        for section in self.sections:
            if section.key == key:
                return section
        raise InputError(f"No report section {key!r}; sections: {', '.join(s.key for s in self.sections)}.")

    def tables(self) -> Iterator[Table]:
        for section in self.sections:
            yield from section.tables

    def figures(self) -> Iterator[Figure]:
        for section in self.sections:
            yield from section.figures

    def table(self, name: str) -> Table:
        for table in self.tables():
            if table.name == name:
                return table
        raise InputError(f"No table {name!r} in this report; tables: {', '.join(t.name for t in self.tables())}.")

    def figure(self, name: str) -> Figure:
        for figure in self.figures():
            if figure.name == name:
                return figure
        raise InputError(f"No figure {name!r} in this report; figures: {', '.join(f.name for f in self.figures())}.")


# ---------------------------------------------------------------------------------------------
# the study's per-model inputs, and the choices every section shares
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
    head: str | None  # the head of the single-head analyses
    shots: int | None  # the fewest shots: "1-shot" accuracy
    seed: int
    n_bootstrap: int
    correction: str
    notes: list[str]

    def too_few(self) -> str | None:
        """Why there are no statistics, or None."""
        n = 0 if self.alignment is None else len(self.alignment)
        if n < MIN_MODELS_FOR_STATS:
            return f"Statistics need at least {MIN_MODELS_FOR_STATS} models with alignment scores; this study has {n}."
        return None

    def one_shot(self) -> pd.Series | None:
        """Accuracy per model at the fewest shots with the chosen head (mean over datasets)."""
        if self.fewshot is None:
            return None
        rows = self.fewshot[(self.fewshot["head"] == self.head) & (self.fewshot["shots"] == self.shots)]
        return rows.set_index("model")["value"]


def _prepare(study, *, n_bootstrap: int, random_state: int | None, correction: str) -> _Inputs:
    from repalign import stats
    from repalign.report import summaries, tables

    notes: list[str] = []
    seed = random_state
    if seed is None:
        seed = int((study.config.get("study") or {}).get("seed", 0) or 0)
    alignment = robustness = fewshot = by_dataset = groups = None
    head = shots = None
    if len(study.alignment):
        alignment = tables.alignment_per_model(study.alignment)
        if alignment.attrs.get("dropped"):
            notes.append(
                "Models without every human dataset are left out of the alignment averages: "
                + ", ".join(alignment.attrs["dropped"])
            )
    if len(study.robustness):
        try:
            robustness = tables.robustness_per_model(study.robustness)
        except InputError:  # every row describes other weights than the embedded ones; the section says so
            robustness = None
    if len(study.fewshot):
        fewshot = summaries.fewshot_accuracy(study.fewshot, by=("head", "shots"))
        by_dataset = summaries.fewshot_accuracy(study.fewshot, by=("dataset", "head", "shots"))
        if fewshot.attrs.get("dropped"):
            notes.append(
                "Models without every few-shot dataset are left out of averaged few-shot accuracy: "
                + ", ".join(fewshot.attrs["dropped"])
            )
        heads = list(dict.fromkeys(fewshot["head"].astype(str)))
        head = PREFERRED_HEAD if PREFERRED_HEAD in heads else heads[0]
        shots = int(fewshot["shots"].min())
    k = 0
    if alignment is not None and len(alignment) >= MIN_MODELS_FOR_STATS:
        k = min(GROUP_SIZE, len(alignment) // 3)
        if k < GROUP_SIZE:
            notes.append(
                f"Only {len(alignment)} models: the high/mid/low groups have {k} models each, not {GROUP_SIZE}."
            )
        groups = stats.select_groups(alignment, k=k)
    return _Inputs(
        study=study,
        alignment=alignment,
        robustness=robustness,
        fewshot=fewshot,
        fewshot_by_dataset=by_dataset,
        groups=groups,
        group_size=k,
        head=head,
        shots=shots,
        seed=seed,
        n_bootstrap=n_bootstrap,
        correction=correction,
        notes=notes,
    )


def _attempt(section: Section, what: str, func: Callable[[], None]) -> None:
    """Run one part of a section; a RepalignError (e.g. too few models) becomes a note."""
    try:
        func()
    except RepalignError as exc:
        log.info("report: %s left out: %s", what, exc)
        section.notes.append(f"{what} left out: {exc}")


def _table(name: str, frame: pd.DataFrame, **fields: Any) -> Table:
    return Table(name, frame, caption(name, **fields))


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def _overview(inputs: _Inputs) -> Section:
    section = Section("overview", "Overview", notes=list(inputs.notes))
    results = inputs.study.results
    counts = (
        results.groupby(["stage", "status"], dropna=False).size().rename("rows").reset_index()
        if len(results)
        else pd.DataFrame(columns=["stage", "status", "rows"])
    )
    section.tables.append(_table("row_counts", counts))
    if inputs.alignment is None:
        section.notes.append("This study has no alignment results.")
        return section
    ranking = inputs.alignment.sort_values(inputs.alignment.columns[0], ascending=False)
    ranking = ranking.rename_axis("model").reset_index()
    similarity = inputs.alignment.attrs.get("similarity") or "as configured"
    section.tables.append(_table("alignment_per_model", ranking, similarity=similarity))
    return section


def _metrics(inputs: _Inputs) -> Section:
    from repalign import stats

    section = Section("metrics", "Alignment metrics compared")
    if (reason := inputs.too_few()) is not None:
        section.notes.append(reason)
        return section
    table = stats.metric_correlations(inputs.alignment, n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed)
    section.tables.append(_table("metric_correlations", table))
    section.tables.append(_table("groups", inputs.groups, group_size=inputs.group_size))
    return section


def _robustness(inputs: _Inputs) -> Section:
    from repalign.report import tables
    from repalign.robustness import SUBSET_NOTE

    section = Section("robustness", "Robustness (ImageNet-A, -R, -Sketch)")
    results = inputs.study.results
    skipped = results[(results["stage"] == "robustness") & (results["status"] == "skipped")]
    skipped_names = ", ".join(sorted(set(skipped["model"].astype(str))))
    mismatched = tables.weights_mismatched(inputs.study.robustness)
    mismatch_note = (
        "Left out of the robustness statistics, because their published rows describe other weights than the "
        f"ones embedded (weights_match = False): {', '.join(mismatched)}."
    )
    if inputs.robustness is None:
        if skipped_names:
            section.notes.append(f"No model of this study has published robustness results: {skipped_names}.")
        elif not mismatched:
            section.notes.append("This study has no robustness results (set [robustness] source in the config).")
        if mismatched:
            section.notes.append(mismatch_note)
        return section
    section.notes.append(SUBSET_NOTE)
    if skipped_names:
        section.notes.append(f"No published robustness results for: {skipped_names}.")
    if mismatched:
        section.notes.append(mismatch_note)
    if (reason := inputs.too_few()) is not None:
        section.notes.append(reason)
        return section

    def table1():
        frame = tables.table1_group_robustness(inputs.groups, inputs.robustness)
        section.tables.append(_table("table1_group_robustness", frame))

    def table1_ci():
        frame = tables.table1_bootstrap(
            inputs.groups, inputs.robustness, n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed
        )
        section.tables.append(_table("table1_bootstrap", frame))

    def table2():
        frame = tables.table2_robustness_correlations(
            inputs.alignment,
            inputs.robustness,
            n_bootstrap=inputs.n_bootstrap,
            random_state=inputs.seed,
            correction=inputs.correction,
        )
        section.tables.append(_table("table2_robustness_correlations", frame, correction=inputs.correction))

    _attempt(section, "Table 1", table1)
    _attempt(section, "Table 1 bootstrap", table1_ci)
    _attempt(section, "Table 2", table2)
    return section


def _fewshot(inputs: _Inputs) -> Section:
    from repalign import stats
    from repalign.report import figures, tables

    section = Section("fewshot", "Few-shot learning and alignment")
    if inputs.fewshot is None:
        section.notes.append("This study has no few-shot results (set [fewshot] datasets in the config).")
        return section
    if (reason := inputs.too_few()) is not None:
        section.notes.append(reason)
        return section
    alignment, fewshot, head, shots = inputs.alignment, inputs.fewshot, inputs.head, inputs.shots
    boot = {"n_bootstrap": inputs.n_bootstrap, "random_state": inputs.seed}

    def fig3():
        curves = tables.fewshot_group_curves(inputs.groups, fewshot)
        corr = tables.fewshot_alignment_correlations(
            alignment, fewshot, by=("head", "shots"), correction=inputs.correction, **boot
        )
        section.figures.append(Figure("figure3", figures.figure3(curves, corr), caption("figure3")))
        section.tables.append(_table("figure3_group_curves", curves))
        section.tables.append(_table("figure3_correlations", corr))

    def fig4():
        if "pearson" not in alignment:
            raise InputError("Figure 4 needs the pearson alignment metric.")
        scatter = pd.DataFrame({"model": alignment.index, "alignment": alignment["pearson"].to_numpy(float)})
        scatter["accuracy"] = scatter["model"].map(inputs.one_shot())
        scatter = scatter.dropna()
        fit = None
        try:
            fit = stats.quadratic_fit(scatter["alignment"], scatter["accuracy"], **boot)
            u_table = stats.u_shape_table(scatter["alignment"], scatter["accuracy"], **boot)
            section.tables.append(_table("u_shape_tests", u_table, shots=shots, head=head))
        except InputError as exc:
            section.notes.append(f"U-shape tests left out: {exc}")
        theory = figures.theory_overlay(scatter, alignment["triplet"]) if "triplet" in alignment else None
        corr = None
        if inputs.fewshot_by_dataset is not None:
            per_dataset = inputs.fewshot_by_dataset[inputs.fewshot_by_dataset["head"] == head]
            corr = tables.fewshot_alignment_correlations(
                alignment,
                per_dataset,
                by=("dataset", "shots"),
                metrics=["pearson"],
                correction=inputs.correction,
                **boot,
            )
            section.tables.append(_table("figure4_correlations", corr))
        theory_text = "" if theory is None else caption("figure4_theory", a=theory.attrs["a"], b=theory.attrs["b"])
        figure = figures.figure4(scatter, fit, corr, y_label=f"{shots}-shot accuracy ({head} head)", theory=theory)
        text = caption("figure4", shots=shots, head=head, n_models=len(scatter), theory=theory_text)
        section.figures.append(Figure("figure4", figure, text))
        section.tables.append(_table("figure4_scatter", scatter))

    _attempt(section, "Figure 3", fig3)
    _attempt(section, "Figure 4", fig4)
    return section


def _families(inputs: _Inputs) -> Section:
    from repalign.report import tables

    section = Section("families", "Architecture families")
    if inputs.alignment is None:
        section.notes.append("No alignment results.")
        return section
    pretrain = {}
    try:
        from repalign.robustness import pretrain_metadata

        pretrain = pretrain_metadata()
    except (RepalignError, OSError) as exc:  # the metadata only refines the name-based marks
        log.info("report: no timm pretraining metadata (%s); variant marks come from names", exc)
    per_model, per_family = tables.family_table(
        inputs.alignment, inputs.one_shot(), tables.model_ids(inputs.study.results), pretrain=pretrain
    )
    section.tables.append(_table("family_summary", per_family))
    section.tables.append(_table("family_models", per_model))
    return section


def _failures(inputs: _Inputs) -> Section:
    from repalign.report import tables

    section = Section("failures", "Failures and skipped units")
    frame = tables.failures_table(inputs.study.results)
    if frame.empty:
        section.notes.append("No failed or skipped rows.")
    else:
        section.tables.append(_table("failures", frame))
    return section


def _provenance(inputs: _Inputs) -> Section:
    from repalign.report import tables

    study = inputs.study
    section = Section("provenance", "Provenance")
    files = _checksums(Path(study.path), study.config)
    section.tables.append(_table("provenance", tables.provenance_table(study.config, study.manifest, files)))
    return section


def _checksums(path: Path, config: dict) -> dict[str, str]:
    from repalign._io import sha256_file

    files: dict[str, str] = {}
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


#: The report's sections, in order; each takes the prepared inputs and returns one Section.
SECTIONS: tuple[Callable[[_Inputs], Section], ...] = (
    _overview,
    _metrics,
    _robustness,
    _fewshot,
    _families,
    _failures,
    _provenance,
)


def analyze_study(
    study: Any,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = None,
    correction: str = DEFAULT_CORRECTION,
) -> ReportData:
    """Every section of the report for a study, computed but not rendered.

    Args:
        study: a study directory (str or path) or a loaded :class:`repalign.store.StudyResults`.
        n_bootstrap: bootstrap resamples over models for every headline CI (0 = none).
        random_state: seed of the bootstraps; default the study's ``[study] seed``.
        correction: p-value adjustment across each grid of correlations ("holm", "fdr_bh", ...).

    Returns:
        ReportData: the sections in report order, each with its notes, tables and figures.
    """
    if isinstance(study, (str, os.PathLike)):
        from repalign.store import load_study

        study = load_study(study)
    inputs = _prepare(study, n_bootstrap=n_bootstrap, random_state=random_state, correction=correction)
    results = study.results
    return ReportData(
        name=str((study.config.get("study") or {}).get("name") or Path(study.path).name),
        study_path=Path(study.path),
        n_models=int(results["model"].nunique()) if len(results) else 0,
        n_bootstrap=n_bootstrap,
        seed=inputs.seed,
        correction=correction,
        sections=[build(inputs) for build in SECTIONS],
    )


__all__ = ["ReportData", "Section", "Table", "Figure", "analyze_study", "MIN_MODELS_FOR_STATS", "GROUP_SIZE"]
