"""Figures of the theory tables (matplotlib, imported lazily; PNG files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repalign._io import atomic_path

__all__ = ["write_figures"]

_STUDENT_STYLE = {
    "flip": ("tab:blue", "o", "flip student (independent flips)"),
    "embedding": ("tab:orange", "s", "embedding student (perturbed geometry)"),
}


def write_figures(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write every figure as ``<out_dir>/<name>.png``; return the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    makers = {
        "capacity": _capacity,
        "queries_to_target": _queries,
        "game_accuracy": _accuracy,
        "adversarial": _adversarial,
        "domain_shift": _domain_shift,
    }
    written = []
    for name, make in makers.items():
        fig = make(plt, tables)
        path = out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def _capacity(plt, tables):
    table = tables["capacity"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(table["eps"], table["capacity"], color="black")
    left.set_xlabel("misalignment eps (triplet disagreement rate)")
    left.set_ylabel("C(eps) = 1 - H2(eps)  [bits per answer]")
    left.set_title("Capacity of the triplet channel")
    left.axvline(0.5, color="grey", lw=0.8, ls=":")
    left.grid(alpha=0.3)
    bounds = [c for c in table.columns if c.startswith("lower_bound_")]
    finite = table[np.isfinite(table["query_ratio"])]
    right.plot(finite["eps"], finite["query_ratio"], color="black", label="1/C(eps): queries vs perfect alignment")
    for column in bounds:
        d, n = column.removeprefix("lower_bound_").split("_")
        right.plot(finite["eps"], finite[column], label=f"Prop. 3.8 bound, d={d[1:]}, n={n[1:]}: d log2 n / C")
    right.set_yscale("log")
    right.set_ylim(0.8, 1e5)
    right.set_xlabel("misalignment eps")
    right.set_ylabel("queries (log scale)")
    right.set_title("Query cost: U-shape around eps = 0.5")
    right.axvline(0.5, color="grey", lw=0.8, ls=":")
    right.legend(fontsize=7, loc="upper left")
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def _queries(plt, tables):
    queries = tables["game_queries"]
    fit = tables["capacity_fit"].set_index("student")
    curve = tables["capacity"]
    curve = curve[np.isfinite(curve["query_ratio"])]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    budget = tables["game_accuracy"]["n_queries"].max()
    for index, (kind, group) in enumerate(queries.groupby("student", sort=False)):
        color, marker, label = _STUDENT_STYLE.get(kind, ("tab:green", "d", kind))
        ok = np.isfinite(group["queries_to_target"]).to_numpy()
        # NaN where the target was not reached, so the line breaks instead of bridging the gap
        q = np.where(ok, group["queries_to_target"], np.nan)
        low = np.where(ok, group["ci_low"], np.nan)
        high = np.where(ok & np.isfinite(group["ci_high"]), group["ci_high"], budget)
        ax.errorbar(
            group["eps"],
            q,
            yerr=[q - low, np.where(ok, high - q, np.nan)],
            color=color,
            marker=marker,
            ls="-",
            capsize=2,
            label=label,
        )
        missed = group[~ok]
        if len(missed):  # drawn at the budget, students staggered so neither hides the other
            ax.scatter(
                missed["eps"],
                np.full(len(missed), budget * 0.8**index),
                marker="^",
                color=color,
                facecolors="none",
                label=f"{kind}: target not reached in {budget} queries",
            )
        if kind in fit.index and np.isfinite(fit.loc[kind, "scale"]):
            scale = fit.loc[kind, "scale"]
            r = fit.loc[kind, "pearson_r_log"]
            ax.plot(
                curve["eps"],
                scale * curve["query_ratio"],
                color=color,
                ls="--",
                lw=1,
                label=f"{scale:.3g} / C(eps) fitted to {kind} (r of logs = {r:.3f})",
            )
    ax.plot(curve["eps"], curve["fano_bound"], color="black", lw=1.2, label="Fano lower bound (any decoder)")
    target = queries["target_accuracy"].iloc[0]
    ax.set_yscale("log")
    ax.set_ylim(1, budget * 2)
    ax.set_xlabel("misalignment eps (student-teacher triplet disagreement)")
    ax.set_ylabel(f"queries to reach {target:.0%} accuracy (log)")
    ax.set_title("Teaching a new object: simulated queries vs the capacity bound")
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _accuracy(plt, tables):
    accuracy = tables["game_accuracy"]
    kinds = list(dict.fromkeys(accuracy["student"]))
    eps_all = np.array(sorted(accuracy["eps"].unique()))
    wanted = [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9]
    shown = sorted({float(eps_all[np.argmin(np.abs(eps_all - w))]) for w in wanted})
    cmap = plt.get_cmap("plasma")
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.2), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        data = accuracy[accuracy["student"] == kind]
        for value in shown:
            curve = data[data["eps"] == value]
            # colour = distance from 0.5 (mirror images share it), dashes = the reversed side
            ax.plot(
                curve["n_queries"],
                curve["accuracy"],
                color=cmap(0.85 * abs(value - 0.5) * 2),
                label=f"eps = {value:g}",
                ls="-" if value <= 0.5 else "--",
            )
        ax.axhline(data["chance_accuracy"].iloc[0], color="grey", lw=0.8, ls=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("teacher answers received (log)")
        ax.set_title(_STUDENT_STYLE.get(kind, (None, None, kind))[2])
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("accuracy of identifying the new object")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _adversarial(plt, tables):
    table = tables["adversarial"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    cmap = plt.get_cmap("viridis")
    ks = sorted(table["k"].unique())
    for i, k in enumerate(ks):
        rows = table[table["k"] == k]
        m = rows["n_triplets"].iloc[0]
        color = cmap(0.9 * i / max(1, len(ks) - 1))
        mean, low, high = rows["mc_mean"] / m, rows["mc_ci_low"] / m, rows["mc_ci_high"] / m
        for ax, offset in ((left, 0.0), (right, rows["eps"])):
            ax.plot(rows["eps"], rows["expected_max_fraction"] - offset, color=color, label=f"exact, k = {k}")
            ax.errorbar(
                rows["eps"], mean - offset, yerr=[mean - low, high - mean], fmt="o", ms=3, color=color, capsize=2
            )
    n = table["n"].iloc[0]
    m = table["n_triplets"].iloc[0]
    left.set_ylabel("E[max disagreement] / m")
    left.set_title(f"Worst of k objects (Thm A.5), m = {m} triplets each (n = {n})", fontsize=9)
    right.set_ylabel("E[max disagreement] / m  -  eps")
    right.set_title("What the adversary gains over an average object", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("misalignment eps")
        ax.grid(alpha=0.3)
    left.legend(fontsize=8, title="lines exact; dots Monte Carlo, 95% CI", title_fontsize=8)
    fig.tight_layout()
    return fig


def _domain_shift(plt, tables):
    table = tables["domain_shift"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("plasma")
    shifts = sorted(table["shift"].unique())
    for i, size in enumerate(shifts):
        rows = table[table["shift"] == size].sort_values("alignment")
        color = cmap(i / max(1, len(shifts)))
        ax.plot(
            rows["alignment"],
            rows["flipped_fraction"],
            marker="o",
            ms=3,
            color=color,
            label=f"centroid shift = {size:g} sd",
        )
        ax.fill_between(rows["alignment"], rows["ci_low"], rows["ci_high"], color=color, alpha=0.2)
    ax.set_xlabel("student alignment with the teacher (1 - eps, triplet agreement)")
    ax.set_ylabel("fraction of triplets flipped by the shift")
    ax.set_title(
        "Domain-shift sensitivity (Def. A.1): class centroids move\nalong features the teacher ignores", fontsize=9
    )
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
