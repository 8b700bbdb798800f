"""The report's captions, and the paper's published numbers they quote, as data.

Every caption of a table or figure is a format string in :data:`CAPTIONS`, keyed by the
table's or figure's name; :func:`caption` fills in the values that depend on the study
(the correction, the head, the number of models) and the published values of
:data:`PAPER_REFERENCE`. A number from the paper is written down once, here, with what it
measures and where it comes from, never typed into a caption string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from repalign.errors import InputError

#: the study whose analyses the report reproduces
PAPER = (
    "Sucholutsky & Griffiths (2023), Alignment with human representations supports robust few-shot learning, "
    "NeurIPS 2023"
)
#: how captions refer to it
PAPER_SHORT = "Sucholutsky & Griffiths (2023)"


@dataclass(frozen=True)
class PaperValue:
    """One number published in the paper, with what it measures and where it is from."""

    value: float
    what: str
    source: str = PAPER

    def __format__(self, spec: str) -> str:
        # "{paper[x]:.3f}" in a caption formats the number; no spec gives it as published
        return format(self.value, spec) if spec else f"{self.value:g}"


#: The paper's published values that captions quote. They are what the report's reader
#: compares this study with; the statistics never read them.
PAPER_REFERENCE: dict[str, PaperValue] = {
    "corr_spearman_triplet": PaperValue(
        0.992, "correlation across models of Spearman and triplet alignment (mean over the human datasets)"
    ),
    "corr_pearson_triplet": PaperValue(
        0.824, "correlation across models of Pearson and triplet alignment (mean over the human datasets)"
    ),
}

#: What the paper reports in words (no number), by the kind of outcome; the raw-vs-z² table
#: quotes them beside this study's values.
PAPER_FINDINGS: dict[str, str] = {
    "adversarial": "z² correlations slightly weaker than raw",
    "domain shift": "z² correlations slightly stronger than raw",
}

#: The z² definition, shown where z² is first used in the report.
Z2_DEFINITION = (
    "z² is the squared z-score of a model's alignment across the models of a correlation: "
    "z²(x) = ((x − mean) / sd)², with the mean and the sample SD over those models. It is large for models "
    "far from the average alignment in either direction, so a correlation with z² measures a U-shaped relation "
    "(better for both the most and the least aligned models), which a correlation with the raw alignment cannot "
    "see. Every z² correlation is shown next to the plain (raw) one; partial correlations control for ImageNet "
    "top-1 accuracy (pingouin) where it is known."
)

#: Caption of every table and figure, by name. Fields: ``paper`` (PAPER_REFERENCE),
#: ``paper_short`` and whatever the analysis passes to :func:`caption`.
CAPTIONS: dict[str, str] = {
    "row_counts": "Result rows per stage and status.",
    "alignment_per_model": (
        "Alignment of every model with the human similarity judgments, averaged over the same {n_domains} human "
        "datasets for every model ({domains}; model similarity: {similarity}). Click a column header to sort."
    ),
    "alignment_bars": (
        "{metric} alignment of every model with {dataset} (model similarity: {similarity}); whiskers: "
        "stimulus-bootstrap 95% CI; a shaded band, where shown: the noise ceiling of the human data."
    ),
    "comparison_heatmap": (
        "Model-to-model {method} on {images} ({n} images): 1 = the two models represent the stimuli alike "
        "(linear CKA: up to rotation and scale; RSA: the correlation of their similarity matrices)."
    ),
    "model_comparison": (
        "Every pair of models compared on {images} ({n} images), one row per ordered pair and method "
        "(repalign.alignment.compare_models)."
    ),
    "alignment_per_domain": "Alignment of every model on each human dataset and similarity function (not averaged).",
    "noise_ceilings": (
        "Alignment on the human datasets whose noise ceiling is known (per-participant matrices, or triplets "
        "judged more than once). ceiling_low / ceiling_high bound the best alignment the humans' own consistency "
        "allows (docs/ceilings.md); of_ceiling = value / ceiling_high. With per-participant matrices a metric's "
        "value is its mean over participants. Model similarity: {similarity}."
    ),
    "ceiling_figure": (
        "{dataset}: every model's alignment (95% stimulus-bootstrap CI) against the noise ceiling of the human "
        "data (grey band, lower to upper bound){relative}."
    ),
    "alignment_by_similarity": (
        "Alignment of every model with each model similarity function (columns similarity/metric), averaged over "
        "the same human datasets."
    ),
    "similarity_sensitivity": (
        "How much the choice of similarity function matters: Spearman rank correlation across models of the "
        "model orderings between each pair of similarity functions, per metric (Fisher-z 95% CI). The statistics "
        "use {similarity}."
    ),
    "metric_correlations": (
        "Correlation of the alignment metrics across models (Pearson r with Fisher-z 95% CI and a bootstrap "
        "CI over models; Spearman rho). {paper_short} report {paper[corr_spearman_triplet]} for spearman vs triplet "
        "and {paper[corr_pearson_triplet]} for pearson vs triplet."
    ),
    "groups": "The {group_size} models with the highest, nearest-to-the-mean and lowest alignment, per metric.",
    "table1_group_robustness": (
        "Table 1. Mean ImageNet-A/R/Sketch top-1 and top-5 accuracy (%) of the high/mid/low alignment groups, "
        "per alignment metric."
    ),
    "table1_bootstrap": (
        "Table 1 in long form, with percentile bootstrap CIs of each group mean (resampling the group's models)."
    ),
    "table2_robustness_correlations": (
        "Table 2. Pearson r (Fisher-z 95% CI, p, and p adjusted across the table with {correction}) between each "
        "robustness accuracy and each alignment metric, raw and z² in adjacent rows; *_partial: the partial "
        "correlation controlling for ImageNet top-1 (pingouin); boot_*: bootstrap CIs over models. n_models: "
        "the models that enter each correlation."
    ),
    "layer_summary": (
        "Per model: the layer whose {metric} alignment ({similarity} similarity, mean over the human datasets) is "
        "highest, and the layer with the highest {accuracy}; same_layer says whether the most human-aligned layer "
        "also transfers best."
    ),
    "layer_profile": (
        "Alignment ({metric}, {similarity} similarity, mean over the human datasets) and {accuracy} at every layer "
        "of every model, from input (depth 1) to output; most_aligned and best_transfer mark each model's top layer."
    ),
    "figure_layer_profile": (
        "Alignment ({metric}) and {accuracy} against relative depth (0 = the shallowest layer read, 1 = the "
        "deepest), one line per model; rings mark each model's top layer."
    ),
    "fewshot_per_model": (
        "Few-shot accuracy of every model per dataset and head (each value the mean over seeds), one column per "
        "number of shots per class."
    ),
    "figure3": (
        "Figure 3 ({dataset}). Left: n-shot accuracy on {dataset} of the high/mid/low alignment groups, per "
        "metric (rows) and head (columns); lines are group means, bands ± 1 SD across the group's models. "
        "Right: Pearson r (95% CI) between n-shot accuracy and each alignment metric, raw (left column) and "
        "z² (right column), per head."
    ),
    "figure3_group_curves": "Data of Figure 3 ({dataset}), left: group mean, SD and number of models.",
    "figure3_correlations": (
        "Data of Figure 3 ({dataset}), right: raw and z² correlations in adjacent rows; p adjusted across the table "
        "with {correction}; *_partial: controlling for ImageNet top-1 where known."
    ),
    "u_shape_tests": (
        "U-shape tests of {shots}-shot accuracy ({head} head) against Pearson alignment, per few-shot dataset: the "
        "quadratic regression (x² coefficient, vertex with bootstrap CI) and Simonsohn's two-lines test "
        "(breakpoint by the Robin Hood procedure; a U needs opposite-sign slopes, both significant)."
    ),
    "figure4": (
        "Figure 4. Top: {shots}-shot accuracy ({head} head) against Pearson alignment for each model, on {datasets}, "
        "with the quadratic fit; the most extreme models are named (hover over a point for any model).{theory} "
        "Bottom: Pearson r (95% CI) between n-shot accuracy and Pearson alignment, raw and z², per few-shot "
        "dataset ({head} head)."
    ),
    "figure4_theory": (
        " Crosses: the theory's predicted shape C(1 − triplet alignment), fitted to these data by least squares "
        "across models (a + b·C per dataset; the theory predicts the shape, not the scale)."
    ),
    "figure4_scatter": "Data of Figure 4, top: one row per model and dataset.",
    "figure4_correlations": (
        "Data of Figure 4, bottom: raw and z² correlations in adjacent rows; p adjusted across the table with "
        "{correction}; *_partial: controlling for ImageNet top-1 where known."
    ),
    "raw_vs_z2": (
        "Raw or z² alignment: mean |r| over the correlations of each kind of outcome (adversarial: ImageNet-A; "
        "domain shift: ImageNet-R and -Sketch; few-shot: the datasets of Figures 3-4), and in how many of them "
        "|r| of z² exceeds |r| of raw alignment. The paper column says what {paper_short} report."
    ),
    "correlations": (
        "Every correlation of alignment with an outcome that this report shows, one row each (correlations.csv): "
        "x_metric and transform (raw or z²), the outcome (y_*), the covariate (none, or ImageNet top-1 for a "
        "partial correlation), r with its Fisher-z 95% CI, p, and n_models."
    ),
    "family_summary": (
        "Mean alignment and 1-shot accuracy per architecture family and training variant. Families are parsed "
        "from timm architecture names only (distilled, ImageNet-21k-pretrained (in21k), pruned and untrained "
        "(random) models are marked); other models are grouped by their source."
    ),
    "family_models": "Family and variant of every model.",
    "failures": "Rows that failed (with their error) or had nothing to compute.",
    "provenance": (
        "The resolved config, the run manifest (package versions, git commit, hardware, runs), the packages of "
        "this report, and sha256 checksums of the study's files and robustness data."
    ),
}


def caption(name: str, **fields: Any) -> str:
    """The caption of table or figure ``name``, filled with ``fields`` and the paper's values.

    Example:
        >>> caption("groups", group_size=5)
        'The 5 models with the highest, nearest-to-the-mean and lowest alignment, per metric.'
    """
    try:
        text = CAPTIONS[name]
    except KeyError:
        raise InputError(f"No caption named {name!r}; known: {', '.join(sorted(CAPTIONS))}.") from None
    return text.format(paper=PAPER_REFERENCE, paper_short=PAPER_SHORT, **fields)


__all__ = ["CAPTIONS", "PAPER", "PAPER_FINDINGS", "PAPER_REFERENCE", "PaperValue", "Z2_DEFINITION", "caption"]
