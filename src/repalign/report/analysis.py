"""The report's analyses as plain data: which sections, tables and figures a study gets, and why.

``analyze_study(study)`` decides what the study's results support (which statistics, which
similarity function, which few-shot datasets, head and shots, which sections are left out and
why) and computes it, returning a :class:`ReportData`: notices for the top of the report and
sections, each with notes, paragraphs (definitions), tables (DataFrames with captions) and
figures (matplotlib figures with captions). Nothing here knows HTML; :mod:`repalign.report.html`
renders the result, and it is as usable from Python or a notebook::

    from repalign.report import analyze_study
    data = analyze_study("studies/quickstart", n_bootstrap=200)
    data.table("table2_robustness_correlations").frame
    data.table("correlations").frame      # every correlation shown, one row each

The paper's choices are followed: alignment averaged over the same human datasets for every
model; Figures 3 and 4 (left) on one few-shot dataset (CIFAR-100 when the study has it, else
each dataset on its own, never an average); every correlation raw and z², without and with
ImageNet top-1 as covariate where it is known.

Captions come from :mod:`repalign.report.captions`; the computations from
:mod:`repalign.report.tables`, :mod:`repalign.report.correlations`,
:mod:`repalign.report.figures` and :mod:`repalign.stats`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from repalign._options import DEFAULT_CORRECTION, DEFAULT_N_BOOTSTRAP, MAX_SEED
from repalign.errors import InputError, RepalignError
from repalign.report import layers as layer_tables
from repalign.report.captions import caption

log = logging.getLogger(__name__)

#: Fewer models than this and the report shows tables only, no statistics.
MIN_MODELS_FOR_STATS = 6
#: models per high/mid/low alignment group (smaller when the study has fewer than 3x as many)
GROUP_SIZE = 5
#: the few-shot head the single-head analyses (Figure 4, the family view) use when the study has it
PREFERRED_HEAD = "linear"
#: the few-shot dataset of the paper's Figures 3 and 4 (left); without it, every dataset gets its own
PAPER_FEWSHOT_DATASET = "cifar100"
#: how to get more models into a study, for the notes of sections that need more
MORE_MODELS_HINT = (
    'add models to [models] include in the config (e.g. "tflite:*", "cifar_resnet:*", or timm models such as '
    '"timm:resnet50") and run `repalign run CONFIG` again; finished models are not recomputed'
)


@dataclass
class Table:
    """One table: ``name`` is its id and CSV file stem."""

    name: str
    frame: pd.DataFrame
    caption: str


@dataclass
class Figure:
    """One figure: ``name`` is its id and PNG/PDF file stem; ``figure`` a matplotlib Figure;
    ``hover`` the points the HTML labels on hover (:class:`repalign.report.figures.HoverPoints`)."""

    name: str
    figure: Any
    caption: str
    hover: list = field(default_factory=list)


@dataclass
class Paragraph:
    """Explanatory text of a section (a definition, not a warning); ``key`` is its HTML id."""

    key: str
    text: str


@dataclass
class Section:
    """One part of the report; ``notes`` say what is left out and why, or what to keep in mind."""

    key: str
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    paragraphs: list[Paragraph] = field(default_factory=list)


@dataclass
class ReportData:
    """Everything the report shows, before rendering. ``notices`` go at the top of the report."""

    name: str
    study_path: Path
    n_models: int
    n_bootstrap: int
    seed: int
    correction: str
    sections: list[Section]
    notices: list[str] = field(default_factory=list)
    similarity: str | None = None
    domains: tuple[str, ...] = ()

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
    alignment: pd.DataFrame | None  # per model, one column per metric (the statistics' similarity)
    similarity: str | None  # the statistics' similarity function
    similarities: list[str]  # every similarity function of the rows
    domains: list[str]  # the human datasets of the averages
    robustness: pd.DataFrame | None  # per model, "imagenet-a top1", ...
    top1: pd.Series | None  # ImageNet top-1 per model (the covariate), where published
    fewshot: pd.DataFrame | None  # the study's few-shot rows
    fewshot_datasets: list[str]  # the datasets of Figures 3 and 4 (left)
    all_fewshot_datasets: list[str]
    groups: pd.DataFrame | None
    group_size: int
    head: str | None  # the head of the single-head analyses
    shots: int | None  # the fewest shots: "1-shot" accuracy
    seed: int
    n_bootstrap: int
    correction: str
    notes: list[str]
    notices: list[str]
    relative_to_ceiling: bool = False  # the ceiling figures draw alignment / ceiling
    long: dict[str, pd.DataFrame] = field(default_factory=dict)  # correlations shown, by table name
    # every layer's rows (``study`` holds the statistics' layer only) and that layer
    all_layers: Any = None
    layer: str | None = None

    def too_few(self) -> str | None:
        """Why there are no statistics (and how to get them), or None."""
        n = 0 if self.alignment is None else len(self.alignment)
        if n < MIN_MODELS_FOR_STATS:
            return (
                f"Statistics need at least {MIN_MODELS_FOR_STATS} models with alignment scores; this study has {n}. "
                f"The per-model tables are shown; for the statistics, {MORE_MODELS_HINT}."
            )
        return None

    def covariate(self, models) -> pd.Series | None:
        """ImageNet top-1 for the partial correlations, when enough of ``models`` have it."""
        if self.top1 is None:
            return None
        known = self.top1.dropna().index.intersection(pd.Index(models))
        return self.top1 if len(known) >= _stats().MIN_MODELS + 1 else None

    def with_domains(self, frame: pd.DataFrame) -> pd.DataFrame:
        from repalign.report import tables

        return tables.with_domains(frame, self.domains)


def _stats():
    from repalign import stats

    return stats


def _fewshot_datasets(study, rows: pd.DataFrame) -> list[str]:
    """Few-shot datasets in config order, then any others the rows have."""
    configured = [str(d) for d in ((study.config.get("fewshot") or {}).get("datasets") or [])]
    present = list(dict.fromkeys(str(d) for d in rows["dataset"].dropna()))
    return [d for d in configured if d in present] + sorted(d for d in present if d not in configured)


def _prepare(study, *, n_bootstrap: int, random_state: int | None, correction: str) -> _Inputs:
    from repalign import stats
    from repalign.report import domains as domain_notes
    from repalign.report import similarity as sims
    from repalign.report import tables

    notes: list[str] = []
    notices: list[str] = []
    seed = random_state
    if seed is None:
        seed = int((study.config.get("study") or {}).get("seed", 0) or 0)
    alignment = robustness = top1 = fewshot = groups = None
    head = shots = similarity = None
    similarities: list[str] = []
    domains: list[str] = []
    fewshot_datasets: list[str] = []
    all_fewshot: list[str] = []
    if len(study.alignment):
        similarities = sims.present_similarities(study.alignment)
        similarity = sims.primary_similarity(study.config, study.alignment)
        alignment = tables.alignment_per_model(study.alignment, similarity=similarity)
        domains = list(alignment.attrs.get("domains", []))
        if alignment.attrs.get("dropped"):
            notes.append(
                f"Models without every human dataset ({', '.join(domains)}) are left out of the alignment averages, "
                "so that every average is over the same domains: " + ", ".join(alignment.attrs["dropped"])
            )
        coverage = domain_notes.domain_coverage(study.config, domains, study.results)
        for text in (domain_notes.coverage_note(coverage), domain_notes.paper_domains_note(coverage)):
            if text:
                notices.append(text)
        if len(similarities) > 1:
            notices.append(
                f"This study computed alignment with {len(similarities)} similarity functions "
                f"({', '.join(similarities)}); the statistics use {similarity} (the first configured), and the "
                "section 'Similarity functions compared' shows how much the choice matters."
            )
    if len(study.robustness):
        try:
            robustness = tables.robustness_per_model(study.robustness)
        except InputError:  # every row describes other weights than the embedded ones; the section says so
            robustness = None
        if robustness is not None and tables.COVARIATE in robustness:
            top1 = robustness[tables.COVARIATE].dropna()
    if len(study.fewshot):
        fewshot = study.fewshot
        all_fewshot = _fewshot_datasets(study, fewshot)
        fewshot_datasets = [PAPER_FEWSHOT_DATASET] if PAPER_FEWSHOT_DATASET in all_fewshot else all_fewshot
        heads = list(dict.fromkeys(fewshot["head"].dropna().astype(str)))
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
        similarity=similarity,
        similarities=similarities,
        domains=domains,
        robustness=robustness,
        top1=top1,
        fewshot=fewshot,
        fewshot_datasets=fewshot_datasets,
        all_fewshot_datasets=all_fewshot,
        groups=groups,
        group_size=k,
        head=head,
        shots=shots,
        seed=seed,
        n_bootstrap=n_bootstrap,
        correction=correction,
        notes=notes,
        notices=notices,
    )


def _attempt(section: Section, what: str, func: Callable[[], None]) -> None:
    """Run one part of a section; a RepalignError (e.g. too few models) becomes a note."""
    try:
        func()
    except RepalignError as exc:
        log.info("report: %s left out: %s", what, exc)
        section.notes.append(f"{what} left out: {exc}")


def _table(name: str, frame: pd.DataFrame, *, key: str | None = None, **fields: Any) -> Table:
    return Table(name, frame, caption(key or name, **fields))


def _stem(text: str) -> str:
    """A dataset name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or "dataset"


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def _overview(inputs: _Inputs) -> Section:
    from repalign.report import summaries

    section = Section("overview", "Overview", notes=list(inputs.notes))
    results = inputs.study.results
    counts = (
        results.groupby(["stage", "status"], dropna=False).size().rename("rows").reset_index()
        if len(results)
        else pd.DataFrame(columns=["stage", "status", "rows"])
    )
    section.tables.append(_table("row_counts", counts))
    if inputs.alignment is None:
        section.notes.append(
            "This study has no alignment results. Set [alignment] human in the config (e.g. "
            'human = ["peterson:animals", "peterson:fruits", "peterson:vegetables"]) and run it again.'
        )
        return section
    if (reason := inputs.too_few()) is not None:
        section.notes.append(reason)
    ranking = inputs.alignment.sort_values(inputs.alignment.columns[0], ascending=False)
    ranking = inputs.with_domains(ranking.rename_axis("model").reset_index())
    section.tables.append(
        _table(
            "alignment_per_model",
            ranking,
            similarity=inputs.similarity or "as configured",
            n_domains=len(inputs.domains),
            domains=", ".join(inputs.domains),
        )
    )
    section.tables.append(_table("alignment_per_domain", summaries.alignment_per_domain(inputs.study.alignment)))
    _attempt(section, "alignment bars", lambda: _alignment_bars(inputs, section))
    return section


def _alignment_bars(inputs: _Inputs, section: Section) -> None:
    """Per domain, one bar per model (the first metric, the statistics' similarity function),
    its stimulus-bootstrap CI, and the noise ceiling where the rows carry one."""
    from repalign.report.plots import model_bars

    metric = str(inputs.alignment.columns[0])
    rows = inputs.study.alignment
    rows = rows[(rows["metric"] == metric) & (rows["similarity"] == inputs.similarity)]
    for dataset in inputs.domains:
        one = rows[rows["dataset"] == dataset]
        if one.empty:
            continue
        ceiling = None
        if {"ceiling_low", "ceiling_high"} <= set(one.columns):  # when the schema carries a noise ceiling
            bounds = one[["ceiling_low", "ceiling_high"]].dropna()
            if len(bounds):
                ceiling = (float(bounds.iloc[0, 0]), float(bounds.iloc[0, 1]))
        figure = model_bars(one, ceiling=ceiling, title=f"{dataset}: {metric}", xlabel=f"{metric} alignment")
        section.figures.append(
            Figure(
                f"alignment_bars_{_stem(dataset)}",
                figure,
                caption("alignment_bars", dataset=dataset, metric=metric, similarity=inputs.similarity),
            )
        )


def _comparison(inputs: _Inputs) -> Section | None:
    """[compare]: which models see the stimuli alike, next to how each sees them like people."""
    from repalign.alignment.compare import comparison_matrix
    from repalign.report.plots import comparison_heatmap

    table = getattr(inputs.study, "model_comparison", None)
    images = str((inputs.study.config.get("compare") or {}).get("images") or "")
    if not images and (table is None or table.empty):
        return None  # not asked for
    section = Section("comparison", "Models compared with each other")
    if table is None or table.empty:
        section.notes.append(
            f"[compare] images = '{images}' is set, but the study has no model comparison yet; run the study "
            "again (finished models are not recomputed) to compute it."
        )
        return section
    n = int(table["n"].iloc[0])
    if "human" in set(table["model_a"]):
        section.notes.append(
            "The RSA matrices hold the human similarity matrix as one more row and column (human): its row is "
            "each model's RSA alignment with people, beside how alike the models are."
        )
    for method in dict.fromkeys(table["method"]):
        matrix = comparison_matrix(table, method)
        section.figures.append(
            Figure(
                f"comparison_{_stem(method)}",
                comparison_heatmap(matrix, title=method),
                caption("comparison_heatmap", method=method, images=images or "the compared images", n=n),
            )
        )
    section.tables.append(_table("model_comparison", table, images=images or "the compared images", n=n))
    return section


def _ceilings(inputs: _Inputs) -> Section | None:
    """Alignment against the noise ceiling, where the human data tells it (else no section)."""
    from repalign.report import figures, summaries

    if inputs.alignment is None:
        return None
    table = summaries.alignment_with_ceilings(inputs.study.alignment, similarity=inputs.similarity)
    if table.empty:
        return None
    section = Section("ceilings", "Noise ceilings of the human data")
    section.tables.append(_table("noise_ceilings", table, similarity=inputs.similarity or "as configured"))
    relative = " as a fraction of the ceiling's upper bound" if inputs.relative_to_ceiling else ""
    for dataset, rows in table.groupby("dataset", sort=True):
        figure = figures.ceiling_figure(rows, dataset=str(dataset), relative=inputs.relative_to_ceiling)
        text = caption("ceiling_figure", dataset=dataset, relative=relative)
        section.figures.append(Figure(f"ceiling_{_stem(dataset)}", figure, text))
    return section


def _metrics(inputs: _Inputs) -> Section:
    from repalign import stats

    section = Section("metrics", "Alignment metrics compared")
    if (reason := inputs.too_few()) is not None:
        section.notes.append(reason)
        return section
    table = stats.metric_correlations(inputs.alignment, n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed)
    section.tables.append(_table("metric_correlations", inputs.with_domains(table)))
    section.tables.append(_table("groups", inputs.with_domains(inputs.groups), group_size=inputs.group_size))
    return section


def _similarities(inputs: _Inputs) -> Section | None:
    from repalign.report import similarity as sims

    if len(inputs.similarities) < 2:
        return None
    section = Section("similarity", "Similarity functions compared")
    section.notes.append(
        f"The statistics of the other sections use the similarity function {inputs.similarity} "
        "(the first configured one)."
    )
    by_similarity = sims.alignment_by_similarity(inputs.study.alignment, inputs.similarities)
    wide = by_similarity.pivot_table(index="model", columns=["similarity", "metric"], values="value")
    wide.columns = [f"{sim}/{metric}" for sim, metric in wide.columns]
    wide = wide.reset_index()
    for name, dropped in by_similarity.attrs["dropped"].items():
        if dropped:
            section.notes.append(f"Left out with {name} (not every human dataset): {', '.join(dropped)}.")
    domains = sorted({d for ds in by_similarity.attrs["domains"].values() for d in ds})
    from repalign.report import tables

    section.tables.append(_table("alignment_by_similarity", tables.with_domains(wide, domains)))
    if len(by_similarity["model"].unique()) < MIN_MODELS_FOR_STATS:
        section.notes.append(f"The sensitivity table needs at least {MIN_MODELS_FOR_STATS} models.")
        return section
    section.tables.append(
        _table("similarity_sensitivity", sims.sensitivity_table(by_similarity), similarity=inputs.similarity)
    )
    return section


def _robustness(inputs: _Inputs) -> Section:
    from repalign.report import correlations, tables
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
    only_timm = (
        "Tables 1 and 2 use only models with timm's published ImageNet-A/R/Sketch results; these models have "
        'none. To get them, add timm models to [models] include (e.g. "timm:resnet50", or the preset "paper") '
        "with [robustness] source set, and run `repalign run CONFIG` again."
    )
    if inputs.robustness is None:
        if skipped_names:
            section.notes.append(f"No model of this study has published robustness results: {skipped_names}.")
            section.notes.append(only_timm)
        elif not mismatched:
            section.notes.append(
                "This study has no robustness results (set [robustness] source in the config, e.g. "
                '"timm-2022-07-27", and include timm models).'
            )
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
    if inputs.top1 is None:
        section.notes.append(
            "The robustness rows hold no ImageNet top-1 accuracy, so Table 2 has no partial correlations."
        )

    def table1():
        frame = tables.table1_group_robustness(inputs.groups, inputs.robustness)
        section.tables.append(_table("table1_group_robustness", inputs.with_domains(frame)))

    def table1_ci():
        frame = tables.table1_bootstrap(
            inputs.groups, inputs.robustness, n_bootstrap=inputs.n_bootstrap, random_state=inputs.seed
        )
        section.tables.append(_table("table1_bootstrap", frame))

    def table2():
        long = tables.table2_robustness_correlations(
            inputs.alignment,
            inputs.robustness,
            n_bootstrap=inputs.n_bootstrap,
            random_state=inputs.seed,
            correction=inputs.correction,
        )
        inputs.long["table2_robustness_correlations"] = long
        shown = correlations.side_by_side(long, drop=("y_head", "y_shots"))
        section.tables.append(_table("table2_robustness_correlations", shown, correction=inputs.correction))

    _attempt(section, "Table 1", table1)
    _attempt(section, "Table 1 bootstrap", table1_ci)
    _attempt(section, "Table 2", table2)
    return section


def _fewshot(inputs: _Inputs) -> Section:
    from repalign.report import summaries

    section = Section("fewshot", "Few-shot learning and alignment")
    if inputs.fewshot is None:
        section.notes.append(
            "This study has no few-shot results (set [fewshot] datasets in the config, e.g. "
            'datasets = ["cifar100"] as in the paper, or ["mnist", "fashion_mnist"] offline).'
        )
        return section
    section.tables.append(_table("fewshot_per_model", summaries.fewshot_per_model(inputs.fewshot)))
    if (reason := inputs.too_few()) is not None:
        section.notes.append(reason)
        return section
    if PAPER_FEWSHOT_DATASET not in inputs.all_fewshot_datasets:
        section.notes.append(
            f"The paper's Figures 3 and 4 use {PAPER_FEWSHOT_DATASET}, which this study does not have; each few-shot "
            f"dataset gets its own panels instead ({', '.join(inputs.fewshot_datasets)}), never an average over "
            "datasets."
        )
    covar = inputs.covariate(inputs.alignment.index)
    if covar is None:
        n_known = 0 if inputs.top1 is None else len(inputs.top1.index.intersection(inputs.alignment.index))
        section.notes.append(
            f"No partial correlations controlling for ImageNet top-1 (the paper's covariate): it is known only for "
            f"models with timm's published results, {n_known} of the {len(inputs.alignment)} models here "
            f"(at least {_stats().MIN_MODELS + 1} needed). Add timm models and [robustness] source to get them."
        )
    for dataset in inputs.fewshot_datasets:
        _attempt(section, f"Figure 3 ({dataset})", lambda dataset=dataset: _figure3(inputs, section, dataset, covar))
    _attempt(section, "Figure 4", lambda: _figure4(inputs, section, covar))
    return section


def _figure3(inputs: _Inputs, section: Section, dataset: str, covar: pd.Series | None) -> None:
    from repalign.report import correlations, figures, tables

    rows = inputs.fewshot[inputs.fewshot["dataset"] == dataset]
    accuracy = (
        rows.assign(shots=rows["shots"].astype(int))
        .groupby(["model", "head", "shots"], sort=True)["value"]
        .mean()
        .reset_index()
    )
    curves = tables.fewshot_group_curves(inputs.groups, accuracy)
    targets = correlations.fewshot_targets(inputs.fewshot, datasets=[dataset])
    long = correlations.alignment_correlations(
        inputs.alignment,
        targets,
        covariate=covar,
        n_bootstrap=inputs.n_bootstrap,
        random_state=inputs.seed,
        correction=inputs.correction,
    )
    stem = f"figure3_{_stem(dataset)}"
    inputs.long[f"{stem}_correlations"] = long
    plain = long[long["covariate"] == correlations.NO_COVARIATE]
    figure = figures.figure3(curves, plain, dataset=dataset)
    section.figures.append(Figure(stem, figure, caption("figure3", dataset=dataset)))
    section.tables.append(_table(f"{stem}_group_curves", curves, key="figure3_group_curves", dataset=dataset))
    shown = correlations.side_by_side(long, drop=("y_dataset", "y_metric"))
    section.tables.append(
        _table(f"{stem}_correlations", shown, key="figure3_correlations", dataset=dataset, correction=inputs.correction)
    )


def _figure4(inputs: _Inputs, section: Section, covar: pd.Series | None) -> None:
    from repalign import stats
    from repalign.report import correlations, figures

    alignment, head, shots = inputs.alignment, inputs.head, inputs.shots
    if "pearson" not in alignment:
        raise InputError("Figure 4 needs the pearson alignment metric.")
    boot = {"n_bootstrap": inputs.n_bootstrap, "random_state": inputs.seed}
    panels, scatters, u_tests, fitted = [], [], [], False
    for dataset in inputs.fewshot_datasets:
        rows = inputs.fewshot[
            (inputs.fewshot["dataset"] == dataset)
            & (inputs.fewshot["head"] == head)
            & (inputs.fewshot["shots"] == shots)
        ]
        accuracy = rows.groupby("model")["value"].mean()
        scatter = pd.DataFrame({"model": alignment.index, "alignment": alignment["pearson"].to_numpy(float)})
        scatter["accuracy"] = scatter["model"].map(accuracy)
        scatter = scatter.dropna().reset_index(drop=True)
        fit = None
        try:
            fit = stats.quadratic_fit(scatter["alignment"], scatter["accuracy"], **boot)
            u_tests.append(
                stats.u_shape_table(scatter["alignment"], scatter["accuracy"], **boot).assign(dataset=dataset)
            )
        except InputError as exc:
            section.notes.append(f"U-shape tests on {dataset} left out: {exc}")
        theory = figures.theory_overlay(scatter, alignment["triplet"]) if "triplet" in alignment else None
        if theory is not None:
            fitted = True
            scatter = scatter.merge(theory[["model", "predicted"]].rename(columns={"predicted": "theory_fitted"}),
                                    on="model", how="left")  # fmt: skip
        panels.append({"dataset": dataset, "scatter": scatter, "fit": fit, "theory": theory})
        scatters.append(scatter.assign(dataset=dataset, head=head, shots=shots))
    targets = correlations.fewshot_targets(inputs.fewshot, datasets=inputs.all_fewshot_datasets, heads=[head])
    long = correlations.alignment_correlations(
        alignment, targets, covariate=covar, metrics=["pearson"], correction=inputs.correction, **boot
    )
    inputs.long["figure4_correlations"] = long
    plain = long[long["covariate"] == correlations.NO_COVARIATE]
    figure, hover = figures.figure4(panels, plain, y_label=f"{shots}-shot accuracy ({head} head)")
    theory_text = caption("figure4_theory") if fitted else ""
    text = caption("figure4", shots=shots, head=head, datasets=", ".join(inputs.fewshot_datasets), theory=theory_text)
    section.figures.append(Figure("figure4", figure, text, hover=hover))
    scatter_table = inputs.with_domains(pd.concat(scatters, ignore_index=True))
    front = ["dataset", "head", "shots", "model"]
    section.tables.append(
        _table("figure4_scatter", scatter_table[front + [c for c in scatter_table if c not in front]])
    )
    if u_tests:
        u_table = pd.concat(u_tests, ignore_index=True)
        u_table = u_table[["dataset"] + [c for c in u_table if c != "dataset"]]
        section.tables.append(_table("u_shape_tests", u_table, shots=shots, head=head))
    shown = correlations.side_by_side(long, drop=("y_head", "y_metric"))
    section.tables.append(_table("figure4_correlations", shown, correction=inputs.correction))


def _raw_vs_z2(inputs: _Inputs) -> Section | None:
    from repalign.report import correlations
    from repalign.report.captions import PAPER_FINDINGS

    if not inputs.long:
        return None
    section = Section("raw_vs_z2", "Raw or z² alignment?")
    long = pd.concat(inputs.long.values(), ignore_index=True).drop_duplicates(list(correlations.KEY))
    table = correlations.raw_vs_z2(long, PAPER_FINDINGS)
    if table.empty:
        section.notes.append("No correlation has both a raw and a z² value.")
        return section
    section.tables.append(_table("raw_vs_z2", table))
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
    fewshot = None
    if inputs.fewshot is not None:
        rows = inputs.fewshot[
            (inputs.fewshot["head"] == inputs.head)
            & (inputs.fewshot["shots"] == inputs.shots)
            & (inputs.fewshot["dataset"].isin(inputs.fewshot_datasets))
        ]
        fewshot = rows.pivot_table(index="model", columns="dataset", values="value", aggfunc="mean")
        fewshot.columns = [f"{inputs.shots}-shot {d} ({inputs.head})" for d in fewshot.columns]
        fewshot.index = fewshot.index.astype(str)
    per_model, per_family = tables.family_table(inputs.alignment, fewshot, pretrain=pretrain)
    section.tables.append(_table("family_summary", inputs.with_domains(per_family)))
    section.tables.append(_table("family_models", inputs.with_domains(per_model)))
    return section


def _all_correlations(inputs: _Inputs) -> Section | None:
    from repalign.report import correlations

    if not inputs.long:
        return None
    section = Section("correlations", "All correlations")
    section.tables.append(_table("correlations", correlations.csv_rows(*inputs.long.values())))
    return section


def _layers(inputs: _Inputs) -> Section | None:
    """The per-layer alignment profile: only for a study that read several layers."""
    from repalign.report import figures

    full = inputs.all_layers
    if full is None or len(layer_tables.layers_of(full.results)) < 2 or not len(full.alignment):
        return None
    section = Section("layers", "Alignment across layers")
    section.notes.append(
        f"The other sections use the {inputs.layer} layer of every model only, so statistics across models never "
        "mix layers. Depth: the named layers in the order the config lists them, then penultimate and logits."
    )
    fewshot = full.fewshot if len(full.fewshot) else None
    profile = layer_tables.layer_profile(
        full.alignment,
        fewshot,
        similarity=inputs.similarity,
        head=inputs.head,
        shots=inputs.shots,
        fewshot_datasets=inputs.fewshot_datasets or None,
    )
    metric = profile.attrs.get("metric")
    accuracy = None
    if fewshot is not None:
        accuracy = f"{inputs.shots}-shot accuracy ({inputs.head}, {', '.join(inputs.fewshot_datasets)})"
    fields = {"metric": metric, "similarity": inputs.similarity, "accuracy": accuracy or "no few-shot results"}
    section.tables.append(_table("layer_summary", layer_tables.layer_summary(profile), **fields))
    section.tables.append(_table("layer_profile", profile, **fields))

    def figure() -> None:
        fig = figures.layer_profile_figure(profile, metric=metric, accuracy_label=accuracy)
        section.figures.append(Figure("layer_profile", fig, caption("figure_layer_profile", **fields)))

    _attempt(section, "The layer profile figure", figure)
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


#: The report's sections, in order; each takes the prepared inputs and returns one Section
#: (or None when the study has nothing for it). The raw-vs-z² comparison and the table of all
#: correlations read what the sections before them computed.
SECTIONS: tuple[Callable[[_Inputs], Section | None], ...] = (
    _overview,
    _ceilings,
    _comparison,
    _metrics,
    _similarities,
    _robustness,
    _fewshot,
    _layers,
    _raw_vs_z2,
    _families,
    _all_correlations,
    _failures,
    _provenance,
)


def _define_z2(sections: list[Section]) -> None:
    """Put the z² definition in the first section that shows a z² correlation."""
    from repalign.report.captions import Z2_DEFINITION

    for section in sections:
        if any("transform" in t.frame.columns for t in section.tables):
            section.paragraphs.insert(0, Paragraph("z2-definition", Z2_DEFINITION))
            return


def _is_names(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


#: the keys of config.resolved.toml the report reads, and what each must be. That file is
#: written by the run, but it is a file: one edited by hand to a value of another type is
#: left out with a warning (the report then uses its default), never a crash.
_CONFIG_READ: dict[tuple[str, str], Callable[[Any], bool]] = {
    ("study", "name"): lambda v: isinstance(v, str),
    ("study", "seed"): lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED,
    ("alignment", "human"): _is_names,
    ("alignment", "similarity"): _is_names,
    ("fewshot", "datasets"): _is_names,
    ("robustness", "source"): lambda v: isinstance(v, str),
}


def _with_checked_config(study: Any) -> Any:
    """``study`` with the config values the report reads checked (see :data:`_CONFIG_READ`)."""
    import dataclasses

    config = {section: dict(values) for section, values in study.config.items() if isinstance(values, dict)}
    for (section, key), valid in _CONFIG_READ.items():
        if key in config.get(section, {}) and not valid(config[section][key]):
            log.warning("config.resolved.toml: [%s] %s has a value of the wrong kind; ignored", section, key)
            del config[section][key]
    return dataclasses.replace(study, config=config) if dataclasses.is_dataclass(study) else study


def _at_primary_layer(study: Any) -> tuple[Any, Any, str | None]:
    """``(study, study with only the statistics' layer, that layer)``: the second is the first
    itself when the study read one layer (a report of one layer is as it always was)."""
    import dataclasses

    layer = layer_tables.primary_layer(study.results)
    if len(layer_tables.layers_of(study.results)) < 2 or not dataclasses.is_dataclass(study):
        return study, study, layer
    return study, dataclasses.replace(study, results=layer_tables.at_layer(study.results, layer)), layer


def analyze_study(
    study: Any,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    random_state: int | None = None,
    correction: str = DEFAULT_CORRECTION,
    relative_to_ceiling: bool = False,
) -> ReportData:
    """Every section of the report for a study, computed but not rendered.

    Args:
        study: a study directory (str or path) or a loaded :class:`repalign.store.StudyResults`.
        n_bootstrap: bootstrap resamples over models for every headline CI (0 = none).
        random_state: seed of the bootstraps; default the study's ``[study] seed``.
        correction: p-value adjustment across each grid of correlations ("holm", "fdr_bh", ...).
        relative_to_ceiling: the noise-ceiling figures draw alignment / ceiling (upper bound)
            instead of alignment (studies whose human data has no ceiling have no such figure).

    Returns:
        ReportData: the sections in report order, each with its notes, tables and figures.
    """
    if isinstance(study, (str, os.PathLike)):
        from repalign.store import load_study

        study = load_study(study)
    study = _with_checked_config(study)
    full, study, layer = _at_primary_layer(study)
    inputs = _prepare(study, n_bootstrap=n_bootstrap, random_state=random_state, correction=correction)
    inputs.relative_to_ceiling = bool(relative_to_ceiling)
    inputs.all_layers, inputs.layer = full, layer
    if study is not full:
        read = layer_tables.layers_of(full.results)
        inputs.notices.append(
            f"This study read its models at several layers ({', '.join(read)}); the statistics across models use "
            f"the {layer} layer only, and the section 'Alignment across layers' shows every layer."
        )
    results = study.results
    sections = [section for build in SECTIONS if (section := build(inputs)) is not None]
    _define_z2(sections)
    return ReportData(
        name=str((study.config.get("study") or {}).get("name") or Path(study.path).name),
        study_path=Path(study.path),
        n_models=int(results["model"].nunique()) if len(results) else 0,
        n_bootstrap=n_bootstrap,
        seed=inputs.seed,
        correction=correction,
        sections=sections,
        notices=inputs.notices,
        similarity=inputs.similarity,
        domains=tuple(inputs.domains),
    )


__all__ = [
    "GROUP_SIZE",
    "MIN_MODELS_FOR_STATS",
    "Figure",
    "Paragraph",
    "ReportData",
    "Section",
    "Table",
    "analyze_study",
]
