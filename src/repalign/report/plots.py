"""Plots for exploring results from Python, also drawn by the report (``repalign.plot``).

* :func:`similarity_matrix` -- a model's and people's similarity matrices side by side, the
  stimuli in the same order on both;
* :func:`model_bars` -- one bar per model with its confidence interval and, when given, the
  noise ceiling of the human data as a band;
* :func:`comparison_heatmap` -- a model x model matrix (CKA, RSA) from
  :func:`repalign.alignment.comparison_matrix`.

Each returns a ``matplotlib.figure.Figure`` built without pyplot (no GUI backend, no global
state): show it in a notebook by leaving it as a cell's value, or ``fig.savefig(path)``.

Example:
    >>> from repalign import plot
    >>> fig = plot.model_bars(frame, ceiling=(0.6, 0.7))  # frame: columns model, value, ci_low, ci_high
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from repalign.errors import InputError
from repalign.report.figures import _new_figure, draw_bars, print_style

#: how :func:`similarity_matrix` orders the stimuli: clustered by the human matrix, or as given
ORDERS = ("cluster", "given")


def similarity_matrix(
    model_sim,
    human_sim,
    *,
    labels: Sequence[str] | None = None,
    order: str | Sequence[int] = "cluster",
    titles: tuple[str, str] = ("model", "human"),
    cmap: str = "viridis",
) -> Any:
    """A model's and the human (n, n) similarity matrices side by side, in one stimulus order.

    Each panel has its own colour scale (the two matrices have different units); what is
    compared is the pattern, which the shared order makes visible.

    Args:
        model_sim, human_sim: (n, n) similarity matrices over the same stimuli (e.g. from
            :func:`repalign.alignment.similarity_matrix` and ``HumanSimilarity.similarity``);
            NaN pairs are drawn blank.
        labels: n stimulus names for the axes (shown when n <= 60).
        order: ``"cluster"`` (average-linkage clustering of the human matrix, so its blocks
            show), ``"given"``, or a permutation of range(n).
        titles: the panels' titles.
    """
    model = _square(model_sim, "model_sim")
    human = _square(human_sim, "human_sim")
    if model.shape != human.shape:
        raise InputError(f"model_sim and human_sim must be over the same stimuli; got {model.shape} and {human.shape}")
    n = model.shape[0]
    if labels is not None and len(labels) != n:
        raise InputError(f"labels has {len(labels)} names for {n} stimuli")
    index = _order(human, order)
    with print_style():
        fig = _new_figure(7.0, 3.4)
        axes = fig.subplots(1, 2)
        for ax, matrix, title in zip(axes, (model, human), titles):
            image = ax.imshow(matrix[np.ix_(index, index)], cmap=cmap, interpolation="nearest")
            ax.set_title(str(title))
            ax.grid(False)
            fig.colorbar(image, ax=ax, shrink=0.8)
            if labels is not None and n <= 60:
                names = [str(labels[i]) for i in index]
                ax.set_xticks(range(n), names, rotation=90, fontsize=5)
                ax.set_yticks(range(n), names, fontsize=5)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    return fig


def model_bars(
    frame: pd.DataFrame,
    *,
    value: str = "value",
    label: str = "model",
    ci: tuple[str, str] | None = ("ci_low", "ci_high"),
    ceiling: float | tuple[float, float] | None = None,
    title: str | None = None,
    xlabel: str = "alignment",
    sort: bool = True,
) -> Any:
    """One horizontal bar per row (model), with its CI and the data's noise ceiling.

    Args:
        frame: one row per model: a ``label`` column and a ``value`` column, and the CI
            columns when ``ci`` names them (missing or NaN bounds draw no whisker).
        ceiling: the human data's noise ceiling: a number draws a line, a (low, high) pair a
            band (e.g. split-half reliability and its CI); None draws nothing.
        sort: bars from the highest value down (else in the frame's order).
    """
    missing = [c for c in (label, value) if c not in frame]
    if missing:
        raise InputError(f"model_bars needs columns {label!r} and {value!r}; missing {', '.join(missing)}")
    if frame.empty:
        raise InputError("model_bars got no rows to draw")
    if ceiling is not None and np.ndim(ceiling) != 0 and float(ceiling[0]) > float(ceiling[1]):
        raise InputError(f"ceiling (low, high) has low > high: {ceiling[0]} > {ceiling[1]}")
    rows = frame.sort_values(value, ascending=True) if sort else frame.iloc[::-1]
    has_ci = ci is not None and all(c in rows for c in ci)
    with print_style():
        fig = _new_figure(5.0, max(1.6, 0.22 * len(rows) + 0.9))
        ax = fig.subplots()
        draw_bars(
            ax,
            rows[label],
            rows[value].to_numpy(float),
            rows[ci[0]].to_numpy(float) if has_ci else None,
            rows[ci[1]].to_numpy(float) if has_ci else None,
            ceiling=ceiling,
        )
        if ceiling is not None:
            ax.legend(loc="lower right")
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        if title:
            ax.set_title(str(title))
    return fig


def comparison_heatmap(matrix: pd.DataFrame, *, title: str | None = None, annotate: bool | None = None) -> Any:
    """A square model x model matrix as an annotated heatmap (rows and columns in its order).

    Args:
        matrix: e.g. ``comparison_matrix(compare_models(...), "linear_cka")``.
        annotate: write each value in its cell (default: when there are at most 12 models).
    """
    if matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise InputError(f"comparison_heatmap needs a non-empty square matrix; got shape {matrix.shape}")
    values = matrix.to_numpy(float)
    n = values.shape[0]
    annotate = n <= 12 if annotate is None else annotate
    names = [str(v) for v in matrix.index]
    with print_style():
        size = min(9.0, 1.6 + 0.45 * n)
        fig = _new_figure(size + 0.8, size)
        ax = fig.subplots()
        image = ax.imshow(values, cmap="viridis", vmin=min(0.0, np.nanmin(values)), vmax=1.0)
        ax.grid(False)
        ax.set_xticks(range(n), names, rotation=60, ha="right")
        ax.set_yticks(range(n), names)
        fig.colorbar(image, ax=ax, shrink=0.8)
        if annotate:
            for i in range(n):
                for j in range(n):
                    if not np.isnan(values[i, j]):
                        # dark text on the light end of viridis, light text on the dark end
                        colour = "black" if values[i, j] > 0.6 else "white"
                        ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
        if title:
            ax.set_title(str(title))
    return fig


def _square(matrix, what: str) -> np.ndarray:
    try:
        array = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a numeric (n, n) matrix ({exc})") from exc
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] < 2:
        raise InputError(f"{what} must be a square (n, n) matrix with n >= 2; got shape {array.shape}")
    return array


def _order(human: np.ndarray, order: str | Sequence[int]) -> np.ndarray:
    n = human.shape[0]
    if isinstance(order, str):
        if order not in ORDERS:
            raise InputError(f"order must be one of {', '.join(ORDERS)} or a permutation of the stimuli; got {order!r}")
        if order == "given":
            return np.arange(n)
        return _cluster_order(human)
    index = np.asarray(order)
    if index.shape != (n,) or not np.array_equal(np.sort(index), np.arange(n)):
        raise InputError(f"order must be a permutation of range({n})")
    return index


def _cluster_order(human: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering on the human dissimilarities (max - similarity)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    similarity = (human + human.T) / 2
    fill = np.nanmean(similarity[~np.eye(len(similarity), dtype=bool)])
    similarity = np.where(np.isnan(similarity), fill, similarity)  # missing pairs: average similarity
    distance = similarity.max() - similarity
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(distance, checks=False), method="average"))
