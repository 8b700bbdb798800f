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
from dataclasses import dataclass
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
    # the image is the whole figure (constrained layout keeps everything inside it), so that
    # positions in the figure are positions in the PNG (the HTML hover labels rely on it)
    "savefig.bbox": "standard",
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


#: how the two transforms of the alignment are named in figure titles
TRANSFORM_TITLES = {"raw": "r(accuracy, alignment)", "z2": "r(accuracy, z² alignment)"}


def figure3(curves: pd.DataFrame, correlations: pd.DataFrame, *, dataset: str) -> Any:
    """Figure 3 for one few-shot dataset.

    Left: n-shot accuracy of the high/mid/low alignment groups per metric (rows) and head
    (columns): the group mean with a band of ± 1 SD across the group's models. Right: Pearson r
    (95% CI) of n-shot accuracy with each alignment metric, raw and z² (columns), per head (rows).

    Args:
        curves: from :func:`repalign.report.tables.fewshot_group_curves`
            (metric, group, head, shots, accuracy, sd).
        correlations: long rows of :func:`repalign.report.correlations.alignment_correlations`
            without covariate (x_metric, transform, y_head, y_shots, r, ci_low, ci_high).
        dataset: the few-shot dataset, for the titles.
    Returns:
        matplotlib Figure.
    """
    metrics = list(dict.fromkeys(curves["metric"]))
    heads = list(dict.fromkeys(curves["head"]))
    transforms = [t for t in TRANSFORM_TITLES if t in set(correlations["transform"])]
    with print_style():
        left_width = max(2.0 * len(heads), 4.4)  # room for the legend and title with a single head
        right_width = 2.4 * max(len(transforms), 1)
        fig = _new_figure(left_width + right_width, max(1.7 * len(metrics), 1.6 * len(heads)) + 0.9)
        left, right = fig.subfigures(1, 2, width_ratios=[left_width, right_width], wspace=0.04)
        axes = left.subplots(len(metrics), len(heads), sharex=True, sharey=True, squeeze=False)
        for i, metric in enumerate(metrics):
            for j, head in enumerate(heads):
                ax = axes[i, j]
                for group, style in GROUP_STYLE.items():
                    sel = curves[(curves["metric"] == metric) & (curves["head"] == head) & (curves["group"] == group)]
                    if sel.empty:
                        continue
                    sel = sel.sort_values("shots")
                    shots = sel["shots"].to_numpy(float)
                    mean = sel["accuracy"].to_numpy(float)
                    sd = np.nan_to_num(sel["sd"].to_numpy(float)) if "sd" in sel else np.zeros_like(mean)
                    ax.fill_between(shots, mean - sd, mean + sd, color=style["color"], alpha=0.15, linewidth=0)
                    ax.plot(shots, mean, label=f"{group} alignment", **style)
                _shots_axis(ax, curves["shots"])
                if i == 0:
                    ax.set_title(f"head: {head}")
                if j == 0:
                    ax.set_ylabel(f"{metric}\naccuracy")
                if i == len(metrics) - 1:
                    ax.set_xlabel("shots per class")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        left.legend(handles, labels, loc="outside lower center", ncols=3)
        left.suptitle(f"{dataset}: n-shot accuracy by alignment group\n(mean ± SD across the group's models)")

        panels = right.subplots(len(heads), max(len(transforms), 1), sharex=True, sharey=True, squeeze=False)
        corr_metrics = list(dict.fromkeys(correlations["x_metric"]))
        for row, head in enumerate(heads):
            for col, transform in enumerate(transforms):
                ax = panels[row, col]
                for k, metric in enumerate(corr_metrics):
                    sel = correlations[
                        (correlations["y_head"] == head)
                        & (correlations["x_metric"] == metric)
                        & (correlations["transform"] == transform)
                    ]
                    if sel.empty:
                        continue
                    _errorbar(
                        ax,
                        sel,
                        "y_shots",
                        dodge=0.08 * (k - (len(corr_metrics) - 1) / 2),
                        label=metric,
                        style=_series_style(k),
                    )
                ax.axhline(0, color="black", linewidth=0.6)
                _shots_axis(ax, correlations["y_shots"])
                ax.set_title(f"{'z²' if transform == 'z2' else 'raw'} · head: {head}")
                if col == 0:
                    ax.set_ylabel("Pearson r")
                if row == len(heads) - 1:
                    ax.set_xlabel("shots per class")
        handles, labels = panels[0, 0].get_legend_handles_labels()
        right.legend(handles, labels, loc="outside lower center", ncols=max(len(labels), 1))
        right.suptitle(f"{dataset}: r(accuracy, alignment)\nraw and z², 95% CI")
    return fig


@dataclass(frozen=True)
class HoverPoints:
    """Points of a scatter panel that the HTML report labels on hover (their data coordinates)."""

    axes: Any
    x: np.ndarray
    y: np.ndarray
    titles: tuple[str, ...]


def figure4(
    scatters: Sequence[Mapping[str, Any]],
    correlations: pd.DataFrame | None,
    *,
    x_label: str = "Pearson alignment (mean over human datasets)",
    y_label: str = "1-shot accuracy",
    n_labels: int = 2,
) -> tuple[Any, list[HoverPoints]]:
    """Figure 4. Top: one panel per few-shot dataset, its n-shot accuracy against Pearson
    alignment for every model, with the quadratic fit (and optionally the theory's shape,
    fitted); the most extreme models are named. Bottom: Pearson r (95% CI) between n-shot
    accuracy and Pearson alignment, raw and z² (panels), one line per few-shot dataset.

    Args:
        scatters: one mapping per panel: ``dataset``; ``scatter`` (model, alignment, accuracy);
            ``fit`` (:func:`repalign.stats.quadratic_fit` result or None); ``theory`` (model,
            alignment, predicted: the fitted theory overlay, or None).
        correlations: long rows without covariate (y_dataset, y_shots, transform, r, ci_low,
            ci_high), or None to omit the bottom row.
        n_labels: models named at each extreme of each axis.
    Returns:
        (matplotlib Figure, the points to label on hover).
    """
    transforms = []
    if correlations is not None and not correlations.empty:
        transforms = [t for t in TRANSFORM_TITLES if t in set(correlations["transform"])]
    hover: list[HoverPoints] = []
    with print_style():
        n_top = max(len(scatters), 1)
        width = max(3.4 * n_top, 2.9 * len(transforms), 3.4)
        fig = _new_figure(width, 3.3 + (2.6 if transforms else 0.0))
        if transforms:
            top, bottom = fig.subfigures(2, 1, height_ratios=[3.3, 2.6], hspace=0.02)
        else:
            top, bottom = fig, None
        axes = top.subplots(1, n_top, squeeze=False)[0]
        for ax, panel in zip(axes, scatters):
            scatter = panel["scatter"]
            ax.scatter(
                scatter["alignment"],
                scatter["accuracy"],
                s=9,
                color="#0072B2",
                alpha=0.7,
                edgecolors="none",
                label=f"models (n={len(scatter)})",
            )
            fit = panel.get("fit")
            if fit is not None:
                grid = np.linspace(scatter["alignment"].min(), scatter["alignment"].max(), 200)
                ax.plot(
                    grid,
                    fit["b0"] + fit["b1"] * grid + fit["b2"] * grid**2,
                    color="black",
                    label=f"quadratic fit (x² coef {fit['b2']:.3g}, p={fit['b2_p']:.2g})",
                )
            theory = panel.get("theory")
            if theory is not None and not theory.empty:
                ax.scatter(
                    theory["alignment"],
                    theory["predicted"],
                    s=10,
                    marker="x",
                    linewidths=0.7,
                    color="#D55E00",
                    label="theory shape a + b·C(1 − triplet), fitted to these data",
                )
            _label_extremes(ax, scatter, n_labels)
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
            # below the axes: with hundreds of models any spot inside would cover points
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=1)
            ax.set_title(f"{panel['dataset']}: accuracy vs alignment")
            hover.append(
                HoverPoints(
                    ax,
                    scatter["alignment"].to_numpy(float),
                    scatter["accuracy"].to_numpy(float),
                    tuple(
                        f"{m}: alignment {a:.4g}, accuracy {y:.4g} ({panel['dataset']})"
                        for m, a, y in zip(scatter["model"], scatter["alignment"], scatter["accuracy"])
                    ),
                )
            )
        if bottom is not None:
            panels = bottom.subplots(1, len(transforms), sharey=True, squeeze=False)[0]
            datasets = list(dict.fromkeys(correlations["y_dataset"]))
            for ax, transform in zip(panels, transforms):
                for k, dataset in enumerate(datasets):
                    sel = correlations[
                        (correlations["y_dataset"] == dataset) & (correlations["transform"] == transform)
                    ]
                    if sel.empty:
                        continue
                    _errorbar(
                        ax,
                        sel,
                        "y_shots",
                        dodge=0.08 * (k - (len(datasets) - 1) / 2),
                        label=str(dataset),
                        style=_series_style(k),
                    )
                ax.axhline(0, color="black", linewidth=0.6)
                _shots_axis(ax, correlations["y_shots"])
                ax.set_xlabel("shots per class")
                ax.set_title(f"{TRANSFORM_TITLES[transform].replace('alignment', 'Pearson alignment')}, 95% CI")
            panels[0].set_ylabel("Pearson r")
            handles, labels = panels[0].get_legend_handles_labels()
            bottom.legend(handles, labels, loc="outside right center", ncols=1)
    return fig, hover


def layer_profile_figure(profile: pd.DataFrame, *, metric: str, accuracy_label: str | None) -> Any:
    """Alignment (left) and few-shot accuracy (right, when known) against depth, one line per
    model. Depth is relative (0 = the shallowest layer read, 1 = the deepest) because models
    have different numbers of layers; each point is named by its layer, and the model's most
    aligned layer is ringed."""
    has_accuracy = accuracy_label is not None and profile["accuracy"].notna().any()
    panels = [("alignment", f"alignment ({metric})", "most_aligned")]
    if has_accuracy:
        panels.append(("accuracy", accuracy_label, "best_transfer"))
    with print_style():
        fig = _new_figure(3.4 * len(panels), 2.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for k, (model, frame) in enumerate(profile.groupby("model", sort=False)):
            depth = (frame["depth"] - 1) / max(len(frame) - 1, 1)
            style = _series_style(k)
            for ax, (column, label, top) in zip(axes, panels, strict=True):
                values = frame[column].astype(float)
                ax.plot(depth, values, label=str(model), **style)
                best = frame[top].astype(bool).to_numpy()
                ax.scatter(depth[best], values[best], s=60, facecolors="none", edgecolors=style["color"], zorder=3)
                for x, y, layer in zip(depth, values, frame["layer"], strict=True):
                    if np.isfinite(y):
                        ax.annotate(str(layer), (x, y), xytext=(2, 2), textcoords="offset points", fontsize=5)
                ax.set_xlabel("relative depth (input → output)")
                ax.set_ylabel(label)
        axes[0].set_title("Alignment across layers")
        if has_accuracy:
            axes[1].set_title("Few-shot transfer across layers")
        axes[0].legend(loc="best")
    return fig


def _label_extremes(ax, scatter: pd.DataFrame, n: int) -> None:
    """Name the models at both ends of each axis (for readers of the PNG/PDF, who cannot hover).

    Labels of points in the right half of the panel are drawn to the left of the point, so
    that they stay inside the figure; labels of nearby points are stacked, not overprinted.
    """
    if n <= 0 or scatter.empty:
        return
    chosen: list[int] = []
    for column in ("alignment", "accuracy"):
        order = np.argsort(scatter[column].to_numpy(float), kind="stable")
        for position in [*order[:n], *order[::-1][:n]]:
            if int(position) not in chosen:
                chosen.append(int(position))
    x = scatter["alignment"].to_numpy(float)
    y = scatter["accuracy"].to_numpy(float)
    span_x = float(np.ptp(x)) or 1.0
    span_y = float(np.ptp(y)) or 1.0
    placed: list[tuple[float, float]] = []
    for position in chosen:
        fx, fy = (x[position] - x.min()) / span_x, (y[position] - y.min()) / span_y
        # labels run up to half a panel wide: stack those at about the same height
        stack = sum(abs(fx - px) < 0.5 and abs(fy - py) < 0.06 for px, py in placed)
        placed.append((fx, fy))
        right_half = fx > 0.5
        ax.annotate(
            str(scatter["model"].iloc[position]),
            (x[position], y[position]),
            xytext=(-3 if right_half else 3, 2 - 7 * stack),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=5,
            color="#333333",
        )


def hover_positions(fig, hover: Sequence[HoverPoints]) -> pd.DataFrame:
    """Where each hover point lies in the rendered figure: title, fx, fy (fractions of the
    figure's width and height from the bottom left).

    Call after the figure was drawn (saved): constrained layout places the axes at draw time.
    The figure must be saved without a tight bounding box (the report's style), so that the
    image is exactly the figure and these fractions are positions in the PNG.
    """
    records = []
    to_fraction = fig.transFigure.inverted()
    for points in hover:
        xy = np.column_stack([points.x, points.y])
        keep = np.isfinite(xy).all(axis=1)
        fractions = to_fraction.transform(points.axes.transData.transform(xy[keep]))
        titles = [t for t, k in zip(points.titles, keep) if k]
        records.extend({"title": t, "fx": float(fx), "fy": float(fy)} for t, (fx, fy) in zip(titles, fractions))
    return pd.DataFrame.from_records(records, columns=["title", "fx", "fy"])


def draw_bars(ax, labels, values, low=None, high=None, *, ceiling=None) -> None:
    """Horizontal bars, one per label from the bottom up, with CI whiskers where both bounds
    are finite, and the human data's noise ceiling behind them: a number draws a line, a
    (low, high) pair a band. The one drawing of per-model bars (report and repalign.plot)."""
    values = np.asarray(values, dtype=float)
    y = np.arange(len(values))
    if ceiling is not None:
        if np.ndim(ceiling) == 0:
            ax.axvline(float(ceiling), color=PALETTE[3], linestyle="--", label="noise ceiling")
        else:
            ax.axvspan(*(float(v) for v in ceiling), color=PALETTE[3], alpha=0.2, zorder=0, label="noise ceiling")
    ax.barh(y, values, color=PALETTE[0], height=0.7)
    if low is not None and high is not None:
        low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        ok = np.isfinite(low) & np.isfinite(high)
        if ok.any():
            errors = np.vstack([values[ok] - low[ok], high[ok] - values[ok]]).clip(min=0)
            ax.errorbar(values[ok], y[ok], xerr=errors, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_yticks(y, [str(label) for label in labels])


def ceiling_figure(table: pd.DataFrame, *, dataset: str, relative: bool = False) -> Any:
    """Per-model alignment bars on one human dataset with its noise-ceiling band, one panel per metric.

    Args:
        table: rows of :func:`repalign.report.summaries.alignment_with_ceilings` for ``dataset``.
        relative: draw alignment / ceiling_high (the band then runs from low / high to 1).
    """
    metrics = list(dict.fromkeys(table["metric"]))
    n_models = table["model"].nunique()
    fig = _new_figure(3.2 * len(metrics) + 1.5, 0.9 + 0.22 * n_models)
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    order = table.groupby("model")["value"].mean().sort_values().index.tolist()
    for ax, metric in zip(axes, metrics):
        rows = table[table["metric"] == metric].set_index("model").reindex(order)
        scale = rows["ceiling_high"].to_numpy(float) if relative else np.ones(len(rows))
        band = (
            float(np.nanmean(rows["ceiling_low"].to_numpy(float) / scale)),
            float(np.nanmean(rows["ceiling_high"].to_numpy(float) / scale)),
        )
        draw_bars(
            ax,
            order,
            rows["value"].to_numpy(float) / scale,
            rows["ci_low"].to_numpy(float) / scale,
            rows["ci_high"].to_numpy(float) / scale,
            ceiling=band,
        )
        ax.set_title(metric)
        ax.set_xlabel("alignment / ceiling (upper bound)" if relative else "alignment")
    axes[0].legend(loc="lower right", fontsize="small")
    fig.suptitle(f"{dataset}: alignment and the noise ceiling of the human data")
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
