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

#: Caption of every table and figure, by name. Fields: ``paper`` (PAPER_REFERENCE),
#: ``paper_short`` and whatever the analysis passes to :func:`caption`.
CAPTIONS: dict[str, str] = {
    "row_counts": "Result rows per stage and status.",
    "alignment_per_model": (
        "Alignment of every model with the human similarity judgments, averaged over the human datasets "
        "(model similarity: {similarity}). Click a column header to sort."
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
        "Table 2. Pearson r (Fisher-z 95% CI, p and p adjusted across the table with {correction}) between each "
        "robustness accuracy and each z² alignment metric, and the partial correlation controlling for ImageNet "
        "top-1 (pingouin); boot_* are bootstrap CIs over models."
    ),
    "figure3": (
        "Figure 3. Left: n-shot accuracy (mean over few-shot datasets) of the high/mid/low alignment groups, "
        "per metric (rows) and head (columns). Right: Pearson r (95% CI) between n-shot accuracy and each z² "
        "alignment metric, per head."
    ),
    "figure3_group_curves": "Data of Figure 3, left.",
    "figure3_correlations": "Data of Figure 3, right.",
    "u_shape_tests": (
        "U-shape tests of {shots}-shot accuracy ({head} head) against Pearson alignment: the quadratic regression "
        "(x² coefficient, vertex with bootstrap CI) and Simonsohn's two-lines test (breakpoint by the Robin Hood "
        "procedure; a U needs opposite-sign slopes, both significant)."
    ),
    "figure4": (
        "Figure 4. Left: {shots}-shot accuracy ({head} head, mean over few-shot datasets) against Pearson "
        "alignment for all {n_models} models, with the quadratic fit.{theory} Right: Pearson r (95% CI) between "
        "n-shot accuracy and z² Pearson alignment, per few-shot dataset."
    ),
    "figure4_theory": (
        " Crosses: the theory's predicted shape C(1 − triplet alignment) fitted as {a:.3g} + {b:.3g}·C "
        "(least squares across models)."
    ),
    "figure4_scatter": "Data of Figure 4, left.",
    "figure4_correlations": "Data of Figure 4, right.",
    "family_summary": (
        "Mean alignment and 1-shot accuracy per architecture family (parsed from the model id) and training "
        "variant: distilled, ImageNet-21k-pretrained (in21k) and pruned models are marked."
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


__all__ = ["CAPTIONS", "PAPER", "PAPER_REFERENCE", "PaperValue", "caption"]
