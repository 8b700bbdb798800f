"""The full set of theory tables behind ``repalign theory``: one call, one seed, tidy DataFrames."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from repalign.errors import InputError
from repalign.theory.adversarial import expected_max_disagreement, simulate_max_disagreement, triplets_per_object
from repalign.theory.capacity import channel_capacity, fano_query_bound, query_lower_bound, query_ratio
from repalign.theory.communication import GameConfig, compare_with_capacity, simulate_communication_game
from repalign.theory.domain_shift import domain_shift_sensitivity
from repalign.theory.stochastic import stochastic_alignment
from repalign.theory.students import build_embedding_student, negative_distances

__all__ = ["TheoryGrid", "default_grid", "run_theory", "summary_table"]

logger = logging.getLogger(__name__)


def _eps_grid(step: float) -> tuple[float, ...]:
    return tuple(float(x) for x in np.round(np.arange(0.0, 1.0 + step / 2, step), 6))


@dataclass(frozen=True)
class TheoryGrid:
    """What ``run_theory`` computes; :func:`default_grid` gives the CLI's full and quick grids."""

    eps: tuple[float, ...] = _eps_grid(0.05)  # simulations
    curve_points: int = 401  # capacity and bound curves
    bound_dims: tuple[int, ...] = (2, 8, 32)  # Proposition 3.8 curves for these d ...
    bound_n: int = 50  # ... and this many shared objects
    adversarial_n: int = 30  # objects; m = n(n-1)/2 triplets per object
    adversarial_k: tuple[int, ...] = (1, 10, 100, 1000)  # objects the adversary picks from
    adversarial_samples: int = 20_000  # Monte Carlo samples of the maximum per eps, at most ...
    adversarial_draws: int = 400_000  # ... and at most this many binomial draws (samples x k) per eps
    game: GameConfig = field(default_factory=lambda: GameConfig(n_worlds=64, n_trials=12))
    shift_sizes: tuple[float, ...] = (0.25, 0.5, 1.0)
    shift_classes: int = 30
    shift_worlds: int = 20
    sampled_triplets: int = 2_000  # for the stochastic-alignment check

    def __post_init__(self) -> None:
        if len(self.eps) < 1:
            raise InputError("TheoryGrid.eps needs at least one value")
        if self.curve_points < 3:
            raise InputError(f"TheoryGrid.curve_points must be >= 3; got {self.curve_points}")


def default_grid(*, quick: bool = False) -> TheoryGrid:
    """The CLI's grid; ``quick=True`` is a much smaller one (seconds) used by tests."""
    if not quick:
        return TheoryGrid()
    return TheoryGrid(
        eps=(0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0),
        curve_points=101,
        adversarial_n=12,
        adversarial_k=(1, 10, 100),
        adversarial_samples=4_000,
        adversarial_draws=100_000,
        game=GameConfig(
            n_shared=24, n_candidates=16, max_queries=1024, n_worlds=30, n_trials=8, n_grid=24, n_bootstrap=200
        ),
        shift_sizes=(0.5,),
        shift_classes=15,
        shift_worlds=5,
        sampled_triplets=500,
    )


def run_theory(grid: TheoryGrid | None = None, *, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Compute every theory table.

    Returns:
        ``{name: DataFrame}`` with names ``capacity``, ``adversarial``, ``game_accuracy``,
        ``game_queries``, ``capacity_comparison``, ``capacity_fit``, ``domain_shift``,
        ``stochastic_alignment``. Each is tidy (one row per setting); ``inf`` marks a query
        count that is infinite (eps = 0.5) or a target not reached within the budget.
    """
    grid = grid or TheoryGrid()
    tables: dict[str, pd.DataFrame] = {}
    timings = {}

    start = time.perf_counter()
    tables["capacity"] = capacity_table(grid)
    tables["adversarial"] = adversarial_table(grid, seed=seed)
    timings["closed_form"] = time.perf_counter() - start

    start = time.perf_counter()
    game = simulate_communication_game(np.array(grid.eps), config=grid.game, seed=seed)
    tables["game_accuracy"] = game.accuracy
    tables["game_queries"] = game.queries
    tables["capacity_comparison"], tables["capacity_fit"] = compare_with_capacity(game.queries)
    timings["game"] = time.perf_counter() - start

    start = time.perf_counter()
    tables["domain_shift"] = domain_shift_sensitivity(
        np.array(grid.eps),
        shifts=grid.shift_sizes,
        n_classes=grid.shift_classes,
        n_worlds=grid.shift_worlds,
        seed=seed,
    )
    tables["stochastic_alignment"] = stochastic_alignment_table(grid, seed=seed)
    timings["domain_shift"] = time.perf_counter() - start
    logger.info("theory timings (s): %s", {k: round(v, 2) for k, v in timings.items()})
    return tables


def capacity_table(grid: TheoryGrid) -> pd.DataFrame:
    """C(eps), 1/C(eps), the Fano bound of the game and Proposition 3.8 for each ``d``."""
    eps = np.linspace(0.0, 1.0, grid.curve_points)
    table = pd.DataFrame(
        {
            "eps": eps,
            "alignment": 1.0 - eps,
            "capacity": channel_capacity(eps),
            "query_ratio": query_ratio(eps),
            "fano_bound": fano_query_bound(grid.game.n_candidates, eps, target_accuracy=grid.game.target_accuracy),
        }
    )
    for d in grid.bound_dims:
        table[f"lower_bound_d{d}_n{grid.bound_n}"] = query_lower_bound(d, grid.bound_n, eps)
    return table


def adversarial_table(grid: TheoryGrid, *, seed: int) -> pd.DataFrame:
    """Exact expected worst-object disagreement (Theorem A.5) with its Monte Carlo check."""
    eps = np.array(grid.eps)
    m = triplets_per_object(grid.adversarial_n)
    rows = []
    for i, k in enumerate(grid.adversarial_k):
        exact = expected_max_disagreement(eps, m, k)
        # the cost is samples x k draws: large k gets fewer samples (a wider, still honest CI)
        n_samples = int(np.clip(grid.adversarial_draws // k, 200, grid.adversarial_samples))
        mc = simulate_max_disagreement(eps, m, k, n_samples=n_samples, seed=seed + i)
        for j, value in enumerate(eps):
            rows.append(
                {
                    "eps": float(value),
                    "n": grid.adversarial_n,
                    "n_triplets": m,
                    "k": int(k),
                    "expected_max": float(exact[j]),
                    "expected_max_fraction": float(exact[j] / m),
                    "mc_samples": n_samples,
                    "mc_mean": float(mc.mean[j]),
                    "mc_ci_low": float(mc.ci_low[j]),
                    "mc_ci_high": float(mc.ci_high[j]),
                    "exact_in_ci": bool(mc.ci_low[j] <= exact[j] <= mc.ci_high[j]),
                }
            )
    return pd.DataFrame(rows)


def stochastic_alignment_table(grid: TheoryGrid, *, seed: int) -> pd.DataFrame:
    """Sampled ``D_P`` (with CI) of embedding students against their exact triplet alignment."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    n = grid.game.n_shared
    teacher = rng.standard_normal((n, grid.game.n_dims))
    teacher_sim = negative_distances(teacher)
    rows = []
    for value in grid.eps:
        student = build_embedding_student(teacher, rng.standard_normal(teacher.shape), value, n_shared=n)
        estimate = stochastic_alignment(
            student.similarity(), teacher_sim, n_triplets=grid.sampled_triplets, random_state=rng
        )
        exact = 1.0 - student.measured_eps
        rows.append(
            {
                "eps": float(value),
                "exact_alignment": exact,
                "sampled_alignment": estimate.alignment,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "n_triplets": estimate.n_triplets,
                "covered": bool(estimate.ci_low <= exact <= estimate.ci_high),
            }
        )
    return pd.DataFrame(rows)


def summary_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per simulated eps: the headline numbers of every table, side by side."""
    queries = tables["game_queries"].pivot(index="eps", columns="student", values="queries_to_target")
    queries.columns = [f"queries_{c}" for c in queries.columns]
    accuracy = tables["game_accuracy"]
    final = accuracy[accuracy["n_queries"] == accuracy["n_queries"].max()]
    final = final.pivot(index="eps", columns="student", values="accuracy")
    final.columns = [f"final_accuracy_{c}" for c in final.columns]
    adversarial = tables["adversarial"]
    k_max = adversarial["k"].max()
    adv = adversarial[adversarial["k"] == k_max].set_index("eps")[["expected_max_fraction"]]
    adv.columns = [f"adversarial_fraction_k{k_max}"]
    shift = tables["domain_shift"]
    middle = sorted(shift["shift"].unique())[len(shift["shift"].unique()) // 2]
    flips = shift[shift["shift"] == middle].set_index("eps")[["flipped_fraction"]]
    flips.columns = [f"shift_flipped_{middle:g}"]
    eps = queries.index.to_numpy(dtype=float)
    base = pd.DataFrame({"capacity": channel_capacity(eps), "query_ratio": query_ratio(eps)}, index=queries.index)
    out = pd.concat([base, queries, final, adv, flips], axis=1).reset_index()
    return out.rename(columns={"index": "eps"})
