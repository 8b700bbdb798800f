"""The study's figures (matplotlib), drawn from the tidy tables of :mod:`repalign.report.tables`.

Figures are built as ``matplotlib.figure.Figure`` objects without pyplot, so no GUI backend
or global figure state is involved (rendering uses Agg). The style is meant for print:
small serif-free fonts, no top/right spines, a colour-blind-safe palette (Okabe & Ito)
that also differs in marker and line style, so figures survive grayscale printing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Okabe & Ito colour-blind-safe palette
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
GROUP_STYLE = {
    "high": {"color": "#0072B2", "marker": "o", "linestyle": "-"},
    "mid": {"color": "#7f7f7f", "marker": "s", "linestyle": "--"},
    "low": {"color": "#D55E00", "marker": "^", "linestyle": ":"},
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")

_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable/searchable in the PDF
    "ps.fonttype": 42,
    "savefig.bbox": "tight",
    "figure.dpi": 100,
}


@contextlib.contextmanager
def print_style() -> Iterator[None]:
    """Temporarily apply the report's print-friendly rcParams."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        yield


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _series_style(k: int) -> dict:
    """Colour, marker and line style of the k-th series, distinct in colour and in print."""
    return {
        "color": PALETTE[k % len(PALETTE)],
        "marker": MARKERS[k % len(MARKERS)],
        "linestyle": LINESTYLES[k % len(LINESTYLES)],
    }


def _shots_axis(ax, shots: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({int(s) for s in shots})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def _errorbar(ax, frame: pd.DataFrame, x: str, *, label: str, style: Mapping[str, Any], dodge: float = 0.0) -> None:
    """r with its CI as error bars; ``dodge`` shifts x by a factor 2**dodge (log axis) so that
    the bars of several series at the same shots do not hide each other."""
    frame = frame.sort_values(x)
    yerr = np.vstack([(frame["r"] - frame["ci_low"]).to_numpy(), (frame["ci_high"] - frame["r"]).to_numpy()])
    ax.errorbar(
        frame[x].to_numpy(float) * 2.0**dodge,
        frame["r"].to_numpy(float),
        yerr=np.abs(yerr),
        label=label,
        capsize=2,
        elinewidth=0.8,
        **style,
    )


def figure3(curves: pd.DataFrame, correlations: pd.DataFrame) -> Any:
    """Figure 3. Left: n-shot accuracy of the high/mid/low-5 alignment groups per metric (rows)
    and head (columns). Right: Pearson r (95% CI) of n-shot accuracy with each z^2 alignment
    metric, one panel per head.

    Args:
        curves: from :func:`repalign.report.tables.fewshot_group_curves`
            (metric, group, head, shots, accuracy).
        correlations: from :func:`repalign.report.tables.fewshot_alignment_correlations`
            with by=("head", "shots") (metric, head, shots, r, ci_low, ci_high).
    Returns:
        matplotlib Figure.
    """
    metrics = list(dict.fromkeys(curves["metric"]))
    heads = list(dict.fromkeys(curves["head"]))
    with print_style():
        left_width = max(2.0 * len(heads), 3.4)  # room for the legend and title with a single head
        fig = _new_figure(left_width + 2.8, 1.7 * len(metrics) + 0.6)
        left, right = fig.subfigures(1, 2, width_ratios=[left_width, 2.8], wspace=0.04)
        axes = left.subplots(len(metrics), len(heads), sharex=True, sharey=True, squeeze=False)
        for i, metric in enumerate(metrics):
            for j, head in enumerate(heads):
                ax = axes[i, j]
                for group, style in GROUP_STYLE.items():
                    sel = curves[(curves["metric"] == metric) & (curves["head"] == head) & (curves["group"] == group)]
                    if sel.empty:
                        continue
                    sel = sel.sort_values("shots")
                    ax.plot(
                        sel["shots"].to_numpy(float),
                        sel["accuracy"].to_numpy(float),
                        label=f"{group} alignment",
                        **style,
                    )
                _shots_axis(ax, curves["shots"])
                if i == 0:
                    ax.set_title(f"head: {head}")
                if j == 0:
                    ax.set_ylabel(f"{metric}\naccuracy")
                if i == len(metrics) - 1:
                    ax.set_xlabel("shots per class")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        left.legend(handles, labels, loc="outside lower center", ncols=3)
        left.suptitle("n-shot accuracy by alignment group")

        panels = right.subplots(len(heads), 1, sharex=True, squeeze=False)[:, 0]
        corr_metrics = list(dict.fromkeys(correlations["metric"]))
        for ax, head in zip(panels, heads):
            for k, metric in enumerate(corr_metrics):
                sel = correlations[(correlations["head"] == head) & (correlations["metric"] == metric)]
                if sel.empty:
                    continue
                _errorbar(
                    ax,
                    sel,
                    "shots",
                    dodge=0.08 * (k - (len(corr_metrics) - 1) / 2),
                    label=f"z² {metric}",
                    style=_series_style(k),
                )
            ax.axhline(0, color="black", linewidth=0.6)
            _shots_axis(ax, correlations["shots"])
            ax.set_title(f"head: {head}")
            ax.set_ylabel("Pearson r")
        panels[-1].set_xlabel("shots per class")
        handles, labels = panels[0].get_legend_handles_labels()
        right.legend(handles, labels, loc="outside lower center", ncols=1)
        right.suptitle("r(accuracy, z² alignment)")
    return fig


def figure4(
    scatter: pd.DataFrame,
    fit: Mapping[str, Any] | None,
    correlations: pd.DataFrame | None,
    *,
    x_label: str = "Pearson alignment (mean over human datasets)",
    y_label: str = "1-shot accuracy",
    theory: pd.DataFrame | None = None,
) -> Any:
    """Figure 4. Left: 1-shot accuracy against Pearson alignment for every model, with the
    quadratic fit (and optionally the theory's predicted shape). Right: Pearson r (95% CI)
    between n-shot accuracy and z^2 Pearson alignment, one line per few-shot dataset.

    Args:
        scatter: model, alignment, accuracy (one row per model).
        fit: :func:`repalign.stats.quadratic_fit` result (b0, b1, b2, vertex, ...) or None.
        correlations: dataset, shots, r, ci_low, ci_high (one head), or None to omit the right panel.
        theory: optional model, alignment, predicted (the fitted theory prediction per model).
    Returns:
        matplotlib Figure.
    """
    with print_style():
        n_panels = 2 if correlations is not None and not correlations.empty else 1
        fig = _new_figure(3.4 * n_panels, 3.0)
        axes = fig.subplots(1, n_panels, squeeze=False)[0]
        ax = axes[0]
        ax.scatter(
            scatter["alignment"],
            scatter["accuracy"],
            s=9,
            color="#0072B2",
            alpha=0.7,
            edgecolors="none",
            label=f"models (n={len(scatter)})",
        )
        if fit is not None:
            grid = np.linspace(scatter["alignment"].min(), scatter["alignment"].max(), 200)
            ax.plot(
                grid,
                fit["b0"] + fit["b1"] * grid + fit["b2"] * grid**2,
                color="black",
                label=f"quadratic fit (x² coef {fit['b2']:.3g}, p={fit['b2_p']:.2g})",
            )
        if theory is not None and not theory.empty:
            ax.scatter(
                theory["alignment"],
                theory["predicted"],
                s=10,
                marker="x",
                linewidths=0.7,
                color="#D55E00",
                label="theory: a + b·C(1 − triplet)",
            )
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        # below the axes: with hundreds of models any spot inside would cover points
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=1)
        ax.set_title("1-shot accuracy vs alignment")
        if n_panels == 2:
            ax = axes[1]
            datasets = list(dict.fromkeys(correlations["dataset"]))
            for k, dataset in enumerate(datasets):
                sel = correlations[correlations["dataset"] == dataset]
                _errorbar(
                    ax,
                    sel,
                    "shots",
                    dodge=0.08 * (k - (len(datasets) - 1) / 2),
                    label=str(dataset),
                    style=_series_style(k),
                )
            ax.axhline(0, color="black", linewidth=0.6)
            _shots_axis(ax, correlations["shots"])
            ax.set_xlabel("shots per class")
            ax.set_ylabel("Pearson r with z² Pearson alignment")
            ax.set_title("per few-shot dataset, 95% CI")
            ax.legend(loc="best")
    return fig


def figure_png_bytes(fig, *, dpi: int = 150) -> bytes:
    """The figure as PNG bytes (for embedding in HTML)."""
    buffer = io.BytesIO()
    with print_style():
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig, directory: str | Path, stem: str, *, dpi: int = 200) -> dict[str, Path]:
    """Write ``<stem>.png`` (``dpi``) and ``<stem>.pdf`` (vector, for print) atomically; return their paths."""
    from repalign._io import atomic_path

    directory = Path(directory)
    paths = {}
    with print_style():
        for fmt in ("png", "pdf"):
            path = directory / f"{stem}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi)
                os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; reports are meant to be shared
            paths[fmt] = path
    return paths


def theory_overlay(scatter: pd.DataFrame, triplet: pd.Series) -> pd.DataFrame | None:
    """The theory's predicted few-shot shape, fitted to the observed accuracies.

    ``repalign.theory`` predicts performance proportional to the channel capacity
    ``C(eps)`` with ``eps = 1 - triplet alignment`` -- the reciprocal of the predicted query
    ratio ``1 / C(eps)``; only the shape is predicted, so we fit ``accuracy ~ a + b * C(eps)``
    by least squares across models and plot the fitted value for each model at its Pearson
    alignment. Returns None when repalign.theory is unavailable or the inputs do not fit.

    Args:
        scatter: model, alignment, accuracy.
        triplet: triplet alignment per model (Series indexed by model).
    Returns:
        DataFrame model, alignment, predicted, shape; attrs a, b.
    """
    try:
        try:
            from repalign.theory import predicted_accuracy_shape
        except ImportError:
            from repalign.theory.capacity import predicted_accuracy_shape
    except ImportError:
        log.info("repalign.theory is not available; Figure 4 has no theory overlay")
        return None
    frame = scatter.assign(triplet=scatter["model"].map(triplet)).dropna(subset=["triplet", "accuracy"])
    if len(frame) < 3:
        return None
    values = frame["triplet"].to_numpy(float)
    if np.any((values < 0) | (values > 1)):
        return None
    shape = np.asarray(predicted_accuracy_shape(values), dtype=float)
    if np.ptp(shape) == 0:
        return None
    b, a = np.polyfit(shape, frame["accuracy"].to_numpy(float), 1)
    out = pd.DataFrame(
        {
            "model": frame["model"].to_numpy(),
            "alignment": frame["alignment"].to_numpy(float),
            "predicted": a + b * shape,
            "shape": shape,
        }
    )
    out.attrs.update(a=float(a), b=float(b))
    return out
