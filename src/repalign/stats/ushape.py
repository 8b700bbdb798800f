"""Tests for a U-shaped relation: a quadratic regression with a bootstrap CI of its vertex, and
Simonsohn's (2018) two-lines test (interrupted regression, Robin Hood breakpoint)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from repalign._options import DEFAULT_N_BOOTSTRAP
from repalign.errors import InputError, unknown_name
from repalign.stats.bootstrap import bootstrap_ci
from repalign.stats.correlations import PINGOUIN_REGRESSION_COLUMNS, _paired, check_pingouin_columns

log = logging.getLogger(__name__)


def quadratic_fit(
    x, y, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, random_state: int | None = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """OLS fit ``y = b0 + b1 x + b2 x^2``: the curvature b2 with its CI and the vertex.

    The vertex ``-b1 / (2 b2)`` gets a percentile bootstrap CI over models. A U (b2 > 0) or
    inverted U (b2 < 0) is only evidence of a turn *inside* the data if the vertex lies within
    the range of x; the two-lines test checks that directly.

    Args:
        x, y: 1-d arrays (n_models,); NaN pairs dropped.
    Returns:
        dict: n, b0, b1, b2, b2_se, b2_ci_low, b2_ci_high, b2_p, r2, vertex, vertex_ci_low,
        vertex_ci_high, vertex_in_range, x_min, x_max, shape ("U", "inverted-U" or "none" at
        the 1 - confidence level).
    """
    import pingouin

    xv, yv = _paired(x, y)
    n = len(xv)
    if n < 5:
        raise InputError(f"A quadratic fit needs at least 5 models; got {n}.")
    design = pd.DataFrame({"x": xv, "x2": xv**2})
    fit = pingouin.linear_regression(design, yv, alpha=1 - confidence)
    check_pingouin_columns(fit, PINGOUIN_REGRESSION_COLUMNS)
    coef = dict(zip(fit["names"], fit["coef"]))
    b0, b1, b2 = coef["Intercept"], coef["x"], coef["x2"]
    row = fit[fit["names"] == "x2"].iloc[0]
    ci_columns = [c for c in fit.columns if c.startswith("CI")]  # "CI2.5", "CI97.5" at 95%
    if len(ci_columns) != 2:
        check_pingouin_columns(fit, (*PINGOUIN_REGRESSION_COLUMNS, "CI<low>", "CI<high>"))
    b2_low, b2_high = float(row[ci_columns[0]]), float(row[ci_columns[1]])

    def vertex_of(xs, ys):
        design = np.column_stack([np.ones_like(xs), xs, xs**2])
        (c0, c1, c2), _, rank, _ = np.linalg.lstsq(design, ys, rcond=None)
        # a resample with < 3 distinct x values has no unique parabola
        return -c1 / (2 * c2) if rank == 3 and c2 != 0 else np.nan

    vertex = -b1 / (2 * b2) if b2 != 0 else np.nan
    v_low, v_high = bootstrap_ci(
        vertex_of, xv, yv, n_bootstrap=n_bootstrap, random_state=random_state, confidence=confidence
    )
    p = float(row["pval"])
    shape = "none" if p >= 1 - confidence else ("U" if b2 > 0 else "inverted-U")
    return {
        "n": n,
        "b0": float(b0),
        "b1": float(b1),
        "b2": float(b2),
        "b2_se": float(row["se"]),
        "b2_ci_low": b2_low,
        "b2_ci_high": b2_high,
        "b2_p": p,
        "r2": float(row["r2"]),
        "vertex": float(vertex),
        "vertex_ci_low": v_low,
        "vertex_ci_high": v_high,
        "vertex_in_range": bool(xv.min() <= vertex <= xv.max()),
        "x_min": float(xv.min()),
        "x_max": float(xv.max()),
        "shape": shape,
    }


def interrupted_regression(x, y, breakpoint: float) -> dict[str, Any]:
    """Two lines meeting at ``breakpoint``: ``y = a + b1 x_low + b2 x_high + c [x >= bp]``.

    ``x_low = x - bp`` below the breakpoint (else 0), ``x_high = x - bp`` at or above it (else 0).
    Standard errors are heteroskedasticity-robust (HC3), as in Simonsohn (2018).

    Returns:
        dict: breakpoint, n_low, n_high, slope_low, se_low, p_low, slope_high, se_high, p_high.
    """
    import statsmodels.api as sm

    xv, yv = _paired(x, y)
    high = xv >= breakpoint
    n_low, n_high = int((~high).sum()), int(high.sum())
    if min(n_low, n_high) < 3:
        raise InputError(
            f"Breakpoint {breakpoint:.4g} leaves {n_low} models below and {n_high} above; each line needs >= 3."
        )
    centered = xv - breakpoint
    design = np.column_stack(
        [np.ones_like(xv), np.where(high, 0.0, centered), np.where(high, centered, 0.0), high.astype(float)]
    )
    fit = sm.OLS(yv, design).fit(cov_type="HC3")
    params, se, p = fit.params, fit.bse, fit.pvalues
    return {
        "breakpoint": float(breakpoint),
        "n_low": n_low,
        "n_high": n_high,
        "slope_low": float(params[1]),
        "se_low": float(se[1]),
        "p_low": float(p[1]),
        "slope_high": float(params[2]),
        "se_high": float(se[2]),
        "p_high": float(p[2]),
    }


def two_lines_test(x, y, *, breakpoint: str | float = "robin-hood", alpha: float = 0.05) -> dict[str, Any]:
    """Simonsohn's (2018) two-lines test for a U-shaped (or inverted-U) relation.

    Fits two separate regression lines below and above a breakpoint and calls the relation
    U-shaped when the slopes have opposite signs and *both* are significant at ``alpha``.

    Breakpoint choice:
        "robin-hood" (default): Simonsohn's procedure with the quadratic fit as the smoother
            (his reference implementation uses a GAM; the smoother only locates the region of
            the turn). ``x_flat`` = the observed x whose fitted value is within one standard
            error of the most extreme fitted value. A first interrupted regression at the median
            of ``x_flat`` gives the slopes' |z| statistics z1 (left), z2 (right); the breakpoint
            then moves to the ``100 * z2 / (z1 + z2)``-th percentile of ``x_flat``, giving the
            statistically weaker line more observations.
        "vertex": the vertex of the quadratic fit, clipped into the data range.
        a number: that breakpoint.

    Returns:
        dict: everything from :func:`interrupted_regression` plus method, u_shape (bool),
        shape ("U", "inverted-U" or "none") and reason (a sentence for reports).
    """
    import statsmodels.api as sm

    xv, yv = _paired(x, y)
    if len(xv) < 8:
        raise InputError(f"The two-lines test needs at least 8 models; got {len(xv)}.")
    order = np.sort(xv)
    lowest_allowed, highest_allowed = order[3], order[-3]  # >= 3 points on each side
    if isinstance(breakpoint, str):
        if breakpoint not in ("robin-hood", "vertex"):
            raise unknown_name("breakpoint rule", breakpoint, ("robin-hood", "vertex"))
        design = np.column_stack([np.ones_like(xv), xv, xv**2])
        quad = sm.OLS(yv, design).fit()
        if breakpoint == "vertex":
            b2 = quad.params[2]
            bp = -quad.params[1] / (2 * b2) if b2 != 0 else np.median(xv)
        else:
            fitted = quad.fittedvalues
            extreme = int(np.argmin(fitted) if quad.params[2] > 0 else np.argmax(fitted))
            se_extreme = float(quad.get_prediction(design[extreme : extreme + 1]).se_mean[0])
            flat = np.sort(xv[np.abs(fitted - fitted[extreme]) <= se_extreme])
            first_bp = float(np.clip(np.median(flat), lowest_allowed, highest_allowed))
            first = interrupted_regression(xv, yv, first_bp)
            z1, z2 = abs(first["slope_low"] / first["se_low"]), abs(first["slope_high"] / first["se_high"])
            share = z2 / (z1 + z2) if (z1 + z2) > 0 else 0.5
            bp = float(np.percentile(flat, 100 * share))
        method = breakpoint
    else:
        bp, method = float(breakpoint), "fixed"
    bp = float(np.clip(bp, lowest_allowed, highest_allowed))
    result = interrupted_regression(xv, yv, bp)
    opposite = np.sign(result["slope_low"]) * np.sign(result["slope_high"]) < 0
    both = result["p_low"] < alpha and result["p_high"] < alpha
    u_shape = bool(opposite and both)
    shape = "none"
    if u_shape:
        shape = "U" if result["slope_low"] < 0 else "inverted-U"
    if u_shape:
        reason = (
            f"slopes {result['slope_low']:.3g} and {result['slope_high']:.3g} have opposite signs, both p < {alpha}"
        )
    elif not opposite:
        reason = "both slopes have the same sign"
    else:
        reason = (
            f"slopes have opposite signs but p = {result['p_low']:.3g} and {result['p_high']:.3g} (need both < {alpha})"
        )
    return {"method": method, **result, "u_shape": u_shape, "shape": shape, "reason": reason}


def u_shape_table(
    x, y, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, random_state: int | None = 0, alpha: float = 0.05
) -> pd.DataFrame:
    """Both U-shape tests in one tidy table: one row per test with its key numbers."""
    quad = quadratic_fit(x, y, n_bootstrap=n_bootstrap, random_state=random_state, confidence=1 - alpha)
    lines = two_lines_test(x, y, alpha=alpha)
    return pd.DataFrame.from_records(
        [
            {
                "test": "quadratic",
                "shape": quad["shape"],
                "estimate": quad["b2"],
                "ci_low": quad["b2_ci_low"],
                "ci_high": quad["b2_ci_high"],
                "p": quad["b2_p"],
                "location": quad["vertex"],
                "location_ci_low": quad["vertex_ci_low"],
                "location_ci_high": quad["vertex_ci_high"],
                "n": quad["n"],
                "detail": f"x^2 coefficient; vertex {'inside' if quad['vertex_in_range'] else 'outside'} the data range",
            },
            {
                "test": "two-lines",
                "shape": lines["shape"],
                "estimate": lines["slope_low"],
                "ci_low": np.nan,
                "ci_high": np.nan,
                "p": lines["p_low"],
                "location": lines["breakpoint"],
                "location_ci_low": np.nan,
                "location_ci_high": np.nan,
                "n": lines["n_low"] + lines["n_high"],
                "detail": f"slope below {lines['slope_low']:.3g} (p={lines['p_low']:.3g}), above "
                f"{lines['slope_high']:.3g} (p={lines['p_high']:.3g}); {lines['reason']}",
            },
        ]
    )
