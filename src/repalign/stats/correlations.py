"""Correlations across models: z^2, Pearson/Spearman r with Fisher CIs, partial correlations
(pingouin), and p-value adjustment."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

from repalign._options import CORRECTIONS, DEFAULT_CORRECTION
from repalign.errors import InputError, RepalignError, unknown_name

log = logging.getLogger(__name__)


#: Fewer models than this and correlations / Fisher CIs are meaningless (n - 3 > 0 needed).
MIN_MODELS = 4

#: Columns of pingouin.partial_corr's output in the pinned pingouin (==0.7.0). pingouin
#: renamed them before ('CI95%' -> 'CI95', 'p-val' -> 'p_val'); a silent rename would turn
#: our numbers into NaN or KeyErrors, so we check and fail loudly instead.
PINGOUIN_PARTIAL_COLUMNS = ("n", "r", "CI95", "p_val")
PINGOUIN_REGRESSION_COLUMNS = ("names", "coef", "se", "pval", "r2")


class PingouinAPIError(RepalignError, RuntimeError):
    """The installed pingouin returns other columns than the pinned version."""


def z2_transform(values):
    """Squared z-score across models: ``((x - mean) / sd) ** 2`` with the sample SD (ddof=1).

    Large values mark models far from the average alignment in either direction -- the
    quantity that a U-shaped relation makes linear. NaNs are ignored in mean/SD and kept.

    Args:
        values: 1-d array-like (n_models,) or a pandas Series (index kept).
    Returns:
        Same type and shape as the input (Series in -> Series out, else ndarray).
    """
    is_series = isinstance(values, pd.Series)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"z2_transform expects a 1-d array of per-model values; got shape {x.shape}.")
    finite = x[np.isfinite(x)]
    if finite.size < 2:
        raise InputError(f"z2_transform needs at least 2 finite values; got {finite.size}.")
    sd = finite.std(ddof=1)
    if sd == 0:
        raise InputError("z2_transform: all values are equal (zero SD), z-scores are undefined.")
    z2 = ((x - finite.mean()) / sd) ** 2
    return pd.Series(z2, index=values.index, name=values.name) if is_series else z2


def fisher_ci(r: float, n: int, *, confidence: float = 0.95, n_covariates: int = 0) -> tuple[float, float]:
    """Fisher-z confidence interval of a correlation r from n observations."""
    dof = n - n_covariates - 3
    if dof <= 0 or not np.isfinite(r):
        return (np.nan, np.nan)
    if abs(r) >= 1:
        return (float(r), float(r))
    crit = _sps.norm.ppf(0.5 + confidence / 2)
    z = np.arctanh(r)
    half = crit / np.sqrt(dof)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def correlation(x, y, *, method: str = "pearson", confidence: float = 0.95) -> dict[str, float]:
    """Correlation of two per-model vectors with a Fisher-z CI and a two-sided p-value.

    Pairs with a NaN in either vector are dropped.

    Args:
        x, y: 1-d arrays (n_models,).
        method: "pearson" or "spearman".
    Returns:
        {"n", "r", "ci_low", "ci_high", "p"}; r, CI and p are NaN when n < 4 or a vector is constant.
    """
    xv, yv = _paired(x, y)
    n = len(xv)
    if n < MIN_MODELS or np.ptp(xv) == 0 or np.ptp(yv) == 0:
        return {"n": n, "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    if method == "pearson":
        result = _sps.pearsonr(xv, yv)
    elif method == "spearman":
        result = _sps.spearmanr(xv, yv)
    else:
        raise unknown_name("correlation method", method, ("pearson", "spearman"))
    r, p = float(result.statistic), float(result.pvalue)
    low, high = fisher_ci(r, n, confidence=confidence)
    return {"n": n, "r": r, "ci_low": low, "ci_high": high, "p": p}


def partial_correlation(x, y, covar, *, method: str = "pearson") -> dict[str, float]:
    """Partial correlation of x and y controlling for ``covar`` (pingouin.partial_corr).

    Args:
        x, y: 1-d arrays (n_models,).
        covar: 1-d array (n_models,) or 2-d (n_models, k) of covariates (e.g. ImageNet top-1).
    Returns:
        {"n", "r", "ci_low", "ci_high", "p"} exactly as pingouin computes them (95% CI).
    """
    import pingouin

    cov = np.asarray(covar, dtype=np.float64)
    cov = cov[:, None] if cov.ndim == 1 else cov
    data = pd.DataFrame({"x": np.asarray(x, dtype=np.float64), "y": np.asarray(y, dtype=np.float64)})
    if len(cov) != len(data):
        raise InputError(f"covar has {len(cov)} rows but x and y have {len(data)}.")
    cov_names = [f"covar{i}" for i in range(cov.shape[1])]
    data[cov_names] = cov
    data = data.dropna()
    n = len(data)
    if n < MIN_MODELS + cov.shape[1] or data.std().eq(0).any():
        return {"n": n, "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    if method not in ("pearson", "spearman"):
        raise unknown_name("correlation method", method, ("pearson", "spearman"))
    with _pingouin_unrounded():
        out = pingouin.partial_corr(data=data, x="x", y="y", covar=cov_names, method=method)
    check_pingouin_columns(out)
    row = out.iloc[0]
    low, high = row["CI95"]
    return {
        "n": int(row["n"]),
        "r": float(row["r"]),
        "ci_low": float(low),
        "ci_high": float(high),
        "p": float(row["p_val"]),
    }


@contextlib.contextmanager
def _pingouin_unrounded() -> Iterator[None]:
    """pingouin rounds its CI95 column to 2 decimals by default (``pingouin.options``); we
    want full precision, so switch that display rounding off for the call and restore it."""
    import pingouin

    saved = dict(pingouin.options)
    for key in [k for k in pingouin.options if k.startswith("round.column.")]:
        pingouin.options[key] = None
    pingouin.options["round"] = None
    try:
        yield
    finally:
        pingouin.options.clear()
        pingouin.options.update(saved)


def check_pingouin_columns(frame: pd.DataFrame, expected: Sequence[str] = PINGOUIN_PARTIAL_COLUMNS) -> None:
    """Raise :class:`PingouinAPIError` if pingouin's output lacks the pinned columns."""
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        import pingouin

        raise PingouinAPIError(
            f"pingouin {pingouin.__version__} returned columns {list(frame.columns)}, expected "
            f"{list(expected)} (pingouin==0.7.0). Install the pinned version: pip install 'pingouin==0.7.0'."
        )


def adjust_pvalues(pvalues, *, method: str = DEFAULT_CORRECTION) -> np.ndarray:
    """Family-wise (Holm, Bonferroni) or false-discovery-rate (Benjamini-Hochberg) adjustment.

    NaN p-values are kept as NaN and do not count toward the family size.
    """
    import pingouin

    if method not in CORRECTIONS:
        raise unknown_name("p-value correction", method, CORRECTIONS)
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        out[ok] = p[ok]
        return out
    _, adjusted = pingouin.multicomp(p[ok], method=method)
    out[ok] = adjusted
    return out


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    xv = np.asarray(x, dtype=np.float64).ravel()
    yv = np.asarray(y, dtype=np.float64).ravel()
    if xv.shape != yv.shape:
        raise InputError(f"x and y must have the same length; got {xv.size} and {yv.size}.")
    keep = np.isfinite(xv) & np.isfinite(yv)
    return xv[keep], yv[keep]
