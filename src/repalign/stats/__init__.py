"""The study's statistics, as small functions over arrays and per-model tables.

Conventions
-----------
* Correlations are across **models** (one value per model).
* ``z2_transform`` uses the sample SD (``ddof=1``). The choice only rescales z^2 by a
  constant, so every correlation computed with z^2 is the same under ``ddof=0``.
* 95% CIs of Pearson/Spearman r use the Fisher z transform (``atanh(r) +- z_crit / sqrt(n - 3)``),
  as scipy's ``pearsonr(...).confidence_interval()`` and pingouin do; partial correlations
  come from ``pingouin.partial_corr`` (Fisher z with ``n - k`` for ``k`` covariates).
* "Headline" numbers also get a percentile bootstrap CI over models (resampling models with
  replacement, seeded by ``random_state``).
* U-shape tests: a quadratic regression (its x^2 coefficient, and the vertex with a bootstrap
  CI) and Simonsohn's (2018) two-lines test, an interrupted regression whose breakpoint is
  chosen by the Robin Hood procedure; see :func:`two_lines_test`.

Modules: ``correlations`` (z^2, r, partial r, p adjustment), ``bootstrap`` (over models),
``tables`` (correlation grids), ``groups`` (high / mid / low models), ``ushape``. This
package knows nothing of the study schema; per-model summaries of result rows are in
:mod:`repalign.report.summaries`.
"""

from __future__ import annotations

from repalign.stats.bootstrap import bootstrap_ci, bootstrap_correlation_ci
from repalign.stats.correlations import (
    CORRECTIONS,
    MIN_MODELS,
    PINGOUIN_PARTIAL_COLUMNS,
    PINGOUIN_REGRESSION_COLUMNS,
    PingouinAPIError,
    adjust_pvalues,
    check_pingouin_columns,
    correlation,
    fisher_ci,
    partial_correlation,
    z2_transform,
)
from repalign.stats.groups import GROUPS, select_groups
from repalign.stats.tables import correlation_table, metric_correlations
from repalign.stats.ushape import interrupted_regression, quadratic_fit, two_lines_test, u_shape_table

__all__ = [
    "CORRECTIONS",
    "GROUPS",
    "MIN_MODELS",
    "PINGOUIN_PARTIAL_COLUMNS",
    "PINGOUIN_REGRESSION_COLUMNS",
    "PingouinAPIError",
    "adjust_pvalues",
    "bootstrap_ci",
    "bootstrap_correlation_ci",
    "check_pingouin_columns",
    "correlation",
    "correlation_table",
    "fisher_ci",
    "interrupted_regression",
    "metric_correlations",
    "partial_correlation",
    "quadratic_fit",
    "select_groups",
    "two_lines_test",
    "u_shape_table",
    "z2_transform",
]
